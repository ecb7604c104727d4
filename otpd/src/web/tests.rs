//! The pages through the router (tower's `oneshot`) and the server over
//! TCP and TLS, against a scripted backend. The daemon's real backend is
//! tested with the daemon; here only the HTTP side counts.

use super::backend::{EnrolBackend, PageEnrolment, PhoneStep, Validation};
use super::*;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const TOKEN: &str = "k7Qz2xN9pLm4Rt8vWc3yHb6sDf1gJa5e";
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

impl EnrolBackend for ScriptedBackend {
    fn view(&self, token: &str, peer: &str) -> Option<PageEnrolment> {
        self.record(format!("view {token} {peer}"));
        (token == TOKEN).then(|| PageEnrolment {
            user: "alice".into(),
            issuer: self.issuer.clone(),
            secret_base32: SECRET.into(),
            uri: format!("otpauth://totp/otpd:alice?secret={SECRET}&issuer=otpd"),
            digits: 6,
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

fn enrol_path() -> String {
    format!("/enroll/{TOKEN}")
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
        ("enrolment page", get(&enrol_path(), None)),
        ("neutral page", get("/enroll/nope", None)),
        ("random path", get("/", None)),
        ("stylesheet", get("/otpd.css", None)),
        (
            "wrong method",
            Request::delete(enrol_path()).body(Body::empty()).unwrap(),
        ),
        ("wrong code", post(&enrol_path(), "code=111111", None)),
        ("throttled", post(&enrol_path(), "code=222222", None)),
        ("success", post(&enrol_path(), "code=123456", None)),
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
            post(&enrol_path(), &"code=1".repeat(2000), None),
        ),
        ("bad form", post(&enrol_path(), "nothing=here", None)),
    ];
    for (what, request) in requests {
        let answer = send(router(backend.clone()), request).await;
        assert_security_headers(&answer, what);
    }
}

#[tokio::test]
async fn the_neutral_page_is_the_same_for_every_dead_end() {
    let backend = ScriptedBackend::new(true);
    let app = router(backend.clone());
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
        getrandom::getrandom(&mut bytes).unwrap();
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
            Request::put(enrol_path()).body(Body::empty()).unwrap(),
        ),
        (
            "DELETE",
            Request::delete(enrol_path()).body(Body::empty()).unwrap(),
        ),
        (
            "OPTIONS",
            Request::options(enrol_path()).body(Body::empty()).unwrap(),
        ),
        ("GET /phone", get("/phone", None)),
        ("GET /phone/verify", get("/phone/verify", None)),
        ("POST /otpd.css", post("/otpd.css", "", None)),
        ("form without code", post(&enrol_path(), "other=1", None)),
        (
            "form as JSON",
            Request::post(enrol_path())
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
            post(&enrol_path(), &format!("code={}", "1".repeat(8192)), None),
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
    let app = router(backend);

    for language in [None, Some("en-US,en;q=0.9,nl;q=0.8"), Some("de, fr;q=0.5")] {
        let page = send(app.clone(), get(&enrol_path(), language)).await;
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
        let page = send(app.clone(), get(&enrol_path(), Some(language))).await;
        assert!(page.body.contains("<html lang=\"nl\">"), "{language}");
        assert!(
            page.body.contains(">Voer de tokencode in</label>"),
            "{language}"
        );
        assert!(page.body.contains(">Valideren</button>"), "{language}");
        assert!(page.body.contains("Scan de QR-code"), "{language}");
    }

    let neutral = send(app.clone(), get("/nowhere", Some("nl"))).await;
    assert!(neutral.body.contains("<html lang=\"nl\">"));
    assert!(neutral
        .body
        .contains("Deze link is niet (meer) geldig. Vraag uw helpdesk om een nieuwe."));

    let wrong = send(app.clone(), post(&enrol_path(), "code=111111", Some("nl"))).await;
    assert!(element(&wrong.body, "p", "error").contains("Deze code klopt niet"));

    let success = send(app, post(&enrol_path(), "code=123456", Some("nl"))).await;
    assert!(success.body.contains("Uw app is ingesteld"));
    assert!(success.body.contains("Herstelcodes"));
}

#[tokio::test]
async fn the_enrolment_page_has_the_qr_code_the_secret_and_the_form() {
    let backend = ScriptedBackend::new(false);
    let page = send(router(backend.clone()), get(&enrol_path(), None)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/html; charset=utf-8"
    );
    let body = &page.body;
    assert!(body.contains("<main id=\"enrol\">"));
    assert!(body.contains("<meta name=\"viewport\""));
    assert!(body.contains("<link rel=\"stylesheet\" href=\"/otpd.css\">"));

    let qr = element(body, "div", "qr");
    assert!(
        qr.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{qr}"
    );
    assert!(qr.contains("</svg>") || body.contains("</svg></div>"));
    assert!(!body.contains("<?xml"));

    assert_eq!(
        element(body, "code", "secret"),
        "<code id=\"secret\">JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP"
    );
    assert_eq!(element(body, "dd", "issuer"), "<dd id=\"issuer\">Hupra ICT");
    assert_eq!(element(body, "dd", "account"), "<dd id=\"account\">alice");

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
async fn values_from_the_backend_are_escaped() {
    let backend = ScriptedBackend::with_issuer("<script>alert(1)</script> & \"co\"");
    let page = send(router(backend), get(&enrol_path(), None)).await;
    assert!(!page.body.contains("<script>"));
    assert!(
        element(&page.body, "dd", "issuer").contains("&#60;script&#62;")
            || element(&page.body, "dd", "issuer").contains("&lt;script&gt;")
    );
}

#[tokio::test]
async fn the_stylesheet_is_served() {
    let answer = send(router(ScriptedBackend::new(false)), get("/otpd.css", None)).await;
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
        router(backend.clone()),
        post(&enrol_path(), "code=111111", None),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<main id=\"enrol\">"));
    assert!(page
        .body
        .contains("<p id=\"error\" role=\"alert\">That code is not right. Enter the newest code"));
    assert!(element(&page.body, "div", "qr").contains("<svg"));
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
    let page = send(router(backend), post(&enrol_path(), "code=222222", None)).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(page.headers.get(header::RETRY_AFTER).unwrap(), "120");
    assert!(element(&page.body, "p", "error").contains("Wait 2 minutes"));
    assert!(page.body.contains("<main id=\"enrol\">"));
}

#[tokio::test]
async fn codes_are_passed_on_without_spaces() {
    let backend = ScriptedBackend::new(false);
    let page = send(
        router(backend.clone()),
        post(&enrol_path(), "code=+123+456+", None),
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
        router(ScriptedBackend::new(false)),
        post(&enrol_path(), "code=123456", None),
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
        router(ScriptedBackend::new(true)),
        post(&enrol_path(), "code=123456", None),
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
    let app = router(backend.clone());

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
    let app = router(backend.clone());
    let big = format!("code=123456&padding={}", "x".repeat(MAX_BODY_BYTES));
    for path in [enrol_path(), "/phone".into(), "/phone/verify".into()] {
        let answer = send(app.clone(), post(&path, &big, None)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.body.contains("<main id=\"invalid\">"), "{path}");
    }
    // Just under the cap is still read.
    let fits = format!("code=123456&p={}", "x".repeat(MAX_BODY_BYTES - 20));
    let answer = send(app, post(&enrol_path(), &fits, None)).await;
    assert!(answer.body.contains("<main id=\"success\">"));
    assert_eq!(backend.calls().len(), 1);
}

#[tokio::test]
async fn head_requests_get_the_headers_without_a_body() {
    let backend = ScriptedBackend::new(false);
    let request = Request::builder()
        .method(Method::HEAD)
        .uri(enrol_path())
        .body(Body::empty())
        .unwrap();
    let answer = send(router(backend), request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_empty());
    assert_security_headers(&answer, "HEAD");
}

/// A backend whose every call panics (a bug on the daemon side).
struct PanickingBackend;

impl EnrolBackend for PanickingBackend {
    fn view(&self, _: &str, _: &str) -> Option<PageEnrolment> {
        panic!("view failed")
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
    let app = router(Arc::new(PanickingBackend));
    let neutral = send(app.clone(), get("/nowhere", None)).await;
    let requests = [
        get(&enrol_path(), None),
        post(&enrol_path(), "code=123456", None),
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
        let answer = request(tls, &enrol_path()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("cache-control: no-store\r\n"), "{answer}");
        assert!(answer.contains("<html lang=\"nl\">"));
        assert!(answer.contains("<main id=\"enrol\">"));
        assert_eq!(backend.calls(), [format!("view {TOKEN} 127.0.0.1")]);

        // Plain HTTP to the TLS port gets no page.
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let plain = request(tcp, &enrol_path()).await;
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

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
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
