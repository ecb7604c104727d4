//! Sign-ins approved on a paired phone, the login's side: the request an
//! empty answer makes (counted like a failed attempt, limited, pushed to
//! the user's phones), what the waiting login reads, and the use of an
//! approval by the login that made the request. The phone's side (pairing,
//! the app's API) is `approve_web.rs`; the rules are `core::approve`.

use super::login::audit_in_login;
use super::{internal, with_retries, Handler};
use crate::core::approve::{RequestContext, SignInRequest, Wait};
use crate::core::decision::{
    count_failure, count_success, gate, trusted, Outcome, Purpose, SourceState,
};
use crate::core::login::Requested;
use crate::core::record::UserRecord;
use crate::server::handler::LoginContext;
use crate::server::policy::Caller;
use crate::store::{RecordChange, SourcesChange, StoreError};
use otpd_proto::Response;
use tracing::{info, warn};

/// This host's name, for the phone to show.
pub(super) fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A new request's ID: 128 random bits, hex.
pub(super) fn request_id() -> Result<String, Response> {
    let bytes: [u8; 16] = crate::rng::random_bytes().map_err(internal)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Handler {
    /// Whether sign-ins may be approved on phones (`[approve] contact`).
    pub fn approvals_on(&self) -> bool {
        self.config.approve.enabled()
    }

    /// The login of `context` asks `user`'s phones (an empty answer at the
    /// code prompt): a request is made, counted like a failed attempt from
    /// the login's source, and pushed. `Ok` with the conversation's result
    /// and, when made, the request's ID (which only this login holds).
    pub fn login_request(
        &self,
        caller: &Caller,
        user: &str,
        context: &LoginContext,
    ) -> Result<(Requested, Option<String>), Response> {
        let audit =
            |outcome: &str| audit_in_login(caller, user, context, "approve_request", outcome);
        let id = request_id()?;
        let random: [u8; 4] = crate::rng::random_bytes().map_err(internal)?;
        let approve = &self.config.approve;
        let host = host_name();
        let source = context.source.as_str();
        let mut result = None;
        let response = with_retries(|| {
            let now = self.now();
            let (record, counter) = match self.store.read_for_check(user, source) {
                Ok(read) => read,
                Err(e) => return Some(internal(e)),
            };
            let state = SourceState {
                key: source,
                counter: counter.as_ref(),
                own: context.own,
            };
            let record = match (
                gate(record.as_ref(), &state, now, Purpose::Login, &self.rules),
                record,
            ) {
                (Ok(()), Some(record)) => record,
                (Err(Outcome::Throttled { retry_after }), _) => {
                    result = Some((
                        Requested::Throttled {
                            retry_after_secs: retry_after,
                        },
                        None,
                        "throttled",
                    ));
                    return Some(Response::Done {});
                }
                _ => {
                    result = Some((
                        Requested::Refused {
                            retry_after_secs: None,
                        },
                        None,
                        "approve_no_phone",
                    ));
                    return Some(Response::Done {});
                }
            };
            // Counted like a failure whether or not it is made: a stranger
            // who knows the password pays for every push (design.md §2).
            let (mut next, source_change) = count_failure(&record, &state, now);
            let budget = !trusted(&record, &state, now, &self.rules);
            next.approvals.prune(now);
            let made = match next
                .approvals
                .may_request(now, approve.max_per_hour, budget)
            {
                Err(refused) => {
                    let retry_after_secs = match refused {
                        crate::core::approve::Refused::PushBudget { retry_after }
                        | crate::core::approve::Refused::Paused { retry_after } => {
                            Some(retry_after)
                        }
                        _ => None,
                    };
                    (
                        Requested::Refused { retry_after_secs },
                        None,
                        refused.as_str(),
                    )
                }
                Ok(()) => {
                    let request = SignInRequest::new(
                        id.clone(),
                        random,
                        RequestContext {
                            host: &host,
                            service: &context.service,
                            source: &context.rhost,
                        },
                        now,
                        approve.timeout,
                        None,
                    );
                    let made = Requested::Made {
                        number: request.number,
                        wait_secs: approve.timeout,
                    };
                    next.approvals.add_request(request, now);
                    (made, Some(id.clone()), "approve_requested")
                }
            };
            match self.store.commit(
                user,
                Some(record.version),
                RecordChange::Put(&next),
                SourcesChange::from_decision(source, source_change, counter.as_ref()),
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict) => return None,
                Err(e) => return Some(internal(e)),
            }
            if made.1.is_some() {
                self.push_request(user, &next, &id);
            }
            result = Some(made);
            Some(Response::Done {})
        });
        match result {
            Some((requested, id, outcome)) => {
                audit(outcome);
                Ok((requested, id))
            }
            None => Err(response),
        }
    }

    /// `otpd enroll USER --approver`: a pairing link for `user`.
    pub(super) fn approver_link_response(&self, caller: &Caller, user: &str) -> Response {
        #[cfg(feature = "web")]
        let made = self.approver_link(user);
        #[cfg(not(feature = "web"))]
        let made: Result<String, Response> = Err(super::refuse(
            otpd_proto::ErrorCode::BadRequest,
            "this otpd was built without the pages (cargo feature `web`): no phones to pair",
        ));
        match made {
            Ok(url) => {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "approver_link", outcome = "done");
                Response::Link {
                    user: user.to_owned(),
                    url: otpd_proto::SecretText::new(url),
                    expires: self
                        .now()
                        .saturating_add(crate::core::approve::PAIRING_SECS),
                    replaced: false,
                    old_kept: false,
                }
            }
            Err(refusal) => refusal,
        }
    }

    /// What became of `user`'s request `id` (one read).
    pub fn login_wait(&self, user: &str, id: &str) -> Result<Wait, Response> {
        let now = self.now();
        match self.store.user(user) {
            Ok(Some(record)) => Ok(record.approvals.wait(id, now)),
            Ok(None) => Ok(Wait::Expired),
            Err(e) => Err(internal(e)),
        }
    }

    /// The login of `context` uses the approval of its request `id`: the
    /// request is used up and the login counts as a success from its source,
    /// in one commit. `Ok(false)`: it is no longer approved (removed, or
    /// used: never twice).
    pub fn login_use_approval(
        &self,
        caller: &Caller,
        user: &str,
        context: &LoginContext,
        id: &str,
    ) -> Result<bool, Response> {
        let source = context.source.as_str();
        let mut used = None;
        let response = with_retries(|| {
            let now = self.now();
            let (record, counter) = match self.store.read_for_check(user, source) {
                Ok((Some(record), counter)) => (record, counter),
                Ok((None, _)) => {
                    used = Some(None);
                    return Some(Response::Done {});
                }
                Err(e) => return Some(internal(e)),
            };
            let Wait::Approved { phone } = record.approvals.wait(id, now) else {
                used = Some(None);
                return Some(Response::Done {});
            };
            let state = SourceState {
                key: source,
                counter: counter.as_ref(),
                own: context.own,
            };
            let (mut next, change) = count_success(&record, &state, now, &self.rules);
            // The request counted as a failure; its approval takes it back
            // (a trusted source's success leaves the per-user count, which
            // would otherwise grow with every approval from home or sudo).
            next.user_failures = next.user_failures.saturating_sub(1);
            next.approvals.use_approval(id);
            match self.store.commit(
                user,
                Some(record.version),
                RecordChange::Put(&next),
                SourcesChange::from_decision(source, change, counter.as_ref()),
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict) => return None,
                Err(e) => return Some(internal(e)),
            }
            used = Some(Some(phone));
            Some(Response::Done {})
        });
        match used {
            Some(Some(phone)) => {
                info!(
                    target: "otpd::audit",
                    user = ?user,
                    service = ?context.service,
                    rhost = ?context.rhost,
                    uid = caller.uid,
                    pid = caller.pid,
                    device = ?phone,
                    op = "login",
                    outcome = "approved",
                );
                Ok(true)
            }
            Some(None) => Ok(false),
            None => Err(response),
        }
    }

    /// Pushes request `id` of `record` to each of `user`'s active phones
    /// with a subscription, in the background: a login never waits for a
    /// push service (the app shows open requests when opened).
    #[cfg(feature = "web")]
    pub(super) fn push_request(&self, user: &str, record: &UserRecord, id: &str) {
        let Some(request) = record.approvals.request(id) else {
            return;
        };
        let targets: Vec<_> = record
            .approvals
            .phones
            .iter()
            .filter(|p| request.is_for(&p.name))
            .filter(|p| {
                p.state == crate::core::record::EnrollState::Active || request.test.is_some()
            })
            .filter_map(|p| p.push.clone().map(|t| (p.name.clone(), p.lang.clone(), t)))
            .collect();
        if targets.is_empty() {
            return;
        }
        let Some(parts) = self.approve_parts() else {
            return;
        };
        let Some(runtime) = self
            .runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        else {
            warn!("no runtime to push a sign-in request on");
            return;
        };
        for (phone, lang, target) in targets {
            let payload = super::approve_web::push_payload(user, request, &lang);
            let parts = parts.clone();
            let user = user.to_owned();
            let metrics = self.metrics.clone();
            runtime.spawn(async move {
                let subscription = crate::server::push::Subscription {
                    endpoint: target.endpoint.clone(),
                    keys: crate::server::push::SubscriptionKeys {
                        p256dh: target.p256dh.clone(),
                        auth: target.auth.clone(),
                    },
                };
                let result = crate::server::push::send(
                    &parts.vapid,
                    &parts.contact,
                    &subscription,
                    payload.as_bytes(),
                    std::time::Duration::from_secs(parts.ttl),
                    std::time::Duration::from_secs(10),
                    &parts.push_hosts,
                )
                .await;
                metrics.push(result.is_ok());
                match result {
                    Ok(()) => info!(
                        target: "otpd::audit",
                        user = ?user,
                        device = ?phone,
                        op = "approve_push",
                        outcome = "sent",
                    ),
                    Err(e) => warn!(
                        target: "otpd::audit",
                        user = ?user,
                        device = ?phone,
                        op = "approve_push",
                        outcome = "failed",
                        "{e}"
                    ),
                }
            });
        }
    }

    /// Without the pages there are no phones to push to.
    #[cfg(not(feature = "web"))]
    pub(super) fn push_request(&self, _user: &str, _record: &UserRecord, _id: &str) {}
}
