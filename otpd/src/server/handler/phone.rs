//! The ways in besides the app's code: enrolment links and a phone for
//! texted codes (recovery codes are in `recovery.rs`).
//!
//! Every token and code is drawn from the OS RNG, shown once, and stored
//! only as a hash (`core::tokens`); none of them reaches a log line.

use super::{audit_verify, internal, refuse, with_retries, Handler};
use crate::core::decision::{count_failure, gate, trusted, Outcome, Purpose, SourceState};
use crate::core::record::{Link, SmsChallenge, UserRecord};
use crate::core::tokens::{
    self, normalize_phone, sms_allowed, texted_code, token_hash, token_shape_ok, CodeHash,
    TOKEN_BYTES,
};
use crate::rng::random_bytes;
use crate::server::policy::Caller;
use crate::store::{RecordChange, SourcesChange, StoreError};
use otpd_proto::{ErrorCode, Response, SecretText, VerifyOutcome};
use tracing::{error, info, warn};

/// How long the page's phone step stays open after a self-enrolment.
pub(super) const PHONE_SESSION_SECS: u64 = 15 * 60;
/// Texted login codes kept open at once (the newest).
const MAX_OPEN_TEXTS: usize = 3;
/// Wrong codes against one phone registration before it is discarded.
const MAX_REGISTER_TRIES: u32 = 5;

/// Whether `token` is the one of `link` and the link has not expired;
/// constant-time in the hash.
pub(super) fn link_valid(link: Option<&Link>, token: &str, now: u64) -> bool {
    link.is_some_and(|l| {
        token_shape_ok(token)
            && constant_time_eq::constant_time_eq(
                l.token_hash.as_bytes(),
                token_hash(token).as_bytes(),
            )
            && now <= l.expires
    })
}

/// A new texted code and the salt of its hash, from the OS RNG.
fn fresh_texted_code() -> Result<(zeroize::Zeroizing<String>, [u8; 16]), Response> {
    let code = texted_code(&random_bytes::<4>().map_err(internal)?);
    Ok((code, random_bytes::<16>().map_err(internal)?))
}

/// What a change of one record gives back besides the new record.
type Updated<T> = Result<(UserRecord, T), Response>;

impl Handler {
    /// A new link token: the URL to hand out and what the record keeps.
    pub(super) fn new_link(&self, expires_in: u64) -> Result<(SecretText, Link), Response> {
        let Some(public_url) = &self.config.web.public_url else {
            return Err(refuse(
                ErrorCode::BadRequest,
                "self-enrolment links need [web] public_url in the config (and [web] listen, \
                 or a reverse proxy to it)",
            ));
        };
        if !(5..=30 * 24 * 3600).contains(&expires_in) {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("a link may be valid from 5 seconds to 30 days, not {expires_in} s"),
            ));
        }
        let token = tokens::token_text(&random_bytes::<TOKEN_BYTES>().map_err(internal)?);
        let url = format!("{}/enroll/{token}", public_url.trim_end_matches('/'));
        let link = Link {
            token_hash: token_hash(&token),
            expires: self.now().saturating_add(expires_in),
            ..Link::default()
        };
        Ok((SecretText::new(url), link))
    }

    /// Reads `user`'s record, lets `change` build the next one, and stores
    /// it if nobody wrote in between (otherwise tries again).
    pub(super) fn update<T>(
        &self,
        user: &str,
        mut change: impl FnMut(&UserRecord) -> Updated<T>,
    ) -> Result<T, Response> {
        let mut result = None;
        let response = with_retries(|| {
            let current = match self.enrolled(user) {
                Ok(r) => r,
                Err(refusal) => return Some(refusal),
            };
            let (mut next, value) = match change(&current) {
                Ok(changed) => changed,
                Err(response) => return Some(response),
            };
            next.version = current.version.wrapping_add(1);
            match self.store.commit(
                user,
                Some(current.version),
                RecordChange::Put(&next),
                SourcesChange::Keep,
            ) {
                Ok(()) => {
                    result = Some(value);
                    Some(Response::Done {})
                }
                Err(StoreError::Conflict) => None,
                Err(e) => Some(internal(e)),
            }
        });
        result.ok_or(response)
    }

    /// Records a phone-registration challenge for `number` and texts it.
    /// `Ok` when sent. Registration texts have their own hourly budget
    /// (`register_sent`), apart from login texts.
    pub(super) fn text_code(
        &self,
        user: &str,
        number: &str,
        precheck: impl Fn(&UserRecord) -> Result<(), Response>,
    ) -> Result<(), TextFailure> {
        if self.config.sms.command.is_none() {
            return Err(TextFailure::NotConfigured);
        }
        let sms = &self.config.sms;
        let (code, salt) = fresh_texted_code().map_err(TextFailure::Response)?;
        let now = self.now();
        let mut limited = None;
        self.update(user, |r| {
            precheck(r)?;
            if let Err(wait) = sms_allowed(&r.fallback.register_sent, now, sms.max_per_hour) {
                limited = Some(wait);
                return Err(Response::Done {});
            }
            let mut next = r.clone();
            next.fallback.sms_register = Some(SmsChallenge {
                code: CodeHash::new(&code, &salt),
                expires: now.saturating_add(sms.code_lifetime),
                number: Some(number.to_owned()),
                tries: 0,
            });
            next.fallback
                .register_sent
                .retain(|t| now.saturating_sub(*t) < 3600);
            next.fallback.register_sent.push(now);
            Ok((next, ()))
        })
        .map_err(|response| match limited {
            Some(wait) => TextFailure::Limited(wait),
            None => TextFailure::Response(response),
        })?;
        self.send(user, number, &code)
    }

    /// Texts `code` to `to` with the configured sender.
    fn send(&self, user: &str, to: &str, code: &str) -> Result<(), TextFailure> {
        let sms = &self.config.sms;
        let Some(command) = &sms.command else {
            return Err(TextFailure::NotConfigured);
        };
        let message = zeroize::Zeroizing::new(sms.message.replace("{code}", code));
        let sent = crate::server::sms::send_text(sms, command, to, &message).map_err(|reason| {
            // The sender's own words may echo its input: never the code.
            let reason = reason.replace(code, "<code>");
            error!(user = ?user, reason = ?reason, "the text message could not be sent");
            TextFailure::SendFailed
        });
        self.metrics.text(sent.is_ok());
        sent
    }

    /// A login at which the user typed `sms`. The request counts against
    /// the source's limits like a wrong code (design.md §2: it could be a
    /// guess, and it costs the user a text), in the same write that records
    /// the texted code; the code typed back clears the count. Login texts
    /// have their own hourly budget (`sms_sent`), apart from registrations.
    pub(super) fn login_sms(
        &self,
        caller: &Caller,
        user: &str,
        source: &str,
        own: bool,
        service: &str,
        rhost: &str,
    ) -> Response {
        let audit = |outcome: &str| {
            audit_verify(caller, user, service, rhost, Purpose::Login, outcome, None);
            self.metrics
                .checked(service, caller.uid == 0, "verify", outcome);
        };
        // Not enrolled, pending, no phone, not configured: one answer for
        // all, so that typing "sms" tells a stranger nothing about the user
        // (the audit line keeps the reason).
        let unavailable = VerifyOutcome::SmsUnavailable {
            retry_after_secs: None,
        };
        if self.config.sms.command.is_none() {
            audit(TextFailure::NotConfigured.as_str());
            return Response::Verified {
                outcome: unavailable,
            };
        }
        let (code, salt) = match fresh_texted_code() {
            Ok(fresh) => fresh,
            Err(response) => return response,
        };
        let sms = &self.config.sms;
        /// What the committed request leads to.
        enum Plan {
            Answer(VerifyOutcome, &'static str),
            Send(String),
        }
        let mut plan = None;
        let response = with_retries(|| {
            let now = self.now();
            let record = match self.store.user(user) {
                Ok(r) => r,
                Err(e) => return Some(internal(e)),
            };
            let counter = match self.store.source(user, source) {
                Ok(c) => c,
                Err(e) => return Some(internal(e)),
            };
            let state = SourceState {
                key: source,
                counter: counter.as_ref(),
                own,
            };
            let record = match (
                gate(record.as_ref(), &state, now, Purpose::Login, &self.rules),
                record,
            ) {
                (Ok(()), Some(record)) => record,
                (Err(Outcome::Throttled { retry_after }), _) => {
                    plan = Some(Plan::Answer(
                        VerifyOutcome::Throttled {
                            retry_after_secs: retry_after,
                        },
                        "throttled",
                    ));
                    return Some(Response::Done {});
                }
                (Err(Outcome::Pending), _) => {
                    plan = Some(Plan::Answer(unavailable, "sms_pending"));
                    return Some(Response::Done {});
                }
                _ => {
                    // An unknown user costs what a counted request costs.
                    if let Err(e) = self.store.decoy_write() {
                        warn!("decoy write failed: {e}");
                    }
                    plan = Some(Plan::Answer(unavailable, "sms_not_enrolled"));
                    return Some(Response::Done {});
                }
            };
            let (mut next, source_change) = count_failure(&record, &state, now);
            // The hourly budget holds back strangers; a source the user has
            // proven (and the user's own uid) is held back by its own
            // backoff alone, so that strangers cannot use up the texts the
            // user needs (each request counts against its source).
            let budget = if trusted(&record, &state, now, &self.rules) {
                Ok(())
            } else {
                sms_allowed(&record.fallback.sms_sent, now, sms.max_per_hour)
            };
            let step = match &record.fallback.phone {
                None => Plan::Answer(unavailable, TextFailure::NoPhone.as_str()),
                Some(phone) => {
                    match budget {
                        Err(wait) => Plan::Answer(
                            VerifyOutcome::SmsUnavailable {
                                retry_after_secs: Some(wait),
                            },
                            "sms_limited",
                        ),
                        Ok(()) => {
                            // Keep the newest few unexpired login codes.
                            let texts = &mut next.fallback;
                            texts.sms.retain(|c| now <= c.expires);
                            texts.sms.push(SmsChallenge {
                                code: CodeHash::new(&code, &salt),
                                expires: now.saturating_add(sms.code_lifetime),
                                number: None,
                                tries: 0,
                            });
                            let excess = texts.sms.len().saturating_sub(MAX_OPEN_TEXTS);
                            texts.sms.drain(..excess);
                            texts.sms_sent.retain(|t| now.saturating_sub(*t) < 3600);
                            texts.sms_sent.push(now);
                            Plan::Send(phone.clone())
                        }
                    }
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
            plan = Some(step);
            Some(Response::Done {})
        });
        let Some(plan) = plan else {
            return response;
        };
        let outcome = match plan {
            Plan::Answer(outcome, why) => {
                audit(why);
                outcome
            }
            Plan::Send(to) => match self.send(user, &to, &code) {
                Ok(()) => {
                    audit("sms_sent");
                    VerifyOutcome::SmsSent
                }
                Err(failure) => {
                    audit(failure.as_str());
                    unavailable
                }
            },
        };
        Response::Verified { outcome }
    }

    /// `otpd phone USER NUMBER`: texts a code to the number.
    pub(super) fn phone(&self, caller: &Caller, user: &str, number: &str) -> Response {
        let Some(number) = normalize_phone(number) else {
            return refuse(
                ErrorCode::BadRequest,
                format!(
                    "{number:?} is not a phone number in international form, like +31612345678"
                ),
            );
        };
        let result = self.text_code(user, &number, |_| Ok(()));
        info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "phone", outcome = match &result {
            Ok(()) => "sms_sent",
            Err(failure) => failure.as_str(),
        });
        match result {
            Ok(()) => Response::Done {},
            Err(failure) => failure.into_response(),
        }
    }

    /// `otpd phone USER --confirm CODE`: registers the number the code was texted to.
    pub(super) fn phone_confirm(&self, caller: &Caller, user: &str, code: &SecretText) -> Response {
        let result = self.register_phone(user, code.expose(), None);
        info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "phone_confirm", outcome = match &result {
            Ok(true) => "registered",
            Ok(false) => "wrong_code",
            Err(_) => "error",
        });
        match result {
            Ok(true) => Response::Verified {
                outcome: VerifyOutcome::Accepted,
            },
            Ok(false) => Response::Verified {
                outcome: VerifyOutcome::WrongCode,
            },
            Err(response) => response,
        }
    }

    /// Registers the number of the outstanding registration challenge if
    /// `typed` is its code: `Ok(false)` when it is not (or expired).
    /// A wrong code counts against the challenge: after
    /// [`MAX_REGISTER_TRIES`] it is gone and a new text must be asked for,
    /// so the texted code cannot be guessed. With `session` (the page), the
    /// phone session must still be valid, checked in the same write.
    pub(super) fn register_phone(
        &self,
        user: &str,
        typed: &str,
        session: Option<&str>,
    ) -> Result<bool, Response> {
        let typed = zeroize::Zeroizing::new(typed.trim().replace(' ', ""));
        let now = self.now();
        self.update(user, |r| {
            if let Some(session) = session {
                if !link_valid(r.fallback.phone_session.as_ref(), session, now) {
                    return Err(refuse(ErrorCode::NotFound, "no such phone session"));
                }
            }
            let Some(challenge) = r
                .fallback
                .sms_register
                .as_ref()
                .filter(|c| now <= c.expires)
            else {
                return Err(Response::Done {});
            };
            let mut next = r.clone();
            if challenge.code.matches(&typed) {
                next.fallback.phone = challenge.number.clone();
                next.fallback.sms_register = None;
                next.fallback.phone_session = None;
                return Ok((next, true));
            }
            let tries = challenge.tries.saturating_add(1);
            next.fallback.sms_register = (tries < MAX_REGISTER_TRIES).then(|| SmsChallenge {
                tries,
                ..challenge.clone()
            });
            Ok((next, false))
        })
        .or_else(|response| match response {
            Response::Done {} => Ok(false),
            other => Err(other),
        })
    }
}

/// Why no text was sent.
pub(super) enum TextFailure {
    /// `[sms] command` is not set.
    NotConfigured,
    /// The user has no phone registered.
    NoPhone,
    /// Too many texts this hour; seconds to wait.
    Limited(u64),
    /// The sender failed or timed out (logged).
    SendFailed,
    /// Any other answer (not enrolled, store error …).
    Response(Response),
}

impl TextFailure {
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            TextFailure::NotConfigured => "sms_not_configured",
            TextFailure::NoPhone => "no_phone",
            TextFailure::Limited(_) => "sms_limited",
            TextFailure::SendFailed => "sms_failed",
            TextFailure::Response(_) => "error",
        }
    }

    fn into_response(self) -> Response {
        match self {
            TextFailure::NotConfigured => refuse(
                ErrorCode::Unavailable,
                "text messages are not configured: set [sms] command in the config",
            ),
            TextFailure::NoPhone => refuse(ErrorCode::Unavailable, "no phone number is registered"),
            TextFailure::Limited(wait) => refuse(
                ErrorCode::Unavailable,
                format!(
                    "too many text messages for this user; try again in {} minutes",
                    wait.div_ceil(60)
                ),
            ),
            TextFailure::SendFailed => refuse(
                ErrorCode::Unavailable,
                "the text message could not be sent (see the daemon's log)",
            ),
            TextFailure::Response(response) => response,
        }
    }
}
