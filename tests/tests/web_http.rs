//! The enrolment pages over real HTTP from the real daemon (`[web]` on a
//! loopback port): the security headers on every answer, one neutral page
//! for every kind of bad link, a guessed token, the link's life cycle from
//! the CLI, audit lines without tokens, and the config rules.

use otpd_tests::{require, settled_now, Limits, Program, TestEnv};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; returns (status, headers lower-cased, body).
fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the pages");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, head.to_lowercase(), body.to_owned())
}

fn web_env(name: &str) -> (TestEnv, u16) {
    let port = free_port();
    let env = TestEnv::start_with_config(
        name,
        Limits::default(),
        &format!(
            "[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n"
        ),
    );
    (env, port)
}

/// The link `otpd enroll USER --link EXTRA…` printed, as a path.
fn link_path(env: &TestEnv, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["enroll", user, "--link"];
    args.extend_from_slice(extra);
    let out = env.otpd_expect(&args, 0);
    let url = out
        .stdout
        .split_whitespace()
        .find(|w| w.contains("/enroll/"))
        .unwrap_or_else(|| panic!("no link printed: {out}"));
    url.split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| format!("/{path}"))
        .unwrap()
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

#[test]
fn links_headers_and_one_neutral_page_for_every_bad_link() {
    let (env, port) = web_env("web_http");
    let path = link_path(&env, "alice", &["--expires", "10m"]);
    let token = path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(token.len(), 32, "128 bits, hex: {token}");
    assert_eq!(env.list_entry("alice").unwrap()["state"], "pending");

    let (status, head, page) = http(port, "GET", &path, "", "");
    assert_eq!(status, 200, "{page}");
    assert_security_headers(&head, "the enrolment page");
    assert!(
        page.contains("id=\"qr\"") && page.contains("<svg"),
        "{page}"
    );
    assert!(page.contains("Enter your OTP") && page.contains("Validate"));
    assert!(!page.contains("<script"), "no JavaScript");

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
    for (method, path) in [
        ("GET", guessed.as_str()),
        ("GET", "/enroll/not-a-token"),
        ("GET", "/"),
        ("GET", "/admin"),
        ("DELETE", path.as_str()),
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
    let newer = link_path(&env, "alice", &[]);
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
    let short = link_path(&env, "dave", &["--expires", "5s"]);
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
    assert!(log.contains("op=\"web_view\" outcome=\"shown\""), "{log}");
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
    if !require(
        "page validation",
        &[Program::Oathtool, Program::Pamtester, Program::PamWrapper],
    ) {
        return;
    }
    let (env, port) = web_env("web_validate");
    let path = link_path(&env, "bob", &[]);
    let (_, _, page) = http(port, "GET", &path, "", "");
    // The secret is on the page in groups of four; oathtool computes the code.
    let secret: String = page
        .split("id=\"secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the secret on the page")
        .split_whitespace()
        .collect();
    let t = settled_now(30, 5);
    let code = otpd_tests::code_at(&secret, "SHA1", 6, 30, t);
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let (status, head, body) = http(port, "POST", &path, form, &format!("code={code}"));
    assert_eq!(status, 200, "{body}");
    assert_security_headers(&head, "the success page");
    assert!(body.contains("id=\"success\""), "{body}");
    let codes = body.matches("<li><code>").count();
    assert_eq!(codes, 10, "{body}");
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
    let port = free_port();
    let probe = TestEnv::without_daemon("web_phone_probe", &Limits::default());
    let outbox = probe.dir.join("outbox");
    let script = probe.dir.join("send-sms");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ printf 'to=%s\\n' \"$1\"; cat; }} >> {}\n",
            outbox.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = TestEnv::start_with_config(
        "web_phone",
        Limits::default(),
        &format!(
            "[web]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [sms]\ncommand = \"{}\"\n",
            script.display()
        ),
    );
    let path = link_path(&env, "erin", &[]);
    let (_, _, page) = http(port, "GET", &path, "Accept-Language: nl\r\n", "");
    let secret: String = page
        .split("id=\"secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .split_whitespace()
        .collect();
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
    let texted = std::fs::read_to_string(&outbox).unwrap();
    assert!(texted.starts_with("to=+31612345678\n"), "{texted}");
    let code: String = texted
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap()
        .to_owned();
    otpd_tests::secrets::remember(&code);
    let (_, _, wrong) = http(
        port,
        "POST",
        "/phone/verify",
        form,
        &format!(
            "session={session}&code={}",
            if code == "000000" { "111111" } else { "000000" }
        ),
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
