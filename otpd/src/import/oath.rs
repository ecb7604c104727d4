//! pam_oath's usersfile (`/etc/users.oath`), one token per line:
//!
//! ```text
//! HOTP/T30    alice  -  3132333435363738393031323334353637383930  59879871  287082  2026-12-04T14:52:42L
//! HOTP        bob    -  3132333435363738393031323334353637383930  5
//! type        user   PIN  secret (hex)                           counter   last OTP  its time
//! ```
//!
//! The type is `HOTP` (counter-based, also `HOTP/E`) or `HOTP/T30`,
//! `HOTP/T60` (time-based, seconds per step), each optionally followed by
//! `/6`, `/7` or `/8` digits. The PIN is `-` (none), `+` (checked by another
//! module) or a password. After a login pam_oath writes the counter, the
//! code and the local time (`2026-12-04T14:52:42L`). For HOTP the counter
//! is the last one used when a code follows it, else the next one; for
//! TOTP it means nothing (a sum of offsets), and the replay state is the
//! last code: no code for its step or an older one is accepted again. The
//! importer finds that step by computing the codes around the written time.

use super::{hex_decode, ImportedToken, ImportedUser};
use crate::core::totp::generator;
use otpd_proto::{Algorithm, TokenKind};

/// Steps searched either side of the written time for the step of the last
/// TOTP code (pam_oath's `window=` is 5 by default; sites widen it).
const SEARCH_STEPS: u64 = 120;

/// The longest usersfile read.
pub const MAX_FILE_LEN: usize = 16 * 1024 * 1024;

/// What a usersfile holds for otpd.
#[derive(Debug, Default)]
pub struct UsersFile {
    /// Every user with at least one importable token, in file order.
    pub users: Vec<ImportedUser>,
    /// Users none of whose lines can be imported, with why.
    pub failed_users: Vec<(String, String)>,
    /// Lines that name no user (or cannot be read at all).
    pub problems: Vec<String>,
}

/// The longest secret pam_oath reads, in bytes.
const MAX_OATH_SECRET: usize = 32;

/// A line's type field, as liboath knows them: (kind, seconds per step,
/// digits). `HOTP`, `HOTP/E`, `HOTP/E/7`; `HOTP/T30`, `HOTP/T60/8` …
fn parse_type(field: &str) -> Option<(TokenKind, u64, u8)> {
    let digits = |d: Option<&str>| match d {
        None | Some("6") => Some(6),
        Some("7") => Some(7),
        Some("8") => Some(8),
        Some(_) => None,
    };
    let parts: Vec<&str> = field.split('/').collect();
    match parts.as_slice() {
        ["HOTP"] => Some((TokenKind::Hotp, 30, 6)),
        ["HOTP", "E", rest @ ..] if rest.len() <= 1 => {
            Some((TokenKind::Hotp, 30, digits(rest.first().copied())?))
        }
        ["HOTP", step @ ("T30" | "T60"), rest @ ..] if rest.len() <= 1 => Some((
            TokenKind::Totp,
            if *step == "T30" { 30 } else { 60 },
            digits(rest.first().copied())?,
        )),
        _ => None,
    }
}

/// Whether a field may be named in a message: a plausible user name, not
/// something that could be a secret that slid into its place.
fn nameable(field: &str) -> bool {
    let longest_hex_run = field
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    crate::core::names::validate_user(field).is_ok() && field.len() <= 64 && longest_hex_run < 16
}

/// Reads a whole usersfile. Never fails as a whole: what cannot be read is
/// reported per user (or per line when no user can be told), never quoting
/// a secret, a PIN or an OTP.
/// `local_time` turns pam_oath's time column (`2026-12-04T14:52:42L`,
/// local time) into unix time.
pub fn parse(text: &str, local_time: &dyn Fn(&str) -> Option<u64>) -> UsersFile {
    let mut out = UsersFile::default();
    if text.len() > MAX_FILE_LEN {
        out.problems
            .push(format!("the file is longer than {MAX_FILE_LEN} bytes"));
        return out;
    }
    // Problems of users that also have good lines end up as notes.
    let mut user_problems: Vec<(String, String)> = Vec::new();
    // Users with a broken line, and its number.
    let mut broken: Vec<(String, usize)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some((kind, period, digits)) = parse_type(fields[0]) else {
            // liboath skips such lines without a word; saying so is enough.
            out.problems.push(format!(
                "line {n}: not a token line pam_oath reads (its types are HOTP, HOTP/E, HOTP/T30 and HOTP/T60, optionally /6, /7 or /8): ignored, as pam_oath ignores it"
            ));
            continue;
        };
        if fields.len() < 4 || !nameable(fields[1]) {
            out.problems.push(format!(
                "line {n} has no user name and secret where pam_oath expects them: ignored"
            ));
            continue;
        }
        let user = fields[1].to_owned();
        let problem = |why: String| (user.clone(), format!("line {n}: {why}"));
        // pam_oath tries a user's lines in order and stops at a broken one:
        // the lines after it never worked, and are not made to work now.
        if let Some(first) = broken.iter().find(|(u, _)| *u == user).map(|(_, l)| *l) {
            user_problems.push(problem(format!(
                "comes after line {first}, which makes pam_oath stop"
            )));
            continue;
        }
        let Some(secret) = hex_decode(fields[3]).filter(|s| !s.is_empty()) else {
            user_problems.push(problem("the secret is not hexadecimal".into()));
            broken.push((user.clone(), n));
            continue;
        };
        if secret.len() > MAX_OATH_SECRET {
            user_problems.push(problem(format!(
                "the secret is longer than {MAX_OATH_SECRET} bytes, which pam_oath refuses"
            )));
            broken.push((user.clone(), n));
            continue;
        }
        let counter = match fields.get(4) {
            None => 0,
            Some(c) => match c.parse::<u64>() {
                Ok(c) => c,
                Err(_) => {
                    user_problems.push(problem("the counter is not a number".into()));
                    broken.push((user.clone(), n));
                    continue;
                }
            },
        };
        let mut notes = Vec::new();
        match fields[2] {
            "-" | "+" => {}
            _ => notes.push(format!(
                "line {n}: the PIN in the file is not carried over; otpd asks only for the code (keep the password check in the PAM stack)"
            )),
        }
        let last_otp = fields.get(5).copied();
        let (last_used, first_counter) = match (kind, last_otp) {
            // A code written after it: the counter was used.
            (TokenKind::Hotp, Some(_)) => (Some(counter), counter),
            // None yet: the counter is the next one.
            (TokenKind::Hotp, None) => (None, counter),
            (TokenKind::Totp, None) => (None, 0),
            (TokenKind::Totp, Some(otp)) => {
                let Some(when) = fields.get(6).and_then(|t| local_time(t)) else {
                    user_problems.push(problem(
                        "a last code is written but no readable time: its replay state cannot be carried over".into(),
                    ));
                    broken.push((user.clone(), n));
                    continue;
                };
                match step_of(&secret, digits, period, otp, when) {
                    Some(step) => (Some(step), 0),
                    None => {
                        // Unplaceable: refuse every code up to the written
                        // time rather than risk accepting the last one again.
                        notes.push(format!(
                            "line {n}: the last code used was not found near its written time; codes up to that time are refused"
                        ));
                        (Some(when / period), 0)
                    }
                }
            }
        };
        let token = ImportedToken {
            kind,
            secret,
            algorithm: Algorithm::Sha1,
            digits,
            period,
            last_used,
            first_counter,
            window: None,
        };
        match out.users.iter_mut().find(|u| u.user == user) {
            Some(existing) => {
                existing.tokens.push(token);
                existing.notes.extend(notes);
            }
            None => out.users.push(ImportedUser {
                user,
                tokens: vec![token],
                scratch_codes: Vec::new(),
                notes,
            }),
        }
    }
    for (user, why) in user_problems {
        match out.users.iter_mut().find(|u| u.user == user) {
            Some(u) => u.notes.push(format!("{why}: that line is not imported")),
            None => match out.failed_users.iter_mut().find(|(u, _)| *u == user) {
                Some((_, reasons)) => {
                    reasons.push_str("; ");
                    reasons.push_str(&why);
                }
                None => out.failed_users.push((user, why)),
            },
        }
    }
    out
}

/// The step nearest to unix time `when` whose code is `otp`.
fn step_of(secret: &[u8], digits: u8, period: u64, otp: &str, when: u64) -> Option<u64> {
    let totp = generator(secret, Algorithm::Sha1, digits, period, 0).ok()?;
    let center = when / period;
    (0..=SEARCH_STEPS).find_map(|distance| {
        [center.checked_add(distance), center.checked_sub(distance)]
            .into_iter()
            .flatten()
            .find(|step| {
                step.checked_mul(period)
                    .is_some_and(|t| totp.generate(t).to_string() == otp)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "3132333435363738393031323334353637383930";

    #[test]
    fn types_name_kind_step_and_digits() {
        assert_eq!(parse_type("HOTP"), Some((TokenKind::Hotp, 30, 6)));
        assert_eq!(parse_type("HOTP/E"), Some((TokenKind::Hotp, 30, 6)));
        assert_eq!(parse_type("HOTP/E/8"), Some((TokenKind::Hotp, 30, 8)));
        assert_eq!(parse_type("HOTP/T30"), Some((TokenKind::Totp, 30, 6)));
        assert_eq!(parse_type("HOTP/T60"), Some((TokenKind::Totp, 60, 6)));
        assert_eq!(parse_type("HOTP/T30/8"), Some((TokenKind::Totp, 30, 8)));
        assert_eq!(parse_type("HOTP/E/7"), Some((TokenKind::Hotp, 30, 7)));
        assert_eq!(parse_type("HOTP/T60/7"), Some((TokenKind::Totp, 60, 7)));
        for bad in [
            "HOTP/7",
            "HOTP/T15",
            "HOTP/E/8/1",
            "TOTP",
            "HOTP/T0",
            "HOTP/T30/9",
            "HOTP/X",
            "HOTP/T30/8/1",
            "hotp",
        ] {
            assert_eq!(parse_type(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_file_with_totp_hotp_and_bad_lines() {
        // The code of two steps before the written time: pam_oath accepted
        // it from a phone whose clock was behind.
        let written = 1_796_396_100 + 12; // 2026-12-04T14:55:12
        let step = written / 30 - 2;
        let code = generator(b"12345678901234567890", Algorithm::Sha1, 6, 30, 0)
            .unwrap()
            .generate(step * 30)
            .to_string();
        let text = format!(
            "# users\n\
             HOTP/T30\talice\t-\t{KEY_HEX}\t2\t{code}\t2026-12-04T14:55:12L\n\
             HOTP/T30 erin - {KEY_HEX} 0 000000 2026-12-04T14:55:12L\n\
             HOTP/T30 frank - {KEY_HEX} 0 000000\n\
             HOTP ginny - {KEY_HEX} 7 287082 2026-12-04T14:55:12L\n\
             HOTP bob + {KEY_HEX} 5\n\
             HOTP/T60/8 bob 1234 {KEY_HEX}\n\
             HOTP carol - nothex\n\
             HOTP/T30 dave - {KEY_HEX}\n\
             HOTP/X dave - {KEY_HEX}\n\
             garbage\n\
             HOTP/T30 carol - {KEY_HEX}\n\
             HOTP {KEY_HEX}\n"
        );
        // The tests' "local time" is UTC.
        let utc = |t: &str| {
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%SL")
                .ok()
                .map(|d| d.and_utc().timestamp() as u64)
        };
        let f = parse(&text, &utc);
        let names: Vec<&str> = f.users.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(names, ["alice", "erin", "ginny", "bob", "dave"]);
        let alice = &f.users[0].tokens[0];
        assert_eq!(
            (alice.kind, alice.period, alice.digits),
            (TokenKind::Totp, 30, 6)
        );
        assert_eq!(alice.last_used, Some(step));
        // A last code that is no code of that time: refused up to the time.
        assert_eq!(f.users[1].tokens[0].last_used, Some(written / 30));
        assert!(f.users[1].notes[0].contains("not found"));
        // HOTP with a code after the counter: that counter is used.
        assert_eq!(f.users[2].tokens[0].last_used, Some(7));
        let f = UsersFile {
            users: f.users.into_iter().skip(3).collect(),
            ..f
        };
        let bob = &f.users[0];
        assert_eq!(bob.tokens.len(), 2);
        assert_eq!(
            (bob.tokens[0].kind, bob.tokens[0].first_counter),
            (TokenKind::Hotp, 5)
        );
        assert_eq!(bob.tokens[0].last_used, None);
        assert_eq!((bob.tokens[1].period, bob.tokens[1].digits), (60, 8));
        assert!(
            bob.notes.iter().any(|n| n.contains("PIN")),
            "{:?}",
            bob.notes
        );
        assert!(!format!("{bob:?}").contains("1234 "));
        assert_eq!(f.users[1].tokens[0].last_used, None, "dave");
        assert!(f.users[1].notes.is_empty(), "{:?}", f.users[1].notes);
        assert_eq!(f.failed_users.len(), 2);
        assert_eq!(f.failed_users[0].0, "frank");
        assert!(f.failed_users[0].1.contains("no readable time"));
        // carol's good line comes after her broken one: pam_oath never got
        // to it, and otpd does not import it.
        assert_eq!(f.failed_users[1].0, "carol");
        assert!(f.failed_users[1].1.contains("hexadecimal"));
        assert!(f.failed_users[1].1.contains("line 12: comes after line 8"));
        // Unknown types are ignored as pam_oath ignores them; a line whose
        // user is missing is not quoted.
        assert_eq!(f.problems.len(), 3, "{:?}", f.problems);
        assert!(f.problems[0].contains("line 10: not a token line"));
        assert!(f.problems[1].contains("line 11"));
        assert!(f.problems[2].contains("line 13 has no user name"));
        let everything = format!("{f:?}");
        assert!(!everything.contains(KEY_HEX) && !everything.contains("287082"));
    }
}
