//! The sizes of the campaigns: a variable may make a campaign bigger than
//! the run docs/security.md documents, never smaller under CI
//! ([`crate::ci::under_ci`]), and no campaign may be made empty.

use crate::ci::under_ci;

/// The size of a campaign (kills, users, seconds…): the whole number in
/// the variable `var`, or `documented` (the run docs/security.md describes)
/// when it is unset. Panics, so that the test fails, when the value is not
/// a whole number or is 0 (a campaign of zero rounds checks nothing), and
/// under CI when it is below `documented`.
pub fn size(var: &str, documented: u64) -> u64 {
    let Some(value) = std::env::var_os(var) else {
        return documented;
    };
    let text = value.to_string_lossy();
    let n: u64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{var}={text:?} is not a whole number"));
    assert!(n > 0, "{var}=0: a campaign of zero rounds checks nothing");
    assert!(
        n >= documented || !under_ci(),
        "{var}={n} makes the campaign smaller than its documented run ({documented}), \
         which CI forbids: unset it, or set it to {documented} or more"
    );
    n
}

/// The daemons' log filter when `OTPD_TEST_RUST_LOG` is unset: otpd's own
/// lines at trace, for the secrets scan of every test daemon's log
/// ([`crate::TestEnv::leaked_secrets`]); sled's at info (page and log
/// positions, megabytes of them, never a secret: records are sealed first)
/// but for [`TRACE_MARKER`].
pub const DEFAULT_LOG_FILTER: &str = "trace,sled=info,sled::context=trace";

/// The directive that makes every daemon that opens a sled store write one
/// line at the level TRACE (sled's "starting context"), so that a test can
/// see the level of a daemon's log ([`crate::secrets::trace_lines`]): otpd
/// itself writes nothing at TRACE. A daemon on PostgreSQL needs none
/// (tokio-postgres traces every connection's reads and writes).
pub const TRACE_MARKER: &str = "sled::context=trace";

/// The `RUST_LOG` of the test daemons: `OTPD_TEST_RUST_LOG`, or
/// [`DEFAULT_LOG_FILTER`]. Under CI the variable may not lower otpd's
/// level: it must start with the directive `trace`, and any further
/// directive may only be about sled (`sled=…`, `sled::…=…`); otherwise
/// the test fails. A filter that keeps otpd at trace gets
/// [`TRACE_MARKER`] appended, so that the level can be checked.
pub fn daemon_log_filter() -> String {
    let Ok(filter) = std::env::var("OTPD_TEST_RUST_LOG") else {
        return DEFAULT_LOG_FILTER.to_owned();
    };
    assert!(
        keeps_otpd_at_trace(&filter) || !under_ci(),
        "OTPD_TEST_RUST_LOG={filter:?} logs otpd below trace, which CI forbids: the \
         secrets scan must see every line the daemon can write (docs/security.md); \
         unset it or start it with \"trace\""
    );
    if keeps_otpd_at_trace(&filter) {
        format!("{filter},{TRACE_MARKER}")
    } else {
        filter
    }
}

/// True when the test daemons log at trace ([`daemon_log_filter`]), so
/// that each one's log must show a line at TRACE. Always true under CI;
/// outside CI, `OTPD_TEST_RUST_LOG` may lower the level, and then the
/// check is left out.
pub fn daemons_log_at_trace() -> bool {
    keeps_otpd_at_trace(&daemon_log_filter())
}

/// True when the `RUST_LOG` filter `filter` leaves otpd at trace (see
/// [`daemon_log_filter`]).
pub fn keeps_otpd_at_trace(filter: &str) -> bool {
    let mut directives = filter.split(',').map(str::trim);
    directives.next() == Some("trace")
        && directives.all(|d| d.starts_with("sled=") || d.starts_with("sled::"))
}

#[cfg(test)]
mod tests {
    use super::keeps_otpd_at_trace;

    #[test]
    fn only_filters_that_keep_otpd_at_trace_pass() {
        for good in [
            "trace",
            "trace,sled=info",
            "trace, sled=warn",
            "trace,sled::tree=off",
            super::DEFAULT_LOG_FILTER,
        ] {
            assert!(keeps_otpd_at_trace(good), "{good}");
        }
        for bad in [
            "",
            "info",
            "debug,sled=info",
            "trace,otpd=info",
            "trace,otpd::server=off",
            "sled=info,trace",
            "trace,sledge=off",
            "otpd=trace",
        ] {
            assert!(!keeps_otpd_at_trace(bad), "{bad}");
        }
    }
}
