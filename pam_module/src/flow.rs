//! The login flow of `pam_sm_authenticate`, written against two small traits
//! (the PAM side and the daemon side) so that every decision — which answer
//! becomes which PAM code, when `nullok` lets a user through, what the
//! person at the terminal is told — is unit-tested without libpam.
#![forbid(unsafe_code)]

use crate::args::{parse_args, FirstPass, ModuleArgs};
use crate::client::{ClientError, Daemon};
use crate::texts::Lang;
use otpd_proto::{EnrolmentStatus, ErrorCode, Request, Response, SecretText, VerifyOutcome};
use pamsm::PamError;
use zeroize::Zeroizing;

/// Severity of a line for pam_syslog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Something is broken: the daemon is unreachable or untrusted.
    Error,
    /// A configuration mistake the administrator should fix.
    Warning,
    /// Normal but noteworthy.
    Notice,
    /// Only with the `debug` argument.
    Debug,
}

/// What the flow needs from PAM. The real implementation is in `ffi.rs`.
pub trait LoginHandler {
    /// PAM_USER as raw bytes (libpam may prompt for it); `None` when unset.
    fn user(&self) -> Result<Option<Vec<u8>>, PamError>;
    /// The account `name` is, as the user database (NSS, `getpwnam_r`)
    /// spells it (`pw_name`): under NSS that ignores case or knows aliases
    /// (SSSD, winbind, LDAP) `ALICE` is `alice`. `Ok(None)`: no such
    /// account; `Err`: the lookup failed (the reason, for the log).
    fn account(&self, name: &str) -> Result<Option<String>, String>;
    /// PAM_SERVICE, empty when unset.
    fn service(&self) -> String;
    /// PAM_RHOST, empty when unset (a local login).
    fn rhost(&self) -> String;
    /// The real uid of the process the module runs in: under su or sudo
    /// (which run as root) the person who started them.
    fn real_uid(&self) -> u32;
    /// A locale variable (`LANG` …) from the PAM environment, else from the
    /// process environment.
    fn locale_var(&self, name: &str) -> Option<String>;
    /// PAM_AUTHTOK as an earlier module left it, without prompting.
    fn authtok(&self) -> Result<Option<Zeroizing<Vec<u8>>>, PamError>;
    /// Sets PAM_AUTHTOK for the modules after this one.
    fn set_authtok(&self, password: &[u8]) -> Result<(), PamError>;
    /// Asks `prompt` with echo off and returns the answer in a buffer that is
    /// wiped on drop. Any failure, including no answer, is an `Err`.
    fn prompt_echo_off(&self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, PamError>;
    /// Shows `text` as a PAM_ERROR_MSG.
    fn error_message(&self, text: &str) -> Result<(), PamError>;
    /// Shows `text` as a PAM_TEXT_INFO.
    fn info_message(&self, text: &str) -> Result<(), PamError>;
    /// Writes one line through pam_syslog.
    fn log(&self, level: LogLevel, message: &str);
}

/// Digits split off the end of a `forward_pass` answer when the daemon did
/// not say (the user has no active enrolment, so the login fails anyway).
const DEFAULT_DIGITS: usize = 6;

/// One login: the parsed arguments, the PAM side, the daemon and the
/// language, so that the steps below need not pass them around.
struct Login<'a, H, D> {
    pam: &'a H,
    daemon: D,
    args: ModuleArgs,
    lang: Lang,
    silent: bool,
    /// The daemon said the user has a phone for texted codes.
    phone: bool,
}

/// Runs `pam_sm_authenticate`: `raw_args` as libpam passed them, `silent`
/// for PAM_SILENT, `connect` builds the daemon client from the arguments.
pub fn authenticate<H, D, C>(pam: &H, raw_args: &[String], silent: bool, connect: C) -> PamError
where
    H: LoginHandler,
    D: Daemon,
    C: FnOnce(&ModuleArgs) -> D,
{
    let (args, warnings) = parse_args(raw_args);
    for warning in &warnings {
        pam.log(LogLevel::Warning, &warning.to_string());
    }
    let lang = args
        .lang
        .unwrap_or_else(|| Lang::from_locale(|name| pam.locale_var(name)));
    let daemon = connect(&args);
    let mut login = Login {
        pam,
        daemon,
        args,
        lang,
        silent,
        phone: false,
    };
    match login.run() {
        Ok(code) | Err(code) => code,
    }
}

impl<H: LoginHandler, D: Daemon> Login<'_, H, D> {
    fn debug(&self, message: &str) {
        if self.args.debug {
            self.pam.log(LogLevel::Debug, message);
        }
    }

    /// The whole flow; `Err` carries an early PAM return code.
    fn run(&mut self) -> Result<PamError, PamError> {
        // An unknown name gets the same conversation as an account with a
        // token (no prompt missing, the daemon asked as often), then
        // PAM_USER_UNKNOWN: a client learns nothing about which accounts
        // exist, as with pam_unix.
        let (mut user, typed, known) = self.user()?;
        let service = self.pam.service();
        let rhost = self.pam.rhost();
        self.debug(&format!(
            "user \"{user}\" service \"{service}\" rhost \"{rhost}\" socket {} timeout {:?} lang {:?}{}{}{}",
            self.args.socket,
            self.args.timeout,
            self.lang,
            if self.args.nullok { " nullok" } else { "" },
            if self.args.forward_pass { " forward_pass" } else { "" },
            match self.args.first_pass {
                FirstPass::Prompt => "",
                FirstPass::Use => " use_first_pass",
                FirstPass::Try => " try_first_pass",
            },
        ));

        // The enrolment status first, unless the code comes from an earlier
        // module anyway: it tells nullok whether to ask at all, forward_pass
        // how many digits end the answer, and the prompt whether to offer
        // "sms". With nullok the absence of a prompt tells a remote client
        // that the user has no token; without it every user is prompted
        // (only the "sms" hint differs).
        let mut digits = None;
        let need_status =
            self.args.nullok || self.args.forward_pass || self.args.first_pass != FirstPass::Use;
        if need_status {
            let (mut status, mut user_digits, phone) = self.status(&user)?;
            if known && status != EnrolmentStatus::Active && typed != user {
                // A record under the spelling typed (enrolled before otpd
                // asked about the account's own name; `otpd list` warns of
                // such records): it needs a code as much as the account's.
                let (typed_status, typed_digits, _) = self.status(&typed)?;
                if typed_status == EnrolmentStatus::Active {
                    self.debug("otpd: a token is enrolled under the spelling typed; using it");
                    user = typed.clone();
                    status = typed_status;
                    user_digits = typed_digits;
                }
            }
            self.phone = phone;
            if status == EnrolmentStatus::Active || !known {
                digits = user_digits;
                self.debug("otpd: enrolment active");
            } else if self.args.nullok {
                self.debug(&format!(
                    "otpd: enrolment {status:?}; nullok, no code asked"
                ));
                // The next module (pam_unix use_first_pass) still needs the
                // password; nullok already tells that no code is due. With
                // use_first_pass or try_first_pass an earlier module may have
                // collected it already.
                let have_password = match self.args.first_pass {
                    FirstPass::Prompt => false,
                    FirstPass::Use => true,
                    FirstPass::Try => matches!(self.pam.authtok(), Ok(Some(_))),
                };
                if self.args.forward_pass && !have_password {
                    let password = self.ask(self.lang.password_prompt())?;
                    self.forward(&password)?;
                }
                return Ok(PamError::IGNORE);
            }
        }

        let outcome = if self.args.forward_pass {
            let digits = match digits {
                None => DEFAULT_DIGITS,
                Some(digits @ 6..=8) => usize::from(digits),
                Some(other) => {
                    self.pam.log(
                        LogLevel::Error,
                        &format!("otpd says the user's codes have {other} digits; not 6 to 8"),
                    );
                    self.tell(self.lang.unavailable());
                    return Ok(PamError::AUTHINFO_UNAVAIL);
                }
            };
            let answer = match self
                .earlier_answer(|authtok| split_forward_pass(authtok, digits).is_some())?
            {
                Some(authtok) => authtok,
                None => self.ask(&self.prompt(self.lang.password_and_code_prompt()))?,
            };
            let Some(split) = split_forward_pass(&answer, digits) else {
                self.pam.log(
                    LogLevel::Notice,
                    &format!(
                        "forward_pass: the answer does not end in a {digits}-digit code; refused"
                    ),
                );
                return Ok(PamError::AUTH_ERR);
            };
            // The tail is ASCII digits, so valid UTF-8.
            let code = SecretText::from(String::from_utf8_lossy(&answer[split..]).as_ref());
            let outcome = self.verify(&user, code, &service, &rhost)?;
            // The password goes on only with an accepted code: in a stack
            // where this module's failure is not fatal, a wrong code must
            // not leave the next module a password to log in with.
            if outcome == VerifyOutcome::Accepted && known {
                self.forward(&answer[..split])?;
            }
            outcome
        } else {
            let earlier = self.earlier_answer(|authtok| {
                std::str::from_utf8(authtok).is_ok_and(looks_like_code)
            })?;
            match earlier {
                Some(authtok) => {
                    let code = SecretText::from(String::from_utf8_lossy(&authtok).as_ref());
                    let outcome = self.verify(&user, code, &service, &rhost)?;
                    if self.args.first_pass == FirstPass::Try && outcome == VerifyOutcome::WrongCode
                    {
                        // try_first_pass: what the earlier module collected
                        // looked like a code but is not this user's (a
                        // numeric password); ask, as pam_unix does.
                        self.debug("try_first_pass: PAM_AUTHTOK is not the code; asking");
                        let code = self.ask_code()?;
                        self.verify(&user, code, &service, &rhost)?
                    } else {
                        outcome
                    }
                }
                None => {
                    let code = self.ask_code()?;
                    self.verify(&user, code, &service, &rhost)?
                }
            }
        };
        // "sms" typed: the daemon texted a code, or says why it could not.
        // One more prompt either way, for the texted code or the app's.
        let outcome = match outcome {
            VerifyOutcome::SmsSent | VerifyOutcome::SmsUnavailable { .. } => {
                let prompt = match outcome {
                    VerifyOutcome::SmsUnavailable { retry_after_secs } => {
                        self.tell(&self.lang.sms_unavailable(retry_after_secs));
                        self.prompt(self.lang.code_prompt())
                    }
                    _ => {
                        self.tell_info(self.lang.sms_sent());
                        self.lang.texted_code_prompt().to_owned()
                    }
                };
                let answer = self.ask(&prompt)?;
                let Ok(code) = std::str::from_utf8(&answer) else {
                    return Ok(PamError::AUTH_ERR);
                };
                // One text per login: "sms" again is not sent to the daemon.
                if code.trim().eq_ignore_ascii_case("sms") {
                    self.debug("sms typed twice in one login; refused");
                    return Ok(PamError::AUTH_ERR);
                }
                match self.verify(&user, SecretText::from(code), &service, &rhost)? {
                    // One text per login at most.
                    VerifyOutcome::SmsSent | VerifyOutcome::SmsUnavailable { .. } => {
                        VerifyOutcome::WrongCode
                    }
                    other => other,
                }
            }
            other => other,
        };

        if let VerifyOutcome::Throttled { retry_after_secs } = outcome {
            // The attempt is refused either way; a host that cannot show
            // the message still gets PAM_MAXTRIES.
            self.tell(&self.lang.throttled(retry_after_secs));
        }
        if !known {
            return Ok(PamError::USER_UNKNOWN);
        }
        Ok(outcome_code(outcome, self.args.nullok))
    }

    /// The account PAM_USER is, as the user database spells it, PAM_USER
    /// as typed, and `true`; or PAM_USER twice and `false` when it is no
    /// account (the login is then refused with PAM_USER_UNKNOWN, after the
    /// usual conversation). `Err`: the PAM code that ends the login.
    fn user(&self) -> Result<(String, String, bool), PamError> {
        let name = self.pam_user()?;
        // The account's own spelling from here on (design.md §7): under an
        // NSS that ignores case, "ALICE" must not be a user otpd has never
        // heard of, whom nullok lets through without a code. A name that is
        // no account is refused, never ignored.
        match self.pam.account(&name) {
            Ok(Some(account)) => {
                if account != name {
                    self.debug(&format!(
                        "PAM_USER \"{}\" is the account \"{}\"",
                        name.escape_debug(),
                        account.escape_debug()
                    ));
                }
                Ok((account, name, true))
            }
            Ok(None) => {
                self.pam.log(
                    LogLevel::Notice,
                    &format!(
                        "user \"{}\" is not known to the system (getpwnam_r); refused",
                        name.escape_debug()
                    ),
                );
                Ok((name.clone(), name, false))
            }
            Err(reason) => {
                self.pam.log(
                    LogLevel::Error,
                    &format!(
                        "cannot look up user \"{}\" (getpwnam_r): {reason}; refused",
                        name.escape_debug()
                    ),
                );
                self.tell(self.lang.unavailable());
                Err(PamError::AUTHINFO_UNAVAIL)
            }
        }
    }

    /// PAM_USER as libpam holds it, as UTF-8.
    fn pam_user(&self) -> Result<String, PamError> {
        match self.pam.user() {
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(user) if !user.is_empty() => Ok(user),
                Ok(_) => {
                    self.pam.log(LogLevel::Error, "PAM_USER is empty");
                    Err(PamError::USER_UNKNOWN)
                }
                Err(error) => {
                    let shown = error.as_bytes().escape_ascii();
                    self.pam.log(
                        LogLevel::Error,
                        &format!("user name \"{shown}\" is not valid UTF-8; refused"),
                    );
                    Err(PamError::USER_UNKNOWN)
                }
            },
            Ok(None) => {
                self.pam.log(LogLevel::Error, "PAM_USER is not set");
                Err(PamError::USER_UNKNOWN)
            }
            Err(error) => {
                self.pam
                    .log(LogLevel::Error, &format!("cannot get PAM_USER: {error}"));
                Err(error)
            }
        }
    }

    /// `prompt=` when given, else the language's `default`.
    fn prompt(&self, default: &str) -> String {
        self.args
            .prompt
            .clone()
            .unwrap_or_else(|| default.to_owned())
    }

    /// Shows a message unless PAM_SILENT; a host that cannot show it loses
    /// nothing, the return code says the same.
    fn tell(&self, text: &str) {
        if !self.silent {
            let _ = self.pam.error_message(text);
        }
    }

    /// Shows an informational message unless PAM_SILENT.
    fn tell_info(&self, text: &str) {
        if !self.silent {
            let _ = self.pam.info_message(text);
        }
    }

    /// The enrolment status, when active its number of digits, and
    /// whether the user can get a code by text message.
    fn status(&mut self, user: &str) -> Result<(EnrolmentStatus, Option<u8>, bool), PamError> {
        let request = Request::Status {
            user: user.to_owned(),
        };
        match self.daemon.ask(&request) {
            Ok(Response::Status {
                status,
                digits,
                phone,
            }) => Ok((status, digits, phone)),
            other => Err(self.failed(other)),
        }
    }

    /// The daemon's decision on `code`.
    fn verify(
        &mut self,
        user: &str,
        code: SecretText,
        service: &str,
        rhost: &str,
    ) -> Result<VerifyOutcome, PamError> {
        let request = Request::Verify {
            user: user.to_owned(),
            code,
            service: service.to_owned(),
            rhost: rhost.to_owned(),
            ruid: Some(self.pam.real_uid()),
        };
        let answer = self.daemon.ask(&request);
        drop(request);
        match answer {
            Ok(Response::Verified { outcome }) => {
                self.debug(&format!("otpd: {outcome:?}"));
                Ok(outcome)
            }
            other => Err(self.failed(other)),
        }
    }

    /// Any answer but the expected one: logged, and the PAM code for it.
    fn failed(&self, answer: Result<Response, ClientError>) -> PamError {
        let code = match answer {
            Ok(Response::Error { code, message }) => daemon_error(self.pam, code, &message),
            Ok(other) => unexpected(self.pam, &other),
            Err(error) => {
                self.pam.log(LogLevel::Error, &error.to_string());
                PamError::AUTHINFO_UNAVAIL
            }
        };
        if code == PamError::AUTHINFO_UNAVAIL {
            self.tell(self.lang.unavailable());
        }
        code
    }

    /// Asks `prompt` with echo off.
    fn ask(&self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, PamError> {
        self.pam.prompt_echo_off(prompt).map_err(|error| {
            self.debug(&format!("conversation failed: {error}"));
            PamError::CONV_ERR
        })
    }

    /// Asks for the code with the code prompt; the answer must be UTF-8.
    fn ask_code(&self) -> Result<SecretText, PamError> {
        let default = if self.phone {
            self.lang.code_prompt_with_sms()
        } else {
            self.lang.code_prompt()
        };
        let answer = self.ask(&self.prompt(default))?;
        match std::str::from_utf8(&answer) {
            Ok(code) => Ok(SecretText::from(code)),
            Err(_) => {
                self.pam.log(
                    LogLevel::Notice,
                    "the code typed is not valid UTF-8; refused",
                );
                Err(PamError::AUTH_ERR)
            }
        }
    }

    /// With `use_first_pass` or `try_first_pass`, what an earlier module
    /// left in PAM_AUTHTOK, if `usable` says it can be what this module
    /// would have asked for (a code; with forward_pass, a password followed
    /// by a code). `Ok(None)`: ask. `use_first_pass` never asks: nothing
    /// there is PAM_AUTHTOK_RECOVERY_ERR, something unusable (the password
    /// of an earlier module) is refused without being sent to the daemon.
    fn earlier_answer(
        &self,
        usable: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, PamError> {
        let mode = self.args.first_pass;
        if mode == FirstPass::Prompt {
            return Ok(None);
        }
        let authtok = self.pam.authtok().inspect_err(|error| {
            self.pam
                .log(LogLevel::Error, &format!("cannot get PAM_AUTHTOK: {error}"));
        })?;
        match (mode, authtok) {
            (_, Some(authtok)) if usable(&authtok) => Ok(Some(authtok)),
            (FirstPass::Use, None) => {
                self.pam.log(
                    LogLevel::Notice,
                    "use_first_pass: no PAM_AUTHTOK from an earlier module; refused",
                );
                Err(PamError::AUTHTOK_RECOVERY_ERR)
            }
            (FirstPass::Use, Some(_)) => {
                self.pam.log(
                    LogLevel::Notice,
                    if self.args.forward_pass {
                        "use_first_pass: PAM_AUTHTOK does not end in a code; refused"
                    } else {
                        "use_first_pass: PAM_AUTHTOK is not a code (an earlier module's password?); refused, not sent to otpd"
                    },
                );
                Err(PamError::AUTH_ERR)
            }
            _ => {
                self.debug("try_first_pass: PAM_AUTHTOK absent or not a code; asking");
                Ok(None)
            }
        }
    }

    /// Sets PAM_AUTHTOK to `password` for the next module.
    fn forward(&self, password: &[u8]) -> Result<(), PamError> {
        self.pam.set_authtok(password).inspect_err(|error| {
            self.pam.log(
                LogLevel::Error,
                &format!("forward_pass: cannot set PAM_AUTHTOK: {error}"),
            );
        })
    }
}

/// Whether `text` can be a code: after trimming, 6 to 8 ASCII digits (a
/// single space inside allowed, as the daemon allows "123 456").
pub fn looks_like_code(text: &str) -> bool {
    let text = text.trim();
    let mut digits = 0;
    let mut spaces = 0;
    for c in text.chars() {
        match c {
            '0'..='9' => digits += 1,
            ' ' => spaces += 1,
            _ => return false,
        }
    }
    (6..=8).contains(&digits) && spaces <= 1
}

/// `forward_pass`: where the password ends and the `digits`-digit code
/// begins, or `None` when the answer does not end in that many digits.
/// The password may be empty (the next module judges it); it is bytes,
/// as pam_unix takes any bytes.
pub fn split_forward_pass(answer: &[u8], digits: usize) -> Option<usize> {
    let split = answer.len().checked_sub(digits)?;
    (digits > 0 && answer[split..].iter().all(u8::is_ascii_digit)).then_some(split)
}

/// The PAM code for the daemon's decision on a code.
pub fn outcome_code(outcome: VerifyOutcome, nullok: bool) -> PamError {
    match outcome {
        VerifyOutcome::Accepted => PamError::SUCCESS,
        VerifyOutcome::WrongCode | VerifyOutcome::Replayed => PamError::AUTH_ERR,
        VerifyOutcome::Throttled { .. } => PamError::MAXTRIES,
        VerifyOutcome::NotEnrolled | VerifyOutcome::Pending if nullok => PamError::IGNORE,
        VerifyOutcome::NotEnrolled | VerifyOutcome::Pending => PamError::AUTH_ERR,
        VerifyOutcome::SmsSent | VerifyOutcome::SmsUnavailable { .. } => PamError::AUTH_ERR,
    }
}

/// The PAM code for a refusal by the daemon: its own failure means the
/// factor cannot be checked at all; anything else is a refusal of this login.
pub fn error_code(code: ErrorCode) -> PamError {
    match code {
        ErrorCode::Internal => PamError::AUTHINFO_UNAVAIL,
        ErrorCode::BadRequest
        | ErrorCode::PermissionDenied
        | ErrorCode::NotFound
        | ErrorCode::AlreadyEnrolled
        | ErrorCode::NotPending
        | ErrorCode::Unavailable
        | ErrorCode::Refused => PamError::AUTH_ERR,
    }
}

fn daemon_error(pam: &impl LoginHandler, code: ErrorCode, message: &str) -> PamError {
    let level = match code {
        ErrorCode::Internal => LogLevel::Error,
        _ => LogLevel::Notice,
    };
    pam.log(
        level,
        &format!("otpd refused the request ({code:?}): {message}"),
    );
    error_code(code)
}

fn unexpected(pam: &impl LoginHandler, response: &Response) -> PamError {
    let kind = match response {
        Response::Verified { .. } => "verified",
        Response::Status { .. } => "status",
        Response::Enrolled(_) => "enrolled",
        Response::Link { .. } => "link",
        Response::RecoveryCodes { .. } => "recovery_codes",
        Response::DaemonStatus(_) => "daemon_status",
        Response::Users { .. } => "users",
        Response::Done {} => "done",
        Response::Imported { .. } => "imported",
        Response::Resynced { .. } => "resynced",
        Response::Error { .. } => "error",
    };
    pam.log(
        LogLevel::Error,
        &format!("otpd sent an answer of kind \"{kind}\" that does not fit the request"),
    );
    PamError::AUTHINFO_UNAVAIL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientError;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// A scripted PAM side that records what the module did.
    struct TestPam {
        user: Result<Option<Vec<u8>>, PamError>,
        code: Result<Vec<u8>, PamError>,
        /// Answers after the first one, in order (try_first_pass re-asks).
        later_codes: RefCell<VecDeque<Vec<u8>>>,
        authtok: RefCell<Option<Vec<u8>>>,
        locale: Vec<(&'static str, &'static str)>,
        prompts: RefCell<Vec<String>>,
        errors_shown: RefCell<Vec<String>>,
        infos_shown: RefCell<Vec<String>>,
        log: RefCell<Vec<(LogLevel, String)>>,
    }

    impl TestPam {
        fn new(code: &str) -> Self {
            TestPam {
                user: Ok(Some(b"alice".to_vec())),
                code: Ok(code.as_bytes().to_vec()),
                later_codes: RefCell::default(),
                authtok: RefCell::default(),
                locale: Vec::new(),
                prompts: RefCell::default(),
                errors_shown: RefCell::default(),
                infos_shown: RefCell::default(),
                log: RefCell::default(),
            }
        }

        fn logged(&self) -> String {
            self.log
                .borrow()
                .iter()
                .map(|(level, line)| format!("{level:?}: {line}\n"))
                .collect()
        }
    }

    impl LoginHandler for TestPam {
        fn user(&self) -> Result<Option<Vec<u8>>, PamError> {
            self.user.clone()
        }
        /// A user database that ignores case (as SSSD can) and knows
        /// "alice", "bob" and "ghost"; "broken" makes the lookup fail.
        fn account(&self, name: &str) -> Result<Option<String>, String> {
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "alice" | "bob" | "ghost" => Ok(Some(lower)),
                "broken" => Err("the directory server did not answer".into()),
                _ => Ok(None),
            }
        }
        fn service(&self) -> String {
            "sshd".into()
        }
        fn real_uid(&self) -> u32 {
            1000
        }

        fn rhost(&self) -> String {
            "192.0.2.7".into()
        }
        fn locale_var(&self, name: &str) -> Option<String> {
            self.locale
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
        fn authtok(&self) -> Result<Option<Zeroizing<Vec<u8>>>, PamError> {
            Ok(self.authtok.borrow().clone().map(Zeroizing::new))
        }
        fn set_authtok(&self, password: &[u8]) -> Result<(), PamError> {
            *self.authtok.borrow_mut() = Some(password.to_vec());
            Ok(())
        }
        fn prompt_echo_off(&self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, PamError> {
            let first = self.prompts.borrow().is_empty();
            self.prompts.borrow_mut().push(prompt.to_owned());
            if !first {
                if let Some(later) = self.later_codes.borrow_mut().pop_front() {
                    return Ok(Zeroizing::new(later));
                }
            }
            self.code.clone().map(Zeroizing::new)
        }
        fn error_message(&self, text: &str) -> Result<(), PamError> {
            self.errors_shown.borrow_mut().push(text.to_owned());
            Ok(())
        }
        fn info_message(&self, text: &str) -> Result<(), PamError> {
            self.infos_shown.borrow_mut().push(text.to_owned());
            Ok(())
        }
        fn log(&self, level: LogLevel, message: &str) {
            self.log.borrow_mut().push((level, message.to_owned()));
        }
    }

    /// A scripted daemon: answers in order, records the requests.
    #[derive(Default)]
    struct TestDaemon {
        answers: VecDeque<Result<Response, ClientError>>,
        requests: Vec<Request>,
        /// Every Status is answered from `answers`.
        status_scripted: bool,
    }

    impl Daemon for &mut TestDaemon {
        fn ask(&mut self, request: &Request) -> Result<Response, ClientError> {
            // A Status the test did not script is answered "active, 6
            // digits, no phone" and not recorded, so that tests about the
            // code need not script the status question before it.
            let scripted = matches!(
                self.answers.front(),
                Some(Ok(Response::Status { .. } | Response::Error { .. }) | Err(_))
            ) || self.status_scripted;
            if matches!(request, Request::Status { .. }) && !scripted {
                return Ok(Response::Status {
                    status: EnrolmentStatus::Active,
                    digits: Some(6),
                    phone: false,
                });
            }
            self.requests.push(request.clone());
            self.answers.pop_front().expect("no answer scripted")
        }
    }

    fn verified(outcome: VerifyOutcome) -> Result<Response, ClientError> {
        Ok(Response::Verified { outcome })
    }

    fn status(status: EnrolmentStatus) -> Result<Response, ClientError> {
        let digits = (status == EnrolmentStatus::Active).then_some(6);
        Ok(Response::Status {
            status,
            digits,
            phone: false,
        })
    }

    fn status_digits(digits: u8) -> Result<Response, ClientError> {
        Ok(Response::Status {
            status: EnrolmentStatus::Active,
            digits: Some(digits),
            phone: false,
        })
    }

    fn run(
        pam: &TestPam,
        args: &[&str],
        answers: Vec<Result<Response, ClientError>>,
    ) -> (PamError, Vec<Request>) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut daemon = TestDaemon {
            answers: answers.into(),
            requests: Vec::new(),
            status_scripted: false,
        };
        let result = authenticate(pam, &args, false, |_| &mut daemon);
        assert!(daemon.answers.is_empty(), "not every answer was asked for");
        (result, daemon.requests)
    }

    const ALL_OUTCOMES: [VerifyOutcome; 6] = [
        VerifyOutcome::Accepted,
        VerifyOutcome::WrongCode,
        VerifyOutcome::Replayed,
        VerifyOutcome::Throttled {
            retry_after_secs: 30,
        },
        VerifyOutcome::NotEnrolled,
        VerifyOutcome::Pending,
    ];

    #[test]
    fn the_account_name_is_used_and_unknown_names_are_refused_never_ignored() {
        // NSS that ignores case: "ALICE" is asked about (status and code)
        // as "alice", the name otpd knows.
        let mut pam = TestPam::new("123456");
        pam.user = Ok(Some(b"ALICE".to_vec()));
        let (code, requests) = run(
            &pam,
            &["nullok"],
            vec![
                status(EnrolmentStatus::Active),
                verified(VerifyOutcome::Accepted),
            ],
        );
        assert_eq!(code, PamError::SUCCESS);
        assert!(
            matches!(&requests[0], Request::Status { user } if user == "alice"),
            "{requests:?}"
        );
        assert!(
            matches!(&requests[1], Request::Verify { user, .. } if user == "alice"),
            "{requests:?}"
        );
        // A record under the spelling typed (enrolled before the module
        // asked about the account's name): still a code, never nullok.
        let mut pam = TestPam::new("123456");
        pam.user = Ok(Some(b"Bob".to_vec()));
        let (code, requests) = run(
            &pam,
            &["nullok"],
            vec![
                status(EnrolmentStatus::NotEnrolled),
                status(EnrolmentStatus::Active),
                verified(VerifyOutcome::WrongCode),
            ],
        );
        assert_eq!(code, PamError::AUTH_ERR);
        assert!(
            matches!(&requests[2], Request::Verify { user, .. } if user == "Bob"),
            "{requests:?}"
        );
        // No such account: the same conversation as an enrolled user (a
        // prompt, the daemon asked: nothing tells which accounts exist),
        // then refused, nullok or not, whatever the daemon answers.
        for args in [&["nullok"][..], &[][..]] {
            let mut pam = TestPam::new("123456");
            pam.user = Ok(Some(b"mallory".to_vec()));
            let (code, requests) = run(
                &pam,
                args,
                vec![
                    status(EnrolmentStatus::NotEnrolled),
                    verified(VerifyOutcome::NotEnrolled),
                ],
            );
            assert_eq!(code, PamError::USER_UNKNOWN, "{args:?}");
            assert_eq!(
                pam.prompts.borrow().len(),
                1,
                "{args:?}: asked like everyone"
            );
            assert!(
                matches!(&requests[1], Request::Verify { user, .. } if user == "mallory"),
                "{requests:?}"
            );
            assert!(
                pam.logged().contains("not known to the system"),
                "{}",
                pam.logged()
            );
        }
        // Even an accepted code (a record under that very spelling) does
        // not let a name that is no account in, nor forward a password.
        let mut pam = TestPam::new("secret123456");
        pam.user = Ok(Some(b"mallory".to_vec()));
        let (code, _) = run(
            &pam,
            &["forward_pass"],
            vec![
                status(EnrolmentStatus::Active),
                verified(VerifyOutcome::Accepted),
            ],
        );
        assert_eq!(code, PamError::USER_UNKNOWN);
        assert!(pam.authtok.borrow().is_none(), "a password was forwarded");
        // The lookup itself failed: fail closed, never ignored.
        let mut pam = TestPam::new("123456");
        pam.user = Ok(Some(b"broken".to_vec()));
        let (code, requests) = run(&pam, &["nullok"], vec![]);
        assert_eq!(code, PamError::AUTHINFO_UNAVAIL);
        assert!(requests.is_empty());
    }

    #[test]
    fn every_outcome_maps_to_its_pam_code() {
        use PamError as E;
        use VerifyOutcome as O;
        let expected = [
            (O::Accepted, E::SUCCESS, E::SUCCESS),
            (O::WrongCode, E::AUTH_ERR, E::AUTH_ERR),
            (O::Replayed, E::AUTH_ERR, E::AUTH_ERR),
            (
                O::Throttled {
                    retry_after_secs: 30,
                },
                E::MAXTRIES,
                E::MAXTRIES,
            ),
            (O::NotEnrolled, E::AUTH_ERR, E::IGNORE),
            (O::Pending, E::AUTH_ERR, E::IGNORE),
        ];
        for (outcome, without_nullok, with_nullok) in expected {
            assert_eq!(outcome_code(outcome, false), without_nullok, "{outcome:?}");
            assert_eq!(
                outcome_code(outcome, true),
                with_nullok,
                "{outcome:?} nullok"
            );
        }
    }

    #[test]
    fn the_whole_flow_without_nullok_prompts_and_maps_every_outcome() {
        for outcome in ALL_OUTCOMES {
            let pam = TestPam::new("123456");
            let (result, requests) = run(&pam, &[], vec![verified(outcome)]);
            assert_eq!(result, outcome_code(outcome, false), "{outcome:?}");
            assert_eq!(*pam.prompts.borrow(), vec!["Verification code: "]);
            assert_eq!(
                requests,
                vec![Request::Verify {
                    user: "alice".into(),
                    code: SecretText::from("123456"),
                    service: "sshd".into(),
                    rhost: "192.0.2.7".into(),
                    ruid: Some(1000),
                }]
            );
        }
    }

    #[test]
    fn the_whole_flow_with_nullok_and_an_active_user_maps_every_outcome() {
        for outcome in ALL_OUTCOMES {
            let pam = TestPam::new("123456");
            let answers = vec![status(EnrolmentStatus::Active), verified(outcome)];
            let (result, requests) = run(&pam, &["nullok"], answers);
            assert_eq!(result, outcome_code(outcome, true), "{outcome:?}");
            assert_eq!(
                requests[0],
                Request::Status {
                    user: "alice".into()
                }
            );
            assert_eq!(requests.len(), 2);
        }
    }

    #[test]
    fn nullok_skips_the_prompt_for_users_without_an_active_enrolment() {
        for state in [EnrolmentStatus::NotEnrolled, EnrolmentStatus::Pending] {
            let pam = TestPam::new("123456");
            let (result, requests) = run(&pam, &["nullok"], vec![status(state)]);
            assert_eq!(result, PamError::IGNORE, "{state:?}");
            assert!(pam.prompts.borrow().is_empty(), "prompted for {state:?}");
            assert_eq!(
                requests,
                vec![Request::Status {
                    user: "alice".into()
                }]
            );
        }
    }

    #[test]
    fn without_nullok_unenrolled_users_are_prompted_like_everyone_and_fail() {
        let pam = TestPam::new("123456");
        let (result, requests) = run(
            &pam,
            &[],
            vec![
                status(EnrolmentStatus::NotEnrolled),
                verified(VerifyOutcome::NotEnrolled),
            ],
        );
        assert_eq!(result, PamError::AUTH_ERR);
        assert_eq!(requests.len(), 2);
        assert!(matches!(requests[1], Request::Verify { .. }));
        assert_eq!(*pam.prompts.borrow(), vec!["Verification code: "]);
    }

    #[test]
    fn sms_typed_at_the_prompt_asks_for_the_texted_code() {
        let phone = || {
            Ok(Response::Status {
                status: EnrolmentStatus::Active,
                digits: Some(6),
                phone: true,
            })
        };
        let mut pam = TestPam::new("sms");
        pam.later_codes = RefCell::new(vec![b"424242".to_vec()].into());
        let (result, requests) = run(
            &pam,
            &["lang=nl"],
            vec![
                phone(),
                verified(VerifyOutcome::SmsSent),
                verified(VerifyOutcome::Accepted),
            ],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(
            *pam.prompts.borrow(),
            vec!["Tokencode (of typ sms): ", "Code uit het sms-bericht: "]
        );
        assert_eq!(
            *pam.infos_shown.borrow(),
            vec![Lang::Nl.sms_sent().to_owned()]
        );
        assert_eq!(requests[1], verify_request("sms"));
        assert_eq!(requests[2], verify_request("424242"));

        // No text possible: said so, and the app's code is asked for.
        let mut pam = TestPam::new("sms");
        pam.later_codes = RefCell::new(vec![b"sms".to_vec()].into());
        let (result, _) = run(
            &pam,
            &[],
            vec![
                phone(),
                verified(VerifyOutcome::SmsUnavailable {
                    retry_after_secs: Some(600),
                }),
                // "sms" again: refused by the module, not sent.
            ],
        );
        assert_eq!(result, PamError::AUTH_ERR);
        assert_eq!(
            *pam.prompts.borrow(),
            vec!["Verification code (or type sms): ", "Verification code: "]
        );
        assert!(pam.errors_shown.borrow()[0].contains("10 minutes"));

        // Without a phone the prompt does not offer it.
        let pam = TestPam::new("123456");
        run(&pam, &[], vec![verified(VerifyOutcome::Accepted)]);
        assert_eq!(*pam.prompts.borrow(), vec!["Verification code: "]);
    }

    #[test]
    fn throttled_shows_a_message_then_returns_maxtries() {
        let pam = TestPam::new("123456");
        let throttled = VerifyOutcome::Throttled {
            retry_after_secs: 42,
        };
        let (result, _) = run(&pam, &[], vec![verified(throttled)]);
        assert_eq!(result, PamError::MAXTRIES);
        assert_eq!(
            *pam.errors_shown.borrow(),
            vec!["Too many failed attempts. Try again in 42 seconds."]
        );
    }

    #[test]
    fn pam_silent_suppresses_the_throttled_message() {
        let pam = TestPam::new("123456");
        let mut daemon = TestDaemon {
            answers: vec![verified(VerifyOutcome::Throttled {
                retry_after_secs: 5,
            })]
            .into(),
            requests: Vec::new(),
            status_scripted: false,
        };
        let result = authenticate(&pam, &[], true, |_| &mut daemon);
        assert_eq!(result, PamError::MAXTRIES);
        assert!(pam.errors_shown.borrow().is_empty());
    }

    #[test]
    fn daemon_errors_map_internal_to_unavailable_and_the_rest_to_auth_err() {
        assert_eq!(error_code(ErrorCode::Internal), PamError::AUTHINFO_UNAVAIL);
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::AlreadyEnrolled,
            ErrorCode::NotPending,
        ] {
            assert_eq!(error_code(code), PamError::AUTH_ERR, "{code:?}");
        }
        let pam = TestPam::new("123456");
        let answer = Ok(Response::Error {
            code: ErrorCode::Internal,
            message: "store unavailable".into(),
        });
        assert_eq!(run(&pam, &[], vec![answer]).0, PamError::AUTHINFO_UNAVAIL);
        assert!(pam.logged().contains("store unavailable"));
        let answer = Ok(Response::Error {
            code: ErrorCode::PermissionDenied,
            message: "not your user".into(),
        });
        let pam = TestPam::new("123456");
        assert_eq!(run(&pam, &[], vec![answer]).0, PamError::AUTH_ERR);
        // The same mapping for the nullok pre-flight.
        let answer = Ok(Response::Error {
            code: ErrorCode::Internal,
            message: "x".into(),
        });
        let pam = TestPam::new("123456");
        assert_eq!(
            run(&pam, &["nullok"], vec![answer]).0,
            PamError::AUTHINFO_UNAVAIL
        );
        assert!(pam.prompts.borrow().is_empty());
    }

    #[test]
    fn unexpected_answers_and_unreachable_daemons_fail_closed() {
        let pam = TestPam::new("123456");
        let answer = Ok(Response::Done {});
        assert_eq!(run(&pam, &[], vec![answer]).0, PamError::AUTHINFO_UNAVAIL);
        let pam = TestPam::new("123456");
        let answers = vec![
            status(EnrolmentStatus::Active),
            status(EnrolmentStatus::Active),
        ];
        assert_eq!(run(&pam, &[], answers).0, PamError::AUTHINFO_UNAVAIL);
        let pam = TestPam::new("123456");
        let mut daemon = TestDaemon {
            answers: vec![verified(VerifyOutcome::Accepted)].into(),
            requests: Vec::new(),
            status_scripted: true,
        };
        assert_eq!(
            authenticate(&pam, &["nullok".to_owned()], false, |_| &mut daemon),
            PamError::AUTHINFO_UNAVAIL,
            "a verify answer to a status request"
        );

        for args in [&[][..], &["nullok"][..]] {
            let pam = TestPam::new("123456");
            let unreachable = Err(ClientError::UntrustedPeer {
                socket: "/run/otpd/otpd.sock".into(),
                uid: 1000,
                daemon_user: "otpd".into(),
            });
            assert_eq!(
                run(&pam, args, vec![unreachable]).0,
                PamError::AUTHINFO_UNAVAIL
            );
            let logged = pam.logged();
            assert!(
                logged.contains("Error: ")
                    && logged.contains("/run/otpd/otpd.sock")
                    && logged.contains("uid 1000"),
                "{logged}"
            );
        }
    }

    #[test]
    fn a_non_utf8_user_is_unknown_and_never_reaches_the_daemon() {
        let mut pam = TestPam::new("123456");
        pam.user = Ok(Some(b"al\xffice".to_vec()));
        let (result, requests) = run(&pam, &[], vec![]);
        assert_eq!(result, PamError::USER_UNKNOWN);
        assert!(requests.is_empty() && pam.prompts.borrow().is_empty());
        assert!(
            pam.logged()
                .contains("user name \"al\\xffice\" is not valid UTF-8"),
            "{}",
            pam.logged()
        );

        pam.user = Ok(None);
        assert_eq!(run(&pam, &[], vec![]).0, PamError::USER_UNKNOWN);
        pam.user = Ok(Some(Vec::new()));
        assert_eq!(run(&pam, &[], vec![]).0, PamError::USER_UNKNOWN);
        pam.user = Err(PamError::CONV_ERR);
        assert_eq!(run(&pam, &[], vec![]).0, PamError::CONV_ERR);
    }

    #[test]
    fn a_failed_conversation_is_conv_err() {
        let mut pam = TestPam::new("");
        pam.code = Err(PamError::BUF_ERR);
        let (result, requests) = run(&pam, &[], vec![]);
        assert_eq!(result, PamError::CONV_ERR);
        assert!(requests.is_empty());
    }

    #[test]
    fn a_non_utf8_code_is_refused_without_asking() {
        let mut pam = TestPam::new("");
        pam.code = Ok(b"12\xff456".to_vec());
        let (result, requests) = run(&pam, &[], vec![]);
        assert_eq!(result, PamError::AUTH_ERR);
        assert!(requests.is_empty());
    }

    #[test]
    fn the_prompt_argument_is_used() {
        let pam = TestPam::new("123456");
        run(
            &pam,
            &["prompt=One-time code: "],
            vec![verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(*pam.prompts.borrow(), vec!["One-time code: "]);
    }

    fn verify_request(code: &str) -> Request {
        Request::Verify {
            user: "alice".into(),
            code: SecretText::from(code),
            service: "sshd".into(),
            rhost: "192.0.2.7".into(),
            ruid: Some(1000),
        }
    }

    #[test]
    fn lang_and_locale_choose_the_prompt_and_prompt_overrides_both() {
        let accepted = || vec![verified(VerifyOutcome::Accepted)];
        let pam = TestPam::new("123456");
        run(&pam, &["lang=nl"], accepted());
        assert_eq!(*pam.prompts.borrow(), vec!["Tokencode: "]);

        let mut pam = TestPam::new("123456");
        pam.locale = vec![("LANG", "nl_NL.UTF-8")];
        run(&pam, &[], accepted());
        assert_eq!(*pam.prompts.borrow(), vec!["Tokencode: "]);

        let mut pam = TestPam::new("123456");
        pam.locale = vec![("LANG", "nl_NL.UTF-8")];
        run(&pam, &["lang=en"], accepted());
        assert_eq!(*pam.prompts.borrow(), vec!["Verification code: "]);

        let pam = TestPam::new("123456");
        run(&pam, &["lang=nl", "prompt=Code: "], accepted());
        assert_eq!(*pam.prompts.borrow(), vec!["Code: "]);

        // Messages follow the language too.
        let pam = TestPam::new("123456");
        let throttled = VerifyOutcome::Throttled {
            retry_after_secs: 42,
        };
        run(&pam, &["lang=nl"], vec![verified(throttled)]);
        assert_eq!(
            *pam.errors_shown.borrow(),
            vec!["Te veel mislukte pogingen. Probeer het over 42 seconden opnieuw."]
        );
    }

    #[test]
    fn an_unreachable_daemon_is_explained_to_the_person_unless_silent() {
        let unreachable = || {
            vec![Err(ClientError::UntrustedPeer {
                socket: "/s".into(),
                uid: 1,
                daemon_user: "otpd".into(),
            })]
        };
        let pam = TestPam::new("123456");
        assert_eq!(
            run(&pam, &["lang=nl"], unreachable()).0,
            PamError::AUTHINFO_UNAVAIL
        );
        assert_eq!(
            *pam.errors_shown.borrow(),
            vec![Lang::Nl.unavailable().to_owned()]
        );
        let pam = TestPam::new("123456");
        let mut daemon = TestDaemon {
            answers: unreachable().into(),
            requests: Vec::new(),
            status_scripted: false,
        };
        authenticate(&pam, &[], true, |_| &mut daemon);
        assert!(pam.errors_shown.borrow().is_empty());
    }

    #[test]
    fn use_first_pass_takes_the_code_from_pam_authtok_without_prompting() {
        let pam = TestPam::new("999999");
        *pam.authtok.borrow_mut() = Some(b"123456".to_vec());
        let (result, requests) = run(
            &pam,
            &["use_first_pass"],
            vec![verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert!(pam.prompts.borrow().is_empty());
        assert_eq!(requests, vec![verify_request("123456")]);

        // A wrong code in PAM_AUTHTOK is final: no second chance, no prompt.
        let pam = TestPam::new("999999");
        *pam.authtok.borrow_mut() = Some(b"111111".to_vec());
        let (result, requests) = run(
            &pam,
            &["use_first_pass"],
            vec![verified(VerifyOutcome::WrongCode)],
        );
        assert_eq!(result, PamError::AUTH_ERR);
        assert!(pam.prompts.borrow().is_empty());
        assert_eq!(requests, vec![verify_request("111111")]);

        // Not a code (pam_unix's password): refused, and never sent to otpd.
        for authtok in [&b"hunter2"[..], b"", b"12\xff456"] {
            let pam = TestPam::new("999999");
            *pam.authtok.borrow_mut() = Some(authtok.to_vec());
            let (result, requests) = run(&pam, &["use_first_pass"], vec![]);
            assert_eq!(result, PamError::AUTH_ERR, "{authtok:?}");
            assert!(requests.is_empty() && pam.prompts.borrow().is_empty());
            assert!(pam.logged().contains("is not a code"), "{}", pam.logged());
            assert!(!pam.logged().contains("hunter2"));
        }

        // Nothing from an earlier module: refused before the daemon is asked.
        let pam = TestPam::new("999999");
        let (result, requests) = run(&pam, &["use_first_pass"], vec![]);
        assert_eq!(result, PamError::AUTHTOK_RECOVERY_ERR);
        assert!(requests.is_empty() && pam.prompts.borrow().is_empty());
        assert!(pam.logged().contains("use_first_pass: no PAM_AUTHTOK"));
    }

    #[test]
    fn try_first_pass_uses_a_code_shaped_authtok_and_asks_otherwise() {
        // A code from the earlier module: used, no prompt.
        let pam = TestPam::new("999999");
        *pam.authtok.borrow_mut() = Some(b"123 456".to_vec());
        let (result, requests) = run(
            &pam,
            &["try_first_pass"],
            vec![verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert!(pam.prompts.borrow().is_empty());
        assert_eq!(requests, vec![verify_request("123 456")]);

        // A password (not code-shaped) or nothing: prompt, and only the
        // typed code reaches the daemon.
        for authtok in [Some(b"correct horse".to_vec()), None] {
            let pam = TestPam::new("654321");
            *pam.authtok.borrow_mut() = authtok;
            let (result, requests) = run(
                &pam,
                &["try_first_pass"],
                vec![verified(VerifyOutcome::Accepted)],
            );
            assert_eq!(result, PamError::SUCCESS);
            assert_eq!(*pam.prompts.borrow(), vec!["Verification code: "]);
            assert_eq!(requests, vec![verify_request("654321")]);
        }

        // Code-shaped but wrong (a six-digit password): asked once more.
        let pam = TestPam::new("654321");
        *pam.authtok.borrow_mut() = Some(b"111111".to_vec());
        let (result, requests) = run(
            &pam,
            &["try_first_pass"],
            vec![
                verified(VerifyOutcome::WrongCode),
                verified(VerifyOutcome::Accepted),
            ],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(pam.prompts.borrow().len(), 1);
        assert_eq!(
            requests,
            vec![verify_request("111111"), verify_request("654321")]
        );

        // A replayed or throttled authtok is final.
        for outcome in [
            VerifyOutcome::Replayed,
            VerifyOutcome::Throttled {
                retry_after_secs: 3,
            },
        ] {
            let pam = TestPam::new("654321");
            *pam.authtok.borrow_mut() = Some(b"111111".to_vec());
            let (result, _) = run(&pam, &["try_first_pass"], vec![verified(outcome)]);
            assert_eq!(result, outcome_code(outcome, false));
            assert!(pam.prompts.borrow().is_empty(), "{outcome:?}");
        }
    }

    #[test]
    fn forward_pass_splits_the_code_off_and_forwards_the_password() {
        let pam = TestPam::new("s3cret pass123456");
        let (result, requests) = run(
            &pam,
            &["forward_pass"],
            vec![status_digits(6), verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(
            *pam.prompts.borrow(),
            vec!["Password + verification code: "]
        );
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"s3cret pass"[..]));
        assert_eq!(requests[1], verify_request("123456"));

        // Eight digits when the user's enrolment has eight; Dutch prompt.
        let pam = TestPam::new("pw12345678");
        let (_, requests) = run(
            &pam,
            &["forward_pass", "lang=nl"],
            vec![status_digits(8), verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(*pam.prompts.borrow(), vec!["Wachtwoord + tokencode: "]);
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"pw"[..]));
        assert_eq!(requests[1], verify_request("12345678"));

        // A wrong code: the password is not handed on, so a stack where
        // this module's failure is not fatal cannot log in with it alone.
        for outcome in [
            VerifyOutcome::WrongCode,
            VerifyOutcome::Replayed,
            VerifyOutcome::Throttled {
                retry_after_secs: 9,
            },
        ] {
            let pam = TestPam::new("pw000000");
            let (result, _) = run(
                &pam,
                &["forward_pass"],
                vec![status_digits(6), verified(outcome)],
            );
            assert_eq!(result, outcome_code(outcome, false));
            assert_eq!(pam.authtok.borrow().as_deref(), None, "{outcome:?}");
        }

        // Any bytes as the password, as pam_unix accepts.
        let mut pam = TestPam::new("");
        pam.code = Ok(b"p\xffw123456".to_vec());
        let (result, _) = run(
            &pam,
            &["forward_pass"],
            vec![status_digits(6), verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"p\xffw"[..]));

        // A digit count no enrolment can have: the daemon is not believed.
        for digits in [0, 5, 9, 255] {
            let pam = TestPam::new("pw123456");
            let (result, requests) = run(&pam, &["forward_pass"], vec![status_digits(digits)]);
            assert_eq!(result, PamError::AUTHINFO_UNAVAIL, "{digits}");
            assert_eq!(requests.len(), 1);
            assert!(pam.prompts.borrow().is_empty());
        }

        // No code at the end: refused without asking the daemon to verify.
        let pam = TestPam::new("just-a-password");
        let (result, requests) = run(&pam, &["forward_pass"], vec![status_digits(6)]);
        assert_eq!(result, PamError::AUTH_ERR);
        assert_eq!(requests.len(), 1);
        assert!(pam.logged().contains("does not end in a 6-digit code"));
    }

    #[test]
    fn forward_pass_for_users_without_a_token() {
        // Without nullok: the same prompt as everyone, and refused.
        let pam = TestPam::new("pw123456");
        let (result, requests) = run(
            &pam,
            &["forward_pass"],
            vec![
                status(EnrolmentStatus::NotEnrolled),
                verified(VerifyOutcome::NotEnrolled),
            ],
        );
        assert_eq!(result, PamError::AUTH_ERR);
        assert_eq!(
            *pam.prompts.borrow(),
            vec!["Password + verification code: "]
        );
        assert_eq!(requests[1], verify_request("123456"));

        // With nullok: the password alone, forwarded, and IGNORE.
        let pam = TestPam::new("only-the-password");
        let (result, requests) = run(
            &pam,
            &["forward_pass", "nullok"],
            vec![status(EnrolmentStatus::Pending)],
        );
        assert_eq!(result, PamError::IGNORE);
        assert_eq!(*pam.prompts.borrow(), vec!["Password: "]);
        assert_eq!(
            pam.authtok.borrow().as_deref(),
            Some(&b"only-the-password"[..])
        );
        assert_eq!(requests.len(), 1);
    }

    #[test]
    fn forward_pass_with_first_pass_splits_pam_authtok() {
        // use_first_pass: the combined answer comes from PAM_AUTHTOK, and
        // PAM_AUTHTOK becomes the password alone.
        let pam = TestPam::new("never-asked");
        *pam.authtok.borrow_mut() = Some(b"hunter2123456".to_vec());
        let (result, requests) = run(
            &pam,
            &["forward_pass", "use_first_pass"],
            vec![status_digits(6), verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert!(pam.prompts.borrow().is_empty());
        assert_eq!(requests[1], verify_request("123456"));
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"hunter2"[..]));

        // use_first_pass with no code at the end: refused, never asked.
        let pam = TestPam::new("never-asked");
        *pam.authtok.borrow_mut() = Some(b"hunter2".to_vec());
        let (result, requests) = run(
            &pam,
            &["forward_pass", "use_first_pass"],
            vec![status_digits(6)],
        );
        assert_eq!(result, PamError::AUTH_ERR);
        assert!(pam.prompts.borrow().is_empty() && requests.len() == 1);

        // try_first_pass: the same without a code at the end means asking.
        let pam = TestPam::new("pw654321");
        *pam.authtok.borrow_mut() = Some(b"hunter2".to_vec());
        let (result, requests) = run(
            &pam,
            &["forward_pass", "try_first_pass"],
            vec![status_digits(6), verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(
            *pam.prompts.borrow(),
            vec!["Password + verification code: "]
        );
        assert_eq!(requests[1], verify_request("654321"));
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"pw"[..]));

        // nullok, no token, the password already there: nothing asked.
        let pam = TestPam::new("never-asked");
        *pam.authtok.borrow_mut() = Some(b"hunter2".to_vec());
        let (result, _) = run(
            &pam,
            &["forward_pass", "try_first_pass", "nullok"],
            vec![status(EnrolmentStatus::NotEnrolled)],
        );
        assert_eq!(result, PamError::IGNORE);
        assert!(pam.prompts.borrow().is_empty());
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"hunter2"[..]));
    }

    #[test]
    fn try_first_pass_asking_again_can_still_fail() {
        let pam = TestPam::new("654321");
        *pam.authtok.borrow_mut() = Some(b"111111".to_vec());
        let (result, requests) = run(
            &pam,
            &["try_first_pass"],
            vec![
                verified(VerifyOutcome::WrongCode),
                verified(VerifyOutcome::WrongCode),
            ],
        );
        assert_eq!(result, PamError::AUTH_ERR);
        assert_eq!(requests.len(), 2);
        // PAM_AUTHTOK that is not UTF-8: asked, not sent.
        let pam = TestPam::new("654321");
        *pam.authtok.borrow_mut() = Some(b"12\xff456".to_vec());
        let (result, requests) = run(
            &pam,
            &["try_first_pass"],
            vec![verified(VerifyOutcome::Accepted)],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(requests, vec![verify_request("654321")]);
    }

    #[test]
    fn code_shapes_and_splits() {
        for yes in ["123456", "12345678", " 123 456 ", "1234 5678", "1234567"] {
            assert!(looks_like_code(yes), "{yes:?}");
        }
        for no in ["12345", "123456789", "12a456", "1 2 3456", "", "password"] {
            assert!(!looks_like_code(no), "{no:?}");
        }
        assert_eq!(split_forward_pass(b"abc123456", 6), Some(3));
        assert_eq!(split_forward_pass(b"123456", 6), Some(0));
        assert_eq!(split_forward_pass(b"12345", 6), None);
        assert_eq!(split_forward_pass(b"abc12345x", 6), None);
        assert_eq!(split_forward_pass(b"abc", 0), None);
        assert_eq!(
            split_forward_pass("wachtwoordé12345678".as_bytes(), 8),
            Some(12)
        );
    }

    #[test]
    fn argument_warnings_are_logged_and_debug_never_logs_the_code() {
        let pam = TestPam::new("314159");
        let answers = vec![
            status(EnrolmentStatus::Active),
            verified(VerifyOutcome::WrongCode),
        ];
        run(&pam, &["debug", "nullok", "bogus"], answers);
        let logged = pam.logged();
        assert!(
            logged.contains("Warning: unknown argument \"bogus\""),
            "{logged}"
        );
        assert!(logged.contains("Debug: "), "{logged}");
        assert!(logged.contains("WrongCode"), "{logged}");
        assert!(!logged.contains("314159"), "{logged}");
    }

    #[test]
    fn the_client_is_built_from_the_parsed_arguments() {
        let pam = TestPam::new("123456");
        let mut daemon = TestDaemon {
            answers: vec![verified(VerifyOutcome::Accepted)].into(),
            requests: Vec::new(),
            status_scripted: false,
        };
        let mut seen = None;
        let args = vec!["socket=/tmp/s".to_owned(), "timeout=0.5".to_owned()];
        let result = authenticate(&pam, &args, false, |args| {
            seen = Some(args.clone());
            &mut daemon
        });
        assert_eq!(result, PamError::SUCCESS);
        let seen = seen.unwrap();
        assert_eq!(seen.socket, "/tmp/s");
        assert_eq!(seen.timeout, std::time::Duration::from_millis(500));
    }
}
