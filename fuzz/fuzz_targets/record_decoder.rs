//! Encryption at rest (`otpd::core::seal`) and the stored layout inside it
//! (`otpd::store::format`): what the store reads back.
//!
//! Invariants:
//! - `format::decode` never panics on arbitrary bytes, and what it decodes
//!   encodes and decodes again to itself;
//! - `open_record` never panics, on arbitrary bytes and on bytes that are
//!   properly sealed but hold arbitrary plaintext (sealed here with the
//!   layout of seal.rs, so that the decoder behind the tag is reached);
//! - a record built from fuzz data seals, and opens to an equal record with
//!   the same key and user; the header shows the key's ID, the version and
//!   the change number;
//! - this target's own sealing gives the same bytes as `seal_record` (the
//!   documented layout holds);
//! - another user name fails (`Tampered`), another key fails (`WrongKey`),
//!   any flipped bit fails (`Format`, `WrongKey` or `Tampered` as the byte
//!   says), any truncation fails;
//! - a sealed record that opens has the version of its header, and seals
//!   and opens again to itself;
//! - the sealed bytes never contain the TOTP secret;
//! - key files: `RecordKey::parse` never panics, accepts only 64 hex
//!   digits (surrounding white space allowed), and `key_file_text`
//!   round-trips; a key ID's text round-trips.
#![no_main]

use arbitrary::Arbitrary;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use libfuzzer_sys::fuzz_target;
use otpd::core::record::{
    Device, EnrollState, Fallback, Link, SecretBytes, SmsChallenge, TokenKind, TrustedSource,
    UserRecord, DEFAULT_DEVICE,
};
use otpd::core::seal::{
    is_sealed, key_file_text, open_record, peek, seal_record, Header, KeyId, RecordKey, SealError,
    KEY_LEN, NONCE_LEN,
};
use otpd::core::tokens::CodeHash;
use otpd::store::format;
use otpd_proto::Algorithm;

// The layout of seal.rs (its module documentation and `associated_data`).
// `sealing_matches_seal_record` below fails loudly if they drift apart.
// [0] tag, [1..9] key ID, [9..17] version, [17..25] change, [25..49]
// nonce, then ciphertext and tag; the AD is prefix, user, 0, version, change.
const TAG: u8 = 0xE1;
const HEADER_LEN: usize = 1 + 8 + 8 + 8 + NONCE_LEN;
const AEAD_TAG_LEN: usize = 16;
const AD_PREFIX: &[u8] = b"otpd/record/1\0";
/// record.rs: the longest secret a record may hold.
const MAX_SECRET_LEN: usize = 128;

#[derive(Debug, Arbitrary)]
struct HashSeed {
    salt: String,
    hash: String,
}

#[derive(Debug, Arbitrary)]
struct ChallengeSeed {
    code: HashSeed,
    expires: u64,
    number: Option<String>,
    tries: u32,
}

#[derive(Debug, Arbitrary)]
struct RecordSeed {
    version: u64,
    pending: bool,
    secret: Vec<u8>,
    algorithm: u8,
    digits: u8,
    period: u64,
    issuer: String,
    created: u64,
    last_success: Option<u64>,
    last_accepted_step: Option<u64>,
    user_failures: u32,
    last_failure: Option<u64>,
    link: Option<(String, u64)>,
    phone_session: Option<(String, u64)>,
    recovery: Vec<HashSeed>,
    phone: Option<String>,
    sms: Vec<ChallengeSeed>,
    sms_register: Option<ChallengeSeed>,
    sms_sent: Vec<u64>,
    register_sent: Vec<u64>,
    had_active_device: bool,
    trusted_sources: Vec<(String, u64)>,
}

#[derive(Debug, Arbitrary)]
enum Plain {
    /// The JSON of the record, under this header version.
    Record { header_version: Option<u64> },
    /// Arbitrary bytes.
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    change: u64,
    key: [u8; KEY_LEN],
    other_key: [u8; KEY_LEN],
    nonce: [u8; NONCE_LEN],
    user: String,
    other_user: String,
    record: RecordSeed,
    flip_at: u16,
    flip_mask: u8,
    cut: u16,
    plain: Plain,
    junk: Vec<u8>,
    key_text: Vec<u8>,
}

fn hash(seed: HashSeed) -> CodeHash {
    CodeHash {
        salt: seed.salt,
        hash: seed.hash,
    }
}

fn challenge(seed: ChallengeSeed) -> SmsChallenge {
    SmsChallenge {
        code: hash(seed.code),
        expires: seed.expires,
        number: seed.number,
        tries: seed.tries,
    }
}

fn link((token_hash, expires): (String, u64)) -> Link {
    Link {
        token_hash,
        expires,
        ..Link::default()
    }
}

fn record(seed: RecordSeed) -> UserRecord {
    let device = Device {
        name: DEFAULT_DEVICE.to_owned(),
        state: if seed.pending {
            EnrollState::Pending
        } else {
            EnrollState::Active
        },
        kind: TokenKind::Totp,
        secret: SecretBytes::new(seed.secret),
        algorithm: match seed.algorithm % 3 {
            0 => Algorithm::Sha1,
            1 => Algorithm::Sha256,
            _ => Algorithm::Sha512,
        },
        digits: seed.digits,
        period: seed.period,
        created: seed.created,
        last_accepted_step: seed.last_accepted_step,
        window: None,
        replaces: None,
    };
    let mut record = UserRecord::new(seed.version, seed.issuer, vec![device]).expect("one device");
    record.last_success = seed.last_success;
    record.user_failures = seed.user_failures;
    record.last_failure = seed.last_failure;
    record.fallback = Fallback {
        link: seed.link.map(link),
        phone_session: seed.phone_session.map(link),
        recovery: seed.recovery.into_iter().map(hash).collect(),
        phone: seed.phone,
        sms: seed.sms.into_iter().map(challenge).collect(),
        sms_register: seed.sms_register.map(challenge),
        sms_sent: seed.sms_sent,
        register_sent: seed.register_sent,
    };
    record.had_active_device = seed.had_active_device;
    record.trusted_sources = seed
        .trusted_sources
        .into_iter()
        .map(|(source, last_success)| TrustedSource {
            source,
            last_success,
        })
        .collect();
    record
}

/// Seals `plain` in the layout of seal.rs, whatever it holds.
fn seal_raw(
    key: &[u8; KEY_LEN],
    user: &str,
    version: u64,
    change: u64,
    nonce: &[u8; NONCE_LEN],
    plain: &[u8],
) -> Vec<u8> {
    let mut ad = AD_PREFIX.to_vec();
    ad.extend_from_slice(user.as_bytes());
    ad.push(0);
    ad.extend_from_slice(&version.to_be_bytes());
    ad.extend_from_slice(&change.to_be_bytes());
    let sealed = XChaCha20Poly1305::new(Key::from_slice(key))
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plain,
                aad: &ad,
            },
        )
        .expect("encrypts");
    let mut out = vec![TAG];
    out.extend_from_slice(&RecordKey::from_bytes(key).id().0);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&change.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    out
}

/// A record that opened: its version is the header's, and it seals and
/// opens again to itself.
fn reopens(
    key: &RecordKey,
    user: &str,
    sealed: &[u8],
    opened: &UserRecord,
    nonce: [u8; NONCE_LEN],
) {
    let header = peek(sealed).expect("it opened, so its header is fine");
    assert_eq!(
        opened.version, header.version,
        "opened with another version"
    );
    let again =
        seal_record(key, user, opened, header.change, nonce).expect("an opened record seals");
    assert_eq!(open_record(key, user, &again).as_ref(), Ok(opened));
}

fn check_keys(input: &Input) {
    if let Ok(key) = RecordKey::parse(&input.key_text) {
        let trimmed = input.key_text.trim_ascii();
        assert_eq!(trimmed.len(), 2 * KEY_LEN);
        assert!(trimmed.iter().all(u8::is_ascii_hexdigit));
        let text = key_file_text(&input.key);
        let back = RecordKey::parse(text.as_bytes()).expect("a key file parses");
        assert_eq!(back.id(), RecordKey::from_bytes(&input.key).id());
        assert!(key.id().to_string().len() == 16);
    }
    let id = RecordKey::from_bytes(&input.key).id();
    assert_eq!(id.to_string().parse::<KeyId>(), Ok(id));
    if let Ok(text) = std::str::from_utf8(&input.key_text) {
        if let Ok(parsed) = text.parse::<KeyId>() {
            // Two hex digits per byte: the text of the ID parses to itself.
            assert_eq!(parsed.to_string().parse::<KeyId>(), Ok(parsed));
        }
    }
}

fuzz_target!(|input: Input| {
    check_keys(&input);
    let key = RecordKey::from_bytes(&input.key);

    // Arbitrary bytes, as a damaged store could hold.
    if let Ok(opened) = open_record(&key, &input.user, &input.junk) {
        reopens(&key, &input.user, &input.junk, &opened, input.nonce);
    }
    let _ = is_sealed(&input.junk);
    let _ = peek(&input.junk);
    // The stored layout on its own: whatever decodes encodes, and decodes
    // again to itself.
    if let Ok(decoded) = format::decode(&input.junk) {
        let again = format::encode(&decoded).expect("a decoded record encodes");
        assert_eq!(format::decode(&again).as_ref(), Ok(&decoded));
    }

    let record = record(input.record);

    // Sealed properly, holding anything.
    let (version, plain) = match &input.plain {
        Plain::Record { header_version } => (
            header_version.unwrap_or(record.version),
            format::encode(&record).unwrap().to_vec(),
        ),
        Plain::Bytes(bytes) => (record.version, bytes.clone()),
    };
    let forged = seal_raw(
        &input.key,
        &input.user,
        version,
        input.change,
        &input.nonce,
        &plain,
    );
    match open_record(&key, &input.user, &forged) {
        Ok(opened) => {
            if matches!(input.plain, Plain::Record { .. }) {
                assert_eq!(opened, record, "the record changed on its way through");
            }
            reopens(&key, &input.user, &forged, &opened, input.nonce);
        }
        Err(SealError::Decode { .. }) => assert!(
            matches!(input.plain, Plain::Bytes(_))
                || record.first_device().secret.expose().len() > MAX_SECRET_LEN,
            "a record's own JSON does not decode"
        ),
        Err(SealError::VersionMismatch) => {
            assert!(
                matches!(input.plain, Plain::Record { header_version: Some(v) } if v != record.version)
                    || matches!(input.plain, Plain::Bytes(_))
            );
        }
        Err(e) => panic!("a properly sealed record refused as {e:?}"),
    }

    // The round trip. A secret longer than a record may hold
    // (record.rs: MAX_SECRET_LEN) need not survive it, but must not panic.
    if record.first_device().secret.expose().len() > MAX_SECRET_LEN {
        if let Ok(sealed) = seal_record(&key, &input.user, &record, input.change, input.nonce) {
            assert!(matches!(
                open_record(&key, &input.user, &sealed),
                Err(SealError::Decode { .. })
            ));
        }
        return;
    }
    let sealed =
        seal_record(&key, &input.user, &record, input.change, input.nonce).expect("a record seals");
    assert_eq!(
        sealed,
        seal_raw(
            &input.key,
            &input.user,
            record.version,
            input.change,
            &input.nonce,
            &format::encode(&record).unwrap()
        ),
        "seal_record no longer writes the layout this target knows: update it"
    );
    assert!(is_sealed(&sealed));
    assert_eq!(
        peek(&sealed),
        Ok(Header {
            key_id: key.id(),
            version: record.version,
            change: input.change,
        })
    );
    assert_eq!(
        open_record(&key, &input.user, &sealed).as_ref(),
        Ok(&record)
    );
    // Neither the secret's bytes nor its JSON form is in the ciphertext
    // (the header is the fuzzer's own nonce and IDs, which it can make equal
    // to the secret).
    let secret = record.first_device().secret.expose();
    let body = &sealed[HEADER_LEN..];
    if secret.len() >= 12 {
        let json = serde_json::to_vec(&record.first_device().secret).unwrap();
        for form in [secret, &json[..]] {
            assert!(
                !body.windows(form.len()).any(|w| w == form),
                "the secret is readable in the sealed record"
            );
        }
    }

    // Another user.
    if input.other_user != input.user {
        assert_eq!(
            open_record(&key, &input.other_user, &sealed),
            Err(SealError::Tampered)
        );
    }
    // Another key.
    if input.other_key != input.key {
        let other = RecordKey::from_bytes(&input.other_key);
        assert!(matches!(
            open_record(&other, &input.user, &sealed),
            Err(SealError::WrongKey { .. })
        ));
    }
    // A flipped bit anywhere.
    let at = usize::from(input.flip_at) % sealed.len();
    let mask = input.flip_mask.max(1);
    let mut flipped = sealed.clone();
    flipped[at] ^= mask;
    let result = open_record(&key, &input.user, &flipped);
    match at {
        0 => assert!(matches!(result, Err(SealError::Format(_))), "{result:?}"),
        1..=8 => assert!(
            matches!(result, Err(SealError::WrongKey { .. })),
            "{result:?}"
        ),
        // The version, the change number, the nonce, the ciphertext, the tag.
        _ => assert_eq!(result, Err(SealError::Tampered), "byte {at}"),
    }
    // Cut short anywhere.
    let cut = usize::from(input.cut) % sealed.len();
    let result = open_record(&key, &input.user, &sealed[..cut]);
    if cut < HEADER_LEN + AEAD_TAG_LEN {
        assert!(matches!(result, Err(SealError::Format(_))), "{result:?}");
    } else {
        assert_eq!(result, Err(SealError::Tampered), "cut at {cut}");
    }
});
