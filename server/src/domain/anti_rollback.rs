//! Anti-rollback: no path offers an image below the security counter a device's bootloader
//! holds. The bootloader would refuse such an image anyway (it checks SEC_CNT against its
//! journal's floor before every jump), but an offer it must refuse costs the device a download
//! over 4G and reports a failure that counts against a good rollout's gate, so the server never
//! makes one: rollout start and fleet rollback select targets with what each holds, and every
//! offer at check-in (late joiners and stage advances included) checks it again.
//!
//! What a device holds is the larger of the floor it reports at check-in and the counter of the
//! release it runs (a device on trial reports the floor from before the trial; once it confirms,
//! its floor is the trial image's counter, so the larger one is the safe guess). A device that
//! reports no floor and runs firmware the server has no release for holds 0 as far as the server
//! knows; its own client and bootloader still refuse a downgrade.

/// The security counter a device holds, from what it reported and the release it runs.
pub fn held(reported: Option<u32>, running_release: Option<u32>) -> u32 {
    reported.unwrap_or(0).max(running_release.unwrap_or(0))
}

/// Whether a device holding `held` would refuse an image with `release_counter`.
pub fn blocks(held: u32, release_counter: u32) -> bool {
    held > release_counter
}

/// The reason stored with a device skipped for its counter.
pub fn reason(held: u32, release_counter: u32) -> String {
    format!("holds security counter {held}, above the release's {release_counter}: its bootloader would refuse the image")
}

/// Converts a stored (BIGINT) counter. Values outside `u32` cannot come from a device or an
/// image; a too-large one reads as the most restrictive floor, a negative one as none.
pub fn from_stored(v: Option<i64>) -> Option<u32> {
    v.map(|v| u32::try_from(v).unwrap_or(if v < 0 { 0 } else { u32::MAX }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_holds_the_larger_of_its_report_and_its_release() {
        assert_eq!(held(None, None), 0);
        assert_eq!(held(Some(3), None), 3);
        assert_eq!(held(None, Some(2)), 2);
        assert_eq!(held(Some(2), Some(5)), 5, "on trial of a counter-5 image");
        assert_eq!(held(Some(5), Some(2)), 5, "runs an old image, floor raised");
    }

    #[test]
    fn only_a_lower_counter_is_blocked() {
        assert!(blocks(3, 2));
        assert!(!blocks(3, 3), "an equal counter is a legitimate rollback");
        assert!(!blocks(2, 3));
        assert!(reason(3, 2).contains("3") && reason(3, 2).contains("2"));
    }

    #[test]
    fn stored_counters_out_of_range_are_clamped() {
        assert_eq!(from_stored(None), None);
        assert_eq!(from_stored(Some(7)), Some(7));
        assert_eq!(from_stored(Some(i64::MAX)), Some(u32::MAX));
        assert_eq!(from_stored(Some(-1)), Some(0));
    }
}
