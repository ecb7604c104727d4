//! The two importers' parsers (otpd/src/import): pam_google_authenticator's
//! secret file and pam_oath's usersfile, from arbitrary text.
//!
//! Invariants checked on every input:
//! - neither parser panics, whatever the bytes;
//! - no note, problem or error quotes a secret: the first line of a
//!   google-authenticator file, or the fourth field of a usersfile line
//!   (when it is a run of base32 or hex long enough that a match is no
//!   coincidence);
//! - what comes out is importable: 6 to 8 digits, a positive period, a
//!   non-empty secret, scratch codes of eight digits;
//! - a well-formed usersfile line made from the input's numbers reads back
//!   as the type, digits, period and counter it was written with.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use otpd::import::{google_authenticator, oath};
use otpd_proto::TokenKind;

#[derive(Debug, Arbitrary)]
struct Input {
    text: String,
    /// A usersfile line built from numbers.
    step: u8,
    digits: u8,
    counter: u32,
    key: Vec<u8>,
}

/// A fourth field that could be a secret: 16 or more hex digits (fixed
/// message texts never hold such a run).
fn secrets_of_usersfile(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|s| s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

fn check_user(u: &otpd::import::ImportedUser, secrets: &[&str]) {
    for t in &u.tokens {
        assert!((6..=8).contains(&t.digits), "{t:?}");
        assert!(t.period > 0 && !t.secret.is_empty(), "{t:?}");
    }
    for c in &u.scratch_codes {
        assert!(c.0.len() == 8 && c.0.bytes().all(|b| b.is_ascii_digit()));
    }
    for note in &u.notes {
        for s in secrets {
            assert!(!note.contains(s), "a note quotes a secret: {note}");
        }
    }
}

fuzz_target!(|input: Input| {
    // pam_google_authenticator's file.
    // A first line that could be a secret: 16 or more base32 letters
    // (fixed message texts never hold such a run).
    let first = input.text.lines().next().unwrap_or("").trim();
    let base32 = |b: u8| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b);
    let secrets: Vec<&str> = (first.len() >= 16 && first.bytes().all(base32))
        .then_some(first)
        .into_iter()
        .collect();
    match google_authenticator::parse("u", &input.text) {
        Ok(u) => {
            assert_eq!(u.tokens.len(), 1);
            check_user(&u, &secrets);
        }
        Err(e) => {
            for s in &secrets {
                assert!(!e.contains(s), "an error quotes the secret: {e}");
            }
        }
    }

    // pam_oath's usersfile, as given.
    let utc = |_: &str| Some(1_800_000_000u64);
    let f = oath::parse(&input.text, &utc);
    let secrets = secrets_of_usersfile(&input.text);
    for u in &f.users {
        check_user(u, &secrets);
    }
    for (_, why) in &f.failed_users {
        for s in &secrets {
            assert!(!why.contains(s), "a reason quotes a secret: {why}");
        }
    }

    // A well-formed line reads back as written.
    let step = [None, Some(30u64), Some(60)][usize::from(input.step % 3)];
    let digits = 6 + input.digits % 3;
    let mut key = input.key.clone();
    key.truncate(32);
    if key.is_empty() {
        return;
    }
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let kind = match step {
        None => format!("HOTP/E/{digits}"),
        Some(s) => format!("HOTP/T{s}/{digits}"),
    };
    let line = format!("{kind}\talice\t-\t{hex}\t{}\n", input.counter);
    let f = oath::parse(&line, &utc);
    assert_eq!(f.users.len(), 1, "{line}");
    let t = &f.users[0].tokens[0];
    assert_eq!(t.digits, digits);
    assert_eq!(t.secret.as_slice(), key.as_slice());
    match step {
        None => {
            assert_eq!(t.kind, TokenKind::Hotp);
            assert_eq!(t.first_counter, u64::from(input.counter));
            assert_eq!(t.last_used, None);
        }
        Some(s) => {
            assert_eq!(t.kind, TokenKind::Totp);
            assert_eq!(t.period, s);
        }
    }
});
