//! The self-enrolment pages' backend: the link's page, "Validate", and the
//! page's phone step, over the handler.

use super::fallback::{link_valid, TextFailure, PHONE_SESSION_SECS};
use super::{internal, refuse, with_retries, Handler};
use crate::core::decision::{decide, Outcome, Purpose, SourceState};
use crate::core::record::{EnrolState, Link, UserRecord};
use crate::core::tokens::{
    self, normalize_phone, random_bytes, token_hash, token_shape_ok, TOKEN_BYTES,
};
use crate::core::totp::otpauth_uri;
use crate::store::{RecordChange, SourcesChange, StoreError};
use crate::web::backend::{EnrolBackend, PageEnrolment, PhoneStep, Validation};
use otpd_proto::{ErrorCode, Response};
use std::sync::Arc;
use tracing::{error, info, warn};

impl Handler {
    /// The user whose link (`phone` false: the enrolment link of a pending
    /// enrolment; true: the phone session) has this token and has not
    /// expired: looked up by the token's hash, then checked on the record.
    fn find_by_token(&self, token: &str, phone: bool) -> Option<(String, UserRecord)> {
        if !token_shape_ok(token) {
            return None;
        }
        let hash = token_hash(token);
        let now = self.now();
        let lookup = self
            .store
            .user_by_token_hash(&hash)
            .and_then(|user| match user {
                Some(user) => Ok(self.store.user(&user)?.map(|r| (user, r))),
                None => Ok(None),
            });
        let (user, record) = match lookup {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                error!("cannot read the store to look up a link: {e}");
                return None;
            }
        };
        let link = if phone {
            record.fallback.phone_session.as_ref()
        } else {
            // An enrolment link belongs to a device still to be confirmed.
            record.fallback.link.as_ref().filter(|_| {
                record
                    .devices()
                    .iter()
                    .any(|d| d.state == EnrolState::Pending)
            })
        };
        link_valid(link, token, now).then_some((user, record))
    }
}

/// The pages' backend over the daemon's handler.
pub struct WebBackend {
    handler: Arc<Handler>,
}

impl WebBackend {
    /// The backend of `handler`.
    pub fn new(handler: Arc<Handler>) -> Self {
        Self { handler }
    }
}

/// The peer's address without the port: the rate-limit source of the page.
fn peer_ip(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_owned())
}

fn web_audit(user: Option<&str>, peer: &str, op: &str, outcome: &str) {
    info!(target: "otpd::audit", user = ?user.unwrap_or(""), peer = ?peer_ip(peer), op, outcome);
}

impl EnrolBackend for WebBackend {
    fn view(&self, token: &str, peer: &str) -> Option<PageEnrolment> {
        let Some((user, record)) = self.handler.find_by_token(token, false) else {
            web_audit(None, peer, "web_view", "invalid_link");
            return None;
        };
        match otpauth_uri(
            record.secret.expose(),
            record.algorithm,
            record.digits,
            record.period,
            &record.issuer,
            &user,
        ) {
            Ok((uri, secret_base32)) => {
                web_audit(Some(&user), peer, "web_view", "shown");
                Some(PageEnrolment {
                    user: user.clone(),
                    issuer: record.issuer.clone(),
                    secret_base32,
                    uri,
                    digits: record.digits,
                })
            }
            Err(e) => {
                error!(user = ?user, "cannot show the enrolment page: {e}");
                None
            }
        }
    }

    fn validate(&self, token: &str, code: &str, peer: &str) -> Validation {
        let h = &self.handler;
        let Some((user, _)) = h.find_by_token(token, false) else {
            web_audit(None, peer, "web_validate", "invalid_link");
            return Validation::Invalid;
        };
        let source = format!("web:{}", peer_ip(peer));
        let count = h.config.recovery.count;
        let sms = h.config.sms.command.is_some();
        let mut result = Validation::Invalid;
        let response = with_retries(|| {
            // The link is checked again on the record this decision is
            // taken on: a link used (or replaced) since the lookup is dead.
            let Ok(Some(record)) = h.store.user(&user) else {
                return Some(Response::Done {});
            };
            if record.state != EnrolState::Pending
                || !link_valid(record.fallback.link.as_ref(), token, self.handler.now())
            {
                web_audit(Some(&user), peer, "web_validate", "invalid_link");
                return Some(Response::Done {});
            }
            let counter = match h.store.source(&user, &source) {
                Ok(c) => c,
                Err(e) => return Some(internal(e)),
            };
            let decision = match decide(
                Some(&record),
                &SourceState::new(&source, counter.as_ref()),
                code,
                self.handler.now(),
                Purpose::Confirm,
                &h.rules,
            ) {
                Ok(d) => d,
                Err(e) => return Some(internal(e)),
            };
            let mut next = decision.record.clone();
            let mut shown = Vec::new();
            let mut session = None;
            if let (Outcome::Accepted { .. }, Some(next)) = (decision.outcome, next.as_mut()) {
                let (codes, hashes) = match Handler::fresh_recovery_codes(count) {
                    Ok(fresh) => fresh,
                    Err(response) => return Some(response),
                };
                next.fallback.recovery = hashes;
                shown = codes;
                if sms {
                    let token = match random_bytes::<TOKEN_BYTES>() {
                        Ok(bytes) => tokens::token_text(&bytes),
                        Err(e) => return Some(internal(e)),
                    };
                    next.fallback.phone_session = Some(Link {
                        token_hash: token_hash(&token),
                        expires: self.handler.now().saturating_add(PHONE_SESSION_SECS),
                    });
                    session = Some(token);
                }
            }
            if let Some(next) = &next {
                match h.store.commit(
                    &user,
                    Some(record.version),
                    RecordChange::Put(next),
                    SourcesChange::from_decision(&source, decision.source, counter.as_ref()),
                ) {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => return None,
                    Err(e) => return Some(internal(e)),
                }
            }
            web_audit(Some(&user), peer, "web_validate", decision.outcome.as_str());
            result = match decision.outcome {
                Outcome::Accepted { .. } => Validation::Activated {
                    user: user.clone(),
                    recovery_codes: shown.iter().map(|c| c.expose().to_owned()).collect(),
                    phone_session: session,
                },
                Outcome::WrongCode | Outcome::Replayed => Validation::WrongCode,
                Outcome::Throttled { retry_after } => Validation::Throttled { retry_after },
                _ => Validation::Invalid,
            };
            Some(Response::Done {})
        });
        if let Response::Error { message, .. } = response {
            warn!(user = ?user, "self-enrolment validation failed: {message}");
            return Validation::Invalid;
        }
        result
    }

    fn sms_enabled(&self) -> bool {
        self.handler.config.sms.command.is_some()
    }

    fn phone_send(&self, session: &str, number: &str, peer: &str) -> PhoneStep {
        let Some((user, _)) = self.handler.find_by_token(session, true) else {
            web_audit(None, peer, "web_phone", "invalid_session");
            return PhoneStep::Invalid;
        };
        let Some(number) = normalize_phone(number) else {
            web_audit(Some(&user), peer, "web_phone", "bad_number");
            return PhoneStep::BadNumber;
        };
        // The session is checked again in the same write as the challenge.
        let result = self.handler.text_code(&user, &number, |r| {
            if link_valid(
                r.fallback.phone_session.as_ref(),
                session,
                self.handler.now(),
            ) {
                Ok(())
            } else {
                Err(refuse(ErrorCode::NotFound, "no such phone session"))
            }
        });
        web_audit(
            Some(&user),
            peer,
            "web_phone",
            match &result {
                Ok(()) => "sms_sent",
                Err(failure) => failure.as_str(),
            },
        );
        match result {
            Ok(()) => PhoneStep::Sent,
            Err(TextFailure::Limited(retry_after)) => PhoneStep::Limited { retry_after },
            Err(TextFailure::Response(Response::Error {
                code: ErrorCode::NotFound,
                ..
            })) => PhoneStep::Invalid,
            Err(_) => PhoneStep::SendFailed,
        }
    }

    fn phone_verify(&self, session: &str, code: &str, peer: &str) -> PhoneStep {
        let Some((user, _)) = self.handler.find_by_token(session, true) else {
            web_audit(None, peer, "web_phone_verify", "invalid_session");
            return PhoneStep::Invalid;
        };
        let result = self.handler.register_phone(&user, code, Some(session));
        let (outcome, step) = match result {
            Ok(true) => ("registered", PhoneStep::Registered),
            Ok(false) => ("wrong_code", PhoneStep::WrongCode),
            Err(Response::Error {
                code: ErrorCode::NotFound,
                ..
            }) => ("invalid_session", PhoneStep::Invalid),
            Err(_) => ("error", PhoneStep::SendFailed),
        };
        web_audit(Some(&user), peer, "web_phone_verify", outcome);
        step
    }
}
