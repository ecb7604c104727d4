//! [`SoftKey`]: a software WebAuthn authenticator for the tests of "approve
//! on your phone" that need no browser. It holds a P-256 key pair (ES256)
//! and answers the `publicKey` options that otpd's pairing and approval
//! calls give (webauthn-rs' `CreationChallengeResponse` and
//! `RequestChallengeResponse`) with the JSON a browser's
//! `navigator.credentials.create` / `.get` gives the phone app: a
//! registration with a "none" attestation, and assertions signed over
//! `authenticatorData ‖ SHA-256(clientDataJSON)`.
//!
//! What a real authenticator would refuse to do is settable, so that the
//! tests can show what otpd refuses: the signature counter (a cloned
//! key), the origin written into the client data (a phishing page), and
//! the user-verified flag (a tap without fingerprint, face or PIN).

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// authenticatorData flags (WebAuthn §6.1).
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;

/// A software authenticator holding one credential (made by
/// [`SoftKey::register`]). `Clone` copies the private key: the clone is a
/// cloned authenticator, with a counter of its own.
#[derive(Clone)]
pub struct SoftKey {
    signing: SigningKey,
    /// The credential's ID (random, 32 bytes).
    pub cred_id: Vec<u8>,
    /// The signature counter: raised by one before each registration or
    /// assertion, as an authenticator does.
    pub counter: u32,
    /// The origin written into clientDataJSON (a browser writes the
    /// page's).
    pub origin: String,
    /// Whether the flags claim user verification (UV).
    pub user_verified: bool,
    /// The user handle of the registration (`user.id` of its options),
    /// given back in assertions.
    pub user_handle: Vec<u8>,
}

impl std::fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftKey")
            .field("cred_id", &b64(&self.cred_id))
            .field("counter", &self.counter)
            .field("origin", &self.origin)
            .field("user_verified", &self.user_verified)
            .finish_non_exhaustive()
    }
}

/// base64url without padding, as WebAuthn's JSON and webauthn-rs use.
pub fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// Decodes base64url with or without padding; panics on anything else.
pub fn unb64(text: &str) -> Vec<u8> {
    Base64UrlUnpadded::decode_vec(text.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("not base64url: {text:?}: {e}"))
}

/// `n` random bytes from the kernel.
fn random(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The options' string field at `path` (JSON pointer); panics naming it.
fn field<'a>(options: &'a Value, pointer: &str) -> &'a str {
    options
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the options have no string at {pointer}: {options}"))
}

/// The `publicKey` object of an options answer (`{"publicKey": {...}}`),
/// or the object itself.
fn public_key(options: &Value) -> &Value {
    options.get("publicKey").unwrap_or(options)
}

// CBOR, by hand: the attestation object and the COSE key have one fixed
// shape each (maps of small integer or short text keys, byte strings), and
// the test crate has no CBOR encoder among its dependencies; these few
// lines write exactly the canonical encodings RFC 8949 §3 gives.

/// The head of a CBOR item of major type `major` with argument `n`.
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
}

/// A CBOR integer (major type 0 or 1).
fn cbor_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        cbor_head(out, 0, n as u64);
    } else {
        cbor_head(out, 1, (-1 - n) as u64);
    }
}

fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    cbor_head(out, 2, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    cbor_head(out, 3, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

impl SoftKey {
    /// A new key pair and credential ID; assertions claim `origin`.
    pub fn new(origin: &str) -> SoftKey {
        let signing = loop {
            // A random 32-byte string is a valid scalar but for a
            // negligible chance; draw again then.
            if let Ok(key) = SigningKey::from_slice(&random(32)) {
                break key;
            }
        };
        SoftKey {
            signing,
            cred_id: random(32),
            counter: 0,
            origin: origin.to_owned(),
            user_verified: true,
            user_handle: Vec::new(),
        }
    }

    /// The COSE_Key of the public key: {1:2 (EC2), 3:-7 (ES256), -1:1
    /// (P-256), -2:x, -3:y}.
    fn cose_key(&self) -> Vec<u8> {
        let point = self.signing.verifying_key().to_encoded_point(false);
        let (x, y) = (
            point.x().expect("an uncompressed point"),
            point.y().expect("an uncompressed point"),
        );
        let mut out = Vec::new();
        cbor_head(&mut out, 5, 5);
        for (key, value) in [(1, 2), (3, -7), (-1, 1)] {
            cbor_int(&mut out, key);
            cbor_int(&mut out, value);
        }
        cbor_int(&mut out, -2);
        cbor_bytes(&mut out, x);
        cbor_int(&mut out, -3);
        cbor_bytes(&mut out, y);
        out
    }

    fn flags(&self, extra: u8) -> u8 {
        FLAG_UP | extra | if self.user_verified { FLAG_UV } else { 0 }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        // Re-encoded as a browser writes it (base64url, no padding).
        let challenge = b64(&unb64(challenge));
        json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    /// What `navigator.credentials.create` gives for `options` (pair/begin's
    /// answer, or its `publicKey`): the credential JSON pair/finish takes.
    /// The user handle is kept for the assertions.
    pub fn register(&mut self, options: &Value) -> Value {
        let options = public_key(options);
        let rp_id = field(options, "/rp/id").to_owned();
        let challenge = field(options, "/challenge").to_owned();
        self.user_handle = unb64(field(options, "/user/id"));
        self.counter += 1;
        let mut auth_data = sha256(rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags(FLAG_AT));
        auth_data.extend(self.counter.to_be_bytes());
        auth_data.extend([0u8; 16]); // AAGUID: none
        auth_data.extend((self.cred_id.len() as u16).to_be_bytes());
        auth_data.extend(&self.cred_id);
        auth_data.extend(self.cose_key());
        let mut attestation = Vec::new();
        cbor_head(&mut attestation, 5, 3);
        cbor_text(&mut attestation, "fmt");
        cbor_text(&mut attestation, "none");
        cbor_text(&mut attestation, "attStmt");
        cbor_head(&mut attestation, 5, 0);
        cbor_text(&mut attestation, "authData");
        cbor_bytes(&mut attestation, &auth_data);
        let client_data = self.client_data("webauthn.create", &challenge);
        json!({
            "id": b64(&self.cred_id),
            "rawId": b64(&self.cred_id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
            },
            "extensions": {},
        })
    }

    /// What `navigator.credentials.get` gives for `options` (approve/begin's
    /// answer, or its `publicKey`): the credential JSON approve/finish
    /// takes. The counter is raised by one first.
    pub fn assert(&mut self, options: &Value) -> Value {
        let options = public_key(options);
        let rp_id = field(options, "/rpId").to_owned();
        let challenge = field(options, "/challenge").to_owned();
        self.counter += 1;
        let mut auth_data = sha256(rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags(0));
        auth_data.extend(self.counter.to_be_bytes());
        let client_data = self.client_data("webauthn.get", &challenge);
        let mut signed = auth_data.clone();
        signed.extend(sha256(&client_data));
        let signature: Signature = self.signing.sign(&signed);
        json!({
            "id": b64(&self.cred_id),
            "rawId": b64(&self.cred_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;

    #[test]
    fn cbor_heads_and_integers_are_canonical() {
        let mut out = Vec::new();
        cbor_int(&mut out, -7);
        cbor_int(&mut out, 1);
        cbor_int(&mut out, 24);
        cbor_int(&mut out, -1);
        cbor_head(&mut out, 2, 300);
        assert_eq!(out, vec![0x26, 0x01, 0x18, 24, 0x20, 0x59, 0x01, 0x2c]);
    }

    #[test]
    fn an_assertion_verifies_under_the_key_and_raises_the_counter() {
        let mut key = SoftKey::new("http://localhost");
        let options =
            json!({"publicKey": {"challenge": b64(b"0123456789abcdef"), "rpId": "localhost"}});
        let first = key.assert(&options);
        let second = key.assert(&options);
        let data = |c: &Value, f: &str| unb64(c["response"][f].as_str().unwrap());
        let auth = data(&second, "authenticatorData");
        assert_eq!(&auth[..32], &sha256(b"localhost"));
        assert_eq!(auth[32], FLAG_UP | FLAG_UV);
        assert_eq!(u32::from_be_bytes(auth[33..37].try_into().unwrap()), 2);
        assert_ne!(data(&first, "signature"), data(&second, "signature"));
        let mut signed = auth.clone();
        signed.extend(sha256(&data(&second, "clientDataJSON")));
        let signature = Signature::from_der(&data(&second, "signature")).unwrap();
        assert!(key
            .signing
            .verifying_key()
            .verify(&signed, &signature)
            .is_ok());
        let client: Value = serde_json::from_slice(&data(&second, "clientDataJSON")).unwrap();
        assert_eq!(client["type"], "webauthn.get");
        assert_eq!(client["origin"], "http://localhost");
    }
}
