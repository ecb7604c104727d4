//! What the store keeps per user and per (user, source).

use crate::core::approve::Approvals;
use crate::core::remember::Remembered;
use crate::core::tokens::CodeHash;
use otpd_proto::Algorithm;
pub use otpd_proto::TokenKind;
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
pub enum EnrollState {
    /// Enrolled, waiting for its first valid code (`otpd confirm`).
    Pending,
    /// Codes are accepted.
    Active,
}

/// One user: their devices, counters and fallbacks. The domain model: the
/// store keeps it in its own layout ([`crate::store::format`]), which
/// converts at the store's edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Bumped by every write; a write succeeds only against the version it
    /// read, which makes check-and-update atomic in any store.
    pub version: u64,
    /// The issuer shown in the app.
    pub issuer: String,
    /// Every token of the user, active ones first (see
    /// [`UserRecord::set_devices`], which keeps that order).
    devices: Vec<Device>,
    /// Unix time of the last accepted code.
    pub last_success: Option<u64>,
    /// Failures from all sources since the last success.
    pub user_failures: u32,
    /// Unix time of the most recent failure from any source.
    pub last_failure: Option<u64>,
    /// Self-enrolment link, recovery codes, phone.
    pub fallback: Fallback,
    /// The user has had an active device: a second factor, once on, stays
    /// on (design.md §7). `nullok` lets through only users who never had
    /// one, not a user whose device is being replaced or was revoked.
    pub had_active_device: bool,
    /// The sources (rhost per address or IPv6 /64, or a calling uid) that
    /// logged in successfully lately, newest last; the per-user ceiling
    /// never blocks them (design.md §2). At most [`MAX_TRUSTED_SOURCES`].
    pub trusted_sources: Vec<TrustedSource>,
    /// Paired phones and sign-in requests to approve on them.
    pub approvals: Approvals,
    /// Remembered logins (`[remember]`): bindings that skip the code until
    /// they expire.
    pub remembered: Vec<Remembered>,
    /// The latest logins and failures (`otpd self activity`), newest last;
    /// at most [`MAX_ACTIVITY`].
    pub activity: Vec<ActivityEvent>,
}

/// Login attempts kept per user for `otpd self activity`: the oldest goes
/// when a new one comes.
pub const MAX_ACTIVITY: usize = 20;

/// The longest service or source text kept in an [`ActivityEvent`].
const MAX_ACTIVITY_TEXT: usize = 64;

/// One login attempt that changed the record (accepted, a wrong or
/// replayed code): what `otpd self activity` shows. A throttled attempt
/// changes nothing and is not kept (a stranger must not be able to push the
/// user's own logins out of the list without making a counted guess).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityEvent {
    /// Unix time of the attempt.
    pub time: u64,
    /// PAM_SERVICE.
    pub service: String,
    /// PAM_RHOST, or the source key (`uid:N`) of a local login.
    pub source: String,
    /// The decision ([`crate::core::decision::Outcome::as_str`]).
    pub outcome: String,
}

impl ActivityEvent {
    /// An event with its texts cut to a bounded length (they come from the
    /// caller and are stored with the record).
    pub fn new(time: u64, service: &str, source: &str, outcome: &str) -> Self {
        let cut = |text: &str| -> String {
            let mut end = text.len().min(MAX_ACTIVITY_TEXT);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        };
        Self {
            time,
            service: cut(service),
            source: cut(source),
            outcome: cut(outcome),
        }
    }
}

/// Trusted sources kept per user: the oldest goes when a new one comes.
pub const MAX_TRUSTED_SOURCES: usize = 16;

/// A source that has proven itself for a user: a success came from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedSource {
    /// The source key ([`source_of`]).
    pub source: String,
    /// Unix time of its latest success.
    pub last_success: u64,
}

/// What a pending device replaces once its first code confirms it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Replaces {
    /// Every other device, the recovery codes and the phone: the user is
    /// enrolled afresh (`otpd enroll USER --force`).
    All,
    /// The active device of this name (`otpd enroll USER --device NAME --force`).
    Device(String),
}

/// The name of a user's first device when none was given.
pub const DEFAULT_DEVICE: &str = "default";

/// One token of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its name, unique within the user (`phone`, `yubikey` …).
    pub name: String,
    /// Pending until its first code is confirmed.
    pub state: EnrollState,
    /// TOTP or HOTP.
    pub kind: TokenKind,
    /// The shared secret.
    pub secret: SecretBytes,
    /// HMAC algorithm.
    pub algorithm: Algorithm,
    /// 6 to 8.
    pub digits: u8,
    /// TOTP: seconds per step (kept, unused, for HOTP).
    pub period: u64,
    /// Unix time of its enrolment or import.
    pub created: u64,
    /// The replay guard. TOTP: no code for a step ≤ this is accepted again;
    /// HOTP: no code for a counter value ≤ this.
    pub last_accepted_step: Option<u64>,
    /// Its own window (TOTP: steps either side; HOTP: look-ahead), from an
    /// import; `None`: the configured one.
    pub window: Option<u16>,
    /// A pending device that replaces others once confirmed; until then
    /// they keep working. Never set on an active device, nor when the user
    /// has no active device (then there is nothing to keep working).
    pub replaces: Option<Replaces>,
}

impl Device {
    /// HOTP: the counter value its next code has.
    pub fn next_counter(&self) -> u64 {
        self.last_accepted_step.map_or(0, |c| c.saturating_add(1))
    }
}

impl UserRecord {
    /// A stand-in record (one active device with an all-zero secret) that
    /// the daemon checks codes against and writes for unknown users, so
    /// that they take the same path as enrolled ones; never stored under a
    /// user's name.
    pub fn decoy() -> Self {
        UserRecord {
            version: 0,
            issuer: String::new(),
            devices: vec![Device {
                name: DEFAULT_DEVICE.to_owned(),
                state: EnrollState::Active,
                kind: TokenKind::Totp,
                secret: SecretBytes::new(vec![0; 20]),
                algorithm: Algorithm::Sha1,
                digits: 6,
                period: 30,
                created: 0,
                last_accepted_step: None,
                window: None,
                replaces: None,
            }],
            last_success: None,
            user_failures: 0,
            last_failure: None,
            fallback: Fallback::default(),
            had_active_device: false,
            trusted_sources: Vec::new(),
            approvals: Approvals::default(),
            remembered: Vec::new(),
            activity: Vec::new(),
        }
    }

    /// A new user's record with `devices` (put in order as
    /// [`UserRecord::set_devices`] does); `Err` for an empty list.
    pub fn new(version: u64, issuer: String, devices: Vec<Device>) -> Result<Self, String> {
        let mut record = UserRecord {
            version,
            issuer,
            devices: Vec::new(),
            ..UserRecord::decoy()
        };
        record.set_devices(devices)?;
        Ok(record)
    }

    /// Every token of the user, active ones first. Never empty.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The user's first device: an active one if the user has one.
    pub fn first_device(&self) -> &Device {
        // Never empty: `decoy`, `new`, `set_devices` and the store's
        // decoding (`with_stored_devices`) each give at least one.
        &self.devices[0]
    }

    /// Stores `devices` as the user's tokens. Active ones go first (in their
    /// order), then the pending ones (in theirs): the stored layout keeps
    /// the first one in the fields that hosts of a fleet on an older
    /// version read. `Err` for an empty list: a user without tokens is
    /// removed, not stored.
    pub fn set_devices(&mut self, devices: Vec<Device>) -> Result<(), String> {
        if devices.is_empty() {
            return Err("a user needs at least one device".to_string());
        }
        let (active, mut pending): (Vec<Device>, Vec<Device>) = devices
            .into_iter()
            .partition(|d| d.state == EnrollState::Active);
        // Once on, stays on: losing the last active device (removed,
        // revoked) leaves a user that nullok does not let through.
        self.had_active_device |= self.has_active_device() || !active.is_empty();
        if active.is_empty() {
            // Nothing left to keep working until a replacement is confirmed.
            for device in &mut pending {
                device.replaces = None;
            }
        }
        self.devices = active.into_iter().chain(pending).collect();
        Ok(())
    }

    /// Changes the devices with `change`, then stores them as
    /// [`UserRecord::set_devices`] does (and fails as it does).
    pub fn change_devices(&mut self, change: impl FnOnce(&mut Vec<Device>)) -> Result<(), String> {
        let mut devices = self.devices.clone();
        change(&mut devices);
        self.set_devices(devices)
    }

    /// The record with its devices as the store read them, `first` first:
    /// for the store's decoding ([`crate::store::format`]), which keeps
    /// the stored order and leaves `had_active_device` as stored.
    pub(crate) fn with_stored_devices(mut self, first: Device, others: Vec<Device>) -> Self {
        self.devices = std::iter::once(first).chain(others).collect();
        self
    }
}

impl UserRecord {
    /// Whether any device is active (codes are accepted for logins).
    pub fn has_active_device(&self) -> bool {
        self.devices.iter().any(|d| d.state == EnrollState::Active)
    }

    /// Whether a login needs a second factor: the user has, or had, an
    /// active device. `nullok` lets through only users for whom this is false.
    pub fn factor_required(&self) -> bool {
        self.has_active_device() || self.had_active_device
    }

    /// Whether `source` is trusted at `now`: a success from it within
    /// `trusted_secs`.
    pub fn trusts(&self, source: &str, now: u64, trusted_secs: u64) -> bool {
        // abs_diff: a success stamped ahead of this clock (a host of the
        // fleet whose clock runs fast) is not trusted for longer.
        self.trusted_sources
            .iter()
            .any(|t| t.source == source && now.abs_diff(t.last_success) <= trusted_secs)
    }

    /// Remembers a success from `source` at `now`: moved to the end (the
    /// newest), expired ones dropped, at most [`MAX_TRUSTED_SOURCES`] kept.
    pub fn remember_source(&mut self, source: &str, now: u64, trusted_secs: u64) {
        self.trusted_sources
            .retain(|t| t.source != source && now.abs_diff(t.last_success) <= trusted_secs);
        if trusted_secs == 0 {
            return;
        }
        self.trusted_sources.push(TrustedSource {
            source: source.to_owned(),
            last_success: now,
        });
        let excess = self
            .trusted_sources
            .len()
            .saturating_sub(MAX_TRUSTED_SOURCES);
        self.trusted_sources.drain(..excess);
    }

    /// Keeps `event` as the newest of [`UserRecord::activity`], dropping
    /// the oldest beyond [`MAX_ACTIVITY`].
    pub fn note_activity(&mut self, event: ActivityEvent) {
        self.activity.push(event);
        let excess = self.activity.len().saturating_sub(MAX_ACTIVITY);
        self.activity.drain(..excess);
    }
}

/// A one-time link or session: only the hash of its token is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// SHA-256 of the token, hex ([`crate::core::tokens::token_hash`]).
    pub token_hash: String,
    /// Unix time after which the token is refused.
    pub expires: u64,
    /// A self-enrolment link: what its page has shown. Absent (and not
    /// written) until the page is first opened.
    #[serde(default, skip_serializing_if = "LinkPage::is_unused")]
    pub page: LinkPage,
}

/// What the page of a self-enrolment link has handed out: the views whose
/// "Show QR code" button still works, and the reveals so far (each made a
/// new secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LinkPage {
    /// Views of the page (GETs) whose button still works, each once; the
    /// newest few, oldest first.
    pub views: Vec<PageView>,
    /// How often the QR code was shown.
    pub reveals: u32,
    /// Unix time of the latest showing.
    pub last_reveal: Option<u64>,
}

impl LinkPage {
    /// Nothing shown yet.
    pub fn is_unused(&self) -> bool {
        *self == LinkPage::default()
    }
}

/// One view of a link's page: the hash of the random nonce in its form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageView {
    /// SHA-256 of the nonce, hex ([`crate::core::tokens::token_hash`]).
    pub nonce_hash: String,
    /// Unix time the page was served.
    pub issued: u64,
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
    /// When login texts were sent (the last hour's), for the limit.
    pub sms_sent: Vec<u64>,
    /// When phone-registration texts were sent (the last hour's): a budget
    /// of its own, so that strangers typing `sms` at the prompt cannot use
    /// up the user's registration, nor the other way round. Written only
    /// when set (the record's layout for older hosts of a fleet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub register_sent: Vec<u64>,
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
///
/// An IPv4 address is one source; IPv6 addresses count per /64 (one
/// network, which can hand out 2⁶⁴ addresses, is one source), an
/// IPv4-mapped IPv6 address as its IPv4 address. A host name (sshd with
/// `UseDNS yes`) is one source per name, lower-cased.
pub fn source_of(rhost: &str, ruid: Option<u32>, peer_uid: u32) -> SourceKey {
    let rhost = rhost.trim();
    SourceKey(if peer_uid != 0 {
        format!("uid:{peer_uid}")
    } else if !rhost.is_empty() {
        format!("rhost:{}", rhost_source(rhost))
    } else {
        format!("uid:{}", ruid.unwrap_or(0))
    })
}

/// The key of a rate-limit source as [`source_of`] makes it (`rhost:…`,
/// `uid:N`): what the daemon's shell carries from the caller to the core
/// and the store, never a raw string that could be a user name or a host
/// mixed up. Reads as `&str` where the store and the core take one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceKey(String);

impl SourceKey {
    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for SourceKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for SourceKey {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// The source part of a remote host: see [`source_of`].
fn rhost_source(rhost: &str) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    // "[2001:db8::1]" and a zone ("fe80::1%eth0") are still addresses.
    let bare = rhost.trim_start_matches('[').trim_end_matches(']');
    let bare = bare
        .split_once('%')
        .map_or(bare, |(address, _zone)| address);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let bits = u128::from(v6);
            let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
            // An IPv4 client behind a translator is that IPv4 client, not
            // one /64 shared with every other: IPv4-mapped (::ffff:a.b.c.d),
            // the NAT64 well-known prefix 64:ff9b::/96 (RFC 6052), and the
            // old IPv4-compatible form (::a.b.c.d, but not :: or ::1).
            let nat64 = bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000;
            let compatible = bits >> 32 == 0 && bits > 1;
            if let Some(v4) = v6.to_ipv4_mapped() {
                v4.to_string()
            } else if nat64 || compatible {
                low32.to_string()
            } else {
                let network = bits & !((1u128 << 64) - 1);
                format!("{}/64", Ipv6Addr::from(network))
            }
        }
        // A name (sshd with UseDNS yes) has a prefix of its own, so that no
        // spelling of a name can be taken for an address's key.
        Err(_) => format!("name:{}", rhost.to_ascii_lowercase()),
    }
}

/// Whether a source can become trusted for a user by a success from it.
/// Not `uid:0`: with no remote host, root's own uid is the source of every
/// root PAM client (the console's `login`, display managers, `otpd
/// verify`), so one success there must not spare all of them the ceiling.
pub fn can_be_trusted(source: &str) -> bool {
    source != "uid:0"
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
    fn ipv6_addresses_count_per_64_and_names_per_name() {
        let s = |rhost| source_of(rhost, None, 0);
        assert_eq!(s("2001:db8:1:2:aaaa::1"), "rhost:2001:db8:1:2::/64");
        assert_eq!(
            s("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "rhost:2001:db8:1:2::/64"
        );
        assert_eq!(s("[2001:DB8:1:2::7]"), "rhost:2001:db8:1:2::/64");
        assert_eq!(s("fe80::1%eth0"), "rhost:fe80::/64");
        assert_ne!(s("2001:db8:1:3::1"), s("2001:db8:1:2::1"));
        assert_eq!(s("::ffff:192.0.2.7"), "rhost:192.0.2.7");
        assert_eq!(s("192.0.2.7"), "rhost:192.0.2.7");
        assert_ne!(s("192.0.2.7"), s("192.0.2.8"));
        assert_eq!(s("Host.Example.ORG"), "rhost:name:host.example.org");
        // IPv4 clients behind a translator stay apart.
        assert_eq!(s("64:ff9b::c000:207"), "rhost:192.0.2.7");
        assert_ne!(s("64:ff9b::c000:207"), s("64:ff9b::c000:208"));
        assert_eq!(s("::192.0.2.9"), "rhost:192.0.2.9");
        assert_eq!(s("::1"), "rhost:::/64");
        // A name can never be an address's key.
        assert_ne!(s("64:ff9b::/64"), s("64:ff9b::1:0:0:1"));
        assert!(!can_be_trusted("uid:0") && can_be_trusted("uid:1000"));
    }

    #[test]
    fn trusted_sources_expire_move_to_the_end_and_are_bounded() {
        let mut r = UserRecord::decoy();
        let day = 24 * 3600;
        r.remember_source("rhost:a", 1000, 30 * day);
        assert!(r.trusts("rhost:a", 1000 + 30 * day, 30 * day));
        assert!(!r.trusts("rhost:a", 1001 + 30 * day, 30 * day));
        assert!(!r.trusts("rhost:b", 1000, 30 * day));
        for i in 0..40 {
            r.remember_source(&format!("rhost:{i}"), 2000 + i, 30 * day);
        }
        assert_eq!(r.trusted_sources.len(), MAX_TRUSTED_SOURCES);
        assert!(r.trusts("rhost:39", 3000, 30 * day));
        assert!(!r.trusts("rhost:0", 3000, 30 * day), "the oldest went");
        r.remember_source("rhost:30", 5000, 30 * day);
        assert_eq!(r.trusted_sources.last().unwrap().source, "rhost:30");
        assert_eq!(r.trusted_sources.len(), MAX_TRUSTED_SOURCES);
        // A success stamped far ahead of this clock is not trusted.
        r.remember_source("rhost:ahead", 10 * 30 * day, 30 * day);
        assert!(!r.trusts("rhost:ahead", 3000, 30 * day));
        // Off: nothing is remembered.
        r.remember_source("rhost:new", 6000, 0);
        assert!(!r.trusts("rhost:new", 6000, 0));
    }

    #[test]
    fn a_user_who_lost_every_active_device_still_needs_a_code() {
        let mut r =
            UserRecord::new(1, "t".into(), vec![device("phone", EnrollState::Pending)]).unwrap();
        assert!(!r.factor_required(), "never had an active device");
        r.set_devices(vec![device("phone", EnrollState::Active)])
            .unwrap();
        assert!(r.factor_required());
        // The active one removed, a pending one left.
        r.set_devices(vec![device("tablet", EnrollState::Pending)])
            .unwrap();
        assert!(!r.has_active_device());
        assert!(r.factor_required(), "once on, stays on");
        let stored = crate::store::format::encode(&r).unwrap();
        assert!(crate::store::format::decode(&stored)
            .unwrap()
            .factor_required());
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

    fn device(name: &str, state: EnrollState) -> Device {
        Device {
            name: name.into(),
            state,
            kind: TokenKind::Totp,
            secret: SecretBytes::new(name.as_bytes().to_vec()),
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            created: 1,
            last_accepted_step: None,
            window: None,
            replaces: None,
        }
    }

    #[test]
    fn devices_round_trip_with_active_ones_first() {
        let mut r = UserRecord::decoy();
        assert_eq!(r.devices().len(), 1);
        assert_eq!(r.devices()[0].name, DEFAULT_DEVICE);
        let mut hotp = device("key", EnrollState::Pending);
        hotp.kind = TokenKind::Hotp;
        hotp.last_accepted_step = Some(41);
        let devices = vec![
            hotp.clone(),
            device("phone", EnrollState::Active),
            device("tablet", EnrollState::Active),
        ];
        r.set_devices(devices).unwrap();
        let back = r.devices();
        let names: Vec<&str> = back.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["phone", "tablet", "key"]);
        assert!(r.has_active_device());
        assert_eq!(back[0].secret.expose(), b"phone");
        assert_eq!(back[2], hotp);
        assert_eq!(back[2].next_counter(), 42);
        // Stored and read back: the same devices.
        let stored = crate::store::format::encode(&r).unwrap();
        let read = crate::store::format::decode(&stored).unwrap();
        assert_eq!(read.devices(), back);
        assert!(r.set_devices(Vec::new()).is_err());
        assert_eq!(r.devices().len(), 3, "an empty list changes nothing");
        // Only pending devices: the user is pending, and a replacement
        // replaces nothing when nothing is left to keep working.
        let mut replacement = device("a", EnrollState::Pending);
        replacement.replaces = Some(Replaces::All);
        r.set_devices(vec![replacement]).unwrap();
        assert!(!r.has_active_device());
        assert_eq!(r.devices()[0].replaces, None);
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = SecretBytes::new(b"12345678901234567890".to_vec());
        assert!(!format!("{s:?}").contains("123"));
    }
}
