//! "Approve on your phone" through the phone app's API with a software
//! passkey ([`otpd_tests::softkey::SoftKey`]) and logins through the real
//! libpam: pairing, an approved login, and what must be refused (a
//! replayed or misdirected assertion, a cloned key, a wrong origin, no
//! user verification, another user's phone, a wrong number), deny,
//! expiry, and the limit of open requests.

use otpd_tests::approve::{self, audit_lines, id_of, Login, Phone, CODE_OR_APPROVE};
use otpd_tests::pages;
use otpd_tests::{require, settled_now, Limits, PamOutcome, TestEnv, PAM};
use serde_json::json;
use std::time::{Duration, Instant};

/// How long a prompt may take to appear.
const PROMPT: Duration = Duration::from_secs(15);
/// How long a login may take to end once answered.
const END: Duration = Duration::from_secs(60);

/// A daemon with the pages and `[approve] timeout = TIMEOUT`, and the port
/// of its pages.
fn start(name: &str, timeout: &str, limits: Limits) -> (TestEnv, u16) {
    let env = TestEnv::start_with_config(name, limits, &approve::config(timeout, ""));
    let port = pages::port(&env, "http");
    (env, port)
}

/// The approver entries of `user` in `otpd list --json`.
fn approvers(env: &TestEnv, user: &str) -> Vec<serde_json::Value> {
    let entry = env
        .list_entry(user)
        .unwrap_or_else(|| panic!("{user} not listed"));
    entry["approvers"].as_array().cloned().unwrap_or_default()
}

/// Whether request `id` is still listed open by `phone`.
fn listed(phone: &Phone, id: &str) -> bool {
    phone.requests()["requests"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["id"] == id))
}

#[test]
fn a_phone_pairs_through_the_api_once_and_is_active_after_its_test_request() {
    let (env, port) = start("approve_pair", "\"60s\"", Limits::default());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);

    let link = approve::pairing_link(&env, "alice");
    assert!(
        link.starts_with(&format!("{}/approve/pair/", approve::ORIGIN)),
        "{link}"
    );
    let mut phone = Phone::pair(port, &link);
    let listed = approvers(&env, "alice");
    println!("after pair/finish: {listed:?}");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "pending", "{listed:?}");

    // The pairing link works once.
    let (status, again) = approve::api(
        port,
        "pair/begin",
        &json!({ "token": approve::token_of(&link) }),
    );
    assert_eq!(status, 403, "a second pair/begin: {again}");

    // The test request: one choice; approving it activates the phone.
    let requests = phone.requests();
    assert_eq!(requests["active"], false, "{requests}");
    let all = requests["requests"].as_array().expect("requests");
    assert_eq!(all.len(), 1, "{requests}");
    assert_eq!(all[0]["test"], true, "{requests}");
    assert_eq!(all[0]["service"], "pairing", "{requests}");
    let (status, answer) = phone.approve(&all[0], None);
    assert_eq!(status, 200, "approving the test request: {answer}");
    assert_eq!(answer["outcome"], "approved");

    let listed = approvers(&env, "alice");
    println!("after the test request: {listed:?}");
    assert_eq!(listed[0]["state"], "active", "{listed:?}");
    assert!(listed[0]["last_used"].as_u64().is_some(), "{listed:?}");
    let requests = phone.requests();
    assert_eq!(requests["active"], true, "{requests}");
    assert_eq!(requests["requests"], json!([]), "{requests}");
    assert!(
        audit_lines(&env, "approve_pair")
            .iter()
            .any(|l| l.contains("paired_pending_test")),
        "no approve_pair audit line"
    );
}

#[test]
fn a_login_is_approved_with_the_right_number_and_the_code_still_works() {
    if !require("approve_login", PAM) {
        return;
    }
    let (env, port) = start("approve_login", "\"60s\"", Limits::default());
    let t = settled_now(30, 10);
    let alice = env.enroll_active("alice", &[], t - 30);
    let mut phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");

    let mut login = Login::start(&service, "alice", "192.0.2.7");
    let number = login.press_enter_for_number(PROMPT);
    println!("the prompt asks for {number}");
    assert!((10..=99).contains(&number), "{number}");
    let request = phone.wait_request(Duration::from_secs(5));
    println!("the phone lists {request}");
    assert_eq!(request["user"], "alice");
    assert_eq!(request["source"], "192.0.2.7");
    let choices: Vec<u64> = request["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .filter_map(|c| c.as_u64())
        .collect();
    assert_eq!(choices.len(), 3, "{request}");
    assert!(choices.contains(&u64::from(number)), "{request}");
    // Enter first: the login waits for the phone.
    login.answer("");
    std::thread::sleep(Duration::from_millis(500));
    let (status, answer) = phone.approve(&request, Some(number));
    assert_eq!(status, 200, "{answer}");
    let approved = Instant::now();
    let done = login.finish(END);
    println!(
        "the login ended {} ms after the approval",
        approved.elapsed().as_millis()
    );
    assert_eq!(done.outcome, PamOutcome::Success, "{}", done.output);
    assert!(
        audit_lines(&env, "login")
            .iter()
            .any(|l| l.contains("outcome=\"approved\"")),
        "no login approved audit line"
    );

    // The code at the same prompt.
    let mut login = Login::start(&service, "alice", "192.0.2.7");
    login.wait_for(CODE_OR_APPROVE, PROMPT);
    login.answer(&alice.code_at(t + 30));
    let done = login.finish(END);
    assert_eq!(done.outcome, PamOutcome::Success, "{}", done.output);
    // And the approval was used once: nothing open, nothing to approve.
    assert_eq!(phone.requests()["requests"], json!([]));
    let (status, again) = phone.begin(&id_of(&request), number);
    assert_eq!(status, 409, "begin on a used request: {again}");
}

#[test]
fn replayed_misdirected_cloned_phished_and_unverified_assertions_are_refused() {
    if !require("approve_assertions", PAM) {
        return;
    }
    let (env, port) = start("approve_assert", "\"60s\"", Limits::default());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let mut phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");
    // A copy of the passkey before its next use: a cloned authenticator.
    let mut clone = phone.key.clone();

    // Request A approved; its assertion kept.
    let mut login_a = Login::start(&service, "alice", "192.0.2.8");
    let number_a = login_a.press_enter_for_number(PROMPT);
    let a = phone.wait_request(Duration::from_secs(5));
    let (status, options_a) = phone.begin(&id_of(&a), number_a);
    assert_eq!(status, 200, "{options_a}");
    let assertion_a = phone.key.assert(&options_a);
    let (status, answer) = phone.finish(&id_of(&a), &assertion_a);
    assert_eq!(status, 200, "{answer}");
    login_a.answer("");
    let done = login_a.finish(END);
    assert_eq!(done.outcome, PamOutcome::Success, "{}", done.output);

    // Replayed: refused.
    let (status, answer) = phone.finish(&id_of(&a), &assertion_a);
    println!("A's assertion replayed: {status} {answer}");
    assert!(status >= 400, "a replayed assertion: {status} {answer}");

    // Request B, open with its own challenge: every bad assertion is
    // refused and leaves it open (and unapproved).
    let mut login_b = Login::start(&service, "alice", "192.0.2.8");
    let number_b = login_b.press_enter_for_number(PROMPT);
    let b = phone.wait_request(Duration::from_secs(5));
    let b_id = id_of(&b);
    assert_ne!(b_id, id_of(&a));

    let mut phished = phone.key.clone();
    phished.origin = "http://evil.example".into();
    phished.counter += 100;
    let mut unverified = phone.key.clone();
    unverified.user_verified = false;
    unverified.counter += 200;
    // The clone's counter is the one A's assertion carried: not above the
    // stored one.
    clone.counter = phone.key.counter - 1;
    type Make<'a> = Box<dyn FnMut(&serde_json::Value) -> serde_json::Value + 'a>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "A's assertion sent for B",
            Box::new(|_| assertion_a.clone()),
        ),
        ("a cloned key", Box::new(|o| clone.assert(o))),
        ("a wrong origin", Box::new(|o| phished.assert(o))),
        ("no user verification", Box::new(|o| unverified.assert(o))),
    ];
    for (what, mut make) in cases {
        let (status, options) = phone.begin(&b_id, number_b);
        assert_eq!(status, 200, "{what}: begin: {options}");
        let (status, answer) = phone.finish(&b_id, &make(&options));
        println!("{what}: {status} {answer}");
        assert_eq!(status, 403, "{what}: {answer}");
        assert!(listed(&phone, &b_id), "{what}: B is no longer open");
    }
    let refused = audit_lines(&env, "approve")
        .iter()
        .filter(|l| l.contains("assertion_refused"))
        .count();
    assert_eq!(refused, 4, "assertion_refused audit lines");

    // The real key still approves B.
    let (status, answer) = phone.approve(&b, Some(number_b));
    assert_eq!(status, 200, "{answer}");
    login_b.answer("");
    let done = login_b.finish(END);
    assert_eq!(done.outcome, PamOutcome::Success, "{}", done.output);
}

/// A cloned passkey used while the original's challenge is open: both
/// challenges were issued when the stored counter was N; the original
/// answers with N+1, then the clone with N+1 too. The clone must be
/// refused (the counter is checked against the stored one at the
/// answer, not against a copy taken at the challenge).
#[test]
fn a_cloned_key_answering_a_challenge_issued_before_the_originals_use_is_refused() {
    if !require("approve_clone_race", PAM) {
        return;
    }
    let (env, port) = start("approve_clone", "\"60s\"", Limits::default());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let phone = Phone::pair_active(&env, port, "alice");
    let mut clone = phone.key.clone();
    let service = env.pam_service("");

    let mut login_a = Login::start(&service, "alice", "192.0.2.9");
    let number_a = login_a.press_enter_for_number(PROMPT);
    let a = phone.wait_request(Duration::from_secs(5));
    let mut login_b = Login::start(&service, "alice", "192.0.2.9");
    let number_b = login_b.press_enter_for_number(PROMPT);
    let b = phone.requests()["requests"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] != a["id"]).cloned())
        .expect("a second request");

    let (status, options_a) = phone.begin(&id_of(&a), number_a);
    assert_eq!(status, 200, "{options_a}");
    let (status, options_b) = phone.begin(&id_of(&b), number_b);
    assert_eq!(status, 200, "{options_b}");
    let (status, answer) = phone.finish(&id_of(&a), &phone.key.clone().assert(&options_a));
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = phone.finish(&id_of(&b), &clone.assert(&options_b));
    println!("the clone, counter {}: {status} {answer}", clone.counter);
    assert_eq!(status, 403, "a cloned key's answer was accepted: {answer}");
    assert!(listed(&phone, &id_of(&b)), "B is no longer open");
    drop(login_a);
    drop(login_b);
}

#[test]
fn another_users_phone_can_neither_see_nor_decide_a_request() {
    if !require("approve_other_user", PAM) {
        return;
    }
    let (env, port) = start("approve_other", "\"60s\"", Limits::default());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    env.enroll_active("bob", &[], t);
    let alice_phone = Phone::pair_active(&env, port, "alice");
    let mut bob_phone = Phone::pair_active(&env, port, "bob");
    let service = env.pam_service("");

    let mut login = Login::start(&service, "alice", "192.0.2.10");
    let number = login.press_enter_for_number(PROMPT);
    let request = alice_phone.wait_request(Duration::from_secs(5));
    let id = id_of(&request);

    assert_eq!(bob_phone.requests()["requests"], json!([]), "bob sees it");
    let (status, answer) = bob_phone.begin(&id, number);
    println!("bob picks: {status} {answer}");
    assert_eq!(status, 404, "bob picks the number: {answer}");
    let (status, answer) = bob_phone.deny(&id, true);
    assert_eq!(status, 404, "bob denies: {answer}");
    // Alice's phone is given the challenge; bob's passkey answers it.
    let (status, options) = alice_phone.begin(&id, number);
    assert_eq!(status, 200, "{options}");
    let bobs = bob_phone.key.assert(&options);
    let (status, answer) = bob_phone.finish(&id, &bobs);
    assert!(status >= 400, "bob's finish: {status} {answer}");
    // Bob's assertion sent with alice's app token: not her passkey.
    let (status, answer) = alice_phone.finish(&id, &bobs);
    println!("bob's assertion with alice's token: {status} {answer}");
    assert_eq!(status, 403, "{answer}");
    assert!(
        listed(&alice_phone, &id),
        "alice's request is no longer open"
    );

    // Still undecided: alice denies it, and her login fails.
    let (status, answer) = alice_phone.deny(&id, false);
    assert_eq!(status, 200, "{answer}");
    login.answer("");
    let done = login.finish(END);
    assert_eq!(done.outcome, PamOutcome::AuthErr, "{}", done.output);
    assert!(
        done.said().contains("denied on your phone"),
        "{}",
        done.said()
    );
}

#[test]
fn a_wrong_number_closes_the_request() {
    if !require("approve_wrong_number", PAM) {
        return;
    }
    let (env, port) = start("approve_wrong", "\"60s\"", Limits::default());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");

    let mut login = Login::start(&service, "alice", "192.0.2.11");
    let number = login.press_enter_for_number(PROMPT);
    let request = phone.wait_request(Duration::from_secs(5));
    let wrong = request["choices"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .filter_map(|c| c.as_u64())
                .find(|c| *c != u64::from(number))
        })
        .expect("another choice");
    let (status, answer) = phone.begin(&id_of(&request), wrong as u8);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["outcome"], "wrong_number", "{answer}");
    login.answer("");
    let done = login.finish(END);
    assert_eq!(done.outcome, PamOutcome::AuthErr, "{}", done.output);
    assert!(
        done.said().contains("A different number was chosen"),
        "{}",
        done.said()
    );
    let (status, answer) = phone.begin(&id_of(&request), number);
    assert_eq!(status, 409, "the right number afterwards: {answer}");
}

#[test]
fn deny_not_me_fails_the_login_and_writes_the_audit_line() {
    if !require("approve_deny", PAM) {
        return;
    }
    let (env, port) = start("approve_deny", "\"60s\"", Limits::default());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");

    let mut login = Login::start(&service, "alice", "192.0.2.12");
    login.press_enter_for_number(PROMPT);
    login.answer("");
    let request = phone.wait_request(Duration::from_secs(5));
    let (status, answer) = phone.deny(&id_of(&request), true);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "denied");
    let done = login.finish(END);
    assert_eq!(done.outcome, PamOutcome::AuthErr, "{}", done.output);
    assert!(
        done.said().contains("denied on your phone"),
        "{}",
        done.said()
    );
    let lines = audit_lines(&env, "approve");
    let denied: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("outcome=\"denied\""))
        .collect();
    println!("{denied:?}");
    assert_eq!(denied.len(), 1, "{lines:?}");
    assert!(denied[0].contains("not_me=true"), "{denied:?}");
    assert!(denied[0].contains("192.0.2.12"), "{denied:?}");
}

#[test]
fn an_unanswered_request_expires_back_to_the_code_prompt() {
    if !require("approve_expiry", PAM) {
        return;
    }
    let (env, port) = start("approve_expiry", "\"10s\"", Limits::default());
    let t = settled_now(30, 5);
    let alice = env.enroll_active("alice", &[], t - 30);
    let _phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");

    let mut login = Login::start(&service, "alice", "192.0.2.13");
    login.press_enter_for_number(PROMPT);
    let entered = Instant::now();
    login.answer("");
    login.wait_for("The request expired", Duration::from_secs(40));
    let waited = entered.elapsed();
    println!(
        "Enter to \"The request expired\": {} ms ([approve] timeout 10 s)",
        waited.as_millis()
    );
    login.wait_for(CODE_OR_APPROVE, PROMPT);
    let code = alice.code_at(settled_now(30, 3) + 30);
    login.answer(&code);
    let done = login.finish(END);
    assert_eq!(done.outcome, PamOutcome::Success, "{}", done.output);
    assert!(
        waited < Duration::from_secs(10 + 10),
        "waited {waited:?}, beyond the request's timeout and the module's"
    );
}

#[test]
fn a_fourth_open_request_is_refused_and_requests_count_against_the_source() {
    if !require("approve_open_limit", PAM) {
        return;
    }
    let limits = Limits {
        max_failures: 5,
        ..Limits::default()
    };
    let (env, port) = start("approve_open", "\"60s\"", limits);
    let t = settled_now(30, 5);
    let alice = env.enroll_active("alice", &[], t);
    let _phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");
    let source = "192.0.2.14";

    let mut open = Vec::new();
    for _ in 0..3 {
        let mut login = Login::start(&service, "alice", source);
        login.press_enter_for_number(PROMPT);
        open.push(login);
    }
    let entry = env.list_entry("alice").expect("alice");
    println!("after three requests: failures {}", entry["failures"]);
    assert_eq!(entry["failures"], 3, "{entry}");

    let mut fourth = Login::start(&service, "alice", source);
    fourth.wait_for(CODE_OR_APPROVE, PROMPT);
    fourth.answer("");
    fourth.wait_for("No request can be sent to your phone now", PROMPT);
    fourth.wait_for(CODE_OR_APPROVE, PROMPT);
    fourth.answer(&alice.wrong_code(t));
    let done = fourth.finish(END);
    assert_eq!(done.outcome, PamOutcome::AuthErr, "{}", done.output);
    assert!(
        audit_lines(&env, "approve_request")
            .iter()
            .any(|l| l.contains("approve_too_many_open")),
        "no approve_too_many_open audit line"
    );
    let entry = env.list_entry("alice").expect("alice");
    println!(
        "after the refusal and a wrong code: failures {}",
        entry["failures"]
    );
    assert_eq!(entry["failures"], 5, "{entry}");
    // max_failures reached from this source: throttled like a code.
    env.expect_throttled("alice", &alice.code_at(t + 30), source, "after five");
    drop(open);
}

/// A phone whose pairing was not confirmed (its test request not
/// approved) is pending: it neither approves nor denies a login.
#[test]
fn a_pending_phone_cannot_answer_a_login_request() {
    if !require("approve_pending_phone", PAM) {
        return;
    }
    let (env, port) = start("approve_pending", "\"60s\"", Limits::default());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let active = Phone::pair_active(&env, port, "alice");
    let mut pending = Phone::pair(port, &approve::pairing_link(&env, "alice"));
    let service = env.pam_service("");

    let mut login = Login::start(&service, "alice", "192.0.2.15");
    let number = login.press_enter_for_number(PROMPT);
    let request = active.wait_request(Duration::from_secs(5));
    let id = id_of(&request);
    let listed_by_pending = pending.requests();
    assert!(
        listed_by_pending["requests"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["test"] == true)),
        "{listed_by_pending}"
    );
    let (picked, options) = pending.begin(&id, number);
    println!("the pending phone picks: {picked} {options}");
    if picked == 200 {
        let credential = pending.key.assert(&options);
        let (status, answer) = pending.finish(&id, &credential);
        println!("the pending phone's assertion: {status} {answer}");
    }
    let (denied, answer) = pending.deny(&id, true);
    println!("the pending phone denies: {denied} {answer}");
    assert_eq!(
        picked, 404,
        "the pending phone picked the number: {options}"
    );
    assert_eq!(denied, 404, "the pending phone denied: {answer}");

    let (status, answer) = active.deny(&id, false);
    assert_eq!(status, 200, "{answer}");
    login.answer("");
    let done = login.finish(END);
    assert_eq!(done.outcome, PamOutcome::AuthErr, "{}", done.output);
}
