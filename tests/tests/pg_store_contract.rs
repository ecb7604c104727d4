//! The [`Store`] contract (`otpd::store::contract`) against [`PgStore`] on
//! a real PostgreSQL cluster ([`PgCluster`]), each case on a database of
//! its own; and what only a networked store has to show: two hosts racing
//! one compare-and-swap, and a database that goes away and comes back.

use otpd::core::record::{EnrollState, Link, SourceCounter, UserRecord};
use otpd::core::seal::{RecordKey, KEY_LEN};
use otpd::store::contract::{self, CASES, REOPEN_CASES};
use otpd::store::{PgSettings, PgStore, RecordChange, SourcesChange, Store, StoreError};
use otpd_tests::postgres::PgCluster;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The key every store of these tests seals with.
const KEY_BYTES: [u8; KEY_LEN] = [7; KEY_LEN];

/// Threads racing one compare-and-swap, half of them on each host.
const RACERS: usize = 32;

/// Rounds of that race.
const RACE_ROUNDS: u64 = 10;

/// Concurrent operations of the outage tests, so that the pool holds
/// several connections. Not more: on a 2-CPU test machine a debug build
/// needs about 90 ms of CPU per new connection (the client's SCRAM), and
/// an operation that times out drops the connection it was opening.
const POOLED: usize = 4;

/// A `PgStore` on database `db` of `pg`, its operations limited to `timeout`.
fn open(pg: &PgCluster, db: &str, timeout: Duration) -> PgStore {
    let settings = PgSettings {
        url: Zeroizing::new(pg.url_for_db(db)),
        ca_file: None,
        timeout,
        pool_size: 8,
        anchor_file: None,
        synchronous_commit: Default::default(),
    };
    PgStore::open(&settings, |_| Ok(RecordKey::from_bytes(&KEY_BYTES)))
        .unwrap_or_else(|e| panic!("PgStore::open on {db}: {e}"))
}

/// An active record at `version` whose replay guard is `step`.
fn record(version: u64, step: u64) -> UserRecord {
    let mut r = UserRecord::decoy();
    r.version = version;
    r.change_devices(|d| {
        d[0].state = EnrollState::Active;
        d[0].created = 1_700_000_000;
        d[0].last_accepted_step = Some(step);
    })
    .expect("one device");
    r
}

#[test]
fn the_store_contract_holds_on_postgres() {
    let Some(pg) = PgCluster::start("pg_contract") else {
        return;
    };
    let started = Instant::now();
    let mut databases = 0;
    let mut fresh = || -> Box<dyn Store> {
        databases += 1;
        let db = format!("c{databases}");
        pg.create_database(&db);
        Box::new(open(&pg, &db, Duration::from_secs(5)))
    };
    // Every case, each on a new database, so that one failure does not
    // hide the others.
    let mut failed = Vec::new();
    for (name, case) in CASES {
        let store = fresh();
        let case_started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            contract::check(name, *case, &*store)
        }));
        println!(
            "[contract] {name}: {} in {} ms",
            if outcome.is_ok() { "ok" } else { "FAILED" },
            case_started.elapsed().as_millis()
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} contract cases fail on PostgreSQL (their messages are above): {failed:?}",
        failed.len(),
        CASES.len()
    );
    // The cases that open their store again, each on a database of its own.
    for (i, (name, case)) in REOPEN_CASES.iter().enumerate() {
        let db = format!("reopen{i}");
        pg.create_database(&db);
        let case_started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            contract::check_reopening(name, *case, &mut || {
                Box::new(open(&pg, &db, Duration::from_secs(5)))
            })
        }));
        println!(
            "[contract] {name}: {} in {} ms",
            if outcome.is_ok() { "ok" } else { "FAILED" },
            case_started.elapsed().as_millis()
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} reopening contract cases fail on PostgreSQL (their messages are above): \
         {failed:?}",
        failed.len(),
        REOPEN_CASES.len()
    );
    // And the suite's own entry point, as other implementations run it.
    contract::check_all(&mut fresh);
    println!(
        "[contract] {} cases twice on PostgreSQL ({databases} databases) in {} ms",
        CASES.len(),
        started.elapsed().as_millis()
    );
}

#[test]
fn two_hosts_racing_one_compare_and_swap_have_exactly_one_winner() {
    let Some(pg) = PgCluster::start("pg_race") else {
        return;
    };
    pg.create_database("race");
    // Two hosts: two stores, each with its own pool and runtime.
    let hosts = [
        open(&pg, "race", Duration::from_secs(5)),
        open(&pg, "race", Duration::from_secs(5)),
    ];
    hosts[0]
        .commit(
            "alice",
            None,
            RecordChange::Put(&record(1, 0)),
            SourcesChange::Keep,
        )
        .expect("create alice");

    for round in 1..=RACE_ROUNDS {
        let expected = round;
        let barrier = Barrier::new(RACERS);
        let started = Instant::now();
        let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..RACERS)
                .map(|racer| {
                    let host = &hosts[racer % 2];
                    let barrier = &barrier;
                    scope.spawn(move || {
                        // Each racer would accept another step and count a
                        // failure from a source of its own.
                        let mine = record(expected + 1, round * 100 + racer as u64);
                        let source = format!("round-{round}-racer-{racer}");
                        let counter = SourceCounter {
                            failures: racer as u32 + 1,
                            last_failure: 1_700_000_000 + round,
                        };
                        barrier.wait();
                        host.commit(
                            "alice",
                            Some(expected),
                            RecordChange::Put(&mine),
                            SourcesChange::Set(&source, counter),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a racer panicked"))
                .collect()
        });
        let winners: Vec<usize> = (0..RACERS).filter(|&i| results[i].is_ok()).collect();
        let other_errors: Vec<String> = results
            .iter()
            .filter(|r| !matches!(r, Ok(()) | Err(StoreError::Conflict)))
            .map(|r| format!("{r:?}"))
            .collect();
        println!(
            "[race] round {round}: {RACERS} racers on 2 hosts in {} ms, winner {winners:?}",
            started.elapsed().as_millis()
        );
        assert!(
            other_errors.is_empty(),
            "round {round}: losers must see Conflict, not: {other_errors:?}"
        );
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = winners[0];

        // Both hosts read the winner's record, and only its counter.
        for (h, host) in hosts.iter().enumerate() {
            let now = host.user("alice").expect("read alice").expect("alice");
            assert_eq!(
                (now.version, now.first_device().last_accepted_step),
                (expected + 1, Some(round * 100 + winner as u64)),
                "round {round}: host {h} reads another record than the winner's"
            );
        }
        for racer in 0..RACERS {
            let counter = hosts[racer % 2]
                .source("alice", &format!("round-{round}-racer-{racer}"))
                .expect("read a counter");
            assert_eq!(
                counter.is_some(),
                racer == winner,
                "round {round}: racer {racer}'s counter (winner {winner}): {counter:?}"
            );
        }
    }
}

/// `op` once, with how long it took.
fn timed<T>(op: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = op();
    (value, started.elapsed())
}

#[test]
fn a_store_whose_database_stops_fails_within_its_timeout_and_works_again_after() {
    let Some(pg) = PgCluster::start("pg_outage") else {
        return;
    };
    pg.create_database("outage");
    let timeout = Duration::from_secs(2);
    // Scheduling, a connection attempt's own refusal, the channel back.
    let margin = Duration::from_millis(1500);
    let store = open(&pg, "outage", timeout);
    store
        .commit(
            "alice",
            None,
            RecordChange::Put(&record(1, 10)),
            SourcesChange::Keep,
        )
        .expect("create alice");
    // Several pooled connections, as a busy daemon has. Opening them at
    // once may take longer than the timeout (SCRAM in a debug build): set-up
    // only, so tried again.
    let warm_up = Instant::now();
    for attempt in 1.. {
        let failed: Vec<String> = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..POOLED)
                .map(|_| scope.spawn(|| store.user("alice").map(|_| ())))
                .collect();
            readers
                .into_iter()
                .filter_map(|r| r.join().expect("a reader panicked").err())
                .map(|e| e.to_string())
                .collect()
        });
        if failed.is_empty() {
            break;
        }
        println!("[outage] warm-up attempt {attempt}: {failed:?}");
        assert!(
            attempt < 5,
            "{POOLED} concurrent reads keep failing: {failed:?}"
        );
        std::thread::sleep(Duration::from_millis(600));
    }
    println!(
        "[outage] {POOLED} pooled connections in {:?}",
        warm_up.elapsed()
    );

    pg.stop();
    let (read, read_took) = timed(|| store.user("alice"));
    println!("[outage] read with the database stopped: {read:?} after {read_took:?}");
    assert!(
        matches!(read, Err(StoreError::Unreachable(_))),
        "a read with the database stopped: {read:?}"
    );
    assert!(
        read_took <= timeout + margin,
        "the read took {read_took:?}, over the timeout {timeout:?} + {margin:?}"
    );
    // Past the store's grace period, so that this one tries to connect.
    std::thread::sleep(Duration::from_millis(600));
    let (write, write_took) = timed(|| {
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&record(2, 11)),
            SourcesChange::Keep,
        )
    });
    println!("[outage] commit with the database stopped: {write:?} after {write_took:?}");
    match &write {
        Err(StoreError::Unreachable(message)) => assert!(
            !message.contains(&pg.password),
            "the error shows the password: {message}"
        ),
        other => panic!("a commit with the database stopped: {other:?}"),
    }
    assert!(
        write_took <= timeout + margin,
        "the commit took {write_took:?}, over the timeout {timeout:?} + {margin:?}"
    );

    pg.start_again();
    // The same store, without reopening: how many operations fail before
    // the first success (stale pooled connections, the grace period).
    let back = Instant::now();
    let mut failures = Vec::new();
    let first_success = loop {
        match store.user("alice") {
            Ok(found) => break found,
            Err(e) => failures.push(format!("{:?}: {e}", back.elapsed())),
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the store did not work again within 10 s of the restart: {failures:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "[outage] first success {:?} after the restart, {} failures before it: {failures:#?}",
        back.elapsed(),
        failures.len()
    );
    let alice = first_success.expect("alice is still there");
    assert_eq!(
        (alice.version, alice.first_device().last_accepted_step),
        (1, Some(10)),
        "the refused commit was not written"
    );
    // From then on every operation works, over every pooled connection.
    let mut later_failures = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..POOLED)
            .map(|_| scope.spawn(|| store.user("alice").map(|_| ())))
            .collect();
        for h in handles {
            if let Err(e) = h.join().expect("a reader panicked") {
                later_failures.push(e.to_string());
            }
        }
    });
    assert!(
        later_failures.is_empty(),
        "after a success, operations still fail: {later_failures:?}"
    );
    store
        .commit(
            "alice",
            Some(1),
            RecordChange::Put(&record(2, 11)),
            SourcesChange::Keep,
        )
        .expect("a commit after the restart");
    assert_eq!(
        store
            .user("alice")
            .unwrap()
            .unwrap()
            .first_device()
            .last_accepted_step,
        Some(11)
    );
}

/// Sends `signal` to every process of the cluster.
fn signal_server(pg: &PgCluster, signal: i32) -> usize {
    let pids = pg.server_processes();
    for pid in &pids {
        let _ = otpd_tests::process::try_signal(*pid, signal);
    }
    pids.len()
}

#[test]
fn a_store_whose_database_hangs_fails_within_its_timeout_and_works_again_after() {
    let Some(pg) = PgCluster::start("pg_hang") else {
        return;
    };
    pg.create_database("hang");
    let timeout = Duration::from_secs(2);
    let margin = Duration::from_millis(1500);
    let store = open(&pg, "hang", timeout);
    store
        .commit(
            "alice",
            None,
            RecordChange::Put(&record(1, 10)),
            SourcesChange::Keep,
        )
        .expect("create alice");
    store.user("alice").expect("read alice");

    // A server that accepts nothing and answers nothing: only the store's
    // own timeout ends an operation.
    let stopped = signal_server(&pg, libc::SIGSTOP);
    println!("[hang] {stopped} server processes stopped (SIGSTOP)");
    let resume = Resume(&pg);
    let (read, read_took) = timed(|| store.user("alice"));
    println!("[hang] read: {read:?} after {read_took:?}");
    assert!(
        matches!(read, Err(StoreError::TimedOut(_))),
        "a read with the server stopped: {read:?}"
    );
    assert!(
        read_took <= timeout + margin,
        "the read took {read_took:?}, over the timeout {timeout:?} + {margin:?}"
    );
    std::thread::sleep(Duration::from_millis(600));
    let (write, write_took) = timed(|| {
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&record(2, 11)),
            SourcesChange::Set(
                "192.0.2.1",
                SourceCounter {
                    failures: 1,
                    last_failure: 1_700_000_001,
                },
            ),
        )
    });
    println!("[hang] commit: {write:?} after {write_took:?}");
    assert!(
        matches!(write, Err(StoreError::TimedOut(_))),
        "a commit with the server stopped: {write:?}"
    );
    assert!(
        write_took <= timeout + margin,
        "the commit took {write_took:?}, over the timeout {timeout:?} + {margin:?}"
    );
    drop(resume);

    let back = Instant::now();
    let mut failures = Vec::new();
    let alice = loop {
        match store.user("alice") {
            Ok(found) => break found.expect("alice is still there"),
            Err(e) => failures.push(format!("{:?}: {e}", back.elapsed())),
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the store did not work again within 10 s of SIGCONT: {failures:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // A commit that timed out may or may not have been written (the
    // server may run it once it continues): the caller failed closed
    // either way. It must be all or nothing, though.
    let counter = store
        .source("alice", "192.0.2.1")
        .expect("read the counter");
    println!(
        "[hang] first success {:?} after SIGCONT, {} failures before it: {failures:#?}; the \
         timed-out commit was {}",
        back.elapsed(),
        failures.len(),
        if alice.version == 2 {
            "written"
        } else {
            "not written"
        }
    );
    assert_eq!(
        alice.version == 2,
        counter.is_some(),
        "half a commit: record version {}, counter {counter:?}",
        alice.version
    );
    let mut later_failures = Vec::new();
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..POOLED)
            .map(|_| scope.spawn(|| store.user("alice").map(|_| ())))
            .collect();
        for r in readers {
            if let Err(e) = r.join().expect("a reader panicked") {
                later_failures.push(e.to_string());
            }
        }
    });
    assert!(
        later_failures.is_empty(),
        "after a success, operations still fail: {later_failures:?}"
    );
    store
        .commit(
            "alice",
            Some(alice.version),
            RecordChange::Put(&record(alice.version + 1, 12)),
            SourcesChange::Keep,
        )
        .expect("a commit after SIGCONT");
    assert_eq!(
        store
            .user("alice")
            .unwrap()
            .unwrap()
            .first_device()
            .last_accepted_step,
        Some(12)
    );
}

/// Continues the cluster's processes when dropped, also when the test
/// panics (the cluster's own drop could not stop them otherwise).
struct Resume<'a>(&'a PgCluster);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        signal_server(self.0, libc::SIGCONT);
    }
}

/// `record(version, 0)` with an enrolment link whose token hash is `hash`.
fn with_link(version: u64, hash: &str) -> UserRecord {
    let mut r = record(version, 0);
    r.fallback.link = Some(Link {
        token_hash: hash.to_owned(),
        expires: 1_700_086_400,
        ..Link::default()
    });
    r
}

#[test]
fn a_database_written_before_the_token_index_gets_it_at_the_first_open() {
    let Some(pg) = PgCluster::start("pg_token_index") else {
        return;
    };
    pg.create_database("index");
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    {
        let store = open(&pg, "index", Duration::from_secs(5));
        for (user, hash) in [("alice", &a), ("bob", &b)] {
            store
                .commit(
                    user,
                    None,
                    RecordChange::Put(&with_link(1, hash)),
                    SourcesChange::Keep,
                )
                .expect("create a user with a link");
        }
    }
    // The database as an otpd of schema version 1 left it.
    let conn = pg.url_for_db("index");
    let out = pg.psql_with(
        &conn,
        "DROP TABLE otpd_tokens; DELETE FROM otpd_schema WHERE version >= 2;",
    );
    assert!(out.status.success(), "back to schema 1: {out}");
    // Two hosts start at once: one builds the index, the other finds it.
    let stores: Vec<PgStore> = std::thread::scope(|scope| {
        let hosts: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| open(&pg, "index", Duration::from_secs(5))))
            .collect();
        hosts.into_iter().map(|h| h.join().expect("open")).collect()
    });
    for store in &stores {
        assert_eq!(
            store.user_by_token_hash(&a).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            store.user_by_token_hash(&b).unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(store.user_by_token_hash(&"c".repeat(64)).unwrap(), None);
    }
    let out = pg.psql_with(
        &conn,
        "SELECT count(*) FROM otpd_tokens; SELECT count(*) FROM otpd_meta WHERE key = 'token_index';",
    );
    assert_eq!(
        out.stdout.trim(),
        "2\n0",
        "the index rows and the marker: {out}"
    );
    // A look-up is one indexed read, whatever the table holds: a record
    // that does not open (a scan would fail on it) does not disturb it.
    let out = pg.psql_with(
        &conn,
        "INSERT INTO otpd_users (name, version, record) VALUES ('zed', 1, '\\x00');",
    );
    assert!(out.status.success(), "plant a damaged record: {out}");
    assert_eq!(
        stores[0].user_by_token_hash(&a).unwrap().as_deref(),
        Some("alice")
    );
}
