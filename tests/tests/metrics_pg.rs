//! The PostgreSQL store's metrics through the real daemon on a real
//! PostgreSQL server ([`Fleet`] of one host with `[metrics] listen`):
//! `otpd_postgres_up`, the pool's gauges and the commits' histogram while
//! the database works, while it is stopped, while it hangs (every server
//! process SIGSTOPped), and after each return.

use otpd_tests::fleet::Fleet;
use otpd_tests::scrape::{metrics_port, sample, scrape, value, METRICS_SECTION};
use otpd_tests::totp::unix_now;
use otpd_tests::{require, settled_now, Enrollment, Limits, PamOutcome, TestEnv, PAM};
use std::time::{Duration, Instant};

const UP: &str = "otpd_postgres_up";
const IN_USE: &str = "otpd_postgres_pool_connections{state=\"in_use\"}";
const IDLE: &str = "otpd_postgres_pool_connections{state=\"idle\"}";
const MAX: &str = "otpd_postgres_pool_max_connections";
const WAITING: &str = "otpd_postgres_pool_waiting";
const COMMITS: &str = "otpd_store_commit_duration_seconds_count";
/// `pool_size` of [`Fleet::use_database`].
const POOL_SIZE: f64 = 16.0;

/// The PostgreSQL gauges of a scrape, checked for sanity: every one
/// present, in use + idle (the pool's size) at most its maximum.
#[derive(Debug, Clone, Copy)]
struct Gauges {
    up: f64,
    in_use: f64,
    idle: f64,
    waiting: f64,
    commits: f64,
}

fn gauges(port: u16, when: &str) -> Gauges {
    let text = scrape(port);
    let g = Gauges {
        up: value(&text, UP),
        in_use: value(&text, IN_USE),
        idle: value(&text, IDLE),
        waiting: value(&text, WAITING),
        commits: value(&text, COMMITS),
    };
    println!("{when}: {g:?}");
    assert_eq!(value(&text, MAX), POOL_SIZE, "{when}:\n{text}");
    assert!(g.up == 0.0 || g.up == 1.0, "{when}:\n{text}");
    assert!(
        g.in_use >= 0.0 && g.idle >= 0.0 && g.waiting >= 0.0,
        "{when}:\n{text}"
    );
    assert!(g.in_use + g.idle <= POOL_SIZE, "{when}:\n{text}");
    g
}

/// [`gauges`] once the daemon's background work is done: after a login
/// the audit trail's head is written by a thread of its own (at most 5
/// times a second), which holds a pool connection for a moment; the pool
/// must then be idle again within 3 s.
fn settled_gauges(port: u16, when: &str) -> Gauges {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let g = gauges(port, when);
        if (g.in_use == 0.0 && g.waiting == 0.0) || std::time::Instant::now() > deadline {
            return g;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The next user's login with a right code, which must fail closed
/// (PAM_AUTHINFO_UNAVAIL: the database does not answer).
fn login_fails_closed(host: &TestEnv, users: &mut impl Iterator<Item = Enrollment>) {
    let user = users.next().expect("users");
    let login = host.pam_login(&user.user, &user.code_at(unix_now()), "192.0.2.7", "");
    assert_eq!(
        login.outcome,
        PamOutcome::AuthInfoUnavail,
        "{}",
        login.output
    );
}

/// Sends `signal` to every process of the fleet's PostgreSQL server.
fn signal_server(fleet: &Fleet, signal: i32) -> usize {
    let pids = fleet.cluster.server_processes();
    for pid in &pids {
        let _ = otpd_tests::process::try_signal(*pid, signal);
    }
    pids.len()
}

/// SIGCONT to the server when dropped, also when the test fails.
struct Resume<'a>(&'a Fleet);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        signal_server(self.0, libc::SIGCONT);
    }
}

/// Logs in with the next of `users` (each logs in once: a login that
/// failed closed may still have spent its code) until one is accepted,
/// within `limit`; returns how many attempts it took.
fn login_until_accepted(
    host: &TestEnv,
    users: &mut impl Iterator<Item = Enrollment>,
    limit: Duration,
) -> usize {
    let started = Instant::now();
    let mut attempts = Vec::new();
    loop {
        let user = users.next().expect("enough users enrolled for the test");
        let login = host.pam_login(&user.user, &user.code_at(unix_now()), "192.0.2.7", "");
        attempts.push(format!(
            "{} ms: {:?}",
            started.elapsed().as_millis(),
            login.outcome
        ));
        if login.outcome == PamOutcome::Success {
            return attempts.len();
        }
        assert_eq!(
            login.outcome,
            PamOutcome::AuthInfoUnavail,
            "a login after the database's return: {}",
            login.output
        );
        assert!(
            started.elapsed() < limit,
            "no login accepted within {limit:?} of the database's return: {attempts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_postgres_gauges_follow_the_pool_an_outage_and_a_hang() {
    if !require("metrics: PostgreSQL gauges", PAM) {
        return;
    }
    let Some(mut fleet) = Fleet::prepare("metrics_pg", 1, &Limits::default()) else {
        return;
    };
    fleet.hosts[0].append_config(METRICS_SECTION);
    fleet.hosts[0].spawn_daemon();
    let host = &fleet.hosts[0];
    let port = metrics_port(host);
    let t = settled_now(30, 5);
    let mut users = (0..12)
        .map(|n| host.enroll_active(&format!("pg-metrics-{n}"), &[], t - 30))
        .collect::<Vec<_>>()
        .into_iter();

    // The database works: up, a sane pool, every accepted login's
    // commit timed.
    let before = gauges(port, "after start-up");
    assert_eq!(before.up, 1.0);
    for n in 0..3 {
        let user = users.next().expect("users");
        let login = host.pam_login(&user.user, &user.code_at(unix_now()), "192.0.2.7", "");
        assert_eq!(
            login.outcome,
            PamOutcome::Success,
            "login {n}: {}",
            login.output
        );
    }
    let working = settled_gauges(port, "after 3 logins");
    assert_eq!(working.up, 1.0);
    assert!(
        working.commits >= before.commits + 3.0,
        "3 logins, {} commits timed",
        working.commits - before.commits
    );
    assert!(
        working.in_use + working.idle >= 1.0,
        "the pool holds no connection after 3 logins: {working:?}"
    );
    assert_eq!(working.in_use, 0.0, "no login runs now: {working:?}");
    assert_eq!(working.waiting, 0.0, "no login runs now: {working:?}");

    // Stopped: the next login fails closed, and the gauge says so.
    fleet.cluster.stop();
    login_fails_closed(host, &mut users);
    let down = settled_gauges(port, "database stopped, after a login");
    assert_eq!(down.up, 0.0, "otpd_postgres_up with the database stopped");
    assert_eq!(down.in_use, 0.0, "{down:?}");

    // Back: a login works again without a restart of otpd, and so does
    // the gauge.
    fleet.cluster.start_again();
    let attempts = login_until_accepted(host, &mut users, Duration::from_secs(15));
    let back = gauges(port, &format!("database back, after {attempts} login(s)"));
    assert_eq!(back.up, 1.0, "otpd_postgres_up after the database's return");
    assert!(back.commits > down.commits, "{back:?} after {down:?}");

    // Hung: every server process stopped, a login fails closed within the
    // store's timeout, and the gauge says the database did not answer.
    let stopped = signal_server(&fleet, libc::SIGSTOP);
    println!("{stopped} server processes stopped (SIGSTOP)");
    let resume = Resume(&fleet);
    login_fails_closed(host, &mut users);
    let hung = gauges(port, "database hung, after a login");
    assert_eq!(hung.up, 0.0, "otpd_postgres_up with the database hung");
    drop(resume);
    let attempts = login_until_accepted(host, &mut users, Duration::from_secs(15));
    let after = gauges(
        port,
        &format!("database resumed, after {attempts} login(s)"),
    );
    assert_eq!(after.up, 1.0, "otpd_postgres_up after the database resumed");

    // The sled store's daemon has no PostgreSQL gauges at all (its scrape
    // is checked in metrics.rs); here, the scrape names no user.
    let text = scrape(port);
    assert!(sample(&text, UP).is_some());
    assert!(!text.contains("pg-metrics"), "a user name in:\n{text}");
    fleet.assert_no_secrets_leaked();
}
