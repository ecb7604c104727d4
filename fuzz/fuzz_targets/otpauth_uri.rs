//! The `otpauth://totp/…` URI that `otpd enroll` prints and puts in the QR
//! code (`otpd::core::totp::otpauth_uri`, built by totp-rs), read back by
//! independent code: the `url` crate's parser, our own percent-decoder for
//! the label, and data-encoding's RFC 4648 base32.
//!
//! Only issuers and accounts that the daemon itself accepts are used
//! (`validate_issuer`, `validate_user`); for those, invariants:
//! - the URI is built (no error), is printable ASCII without spaces, and
//!   parses as a URL;
//! - scheme `otpauth`, host `totp`, the percent-decoded label is exactly
//!   `issuer:account`;
//! - `secret` base32-decodes to the key bytes and equals the base32 text
//!   returned beside the URI; `issuer` equals the issuer;
//! - `algorithm`, `digits` and `period` round-trip, present only when they
//!   differ from the defaults (SHA1, 6, 30); no other or repeated parameter.
#![no_main]

use arbitrary::Arbitrary;
use data_encoding::BASE32_NOPAD;
use libfuzzer_sys::fuzz_target;
use otpd::core::names::{validate_issuer, validate_user};
use otpd::core::totp::otpauth_uri;
use otpd_proto::Algorithm;
use std::collections::HashMap;

#[derive(Debug, Arbitrary)]
enum Algo {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Arbitrary)]
struct Input {
    secret: Vec<u8>,
    eight_digits: bool,
    period: u16,
    algorithm: Algo,
    issuer: String,
    account: String,
}

/// Percent-decoding as RFC 3986 defines it, written here so that the check
/// does not share code with the encoder.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| panic!("a bad escape at byte {i} of {text:?}"));
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|input: Input| {
    if !(16..=64).contains(&input.secret.len()) {
        return;
    }
    if validate_user(&input.account).is_err() || validate_issuer(&input.issuer).is_err() {
        return;
    }
    let digits = if input.eight_digits { 8 } else { 6 };
    let period = u64::from(input.period % 300) + 1;
    let algorithm = match input.algorithm {
        Algo::Sha1 => Algorithm::Sha1,
        Algo::Sha256 => Algorithm::Sha256,
        Algo::Sha512 => Algorithm::Sha512,
    };
    let (uri, base32) = otpauth_uri(
        &input.secret,
        algorithm,
        digits,
        period,
        &input.issuer,
        &input.account,
    )
    .unwrap_or_else(|e| {
        panic!(
            "a validated issuer {:?} and account {:?} give no URI: {e}",
            input.issuer, input.account
        )
    });

    assert!(
        uri.bytes().all(|b| b.is_ascii_graphic()),
        "not printable ASCII: {uri:?}"
    );
    let url = url::Url::parse(&uri).unwrap_or_else(|e| panic!("{uri:?} does not parse: {e}"));
    assert_eq!(url.scheme(), "otpauth", "{uri}");
    assert_eq!(url.host_str(), Some("totp"), "{uri}");
    assert_eq!(url.port(), None, "{uri}");
    assert!(url.fragment().is_none(), "{uri}");

    let label = url
        .path()
        .strip_prefix('/')
        .unwrap_or_else(|| panic!("no label in {uri:?}"));
    assert!(!label.contains('/'), "the label spans segments: {uri}");
    let label = String::from_utf8(percent_decode(label)).expect("the label is UTF-8");
    assert_eq!(
        label,
        format!("{}:{}", input.issuer, input.account),
        "{uri}"
    );

    let mut params: HashMap<String, String> = HashMap::new();
    for (key, value) in url.query_pairs() {
        let previous = params.insert(key.to_string(), value.to_string());
        assert!(previous.is_none(), "{key} repeated in {uri}");
    }
    for key in params.keys() {
        assert!(
            ["secret", "issuer", "algorithm", "digits", "period"].contains(&key.as_str()),
            "unexpected parameter {key} in {uri}"
        );
    }

    let secret = params.get("secret").expect("a secret parameter");
    assert_eq!(secret, &base32, "the URI's secret and the one shown differ");
    let decoded = BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap_or_else(|e| panic!("secret {secret:?} is not base32: {e}"));
    assert_eq!(decoded, input.secret, "the secret does not round-trip");

    assert_eq!(params.get("issuer"), Some(&input.issuer), "{uri}");

    let got_algorithm = params.get("algorithm").map_or("SHA1", String::as_str);
    assert_eq!(got_algorithm, algorithm.as_str(), "{uri}");
    let got_digits: u8 = params
        .get("digits")
        .map_or(Ok(6), |d| d.parse())
        .expect("digits is a number");
    assert_eq!(got_digits, digits, "{uri}");
    let got_period: u64 = params
        .get("period")
        .map_or(Ok(30), |p| p.parse())
        .expect("period is a number");
    assert_eq!(got_period, period, "{uri}");

    // The defaults are left out (Key Uri Format; shorter QR codes).
    assert_eq!(
        params.contains_key("algorithm"),
        algorithm != Algorithm::Sha1
    );
    assert_eq!(params.contains_key("digits"), digits != 6);
    assert_eq!(params.contains_key("period"), period != 30);
});
