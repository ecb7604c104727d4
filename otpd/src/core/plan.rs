//! The plan of one code check (a login's, `otpd verify`'s, or a
//! confirmation's), as data: what to answer, what to write, what to do once
//! the write is durable, and the audit line. The daemon's shell reads the
//! record and the source counter, calls [`plan_verify`], commits
//! [`VerifyPlan::write`] with its one compare-and-swap loop, carries out the
//! effects, writes the audit line and answers. No clock, no RNG, no I/O
//! here: the fuzz target `decision` drives this very function.
#![forbid(unsafe_code)]

use crate::core::decision::{decide, Decision, Outcome, Purpose, Rules, SourceState};
use crate::core::record::{EnrollState, SourceCounter, UserRecord};
use crate::core::tokens::CodeHash;
use otpd_proto::VerifyOutcome;

/// What the shell read for the check.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRead<'a> {
    /// The user's record, if there is one.
    pub record: Option<&'a UserRecord>,
    /// The caller's source counter, if it has one.
    pub counter: Option<&'a SourceCounter>,
}

/// The check asked for.
#[derive(Debug, Clone, Copy)]
pub struct VerifyAttempt<'a> {
    /// The user (for refusal texts).
    pub user: &'a str,
    /// The code as typed.
    pub code: &'a str,
    /// The rate-limit source's key.
    pub source: &'a str,
    /// The source is the user's own uid.
    pub own: bool,
    /// Login or confirmation.
    pub purpose: Purpose,
    /// For a confirmation: the hashes of the recovery codes drawn for it
    /// (the shell draws them before the plan; the plan stores them when the
    /// confirmation activates a device).
    pub fresh_recovery: Option<&'a [CodeHash]>,
}

/// A check that is refused before any code is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Confirm: no such user.
    NotEnrolled,
    /// Confirm: every device is active already.
    NothingPending,
    /// The stored token cannot compute codes (a damaged record).
    UnusableToken(String),
}

/// Work for after the write (or instead of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// An unknown user's login costs what a wrong code costs (design.md
    /// §6, no enumeration): one durable write of nothing.
    DecoyWrite,
}

/// The audit line of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// `accepted`, `wrong_code` … ([`Outcome::as_str`]).
    pub outcome: &'static str,
    /// After a recovery code: how many are left.
    pub recovery_codes_left: Option<u64>,
}

/// The whole plan of one check.
#[must_use = "a plan does nothing until the shell carries it out"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPlan {
    /// The decision (outcome, next record, source change); `Err`: refused.
    pub decision: Result<Decision, Refusal>,
    /// Carried out after the commit (or when nothing is written).
    pub effects: Vec<Effect>,
    /// The write stores the fresh recovery codes: show them (once).
    pub recovery_codes_issued: bool,
}

impl VerifyPlan {
    /// The record to commit over the one read (its version is the one
    /// expected), with the source change; `None`: nothing to write.
    pub fn write(&self) -> Option<&Decision> {
        self.decision
            .as_ref()
            .ok()
            .filter(|decision| decision.record.is_some())
    }

    /// The answer on the wire, or the refusal.
    pub fn reply(&self) -> Result<VerifyOutcome, &Refusal> {
        self.decision
            .as_ref()
            .map(|decision| wire_outcome(decision.outcome))
    }

    /// The audit line, or `None` for a refusal (the shell words those).
    pub fn audit(&self) -> Option<Audit> {
        let decision = self.decision.as_ref().ok()?;
        Some(Audit {
            outcome: decision.outcome.as_str(),
            recovery_codes_left: match decision.outcome {
                Outcome::AcceptedRecovery { remaining } => u64::try_from(remaining).ok(),
                _ => None,
            },
        })
    }
}

/// Plans the check of `attempt` on what was `read`, at `now`.
pub fn plan_verify(
    read: VerifyRead<'_>,
    attempt: VerifyAttempt<'_>,
    now: u64,
    rules: &Rules,
) -> VerifyPlan {
    let refused = |refusal| VerifyPlan {
        decision: Err(refusal),
        effects: Vec::new(),
        recovery_codes_issued: false,
    };
    if attempt.purpose == Purpose::Confirm {
        match read.record {
            None => return refused(Refusal::NotEnrolled),
            Some(r) if r.devices().iter().all(|d| d.state == EnrollState::Active) => {
                return refused(Refusal::NothingPending)
            }
            Some(_) => {}
        }
    }
    let source = SourceState {
        key: attempt.source,
        counter: read.counter,
        own: attempt.own,
    };
    let mut decision = match decide(
        read.record,
        &source,
        attempt.code,
        now,
        attempt.purpose,
        rules,
    ) {
        Ok(decision) => decision,
        Err(reason) => return refused(Refusal::UnusableToken(reason)),
    };
    // One confirmation, whoever asks (`otpd confirm`, the page's
    // Validate): every activation of a device comes with a new set of
    // recovery codes, and older ones stop working.
    let mut recovery_codes_issued = false;
    if let (Purpose::Confirm, Outcome::Accepted { .. }, Some(next), Some(fresh)) = (
        attempt.purpose,
        decision.outcome,
        decision.record.as_mut(),
        attempt.fresh_recovery,
    ) {
        next.fallback.recovery = fresh.to_vec();
        recovery_codes_issued = true;
    }
    let mut effects = Vec::new();
    if read.record.is_none() && attempt.purpose == Purpose::Login {
        // The HMACs a user's check would compute, on a decoy, then a
        // durable write: an unknown name takes as long as a wrong code.
        let decoy = UserRecord::decoy();
        let _ = decide(
            Some(&decoy),
            &source,
            attempt.code,
            now,
            attempt.purpose,
            rules,
        );
        effects.push(Effect::DecoyWrite);
    }
    VerifyPlan {
        decision: Ok(decision),
        effects,
        recovery_codes_issued,
    }
}

/// The wire's word for a decision.
pub fn wire_outcome(outcome: Outcome) -> VerifyOutcome {
    match outcome {
        Outcome::Accepted { .. } | Outcome::AcceptedRecovery { .. } | Outcome::AcceptedSms => {
            VerifyOutcome::Accepted
        }
        Outcome::WrongCode => VerifyOutcome::WrongCode,
        Outcome::Replayed => VerifyOutcome::Replayed,
        Outcome::Throttled { retry_after } => VerifyOutcome::Throttled {
            retry_after_secs: retry_after,
        },
        Outcome::NotEnrolled => VerifyOutcome::NotEnrolled,
        Outcome::Pending => VerifyOutcome::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ratelimit::Limits;

    fn rules() -> Rules {
        Rules {
            window: 1,
            hotp_window: 10,
            limits: Limits {
                max_failures: 5,
                base_delay: 1,
                max_delay: 60,
                user_max_failures: 20,
                trusted_source_secs: 86_400,
            },
        }
    }

    fn attempt(purpose: Purpose) -> VerifyAttempt<'static> {
        VerifyAttempt {
            user: "alice",
            code: "123456",
            source: "rhost:192.0.2.1",
            own: false,
            purpose,
            fresh_recovery: None,
        }
    }

    #[test]
    fn an_unknown_login_is_not_enrolled_and_costs_a_decoy_write() {
        let read = VerifyRead {
            record: None,
            counter: None,
        };
        let plan = plan_verify(read, attempt(Purpose::Login), 1_700_000_000, &rules());
        assert_eq!(plan.reply(), Ok(VerifyOutcome::NotEnrolled));
        assert_eq!(plan.effects, [Effect::DecoyWrite]);
        assert!(plan.write().is_none());
        assert_eq!(plan.audit().unwrap().outcome, "not_enrolled");
    }

    #[test]
    fn a_confirmation_needs_a_pending_device() {
        let read = VerifyRead {
            record: None,
            counter: None,
        };
        let plan = plan_verify(read, attempt(Purpose::Confirm), 1_700_000_000, &rules());
        assert_eq!(plan.reply(), Err(&Refusal::NotEnrolled));
        assert!(plan.effects.is_empty() && plan.audit().is_none());
        // The decoy's one device is active.
        let active = UserRecord::decoy();
        let read = VerifyRead {
            record: Some(&active),
            counter: None,
        };
        let plan = plan_verify(read, attempt(Purpose::Confirm), 1_700_000_000, &rules());
        assert_eq!(plan.reply(), Err(&Refusal::NothingPending));
    }

    #[test]
    fn a_wrong_code_is_counted_in_the_write() {
        // The decoy's one device is active.
        let active = UserRecord::decoy();
        let read = VerifyRead {
            record: Some(&active),
            counter: None,
        };
        let plan = plan_verify(read, attempt(Purpose::Login), 1_700_000_000, &rules());
        let write = plan.write().expect("a failure is written");
        assert_eq!(write.record.as_ref().unwrap().user_failures, 1);
        assert!(plan.effects.is_empty());
    }

    #[test]
    fn a_confirmation_that_activates_a_device_stores_the_fresh_recovery_codes() {
        let now = 1_700_000_000;
        let mut device = UserRecord::decoy().devices()[0].clone();
        device.state = EnrollState::Pending;
        device.secret = crate::core::record::SecretBytes::new(b"12345678901234567890".to_vec());
        let pending = UserRecord::new(7, "t".into(), vec![device]).unwrap();
        let code = crate::core::totp::generator(
            b"12345678901234567890",
            otpd_proto::Algorithm::Sha1,
            6,
            30,
            0,
        )
        .unwrap()
        .generate(now);
        let fresh = [CodeHash::new("AAAABBBBCCCC", &[1; 16])];
        let read = VerifyRead {
            record: Some(&pending),
            counter: None,
        };
        let confirm = |code: &str, fresh: Option<&[CodeHash]>| {
            plan_verify(
                read,
                VerifyAttempt {
                    code,
                    fresh_recovery: fresh,
                    ..attempt(Purpose::Confirm)
                },
                now,
                &rules(),
            )
        };
        let plan = confirm(&code.to_string(), Some(&fresh));
        assert_eq!(plan.reply(), Ok(VerifyOutcome::Accepted));
        assert!(plan.recovery_codes_issued);
        let next = plan.write().unwrap().record.as_ref().unwrap();
        assert_eq!(next.fallback.recovery, fresh);
        assert!(next.has_active_device());
        // A wrong code stores none.
        let plan = confirm("000000", Some(&fresh));
        assert!(!plan.recovery_codes_issued);
        assert!(plan
            .write()
            .unwrap()
            .record
            .as_ref()
            .unwrap()
            .fallback
            .recovery
            .is_empty());
    }
}
