//! The enrolment pages over real HTTP from the real daemon (`[web]` on a
//! loopback port): the security headers on every answer, one neutral page
//! for every kind of bad link, a guessed token, the link's life cycle from
//! the CLI, audit lines without tokens, and the config rules.

use otpd_tests::ca::TestCa;
use otpd_tests::pages::{self, reveal, secret_on};
use otpd_tests::sms::Outbox;
use otpd_tests::webclient::{self, hidden_field, FORM};
use otpd_tests::{require, settled_now, Limits, Program, TestEnv, PAM};
use std::time::Duration;

/// One HTTP/1.1 request ([`webclient::request`]); returns (status, headers
/// lower-cased, body).
fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let answer = webclient::request(port, method, path, headers, body);
    (answer.status, answer.head, answer.body)
}

/// A daemon serving the pages ([`pages::WEB_SECTION`]) and their port.
fn web_env(name: &str) -> (TestEnv, u16) {
    let env = TestEnv::start_with_config(name, Limits::default(), pages::WEB_SECTION);
    let port = pages::port(&env, "http");
    (env, port)
}

fn assert_security_headers(head: &str, what: &str) {
    for header in [
        "cache-control: no-store",
        "content-security-policy: default-src 'none'",
        "referrer-policy: no-referrer",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(header), "{what}: no {header:?} in\n{head}");
    }
    assert!(
        !head.contains("script-src") || !head.contains("unsafe"),
        "{what}: the policy allows scripts: {head}"
    );
}

/// The longest run of base32 letters (A–Z, 2–7) in `text` with its
/// white space taken out: a secret shown in groups of four is one run.
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

/// What a link scanner gets must hold no secret: no QR code, no key, no
/// otpauth URI, no run of base32 as long as a secret.
fn assert_no_secret(page: &str, what: &str) {
    for needle in ["<svg", "id=\"qr\"", "id=\"secret\"", "otpauth", "secret="] {
        assert!(!page.contains(needle), "{what}: {needle:?} in\n{page}");
    }
    assert!(
        longest_base32_run(page) < 16,
        "{what}: a run of {} base32 letters in\n{page}",
        longest_base32_run(page)
    );
}

#[test]
fn base32_runs_are_measured_without_white_space() {
    assert_eq!(longest_base32_run("JBSW Y3DP EHPK 3PXP"), 16);
    assert_eq!(longest_base32_run("Enter your OTP, QR-code"), 3);
    assert_eq!(longest_base32_run("abc"), 0);
}

#[test]
fn links_headers_and_one_neutral_page_for_every_bad_link() {
    let (env, port) = web_env("web_http");
    let path = pages::enroll_link_path(&env, "alice", &["--expires", "10m"]);
    let token = path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(token.len(), 32, "128 bits, hex: {token}");
    assert_eq!(env.list_entry("alice").unwrap()["state"], "pending");

    let (status, head, page) = http(port, "GET", &path, "", "");
    assert_eq!(status, 200, "{page}");
    assert_security_headers(&head, "the enrolment page");
    assert_no_secret(&page, "GET of a link");
    assert!(page.contains("id=\"reveal-form\""), "{page}");
    assert!(page.contains("Enter your OTP") && page.contains("Validate"));
    assert!(!page.contains("<script"), "no JavaScript");
    assert!(
        !head.contains("strict-transport-security"),
        "HSTS over plain HTTP: {head}"
    );

    // Unknown tokens, a random guess, other paths and methods: one page.
    let (neutral_status, neutral_head, neutral) = http(
        port,
        "GET",
        "/enroll/00000000000000000000000000000000",
        "",
        "",
    );
    assert_eq!(neutral_status, 404);
    assert_security_headers(&neutral_head, "the neutral page");
    let mut guess = token.clone().into_bytes();
    guess[0] = if guess[0] == b'a' { b'b' } else { b'a' };
    let guessed = format!("/enroll/{}", String::from_utf8(guess).unwrap());
    let reveal = format!("{path}/reveal");
    for (method, path) in [
        ("GET", guessed.as_str()),
        ("GET", "/enroll/not-a-token"),
        ("GET", "/"),
        ("GET", "/admin"),
        ("DELETE", path.as_str()),
        ("GET", reveal.as_str()),
    ] {
        let (status, _, body) = http(port, method, path, "", "");
        assert_eq!(
            (status, body.as_str()),
            (404, neutral.as_str()),
            "{method} {path}"
        );
    }

    // Dutch by Accept-Language.
    let (_, _, dutch) = http(
        port,
        "GET",
        &path,
        "Accept-Language: nl-NL,nl;q=0.9,en;q=0.5\r\n",
        "",
    );
    assert!(
        dutch.contains("lang=\"nl\"") && dutch.contains("Valideren"),
        "{dutch}"
    );

    // A wrong code on the page: said so, the link still works.
    let form = "application/x-www-form-urlencoded";
    let (status, head, body) = http(
        port,
        "POST",
        &path,
        &format!("Content-Type: {form}\r\n"),
        "code=000000",
    );
    assert_eq!(status, 200, "{body}");
    assert_security_headers(&head, "the wrong-code page");
    assert!(body.contains("id=\"error\""), "{body}");
    assert_eq!(env.list_entry("alice").unwrap()["state"], "pending");

    // enroll --link again (--force not needed while pending): the old link dies.
    let newer = pages::enroll_link_path(&env, "alice", &[]);
    let (status, _, body) = http(port, "GET", &path, "", "");
    assert_eq!(
        (status, body.as_str()),
        (404, neutral.as_str()),
        "the replaced link"
    );
    assert_eq!(http(port, "GET", &newer, "", "").0, 200);

    // A removed user's link is dead too.
    env.otpd_expect(&["remove", "alice"], 0);
    let (status, _, body) = http(port, "GET", &newer, "", "");
    assert_eq!(
        (status, body.as_str()),
        (404, neutral.as_str()),
        "removed user"
    );

    // An expired link: the same neutral page.
    let short = pages::enroll_link_path(&env, "dave", &["--expires", "5s"]);
    assert_eq!(http(port, "GET", &short, "", "").0, 200);
    std::thread::sleep(Duration::from_millis(6500));
    let (status, _, body) = http(port, "GET", &short, "", "");
    assert_eq!(
        (status, body.as_str()),
        (404, neutral.as_str()),
        "expired link"
    );

    // Audit lines for views, never the token.
    let log = env.log();
    assert!(log.contains("op=\"web_view\" outcome=\"page\""), "{log}");
    assert!(
        log.contains("op=\"web_view\" outcome=\"invalid_link\""),
        "{log}"
    );
    assert!(
        log.contains("op=\"web_validate\" outcome=\"wrong_code\""),
        "{log}"
    );
    env.assert_log_free_of(&token);
    env.assert_log_free_of(newer.rsplit('/').next().unwrap());
}

#[test]
fn a_valid_code_on_the_page_activates_once_and_gives_recovery_codes() {
    if !require("page validation", PAM) {
        return;
    }
    let (env, port) = web_env("web_validate");
    let path = pages::enroll_link_path(&env, "bob", &[]);
    // The secret is on the revealed page in groups of four; oathtool
    // computes the code.
    let secret = reveal(port, &path, "");
    let t = settled_now(30, 5);
    let code = otpd_tests::code_at(&secret, "SHA1", 6, 30, t);
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let (status, head, body) = http(port, "POST", &path, form, &format!("code={code}"));
    assert_eq!(status, 200, "{body}");
    assert_security_headers(&head, "the success page");
    assert!(body.contains("id=\"success\""), "{body}");
    // Each remembered as a secret by the reader of the pages.
    let codes = pages::recovery_codes_on(&body);
    assert_eq!(codes.len(), 10, "{body}");
    assert_eq!(env.list_entry("bob").unwrap()["state"], "active");
    assert_eq!(env.list_entry("bob").unwrap()["recovery_codes"], 10);
    // The link is dead, and the page's code was used.
    assert_eq!(http(port, "GET", &path, "", "").0, 404);
    assert_eq!(
        http(port, "POST", &path, form, &format!("code={code}")).0,
        404
    );
    let login = env.pam_login("bob", &code, "192.0.2.70", "");
    assert_eq!(
        login.outcome,
        otpd_tests::PamOutcome::AuthErr,
        "{}",
        login.output
    );
    let next = otpd_tests::code_at(&secret, "SHA1", 6, 30, t + 30);
    let login = env.pam_login("bob", &next, "192.0.2.70", "");
    assert_eq!(
        login.outcome,
        otpd_tests::PamOutcome::Success,
        "{}",
        login.output
    );
    env.assert_log_free_of(&secret);
}

#[test]
fn links_need_public_url_and_plain_http_needs_loopback() {
    let env = TestEnv::start("web_config");
    let out = env.otpd_expect(&["enroll", "carol", "--link"], 2);
    assert!(out.stderr.contains("public_url"), "{out}");
    assert!(
        env.list_entry("carol").is_none(),
        "nothing stored: {:?}",
        env.list()
    );
    let out = env.otpd_expect(&["enroll", "carol", "--link", "--expires", "40days"], 2);
    assert!(
        out.stderr.contains("public_url") || out.stderr.contains("30 days"),
        "{out}"
    );

    let bad = env.dir.join("bad.toml");
    for (text, expected) in [
        (
            "[web]\nlisten = \"0.0.0.0:8080\"\npublic_url = \"https://x.example\"\n",
            "not a loopback address",
        ),
        ("[web]\nlisten = \"127.0.0.1:8080\"\n", "public_url is not"),
        (
            "[web]\npublic_url = \"otp.example.com\"\n",
            "must start with https://",
        ),
        (
            "[web]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://x\"\ntls_cert = \"/x\"\n",
            "go together",
        ),
        ("[sms]\ncommand = \"send-sms\"\n", "absolute path"),
        ("[sms]\nmessage = \"no code here\"\n", "{code}"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let mut cmd = std::process::Command::new(otpd_tests::programs::otpd_binary());
        cmd.arg("--config").arg(&bad).arg("check-config");
        let out = otpd_tests::process::run(cmd, b"", Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{text}: {out}");
        assert!(out.stderr.contains(expected), "{text}: {out}");
    }
}

/// The value of the hidden `session` field in a page.
fn session_in(page: &str) -> String {
    page.split("name=\"session\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no session field in {page}"))
        .to_owned()
}

#[test]
fn the_page_registers_a_phone_after_validation_when_texts_are_configured() {
    if !require("page phone step", &[Program::Oathtool]) {
        return;
    }
    let probe = TestEnv::without_daemon("web_phone_probe", &Limits::default());
    let outbox = Outbox::create(&probe.dir);
    let env = TestEnv::start_with_config(
        "web_phone",
        Limits::default(),
        &format!(
            "{}[sms]\ncommand = \"{}\"\n",
            pages::WEB_SECTION,
            outbox.script.display()
        ),
    );
    let port = pages::port(&env, "http");
    let path = pages::enroll_link_path(&env, "erin", &[]);
    let secret = reveal(port, &path, "Accept-Language: nl\r\n");
    let t = settled_now(30, 5);
    let form = "Content-Type: application/x-www-form-urlencoded\r\nAccept-Language: nl\r\n";
    let code = otpd_tests::code_at(&secret, "SHA1", 6, 30, t);
    let (_, _, success) = http(port, "POST", &path, form, &format!("code={code}"));
    assert!(success.contains("id=\"phone-form\""), "{success}");
    let session = session_in(&success);

    let (status, _, bad) = http(
        port,
        "POST",
        "/phone",
        form,
        &format!("session={session}&number=0612"),
    );
    assert_eq!(status, 200, "{bad}");
    assert!(bad.contains("id=\"error\""), "{bad}");
    let (_, _, sent) = http(
        port,
        "POST",
        "/phone",
        form,
        &format!("session={session}&number=%2B31612345678"),
    );
    assert!(
        sent.contains("id=\"phone-code\"") && sent.contains("Verifiëren"),
        "{sent}"
    );
    let (number, code) = outbox.text(1);
    assert_eq!(number, "+31612345678");
    let wrong = otpd_tests::totp::wrong_code_besides(std::slice::from_ref(&code), 6);
    let (_, _, wrong) = http(
        port,
        "POST",
        "/phone/verify",
        form,
        &format!("session={session}&code={wrong}"),
    );
    assert!(wrong.contains("id=\"error\""), "{wrong}");
    let (_, _, done) = http(
        port,
        "POST",
        "/phone/verify",
        form,
        &format!("session={session}&code={code}"),
    );
    assert!(done.contains("id=\"phone-done\""), "{done}");
    assert_eq!(env.list_entry("erin").unwrap()["phone"], true);
    // The session is spent.
    let (status, _, _) = http(
        port,
        "POST",
        "/phone",
        form,
        &format!("session={session}&number=%2B31612345678"),
    );
    assert_eq!(status, 404);
    env.assert_log_free_of(&session);
    env.assert_log_free_of(&code);
}

#[test]
fn a_link_scanner_gets_no_secret_and_each_reveal_makes_a_new_one() {
    if !require(
        "reveals on the page",
        &[Program::Oathtool, Program::Pamtester, Program::PamWrapper],
    ) {
        return;
    }
    let (env, port) = web_env("web_reveal");
    let path = pages::enroll_link_path(&env, "frank", &[]);
    let token = path.rsplit('/').next().unwrap().to_owned();
    let reveal_path = format!("{path}/reveal");

    // What a mail scanner, a proxy or the browser's history gets: GETs,
    // each with a view field of its own, and never the secret.
    let mut views = Vec::new();
    for n in 0..3 {
        let (status, _, page) = http(port, "GET", &path, "", "");
        assert_eq!(status, 200, "{page}");
        assert_no_secret(&page, &format!("GET {n} of a fresh link"));
        assert!(!page.contains("id=\"opened-before\""), "{page}");
        views.push(hidden_field(&page, "view").expect("a view field"));
    }
    views.sort();
    views.dedup();
    assert_eq!(views.len(), 3, "every view gets its own field: {views:?}");
    // HEAD too.
    let (status, _, body) = http(port, "HEAD", &path, "", "");
    assert_eq!((status, body.as_str()), (200, ""));

    // A POST without a view of this link's page, or with a made-up one,
    // reveals nothing: the page again, saying it was out of date.
    for form in [
        "",
        "view=",
        "view=0123456789abcdef0123456789abcdef",
        "code=123456",
    ] {
        let (status, _, page) = http(port, "POST", &reveal_path, FORM, form);
        assert_eq!(status, 200, "{form}: {page}");
        assert_no_secret(&page, &format!("reveal with {form:?}"));
        assert!(page.contains("id=\"error\""), "{form}: {page}");
        assert!(page.contains("id=\"reveal-form\""), "{form}: {page}");
    }
    // The view of another link is not one of this link's.
    let other = pages::enroll_link_path(&env, "grace", &[]);
    let (_, _, other_page) = http(port, "GET", &other, "", "");
    let other_view = hidden_field(&other_page, "view").unwrap();
    let (_, _, page) = http(
        port,
        "POST",
        &reveal_path,
        FORM,
        &format!("view={other_view}"),
    );
    assert_no_secret(&page, "a view of another link");

    // The first reveal: the QR code and the key, no "opened before".
    let (_, _, page) = http(port, "GET", &path, "", "");
    let first_view = hidden_field(&page, "view").unwrap();
    let (status, head, first) = http(
        port,
        "POST",
        &reveal_path,
        FORM,
        &format!("view={first_view}"),
    );
    assert_eq!(status, 200, "{first}");
    assert_security_headers(&head, "the revealed page");
    assert!(
        first.contains("id=\"qr\"") && first.contains("<svg"),
        "{first}"
    );
    assert!(!first.contains("id=\"opened-before\""), "{first}");
    let first_secret = secret_on(&first);

    // The same view once more (a reload, the back button): nothing new.
    let (_, _, again) = http(
        port,
        "POST",
        &reveal_path,
        FORM,
        &format!("view={first_view}"),
    );
    assert_no_secret(&again, "the same view twice");

    // A later GET shows neither secret, and says the link was opened.
    let (_, _, page) = http(port, "GET", &path, "", "");
    assert_no_secret(&page, "GET after a reveal");
    assert!(!page.contains(&first_secret[..16]), "{page}");
    assert!(page.contains("id=\"opened-before\""), "{page}");
    let second_view = hidden_field(&page, "view").unwrap();

    // The second reveal: a new secret, and the notice.
    let (status, _, second) = http(
        port,
        "POST",
        &reveal_path,
        FORM,
        &format!("view={second_view}"),
    );
    assert_eq!(status, 200, "{second}");
    let second_secret = secret_on(&second);
    assert_ne!(second_secret, first_secret, "a reveal makes a new secret");
    let notice = second
        .split("id=\"opened-before\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no notice on the second reveal:\n{second}"));
    assert!(
        notice.contains("This link was opened before, at 20") && notice.contains(" UTC"),
        "{notice}"
    );
    // The Dutch notice.
    let (_, _, dutch) = http(port, "GET", &path, "Accept-Language: nl\r\n", "");
    assert!(
        dutch.contains("Deze link is al eerder geopend, op 20"),
        "{dutch}"
    );

    // Only the newest secret validates: the first one's code is a wrong
    // code (and the answer shows no secret), the second one's activates.
    let t = settled_now(30, 5);
    let old_code = otpd_tests::code_at(&first_secret, "SHA1", 6, 30, t);
    let (status, _, refused) = http(port, "POST", &path, FORM, &format!("code={old_code}"));
    assert_eq!(status, 200, "{refused}");
    assert!(refused.contains("id=\"error\""), "{refused}");
    assert_no_secret(&refused, "the wrong-code page");
    assert_eq!(env.list_entry("frank").unwrap()["state"], "pending");
    let code = otpd_tests::code_at(&second_secret, "SHA1", 6, 30, t);
    let (_, _, success) = http(port, "POST", &path, FORM, &format!("code={code}"));
    assert!(success.contains("id=\"success\""), "{success}");
    assert_eq!(env.list_entry("frank").unwrap()["state"], "active");
    // The first secret does not log in either.
    let login = env.pam_login(
        "frank",
        &otpd_tests::code_at(&first_secret, "SHA1", 6, 30, t + 30),
        "192.0.2.80",
        "",
    );
    assert_eq!(
        login.outcome,
        otpd_tests::PamOutcome::AuthErr,
        "{}",
        login.output
    );

    let log = env.log();
    for outcome in ["revealed", "revealed_again", "stale_view"] {
        assert!(
            log.contains(&format!("op=\"web_reveal\" outcome=\"{outcome}\"")),
            "no web_reveal {outcome} audit line:\n{log}"
        );
    }
    for secret in [
        &first_secret,
        &second_secret,
        &token,
        &first_view,
        &second_view,
    ] {
        env.assert_log_free_of(secret);
    }
}

/// A certificate for localhost and 127.0.0.1 from a test CA
/// ([`TestCa`]), as (cert, key).
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut ca = TestCa::root(dir, "ca", "otpd test CA for the HSTS header");
    let issued = ca.issue_server("web");
    ca.forget_key();
    issued
}

/// One request over TLS with `openssl s_client`; returns what it printed
/// (the response, head and body).
fn https(port: u16, path: &str) -> String {
    let mut cmd = std::process::Command::new(Program::Openssl.path());
    cmd.args(["s_client", "-quiet", "-ign_eof", "-servername", "localhost"])
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let out = otpd_tests::process::run(cmd, request.as_bytes(), Duration::from_secs(30));
    out.stdout.clone()
}

#[test]
fn https_pages_send_hsts_and_plain_ones_do_not() {
    if !require("HSTS", &[Program::Openssl]) {
        return;
    }
    let probe = TestEnv::without_daemon("web_hsts_probe", &Limits::default());
    let (cert, key) = certificate(&probe.dir);
    let env = TestEnv::start_with_config(
        "web_hsts",
        Limits::default(),
        &format!(
            "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://localhost\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let port = pages::port(&env, "https");
    let mut answered = String::new();
    for _ in 0..100 {
        answered = https(port, "/otpd.css");
        if answered.starts_with("HTTP/1.1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let path = pages::enroll_link_path(&env, "heidi", &[]);
    for (what, answer) in [
        ("the stylesheet", answered),
        ("a link", https(port, &path)),
        ("the neutral page", https(port, "/nowhere")),
    ] {
        let head = answer.split("\r\n\r\n").next().unwrap().to_lowercase();
        assert!(head.starts_with("http/1.1 "), "{what}: {answer}");
        assert!(
            head.contains("strict-transport-security: max-age=31536000"),
            "{what}: no HSTS over TLS:\n{head}"
        );
    }
}

#[test]
fn plain_http_public_urls_off_this_host_are_a_warning() {
    let env = TestEnv::without_daemon("web_http_warning", &Limits::default());
    let config = env.dir.join("check.toml");
    let base = std::fs::read_to_string(&env.config).unwrap();
    for (url, warned) in [
        ("http://otp.example.com", true),
        ("http://192.0.2.7:8080/pages", true),
        ("http://[2001:db8::1]:8080", true),
        ("http://user@otp.example.com", true),
        ("https://otp.example.com", false),
        ("http://127.0.0.1:8080", false),
        ("http://127.8.9.10", false),
        ("http://localhost:8080/", false),
        ("http://LOCALHOST", false),
        ("http://[::1]:8080", false),
    ] {
        std::fs::write(&config, format!("{base}\n[web]\npublic_url = \"{url}\"\n")).unwrap();
        let mut cmd = std::process::Command::new(otpd_tests::programs::otpd_binary());
        cmd.arg("--config").arg(&config).arg("check-config");
        let out = otpd_tests::process::run(cmd, b"", Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "{url}: {out}");
        let said = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            said.contains("warning: [web] public_url"),
            warned,
            "{url}: {out}"
        );
        if warned {
            assert!(said.contains(url), "{url}: {out}");
        }
    }

    // At start, in the log.
    let env = TestEnv::start_with_config(
        "web_http_warning_log",
        Limits::default(),
        "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://otp.example.com\"\n",
    );
    let started = std::time::Instant::now();
    while !env.log().contains("public_url") && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = env.log();
    assert!(
        log.contains("WARN") && log.contains("[web] public_url = \"http://otp.example.com\""),
        "{log}"
    );
}
