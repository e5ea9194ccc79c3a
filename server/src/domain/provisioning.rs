//! What a provisioning request may hold: at least one device and at most
//! [`MAX_DEVICES_PER_REQUEST`], each with a valid id and model, at most [`MAX_TAGS`] valid tags,
//! and no id twice. The whole batch is refused at the first device that breaks a rule, so
//! provisioning is all or none.

use super::names::{self, NameError};
use std::collections::HashSet;

/// Most devices one provisioning request may carry.
pub const MAX_DEVICES_PER_REQUEST: usize = 100_000;
/// Most tags per device.
pub const MAX_TAGS: usize = 16;

/// The names of one device to provision.
#[derive(Debug, Clone, Copy)]
pub struct DeviceNames<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its hardware model.
    pub model: &'a str,
    /// Its tags.
    pub tags: &'a [String],
}

/// Why a provisioning request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// No device at all.
    #[error("no devices in the request")]
    NoDevices,
    /// More than [`MAX_DEVICES_PER_REQUEST`].
    #[error("at most {MAX_DEVICES_PER_REQUEST} devices per request")]
    TooMany,
    /// A name breaks the rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// More than [`MAX_TAGS`] tags on one device.
    #[error("device {0}: at most {MAX_TAGS} tags")]
    TooManyTags(String),
    /// The same id twice.
    #[error("device {0} appears twice in the request")]
    DuplicateId(String),
}

impl ProvisionError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoDevices => "no_devices",
            Self::TooMany => "payload_too_large",
            Self::Name(e) => e.code(),
            Self::TooManyTags(_) => "too_many_tags",
            Self::DuplicateId(_) => "duplicate_device_id",
        }
    }
}

/// Check a whole provisioning request.
pub fn check_batch<'a>(
    devices: impl ExactSizeIterator<Item = DeviceNames<'a>>,
) -> Result<(), ProvisionError> {
    if devices.len() == 0 {
        return Err(ProvisionError::NoDevices);
    }
    if devices.len() > MAX_DEVICES_PER_REQUEST {
        return Err(ProvisionError::TooMany);
    }
    let mut seen = HashSet::with_capacity(devices.len());
    for d in devices {
        names::device_id(d.id)?;
        names::model(d.model)?;
        if d.tags.len() > MAX_TAGS {
            return Err(ProvisionError::TooManyTags(d.id.to_string()));
        }
        for t in d.tags {
            names::tag(t)?;
        }
        if !seen.insert(d.id) {
            return Err(ProvisionError::DuplicateId(d.id.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(devices: &[(&str, &str, Vec<String>)]) -> Result<(), ProvisionError> {
        check_batch(
            devices
                .iter()
                .map(|(id, model, tags)| DeviceNames { id, model, tags }),
        )
    }

    #[test]
    fn batches_are_refused_whole_with_a_code() {
        assert!(check(&[("SL-1", "f429", vec!["city:a".into()])]).is_ok());
        assert_eq!(check(&[]).unwrap_err().code(), "no_devices");
        let twice = [("SL-1", "f429", vec![]), ("SL-1", "f429", vec![])];
        assert_eq!(check(&twice).unwrap_err().code(), "duplicate_device_id");
        let tags = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            check(&[("SL-1", "f429", tags)]).unwrap_err().code(),
            "too_many_tags"
        );
        assert_eq!(
            check(&[("SL-1", "bad model", vec![])]).unwrap_err().code(),
            "invalid_model"
        );
        assert_eq!(
            check(&[("../x", "f429", vec![])]).unwrap_err().code(),
            "invalid_device_id"
        );
    }
}
