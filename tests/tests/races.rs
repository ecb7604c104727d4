//! One-time things raced: each may be used exactly once however many
//! clients present it at the same instant (design.md §1).
//!
//! - an enrolment link's right code POSTed twice at once to the page
//!   ("Validate"), from two connections opened beforehand and written
//!   together: one success page with recovery codes, the other not;
//! - one recovery code typed by 16 logins at once (real libpam);
//! - one texted code typed by 16 logins at once, the login that asked for
//!   it among them.

use otpd_tests::pages;
use otpd_tests::race::Racers;
use otpd_tests::sms::Outbox;
use otpd_tests::system::verify_outcomes;
use otpd_tests::totp::recovery_codes_in;
use otpd_tests::webclient::{loopback_source, Answer, Connection, FORM};
use otpd_tests::{require, settled_now, Limits, PamLogin, PamOutcome, TestEnv, PAM};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Barrier;
use std::time::Duration;

/// Logins racing with one code.
const RACERS: usize = 16;
/// Races of the logins, each with a code of its own: a race whose
/// requests happen not to meet in the daemon proves nothing, so there are
/// several.
const ROUNDS: usize = 4;

/// Limits that judge a refused login as a wrong or used code, never as
/// throttled.
fn lenient() -> Limits {
    Limits {
        max_failures: 1000,
        user_max_failures: 10_000,
        ..Limits::default()
    }
}

/// What kind of page an answer is, in words.
fn page_kind(answer: &Answer) -> String {
    if answer.body.contains("id=\"success\"") {
        "success page".to_owned()
    } else if answer.body.contains("id=\"invalid\"") {
        format!("{} neutral page", answer.status)
    } else {
        format!("{} other page", answer.status)
    }
}

/// POSTs `body` to `path` on each of `targets` (a port of the pages, and
/// the client's source address) at the same instant: every connection is
/// opened and the whole request but its last byte written first; then,
/// released together, each thread writes its last byte, which completes
/// the request the server has been parsing. Returns the answers in order.
fn post_at_once(targets: &[(u16, IpAddr)], path: &str, body: &str) -> Vec<Answer> {
    let barrier = Barrier::new(targets.len());
    std::thread::scope(|scope| {
        let racers: Vec<_> = targets
            .iter()
            .map(|&(port, source)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut connection =
                        Connection::open(port, Some(source), Duration::from_secs(10))
                            .expect("connect to the pages");
                    let request = format!(
                        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
                         {FORM}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let (head, last) = request.split_at(request.len() - 1);
                    connection
                        .stream()
                        .write_all(head.as_bytes())
                        .expect("write the request");
                    barrier.wait();
                    connection
                        .stream()
                        .write_all(last.as_bytes())
                        .expect("write the request's last byte");
                    connection.read_answer(false).expect("an answer")
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

#[test]
fn one_link_validated_twice_at_the_same_instant_activates_once() {
    if !require("a link validated twice at once", PAM) {
        return;
    }
    const LINKS: usize = 10;
    let env = TestEnv::start_with_config("race_link", lenient(), pages::WEB_SECTION);
    let port = pages::port(&env, "http");
    let users: Vec<String> = (0..LINKS).map(|i| format!("user{i}")).collect();
    let links: Vec<(String, String)> = users
        .iter()
        .map(|user| {
            let path = pages::enroll_link_path(&env, user, &[]);
            let secret = pages::reveal(port, &path, "");
            (path, secret)
        })
        .collect();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (round, (user, (path, secret))) in users.iter().zip(&links).enumerate() {
        let t = settled_now(30, 3);
        let code = otpd_tests::code_at(secret, "SHA1", 6, 30, t);
        let answers = post_at_once(
            &[
                (port, loopback_source(40, round as u32 * 2)),
                (port, loopback_source(40, round as u32 * 2 + 1)),
            ],
            path,
            &format!("code={code}"),
        );
        let succeeded: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.body.contains("id=\"success\""))
            .collect();
        for answer in &answers {
            *tally.entry(page_kind(answer)).or_default() += 1;
        }
        let kinds: Vec<String> = answers.iter().map(page_kind).collect();
        assert_eq!(
            succeeded.len(),
            1,
            "{user}: two POSTs of the right code at once gave {kinds:?}"
        );
        let loser = answers
            .iter()
            .find(|a| !a.body.contains("id=\"success\""))
            .expect("one answer is not the success page");
        assert!(
            !loser.body.contains("<li><code>"),
            "{user}: the other answer shows recovery codes:\n{}",
            loser.body
        );
        let codes = pages::recovery_codes_on(&succeeded[0].body);
        assert_eq!(codes.len(), 10, "{}", succeeded[0].body);
        let entry = env.list_entry(user).expect("listed");
        assert_eq!(entry["state"], "active", "{entry}");
        assert_eq!(entry["recovery_codes"], 10, "{entry}");
        let accepted = env
            .log()
            .lines()
            .filter(|l| {
                l.contains("op=\"web_validate\"")
                    && l.contains(&format!("user=\"{user}\""))
                    && l.contains("outcome=\"accepted\"")
            })
            .count();
        assert_eq!(accepted, 1, "{user}: audit lines of an accepted validation");
        // The winner's recovery codes are the ones kept.
        let login = env.pam_login(user, &codes[0], "192.0.2.100", "");
        assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    }
    println!("{LINKS} links, each validated twice at once: {tally:?}");
}

/// Types `code` into every one of `logins` at once ([`Racers`]) and
/// tallies their outcomes; exactly one must be a success and every other
/// a plain refusal (AuthErr: not an unavailable daemon, which would hide
/// a lost race behind a timeout).
fn exactly_one_success(what: &str, logins: Racers, code: &str) -> Vec<PamLogin> {
    let (results, spread) = logins.type_at_once(code);
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        *tally.entry(format!("{:?}", r.outcome)).or_default() += 1;
    }
    println!(
        "{what}: {} logins held at the prompt, all woken in {} µs: {tally:?}",
        results.len(),
        spread.as_micros(),
    );
    let count = |o: PamOutcome| results.iter().filter(|r| r.outcome == o).count();
    assert_eq!(count(PamOutcome::Success), 1, "{what}: {tally:?}");
    assert_eq!(
        count(PamOutcome::AuthErr),
        results.len() - 1,
        "{what}: {tally:?}"
    );
    results
}

#[test]
fn one_recovery_code_typed_by_sixteen_logins_at_once_lets_one_in() {
    if !require("a raced recovery code", PAM) {
        return;
    }
    let env = TestEnv::start_with("race_recovery", lenient());
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t - 30);
    let count = ROUNDS + 1;
    let out = env.otpd_expect(
        &["recovery-codes", "alice", "--count", &count.to_string()],
        0,
    );
    let codes = recovery_codes_in(&out.stdout);
    assert_eq!(codes.len(), count, "{out}");
    for (round, code) in codes.iter().take(ROUNDS).enumerate() {
        let service = env.pam_service("");
        let mut logins = Racers::new();
        for i in 0..RACERS {
            logins.start(service.command(OsStr::new("alice"), &format!("10.8.{round}.{i}"), None));
        }
        exactly_one_success(&format!("recovery code {}", round + 1), logins, code);
        let left = env.list_entry("alice").unwrap()["recovery_codes"].clone();
        assert_eq!(
            left,
            count - 1 - round,
            "recovery codes left after round {round}"
        );
    }
    let accepted = verify_outcomes(&env, "alice")
        .iter()
        .filter(|o| *o == "accepted_recovery_code")
        .count();
    assert_eq!(accepted, ROUNDS, "{:?}", verify_outcomes(&env, "alice"));
    // The last code was never touched.
    let login = env.pam_login("alice", &codes[ROUNDS], "192.0.2.101", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
}

#[test]
fn one_texted_code_typed_by_sixteen_logins_at_once_lets_one_in() {
    if !require("a raced texted code", PAM) {
        return;
    }
    let probe = TestEnv::without_daemon("race_sms_sender", &Limits::default());
    let outbox = Outbox::create(&probe.dir);
    let env = TestEnv::start_with_config(
        "race_sms",
        lenient(),
        &format!(
            "[sms]\ncommand = \"{}\"\nmax_per_hour = 20\n",
            outbox.script.display()
        ),
    );
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t - 30);
    env.otpd_expect(&["phone", "alice", "+31612345678"], 0);
    let code = outbox.code(1);
    env.otpd_expect(&["phone", "alice", "--confirm", &code], 0);

    for round in 0..ROUNDS {
        // The login that asks for the text waits at "Code from the text
        // message: " and races with the others.
        let service = env.pam_service("lang=en");
        let mut logins = Racers::new();
        logins
            .start(service.command(OsStr::new("alice"), &format!("10.7.{round}.250"), None))
            .write(b"sms\n");
        let code = outbox.code(2 + round);
        for i in 1..RACERS {
            logins.start(service.command(OsStr::new("alice"), &format!("10.7.{round}.{i}"), None));
        }
        let results = exactly_one_success(&format!("texted code {}", round + 1), logins, &code);
        assert!(
            results[0]
                .module_messages()
                .contains("Code from the text message: "),
            "{}",
            results[0].output
        );
        // Used: typed again, refused.
        let again = env.pam_login("alice", &code, "192.0.2.102", "");
        assert_eq!(again.outcome, PamOutcome::AuthErr, "{}", again.output);
    }
    let outcomes = verify_outcomes(&env, "alice");
    let accepted = outcomes
        .iter()
        .filter(|o| *o == "accepted_sms_code")
        .count();
    assert_eq!(accepted, ROUNDS, "{outcomes:?}");
}
