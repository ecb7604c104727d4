//! Abusive clients (design.md §6): while idle connections are hoarded, slow
//! writers trickle one byte a second and a stream of garbage hits the
//! socket, as root and as other uids, well-behaved verifications keep
//! getting correct answers. Their latency is printed before and during the
//! attack, never asserted. And the decision looks the same from the socket
//! for "no such user" and "wrong code" (no enumeration of enrolled users).
//!
//! The non-root attackers and probes are this very test binary, run again
//! as another uid (`CommandExt::uid`) with the ignored test `non_root_side`
//! selected and its orders in `OTPD_ABUSE_SIDE`.

use otpd_proto::{
    decode_payload, encode_frame, payload_len, ErrorCode, Request, Response, SecretText,
    VerifyOutcome, FRAME_HEADER_LEN, MAX_FRAME_LEN, MAX_REQUEST_LEN,
};
use otpd_tests::process::{self, NOBODY_UID};
use otpd_tests::{code_at, require, settled_now, Limits, PamOutcome, Program, TestEnv};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a well-behaved client (the PAM module, `timeout=5`) waits at most
/// for an answer; a verification without a correct answer within it fails
/// the campaign.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// Idle connections root's hoarder keeps open.
const IDLE_CONNECTIONS: usize = 1000;
/// Root's slow writers (one byte a second each).
const SLOW_WRITERS: usize = 6;
/// How long the attack lasts: longer than the daemon's idle time-out
/// (10 s), so that hoarded connections are closed and opened again.
const ATTACK: Duration = Duration::from_secs(14);
/// The uids of the non-root attackers; the first also hoards.
const NON_ROOT_UIDS: [u32; 3] = [NOBODY_UID, 65533, 65532];
/// Connections each non-root attacker tries to hold.
const NON_ROOT_HOLD: usize = 24;
/// The connections one non-root uid may have at once (`per_uid` of the
/// listener's slot limits).
const PER_UID_SHARE: u64 = 16;
/// The environment variable that turns `non_root_side` into an attacker.
const SIDE_ENV: &str = "OTPD_ABUSE_SIDE";
/// Seconds per code of the user whose valid code the attackers carry and
/// the test asks about at its end ([`enroll_with_lasting_code`]).
const LONG_PERIOD: u64 = 300;

const PROGRAMS: &[Program] = &[
    Program::Pamtester,
    Program::PamWrapper,
    Program::Oathtool,
    Program::Setpriv,
];

// ---------------------------------------------------------------------------
// Connections

/// Connects within `deadline`. A blocking AF_UNIX connect waits while the
/// listener's backlog is full, bounded only by SO_SNDTIMEO, so it is set
/// before `connect` (as the module does).
fn connect_before(socket: &Path, deadline: Instant) -> io::Result<UnixStream> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let path = socket.as_os_str().as_bytes();
    // SAFETY: all-zero bytes are a valid sockaddr_un (plain integers).
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if path.len() >= address.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in address.sun_path.iter_mut().zip(path) {
        *to = *from as libc::c_char;
    }
    // SAFETY: socket(2) takes plain integers and touches no memory of ours.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval {
        tv_sec: left.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(left.subsec_micros().max(1)),
    };
    // SAFETY: the option value points at a timeval that outlives the call,
    // and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            std::ptr::addr_of!(timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `address` is an initialised sockaddr_un and the length passed
    // is its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            std::ptr::addr_of!(address).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.kind() {
            io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
            _ => e,
        });
    }
    Ok(UnixStream::from(fd))
}

/// Reads one whole frame (header included), raw, before `deadline`.
fn read_raw_frame(stream: &mut UnixStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    read_exact_before(stream, &mut frame, deadline)?;
    let header: [u8; FRAME_HEADER_LEN] = frame[..].try_into().expect("header length");
    let len = payload_len(header, MAX_FRAME_LEN)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    frame.resize(FRAME_HEADER_LEN + len, 0);
    read_exact_before(stream, &mut frame[FRAME_HEADER_LEN..], deadline)?;
    Ok(frame)
}

fn read_exact_before(stream: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_close(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// One request and its answer on a new connection, as the module does it,
/// within [`ANSWER_DEADLINE`].
fn ask(socket: &Path, request: &Request) -> Result<Response, String> {
    otpd_tests::client::ask(socket, request, ANSWER_DEADLINE)
}

/// What the daemon did with bytes an attacker sent.
#[derive(Debug)]
enum Reaction {
    /// A whole frame came back (raw, header included).
    Answered(Vec<u8>),
    /// The daemon closed the connection without an answer.
    Closed,
    /// Neither within the deadline.
    Silent,
    /// The connection could not be made.
    Unreachable(io::ErrorKind),
}

/// Sends `bytes` on a new connection (then, with `half_close`, shuts the
/// writing side as a truncated sender would) and waits for the reaction.
fn poke(socket: &Path, bytes: &[u8], half_close: bool) -> Reaction {
    let deadline = Instant::now() + ANSWER_DEADLINE;
    let mut stream = match connect_before(socket, deadline) {
        Ok(s) => s,
        Err(e) => return Reaction::Unreachable(e.kind()),
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    // The daemon may close before taking every byte: that is a reaction too.
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    match read_raw_frame(&mut stream, deadline) {
        Ok(frame) => Reaction::Answered(frame),
        Err(e) if is_close(&e) => Reaction::Closed,
        Err(_) => Reaction::Silent,
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

fn verify_frame(user: &str, code: &str, rhost: &str) -> Vec<u8> {
    encode_frame(&Request::Verify {
        user: user.to_owned(),
        code: SecretText::from(code),
        service: "abuse".into(),
        rhost: rhost.into(),
        ruid: None,
    })
    .expect("encode a verify")
    .to_vec()
}

// ---------------------------------------------------------------------------
// Counting and figures

/// Counts of what the attackers did and saw, by name.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, what: impl Into<String>, n: u64) {
        *self.0.lock().unwrap().entry(what.into()).or_default() += n;
    }

    fn max(&self, what: impl Into<String>, value: u64) {
        let mut map = self.0.lock().unwrap();
        let entry = map.entry(what.into()).or_default();
        *entry = (*entry).max(value);
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// Answers an attacker should never have had.
#[derive(Default)]
struct Violations(Mutex<Vec<String>>);

impl Violations {
    fn push(&self, what: String) {
        let mut v = self.0.lock().unwrap();
        if v.len() < 50 {
            v.push(what);
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// `p50 p90 p99 max (n)` of `samples`, in milliseconds.
fn summary(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64() * 1000.0
    };
    format!(
        "n={:<5} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        sorted.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        sorted[sorted.len() - 1].as_secs_f64() * 1000.0
    )
}

/// A cheap deterministic generator for the random bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(
            Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

// ---------------------------------------------------------------------------
// Attackers (run as root from threads, and as other uids by `non_root_side`)

/// Keeps `target` idle connections open: whenever the daemon closes one,
/// another is opened (at most 200 every 50 ms).
fn hoard(socket: &Path, target: usize, stop: &AtomicBool, tally: &Tally) {
    let mut held: Vec<(UnixStream, Instant)> = Vec::with_capacity(target);
    let mut probe = [0u8; 64];
    let mut late_ages = Vec::new();
    let mut scan = |held: &mut Vec<(UnixStream, Instant)>| {
        held.retain_mut(|(stream, opened)| {
            let closed = match stream.read(&mut probe) {
                Ok(0) => true,
                Ok(_) => {
                    tally.add("idle: got bytes without asking", 1);
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            if closed {
                let age = opened.elapsed();
                if age < Duration::from_millis(500) {
                    tally.add("idle: closed by the daemon within 0.5 s", 1);
                } else {
                    tally.add("idle: closed by the daemon after 0.5 s or more", 1);
                    late_ages.push(age);
                }
            }
            !closed
        });
    };
    while !stop.load(Ordering::Relaxed) {
        scan(&mut held);
        let mut opened = 0;
        while held.len() < target && opened < 200 && !stop.load(Ordering::Relaxed) {
            opened += 1;
            match connect_before(socket, Instant::now() + Duration::from_secs(1)) {
                Ok(stream) => {
                    stream.set_nonblocking(true).expect("set_nonblocking");
                    held.push((stream, Instant::now()));
                    tally.add("idle: opened", 1);
                }
                Err(e) => {
                    tally.add(format!("idle: connect failed ({:?})", e.kind()), 1);
                    break;
                }
            }
        }
        tally.max("idle: most held at once", held.len() as u64);
        sleep_unless(stop, Duration::from_millis(50));
    }
    // What the daemon lets it keep: closes it has decided may take a
    // moment to arrive, so scan until they stop coming (3 s at most).
    let settled = Instant::now();
    loop {
        let before = held.len();
        std::thread::sleep(Duration::from_millis(100));
        scan(&mut held);
        if held.len() == before || settled.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    tally.add("idle: still open at the end", held.len() as u64);
    if let Some(longest) = late_ages.iter().max() {
        tally.max("idle: longest-lived before a close (s)", longest.as_secs());
        tally.max(
            "idle: shortest of those (ms)",
            late_ages.iter().min().unwrap().as_millis() as u64,
        );
    }
}

/// Sends `frame` one byte a second on one connection after another.
fn slow_writer(socket: &Path, frame: &[u8], stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match connect_before(socket, Instant::now() + Duration::from_secs(1)) {
            Ok(s) => s,
            Err(e) => {
                tally.add(format!("slow: connect failed ({:?})", e.kind()), 1);
                sleep_unless(stop, Duration::from_secs(1));
                continue;
            }
        };
        tally.add("slow: connections", 1);
        stream.set_nonblocking(true).expect("set_nonblocking");
        let started = Instant::now();
        let mut sent = 0;
        let mut reply = Vec::new();
        let ended = loop {
            if stop.load(Ordering::Relaxed) {
                break "slow: still open when the attack ended";
            }
            let mut buf = [0u8; 512];
            match stream.read(&mut buf) {
                Ok(0) => break "slow: dropped by the daemon",
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break "slow: dropped by the daemon",
            }
            if sent == frame.len() {
                break "slow: whole frame sent";
            }
            match stream.write(&frame[sent..=sent]) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break "slow: dropped by the daemon",
            }
            sleep_unless(stop, Duration::from_secs(1));
        };
        tally.add(ended, 1);
        if ended == "slow: dropped by the daemon" {
            tally.max(
                "slow: longest time before a drop (s)",
                started.elapsed().as_secs(),
            );
            tally.max("slow: most bytes sent before a drop", sent as u64);
            if reply.len() > FRAME_HEADER_LEN {
                tally.add("slow: told why before the drop", 1);
            }
        }
    }
}

/// The garbage an attacker sends, one case per connection, in turn.
/// `alice_code` is a code valid now for `alice`: an unknown version or
/// digits from another script must not spend it.
fn garbage_cases(alice: &str, alice_code: &str, round: u64) -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (round + 1));
    let random_len = 1 + (rng.next() % 4096) as usize;
    let verify_json = |user: &str, code: &str| {
        format!(
            r#"{{"op":"verify","user":"{user}","code":"{code}","service":"abuse","rhost":"192.0.2.66"}}"#
        )
    };
    let fullwidth: String = alice_code
        .chars()
        .map(|c| char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap())
        .collect();
    let long_name = "a".repeat(10 * 1024);
    let long_multibyte = "é".repeat(5 * 1024);
    let v = |version: &str| {
        frame(
            format!(
                r#"{{"v":{version},"body":{}}}"#,
                verify_json(alice, alice_code)
            )
            .as_bytes(),
        )
    };
    let over_cap = {
        let mut bytes = ((MAX_REQUEST_LEN + 1) as u32).to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(b' ', MAX_REQUEST_LEN + 1));
        bytes
    };
    let whole = verify_frame(alice, alice_code, "192.0.2.66");
    // (kind, bytes, half-close after sending)
    vec![
        ("random bytes", rng.bytes(random_len), true),
        (
            "random bytes after a small header",
            [&[0u8, 0, 0, 40][..], &rng.bytes(40)].concat(),
            true,
        ),
        (
            "over the size cap: u32::MAX header",
            u32::MAX.to_be_bytes().to_vec(),
            false,
        ),
        ("over the size cap: 16 KiB + 1 sent", over_cap, true),
        (
            "over the size cap: 4 MiB header",
            [&(MAX_FRAME_LEN as u32).to_be_bytes()[..], &[b'{'; 1024]].concat(),
            true,
        ),
        (
            "truncated frame: half a payload",
            whole[..whole.len() / 2].to_vec(),
            true,
        ),
        ("truncated frame: half a header", whole[..2].to_vec(), true),
        ("the previous version 1", v("1"), false),
        ("unknown version 3", v("3"), false),
        ("unknown version 0", v("0"), false),
        ("unknown version 65535", v("65535"), false),
        ("version as a string", v("\"1\""), false),
        (
            "non-UTF-8 user name: raw bytes",
            frame(
                &[
                    &br#"{"v":2,"body":{"op":"verify","user":"al"#[..],
                    b"\xff\xfe",
                    br#"ice","code":"000000","service":"abuse","rhost":""}}"#,
                ]
                .concat(),
            ),
            false,
        ),
        (
            "non-UTF-8 user name: lone surrogate",
            frame(
                format!(
                    r#"{{"v":2,"body":{}}}"#,
                    verify_json("al\\udc80ice", "000000")
                )
                .as_bytes(),
            ),
            false,
        ),
        (
            "non-UTF-8 user name: overlong encoding",
            frame(
                &[
                    &br#"{"v":2,"body":{"op":"unlock","user":"al"#[..],
                    b"\xc0\xafice",
                    br#""}}"#,
                ]
                .concat(),
            ),
            false,
        ),
        (
            "10 KB user name",
            verify_frame(&long_name, alice_code, "192.0.2.66"),
            false,
        ),
        (
            "10 KB user name, multibyte",
            verify_frame(&long_multibyte, alice_code, "192.0.2.66"),
            false,
        ),
        (
            "codes with letters: 12a456",
            verify_frame(alice, "12a456", "192.0.2.66"),
            false,
        ),
        (
            "codes with letters: abcdef",
            verify_frame(alice, "abcdef", "192.0.2.66"),
            false,
        ),
        (
            "codes with letters: fullwidth digits",
            verify_frame(alice, &fullwidth, "192.0.2.66"),
            false,
        ),
        (
            "codes with letters: hex",
            verify_frame(alice, "0x1e240", "192.0.2.66"),
            false,
        ),
    ]
}

/// Sends garbage until `stop`, one case every `pause`; every reaction must
/// be an error with a reason, a refused verification, or a close.
fn garbage(
    socket: &Path,
    alice: &str,
    alice_code: &str,
    pause: Duration,
    stop: &AtomicBool,
    tally: &Tally,
    violations: &Violations,
) {
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        for (kind, bytes, half_close) in garbage_cases(alice, alice_code, round) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let reaction = poke(socket, &bytes, half_close);
            let family = kind.split(':').next().unwrap_or(kind);
            tally.add(format!("garbage: {family}"), 1);
            match &reaction {
                Reaction::Answered(frame) => {
                    match decode_payload::<Response>(&frame[FRAME_HEADER_LEN..]) {
                        Ok(Response::Error { code, message }) => {
                            tally.add(format!("garbage → error {code:?}"), 1);
                            if message.trim().is_empty() {
                                violations.push(format!("{kind}: an error without a reason"));
                            }
                        }
                        Ok(Response::Verified { outcome })
                            if outcome != VerifyOutcome::Accepted =>
                        {
                            tally.add(format!("garbage → verified {outcome:?}"), 1);
                        }
                        other => violations.push(format!("{kind}: answered {other:?}")),
                    }
                }
                Reaction::Closed => tally.add("garbage → closed without an answer", 1),
                Reaction::Silent => tally.add("garbage → no reaction within 5 s", 1),
                Reaction::Unreachable(e) => {
                    tally.add(format!("garbage → connect failed ({e:?})"), 1)
                }
            }
            sleep_unless(stop, pause);
        }
        round += 1;
    }
}

/// Orders for one attacker: what `non_root_side` does, and root's
/// threads too.
struct AttackPlan<'a> {
    socket: &'a Path,
    hold: usize,
    slow_writers: usize,
    garbage_pause: Duration,
    alice: &'a str,
    alice_code: &'a str,
    slow_frame: Vec<u8>,
}

/// Runs every attacker of `plan` until `stop`.
fn attack<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    plan: &'s AttackPlan<'s>,
    stop: &'s AtomicBool,
    tally: &'s Tally,
    violations: &'s Violations,
) -> Vec<std::thread::ScopedJoinHandle<'s, ()>> {
    let mut threads = Vec::new();
    if plan.hold > 0 {
        threads.push(scope.spawn(move || hoard(plan.socket, plan.hold, stop, tally)));
    }
    for _ in 0..plan.slow_writers {
        threads.push(scope.spawn(move || slow_writer(plan.socket, &plan.slow_frame, stop, tally)));
    }
    threads.push(scope.spawn(move || {
        garbage(
            plan.socket,
            plan.alice,
            plan.alice_code,
            plan.garbage_pause,
            stop,
            tally,
            violations,
        )
    }));
    threads
}

// ---------------------------------------------------------------------------
// The non-root side: this binary, run again as another uid

/// This test binary where any uid can run it: a hard link in the test dir,
/// or a copy when that is on another file system. A link has no write
/// descriptor that a child forked meanwhile by another test could still
/// hold when the binary is run (exec would fail with ETXTBSY).
fn side_binary(env: &TestEnv) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = env.dir.join("bin");
    std::fs::create_dir_all(&bin).expect("create the bin dir");
    let link = bin.join("abuse-side");
    if link.exists() || std::fs::hard_link(&exe, &link).is_ok() {
        return link;
    }
    env.copy_for_nobody(&exe, "abuse-side", 0o755)
}

/// A running non-root side and its collected output.
struct Side {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

/// Starts this test binary as `uid` running `non_root_side` with `orders`.
fn start_side(env: &TestEnv, uid: u32, orders: &Value) -> Side {
    let binary = side_binary(env);
    let mut attempts = 0;
    let mut child = loop {
        let mut cmd = Command::new(&binary);
        // std drops the supplementary groups too when root sets a uid.
        cmd.uid(uid)
            .gid(uid)
            .current_dir(&env.dir)
            .env(SIDE_ENV, orders.to_string())
            .args([
                "--ignored",
                "--exact",
                "non_root_side",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match cmd.spawn() {
            Ok(child) => break child,
            // A copy (see side_binary) may still be open for writing in a
            // child that another test forked and that has not exec'd yet.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 40 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot run {} as uid {uid}: {e}", binary.display()),
        }
    };
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    Side {
        stdout: collect(Box::new(child.stdout.take().expect("piped stdout"))),
        stderr: collect(Box::new(child.stderr.take().expect("piped stderr"))),
        child,
    }
}

/// Waits (until `deadline`) for a side and returns the report it printed
/// (`abuse-side-report {json}`).
fn side_report(mut side: Side, deadline: Duration) -> Value {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = side.child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = side.child.kill();
            let _ = side.child.wait();
            panic!("a non-root side ran longer than {} s", deadline.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |h: JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap()).into_owned();
    let (stdout, stderr) = (text(side.stdout), text(side.stderr));
    let shown = || format!("{status}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    assert!(status.success(), "the non-root side failed: {}", shown());
    let line = stdout
        .lines()
        .find_map(|line| {
            line.split_once("abuse-side-report ")
                .map(|(_, report)| report)
        })
        .unwrap_or_else(|| panic!("the non-root side printed no report: {}", shown()));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
#[ignore = "the non-root half of the other tests, run by them as another uid"]
fn non_root_side() {
    let Ok(orders) = std::env::var(SIDE_ENV) else {
        return;
    };
    let orders: Value = serde_json::from_str(&orders).expect("orders are JSON");
    let socket = PathBuf::from(orders["socket"].as_str().expect("socket"));
    let report = match orders["role"].as_str() {
        Some("attack") => side_attack(&socket, &orders),
        Some("probe") => side_probe(&socket, &orders),
        other => panic!("unknown role {other:?}"),
    };
    println!("\nabuse-side-report {report}");
}

fn side_attack(socket: &Path, orders: &Value) -> Value {
    let alice = orders["alice"].as_str().expect("alice");
    let alice_code = orders["alice_code"].as_str().expect("alice_code");
    let plan = AttackPlan {
        socket,
        hold: orders["hold"].as_u64().expect("hold") as usize,
        slow_writers: orders["slow_writers"].as_u64().expect("slow_writers") as usize,
        garbage_pause: Duration::from_millis(orders["garbage_pause_ms"].as_u64().expect("pause")),
        alice,
        alice_code,
        slow_frame: verify_frame(alice, alice_code, ""),
    };
    let (stop, tally, violations) = (
        AtomicBool::new(false),
        Tally::default(),
        Violations::default(),
    );
    // Another user's valid code: refused, and not spent. Asked before this
    // uid's own hoarder may close the connection to make room.
    match ask(
        socket,
        &Request::Verify {
            user: alice.into(),
            code: SecretText::from(alice_code),
            service: "abuse".into(),
            rhost: String::new(),
            ruid: None,
        },
    ) {
        Ok(Response::Error {
            code: ErrorCode::PermissionDenied,
            ..
        }) => tally.add("verify another user → permission denied", 1),
        other => violations.push(format!("verify {alice} as a non-root uid: {other:?}")),
    }
    std::thread::scope(|scope| {
        let threads = attack(scope, &plan, &stop, &tally, &violations);
        std::thread::sleep(Duration::from_secs(
            orders["seconds"].as_u64().expect("seconds"),
        ));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("an attacker thread panicked");
        }
    });
    json!({ "tally": tally.snapshot(), "violations": violations.take() })
}

/// Asks, `rounds` times each, to verify (and ask the status of) a user who
/// exists and one who does not; reports the distinct raw answers, with the
/// name replaced by `<USER>`, and the latencies.
fn side_probe(socket: &Path, orders: &Value) -> Value {
    let rounds = orders["rounds"].as_u64().expect("rounds");
    let code = orders["code"].as_str().expect("code");
    let mut answers: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for round in 0..rounds {
        for user in orders["users"].as_array().expect("users") {
            let user = user.as_str().expect("a user name");
            for (op, bytes) in [
                ("verify", verify_frame(user, code, "")),
                (
                    "login",
                    encode_frame(&otpd_tests::client::login_start(user))
                        .unwrap()
                        .to_vec(),
                ),
            ] {
                let key = format!("{op} {user}");
                let started = Instant::now();
                let reaction = poke(socket, &bytes, false);
                let took = started.elapsed();
                let shown = match reaction {
                    Reaction::Answered(frame) => {
                        // The name the caller sent is all that may differ.
                        let text = String::from_utf8_lossy(&frame[FRAME_HEADER_LEN..])
                            .replace(user, "<USER>");
                        format!("{} bytes: {text}", frame.len())
                    }
                    other => format!("{other:?}"),
                };
                *answers
                    .entry(key.clone())
                    .or_default()
                    .entry(shown)
                    .or_default() += 1;
                if round > 0 {
                    latencies
                        .entry(key)
                        .or_default()
                        .push(took.as_micros() as u64);
                }
            }
        }
    }
    json!({ "answers": answers, "latencies_us": latencies })
}

// ---------------------------------------------------------------------------
// The well-behaved side

/// What the well-behaved clients verify: valid codes of many users (each
/// may be accepted once per time step, the replay rule), and a wrong code
/// of one user.
struct Workload {
    users: Mutex<Vec<PoolUser>>,
    wrong_user: String,
    wrong_code: String,
}

struct PoolUser {
    name: String,
    enrollment: otpd_proto::Enrollment,
    last_step: u64,
}

impl PoolUser {
    fn code_at(&self, unix_time: u64) -> String {
        let e = &self.enrollment;
        code_at(
            e.secret_base32.expose(),
            e.algorithm.as_str(),
            u32::from(e.digits),
            e.period,
            unix_time,
        )
    }

    fn step(&self, unix_time: u64) -> u64 {
        unix_time / self.enrollment.period
    }
}

impl Workload {
    /// Enrols `n` users straight over the socket (faster than the CLI),
    /// each confirmed with the code of the step before now.
    fn enroll(env: &TestEnv, n: usize, wrong_user: &str, wrong_code: &str) -> Workload {
        let mut users = Vec::new();
        for i in 0..n {
            let name = format!("well{i:02}");
            let enrollment = match ask(
                &env.socket,
                &Request::Enroll(otpd_proto::EnrollParams {
                    user: name.clone(),
                    ..Default::default()
                }),
            ) {
                Ok(Response::Enrolled(e)) => *e,
                other => panic!("enrol {name}: {other:?}"),
            };
            // The code of the step before the one it is sent in: at least
            // 2 s left in this step, so that it is still inside the window
            // when the daemon checks it.
            let now = settled_now(enrollment.period, 2);
            let user = PoolUser {
                name: name.clone(),
                last_step: (now - enrollment.period) / enrollment.period,
                enrollment,
            };
            let first = user.code_at(now - user.enrollment.period);
            match ask(
                &env.socket,
                &Request::Confirm {
                    user: name.clone(),
                    code: SecretText::from(first.as_str()),
                },
            ) {
                Ok(Response::Confirmed { .. }) => {}
                other => panic!("confirm {name}: {other:?}"),
            }
            users.push(user);
        }
        Workload {
            users: Mutex::new(users),
            wrong_user: wrong_user.to_owned(),
            wrong_code: wrong_code.to_owned(),
        }
    }

    /// A user whose code of now has not been spent, and that code.
    fn take(&self) -> Option<(String, String)> {
        let now = otpd_tests::totp::unix_now();
        let mut users = self.users.lock().unwrap();
        let user = users.iter_mut().find(|u| u.last_step < u.step(now))?;
        user.last_step = user.step(now);
        Some((user.name.clone(), user.code_at(now)))
    }
}

/// Latencies of the well-behaved clients and what went wrong for them.
#[derive(Default)]
struct WellBehaved {
    valid: Mutex<Vec<Duration>>,
    wrong: Mutex<Vec<Duration>>,
    pam: Mutex<Vec<Duration>>,
    wrong_attempts: AtomicUsize,
    failures: Violations,
}

impl WellBehaved {
    fn all_direct(&self) -> Vec<Duration> {
        let mut all = self.valid.lock().unwrap().clone();
        all.extend(self.wrong.lock().unwrap().iter());
        all
    }
}

/// Verifies over the socket until `stop` (or `count` verifications): every
/// fourth with a valid code, the others with the wrong one; each must get
/// the right answer within 5 s.
fn verify_loop(
    socket: &Path,
    work: &Workload,
    pause: Duration,
    stop: &AtomicBool,
    count: Option<usize>,
    out: &WellBehaved,
) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| i < c) {
        let valid = if i % 4 == 0 { work.take() } else { None };
        let (user, code, expected) = match &valid {
            Some((user, code)) => (user.as_str(), code.as_str(), VerifyOutcome::Accepted),
            None => (
                work.wrong_user.as_str(),
                work.wrong_code.as_str(),
                VerifyOutcome::WrongCode,
            ),
        };
        let request = Request::Verify {
            user: user.into(),
            code: SecretText::from(code),
            service: "sshd".into(),
            rhost: "198.51.100.7".into(),
            ruid: None,
        };
        if expected == VerifyOutcome::WrongCode {
            out.wrong_attempts.fetch_add(1, Ordering::SeqCst);
        }
        let started = Instant::now();
        let answer = ask(socket, &request);
        let took = started.elapsed();
        match answer {
            Ok(Response::Verified { outcome }) if outcome == expected => {
                let samples = if expected == VerifyOutcome::Accepted {
                    &out.valid
                } else {
                    &out.wrong
                };
                samples.lock().unwrap().push(took);
            }
            other => out.failures.push(format!(
                "verify {user} ({expected:?} expected): {other:?} after {} ms",
                took.as_millis()
            )),
        }
        i += 1;
        sleep_unless(stop, pause);
    }
}

/// Logs in through libpam (pamtester, the real module) until `stop`,
/// alternating a valid code of a pool user and `wrong_code` for `wrong_user`.
fn pam_loop(
    env: &TestEnv,
    work: &Workload,
    stop: &AtomicBool,
    count: Option<usize>,
    out: &WellBehaved,
) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| i < c) {
        let valid = if i % 2 == 0 { work.take() } else { None };
        let (user, code, expected) = match &valid {
            Some((user, code)) => (user.as_str(), code.as_str(), PamOutcome::Success),
            None => (
                work.wrong_user.as_str(),
                work.wrong_code.as_str(),
                PamOutcome::AuthErr,
            ),
        };
        if expected == PamOutcome::AuthErr {
            out.wrong_attempts.fetch_add(1, Ordering::SeqCst);
        }
        let login = env.pam_login(user, code, "198.51.100.8", "timeout=5");
        if login.outcome == expected {
            out.pam.lock().unwrap().push(login.elapsed());
        } else {
            out.failures.push(format!(
                "PAM login of {user} ({expected:?} expected): {:?} after {} ms: {}",
                login.outcome,
                login.elapsed().as_millis(),
                login.module_messages()
            ));
        }
        i += 1;
        sleep_unless(stop, Duration::from_millis(400));
    }
}

// ---------------------------------------------------------------------------
// The tests

/// Raises this process's open-file limit to its hard limit: the test holds
/// over a thousand connections.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
    limit.rlim_max
}

/// The open-file limit otpd.service gives the daemon: its `LimitNOFILE=`,
/// or systemd's default soft limit (DefaultLimitNOFILE=1024:524288) when
/// it sets none.
fn packaged_nofile() -> u64 {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/otpd.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    match text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("LimitNOFILE="))
        .next_back()
    {
        None => 1024,
        Some(value) => {
            let soft = value.split(':').next().unwrap_or(value).trim();
            match soft {
                "infinity" => 1 << 20,
                _ => soft
                    .parse()
                    .unwrap_or_else(|_| panic!("otpd.service: LimitNOFILE={value}")),
            }
        }
    }
}

/// Enrols `user` with 300 s codes, confirmed with the code of now, and
/// returns the enrolment and its code of the next step, unspent: inside the
/// window (one step either side) from now for at least 300 s, whatever the
/// 30 s steps do meanwhile, so that a test can send it to attackers and
/// ask at its end, with [`still_unspent`], that it was never spent.
fn enroll_with_lasting_code(env: &TestEnv, user: &str) -> (otpd_tests::Enrollment, String) {
    let now = otpd_tests::totp::unix_now();
    let period = LONG_PERIOD.to_string();
    let enrollment = env.enroll_active(user, &["--period", &period], now);
    let code = enrollment.code_at(now + LONG_PERIOD);
    (enrollment, code)
}

/// Fails unless `code` of `user` ([`enroll_with_lasting_code`], enrolled
/// at `enrolled`) is accepted now: it was never spent. The test must end
/// within 300 s of the enrolment for the code to be still inside the window.
fn still_unspent(socket: &Path, user: &str, code: &str, enrolled: Instant) {
    assert!(
        enrolled.elapsed() < Duration::from_secs(LONG_PERIOD),
        "the test took {} s, longer than {user}'s code stays inside the window \
         ({LONG_PERIOD} s): whether it was spent can no longer be asked",
        enrolled.elapsed().as_secs()
    );
    match ask(
        socket,
        &Request::Verify {
            user: user.into(),
            code: SecretText::from(code),
            service: "sshd".into(),
            rhost: "198.51.100.7".into(),
            ruid: None,
        },
    ) {
        Ok(Response::Verified {
            outcome: VerifyOutcome::Accepted,
        }) => {}
        other => panic!("{user}'s code after the attack: {other:?}"),
    }
}

/// The list without fields a well-behaved login changes.
fn comparable(list: &[Value], drop: &[&str]) -> BTreeMap<String, Value> {
    list.iter()
        .map(|entry| {
            let mut entry = entry.clone();
            for field in drop {
                entry.as_object_mut().unwrap().remove(*field);
            }
            (entry["user"].as_str().unwrap().to_owned(), entry)
        })
        .collect()
}

fn print_tally(who: &str, tally: &BTreeMap<String, u64>) {
    for (what, n) in tally {
        println!("  {who:<10} {what:<52} {n:>7}");
    }
}

#[test]
fn the_daemon_keeps_serving_well_behaved_clients_under_attack() {
    if !require("abuse campaign", PROGRAMS) {
        return;
    }
    let own_limit = raise_nofile();
    let limits = Limits {
        max_failures: 1_000_000,
        user_max_failures: 1_000_000,
        ..Limits::default()
    };
    let mut env = TestEnv::without_daemon("abuse_campaign", &limits);
    let daemon_nofile = packaged_nofile();
    // The packaged unit's descriptor limit. The daemon logs at trace, as
    // every test daemon does ([`TestEnv::serve_command`]), so that the
    // secrets check reads every line the attack made it write.
    env.launcher = vec![
        "prlimit".into(),
        format!("--nofile={daemon_nofile}:{}", own_limit.max(daemon_nofile)).into(),
        "--".into(),
    ];
    env.spawn_daemon();
    // Alice's valid code, carried by the attackers: never to be spent.
    let (_, alice_code) = enroll_with_lasting_code(&env, "alice");
    let alice_enrolled = Instant::now();
    let t = settled_now(30, 5);
    let bob = env.enroll_active("bob", &[], t - 30);
    let wrongtarget = env.enroll_active("wrongtarget", &[], t - 30);
    let wrong_code = wrongtarget.wrong_code(t);
    let work = Workload::enroll(&env, 64, "wrongtarget", &wrong_code);
    let before = env.list();
    let well = WellBehaved::default();

    // Baseline: the same clients with nobody attacking.
    let no_stop = AtomicBool::new(false);
    verify_loop(
        &env.socket,
        &work,
        Duration::from_millis(10),
        &no_stop,
        Some(80),
        &well,
    );
    pam_loop(&env, &work, &no_stop, Some(6), &well);
    let baseline = WellBehaved {
        valid: Mutex::new(std::mem::take(&mut well.valid.lock().unwrap())),
        wrong: Mutex::new(std::mem::take(&mut well.wrong.lock().unwrap())),
        pam: Mutex::new(std::mem::take(&mut well.pam.lock().unwrap())),
        ..WellBehaved::default()
    };
    let baseline_failures = well.failures.take();
    assert!(
        baseline_failures.is_empty(),
        "before the attack: {baseline_failures:#?}"
    );

    // The attack.
    let log_bytes_before = env.log().len();
    let (stop, tally, violations) = (
        AtomicBool::new(false),
        Tally::default(),
        Violations::default(),
    );
    let root_plan = AttackPlan {
        socket: &env.socket,
        hold: IDLE_CONNECTIONS,
        slow_writers: SLOW_WRITERS,
        garbage_pause: Duration::from_millis(5),
        alice: "alice",
        alice_code: &alice_code,
        slow_frame: verify_frame("bob", &bob.wrong_code(t), "192.0.2.99"),
    };
    let sides: Vec<(u32, Side)> = NON_ROOT_UIDS
        .iter()
        .enumerate()
        .map(|(i, &uid)| {
            let orders = json!({
                "role": "attack",
                "socket": env.socket,
                "seconds": ATTACK.as_secs(),
                "hold": if i == 0 { NON_ROOT_HOLD } else { 0 },
                "slow_writers": 2,
                "garbage_pause_ms": 20,
                "alice": "alice",
                "alice_code": alice_code,
            });
            (uid, start_side(&env, uid, &orders))
        })
        .collect();
    let attack_started = Instant::now();
    std::thread::scope(|scope| {
        let attackers = attack(scope, &root_plan, &stop, &tally, &violations);
        let pam = scope.spawn(|| pam_loop(&env, &work, &stop, None, &well));
        let direct = scope.spawn(|| {
            verify_loop(
                &env.socket,
                &work,
                Duration::from_millis(20),
                &stop,
                None,
                &well,
            )
        });
        std::thread::sleep(ATTACK);
        stop.store(true, Ordering::Relaxed);
        for t in attackers {
            t.join().expect("an attacker panicked");
        }
        pam.join().expect("the PAM client panicked");
        direct.join().expect("the direct client panicked");
    });
    let attack_took = attack_started.elapsed();
    let mut side_tallies = Vec::new();
    for (uid, running) in sides {
        let report = side_report(running, ATTACK + Duration::from_secs(30));
        for v in report["violations"].as_array().unwrap() {
            violations.push(format!("uid {uid}: {}", v.as_str().unwrap()));
        }
        let counts: BTreeMap<String, u64> =
            serde_json::from_value(report["tally"].clone()).unwrap();
        side_tallies.push((uid, counts));
    }

    // The figures.
    println!(
        "\n== abuse campaign: {} s of attack; the daemon has {daemon_nofile} file descriptors, as otpd.service gives it ==",
        attack_took.as_secs()
    );
    println!("well-behaved verifications straight over the socket:");
    println!(
        "  baseline, valid     {}",
        summary(&baseline.valid.lock().unwrap())
    );
    println!(
        "  baseline, wrong     {}",
        summary(&baseline.wrong.lock().unwrap())
    );
    println!("  baseline, all       {}", summary(&baseline.all_direct()));
    println!(
        "  attack,   valid     {}",
        summary(&well.valid.lock().unwrap())
    );
    println!(
        "  attack,   wrong     {}",
        summary(&well.wrong.lock().unwrap())
    );
    println!("  attack,   all       {}", summary(&well.all_direct()));
    println!("PAM logins (pamtester, whole process):");
    println!(
        "  baseline            {}",
        summary(&baseline.pam.lock().unwrap())
    );
    println!(
        "  attack              {}",
        summary(&well.pam.lock().unwrap())
    );
    println!("attacks performed and what the daemon did:");
    print_tally("root", &tally.snapshot());
    for (uid, counts) in &side_tallies {
        print_tally(&format!("uid {uid}"), counts);
    }
    let log = env.log();
    // What the packaged daemon would have written (it logs at info; this
    // one at trace, for the secrets check): the lines at INFO and above.
    let attack_lines = log
        .get(log_bytes_before..)
        .unwrap_or_default()
        .lines()
        .filter(|l| matches!(l.split_whitespace().nth(1), Some("INFO" | "WARN" | "ERROR")))
        .count();
    println!(
        "daemon log: {attack_lines} lines at info and above from the attack on, {:.0} a second \
         (journald drops a service's messages beyond 10,000 in 30 s by default)",
        attack_lines as f64 / attack_took.as_secs_f64()
    );
    for needle in [
        "bad request",
        "outcome=\"denied\"",
        "refusing one",
        "closed the connection that waited longest",
        "out of file descriptors",
        "accept failed",
    ] {
        println!(
            "  {needle:<42} {:>7}",
            log.lines().filter(|l| l.contains(needle)).count()
        );
    }

    // Correctness under attack.
    let failures = well.failures.take();
    assert!(
        failures.is_empty(),
        "{} well-behaved verifications went wrong during the attack, e.g.:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let hoarder_kept = side_tallies[0].1["idle: still open at the end"];
    assert!(
        hoarder_kept <= PER_UID_SHARE,
        "uid {} kept {hoarder_kept} idle connections, more than its share of {PER_UID_SHARE}",
        side_tallies[0].0
    );
    let violations = violations.take();
    assert!(
        violations.is_empty(),
        "attackers got answers they should not have:\n{}",
        violations.join("\n")
    );
    assert!(!well.valid.lock().unwrap().is_empty() && !well.pam.lock().unwrap().is_empty());
    assert!(
        process::try_signal(env.daemon_pid(), 0).is_ok(),
        "the daemon is gone:\n{log}"
    );
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    assert!(log.contains("bad request"), "the garbage left no log line");
    assert!(
        log.contains("outcome=\"denied\""),
        "the refused non-root verification left no audit line"
    );
    assert!(
        log.contains("connection limit reached") || log.contains("out of file descriptors"),
        "{IDLE_CONNECTIONS} idle connections and more, and no log line about the connection limit"
    );

    // Nothing stored changed but what the well-behaved clients did.
    let after = env.list();
    assert_eq!(
        before.len(),
        after.len(),
        "users appeared or vanished:\n{after:#?}"
    );
    let mut expected = comparable(&before, &["last_success"]);
    expected.get_mut("wrongtarget").unwrap()["failures"] =
        json!(well.wrong_attempts.load(Ordering::SeqCst));
    assert_eq!(
        comparable(&after, &["last_success"]),
        expected,
        "records changed under attack"
    );
    let alice_bob = |list: &[Value]| {
        list.iter()
            .filter(|e| e["user"] == "alice" || e["user"] == "bob")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        alice_bob(&after),
        alice_bob(&before),
        "the attacked users' records changed"
    );
    // Alice's code, sent under an unknown version, in fullwidth digits and by
    // other uids, was never spent (her unchanged last_success says so too;
    // this asks the daemon).
    still_unspent(&env.socket, "alice", &alice_code, alice_enrolled);
}

#[test]
fn no_such_user_and_wrong_code_look_alike_from_the_socket() {
    if !require("enumeration", &[Program::Oathtool]) {
        return;
    }
    let limits = Limits {
        max_failures: 1_000_000,
        user_max_failures: 1_000_000,
        ..Limits::default()
    };
    let mut env = TestEnv::without_daemon("abuse_enumeration", &limits);
    env.spawn_daemon();
    // An active user, a pending one and nobody: five letters each, so the
    // answers have the same length.
    let (alice, alice_code) = enroll_with_lasting_code(&env, "alice");
    let alice_enrolled = Instant::now();
    env.enroll("penny", &[]);
    let wrong = alice.wrong_code(otpd_tests::totp::unix_now());
    let before = env.list();

    // A non-root caller (a screen locker of uid 65534) asking about others,
    // with alice's valid code.
    let orders = json!({
        "role": "probe",
        "socket": env.socket,
        "rounds": 100,
        "users": ["alice", "penny", "ghost"],
        "code": alice_code,
    });
    let report = side_report(
        start_side(&env, NOBODY_UID, &orders),
        Duration::from_secs(60),
    );
    let answers = &report["answers"];
    println!("uid {NOBODY_UID}'s answers (name replaced by <USER>):");
    for (key, shown) in answers.as_object().unwrap() {
        println!("  {key:<14} {shown}");
    }
    for op in ["verify", "login"] {
        let active = &answers[format!("{op} alice")];
        assert_eq!(
            active.as_object().map(|o| o.len()),
            Some(1),
            "{op} alice: {active}"
        );
        let text = active.as_object().unwrap().keys().next().unwrap();
        assert!(text.contains("permission_denied"), "{op}: {text}");
        for other in ["penny", "ghost"] {
            assert_eq!(
                active,
                &answers[format!("{op} {other}")],
                "uid {NOBODY_UID} can tell alice (active) from {other} by {op}"
            );
        }
    }
    let us = |key: &str| -> Vec<Duration> {
        report["latencies_us"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| Duration::from_micros(v.as_u64().unwrap()))
            .collect()
    };
    println!("uid {NOBODY_UID}'s latencies:");
    for key in [
        "verify alice",
        "verify penny",
        "verify ghost",
        "login alice",
        "login penny",
        "login ghost",
    ] {
        println!("  {key:<14} {}", summary(&us(key)));
    }
    assert_eq!(
        env.list(),
        before,
        "a refused non-root caller changed a record"
    );

    // Root (sshd) sees the difference, by design; how long each takes:
    // the path of "no such user" should do the same work as "wrong code".
    let rounds = 200;
    let (mut unknown, mut wrong_code) = (Vec::new(), Vec::new());
    let mut shown = BTreeMap::new();
    for i in 0..rounds * 2 {
        let user = if i % 2 == 0 { "ghost" } else { "alice" };
        let started = Instant::now();
        let reaction = poke(
            &env.socket,
            &verify_frame(user, &wrong, &format!("203.0.113.{}", i % 250)),
            false,
        );
        let took = started.elapsed();
        let Reaction::Answered(frame) = reaction else {
            panic!("verify {user} as root: {reaction:?}");
        };
        let answer = String::from_utf8_lossy(&frame[FRAME_HEADER_LEN..]).into_owned();
        shown.insert(user, answer);
        if i < 10 {
            continue; // warm-up
        }
        if user == "ghost" {
            &mut unknown
        } else {
            &mut wrong_code
        }
        .push(took);
    }
    println!("root's verifications, {rounds} each, alternating:");
    println!(
        "  unknown user       {}  → {}",
        summary(&unknown),
        shown["ghost"]
    );
    println!(
        "  known, wrong code  {}  → {}",
        summary(&wrong_code),
        shown["alice"]
    );
    let median = |s: &mut Vec<Duration>| {
        s.sort();
        s[s.len() / 2]
    };
    println!(
        "  median wrong code / median unknown user = {:.1}",
        median(&mut wrong_code).as_secs_f64() / median(&mut unknown).as_secs_f64()
    );
    let entry = env.list_entry("alice").unwrap();
    assert_eq!(
        entry["failures"],
        json!(rounds),
        "each wrong code counts once: {entry}"
    );
    // The code uid 65534 sent for alice was not spent.
    still_unspent(&env.socket, "alice", &alice_code, alice_enrolled);
}
