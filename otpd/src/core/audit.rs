//! The audit trail's chain (pure): every audit line carries a sequence
//! number and a chain value, HMAC-SHA-256 under a key derived from the
//! store's key over the previous line's chain value and the line itself.
//! Whoever can write the log but lacks the key cannot remove, alter,
//! insert or reorder a line without [`verify`] naming the place.
//!
//! The line (one stable format for the log file, the journal's `MESSAGE`
//! and `otpd audit export`):
//!
//! ```text
//! otpd-audit seq=42 time=2026-12-05T12:00:00Z host="bastion" level=INFO op="login" outcome="accepted" user="alice" service="sshd" rhost="192.0.2.7" uid=0 pid=1234 chain=9f…
//! ```
//!
//! String values are JSON strings (a crafted user name cannot forge a
//! field or a line), numbers and booleans are bare. The chain value of
//! line `n` is `HMAC(key, chain(n-1) ‖ body(n))`, where the body is the
//! line up to (not including) ` chain=`; the line before the first has the
//! chain value of 32 zero bytes.
//!
//! Hand-written: the line format is ours, and no crate verifies a chain
//! of HMACs over log lines.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The label of the chain key, derived from the store's key
/// (`RecordKey::meta_tag`, `Store::derived_secret`).
pub const KEY_LABEL: &str = "otpd audit chain v1";

/// What every audit line starts with.
pub const MARKER: &str = "otpd-audit ";

/// A chain value (and the chain key): 32 bytes.
pub type ChainValue = [u8; 32];

/// The chain value before the first line.
pub const GENESIS: ChainValue = [0; 32];

/// Where the trail stands: the last line's sequence number and chain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The last line's sequence number (0: no line yet).
    pub seq: u64,
    /// The last line's chain value ([`GENESIS`] before the first).
    pub chain: ChainValue,
}

impl Head {
    /// The head of a trail with no line.
    pub const START: Head = Head {
        seq: 0,
        chain: GENESIS,
    };

    /// The stored form: `seq:hex`.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.seq, hex(&self.chain))
    }

    /// Reads [`Self::to_text`]'s form.
    pub fn from_text(text: &str) -> Option<Head> {
        let (seq, chain) = text.trim().split_once(':')?;
        Some(Head {
            seq: seq.parse().ok()?,
            chain: unhex32(chain)?,
        })
    }
}

/// A field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text, written as a JSON string.
    Str(String),
    /// A signed number.
    Int(i64),
    /// An unsigned number.
    UInt(u64),
    /// A boolean.
    Bool(bool),
    /// A floating-point number.
    Float(f64),
}

impl Value {
    /// The value as the journal's field holds it (text without quotes).
    pub fn plain(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::UInt(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Float(f) => f.to_string(),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Str(s) => out.push_str(&json_string(s)),
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::UInt(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f}");
            }
            Value::Float(f) => out.push_str(&json_string(&f.to_string())),
        }
    }

    /// The value for a JSON export.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Int(n) => (*n).into(),
            Value::UInt(n) => (*n).into(),
            Value::Bool(b) => (*b).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(f.to_string())),
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The name a field may have: lower-case ASCII letters, digits and `_`,
/// starting with a letter (also what the journal's field names need,
/// upper-cased).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 48
}

/// The names a line's own fields take; an event's field of the same name
/// is written as `field_NAME`.
const RESERVED: [&str; 6] = ["seq", "time", "host", "level", "prev", "chain"];

/// The body of line `seq`: everything but ` chain=…`.
pub fn body(seq: u64, time: &str, host: &str, level: &str, fields: &[(String, Value)]) -> String {
    let mut out = String::with_capacity(160);
    let _ = write!(out, "{MARKER}seq={seq} time={} host=", clean_bare(time));
    out.push_str(&json_string(host));
    let _ = write!(out, " level={}", clean_bare(level));
    for (name, value) in fields {
        let name = if RESERVED.contains(&name.as_str()) || !valid_name(name) {
            format!("field_{}", sanitize_name(name))
        } else {
            name.clone()
        };
        let _ = write!(out, " {name}=");
        value.write(&mut out);
    }
    out
}

fn clean_bare(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+' | '_'))
        .collect()
}

fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(40)
        .collect();
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// The chain value after `prev` of a line with `body`.
pub fn chain(key: &ChainValue, prev: &ChainValue, body: &str) -> ChainValue {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(prev);
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().into()
}

fn chain_matches(key: &ChainValue, prev: &ChainValue, body: &str, claimed: &ChainValue) -> bool {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(prev);
    mac.update(body.as_bytes());
    mac.verify_slice(claimed).is_ok()
}

/// The whole line: the body, the chain value before it, and its own.
pub fn line(body: &str, prev: &ChainValue, chain: &ChainValue) -> String {
    format!("{body} prev={} chain={}", hex(prev), hex(chain))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex32(text: &str) -> Option<ChainValue> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Reads back a value that `tracing` wrote with `Debug` (`user = ?name`
/// gives `"alice"` with Rust's escapes): the text itself, or `None` when it
/// is not one quoted string.
pub fn unquote_debug(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None,
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let mut digits = String::new();
                    loop {
                        match chars.next()? {
                            '}' => break,
                            d if d.is_ascii_hexdigit() && digits.len() < 6 => digits.push(d),
                            _ => return None,
                        }
                    }
                    out.push(char::from_u32(u32::from_str_radix(&digits, 16).ok()?)?);
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// One audit line read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Its sequence number.
    pub seq: u64,
    /// Its time, as written (RFC 3339, UTC).
    pub time: String,
    /// Its host.
    pub host: String,
    /// Its level.
    pub level: String,
    /// The event's fields, in order.
    pub fields: Vec<(String, Value)>,
    /// The body the chain value covers.
    pub body: String,
    /// The chain value before it, as the line says.
    pub prev: ChainValue,
    /// The chain value it claims.
    pub chain: ChainValue,
}

impl Parsed {
    /// A field of the event.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The line as one JSON object (`otpd audit export --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("seq".into(), self.seq.into());
        map.insert("time".into(), self.time.clone().into());
        map.insert("host".into(), self.host.clone().into());
        map.insert("level".into(), self.level.clone().into());
        for (name, value) in &self.fields {
            map.insert(name.clone(), value.to_json());
        }
        map.insert("prev".into(), hex(&self.prev).into());
        map.insert("chain".into(), hex(&self.chain).into());
        serde_json::Value::Object(map)
    }
}

/// Where an audit line starts in a log line: at its beginning, or after a
/// prefix without quotes (a syslog or journal timestamp). `None` for a line
/// that holds no audit line.
pub fn find_line(text: &str) -> Option<&str> {
    let at = text.find(MARKER)?;
    let prefix = &text[..at];
    (prefix.is_empty() || (prefix.ends_with(' ') && !prefix.contains('"')))
        .then(|| text[at..].trim_end_matches(['\n', '\r']))
}

/// Reads an audit line (from [`MARKER`] on).
pub fn parse(text: &str) -> Option<Parsed> {
    let (rest, chain) = text.rsplit_once(" chain=")?;
    let chain = unhex32(chain)?;
    let (body, prev) = rest.rsplit_once(" prev=")?;
    let prev = unhex32(prev)?;
    let rest = body.strip_prefix(MARKER)?;
    let mut pairs = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        if !valid_name(name) {
            return None;
        }
        let (value, after) = if after.starts_with('"') {
            let end = json_string_end(after)?;
            let text: String = serde_json::from_str(&after[..end]).ok()?;
            (Value::Str(text), &after[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let token = &after[..end];
            let value = if let Ok(n) = token.parse::<u64>() {
                Value::UInt(n)
            } else if let Ok(n) = token.parse::<i64>() {
                Value::Int(n)
            } else if token == "true" || token == "false" {
                Value::Bool(token == "true")
            } else if let Ok(f) = token.parse::<f64>() {
                Value::Float(f)
            } else {
                Value::Str(token.to_string())
            };
            (value, &after[end..])
        };
        pairs.push((name.to_string(), value));
        rest = match after.strip_prefix(' ') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return None,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    let mut iter = pairs.into_iter();
    let seq = match iter.next()? {
        (n, Value::UInt(seq)) if n == "seq" => seq,
        _ => return None,
    };
    let time = match iter.next()? {
        (n, v) if n == "time" => bare_text(v)?,
        _ => return None,
    };
    let host = match iter.next()? {
        (n, Value::Str(h)) if n == "host" => h,
        _ => return None,
    };
    let level = match iter.next()? {
        (n, v) if n == "level" => bare_text(v)?,
        _ => return None,
    };
    Some(Parsed {
        seq,
        time,
        host,
        level,
        fields: iter.collect(),
        body: body.to_string(),
        prev,
        chain,
    })
}

fn bare_text(value: Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// The end (exclusive) of the JSON string at the start of `text`.
fn json_string_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// One log entry that may hold an audit line, with where it came from
/// ("otpd.log:17", "journal entry 3") for the report.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where it is.
    pub origin: String,
    /// Its text.
    pub text: String,
}

/// What [`verify`] found wrong first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A line that starts like an audit line but cannot be read.
    Unreadable {
        /// Where it is.
        origin: String,
    },
    /// A line whose chain value does not match its text: edited, or
    /// written by someone without the key.
    Altered {
        /// Where it is.
        origin: String,
        /// Its sequence number.
        seq: u64,
    },
    /// Lines missing: `first..=last` never came.
    Removed {
        /// Where the line after the gap is.
        origin: String,
        /// The first missing sequence number.
        first: u64,
        /// The last missing one.
        last: u64,
    },
    /// A line out of its place: `seq` came after `after`.
    Reordered {
        /// Where it is.
        origin: String,
        /// Its sequence number.
        seq: u64,
        /// The sequence number before it.
        after: u64,
    },
    /// The trail ends before the daemon's head: the last lines were removed.
    Truncated {
        /// The last sequence number in the trail.
        last: u64,
        /// The daemon's.
        head: u64,
    },
    /// The line with the daemon's head's number is not the one the daemon
    /// wrote (same number, other chain value).
    NotTheHead {
        /// The sequence number.
        seq: u64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreadable { origin } => write!(
                f,
                "{origin}: an audit line that cannot be read (altered or cut)"
            ),
            Problem::Altered { origin, seq } => write!(
                f,
                "{origin}: line seq={seq} was altered (its chain value does not match its text \
                 and the line before it)"
            ),
            Problem::Removed {
                origin,
                first,
                last,
            } if first == last => write!(f, "{origin}: line seq={first} was removed"),
            Problem::Removed {
                origin,
                first,
                last,
            } => write!(f, "{origin}: lines seq={first} to seq={last} were removed"),
            Problem::Reordered { origin, seq, after } => write!(
                f,
                "{origin}: line seq={seq} is out of order (it follows seq={after})"
            ),
            Problem::Truncated { last, head } => write!(
                f,
                "the trail ends at seq={last} but the daemon is at seq={head}: \
                 the last {} line(s) were removed",
                head - last
            ),
            Problem::NotTheHead { seq } => write!(
                f,
                "line seq={seq} is not the one the daemon wrote (the daemon's head differs)"
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Audit lines read.
    pub lines: u64,
    /// The first line's sequence number (the starting point: a line before
    /// it is not in what was read, so this one's link is not checked).
    pub first_seq: Option<u64>,
    /// The last line checked and found good.
    pub last_good: Option<u64>,
    /// The first problem, if any.
    pub problem: Option<Problem>,
    /// Restarts after an unclean stop: (the start line's seq, how many
    /// lines written before the stop the store's head did not cover).
    pub unclean_restarts: Vec<(u64, u64)>,
    /// Where a new trail began (a start line with `outcome="new"` at
    /// seq=1 after other lines: a new store, `otpd migrate`, another host
    /// name).
    pub new_trails: Vec<String>,
}

impl Report {
    /// Whether the trail is intact.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Checks a trail: the entries in the order they were written (non-audit
/// lines are skipped), under any of `keys` (the chain key of the store's
/// key, and older ones after `otpd rekey`), against the daemon's `head`
/// when known. Stops at the first problem.
pub fn verify(entries: &[Entry], keys: &[ChainValue], head: Option<Head>) -> Report {
    let lines: Vec<(&Entry, Option<Parsed>)> = entries
        .iter()
        .filter_map(|e| find_line(&e.text).map(|l| (e, parse(l))))
        .collect();
    let mut report = Report {
        lines: lines.len() as u64,
        first_seq: None,
        last_good: None,
        problem: None,
        unclean_restarts: Vec::new(),
        new_trails: Vec::new(),
    };
    // The chain value of every good line, for a restart that resumes from
    // an earlier one.
    let mut chains: HashMap<u64, ChainValue> = HashMap::new();
    let mut last: Option<Head> = None;
    let mut last_time = String::new();
    // The latest start line's number: a head kept in the store is never
    // older than the start line before it was written, so a resume never
    // goes back past it (an old start line copied to the end does).
    let mut last_start = 0u64;
    for (index, (entry, parsed)) in lines.iter().enumerate() {
        let Some(p) = parsed else {
            report.problem = Some(Problem::Unreadable {
                origin: entry.origin.clone(),
            });
            return report;
        };
        let altered = || Problem::Altered {
            origin: entry.origin.clone(),
            seq: p.seq,
        };
        // The line itself: its chain value over the value before it and
        // its text, so that even the first line read is authenticated.
        if !keys
            .iter()
            .any(|k| chain_matches(k, &p.prev, &p.body, &p.chain))
            || (p.seq == 1 && p.prev != GENESIS)
            || p.seq == 0
        {
            report.problem = Some(altered());
            return report;
        }
        let Some(last_head) = last else {
            // The starting point (a rotated file or a vacuumed journal
            // starts in the middle): what came before is not here.
            report.first_seq = Some(p.seq);
            report.last_good = Some(p.seq);
            chains.insert(p.seq, p.chain);
            if is_start(p) {
                last_start = p.seq;
            }
            last_time.clone_from(&p.time);
            last = Some(Head {
                seq: p.seq,
                chain: p.chain,
            });
            continue;
        };
        let next = last_head.seq.checked_add(1);
        // Times are RFC 3339 in UTC, one format: they compare as text.
        let forward = p.time >= last_time;
        if next == Some(p.seq) {
            if p.prev != last_head.chain {
                // A line of the right number that follows another line:
                // one put in the place of the line that was there.
                report.problem = Some(altered());
                return report;
            }
        } else if is_start(p)
            && p.seq <= last_head.seq
            && p.seq >= 2
            && p.seq >= last_start
            && forward
            && chains.get(&(p.seq - 1)) == Some(&p.prev)
        {
            // A restart after an unclean stop resumes from the head the
            // store kept, which can be behind the last line written.
            report
                .unclean_restarts
                .push((p.seq, last_head.seq + 1 - p.seq));
        } else if is_start(p)
            && p.seq == 1
            && p.field("outcome") == Some(&Value::Str("new".into()))
            && forward
        {
            // A store with no head (a new store, `otpd migrate`, another
            // host name): a new trail begins.
            report.new_trails.push(entry.origin.clone());
        } else {
            report.problem = Some(match next {
                Some(missing) if p.seq > last_head.seq => {
                    let later = lines[index + 1..]
                        .iter()
                        .any(|(_, q)| q.as_ref().is_some_and(|q| q.seq == missing));
                    if later {
                        Problem::Reordered {
                            origin: entry.origin.clone(),
                            seq: p.seq,
                            after: last_head.seq,
                        }
                    } else {
                        Problem::Removed {
                            origin: entry.origin.clone(),
                            first: missing,
                            last: p.seq - 1,
                        }
                    }
                }
                _ => Problem::Reordered {
                    origin: entry.origin.clone(),
                    seq: p.seq,
                    after: last_head.seq,
                },
            });
            return report;
        }
        chains.insert(p.seq, p.chain);
        report.last_good = Some(p.seq);
        last = Some(Head {
            seq: p.seq,
            chain: p.chain,
        });
        if is_start(p) {
            last_start = p.seq;
        }
        last_time.clone_from(&p.time);
    }
    if let (Some(head), Some(last)) = (head, last) {
        if head.seq > last.seq {
            report.problem = Some(Problem::Truncated {
                last: last.seq,
                head: head.seq,
            });
        } else if chains.get(&head.seq).is_some_and(|c| *c != head.chain) {
            // Lines after the head may have come since it was read; the
            // head's own line must be the daemon's.
            report.problem = Some(Problem::NotTheHead { seq: head.seq });
            report.last_good = head.seq.checked_sub(1);
        }
    } else if let (Some(head), None) = (head, last) {
        if head.seq > 0 {
            report.problem = Some(Problem::Truncated {
                last: 0,
                head: head.seq,
            });
        }
    }
    report
}

/// Whether a line is the daemon's start line (`op="start"`), the one line
/// that may resume from an earlier head after an unclean stop.
fn is_start(p: &Parsed) -> bool {
    p.field("op") == Some(&Value::Str("start".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: ChainValue = [7; 32];

    fn fields(op: &str, user: &str) -> Vec<(String, Value)> {
        vec![
            ("op".into(), Value::Str(op.into())),
            ("outcome".into(), Value::Str("accepted".into())),
            ("user".into(), Value::Str(user.into())),
            ("uid".into(), Value::UInt(0)),
        ]
    }

    /// A trail of `n` lines from the start, as written by the daemon.
    fn trail(n: u64) -> (Vec<Entry>, Head) {
        let mut head = Head::START;
        let mut out = Vec::new();
        for seq in 1..=n {
            let b = body(
                seq,
                "2026-12-05T12:00:00Z",
                "host",
                "info",
                &fields("login", &format!("user{seq}")),
            );
            let before = head.chain;
            let c = chain(&KEY, &before, &b);
            head = Head { seq, chain: c };
            out.push(Entry {
                origin: format!("log:{seq}"),
                text: format!("2026-12-05T12:00:00Z otpd[1]: {}", line(&b, &before, &c)),
            });
        }
        (out, head)
    }

    #[test]
    fn an_intact_trail_verifies_and_round_trips() {
        let (entries, head) = trail(5);
        let report = verify(&entries, &[KEY], Some(head));
        assert!(report.ok(), "{report:?}");
        assert_eq!(
            (report.lines, report.first_seq, report.last_good),
            (5, Some(1), Some(5))
        );
        let p = parse(find_line(&entries[2].text).unwrap()).unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(p.field("user"), Some(&Value::Str("user3".into())));
        assert_eq!(p.field("uid"), Some(&Value::UInt(0)));
        assert_eq!(Head::from_text(&head.to_text()), Some(head));
    }

    #[test]
    fn a_removed_line_is_named_with_the_last_good_number() {
        let (mut entries, head) = trail(6);
        entries.remove(3);
        let report = verify(&entries, &[KEY], Some(head));
        assert_eq!(report.last_good, Some(3));
        assert!(
            matches!(
                report.problem,
                Some(Problem::Removed {
                    first: 4,
                    last: 4,
                    ..
                })
            ),
            "{report:?}"
        );
    }

    #[test]
    fn an_edited_line_is_named() {
        let (mut entries, head) = trail(6);
        entries[2].text = entries[2].text.replace("user3", "mallory");
        let report = verify(&entries, &[KEY], Some(head));
        assert_eq!(report.last_good, Some(2));
        assert!(
            matches!(report.problem, Some(Problem::Altered { seq: 3, .. })),
            "{report:?}"
        );
        // The first line too (it links to the genesis value).
        let (mut entries, head) = trail(3);
        entries[0].text = entries[0].text.replace("accepted", "denied");
        let report = verify(&entries, &[KEY], Some(head));
        assert!(
            matches!(report.problem, Some(Problem::Altered { seq: 1, .. })),
            "{report:?}"
        );
    }

    #[test]
    fn swapped_lines_are_named() {
        let (mut entries, head) = trail(6);
        entries.swap(2, 3);
        let report = verify(&entries, &[KEY], Some(head));
        assert_eq!(report.last_good, Some(2));
        assert!(
            matches!(
                report.problem,
                Some(Problem::Reordered {
                    seq: 4,
                    after: 2,
                    ..
                })
            ),
            "{report:?}"
        );
    }

    #[test]
    fn the_last_lines_removed_are_found_against_the_head() {
        let (mut entries, head) = trail(6);
        entries.truncate(4);
        let report = verify(&entries, &[KEY], Some(head));
        assert_eq!(
            report.problem,
            Some(Problem::Truncated { last: 4, head: 6 })
        );
        // Without the head, the cut cannot be seen.
        assert!(verify(&entries, &[KEY], None).ok());
    }

    #[test]
    fn a_line_written_without_the_key_is_altered() {
        let (entries, _) = trail(3);
        let report = verify(&entries, &[[8; 32]], None);
        assert!(matches!(
            report.problem,
            Some(Problem::Altered { seq: 1, .. })
        ));
    }

    #[test]
    fn a_start_line_may_resume_from_an_earlier_head_after_a_crash() {
        let (mut entries, _) = trail(5);
        // The store kept seq 3; lines 4 and 5 were written before the crash.
        let (three, _) = trail(3);
        let prev = parse(find_line(&three[2].text).unwrap()).unwrap().chain;
        let b = body(
            4,
            "2026-12-05T12:01:00Z",
            "host",
            "INFO",
            &fields("start", ""),
        );
        let c = chain(&KEY, &prev, &b);
        entries.push(Entry {
            origin: "log:6".into(),
            text: line(&b, &prev, &c),
        });
        let report = verify(&entries, &[KEY], Some(Head { seq: 4, chain: c }));
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.unclean_restarts, vec![(4, 2)]);
        // Any other line going back is out of order.
        let b = body(
            4,
            "2026-12-05T12:01:00Z",
            "host",
            "INFO",
            &fields("login", ""),
        );
        let c = chain(&KEY, &prev, &b);
        entries.pop();
        entries.push(Entry {
            origin: "log:6".into(),
            text: line(&b, &prev, &c),
        });
        assert!(matches!(
            verify(&entries, &[KEY], None).problem,
            Some(Problem::Reordered {
                seq: 4,
                after: 5,
                ..
            })
        ));
    }

    #[test]
    fn an_old_start_line_copied_to_the_end_is_no_restart() {
        // 1 start, 2 login, 3 start (a real restart), 4 login; then a copy
        // of line 1 (an older start) and one of line 3 (written earlier).
        let mut head = Head::START;
        let mut entries = Vec::new();
        for (seq, op, time) in [
            (1, "start", "2026-12-05T12:00:00Z"),
            (2, "login", "2026-12-05T12:00:01Z"),
            (3, "start", "2026-12-05T12:00:02Z"),
            (4, "login", "2026-12-05T12:00:03Z"),
        ] {
            let b = body(seq, time, "host", "INFO", &fields(op, "u"));
            let before = head.chain;
            let c = chain(&KEY, &before, &b);
            head = Head { seq, chain: c };
            entries.push(Entry {
                origin: format!("log:{seq}"),
                text: line(&b, &before, &c),
            });
        }
        assert!(verify(&entries, &[KEY], Some(head)).ok());
        for copied in [0, 2] {
            let mut replayed = entries.clone();
            replayed.push(entries[copied].clone());
            let report = verify(&replayed, &[KEY], None);
            assert!(
                matches!(report.problem, Some(Problem::Reordered { after: 4, .. })),
                "a copy of line {}: {report:?}",
                copied + 1
            );
        }
    }

    #[test]
    fn the_first_line_read_is_authenticated_too() {
        // The lines before it deleted (as if rotated away), then it is
        // edited: its own chain value gives it away.
        let (entries, head) = trail(6);
        let mut rest = entries[2..].to_vec();
        rest[0].text = rest[0].text.replace("user3", "mallory");
        let report = verify(&rest, &[KEY], Some(head));
        assert!(
            matches!(report.problem, Some(Problem::Altered { seq: 3, .. })),
            "{report:?}"
        );
        assert_eq!(report.last_good, None);
        // Only the last line kept, and edited, against the daemon's head.
        let mut last = entries[5..].to_vec();
        last[0].text = last[0].text.replace("accepted", "wrong_code");
        let report = verify(&last, &[KEY], Some(head));
        assert!(
            matches!(report.problem, Some(Problem::Altered { seq: 6, .. })),
            "{report:?}"
        );
        // Unedited, the rest verifies from its starting point.
        let report = verify(&entries[2..], &[KEY], Some(head));
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.first_seq, Some(3));
    }

    #[test]
    fn a_line_at_the_last_number_does_not_overflow() {
        let b = body(u64::MAX, "t", "h", "INFO", &fields("login", "u"));
        let c = chain(&KEY, &GENESIS, &b);
        let b2 = body(1, "t", "h", "INFO", &fields("login", "u"));
        let c2 = chain(&KEY, &c, &b2);
        let entries = [
            Entry {
                origin: "a".into(),
                text: line(&b, &GENESIS, &c),
            },
            Entry {
                origin: "b".into(),
                text: line(&b2, &c, &c2),
            },
        ];
        let report = verify(&entries, &[KEY], None);
        assert!(!report.ok(), "{report:?}");
    }

    #[test]
    fn a_new_trail_may_begin_with_a_new_start_line() {
        let (mut entries, _) = trail(3);
        let mut f = fields("start", "");
        f[1].1 = Value::Str("new".into());
        let b = body(1, "2026-12-05T12:05:00Z", "host", "INFO", &f);
        let c = chain(&KEY, &GENESIS, &b);
        entries.push(Entry {
            origin: "log:4".into(),
            text: line(&b, &GENESIS, &c),
        });
        let report = verify(&entries, &[KEY], Some(Head { seq: 1, chain: c }));
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.new_trails, vec!["log:4".to_string()]);
    }

    #[test]
    fn crafted_values_cannot_forge_fields_or_lines() {
        let nasty = "x\" outcome=\"accepted\nchain=00 \u{7}";
        let b = body(1, "t", "h", "INFO", &fields("login", nasty));
        assert!(!b.contains('\n'));
        let l = line(&b, &GENESIS, &chain(&KEY, &GENESIS, &b));
        let p = parse(&l).unwrap();
        assert_eq!(p.field("user"), Some(&Value::Str(nasty.into())));
        assert_eq!(p.fields.len(), 4);
        // A reserved or odd name is renamed, never a second `seq`.
        let b = body(
            1,
            "t",
            "h",
            "INFO",
            &[
                ("seq".into(), Value::UInt(9)),
                ("A b".into(), Value::Bool(true)),
            ],
        );
        let p = parse(&line(&b, &GENESIS, &GENESIS)).unwrap();
        assert_eq!(p.seq, 1);
        assert_eq!(p.field("field_seq"), Some(&Value::UInt(9)));
        assert_eq!(p.field("field_a_b"), Some(&Value::Bool(true)));
    }

    #[test]
    fn a_line_inside_quotes_of_another_log_line_is_not_an_audit_line() {
        assert!(find_line("WARN user=\"otpd-audit seq=1\"").is_none());
        assert!(find_line("Dec 05 12:00:00 host otpd[1]: otpd-audit seq=1").is_some());
        assert!(find_line("otpd-audit seq=1 time=x").is_some());
    }

    #[test]
    fn debug_quoted_text_reads_back() {
        assert_eq!(unquote_debug("\"alice\""), Some("alice".into()));
        assert_eq!(
            unquote_debug(r#""a\"b\\c\n\u{7}""#),
            Some("a\"b\\c\n\u{7}".into())
        );
        assert_eq!(unquote_debug(r#""open"#), None);
        assert_eq!(unquote_debug("Some(1)"), None);
        let weird = "ä\u{0}\t\u{1b}'\"";
        assert_eq!(unquote_debug(&format!("{weird:?}")), Some(weird.into()));
    }
}
