//! Someone who can write the sled store (or put back an old copy of the
//! state directory) but cannot read the key, against the real `otpd`
//! binary: a record planted in clear is refused, metadata changed without
//! the key is refused, an old copy of the whole state directory (with its
//! watermark) is refused thanks to the anchor kept outside it, and a store
//! written before encryption at rest is sealed only by an explicit
//! `otpd seal-store`.
//!
//! The attacker's writes go through sled itself, as a real attacker with
//! write access to the state directory would make them.

use otpd::core::record::{EnrollState, SecretBytes, UserRecord};
use otpd_tests::statedir::copy_tree;
use otpd_tests::{code_at, settled_now, Limits, TestEnv};
use std::path::PathBuf;

/// The secret the attacker chooses (RFC 6238's test secret).
const PLANTED_SECRET: &[u8] = b"12345678901234567890";
/// [`PLANTED_SECRET`] in base32, for oathtool.
const PLANTED_SECRET_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// The store's sled directory.
fn store_dir(env: &TestEnv) -> PathBuf {
    env.state_dir.join("store")
}

/// The watermark's number (its first 20 digits).
fn watermark(env: &TestEnv) -> u64 {
    let text =
        std::fs::read_to_string(env.state_dir.join("store.watermark")).expect("read the watermark");
    text.get(..20)
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not a watermark: {text:?}"))
}

/// The name of the tree that holds the users (from `meta/active`).
fn users_tree(meta: &sled::Tree) -> String {
    let active = meta
        .get("active")
        .expect("read meta/active")
        .expect("the store has meta/active");
    let value: serde_json::Value = serde_json::from_slice(&active).expect("meta/active is JSON");
    value["tree"].as_str().expect("a tree name").to_owned()
}

/// `otpd serve` that must refuse to start ([`TestEnv::serve_refused`]):
/// returns its `otpd:` lines.
fn serve_refused(env: &TestEnv, what: &str) -> String {
    env.serve_refused(what).otpd_lines()
}

/// Starts the daemon (as the env's daemon) if it comes up; `Err` with its
/// `otpd:` lines if it refuses ([`TestEnv::try_serve`]).
fn try_start(env: &mut TestEnv) -> Result<(), String> {
    env.try_serve()
        .map_err(|printed| otpd_tests::process::otpd_lines(&printed))?;
    env.spawn_daemon();
    Ok(())
}

/// A record in clear, as otpd wrote them before encryption at rest, with
/// the attacker's secret.
fn clear_record(created: u64) -> Vec<u8> {
    let mut record = UserRecord::decoy();
    record.version = 1;
    record.issuer = "planted".into();
    record
        .change_devices(|d| {
            d[0].state = EnrollState::Active;
            d[0].secret = SecretBytes::new(PLANTED_SECRET.to_vec());
            d[0].created = created;
        })
        .expect("one device");
    otpd::store::format::encode(&record)
        .expect("encode a record")
        .to_vec()
}

#[test]
fn a_record_planted_in_clear_into_a_sealed_store_is_refused() {
    let mut env = TestEnv::start("tamper_clear");
    let t = settled_now(30, 12);
    env.enroll_active("alice", &[], t - 30);
    env.enroll_active("bob", &[], t - 30);
    env.kill_daemon(libc::SIGTERM);

    // alice's record replaced by one in clear with the attacker's secret;
    // the key entry and the schema removed, so that the store looks like
    // one from before encryption at rest; and the removals' number set to
    // the watermark's, so that the record the attacker replaced is not
    // missed.
    let high = watermark(&env);
    {
        let db = sled::open(store_dir(&env)).expect("open the store with sled");
        let meta = db.open_tree("meta").expect("meta");
        let users = db.open_tree(users_tree(&meta)).expect("users");
        users
            .insert("alice", clear_record(t - 60))
            .expect("plant alice");
        meta.remove("active").expect("remove meta/active");
        meta.remove("schema").expect("remove meta/schema");
        meta.insert("deleted_change", serde_json::to_vec(&high).unwrap())
            .expect("set deleted_change");
        db.flush().expect("flush");
    }

    match try_start(&mut env) {
        Ok(()) => {
            let planted_code = code_at(PLANTED_SECRET_BASE32, "SHA1", 6, 30, t);
            let out = env.otpd(&["verify", "alice", &planted_code]);
            panic!(
                "otpd started on a store with a record planted in clear; the attacker's code \
                 for alice was then {} (exit {})",
                if out.status.success() {
                    "ACCEPTED"
                } else {
                    "refused"
                },
                out.status
            );
        }
        Err(said) => {
            println!("[tamper_clear] refused: {said}");
            let store = store_dir(&env).display().to_string();
            assert!(
                said.contains("alice") && said.contains(&store) && said.contains("in clear"),
                "the refusal must name the store and the user, and say the record is in clear: \
                 {said}"
            );
            assert!(
                !said.contains("seal-store"),
                "a store that had a key must not be offered to `otpd seal-store`: {said}"
            );
        }
    }
    // And `otpd seal-store` will not seal it either.
    let out = env.otpd(&["seal-store"]);
    println!("[tamper_clear] seal-store: {out}");
    assert_eq!(out.code(), 1, "seal-store on a store that had a key: {out}");
    assert!(out.stderr.contains("key"), "{out}");
    // The attacker's record in clear is still in the store, as it must be
    // (refused, not rewritten): it is the attacker's secret, not a leak,
    // and another test of this binary may have remembered it for the scan
    // at the end. The store goes before that scan.
    std::fs::remove_dir_all(store_dir(&env)).expect("remove the planted store");
}

#[test]
fn metadata_changed_without_the_key_is_refused() {
    let mut env = TestEnv::start("tamper_meta");
    let t = settled_now(30, 20);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.enroll_active("bob", &[], t - 30);
    env.kill_daemon(libc::SIGTERM);
    let older = env.dir.join("store.older");
    copy_tree(&store_dir(&env), &older);

    // After the copy: alice logs in (her code is spent), bob is removed.
    env.spawn_daemon();
    let used = alice.code_at(t);
    env.otpd_expect(&["verify", "alice", &used], 0);
    env.otpd_expect(&["remove", "bob"], 0);
    env.kill_daemon(libc::SIGTERM);
    let high = watermark(&env);

    // The older store put back under the current watermark, its removals'
    // number raised to the watermark's so that it passes that check.
    std::fs::remove_dir_all(store_dir(&env)).expect("remove the store");
    std::fs::rename(&older, store_dir(&env)).expect("put back the older store");
    {
        let db = sled::open(store_dir(&env)).expect("open the store with sled");
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("deleted_change", serde_json::to_vec(&high).unwrap())
            .expect("set deleted_change");
        db.flush().expect("flush");
    }
    // The anchor would catch the rollback on its own: this case is about
    // the metadata, so it is moved away.
    let anchor = env.dir.join("state-anchor");
    let _ = std::fs::remove_dir_all(&anchor);

    match try_start(&mut env) {
        Ok(()) => {
            let replay = env.otpd(&["verify", "alice", &used]);
            let bob = env.list_entry("bob").is_some();
            panic!(
                "otpd started on an older store with a forged deleted_change: alice's spent code \
                 was {} (exit {}), bob is {}",
                if replay.status.success() {
                    "ACCEPTED again"
                } else {
                    "refused"
                },
                replay.status,
                if bob { "BACK" } else { "still removed" }
            );
        }
        Err(said) => {
            println!("[tamper_meta] refused: {said}");
            let store = store_dir(&env).display().to_string();
            assert!(
                said.contains(&store) && said.contains("metadata"),
                "the refusal must name the store and its metadata: {said}"
            );
        }
    }
}

#[test]
fn an_old_copy_of_the_whole_state_directory_is_refused_by_the_anchor() {
    let mut env = TestEnv::start("tamper_rollback");
    let t = settled_now(30, 20);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.enroll_active("bob", &[], t - 30);
    env.kill_daemon(libc::SIGTERM);
    // The whole state directory, watermark and all, as a backup or a
    // snapshot holds it.
    let snapshot = env.dir.join("state.snapshot");
    copy_tree(&env.state_dir, &snapshot);

    env.spawn_daemon();
    let used = alice.code_at(t);
    env.otpd_expect(&["verify", "alice", &used], 0);
    env.otpd_expect(&["remove", "bob"], 0);
    env.kill_daemon(libc::SIGTERM);

    std::fs::remove_dir_all(&env.state_dir).expect("remove the state dir");
    copy_tree(&snapshot, &env.state_dir);
    let said = match try_start(&mut env) {
        Ok(()) => {
            let replay = env.otpd(&["verify", "alice", &used]);
            let bob = env.list_entry("bob").is_some();
            panic!(
                "otpd started on an old copy of its state directory: alice's spent code was {} \
                 (exit {}), bob is {}",
                if replay.status.success() {
                    "ACCEPTED again"
                } else {
                    "refused"
                },
                replay.status,
                if bob { "BACK" } else { "still removed" }
            );
        }
        Err(said) => said,
    };
    println!("[tamper_rollback] refused: {said}");
    let anchor = env.dir.join("state-anchor").join("store.anchor");
    assert!(
        said.contains(&store_dir(&env).display().to_string())
            && said.contains(&anchor.display().to_string())
            && said.contains("older copy"),
        "the refusal must name the store, the anchor and what happened: {said}"
    );
    assert!(
        said.contains(&format!("delete {}", anchor.display())),
        "the refusal must say how to accept a deliberate restore: {said}"
    );
    // The same refusal again (nothing was changed by the first one).
    let again = serve_refused(&env, "a second start on the old copy");
    assert_eq!(again, said);

    // The operator restored it on purpose: doing what the message says
    // accepts it, and the state is the copy's.
    std::fs::remove_file(&anchor).expect("delete the anchor");
    env.spawn_daemon();
    assert!(env.list_entry("bob").is_some(), "bob is back with the copy");
    env.otpd_expect(&["verify", "alice", &alice.code_at(t + 30)], 0);
    // From now on the anchor follows this store again.
    env.kill_daemon(libc::SIGTERM);
    assert!(anchor.exists(), "a new anchor was written");
    env.spawn_daemon();
}

#[test]
fn a_store_from_before_encryption_is_sealed_only_by_otpd_seal_store() {
    let mut env = TestEnv::without_daemon("seal_store", &Limits::default());
    let t = settled_now(30, 12);
    // What otpd wrote before encryption at rest: schema 1, JSON records,
    // no key entry, no watermark, no anchor.
    {
        let db = sled::open(store_dir(&env)).expect("create a store with sled");
        db.open_tree("meta")
            .unwrap()
            .insert("schema", b"1".to_vec())
            .unwrap();
        let users = db.open_tree("users").unwrap();
        users.insert("alice", clear_record(t - 60)).unwrap();
        users.insert("bob", clear_record(t - 60)).unwrap();
        db.flush().unwrap();
    }
    let said = serve_refused(&env, "a store written in clear");
    println!("[seal_store] refused: {said}");
    assert!(
        said.contains("otpd seal-store") && said.contains(&store_dir(&env).display().to_string()),
        "the refusal must name the store and the command: {said}"
    );
    assert!(
        !env.key_file.exists(),
        "no key is made by a start that refused"
    );

    let out = env.otpd_expect(&["seal-store"], 0);
    println!("[seal_store] {out}");
    assert!(out.stdout.contains("2 records"), "{out}");
    assert!(env.key_file.exists(), "seal-store made the key file");
    // The records in clear are gone from the store's files, not only
    // sealed beside them (the secrets check when the env is dropped looks
    // for the secret in every form under state_dir as well).
    let raw_json = serde_json::to_vec(&SecretBytes::new(PLANTED_SECRET.to_vec())).unwrap();
    for file in std::fs::read_dir(store_dir(&env)).unwrap().flatten() {
        if file.path().is_file() {
            let bytes = std::fs::read(file.path()).unwrap();
            assert!(
                !bytes
                    .windows(raw_json.len())
                    .any(|w| w == raw_json.as_slice()),
                "a secret in clear is still in {}",
                file.path().display()
            );
        }
    }
    // Sealed: no record in clear is left, and a second run refuses.
    let out = env.otpd(&["seal-store"]);
    assert_eq!(out.code(), 1, "seal-store on a sealed store: {out}");

    env.spawn_daemon();
    let code = code_at(PLANTED_SECRET_BASE32, "SHA1", 6, 30, t);
    env.otpd_expect(&["verify", "alice", &code], 0);
    let out = env.otpd(&["seal-store"]);
    assert_eq!(out.code(), 1, "seal-store while the daemon runs: {out}");
    assert!(out.stderr.contains("systemctl stop"), "{out}");
}
