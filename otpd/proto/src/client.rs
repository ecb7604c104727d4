//! The one blocking client of the daemon's socket, for every caller: the
//! PAM module, the CLI, the tests and the benchmark. Blocking std I/O under
//! a hard deadline per exchange (connect, send, answer), and an answer
//! trusted only from a peer that is root, the daemon's own user, or (when
//! the caller allows it: the CLI, tests) the caller itself (design.md §4).
#![forbid(unsafe_code)]

use crate::{read_frame, write_frame, ProtoError, Request, Response};
use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use nix::sys::time::TimeVal;
use nix::unistd::User;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Why no answer from the daemon can be used. Never carries a code.
#[derive(Debug)]
pub enum ClientError {
    /// Creating the socket or connecting failed (no daemon, refused, timed out).
    Connect {
        /// The socket path.
        socket: String,
        /// The cause.
        error: io::Error,
    },
    /// The socket's owner is not trusted (root, the daemon user, or the
    /// caller itself when allowed): its answer could be forged, so nothing
    /// was sent.
    UntrustedPeer {
        /// The socket path.
        socket: String,
        /// The peer's uid from SO_PEERCRED.
        uid: u32,
        /// The daemon's account name.
        daemon_user: String,
    },
    /// Sending the request or reading the answer failed or took too long.
    Exchange {
        /// The socket path.
        socket: String,
        /// The cause (time-out, malformed frame, closed connection …).
        error: ProtoError,
    },
}

impl ClientError {
    /// The daemon could not be reached at all (nothing listens, refused,
    /// timed out connecting): the CLI's exit status 3.
    pub fn is_unreachable(&self) -> bool {
        !matches!(self, ClientError::UntrustedPeer { .. })
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { socket, error } => {
                write!(f, "cannot reach otpd at {socket}: {error}")
            }
            ClientError::UntrustedPeer {
                socket,
                uid,
                daemon_user,
            } => write!(
                f,
                "refusing to trust {socket}: it is served by uid {uid}, which is \
                 neither root nor daemon_user \"{daemon_user}\"; the code was not sent"
            ),
            ClientError::Exchange { socket, error } => {
                write!(f, "no usable answer from otpd at {socket}: {error}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Whose socket the client believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// Name of the daemon's account; root is always trusted.
    pub daemon_user: String,
    /// Also a daemon running as the caller's own effective uid (the CLI and
    /// tests run one as themselves). Never for the PAM module: a user must
    /// not be able to answer their own login.
    pub caller_itself: bool,
}

/// The daemon behind a Unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    /// Socket path.
    pub socket: String,
    /// Limit on each exchange: connect, then each request and its answer.
    pub timeout: Duration,
    /// Whose answers are believed.
    pub trust: Trust,
}

impl Client {
    /// A client of `socket` that trusts root and `daemon_user`.
    pub fn new(
        socket: impl Into<String>,
        timeout: Duration,
        daemon_user: impl Into<String>,
    ) -> Self {
        Self {
            socket: socket.into(),
            timeout,
            trust: Trust {
                daemon_user: daemon_user.into(),
                caller_itself: false,
            },
        }
    }

    /// Connects and checks the peer, within `timeout`.
    pub fn connect(&self) -> Result<Connection, ClientError> {
        let deadline = Instant::now() + self.timeout;
        self.connect_before(deadline)
    }

    fn connect_before(&self, deadline: Instant) -> Result<Connection, ClientError> {
        let socket = || self.socket.clone();
        let fd = connect_before(&self.socket, deadline).map_err(|error| ClientError::Connect {
            socket: socket(),
            error,
        })?;
        let peer_uid = getsockopt(&fd, sockopt::PeerCredentials)
            .map_err(|errno| ClientError::Connect {
                socket: socket(),
                error: errno.into(),
            })?
            .uid();
        // Root needs no user lookup (NSS may be slow or remote).
        let trusted = peer_uid == 0
            || (self.trust.caller_itself && peer_uid == nix::unistd::geteuid().as_raw())
            || peer_is_trusted(peer_uid, daemon_uid(&self.trust.daemon_user));
        if !trusted {
            return Err(ClientError::UntrustedPeer {
                socket: socket(),
                uid: peer_uid,
                daemon_user: self.trust.daemon_user.clone(),
            });
        }
        Ok(Connection {
            stream: DeadlineStream {
                stream: UnixStream::from(fd),
                deadline,
            },
            socket: self.socket.clone(),
            timeout: self.timeout,
        })
    }

    /// One request, one answer, on a new connection; connect, send and
    /// answer together within `timeout`.
    pub fn ask(&self, request: &Request) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut connection = self.connect_before(deadline)?;
        connection.exchange(request)
    }
}

/// A connection whose peer was checked: several requests and answers (a
/// login conversation), each exchange under its own deadline.
pub struct Connection {
    stream: DeadlineStream,
    socket: String,
    timeout: Duration,
}

impl Connection {
    /// Sends `request` and reads the answer; within the deadline set at
    /// connect for the first exchange, `timeout` from now for later ones.
    pub fn ask(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.exchange(request)
    }

    /// Sends `request` without waiting for an answer.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        write_frame(&mut self.stream, request).map_err(|error| ClientError::Exchange {
            socket: self.socket.clone(),
            error,
        })
    }

    /// Reads the next answer.
    pub fn receive(&mut self) -> Result<Response, ClientError> {
        let answer = read_frame(&mut self.stream).map_err(|error| ClientError::Exchange {
            socket: self.socket.clone(),
            error,
        });
        self.stream.deadline = Instant::now() + self.timeout;
        answer
    }

    /// Starts the deadline of the next exchange now (after the person took
    /// their time to answer a prompt).
    pub fn restart_deadline(&mut self) {
        self.stream.deadline = Instant::now() + self.timeout;
    }

    /// Gives the next exchange `extra` time on top of the timeout (the
    /// daemon waits that long for a phone's approval before it answers).
    pub fn extend_deadline(&mut self, extra: Duration) {
        self.stream.deadline = Instant::now() + self.timeout + extra;
    }

    fn exchange(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.send(request)?;
        self.receive()
    }
}

/// Whether an answer from a peer with uid `peer_uid` may be believed: root,
/// or the daemon user when that account exists.
pub fn peer_is_trusted(peer_uid: u32, daemon_uid: Option<u32>) -> bool {
    peer_uid == 0 || Some(peer_uid) == daemon_uid
}

/// The uid of the daemon's account, or `None` (only root trusted) when there
/// is no such user or the lookup fails.
fn daemon_uid(name: &str) -> Option<u32> {
    User::from_name(name)
        .ok()
        .flatten()
        .map(|user| user.uid.as_raw())
}

/// What is left until `deadline`, or a time-out error once nothing is left
/// (a zero SO_RCVTIMEO would mean "wait forever").
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    } else {
        Ok(left)
    }
}

/// Connects a close-on-exec stream socket to `path`, giving up at `deadline`.
///
/// A blocking AF_UNIX connect waits while the listener's backlog is full
/// (a daemon stopped with SIGSTOP, say); Linux bounds that wait by
/// SO_SNDTIMEO, so it is set before `connect`.
fn connect_before(path: &str, deadline: Instant) -> io::Result<OwnedFd> {
    let address = UnixAddr::new(path)?;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let left = timeval(remaining(deadline)?);
        setsockopt(&fd, sockopt::SendTimeout, &left)?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &left)?;
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => return Ok(fd),
            // Interrupted by a signal of the host: the socket's state is
            // unclear, so try again on a fresh one while time is left.
            Err(Errno::EINTR) => continue,
            // SO_SNDTIMEO ran out while the backlog was full.
            Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for the daemon to accept the connection",
                ))
            }
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// A duration as a `timeval`, rounded up to whole microseconds so that a
/// small positive remainder never becomes zero ("no time-out").
fn timeval(duration: Duration) -> TimeVal {
    let micros = duration.as_nanos().div_ceil(1_000).max(1);
    let micros = i64::try_from(micros).unwrap_or(i64::MAX);
    TimeVal::new(micros / 1_000_000, micros % 1_000_000)
}

/// A connected stream whose every read and write gets only the time left
/// until one overall deadline, so a daemon that dribbles bytes cannot
/// stretch the wait.
struct DeadlineStream {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(remaining(self.deadline)?))?;
        self.stream.read(buf).map_err(name_timeout)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream
            .set_write_timeout(Some(remaining(self.deadline)?))?;
        // MSG_NOSIGNAL: a daemon that closed the connection must give us
        // EPIPE, not a SIGPIPE that kills sshd or sudo.
        send(self.stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL)
            .map_err(io::Error::from)
            .map_err(name_timeout)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SO_RCVTIMEO/SO_SNDTIMEO expiry shows as EAGAIN ("Resource temporarily
/// unavailable"), which would puzzle whoever reads the log.
fn name_timeout(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the daemon")
    } else {
        error
    }
}

// The skip rule of every test: under CI, what a test needs and misses fails
// it (tests/src/ci.rs, shared with the tests of the other crates).
#[cfg(test)]
#[path = "../../../tests/src/ci.rs"]
mod ci;

#[cfg(test)]
mod tests {
    use super::ci;
    use super::*;
    use crate::{SecretText, VerifyOutcome};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread;

    /// A fresh directory for one test's socket, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "otpd-proto-test-{}-{name}-{:?}",
                std::process::id(),
                Instant::now()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn socket(&self) -> String {
            self.0.join("otpd.sock").to_str().unwrap().to_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn client(socket: String, timeout: Duration) -> Client {
        Client::new(socket, timeout, "otpd")
    }

    fn verify() -> Request {
        Request::Verify {
            user: "alice".into(),
            code: SecretText::from("123456"),
            service: "sshd".into(),
            rhost: "192.0.2.7".into(),
            ruid: None,
        }
    }

    #[test]
    fn an_answer_is_read_and_the_request_arrives_whole() {
        let dir = TempDir::new("answer");
        let listener = UnixListener::bind(dir.socket()).unwrap();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let request: Request = read_frame(&mut conn).unwrap();
            let answer = Response::Verified {
                outcome: VerifyOutcome::Accepted,
            };
            write_frame(&mut conn, &answer).unwrap();
            request
        });
        let answer = client(dir.socket(), Duration::from_secs(3))
            .ask(&verify())
            .unwrap();
        assert_eq!(
            answer,
            Response::Verified {
                outcome: VerifyOutcome::Accepted
            }
        );
        assert_eq!(server.join().unwrap(), verify());
    }

    #[test]
    fn a_server_that_never_answers_times_out_within_the_deadline() {
        // Like a daemon stopped with SIGSTOP after accepting, or one stuck.
        let dir = TempDir::new("silent");
        let listener = UnixListener::bind(dir.socket()).unwrap();
        let (done, wait_for_client) = std::sync::mpsc::channel::<()>();
        let server = thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            // Hold the connection open, say nothing.
            let _ = wait_for_client.recv();
            drop(conn);
        });
        let timeout = Duration::from_millis(500);
        let started = Instant::now();
        let error = client(dir.socket(), timeout).ask(&verify()).unwrap_err();
        let elapsed = started.elapsed();
        done.send(()).unwrap();
        assert!(
            matches!(&error, ClientError::Exchange { error: ProtoError::Io(e), .. }
                if e.kind() == io::ErrorKind::TimedOut),
            "{error:?}"
        );
        assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
        assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
        assert!(error.to_string().contains(&dir.socket()), "{error}");
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_dribbles_bytes_cannot_stretch_the_deadline() {
        let dir = TempDir::new("dribble");
        let listener = UnixListener::bind(dir.socket()).unwrap();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _: Request = read_frame(&mut conn).unwrap();
            // A huge announced length, then one byte every 100 ms: each
            // read succeeds in time, only the overall deadline stops it.
            if conn.write_all(&1000u32.to_be_bytes()).is_err() {
                return;
            }
            for _ in 0..30 {
                thread::sleep(Duration::from_millis(100));
                if conn.write_all(b" ").is_err() {
                    return;
                }
            }
        });
        let timeout = Duration::from_millis(700);
        let started = Instant::now();
        let error = client(dir.socket(), timeout).ask(&verify()).unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(error, ClientError::Exchange { .. }), "{error:?}");
        assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_listener_that_never_accepts_times_out_within_the_deadline() {
        // Like a daemon stopped with SIGSTOP: the kernel completes the
        // connect (backlog), nobody reads. Fill the backlog so later
        // connects block in the kernel, which SO_SNDTIMEO must bound.
        let dir = TempDir::new("stopped");
        let address = UnixAddr::new(dir.socket().as_str()).unwrap();
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        nix::sys::socket::bind(listener.as_raw_fd(), &address).unwrap();
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
        let mut parked = Vec::new();
        for _ in 0..64 {
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            if connect(fd.as_raw_fd(), &address).is_err() {
                break;
            }
            parked.push(fd);
        }
        let timeout = Duration::from_millis(400);
        let started = Instant::now();
        let error = client(dir.socket(), timeout).ask(&verify()).unwrap_err();
        let elapsed = started.elapsed();
        assert!(!parked.is_empty());
        assert!(
            matches!(&error, ClientError::Connect { error, .. }
                if error.kind() == io::ErrorKind::TimedOut),
            "{error:?}"
        );
        assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
        assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
        drop(listener);
    }

    #[test]
    fn a_path_with_nothing_listening_fails_quickly() {
        let dir = TempDir::new("missing");
        let started = Instant::now();
        let error = client(dir.socket(), Duration::from_secs(3))
            .ask(&verify())
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(500));
        match error {
            ClientError::Connect { error, .. } => {
                assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}")
            }
            other => panic!("{other:?}"),
        }
        // A socket file whose listener is gone: refused.
        drop(UnixListener::bind(dir.socket()).unwrap());
        let error = client(dir.socket(), Duration::from_secs(3))
            .ask(&verify())
            .unwrap_err();
        match error {
            ClientError::Connect { error, .. } => {
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_daemon_of_another_protocol_version_is_refused_by_name() {
        // A daemon of the version before the login conversation answers
        // in its own frames; the client names both versions.
        let dir = TempDir::new("version");
        let listener = UnixListener::bind(dir.socket()).unwrap();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _: Request = read_frame(&mut conn).unwrap();
            let old =
                br#"{"v":1,"body":{"kind":"error","code":"bad_request","message":"bad request"}}"#;
            let mut frame = (old.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(old);
            conn.write_all(&frame).unwrap();
        });
        let error = client(dir.socket(), Duration::from_secs(3))
            .ask(&verify())
            .unwrap_err();
        assert!(
            matches!(
                &error,
                ClientError::Exchange {
                    error: ProtoError::Version { got: 1 },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("protocol version 1 is not supported (this side speaks version 2)"),
            "{error}"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_closes_without_answering_is_an_error() {
        let dir = TempDir::new("closes");
        let listener = UnixListener::bind(dir.socket()).unwrap();
        let server = thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            drop(conn);
        });
        let error = client(dir.socket(), Duration::from_secs(3))
            .ask(&verify())
            .unwrap_err();
        assert!(matches!(error, ClientError::Exchange { .. }), "{error:?}");
        server.join().unwrap();
    }

    /// Set in the environment of [`untrusted_listener_helper`]'s process.
    const HELPER_SOCKET_ENV: &str = "PAM_OTPD_TEST_UNTRUSTED_SOCKET";

    /// Not a test on its own: re-run as `nobody` by
    /// `an_untrusted_socket_owner_is_refused_before_the_code_is_sent`, it
    /// plays a fake daemon that would accept any code.
    #[test]
    #[ignore = "the listener of an_untrusted_socket_owner_is_refused_before_the_code_is_sent, run by it as nobody"]
    fn untrusted_listener_helper() {
        let path = std::env::var(HELPER_SOCKET_ENV)
            .unwrap_or_else(|_| panic!("run by its test, with {HELPER_SOCKET_ENV} set"));
        let listener = UnixListener::bind(&path).unwrap();
        for conn in listener.incoming().take(2) {
            let mut conn = conn.unwrap();
            if read_frame::<Request>(&mut conn).is_ok() {
                let answer = Response::Verified {
                    outcome: VerifyOutcome::Accepted,
                };
                let _ = write_frame(&mut conn, &answer);
            }
        }
    }

    #[test]
    fn an_untrusted_socket_owner_is_refused_before_the_code_is_sent() {
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        if !nix::unistd::Uid::effective().is_root() {
            ci::skip(
                "an_untrusted_socket_owner_is_refused_before_the_code_is_sent",
                &format!("needs root to run a listener as uid {NOBODY}"),
            );
            return;
        }
        let dir = TempDir::new("untrusted");
        std::os::unix::fs::chown(&dir.0, Some(NOBODY), Some(NOBODY)).unwrap();
        let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "client::tests::untrusted_listener_helper",
                "--ignored",
                "--nocapture",
            ])
            .env(HELPER_SOCKET_ENV, dir.socket())
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !std::path::Path::new(&dir.socket()).exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "helper did not start"
            );
            thread::sleep(Duration::from_millis(20));
        }

        let mut untrusting = client(dir.socket(), Duration::from_secs(3));
        untrusting.trust.daemon_user = "no-such-user-for-pam-otpd".into();
        match untrusting.ask(&verify()) {
            Err(ClientError::UntrustedPeer { socket, uid, .. }) => {
                assert_eq!((socket, uid), (dir.socket(), NOBODY))
            }
            other => panic!("{other:?}"),
        }

        // The same listener is believed once its uid is the daemon user's.
        let nobody = User::from_uid(NOBODY.into()).unwrap().map(|user| user.name);
        if let Some(name) = nobody {
            let mut trusting = client(dir.socket(), Duration::from_secs(3));
            trusting.trust.daemon_user = name;
            assert_eq!(
                trusting.ask(&verify()).unwrap(),
                Response::Verified {
                    outcome: VerifyOutcome::Accepted
                }
            );
        } else {
            // Let the helper's second accept finish (it ends then).
            let _ = untrusting.ask(&verify());
            ci::skip(
                "an_untrusted_socket_owner_is_refused_before_the_code_is_sent (its trusting half)",
                &format!("uid {NOBODY} has no name in the user database"),
            );
        }
        assert!(helper.wait().unwrap().success());
    }

    #[test]
    fn only_root_or_the_daemon_user_is_trusted() {
        assert!(peer_is_trusted(0, None));
        assert!(peer_is_trusted(0, Some(998)));
        assert!(peer_is_trusted(998, Some(998)));
        assert!(!peer_is_trusted(1000, Some(998)));
        assert!(!peer_is_trusted(998, None));
        assert!(!peer_is_trusted(65534, None));
    }

    #[test]
    fn the_daemon_user_is_looked_up_by_name() {
        assert_eq!(daemon_uid("root"), Some(0));
        assert_eq!(daemon_uid("no-such-user-for-pam-otpd"), None);
        assert_eq!(daemon_uid("bad\0name"), None);
    }

    #[test]
    fn untrusted_peer_error_names_the_socket_and_uid() {
        let error = ClientError::UntrustedPeer {
            socket: "/run/otpd/otpd.sock".into(),
            uid: 1000,
            daemon_user: "otpd".into(),
        };
        assert_eq!(
            error.to_string(),
            "refusing to trust /run/otpd/otpd.sock: it is served by uid 1000, which is \
             neither root nor daemon_user \"otpd\"; the code was not sent"
        );
    }

    #[test]
    fn timevals_never_round_down_to_forever() {
        assert_eq!(timeval(Duration::from_nanos(1)), TimeVal::new(0, 1));
        assert_eq!(
            timeval(Duration::from_millis(2500)),
            TimeVal::new(2, 500_000)
        );
    }
}
