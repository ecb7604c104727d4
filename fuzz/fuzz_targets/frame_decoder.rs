//! The wire protocol (`otpd-proto`): arbitrary bytes as a stream of frames,
//! read as a `Request` (what the daemon reads) and as a `Response` (what the
//! module and the CLI read).
//!
//! Invariants:
//! - never a panic, whatever the bytes;
//! - a frame that decodes consumes exactly its header and announced length;
//!   a stream shorter than its header announces is `Eof`;
//! - reading does not depend on how the stream is split into `read` calls;
//! - the daemon's path (`payload_len` with `MAX_REQUEST_LEN`, then
//!   `decode_payload`) agrees with `read_frame` whenever both apply;
//! - whatever decodes re-encodes (`encode_frame`) and decodes to an equal
//!   value, and the re-encoding is stable (encode ∘ decode ∘ encode = encode);
//! - `Debug` of a decoded value never shows a code or secret it carries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_proto::{
    decode_payload, encode_frame, payload_len, read_frame, ProtoError, Request, Response,
    SecretText, FRAME_HEADER_LEN, MAX_FRAME_LEN, MAX_REQUEST_LEN,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::io::Read;

/// The secrets a value carries, and a copy of it with each one emptied.
trait Secrets: Sized {
    fn without_secrets(&self) -> (Self, Vec<String>);
}

fn take(secret: &mut SecretText, found: &mut Vec<String>) {
    found.push(secret.expose().to_owned());
    *secret = SecretText::from("");
}

impl Secrets for Request {
    fn without_secrets(&self) -> (Self, Vec<String>) {
        let mut copy = self.clone();
        let mut found = Vec::new();
        match &mut copy {
            Request::Verify { code, .. }
            | Request::Confirm { code, .. }
            | Request::PhoneConfirm { code, .. } => take(code, &mut found),
            _ => {}
        }
        (copy, found)
    }
}

impl Secrets for Response {
    fn without_secrets(&self) -> (Self, Vec<String>) {
        let mut copy = self.clone();
        let mut found = Vec::new();
        match &mut copy {
            Response::Enrolled(e) => {
                take(&mut e.secret_base32, &mut found);
                take(&mut e.uri, &mut found);
            }
            Response::Link { url, .. } => take(url, &mut found),
            Response::RecoveryCodes { codes, .. } => {
                for code in codes {
                    take(code, &mut found);
                }
            }
            _ => {}
        }
        (copy, found)
    }
}

/// A reader that hands out the bytes in pieces of the given sizes (and an
/// `Interrupted` now and then), as a socket may.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
    interrupted: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes.get(self.turn % self.sizes.len().max(1)).copied();
        self.turn += 1;
        // Never twice in a row, so that the reader always makes progress.
        if size == Some(0) && !self.interrupted {
            self.interrupted = true;
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        self.interrupted = false;
        let n = usize::from(size.unwrap_or(u8::MAX).max(1))
            .min(buf.len())
            .min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn same_error_kind(a: &ProtoError, b: &ProtoError) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn check<T>(data: &[u8], sizes: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Secrets,
{
    let mut reader = data;
    let first = read_frame::<T>(&mut reader);

    // The same bytes in pieces give the same answer.
    let mut chunked = Chunked {
        data,
        sizes,
        turn: 0,
        interrupted: false,
    };
    let again = read_frame::<T>(&mut chunked);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the split of the stream changed the value"),
        (Err(a), Err(b)) => assert!(same_error_kind(a, b), "{a} vs {b}"),
        _ => panic!("the split of the stream changed the result: {first:?} vs {again:?}"),
    }

    let value = match first {
        Ok(value) => value,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };

    // Exactly one frame was consumed.
    let header: [u8; FRAME_HEADER_LEN] = data[..FRAME_HEADER_LEN].try_into().unwrap();
    let len = payload_len(header, MAX_FRAME_LEN).expect("a decoded frame has a valid header");
    assert_eq!(reader.len(), data.len() - FRAME_HEADER_LEN - len);
    let payload = &data[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    assert_eq!(decode_payload::<T>(payload).ok().as_ref(), Some(&value));

    // Re-encode, decode, compare; the second encoding is byte-identical.
    let frame = encode_frame(&value).expect("a decoded value re-encodes");
    let mut rest = &frame[..];
    let back: T = read_frame(&mut rest).expect("a re-encoded frame decodes");
    assert!(rest.is_empty(), "encode_frame wrote more than one frame");
    assert_eq!(back, value, "decode(encode(x)) != x");
    let frame2 = encode_frame(&back).expect("re-encodes");
    assert_eq!(&frame[..], &frame2[..], "the encoding is not stable");

    // A secret it carries never shows in Debug (unless the rest of the
    // value happens to contain the same text).
    let shown = format!("{value:?}");
    let (redacted, secrets) = value.without_secrets();
    let shown_redacted = format!("{redacted:?}");
    for secret in secrets {
        let escaped = format!("{secret:?}");
        let escaped = &escaped[1..escaped.len() - 1];
        if escaped.len() >= 4 && !shown_redacted.contains(escaped) {
            assert!(!shown.contains(escaped), "Debug shows a secret: {shown}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // A header that announces more than the stream holds: a truncated frame,
    // whatever the type. `read_frame` allocates the announced length (up to
    // MAX_FRAME_LEN) before reading, so this is checked once, not four times.
    if let Some(header) = data.get(..FRAME_HEADER_LEN) {
        let announced = u32::from_be_bytes(header.try_into().unwrap()) as usize;
        if (1..=MAX_FRAME_LEN).contains(&announced) && data.len() - FRAME_HEADER_LEN < announced {
            let result = read_frame::<Request>(&mut &data[..]);
            assert!(matches!(result, Err(ProtoError::Eof)), "{result:?}");
            return;
        }
    }

    // The last few bytes steer the chunked reader; all bytes are the stream.
    let sizes = &data[data.len().saturating_sub(8)..];
    check::<Request>(data, sizes);
    check::<Response>(data, sizes);

    // The daemon's own path: header against the request cap, then payload.
    if let Some(header) = data.get(..FRAME_HEADER_LEN) {
        let header: [u8; FRAME_HEADER_LEN] = header.try_into().unwrap();
        let as_frame = payload_len(header, MAX_FRAME_LEN);
        match payload_len(header, MAX_REQUEST_LEN) {
            Ok(len) => {
                assert!((1..=MAX_REQUEST_LEN).contains(&len));
                assert_eq!(as_frame.ok(), Some(len), "the two caps disagree");
                if let Some(payload) = data.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) {
                    let daemon = decode_payload::<Request>(payload);
                    let module = read_frame::<Request>(&mut &data[..]);
                    match (daemon, module) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b),
                        (Err(a), Err(b)) => assert!(same_error_kind(&a, &b), "{a} vs {b}"),
                        (a, b) => panic!("daemon and reader disagree: {a:?} vs {b:?}"),
                    }
                }
            }
            Err(ProtoError::Empty) => assert!(matches!(as_frame, Err(ProtoError::Empty))),
            Err(ProtoError::TooLarge { len, max }) => {
                assert_eq!(max, MAX_REQUEST_LEN);
                assert!(len > MAX_REQUEST_LEN);
                assert_eq!(len, u32::from_be_bytes(header) as usize);
            }
            Err(e) => panic!("payload_len gave an unexpected error: {e}"),
        }
    }
});
