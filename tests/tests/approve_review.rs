//! What the attacker's-eye review of "approve on your phone" found, each
//! through the real daemon, the phone app's API (a software passkey) and
//! the real libpam:
//!
//! - a revoked enrolment (`otpd enroll USER --force --revoke`, the README's
//!   answer to a lost phone) takes the paired phones with it;
//! - the pairing's test request is pushed, also though pair/finish runs on
//!   the pages' own threads;
//! - approvals from a source the user has proven do not grow the user's
//!   failure count (which would throttle the user's other sources);
//! - a wrong number pauses requests from sources the user has not proven
//!   (a random tap is right one time in three);
//! - a code device cannot take a paired phone's name.

use otpd_tests::approve::{self, audit_lines, Login, Phone, CODE_OR_APPROVE};
use otpd_tests::pages;
use otpd_tests::push_service::PushService;
use otpd_tests::softkey::SoftKey;
use otpd_tests::{require, settled_now, Limits, PamOutcome, TestEnv, PAM};
use serde_json::json;
use std::time::Duration;

const PROMPT: Duration = Duration::from_secs(15);
const END: Duration = Duration::from_secs(60);

fn start(name: &str, extra: &str) -> (TestEnv, u16) {
    let env =
        TestEnv::start_with_config(name, Limits::default(), &approve::config("\"60s\"", extra));
    let port = pages::port(&env, "http");
    (env, port)
}

fn failures(env: &TestEnv, user: &str) -> u64 {
    env.list_entry(user).expect("listed")["failures"]
        .as_u64()
        .expect("failures")
}

#[test]
fn a_revoked_enrolment_takes_the_paired_phones_with_it() {
    if !require("approve_revoke", PAM) {
        return;
    }
    let (env, port) = start("approve_revoke", "");
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let phone = Phone::pair_active(&env, port, "alice");
    let listed = env.list_entry("alice").expect("listed");
    assert_eq!(listed["approvers"][0]["state"], "active", "{listed}");

    // The phone is lost: the README's answer.
    env.otpd_expect(&["enroll", "alice", "--force", "--revoke"], 0);
    let listed = env.list_entry("alice").expect("listed");
    println!("after --force --revoke: {listed}");
    assert!(
        listed["approvers"].as_array().is_none_or(|a| a.is_empty()),
        "the revoked user still has a paired phone: {listed}"
    );
    let (status, answer) = phone.call("requests", json!({}));
    assert_eq!(status, 403, "the lost phone's app still works: {answer}");
    // And a login offers no approval (the new device is pending: no login
    // at all, as the README says).
    let service = env.pam_service("");
    let mut login = Login::start(&service, "alice", "192.0.2.7");
    let said = login.wait_for(": ", PROMPT);
    assert!(!said.contains("press Enter"), "{said}");
    login.answer("");
    assert_ne!(login.finish(END).outcome, PamOutcome::Success);
}

#[test]
fn the_pairing_test_request_is_pushed_from_the_pages() {
    let push = PushService::start(None, Some("mailto:admin@example.org".into()));
    let (env, port) = start(
        "approve_test_push",
        &format!("push_hosts = [\"{}\"]\n", push.host_entry()),
    );
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let link = approve::pairing_link(&env, "alice");
    let token = approve::token_of(&link);
    let (status, begun) = approve::api(port, "pair/begin", &json!({ "token": token }));
    assert_eq!(status, 200, "{begun}");
    let mut key = SoftKey::new(approve::ORIGIN);
    let credential = key.register(&begun);
    let (endpoint, p256dh, auth) = push.subscription();
    let (status, finished) = approve::api(
        port,
        "pair/finish",
        &json!({
            "token": token,
            "credential": credential,
            "push": { "endpoint": endpoint, "keys": { "p256dh": p256dh, "auth": auth } },
        }),
    );
    assert_eq!(status, 200, "{finished}");
    assert_eq!(finished["push"], "on", "{finished}");
    let got = push.wait_for(1, Duration::from_secs(10));
    println!("the stand-in received {} message(s)", got.len());
    assert_eq!(got.len(), 1, "no test push: {:?}", push.rejections());
    let payload: serde_json::Value =
        serde_json::from_slice(&got[0].payload).expect("a JSON payload");
    println!("the test push: {payload}");
    assert_eq!(payload["title"], "Test notification from otpd", "{payload}");
    assert_eq!(
        got[0].vapid_key, begun["vapid_key"],
        "signed with the key the app got"
    );
}

#[test]
fn approvals_from_a_proven_source_leave_the_users_failures_alone() {
    if !require("approve_trusted", PAM) {
        return;
    }
    let (env, port) = start("approve_trusted", "");
    let t = settled_now(30, 10);
    let alice = env.enroll_active("alice", &[], t - 30);
    let mut phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");
    // A code from 192.0.2.7: a source the user has proven.
    let mut login = Login::start(&service, "alice", "192.0.2.7");
    login.wait_for(CODE_OR_APPROVE, PROMPT);
    login.answer(&alice.code_at(t));
    assert_eq!(login.finish(END).outcome, PamOutcome::Success);
    for round in 0..3 {
        let mut login = Login::start(&service, "alice", "192.0.2.7");
        let number = login.press_enter_for_number(PROMPT);
        let request = phone.wait_request(Duration::from_secs(5));
        login.answer("");
        let (status, answer) = phone.approve(&request, Some(number));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(login.finish(END).outcome, PamOutcome::Success);
        println!(
            "after approval {}: failures {}",
            round + 1,
            failures(&env, "alice")
        );
    }
    assert_eq!(
        failures(&env, "alice"),
        0,
        "approvals from a proven source grew the user's failure count"
    );
}

#[test]
fn a_wrong_number_pauses_requests_from_unproven_sources() {
    if !require("approve_pause", PAM) {
        return;
    }
    let (env, port) = start("approve_pause", "");
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let phone = Phone::pair_active(&env, port, "alice");
    let service = env.pam_service("");
    let mut login = Login::start(&service, "alice", "192.0.2.66");
    let number = login.press_enter_for_number(PROMPT);
    let request = phone.wait_request(Duration::from_secs(5));
    let wrong = request["choices"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .filter_map(|n| n.as_u64())
                .find(|n| *n != u64::from(number))
        })
        .expect("another choice") as u8;
    let (status, answer) = phone.begin(&approve::id_of(&request), wrong);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["outcome"], "wrong_number", "{answer}");
    login.answer("");
    assert_eq!(login.finish(END).outcome, PamOutcome::AuthErr);

    // The next Enter from a source the user has not proven asks nothing of
    // the phone.
    let mut login = Login::start(&service, "alice", "192.0.2.66");
    login.wait_for(CODE_OR_APPROVE, PROMPT);
    login.answer("");
    let said = login.wait_for(CODE_OR_APPROVE, PROMPT);
    println!("after a wrong number, Enter says: {said}");
    assert!(said.contains("Too many requests to your phone"), "{said}");
    assert!(
        audit_lines(&env, "approve_request")
            .iter()
            .any(|l| l.contains("approve_paused")),
        "no approve_paused audit line"
    );
    login.answer("000000");
    let _ = login.finish(END);
}

#[test]
fn a_code_device_cannot_take_a_paired_phones_name() {
    let (env, port) = start("approve_names", "");
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t);
    let phone = Phone::pair_active(&env, port, "alice");
    let out = env.otpd(&["enroll", "alice", "--device", &phone.name]);
    println!("otpd enroll alice --device {}: {out}", phone.name);
    assert_ne!(out.status.code(), Some(0), "{out}");
    assert!(out.stderr.contains("paired phone"), "{out}");
    let listed = env.list_entry("alice").expect("listed");
    assert_eq!(
        listed["devices"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}
