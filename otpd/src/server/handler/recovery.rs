//! Recovery codes: drawn from the OS RNG, shown once, stored only as
//! hashes; a set comes with every confirmation (`verify.rs`) and with
//! `otpd recovery-codes`.

use super::*;
use crate::core::tokens::{recovery_code, CodeHash, RECOVERY_LEN};
use crate::rng::random_bytes;

impl Handler {
    /// `count` fresh recovery codes: the codes to show and their hashes.
    pub(super) fn fresh_recovery_codes(
        count: u32,
    ) -> Result<(Vec<SecretText>, Vec<CodeHash>), Response> {
        let mut shown = Vec::new();
        let mut stored = Vec::new();
        for _ in 0..count {
            let code = recovery_code(&random_bytes::<RECOVERY_LEN>().map_err(internal)?);
            let canonical = code.replace('-', "");
            stored.push(CodeHash::new(
                &canonical,
                &random_bytes::<16>().map_err(internal)?,
            ));
            shown.push(SecretText::new(code));
        }
        Ok((shown, stored))
    }

    /// `otpd recovery-codes USER`: replaces the user's recovery codes.
    pub(super) fn recovery_codes(
        &self,
        caller: &Caller,
        user: &str,
        count: Option<u32>,
    ) -> Response {
        let count = count.unwrap_or(self.config.recovery.count);
        if !(1..=100).contains(&count) {
            return refuse(
                ErrorCode::BadRequest,
                format!("--count {count}: must be 1 to 100"),
            );
        }
        let (codes, hashes) = match Self::fresh_recovery_codes(count) {
            Ok(fresh) => fresh,
            Err(response) => return response,
        };
        let result = self.update(user, |r| {
            let mut next = r.clone();
            next.fallback.recovery = hashes.clone();
            Ok((next, ()))
        });
        match result {
            Ok(()) => {
                info!(target: "otpd::audit", user = ?user, uid = caller.uid, op = "recovery_codes", outcome = "replaced", recovery_codes_left = count);
                Response::RecoveryCodes {
                    user: user.to_owned(),
                    codes,
                }
            }
            Err(response) => response,
        }
    }
}
