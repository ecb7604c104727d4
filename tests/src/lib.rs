//! Harness for the tests that span `otpd` and `pam_otpd.so`.
//!
//! Every test starts a real `otpd serve` on a unique temporary directory
//! ([`TestEnv`]), drives the real libpam through `pamtester` under
//! `libpam_wrapper` ([`pam`]), and computes codes with `oathtool`, an
//! implementation independent of ours ([`totp`]). Nothing here fakes the
//! product; the one fake, `otpd-test-peer`, plays an impostor daemon.

pub mod approve;
pub mod browser;
pub mod ca;
pub mod campaign;
pub mod ci;
pub mod client;
pub mod env;
pub mod fleet;
pub mod hotp;
pub mod logins;
pub mod net;
pub mod nss;
pub mod pages;
pub mod pam;
pub mod phone;
pub mod postgres;
pub mod process;
pub mod programs;
pub mod pty;
pub mod push_service;
pub mod race;
pub mod rng;
pub mod scrape;
pub mod secrets;
pub mod sms;
pub mod softkey;
pub mod sshd;
pub mod statedir;
pub mod strace;
pub mod system;
pub mod totp;
pub mod webclient;

pub use env::{Limits, TestEnv};
pub use pam::{PamLogin, PamOutcome};
pub use programs::{require, Program, PAM};
pub use totp::{code_at, settled_now, Enrollment};
