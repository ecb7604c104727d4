//! Guessing is bounded: backoff per (user, source) and per user, observed
//! through libpam, ended by a success elsewhere or by `otpd unlock`.

use otpd_tests::logins::assert_throttled;
use otpd_tests::system::{log_time, verify_audit};
use otpd_tests::{require, settled_now, Limits, PamOutcome, Program, TestEnv, PAM};
use serde_json::Value;

#[test]
fn five_failures_from_one_source_throttle_that_source_only() {
    if !require("five_failures_from_one_source", PAM) {
        return;
    }
    let env = TestEnv::start("per_source");
    let t = settled_now(30, 12);
    let bob = env.enroll_active("bob", &[], t - 30);
    let (a, b) = ("198.51.100.1", "198.51.100.2");

    env.fail_times(&bob, t, a, 5);
    let right = bob.code_at(t);
    assert_throttled(
        &env.pam_login("bob", &right, a, ""),
        "right code from A after 5 failures",
    );

    let entry = env.list_entry("bob").unwrap();
    println!("after 5 failures from A: {entry}");
    assert!(
        entry["failures"].as_u64().is_some_and(|f| f >= 5),
        "{entry}"
    );
    // Per-source backoff is not a user-wide one.
    assert_eq!(entry["state"], "active", "{entry}");

    let from_b = env.pam_login("bob", &right, b, "");
    assert_eq!(
        from_b.outcome,
        PamOutcome::Success,
        "the same right code from B: {}",
        from_b.output
    );
    // A success resets the user-wide count, but not A's backoff.
    let entry = env.list_entry("bob").unwrap();
    assert_eq!(entry["failures"], 0, "{entry}");
    let next = bob.code_at(t + 30);
    assert_throttled(&env.pam_login("bob", &next, a, ""), "A after B's success");

    env.otpd_expect(&["unlock", "bob"], 0);
    let after_unlock = env.pam_login("bob", &next, a, "");
    assert_eq!(
        after_unlock.outcome,
        PamOutcome::Success,
        "A after unlock: {}",
        after_unlock.output
    );
}

#[test]
fn local_failures_count_against_the_calling_uid_not_remote_hosts() {
    if !require("local_failures_count_against_the_calling_uid", PAM) {
        return;
    }
    let env = TestEnv::start("per_uid");
    let t = settled_now(30, 12);
    let dave = env.enroll_active("dave", &[], t - 30);
    env.fail_times(&dave, t, "", 5);
    let right = dave.code_at(t);
    assert_throttled(
        &env.pam_login("dave", &right, "", ""),
        "local login (source uid:0)",
    );
    let remote = env.pam_login("dave", &right, "203.0.113.9", "");
    assert_eq!(
        remote.outcome,
        PamOutcome::Success,
        "from a remote host: {}",
        remote.output
    );
}

#[test]
fn twenty_failures_over_five_sources_throttle_the_user_everywhere_until_unlock() {
    if !require("twenty_failures_over_five_sources", PAM) {
        return;
    }
    let env = TestEnv::start("per_user");
    let t = settled_now(30, 15);
    let carol = env.enroll_active("carol", &[], t - 30);
    for host in 1..=5 {
        env.fail_times(&carol, t, &format!("192.0.2.{host}"), 4);
    }
    let entry = env.list_entry("carol").unwrap();
    println!("after 4 failures from each of 5 hosts: {entry}");
    assert_eq!(entry["state"], "throttled", "{entry}");
    assert_eq!(entry["failures"], 20, "{entry}");
    let left = entry["throttled_for_secs"].as_u64();
    assert!(
        left.is_some_and(|s| (1..=30).contains(&s)),
        "base_delay is 30 s: {entry}"
    );

    let right = carol.code_at(t);
    assert_throttled(
        &env.pam_login("carol", &right, "192.0.2.99", ""),
        "right code from a new host",
    );
    assert_throttled(&env.pam_login("carol", &right, "", ""), "right code, local");

    env.otpd_expect(&["unlock", "carol"], 0);
    let entry = env.list_entry("carol").unwrap();
    assert_eq!(entry["state"], "active", "{entry}");
    assert_eq!(entry["failures"], 0, "{entry}");
    assert_eq!(entry["throttled_for_secs"], Value::Null, "{entry}");
    let login = env.pam_login("carol", &right, "192.0.2.99", "");
    assert_eq!(
        login.outcome,
        PamOutcome::Success,
        "after unlock: {}",
        login.output
    );
}

/// Seconds between `user`'s last refused guess (`outcome="wrong_code"`)
/// and the throttled verification after it (`outcome="throttled"`), by
/// the timestamps of the daemon's audit lines.
fn since_last_failure(env: &TestEnv, user: &str) -> f64 {
    let lines = verify_audit(env, user);
    let throttled = lines
        .iter()
        .rposition(|l| l.contains("outcome=\"throttled\""))
        .unwrap_or_else(|| panic!("no throttled verification of {user}: {lines:#?}"));
    let failure = lines[..throttled]
        .iter()
        .rposition(|l| l.contains("outcome=\"wrong_code\""))
        .unwrap_or_else(|| panic!("no failure before the throttled verification: {lines:#?}"));
    let at = |line: &str| log_time(line).unwrap_or_else(|| panic!("no timestamp: {line}"));
    at(&lines[throttled]) - at(&lines[failure])
}

/// The first number the module said (the seconds to wait).
fn seconds_to_wait(login: &otpd_tests::PamLogin) -> u64 {
    let said = login.module_messages();
    said.split(|c: char| !c.is_ascii_digit())
        .find(|run| !run.is_empty())
        .and_then(|run| run.parse().ok())
        .unwrap_or_else(|| panic!("no number of seconds in {said:?}"))
}

#[test]
fn backoff_doubles_per_further_failure_up_to_the_cap() {
    if !require("backoff_doubles_per_further_failure", PAM) {
        return;
    }
    // Small delays (base_delay as integer seconds) so that each backoff can
    // be waited out in a few seconds.
    let env = TestEnv::start_with(
        "backoff",
        Limits {
            max_failures: 3,
            base_delay: "2".into(),
            max_delay: "\"5s\"".into(),
            user_max_failures: 100,
        },
    );
    let t = settled_now(30, 14);
    let erin = env.enroll_active("erin", &[], t - 30);
    let rhost = "198.51.100.50";
    let wrong = erin.wrong_code(t);
    env.fail_times(&erin, t, rhost, 3);

    let mut waits = Vec::new();
    for (round, expected) in [2u64, 4, 5].into_iter().enumerate() {
        let probe = env.pam_login("erin", &wrong, rhost, "");
        assert_throttled(&probe, &format!("backoff round {}", round + 1));
        let wait = seconds_to_wait(&probe);
        waits.push(wait);
        // The backoff runs from the failure that started it, so the wait
        // the module says is what is left of it when the daemon judged the
        // probe: `expected` less the time between the two, as the daemon's
        // own log times them (pamtester's start-up, slow on a busy machine,
        // counts there, and not against the daemon). Seconds may be
        // rounded either way by the time they are shown.
        let since_failure = since_last_failure(&env, "erin");
        let left = expected as f64 - since_failure;
        assert!(
            (wait as f64 - left).abs() <= 1.0,
            "round {}: expected about {expected} s less the {since_failure:.3} s since the \
             failure, {left:.3} s; the module said {wait} s (all so far: {waits:?})",
            round + 1
        );
        if round < 2 {
            std::thread::sleep(std::time::Duration::from_millis(expected * 1000 + 200));
            let again = env.pam_login("erin", &wrong, rhost, "");
            assert_eq!(
                again.outcome,
                PamOutcome::AuthErr,
                "after the {expected} s backoff a guess is judged again: {}",
                again.output
            );
        }
    }
    println!("backoff seen: {waits:?} s (base 2 s, doubling, cap 5 s)");
    env.otpd_expect(&["unlock", "erin"], 0);
    let login = env.pam_login("erin", &erin.code_at(t), rhost, "");
    assert_eq!(
        login.outcome,
        PamOutcome::Success,
        "after unlock: {}",
        login.output
    );
}

/// A local login through the system's libpam (no libpam_wrapper: LD_PRELOAD
/// is dropped for a process whose real and effective uids differ) with a
/// private /etc/pam.d in a mount namespace, run with real uid `ruid` and
/// effective uid 0: what su or sudo started by that user looks like.
fn local_login_with_ruid(env: &TestEnv, ruid: u32, user: &str, code: &str) -> PamOutcome {
    let pam_d = env.dir.join("private-pam.d");
    if !pam_d.exists() {
        std::fs::create_dir(&pam_d).unwrap();
        std::fs::write(
            pam_d.join("otpd-local"),
            format!(
                "auth required {} socket={}\n",
                otpd_tests::programs::pam_module().display(),
                env.socket.display()
            ),
        )
        .unwrap();
    }
    // The module resolves the user: a private /etc/passwd that has them.
    let passwd = otpd_tests::nss::passwd_with(&env.dir, user.as_bytes());
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/pam.d && mount --bind "$4" /etc/passwd && exec setpriv --ruid "$2" pamtester otpd-local "$3" authenticate"#)
        .arg("sh")
        .arg(&pam_d)
        .arg(ruid.to_string())
        .arg(user)
        .arg(&passwd);
    let out = otpd_tests::process::run(
        cmd,
        format!("{code}\n").as_bytes(),
        std::time::Duration::from_secs(20),
    );
    PamOutcome::from_output(&out)
}

#[test]
fn one_local_user_cannot_throttle_another_through_su() {
    if !require(
        "one_local_user_cannot_throttle_another_through_su",
        &[Program::Pamtester, Program::Oathtool, Program::Setpriv],
    ) {
        return;
    }
    let env = TestEnv::start("su_source");
    let t = settled_now(30, 12);
    let alice = env.enroll_active("alice", &[], t - 30);
    // uid 65534 runs `su alice` five times with wrong codes: su runs as
    // root, but the attempts count against uid 65534, not against root.
    for attempt in 1..=5 {
        assert_eq!(
            local_login_with_ruid(&env, 65534, "alice", &alice.wrong_code(t)),
            PamOutcome::AuthErr,
            "wrong code #{attempt}"
        );
    }
    assert_eq!(
        local_login_with_ruid(&env, 65534, "alice", &alice.code_at(t)),
        PamOutcome::MaxTries,
        "uid 65534 is throttled"
    );
    // alice's own local login (real uid 0 here) is not.
    assert_eq!(
        local_login_with_ruid(&env, 0, "alice", &alice.code_at(t)),
        PamOutcome::Success,
        "another local source is not throttled"
    );
    assert!(
        env.log().contains("outcome=\"throttled\""),
        "the audit log shows the throttled attempt"
    );
}
