//! Rules for names that appear in paths and filters: device ids, models, tags.
//!
//! `[A-Za-z0-9._:-]`, 1..=max bytes, not starting with `.` or `-`: never a path component like
//! `..`, never an option-looking argument, always safe in a URL path segment and in the SQL text
//! the store writes for bulk inserts.

use std::fmt;

/// Longest device id.
pub const MAX_DEVICE_ID: usize = 64;
/// Longest model name.
pub const MAX_MODEL: usize = 32;
/// Longest tag.
pub const MAX_TAG: usize = 32;

/// A name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    kind: &'static str,
    code: &'static str,
    value: String,
    max: usize,
}

impl NameError {
    /// The stable code: `invalid_device_id`, `invalid_model` or `invalid_tag`.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: 1-{} characters of A-Z a-z 0-9 . _ : -, not starting with . or -",
            self.kind, self.value, self.max
        )
    }
}

impl std::error::Error for NameError {}

/// Check `s` against the rules, naming it `kind` and refusing with `code`.
pub fn check(kind: &'static str, code: &'static str, s: &str, max: usize) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= max
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            kind,
            code,
            value: s.to_string(),
            max,
        })
    }
}

/// The rule of [`check`] as a regular expression, for the API document: 1..=`max` of
/// `[A-Za-z0-9._:-]`, not starting with `.` or `-`.
pub fn pattern(max: usize) -> String {
    format!(
        "^[A-Za-z0-9_:][A-Za-z0-9._:-]{{0,{}}}$",
        max.saturating_sub(1)
    )
}

/// A device id.
pub fn device_id(s: &str) -> Result<(), NameError> {
    check("device id", "invalid_device_id", s, MAX_DEVICE_ID)
}

/// A hardware model.
pub fn model(s: &str) -> Result<(), NameError> {
    check("model", "invalid_model", s, MAX_MODEL)
}

/// A tag.
pub fn tag(s: &str) -> Result<(), NameError> {
    check("tag", "invalid_tag", s, MAX_TAG)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_refuse_traversal_and_odd_bytes() {
        for good in ["SL-000123", "a", "city:berlin", "x_y.z"] {
            assert!(super::device_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            "-rf",
            ".hidden",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(super::device_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pattern_is_the_rule() {
        let re = regex::Regex::new(&super::pattern(8)).unwrap();
        for s in [
            "a",
            "A9",
            "_x",
            ":x",
            "a.b-c:d",
            "12345678",
            "123456789",
            "",
            ".a",
            "-a",
            "a b",
            "a/b",
            "é",
            "a\n",
            "..",
        ] {
            assert_eq!(
                re.is_match(s),
                super::check("name", "invalid_name", s, 8).is_ok(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn each_kind_has_its_code_and_message() {
        let e = super::tag("a b").unwrap_err();
        assert_eq!(e.code(), "invalid_tag");
        assert_eq!(
            e.to_string(),
            "invalid tag \"a b\": 1-32 characters of A-Z a-z 0-9 . _ : -, not starting with . or -"
        );
        assert_eq!(super::model("").unwrap_err().code(), "invalid_model");
        assert_eq!(
            super::device_id("..").unwrap_err().code(),
            "invalid_device_id"
        );
    }
}
