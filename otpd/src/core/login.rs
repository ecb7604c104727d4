//! The login conversation, decided here and nowhere else: which prompt
//! comes first, whether `nullok` lets a user through, where the code comes
//! from (a prompt, PAM_AUTHTOK, the end of a `forward_pass` answer), the
//! one text a login may ask for, and the PAM outcome. Pure: the daemon's
//! shell (`server/login.rs`) reads the record, carries out each [`Next`]
//! (send a step, check a code, send a text) and feeds the result back.
#![forbid(unsafe_code)]

use crate::core::record::{EnrollState, UserRecord};
use otpd_proto::{
    Authtok, FirstPass, LoginOutcome, LoginStart, Message, Prompt, SecretText, Step, VerifyOutcome,
};

/// Digits split off the end of a `forward_pass` answer when the user has
/// no device (the login fails anyway; the prompt must not tell).
const DEFAULT_DIGITS: u8 = 6;

/// What a login must ask of a user, from the stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserView {
    /// A code is required: the user has, or had, an active device (one
    /// whose device is being replaced or was revoked is not let through
    /// by `nullok`, design.md §7).
    pub factor_required: bool,
    /// Digits of the user's codes, when a code is required.
    pub digits: Option<u8>,
    /// The user has an active paired phone to approve sign-ins on.
    pub phone: bool,
    /// The login's binding is remembered (`[remember]`): no code.
    pub remembered: bool,
    /// The user may set up the app at this login (`[enrol_at_login]`:
    /// a member of its group without any device, the first factor passed).
    pub can_enrol: bool,
}

impl UserView {
    /// The view of `record` (`None`: no such user).
    pub fn of(record: Option<&UserRecord>) -> Self {
        match record {
            Some(r) if r.factor_required() => {
                let devices = r.devices();
                let digits = devices
                    .iter()
                    .find(|d| d.state == EnrollState::Active)
                    .or(devices.first())
                    .map(|d| d.digits);
                Self {
                    factor_required: true,
                    digits,
                    phone: r.approvals.has_active_phone(),
                    remembered: false,
                    can_enrol: false,
                }
            }
            _ => Self {
                factor_required: false,
                digits: None,
                phone: false,
                remembered: false,
                can_enrol: false,
            },
        }
    }
}

/// Whether the first step of `start`'s login depends on the user's record:
/// `nullok` (does the user have a device?), `forward_pass` (how many digits
/// end the answer?) and a name typed in another spelling than the
/// account's (is there a record under it?), and with approvals on or the
/// login rememberable (`record_first`: has the user a phone, is the binding
/// remembered?). Otherwise the code is asked for at once and the record is
/// read once, with the check.
pub fn needs_view(start: &LoginStart, record_first: bool) -> bool {
    // Unknown names are read too: the first prompt of a name that is no
    // account must take as long as that of one that is (no enumeration).
    record_first || start.nullok || start.forward_pass || start.typed != start.user
}

/// How the shell's sign-in request went ([`Next::Request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// Made and pushed: the number to show, the seconds it has.
    Made {
        /// The number to pick on the phone.
        number: u8,
        /// Seconds until it expires.
        wait_secs: u64,
    },
    /// Not made: too many open, or the hour's pushes used up.
    Refused {
        /// Seconds until one may be made again, for the hour's limit.
        retry_after_secs: Option<u64>,
    },
    /// The source must wait (backoff): refused like a code.
    Throttled {
        /// Seconds until the next attempt is allowed.
        retry_after_secs: u64,
    },
}

/// What became of the request ([`Next::Await`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Approved on the phone (with the number and the passkey).
    Approved,
    /// Denied on the phone.
    Denied,
    /// A wrong number was picked: closed.
    WrongNumber,
    /// Not answered in time.
    Expired,
}

/// What the shell does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send a message step, then call [`Conversation::resume`].
    Say(Step),
    /// Send a prompt (or `FromAuthtok`) step and pass the module's answer
    /// to [`Conversation::answer`].
    Ask(Step),
    /// Check `code` for [`Conversation::user`] (a login attempt, counted)
    /// and pass the outcome to [`Conversation::checked`].
    Check(SecretText),
    /// Text a code to the user's phone and pass the outcome to
    /// [`Conversation::checked`].
    Text,
    /// Make a sign-in request for the user's phone (counted like a failed
    /// attempt) and pass the result to [`Conversation::requested`].
    Request,
    /// Wait for the phone's answer to the request made (at most its
    /// remaining time) and pass it to [`Conversation::approval`].
    Await,
    /// Set up a new pending device for the user, send the person its
    /// `Step::Enrolment` (the shell holds the secret, not the
    /// conversation), and pass whether that worked to
    /// [`Conversation::enrolled`].
    Enrol,
    /// Check `code` as the first code of the pending device (counted like a
    /// login); on success send the `Step::RecoveryCodes`, then pass the
    /// outcome to [`Conversation::confirmed`].
    Confirm(SecretText),
    /// Send this `Step::End`; the conversation is over.
    End(Step),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the password of a user `nullok` lets through.
    PasswordOnly,
    /// Waiting for the code at the end of PAM_AUTHTOK (forward_pass).
    AuthtokSplit,
    /// Waiting for password and code (forward_pass).
    PasswordAndCode,
    /// Waiting for the code (or `sms`).
    Code,
    /// Waiting for the code after a text was asked for.
    AfterText,
    /// Checking the code PAM_AUTHTOK held.
    CheckingAuthtok,
    /// Checking a code whose password goes on to the next module.
    CheckingForwarded,
    /// Checking a typed code.
    Checking,
    /// Sending a text.
    Texting,
    /// Making a sign-in request.
    Requesting,
    /// Waiting for Enter after the number was shown.
    Number,
    /// Waiting for the phone's answer.
    Awaiting,
    /// Setting up the device of an enrolment at the login.
    Enrolling,
    /// Waiting for the first code of the device just set up.
    FirstCode,
    /// Checking it.
    ConfirmingFirst,
    /// Waiting for Enter after the recovery codes.
    Continue,
    /// Checking the code typed after a text.
    CheckingAfterText,
    /// Between a message and what follows it.
    Said,
    /// Over.
    Done,
}

/// One login, from [`LoginStart`] to its outcome.
#[derive(Debug)]
pub struct Conversation {
    user: String,
    known: bool,
    nullok: bool,
    first_pass: FirstPass,
    sms: bool,
    /// The user may approve on a paired phone (an empty answer asks).
    approve: bool,
    /// The login is remembered: it ends in success without a code.
    remembered: bool,
    /// Wrong first codes of an enrolment at the login so far.
    first_code_misses: u8,
    /// Digits of the user's codes (forward_pass splits them off).
    digits: u8,
    stage: Stage,
    /// What follows the message being said.
    after_say: Option<Box<Next>>,
}

/// How the conversation began, for the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// A code is asked for (or taken from PAM_AUTHTOK).
    CodeRequired,
    /// `nullok`: the user never had a device; no code.
    Nullok,
    /// The login's binding is remembered: no code.
    Remembered,
    /// The user sets up the app at this login (`[enrol_at_login]`).
    Enrolling,
}

impl Conversation {
    /// Begins the login of `start` given what the store says of the user
    /// (`view`) and, when PAM_USER was typed in another spelling, of that
    /// spelling (`typed_view`); `sms`: texts are configured (the same for
    /// every user, so the prompt tells a stranger nothing).
    ///
    /// `view` is `None` when [`needs_view`] said the first step does not
    /// depend on the record (the shell then reads nothing before the code).
    pub fn begin(
        start: &LoginStart,
        view: Option<UserView>,
        typed_view: Option<UserView>,
        sms: bool,
        approve: bool,
    ) -> (Self, Begun, Next) {
        let mut user = start.user.clone();
        // Without a view every user is asked for a code, as one who has a
        // device: only nullok, forward_pass's digits and the spelling
        // typed depend on the record.
        let mut view = view.unwrap_or(UserView {
            factor_required: true,
            digits: None,
            phone: false,
            remembered: false,
            can_enrol: false,
        });
        if start.known && !view.factor_required && start.typed != start.user {
            // A record under the spelling typed (enrolled before otpd
            // asked about the account's own name; `otpd list` warns of
            // such records): it needs a code as much as the account's.
            if let Some(typed) = typed_view.filter(|t| t.factor_required) {
                user = start.typed.clone();
                view = typed;
            }
        }
        let mut conversation = Self {
            user,
            known: start.known,
            nullok: start.nullok,
            first_pass: start.first_pass,
            sms,
            approve: approve && view.phone,
            remembered: false,
            first_code_misses: 0,
            digits: view.digits.unwrap_or(DEFAULT_DIGITS),
            stage: Stage::Done,
            after_say: None,
        };
        // An unknown name gets the conversation of an account with a
        // token, then PAM_USER_UNKNOWN: a client learns nothing about
        // which accounts exist, as with pam_unix.
        // A member of `[enrol_at_login]`'s group without any device, whose
        // first factor has passed: the app is set up now, in this login.
        if view.can_enrol && !view.factor_required && start.known && !start.forward_pass {
            conversation.stage = Stage::Enrolling;
            return (conversation, Begun::Enrolling, Next::Enrol);
        }
        // A remembered binding (the same SSH key, or the same local
        // session and tty, within `[remember]`'s time): no code. Like
        // nullok, except that the outcome is success.
        let remembered = view.factor_required && view.remembered && start.known;
        if remembered || (!view.factor_required && start.known && start.nullok) {
            conversation.remembered = remembered;
            let outcome = if remembered {
                LoginOutcome::Success
            } else {
                LoginOutcome::Ignore
            };
            let begun = if remembered {
                Begun::Remembered
            } else {
                Begun::Nullok
            };
            let have_password = match start.first_pass {
                FirstPass::Prompt => false,
                FirstPass::Use => true,
                FirstPass::Try => start.authtok != Authtok::Absent,
            };
            let next = if start.forward_pass && !have_password {
                // The next module (pam_unix use_first_pass) still needs
                // the password.
                conversation.stage = Stage::PasswordOnly;
                Next::Ask(Step::Prompt {
                    prompt: Prompt::Password,
                })
            } else {
                end(outcome, false)
            };
            return (conversation, begun, next);
        }
        let next = if start.forward_pass {
            let digits = conversation.digits;
            if !(6..=8).contains(&digits) {
                // Not a record otpd writes; the store is damaged.
                conversation.say_then(
                    Step::Error {
                        message: Message::Unavailable,
                    },
                    end(LoginOutcome::AuthinfoUnavail, false),
                )
            } else {
                match (start.first_pass, &start.authtok) {
                    (FirstPass::Prompt, _) | (FirstPass::Try, Authtok::Absent) => {
                        conversation.stage = Stage::PasswordAndCode;
                        Next::Ask(Step::Prompt {
                            prompt: Prompt::PasswordAndCode { digits },
                        })
                    }
                    (FirstPass::Use, Authtok::Absent) => {
                        end(LoginOutcome::AuthtokRecoveryErr, false)
                    }
                    (_, _) => {
                        conversation.stage = Stage::AuthtokSplit;
                        Next::Ask(Step::FromAuthtok { digits })
                    }
                }
            }
        } else {
            match (start.first_pass, &start.authtok) {
                (FirstPass::Use | FirstPass::Try, Authtok::Code(code)) => {
                    conversation.stage = Stage::CheckingAuthtok;
                    Next::Check(code.clone())
                }
                (FirstPass::Use, Authtok::Absent) => end(LoginOutcome::AuthtokRecoveryErr, false),
                // An earlier module's password: refused, never sent.
                (FirstPass::Use, Authtok::Held) => end(LoginOutcome::AuthErr, false),
                _ => conversation.ask_code(),
            }
        };
        (conversation, Begun::CodeRequired, next)
    }

    /// The user whose codes are checked (the account's own name, or the
    /// spelling typed when only that has a record).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The module's answer to the last `Ask`.
    pub fn answer(&mut self, answer: Option<&SecretText>) -> Next {
        match (self.stage, answer) {
            (Stage::PasswordOnly, _) => end(
                if self.remembered {
                    LoginOutcome::Success
                } else {
                    LoginOutcome::Ignore
                },
                true,
            ),
            (Stage::AuthtokSplit | Stage::PasswordAndCode, Some(code)) => {
                self.stage = Stage::CheckingForwarded;
                Next::Check(code.clone())
            }
            (Stage::AuthtokSplit, None) if self.first_pass == FirstPass::Try => {
                self.stage = Stage::PasswordAndCode;
                Next::Ask(Step::Prompt {
                    prompt: Prompt::PasswordAndCode {
                        digits: self.digits,
                    },
                })
            }
            (Stage::Code, Some(code)) if self.approve && code.expose().trim().is_empty() => {
                self.stage = Stage::Requesting;
                Next::Request
            }
            (Stage::Number, _) => {
                self.stage = Stage::Awaiting;
                Next::Await
            }
            (Stage::FirstCode, Some(code)) => {
                self.stage = Stage::ConfirmingFirst;
                Next::Confirm(code.clone())
            }
            (Stage::Continue, _) => {
                self.stage = Stage::Done;
                end(LoginOutcome::Success, false)
            }
            (Stage::Code, Some(code)) if is_sms(code) => {
                self.stage = Stage::Texting;
                Next::Text
            }
            (Stage::Code, Some(code)) => {
                self.stage = Stage::Checking;
                Next::Check(code.clone())
            }
            // One text per login: "sms" again is refused.
            (Stage::AfterText, Some(code)) if !is_sms(code) => {
                self.stage = Stage::CheckingAfterText;
                Next::Check(code.clone())
            }
            // No code at the end of the answer or PAM_AUTHTOK, an answer
            // that is not text, "sms" twice, or an answer out of turn.
            _ => self.finish(VerifyOutcome::WrongCode, false),
        }
    }

    /// The outcome of the last `Check` or `Text`.
    pub fn checked(&mut self, outcome: VerifyOutcome) -> Next {
        match (self.stage, outcome) {
            (Stage::CheckingAuthtok, VerifyOutcome::WrongCode)
                if self.first_pass == FirstPass::Try =>
            {
                // try_first_pass: what the earlier module collected looked
                // like a code but is not this user's (a numeric password);
                // ask, as pam_unix does.
                self.ask_code()
            }
            (Stage::CheckingForwarded, outcome) => {
                // The password goes on only with an accepted code: in a
                // stack where this module's failure is not fatal, a wrong
                // code must not leave the next module a password.
                let forward = outcome == VerifyOutcome::Accepted;
                self.finish(outcome, forward)
            }
            (Stage::Texting, VerifyOutcome::SmsSent) => {
                self.stage = Stage::AfterText;
                self.say_then(
                    Step::Info {
                        message: Message::SmsSent,
                    },
                    Next::Ask(Step::Prompt {
                        prompt: Prompt::TextedCode,
                    }),
                )
            }
            (Stage::Texting, VerifyOutcome::SmsUnavailable { retry_after_secs }) => {
                self.stage = Stage::AfterText;
                self.say_then(
                    Step::Error {
                        message: Message::SmsUnavailable { retry_after_secs },
                    },
                    Next::Ask(Step::Prompt {
                        prompt: Prompt::Code { sms: false },
                    }),
                )
            }
            (
                Stage::CheckingAuthtok
                | Stage::Checking
                | Stage::Texting
                | Stage::CheckingAfterText,
                outcome,
            ) => self.finish(outcome, false),
            _ => self.finish(VerifyOutcome::WrongCode, false),
        }
    }

    /// Whether the last `Enrol` set up the device and showed it.
    pub fn enrolled(&mut self, shown: bool) -> Next {
        if self.stage != Stage::Enrolling {
            return self.finish(VerifyOutcome::WrongCode, false);
        }
        if !shown {
            self.stage = Stage::Done;
            return self.say_then(
                Step::Error {
                    message: Message::Unavailable,
                },
                end(LoginOutcome::AuthinfoUnavail, false),
            );
        }
        self.stage = Stage::FirstCode;
        Next::Ask(Step::Prompt {
            prompt: Prompt::FirstCode,
        })
    }

    /// The outcome of the last `Confirm` (the shell has shown the recovery
    /// codes when it is `Accepted`).
    pub fn confirmed(&mut self, outcome: VerifyOutcome) -> Next {
        if self.stage != Stage::ConfirmingFirst {
            return self.finish(VerifyOutcome::WrongCode, false);
        }
        match outcome {
            VerifyOutcome::Accepted => {
                self.stage = Stage::Continue;
                Next::Ask(Step::Prompt {
                    prompt: Prompt::Continue,
                })
            }
            VerifyOutcome::WrongCode | VerifyOutcome::Replayed if self.first_code_misses < 2 => {
                self.first_code_misses += 1;
                self.stage = Stage::FirstCode;
                self.say_then(
                    Step::Error {
                        message: Message::WrongFirstCode,
                    },
                    Next::Ask(Step::Prompt {
                        prompt: Prompt::FirstCode,
                    }),
                )
            }
            // Three wrong codes, throttled, or gone: the login fails; the
            // device stays pending (nothing active) for the next login.
            other => self.finish(
                match other {
                    VerifyOutcome::Throttled { .. } => other,
                    _ => VerifyOutcome::WrongCode,
                },
                false,
            ),
        }
    }

    /// The result of the last `Request`.
    pub fn requested(&mut self, requested: Requested) -> Next {
        if self.stage != Stage::Requesting {
            return self.finish(VerifyOutcome::WrongCode, false);
        }
        match requested {
            Requested::Made { number, wait_secs } => {
                self.stage = Stage::Number;
                Next::Ask(Step::Prompt {
                    prompt: Prompt::ApproveNumber { number, wait_secs },
                })
            }
            Requested::Refused { retry_after_secs } => {
                let ask = self.ask_code();
                self.say_then(
                    Step::Error {
                        message: Message::ApproveUnavailable { retry_after_secs },
                    },
                    ask,
                )
            }
            Requested::Throttled { retry_after_secs } => {
                self.finish(VerifyOutcome::Throttled { retry_after_secs }, false)
            }
        }
    }

    /// The phone's answer to the request (the result of the last `Await`).
    pub fn approval(&mut self, approval: Approval) -> Next {
        if self.stage != Stage::Awaiting {
            return self.finish(VerifyOutcome::WrongCode, false);
        }
        let refused = |this: &mut Self, message| {
            this.stage = Stage::Done;
            let result = if this.known {
                LoginOutcome::AuthErr
            } else {
                LoginOutcome::UserUnknown
            };
            this.say_then(Step::Error { message }, end(result, false))
        };
        match approval {
            Approval::Approved => self.finish(VerifyOutcome::Accepted, false),
            Approval::Denied => refused(self, Message::ApproveDenied),
            Approval::WrongNumber => refused(self, Message::ApproveWrongNumber),
            Approval::Expired => {
                let ask = self.ask_code();
                self.say_then(
                    Step::Error {
                        message: Message::ApproveExpired,
                    },
                    ask,
                )
            }
        }
    }

    /// After a `Say`: what follows it.
    pub fn resume(&mut self) -> Next {
        match self.after_say.take() {
            Some(next) => {
                if self.stage == Stage::Said {
                    self.stage = Stage::Done;
                }
                *next
            }
            None => end(LoginOutcome::AuthErr, false),
        }
    }

    fn ask_code(&mut self) -> Next {
        self.stage = Stage::Code;
        let prompt = if self.approve {
            Prompt::CodeOrApprove { sms: self.sms }
        } else {
            Prompt::Code { sms: self.sms }
        };
        Next::Ask(Step::Prompt { prompt })
    }

    fn say_then(&mut self, step: Step, then: Next) -> Next {
        if matches!(then, Next::End(_)) {
            self.stage = Stage::Said;
        }
        self.after_say = Some(Box::new(then));
        Next::Say(step)
    }

    fn finish(&mut self, outcome: VerifyOutcome, forward: bool) -> Next {
        self.stage = Stage::Done;
        let result = if !self.known {
            LoginOutcome::UserUnknown
        } else {
            outcome_of(outcome, self.nullok)
        };
        let forward = forward && self.known;
        match outcome {
            // The attempt is refused either way; a host that cannot show
            // the message still gets PAM_MAXTRIES.
            VerifyOutcome::Throttled { retry_after_secs } => self.say_then(
                Step::Error {
                    message: Message::Throttled { retry_after_secs },
                },
                end(result, forward),
            ),
            _ => end(result, forward),
        }
    }
}

fn end(outcome: LoginOutcome, forward_password: bool) -> Next {
    Next::End(Step::End {
        outcome,
        forward_password,
    })
}

fn is_sms(text: &SecretText) -> bool {
    text.expose().trim().eq_ignore_ascii_case("sms")
}

/// The PAM outcome of the daemon's decision on a code.
pub fn outcome_of(outcome: VerifyOutcome, nullok: bool) -> LoginOutcome {
    match outcome {
        VerifyOutcome::Accepted => LoginOutcome::Success,
        VerifyOutcome::WrongCode | VerifyOutcome::Replayed => LoginOutcome::AuthErr,
        VerifyOutcome::Throttled { .. } => LoginOutcome::MaxTries,
        VerifyOutcome::NotEnrolled | VerifyOutcome::Pending if nullok => LoginOutcome::Ignore,
        VerifyOutcome::NotEnrolled | VerifyOutcome::Pending => LoginOutcome::AuthErr,
        VerifyOutcome::SmsSent | VerifyOutcome::SmsUnavailable { .. } => LoginOutcome::AuthErr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: UserView = UserView {
        factor_required: true,
        digits: Some(6),
        phone: false,
        remembered: false,
        can_enrol: false,
    };
    const NONE: UserView = UserView {
        factor_required: false,
        digits: None,
        phone: false,
        remembered: false,
        can_enrol: false,
    };

    fn start() -> LoginStart {
        LoginStart::plain("alice", "sshd", "192.0.2.7", 0)
    }

    fn code(text: &str) -> SecretText {
        SecretText::from(text)
    }

    fn ended(outcome: LoginOutcome, forward_password: bool) -> Next {
        Next::End(Step::End {
            outcome,
            forward_password,
        })
    }

    /// The whole conversation: answers to asks and outcomes of checks
    /// taken in order from `script`; returns every step sent and checked.
    fn run(
        start: &LoginStart,
        view: UserView,
        typed: Option<UserView>,
        sms: bool,
        answers: &[Option<&str>],
        outcomes: &[VerifyOutcome],
    ) -> (Vec<String>, Step, String) {
        let view = needs_view(start, false).then_some(view);
        let (mut c, _, mut next) = Conversation::begin(start, view, typed, sms, false);
        let mut log = Vec::new();
        let (mut answers, mut outcomes) = (answers.iter(), outcomes.iter());
        loop {
            next = match next {
                Next::Say(step) => {
                    log.push(format!("say {step:?}"));
                    c.resume()
                }
                Next::Ask(step) => {
                    log.push(format!("ask {step:?}"));
                    let answer = answers.next().expect("an answer left").map(code);
                    c.answer(answer.as_ref())
                }
                Next::Check(code) => {
                    log.push(format!("check {}", code.expose()));
                    c.checked(*outcomes.next().expect("an outcome left"))
                }
                Next::Request | Next::Await | Next::Enrol | Next::Confirm(_) => {
                    panic!("no approvals or enrolments in these runs")
                }
                Next::Text => {
                    log.push("text".into());
                    c.checked(*outcomes.next().expect("an outcome left"))
                }
                Next::End(step) => {
                    assert!(answers.next().is_none(), "answers left over");
                    assert!(outcomes.next().is_none(), "outcomes left over");
                    return (log, step, c.user().to_owned());
                }
            }
        }
    }

    fn end_of(outcome: LoginOutcome) -> Step {
        Step::End {
            outcome,
            forward_password: false,
        }
    }

    #[test]
    fn a_code_is_asked_checked_and_every_outcome_mapped() {
        for (outcome, expected) in [
            (VerifyOutcome::Accepted, LoginOutcome::Success),
            (VerifyOutcome::WrongCode, LoginOutcome::AuthErr),
            (VerifyOutcome::Replayed, LoginOutcome::AuthErr),
            (VerifyOutcome::NotEnrolled, LoginOutcome::AuthErr),
            (VerifyOutcome::Pending, LoginOutcome::AuthErr),
        ] {
            let (log, end, _) = run(&start(), ACTIVE, None, false, &[Some("123456")], &[outcome]);
            assert_eq!(
                log,
                ["ask Prompt { prompt: Code { sms: false } }", "check 123456"]
            );
            assert_eq!(end, end_of(expected), "{outcome:?}");
        }
    }

    #[test]
    fn throttled_says_so_then_ends_with_maxtries() {
        let outcome = VerifyOutcome::Throttled {
            retry_after_secs: 30,
        };
        let (log, end, _) = run(&start(), ACTIVE, None, false, &[Some("1")], &[outcome]);
        assert_eq!(
            log.last().unwrap(),
            "say Error { message: Throttled { retry_after_secs: 30 } }"
        );
        assert_eq!(end, end_of(LoginOutcome::MaxTries));
    }

    #[test]
    fn nullok_lets_through_only_users_without_a_device() {
        let nullok = LoginStart {
            nullok: true,
            ..start()
        };
        let (log, end, _) = run(&nullok, NONE, None, true, &[], &[]);
        assert!(log.is_empty());
        assert_eq!(end, end_of(LoginOutcome::Ignore));
        // A user who has (or had) a device is asked, nullok or not.
        let (log, end, _) = run(
            &nullok,
            ACTIVE,
            None,
            true,
            &[Some("1")],
            &[VerifyOutcome::WrongCode],
        );
        assert_eq!(log[0], "ask Prompt { prompt: Code { sms: true } }");
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
        // Without nullok a user without a device is asked like everyone.
        let (log, end, _) = run(
            &start(),
            NONE,
            None,
            false,
            &[Some("1")],
            &[VerifyOutcome::NotEnrolled],
        );
        assert_eq!(log.len(), 2);
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
    }

    #[test]
    fn an_unknown_name_gets_the_whole_conversation_then_user_unknown() {
        for nullok in [false, true] {
            let unknown = LoginStart {
                known: false,
                nullok,
                ..start()
            };
            let (log, end, _) = run(
                &unknown,
                NONE,
                None,
                false,
                &[Some("123456")],
                &[VerifyOutcome::NotEnrolled],
            );
            assert_eq!(log.len(), 2, "{log:?}");
            assert_eq!(end, end_of(LoginOutcome::UserUnknown));
        }
    }

    #[test]
    fn a_record_under_the_spelling_typed_is_used_when_the_account_has_none() {
        let typed = LoginStart {
            typed: "Alice".into(),
            nullok: true,
            ..start()
        };
        let (_, end, user) = run(
            &typed,
            NONE,
            Some(ACTIVE),
            false,
            &[Some("1")],
            &[VerifyOutcome::Accepted],
        );
        assert_eq!(
            (end, user.as_str()),
            (end_of(LoginOutcome::Success), "Alice")
        );
        // The account's own record wins when it has one.
        let (_, _, user) = run(
            &typed,
            ACTIVE,
            Some(ACTIVE),
            false,
            &[Some("1")],
            &[VerifyOutcome::Accepted],
        );
        assert_eq!(user, "alice");
    }

    #[test]
    fn sms_texts_once_then_asks_for_the_texted_code() {
        let (log, end, _) = run(
            &start(),
            ACTIVE,
            None,
            true,
            &[Some(" SMS "), Some("654321")],
            &[VerifyOutcome::SmsSent, VerifyOutcome::Accepted],
        );
        assert_eq!(
            log,
            [
                "ask Prompt { prompt: Code { sms: true } }",
                "text",
                "say Info { message: SmsSent }",
                "ask Prompt { prompt: TextedCode }",
                "check 654321",
            ]
        );
        assert_eq!(end, end_of(LoginOutcome::Success));
        // "sms" twice in one login: refused without a second text.
        let (log, end, _) = run(
            &start(),
            ACTIVE,
            None,
            true,
            &[Some("sms"), Some("sms")],
            &[VerifyOutcome::SmsSent],
        );
        assert_eq!(log.len(), 4);
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
        // No text possible: said, then the app's code is asked for.
        let unavailable = VerifyOutcome::SmsUnavailable {
            retry_after_secs: Some(60),
        };
        let (log, end, _) = run(
            &start(),
            ACTIVE,
            None,
            true,
            &[Some("sms"), Some("123456")],
            &[unavailable, VerifyOutcome::WrongCode],
        );
        assert_eq!(
            log[2],
            "say Error { message: SmsUnavailable { retry_after_secs: Some(60) } }"
        );
        assert_eq!(log[3], "ask Prompt { prompt: Code { sms: false } }");
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
        // A texted-code check that comes back "sent" again counts as wrong.
        let (_, end, _) = run(
            &start(),
            ACTIVE,
            None,
            true,
            &[Some("sms"), Some("1")],
            &[VerifyOutcome::SmsSent, VerifyOutcome::SmsSent],
        );
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
    }

    #[test]
    fn an_answer_that_is_not_text_is_a_wrong_code() {
        let (_, end, _) = run(&start(), ACTIVE, None, false, &[None], &[]);
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
    }

    #[test]
    fn use_first_pass_takes_the_code_and_never_asks() {
        let with = |authtok| LoginStart {
            first_pass: FirstPass::Use,
            authtok,
            ..start()
        };
        let (log, end, _) = run(
            &with(Authtok::Code(code("123456"))),
            ACTIVE,
            None,
            true,
            &[],
            &[VerifyOutcome::Accepted],
        );
        assert_eq!(log, ["check 123456"]);
        assert_eq!(end, end_of(LoginOutcome::Success));
        let (log, end, _) = run(&with(Authtok::Absent), ACTIVE, None, true, &[], &[]);
        assert!(log.is_empty());
        assert_eq!(end, end_of(LoginOutcome::AuthtokRecoveryErr));
        let (log, end, _) = run(&with(Authtok::Held), ACTIVE, None, true, &[], &[]);
        assert!(log.is_empty());
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
        // A wrong code is not asked again.
        let (_, end, _) = run(
            &with(Authtok::Code(code("123456"))),
            ACTIVE,
            None,
            true,
            &[],
            &[VerifyOutcome::WrongCode],
        );
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
    }

    #[test]
    fn try_first_pass_asks_when_the_authtok_is_not_the_code() {
        let with = |authtok| LoginStart {
            first_pass: FirstPass::Try,
            authtok,
            ..start()
        };
        let (log, end, _) = run(
            &with(Authtok::Code(code("123456"))),
            ACTIVE,
            None,
            false,
            &[Some("654321")],
            &[VerifyOutcome::WrongCode, VerifyOutcome::Accepted],
        );
        assert_eq!(
            log,
            [
                "check 123456",
                "ask Prompt { prompt: Code { sms: false } }",
                "check 654321"
            ]
        );
        assert_eq!(end, end_of(LoginOutcome::Success));
        for authtok in [Authtok::Absent, Authtok::Held] {
            let (log, _, _) = run(
                &with(authtok),
                ACTIVE,
                None,
                false,
                &[Some("1")],
                &[VerifyOutcome::WrongCode],
            );
            assert_eq!(log[0], "ask Prompt { prompt: Code { sms: false } }");
        }
        // A replayed code is not asked again: only a wrong one is.
        let (log, _, _) = run(
            &with(Authtok::Code(code("123456"))),
            ACTIVE,
            None,
            false,
            &[],
            &[VerifyOutcome::Replayed],
        );
        assert_eq!(log, ["check 123456"]);
    }

    #[test]
    fn forward_pass_asks_once_and_forwards_only_with_an_accepted_code() {
        let forward = LoginStart {
            forward_pass: true,
            ..start()
        };
        let eight = UserView {
            factor_required: true,
            digits: Some(8),
            phone: false,
            remembered: false,
            can_enrol: false,
        };
        let (log, end, _) = run(
            &forward,
            eight,
            None,
            false,
            &[Some("12345678")],
            &[VerifyOutcome::Accepted],
        );
        assert_eq!(
            log[0],
            "ask Prompt { prompt: PasswordAndCode { digits: 8 } }"
        );
        assert_eq!(end, ended_step(LoginOutcome::Success, true));
        let (_, end, _) = run(
            &forward,
            eight,
            None,
            false,
            &[Some("12345678")],
            &[VerifyOutcome::WrongCode],
        );
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
        // An answer that does not end in a code.
        let (_, end, _) = run(&forward, eight, None, false, &[None], &[]);
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
        // Users without a device: six digits (nothing tells them apart).
        let (log, _, _) = run(
            &forward,
            NONE,
            None,
            false,
            &[Some("123456")],
            &[VerifyOutcome::NotEnrolled],
        );
        assert_eq!(
            log[0],
            "ask Prompt { prompt: PasswordAndCode { digits: 6 } }"
        );
        // nullok: only the password is asked for, and forwarded.
        let nullok = LoginStart {
            nullok: true,
            ..forward.clone()
        };
        let (log, end, _) = run(&nullok, NONE, None, false, &[None], &[]);
        assert_eq!(log, ["ask Prompt { prompt: Password }"]);
        assert_eq!(end, ended_step(LoginOutcome::Ignore, true));
        // An unknown user's password never goes on.
        let unknown = LoginStart {
            known: false,
            ..forward.clone()
        };
        let (_, end, _) = run(
            &unknown,
            NONE,
            None,
            false,
            &[Some("123456")],
            &[VerifyOutcome::Accepted],
        );
        assert_eq!(end, end_of(LoginOutcome::UserUnknown));
    }

    #[test]
    fn forward_pass_with_first_pass_splits_pam_authtok() {
        let with = |first_pass, authtok| LoginStart {
            forward_pass: true,
            first_pass,
            authtok,
            ..start()
        };
        let (log, end, _) = run(
            &with(FirstPass::Use, Authtok::Held),
            ACTIVE,
            None,
            false,
            &[Some("123456")],
            &[VerifyOutcome::Accepted],
        );
        assert_eq!(log, ["ask FromAuthtok { digits: 6 }", "check 123456"]);
        assert_eq!(end, ended_step(LoginOutcome::Success, true));
        let (_, end, _) = run(
            &with(FirstPass::Use, Authtok::Held),
            ACTIVE,
            None,
            false,
            &[None],
            &[],
        );
        assert_eq!(end, end_of(LoginOutcome::AuthErr));
        let (_, end, _) = run(
            &with(FirstPass::Use, Authtok::Absent),
            ACTIVE,
            None,
            false,
            &[],
            &[],
        );
        assert_eq!(end, end_of(LoginOutcome::AuthtokRecoveryErr));
        let (log, _, _) = run(
            &with(FirstPass::Try, Authtok::Held),
            ACTIVE,
            None,
            false,
            &[None, Some("123456")],
            &[VerifyOutcome::Accepted],
        );
        assert_eq!(
            log[1],
            "ask Prompt { prompt: PasswordAndCode { digits: 6 } }"
        );
        // nullok with the password already collected: nothing is asked.
        let nullok = LoginStart {
            nullok: true,
            ..with(FirstPass::Try, Authtok::Held)
        };
        let (log, end, _) = run(&nullok, NONE, None, false, &[], &[]);
        assert!(log.is_empty());
        assert_eq!(end, end_of(LoginOutcome::Ignore));
    }

    fn ended_step(outcome: LoginOutcome, forward_password: bool) -> Step {
        match ended(outcome, forward_password) {
            Next::End(step) => step,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_record_is_read_first_only_when_the_first_step_depends_on_it() {
        assert!(!needs_view(&start(), false));
        assert!(needs_view(&start(), true));
        for start in [
            LoginStart {
                nullok: true,
                ..start()
            },
            LoginStart {
                forward_pass: true,
                ..start()
            },
            LoginStart {
                typed: "Alice".into(),
                ..start()
            },
        ] {
            assert!(needs_view(&start, false), "{start:?}");
            // A name that is no account is read alike (the same time).
            let unknown = LoginStart {
                known: false,
                ..start
            };
            assert!(needs_view(&unknown, false));
        }
        // Without a view, the code is asked for (even with sms on).
        let (_, begun, next) = Conversation::begin(&start(), None, None, true, false);
        assert_eq!(begun, Begun::CodeRequired);
        assert_eq!(
            next,
            Next::Ask(Step::Prompt {
                prompt: Prompt::Code { sms: true }
            })
        );
    }

    #[test]
    fn odd_digit_counts_fail_closed() {
        let forward = LoginStart {
            forward_pass: true,
            ..start()
        };
        let odd = UserView {
            factor_required: true,
            digits: Some(9),
            phone: false,
            remembered: false,
            can_enrol: false,
        };
        let (log, end, _) = run(&forward, odd, None, false, &[], &[]);
        assert_eq!(log, ["say Error { message: Unavailable }"]);
        assert_eq!(end, end_of(LoginOutcome::AuthinfoUnavail));
    }

    #[test]
    fn answers_out_of_turn_end_the_login_refused() {
        let (mut c, _, _) = Conversation::begin(&start(), Some(ACTIVE), None, false, false);
        assert_eq!(
            c.checked(VerifyOutcome::Accepted),
            ended(LoginOutcome::AuthErr, false)
        );
        let (mut c, _, _) = Conversation::begin(&start(), Some(ACTIVE), None, false, false);
        assert_eq!(c.resume(), ended(LoginOutcome::AuthErr, false));
    }

    const PHONE: UserView = UserView {
        factor_required: true,
        digits: Some(6),
        phone: true,
        remembered: false,
        can_enrol: false,
    };

    fn prompt(prompt: Prompt) -> Next {
        Next::Ask(Step::Prompt { prompt })
    }

    #[test]
    fn an_empty_answer_asks_the_phone_and_its_approval_lets_in() {
        let (mut c, _, next) = Conversation::begin(&start(), Some(PHONE), None, false, true);
        assert_eq!(next, prompt(Prompt::CodeOrApprove { sms: false }));
        assert_eq!(c.answer(Some(&code(""))), Next::Request);
        assert_eq!(
            c.requested(Requested::Made {
                number: 47,
                wait_secs: 60
            }),
            prompt(Prompt::ApproveNumber {
                number: 47,
                wait_secs: 60
            })
        );
        assert_eq!(c.answer(Some(&code(""))), Next::Await);
        assert_eq!(
            c.approval(Approval::Approved),
            ended(LoginOutcome::Success, false)
        );
    }

    #[test]
    fn a_code_still_works_at_the_approval_prompt_and_without_approvals_nothing_changes() {
        let (mut c, _, _) = Conversation::begin(&start(), Some(PHONE), None, true, true);
        assert_eq!(c.answer(Some(&code("123456"))), Next::Check(code("123456")));
        assert_eq!(
            c.checked(VerifyOutcome::Accepted),
            ended(LoginOutcome::Success, false)
        );
        // Approvals off in the config, or no phone: the plain prompt, and
        // an empty answer is a wrong code.
        for (view, approve) in [(PHONE, false), (ACTIVE, true)] {
            let (mut c, _, next) = Conversation::begin(&start(), Some(view), None, false, approve);
            assert_eq!(next, prompt(Prompt::Code { sms: false }));
            assert_eq!(c.answer(Some(&code(""))), Next::Check(code("")));
        }
    }

    #[test]
    fn denied_wrong_number_and_throttled_end_refused_and_expiry_asks_again() {
        let begin = || {
            let (mut c, _, _) = Conversation::begin(&start(), Some(PHONE), None, false, true);
            c.answer(Some(&code("")));
            c.requested(Requested::Made {
                number: 12,
                wait_secs: 30,
            });
            assert_eq!(c.answer(None), Next::Await);
            c
        };
        for (approval, message) in [
            (Approval::Denied, Message::ApproveDenied),
            (Approval::WrongNumber, Message::ApproveWrongNumber),
        ] {
            let mut c = begin();
            assert_eq!(c.approval(approval), Next::Say(Step::Error { message }));
            assert_eq!(c.resume(), ended(LoginOutcome::AuthErr, false));
        }
        let mut c = begin();
        assert_eq!(
            c.approval(Approval::Expired),
            Next::Say(Step::Error {
                message: Message::ApproveExpired
            })
        );
        assert_eq!(c.resume(), prompt(Prompt::CodeOrApprove { sms: false }));
        assert_eq!(c.answer(Some(&code("654321"))), Next::Check(code("654321")));
        // A refused request: the message, then the code prompt again.
        let (mut c, _, _) = Conversation::begin(&start(), Some(PHONE), None, false, true);
        c.answer(Some(&code(" ")));
        assert_eq!(
            c.requested(Requested::Refused {
                retry_after_secs: Some(600)
            }),
            Next::Say(Step::Error {
                message: Message::ApproveUnavailable {
                    retry_after_secs: Some(600)
                }
            })
        );
        assert_eq!(c.resume(), prompt(Prompt::CodeOrApprove { sms: false }));
        // A throttled source: refused like a throttled code.
        let (mut c, _, _) = Conversation::begin(&start(), Some(PHONE), None, false, true);
        c.answer(Some(&code("")));
        assert_eq!(
            c.requested(Requested::Throttled {
                retry_after_secs: 5
            }),
            Next::Say(Step::Error {
                message: Message::Throttled {
                    retry_after_secs: 5
                }
            })
        );
        assert_eq!(c.resume(), ended(LoginOutcome::MaxTries, false));
        // An approval out of turn is refused.
        let (mut c, _, _) = Conversation::begin(&start(), Some(PHONE), None, false, true);
        assert_eq!(
            c.approval(Approval::Approved),
            ended(LoginOutcome::AuthErr, false)
        );
    }

    #[test]
    fn a_remembered_login_needs_no_code_but_forward_pass_still_gets_the_password() {
        let remembered = UserView {
            remembered: true,
            ..ACTIVE
        };
        let (_, begun, next) = Conversation::begin(&start(), Some(remembered), None, true, true);
        assert_eq!(begun, Begun::Remembered);
        assert_eq!(next, ended(LoginOutcome::Success, false));
        let forward = LoginStart {
            forward_pass: true,
            ..start()
        };
        let (mut c, begun, next) =
            Conversation::begin(&forward, Some(remembered), None, false, false);
        assert_eq!(begun, Begun::Remembered);
        assert_eq!(next, prompt(Prompt::Password));
        assert_eq!(c.answer(None), ended(LoginOutcome::Success, true));
        // An unknown name is never remembered; nor is a user without a
        // factor (nullok decides that one).
        let unknown = LoginStart {
            known: false,
            ..start()
        };
        let (_, begun, _) = Conversation::begin(&unknown, Some(remembered), None, false, false);
        assert_eq!(begun, Begun::CodeRequired);
    }

    #[test]
    fn an_enrolment_at_the_login_asks_the_first_code_then_shows_the_codes() {
        let new_user = UserView {
            can_enrol: true,
            ..NONE
        };
        let nullok = LoginStart {
            nullok: true,
            ..start()
        };
        // Offered even with nullok (that is the point), never to an
        // enrolled user or with forward_pass.
        let (mut c, begun, next) = Conversation::begin(&nullok, Some(new_user), None, false, false);
        assert_eq!((begun, next), (Begun::Enrolling, Next::Enrol));
        assert_eq!(c.enrolled(true), prompt(Prompt::FirstCode));
        assert_eq!(
            c.answer(Some(&code("000000"))),
            Next::Confirm(code("000000"))
        );
        assert_eq!(
            c.confirmed(VerifyOutcome::WrongCode),
            Next::Say(Step::Error {
                message: Message::WrongFirstCode
            })
        );
        assert_eq!(c.resume(), prompt(Prompt::FirstCode));
        assert_eq!(
            c.answer(Some(&code("123456"))),
            Next::Confirm(code("123456"))
        );
        assert_eq!(
            c.confirmed(VerifyOutcome::Accepted),
            prompt(Prompt::Continue)
        );
        assert_eq!(
            c.answer(Some(&code(""))),
            ended(LoginOutcome::Success, false)
        );
        // Three wrong codes: refused, nothing active.
        let (mut c, _, _) = Conversation::begin(&start(), Some(new_user), None, false, false);
        c.enrolled(true);
        for _ in 0..2 {
            c.answer(Some(&code("000000")));
            c.confirmed(VerifyOutcome::WrongCode);
            c.resume();
        }
        c.answer(Some(&code("000000")));
        assert_eq!(
            c.confirmed(VerifyOutcome::WrongCode),
            ended(LoginOutcome::AuthErr, false)
        );
        // The device could not be made: unavailable.
        let (mut c, _, _) = Conversation::begin(&start(), Some(new_user), None, false, false);
        assert_eq!(
            c.enrolled(false),
            Next::Say(Step::Error {
                message: Message::Unavailable
            })
        );
        let forward = LoginStart {
            forward_pass: true,
            ..start()
        };
        let (_, begun, _) = Conversation::begin(&forward, Some(new_user), None, false, false);
        assert_ne!(begun, Begun::Enrolling);
        let enrolled = UserView {
            can_enrol: true,
            ..ACTIVE
        };
        let (_, begun, _) = Conversation::begin(&start(), Some(enrolled), None, false, false);
        assert_eq!(begun, Begun::CodeRequired);
    }
}
