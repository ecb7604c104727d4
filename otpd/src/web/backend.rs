//! What the pages need from the daemon, as a trait, so that the HTTP side
//! (routes, templates, headers, language) is tested without a store and
//! the daemon side (tokens, codes, records) without HTTP.
//!
//! Every method is blocking (the store is synchronous): the router calls
//! them through `tokio::task::spawn_blocking`. `peer` is the client's
//! address as the router sees it, for audit lines and rate limits. Tokens
//! and codes are never logged by either side.

/// A pending enrolment behind a valid link, for the page.
#[derive(Clone, PartialEq, Eq)]
pub struct PageEnrolment {
    /// The account name shown in the app (the user name).
    pub user: String,
    /// The issuer shown in the app.
    pub issuer: String,
    /// Base32 secret without padding, for manual entry.
    pub secret_base32: String,
    /// The `otpauth://totp/…` URI the QR code encodes.
    pub uri: String,
    /// Digits of the codes (6 or 8), for the input field.
    pub digits: u8,
}

impl std::fmt::Debug for PageEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageEnrolment")
            .field("user", &self.user)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The result of "Validate" on the enrolment page.
#[derive(Clone, PartialEq, Eq)]
pub enum Validation {
    /// The code was right: the enrolment is active and the link is dead.
    Activated {
        /// The user, for the success page.
        user: String,
        /// A fresh set of recovery codes, shown once.
        recovery_codes: Vec<String>,
        /// With `[sms]` configured: a one-time token (valid 15 minutes) for
        /// the phone step that follows on the success page.
        phone_session: Option<String>,
    },
    /// Not the right code; the page is shown again with a message.
    WrongCode,
    /// Too many failures: wait this long.
    Throttled {
        /// Seconds.
        retry_after: u64,
    },
    /// Unknown, used or expired link: the neutral page.
    Invalid,
}

impl std::fmt::Debug for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Validation::Activated {
                user,
                recovery_codes,
                ..
            } => f
                .debug_struct("Activated")
                .field("user", user)
                .field("recovery_codes", &recovery_codes.len())
                .finish_non_exhaustive(),
            Validation::WrongCode => f.write_str("WrongCode"),
            Validation::Throttled { retry_after } => {
                write!(f, "Throttled({retry_after})")
            }
            Validation::Invalid => f.write_str("Invalid"),
        }
    }
}

/// The result of a phone step on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneStep {
    /// A code was texted to the number; ask for it.
    Sent,
    /// The number is now registered.
    Registered,
    /// Not a number in international form (+31612345678).
    BadNumber,
    /// The code typed is not the one texted (or it expired).
    WrongCode,
    /// Sending failed (the sender program failed or timed out).
    SendFailed,
    /// Too many messages: wait this long.
    Limited {
        /// Seconds.
        retry_after: u64,
    },
    /// Unknown or expired phone session: the neutral page.
    Invalid,
}

/// The daemon's side of the pages.
pub trait EnrolBackend: Send + Sync + 'static {
    /// The pending enrolment behind `token`, or `None` when the token is
    /// unknown, used or expired (all look the same).
    fn view(&self, token: &str, peer: &str) -> Option<PageEnrolment>;
    /// Checks `code` for the enrolment behind `token`.
    fn validate(&self, token: &str, code: &str, peer: &str) -> Validation;
    /// Whether text messages are configured (the success page offers the phone step).
    fn sms_enabled(&self) -> bool;
    /// Texts a code to `number` for the user of `session`.
    fn phone_send(&self, session: &str, number: &str, peer: &str) -> PhoneStep;
    /// Registers the number once `code` (the texted one) is typed back.
    fn phone_verify(&self, session: &str, code: &str, peer: &str) -> PhoneStep;
}
