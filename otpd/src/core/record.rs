//! What the store keeps per user and per (user, source).

use otpd_proto::Algorithm;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A TOTP secret's raw bytes: zeroised on drop, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps raw key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The bytes, for the HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// Whether the first code has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrolState {
    /// Enrolled, waiting for its first valid code (`otpd confirm`).
    Pending,
    /// Codes are accepted.
    Active,
}

/// One user's token and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// Bumped by every write; a write succeeds only against the version it
    /// read, which makes check-and-update atomic in any store.
    pub version: u64,
    /// Pending or active.
    pub state: EnrolState,
    /// The shared secret.
    pub secret: SecretBytes,
    /// HMAC algorithm.
    pub algorithm: Algorithm,
    /// 6 or 8.
    pub digits: u8,
    /// Seconds per step.
    pub period: u64,
    /// The issuer shown in the app.
    pub issuer: String,
    /// Unix time of the enrolment.
    pub created: u64,
    /// Unix time of the last accepted code.
    pub last_success: Option<u64>,
    /// The replay guard: no code for a step ≤ this is accepted again.
    pub last_accepted_step: Option<u64>,
    /// Failures from all sources since the last success.
    pub user_failures: u32,
    /// Unix time of the most recent failure from any source.
    pub last_failure: Option<u64>,
}

/// Consecutive failures from one source (PAM_RHOST, or the calling uid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SourceCounter {
    /// Failures since this source's last success.
    pub failures: u32,
    /// Unix time of the most recent one.
    pub last_failure: u64,
}

/// The rate-limit source of an attempt: the remote host, or for local
/// logins the calling uid (design.md §2). Only root (sshd, sudo, login) is
/// believed about the remote host; a non-root caller could otherwise name a
/// new host on every guess and never reach its own backoff.
pub fn source_of(rhost: &str, caller_uid: u32) -> String {
    let rhost = rhost.trim();
    if rhost.is_empty() || caller_uid != 0 {
        format!("uid:{caller_uid}")
    } else {
        format!("rhost:{rhost}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_rhost_or_uid() {
        assert_eq!(source_of("192.0.2.1", 0), "rhost:192.0.2.1");
        assert_eq!(source_of("", 1000), "uid:1000");
        assert_eq!(source_of("  ", 0), "uid:0");
        assert_eq!(source_of("192.0.2.1", 1000), "uid:1000");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = SecretBytes::new(b"12345678901234567890".to_vec());
        assert!(!format!("{s:?}").contains("123"));
    }
}
