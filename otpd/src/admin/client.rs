//! The admin commands' side of the daemon's socket: the protocol crate's
//! one blocking client, with the CLI's trust and error wording.

use super::CliError;
use otpd_proto::{ClientError, ErrorCode, Request, Response, Trust};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How long an admin command waits for the daemon (connect, then answer).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The account the daemon runs as when its state directory cannot be
/// looked at (the name the packages create).
const PACKAGED_DAEMON_USER: &str = "otpd";

/// A client of the daemon.
pub struct Client {
    inner: otpd_proto::Client,
}

impl Client {
    /// A client for the daemon at `socket` whose state lives in
    /// `state_dir`. The secret of a new enrolment comes back over this
    /// socket: only a daemon run by root, by the owner of the state
    /// directory (the daemon's account) or by the caller itself is believed.
    pub fn new(socket: &Path, state_dir: &Path) -> Self {
        let daemon_user = std::fs::metadata(state_dir)
            .ok()
            .and_then(|meta| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
                    .ok()
                    .flatten()
            })
            .map(|user| user.name)
            .unwrap_or_else(|| PACKAGED_DAEMON_USER.to_owned());
        Self {
            inner: otpd_proto::Client {
                socket: socket.display().to_string(),
                timeout: TIMEOUT,
                trust: Trust {
                    daemon_user,
                    caller_itself: true,
                },
            },
        }
    }

    /// Sends one request; a `Response::Error` becomes a `CliError`.
    pub fn call(&self, request: &Request) -> Result<Response, CliError> {
        let response = self.inner.ask(request).map_err(|e| match e {
            ClientError::UntrustedPeer { socket, uid, .. } => CliError::Unreachable(format!(
                "{socket} is served by uid {uid}, not by root, the daemon's account or you; not trusting it"
            )),
            other => CliError::Unreachable(format!(
                "{other} (is the daemon running? `systemctl status otpd`)"
            )),
        })?;
        match response {
            Response::Error { code, message } => Err(match code {
                ErrorCode::BadRequest => CliError::Usage(message),
                _ => CliError::Refused(message),
            }),
            other => Ok(other),
        }
    }
}
