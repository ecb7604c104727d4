//! A flood of the enrolment pages must not make logins fail (design.md §8;
//! issue 17, item 5): thousands of users in the store, hundreds of
//! strangers' connections asking for random well-formed links as fast as
//! they can (each from its own 127.x.y.z address), and slow bodies holding
//! connections open; meanwhile logins through the real libpam (pamtester
//! and pam_otpd.so) every half second. Every login must succeed. The test
//! prints the logins' p50/p99, the flood's request count and status mix,
//! and the daemon's threads and memory.
//!
//! `OTPD_FLOOD_USERS` (default 3000) and `OTPD_FLOOD_SECS` (default 18)
//! change the size; the defaults fit a debug build in CI's time budget.

use otpd_proto::{EnrollParams, Request, Response, SecretText};
use otpd_tests::pages;
use otpd_tests::totp::unix_now;
use otpd_tests::webclient::{loopback_source, Connection};
use otpd_tests::{code_at, require, Limits, PamOutcome, TestEnv, PAM};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections asking for random links, each from its own address.
const FLOODERS: u32 = 200;
/// Connections that send a request head and then a byte a second of body.
const SLOW_BODIES: u32 = 64;
/// Users that log in during the flood (each once, from its own host).
const LOGINS: usize = 36;

/// One admin request over the daemon's socket (the tests run as root).
fn ask(socket: &Path, request: &Request) -> Response {
    otpd_tests::client::ask(socket, request, Duration::from_secs(30)).expect("an answer from otpd")
}

fn enroll_request(user: &str) -> Request {
    Request::Enroll(EnrollParams {
        user: user.to_owned(),
        ..EnrollParams::default()
    })
}

/// `count` pending enrolments named `flood000000…`, from four threads.
fn enroll_many(socket: &Path, count: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let next = Arc::clone(&next);
            let socket = socket.to_owned();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                match ask(&socket, &enroll_request(&format!("flood{i:06}"))) {
                    Response::Enrolled(e) => {
                        otpd_tests::secrets::remember(e.secret_base32.expose())
                    }
                    other => panic!("enrol flood{i:06}: {other:?}"),
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("an enrolling thread");
    }
}

/// An active user: enrolled, and confirmed with the previous step's code
/// (so that the current step's code is still fresh for the login).
fn enroll_active(socket: &Path, user: &str) -> String {
    let secret = match ask(socket, &enroll_request(user)) {
        Response::Enrolled(e) => e.secret_base32.expose().to_owned(),
        other => panic!("enrol {user}: {other:?}"),
    };
    otpd_tests::secrets::remember(&secret);
    let code = code_at(&secret, "SHA1", 6, 30, unix_now() - 30);
    match ask(
        socket,
        &Request::Confirm {
            user: user.to_owned(),
            code: SecretText::from(code.as_str()),
        },
    ) {
        Response::Confirmed { .. } => secret,
        other => panic!("confirm {user}: {other:?}"),
    }
}

/// A random well-formed link token (32 hex digits), from a per-thread
/// generator: a stranger's guess that passes every format check.
fn random_token(rng: &mut otpd_tests::rng::Rng) -> String {
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

#[derive(Default)]
struct Tally {
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn add(&self, kind: impl Into<String>) {
        *self.by_kind.lock().unwrap().entry(kind.into()).or_default() += 1;
    }
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.by_kind.lock().unwrap().clone()
    }
}

/// Keeps asking for random links over kept-alive connections from
/// `source` until `stop`; counts each answer by status, and each failure
/// to connect or to get an answer by its kind.
fn flood(port: u16, n: u32, stop: &AtomicBool, tally: &Tally) {
    let source = loopback_source(1, n);
    let mut rng = otpd_tests::rng::Rng(u64::from(n) * 7919 + unix_now());
    while !stop.load(Ordering::Relaxed) {
        let mut connection = match Connection::open(port, Some(source), Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                tally.add(format!("connect: {:?}", e.kind()));
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let path = format!("/enroll/{}", random_token(&mut rng));
            match connection.send("GET", &path, "", "") {
                Ok(answer) => {
                    tally.add(answer.status.to_string());
                    if answer.header("connection") == Some("close") {
                        break;
                    }
                }
                Err(e) => {
                    tally.add(format!("no answer: {:?}", e.kind()));
                    break;
                }
            }
        }
    }
}

/// Sends a POST head announcing a large body, then one byte a second,
/// reconnecting whenever the daemon closes the connection; counts how
/// long each connection was held.
fn slow_body(port: u16, n: u32, stop: &AtomicBool, tally: &Tally) {
    let source = loopback_source(2, n);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut connection) = Connection::open(port, Some(source), Duration::from_secs(5))
        else {
            tally.add("slow: cannot connect");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let opened = Instant::now();
        let head = format!(
            "POST /enroll/{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\ncode=",
            "0".repeat(32)
        );
        let stream: &mut TcpStream = connection.stream();
        let mut closed = stream.write_all(head.as_bytes()).is_err();
        while !closed && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            closed = stream.write_all(b"1").is_err();
            // A response (408, or the neutral page) also ends the hold.
            let mut probe = [0u8; 1];
            stream.set_nonblocking(true).unwrap();
            match std::io::Read::read(stream, &mut probe) {
                Ok(_) => closed = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed = true,
            }
            stream.set_nonblocking(false).unwrap();
        }
        if closed {
            let held = opened.elapsed().as_secs();
            tally.add(format!("slow: ended by the daemon after {held} s"));
        }
    }
}

/// Threads and resident memory of `pid` (from /proc).
fn threads_and_rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn logins_succeed_during_a_flood_of_the_pages() {
    if !require("logins during a flood of the pages", PAM) {
        return;
    }
    let users = otpd_tests::campaign::size("OTPD_FLOOD_USERS", 3000);
    let flood_secs = otpd_tests::campaign::size("OTPD_FLOOD_SECS", 18);
    let env = TestEnv::start_with_config("web_flood", Limits::default(), pages::WEB_SECTION);
    let port = pages::port(&env, "http");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no pages on 127.0.0.1:{port}:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let setup = Instant::now();
    enroll_many(&env.socket, users);
    let logins: Vec<(String, String)> = (0..LOGINS)
        .map(|i| {
            let user = format!("login{i:02}");
            let secret = enroll_active(&env.socket, &user);
            (user, secret)
        })
        .collect();
    println!(
        "[web_flood] {users} pending and {LOGINS} active users enrolled in {} ms",
        setup.elapsed().as_millis()
    );
    // One login before the flood, for comparison.
    let service = env.pam_service("");
    let quiet = {
        let (user, secret) = &logins[0];
        let login = service.login(
            user.as_ref(),
            &code_at(secret, "SHA1", 6, 30, unix_now()),
            "192.0.2.1",
            None,
        );
        assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
        login.elapsed()
    };
    println!(
        "[web_flood] a login without the flood: {} ms",
        quiet.as_millis()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut threads = Vec::new();
    for n in 0..FLOODERS {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        threads.push(std::thread::spawn(move || flood(port, n, &stop, &tally)));
    }
    for n in 0..SLOW_BODIES {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        threads.push(std::thread::spawn(move || {
            slow_body(port, n, &stop, &tally)
        }));
    }
    let flood_started = Instant::now();
    let (mut max_threads, mut max_rss) = (0, 0);
    // Let the flood build up before the first login.
    std::thread::sleep(Duration::from_secs(2));

    let mut results = Vec::new();
    for (i, (user, secret)) in logins.iter().enumerate().skip(1) {
        if flood_started.elapsed() >= Duration::from_secs(flood_secs) {
            break;
        }
        let (threads_now, rss_now) = threads_and_rss(env.daemon_pid());
        max_threads = max_threads.max(threads_now);
        max_rss = max_rss.max(rss_now);
        let code = code_at(secret, "SHA1", 6, 30, unix_now());
        let login = service.login(user.as_ref(), &code, &format!("192.0.2.{}", 10 + i), None);
        println!(
            "[web_flood] login {i} at {:.1} s: {:?} in {} ms",
            flood_started.elapsed().as_secs_f64(),
            login.outcome,
            login.elapsed().as_millis()
        );
        results.push((user.clone(), login));
        std::thread::sleep(Duration::from_millis(400));
    }
    let during = tally.snapshot();
    stop.store(true, Ordering::SeqCst);
    let flood_time = flood_started.elapsed();
    for thread in threads {
        thread.join().expect("a flood thread");
    }
    let (threads_after, rss_after) = threads_and_rss(env.daemon_pid());

    let mut times: Vec<Duration> = results.iter().map(|(_, l)| l.elapsed()).collect();
    times.sort();
    let requests: u64 = during
        .iter()
        .filter(|(kind, _)| kind.parse::<u16>().is_ok())
        .map(|(_, n)| n)
        .sum();
    println!(
        "[web_flood] {} logins during {:.1} s of flood: p50 {} ms, p99 {} ms, max {} ms \
         (without flood {} ms)",
        times.len(),
        flood_time.as_secs_f64(),
        percentile(&times, 50.0).as_millis(),
        percentile(&times, 99.0).as_millis(),
        times.last().copied().unwrap_or_default().as_millis(),
        quiet.as_millis()
    );
    println!(
        "[web_flood] flood: {requests} answered requests ({:.0}/s) from {FLOODERS} addresses, \
         {SLOW_BODIES} slow bodies",
        requests as f64 / flood_time.as_secs_f64()
    );
    for (kind, n) in &during {
        println!("[web_flood]   {kind}: {n}");
    }
    println!(
        "[web_flood] daemon: at most {max_threads} threads and {} MiB resident during the flood; \
         {threads_after} threads and {} MiB after",
        max_rss / 1024,
        rss_after / 1024
    );

    let failed: Vec<String> = results
        .iter()
        .filter(|(_, l)| l.outcome != PamOutcome::Success)
        .map(|(user, l)| {
            format!(
                "{user}: {:?} after {} ms: {}",
                l.outcome,
                l.elapsed().as_millis(),
                l.transcript().trim()
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} logins failed during the flood:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
    assert!(
        results.len() >= 10,
        "only {} logins in {} s",
        results.len(),
        flood_secs
    );
    assert!(requests > 0, "the flood got no answer at all: {during:?}");
    // The daemon still serves the pages afterwards.
    let after = otpd_tests::webclient::request(port, "GET", "/otpd.css", "", "");
    assert_eq!(after.status, 200, "{after:?}");
}
