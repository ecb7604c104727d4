//! Reading the state of the second factors that sites move from:
//! pam_google_authenticator's `~/.google_authenticator` files and
//! pam_oath's usersfile, and the keys of hardware tokens from their
//! vendor's PSKC file (RFC 6030). Pure: text in, tokens and plain-language
//! notes out, so the parsers are unit-tested and fuzzed (`fuzz/`); reading
//! the files and talking to the daemon is `admin::import`.
//!
//! Hand-written: no crate reads the first two formats (PSKC's XML is read
//! with roxmltree). No parser ever puts a secret or a scratch code into a
//! note or an error.
#![forbid(unsafe_code)]

pub mod google_authenticator;
pub mod oath;
pub mod pskc;

use otpd_proto::{Algorithm, TokenKind};
use zeroize::Zeroizing;

/// One token read from a file, for one user.
pub struct ImportedToken {
    /// TOTP or HOTP.
    pub kind: TokenKind,
    /// The shared secret's bytes.
    pub secret: Zeroizing<Vec<u8>>,
    /// HMAC algorithm (both tools use SHA1 in these files).
    pub algorithm: Algorithm,
    /// Digits per code.
    pub digits: u8,
    /// TOTP: seconds per step.
    pub period: u64,
    /// The replay state: TOTP, the last time step used; HOTP, the last
    /// counter value used.
    pub last_used: Option<u64>,
    /// HOTP: the counter value of the next code when `last_used` is `None`.
    pub first_counter: u64,
    /// The file's window, converted: TOTP, steps either side; HOTP,
    /// look-ahead. `None`: otpd's configured window.
    pub window: Option<u16>,
}

impl std::fmt::Debug for ImportedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedToken")
            .field("kind", &self.kind)
            .field("secret", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("last_used", &self.last_used)
            .field("first_counter", &self.first_counter)
            .field("window", &self.window)
            .finish()
    }
}

/// Everything imported for one user.
#[derive(Debug)]
pub struct ImportedUser {
    /// The user name.
    pub user: String,
    /// The user's tokens, in file order.
    pub tokens: Vec<ImportedToken>,
    /// Scratch codes (eight digits), which become recovery codes.
    pub scratch_codes: Vec<ScratchCode>,
    /// What otpd does not honour as the file says, one sentence each.
    pub notes: Vec<String>,
}

/// A scratch code; `Debug` never shows it.
pub struct ScratchCode(pub Zeroizing<String>);

impl std::fmt::Debug for ScratchCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScratchCode(<redacted>)")
    }
}

/// Decodes base32 (RFC 4648, upper or lower case, `=` padding and spaces
/// ignored), as both tools accept it. `None` for any other character.
pub fn base32_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8 + 1));
    let mut buffer: u64 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        if c == b'=' || c == b' ' {
            continue;
        }
        let value = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | value as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub use crate::core::tokens::unhex as hex_decode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_and_hex_decode_the_rfc_key() {
        let key = b"12345678901234567890";
        assert_eq!(
            base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
                .unwrap()
                .as_slice(),
            key
        );
        assert_eq!(
            base32_decode("gezd gnbv gy3t qojq gezd gnbv gy3t qojq")
                .unwrap()
                .as_slice(),
            key
        );
        assert_eq!(base32_decode("GEZDGNBVGY3TQOJQ====").unwrap().len(), 10);
        assert!(base32_decode("GEZ1").is_none());
        assert_eq!(
            hex_decode("3132333435363738393031323334353637383930")
                .unwrap()
                .as_slice(),
            key
        );
        assert!(hex_decode("313").is_none());
        assert!(hex_decode("3g").is_none());
    }
}
