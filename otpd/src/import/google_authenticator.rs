//! pam_google_authenticator's secret file (`~/.google_authenticator`):
//!
//! ```text
//! K5GTXAQFUPZKQUKEFKPKOBUB64          the secret, base32
//! " RATE_LIMIT 3 30 1796396145        attempts, seconds, recent attempts
//! " WINDOW_SIZE 3                     codes accepted around now (TOTP)
//! " DISALLOW_REUSE 59879871           time steps used (unix time / 30)
//! " TOTP_AUTH                         time-based ( " HOTP_COUNTER 1 ": counter-based)
//! 96683582                            scratch codes, eight digits, each good once
//! ```
//!
//! The module checks TOTP steps from now − (W−1)/2 to now + W/2 for a
//! WINDOW_SIZE of W, and HOTP counters from HOTP_COUNTER to
//! HOTP_COUNTER + W − 1; HOTP_COUNTER is the counter of the next code.

use super::{base32_decode, ImportedToken, ImportedUser, ScratchCode};
use crate::core::tokens::SCRATCH_LEN;
use otpd_proto::{Algorithm, TokenKind};
use zeroize::Zeroizing;

/// The longest file read: a secret, a dozen option lines and scratch codes
/// fit in far less.
pub const MAX_FILE_LEN: usize = 64 * 1024;

/// pam_google_authenticator's WINDOW_SIZE when the file has none.
const DEFAULT_WINDOW_SIZE: u64 = 3;
/// otpd's own ranges (`otpd enroll --period`, `[totp] window`, `[hotp]
/// window`), to which an imported file is clamped.
const MIN_PERIOD: u64 = 15;
const MAX_PERIOD: u64 = 300;
const MAX_TOTP_WINDOW: u64 = 10;
const MAX_HOTP_WINDOW: u64 = 100;

/// Reads one user's file as pam_google_authenticator reads it. `Err`
/// (naming the line, never quoting a secret) when the file cannot be
/// imported at all; lines that otpd does not honour as written become
/// notes. Nothing that the module would refuse becomes usable here.
pub fn parse(user: &str, text: &str) -> Result<ImportedUser, String> {
    if text.len() > MAX_FILE_LEN {
        return Err(format!("the file is longer than {MAX_FILE_LEN} bytes"));
    }
    let mut lines = text.lines().enumerate();
    // The secret is line 1, as the module reads it.
    let secret_line = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
    if secret_line.is_empty() {
        return Err("line 1 (the secret) is empty".into());
    }
    if secret_line.contains('=') {
        return Err(
            "line 1 (the secret) has '=' padding, which pam_google_authenticator cannot read"
                .into(),
        );
    }
    // As the module reads it: spaces, tabs and dashes dropped, and 0, 1, 8
    // taken for O, L, B (easily mistyped when copied by hand).
    let cleaned = Zeroizing::new(
        secret_line
            .chars()
            .filter(|c| !matches!(c, ' ' | '\t' | '-'))
            .map(|c| match c {
                '0' => 'O',
                '1' => 'L',
                '8' => 'B',
                other => other,
            })
            .collect::<String>(),
    );
    let secret = base32_decode(&cleaned)
        .filter(|s| !s.is_empty())
        .ok_or("line 1 (the secret) is not base32")?;

    let mut notes = Vec::new();
    let mut totp_auth = false;
    let mut hotp_counter: Option<u64> = None;
    let mut window_size: Option<u64> = None;
    let mut step_size: Option<u64> = None;
    let mut used_steps: Option<Vec<u64>> = None;
    let mut scratch_codes = Vec::new();
    // The module stops looking for scratch codes at the first line that is
    // neither an option, a blank line nor a code.
    let mut scratch_ended = false;

    for (index, raw) in lines {
        let n = index + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let Some(option) = line.strip_prefix('"') else {
            let code = line.len() == SCRATCH_LEN
                && line.bytes().all(|b| b.is_ascii_digit())
                && !line.starts_with('0');
            if code && !scratch_ended {
                scratch_codes.push(ScratchCode(Zeroizing::new(line.to_owned())));
            } else if code {
                notes.push(format!(
                    "line {n}: a scratch code after a line that is none, which pam_google_authenticator does not read either: not imported"
                ));
            } else {
                scratch_ended = true;
                notes.push(format!(
                    "line {n} is neither an option nor a scratch code (eight digits, not starting with 0): ignored"
                ));
            }
            continue;
        };
        let mut words = option.split_whitespace();
        let name = words.next().unwrap_or("");
        let values: Vec<&str> = words.collect();
        let numbers: Option<Vec<u64>> = values.iter().map(|v| v.parse().ok()).collect();
        match (name, numbers) {
            ("TOTP_AUTH", _) => totp_auth = true,
            ("HOTP_COUNTER", Some(v)) if v.len() == 1 => hotp_counter = Some(v[0]),
            ("WINDOW_SIZE", Some(v)) if v.len() == 1 && (1..=100).contains(&v[0]) => {
                window_size = Some(v[0])
            }
            ("STEP_SIZE", Some(v)) if v.len() == 1 && (1..=60).contains(&v[0]) => {
                step_size = Some(v[0])
            }
            ("DISALLOW_REUSE", Some(v)) => used_steps = Some(v),
            ("RATE_LIMIT", Some(v)) if v.len() >= 2 => notes.push(format!(
                "line {n}: RATE_LIMIT {} {} is not carried over: it counts every attempt from anywhere, so a stranger could keep the user locked out; otpd's own limits (per source and per user) apply",
                v[0], v[1]
            )),
            ("TIME_SKEW", _) => notes.push(format!(
                "line {n}: TIME_SKEW{} (the phone's clock was found off by that many steps) is not carried over; otpd checks codes around its own clock, so the phone's clock must be right",
                match values.as_slice() {
                    [skew] if skew.parse::<i64>().is_ok() => format!(" {skew}"),
                    _ => String::new(),
                }
            )),
            // pam_google_authenticator's own bookkeeping while it learns a
            // skew; nothing to carry over.
            ("RESETTING_TIME_SKEW", _) => {}
            (last, _) if last.len() == 5 && last.starts_with("LAST") => notes.push(format!(
                "line {n}: {last} (a login remembered for grace_period=) is not carried over: the next login asks for a code"
            )),
            (
                "HOTP_COUNTER" | "WINDOW_SIZE" | "STEP_SIZE" | "DISALLOW_REUSE" | "RATE_LIMIT",
                _,
            ) => {
                // The values are not quoted: a file's text is never echoed
                // beyond what was read as numbers.
                return Err(format!("line {n}: the values of {name} are not valid"))
            }
            // At most 15 characters of the name are shown: never enough to
            // hold a whole secret that slid onto an option line.
            _ => notes.push(format!(
                "line {n}: the option {:?}{} is unknown to otpd: ignored",
                name.chars().take(15).collect::<String>(),
                if name.chars().count() > 15 { "…" } else { "" }
            )),
        }
    }

    // The module counts only from HOTP_COUNTER 1 (0 means not counter-based).
    let hotp_counter = hotp_counter.filter(|c| *c >= 1);
    let kind = match (totp_auth, hotp_counter) {
        (true, Some(_)) => {
            notes.push("the file has both TOTP_AUTH and HOTP_COUNTER: counter-based, as pam_google_authenticator reads it".into());
            TokenKind::Hotp
        }
        (false, Some(_)) => TokenKind::Hotp,
        (true, None) => TokenKind::Totp,
        (false, None) => {
            return Err("the file has neither TOTP_AUTH nor HOTP_COUNTER (from 1), so pam_google_authenticator accepts only its scratch codes; there is no token to import".into())
        }
    };
    let file_period = step_size.unwrap_or(30);
    // A file the user wrote may ask for what otpd never enrols with: the
    // period and window are clamped to otpd's own ranges (a wider window
    // or a 1-second step multiplies the codes a guess can hit).
    let period = file_period.clamp(MIN_PERIOD, MAX_PERIOD);
    if kind == TokenKind::Totp && period != file_period {
        notes.push(format!(
            "STEP_SIZE {file_period} is outside otpd's {MIN_PERIOD} to {MAX_PERIOD} s: imported with {period} s, \
             which the app's codes do not follow; enrol the user again (otpd enroll USER --force)"
        ));
    }
    let w = window_size.unwrap_or(DEFAULT_WINDOW_SIZE);
    let window = match kind {
        TokenKind::Totp => {
            if w.is_multiple_of(2) {
                notes.push(format!(
                    "WINDOW_SIZE {w} is even: pam_google_authenticator accepts {} step(s) back and {} ahead; otpd accepts {} either side",
                    (w - 1) / 2,
                    w / 2,
                    (w / 2).min(MAX_TOTP_WINDOW)
                ));
            }
            if w / 2 > MAX_TOTP_WINDOW {
                notes.push(format!(
                    "WINDOW_SIZE {w} is more than otpd allows: imported with {MAX_TOTP_WINDOW} step(s) either side (WINDOW_SIZE {})",
                    2 * MAX_TOTP_WINDOW + 1
                ));
            }
            (w / 2).min(MAX_TOTP_WINDOW) as u16
        }
        TokenKind::Hotp => {
            if w - 1 > MAX_HOTP_WINDOW {
                notes.push(format!(
                    "WINDOW_SIZE {w} is more than otpd allows: imported with a look-ahead of {MAX_HOTP_WINDOW}"
                ));
            }
            (w - 1).min(MAX_HOTP_WINDOW) as u16
        }
    };
    let last_used = match (kind, used_steps) {
        (TokenKind::Totp, None) => {
            notes.push(
                "DISALLOW_REUSE is off in this file: otpd accepts every code only once".into(),
            );
            None
        }
        // The module records steps of its STEP_SIZE: the same unit as ours
        // (converted when the period was clamped: the step that holds the
        // end of the newest used one). otpd refuses the newest used step
        // and every older one.
        (TokenKind::Totp, Some(steps)) => steps.into_iter().max().map(|step| {
            if period == file_period {
                step
            } else {
                (step.saturating_add(1).saturating_mul(file_period) - 1) / period
            }
        }),
        (TokenKind::Hotp, Some(_)) => {
            notes.push(
                "DISALLOW_REUSE means nothing for a counter-based token: every HOTP code is good once anyway".into(),
            );
            None
        }
        (TokenKind::Hotp, None) => None,
    };
    Ok(ImportedUser {
        user: user.to_owned(),
        tokens: vec![ImportedToken {
            kind,
            secret,
            algorithm: Algorithm::Sha1,
            digits: 6,
            period,
            last_used,
            first_counter: hotp_counter.unwrap_or(0),
            window: Some(window),
        }],
        scratch_codes,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as `google-authenticator -t -d -f -r 3 -R 30 -w 3 -e 5`
    /// writes it, after one login (the run recorded in docs/migrating).
    const TOTP_FILE: &str = "K5GTXAQFUPZKQUKEFKPKOBUB64\n\" RATE_LIMIT 3 30 1796396145\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE 59879871\n\" TOTP_AUTH\n96683582\n20204582\n74638726\n16493020\n33523053\n";

    #[test]
    fn a_totp_file_with_every_option() {
        let u = parse("alice", TOTP_FILE).unwrap();
        assert_eq!(u.user, "alice");
        let t = &u.tokens[0];
        assert_eq!(t.kind, TokenKind::Totp);
        assert_eq!(t.secret.len(), 16);
        assert_eq!((t.digits, t.period, t.window), (6, 30, Some(1)));
        assert_eq!(t.last_used, Some(59879871));
        assert_eq!(u.scratch_codes.len(), 5);
        assert_eq!(*u.scratch_codes[0].0, "96683582");
        assert_eq!(u.notes.len(), 1, "{:?}", u.notes);
        assert!(u.notes[0].contains("RATE_LIMIT 3 30 is not carried over"));
        // Nothing of the secret or the codes in Debug.
        let debug = format!("{u:?}");
        assert!(
            !debug.contains("96683582") && !debug.contains("K5GT"),
            "{debug}"
        );
    }

    #[test]
    fn an_hotp_file_counts_from_its_counter() {
        let u = parse(
            "bob",
            "Y3UDVSIVFJ3RXMMK7SZDXJOMXA\n\" WINDOW_SIZE 3\n\" HOTP_COUNTER 4\n29502064\n",
        )
        .unwrap();
        let t = &u.tokens[0];
        assert_eq!(t.kind, TokenKind::Hotp);
        assert_eq!((t.first_counter, t.last_used, t.window), (4, None, Some(2)));
        assert_eq!(u.scratch_codes.len(), 1);
        // No WINDOW_SIZE: the module's 3, not otpd's look-ahead of 10. A
        // code with a leading 0 ends the codes, as in the module.
        let plain = parse(
            "d",
            "JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n12345678\n01234567\n87654321\n",
        )
        .unwrap();
        assert_eq!(plain.tokens[0].window, Some(2));
        assert_eq!(plain.scratch_codes.len(), 1);
        assert!(plain
            .notes
            .join("\n")
            .contains("line 5: a scratch code after"));
        let totp = parse("e", "JBSWY3DPEHPK3PXP\n\" TOTP_AUTH\n").unwrap();
        assert_eq!(totp.tokens[0].window, Some(1));
        // Both lines: counter-based, as the module reads it, with a note.
        let both = parse("b", "JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n\" TOTP_AUTH\n").unwrap();
        assert_eq!(both.tokens[0].kind, TokenKind::Hotp);
        assert!(both.notes[0].contains("both"));
        // Typed by hand: lower case, dashes, and 0/1/8 for O/L/B.
        let typed = parse("c", "jbsw-y3dp ehpk-3pxp\n\" TOTP_AUTH\n").unwrap();
        assert_eq!(typed.tokens[0].secret.as_slice(), b"Hello!\xde\xad\xbe\xef");
    }

    #[test]
    fn windows_and_steps_beyond_otpds_own_ranges_are_clamped_with_a_note() {
        let u = parse(
            "u",
            "JBSWY3DPEHPK3PXP\n\" WINDOW_SIZE 100\n\" STEP_SIZE 1\n\" DISALLOW_REUSE 1700000005\n\" TOTP_AUTH\n",
        )
        .unwrap();
        let t = &u.tokens[0];
        assert_eq!((t.period, t.window), (15, Some(10)));
        // Used step 1,700,000,005 of 1 s ends at second 1,700,000,006: the
        // 15 s step that holds it, and everything before, stays used.
        assert_eq!(t.last_used, Some(1_700_000_005 / 15));
        let notes = u.notes.join("\n");
        assert!(
            notes.contains("STEP_SIZE 1 is outside otpd's 15 to 300 s"),
            "{notes}"
        );
        assert!(
            notes.contains("WINDOW_SIZE 100 is more than otpd allows"),
            "{notes}"
        );
        // Within the ranges: untouched, no note.
        let u = parse(
            "u",
            "JBSWY3DPEHPK3PXP\n\" WINDOW_SIZE 21\n\" STEP_SIZE 60\n\" TOTP_AUTH\n",
        )
        .unwrap();
        assert_eq!((u.tokens[0].period, u.tokens[0].window), (60, Some(10)));
        assert!(!u
            .notes
            .iter()
            .any(|n| n.contains("more than otpd allows") || n.contains("outside")));
    }

    #[test]
    fn what_otpd_cannot_honour_is_noted() {
        let u = parse(
            "carol",
            "JBSWY3DPEHPK3PXP\n\" TIME_SKEW 10\n\" RESETTING_TIME_SKEW \n\" WINDOW_SIZE 4\n\" STEP_SIZE 60\n\" FUTURE_OPTION x\n1234\n\" LAST0 192.0.2.7 1796396569\n\" TOTP_AUTH\n",
        )
        .unwrap();
        let t = &u.tokens[0];
        assert_eq!((t.period, t.window, t.last_used), (60, Some(2), None));
        let notes = u.notes.join("\n");
        for expected in [
            "TIME_SKEW 10",
            "WINDOW_SIZE 4 is even",
            "FUTURE_OPTION",
            "line 7",
            "DISALLOW_REUSE is off",
            "LAST0",
        ] {
            assert!(notes.contains(expected), "{expected}: {notes}");
        }
        assert!(!notes.contains("JBSW"));
    }

    #[test]
    fn files_that_cannot_be_imported_say_why_without_the_secret() {
        for (text, why) in [
            ("", "empty"),
            ("NOT*BASE32\n", "not base32"),
            ("JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER x\n", "HOTP_COUNTER"),
            ("JBSWY3DPEHPK3PXP\n\" DISALLOW_REUSE\n", "neither"),
            (
                "JBSWY3DPEHPK3PXP\n\" WINDOW_SIZE 0\n\" TOTP_AUTH\n",
                "WINDOW_SIZE",
            ),
            (
                "JBSWY3DPEHPK3PXP\n\" RATE_LIMIT 3\n\" TOTP_AUTH\n",
                "RATE_LIMIT",
            ),
            ("\nJBSWY3DPEHPK3PXP\n\" TOTP_AUTH\n", "empty"),
            ("JBSWY3DPEHPK3PXA====\n\" TOTP_AUTH\n", "padding"),
            ("JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 0\n", "neither"),
            (
                "JBSWY3DPEHPK3PXP\n\" WINDOW_SIZE 101\n\" TOTP_AUTH\n",
                "WINDOW_SIZE",
            ),
            (
                "JBSWY3DPEHPK3PXP\n\" STEP_SIZE 61\n\" TOTP_AUTH\n",
                "STEP_SIZE",
            ),
        ] {
            let e = parse("u", text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains("JBSW"), "{e}");
        }
    }
}
