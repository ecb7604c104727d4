//! Sign-ins approved on a paired phone, the phone's side: the pairing link,
//! the passkey's registration, the app's API (its requests, the number
//! picked, the assertion, deny). The WebAuthn ceremonies are
//! `webauthn-rs`'; their states are kept in the user's record between the
//! phone's two requests, so that on a fleet any host's pages may answer
//! the second. Every change of state is decided in `core::approve`.
//!
//! Each API call answers an [`ApiReply`]: a status and a JSON body, with
//! `error` naming the problem on a refusal. A refusal changes nothing,
//! except where the rules say so (a wrong number closes its request; a
//! failed assertion uses up its challenge).

use super::approve::{host_name, request_id};
use super::phone::link_valid;
use super::{internal, with_retries, Handler};
use crate::core::approve::{
    Closed, Pairing, Phone, PushTarget, RequestContext, SignInRequest, MAX_PHONES, PAIRING_SECS,
};
use crate::core::names::validate_device;
use crate::core::record::{EnrollState, Link, UserRecord};
use crate::core::tokens::{self, token_hash, token_shape_ok, TOKEN_BYTES};
use crate::rng::random_bytes;
use crate::server::push::{Subscription, VapidKey};
use crate::store::{RecordChange, SourcesChange, StoreError};
use crate::web::backend::ApiReply;
use otpd_proto::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::{error, info, warn};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

/// The label of the VAPID key's derivation from the store's key.
const VAPID_LABEL: &str = "otpd approve: VAPID key v1";

/// What approvals need besides the store, made once.
pub(crate) struct ApproveParts {
    webauthn: Webauthn,
    pub(super) vapid: VapidKey,
    pub(super) contact: String,
    pub(super) push_hosts: Vec<String>,
    /// Seconds a push may wait at the push service.
    pub(super) ttl: u64,
    /// `[web] public_url` without a trailing slash.
    base: String,
}

impl ApproveParts {
    fn make(handler: &Handler) -> Result<ApproveParts, String> {
        let approve = &handler.config.approve;
        let contact = approve
            .contact
            .clone()
            .ok_or("[approve] contact is not set")?;
        let public = handler
            .config
            .web
            .public_url
            .clone()
            .ok_or("[web] public_url is not set")?;
        let url = Url::parse(&public).map_err(|e| format!("[web] public_url: {e}"))?;
        let rp_id = url
            .host_str()
            .ok_or("[web] public_url has no host")?
            .to_owned();
        let origin = Url::parse(&url.origin().ascii_serialization())
            .map_err(|e| format!("[web] public_url's origin: {e}"))?;
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name("otpd").build())
            .map_err(|e| {
                format!("passkeys need a host name in [web] public_url (not an IP address): {e}")
            })?;
        let secret = handler
            .store
            .derived_secret(VAPID_LABEL)
            .ok_or("the store has no key to derive the VAPID key from")?;
        let vapid = VapidKey::from_secret(&secret).map_err(|e| e.to_string())?;
        Ok(ApproveParts {
            webauthn,
            vapid,
            contact,
            push_hosts: approve
                .push_hosts
                .clone()
                .unwrap_or_else(crate::server::push::default_push_hosts),
            ttl: approve.timeout,
            base: public.trim_end_matches('/').to_owned(),
        })
    }
}

impl ApproveParts {
    /// The URL of the pairing link `token`.
    pub(crate) fn pairing_url(&self, token: &str) -> String {
        format!("{}/approve/pair/{token}", self.base)
    }
}

/// The push's payload: what the notification shows (never the number).
pub(super) fn push_payload(user: &str, request: &SignInRequest, lang: &str) -> String {
    let (title, body) = if request.test.is_some() {
        match lang {
            "nl" => (
                "Testmelding van otpd".to_owned(),
                "Open de app en kies Goedkeuren.".to_owned(),
            ),
            _ => (
                "Test notification from otpd".to_owned(),
                "Open the app and select Approve.".to_owned(),
            ),
        }
    } else {
        let source = if request.source.is_empty() {
            String::new()
        } else {
            format!(", {}", request.source)
        };
        match lang {
            "nl" => (
                "Aanmelding goedkeuren?".to_owned(),
                format!("{user} op {} ({}{source})", request.host, request.service),
            ),
            _ => (
                "Approve sign-in?".to_owned(),
                format!("{user} on {} ({}{source})", request.host, request.service),
            ),
        }
    };
    json!({ "id": request.id, "title": title, "body": body, "lang": lang }).to_string()
}

/// A stable WebAuthn user handle for `user` (not secret: the passkey's
/// account on the phone).
fn user_handle(user: &str) -> Uuid {
    let digest = tokens::token_hash(&format!("otpd webauthn user\0{user}"));
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    Uuid::from_bytes(bytes)
}

fn refused(status: u16, message: &str) -> ApiReply {
    ApiReply {
        status,
        body: json!({ "error": message }),
    }
}

fn closed(c: Closed) -> ApiReply {
    let status = match c {
        Closed::Unknown => 404,
        Closed::NoChallenge => 400,
        Closed::Expired | Closed::Decided | Closed::WrongNumber => 409,
    };
    let mut reply = refused(status, c.message());
    if c == Closed::WrongNumber {
        reply.body["outcome"] = json!("wrong_number");
    }
    reply
}

fn failed(response: Response) -> ApiReply {
    let message = match response {
        Response::Error { message, .. } => message,
        _ => "otpd could not complete the request".into(),
    };
    refused(503, &message)
}

fn ok(body: Value) -> ApiReply {
    ApiReply { status: 200, body }
}

fn approve_audit(user: &str, phone: &str, peer: &str, op: &str, outcome: &str) {
    info!(target: "otpd::audit", user = ?user, device = ?phone, peer = ?peer, op, outcome);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairBegin {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairFinish {
    token: String,
    #[serde(default)]
    name: Option<String>,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    push: Option<Subscription>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppPush {
    app_token: String,
    push: Subscription,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppOnly {
    app_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pick {
    app_token: String,
    request: String,
    number: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Finish {
    app_token: String,
    request: String,
    credential: PublicKeyCredential,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deny {
    app_token: String,
    request: String,
    #[serde(default)]
    not_me: bool,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiReply> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's message names the field, never a value.
        refused(
            400,
            &format!("the request is not what this call takes: {e}"),
        )
    })
}

/// What a commit loop's attempt ends with: the reply, or `None` to read
/// again after a concurrent update.
type Attempt = Option<ApiReply>;

impl Handler {
    /// The parts approvals need (made at first use; `None`: approvals are
    /// off or cannot work, logged once).
    pub(crate) fn approve_parts(&self) -> Option<Arc<ApproveParts>> {
        if !self.approvals_on() {
            return None;
        }
        self.approve_parts
            .get_or_init(|| match ApproveParts::make(self) {
                Ok(parts) => Some(Arc::new(parts)),
                Err(e) => {
                    error!("sign-in approvals cannot work: {e}");
                    None
                }
            })
            .clone()
    }

    /// Runs `attempt` until it does not meet a concurrent update.
    fn api_retries(&self, mut attempt: impl FnMut() -> Attempt) -> ApiReply {
        let mut reply = None;
        let response = with_retries(|| {
            let r = attempt()?;
            reply = Some(r);
            Some(Response::Done {})
        });
        reply.unwrap_or_else(|| failed(response))
    }

    /// Commits `next` over `record`: `Ok(true)` done, `Ok(false)` a
    /// concurrent update (read again), `Err` the store failed.
    fn put(&self, user: &str, record: &UserRecord, next: &UserRecord) -> Result<bool, ApiReply> {
        match self.store.commit(
            user,
            Some(record.version),
            RecordChange::Put(next),
            SourcesChange::Keep,
        ) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(failed(internal(e))),
        }
    }

    /// A new pairing link for `user` (who must be enrolled): its URL. The
    /// link replaces any earlier one; it is valid for ten minutes, once.
    pub(super) fn approver_link(&self, user: &str) -> Result<String, Response> {
        let Some(parts) = self.approve_parts() else {
            return Err(super::refuse(
                otpd_proto::ErrorCode::BadRequest,
                "sign-in approvals are off: set [approve] contact and [web] public_url",
            ));
        };
        let token = tokens::token_text(&random_bytes::<TOKEN_BYTES>().map_err(internal)?);
        let mut result = None;
        let response = with_retries(|| {
            let record = match self.enrolled(user) {
                Ok(r) => r,
                Err(refusal) => return Some(refusal),
            };
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            next.approvals.prune(self.now());
            next.approvals.pairing = Some(Pairing {
                link: Link {
                    token_hash: token_hash(&token),
                    expires: self.now().saturating_add(PAIRING_SECS),
                    ..Link::default()
                },
                registration: None,
            });
            match self.store.commit(
                user,
                Some(record.version),
                RecordChange::Put(&next),
                SourcesChange::Keep,
            ) {
                Ok(()) => {}
                Err(StoreError::Conflict) => return None,
                Err(e) => return Some(internal(e)),
            }
            result = Some(parts.pairing_url(&token));
            Some(Response::Done {})
        });
        result.ok_or(response)
    }

    /// The pairing link `token` on `record` at `now`: its pairing, if live.
    fn live_pairing<'a>(record: &'a UserRecord, token: &str, now: u64) -> Option<&'a Pairing> {
        record
            .approvals
            .pairing
            .as_ref()
            .filter(|p| link_valid(Some(&p.link), token, now))
    }

    /// The user and record whose token (a pairing link, or a phone's app
    /// token) hashes to the one given: looked up by the hash.
    fn find_by_any_token(&self, token: &str) -> Result<(String, UserRecord), ApiReply> {
        let invalid = || refused(403, "this link or app is not (or no longer) valid");
        if !token_shape_ok(token) {
            return Err(invalid());
        }
        let user = match self.store.user_by_token_hash(&token_hash(token)) {
            Ok(Some(user)) => user,
            Ok(None) => return Err(invalid()),
            Err(e) => return Err(failed(internal(e))),
        };
        match self.store.user(&user) {
            Ok(Some(record)) => Ok((user, record)),
            Ok(None) => Err(invalid()),
            Err(e) => Err(failed(internal(e))),
        }
    }

    /// Whether the pairing link `token` is live (its page shows the button).
    pub(super) fn pairing_live(&self, token: &str) -> bool {
        self.approve_parts().is_some()
            && self
                .find_by_any_token(token)
                .is_ok_and(|(_, r)| Self::live_pairing(&r, token, self.now()).is_some())
    }

    /// One call of the phone app's API (`op`: the path after
    /// `/approve/api/`), `body` JSON, from `peer`, whose pages are in `lang`.
    pub(super) fn approve_api(&self, op: &str, body: &[u8], peer: &str, lang: &str) -> ApiReply {
        let Some(parts) = self.approve_parts() else {
            return refused(404, "sign-in approvals are off on this server");
        };
        let result = match op {
            "pair/begin" => self.pair_begin(&parts, body),
            "pair/finish" => self.pair_finish(&parts, body, peer, lang),
            "push" => self.app_push(&parts, body),
            "requests" => self.app_requests(body),
            "approve/begin" => self.approve_begin(&parts, body, peer),
            "approve/finish" => self.approve_finish(&parts, body, peer),
            "deny" => self.app_deny(body, peer),
            _ => Err(refused(404, "no such call")),
        };
        result.unwrap_or_else(|reply| reply)
    }

    fn pair_begin(&self, parts: &ApproveParts, body: &[u8]) -> Result<ApiReply, ApiReply> {
        let call: PairBegin = parse(body)?;
        Ok(self.api_retries(|| {
            let (user, record) = match self.find_by_any_token(&call.token) {
                Ok(found) => found,
                Err(reply) => return Some(reply),
            };
            let now = self.now();
            if Self::live_pairing(&record, &call.token, now).is_none() {
                return Some(refused(
                    403,
                    "this pairing link is not (or no longer) valid",
                ));
            }
            let exclude: Vec<_> = record
                .approvals
                .phones
                .iter()
                .filter_map(|p| serde_json::from_str::<Passkey>(&p.passkey).ok())
                .map(|p| p.cred_id().clone())
                .collect();
            let (options, state) = match parts.webauthn.start_passkey_registration(
                user_handle(&user),
                &user,
                &user,
                Some(exclude),
            ) {
                Ok(started) => started,
                Err(e) => return Some(failed(internal(format!("passkey registration: {e}")))),
            };
            let state = match serde_json::to_string(&state) {
                Ok(s) => s,
                Err(e) => return Some(failed(internal(e.to_string()))),
            };
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            if let Some(p) = next.approvals.pairing.as_mut() {
                p.registration = Some(state);
            }
            match self.put(&user, &record, &next) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(reply) => return Some(reply),
            }
            let mut body = serde_json::to_value(&options).unwrap_or_default();
            body["vapid_key"] = json!(parts.vapid.public_key());
            body["user"] = json!(user);
            Some(ok(body))
        }))
    }

    fn pair_finish(
        &self,
        parts: &ApproveParts,
        body: &[u8],
        peer: &str,
        lang: &str,
    ) -> Result<ApiReply, ApiReply> {
        let call: PairFinish = parse(body)?;
        if let Some(name) = &call.name {
            validate_device(name).map_err(|m| refused(400, &format!("name: {m}")))?;
        }
        // A subscription the push services' list does not allow: the
        // pairing goes on without pushes (the app shows requests when
        // opened), and the reply says why.
        let (push, push_note) = match &call.push {
            None => (None, "off".to_owned()),
            Some(sub) => match sub.check(&parts.push_hosts) {
                Ok(()) => (
                    Some(PushTarget {
                        endpoint: sub.endpoint.clone(),
                        p256dh: sub.keys.p256dh.clone(),
                        auth: sub.keys.auth.clone(),
                    }),
                    "on".to_owned(),
                ),
                Err(e) => (None, format!("off: {e}")),
            },
        };
        let app_token =
            tokens::token_text(&random_bytes::<TOKEN_BYTES>().map_err(|e| failed(internal(e)))?);
        let test_id = request_id().map_err(failed)?;
        let random: [u8; 4] = random_bytes().map_err(|e| failed(internal(e)))?;
        let host = host_name();
        let peer_ip = peer_address(peer);
        let mut pushed = None;
        let reply = self.api_retries(|| {
            let (user, record) = match self.find_by_any_token(&call.token) {
                Ok(found) => found,
                Err(reply) => return Some(reply),
            };
            let now = self.now();
            let Some(state) = Self::live_pairing(&record, &call.token, now)
                .and_then(|p| p.registration.as_deref())
            else {
                return Some(refused(
                    403,
                    "this pairing link is not (or no longer) valid",
                ));
            };
            let state: PasskeyRegistration = match serde_json::from_str(state) {
                Ok(s) => s,
                Err(e) => return Some(failed(internal(format!("pairing state: {e}")))),
            };
            if record.approvals.phones.len() >= MAX_PHONES {
                return Some(refused(
                    409,
                    &format!("{user} has {MAX_PHONES} phones paired already; remove one first"),
                ));
            }
            // The credential is looked up only through this user's phones
            // (the app token names the phone), never by its ID across
            // users, so a credential ID seen elsewhere cannot mix accounts.
            let passkey = match parts
                .webauthn
                .finish_passkey_registration(&call.credential, &state)
            {
                Ok(passkey) => passkey,
                Err(e) => {
                    approve_audit(&user, "", peer, "approve_pair", "passkey_refused");
                    return Some(refused(400, &format!("the passkey was not accepted: {e}")));
                }
            };
            let passkey = match serde_json::to_string(&passkey) {
                Ok(p) => p,
                Err(e) => return Some(failed(internal(e.to_string()))),
            };
            let taken: Vec<&str> = record.devices().iter().map(|d| d.name.as_str()).collect();
            let name = match &call.name {
                Some(name)
                    if taken.contains(&name.as_str())
                        || record.approvals.phones.iter().any(|p| &p.name == name) =>
                {
                    return Some(refused(
                        409,
                        &format!("{user} has a device named {name:?} already"),
                    ));
                }
                Some(name) => name.clone(),
                None => record.approvals.new_phone_name(&taken),
            };
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            next.approvals.prune(now);
            next.approvals.pairing = None;
            next.approvals.phones.push(Phone {
                name: name.clone(),
                state: EnrollState::Pending,
                created: now,
                last_used: None,
                passkey,
                app_token_hash: token_hash(&app_token),
                push: push.clone(),
                lang: lang.to_owned(),
            });
            // As the manuals describe: a test request, which activates the
            // phone when it is approved on it.
            let test = SignInRequest::new(
                test_id.clone(),
                random,
                RequestContext {
                    host: &host,
                    service: "pairing",
                    source: &peer_ip,
                },
                now,
                PAIRING_SECS,
                Some(name.clone()),
            );
            next.approvals.requests.push(test);
            match self.put(&user, &record, &next) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(reply) => return Some(reply),
            }
            approve_audit(&user, &name, peer, "approve_pair", "paired_pending_test");
            pushed = Some((user.clone(), next));
            Some(ok(json!({
                "app_token": app_token,
                "phone": name,
                "push": push_note,
            })))
        });
        if let Some((user, next)) = pushed {
            self.push_request(&user, &next, &test_id);
        }
        Ok(reply)
    }

    /// The phone whose app token this is, with its user and record.
    fn app_phone(&self, app_token: &str) -> Result<(String, UserRecord, Phone), ApiReply> {
        let (user, record) = self.find_by_any_token(app_token)?;
        let phone = record
            .approvals
            .phone_by_app_token(&token_hash(app_token))
            .cloned()
            .ok_or_else(|| refused(403, "this app is not (or no longer) paired"))?;
        Ok((user, record, phone))
    }

    fn app_push(&self, parts: &ApproveParts, body: &[u8]) -> Result<ApiReply, ApiReply> {
        let call: AppPush = parse(body)?;
        call.push
            .check(&parts.push_hosts)
            .map_err(|e| refused(400, &format!("push subscription: {e}")))?;
        Ok(self.api_retries(|| {
            let (user, record, phone) = match self.app_phone(&call.app_token) {
                Ok(found) => found,
                Err(reply) => return Some(reply),
            };
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            if let Some(p) = next
                .approvals
                .phones
                .iter_mut()
                .find(|p| p.name == phone.name)
            {
                p.push = Some(PushTarget {
                    endpoint: call.push.endpoint.clone(),
                    p256dh: call.push.keys.p256dh.clone(),
                    auth: call.push.keys.auth.clone(),
                });
            }
            match self.put(&user, &record, &next) {
                Ok(true) => Some(ok(json!({ "ok": true }))),
                Ok(false) => None,
                Err(reply) => Some(reply),
            }
        }))
    }

    fn app_requests(&self, body: &[u8]) -> Result<ApiReply, ApiReply> {
        let call: AppOnly = parse(body)?;
        let (user, record, phone) = self.app_phone(&call.app_token)?;
        let now = self.now();
        let active = phone.state == EnrollState::Active;
        let requests: Vec<Value> = record
            .approvals
            .requests
            .iter()
            .filter(|r| r.is_open(now) && r.is_for(&phone.name))
            .filter(|r| active || r.test.is_some())
            .map(|r| {
                json!({
                    "id": r.id,
                    "user": user,
                    "host": r.host,
                    "service": r.service,
                    "source": r.source,
                    "time": r.time,
                    "expires": r.expires,
                    // A pairing's test has no terminal that shows a
                    // number: one choice, "Approve".
                    "choices": if r.test.is_some() { vec![r.number] } else { r.choices.to_vec() },
                    "test": r.test.is_some(),
                })
            })
            .collect();
        Ok(ok(json!({
            "requests": requests,
            "active": active,
            "phone": phone.name,
        })))
    }

    fn approve_begin(
        &self,
        parts: &ApproveParts,
        body: &[u8],
        peer: &str,
    ) -> Result<ApiReply, ApiReply> {
        let call: Pick = parse(body)?;
        Ok(self.api_retries(|| {
            let (user, record, phone) = match self.app_phone(&call.app_token) {
                Ok(found) => found,
                Err(reply) => return Some(reply),
            };
            let now = self.now();
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            match next
                .approvals
                .pick(&call.request, call.number, &phone.name, now)
            {
                Ok(()) => {}
                Err(Closed::WrongNumber) => {
                    // The request is closed: stored, so that its login ends.
                    return match self.put(&user, &record, &next) {
                        Ok(true) => {
                            warn!(
                                target: "otpd::audit",
                                user = ?user,
                                device = ?phone.name,
                                peer = ?peer,
                                op = "approve",
                                outcome = "wrong_number",
                            );
                            Some(closed(Closed::WrongNumber))
                        }
                        Ok(false) => None,
                        Err(reply) => Some(reply),
                    };
                }
                Err(c) => return Some(closed(c)),
            }
            let passkey: Passkey = match serde_json::from_str(&phone.passkey) {
                Ok(p) => p,
                Err(e) => return Some(failed(internal(format!("stored passkey: {e}")))),
            };
            let (options, state) = match parts.webauthn.start_passkey_authentication(&[passkey]) {
                Ok(started) => started,
                Err(e) => return Some(failed(internal(format!("passkey challenge: {e}")))),
            };
            let state = match serde_json::to_string(&state) {
                Ok(s) => s,
                Err(e) => return Some(failed(internal(e.to_string()))),
            };
            if let Err(c) = next
                .approvals
                .set_challenge(&call.request, &phone.name, state)
            {
                return Some(closed(c));
            }
            match self.put(&user, &record, &next) {
                Ok(true) => Some(ok(serde_json::to_value(&options).unwrap_or_default())),
                Ok(false) => None,
                Err(reply) => Some(reply),
            }
        }))
    }

    fn approve_finish(
        &self,
        parts: &ApproveParts,
        body: &[u8],
        peer: &str,
    ) -> Result<ApiReply, ApiReply> {
        let call: Finish = parse(body)?;
        Ok(self.api_retries(|| {
            let (user, record, phone) = match self.app_phone(&call.app_token) {
                Ok(found) => found,
                Err(reply) => return Some(reply),
            };
            let now = self.now();
            let state = match record.approvals.challenge(&call.request, &phone.name, now) {
                Ok(state) => state,
                Err(c) => {
                    approve_audit(&user, &phone.name, peer, "approve", "no_challenge");
                    return Some(closed(c));
                }
            };
            let state: PasskeyAuthentication = match serde_json::from_str(state) {
                Ok(s) => s,
                Err(e) => return Some(failed(internal(format!("challenge state: {e}")))),
            };
            let mut passkey: Passkey = match serde_json::from_str(&phone.passkey) {
                Ok(p) => p,
                Err(e) => return Some(failed(internal(format!("stored passkey: {e}")))),
            };
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            let verified = parts
                .webauthn
                .finish_passkey_authentication(&call.credential, &state)
                .map_err(|e| e.to_string())
                .and_then(|result| {
                    if counter_advanced(&phone.passkey, result.counter()) {
                        Ok(result)
                    } else {
                        Err("the signature counter did not advance (a cloned passkey?)".to_owned())
                    }
                });
            let result = match verified {
                Ok(result) => result,
                Err(e) => {
                    // One try per challenge: a failed assertion uses it up.
                    next.approvals.drop_challenge(&call.request);
                    return match self.put(&user, &record, &next) {
                        Ok(true) => {
                            warn!(
                                target: "otpd::audit",
                                user = ?user,
                                device = ?phone.name,
                                peer = ?peer,
                                op = "approve",
                                outcome = "assertion_refused",
                                "{e}"
                            );
                            Some(refused(
                                403,
                                &format!("the passkey's answer was not accepted: {e}"),
                            ))
                        }
                        Ok(false) => None,
                        Err(reply) => Some(reply),
                    };
                }
            };
            passkey.update_credential(&result);
            let passkey = match serde_json::to_string(&passkey) {
                Ok(p) => p,
                Err(e) => return Some(failed(internal(e.to_string()))),
            };
            if let Err(c) = next
                .approvals
                .approve(&call.request, &phone.name, passkey, now)
            {
                return Some(closed(c));
            }
            match self.put(&user, &record, &next) {
                Ok(true) => {
                    approve_audit(&user, &phone.name, peer, "approve", "approved");
                    Some(ok(json!({ "outcome": "approved" })))
                }
                Ok(false) => None,
                Err(reply) => Some(reply),
            }
        }))
    }

    fn app_deny(&self, body: &[u8], peer: &str) -> Result<ApiReply, ApiReply> {
        let call: Deny = parse(body)?;
        Ok(self.api_retries(|| {
            let (user, record, phone) = match self.app_phone(&call.app_token) {
                Ok(found) => found,
                Err(reply) => return Some(reply),
            };
            let mut next = record.clone();
            next.version = record.version.wrapping_add(1);
            let request = record.approvals.request(&call.request).cloned();
            if let Err(c) = next
                .approvals
                .deny(&call.request, &phone.name, call.not_me, self.now())
            {
                return Some(closed(c));
            }
            match self.put(&user, &record, &next) {
                Ok(true) => {
                    // The line an admin alerts on.
                    let (service, rhost) =
                        request.map(|r| (r.service, r.source)).unwrap_or_default();
                    warn!(
                        target: "otpd::audit",
                        user = ?user,
                        device = ?phone.name,
                        peer = ?peer,
                        service = ?service,
                        rhost = ?rhost,
                        not_me = call.not_me,
                        op = "approve",
                        outcome = "denied",
                    );
                    Some(ok(json!({ "outcome": "denied" })))
                }
                Ok(false) => None,
                Err(reply) => Some(reply),
            }
        }))
    }
}

/// The peer's address without the port.
fn peer_address(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| peer.to_owned())
}

/// Whether an assertion's signature `counter` is above the one stored with
/// the phone's passkey (`passkey`: the stored `Passkey`, JSON), when
/// either is not zero (WebAuthn §7.2 step 21). webauthn-rs checks the
/// counter against the copy of the passkey taken with the challenge; a
/// later approval may have raised the stored one since (a cloned passkey
/// answering a challenge issued before the original's use).
fn counter_advanced(passkey: &str, counter: u32) -> bool {
    let stored = serde_json::from_str::<Value>(passkey)
        .ok()
        .and_then(|p| p["cred"]["counter"].as_u64());
    match stored {
        Some(stored) => (counter == 0 && stored == 0) || u64::from(counter) > stored,
        // A passkey whose counter cannot be read: refused, not waved through.
        None => false,
    }
}
