//! The API document's schemas of the domain's rules: each states exactly the rule the server
//! enforces, generated from the rule itself (names from [`super::names`]; versions and digests
//! have theirs in `fota_protocol::openapi`), so the document cannot drift from the server. They
//! exist only for the document: requests carry plain strings, checked by the rules.

use super::names;
use std::borrow::Cow;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

fn name_schema(max: usize, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(names::pattern(max)))
        .min_length(Some(1))
        .max_length(Some(max))
        .description(Some(description))
        .into()
}

macro_rules! name_type {
    ($ty:ident, $max:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $ty;

        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                name_schema($max, $doc)
            }
        }

        impl utoipa::ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

name_type!(
    DeviceIdName,
    names::MAX_DEVICE_ID,
    "A device id: 1-64 of A-Z a-z 0-9 . _ : -, not starting with . or -."
);
name_type!(
    ModelName,
    names::MAX_MODEL,
    "A hardware model: 1-32 of A-Z a-z 0-9 . _ : -, not starting with . or -."
);
name_type!(
    TagName,
    names::MAX_TAG,
    "A tag: 1-32 of A-Z a-z 0-9 . _ : -, not starting with . or -."
);

/// A rollout's state, as the API names it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStateName {
    /// Offering to its current cohort.
    Active,
    /// Offering nothing new until resumed.
    Paused,
    /// Halted by its gate.
    Halted,
    /// Stopped for good.
    Aborted,
    /// Its last stage is done.
    Completed,
}

#[cfg(test)]
mod tests {
    use super::RolloutStateName;
    use crate::domain::RolloutState;

    #[test]
    fn the_documented_states_are_the_domain_states() {
        let documented: Vec<String> = [
            RolloutStateName::Active,
            RolloutStateName::Paused,
            RolloutStateName::Halted,
            RolloutStateName::Aborted,
            RolloutStateName::Completed,
        ]
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
        let domain: Vec<&str> = RolloutState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(documented, domain);
    }
}
