//! The contract of [`Store`], as tests that every implementation must pass.
//!
//! The sled store runs them in its unit tests; the PostgreSQL store runs
//! them from `tests/` (this module is compiled into the library under the
//! `store-contract` feature for that). It depends on the trait and the core
//! types only.
//!
//! Each case takes a fresh, empty store and panics on the first violation,
//! with a message naming what was expected. A case may only use what the
//! trait promises: it writes and reads plain [`UserRecord`]s (sealing them is
//! the store's business), and the versions it writes are the new record's
//! `version`, as the daemon writes them.
//!
//! Left open on purpose: what `Delete` with `SourcesChange::Keep` does to the
//! user's counters (the daemon always deletes with `ClearAll`); what a `Put`
//! whose new version equals the expected one means; and a counter's
//! `last_failure` above `i64::MAX` (a Unix time no clock reaches; the
//! PostgreSQL store keeps it in a BIGINT and saturates). Versions, on the
//! contrary, use all 64 bits.

use super::{RecordChange, SourcesChange, Store, StoreError};
use crate::core::names::validate_user;
use crate::core::record::{Device, SourceCounter, TokenKind, UserRecord};
use crate::core::record::{
    EnrollState, Fallback, Link, LinkPage, PageView, SecretBytes, SmsChallenge,
};
use crate::core::tokens::CodeHash;
use otpd_proto::Algorithm;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Barrier;

/// One contract case: it is given a fresh, empty store and panics on a
/// violation.
pub type Case = fn(&dyn Store);

/// Every contract case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("an_empty_store_reads_nothing", an_empty_store_reads_nothing),
    (
        "a_created_record_reads_back_equal",
        a_created_record_reads_back_equal,
    ),
    (
        "creating_twice_conflicts_and_keeps_the_first",
        creating_twice_conflicts_and_keeps_the_first,
    ),
    (
        "a_put_against_the_current_version_swaps",
        a_put_against_the_current_version_swaps,
    ),
    (
        "a_stale_version_conflicts_and_changes_nothing",
        a_stale_version_conflicts_and_changes_nothing,
    ),
    (
        "a_version_for_a_missing_user_conflicts",
        a_version_for_a_missing_user_conflicts,
    ),
    (
        "set_stores_a_counter_and_reset_deletes_one",
        set_stores_a_counter_and_reset_deletes_one,
    ),
    (
        "clear_all_deletes_only_that_users_counters",
        clear_all_deletes_only_that_users_counters,
    ),
    (
        "names_and_sources_that_are_prefixes_never_mix",
        names_and_sources_that_are_prefixes_never_mix,
    ),
    (
        "a_failed_commit_writes_no_source_change",
        a_failed_commit_writes_no_source_change,
    ),
    (
        "delete_with_the_current_version_removes_the_record",
        delete_with_the_current_version_removes_the_record,
    ),
    (
        "delete_with_clear_all_removes_only_that_users_counters",
        delete_with_clear_all_removes_only_that_users_counters,
    ),
    (
        "delete_with_a_wrong_version_conflicts",
        delete_with_a_wrong_version_conflicts,
    ),
    (
        "a_deleted_user_can_be_created_again",
        a_deleted_user_can_be_created_again,
    ),
    (
        "users_are_listed_in_byte_order_with_their_records",
        users_are_listed_in_byte_order_with_their_records,
    ),
    (
        "user_names_are_exact_byte_strings",
        user_names_are_exact_byte_strings,
    ),
    (
        "concurrent_swaps_from_one_version_have_one_winner",
        concurrent_swaps_from_one_version_have_one_winner,
    ),
    (
        "concurrent_creates_have_one_winner",
        concurrent_creates_have_one_winner,
    ),
    (
        "increments_with_retries_lose_no_update",
        increments_with_retries_lose_no_update,
    ),
    (
        "every_record_field_round_trips",
        every_record_field_round_trips,
    ),
    (
        "a_check_reads_the_record_and_its_counter_together",
        a_check_reads_the_record_and_its_counter_together,
    ),
    ("versions_above_i64_max_work", versions_above_i64_max_work),
    (
        "counters_at_their_limits_round_trip",
        counters_at_their_limits_round_trip,
    ),
    (
        "sync_and_decoy_write_change_nothing_a_reader_sees",
        sync_and_decoy_write_change_nothing_a_reader_sees,
    ),
    (
        "a_link_token_finds_its_user_after_a_put",
        a_link_token_finds_its_user_after_a_put,
    ),
    (
        "a_replaced_link_token_finds_nobody",
        a_replaced_link_token_finds_nobody,
    ),
    (
        "the_link_tokens_of_a_deleted_user_find_nobody",
        the_link_tokens_of_a_deleted_user_find_nobody,
    ),
    (
        "a_failed_commit_changes_no_link_token",
        a_failed_commit_changes_no_link_token,
    ),
    (
        "link_tokens_of_names_that_are_prefixes_never_mix",
        link_tokens_of_names_that_are_prefixes_never_mix,
    ),
];

/// A contract case that opens the same store more than once: `open` opens
/// it (the first time empty); the case drops each store before it opens
/// the next one.
pub type ReopenCase = fn(&mut dyn FnMut() -> Box<dyn Store>);

/// Every contract case that reopens its store, by name.
pub const REOPEN_CASES: &[(&str, ReopenCase)] = &[
    (
        "the_link_token_index_survives_a_reopen",
        the_link_token_index_survives_a_reopen,
    ),
    (
        "the_audit_head_is_kept_across_a_reopen",
        the_audit_head_is_kept_across_a_reopen,
    ),
];

/// Runs every case of [`REOPEN_CASES`]; `fresh` returns, for each case, a
/// function that opens that case's store (a new, empty one per case, the
/// same one at every call of the function).
pub fn check_all_reopening(fresh: &mut dyn FnMut() -> Box<dyn FnMut() -> Box<dyn Store>>) {
    for (name, case) in REOPEN_CASES {
        let mut open = fresh();
        check_reopening(name, *case, &mut *open);
    }
}

/// Runs one case of [`REOPEN_CASES`] on the store that `open` opens;
/// a violation panics with the case's name and what went wrong.
pub fn check_reopening(name: &str, case: ReopenCase, open: &mut dyn FnMut() -> Box<dyn Store>) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        {
            let store = open();
            let users = ok(store.users(), "users() of the fresh store");
            assert!(
                users.is_empty(),
                "the store given to the case is not empty: it holds {} users",
                users.len()
            );
        }
        case(open);
    }));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!("store contract case {name} failed: {message}");
    }
}

/// Runs every case of [`CASES`], each on a fresh store from `fresh` (which
/// must be empty); panics, naming the case, on the first violation.
pub fn check_all(fresh: &mut dyn FnMut() -> Box<dyn Store>) {
    for (name, case) in CASES {
        let store = fresh();
        check(name, *case, &*store);
    }
}

/// Runs one case on `store` (fresh and empty); a violation panics with the
/// case's name and what went wrong. For a test harness that runs the cases
/// one by one.
pub fn check(name: &str, case: Case, store: &dyn Store) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let users = ok(store.users(), "users() of the fresh store");
        assert!(
            users.is_empty(),
            "the store given to the case is not empty: it holds {} users",
            users.len()
        );
        case(store);
    }));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!("store contract case {name} failed: {message}");
    }
}

// ---------------------------------------------------------------- helpers

fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: unexpected error: {e:?}"))
}

fn conflict(result: Result<(), StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict) => {}
        Ok(()) => panic!("{what}: succeeded, but must conflict"),
        Err(e) => panic!("{what}: {e:?}, but must be StoreError::Conflict"),
    }
}

/// A plain active record with `version`.
fn record(version: u64) -> UserRecord {
    let mut r = UserRecord::decoy();
    r.version = version;
    r.issuer = "contract".into();
    r.change_devices(|d| {
        d[0].secret = SecretBytes::new(b"SECRET-1234567890abc".to_vec());
        d[0].created = 1_700_000_000;
        d[0].last_accepted_step = Some(56_666_666);
    })
    .expect("one device");
    r
}

/// `record(version)` told apart from others by `mark`.
fn marked(version: u64, mark: u64) -> UserRecord {
    let mut r = record(version);
    r.issuer = format!("mark {mark}");
    r.change_devices(|d| d[0].last_accepted_step = Some(mark))
        .expect("one device");
    r
}

fn counter(failures: u32, last_failure: u64) -> SourceCounter {
    SourceCounter {
        failures,
        last_failure,
    }
}

/// A record with every field set away from its default: an active HOTP
/// device first (the stored layout's own fields) and a pending replacement
/// of it (`tokens.others`).
fn rich_record(version: u64) -> UserRecord {
    let challenge = |code: &str, salt: u8, number: Option<&str>, tries: u32| SmsChallenge {
        code: CodeHash::new(code, &[salt; 16]),
        expires: 1_700_000_300 + u64::from(salt),
        number: number.map(str::to_owned),
        tries,
    };
    let phone = Device {
        name: "phone-1".into(),
        state: EnrollState::Active,
        kind: TokenKind::Hotp,
        // The longest secret a record holds, from NUL to 0xFF.
        secret: SecretBytes::new((0..128u32).map(|i| (i * 255 / 127) as u8).collect()),
        algorithm: Algorithm::Sha512,
        digits: 8,
        period: 60,
        created: u64::MAX - 7,
        last_accepted_step: Some(u64::MAX / 30),
        window: Some(17),
        replaces: None,
    };
    let replacement = Device {
        name: "yubikey.5_b".into(),
        state: EnrollState::Pending,
        kind: TokenKind::Totp,
        secret: SecretBytes::new(vec![0xff; 10]),
        algorithm: Algorithm::Sha256,
        digits: 7,
        period: 15,
        created: 1,
        last_accepted_step: Some(u64::MAX - 1),
        window: None,
        replaces: Some(crate::core::record::Replaces::Device("phone-1".into())),
    };
    let mut r = UserRecord::new(
        version,
        "Example Corp — Zürich 🔐".into(),
        vec![phone, replacement],
    )
    .expect("two devices");
    r.last_success = Some(1_700_000_123);
    r.user_failures = u32::MAX;
    r.last_failure = Some(i64::MAX as u64 + 3);
    r.fallback = Fallback {
        link: Some(Link {
            token_hash: "a".repeat(64),
            expires: 1_700_086_400,
            page: LinkPage {
                views: vec![PageView {
                    nonce_hash: "b".repeat(64),
                    issued: 1_700_000_100,
                }],
                reveals: 2,
                last_reveal: Some(1_700_000_200),
            },
        }),
        phone_session: Some(Link {
            token_hash: "0f".repeat(32),
            expires: 1_700_003_600,
            ..Link::default()
        }),
        recovery: (0..10u8)
            .map(|i| CodeHash::new(&format!("ABCDEFGHJK{i:02}"), &[i; 16]))
            .collect(),
        phone: Some("+41791234567".into()),
        sms: vec![
            challenge("123456", 1, None, 0),
            challenge("654321", 2, None, 0),
        ],
        sms_register: Some(challenge("111111", 3, Some("+4915112345678"), 2)),
        sms_sent: vec![1_700_000_001, 1_700_000_002, u64::MAX],
        register_sent: vec![1_700_000_005],
    };
    r.had_active_device = true;
    r.trusted_sources = vec![crate::core::record::TrustedSource {
        source: "rhost:2001:db8:1:2::/64".into(),
        last_success: 1_700_000_100,
    }];
    r
}

/// Compares field by field first, so a mismatch names its field (the
/// secret's and the code hashes' `Debug` is redacted).
fn assert_same(got: &UserRecord, want: &UserRecord, what: &str) {
    assert_eq!(got.version, want.version, "{what}: version");
    let secrets = |r: &UserRecord| -> Vec<Vec<u8>> {
        r.devices()
            .iter()
            .map(|d| d.secret.expose().to_vec())
            .collect()
    };
    assert!(
        secrets(got) == secrets(want),
        "{what}: the secret bytes differ ({:?} bytes read, {:?} written)",
        secrets(got).iter().map(Vec::len).collect::<Vec<_>>(),
        secrets(want).iter().map(Vec::len).collect::<Vec<_>>()
    );
    let hashes = |r: &UserRecord| -> Vec<(String, String)> {
        let f = &r.fallback;
        f.recovery
            .iter()
            .chain(f.sms.iter().map(|c| &c.code))
            .chain(f.sms_register.iter().map(|c| &c.code))
            .map(|h| (h.salt.clone(), h.hash.clone()))
            .collect()
    };
    assert_eq!(hashes(got), hashes(want), "{what}: the code hashes");
    assert_eq!(got, want, "{what}: the record");
}

fn read(store: &dyn Store, user: &str) -> Option<UserRecord> {
    ok(store.user(user), &format!("user({user:?})"))
}

fn read_source(store: &dyn Store, user: &str, source: &str) -> Option<SourceCounter> {
    ok(
        store.source(user, source),
        &format!("source({user:?}, {source:?})"),
    )
}

fn names(store: &dyn Store) -> Vec<String> {
    ok(store.users(), "users()")
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

fn create(store: &dyn Store, user: &str, record: &UserRecord) {
    ok(
        store.commit(user, None, RecordChange::Put(record), SourcesChange::Keep),
        &format!("creating {user:?}"),
    );
}

/// Creates `user` with `record(1)` and one counter per source; returns the
/// counters (failures 1, 2, …).
fn create_with_sources(store: &dyn Store, user: &str, sources: &[&str]) -> Vec<SourceCounter> {
    create(store, user, &record(1));
    let mut counters = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let version = i as u64 + 1;
        let c = counter(i as u32 + 1, 1_700_000_000 + i as u64);
        ok(
            store.commit(
                user,
                Some(version),
                RecordChange::Put(&record(version + 1)),
                SourcesChange::Set(source, c),
            ),
            &format!("setting {user:?}'s counter for {source:?}"),
        );
        counters.push(c);
    }
    counters
}

/// `record(version)` with an enrolment link and a phone session whose
/// token hashes are `link` and `phone` (`None`: without).
fn with_links(version: u64, link: Option<&str>, phone: Option<&str>) -> UserRecord {
    let link_of = |hash: &str| Link {
        token_hash: hash.to_owned(),
        expires: 1_700_086_400,
        ..Link::default()
    };
    let mut r = record(version);
    r.fallback.link = link.map(link_of);
    r.fallback.phone_session = phone.map(link_of);
    r
}

/// A token hash as the daemon stores it (64 hex digits), told apart by `n`.
fn hash(n: u32) -> String {
    format!("{:08x}", 0xa0b0_0000 + n).repeat(8)
}

/// Asserts what the token index answers for each hash.
fn assert_tokens(store: &dyn Store, want: &[(&str, Option<&str>)], what: &str) {
    for (token_hash, user) in want {
        let found = ok(
            store.user_by_token_hash(token_hash),
            &format!("user_by_token_hash({token_hash:?})"),
        );
        assert_eq!(
            found.as_deref(),
            *user,
            "{what}: the user of token hash {token_hash:?}"
        );
    }
}

fn assert_sources(store: &dyn Store, user: &str, want: &[(&str, Option<SourceCounter>)]) {
    for (source, expected) in want {
        assert_eq!(
            read_source(store, user, source),
            *expected,
            "{user:?}'s counter for {source:?}"
        );
    }
}

// ------------------------------------------------------------------ cases

fn an_empty_store_reads_nothing(store: &dyn Store) {
    assert!(read(store, "alice").is_none(), "an unknown user");
    assert!(
        read_source(store, "alice", "rhost:192.0.2.1").is_none(),
        "a counter of an unknown user"
    );
    assert!(names(store).is_empty(), "users() of an empty store");
}

fn a_created_record_reads_back_equal(store: &dyn Store) {
    let r = record(1);
    create(store, "alice", &r);
    assert_same(&read(store, "alice").expect("alice"), &r, "alice read back");
    let all = ok(store.users(), "users()");
    assert_eq!(all.len(), 1, "users() after one create");
    assert_eq!(all[0].0, "alice");
    assert_same(&all[0].1, &r, "alice in users()");
    assert!(read(store, "bob").is_none(), "another user stays unknown");
}

fn creating_twice_conflicts_and_keeps_the_first(store: &dyn Store) {
    create(store, "alice", &marked(1, 1));
    conflict(
        store.commit(
            "alice",
            None,
            RecordChange::Put(&marked(1, 2)),
            SourcesChange::Set("rhost:a", counter(1, 1)),
        ),
        "creating alice again (expected version None)",
    );
    conflict(
        store.commit(
            "alice",
            None,
            RecordChange::Put(&marked(9, 3)),
            SourcesChange::Keep,
        ),
        "creating alice again with another version",
    );
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(1, 1),
        "alice after the failed creates",
    );
    assert_sources(store, "alice", &[("rhost:a", None)]);
    assert_eq!(names(store), ["alice"]);
}

fn a_put_against_the_current_version_swaps(store: &dyn Store) {
    create(store, "alice", &marked(1, 1));
    ok(
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&marked(2, 2)),
            SourcesChange::Keep,
        ),
        "put with version 1",
    );
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(2, 2),
        "alice after 1 → 2",
    );
    // The store keeps the version it is given, whatever the step.
    ok(
        store.commit(
            "alice",
            Some(2),
            RecordChange::Put(&marked(1000, 3)),
            SourcesChange::Set("rhost:a", counter(3, 9)),
        ),
        "put with version 2 (and a counter)",
    );
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(1000, 3),
        "alice after 2 → 1000",
    );
    assert_sources(store, "alice", &[("rhost:a", Some(counter(3, 9)))]);
    conflict(
        store.commit(
            "alice",
            Some(3),
            RecordChange::Put(&marked(4, 4)),
            SourcesChange::Keep,
        ),
        "put with version 3 (the old version + 1, not the stored one)",
    );
    ok(
        store.commit(
            "alice",
            Some(1000),
            RecordChange::Put(&marked(1001, 5)),
            SourcesChange::Keep,
        ),
        "put with version 1000",
    );
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(1001, 5),
        "alice after 1000 → 1001",
    );
}

fn a_stale_version_conflicts_and_changes_nothing(store: &dyn Store) {
    let counters = create_with_sources(store, "alice", &["rhost:a", "rhost:b"]);
    // create_with_sources left alice at version 3.
    let current = read(store, "alice").expect("alice");
    assert_eq!(current.version, 3);
    let changes = [
        SourcesChange::Keep,
        SourcesChange::Set("rhost:a", counter(99, 99)),
        SourcesChange::Set("rhost:new", counter(99, 99)),
        SourcesChange::Reset("rhost:b"),
        SourcesChange::ClearAll,
    ];
    for stale in [0, 1, 2, 4, u64::MAX] {
        for change in changes {
            conflict(
                store.commit(
                    "alice",
                    Some(stale),
                    RecordChange::Put(&marked(stale.wrapping_add(1), 7)),
                    change,
                ),
                &format!("put with stale version {stale} and {change:?}"),
            );
            assert_same(
                &read(store, "alice").expect("alice"),
                &current,
                &format!("alice after the failed put with {stale} and {change:?}"),
            );
            assert_sources(
                store,
                "alice",
                &[
                    ("rhost:a", Some(counters[0])),
                    ("rhost:b", Some(counters[1])),
                    ("rhost:new", None),
                ],
            );
        }
    }
}

fn a_version_for_a_missing_user_conflicts(store: &dyn Store) {
    for (version, change) in [
        (0, SourcesChange::Keep),
        (1, SourcesChange::Set("rhost:a", counter(1, 1))),
        (u64::MAX, SourcesChange::ClearAll),
    ] {
        conflict(
            store.commit(
                "ghost",
                Some(version),
                RecordChange::Put(&record(version.wrapping_add(1))),
                change,
            ),
            &format!("put for a missing user with version {version} and {change:?}"),
        );
    }
    assert!(
        read(store, "ghost").is_none(),
        "the missing user stays missing"
    );
    assert_sources(store, "ghost", &[("rhost:a", None)]);
    assert!(names(store).is_empty(), "users() after failed puts");
}

fn set_stores_a_counter_and_reset_deletes_one(store: &dyn Store) {
    create(store, "alice", &record(1));
    ok(
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&record(2)),
            SourcesChange::Set("rhost:a", counter(1, 100)),
        ),
        "set rhost:a",
    );
    ok(
        store.commit(
            "alice",
            Some(2),
            RecordChange::Put(&record(3)),
            SourcesChange::Set("uid:1000", counter(2, 200)),
        ),
        "set uid:1000",
    );
    assert_sources(
        store,
        "alice",
        &[
            ("rhost:a", Some(counter(1, 100))),
            ("uid:1000", Some(counter(2, 200))),
        ],
    );
    // Set overwrites.
    ok(
        store.commit(
            "alice",
            Some(3),
            RecordChange::Put(&record(4)),
            SourcesChange::Set("rhost:a", counter(5, 500)),
        ),
        "set rhost:a again",
    );
    assert_sources(store, "alice", &[("rhost:a", Some(counter(5, 500)))]);
    ok(
        store.commit(
            "alice",
            Some(4),
            RecordChange::Put(&record(5)),
            SourcesChange::Reset("rhost:a"),
        ),
        "reset rhost:a",
    );
    assert_sources(
        store,
        "alice",
        &[("rhost:a", None), ("uid:1000", Some(counter(2, 200)))],
    );
    // Resetting a counter that does not exist is no error.
    ok(
        store.commit(
            "alice",
            Some(5),
            RecordChange::Put(&record(6)),
            SourcesChange::Reset("rhost:never"),
        ),
        "reset a missing counter",
    );
    // Keep keeps.
    ok(
        store.commit(
            "alice",
            Some(6),
            RecordChange::Put(&record(7)),
            SourcesChange::Keep,
        ),
        "put with Keep",
    );
    assert_sources(
        store,
        "alice",
        &[("rhost:a", None), ("uid:1000", Some(counter(2, 200)))],
    );
    assert_eq!(read(store, "alice").expect("alice").version, 7);
}

fn clear_all_deletes_only_that_users_counters(store: &dyn Store) {
    let sources = ["rhost:a", "uid:0", "x"];
    let users = ["al", "alice", "a_c", "abc", "a%", "ab"];
    let mut kept = Vec::new();
    for user in users {
        kept.push(create_with_sources(store, user, &sources));
    }
    // Each of these names is a prefix, or a LIKE pattern, matching the next.
    for cleared in ["al", "a_c", "a%"] {
        let version = read(store, cleared).expect(cleared).version;
        ok(
            store.commit(
                cleared,
                Some(version),
                RecordChange::Put(&marked(version + 1, 42)),
                SourcesChange::ClearAll,
            ),
            &format!("put with ClearAll for {cleared:?}"),
        );
        assert_same(
            &read(store, cleared).expect(cleared),
            &marked(version + 1, 42),
            &format!("{cleared:?} after ClearAll"),
        );
    }
    for (user, counters) in users.iter().zip(&kept) {
        let cleared = ["al", "a_c", "a%"].contains(user);
        for (source, c) in sources.iter().zip(counters) {
            let want = if cleared { None } else { Some(*c) };
            assert_eq!(
                read_source(store, user, source),
                want,
                "{user:?}'s counter for {source:?} after ClearAll of al, a_c and a%"
            );
        }
    }
}

fn names_and_sources_that_are_prefixes_never_mix(store: &dyn Store) {
    create(store, "al", &record(1));
    create(store, "alice", &record(1));
    let mut versions = std::collections::HashMap::from([("al", 1u64), ("alice", 1u64)]);
    // (user, source, failures): "al"+"ice…" and "alice"+"…" concatenate to
    // the same text, and the sources are prefixes of each other.
    let writes = [
        ("al", "rhost:192.0.2.1", 1),
        ("al", "rhost:192.0.2.10", 2),
        ("alice", "rhost:192.0.2.1", 3),
        ("al", "icerhost:192.0.2.1", 4),
        ("alice", "rhost:192.0.2.", 5),
        ("al", "uid:0", 6),
        ("al", "uid:00", 7),
        ("alice", "rhost:Host", 8),
        ("alice", "rhost:host", 9),
    ];
    for (user, source, failures) in writes {
        let v = versions[user];
        ok(
            store.commit(
                user,
                Some(v),
                RecordChange::Put(&record(v + 1)),
                SourcesChange::Set(source, counter(failures, u64::from(failures))),
            ),
            &format!("set {user:?}'s counter for {source:?}"),
        );
        versions.insert(user, v + 1);
    }
    let check = |store: &dyn Store, reset: &[(&str, &str)]| {
        for (user, source, failures) in writes {
            let want = if reset.contains(&(user, source)) {
                None
            } else {
                Some(counter(failures, u64::from(failures)))
            };
            assert_eq!(
                read_source(store, user, source),
                want,
                "{user:?}'s counter for {source:?} (reset so far: {reset:?})"
            );
        }
        assert_sources(
            store,
            "alice",
            &[("icerhost:192.0.2.1", None), ("uid:0", None)],
        );
        assert_sources(store, "al", &[("rhost:192.0.2.", None)]);
        assert_sources(store, "a", &[("lice", None), ("l", None)]);
    };
    check(store, &[]);
    let mut reset = Vec::new();
    for (user, source) in [
        ("al", "rhost:192.0.2.1"),
        ("alice", "rhost:Host"),
        ("al", "uid:0"),
    ] {
        let v = versions[user];
        ok(
            store.commit(
                user,
                Some(v),
                RecordChange::Put(&record(v + 1)),
                SourcesChange::Reset(source),
            ),
            &format!("reset {user:?}'s counter for {source:?}"),
        );
        versions.insert(user, v + 1);
        reset.push((user, source));
        check(store, &reset);
    }
}

fn a_failed_commit_writes_no_source_change(store: &dyn Store) {
    let counters = create_with_sources(store, "alice", &["rhost:a", "rhost:b"]);
    let alice = read(store, "alice").expect("alice");
    let bob = counter(4, 4);
    create(store, "bob", &record(1));
    ok(
        store.commit(
            "bob",
            Some(1),
            RecordChange::Put(&record(2)),
            SourcesChange::Set("rhost:a", bob),
        ),
        "set bob's counter",
    );
    let changes = [
        SourcesChange::Set("rhost:a", counter(99, 99)),
        SourcesChange::Set("rhost:c", counter(99, 99)),
        SourcesChange::Reset("rhost:a"),
        SourcesChange::ClearAll,
    ];
    let failing: [(&str, Option<u64>, RecordChange<'_>); 5] = [
        // An existing user, created again.
        ("alice", None, RecordChange::Put(&alice)),
        // A stale version.
        ("alice", Some(alice.version - 1), RecordChange::Put(&alice)),
        ("alice", Some(alice.version + 1), RecordChange::Delete),
        // A version for a user that does not exist.
        ("carol", Some(1), RecordChange::Put(&alice)),
        ("carol", Some(0), RecordChange::Delete),
    ];
    for (user, expected, record_change) in failing {
        for change in changes {
            conflict(
                store.commit(user, expected, record_change, change),
                &format!(
                    "{user:?} with expected version {expected:?}, {record_change:?}, {change:?}"
                ),
            );
            assert_sources(
                store,
                "alice",
                &[
                    ("rhost:a", Some(counters[0])),
                    ("rhost:b", Some(counters[1])),
                    ("rhost:c", None),
                ],
            );
            assert_sources(store, "bob", &[("rhost:a", Some(bob)), ("rhost:c", None)]);
            assert_sources(store, "carol", &[("rhost:a", None), ("rhost:c", None)]);
        }
    }
    assert_same(
        &read(store, "alice").expect("alice"),
        &alice,
        "alice after failed commits",
    );
    assert_eq!(names(store), ["alice", "bob"]);
}

fn delete_with_the_current_version_removes_the_record(store: &dyn Store) {
    create(store, "alice", &record(1));
    create(store, "bob", &record(5));
    ok(
        store.commit("alice", Some(1), RecordChange::Delete, SourcesChange::Keep),
        "delete alice (Keep)",
    );
    assert!(read(store, "alice").is_none(), "alice after her delete");
    ok(
        store.commit(
            "bob",
            Some(5),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete bob (ClearAll)",
    );
    assert!(read(store, "bob").is_none(), "bob after his delete");
    assert!(names(store).is_empty(), "users() after both deletes");
}

fn delete_with_clear_all_removes_only_that_users_counters(store: &dyn Store) {
    let sources = ["rhost:a", "uid:1000"];
    let al = create_with_sources(store, "al", &sources);
    create_with_sources(store, "alice", &sources);
    let version = read(store, "alice").expect("alice").version;
    ok(
        store.commit(
            "alice",
            Some(version),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete alice with ClearAll",
    );
    assert!(read(store, "alice").is_none(), "alice after her delete");
    assert_sources(store, "alice", &[("rhost:a", None), ("uid:1000", None)]);
    assert_sources(
        store,
        "al",
        &[("rhost:a", Some(al[0])), ("uid:1000", Some(al[1]))],
    );
    assert_eq!(names(store), ["al"]);
}

fn delete_with_a_wrong_version_conflicts(store: &dyn Store) {
    let counters = create_with_sources(store, "alice", &["rhost:a"]);
    let current = read(store, "alice").expect("alice");
    for expected in [
        None,
        Some(current.version - 1),
        Some(current.version + 1),
        Some(u64::MAX),
    ] {
        for change in [SourcesChange::Keep, SourcesChange::ClearAll] {
            conflict(
                store.commit("alice", expected, RecordChange::Delete, change),
                &format!("delete alice with expected version {expected:?} and {change:?}"),
            );
        }
    }
    assert_same(
        &read(store, "alice").expect("alice"),
        &current,
        "alice after failed deletes",
    );
    assert_sources(store, "alice", &[("rhost:a", Some(counters[0]))]);
    conflict(
        store.commit(
            "ghost",
            Some(1),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete a missing user with a version",
    );
}

fn a_deleted_user_can_be_created_again(store: &dyn Store) {
    create_with_sources(store, "alice", &["rhost:a"]);
    let version = read(store, "alice").expect("alice").version;
    ok(
        store.commit(
            "alice",
            Some(version),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete alice",
    );
    conflict(
        store.commit(
            "alice",
            Some(version),
            RecordChange::Put(&record(version + 1)),
            SourcesChange::Keep,
        ),
        "put against the deleted record's version",
    );
    // The same version as before the delete: a store must not remember it.
    create(store, "alice", &marked(1, 2));
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(1, 2),
        "alice created again",
    );
    assert_sources(store, "alice", &[("rhost:a", None)]);
    ok(
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&marked(2, 3)),
            SourcesChange::Set("rhost:a", counter(1, 1)),
        ),
        "put on the re-created alice",
    );
    assert_eq!(read(store, "alice").expect("alice").version, 2);
    assert_sources(store, "alice", &[("rhost:a", Some(counter(1, 1)))]);
    assert_eq!(names(store), ["alice"]);
}

fn users_are_listed_in_byte_order_with_their_records(store: &dyn Store) {
    // Written in no order; a collation (case-folding, accent- or
    // punctuation-blind, as a database's default may be) sorts these
    // differently than bytes do.
    let written = [
        "bob", "ä", "Zed", "alice", "a.b", "al", "a-b", "ab", "Al", "_x", "ümit", "a", "z", "0",
    ];
    for (i, name) in written.iter().enumerate() {
        assert_eq!(validate_user(name), Ok(()), "{name:?} is a valid name");
        create(store, name, &marked(i as u64 + 1, i as u64));
    }
    let mut sorted: Vec<&str> = written.to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let all = ok(store.users(), "users()");
    let listed: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(listed, sorted, "users() in byte order");
    for (name, got) in &all {
        let i = written
            .iter()
            .position(|w| w == name)
            .expect("a written name");
        assert_same(
            got,
            &marked(i as u64 + 1, i as u64),
            &format!("{name:?} in users()"),
        );
    }
}

fn user_names_are_exact_byte_strings(store: &dyn Store) {
    let long_ascii = "u".repeat(crate::core::names::MAX_USER_LEN);
    let long_wide = "ä".repeat(crate::core::names::MAX_USER_LEN / 2);
    let written: Vec<&str> = vec![
        "alice",
        "Alice",
        "ALICE",
        "ä",         // U+00E4
        "a\u{0308}", // a + combining diaeresis: the same letter, other bytes
        "ß",
        "ss",
        "j@example.org",
        "DOMAIN\\alice",
        "a'b\"c;--",
        "%",
        "_",
        &long_ascii,
        &long_wide,
    ];
    for (i, name) in written.iter().enumerate() {
        assert_eq!(validate_user(name), Ok(()), "{name:?} is a valid name");
        create(store, name, &marked(1, i as u64));
    }
    for (i, name) in written.iter().enumerate() {
        assert_same(
            &read(store, name).expect(name),
            &marked(1, i as u64),
            &format!("{name:?} read back"),
        );
    }
    let mut sorted = written.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(names(store), sorted, "users()");
    for unknown in ["alicE", "alice.", "a", "u", "uu"] {
        assert!(
            read(store, unknown).is_none(),
            "{unknown:?} was never written"
        );
    }
    // A write to one touches no look-alike.
    ok(
        store.commit(
            "Alice",
            Some(1),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete Alice",
    );
    assert!(read(store, "Alice").is_none(), "Alice after her delete");
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(1, 0),
        "alice after Alice's delete",
    );
    assert_same(
        &read(store, "ALICE").expect("ALICE"),
        &marked(1, 2),
        "ALICE after Alice's delete",
    );
}

fn concurrent_swaps_from_one_version_have_one_winner(store: &dyn Store) {
    const THREADS: usize = 16;
    create(store, "alice", &record(1));
    let barrier = Barrier::new(THREADS);
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mine = marked(2, t as u64);
                    let source = format!("rhost:thread{t}");
                    barrier.wait();
                    store.commit(
                        "alice",
                        Some(1),
                        RecordChange::Put(&mine),
                        SourcesChange::Set(&source, counter(t as u32 + 1, 1)),
                    )
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a committing thread panicked"))
            .collect()
    });
    let mut winners = Vec::new();
    for (t, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => winners.push(t),
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("thread {t}: {e:?}, but must succeed or conflict"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{THREADS} swaps from version 1 at once: exactly one must succeed, these did: {winners:?}"
    );
    let winner = winners[0];
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(2, winner as u64),
        &format!("alice after the race (won by thread {winner})"),
    );
    for t in 0..THREADS {
        let want = (t == winner).then(|| counter(t as u32 + 1, 1));
        assert_eq!(
            read_source(store, "alice", &format!("rhost:thread{t}")),
            want,
            "thread {t}'s counter (the winner was thread {winner})"
        );
    }
}

fn concurrent_creates_have_one_winner(store: &dyn Store) {
    const THREADS: usize = 16;
    let barrier = Barrier::new(THREADS);
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mine = marked(t as u64 * 1000, t as u64);
                    barrier.wait();
                    store.commit(
                        "alice",
                        None,
                        RecordChange::Put(&mine),
                        SourcesChange::ClearAll,
                    )
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a committing thread panicked"))
            .collect()
    });
    let mut winners = Vec::new();
    for (t, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => winners.push(t),
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("thread {t}: {e:?}, but must succeed or conflict"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{THREADS} creates of alice at once: exactly one must succeed, these did: {winners:?}"
    );
    let winner = winners[0] as u64;
    assert_same(
        &read(store, "alice").expect("alice"),
        &marked(winner * 1000, winner),
        &format!("alice after the race (won by thread {winner})"),
    );
    assert_eq!(names(store), ["alice"]);
}

fn increments_with_retries_lose_no_update(store: &dyn Store) {
    // Small, so that a networked store finishes in a couple of seconds.
    const THREADS: u64 = 4;
    const EACH: u64 = 25;
    const MAX_TRIES: u64 = 100_000;
    create(store, "alice", &record(1));
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<(), String> {
                    barrier.wait();
                    let mut tries = 0;
                    for _ in 0..EACH {
                        loop {
                            tries += 1;
                            if tries > MAX_TRIES {
                                return Err(format!(
                                    "thread {t}: no progress in {MAX_TRIES} tries"
                                ));
                            }
                            // The record first: a counter written after this
                            // read came with a version bump, so the commit
                            // below then conflicts.
                            let current = store
                                .user("alice")
                                .map_err(|e| format!("thread {t}: user(): {e:?}"))?
                                .ok_or_else(|| format!("thread {t}: alice is gone"))?;
                            let shared = store
                                .source("alice", "rhost:shared")
                                .map_err(|e| format!("thread {t}: source(): {e:?}"))?
                                .unwrap_or_default();
                            let mut next = current;
                            next.version += 1;
                            next.user_failures += 1;
                            next.last_failure = Some(t);
                            // Odd threads change a counter too (a multi-key
                            // write), even ones the record alone (which a
                            // store may do another way): both must serialise.
                            let sources = if t % 2 == 1 {
                                SourcesChange::Set("rhost:shared", counter(shared.failures + 1, t))
                            } else {
                                SourcesChange::Keep
                            };
                            match store.commit(
                                "alice",
                                Some(next.version - 1),
                                RecordChange::Put(&next),
                                sources,
                            ) {
                                Ok(()) => break,
                                Err(StoreError::Conflict) => continue,
                                Err(e) => return Err(format!("thread {t}: commit: {e:?}")),
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join().expect("an incrementing thread panicked") {
                panic!("{e}");
            }
        }
    });
    let alice = read(store, "alice").expect("alice");
    assert_eq!(
        alice.user_failures as u64,
        THREADS * EACH,
        "increments counted in the record ({THREADS} threads × {EACH}): an update was lost"
    );
    assert_eq!(alice.version, 1 + THREADS * EACH, "the version");
    let odd_threads = THREADS / 2;
    assert_eq!(
        read_source(store, "alice", "rhost:shared").map(|c| c.failures),
        Some((odd_threads * EACH) as u32),
        "increments counted in the shared counter: an update was lost"
    );
}

/// `read_for_check` (one round trip in a networked store) reads what
/// `user` and `source` read, for users and counters that exist or not.
fn a_check_reads_the_record_and_its_counter_together(store: &dyn Store) {
    let both = |user: &str, source: &str| {
        ok(
            store.read_for_check(user, source),
            &format!("read_for_check({user:?}, {source:?})"),
        )
    };
    assert_eq!(both("alice", "rhost:a"), (None, None));
    let counters = create_with_sources(store, "alice", &["rhost:a", "uid:1000"]);
    let alice = read(store, "alice").expect("alice was created");
    for (source, counter) in [
        ("rhost:a", Some(counters[0])),
        ("uid:1000", Some(counters[1])),
        ("rhost:b", None),
    ] {
        let (record, got) = both("alice", source);
        assert_same(
            &record.expect("alice's record"),
            &alice,
            &format!("alice's record read with {source:?}"),
        );
        assert_eq!(got, counter, "alice's counter for {source:?}");
    }
    for (user, source) in [
        ("bob", "rhost:a"),
        ("alic", "rhost:a"),
        ("alice2", "uid:1000"),
    ] {
        assert_eq!(both(user, source), (None, None), "{user:?} {source:?}");
    }
}

fn every_record_field_round_trips(store: &dyn Store) {
    let rich = rich_record(1);
    create(store, "alice", &rich);
    assert_same(
        &read(store, "alice").expect("alice"),
        &rich,
        "alice read back",
    );
    let mut next = rich.clone();
    next.version = 2;
    next.change_devices(|d| {
        d[1].state = EnrollState::Active;
        d[1].replaces = None;
        d[0].algorithm = Algorithm::Sha256;
        d[0].secret = SecretBytes::new(vec![0; 16]);
    })
    .expect("two devices");
    next.fallback = Fallback {
        recovery: rich.fallback.recovery[3..].to_vec(),
        sms: Vec::new(),
        ..rich.fallback.clone()
    };
    ok(
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&next),
            SourcesChange::Keep,
        ),
        "put the changed rich record",
    );
    assert_same(
        &read(store, "alice").expect("alice"),
        &next,
        "alice after the put",
    );
    // And the plainest record: no fallback, nothing optional set.
    let plain = UserRecord::decoy();
    create(store, "bob", &plain);
    let all = ok(store.users(), "users()");
    assert_eq!(all.len(), 2, "users()");
    assert_same(&all[0].1, &next, "alice in users()");
    assert_same(&all[1].1, &plain, "bob in users()");
}

fn versions_above_i64_max_work(store: &dyn Store) {
    const ABOVE: u64 = i64::MAX as u64 + 1; // i64::MIN as a BIGINT
                                            // Re-enrolment starts at a random u64 and adds with wrap-around.
    let steps = [
        u64::MAX - 1,
        u64::MAX,
        0,
        ABOVE,
        ABOVE + 1,
        i64::MAX as u64,
        u64::MAX / 2 + 12_345,
    ];
    create(store, "alice", &marked(steps[0], 0));
    for (i, pair) in steps.windows(2).enumerate() {
        let (from, to) = (pair[0], pair[1]);
        // The neighbours of the stored version, and its sign-flipped twin.
        for stale in [from.wrapping_sub(1), from.wrapping_add(1), from ^ (1 << 63)] {
            conflict(
                store.commit(
                    "alice",
                    Some(stale),
                    RecordChange::Put(&marked(to, 99)),
                    SourcesChange::Set("rhost:a", counter(99, 99)),
                ),
                &format!("put with version {stale} while {from} is stored"),
            );
        }
        ok(
            store.commit(
                "alice",
                Some(from),
                RecordChange::Put(&marked(to, i as u64 + 1)),
                SourcesChange::Set("rhost:a", counter(i as u32 + 1, 1_700_000_000)),
            ),
            &format!("put {from} → {to}"),
        );
        assert_same(
            &read(store, "alice").expect("alice"),
            &marked(to, i as u64 + 1),
            &format!("alice after {from} → {to}"),
        );
        assert_sources(
            store,
            "alice",
            &[("rhost:a", Some(counter(i as u32 + 1, 1_700_000_000)))],
        );
    }
    create(store, "bob", &record(u64::MAX));
    create(store, "carol", &record(ABOVE));
    let versions: Vec<(String, u64)> = ok(store.users(), "users()")
        .into_iter()
        .map(|(n, r)| (n, r.version))
        .collect();
    let last = *steps.last().expect("steps");
    assert_eq!(
        versions,
        [
            ("alice".to_owned(), last),
            ("bob".to_owned(), u64::MAX),
            ("carol".to_owned(), ABOVE)
        ],
        "versions in users()"
    );
    ok(
        store.commit(
            "bob",
            Some(u64::MAX),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete bob at version u64::MAX",
    );
    conflict(
        store.commit(
            "carol",
            Some(ABOVE - 1),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete carol with the version below hers",
    );
    ok(
        store.commit(
            "carol",
            Some(ABOVE),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete carol at version i64::MAX + 1",
    );
    assert_eq!(names(store), ["alice"]);
}

fn counters_at_their_limits_round_trip(store: &dyn Store) {
    create(store, "alice", &record(1));
    let written = [
        // The latest time a signed 64-bit column holds (a later one is left
        // open: no clock reaches it).
        ("rhost:max", counter(u32::MAX, i64::MAX as u64)),
        (
            "rhost:above",
            counter(i32::MAX as u32 + 1, u64::from(u32::MAX) + 1),
        ),
        ("rhost:zero", counter(0, 0)),
        ("rhost:2001:db8::1", counter(1, 1)),
        ("rhost:ä 'q\"; --%_", counter(2, 2)),
    ];
    // The longest source the daemon makes: an rhost is at most 255 bytes.
    let long = format!("rhost:{}", "h".repeat(255));
    let long_counter = counter(4, 4);
    let all = written
        .iter()
        .copied()
        .chain([(long.as_str(), long_counter)]);
    for (version, (source, c)) in (1u64..).zip(all) {
        ok(
            store.commit(
                "alice",
                Some(version),
                RecordChange::Put(&record(version + 1)),
                SourcesChange::Set(source, c),
            ),
            &format!("set the counter for {source:?}"),
        );
    }
    assert_sources(store, "alice", &written.map(|(s, c)| (s, Some(c))));
    assert_sources(store, "alice", &[(long.as_str(), Some(long_counter))]);
}

fn sync_and_decoy_write_change_nothing_a_reader_sees(store: &dyn Store) {
    ok(store.sync(), "sync() of an empty store");
    ok(store.decoy_write(), "decoy_write() on an empty store");
    assert!(names(store).is_empty(), "users() after a decoy write");
    let users = ["al", "alice", "bob"];
    let sources = ["rhost:a", "uid:0"];
    for user in users {
        create_with_sources(store, user, &sources);
    }
    let seen = |store: &dyn Store| {
        let records = ok(store.users(), "users()");
        let counters: Vec<Option<SourceCounter>> = users
            .iter()
            .flat_map(|u| sources.iter().map(move |s| (u, s)))
            .map(|(u, s)| read_source(store, u, s))
            .collect();
        (records, counters)
    };
    let before = seen(store);
    for _ in 0..3 {
        ok(store.decoy_write(), "decoy_write()");
    }
    ok(store.sync(), "sync()");
    let after = seen(store);
    assert_eq!(
        before.1, after.1,
        "the counters after decoy writes and a sync"
    );
    assert_eq!(
        before.0.len(),
        after.0.len(),
        "users() after decoy writes and a sync"
    );
    for ((name_a, a), (name_b, b)) in before.0.iter().zip(&after.0) {
        assert_eq!(name_a, name_b, "users() after decoy writes and a sync");
        assert_same(b, a, &format!("{name_a:?} after decoy writes and a sync"));
    }
    // And the version checks still hold.
    let version = read(store, "alice").expect("alice").version;
    conflict(
        store.commit(
            "alice",
            Some(version - 1),
            RecordChange::Put(&record(version)),
            SourcesChange::Keep,
        ),
        "a stale put after decoy writes",
    );
    ok(
        store.commit(
            "alice",
            Some(version),
            RecordChange::Put(&record(version + 1)),
            SourcesChange::Keep,
        ),
        "a put after decoy writes",
    );
}

fn a_link_token_finds_its_user_after_a_put(store: &dyn Store) {
    let (link, phone, other) = (hash(1), hash(2), hash(3));
    assert_tokens(store, &[(&link, None)], "an empty store");
    create(store, "alice", &with_links(1, Some(&link), None));
    create(store, "bob", &record(1));
    assert_tokens(
        store,
        &[(&link, Some("alice")), (&phone, None), (&other, None)],
        "alice created with a link",
    );
    // A phone session added by a later put, the link kept.
    ok(
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&with_links(2, Some(&link), Some(&phone))),
            SourcesChange::Keep,
        ),
        "alice's phone session",
    );
    assert_tokens(
        store,
        &[(&link, Some("alice")), (&phone, Some("alice"))],
        "alice with a link and a phone session",
    );
    // A put with a source change (a commit of record and counter together).
    ok(
        store.commit(
            "bob",
            Some(1),
            RecordChange::Put(&with_links(2, Some(&other), None)),
            SourcesChange::Set("rhost:a", counter(1, 1)),
        ),
        "bob's link, with a counter",
    );
    assert_tokens(
        store,
        &[(&other, Some("bob")), (&link, Some("alice"))],
        "bob with a link",
    );
    // The same hash in both places of one record.
    create(
        store,
        "carol",
        &with_links(1, Some(&hash(4)), Some(&hash(4))),
    );
    assert_tokens(store, &[(&hash(4), Some("carol"))], "carol");
    // Hashes are exact strings: a prefix, or another case, is no hit.
    assert_tokens(
        store,
        &[
            (&link[..63], None),
            (&link.to_uppercase(), None),
            ("", None),
        ],
        "near misses",
    );
}

fn a_replaced_link_token_finds_nobody(store: &dyn Store) {
    let (old, new, phone) = (hash(1), hash(2), hash(3));
    create(store, "alice", &with_links(1, Some(&old), Some(&phone)));
    ok(
        store.commit(
            "alice",
            Some(1),
            RecordChange::Put(&with_links(2, Some(&new), Some(&phone))),
            SourcesChange::Keep,
        ),
        "a new link for alice",
    );
    assert_tokens(
        store,
        &[(&old, None), (&new, Some("alice")), (&phone, Some("alice"))],
        "after the link was replaced",
    );
    // Links dropped with a counter reset (a transaction).
    ok(
        store.commit(
            "alice",
            Some(2),
            RecordChange::Put(&with_links(3, None, None)),
            SourcesChange::ClearAll,
        ),
        "alice's links dropped",
    );
    assert_tokens(
        store,
        &[(&old, None), (&new, None), (&phone, None)],
        "after the links were dropped",
    );
    // And the old one may come back.
    ok(
        store.commit(
            "alice",
            Some(3),
            RecordChange::Put(&with_links(4, Some(&old), None)),
            SourcesChange::Keep,
        ),
        "alice's first link again",
    );
    assert_tokens(store, &[(&old, Some("alice"))], "the first link again");
}

fn the_link_tokens_of_a_deleted_user_find_nobody(store: &dyn Store) {
    let (link, phone, bobs) = (hash(1), hash(2), hash(3));
    create(store, "alice", &with_links(1, Some(&link), Some(&phone)));
    create(store, "bob", &with_links(1, Some(&bobs), None));
    ok(
        store.commit(
            "alice",
            Some(1),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        "delete alice",
    );
    assert_tokens(
        store,
        &[(&link, None), (&phone, None), (&bobs, Some("bob"))],
        "after alice was deleted",
    );
    ok(
        store.commit("bob", Some(1), RecordChange::Delete, SourcesChange::Keep),
        "delete bob (Keep)",
    );
    assert_tokens(store, &[(&bobs, None)], "after bob was deleted");
    // Created again, with another link.
    create(store, "alice", &with_links(1, Some(&hash(4)), None));
    assert_tokens(
        store,
        &[(&link, None), (&hash(4), Some("alice"))],
        "alice created again",
    );
}

fn a_failed_commit_changes_no_link_token(store: &dyn Store) {
    let (link, new) = (hash(1), hash(2));
    create(store, "alice", &with_links(1, Some(&link), None));
    let replaced = with_links(2, Some(&new), None);
    let failing: [(&str, Option<u64>, RecordChange<'_>, SourcesChange<'_>); 6] = [
        (
            "alice",
            None,
            RecordChange::Put(&replaced),
            SourcesChange::Keep,
        ),
        (
            "alice",
            Some(7),
            RecordChange::Put(&replaced),
            SourcesChange::Keep,
        ),
        (
            "alice",
            Some(7),
            RecordChange::Put(&replaced),
            SourcesChange::Set("rhost:a", counter(1, 1)),
        ),
        (
            "alice",
            Some(7),
            RecordChange::Delete,
            SourcesChange::ClearAll,
        ),
        (
            "carol",
            Some(1),
            RecordChange::Put(&replaced),
            SourcesChange::Keep,
        ),
        (
            "carol",
            Some(1),
            RecordChange::Put(&replaced),
            SourcesChange::ClearAll,
        ),
    ];
    for (user, expected, record_change, sources) in failing {
        conflict(
            store.commit(user, expected, record_change, sources),
            &format!("{user:?} with expected version {expected:?}, {record_change:?}"),
        );
        assert_tokens(
            store,
            &[(&link, Some("alice")), (&new, None)],
            &format!("after a conflicting commit of {user:?}"),
        );
    }
}

fn link_tokens_of_names_that_are_prefixes_never_mix(store: &dyn Store) {
    let users = ["a", "al", "alice", "alice2"];
    for (i, user) in users.iter().enumerate() {
        let n = 10 * i as u32;
        create(
            store,
            user,
            &with_links(1, Some(&hash(n)), Some(&hash(n + 1))),
        );
    }
    let expect = |deleted: &[&str]| -> Vec<(String, Option<String>)> {
        users
            .iter()
            .enumerate()
            .flat_map(|(i, user)| {
                let n = 10 * i as u32;
                let who = (!deleted.contains(user)).then(|| user.to_string());
                [(hash(n), who.clone()), (hash(n + 1), who)]
            })
            .collect()
    };
    let check = |store: &dyn Store, deleted: &[&str]| {
        let want = expect(deleted);
        let want: Vec<(&str, Option<&str>)> = want
            .iter()
            .map(|(h, u)| (h.as_str(), u.as_deref()))
            .collect();
        assert_tokens(store, &want, &format!("deleted so far: {deleted:?}"));
    };
    check(store, &[]);
    let mut deleted = Vec::new();
    for user in ["al", "alice2", "a"] {
        ok(
            store.commit(user, Some(1), RecordChange::Delete, SourcesChange::ClearAll),
            &format!("delete {user:?}"),
        );
        deleted.push(user);
        check(store, &deleted);
    }
}

/// The audit trail's head (`Store::audit_head`): none at first, the
/// latest one written read back, also after a reopen, and never a user.
fn the_audit_head_is_kept_across_a_reopen(open: &mut dyn FnMut() -> Box<dyn Store>) {
    let (first, second) = (
        format!("7:{}", "ab".repeat(32)),
        format!("9:{}", "cd".repeat(32)),
    );
    {
        let store = open();
        assert_eq!(
            ok(store.audit_head("host-a"), "audit_head of a fresh store"),
            None
        );
        ok(store.set_audit_head("host-a", &first), "set_audit_head");
        assert_eq!(
            ok(store.audit_head("host-a"), "audit_head").as_deref(),
            Some(first.as_str())
        );
        ok(
            store.set_audit_head("host-a", &second),
            "set_audit_head again",
        );
        ok(store.sync(), "sync()");
    }
    let store = open();
    assert_eq!(
        ok(store.audit_head("host-a"), "audit_head after a reopen").as_deref(),
        Some(second.as_str()),
        "the latest head after a reopen"
    );
    assert!(names(&*store).is_empty(), "the head is no user");
}

fn the_link_token_index_survives_a_reopen(open: &mut dyn FnMut() -> Box<dyn Store>) {
    let (link, phone, gone, bobs) = (hash(1), hash(2), hash(3), hash(4));
    {
        let store = open();
        create(&*store, "alice", &with_links(1, Some(&gone), Some(&phone)));
        ok(
            store.commit(
                "alice",
                Some(1),
                RecordChange::Put(&with_links(2, Some(&link), Some(&phone))),
                SourcesChange::Keep,
            ),
            "a new link for alice",
        );
        create(&*store, "bob", &with_links(1, Some(&bobs), None));
        ok(store.sync(), "sync()");
    }
    let want = [
        (link.as_str(), Some("alice")),
        (phone.as_str(), Some("alice")),
        (gone.as_str(), None),
        (bobs.as_str(), Some("bob")),
    ];
    {
        let store = open();
        assert_tokens(&*store, &want, "after a reopen");
        ok(
            store.commit(
                "bob",
                Some(1),
                RecordChange::Delete,
                SourcesChange::ClearAll,
            ),
            "delete bob",
        );
    }
    let store = open();
    assert_tokens(
        &*store,
        &[(&link, Some("alice")), (&bobs, None)],
        "after a second reopen",
    );
}
