//! The one place the daemon and the CLI read the wall clock. Everything
//! else gets the time passed in (the pure core takes `now` as an argument);
//! clippy's `disallowed-methods` (otpd/clippy.toml) refuses
//! `SystemTime::now` anywhere but here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the handler reads the time: the system clock, or in tests one
/// that they set (to step it back, for example).
pub trait Clock: Send + Sync + 'static {
    /// Unix time in seconds.
    fn now(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        unix_now()
    }
}

/// Unix time in seconds (0 for a clock before 1970).
#[allow(clippy::disallowed_methods)] // the one reading of the wall clock
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
