//! The stored layout of a user record, and the conversions between it and
//! the domain's [`UserRecord`] at the store's edge.
//!
//! The layout is the one otpd has written since before devices existed: the
//! first device's key and replay guard sit in the record's own fields (what
//! hosts of a fleet still on an older version read during a rolling
//! upgrade), the other devices in `tokens.others`. It only grows by fields
//! that older records lack (`#[serde(default)]`) and that are left out
//! when they hold their default, so that a record of a user who uses none
//! of them keeps its bytes. `fixtures/` holds records as otpd wrote them
//! before this module existed; the tests below read every one to the same
//! user and write it back to the same bytes.
//!
//! The stores seal the bytes of [`encode`] and open with [`decode`]
//! (`core::seal`); nothing else reads or writes this layout.

use crate::core::approve::Approvals;
use crate::core::record::{
    ActivityEvent, Device, EnrollState, Fallback, Replaces, SecretBytes, TokenKind, TrustedSource,
    UserRecord, DEFAULT_DEVICE,
};
use crate::core::remember::Remembered;
use otpd_proto::Algorithm;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A user record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRecord {
    /// The record's version ([`UserRecord::version`]).
    pub version: u64,
    /// The first device's state: active if the user has an active device
    /// (active devices are stored first).
    pub state: EnrollState,
    /// The first device's secret.
    pub secret: SecretBytes,
    /// The first device's HMAC algorithm.
    pub algorithm: Algorithm,
    /// The first device's digits.
    pub digits: u8,
    /// The first device's seconds per step.
    pub period: u64,
    /// The issuer shown in the app.
    pub issuer: String,
    /// The first device's enrolment time.
    pub created: u64,
    /// Unix time of the last accepted code.
    pub last_success: Option<u64>,
    /// The first device's replay guard.
    pub last_accepted_step: Option<u64>,
    /// Failures from all sources since the last success.
    pub user_failures: u32,
    /// Unix time of the most recent failure from any source.
    pub last_failure: Option<u64>,
    /// Self-enrolment link, recovery codes, phone: absent in records
    /// written before they existed.
    #[serde(default)]
    pub fallback: Fallback,
    /// The first device's name, kind and window and the user's other
    /// devices: absent in records written before them, and in records of
    /// users with one default TOTP device.
    #[serde(default, skip_serializing_if = "TokenSet::is_default")]
    pub tokens: TokenSet,
    /// See [`UserRecord::had_active_device`]. Written only when set, so
    /// records of other users keep their layout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub had_active_device: bool,
    /// See [`UserRecord::trusted_sources`]. Written only when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_sources: Vec<TrustedSource>,
    /// See [`UserRecord::approvals`]. Written only when there are any.
    #[serde(default, skip_serializing_if = "Approvals::is_empty")]
    pub approvals: Approvals,
    /// See [`UserRecord::remembered`]. Written only when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remembered: Vec<Remembered>,
    /// See [`UserRecord::activity`]. Written only when there is any, so
    /// records written before it keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity: Vec<ActivityEvent>,
}

/// What a stored record holds about its devices besides the first one's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSet {
    /// The first device's name; `None`: [`DEFAULT_DEVICE`].
    pub first_name: Option<String>,
    /// The first device's kind.
    pub first_kind: TokenKind,
    /// The first device's own window, if imported with one.
    pub first_window: Option<u16>,
    /// The user's other devices.
    pub others: Vec<StoredDevice>,
}

impl TokenSet {
    /// One TOTP device called "default": what a record written before
    /// devices existed means. Such a record is written without the field,
    /// as before, so that hosts of a fleet still on the previous version
    /// read it during a rolling upgrade.
    pub fn is_default(&self) -> bool {
        *self == TokenSet::default()
    }
}

/// A device after the first, as stored: the fields of [`Device`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredDevice {
    /// [`Device::name`].
    pub name: String,
    /// [`Device::state`].
    pub state: EnrollState,
    /// [`Device::kind`].
    pub kind: TokenKind,
    /// [`Device::secret`].
    pub secret: SecretBytes,
    /// [`Device::algorithm`].
    pub algorithm: Algorithm,
    /// [`Device::digits`].
    pub digits: u8,
    /// [`Device::period`].
    pub period: u64,
    /// [`Device::created`].
    pub created: u64,
    /// [`Device::last_accepted_step`].
    pub last_accepted_step: Option<u64>,
    /// [`Device::window`].
    pub window: Option<u16>,
    /// [`Device::replaces`]: absent in records written before it existed,
    /// and written only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Replaces>,
}

impl From<StoredDevice> for Device {
    fn from(d: StoredDevice) -> Self {
        Device {
            name: d.name,
            state: d.state,
            kind: d.kind,
            secret: d.secret,
            algorithm: d.algorithm,
            digits: d.digits,
            period: d.period,
            created: d.created,
            last_accepted_step: d.last_accepted_step,
            window: d.window,
            replaces: d.replaces,
        }
    }
}

impl From<&Device> for StoredDevice {
    fn from(d: &Device) -> Self {
        StoredDevice {
            name: d.name.clone(),
            state: d.state,
            kind: d.kind,
            secret: d.secret.clone(),
            algorithm: d.algorithm,
            digits: d.digits,
            period: d.period,
            created: d.created,
            last_accepted_step: d.last_accepted_step,
            window: d.window,
            replaces: d.replaces.clone(),
        }
    }
}

impl From<StoredRecord> for UserRecord {
    /// The first device from the record's own fields, then the others in
    /// their stored order.
    fn from(s: StoredRecord) -> Self {
        let first = Device {
            name: s
                .tokens
                .first_name
                .unwrap_or_else(|| DEFAULT_DEVICE.to_owned()),
            state: s.state,
            kind: s.tokens.first_kind,
            secret: s.secret,
            algorithm: s.algorithm,
            digits: s.digits,
            period: s.period,
            created: s.created,
            last_accepted_step: s.last_accepted_step,
            window: s.tokens.first_window,
            // The layout has no place for it: active devices are stored
            // first, and only a pending device beside an active one
            // replaces anything.
            replaces: None,
        };
        let others = s.tokens.others.into_iter().map(Device::from).collect();
        let mut record = UserRecord::decoy().with_stored_devices(first, others);
        record.version = s.version;
        record.issuer = s.issuer;
        record.last_success = s.last_success;
        record.user_failures = s.user_failures;
        record.last_failure = s.last_failure;
        record.fallback = s.fallback;
        record.had_active_device = s.had_active_device;
        record.trusted_sources = s.trusted_sources;
        record.approvals = s.approvals;
        record.remembered = s.remembered;
        record.activity = s.activity;
        record
    }
}

/// Why a record was not encoded: serde_json refused (only on absurd
/// sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the record cannot be encoded")]
pub struct EncodeError;

/// Why stored bytes are not a record: serde_json's position only (its
/// message could quote the value, a secret's bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the record cannot be decoded (line {line} column {column})")]
pub struct DecodeError {
    /// serde_json's line.
    pub line: usize,
    /// serde_json's column.
    pub column: usize,
}

impl From<&UserRecord> for StoredRecord {
    /// The devices in the record's order (active first, as
    /// [`UserRecord::set_devices`] keeps them): the first in the record's
    /// own fields, the others in `tokens.others`.
    fn from(r: &UserRecord) -> Self {
        let first = r.first_device();
        let others = &r.devices()[1..];
        debug_assert!(
            first.replaces.is_none(),
            "the first device replaces nothing"
        );
        StoredRecord {
            version: r.version,
            state: first.state,
            secret: first.secret.clone(),
            algorithm: first.algorithm,
            digits: first.digits,
            period: first.period,
            issuer: r.issuer.clone(),
            created: first.created,
            last_success: r.last_success,
            last_accepted_step: first.last_accepted_step,
            user_failures: r.user_failures,
            last_failure: r.last_failure,
            fallback: r.fallback.clone(),
            tokens: TokenSet {
                first_name: (first.name != DEFAULT_DEVICE).then(|| first.name.clone()),
                first_kind: first.kind,
                first_window: first.window,
                others: others.iter().map(StoredDevice::from).collect(),
            },
            had_active_device: r.had_active_device,
            trusted_sources: r.trusted_sources.clone(),
            approvals: r.approvals.clone(),
            remembered: r.remembered.clone(),
            activity: r.activity.clone(),
        }
    }
}

/// The bytes the store seals for `record`, in a buffer wiped on drop (they
/// hold the secrets).
pub fn encode(record: &UserRecord) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    let stored = StoredRecord::from(record);
    // Written into a buffer that wipes the old one whenever it grows: a
    // plain Vec would free copies of the secrets unwiped.
    let mut plain = otpd_proto::WipingWriter::with_capacity(4096);
    serde_json::to_writer(&mut plain, &stored).map_err(|_| EncodeError)?;
    Ok(plain.into_inner())
}

/// The record stored as `bytes`.
pub fn decode(bytes: &[u8]) -> Result<UserRecord, DecodeError> {
    let stored: StoredRecord = serde_json::from_slice(bytes).map_err(|e| DecodeError {
        line: e.line(),
        column: e.column(),
    })?;
    Ok(stored.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixture_records;

    #[test]
    fn every_fixture_reads_to_its_user_and_writes_back_to_its_bytes() {
        for (name, expected) in fixture_records::all() {
            let bytes = std::fs::read(fixture_records::path(name)).unwrap();
            let record = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(record, expected, "{name}");
            let again = encode(&record).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&again),
                String::from_utf8_lossy(&bytes),
                "{name}"
            );
        }
    }

    fn fixture(name: &str) -> UserRecord {
        decode(&std::fs::read(fixture_records::path(name)).unwrap()).unwrap()
    }

    fn summary(r: &UserRecord) -> Vec<(String, EnrollState, TokenKind, Option<u64>)> {
        r.devices()
            .iter()
            .map(|d| (d.name.clone(), d.state, d.kind, d.last_accepted_step))
            .collect()
    }

    #[test]
    fn fixtures_read_to_the_devices_and_fields_they_were_written_with() {
        use EnrollState::{Active, Pending};
        use TokenKind::{Hotp, Totp};
        let d = |name: &str, state, kind, step| (name.to_owned(), state, kind, step);

        let pending = fixture("pending_totp");
        assert_eq!(summary(&pending), [d("default", Pending, Totp, None)]);
        assert_eq!(
            pending.devices()[0].secret.expose(),
            b"12345678901234567890"
        );
        assert!(!pending.has_active_device() && !pending.factor_required());

        let active = fixture("active_totp");
        assert_eq!(
            summary(&active),
            [d("default", Active, Totp, Some(56_666_786))]
        );
        assert_eq!((active.version, active.user_failures), (7, 2));
        assert_eq!(active.trusted_sources.len(), 2);
        assert!(active.had_active_device);

        let three = fixture("devices_hotp_and_replacement");
        assert_eq!(
            summary(&three),
            [
                d("yubikey", Active, Hotp, Some(41)),
                d("phone", Active, Totp, Some(28_333_343)),
                d("phone", Pending, Totp, None),
            ]
        );
        let devices = three.devices();
        assert_eq!(devices[0].window, Some(20));
        assert_eq!(devices[0].next_counter(), 42);
        assert_eq!(
            (devices[1].algorithm, devices[1].digits, devices[1].period),
            (Algorithm::Sha256, 8, 60)
        );
        assert_eq!(devices[2].replaces, Some(Replaces::Device("phone".into())));

        let all = fixture("replacement_of_all");
        assert_eq!(all.devices()[1].replaces, Some(Replaces::All));
        assert_eq!(all.devices()[1].algorithm, Algorithm::Sha512);

        let lost = fixture("lost_its_active_device");
        assert_eq!(summary(&lost), [d("tablet", Pending, Totp, None)]);
        assert!(!lost.has_active_device() && lost.factor_required());

        let fallback = fixture("recovery_and_phone").fallback;
        assert_eq!(fallback.recovery.len(), 3);
        assert!(fallback.recovery[0].matches("ABCD-EFGH-JKL1"));
        assert_eq!(fallback.phone.as_deref(), Some("+31612345678"));
        assert!(fallback.sms[0].code.matches("123456"));
        let register = fallback.sms_register.unwrap();
        assert_eq!(
            (register.number.as_deref(), register.tries),
            (Some("+31687654321"), 2)
        );
        assert_eq!(fallback.register_sent.len(), 1);
        assert!(fallback.phone_session.is_some());

        let link = fixture("pending_link_with_views").fallback.link.unwrap();
        assert_eq!((link.page.views.len(), link.page.reveals), (2, 1));

        assert_eq!(fixture("decoy"), UserRecord::decoy());
    }

    #[test]
    fn a_record_written_before_devices_reads_as_one_default_totp_device() {
        let bytes = encode(&UserRecord::decoy()).unwrap();
        let mut old: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let fields = old.as_object_mut().unwrap();
        assert!(fields.remove("tokens").is_none(), "never written for it");
        // Nor the fallbacks, in records older still.
        fields.remove("fallback").unwrap();
        let r = decode(&serde_json::to_vec(&old).unwrap()).unwrap();
        let d = r.devices();
        assert_eq!((d.len(), d[0].kind), (1, TokenKind::Totp));
        assert_eq!(d[0].name, DEFAULT_DEVICE);
        assert_eq!(r.fallback, Fallback::default());
    }

    #[test]
    fn a_one_token_record_is_written_as_before_devices_existed() {
        let json = |r: &UserRecord| -> serde_json::Value {
            serde_json::from_slice(&encode(r).unwrap()).unwrap()
        };
        assert!(json(&UserRecord::decoy()).get("tokens").is_none());
        let mut r = UserRecord::decoy();
        let mut devices = r.devices().to_vec();
        devices[0].kind = TokenKind::Hotp;
        r.set_devices(devices).unwrap();
        assert!(json(&r).get("tokens").is_some());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bytes = encode(&UserRecord::decoy()).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["surprise"] = serde_json::Value::Bool(true);
        assert!(decode(&serde_json::to_vec(&value).unwrap()).is_err());
        value.as_object_mut().unwrap().remove("surprise");
        value["tokens"] = serde_json::json!({"others": [{"name": "x"}]});
        assert!(decode(&serde_json::to_vec(&value).unwrap()).is_err());
    }
}
