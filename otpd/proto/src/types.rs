//! Requests and responses. Every field that carries a code or a secret is a
//! [`SecretText`], so a `Debug` print of a request never shows it.

use crate::{LoginStart, SecretText, Step};
use serde::{Deserialize, Serialize};

/// HMAC algorithm of a TOTP record (RFC 6238 §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Algorithm {
    /// HMAC-SHA1, the only one every authenticator app supports.
    #[default]
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// The name used in `otpauth://` URIs and in the config: `SHA1` …
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Ok(Algorithm::Sha1),
            "SHA256" => Ok(Algorithm::Sha256),
            "SHA512" => Ok(Algorithm::Sha512),
            _ => Err(format!(
                "unknown algorithm \"{s}\" (expected SHA1, SHA256 or SHA512)"
            )),
        }
    }
}

/// How a token counts (RFC 6238 time steps or RFC 4226 counter values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Time-based (RFC 6238): the codes of authenticator apps.
    #[default]
    Totp,
    /// Counter-based (RFC 4226): hardware keys that count button presses.
    Hotp,
}

impl TokenKind {
    /// `totp` or `hotp`, as in `otpauth://` URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Totp => "totp",
            TokenKind::Hotp => "hotp",
        }
    }
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Check a code for a login (PAM) or `otpd verify`. Consumes the code.
    Verify {
        /// The PAM user name.
        user: String,
        /// The code as typed.
        code: SecretText,
        /// PAM_SERVICE (`sshd`, `sudo` …), for the audit line.
        service: String,
        /// PAM_RHOST, empty for local logins; the rate-limit source.
        rhost: String,
        /// The real uid of the process the module runs in (the person who
        /// ran su or sudo), the rate-limit source of a local login. Believed
        /// only when the caller is root.
        #[serde(default)]
        ruid: Option<u32>,
    },
    /// Start (or, with `force`, restart) an enrolment. Admin only.
    Enroll(EnrollParams),
    /// Turn a pending enrolment into an active one with a first valid code. Admin only.
    Confirm {
        /// The user whose enrolment is pending.
        user: String,
        /// The first code from the app.
        code: SecretText,
    },
    /// List every enrolled user, never a secret. Admin only.
    List {},
    /// Remove a user's enrolment and counters, or one of the user's
    /// devices. Admin only.
    Remove {
        /// The user to remove.
        user: String,
        /// Only this device (the user keeps the others; removing the last
        /// one removes the user).
        #[serde(default)]
        device: Option<String>,
    },
    /// Bring an HOTP token's counter back in step with the token from two
    /// consecutive codes. Admin only.
    Resync {
        /// The user.
        user: String,
        /// Only this device; `None`: whichever HOTP device the codes fit.
        #[serde(default)]
        device: Option<String>,
        /// The first code.
        code1: SecretText,
        /// The code after it.
        code2: SecretText,
    },
    /// Create a user from a token that already exists elsewhere
    /// (pam_google_authenticator, pam_oath). Admin only.
    Import(Box<ImportParams>),
    /// Clear a user's failure counters and backoff. Admin only.
    Unlock {
        /// The user to unlock.
        user: String,
    },
    /// Replace the user's recovery codes with new ones. Admin only.
    RecoveryCodes {
        /// The user (enrolled).
        user: String,
        /// How many; `None`: the configured count.
        count: Option<u32>,
    },
    /// Text a code to `number` to register it as the user's phone. Admin only.
    Phone {
        /// The user (enrolled).
        user: String,
        /// International form, `+31612345678`.
        number: String,
    },
    /// The daemon's own state: version, store, users by state, uptime. Admin only.
    DaemonStatus {},
    /// A one-time link (ten minutes) that pairs a phone to approve the
    /// user's sign-ins on (`otpd enroll USER --approver`); the answer is a
    /// `Response::Link`. Admin only.
    ApproverLink {
        /// The user (enrolled).
        user: String,
    },
    /// End a user's remembered logins (`[remember]`): all of them, or
    /// those of the SSH key with this fingerprint. Admin only; answered
    /// with `Response::Forgotten`.
    Forget {
        /// The user.
        user: String,
        /// `SHA256:…` as `ssh-keygen -l` prints it; `None`: all.
        #[serde(default)]
        key: Option<String>,
    },
    /// Register the number of the last `Phone` with the code texted to it. Admin only.
    PhoneConfirm {
        /// The user.
        user: String,
        /// The texted code.
        code: SecretText,
    },
    /// Begin a login conversation (the PAM module): the daemon answers with
    /// `Response::Step`s until `Step::End`, on this connection.
    Login(Box<LoginStart>),
    /// The answer to a `Step::Prompt` or `Step::FromAuthtok` of the login
    /// on this connection. `None`: nothing to send (not text, a password
    /// the module keeps, no code at the end of PAM_AUTHTOK).
    Answer {
        /// What was typed, when it is sent.
        answer: Option<SecretText>,
    },
    /// `otpd self devices`: the caller's own devices and paired phones,
    /// never a secret. The user is the one the caller's uid maps to (no
    /// name is sent); refused to root (it has the admin commands).
    SelfDevices {},
    /// `otpd self add-device NAME`: a new pending TOTP device of the
    /// caller, proved with a code of an active device or a recovery code;
    /// the answer is a `Response::Enrolled`.
    SelfAddDevice {
        /// The new device's name.
        device: String,
        /// The proof that the caller is the user.
        proof: SelfProof,
    },
    /// `otpd self confirm NAME CODE`: the first code of the caller's
    /// pending device NAME; the answer is a `Response::Confirmed`.
    SelfConfirm {
        /// The pending device.
        device: String,
        /// Its first code.
        code: SecretText,
    },
    /// `otpd self remove-device NAME`: one of the caller's devices or
    /// paired phones (never the last active device).
    SelfRemoveDevice {
        /// The device or phone.
        device: String,
        /// A code of an active device.
        proof: SelfProof,
    },
    /// `otpd self recovery-codes`: a new set for the caller, shown once;
    /// the answer is a `Response::RecoveryCodes`.
    SelfRecoveryCodes {
        /// A code of an active device.
        proof: SelfProof,
    },
    /// `otpd self activity`: the caller's latest logins and failures.
    SelfActivity {},
}

/// What proves, in an `otpd self` change, that the caller is the user:
/// checked like a login (counted against the limits, used up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "with", rename_all = "snake_case", deny_unknown_fields)]
pub enum SelfProof {
    /// A fresh code of one of the user's active devices.
    Code {
        /// The code as typed.
        code: SecretText,
    },
    /// A recovery code (a lost phone); only for adding a device, and the
    /// administrator is told through the audit log.
    RecoveryCode {
        /// The recovery code as typed.
        code: SecretText,
    },
}

/// Parameters of `otpd enroll`; `None` means the daemon's configured default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnrollParams {
    /// The user to enrol.
    pub user: String,
    /// Issuer shown in the app.
    pub issuer: Option<String>,
    /// HMAC algorithm.
    pub algorithm: Option<Algorithm>,
    /// 6 or 8.
    pub digits: Option<u8>,
    /// Seconds per time step.
    pub period: Option<u64>,
    /// Replace an active enrolment.
    pub force: bool,
    /// `Some(seconds)`: a self-enrolment link valid this long instead of
    /// the secret (`otpd enroll --link`).
    #[serde(default)]
    pub link_expires: Option<u64>,
    /// The device's name; `None`: the user's first device, "default".
    /// A user who already has other devices keeps them.
    #[serde(default)]
    pub device: Option<String>,
    /// A counter-based (HOTP) token instead of a time-based one.
    #[serde(default)]
    pub hotp: bool,
    /// HOTP only: the counter value of the token's next code (default 0).
    #[serde(default)]
    pub counter: Option<u64>,
    /// With `force`: the replaced device (or, for the whole user, every
    /// device, the recovery codes and the phone) stops working at once
    /// instead of when the new one is confirmed; until then the user cannot
    /// log in (never through `nullok`).
    #[serde(default)]
    pub revoke: bool,
}

/// A user whose tokens exist already elsewhere, to be imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// The user.
    pub user: String,
    /// The user's tokens (at least one).
    pub devices: Vec<ImportedDevice>,
    /// One-time codes that become recovery codes (stored hashed).
    pub recovery_codes: Vec<SecretText>,
    /// Replace an existing otpd enrolment of the user.
    pub replace: bool,
    /// Check everything, change nothing, say what would happen.
    pub dry_run: bool,
}

/// One imported token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedDevice {
    /// The device name.
    pub name: String,
    /// TOTP or HOTP.
    pub kind: TokenKind,
    /// The shared secret, base32 without padding.
    pub secret_base32: SecretText,
    /// HMAC algorithm.
    pub algorithm: Algorithm,
    /// Digits per code (6 to 8).
    pub digits: u8,
    /// TOTP: seconds per step.
    pub period: u64,
    /// The replay state: TOTP, the last time step used; HOTP, the last
    /// counter value used. `None`: nothing used yet.
    pub last_used: Option<u64>,
    /// HOTP only: the next counter value when none was used (`last_used`
    /// is `None`).
    pub first_counter: u64,
    /// The token's own window: TOTP, steps either side; HOTP, look-ahead.
    /// `None`: the daemon's configured window.
    pub window: Option<u16>,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportResult {
    /// The user was created.
    Created,
    /// The user's earlier enrolment was replaced (`replace`).
    Replaced,
    /// The user is enrolled in otpd already and was left alone.
    LeftAlone,
}

/// The daemon's answer. Unknown fields are ignored (unlike in requests):
/// a module that a long-running host (a screen locker) keeps loaded across
/// an upgrade must still understand a newer daemon that adds a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// The decision on a `Verify` or `Confirm`.
    Verified {
        /// What was decided.
        outcome: VerifyOutcome,
    },
    /// A new pending enrolment.
    Enrolled(Box<Enrollment>),
    /// A new pending enrolment with a self-enrolment link.
    Link {
        /// The user.
        user: String,
        /// `{public_url}/enroll/{token}`: give it to the user only.
        url: SecretText,
        /// Unix time after which the link is refused.
        expires: u64,
        /// An existing enrolment was replaced (`force`).
        replaced: bool,
        /// The replaced enrolment was active and keeps working until the
        /// page's code is validated.
        #[serde(default, skip_serializing_if = "is_false")]
        old_kept: bool,
    },
    /// The answer to `DaemonStatus`.
    DaemonStatus(Box<DaemonStatus>),
    /// The answer to `Forget`: how many remembered logins ended.
    Forgotten {
        /// How many.
        count: u32,
    },
    /// New recovery codes, shown once.
    RecoveryCodes {
        /// The user.
        user: String,
        /// The codes, `XXXX-XXXX-XXXX`.
        codes: Vec<SecretText>,
    },
    /// The answer to `List`.
    Users {
        /// One entry per enrolled user, sorted by name.
        users: Vec<UserSummary>,
    },
    /// The answer to `Import`.
    Imported {
        /// The user.
        user: String,
        /// What was (or would be) done.
        result: ImportResult,
        /// It was a dry run: nothing was changed.
        dry_run: bool,
    },
    /// The answer to `Resync`: the token's next counter value.
    Resynced {
        /// The device that the codes fit.
        device: String,
        /// The counter value that the token's next code must have.
        next_counter: u64,
    },
    /// The next step of a login conversation.
    Step(Step),
    /// A confirmation (`Confirm`, the page's "Validate") activated a
    /// device; every activation comes with a new set of recovery codes,
    /// shown once (older ones no longer work).
    Confirmed {
        /// The new recovery codes, `XXXX-XXXX-XXXX`.
        recovery_codes: Vec<SecretText>,
    },
    /// `Remove` or `Unlock` was carried out.
    Done {},
    /// The request was refused or failed; nothing was changed.
    Error {
        /// What kind of failure, for exit codes and PAM return values.
        code: ErrorCode,
        /// A sentence for the person at the terminal; never a secret.
        message: String,
    },
    /// The answer to `SelfDevices`.
    OwnDevices {
        /// The caller's user name.
        user: String,
        /// The devices (tokens), the first one first.
        devices: Vec<DeviceSummary>,
        /// The phones paired to approve sign-ins.
        #[serde(default)]
        approvers: Vec<ApproverSummary>,
        /// Unused recovery codes.
        recovery_codes: u32,
    },
    /// The answer to `SelfActivity`.
    Activity {
        /// The caller's user name.
        user: String,
        /// The latest logins and failures, newest last.
        events: Vec<ActivityEntry>,
    },
}

/// One login attempt as `otpd self activity` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityEntry {
    /// Unix time of the attempt.
    pub time: u64,
    /// PAM_SERVICE (`sshd`, `sudo` …; `otpd-self` for `otpd self`).
    pub service: String,
    /// Where from: PAM_RHOST, or `uid:N` for a local login.
    pub source: String,
    /// `accepted`, `wrong_code`, `replayed`, `accepted_recovery_code` …
    pub outcome: String,
}

/// What `otpd status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The daemon's version.
    pub version: String,
    /// The state directory (the store is in its `store/`).
    pub state_dir: String,
    /// The socket it answers on.
    pub socket: String,
    /// The socket was handed over by systemd (`otpd.socket`).
    pub socket_activated: bool,
    /// Users whose token is active.
    pub active: u64,
    /// Users whose enrolment waits for its first code.
    pub pending: u64,
    /// Active users in backoff now.
    pub throttled: u64,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The address of the enrolment pages, when served.
    pub web: Option<String>,
    /// Text messages are configured.
    pub sms: bool,
    /// Where the state is ("sled in DIR", "PostgreSQL user@host:port/db");
    /// absent from daemons older than the PostgreSQL store.
    #[serde(default)]
    pub store: Option<String>,
    /// Where the audit trail stands (`SEQ:CHAIN`, see `otpd audit verify`);
    /// absent from daemons older than the chained trail.
    #[serde(default)]
    pub audit_head: Option<String>,
}

/// The decision on one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum VerifyOutcome {
    /// The code is valid and was not used before; it is now used.
    Accepted,
    /// Not a valid code for this user now.
    WrongCode,
    /// A valid code for a time step that was already used.
    Replayed,
    /// Too many failures: every attempt is refused for this long.
    Throttled {
        /// Seconds until the next attempt is allowed.
        retry_after_secs: u64,
    },
    /// The user has no enrolment.
    NotEnrolled,
    /// The user's enrolment waits for its first code (`otpd confirm`).
    Pending,
    /// The user typed `sms`: a code was texted to the registered phone;
    /// ask again.
    SmsSent,
    /// The user typed `sms`, but no text can be sent: no phone, no sender
    /// configured, the sender failed, or too many were sent.
    SmsUnavailable {
        /// Seconds until one may be sent again, when it is the limit.
        retry_after_secs: Option<u64>,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or a value was invalid.
    BadRequest,
    /// The caller may not do this (admin op by non-root, other user's code).
    PermissionDenied,
    /// No such user.
    NotFound,
    /// The user already has an active enrolment (use `--force`).
    AlreadyEnrolled,
    /// `confirm` on a user whose enrolment is not pending.
    NotPending,
    /// The daemon could not complete the request (store error); fail closed.
    Internal,
    /// A text message could not be sent (no sender, sender failed, limit).
    Unavailable,
    /// A well-formed request the daemon will not carry out as asked (the
    /// message says what to do instead), such as removing a user's last
    /// device, which would switch the second factor off.
    Refused,
}

/// A new enrolment as the admin CLI shows it. Sent only to root, or to
/// the user itself for its own new device (`otpd self add-device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The user.
    pub user: String,
    /// Issuer shown in the app.
    pub issuer: String,
    /// HMAC algorithm.
    pub algorithm: Algorithm,
    /// Number of digits.
    pub digits: u8,
    /// Seconds per step.
    pub period: u64,
    /// The secret, base32 without padding.
    pub secret_base32: SecretText,
    /// The `otpauth://totp/…` URI (contains the secret).
    pub uri: SecretText,
    /// An earlier enrolment (pending, or active with `force`) was replaced.
    pub replaced: bool,
    /// The device's name.
    #[serde(default)]
    pub device: String,
    /// TOTP or HOTP. (Not `kind`: that is the tag of `Response`, which
    /// carries this struct's fields beside it.)
    #[serde(default)]
    pub token_kind: TokenKind,
    /// HOTP: the counter value of the token's next code.
    #[serde(default)]
    pub counter: Option<u64>,
    /// The replaced device was active and keeps working until this one is
    /// confirmed.
    #[serde(default)]
    pub old_kept: bool,
}

/// The state of an enrolment as `otpd list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// Waiting for its first code.
    Pending,
    /// Codes are accepted.
    Active,
    /// Active, but the user as a whole is in backoff.
    Throttled,
}

/// One line of `otpd list`; never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSummary {
    /// The user.
    pub user: String,
    /// Pending, active or throttled.
    pub state: UserState,
    /// HMAC algorithm.
    pub algorithm: Algorithm,
    /// Number of digits.
    pub digits: u8,
    /// Seconds per step.
    pub period: u64,
    /// Unix time of the enrolment.
    pub created: u64,
    /// Unix time of the last accepted code, if any.
    pub last_success: Option<u64>,
    /// Failures since the last success, all sources together.
    pub failures: u32,
    /// Seconds until the user-wide backoff ends, when throttled.
    pub throttled_for_secs: Option<u64>,
    /// Unused recovery codes.
    #[serde(default)]
    pub recovery_codes: u32,
    /// A phone number is registered for texted codes.
    #[serde(default)]
    pub phone: bool,
    /// The user's devices (tokens), the first one first.
    #[serde(default)]
    pub devices: Vec<DeviceSummary>,
    /// The phones paired to approve the user's sign-ins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<ApproverSummary>,
    /// Remembered logins still valid (`[remember]`).
    #[serde(default)]
    pub remembered: u32,
}

/// A phone paired to approve sign-ins, as `otpd list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverSummary {
    /// Its name.
    pub name: String,
    /// Pending (its test request not yet approved) or active.
    pub state: UserState,
    /// Unix time of its pairing.
    pub created: u64,
    /// Unix time of its latest approval.
    pub last_used: Option<u64>,
    /// Requests are pushed to it (it gave a Web Push subscription).
    pub push: bool,
}

/// One device (token) of a user, as `otpd list` shows it; never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSummary {
    /// Its name.
    pub name: String,
    /// TOTP or HOTP.
    pub kind: TokenKind,
    /// Pending or active (never throttled: limits are per user).
    pub state: UserState,
    /// HMAC algorithm.
    pub algorithm: Algorithm,
    /// Number of digits.
    pub digits: u8,
    /// TOTP: seconds per step.
    pub period: u64,
    /// HOTP: the counter value of the next code.
    pub next_counter: Option<u64>,
    /// Unix time of its enrolment or import.
    pub created: u64,
}

fn is_false(value: &bool) -> bool {
    !*value
}
