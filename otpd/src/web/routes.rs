//! The routes: which page answers which request, the security headers on
//! every response, the body cap, the per-client request limit, the
//! request timeout, and the neutral page for everything else.
//!
//! | request                        | backend        | page                                         |
//! |--------------------------------|----------------|----------------------------------------------|
//! | `GET /enroll/{token}`          | `view`         | `#enrol` (no secret) or `#invalid`           |
//! | `POST /enroll/{token}/reveal`  | `reveal`       | `#enrol` with `#qr`, `#enrol` + `#error`, `#invalid` |
//! | `POST /enroll/{token}`         | `validate`     | `#success`, `#enrol` + `#error`, `#invalid`  |
//! | `POST /phone`                  | `phone_send`   | `#phone-code`, `#phone` + `#error`, `#invalid` |
//! | `POST /phone/verify`           | `phone_verify` | `#phone-done`, `#phone-code` + `#error`, `#invalid` |
//! | `GET /otpd.css`                | —              | the stylesheet                               |
//! | `/approve/…`                   | `pairing_live`, `approve_api` | the phone app (`approve/mod.rs`) |
//! | anything else                  | —              | `#invalid`, 404                              |
//!
//! A GET never shows the secret: link scanners, proxies and the browser's
//! history only ever see GETs. The QR code is the answer to a POST that
//! carries the one-time nonce of the page it was pressed on.
//!
//! Before any of that, each request takes one from its client's allowance
//! ([`RequestLimiter`]; 429 when it is used up) and must be done within
//! [`PageLimits::body_timeout`] of its headers (408, connection closed);
//! backend work runs on the pages' own [`PagePool`] (503 when it is full).

use super::approve;
use super::backend::{EnrollBackend, LinkView, PhoneStep, Reveal, Validation};
use super::lang::Lang;
use super::limits::{Busy, ClientKey, PageLimits, PagePool, RequestLimiter};
use super::pages;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use otpd_proto::SecretText;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Request bodies larger than this are refused (with the neutral page):
/// the largest form holds a session token and a phone number.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// The stylesheet, served as `/otpd.css` (a `<style>` element would need
/// `'unsafe-inline'` in the Content-Security-Policy).
const STYLESHEET: &str = include_str!("otpd.css");

/// No scripts, no frames, no other origins: styles from ourselves, the QR
/// code inline, forms posted only back to us.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
    img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Over TLS: browsers use only HTTPS for this host for a year. Not sent
/// over plain HTTP (RFC 6797 §7.2: a browser ignores it there anyway).
const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// How the pages are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageOptions {
    /// Served over TLS: send `Strict-Transport-Security`.
    pub tls: bool,
    /// The per-client and pool limits.
    pub limits: PageLimits,
}

/// What every route shares.
struct Pages {
    backend: Arc<dyn EnrollBackend>,
    pool: PagePool,
    requests: RequestLimiter,
    options: PageOptions,
    overload: Overload,
}

type Shared = Arc<Pages>;

/// Requests refused for load, logged as a count at most once a minute
/// (a line per refusal would let a flood fill the log).
#[derive(Default)]
struct Overload {
    too_many: AtomicU64,
    busy: AtomicU64,
    last_logged: Mutex<Option<Instant>>,
}

impl Overload {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self
            .last_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60)) {
            return;
        }
        *last = Some(now);
        let too_many = self.too_many.swap(0, Ordering::Relaxed);
        let busy = self.busy.swap(0, Ordering::Relaxed);
        tracing::warn!(
            too_many,
            busy,
            "enrolment pages under load: requests refused since the last such line \
             (too_many: over a client's allowance, 429; busy: the pages' threads full, 503)"
        );
    }
}

/// The pages as an axum `Router`, with the headers, the body cap, the
/// limits and the neutral fallback; `Err` when the pages' threads cannot
/// be started. The client's address is taken from
/// `ConnectInfo<SocketAddr>` when the server provides it (see
/// [`super::serve`]); without it the backend is told `"unknown"`.
pub fn router(backend: Arc<dyn EnrollBackend>, options: PageOptions) -> std::io::Result<Router> {
    let limits = options.limits;
    let shared = Arc::new(Pages {
        backend,
        pool: PagePool::new(limits.workers, limits.queue)?,
        requests: RequestLimiter::new(limits),
        options,
        overload: Overload::default(),
    });
    Ok(Router::new()
        .route("/enroll/{token}", get(enroll_page).post(enroll_validate))
        .route("/enroll/{token}/reveal", post(enroll_reveal))
        .route("/phone", post(phone_send))
        .route("/phone/verify", post(phone_verify))
        .route("/otpd.css", get(stylesheet))
        .route("/approve/", get(approve_app))
        .route("/approve/pair/{token}", get(approve_pair))
        .route(
            "/approve/pair/{token}/manifest.webmanifest",
            get(approve_pair_manifest),
        )
        .route(
            "/approve/api/{*call}",
            post(approve_api).layer(DefaultBodyLimit::max(approve::MAX_API_BODY_BYTES)),
        )
        .route("/approve/{file}", get(approve_asset))
        .fallback(neutral)
        .method_not_allowed_fallback(neutral)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            limit_and_time,
        ))
        .layer(middleware::map_response_with_state(
            Arc::clone(&shared),
            security_headers,
        ))
        .with_state(shared))
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok());
        Ok(Lang::from_accept_language(header))
    }
}

/// The client's IP address for the backend's audit lines and rate limits.
/// Only the address: the port changes with every connection, and a rate
/// limit per (address, port) would limit nothing.
struct Peer(String);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(address)) => address.ip().to_canonical().to_string(),
            None => "unknown".to_owned(),
        };
        Ok(Peer(peer))
    }
}

/// Each request takes one from its client's allowance, and must be done
/// (body read, page made) within the body timeout.
async fn limit_and_time(
    State(pages): State<Shared>,
    lang: Lang,
    request: Request,
    next: Next,
) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(a)| a.ip());
    if let Err(wait) = pages
        .requests
        .check(ClientKey::from(address), Instant::now())
    {
        pages.overload.count(&pages.overload.too_many);
        return pages::too_many_requests(lang, wait.as_secs().max(1));
    }
    match tokio::time::timeout(pages.options.limits.body_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            // The body did not arrive in time (or the answer took too
            // long): the connection is closed, not kept for another try.
            let mut response = pages::invalid_with_status(lang, StatusCode::REQUEST_TIMEOUT);
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

#[derive(Deserialize)]
struct CodeForm {
    code: SecretText,
}

#[derive(Deserialize)]
struct RevealForm {
    #[serde(default)]
    view: String,
}

#[derive(Deserialize)]
struct PhoneForm {
    session: String,
    number: String,
}

#[derive(Deserialize)]
struct PhoneCodeForm {
    session: String,
    code: SecretText,
}

/// Runs blocking backend work on the pages' own threads. Busy threads
/// give the "busy" page at once; a panic in the backend gives the neutral
/// page with status 500.
async fn on_pool<T: Send + 'static>(
    pages: &Shared,
    lang: Lang,
    work: impl FnOnce(&dyn EnrollBackend) -> T + Send + 'static,
) -> Result<T, Response> {
    let backend = Arc::clone(&pages.backend);
    match pages.pool.run(move || work(backend.as_ref())).await {
        Ok(Some(result)) => Ok(result),
        Ok(None) => {
            tracing::error!("the enrolment backend failed");
            Err(pages::invalid_with_status(
                lang,
                StatusCode::INTERNAL_SERVER_ERROR,
            ))
        }
        Err(Busy) => {
            pages.overload.count(&pages.overload.busy);
            Err(pages::busy(lang))
        }
    }
}

/// Codes as apps show them ("123 456") or as pasted: without spaces.
fn without_spaces(code: &SecretText) -> zeroize::Zeroizing<String> {
    // Sized once (filtering only shrinks): no unwiped copy is left behind.
    let mut out = zeroize::Zeroizing::new(String::with_capacity(code.expose().len()));
    out.extend(code.expose().chars().filter(|c| !c.is_whitespace()));
    out
}

/// The page of a link (GET): the steps and the "Show QR code" form with a
/// new view's nonce; never the secret.
async fn enroll_page(
    State(pages): State<Shared>,
    lang: Lang,
    Peer(peer): Peer,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(token)) = token else {
        return pages::invalid(lang);
    };
    tracing::debug!("enroll page view");
    let action = format!("/enroll/{token}");
    match on_pool(&pages, lang, move |b| b.view(&token, &peer)).await {
        Ok(Some(view)) => pages::enroll(lang, &action, &view, None, StatusCode::OK),
        Ok(None) => pages::invalid(lang),
        Err(failed) => failed,
    }
}

/// "Show QR code": a new secret on a page of its own; a form that is not
/// a live view of this link's page gets the page again (with a new view).
async fn enroll_reveal(
    State(pages): State<Shared>,
    lang: Lang,
    Peer(peer): Peer,
    token: Result<Path<String>, PathRejection>,
    form: Result<Form<RevealForm>, FormRejection>,
) -> Response {
    let Ok(Path(token)) = token else {
        return pages::invalid(lang);
    };
    tracing::debug!("enroll page reveal");
    let view = form.map(|Form(f)| f.view).unwrap_or_default();
    let action = format!("/enroll/{token}");
    let outcome = on_pool(&pages, lang, move |b| {
        let reveal = b.reveal(&token, &view, &peer);
        let again = match reveal {
            Reveal::StaleView => b.view(&token, &peer),
            _ => None,
        };
        (reveal, again)
    })
    .await;
    match outcome {
        Ok((Reveal::Shown(enrollment), _)) => pages::revealed(lang, &action, &enrollment),
        Ok((Reveal::StaleView, Some(view))) => pages::enroll(
            lang,
            &action,
            &view,
            Some(lang.texts().stale_view.to_owned()),
            StatusCode::OK,
        ),
        // Invalid, or the link died between the reveal and the view.
        Ok(_) => pages::invalid(lang),
        Err(failed) => failed,
    }
}

async fn enroll_validate(
    State(pages): State<Shared>,
    lang: Lang,
    Peer(peer): Peer,
    token: Result<Path<String>, PathRejection>,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let (Ok(Path(token)), Ok(Form(form))) = (token, form) else {
        return pages::invalid(lang);
    };
    tracing::debug!("enroll code validation");
    let action = format!("/enroll/{token}");
    let code = without_spaces(&form.code);
    let outcome = on_pool(&pages, lang, move |b| {
        let validation = b.validate(&token, &code, &peer);
        // A wrong code shows the page again: with a new view, not the
        // secret (a POST of any code must not show it).
        let again = match validation {
            Validation::WrongCode | Validation::Throttled { .. } => b.view(&token, &peer),
            _ => None,
        };
        (validation, again)
    })
    .await;
    let (validation, again): (Validation, Option<LinkView>) = match outcome {
        Ok(outcome) => outcome,
        Err(failed) => return failed,
    };
    match (validation, again) {
        (
            Validation::Activated {
                user,
                recovery_codes,
                phone_session,
                pairing_url,
            },
            _,
        ) => pages::success(
            lang,
            &user,
            &recovery_codes,
            phone_session.as_deref(),
            pairing_url.as_deref(),
        ),
        (Validation::WrongCode, Some(view)) => pages::enroll(
            lang,
            &action,
            &view,
            Some(lang.texts().wrong_code.to_owned()),
            StatusCode::OK,
        ),
        (Validation::Throttled { retry_after }, Some(view)) => pages::with_retry_after(
            pages::enroll(
                lang,
                &action,
                &view,
                Some(lang.throttled(retry_after)),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            retry_after,
        ),
        // Invalid, or the link died between the check and the view.
        _ => pages::invalid(lang),
    }
}

async fn phone_send(
    State(pages): State<Shared>,
    lang: Lang,
    Peer(peer): Peer,
    form: Result<Form<PhoneForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return pages::invalid(lang);
    };
    tracing::debug!("enroll phone number");
    let PhoneForm { session, number } = form;
    let number = number.trim().to_owned();
    let step = {
        let (session, number) = (session.clone(), number.clone());
        on_pool(&pages, lang, move |b| {
            b.phone_send(&session, &number, &peer)
        })
        .await
    };
    let t = lang.texts();
    match step {
        Ok(PhoneStep::Sent) => pages::phone_code(lang, &session, None, StatusCode::OK),
        Ok(PhoneStep::BadNumber) => pages::phone(
            lang,
            &session,
            &number,
            t.bad_number.to_owned(),
            StatusCode::OK,
        ),
        Ok(PhoneStep::SendFailed) => pages::phone(
            lang,
            &session,
            &number,
            t.send_failed.to_owned(),
            StatusCode::OK,
        ),
        Ok(PhoneStep::Limited { retry_after }) => pages::with_retry_after(
            pages::phone(
                lang,
                &session,
                &number,
                lang.sms_limited(retry_after),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            retry_after,
        ),
        Ok(PhoneStep::Invalid) => pages::invalid(lang),
        Ok(other) => {
            tracing::warn!("unexpected answer to sending a text message: {other:?}");
            pages::invalid(lang)
        }
        Err(failed) => failed,
    }
}

async fn phone_verify(
    State(pages): State<Shared>,
    lang: Lang,
    Peer(peer): Peer,
    form: Result<Form<PhoneCodeForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return pages::invalid(lang);
    };
    tracing::debug!("enroll phone code");
    let PhoneCodeForm { session, code } = form;
    let code = without_spaces(&code);
    let step = {
        let session = session.clone();
        on_pool(&pages, lang, move |b| {
            b.phone_verify(&session, &code, &peer)
        })
        .await
    };
    match step {
        Ok(PhoneStep::Registered) => pages::phone_done(lang),
        Ok(PhoneStep::WrongCode) => pages::phone_code(
            lang,
            &session,
            Some(lang.texts().phone_wrong_code.to_owned()),
            StatusCode::OK,
        ),
        Ok(PhoneStep::Limited { retry_after }) => pages::with_retry_after(
            pages::phone_code(
                lang,
                &session,
                Some(lang.throttled(retry_after)),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            retry_after,
        ),
        Ok(PhoneStep::Invalid) => pages::invalid(lang),
        Ok(other) => {
            tracing::warn!("unexpected answer to a texted code: {other:?}");
            pages::invalid(lang)
        }
        Err(failed) => failed,
    }
}

/// The pairing link's page (GET): nothing is changed by it.
async fn approve_pair(
    State(pages): State<Shared>,
    lang: Lang,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(token)) = token else {
        return pages::invalid(lang);
    };
    let shown = on_pool(&pages, lang, move |b| approve::pair_page(lang, b, &token)).await;
    match shown {
        Ok(Some(page)) => page,
        // Used, expired or unknown: the app's home, which says whether this
        // browser holds a paired app.
        Ok(None) => approve::to_app_home(),
        Err(failed) => failed,
    }
}

async fn approve_pair_manifest(lang: Lang, token: Result<Path<String>, PathRejection>) -> Response {
    token
        .ok()
        .and_then(|Path(token)| approve::pair_manifest(&token))
        .unwrap_or_else(|| pages::invalid(lang))
}

async fn approve_app(lang: Lang) -> Response {
    approve::app_page(lang)
}

async fn approve_asset(lang: Lang, file: Path<String>) -> Response {
    approve::asset(file).unwrap_or_else(|| pages::invalid(lang))
}

/// A call of the phone app's API: JSON in, JSON out.
async fn approve_api(
    State(pages): State<Shared>,
    lang: Lang,
    Peer(peer): Peer,
    call: Result<Path<String>, PathRejection>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (Ok(Path(call)), Ok(body)) = (call, body) else {
        return approve::api_reply(
            400,
            &serde_json::json!({ "error": "the request's body is too large or unreadable" }),
        );
    };
    let reply = on_pool(&pages, lang, move |b| {
        b.approve_api(&call, &body, &peer, lang.code())
    })
    .await;
    match reply {
        Ok(reply) => approve::api_reply(reply.status, &reply.body),
        Err(failed) => failed,
    }
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}

/// Every other path, method or form: the same page as a dead link.
async fn neutral(lang: Lang) -> Response {
    tracing::debug!("enroll neutral page");
    pages::invalid(lang)
}

async fn security_headers(State(pages): State<Shared>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if pages.options.tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    // The phone app's pages set their own policy (scripts from otpd
    // itself, `approve/mod.rs`); every other answer gets the one without.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    let fixed: [(HeaderName, &'static str); 4] = [
        // The pages hold a secret and recovery codes: never keep them.
        (header::CACHE_CONTROL, "no-store"),
        // The link itself is the credential: never send it on.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
