//! A Web Push service stand-in on 127.0.0.1, for the tests of otpd's push
//! sender (a third-party service we do not ship, and headless Chromium
//! cannot reach a real one).
//!
//! It plays the push service of RFC 8030 and, for each subscription it
//! hands out, the browser behind it: it holds the subscription's private
//! key and authentication secret. For every message it checks, with code
//! of its own (not otpd's, nor the crate otpd encrypts with), what a real
//! push service and browser check:
//! - the VAPID `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292): an
//!   ES256 JWT whose signature is valid under `k`, `aud` the endpoint's
//!   origin, `exp` in the future and at most 24 hours ahead, `sub` the
//!   expected contact (when the test gave one), `k` the expected key (when
//!   given);
//! - `Content-Encoding: aes128gcm` and a `TTL` header (RFC 8030 §5.2);
//! - the body: decrypted as RFC 8291 describes (ECDH P-256, HKDF-SHA-256,
//!   AES-128-GCM with the RFC 8188 record layout, one record).
//!
//! It answers 201 to a good message, 400, 401 or 403 with the reason to a
//! bad one (recorded in [`PushService::rejections`]), 404 to an unknown
//! subscription and 410 to one the test marked gone. A minimal HTTP/1.1
//! server on a std `TcpListener` (one request per connection, which is all
//! the sender makes) is enough for a test helper.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{Aes128Gcm, Nonce};
use base64ct::{Base64UrlUnpadded, Encoding};
use hkdf::Hkdf;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The largest request head and body the stand-in reads.
const HEAD_MAX: usize = 16 * 1024;
const BODY_MAX: usize = 8 * 1024;

/// A message the stand-in accepted and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The subscription's number (the `n` of `/push/<n>`).
    pub subscription: usize,
    /// The decrypted payload.
    pub payload: Vec<u8>,
    /// The `TTL` header, seconds.
    pub ttl: u64,
    /// The `k` of the VAPID header (base64url).
    pub vapid_key: String,
    /// The `Urgency` header, when there was one.
    pub urgency: Option<String>,
}

/// A message the stand-in refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The subscription's number, when the path named a known one.
    pub subscription: Option<usize>,
    /// The status answered.
    pub status: u16,
    /// Why, in words (also the answer's body).
    pub reason: String,
}

/// The browser side of one subscription.
struct BrowserKeys {
    secret: p256::SecretKey,
    public: Vec<u8>,
    auth: [u8; 16],
}

#[derive(Default)]
struct State {
    subscriptions: Vec<BrowserKeys>,
    gone: HashSet<usize>,
    messages: Vec<Received>,
    rejections: Vec<Rejection>,
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    expected_key: Option<String>,
    expected_contact: Option<String>,
    origin: String,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stand-in; stops and joins its thread when dropped.
pub struct PushService {
    address: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PushService {
    /// Starts the stand-in on a port of 127.0.0.1. With
    /// `expected_vapid_public_key` (base64url, uncompressed), a message
    /// signed under another key is refused (403); with `expected_contact`,
    /// one whose `sub` differs (401).
    pub fn start(
        expected_vapid_public_key: Option<String>,
        expected_contact: Option<String>,
    ) -> PushService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("the stand-in's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            expected_key: expected_vapid_public_key,
            expected_contact,
            origin: format!("http://{address}"),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve(listener, &shared))
        };
        PushService {
            address,
            shared,
            thread: Some(thread),
        }
    }

    /// A new subscription: a fresh P-256 key pair and 16-byte auth secret
    /// (the private parts stay here). Returns the endpoint URL
    /// (`http://127.0.0.1:PORT/push/<n>`, n counting from 0), `p256dh` and
    /// `auth`, base64url without padding, as `PushSubscription.toJSON()`.
    pub fn subscription(&self) -> (String, String, String) {
        let secret = p256::SecretKey::random(&mut OsRng);
        let public = secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let mut auth = [0u8; 16];
        OsRng.fill_bytes(&mut auth);
        let p256dh = Base64UrlUnpadded::encode_string(&public);
        let auth_text = Base64UrlUnpadded::encode_string(&auth);
        let mut state = self.shared.lock();
        let n = state.subscriptions.len();
        state.subscriptions.push(BrowserKeys {
            secret,
            public,
            auth,
        });
        (
            format!("{}/push/{n}", self.shared.origin),
            p256dh,
            auth_text,
        )
    }

    /// `127.0.0.1:PORT`, the entry that lets otpd send here.
    pub fn host_entry(&self) -> String {
        self.address.to_string()
    }

    /// From now on, messages to subscription `n` get 410 Gone.
    pub fn mark_gone(&self, n: usize) {
        self.shared.lock().gone.insert(n);
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.lock().messages.clone()
    }

    /// The messages refused so far, in order.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.shared.lock().rejections.clone()
    }

    /// How many connections the stand-in accepted.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Waits until `count` messages were accepted or `timeout` passed;
    /// returns the messages accepted by then.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.messages.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.messages.clone()
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the thread sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, shared: &Shared) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        shared.lock().connections += 1;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let (status, reason, location) = match read_request(&mut stream) {
            Ok(request) => handle(shared, &request),
            Err(reason) => (400, reason, None),
        };
        let text = match status {
            201 => "Created",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            410 => "Gone",
            413 => "Payload Too Large",
            _ => "Other",
        };
        let location = location
            .map(|l| format!("Location: {l}\r\n"))
            .unwrap_or_default();
        let answer = format!(
            "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             {location}Connection: close\r\n\r\n{reason}",
            reason.len()
        );
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.flush();
    }
}

struct HttpRequest {
    method: String,
    path: String,
    /// Lower-cased names.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &mut TcpStream) -> Result<HttpRequest, String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > HEAD_MAX {
            return Err("request head too large".into());
        }
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            return Err("connection closed before the request's end".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| "head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    if headers.contains_key("transfer-encoding") {
        return Err("Transfer-Encoding not supported here; send Content-Length".into());
    }
    let length: usize = match headers.get("content-length") {
        Some(value) => value.parse().map_err(|_| "bad Content-Length")?,
        None => 0,
    };
    if length > BODY_MAX {
        return Err(format!("body of {length} bytes is too large"));
    }
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("reading the body: {e}"))?;
        if n == 0 {
            return Err("connection closed before the body's end".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

/// Status, reason and Location of the answer to one request; records it.
fn handle(shared: &Shared, request: &HttpRequest) -> (u16, String, Option<String>) {
    let subscription = request
        .path
        .strip_prefix("/push/")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < shared.lock().subscriptions.len());
    let outcome = check(shared, request, subscription);
    let mut state = shared.lock();
    let answer = match outcome {
        Ok(received) => {
            let location = format!("{}/message/{}", shared.origin, state.messages.len());
            state.messages.push(received);
            (201, String::new(), Some(location))
        }
        Err((status, reason)) => {
            state.rejections.push(Rejection {
                subscription,
                status,
                reason: reason.clone(),
            });
            (status, reason, None)
        }
    };
    shared.changed.notify_all();
    answer
}

fn check(
    shared: &Shared,
    request: &HttpRequest,
    subscription: Option<usize>,
) -> Result<Received, (u16, String)> {
    if request.method != "POST" {
        return Err((
            405,
            format!("method {} (push messages are POSTed)", request.method),
        ));
    }
    let n = subscription.ok_or((404, format!("no subscription at {}", request.path)))?;
    if shared.lock().gone.contains(&n) {
        return Err((410, format!("subscription {n} is gone")));
    }
    let header = |name: &str| request.headers.get(name).map(String::as_str);
    let ttl = header("ttl")
        .ok_or((400, "no TTL header (RFC 8030 §5.2)".to_string()))?
        .parse::<u64>()
        .map_err(|_| (400, "TTL is not a number of seconds".to_string()))?;
    if header("content-encoding") != Some("aes128gcm") {
        return Err((
            400,
            format!(
                "Content-Encoding is {:?}, not aes128gcm (RFC 8291)",
                header("content-encoding")
            ),
        ));
    }
    let vapid_key = check_vapid(shared, header("authorization"))?;
    let payload = {
        let state = shared.lock();
        decrypt(&state.subscriptions[n], &request.body)
    }
    .map_err(|reason| (400, format!("cannot decrypt the message: {reason}")))?;
    Ok(Received {
        subscription: n,
        payload,
        ttl,
        vapid_key,
        urgency: header("urgency").map(String::from),
    })
}

/// Checks the `Authorization: vapid t=<JWT>, k=<key>` header (RFC 8292);
/// the `k` on success.
fn check_vapid(shared: &Shared, authorization: Option<&str>) -> Result<String, (u16, String)> {
    let unauthorized = |why: String| (401, why);
    let value = authorization.ok_or_else(|| unauthorized("no Authorization header".into()))?;
    let (scheme, params) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("Authorization is not \"vapid t=…, k=…\"".into()))?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(unauthorized(format!(
            "Authorization scheme {scheme:?}, not vapid"
        )));
    }
    let mut token = None;
    let mut key = None;
    for param in params.split(',') {
        match param.trim().split_once('=') {
            Some(("t", value)) => token = Some(value.trim()),
            Some(("k", value)) => key = Some(value.trim()),
            _ => {}
        }
    }
    let token = token.ok_or_else(|| unauthorized("no t= in the vapid header".into()))?;
    let key = key.ok_or_else(|| unauthorized("no k= in the vapid header".into()))?;
    if let Some(expected) = &shared.expected_key {
        if key != expected {
            return Err((
                403,
                "k is not the key this subscription was made with".into(),
            ));
        }
    }
    let verifying = Base64UrlUnpadded::decode_vec(key)
        .ok()
        .and_then(|bytes| VerifyingKey::from_sec1_bytes(&bytes).ok())
        .ok_or_else(|| unauthorized("k is not a P-256 public key in base64url".into()))?;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(unauthorized("t is not a JWS compact token".into()));
    };
    let json = |part: &str, what: &str| -> Result<serde_json::Value, (u16, String)> {
        Base64UrlUnpadded::decode_vec(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| unauthorized(format!("the token's {what} is not base64url JSON")))
    };
    let header_json = json(header, "header")?;
    if header_json["alg"] != "ES256" {
        return Err(unauthorized(format!(
            "token alg {}, not ES256",
            header_json["alg"]
        )));
    }
    let signature = Base64UrlUnpadded::decode_vec(signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or_else(|| unauthorized("the token's signature is not 64 bytes r||s".into()))?;
    verifying
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| unauthorized("the token's signature is not valid under k".into()))?;
    let claims = json(claims, "claims")?;
    if claims["aud"] != shared.origin.as_str() {
        return Err(unauthorized(format!(
            "aud {} is not the endpoint's origin {}",
            claims["aud"], shared.origin
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let exp = claims["exp"]
        .as_u64()
        .ok_or_else(|| unauthorized("no numeric exp".into()))?;
    if exp <= now {
        return Err(unauthorized(format!("exp {exp} is past (now {now})")));
    }
    if exp > now + 24 * 60 * 60 {
        return Err(unauthorized(format!(
            "exp {exp} is more than 24 hours ahead (RFC 8292 §2)"
        )));
    }
    let sub = claims["sub"]
        .as_str()
        .ok_or_else(|| unauthorized("no sub (contact)".into()))?;
    if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
        return Err(unauthorized(format!(
            "sub {sub:?} is not a mailto: or https: URI"
        )));
    }
    if let Some(expected) = &shared.expected_contact {
        if sub != expected {
            return Err(unauthorized(format!("sub {sub:?}, expected {expected:?}")));
        }
    }
    Ok(key.to_string())
}

/// RFC 8291 §3.4 and RFC 8188 §2: the plaintext of a one-record
/// `aes128gcm` message, decrypted with the browser's keys.
fn decrypt(keys: &BrowserKeys, body: &[u8]) -> Result<Vec<u8>, String> {
    // Header: salt (16), record size (4, big-endian), key id length (1),
    // key id: the sender's ephemeral public key, uncompressed (65).
    if body.len() < 21 {
        return Err("shorter than the aes128gcm header".into());
    }
    let salt = &body[..16];
    let record_size = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    let id_length = body[20] as usize;
    if id_length != 65 {
        return Err(format!(
            "key id of {id_length} bytes, not a 65-byte P-256 point"
        ));
    }
    let record = body
        .get(21 + id_length..)
        .ok_or("shorter than its key id")?;
    let sender_public = &body[21..21 + id_length];
    let sender = p256::PublicKey::from_sec1_bytes(sender_public)
        .map_err(|_| "the key id is not a P-256 point")?;
    if record_size < 18 {
        return Err(format!("record size {record_size} below 18"));
    }
    // RFC 8291 §4: one record.
    if record.len() > record_size {
        return Err(format!(
            "{} bytes of records with record size {record_size}: more than one record",
            record.len()
        ));
    }
    if record.len() < 17 {
        return Err("record shorter than its tag and delimiter".into());
    }

    let shared_secret =
        p256::ecdh::diffie_hellman(keys.secret.to_nonzero_scalar(), sender.as_affine());
    // IKM = HKDF(salt = auth, ikm = ECDH, info = "WebPush: info" 0 ua_public as_public, 32)
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(&keys.public);
    key_info.extend_from_slice(sender_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(
        Some(&keys.auth),
        shared_secret.raw_secret_bytes().as_slice(),
    )
    .expand(&key_info, &mut ikm)
    .map_err(|_| "HKDF expand")?;
    // CEK and NONCE from HKDF(salt = the header's salt, ikm = IKM).
    let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    content
        .expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|_| "HKDF expand")?;
    content
        .expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|_| "HKDF expand")?;
    // Record 0: the nonce XOR 0 is the nonce.
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| "AES key")?;
    let mut plain = cipher
        .decrypt(Nonce::from_slice(&nonce), record)
        .map_err(|_| "AES-GCM authentication failed (wrong keys or a changed body)")?;
    // Padding: the data, a delimiter (2 for the last record), zeros.
    while plain.last() == Some(&0) {
        plain.pop();
    }
    match plain.pop() {
        Some(2) => Ok(plain),
        Some(other) => Err(format!("last record's delimiter is {other}, not 2")),
        None => Err("no delimiter".into()),
    }
}
