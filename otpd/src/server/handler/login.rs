//! The login use case: the reads that begin a conversation and the checks
//! its steps ask for. The conversation itself is decided in
//! `core::login`; `server::login` carries it over the connection.

use super::{
    internal, own_source, refuse, user_name_of, with_retries, Attempt, Handler, MAX_ITEM_LEN,
};
use crate::core::decision::Purpose;
use crate::core::login::{needs_view, Begun, Conversation, Next, UserView};
use crate::core::names::validate_user;
use crate::core::record::{source_of, SourceKey};
use crate::core::remember::{binding, is_remembered, remember, Binding, LoginFacts};
use crate::server::policy::authorize;
use crate::server::policy::Caller;
use crate::store::{RecordChange, SourcesChange, StoreError};
use otpd_proto::{ErrorCode, LoginStart, Request, Response, SecretText, VerifyOutcome};
use tracing::{info, warn};

/// Where a login comes from, fixed when it begins.
#[derive(Debug, Clone)]
pub struct LoginContext {
    pub(super) service: String,
    pub(super) rhost: String,
    /// The rate-limit source (`source_of`).
    pub(super) source: SourceKey,
    /// The source is the user's own uid.
    pub(super) own: bool,
    /// The login's binding (`[remember]` on for its service, and it has
    /// one), and whether it was remembered (no code was asked).
    pub(super) binding: Option<Binding>,
    pub(super) remembered: bool,
}

/// The name of a device set up at the login (`[enrol_at_login]`): a
/// pending device of this name, and no other, may be set up again.
const LOGIN_DEVICE: &str = "app";

/// The kernel's audit session of process `pid` (`None`: unset, or the
/// process is gone). Read by the daemon, not told by the module: the
/// binding of a local login's remembered session.
fn audit_session_of(pid: Option<i32>) -> Option<u32> {
    let pid = pid?;
    std::fs::read_to_string(format!("/proc/{pid}/sessionid"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        // 4294967295 (-1): no audit session (no pam_loginuid login).
        .filter(|id| *id != u32::MAX)
}

impl LoginContext {
    /// The login's PAM service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether the login was remembered (ended without a code).
    pub fn remembered(&self) -> bool {
        self.remembered
    }

    /// Whether a success of this login is to be remembered: it has a
    /// binding and was not itself remembered.
    pub fn to_remember(&self) -> bool {
        self.binding.is_some() && !self.remembered
    }

    /// The login's rate-limit source: the group its connection is counted
    /// with when connections must give way (`server/slots.rs`).
    pub fn source(&self) -> &str {
        self.source.as_str()
    }
}

impl Handler {
    /// Whether [`Handler::login_begin`] of `start` for `caller` may block
    /// (read the store, look up a user name through NSS) and so belongs on
    /// the blocking pool; otherwise it only decides the first prompt.
    pub fn login_begin_blocks(&self, caller: &Caller, start: &LoginStart) -> bool {
        caller.uid != 0
            || needs_view(
                start,
                self.approvals_on()
                    || self.config.remember.secs(&start.service) > 0
                    || self.config.enrol_at_login.group.is_some(),
            )
            || (start.ruid != 0 && start.rhost.trim().is_empty())
    }

    /// Begins the login of `start` for `caller`: the conversation, where
    /// the login comes from, and its first step. `Err`: the refusal to send
    /// instead (bad input, the store failed).
    pub fn login_begin(
        &self,
        caller: &Caller,
        start: Box<LoginStart>,
    ) -> Result<(Conversation, LoginContext, Next), Response> {
        let request = Request::Login(start);
        if let Err(reason) = authorize(caller, &request, user_name_of) {
            warn!(
                target: "otpd::audit",
                uid = caller.uid,
                pid = caller.pid,
                op = "login",
                outcome = "denied",
                "{reason}"
            );
            return Err(refuse(ErrorCode::PermissionDenied, reason));
        }
        let Request::Login(start) = request else {
            return Err(super::out_of_turn());
        };
        let mut start = *start;
        if start.service.len() > MAX_ITEM_LEN || start.rhost.len() > MAX_ITEM_LEN {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("service and rhost may be at most {MAX_ITEM_LEN} bytes"),
            ));
        }
        if start.tty.len() > MAX_ITEM_LEN {
            start.tty.truncate(0);
        }
        // A non-root caller (a screen locker) may log in only its own
        // name (the policy checked `user`), as spelled: another spelling
        // typed is refused, never looked up (it could be another user's
        // record, and nullok must not pass a user who has one: design §7).
        if caller.uid != 0 && start.typed != start.user && validate_user(&start.typed).is_ok() {
            warn!(
                target: "otpd::audit",
                uid = caller.uid,
                pid = caller.pid,
                user = ?start.user,
                typed = ?start.typed,
                op = "login",
                outcome = "denied",
                "a non-root caller may log in only its own name as spelled"
            );
            return Err(refuse(
                ErrorCode::PermissionDenied,
                format!(
                    "uid {} may log in only {:?}, not the spelling {:?}",
                    caller.uid, start.user, start.typed
                ),
            ));
        }
        if validate_user(&start.typed).is_err() {
            start.typed = start.user.clone();
        }
        // A name that can never be enrolled has no record: looked at like
        // any unknown user (the conversation is the same).
        let source = source_of(&start.rhost, Some(start.ruid), caller.uid);
        // A remembered login's binding: for SSH the key sshd verified (only
        // root's sshd is believed about it), for a local service the audit
        // session the daemon reads of the caller's process, and the tty.
        let remember_secs = self.config.remember.secs(&start.service);
        let binding = (remember_secs > 0)
            .then(|| {
                let remote = !start.rhost.trim().is_empty();
                binding(
                    &LoginFacts {
                        user: &start.user,
                        service: &start.service,
                        rhost: &start.rhost,
                        source: source.as_str(),
                        auth_info: start
                            .auth_info
                            .as_deref()
                            .filter(|_| remote && caller.uid == 0),
                        audit_session: audit_session_of(caller.pid).filter(|_| !remote),
                        tty: &start.tty,
                    },
                    self.config.remember.same_source,
                )
            })
            .flatten();
        let read = |user: &str| -> Result<UserView, Response> {
            if validate_user(user).is_err() {
                return Ok(UserView::of(None));
            }
            match self.store.user(user) {
                Ok(record) => {
                    let mut view = UserView::of(record.as_ref());
                    // Only with evidence of a first factor: the key sshd
                    // verified, or a password an earlier module collected
                    // (a code-only stack, like sudo.code, never offers it);
                    // and never over a device an admin made (a pending one
                    // included): only one a login's enrolment left.
                    let first_factor = start.authtok_set
                        || start
                            .auth_info
                            .as_deref()
                            .filter(|_| caller.uid == 0 && !start.rhost.trim().is_empty())
                            .and_then(crate::core::remember::verified_key)
                            .is_some();
                    let only_login_made = record.as_ref().is_none_or(|r| {
                        r.fallback.link.is_none()
                            && r.devices().iter().all(|d| {
                                d.state == crate::core::record::EnrollState::Pending
                                    && d.name == LOGIN_DEVICE
                            })
                    });
                    view.can_enrol = user == start.user
                        && start.known
                        && !view.factor_required
                        && first_factor
                        && only_login_made
                        && self.may_enrol_at_login(caller, user);
                    view.remembered = match (&record, &binding) {
                        (Some(r), Some(b)) if user == start.user => {
                            is_remembered(&r.remembered, b, self.now())
                        }
                        _ => false,
                    };
                    Ok(view)
                }
                Err(e) => Err(internal(e)),
            }
        };
        let approve = self.approvals_on();
        let enrol = self.config.enrol_at_login.group.is_some();
        let (view, typed_view) = if needs_view(&start, approve || binding.is_some() || enrol) {
            let view = read(&start.user)?;
            let typed_view = if start.known && start.typed != start.user && !view.factor_required {
                Some(read(&start.typed)?)
            } else {
                None
            };
            (Some(view), typed_view)
        } else {
            (None, None)
        };
        let sms = self.config.sms.command.is_some();
        let (conversation, begun, next) =
            Conversation::begin(&start, view, typed_view, sms, approve);
        if begun == Begun::Nullok {
            // nullok decides without a code: an audit line like a check.
            info!(
                target: "otpd::audit",
                user = ?conversation.user(),
                service = ?start.service,
                rhost = ?start.rhost,
                uid = caller.uid,
                pid = caller.pid,
                op = "login",
                outcome = "nullok_no_device",
            );
        }
        let context = LoginContext {
            binding,
            remembered: begun == Begun::Remembered,
            source,
            own: own_source(
                conversation.user(),
                &start.rhost,
                Some(start.ruid),
                caller.uid,
            ),
            service: start.service,
            rhost: start.rhost,
        };
        Ok((conversation, context, next))
    }

    /// Checks `code` for `user` in the login of `context`: counted, and
    /// used up when accepted. `Err`: the daemon's refusal (store failed).
    pub fn login_check(
        &self,
        caller: &Caller,
        user: &str,
        context: &LoginContext,
        code: &SecretText,
    ) -> Result<VerifyOutcome, Response> {
        if validate_user(user).is_err() {
            // Never enrolled; costs what a wrong code costs elsewhere.
            return Ok(VerifyOutcome::NotEnrolled);
        }
        let response = self.verify(
            caller,
            Attempt {
                user,
                code,
                service: &context.service,
                rhost: &context.rhost,
                source: context.source.clone(),
                own: context.own,
                purpose: Purpose::Login,
            },
        );
        match response {
            Response::Verified { outcome } => Ok(outcome),
            other => Err(other),
        }
    }

    /// Remembers the binding of `context`'s login, which just passed its
    /// second factor (`[remember]` on for its service). A failure is only
    /// logged: the login has succeeded.
    pub fn login_remember(&self, caller: &Caller, user: &str, context: &LoginContext) {
        let Some(binding) = &context.binding else {
            return;
        };
        let secs = self.config.remember.secs(&context.service);
        let response = with_retries(|| {
            let record = match self.store.user(user) {
                Ok(Some(r)) => r,
                Ok(None) => return Some(Response::Done {}),
                Err(e) => return Some(internal(e)),
            };
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            remember(
                &mut next.remembered,
                binding,
                &context.service,
                self.now(),
                secs,
            );
            match self.store.commit(
                user,
                Some(record.version),
                RecordChange::Put(&next),
                SourcesChange::Keep,
            ) {
                Ok(()) => Some(Response::Done {}),
                Err(StoreError::Conflict) => None,
                Err(e) => Some(internal(e)),
            }
        });
        match response {
            Response::Done {} => {
                audit_in_login(caller, user, context, "remember", "remembered_for_later")
            }
            other => warn!(user = ?user, "the login could not be remembered: {other:?}"),
        }
    }

    /// Whether `user` may set up the app at this login: `[enrol_at_login]`
    /// names a group the account belongs to (primary or supplementary,
    /// through NSS), and the caller is root (sshd, login, sudo).
    fn may_enrol_at_login(&self, caller: &Caller, user: &str) -> bool {
        let Some(group) = &self.config.enrol_at_login.group else {
            return false;
        };
        if caller.uid != 0 {
            return false;
        }
        let (Ok(Some(account)), Ok(Some(group))) = (
            nix::unistd::User::from_name(user),
            nix::unistd::Group::from_name(group),
        ) else {
            return false;
        };
        let Ok(name) = std::ffi::CString::new(account.name.clone()) else {
            return false;
        };
        nix::unistd::getgrouplist(&name, account.gid).is_ok_and(|gids| gids.contains(&group.gid))
    }

    /// Enrolment at the login: a new pending device for `user` (as `otpd
    /// enroll USER` makes it), as the step that shows it.
    pub fn login_enrol(
        &self,
        caller: &Caller,
        user: &str,
        _context: &LoginContext,
    ) -> Result<otpd_proto::Step, Response> {
        let params = otpd_proto::EnrollParams {
            user: user.to_owned(),
            issuer: None,
            algorithm: None,
            digits: None,
            period: None,
            force: false,
            link_expires: None,
            device: Some(LOGIN_DEVICE.to_owned()),
            hotp: false,
            counter: None,
            revoke: false,
        };
        match self.enroll(caller, params) {
            Response::Enrolled(e) => {
                // Without ANSI colours: the OpenSSH client escapes control
                // characters in a keyboard-interactive prompt (seen in
                // tests/tests/enrol_at_login.rs), so they would show as text.
                let qr = crate::admin::qr::terminal(e.uri.expose(), false)
                    .map_err(|e| internal(format!("the QR code: {e}")))?;
                let grouped = e
                    .secret_base32
                    .expose()
                    .as_bytes()
                    .chunks(4)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(otpd_proto::Step::Enrolment {
                    issuer: e.issuer.clone(),
                    account: e.user.clone(),
                    qr: SecretText::new(qr),
                    secret: SecretText::new(grouped),
                })
            }
            other => Err(other),
        }
    }

    /// The first code of the device set up at this login, counted like a
    /// login from its source: the outcome, and on success the recovery
    /// codes to show once.
    pub fn login_confirm(
        &self,
        caller: &Caller,
        user: &str,
        context: &LoginContext,
        code: &SecretText,
    ) -> Result<(VerifyOutcome, Vec<SecretText>), Response> {
        let response = self.verify(
            caller,
            Attempt {
                user,
                code,
                service: &context.service,
                rhost: &context.rhost,
                source: context.source.clone(),
                own: context.own,
                purpose: Purpose::Confirm,
            },
        );
        match response {
            Response::Confirmed { recovery_codes } => {
                audit_in_login(caller, user, context, "enrol_at_login", "confirmed");
                Ok((VerifyOutcome::Accepted, recovery_codes))
            }
            Response::Verified { outcome } => Ok((outcome, Vec::new())),
            other => Err(other),
        }
    }

    /// Texts a code to `user`'s phone in the login of `context`.
    pub fn login_text(
        &self,
        caller: &Caller,
        user: &str,
        context: &LoginContext,
    ) -> Result<VerifyOutcome, Response> {
        if validate_user(user).is_err() {
            return Ok(VerifyOutcome::SmsUnavailable {
                retry_after_secs: None,
            });
        }
        match self.login_sms(
            caller,
            user,
            &context.source,
            context.own,
            &context.service,
            &context.rhost,
        ) {
            Response::Verified { outcome } => Ok(outcome),
            other => Err(other),
        }
    }
}

/// The audit line at the end of a login conversation.
pub fn audit_login_end(caller: &Caller, user: &str, context: &LoginContext, outcome: &str) {
    audit_in_login(caller, user, context, "login", outcome);
}

/// An audit line of `op` within the login of `context`.
pub(super) fn audit_in_login(
    caller: &Caller,
    user: &str,
    context: &LoginContext,
    op: &str,
    outcome: &str,
) {
    info!(
        target: "otpd::audit",
        user = ?user,
        service = ?context.service,
        rhost = ?context.rhost,
        uid = caller.uid,
        pid = caller.pid,
        op,
        outcome,
    );
}
