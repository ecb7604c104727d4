//! Enrolments as the CLI prints them, and codes computed by `oathtool`.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An enrolment, parsed from the `otpauth://` URI that `otpd enroll` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The URI exactly as printed.
    pub uri: String,
    /// The account name from the URI's label.
    pub user: String,
    /// The issuer from the `issuer=` parameter.
    pub issuer: String,
    /// Base32 secret.
    pub secret: String,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    /// 6 or 8.
    pub digits: u32,
    /// Seconds per step.
    pub period: u64,
}

impl Enrollment {
    /// Parses `otpauth://totp/ISSUER:USER?secret=…&issuer=…[&algorithm=…&digits=…&period=…]`,
    /// with the defaults of the Key Uri Format for absent parameters.
    pub fn from_uri(uri: &str) -> Result<Enrollment, String> {
        let rest = uri
            .strip_prefix("otpauth://totp/")
            .ok_or_else(|| format!("not an otpauth://totp/ URI: {uri}"))?;
        let (label, query) = rest
            .split_once('?')
            .ok_or_else(|| format!("no query in {uri}"))?;
        let label = percent_decode(label)?;
        let (label_issuer, user) = match label.split_once(':') {
            Some((issuer, user)) => (Some(issuer.to_owned()), user.trim_start().to_owned()),
            None => (None, label.clone()),
        };
        let (mut secret, mut issuer, mut algorithm, mut digits, mut period) =
            (None, None, "SHA1".to_owned(), 6, 30);
        for pair in query.split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("parameter without '=' in {uri}"))?;
            let value = percent_decode(value)?;
            match key {
                "secret" => secret = Some(value),
                "issuer" => issuer = Some(value),
                "algorithm" => algorithm = value,
                "digits" => digits = value.parse().map_err(|_| format!("digits={value}"))?,
                "period" => period = value.parse().map_err(|_| format!("period={value}"))?,
                other => return Err(format!("unexpected parameter {other} in {uri}")),
            }
        }
        let issuer = issuer
            .or(label_issuer.clone())
            .ok_or_else(|| format!("no issuer in {uri}"))?;
        if let Some(label_issuer) = label_issuer {
            if label_issuer != issuer {
                return Err(format!(
                    "label issuer {label_issuer:?} differs from issuer= {issuer:?} in {uri}"
                ));
            }
        }
        if let Some(secret) = &secret {
            crate::secrets::remember(secret);
        }
        Ok(Enrollment {
            uri: uri.to_owned(),
            user,
            issuer,
            secret: secret.ok_or_else(|| format!("no secret in {uri}"))?,
            algorithm,
            digits,
            period,
        })
    }

    /// The code for the time step that contains `unix_time`, by `oathtool`.
    pub fn code_at(&self, unix_time: u64) -> String {
        code_at(
            &self.secret,
            &self.algorithm,
            self.digits,
            self.period,
            unix_time,
        )
    }

    /// The time step that contains `unix_time`.
    pub fn step(&self, unix_time: u64) -> u64 {
        unix_time / self.period
    }

    /// A code of the right length that is valid for none of the steps
    /// around `unix_time` (±3), so it is a certain wrong guess. Remembered
    /// as a secret ([`crate::secrets`]): what a user types is never logged,
    /// right or wrong (a wrong code may be a right one mistyped).
    pub fn wrong_code(&self, unix_time: u64) -> String {
        let valid: Vec<String> = (0..=6)
            .map(|k| self.code_at(unix_time + k * self.period - 3 * self.period))
            .collect();
        wrong_code_besides(&valid, self.digits)
    }
}

/// The TOTP code for `unix_time`, computed by `oathtool`, not by our code:
/// `oathtool --totp[=sha256|sha512] -b -d DIGITS -s PERIODs -N @UNIX SECRET`.
pub fn code_at(secret: &str, algorithm: &str, digits: u32, period: u64, unix_time: u64) -> String {
    let mode = match algorithm.to_ascii_uppercase().as_str() {
        "SHA1" => "--totp".to_owned(),
        "SHA256" => "--totp=sha256".to_owned(),
        "SHA512" => "--totp=sha512".to_owned(),
        other => panic!("unknown algorithm {other}"),
    };
    let out = Command::new(crate::Program::Oathtool.path())
        .arg(mode)
        .arg("-b")
        .arg(format!("-d{digits}"))
        .arg(format!("-s{period}s"))
        .arg(format!("-N@{unix_time}"))
        .arg(secret)
        .output()
        .expect("run oathtool");
    assert!(
        out.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout)
        .expect("oathtool prints ASCII")
        .trim()
        .to_owned();
    assert_eq!(code.len(), digits as usize, "oathtool printed {code:?}");
    crate::secrets::remember(secret);
    crate::secrets::remember(&code);
    code
}

/// A code of `digits` digits that none of `valid` is (`000000`,
/// `111111` … the first that is not valid): a certain wrong guess,
/// remembered as a secret (see [`Enrolment::wrong_code`]).
pub fn wrong_code_besides(valid: &[String], digits: u32) -> String {
    let wrong = (0..10u8)
        .map(|d| char::from(b'0' + d).to_string().repeat(digits as usize))
        .find(|candidate| !valid.contains(candidate))
        .expect("ten candidates cannot all be valid");
    crate::secrets::remember(&wrong);
    wrong
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Now, as Unix time, with at least `min_remaining` seconds left in the
/// current step of `period` seconds: if fewer remain, sleeps into the next
/// step first. A test that then uses codes for the steps of `t - period`,
/// `t` and `t + period` has all of them inside window 1 for that long.
pub fn settled_now(period: u64, min_remaining: u64) -> u64 {
    assert!(
        min_remaining < period,
        "cannot wait for {min_remaining} s in a {period} s step"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let into_step = now.as_secs_f64() % period as f64;
    let remaining = period as f64 - into_step;
    if remaining < min_remaining as f64 {
        let pause = remaining + 0.2;
        println!("waiting {pause:.1} s for the next {period} s time step");
        std::thread::sleep(Duration::from_secs_f64(pause));
    }
    unix_now()
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("truncated escape in {text}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {text}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("escape is not UTF-8 in {text}"))
}

/// The `XXXX-XXXX-XXXX` recovery codes in what `otpd recovery-codes`
/// printed.
pub fn recovery_codes_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|word| {
            word.len() == 14
                && word.split('-').count() == 3
                && word.split('-').all(|group| {
                    group.len() == 4
                        && group
                            .bytes()
                            .all(|b| b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ".contains(&b))
                })
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_uri() {
        let e = Enrollment::from_uri(
            "otpauth://totp/otpd%20test:alice?secret=JBSWY3DPEHPK3PXP&issuer=otpd%20test&algorithm=SHA256&digits=8&period=60",
        )
        .unwrap();
        assert_eq!(e.user, "alice");
        assert_eq!(e.issuer, "otpd test");
        assert_eq!(e.secret, "JBSWY3DPEHPK3PXP");
        assert_eq!(
            (e.algorithm.as_str(), e.digits, e.period),
            ("SHA256", 8, 60)
        );
    }

    #[test]
    fn absent_parameters_take_the_key_uri_defaults() {
        let e = Enrollment::from_uri("otpauth://totp/X:bob?secret=AAAA&issuer=X").unwrap();
        assert_eq!((e.algorithm.as_str(), e.digits, e.period), ("SHA1", 6, 30));
    }

    #[test]
    fn refuses_what_is_not_a_totp_uri() {
        assert!(Enrollment::from_uri("otpauth://hotp/X:bob?secret=AAAA&issuer=X").is_err());
        assert!(Enrollment::from_uri("otpauth://totp/X:bob?issuer=X").is_err());
        assert!(Enrollment::from_uri("otpauth://totp/X:bob?secret=A&issuer=Y").is_err());
    }
}
