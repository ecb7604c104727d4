//! The one decision: accept this code for this user at this time, given the
//! stored record and the caller's source counter?

use crate::core::code;
use crate::core::ratelimit::{remaining, Limits};
use crate::core::record::{
    can_be_trusted, EnrollState, Fallback, Replaces, SourceCounter, TokenKind, UserRecord,
};
use crate::core::tokens::normalize_any_recovery;
use crate::core::totp::{match_device, CodeMatch};

/// What was decided about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid and fresh; `step` is now used.
    Accepted {
        /// The accepted time step.
        step: u64,
    },
    /// A recovery code, now used up.
    AcceptedRecovery {
        /// Recovery codes the user has left.
        remaining: usize,
    },
    /// The code texted to the user's phone, now used up.
    AcceptedSms,
    /// Not a valid code (including malformed input).
    WrongCode,
    /// Valid for a step already used.
    Replayed,
    /// In backoff: refused without looking at the code.
    Throttled {
        /// Seconds until an attempt is allowed again.
        retry_after: u64,
    },
    /// No enrolment.
    NotEnrolled,
    /// Enrolment not yet confirmed (login only).
    Pending,
}

impl Outcome {
    /// The name used in audit lines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::AcceptedRecovery { .. } => "accepted_recovery_code",
            Outcome::AcceptedSms => "accepted_sms_code",
            Outcome::WrongCode => "wrong_code",
            Outcome::Replayed => "replayed",
            Outcome::Throttled { .. } => "throttled",
            Outcome::NotEnrolled => "not_enrolled",
            Outcome::Pending => "pending",
        }
    }
}

/// Why a code is being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A login or `otpd verify`: the enrolment must be active.
    Login,
    /// The first code of a pending enrolment (`otpd confirm`, "Validate").
    Confirm,
}

/// What to do with the caller's source counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChange {
    /// Leave it as it is.
    Keep,
    /// Delete it (a success from this source).
    Reset,
    /// Store this value.
    Set(SourceCounter),
}

/// The decision and the writes that carry it out. When `record` is `Some`,
/// it must be stored only if the stored version still equals the one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to tell the caller.
    pub outcome: Outcome,
    /// The new user record (version already bumped), or `None` for no write.
    pub record: Option<UserRecord>,
    /// The caller's source counter.
    pub source: SourceChange,
}

impl Decision {
    fn unchanged(outcome: Outcome) -> Self {
        Self {
            outcome,
            record: None,
            source: SourceChange::Keep,
        }
    }
}

/// Settings the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// TOTP: steps accepted either side of now.
    pub window: u16,
    /// HOTP: counter values looked ahead of the next one.
    pub hotp_window: u16,
    /// Rate limits.
    pub limits: Limits,
}

/// The caller's rate-limit source (design.md §2), as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceState<'a> {
    /// Its key ([`crate::core::record::source_of`]).
    pub key: &'a str,
    /// Its failure counter, if it has one.
    pub counter: Option<&'a SourceCounter>,
    /// A local login by the user's own uid (a screen locker, the user's
    /// own sudo or su): a stranger cannot be this source, so it is trusted
    /// without a success first.
    pub own: bool,
}

impl<'a> SourceState<'a> {
    /// A source that is not the user's own uid.
    pub fn new(key: &'a str, counter: Option<&'a SourceCounter>) -> Self {
        Self {
            key,
            counter,
            own: false,
        }
    }
}

/// Whether the attempt may go on, before the code is looked at: `Err` with
/// the refusal for an unknown user, a pending one (login), or a source that
/// must wait. A refusal here changes nothing, so that a throttled stranger
/// cannot lengthen the wait.
///
/// The per-user ceiling (`user_max_failures`) applies only to sources that
/// have not proven themselves for this user (design.md §2): a source with a
/// success within `trusted_source_secs`, or the user's own uid, waits only
/// for its own failures. One source can lock out only itself.
pub fn gate(
    record: Option<&UserRecord>,
    source: &SourceState<'_>,
    now: u64,
    purpose: Purpose,
    rules: &Rules,
) -> Result<(), Outcome> {
    let Some(record) = record else {
        return Err(Outcome::NotEnrolled);
    };
    if purpose == Purpose::Login && !record.factor_required() {
        // Never had an active device: `nullok` may let this user through.
        return Err(Outcome::Pending);
    }
    let (source_wait, user_wait) = waits(record, source, now, purpose, rules);
    match source_wait.max(user_wait) {
        Some(retry_after) => Err(Outcome::Throttled { retry_after }),
        None => Ok(()),
    }
}

/// The seconds `source` must still wait for its own failures, and those
/// the per-user ceiling imposes on it, as [`gate`] weighs them.
fn waits(
    record: &UserRecord,
    source: &SourceState<'_>,
    now: u64,
    purpose: Purpose,
    rules: &Rules,
) -> (Option<u64>, Option<u64>) {
    let limits = &rules.limits;
    let source_wait = source
        .counter
        .and_then(|s| remaining(s.failures, s.last_failure, limits.max_failures, limits, now));
    // The ceiling guards logins. A confirmation ("Validate", `otpd
    // confirm`) is not held up by it: it needs root or the link's token,
    // and a stranger's guesses at logins must not keep the user from
    // confirming a new device (a lost phone replaced with --revoke).
    let user_wait = if purpose == Purpose::Confirm || trusted(record, source, now, rules) {
        None
    } else {
        record.last_failure.and_then(|last| {
            remaining(
                record.user_failures,
                last,
                limits.user_max_failures,
                limits,
                now,
            )
        })
    };
    (source_wait, user_wait)
}

/// Which limits hold back an attempt that [`gate`] throttles: the
/// source's own backoff, the per-user ceiling (either, or both). For the
/// metrics: the decision itself does not tell them apart.
pub fn throttled_by(
    record: Option<&UserRecord>,
    source: &SourceState<'_>,
    now: u64,
    purpose: Purpose,
    rules: &Rules,
) -> (bool, bool) {
    match record {
        Some(record) => {
            let (source_wait, user_wait) = waits(record, source, now, purpose, rules);
            (source_wait.is_some(), user_wait.is_some())
        }
        None => (false, false),
    }
}

/// Whether the per-user ceiling spares `source`: the user's own uid, or a
/// success from it within `trusted_source_secs`.
pub fn trusted(record: &UserRecord, source: &SourceState<'_>, now: u64, rules: &Rules) -> bool {
    source.own || record.trusts(source.key, now, rules.limits.trusted_source_secs)
}

/// `record` after a failed login (or a request that counts as one, like
/// `sms`) from `source` at `now`: the per-user count and the source's own.
pub fn count_failure(
    record: &UserRecord,
    source: &SourceState<'_>,
    now: u64,
) -> (UserRecord, SourceChange) {
    count(record, source, now, Purpose::Login)
}

/// [`count_failure`] for `purpose`: a failed confirmation counts against
/// its source only, as only its source is held up for it.
fn count(
    record: &UserRecord,
    source: &SourceState<'_>,
    now: u64,
    purpose: Purpose,
) -> (UserRecord, SourceChange) {
    let mut next = record.clone();
    next.version = record.version.wrapping_add(1);
    if purpose == Purpose::Login {
        next.user_failures = record.user_failures.saturating_add(1);
        next.last_failure = Some(now);
    }
    let failures = source.counter.map_or(0, |s| s.failures).saturating_add(1);
    (
        next,
        SourceChange::Set(SourceCounter {
            failures,
            last_failure: now,
        }),
    )
}

/// `record` after a login that succeeded without a code (approved on a
/// phone) from `source` at `now`: the same bookkeeping as an accepted code.
pub fn count_success(
    record: &UserRecord,
    source: &SourceState<'_>,
    now: u64,
    rules: &Rules,
) -> (UserRecord, SourceChange) {
    let mut next = record.clone();
    next.version = record.version.wrapping_add(1);
    note_success(&mut next, record, source, now, rules, true);
    (next, SourceChange::Reset)
}

/// Notes a success in `next` (the record after the attempt; `record` as
/// read).
fn note_success(
    next: &mut UserRecord,
    record: &UserRecord,
    source: &SourceState<'_>,
    now: u64,
    rules: &Rules,
    login: bool,
) {
    next.last_success = Some(now);
    // A source that had not proven itself has now: the per-user count
    // starts again. A trusted source's success leaves it, so that the real
    // user's logins from home do not hand a stranger elsewhere a fresh set
    // of free guesses.
    if !trusted(record, source, now, rules) {
        next.user_failures = 0;
        next.last_failure = None;
    }
    if login && !source.own && can_be_trusted(source.key) {
        next.remember_source(source.key, now, rules.limits.trusted_source_secs);
    }
}

/// Decides one attempt. Pure: the same inputs give the same decision.
///
/// Order matters: the gate first (nothing is counted for unknown users, and
/// a throttled attempt is refused whether the code is right or wrong, and
/// is not counted, so a stranger cannot lengthen the wait), then the code
/// itself.
pub fn decide(
    record: Option<&UserRecord>,
    source: &SourceState<'_>,
    typed_code: &str,
    now: u64,
    purpose: Purpose,
    rules: &Rules,
) -> Result<Decision, String> {
    if let Err(outcome) = gate(record, source, now, purpose, rules) {
        return Ok(Decision::unchanged(outcome));
    }
    let Some(record) = record else {
        return Ok(Decision::unchanged(Outcome::NotEnrolled));
    };
    let login = purpose == Purpose::Login;

    // The devices this code may belong to: the active ones for a login,
    // the pending ones for a confirmation ("Validate").
    let mut devices = record.devices().to_vec();
    let wanted = if login {
        EnrollState::Active
    } else {
        EnrollState::Pending
    };
    let candidates: Vec<(usize, zeroize::Zeroizing<String>)> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.state == wanted)
        .filter_map(|(i, d)| code::normalize(typed_code, d.digits).map(|c| (i, c)))
        .collect();

    // What the typed text can be: a code of a device; during a login also
    // a texted code (six digits, while one is outstanding) or a recovery
    // code (otpd's own or an imported scratch code). Something that can be
    // none of them (letters, wrong length) is a wrong code that changes
    // nothing (design.md §6): it cannot be a guess, so it need not be
    // counted.
    let sms_open = login && record.fallback.sms.iter().any(|c| now <= c.expires);
    let sms_code = if sms_open {
        code::normalize(typed_code, 6)
    } else {
        None
    };
    // Only a guess when there is something it can hit: a user without
    // recovery codes (a revocation removes them) is not held up, nor are
    // strangers helped to the ceiling, by text shaped like one.
    let recovery = if login && !record.fallback.recovery.is_empty() {
        normalize_any_recovery(typed_code)
    } else {
        None
    };
    if candidates.is_empty() && sms_code.is_none() && recovery.is_none() {
        return Ok(Decision::unchanged(Outcome::WrongCode));
    }

    let mut next = record.clone();
    next.version = record.version.wrapping_add(1);
    // Every candidate device is checked (replay state is per device). A
    // code that is used on any of them is refused even if another would
    // take it as fresh: two devices may share a key (a usersfile can list
    // one token twice), and a code must be good once per user.
    let mut matches = Vec::with_capacity(candidates.len());
    for (i, code) in &candidates {
        let device = &devices[*i];
        let window = device.window.unwrap_or(match device.kind {
            TokenKind::Totp => rules.window,
            TokenKind::Hotp => rules.hotp_window,
        });
        matches.push((*i, match_device(device, code, now, window)?));
    }
    let matched = if matches.iter().any(|(_, m)| *m == CodeMatch::Used) {
        CodeMatch::Used
    } else if let Some((i, step)) = matches.iter().find_map(|(i, m)| match m {
        CodeMatch::Fresh { step } => Some((*i, *step)),
        _ => None,
    }) {
        devices[i].state = EnrollState::Active;
        devices[i].last_accepted_step = Some(step);
        let replaces = devices[i].replaces.take();
        if replaces.is_some() {
            // The replaced device goes: whatever it let be remembered ends.
            next.remembered.clear();
        }
        match replaces {
            None => {}
            // A new enrolment that replaces the whole old one (`enroll
            // --force`): only now, with its first code, does the old one go.
            Some(Replaces::All) => {
                let confirmed = devices.swap_remove(i);
                devices = vec![confirmed];
                next.fallback = Fallback {
                    sms_sent: record.fallback.sms_sent.clone(),
                    register_sent: record.fallback.register_sent.clone(),
                    ..Fallback::default()
                };
                // The paired phones go with the old enrolment.
                next.approvals = record.approvals.afresh();
            }
            Some(Replaces::Device(name)) => {
                let mut j = 0;
                devices.retain(|d| {
                    let keep = j == i || d.state != EnrollState::Active || d.name != name;
                    j += 1;
                    keep
                });
            }
        }
        next.set_devices(devices)?;
        CodeMatch::Fresh { step }
    } else {
        CodeMatch::NoMatch
    };
    let outcome = match matched {
        CodeMatch::Fresh { step } => Some(Outcome::Accepted { step }),
        CodeMatch::Used => None,
        CodeMatch::NoMatch => {
            if let Some(code) = &sms_code {
                // Every outstanding code is compared, in constant time.
                let hits: Vec<bool> = record
                    .fallback
                    .sms
                    .iter()
                    .map(|c| now <= c.expires && c.code.matches(code))
                    .collect();
                hits.contains(&true).then(|| {
                    next.fallback.sms.clear();
                    Outcome::AcceptedSms
                })
            } else if let Some(code) = &recovery {
                // Every stored code is compared, so the time taken does not
                // tell which one matched.
                let found = record
                    .fallback
                    .recovery
                    .iter()
                    .map(|hash| hash.matches(code))
                    .fold((None, 0), |(found, i), hit| {
                        (
                            if hit && found.is_none() {
                                Some(i)
                            } else {
                                found
                            },
                            i + 1,
                        )
                    })
                    .0;
                found.map(|i| {
                    next.fallback.recovery.remove(i);
                    Outcome::AcceptedRecovery {
                        remaining: next.fallback.recovery.len(),
                    }
                })
            } else {
                None
            }
        }
    };
    match outcome {
        Some(outcome) => {
            // A self-enrolment link dies with the code that confirms its
            // device; a login with another device (the one a replacement
            // keeps working meanwhile) leaves it.
            if !login {
                next.fallback.link = None;
            }
            note_success(&mut next, record, source, now, rules, login);
            Ok(Decision {
                outcome,
                record: Some(next),
                source: SourceChange::Reset,
            })
        }
        None => {
            // The code check changed nothing on this path: the record as
            // read, with the failure counted.
            let (counted, source_change) = count(record, source, now, purpose);
            Ok(Decision {
                outcome: if matched == CodeMatch::Used {
                    Outcome::Replayed
                } else {
                    Outcome::WrongCode
                },
                record: Some(counted),
                source: source_change,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Device;
    use crate::core::totp::generator;
    use otpd_proto::Algorithm;

    const KEY: &[u8] = b"12345678901234567890";
    const NOW: u64 = 1_234_567_890; // step 41152263
    const STEP: u64 = NOW / 30;

    fn rules() -> Rules {
        Rules {
            window: 1,
            hotp_window: 10,
            limits: Limits::default(),
        }
    }

    /// One active default TOTP device with `KEY`; not marked as having had
    /// an active device (as a record written before that flag).
    fn active() -> UserRecord {
        let device = second_device("default", KEY, TokenKind::Totp, EnrollState::Active);
        let mut r = UserRecord::new(7, "t".into(), vec![device]).unwrap();
        r.had_active_device = false;
        r
    }

    /// `r` with its first device pending, still never marked as having had
    /// an active device: an enrolment waiting for its first code.
    fn as_pending(r: &UserRecord) -> UserRecord {
        let mut p = r.clone();
        p.change_devices(|d| d[0].state = EnrollState::Pending)
            .unwrap();
        p.had_active_device = false;
        p
    }

    fn code_at(time: u64) -> String {
        generator(KEY, Algorithm::Sha1, 6, 30, 0)
            .unwrap()
            .generate(time)
            .to_string()
    }

    fn with_recovery(codes: &[&str]) -> UserRecord {
        let mut r = active();
        r.fallback.recovery = codes
            .iter()
            .map(|c| crate::core::tokens::CodeHash::new(c, &[9; 16]))
            .collect();
        r
    }

    #[test]
    fn a_recovery_code_works_once_in_place_of_a_code() {
        let r = with_recovery(&["23456789ABCD", "EFGHJKLMNPQR"]);
        let d = login(&r, None, "efgh-jklm-npqr", NOW);
        assert_eq!(d.outcome, Outcome::AcceptedRecovery { remaining: 1 });
        let next = d.record.unwrap();
        assert_eq!(next.fallback.recovery.len(), 1);
        assert!(next.fallback.recovery[0].matches("23456789ABCD"));
        assert_eq!(d.source, SourceChange::Reset);
        assert_eq!(next.last_success, Some(NOW));
        // The same code again: a counted failure.
        let again = login(&next, None, "EFGH-JKLM-NPQR", NOW);
        assert_eq!(again.outcome, Outcome::WrongCode);
        assert_eq!(again.record.unwrap().user_failures, 1);
        // A well-formed but unknown recovery code is a guess: counted.
        let guess = login(&r, None, "2345-6789-ABCE", NOW);
        assert_eq!(guess.outcome, Outcome::WrongCode);
        assert!(matches!(guess.source, SourceChange::Set(_)));
        // Not at enrolment: "Validate" wants a code from the app.
        let pending = as_pending(&r);
        let d = decide(
            Some(&pending),
            &ADMIN,
            "EFGH-JKLM-NPQR",
            NOW,
            Purpose::Confirm,
            &rules(),
        )
        .unwrap();
        assert_eq!(d.outcome, Outcome::WrongCode);
        assert!(d.record.is_none(), "not even counted: it cannot be a code");
    }

    #[test]
    fn a_texted_code_works_once_before_it_expires() {
        use crate::core::record::SmsChallenge;
        let mut r = active();
        let challenge = |code: &str, expires: u64| SmsChallenge {
            code: crate::core::tokens::CodeHash::new(code, &[3; 16]),
            expires,
            number: None,
            tries: 0,
        };
        // The user's code and a newer one someone else asked for.
        r.fallback.sms = vec![
            challenge("424242", NOW + 300),
            challenge("515151", NOW + 300),
        ];
        let d = login(&r, None, "424242", NOW);
        assert_eq!(d.outcome, Outcome::AcceptedSms);
        let next = d.record.unwrap();
        assert!(next.fallback.sms.is_empty(), "a success spends them all");
        assert_eq!(
            login(&next, None, "424242", NOW).outcome,
            Outcome::WrongCode
        );
        assert_eq!(login(&r, None, "515151", NOW).outcome, Outcome::AcceptedSms);
        // Expired.
        assert_eq!(
            login(&r, None, "424242", NOW + 301).outcome,
            Outcome::WrongCode
        );
        // A registration challenge is no login code.
        let mut reg = active();
        reg.fallback.sms_register = Some(SmsChallenge {
            number: Some("+31612345678".into()),
            ..challenge("424242", NOW + 300)
        });
        assert_eq!(login(&reg, None, "424242", NOW).outcome, Outcome::WrongCode);
        // Six digits for an eight-digit token.
        let mut eight = r.clone();
        eight.change_devices(|d| d[0].digits = 8).unwrap();
        assert_eq!(
            login(&eight, None, "424242", NOW).outcome,
            Outcome::AcceptedSms
        );
    }

    fn second_device(name: &str, key: &[u8], kind: TokenKind, state: EnrollState) -> Device {
        Device {
            name: name.into(),
            state,
            kind,
            secret: crate::core::record::SecretBytes::new(key.to_vec()),
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            created: 0,
            last_accepted_step: None,
            window: None,
            replaces: None,
        }
    }

    const KEY2: &[u8] = b"abcdefghijabcdefghij";

    fn two_devices() -> UserRecord {
        let mut r = active();
        let mut devices = r.devices().to_vec();
        devices.push(second_device(
            "key",
            KEY2,
            TokenKind::Hotp,
            EnrollState::Active,
        ));
        r.set_devices(devices).unwrap();
        r
    }

    fn hotp2(counter: u64) -> String {
        crate::core::totp::hotp_code(KEY2, Algorithm::Sha1, 6, counter).unwrap()
    }

    #[test]
    fn a_code_of_any_active_device_is_accepted_with_replay_state_per_device() {
        let r = two_devices();
        // The phone's TOTP code.
        let d = login(&r, None, &code_at(NOW), NOW);
        assert_eq!(d.outcome, Outcome::Accepted { step: STEP });
        let after_phone = d.record.unwrap();
        // The key's HOTP code is still good: its own replay state.
        let d = login(&after_phone, None, &hotp2(0), NOW);
        assert_eq!(d.outcome, Outcome::Accepted { step: 0 });
        let after_key = d.record.unwrap();
        let devices = after_key.devices();
        assert_eq!(devices[0].last_accepted_step, Some(STEP));
        assert_eq!(devices[1].last_accepted_step, Some(0));
        // Each replayed.
        assert_eq!(
            login(&after_key, None, &hotp2(0), NOW).outcome,
            Outcome::Replayed
        );
        assert_eq!(
            login(&after_key, None, &code_at(NOW), NOW).outcome,
            Outcome::Replayed
        );
        // The key's look-ahead: ten presses that never reached a login.
        assert_eq!(
            login(&after_key, None, &hotp2(11), NOW).outcome,
            Outcome::Accepted { step: 11 }
        );
        assert_eq!(
            login(&after_key, None, &hotp2(12), NOW).outcome,
            Outcome::WrongCode
        );
    }

    #[test]
    fn a_pending_device_is_confirmed_not_logged_in_with() {
        let mut r = active();
        let mut devices = r.devices().to_vec();
        devices.push(second_device(
            "tablet",
            KEY2,
            TokenKind::Totp,
            EnrollState::Pending,
        ));
        r.set_devices(devices).unwrap();
        let tablet_code = generator(KEY2, Algorithm::Sha1, 6, 30, 0)
            .unwrap()
            .generate(NOW)
            .to_string();
        assert_eq!(
            login(&r, None, &tablet_code, NOW).outcome,
            Outcome::WrongCode
        );
        // The phone's code does not confirm the tablet.
        let confirm = |r: &UserRecord, code: &str| {
            decide(Some(r), &ADMIN, code, NOW, Purpose::Confirm, &rules()).unwrap()
        };
        assert_eq!(confirm(&r, &code_at(NOW)).outcome, Outcome::WrongCode);
        let d = confirm(&r, &tablet_code);
        assert!(matches!(d.outcome, Outcome::Accepted { .. }));
        let next = d.record.unwrap();
        assert!(next
            .devices()
            .iter()
            .all(|d| d.state == EnrollState::Active));
    }

    #[test]
    fn an_imported_window_replaces_the_configured_one() {
        let mut r = active();
        assert_eq!(
            login(&r, None, &code_at(NOW + 90), NOW).outcome,
            Outcome::WrongCode
        );
        r.change_devices(|d| d[0].window = Some(3)).unwrap();
        assert!(matches!(
            login(&r, None, &code_at(NOW + 90), NOW).outcome,
            Outcome::Accepted { .. }
        ));
    }

    #[test]
    fn a_code_used_on_one_device_is_refused_on_a_device_with_the_same_key() {
        let mut r = active();
        let mut devices = r.devices().to_vec();
        let mut copy = devices[0].clone();
        copy.name = "oath-2".into();
        devices.push(copy);
        r.set_devices(devices).unwrap();
        let d = login(&r, None, &code_at(NOW), NOW);
        assert_eq!(d.outcome, Outcome::Accepted { step: STEP });
        assert_eq!(
            login(&d.record.unwrap(), None, &code_at(NOW), NOW).outcome,
            Outcome::Replayed
        );
    }

    #[test]
    fn an_imported_scratch_code_works_once() {
        let r = with_recovery(&["12345678"]);
        let d = login(&r, None, " 12345678", NOW);
        assert_eq!(d.outcome, Outcome::AcceptedRecovery { remaining: 0 });
        assert_eq!(
            login(&d.record.unwrap(), None, "12345678", NOW).outcome,
            Outcome::WrongCode
        );
    }

    #[test]
    fn an_accepted_code_kills_the_enrollment_link() {
        let mut r = as_pending(&active());
        r.fallback.link = Some(crate::core::record::Link {
            token_hash: "ab".into(),
            expires: NOW + 60,
            ..Default::default()
        });
        let d = decide(
            Some(&r),
            &ADMIN,
            &code_at(NOW),
            NOW,
            Purpose::Confirm,
            &rules(),
        )
        .unwrap();
        assert!(matches!(d.outcome, Outcome::Accepted { .. }));
        let next = d.record.unwrap();
        assert!(next.has_active_device());
        assert!(next.fallback.link.is_none());
    }

    fn login(r: &UserRecord, s: Option<&SourceCounter>, code: &str, now: u64) -> Decision {
        login_from(r, &SourceState::new("rhost:192.0.2.1", s), code, now)
    }

    fn login_from(r: &UserRecord, source: &SourceState<'_>, code: &str, now: u64) -> Decision {
        decide(Some(r), source, code, now, Purpose::Login, &rules()).unwrap()
    }

    /// The source of `otpd confirm`: root's uid.
    const ADMIN: SourceState<'static> = SourceState {
        key: "uid:0",
        counter: None,
        own: false,
    };

    #[test]
    fn accepts_a_fresh_code_once_and_records_its_step() {
        let r = active();
        let d = login(&r, None, &code_at(NOW), NOW);
        assert_eq!(d.outcome, Outcome::Accepted { step: STEP });
        let next = d.record.unwrap();
        assert_eq!(next.version, 8);
        assert_eq!(next.first_device().last_accepted_step, Some(STEP));
        assert_eq!(next.last_success, Some(NOW));
        assert_eq!(d.source, SourceChange::Reset);

        // The same code again, and an older one: replayed.
        assert_eq!(
            login(&next, None, &code_at(NOW), NOW + 1).outcome,
            Outcome::Replayed
        );
        assert_eq!(
            login(&next, None, &code_at(NOW - 30), NOW).outcome,
            Outcome::Replayed
        );
        // The next step's code is still good.
        assert_eq!(
            login(&next, None, &code_at(NOW + 30), NOW).outcome,
            Outcome::Accepted { step: STEP + 1 }
        );
    }

    #[test]
    fn malformed_codes_are_wrong_but_change_nothing() {
        let r = active();
        for bad in ["000000x", "12a456", "", "1234567", "12 34 56"] {
            assert_eq!(
                login(&r, None, bad, NOW),
                Decision::unchanged(Outcome::WrongCode),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wrong_codes_count_as_failures() {
        let r = active();
        for bad in ["000000", "999 999"] {
            let d = login(&r, None, bad, NOW);
            assert_eq!(d.outcome, Outcome::WrongCode, "{bad:?}");
            let next = d.record.unwrap();
            assert_eq!(next.user_failures, 1);
            assert_eq!(next.last_failure, Some(NOW));
            assert_eq!(
                d.source,
                SourceChange::Set(SourceCounter {
                    failures: 1,
                    last_failure: NOW
                })
            );
        }
        // A spaced code is fine.
        let c = code_at(NOW);
        let spaced = format!(" {} {}\n", &c[..3], &c[3..]);
        assert!(matches!(
            login(&r, None, &spaced, NOW).outcome,
            Outcome::Accepted { .. }
        ));
    }

    #[test]
    fn unknown_and_pending_users_change_nothing() {
        let d = decide(None, &ADMIN, "123456", NOW, Purpose::Login, &rules()).unwrap();
        assert_eq!(d, Decision::unchanged(Outcome::NotEnrolled));
        let p = as_pending(&active());
        assert_eq!(
            login(&p, None, &code_at(NOW), NOW),
            Decision::unchanged(Outcome::Pending)
        );
    }

    #[test]
    fn confirm_activates_a_pending_enrollment_and_uses_the_step() {
        let p = as_pending(&active());
        let d = decide(
            Some(&p),
            &ADMIN,
            &code_at(NOW),
            NOW,
            Purpose::Confirm,
            &rules(),
        )
        .unwrap();
        assert_eq!(d.outcome, Outcome::Accepted { step: STEP });
        let next = d.record.unwrap();
        assert!(next.has_active_device());
        assert_eq!(
            login(&next, None, &code_at(NOW), NOW).outcome,
            Outcome::Replayed
        );
        let wrong = decide(Some(&p), &ADMIN, "000000", NOW, Purpose::Confirm, &rules()).unwrap();
        assert_eq!(wrong.outcome, Outcome::WrongCode);
        assert!(!wrong.record.unwrap().has_active_device());
    }

    #[test]
    fn a_source_at_the_threshold_waits_even_with_the_right_code() {
        let r = active();
        let src = SourceCounter {
            failures: 5,
            last_failure: NOW - 10,
        };
        let d = login(&r, Some(&src), &code_at(NOW), NOW);
        assert_eq!(
            d,
            Decision::unchanged(Outcome::Throttled { retry_after: 20 })
        );
        // After the wait the right code is accepted and the source reset.
        let d = login(&r, Some(&src), &code_at(NOW + 20), NOW + 20);
        assert!(matches!(d.outcome, Outcome::Accepted { .. }));
        assert_eq!(d.source, SourceChange::Reset);
        // A wrong code after the wait doubles it.
        let d = login(&r, Some(&src), "000000", NOW + 20);
        let SourceChange::Set(next) = d.source else {
            panic!("expected a counter")
        };
        assert_eq!(next.failures, 6);
        assert_eq!(
            login(&r, Some(&next), &code_at(NOW + 20), NOW + 20).outcome,
            Outcome::Throttled { retry_after: 60 }
        );
    }

    #[test]
    fn four_failures_do_not_throttle_a_source() {
        let r = active();
        let src = SourceCounter {
            failures: 4,
            last_failure: NOW,
        };
        assert!(matches!(
            login(&r, Some(&src), &code_at(NOW), NOW).outcome,
            Outcome::Accepted { .. }
        ));
    }

    #[test]
    fn the_user_wide_ceiling_throttles_every_source() {
        let mut r = active();
        r.user_failures = 20;
        r.last_failure = Some(NOW);
        // A fresh source with no failures of its own is refused too.
        assert_eq!(
            login(&r, None, &code_at(NOW), NOW + 5).outcome,
            Outcome::Throttled { retry_after: 25 }
        );
        r.user_failures = 19;
        assert!(matches!(
            login(&r, None, &code_at(NOW), NOW + 5).outcome,
            Outcome::Accepted { .. }
        ));
    }

    const HOME: &str = "rhost:203.0.113.10";

    #[test]
    fn the_ceiling_never_blocks_a_source_that_has_proven_itself() {
        let day = 24 * 3600;
        // A success from home: home is remembered, the count starts afresh.
        let mut r = active();
        r.user_failures = 3;
        r.last_failure = Some(NOW - 100);
        let home = SourceState::new(HOME, None);
        let d = login_from(&r, &home, &code_at(NOW), NOW);
        let mut r = d.record.unwrap();
        assert!(r.trusts(HOME, NOW, 30 * day));
        assert_eq!(r.user_failures, 0, "an unknown source's success resets it");
        // Strangers reach the ceiling.
        r.user_failures = 20;
        r.last_failure = Some(NOW + 40);
        let stranger = SourceState::new("rhost:198.51.100.1", None);
        assert_eq!(
            login_from(&r, &stranger, &code_at(NOW + 60), NOW + 60).outcome,
            Outcome::Throttled { retry_after: 10 }
        );
        // Home is not blocked, and its success leaves the count alone: the
        // strangers get no fresh set of free guesses from it.
        let d = login_from(&r, &home, &code_at(NOW + 60), NOW + 60);
        assert!(matches!(d.outcome, Outcome::Accepted { .. }));
        let after = d.record.unwrap();
        assert_eq!(
            (after.user_failures, after.last_failure),
            (20, Some(NOW + 40))
        );
        assert_eq!(
            login_from(&after, &stranger, "000000", NOW + 61).outcome,
            Outcome::Throttled { retry_after: 9 }
        );
        // Home's own failures still throttle home.
        let five = SourceCounter {
            failures: 5,
            last_failure: NOW + 60,
        };
        let home_failing = SourceState::new(HOME, Some(&five));
        assert_eq!(
            login_from(&after, &home_failing, &code_at(NOW + 90), NOW + 61).outcome,
            Outcome::Throttled { retry_after: 29 }
        );
        // Trust ends after trusted_source_secs.
        let later = NOW + 60 + 30 * day + 1;
        let mut stale = after.clone();
        stale.last_failure = Some(later);
        assert!(matches!(
            login_from(&stale, &home, &code_at(later), later).outcome,
            Outcome::Throttled { .. }
        ));
        // The user's own uid is trusted without a success first.
        let own = SourceState {
            key: "uid:1000",
            counter: None,
            own: true,
        };
        let d = login_from(&stale, &own, &code_at(later), later);
        assert!(matches!(d.outcome, Outcome::Accepted { .. }));
        assert!(
            !d.record.unwrap().trusts("uid:1000", later, 30 * day),
            "the own uid needs no entry"
        );
    }

    #[test]
    fn a_user_who_had_an_active_device_is_never_pending_at_login() {
        let mut r = active();
        let mut devices = r.devices().to_vec();
        devices[0].state = EnrollState::Pending;
        r.set_devices(devices).unwrap();
        assert!(!r.has_active_device());
        assert!(r.factor_required(), "it was active before");
        // A code: refused as wrong, not "pending" (which nullok ignores).
        assert_eq!(
            login(&r, None, &code_at(NOW), NOW).outcome,
            Outcome::WrongCode
        );
        // Never active: pending, as before.
        let fresh = UserRecord::new(
            1,
            "t".into(),
            active()
                .devices()
                .iter()
                .cloned()
                .map(|mut d| {
                    d.state = EnrollState::Pending;
                    d
                })
                .collect(),
        )
        .unwrap();
        assert_eq!(
            login(&fresh, None, &code_at(NOW), NOW).outcome,
            Outcome::Pending
        );
    }

    #[test]
    fn a_replacement_takes_over_only_once_confirmed() {
        // The phone (KEY) is active; a new phone (KEY2) replaces everything.
        let mut r = with_recovery(&["23456789ABCD"]);
        r.fallback.phone = Some("+31612345678".into());
        // A login remembered while the old phone worked.
        r.remembered.push(crate::core::remember::Remembered {
            hash: "h".into(),
            service: "sshd".into(),
            expires: NOW + 3600,
            key: None,
        });
        let mut devices = r.devices().to_vec();
        let mut new = second_device("default", KEY2, TokenKind::Totp, EnrollState::Pending);
        new.replaces = Some(Replaces::All);
        devices.push(new);
        r.set_devices(devices).unwrap();
        // The old one still logs in; the new one's code does not.
        let new_code = generator(KEY2, Algorithm::Sha1, 6, 30, 0)
            .unwrap()
            .generate(NOW)
            .to_string();
        assert!(matches!(
            login(&r, None, &code_at(NOW), NOW).outcome,
            Outcome::Accepted { .. }
        ));
        assert_eq!(login(&r, None, &new_code, NOW).outcome, Outcome::WrongCode);
        // Confirmed: only the new one is left, with no old recovery codes
        // or phone (as `enroll --force` always did).
        let d = decide(Some(&r), &ADMIN, &new_code, NOW, Purpose::Confirm, &rules()).unwrap();
        assert!(matches!(d.outcome, Outcome::Accepted { .. }));
        let next = d.record.unwrap();
        let left = next.devices();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].secret.expose(), KEY2);
        assert_eq!(left[0].replaces, None);
        assert!(next.fallback.recovery.is_empty() && next.fallback.phone.is_none());
        assert!(
            next.remembered.is_empty(),
            "the old phone's remembered login survived"
        );
        assert_eq!(
            login(&next, None, &code_at(NOW + 30), NOW).outcome,
            Outcome::WrongCode
        );

        // One device replaced by name: the others stay.
        let mut r = two_devices();
        let mut devices = r.devices().to_vec();
        let mut new = second_device("default", KEY2, TokenKind::Totp, EnrollState::Pending);
        new.secret = crate::core::record::SecretBytes::new(b"zyxwvutsrqzyxwvutsrq".to_vec());
        new.replaces = Some(Replaces::Device("default".into()));
        devices.push(new);
        r.set_devices(devices).unwrap();
        let code = generator(b"zyxwvutsrqzyxwvutsrq", Algorithm::Sha1, 6, 30, 0)
            .unwrap()
            .generate(NOW)
            .to_string();
        let d = decide(Some(&r), &ADMIN, &code, NOW, Purpose::Confirm, &rules()).unwrap();
        let names: Vec<(String, EnrollState)> = d
            .record
            .unwrap()
            .devices()
            .iter()
            .map(|d| (d.name.clone(), d.state))
            .collect();
        assert_eq!(
            names,
            [
                ("key".to_string(), EnrollState::Active),
                ("default".to_string(), EnrollState::Active)
            ]
        );
    }

    #[test]
    fn the_longer_of_both_waits_is_reported() {
        let mut r = active();
        r.user_failures = 21; // 60 s from NOW
        r.last_failure = Some(NOW);
        let src = SourceCounter {
            failures: 5, // 30 s from NOW
            last_failure: NOW,
        };
        assert_eq!(
            login(&r, Some(&src), "000000", NOW).outcome,
            Outcome::Throttled { retry_after: 60 }
        );
    }

    #[test]
    fn waits_are_capped() {
        let r = active();
        let src = SourceCounter {
            failures: 1000,
            last_failure: NOW,
        };
        assert_eq!(
            login(&r, Some(&src), "000000", NOW).outcome,
            Outcome::Throttled { retry_after: 900 }
        );
    }
}
