//! What the pages need from the daemon, as a trait, so that the HTTP side
//! (routes, templates, headers, language) is tested without a store and
//! the daemon side (tokens, codes, records) without HTTP.
//!
//! Every method is blocking (the store is synchronous): the router calls
//! them on the pages' own threads ([`super::limits::PagePool`]). `peer` is the client's
//! address as the router sees it, for audit lines and rate limits. Tokens
//! and codes are never logged by either side.

/// The page of a valid link before the QR code is shown: what a GET
/// gets, so nothing secret. Its form posts `view` to show the QR code.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkView {
    /// The account name shown in the app (the user name).
    pub user: String,
    /// The issuer shown in the app.
    pub issuer: String,
    /// Digits of the codes (6 or 8), for the input field.
    pub digits: u8,
    /// This view's one-time nonce, for the "Show QR code" form.
    pub view: String,
    /// Unix time the QR code was last shown, if it has been.
    pub opened_before: Option<u64>,
}

impl std::fmt::Debug for LinkView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkView")
            .field("user", &self.user)
            .field("opened_before", &self.opened_before)
            .finish_non_exhaustive()
    }
}

/// A pending enrolment's secret, shown once on the page that answers
/// "Show QR code".
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
    /// Unix time the QR code was shown before this time, if it was.
    pub opened_before: Option<u64>,
}

impl std::fmt::Debug for PageEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageEnrolment")
            .field("user", &self.user)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The result of "Show QR code".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reveal {
    /// A new secret, written to the pending device (the one shown before
    /// is dead).
    Shown(PageEnrolment),
    /// Not a view of this link's page that can still show the QR code (a
    /// reload, an old page, a made-up form): the page again, nothing shown.
    StaleView,
    /// Unknown, used or expired link: the neutral page.
    Invalid,
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
        /// With `[approve]` configured: the phone-pairing link (valid 10
        /// minutes, once) that the success page shows as a second QR code.
        pairing_url: Option<String>,
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
pub trait EnrollBackend: Send + Sync + 'static {
    /// A new view of the page of the pending enrolment behind `token`
    /// (its nonce is remembered), or `None` when the token is unknown,
    /// used or expired (all look the same).
    fn view(&self, token: &str, peer: &str) -> Option<LinkView>;
    /// "Show QR code" on the view whose nonce is `view`: each time a new
    /// secret, and each view once.
    fn reveal(&self, token: &str, view: &str, peer: &str) -> Reveal;
    /// Checks `code` for the enrolment behind `token`.
    fn validate(&self, token: &str, code: &str, peer: &str) -> Validation;
    /// Whether text messages are configured (the success page offers the phone step).
    fn sms_enabled(&self) -> bool;
    /// Texts a code to `number` for the user of `session`.
    fn phone_send(&self, session: &str, number: &str, peer: &str) -> PhoneStep;
    /// Registers the number once `code` (the texted one) is typed back.
    fn phone_verify(&self, session: &str, code: &str, peer: &str) -> PhoneStep;
    /// Whether the phone-pairing link `token` is live (its page shows the
    /// "Turn on sign-in approvals" button; otherwise the neutral page).
    fn pairing_live(&self, token: &str) -> bool {
        let _ = token;
        false
    }
    /// One call of the phone app's API (`op`: the path after
    /// `/approve/api/`), its JSON `body`, from `peer`, in `lang` (`en`, `nl`).
    fn approve_api(&self, op: &str, body: &[u8], peer: &str, lang: &str) -> ApiReply {
        let _ = (op, body, peer, lang);
        ApiReply {
            status: 404,
            body: serde_json::json!({ "error": "sign-in approvals are off on this server" }),
        }
    }
}

/// The answer to a call of the phone app's API: an HTTP status and a JSON
/// body (`{"error": "…"}` naming the problem on a refusal).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiReply {
    /// 200, or the refusal's 4xx/5xx.
    pub status: u16,
    /// The JSON answer.
    pub body: serde_json::Value,
}
