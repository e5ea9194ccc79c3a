//! What the fota server and the devices share.
//!
//! - [`image`]: MCUboot's signed image format (header, protected and unprotected TLVs, SHA-256,
//!   key hash, Ed25519), parsed and verified over a whole slice or incrementally over a stream of
//!   chunks, and (with `std`) built and signed.
//! - [`identity`]: the device identity record at the end of sector 1 (device id, token, server URL,
//!   model, CRC), written by the operator's CLI and read by the device.
//! - [`layout`]: the STM32F429 flash map of DESIGN.md and the check that an image's vector table
//!   lies inside the slot it was built for.
//! - [`messages`] (feature `serde`): the v1 device protocol: check-in, offer, report events.
//! - [`openapi`] (feature `openapi`): the OpenAPI schemas of the device messages, for the
//!   server's API document.
//! - [`testing`] (feature `testing`, for tests only): a payload linked for a slot, signed with a
//!   test key, the one fixture every crate's tests build images from.
//!
//! The crate is `no_std`: the bootloader links it with a few KB of RAM and no allocator. Nothing
//! here panics on untrusted input; every malformed image has its own [`image::ImageError`] variant.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod identity;
pub mod image;
pub mod layout;
#[cfg(feature = "serde")]
pub mod messages;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(feature = "testing")]
pub mod testing;

pub use image::{ImageError, ImageHeader, ImageVersion, TrustedKey, VerifiedImage};
pub use layout::SlotId;
