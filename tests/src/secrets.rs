//! Every secret a test sees (TOTP secrets, codes, recovery codes, link
//! tokens, texted codes) is remembered here, and every [`crate::TestEnv`]
//! checks when it ends that none of them is in its daemon's log (which the
//! tests run at `RUST_LOG=trace`) or, in clear, in its store files.
//!
//! The list is per test binary (a process): a secret of one test must not
//! show up in another test's daemon either, so every env checks them all.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Alphabet of recovery codes (otpd's, without 0, 1, I and O).
const RECOVERY_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Remembers `secret` (shorter than 6 characters: ignored, too common).
pub fn remember(secret: &str) {
    let secret = secret.trim();
    if secret.len() >= 6 {
        SEEN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(secret.to_owned());
    }
}

/// Remembers the secrets in a CLI's output: the `secret=` of otpauth URIs
/// (and the base32 line printed for manual entry), recovery codes, and the
/// tokens of `/enroll/TOKEN` links.
pub fn remember_from_output(text: &str) {
    for word in text.split(|c: char| c.is_whitespace() || c == '&' || c == '?') {
        if let Some(secret) = word.strip_prefix("secret=") {
            remember(secret);
        } else if is_recovery_code(word) {
            remember(word);
        } else if let Some((_, token)) = word.rsplit_once("/enroll/") {
            remember(token);
        }
    }
}

fn is_recovery_code(word: &str) -> bool {
    word.len() == 14
        && word.split('-').count() == 3
        && word
            .split('-')
            .all(|g| g.len() == 4 && g.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
}

/// Every remembered secret.
pub fn all() -> Vec<String> {
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Fields of the logs the tests scan whose values are never secrets:
/// process and user ids (the kernel's pids reach 4,194,304, so a 6-digit
/// pid equals some remembered code sooner or later), ports, counters and
/// versions. A remembered secret that is the whole value of one of them,
/// `pid=123456` (the daemon's fields), `[pid=123456]` (the PostgreSQL
/// server's line prefix, [`crate::postgres`]) or `(pid 123456)` (the
/// daemon's lock messages), is not a leak. Every other field, and any
/// field not listed here, is scanned.
pub const NOT_SECRET_FIELDS: &[&str] = &[
    "pid",
    "uid",
    "ruid",
    "euid",
    "gid",
    "for_uid",
    "port",
    "version",
    "users",
    "change",
    "generation",
    "recovery_codes_left",
    // The audit trail's sequence number (and `after`, where a start line
    // resumed the chain).
    "seq",
    "after",
];

/// True when the text before a match (`before`) ends with the name of a
/// field of [`NOT_SECRET_FIELDS`] and `=` or a space.
fn is_value_of_a_field_that_is_no_secret(before: &str) -> bool {
    let Some(name) = before
        .strip_suffix('=')
        .or_else(|| before.strip_suffix(' '))
    else {
        return false;
    };
    NOT_SECRET_FIELDS.iter().any(|field| {
        name.strip_suffix(field).is_some_and(|rest| {
            !rest
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// The remembered secrets that occur in `text` as a whole word (not inside a
/// longer run of letters and digits, so that a 6-digit code does not match
/// inside a longer number such as a timestamp, nor in the fraction of a
/// decimal number such as `04:25:05.123456`), unless as the value of a
/// field that is never a secret ([`NOT_SECRET_FIELDS`]) and all digits.
pub fn leaked_into(text: &str, secrets: &[String]) -> Vec<String> {
    secrets
        .iter()
        .filter(|secret| {
            text.match_indices(secret.as_str()).any(|(at, s)| {
                let (head, tail) = (&text[..at], &text[at + s.len()..]);
                let mut back = head.chars().rev();
                let (before, before_that) = (back.next(), back.next());
                let mut ahead = tail.chars();
                let (after, after_that) = (ahead.next(), ahead.next());
                let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
                let starts_digit = s.starts_with(|c: char| c.is_ascii_digit());
                let ends_digit = s.ends_with(|c: char| c.is_ascii_digit());
                let word = !before.is_some_and(|c| c.is_ascii_alphanumeric())
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric());
                let in_a_decimal = (starts_digit && before == Some('.') && digit(before_that))
                    || (ends_digit && after == Some('.') && digit(after_that));
                let number = s.bytes().all(|b| b.is_ascii_digit());
                word && !in_a_decimal && !(number && is_value_of_a_field_that_is_no_secret(head))
            })
        })
        .cloned()
        .collect()
}

/// The number of lines in `log` (the output of an `otpd serve`) logged at
/// the level `TRACE`: the second field of the daemon's formatter
/// (`TIMESTAMP LEVEL TARGET: …`).
pub fn trace_lines(log: &str) -> usize {
    log.lines()
        .filter(|line| line.split_whitespace().nth(1) == Some("TRACE"))
        .count()
}

/// RFC 4648 base32 (no padding needed), `None` for anything else.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        bits = (bits << 5) | u64::from(v);
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// The forms a TOTP secret would take in a store that kept it in clear: the
/// base32 text, the raw bytes, and the JSON byte array (`[72,101,…]`).
fn clear_forms(secret: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![secret.as_bytes().to_vec()];
    if secret.len() >= 16 {
        if let Some(raw) = base32_decode(secret) {
            let array = raw.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
            forms.push(format!("[{array}]").into_bytes());
            forms.push(raw);
        }
    }
    forms
}

/// The remembered TOTP secrets (16 or more base32 characters) found in
/// clear in any file under `dir`, with the file.
pub fn in_clear_under(dir: &Path, secrets: &[String]) -> Vec<String> {
    let forms: Vec<(String, Vec<Vec<u8>>)> = secrets
        .iter()
        .filter(|s| s.len() >= 16 && base32_decode(s).is_some())
        .map(|s| (s.clone(), clear_forms(s)))
        .collect();
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        // One pass over the file: every 8-byte window is looked up among
        // the forms' first 8 bytes, and only a hit is compared in full.
        let mut by_prefix: std::collections::HashMap<&[u8], Vec<(&String, &Vec<u8>)>> =
            std::collections::HashMap::new();
        for (secret, forms) in &forms {
            for f in forms.iter().filter(|f| f.len() >= 8) {
                by_prefix.entry(&f[..8]).or_default().push((secret, f));
            }
        }
        let mut hits = BTreeSet::new();
        for (at, window) in bytes.windows(8).enumerate() {
            if let Some(candidates) = by_prefix.get(window) {
                for (secret, form) in candidates {
                    if bytes[at..].starts_with(form) {
                        hits.insert((*secret).clone());
                    }
                }
            }
        }
        found.extend(
            hits.into_iter()
                .map(|secret| format!("{secret} in {}", path.display())),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_secrets_are_picked_up_and_found_as_whole_words() {
        remember_from_output(
            "otpauth://totp/x:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DP&issuer=x\n\
             ABCD-EFGH-JKLM\nhttps://h/enroll/00112233445566778899aabbccddeeff\n",
        );
        remember("123456");
        let all = all();
        for s in [
            "JBSWY3DPEHPK3PXPJBSWY3DP",
            "ABCD-EFGH-JKLM",
            "00112233445566778899aabbccddeeff",
            "123456",
        ] {
            assert!(all.contains(&s.to_owned()), "{s}");
        }
        let log = "at 2026-01-01T00:00:00.123456Z user=alice code 123456 ok";
        assert_eq!(leaked_into(log, &all), ["123456"]);
        assert!(leaked_into("t=1234567 x.123456Z", &all).is_empty());
    }

    #[test]
    fn ids_counters_and_decimals_are_no_leak_but_every_other_field_is() {
        let code = vec!["123456".to_owned()];
        for harmless in [
            "INFO otpd::audit: user=\"alice\" uid=0 pid=123456 op=\"verify\"",
            "otpd-audit seq=123456 time=2026-12-05T12:00:00Z host=\"h\" level=INFO op=\"start\" after=123456",
            "uid=123456 ruid=123456 for_uid=123456",
            "2026-12-05 04:25:05.123 UTC [pid=123456] LOG:  connection received",
            "otpd: another otpd is running (pid 123456)",
            "store opened users=3 change=123456",
            "took 0.123456 s",
            "at 04:25:05.123456",
            "took 123456.5 ms",
        ] {
            assert!(leaked_into(harmless, &code).is_empty(), "{harmless}");
        }
        for leak in [
            "code=123456",
            "otp=123456 pid=1",
            "rhost=\"123456\"",
            "xpid=123456",
            "pid_of_code=123456",
            "pid=1 123456",
            "[123456]",
            "code 123456.",
            "got 123456 (pid 7)",
        ] {
            assert_eq!(leaked_into(leak, &code), code, "{leak}");
        }
        let recovery = vec!["ABCD-EFGH-JKLM".to_owned()];
        assert_eq!(leaked_into("uid=ABCD-EFGH-JKLM", &recovery), recovery);
    }

    #[test]
    fn trace_lines_are_counted_by_their_level() {
        let log = "2026-12-05T04:25:16.935193Z TRACE sled::context: starting context\n\
                   2026-12-05T04:25:17.048563Z DEBUG otpd::store::sled_store: store opened\n\
                   2026-12-05T04:25:17.048563Z  INFO otpd::server: TRACE in a message\n";
        assert_eq!(trace_lines(log), 1);
    }

    #[test]
    fn secrets_in_clear_are_found_in_any_form() {
        let dir = std::env::temp_dir().join(format!("otpd-secrets-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_owned();
        let raw = base32_decode(&secret).unwrap();
        assert_eq!(&raw[..6], b"Hello!");
        for (i, form) in clear_forms(&secret).iter().enumerate() {
            let file = dir.join("sub").join("f");
            let mut bytes = b"xx".to_vec();
            bytes.extend_from_slice(form);
            std::fs::write(&file, bytes).unwrap();
            assert_eq!(
                in_clear_under(&dir, std::slice::from_ref(&secret)).len(),
                1,
                "form {i}"
            );
        }
        std::fs::write(dir.join("sub").join("f"), b"sealed").unwrap();
        assert!(in_clear_under(&dir, &[secret]).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
