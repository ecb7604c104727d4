//! The admin CLI: each command is one request to the running daemon.

mod client;
mod commands;
mod qr;

pub use client::Client;
pub use commands::{confirm, enroll, list, remove, unlock, verify, EnrollOptions};
pub use qr::terminal as terminal_qr;

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
