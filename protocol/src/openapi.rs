//! OpenAPI schemas of the device messages (feature `openapi`, for the server's API document).
//!
//! The message types derive `utoipa::ToSchema` under this feature; the few types with their own
//! string form ([`ImageVersion`], [`Digest`]) get their schema here, with a pattern that accepts
//! exactly what their parsers accept, so a client generated from the document and the device's
//! decoder agree on every value.

use crate::image::{Digest, ImageVersion};
use std::borrow::Cow;
use std::string::{String, ToString};
use std::vec::Vec;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A regular expression (no anchors) matching exactly the decimal strings whose value is at
/// most `max`, leading zeros allowed (Rust's integer parsing accepts them).
pub fn uint_pattern(max: u64) -> String {
    let digits: Vec<u8> = max.to_string().bytes().map(|b| b - b'0').collect();
    let n = digits.len();
    let mut alternatives = vec!["0".to_string()];
    if n >= 2 {
        // Every number with fewer digits than `max`.
        alternatives.push(format!("[1-9][0-9]{{0,{}}}", n - 2));
    }
    // Numbers with as many digits: equal to `max` up to position i, then a smaller digit.
    for i in 0..n {
        let low = u8::from(i == 0);
        if digits[i] > low {
            let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
            let high = digits[i] - 1;
            let class = if low == high {
                low.to_string()
            } else {
                format!("[{low}-{high}]")
            };
            let rest = n - i - 1;
            let tail = if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            };
            alternatives.push(format!("{prefix}{class}{tail}"));
        }
    }
    if max > 0 {
        alternatives.push(max.to_string());
    }
    format!("0*(?:{})", alternatives.join("|"))
}

/// The pattern of a version string as [`ImageVersion`]'s parser accepts it:
/// `major[.minor[.revision]][+build]`, each part within its MCUboot field's range.
pub fn version_pattern() -> String {
    let byte = uint_pattern(u64::from(u8::MAX));
    let half = uint_pattern(u64::from(u16::MAX));
    let word = uint_pattern(u64::from(u32::MAX));
    format!("^{byte}(?:\\.{byte}(?:\\.{half})?)?(?:\\+{word})?$")
}

/// The pattern of a SHA-256 digest as [`Digest::from_hex`] accepts it.
pub const DIGEST_PATTERN: &str = "^[0-9a-fA-F]{64}$";

fn string_schema(pattern: String, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([serde_json::json!(example)])
        .into()
}

impl utoipa::PartialSchema for ImageVersion {
    fn schema() -> RefOr<Schema> {
        string_schema(
            version_pattern(),
            "An image version, `major.minor.revision+build` (major and minor 0-255, revision 0-65535, build 0-4294967295); minor, revision and build may be left out.",
            "1.4.2+7",
        )
    }
}

impl utoipa::ToSchema for ImageVersion {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ImageVersion")
    }
}

impl utoipa::PartialSchema for Digest {
    fn schema() -> RefOr<Schema> {
        string_schema(
            DIGEST_PATTERN.to_string(),
            "A SHA-256 digest: 64 hex digits (the server writes them lowercase).",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        )
    }
}

impl utoipa::ToSchema for Digest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Digest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .unwrap()
            .is_match(s)
    }

    #[test]
    fn integer_patterns_accept_exactly_the_range() {
        for max in [
            0u64,
            7,
            9,
            10,
            99,
            100,
            255,
            300,
            65_535,
            u64::from(u32::MAX),
        ] {
            let p = uint_pattern(max);
            let mut values: Vec<u64> = vec![0, 1, 9, 10, 99, 100, 255, 256, 999, 1000];
            for d in [max.saturating_sub(1), max, max + 1, max + 10, max * 10 + 9] {
                values.push(d);
            }
            // Every value that differs from max in one digit.
            let s = max.to_string();
            for i in 0..s.len() {
                for digit in b'0'..=b'9' {
                    let mut b = s.clone().into_bytes();
                    b[i] = digit;
                    values.push(String::from_utf8(b).unwrap().parse().unwrap());
                }
            }
            for v in values {
                let text = v.to_string();
                assert_eq!(matches(&p, &text), v <= max, "max {max}: {text}");
                let padded = format!("00{text}");
                assert_eq!(matches(&p, &padded), v <= max, "max {max}: {padded}");
            }
            for bad in ["", "+1", "-1", "1a", " 1", "0x1"] {
                assert!(!matches(&p, bad), "max {max}: {bad:?}");
            }
        }
    }

    #[test]
    fn the_version_pattern_is_the_parser() {
        let re = regex::Regex::new(&version_pattern()).unwrap();
        for s in [
            "1",
            "1.4",
            "1.4.2",
            "1.4.2+7",
            "255.255.65535+4294967295",
            "0.0.0",
            "01.4.2",
            "1+3",
            "256",
            "1.256",
            "1.2.65536",
            "1.2.3+4294967296",
            "1.2.3.4",
            "1.",
            ".1",
            "1.2+",
            "+1",
            "1..2",
            "v1.2",
            "1.2.3+",
            "",
            "1.2.3+-1",
            "1.2.-3",
        ] {
            assert_eq!(
                re.is_match(s),
                s.parse::<ImageVersion>().is_ok(),
                "{s:?}: pattern and parser disagree"
            );
        }
    }

    #[test]
    fn the_digest_pattern_is_the_parser() {
        let re = regex::Regex::new(DIGEST_PATTERN).unwrap();
        let good = "ab".repeat(32);
        for s in [
            good.clone(),
            good.to_uppercase(),
            "ab".repeat(31),
            format!("{good}a"),
            "zz".repeat(32),
        ] {
            assert_eq!(re.is_match(&s), Digest::from_hex(&s).is_some(), "{s}");
        }
    }
}
