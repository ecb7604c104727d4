//! The pages through the router (tower's `oneshot`) and the server over
//! TCP and TLS, against a scripted backend. The daemon's real backend is
//! tested with the daemon; here only the HTTP side counts.

use super::backend::{EnrollBackend, LinkView, PageEnrolment, PhoneStep, Reveal, Validation};
use super::limits::PageLimits;
use super::*;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const TOKEN: &str = "k7Qz2xN9pLm4Rt8vWc3yHb6sDf1gJa5e";
/// The nonce of the scripted page's view.
const VIEW: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// A view whose reveal says the link was opened before (at [`OPENED`]).
const VIEW_AGAIN: &str = "00112233445566778899aabbccddeeff";
const OPENED: u64 = 1_796_443_380;
const SESSION: &str = "phone-session-4f9a";
const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const GOOD_CODE: &str = "123456";
const WRONG_CODE: &str = "111111";
const THROTTLED_CODE: &str = "222222";
const SMS_CODE: &str = "654321";

/// Answers by token, code and number; records every call.
struct ScriptedBackend {
    sms: bool,
    issuer: String,
    calls: Mutex<Vec<String>>,
}

impl ScriptedBackend {
    fn new(sms: bool) -> Arc<Self> {
        Arc::new(Self {
            sms,
            issuer: "Hupra ICT".into(),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn with_issuer(issuer: &str) -> Arc<Self> {
        Arc::new(Self {
            sms: false,
            issuer: issuer.into(),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl EnrollBackend for ScriptedBackend {
    fn view(&self, token: &str, peer: &str) -> Option<LinkView> {
        self.record(format!("view {token} {peer}"));
        (token == TOKEN).then(|| LinkView {
            user: "alice".into(),
            issuer: self.issuer.clone(),
            digits: 6,
            view: VIEW.into(),
            opened_before: None,
        })
    }

    fn reveal(&self, token: &str, view: &str, peer: &str) -> Reveal {
        self.record(format!("reveal {token} {view} {peer}"));
        if token != TOKEN {
            return Reveal::Invalid;
        }
        let opened_before = match view {
            VIEW => None,
            VIEW_AGAIN => Some(OPENED),
            _ => return Reveal::StaleView,
        };
        Reveal::Shown(PageEnrolment {
            user: "alice".into(),
            issuer: self.issuer.clone(),
            secret_base32: SECRET.into(),
            uri: format!("otpauth://totp/otpd:alice?secret={SECRET}&issuer=otpd"),
            digits: 6,
            opened_before,
        })
    }

    fn validate(&self, token: &str, code: &str, peer: &str) -> Validation {
        self.record(format!("validate {token} {code} {peer}"));
        if token != TOKEN {
            return Validation::Invalid;
        }
        match code {
            GOOD_CODE => Validation::Activated {
                user: "alice".into(),
                recovery_codes: vec!["ABCD-EFGH-JKLM".into(), "NPQR-STUV-WXYZ".into()],
                phone_session: self.sms.then(|| SESSION.to_owned()),
                pairing_url: None,
            },
            THROTTLED_CODE => Validation::Throttled { retry_after: 120 },
            _ => Validation::WrongCode,
        }
    }

    fn sms_enabled(&self) -> bool {
        self.sms
    }

    fn phone_send(&self, session: &str, number: &str, peer: &str) -> PhoneStep {
        self.record(format!("phone_send {session} {number} {peer}"));
        if session != SESSION {
            return PhoneStep::Invalid;
        }
        match number {
            "+31612345678" => PhoneStep::Sent,
            "+31000000000" => PhoneStep::SendFailed,
            "+31999999999" => PhoneStep::Limited { retry_after: 2400 },
            _ => PhoneStep::BadNumber,
        }
    }

    fn phone_verify(&self, session: &str, code: &str, peer: &str) -> PhoneStep {
        self.record(format!("phone_verify {session} {code} {peer}"));
        if session != SESSION {
            return PhoneStep::Invalid;
        }
        match code {
            SMS_CODE => PhoneStep::Registered,
            _ => PhoneStep::WrongCode,
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(app: Router, request: Request<Body>) -> Answer {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn get(path: &str, language: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(language) = language {
        request = request.header(header::ACCEPT_LANGUAGE, language);
    }
    request.body(Body::empty()).unwrap()
}

fn post(path: &str, form: &str, language: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(language) = language {
        request = request.header(header::ACCEPT_LANGUAGE, language);
    }
    request.body(Body::from(form.to_owned())).unwrap()
}

fn enroll_path() -> String {
    format!("/enroll/{TOKEN}")
}

fn reveal_path() -> String {
    format!("/enroll/{TOKEN}/reveal")
}

/// The pages with the daemon's limits.
fn app(backend: Arc<dyn EnrollBackend>) -> Router {
    router(backend, PageOptions::default()).unwrap()
}

/// The pages with `limits`.
fn app_with(backend: Arc<dyn EnrollBackend>, limits: PageLimits) -> Router {
    router(
        backend,
        PageOptions {
            limits,
            ..PageOptions::default()
        },
    )
    .unwrap()
}

/// A request as if from `address` (what the server adds to each request).
fn from(address: &str, mut request: Request<Body>) -> Request<Body> {
    let peer: std::net::SocketAddr = address.parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    request
}

/// A page must hold no secret: no QR code, no key, no otpauth URI.
fn assert_no_secret(body: &str, what: &str) {
    for needle in [
        "<svg",
        "id=\"qr\"",
        "id=\"secret\"",
        "otpauth",
        SECRET,
        "JBSW Y3DP",
    ] {
        assert!(!body.contains(needle), "{what}: {needle:?} in\n{body}");
    }
}

fn assert_security_headers(answer: &Answer, what: &str) {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("cache-control"), "no-store", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    let policy = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{what}: {policy}");
    }
    assert!(!policy.contains("unsafe"), "{what}: {policy}");
    assert!(!policy.contains("script-src"), "{what}: {policy}");
}

/// The text between `<tag ... id="ID"...>` and the next `</tag>`.
fn element<'a>(body: &'a str, tag: &str, id: &str) -> &'a str {
    let start = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in:\n{body}"));
    let open = body[..start].rfind(&format!("<{tag}")).unwrap();
    let end = body[start..].find(&format!("</{tag}>")).unwrap() + start;
    &body[open..end]
}

#[tokio::test]
async fn every_kind_of_response_has_the_security_headers() {
    let backend = ScriptedBackend::new(true);
    let requests = [
        ("enrolment page", get(&enroll_path(), None)),
        (
            "revealed page",
            post(&reveal_path(), &format!("view={VIEW}"), None),
        ),
        ("stale view", post(&reveal_path(), "view=old", None)),
        ("neutral page", get("/enroll/nope", None)),
        ("random path", get("/", None)),
        ("stylesheet", get("/otpd.css", None)),
        (
            "wrong method",
            Request::delete(enroll_path()).body(Body::empty()).unwrap(),
        ),
        ("wrong code", post(&enroll_path(), "code=111111", None)),
        ("throttled", post(&enroll_path(), "code=222222", None)),
        ("success", post(&enroll_path(), "code=123456", None)),
        (
            "phone code",
            post(
                "/phone",
                &format!("session={SESSION}&number=%2B31612345678"),
                None,
            ),
        ),
        (
            "phone error",
            post("/phone", &format!("session={SESSION}&number=0612"), None),
        ),
        (
            "phone done",
            post(
                "/phone/verify",
                &format!("session={SESSION}&code=654321"),
                None,
            ),
        ),
        (
            "oversized",
            post(&enroll_path(), &"code=1".repeat(2000), None),
        ),
        ("bad form", post(&enroll_path(), "nothing=here", None)),
    ];
    for (what, request) in requests {
        let answer = send(app(backend.clone()), request).await;
        assert_security_headers(&answer, what);
    }
}

#[tokio::test]
async fn the_neutral_page_is_the_same_for_every_dead_end() {
    let backend = ScriptedBackend::new(true);
    let app = app(backend.clone());
    let reference = send(app.clone(), get("/enroll/unknown-token", None)).await;
    assert_eq!(reference.status, StatusCode::NOT_FOUND);
    assert!(
        reference.body.contains("<main id=\"invalid\">"),
        "{}",
        reference.body
    );
    assert!(reference
        .body
        .contains("This link is not valid (any more). Ask your help desk for a new one."));
    assert!(reference.body.contains("<html lang=\"en\">"));

    // A guess of the same shape as a real token.
    let guessed = {
        let mut bytes = [0u8; 24];
        crate::rng::fill(&mut bytes).unwrap();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let dead_ends = [
        ("random token", get(&format!("/enroll/{guessed}"), None)),
        (
            "used or expired token",
            post("/enroll/unknown-token", "code=123456", None),
        ),
        ("random path", get("/admin", None)),
        ("root", get("/", None)),
        ("token without prefix", get(&format!("/{TOKEN}"), None)),
        (
            "path below a token",
            get(&format!("/enroll/{TOKEN}/x"), None),
        ),
        ("empty token", get("/enroll/", None)),
        ("favicon", get("/favicon.ico", None)),
        (
            "PUT",
            Request::put(enroll_path()).body(Body::empty()).unwrap(),
        ),
        (
            "DELETE",
            Request::delete(enroll_path()).body(Body::empty()).unwrap(),
        ),
        (
            "OPTIONS",
            Request::options(enroll_path()).body(Body::empty()).unwrap(),
        ),
        ("GET /phone", get("/phone", None)),
        ("GET of the reveal path", get(&reveal_path(), None)),
        (
            "reveal of an unknown token",
            post(
                "/enroll/unknown-token/reveal",
                &format!("view={VIEW}"),
                None,
            ),
        ),
        ("GET /phone/verify", get("/phone/verify", None)),
        ("POST /otpd.css", post("/otpd.css", "", None)),
        ("form without code", post(&enroll_path(), "other=1", None)),
        (
            "form as JSON",
            Request::post(enroll_path())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"code":"123456"}"#))
                .unwrap(),
        ),
        (
            "unknown phone session",
            post("/phone", "session=x&number=%2B31612345678", None),
        ),
        (
            "unknown phone session, code",
            post("/phone/verify", "session=x&code=654321", None),
        ),
        (
            "phone form without number",
            post("/phone", &format!("session={SESSION}"), None),
        ),
        (
            "oversized body",
            post(&enroll_path(), &format!("code={}", "1".repeat(8192)), None),
        ),
    ];
    for (what, request) in dead_ends {
        let answer = send(app.clone(), request).await;
        assert_eq!(answer.status, reference.status, "{what}");
        assert_eq!(answer.body, reference.body, "{what}");
    }
    // Nothing on the neutral page depends on the request.
    assert!(!reference.body.contains("unknown-token"));
    assert!(!reference.body.contains("alice"));
}

#[tokio::test]
async fn dutch_or_english_by_accept_language() {
    let backend = ScriptedBackend::new(false);
    let app = app(backend);

    for language in [None, Some("en-US,en;q=0.9,nl;q=0.8"), Some("de, fr;q=0.5")] {
        let page = send(app.clone(), get(&enroll_path(), language)).await;
        assert!(page.body.contains("<html lang=\"en\">"), "{language:?}");
        assert!(
            page.body.contains(">Enter your OTP</label>"),
            "{language:?}"
        );
        assert!(page.body.contains(">Validate</button>"), "{language:?}");
    }
    for language in [
        "nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7",
        "en;q=0.3, nl-BE;q=0.6",
        "nl",
    ] {
        let page = send(app.clone(), get(&enroll_path(), Some(language))).await;
        assert!(page.body.contains("<html lang=\"nl\">"), "{language}");
        assert!(
            page.body.contains(">Voer de tokencode in</label>"),
            "{language}"
        );
        assert!(page.body.contains(">Valideren</button>"), "{language}");
        assert!(page.body.contains(">QR-code tonen</button>"), "{language}");
        let revealed = send(
            app.clone(),
            post(
                &reveal_path(),
                &format!("view={VIEW_AGAIN}"),
                Some(language),
            ),
        )
        .await;
        assert!(revealed.body.contains("Scan de QR-code"), "{language}");
        assert!(
            element(&revealed.body, "p", "opened-before")
                .contains("Deze link is al eerder geopend, op 2026-12-05 04:03 UTC."),
            "{language}"
        );
    }

    let neutral = send(app.clone(), get("/nowhere", Some("nl"))).await;
    assert!(neutral.body.contains("<html lang=\"nl\">"));
    assert!(neutral
        .body
        .contains("Deze link is niet (meer) geldig. Vraag uw helpdesk om een nieuwe."));

    let wrong = send(app.clone(), post(&enroll_path(), "code=111111", Some("nl"))).await;
    assert!(element(&wrong.body, "p", "error").contains("Deze code klopt niet"));

    let success = send(app, post(&enroll_path(), "code=123456", Some("nl"))).await;
    assert!(success.body.contains("Uw app is ingesteld"));
    assert!(success.body.contains("Herstelcodes"));
}

#[tokio::test]
async fn the_page_of_a_link_has_the_steps_a_button_and_the_form_but_no_secret() {
    let backend = ScriptedBackend::new(false);
    let page = send(app(backend.clone()), get(&enroll_path(), None)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/html; charset=utf-8"
    );
    let body = &page.body;
    assert!(body.contains("<main id=\"enrol\">"));
    assert!(body.contains("<meta name=\"viewport\""));
    assert!(body.contains("<link rel=\"stylesheet\" href=\"/otpd.css\">"));
    assert_no_secret(body, "GET");
    assert!(!body.contains("id=\"opened-before\""));

    let reveal = element(body, "form", "reveal-form");
    assert!(reveal.starts_with(&format!(
        "<form id=\"reveal-form\" method=\"post\" action=\"/enroll/{TOKEN}/reveal\">"
    )));
    assert!(reveal.contains(&format!(
        "<input type=\"hidden\" name=\"view\" value=\"{VIEW}\">"
    )));
    assert!(reveal.contains("<button id=\"reveal\" type=\"submit\">Show QR code</button>"));
    assert!(body.contains("only the newest one works"));

    let form = element(body, "form", "validate-form");
    assert!(form.starts_with(&format!(
        "<form id=\"validate-form\" method=\"post\" action=\"/enroll/{TOKEN}\">"
    )));
    let input = &form[form.find("<input id=\"code\"").expect(form)..];
    let input = &input[..input.find('>').unwrap()];
    for attribute in [
        "name=\"code\"",
        "inputmode=\"numeric\"",
        "autocomplete=\"one-time-code\"",
        " required",
    ] {
        assert!(input.contains(attribute), "{attribute} in {input}");
    }
    assert!(form.contains("<label for=\"code\">Enter your OTP</label>"));
    assert!(form.contains("<button id=\"validate\" type=\"submit\">Validate</button>"));
    assert!(!body.contains("id=\"error\""));

    // No scripts, no inline styles (the CSP would block them anyway).
    assert!(!body.contains("<script"));
    assert!(!body.contains("style="));
    assert_eq!(backend.calls(), [format!("view {TOKEN} unknown")]);
}

#[tokio::test]
async fn show_qr_code_gives_the_qr_code_the_secret_and_the_form() {
    let backend = ScriptedBackend::new(false);
    let page = send(
        app(backend.clone()),
        post(&reveal_path(), &format!("view={VIEW}"), None),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    assert!(body.contains("<main id=\"enrol\">"));
    let qr = element(body, "div", "qr");
    assert!(
        qr.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{qr}"
    );
    assert!(qr.contains("</svg>") || body.contains("</svg></div>"));
    assert!(!body.contains("<?xml"));
    assert!(body.contains("This QR code is shown only this once."));
    assert_eq!(
        element(body, "code", "secret"),
        "<code id=\"secret\">JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP"
    );
    assert_eq!(element(body, "dd", "issuer"), "<dd id=\"issuer\">Hupra ICT");
    assert_eq!(element(body, "dd", "account"), "<dd id=\"account\">alice");
    assert!(body.contains("id=\"validate-form\""));
    // No second button on the page that shows the code: a reload would
    // only post the spent view again.
    assert!(!body.contains("id=\"reveal-form\""));
    assert!(!body.contains("id=\"opened-before\""));
    assert!(!body.contains("<script") && !body.contains("style="));
    assert_eq!(backend.calls(), [format!("reveal {TOKEN} {VIEW} unknown")]);

    // A reveal of a link opened before says so, with the time.
    let again = send(
        app(backend.clone()),
        post(&reveal_path(), &format!("view={VIEW_AGAIN}"), None),
    )
    .await;
    assert_eq!(
        element(&again.body, "p", "opened-before"),
        "<p id=\"opened-before\" role=\"status\">This link was opened before, at 2026-12-05 \
         04:03 UTC. If that was not you, tell your help desk."
    );
    assert!(element(&again.body, "div", "qr").contains("<svg"));
}

#[tokio::test]
async fn show_qr_code_from_a_stale_or_made_up_page_shows_the_page_again() {
    let backend = ScriptedBackend::new(false);
    for form in ["view=spent", "view=", "", "code=123456"] {
        let page = send(app(backend.clone()), post(&reveal_path(), form, None)).await;
        assert_eq!(page.status, StatusCode::OK, "{form}");
        assert_no_secret(&page.body, form);
        assert!(
            element(&page.body, "p", "error").contains("This page was out of date"),
            "{form}"
        );
        assert!(
            page.body.contains(&format!("value=\"{VIEW}\"")),
            "a new view: {form}"
        );
    }
    let calls = backend.calls();
    assert_eq!(
        &calls[..2],
        [
            format!("reveal {TOKEN} spent unknown"),
            format!("view {TOKEN} unknown")
        ]
    );
    assert_eq!(calls[4], format!("reveal {TOKEN}  unknown"), "{calls:?}");
}
#[tokio::test]
async fn values_from_the_backend_are_escaped() {
    let backend = ScriptedBackend::with_issuer("<script>alert(1)</script> & \"co\"");
    let page = send(
        app(backend),
        post(&reveal_path(), &format!("view={VIEW}"), None),
    )
    .await;
    assert!(!page.body.contains("<script>"));
    assert!(
        element(&page.body, "dd", "issuer").contains("&#60;script&#62;")
            || element(&page.body, "dd", "issuer").contains("&lt;script&gt;")
    );
}

#[tokio::test]
async fn the_stylesheet_is_served() {
    let answer = send(app(ScriptedBackend::new(false)), get("/otpd.css", None)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/css; charset=utf-8"
    );
    assert!(answer.body.contains("#qr svg"));
}

#[tokio::test]
async fn a_wrong_code_shows_the_page_again_with_a_message() {
    let backend = ScriptedBackend::new(false);
    let page = send(
        app(backend.clone()),
        post(&enroll_path(), "code=111111", None),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<main id=\"enrol\">"));
    assert!(page
        .body
        .contains("<p id=\"error\" role=\"alert\">That code is not right. Enter the newest code"));
    // Any POST of a code must not show the secret: the page has the
    // button again, not the QR code.
    assert_no_secret(&page.body, "the wrong-code page");
    assert!(page.body.contains("id=\"reveal-form\""));
    assert!(page.body.contains("id=\"validate-form\""));
    assert_eq!(
        backend.calls(),
        [
            format!("validate {TOKEN} {WRONG_CODE} unknown"),
            format!("view {TOKEN} unknown"),
        ]
    );
}

#[tokio::test]
async fn too_many_wrong_codes_say_how_long_to_wait() {
    let backend = ScriptedBackend::new(false);
    let page = send(app(backend), post(&enroll_path(), "code=222222", None)).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(page.headers.get(header::RETRY_AFTER).unwrap(), "120");
    assert!(element(&page.body, "p", "error").contains("Wait 2 minutes"));
    assert!(page.body.contains("<main id=\"enrol\">"));
}

#[tokio::test]
async fn codes_are_passed_on_without_spaces() {
    let backend = ScriptedBackend::new(false);
    let page = send(
        app(backend.clone()),
        post(&enroll_path(), "code=+123+456+", None),
    )
    .await;
    assert!(page.body.contains("<main id=\"success\">"), "{}", page.body);
    assert_eq!(
        backend.calls(),
        [format!("validate {TOKEN} {GOOD_CODE} unknown")]
    );
}

#[tokio::test]
async fn the_success_page_shows_the_recovery_codes_and_the_phone_step_only_with_sms() {
    let without = send(
        app(ScriptedBackend::new(false)),
        post(&enroll_path(), "code=123456", None),
    )
    .await;
    assert_eq!(without.status, StatusCode::OK);
    let body = &without.body;
    assert!(body.contains("<main id=\"success\">"));
    assert!(body.contains("Your app is set up"));
    assert!(body.contains("user name and password and the tokencode"));
    assert!(body.contains("<strong id=\"user\">alice</strong>"));
    let codes = element(body, "ol", "recovery-codes");
    assert!(
        codes.contains("<li><code>ABCD-EFGH-JKLM</code></li>"),
        "{codes}"
    );
    assert!(
        codes.contains("<li><code>NPQR-STUV-WXYZ</code></li>"),
        "{codes}"
    );
    assert!(body.contains("Keep them somewhere safe"));
    assert!(body.contains("Each code works once."));
    assert!(!body.contains("phone-form"));
    assert!(!body.contains("id=\"number\""));

    let with = send(
        app(ScriptedBackend::new(true)),
        post(&enroll_path(), "code=123456", None),
    )
    .await;
    let form = element(&with.body, "form", "phone-form");
    assert!(form.starts_with("<form id=\"phone-form\" method=\"post\" action=\"/phone\">"));
    assert!(form.contains(&format!(
        "<input type=\"hidden\" name=\"session\" value=\"{SESSION}\">"
    )));
    assert!(form.contains("<input id=\"number\" name=\"number\" type=\"tel\" autocomplete=\"tel\""));
    assert!(form.contains("+31612345678"));
    assert!(form.contains("<button id=\"send-sms\" type=\"submit\">"));
    assert!(with.body.contains("ABCD-EFGH-JKLM"));
}

#[tokio::test]
async fn the_phone_steps() {
    let backend = ScriptedBackend::new(true);
    let app = app(backend.clone());

    let sent = send(
        app.clone(),
        post(
            "/phone",
            &format!("session={SESSION}&number=+%2B31612345678+"),
            None,
        ),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK);
    assert!(sent.body.contains("<main id=\"phone-code\">"));
    let form = element(&sent.body, "form", "phone-code-form");
    assert!(
        form.starts_with("<form id=\"phone-code-form\" method=\"post\" action=\"/phone/verify\">")
    );
    assert!(form.contains(&format!("name=\"session\" value=\"{SESSION}\"")));
    assert!(form.contains(
        "<input id=\"sms-code\" name=\"code\" type=\"text\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\""
    ));
    assert!(form.contains("<button id=\"verify\" type=\"submit\">Verify</button>"));

    for (number, status, message) in [
        (
            "0612",
            StatusCode::OK,
            "not a phone number in international form",
        ),
        ("%2B31000000000", StatusCode::OK, "could not be sent"),
        (
            "%2B31999999999",
            StatusCode::TOO_MANY_REQUESTS,
            "Wait 40 minutes",
        ),
    ] {
        let page = send(
            app.clone(),
            post(
                "/phone",
                &format!("session={SESSION}&number={number}"),
                None,
            ),
        )
        .await;
        assert_eq!(page.status, status, "{number}");
        assert!(page.body.contains("<main id=\"phone\">"), "{number}");
        assert!(
            element(&page.body, "p", "error").contains(message),
            "{number}"
        );
        assert!(page.body.contains("id=\"phone-form\""), "{number}");
        assert!(page.body.contains("id=\"send-sms\""), "{number}");
        // The number as typed, to correct it.
        let typed = number.replace("%2B", "+");
        assert!(
            page.body.contains(&format!("value=\"{typed}\"")),
            "{number}"
        );
    }

    let wrong = send(
        app.clone(),
        post(
            "/phone/verify",
            &format!("session={SESSION}&code=000000"),
            Some("nl"),
        ),
    )
    .await;
    assert!(wrong.body.contains("<main id=\"phone-code\">"));
    assert!(element(&wrong.body, "p", "error").contains("Deze code klopt niet of is verlopen"));
    assert!(wrong
        .body
        .contains("<button id=\"verify\" type=\"submit\">Verifiëren</button>"));

    let done = send(
        app.clone(),
        post(
            "/phone/verify",
            &format!("session={SESSION}&code=654+321"),
            None,
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("<main id=\"phone-done\">"));
    assert!(done.body.contains("Verification complete"));

    let calls = backend.calls();
    assert!(calls.contains(&format!("phone_send {SESSION} +31612345678 unknown")));
    assert!(calls.contains(&format!("phone_verify {SESSION} {SMS_CODE} unknown")));
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_asking_the_backend() {
    let backend = ScriptedBackend::new(true);
    let app = app(backend.clone());
    let big = format!("code=123456&padding={}", "x".repeat(MAX_BODY_BYTES));
    for path in [enroll_path(), "/phone".into(), "/phone/verify".into()] {
        let answer = send(app.clone(), post(&path, &big, None)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.body.contains("<main id=\"invalid\">"), "{path}");
    }
    // Just under the cap is still read.
    let fits = format!("code=123456&p={}", "x".repeat(MAX_BODY_BYTES - 20));
    let answer = send(app, post(&enroll_path(), &fits, None)).await;
    assert!(answer.body.contains("<main id=\"success\">"));
    assert_eq!(backend.calls().len(), 1);
}

#[tokio::test]
async fn head_requests_get_the_headers_without_a_body() {
    let backend = ScriptedBackend::new(false);
    let request = Request::builder()
        .method(Method::HEAD)
        .uri(enroll_path())
        .body(Body::empty())
        .unwrap();
    let answer = send(app(backend), request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_empty());
    assert_security_headers(&answer, "HEAD");
}

#[tokio::test]
async fn hsts_is_sent_over_tls_only() {
    let plain = send(app(ScriptedBackend::new(false)), get(&enroll_path(), None)).await;
    assert!(plain.headers.get("strict-transport-security").is_none());
    let tls = router(
        ScriptedBackend::new(false),
        PageOptions {
            tls: true,
            ..PageOptions::default()
        },
    )
    .unwrap();
    for request in [
        get(&enroll_path(), None),
        get("/nowhere", None),
        get("/otpd.css", None),
    ] {
        let answer = send(tls.clone(), request).await;
        assert_eq!(
            answer.headers.get("strict-transport-security").unwrap(),
            "max-age=31536000"
        );
        assert_security_headers(&answer, "over TLS");
    }
}

#[tokio::test]
async fn each_client_gets_its_allowance_of_requests_then_429() {
    let backend = ScriptedBackend::new(false);
    let app = app_with(
        backend.clone(),
        PageLimits {
            burst: 3,
            per_minute: 6,
            ..PageLimits::default()
        },
    );
    for _ in 0..3 {
        let answer = send(
            app.clone(),
            from("192.0.2.1:1000", get(&enroll_path(), None)),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = send(
        app.clone(),
        from("192.0.2.1:1001", get(&enroll_path(), Some("nl"))),
    )
    .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers.get(header::RETRY_AFTER).unwrap(), "10");
    assert!(limited.body.contains("<main id=\"retry\">"));
    assert!(limited.body.contains("Te veel verzoeken vanaf uw netwerk"));
    assert_security_headers(&limited, "429");
    // Every path counts, and the backend was not asked.
    let css = send(app.clone(), from("192.0.2.1:1002", get("/otpd.css", None))).await;
    assert_eq!(css.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(backend.calls().len(), 3);
    // Another address, and another IPv6 /64, have their own; one /64 is one client.
    let other = send(
        app.clone(),
        from("192.0.2.2:1000", get(&enroll_path(), None)),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    for n in 0..3 {
        let address = format!("[2001:db8:1:2::{n}]:443");
        let answer = send(app.clone(), from(&address, get("/otpd.css", None))).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let same_net = send(
        app.clone(),
        from("[2001:db8:1:2:ffff::9]:443", get("/otpd.css", None)),
    )
    .await;
    assert_eq!(same_net.status, StatusCode::TOO_MANY_REQUESTS);
    let next_net = send(app, from("[2001:db8:1:3::1]:443", get("/otpd.css", None))).await;
    assert_eq!(next_net.status, StatusCode::OK);
}

/// A backend that holds every view until it is let go.
struct BlockingBackend {
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl EnrollBackend for BlockingBackend {
    fn view(&self, _: &str, _: &str) -> Option<LinkView> {
        let _ = self.release.lock().unwrap().recv();
        None
    }
    fn reveal(&self, _: &str, _: &str, _: &str) -> Reveal {
        Reveal::Invalid
    }
    fn validate(&self, _: &str, _: &str, _: &str) -> Validation {
        Validation::Invalid
    }
    fn sms_enabled(&self) -> bool {
        false
    }
    fn phone_send(&self, _: &str, _: &str, _: &str) -> PhoneStep {
        PhoneStep::Invalid
    }
    fn phone_verify(&self, _: &str, _: &str, _: &str) -> PhoneStep {
        PhoneStep::Invalid
    }
}

#[tokio::test]
async fn busy_page_threads_answer_503_at_once() {
    let (release, held) = std::sync::mpsc::channel();
    let backend = Arc::new(BlockingBackend {
        release: Mutex::new(held),
    });
    let app = app_with(
        backend,
        PageLimits {
            workers: 1,
            queue: 1,
            ..PageLimits::default()
        },
    );
    // One request on the thread, one waiting for it.
    let first = tokio::spawn(send(app.clone(), get(&enroll_path(), None)));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = tokio::spawn(send(app.clone(), get(&enroll_path(), None)));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let busy = send(app.clone(), get(&enroll_path(), None)).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers.get(header::RETRY_AFTER).unwrap(), "5");
    assert!(busy.body.contains("This page is busy"));
    assert_security_headers(&busy, "503");
    // Pages that need no thread are served meanwhile.
    let css = send(app, get("/otpd.css", None)).await;
    assert_eq!(css.status, StatusCode::OK);
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().status, StatusCode::NOT_FOUND);
    assert_eq!(second.await.unwrap().status, StatusCode::NOT_FOUND);
}

/// A backend whose every call panics (a bug on the daemon side).
struct PanickingBackend;

impl EnrollBackend for PanickingBackend {
    fn view(&self, _: &str, _: &str) -> Option<LinkView> {
        panic!("view failed")
    }
    fn reveal(&self, _: &str, _: &str, _: &str) -> Reveal {
        panic!("reveal failed")
    }
    fn validate(&self, _: &str, _: &str, _: &str) -> Validation {
        panic!("validate failed")
    }
    fn sms_enabled(&self) -> bool {
        false
    }
    fn phone_send(&self, _: &str, _: &str, _: &str) -> PhoneStep {
        panic!("phone_send failed")
    }
    fn phone_verify(&self, _: &str, _: &str, _: &str) -> PhoneStep {
        panic!("phone_verify failed")
    }
}

#[tokio::test]
async fn a_failing_backend_gives_the_neutral_text_with_status_500() {
    let app = app(Arc::new(PanickingBackend));
    let neutral = send(app.clone(), get("/nowhere", None)).await;
    let requests = [
        get(&enroll_path(), None),
        post(&reveal_path(), &format!("view={VIEW}"), None),
        post(&enroll_path(), "code=123456", None),
        post("/phone", "session=s&number=%2B31612345678", None),
        post("/phone/verify", "session=s&code=1", None),
    ];
    for request in requests {
        let answer = send(app.clone(), request).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.body, neutral.body);
        assert_security_headers(&answer, "backend failure");
    }
}

mod server {
    use super::*;
    use crate::config::WebConfig;
    use std::net::SocketAddr;
    use std::path::Path;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    fn config(dir: &Path, tls: bool) -> WebConfig {
        WebConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            tls_cert: tls.then(|| dir.join("cert.pem")),
            tls_key: tls.then(|| dir.join("key.pem")),
            ..WebConfig::default()
        }
    }

    /// A self-signed certificate for "localhost", written to `dir`.
    fn certificate(dir: &Path) -> CertificateDer<'static> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
        certified.cert.der().clone()
    }

    async fn request<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, path: &str) -> String {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept-Language: nl\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    fn spawn(
        bound: Bound,
        backend: Arc<ScriptedBackend>,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), WebError>>,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(backend, async {
            let _ = stopped.await;
        }));
        (stop, task)
    }

    #[tokio::test]
    async fn serves_over_tls_with_the_peer_address_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let cert = certificate(dir.path());
        let bound = bind(&config(dir.path(), true)).await.unwrap();
        assert!(bound.is_tls());
        let address = bound.local_addr();
        let backend = ScriptedBackend::new(false);
        let (stop, task) = spawn(bound, backend.clone());

        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let answer = request(tls, &enroll_path()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("cache-control: no-store\r\n"), "{answer}");
        assert!(
            answer.contains("strict-transport-security: max-age=31536000\r\n"),
            "{answer}"
        );
        assert!(answer.contains("<html lang=\"nl\">"));
        assert!(answer.contains("<main id=\"enrol\">"));
        assert_eq!(backend.calls(), [format!("view {TOKEN} 127.0.0.1")]);

        // Plain HTTP to the TLS port gets no page.
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let plain = request(tcp, &enroll_path()).await;
        assert!(!plain.contains("<main"), "{plain}");

        stop.send(()).unwrap();
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("serve stops after shutdown")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
        assert!(tokio::net::TcpStream::connect(address).await.is_err());
    }

    #[tokio::test]
    async fn serves_plain_http_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let bound = bind(&config(dir.path(), false)).await.unwrap();
        assert!(!bound.is_tls());
        let address = bound.local_addr();
        let (stop, task) = spawn(bound, ScriptedBackend::new(false));

        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let answer = request(tcp, "/enroll/unknown").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        assert!(answer.contains("<main id=\"invalid\">"));
        assert!(answer.contains("x-frame-options: DENY\r\n"));
        assert!(!answer.contains("strict-transport-security"), "{answer}");

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    /// Serves `bound` with `limits` until the sender is used or dropped.
    fn spawn_with(
        bound: Bound,
        backend: Arc<ScriptedBackend>,
        limits: PageLimits,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), WebError>>,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve_with(backend, limits, async {
            let _ = stopped.await;
        }));
        (stop, task)
    }

    /// Reads until the server closes the connection (or 10 s pass).
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await
        .expect("the server closes the connection");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn slow_headers_and_slow_bodies_are_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let bound = bind(&config(dir.path(), false)).await.unwrap();
        let address = bound.local_addr();
        let backend = ScriptedBackend::new(false);
        let limits = PageLimits {
            header_timeout: std::time::Duration::from_millis(400),
            body_timeout: std::time::Duration::from_millis(400),
            ..PageLimits::default()
        };
        let (stop, task) = spawn_with(bound, backend.clone(), limits);

        // Half a request line, then nothing: closed after the header timeout.
        let started = std::time::Instant::now();
        let mut slow_head = tokio::net::TcpStream::connect(address).await.unwrap();
        slow_head.write_all(b"GET /enroll/").await.unwrap();
        read_until_closed(&mut slow_head).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(3));

        // The headers, then a body a byte at a time: 408 and closed once
        // the body timeout has passed, whatever still trickles in.
        let started = std::time::Instant::now();
        let mut slow_body = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST /enroll/{TOKEN} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ncode="
        );
        slow_body.write_all(head.as_bytes()).await.unwrap();
        let trickle = tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if slow_body.write_all(b"1").await.is_err() {
                    break;
                }
            }
            read_until_closed(&mut slow_body).await
        });
        let answer = trickle.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer}"
        );
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(started.elapsed() < std::time::Duration::from_secs(4));
        assert!(backend.calls().is_empty(), "{:?}", backend.calls());

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_holds_a_few_connections_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let bound = bind(&config(dir.path(), false)).await.unwrap();
        let address = bound.local_addr();
        let limits = PageLimits {
            connections_per_client: 2,
            ..PageLimits::default()
        };
        let (stop, task) = spawn_with(bound, ScriptedBackend::new(false), limits);
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        // The third from the same address is closed at once, unanswered.
        let mut third = tokio::net::TcpStream::connect(address).await.unwrap();
        let _ = third
            .write_all(b"GET /otpd.css HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        assert_eq!(read_until_closed(&mut third).await, "");
        // Once one is closed, there is room again.
        drop(held.pop());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let answer = request(
            tokio::net::TcpStream::connect(address).await.unwrap(),
            "/otpd.css",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_pages_run_on_threads_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let bound = bind(&config(dir.path(), false)).await.unwrap();
        let address = bound.local_addr();
        let (stop, task) = spawn(bound, ScriptedBackend::new(false));
        let _ = request(
            tokio::net::TcpStream::connect(address).await.unwrap(),
            &enroll_path(),
        )
        .await;
        let names = thread_names();
        assert!(names.iter().any(|n| n == "otpd-web"), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("otpd-pages-")),
            "{names:?}"
        );
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    /// The names of this process's threads.
    fn thread_names() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn bad_settings_are_reported_with_the_file_or_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = config(dir.path(), true);

        // No certificate file.
        let error = bind(&settings).await.unwrap_err().to_string();
        let cert_path = dir.path().join("cert.pem").display().to_string();
        assert!(error.contains(&cert_path), "{error}");
        assert!(error.contains("certificate"), "{error}");
        assert!(error.contains("No such file"), "{error}");

        // Not PEM.
        std::fs::write(dir.path().join("cert.pem"), "hello").unwrap();
        std::fs::write(dir.path().join("key.pem"), "hello").unwrap();
        let error = bind(&settings).await.unwrap_err().to_string();
        assert!(error.contains(&cert_path), "{error}");
        assert!(error.contains("no certificate"), "{error}");

        // A key that is not the certificate's.
        certificate(dir.path());
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("key.pem"), other.serialize_pem()).unwrap();
        let error = bind(&settings).await.unwrap_err().to_string();
        assert!(error.contains(&cert_path), "{error}");
        assert!(
            error.contains(&dir.path().join("key.pem").display().to_string()),
            "{error}"
        );

        // A key file without a key.
        std::fs::write(
            dir.path().join("key.pem"),
            "-----BEGIN X-----\n-----END X-----\n",
        )
        .unwrap();
        let error = bind(&settings).await.unwrap_err().to_string();
        assert!(error.contains("key.pem"), "{error}");
        assert!(error.contains("no PEM private key"), "{error}");

        // Only one of the two.
        settings.tls_key = None;
        assert!(matches!(bind(&settings).await, Err(WebError::HalfTls)));

        // No address.
        let error = bind(&WebConfig::default()).await.unwrap_err();
        assert!(matches!(error, WebError::NotConfigured), "{error}");

        // An address in use.
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = taken.local_addr().unwrap();
        let settings = WebConfig {
            listen: Some(address),
            ..WebConfig::default()
        };
        let error = bind(&settings).await.unwrap_err().to_string();
        assert!(error.contains(&address.to_string()), "{error}");
        assert!(error.contains("in use"), "{error}");
    }
}
