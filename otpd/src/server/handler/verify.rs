//! A code check: a login's (from the conversation), `otpd verify`'s, or a
//! confirmation's (`otpd confirm`; the page's Validate goes through the
//! same plan): read, plan (`core::plan`), commit, effects, audit, reply.

use super::*;
use crate::core::decision::{throttled_by, Decision, Outcome, SourceState};
use crate::core::record::{ActivityEvent, SourceKey};

/// One code to check, and where it came from.
pub(super) struct Attempt<'a> {
    pub(super) user: &'a str,
    pub(super) code: &'a SecretText,
    pub(super) service: &'a str,
    pub(super) rhost: &'a str,
    /// The rate-limit source (`source_of`).
    pub(super) source: SourceKey,
    /// The source is the user's own uid (`own_source`).
    pub(super) own: bool,
    pub(super) purpose: Purpose,
}
/// Whether a login of `user` comes from that user's own uid: a non-root
/// caller (the policy lets it ask only about its own name), or root (su,
/// sudo) started by that user on this host. Root's own uid is never "own"
/// for another user: `login` on the console runs as root for everyone.
pub(super) fn own_source(user: &str, rhost: &str, ruid: Option<u32>, peer_uid: u32) -> bool {
    if peer_uid != 0 {
        return true;
    }
    match ruid {
        Some(ruid) if ruid != 0 && rhost.trim().is_empty() => {
            user_name_of(ruid).is_some_and(|name| name == user)
        }
        _ => false,
    }
}

impl Handler {
    pub(super) fn verify(&self, caller: &Caller, attempt: Attempt<'_>) -> Response {
        let Attempt {
            user,
            code,
            service,
            rhost,
            ref source,
            own,
            purpose,
        } = attempt;
        let op = if purpose == Purpose::Confirm {
            "confirm"
        } else {
            "verify"
        };
        let audit = |outcome: &str| {
            audit_verify(caller, user, service, rhost, purpose, outcome, None);
            self.metrics.checked(service, caller.uid == 0, op, outcome);
        };
        if purpose == Purpose::Login && code.expose().trim().eq_ignore_ascii_case("sms") {
            return self.login_sms(caller, user, source, own, service, rhost);
        }
        // A confirmation that activates a device comes with new recovery
        // codes: drawn here, stored by the plan when it activates.
        let fresh = match purpose {
            Purpose::Confirm => match Handler::fresh_recovery_codes(self.config.recovery.count) {
                Ok(fresh) => Some(fresh),
                Err(response) => return response,
            },
            Purpose::Login => None,
        };
        with_retries(|| {
            let now = self.now();
            let (record, counter) = match self.store.read_for_check(user, source) {
                Ok(read) => read,
                Err(e) => return Some(internal(e)),
            };
            let plan = plan_verify(
                VerifyRead {
                    record: record.as_ref(),
                    counter: counter.as_ref(),
                },
                VerifyAttempt {
                    user,
                    code: code.expose(),
                    source,
                    own,
                    purpose,
                    fresh_recovery: fresh.as_ref().map(|(_, hashes)| hashes.as_slice()),
                },
                now,
                &self.rules,
            );
            let write = plan
                .write()
                .and_then(|decision| Some((decision.record.as_ref()?, decision.source)));
            if let (Some((next, source_change)), Some(current)) = (write, &record) {
                // A login's attempt is kept for `otpd self activity`, in
                // the same write.
                let next = match (purpose, plan.audit()) {
                    (Purpose::Login, Some(line)) => {
                        let mut noted = next.clone();
                        noted.note_activity(activity_event(
                            now,
                            service,
                            rhost,
                            source,
                            line.outcome,
                        ));
                        std::borrow::Cow::Owned(noted)
                    }
                    _ => std::borrow::Cow::Borrowed(next),
                };
                match self.store.commit(
                    user,
                    Some(current.version),
                    RecordChange::Put(&next),
                    SourcesChange::from_decision(source, source_change, counter.as_ref()),
                ) {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => return None,
                    Err(e) => {
                        // Fail closed: an accepted code that is not durably
                        // used must not be reported as accepted.
                        audit("store_error");
                        return Some(internal(e));
                    }
                }
            }
            for effect in &plan.effects {
                match effect {
                    Effect::DecoyWrite => {
                        if let Err(e) = self.store.decoy_write() {
                            warn!("decoy write failed: {e}");
                        }
                    }
                }
            }
            if let Some(line) = plan.audit() {
                audit_verify(
                    caller,
                    user,
                    service,
                    rhost,
                    purpose,
                    line.outcome,
                    line.recovery_codes_left,
                );
                self.metrics
                    .checked(service, caller.uid == 0, op, line.outcome);
            }
            if let Ok(Decision {
                outcome: Outcome::Throttled { .. },
                ..
            }) = &plan.decision
            {
                let (by_source, by_user) = throttled_by(
                    record.as_ref(),
                    &SourceState {
                        key: source.as_str(),
                        counter: counter.as_ref(),
                        own,
                    },
                    now,
                    purpose,
                    &self.rules,
                );
                self.metrics.throttled(by_source, by_user);
            }
            if plan.recovery_codes_issued {
                self.metrics.enrolment("confirmed");
            }
            Some(match plan.reply() {
                Ok(_) if plan.recovery_codes_issued => Response::Confirmed {
                    recovery_codes: fresh
                        .as_ref()
                        .map(|(codes, _)| codes.clone())
                        .unwrap_or_default(),
                },
                Ok(outcome) => Response::Verified { outcome },
                Err(Refusal::NotEnrolled) => {
                    refuse(ErrorCode::NotFound, format!("{user} is not enrolled"))
                }
                Err(Refusal::NothingPending) => refuse(
                    ErrorCode::NotPending,
                    format!("{user}'s enrolment is already active; nothing to confirm"),
                ),
                Err(Refusal::UnusableToken(reason)) => {
                    internal(format!("the token of {user:?} cannot be used: {reason}"))
                }
            })
        })
    }
}

/// The [`ActivityEvent`] of an attempt: where from is the rhost, or the
/// source key (`uid:N`) of a local login.
pub(super) fn activity_event(
    now: u64,
    service: &str,
    rhost: &str,
    source: &SourceKey,
    outcome: &str,
) -> ActivityEvent {
    let from = match rhost.trim() {
        "" => source.as_str(),
        rhost => rhost,
    };
    ActivityEvent::new(now, service, from, outcome)
}

/// The audit line of a verification: who, from where, through what, and the
/// outcome. Never the code. Names are Debug-quoted so that a crafted name
/// cannot forge a log line.
pub(super) fn audit_verify(
    caller: &Caller,
    user: &str,
    service: &str,
    rhost: &str,
    purpose: Purpose,
    outcome: &str,
    recovery_codes_left: Option<u64>,
) {
    info!(
        target: "otpd::audit",
        user = ?user,
        service = ?service,
        rhost = ?rhost,
        uid = caller.uid,
        pid = caller.pid,
        op = if purpose == Purpose::Confirm { "confirm" } else { "verify" },
        outcome,
        recovery_codes_left,
    );
}

#[cfg(test)]
mod tests {
    //! The handler with the real sled store and an injected clock.
    use super::*;
    use crate::core::seal::{RecordKey, KEY_LEN};
    use crate::core::totp::generator;
    use crate::store::SledStore;
    use otpd_proto::{Algorithm, VerifyOutcome};
    use std::sync::atomic::{AtomicU64, Ordering};

    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn now(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const ROOT: Caller = Caller { uid: 0, pid: None };

    fn verify(handler: &Handler, user: &str, code: &str) -> Response {
        handler.handle(
            &ROOT,
            Request::Verify {
                user: user.into(),
                code: SecretText::new(code.into()),
                service: "test".into(),
                rhost: "192.0.2.1".into(),
                ruid: None,
            },
        )
    }

    fn outcome(response: Response) -> VerifyOutcome {
        match response {
            Response::Verified { outcome } => outcome,
            other => panic!("not a verification: {other:?}"),
        }
    }

    #[test]
    fn a_clock_stepped_back_an_hour_never_gets_a_code_accepted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SledStore::open(dir.path(), |_| Ok(RecordKey::from_bytes(&[5; KEY_LEN]))).unwrap(),
        );
        let t0 = 1_800_000_000u64;
        let clock = Arc::new(TestClock(AtomicU64::new(t0)));
        let handler = Handler::with_clock(store, Config::default(), clock.clone());
        let enrolled = handler.handle(
            &ROOT,
            Request::Enroll(EnrollParams {
                user: "alice".into(),
                issuer: Some("t".into()),
                algorithm: None,
                digits: None,
                period: None,
                force: false,
                link_expires: None,
                ..EnrollParams::default()
            }),
        );
        let Response::Enrolled(e) = enrolled else {
            panic!("enrol failed: {enrolled:?}");
        };
        let secret = totp_rs::Secret::try_from_base32(e.secret_base32.expose()).unwrap();
        let totp = generator(secret.as_bytes(), Algorithm::Sha1, 6, 30, 0).unwrap();
        let code = |t: u64| totp.generate(t).to_string();
        let confirmed = handler.handle(
            &ROOT,
            Request::Confirm {
                user: "alice".into(),
                code: SecretText::new(code(t0)),
            },
        );
        assert!(
            matches!(confirmed, Response::Confirmed { .. }),
            "{confirmed:?}"
        );
        clock.0.store(t0 + 60, Ordering::SeqCst);
        assert_eq!(
            outcome(verify(&handler, "alice", &code(t0 + 60))),
            VerifyOutcome::Accepted
        );
        // The clock steps back an hour: every code of that hour, the ones
        // used before included, is refused as a replay.
        let mut replays = 0;
        for back in (0..=3660).step_by(30) {
            clock.0.store(t0 + 60 - back, Ordering::SeqCst);
            let now = t0 + 60 - back;
            for c in [code(now), code(t0 + 60), code(t0)] {
                let o = outcome(verify(&handler, "alice", &c));
                assert_ne!(o, VerifyOutcome::Accepted, "accepted at now={now}");
                replays += 1;
            }
        }
        assert!(replays > 300);
        // Time moves forward past the last used step: new codes work again.
        clock.0.store(t0 + 90, Ordering::SeqCst);
        assert_eq!(
            outcome(verify(&handler, "alice", &code(t0 + 90))),
            VerifyOutcome::Accepted
        );
        assert_eq!(
            outcome(verify(&handler, "alice", &code(t0 + 90))),
            VerifyOutcome::Replayed
        );
    }
}
