//! Enrolment: a new (or replacing) device, with its QR code or a
//! one-time link; its confirmation is the check of `verify.rs`.

use super::*;

/// Refuses to enrol `user` under a spelling the user database gives as
/// another account name (`getpwnam` of "Erin" says "erin" under an NSS
/// that ignores case): the PAM module asks about the account's own name,
/// so a record under another spelling would never be found at a login, and
/// `nullok` would let the user through. A name the database does not know
/// (an account of another host of a fleet, or none yet) is left alone.
pub(super) fn account_spelling(user: &str, op: &str) -> Result<(), Response> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(account)) if account.name != user => Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "{user:?} is the account {:?} in the user database: {op} {:?} instead \
                 (logins ask otpd about the account's own name)",
                account.name, account.name
            ),
        )),
        _ => Ok(()),
    }
}

impl Handler {
    pub(super) fn enroll(&self, caller: &Caller, p: EnrollParams) -> Response {
        if let Err(refusal) = account_spelling(&p.user, "enrol") {
            return refusal;
        }
        let defaults = &self.config.totp;
        let algorithm = p.algorithm.unwrap_or(defaults.algorithm);
        let digits = p.digits.unwrap_or(defaults.digits);
        let period = p.period.unwrap_or(defaults.period);
        let issuer = p.issuer.clone().unwrap_or_else(|| self.issuer.clone());
        let kind = if p.hotp {
            TokenKind::Hotp
        } else {
            TokenKind::Totp
        };
        let counter = p.counter.unwrap_or(0);
        if digits != 6 && digits != 8 {
            return refuse(
                ErrorCode::BadRequest,
                format!("digits {digits}: must be 6 or 8"),
            );
        }
        if !(15..=300).contains(&period) {
            return refuse(
                ErrorCode::BadRequest,
                format!("period {period}: must be between 15 and 300 seconds"),
            );
        }
        if p.revoke && !p.force {
            return refuse(
                ErrorCode::BadRequest,
                "--revoke goes with --force (it says what becomes of the device --force replaces)",
            );
        }
        if p.counter.is_some() && !p.hotp {
            return refuse(
                ErrorCode::BadRequest,
                "a counter belongs to an HOTP token: add --hotp",
            );
        }
        if counter > devices::MAX_COUNTER {
            return refuse(
                ErrorCode::BadRequest,
                format!(
                    "counter {counter}: must be at most {}",
                    devices::MAX_COUNTER
                ),
            );
        }
        if p.link_expires.is_some() && (p.hotp || p.device.is_some()) {
            return refuse(
                ErrorCode::BadRequest,
                "a self-enrolment link enrols a user's phone app: it cannot be combined with --hotp or --device",
            );
        }
        if let Some(name) = &p.device {
            if let Err(m) = crate::core::names::validate_device(name) {
                return refuse(ErrorCode::BadRequest, m);
            }
        }
        if let Err(m) = validate_issuer(&issuer) {
            return refuse(ErrorCode::BadRequest, m);
        }
        let link = match p.link_expires {
            None => None,
            Some(secs) => match self.new_link(secs) {
                Ok(link) => Some(link),
                Err(response) => return response,
            },
        };
        let mut secret = zeroize::Zeroizing::new(vec![0u8; SECRET_LEN]);
        if let Err(e) = crate::rng::fill(&mut secret) {
            return internal(format!("the OS random number generator failed: {e}"));
        }
        let uri = match kind {
            TokenKind::Totp => otpauth_uri(&secret, algorithm, digits, period, &issuer, &p.user),
            TokenKind::Hotp => {
                otpauth_hotp_uri(&secret, algorithm, digits, counter, &issuer, &p.user)
            }
        };
        let (uri, secret_base32) = match uri {
            Ok((uri, b32)) => (SecretText::new(uri), SecretText::new(b32)),
            Err(e) => {
                return refuse(
                    ErrorCode::BadRequest,
                    format!("cannot build the otpauth URI: {e}"),
                )
            }
        };
        let device_name = p.device.clone().unwrap_or_else(|| DEFAULT_DEVICE.into());
        let new_device = Device {
            name: device_name.clone(),
            state: EnrollState::Pending,
            kind,
            secret: SecretBytes::new(secret.to_vec()),
            algorithm,
            digits,
            period,
            created: self.now(),
            last_accepted_step: counter.checked_sub(1),
            window: None,
            replaces: None,
        };

        with_retries(|| {
            let existing = match self.store.user(&p.user) {
                Ok(r) => r,
                Err(e) => return Some(internal(e)),
            };
            // A second factor, once on, stays on (design.md §7): replacing
            // an active device keeps it working until the new one is
            // confirmed, unless the admin revokes it at once; either way
            // the record remembers that the user needs a code.
            let (mut next, sources, replaced, old_kept) = match (&existing, &p.device) {
                // A device added to (or replaced in) an existing user: the
                // other devices, recovery codes and counters stay.
                (Some(r), Some(name)) => {
                    let replaced = r.devices().iter().any(|d| &d.name == name);
                    match self.with_device(r, new_device.clone(), p.force, p.revoke, caller) {
                        Ok((next, old_kept)) => (next, SourcesChange::Keep, replaced, old_kept),
                        Err(refusal) => return Some(refusal),
                    }
                }
                (Some(r), None) if r.has_active_device() && !p.force => {
                    info!(target: "otpd::audit", user = ?p.user, uid = caller.uid, op = "enroll", outcome = "already_enrolled");
                    return Some(refuse(
                        ErrorCode::AlreadyEnrolled,
                        format!(
                            "{} already has an active token; use --force to replace it, or --device NAME to add another",
                            p.user
                        ),
                    ));
                }
                // The whole enrolment replaced while the old one keeps
                // working: the new device waits beside it and takes over
                // everything once confirmed (`Replaces::All`).
                (Some(r), None) if r.has_active_device() && !p.revoke => {
                    let mut devices: Vec<Device> = r
                        .devices()
                        .iter()
                        .filter(|d| d.state == EnrollState::Active)
                        .cloned()
                        .collect();
                    devices.push(Device {
                        replaces: Some(Replaces::All),
                        ..new_device.clone()
                    });
                    if devices.len() > devices::MAX_DEVICES {
                        return Some(refuse(
                            ErrorCode::BadRequest,
                            format!(
                                "{} has {} active devices: remove one first, or replace them \
                                 with --revoke",
                                p.user,
                                devices.len() - 1
                            ),
                        ));
                    }
                    let mut next = r.clone();
                    next.version = r.version.wrapping_add(1);
                    next.issuer = issuer.clone();
                    if let Err(e) = next.set_devices(devices) {
                        return Some(internal(e));
                    }
                    next.fallback.link = link.as_ref().map(|(_, stored)| stored.clone());
                    (next, SourcesChange::Keep, true, true)
                }
                // A user who has (revoked now) or had an active device: the
                // old devices, recovery codes and phone go, the counters
                // stay, and nullok still asks for a code. A revocation (a lost
                // or stolen phone) also forgets the trusted sources: whoever
                // had the phone may have logged in from them.
                (Some(r), None) if r.factor_required() => {
                    let mut next = r.clone();
                    next.version = r.version.wrapping_add(1);
                    if p.revoke {
                        next.trusted_sources.clear();
                    }
                    next.issuer = issuer.clone();
                    if let Err(e) = next.set_devices(vec![new_device.clone()]) {
                        return Some(internal(e));
                    }
                    next.fallback = Fallback {
                        link: link.as_ref().map(|(_, stored)| stored.clone()),
                        sms_sent: r.fallback.sms_sent.clone(),
                        register_sent: r.fallback.register_sent.clone(),
                        ..Fallback::default()
                    };
                    // Paired phones are devices too: a lost or stolen phone
                    // must not go on approving (only the hour's push count
                    // stays, like the texts').
                    next.approvals = r.approvals.afresh();
                    (next, SourcesChange::Keep, true, false)
                }
                // A new user, or one who never had an active device.
                _ => {
                    let version = match &existing {
                        Some(r) => r.version.wrapping_add(1),
                        None => match fresh_version() {
                            Ok(v) => v,
                            Err(response) => return Some(response),
                        },
                    };
                    let mut record =
                        match UserRecord::new(version, issuer.clone(), vec![new_device.clone()]) {
                            Ok(record) => record,
                            Err(e) => return Some(internal(e)),
                        };
                    record.fallback = Fallback {
                        link: link.as_ref().map(|(_, stored)| stored.clone()),
                        ..Fallback::default()
                    };
                    (record, SourcesChange::ClearAll, existing.is_some(), false)
                }
            };
            // A new enrolment ends every remembered login (`[remember]`).
            next.remembered.clear();
            match self.store.commit(
                &p.user,
                existing.as_ref().map(|r| r.version),
                RecordChange::Put(&next),
                sources,
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict) => return None,
                Err(e) => return Some(internal(e)),
            }
            self.metrics.enrolment("started");
            info!(target: "otpd::audit", user = ?p.user, uid = caller.uid, op = "enroll", outcome = "pending", replaced, old_kept, revoked = replaced && p.revoke, link = link.is_some(), device = ?device_name, kind = kind.as_str());
            if let Some((url, stored)) = &link {
                return Some(Response::Link {
                    user: p.user.clone(),
                    url: url.clone(),
                    expires: stored.expires,
                    replaced,
                    old_kept,
                });
            }
            Some(Response::Enrolled(Box::new(Enrollment {
                user: p.user.clone(),
                issuer: issuer.clone(),
                algorithm,
                digits,
                period,
                secret_base32: secret_base32.clone(),
                uri: uri.clone(),
                replaced,
                device: device_name.clone(),
                token_kind: kind,
                counter: p.hotp.then_some(counter),
                old_kept,
            })))
        })
    }
}
