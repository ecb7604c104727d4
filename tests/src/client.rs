//! Requests to a test daemon through the protocol crate's one blocking
//! client (the one the module, the CLI and the benchmark use).

use otpd_proto::{Client, LoginStart, Request, Response, Trust};
use std::path::Path;
use std::time::Duration;

/// The client of the daemon at `socket`, each exchange within `timeout`:
/// trusts root, `otpd` and the test's own uid (test daemons run as any of
/// them).
pub fn client(socket: &Path, timeout: Duration) -> Client {
    Client {
        socket: socket.display().to_string(),
        timeout,
        trust: Trust {
            daemon_user: "otpd".into(),
            caller_itself: true,
        },
    }
}

/// One request and its answer on a new connection, within `timeout`.
pub fn ask(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, String> {
    client(socket, timeout)
        .ask(request)
        .map_err(|e| e.to_string())
}

/// The start of a plain login of `user` as sshd's module would send it
/// (root, a remote host, no arguments): the daemon's first answer is its
/// first step.
pub fn login_start(user: &str) -> Request {
    Request::Login(Box::new(LoginStart::plain(
        user,
        "otpd-tests",
        "192.0.2.250",
        0,
    )))
}
