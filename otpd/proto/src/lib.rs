//! The wire protocol between `pam_otpd.so`, the `otpd` admin CLI and the
//! `otpd` daemon, defined once so that the two sides can never drift apart.
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes
//! of JSON: `{"v":1,"body":{...}}`. Frames larger than [`MAX_FRAME_LEN`] are
//! refused before any byte of the payload is read. Everything here is pure:
//! no sockets, no runtime, so it can be unit-tested and fuzzed.
#![forbid(unsafe_code)]

mod frame;
mod secret;
mod types;

pub use frame::{
    decode_payload, encode_frame, payload_len, read_frame, write_frame, ProtoError, WipingWriter,
    FRAME_HEADER_LEN, MAX_FRAME_LEN, MAX_REQUEST_LEN, PROTOCOL_VERSION,
};
pub use secret::SecretText;
pub use types::{
    Algorithm, DaemonStatus, DeviceSummary, EnrolParams, Enrolment, EnrolmentStatus, ErrorCode,
    ImportParams, ImportResult, ImportedDevice, Request, Response, TokenKind, UserState,
    UserSummary, VerifyOutcome,
};
