//! What counts as CI, and the one skip rule: under CI no test may skip.
//!
//! CI is the variable `CI` set to anything but "", "0" or "false" (in any
//! case): `.ci/run` sets `CI=true`, and so do GitHub Actions, GitLab and
//! most other runners. The same rule is spelt in shell, as a one-line
//! `under_ci()`, in tests/fuzz.sh and packaging/test-install.sh
//! (`otpd_tests::programs`' unit tests run those lines against this code).
//!
//! This file is also compiled into the tests of crates that cannot depend
//! on `otpd-tests` (otpd/tests/*.rs and pam_module's unit tests) with
//! `#[path = "…/tests/src/ci.rs"] mod ci;`, so that one rule holds
//! everywhere: keep it free of any dependency but std.

/// True when `value`, the value of the variable `CI` (`None`: unset),
/// means CI.
pub fn means_ci(value: Option<&std::ffi::OsStr>) -> bool {
    match value {
        None => false,
        Some(value) => {
            let value = value.to_string_lossy();
            !(value.is_empty() || value == "0" || value.eq_ignore_ascii_case("false"))
        }
    }
}

/// True when the tests run under CI, where no test may skip.
pub fn under_ci() -> bool {
    means_ci(std::env::var_os("CI").as_deref())
}

/// The skip rule for a test that cannot run here (`reason`: what is
/// missing). Under CI it fails the test (panics), naming the reason;
/// elsewhere it prints one `SKIP <test>: <reason>` line, and the caller
/// returns.
pub fn skip(test: &str, reason: &str) {
    if under_ci() {
        panic!(
            "{test}: {reason}, and CI={:?} forbids skipping (run tests/run-all.sh, which \
             installs everything the tests need)",
            std::env::var_os("CI").unwrap_or_default()
        );
    }
    println!("SKIP {test}: {reason}");
}
