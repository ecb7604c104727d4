//! What the store keeps per user and per (user, source).

use crate::core::tokens::CodeHash;
use otpd_proto::Algorithm;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A TOTP secret's raw bytes: zeroised on drop, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct SecretBytes(Vec<u8>);

/// The longest secret a record may hold (RFC 4226 asks for 128 bits at
/// least, 160 recommended; apps cope with up to 512).
const MAX_SECRET_LEN: usize = 128;

impl<'de> Deserialize<'de> for SecretBytes {
    /// Read into a buffer sized once: a `Vec` that grew while reading would
    /// free its earlier buffers, holding most of the secret, unwiped. On an
    /// error the partial value is dropped, and so wiped.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = SecretBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "at most {MAX_SECRET_LEN} bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SecretBytes, A::Error> {
                let mut out = SecretBytes(Vec::with_capacity(MAX_SECRET_LEN));
                while let Some(b) = seq.next_element::<u8>()? {
                    if out.0.len() == MAX_SECRET_LEN {
                        return Err(serde::de::Error::custom("the secret is too long"));
                    }
                    out.0.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Bytes)
    }
}

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
    /// Self-enrolment link, recovery codes, phone: absent in records
    /// written before they existed.
    #[serde(default)]
    pub fallback: Fallback,
}

impl UserRecord {
    /// A stand-in record (an all-zero secret, active) that the daemon
    /// checks codes against and writes for unknown users, so that they take
    /// the same path as enrolled ones; never stored under a user's name.
    pub fn decoy() -> Self {
        UserRecord {
            version: 0,
            state: EnrolState::Active,
            secret: SecretBytes::new(vec![0; 20]),
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            issuer: String::new(),
            created: 0,
            last_success: None,
            last_accepted_step: None,
            user_failures: 0,
            last_failure: None,
            fallback: Fallback::default(),
        }
    }
}

/// A one-time link or session: only the hash of its token is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// SHA-256 of the token, hex ([`crate::core::tokens::token_hash`]).
    pub token_hash: String,
    /// Unix time after which the token is refused.
    pub expires: u64,
}

/// An outstanding texted code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsChallenge {
    /// The code, hashed.
    pub code: CodeHash,
    /// Unix time after which it is refused.
    pub expires: u64,
    /// `Some`: registering this number (`otpd phone`, the page's phone
    /// step); `None`: a code for a login.
    pub number: Option<String>,
    /// Wrong codes typed against this challenge (registration only; login
    /// codes are counted by the rate limits).
    #[serde(default)]
    pub tries: u32,
}

/// Everything besides the TOTP key that can let the user in or enrol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Fallback {
    /// The self-enrolment link of a pending enrolment.
    pub link: Option<Link>,
    /// After a self-enrolment: the session of the page's phone step.
    pub phone_session: Option<Link>,
    /// Unused recovery codes.
    pub recovery: Vec<CodeHash>,
    /// The registered phone number (E.164).
    pub phone: Option<String>,
    /// Outstanding texted login codes (the newest few, each valid once),
    /// so that a text someone else asks for does not spoil the one the
    /// user is typing.
    pub sms: Vec<SmsChallenge>,
    /// The outstanding phone registration (its own slot, for the same reason).
    pub sms_register: Option<SmsChallenge>,
    /// When texts were sent (the last hour's), for the limit.
    pub sms_sent: Vec<u64>,
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

/// The rate-limit source of an attempt (design.md §2): the remote host, or
/// for a local login the uid of the person logging in. `peer_uid` is the
/// caller's uid from SO_PEERCRED; `rhost` and `ruid` are what the PAM module
/// reports. Only root (sshd, sudo, su, login) is believed about them: a
/// non-root caller could otherwise name a new source on every guess and
/// never reach its own backoff. `ruid` matters for su and sudo, which run
/// as root whoever starts them: without it every local user would share
/// root's counter, and one could throttle another's sudo.
pub fn source_of(rhost: &str, ruid: Option<u32>, peer_uid: u32) -> String {
    let rhost = rhost.trim();
    if peer_uid != 0 {
        format!("uid:{peer_uid}")
    } else if !rhost.is_empty() {
        format!("rhost:{rhost}")
    } else {
        format!("uid:{}", ruid.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_rhost_or_uid() {
        assert_eq!(source_of("192.0.2.1", None, 0), "rhost:192.0.2.1");
        assert_eq!(source_of("192.0.2.1", Some(7), 0), "rhost:192.0.2.1");
        assert_eq!(source_of("", None, 1000), "uid:1000");
        assert_eq!(source_of("  ", None, 0), "uid:0");
        // su/sudo: root calls, the real uid is the person.
        assert_eq!(source_of("", Some(1001), 0), "uid:1001");
        // A non-root caller is not believed about either.
        assert_eq!(source_of("192.0.2.1", Some(0), 1000), "uid:1000");
    }

    #[test]
    fn secrets_read_back_whole_and_overlong_ones_are_refused() {
        let s = SecretBytes::new((0..20).collect());
        let json = serde_json::to_string(&s).unwrap();
        let back: SecretBytes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(back.0.capacity() >= MAX_SECRET_LEN, "sized once");
        let long = serde_json::to_string(&vec![1u8; MAX_SECRET_LEN + 1]).unwrap();
        assert!(serde_json::from_str::<SecretBytes>(&long).is_err());
        assert!(serde_json::from_str::<SecretBytes>("[1,256]").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = SecretBytes::new(b"12345678901234567890".to_vec());
        assert!(!format!("{s:?}").contains("123"));
    }
}
