//! The PostgreSQL fixture itself ([`otpd_tests::postgres::PgCluster`]): a
//! real server that takes its password over plain TCP and over verified
//! TLS, refuses a wrong password, keeps its data across a stop and a start,
//! and leaves neither a process nor a file behind, also after a panic.

use otpd_tests::postgres::PgCluster;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Mutex;

/// Whether the session's connection is encrypted, as the server sees it.
const SSL_OF_THIS_SESSION: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();";

#[test]
fn a_cluster_takes_its_password_over_tcp_and_verified_tls_and_refuses_a_wrong_one() {
    let Some(pg) = PgCluster::start("pg_connect") else {
        return;
    };
    assert_eq!(pg.psql("SELECT 1;").trim(), "1");
    assert_eq!(pg.psql("SELECT current_database();").trim(), pg.database);
    assert_eq!(
        pg.psql(SSL_OF_THIS_SESSION).trim(),
        "f",
        "url() is plain TCP"
    );
    assert_eq!(
        pg.psql("SHOW fsync; SHOW ssl; SHOW max_connections; SHOW listen_addresses;"),
        "on\non\n200\n127.0.0.1\n"
    );
    assert_eq!(
        pg.psql("SELECT type, database, user_name, address, auth_method FROM pg_hba_file_rules;")
            .trim(),
        "host|{all}|{all}|127.0.0.1|scram-sha-256",
        "pg_hba.conf: SCRAM from 127.0.0.1 and nothing else"
    );

    // libpq checks the chain against the test CA and the name "localhost".
    let verified = format!(
        "host=localhost port={} user={} password={} dbname={} sslmode=verify-full sslrootcert={}",
        pg.port,
        pg.user,
        pg.password,
        pg.database,
        pg.ca_file.display()
    );
    let out = pg.psql_with(&verified, SSL_OF_THIS_SESSION);
    assert!(out.status.success(), "TLS with verify-full: {out}");
    assert_eq!(out.stdout.trim(), "t", "verify-full: {out}");
    let out = pg.psql_with(&pg.url_tls(), SSL_OF_THIS_SESSION);
    assert!(out.status.success(), "url_tls(): {out}");
    assert_eq!(out.stdout.trim(), "t", "url_tls(): {out}");

    let wrong = format!(
        "postgresql://{}:{}x@127.0.0.1:{}/{}?sslmode=disable",
        pg.user, pg.password, pg.port, pg.database
    );
    let out = pg.psql_with(&wrong, "SELECT 1;");
    assert!(!out.status.success(), "a wrong password was let in: {out}");
    assert!(
        out.stderr.contains("password authentication failed"),
        "a wrong password, refused for another reason: {out}"
    );

    pg.create_database("otpd_second");
    let out = pg.psql_with(&pg.url_for_db("otpd_second"), "SELECT current_database();");
    assert_eq!(out.stdout.trim(), "otpd_second", "{out}");
}

#[test]
fn a_stopped_cluster_refuses_connections_then_starts_again_with_its_data() {
    let Some(pg) = PgCluster::start("pg_restart") else {
        return;
    };
    pg.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('written before the stop');");
    assert!(pg.is_running());

    pg.stop();
    assert!(!pg.is_running(), "running after stop()");
    assert!(
        TcpStream::connect(("127.0.0.1", pg.port)).is_err(),
        "the port still accepts after stop()"
    );
    let out = pg.psql_with(&pg.url(), "SELECT 1;");
    assert!(!out.status.success(), "a stopped server answered: {out}");

    pg.start_again();
    assert!(pg.is_running(), "not running after start_again()");
    assert_eq!(
        pg.psql("SELECT v FROM kept;").trim(),
        "written before the stop"
    );

    let (dir, pids) = (pg.dir.clone(), pg.server_processes());
    // The postmaster and at least its checkpointer and writers.
    assert!(pids.len() >= 3, "server processes {pids:?}");
    drop(pg);
    assert_left_nothing(&dir, &pids);
}

#[test]
fn a_cluster_dropped_by_a_panicking_test_is_stopped_and_removed() {
    let seen: Mutex<Option<(PathBuf, Vec<u32>)>> = Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(pg) = PgCluster::start("pg_panic") else {
            return;
        };
        pg.psql("SELECT 1;");
        *seen.lock().unwrap() = Some((pg.dir.clone(), pg.server_processes()));
        panic!("a deliberate panic, to test the cleanup of the cluster");
    }));
    let Some((dir, pids)) = seen.into_inner().unwrap() else {
        return; // skipped: PostgreSQL is not installed
    };
    assert!(outcome.is_err(), "the test body did not panic");
    assert!(pids.len() >= 3, "server processes {pids:?}");
    assert_left_nothing(&dir, &pids);
}

/// After the drop: the directory is gone, none of the server's processes
/// is alive (a zombie is dead), and no process names the directory.
fn assert_left_nothing(dir: &std::path::Path, pids: &[u32]) {
    assert!(!dir.exists(), "{} is still there", dir.display());
    let alive: Vec<&u32> = pids
        .iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next());
                !matches!(state, Some("Z" | "X"))
            })
        })
        .collect();
    assert!(alive.is_empty(), "server processes {alive:?} survived");
    let inside = format!("{}/", dir.display());
    let naming: Vec<String> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&inside)
                .then(|| format!("{:?}: {cmdline}", entry.file_name()))
        })
        .collect();
    assert!(
        naming.is_empty(),
        "processes naming {inside} remain: {naming:?}"
    );
}
