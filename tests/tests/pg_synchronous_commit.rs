//! A fleet's commits are durable whatever the database's default: otpd sets
//! `synchronous_commit` on its own commit transactions (`on`, or
//! `remote_apply` with `[store] synchronous_commit`), so a server or a
//! database configured with `synchronous_commit = off` (which acknowledges
//! a COMMIT before its WAL is flushed: a crash of the server then loses a
//! spent code) does not weaken "a code is good once".
//!
//! Seen from the database: a deferred constraint trigger on every table
//! otpd writes records, at each commit, the value of `synchronous_commit`
//! the committing transaction runs with, through the real `otpd` binary.

use otpd_tests::fleet::Fleet;
use otpd_tests::{settled_now, Limits, TestEnv};

/// The log table, the function and a trigger on each table otpd writes.
const TRIGGERS: &str = "
CREATE TABLE sc_log (at timestamptz NOT NULL DEFAULT clock_timestamp(), tbl text, op text, setting text);
CREATE FUNCTION sc_log_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO sc_log (tbl, op, setting)
    VALUES (TG_TABLE_NAME, TG_OP, current_setting('synchronous_commit'));
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER sc_users AFTER INSERT OR UPDATE OR DELETE ON otpd_users
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sc_log_commit();
CREATE CONSTRAINT TRIGGER sc_sources AFTER INSERT OR UPDATE OR DELETE ON otpd_sources
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sc_log_commit();
CREATE CONSTRAINT TRIGGER sc_decoy AFTER UPDATE ON otpd_decoy
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sc_log_commit();
";

/// `(table, operation, setting)` of every logged commit, oldest first.
fn logged(fleet: &Fleet) -> Vec<(String, String, String)> {
    fleet
        .cluster
        .psql("SELECT tbl, op, setting FROM sc_log ORDER BY at;")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split('|').map(str::to_owned);
            (
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            )
        })
        .collect()
}

/// Enrols, logs in, fails a code, logs in an unknown user, removes: every
/// kind of commit the daemon makes.
fn every_kind_of_commit(host: &TestEnv, user: &str, t: u64) {
    let enrollment = host.enroll_active(user, &[], t - 30);
    host.otpd_expect(&["verify", user, &enrollment.code_at(t)], 0);
    host.otpd_expect(&["verify", user, &enrollment.wrong_code(t + 30)], 1);
    host.otpd_expect(&["verify", "nobody-enrolled", "123456"], 1);
    host.otpd_expect(&["remove", user], 0);
}

#[test]
fn commits_run_with_synchronous_commit_on_whatever_the_database_default() {
    let Some(mut fleet) = Fleet::prepare("pg_sync_commit", 1, &Limits::default()) else {
        return;
    };
    // The database's default: commits acknowledged before their WAL is
    // flushed.
    fleet.cluster.psql(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off;",
        fleet.cluster.database
    ));
    let default = fleet.cluster.psql("SHOW synchronous_commit;");
    assert_eq!(default.trim(), "off", "the database default did not take");
    fleet.hosts[0].spawn_daemon();
    fleet.cluster.psql(TRIGGERS);

    let t = settled_now(30, 15);
    every_kind_of_commit(&fleet.hosts[0], "alice", t);
    let seen = logged(&fleet);
    println!("[pg_sync_commit] default off, otpd with its default: {seen:?}");
    let tables: std::collections::BTreeSet<&str> =
        seen.iter().map(|(tbl, _, _)| tbl.as_str()).collect();
    assert!(
        ["otpd_users", "otpd_sources", "otpd_decoy"]
            .iter()
            .all(|t| tables.contains(t)),
        "every kind of commit was logged: {seen:?}"
    );
    let weak: Vec<_> = seen.iter().filter(|(_, _, s)| s != "on").collect();
    assert!(
        weak.is_empty(),
        "{} of {} commits ran with the database's synchronous_commit instead of on: {weak:?}",
        weak.len(),
        seen.len()
    );

    // remote_apply, by config.
    fleet.hosts[0].kill_daemon(libc::SIGTERM);
    fleet.hosts[0].append_config("synchronous_commit = \"remote_apply\"\n");
    fleet.cluster.psql("DELETE FROM sc_log;");
    fleet.hosts[0].spawn_daemon();
    every_kind_of_commit(&fleet.hosts[0], "bob", settled_now(30, 15));
    let seen = logged(&fleet);
    println!("[pg_sync_commit] remote_apply by config: {seen:?}");
    assert!(!seen.is_empty(), "nothing logged");
    assert!(
        seen.iter().all(|(_, _, s)| s == "remote_apply"),
        "[store] synchronous_commit = \"remote_apply\" was not used: {seen:?}"
    );
    // A user left in the database, for the secrets check.
    fleet.hosts[0].enroll("carol", &[]);
    fleet.assert_no_secrets_leaked();
}
