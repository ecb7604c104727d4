//! otpd: the daemon and admin CLI of a TOTP second factor for Linux logins.
//!
//! `core` is pure logic (codes, replay and rate rules); `store` keeps state;
//! `server` is the daemon's socket; `admin` is the CLI side.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod import;
pub mod rng;
pub mod server;
pub mod store;
pub mod web;
