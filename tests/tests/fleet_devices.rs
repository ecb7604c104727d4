//! A fleet of three hosts on one PostgreSQL store
//! ([`otpd_tests::fleet::Fleet`]) with counter-based keys and users with
//! two devices, through the real libpam on each host:
//!
//! - an HOTP key's code accepted on one host is refused on every host, the
//!   counter moves fleet-wide (in order, and over the look-ahead window),
//!   and one code typed on the three hosts at once ([`Racers`]) lets one
//!   login in;
//! - a user with a phone (TOTP) and a key (HOTP), enrolled and confirmed on
//!   different hosts, logs in with either from every host, each code once
//!   in the whole fleet; removing a device on one host removes it
//!   everywhere.

use otpd_tests::fleet::Fleet;
use otpd_tests::hotp::{device, devices, next_counter, HotpKey};
use otpd_tests::race::Racers;
use otpd_tests::{require, settled_now, Limits, PamOutcome, PAM};
use std::collections::BTreeMap;
use std::ffi::OsStr;

/// Limits high enough that refused logins are judged as wrong or used
/// codes, never throttled.
fn lenient() -> Limits {
    Limits {
        max_failures: 1000,
        user_max_failures: 10_000,
        ..Limits::default()
    }
}

/// Every host lists `next` as the next counter of `user`'s `name`.
fn counter_everywhere(fleet: &Fleet, user: &str, name: &str, next: u64, when: &str) {
    for host in &fleet.hosts {
        assert_eq!(
            next_counter(host, user, name),
            next,
            "{when}: the next counter as host {} lists it",
            host.name
        );
    }
}

#[test]
fn an_hotp_code_is_good_once_in_the_whole_fleet_and_the_counter_moves_everywhere() {
    if !require("fleet: an HOTP key", PAM) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_hotp", 3, &lenient()) else {
        return;
    };
    let [a, b, c] = &fleet.hosts[..] else {
        panic!("a fleet of three");
    };
    let key = HotpKey::enroll(a, "dave", &[]);
    assert_eq!(key.counter, 0);
    assert_eq!(device(c, "dave", &key.device)["state"], "pending");
    // Confirmed on B with the code of counter 0, which A enrolled.
    b.otpd_expect(&["confirm", "dave", &key.code(0)], 0);
    for host in &fleet.hosts {
        let listed = device(host, "dave", &key.device);
        assert_eq!(listed["state"], "active", "{}: {listed}", host.name);
        assert_eq!(listed["kind"], "hotp", "{}: {listed}", host.name);
    }
    counter_everywhere(
        &fleet,
        "dave",
        &key.device,
        1,
        "after the confirmation on B",
    );

    // Counter 1 on A; refused on every host after that.
    a.expect_login(
        "dave",
        &key.code(1),
        "192.0.2.1",
        PamOutcome::Success,
        "counter 1 on A",
    );
    for (host, rhost) in [(a, "192.0.2.2"), (b, "192.0.2.3"), (c, "192.0.2.4")] {
        host.expect_login(
            "dave",
            &key.code(1),
            rhost,
            PamOutcome::AuthErr,
            "counter 1 again, after A accepted it",
        );
    }
    counter_everywhere(&fleet, "dave", &key.device, 2, "after counter 1 on A");

    // Counter 2 on B: A and C refuse it, and the confirmation's code.
    b.expect_login(
        "dave",
        &key.code(2),
        "192.0.2.5",
        PamOutcome::Success,
        "counter 2 on B",
    );
    a.expect_login(
        "dave",
        &key.code(2),
        "192.0.2.6",
        PamOutcome::AuthErr,
        "counter 2 on A",
    );
    c.expect_login(
        "dave",
        &key.code(0),
        "192.0.2.7",
        PamOutcome::AuthErr,
        "counter 0 on C",
    );

    // Over the look-ahead window on C: the skipped codes are dead on A.
    c.expect_login(
        "dave",
        &key.code(7),
        "192.0.2.8",
        PamOutcome::Success,
        "counter 7 on C",
    );
    counter_everywhere(&fleet, "dave", &key.device, 8, "after counter 7 on C");
    a.expect_login(
        "dave",
        &key.code(5),
        "192.0.2.9",
        PamOutcome::AuthErr,
        "skipped counter 5 on A",
    );
    a.expect_login(
        "dave",
        &key.code(8),
        "192.0.2.10",
        PamOutcome::Success,
        "counter 8 on A",
    );

    // One code typed on the three hosts at once: one login in.
    let code = key.code(9);
    let mut logins = Racers::new();
    let services: Vec<_> = fleet.hosts.iter().map(|h| h.pam_service("")).collect();
    for i in 0..12 {
        logins.start(services[i % 3].command(OsStr::new("dave"), &format!("10.6.0.{i}"), None));
    }
    let (finished, waking) = logins.type_at_once(&code);
    let results: Vec<(usize, PamOutcome)> = finished
        .iter()
        .enumerate()
        .map(|(i, login)| (i % 3, login.outcome))
        .collect();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (host, outcome) in &results {
        *tally
            .entry(format!("{} {outcome:?}", otpd_tests::fleet::label(*host)))
            .or_default() += 1;
    }
    println!(
        "12 logins held at the prompt with one HOTP code over 3 hosts, all woken in {} µs: \
         {tally:?}",
        waking.as_micros()
    );
    let count = |o: PamOutcome| results.iter().filter(|(_, r)| *r == o).count();
    assert_eq!(count(PamOutcome::Success), 1, "{tally:?}");
    assert_eq!(count(PamOutcome::AuthErr), 11, "{tally:?}");
    counter_everywhere(&fleet, "dave", &key.device, 10, "after the race");
    fleet.assert_no_secrets_leaked();
}

#[test]
fn a_user_with_a_phone_and_a_key_logs_in_with_either_from_every_host() {
    if !require("fleet: two devices", PAM) {
        return;
    }
    let Some(fleet) = Fleet::start("fleet_devices", 3, &lenient()) else {
        return;
    };
    let [a, b, c] = &fleet.hosts[..] else {
        panic!("a fleet of three");
    };
    let t = settled_now(30, 15);
    // The phone on A, the key enrolled on B and confirmed on C.
    let phone = a.enroll_active("frank", &[], t - 30);
    let phone_name = devices(c, "frank")[0]["name"]
        .as_str()
        .expect("a device name")
        .to_owned();
    let key = HotpKey::enroll(b, "frank", &["--device", "key"]);
    assert_eq!(device(a, "frank", "key")["state"], "pending");
    // The pending key's code does not log in, on any host.
    a.expect_login(
        "frank",
        &key.code(0),
        "192.0.2.20",
        PamOutcome::AuthErr,
        "the pending key",
    );
    c.otpd_expect(&["confirm", "frank", &key.code(0)], 0);
    for host in &fleet.hosts {
        let both = devices(host, "frank");
        assert_eq!(both.len(), 2, "{}: {both:?}", host.name);
        assert!(
            both.iter().all(|d| d["state"] == "active"),
            "{}: {both:?}",
            host.name
        );
    }

    // Each device from each host; each code once in the fleet.
    a.expect_login(
        "frank",
        &phone.code_at(t),
        "192.0.2.21",
        PamOutcome::Success,
        "the phone on A",
    );
    b.expect_login(
        "frank",
        &key.code(1),
        "192.0.2.22",
        PamOutcome::Success,
        "the key on B",
    );
    for (host, rhost) in [(b, "192.0.2.23"), (c, "192.0.2.24")] {
        host.expect_login(
            "frank",
            &phone.code_at(t),
            rhost,
            PamOutcome::AuthErr,
            "the phone's code used on A",
        );
    }
    for (host, rhost) in [(a, "192.0.2.25"), (c, "192.0.2.26")] {
        host.expect_login(
            "frank",
            &key.code(1),
            rhost,
            PamOutcome::AuthErr,
            "the key's code used on B",
        );
    }
    c.expect_login(
        "frank",
        &key.code(2),
        "192.0.2.27",
        PamOutcome::Success,
        "the key on C",
    );
    c.expect_login(
        "frank",
        &phone.code_at(t + 30),
        "192.0.2.28",
        PamOutcome::Success,
        "the phone on C",
    );
    a.expect_login(
        "frank",
        &key.code(3),
        "192.0.2.29",
        PamOutcome::Success,
        "the key on A",
    );
    for (host, rhost) in [(a, "192.0.2.30"), (b, "192.0.2.31")] {
        host.expect_login(
            "frank",
            &phone.code_at(t + 30),
            rhost,
            PamOutcome::AuthErr,
            "the phone's code used on C",
        );
    }
    counter_everywhere(&fleet, "frank", "key", 4, "after the key on B, C and A");

    // The phone removed on B: gone on every host; the key still works.
    b.otpd_expect(&["remove", "frank", "--device", &phone_name], 0);
    for host in &fleet.hosts {
        let left = devices(host, "frank");
        assert_eq!(left.len(), 1, "{}: {left:?}", host.name);
        assert_eq!(left[0]["name"], "key", "{}: {left:?}", host.name);
    }
    a.expect_login(
        "frank",
        &key.code(4),
        "192.0.2.32",
        PamOutcome::Success,
        "the key after the removal",
    );
    fleet.assert_no_secrets_leaked();
}
