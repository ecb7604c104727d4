//! `otpd import`: a user from pam_google_authenticator or pam_oath, active
//! at once, with the replay state of the file it came from.

use super::devices::{MAX_COUNTER, MAX_DEVICES};
use super::*;
use crate::core::names::validate_device;
use crate::core::record::{Device, EnrollState, Fallback, SecretBytes, TokenKind, UserRecord};
use crate::core::tokens::{normalize_any_recovery, CodeHash};
use crate::core::totp::MIN_SECRET_LEN;
use crate::rng::random_bytes;
use crate::server::policy::Caller;
use crate::store::{RecordChange, SourcesChange, StoreError};
use otpd_proto::{ErrorCode, ImportParams, ImportResult, ImportedDevice, Response, SecretText};
use tracing::info;

/// The longest secret an import accepts, in bytes.
const MAX_SECRET_LEN: usize = 128;
/// Recovery codes an import accepts for one user.
const MAX_IMPORTED_CODES: usize = 100;

impl Handler {
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
        state: EnrollState::Active,
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
