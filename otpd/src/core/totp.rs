//! RFC 6238 and RFC 4226 through `totp-rs`: which time step or counter
//! value, if any, a code belongs to.

use crate::core::record::{Device, TokenKind};
use otpd_proto::Algorithm;
use totp_rs::{Builder, Totp};

/// How a (normalised) code relates to a user's token at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMatch {
    /// Valid for a step later than the last accepted one.
    Fresh {
        /// The matched time step (unix time / period).
        step: u64,
    },
    /// Valid only for steps already used (the replay guard says no).
    Used,
    /// Not valid within the window.
    NoMatch,
}

fn algorithm(a: Algorithm) -> totp_rs::Algorithm {
    match a {
        Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
        Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
        Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
    }
}

/// The shortest secret accepted: 80 bits, what pam_google_authenticator
/// and many hardware tokens were given. New enrolments get 160.
pub const MIN_SECRET_LEN: usize = 10;

/// Builds the `totp-rs` generator for a secret and its parameters.
pub fn generator(
    secret: &[u8],
    algo: Algorithm,
    digits: u8,
    period: u64,
    window: u16,
) -> Result<Totp, String> {
    if !(6..=8).contains(&digits) {
        return Err(format!("{digits} digits: must be 6 to 8"));
    }
    if period == 0 {
        return Err("a period of 0 seconds".into());
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the secret has {} bits, fewer than {}",
            secret.len() * 8,
            MIN_SECRET_LEN * 8
        ));
    }
    // `build` refuses secrets under 128 bits (RFC 4226 §4's minimum). Tokens
    // imported from pam_google_authenticator (80-bit secrets) or hardware
    // keys already exist on the user's device and must keep working, so the
    // checks that matter here are made above and `build_noncompliant` used.
    Ok(Builder::new()
        .with_algorithm(algorithm(algo))
        .with_digits(digits)
        .with_step_duration(period)
        .with_skew(window)
        .with_secret(secret.to_vec())
        .build_noncompliant())
}

/// The RFC 4226 code of `counter`. HOTP(K, C) is TOTP with a step of one
/// second at time C (RFC 6238 §4: T = (time - T0) / X), so totp-rs
/// computes it; there is no HOTP type in the crate.
pub fn hotp_code(
    secret: &[u8],
    algo: Algorithm,
    digits: u8,
    counter: u64,
) -> Result<String, String> {
    Ok(generator(secret, algo, digits, 1, 0)?
        .generate(counter)
        .to_string())
}

/// The `otpauth://hotp/ISSUER:ACCOUNT?secret=…&issuer=…&counter=N` URI of
/// an HOTP token, and the secret in base32. totp-rs writes only `totp` URIs:
/// this one is that URI with the type changed and the counter added (the
/// Key Uri Format's only differences between the two).
pub fn otpauth_hotp_uri(
    secret: &[u8],
    algo: Algorithm,
    digits: u8,
    counter: u64,
    issuer: &str,
    account: &str,
) -> Result<(String, String), String> {
    let (uri, b32) = otpauth_uri(secret, algo, digits, 30, issuer, account)?;
    let rest = uri
        .strip_prefix("otpauth://totp/")
        .ok_or_else(|| format!("unexpected URI from totp-rs: {}", uri.len()))?;
    Ok((format!("otpauth://hotp/{rest}&counter={counter}"), b32))
}

/// The `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…` URI of a token
/// (Key Uri Format), with `algorithm`, `digits` and `period` only when they
/// differ from the defaults, and the secret in base32 for manual entry.
pub fn otpauth_uri(
    secret: &[u8],
    algo: Algorithm,
    digits: u8,
    period: u64,
    issuer: &str,
    account: &str,
) -> Result<(String, String), String> {
    let totp = Builder::new()
        .with_algorithm(algorithm(algo))
        .with_digits(digits)
        .with_step_duration(period)
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(|e| e.to_string())?;
    let uri = totp.to_url().map_err(|e| e.to_string())?;
    Ok((uri, totp.secret().to_base32()))
}

/// Matches `code` (already normalised to the device's digits) against a
/// device: a TOTP one at `now` with `window` steps either side, an HOTP
/// one with `window` counter values of look-ahead ([`match_hotp`]).
pub fn match_device(
    device: &Device,
    code: &str,
    now: u64,
    window: u16,
) -> Result<CodeMatch, String> {
    match device.kind {
        TokenKind::Totp => match_code(device, code, now, window),
        TokenKind::Hotp => match_hotp(device, code, window),
    }
}

/// HOTP (RFC 4226 §7.4): the code is looked for at the next counter value
/// and `look_ahead` values after it (presses of the button that never
/// reached a login). A code of one of the `look_ahead` values before the
/// next one is reported as used. The step in `Fresh` is the matched counter
/// value, which becomes the device's `last_accepted_step`.
pub fn match_hotp(device: &Device, code: &str, look_ahead: u16) -> Result<CodeMatch, String> {
    let next = device.next_counter();
    let check = |counter: u64| -> Result<bool, String> {
        let candidate = hotp_code(
            device.secret.expose(),
            device.algorithm,
            device.digits,
            counter,
        )?;
        Ok(constant_time_eq::constant_time_eq(
            candidate.as_bytes(),
            code.as_bytes(),
        ))
    };
    for counter in next..=next.saturating_add(u64::from(look_ahead)) {
        if check(counter)? {
            return Ok(CodeMatch::Fresh { step: counter });
        }
    }
    if let Some(last) = device.last_accepted_step {
        for counter in last.saturating_sub(u64::from(look_ahead))..=last {
            if check(counter)? {
                return Ok(CodeMatch::Used);
            }
        }
    }
    Ok(CodeMatch::NoMatch)
}

/// HOTP resynchronisation: the counter value of `code2` when `code1` and
/// `code2` are the codes of two consecutive counter values from the next
/// one up to `window` after it; `None` when they are not. Never earlier
/// than the next value, so a resync cannot make a used code good again.
pub fn resync_hotp(
    device: &Device,
    code1: &str,
    code2: &str,
    window: u64,
) -> Result<Option<u64>, String> {
    let next = device.next_counter();
    let code = |counter| {
        hotp_code(
            device.secret.expose(),
            device.algorithm,
            device.digits,
            counter,
        )
    };
    let mut previous = code(next)?;
    for counter in next..next.saturating_add(window) {
        let following = code(counter + 1)?;
        let first = constant_time_eq::constant_time_eq(previous.as_bytes(), code1.as_bytes());
        let second = constant_time_eq::constant_time_eq(following.as_bytes(), code2.as_bytes());
        if first && second {
            return Ok(Some(counter + 1));
        }
        previous = following;
    }
    Ok(None)
}

/// Matches `code` (already normalised to the device's digits) against a
/// TOTP device at `now`, `window` steps either side (RFC 6238 §5.2), and
/// applies the replay guard: only a step greater than `last_accepted_step`
/// is fresh.
pub fn match_code(device: &Device, code: &str, now: u64, window: u16) -> Result<CodeMatch, String> {
    let record = device;
    let totp = generator(
        record.secret.expose(),
        record.algorithm,
        record.digits,
        record.period,
        window,
    )?;
    // `check` scans the window from its oldest step and returns the first match.
    let Some(step) = totp.check(code, now) else {
        return Ok(CodeMatch::NoMatch);
    };
    let Some(last) = record.last_accepted_step else {
        return Ok(CodeMatch::Fresh { step });
    };
    if step > last {
        return Ok(CodeMatch::Fresh { step });
    }
    // The oldest match is used up; a later step in the window may still carry
    // the same digits (a 1-in-10^digits coincidence), and that one is fresh.
    let newest = now / record.period + u64::from(window);
    for later in last.saturating_add(1)..=newest {
        let candidate = totp.generate(later * record.period).to_string();
        if constant_time_eq::constant_time_eq(candidate.as_bytes(), code.as_bytes()) {
            return Ok(CodeMatch::Fresh { step: later });
        }
    }
    Ok(CodeMatch::Used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{EnrollState, SecretBytes};

    pub(crate) fn record(secret: &[u8], algo: Algorithm, digits: u8, period: u64) -> Device {
        Device {
            name: "default".into(),
            state: EnrollState::Active,
            kind: TokenKind::Totp,
            secret: SecretBytes::new(secret.to_vec()),
            algorithm: algo,
            digits,
            period,
            created: 0,
            last_accepted_step: None,
            window: None,
            replaces: None,
        }
    }

    /// RFC 4226 Appendix D: the codes of counter 0 to 9 for the ASCII key
    /// "12345678901234567890".
    const HOTP_VECTORS: [&str; 10] = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];

    fn hotp(next: u64) -> Device {
        let mut d = record(SHA1_KEY, Algorithm::Sha1, 6, 30);
        d.kind = TokenKind::Hotp;
        d.last_accepted_step = next.checked_sub(1);
        d
    }

    #[test]
    fn rfc4226_appendix_d_vectors() {
        for (counter, code) in HOTP_VECTORS.iter().enumerate() {
            assert_eq!(
                hotp_code(SHA1_KEY, Algorithm::Sha1, 6, counter as u64).unwrap(),
                *code
            );
        }
    }

    #[test]
    fn hotp_looks_ahead_and_refuses_used_counters() {
        let d = hotp(2);
        // The next value, and values up to the look-ahead.
        assert_eq!(
            match_hotp(&d, HOTP_VECTORS[2], 3).unwrap(),
            CodeMatch::Fresh { step: 2 }
        );
        assert_eq!(
            match_hotp(&d, HOTP_VECTORS[5], 3).unwrap(),
            CodeMatch::Fresh { step: 5 }
        );
        assert_eq!(
            match_hotp(&d, HOTP_VECTORS[6], 3).unwrap(),
            CodeMatch::NoMatch
        );
        // Values before the next one are used.
        assert_eq!(match_hotp(&d, HOTP_VECTORS[1], 3).unwrap(), CodeMatch::Used);
        assert_eq!(match_hotp(&d, HOTP_VECTORS[0], 3).unwrap(), CodeMatch::Used);
        // A token that never counted: nothing is used.
        assert_eq!(
            match_hotp(&hotp(0), HOTP_VECTORS[0], 0).unwrap(),
            CodeMatch::Fresh { step: 0 }
        );
        assert_eq!(
            match_device(&d, HOTP_VECTORS[3], 0, 10).unwrap(),
            CodeMatch::Fresh { step: 3 }
        );
    }

    #[test]
    fn hotp_resync_needs_two_consecutive_codes_ahead() {
        let d = hotp(1);
        assert_eq!(
            resync_hotp(&d, HOTP_VECTORS[7], HOTP_VECTORS[8], 100).unwrap(),
            Some(8)
        );
        assert_eq!(
            resync_hotp(&d, HOTP_VECTORS[1], HOTP_VECTORS[2], 100).unwrap(),
            Some(2)
        );
        // Not consecutive, reversed, behind the counter, or beyond the window.
        assert_eq!(
            resync_hotp(&d, HOTP_VECTORS[7], HOTP_VECTORS[9], 100).unwrap(),
            None
        );
        assert_eq!(
            resync_hotp(&d, HOTP_VECTORS[8], HOTP_VECTORS[7], 100).unwrap(),
            None
        );
        assert_eq!(
            resync_hotp(&hotp(5), HOTP_VECTORS[3], HOTP_VECTORS[4], 100).unwrap(),
            None
        );
        assert_eq!(
            resync_hotp(&d, HOTP_VECTORS[7], HOTP_VECTORS[8], 6).unwrap(),
            None
        );
        assert_eq!(
            resync_hotp(&d, HOTP_VECTORS[7], HOTP_VECTORS[8], 7).unwrap(),
            Some(8)
        );
    }

    #[test]
    fn hotp_uri_has_its_type_and_counter() {
        let (uri, _) = otpauth_hotp_uri(SHA1_KEY, Algorithm::Sha1, 6, 7, "Acme", "bob").unwrap();
        assert_eq!(
            uri,
            "otpauth://hotp/Acme:bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme&counter=7"
        );
    }

    #[test]
    fn short_imported_secrets_work_and_tiny_ones_are_refused() {
        // 80 bits: the RFC 4226 key cut to 10 bytes, checked against itself.
        let g = generator(&SHA1_KEY[..10], Algorithm::Sha1, 6, 30, 0).unwrap();
        assert_eq!(g.generate(59).to_string().len(), 6);
        assert!(generator(&SHA1_KEY[..9], Algorithm::Sha1, 6, 30, 0).is_err());
        assert!(generator(SHA1_KEY, Algorithm::Sha1, 9, 30, 0).is_err());
        assert!(generator(SHA1_KEY, Algorithm::Sha1, 7, 30, 0).is_ok());
    }

    const SHA1_KEY: &[u8] = b"12345678901234567890";
    const SHA256_KEY: &[u8] = b"12345678901234567890123456789012";
    const SHA512_KEY: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 Appendix B: (time, SHA1, SHA256, SHA512), 8 digits, 30 s.
    const VECTORS: [(u64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1111111109, "07081804", "68084774", "25091201"),
        (1111111111, "14050471", "67062674", "99943326"),
        (1234567890, "89005924", "91819424", "93441116"),
        (2000000000, "69279037", "90698825", "38618901"),
        (20000000000, "65353130", "77737706", "47863826"),
    ];

    #[test]
    fn rfc6238_appendix_b_vectors_match_their_step() {
        for (time, sha1, sha256, sha512) in VECTORS {
            for (key, algo, code) in [
                (SHA1_KEY, Algorithm::Sha1, sha1),
                (SHA256_KEY, Algorithm::Sha256, sha256),
                (SHA512_KEY, Algorithm::Sha512, sha512),
            ] {
                let r = record(key, algo, 8, 30);
                assert_eq!(
                    match_code(&r, code, time, 0).unwrap(),
                    CodeMatch::Fresh { step: time / 30 },
                    "{algo} at {time}"
                );
                // The generator itself reproduces the vector.
                let g = generator(key, algo, 8, 30, 0).unwrap();
                assert_eq!(g.generate(time).to_string(), code);
            }
        }
    }

    #[test]
    fn six_digits_are_the_low_digits_of_the_vector() {
        let r = record(SHA1_KEY, Algorithm::Sha1, 6, 30);
        assert_eq!(
            match_code(&r, "287082", 59, 0).unwrap(),
            CodeMatch::Fresh { step: 1 }
        );
    }

    #[test]
    fn window_edges() {
        // The code of step 1234567890/30 = 41152263.
        let r = record(SHA1_KEY, Algorithm::Sha1, 8, 30);
        let step_start = 41152263 * 30;
        let code = "89005924";
        // One step later and earlier: inside window 1, outside window 0.
        assert_eq!(
            match_code(&r, code, step_start + 30, 1).unwrap(),
            CodeMatch::Fresh { step: 41152263 }
        );
        assert_eq!(
            match_code(&r, code, step_start - 1, 1).unwrap(),
            CodeMatch::Fresh { step: 41152263 }
        );
        assert_eq!(
            match_code(&r, code, step_start + 30, 0).unwrap(),
            CodeMatch::NoMatch
        );
        // Two steps away: outside window 1.
        assert_eq!(
            match_code(&r, code, step_start + 60, 1).unwrap(),
            CodeMatch::NoMatch
        );
        assert_eq!(
            match_code(&r, code, step_start - 31, 1).unwrap(),
            CodeMatch::NoMatch
        );
    }

    #[test]
    fn replay_guard_refuses_steps_up_to_the_last_accepted() {
        let mut r = record(SHA1_KEY, Algorithm::Sha1, 8, 30);
        r.last_accepted_step = Some(41152263);
        assert_eq!(
            match_code(&r, "89005924", 1234567890, 1).unwrap(),
            CodeMatch::Used
        );
        r.last_accepted_step = Some(41152262);
        assert_eq!(
            match_code(&r, "89005924", 1234567890, 1).unwrap(),
            CodeMatch::Fresh { step: 41152263 }
        );
    }

    #[test]
    fn uri_carries_issuer_account_and_non_default_parameters() {
        let (uri, b32) =
            otpauth_uri(SHA1_KEY, Algorithm::Sha1, 6, 30, "Acme Corp", "alice").unwrap();
        assert_eq!(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Corp:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Corp"
        );
        let (uri, _) = otpauth_uri(SHA256_KEY, Algorithm::Sha256, 8, 60, "h", "bob").unwrap();
        assert!(
            uri.contains("digits=8")
                && uri.contains("algorithm=SHA256")
                && uri.contains("period=60"),
            "{uri}"
        );
    }

    #[test]
    fn other_periods_are_honoured() {
        let r = record(SHA1_KEY, Algorithm::Sha1, 8, 60);
        let g = generator(SHA1_KEY, Algorithm::Sha1, 8, 60, 0).unwrap();
        let code = g.generate(6000).to_string();
        assert_eq!(
            match_code(&r, &code, 6000, 0).unwrap(),
            CodeMatch::Fresh { step: 100 }
        );
    }
}
