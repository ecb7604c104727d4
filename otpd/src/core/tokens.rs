//! One-time secrets other than the TOTP key: self-enrolment link tokens,
//! recovery codes and texted codes. Each is shown once and stored only as a
//! hash; comparisons are constant-time. Pure: randomness comes in as bytes
//! (the caller draws them from the OS RNG with `crate::rng::random_bytes`).
//!
//! Hashes are SHA-256 (RustCrypto `sha2`): link tokens carry 128 random
//! bits, recovery codes 60, so a fast hash with a per-code salt is enough
//! against a stolen store; a slow KDF would make every PAM prompt that
//! checks ten recovery codes ten times slower for no real gain.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bytes of a link token (128 bits).
pub const TOKEN_BYTES: usize = 16;
/// The recovery-code alphabet: digits and capitals without 0, 1, I and O,
/// which are easily confused. 32 symbols, 5 bits each.
pub const RECOVERY_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// Symbols per recovery code: 12 × 5 = 60 bits.
pub const RECOVERY_LEN: usize = 12;

/// A link token as it appears in the URL: 32 lowercase hex digits.
pub fn token_text(random: &[u8; TOKEN_BYTES]) -> String {
    hex(random)
}

/// What is stored for a link token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Whether `token` (from a URL) has the shape of a link token at all; a
/// cheap refusal before any lookup.
pub fn token_shape_ok(token: &str) -> bool {
    token.len() == 2 * TOKEN_BYTES && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A salted hash of a short code (recovery or texted).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeHash {
    /// 16 random bytes, hex.
    pub salt: String,
    /// SHA-256(salt bytes ‖ canonical code), hex.
    pub hash: String,
}

impl std::fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHash(<redacted>)")
    }
}

impl CodeHash {
    /// Hashes the canonical `code` with `salt`.
    pub fn new(code: &str, salt: &[u8; 16]) -> CodeHash {
        CodeHash {
            salt: hex(salt),
            hash: hex(&salted(salt, code)),
        }
    }

    /// Whether the canonical `code` is the one hashed; constant-time in the hash.
    pub fn matches(&self, code: &str) -> bool {
        let Some(salt) = unhex(&self.salt) else {
            return false;
        };
        constant_time_eq::constant_time_eq(
            hex(&salted(&salt, code)).as_bytes(),
            self.hash.as_bytes(),
        )
    }
}

fn salted(salt: &[u8], code: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(code.as_bytes());
    hasher.finalize().into()
}

/// A recovery code from 12 random symbols (`random` holds one byte per
/// symbol; only its low five bits are used, so each symbol is uniform),
/// shown as `XXXX-XXXX-XXXX`.
pub fn recovery_code(random: &[u8; RECOVERY_LEN]) -> String {
    let symbols: Vec<char> = random
        .iter()
        .map(|b| RECOVERY_ALPHABET[usize::from(b & 0x1f)] as char)
        .collect();
    symbols
        .chunks(4)
        .map(|chunk| chunk.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The canonical form of something typed as a recovery code: upper case,
/// without dashes or spaces, 12 symbols of the alphabet. `None` when it
/// cannot be one.
pub fn normalize_recovery(typed: &str) -> Option<Zeroizing<String>> {
    // Sized once: filtering only shrinks, so no unwiped copy is left behind.
    let mut canonical = Zeroizing::new(String::with_capacity(typed.len()));
    canonical.extend(
        typed
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_uppercase()),
    );
    (canonical.len() == RECOVERY_LEN && canonical.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
        .then_some(canonical)
}

/// Digits of pam_google_authenticator's scratch codes, which an import
/// keeps as recovery codes.
pub const SCRATCH_LEN: usize = 8;

/// The canonical form of something typed as an imported scratch code:
/// exactly eight ASCII digits after trimming. `None` when it cannot be one.
pub fn normalize_scratch(typed: &str) -> Option<Zeroizing<String>> {
    let trimmed = typed.trim();
    (trimmed.len() == SCRATCH_LEN && trimmed.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Zeroizing::new(trimmed.to_owned()))
}

/// The canonical form of a typed recovery code of either kind: one of
/// otpd's own (`XXXX-XXXX-XXXX`) or an imported scratch code.
pub fn normalize_any_recovery(typed: &str) -> Option<Zeroizing<String>> {
    normalize_recovery(typed).or_else(|| normalize_scratch(typed))
}

/// A six-digit texted code from random bytes (uniform: rejection is not
/// needed for a one-in-a-million guess bound; the bias of u32 % 10^6 is
/// below 2^-12).
pub fn texted_code(random: &[u8; 4]) -> Zeroizing<String> {
    use std::fmt::Write;
    let mut code = Zeroizing::new(String::with_capacity(6));
    let _ = write!(code, "{:06}", u32::from_le_bytes(*random) % 1_000_000);
    code
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hexadecimal (either case); `None` for an odd length or any
/// other character. Sized once and wiped on drop: it also reads secrets
/// (pam_oath's usersfile).
pub fn unhex(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() / 2));
    for pair in text.as_bytes().chunks(2) {
        let digit = |b: u8| (b as char).to_digit(16);
        out.push((digit(pair[0])? * 16 + digit(pair[1])?) as u8);
    }
    Some(out)
}

/// Whether one more text message may be sent now: at most `max_per_hour`
/// in the last hour. `Err(seconds)` until the oldest of them is an hour old.
pub fn sms_allowed(sent: &[u64], now: u64, max_per_hour: u32) -> Result<(), u64> {
    let recent: Vec<u64> = sent
        .iter()
        .copied()
        .filter(|t| now.saturating_sub(*t) < 3600)
        .collect();
    if recent.len() < max_per_hour as usize {
        return Ok(());
    }
    let oldest = recent.iter().min().copied().unwrap_or(now);
    Err((oldest + 3600).saturating_sub(now).max(1))
}

/// A phone number in international form: `+`, then 8 to 15 digits, the
/// first not 0 (E.164). Spaces and dashes typed between digits are dropped.
pub fn normalize_phone(typed: &str) -> Option<String> {
    let compact: String = typed
        .trim()
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    let digits = compact.strip_prefix('+')?;
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then_some(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hex_and_hashed() {
        let token = token_text(&[0xab; 16]);
        assert_eq!(token, "ab".repeat(16));
        assert!(token_shape_ok(&token));
        assert!(!token_shape_ok("abc"));
        assert!(!token_shape_ok(&"zz".repeat(16)));
        let hash = token_hash(&token);
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, token);
        assert_eq!(hash, token_hash(&token));
    }

    #[test]
    fn recovery_codes_are_grouped_and_normalised() {
        let code = recovery_code(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 30, 31]);
        assert_eq!(code, "2345-6789-ABYZ");
        // Every symbol of the alphabet is reachable, and only those.
        let all: String = (0u8..=255)
            .map(|b| RECOVERY_ALPHABET[usize::from(b & 0x1f)] as char)
            .collect();
        assert!(!all.contains(['0', '1', 'I', 'O']));
        assert_eq!(
            normalize_recovery(" 2345-6789-abyz ")
                .as_deref()
                .map(String::as_str),
            Some("23456789ABYZ")
        );
        assert_eq!(
            normalize_recovery("2345 6789 ABYZ")
                .as_deref()
                .map(String::as_str),
            Some("23456789ABYZ")
        );
        assert_eq!(normalize_recovery("2345-6789-ABY"), None);
        assert_eq!(normalize_recovery("0345-6789-ABYZ"), None);
        assert_eq!(normalize_recovery("123456"), None);
    }

    #[test]
    fn scratch_codes_are_eight_digits() {
        let n = |s: &str| normalize_any_recovery(s).map(|z| z.to_string());
        assert_eq!(n(" 12345678 ").as_deref(), Some("12345678"));
        assert_eq!(n("1234567"), None);
        assert_eq!(n("123456789"), None);
        assert_eq!(n("1234 5678"), None);
        assert_eq!(n("2345-6789-abyz").as_deref(), Some("23456789ABYZ"));
    }

    #[test]
    fn code_hashes_are_salted_and_checked() {
        let a = CodeHash::new("23456789ABYZ", &[1; 16]);
        let b = CodeHash::new("23456789ABYZ", &[2; 16]);
        assert_ne!(a.hash, b.hash, "a salt per code");
        assert!(a.matches("23456789ABYZ") && b.matches("23456789ABYZ"));
        assert!(!a.matches("23456789ABYY"));
        let broken = CodeHash {
            salt: "xyz".into(),
            hash: a.hash.clone(),
        };
        assert!(!broken.matches("23456789ABYZ"));
        assert!(!format!("{a:?}").contains(&a.hash));
    }

    #[test]
    fn texted_codes_have_six_digits() {
        assert_eq!(*texted_code(&[0, 0, 0, 0]), "000000");
        assert_eq!(*texted_code(&[0x40, 0x42, 0x0f, 0x00]), "000000");
        assert_eq!(*texted_code(&[0x3f, 0x42, 0x0f, 0x00]), "999999");
    }

    #[test]
    fn sms_sending_is_limited_per_hour() {
        let now = 100_000;
        assert_eq!(sms_allowed(&[], now, 3), Ok(()));
        assert_eq!(sms_allowed(&[now - 10, now - 20], now, 3), Ok(()));
        assert_eq!(
            sms_allowed(&[now - 10, now - 20, now - 3000], now, 3),
            Err(600)
        );
        // Older than an hour no longer counts.
        assert_eq!(
            sms_allowed(&[now - 10, now - 20, now - 3600], now, 3),
            Ok(())
        );
    }

    #[test]
    fn phone_numbers_are_international() {
        assert_eq!(normalize_phone("+31612345678"), Some("+31612345678".into()));
        assert_eq!(
            normalize_phone(" +31 6 1234-5678 "),
            Some("+31612345678".into())
        );
        assert_eq!(normalize_phone("0612345678"), None);
        assert_eq!(normalize_phone("+0612345678"), None);
        assert_eq!(normalize_phone("+3161234567890123"), None);
        assert_eq!(normalize_phone("+31abc"), None);
        assert_eq!(normalize_phone("+1234567"), None);
    }
}
