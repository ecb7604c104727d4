//! Loopback ports for the servers the tests start.
//!
//! A server that can bind port 0 itself is given `127.0.0.1:0` and asked
//! which port it got (the daemon's pages: [`crate::pages::port`];
//! chromedriver: [`crate::browser`]); nothing can take that port from it.
//! The servers that cannot (OpenSSH refuses `Port 0`, PostgreSQL's `port`
//! starts at 1) get a port that was free a moment ago ([`free_port`]), and
//! their starter tries again with another when the bind failed, and checks
//! that the listener found on the port is the one it started
//! ([`listens_on`]), not another process that took the port in between.

use std::net::TcpListener;

/// A port of 127.0.0.1 that was free a moment ago: bound to port 0 and
/// released. Another process may take it before the caller's server binds
/// it, so the caller must try again on a failed bind and check the
/// listener with [`listens_on`].
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A port of 127.0.0.1 where a connection is refused, for as long as the
/// returned socket lives: the socket is bound to it but does not listen,
/// so no other process can take it (a test of "nothing listening").
pub fn closed_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("a TCP socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|address| address.as_socket())
        .expect("the bound address")
        .port();
    (socket, port)
}

/// True when process `pid` holds a TCP socket listening on `port` (IPv4
/// or IPv6, any address): its descriptors' socket inodes (`/proc/PID/fd`)
/// against the listening sockets of its network namespace
/// (`/proc/PID/net/tcp` and `tcp6`, state 0A).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: Vec<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                return false;
            };
            let listening_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            *state == "0A" && listening_port == Some(port) && inodes.iter().any(|i| i == inode)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_and_a_closed_port_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
        let (_socket, closed) = closed_port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", closed)).is_err());
        assert!(!listens_on(std::process::id(), closed));
    }
}
