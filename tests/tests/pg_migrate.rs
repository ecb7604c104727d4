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
use otpd_tests::process::{ChildGuard, Output};
use otpd_tests::totp::recovery_codes_in;
use otpd_tests::totp::unix_now;
use otpd_tests::{require, secrets, settled_now, Enrolment, Limits, PamOutcome, Program, TestEnv};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PAM: &[Program] = &[Program::Pamtester, Program::PamWrapper, Program::Oathtool];

/// How long a refused `otpd serve` may take to exit.
const SERVE_REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Appends `toml` to the env's config.
fn append_config(env: &TestEnv, toml: &str) {
    let mut config = std::fs::read_to_string(&env.config).expect("read the config");
    config.push('\n');
    config.push_str(toml);
    std::fs::write(&env.config, config).expect("write the config");
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
    append_config(env, &postgres_store(&url_file));
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

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A text-message sender that appends `to=NUMBER` and the message to the
/// returned outbox.
fn sms_sender(dir: &Path) -> (PathBuf, PathBuf) {
    let outbox = dir.join("outbox");
    let script = dir.join("send-sms");
    write_file(
        &script,
        &format!(
            "#!/bin/sh\n{{ printf 'to=%s\\n' \"$1\"; cat; printf '\\n'; }} >> {}\n",
            outbox.display()
        ),
        0o755,
    );
    (script, outbox)
}

/// The 6-digit code of the latest message in `outbox`, waiting up to 10 s.
fn texted_code(outbox: &Path) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(outbox).unwrap_or_default();
        if let Some(code) = text
            .rsplit("to=")
            .next()
            .unwrap_or("")
            .lines()
            .skip(1)
            .flat_map(|line| line.split(|c: char| !c.is_ascii_digit()))
            .find(|word| word.len() == 6)
        {
            secrets::remember(code);
            return code.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing texted: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on 127.0.0.1:port; returns the status and the raw response.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to the pages on port {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line: {response:?}"));
    (status, response)
}

/// Waits until something accepts on 127.0.0.1:port.
fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: nothing accepts on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// `wrong` times a wrong code from `rhost`, each refused.
fn fail_times(env: &TestEnv, user: &Enrolment, rhost: &str, wrong: usize) {
    let code = user.wrong_code(unix_now());
    for attempt in 1..=wrong {
        let login = env.pam_login(&user.user, &code, rhost, "");
        assert_eq!(
            login.outcome,
            PamOutcome::AuthErr,
            "{}: wrong code #{attempt} from {rhost}: {}",
            user.user,
            login.output
        );
    }
}

fn assert_login(env: &TestEnv, user: &str, code: &str, rhost: &str, expected: PamOutcome) {
    let login = env.pam_login(user, code, rhost, "");
    assert_eq!(
        login.outcome,
        expected,
        "{user} from {rhost:?}: {}\n---- daemon log ----\n{}",
        login.output,
        env.log()
    );
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
    let (sms_script, outbox) = sms_sender(&env.dir);
    let web_port = free_port();
    append_config(
        &env,
        &format!(
            "[sms]\ncommand = \"{}\"\nmax_per_hour = 5\nmessage = \"otpd code {{code}}\"\n\n\
             [web]\nlisten = \"127.0.0.1:{web_port}\"\npublic_url = \"http://127.0.0.1:{web_port}\"\n",
            sms_script.display()
        ),
    );
    env.spawn_daemon();
    wait_for_port(web_port, "the enrolment pages");

    // Every state a user can be in on this host.
    let t0 = settled_now(30, 5);
    let paul = env.enroll("paul", &[]);
    assert_eq!(env.list_entry("paul").unwrap()["state"], "pending");

    let (source_a, source_b) = ("198.51.100.1", "198.51.100.2");
    let bob = env.enroll_active("bob", &[], t0 - 30);
    fail_times(&env, &bob, source_a, 5);
    assert_login(
        &env,
        "bob",
        &bob.code_at(unix_now()),
        source_a,
        PamOutcome::MaxTries,
    );

    let carol = env.enroll_active("carol", &[], t0 - 30);
    fail_times(&env, &carol, "192.0.2.1", 4);
    fail_times(&env, &carol, "192.0.2.2", 4);
    assert_eq!(env.list_entry("carol").unwrap()["state"], "throttled");

    let _dave = env.enroll_active("dave", &[], t0 - 30);
    let out = env.otpd_expect(&["recovery-codes", "dave", "--count", "3"], 0);
    let recovery = recovery_codes_in(&out.stdout);
    assert_eq!(recovery.len(), 3, "{out}");
    assert_login(
        &env,
        "dave",
        &recovery[0],
        "192.0.2.40",
        PamOutcome::Success,
    );

    let _frank = env.enroll_active("frank", &[], t0 - 30);
    env.otpd_expect(&["phone", "frank", "+31612345678"], 0);
    let texted = texted_code(&outbox);
    env.otpd_expect(&["phone", "frank", "--confirm", &texted], 0);
    assert_eq!(env.list_entry("frank").unwrap()["phone"], true);

    let out = env.otpd_expect(&["enroll", "gina", "--link"], 0);
    let link = out
        .stdout
        .split_whitespace()
        .find_map(|word| word.find("/enroll/").map(|at| &word[at..]))
        .map(|path| path.trim_end_matches(['.', ',', ';', ':', ')', '>', '"', '\'']))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("otpd enroll --link printed no link: {out}"));
    assert_eq!(http_get(web_port, &link).0, 200, "gina's link before");

    // alice last: the replay checks after the migration need her step to
    // be still inside the window, 20 s and more from now.
    let t = settled_now(30, 20);
    let alice = env.enroll_active("alice", &[], t - 30);
    let spent = alice.code_at(t);
    assert_login(&env, "alice", &spent, "192.0.2.10", PamOutcome::Success);

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
    wait_for_port(web_port, "the enrolment pages on PostgreSQL");
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
    assert_login(&env, "alice", &spent, "192.0.2.10", PamOutcome::AuthErr);
    let replayed = log_since(&env, log_from);
    assert!(
        replayed
            .lines()
            .any(|l| l.contains("user=\"alice\"") && l.contains("outcome=\"replayed\"")),
        "the code accepted on sled was not refused as a replay:\n{replayed}"
    );
    assert_login(
        &env,
        "alice",
        &alice.code_at(t + 30),
        "192.0.2.10",
        PamOutcome::Success,
    );

    // bob is still throttled from A (the right code), not from B.
    let bob_code = bob.code_at(unix_now());
    assert_login(&env, "bob", &bob_code, source_a, PamOutcome::MaxTries);
    assert_login(&env, "bob", &bob_code, source_b, PamOutcome::Success);
    // carol is still throttled everywhere.
    assert_login(
        &env,
        "carol",
        &carol.code_at(unix_now()),
        "203.0.113.7",
        PamOutcome::MaxTries,
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
    assert_login(
        &env,
        "dave",
        &recovery[0],
        "192.0.2.41",
        PamOutcome::AuthErr,
    );
    assert_login(
        &env,
        "dave",
        &recovery[1],
        "192.0.2.41",
        PamOutcome::Success,
    );
    assert_login(
        &env,
        "dave",
        &recovery[1],
        "192.0.2.41",
        PamOutcome::AuthErr,
    );
    assert_eq!(env.list_entry("dave").unwrap()["recovery_codes"], 1);

    // gina's link still opens her enrolment page.
    let (page_status, page) = http_get(web_port, &link);
    assert_eq!(page_status, 200, "gina's link after the migration");
    assert!(page.contains("id=\"enrol\""), "not the enrolment page");

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
    let t = settled_now(30, 10);
    let alice = env.enroll_active("alice", &[], t - 30);
    let _bob = env.enroll_active("bob", &[], t - 30);
    stop_daemon(&mut env);
    assert_migrated(&env, &pg, &migrate(&env, Some(&pg.url())), 2, 2, 0, 0);

    // The daemon on PostgreSQL changes alice (a login spends a step).
    switch_to_postgres(&env, &pg.url());
    env.spawn_daemon();
    assert_login(
        &env,
        "alice",
        &alice.code_at(t),
        "192.0.2.10",
        PamOutcome::Success,
    );
    stop_daemon(&mut env);

    // Back on sled, which still has the old alice, carl joins.
    std::fs::write(&env.config, &sled_config).unwrap();
    env.spawn_daemon();
    let _carl = env.enroll_active("carl", &[], t - 30);
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

    // On PostgreSQL, alice's login still holds: the same code is a replay.
    switch_to_postgres(&env, &pg.url());
    env.spawn_daemon();
    assert_login(
        &env,
        "alice",
        &alice.code_at(t),
        "192.0.2.11",
        PamOutcome::AuthErr,
    );
}

/// `otpd keygen PATH`; returns the key ID it printed.
fn keygen(env: &TestEnv, path: &Path) -> String {
    let out = env.otpd_expect(&["keygen".as_ref(), path.as_os_str()], 0);
    let id = out
        .stdout
        .split("key ID ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("otpd keygen printed no key ID: {out}"));
    id.trim().to_owned()
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
    let fleet_key = keygen(&fleet, &fleet.key_file);
    switch_to_postgres(&fleet, &pg.url());
    fleet.spawn_daemon();
    let t = settled_now(30, 5);
    let _zoe = fleet.enroll_active("zoe", &[], t - 30);
    stop_daemon(&mut fleet);

    // Host A has a sled store sealed with a key of its own.
    let mut env = TestEnv::without_daemon("pg_migrate_key_a", &long_backoff());
    let own_key = keygen(&env, &env.key_file);
    assert_ne!(own_key, fleet_key);
    env.spawn_daemon();
    let _alice = env.enroll_active("alice", &[], t - 30);
    let _bob = env.enroll_active("bob", &[], t - 30);
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
    let t = settled_now(30, 5);
    let _alice = env.enroll_active("alice", &[], t - 30);

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

/// Runs `otpd serve` on the env's config, which must refuse to start;
/// returns what it printed.
fn serve_refused(env: &TestEnv, what: &str) -> String {
    let log = env
        .dir
        .join(format!("serve-{}.log", what.replace(' ', "-")));
    let mut daemon = ChildGuard::spawn(env.serve_command(), &log);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < SERVE_REFUSAL_TIMEOUT,
            "{what}: otpd serve started anyway:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !status.success(),
        "{what}: otpd serve exited with {status}:\n{printed}"
    );
    println!(
        "{what}: otpd serve refused in {} ms: {}",
        started.elapsed().as_millis(),
        printed
            .lines()
            .filter(|l| l.starts_with("otpd:"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    printed
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
                pg.user,
                free_port(),
                pg.database
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
