//! `otpd self`: the person logging in looks after their own devices,
//! recovery codes and activity. The user is the one the caller's uid maps
//! to (SO_PEERCRED, then the user database), never a name from the request;
//! root is refused by the policy (`server::policy`). Every change is proved
//! with a code checked like a login (`plan_verify`, counted against the
//! caller's uid as the source, used up) and is committed in the same write
//! as that check: a wrong code changes nothing but the count.

use super::verify::activity_event;
use super::*;
use crate::core::decision::Outcome;
use crate::core::names::validate_device;
use crate::core::plan::wire_outcome;
use crate::core::tokens::{normalize_any_recovery, CodeHash};
use otpd_proto::{ApproverSummary, SelfProof};

/// The service named in the audit lines and the activity of `otpd self`.
const SERVICE: &str = "otpd-self";

/// What a proof showed, once the change it came with is durable.
struct Proved {
    /// How the proof was accepted (a device's code or a recovery code).
    outcome: Outcome,
}

impl Handler {
    /// Answers one `otpd self` request of `caller` (not root: the policy
    /// refused root already).
    pub(super) fn self_service(&self, caller: &Caller, request: Request) -> Response {
        let Some(user) = user_name_of(caller.uid) else {
            warn!(target: "otpd::audit", uid = caller.uid, op = self_op(&request), outcome = "no_account");
            return refuse(
                ErrorCode::NotFound,
                format!(
                    "uid {} has no name in the user database: otpd self is for the account you log in with",
                    caller.uid
                ),
            );
        };
        if let Err(reason) = validate_user(&user) {
            return refuse(
                ErrorCode::NotFound,
                format!("{user:?} cannot be enrolled in otpd: {reason}"),
            );
        }
        match request {
            Request::SelfDevices {} => self.own_devices(caller, &user),
            Request::SelfActivity {} => self.own_activity(caller, &user),
            Request::SelfAddDevice { device, proof } => {
                self.self_add_device(caller, &user, &device, &proof)
            }
            Request::SelfConfirm { device, code } => {
                self.self_confirm(caller, &user, &device, &code)
            }
            Request::SelfRemoveDevice { device, proof } => {
                self.self_remove_device(caller, &user, &device, &proof)
            }
            Request::SelfRecoveryCodes { proof } => self.self_recovery_codes(caller, &user, &proof),
            _ => out_of_turn(),
        }
    }

    /// `otpd self devices`: names, kinds, states and dates; never a secret.
    fn own_devices(&self, caller: &Caller, user: &str) -> Response {
        let record = match self.own_record(caller, user, "self_devices") {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "self_devices", outcome = "done");
        Response::OwnDevices {
            user: user.to_owned(),
            devices: devices::summaries(&record),
            approvers: record
                .approvals
                .phones
                .iter()
                .map(|p| ApproverSummary {
                    name: p.name.clone(),
                    state: match p.state {
                        EnrollState::Pending => UserState::Pending,
                        EnrollState::Active => UserState::Active,
                    },
                    created: p.created,
                    last_used: p.last_used,
                    push: p.push.is_some(),
                })
                .collect(),
            recovery_codes: u32::try_from(record.fallback.recovery.len()).unwrap_or(u32::MAX),
        }
    }

    /// `otpd self activity`: the latest logins and failures, newest last.
    fn own_activity(&self, caller: &Caller, user: &str) -> Response {
        let record = match self.own_record(caller, user, "self_activity") {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "self_activity", outcome = "done");
        Response::Activity {
            user: user.to_owned(),
            events: record
                .activity
                .iter()
                .map(|e| otpd_proto::ActivityEntry {
                    time: e.time,
                    service: e.service.clone(),
                    source: e.source.clone(),
                    outcome: e.outcome.clone(),
                })
                .collect(),
        }
    }

    /// `otpd self add-device NAME`: a new pending TOTP device with the
    /// configured parameters, beside the user's others.
    fn self_add_device(
        &self,
        caller: &Caller,
        user: &str,
        name: &str,
        proof: &SelfProof,
    ) -> Response {
        const OP: &str = "self_add_device";
        if let Err(m) = validate_device(name) {
            return refuse(ErrorCode::BadRequest, m);
        }
        let defaults = &self.config.totp;
        let mut secret = zeroize::Zeroizing::new(vec![0u8; SECRET_LEN]);
        if let Err(e) = crate::rng::fill(&mut secret) {
            return internal(format!("the OS random number generator failed: {e}"));
        }
        let device = Device {
            name: name.to_owned(),
            state: EnrollState::Pending,
            kind: TokenKind::Totp,
            secret: SecretBytes::new(secret.to_vec()),
            algorithm: defaults.algorithm,
            digits: defaults.digits,
            period: defaults.period,
            created: self.now(),
            last_accepted_step: None,
            window: None,
            replaces: None,
        };
        // The issuer the user's app shows for the other devices.
        let mut issuer = self.issuer.clone();
        let proved = self.prove_and_change(caller, user, OP, proof, |r| {
            issuer = r.issuer.clone();
            self.with_device(r, device.clone(), false, false, caller)
                .map(|(mut next, _)| {
                    // A new device ends every remembered login.
                    next.remembered.clear();
                    next
                })
        });
        let proved = match proved {
            Ok(proved) => proved,
            Err(refusal) => return refusal,
        };
        let (uri, secret_base32) = match otpauth_uri(
            &secret,
            defaults.algorithm,
            defaults.digits,
            defaults.period,
            &issuer,
            user,
        ) {
            Ok((uri, b32)) => (SecretText::new(uri), SecretText::new(b32)),
            Err(e) => return internal(format!("cannot build the otpauth URI: {e}")),
        };
        self.metrics.enrolment("started");
        info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = OP, device = ?name, proof = proved.outcome.as_str(), outcome = "pending");
        Response::Enrolled(Box::new(Enrollment {
            user: user.to_owned(),
            issuer,
            algorithm: defaults.algorithm,
            digits: defaults.digits,
            period: defaults.period,
            secret_base32,
            uri,
            replaced: false,
            device: name.to_owned(),
            token_kind: TokenKind::Totp,
            counter: None,
            old_kept: false,
        }))
    }

    /// `otpd self confirm NAME CODE`: the first code of a pending device
    /// (the user has it in hand: adding it was proved already). The check
    /// is `otpd confirm`'s, from the caller's uid.
    fn self_confirm(&self, caller: &Caller, user: &str, name: &str, code: &SecretText) -> Response {
        const OP: &str = "self_confirm";
        let record = match self.own_record(caller, user, OP) {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        if !record
            .devices()
            .iter()
            .any(|d| d.name == name && d.state == EnrollState::Pending)
        {
            info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = OP, device = ?name, outcome = "not_pending");
            return refuse(
                ErrorCode::NotPending,
                format!(
                    "you have no device {name:?} waiting for its first code (otpd self devices lists yours)"
                ),
            );
        }
        let response = self.verify(
            caller,
            Attempt {
                source: source_of("", None, caller.uid),
                own: true,
                user,
                code,
                service: SERVICE,
                rhost: "",
                purpose: Purpose::Confirm,
            },
        );
        let outcome = match &response {
            Response::Confirmed { .. } => "done",
            Response::Verified { outcome } => match outcome {
                otpd_proto::VerifyOutcome::Throttled { .. } => "throttled",
                otpd_proto::VerifyOutcome::Replayed => "replayed",
                _ => "wrong_code",
            },
            _ => "refused",
        };
        info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = OP, device = ?name, outcome);
        response
    }

    /// `otpd self remove-device NAME`: a device or a paired phone; never
    /// the last active device (a second factor, once on, stays on).
    fn self_remove_device(
        &self,
        caller: &Caller,
        user: &str,
        name: &str,
        proof: &SelfProof,
    ) -> Response {
        const OP: &str = "self_remove_device";
        let proved = self.prove_and_change(caller, user, OP, proof, |r| {
            let mut next = r.clone();
            // A removed device (or phone) ends every remembered login.
            next.remembered.clear();
            if next.approvals.remove_phone(name) {
                return Ok(next);
            }
            let mut devices = r.devices().to_vec();
            let before = devices.len();
            devices.retain(|d| d.name != name);
            if devices.len() == before {
                return Err(refuse(
                    ErrorCode::NotFound,
                    format!(
                        "you have no device {name:?} (yours: {})",
                        r.devices()
                            .iter()
                            .map(|d| d.name.as_str())
                            .chain(r.approvals.phones.iter().map(|p| p.name.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if !devices.iter().any(|d| d.state == EnrollState::Active) {
                return Err(refuse(
                    ErrorCode::Refused,
                    format!(
                        "{name:?} is your last active device: add and confirm another one first \
                         (otpd self add-device NAME), then remove this one"
                    ),
                ));
            }
            next.set_devices(devices).map_err(internal)?;
            // The link's page shows the first device, now maybe another.
            next.fallback.link = None;
            Ok(next)
        });
        match proved {
            Ok(proved) => {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = OP, device = ?name, proof = proved.outcome.as_str(), outcome = "done");
                Response::Done {}
            }
            Err(refusal) => refusal,
        }
    }

    /// `otpd self recovery-codes`: a new set, shown once; the old ones stop
    /// working.
    fn self_recovery_codes(&self, caller: &Caller, user: &str, proof: &SelfProof) -> Response {
        const OP: &str = "self_recovery_codes";
        let count = self.config.recovery.count;
        let (codes, hashes): (Vec<SecretText>, Vec<CodeHash>) =
            match Self::fresh_recovery_codes(count) {
                Ok(fresh) => fresh,
                Err(response) => return response,
            };
        let proved = self.prove_and_change(caller, user, OP, proof, |r| {
            let mut next = r.clone();
            next.fallback.recovery = hashes.clone();
            Ok(next)
        });
        match proved {
            Ok(proved) => {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = OP, proof = proved.outcome.as_str(), outcome = "replaced", recovery_codes_left = count);
                Response::RecoveryCodes {
                    user: user.to_owned(),
                    codes,
                }
            }
            Err(refusal) => refusal,
        }
    }

    /// The caller's own record, or the refusal for a user who has none.
    fn own_record(&self, caller: &Caller, user: &str, op: &str) -> Result<UserRecord, Response> {
        match self.store.user(user) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op, outcome = "not_enrolled");
                Err(refuse(
                    ErrorCode::NotFound,
                    format!("{user} is not enrolled in otpd: ask your administrator"),
                ))
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// Checks `proof` like a login of `user` from the caller's uid and, if
    /// it is accepted, commits `change` of the record in the same write.
    /// `change` is tried on the record as read first: a change that cannot
    /// be made is refused before the code is looked at (nothing counted,
    /// nothing used). A wrong or replayed code is counted and changes
    /// nothing else; a throttled caller is refused without a look.
    fn prove_and_change(
        &self,
        caller: &Caller,
        user: &str,
        op: &'static str,
        proof: &SelfProof,
        mut change: impl FnMut(&UserRecord) -> Result<UserRecord, Response>,
    ) -> Result<Proved, Response> {
        let (code, recovery) = match proof {
            SelfProof::Code { code } => (code, false),
            SelfProof::RecoveryCode { code } => (code, true),
        };
        if recovery && op != "self_add_device" {
            return Err(refuse(
                ErrorCode::BadRequest,
                "a recovery code can only add a new device (a lost phone): otpd self \
                 add-device NAME --recovery-code CODE; other changes need a code of a device",
            ));
        }
        if recovery && normalize_any_recovery(code.expose()).is_none() {
            return Err(refuse(
                ErrorCode::BadRequest,
                "that is not a recovery code: they look like XXXX-XXXX-XXXX",
            ));
        }
        let source = source_of("", None, caller.uid);
        let audit = |outcome: &str| {
            if recovery {
                // A lost phone, or someone who has the user's recovery
                // codes: the administrator can alert on this.
                warn!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "self_recovery", change = op, outcome);
            } else {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op, outcome);
            }
        };
        let mut proved = None;
        let response = with_retries(|| {
            let now = self.now();
            let (record, counter) = match self.store.read_for_check(user, &source) {
                Ok(read) => read,
                Err(e) => return Some(internal(e)),
            };
            let Some(current) = record else {
                audit("not_enrolled");
                return Some(refuse(
                    ErrorCode::NotFound,
                    format!("{user} is not enrolled in otpd: ask your administrator"),
                ));
            };
            if let Err(refusal) = change(&current) {
                audit("refused");
                return Some(refusal);
            }
            // The check sees only what this proof may be: a code of an
            // active device (not a recovery code, which has its own
            // option and audit line, nor a texted code), or a recovery code.
            let mut seen = current.clone();
            seen.fallback.sms.clear();
            if !recovery {
                seen.fallback.recovery.clear();
            }
            let plan = plan_verify(
                VerifyRead {
                    record: Some(&seen),
                    counter: counter.as_ref(),
                },
                VerifyAttempt {
                    user,
                    code: code.expose(),
                    source: &source,
                    own: true,
                    purpose: Purpose::Login,
                    fresh_recovery: None,
                },
                now,
                &self.rules,
            );
            let decision = match &plan.decision {
                Ok(decision) => decision,
                Err(Refusal::UnusableToken(reason)) => {
                    return Some(internal(format!(
                        "the token of {user:?} cannot be used: {reason}"
                    )))
                }
                Err(_) => return Some(internal("a login check was refused as a confirmation")),
            };
            let outcome = decision.outcome;
            let accepted = matches!(
                outcome,
                Outcome::Accepted { .. } | Outcome::AcceptedRecovery { .. }
            );
            let Some(checked) = &decision.record else {
                // Throttled, or not shaped like a code: nothing written.
                audit(outcome.as_str());
                return Some(Response::Verified {
                    outcome: wire_outcome(outcome),
                });
            };
            let mut next = checked.clone();
            // Back what the check did not see.
            next.fallback.sms = current.fallback.sms.clone();
            if !recovery {
                next.fallback.recovery = current.fallback.recovery.clone();
            }
            if accepted {
                next = match change(&next) {
                    Ok(changed) => changed,
                    Err(refusal) => {
                        audit("refused");
                        return Some(refusal);
                    }
                };
            }
            next.version = current.version.wrapping_add(1);
            next.note_activity(activity_event(now, SERVICE, "", &source, outcome.as_str()));
            match self.store.commit(
                user,
                Some(current.version),
                RecordChange::Put(&next),
                SourcesChange::from_decision(&source, decision.source, counter.as_ref()),
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict) => return None,
                Err(e) => {
                    audit("store_error");
                    return Some(internal(e));
                }
            }
            // An accepted code is said in the change's own line (proof=…);
            // a recovery code always has its warning line.
            if !accepted || recovery {
                audit(outcome.as_str());
            }
            if accepted {
                proved = Some(Proved { outcome });
                Some(Response::Done {})
            } else {
                Some(Response::Verified {
                    outcome: wire_outcome(outcome),
                })
            }
        });
        proved.ok_or(response)
    }
}

/// The audit `op` of an `otpd self` request.
pub(super) fn self_op(request: &Request) -> &'static str {
    match request {
        Request::SelfDevices {} => "self_devices",
        Request::SelfAddDevice { .. } => "self_add_device",
        Request::SelfConfirm { .. } => "self_confirm",
        Request::SelfRemoveDevice { .. } => "self_remove_device",
        Request::SelfRecoveryCodes { .. } => "self_recovery_codes",
        Request::SelfActivity {} => "self_activity",
        _ => "self",
    }
}
