//! Self-enrolment as the seeds describe it, in a real browser: the admin's
//! `otpd enroll USER --link` prints a one-time URL; headless Chromium opens
//! it, the QR code is read off a screenshot of the page by `zbarimg`, the
//! code is computed by `oathtool`, typed, "Validate" pressed; the success
//! page shows the recovery codes; the link is dead afterwards; a login
//! through the real libpam then takes the next code, and a recovery code
//! once. Also the Dutch page, and the one neutral page for used, expired,
//! removed and guessed links.
//!
//! The first test checks the harness itself (chromedriver, fantoccini,
//! screenshots, zbarimg, Accept-Language) against a page served by the test.

use otpd_tests::browser::{Browser, BrowserOptions};
use otpd_tests::pages;
use otpd_tests::{require, settled_now, Enrollment, Limits, PamOutcome, Program, TestEnv};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BROWSER: &[Program] = &[
    Program::Chromium,
    Program::Chromedriver,
    Program::Zbarimg,
    Program::Oathtool,
];
const BROWSER_AND_PAM: &[Program] = &[
    Program::Chromium,
    Program::Chromedriver,
    Program::Zbarimg,
    Program::Oathtool,
    Program::Pamtester,
    Program::PamWrapper,
];

use otpd_tests::env::ISSUER;

// ---------------------------------------------------------------------------
// The harness on a page of our own.

/// A page served by a thread of the test on 127.0.0.1: `GET` answers with
/// `page` (where `{accept_language}` becomes the request's header), `POST`
/// with a page that shows the posted body in `#posted`. Only for checking
/// the browser harness; the product's pages are served by otpd.
struct StaticSite {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticSite {
    fn serve(page: String) -> StaticSite {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = answer(stream, &page);
                }
            }
        });
        StaticSite {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(mut stream: TcpStream, page: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while request.len() < head_end + length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if head.starts_with("GET / ") {
        (
            "200 OK",
            page.replace("{accept_language}", &escape(&header("accept-language"))),
        )
    } else if head.starts_with("POST /validate ") {
        let posted = String::from_utf8_lossy(&request[head_end..]).into_owned();
        (
            "200 OK",
            format!(
                "<!doctype html><html lang=\"en\"><body><main id=\"success\">\
                 <p id=\"posted\">{}</p></main></body></html>",
                escape(&posted)
            ),
        )
    } else {
        (
            "404 Not Found",
            "<!doctype html><html><body><main id=\"invalid\">no</main></body></html>".into(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[test]
fn the_browser_harness_reads_a_qr_code_types_clicks_and_sends_accept_language() {
    if !require("the_browser_harness_works", BROWSER) {
        return;
    }
    let started = Instant::now();
    // A real QR code of ours: the SVG that `otpd enroll --qr-svg` writes.
    let env = TestEnv::start("browser_harness");
    let svg_path = env.dir.join("alice.svg");
    let out = env.otpd_expect(
        &[
            "enroll".as_ref(),
            "alice".as_ref(),
            "--qr-svg".as_ref(),
            svg_path.as_os_str(),
        ],
        0,
    );
    let uri = out
        .stdout
        .lines()
        .find(|l| l.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth:// line: {out}"))
        .trim_end()
        .to_owned();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let svg = svg[svg.find("<svg").expect("an <svg> element")..].to_owned();
    let site = StaticSite::serve(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>t</title></head>\
         <body><main id=\"enrol\"><div id=\"qr\">{svg}</div>\
         <pre id=\"accept-language\">{{accept_language}}</pre>\
         <form id=\"validate-form\" method=\"post\" action=\"/validate\">\
         <label for=\"code\">Enter your OTP</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\">\
         <button id=\"validate\" type=\"submit\">Validate</button></form></main></body></html>"
    ));

    let browser = Browser::start("browser_harness");
    browser.open(&site.url("/"));
    assert_eq!(browser.http_status(), 200);
    assert_eq!(browser.html_lang().as_deref(), Some("en"));
    assert_eq!(browser.text("validate"), "Validate");
    let sent = browser.text("accept-language");
    assert!(sent.starts_with("en"), "Accept-Language: {sent:?}");
    let decoded = browser.read_qr_code("qr");
    assert_eq!(decoded, uri, "the QR code read off the screenshot");
    Enrollment::from_uri(&decoded).expect("an otpauth URI");

    browser.fill("code", "123456");
    browser.submit("validate");
    assert_eq!(browser.text("posted"), "code=123456");
    assert!(browser.has("success") && !browser.has("enrol"));

    browser.open(&site.url("/nothing-here"));
    assert_eq!(browser.http_status(), 404, "the status of a 404 page");
    assert!(browser.has("invalid"));
    browser.print_figures();
    drop(browser);

    let dutch = Browser::start_with(
        "browser_harness_nl",
        &BrowserOptions {
            accept_language: "nl".into(),
            ..BrowserOptions::default()
        },
    );
    dutch.open(&site.url("/"));
    let sent = dutch.text("accept-language");
    assert!(
        sent == "nl" || sent.starts_with("nl,") || sent.starts_with("nl;"),
        "Accept-Language of the Dutch browser: {sent:?}"
    );
    dutch.print_figures();
    println!(
        "browser harness checked in {} ms in all",
        started.elapsed().as_millis()
    );
}

// ---------------------------------------------------------------------------
// The product's pages.

/// A daemon with `[web]` ([`pages::WEB_SECTION`]: a loopback port the
/// daemon binds itself); returns it with the address the pages are served
/// on, `http://127.0.0.1:PORT`, once that port accepts connections.
fn web_env(name: &str) -> (TestEnv, String) {
    let env = TestEnv::start_with_config(name, Limits::default(), pages::WEB_SECTION);
    let started = Instant::now();
    let port = pages::port(&env, "http");
    let served = format!("http://127.0.0.1:{port}");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "otpd serves no pages on 127.0.0.1:{port} with [web] configured:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "[{name}] pages served on {served} {} ms after the socket",
        started.elapsed().as_millis()
    );
    (env, served)
}

/// `otpd enroll USER --link EXTRA…`: must succeed and print
/// `{PUBLIC_URL}/enroll/{token}`; returns that link as served on `served`
/// ([`web_env`]).
fn enroll_link(env: &TestEnv, served: &str, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["enroll", user, "--link"];
    args.extend_from_slice(extra);
    let out = env.otpd_expect(&args, 0);
    let url = pages::link_in(&out.stdout)
        .unwrap_or_else(|| panic!("otpd enroll --link printed no http://…/enroll/… URL:\n{out}"));
    let prefix = format!("{}/enroll/", pages::PUBLIC_URL);
    let token = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("the link {url} does not start with {prefix}"));
    assert!(
        token.len() >= 22
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "a token of at least 128 bits, URL-safe: {token:?}"
    );
    format!("{served}{}", pages::path_of(&url))
}

/// The token of a link.
fn token_of(url: &str) -> &str {
    url.rsplit_once("/enroll/").expect("an enrolment link").1
}

/// A token of the same length and alphabet as `token` that no enrolment
/// has: each character moved to another one of its alphabet (lowercase hex
/// when the token is hex, else digits, lower- or uppercase letters) by a
/// pseudo-random amount: a guess that passes any format check and must
/// reach the lookup.
fn guessed_token(token: &str) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    let hex = token.bytes().all(|b| HEX.contains(&b));
    let mut seed = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    ) | 1;
    token
        .chars()
        .map(|c| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let shift = 1 + (seed % 9) as usize;
            let alphabet: &[u8] = match c {
                _ if hex => HEX,
                '0'..='9' => b"0123456789",
                'a'..='z' => b"abcdefghijklmnopqrstuvwxyz",
                'A'..='Z' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                other => return other,
            };
            let at = alphabet
                .iter()
                .position(|&b| char::from(b) == c)
                .expect("c is in its alphabet");
            char::from(alphabet[(at + shift) % alphabet.len()])
        })
        .collect()
}

/// The page's source without `nonce="…"` attributes (a per-response CSP
/// nonce is allowed to differ between two neutral pages; nothing else is).
fn normalised_source(browser: &Browser) -> String {
    let source = browser.source();
    let mut out = String::with_capacity(source.len());
    let mut rest = source.as_str();
    while let Some(at) = rest.find(" nonce=\"") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " nonce=\"".len()..];
        rest = after.find('"').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

/// Asserts that the browser shows the neutral page: `<main id="invalid">`,
/// status 404, no enrolment form, nothing about `user`. Returns its source.
fn assert_neutral(browser: &Browser, what: &str, user: &str) -> String {
    assert!(
        browser.has("invalid"),
        "{what}: not the neutral page (no <main id=\"invalid\">):\n{}",
        browser.source()
    );
    assert_eq!(
        browser.http_status(),
        404,
        "{what}: the neutral page's status"
    );
    for id in ["enrol", "qr", "secret", "validate-form", "success"] {
        assert!(!browser.has(id), "{what}: the neutral page has #{id}");
    }
    let source = normalised_source(browser);
    assert!(
        !source.contains(user),
        "{what}: the neutral page names the user {user}:\n{source}"
    );
    source
}

/// The longest run of base32 letters (A–Z, 2–7) in `text` with its white
/// space taken out: a secret shown in groups of four is one run.
fn longest_base32_run(text: &str) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        if c.is_ascii_uppercase() || ('2'..='7').contains(&c) {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// The page shows no QR code and no key: no `#qr`, no `#secret`, no
/// `<svg>`, no otpauth URI, and no run of base32 as long as a secret in
/// its HTML.
fn assert_no_secret_shown(browser: &Browser, what: &str) {
    for id in ["qr", "secret"] {
        assert!(!browser.has(id), "{what}: the page has #{id}");
    }
    assert!(
        browser.all("svg").is_empty(),
        "{what}: an <svg> on the page"
    );
    let source = browser.source();
    assert!(
        !source.contains("otpauth"),
        "{what}: an otpauth URI:\n{source}"
    );
    assert!(
        longest_base32_run(&source) < 16,
        "{what}: {} base32 letters in a row:\n{source}",
        longest_base32_run(&source)
    );
}

#[test]
fn self_enrollment_in_a_browser_from_the_link_to_a_pam_login() {
    if !require("self_enrolment_in_a_browser", BROWSER_AND_PAM) {
        return;
    }
    let started = Instant::now();
    let (env, served) = web_env("web_flow");
    let url = enroll_link(&env, &served, "alice", &[]);
    let token = token_of(&url).to_owned();
    assert_eq!(
        env.list_entry("alice").expect("alice is listed")["state"],
        "pending",
        "a link leaves the enrolment pending"
    );

    let browser = Browser::start("web_flow");
    browser.open(&url);
    assert!(browser.has("enrol"), "no <main id=\"enrol\">");
    assert_eq!(browser.http_status(), 200);
    assert_eq!(browser.html_lang().as_deref(), Some("en"));
    assert_eq!(browser.text("validate"), "Validate");
    let form = browser.text("validate-form");
    assert!(
        form.contains("Enter your OTP"),
        "the field's label: {form:?}"
    );
    // What a GET shows (and a link scanner, a proxy or the history keep):
    // the steps and a button, never the QR code or the key.
    assert_no_secret_shown(&browser, "the page of the link");
    assert!(!browser.has("opened-before"));
    assert_eq!(browser.text("reveal"), "Show QR code");
    browser.screenshot("enrol-page");

    // "Show QR code": the QR code, read as the phone's camera would.
    browser.submit("reveal");
    assert_eq!(browser.http_status(), 200);
    assert_eq!(
        browser.all("#qr svg").len(),
        1,
        "the QR code is one inline <svg> in #qr"
    );
    assert!(
        !browser.has("opened-before"),
        "the first reveal is no repeat"
    );
    browser.screenshot("revealed");
    let first = Enrollment::from_uri(&browser.read_qr_code("qr")).unwrap_or_else(|e| panic!("{e}"));

    // The link opened again: no secret, but the notice; a second reveal
    // makes a new secret and says the link was opened before.
    browser.open(&url);
    assert_no_secret_shown(&browser, "the link opened again");
    assert!(
        !browser.source().contains(&first.secret),
        "the first secret on a later GET"
    );
    assert!(browser.has("opened-before"), "no notice on the GET");
    browser.submit("reveal");
    let notice = browser.text("opened-before");
    assert!(
        notice.starts_with("This link was opened before, at 20") && notice.contains(" UTC"),
        "the second reveal's notice: {notice:?}"
    );
    browser.screenshot("revealed-again");
    let uri = browser.read_qr_code("qr");
    let enrollment = Enrollment::from_uri(&uri).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(enrollment.secret, first.secret, "two reveals, one secret");
    assert_eq!(enrollment.user, "alice", "{uri}");
    assert_eq!(enrollment.issuer, ISSUER, "{uri}");
    assert!(browser.text("issuer").contains(ISSUER));
    assert!(browser.text("account").contains("alice"));
    // For typing by hand: the same secret, in groups of four.
    let shown = browser.text("secret");
    let groups: Vec<&str> = shown.split_whitespace().collect();
    assert!(
        groups.len() > 1
            && groups[..groups.len() - 1].iter().all(|g| g.len() == 4)
            && groups.last().is_some_and(|g| (1..=4).contains(&g.len())),
        "the secret in groups of four: {shown:?}"
    );
    assert_eq!(
        groups.concat(),
        enrollment.secret,
        "#secret and the QR code"
    );

    // A wrong code: the page with a message (and no secret), still pending.
    let t = settled_now(enrollment.period, 20);
    browser.fill("code", &enrollment.wrong_code(t));
    browser.submit("validate");
    assert!(browser.has("error"), "a wrong code gives no p#error");
    assert!(
        !browser.text("error").trim().is_empty(),
        "#error says nothing"
    );
    browser.screenshot("wrong-code");
    assert!(browser.has("enrol") && browser.has("validate-form"));
    assert!(!browser.has("success"));
    assert_no_secret_shown(&browser, "the wrong-code page");
    assert_eq!(env.list_entry("alice").unwrap()["state"], "pending");

    // The first reveal's code, right for the secret it showed, is refused:
    // only the newest secret can be validated.
    browser.fill("code", &first.code_at(t));
    browser.submit("validate");
    assert!(browser.has("error"), "the first secret's code was taken");
    assert!(!browser.has("success"));
    assert_eq!(env.list_entry("alice").unwrap()["state"], "pending");

    // The right code, computed by oathtool from what the QR code says.
    let t = settled_now(enrollment.period, 15);
    browser.fill("code", &enrollment.code_at(t));
    browser.submit("validate");
    assert!(
        browser.has("success"),
        "the right code gives no success page"
    );
    browser.screenshot("success");
    assert!(!browser.has("error"));
    let codes = browser.texts("#recovery-codes li");
    assert_eq!(codes.len(), 10, "ten recovery codes: {codes:?}");
    // Remembered as secrets (the reader of the pages does), so that every
    // log the secrets check reads is searched for them.
    let listed = pages::recovery_codes_on(&browser.source());
    assert_eq!(
        listed,
        codes
            .iter()
            .map(|c| c.trim().to_owned())
            .collect::<Vec<_>>(),
        "the recovery codes in the page's source and on the screen"
    );
    for code in &codes {
        let parts: Vec<&str> = code.trim().split('-').collect();
        assert!(
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| p.len() == 4 && p.chars().all(|c| c.is_ascii_alphanumeric())),
            "a recovery code like XXXX-XXXX-XXXX: {code:?}"
        );
    }
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), codes.len(), "recovery codes repeat");
    assert!(
        !browser.source().contains(&enrollment.secret),
        "the success page shows the secret"
    );
    assert_eq!(env.list_entry("alice").unwrap()["state"], "active");

    // The link is dead.
    browser.open(&url);
    assert_neutral(&browser, "the used link", "alice");
    browser.screenshot("used-link");

    // A login through the real libpam with the next code, then with a
    // recovery code, which works once.
    let login = env.pam_login(
        "alice",
        &enrollment.code_at(t + enrollment.period),
        "192.0.2.20",
        "",
    );
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let recovery = codes[0].trim();
    let login = env.pam_login("alice", recovery, "192.0.2.21", "");
    assert_eq!(
        login.outcome,
        PamOutcome::Success,
        "a recovery code at the prompt: {}",
        login.output
    );
    let login = env.pam_login("alice", recovery, "192.0.2.21", "");
    assert_eq!(
        login.outcome,
        PamOutcome::AuthErr,
        "the same recovery code twice: {}",
        login.output
    );

    env.assert_log_free_of(&enrollment.secret);
    env.assert_log_free_of(&first.secret);
    env.assert_log_free_of(&token);
    let log = env.log();
    assert!(
        log.contains("op=\"web_reveal\" outcome=\"revealed_again\""),
        "no audit line for the second reveal:\n{log}"
    );
    for code in &codes {
        env.assert_log_free_of(code.trim());
    }
    browser.print_figures();
    println!(
        "self-enrolment from link to login in {} ms",
        started.elapsed().as_millis()
    );
}

#[test]
fn a_dutch_browser_gets_the_dutch_page() {
    if !require("a_dutch_browser_gets_the_dutch_page", BROWSER) {
        return;
    }
    let started = Instant::now();
    let (env, served) = web_env("web_dutch");
    let url = enroll_link(&env, &served, "bob", &[]);
    let browser = Browser::start_with(
        "web_dutch",
        &BrowserOptions {
            accept_language: "nl-NL,nl;q=0.9".into(),
            ..BrowserOptions::default()
        },
    );
    browser.open(&url);
    assert!(browser.has("enrol"), "no <main id=\"enrol\">");
    assert_eq!(browser.html_lang().as_deref(), Some("nl"));
    assert_eq!(browser.text("validate"), "Valideren");
    browser.screenshot("dutch-page");
    let form = browser.text("validate-form");
    assert!(
        form.contains("Voer de tokencode in"),
        "the field's Dutch label: {form:?}"
    );
    let text = browser.page_text();
    for english in ["Enter your OTP", "Validate", "Show QR code"] {
        assert!(
            !text.contains(english),
            "English {english:?} on the Dutch page:\n{text}"
        );
    }
    assert_eq!(browser.text("reveal"), "QR-code tonen");
    browser.submit("reveal");
    assert_eq!(browser.html_lang().as_deref(), Some("nl"));
    // The QR code reads as bob's.
    let enrollment = Enrollment::from_uri(&browser.read_qr_code("qr")).unwrap();
    assert_eq!(enrollment.user, "bob");
    // Opened again: the notice in Dutch.
    browser.open(&url);
    browser.submit("reveal");
    let notice = browser.text("opened-before");
    assert!(
        notice.starts_with("Deze link is al eerder geopend, op 20"),
        "{notice:?}"
    );
    let enrollment = Enrollment::from_uri(&browser.read_qr_code("qr")).unwrap();

    // A wrong code: the message is Dutch too (the page stays Dutch).
    let t = settled_now(enrollment.period, 5);
    browser.fill("code", &enrollment.wrong_code(t));
    browser.submit("validate");
    assert!(browser.has("error"));
    assert_eq!(browser.html_lang().as_deref(), Some("nl"));
    assert_eq!(browser.text("validate"), "Valideren");
    browser.print_figures();
    println!("Dutch page checked in {} ms", started.elapsed().as_millis());
}

#[test]
fn expired_removed_and_guessed_links_get_one_neutral_page() {
    if !require("expired_removed_and_guessed_links", BROWSER) {
        return;
    }
    let started = Instant::now();
    let (env, served) = web_env("web_neutral");
    // The shortest lifetime a link may have is one minute.
    let expiring = enroll_link(&env, &served, "carol", &["--expires", "15s"]);
    let expires_at = Instant::now() + Duration::from_secs(15);
    let removed = enroll_link(&env, &served, "dave", &[]);
    let kept = enroll_link(&env, &served, "erin", &[]);

    let browser = Browser::start("web_neutral");
    // Both links work before anything happens to them.
    for url in [&expiring, &removed] {
        browser.open(url);
        assert!(browser.has("enrol"), "a fresh link shows no enrolment page");
    }

    env.otpd_expect(&["remove", "dave"], 0);
    browser.open(&removed);
    let neutral = assert_neutral(&browser, "the link of a removed user", "dave");

    let guessed = format!("{served}/enroll/{}", guessed_token(token_of(&kept)));
    assert_ne!(guessed, kept);
    browser.open(&guessed);
    let page = assert_neutral(&browser, "a guessed token", "erin");
    assert_eq!(
        page, neutral,
        "the neutral pages differ (guessed vs removed)"
    );

    // Every malformed path gets the same neutral page, status 404 (the
    // pages' fallback): not an error page, nor any other status.
    for path in [
        "/enroll/",
        "/enroll/x",
        "/enroll/%00",
        "/enroll/..%2f..%2fetc%2fpasswd",
    ] {
        browser.open(&format!("{served}{path}"));
        let page = assert_neutral(&browser, path, "erin");
        assert_eq!(page, neutral, "the neutral page of {path} differs");
        assert!(!browser.has("enrol"), "{path} shows an enrolment");
    }

    // The guesses did not hurt the real link next to them.
    browser.open(&kept);
    assert!(browser.has("enrol"), "erin's link died of the guesses");

    let wait = expires_at.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
    println!("waiting {} s for carol's link to expire", wait.as_secs());
    std::thread::sleep(wait);
    browser.open(&expiring);
    let page = assert_neutral(&browser, "an expired link", "carol");
    assert_eq!(
        page, neutral,
        "the neutral pages differ (expired vs removed)"
    );

    browser.print_figures();
    println!(
        "neutral pages checked in {} ms",
        started.elapsed().as_millis()
    );
}

#[test]
fn guessed_tokens_differ_in_every_character() {
    let hex = "0123456789abcdef0f";
    let guess = guessed_token(hex);
    assert_eq!(guess.len(), hex.len());
    assert!(guess
        .chars()
        .zip(hex.chars())
        .all(|(g, t)| g != t && g.is_ascii_hexdigit() && !g.is_ascii_uppercase()));
    let token = "abcXYZ019-_";
    let guess = guessed_token(token);
    assert_eq!(guess.len(), token.len());
    assert!(guess
        .chars()
        .zip(token.chars())
        .all(|(g, t)| g != t || t == '-' || t == '_'));
}
