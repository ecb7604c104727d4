//! `pam_otpd.so`: asks for the verification code and lets the `otpd` daemon
//! decide. No secret is ever in this module's memory, only the code as
//! typed, and that in buffers wiped after use.
//!
//! The module is a guest in sshd, sudo or a screen locker: every entry point
//! catches panics (`PAM_SERVICE_ERR`), there are no threads, no runtime, no
//! global state, and the library is linked `-z nodelete` (see `build.rs`).
//!
//! - `args.rs`: the module arguments (pure).
//! - `flow.rs`: the module's side of the conversation the daemon leads, and
//!   every PAM return code (pure, behind traits); the socket client with its
//!   deadline and peer check is the protocol crate's.
//! - `ffi.rs`: libpam items, syslog and the conversation.

mod args;
mod ffi;
mod flow;
mod texts;

use pamsm::{pam_module, Pam, PamError, PamFlags, PamServiceModule};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The PAM service module; only `authenticate` does anything.
struct PamOtpd;

impl PamServiceModule for PamOtpd {
    fn authenticate(pamh: Pam, flags: PamFlags, args: Vec<String>) -> PamError {
        guarded(|| {
            let pam = ffi::LibPam::new(&pamh);
            let silent = flags.contains(PamFlags::SILENT);
            flow::authenticate(&pam, &args, silent, flow::SocketDaemon::new)
        })
    }

    /// There are no credentials to set; failing here would undo the login.
    fn setcred(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        guarded(|| PamError::SUCCESS)
    }

    fn acct_mgmt(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        guarded(|| PamError::IGNORE)
    }

    fn chauthtok(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        guarded(|| PamError::IGNORE)
    }

    fn open_session(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        guarded(|| PamError::IGNORE)
    }

    fn close_session(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        guarded(|| PamError::IGNORE)
    }
}

/// Runs an entry point's body; a panic must never unwind into the C host.
fn guarded(body: impl FnOnce() -> PamError) -> PamError {
    // AssertUnwindSafe: nothing the body touches outlives the call.
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(PamError::SERVICE_ERR)
}

pam_module!(PamOtpd);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_service_err() {
        assert_eq!(guarded(|| panic!("boom")), PamError::SERVICE_ERR);
        assert_eq!(guarded(|| PamError::IGNORE), PamError::IGNORE);
    }
}
