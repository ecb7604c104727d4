//! The pages: askama templates (in `otpd/templates/`) filled in and turned
//! into responses. Askama escapes every value for HTML; the one value that
//! is inserted as is, the QR code, is SVG drawn here from the URI's bits.

use super::backend::{LinkView, PageEnrolment};
use super::lang::{Lang, Texts};
use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// `<main id="invalid">`: unknown, used and expired links, wrong paths and
/// methods, bad forms. One text, one status, whatever the reason.
#[derive(Template)]
#[template(path = "invalid.html")]
struct InvalidPage {
    lang: &'static str,
    t: &'static Texts,
}

/// `<main id="enrol">`: the steps, the code field, and either the "Show
/// QR code" form (`qr` is `None`: what a GET gets) or the QR code and the
/// secret (the answer to that form).
#[derive(Template)]
#[template(path = "enrol.html")]
struct EnrollPage<'a> {
    lang: &'static str,
    t: &'static Texts,
    action: &'a str,
    error: Option<String>,
    opened_before: Option<String>,
    view: &'a str,
    qr: Option<Qr>,
    issuer: &'a str,
    account: &'a str,
    digits: u8,
}

/// The QR code (inline SVG) and the secret in groups of four.
struct Qr {
    svg: String,
    secret: String,
}

/// `<main id="retry">`: too many requests, or the pages are busy.
#[derive(Template)]
#[template(path = "retry.html")]
struct RetryPage {
    lang: &'static str,
    t: &'static Texts,
    text: &'static str,
}

/// `<main id="success">`: how to log in, the recovery codes, and the
/// phone step when text messages are configured.
#[derive(Template)]
#[template(path = "success.html")]
struct SuccessPage<'a> {
    lang: &'static str,
    t: &'static Texts,
    user: &'a str,
    recovery_codes: &'a [String],
    phone_step: bool,
    session: &'a str,
    number: &'a str,
    /// The phone-pairing link as a QR code (inline SVG), with `[approve]`.
    approver_qr: Option<String>,
}

/// `<main id="phone">`: the phone form again, after an error.
#[derive(Template)]
#[template(path = "phone.html")]
struct PhonePage<'a> {
    lang: &'static str,
    t: &'static Texts,
    error: Option<String>,
    session: &'a str,
    number: &'a str,
}

/// `<main id="phone-code">`: the field for the texted code.
#[derive(Template)]
#[template(path = "phone_code.html")]
struct PhoneCodePage<'a> {
    lang: &'static str,
    t: &'static Texts,
    error: Option<String>,
    session: &'a str,
}

/// `<main id="phone-done">`.
#[derive(Template)]
#[template(path = "phone_done.html")]
struct PhoneDonePage {
    lang: &'static str,
    t: &'static Texts,
}

/// The neutral page, 404.
pub fn invalid(lang: Lang) -> Response {
    invalid_with_status(lang, StatusCode::NOT_FOUND)
}

/// The neutral page with another status (a failure on our side: it still
/// says nothing about the link).
pub fn invalid_with_status(lang: Lang, status: StatusCode) -> Response {
    render(
        status,
        &InvalidPage {
            lang: lang.code(),
            t: lang.texts(),
        },
    )
}

/// The enrolment page of `view` before the QR code is shown: the steps,
/// the "Show QR code" form and the code field, posting to `action`; with
/// `error` above the steps when there is one. No secret.
pub fn enroll(
    lang: Lang,
    action: &str,
    view: &LinkView,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    render(
        status,
        &EnrollPage {
            lang: lang.code(),
            t: lang.texts(),
            action,
            error,
            opened_before: view.opened_before.map(|at| lang.opened_before(at)),
            view: &view.view,
            qr: None,
            issuer: &view.issuer,
            account: &view.user,
            digits: view.digits,
        },
    )
}

/// The enrolment page with the QR code and the secret of `enrolment`
/// (the answer to "Show QR code"), the code field posting to `action`.
pub fn revealed(lang: Lang, action: &str, enrollment: &PageEnrolment) -> Response {
    let svg = match qr_svg(&enrollment.uri) {
        Ok(svg) => svg,
        Err(e) => {
            tracing::error!("cannot draw the QR code of an enrolment: {e}");
            return invalid_with_status(lang, StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    render(
        StatusCode::OK,
        &EnrollPage {
            lang: lang.code(),
            t: lang.texts(),
            action,
            error: None,
            opened_before: enrollment.opened_before.map(|at| lang.opened_before(at)),
            view: "",
            qr: Some(Qr {
                svg,
                secret: group_secret(&enrollment.secret_base32),
            }),
            issuer: &enrollment.issuer,
            account: &enrollment.user,
            digits: enrollment.digits,
        },
    )
}

/// Too many requests from this client (429), with `Retry-After`.
pub fn too_many_requests(lang: Lang, retry_after: u64) -> Response {
    with_retry_after(
        render(
            StatusCode::TOO_MANY_REQUESTS,
            &RetryPage {
                lang: lang.code(),
                t: lang.texts(),
                text: lang.texts().too_many_requests,
            },
        ),
        retry_after,
    )
}

/// The pages are busy (503), with `Retry-After`.
pub fn busy(lang: Lang) -> Response {
    with_retry_after(
        render(
            StatusCode::SERVICE_UNAVAILABLE,
            &RetryPage {
                lang: lang.code(),
                t: lang.texts(),
                text: lang.texts().busy,
            },
        ),
        5,
    )
}

/// The success page; the phone form only with a `phone_session`.
pub fn success(
    lang: Lang,
    user: &str,
    recovery_codes: &[String],
    phone_session: Option<&str>,
    pairing_url: Option<&str>,
) -> Response {
    render(
        StatusCode::OK,
        &SuccessPage {
            lang: lang.code(),
            t: lang.texts(),
            user,
            recovery_codes,
            phone_step: phone_session.is_some(),
            session: phone_session.unwrap_or(""),
            number: "",
            approver_qr: pairing_url.and_then(|url| qr_svg(url).ok()),
        },
    )
}

/// The phone form again with `error`, the number as typed.
pub fn phone(
    lang: Lang,
    session: &str,
    number: &str,
    error: String,
    status: StatusCode,
) -> Response {
    render(
        status,
        &PhonePage {
            lang: lang.code(),
            t: lang.texts(),
            error: Some(error),
            session,
            number,
        },
    )
}

/// The page asking for the texted code.
pub fn phone_code(
    lang: Lang,
    session: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    render(
        status,
        &PhoneCodePage {
            lang: lang.code(),
            t: lang.texts(),
            error,
            session,
        },
    )
}

/// The number is registered.
pub fn phone_done(lang: Lang) -> Response {
    render(
        StatusCode::OK,
        &PhoneDonePage {
            lang: lang.code(),
            t: lang.texts(),
        },
    )
}

/// Adds `Retry-After` to a throttled response.
pub fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("cannot render a web page: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// The QR code of `uri` as an inline `<svg>` element: dark modules on a
/// white background with the quiet zone (ISO/IEC 18004 asks for four
/// modules; scanners fail without it on a dark page), sized by the CSS.
fn qr_svg(uri: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)?;
    let document = code
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    // The renderer writes a whole SVG file; inside HTML the XML
    // declaration has no place.
    let element = match document.find("<svg") {
        Some(start) => &document[start..],
        None => document.as_str(),
    };
    Ok(element.to_owned())
}

/// The base32 secret in groups of four, as apps show and users type it.
fn group_secret(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|group| String::from_utf8_lossy(group))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_in_groups_of_four() {
        assert_eq!(group_secret(""), "");
        assert_eq!(group_secret("ABC"), "ABC");
        assert_eq!(group_secret("ABCDEFGH"), "ABCD EFGH");
        assert_eq!(
            group_secret("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
            "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP"
        );
        assert_eq!(group_secret("ABCDE"), "ABCD E");
    }

    #[test]
    fn qr_code_is_an_svg_element_with_quiet_zone() {
        let svg = qr_svg("otpauth://totp/otpd:alice?secret=JBSWY3DPEHPK3PXP&issuer=otpd").unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(!svg.contains("<?xml"));
        assert!(svg.contains("viewBox"));
        assert!(svg.contains("fill=\"#ffffff\""));
        assert!(svg.contains("fill=\"#000000\""));
        // The first dark module is inset by the quiet zone, not at 0 0.
        let path = svg.split("<path").nth(1).unwrap();
        assert!(!path.contains("d=\"M0 0"), "{path}");
    }
}
