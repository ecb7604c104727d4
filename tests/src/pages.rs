//! Reading the enrolment pages as a client does: where the daemon serves
//! them (a `listen` on port 0 is bound by the daemon, which logs the
//! address), the links the CLI prints, and the secret and the recovery
//! codes a page shows (each remembered as a secret, [`crate::secrets`]).

use crate::env::TestEnv;
use crate::secrets;
use crate::webclient;
use std::time::{Duration, Instant};

/// The `public_url` of [`WEB_SECTION`]: the links the CLI prints start
/// with it; [`local_url`] turns one into the address the pages are served
/// on. (Loopback, so that plain http:// draws no warning.)
pub const PUBLIC_URL: &str = "http://localhost";

/// A `[web]` section whose pages the daemon serves on a port of 127.0.0.1
/// that it binds itself (`listen = "127.0.0.1:0"`; [`port`] reads which),
/// so that no other process can take the port between a test choosing it
/// and the daemon binding it; links under [`PUBLIC_URL`].
pub const WEB_SECTION: &str =
    "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://localhost\"\n";

/// The port of the pages `env`'s running daemon serves with `scheme`
/// (`http` or `https`) on 127.0.0.1, read from its log line "serving the
/// enrolment pages on SCHEME://127.0.0.1:PORT" (waiting up to 10 s for
/// it). A daemon started again binds a new port: this reads the latest
/// start's ([`TestEnv::run_log`]).
pub fn port(env: &TestEnv, scheme: &str) -> u16 {
    let marker = format!("serving the enrolment pages on {scheme}://127.0.0.1:");
    let started = Instant::now();
    loop {
        let log = env.run_log();
        if let Some(port) = log
            .split(&marker)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
        {
            return port;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the daemon never said where it serves the pages over {scheme}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first `http(s)://…/enroll/TOKEN` link in `text` (what `otpd enroll
/// --link` printed), without trailing punctuation; its token is
/// remembered as a secret.
pub fn link_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .filter_map(|word| word.find("http").map(|at| &word[at..]))
        .map(|url| url.trim_end_matches(['.', ',', ';', ':', ')', '>', '"', '\'']))
        .find(|url| url.contains("/enroll/"))
        .map(|url| {
            secrets::remember_from_output(url);
            url.to_owned()
        })
}

/// `otpd enroll USER --link EXTRA…` on `env`, which must succeed and print
/// a link; returns the link's path (`/enroll/TOKEN`).
pub fn enroll_link_path(env: &TestEnv, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["enroll", user, "--link"];
    args.extend_from_slice(extra);
    let out = env.otpd_expect(&args, 0);
    let url = link_in(&out.stdout).unwrap_or_else(|| panic!("no link printed: {out}"));
    path_of(&url)
}

/// The path of `url` (`/enroll/TOKEN` of `http://host:port/enroll/TOKEN`).
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/')
        .map_or_else(|| "/".to_owned(), |at| rest[at..].to_owned())
}

/// `url`, a link under [`PUBLIC_URL`], at the pages served on
/// 127.0.0.1:`port` (where a browser or a client can open it).
pub fn local_url(url: &str, port: u16) -> String {
    assert!(
        url.starts_with(PUBLIC_URL),
        "{url} is not a link under {PUBLIC_URL}"
    );
    format!("http://127.0.0.1:{port}{}", path_of(url))
}

/// GETs the link's page at `path` on 127.0.0.1:`port` (status 200), then
/// presses "Show QR code": POSTs the page's view nonce (remembered as a
/// secret) to `{path}/reveal`, with `headers` (whole lines) on both.
/// Returns the revealed page (status 200).
pub fn reveal_page(port: u16, path: &str, headers: &str) -> String {
    let page = webclient::request(port, "GET", path, headers, "");
    assert_eq!(page.status, 200, "{}", page.body);
    let view = webclient::hidden_field(&page.body, "view")
        .unwrap_or_else(|| panic!("no view field on the page:\n{}", page.body));
    secrets::remember(&view);
    let revealed = webclient::request(
        port,
        "POST",
        &format!("{path}/reveal"),
        &format!("{}{headers}", webclient::FORM),
        &format!("view={view}"),
    );
    assert_eq!(revealed.status, 200, "{}", revealed.body);
    revealed.body
}

/// [`reveal_page`], and the secret on it ([`secret_on`]).
pub fn reveal(port: u16, path: &str, headers: &str) -> String {
    secret_on(&reveal_page(port, path, headers))
}

/// The secret shown on a revealed page (in groups of four), joined.
pub fn secret_on(page: &str) -> String {
    let secret: String = page
        .split("id=\"secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no secret on the page:\n{page}"))
        .split_whitespace()
        .collect();
    secrets::remember(&secret);
    secret
}

/// The recovery codes listed on a success page.
pub fn recovery_codes_on(page: &str) -> Vec<String> {
    page.split("<li><code>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .map(|code| {
            secrets::remember(code);
            code.to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_in_the_cli_output_and_served_locally() {
        assert_eq!(
            link_in("Send this link to alice (valid 24 h):\n  http://localhost/enroll/AbC_d-9.\n"),
            Some("http://localhost/enroll/AbC_d-9".into())
        );
        assert_eq!(
            link_in("see <https://h/enroll/t>"),
            Some("https://h/enroll/t".into())
        );
        assert_eq!(link_in("http://h/other"), None);
        assert_eq!(path_of("http://127.0.0.1:1/enroll/x"), "/enroll/x");
        assert_eq!(path_of("http://h"), "/");
        assert_eq!(
            local_url("http://localhost/enroll/AbC", 8123),
            "http://127.0.0.1:8123/enroll/AbC"
        );
    }
}
