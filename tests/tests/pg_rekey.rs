//! `otpd rekey` for a fleet's PostgreSQL store: every record re-sealed in
//! one transaction, the database's key ID switched, a host with the old key
//! refused, the replay state kept, and a second run a no-op.

use otpd_tests::env::Limits;
use otpd_tests::fleet::Fleet;
use otpd_tests::totp::settled_now;

#[test]
fn rekey_reseals_the_fleet_and_the_old_key_is_refused() {
    let Some(mut fleet) = Fleet::start("pgrekey", 2, &Limits::default()) else {
        return;
    };
    let now = settled_now(30, 10);
    // alice and bob active (alice used the code of `now`), carol pending.
    let alice = fleet.hosts[0].enroll_active("alice", &[], now - 30);
    fleet.hosts[1].otpd_expect(&["verify", "alice", &alice.code_at(now)], 0);
    let bob = fleet.hosts[0].enroll_active("bob", &[], now);
    let carol = fleet.hosts[1].enroll("carol", &[]);
    let before: Vec<String> = fleet.hosts[0]
        .list()
        .iter()
        .map(|u| format!("{} {} {}", u["user"], u["state"], u["last_success"]))
        .collect();
    let versions_before = fleet
        .cluster
        .psql("SELECT name || ' ' || version FROM otpd_users ORDER BY name");

    // Every host stopped, then the rekey on host A.
    for host in &mut fleet.hosts {
        let status = host.kill_daemon(libc::SIGTERM);
        assert!(status.success(), "otpd serve ended with {status}");
    }
    let a = &fleet.hosts[0];
    let new_key = a.dir.join("new.key");
    let new_id = a.keygen(&new_key);
    let out = a.otpd_expect(&["rekey", new_key.to_str().unwrap()], 0);
    println!("{out}");
    assert!(
        out.stdout.contains(&format!(
            "3 records of the fleet's database re-sealed with key ID {new_id}"
        )),
        "{out}"
    );
    assert_eq!(
        fleet
            .cluster
            .psql("SELECT value FROM otpd_meta WHERE key = 'key_id'")
            .trim(),
        new_id
    );
    // Every record now carries the new key ID (bytes 1..9 of the sealed
    // header) and a bumped version.
    let ids = fleet
        .cluster
        .psql("SELECT DISTINCT encode(substring(record FROM 2 FOR 8), 'hex') FROM otpd_users");
    assert_eq!(ids.trim(), new_id, "key IDs in the records: {ids}");
    let versions_after = fleet
        .cluster
        .psql("SELECT name || ' ' || version FROM otpd_users ORDER BY name");
    assert_ne!(versions_before, versions_after);
    assert_eq!(
        std::fs::read(&a.key_file).unwrap(),
        std::fs::read(&new_key).unwrap(),
        "key_file does not hold the new key"
    );

    // Run again: nothing left to do.
    let again = a.otpd_expect(&["rekey", new_key.to_str().unwrap()], 0);
    assert!(
        again.stdout.contains(&format!(
            "3 records of the fleet's database were already sealed with key ID {new_id}"
        )),
        "{again}"
    );

    // Host B still has the old key: refused, naming both key IDs.
    let refused = fleet.hosts[1].serve_refused("the old key after the rekey");
    let text = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        text.contains(&fleet.key_id) && text.contains(&new_id),
        "{text}"
    );
    assert!(text.contains("same key file"), "{text}");

    // With the new key copied over, both hosts serve the same users.
    std::fs::remove_file(&fleet.hosts[1].key_file).unwrap();
    std::fs::copy(&new_key, &fleet.hosts[1].key_file).unwrap();
    for host in &mut fleet.hosts {
        host.spawn_daemon();
    }
    let after: Vec<String> = fleet.hosts[1]
        .list()
        .iter()
        .map(|u| format!("{} {} {}", u["user"], u["state"], u["last_success"]))
        .collect();
    assert_eq!(before, after, "the users changed in the rekey");
    // The replay state survived: alice's used code is refused, the next
    // step's code works once.
    fleet.hosts[0].otpd_expect(&["verify", "alice", &alice.code_at(now)], 1);
    fleet.hosts[1].otpd_expect(&["verify", "alice", &alice.code_at(now + 30)], 0);
    fleet.hosts[0].otpd_expect(&["verify", "alice", &alice.code_at(now + 30)], 1);
    fleet.hosts[0].otpd_expect(&["verify", "bob", &bob.code_at(now + 30)], 0);
    fleet.hosts[1].otpd_expect(&["confirm", "carol", &carol.code_at(now)], 0);
    fleet.assert_no_secrets_leaked();
}

#[test]
fn rekey_with_a_key_the_database_does_not_know_changes_nothing() {
    let Some(mut fleet) = Fleet::start("pgrekeywrong", 1, &Limits::default()) else {
        return;
    };
    let now = settled_now(30, 10);
    fleet.hosts[0].enroll_active("dave", &[], now);
    let status = fleet.hosts[0].kill_daemon(libc::SIGTERM);
    assert!(status.success());
    let a = &fleet.hosts[0];
    let dump = || {
        fleet
            .cluster
            .psql("SELECT name, version, encode(record, 'hex') FROM otpd_users ORDER BY name")
    };
    let before = dump();
    // The host's key_file replaced by a stranger's: the records cannot be
    // opened, and the rekey must refuse before writing anything.
    let stranger = a.dir.join("stranger.key");
    let stranger_id = a.keygen(&stranger);
    std::fs::remove_file(&a.key_file).unwrap();
    std::fs::copy(&stranger, &a.key_file).unwrap();
    let new_key = a.dir.join("new.key");
    a.keygen(&new_key);
    let out = a.otpd_expect(&["rekey", new_key.to_str().unwrap()], 1);
    assert!(
        out.stderr.contains(&fleet.key_id) && out.stderr.contains(&stranger_id),
        "{out}"
    );
    assert_eq!(before, dump(), "a refused rekey changed the database");
    assert_eq!(
        fleet
            .cluster
            .psql("SELECT value FROM otpd_meta WHERE key = 'key_id'")
            .trim(),
        fleet.key_id
    );
}
