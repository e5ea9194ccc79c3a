//! Versions as integers that sort like the versions, so a database can compare them.

use fota_protocol::ImageVersion;

/// A version as an i64 that sorts like the version: (major, minor, revision, build) packed into
/// 64 bits, with the sign bit flipped so the order survives the signed column type.
pub fn version_key(v: &ImageVersion) -> i64 {
    let packed = u64::from(v.major) << 56
        | u64::from(v.minor) << 48
        | u64::from(v.revision) << 32
        | u64::from(v.build);
    (packed ^ (1 << 63)) as i64
}

/// The version a [`version_key`] was made from.
pub fn version_from_key(key: i64) -> ImageVersion {
    let packed = (key as u64) ^ (1 << 63);
    ImageVersion::new(
        (packed >> 56) as u8,
        (packed >> 48) as u8,
        (packed >> 32) as u16,
        packed as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_sort_like_versions() {
        let versions = [
            "0.0.0",
            "0.0.1",
            "0.1.0",
            "1.0.0",
            "1.0.0+1",
            "1.2.3",
            "1.10.0",
            "127.0.0",
            "128.0.0",
            "255.255.65535+4294967295",
        ];
        let keys: Vec<i64> = versions
            .iter()
            .map(|v| version_key(&v.parse().unwrap()))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for v in versions {
            let v: ImageVersion = v.parse().unwrap();
            assert_eq!(version_from_key(version_key(&v)), v);
        }
    }
}
