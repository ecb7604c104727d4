//! The self-enrolment pages: a one-time link (`otpd enroll USER --link`)
//! opens a page with the steps, a "Show QR code" button and the "Enter
//! your OTP" / "Validate" field. The button (a POST, never a GET) shows
//! the QR code and the secret for manual entry, each time a new one; a
//! right code shows the success page with recovery codes and, with
//! `[sms]`, the phone step.
//!
//! Only the HTTP side is here: routes, pages, language, headers, TLS. The
//! decisions (tokens, codes, records, audit lines) are the daemon's,
//! behind [`backend::EnrolBackend`].
//!
//! At start-up the daemon calls [`bind`] (a port in use or a bad
//! certificate is reported then), spawns [`Bound::serve`] with its
//! backend and a shutdown future, and awaits it at shutdown. [`serve`]
//! does both in one call; [`router`] is the bare `axum::Router` for tests.
//!
//! - `lang.rs`: Dutch or English by `Accept-Language`, and every text.
//! - `limits.rs`: requests and connections per client, the pages' threads.
//! - `pages.rs`: the askama templates (`otpd/templates/`), QR code, secret.
//! - `routes.rs`: which request gets which page, headers, body cap.
//! - `serve.rs`: the listener, TLS with rustls, graceful shutdown.
//!
//! The HTTP side is the cargo feature `web` (on by default). `backend.rs`
//! and `limits.rs` need no HTTP crate and are always built: the daemon's
//! side of the pages (`server/handler/web.rs`) is written against them.

#[cfg(feature = "web")]
mod approve;
pub mod backend;
#[cfg(feature = "web")]
mod lang;
pub mod limits;
#[cfg(feature = "web")]
mod pages;
#[cfg(feature = "web")]
mod routes;
#[cfg(feature = "web")]
mod serve;

#[cfg(feature = "web")]
pub use routes::{router, PageOptions, MAX_BODY_BYTES};
#[cfg(feature = "web")]
pub use serve::{bind, serve, Bound, WebError};

#[cfg(all(test, feature = "web"))]
mod tests;
