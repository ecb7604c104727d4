//! Reading the enrolment pages as a client does: where the daemon serves
//! them (a `listen` on port 0 is bound by the daemon, which logs the
//! address), and the secret and the recovery codes a page shows (each
//! remembered as a secret, [`crate::secrets`]).

use crate::env::TestEnv;
use crate::secrets;
use std::time::{Duration, Instant};

/// The port of the pages `env`'s daemon serves with `scheme` (`http` or
/// `https`) on 127.0.0.1, read from its log line "serving the enrolment
/// pages on SCHEME://127.0.0.1:PORT" (waiting up to 10 s for it).
pub fn port(env: &TestEnv, scheme: &str) -> u16 {
    let marker = format!("serving the enrolment pages on {scheme}://127.0.0.1:");
    let started = Instant::now();
    loop {
        let log = env.log();
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
