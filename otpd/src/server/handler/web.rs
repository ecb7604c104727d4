//! The self-enrolment pages' backend: the link's page, "Show QR code",
//! "Validate", and the page's phone step, over the handler.
//!
//! A GET of the link's page (`view`) shows no secret: it remembers a new
//! view (the hash of a random nonce, put in the page's form) in the link.
//! "Show QR code" (`reveal`) spends one such view, draws a new secret for
//! the pending device and commits both in one compare-and-swap, so the
//! secret shown before is dead and only the newest can be validated; a
//! reveal after the first says when the link was opened before, on the
//! page and in the audit line.

use super::phone::{link_valid, TextFailure, PHONE_SESSION_SECS};
use super::{internal, refuse, with_retries, Handler, SECRET_LEN};
use crate::core::decision::{Outcome, Purpose};
use crate::core::plan::{plan_verify, Refusal, VerifyAttempt, VerifyRead};
use crate::core::record::{EnrollState, Link, LinkPage, PageView, SecretBytes, UserRecord};
use crate::core::tokens::{self, normalize_phone, token_hash, token_shape_ok, TOKEN_BYTES};
use crate::core::totp::otpauth_uri;
use crate::rng::random_bytes;
use crate::store::{RecordChange, SourcesChange, StoreError};
use crate::web::backend::{
    ApiReply, EnrollBackend, LinkView, PageEnrolment, PhoneStep, Reveal, Validation,
};
use crate::web::limits::ClientKey;
use otpd_proto::{ErrorCode, Response};
use std::sync::Arc;
use tracing::{error, info, warn};

/// How long the "Show QR code" button of a page works after the page was
/// served.
const VIEW_SECS: u64 = 60 * 60;
/// Views of one link's page whose button works at once: the newest.
const MAX_VIEWS: usize = 4;

/// `page` with a view whose nonce hashes to `nonce_hash` added at `now`:
/// views older than [`VIEW_SECS`] dropped, the newest [`MAX_VIEWS`] kept.
fn with_view(page: &LinkPage, nonce_hash: String, now: u64) -> LinkPage {
    let mut views: Vec<PageView> = page
        .views
        .iter()
        .filter(|v| now <= v.issued.saturating_add(VIEW_SECS))
        .cloned()
        .collect();
    views.push(PageView {
        nonce_hash,
        issued: now,
    });
    let extra = views.len().saturating_sub(MAX_VIEWS);
    views.drain(..extra);
    LinkPage {
        views,
        ..page.clone()
    }
}

/// The index of the view of `page` whose nonce is `nonce`, if it is still
/// good at `now`. Every view is compared, in constant time.
fn live_view(page: &LinkPage, nonce: &str, now: u64) -> Option<usize> {
    if !token_shape_ok(nonce) {
        return None;
    }
    let hash = token_hash(nonce);
    page.views
        .iter()
        .map(|v| {
            constant_time_eq::constant_time_eq(v.nonce_hash.as_bytes(), hash.as_bytes())
                && now <= v.issued.saturating_add(VIEW_SECS)
        })
        .fold((None, 0), |(found, i), hit| {
            (
                if hit && found.is_none() {
                    Some(i)
                } else {
                    found
                },
                i + 1,
            )
        })
        .0
}

/// The device an enrolment link enrols: the record's first pending one.
/// (The user may have active devices too, which the page never shows.)
fn link_device(record: &UserRecord) -> Option<usize> {
    record
        .devices()
        .iter()
        .position(|d| d.state == EnrollState::Pending)
}

/// The enrolment link of `record` if `token` is its token, it has not
/// expired at `now`, and the record has a device for it to enrol.
fn live_link<'a>(record: &'a UserRecord, token: &str, now: u64) -> Option<&'a Link> {
    let link = record.fallback.link.as_ref()?;
    (link_valid(Some(link), token, now) && link_device(record).is_some()).then_some(link)
}

/// Why a change of a link's page was not made.
fn not_found() -> Response {
    refuse(ErrorCode::NotFound, "no such link")
}

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
            // An enrolment link belongs to a device still to be confirmed
            // (the record itself may be active, with an older device).
            record
                .fallback
                .link
                .as_ref()
                .filter(|_| link_device(&record).is_some())
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

/// The peer's address without the port.
fn peer_ip(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_owned())
}

/// The rate-limit source of a code typed on the page: the client's IPv4
/// address or IPv6 /64 (one network must not multiply its sources).
fn page_source(peer: &str) -> String {
    let ip = peer_ip(peer);
    match ip.parse::<std::net::IpAddr>() {
        Ok(address) => format!("web:{}", ClientKey::from(address)),
        Err(_) => format!("web:{ip}"),
    }
}

fn web_audit(user: Option<&str>, peer: &str, op: &str, outcome: &str) {
    info!(target: "otpd::audit", user = ?user.unwrap_or(""), peer = ?peer_ip(peer), op, outcome);
}

impl EnrollBackend for WebBackend {
    fn view(&self, token: &str, peer: &str) -> Option<LinkView> {
        let h = &self.handler;
        let Some((user, _)) = h.find_by_token(token, false) else {
            web_audit(None, peer, "web_view", "invalid_link");
            return None;
        };
        let nonce = match random_bytes::<TOKEN_BYTES>() {
            Ok(bytes) => tokens::token_text(&bytes),
            Err(e) => {
                error!("cannot show the enrolment page: {e}");
                return None;
            }
        };
        let now = h.now();
        let shown = h.update(&user, |record| {
            let link = live_link(record, token, now).ok_or_else(not_found)?;
            let device = link_device(record).ok_or_else(not_found)?;
            let view = LinkView {
                user: user.clone(),
                issuer: record.issuer.clone(),
                digits: record.devices()[device].digits,
                view: nonce.clone(),
                opened_before: link.page.last_reveal,
            };
            let mut next = record.clone();
            if let Some(link) = next.fallback.link.as_mut() {
                link.page = with_view(&link.page, token_hash(&nonce), now);
            }
            Ok((next, view))
        });
        match shown {
            Ok(view) => {
                web_audit(Some(&user), peer, "web_view", "page");
                Some(view)
            }
            Err(Response::Error {
                code: ErrorCode::NotFound,
                ..
            }) => {
                web_audit(Some(&user), peer, "web_view", "invalid_link");
                None
            }
            Err(response) => {
                warn!(user = ?user, "cannot show the enrolment page: {response:?}");
                None
            }
        }
    }

    fn reveal(&self, token: &str, view: &str, peer: &str) -> Reveal {
        let h = &self.handler;
        let Some((user, _)) = h.find_by_token(token, false) else {
            web_audit(None, peer, "web_reveal", "invalid_link");
            return Reveal::Invalid;
        };
        let now = h.now();
        let revealed = h.update(&user, |record| {
            let link = live_link(record, token, now).ok_or_else(not_found)?;
            let Some(spent) = live_view(&link.page, view, now) else {
                return Err(refuse(ErrorCode::BadRequest, "not a live view of the page"));
            };
            let device = link_device(record).ok_or_else(not_found)?;
            // A new secret for the pending device: whatever was shown
            // before (to whoever opened the link) is dead from now on.
            let mut secret = zeroize::Zeroizing::new([0u8; SECRET_LEN]);
            crate::rng::fill(secret.as_mut())
                .map_err(|e| internal(format!("the OS random number generator failed: {e}")))?;
            let mut devices = record.devices().to_vec();
            let pending = &mut devices[device];
            pending.secret = SecretBytes::new(secret.to_vec());
            let (uri, secret_base32) = otpauth_uri(
                secret.as_ref(),
                pending.algorithm,
                pending.digits,
                pending.period,
                &record.issuer,
                &user,
            )
            .map_err(internal)?;
            let enrollment = PageEnrolment {
                user: user.clone(),
                issuer: record.issuer.clone(),
                secret_base32,
                uri,
                digits: pending.digits,
                opened_before: link.page.last_reveal,
            };
            let mut next = record.clone();
            next.set_devices(devices).map_err(internal)?;
            let mut page = link.page.clone();
            page.views.remove(spent);
            page.reveals = page.reveals.saturating_add(1);
            page.last_reveal = Some(now);
            let reveals = page.reveals;
            if let Some(link) = next.fallback.link.as_mut() {
                link.page = page;
            }
            Ok((next, (enrollment, reveals)))
        });
        match revealed {
            Ok((enrollment, reveals)) => {
                match enrollment.opened_before {
                    None => web_audit(Some(&user), peer, "web_reveal", "revealed"),
                    // The link was opened before: someone else may have seen
                    // a secret (now dead). Said on the page, and here.
                    Some(before) => info!(
                        target: "otpd::audit",
                        user = ?user,
                        peer = ?peer_ip(peer),
                        op = "web_reveal",
                        outcome = "revealed_again",
                        reveals,
                        previous_reveal = before
                    ),
                }
                Reveal::Shown(enrollment)
            }
            Err(Response::Error {
                code: ErrorCode::BadRequest,
                ..
            }) => {
                web_audit(Some(&user), peer, "web_reveal", "stale_view");
                Reveal::StaleView
            }
            Err(Response::Error {
                code: ErrorCode::NotFound,
                ..
            }) => {
                web_audit(Some(&user), peer, "web_reveal", "invalid_link");
                Reveal::Invalid
            }
            Err(response) => {
                warn!(user = ?user, "cannot show the QR code of a link: {response:?}");
                Reveal::Invalid
            }
        }
    }

    fn validate(&self, token: &str, code: &str, peer: &str) -> Validation {
        let h = &self.handler;
        let Some((user, _)) = h.find_by_token(token, false) else {
            web_audit(None, peer, "web_validate", "invalid_link");
            return Validation::Invalid;
        };
        let source = page_source(peer);
        let sms = h.config.sms.command.is_some();
        // The confirmation of `otpd confirm` (core::plan), with its new
        // recovery codes; the page adds the phone step after it.
        let (codes, hashes) = match Handler::fresh_recovery_codes(h.config.recovery.count) {
            Ok(fresh) => fresh,
            Err(response) => {
                warn!(user = ?user, "self-enrolment validation failed: {response:?}");
                return Validation::Invalid;
            }
        };
        let mut result = Validation::Invalid;
        let response = with_retries(|| {
            // The link is checked again on the record this decision is
            // taken on: a link used (or replaced) since the lookup is dead.
            let Ok(Some(record)) = h.store.user(&user) else {
                return Some(Response::Done {});
            };
            if live_link(&record, token, self.handler.now()).is_none() {
                web_audit(Some(&user), peer, "web_validate", "invalid_link");
                return Some(Response::Done {});
            }
            let counter = match h.store.source(&user, &source) {
                Ok(c) => c,
                Err(e) => return Some(internal(e)),
            };
            let plan = plan_verify(
                VerifyRead {
                    record: Some(&record),
                    counter: counter.as_ref(),
                },
                VerifyAttempt {
                    user: &user,
                    code,
                    source: &source,
                    own: false,
                    purpose: Purpose::Confirm,
                    fresh_recovery: Some(&hashes),
                },
                self.handler.now(),
                &h.rules,
            );
            let decision = match plan.decision {
                Ok(d) => d,
                // Nothing pending (validated already through another
                // path): the link is of no more use.
                Err(Refusal::NotEnrolled | Refusal::NothingPending) => {
                    web_audit(Some(&user), peer, "web_validate", "invalid_link");
                    return Some(Response::Done {});
                }
                Err(Refusal::UnusableToken(e)) => return Some(internal(e)),
            };
            let mut next = decision.record.clone();
            let mut shown = Vec::new();
            let mut session = None;
            #[cfg_attr(not(feature = "web"), allow(unused_mut))]
            let mut pairing = None;
            if let (true, Some(next)) = (plan.recovery_codes_issued, next.as_mut()) {
                shown = codes.clone();
                if sms {
                    let token = match random_bytes::<TOKEN_BYTES>() {
                        Ok(bytes) => tokens::token_text(&bytes),
                        Err(e) => return Some(internal(e)),
                    };
                    next.fallback.phone_session = Some(Link {
                        token_hash: token_hash(&token),
                        expires: self.handler.now().saturating_add(PHONE_SESSION_SECS),
                        ..Link::default()
                    });
                    session = Some(token);
                }
                // The second QR code of the success page: pairing a phone
                // to approve sign-ins on.
                #[cfg(feature = "web")]
                if let Some(parts) = h.approve_parts() {
                    let token = match random_bytes::<TOKEN_BYTES>() {
                        Ok(bytes) => tokens::token_text(&bytes),
                        Err(e) => return Some(internal(e)),
                    };
                    next.approvals.pairing = Some(crate::core::approve::Pairing {
                        link: Link {
                            token_hash: token_hash(&token),
                            expires: self
                                .handler
                                .now()
                                .saturating_add(crate::core::approve::PAIRING_SECS),
                            ..Link::default()
                        },
                        registration: None,
                    });
                    pairing = Some(parts.pairing_url(&token));
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
                    pairing_url: pairing.clone(),
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

    #[cfg(feature = "web")]
    fn pairing_live(&self, token: &str) -> bool {
        self.handler.pairing_live(token)
    }

    #[cfg(feature = "web")]
    fn approve_api(&self, op: &str, body: &[u8], peer: &str, lang: &str) -> ApiReply {
        self.handler.approve_api(op, body, peer, lang)
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn nonce(n: u8) -> String {
        tokens::token_text(&[n; TOKEN_BYTES])
    }

    #[test]
    fn a_view_works_once_within_its_hour_and_only_the_newest_few_are_kept() {
        let mut page = LinkPage::default();
        for n in 0..6u8 {
            page = with_view(&page, token_hash(&nonce(n)), NOW + u64::from(n));
        }
        assert_eq!(page.views.len(), MAX_VIEWS);
        // The two oldest were dropped for newer ones.
        assert_eq!(live_view(&page, &nonce(0), NOW + 10), None);
        assert_eq!(live_view(&page, &nonce(1), NOW + 10), None);
        assert_eq!(live_view(&page, &nonce(2), NOW + 10), Some(0));
        assert_eq!(live_view(&page, &nonce(5), NOW + 10), Some(3));
        // An hour after it was served, a view is dead, and dropped by the next.
        assert_eq!(live_view(&page, &nonce(2), NOW + 2 + VIEW_SECS), Some(0));
        assert_eq!(live_view(&page, &nonce(2), NOW + 3 + VIEW_SECS), None);
        let later = with_view(&page, token_hash(&nonce(9)), NOW + 4 + VIEW_SECS);
        assert_eq!(later.views.len(), 3, "{later:?}");
        // Not a nonce at all, or a hash sent as a nonce.
        for bad in [
            "",
            "x",
            &token_hash(&nonce(5)),
            &nonce(5).to_uppercase()[..31],
        ] {
            assert_eq!(live_view(&page, bad, NOW + 10), None, "{bad}");
        }
        // Reveals are kept when views are added.
        let revealed = LinkPage {
            reveals: 2,
            last_reveal: Some(NOW),
            ..page
        };
        let next = with_view(&revealed, token_hash(&nonce(7)), NOW + 20);
        assert_eq!((next.reveals, next.last_reveal), (2, Some(NOW)));
    }

    #[test]
    fn page_sources_are_addresses_and_ipv6_networks() {
        assert_eq!(page_source("192.0.2.4"), "web:192.0.2.4");
        assert_eq!(page_source("192.0.2.4:5555"), "web:192.0.2.4");
        assert_eq!(page_source("2001:db8:1:2::7"), "web:2001:db8:1:2::/64");
        assert_eq!(page_source("unknown"), "web:unknown");
    }
}
