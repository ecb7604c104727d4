//! Carries out one request: reads the store, asks the pure core, writes the
//! decision back, and writes the audit line. Blocking; the listener runs it
//! on tokio's blocking pool. One file per use case: `verify.rs` (a code
//! check), `login.rs` (the conversation's reads and checks), `enrol.rs`,
//! `devices.rs` (remove a device, resync), `import.rs`, `phone.rs` (links, texted
//! codes), `recovery.rs`, `admin.rs` (status, list, remove,
//! unlock), `web.rs` (the pages' side); this file holds the dispatch, the
//! one compare-and-swap retry loop and the wording of refusals.

use super::policy::{authorize, Caller};
use crate::config::Config;
use crate::core::decision::{Purpose, Rules};
use crate::core::names::{validate_issuer, validate_user};
use crate::core::plan::{plan_verify, Effect, Refusal, VerifyAttempt, VerifyRead};
use crate::core::ratelimit::remaining;
use crate::core::record::{
    source_of, Device, EnrollState, Fallback, Replaces, SecretBytes, TokenKind, UserRecord,
    DEFAULT_DEVICE,
};
use crate::core::totp::{otpauth_hotp_uri, otpauth_uri};
use crate::server::metrics::Metrics;
use crate::store::{RecordChange, SourcesChange, Store, StoreError};
use otpd_proto::{
    DaemonStatus, EnrollParams, Enrollment, ErrorCode, Request, Response, SecretText, UserState,
    UserSummary,
};
use std::sync::Arc;
use tracing::{error, info, warn};

mod admin;
mod approve;
#[cfg(feature = "web")]
mod approve_web;
mod devices;
mod enroll;
mod import;
mod login;
mod phone;
mod recovery;
mod self_service;
mod verify;
mod web;

use enroll::account_spelling;
use verify::{audit_verify, own_source, Attempt};

pub use login::{audit_login_end, LoginContext};

pub use web::WebBackend;

/// Bytes of a new secret: 160 bits, as RFC 4226 §4 recommends.
const SECRET_LEN: usize = 20;
/// Compare-and-swap retries before giving up (only reached under a storm of
/// concurrent writes to one user).
const MAX_ATTEMPTS: usize = 16;
/// Longest PAM_SERVICE or PAM_RHOST accepted (both end up in audit lines,
/// an rhost also in a stored key).
const MAX_ITEM_LEN: usize = 255;

/// The daemon's request handler.
pub struct Handler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rules: Rules,
    config: Config,
    issuer: String,
    started: std::time::Instant,
    socket_activated: std::sync::atomic::AtomicBool,
    /// Made at the first use of sign-in approvals (`approve_web.rs`).
    #[cfg(feature = "web")]
    approve_parts: std::sync::OnceLock<Option<Arc<approve_web::ApproveParts>>>,
    /// The runtime the handler was made in, if any: pushes go out on it,
    /// also when the pages' threads (which have none) ask for them.
    runtime: Option<tokio::runtime::Handle>,
    /// The daemon's metrics, counted at the decision points.
    metrics: Arc<Metrics>,
}

pub use crate::clock::{Clock, SystemClock};

fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

/// A login or an answer that reached the one-shot path: a login must be
/// the first request on its connection, an answer must follow a prompt.
fn out_of_turn() -> Response {
    refuse(
        ErrorCode::BadRequest,
        "a login must be the first request on its connection, and an answer must follow a prompt",
    )
}

/// Why a request could not be carried out (fail closed): the store's
/// failure, whose kind picks the sentence for the caller, or another cause.
pub(crate) enum Failure {
    /// The store failed; its kind says what the operator can do.
    Store(StoreError),
    /// Anything else (the OS RNG, a damaged token …), for the log.
    Other(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Other(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Self {
        Failure::Other(e.to_owned())
    }
}

impl From<crate::rng::RngError> for Failure {
    fn from(e: crate::rng::RngError) -> Self {
        Failure::Other(e.to_string())
    }
}

/// The refusal for a request that failed: the cause goes to the log, the
/// caller gets the sentence for its kind (`StoreError::for_caller`).
fn internal(e: impl Into<Failure>) -> Response {
    let message = match e.into() {
        Failure::Store(e) => {
            error!("request failed: {e}");
            e.for_caller()
        }
        Failure::Other(text) => {
            error!("request failed: {text}");
            "otpd could not complete the request (see its log)"
        }
    };
    refuse(ErrorCode::Internal, message)
}

/// Runs one read-decide-commit `attempt` until it does not meet a
/// concurrent update (`None`).
fn with_retries(mut attempt: impl FnMut() -> Option<Response>) -> Response {
    (0..MAX_ATTEMPTS)
        .find_map(|n| {
            if n > 0 {
                // A random pause of up to n ms before trying again: with a
                // store shared by many hosts, the commits that lost a race
                // would otherwise race each other again at once (a fleet's
                // burst of logins for one user ran out of attempts).
                let mut byte = [0u8; 1];
                let _ = crate::rng::fill(&mut byte);
                let micros = u64::from(byte[0]) * 1000 * n as u64 / 255;
                std::thread::sleep(std::time::Duration::from_micros(micros));
            }
            attempt()
        })
        .unwrap_or_else(|| internal("too many concurrent updates of one user"))
}

/// The version of a record that starts a user afresh: random, so that a
/// decision taken on a removed user's record can never be committed over a
/// new enrolment that happens to reach the same version number.
fn fresh_version() -> Result<u64, Response> {
    let mut bytes = [0u8; 8];
    crate::rng::fill(&mut bytes)
        .map_err(|e| internal(format!("the OS random number generator failed: {e}")))?;
    Ok(u64::from_le_bytes(bytes))
}

fn user_name_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

impl Handler {
    /// A handler over `store` with the settings of `config`.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    /// A handler that reads the time from `clock`.
    pub fn with_clock(store: Arc<dyn Store>, config: Config, clock: Arc<dyn Clock>) -> Self {
        let metrics = Arc::new(Metrics::new(store.health().is_some()));
        store.observe(metrics.clone());
        Self {
            metrics,
            store,
            clock,
            rules: config.rules(),
            issuer: config.issuer(),
            config,
            started: std::time::Instant::now(),
            socket_activated: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "web")]
            approve_parts: std::sync::OnceLock::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The record of an enrolled user, or the refusal for one who is not.
    fn enrolled(&self, user: &str) -> Result<UserRecord, Response> {
        match self.store.user(user) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(refuse(
                ErrorCode::NotFound,
                format!("{user} is not enrolled"),
            )),
            Err(e) => Err(internal(e)),
        }
    }

    /// Records that the socket came from systemd, for `otpd status`.
    pub fn set_socket_activated(&self, activated: bool) {
        self.socket_activated
            .store(activated, std::sync::atomic::Ordering::Relaxed);
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store (the metrics' scrape reads its pool's state).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Answers one request from `caller`.
    pub fn handle(&self, caller: &Caller, request: Request) -> Response {
        if let Err(reason) = authorize(caller, &request, user_name_of) {
            warn!(
                target: "otpd::audit",
                uid = caller.uid,
                pid = caller.pid,
                op = op_name(&request),
                outcome = "denied",
                "{reason}"
            );
            return refuse(ErrorCode::PermissionDenied, reason);
        }
        let user = match &request {
            Request::Verify { user, .. }
            | Request::Confirm { user, .. }
            | Request::Remove { user, .. }
            | Request::Resync { user, .. }
            | Request::Unlock { user }
            | Request::RecoveryCodes { user, .. }
            | Request::Phone { user, .. }
            | Request::PhoneConfirm { user, .. }
            | Request::ApproverLink { user }
            | Request::Forget { user, .. } => Some(user.as_str()),
            Request::Enroll(p) => Some(p.user.as_str()),
            Request::Import(p) => Some(p.user.as_str()),
            Request::List {} | Request::DaemonStatus {} => None,
            // The caller's own user, from its uid (`self_service.rs`).
            Request::SelfDevices {}
            | Request::SelfAddDevice { .. }
            | Request::SelfConfirm { .. }
            | Request::SelfRemoveDevice { .. }
            | Request::SelfRecoveryCodes { .. }
            | Request::SelfActivity {} => None,
            // The listener carries a login conversation itself
            // (`server::login`); an answer belongs to one.
            Request::Login(_) | Request::Answer { .. } => return out_of_turn(),
        };
        if let Some(Err(reason)) = user.map(validate_user) {
            // Such a name can never be enrolled: for enrolment it is bad
            // input, for everything else there is simply no such user.
            let (code, outcome, message) = match request {
                Request::Enroll(_) | Request::Import(_) => (
                    ErrorCode::BadRequest,
                    "bad_request",
                    format!("cannot enrol: {reason}"),
                ),
                _ => (
                    ErrorCode::NotFound,
                    "not_enrolled",
                    format!("no such user: {reason}"),
                ),
            };
            info!(target: "otpd::audit", uid = caller.uid, op = op_name(&request), outcome, "{reason}");
            return refuse(code, message);
        }
        match request {
            Request::Verify {
                user,
                code,
                service,
                rhost,
                ruid,
            } => {
                if service.len() > MAX_ITEM_LEN || rhost.len() > MAX_ITEM_LEN {
                    return refuse(
                        ErrorCode::BadRequest,
                        format!("service and rhost may be at most {MAX_ITEM_LEN} bytes"),
                    );
                }
                self.verify(
                    caller,
                    Attempt {
                        source: source_of(&rhost, ruid, caller.uid),
                        own: own_source(&user, &rhost, ruid, caller.uid),
                        user: &user,
                        code: &code,
                        service: &service,
                        rhost: &rhost,
                        purpose: Purpose::Login,
                    },
                )
            }
            Request::Confirm { user, code } => self.verify(
                caller,
                Attempt {
                    source: source_of("", None, caller.uid),
                    own: false,
                    user: &user,
                    code: &code,
                    service: "otpd-confirm",
                    rhost: "",
                    purpose: Purpose::Confirm,
                },
            ),
            Request::Enroll(params) => self.enroll(caller, params),
            Request::List {} => self.list(),
            Request::Remove { user, device } => match device {
                None => self.remove(caller, &user),
                Some(device) => self.remove_device(caller, &user, &device),
            },
            Request::Resync {
                user,
                device,
                code1,
                code2,
            } => self.resync(caller, &user, device.as_deref(), &code1, &code2),
            Request::Import(params) => self.import(caller, *params),
            Request::Unlock { user } => self.unlock(caller, &user),
            Request::RecoveryCodes { user, count } => self.recovery_codes(caller, &user, count),
            Request::DaemonStatus {} => self.daemon_status(),
            Request::Phone { user, number } => self.phone(caller, &user, &number),
            Request::PhoneConfirm { user, code } => self.phone_confirm(caller, &user, &code),
            Request::ApproverLink { user } => self.approver_link_response(caller, &user),
            Request::Forget { user, key } => self.forget(caller, &user, key.as_deref()),
            Request::Login(_) | Request::Answer { .. } => out_of_turn(),
            Request::SelfDevices {}
            | Request::SelfAddDevice { .. }
            | Request::SelfConfirm { .. }
            | Request::SelfRemoveDevice { .. }
            | Request::SelfRecoveryCodes { .. }
            | Request::SelfActivity {} => self.self_service(caller, request),
        }
    }
}

/// The kind of request `r`, as audit lines and the metrics name it.
pub fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Verify { .. } => "verify",
        Request::Enroll(_) => "enroll",
        Request::Confirm { .. } => "confirm",
        Request::List {} => "list",
        Request::Remove { .. } => "remove",
        Request::Resync { .. } => "resync",
        Request::Import(_) => "import",
        Request::Unlock { .. } => "unlock",
        Request::RecoveryCodes { .. } => "recovery_codes",
        Request::DaemonStatus {} => "status",
        Request::Phone { .. } => "phone",
        Request::PhoneConfirm { .. } => "phone_confirm",
        Request::ApproverLink { .. } => "approver_link",
        Request::Forget { .. } => "forget",
        Request::Login(_) => "login",
        Request::Answer { .. } => "answer",
        Request::SelfDevices {}
        | Request::SelfAddDevice { .. }
        | Request::SelfConfirm { .. }
        | Request::SelfRemoveDevice { .. }
        | Request::SelfRecoveryCodes { .. }
        | Request::SelfActivity {} => self_service::self_op(r),
    }
}
