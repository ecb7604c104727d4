//! The phone app that approves sign-ins: its pages (the pairing link's
//! page, the app's home), its static files (one small script, the service
//! worker, the web app manifest, icons, a stylesheet) and its JSON API,
//! served by the pages' router under `/approve/`.
//!
//! | request                          | answer                                   |
//! |----------------------------------|------------------------------------------|
//! | `GET /approve/pair/{token}`      | `#pair` (live link), else 303 to `/approve/` |
//! | `GET /approve/pair/{token}/manifest.webmanifest` | the manifest, opening that page |
//! | `GET /approve/`                  | `#app`                                   |
//! | `GET /approve/app.js`, `sw.js`, `manifest.webmanifest`, `approve.css`, `icon-*.png` | the file |
//! | `POST /approve/api/{call}`       | JSON ([`EnrollBackend::approve_api`])    |
//!
//! These pages run the one script otpd serves, from itself: their
//! Content-Security-Policy allows `script-src 'self'` (and the service
//! worker, the manifest, `connect-src 'self'` for the API); every other
//! page keeps its policy without scripts.

use super::backend::EnrollBackend;
use super::lang::Lang;
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

pub mod texts;

use texts::ApproveTexts;

/// The API's largest request: a passkey's registration with a push
/// subscription (a few KiB with an attestation).
pub const MAX_API_BODY_BYTES: usize = 16 * 1024;

/// The policy of the app's pages: scripts, workers, the manifest and API
/// calls from otpd itself only; nothing from elsewhere.
pub const APP_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; \
    manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("app.js");
const SERVICE_WORKER: &str = include_str!("sw.js");
const MANIFEST: &str = include_str!("manifest.webmanifest");
const STYLESHEET: &str = include_str!("approve.css");
const ICON_192: &[u8] = include_bytes!("icon-192.png");
const ICON_512: &[u8] = include_bytes!("icon-512.png");

/// The texts of the app in `lang`.
fn texts(lang: Lang) -> &'static ApproveTexts {
    match lang {
        Lang::En => &texts::EN,
        Lang::Nl => &texts::NL,
    }
}

/// `<main id="pair">`: "Add to home screen", "Turn on sign-in approvals".
#[derive(Template)]
#[template(path = "approve_pair.html")]
struct PairPage<'a> {
    lang: &'static str,
    t: &'static ApproveTexts,
    token: &'a str,
}

/// `<main id="app">`: the open requests (filled in by the script).
#[derive(Template)]
#[template(path = "approve_app.html")]
struct AppPage {
    lang: &'static str,
    t: &'static ApproveTexts,
}

fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => with_app_policy((StatusCode::OK, Html(html)).into_response()),
        Err(e) => {
            tracing::error!("cannot render the approval page: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The app's policy on `response` (the router's header layer keeps it).
fn with_app_policy(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(APP_CONTENT_SECURITY_POLICY),
    );
    response
}

/// The pairing link's page, or `None` for a dead link (the caller answers
/// with the neutral page).
pub fn pair_page(lang: Lang, backend: &dyn EnrollBackend, token: &str) -> Option<Response> {
    backend.pairing_live(token).then(|| {
        page(&PairPage {
            lang: lang.code(),
            t: texts(lang),
            token,
        })
    })
}

/// The app's home.
pub fn app_page(lang: Lang) -> Response {
    page(&AppPage {
        lang: lang.code(),
        t: texts(lang),
    })
}

/// One of the app's static files, or `None`.
pub fn asset(Path(name): Path<String>) -> Option<Response> {
    let (kind, body): (&'static str, Bytes) = match name.as_str() {
        "app.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(APP_JS.as_bytes()),
        ),
        "sw.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(SERVICE_WORKER.as_bytes()),
        ),
        "manifest.webmanifest" => (
            "application/manifest+json",
            Bytes::from_static(MANIFEST.as_bytes()),
        ),
        "approve.css" => (
            "text/css; charset=utf-8",
            Bytes::from_static(STYLESHEET.as_bytes()),
        ),
        "icon-192.png" => ("image/png", Bytes::from_static(ICON_192)),
        "icon-512.png" => ("image/png", Bytes::from_static(ICON_512)),
        _ => return None,
    };
    Some(with_app_policy(
        ([(header::CONTENT_TYPE, kind)], body).into_response(),
    ))
}

/// The manifest of the app installed from the pairing page of `token`: it
/// opens that page, so that an app with storage of its own (a home-screen
/// app on an iPhone) pairs itself; once the link is used, the page sends
/// it on to the app's home. `None` for a token that is no token.
pub fn pair_manifest(token: &str) -> Option<Response> {
    if token.is_empty()
        || token.len() > 64
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let mut manifest: serde_json::Value = serde_json::from_str(MANIFEST).ok()?;
    manifest["start_url"] = serde_json::json!(format!("/approve/pair/{token}"));
    Some(with_app_policy(
        (
            [(header::CONTENT_TYPE, "application/manifest+json")],
            manifest.to_string(),
        )
            .into_response(),
    ))
}

/// Where a used or unknown pairing link sends the browser: the app's home
/// (an installed app opens its pairing link; see [`pair_manifest`]).
pub fn to_app_home() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/approve/")]).into_response()
}

/// The JSON answer of an API call.
pub fn api_reply(status: u16, body: &serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_app_policy(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}
