//! Length-prefixed, versioned frames with a size cap.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// Version carried in every frame; a peer speaking another one is refused.
///
/// Version 2: the login is one conversation the daemon leads
/// (`Request::Login`, `Response::Step`); a version-1 module and a version-2
/// daemon refuse each other (they are packaged together).
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest payload accepted, in bytes. A `list` of ~50,000 users fits;
/// anything larger from a client is an attack or a bug.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;
/// Largest request the daemon reads, in bytes: a request is a user name, a
/// code and two short strings, so anything bigger is refused before the
/// daemon allocates for it.
pub const MAX_REQUEST_LEN: usize = 16 * 1024;
/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Why a frame could not be read or written. Messages never contain payload
/// bytes, so a malformed frame carrying a code cannot leak it into a log.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The underlying stream failed (including time-outs).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection before a whole frame arrived.
    #[error("connection closed before a whole frame arrived")]
    Eof,
    /// The length prefix is above [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A zero-length frame.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another protocol version.
    #[error(
        "protocol version {got} is not supported (this side speaks version {PROTOCOL_VERSION})"
    )]
    Version {
        /// The version in the frame.
        got: u16,
    },
    /// The payload is not valid JSON of the expected shape.
    #[error("malformed frame: {what} at line {line} column {column}")]
    Malformed {
        /// syntax, data (wrong type or field), eof.
        what: &'static str,
        /// Line in the payload.
        line: usize,
        /// Column in the payload.
        column: usize,
    },
}

impl From<serde_json::Error> for ProtoError {
    fn from(e: serde_json::Error) -> Self {
        // serde_json's own message can quote the offending value (a code sent
        // as a number, say), so only its category and position are kept.
        let what = match e.classify() {
            serde_json::error::Category::Io => "i/o",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected field or value",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        ProtoError::Malformed {
            what,
            line: e.line(),
            column: e.column(),
        }
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u16,
    body: &'a T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn<T> {
    #[allow(dead_code)]
    v: u16,
    body: T,
}

/// Serialises `body` into a whole frame (header included). The buffer is
/// wiped when dropped, since it may hold a code or a secret.
pub fn encode_frame<T: Serialize>(body: &T) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
    let mut writer = WipingWriter(Zeroizing::new(Vec::with_capacity(
        FRAME_HEADER_LEN + MAX_REQUEST_LEN,
    )));
    writer.0.resize(FRAME_HEADER_LEN, 0);
    serde_json::to_writer(
        &mut writer,
        &EnvelopeOut {
            v: PROTOCOL_VERSION,
            body,
        },
    )?;
    let mut out = writer.0;
    let len = out.len() - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(ProtoError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // len <= MAX_FRAME_LEN < u32::MAX, checked just above.
    out[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// A `Vec` writer that never leaves a copy behind: when the buffer must
/// grow, the bytes move to a new, larger buffer and the old one is wiped
/// (a plain `Vec` would free it with the code still in it).
pub struct WipingWriter(Zeroizing<Vec<u8>>);

impl WipingWriter {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Zeroizing::new(Vec::with_capacity(capacity)))
    }
    /// The bytes written.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl Write for WipingWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(2 * self.0.capacity())));
            grown.extend_from_slice(&self.0);
            // The old buffer is wiped as it is dropped here.
            self.0 = grown;
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Validates a length prefix against a cap (`MAX_FRAME_LEN`, or
/// `MAX_REQUEST_LEN` on the daemon's side): the payload length it
/// announces, or why it is refused.
pub fn payload_len(header: [u8; FRAME_HEADER_LEN], max: usize) -> Result<usize, ProtoError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(ProtoError::Empty);
    }
    if len > max {
        return Err(ProtoError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a payload (the bytes after the header), checking the version first
/// so that a newer peer gets "unsupported version", not "malformed".
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtoError> {
    let VersionOnly { v } = serde_json::from_slice(payload)?;
    if v != PROTOCOL_VERSION {
        return Err(ProtoError::Version { got: v });
    }
    let envelope: EnvelopeIn<T> = serde_json::from_slice(payload)?;
    Ok(envelope.body)
}

/// Reads one frame from a blocking stream (the module's and the CLI's side).
pub fn read_frame<T: DeserializeOwned>(reader: &mut impl Read) -> Result<T, ProtoError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    read_exact_or_eof(reader, &mut header)?;
    let len = payload_len(header, MAX_FRAME_LEN)?;
    let mut payload = Zeroizing::new(vec![0u8; len]);
    read_exact_or_eof(reader, &mut payload)?;
    decode_payload(&payload)
}

/// Writes one frame to a blocking stream.
pub fn write_frame<T: Serialize>(writer: &mut impl Write, body: &T) -> Result<(), ProtoError> {
    let frame = encode_frame(body)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

fn read_exact_or_eof(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), ProtoError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtoError::Eof,
        _ => ProtoError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, Response, SecretText, VerifyOutcome};

    #[test]
    fn a_frame_larger_than_the_first_buffer_is_whole() {
        // Grows past FRAME_HEADER_LEN + MAX_REQUEST_LEN through WipingWriter.
        let big = Response::Error {
            code: crate::ErrorCode::Internal,
            message: "x".repeat(3 * MAX_REQUEST_LEN),
        };
        let frame = encode_frame(&big).unwrap();
        let mut reader = &frame[..];
        let back: Response = read_frame(&mut reader).unwrap();
        assert_eq!(back, big);
        let mut writer = WipingWriter(Zeroizing::new(Vec::with_capacity(2)));
        writer.write_all(b"abc").unwrap();
        writer.write_all(b"defgh").unwrap();
        assert_eq!(&writer.0[..], b"abcdefgh");
    }

    #[test]
    fn a_response_with_a_field_from_a_newer_daemon_is_understood() {
        let json =
            br#"{"v":2,"body":{"kind":"step","step":"end","outcome":"success","since":"later"}}"#;
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json);
        let mut reader = &frame[..];
        let back: Response = read_frame(&mut reader).unwrap();
        assert_eq!(
            back,
            Response::Step(crate::Step::End {
                outcome: crate::LoginOutcome::Success,
                forward_password: false,
            })
        );
        // Requests stay strict: the daemon refuses what it does not know.
        let json = br#"{"v":2,"body":{"op":"unlock","user":"a","extra":1}}"#;
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json);
        let mut reader = &frame[..];
        assert!(read_frame::<Request>(&mut reader).is_err());
    }

    fn verify_request() -> Request {
        Request::Verify {
            user: "alice".into(),
            code: SecretText::from("123456"),
            service: "sshd".into(),
            rhost: "192.0.2.7".into(),
            ruid: Some(1000),
        }
    }

    #[test]
    fn request_round_trips_through_a_frame() {
        let frame = encode_frame(&verify_request()).unwrap();
        let back: Request = read_frame(&mut &frame[..]).unwrap();
        assert_eq!(back, verify_request());
    }

    #[test]
    fn response_round_trips() {
        let r = Response::Verified {
            outcome: VerifyOutcome::Throttled {
                retry_after_secs: 42,
            },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &r).unwrap();
        assert_eq!(read_frame::<Response>(&mut &buf[..]).unwrap(), r);
    }

    #[test]
    fn every_new_answer_and_request_round_trips() {
        use crate::types::{
            DeviceSummary, Enrollment, ImportParams, ImportResult, ImportedDevice, TokenKind,
            UserState, UserSummary,
        };
        use crate::Algorithm;
        // A struct variant's fields sit beside the tag `kind` of Response:
        // none of them may be called `kind` too.
        let responses = [
            Response::Enrolled(Box::new(Enrollment {
                user: "alice".into(),
                issuer: "h".into(),
                algorithm: Algorithm::Sha1,
                digits: 6,
                period: 30,
                secret_base32: SecretText::from("GEZDGNBVGY3TQOJQ"),
                uri: SecretText::from("otpauth://hotp/h:alice?secret=GEZDGNBVGY3TQOJQ"),
                replaced: false,
                device: "key".into(),
                token_kind: TokenKind::Hotp,
                counter: Some(7),
                old_kept: true,
            })),
            Response::Imported {
                user: "bob".into(),
                result: ImportResult::LeftAlone,
                dry_run: true,
            },
            Response::Resynced {
                device: "key".into(),
                next_counter: 9,
            },
            Response::Users {
                users: vec![UserSummary {
                    user: "carol".into(),
                    state: UserState::Active,
                    algorithm: Algorithm::Sha1,
                    digits: 6,
                    period: 30,
                    created: 1,
                    last_success: None,
                    failures: 0,
                    throttled_for_secs: None,
                    recovery_codes: 0,
                    phone: false,
                    devices: vec![DeviceSummary {
                        name: "key".into(),
                        kind: TokenKind::Hotp,
                        state: UserState::Pending,
                        algorithm: Algorithm::Sha1,
                        digits: 8,
                        period: 30,
                        next_counter: Some(3),
                        created: 2,
                    }],
                    approvers: vec![crate::types::ApproverSummary {
                        name: "phone".into(),
                        state: UserState::Active,
                        created: 3,
                        last_used: Some(4),
                        push: true,
                    }],
                    remembered: 2,
                }],
            },
        ];
        for r in responses {
            let mut buf = Vec::new();
            write_frame(&mut buf, &r).unwrap();
            assert_eq!(read_frame::<Response>(&mut &buf[..]).unwrap(), r);
        }
        let requests = [
            Request::Import(Box::new(ImportParams {
                user: "dave".into(),
                devices: vec![ImportedDevice {
                    name: "oath".into(),
                    kind: TokenKind::Totp,
                    secret_base32: SecretText::from("GEZDGNBVGY3TQOJQ"),
                    algorithm: Algorithm::Sha1,
                    digits: 8,
                    period: 60,
                    last_used: Some(5),
                    first_counter: 0,
                    window: Some(2),
                }],
                recovery_codes: vec![SecretText::from("12345678")],
                replace: true,
                dry_run: false,
            })),
            Request::Resync {
                user: "erin".into(),
                device: None,
                code1: SecretText::from("123456"),
                code2: SecretText::from("654321"),
            },
            Request::Remove {
                user: "frank".into(),
                device: Some("phone".into()),
            },
        ];
        for r in requests {
            let frame = encode_frame(&r).unwrap();
            assert_eq!(read_frame::<Request>(&mut &frame[..]).unwrap(), r);
        }
    }

    #[test]
    fn oversized_and_empty_headers_are_refused_before_reading() {
        let too_big = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            payload_len(too_big, MAX_FRAME_LEN),
            Err(ProtoError::TooLarge { .. })
        ));
        let over_request = ((MAX_REQUEST_LEN + 1) as u32).to_be_bytes();
        assert!(payload_len(over_request, MAX_FRAME_LEN).is_ok());
        assert!(matches!(
            payload_len(over_request, MAX_REQUEST_LEN),
            Err(ProtoError::TooLarge { .. })
        ));
        assert!(matches!(
            payload_len([0; 4], MAX_FRAME_LEN),
            Err(ProtoError::Empty)
        ));
        assert_eq!(payload_len(10u32.to_be_bytes(), MAX_FRAME_LEN).unwrap(), 10);
    }

    #[test]
    fn other_versions_are_named_as_such() {
        for old_or_new in [1, 3] {
            let payload = format!(r#"{{"v":{old_or_new},"body":{{"op":"list"}}}}"#);
            let err = decode_payload::<Request>(payload.as_bytes()).unwrap_err();
            assert!(
                matches!(err, ProtoError::Version { got } if got == old_or_new),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_payload_errors_never_quote_the_value() {
        // A code sent as a number: serde_json's own message would quote it.
        let payload =
            br#"{"v":2,"body":{"op":"verify","user":"a","code":987654,"service":"s","rhost":""}}"#;
        let err = decode_payload::<Request>(payload).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed { .. }));
        assert!(!err.to_string().contains("987654"), "{err}");
    }

    #[test]
    fn unknown_fields_and_ops_are_refused() {
        assert!(decode_payload::<Request>(br#"{"v":2,"body":{"op":"list","x":1}}"#).is_err());
        assert!(decode_payload::<Request>(br#"{"v":2,"body":{"op":"drop_all"}}"#).is_err());
        assert!(decode_payload::<Request>(br#"{"v":1}"#).is_err());
        assert!(decode_payload::<Request>(b"\xff\xfe").is_err());
    }

    #[test]
    fn truncated_stream_is_eof() {
        let frame = encode_frame(&verify_request()).unwrap();
        let cut = &frame[..frame.len() - 3];
        assert!(matches!(
            read_frame::<Request>(&mut &cut[..]),
            Err(ProtoError::Eof)
        ));
    }

    #[test]
    fn debug_of_a_request_hides_the_code() {
        assert!(!format!("{:?}", verify_request()).contains("123456"));
    }
}
