//! The module's side of a login, written against two small traits (the PAM
//! side and the daemon side) so that it is unit-tested without libpam. The
//! daemon leads the conversation (`otpd/src/core/login.rs` decides every
//! step); this side resolves PAM_USER, sends what it knows, shows the
//! daemon's prompts and messages in the person's language, returns the
//! answers, and maps the outcome to a PAM return code. Nothing here decides
//! whether a login succeeds.
#![forbid(unsafe_code)]

use crate::args::{parse_args, FirstPass, ModuleArgs};
use crate::texts::Lang;
use otpd_proto::{
    looks_like_code, split_forward_pass, Authtok, Client, ClientError, Connection, ErrorCode,
    Language, LoginOutcome, LoginStart, Message, Prompt, Request, Response, SecretText, Step,
};
use pamsm::PamError;
use std::time::Duration;
use zeroize::Zeroizing;

/// The longest a login waits for a phone's approval on top of `timeout=`:
/// `[approve] timeout`'s ceiling (the daemon never asks for more).
const MAX_APPROVE_WAIT_SECS: u64 = 300;

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
    /// PAM_TTY, empty when unset.
    fn tty(&self) -> String;
    /// `SSH_AUTH_INFO_0` of the PAM environment (what sshd verified before
    /// this module), when set.
    fn auth_info(&self) -> Option<String>;
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

/// The daemon's side of one login conversation.
pub trait Daemon {
    /// Connects and sends the login's start; the daemon's first step.
    fn begin(&mut self, start: &LoginStart) -> Result<Response, ClientError>;
    /// Sends the answer to the last prompt; the next step, which may take
    /// `wait` on top of the timeout (the daemon waits for a phone).
    fn answer(
        &mut self,
        answer: Option<SecretText>,
        wait: Duration,
    ) -> Result<Response, ClientError>;
    /// The next step after a message (which needs no answer).
    fn next(&mut self) -> Result<Response, ClientError>;
}

/// The real daemon: one connection per login through the protocol crate's
/// blocking client (its deadline covers each exchange; the person's typing
/// time is not counted).
pub struct SocketDaemon {
    client: Client,
    connection: Option<Connection>,
}

impl SocketDaemon {
    /// The daemon the arguments name.
    pub fn new(args: &ModuleArgs) -> Self {
        Self {
            client: Client::new(args.socket.clone(), args.timeout, args.daemon_user.clone()),
            connection: None,
        }
    }

    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        self.connection
            .as_mut()
            .ok_or_else(|| ClientError::Exchange {
                socket: self.client.socket.clone(),
                error: otpd_proto::ProtoError::Eof,
            })
    }
}

impl Daemon for SocketDaemon {
    fn begin(&mut self, start: &LoginStart) -> Result<Response, ClientError> {
        let mut connection = self.client.connect()?;
        let first = connection.ask(&Request::Login(Box::new(start.clone())));
        self.connection = Some(connection);
        first
    }

    fn answer(
        &mut self,
        answer: Option<SecretText>,
        wait: Duration,
    ) -> Result<Response, ClientError> {
        let connection = self.connection()?;
        connection.extend_deadline(wait);
        connection.ask(&Request::Answer { answer })
    }

    fn next(&mut self) -> Result<Response, ClientError> {
        self.connection()?.receive()
    }
}

/// One login: the parsed arguments, the PAM side and the language.
struct Login<'a, H> {
    pam: &'a H,
    args: ModuleArgs,
    lang: Lang,
    silent: bool,
}

/// Runs `pam_sm_authenticate`: `raw_args` as libpam passed them, `silent`
/// for PAM_SILENT, `connect` builds the daemon from the arguments.
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
    let mut daemon = connect(&args);
    let login = Login {
        pam,
        args,
        lang,
        silent,
    };
    match login.run(&mut daemon) {
        Ok(code) | Err(code) => code,
    }
}

impl<H: LoginHandler> Login<'_, H> {
    fn debug(&self, message: &str) {
        if self.args.debug {
            self.pam.log(LogLevel::Debug, message);
        }
    }

    /// The whole login; `Err` carries an early PAM return code.
    fn run(&self, daemon: &mut impl Daemon) -> Result<PamError, PamError> {
        let (user, typed, known) = self.user()?;
        let start = LoginStart {
            service: self.pam.service(),
            rhost: self.pam.rhost(),
            tty: self.pam.tty(),
            ruid: self.pam.real_uid(),
            nullok: self.args.nullok,
            forward_pass: self.args.forward_pass,
            first_pass: self.args.first_pass,
            language: match self.lang {
                Lang::En => Language::En,
                Lang::Nl => Language::Nl,
            },
            authtok: self.authtok()?,
            // Whether, not what: the password stays where it is.
            authtok_set: matches!(self.pam.authtok(), Ok(Some(_))),
            // Only what fits a frame; a longer one is no key line sshd wrote.
            auth_info: self
                .pam
                .auth_info()
                .filter(|info| info.len() <= otpd_proto::MAX_AUTH_INFO),
            user,
            typed,
            known,
        };
        self.debug(&format!(
            "user \"{}\" service \"{}\" rhost \"{}\" socket {} timeout {:?} lang {:?}{}{}{}",
            start.user.escape_debug(),
            start.service.escape_debug(),
            start.rhost.escape_debug(),
            self.args.socket,
            self.args.timeout,
            self.lang,
            if start.nullok { " nullok" } else { "" },
            if start.forward_pass {
                " forward_pass"
            } else {
                ""
            },
            match start.first_pass {
                FirstPass::Prompt => "",
                FirstPass::Use => " use_first_pass",
                FirstPass::Try => " try_first_pass",
            },
        ));
        // The password of forward_pass, kept here for the next module: it
        // never goes to the daemon.
        let mut password: Option<Zeroizing<Vec<u8>>> = None;
        // The enrolment's QR code and key, or the recovery codes: shown as
        // the start of the next prompt, not as a message. sshd passes a
        // message to the client as keyboard-interactive's instruction,
        // which the OpenSSH client prints through its log (escaped, cut at
        // 1 KiB); a prompt reaches the terminal as it is.
        let mut preamble: Option<Zeroizing<String>> = None;
        let mut reply = daemon.begin(&start);
        drop(start);
        loop {
            let step = match reply {
                Ok(Response::Step(step)) => step,
                other => return Ok(self.failed(other)),
            };
            self.debug(&format!("otpd: {step:?}"));
            reply = match step {
                Step::Prompt { prompt } => {
                    let typed = match preamble.take() {
                        Some(text) => {
                            let shown =
                                Zeroizing::new(format!("{}\n{}", *text, self.prompt_text(prompt)));
                            self.ask(&shown)?
                        }
                        None => self.ask(&self.prompt_text(prompt))?,
                    };
                    let wait = match prompt {
                        // At most the request's remaining time (the
                        // daemon's own limit), on top of `timeout=`.
                        Prompt::ApproveNumber { wait_secs, .. } => {
                            Duration::from_secs(wait_secs.min(MAX_APPROVE_WAIT_SECS))
                        }
                        _ => Duration::ZERO,
                    };
                    let answer = self.take_answer(prompt, typed, &mut password);
                    daemon.answer(answer, wait)
                }
                Step::FromAuthtok { digits } => {
                    let authtok = self.pam.authtok().inspect_err(|error| {
                        self.pam
                            .log(LogLevel::Error, &format!("cannot get PAM_AUTHTOK: {error}"));
                    })?;
                    let answer = match authtok {
                        Some(authtok) => self.take_answer(
                            Prompt::PasswordAndCode { digits },
                            authtok,
                            &mut password,
                        ),
                        None => None,
                    };
                    daemon.answer(answer, Duration::ZERO)
                }
                Step::Enrolment {
                    issuer,
                    account,
                    qr,
                    secret,
                } => {
                    // Shown even with PAM_SILENT (the login cannot go on
                    // without it), with the next prompt; kept no longer.
                    preamble = Some(Zeroizing::new(self.lang.enrolment(
                        &issuer,
                        &account,
                        qr.expose(),
                        secret.expose(),
                    )));
                    daemon.next()
                }
                Step::RecoveryCodes { codes } => {
                    let shown: Vec<&str> = codes.iter().map(|c| c.expose()).collect();
                    preamble = Some(Zeroizing::new(self.lang.recovery_codes(&shown)));
                    daemon.next()
                }
                Step::Info { message } => {
                    if !self.silent {
                        let _ = self.pam.info_message(&self.message_text(message));
                    }
                    daemon.next()
                }
                Step::Error { message } => {
                    self.tell(&self.message_text(message));
                    daemon.next()
                }
                Step::End {
                    outcome,
                    forward_password,
                } => {
                    if forward_password {
                        if let Some(password) = &password {
                            self.forward(password)?;
                        }
                    }
                    return Ok(pam_code(outcome));
                }
            };
        }
    }

    /// What goes back to the daemon for an answer to `prompt`: the code
    /// (text); the password of forward_pass stays in `password`.
    fn take_answer(
        &self,
        prompt: Prompt,
        typed: Zeroizing<Vec<u8>>,
        password: &mut Option<Zeroizing<Vec<u8>>>,
    ) -> Option<SecretText> {
        match prompt {
            Prompt::Password => {
                *password = Some(typed);
                None
            }
            Prompt::PasswordAndCode { digits } => {
                let Some(split) = split_forward_pass(&typed, usize::from(digits)) else {
                    self.pam.log(
                        LogLevel::Notice,
                        &format!("forward_pass: the answer does not end in a {digits}-digit code"),
                    );
                    return None;
                };
                *password = Some(Zeroizing::new(typed[..split].to_vec()));
                // The tail is ASCII digits, so valid UTF-8.
                Some(SecretText::from(
                    String::from_utf8_lossy(&typed[split..]).as_ref(),
                ))
            }
            // The number's prompt waits for Enter; what was typed is not
            // needed (an empty answer).
            Prompt::ApproveNumber { .. } => Some(SecretText::from("")),
            Prompt::Continue => Some(SecretText::from("")),
            Prompt::Code { .. }
            | Prompt::CodeOrApprove { .. }
            | Prompt::TextedCode
            | Prompt::FirstCode => match std::str::from_utf8(&typed) {
                Ok(code) => Some(SecretText::from(code)),
                Err(_) => {
                    self.pam
                        .log(LogLevel::Notice, "the code typed is not valid UTF-8");
                    None
                }
            },
        }
    }

    /// PAM_AUTHTOK for the daemon, with `use_first_pass`/`try_first_pass`:
    /// only text shaped like a code is sent; an earlier module's password
    /// never is (with forward_pass the daemon asks for its code part).
    fn authtok(&self) -> Result<Authtok, PamError> {
        if self.args.first_pass == FirstPass::Prompt {
            return Ok(Authtok::Absent);
        }
        let authtok = self.pam.authtok().inspect_err(|error| {
            self.pam
                .log(LogLevel::Error, &format!("cannot get PAM_AUTHTOK: {error}"));
        })?;
        Ok(match authtok {
            None => Authtok::Absent,
            Some(_) if self.args.forward_pass => Authtok::Held,
            Some(authtok) => match std::str::from_utf8(&authtok) {
                Ok(text) if looks_like_code(text) => Authtok::Code(SecretText::from(text)),
                _ => Authtok::Held,
            },
        })
    }

    /// The account PAM_USER is, as the user database spells it, PAM_USER
    /// as typed, and `true`; or PAM_USER twice and `false` when it is no
    /// account (the daemon then refuses the login with PAM_USER_UNKNOWN,
    /// after the usual conversation). `Err`: the PAM code that ends the login.
    fn user(&self) -> Result<(String, String, bool), PamError> {
        let name = self.pam_user()?;
        // The account's own spelling (design.md §7): under an NSS that
        // ignores case, "ALICE" must not be a user otpd has never heard
        // of, whom nullok lets through without a code.
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

    /// The text of `prompt` in the person's language; `prompt=` replaces
    /// the code prompts.
    fn prompt_text(&self, prompt: Prompt) -> String {
        let default = match prompt {
            Prompt::Code { sms: true } => self.lang.code_prompt_with_sms(),
            Prompt::Code { sms: false } => self.lang.code_prompt(),
            Prompt::TextedCode => return self.lang.texted_code_prompt().to_owned(),
            Prompt::FirstCode => return self.lang.first_code_prompt().to_owned(),
            Prompt::Continue => return self.lang.continue_prompt().to_owned(),
            // The approval prompts are not code prompts: `prompt=` keeps them.
            Prompt::CodeOrApprove { .. } => return self.lang.code_or_approve_prompt().to_owned(),
            Prompt::ApproveNumber { number, .. } => return self.lang.approve_number_prompt(number),
            Prompt::Password => return self.lang.password_prompt().to_owned(),
            Prompt::PasswordAndCode { .. } => self.lang.password_and_code_prompt(),
        };
        self.args
            .prompt
            .clone()
            .unwrap_or_else(|| default.to_owned())
    }

    /// The text of `message` in the person's language.
    fn message_text(&self, message: Message) -> String {
        match message {
            Message::SmsSent => self.lang.sms_sent().to_owned(),
            Message::SmsUnavailable { retry_after_secs } => {
                self.lang.sms_unavailable(retry_after_secs)
            }
            Message::Throttled { retry_after_secs } => self.lang.throttled(retry_after_secs),
            Message::Unavailable => self.lang.unavailable().to_owned(),
            Message::ApproveExpired => self.lang.approve_expired().to_owned(),
            Message::WrongFirstCode => self.lang.wrong_first_code().to_owned(),
            Message::ApproveDenied => self.lang.approve_denied().to_owned(),
            Message::ApproveWrongNumber => self.lang.approve_wrong_number().to_owned(),
            Message::ApproveUnavailable { retry_after_secs } => {
                self.lang.approve_unavailable(retry_after_secs)
            }
        }
    }

    /// Shows an error message unless PAM_SILENT; a host that cannot show
    /// it loses nothing, the return code says the same.
    fn tell(&self, text: &str) {
        if !self.silent {
            let _ = self.pam.error_message(text);
        }
    }

    /// Any answer but a step: logged, and the PAM code for it.
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

/// The PAM code of the daemon's outcome.
pub fn pam_code(outcome: LoginOutcome) -> PamError {
    match outcome {
        LoginOutcome::Success => PamError::SUCCESS,
        LoginOutcome::Ignore => PamError::IGNORE,
        LoginOutcome::AuthErr => PamError::AUTH_ERR,
        LoginOutcome::UserUnknown => PamError::USER_UNKNOWN,
        LoginOutcome::MaxTries => PamError::MAXTRIES,
        LoginOutcome::AuthinfoUnavail => PamError::AUTHINFO_UNAVAIL,
        LoginOutcome::AuthtokRecoveryErr => PamError::AUTHTOK_RECOVERY_ERR,
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
        Response::Enrolled(_) => "enrolled",
        Response::Link { .. } => "link",
        Response::RecoveryCodes { .. } => "recovery_codes",
        Response::DaemonStatus(_) => "daemon_status",
        Response::Users { .. } => "users",
        Response::Done {} => "done",
        Response::Imported { .. } => "imported",
        Response::Resynced { .. } => "resynced",
        Response::Step(_) => "step",
        Response::Confirmed { .. } => "confirmed",
        Response::Forgotten { .. } => "forgotten",
        Response::Error { .. } => "error",
        Response::OwnDevices { .. } => "own_devices",
        Response::Activity { .. } => "activity",
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
    use otpd_proto::ProtoError;
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
        fn tty(&self) -> String {
            "pts/3".into()
        }
        fn auth_info(&self) -> Option<String> {
            None
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

    /// A scripted daemon: steps in order; records the start and answers.
    #[derive(Default)]
    struct TestDaemon {
        replies: VecDeque<Result<Response, ClientError>>,
        start: Option<LoginStart>,
        answers: Vec<Option<String>>,
        nexts: usize,
    }

    impl Daemon for &mut TestDaemon {
        fn begin(&mut self, start: &LoginStart) -> Result<Response, ClientError> {
            assert!(self.start.is_none(), "one login per connection");
            self.start = Some(start.clone());
            self.replies.pop_front().expect("no reply scripted")
        }
        fn answer(
            &mut self,
            answer: Option<SecretText>,
            _wait: Duration,
        ) -> Result<Response, ClientError> {
            self.answers.push(answer.map(|a| a.expose().to_owned()));
            self.replies.pop_front().expect("no reply scripted")
        }
        fn next(&mut self) -> Result<Response, ClientError> {
            self.nexts += 1;
            self.replies.pop_front().expect("no reply scripted")
        }
    }

    fn step(step: Step) -> Result<Response, ClientError> {
        Ok(Response::Step(step))
    }

    fn prompt(prompt: Prompt) -> Result<Response, ClientError> {
        step(Step::Prompt { prompt })
    }

    fn end(outcome: LoginOutcome) -> Result<Response, ClientError> {
        step(Step::End {
            outcome,
            forward_password: false,
        })
    }

    fn run_with(
        pam: &TestPam,
        args: &[&str],
        silent: bool,
        replies: Vec<Result<Response, ClientError>>,
    ) -> (PamError, TestDaemon) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut daemon = TestDaemon {
            replies: replies.into(),
            ..TestDaemon::default()
        };
        let result = authenticate(pam, &args, silent, |_| &mut daemon);
        assert!(daemon.replies.is_empty(), "not every reply was read");
        (result, daemon)
    }

    fn run(
        pam: &TestPam,
        args: &[&str],
        replies: Vec<Result<Response, ClientError>>,
    ) -> (PamError, TestDaemon) {
        run_with(pam, args, false, replies)
    }

    #[test]
    fn every_outcome_maps_to_its_pam_code() {
        for (outcome, code) in [
            (LoginOutcome::Success, PamError::SUCCESS),
            (LoginOutcome::Ignore, PamError::IGNORE),
            (LoginOutcome::AuthErr, PamError::AUTH_ERR),
            (LoginOutcome::UserUnknown, PamError::USER_UNKNOWN),
            (LoginOutcome::MaxTries, PamError::MAXTRIES),
            (LoginOutcome::AuthinfoUnavail, PamError::AUTHINFO_UNAVAIL),
            (
                LoginOutcome::AuthtokRecoveryErr,
                PamError::AUTHTOK_RECOVERY_ERR,
            ),
        ] {
            let pam = TestPam::new("123456");
            let (result, _) = run(&pam, &[], vec![end(outcome)]);
            assert_eq!(result, code, "{outcome:?}");
        }
    }

    #[test]
    fn the_start_says_what_the_module_knows() {
        let pam = TestPam::new("123456");
        let (_, daemon) = run(
            &pam,
            &["nullok", "lang=nl"],
            vec![end(LoginOutcome::Ignore)],
        );
        let start = daemon.start.unwrap();
        assert_eq!(
            (start.user.as_str(), start.typed.as_str(), start.known),
            ("alice", "alice", true)
        );
        assert_eq!(
            (
                start.service.as_str(),
                start.rhost.as_str(),
                start.tty.as_str(),
                start.ruid
            ),
            ("sshd", "192.0.2.7", "pts/3", 1000)
        );
        assert!(start.nullok && !start.forward_pass);
        assert_eq!(start.first_pass, FirstPass::Prompt);
        assert_eq!(start.language, Language::Nl);
        assert_eq!(start.authtok, Authtok::Absent);
    }

    #[test]
    fn the_account_name_is_used_and_unknown_names_go_to_the_daemon_as_unknown() {
        let mut pam = TestPam::new("123456");
        pam.user = Ok(Some(b"ALICE".to_vec()));
        let (_, daemon) = run(&pam, &[], vec![end(LoginOutcome::AuthErr)]);
        let start = daemon.start.unwrap();
        assert_eq!(
            (start.user.as_str(), start.typed.as_str(), start.known),
            ("alice", "ALICE", true)
        );

        pam.user = Ok(Some(b"mallory".to_vec()));
        let (result, daemon) = run(&pam, &["nullok"], vec![end(LoginOutcome::UserUnknown)]);
        let start = daemon.start.unwrap();
        assert_eq!((start.user.as_str(), start.known), ("mallory", false));
        assert_eq!(result, PamError::USER_UNKNOWN);
        assert!(
            pam.logged().contains("not known to the system"),
            "{}",
            pam.logged()
        );

        // A failed lookup: no answer can be trusted, the daemon is not asked.
        pam.user = Ok(Some(b"broken".to_vec()));
        let (result, daemon) = run(&pam, &[], vec![]);
        assert_eq!(result, PamError::AUTHINFO_UNAVAIL);
        assert!(daemon.start.is_none());
    }

    #[test]
    fn a_non_utf8_user_is_unknown_and_never_reaches_the_daemon() {
        let mut pam = TestPam::new("123456");
        pam.user = Ok(Some(b"al\xffice".to_vec()));
        let (result, daemon) = run(&pam, &[], vec![]);
        assert_eq!(result, PamError::USER_UNKNOWN);
        assert!(daemon.start.is_none());
        assert!(pam.logged().contains("al\\xffice"), "{}", pam.logged());
    }

    #[test]
    fn prompts_are_rendered_in_the_language_and_answers_returned() {
        let pam = TestPam::new("123456");
        let (result, daemon) = run(
            &pam,
            &["lang=nl"],
            vec![
                prompt(Prompt::Code { sms: true }),
                end(LoginOutcome::Success),
            ],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(*pam.prompts.borrow(), [Lang::Nl.code_prompt_with_sms()]);
        assert_eq!(daemon.answers, [Some("123456".to_owned())]);

        // prompt= replaces the code prompt, not the texted-code one.
        let pam = TestPam::new("123456");
        run(
            &pam,
            &["prompt=Token: "],
            vec![
                prompt(Prompt::Code { sms: false }),
                prompt(Prompt::TextedCode),
                end(LoginOutcome::AuthErr),
            ],
        );
        assert_eq!(
            *pam.prompts.borrow(),
            ["Token: ", Lang::En.texted_code_prompt()]
        );
    }

    #[test]
    fn messages_are_shown_unless_silent() {
        let replies = || {
            vec![
                step(Step::Info {
                    message: Message::SmsSent,
                }),
                step(Step::Error {
                    message: Message::Throttled {
                        retry_after_secs: 30,
                    },
                }),
                end(LoginOutcome::MaxTries),
            ]
        };
        let pam = TestPam::new("123456");
        let (result, daemon) = run(&pam, &[], replies());
        assert_eq!(result, PamError::MAXTRIES);
        assert_eq!(daemon.nexts, 2);
        assert_eq!(*pam.infos_shown.borrow(), [Lang::En.sms_sent()]);
        assert_eq!(*pam.errors_shown.borrow(), [Lang::En.throttled(30)]);
        let pam = TestPam::new("123456");
        let (result, _) = run_with(&pam, &[], true, replies());
        assert_eq!(result, PamError::MAXTRIES);
        assert!(pam.infos_shown.borrow().is_empty() && pam.errors_shown.borrow().is_empty());
    }

    #[test]
    fn a_non_utf8_code_is_sent_as_no_answer() {
        let mut pam = TestPam::new("");
        pam.code = Ok(b"12\xff456".to_vec());
        let (_, daemon) = run(
            &pam,
            &[],
            vec![
                prompt(Prompt::Code { sms: false }),
                end(LoginOutcome::AuthErr),
            ],
        );
        assert_eq!(daemon.answers, [None]);
    }

    #[test]
    fn a_failed_conversation_is_conv_err() {
        let mut pam = TestPam::new("");
        pam.code = Err(PamError::CONV_ERR);
        let (result, daemon) = run(&pam, &[], vec![prompt(Prompt::Code { sms: false })]);
        assert_eq!(result, PamError::CONV_ERR);
        assert!(daemon.answers.is_empty());
    }

    #[test]
    fn forward_pass_keeps_the_password_and_sends_only_the_code() {
        let pam = TestPam::new("hunter2654321");
        let (result, daemon) = run(
            &pam,
            &["forward_pass"],
            vec![
                prompt(Prompt::PasswordAndCode { digits: 6 }),
                step(Step::End {
                    outcome: LoginOutcome::Success,
                    forward_password: true,
                }),
            ],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(daemon.answers, [Some("654321".to_owned())]);
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"hunter2"[..]));

        // Not forwarded unless the daemon says so.
        let pam = TestPam::new("hunter2654321");
        run(
            &pam,
            &["forward_pass"],
            vec![
                prompt(Prompt::PasswordAndCode { digits: 6 }),
                end(LoginOutcome::AuthErr),
            ],
        );
        assert_eq!(*pam.authtok.borrow(), None);

        // An answer that does not end in the code: nothing sent.
        let pam = TestPam::new("hunter2");
        let (_, daemon) = run(
            &pam,
            &["forward_pass"],
            vec![
                prompt(Prompt::PasswordAndCode { digits: 6 }),
                end(LoginOutcome::AuthErr),
            ],
        );
        assert_eq!(daemon.answers, [None]);

        // nullok: the password alone, never sent, forwarded.
        let pam = TestPam::new("hunter2");
        let (result, daemon) = run(
            &pam,
            &["forward_pass", "nullok"],
            vec![
                prompt(Prompt::Password),
                step(Step::End {
                    outcome: LoginOutcome::Ignore,
                    forward_password: true,
                }),
            ],
        );
        assert_eq!(result, PamError::IGNORE);
        assert_eq!(daemon.answers, [None]);
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"hunter2"[..]));
    }

    #[test]
    fn pam_authtok_is_sent_only_when_it_looks_like_a_code() {
        for (args, authtok, expected) in [
            (
                &["use_first_pass"][..],
                Some("123456"),
                Authtok::Code(SecretText::from("123456")),
            ),
            (
                &["try_first_pass"][..],
                Some("123 456"),
                Authtok::Code(SecretText::from("123 456")),
            ),
            (&["use_first_pass"][..], Some("hunter2"), Authtok::Held),
            (&["use_first_pass"][..], None, Authtok::Absent),
            (
                &["use_first_pass", "forward_pass"][..],
                Some("123456"),
                Authtok::Held,
            ),
            (&[][..], Some("123456"), Authtok::Absent),
        ] {
            let pam = TestPam::new("");
            *pam.authtok.borrow_mut() = authtok.map(|a| a.as_bytes().to_vec());
            let (_, daemon) = run(&pam, args, vec![end(LoginOutcome::AuthErr)]);
            assert_eq!(
                daemon.start.unwrap().authtok,
                expected,
                "{args:?} {authtok:?}"
            );
        }
    }

    #[test]
    fn the_code_at_the_end_of_pam_authtok_is_sent_when_asked() {
        let pam = TestPam::new("");
        *pam.authtok.borrow_mut() = Some(b"hunter2123456".to_vec());
        let (result, daemon) = run(
            &pam,
            &["use_first_pass", "forward_pass"],
            vec![
                step(Step::FromAuthtok { digits: 6 }),
                step(Step::End {
                    outcome: LoginOutcome::Success,
                    forward_password: true,
                }),
            ],
        );
        assert_eq!(result, PamError::SUCCESS);
        assert_eq!(daemon.answers, [Some("123456".to_owned())]);
        assert_eq!(pam.authtok.borrow().as_deref(), Some(&b"hunter2"[..]));
        assert!(pam.prompts.borrow().is_empty());
    }

    #[test]
    fn daemon_errors_map_internal_to_unavailable_and_the_rest_to_auth_err() {
        let refusal = |code| {
            Ok(Response::Error {
                code,
                message: "no".into(),
            })
        };
        let pam = TestPam::new("123456");
        let (result, _) = run(&pam, &[], vec![refusal(ErrorCode::Internal)]);
        assert_eq!(result, PamError::AUTHINFO_UNAVAIL);
        assert_eq!(*pam.errors_shown.borrow(), [Lang::En.unavailable()]);
        let pam = TestPam::new("123456");
        let (result, _) = run(&pam, &[], vec![refusal(ErrorCode::PermissionDenied)]);
        assert_eq!(result, PamError::AUTH_ERR);
        assert!(pam.errors_shown.borrow().is_empty());
        // An answer that is no step fails closed.
        let pam = TestPam::new("123456");
        let (result, _) = run(&pam, &[], vec![Ok(Response::Done {})]);
        assert_eq!(result, PamError::AUTHINFO_UNAVAIL);
        assert!(pam.logged().contains("\"done\""), "{}", pam.logged());
    }

    #[test]
    fn an_unreachable_daemon_is_explained_to_the_person_unless_silent() {
        let unreachable = || {
            Err(ClientError::Exchange {
                socket: "/run/otpd/otpd.sock".into(),
                error: ProtoError::Eof,
            })
        };
        for silent in [false, true] {
            let pam = TestPam::new("123456");
            let (result, _) = run_with(&pam, &[], silent, vec![unreachable()]);
            assert_eq!(result, PamError::AUTHINFO_UNAVAIL);
            assert_eq!(pam.errors_shown.borrow().is_empty(), silent);
            assert!(
                pam.logged().contains("/run/otpd/otpd.sock"),
                "{}",
                pam.logged()
            );
        }
        // Mid-conversation too.
        let pam = TestPam::new("123456");
        let (result, _) = run(
            &pam,
            &[],
            vec![prompt(Prompt::Code { sms: false }), unreachable()],
        );
        assert_eq!(result, PamError::AUTHINFO_UNAVAIL);
    }
}
