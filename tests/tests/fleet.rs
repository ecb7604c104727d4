//! A fleet: two or three hosts, each with its own otpd (socket, state dir,
//! log) and the same key file, sharing one real PostgreSQL store
//! ([`otpd_tests::fleet::Fleet`]). Logins go through the real libpam and
//! pam_otpd.so on each host; administration through each host's otpd CLI.
//! What one host writes (an enrolment, a spent code, a failure counter, a
//! removal, a used recovery code) holds on every host at once; the schema
//! is created once when daemons start together; a wrong CA or key file
//! stops a daemon at start with a clear message; while the database is
//! down logins fail closed within the module's timeout, and they work
//! again when it is back, without restarting otpd. No secret reaches the
//! database in clear.

use otpd_tests::ca::TestCa;
use otpd_tests::fleet::{self, label, Fleet};
use otpd_tests::pam::{finish, PamService};
use otpd_tests::process::{self, Running};
use otpd_tests::programs;
use otpd_tests::system::{require_private_host, PrivateHost};
use otpd_tests::totp::recovery_codes_in;
use otpd_tests::totp::unix_now;
use otpd_tests::{require, settled_now, Limits, PamLogin, PamOutcome, Program, TestEnv, PAM};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits high enough that refused logins are judged as wrong or replayed
/// codes, never throttled.
fn lenient() -> Limits {
    Limits {
        max_failures: 1000,
        user_max_failures: 10_000,
        ..Limits::default()
    }
}

/// The hosts of a fleet of three.
fn three(fleet: &Fleet) -> (&TestEnv, &TestEnv, &TestEnv) {
    match &fleet.hosts[..] {
        [a, b, c] => (a, b, c),
        other => panic!("expected 3 hosts, the fleet has {}", other.len()),
    }
}

#[test]
fn a_code_accepted_on_one_host_is_refused_on_every_host() {
    if !require("fleet: replay guard", PAM) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_replay", 3, &Limits::default()) else {
        return;
    };
    let (a, b, c) = three(&fleet);
    let t = settled_now(30, 10);
    // Enrolled and confirmed (step t-1 consumed) on A.
    let alice = a.enroll_active("alice", &[], t - 30);
    for host in [b, c] {
        let entry = host
            .list_entry("alice")
            .unwrap_or_else(|| panic!("{}: alice, enrolled on A, is not listed", host.name));
        assert_eq!(entry["state"], "active", "{}: {entry}", host.name);
    }

    let code = alice.code_at(t);
    let first = b.expect_login(
        "alice",
        &code,
        "192.0.2.10",
        PamOutcome::Success,
        "alice, enrolled on A, logs in on B",
    );
    println!(
        "login on B of a user enrolled on A: {} ms",
        first.elapsed().as_millis()
    );
    for (host, rhost) in [(a, "192.0.2.11"), (b, "192.0.2.12"), (c, "192.0.2.13")] {
        host.expect_login(
            "alice",
            &code,
            rhost,
            PamOutcome::AuthErr,
            "the code accepted on B, typed again",
        );
    }

    let newer = alice.code_at(t + 30);
    a.expect_login(
        "alice",
        &newer,
        "192.0.2.20",
        PamOutcome::Success,
        "the next step on A",
    );
    for (host, rhost) in [(b, "192.0.2.21"), (c, "192.0.2.22")] {
        host.expect_login(
            "alice",
            &newer,
            rhost,
            PamOutcome::AuthErr,
            "the code accepted on A, typed on another host",
        );
    }
    // The confirm step is in the window but older than the accepted one.
    c.expect_login(
        "alice",
        &alice.code_at(t - 30),
        "192.0.2.23",
        PamOutcome::AuthErr,
        "the step consumed by the confirmation on A",
    );
    let entry = c.list_entry("alice").expect("alice listed on C");
    assert!(
        entry["last_success"].as_u64().is_some_and(|s| s + 60 >= t),
        "C sees the last success on A: {entry}"
    );
    fleet.assert_no_secrets_leaked();
}

#[test]
fn sixty_four_concurrent_logins_with_one_code_over_three_hosts_let_exactly_one_in() {
    // pam_wrapper gives each process a dir /tmp/pam.X, X one of 62 letters
    // and digits: 64 logins at once do not fit. These run pamtester in a
    // private mount namespace ([`PrivateHost`]) with the services in its
    // own /etc/pam.d, through the system's libpam without pam_wrapper.
    if !require_private_host("fleet: 64 concurrent logins", PAM) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_race", 3, &lenient()) else {
        return;
    };
    let namespace = PrivateHost::start(&fleet.hosts[0], &["carol"], &[]);
    let services: Vec<String> = fleet
        .hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let service = format!("otpd-fleet-{}", label(i).to_ascii_lowercase());
            namespace.write_pam_service(
                &service,
                &format!(
                    "auth required {} socket={}\n",
                    programs::pam_module().display(),
                    host.socket.display()
                ),
            );
            service
        })
        .collect();
    let t = settled_now(30, 12);
    let carol = fleet.hosts[0].enroll_active("carol", &[], t - 30);
    let code = carol.code_at(t);
    let mut logins: Vec<(usize, Running)> = (0..64)
        .map(|i| {
            let host = i % services.len();
            let mut cmd = namespace.command(Program::Pamtester.path());
            cmd.args(["-v", "-I", &format!("rhost=10.9.{host}.{i}")])
                .args([services[host].as_str(), "carol", "authenticate"]);
            (host, Running::spawn(cmd))
        })
        .collect();
    let started = Instant::now();
    for (_, login) in &mut logins {
        login.feed(format!("{code}\n").as_bytes());
    }
    let results: Vec<(usize, PamLogin)> = logins
        .into_iter()
        .map(|(host, running)| (host, finish(running)))
        .collect();
    let wall = started.elapsed();
    let slowest = results.iter().map(|(_, r)| r.elapsed()).max().unwrap();

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_host: BTreeMap<(char, String), usize> = BTreeMap::new();
    for (host, login) in &results {
        *tally.entry(format!("{:?}", login.outcome)).or_default() += 1;
        *per_host
            .entry((label(*host), format!("{:?}", login.outcome)))
            .or_default() += 1;
    }
    println!(
        "64 logins with one code over A, B, C in {} ms (slowest {} ms): {tally:?}; per host: {per_host:?}",
        wall.as_millis(),
        slowest.as_millis()
    );
    for host in &fleet.hosts {
        let log = host.log();
        let outage = log
            .lines()
            .filter(|l| l.contains("the PostgreSQL store is unreachable"))
            .collect::<Vec<_>>();
        if let Some(first) = outage.first() {
            println!(
                "{}: {} outage line(s) during the race, the first: {first}",
                host.name,
                outage.len()
            );
        }
    }
    let successes: Vec<char> = results
        .iter()
        .filter(|(_, r)| r.outcome == PamOutcome::Success)
        .map(|(host, _)| label(*host))
        .collect();
    assert!(
        successes.len() <= 1,
        "the replay guard failed: {} logins with one code succeeded (on hosts {successes:?}); \
         tally {tally:?}",
        successes.len()
    );
    assert_eq!(
        successes.len(),
        1,
        "no login succeeded although the database was up: every one failed closed or was \
         refused (tally {tally:?}; the daemons' outage lines are printed above)"
    );
    let unexpected: Vec<String> = results
        .iter()
        .filter(|(_, r)| {
            !matches!(
                r.outcome,
                PamOutcome::Success | PamOutcome::AuthErr | PamOutcome::AuthInfoUnavail
            )
        })
        .map(|(host, r)| format!("host {}: {:?}\n{}", label(*host), r.outcome, r.output))
        .collect();
    assert!(
        unexpected.is_empty(),
        "every other login must be refused (AuthErr) or fail closed (AuthInfoUnavail):\n{}",
        unexpected.join("\n")
    );

    // The code is spent on every host. (After a failed store operation a
    // daemon fails the next ones at once for 0.5 s: wait that out.)
    std::thread::sleep(Duration::from_secs(1));
    for (i, host) in fleet.hosts.iter().enumerate() {
        host.expect_login(
            "carol",
            &code,
            &format!("10.8.0.{i}"),
            PamOutcome::AuthErr,
            "the raced code afterwards",
        );
    }
    let entry = fleet.hosts[2].list_entry("carol").expect("carol listed");
    assert_eq!(entry["state"], "active", "{entry}");
    assert!(entry["last_success"].is_u64(), "{entry}");
    fleet.assert_no_secrets_leaked();
}

#[test]
fn a_throttled_source_and_the_user_wide_ceiling_hold_on_every_host_until_unlock() {
    if !require("fleet: throttling", PAM) {
        return;
    }
    // Defaults: 5 failures per (user, source), 20 per user, backoff 30 s.
    let Some(fleet) = Fleet::start("fleet_throttle", 3, &Limits::default()) else {
        return;
    };
    let (a, b, c) = three(&fleet);
    let t = settled_now(30, 15);

    // Per source: five wrong codes from one source on A.
    let bob = a.enroll_active("bob", &[], t - 30);
    let guesser = "198.51.100.7";
    a.fail_times(&bob, t, guesser, 5);
    let right = bob.code_at(t);
    for host in [b, c, a] {
        host.expect_throttled(
            "bob",
            &right,
            guesser,
            "the right code from the source that failed 5 times on A",
        );
    }
    // Another source is not throttled, on any host.
    c.expect_login(
        "bob",
        &right,
        "198.51.100.8",
        PamOutcome::Success,
        "the right code from another source",
    );
    // That success clears its own source, not the guesser's backoff.
    let next = bob.code_at(t + 30);
    b.expect_throttled(
        "bob",
        &next,
        guesser,
        "the guesser after another source's success",
    );
    c.otpd_expect(&["unlock", "bob"], 0);
    // Unlocked for all: a guess from that source is judged again on B …
    b.expect_login(
        "bob",
        &bob.wrong_code(t),
        guesser,
        PamOutcome::AuthErr,
        "a wrong code from the guesser after unlock on C",
    );
    // … and the right code from it is accepted on A.
    a.expect_login(
        "bob",
        &next,
        guesser,
        PamOutcome::Success,
        "the right code from the guesser after unlock on C",
    );

    // User-wide: 4 failures from each of 5 sources (never 5 from one),
    // spread over the three hosts, make the 20 of the ceiling.
    let carol = b.enroll_active("carol", &[], t - 30);
    for source in 0..5 {
        let host = &fleet.hosts[source % 3];
        host.fail_times(&carol, t, &format!("192.0.2.{}", 100 + source), 4);
    }
    for host in [a, b, c] {
        let entry = host.list_entry("carol").expect("carol listed");
        println!("{} after 20 failures over A, B, C: {entry}", host.name);
        assert_eq!(entry["state"], "throttled", "{}: {entry}", host.name);
        assert_eq!(entry["failures"], 20, "{}: {entry}", host.name);
    }
    let right = carol.code_at(t);
    b.expect_throttled(
        "carol",
        &right,
        "192.0.2.199",
        "carol's right code from a new source",
    );
    c.expect_throttled("carol", &right, "", "carol's right code, local");
    c.otpd_expect(&["unlock", "carol"], 0);
    let entry = a.list_entry("carol").expect("carol listed");
    assert_eq!(entry["state"], "active", "A after unlock on C: {entry}");
    assert_eq!(entry["failures"], 0, "A after unlock on C: {entry}");
    a.expect_login(
        "carol",
        &right,
        "192.0.2.199",
        PamOutcome::Success,
        "carol's right code on A after unlock on C",
    );
    fleet.assert_no_secrets_leaked();
}

#[test]
fn a_removal_and_recovery_codes_hold_on_every_host() {
    if !require("fleet: removal and recovery codes", PAM) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_remove", 3, &Limits::default()) else {
        return;
    };
    let (a, b, c) = three(&fleet);
    let t = settled_now(30, 10);
    let alice = a.enroll_active("alice", &[], t - 30);
    c.expect_login(
        "alice",
        &alice.code_at(t),
        "192.0.2.30",
        PamOutcome::Success,
        "alice before the removal",
    );

    b.otpd_expect(&["remove", "alice"], 0);
    for host in [a, b, c] {
        assert!(
            host.list_entry("alice").is_none(),
            "{} still lists alice after `otpd remove alice` on B",
            host.name
        );
    }
    let next = alice.code_at(t + 30);
    a.expect_login(
        "alice",
        &next,
        "192.0.2.31",
        PamOutcome::AuthErr,
        "alice's next valid code on A after her removal on B",
    );
    // With nullok the module lets her through: the daemon says she has no
    // token (not enrolled), not that the code was wrong.
    let nullok = a
        .pam_service_nullok("")
        .login(OsStr::new("alice"), &next, "192.0.2.32", None);
    assert_eq!(
        nullok.outcome,
        PamOutcome::Success,
        "nullok on A: alice is not enrolled any more: {}",
        nullok.output
    );

    let dave = a.enroll_active("dave", &[], t - 30);
    let out = a.otpd_expect(&["recovery-codes", "dave", "--count", "3"], 0);
    let codes = recovery_codes_in(&out.stdout);
    assert_eq!(codes.len(), 3, "{out}");
    b.expect_login(
        "dave",
        &codes[0],
        "192.0.2.40",
        PamOutcome::Success,
        "a recovery code made on A, used on B",
    );
    c.expect_login(
        "dave",
        &codes[0],
        "192.0.2.41",
        PamOutcome::AuthErr,
        "the same recovery code again, on C",
    );
    a.expect_login(
        "dave",
        &codes[0],
        "192.0.2.42",
        PamOutcome::AuthErr,
        "the same recovery code again, on A",
    );
    let entry = c.list_entry("dave").expect("dave listed on C");
    assert_eq!(entry["recovery_codes"], 2, "C: {entry}");
    // The other codes still work, once, wherever.
    c.expect_login(
        "dave",
        &codes[1],
        "192.0.2.43",
        PamOutcome::Success,
        "a second recovery code, on C",
    );
    // dave's TOTP is untouched by all this.
    b.expect_login(
        "dave",
        &dave.code_at(t),
        "192.0.2.44",
        PamOutcome::Success,
        "dave's app code on B",
    );
    fleet.assert_no_secrets_leaked();
}

#[test]
fn three_daemons_starting_at_once_on_an_empty_database_apply_each_migration_once() {
    if !require("fleet: concurrent migrations", PAM) {
        return;
    }
    let Some(mut fleet) = Fleet::prepare("fleet_migrate", 3, &Limits::default()) else {
        return;
    };
    let tables = fleet
        .cluster
        .psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public';");
    assert_eq!(tables.trim(), "0", "the database is not empty");

    let started = Instant::now();
    fleet.start_all_at_once();
    println!(
        "three daemons started at once, all ready in {} ms",
        started.elapsed().as_millis()
    );

    let rows = fleet
        .cluster
        .psql("SELECT version FROM otpd_schema ORDER BY version;");
    let versions: Vec<usize> = rows
        .lines()
        .map(|v| v.trim().parse().expect("a schema version"))
        .collect();
    println!("otpd_schema: versions {versions:?}");
    assert!(!versions.is_empty(), "otpd_schema is empty");
    assert_eq!(
        versions,
        (1..=versions.len()).collect::<Vec<_>>(),
        "one row per migration, in order"
    );
    let applied: Vec<usize> = fleet
        .hosts
        .iter()
        .map(|h| h.log().matches("applied a schema migration").count())
        .collect();
    println!("migrations applied by A, B, C: {applied:?}");
    assert_eq!(
        applied.iter().sum::<usize>(),
        versions.len(),
        "each migration is applied by exactly one of the daemons (per daemon: {applied:?})"
    );
    for host in &fleet.hosts {
        assert!(
            host.log().contains("connected to the PostgreSQL store"),
            "{}:\n{}",
            host.name,
            host.log()
        );
    }
    assert_eq!(
        fleet
            .cluster
            .psql("SELECT value FROM otpd_meta WHERE key = 'key_id';")
            .trim(),
        fleet.key_id,
        "the database records the fleet's key ID"
    );

    // And they work as one store.
    let (a, b, c) = three(&fleet);
    let t = settled_now(30, 8);
    let erin = c.enroll_active("erin", &[], t - 30);
    a.expect_login(
        "erin",
        &erin.code_at(t),
        "192.0.2.50",
        PamOutcome::Success,
        "erin, enrolled on C, on A",
    );
    b.expect_login(
        "erin",
        &erin.code_at(t),
        "192.0.2.51",
        PamOutcome::AuthErr,
        "the same code on B",
    );
    fleet.assert_no_secrets_leaked();
}

/// The PAM module's timeout in the outage test (`timeout=3`, the default).
const MODULE_TIMEOUT: Duration = Duration::from_secs(3);
/// What `pam_authenticate` may take beyond [`MODULE_TIMEOUT`] (measured
/// without pamtester's start-up, [`PamLogin::authenticate_time`]): the
/// module's own work around the daemon's answer, and pamtester's exit.
const MODULE_MARGIN: Duration = Duration::from_secs(1);
/// Load threads in the outage test (alternately on A and B).
const LOAD_THREADS: usize = 4;
/// Users per load thread: two codes each (steps t and t+1).
const USERS_PER_THREAD: usize = 8;
/// Pause of a load thread between two logins.
const LOAD_PACE: Duration = Duration::from_millis(150);
/// Successes every load thread has before the database is stopped.
const WARM_UP_SUCCESSES: usize = 3;
/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(4);
/// Successes every load thread must have once the database is back.
const SUCCESSES_AFTER_OUTAGE: usize = 2;
/// How soon after the database is back every load thread must log in.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

/// A user's name and one of their codes.
type Credential = (String, String);

/// One login of the outage test.
#[derive(Debug, Clone)]
struct Attempt {
    thread: usize,
    host: char,
    user: String,
    code: String,
    /// Whether this code had not been tried before.
    first_try: bool,
    started: Instant,
    ended: Instant,
    outcome: PamOutcome,
    /// Time in `pam_authenticate` ([`PamLogin::authenticate_time`]).
    elapsed: Duration,
    transcript: String,
}

/// When the outage test did what.
struct Timeline {
    /// Every load thread had [`WARM_UP_SUCCESSES`] before the stop.
    warmed_up: bool,
    /// `stop()` called.
    stopping: Instant,
    /// `stop()` returned: the database is down.
    down: Instant,
    /// `start_again()` called.
    restarting: Instant,
    /// `start_again()` returned: the database accepts connections.
    up: Instant,
    /// Every load thread had [`SUCCESSES_AFTER_OUTAGE`] more since.
    recovered: bool,
    /// The load was stopped.
    finished: Instant,
}

impl Timeline {
    /// `at` in ms relative to the beginning of the stop, for messages.
    fn ms(&self, at: Instant) -> i128 {
        if at < self.stopping {
            -(self.stopping.duration_since(at).as_millis() as i128)
        } else {
            at.duration_since(self.stopping).as_millis() as i128
        }
    }

    fn show(&self, a: &Attempt) -> String {
        format!(
            "thread {} on {} {}: started {} ms, ended {} ms (from the stop): {:?} in {} ms{}",
            a.thread,
            a.host,
            a.user,
            self.ms(a.started),
            self.ms(a.ended),
            a.outcome,
            a.elapsed.as_millis(),
            if a.first_try { "" } else { " (a retry)" }
        )
    }
}

/// Sets the flag when dropped, so that the load threads stop also when the
/// test body panics (a scope waits for its threads).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until `done()` (polled every 20 ms) or `limit`; returns whether
/// it became true.
fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        )
    })
}

/// Enrols [`USERS_PER_THREAD`] users for each load thread on its host
/// (threads 0, 2 on A; 1, 3 on B), confirmed with the code of `t - 30`;
/// returns each thread's codes of steps t and t+1, in the order to use.
/// One enrolling thread per host: one store operation at a time on each.
fn enroll_load_users(fleet: &Fleet, t: u64) -> Vec<Vec<Credential>> {
    let mut credentials = vec![Vec::new(); LOAD_THREADS];
    std::thread::scope(|scope| {
        let handles: Vec<_> = fleet
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                scope.spawn(move || {
                    let mut per_thread = Vec::new();
                    for thread in (index..LOAD_THREADS).step_by(fleet.hosts.len()) {
                        let mut codes = Vec::new();
                        for k in 0..USERS_PER_THREAD {
                            let user = format!("load{thread}u{k}");
                            let enrollment = host.enroll_active(&user, &[], t - 30);
                            codes.push((user.clone(), enrollment.code_at(t)));
                            codes.push((user, enrollment.code_at(t + 30)));
                        }
                        per_thread.push((thread, codes));
                    }
                    per_thread
                })
            })
            .collect();
        for handle in handles {
            for (thread, codes) in handle.join().expect("an enrolling thread panicked") {
                credentials[thread] = codes;
            }
        }
    });
    credentials
}

/// One load thread: logs in with each credential until it is accepted
/// (a login that fails closed is retried with the same code), then takes
/// the next, until `stop` or the credentials run out.
fn load(
    thread: usize,
    service: &PamService,
    credentials: &[Credential],
    stop: &AtomicBool,
    successes: &AtomicUsize,
    attempts: &Mutex<Vec<Attempt>>,
) {
    let rhost = format!("203.0.113.{}", 10 + thread);
    let mut next = 0;
    let mut first_try = true;
    while !stop.load(Ordering::SeqCst) {
        let Some((user, code)) = credentials.get(next) else {
            println!("load thread {thread}: all {} codes used", credentials.len());
            return;
        };
        let started = Instant::now();
        let login = service.login(OsStr::new(user), code, &rhost, None);
        let ended = Instant::now();
        attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Attempt {
                thread,
                host: label(thread % 2),
                user: user.clone(),
                code: code.clone(),
                first_try,
                started,
                ended,
                outcome: login.outcome,
                elapsed: login.authenticate_time(),
                transcript: login.output.to_string(),
            });
        match login.outcome {
            PamOutcome::Success => {
                successes.fetch_add(1, Ordering::SeqCst);
                next += 1;
                first_try = true;
            }
            // The database is down: the same code again.
            PamOutcome::AuthInfoUnavail => first_try = false,
            // Anything else is judged by the test; this code is done.
            _ => {
                next += 1;
                first_try = true;
            }
        }
        std::thread::sleep(LOAD_PACE);
    }
}

/// Runs the load threads over A and B, stops the database once each has
/// logged in [`WARM_UP_SUCCESSES`] times, starts it again after
/// [`OUTAGE`], and stops the load once each has logged in
/// [`SUCCESSES_AFTER_OUTAGE`] more times (15 s at most).
fn load_through_an_outage(
    fleet: &Fleet,
    credentials: &[Vec<Credential>],
) -> (Timeline, Vec<Attempt>) {
    let services: Vec<PamService> = fleet
        .hosts
        .iter()
        .map(|h| h.pam_service(&format!("timeout={}", MODULE_TIMEOUT.as_secs())))
        .collect();
    let stop = AtomicBool::new(false);
    let successes: Vec<AtomicUsize> = (0..LOAD_THREADS).map(|_| AtomicUsize::new(0)).collect();
    let attempts = Mutex::new(Vec::new());
    let count = |thread: usize| successes[thread].load(Ordering::SeqCst);
    let timeline = std::thread::scope(|scope| {
        let _stop_threads = StopOnDrop(&stop);
        for (thread, credentials) in credentials.iter().enumerate() {
            let (stop, successes, attempts) = (&stop, &successes[thread], &attempts);
            let service = &services[thread % 2];
            scope.spawn(move || load(thread, service, credentials, stop, successes, attempts));
        }
        let warmed_up = wait_until(Duration::from_secs(20), || {
            (0..LOAD_THREADS).all(|i| count(i) >= WARM_UP_SUCCESSES)
        });
        let stopping = Instant::now();
        fleet.cluster.stop();
        let down = Instant::now();
        std::thread::sleep(OUTAGE);
        let restarting = Instant::now();
        fleet.cluster.start_again();
        let up = Instant::now();
        let before: Vec<usize> = (0..LOAD_THREADS).map(count).collect();
        let recovered = wait_until(Duration::from_secs(15), || {
            (0..LOAD_THREADS).all(|i| count(i) >= before[i] + SUCCESSES_AFTER_OUTAGE)
        });
        Timeline {
            warmed_up,
            stopping,
            down,
            restarting,
            up,
            recovered,
            finished: Instant::now(),
        }
    });
    (
        timeline,
        attempts.into_inner().unwrap_or_else(|e| e.into_inner()),
    )
}

#[test]
fn logins_fail_closed_fast_while_the_database_is_down_and_work_again_without_a_restart() {
    if !require("fleet: database outage", PAM) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_outage", 2, &lenient()) else {
        return;
    };
    let (a, b) = (&fleet.hosts[0], &fleet.hosts[1]);
    let pids = [a.daemon_pid(), b.daemon_pid()];
    // Codes of steps t and t+1 are good until step t+2 begins: at least
    // 50 s from here, for the enrolments and the whole load.
    let t = settled_now(30, 20);
    let good_until = (t / 30 + 2) * 30;
    let enrolling = Instant::now();
    let credentials = enroll_load_users(&fleet, t);
    println!(
        "enrolled {} users over A and B in {} ms",
        LOAD_THREADS * USERS_PER_THREAD,
        enrolling.elapsed().as_millis()
    );

    let (timeline, attempts) = load_through_an_outage(&fleet, &credentials);
    let show = |a: &Attempt| timeline.show(a);
    let all = || attempts.iter().map(show).collect::<Vec<_>>().join("\n");
    assert!(
        unix_now() < good_until,
        "the test ran past the time steps of its codes ({} s after {good_until}); its \
         results say nothing about otpd",
        unix_now() - good_until
    );
    assert!(
        timeline.warmed_up,
        "before the outage, not every load thread logged in {WARM_UP_SUCCESSES} times \
         within 20 s:\n{}",
        all()
    );

    // While the database was down, every login failed closed …
    let in_outage: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started >= timeline.down && a.ended <= timeline.restarting)
        .collect();
    let wrong: Vec<String> = in_outage
        .iter()
        .filter(|a| a.outcome != PamOutcome::AuthInfoUnavail)
        .map(|a| format!("{}\n{}", show(a), a.transcript))
        .collect();
    assert!(
        wrong.is_empty(),
        "logins while the database was down that did not fail closed:\n{}",
        wrong.join("\n")
    );
    assert!(
        in_outage.len() >= LOAD_THREADS,
        "only {} logins ran while the database was down:\n{}",
        in_outage.len(),
        all()
    );
    // … and every login returned within the module's timeout.
    let slowest = attempts.iter().max_by_key(|a| a.elapsed).expect("attempts");
    assert!(
        slowest.elapsed < MODULE_TIMEOUT + MODULE_MARGIN,
        "a login took longer than the module's timeout ({} s) + {} s: {}",
        MODULE_TIMEOUT.as_secs(),
        MODULE_MARGIN.as_secs(),
        show(slowest)
    );

    // Never a code accepted twice, never a good code refused: a code is
    // refused only as spent, after a try that failed closed (whose
    // acceptance reached the database while its answer did not).
    let mut accepted: HashMap<(&str, &str), usize> = HashMap::new();
    for attempt in attempts.iter().filter(|a| a.outcome == PamOutcome::Success) {
        *accepted
            .entry((attempt.user.as_str(), attempt.code.as_str()))
            .or_default() += 1;
    }
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "codes accepted more than once: {twice:?}");
    let refused: Vec<String> = attempts
        .iter()
        .filter(|a| {
            !matches!(a.outcome, PamOutcome::Success | PamOutcome::AuthInfoUnavail)
                && (a.first_try || a.outcome != PamOutcome::AuthErr)
        })
        .map(|a| format!("{}\n{}", show(a), a.transcript))
        .collect();
    assert!(
        refused.is_empty(),
        "good codes refused (never tried before, or refused for another reason than spent):\n{}",
        refused.join("\n")
    );

    // Back within seconds, without a restart of otpd.
    assert!(
        timeline.recovered,
        "within 15 s of the database's return, not every load thread logged in \
         {SUCCESSES_AFTER_OUTAGE} more times:\n{}",
        all()
    );
    let recovery: Vec<Duration> = (0..LOAD_THREADS)
        .map(|thread| {
            attempts
                .iter()
                .filter(|a| {
                    a.thread == thread
                        && a.started >= timeline.up
                        && a.outcome == PamOutcome::Success
                })
                .map(|a| a.ended.duration_since(timeline.up))
                .min()
                .expect("a success after the return")
        })
        .collect();
    let slowest_recovery = *recovery.iter().max().expect("threads");
    assert!(
        slowest_recovery < RECOVERY_LIMIT,
        "a load thread's first success came {} ms after the database was back (limit {} s)",
        slowest_recovery.as_millis(),
        RECOVERY_LIMIT.as_secs()
    );
    for (host, pid) in fleet.hosts.iter().zip(pids) {
        assert_eq!(host.daemon_pid(), pid);
        assert!(alive(pid), "{}: otpd (pid {pid}) is gone", host.name);
    }

    let mut closed: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.outcome == PamOutcome::AuthInfoUnavail)
        .map(|a| a.elapsed)
        .collect();
    closed.sort();
    let before_outage: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.ended < timeline.stopping)
        .collect();
    println!(
        "outage figures: {} logins in all; before the stop {} ({} accepted); stop() took {} ms; \
         down {} ms: {} logins, all AUTHINFO_UNAVAIL; fail-closed logins overall {} (median {} \
         ms, slowest {} ms; module timeout {} s); start_again() took {} ms; first success per \
         thread after the return {:?} ms; load ran {} ms after the return; codes spent by a \
         login that failed closed: {}",
        attempts.len(),
        before_outage.len(),
        before_outage
            .iter()
            .filter(|a| a.outcome == PamOutcome::Success)
            .count(),
        (timeline.down - timeline.stopping).as_millis(),
        (timeline.restarting - timeline.down).as_millis(),
        in_outage.len(),
        closed.len(),
        closed.get(closed.len() / 2).map_or(0, Duration::as_millis),
        closed.last().map_or(0, Duration::as_millis),
        MODULE_TIMEOUT.as_secs(),
        (timeline.up - timeline.restarting).as_millis(),
        recovery.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        (timeline.finished - timeline.up).as_millis(),
        attempts
            .iter()
            .filter(|a| a.outcome == PamOutcome::AuthErr)
            .count()
    );

    // A code accepted just before the outage is spent after it.
    let last_before = before_outage
        .iter()
        .filter(|a| a.outcome == PamOutcome::Success)
        .max_by_key(|a| a.ended)
        .expect("a success before the outage");
    for host in [a, b] {
        host.expect_login(
            &last_before.user,
            &last_before.code,
            "203.0.113.99",
            PamOutcome::AuthErr,
            &format!(
                "{}'s code accepted on {} just before the outage, after it",
                last_before.user, last_before.host
            ),
        );
    }

    // The daemons said so: the last outage line, then the return.
    for host in [a, b] {
        let log = host.log();
        let down_at = log.rfind("the PostgreSQL store is unreachable (");
        let back_at = log.rfind("the PostgreSQL store is reachable again");
        let (Some(down_at), Some(back_at)) = (down_at, back_at) else {
            panic!(
                "{}: the log lacks the outage's lines:\n{}",
                host.name,
                log.lines()
                    .filter(|l| l.contains("PostgreSQL"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        };
        assert!(
            down_at < back_at,
            "{}: no \"reachable again\" after the last outage line",
            host.name
        );
        for at in [down_at, back_at] {
            println!("{}: {}", host.name, log[at..].lines().next().unwrap_or(""));
        }
    }
    fleet.assert_no_secrets_leaked();
}

/// The certificate of a CA ([`TestCa`]) that signed nothing of the
/// cluster's, made in `dir`.
fn another_authority(dir: &std::path::Path) -> std::path::PathBuf {
    let mut ca = TestCa::root(dir, "other-ca", "otpd test: another authority");
    ca.forget_key();
    ca.cert
}

/// `[store]` with `url` (a password in it: the config is made private)
/// and `ca_file`.
fn use_tls(host: &TestEnv, url: &str, ca_file: &std::path::Path) {
    host.append_config(&format!(
        "[store]\nkind = \"postgres\"\nurl = \"{url}\"\nca_file = \"{}\"\ntimeout = \"{}\"\n",
        ca_file.display(),
        fleet::STORE_TIMEOUT
    ));
    std::fs::set_permissions(&host.config, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the config");
}

/// The line `otpd serve` ended with (`otpd: …`), meant for the
/// administrator, among the log lines of its stderr.
fn refusal_message(out: &process::Output) -> String {
    out.stderr
        .lines()
        .rfind(|line| line.starts_with("otpd: "))
        .unwrap_or_else(|| panic!("otpd serve ended without an `otpd: …` message:\n{out}"))
        .to_owned()
}

#[test]
fn tls_with_the_clusters_ca_works_and_with_another_ca_the_daemon_refuses_to_start() {
    if !require("fleet: TLS", &[PAM, &[Program::Openssl]].concat()) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_tls", 1, &Limits::default()) else {
        return;
    };
    let plain = &fleet.hosts[0];
    let limits = Limits::default();

    let mut tls = fleet.new_host("T", &limits);
    fleet.install_key(&tls);
    use_tls(&tls, &fleet.cluster.url_tls(), &fleet.cluster.ca_file);
    tls.spawn_daemon();
    let t = settled_now(30, 10);
    let tina = tls.enroll_active("tina", &[], t - 30);
    tls.expect_login(
        "tina",
        &tina.code_at(t),
        "192.0.2.60",
        PamOutcome::Success,
        "over TLS",
    );
    plain.expect_login(
        "tina",
        &tina.code_at(t),
        "192.0.2.61",
        PamOutcome::AuthErr,
        "the code accepted over TLS, on the plain host",
    );
    plain.expect_login(
        "tina",
        &tina.code_at(t + 30),
        "192.0.2.62",
        PamOutcome::Success,
        "the next step on the plain host",
    );
    let sessions = fleet.cluster.psql(
        "SELECT s.ssl, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'otpd' GROUP BY s.ssl ORDER BY s.ssl;",
    );
    println!("otpd's sessions by encryption (ssl|count): {sessions:?}");
    assert!(
        sessions.lines().any(|l| l.starts_with("t|")),
        "no encrypted session of otpd in pg_stat_ssl: {sessions:?}"
    );

    let wrong_ca = fleet.new_host("W", &limits);
    fleet.install_key(&wrong_ca);
    let other = another_authority(&wrong_ca.dir);
    use_tls(&wrong_ca, &fleet.cluster.url_tls(), &other);
    let out = wrong_ca.serve_refused("a database certificate of another CA");
    let said = refusal_message(&out);
    println!(
        "otpd serve with another CA: {} after {} ms: {said}",
        out.status,
        out.elapsed.as_millis()
    );
    // As observed: "otpd: store error: cannot reach the PostgreSQL store
    // otpd@localhost:PORT/otpd: error performing TLS handshake: invalid
    // peer certificate: UnknownIssuer".
    for words in [
        "PostgreSQL store",
        "localhost",
        "TLS handshake",
        "invalid peer certificate",
        "UnknownIssuer",
    ] {
        assert!(
            said.contains(words),
            "the refusal does not say {words:?}: {said}"
        );
    }
    assert!(
        !out.stderr.contains(&fleet.cluster.password),
        "the refusal shows the database password:\n{out}"
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "the refusal took {} ms",
        out.elapsed.as_millis()
    );
    assert!(
        !wrong_ca.socket.exists(),
        "the refused daemon left a socket behind"
    );
    fleet.assert_no_secrets_leaked();
}

#[test]
fn a_host_with_another_key_file_refuses_to_start_naming_both_key_ids() {
    if !require("fleet: another key file", PAM) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_key", 2, &Limits::default()) else {
        return;
    };
    let (a, b) = (&fleet.hosts[0], &fleet.hosts[1]);
    let t = settled_now(30, 10);
    let alice = a.enroll_active("alice", &[], t - 30);

    let stranger = fleet.new_host("D", &Limits::default());
    let other_id = stranger.keygen(&stranger.key_file);
    assert_ne!(other_id, fleet.key_id, "two keygens made the same key");
    fleet.use_database(&stranger, &fleet.cluster.url());
    let out = stranger.serve_refused("another key file than the fleet's");
    let said = refusal_message(&out);
    println!(
        "otpd serve with another key file: {} after {} ms: {said}",
        out.status,
        out.elapsed.as_millis()
    );
    for id in [&fleet.key_id, &other_id] {
        assert!(
            said.contains(id.as_str()),
            "the refusal does not name key ID {id} (the fleet's is {}, this host's {other_id}): \
             {said}",
            fleet.key_id
        );
    }
    assert!(
        said.contains(&*stranger.key_file.to_string_lossy()),
        "the refusal does not name the key file: {said}"
    );
    assert_eq!(
        fleet
            .cluster
            .psql("SELECT value FROM otpd_meta WHERE key = 'key_id';")
            .trim(),
        fleet.key_id,
        "the database still records the fleet's key ID"
    );

    // The hosts with the fleet's key work on.
    b.expect_login(
        "alice",
        &alice.code_at(t),
        "192.0.2.70",
        PamOutcome::Success,
        "alice on B after the stranger's refusal",
    );
    a.expect_login(
        "alice",
        &alice.code_at(t),
        "192.0.2.71",
        PamOutcome::AuthErr,
        "the same code on A",
    );
    fleet.assert_no_secrets_leaked();
}
