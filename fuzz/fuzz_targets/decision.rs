//! The plan of a code check (`otpd::core::plan::plan_verify`, the very
//! function the daemon's handler calls), driven through a sequence of
//! attempts on one user: the record and the source counter of each plan's
//! write are stored, as the handler commits them. The plan itself refuses
//! a confirmation with nothing pending; its answer, audit line and write
//! must be its decision's. (A typed "sms" is the login conversation's
//! business, `core::login`, and `unlock` and the texted code of
//! server/handler/fallback.rs are modelled below.)
//!
//! The fuzzer chooses the token (secret, algorithm, digits, period), the
//! record's state and counters, recovery codes and texted codes, the rules,
//! and every attempt: when, from which source, and what is typed (the real
//! code of a step near now, a recovery code, a texted code, digits, text).
//!
//! Invariants, each attempt:
//! - `decide` never panics and never returns `Err` for a well-formed record;
//! - a pending enrolment at login is `Pending`, and nothing changes, unless
//!   the user had an active device (then a code is needed: design.md §7);
//! - while the source must wait, or the user-wide ceiling holds and the
//!   source is not trusted (a success within `trusted_source_secs`, or the
//!   user's own uid), the answer is `Throttled` with the longer wait,
//!   nothing is written and nothing is counted; so never any accept while
//!   throttled, and never a trusted source held up by the ceiling;
//! - `Accepted { step }`: the typed code is the token's code of `step`,
//!   `step` is within the window around now, `step` is greater than the
//!   last accepted step before the attempt (and than every step accepted
//!   earlier in the sequence), it is the oldest such fresh step, and the
//!   record's `last_accepted_step` becomes `step`;
//! - a recovery code is accepted only at login, only if it was issued and
//!   not used, and is used up; a texted code only at login, only while
//!   issued and unexpired, and all texted codes are then spent;
//! - every accept resets the source's counter; a confirmation kills the
//!   enrolment link, a login leaves it; it resets the user's failures only
//!   when the source was not trusted; a login accept from a source that is
//!   not the user's own uid (nor root's, `uid:0`) makes it trusted; the
//!   replay guard never moves back; a confirmation is never held up by the
//!   per-user ceiling and a failed one counts against its source only;
//! - a typed "sms" is refused by the same gate, and otherwise counts
//!   against the source and the user like a failure;
//! - `Replayed` only for a code valid in the window for a used step and
//!   none fresh; a valid fresh code is never refused; a valid unused
//!   recovery or texted code is refused only as `Replayed` (it also is a
//!   used TOTP code);
//! - a counted failure adds one to the user's and the source's failures at
//!   now; input that cannot be any code changes nothing (text shaped like
//!   a recovery code, for a user who has none, included);
//! - the token itself (secret, algorithm, digits, period, issuer) never
//!   changes, and every write bumps the version by one.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use otpd::core::code::normalize;
use otpd::core::decision::{
    count_failure, gate, Decision, Outcome, Purpose, Rules, SourceChange, SourceState,
};
use otpd::core::plan::{plan_verify, wire_outcome, Refusal, VerifyAttempt, VerifyRead};
use otpd::core::ratelimit::{remaining, Limits};
use otpd::core::record::{
    Device, EnrollState, Fallback, Link, SecretBytes, SmsChallenge, SourceCounter, TokenKind,
    TrustedSource, UserRecord, DEFAULT_DEVICE,
};
use otpd::core::tokens::{
    normalize_any_recovery, normalize_recovery, recovery_code, texted_code, CodeHash,
};
use otpd::core::totp::generator;
use otpd_proto::Algorithm;

/// Sources of attempts (remote hosts or uids); the last is the user's own
/// uid, trusted without a success.
const SOURCES: usize = 4;
/// The source keys (`record::source_of`), by index.
const KEYS: [&str; SOURCES] = ["uid:0", "rhost:192.0.2.1", "rhost:2001:db8::/64", "uid:1000"];
/// The index of the user's own uid.
const OWN: usize = SOURCES - 1;
/// server/handler/fallback.rs: outstanding texted login codes kept.
const MAX_OPEN_TEXTS: usize = 3;

#[derive(Debug, Arbitrary)]
enum Algo {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Arbitrary)]
enum Period {
    P30,
    P60,
    P15,
    P300,
}

#[derive(Debug, Arbitrary)]
struct RecoverySeed {
    symbols: [u8; 12],
    salt: u8,
}

#[derive(Debug, Arbitrary)]
struct TextSeed {
    code: [u8; 4],
    salt: u8,
    /// Seconds of validity left, from the start (negative: expired).
    expires_in: i16,
}

#[derive(Debug, Arbitrary)]
struct SourceSeed {
    failures: u32,
    last_failure_ago: i16,
}

#[derive(Debug, Arbitrary)]
struct Scenario {
    secret: [u8; 16],
    secret_more: Vec<u8>,
    algorithm: Algo,
    eight_digits: bool,
    period: Period,
    pending: bool,
    /// The user had an active device (a replacement or revocation).
    had_active: bool,
    /// Successes of the sources (not the own uid) some seconds ago.
    trusted: [Option<u16>; SOURCES - 1],
    trusted_secs: u16,
    /// Small times near the epoch as well as present-day ones.
    early: bool,
    start: u32,
    /// Relative to the start's step.
    last_accepted: Option<i8>,
    user_failures: u32,
    last_failure_ago: Option<i16>,
    link: bool,
    recovery: Vec<RecoverySeed>,
    /// The recovery codes drawn for a confirmation (the handler draws
    /// them before the plan; an activation stores them).
    fresh_recovery: Vec<RecoverySeed>,
    texts: Vec<TextSeed>,
    sources: [Option<SourceSeed>; SOURCES],
    window: u8,
    max_failures: u8,
    base_delay: u16,
    extra_delay: u16,
    user_max_failures: u8,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
struct Step {
    /// Seconds since the previous attempt (the clock may go back, too).
    advance: i16,
    action: Action,
}

#[derive(Debug, Arbitrary)]
enum Action {
    Login {
        source: u8,
        typed: Typed,
    },
    Confirm {
        typed: Typed,
    },
    /// `otpd unlock USER`.
    Unlock,
    /// The user typed "sms": a code is texted.
    Text {
        source: u8,
        code: [u8; 4],
        salt: u8,
        lifetime: u16,
    },
}

#[derive(Debug, Arbitrary)]
enum Typed {
    /// The token's code of the step `offset` from now's.
    Totp { offset: i8, spaced: bool },
    /// One of the recovery codes ever issued, in one of the typed forms.
    Recovery { index: u8, form: u8 },
    /// One of the texted codes ever issued.
    Texted { index: u8 },
    /// Digits, probably wrong.
    Number(u32),
    /// Anything at all.
    Text(String),
}

/// The model the invariants are checked against, kept beside the record.
struct Model {
    record: UserRecord,
    sources: [Option<SourceCounter>; SOURCES],
    rules: Rules,
    now: u64,
    /// Recovery codes issued and not yet used (canonical form).
    recovery_unused: Vec<String>,
    recovery_issued: Vec<String>,
    /// The codes a confirmation stores when it activates: (canonical
    /// codes, their hashes).
    fresh_recovery: (Vec<String>, Vec<CodeHash>),
    /// Texted login codes outstanding: (code, expires).
    texts_open: Vec<(String, u64)>,
    texts_issued: Vec<String>,
    /// The greatest step ever accepted in this sequence.
    max_accepted: Option<u64>,
    totp: totp_rs::Totp,
}

impl Model {
    fn code_of(&self, step: u64) -> String {
        self.totp
            .generate(step * self.record.first_device().period)
            .to_string()
    }

    /// The steps of the window around now whose code is `code`.
    fn matching_steps(&self, code: &str) -> Vec<u64> {
        let origin = self.now / self.record.first_device().period;
        let window = u64::from(self.rules.window);
        (origin.saturating_sub(window)..=origin + window)
            .filter(|&s| self.code_of(s) == code)
            .collect()
    }

    /// Whether the per-user ceiling spares `source`.
    fn trusted(&self, source: usize) -> bool {
        source == OWN
            || self.record.trusted_sources.iter().any(|t| {
                t.source == KEYS[source]
                    && self.now.abs_diff(t.last_success) <= self.rules.limits.trusted_source_secs
            })
    }

    fn state(&self, source: usize) -> SourceState<'_> {
        SourceState {
            key: KEYS[source],
            counter: self.sources[source].as_ref(),
            own: source == OWN,
        }
    }

    /// The wait for an attempt from `source` for `purpose` (the per-user
    /// ceiling holds up only logins from sources that are not trusted).
    fn wait(&self, source: usize, purpose: Purpose) -> Option<u64> {
        let limits = &self.rules.limits;
        let source_wait = self.sources[source].and_then(|s| {
            remaining(
                s.failures,
                s.last_failure,
                limits.max_failures,
                limits,
                self.now,
            )
        });
        let user_wait = self.record.last_failure.and_then(|last| {
            remaining(
                self.record.user_failures,
                last,
                limits.user_max_failures,
                limits,
                self.now,
            )
        });
        source_wait.max(user_wait.filter(|_| purpose == Purpose::Login && !self.trusted(source)))
    }

    fn typed_text(&self, typed: &Typed) -> String {
        match typed {
            Typed::Totp { offset, spaced } => {
                let step = (self.now / self.record.first_device().period)
                    .saturating_add_signed(i64::from(*offset % 13));
                let code = self.code_of(step);
                if *spaced {
                    let (a, b) = code.split_at(code.len() / 2);
                    format!(" {a} {b}\n")
                } else {
                    code
                }
            }
            Typed::Recovery { index, form } => {
                let Some(code) = pick(&self.recovery_issued, *index) else {
                    return "2345-6789-ABCD".into();
                };
                let dashed = format!("{}-{}-{}", &code[..4], &code[4..8], &code[8..]);
                match form % 4 {
                    0 => code.clone(),
                    1 => dashed,
                    2 => dashed.to_ascii_lowercase(),
                    _ => format!("  {} {} {} ", &code[..4], &code[4..8], &code[8..]),
                }
            }
            Typed::Texted { index } => pick(&self.texts_issued, *index)
                .cloned()
                .unwrap_or_else(|| "000000".into()),
            Typed::Number(n) => {
                let modulus = 10u32.pow(u32::from(self.record.first_device().digits));
                format!(
                    "{:0width$}",
                    n % modulus,
                    width = usize::from(self.record.first_device().digits)
                )
            }
            Typed::Text(text) => text.clone(),
        }
    }

    fn attempt(&mut self, source: usize, typed: &str, purpose: Purpose) {
        let before = self.record.clone();
        let source_before = self.sources[source];
        let trusted_before = self.trusted(source);
        let state = self.state(source);
        let plan = plan_verify(
            VerifyRead {
                record: Some(&before),
                counter: state.counter,
            },
            VerifyAttempt {
                user: "fuzz",
                code: typed,
                source: state.key,
                own: state.own,
                purpose,
                fresh_recovery: (purpose == Purpose::Confirm).then_some(&self.fresh_recovery.1[..]),
            },
            self.now,
            &self.rules,
        );
        // A known user never costs a decoy write.
        assert!(plan.effects.is_empty(), "{:?}", plan.effects);
        if purpose == Purpose::Confirm
            && before.devices().iter().all(|d| d.state == EnrollState::Active)
        {
            // Nothing to confirm: refused before any code is looked at.
            assert_eq!(plan.reply(), Err(&Refusal::NothingPending));
            assert!(plan.write().is_none() && plan.audit().is_none());
            return;
        }
        let decision = plan
            .decision
            .clone()
            .unwrap_or_else(|e| panic!("the plan refused a well-formed record: {e:?}"));
        // The answer, the audit line and the write are the decision's.
        assert_eq!(plan.reply(), Ok(wire_outcome(decision.outcome)));
        let audit = plan.audit().expect("every decision is audited");
        assert_eq!(audit.outcome, decision.outcome.as_str());
        assert_eq!(
            audit.recovery_codes_left.is_some(),
            matches!(decision.outcome, Outcome::AcceptedRecovery { .. })
        );
        assert_eq!(plan.write().is_some(), decision.record.is_some());

        if before.first_device().state == EnrollState::Pending
            && !before.had_active_device
            && purpose == Purpose::Login
        {
            assert_eq!(decision, unchanged(Outcome::Pending));
            return;
        }
        if let Some(wait) = self.wait(source, purpose) {
            assert_eq!(
                decision,
                unchanged(Outcome::Throttled { retry_after: wait }),
                "not refused while the source or the user must wait"
            );
            assert!(wait >= 1 && wait <= self.rules.limits.max_delay);
            return;
        }
        assert!(
            !matches!(
                decision.outcome,
                Outcome::Throttled { .. } | Outcome::Pending | Outcome::NotEnrolled
            ),
            "{decision:?} without a reason"
        );

        let login = purpose == Purpose::Login;
        // The token takes codes at login when active, at confirm when pending.
        let usable = (before.first_device().state == EnrollState::Active) == login;
        let totp = normalize(typed, before.first_device().digits)
            .filter(|_| usable)
            .map(|c| c.as_str().to_owned());
        let texted = normalize(typed, 6).map(|c| c.as_str().to_owned());
        let recovery = normalize_any_recovery(typed).map(|c| c.as_str().to_owned());
        let texts_valid = login && self.texts_open.iter().any(|(_, e)| self.now <= *e);
        let matches = totp
            .as_ref()
            .map(|c| self.matching_steps(c))
            .unwrap_or_default();
        let last = before.first_device().last_accepted_step;
        let fresh: Vec<u64> = matches
            .iter()
            .copied()
            .filter(|&s| last.is_none_or(|l| s > l))
            .collect();
        let text_hit = texted.as_ref().filter(|_| login).is_some_and(|code| {
            self.texts_open
                .iter()
                .any(|(c, e)| c == code && self.now <= *e)
        });
        let recovery_hit = recovery
            .as_ref()
            .filter(|_| login)
            .is_some_and(|code| self.recovery_unused.contains(code));

        // A valid fresh code is never refused.
        if !fresh.is_empty() {
            assert!(
                matches!(decision.outcome, Outcome::Accepted { .. }),
                "a fresh code for steps {fresh:?} was refused: {decision:?}"
            );
        } else if text_hit || recovery_hit {
            assert!(
                matches!(
                    decision.outcome,
                    Outcome::AcceptedSms | Outcome::AcceptedRecovery { .. } | Outcome::Replayed
                ),
                "a valid fallback code was refused: {decision:?}"
            );
        }

        match decision.outcome {
            Outcome::Accepted { .. } | Outcome::AcceptedRecovery { .. } | Outcome::AcceptedSms => {
                let next = decision.record.as_ref().expect("an accept is written");
                assert_eq!(decision.source, SourceChange::Reset);
                if trusted_before {
                    assert_eq!(next.user_failures, before.user_failures);
                    assert_eq!(next.last_failure, before.last_failure);
                } else {
                    assert_eq!(next.user_failures, 0);
                    assert_eq!(next.last_failure, None);
                }
                if login
                    && source != OWN
                    && KEYS[source] != "uid:0"
                    && self.rules.limits.trusted_source_secs > 0
                {
                    assert!(next.trusted_sources.iter().any(|t| t.source == KEYS[source]
                        && t.last_success == self.now));
                }
                assert_eq!(next.last_success, Some(self.now));
                if login {
                    assert_eq!(next.fallback.link, before.fallback.link, "a login killed the link");
                } else {
                    assert!(next.fallback.link.is_none(), "the link outlives its confirmation");
                }
                same_token(&before, next);
            }
            Outcome::WrongCode | Outcome::Replayed => {}
            other => panic!("unexpected {other:?}"),
        }

        match decision.outcome {
            Outcome::Accepted { step } => {
                assert!(
                    last.is_none_or(|l| step > l),
                    "step {step} accepted again (last accepted {last:?})"
                );
                assert!(
                    self.max_accepted.is_none_or(|m| step > m),
                    "step {step} accepted after step {:?}",
                    self.max_accepted
                );
                assert_eq!(fresh.first(), Some(&step), "not the oldest fresh step");
                let code = totp.as_ref().expect("an accepted TOTP code is a code");
                assert_eq!(&self.code_of(step), code);
                let next = decision.record.as_ref().unwrap();
                assert_eq!(next.first_device().last_accepted_step, Some(step));
                assert_eq!(next.first_device().state, EnrollState::Active);
                if login {
                    assert!(!plan.recovery_codes_issued);
                    assert_eq!(next.fallback.recovery, before.fallback.recovery);
                } else {
                    // Every activation comes with the codes drawn for it;
                    // the older ones stop working.
                    assert!(plan.recovery_codes_issued);
                    assert_eq!(next.fallback.recovery, self.fresh_recovery.1);
                    self.recovery_issued = self.fresh_recovery.0.clone();
                    self.recovery_unused = self.fresh_recovery.0.clone();
                }
                self.max_accepted = Some(step);
            }
            Outcome::AcceptedRecovery { remaining } => {
                assert!(login, "a recovery code at confirm");
                assert!(recovery_hit, "an unknown or used recovery code accepted");
                let code = recovery.clone().unwrap();
                let next = decision.record.as_ref().unwrap();
                assert_eq!(
                    next.first_device().last_accepted_step,
                    last,
                    "the replay guard moved"
                );
                assert_eq!(remaining, next.fallback.recovery.len());
                assert_eq!(remaining + 1, before.fallback.recovery.len());
                let at = self.recovery_unused.iter().position(|c| *c == code);
                self.recovery_unused.remove(at.unwrap());
                let still = |r: &UserRecord| {
                    r.fallback
                        .recovery
                        .iter()
                        .filter(|h| h.matches(&code))
                        .count()
                };
                assert_eq!(still(next) + 1, still(&before), "not used up");
            }
            Outcome::AcceptedSms => {
                assert!(login, "a texted code at confirm");
                assert!(text_hit, "an unknown or expired texted code accepted");
                let next = decision.record.as_ref().unwrap();
                assert_eq!(
                    next.first_device().last_accepted_step,
                    last,
                    "the replay guard moved"
                );
                assert!(
                    next.fallback.sms.is_empty(),
                    "texted codes outlive an accept"
                );
                assert_eq!(next.fallback.recovery, before.fallback.recovery);
                self.texts_open.clear();
            }
            Outcome::Replayed => {
                assert!(!matches.is_empty() && fresh.is_empty(), "replayed what?");
            }
            Outcome::WrongCode => {
                assert!(matches.is_empty(), "a valid code called wrong: {matches:?}");
            }
            _ => unreachable!(),
        }

        if matches!(decision.outcome, Outcome::WrongCode | Outcome::Replayed) {
            match &decision.record {
                None => {
                    // Not counted: only for input that can be no code at all.
                    assert_eq!(decision, unchanged(Outcome::WrongCode));
                    assert!(totp.is_none(), "a well-formed code was not counted");
                    assert!(!texts_valid || texted.is_none());
                    assert!(!login || recovery.is_none() || before.fallback.recovery.is_empty());
                }
                Some(next) if login => {
                    assert_eq!(next.user_failures, before.user_failures.saturating_add(1));
                    assert_eq!(next.last_failure, Some(self.now));
                    assert_eq!(next.first_device().last_accepted_step, last);
                    assert_eq!(next.first_device().state, before.first_device().state);
                    assert_eq!(next.fallback, before.fallback);
                    assert_eq!(next.last_success, before.last_success);
                    same_token(&before, next);
                    assert_eq!(
                        decision.source,
                        SourceChange::Set(SourceCounter {
                            failures: source_before.map_or(0, |s| s.failures).saturating_add(1),
                            last_failure: self.now,
                        })
                    );
                }
                // A failed confirmation counts against its source only.
                Some(next) => {
                    assert_eq!(next.user_failures, before.user_failures);
                    assert_eq!(next.last_failure, before.last_failure);
                    assert_eq!(
                        decision.source,
                        SourceChange::Set(SourceCounter {
                            failures: source_before.map_or(0, |s| s.failures).saturating_add(1),
                            last_failure: self.now,
                        })
                    );
                }
            }
        }

        // Carry the decision out as the handler does.
        if let Some(next) = decision.record {
            assert_eq!(next.version, before.version.wrapping_add(1));
            self.record = next;
        }
        match decision.source {
            SourceChange::Keep => {}
            SourceChange::Reset => self.sources[source] = None,
            SourceChange::Set(counter) => self.sources[source] = Some(counter),
        }
    }

    /// `otpd unlock`: server/handler/mod.rs `unlock` and `rewrite`.
    fn unlock(&mut self) {
        let mut next = self.record.clone();
        next.version = next.version.wrapping_add(1);
        next.user_failures = 0;
        next.last_failure = None;
        self.record = next;
        self.sources = [None; SOURCES];
    }

    /// A typed "sms": server/handler/fallback.rs `login_sms`: the gate,
    /// then the request counted like a failure, with the texted code.
    fn text(&mut self, source: usize, code: &[u8; 4], salt: u8, lifetime: u16) {
        let gated = gate(
            Some(&self.record),
            &self.state(source),
            self.now,
            Purpose::Login,
            &self.rules,
        );
        let pending = self.record.first_device().state == EnrollState::Pending
            && !self.record.had_active_device;
        match self.wait(source, Purpose::Login) {
            _ if pending => assert_eq!(gated, Err(Outcome::Pending)),
            Some(wait) => assert_eq!(gated, Err(Outcome::Throttled { retry_after: wait })),
            None => assert_eq!(gated, Ok(())),
        }
        if gated.is_err() {
            return;
        }
        let (counted, change) = count_failure(&self.record, &self.state(source), self.now);
        assert_eq!(counted.user_failures, self.record.user_failures.saturating_add(1));
        assert_eq!(counted.last_failure, Some(self.now));
        let failures = self.sources[source].map_or(0, |s| s.failures).saturating_add(1);
        assert_eq!(
            change,
            SourceChange::Set(SourceCounter {
                failures,
                last_failure: self.now
            })
        );
        self.record = counted;
        self.sources[source] = Some(SourceCounter {
            failures,
            last_failure: self.now,
        });
        let code = texted_code(code).as_str().to_owned();
        let expires = self.now.saturating_add(60 + u64::from(lifetime % 3541));
        let challenge = SmsChallenge {
            code: CodeHash::new(&code, &[salt; 16]),
            expires,
            number: None,
            tries: 0,
        };
        let mut next = self.record.clone();
        let now = self.now;
        next.fallback.sms.retain(|c| now <= c.expires);
        next.fallback.sms.push(challenge);
        let excess = next.fallback.sms.len().saturating_sub(MAX_OPEN_TEXTS);
        next.fallback.sms.drain(..excess);
        self.record = next;
        self.texts_open.retain(|(_, e)| now <= *e);
        self.texts_open.push((code.clone(), expires));
        self.texts_open.drain(..excess);
        self.texts_issued.push(code);
    }
}

fn pick<T>(items: &[T], index: u8) -> Option<&T> {
    (!items.is_empty()).then(|| &items[usize::from(index) % items.len()])
}

fn unchanged(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        record: None,
        source: SourceChange::Keep,
    }
}

fn same_token(before: &UserRecord, next: &UserRecord) {
    let (b, n) = (before.first_device(), next.first_device());
    assert_eq!(n.secret, b.secret);
    assert_eq!(n.algorithm, b.algorithm);
    assert_eq!(n.digits, b.digits);
    assert_eq!(n.period, b.period);
    assert_eq!(next.issuer, before.issuer);
    assert_eq!(n.created, b.created);
    assert_eq!(next.fallback.phone, before.fallback.phone);
    assert_eq!(next.fallback.sms_register, before.fallback.sms_register);
}

/// Up to ten recovery codes from their seeds: the canonical codes and
/// their salted hashes, as the handler stores them.
fn recovery_codes(seeds: &[RecoverySeed]) -> (Vec<String>, Vec<CodeHash>) {
    seeds
        .iter()
        .take(10)
        .map(|r| {
            let code = normalize_recovery(&recovery_code(&r.symbols))
                .expect("a recovery code")
                .as_str()
                .to_owned();
            let hash = CodeHash::new(&code, &[r.salt; 16]);
            (code, hash)
        })
        .unzip()
}

fn run(s: Scenario) {
    let mut secret = s.secret.to_vec();
    secret.extend(s.secret_more.iter().take(48));
    let algorithm = match s.algorithm {
        Algo::Sha1 => Algorithm::Sha1,
        Algo::Sha256 => Algorithm::Sha256,
        Algo::Sha512 => Algorithm::Sha512,
    };
    let digits = if s.eight_digits { 8 } else { 6 };
    let period = match s.period {
        Period::P30 => 30,
        Period::P60 => 60,
        Period::P15 => 15,
        Period::P300 => 300,
    };
    // Present-day clocks, and (rarely useful, but allowed) ones near 1970.
    let now = if s.early {
        u64::from(s.start % 100_000)
    } else {
        1_500_000_000 + u64::from(s.start)
    };
    let ago = |secs: i16| now.saturating_add_signed(-i64::from(secs));

    let (recovery_issued, recovery_hashes) = recovery_codes(&s.recovery);
    let (fresh_codes, fresh_hashes) = recovery_codes(&s.fresh_recovery);
    let mut texts_open = Vec::new();
    let mut sms = Vec::new();
    for t in s.texts.iter().take(MAX_OPEN_TEXTS) {
        let code = texted_code(&t.code).as_str().to_owned();
        let expires = now.saturating_add_signed(i64::from(t.expires_in));
        sms.push(SmsChallenge {
            code: CodeHash::new(&code, &[t.salt; 16]),
            expires,
            number: None,
            tries: 0,
        });
        texts_open.push((code, expires));
    }
    let texts_issued = texts_open.iter().map(|(c, _)| c.clone()).collect();

    let device = Device {
        name: DEFAULT_DEVICE.to_owned(),
        state: if s.pending {
            EnrollState::Pending
        } else {
            EnrollState::Active
        },
        kind: TokenKind::Totp,
        secret: SecretBytes::new(secret.clone()),
        algorithm,
        digits,
        period,
        created: now.saturating_sub(86_400),
        last_accepted_step: s
            .last_accepted
            .map(|o| (now / period).saturating_add_signed(i64::from(o))),
        window: None,
        replaces: None,
    };
    let mut record = UserRecord::new(
        u64::from(s.start).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        "fuzz".into(),
        vec![device],
    )
    .expect("one device");
    record.user_failures = s.user_failures;
    record.last_failure = s.last_failure_ago.map(ago);
    record.fallback = Fallback {
        link: s.link.then(|| Link {
            token_hash: "00".repeat(32),
            expires: now + 3600,
            ..Link::default()
        }),
        recovery: recovery_hashes,
        sms,
        ..Fallback::default()
    };
    record.had_active_device = s.had_active;
    record.trusted_sources = s
        .trusted
        .iter()
        .enumerate()
        .filter_map(|(i, ago)| {
            ago.map(|ago| TrustedSource {
                source: KEYS[i].to_owned(),
                last_success: now.saturating_sub(u64::from(ago)),
            })
        })
        .collect();
    let base_delay = u64::from(s.base_delay.max(1));
    let rules = Rules {
        window: u16::from(s.window % 11),
        hotp_window: 10,
        limits: Limits {
            max_failures: u32::from(s.max_failures.max(1)),
            base_delay,
            max_delay: base_delay + u64::from(s.extra_delay),
            user_max_failures: u32::from(s.user_max_failures.max(1)),
            trusted_source_secs: u64::from(s.trusted_secs),
        },
    };
    let sources = s.sources.map(|seed| {
        seed.map(|seed| SourceCounter {
            failures: seed.failures,
            last_failure: ago(seed.last_failure_ago),
        })
    });
    let totp = generator(&secret, algorithm, digits, period, 0).expect("a valid token");
    let mut model = Model {
        record,
        sources,
        rules,
        now,
        recovery_unused: recovery_issued.clone(),
        recovery_issued,
        fresh_recovery: (fresh_codes, fresh_hashes),
        texts_open,
        texts_issued,
        max_accepted: None,
        totp,
    };

    for step in s.steps.iter().take(64) {
        model.now = model.now.saturating_add_signed(i64::from(step.advance));
        match &step.action {
            Action::Login { source, typed } => {
                let typed = model.typed_text(typed);
                if typed.trim().eq_ignore_ascii_case("sms") {
                    continue;
                }
                model.attempt(usize::from(*source) % SOURCES, &typed, Purpose::Login);
            }
            Action::Confirm { typed } => {
                let typed = model.typed_text(typed);
                // `otpd confirm` comes from the admin's own uid.
                model.attempt(0, &typed, Purpose::Confirm);
            }
            Action::Unlock => model.unlock(),
            Action::Text {
                source,
                code,
                salt,
                lifetime,
            } => model.text(usize::from(*source) % SOURCES, code, *salt, *lifetime),
        }
    }
}

fuzz_target!(|scenario: Scenario| run(scenario));
