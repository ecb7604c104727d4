//! RFC 6238 through `totp-rs`: which time step, if any, a code belongs to.

use crate::core::record::UserRecord;
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

/// Builds the `totp-rs` generator for a secret and its parameters.
pub fn generator(
    secret: &[u8],
    algo: Algorithm,
    digits: u8,
    period: u64,
    window: u16,
) -> Result<Totp, String> {
    Builder::new()
        .with_algorithm(algorithm(algo))
        .with_digits(digits)
        .with_step_duration(period)
        .with_skew(window)
        .with_secret(secret.to_vec())
        .build()
        .map_err(|e| e.to_string())
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

/// Matches `code` (already normalised to the record's digits) against the
/// record's token at `now`, `window` steps either side (RFC 6238 §5.2), and
/// applies the replay guard: only a step greater than `last_accepted_step`
/// is fresh.
pub fn match_code(
    record: &UserRecord,
    code: &str,
    now: u64,
    window: u16,
) -> Result<CodeMatch, String> {
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
    use crate::core::record::{EnrolState, SecretBytes};

    pub(crate) fn record(secret: &[u8], algo: Algorithm, digits: u8, period: u64) -> UserRecord {
        UserRecord {
            version: 1,
            state: EnrolState::Active,
            secret: SecretBytes::new(secret.to_vec()),
            algorithm: algo,
            digits,
            period,
            issuer: "test".into(),
            created: 0,
            last_success: None,
            last_accepted_step: None,
            user_failures: 0,
            last_failure: None,
            fallback: Default::default(),
        }
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
