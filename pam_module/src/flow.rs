//! The login flow of `pam_sm_authenticate`, written against two small traits
//! (the PAM side and the daemon side) so that every decision — which answer
//! becomes which PAM code, when `nullok` lets a user through, what the
//! person at the terminal is told — is unit-tested without libpam.
#![forbid(unsafe_code)]

use crate::args::{parse_args, ModuleArgs};
use crate::client::Daemon;
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
    /// PAM_SERVICE, empty when unset.
    fn service(&self) -> String;
    /// PAM_RHOST, empty when unset (a local login).
    fn rhost(&self) -> String;
    /// The real uid of the process the module runs in: under su or sudo
    /// (which run as root) the person who started them.
    fn real_uid(&self) -> u32;
    /// Asks `prompt` with echo off and returns the answer in a buffer that is
    /// wiped on drop. Any failure, including no answer, is an `Err`.
    fn prompt_echo_off(&self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, PamError>;
    /// Shows `text` as a PAM_ERROR_MSG.
    fn error_message(&self, text: &str) -> Result<(), PamError>;
    /// Writes one line through pam_syslog.
    fn log(&self, level: LogLevel, message: &str);
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
    let debug = |message: &str| {
        if args.debug {
            pam.log(LogLevel::Debug, message);
        }
    };

    let user = match pam.user() {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(user) if !user.is_empty() => user,
            Ok(_) => {
                pam.log(LogLevel::Error, "PAM_USER is empty");
                return PamError::USER_UNKNOWN;
            }
            Err(error) => {
                let shown = error.as_bytes().escape_ascii();
                pam.log(
                    LogLevel::Error,
                    &format!("user name \"{shown}\" is not valid UTF-8; refused"),
                );
                return PamError::USER_UNKNOWN;
            }
        },
        Ok(None) => {
            pam.log(LogLevel::Error, "PAM_USER is not set");
            return PamError::USER_UNKNOWN;
        }
        Err(error) => {
            pam.log(LogLevel::Error, &format!("cannot get PAM_USER: {error}"));
            return error;
        }
    };
    let service = pam.service();
    let rhost = pam.rhost();
    debug(&format!(
        "user \"{user}\" service \"{service}\" rhost \"{rhost}\" socket {} timeout {:?}{}",
        args.socket,
        args.timeout,
        if args.nullok { " nullok" } else { "" }
    ));

    let mut daemon = connect(&args);

    // Only with nullok: asking first tells a remote client, by the absence of
    // a prompt, whether the user is enrolled. Without nullok every user is
    // prompted alike.
    if args.nullok {
        let request = Request::Status { user: user.clone() };
        match daemon.ask(&request) {
            Ok(Response::Status {
                status: EnrolmentStatus::Active,
            }) => debug("otpd: enrolment active"),
            Ok(Response::Status { status }) => {
                debug(&format!(
                    "otpd: enrolment {status:?}; nullok, not prompting"
                ));
                return PamError::IGNORE;
            }
            Ok(Response::Error { code, message }) => return daemon_error(pam, code, &message),
            Ok(other) => return unexpected(pam, &other),
            Err(error) => {
                pam.log(LogLevel::Error, &error.to_string());
                return PamError::AUTHINFO_UNAVAIL;
            }
        }
    }

    let code = match pam.prompt_echo_off(&args.prompt) {
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => SecretText::from(text),
            Err(_) => {
                pam.log(
                    LogLevel::Notice,
                    "the code typed is not valid UTF-8; refused",
                );
                return PamError::AUTH_ERR;
            }
        },
        Err(error) => {
            debug(&format!("conversation failed: {error}"));
            return PamError::CONV_ERR;
        }
    };

    let request = Request::Verify {
        user,
        code,
        service,
        rhost,
        ruid: Some(pam.real_uid()),
    };
    let outcome = match daemon.ask(&request) {
        Ok(Response::Verified { outcome }) => outcome,
        Ok(Response::Error { code, message }) => return daemon_error(pam, code, &message),
        Ok(other) => return unexpected(pam, &other),
        Err(error) => {
            pam.log(LogLevel::Error, &error.to_string());
            return PamError::AUTHINFO_UNAVAIL;
        }
    };
    drop(request);
    debug(&format!("otpd: {outcome:?}"));

    if let VerifyOutcome::Throttled { retry_after_secs } = outcome {
        if !silent {
            // The attempt is refused either way; a host that cannot show
            // the message still gets PAM_MAXTRIES.
            let _ = pam.error_message(&throttled_message(retry_after_secs));
        }
    }
    outcome_code(outcome, args.nullok)
}

/// The PAM code for the daemon's decision on a code.
pub fn outcome_code(outcome: VerifyOutcome, nullok: bool) -> PamError {
    match outcome {
        VerifyOutcome::Accepted => PamError::SUCCESS,
        VerifyOutcome::WrongCode | VerifyOutcome::Replayed => PamError::AUTH_ERR,
        VerifyOutcome::Throttled { .. } => PamError::MAXTRIES,
        VerifyOutcome::NotEnrolled | VerifyOutcome::Pending if nullok => PamError::IGNORE,
        VerifyOutcome::NotEnrolled | VerifyOutcome::Pending => PamError::AUTH_ERR,
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
        | ErrorCode::NotPending => PamError::AUTH_ERR,
    }
}

/// What the person at the terminal reads when the daemon is backing off.
pub fn throttled_message(retry_after_secs: u64) -> String {
    let wait = match retry_after_secs {
        0 | 1 => "1 second".to_owned(),
        secs @ 2..=119 => format!("{secs} seconds"),
        secs => format!("{} minutes", secs.div_ceil(60)),
    };
    format!("Too many failed attempts. Try again in {wait}.")
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
        Response::Users { .. } => "users",
        Response::Done {} => "done",
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
        prompts: RefCell<Vec<String>>,
        errors_shown: RefCell<Vec<String>>,
        log: RefCell<Vec<(LogLevel, String)>>,
    }

    impl TestPam {
        fn new(code: &str) -> Self {
            TestPam {
                user: Ok(Some(b"alice".to_vec())),
                code: Ok(code.as_bytes().to_vec()),
                prompts: RefCell::default(),
                errors_shown: RefCell::default(),
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
        fn service(&self) -> String {
            "sshd".into()
        }
        fn real_uid(&self) -> u32 {
            1000
        }

        fn rhost(&self) -> String {
            "192.0.2.7".into()
        }
        fn prompt_echo_off(&self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, PamError> {
            self.prompts.borrow_mut().push(prompt.to_owned());
            self.code.clone().map(Zeroizing::new)
        }
        fn error_message(&self, text: &str) -> Result<(), PamError> {
            self.errors_shown.borrow_mut().push(text.to_owned());
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
    }

    impl Daemon for &mut TestDaemon {
        fn ask(&mut self, request: &Request) -> Result<Response, ClientError> {
            self.requests.push(request.clone());
            self.answers.pop_front().expect("no answer scripted")
        }
    }

    fn verified(outcome: VerifyOutcome) -> Result<Response, ClientError> {
        Ok(Response::Verified { outcome })
    }

    fn status(status: EnrolmentStatus) -> Result<Response, ClientError> {
        Ok(Response::Status { status })
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
    fn without_nullok_no_status_is_asked_and_unenrolled_users_fail() {
        let pam = TestPam::new("123456");
        let (result, requests) = run(&pam, &[], vec![verified(VerifyOutcome::NotEnrolled)]);
        assert_eq!(result, PamError::AUTH_ERR);
        assert_eq!(requests.len(), 1);
        assert!(matches!(requests[0], Request::Verify { .. }));
        assert_eq!(pam.prompts.borrow().len(), 1);
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
        };
        let result = authenticate(&pam, &[], true, |_| &mut daemon);
        assert_eq!(result, PamError::MAXTRIES);
        assert!(pam.errors_shown.borrow().is_empty());
    }

    #[test]
    fn throttled_message_text() {
        let m = throttled_message;
        assert_eq!(m(0), "Too many failed attempts. Try again in 1 second.");
        assert_eq!(m(1), "Too many failed attempts. Try again in 1 second.");
        assert_eq!(m(2), "Too many failed attempts. Try again in 2 seconds.");
        assert_eq!(
            m(119),
            "Too many failed attempts. Try again in 119 seconds."
        );
        assert_eq!(m(120), "Too many failed attempts. Try again in 2 minutes.");
        assert_eq!(m(121), "Too many failed attempts. Try again in 3 minutes.");
        assert_eq!(
            m(3600),
            "Too many failed attempts. Try again in 60 minutes."
        );
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
        let answer = status(EnrolmentStatus::Active);
        assert_eq!(run(&pam, &[], vec![answer]).0, PamError::AUTHINFO_UNAVAIL);
        let pam = TestPam::new("123456");
        let answer = verified(VerifyOutcome::Accepted);
        assert_eq!(
            run(&pam, &["nullok"], vec![answer]).0,
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
