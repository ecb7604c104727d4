//! The fleet's database put back to an older copy (a backup restored, by
//! mistake or by someone who can write the database but not read the key),
//! against real `otpd` hosts on a real PostgreSQL cluster: every host
//! remembers, in its anchor outside the database, the highest generation of
//! the database it saw, and refuses a database that went backwards, or
//! whose generation was raised without the key.

use otpd_tests::fleet::Fleet;
use otpd_tests::{settled_now, Limits, TestEnv};

/// The tables of otpd's schema, as a backup of the database holds them.
const TABLES: &[&str] = &["otpd_users", "otpd_sources", "otpd_meta", "otpd_tokens"];

/// `CREATE TABLE snap_T AS TABLE T` for every table.
fn snapshot_sql() -> String {
    TABLES
        .iter()
        .map(|t| format!("CREATE TABLE snap_{t} AS TABLE {t};"))
        .collect()
}

/// Puts every table back as the snapshot holds it, in one transaction.
fn restore_sql() -> String {
    let mut sql = String::from("BEGIN;");
    for t in TABLES {
        sql.push_str(&format!(
            "DELETE FROM {t}; INSERT INTO {t} SELECT * FROM snap_{t};"
        ));
    }
    sql.push_str("COMMIT;");
    sql
}

/// The host's `otpd:` lines of a refused start.
fn refusal(host: &TestEnv) -> String {
    host.serve_refused("a database put back to an older copy")
        .otpd_lines()
}

/// Starts the host's daemon if it comes up; `Err` with its `otpd:` lines
/// if it refuses.
fn try_start(host: &mut TestEnv) -> Result<(), String> {
    host.try_serve()
        .map_err(|printed| otpd_tests::process::otpd_lines(&printed))?;
    host.spawn_daemon();
    Ok(())
}

fn anchor_of(host: &TestEnv) -> std::path::PathBuf {
    host.dir.join("state-anchor").join("postgres.anchor")
}

#[test]
fn a_database_put_back_to_an_older_copy_is_refused_by_every_host() {
    let Some(mut fleet) = Fleet::start("pg_rollback", 2, &Limits::default()) else {
        return;
    };
    let t = settled_now(30, 20);
    let alice = fleet.hosts[0].enroll_active("alice", &[], t - 30);
    fleet.hosts[1].enroll_active("bob", &[], t - 30);
    // The backup.
    fleet.cluster.psql(&snapshot_sql());

    // After it: alice's code is spent on A, bob is removed on B.
    let used = alice.code_at(t);
    fleet.hosts[0].otpd_expect(&["verify", "alice", &used], 0);
    fleet.hosts[1].otpd_expect(&["remove", "bob"], 0);
    for host in &mut fleet.hosts {
        host.kill_daemon(libc::SIGTERM);
        println!(
            "[pg_rollback] {}: anchor {}",
            host.name,
            std::fs::read_to_string(anchor_of(host)).unwrap_or_else(|e| e.to_string())
        );
    }

    // The backup put back.
    fleet.cluster.psql(&restore_sql());
    for index in 0..fleet.hosts.len() {
        let said = match try_start(&mut fleet.hosts[index]) {
            Err(said) => said,
            Ok(()) => {
                let host = &fleet.hosts[index];
                let replay = host.otpd(&["verify", "alice", &used]);
                panic!(
                    "{} started on the older copy of the database: alice's spent code was {} \
                     (exit {}), bob is {}",
                    host.name,
                    if replay.status.success() {
                        "ACCEPTED again"
                    } else {
                        "refused"
                    },
                    replay.status,
                    if host.list_entry("bob").is_some() {
                        "BACK"
                    } else {
                        "still removed"
                    }
                );
            }
        };
        let host = &fleet.hosts[index];
        println!("[pg_rollback] {} on the older copy: {said}", host.name);
        let anchor = anchor_of(host).display().to_string();
        assert!(
            said.contains("went backwards")
                && said.contains(&anchor)
                && said.contains(&format!("delete {anchor}")),
            "{}: the refusal must say the database went backwards, name the anchor and \
             what to do: {said}",
            host.name
        );
    }

    // Its generation raised by someone without the key, so that it looks
    // newer than what the hosts saw: refused as well.
    fleet.cluster.psql(
        "UPDATE otpd_meta SET value = jsonb_set(value::jsonb, '{generation}', '1000000')::text \
         WHERE key = 'meta';",
    );
    for host in &fleet.hosts {
        let said = refusal(host);
        println!(
            "[pg_rollback] {} with a forged generation: {said}",
            host.name
        );
        assert!(
            said.contains("metadata") && said.contains("authentication check"),
            "{}: a generation raised without the key must be refused: {said}",
            host.name
        );
    }
    fleet.cluster.psql(&restore_sql());

    // Restored on purpose: each host's anchor deleted, as the message says.
    for host in &mut fleet.hosts {
        std::fs::remove_file(anchor_of(host)).expect("delete the anchor");
        host.spawn_daemon();
    }
    assert!(
        fleet.hosts[0].list_entry("bob").is_some(),
        "the restored database is served as it is"
    );
    fleet.hosts[0].otpd_expect(&["verify", "alice", &alice.code_at(t + 30)], 0);
    fleet.assert_no_secrets_leaked();
}
