//! The admin CLI: each command is one request to the running daemon.

/// `println!` for the CLI's output: a reader that went away (`otpd list |
/// head`) ends the output quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::admin::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub mod audit;
mod check_config;
mod client;
mod commands;
mod import;
pub(crate) mod qr;
mod self_service;

pub use check_config::check_config;
pub use client::Client;
pub use commands::{
    confirm, enroll, forget, list, phone, recovery_codes, remove, resync, status, unlock, verify,
    EnrollOptions,
};
pub use import::{import_google_authenticator, import_oath, import_pskc};
pub use qr::terminal as terminal_qr;
pub use self_service::self_service;

/// A CLI failure, mapped to the documented exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Exit 1: the daemon refused (wrong code, no such user, not allowed …).
    #[error("{0}")]
    Refused(String),
    /// Exit 2: bad usage or configuration.
    #[error("{0}")]
    Usage(String),
    /// Exit 3: the daemon could not be reached.
    #[error("{0}")]
    Unreachable(String),
}

impl CliError {
    /// The process exit status.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
        }
    }
}

/// The exit statuses, for `--help`.
pub const EXIT_STATUS_HELP: &str = "Exit status:
  0  done
  1  refused: wrong or replayed code, no such user, not allowed, already enrolled …
  2  usage or configuration error
  3  the daemon could not be reached";

/// Writes CLI output to stdout; see `say!`.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("otpd: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
