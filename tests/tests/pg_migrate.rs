//! `otpd migrate --to postgres` through the real binaries against a real
//! PostgreSQL cluster ([`PgCluster`]): a host's sled store, with users in
//! every state, moves into the database and the daemon on the database then
//! behaves as it did on sled (the replay guard, the backoff per source and
//! per user, pending enrolments, recovery codes, phones and links all
//! survive); a second run copies nothing; a run that would overwrite newer
//! data, or seal with another key than the database's, is refused and
//! changes nothing; and the `[store]` section's mistakes get messages that
//! name them, never the database password.

use otpd_tests::postgres::PgCluster;
use otpd_tests::process::Output;
use otpd_tests::sms::Outbox;
use otpd_tests::totp::recovery_codes_in;
use otpd_tests::totp::unix_now;
use otpd_tests::{net, pages, webclient};
use otpd_tests::{require, secrets, settled_now, Limits, PamOutcome, TestEnv, PAM};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Seconds per code of alice in the big migration, whose code spent on
/// sled is tried again on PostgreSQL: a code of the current 300 s step
/// stays inside the window (one step either side) for at least 300 s,
/// however long the migrations take.
const LONG_PERIOD: u64 = 300;

/// Backoffs long enough (10 minutes) that a throttled source or user is
/// still throttled however long the migration takes; 8 failures across
/// sources throttle a user everywhere.
fn long_backoff() -> Limits {
    Limits {
        max_failures: 5,
        base_delay: "\"10m\"".into(),
        max_delay: "\"15m\"".into(),
        user_max_failures: 8,
    }
}

/// Writes `text` to `path` with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// `url` in `db-url` (mode 0600) in the env's dir; returns the file.
fn write_url_file(env: &TestEnv, url: &str) -> PathBuf {
    let path = env.dir.join("db-url");
    write_file(&path, &format!("{url}\n"), 0o600);
    path
}

/// The `[store]` section of a daemon on PostgreSQL reading the connection
/// string from `url_file`.
fn postgres_store(url_file: &Path) -> String {
    format!(
        "[store]\nkind = \"postgres\"\nurl_file = \"{}\"\ntimeout = \"5s\"\npool_size = 8\n",
        url_file.display()
    )
}

/// Switches the env (daemon stopped) from sled to the database behind
/// `url`: writes the url_file, appends `[store]`.
fn switch_to_postgres(env: &TestEnv, url: &str) {
    let url_file = write_url_file(env, url);
    env.append_config(&postgres_store(&url_file));
}

/// `otpd migrate --to postgres [URL]`.
fn migrate(env: &TestEnv, url: Option<&str>) -> Output {
    let mut args = vec!["migrate", "--to", "postgres"];
    args.extend(url);
    env.otpd(&args)
}

/// Asserts a successful migration and its counts, as printed.
fn assert_migrated(
    env: &TestEnv,
    pg: &PgCluster,
    out: &Output,
    users: usize,
    copied: usize,
    counters: usize,
    already: usize,
) {
    assert_eq!(out.status.code(), Some(0), "otpd migrate failed: {out}");
    let expected = format!(
        "{users} users in the sled store {}: {copied} copied (with {counters} failure counters), \
         {already} already in the database and identical; verified: all {users} read back \
         identical from {}@127.0.0.1:{}/{}",
        env.state_dir.join("store").display(),
        pg.user,
        pg.port,
        pg.database
    );
    assert!(
        out.stdout.contains(&expected),
        "otpd migrate printed other counts than\n  {expected}\n{out}"
    );
    assert_no_password(pg, out, "otpd migrate");
}

/// The cluster's password is in neither stdout nor stderr.
fn assert_no_password(pg: &PgCluster, out: &Output, what: &str) {
    assert!(
        !out.stdout.contains(&pg.password) && !out.stderr.contains(&pg.password),
        "{what} printed the database password: {out}"
    );
}

/// `otpd list --json` with the volatile field (`throttled_for_secs`, which
/// counts down) replaced by whether it is set.
fn stable_list(env: &TestEnv) -> Vec<Value> {
    env.list()
        .into_iter()
        .map(|mut entry| {
            let throttled = entry["throttled_for_secs"].is_u64();
            entry["throttled_for_secs"] = Value::Bool(throttled);
            entry
        })
        .collect()
}

/// `name, version, record` of every user and every source counter, as the
/// database holds them.
fn dump(pg: &PgCluster) -> String {
    pg.psql(
        "SELECT 'user', name, version, encode(record, 'hex') FROM otpd_users ORDER BY name; \
         SELECT 'source', name, source, failures, last_failure FROM otpd_sources \
         ORDER BY name, source;",
    )
}

/// The names in otpd_users.
fn users_in_database(pg: &PgCluster) -> Vec<String> {
    pg.psql("SELECT name FROM otpd_users ORDER BY name;")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn count(pg: &PgCluster, table: &str) -> u64 {
    let out = pg.psql(&format!("SELECT count(*) FROM {table};"));
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("count of {table}: {out:?}: {e}"))
}

/// SIGTERM, which must end the daemon with status 0.
fn stop_daemon(env: &mut TestEnv) {
    let status = env.kill_daemon(libc::SIGTERM);
    assert!(
        status.success(),
        "otpd serve ended with {status} on SIGTERM:\n{}",
        env.log()
    );
}

/// The daemon's log lines since byte `from`.
fn log_since(env: &TestEnv, from: usize) -> String {
    env.log().get(from..).unwrap_or_default().to_owned()
}

/// The path of the link in what `otpd enroll … --link` printed.
fn link_path(out: &Output) -> String {
    pages::link_in(&out.stdout)
        .map(|url| pages::path_of(&url))
        .unwrap_or_else(|| panic!("otpd enroll --link printed no link: {out}"))
}

#[test]
fn a_sled_store_moves_to_postgres_with_every_user_in_every_state() {
    if !require("a_sled_store_moves_to_postgres", PAM) {
        return;
    }
    let Some(pg) = PgCluster::start("pg_migrate_all") else {
        return;
    };
    // The daemon's log (at trace level) must never show it.
    secrets::remember(&pg.password);
    let mut env = TestEnv::without_daemon("pg_migrate_all", &long_backoff());
    let outbox = Outbox::create(&env.dir);
    env.append_config(&format!(
        "[sms]\ncommand = \"{}\"\nmax_per_hour = 5\nmessage = \"otpd code {{code}}\"\n\n{}",
        outbox.script.display(),
        pages::WEB_SECTION
    ));
    env.spawn_daemon();
    let web_port = pages::port(&env, "http");

    // Every state a user can be in on this host. Each user is confirmed
    // with the code of the step before the one it is sent in (computed
    // with at least 5 s left in it), so that any later code logs in.
    let paul = env.enroll("paul", &[]);
    assert_eq!(env.list_entry("paul").unwrap()["state"], "pending");

    let (source_a, source_b) = ("198.51.100.1", "198.51.100.2");
    let bob = env.enroll_active("bob", &[], settled_now(30, 5) - 30);
    env.fail_times(&bob, unix_now(), source_a, 5);
    env.expect_login(
        "bob",
        &bob.code_at(unix_now()),
        source_a,
        PamOutcome::MaxTries,
        "bob after 5 wrong codes from A",
    );

    let carol = env.enroll_active("carol", &[], settled_now(30, 5) - 30);
    env.fail_times(&carol, unix_now(), "192.0.2.1", 4);
    env.fail_times(&carol, unix_now(), "192.0.2.2", 4);
    assert_eq!(env.list_entry("carol").unwrap()["state"], "throttled");

    let _dave = env.enroll_active("dave", &[], settled_now(30, 5) - 30);
    let out = env.otpd_expect(&["recovery-codes", "dave", "--count", "3"], 0);
    let recovery = recovery_codes_in(&out.stdout);
    assert_eq!(recovery.len(), 3, "{out}");
    env.expect_login(
        "dave",
        &recovery[0],
        "192.0.2.40",
        PamOutcome::Success,
        "dave's first recovery code on sled",
    );

    let _frank = env.enroll_active("frank", &[], settled_now(30, 5) - 30);
    env.otpd_expect(&["phone", "frank", "+31612345678"], 0);
    let texted = outbox.code(1);
    env.otpd_expect(&["phone", "frank", "--confirm", &texted], 0);
    assert_eq!(env.list_entry("frank").unwrap()["phone"], true);

    let out = env.otpd_expect(&["enroll", "gina", "--link"], 0);
    let link = link_path(&out);
    assert_eq!(
        webclient::request(web_port, "GET", &link, "", "").status,
        200,
        "gina's link before"
    );

    // alice last, with 300 s codes: the code she spends on sled must be
    // still inside the window when its replay is tried on PostgreSQL, and
    // her next code too, however long the migrations take (under 300 s,
    // checked). Confirmed with the previous step's code, sent with at
    // least 15 s left in the step.
    let period = LONG_PERIOD.to_string();
    let t = settled_now(LONG_PERIOD, 15);
    let alice = env.enroll_active("alice", &["--period", &period], t - LONG_PERIOD);
    let spent = alice.code_at(t);
    let spent_at = Instant::now();
    env.expect_login(
        "alice",
        &spent,
        "192.0.2.10",
        PamOutcome::Success,
        "alice on sled",
    );

    let before = stable_list(&env);
    println!(
        "on sled before the migration:\n{}",
        serde_json::to_string_pretty(&before).unwrap()
    );
    let states: Vec<(&str, &str)> = before
        .iter()
        .map(|e| (e["user"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("alice", "active"),
            ("bob", "active"),
            ("carol", "throttled"),
            ("dave", "active"),
            ("frank", "active"),
            ("gina", "pending"),
            ("paul", "pending"),
        ]
    );
    stop_daemon(&mut env);

    // Counters: bob's from A, carol's from two hosts; successes clear their
    // own source, so nobody else has one.
    let url = pg.url();
    let started = Instant::now();
    let first = migrate(&env, Some(&url));
    println!(
        "first otpd migrate ({} ms):\n{}{}",
        started.elapsed().as_millis(),
        first.stdout,
        first.stderr
    );
    assert_migrated(&env, &pg, &first, 7, 7, 3, 0);
    assert!(
        first.stdout.contains("kind = \"postgres\"") && first.stdout.contains("key file"),
        "says what to do next: {first}"
    );
    assert_eq!(
        users_in_database(&pg),
        ["alice", "bob", "carol", "dave", "frank", "gina", "paul"]
    );
    assert_eq!(count(&pg, "otpd_sources"), 3, "{}", dump(&pg));
    let sources = pg.psql("SELECT name, source, failures FROM otpd_sources ORDER BY name, source;");
    assert!(sources.contains("bob|"), "{sources}");
    assert_eq!(
        sources.lines().filter(|l| l.starts_with("carol|")).count(),
        2,
        "{sources}"
    );
    let after_first = dump(&pg);

    let second = migrate(&env, Some(&url));
    println!("second otpd migrate:\n{}{}", second.stdout, second.stderr);
    assert_migrated(&env, &pg, &second, 7, 0, 0, 7);
    assert_eq!(dump(&pg), after_first, "a second run changed the database");

    // On PostgreSQL from here; the config's url_file is the default URL.
    switch_to_postgres(&env, &url);
    let third = migrate(&env, None);
    assert_migrated(&env, &pg, &third, 7, 0, 0, 7);
    env.otpd_expect(&["check-config"], 0);

    let log_from = env.log().len();
    env.spawn_daemon();
    let web_port = pages::port(&env, "http");
    let status = env.otpd_expect(&["status"], 0);
    assert!(
        status
            .stdout
            .contains(&format!("PostgreSQL {}@127.0.0.1:{}/", pg.user, pg.port)),
        "otpd status names the database: {status}"
    );
    assert_no_password(&pg, &status, "otpd status");

    // The same users in the same states, before anyone logs in.
    let after = stable_list(&env);
    assert_eq!(
        serde_json::to_string_pretty(&after).unwrap(),
        serde_json::to_string_pretty(&before).unwrap(),
        "otpd list on PostgreSQL differs from sled's"
    );

    // The replay guard came along: the code accepted on sled is refused,
    // as a replay (not as a wrong code), and the next one logs in.
    assert!(
        spent_at.elapsed() < Duration::from_secs(LONG_PERIOD),
        "the migrations took {} s, longer than alice's spent code stays inside the window \
         ({LONG_PERIOD} s): its replay can no longer be told from a wrong code",
        spent_at.elapsed().as_secs()
    );
    env.expect_login(
        "alice",
        &spent,
        "192.0.2.10",
        PamOutcome::AuthErr,
        "alice's code spent on sled, on PostgreSQL",
    );
    let replayed = log_since(&env, log_from);
    assert!(
        replayed
            .lines()
            .any(|l| l.contains("user=\"alice\"") && l.contains("outcome=\"replayed\"")),
        "the code accepted on sled was not refused as a replay:\n{replayed}"
    );
    env.expect_login(
        "alice",
        &alice.code_at(t + LONG_PERIOD),
        "192.0.2.10",
        PamOutcome::Success,
        "alice's next code on PostgreSQL",
    );

    // bob is still throttled from A (the right code), not from B.
    let bob_code = bob.code_at(unix_now());
    env.expect_login(
        "bob",
        &bob_code,
        source_a,
        PamOutcome::MaxTries,
        "bob from A",
    );
    env.expect_login(
        "bob",
        &bob_code,
        source_b,
        PamOutcome::Success,
        "bob from B",
    );
    // carol is still throttled everywhere.
    env.expect_login(
        "carol",
        &carol.code_at(unix_now()),
        "203.0.113.7",
        PamOutcome::MaxTries,
        "carol from elsewhere",
    );
    let carol_entry = env.list_entry("carol").unwrap();
    assert_eq!(carol_entry["state"], "throttled", "{carol_entry}");
    assert!(
        carol_entry["throttled_for_secs"]
            .as_u64()
            .is_some_and(|s| (60..=600).contains(&s)),
        "carol's 10-minute backoff: {carol_entry}"
    );

    // paul's pending enrolment can be confirmed.
    env.otpd_expect(&["confirm", "paul", &paul.code_at(unix_now())], 0);
    assert_eq!(env.list_entry("paul").unwrap()["state"], "active");

    // dave's recovery codes: the one used on sled stays used; the others
    // work once.
    env.expect_login(
        "dave",
        &recovery[0],
        "192.0.2.41",
        PamOutcome::AuthErr,
        "dave's recovery code used on sled",
    );
    env.expect_login(
        "dave",
        &recovery[1],
        "192.0.2.41",
        PamOutcome::Success,
        "dave's second recovery code",
    );
    env.expect_login(
        "dave",
        &recovery[1],
        "192.0.2.41",
        PamOutcome::AuthErr,
        "dave's second recovery code again",
    );
    assert_eq!(env.list_entry("dave").unwrap()["recovery_codes"], 1);

    // gina's link still opens her enrolment page.
    let page = webclient::request(web_port, "GET", &link, "", "");
    assert_eq!(page.status, 200, "gina's link after the migration");
    assert!(page.body.contains("id=\"enrol\""), "not the enrolment page");

    // The database holds sealed records only.
    pg.psql("CHECKPOINT;");
    let in_clear = secrets::in_clear_under(&pg.data_dir, &secrets::all());
    assert!(
        in_clear.is_empty(),
        "TOTP secrets in clear in PostgreSQL's files: {in_clear:?}"
    );
    stop_daemon(&mut env);
    let leaked = env.leaked_secrets();
    assert!(leaked.is_empty(), "{leaked:?}");
}

#[test]
fn a_migration_over_newer_data_in_the_database_is_refused_and_copies_nothing() {
    if !require("a_migration_over_newer_data", PAM) {
        return;
    }
    let Some(pg) = PgCluster::start("pg_migrate_newer") else {
        return;
    };
    secrets::remember(&pg.password);
    let mut env = TestEnv::without_daemon("pg_migrate_newer", &long_backoff());
    let sled_config = std::fs::read_to_string(&env.config).unwrap();
    env.spawn_daemon();
    // alice with 300 s codes, confirmed with the previous step's code: her
    // code of `t`, spent on PostgreSQL below, stays inside the window for
    // the replay at the end, however long the restarts take (checked).
    let period = LONG_PERIOD.to_string();
    let t = settled_now(LONG_PERIOD, 15);
    let alice = env.enroll_active("alice", &["--period", &period], t - LONG_PERIOD);
    let _bob = env.enroll_active("bob", &[], settled_now(30, 5) - 30);
    stop_daemon(&mut env);
    assert_migrated(&env, &pg, &migrate(&env, Some(&pg.url())), 2, 2, 0, 0);

    // The daemon on PostgreSQL changes alice (a login spends a step).
    switch_to_postgres(&env, &pg.url());
    env.spawn_daemon();
    env.expect_login(
        "alice",
        &alice.code_at(t),
        "192.0.2.10",
        PamOutcome::Success,
        "alice on PostgreSQL",
    );
    let spent_at = Instant::now();
    stop_daemon(&mut env);

    // Back on sled, which still has the old alice, carl joins.
    std::fs::write(&env.config, &sled_config).unwrap();
    env.spawn_daemon();
    let _carl = env.enroll_active("carl", &[], settled_now(30, 5) - 30);
    stop_daemon(&mut env);

    let before = dump(&pg);
    let out = migrate(&env, Some(&pg.url()));
    println!("otpd migrate over newer data:\n{out}");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a migration over newer data: {out}"
    );
    assert!(
        out.stderr.contains("alice") && out.stderr.contains("different data"),
        "the refusal names the user whose data differs: {out}"
    );
    assert!(
        !out.stderr.contains("bob") && !out.stderr.contains("carl"),
        "the refusal names users that do not differ: {out}"
    );
    assert!(
        out.stderr.contains("nothing was copied"),
        "says nothing was copied: {out}"
    );
    assert_no_password(&pg, &out, "otpd migrate");
    assert_eq!(
        dump(&pg),
        before,
        "a refused migration changed the database"
    );
    assert_eq!(users_in_database(&pg), ["alice", "bob"], "carl was copied");

    // On PostgreSQL, alice's login still holds: the same code is a replay
    // (refused as such, not as a wrong code).
    switch_to_postgres(&env, &pg.url());
    assert!(
        spent_at.elapsed() < Duration::from_secs(LONG_PERIOD),
        "the test took {} s since alice's login, longer than her code stays inside the \
         window ({LONG_PERIOD} s)",
        spent_at.elapsed().as_secs()
    );
    let log_from = env.log().len();
    env.spawn_daemon();
    env.expect_login(
        "alice",
        &alice.code_at(t),
        "192.0.2.11",
        PamOutcome::AuthErr,
        "alice's spent code after the refused migration",
    );
    let replayed = log_since(&env, log_from);
    assert!(
        replayed
            .lines()
            .any(|l| l.contains("user=\"alice\"") && l.contains("outcome=\"replayed\"")),
        "alice's spent code was not refused as a replay:\n{replayed}"
    );
}

#[test]
fn a_migration_into_a_database_of_another_key_is_refused_naming_both_keys() {
    if !require("a_migration_into_a_database_of_another_key", PAM) {
        return;
    }
    let Some(pg) = PgCluster::start("pg_migrate_key") else {
        return;
    };
    secrets::remember(&pg.password);

    // Host B runs on the database first: its key becomes the fleet's.
    let mut fleet = TestEnv::without_daemon("pg_migrate_key_b", &long_backoff());
    let fleet_key = fleet.keygen(&fleet.key_file);
    switch_to_postgres(&fleet, &pg.url());
    fleet.spawn_daemon();
    // Each confirmed with the code of the step before the one it is sent
    // in, computed with at least 5 s left in it.
    let _zoe = fleet.enroll_active("zoe", &[], settled_now(30, 5) - 30);
    stop_daemon(&mut fleet);

    // Host A has a sled store sealed with a key of its own.
    let mut env = TestEnv::without_daemon("pg_migrate_key_a", &long_backoff());
    let own_key = env.keygen(&env.key_file);
    assert_ne!(own_key, fleet_key);
    env.spawn_daemon();
    let _alice = env.enroll_active("alice", &[], settled_now(30, 5) - 30);
    let _bob = env.enroll_active("bob", &[], settled_now(30, 5) - 30);
    stop_daemon(&mut env);

    let before = dump(&pg);
    let out = migrate(&env, Some(&pg.url()));
    println!("otpd migrate with another key:\n{out}");
    assert_ne!(
        out.status.code(),
        Some(0),
        "migrated with another key: {out}"
    );
    assert!(
        out.stderr.contains(&own_key) && out.stderr.contains(&fleet_key),
        "the refusal names this host's key ID {own_key} and the database's {fleet_key}: {out}"
    );
    assert_no_password(&pg, &out, "otpd migrate");
    assert_eq!(
        dump(&pg),
        before,
        "a refused migration changed the database"
    );
    assert_eq!(users_in_database(&pg), ["zoe"]);

    // The same store goes into a database nobody claimed yet.
    pg.create_database("otpd_fresh");
    let fresh = pg.url_for_db("otpd_fresh");
    let out = migrate(&env, Some(&fresh));
    assert_eq!(out.status.code(), Some(0), "into a fresh database: {out}");
    assert!(out.stdout.contains("2 copied"), "{out}");
}

#[test]
fn a_migration_is_refused_while_the_daemon_runs_and_without_a_sled_store() {
    if !require("a_migration_is_refused_while_the_daemon_runs", PAM) {
        return;
    }
    let Some(pg) = PgCluster::start("pg_migrate_busy") else {
        return;
    };
    secrets::remember(&pg.password);
    let mut env = TestEnv::without_daemon("pg_migrate_busy", &long_backoff());
    env.spawn_daemon();
    let _alice = env.enroll_active("alice", &[], settled_now(30, 5) - 30);

    let out = migrate(&env, Some(&pg.url()));
    println!("otpd migrate while the daemon runs:\n{out}");
    assert_ne!(
        out.status.code(),
        Some(0),
        "migrated under a running daemon: {out}"
    );
    assert!(
        out.stderr.contains("already running") && out.stderr.contains("stop"),
        "says to stop the daemon: {out}"
    );
    assert!(
        out.stderr.contains(&env.daemon_pid().to_string()),
        "names the running daemon's pid {}: {out}",
        env.daemon_pid()
    );
    assert_no_password(&pg, &out, "otpd migrate");
    assert_eq!(
        pg.psql("SELECT to_regclass('otpd_users') IS NULL;").trim(),
        "t",
        "a refused migration made the tables"
    );
    // The daemon was not disturbed.
    assert_eq!(env.list_entry("alice").unwrap()["state"], "active");
    stop_daemon(&mut env);
    assert_migrated(&env, &pg, &migrate(&env, Some(&pg.url())), 1, 1, 0, 0);

    // A host whose daemon never ran has no sled store.
    let empty = TestEnv::without_daemon("pg_migrate_empty", &long_backoff());
    let out = migrate(&empty, Some(&pg.url()));
    println!("otpd migrate without a sled store:\n{out}");
    assert_ne!(out.status.code(), Some(0), "migrated nothing: {out}");
    assert!(
        out.stderr.contains("no sled store")
            && out
                .stderr
                .contains(&empty.state_dir.join("store").display().to_string()),
        "says there is no sled store, and where it looked: {out}"
    );
    assert_eq!(users_in_database(&pg), ["alice"]);
}

/// Runs `otpd serve` on the env's config, which must refuse to start
/// ([`TestEnv::serve_refused`]); returns what it printed.
fn serve_refused(env: &TestEnv, what: &str) -> String {
    let out = env.serve_refused(what);
    println!(
        "{what}: otpd serve refused in {} ms: {}",
        out.elapsed.as_millis(),
        out.otpd_lines().replace('\n', " | ")
    );
    out.printed()
}

/// Prints what `otpd check-config` says of a mistake that only `serve`
/// is required to catch (it reads neither the url_file nor the database).
fn report_check_config(env: &TestEnv, what: &str) {
    let out = env.otpd(&["check-config"]);
    println!(
        "{what}: check-config exit {:?}: {}",
        out.status.code(),
        out.stderr.trim_end()
    );
}

/// The env's config with `store` as its `[store]` section, the config file
/// of mode `mode`.
fn with_store(env: &TestEnv, base: &str, store: &str, mode: u32) {
    write_file(&env.config, &format!("{base}\n{store}"), mode);
}

#[test]
fn store_config_mistakes_are_named_and_never_show_the_password() {
    let Some(pg) = PgCluster::start("pg_store_config") else {
        return;
    };
    secrets::remember(&pg.password);
    let mut env = TestEnv::without_daemon("pg_store_config", &Limits::default());
    let base = std::fs::read_to_string(&env.config).unwrap();
    // A sled store, so that `otpd migrate` gets as far as the database.
    env.spawn_daemon();
    stop_daemon(&mut env);
    let url_file = env.dir.join("db-url");
    let password = &pg.password;

    // Mistakes in the file itself: check-config and serve both refuse.
    let in_the_file: [(&str, String, &[&str]); 3] = [
        (
            "postgres without a connection string",
            "[store]\nkind = \"postgres\"\n".into(),
            &["url or url_file"],
        ),
        (
            "both url and url_file",
            format!(
                "[store]\nkind = \"postgres\"\nurl = \"postgresql://otpd@127.0.0.1:{}/otpd\"\n\
                 url_file = \"{}\"\n",
                pg.port,
                url_file.display()
            ),
            &["url and url_file", "only one"],
        ),
        (
            "sled with a url",
            format!(
                "[store]\nkind = \"sled\"\nurl = \"postgresql://otpd@127.0.0.1:{}/otpd\"\n",
                pg.port
            ),
            &["are for kind = \"postgres\"", "sled"],
        ),
    ];
    write_file(&url_file, &format!("{}\n", pg.url()), 0o600);
    for (what, store, phrases) in in_the_file {
        with_store(&env, &base, &store, 0o600);
        let out = env.otpd(&["check-config"]);
        println!("{what}: check-config said {}", out.stderr.trim_end());
        assert_eq!(out.status.code(), Some(2), "{what}: check-config: {out}");
        for phrase in phrases {
            assert!(
                out.stderr.contains("[store]") && out.stderr.contains(phrase),
                "{what}: check-config does not say {phrase:?}: {out}"
            );
        }
        let printed = serve_refused(&env, what);
        assert!(printed.contains(phrases[0]), "{what}: serve said {printed}");
    }

    // A password in a config file that others may read.
    let in_config = format!("[store]\nkind = \"postgres\"\nurl = \"{}\"\n", pg.url());
    with_store(&env, &base, &in_config, 0o644);
    report_check_config(&env, "a password in a config of mode 0644");
    let printed = serve_refused(&env, "a password in a config of mode 0644");
    assert!(
        printed.contains("url_file") && printed.contains("password") && printed.contains("644"),
        "suggests url_file, says why: {printed}"
    );
    assert!(!printed.contains(password.as_str()), "{printed}");
    // The same file private to root is accepted: the daemon starts.
    with_store(&env, &base, &in_config, 0o600);
    let out = env.otpd_expect(&["check-config"], 0);
    assert_no_password(&pg, &out, "otpd check-config");
    env.spawn_daemon();
    stop_daemon(&mut env);

    // A url_file that others may read.
    with_store(&env, &base, &postgres_store(&url_file), 0o644);
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    report_check_config(&env, "url_file of mode 0644");
    let printed = serve_refused(&env, "url_file of mode 0644");
    assert!(
        printed.contains("url_file")
            && printed.contains(&url_file.display().to_string())
            && printed.contains("readable by others"),
        "names the url_file and what is wrong with it: {printed}"
    );
    assert!(!printed.contains(password.as_str()), "{printed}");

    // Connection strings that do not work: the message names what is
    // wrong (the option, not only "invalid") and never shows the password,
    // neither from serve nor from migrate.
    // A port where nothing listens: bound by this test, not listening.
    let (_closed, closed_port) = net::closed_port();
    let bad: [(&str, String, &str); 5] = [
        (
            "an unparsable port",
            format!(
                "postgresql://{}:{password}@127.0.0.1:notaport/{}",
                pg.user, pg.database
            ),
            "port",
        ),
        (
            "an unknown sslmode",
            format!(
                "postgresql://{}:{password}@127.0.0.1:{}/{}?sslmode=sometimes",
                pg.user, pg.port, pg.database
            ),
            "sslmode",
        ),
        (
            "a misspelt option",
            format!(
                "postgresql://{}:{password}@127.0.0.1:{}/{}?sslmod=disable",
                pg.user, pg.port, pg.database
            ),
            "sslmod",
        ),
        (
            "a wrong password",
            format!(
                "postgresql://{}:{password}x@127.0.0.1:{}/{}?sslmode=disable",
                pg.user, pg.port, pg.database
            ),
            "password authentication failed",
        ),
        (
            "nothing listening",
            format!(
                "postgresql://{}:{password}@127.0.0.1:{}/{}?sslmode=disable",
                pg.user, closed_port, pg.database
            ),
            "cannot reach",
        ),
    ];
    let mut unnamed = Vec::new();
    for (what, url, phrase) in bad {
        write_file(&url_file, &format!("{url}\n"), 0o600);
        let printed = serve_refused(&env, what);
        assert!(
            !printed.contains(password.as_str()),
            "{what}: serve printed the password: {printed}"
        );
        let out = migrate(&env, Some(&url));
        println!("{what}: migrate said {}", out.stderr.trim_end());
        assert_ne!(out.status.code(), Some(0), "{what}: migrate: {out}");
        assert_no_password(&pg, &out, &format!("{what}: otpd migrate"));
        // The example in the message ("write e.g. …?sslmode=require") does
        // not count as naming the problem.
        for (command, said) in [("serve", printed.as_str()), ("migrate", &out.stderr)] {
            let message = said.split("(write e.g.").next().unwrap_or_default();
            if !message.contains(phrase) {
                unnamed.push(format!(
                    "{what}: otpd {command} does not say {phrase:?}: {said}"
                ));
            }
        }
    }
    // Checked after the loop, so that one run shows every case.
    assert!(
        unnamed.is_empty(),
        "messages that do not name the problem (design: \"a message names what was wrong\"):\n{}",
        unnamed.join("\n")
    );
}
