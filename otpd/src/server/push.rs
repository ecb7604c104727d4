//! The Web Push sender: one sign-in request to one phone's browser, through
//! its vendor's push service (RFC 8030), the message encrypted for the
//! browser alone (RFC 8291, `aes128gcm`) and signed with otpd's VAPID key
//! (RFC 8292).
//!
//! The subscription's endpoint comes from a browser, so it is a URL an
//! outsider may choose: [`Subscription::check`] holds it to a list of push
//! services' hosts before anything connects (see [`default_push_hosts`]).
#![cfg(feature = "web")]

use base64ct::{Base64UrlUnpadded, Encoding};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Request, Uri};
use hyper_util::rt::TokioIo;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The longest endpoint URL accepted (the push services' run to about 250
/// characters).
const ENDPOINT_MAX: usize = 2048;

/// The largest payload one push message carries: RFC 8291 §4 limits the
/// plaintext to 3993 octets (4096 of encrypted body).
pub const PAYLOAD_MAX: usize = 3993;

/// How long the VAPID token is valid: RFC 8292 §2 allows at most 24 hours;
/// 12 hours is the common choice, which leaves room for a push service's
/// clock running behind.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Why a push was not sent or not taken. No text holds a key, a token or
/// the endpoint's path (the path is the subscription's capability).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The VAPID secret is not a usable P-256 key (zero, or not below the
    /// group's order).
    #[error("the VAPID key is not a valid P-256 private key")]
    BadKey,
    /// The subscription is malformed (endpoint, `p256dh` or `auth`).
    #[error("bad push subscription: {0}")]
    BadSubscription(String),
    /// The endpoint's host is not one of the allowed push services.
    #[error("push endpoint not allowed: {0}")]
    NotAllowed(String),
    /// The payload is larger than one push message carries.
    #[error("push payload of {0} bytes is larger than the {PAYLOAD_MAX} a push message carries")]
    PayloadTooLarge(usize),
    /// No connection, TLS or HTTP exchange with the push service.
    #[error("push service unreachable: {0}")]
    Unreachable(String),
    /// The whole exchange took longer than the timeout.
    #[error("push service did not answer in time")]
    TimedOut,
    /// The push service refused the message.
    #[error("push service refused the message (HTTP {status})")]
    Rejected {
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The subscription expired or was withdrawn (HTTP 404 or 410): the
    /// caller drops it.
    #[error("push subscription expired (gone at the push service)")]
    Gone,
}

/// The VAPID key pair (P-256), from 32 secret bytes the caller gives.
pub struct VapidKey {
    signing: SigningKey,
    public: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// The key pair whose private scalar is `bytes` (big-endian); refused
    /// when that is zero or not below the group's order.
    pub fn from_secret(bytes: &[u8; 32]) -> Result<VapidKey, PushError> {
        let signing = SigningKey::from_bytes(&(*bytes).into()).map_err(|_| PushError::BadKey)?;
        let public = Base64UrlUnpadded::encode_string(
            signing.verifying_key().to_encoded_point(false).as_bytes(),
        );
        Ok(VapidKey { signing, public })
    }

    /// Uncompressed public key, base64url without padding (what
    /// `applicationServerKey` takes, and the `k` of the VAPID header).
    pub fn public_key(&self) -> String {
        self.public.clone()
    }

    /// The VAPID token (RFC 8292 §2): an ES256 JWT with `aud` the push
    /// resource's origin, `exp`, `sub` the contact. Written here rather
    /// than with web-push-native's `VapidSignature`, which puts
    /// `scheme://host` in `aud` and so drops a non-default port from the
    /// origin.
    fn token(&self, audience: &str, contact: &str, expires: u64) -> String {
        let header = Base64UrlUnpadded::encode_string(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": expires, "sub": contact });
        let claims = Base64UrlUnpadded::encode_string(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{claims}");
        // RFC 6979 deterministic ECDSA over SHA-256; the JWS form of the
        // signature is r || s, 64 bytes (RFC 7518 §3.4).
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        let signature = Base64UrlUnpadded::encode_string(&signature.to_bytes());
        format!("{signing_input}.{signature}")
    }
}

/// A browser's subscription, as `PushSubscription.toJSON()` gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    /// The push resource's URL at the browser's push service.
    pub endpoint: String,
    /// The browser's keys for the message encryption.
    pub keys: SubscriptionKeys,
}

/// The keys of a subscription (RFC 8291 §3.2), base64url.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key, uncompressed (65 bytes).
    pub p256dh: String,
    /// The authentication secret (16 bytes).
    pub auth: String,
}

/// A subscription that passed [`Subscription::check`], ready to send to.
struct Target {
    https: bool,
    /// Lower-cased, as in the URL (an IPv6 literal keeps its brackets).
    host: String,
    port: u16,
    path_and_query: String,
    browser_key: p256::PublicKey,
    auth: [u8; 16],
}

impl Target {
    /// The push resource's origin, the VAPID token's `aud` (RFC 8292 §2):
    /// scheme, host, and the port when it is not the scheme's default.
    fn origin(&self) -> String {
        let (scheme, default) = if self.https {
            ("https", 443)
        } else {
            ("http", 80)
        };
        if self.port == default {
            format!("{scheme}://{}", self.host)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// `host[:port]` as the Host header carries it.
    fn authority(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Subscription {
    /// Checks shape (`p256dh` a P-256 point, `auth` 16 bytes, `endpoint` a
    /// URL) and the endpoint policy: `https://` to a host of
    /// `allowed_hosts` (an entry `host`, `host:port`, or `*.domain` for the
    /// domain's subdomains; without a port, 443); plain `http://` only to a
    /// loopback IP literal whose exact `host:port` is an entry.
    pub fn check(&self, allowed_hosts: &[String]) -> Result<(), PushError> {
        self.target(allowed_hosts).map(|_| ())
    }

    fn target(&self, allowed_hosts: &[String]) -> Result<Target, PushError> {
        let browser_key = decode_browser_key(&self.keys.p256dh)?;
        let auth = decode_b64url(&self.keys.auth)
            .ok()
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
            .ok_or_else(|| {
                PushError::BadSubscription("keys.auth is not 16 bytes in base64url".into())
            })?;
        let (https, host, port, path_and_query) = parse_endpoint(&self.endpoint)?;
        if !endpoint_allowed(https, &host, port, allowed_hosts) {
            let scheme = if https { "https" } else { "http" };
            return Err(PushError::NotAllowed(if https {
                format!("{scheme}://{host}:{port} is not in the list of push services")
            } else {
                format!(
                    "{scheme}://{host}:{port}: plain http only to a loopback address listed \
                     as host:port"
                )
            }));
        }
        Ok(Target {
            https,
            host,
            port,
            path_and_query,
            browser_key,
            auth,
        })
    }
}

/// Base64url, with or without padding (browsers give it without).
fn decode_b64url(text: &str) -> Result<Vec<u8>, base64ct::Error> {
    Base64UrlUnpadded::decode_vec(text.trim_end_matches('='))
}

fn decode_browser_key(text: &str) -> Result<p256::PublicKey, PushError> {
    let bad = || {
        PushError::BadSubscription(
            "keys.p256dh is not an uncompressed P-256 public key in base64url".into(),
        )
    };
    let bytes = decode_b64url(text).map_err(|_| bad())?;
    // RFC 8291 §3.1: the uncompressed form (0x04, x, y).
    if bytes.len() != 65 || bytes[0] != 0x04 {
        return Err(bad());
    }
    p256::PublicKey::from_sec1_bytes(&bytes).map_err(|_| bad())
}

/// Scheme (https?), lower-cased host, port, path and query of an endpoint.
fn parse_endpoint(endpoint: &str) -> Result<(bool, String, u16, String), PushError> {
    let bad = |why: &str| PushError::BadSubscription(format!("endpoint: {why}"));
    if endpoint.len() > ENDPOINT_MAX {
        return Err(bad("longer than 2048 characters"));
    }
    let uri: Uri = endpoint.parse().map_err(|_| bad("not a URL"))?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(bad("not an http(s) URL")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information in the URL"));
    }
    if authority.as_str().ends_with(':') {
        return Err(bad("empty port"));
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    if port == 0 {
        return Err(bad("port 0"));
    }
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string());
    Ok((https, host, port, path_and_query))
}

/// The host of a URL or entry without IPv6 brackets, as an IP address.
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// An entry's host pattern and port (`[::1]:8080`, `relay.example:8443`,
/// `fcm.googleapis.com`, `*.notify.windows.com`).
fn split_entry(entry: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &entry[..close + 2];
        return match &rest[close + 1..] {
            "" => Some((host, None)),
            port => Some((host, Some(port.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((entry, None)),
    }
}

/// The endpoint policy of [`Subscription::check`].
fn endpoint_allowed(https: bool, host: &str, port: u16, allowed_hosts: &[String]) -> bool {
    if !https && !ip_literal(host).is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    allowed_hosts.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let Some((pattern, entry_port)) = split_entry(&entry) else {
            return false;
        };
        match entry_port {
            Some(entry_port) if entry_port != port => return false,
            Some(_) => {}
            // Without a port, an entry names an https service on 443.
            None if !https || port != 443 => return false,
            None => {}
        }
        match pattern.strip_prefix("*.") {
            // Plain http needs the exact host:port.
            Some(_) if !https => false,
            Some(domain) => host
                .strip_suffix(domain)
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            None => pattern == host,
        }
    })
}

/// The default list of push services' hosts: Google's FCM (Chrome and the
/// Chromium browsers), Mozilla's autopush (Firefox), Apple's (Safari,
/// and web apps on iOS from 16.4), Microsoft's WNS (Edge).
pub fn default_push_hosts() -> Vec<String> {
    [
        "fcm.googleapis.com",
        "updates.push.services.mozilla.com",
        "*.push.apple.com",
        "*.notify.windows.com",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Sends `payload` (encrypted with RFC 8291 aes128gcm, VAPID-signed with
/// `contact` as `sub`), TTL `ttl`, within `timeout` for the whole exchange
/// (name lookup, connection, TLS, request, the answer's head). The endpoint
/// is checked against `allowed_hosts` first ([`Subscription::check`]);
/// redirects are not followed; the answer's body is not read. The message
/// is sent with `Urgency: high` (RFC 8030 §5.3): a sign-in waits for it.
pub async fn send(
    key: &VapidKey,
    contact: &str,
    sub: &Subscription,
    payload: &[u8],
    ttl: Duration,
    timeout: Duration,
    allowed_hosts: &[String],
) -> Result<(), PushError> {
    let target = sub.target(allowed_hosts)?;
    if payload.len() > PAYLOAD_MAX {
        return Err(PushError::PayloadTooLarge(payload.len()));
    }
    let auth = web_push_native::Auth::clone_from_slice(&target.auth);
    let body = web_push_native::encrypt(payload.to_vec(), &target.browser_key, &auth)
        .map_err(|_| PushError::BadSubscription("cannot encrypt for these keys".into()))?;
    // The wall clock, for the token's expiry only (the push service's
    // check; nothing of otpd's decisions depends on it).
    let expires = crate::clock::unix_now() + TOKEN_LIFETIME.as_secs();
    let token = key.token(&target.origin(), contact, expires);
    let request = Request::post(target.path_and_query.as_str())
        .header(header::HOST, target.authority())
        .header("TTL", ttl.as_secs())
        .header("Urgency", "high")
        .header(header::CONTENT_ENCODING, "aes128gcm")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(
            header::AUTHORIZATION,
            format!("vapid t={token}, k={}", key.public),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| PushError::BadSubscription("endpoint: not usable in a request".into()))?;
    let status = tokio::time::timeout(timeout, exchange(&target, request))
        .await
        .map_err(|_| PushError::TimedOut)??;
    match status {
        200..=299 => Ok(()),
        404 | 410 => Err(PushError::Gone),
        status => Err(PushError::Rejected { status }),
    }
}

/// Connects, sends the request and returns the answer's status.
async fn exchange(target: &Target, request: Request<Full<Bytes>>) -> Result<u16, PushError> {
    let place = format!("{}:{}", target.host, target.port);
    let unreachable = |what: &str, e: &dyn std::fmt::Display| {
        PushError::Unreachable(format!("{place}: {what}: {e}"))
    };
    let lookup_host = target
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addresses: Vec<_> = tokio::net::lookup_host((lookup_host.as_str(), target.port))
        .await
        .map_err(|e| unreachable("name lookup", &e))?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let stream = match (stream, last_error) {
        (Some(stream), _) => stream,
        (None, Some(e)) => return Err(unreachable("connect", &e)),
        (None, None) => return Err(unreachable("name lookup", &"no address")),
    };
    if target.https {
        let config = tls_config().map_err(|e| unreachable("TLS set-up", &e))?;
        let name =
            ServerName::try_from(lookup_host).map_err(|e| unreachable("TLS server name", &e))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| unreachable("TLS", &e))?;
        http1(stream, request)
            .await
            .map_err(|e| unreachable("HTTP", &e))
    } else {
        http1(stream, request)
            .await
            .map_err(|e| unreachable("HTTP", &e))
    }
}

/// One HTTP/1.1 request on `stream`; the answer's status.
async fn http1<S>(stream: S, request: Request<Full<Bytes>>) -> Result<u16, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven here, not spawned: dropping this future (at
    // the timeout) ends it.
    let answer = sender.send_request(request);
    tokio::pin!(connection, answer);
    let response = tokio::select! {
        biased;
        response = &mut answer => response?,
        // The connection ended (the peer closed it, perhaps right after
        // answering): the request's own result says which.
        _ = &mut connection => answer.await?,
    };
    Ok(response.status().as_u16())
}

/// rustls with the ring provider and the system's roots, loaded once.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system certificate authorities found".to_string());
            }
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A browser's key pair and a subscription for `endpoint`.
    fn browser(endpoint: &str) -> (p256::SecretKey, [u8; 16], Subscription) {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let auth = [9u8; 16];
        let sub = Subscription {
            endpoint: endpoint.to_string(),
            keys: SubscriptionKeys {
                p256dh: Base64UrlUnpadded::encode_string(
                    secret.public_key().to_encoded_point(false).as_bytes(),
                ),
                auth: Base64UrlUnpadded::encode_string(&auth),
            },
        };
        (secret, auth, sub)
    }

    fn allowed(endpoint: &str, list: &[&str]) -> Result<(), PushError> {
        browser(endpoint).2.check(&hosts(list))
    }

    #[test]
    fn push_endpoint_policy() {
        let defaults = default_push_hosts();
        let defaults: Vec<&str> = defaults.iter().map(String::as_str).collect();
        let ok = [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://FCM.googleapis.com/wp/abc",
            "https://fcm.googleapis.com:443/wp/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
            "https://web.push.apple.com/QGx",
            "https://wns2-par02p.notify.windows.com/w/?token=BQYAAA",
        ];
        for endpoint in ok {
            assert!(allowed(endpoint, &defaults).is_ok(), "{endpoint}");
        }
        let refused = [
            // Not the host, a look-alike, the bare wildcard domain.
            "https://example.com/push",
            "https://fcm.googleapis.com.evil.example/x",
            "https://evilfcm.googleapis.com/x",
            "https://notify.windows.com/x",
            "https://evilnotify.windows.com/x",
            "https://push.apple.com.evil.example/x",
            // Another port, plain http, a trailing dot.
            "https://fcm.googleapis.com:8443/x",
            "http://fcm.googleapis.com/x",
            "https://fcm.googleapis.com./x",
            // Loopback and private addresses are not push services.
            "https://127.0.0.1/x",
            "http://127.0.0.1:8080/x",
            "http://[::1]:8080/x",
            "http://169.254.169.254/latest/meta-data",
        ];
        for endpoint in refused {
            assert!(
                matches!(allowed(endpoint, &defaults), Err(PushError::NotAllowed(_))),
                "{endpoint}"
            );
        }
        // Malformed endpoints.
        for endpoint in [
            "",
            "fcm.googleapis.com/x",
            "ftp://fcm.googleapis.com/x",
            "https://user@fcm.googleapis.com/x",
            "https://fcm.googleapis.com:/x",
            "https:///x",
        ] {
            assert!(
                matches!(
                    allowed(endpoint, &defaults),
                    Err(PushError::BadSubscription(_))
                ),
                "{endpoint:?}"
            );
        }
        let long = format!("https://fcm.googleapis.com/{}", "a".repeat(ENDPOINT_MAX));
        assert!(matches!(
            allowed(&long, &defaults),
            Err(PushError::BadSubscription(_))
        ));

        // Plain http: a loopback literal, listed with its exact port.
        let local = [
            "127.0.0.1:8080",
            "[::1]:9090",
            "localhost:7070",
            "10.0.0.1:80",
        ];
        assert!(allowed("http://127.0.0.1:8080/push/1", &local).is_ok());
        assert!(allowed("http://[::1]:9090/push/1", &local).is_ok());
        for endpoint in [
            "http://127.0.0.1:8081/push/1",
            "http://127.0.0.1/push/1",
            "http://127.0.0.2:8080/push/1",
            "http://localhost:7070/push/1",
            "http://10.0.0.1/push/1",
            "http://[::1]:8080/push/1",
        ] {
            assert!(
                matches!(allowed(endpoint, &local), Err(PushError::NotAllowed(_))),
                "{endpoint}"
            );
        }
        // An https relay on its own port, listed with it.
        assert!(allowed("https://relay.example:8443/p", &["relay.example:8443"]).is_ok());
        assert!(allowed("https://relay.example/p", &["relay.example:8443"]).is_err());
        // An empty list allows nothing.
        assert!(allowed("https://fcm.googleapis.com/x", &[]).is_err());
    }

    #[test]
    fn push_subscription_keys_are_checked() {
        let (_, _, good) = browser("https://fcm.googleapis.com/x");
        let list = default_push_hosts();
        assert!(good.check(&list).is_ok());
        let mut padded = good.clone();
        padded.keys.auth.push_str("==");
        assert!(padded.check(&list).is_ok());

        let mut short_auth = good.clone();
        short_auth.keys.auth = Base64UrlUnpadded::encode_string(&[1u8; 15]);
        let mut not_b64 = good.clone();
        not_b64.keys.p256dh = "not base64!".into();
        let mut off_curve = good.clone();
        let mut point = [4u8; 65];
        point[64] = 1;
        off_curve.keys.p256dh = Base64UrlUnpadded::encode_string(&point);
        let mut compressed = good.clone();
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        compressed.keys.p256dh =
            Base64UrlUnpadded::encode_string(secret.public_key().to_encoded_point(true).as_bytes());
        for (name, sub) in [
            ("short auth", short_auth),
            ("not base64", not_b64),
            ("off the curve", off_curve),
            ("compressed", compressed),
        ] {
            let error = sub.check(&list).unwrap_err();
            assert!(matches!(error, PushError::BadSubscription(_)), "{name}");
            // The message names the field, not its value.
            assert!(!error.to_string().contains(&sub.keys.p256dh), "{name}");
        }
    }

    #[test]
    fn push_vapid_key_and_token() {
        let key = VapidKey::from_secret(&[0x11; 32]).unwrap();
        let public = Base64UrlUnpadded::decode_vec(&key.public_key()).unwrap();
        assert_eq!(public.len(), 65);
        assert_eq!(public[0], 4);
        // The Debug form shows the public key only.
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.public_key()));
        assert!(!shown.contains("17, 17") && !shown.contains("111111"));

        assert!(matches!(
            VapidKey::from_secret(&[0; 32]),
            Err(PushError::BadKey)
        ));
        assert!(matches!(
            VapidKey::from_secret(&[0xff; 32]),
            Err(PushError::BadKey)
        ));

        let token = key.token(
            "http://127.0.0.1:8080",
            "mailto:admin@example.org",
            1_900_000_000,
        );
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "http://127.0.0.1:8080");
        assert_eq!(claims["sub"], "mailto:admin@example.org");
        assert_eq!(claims["exp"], 1_900_000_000u64);
        let verifying = VerifyingKey::from_sec1_bytes(&public).unwrap();
        let signature =
            Signature::from_slice(&Base64UrlUnpadded::decode_vec(parts[2]).unwrap()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(verifying.verify(signed.as_bytes(), &signature).is_ok());
        assert!(verifying.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn push_origin_keeps_a_non_default_port() {
        let list = hosts(&["127.0.0.1:8080"]);
        let target = browser("http://127.0.0.1:8080/push/0")
            .2
            .target(&list)
            .unwrap();
        assert_eq!(target.origin(), "http://127.0.0.1:8080");
        assert_eq!(target.authority(), "127.0.0.1:8080");
        assert_eq!(target.path_and_query, "/push/0");
        let target = browser("https://fcm.googleapis.com/fcm/send/x?y=1")
            .2
            .target(&default_push_hosts())
            .unwrap();
        assert_eq!(target.origin(), "https://fcm.googleapis.com");
        assert_eq!(target.path_and_query, "/fcm/send/x?y=1");
    }

    #[test]
    fn push_encryption_round_trip() {
        let (secret, auth, sub) = browser("https://fcm.googleapis.com/x");
        let target = sub.target(&default_push_hosts()).unwrap();
        let payload = br#"{"id":"r1","title":"Sign-in request"}"#.to_vec();
        let body = web_push_native::encrypt(
            payload.clone(),
            &target.browser_key,
            &web_push_native::Auth::clone_from_slice(&target.auth),
        )
        .unwrap();
        let clear = web_push_native::decrypt(
            body.clone(),
            &secret,
            &web_push_native::Auth::clone_from_slice(&auth),
        )
        .unwrap();
        assert_eq!(clear, payload);
        // Another auth secret does not decrypt it.
        assert!(web_push_native::decrypt(
            body,
            &secret,
            &web_push_native::Auth::clone_from_slice(&[0u8; 16]),
        )
        .is_err());
    }

    #[test]
    fn push_refuses_before_connecting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let key = VapidKey::from_secret(&[0x11; 32]).unwrap();
        let (_, _, sub) = browser("https://push.invalid/x");
        let result = runtime.block_on(send(
            &key,
            "mailto:a@example.org",
            &sub,
            b"hi",
            Duration::from_secs(60),
            Duration::from_secs(5),
            &default_push_hosts(),
        ));
        assert!(
            matches!(result, Err(PushError::NotAllowed(_))),
            "{result:?}"
        );
        let (_, _, sub) = browser("https://fcm.googleapis.com/x");
        let result = runtime.block_on(send(
            &key,
            "mailto:a@example.org",
            &sub,
            &[0u8; PAYLOAD_MAX + 1],
            Duration::from_secs(60),
            Duration::from_secs(5),
            &default_push_hosts(),
        ));
        assert!(
            matches!(result, Err(PushError::PayloadTooLarge(_))),
            "{result:?}"
        );
    }
}
