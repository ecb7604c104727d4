//! Counter-based (HOTP, RFC 4226) tokens and several devices per user,
//! through the real daemon and, for logins, the real libpam and
//! pam_otpd.so: the look-ahead window and the counter, resync, 32 logins
//! racing with one HOTP code, the counter after SIGKILL, a TOTP phone and
//! an HOTP key side by side, and the per-user rate limit across devices.
//! HOTP codes are computed by `oathtool --hotp`, not by our code.

use otpd_tests::hotp::{device, devices, next_counter, HotpKey};
use otpd_tests::pam::finish;
use otpd_tests::{require, settled_now, Enrollment, Limits, PamOutcome, TestEnv, PAM};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

#[test]
fn hotp_codes_are_accepted_in_the_look_ahead_window_once_and_in_order() {
    if !require("hotp_look_ahead_window", PAM) {
        return;
    }
    let env = TestEnv::start("hotp_window");
    let key = HotpKey::enroll(&env, "alice", &[]);
    assert_eq!(key.counter, 0, "the default counter: {}", key.json);
    assert_eq!(key.device, "default");
    let listed = device(&env, "alice", "default");
    assert_eq!(listed["kind"], "hotp", "{listed}");
    assert_eq!(listed["state"], "pending", "{listed}");
    assert_eq!(listed["next_counter"], 0, "{listed}");

    env.otpd_expect(&["confirm", "alice", &key.code(0)], 0);
    let listed = device(&env, "alice", "default");
    assert_eq!(listed["state"], "active", "{listed}");
    assert_eq!(next_counter(&env, "alice", "default"), 1, "after confirm");

    env.expect_login(
        "alice",
        &key.code(1),
        "192.0.2.1",
        PamOutcome::Success,
        "counter 1",
    );
    assert_eq!(next_counter(&env, "alice", "default"), 2);
    env.expect_login(
        "alice",
        &key.code(1),
        "192.0.2.2",
        PamOutcome::AuthErr,
        "counter 1 replayed",
    );
    env.expect_login(
        "alice",
        &key.code(0),
        "192.0.2.3",
        PamOutcome::AuthErr,
        "counter 0 (the confirm code)",
    );
    assert_eq!(
        next_counter(&env, "alice", "default"),
        2,
        "refused codes move nothing"
    );

    // The next counter is 2: 2 + 10 is the far end of the look-ahead.
    env.expect_login(
        "alice",
        &key.code(12),
        "192.0.2.4",
        PamOutcome::Success,
        "counter 12, ten ahead of 2",
    );
    assert_eq!(next_counter(&env, "alice", "default"), 13);
    env.expect_login(
        "alice",
        &key.code(5),
        "192.0.2.5",
        PamOutcome::AuthErr,
        "counter 5, skipped by the look-ahead",
    );
    env.expect_login(
        "alice",
        &key.code(24),
        "192.0.2.6",
        PamOutcome::AuthErr,
        "counter 24, eleven ahead of 13",
    );
    assert_eq!(next_counter(&env, "alice", "default"), 13);
    env.expect_login(
        "alice",
        &key.code(13),
        "192.0.2.7",
        PamOutcome::Success,
        "counter 13, the next one",
    );
    assert_eq!(next_counter(&env, "alice", "default"), 14);

    // A token that starts at counter 5: the code of 4 is behind it.
    let bob = HotpKey::enroll(&env, "bob", &["--counter", "5"]);
    assert_eq!(bob.counter, 5, "{}", bob.json);
    assert_eq!(next_counter(&env, "bob", "default"), 5);
    env.otpd_expect(&["confirm", "bob", &bob.code(4)], 1);
    assert_eq!(device(&env, "bob", "default")["state"], "pending");
    env.otpd_expect(&["confirm", "bob", &bob.code(5)], 0);
    assert_eq!(device(&env, "bob", "default")["state"], "active");
    assert_eq!(next_counter(&env, "bob", "default"), 6);
    env.expect_login(
        "bob",
        &bob.code(6),
        "192.0.2.8",
        PamOutcome::Success,
        "bob's counter 6",
    );
}

#[test]
fn resync_moves_the_counter_past_two_consecutive_codes_only() {
    if !require("resync_moves_the_counter", PAM) {
        return;
    }
    let env = TestEnv::start("hotp_resync");
    let key = HotpKey::enroll(&env, "carol", &[]);
    env.otpd_expect(&["confirm", "carol", &key.code(0)], 0);
    assert_eq!(next_counter(&env, "carol", "default"), 1);
    // 50, 51 and 52 presses ahead of the next counter, 1.
    let (c50, c51, c52) = (key.code(51), key.code(52), key.code(53));

    env.expect_login(
        "carol",
        &c50,
        "192.0.2.20",
        PamOutcome::AuthErr,
        "50 ahead, beyond the look-ahead",
    );
    assert_eq!(next_counter(&env, "carol", "default"), 1);

    // Not consecutive: refused, nothing changes.
    env.otpd_expect(&["resync", "carol", &c50, &c52], 1);
    assert_eq!(next_counter(&env, "carol", "default"), 1, "after 50, 52");
    env.otpd_expect(&["resync", "carol", &c51, &c50], 1);
    assert_eq!(next_counter(&env, "carol", "default"), 1, "after 51, 50");
    // Not codes at all: a usage error that names the problem.
    let out = env.otpd_expect(&["resync", "carol", "abc", "12"], 2);
    assert!(out.stderr.contains("must be codes"), "{out}");
    assert_eq!(next_counter(&env, "carol", "default"), 1, "after abc, 12");
    // Consecutive but beyond the resync window (100).
    let (far1, far2) = (key.code(151), key.code(152));
    env.otpd_expect(&["resync", "carol", &far1, &far2], 1);
    assert_eq!(next_counter(&env, "carol", "default"), 1, "after 150, 151");

    env.otpd_expect(&["resync", "carol", &c50, &c51], 0);
    assert_eq!(next_counter(&env, "carol", "default"), 53, "past code 2");
    env.expect_login(
        "carol",
        &c50,
        "192.0.2.21",
        PamOutcome::AuthErr,
        "the first resync code",
    );
    env.expect_login(
        "carol",
        &c51,
        "192.0.2.22",
        PamOutcome::AuthErr,
        "the second resync code",
    );
    env.expect_login(
        "carol",
        &c52,
        "192.0.2.23",
        PamOutcome::Success,
        "the code after them",
    );
    assert_eq!(next_counter(&env, "carol", "default"), 54);
    // The same pair again is behind the counter now.
    env.otpd_expect(&["resync", "carol", &c50, &c51], 1);
    assert_eq!(next_counter(&env, "carol", "default"), 54);

    // A user with a TOTP token only: resync is a usage error, and it
    // consumes none of the codes.
    let t = settled_now(30, 8);
    let dave = env.enroll_active("dave", &[], t - 30);
    let out = env.otpd_expect(
        &["resync", "dave", &dave.code_at(t), &dave.code_at(t + 30)],
        2,
    );
    println!("resync of a TOTP-only user: {}", out.stderr.trim());
    env.expect_login(
        "dave",
        &dave.code_at(t),
        "192.0.2.24",
        PamOutcome::Success,
        "the TOTP code given to resync",
    );
    // An unknown user.
    env.otpd_expect(&["resync", "nosuchuser", &c50, &c51], 1);
}

#[test]
fn thirty_two_concurrent_logins_with_one_hotp_code_let_exactly_one_in() {
    if !require("thirty_two_concurrent_hotp_logins", PAM) {
        return;
    }
    let env = TestEnv::start_with(
        "hotp_race",
        Limits {
            max_failures: 100,
            user_max_failures: 1000,
            ..Limits::default()
        },
    );
    let key = HotpKey::enroll(&env, "carol", &[]);
    env.otpd_expect(&["confirm", "carol", &key.code(0)], 0);
    let code = key.code(1);
    let service = env.pam_service("");
    let mut logins: Vec<_> = (0..32)
        .map(|i| service.start(OsStr::new("carol"), &format!("10.9.1.{i}"), None))
        .collect();
    let started = Instant::now();
    for login in &mut logins {
        login.feed(format!("{code}\n").as_bytes());
    }
    let results: Vec<_> = logins.into_iter().map(finish).collect();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        *tally.entry(format!("{:?}", r.outcome)).or_default() += 1;
    }
    println!(
        "32 logins with one HOTP code in {} ms: {tally:?}",
        started.elapsed().as_millis()
    );
    let count = |o: PamOutcome| results.iter().filter(|r| r.outcome == o).count();
    // The losers are refused as replays (PAM_AUTH_ERR), as in login.rs: an
    // answer that did not come (PAM_AUTHINFO_UNAVAIL) is a failure here.
    assert_eq!(count(PamOutcome::Success), 1, "{tally:?}");
    assert_eq!(count(PamOutcome::AuthErr), 31, "{tally:?}");
    assert_eq!(
        next_counter(&env, "carol", "default"),
        2,
        "one accepted code"
    );
    env.expect_login(
        "carol",
        &key.code(2),
        "10.9.2.1",
        PamOutcome::Success,
        "the next code after the race",
    );
}

#[test]
fn concurrent_logins_with_a_totp_and_an_hotp_code_let_one_of_each_in() {
    if !require("concurrent_logins_with_a_totp_and_an_hotp_code", PAM) {
        return;
    }
    let env = TestEnv::start_with(
        "devices_race",
        Limits {
            max_failures: 100,
            user_max_failures: 1000,
            ..Limits::default()
        },
    );
    let t = settled_now(30, 12);
    let phone = env.enroll_active("hank", &[], t - 30);
    let key = HotpKey::enroll(&env, "hank", &["--device", "key"]);
    env.otpd_expect(&["confirm", "hank", &key.code(0)], 0);
    let (totp_code, hotp_code) = (phone.code_at(t), key.code(1));
    let service = env.pam_service("");
    // Even logins type the phone's code, odd ones the key's: two devices'
    // replay states written at the same instant, neither may be lost.
    let mut logins: Vec<_> = (0..32)
        .map(|i| service.start(OsStr::new("hank"), &format!("10.9.3.{i}"), None))
        .collect();
    for (i, login) in logins.iter_mut().enumerate() {
        let code = if i % 2 == 0 { &totp_code } else { &hotp_code };
        login.feed(format!("{code}\n").as_bytes());
    }
    let results: Vec<_> = logins.into_iter().map(finish).collect();
    let accepted = |parity: usize| {
        results
            .iter()
            .enumerate()
            .filter(|(i, r)| i % 2 == parity && r.outcome == PamOutcome::Success)
            .count()
    };
    let outcomes: Vec<PamOutcome> = results.iter().map(|r| r.outcome).collect();
    println!(
        "16 TOTP + 16 HOTP logins: {} TOTP and {} HOTP accepted",
        accepted(0),
        accepted(1)
    );
    assert_eq!(accepted(0), 1, "the phone's code: {outcomes:?}");
    assert_eq!(accepted(1), 1, "the key's code: {outcomes:?}");
    // Every loser refused as a replay (PAM_AUTH_ERR), as in login.rs.
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == PamOutcome::AuthErr)
            .count(),
        30,
        "{outcomes:?}"
    );
    // Both used states were kept.
    assert_eq!(next_counter(&env, "hank", "key"), 2);
    env.expect_login(
        "hank",
        &totp_code,
        "10.9.4.1",
        PamOutcome::AuthErr,
        "the raced TOTP code afterwards",
    );
    env.expect_login(
        "hank",
        &hotp_code,
        "10.9.4.2",
        PamOutcome::AuthErr,
        "the raced HOTP code afterwards",
    );
    env.expect_login(
        "hank",
        &phone.code_at(t + 30),
        "10.9.4.3",
        PamOutcome::Success,
        "the phone's next code",
    );
}

#[test]
fn an_accepted_hotp_code_stays_used_after_sigkill() {
    if !require("an_accepted_hotp_code_stays_used_after_sigkill", PAM) {
        return;
    }
    let mut env = TestEnv::start("hotp_sigkill");
    let key = HotpKey::enroll(&env, "erin", &[]);
    env.otpd_expect(&["confirm", "erin", &key.code(0)], 0);
    // Through the look-ahead, so that the durable value is not simply "+1".
    let code = key.code(4);
    env.expect_login(
        "erin",
        &code,
        "192.0.2.30",
        PamOutcome::Success,
        "counter 4",
    );
    let status = env.kill_daemon(libc::SIGKILL);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the daemon was not ended by SIGKILL: {status}"
    );
    env.spawn_daemon();
    assert_eq!(next_counter(&env, "erin", "default"), 5, "after SIGKILL");
    env.expect_login(
        "erin",
        &code,
        "192.0.2.31",
        PamOutcome::AuthErr,
        "the accepted code after SIGKILL and restart",
    );
    env.expect_login(
        "erin",
        &key.code(3),
        "192.0.2.32",
        PamOutcome::AuthErr,
        "a skipped code after restart",
    );
    env.expect_login(
        "erin",
        &key.code(5),
        "192.0.2.33",
        PamOutcome::Success,
        "the next code after restart",
    );

    // A resync is as durable as a login.
    env.otpd_expect(&["resync", "erin", &key.code(40), &key.code(41)], 0);
    assert_eq!(next_counter(&env, "erin", "default"), 42);
    let status = env.kill_daemon(libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    env.spawn_daemon();
    assert_eq!(
        next_counter(&env, "erin", "default"),
        42,
        "resync after SIGKILL"
    );
    env.expect_login(
        "erin",
        &key.code(41),
        "192.0.2.34",
        PamOutcome::AuthErr,
        "a resync code after SIGKILL and restart",
    );
    env.expect_login(
        "erin",
        &key.code(42),
        "192.0.2.35",
        PamOutcome::Success,
        "the code after the resync pair, after restart",
    );
}

#[test]
fn a_totp_phone_and_an_hotp_key_work_side_by_side_and_one_can_be_removed() {
    if !require("a_totp_phone_and_an_hotp_key", PAM) {
        return;
    }
    let env = TestEnv::start("devices");
    let t = settled_now(30, 15);
    let phone = env.enroll_active("frank", &[], t - 30);
    let first = devices(&env, "frank");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["kind"], "totp", "{first:?}");
    assert_eq!(first[0]["state"], "active", "{first:?}");
    let phone_name = first[0]["name"].as_str().expect("a device name").to_owned();

    let key = HotpKey::enroll(&env, "frank", &["--device", "key"]);
    assert_eq!(key.device, "key");
    let both = devices(&env, "frank");
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(device(&env, "frank", "key")["state"], "pending");
    assert_eq!(device(&env, "frank", &phone_name)["state"], "active");

    // The pending key's code does not log in, and is not used up by trying.
    env.expect_login(
        "frank",
        &key.code(0),
        "192.0.2.40",
        PamOutcome::AuthErr,
        "a code of the pending key",
    );
    assert_eq!(device(&env, "frank", "key")["state"], "pending");
    env.otpd_expect(&["confirm", "frank", &key.code(0)], 0);
    let listed = device(&env, "frank", "key");
    assert_eq!(listed["state"], "active", "{listed}");
    assert_eq!(listed["kind"], "hotp", "{listed}");
    assert_eq!(listed["next_counter"], 1, "{listed}");
    assert_eq!(device(&env, "frank", &phone_name)["state"], "active");

    // Each device's code logs in once; replay state is per device.
    env.expect_login(
        "frank",
        &phone.code_at(t),
        "192.0.2.41",
        PamOutcome::Success,
        "the phone's TOTP code",
    );
    env.expect_login(
        "frank",
        &key.code(1),
        "192.0.2.42",
        PamOutcome::Success,
        "the key's HOTP code after a TOTP login",
    );
    env.expect_login(
        "frank",
        &phone.code_at(t),
        "192.0.2.43",
        PamOutcome::AuthErr,
        "the TOTP code replayed",
    );
    env.expect_login(
        "frank",
        &key.code(1),
        "192.0.2.44",
        PamOutcome::AuthErr,
        "the HOTP code replayed",
    );

    // Invalid device names and unknown devices change nothing.
    let before = devices(&env, "frank");
    let out = env.otpd_expect(&["enroll", "frank", "--device", "my phone", "--hotp"], 2);
    assert!(!out.stdout.contains("otpauth://"), "{out}");
    assert_eq!(devices(&env, "frank"), before, "after an invalid name");
    env.otpd_expect(&["remove", "frank", "--device", "nosuchdevice"], 1);
    assert_eq!(devices(&env, "frank"), before, "after removing no device");

    // Without the phone, the key still works and the phone's codes do not.
    env.otpd_expect(&["remove", "frank", "--device", &phone_name], 0);
    let left = devices(&env, "frank");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["name"], "key", "{left:?}");
    assert_eq!(left[0]["next_counter"], 2, "{left:?}");
    env.expect_login(
        "frank",
        &phone.code_at(t + 30),
        "192.0.2.45",
        PamOutcome::AuthErr,
        "an unused TOTP code of the removed phone",
    );
    env.expect_login(
        "frank",
        &key.code(2),
        "192.0.2.46",
        PamOutcome::Success,
        "the key after the phone was removed",
    );

    // The last device goes only with the user (a second factor, once on,
    // stays on): refused by name, kept, and removed with the user.
    let refused = env.otpd_expect(&["remove", "frank", "--device", "key"], 1);
    assert!(refused.stderr.contains("last device"), "{refused}");
    assert!(env.list_entry("frank").is_some());
    env.otpd_expect(&["remove", "frank"], 0);
    assert_eq!(env.list_entry("frank"), None);
    env.expect_login(
        "frank",
        &key.code(3),
        "192.0.2.47",
        PamOutcome::AuthErr,
        "a removed user",
    );
}

/// A 6-digit code that none of `valid` is: a certain wrong guess.
fn wrong_code(valid: &[String]) -> String {
    otpd_tests::totp::wrong_code_besides(valid, 6)
}

#[test]
fn the_per_user_ceiling_counts_failures_of_every_device_until_unlock() {
    if !require("the_per_user_ceiling_counts_every_device", PAM) {
        return;
    }
    let env = TestEnv::start_with(
        "devices_limit",
        Limits {
            user_max_failures: 3,
            ..Limits::default()
        },
    );
    let t = settled_now(30, 15);
    let phone: Enrollment = env.enroll_active("grace", &[], t - 30);
    let key = HotpKey::enroll(&env, "grace", &["--device", "key"]);
    env.otpd_expect(&["confirm", "grace", &key.code(0)], 0);
    assert_eq!(devices(&env, "grace").len(), 2);

    let mut valid: Vec<String> = (0..=12).map(|c| key.code(c)).collect();
    valid.extend((0..=4).map(|k| phone.code_at(t + k * 30 - 60)));
    let wrong = wrong_code(&valid);
    // Three failures from three sources, each below its own source's
    // threshold (5): a guess, the key's used code, a code beyond its window.
    for (n, (code, rhost)) in [
        (wrong, "198.51.100.1"),
        (key.code(0), "198.51.100.2"),
        (key.code(40), "198.51.100.3"),
    ]
    .iter()
    .enumerate()
    {
        env.expect_login(
            "grace",
            code,
            rhost,
            PamOutcome::AuthErr,
            &format!("failure #{}", n + 1),
        );
    }
    let entry = env.list_entry("grace").unwrap();
    println!("after 3 failures: {entry}");
    assert_eq!(entry["failures"], 3, "{entry}");
    assert_eq!(entry["state"], "throttled", "{entry}");

    // Right codes of either device, from a fourth source: throttled.
    for (code, what) in [
        (key.code(1), "the key's next code"),
        (phone.code_at(t), "the phone's code"),
    ] {
        let login = env.pam_login("grace", &code, "198.51.100.4", "");
        assert_eq!(
            login.outcome,
            PamOutcome::MaxTries,
            "{what} past the per-user ceiling: {}",
            login.output
        );
    }
    assert_eq!(next_counter(&env, "grace", "key"), 1, "nothing consumed");

    env.otpd_expect(&["unlock", "grace"], 0);
    let entry = env.list_entry("grace").unwrap();
    assert_eq!(entry["failures"], 0, "{entry}");
    assert_eq!(entry["state"], "active", "{entry}");
    env.expect_login(
        "grace",
        &key.code(1),
        "198.51.100.4",
        PamOutcome::Success,
        "the key after unlock",
    );
    env.expect_login(
        "grace",
        &phone.code_at(t),
        "198.51.100.4",
        PamOutcome::Success,
        "the phone after unlock",
    );
}
