//! PSKC, the Portable Symmetric Key Container (RFC 6030): the XML file in
//! which token vendors ship the keys of a batch of hardware tokens, in
//! clear or encrypted.
//!
//! ```text
//! KeyContainer Version="1.0"
//!   EncryptionKey        ds:KeyName (a pre-shared key) or xenc11:DerivedKey (PBKDF2)
//!   MACMethod            the MAC of the encrypted values, with its MACKey
//!   KeyPackage           one per token
//!     DeviceInfo/SerialNo
//!     Key Id=… Algorithm=…hotp|…totp
//!       AlgorithmParameters/ResponseFormat Length="6" Encoding="DECIMAL", Suite
//!       Data/Secret      PlainValue (base64) or EncryptedValue + ValueMAC
//!       Data/Counter, Time, TimeInterval, TimeDrift
//! ```
//!
//! Pure: text and the key or password in, keys out. Every encrypted value
//! of the file is MAC-checked (in constant time) and decrypted before
//! [`parse`] returns, so a file with one wrong MAC (a wrong key, a wrong
//! password or an altered file) is refused as a whole and nothing of it is
//! imported. What concerns one key (an algorithm otpd does not run, a T0
//! other than 0, hexadecimal codes …) is that key's problem, and the
//! others are still read.
//!
//! Never a secret, a key or a password in an error or a note: they name
//! elements, algorithms, serial numbers and key Ids only.
#![forbid(unsafe_code)]

use super::ImportedToken;
use otpd_proto::{Algorithm, TokenKind};
use roxmltree::Node;
use zeroize::Zeroizing;

/// The longest file read.
pub const MAX_FILE_LEN: usize = 16 * 1024 * 1024;

/// PBKDF2 iterations accepted: vendors use thousands; a file asking for
/// billions would only make the import hang.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// XML nodes parsed at most (a 16 MiB file of tiny elements would
/// otherwise make millions of them).
const MAX_NODES: u32 = 2_000_000;

const PSKC_NS: &str = "urn:ietf:params:xml:ns:keyprov:pskc";

/// What opens an encrypted file.
pub enum Unlock<'a> {
    /// Nothing given: only a file in clear can be read.
    Nothing,
    /// `--key-file`: the pre-shared key's bytes.
    PreSharedKey(&'a [u8]),
    /// `--password`: the password's bytes (PBKDF2).
    Password(&'a [u8]),
}

/// Why a whole file is refused; nothing of it is imported.
#[derive(Debug, thiserror::Error)]
pub enum PskcError {
    /// Not well-formed XML, or not a PSKC 1.0 key container.
    #[error("{0}")]
    Unreadable(String),
    /// The file is encrypted and the right kind of key was not given.
    #[error("{0}")]
    NeedsKey(String),
    /// The file uses something otpd does not read (encryption to a
    /// certificate, an unknown cipher, MAC or key derivation).
    #[error("{0}")]
    Unsupported(String),
    /// A MAC does not match or a value does not decrypt: the key or
    /// password is wrong, or the file was altered.
    #[error("{0}")]
    BadMac(String),
}

/// A file's keys, in file order.
#[derive(Debug)]
pub struct PskcFile {
    /// Every key of the file.
    pub keys: Vec<PskcKey>,
    /// What otpd does not honour about the file as a whole.
    pub notes: Vec<String>,
}

/// One key (one token) of the file.
#[derive(Debug)]
pub struct PskcKey {
    /// The key's `Id` attribute.
    pub id: String,
    /// The token's serial number (`DeviceInfo/SerialNo`), if the file has one.
    pub serial: Option<String>,
    /// The token, or why this key cannot be imported.
    pub token: Result<PskcToken, String>,
}

impl PskcKey {
    /// How messages name the key: by serial number and Id.
    pub fn label(&self) -> String {
        match &self.serial {
            Some(serial) => format!("serial {} (key Id {})", shown(serial), shown(&self.id)),
            None => format!("key Id {}", shown(&self.id)),
        }
    }
}

/// A key otpd can import.
#[derive(Debug)]
pub struct PskcToken {
    /// The token, as the other imports give it.
    pub token: ImportedToken,
    /// What otpd does not honour as the file says, one sentence each.
    pub notes: Vec<String>,
}

/// A name from the file as messages show it: quoted, escaped, at most 64
/// characters (a serial number or an Id is no secret, but it is text from
/// a file that reaches the terminal).
pub fn shown(text: &str) -> String {
    let mut cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Reads a whole PSKC file, checking the MAC of every encrypted value
/// before anything is returned.
pub fn parse(xml: &str, unlock: &Unlock<'_>) -> Result<PskcFile, PskcError> {
    if xml.len() > MAX_FILE_LEN {
        return Err(PskcError::Unreadable(format!(
            "the file is longer than {MAX_FILE_LEN} bytes"
        )));
    }
    // No DTD: no entity can be declared, so none is expanded or fetched.
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(xml, options).map_err(|e| {
        PskcError::Unreadable(format!("not well-formed XML (or it has a DTD): {e}"))
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "KeyContainer" || root.tag_name().namespace() != Some(PSKC_NS) {
        return Err(PskcError::Unreadable(format!(
            "not a PSKC file: its root element is not a KeyContainer of namespace {PSKC_NS}"
        )));
    }
    match root.attribute("Version") {
        Some("1.0") => {}
        Some(other) => {
            return Err(PskcError::Unreadable(format!(
                "PSKC version {}: otpd reads version 1.0 (RFC 6030)",
                shown(other)
            )))
        }
        None => {
            return Err(PskcError::Unreadable(
                "the KeyContainer has no Version: otpd reads version 1.0 (RFC 6030)".into(),
            ))
        }
    }
    let mut notes = Vec::new();
    if child(root, "Signature").is_some() {
        notes.push(
            "the file's XML signature is not checked (the MACs of its encrypted values are)"
                .to_owned(),
        );
    }
    let crypto = Crypto::of_container(root, unlock)?;
    let mut keys = Vec::new();
    // Each key's secret, to find two keys of the same secret.
    let mut secrets: Vec<(Zeroizing<Vec<u8>>, usize)> = Vec::new();
    for package in elements(root, "KeyPackage") {
        let serial = child(package, "DeviceInfo")
            .and_then(|info| child(info, "SerialNo"))
            .map(|s| text_of(s).to_owned());
        for key in elements(package, "Key") {
            let id = key.attribute("Id").unwrap_or("").to_owned();
            let data = DataValues::of_key(key, &crypto)?;
            if let Ok(Some(secret)) = data.secret() {
                secrets.push((secret, keys.len()));
            }
            keys.push(PskcKey {
                id,
                serial: serial.clone(),
                token: read_token(key, data),
            });
        }
    }
    if keys.is_empty() {
        return Err(PskcError::Unreadable("the file holds no key".into()));
    }
    // The MACs cover the values, not the key they are under: one key's
    // encrypted secret and MAC copied under a second serial pass them.
    // Two tokens never share a secret, so such a file is refused. Sorted,
    // not compared pair by pair: a batch holds thousands of keys.
    secrets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = secrets.windows(2).find(|p| p[0].0 == p[1].0) {
        let (first, second) = if pair[0].1 < pair[1].1 {
            (pair[0].1, pair[1].1)
        } else {
            (pair[1].1, pair[0].1)
        };
        return Err(PskcError::BadMac(format!(
            "{} and {} have the same secret: the file was altered (a value copied from one key to another passes its MAC), and otpd refuses it",
            keys[first].label(),
            keys[second].label()
        )));
    }
    Ok(PskcFile { keys, notes })
}

/// The child elements of `node` with local name `name` (the namespace is
/// not compared: vendors put PSKC's elements in it or leave them
/// unqualified, as RFC 6030's own PBKDF2 example does).
fn elements<'a, 'i: 'a>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn child<'a, 'i: 'a>(node: Node<'a, 'i>, name: &'a str) -> Option<Node<'a, 'i>> {
    elements(node, name).next()
}

fn text_of<'a>(node: Node<'a, '_>) -> &'a str {
    node.text().unwrap_or("").trim()
}

/// Base64 as XML carries it: whitespace anywhere is ignored.
fn base64_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64ct::Encoding;
    let compact: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    base64ct::Base64::decode_vec(&compact)
        .ok()
        .map(Zeroizing::new)
}

/// The block ciphers of XML Encryption that PSKC files use.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cipher {
    AesCbc(usize),
    AesKeyWrap(usize),
}

impl Cipher {
    fn from_uri(uri: &str) -> Option<Cipher> {
        let name = uri.strip_prefix("http://www.w3.org/2001/04/xmlenc#")?;
        Some(match name {
            "aes128-cbc" => Cipher::AesCbc(16),
            "aes192-cbc" => Cipher::AesCbc(24),
            "aes256-cbc" => Cipher::AesCbc(32),
            "kw-aes128" => Cipher::AesKeyWrap(16),
            "kw-aes192" => Cipher::AesKeyWrap(24),
            "kw-aes256" => Cipher::AesKeyWrap(32),
            _ => return None,
        })
    }

    fn key_len(self) -> usize {
        match self {
            Cipher::AesCbc(n) | Cipher::AesKeyWrap(n) => n,
        }
    }

    fn name(self) -> String {
        match self {
            Cipher::AesCbc(n) => format!("aes{}-cbc", n * 8),
            Cipher::AesKeyWrap(n) => format!("kw-aes{}", n * 8),
        }
    }

    /// Decrypts `data` (for CBC, the IV followed by the ciphertext, XML
    /// Encryption's padding: the last byte counts the padding bytes).
    /// `None`: it does not decrypt.
    fn decrypt(self, key: &[u8], data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        match self {
            Cipher::AesCbc(16) => cbc_decrypt::<aes::Aes128>(key, data),
            Cipher::AesCbc(24) => cbc_decrypt::<aes::Aes192>(key, data),
            Cipher::AesCbc(32) => cbc_decrypt::<aes::Aes256>(key, data),
            Cipher::AesKeyWrap(n) => {
                // RFC 3394 wraps two 64-bit blocks or more, after its
                // 64-bit check block: 24 bytes or more, a multiple of 8.
                // aes_kw unwraps 8 bytes (the check block alone) to an
                // empty key under any key, which would let a file forge an
                // empty MAC key.
                if data.len() < 24 || !data.len().is_multiple_of(8) {
                    return None;
                }
                let mut out = Zeroizing::new(vec![0u8; data.len()]);
                let len = match n {
                    16 => aes_kw::KwAes128::new_from_slice(key)
                        .ok()?
                        .unwrap_key(data, &mut out)
                        .ok()?
                        .len(),
                    24 => aes_kw::KwAes192::new_from_slice(key)
                        .ok()?
                        .unwrap_key(data, &mut out)
                        .ok()?
                        .len(),
                    32 => aes_kw::KwAes256::new_from_slice(key)
                        .ok()?
                        .unwrap_key(data, &mut out)
                        .ok()?
                        .len(),
                    _ => return None,
                };
                out.truncate(len);
                Some(out)
            }
            Cipher::AesCbc(_) => None,
        }
    }
}

use aes_kw::cipher::KeyInit as _;

fn cbc_decrypt<C>(key: &[u8], data: &[u8]) -> Option<Zeroizing<Vec<u8>>>
where
    C: aes::cipher::BlockCipherDecrypt + aes::cipher::KeyInit,
    cbc::Decryptor<C>: aes::cipher::KeyIvInit + aes::cipher::BlockModeDecrypt,
{
    use aes::cipher::{block_padding::NoPadding, BlockModeDecrypt, KeyIvInit};
    const BLOCK: usize = 16;
    if data.len() < 2 * BLOCK || !data.len().is_multiple_of(BLOCK) {
        return None;
    }
    let (iv, ciphertext) = data.split_at(BLOCK);
    let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    let len = decryptor
        .decrypt_padded::<NoPadding>(&mut buffer)
        .ok()?
        .len();
    buffer.truncate(len);
    // XML Encryption 1.0 section 5.2: arbitrary padding bytes, the last
    // one their count (1 to 16); not PKCS#7's, whose bytes all hold it.
    let padding = usize::from(*buffer.last()?);
    if padding == 0 || padding > BLOCK || padding > buffer.len() {
        return None;
    }
    let plain_len = buffer.len() - padding;
    buffer.truncate(plain_len);
    Some(buffer)
}

/// The HMACs of MACMethod and of PBKDF2's PRF.
#[derive(Clone, Copy, Debug)]
enum Hmac {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hmac {
    fn from_uri(uri: &str) -> Option<Hmac> {
        Some(match uri {
            "http://www.w3.org/2000/09/xmldsig#hmac-sha1" => Hmac::Sha1,
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha224" => Hmac::Sha224,
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256" => Hmac::Sha256,
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384" => Hmac::Sha384,
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512" => Hmac::Sha512,
            _ => return None,
        })
    }

    /// Whether `mac` is the MAC of `data` under `key`; compared in
    /// constant time (`verify_slice`).
    fn verify(self, key: &[u8], data: &[u8], mac: &[u8]) -> bool {
        fn check<M: hmac::Mac + hmac::digest::KeyInit>(
            key: &[u8],
            data: &[u8],
            mac: &[u8],
        ) -> bool {
            match <M as hmac::digest::KeyInit>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.verify_slice(mac).is_ok()
                }
                Err(_) => false,
            }
        }
        match self {
            Hmac::Sha1 => check::<hmac::Hmac<sha1::Sha1>>(key, data, mac),
            Hmac::Sha224 => check::<hmac::Hmac<sha2::Sha224>>(key, data, mac),
            Hmac::Sha256 => check::<hmac::Hmac<sha2::Sha256>>(key, data, mac),
            Hmac::Sha384 => check::<hmac::Hmac<sha2::Sha384>>(key, data, mac),
            Hmac::Sha512 => check::<hmac::Hmac<sha2::Sha512>>(key, data, mac),
        }
    }

    fn pbkdf2(self, password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
        use pbkdf2::pbkdf2_hmac;
        match self {
            Hmac::Sha1 => pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, out),
            Hmac::Sha224 => pbkdf2_hmac::<sha2::Sha224>(password, salt, rounds, out),
            Hmac::Sha256 => pbkdf2_hmac::<sha2::Sha256>(password, salt, rounds, out),
            Hmac::Sha384 => pbkdf2_hmac::<sha2::Sha384>(password, salt, rounds, out),
            Hmac::Sha512 => pbkdf2_hmac::<sha2::Sha512>(password, salt, rounds, out),
        }
    }
}

/// The file's encryption key and MAC key, once derived or decrypted.
struct Crypto {
    /// `None`: the file names no encryption key (its values are in clear).
    key: Option<Zeroizing<Vec<u8>>>,
    /// How the key was given, for messages.
    key_kind: &'static str,
    /// The MAC of the encrypted values and its key.
    mac: Option<(Hmac, Zeroizing<Vec<u8>>)>,
}

/// The shortest MAC key taken from a file's `MACKey`.
const MIN_MAC_KEY_LEN: usize = 16;

const PBKDF2_URI: &str = "http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2";

impl Crypto {
    fn of_container(root: Node<'_, '_>, unlock: &Unlock<'_>) -> Result<Crypto, PskcError> {
        let Some(encryption) = child(root, "EncryptionKey") else {
            // A key or password for a file in clear: the file may have been
            // stripped of its encryption (and so of its MACs) on the way.
            let given = match unlock {
                Unlock::Nothing => None,
                Unlock::PreSharedKey(_) => Some("--key-file"),
                Unlock::Password(_) => Some("--password"),
            };
            if let Some(given) = given {
                return Err(PskcError::NeedsKey(format!(
                    "{given} was given, but the file names no EncryptionKey: its values are in clear and nothing in it is MAC-checked. A vendor's encrypted file may have been stripped to clear on the way; if the file is meant to be in clear, import it without {given}"
                )));
            }
            return Ok(Crypto {
                key: None,
                key_kind: "no key",
                mac: None,
            });
        };
        let (key, key_kind) = if let Some(derived) = child(encryption, "DerivedKey") {
            let name = child(derived, "MasterKeyName")
                .map(|n| format!(" named {}", shown(text_of(n))))
                .unwrap_or_default();
            let password = match unlock {
                Unlock::Password(p) => *p,
                _ => {
                    return Err(PskcError::NeedsKey(format!(
                        "the file is encrypted with a password{name} (PBKDF2): give --password"
                    )))
                }
            };
            (derive_key(derived, password)?, "password")
        } else if child(encryption, "X509Data").is_some()
            || child(encryption, "EncryptedKey").is_some()
        {
            return Err(PskcError::Unsupported(
                "the file is encrypted to a certificate (RFC 6030 section 6.3), which otpd does not read: ask the vendor for a file encrypted with a pre-shared key or a password".into(),
            ));
        } else {
            // ds:KeyName, or nothing: a key agreed out of band (section 6.1).
            let name = child(encryption, "KeyName")
                .map(|n| format!(" named {}", shown(text_of(n))))
                .unwrap_or_default();
            match unlock {
                Unlock::PreSharedKey(k) => (Zeroizing::new(k.to_vec()), "key file"),
                _ => {
                    return Err(PskcError::NeedsKey(format!(
                        "the file is encrypted with a pre-shared key{name}: give it with --key-file"
                    )))
                }
            }
        };
        let mac = match child(root, "MACMethod") {
            None => None,
            Some(method) => {
                let uri = method.attribute("Algorithm").unwrap_or("");
                let hmac = Hmac::from_uri(uri).ok_or_else(|| {
                    PskcError::Unsupported(format!(
                        "MAC algorithm {}: otpd checks hmac-sha1, -sha224, -sha256, -sha384 and -sha512",
                        shown(uri)
                    ))
                })?;
                // Without a MACKey the MAC is keyed with the encryption key.
                let mac_key = match child(method, "MACKey") {
                    None => key.clone(),
                    Some(mac_key) => {
                        let (cipher, data) = encrypted_data(mac_key)?;
                        check_key_len(cipher, &key, key_kind)?;
                        // At least 16 bytes (128 bits, as the weakest
                        // cipher's key): an empty or short MAC key, known
                        // or guessable, would let anyone write the MACs.
                        // Not the HMAC's output length: RFC 6030's own
                        // Figure 6 keys HMAC-SHA1 with 20 bytes, and
                        // vendors key HMAC-SHA256 with 20 as well.
                        cipher
                            .decrypt(&key, &data)
                            .filter(|k| k.len() >= MIN_MAC_KEY_LEN)
                            .ok_or_else(|| {
                                PskcError::BadMac(format!(
                                    "the MAC key does not decrypt to a key of {MIN_MAC_KEY_LEN} bytes or more: the {key_kind} is wrong, or the file was altered"
                                ))
                            })?
                    }
                };
                Some((hmac, mac_key))
            }
        };
        Ok(Crypto {
            key: Some(key),
            key_kind,
            mac,
        })
    }

    /// An `EncryptedValue`'s plaintext, after its `ValueMAC` was checked.
    fn open(
        &self,
        encrypted: Node<'_, '_>,
        value_mac: Option<Node<'_, '_>>,
        what: &str,
    ) -> Result<Zeroizing<Vec<u8>>, PskcError> {
        let Some(key) = &self.key else {
            return Err(PskcError::Unreadable(format!(
                "{what} is encrypted, but the file names no EncryptionKey"
            )));
        };
        let (cipher, data) = encrypted_data(encrypted)?;
        check_key_len(cipher, key, self.key_kind)?;
        match (value_mac, &self.mac) {
            (Some(value_mac), Some((hmac, mac_key))) => {
                let mac = base64_decode(text_of(value_mac)).ok_or_else(|| {
                    PskcError::Unreadable(format!("the ValueMAC of {what} is not base64"))
                })?;
                // Encrypt-then-MAC: the MAC is checked before decrypting.
                if !hmac.verify(mac_key, &data, &mac) {
                    return Err(PskcError::BadMac(format!(
                        "the MAC of {what} does not match: the {} is wrong, or the file was altered",
                        self.key_kind
                    )));
                }
            }
            (Some(_), None) => {
                return Err(PskcError::Unreadable(format!(
                    "{what} has a ValueMAC, but the file has no MACMethod to check it with"
                )))
            }
            // AES key wrap checks its own integrity (RFC 3394 section 2.2.3).
            (None, _) if matches!(cipher, Cipher::AesKeyWrap(_)) => {}
            (None, _) => {
                return Err(PskcError::BadMac(format!(
                    "{what} is encrypted without a ValueMAC: its integrity cannot be checked, and otpd refuses it"
                )))
            }
        }
        cipher.decrypt(key, &data).ok_or_else(|| {
            PskcError::BadMac(format!(
                "{what} does not decrypt: the {} is wrong, or the file was altered",
                self.key_kind
            ))
        })
    }
}

fn check_key_len(cipher: Cipher, key: &[u8], key_kind: &str) -> Result<(), PskcError> {
    if key.len() == cipher.key_len() {
        return Ok(());
    }
    Err(PskcError::NeedsKey(format!(
        "the file is encrypted with {}, which needs a key of {} bytes; the {key_kind} gives {}",
        cipher.name(),
        cipher.key_len(),
        key.len()
    )))
}

/// An element's `xenc:EncryptionMethod` and `xenc:CipherData/CipherValue`.
fn encrypted_data(node: Node<'_, '_>) -> Result<(Cipher, Zeroizing<Vec<u8>>), PskcError> {
    let uri = child(node, "EncryptionMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .ok_or_else(|| {
            PskcError::Unreadable(format!(
                "a {} has no EncryptionMethod",
                node.tag_name().name()
            ))
        })?;
    let cipher = Cipher::from_uri(uri).ok_or_else(|| {
        PskcError::Unsupported(format!(
            "encryption algorithm {}: otpd reads aes128-cbc, aes192-cbc, aes256-cbc and kw-aes128/192/256",
            shown(uri)
        ))
    })?;
    let data = child(node, "CipherData")
        .and_then(|d| child(d, "CipherValue"))
        .and_then(|v| base64_decode(text_of(v)))
        .ok_or_else(|| {
            PskcError::Unreadable(format!(
                "a {} has no base64 CipherData/CipherValue",
                node.tag_name().name()
            ))
        })?;
    Ok((cipher, data))
}

/// The key of `xenc11:DerivedKey` (PBKDF2, RFC 6030 section 6.2).
fn derive_key(derived: Node<'_, '_>, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, PskcError> {
    let method = child(derived, "KeyDerivationMethod");
    let uri = method.and_then(|m| m.attribute("Algorithm")).unwrap_or("");
    if uri != PBKDF2_URI {
        return Err(PskcError::Unsupported(format!(
            "key derivation {}: otpd derives keys with PBKDF2 only",
            shown(uri)
        )));
    }
    let params = method
        .and_then(|m| child(m, "PBKDF2-params"))
        .ok_or_else(|| {
            PskcError::Unreadable("the PBKDF2 key derivation has no PBKDF2-params".into())
        })?;
    let salt = child(params, "Salt")
        .and_then(|s| child(s, "Specified"))
        .and_then(|s| base64_decode(text_of(s)))
        .ok_or_else(|| {
            PskcError::Unreadable("the PBKDF2-params have no base64 Salt/Specified".into())
        })?;
    let iterations: u32 = child(params, "IterationCount")
        .and_then(|i| text_of(i).parse().ok())
        .filter(|i| (1..=MAX_PBKDF2_ITERATIONS).contains(i))
        .ok_or_else(|| {
            PskcError::Unsupported(format!(
                "the PBKDF2 IterationCount is missing or not 1 to {MAX_PBKDF2_ITERATIONS}"
            ))
        })?;
    // KeyLength is optional in PKCS #5; AES-128 (16 bytes) is what RFC
    // 6030's example and the vendors use when it is left out.
    let key_len: usize = match child(params, "KeyLength") {
        None => 16,
        Some(l) => text_of(l)
            .parse()
            .ok()
            .filter(|l| [16, 24, 32].contains(l))
            .ok_or_else(|| {
                PskcError::Unsupported("the PBKDF2 KeyLength is not 16, 24 or 32".into())
            })?,
    };
    // An empty or absent PRF is PKCS #5's default, HMAC-SHA1.
    let prf = match child(params, "PRF").and_then(|p| p.attribute("Algorithm")) {
        None | Some("") => Hmac::Sha1,
        Some(uri) => Hmac::from_uri(uri).ok_or_else(|| {
            PskcError::Unsupported(format!("PBKDF2 PRF {}: otpd knows the HMACs", shown(uri)))
        })?,
    };
    let mut key = Zeroizing::new(vec![0u8; key_len]);
    prf.pbkdf2(password, &salt, iterations, &mut key);
    Ok(key)
}

/// A `Data` child's value, MAC-checked and decrypted when it was encrypted.
enum DataValue {
    /// `PlainValue`'s text.
    Plain(Zeroizing<String>),
    /// `EncryptedValue`'s plaintext bytes.
    Decrypted(Zeroizing<Vec<u8>>),
}

/// Every value of a key's `Data`, by element name.
struct DataValues(Vec<(String, DataValue)>);

impl DataValues {
    /// Reads (and for encrypted values, checks and decrypts) every child of
    /// the key's `Data`, also those otpd does not use: one wrong MAC
    /// anywhere refuses the file.
    fn of_key(key: Node<'_, '_>, crypto: &Crypto) -> Result<DataValues, PskcError> {
        let mut values: Vec<(String, DataValue)> = Vec::new();
        let id = shown(key.attribute("Id").unwrap_or(""));
        // One Data, one element of each name, one value in each: a second
        // one (a Secret in clear before the encrypted one) would otherwise
        // be read in place of the MAC-checked one, or beside it.
        let mut data_elements = elements(key, "Data");
        let Some(data) = data_elements.next() else {
            return Ok(DataValues(values));
        };
        if data_elements.next().is_some() {
            return Err(PskcError::Unreadable(format!(
                "key Id {id} has more than one Data: which one holds its values cannot be told"
            )));
        }
        for element in data.children().filter(|c| c.is_element()) {
            let name = element.tag_name().name().to_owned();
            let what = format!("the {name} of key Id {id}");
            if data
                .children()
                .filter(|c| c.is_element() && c.tag_name().name() == name)
                .nth(1)
                .is_some()
            {
                return Err(PskcError::Unreadable(format!(
                    "key Id {id} has two {name}: which one holds its value cannot be told"
                )));
            }
            let encrypted = elements(element, "EncryptedValue").count();
            let plain = elements(element, "PlainValue").count();
            if encrypted + plain > 1 {
                return Err(PskcError::Unreadable(format!(
                    "{what} has more than one value (PlainValue or EncryptedValue)"
                )));
            }
            let value = if let Some(encrypted) = child(element, "EncryptedValue") {
                DataValue::Decrypted(crypto.open(encrypted, child(element, "ValueMAC"), &what)?)
            } else if let Some(plain) = child(element, "PlainValue") {
                // A value in clear is not MAC-checked: in an encrypted
                // file the Secret must be encrypted. Counter, Time,
                // TimeInterval and TimeDrift may be in clear (vendors and
                // RFC 6030's examples write them so); like the algorithm,
                // digits and serial number, nothing in the file protects
                // them (docs/security.md says so).
                if name == "Secret" && crypto.key.is_some() {
                    return Err(PskcError::BadMac(format!(
                        "{what} is in clear in an encrypted file: a value in clear has no MAC, and otpd refuses the file"
                    )));
                }
                DataValue::Plain(Zeroizing::new(text_of(plain).to_owned()))
            } else {
                continue;
            };
            values.push((name, value));
        }
        Ok(DataValues(values))
    }

    fn get(&self, name: &str) -> Option<&DataValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The key's secret bytes: base64 in clear, raw bytes once decrypted.
    fn secret(&self) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        match self.get("Secret") {
            None => Ok(None),
            Some(DataValue::Decrypted(bytes)) => Ok(Some(bytes.clone())),
            Some(DataValue::Plain(text)) => base64_decode(text)
                .map(Some)
                .ok_or_else(|| "the Secret's PlainValue is not base64".to_owned()),
        }
    }

    /// An integer value: decimal in clear, big-endian bytes (two's
    /// complement) once decrypted.
    fn integer(&self, name: &str) -> Result<Option<i64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(DataValue::Plain(text)) => text
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("the {name} is not an integer")),
            Some(DataValue::Decrypted(bytes)) => {
                if bytes.is_empty() || bytes.len() > 8 {
                    return Err(format!(
                        "the encrypted {name} is not an integer of 1 to 8 bytes"
                    ));
                }
                let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
                let mut be = [fill; 8];
                be[8 - bytes.len()..].copy_from_slice(bytes);
                Ok(Some(i64::from_be_bytes(be)))
            }
        }
    }
}

/// The algorithm URIs of HOTP and TOTP: RFC 6030 section 10's and those of
/// the algorithm profiles draft (draft-hoyer-keyprov-pskc-algorithm-profiles)
/// that vendors write.
fn token_kind(uri: &str) -> Option<TokenKind> {
    let name = uri
        .strip_prefix("urn:ietf:params:xml:ns:keyprov:pskc:")
        .or_else(|| uri.strip_prefix("urn:ietf:params:xml:ns:keyprov:pskc#"))
        .or_else(|| uri.strip_prefix("http://www.ietf.org/keyprov/pskc#"))?;
    match name.to_ascii_lowercase().as_str() {
        "hotp" => Some(TokenKind::Hotp),
        "totp" => Some(TokenKind::Totp),
        _ => None,
    }
}

/// The hash of `AlgorithmParameters/Suite` ("HMAC-SHA256" …).
fn suite_algorithm(suite: &str) -> Option<Algorithm> {
    let name = suite.trim().to_ascii_uppercase().replace('-', "");
    match name.strip_prefix("HMAC").unwrap_or(&name) {
        "SHA1" => Some(Algorithm::Sha1),
        "SHA256" => Some(Algorithm::Sha256),
        "SHA512" => Some(Algorithm::Sha512),
        _ => None,
    }
}

/// otpd's widest window for a token with a known clock drift, in steps.
const MAX_DRIFT_WINDOW: u16 = 10;

/// What one key is to otpd, or why it cannot be imported.
fn read_token(key: Node<'_, '_>, data: DataValues) -> Result<PskcToken, String> {
    let uri = key.attribute("Algorithm").unwrap_or("");
    let kind = token_kind(uri).ok_or_else(|| {
        format!(
            "its algorithm {} is neither HOTP nor TOTP, the only ones otpd checks",
            shown(uri)
        )
    })?;
    let mut notes = Vec::new();
    let parameters = child(key, "AlgorithmParameters");
    let algorithm = match parameters.and_then(|p| child(p, "Suite")) {
        None => Algorithm::Sha1,
        Some(suite) => suite_algorithm(text_of(suite)).ok_or_else(|| {
            format!(
                "its Suite {} is not HMAC-SHA1, HMAC-SHA256 or HMAC-SHA512",
                shown(text_of(suite))
            )
        })?,
    };
    let digits = match parameters.and_then(|p| child(p, "ResponseFormat")) {
        None => {
            notes.push("the file gives no ResponseFormat: 6-digit codes assumed".to_owned());
            6
        }
        Some(format) => {
            let encoding = format.attribute("Encoding").unwrap_or("DECIMAL");
            if encoding != "DECIMAL" {
                return Err(format!(
                    "its codes are {}, not DECIMAL: otpd checks codes of digits",
                    shown(encoding)
                ));
            }
            if matches!(format.attribute("CheckDigits"), Some("true" | "1")) {
                return Err("its codes end with a check digit, which otpd does not check".into());
            }
            let length = format.attribute("Length").unwrap_or("");
            match length.parse::<u8>() {
                Ok(d @ 6..=8) => d,
                _ => {
                    return Err(format!(
                        "its codes have {} digits: otpd checks 6 to 8",
                        shown(length)
                    ))
                }
            }
        }
    };
    let secret = data.secret()?.ok_or_else(|| {
        "the file holds no Secret for it (a key given by reference cannot be imported)".to_owned()
    })?;
    if child(key, "Policy").is_some() {
        notes.push("its Policy (PIN, validity dates, usage limits) is not carried over".to_owned());
    }
    let mut token = ImportedToken {
        kind,
        secret,
        algorithm,
        digits,
        period: 30,
        last_used: None,
        first_counter: 0,
        window: None,
    };
    match kind {
        TokenKind::Hotp => {
            let counter = data.integer("Counter")?.unwrap_or(0);
            token.first_counter =
                u64::try_from(counter).map_err(|_| "its Counter is negative".to_owned())?;
        }
        TokenKind::Totp => {
            if let Some(interval) = data.integer("TimeInterval")? {
                token.period = u64::try_from(interval)
                    .ok()
                    .filter(|p| (1..=300).contains(p))
                    .ok_or_else(|| {
                        format!("its TimeInterval is {interval} s: otpd takes 1 to 300 seconds")
                    })?;
            }
            // RFC 6238's T0, the start of step 0.
            match data.integer("Time")? {
                None | Some(0) => {}
                Some(t0) => {
                    return Err(format!(
                        "its Time (T0) is {t0}: otpd counts time steps from the Unix epoch (T0 = 0) only"
                    ))
                }
            }
            match data.integer("TimeDrift")? {
                None | Some(0) => {}
                Some(drift) => {
                    let steps = u16::try_from(drift.unsigned_abs())
                        .ok()
                        .filter(|s| *s < MAX_DRIFT_WINDOW)
                        .ok_or_else(|| {
                            format!(
                                "its TimeDrift is {drift} steps: more than otpd's window can take (at most ±{}); set the token's clock",
                                MAX_DRIFT_WINDOW - 1
                            )
                        })?;
                    token.window = Some(steps + 1);
                    notes.push(format!(
                        "its TimeDrift of {drift} steps is taken up by a window of ±{} steps (otpd keeps no clock offset per device)",
                        steps + 1
                    ));
                }
            }
        }
    }
    Ok(PskcToken { token, notes })
}

/// One line of the map of `--users MAP.csv`: `serial,user[,device]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MapLine {
    /// The line number, for messages.
    pub line: usize,
    /// The serial number (or, for a key without one, the key's Id).
    pub serial: String,
    /// The user the key becomes a device of.
    pub user: String,
    /// The device's name; `None`: `token-SERIAL`.
    pub device: Option<String>,
}

/// Reads the map: one `serial,user[,device]` per line; blank lines and
/// lines starting with `#` are skipped, and so is a first line
/// `serial,user…` (a header). Fields are trimmed; there is no quoting
/// (serial numbers, user and device names hold no comma). A byte order
/// mark at the start (spreadsheets write one) is skipped; a field with a
/// character that does not print (control, or Unicode's format category
/// Cf: a zero-width space, a bidi override …) is refused, so that a name
/// cannot look like another on the screen.
pub fn parse_map(text: &str) -> Result<Vec<MapLine>, String> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<MapLine> = Vec::new();
    let mut first = true;
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(c) = line.chars().find(|c| {
            (c.is_control() && !c.is_whitespace())
                || c.general_category() == GeneralCategory::Format
        }) {
            return Err(format!(
                "line {n}: it holds the character U+{:04X}, which does not print: retype the line",
                u32::from(c)
            ));
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if std::mem::take(&mut first) && fields[0].eq_ignore_ascii_case("serial") {
            continue;
        }
        if !(2..=3).contains(&fields.len()) || fields[0].is_empty() || fields[1].is_empty() {
            return Err(format!("line {n}: not serial,user or serial,user,device"));
        }
        crate::core::names::validate_user(fields[1]).map_err(|e| format!("line {n}: {e}"))?;
        let device = match fields.get(2) {
            None | Some(&"") => None,
            Some(name) => {
                crate::core::names::validate_device(name).map_err(|e| format!("line {n}: {e}"))?;
                Some((*name).to_owned())
            }
        };
        if let Some(earlier) = lines.iter().find(|l| l.serial == fields[0]) {
            return Err(format!(
                "line {n}: serial {} is on line {} already",
                shown(fields[0]),
                earlier.line
            ));
        }
        lines.push(MapLine {
            line: n,
            serial: fields[0].to_owned(),
            user: fields[1].to_owned(),
            device,
        });
    }
    if lines.is_empty() {
        return Err("it has no serial,user line".into());
    }
    Ok(lines)
}

/// The device name a key gets when the map names none: `token-SERIAL`
/// (or `token-ID`), with what a device name cannot hold made `_`, cut to
/// otpd's longest device name.
pub fn default_device_name(key: &PskcKey) -> String {
    let tag = key.serial.as_deref().unwrap_or(&key.id);
    let mut name: String = format!("token-{tag}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(crate::core::names::MAX_DEVICE_LEN);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIGURE2: &str = include_str!("../../../tests/fixtures/pskc/rfc6030-figure2.pskcxml");
    const FIGURE3: &str = include_str!("../../../tests/fixtures/pskc/rfc6030-figure3.pskcxml");
    const FIGURE6: &str = include_str!("../../../tests/fixtures/pskc/rfc6030-figure6.pskcxml");
    const FIGURE7: &str = include_str!("../../../tests/fixtures/pskc/rfc6030-figure7.pskcxml");
    const BATCH: &str = include_str!("../../../tests/fixtures/pskc/batch-aes256.pskcxml");
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    const FIGURE6_KEY: &str = "12345678901234567890123456789012";
    const BATCH_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn unhex(text: &str) -> Vec<u8> {
        crate::import::hex_decode(text).unwrap().to_vec()
    }

    fn only_token(file: &PskcFile) -> &PskcToken {
        assert_eq!(file.keys.len(), 1);
        file.keys[0].token.as_ref().unwrap()
    }

    #[test]
    fn figure_2_in_clear() {
        let file = parse(FIGURE2, &Unlock::Nothing).unwrap();
        let t = only_token(&file);
        assert_eq!(file.keys[0].id, "12345678");
        assert_eq!(file.keys[0].serial, None);
        assert_eq!(t.token.secret.as_slice(), b"1234");
        assert_eq!(t.token.kind, TokenKind::Hotp);
        assert_eq!(t.token.digits, 6);
        assert!(t.notes[0].contains("no ResponseFormat"));
    }

    #[test]
    fn figure_3_in_clear_with_a_serial_and_eight_digits() {
        let file = parse(FIGURE3, &Unlock::Nothing).unwrap();
        let t = only_token(&file);
        assert_eq!(file.keys[0].serial.as_deref(), Some("987654321"));
        assert_eq!(t.token.secret.as_slice(), RFC_SECRET);
        assert_eq!((t.token.digits, t.token.first_counter), (8, 0));
    }

    #[test]
    fn figure_6_pre_shared_aes_128_cbc_and_hmac_sha1() {
        let key = unhex(FIGURE6_KEY);
        let file = parse(FIGURE6, &Unlock::PreSharedKey(&key)).unwrap();
        let t = only_token(&file);
        assert_eq!(t.token.secret.as_slice(), RFC_SECRET);
        assert_eq!(t.token.digits, 8);
        assert_eq!(
            file.keys[0].label(),
            "serial \"987654321\" (key Id \"12345678\")"
        );
        // Without a key, with a password, with a wrong key: refused.
        assert!(matches!(
            parse(FIGURE6, &Unlock::Nothing),
            Err(PskcError::NeedsKey(m)) if m.contains("--key-file") && m.contains("Pre-shared-key")
        ));
        assert!(matches!(
            parse(FIGURE6, &Unlock::Password(b"qwerty")),
            Err(PskcError::NeedsKey(_))
        ));
        let mut wrong = key.clone();
        wrong[15] ^= 1;
        assert!(matches!(
            parse(FIGURE6, &Unlock::PreSharedKey(&wrong)),
            Err(PskcError::BadMac(_))
        ));
        assert!(matches!(
            parse(FIGURE6, &Unlock::PreSharedKey(&key[..8])),
            Err(PskcError::NeedsKey(m)) if m.contains("16 bytes")
        ));
    }

    #[test]
    fn figure_7_pbkdf2_password() {
        let file = parse(FIGURE7, &Unlock::Password(b"qwerty")).unwrap();
        assert_eq!(only_token(&file).token.secret.as_slice(), RFC_SECRET);
        assert!(matches!(
            parse(FIGURE7, &Unlock::Password(b"qwertz")),
            Err(PskcError::BadMac(_))
        ));
        assert!(matches!(
            parse(FIGURE7, &Unlock::Nothing),
            Err(PskcError::NeedsKey(m)) if m.contains("--password") && m.contains("My Password 1")
        ));
    }

    #[test]
    fn one_altered_mac_or_value_refuses_the_file() {
        let key = unhex(FIGURE6_KEY);
        let altered_mac = FIGURE6.replace(
            "Su+NvtQfmvfJzF6bmQiJqoLRExc=",
            "Tu+NvtQfmvfJzF6bmQiJqoLRExc=",
        );
        assert!(matches!(
            parse(&altered_mac, &Unlock::PreSharedKey(&key)),
            Err(PskcError::BadMac(m)) if m.contains("MAC of the Secret of key Id \"12345678\"")
        ));
        let altered_value = FIGURE6.replace("AAECAwQFBgcICQoLDA0OD+cI", "AAECAwQFBgcICQoLDA0OD+cJ");
        assert!(matches!(
            parse(&altered_value, &Unlock::PreSharedKey(&key)),
            Err(PskcError::BadMac(_))
        ));
        let mac_removed = regex_free_remove(FIGURE6, "<ValueMAC>", "</ValueMAC>");
        assert!(matches!(
            parse(&mac_removed, &Unlock::PreSharedKey(&key)),
            Err(PskcError::BadMac(m)) if m.contains("without a ValueMAC")
        ));
    }

    fn regex_free_remove(text: &str, start: &str, end: &str) -> String {
        let a = text.find(start).unwrap();
        let b = text.find(end).unwrap() + end.len();
        format!("{}{}", &text[..a], &text[b..])
    }

    #[test]
    fn the_batch_file_totp_hotp_and_the_keys_otpd_cannot_run() {
        let key = unhex(BATCH_KEY);
        let file = parse(BATCH, &Unlock::PreSharedKey(&key)).unwrap();
        let by_serial = |s: &str| {
            file.keys
                .iter()
                .find(|k| k.serial.as_deref() == Some(s))
                .unwrap()
        };
        let totp = by_serial("1001").token.as_ref().unwrap();
        assert_eq!(totp.token.kind, TokenKind::Totp);
        assert_eq!(totp.token.algorithm, Algorithm::Sha256);
        assert_eq!((totp.token.digits, totp.token.period), (8, 30));
        assert_eq!(
            totp.token.secret.as_slice(),
            b"12345678901234567890123456789012"
        );
        let hotp = by_serial("1002").token.as_ref().unwrap();
        assert_eq!(hotp.token.kind, TokenKind::Hotp);
        assert_eq!((hotp.token.first_counter, hotp.token.digits), (5, 6));
        let ocra = by_serial("1003").token.as_ref().unwrap_err();
        assert!(ocra.contains("neither HOTP nor TOTP"), "{ocra}");
        let t0 = by_serial("1004").token.as_ref().unwrap_err();
        assert!(t0.contains("Time (T0) is 1000"), "{t0}");
        let drift = by_serial("1006").token.as_ref().unwrap();
        assert_eq!(drift.token.window, Some(3));
        assert_eq!(drift.token.period, 60);
    }

    /// AES key wrap (RFC 3394) with the key 000102…0f, no ValueMAC: the
    /// wrap's own integrity check stands in for it. Written with Python's
    /// `cryptography` (`aes_key_wrap`).
    const KW_AES128: &str = r#"<KeyContainer Version="1.0"
        xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
        xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
        xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
      <EncryptionKey><ds:KeyName>kw</ds:KeyName></EncryptionKey>
      <KeyPackage><Key Id="kw1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
        <Data><Secret><EncryptedValue>
          <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#kw-aes128"/>
          <xenc:CipherData><xenc:CipherValue>eCka1VE8chM7/huVl9wrAJIRb1lcCgLw</xenc:CipherValue></xenc:CipherData>
        </EncryptedValue></Secret></Data>
      </Key></KeyPackage>
    </KeyContainer>"#;

    #[test]
    fn aes_key_wrap_checks_its_own_integrity() {
        let key = unhex("000102030405060708090a0b0c0d0e0f");
        let file = parse(KW_AES128, &Unlock::PreSharedKey(&key)).unwrap();
        assert_eq!(
            only_token(&file).token.secret.as_slice(),
            b"1234567890123456"
        );
        let altered = KW_AES128.replace("eCka1VE8", "eCka1VE9");
        assert!(matches!(
            parse(&altered, &Unlock::PreSharedKey(&key)),
            Err(PskcError::BadMac(m)) if m.contains("does not decrypt")
        ));
        let mut wrong = key.clone();
        wrong[0] ^= 1;
        assert!(matches!(
            parse(KW_AES128, &Unlock::PreSharedKey(&wrong)),
            Err(PskcError::BadMac(_))
        ));
    }

    #[test]
    fn not_pskc_not_xml_and_a_dtd_are_refused() {
        for (text, what) in [
            ("not xml", "not well-formed"),
            ("<KeyContainer Version=\"1.0\"/>", "not a PSKC file"),
            (
                "<KeyContainer xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\" Version=\"2.0\"/>",
                "version \"2.0\"",
            ),
            (
                "<KeyContainer xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\" Version=\"1.0\"/>",
                "no key",
            ),
            (
                "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/shadow\">]><KeyContainer xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\" Version=\"1.0\">&e;</KeyContainer>",
                "DTD",
            ),
        ] {
            let e = parse(text, &Unlock::Nothing).unwrap_err();
            assert!(e.to_string().contains(what), "{text}: {e}");
        }
    }

    #[test]
    fn no_secret_in_debug_output_or_messages() {
        let key = unhex(FIGURE6_KEY);
        let file = parse(FIGURE6, &Unlock::PreSharedKey(&key)).unwrap();
        let debug = format!("{file:?}");
        assert!(
            !debug.contains("49, 50, 51") && !debug.contains("1234567890"),
            "{debug}"
        );
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn maps() {
        let map =
            parse_map("serial,user,device\n# comment\n\n987654321, alice ,fob\n12345678,bob\n")
                .unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[0].user, "alice");
        assert_eq!(map[0].device.as_deref(), Some("fob"));
        assert_eq!((map[1].line, map[1].device.as_deref()), (5, None));
        for (bad, why) in [
            (
                "1,alice\n1,bob\n",
                "line 2: serial \"1\" is on line 1 already",
            ),
            ("1\n", "line 1: not serial,user"),
            ("1,alice,bad name\n", "line 1: the device name"),
            ("# nothing\n", "no serial,user line"),
        ] {
            let e = parse_map(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn default_device_names() {
        let key = |serial: Option<&str>, id: &str| PskcKey {
            id: id.into(),
            serial: serial.map(str::to_owned),
            token: Err(String::new()),
        };
        assert_eq!(
            default_device_name(&key(Some("987654321"), "x")),
            "token-987654321"
        );
        assert_eq!(default_device_name(&key(None, "12 34")), "token-12_34");
        assert_eq!(
            default_device_name(&key(Some(&"9".repeat(60)), "x")).len(),
            crate::core::names::MAX_DEVICE_LEN
        );
    }
    // ---- review 22's findings: each test failed on the code before its fix ----

    /// 20 bytes "AAAA…" in base64: a secret an attacker chose.
    const CHOSEN_B64: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUE=";

    /// `xml` with its (first) `<Secret>…</Secret>` made a PlainValue.
    fn with_plain_secret(xml: &str, open: &str, close: &str) -> String {
        let a = xml.find(open).unwrap();
        let b = xml.find(close).unwrap() + close.len();
        format!(
            "{}{open}<PlainValue>{CHOSEN_B64}</PlainValue>{close}{}",
            &xml[..a],
            &xml[b..]
        )
    }

    #[test]
    fn a_secret_in_clear_in_an_encrypted_file_is_refused() {
        let key = unhex(FIGURE6_KEY);
        let evil = with_plain_secret(FIGURE6, "<Secret>", "</Secret>");
        let e = parse(&evil, &Unlock::PreSharedKey(&key)).unwrap_err();
        assert!(
            e.to_string()
                .contains("the Secret of key Id \"12345678\" is in clear"),
            "{e}"
        );
        let evil = with_plain_secret(FIGURE7, "<pskc:Secret>", "</pskc:Secret>")
            .replace("<PlainValue>", "<pskc:PlainValue>")
            .replace("</PlainValue>", "</pskc:PlainValue>");
        let e = parse(&evil, &Unlock::Password(b"qwerty")).unwrap_err();
        assert!(e.to_string().contains("is in clear"), "{e}");
    }

    #[test]
    fn a_key_or_password_for_a_file_in_clear_is_refused() {
        let key = unhex(FIGURE6_KEY);
        let evil = with_plain_secret(FIGURE6, "<Secret>", "</Secret>");
        let evil = regex_free_remove(&evil, "<EncryptionKey>", "</EncryptionKey>");
        let evil = regex_free_remove(&evil, "<MACMethod", "</MACMethod>");
        assert!(parse(&evil, &Unlock::Nothing).is_ok());
        for unlock in [Unlock::PreSharedKey(&key), Unlock::Password(b"qwerty")] {
            let e = parse(&evil, &unlock).unwrap_err();
            assert!(
                matches!(&e, PskcError::NeedsKey(m) if m.contains("names no EncryptionKey")),
                "{e}"
            );
        }
        assert!(parse(FIGURE3, &Unlock::PreSharedKey(&key)).is_err());
    }

    #[test]
    fn a_secret_in_clear_before_the_encrypted_one_is_refused() {
        let key = unhex(FIGURE6_KEY);
        let evil = FIGURE6.replacen(
            "<Secret>",
            &format!("<Secret><PlainValue>{CHOSEN_B64}</PlainValue></Secret><Secret>"),
            1,
        );
        let e = parse(&evil, &Unlock::PreSharedKey(&key)).unwrap_err();
        assert!(e.to_string().contains("two Secret"), "{e}");
        // The same in a Data of its own before the real one.
        let evil = FIGURE6.replacen(
            "<Data>",
            &format!("<Data><Secret><PlainValue>{CHOSEN_B64}</PlainValue></Secret></Data><Data>"),
            1,
        );
        let e = parse(&evil, &Unlock::PreSharedKey(&key)).unwrap_err();
        assert!(e.to_string().contains("more than one Data"), "{e}");
        // Both values in one Secret.
        let evil = FIGURE6.replacen(
            "<Secret>",
            &format!("<Secret><PlainValue>{CHOSEN_B64}</PlainValue>"),
            1,
        );
        assert!(parse(&evil, &Unlock::PreSharedKey(&key)).is_err());
    }

    #[test]
    fn an_aes_key_wrap_shorter_than_24_bytes_does_not_decrypt() {
        // RFC 3394 wraps 2 blocks or more: 8 bytes (the check block alone)
        // would unwrap to nothing under any key.
        for key_len in [16, 24, 32] {
            let key = vec![0x55u8; key_len];
            assert!(Cipher::AesKeyWrap(key_len)
                .decrypt(&key, &[0xA6; 8])
                .is_none());
            assert!(Cipher::AesKeyWrap(key_len)
                .decrypt(&key, &[0xA6; 16])
                .is_none());
        }
    }

    #[test]
    fn a_mac_key_forged_to_nothing_is_refused() {
        const EVIL: &str = include_str!("../../../tests/fixtures/pskc/evil-kw-mackey.pskcxml");
        let key = unhex(BATCH_KEY);
        let e = parse(EVIL, &Unlock::PreSharedKey(&key)).unwrap_err();
        assert!(
            matches!(&e, PskcError::BadMac(m) if m.contains("MAC key does not decrypt")),
            "{e}"
        );
        let e = parse(EVIL, &Unlock::PreSharedKey(&[7u8; 32])).unwrap_err();
        assert!(matches!(e, PskcError::BadMac(_)), "{e}");
    }

    #[test]
    fn two_keys_with_the_same_secret_refuse_the_file() {
        let key = unhex(BATCH_KEY);
        // The Secret of 1002 (ciphertext and MAC) put in 1001's place.
        let secret = |xml: &str, serial: &str| {
            let at = xml.find(&format!("<SerialNo>{serial}</SerialNo>")).unwrap();
            let a = at + xml[at..].find("<Secret>").unwrap();
            let b = at + xml[at..].find("</Secret>").unwrap() + "</Secret>".len();
            (a, b)
        };
        let (a1, b1) = secret(BATCH, "1001");
        let (a2, b2) = secret(BATCH, "1002");
        let evil = format!("{}{}{}", &BATCH[..a1], &BATCH[a2..b2], &BATCH[b1..]);
        let e = parse(&evil, &Unlock::PreSharedKey(&key)).unwrap_err();
        assert!(
            e.to_string().contains("serial \"1001\" (key Id \"K1001\")")
                && e.to_string().contains("serial \"1002\" (key Id \"K1002\")")
                && e.to_string().contains("same secret"),
            "{e}"
        );
    }

    #[test]
    fn map_names_with_invisible_characters_and_a_bom() {
        let e = parse_map("1001,alice\u{200b}\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("U+200B"), "{e}");
        assert!(parse_map("1001,alice,fob\u{202e}\n").is_err());
        assert!(parse_map("1001\u{feff},alice\n").is_err());
        let map = parse_map("\u{feff}serial,user\n1001,alice\n").unwrap();
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!((map[0].serial.as_str(), map[0].line), ("1001", 2));
    }
    #[test]
    fn a_mac_key_shorter_than_16_bytes_is_refused() {
        // Figure 6 with its MACKey an 8-byte key (aes128-cbc under the
        // pre-shared key) and the Secret's ValueMAC made with it (Python's
        // `cryptography` and `hmac`).
        let key = unhex(FIGURE6_KEY);
        let evil = FIGURE6
            .replace(
                "ESIzRFVmd4iZABEiM0RVZgKn6WjLaTC1sbeBMSvIhRejN9vJa2BOlSaMrR7I5wSX",
                "AAECAwQFBgcICQoLDA0OD2M7oRnLKMDOPpixtCmEXcw=",
            )
            .replace(
                "Su+NvtQfmvfJzF6bmQiJqoLRExc=",
                "L9D0mwz4sLxxOINxBeVkglaR2Nc=",
            );
        let e = parse(&evil, &Unlock::PreSharedKey(&key)).unwrap_err();
        assert!(
            matches!(&e, PskcError::BadMac(m) if m.contains("16 bytes or more")),
            "{e}"
        );
    }

    #[test]
    fn a_bom_before_the_map_header_is_not_a_mapping() {
        let map = parse_map("\u{feff}serial,user\n1001,alice\n").unwrap();
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!((map[0].serial.as_str(), map[0].line), ("1001", 2));
    }
}
