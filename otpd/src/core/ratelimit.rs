//! The backoff rules of design.md §2, as arithmetic.

/// The `[limits]` settings, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Consecutive failures from one source before it must wait.
    pub max_failures: u32,
    /// The first wait, in seconds.
    pub base_delay: u64,
    /// The longest wait, in seconds.
    pub max_delay: u64,
    /// Failures across all sources before sources that have not proven
    /// themselves for the user must wait (the per-user ceiling).
    pub user_max_failures: u32,
    /// How long a source stays trusted for a user after a success from it
    /// (`[limits] trusted_source_days`), in seconds: the per-user ceiling
    /// never blocks a trusted source.
    pub trusted_source_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_failures: 5,
            base_delay: 30,
            max_delay: 15 * 60,
            user_max_failures: 20,
            trusted_source_secs: 30 * 24 * 3600,
        }
    }
}

/// The wait imposed after `failures` failures when the threshold is
/// `threshold`: none below it, `base` at it, doubling per further failure,
/// capped at `max`.
pub fn backoff(failures: u32, threshold: u32, base: u64, max: u64) -> Option<u64> {
    if failures < threshold.max(1) {
        return None;
    }
    let doublings = failures - threshold.max(1);
    let factor = 1u64.checked_shl(doublings.min(63)).unwrap_or(u64::MAX);
    Some(base.saturating_mul(factor).min(max))
}

/// Seconds still to wait at `now`, or `None` when an attempt is allowed.
pub fn remaining(
    failures: u32,
    last_failure: u64,
    threshold: u32,
    limits: &Limits,
    now: u64,
) -> Option<u64> {
    let wait = backoff(failures, threshold, limits.base_delay, limits.max_delay)?;
    let until = last_failure.saturating_add(wait);
    // min(): a clock set backwards must not stretch the wait past its length.
    (until > now).then(|| (until - now).min(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_the_threshold_and_doubles_to_the_cap() {
        let b = |f| backoff(f, 5, 30, 900);
        assert_eq!(b(0), None);
        assert_eq!(b(4), None);
        assert_eq!(b(5), Some(30));
        assert_eq!(b(6), Some(60));
        assert_eq!(b(7), Some(120));
        assert_eq!(b(9), Some(480));
        assert_eq!(b(10), Some(900));
        assert_eq!(b(200), Some(900));
        assert_eq!(backoff(u32::MAX, 1, u64::MAX, u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn remaining_counts_down_from_the_last_failure() {
        let l = Limits::default();
        assert_eq!(remaining(5, 1000, 5, &l, 1000), Some(30));
        assert_eq!(remaining(5, 1000, 5, &l, 1029), Some(1));
        assert_eq!(remaining(5, 1000, 5, &l, 1030), None);
        assert_eq!(remaining(4, 1000, 5, &l, 1000), None);
        assert_eq!(remaining(20, 1000, 20, &l, 1010), Some(20));
        // The clock went back an hour: still at most the wait itself.
        assert_eq!(remaining(5, 5000, 5, &l, 1400), Some(30));
    }
}
