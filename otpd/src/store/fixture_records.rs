//! Records as otpd writes them, for the stored-layout tests: each one is
//! built here, and `fixtures/NAME.json` holds the exact bytes the store
//! sealed for it (the plaintext inside the seal, `core::seal::seal_record`)
//! with the code of the day the fixtures were written. A later layout must
//! read every one of them to the same user, so that an upgrade never loses
//! one.
//!
//! Deterministic: fixed secrets (RFC 6238's test secret), salts and times.
//! The fixtures were written by this module's test at the commit that added
//! them, when the domain record was still serialised as it is; they are
//! not to be written again (`store::format`'s tests read them).

use crate::core::record::{
    Device, EnrollState, Link, LinkPage, PageView, Replaces, SecretBytes, SmsChallenge, TokenKind,
    UserRecord, DEFAULT_DEVICE,
};
use crate::core::tokens::{token_hash, CodeHash};
use otpd_proto::Algorithm;

/// RFC 6238 appendix B's SHA-1 secret.
const RFC6238_SHA1: &[u8] = b"12345678901234567890";
/// RFC 6238 appendix B's SHA-256 secret.
const RFC6238_SHA256: &[u8] = b"12345678901234567890123456789012";
/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000;

fn device(name: &str, state: EnrollState, secret: &[u8], created: u64) -> Device {
    Device {
        name: name.into(),
        state,
        kind: TokenKind::Totp,
        secret: SecretBytes::new(secret.to_vec()),
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
        created,
        last_accepted_step: None,
        window: None,
        replaces: None,
    }
}

fn salt(byte: u8) -> [u8; 16] {
    [byte; 16]
}

/// `otpd enroll alice`: one default TOTP device, waiting for its first code.
pub(super) fn pending_totp() -> UserRecord {
    UserRecord::new(
        1,
        "example.org".into(),
        vec![device(
            DEFAULT_DEVICE,
            EnrollState::Pending,
            RFC6238_SHA1,
            T0,
        )],
    )
    .unwrap()
}

/// `pending_totp` confirmed, then used: a replay guard, failures since the
/// last success, trusted sources.
pub(super) fn active_totp() -> UserRecord {
    let mut r = pending_totp();
    let mut devices = r.devices().to_vec();
    devices[0].state = EnrollState::Active;
    devices[0].last_accepted_step = Some((T0 + 3600) / 30);
    r.set_devices(devices).unwrap();
    r.version = 7;
    r.last_success = Some(T0 + 3600);
    r.user_failures = 2;
    r.last_failure = Some(T0 + 3700);
    r.remember_source("rhost:192.0.2.7", T0 + 1800, 30 * 86_400);
    r.remember_source("uid:1000", T0 + 3600, 30 * 86_400);
    r
}

/// Three devices: an active HOTP key first (its own window, a counter), an
/// active TOTP phone (SHA-256, 8 digits, 60 s), and a pending replacement
/// of the phone that keeps the old one working until confirmed.
pub(super) fn devices_hotp_and_replacement() -> UserRecord {
    let mut key = device("yubikey", EnrollState::Active, b"hotp-key-0123456789", T0);
    key.kind = TokenKind::Hotp;
    key.last_accepted_step = Some(41);
    key.window = Some(20);
    let mut phone = device("phone", EnrollState::Active, RFC6238_SHA256, T0 + 10);
    phone.algorithm = Algorithm::Sha256;
    phone.digits = 8;
    phone.period = 60;
    phone.last_accepted_step = Some((T0 + 600) / 60);
    phone.window = Some(2);
    let mut new_phone = device("phone", EnrollState::Pending, RFC6238_SHA1, T0 + 900);
    new_phone.replaces = Some(Replaces::Device("phone".into()));
    let mut r = UserRecord::new(1, "example.org".into(), vec![key, phone, new_phone]).unwrap();
    r.version = 12;
    r.last_success = Some(T0 + 600);
    r
}

/// `otpd enroll alice --force` over an active user: the new device waits
/// beside the old one and replaces everything once confirmed.
pub(super) fn replacement_of_all() -> UserRecord {
    let mut r = active_totp();
    let mut devices = r.devices().to_vec();
    let mut new = device("laptop", EnrollState::Pending, RFC6238_SHA256, T0 + 7200);
    new.algorithm = Algorithm::Sha512;
    new.replaces = Some(Replaces::All);
    devices.push(new);
    r.set_devices(devices).unwrap();
    r.version = 8;
    r
}

/// The active device removed, a pending one left: still needs a code.
pub(super) fn lost_its_active_device() -> UserRecord {
    let mut r = active_totp();
    r.set_devices(vec![device(
        "tablet",
        EnrollState::Pending,
        RFC6238_SHA1,
        T0 + 9000,
    )])
    .unwrap();
    r.version = 9;
    r
}

/// Recovery codes, a registered phone, an outstanding login text and a
/// phone registration, the hour's sent texts, and the page's phone session.
pub(super) fn recovery_and_phone() -> UserRecord {
    let mut r = active_totp();
    r.version = 21;
    let f = &mut r.fallback;
    f.recovery = (1..=3)
        .map(|i| CodeHash::new(&format!("ABCD-EFGH-JKL{i}"), &salt(i)))
        .collect();
    f.phone = Some("+31612345678".into());
    f.sms = vec![SmsChallenge {
        code: CodeHash::new("123456", &salt(9)),
        expires: T0 + 4000,
        number: None,
        tries: 0,
    }];
    f.sms_register = Some(SmsChallenge {
        code: CodeHash::new("654321", &salt(10)),
        expires: T0 + 4100,
        number: Some("+31687654321".into()),
        tries: 2,
    });
    f.sms_sent = vec![T0 + 3500, T0 + 3700];
    f.register_sent = vec![T0 + 3800];
    f.phone_session = Some(Link {
        token_hash: token_hash("phone-session-token"),
        expires: T0 + 4500,
        page: LinkPage::default(),
    });
    r
}

/// A self-enrolment link whose page was opened twice and showed its QR
/// code once.
pub(super) fn pending_link_with_views() -> UserRecord {
    let mut r = pending_totp();
    r.version = 3;
    r.fallback.link = Some(Link {
        token_hash: token_hash("enrolment-link-token"),
        expires: T0 + 86_400,
        page: LinkPage {
            views: vec![
                PageView {
                    nonce_hash: token_hash("nonce-1"),
                    issued: T0 + 100,
                },
                PageView {
                    nonce_hash: token_hash("nonce-2"),
                    issued: T0 + 200,
                },
            ],
            reveals: 1,
            last_reveal: Some(T0 + 150),
        },
    });
    r
}

/// The record the daemon writes for unknown users (`Store::decoy_write`).
pub(super) fn decoy() -> UserRecord {
    UserRecord::decoy()
}

/// Every fixture: its file name (without `.json`) and the record.
pub(super) fn all() -> Vec<(&'static str, UserRecord)> {
    vec![
        ("pending_totp", pending_totp()),
        ("active_totp", active_totp()),
        (
            "devices_hotp_and_replacement",
            devices_hotp_and_replacement(),
        ),
        ("replacement_of_all", replacement_of_all()),
        ("lost_its_active_device", lost_its_active_device()),
        ("recovery_and_phone", recovery_and_phone()),
        ("pending_link_with_views", pending_link_with_views()),
        ("decoy", decoy()),
    ]
}

/// The fixture file of `name`.
pub(super) fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/fixtures")
        .join(format!("{name}.json"))
}
