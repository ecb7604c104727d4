//! The enrolment pages over HTTPS (`[web] tls_cert`, `tls_key`), as a real
//! client sees them: a CA made for the test (root → intermediate → server
//! certificate, [`TestCa`]), the daemon given the server's certificate
//! chain, and `curl` trusting only the root. curl must verify the whole
//! chain and the name, so the daemon has to send the intermediate; the
//! whole self-enrolment (the link's page, "Show QR code", "Validate") runs
//! over that verified connection, and a login with the enrolled app then
//! works. Another CA, the system's CAs, another host name and plain HTTP
//! on the TLS port all fail. (`web_http.rs` checks the HSTS header over
//! TLS with an unverified client; this file does not repeat it.)

use otpd_tests::ca::TestCa;
use otpd_tests::pages;
use otpd_tests::process::{self, Output};
use otpd_tests::webclient::hidden_field;
use otpd_tests::{require, secrets, settled_now, Limits, PamOutcome, Program, TestEnv};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The name in `public_url` and in the server's certificate.
const HOST: &str = "localhost";
/// curl's exit status when the peer's certificate or name does not verify.
const CURLE_PEER_FAILED_VERIFICATION: i32 = 60;

/// One request by `curl` to `https://NAME/PATH`, connected to the pages on
/// 127.0.0.1:`port` whatever NAME resolves to (`--connect-to`), trusting
/// only `ca` (`None`: curl's default, the system's CAs); `form` fields are
/// POSTed. Returns curl's run: the head and body on stdout (`-i`).
fn curl(port: u16, ca: Option<&Path>, url: &str, form: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(Program::Curl.path());
    // -q first: no ~/.curlrc; no proxy; the environment's CA settings gone.
    cmd.args([
        "-q",
        "--silent",
        "--show-error",
        "--include",
        "--noproxy",
        "*",
    ])
    .args(["--max-time", "20", "--connect-to"])
    .arg(format!("::127.0.0.1:{port}"))
    .env_remove("CURL_CA_BUNDLE")
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR");
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    for (name, value) in form {
        cmd.arg("--data-urlencode").arg(format!("{name}={value}"));
    }
    cmd.arg(url);
    process::run(cmd, b"", Duration::from_secs(30))
}

/// [`curl`] that must verify the connection and get status 200; returns
/// the body.
fn page(port: u16, ca: &Path, url: &str, form: &[(&str, &str)], what: &str) -> String {
    let out = curl(port, Some(ca), url, form);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: curl did not get the page over a verified connection: {out}"
    );
    let (head, body) = out
        .stdout
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: no HTTP head in {out}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{what}: {head}\n{body}");
    body.to_owned()
}

/// [`curl`] that must fail because the certificate or the name does not
/// verify; returns the first line of what curl said.
fn refused(port: u16, ca: Option<&Path>, url: &str, what: &str) -> String {
    let out = curl(port, ca, url, &[]);
    assert_eq!(
        out.status.code(),
        Some(CURLE_PEER_FAILED_VERIFICATION),
        "{what}: curl was expected to refuse the server's certificate: {out}"
    );
    assert!(
        !out.stdout.contains("HTTP/"),
        "{what}: a page was read: {out}"
    );
    out.stderr.lines().next().unwrap_or("").to_owned()
}

/// The CA of the test: a root (what clients trust), an intermediate under
/// it, and the pages' certificate signed by the intermediate, as (root,
/// the chain file for `tls_cert`, the key). Both CA keys are deleted.
fn authority(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_dir = dir.join("ca");
    std::fs::create_dir(&ca_dir).expect("create the CA's dir");
    let mut root = TestCa::root(&ca_dir, "root", "otpd test root CA");
    let mut intermediate = root.intermediate("intermediate", "otpd test intermediate CA");
    let (chain, key) = intermediate.issue_server("pages");
    root.forget_key();
    intermediate.forget_key();
    let certificates = std::fs::read_to_string(&chain).expect("read the chain");
    assert_eq!(
        certificates.matches("BEGIN CERTIFICATE").count(),
        2,
        "the pages' chain is their certificate and the intermediate's"
    );
    (root.cert, chain, key)
}

#[test]
fn the_pages_over_https_verify_against_the_ca_and_enroll_a_user() {
    if !require(
        "pages over HTTPS",
        &[
            Program::Openssl,
            Program::Curl,
            Program::Oathtool,
            Program::Pamtester,
            Program::PamWrapper,
        ],
    ) {
        return;
    }
    let probe = TestEnv::without_daemon("tls_pages_ca", &Limits::default());
    let (root, chain, key) = authority(&probe.dir);
    let env = TestEnv::start_with_config(
        "tls_pages",
        Limits::default(),
        &format!(
            "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://{HOST}\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            chain.display(),
            key.display()
        ),
    );
    let port = pages::port(&env, "https");
    println!("[tls_pages] the pages listen on 127.0.0.1:{port} over TLS");

    // A client that trusts only the root reaches the pages by name.
    let css = page(
        port,
        &root,
        &format!("https://{HOST}/otpd.css"),
        &[],
        "the stylesheet",
    );
    assert!(!css.is_empty(), "an empty stylesheet");

    // The whole self-enrolment over the verified connection.
    let out = env.otpd_expect(&["enroll", "bob", "--link"], 0);
    let url = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with(&format!("https://{HOST}/enroll/")))
        .unwrap_or_else(|| panic!("no https link printed: {out}"))
        .to_owned();
    let link_page = page(port, &root, &url, &[], "the link's page");
    let view = hidden_field(&link_page, "view")
        .unwrap_or_else(|| panic!("no view field on the link's page:\n{link_page}"));
    secrets::remember(&view);
    let revealed = page(
        port,
        &root,
        &format!("{url}/reveal"),
        &[("view", &view)],
        "Show QR code",
    );
    let secret = pages::secret_on(&revealed);
    let t = settled_now(30, 8);
    let code = otpd_tests::code_at(&secret, "SHA1", 6, 30, t);
    let success = page(port, &root, &url, &[("code", &code)], "Validate");
    assert!(success.contains("id=\"success\""), "{success}");
    let codes = pages::recovery_codes_on(&success);
    assert_eq!(codes.len(), 10, "{success}");
    let entry = env.list_entry("bob").expect("bob is listed");
    assert_eq!(entry["state"], "active", "{entry}");
    // The app enrolled over HTTPS logs in.
    let next = otpd_tests::code_at(&secret, "SHA1", 6, 30, t + 30);
    let login = env.pam_login("bob", &next, "192.0.2.80", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);

    // What a client must not accept.
    let stylesheet = format!("https://{HOST}/otpd.css");
    let stranger_dir = probe.dir.join("stranger");
    std::fs::create_dir(&stranger_dir).expect("create the other CA's dir");
    let stranger = TestCa::root(&stranger_dir, "stranger", "otpd test: another root");
    let said = refused(port, Some(&stranger.cert), &stylesheet, "another CA");
    println!("[tls_pages] curl trusting another CA: {said}");
    let said = refused(port, None, &stylesheet, "the system's CAs");
    println!("[tls_pages] curl trusting the system's CAs: {said}");
    let said = refused(
        port,
        Some(&root),
        "https://otp.example.com/otpd.css",
        "a name the certificate does not carry",
    );
    println!("[tls_pages] curl for another host name: {said}");
    assert!(said.contains("otp.example.com"), "{said}");
    // Nothing is served in clear on the TLS port.
    let plain = curl(port, None, &format!("http://{HOST}/otpd.css"), &[]);
    println!(
        "[tls_pages] plain HTTP to the TLS port: {} {}",
        plain.status,
        plain.stderr.trim()
    );
    assert!(
        !plain.stdout.contains("HTTP/1.1 200") && !plain.stdout.contains(css.trim()),
        "the pages answered plain HTTP on the TLS port: {plain}"
    );
    for secret in [&secret, &code, &view] {
        env.assert_log_free_of(secret);
    }
}
