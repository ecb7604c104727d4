//! A stand-in for the other end of the otpd socket, for the trust tests.
//!
//! `otpd-test-peer serve SOCKET`: an impostor daemon that binds SOCKET (mode
//! 0666) and speaks the login conversation as a forger would: it asks for
//! the code and ends every login with success (and answers any other
//! request `Verified { Accepted }`). Run as a non-root uid, it is what a
//! local user could put on a socket path; the module must not believe it.
//!
//! `otpd-test-peer request SOCKET JSON`: sends one request body (raw JSON,
//! so that the daemon's own checks are what is tested) and prints the
//! response body as JSON. Exit 0 when a response came, 3 otherwise.
//!
//! `otpd-test-peer hold SOCKET USER N SECONDS`: opens N connections, begins
//! a login of USER on each (the daemon's first step is its answer), prints `answered A of N, K kept open` (K: those
//! the daemon has not closed to make room for newer ones) and keeps them
//! open for SECONDS: a local user trying to take every connection slot.

use otpd_proto::{LoginOutcome, Prompt, Request, Response, Step, VerifyOutcome};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[1..] {
        ["serve", socket] => serve(socket),
        ["request", socket, body] => request(socket, body),
        ["hold", socket, user, n, seconds] => match (n.parse(), seconds.parse()) {
            (Ok(n), Ok(seconds)) => hold(socket, user, n, seconds),
            _ => ExitCode::from(2),
        },
        _ => {
            eprintln!(
                "usage: otpd-test-peer serve SOCKET | request SOCKET JSON | hold SOCKET USER N SECONDS"
            );
            ExitCode::from(2)
        }
    }
}

fn serve(socket: &str) -> ExitCode {
    let _ = std::fs::remove_file(socket);
    let listener = match UnixListener::bind(socket) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("otpd-test-peer: cannot bind {socket}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)) {
        eprintln!("otpd-test-peer: chmod {socket}: {e}");
        return ExitCode::from(1);
    }
    println!("otpd-test-peer: listening on {socket}");
    for stream in listener.incoming().flatten() {
        answer(stream);
    }
    ExitCode::SUCCESS
}

fn answer(mut stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    while let Ok(request) = otpd_proto::read_frame::<Request>(&mut stream) {
        let response = match request {
            // An impostor that speaks the login conversation well: it asks
            // for the code and accepts any, so that only the module's
            // check of who serves the socket can stop it.
            Request::Login(_) => Response::Step(Step::Prompt {
                prompt: Prompt::Code { sms: false },
            }),
            Request::Answer { .. } => Response::Step(Step::End {
                outcome: LoginOutcome::Success,
                forward_password: false,
            }),
            _ => Response::Verified {
                outcome: VerifyOutcome::Accepted,
            },
        };
        eprintln!("otpd-test-peer: answered {response:?}");
        if otpd_proto::write_frame(&mut stream, &response).is_err() {
            return;
        }
    }
}

fn request(socket: &str, body: &str) -> ExitCode {
    let body: serde_json::Value = match serde_json::from_str(body) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("otpd-test-peer: the request is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("otpd-test-peer: cannot connect to {socket}: {e}");
            return ExitCode::from(3);
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = otpd_proto::write_frame(&mut stream, &body) {
        eprintln!("otpd-test-peer: send: {e}");
        return ExitCode::from(3);
    }
    match otpd_proto::read_frame::<Response>(&mut stream) {
        Ok(response) => {
            println!(
                "{}",
                serde_json::to_string(&response).expect("a response serialises")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otpd-test-peer: no response: {e}");
            ExitCode::from(3)
        }
    }
}

fn hold(socket: &str, user: &str, n: usize, seconds: u64) -> ExitCode {
    let mut held = Vec::new();
    let mut answered = 0;
    for _ in 0..n {
        let Ok(mut stream) = UnixStream::connect(socket) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = otpd_tests::client::login_start(user);
        if otpd_proto::write_frame(&mut stream, &request).is_ok()
            && otpd_proto::read_frame::<Response>(&mut stream).is_ok()
        {
            answered += 1;
        }
        held.push(stream);
    }
    // Closes the daemon decided on may take a moment to arrive: count
    // until the number stops changing (3 s at most).
    let mut open = kept_open(&held);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        let now = kept_open(&held);
        if now == open {
            break;
        }
        open = now;
    }
    println!("answered {answered} of {n}, {open} kept open");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(seconds));
    drop(held);
    ExitCode::SUCCESS
}

/// How many of `held` the daemon has not closed.
fn kept_open(held: &[UnixStream]) -> usize {
    use std::io::Read;
    held.iter()
        .filter(|stream| {
            let _ = stream.set_nonblocking(true);
            let mut reader: &UnixStream = stream;
            matches!(
                reader.read(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            )
        })
        .count()
}
