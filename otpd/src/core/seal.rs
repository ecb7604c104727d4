//! Encryption at rest: a user record as the store keeps it.
//!
//! Each record is sealed whole (secret, recovery-code and token hashes with
//! their salts, phone number, counters) with XChaCha20-Poly1305 under the
//! daemon's 256-bit key, with a fresh random 192-bit nonce per write. The
//! associated data binds the ciphertext to the user name and the record
//! version, so a record copied onto another user, or an old copy put back
//! under a newer version, fails to open. Pure: the nonce is passed in.
//!
//! ```text
//! [0]       format tag 0xE1
//! [1..9]    key ID (which key sealed it)
//! [9..17]   record version, big-endian (readable without the key, for
//!           the store's compare-and-swap)
//! [17..25]  change number, big-endian: the store's count of writes, so
//!           that a store that lost its latest writes can tell
//! [25..49]  nonce
//! [49..]    ciphertext of the record's stored JSON (`store::format`), then the 16-byte tag
//! ```
//!
//! The header fields are covered by the tag too (associated data).
//!
//! What a store keeps beside its records and reads at open (its schema,
//! which key sealed it, the number of its last removal, its watermark) is
//! authenticated too: with HMAC-SHA-256 under a key derived from the
//! record key ([`RecordKey::meta_tag`]), so that whoever can write the
//! store but not read the key cannot change it unnoticed.

use crate::core::record::UserRecord;
use crate::store::format;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a metadata tag ([`RecordKey::meta_tag`]).
pub const META_TAG_LEN: usize = 32;
/// The label of the metadata key's derivation: HMAC-SHA-256 keyed with the
/// record key over this label (HKDF's expand step for one block, with the
/// record key, uniformly random already, as the pseudorandom key).
const META_KEY_LABEL: &[u8] = b"otpd store metadata key\0v1\x01";
const META_TAG_PREFIX: &[u8] = b"otpd/meta/1\0";

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
const TAG: u8 = 0xE1;
const HEADER_LEN: usize = 1 + 8 + 8 + 8 + NONCE_LEN;
const NONCE_AT: usize = 25;
const AEAD_TAG_LEN: usize = 16;
const AD_PREFIX: &[u8] = b"otpd/record/1\0";

/// Which key sealed a record: the first 8 bytes of SHA-256 over a label and
/// the key. It names a key in messages without revealing anything useful
/// about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for KeyId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let bytes = decode_hex(s.as_bytes()).ok_or(())?;
        Ok(KeyId(bytes.as_slice().try_into().map_err(|_| ())?))
    }
}

/// The record key: the cipher (which wipes its key on drop), its ID, and
/// the key derived from it for the store's metadata. No `Debug` beyond the
/// ID; no way to get the bytes back out.
pub struct RecordKey {
    cipher: XChaCha20Poly1305,
    id: KeyId,
    meta_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordKey(id {})", self.id)
    }
}

/// Why a key file or a sealed record was refused. Never contains key or
/// record bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key file's text is not a key.
    #[error("not an otpd key: expected 64 hexadecimal digits (32 bytes), as `otpd keygen` writes")]
    BadKeyText,
    /// Too short, or not in the sealed format.
    #[error("not a sealed record ({0})")]
    Format(&'static str),
    /// Sealed with another key.
    #[error("sealed with key ID {found}, not with this key ({expected})")]
    WrongKey {
        /// The record's key ID.
        found: KeyId,
        /// The key's ID.
        expected: KeyId,
    },
    /// The tag did not verify: altered, truncated, or another user's record.
    #[error("the record fails its authentication check (altered, or copied from another user)")]
    Tampered,
    /// Decrypted, but not a record of this otpd.
    #[error("the record cannot be decoded (line {line} column {column})")]
    Decode {
        /// serde_json's position (its message could quote the value).
        line: usize,
        /// See `line`.
        column: usize,
    },
    /// The version inside differs from the one outside.
    #[error("the record's version does not match its header")]
    VersionMismatch,
    /// Encryption failed (only on absurd sizes).
    #[error("the record cannot be sealed")]
    Seal,
}

fn decode_hex(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() / 2));
    for pair in text.chunks(2) {
        out.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    Some(out)
}

impl RecordKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"otpd key id\0");
        hasher.update(bytes);
        let digest = hasher.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let mut meta_key = Zeroizing::new([0u8; 32]);
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(bytes)
            .expect("HMAC takes a key of any length");
        mac.update(META_KEY_LABEL);
        meta_key.copy_from_slice(&mac.finalize().into_bytes());
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
            id: KeyId(id),
            meta_key,
        }
    }

    /// A key from a key file's contents: 64 hex digits, surrounding
    /// whitespace allowed (`openssl rand -hex 32` writes the same format).
    pub fn parse(text: &[u8]) -> Result<Self, SealError> {
        let trimmed = text.trim_ascii();
        if trimmed.len() != 2 * KEY_LEN {
            return Err(SealError::BadKeyText);
        }
        let bytes = decode_hex(trimmed).ok_or(SealError::BadKeyText)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&bytes);
        Ok(Self::from_bytes(&key))
    }

    /// This key's ID.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn meta_mac(&self, label: &str, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(self.meta_key.as_slice())
            .expect("HMAC takes a key of any length");
        mac.update(META_TAG_PREFIX);
        mac.update(label.as_bytes());
        mac.update(&[0]);
        // Each part with its length first: no two lists of parts give the
        // same bytes.
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The tag of a piece of store metadata: HMAC-SHA-256, under the key
    /// derived from this key, over `label` (what it is) and `parts`.
    pub fn meta_tag(&self, label: &str, parts: &[&[u8]]) -> [u8; META_TAG_LEN] {
        self.meta_mac(label, parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is [`Self::meta_tag`] of `label` and `parts`
    /// (compared in constant time).
    pub fn verify_meta_tag(&self, label: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.meta_mac(label, parts).verify_slice(tag).is_ok()
    }
}

/// The text of a key file for `bytes`: 64 hex digits and a newline.
pub fn key_file_text(bytes: &[u8; KEY_LEN]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
    for b in bytes {
        text.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        text.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    text.push('\n');
    text
}

fn associated_data(user: &str, version: u64, change: u64) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_PREFIX.len() + user.len() + 17);
    ad.extend_from_slice(AD_PREFIX);
    ad.extend_from_slice(user.as_bytes());
    ad.push(0);
    ad.extend_from_slice(&version.to_be_bytes());
    ad.extend_from_slice(&change.to_be_bytes());
    ad
}

/// What a sealed record says about itself without the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The key that sealed it.
    pub key_id: KeyId,
    /// The record's version.
    pub version: u64,
    /// The store's change number of the write.
    pub change: u64,
}

/// Seals `record` of `user` under `key` as write number `change`, with
/// `nonce` (fresh and random for every write: the caller's job).
pub fn seal_record(
    key: &RecordKey,
    user: &str,
    record: &UserRecord,
    change: u64,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, SealError> {
    let plain = format::encode(record).map_err(|_| SealError::Seal)?;
    let ad = associated_data(user, record.version, change);
    let sealed = key
        .cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &ad,
            },
        )
        .map_err(|_| SealError::Seal)?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.push(TAG);
    out.extend_from_slice(&key.id.0);
    out.extend_from_slice(&record.version.to_be_bytes());
    out.extend_from_slice(&change.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The header of a sealed record, without the key.
pub fn peek(bytes: &[u8]) -> Result<Header, SealError> {
    if bytes.len() < HEADER_LEN + AEAD_TAG_LEN {
        return Err(SealError::Format("too short"));
    }
    if bytes[0] != TAG {
        return Err(SealError::Format("unknown format tag"));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[1..9]);
    let field = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Ok(Header {
        key_id: KeyId(id),
        version: field(9),
        change: field(17),
    })
}

/// Whether `bytes` look like a sealed record rather than a record written
/// in clear by otpd before encryption at rest (which begins with `{`).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&TAG)
}

/// Opens the sealed record of `user`: checks the key ID, the tag (which
/// covers the user name and the version) and the version inside.
pub fn open_record(key: &RecordKey, user: &str, bytes: &[u8]) -> Result<UserRecord, SealError> {
    let Header {
        key_id: id,
        version,
        change,
    } = peek(bytes)?;
    if id != key.id {
        return Err(SealError::WrongKey {
            found: id,
            expected: key.id,
        });
    }
    let ad = associated_data(user, version, change);
    let plain = Zeroizing::new(
        key.cipher
            .decrypt(
                XNonce::from_slice(&bytes[NONCE_AT..HEADER_LEN]),
                Payload {
                    msg: &bytes[HEADER_LEN..],
                    aad: &ad,
                },
            )
            .map_err(|_| SealError::Tampered)?,
    );
    let record = format::decode(&plain).map_err(|e| SealError::Decode {
        line: e.line,
        column: e.column,
    })?;
    if record.version != version {
        return Err(SealError::VersionMismatch);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::SecretBytes;

    fn record(version: u64) -> UserRecord {
        let mut r = UserRecord::decoy();
        r.version = version;
        r.issuer = "t".into();
        r.change_devices(|d| {
            d[0].secret = SecretBytes::new(b"12345678901234567890".to_vec());
            d[0].created = 1;
            d[0].last_accepted_step = Some(5);
        })
        .unwrap();
        r
    }

    fn key(byte: u8) -> RecordKey {
        RecordKey::from_bytes(&[byte; KEY_LEN])
    }

    #[test]
    fn round_trip_and_no_secret_in_the_sealed_bytes() {
        let k = key(1);
        let sealed = seal_record(&k, "alice", &record(7), 3, [9; NONCE_LEN]).unwrap();
        assert!(is_sealed(&sealed));
        assert_eq!(
            peek(&sealed).unwrap(),
            Header {
                key_id: k.id(),
                version: 7,
                change: 3
            }
        );
        assert_eq!(open_record(&k, "alice", &sealed).unwrap(), record(7));
        let raw = b"12345678901234567890";
        assert!(!sealed.windows(raw.len()).any(|w| w == raw));
        // The JSON's number array form of the secret is not there either.
        let json = serde_json::to_vec(&record(7).first_device().secret).unwrap();
        assert!(!sealed.windows(json.len()).any(|w| w == json.as_slice()));
    }

    #[test]
    fn another_user_another_version_another_key_or_a_flipped_bit_fail() {
        let k = key(1);
        let sealed = seal_record(&k, "alice", &record(7), 3, [9; NONCE_LEN]).unwrap();
        assert_eq!(open_record(&k, "bob", &sealed), Err(SealError::Tampered));
        let mut older = sealed.clone();
        older[16] ^= 1; // version 7 → 6 in the header
        assert_eq!(open_record(&k, "alice", &older), Err(SealError::Tampered));
        let mut renumbered = sealed.clone();
        renumbered[24] ^= 1; // change 3 → 2
        assert_eq!(
            open_record(&k, "alice", &renumbered),
            Err(SealError::Tampered)
        );
        assert!(matches!(
            open_record(&key(2), "alice", &sealed),
            Err(SealError::WrongKey { .. })
        ));
        for i in HEADER_LEN..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x80;
            assert_eq!(open_record(&k, "alice", &bad), Err(SealError::Tampered));
        }
        assert!(matches!(
            open_record(&k, "alice", &sealed[..HEADER_LEN]),
            Err(SealError::Format(_))
        ));
        assert!(matches!(
            open_record(&k, "alice", b"{\"version\":1}"),
            Err(SealError::Format(_))
        ));
    }

    #[test]
    fn metadata_tags_bind_the_key_the_label_and_every_part() {
        let k = key(1);
        let tag = k.meta_tag("schema", &[b"3", b"users"]);
        assert!(k.verify_meta_tag("schema", &[b"3", b"users"], &tag));
        assert!(!key(2).verify_meta_tag("schema", &[b"3", b"users"], &tag));
        assert!(!k.verify_meta_tag("active", &[b"3", b"users"], &tag));
        assert!(!k.verify_meta_tag("schema", &[b"2", b"users"], &tag));
        // Where one part ends and the next begins counts.
        assert!(!k.verify_meta_tag("schema", &[b"3u", b"sers"], &tag));
        assert!(!k.verify_meta_tag("schema", &[b"3", b"users", b""], &tag));
        assert!(!k.verify_meta_tag("schema", &[b"3", b"users"], &tag[..31]));
        let mut flipped = tag;
        flipped[0] ^= 1;
        assert!(!k.verify_meta_tag("schema", &[b"3", b"users"], &flipped));
        // The derived key is not the record key: a tag is no record tag,
        // and the same bytes under another label differ.
        assert_ne!(tag, k.meta_tag("watermark", &[b"3", b"users"]));
    }

    #[test]
    fn nonces_make_each_write_different() {
        let k = key(1);
        let a = seal_record(&k, "alice", &record(7), 3, [1; NONCE_LEN]).unwrap();
        let b = seal_record(&k, "alice", &record(7), 3, [2; NONCE_LEN]).unwrap();
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn key_files_parse_and_refuse_junk() {
        let bytes = [0xabu8; KEY_LEN];
        let text = key_file_text(&bytes);
        assert_eq!(text.len(), 65);
        let k = RecordKey::parse(text.as_bytes()).unwrap();
        assert_eq!(k.id(), RecordKey::from_bytes(&bytes).id());
        assert_eq!(
            RecordKey::parse(text.to_uppercase().as_bytes())
                .unwrap()
                .id(),
            k.id()
        );
        for junk in [&b""[..], b"abc", &text.as_bytes()[..63]] {
            assert_eq!(RecordKey::parse(junk).unwrap_err(), SealError::BadKeyText);
        }
        let not_hex = format!("zz{}", "0".repeat(62));
        assert_eq!(not_hex.len(), 64);
        {
            assert_eq!(
                RecordKey::parse(not_hex.as_bytes()).unwrap_err(),
                SealError::BadKeyText
            );
        }
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id().to_string().len(), 16);
        assert_eq!(key(1).id().to_string().parse::<KeyId>(), Ok(key(1).id()));
        assert!(!format!("{:?}", key(0xab)).contains("abab"));
    }
}
