//! `otpd.toml`: `Config::parse` on arbitrary text (the bytes as UTF-8 when
//! they are, and always lossily decoded).
//!
//! Invariants:
//! - never a panic;
//! - an error names the file ("config PATH…") and says something after it;
//! - a config that parses satisfies what `validate` promises (digits 6 or 8,
//!   period 15..=300, window ≤ 10, limits ≥ 1, base_delay ≤ max_delay,
//!   absolute paths), remembers its origin, and its derived `rules()` and
//!   `issuer()` do not panic and give values the daemon can use (the issuer
//!   passes `validate_issuer`, so enrolments can build their URI);
//! - parsing is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd::config::Config;
use otpd::core::names::validate_issuer;
use std::path::Path;

const ORIGIN: &str = "/etc/otpd/otpd.toml";

fn check(text: &str) {
    let origin = Path::new(ORIGIN);
    match Config::parse(text, origin) {
        Ok(config) => {
            assert_eq!(config.path.as_deref(), Some(origin));
            let rules = config.rules();
            assert!(matches!(config.totp.digits, 6 | 8));
            assert!((15..=300).contains(&config.totp.period));
            assert!(rules.window <= 10);
            assert!(rules.limits.max_failures >= 1 && rules.limits.user_max_failures >= 1);
            assert!(
                rules.limits.base_delay >= 1 && rules.limits.base_delay <= rules.limits.max_delay
            );
            assert!(config.socket.is_absolute() && config.state_dir.is_absolute());
            let issuer = config.issuer();
            if let Err(e) = validate_issuer(&issuer) {
                panic!("the configured issuer {issuer:?} is refused at enrolment: {e}");
            }
            let again = Config::parse(text, origin).expect("parsed once, parses again");
            assert_eq!(again, config);
        }
        Err(e) => {
            let message = e.to_string();
            let rest = message
                .strip_prefix("config ")
                .and_then(|m| m.strip_prefix(ORIGIN))
                .unwrap_or_else(|| panic!("the error does not name the file: {message:?}"));
            let detail = rest
                .split_once(": ")
                .map(|(_, d)| d.trim())
                .unwrap_or_else(|| panic!("no reason after the place: {message:?}"));
            assert!(!detail.is_empty(), "an empty reason: {message:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
