//! otpd's Web Push sender (`otpd::server::push`) against the push service
//! stand-in (`otpd_tests::push_service`), which checks the VAPID token and
//! decrypts the message with code of its own.

use otpd::server::push::{self, PushError, Subscription, SubscriptionKeys, VapidKey};
use otpd_tests::push_service::PushService;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const CONTACT: &str = "mailto:admin@example.org";
const PAYLOAD: &[u8] = br#"{"id":"r-1","title":"Sign-in request","body":"alice on bastion (sshd, from 192.0.2.7)","lang":"en"}"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn key(byte: u8) -> VapidKey {
    VapidKey::from_secret(&[byte; 32]).expect("a VAPID key")
}

fn subscription(service: &PushService) -> Subscription {
    let (endpoint, p256dh, auth) = service.subscription();
    Subscription {
        endpoint,
        keys: SubscriptionKeys { p256dh, auth },
    }
}

/// `push::send` with a TTL of 60 s and a timeout of 5 s.
fn send(
    key: &VapidKey,
    sub: &Subscription,
    payload: &[u8],
    allowed: &[String],
) -> Result<(), PushError> {
    runtime().block_on(push::send(
        key,
        CONTACT,
        sub,
        payload,
        Duration::from_secs(60),
        Duration::from_secs(5),
        allowed,
    ))
}

#[test]
fn the_payload_arrives_decrypted_for_its_subscription() {
    let key = key(0x21);
    let service = PushService::start(Some(key.public_key()), Some(CONTACT.to_string()));
    let allowed = vec![service.host_entry()];
    let first = subscription(&service);
    let second = subscription(&service);

    send(&key, &second, PAYLOAD, &allowed).expect("the push to the second subscription");
    send(&key, &first, b"x", &allowed).expect("the push to the first subscription");

    let messages = service.wait_for(2, Duration::from_secs(5));
    assert_eq!(
        service.rejections(),
        vec![],
        "the stand-in refused a message"
    );
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0].subscription, 1);
    assert_eq!(messages[0].payload, PAYLOAD);
    assert_eq!(messages[0].ttl, 60);
    assert_eq!(messages[0].vapid_key, key.public_key());
    assert_eq!(messages[0].urgency.as_deref(), Some("high"));
    assert_eq!(messages[1].subscription, 0);
    assert_eq!(messages[1].payload, b"x");
}

#[test]
fn a_token_under_another_key_or_contact_is_refused() {
    let paired = key(0x21);
    let other = key(0x42);
    let service = PushService::start(Some(paired.public_key()), Some(CONTACT.to_string()));
    let allowed = vec![service.host_entry()];
    let sub = subscription(&service);

    let result = send(&other, &sub, PAYLOAD, &allowed);
    assert!(
        matches!(result, Err(PushError::Rejected { status: 403 })),
        "{result:?}"
    );
    let result = runtime().block_on(push::send(
        &paired,
        "mailto:someone-else@example.org",
        &sub,
        PAYLOAD,
        Duration::from_secs(60),
        Duration::from_secs(5),
        &allowed,
    ));
    assert!(
        matches!(result, Err(PushError::Rejected { status: 401 })),
        "{result:?}"
    );
    assert_eq!(service.messages(), vec![]);
    let statuses: Vec<u16> = service.rejections().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![403, 401], "{:?}", service.rejections());
}

/// The stand-in's own check is not vacuous: a token that claims the paired
/// key but is signed by another is refused for its signature.
#[test]
fn the_stand_in_refuses_a_forged_signature() {
    use base64ct::{Base64UrlUnpadded, Encoding};
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};

    let paired = key(0x21);
    let service = PushService::start(Some(paired.public_key()), None);
    let (endpoint, _, _) = service.subscription();
    let forger = SigningKey::from_bytes(&[0x42u8; 32].into()).expect("a signing key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock")
        .as_secs();
    let origin = format!("http://{}", service.host_entry());
    let header = Base64UrlUnpadded::encode_string(br#"{"typ":"JWT","alg":"ES256"}"#);
    let claims = Base64UrlUnpadded::encode_string(
        format!(
            r#"{{"aud":"{origin}","exp":{},"sub":"{CONTACT}"}}"#,
            now + 3600
        )
        .as_bytes(),
    );
    let signature: Signature = forger.sign(format!("{header}.{claims}").as_bytes());
    let token = format!(
        "{header}.{claims}.{}",
        Base64UrlUnpadded::encode_string(&signature.to_bytes())
    );
    let path = endpoint.strip_prefix(&origin).expect("the endpoint's path");
    let body = [0u8; 120];
    let mut stream = TcpStream::connect(service.host_entry()).expect("connect to the stand-in");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nTTL: 60\r\nContent-Encoding: aes128gcm\r\n\
         Authorization: vapid t={token}, k={}\r\nContent-Length: {}\r\n\r\n",
        service.host_entry(),
        paired.public_key(),
        body.len()
    )
    .and_then(|()| stream.write_all(&body))
    .expect("write the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    let rejections = service.rejections();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert!(rejections[0].reason.contains("signature"), "{rejections:?}");
}

#[test]
fn a_gone_subscription_gives_gone() {
    let key = key(0x21);
    let service = PushService::start(Some(key.public_key()), None);
    let allowed = vec![service.host_entry()];
    let sub = subscription(&service);
    service.mark_gone(0);
    let result = send(&key, &sub, PAYLOAD, &allowed);
    assert!(matches!(result, Err(PushError::Gone)), "{result:?}");
    assert_eq!(service.messages(), vec![]);
}

#[test]
fn an_endpoint_outside_the_list_is_refused_without_a_connection() {
    let key = key(0x21);
    let service = PushService::start(None, None);
    let sub = subscription(&service);
    let port = service
        .host_entry()
        .rsplit_once(':')
        .map(|(_, port)| port.to_string())
        .expect("the port");

    // The default list (push services only), a list naming another port,
    // and the same port under a name (not a loopback literal).
    let by_name = Subscription {
        endpoint: sub.endpoint.replace("127.0.0.1", "localhost"),
        ..sub.clone()
    };
    for (endpoint, allowed) in [
        (&sub, push::default_push_hosts()),
        (
            &sub,
            vec![format!("127.0.0.1:{}", port.parse::<u16>().unwrap() ^ 1)],
        ),
        (&sub, vec!["127.0.0.1".to_string()]),
        (&by_name, vec![format!("localhost:{port}")]),
    ] {
        let result = send(&key, endpoint, PAYLOAD, &allowed);
        assert!(
            matches!(result, Err(PushError::NotAllowed(_))),
            "{} with {allowed:?}: {result:?}",
            endpoint.endpoint
        );
        assert!(
            endpoint.check(&allowed).is_err(),
            "check() agrees with send()"
        );
    }
    assert_eq!(service.connections(), 0, "the stand-in saw a connection");
    assert!(sub.check(&[service.host_entry()]).is_ok());
}

#[test]
fn plain_http_to_a_host_that_is_not_loopback_is_refused() {
    let key = key(0x21);
    let service = PushService::start(None, None);
    let sub = subscription(&service);
    // 192.0.2.1 (TEST-NET-1) listed with its port: still not loopback. A
    // connection attempt there would hang until the timeout.
    let remote = Subscription {
        endpoint: "http://192.0.2.1:8080/push/0".to_string(),
        ..sub.clone()
    };
    let started = Instant::now();
    let result = send(&key, &remote, PAYLOAD, &["192.0.2.1:8080".to_string()]);
    assert!(
        matches!(result, Err(PushError::NotAllowed(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it tried to connect"
    );
    // https to the same host is not listed either (the entry names a port
    // for plain http).
    let https = Subscription {
        endpoint: "https://192.0.2.1/push/0".to_string(),
        ..sub
    };
    let result = send(&key, &https, PAYLOAD, &["192.0.2.1:8080".to_string()]);
    assert!(
        matches!(result, Err(PushError::NotAllowed(_))),
        "{result:?}"
    );
}

#[test]
fn a_push_service_that_never_answers_times_out() {
    let key = key(0x21);
    let service = PushService::start(None, None);
    let sub = subscription(&service);
    // A listener that never accepts: the kernel completes the handshake
    // and takes the request, nothing answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let entry = silent.local_addr().expect("its address").to_string();
    let sub = Subscription {
        endpoint: format!("http://{entry}/push/0"),
        ..sub
    };
    let started = Instant::now();
    let result = runtime().block_on(push::send(
        &key,
        CONTACT,
        &sub,
        PAYLOAD,
        Duration::from_secs(60),
        Duration::from_millis(1500),
        &[entry],
    ));
    let took = started.elapsed();
    assert!(matches!(result, Err(PushError::TimedOut)), "{result:?}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    drop(silent);
}

/// An https endpoint is spoken to over TLS only: a peer that answers in
/// plain HTTP (as if the sender had fallen back) is unreachable, not a
/// success.
#[test]
fn an_https_endpoint_is_never_spoken_to_in_clear() {
    let key = key(0x21);
    let service = PushService::start(None, None);
    let sub = subscription(&service);
    let plain = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let entry = plain.local_addr().expect("its address").to_string();
    let answering = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = plain.accept() {
            let _ = stream.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let sub = Subscription {
        endpoint: format!("https://{entry}/push/0"),
        ..sub
    };
    let result = send(&key, &sub, PAYLOAD, std::slice::from_ref(&entry));
    // Unblocks the accept when the sender did not connect.
    let _ = TcpStream::connect(&entry);
    answering.join().expect("the plain answerer");
    assert!(
        matches!(&result, Err(PushError::Unreachable(why)) if why.contains("TLS")),
        "{result:?}"
    );
}
