//! Logins through the real libpam: `pamtester` under `libpam_wrapper`, with a
//! service directory of the test's own.

use crate::process::{Output, Running};
use crate::Program;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `pam_authenticate` returned, as pamtester reports it (the text of
/// `pam_strerror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamOutcome {
    /// PAM_SUCCESS.
    Success,
    /// PAM_AUTH_ERR: wrong, replayed, or (without `nullok`) not enrolled.
    AuthErr,
    /// PAM_AUTHINFO_UNAVAIL: the daemon could not be asked, or was not trusted.
    AuthInfoUnavail,
    /// PAM_MAXTRIES: throttled.
    MaxTries,
    /// PAM_USER_UNKNOWN.
    UserUnknown,
    /// PAM_PERM_DENIED.
    PermDenied,
    /// PAM_SERVICE_ERR: the module failed (or caught a panic).
    ServiceErr,
    /// PAM_SYSTEM_ERR.
    SystemErr,
    /// PAM_CONV_ERR: the conversation failed (no code on stdin).
    ConvErr,
    /// PAM_AUTHTOK_RECOVERY_ERR: `use_first_pass` found no earlier answer.
    AuthtokRecoveryErr,
    /// PAM_CRED_INSUFFICIENT.
    CredInsufficient,
    /// PAM_ABORT.
    Abort,
    /// PAM_BUF_ERR.
    BufErr,
    /// PAM_IGNORE reaching the application (a stack with nothing else).
    Ignore,
    /// PAM_OPEN_ERR / PAM_SYMBOL_ERR: the module could not be loaded.
    ModuleLoadErr,
}

impl PamOutcome {
    /// Maps pamtester's final `pamtester: <text>` line; an unknown text is an error.
    pub fn from_pamtester_text(text: &str) -> Result<PamOutcome, String> {
        Ok(match text {
            "successfully authenticated" => PamOutcome::Success,
            "Authentication failure" => PamOutcome::AuthErr,
            "Authentication service cannot retrieve authentication info" => {
                PamOutcome::AuthInfoUnavail
            }
            "Have exhausted maximum number of retries for service" => PamOutcome::MaxTries,
            "User not known to the underlying authentication module" => PamOutcome::UserUnknown,
            "Permission denied" => PamOutcome::PermDenied,
            "Error in service module" => PamOutcome::ServiceErr,
            "System error" => PamOutcome::SystemErr,
            "Conversation error" => PamOutcome::ConvErr,
            "Authentication information cannot be recovered" => PamOutcome::AuthtokRecoveryErr,
            "Insufficient credentials to access authentication data" => {
                PamOutcome::CredInsufficient
            }
            "Critical error - immediate abort" => PamOutcome::Abort,
            "Memory buffer error" => PamOutcome::BufErr,
            "The return value should be ignored by PAM dispatch" => PamOutcome::Ignore,
            "Failed to load module" | "Symbol not found" => PamOutcome::ModuleLoadErr,
            other => return Err(format!("unknown pamtester result {other:?}")),
        })
    }

    /// Reads the outcome from a finished pamtester run; panics on an unknown text.
    pub fn from_output(out: &Output) -> PamOutcome {
        let last = out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            // A prompt has no newline, so pamtester's text may follow it on one line.
            .filter_map(|line| line.split_once("pamtester: ").map(|(_, text)| text))
            .rfind(|text| {
                !text.starts_with("invoking pam_start") && !text.starts_with("performing operation")
            })
            .unwrap_or_else(|| panic!("pamtester printed no result:\n{out}"));
        let outcome =
            PamOutcome::from_pamtester_text(last).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let expected_exit = if outcome == PamOutcome::Success { 0 } else { 1 };
        assert_eq!(
            out.code(),
            expected_exit,
            "pamtester exit status disagrees with its text:\n{out}"
        );
        outcome
    }
}

/// One finished login.
#[derive(Debug, Clone)]
pub struct PamLogin {
    /// What `pam_authenticate` returned.
    pub outcome: PamOutcome,
    /// pamtester's whole run, messages of the module included.
    pub output: Output,
}

impl PamLogin {
    /// Wall-clock time of the pamtester run.
    pub fn elapsed(&self) -> Duration {
        self.output.elapsed
    }

    /// The time `pam_authenticate` took, as near as can be seen from
    /// outside: from pamtester's line "performing operation -
    /// authenticate" (after its start-up, libpam's and the modules'
    /// loading) to its exit. What a promise about the module's own time
    /// (its timeout) is checked against: on a busy machine pamtester's
    /// start-up alone can take longer than a second.
    pub fn authenticate_time(&self) -> Duration {
        let from = self
            .output
            .stderr_at("performing operation - authenticate")
            .unwrap_or_else(|| panic!("pamtester never began to authenticate:\n{}", self.output));
        self.output.elapsed.saturating_sub(from)
    }

    /// Everything pamtester printed (prompts and module messages included).
    pub fn transcript(&self) -> String {
        format!("{}{}", self.output.stdout, self.output.stderr)
    }

    /// What the module said through the conversation (prompts, error and
    /// info messages): the transcript less pamtester's and pam_wrapper's own lines.
    pub fn module_messages(&self) -> String {
        self.transcript()
            .lines()
            .filter(|line| !line.starts_with("PWRAP_"))
            .map(|line| {
                line.split_once("pamtester: ")
                    .map_or(line, |(said, _)| said)
            })
            .filter(|said| !said.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A PAM service file in a test's own service directory.
#[derive(Debug, Clone)]
pub struct PamService {
    /// The service directory (`PAM_WRAPPER_SERVICE_DIR`).
    pub dir: PathBuf,
    /// The service name (the file name).
    pub name: String,
}

impl PamService {
    /// Writes `stack` (service file lines, absolute module paths) as `dir/name`.
    pub fn create(dir: &Path, name: &str, stack: &str) -> PamService {
        std::fs::create_dir_all(dir).expect("create the PAM service dir");
        std::fs::write(dir.join(name), stack).expect("write the PAM service file");
        PamService {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        }
    }

    /// The pamtester command for `user` (and `rhost` unless empty), run by
    /// `runner` (a `setpriv` prefix) or directly.
    pub fn command(&self, user: &OsStr, rhost: &str, runner: Option<Command>) -> Command {
        let pamtester = Program::Pamtester.path();
        let mut cmd = match runner {
            Some(mut runner) => {
                runner.arg(&pamtester);
                runner
            }
            None => Command::new(&pamtester),
        };
        let preload = format!(
            "{}:{}",
            Program::PamWrapper.path().display(),
            Program::NssWrapper.path().display()
        );
        cmd.env("LD_PRELOAD", preload)
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", &self.dir)
            .arg("-v");
        crate::nss::configure(&mut cmd, &self.dir, user.as_encoded_bytes());
        if !rhost.is_empty() {
            cmd.arg("-I").arg(format!("rhost={rhost}"));
        }
        cmd.arg(&self.name).arg(user).arg("authenticate");
        cmd
    }

    /// Starts a login; the code is fed later with [`Running::feed`].
    pub fn start(&self, user: &OsStr, rhost: &str, runner: Option<Command>) -> Running {
        Running::spawn(self.command(user, rhost, runner))
    }

    /// Runs one login with `code` typed at the prompt.
    pub fn login(
        &self,
        user: &OsStr,
        code: &str,
        rhost: &str,
        runner: Option<Command>,
    ) -> PamLogin {
        let mut running = self.start(user, rhost, runner);
        running.feed(format!("{code}\n").as_bytes());
        finish(running)
    }
}

/// Waits for a started login (30 s at most) and reads its outcome.
pub fn finish(running: Running) -> PamLogin {
    let output = running.wait(Duration::from_secs(30));
    PamLogin {
        outcome: PamOutcome::from_output(&output),
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_texts_map_and_unknown_ones_do_not() {
        assert_eq!(
            PamOutcome::from_pamtester_text("Authentication failure"),
            Ok(PamOutcome::AuthErr)
        );
        assert_eq!(
            PamOutcome::from_pamtester_text("Have exhausted maximum number of retries for service"),
            Ok(PamOutcome::MaxTries)
        );
        assert!(PamOutcome::from_pamtester_text("Something new").is_err());
    }
}
