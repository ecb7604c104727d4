//! Kill -9 during load: logins, enrolments, confirmations and removals run
//! against the real daemon while it is killed with SIGKILL at random
//! moments and restarted, 50 times by default (`OTPD_CRASH_KILLS=N` for
//! more, `OTPD_CRASH_SEED=S` to repeat a run's kill delays).
//!
//! Only acknowledged results count: a reply received by the client is a
//! promise (design.md §1: durable before it is sent); a request in flight
//! at a kill may have gone either way. A client-side ledger records every
//! acknowledgement, and after every restart (and at the end) the test
//! checks that
//! - the store opens (the daemon starts and answers),
//! - every acknowledged confirmation is an active user unless a removal of
//!   it was sent, and every acknowledged enrolment is still there,
//! - every acknowledged removal stays removed,
//! - no enrolment whose confirmation was never sent (or was refused) is
//!   active,
//! - no code whose acceptance was acknowledged is accepted again: each is
//!   sent once more right after the restart that follows it, and during
//!   the load no code for a step at or below the last acknowledged one is
//!   accepted,
//! - no user is listed that the test never enrolled.
//!
//! Requests go over the socket with `otpd-proto` (as the PAM module sends
//! them), not through libpam, so that the load is high enough to kill the
//! daemon in the middle of writes; codes come from `oathtool`.

use otpd_proto::{
    read_frame, write_frame, EnrollParams, ErrorCode, Request, Response, SecretText, UserState,
    VerifyOutcome,
};
use otpd_tests::rng::Rng;
use otpd_tests::totp::unix_now;
use otpd_tests::{code_at, require, Limits, Program, TestEnv};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Seconds per code of every enrolment here: the shortest the daemon
/// allows, so that each user can have a code accepted often.
const PERIOD: u64 = 15;
/// The daemon's default `[totp] window`: steps cur-1 ..= cur+1 are accepted.
const WINDOW: u64 = 1;
/// Users enrolled and confirmed before the first kill.
const INITIAL_USERS: usize = 40;
/// Threads sending logins.
const VERIFY_THREADS: usize = 3;
/// Kills in CI (the documented run); `OTPD_CRASH_KILLS` for more by hand,
/// never fewer under CI.
const DEFAULT_KILLS: u64 = 50;
/// Random delay between a restart and the next kill, in ms.
const KILL_DELAY_MS: (u64, u64) = (50, 400);
/// A live daemon answers well within this; a longer wait is a hang.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The client: one connection per request, as the PAM module does.

enum CallError {
    /// No connection: the daemon is down (between a kill and its restart).
    Down,
    /// Connected, but no whole reply: the request was in flight at a kill.
    Broken,
    /// Connected, and no reply within REPLY_TIMEOUT: a hang.
    Timeout,
}

fn call(socket: &Path, request: &Request) -> Result<Response, CallError> {
    let mut stream = UnixStream::connect(socket).map_err(|_| CallError::Down)?;
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
    write_frame(&mut stream, request).map_err(|_| CallError::Broken)?;
    read_frame(&mut stream).map_err(|e| match e {
        otpd_proto::ProtoError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            CallError::Timeout
        }
        _ => CallError::Broken,
    })
}

fn verify_request(user: &str, code: &str, rhost: &str) -> Request {
    Request::Verify {
        user: user.to_owned(),
        code: SecretText::from(code),
        service: "crash-campaign".into(),
        rhost: rhost.to_owned(),
        ruid: None,
    }
}

// ---------------------------------------------------------------------------
// The ledger: what the clients sent and what was acknowledged, with a
// sequence number per event so that a check can tell what happened before
// a request was sent and what may have been in flight.

#[derive(Default, Clone)]
struct UserEntry {
    /// Base32, once the enrolment was acknowledged.
    secret: Option<String>,
    enroll_acked: Option<u64>,
    confirm_sent: Option<u64>,
    confirm_acked: Option<u64>,
    /// The confirmation was answered with a refusal (the user stays pending).
    confirm_refused: Option<u64>,
    remove_sent: Option<u64>,
    remove_acked: Option<u64>,
    /// The highest step whose acceptance (login or confirmation) was acknowledged.
    max_acked_step: Option<u64>,
}

#[derive(Clone)]
struct Accepted {
    user: String,
    step: u64,
    code: String,
    how: &'static str,
}

#[derive(Default)]
struct Ledger {
    seq: u64,
    users: BTreeMap<String, UserEntry>,
    accepted: Vec<Accepted>,
    /// Indices into `accepted` not yet replayed after a restart.
    unchecked: Vec<usize>,
    violations: Vec<String>,
    internal_errors: Vec<String>,
    next_user: u64,
}

impl Ledger {
    fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn violation(&mut self, what: String) {
        println!("VIOLATION: {what}");
        self.violations.push(what);
    }

    fn record_accept(&mut self, user: &str, step: u64, code: &str, how: &'static str) {
        let entry = self.users.get_mut(user).expect("a user of the ledger");
        entry.max_acked_step = Some(entry.max_acked_step.map_or(step, |m| m.max(step)));
        self.accepted.push(Accepted {
            user: user.to_owned(),
            step,
            code: code.to_owned(),
            how,
        });
        self.unchecked.push(self.accepted.len() - 1);
    }
}

#[derive(Default)]
struct Stats {
    logins_sent: AtomicU64,
    logins_accepted: AtomicU64,
    logins_replayed: AtomicU64,
    logins_wrong: AtomicU64,
    logins_other: AtomicU64,
    logins_broken: AtomicU64,
    replays_during_load: AtomicU64,
    requests_down: AtomicU64,
    timeouts: AtomicU64,
    enroll_sent: AtomicU64,
    enroll_acked: AtomicU64,
    confirm_sent: AtomicU64,
    confirm_acked: AtomicU64,
    confirm_refused: AtomicU64,
    remove_sent: AtomicU64,
    remove_acked: AtomicU64,
    admin_broken: AtomicU64,
    replays_after_restart: AtomicU64,
    replays_after_restart_accepted: AtomicU64,
    replays_expired: AtomicU64,
    replays_answered_replayed: AtomicU64,
    replays_answered_wrong: AtomicU64,
    replays_answered_not_enrolled: AtomicU64,
    list_checks: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// What every thread shares.
struct Shared {
    socket: PathBuf,
    ledger: Mutex<Ledger>,
    stats: Stats,
    codes: Mutex<HashMap<(String, u64), String>>,
    stop: AtomicBool,
    worker_failed: AtomicBool,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The code of `secret` for `step`, by oathtool (cached).
    fn code(&self, user: &str, secret: &str, step: u64) -> String {
        let key = (user.to_owned(), step);
        if let Some(code) = self
            .codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return code.clone();
        }
        let code = code_at(secret, "SHA1", 6, PERIOD, step * PERIOD);
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, code.clone());
        code
    }
}

/// Sets the stop flags when a worker thread panics, so that the killer
/// loop ends instead of running on without load.
struct WorkerGuard<'a>(&'a Shared);

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.worker_failed.store(true, Ordering::SeqCst);
            self.0.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Stops the workers when the killer loop ends, also by a panic (the
/// thread scope would otherwise wait for them forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The verify thread whose user `crashNNNNN` is.
fn owner_thread(user: &str) -> usize {
    let n: usize = user.trim_start_matches("crash").parse().unwrap_or(0);
    n % VERIFY_THREADS
}

fn current_step() -> u64 {
    unix_now() / PERIOD
}

// ---------------------------------------------------------------------------
// Admin operations, each recorded in the ledger.

/// Enrols a new user; returns its name when the enrolment was acknowledged.
fn enroll(shared: &Shared) -> Option<String> {
    let user = {
        let mut ledger = shared.ledger();
        ledger.next_user += 1;
        let user = format!("crash{:05}", ledger.next_user);
        ledger.users.insert(user.clone(), UserEntry::default());
        user
    };
    bump(&shared.stats.enroll_sent);
    let request = Request::Enroll(EnrollParams {
        user: user.clone(),
        period: Some(PERIOD),
        ..EnrollParams::default()
    });
    match call(&shared.socket, &request) {
        Ok(Response::Enrolled(enrollment)) => {
            let mut ledger = shared.ledger();
            let seq = ledger.tick();
            let entry = ledger.users.get_mut(&user).expect("just inserted");
            entry.secret = Some(enrollment.secret_base32.expose().to_owned());
            entry.enroll_acked = Some(seq);
            bump(&shared.stats.enroll_acked);
            Some(user)
        }
        other => {
            admin_failure(shared, "enroll", &user, other);
            None
        }
    }
}

/// Confirms a pending user with the code of the current step.
fn confirm(shared: &Shared, user: &str) -> bool {
    let secret = {
        let ledger = shared.ledger();
        ledger.users[user]
            .secret
            .clone()
            .expect("an acknowledged enrolment")
    };
    let step = current_step();
    let code = shared.code(user, &secret, step);
    {
        let mut ledger = shared.ledger();
        let seq = ledger.tick();
        ledger.users.get_mut(user).expect("known").confirm_sent = Some(seq);
    }
    bump(&shared.stats.confirm_sent);
    let request = Request::Confirm {
        user: user.to_owned(),
        code: SecretText::from(code.as_str()),
    };
    match call(&shared.socket, &request) {
        Ok(Response::Confirmed { .. }) => {
            let mut ledger = shared.ledger();
            let seq = ledger.tick();
            ledger.users.get_mut(user).expect("known").confirm_acked = Some(seq);
            ledger.record_accept(user, step, &code, "confirm");
            bump(&shared.stats.confirm_acked);
            true
        }
        Ok(Response::Verified { outcome }) => {
            // A step boundary between computing the code and the check:
            // refused, and the user stays pending.
            let mut ledger = shared.ledger();
            let seq = ledger.tick();
            ledger.users.get_mut(user).expect("known").confirm_refused = Some(seq);
            println!("confirm of {user} refused: {outcome:?}");
            bump(&shared.stats.confirm_refused);
            false
        }
        other => {
            admin_failure(shared, "confirm", user, other);
            false
        }
    }
}

fn remove(shared: &Shared, user: &str) {
    {
        let mut ledger = shared.ledger();
        let seq = ledger.tick();
        ledger.users.get_mut(user).expect("known").remove_sent = Some(seq);
    }
    bump(&shared.stats.remove_sent);
    match call(
        &shared.socket,
        &Request::Remove {
            user: user.to_owned(),
            device: None,
        },
    ) {
        Ok(Response::Done {}) => {
            let mut ledger = shared.ledger();
            let seq = ledger.tick();
            ledger.users.get_mut(user).expect("known").remove_acked = Some(seq);
            bump(&shared.stats.remove_acked);
        }
        Ok(Response::Error {
            code: ErrorCode::NotFound,
            message,
        }) => {
            // Only users whose enrolment was acknowledged are removed here,
            // and each only once.
            shared.ledger().violation(format!(
                "remove {user}: the daemon does not know an acknowledged enrolment: {message}"
            ));
        }
        other => admin_failure(shared, "remove", user, other),
    }
}

/// Counts a failed admin request; a daemon error other than a refusal is
/// recorded (a healthy daemon has no store errors).
fn admin_failure(shared: &Shared, op: &str, user: &str, result: Result<Response, CallError>) {
    match result {
        Err(CallError::Down) => bump(&shared.stats.requests_down),
        Err(CallError::Broken) => bump(&shared.stats.admin_broken),
        Err(CallError::Timeout) => {
            bump(&shared.stats.timeouts);
            shared.ledger().violation(format!(
                "{op} {user}: no reply within {} s",
                REPLY_TIMEOUT.as_secs()
            ));
        }
        Ok(Response::Error {
            code: ErrorCode::Internal,
            message,
        }) => shared
            .ledger()
            .internal_errors
            .push(format!("{op} {user}: {message}")),
        Ok(other) => shared
            .ledger()
            .violation(format!("{op} {user}: unexpected answer {other:?}")),
    }
}

// ---------------------------------------------------------------------------
// The workers.

fn verify_worker(shared: &Shared, index: usize, seed: u64) {
    let _guard = WorkerGuard(shared);
    let mut rng = Rng(seed ^ (0x1000 + index as u64));
    let rhost = format!("192.0.2.{}", 10 + index);
    while !shared.stop.load(Ordering::SeqCst) {
        let cur = current_step();
        // Pick an active user and the step to send, under the lock: mostly
        // a fresh step (above the last acknowledged one, inside the
        // window), now and then an acknowledged code again.
        let pick = {
            let ledger = shared.ledger();
            let replay = rng.below(20) == 0;
            let candidates: Vec<(String, String, u64, Option<u64>)> = ledger
                .users
                .iter()
                .filter(|(_, e)| e.confirm_acked.is_some() && e.remove_sent.is_none())
                // Each thread has its own users for fresh codes (two threads
                // racing for one step only make refusals); replays go anywhere.
                .filter(|(user, _)| replay || owner_thread(user) == index)
                .filter_map(|(user, e)| {
                    let step = match (e.max_acked_step, replay) {
                        (Some(max), true) => max,
                        (Some(max), false) => (cur - WINDOW).max(max + 1),
                        (None, _) => cur - WINDOW,
                    };
                    (step + WINDOW >= cur && step <= cur + WINDOW).then(|| {
                        let secret = e.secret.clone().expect("confirmed users have a secret");
                        (user.clone(), secret, step, e.max_acked_step)
                    })
                })
                .collect();
            match candidates.len() {
                0 => None,
                n => Some(candidates[rng.below(n as u64) as usize].clone()),
            }
        };
        let Some((user, secret, step, max_acked_at_send)) = pick else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let replay = max_acked_at_send.is_some_and(|max| step <= max);
        if replay {
            bump(&shared.stats.replays_during_load);
        }
        let code = shared.code(&user, &secret, step);
        bump(&shared.stats.logins_sent);
        match call(&shared.socket, &verify_request(&user, &code, &rhost)) {
            Ok(Response::Verified { outcome }) => {
                let mut ledger = shared.ledger();
                match outcome {
                    VerifyOutcome::Accepted => {
                        bump(&shared.stats.logins_accepted);
                        if let Some(max) = max_acked_at_send.filter(|&max| step <= max) {
                            ledger.violation(format!(
                                "{user}: the code of step {step} was accepted although the \
                                 acceptance of step {max} had been acknowledged before it was sent"
                            ));
                        }
                        ledger.record_accept(&user, step, &code, "login");
                    }
                    VerifyOutcome::Replayed => bump(&shared.stats.logins_replayed),
                    VerifyOutcome::WrongCode => bump(&shared.stats.logins_wrong),
                    VerifyOutcome::NotEnrolled | VerifyOutcome::Pending => {
                        bump(&shared.stats.logins_other);
                        // Only a removal sent meanwhile explains it.
                        if ledger.users[&user].remove_sent.is_none() {
                            ledger.violation(format!(
                                "{user}: confirmed (acknowledged) and never removed, but a \
                                 login was answered {outcome:?}"
                            ));
                        }
                    }
                    other => {
                        bump(&shared.stats.logins_other);
                        ledger.violation(format!("{user}: unexpected outcome {other:?}"));
                    }
                }
            }
            Ok(Response::Error {
                code: ErrorCode::Internal,
                message,
            }) => {
                bump(&shared.stats.logins_other);
                shared
                    .ledger()
                    .internal_errors
                    .push(format!("verify {user}: {message}"));
            }
            Ok(other) => {
                bump(&shared.stats.logins_other);
                shared
                    .ledger()
                    .violation(format!("verify {user}: unexpected answer {other:?}"));
            }
            Err(CallError::Down) => {
                bump(&shared.stats.requests_down);
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(CallError::Broken) => bump(&shared.stats.logins_broken),
            Err(CallError::Timeout) => {
                bump(&shared.stats.timeouts);
                shared.ledger().violation(format!(
                    "verify {user}: no reply within {} s",
                    REPLY_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

/// Enrols new users (confirming most), removes some active and some
/// pending ones.
fn admin_worker(shared: &Shared, seed: u64) {
    let _guard = WorkerGuard(shared);
    let mut rng = Rng(seed ^ 0xAD);
    while !shared.stop.load(Ordering::SeqCst) {
        let (active, removable_active, removable_pending) = {
            let ledger = shared.ledger();
            let live = |e: &&UserEntry| e.remove_sent.is_none();
            let active: Vec<String> = ledger
                .users
                .iter()
                .filter(|(_, e)| e.confirm_acked.is_some())
                .filter(|(_, e)| live(e))
                .map(|(u, _)| u.clone())
                .collect();
            let pending: Vec<String> = ledger
                .users
                .iter()
                .filter(|(_, e)| e.enroll_acked.is_some() && e.confirm_sent.is_none())
                .filter(|(_, e)| live(e))
                .map(|(u, _)| u.clone())
                .collect();
            (active.len(), active, pending)
        };
        let roll = rng.below(10);
        if active < INITIAL_USERS / 2 || roll < 6 {
            if let Some(user) = enroll(shared) {
                // Three in ten stay pending for good: half-done enrolments
                // that must never show up active.
                if rng.below(10) < 7 {
                    confirm(shared, &user);
                }
            }
        } else if roll < 9 {
            if !removable_active.is_empty() {
                let i = rng.below(removable_active.len() as u64) as usize;
                remove(shared, &removable_active[i]);
            }
        } else if !removable_pending.is_empty() {
            let i = rng.below(removable_pending.len() as u64) as usize;
            remove(shared, &removable_pending[i]);
        }
        std::thread::sleep(Duration::from_millis(rng.range(40, 140)));
    }
}

// ---------------------------------------------------------------------------
// Checks after a restart.

/// Sends every acknowledged code that has not been replayed after a
/// restart yet; none may be accepted.
fn replay_check(shared: &Shared, indices: &[usize]) {
    let items: Vec<Accepted> = {
        let ledger = shared.ledger();
        indices
            .iter()
            .map(|&i| ledger.accepted[i].clone())
            .collect()
    };
    let cur = current_step();
    for item in items {
        if item.step + WINDOW < cur {
            // Outside the window by now: a refusal would prove nothing.
            bump(&shared.stats.replays_expired);
            continue;
        }
        bump(&shared.stats.replays_after_restart);
        let mut answer = None;
        for _ in 0..3 {
            match call(
                &shared.socket,
                &verify_request(&item.user, &item.code, "198.51.100.1"),
            ) {
                Ok(reply) => {
                    answer = Some(reply);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let mut ledger = shared.ledger();
        match answer {
            Some(Response::Verified {
                outcome: VerifyOutcome::Accepted,
            }) => {
                bump(&shared.stats.replays_after_restart_accepted);
                ledger.violation(format!(
                    "{}: the code of step {} (acceptance by {} acknowledged before a SIGKILL) \
                     was accepted again after the restart",
                    item.user, item.step, item.how
                ));
            }
            Some(Response::Verified {
                outcome: VerifyOutcome::Replayed,
            }) => bump(&shared.stats.replays_answered_replayed),
            Some(Response::Verified {
                outcome: VerifyOutcome::WrongCode,
            }) => bump(&shared.stats.replays_answered_wrong),
            Some(Response::Verified {
                outcome: VerifyOutcome::NotEnrolled,
            }) if ledger.users[&item.user].remove_sent.is_some() => {
                bump(&shared.stats.replays_answered_not_enrolled)
            }
            Some(Response::Error {
                code: ErrorCode::Internal,
                message,
            }) => ledger
                .internal_errors
                .push(format!("replay {}: {message}", item.user)),
            Some(other) => ledger.violation(format!(
                "replay of {}'s code: unexpected answer {other:?}",
                item.user
            )),
            None => ledger.violation(format!(
                "replay of {}'s code: the restarted daemon did not answer",
                item.user
            )),
        }
    }
}

/// `List` against the ledger, with the requests in flight allowed either way.
fn list_check(shared: &Shared, when: &str) {
    let before = shared.ledger().seq;
    let reply = call(&shared.socket, &Request::List {});
    let mut ledger = shared.ledger();
    let after = ledger.seq;
    let listed: BTreeMap<String, UserState> = match reply {
        Ok(Response::Users { users }) => users.into_iter().map(|u| (u.user, u.state)).collect(),
        Ok(other) => {
            ledger.violation(format!("{when}: list answered {other:?}"));
            return;
        }
        Err(_) => {
            ledger.violation(format!("{when}: list got no answer"));
            return;
        }
    };
    bump(&shared.stats.list_checks);
    let done_before = |seq: Option<u64>| seq.is_some_and(|s| s <= before);
    let sent_before_reply = |seq: Option<u64>| seq.is_some_and(|s| s <= after);
    let mut found = Vec::new();
    for (user, entry) in &ledger.users {
        let state = listed.get(user);
        let active = matches!(state, Some(UserState::Active | UserState::Throttled));
        if done_before(entry.remove_acked) {
            if let Some(state) = state {
                found.push(format!(
                    "{when}: {user} is listed ({state:?}) although its removal was acknowledged"
                ));
            }
            continue;
        }
        if sent_before_reply(entry.remove_sent) {
            continue; // a removal in flight: either way
        }
        if done_before(entry.confirm_acked) && !active {
            found.push(format!(
                "{when}: {user}'s confirmation was acknowledged, but the user is {}",
                state.map_or("gone".to_owned(), |s| format!("{s:?}"))
            ));
        } else if done_before(entry.enroll_acked) && state.is_none() {
            found.push(format!(
                "{when}: {user}'s enrolment was acknowledged, but the user is gone"
            ));
        }
        let never_confirmed =
            !sent_before_reply(entry.confirm_sent) || done_before(entry.confirm_refused);
        if active && never_confirmed {
            found.push(format!(
                "{when}: {user} is active although no confirmation was sent (or it was refused)"
            ));
        }
    }
    for user in listed.keys() {
        if !ledger.users.contains_key(user) {
            found.push(format!("{when}: {user} is listed but was never enrolled"));
        }
    }
    for what in found {
        ledger.violation(what);
    }
}

// ---------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_result_and_accepts_no_code_twice() {
    if !require("crash_campaign", &[Program::Oathtool]) {
        return;
    }
    let started = Instant::now();
    let kills = otpd_tests::campaign::size("OTPD_CRASH_KILLS", DEFAULT_KILLS);
    let seed = env_u64("OTPD_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
    });
    println!("crash campaign: {kills} kills, seed {seed} (repeat with OTPD_CRASH_SEED={seed})");

    // Replays and boundary misses are failures to the daemon: no backoff
    // may get in the way of the logins.
    let limits = Limits {
        max_failures: 1_000_000,
        base_delay: "\"1s\"".into(),
        max_delay: "\"1s\"".into(),
        user_max_failures: 1_000_000,
    };
    // The daemon logs as every test daemon does (otpd at trace, sled at
    // info: otpd_tests::campaign::daemon_log_filter), for the check of
    // every TestEnv that no code reaches the log.
    let mut env = TestEnv::without_daemon("crashcampaign", &limits);
    env.spawn_daemon();

    let shared = Shared {
        socket: env.socket.clone(),
        ledger: Mutex::new(Ledger::default()),
        stats: Stats::default(),
        codes: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
        worker_failed: AtomicBool::new(false),
    };
    for _ in 0..INITIAL_USERS {
        let user = enroll(&shared).expect("an enrolment before any kill");
        if !confirm(&shared, &user) {
            // A step boundary: the next step's code.
            std::thread::sleep(Duration::from_millis(200));
            let mut ledger = shared.ledger();
            let entry = ledger.users.get_mut(&user).expect("known");
            entry.confirm_sent = None;
            entry.confirm_refused = None;
            drop(ledger);
            assert!(confirm(&shared, &user), "confirm {user} failed twice");
        }
    }
    let setup_done = started.elapsed();
    println!(
        "{INITIAL_USERS} users enrolled and confirmed in {} ms",
        setup_done.as_millis()
    );

    let mut restart_ms: Vec<u128> = Vec::new();
    let mut kills_done = 0u64;
    let mut rng = Rng(seed);
    std::thread::scope(|scope| {
        let stop = StopOnDrop(&shared.stop);
        for index in 0..VERIFY_THREADS {
            let shared = &shared;
            scope.spawn(move || verify_worker(shared, index, seed));
        }
        {
            let shared = &shared;
            scope.spawn(move || admin_worker(shared, seed));
        }
        while kills_done < kills && !shared.worker_failed.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(
                rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1),
            ));
            let status = env.kill_daemon(libc::SIGKILL);
            kills_done += 1;
            if status.signal() != Some(libc::SIGKILL) {
                shared.ledger().violation(format!(
                    "kill {kills_done}: the daemon had already ended on its own: {status}"
                ));
            }
            let to_replay: Vec<usize> = std::mem::take(&mut shared.ledger().unchecked);
            let restart = Instant::now();
            env.spawn_daemon();
            restart_ms.push(restart.elapsed().as_millis());
            replay_check(&shared, &to_replay);
            list_check(&shared, &format!("after restart {kills_done}"));
        }
        drop(stop);
    });
    assert!(
        !shared.worker_failed.load(Ordering::SeqCst),
        "a worker thread panicked (see above)"
    );

    // Quiet now: the strict checks, and every code still in its window.
    let to_replay: Vec<usize> = std::mem::take(&mut shared.ledger().unchecked);
    replay_check(&shared, &to_replay);
    list_check(&shared, "at the end");
    let final_kill = env.kill_daemon(libc::SIGKILL);
    assert_eq!(final_kill.signal(), Some(libc::SIGKILL), "{final_kill}");
    env.spawn_daemon();
    let all: Vec<usize> = {
        let ledger = shared.ledger();
        (0..ledger.accepted.len()).collect()
    };
    let replays_before_final = get(&shared.stats.replays_after_restart);
    replay_check(&shared, &all);
    list_check(&shared, "after the final restart");
    let status = env.kill_daemon(libc::SIGTERM);

    let s = &shared.stats;
    let ledger = shared.ledger();
    let restart_avg = restart_ms.iter().sum::<u128>() / restart_ms.len().max(1) as u128;
    let restart_max = restart_ms.iter().max().copied().unwrap_or(0);
    let active_at_end = ledger
        .users
        .values()
        .filter(|e| e.confirm_acked.is_some() && e.remove_sent.is_none())
        .count();
    println!("---- crash campaign figures (seed {seed}) ----");
    println!("kills (SIGKILL)                  {kills_done}");
    println!(
        "restarts                         {} (avg {restart_avg} ms, max {restart_max} ms to the first answer)",
        restart_ms.len() + 1
    );
    println!(
        "logins attempted                 {} ({} of them replays of acknowledged codes)",
        get(&s.logins_sent),
        get(&s.replays_during_load)
    );
    println!(
        "  accepted                       {}",
        get(&s.logins_accepted)
    );
    println!(
        "  refused                        {} (replayed {}, wrong code/out of window {}, other {})",
        get(&s.logins_replayed) + get(&s.logins_wrong) + get(&s.logins_other),
        get(&s.logins_replayed),
        get(&s.logins_wrong),
        get(&s.logins_other)
    );
    println!("  failed by a kill (in flight)   {}", get(&s.logins_broken));
    println!(
        "requests while the daemon was down (connect refused, all kinds): {}",
        get(&s.requests_down)
    );
    println!(
        "enrolments                       {} sent, {} acknowledged",
        get(&s.enroll_sent),
        get(&s.enroll_acked)
    );
    println!(
        "confirmations                    {} sent, {} acknowledged, {} refused",
        get(&s.confirm_sent),
        get(&s.confirm_acked),
        get(&s.confirm_refused)
    );
    println!(
        "removals                         {} sent, {} acknowledged",
        get(&s.remove_sent),
        get(&s.remove_acked)
    );
    println!("admin requests failed by a kill  {}", get(&s.admin_broken));
    println!(
        "replays tried after restarts     {} ({} after the final restart; {} skipped: out of window)",
        get(&s.replays_after_restart),
        get(&s.replays_after_restart) - replays_before_final,
        get(&s.replays_expired)
    );
    println!(
        "  answered: replayed {}, wrong code (window moved on) {}, not enrolled (removed) {}",
        get(&s.replays_answered_replayed),
        get(&s.replays_answered_wrong),
        get(&s.replays_answered_not_enrolled)
    );
    println!(
        "replays accepted after restarts  {}",
        get(&s.replays_after_restart_accepted)
    );
    println!("list checks                      {}", get(&s.list_checks));
    println!(
        "users in the ledger              {} ({} active at the end)",
        ledger.users.len(),
        active_at_end
    );
    println!(
        "store errors (Internal)          {}",
        ledger.internal_errors.len()
    );
    println!("timeouts                         {}", get(&s.timeouts));
    println!(
        "violations                       {}",
        ledger.violations.len()
    );
    println!(
        "wall time                        {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("---- end of figures ----");

    assert!(
        ledger.violations.is_empty(),
        "{} violations (seed {seed}); the first ones:\n{}",
        ledger.violations.len(),
        ledger.violations[..ledger.violations.len().min(20)].join("\n")
    );
    assert!(
        ledger.internal_errors.is_empty(),
        "the daemon answered {} requests with a store error; the first ones:\n{}",
        ledger.internal_errors.len(),
        ledger.internal_errors[..ledger.internal_errors.len().min(20)].join("\n")
    );
    assert_eq!(get(&s.replays_after_restart_accepted), 0);
    assert!(
        get(&s.replays_after_restart) > 0,
        "no acknowledged code was replayed after a restart: the campaign checked nothing"
    );
    assert!(
        status.success(),
        "otpd serve ended with {status} on SIGTERM after the campaign"
    );
    assert!(
        kills_done >= kills && kills_done > 0,
        "only {kills_done} of {kills} kills were done"
    );
}
