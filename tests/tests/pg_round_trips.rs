//! A login on the PostgreSQL store is one read and one write (issue 19):
//! the record and the caller's counter in one `SELECT`, then one
//! conditional `UPDATE`; the conversation's first prompt reads nothing.
//! Seen from the server: its statement log (`log_statement = 'all'` in the
//! test cluster, tests/src/postgres.rs), through the real module, libpam
//! and daemon.

use otpd_tests::fleet::Fleet;
use otpd_tests::{settled_now, Limits, PamOutcome};
use std::time::Duration;

/// The statements the server ran, from its log since byte `from`.
/// The statements the server ran since byte `from` of its log, leaving out
/// the audit trail's head (`otpd_meta`, written by a thread of its own
/// after the login's audit lines, at most 5 times a second: not part of
/// the login), which the test counts apart.
fn statements_since(fleet: &Fleet, from: usize) -> Vec<String> {
    let log = fleet.cluster.server_log();
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("LOG:  execute") || l.contains("LOG:  statement:"))
        .filter(|l| !is_audit_head(l))
        .map(str::to_owned)
        .collect()
}

fn is_audit_head(statement: &str) -> bool {
    statement.contains("INSERT INTO otpd_meta") && statement.contains("ON CONFLICT (key)")
}

fn audit_head_writes_since(fleet: &Fleet, from: usize) -> usize {
    let log = fleet.cluster.server_log();
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("LOG:  execute") && is_audit_head(l))
        .count()
}

#[test]
fn a_login_is_one_read_and_one_write() {
    let Some(mut fleet) = Fleet::prepare("pg_round_trips", 1, &Limits::default()) else {
        return;
    };
    fleet.hosts[0].spawn_daemon();
    let host = &fleet.hosts[0];
    let t = settled_now(30, 15);
    let alice = host.enroll_active("alice", &[], t - 30);
    let bob = host.enroll_active("bob", &[], t - 30);
    let carol = host.enroll_active("carol", &[], t - 30);
    // Warm-up: a login through the daemon's pool before the counted ones.
    let warm = host.pam_login("carol", &carol.code_at(t), "192.0.2.8", "");
    assert_eq!(warm.outcome, PamOutcome::Success, "{}", warm.output);

    for (round, (user, enrollment, rhost)) in
        [("alice", &alice, "192.0.2.9"), ("bob", &bob, "192.0.2.10")]
            .into_iter()
            .enumerate()
    {
        std::thread::sleep(Duration::from_millis(300));
        let from = fleet.cluster.server_log().len();
        let login = host.pam_login(user, &enrollment.code_at(t), rhost, "");
        assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
        std::thread::sleep(Duration::from_millis(500));
        let statements = statements_since(&fleet, from);
        let heads = audit_head_writes_since(&fleet, from);
        println!(
            "[pg_round_trips] login {round} of {user}: {} statements (and {heads} write(s) of \
             the audit trail's head)\n  {}",
            statements.len(),
            statements.join("\n  ")
        );
        assert!(
            heads <= 2,
            "the audit head written {heads} times for one login"
        );
        assert_eq!(
            statements.len(),
            2,
            "a login should be one read and one write:\n{}",
            statements.join("\n")
        );
        assert!(
            statements[0].contains("SELECT") && statements[0].contains("otpd_sources"),
            "the read: {}",
            statements[0]
        );
        assert!(
            statements[1].contains("UPDATE otpd_users"),
            "the write: {}",
            statements[1]
        );
    }
}
