//! A user's several devices and HOTP counters: removing a device and
//! `otpd resync` (adding one is an enrolment, `enrol.rs`; `otpd import` is
//! `import.rs`).

use super::{internal, refuse, with_retries, Handler};
use crate::core::code;
use crate::core::record::{Device, EnrollState, Replaces, TokenKind, UserRecord};
use crate::core::totp::resync_hotp;
use crate::server::policy::Caller;
use crate::store::{RecordChange, SourcesChange, StoreError};
use otpd_proto::{DeviceSummary, ErrorCode, Response, SecretText, UserState, VerifyOutcome};
use tracing::info;

/// Devices one user may have.
pub(super) const MAX_DEVICES: usize = 16;
/// The highest HOTP counter accepted from an enrolment or an import; far
/// beyond any real token, and far from where `u64` arithmetic could wrap.
pub(super) const MAX_COUNTER: u64 = 1 << 48;

/// The `otpd list` lines of a user's devices.
pub(super) fn summaries(r: &UserRecord) -> Vec<DeviceSummary> {
    r.devices()
        .iter()
        .map(|d| DeviceSummary {
            state: match d.state {
                EnrollState::Pending => UserState::Pending,
                EnrollState::Active => UserState::Active,
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
        // One name, one device: a code device named like a paired phone
        // would make `otpd remove --device NAME` ambiguous.
        if r.approvals.phones.iter().any(|p| p.name == device.name) {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!(
                    "{:?} is the name of a paired phone (an approver) already: choose another name",
                    device.name
                ),
            ));
        }
        let mut devices = r.devices().to_vec();
        let active_of_that_name = devices
            .iter()
            .any(|d| d.name == device.name && d.state == EnrollState::Active);
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
        devices.retain(|d| d.name != device.name || (d.state == EnrollState::Active && !revoke));
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
            // A paired phone (an approver) goes alone: the user's codes
            // are untouched.
            let mut without_phone = current.clone();
            if without_phone.approvals.remove_phone(name) {
                without_phone.version = current.version.wrapping_add(1);
                // A removed device ends every remembered login.
                without_phone.remembered.clear();
                return match self.store.commit(
                    user,
                    Some(current.version),
                    RecordChange::Put(&without_phone),
                    SourcesChange::Keep,
                ) {
                    Ok(()) => {
                        info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "remove", device = ?name, kind = "approver", outcome = "done");
                        Some(Response::Done {})
                    }
                    Err(StoreError::Conflict) => None,
                    Err(e) => Some(internal(e)),
                };
            }
            let mut devices = current.devices().to_vec();
            let before = devices.len();
            devices.retain(|d| d.name != name);
            if devices.len() == before {
                return Some(refuse(
                    ErrorCode::NotFound,
                    format!(
                        "{user} has no device {name:?} (devices: {})",
                        current
                            .devices()
                            .iter()
                            .map(|d| d.name.as_str())
                            .chain(current.approvals.phones.iter().map(|p| p.name.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
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
                // A removed device ends every remembered login.
                next.remembered.clear();
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
}
