//! Logins through the real libpam ([`TestEnv::pam_login`]) whose outcome a
//! test expects: one login, a run of wrong codes, a throttled login. One
//! copy for every test file.

use crate::env::TestEnv;
use crate::pam::{PamLogin, PamOutcome};
use crate::totp::Enrollment;

/// Lines of the daemon's log shown when a login ends otherwise than
/// expected.
const LOG_TAIL_LINES: usize = 30;

impl TestEnv {
    /// One login of `user` from `rhost` typing `code` through the env's PAM
    /// service (`auth required libpam_otpd.so socket=…`), which must end
    /// in `expected`; `what` names it in the failure message (with the
    /// transcript and the tail of the daemon's log). Returns the login.
    pub fn expect_login(
        &self,
        user: &str,
        code: &str,
        rhost: &str,
        expected: PamOutcome,
        what: &str,
    ) -> PamLogin {
        let login = self.pam_login(user, code, rhost, "");
        if login.outcome != expected {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "{what}: {user} from {rhost:?} on {}: expected {expected:?}, got {:?}\n{}\n\
                 ---- the last lines of the daemon's log ----\n{}",
                self.name,
                login.outcome,
                login.output,
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            );
        }
        login
    }

    /// `times` logins of `user` from `rhost` with a code that is wrong
    /// around `t` ([`Enrolment::wrong_code`]), each refused
    /// (PAM_AUTH_ERR).
    pub fn fail_times(&self, user: &Enrollment, t: u64, rhost: &str, times: usize) {
        let wrong = user.wrong_code(t);
        for attempt in 1..=times {
            self.expect_login(
                &user.user,
                &wrong,
                rhost,
                PamOutcome::AuthErr,
                &format!("wrong code #{attempt} from {rhost}"),
            );
        }
    }

    /// A login that must be throttled ([`assert_throttled`]).
    pub fn expect_throttled(&self, user: &str, code: &str, rhost: &str, what: &str) -> PamLogin {
        let login = self.expect_login(user, code, rhost, PamOutcome::MaxTries, what);
        assert_throttled(&login, what);
        login
    }
}

/// `login` was throttled: PAM_MAXTRIES, and the module said how long to
/// wait (a number of seconds, PAM_ERROR_MSG).
pub fn assert_throttled(login: &PamLogin, what: &str) {
    assert_eq!(
        login.outcome,
        PamOutcome::MaxTries,
        "{what}: {}",
        login.output
    );
    let said = login.module_messages();
    assert!(
        said.chars().any(|c| c.is_ascii_digit()),
        "{what}: the module did not say how long to wait (PAM_ERROR_MSG); it said {said:?}"
    );
    println!("{what}: throttled, the module said {said:?}");
}
