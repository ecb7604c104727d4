//! The wire protocol between `pam_otpd.so`, the `otpd` admin CLI and the
//! `otpd` daemon, defined once so that the two sides can never drift apart.
//!
//! A frame is a 4-byte big-endian payload length followed by that many bytes
//! of JSON: `{"v":2,"body":{...}}`. Frames larger than [`MAX_FRAME_LEN`] are
//! refused before any byte of the payload is read. Everything here but the
//! blocking [`Client`] is pure: no sockets, no runtime, so it can be
//! unit-tested and fuzzed.
#![forbid(unsafe_code)]

mod client;
mod frame;
mod login;
mod secret;
mod types;

pub use client::{Client, ClientError, Connection, Trust};
pub use frame::{
    decode_payload, encode_frame, payload_len, read_frame, write_frame, ProtoError, WipingWriter,
    FRAME_HEADER_LEN, MAX_FRAME_LEN, MAX_REQUEST_LEN, PROTOCOL_VERSION,
};
pub use login::{
    looks_like_code, split_forward_pass, Authtok, FirstPass, Language, LoginOutcome, LoginStart,
    Message, Prompt, Step, MAX_AUTH_INFO,
};
pub use secret::SecretText;
pub use types::{
    ActivityEntry, Algorithm, ApproverSummary, DaemonStatus, DeviceSummary, EnrollParams,
    Enrollment, ErrorCode, ImportParams, ImportResult, ImportedDevice, Request, Response,
    SelfProof, TokenKind, UserState, UserSummary, VerifyOutcome,
};
