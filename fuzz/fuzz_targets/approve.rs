//! Sign-ins approved on a phone (`otpd::core::approve`): any sequence of
//! requests, picks, challenges, approvals, denials, removals, prunes and
//! uses, at any times, by any of three phones (one pending).
//!
//! Invariants:
//! - nothing panics;
//! - a request is approved only by an active phone (or its own test by its
//!   phone), only after the right number was picked and a challenge was
//!   issued to that phone, only while open and unexpired;
//! - a wrong number never leads to an approval of that request;
//! - a login uses an approval at most once ([`Wait::Approved`] is never seen
//!   again after `use_approval`);
//! - `may_request` never lets a fourth request open, nor more pushes in an
//!   hour than the budget;
//! - the numbers are 10-99, the three choices distinct, the number among them.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use otpd::core::approve::{
    numbers, Approvals, Phone, RequestContext, SignInRequest, Wait, MAX_OPEN_REQUESTS,
};
use otpd::core::record::EnrollState;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Arbitrary)]
enum Op {
    Request { random: [u8; 4], budget: bool },
    Test { random: [u8; 4], phone: u8 },
    Pick { request: u8, number: u8, phone: u8 },
    Challenge { request: u8, phone: u8 },
    Approve { request: u8, phone: u8 },
    Deny { request: u8, phone: u8, not_me: bool },
    Use { request: u8 },
    Remove { phone: u8 },
    Prune,
    Tick { seconds: u16 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    max_per_hour: u8,
    timeout: u8,
    ops: Vec<Op>,
}

const PHONES: [&str; 3] = ["phone", "phone-2", "phone-3"];

fn phone(name: &str, state: EnrollState) -> Phone {
    Phone {
        name: name.into(),
        state,
        created: 0,
        last_used: None,
        passkey: String::new(),
        app_token_hash: format!("h-{name}"),
        push: None,
        lang: "en".into(),
    }
}

fuzz_target!(|input: Input| {
    let max_per_hour = u32::from(input.max_per_hour % 20) + 1;
    let timeout = u64::from(input.timeout % 120) + 10;
    let mut a = Approvals {
        phones: vec![
            phone(PHONES[0], EnrollState::Active),
            phone(PHONES[1], EnrollState::Active),
            phone(PHONES[2], EnrollState::Pending),
        ],
        ..Approvals::default()
    };
    let mut now: u64 = 1_000_000;
    let mut ids: Vec<String> = Vec::new();
    // Per request: the phone whose right pick came last (a challenge may be
    // issued to it), the approvals seen, whether a login used it.
    let mut picked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong: BTreeSet<String> = BTreeSet::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let context = RequestContext {
        host: "h",
        service: "sshd",
        source: "192.0.2.1",
    };
    for op in input.ops {
        match op {
            Op::Request { random, budget } => {
                let (n, c) = numbers(random);
                assert!((10..=99).contains(&n) && c.contains(&n));
                assert!(c[0] != c[1] && c[1] != c[2] && c[0] != c[2]);
                if a.may_request(now, max_per_hour, budget).is_ok() {
                    let id = format!("r{}", ids.len());
                    a.add_request(
                        SignInRequest::new(id.clone(), random, context, now, timeout, None),
                        now,
                    );
                    ids.push(id);
                    assert!(a.open_requests(now) <= MAX_OPEN_REQUESTS);
                    if budget {
                        let hour = a.pushed.iter().filter(|t| now - **t < 3600).count();
                        assert!(hour <= max_per_hour as usize);
                    }
                }
            }
            Op::Test { random, phone } => {
                let name = PHONES[usize::from(phone) % 3];
                let id = format!("r{}", ids.len());
                a.requests.push(SignInRequest::new(
                    id.clone(),
                    random,
                    context,
                    now,
                    600,
                    Some(name.to_owned()),
                ));
                ids.push(id);
            }
            Op::Pick {
                request,
                number,
                phone,
            } => {
                let Some(id) = ids.get(usize::from(request) % ids.len().max(1)).cloned() else {
                    continue;
                };
                let name = PHONES[usize::from(phone) % 3];
                let right = a.request(&id).map(|r| r.number);
                match a.pick(&id, number, name, now) {
                    Ok(()) => {
                        assert_eq!(Some(number), right);
                        picked.entry(id).or_default().insert(name.to_owned());
                    }
                    Err(otpd::core::approve::Closed::WrongNumber) => {
                        assert_ne!(Some(number), right);
                        wrong.insert(id);
                    }
                    Err(_) => {}
                }
            }
            Op::Challenge { request, phone } => {
                let Some(id) = ids.get(usize::from(request) % ids.len().max(1)).cloned() else {
                    continue;
                };
                let name = PHONES[usize::from(phone) % 3];
                // The shell issues a challenge only after a right pick.
                if picked.get(&id).is_some_and(|p| p.contains(name)) {
                    let _ = a.set_challenge(&id, name, format!("state-{name}"));
                }
            }
            Op::Approve { request, phone } => {
                let Some(id) = ids.get(usize::from(request) % ids.len().max(1)).cloned() else {
                    continue;
                };
                let name = PHONES[usize::from(phone) % 3];
                let before = a.request(&id).cloned();
                let state = a.phones.iter().find(|p| p.name == name).map(|p| p.state);
                if a.approve(&id, name, "{}".into(), now).is_ok() {
                    let r = before.expect("approved a request that exists");
                    assert!(r.is_open(now), "approved a closed or expired request");
                    assert!(!wrong.contains(&id), "approved after a wrong number");
                    assert!(
                        picked.get(&id).is_some_and(|p| p.contains(name)),
                        "approved without a right pick by this phone"
                    );
                    assert!(
                        r.challenge.as_ref().is_some_and(|c| c.phone == name),
                        "approved without this phone's challenge"
                    );
                    match &r.test {
                        Some(t) => assert_eq!(t, name),
                        None => assert_eq!(state, Some(EnrollState::Active)),
                    }
                    // The challenge is used up.
                    assert!(a.challenge(&id, name, now).is_err());
                }
            }
            Op::Deny {
                request,
                phone,
                not_me,
            } => {
                let Some(id) = ids.get(usize::from(request) % ids.len().max(1)).cloned() else {
                    continue;
                };
                let _ = a.deny(&id, PHONES[usize::from(phone) % 3], not_me, now);
            }
            Op::Use { request } => {
                let Some(id) = ids.get(usize::from(request) % ids.len().max(1)).cloned() else {
                    continue;
                };
                if let Wait::Approved { .. } = a.wait(&id, now) {
                    assert!(!used.contains(&id), "an approval seen again after its use");
                    a.use_approval(&id);
                    used.insert(id.clone());
                    assert!(!matches!(a.wait(&id, now), Wait::Approved { .. }));
                }
            }
            Op::Remove { phone } => {
                a.remove_phone(PHONES[usize::from(phone) % 3]);
            }
            Op::Prune => a.prune(now),
            Op::Tick { seconds } => now += u64::from(seconds % 400),
        }
    }
});
