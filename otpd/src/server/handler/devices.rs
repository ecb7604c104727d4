//! A user's several devices, HOTP counters and imported tokens: adding and
//! removing a device, `otpd resync`, and `otpd import`.

use super::{fresh_version, internal, refuse, with_retries, Handler};
use crate::core::code;
use crate::core::names::validate_device;
use crate::core::record::{
    Device, EnrolState, Fallback, Replaces, SecretBytes, TokenKind, UserRecord,
};
use crate::core::tokens::{normalize_any_recovery, CodeHash};
use crate::core::totp::{resync_hotp, MIN_SECRET_LEN};
use crate::rng::random_bytes;
use crate::server::policy::Caller;
use crate::store::{RecordChange, SourcesChange, StoreError};
use otpd_proto::{
    DeviceSummary, ErrorCode, ImportParams, ImportResult, ImportedDevice, Response, SecretText,
    UserState, VerifyOutcome,
};
use tracing::info;

/// Devices one user may have.
pub(super) const MAX_DEVICES: usize = 16;
/// The highest HOTP counter accepted from an enrolment or an import; far
/// beyond any real token, and far from where `u64` arithmetic could wrap.
pub(super) const MAX_COUNTER: u64 = 1 << 48;
/// The longest secret an import accepts, in bytes.
const MAX_SECRET_LEN: usize = 128;
/// Recovery codes an import accepts for one user.
const MAX_IMPORTED_CODES: usize = 100;

/// The `otpd list` lines of a user's devices.
pub(super) fn summaries(r: &UserRecord) -> Vec<DeviceSummary> {
    r.devices()
        .iter()
        .map(|d| DeviceSummary {
            state: match d.state {
                EnrolState::Pending => UserState::Pending,
                EnrolState::Active => UserState::Active,
            },
            next_counter: (d.kind == TokenKind::Hotp).then(|| d.next_counter()),
            name: d.name.clone(),
            kind: d.kind,
            algorithm: d.algorithm,
            digits: d.digits,
            period: d.period,
            created: d.created,
        })
        .collect()
}

fn names(devices: &[Device]) -> String {
    devices
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Handler {
    /// `r` with `device` added, or replacing the pending device of the same
    /// name. With `force`, an active device of that name is replaced: it
    /// keeps working beside the new one until the new one is confirmed
    /// (`Replaces::Device`; the second value is then `true`), or with
    /// `revoke` it goes at once.
    pub(super) fn with_device(
        &self,
        r: &UserRecord,
        device: Device,
        force: bool,
        revoke: bool,
        caller: &Caller,
    ) -> Result<(UserRecord, bool), Response> {
        let mut devices = r.devices().to_vec();
        let active_of_that_name = devices
            .iter()
            .any(|d| d.name == device.name && d.state == EnrolState::Active);
        if active_of_that_name && !force {
            info!(target: "otpd::audit", uid = caller.uid, op = "enroll", outcome = "already_enrolled", device = ?device.name);
            return Err(refuse(
                ErrorCode::AlreadyEnrolled,
                format!(
                    "the device {:?} is active already; use --force to replace it",
                    device.name
                ),
            ));
        }
        // A pending device of that name (a replacement under way included)
        // is replaced by the new one; an active one is kept unless revoked.
        devices.retain(|d| d.name != device.name || (d.state == EnrolState::Active && !revoke));
        let kept = active_of_that_name && !revoke;
        if devices.len() >= MAX_DEVICES {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "a user may have at most {MAX_DEVICES} devices (a replacement waiting for \
                     its first code counts): remove one first, or replace with --revoke"
                ),
            ));
        }
        let replaces = kept.then(|| Replaces::Device(device.name.clone()));
        devices.push(Device { replaces, ..device });
        let mut next = r.clone();
        next.version = r.version.wrapping_add(1);
        next.set_devices(devices).map_err(internal)?;
        // A self-enrolment link shows the first device: with the devices
        // changed it could show another one. It is for a whole new user.
        next.fallback.link = None;
        if revoke && active_of_that_name {
            // A lost or stolen device: whoever had it may have logged in
            // from the sources trusted now.
            next.trusted_sources.clear();
        }
        Ok((next, kept))
    }

    /// `otpd remove USER --device NAME`: the other devices keep working;
    /// the last one takes the user with it.
    pub(super) fn remove_device(&self, caller: &Caller, user: &str, name: &str) -> Response {
        with_retries(|| {
            let current = match self.enrolled(user) {
                Ok(r) => r,
                Err(refusal) => return Some(refusal),
            };
            let mut devices = current.devices().to_vec();
            let before = devices.len();
            devices.retain(|d| d.name != name);
            if devices.len() == before {
                return Some(refuse(
                    ErrorCode::NotFound,
                    format!(
                        "{user} has no device {name:?} (devices: {})",
                        names(current.devices())
                    ),
                ));
            }
            let last = devices.is_empty();
            if last {
                // A second factor, once on, stays on (design.md §7): the last
                // device goes only with the user, on the admin's word.
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "remove", device = ?name, outcome = "refused_last_device");
                return Some(refuse(
                    ErrorCode::Refused,
                    format!(
                        "{name:?} is {user}'s last device: to give {user} a new one, run \
                         otpd enroll {user} --force --revoke (no login without a code until it \
                         is confirmed); to remove {user} altogether (a stack with nullok then \
                         lets {user} in with the password alone), run otpd remove {user}"
                    ),
                ));
            }
            let next = if last {
                None
            } else {
                let mut next = current.clone();
                next.version = current.version.wrapping_add(1);
                if let Err(e) = next.set_devices(devices) {
                    return Some(internal(e));
                }
                // The link's page shows the first device, now another one.
                next.fallback.link = None;
                Some(next)
            };
            let (record, sources) = match &next {
                Some(r) => (RecordChange::Put(r), SourcesChange::Keep),
                None => (RecordChange::Delete, SourcesChange::ClearAll),
            };
            match self
                .store
                .commit(user, Some(current.version), record, sources)
            {
                Ok(()) => {
                    info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "remove", device = ?name, outcome = "done", last);
                    Some(Response::Done {})
                }
                Err(StoreError::Conflict) => None,
                Err(e) => Some(internal(e)),
            }
        })
    }

    /// `otpd resync USER CODE1 CODE2`: moves an HOTP device's counter to
    /// just after two consecutive codes within the resync window.
    pub(super) fn resync(
        &self,
        caller: &Caller,
        user: &str,
        device: Option<&str>,
        code1: &SecretText,
        code2: &SecretText,
    ) -> Response {
        let window = u64::from(self.config.hotp.resync_window);
        let resynced = self.update(user, |current| {
            let mut devices = current.devices().to_vec();
            if let Some(name) = device {
                match devices.iter().find(|d| d.name == name) {
                    None => {
                        return Err(refuse(
                            ErrorCode::NotFound,
                            format!(
                                "{user} has no device {name:?} (devices: {})",
                                names(&devices)
                            ),
                        ))
                    }
                    Some(d) if d.kind != TokenKind::Hotp => {
                        return Err(refuse(
                            ErrorCode::BadRequest,
                            format!("the device {name:?} of {user} is time-based (TOTP): only counter-based (HOTP) tokens need a resync"),
                        ))
                    }
                    Some(_) => {}
                }
            }
            if !devices.iter().any(|d| d.kind == TokenKind::Hotp) {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    format!("{user} has no counter-based (HOTP) token to resync"),
                ));
            }
            // The HOTP devices asked about, with both codes in their digits.
            let candidates: Vec<_> = devices
                .iter()
                .enumerate()
                .filter(|(_, d)| d.kind == TokenKind::Hotp && device.is_none_or(|n| n == d.name))
                .filter_map(|(i, d)| {
                    Some((
                        i,
                        code::normalize(code1.expose(), d.digits)?,
                        code::normalize(code2.expose(), d.digits)?,
                    ))
                })
                .collect();
            if candidates.is_empty() {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    "CODE1 and CODE2 must be codes of the HOTP token: its 6, 7 or 8 digits",
                ));
            }
            let mut found = None;
            for (i, c1, c2) in &candidates {
                match resync_hotp(&devices[*i], c1, c2, window) {
                    Ok(Some(counter)) => {
                        found = Some((*i, counter));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(internal(format!("a token of {user:?}: {e}"))),
                }
            }
            let Some((i, counter)) = found else {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "resync", outcome = "wrong_code");
                return Err(Response::Verified {
                    outcome: VerifyOutcome::WrongCode,
                });
            };
            devices[i].last_accepted_step = Some(counter);
            let name = devices[i].name.clone();
            let mut next = current.clone();
            next.set_devices(devices).map_err(internal)?;
            Ok((next, (name, counter)))
        });
        match resynced {
            Ok((device, counter)) => {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "resync", device = ?device, outcome = "done", next_counter = counter + 1);
                Response::Resynced {
                    device,
                    next_counter: counter + 1,
                }
            }
            Err(response) => response,
        }
    }

    /// `otpd import`: one user from pam_google_authenticator or pam_oath,
    /// active at once (the token is on the user's device already), with its
    /// replay state, window, rate limit and scratch codes.
    pub(super) fn import(&self, caller: &Caller, p: ImportParams) -> Response {
        if let Err(refusal) = super::account_spelling(&p.user, "import") {
            return refusal;
        }
        let record = match imported_record(&p, self.now(), &self.issuer) {
            Ok(r) => r,
            Err(m) => {
                info!(target: "otpd::audit", user = ?p.user, uid = caller.uid, op = "import", outcome = "bad_request");
                return refuse(
                    ErrorCode::BadRequest,
                    format!("cannot import {}: {m}", p.user),
                );
            }
        };
        with_retries(|| {
            let existing = match self.store.user(&p.user) {
                Ok(r) => r,
                Err(e) => return Some(internal(e)),
            };
            let result = match (&existing, p.replace) {
                (Some(_), false) => ImportResult::LeftAlone,
                (Some(_), true) => ImportResult::Replaced,
                (None, _) => ImportResult::Created,
            };
            if p.dry_run || result == ImportResult::LeftAlone {
                return Some(Response::Imported {
                    user: p.user.clone(),
                    result,
                    dry_run: p.dry_run,
                });
            }
            let mut next = record.clone();
            if let Some(old) = &existing {
                if let Err(e) = keep_replay_state(&mut next, old, &p.recovery_codes) {
                    return Some(internal(e));
                }
            }
            next.version = match &existing {
                Some(r) => r.version.wrapping_add(1),
                None => match fresh_version() {
                    Ok(v) => v,
                    Err(response) => return Some(response),
                },
            };
            match self.store.commit(
                &p.user,
                existing.as_ref().map(|r| r.version),
                RecordChange::Put(&next),
                SourcesChange::ClearAll,
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict) => return None,
                Err(e) => return Some(internal(e)),
            }
            info!(target: "otpd::audit", user = ?p.user, uid = caller.uid, op = "import", outcome = ?result, devices = p.devices.len(), recovery_codes = next.fallback.recovery.len());
            Some(Response::Imported {
                user: p.user.clone(),
                result,
                dry_run: false,
            })
        })
    }
}

/// Whether two devices have one key (constant-time in the key bytes).
fn same_key(a: &Device, b: &Device) -> bool {
    constant_time_eq::constant_time_eq(a.secret.expose(), b.secret.expose())
}

/// `--replace` of a user whose token otpd already knows: the old module's
/// file was not updated by otpd's logins, so its replay state may be behind
/// otpd's. A device with the same key and kind (and period) keeps the
/// newer of the two replay states, and when any key is the same (the user
/// was imported before) a scratch code that otpd no longer holds was used
/// in otpd and stays used: a replace never makes a used code good again.
fn keep_replay_state(
    next: &mut UserRecord,
    old: &UserRecord,
    scratch: &[SecretText],
) -> Result<(), String> {
    let old_devices = old.devices();
    let mut devices = next.devices().to_vec();
    let mut known = false;
    for d in &mut devices {
        let same: Vec<&Device> = old_devices.iter().filter(|o| same_key(o, d)).collect();
        known |= !same.is_empty();
        let newest = same
            .iter()
            .filter(|o| o.kind == d.kind && o.period == d.period)
            .filter_map(|o| o.last_accepted_step)
            .max();
        d.last_accepted_step = d.last_accepted_step.max(newest);
    }
    next.set_devices(devices)?;
    if known {
        let mut kept = Vec::new();
        for typed in scratch {
            let Some(code) = normalize_any_recovery(typed.expose()) else {
                continue;
            };
            if old.fallback.recovery.iter().any(|h| h.matches(&code)) {
                kept.push(CodeHash::new(
                    &code,
                    &random_bytes::<16>().map_err(|e| e.to_string())?,
                ));
            }
        }
        next.fallback.recovery = kept;
    }
    Ok(())
}

/// The record an import creates (version 0: the caller sets it), or what
/// is wrong with the parameters.
fn imported_record(p: &ImportParams, now: u64, issuer: &str) -> Result<UserRecord, String> {
    if p.devices.is_empty() {
        return Err("no token to import".into());
    }
    if p.devices.len() > MAX_DEVICES {
        return Err(format!("more than {MAX_DEVICES} tokens"));
    }
    let mut devices = Vec::with_capacity(p.devices.len());
    for d in &p.devices {
        let device = imported_device(d, now).map_err(|m| format!("token {:?}: {m}", d.name))?;
        if devices
            .iter()
            .any(|other: &Device| other.name == device.name)
        {
            return Err(format!("two tokens are named {:?}", device.name));
        }
        // Two devices with one key would each keep their own replay state,
        // and a code used on one would be fresh on the other (with other
        // digits, the decision could not even tell).
        if devices
            .iter()
            .any(|other: &Device| same_key(other, &device))
        {
            return Err(format!(
                "tokens {:?} and an earlier one have the same secret: import it once",
                device.name
            ));
        }
        devices.push(device);
    }
    if p.recovery_codes.len() > MAX_IMPORTED_CODES {
        return Err(format!(
            "more than {MAX_IMPORTED_CODES} scratch or recovery codes"
        ));
    }
    let mut recovery = Vec::with_capacity(p.recovery_codes.len());
    for (n, typed) in p.recovery_codes.iter().enumerate() {
        let canonical = normalize_any_recovery(typed.expose())
            .ok_or_else(|| format!("scratch code number {} is not 8 digits", n + 1))?;
        recovery.push(CodeHash::new(
            &canonical,
            &random_bytes::<16>().map_err(|e| e.to_string())?,
        ));
    }
    let mut record = UserRecord::new(0, issuer.to_owned(), devices)?;
    record.fallback = Fallback {
        recovery,
        ..Fallback::default()
    };
    Ok(record)
}

fn imported_device(d: &ImportedDevice, now: u64) -> Result<Device, String> {
    validate_device(&d.name)?;
    if !(6..=8).contains(&d.digits) {
        return Err(format!("{} digits: must be 6 to 8", d.digits));
    }
    if d.kind == TokenKind::Totp && !(1..=300).contains(&d.period) {
        return Err(format!(
            "a period of {} s: must be 1 to 300 seconds",
            d.period
        ));
    }
    if d.window.is_some_and(|w| w > 100) {
        return Err("a window of more than 100 steps or counter values".into());
    }
    if d.first_counter > MAX_COUNTER || d.last_used.is_some_and(|c| c > MAX_COUNTER) {
        return Err("the counter or time step is out of range".into());
    }
    let secret = totp_rs::Secret::try_from_base32(d.secret_base32.expose().trim())
        .map_err(|_| "the secret is not valid base32".to_string())?;
    let bytes = zeroize::Zeroizing::new(secret.as_ref().to_vec());
    if bytes.len() < MIN_SECRET_LEN || bytes.len() > MAX_SECRET_LEN {
        return Err(format!(
            "the secret has {} bits: must be {} to {}",
            bytes.len() * 8,
            MIN_SECRET_LEN * 8,
            MAX_SECRET_LEN * 8
        ));
    }
    let last_accepted_step = match d.kind {
        TokenKind::Totp => d.last_used,
        TokenKind::Hotp => d.last_used.or(d.first_counter.checked_sub(1)),
    };
    Ok(Device {
        name: d.name.clone(),
        state: EnrolState::Active,
        kind: d.kind,
        secret: SecretBytes::new(bytes.to_vec()),
        algorithm: d.algorithm,
        digits: d.digits,
        period: if d.kind == TokenKind::Totp {
            d.period
        } else {
            30
        },
        created: now,
        last_accepted_step,
        window: d.window,
        replaces: None,
    })
}
