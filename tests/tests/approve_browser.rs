//! "Approve on your phone" end to end in a real browser: headless Chromium
//! at phone size with WebDriver's virtual authenticator (CTAP2, internal
//! transport, user verification) as the phone's passkey, the real daemon
//! and its pages, logins through the real libpam (pamtester on a
//! terminal), and the Web Push stand-in (`otpd_tests::push_service`) for
//! the pushes.
//!
//! One daemon and one browser for the whole flow: enrolment by link, the
//! success page's second QR code read by `zbarimg`, pairing, the test
//! request, a push subscription registered through the API, then logins:
//! approved, a code at the same prompt, denied ("This wasn't me"), a
//! wrong number. The screenshot in docs/approve-phone.png is taken on the
//! way (one pending request at 390×844; written there with OTPD_BLESS=1).

use otpd_tests::browser::Browser;
use otpd_tests::pam::PamService;
use otpd_tests::phone::{self, Listed};
use otpd_tests::pty::Terminal;
use otpd_tests::push_service::PushService;
use otpd_tests::{require, settled_now, Enrollment, PamOutcome, Program, TestEnv};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NEEDS: &[Program] = &[
    Program::Chromium,
    Program::Chromedriver,
    Program::Zbarimg,
    Program::Oathtool,
    Program::Pamtester,
    Program::PamWrapper,
];

const FIRST_PROMPT: &str = "Verification code, or press Enter to approve on your phone: ";
const SECOND_PROMPT: &str = "to approve, then press Enter: ";

/// `[approve] timeout` of these tests (expiry is not the point here).
const TIMEOUT: u64 = 20;

/// A login through libpam on a terminal: pamtester as a person runs it.
struct Login {
    terminal: Terminal,
}

impl Login {
    fn start(service: &PamService, user: &str, rhost: &str) -> Login {
        let login = Login {
            terminal: Terminal::spawn(service.command(OsStr::new(user), rhost, None)),
        };
        login
            .terminal
            .expect_after(0, FIRST_PROMPT, Duration::from_secs(20));
        login
    }

    /// Presses Enter at the first prompt; returns the number of the second.
    fn ask_the_phone(&mut self) -> u32 {
        let from = self.terminal.screen().len();
        self.terminal.type_line("");
        let screen = self
            .terminal
            .expect_after(from, SECOND_PROMPT, Duration::from_secs(20));
        let prompt = screen[from..]
            .lines()
            .find(|l| l.contains(SECOND_PROMPT))
            .expect("the second prompt");
        assert!(
            prompt.contains("On your phone, choose "),
            "the second prompt: {prompt:?}"
        );
        phone::number_in(prompt).unwrap_or_else(|| panic!("no number in {prompt:?}"))
    }

    /// Types `line` and waits for pamtester's outcome; returns it with the screen.
    fn finish(mut self, line: &str) -> (PamOutcome, String) {
        self.terminal.type_line(line);
        let (_, screen) = self.terminal.wait(Duration::from_secs(60));
        let outcome = screen
            .lines()
            .filter_map(|l| l.split_once("pamtester: ").map(|(_, t)| t.trim_end()))
            .rfind(|t| {
                !t.starts_with("invoking pam_start") && !t.starts_with("performing operation")
            })
            .map(|t| PamOutcome::from_pamtester_text(t).unwrap_or_else(|e| panic!("{e}\n{screen}")))
            .unwrap_or_else(|| panic!("pamtester printed no result:\n{screen}"));
        (outcome, screen)
    }
}

fn docs_png() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/approve-phone.png")
}

/// Enrols `user` by link in `browser` (reveal, the code from the QR code,
/// "Validate"); returns the enrolment and the pairing URL read by zbarimg
/// off the success page's `#approver-qr`.
fn enrol_and_read_pairing_qr(
    env: &TestEnv,
    browser: &Browser,
    base: &str,
    user: &str,
) -> (Enrollment, String) {
    let out = env.otpd_expect(&["enroll", user, "--link"], 0);
    let link = otpd_tests::pages::link_in(&out.stdout)
        .unwrap_or_else(|| panic!("otpd enroll --link printed no link:\n{out}"));
    assert!(link.starts_with(base), "{link} is not under {base}");
    browser.open(&link);
    browser.submit("reveal");
    let enrollment =
        Enrollment::from_uri(&browser.read_qr_code("qr")).unwrap_or_else(|e| panic!("{e}"));
    let t = settled_now(enrollment.period, 10);
    browser.fill("code", &enrollment.code_at(t));
    browser.submit("validate");
    assert!(
        browser.has("success"),
        "no success page:\n{}",
        browser.source()
    );
    assert!(
        browser.has("approver-step") && browser.has("approver-qr"),
        "the success page offers no phone pairing:\n{}",
        browser.source()
    );
    let step = browser.text("approver-step");
    assert!(
        step.contains("Scan this with your phone"),
        "the pairing step's text: {step:?}"
    );
    let url = browser.read_qr_code("approver-qr");
    otpd_tests::secrets::remember_from_output(&url);
    let prefix = format!("{base}/approve/pair/");
    assert!(
        url.starts_with(&prefix) && url.len() > prefix.len() + 20,
        "the second QR code reads {url:?}, not {prefix}<token>"
    );
    (enrollment, url)
}

/// `otpd list`'s line of `user`.
fn list_line(env: &TestEnv, user: &str) -> String {
    let out = env.otpd_expect(&["list"], 0);
    out.stdout
        .lines()
        .find(|l| l.starts_with(user))
        .unwrap_or_else(|| panic!("{user} not listed:\n{out}"))
        .to_owned()
}

#[test]
fn a_phone_paired_from_the_enrolment_page_approves_denies_and_closes_pam_logins() {
    if !require("approve_browser", NEEDS) {
        return;
    }
    let started = Instant::now();
    let push = PushService::start(None, Some(phone::CONTACT.to_owned()));
    let (env, base, port) = phone::approve_env("approve_browser", TIMEOUT, &[push.host_entry()]);
    // 1. Pairing from the enrolment page, opened on a PC as the manuals say;
    // the phone is another browser (phone-sized, with the passkey).
    let pc = Browser::start("approve_browser_pc");
    let (alice, pairing_url) = enrol_and_read_pairing_qr(&env, &pc, &base, "alice");
    drop(pc);
    let browser = phone::phone_browser("approve_browser");
    let authenticator = phone::add_authenticator(&browser);
    // A name as a person types it (the page makes a device name of it).
    phone::pair(&browser, &pairing_url, "Pixel 8");
    let credentials = phone::credentials(&browser, &authenticator);
    assert_eq!(credentials.len(), 1, "one passkey: {credentials:?}");
    assert_eq!(credentials[0]["rpId"], "localhost", "{credentials:?}");
    let line = list_line(&env, "alice");
    assert!(
        line.contains("Pixel-8:approver (pending)"),
        "before the test request is approved: {line}"
    );
    let app_token = phone::app_token(&browser);
    let vapid_key = browser
        .script("return localStorage.getItem('otpd-vapid-key');")
        .as_str()
        .expect("the VAPID key in localStorage")
        .to_owned();

    // The test request: one "Approve" button; approving activates the phone.
    let test = phone::wait_for_request(&browser, "", Duration::from_secs(10));
    assert_eq!(test.numbers.len(), 1, "the test request: {test:?}");
    assert_eq!(
        browser.all("section.request button.approve.number").len(),
        1,
        "the test request's one Approve button"
    );
    let (outcome, detail) = phone::pick(&browser, &test.id, test.numbers[0]);
    assert_eq!(outcome, "approved", "the test request: {detail}");
    let line = list_line(&env, "alice");
    assert!(
        line.contains("Pixel-8:approver") && !line.contains("(pending)"),
        "after the test request: {line}"
    );
    let pairs = phone::audit(&env, "approve_pair", "alice");
    assert!(
        pairs
            .iter()
            .any(|l| l.contains("outcome=\"paired_pending_test\"")),
        "{pairs:#?}"
    );

    // Headless Chromium has no push service: paired without push.
    assert!(line.contains("(no push)"), "{line}");

    // 2. A push subscription through the API.
    let (endpoint, p256dh, auth) = push.subscription();
    let (status, answer) = phone::api(
        port,
        "push",
        &json!({"app_token": app_token, "push": {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}}),
    );
    assert_eq!((status, &answer), (200, &json!({"ok": true})));
    let (status, answer) = phone::api(
        port,
        "push",
        &json!({"app_token": "not-a-token", "push": {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}}),
    );
    assert_eq!(status, 403, "a bad app token: {answer}");
    let line = list_line(&env, "alice");
    assert!(
        !line.contains("(no push)"),
        "after the subscription: {line}"
    );

    // 3. A login approved on the phone, through a service called sshd (as
    // the picture in the docs shows it).
    let stack = env.pam_service("");
    let text = std::fs::read_to_string(stack.dir.join(&stack.name)).expect("the stack");
    let service = PamService::create(&stack.dir, "sshd", &text);
    let mut login = Login::start(&service, "alice", "192.0.2.7");
    let number = login.ask_the_phone();
    let request = phone::wait_for_request(&browser, "192.0.2.7", Duration::from_secs(10));
    assert_eq!(request.numbers.len(), 3, "three numbers: {request:?}");
    assert!(
        request.numbers.contains(&number),
        "{number} not among {request:?}"
    );
    assert!(request.text.contains("alice"), "{request:?}");
    // The push: VAPID-checked by the stand-in, decrypted, without the number.
    let messages = push.wait_for(1, Duration::from_secs(10));
    assert_eq!(push.rejections(), vec![], "the stand-in refused a push");
    assert_eq!(
        messages[0].vapid_key, vapid_key,
        "signed with the daemon's key"
    );
    let payload: Value = serde_json::from_slice(&messages[0].payload).expect("a JSON payload");
    println!("push payload: {payload}");
    assert_eq!(
        payload["id"].as_str(),
        Some(request.id.as_str()),
        "{payload}"
    );
    assert!(
        payload["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{payload}"
    );
    let body = payload["body"].as_str().expect("a body");
    assert!(
        body.contains("alice") && body.contains("192.0.2.7"),
        "{payload}"
    );
    let keys: Vec<&String> = payload.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["body", "id", "lang", "title"], "{payload}");
    // The body names the user, the host, the service and the source, as the
    // app shows them; with those taken out, no number is left in it.
    let shown = |field: &str| {
        browser
            .script(&format!(
                "return document.querySelector('section.request[data-id=\"{}\"] .{field}').textContent;",
                request.id
            ))
            .as_str()
            .unwrap_or_else(|| panic!("no .{field} on the request"))
            .to_owned()
    };
    let (host, service_name) = (shown("host"), shown("service"));
    assert_eq!(
        body,
        format!("alice on {host} ({service_name}, 192.0.2.7)"),
        "{payload}"
    );
    let rest = body
        .replace(&host, "")
        .replace(&service_name, "")
        .replace("192.0.2.7", "");
    for text in [payload["title"].as_str().unwrap(), rest.as_str()] {
        assert!(
            !text
                .split(|c: char| !c.is_ascii_digit())
                .any(|d| d.parse::<u32>() == Ok(number)),
            "the number {number} in the push: {payload}"
        );
    }

    // 5. The screenshot: one pending request at phone size.
    // The pointer off the buttons (the test request's Approve button was
    // where a number now is): no number looks chosen in the picture.
    browser.session_command(
        "POST",
        "actions",
        Some(json!({"actions": [{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"},
            "actions": [{"type": "pointerMove", "x": 1, "y": 1, "origin": "viewport"}]}]})),
    );
    let png = browser.screenshot("approve-phone");
    let bytes = std::fs::read(&png).expect("read the screenshot");
    assert_eq!(&bytes[16..24], &[0, 0, 1, 134, 0, 0, 3, 76], "390×844 PNG");
    // The picture in docs/ is refreshed on request (as the man pages are),
    // so that a test run leaves the checkout as it found it.
    if std::env::var_os("OTPD_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(docs_png(), &bytes).expect("write docs/approve-phone.png");
        println!("docs/approve-phone.png: {} KiB", bytes.len() / 1024);
    } else {
        println!(
            "the phone page: {} ({} KiB; OTPD_BLESS=1 writes docs/approve-phone.png)",
            png.display(),
            bytes.len() / 1024
        );
    }

    let (outcome, detail) = phone::pick(&browser, &request.id, number);
    assert_eq!(outcome, "approved", "{detail}");
    let (outcome, screen) = login.finish("");
    assert_eq!(outcome, PamOutcome::Success, "{screen}");
    let logins = phone::audit(&env, "login", "alice");
    assert!(
        logins.iter().any(|l| l.contains("outcome=\"approved\"")),
        "{logins:#?}"
    );
    let counted = phone::credentials(&browser, &authenticator)[0]["signCount"].clone();
    println!("the passkey's signature counter after two approvals: {counted}");

    // A code from the app still works at the same prompt.
    let login = Login::start(&service, "alice", "192.0.2.7");
    // (The next step's code: the enrolment's was used; the window is ±1.)
    let t = settled_now(alice.period, 5);
    let (outcome, screen) = login.finish(&alice.code_at(t + alice.period));
    assert_eq!(outcome, PamOutcome::Success, "a code: {screen}");

    // Deny, "This wasn't me".
    let mut login = Login::start(&service, "alice", "192.0.2.8");
    login.ask_the_phone();
    let request = phone::wait_for_request(&browser, "192.0.2.8", Duration::from_secs(10));
    let (outcome, detail) = phone::deny(&browser, &request.id, true);
    assert_eq!(outcome, "denied", "{detail}");
    let (outcome, screen) = login.finish("");
    assert_eq!(outcome, PamOutcome::AuthErr, "denied: {screen}");
    assert!(
        screen.contains("The sign-in was denied on your phone."),
        "{screen}"
    );
    let approvals = phone::audit(&env, "approve", "alice");
    assert!(
        approvals
            .iter()
            .any(|l| l.contains("outcome=\"denied\"") && l.contains("not_me=true")),
        "{approvals:#?}"
    );

    // A wrong number closes the request. From 192.0.2.7, a source alice
    // has proven: "This wasn't me" above paused requests from the others
    // (approve_review.rs).
    let mut login = Login::start(&service, "alice", "192.0.2.7");
    let number = login.ask_the_phone();
    let request: Listed = phone::wait_for_request(&browser, "192.0.2.7", Duration::from_secs(10));
    let wrong = *request
        .numbers
        .iter()
        .find(|&&n| n != number)
        .expect("another number");
    let (outcome, _) = phone::pick(&browser, &request.id, wrong);
    assert_eq!(outcome, "wrong_number");
    let (outcome, screen) = login.finish("");
    assert_eq!(outcome, PamOutcome::AuthErr, "a wrong number: {screen}");
    assert!(
        screen.contains("A different number was chosen on your phone; the request is closed."),
        "{screen}"
    );
    let approvals = phone::audit(&env, "approve", "alice");
    assert!(
        approvals
            .iter()
            .any(|l| l.contains("outcome=\"wrong_number\"")),
        "{approvals:#?}"
    );
    // Closed: the app lists it no more, and the API says so.
    let (status, answer) = phone::api(
        port,
        "approve/begin",
        &json!({"app_token": app_token, "request": request.id, "number": number}),
    );
    assert!(
        status == 404 || status == 409,
        "the closed request: {status} {answer}"
    );

    browser.print_figures();
    println!(
        "approve_browser: {} ms in all",
        started.elapsed().as_millis()
    );
}

/// Records what the page sends to the API (WebDriver's scripts are not
/// bound by the page's CSP): the body of each `fetch`.
const RECORD_FETCHES: &str = "if (!window.__otpdSent) {\
     window.__otpdSent = [];\
     const original = window.fetch;\
     window.fetch = (url, options) => {\
       window.__otpdSent.push({ url: String(url), body: options && options.body });\
       return original(url, options);\
     };\
   }\
   return null;";

/// The last body the page sent to `/approve/api/{path}`.
fn last_sent(browser: &Browser, path: &str) -> Value {
    let sent = browser.script(&format!(
        "const s = (window.__otpdSent || []).filter((x) => x.url.endsWith('/approve/api/{path}'));\
         return s.length ? s[s.length - 1].body : null;"
    ));
    let body = sent
        .as_str()
        .unwrap_or_else(|| panic!("the page sent nothing to {path}"));
    serde_json::from_str(body).expect("a JSON body")
}

#[test]
fn a_replayed_assertion_and_another_users_phone_are_refused() {
    if !require("approve_replay", NEEDS) {
        return;
    }
    let (env, _base, port) = phone::approve_env("approve_replay", TIMEOUT, &[]);
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t - 30);
    env.enroll_active("bob", &[], t - 30);
    let browser = phone::phone_browser("approve_replay");
    let authenticator = phone::add_authenticator(&browser);
    // Bob's phone first (its app token kept), then Alice's in the same
    // browser: the authenticator holds both passkeys, the page Alice's token.
    phone::pair_active(&env, &browser, "bob", "bob-phone");
    let bob_token = phone::app_token(&browser);
    phone::pair_active(&env, &browser, "alice", "alice-phone");
    let alice_token = phone::app_token(&browser);
    assert_ne!(alice_token, bob_token);
    assert_eq!(phone::credentials(&browser, &authenticator).len(), 2);
    let service = env.pam_service("");

    // A login approved; the page's assertion recorded.
    browser.script(RECORD_FETCHES);
    let mut login = Login::start(&service, "alice", "192.0.2.10");
    let number = login.ask_the_phone();
    let first = phone::wait_for_request(&browser, "192.0.2.10", Duration::from_secs(10));
    let (outcome, detail) = phone::pick(&browser, &first.id, number);
    assert_eq!(outcome, "approved", "{detail}");
    let (outcome, screen) = login.finish("");
    assert_eq!(outcome, PamOutcome::Success, "{screen}");
    let recorded = last_sent(&browser, "approve/finish");
    assert_eq!(recorded["request"].as_str(), Some(first.id.as_str()));

    // The next login's request: the recorded assertion replayed on it (after
    // the right number, so a challenge exists) is refused, and so is the
    // same assertion for the request it was made for.
    let mut login = Login::start(&service, "alice", "192.0.2.11");
    let number = login.ask_the_phone();
    let second = phone::wait_for_request(&browser, "192.0.2.11", Duration::from_secs(10));
    let (status, answer) = phone::api(
        port,
        "approve/begin",
        &json!({"app_token": alice_token, "request": second.id, "number": number}),
    );
    assert_eq!(status, 200, "approve/begin with the right number: {answer}");
    let (status, answer) = phone::api(
        port,
        "approve/finish",
        &json!({"app_token": alice_token, "request": second.id, "credential": recorded["credential"]}),
    );
    assert!(
        (400..500).contains(&status),
        "a replayed assertion was taken: {status} {answer}"
    );
    println!("the replayed assertion: {status} {answer}");
    let (status, answer) = phone::api(
        port,
        "approve/finish",
        &json!({"app_token": alice_token, "request": first.id, "credential": recorded["credential"]}),
    );
    assert!(
        (400..500).contains(&status),
        "the assertion replayed on its own request: {status} {answer}"
    );
    let approvals = phone::audit(&env, "approve", "alice");
    assert!(
        approvals
            .iter()
            .any(|l| l.contains("outcome=\"assertion_refused\"")),
        "{approvals:#?}"
    );

    // Bob's phone can neither approve nor deny Alice's request.
    let (status, answer) = phone::api(
        port,
        "approve/begin",
        &json!({"app_token": bob_token, "request": second.id, "number": number}),
    );
    assert!(
        status == 403 || status == 404,
        "Bob's phone began to approve Alice's request: {status} {answer}"
    );
    let (status, answer) = phone::api(
        port,
        "deny",
        &json!({"app_token": bob_token, "request": second.id, "not_me": true}),
    );
    assert!(
        status == 403 || status == 404,
        "Bob's phone denied Alice's request: {status} {answer}"
    );
    let (status, answer) = phone::api(port, "requests", &json!({"app_token": bob_token}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["requests"],
        json!([]),
        "Bob's phone lists Alice's request"
    );

    // Alice's request is still hers to approve, on her phone.
    let (outcome, detail) = phone::pick(&browser, &second.id, number);
    assert_eq!(outcome, "approved", "after the replay: {detail}");
    let (outcome, screen) = login.finish("");
    assert_eq!(outcome, PamOutcome::Success, "{screen}");
}

#[test]
fn an_expired_request_and_a_fourth_open_one_go_back_to_the_code_prompt() {
    if !require("approve_expiry", NEEDS) {
        return;
    }
    // The shortest timeout there is: 10 s.
    let (env, _base, _port) = phone::approve_env("approve_expiry", 10, &[]);
    let t = settled_now(30, 5);
    let carol = env.enroll_active("carol", &[], t - 30);
    let browser = phone::phone_browser("approve_expiry");
    phone::add_authenticator(&browser);
    phone::pair_active(&env, &browser, "carol", "carol-phone");
    let service = env.pam_service("");

    let mut login = Login::start(&service, "carol", "192.0.2.12");
    let asked = Instant::now();
    login.ask_the_phone();
    phone::wait_for_request(&browser, "192.0.2.12", Duration::from_secs(10));
    // Enter without approving: the answer comes when the request expires.
    let from = login.terminal.screen().len();
    login.terminal.type_line("");
    let screen = login
        .terminal
        .expect_after(from, "The request expired", Duration::from_secs(30));
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "expired after {} ms",
        waited.as_millis()
    );
    let screen = login.terminal.expect_after(
        screen.find("The request expired").unwrap_or(from),
        FIRST_PROMPT,
        Duration::from_secs(10),
    );
    println!("after expiry:\n{}", &screen[from..]);
    // The app lists it no more, from its next poll (every 5 s) on.
    let gone = Instant::now() + Duration::from_secs(12);
    while phone::listed(&browser)
        .iter()
        .any(|r| r.text.contains("192.0.2.12"))
    {
        assert!(Instant::now() < gone, "the expired request is still listed");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (outcome, screen) = login.finish(&carol.code_at(settled_now(30, 3)));
    assert_eq!(
        outcome,
        PamOutcome::Success,
        "a code after expiry: {screen}"
    );

    // Three open requests (three logins waiting at the number's prompt, from
    // three addresses): the fourth login gets no request, but the code
    // prompt again, where the next code works.
    let waiting: Vec<Login> = (0..3)
        .map(|i| {
            let mut login = Login::start(&service, "carol", &format!("192.0.2.{}", 20 + i));
            login.ask_the_phone();
            login
        })
        .collect();
    let mut fourth = Login::start(&service, "carol", "192.0.2.30");
    let from = fourth.terminal.screen().len();
    fourth.terminal.type_line("");
    let screen = fourth.terminal.expect_after(
        from,
        "No request can be sent to your phone now. Use the code from the app.",
        Duration::from_secs(20),
    );
    assert!(!screen[from..].contains(SECOND_PROMPT), "{screen}");
    fourth
        .terminal
        .expect_after(from, FIRST_PROMPT, Duration::from_secs(10));
    let requested = phone::audit(&env, "approve_request", "carol");
    assert!(
        requested
            .iter()
            .any(|l| l.contains("outcome=\"approve_too_many_open\"")),
        "{requested:#?}"
    );
    let (outcome, screen) = fourth.finish(&carol.code_at(settled_now(30, 3) + 30));
    assert_eq!(outcome, PamOutcome::Success, "a code instead: {screen}");
    drop(waiting);
}
