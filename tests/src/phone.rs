//! The phone of "approve on your phone", played by headless Chromium: a
//! daemon whose pages are served at a host name (passkeys need one:
//! `http://localhost:PORT`, a secure context in Chromium), a WebDriver
//! virtual authenticator (CTAP2, internal transport, a resident key, user
//! verification that always succeeds) standing in for the phone's
//! fingerprint, and the steps a person takes in the app: pair, pick a
//! number, deny.
//!
//! Every step goes through the app's own page and script (app.js); the test
//! only clicks, and reads what the page shows (`#status[data-outcome]`, the
//! `section.request` elements) or keeps (the app token in localStorage).

use crate::browser::{Browser, BrowserOptions, COMMAND_TIMEOUT};
use crate::env::TestEnv;
use crate::webclient;
use crate::Limits;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The phone's window: an iPhone 12-14 sized viewport in CSS pixels.
pub const PHONE_WINDOW: (u32, u32) = (390, 844);

/// The `[approve] contact` of [`approve_section`].
pub const CONTACT: &str = "mailto:admin@example.org";

/// A `[web]` section on 127.0.0.1:`port` with `public_url =
/// http://localhost:PORT` (the passkeys' relying party is `localhost`,
/// their origin the URL's), and `[approve]` with `timeout` seconds and
/// `push_hosts` (whole TOML strings, e.g. a push stand-in's host entry).
pub fn approve_section(port: u16, timeout: u64, push_hosts: &[String]) -> String {
    let hosts: Vec<String> = push_hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://localhost:{port}\"\n\n\
         [approve]\ncontact = \"{CONTACT}\"\ntimeout = \"{timeout}s\"\npush_hosts = [{}]\n",
        hosts.join(", ")
    )
}

/// A daemon with [`approve_section`] on a port that was free a moment ago
/// (`public_url` must name the port, so the daemon cannot bind port 0);
/// returns it with the pages' base URL `http://localhost:PORT` and the port,
/// once the port answers.
pub fn approve_env(name: &str, timeout: u64, push_hosts: &[String]) -> (TestEnv, String, u16) {
    let mut env = TestEnv::without_daemon(name, &Limits::default());
    let (base, port) = start_approve(&mut env, timeout, push_hosts);
    (env, base, port)
}

/// Adds [`approve_section`] to `env`'s config (a daemon not started yet,
/// e.g. one with a private host's launcher) and starts its daemon; returns
/// the pages' base URL and port once the port answers.
pub fn start_approve(env: &mut TestEnv, timeout: u64, push_hosts: &[String]) -> (String, u16) {
    let port = crate::net::free_port();
    env.append_config(&approve_section(port, timeout, push_hosts));
    env.spawn_daemon();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "otpd serves no pages on 127.0.0.1:{port}:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (format!("http://localhost:{port}"), port)
}

/// `otpd enroll USER --approver --link` on `env`: the pairing URL it printed
/// (remembered as a secret).
pub fn pairing_link(env: &TestEnv, user: &str) -> String {
    let out = env.otpd_expect(&["enroll", user, "--approver", "--link"], 0);
    let url = out
        .stdout
        .split_whitespace()
        .find(|w| w.contains("/approve/pair/"))
        .unwrap_or_else(|| panic!("no pairing link printed:\n{out}"))
        .trim_end_matches(['.', ',', ')'])
        .to_owned();
    crate::secrets::remember_from_output(&url);
    url
}

/// Pairs a phone for `user` by the admin's link in `browser` (with its
/// virtual authenticator) and approves the test request, so that the phone
/// is active.
pub fn pair_active(env: &TestEnv, browser: &Browser, user: &str, name: &str) {
    pair(browser, &pairing_link(env, user), name);
    let test = wait_for_request(browser, "", Duration::from_secs(10));
    let (outcome, detail) = pick(browser, &test.id, test.numbers[0]);
    assert_eq!(outcome, "approved", "the test request: {detail}");
}

/// A browser the size of a phone: a viewport of [`PHONE_WINDOW`] CSS
/// pixels, as a phone (headless Chromium keeps its window at least 500
/// pixels wide, so the viewport is set with Chrome's DevTools
/// `Emulation.setDeviceMetricsOverride` through chromedriver).
pub fn phone_browser(name: &str) -> Browser {
    let browser = Browser::start_with(
        name,
        &BrowserOptions {
            window: PHONE_WINDOW,
            ..BrowserOptions::default()
        },
    );
    let (width, height) = PHONE_WINDOW;
    browser.session_command(
        "POST",
        "goog/cdp/execute",
        Some(json!({
            "cmd": "Emulation.setDeviceMetricsOverride",
            "params": { "width": width, "height": height, "deviceScaleFactor": 1, "mobile": true },
        })),
    );
    browser
}

/// Adds WebDriver's virtual authenticator to `browser` (CTAP2, internal
/// transport, resident keys, user verification that succeeds: the phone's
/// fingerprint); returns its id.
pub fn add_authenticator(browser: &Browser) -> String {
    let value = browser.session_command(
        "POST",
        "webauthn/authenticator",
        Some(json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
        })),
    );
    value
        .as_str()
        .unwrap_or_else(|| panic!("no authenticator id: {value}"))
        .to_owned()
}

/// The credentials the virtual authenticator `id` holds (WebDriver's
/// Credential Parameters: credentialId, rpId, signCount …).
pub fn credentials(browser: &Browser, id: &str) -> Vec<Value> {
    let value = browser.session_command(
        "GET",
        &format!("webauthn/authenticator/{id}/credentials"),
        None,
    );
    value.as_array().cloned().unwrap_or_default()
}

/// Waits (up to `limit`) until `script` (a function body returning a value)
/// returns something other than null, false or ""; returns it.
pub fn wait_for_script(browser: &Browser, what: &str, script: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let value = browser.script(script);
        let done = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if done {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "[{}] {what}: not within {} s; the page ({}) shows:\n{}",
            browser.name,
            limit.as_secs(),
            browser.current_url(),
            browser.source()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens the pairing link `url` (at the pages' own origin), names the phone
/// `name`, presses "Turn on sign-in approvals" and waits for the app page.
/// Panics with the page's error when pairing fails.
pub fn pair(browser: &Browser, url: &str, name: &str) {
    browser.open(url);
    assert!(
        browser.has("pair") && browser.has("turn-on"),
        "not the pairing page:\n{}",
        browser.source()
    );
    if browser.has("phone-name") {
        browser.fill("phone-name", name);
    }
    browser.click("turn-on");
    // Either the app page (main#app) or an error in #status.
    let outcome = wait_for_script(
        browser,
        "pairing",
        "if (document.getElementById('app')) return 'app';\
         const s = document.getElementById('status');\
         if (s && s.dataset.outcome === 'error') return 'error: ' + s.textContent + ' / ' + (s.dataset.error || '');\
         return null;",
        COMMAND_TIMEOUT,
    );
    assert_eq!(
        outcome,
        Value::String("app".into()),
        "pairing failed on the page"
    );
}

/// The app token the pairing left in localStorage.
pub fn app_token(browser: &Browser) -> String {
    let token = browser.script("return localStorage.getItem('otpd-app-token');");
    let token = token
        .as_str()
        .unwrap_or_else(|| panic!("no app token in localStorage: {token}"))
        .to_owned();
    crate::secrets::remember(&token);
    token
}

/// A request as the app page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// `data-id`.
    pub id: String,
    /// The numbers of its `button.number`s.
    pub numbers: Vec<u32>,
    /// The section's text (user, host, service, source, time).
    pub text: String,
}

/// The requests the app page lists now.
pub fn listed(browser: &Browser) -> Vec<Listed> {
    let value = browser.script(
        "return Array.from(document.querySelectorAll('section.request')).map((s) => ({\
           id: s.dataset.id,\
           numbers: Array.from(s.querySelectorAll('button.number')).map((b) => Number(b.dataset.number)),\
           text: s.innerText }));",
    );
    value
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| Listed {
            id: r["id"].as_str().unwrap_or_default().to_owned(),
            numbers: r["numbers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect(),
            text: r["text"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Waits (up to `limit`; the page polls every 2 s) until the app lists a
/// request whose text contains `containing`; returns it.
pub fn wait_for_request(browser: &Browser, containing: &str, limit: Duration) -> Listed {
    let started = Instant::now();
    loop {
        if let Some(found) = listed(browser)
            .into_iter()
            .find(|r| r.text.contains(containing))
        {
            return found;
        }
        assert!(
            started.elapsed() < limit,
            "[{}] the app listed no request with {containing:?} within {} s:\n{}",
            browser.name,
            limit.as_secs(),
            browser.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Clears `#status`'s outcome, runs `act`, and waits for the next final
/// outcome (`approved`, `denied`, `wrong_number`, `error`); returns it with
/// the status's `data-error`.
fn outcome_of(browser: &Browser, act: impl FnOnce()) -> (String, String) {
    browser.script(
        "const s = document.getElementById('status'); delete s.dataset.outcome; return null;",
    );
    act();
    let value = wait_for_script(
        browser,
        "an outcome in #status",
        "const s = document.getElementById('status');\
         const o = s.dataset.outcome;\
         return o && o !== 'working' ? [o, s.dataset.error || ''] : null;",
        COMMAND_TIMEOUT,
    );
    (
        value[0].as_str().unwrap_or_default().to_owned(),
        value[1].as_str().unwrap_or_default().to_owned(),
    )
}

/// Clicks the element matching `selector` (a real WebDriver click).
pub fn click(browser: &Browser, selector: &str) {
    browser.click_css(selector);
}

/// Picks `number` on request `id` (the passkey confirms it); returns the
/// outcome and its detail.
pub fn pick(browser: &Browser, id: &str, number: u32) -> (String, String) {
    outcome_of(browser, || {
        click(
            browser,
            &format!("section.request[data-id=\"{id}\"] button.number[data-number=\"{number}\"]"),
        );
    })
}

/// Denies request `id`, ticking "This wasn't me" when `not_me`.
pub fn deny(browser: &Browser, id: &str, not_me: bool) -> (String, String) {
    outcome_of(browser, || {
        if not_me {
            click(
                browser,
                &format!("section.request[data-id=\"{id}\"] input.not-me"),
            );
        }
        click(
            browser,
            &format!("section.request[data-id=\"{id}\"] button.deny"),
        );
    })
}

/// POSTs `body` as JSON to the app's API at `/approve/api/{path}` on
/// 127.0.0.1:`port`; returns the status and the JSON answer.
pub fn api(port: u16, path: &str, body: &Value) -> (u16, Value) {
    let answer = webclient::request(
        port,
        "POST",
        &format!("/approve/api/{path}"),
        &format!("Host: localhost:{port}\r\nContent-Type: application/json\r\n"),
        &body.to_string(),
    );
    let json = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, json)
}

/// The two-digit number in a prompt `… choose 47 to approve …`.
pub fn number_in(prompt: &str) -> Option<u32> {
    let after = prompt
        .rsplit_once("choose ")
        .map(|(_, rest)| rest)
        .or_else(|| {
            // Dutch: "Kies 47 op uw telefoon …"
            prompt.rsplit_once("Kies ").map(|(_, rest)| rest)
        })?;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
}

/// The daemon's audit lines with `op="OP"` about `user`.
pub fn audit(env: &TestEnv, op: &str, user: &str) -> Vec<String> {
    env.log()
        .lines()
        .filter(|l| l.contains(&format!("op=\"{op}\"")) && l.contains(&format!("\"{user}\"")))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_is_read_from_the_prompt() {
        assert_eq!(
            number_in("On your phone, choose 47 to approve, then press Enter: "),
            Some(47)
        );
        assert_eq!(
            number_in("(ann@127.0.0.1) On your phone, choose 08 to approve, then press Enter: "),
            Some(8)
        );
        assert_eq!(
            number_in("Kies 12 op uw telefoon om goed te keuren en druk dan op Enter: "),
            Some(12)
        );
        assert_eq!(number_in("Verification code: "), None);
    }
}
