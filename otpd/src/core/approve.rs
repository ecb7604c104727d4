//! Sign-ins approved on a paired phone: what a user's record keeps (the
//! phones, the one pairing link, the sign-in requests and the pushes of the
//! last hour) and the rules, pure. The shell draws the randomness (request
//! IDs, the number), verifies the WebAuthn ceremonies (`webauthn-rs`) and
//! sends the pushes; every change of state is decided here.
//!
//! A request lives in the user's record, so that on a fleet a phone that
//! talks to the pages of one host approves a login waiting on another: the
//! waiting login reads the record until its request is decided.
#![forbid(unsafe_code)]

use crate::core::record::{EnrollState, Link};
use serde::{Deserialize, Serialize};

/// Open requests per user at most (a stranger who knows the password
/// cannot pile them up).
pub const MAX_OPEN_REQUESTS: usize = 3;
/// How long a pairing link is valid.
pub const PAIRING_SECS: u64 = 600;
/// Phones per user at most.
pub const MAX_PHONES: usize = 8;
/// How long a decided or expired request stays in the record (the app shows
/// what became of it, the waiting login reads it).
const KEEP_DECIDED_SECS: u64 = 600;
/// How long a wrong number or "this wasn't me" stops requests from sources
/// the user has not proven.
pub const PAUSE_SECS: u64 = 15 * 60;
/// Requests kept per user at most (open and decided).
const MAX_KEPT_REQUESTS: usize = 16;

/// A user's phones and sign-in requests. Written only when not empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Approvals {
    /// The outstanding pairing link (`otpd enroll USER --approver`, the
    /// second QR code of the enrolment's success page): one at a time.
    pub pairing: Option<Pairing>,
    /// The paired phones (pending until their test request is approved).
    pub phones: Vec<Phone>,
    /// Sign-in requests, open and recently decided, oldest first.
    pub requests: Vec<SignInRequest>,
    /// When requests were pushed (the last hour's), for `max_per_hour`.
    pub pushed: Vec<u64>,
    /// After a wrong number or "this wasn't me": no request from a source
    /// the user has not proven until then (Unix time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<u64>,
}

impl Approvals {
    /// Nothing paired, nothing asked.
    pub fn is_empty(&self) -> bool {
        *self == Approvals::default()
    }

    /// What a user enrolled afresh (or revoked) keeps: the hour's pushes
    /// and a pause, so that the limits are not reset; no phone, no pairing
    /// link, no request.
    pub fn afresh(&self) -> Approvals {
        Approvals {
            pushed: self.pushed.clone(),
            paused_until: self.paused_until,
            ..Approvals::default()
        }
    }

    /// Whether a login may be approved on a phone: an active one is paired.
    pub fn has_active_phone(&self) -> bool {
        self.phones.iter().any(|p| p.state == EnrollState::Active)
    }

    /// Whether the phone `name` is paired and active (its test approved).
    fn is_active(&self, name: &str) -> bool {
        self.phones
            .iter()
            .any(|p| p.name == name && p.state == EnrollState::Active)
    }

    /// The phone whose app token hashes to `hash`.
    pub fn phone_by_app_token(&self, hash: &str) -> Option<&Phone> {
        self.phones.iter().find(|p| {
            constant_time_eq::constant_time_eq(p.app_token_hash.as_bytes(), hash.as_bytes())
        })
    }

    /// The request with this ID.
    pub fn request(&self, id: &str) -> Option<&SignInRequest> {
        self.requests.iter().find(|r| r.id == id)
    }

    fn request_mut(&mut self, id: &str) -> Option<&mut SignInRequest> {
        self.requests.iter_mut().find(|r| r.id == id)
    }

    /// Whether `phone` may answer `request`: its own test request, or a
    /// login's request once the phone is active (a phone whose test is not
    /// yet approved answers nothing else).
    fn may_answer(&self, request: &SignInRequest, phone: &str) -> bool {
        request.answerable_by(phone, self.is_active(phone))
    }

    /// Requests still open at `now`.
    pub fn open_requests(&self, now: u64) -> usize {
        self.requests.iter().filter(|r| r.is_open(now)).count()
    }

    /// Forgets what no one needs any more: an expired pairing link, pushes
    /// older than an hour, requests decided or expired long ago (and the
    /// oldest beyond [`MAX_KEPT_REQUESTS`]).
    pub fn prune(&mut self, now: u64) {
        if self.pairing.as_ref().is_some_and(|p| now > p.link.expires) {
            self.pairing = None;
        }
        self.pushed.retain(|t| now.saturating_sub(*t) < 3600);
        self.requests
            .retain(|r| now <= r.expires.saturating_add(KEEP_DECIDED_SECS));
        let excess = self.requests.len().saturating_sub(MAX_KEPT_REQUESTS);
        self.requests.drain(..excess);
    }

    /// Whether a login's request may be made and pushed at `now`: an active
    /// phone, fewer than [`MAX_OPEN_REQUESTS`] open, and the hour's pushes
    /// below `max_per_hour` (`budget` false: the caller is a source the
    /// user has proven, held back by its own backoff alone).
    pub fn may_request(&self, now: u64, max_per_hour: u32, budget: bool) -> Result<(), Refused> {
        if !self.has_active_phone() {
            return Err(Refused::NoPhone);
        }
        if self.open_requests(now) >= MAX_OPEN_REQUESTS {
            return Err(Refused::TooManyOpen);
        }
        if let Some(until) = self.paused_until.filter(|until| budget && now < *until) {
            return Err(Refused::Paused {
                retry_after: until - now,
            });
        }
        let recent: Vec<u64> = self
            .pushed
            .iter()
            .copied()
            .filter(|t| now.saturating_sub(*t) < 3600)
            .collect();
        if budget && recent.len() >= max_per_hour as usize {
            let oldest = recent.iter().min().copied().unwrap_or(now);
            return Err(Refused::PushBudget {
                retry_after: (oldest + 3600).saturating_sub(now).max(1),
            });
        }
        Ok(())
    }

    /// Adds `request` (made by [`SignInRequest::new`]) and counts its push.
    pub fn add_request(&mut self, request: SignInRequest, now: u64) {
        self.prune(now);
        self.pushed.push(now);
        self.requests.push(request);
        let excess = self.requests.len().saturating_sub(MAX_KEPT_REQUESTS);
        self.requests.drain(..excess);
    }

    /// The phone picked `number` on request `id`: `Ok` when it is the
    /// request's number and the request is open (the shell then issues the
    /// WebAuthn challenge, kept with [`Approvals::set_challenge`]); a wrong
    /// number closes the request.
    pub fn pick(&mut self, id: &str, number: u8, phone: &str, now: u64) -> Result<(), Closed> {
        let allowed = self.request(id).is_some_and(|r| self.may_answer(r, phone));
        let request = self.request_mut(id).ok_or(Closed::Unknown)?;
        request.check_open(now)?;
        if !allowed {
            return Err(Closed::Unknown);
        }
        if number != request.number {
            request.state = RequestState::WrongNumber;
            request.challenge = None;
            // A random tap picks right one time in three: a wrong one
            // pauses requests from sources the user has not proven.
            self.paused_until = Some(now.saturating_add(PAUSE_SECS));
            return Err(Closed::WrongNumber);
        }
        Ok(())
    }

    /// Keeps the WebAuthn state of the challenge issued to `phone` for
    /// request `id` (after a right [`Approvals::pick`]); one at a time, the
    /// newest wins.
    pub fn set_challenge(&mut self, id: &str, phone: &str, state: String) -> Result<(), Closed> {
        let request = self.request_mut(id).ok_or(Closed::Unknown)?;
        request.challenge = Some(Challenge {
            phone: phone.to_owned(),
            state,
        });
        Ok(())
    }

    /// The challenge state issued to `phone` for request `id`, if the
    /// request is still open: what the assertion is checked against.
    pub fn challenge(&self, id: &str, phone: &str, now: u64) -> Result<&str, Closed> {
        let request = self.request(id).ok_or(Closed::Unknown)?;
        request.check_open(now)?;
        match &request.challenge {
            Some(c) if c.phone == phone => Ok(&c.state),
            _ => Err(Closed::NoChallenge),
        }
    }

    /// Uses up the challenge of request `id` (a failed assertion: one try
    /// per challenge).
    pub fn drop_challenge(&mut self, id: &str) {
        if let Some(r) = self.request_mut(id) {
            r.challenge = None;
        }
    }

    /// `phone` approved request `id` with a verified assertion over the
    /// challenge issued for it (the shell verified it with
    /// [`Approvals::challenge`]'s state): approved, the challenge used up,
    /// the phone's credential (`passkey`: its new signature counter) and
    /// last use updated. A test request activates its phone.
    pub fn approve(
        &mut self,
        id: &str,
        phone: &str,
        passkey: String,
        now: u64,
    ) -> Result<(), Closed> {
        let allowed = self.request(id).is_some_and(|r| self.may_answer(r, phone));
        let request = self.request_mut(id).ok_or(Closed::Unknown)?;
        request.check_open(now)?;
        if !allowed || request.challenge.as_ref().is_none_or(|c| c.phone != phone) {
            return Err(Closed::NoChallenge);
        }
        request.challenge = None;
        request.state = RequestState::Approved {
            phone: phone.to_owned(),
        };
        let activates = request.test.as_deref() == Some(phone);
        if let Some(p) = self.phones.iter_mut().find(|p| p.name == phone) {
            p.passkey = passkey;
            p.last_used = Some(now);
            if activates {
                p.state = EnrollState::Active;
            }
        }
        if activates {
            // The pairing's test is done; its request is not a login's.
            if let Some(r) = self.request_mut(id) {
                r.state = RequestState::Used;
            }
        }
        Ok(())
    }

    /// `phone` denied request `id` (`not_me`: "this wasn't me").
    pub fn deny(&mut self, id: &str, phone: &str, not_me: bool, now: u64) -> Result<(), Closed> {
        let allowed = self.request(id).is_some_and(|r| self.may_answer(r, phone));
        let request = self.request_mut(id).ok_or(Closed::Unknown)?;
        request.check_open(now)?;
        if !allowed {
            return Err(Closed::Unknown);
        }
        request.state = RequestState::Denied { not_me };
        request.challenge = None;
        if not_me {
            self.paused_until = Some(now.saturating_add(PAUSE_SECS));
        }
        Ok(())
    }

    /// What became of the login's request `id` at `now`, for the login
    /// waiting on it. [`Wait::Approved`] is given once: the caller then
    /// stores [`Approvals::use_approval`]'s change.
    pub fn wait(&self, id: &str, now: u64) -> Wait {
        match self.request(id) {
            None => Wait::Expired,
            Some(r) => match &r.state {
                RequestState::Open if now > r.expires => Wait::Expired,
                RequestState::Open => Wait::Open {
                    remaining: r.expires.saturating_sub(now).max(1),
                },
                RequestState::Approved { phone } => Wait::Approved {
                    phone: phone.clone(),
                },
                RequestState::Denied { not_me } => Wait::Denied { not_me: *not_me },
                RequestState::WrongNumber => Wait::WrongNumber,
                RequestState::Used => Wait::Expired,
            },
        }
    }

    /// The login used the approval of request `id`: never again.
    pub fn use_approval(&mut self, id: &str) {
        if let Some(r) = self.request_mut(id) {
            r.state = RequestState::Used;
        }
    }

    /// Removes the phone `name` and its requests' challenges; `false`: no
    /// such phone.
    pub fn remove_phone(&mut self, name: &str) -> bool {
        let before = self.phones.len();
        self.phones.retain(|p| p.name != name);
        for r in &mut self.requests {
            if r.challenge.as_ref().is_some_and(|c| c.phone == name) {
                r.challenge = None;
            }
            if r.test.as_deref() == Some(name) && r.state == RequestState::Open {
                r.state = RequestState::Used;
            }
        }
        self.phones.len() != before
    }

    /// A name for a new phone: `phone`, `phone-2` … the first not taken by
    /// a phone or by one of `taken` (the user's other devices).
    pub fn new_phone_name(&self, taken: &[&str]) -> String {
        (1..)
            .map(|n| {
                if n == 1 {
                    "phone".to_owned()
                } else {
                    format!("phone-{n}")
                }
            })
            .find(|name| {
                !self.phones.iter().any(|p| &p.name == name) && !taken.contains(&name.as_str())
            })
            .unwrap_or_default()
    }
}

/// A pairing link: its token's hash and expiry, and the WebAuthn
/// registration state once the phone began (`webauthn-rs`'
/// `PasskeyRegistration`, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pairing {
    /// The link's token (hashed) and expiry.
    pub link: Link,
    /// The registration ceremony's state, between begin and finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
}

/// A paired phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phone {
    /// Its name, unique among the user's devices (`phone`, `phone-2` …).
    pub name: String,
    /// Pending until its test request is approved.
    pub state: EnrollState,
    /// Unix time of its pairing.
    pub created: u64,
    /// Unix time of its latest approval.
    pub last_used: Option<u64>,
    /// Its passkey (`webauthn-rs`' `Passkey`, JSON): the credential's ID,
    /// public key and signature counter. Public data, sealed with the record.
    pub passkey: String,
    /// SHA-256 of the app's token ([`crate::core::tokens::token_hash`]):
    /// the app shows requests to whoever holds it; approving needs the
    /// passkey.
    pub app_token_hash: String,
    /// Its Web Push subscription, when the browser gave one.
    pub push: Option<PushTarget>,
    /// The language of its pages (`en`, `nl`), for its notifications.
    #[serde(default)]
    pub lang: String,
}

/// Where a phone's pushes go (a `PushSubscription` of the browser).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushTarget {
    /// The push service's URL for this phone.
    pub endpoint: String,
    /// The phone's P-256 public key, base64url.
    pub p256dh: String,
    /// The phone's authentication secret, base64url.
    pub auth: String,
}

/// A sign-in request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// Random, hex: names the request to the app and the waiting login.
    pub id: String,
    /// The host the login waits on.
    pub host: String,
    /// PAM_SERVICE.
    pub service: String,
    /// PAM_RHOST, or empty for a local login.
    pub source: String,
    /// Unix time it was made.
    pub time: u64,
    /// Unix time after which it cannot be approved.
    pub expires: u64,
    /// The number the person picks (10-99).
    pub number: u8,
    /// What the phone offers: the number and two others, in random order.
    pub choices: [u8; 3],
    /// Where it stands.
    pub state: RequestState,
    /// A pairing's test request: the phone it tests (only that phone sees
    /// and approves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// The WebAuthn challenge issued after the right number was picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<Challenge>,
}

/// The challenge issued to a phone for a request (`webauthn-rs`'
/// `PasskeyAuthentication`, JSON): the assertion must be over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// The phone it was issued to.
    pub phone: String,
    /// The ceremony's state.
    pub state: String,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestState {
    /// Waiting for the phone.
    Open,
    /// Approved with this phone's passkey; not yet used by its login.
    Approved {
        /// The phone.
        phone: String,
    },
    /// Denied on the phone.
    Denied {
        /// "This wasn't me".
        not_me: bool,
    },
    /// A wrong number was picked: closed.
    WrongNumber,
    /// Its login used the approval (or a test request was approved).
    Used,
}

/// What the shell knows of a login when it makes a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// This host's name.
    pub host: &'a str,
    /// PAM_SERVICE.
    pub service: &'a str,
    /// PAM_RHOST.
    pub source: &'a str,
}

impl SignInRequest {
    /// A request made at `now`, valid for `timeout` seconds, with the random
    /// `id` and the number and choices drawn from `random` (4 bytes).
    pub fn new(
        id: String,
        random: [u8; 4],
        context: RequestContext<'_>,
        now: u64,
        timeout: u64,
        test: Option<String>,
    ) -> Self {
        let (number, choices) = numbers(random);
        SignInRequest {
            id,
            host: context.host.to_owned(),
            service: context.service.to_owned(),
            source: context.source.to_owned(),
            time: now,
            expires: now.saturating_add(timeout),
            number,
            choices,
            state: RequestState::Open,
            test,
            challenge: None,
        }
    }

    /// Open and not expired at `now`.
    pub fn is_open(&self, now: u64) -> bool {
        self.state == RequestState::Open && now <= self.expires
    }

    /// Whether `phone` may see it: a login's request goes to every phone
    /// of the user (only active ones answer it, [`Approvals::pick`]), a
    /// test request only to its phone.
    pub fn is_for(&self, phone: &str) -> bool {
        self.test.as_deref().is_none_or(|p| p == phone)
    }

    /// Whether `phone` (`active`: its pairing confirmed) may answer it: a
    /// pending phone answers its own test request only.
    fn answerable_by(&self, phone: &str, active: bool) -> bool {
        match self.test.as_deref() {
            Some(tested) => tested == phone,
            None => active,
        }
    }

    fn check_open(&self, now: u64) -> Result<(), Closed> {
        match self.state {
            RequestState::Open if now <= self.expires => Ok(()),
            RequestState::Open => Err(Closed::Expired),
            _ => Err(Closed::Decided),
        }
    }
}

/// The number (10-99) and the three choices, the number among them at a
/// random place, from 4 random bytes. The two others differ from it and
/// from each other.
pub fn numbers(random: [u8; 4]) -> (u8, [u8; 3]) {
    let pick = |b: u8| 10 + b % 90;
    let number = pick(random[0]);
    // Offsets 1..=89 from the number (mod 90) can never give it back.
    let first = 10 + (number - 10 + 1 + random[1] % 89) % 90;
    let mut second = 10 + (number - 10 + 1 + random[2] % 89) % 90;
    if second == first {
        // The next one that is neither.
        second = (first - 10 + 1) % 90 + 10;
        if second == number {
            second = (second - 10 + 1) % 90 + 10;
        }
    }
    let mut choices = [first, second, number];
    let place = usize::from(random[3] % 3);
    choices.swap(place, 2);
    (number, choices)
}

/// Why a request cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No active phone is paired.
    NoPhone,
    /// [`MAX_OPEN_REQUESTS`] are open.
    TooManyOpen,
    /// `max_per_hour` pushes were sent within the hour.
    PushBudget {
        /// Seconds until the oldest of them is an hour old.
        retry_after: u64,
    },
    /// A wrong number or "this wasn't me" paused requests from sources the
    /// user has not proven.
    Paused {
        /// Seconds until the pause ends.
        retry_after: u64,
    },
}

impl Refused {
    /// The name in audit lines.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::NoPhone => "approve_no_phone",
            Refused::TooManyOpen => "approve_too_many_open",
            Refused::PushBudget { .. } => "approve_limited",
            Refused::Paused { .. } => "approve_paused",
        }
    }
}

/// Why a phone's answer to a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No such request (or not this phone's).
    Unknown,
    /// It expired.
    Expired,
    /// It was approved, denied or closed already.
    Decided,
    /// A wrong number was picked: it is closed now.
    WrongNumber,
    /// No challenge was issued to this phone for it (or it was used).
    NoChallenge,
}

impl Closed {
    /// The sentence for the app.
    pub fn message(&self) -> &'static str {
        match self {
            Closed::Unknown => "no such sign-in request",
            Closed::Expired => "the sign-in request expired",
            Closed::Decided => "the sign-in request was answered already",
            Closed::WrongNumber => {
                "that was not the number shown at the sign-in; the request is closed"
            }
            Closed::NoChallenge => "pick the number first",
        }
    }
}

/// What became of a login's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Still open: look again, at most `remaining` seconds.
    Open {
        /// Seconds until it expires.
        remaining: u64,
    },
    /// Approved on this phone.
    Approved {
        /// The phone.
        phone: String,
    },
    /// Denied.
    Denied {
        /// "This wasn't me".
        not_me: bool,
    },
    /// Closed by a wrong number.
    WrongNumber,
    /// Expired (or gone).
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: RequestContext<'static> = RequestContext {
        host: "bastion",
        service: "sshd",
        source: "192.0.2.7",
    };

    fn phone(name: &str, state: EnrollState) -> Phone {
        Phone {
            name: name.into(),
            state,
            created: 0,
            last_used: None,
            passkey: "{}".into(),
            app_token_hash: format!("hash-{name}"),
            push: None,
            lang: "en".into(),
        }
    }

    fn with_phone() -> Approvals {
        Approvals {
            phones: vec![phone("phone", EnrollState::Active)],
            ..Approvals::default()
        }
    }

    fn request(id: &str, now: u64) -> SignInRequest {
        SignInRequest::new(id.into(), [5, 6, 7, 8], CONTEXT, now, 60, None)
    }

    #[test]
    fn the_number_is_among_three_different_choices_for_every_draw() {
        for a in 0..=255u8 {
            for b in (0..=255u8).step_by(7) {
                for c in (0..=255u8).step_by(11) {
                    for d in 0..3u8 {
                        let (number, choices) = numbers([a, b, c, d]);
                        assert!((10..=99).contains(&number));
                        assert!(choices.iter().all(|n| (10..=99).contains(n)));
                        assert!(choices.contains(&number));
                        assert!(
                            choices[0] != choices[1]
                                && choices[1] != choices[2]
                                && choices[0] != choices[2],
                            "{choices:?}"
                        );
                    }
                }
            }
        }
        // The number's place varies.
        let places: std::collections::BTreeSet<usize> = (0..3u8)
            .map(|d| {
                let (n, c) = numbers([40, 1, 2, d]);
                c.iter().position(|x| *x == n).unwrap()
            })
            .collect();
        assert_eq!(places.len(), 3);
    }

    #[test]
    fn requests_need_an_active_phone_and_stop_at_three_open_and_at_the_budget() {
        let mut a = Approvals {
            phones: vec![phone("phone", EnrollState::Pending)],
            ..Approvals::default()
        };
        assert_eq!(a.may_request(100, 10, true), Err(Refused::NoPhone));
        a = with_phone();
        for i in 0..3 {
            assert_eq!(a.may_request(100, 10, true), Ok(()));
            a.add_request(request(&format!("r{i}"), 100), 100);
        }
        assert_eq!(a.may_request(100, 10, true), Err(Refused::TooManyOpen));
        // Once they expire, more may be made, up to the hour's budget.
        assert_eq!(a.may_request(161, 4, true), Ok(()));
        a.add_request(request("r3", 161), 161);
        assert_eq!(
            a.may_request(162, 4, true),
            Err(Refused::PushBudget { retry_after: 3538 })
        );
        // A proven source is held back by its backoff alone.
        assert_eq!(a.may_request(162, 4, false), Ok(()));
        assert_eq!(a.may_request(3700, 4, true), Ok(()));
    }

    #[test]
    fn an_approval_needs_the_right_number_then_the_challenge_and_counts_once() {
        let mut a = with_phone();
        let r = request("r1", 100);
        let (number, wrong) = (
            r.number,
            r.choices.iter().find(|n| **n != r.number).copied(),
        );
        a.add_request(r, 100);
        assert_eq!(a.wait("r1", 101), Wait::Open { remaining: 59 });
        // No challenge yet: nothing to approve.
        assert_eq!(
            a.approve("r1", "phone", "{}".into(), 101),
            Err(Closed::NoChallenge)
        );
        assert_eq!(a.pick("r1", number, "phone", 101), Ok(()));
        a.set_challenge("r1", "phone", "state".into()).unwrap();
        assert_eq!(a.challenge("r1", "phone", 101), Ok("state"));
        assert_eq!(a.challenge("r1", "other", 101), Err(Closed::NoChallenge));
        assert_eq!(a.approve("r1", "phone", "{\"c\":2}".into(), 102), Ok(()));
        assert_eq!(a.phones[0].last_used, Some(102));
        assert_eq!(a.phones[0].passkey, "{\"c\":2}");
        // A replayed assertion finds no challenge and a decided request.
        assert_eq!(
            a.approve("r1", "phone", "{}".into(), 102),
            Err(Closed::Decided)
        );
        assert_eq!(
            a.wait("r1", 103),
            Wait::Approved {
                phone: "phone".into()
            }
        );
        a.use_approval("r1");
        assert_eq!(a.wait("r1", 103), Wait::Expired);
        // A wrong number closes the next one.
        a.add_request(request("r2", 110), 110);
        assert_eq!(
            a.pick("r2", wrong.unwrap(), "phone", 111),
            Err(Closed::WrongNumber)
        );
        assert_eq!(a.wait("r2", 111), Wait::WrongNumber);
        assert_eq!(a.pick("r2", number, "phone", 111), Err(Closed::Decided));
    }

    #[test]
    fn expired_and_denied_requests_cannot_be_approved() {
        let mut a = with_phone();
        let r = request("r1", 100);
        let number = r.number;
        a.add_request(r, 100);
        a.pick("r1", number, "phone", 150).unwrap();
        a.set_challenge("r1", "phone", "s".into()).unwrap();
        assert_eq!(
            a.approve("r1", "phone", "{}".into(), 161),
            Err(Closed::Expired)
        );
        assert_eq!(a.wait("r1", 161), Wait::Expired);
        a.add_request(request("r2", 200), 200);
        a.deny("r2", "phone", true, 201).unwrap();
        assert_eq!(a.wait("r2", 201), Wait::Denied { not_me: true });
        assert_eq!(a.pick("r2", number, "phone", 202), Err(Closed::Decided));
        assert_eq!(a.wait("nope", 202), Wait::Expired);
    }

    #[test]
    fn a_test_request_is_only_its_phones_and_activates_it() {
        let mut a = with_phone();
        a.phones.push(phone("phone-2", EnrollState::Pending));
        let r = SignInRequest::new(
            "t".into(),
            [1, 2, 3, 4],
            CONTEXT,
            100,
            600,
            Some("phone-2".into()),
        );
        let number = r.number;
        a.add_request(r, 100);
        assert_eq!(a.pick("t", number, "phone", 101), Err(Closed::Unknown));
        assert_eq!(a.deny("t", "phone", false, 101), Err(Closed::Unknown));
        a.pick("t", number, "phone-2", 101).unwrap();
        a.set_challenge("t", "phone-2", "s".into()).unwrap();
        a.approve("t", "phone-2", "{}".into(), 102).unwrap();
        assert_eq!(a.phones[1].state, EnrollState::Active);
        // Nothing for a login to use.
        assert_eq!(a.wait("t", 103), Wait::Expired);
    }

    #[test]
    fn a_phone_whose_test_is_not_approved_answers_no_login() {
        let mut a = with_phone();
        a.phones.push(phone("phone-2", EnrollState::Pending));
        let r = request("r1", 100);
        let number = r.number;
        a.add_request(r, 100);
        assert_eq!(a.pick("r1", number, "phone-2", 101), Err(Closed::Unknown));
        assert_eq!(a.deny("r1", "phone-2", true, 101), Err(Closed::Unknown));
        // Its challenge (had one been issued) approves nothing either.
        a.set_challenge("r1", "phone-2", "s".into()).unwrap();
        assert_eq!(
            a.approve("r1", "phone-2", "{}".into(), 101),
            Err(Closed::NoChallenge)
        );
        assert_eq!(a.wait("r1", 101), Wait::Open { remaining: 59 });
        assert_eq!(a.pick("r1", number, "phone", 101), Ok(()));
    }

    #[test]
    fn a_wrong_number_or_not_me_pauses_requests_from_unproven_sources() {
        let mut a = with_phone();
        let r = request("r1", 100);
        let (number, wrong) = (
            r.number,
            r.choices.iter().find(|n| **n != r.number).copied(),
        );
        a.add_request(r, 100);
        assert_eq!(
            a.pick("r1", wrong.unwrap(), "phone", 101),
            Err(Closed::WrongNumber)
        );
        assert_eq!(
            a.may_request(102, 10, true),
            Err(Refused::Paused {
                retry_after: PAUSE_SECS - 1
            })
        );
        // A source the user has proven is not paused (the user at home).
        assert_eq!(a.may_request(102, 10, false), Ok(()));
        assert_eq!(a.may_request(101 + PAUSE_SECS, 10, true), Ok(()));
        let _ = number;
        // "This wasn't me" pauses too; a plain deny does not.
        let mut b = with_phone();
        b.add_request(request("r2", 100), 100);
        b.add_request(request("r3", 100), 100);
        b.deny("r2", "phone", false, 101).unwrap();
        assert_eq!(b.may_request(102, 10, true), Ok(()));
        b.deny("r3", "phone", true, 101).unwrap();
        assert!(matches!(
            b.may_request(102, 10, true),
            Err(Refused::Paused { .. })
        ));
        // Enrolled afresh: no phone, the limits kept.
        let fresh = b.afresh();
        assert!(fresh.phones.is_empty() && fresh.requests.is_empty() && fresh.pairing.is_none());
        assert_eq!(
            (fresh.pushed.len(), fresh.paused_until),
            (2, b.paused_until)
        );
    }

    #[test]
    fn pruning_keeps_the_hour_and_drops_old_requests_and_pairings() {
        let mut a = with_phone();
        a.pairing = Some(Pairing {
            link: Link {
                token_hash: "h".into(),
                expires: 700,
                page: Default::default(),
            },
            registration: None,
        });
        a.add_request(request("r1", 100), 100);
        a.prune(700);
        assert!(a.pairing.is_some());
        assert_eq!(a.requests.len(), 1);
        a.prune(761);
        assert!(a.pairing.is_none());
        assert!(a.requests.is_empty());
        assert_eq!(a.pushed, vec![100]);
        a.prune(3700);
        assert!(a.pushed.is_empty());
        for i in 0..40 {
            a.add_request(request(&format!("x{i}"), 4000), 4000);
        }
        assert_eq!(a.requests.len(), MAX_KEPT_REQUESTS);
        assert_eq!(a.requests[0].id, "x24");
    }

    #[test]
    fn removing_a_phone_drops_its_challenges_and_new_names_are_free() {
        let mut a = with_phone();
        let r = request("r1", 100);
        let number = r.number;
        a.add_request(r, 100);
        a.pick("r1", number, "phone", 101).unwrap();
        a.set_challenge("r1", "phone", "s".into()).unwrap();
        assert_eq!(a.new_phone_name(&["default"]), "phone-2");
        assert_eq!(a.new_phone_name(&["phone-2"]), "phone-3");
        assert!(a.remove_phone("phone"));
        assert!(!a.remove_phone("phone"));
        assert_eq!(a.challenge("r1", "phone", 101), Err(Closed::NoChallenge));
        assert_eq!(a.new_phone_name(&[]), "phone");
    }
}
