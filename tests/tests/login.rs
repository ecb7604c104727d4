//! Logins through the real libpam against the real daemon: a code is good
//! once, unenrolled and pending users, 32 logins racing with one code.

use otpd_tests::pam::finish;
use otpd_tests::{require, settled_now, Limits, PamOutcome, TestEnv, PAM};
use std::ffi::OsStr;
use std::time::Instant;

#[test]
fn a_fresh_code_logs_in_once_and_no_older_step_is_accepted_after_it() {
    if !require("a_fresh_code_logs_in_once", PAM) {
        return;
    }
    let env = TestEnv::start("login_once");
    let t = settled_now(30, 8);
    // Confirming consumes step s-1.
    let alice = env.enroll_active("alice", &[], t - 30);
    assert_eq!(env.list_entry("alice").unwrap()["state"], "active");

    let newest = alice.code_at(t + 30);
    let login = env.pam_login("alice", &newest, "192.0.2.10", "");
    println!("accepted login in {} ms", login.elapsed().as_millis());
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);

    let again = env.pam_login("alice", &newest, "192.0.2.10", "");
    assert_eq!(
        again.outcome,
        PamOutcome::AuthErr,
        "the same code twice: {}",
        again.output
    );

    // Step s is inside the window and was never used, but it is older than
    // the accepted step s+1.
    let older = env.pam_login("alice", &alice.code_at(t), "192.0.2.11", "");
    assert_eq!(
        older.outcome,
        PamOutcome::AuthErr,
        "an older step: {}",
        older.output
    );
    let confirmed_step = env.pam_login("alice", &alice.code_at(t - 30), "192.0.2.12", "");
    assert_eq!(
        confirmed_step.outcome,
        PamOutcome::AuthErr,
        "the confirm step: {}",
        confirmed_step.output
    );

    let entry = env.list_entry("alice").unwrap();
    assert!(
        entry["last_success"].as_u64().is_some_and(|s| s + 60 >= t),
        "{entry}"
    );
    env.assert_log_free_of(&alice.secret);
}

#[test]
fn the_confirm_code_cannot_be_used_to_log_in() {
    if !require("the_confirm_code_cannot_be_used_to_log_in", PAM) {
        return;
    }
    let env = TestEnv::start("confirm_used");
    let t = settled_now(30, 8);
    let bob = env.enroll_active("bob", &[], t);
    let login = env.pam_login("bob", &bob.code_at(t), "", "");
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    let login = env.pam_login("bob", &bob.code_at(t + 30), "", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
}

#[test]
fn users_without_an_active_token_fail_without_nullok_and_pass_with_it() {
    if !require("users_without_an_active_token", PAM) {
        return;
    }
    let env = TestEnv::start("not_enrolled");
    let t = settled_now(30, 8);
    let pending = env.enroll("pendingpaul", &[]);
    let right_code = pending.code_at(t);
    let prompt = "prompt=OTPD-TEST-PROMPT:";

    for user in ["nobodyknows", "pendingpaul"] {
        let strict = env.pam_login(user, &right_code, "192.0.2.20", prompt);
        assert_eq!(
            strict.outcome,
            PamOutcome::AuthErr,
            "{user} without nullok: {}",
            strict.output
        );

        let lenient =
            env.pam_service_nullok(prompt)
                .login(OsStr::new(user), &right_code, "192.0.2.20", None);
        assert_eq!(
            lenient.outcome,
            PamOutcome::Success,
            "{user} with nullok (IGNORE, then pam_permit): {}",
            lenient.output
        );
        assert!(
            !lenient.transcript().contains("OTPD-TEST-PROMPT"),
            "{user} was prompted although nullok lets users without a token through: {}",
            lenient.output
        );
    }
    // The pending enrolment is still pending: a code typed at a login does not confirm it.
    assert_eq!(env.list_entry("pendingpaul").unwrap()["state"], "pending");
    env.otpd_expect(&["confirm", "pendingpaul", &pending.code_at(t + 30)], 0);

    // An active user with nullok is prompted (the prompt= text is used) and
    // a wrong code fails the stack, so nullok is no bypass.
    let wrong = env.pam_service_nullok(prompt).login(
        OsStr::new("pendingpaul"),
        &pending.wrong_code(t),
        "192.0.2.20",
        None,
    );
    assert_ne!(wrong.outcome, PamOutcome::Success, "{}", wrong.output);
    assert_eq!(wrong.outcome, PamOutcome::AuthErr, "{}", wrong.output);
    assert!(
        wrong.transcript().contains("OTPD-TEST-PROMPT"),
        "no prompt=TEXT prompt: {}",
        wrong.output
    );
}

#[test]
fn thirty_two_concurrent_logins_with_one_code_let_exactly_one_in() {
    if !require("thirty_two_concurrent_logins", PAM) {
        return;
    }
    // Limits high enough that the 31 losers are plain replays, never throttled.
    let env = TestEnv::start_with(
        "concurrent",
        Limits {
            max_failures: 100,
            user_max_failures: 1000,
            ..Limits::default()
        },
    );
    let t = settled_now(30, 12);
    let carol = env.enroll_active("carol", &[], t - 30);
    let code = carol.code_at(t);
    let service = env.pam_service("");
    let mut logins: Vec<_> = (0..32)
        .map(|i| service.start(OsStr::new("carol"), &format!("10.9.0.{i}"), None))
        .collect();
    let started = Instant::now();
    for login in &mut logins {
        login.feed(format!("{code}\n").as_bytes());
    }
    let results: Vec<_> = logins.into_iter().map(finish).collect();
    let slowest = results.iter().map(|r| r.elapsed()).max().unwrap();
    let outcomes: Vec<PamOutcome> = results.iter().map(|r| r.outcome).collect();
    let successes = outcomes
        .iter()
        .filter(|o| **o == PamOutcome::Success)
        .count();
    let auth_errs = outcomes
        .iter()
        .filter(|o| **o == PamOutcome::AuthErr)
        .count();
    println!(
        "32 logins in {} ms (slowest {} ms): {successes} accepted, {auth_errs} refused",
        started.elapsed().as_millis(),
        slowest.as_millis()
    );
    assert_eq!(successes, 1, "outcomes: {outcomes:?}");
    assert_eq!(auth_errs, 31, "outcomes: {outcomes:?}");
    let entry = env.list_entry("carol").unwrap();
    assert_eq!(entry["state"], "active", "{entry}");
    assert!(entry["last_success"].is_u64(), "{entry}");
}
