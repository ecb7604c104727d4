//! The pure core: every decision otpd makes, as functions of their inputs
//! with the clock passed in. No I/O here, so all of it is unit-tested (and
//! can be fuzzed); the daemon's I/O code only carries the decisions out.
#![forbid(unsafe_code)]

pub mod approve;
pub mod audit;
pub mod code;
pub mod decision;
pub mod login;
pub mod names;
pub mod plan;
pub mod ratelimit;
pub mod record;
pub mod remember;
pub mod seal;
pub mod tokens;
pub mod totp;
