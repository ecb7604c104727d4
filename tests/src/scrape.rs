//! Reading a daemon's `[metrics] listen` scrape: where it serves them
//! (from its log line), `GET /metrics`, and one sample's value.

use crate::env::TestEnv;
use crate::webclient;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A `[metrics]` section on a free port of 127.0.0.1 ([`metrics_port`]
/// finds which).
pub const METRICS_SECTION: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The metrics' port of `env`'s daemon, from its log line.
pub fn metrics_port(env: &TestEnv) -> u16 {
    let marker = "serving the metrics on http://127.0.0.1:";
    let started = Instant::now();
    loop {
        let log = env.run_log();
        if let Some(port) = log
            .split(marker)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
        {
            return port;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the daemon never said where it serves the metrics:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /metrics` (the Prometheus text format), which must answer 200.
pub fn scrape(port: u16) -> String {
    let answer = webclient::request(port, "GET", "/metrics", "", "");
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

/// The values of label `label` anywhere in `text`.
pub fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let marker = format!("{label}=\"");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .flat_map(|line| line.split(&marker).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// The value of the sample `series` (name and labels as written).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// [`sample`], which must be there.
pub fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}
