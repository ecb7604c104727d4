//! A blocking client of the daemon's socket, for the admin commands.

use super::CliError;
use otpd_proto::{read_frame, write_frame, ErrorCode, ProtoError, Request, Response};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an admin command waits for the daemon.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the daemon.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> CliError {
        CliError::Unreachable(format!(
            "cannot reach otpd at {}: {e} (is the daemon running? `systemctl status otpd`)",
            self.socket.display()
        ))
    }

    /// Sends one request; a `Response::Error` becomes a `CliError`.
    pub fn call(&self, request: &Request) -> Result<Response, CliError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(e))?;
        self.check_peer(&stream)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|_| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| self.unreachable(e))?;
        write_frame(&mut stream, request).map_err(|e| self.unreachable(e))?;
        let response: Response = read_frame(&mut stream).map_err(|e| match e {
            ProtoError::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                self.unreachable("no answer within 10 s")
            }
            other => self.unreachable(other),
        })?;
        match response {
            Response::Error { code, message } => Err(match code {
                ErrorCode::BadRequest => CliError::Usage(message),
                _ => CliError::Refused(message),
            }),
            other => Ok(other),
        }
    }

    /// The secret of a new enrolment comes back over this socket: only a
    /// daemon run by root, the `otpd` user or ourselves is believed.
    fn check_peer(&self, stream: &UnixStream) -> Result<(), CliError> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(stream, PeerCredentials).map_err(|e| self.unreachable(e))?;
        let uid = cred.uid();
        let own = nix::unistd::geteuid().as_raw();
        let daemon_user = nix::unistd::User::from_name("otpd")
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
        if uid == 0 || uid == own || Some(uid) == daemon_user {
            Ok(())
        } else {
            Err(CliError::Unreachable(format!(
                "{} is served by uid {uid}, not by root or the otpd user; not trusting it",
                self.socket.display()
            )))
        }
    }
}
