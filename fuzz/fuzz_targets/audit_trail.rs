//! The audit trail's chain (`otpd::core::audit`): lines built from
//! arbitrary fields, and arbitrary log text, read back and verified.
//!
//! Invariants:
//! - nothing panics (`find_line`, `parse`, `verify` on any text);
//! - a line is one line, and reads back with its number, host, level and
//!   fields (names made valid the way `body` makes them);
//! - a trail written with the key verifies, against its head;
//! - any one character changed in any line of it is found: `verify` reports
//!   a problem, and the last good number is below the changed line's; the
//!   one exception, the first line's marker broken, is that line's removal,
//!   which reads as a trail that starts at seq=2 (as after a rotation).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use otpd::core::audit::{self, Entry, Head, Value};

#[derive(Debug, Arbitrary)]
enum FuzzValue {
    Str(String),
    Int(i64),
    UInt(u64),
    Bool(bool),
}

#[derive(Debug, Arbitrary)]
struct Input {
    host: String,
    lines: Vec<Vec<(String, FuzzValue)>>,
    change_line: u8,
    change_at: u16,
    junk: Vec<String>,
}

fn value(v: &FuzzValue) -> Value {
    match v {
        FuzzValue::Str(s) => Value::Str(s.clone()),
        FuzzValue::Int(n) if *n >= 0 => Value::UInt(*n as u64),
        FuzzValue::Int(n) => Value::Int(*n),
        FuzzValue::UInt(n) => Value::UInt(*n),
        FuzzValue::Bool(b) => Value::Bool(*b),
    }
}

const KEY: audit::ChainValue = [9; 32];

fuzz_target!(|input: Input| {
    // Any text.
    let junk: Vec<Entry> = input
        .junk
        .iter()
        .map(|t| Entry { origin: "junk".into(), text: t.clone() })
        .collect();
    for e in &junk {
        if let Some(l) = audit::find_line(&e.text) {
            let _ = audit::parse(l);
        }
    }
    let _ = audit::verify(&junk, &[KEY], None);

    // A trail written with the key.
    let mut head = Head::START;
    let mut entries = Vec::new();
    for (i, fields) in input.lines.iter().take(16).enumerate() {
        let seq = i as u64 + 1;
        let fields: Vec<(String, Value)> =
            fields.iter().take(12).map(|(n, v)| (n.clone(), value(v))).collect();
        let body = audit::body(seq, "2026-12-05T12:00:00Z", &input.host, "INFO", &fields);
        let chain = audit::chain(&KEY, &head.chain, &body);
        let line = audit::line(&body, &head.chain, &chain);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
        let p = audit::parse(audit::find_line(&line).expect("found")).expect("parses");
        assert_eq!((p.seq, p.host.as_str(), p.level.as_str()), (seq, input.host.as_str(), "INFO"));
        assert_eq!(p.fields.len(), fields.len());
        for ((want_name, want), (got_name, got)) in fields.iter().zip(&p.fields) {
            if audit::valid_name(want_name) && !["seq", "time", "host", "level", "prev", "chain"].contains(&want_name.as_str()) {
                assert_eq!(want_name, got_name);
            }
            assert_eq!(want, got, "{line}");
        }
        head = Head { seq, chain };
        entries.push(Entry { origin: format!("log:{seq}"), text: line });
    }
    let report = audit::verify(&entries, &[KEY], Some(head));
    assert!(report.ok(), "{report:?}");
    if entries.is_empty() {
        return;
    }
    // One character changed.
    let i = input.change_line as usize % entries.len();
    let text = &entries[i].text;
    let chars: Vec<char> = text.chars().collect();
    let at = input.change_at as usize % chars.len();
    let new = if chars[at] == 'x' { 'y' } else { 'x' };
    let changed: String = chars.iter().enumerate().map(|(j, c)| if j == at { new } else { *c }).collect();
    let mut tampered = entries.clone();
    tampered[i].text = changed;
    let report = audit::verify(&tampered, &[KEY], Some(head));
    // A change that makes the first line no audit line at all is its
    // removal, which cannot be told from a log rotated before it: verify
    // then starts at seq=2 and says so (`first_seq`).
    let first_dropped =
        i == 0 && audit::find_line(&tampered[0].text).is_none() && report.first_seq == Some(2);
    assert!(
        !report.ok() || first_dropped,
        "a change at line {i} char {at} went unseen: {report:?}"
    );
    assert!(
        first_dropped || report.last_good.is_none_or(|g| g < i as u64 + 1),
        "{report:?}"
    );
});
