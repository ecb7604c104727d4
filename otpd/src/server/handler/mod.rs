//! Carries out one request: reads the store, asks the pure core, writes the
//! decision back, and writes the audit line. Blocking; the listener runs it
//! on tokio's blocking pool.

use super::policy::{authorize, Caller};
use crate::config::Config;
use crate::core::decision::{Purpose, Rules};
use crate::core::names::{validate_issuer, validate_user};
use crate::core::plan::{plan_verify, Effect, Refusal, VerifyAttempt, VerifyRead};
use crate::core::ratelimit::remaining;
use crate::core::record::{
    source_of, Device, EnrolState, Fallback, Replaces, SecretBytes, TokenKind, UserRecord,
    DEFAULT_DEVICE,
};
use crate::core::totp::{otpauth_hotp_uri, otpauth_uri};
use crate::store::{RecordChange, SourcesChange, Store, StoreError};
use otpd_proto::{
    DaemonStatus, EnrolParams, Enrolment, ErrorCode, Request, Response, SecretText, UserState,
    UserSummary,
};
use std::sync::Arc;
use tracing::{error, info, warn};

mod devices;
mod fallback;
mod login;
mod web;

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

/// One code to check, and where it came from.
struct Attempt<'a> {
    user: &'a str,
    code: &'a SecretText,
    service: &'a str,
    rhost: &'a str,
    /// The rate-limit source (`source_of`).
    source: String,
    /// The source is the user's own uid (`own_source`).
    own: bool,
    purpose: Purpose,
}

/// Whether a login of `user` comes from that user's own uid: a non-root
/// caller (the policy lets it ask only about its own name), or root (su,
/// sudo) started by that user on this host. Root's own uid is never "own"
/// for another user: `login` on the console runs as root for everyone.
fn own_source(user: &str, rhost: &str, ruid: Option<u32>, peer_uid: u32) -> bool {
    if peer_uid != 0 {
        return true;
    }
    match ruid {
        Some(ruid) if ruid != 0 && rhost.trim().is_empty() => {
            user_name_of(ruid).is_some_and(|name| name == user)
        }
        _ => false,
    }
}

/// The daemon's request handler.
pub struct Handler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rules: Rules,
    config: Config,
    issuer: String,
    started: std::time::Instant,
    socket_activated: std::sync::atomic::AtomicBool,
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

fn internal(e: impl std::fmt::Display) -> Response {
    let text = e.to_string();
    error!("request failed: {text}");
    // The one cause an operator can fix at once is named to the caller.
    let message = if text.contains("No space left on device") {
        "otpd could not write its store: no space left on device (see its log)"
    } else if text.contains("PostgreSQL store") && text.contains("unreachable") {
        "otpd cannot reach its database (see its log)"
    } else if text.contains("PostgreSQL store") && text.contains("did not answer in time") {
        "otpd's database did not answer in time (see its log)"
    } else {
        "otpd could not complete the request (see its log)"
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

/// Refuses to enrol `user` under a spelling the user database gives as
/// another account name (`getpwnam` of "Erin" says "erin" under an NSS
/// that ignores case): the PAM module asks about the account's own name,
/// so a record under another spelling would never be found at a login, and
/// `nullok` would let the user through. A name the database does not know
/// (an account of another host of a fleet, or none yet) is left alone.
fn account_spelling(user: &str, op: &str) -> Result<(), Response> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(account)) if account.name != user => Err(refuse(
            ErrorCode::BadRequest,
            format!(
                "{user:?} is the account {:?} in the user database: {op} {:?} instead \
                 (logins ask otpd about the account's own name)",
                account.name, account.name
            ),
        )),
        _ => Ok(()),
    }
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
        Self {
            store,
            clock,
            rules: config.rules(),
            issuer: config.issuer(),
            config,
            started: std::time::Instant::now(),
            socket_activated: std::sync::atomic::AtomicBool::new(false),
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

    /// Seconds the whole user must still wait (user-wide backoff), if any.
    fn user_wait(&self, r: &UserRecord, now: u64) -> Option<u64> {
        let limits = &self.rules.limits;
        r.last_failure.and_then(|last| {
            remaining(r.user_failures, last, limits.user_max_failures, limits, now)
        })
    }

    /// Records that the socket came from systemd, for `otpd status`.
    pub fn set_socket_activated(&self, activated: bool) {
        self.socket_activated
            .store(activated, std::sync::atomic::Ordering::Relaxed);
    }

    fn daemon_status(&self) -> Response {
        let users = match self.store.users() {
            Ok(u) => u,
            Err(e) => return internal(e),
        };
        let now = self.now();
        let (mut active, mut pending, mut throttled) = (0, 0, 0);
        for (_, r) in &users {
            match r.first_device().state {
                EnrolState::Pending => pending += 1,
                EnrolState::Active => {
                    active += 1;
                    if self.user_wait(r, now).is_some() {
                        throttled += 1;
                    }
                }
            }
        }
        let web = self.config.web.listen.map(|listen| {
            let scheme = if self.config.web.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{listen}")
        });
        Response::DaemonStatus(Box::new(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state_dir: self.config.state_dir.display().to_string(),
            socket: self.config.socket.display().to_string(),
            socket_activated: self
                .socket_activated
                .load(std::sync::atomic::Ordering::Relaxed),
            active,
            pending,
            throttled,
            uptime_secs: self.started.elapsed().as_secs(),
            web,
            sms: self.config.sms.command.is_some(),
            store: Some(self.store.describe()),
        }))
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
            | Request::PhoneConfirm { user, .. } => Some(user.as_str()),
            Request::Enrol(p) => Some(p.user.as_str()),
            Request::Import(p) => Some(p.user.as_str()),
            Request::List {} | Request::DaemonStatus {} => None,
            // The listener carries a login conversation itself
            // (`server::login`); an answer belongs to one.
            Request::Login(_) | Request::Answer { .. } => return out_of_turn(),
        };
        if let Some(Err(reason)) = user.map(validate_user) {
            // Such a name can never be enrolled: for enrolment it is bad
            // input, for everything else there is simply no such user.
            let (code, outcome, message) = match request {
                Request::Enrol(_) | Request::Import(_) => (
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
            Request::Enrol(params) => self.enrol(caller, params),
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
            Request::Login(_) | Request::Answer { .. } => out_of_turn(),
        }
    }

    fn verify(&self, caller: &Caller, attempt: Attempt<'_>) -> Response {
        let Attempt {
            user,
            code,
            service,
            rhost,
            ref source,
            own,
            purpose,
        } = attempt;
        let audit =
            |outcome: &str| audit_verify(caller, user, service, rhost, purpose, outcome, None);
        if purpose == Purpose::Login && code.expose().trim().eq_ignore_ascii_case("sms") {
            return self.login_sms(caller, user, source, own, service, rhost);
        }
        // A confirmation that activates a device comes with new recovery
        // codes: drawn here, stored by the plan when it activates.
        let fresh = match purpose {
            Purpose::Confirm => match Handler::fresh_recovery_codes(self.config.recovery.count) {
                Ok(fresh) => Some(fresh),
                Err(response) => return response,
            },
            Purpose::Login => None,
        };
        with_retries(|| {
            let (record, counter) = match self.store.read_for_check(user, source) {
                Ok(read) => read,
                Err(e) => return Some(internal(e)),
            };
            let plan = plan_verify(
                VerifyRead {
                    record: record.as_ref(),
                    counter: counter.as_ref(),
                },
                VerifyAttempt {
                    user,
                    code: code.expose(),
                    source,
                    own,
                    purpose,
                    fresh_recovery: fresh.as_ref().map(|(_, hashes)| hashes.as_slice()),
                },
                self.now(),
                &self.rules,
            );
            let write = plan
                .write()
                .and_then(|decision| Some((decision.record.as_ref()?, decision.source)));
            if let (Some((next, source_change)), Some(current)) = (write, &record) {
                match self.store.commit(
                    user,
                    Some(current.version),
                    RecordChange::Put(next),
                    SourcesChange::from_decision(source, source_change, counter.as_ref()),
                ) {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => return None,
                    Err(e) => {
                        // Fail closed: an accepted code that is not durably
                        // used must not be reported as accepted.
                        audit("store_error");
                        return Some(internal(e));
                    }
                }
            }
            for effect in &plan.effects {
                match effect {
                    Effect::DecoyWrite => {
                        if let Err(e) = self.store.decoy_write() {
                            warn!("decoy write failed: {e}");
                        }
                    }
                }
            }
            if let Some(line) = plan.audit() {
                audit_verify(
                    caller,
                    user,
                    service,
                    rhost,
                    purpose,
                    line.outcome,
                    line.recovery_codes_left,
                );
            }
            Some(match plan.reply() {
                Ok(_) if plan.recovery_codes_issued => Response::Confirmed {
                    recovery_codes: fresh
                        .as_ref()
                        .map(|(codes, _)| codes.clone())
                        .unwrap_or_default(),
                },
                Ok(outcome) => Response::Verified { outcome },
                Err(Refusal::NotEnrolled) => {
                    refuse(ErrorCode::NotFound, format!("{user} is not enrolled"))
                }
                Err(Refusal::NothingPending) => refuse(
                    ErrorCode::NotPending,
                    format!("{user}'s enrolment is already active; nothing to confirm"),
                ),
                Err(Refusal::UnusableToken(reason)) => {
                    internal(format!("the token of {user:?} cannot be used: {reason}"))
                }
            })
        })
    }

    fn enrol(&self, caller: &Caller, p: EnrolParams) -> Response {
        if let Err(refusal) = account_spelling(&p.user, "enrol") {
            return refusal;
        }
        let defaults = &self.config.totp;
        let algorithm = p.algorithm.unwrap_or(defaults.algorithm);
        let digits = p.digits.unwrap_or(defaults.digits);
        let period = p.period.unwrap_or(defaults.period);
        let issuer = p.issuer.clone().unwrap_or_else(|| self.issuer.clone());
        let kind = if p.hotp {
            TokenKind::Hotp
        } else {
            TokenKind::Totp
        };
        let counter = p.counter.unwrap_or(0);
        if digits != 6 && digits != 8 {
            return refuse(
                ErrorCode::BadRequest,
                format!("digits {digits}: must be 6 or 8"),
            );
        }
        if !(15..=300).contains(&period) {
            return refuse(
                ErrorCode::BadRequest,
                format!("period {period}: must be between 15 and 300 seconds"),
            );
        }
        if p.revoke && !p.force {
            return refuse(
                ErrorCode::BadRequest,
                "--revoke goes with --force (it says what becomes of the device --force replaces)",
            );
        }
        if p.counter.is_some() && !p.hotp {
            return refuse(
                ErrorCode::BadRequest,
                "a counter belongs to an HOTP token: add --hotp",
            );
        }
        if counter > devices::MAX_COUNTER {
            return refuse(
                ErrorCode::BadRequest,
                format!(
                    "counter {counter}: must be at most {}",
                    devices::MAX_COUNTER
                ),
            );
        }
        if p.link_expires.is_some() && (p.hotp || p.device.is_some()) {
            return refuse(
                ErrorCode::BadRequest,
                "a self-enrolment link enrols a user's phone app: it cannot be combined with --hotp or --device",
            );
        }
        if let Some(name) = &p.device {
            if let Err(m) = crate::core::names::validate_device(name) {
                return refuse(ErrorCode::BadRequest, m);
            }
        }
        if let Err(m) = validate_issuer(&issuer) {
            return refuse(ErrorCode::BadRequest, m);
        }
        let link = match p.link_expires {
            None => None,
            Some(secs) => match self.new_link(secs) {
                Ok(link) => Some(link),
                Err(response) => return response,
            },
        };
        let mut secret = zeroize::Zeroizing::new(vec![0u8; SECRET_LEN]);
        if let Err(e) = crate::rng::fill(&mut secret) {
            return internal(format!("the OS random number generator failed: {e}"));
        }
        let uri = match kind {
            TokenKind::Totp => otpauth_uri(&secret, algorithm, digits, period, &issuer, &p.user),
            TokenKind::Hotp => {
                otpauth_hotp_uri(&secret, algorithm, digits, counter, &issuer, &p.user)
            }
        };
        let (uri, secret_base32) = match uri {
            Ok((uri, b32)) => (SecretText::new(uri), SecretText::new(b32)),
            Err(e) => {
                return refuse(
                    ErrorCode::BadRequest,
                    format!("cannot build the otpauth URI: {e}"),
                )
            }
        };
        let device_name = p.device.clone().unwrap_or_else(|| DEFAULT_DEVICE.into());
        let new_device = Device {
            name: device_name.clone(),
            state: EnrolState::Pending,
            kind,
            secret: SecretBytes::new(secret.to_vec()),
            algorithm,
            digits,
            period,
            created: self.now(),
            last_accepted_step: counter.checked_sub(1),
            window: None,
            replaces: None,
        };

        with_retries(|| {
            let existing = match self.store.user(&p.user) {
                Ok(r) => r,
                Err(e) => return Some(internal(e)),
            };
            // A second factor, once on, stays on (design.md §7): replacing
            // an active device keeps it working until the new one is
            // confirmed, unless the admin revokes it at once; either way
            // the record remembers that the user needs a code.
            let (next, sources, replaced, old_kept) = match (&existing, &p.device) {
                // A device added to (or replaced in) an existing user: the
                // other devices, recovery codes and counters stay.
                (Some(r), Some(name)) => {
                    let replaced = r.devices().iter().any(|d| &d.name == name);
                    match self.with_device(r, new_device.clone(), p.force, p.revoke, caller) {
                        Ok((next, old_kept)) => (next, SourcesChange::Keep, replaced, old_kept),
                        Err(refusal) => return Some(refusal),
                    }
                }
                (Some(r), None) if r.has_active_device() && !p.force => {
                    info!(target: "otpd::audit", user = ?p.user, uid = caller.uid, op = "enroll", outcome = "already_enrolled");
                    return Some(refuse(
                        ErrorCode::AlreadyEnrolled,
                        format!(
                            "{} already has an active token; use --force to replace it, or --device NAME to add another",
                            p.user
                        ),
                    ));
                }
                // The whole enrolment replaced while the old one keeps
                // working: the new device waits beside it and takes over
                // everything once confirmed (`Replaces::All`).
                (Some(r), None) if r.has_active_device() && !p.revoke => {
                    let mut devices: Vec<Device> = r
                        .devices()
                        .iter()
                        .filter(|d| d.state == EnrolState::Active)
                        .cloned()
                        .collect();
                    devices.push(Device {
                        replaces: Some(Replaces::All),
                        ..new_device.clone()
                    });
                    if devices.len() > devices::MAX_DEVICES {
                        return Some(refuse(
                            ErrorCode::BadRequest,
                            format!(
                                "{} has {} active devices: remove one first, or replace them \
                                 with --revoke",
                                p.user,
                                devices.len() - 1
                            ),
                        ));
                    }
                    let mut next = r.clone();
                    next.version = r.version.wrapping_add(1);
                    next.issuer = issuer.clone();
                    if let Err(e) = next.set_devices(devices) {
                        return Some(internal(e));
                    }
                    next.fallback.link = link.as_ref().map(|(_, stored)| stored.clone());
                    (next, SourcesChange::Keep, true, true)
                }
                // A user who has (revoked now) or had an active device: the
                // old devices, recovery codes and phone go, the counters
                // stay, and nullok still asks for a code. A revocation (a lost
                // or stolen phone) also forgets the trusted sources: whoever
                // had the phone may have logged in from them.
                (Some(r), None) if r.factor_required() => {
                    let mut next = r.clone();
                    next.version = r.version.wrapping_add(1);
                    if p.revoke {
                        next.trusted_sources.clear();
                    }
                    next.issuer = issuer.clone();
                    if let Err(e) = next.set_devices(vec![new_device.clone()]) {
                        return Some(internal(e));
                    }
                    next.fallback = Fallback {
                        link: link.as_ref().map(|(_, stored)| stored.clone()),
                        sms_sent: r.fallback.sms_sent.clone(),
                        register_sent: r.fallback.register_sent.clone(),
                        ..Fallback::default()
                    };
                    (next, SourcesChange::Keep, true, false)
                }
                // A new user, or one who never had an active device.
                _ => {
                    let version = match &existing {
                        Some(r) => r.version.wrapping_add(1),
                        None => match fresh_version() {
                            Ok(v) => v,
                            Err(response) => return Some(response),
                        },
                    };
                    let mut record =
                        match UserRecord::new(version, issuer.clone(), vec![new_device.clone()]) {
                            Ok(record) => record,
                            Err(e) => return Some(internal(e)),
                        };
                    record.fallback = Fallback {
                        link: link.as_ref().map(|(_, stored)| stored.clone()),
                        ..Fallback::default()
                    };
                    (record, SourcesChange::ClearAll, existing.is_some(), false)
                }
            };
            match self.store.commit(
                &p.user,
                existing.as_ref().map(|r| r.version),
                RecordChange::Put(&next),
                sources,
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict) => return None,
                Err(e) => return Some(internal(e)),
            }
            info!(target: "otpd::audit", user = ?p.user, uid = caller.uid, op = "enroll", outcome = "pending", replaced, old_kept, revoked = replaced && p.revoke, link = link.is_some(), device = ?device_name, kind = kind.as_str());
            if let Some((url, stored)) = &link {
                return Some(Response::Link {
                    user: p.user.clone(),
                    url: url.clone(),
                    expires: stored.expires,
                    replaced,
                    old_kept,
                });
            }
            Some(Response::Enrolled(Box::new(Enrolment {
                user: p.user.clone(),
                issuer: issuer.clone(),
                algorithm,
                digits,
                period,
                secret_base32: secret_base32.clone(),
                uri: uri.clone(),
                replaced,
                device: device_name.clone(),
                token_kind: kind,
                counter: p.hotp.then_some(counter),
                old_kept,
            })))
        })
    }

    fn list(&self) -> Response {
        let users = match self.store.users() {
            Ok(u) => u,
            Err(e) => return internal(e),
        };
        let now = self.now();
        let users = users
            .into_iter()
            .map(|(user, r)| {
                let throttled_for_secs = self.user_wait(&r, now);
                UserSummary {
                    user,
                    state: match (r.first_device().state, throttled_for_secs) {
                        (EnrolState::Pending, _) => UserState::Pending,
                        (EnrolState::Active, Some(_)) => UserState::Throttled,
                        (EnrolState::Active, None) => UserState::Active,
                    },
                    algorithm: r.first_device().algorithm,
                    digits: r.first_device().digits,
                    period: r.first_device().period,
                    created: r.first_device().created,
                    last_success: r.last_success,
                    failures: r.user_failures,
                    throttled_for_secs,
                    recovery_codes: u32::try_from(r.fallback.recovery.len()).unwrap_or(u32::MAX),
                    phone: r.fallback.phone.is_some(),
                    devices: devices::summaries(&r),
                }
            })
            .collect();
        Response::Users { users }
    }

    fn remove(&self, caller: &Caller, user: &str) -> Response {
        self.rewrite(caller, user, "remove", |_| None)
    }

    fn unlock(&self, caller: &Caller, user: &str) -> Response {
        self.rewrite(caller, user, "unlock", |r| {
            let mut next = r.clone();
            next.version = r.version.wrapping_add(1);
            next.user_failures = 0;
            next.last_failure = None;
            Some(next)
        })
    }

    /// Replaces (or with `None`, deletes) an existing record and clears all
    /// of its source counters.
    fn rewrite(
        &self,
        caller: &Caller,
        user: &str,
        op: &'static str,
        change: impl Fn(&UserRecord) -> Option<UserRecord>,
    ) -> Response {
        with_retries(|| {
            let current = match self.store.user(user) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    info!(target: "otpd::audit", user = ?user, uid = caller.uid, op, outcome = "not_found");
                    return Some(refuse(
                        ErrorCode::NotFound,
                        format!("{user} is not enrolled"),
                    ));
                }
                Err(e) => return Some(internal(e)),
            };
            let next = change(&current);
            let record = match &next {
                Some(r) => RecordChange::Put(r),
                None => RecordChange::Delete,
            };
            match self
                .store
                .commit(user, Some(current.version), record, SourcesChange::ClearAll)
            {
                Ok(()) => {
                    info!(target: "otpd::audit", user = ?user, uid = caller.uid, op, outcome = "done");
                    Some(Response::Done {})
                }
                Err(StoreError::Conflict) => None,
                Err(e) => Some(internal(e)),
            }
        })
    }
}

fn op_name(r: &Request) -> &'static str {
    match r {
        Request::Verify { .. } => "verify",
        Request::Enrol(_) => "enroll",
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
        Request::Login(_) => "login",
        Request::Answer { .. } => "answer",
    }
}

/// The audit line of a verification: who, from where, through what, and the
/// outcome. Never the code. Names are Debug-quoted so that a crafted name
/// cannot forge a log line.
fn audit_verify(
    caller: &Caller,
    user: &str,
    service: &str,
    rhost: &str,
    purpose: Purpose,
    outcome: &str,
    recovery_codes_left: Option<u64>,
) {
    info!(
        target: "otpd::audit",
        user = ?user,
        service = ?service,
        rhost = ?rhost,
        uid = caller.uid,
        pid = caller.pid,
        op = if purpose == Purpose::Confirm { "confirm" } else { "verify" },
        outcome,
        recovery_codes_left,
    );
}

#[cfg(test)]
mod tests {
    //! The handler with the real sled store and an injected clock.
    use super::*;
    use crate::core::seal::{RecordKey, KEY_LEN};
    use crate::core::totp::generator;
    use crate::store::SledStore;
    use otpd_proto::{Algorithm, VerifyOutcome};
    use std::sync::atomic::{AtomicU64, Ordering};

    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn now(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const ROOT: Caller = Caller { uid: 0, pid: None };

    fn verify(handler: &Handler, user: &str, code: &str) -> Response {
        handler.handle(
            &ROOT,
            Request::Verify {
                user: user.into(),
                code: SecretText::new(code.into()),
                service: "test".into(),
                rhost: "192.0.2.1".into(),
                ruid: None,
            },
        )
    }

    fn outcome(response: Response) -> VerifyOutcome {
        match response {
            Response::Verified { outcome } => outcome,
            other => panic!("not a verification: {other:?}"),
        }
    }

    #[test]
    fn a_clock_stepped_back_an_hour_never_gets_a_code_accepted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SledStore::open(dir.path(), |_| Ok(RecordKey::from_bytes(&[5; KEY_LEN]))).unwrap(),
        );
        let t0 = 1_800_000_000u64;
        let clock = Arc::new(TestClock(AtomicU64::new(t0)));
        let handler = Handler::with_clock(store, Config::default(), clock.clone());
        let enrolled = handler.handle(
            &ROOT,
            Request::Enrol(EnrolParams {
                user: "alice".into(),
                issuer: Some("t".into()),
                algorithm: None,
                digits: None,
                period: None,
                force: false,
                link_expires: None,
                ..EnrolParams::default()
            }),
        );
        let Response::Enrolled(e) = enrolled else {
            panic!("enrol failed: {enrolled:?}");
        };
        let secret = totp_rs::Secret::try_from_base32(e.secret_base32.expose()).unwrap();
        let totp = generator(secret.as_bytes(), Algorithm::Sha1, 6, 30, 0).unwrap();
        let code = |t: u64| totp.generate(t).to_string();
        let confirmed = handler.handle(
            &ROOT,
            Request::Confirm {
                user: "alice".into(),
                code: SecretText::new(code(t0)),
            },
        );
        assert!(
            matches!(confirmed, Response::Confirmed { .. }),
            "{confirmed:?}"
        );
        clock.0.store(t0 + 60, Ordering::SeqCst);
        assert_eq!(
            outcome(verify(&handler, "alice", &code(t0 + 60))),
            VerifyOutcome::Accepted
        );
        // The clock steps back an hour: every code of that hour, the ones
        // used before included, is refused as a replay.
        let mut replays = 0;
        for back in (0..=3660).step_by(30) {
            clock.0.store(t0 + 60 - back, Ordering::SeqCst);
            let now = t0 + 60 - back;
            for c in [code(now), code(t0 + 60), code(t0)] {
                let o = outcome(verify(&handler, "alice", &c));
                assert_ne!(o, VerifyOutcome::Accepted, "accepted at now={now}");
                replays += 1;
            }
        }
        assert!(replays > 300);
        // Time moves forward past the last used step: new codes work again.
        clock.0.store(t0 + 90, Ordering::SeqCst);
        assert_eq!(
            outcome(verify(&handler, "alice", &code(t0 + 90))),
            VerifyOutcome::Accepted
        );
        assert_eq!(
            outcome(verify(&handler, "alice", &code(t0 + 90))),
            VerifyOutcome::Replayed
        );
    }
}
