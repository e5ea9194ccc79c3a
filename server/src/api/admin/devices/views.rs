//! The JSON bodies the device routes take and answer (the CLI reads them too), and the
//! provisioning limits.

use crate::store::{BootStateFilter, DeviceRecord, StatusFilter, StoredEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::domain::provisioning::{MAX_DEVICES_PER_REQUEST, MAX_TAGS};

/// A device to provision.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Device id: 1-64 of `A-Za-z0-9._:-`.
    #[schema(value_type = crate::domain::schemas::DeviceIdName)]
    pub id: String,
    /// Hardware model.
    #[schema(value_type = crate::domain::schemas::ModelName)]
    pub model: String,
    /// Tags for targeting rollouts.
    #[serde(default)]
    #[schema(value_type = Vec<crate::domain::schemas::TagName>, max_items = 16)]
    pub tags: Vec<String>,
}

/// A provisioning request (JSON form).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevices {
    /// The devices: at least one, at most 100,000.
    #[schema(min_items = 1, max_items = 100_000)]
    pub devices: Vec<DeviceSpec>,
}

/// A provisioned device and its secret token: shown once, stored only hashed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvisionedDevice {
    /// Device id.
    pub id: String,
    /// The token the device sends as `Authorization: Bearer <token>`.
    pub token: String,
}

/// The provisioning answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// One entry per device, in request order.
    pub devices: Vec<ProvisionedDevice>,
}

/// Filters for listing devices.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Exact hardware model.
    #[param(value_type = Option<crate::domain::schemas::ModelName>, inline)]
    pub model: Option<String>,
    /// Exact firmware version, e.g. `1.4.2`.
    #[param(value_type = Option<fota_protocol::ImageVersion>, inline)]
    pub version: Option<String>,
    /// Has this tag.
    #[param(value_type = Option<crate::domain::schemas::TagName>, inline)]
    pub tag: Option<String>,
    /// Search: ids containing this text, ignoring case (1-64 of `A-Za-z0-9._:-`).
    #[param(pattern = r"^[A-Za-z0-9._:-]{1,64}$", max_length = 64)]
    pub q: Option<String>,
    /// `never_seen`, `online`, `silent` (heard from, or not, within two poll intervals), or
    /// `protection_blocked` (its write protection covers the slot an update would write).
    #[param(inline)]
    pub status: Option<StatusFilter>,
    /// `confirmed`, `trial` (as of its last check-in) or `reverted` (its bootloader reverted
    /// an update and it confirmed none since).
    #[param(inline)]
    pub boot_state: Option<BootStateFilter>,
    /// Last seen at or after (Unix ms).
    pub seen_after: Option<i64>,
    /// Last seen before (Unix ms), or never.
    pub seen_before: Option<i64>,
    /// Page start: ids after this one.
    pub after: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A page of devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DevicePage {
    /// Devices, by id.
    pub devices: Vec<DeviceRecord>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

/// One device and its latest events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// Its 50 most recent events, newest first.
    pub events: Vec<StoredEvent>,
}
