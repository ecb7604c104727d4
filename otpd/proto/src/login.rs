//! The login conversation (design.md "Shape"): the module opens one
//! connection per PAM call and sends [`LoginStart`]; the daemon leads with
//! [`Step`]s (a prompt, a message, the end) and the module answers each
//! prompt with `Request::Answer`. The module decides nothing: it renders the
//! daemon's texts in the person's language and maps the [`LoginOutcome`] to
//! a PAM return code.

use crate::SecretText;
use serde::{Deserialize, Serialize};

/// The module's `use_first_pass` / `try_first_pass` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FirstPass {
    /// Neither: ask.
    #[default]
    Prompt,
    /// `use_first_pass`: take the code from PAM_AUTHTOK, never ask.
    Use,
    /// `try_first_pass`: take it from PAM_AUTHTOK when it fits, else ask.
    Try,
}

/// The language the module shows its texts in (`lang=` or the locale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// Dutch.
    Nl,
}

/// PAM_AUTHTOK as the module found it. Only text shaped like a code is sent
/// (an earlier module's password of 6 to 8 digits looks like one, and is
/// then checked, counted and audited as a wrong code, never logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Authtok {
    /// Not asked for (no `use_first_pass`/`try_first_pass`), or not set.
    #[default]
    Absent,
    /// Set, but not shaped like a code ([`looks_like_code`]); with
    /// `forward_pass` always this when set: the daemon asks for the code at
    /// its end with [`Step::FromAuthtok`].
    Held,
    /// Set and shaped like a code.
    Code(SecretText),
}

/// What the module knows when a login begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStart {
    /// The account's own name (`getpwnam_r`), or PAM_USER as typed when
    /// the user database does not know it (`known` false).
    pub user: String,
    /// PAM_USER as typed (differs from `user` under an NSS that ignores case).
    pub typed: String,
    /// The user database knows the name.
    pub known: bool,
    /// PAM_SERVICE (`sshd`, `sudo` …).
    pub service: String,
    /// PAM_RHOST, empty for local logins.
    pub rhost: String,
    /// PAM_TTY, empty when unset.
    #[serde(default)]
    pub tty: String,
    /// The real uid of the process the module runs in.
    pub ruid: u32,
    /// `nullok`: users who never had a device pass without a code.
    #[serde(default)]
    pub nullok: bool,
    /// `forward_pass`: one prompt for password and code; the password goes
    /// on to the next module.
    #[serde(default)]
    pub forward_pass: bool,
    /// `use_first_pass` / `try_first_pass`.
    #[serde(default)]
    pub first_pass: FirstPass,
    /// The language of the texts (for the daemon's audit and texted codes).
    #[serde(default)]
    pub language: Language,
    /// PAM_AUTHTOK, with `use_first_pass` or `try_first_pass`.
    #[serde(default)]
    pub authtok: Authtok,
    /// `SSH_AUTH_INFO_0` of the PAM environment: what sshd verified before
    /// this module (under `AuthenticationMethods publickey,…`, the line
    /// `publickey TYPE BASE64`); the binding of a remembered login. Public
    /// data; at most [`MAX_AUTH_INFO`] bytes are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_info: Option<String>,
    /// An earlier module set PAM_AUTHTOK (a password was collected before
    /// this module: with a stack whose password failure ends it, as
    /// Debian's common-auth, the password was right). Never the password
    /// itself. Evidence of a first factor for an enrolment at the login.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authtok_set: bool,
}

/// The most of `SSH_AUTH_INFO_0` a module sends (a few keys' lines).
pub const MAX_AUTH_INFO: usize = 8 * 1024;

impl LoginStart {
    /// The start of a plain login of `user`, an account, without any of
    /// the conversation's arguments (no `nullok`, no `forward_pass`, asked
    /// for the code): what sshd's or a screen locker's module sends.
    pub fn plain(user: &str, service: &str, rhost: &str, ruid: u32) -> Self {
        Self {
            user: user.to_owned(),
            typed: user.to_owned(),
            known: true,
            service: service.to_owned(),
            rhost: rhost.to_owned(),
            tty: String::new(),
            ruid,
            nullok: false,
            forward_pass: false,
            first_pass: FirstPass::Prompt,
            language: Language::En,
            authtok: Authtok::Absent,
            auth_info: None,
            authtok_set: false,
        }
    }
}

/// What the daemon asks the person for. Always with echo off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Prompt {
    /// The code from the app (`prompt=` replaces the text); `sms`: the
    /// prompt mentions that typing `sms` texts one.
    Code {
        /// Texts are configured on this daemon.
        sms: bool,
    },
    /// The code, or an empty answer to approve the sign-in on a paired
    /// phone instead (the user has one).
    CodeOrApprove {
        /// Texts are configured on this daemon (`sms` is still accepted).
        sms: bool,
    },
    /// The number to pick on the phone; any answer (Enter) then waits for
    /// the phone, up to `wait_secs`: the module waits that long for the
    /// daemon's next step, on top of its `timeout=`.
    ApproveNumber {
        /// The two-digit number shown on the terminal, picked on the phone.
        number: u8,
        /// Seconds the request has left.
        wait_secs: u64,
    },
    /// The code just texted.
    TextedCode,
    /// The first code of the app just set up at this login ("Enter your
    /// OTP", enrolment at the first login).
    FirstCode,
    /// Enter to go on (after the recovery codes, so that every terminal
    /// shows them before the login continues).
    Continue,
    /// The password only (nullok with forward_pass): the module keeps the
    /// answer for the next module and sends none.
    Password,
    /// Password and code in one answer (forward_pass): the module keeps the
    /// password and sends the last `digits` characters when they are digits.
    PasswordAndCode {
        /// Digits of the user's codes.
        digits: u8,
    },
}

/// A message for the person, rendered by the module in its language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "text", rename_all = "snake_case")]
pub enum Message {
    /// A code was texted to the registered phone.
    SmsSent,
    /// No text could be sent.
    SmsUnavailable {
        /// Seconds until one may be sent again, when it is the limit.
        retry_after_secs: Option<u64>,
    },
    /// Too many failures: try again later.
    Throttled {
        /// Seconds until the next attempt is allowed.
        retry_after_secs: u64,
    },
    /// The factor cannot be checked now (the daemon's store failed).
    Unavailable,
    /// The sign-in request expired before it was approved on the phone.
    ApproveExpired,
    /// The sign-in was denied on the phone.
    ApproveDenied,
    /// A wrong number was picked on the phone: the request is closed.
    ApproveWrongNumber,
    /// The first code of the app just set up was not right.
    WrongFirstCode,
    /// No sign-in request could be sent to the phone (too many open, or
    /// the hour's limit); the code still works.
    ApproveUnavailable {
        /// Seconds until one may be sent again, when it is the hour's limit.
        retry_after_secs: Option<u64>,
    },
}

/// How a login ended; the module maps it to a PAM return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginOutcome {
    /// PAM_SUCCESS.
    Success,
    /// PAM_IGNORE (`nullok`, no device).
    Ignore,
    /// PAM_AUTH_ERR.
    AuthErr,
    /// PAM_USER_UNKNOWN.
    UserUnknown,
    /// PAM_MAXTRIES.
    MaxTries,
    /// PAM_AUTHINFO_UNAVAIL.
    AuthinfoUnavail,
    /// PAM_AUTHTOK_RECOVERY_ERR (`use_first_pass` without PAM_AUTHTOK).
    AuthtokRecoveryErr,
}

/// One step of the daemon's side of a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Ask the person; answer with `Request::Answer`.
    Prompt {
        /// What to ask.
        prompt: Prompt,
    },
    /// Split PAM_AUTHTOK as a `PasswordAndCode` answer and answer with its
    /// code (`None`: not set, or it does not end in `digits` digits).
    FromAuthtok {
        /// Digits of the user's codes.
        digits: u8,
    },
    /// Show an informational message; no answer.
    Info {
        /// The message.
        message: Message,
    },
    /// Show an error message; no answer.
    Error {
        /// The message.
        message: Message,
    },
    /// Enrolment at the first login: the manual's steps, the QR code (in
    /// terminal blocks) and the secret in groups of four, shown once; then
    /// `Prompt::FirstCode`. It holds the secret: the module shows it and
    /// keeps nothing.
    Enrolment {
        /// The issuer the app shows.
        issuer: String,
        /// The account the app shows.
        account: String,
        /// The QR code of the otpauth URI, in Unicode half blocks.
        qr: SecretText,
        /// The secret (base32) in groups of four.
        secret: SecretText,
    },
    /// The recovery codes of the device just confirmed, shown once.
    RecoveryCodes {
        /// Each works once in place of a code.
        codes: Vec<SecretText>,
    },
    /// The login is decided.
    End {
        /// The decision.
        outcome: LoginOutcome,
        /// Set PAM_AUTHTOK to the password the module kept (forward_pass).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forward_password: bool,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_recognised_and_passwords_are_not() {
        for code in ["123456", " 123456 ", "123 456", "12345678"] {
            assert!(looks_like_code(code), "{code:?}");
        }
        for other in [
            "12345",
            "123456789",
            "12 34 56",
            "hunter2",
            "sms",
            "",
            "１２３４５６",
        ] {
            assert!(!looks_like_code(other), "{other:?}");
        }
    }

    #[test]
    fn forward_pass_splits_off_the_code() {
        assert_eq!(split_forward_pass(b"hunter2123456", 6), Some(7));
        assert_eq!(split_forward_pass(b"123456", 6), Some(0));
        assert_eq!(split_forward_pass(b"12345", 6), None);
        assert_eq!(split_forward_pass(b"hunter212345x", 6), None);
        assert_eq!(split_forward_pass(b"x", 0), None);
    }

    #[test]
    fn steps_have_a_stable_wire_form() {
        let step = Step::Prompt {
            prompt: Prompt::Code { sms: true },
        };
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            r#"{"step":"prompt","prompt":{"ask":"code","sms":true}}"#
        );
        let end = Step::End {
            outcome: LoginOutcome::Success,
            forward_password: false,
        };
        assert_eq!(
            serde_json::to_string(&end).unwrap(),
            r#"{"step":"end","outcome":"success"}"#
        );
    }
}
