//! The routes: which page answers which request, the security headers on
//! every response, the body cap, and the neutral page for everything else.
//!
//! | request                 | backend          | page                         |
//! |-------------------------|------------------|------------------------------|
//! | `GET /enroll/{token}`   | `view`           | `#enrol` or `#invalid`       |
//! | `POST /enroll/{token}`  | `validate`       | `#success`, `#enrol` + `#error`, `#invalid` |
//! | `POST /phone`           | `phone_send`     | `#phone-code`, `#phone` + `#error`, `#invalid` |
//! | `POST /phone/verify`    | `phone_verify`   | `#phone-done`, `#phone-code` + `#error`, `#invalid` |
//! | `GET /otpd.css`         | —                | the stylesheet               |
//! | anything else           | —                | `#invalid`, 404              |

use super::backend::{EnrolBackend, PhoneStep, Validation};
use super::lang::Lang;
use super::pages;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Form, Router};
use otpd_proto::SecretText;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

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

type Backend = Arc<dyn EnrolBackend>;

/// The pages as an axum `Router`, with the headers, the body cap and the
/// neutral fallback. The client's address is taken from
/// `ConnectInfo<SocketAddr>` when the server provides it (see
/// [`super::serve`]); without it the backend is told `"unknown"`.
pub fn router(backend: Arc<dyn EnrolBackend>) -> Router {
    Router::new()
        .route("/enroll/{token}", get(enrol_page).post(enrol_validate))
        .route("/phone", post(phone_send))
        .route("/phone/verify", post(phone_verify))
        .route("/otpd.css", get(stylesheet))
        .fallback(neutral)
        .method_not_allowed_fallback(neutral)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(security_headers))
        .with_state(backend)
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

#[derive(Deserialize)]
struct CodeForm {
    code: SecretText,
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

/// Runs a blocking backend call off the async workers. A panic in the
/// backend becomes the neutral page with status 500.
async fn blocking<T: Send + 'static>(
    lang: Lang,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!("the enrolment backend failed: {e}");
        pages::invalid_with_status(lang, StatusCode::INTERNAL_SERVER_ERROR)
    })
}

/// Codes as apps show them ("123 456") or as pasted: without spaces.
fn without_spaces(code: &SecretText) -> zeroize::Zeroizing<String> {
    // Sized once (filtering only shrinks): no unwiped copy is left behind.
    let mut out = zeroize::Zeroizing::new(String::with_capacity(code.expose().len()));
    out.extend(code.expose().chars().filter(|c| !c.is_whitespace()));
    out
}

async fn enrol_page(
    State(backend): State<Backend>,
    lang: Lang,
    Peer(peer): Peer,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(token)) = token else {
        return pages::invalid(lang);
    };
    tracing::debug!("enroll page view");
    let action = format!("/enroll/{token}");
    let view = blocking(lang, move || backend.view(&token, &peer)).await;
    match view {
        Ok(Some(enrolment)) => pages::enrol(lang, &action, &enrolment, None, StatusCode::OK),
        Ok(None) => pages::invalid(lang),
        Err(failed) => failed,
    }
}

async fn enrol_validate(
    State(backend): State<Backend>,
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
    let outcome = blocking(lang, move || {
        let validation = backend.validate(&token, &code, &peer);
        // A wrong code shows the page again, so the QR code is needed again.
        let again = match validation {
            Validation::WrongCode | Validation::Throttled { .. } => backend.view(&token, &peer),
            _ => None,
        };
        (validation, again)
    })
    .await;
    let (validation, again) = match outcome {
        Ok(outcome) => outcome,
        Err(failed) => return failed,
    };
    match (validation, again) {
        (
            Validation::Activated {
                user,
                recovery_codes,
                phone_session,
            },
            _,
        ) => pages::success(lang, &user, &recovery_codes, phone_session.as_deref()),
        (Validation::WrongCode, Some(enrolment)) => pages::enrol(
            lang,
            &action,
            &enrolment,
            Some(lang.texts().wrong_code.to_owned()),
            StatusCode::OK,
        ),
        (Validation::Throttled { retry_after }, Some(enrolment)) => pages::with_retry_after(
            pages::enrol(
                lang,
                &action,
                &enrolment,
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
    State(backend): State<Backend>,
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
        blocking(lang, move || backend.phone_send(&session, &number, &peer)).await
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
    State(backend): State<Backend>,
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
        blocking(lang, move || backend.phone_verify(&session, &code, &peer)).await
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

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 5] = [
        // The pages hold a secret and recovery codes: never keep them.
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
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
