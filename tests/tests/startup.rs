//! How the real `otpd serve` starts, as systemd and an administrator see it:
//!
//! - it refuses to start, naming the file, when a file it trusts belongs to
//!   another user (the config, `[web] tls_key`, `[sms] command`, the key
//!   file, the state directory) or when others may read `[web] tls_key`;
//! - `Type=notify`: `READY=1` reaches `$NOTIFY_SOCKET` (a datagram socket
//!   the test binds) only once the daemon's socket serves: the test asks
//!   the socket a question the moment READY arrives, and, with the socket's
//!   `bind()` held back half a second by `strace`, no READY comes early;
//! - the key is taken from `$CREDENTIALS_DIRECTORY/otpd.key` (systemd's
//!   `LoadCredential=otpd.key:…`) before `key_file`.

use otpd_proto::{Response, Step};
use otpd_tests::ca::TestCa;
use otpd_tests::process::{self, NOBODY_UID};
use otpd_tests::{programs, require, settled_now, Limits, PamOutcome, Program, TestEnv, PAM};
use std::ffi::OsString;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn give_to(path: &Path, uid: u32) {
    chown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {uid} {}: {e}", path.display()));
}

/// `otpd serve` with `env`'s config, which must refuse to start
/// ([`TestEnv::serve_refused`]: its output goes to the env's log, so that
/// the secrets check reads it too) with exit status 1 and a message on
/// stderr that names `file`. Returns the message.
fn refused_start(env: &TestEnv, file: &Path, what: &str) -> String {
    let out = env.serve_refused(what);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: otpd serve was expected to exit with status 1: {out}"
    );
    let said = out
        .stderr
        .lines()
        .find(|line| line.starts_with("otpd: "))
        .unwrap_or_else(|| panic!("{what}: no `otpd: ` message: {out}"))
        .to_owned();
    assert!(
        said.contains(&file.display().to_string()),
        "{what}: the message does not name {}: {said}",
        file.display()
    );
    println!("[{}] {what}: {said}", env.name);
    said
}

/// A certificate for the pages and its key (mode 0600), from a test CA.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let mut ca = TestCa::root(dir, "ca", "otpd test CA for start-up refusals");
    let issued = ca.issue_server("web");
    ca.forget_key();
    issued
}

#[test]
fn files_of_another_user_and_a_readable_tls_key_stop_the_daemon_naming_the_file() {
    if !require("start-up refusals", &[Program::Openssl]) {
        return;
    }
    let mut env = TestEnv::without_daemon("startup_refusals", &Limits::default());
    // A first start makes the key file and the store, then stops.
    env.spawn_daemon();
    env.kill_daemon(libc::SIGTERM);
    let (cert, key) = certificate(&env.dir);
    let sender = env.dir.join("send-sms");
    std::fs::write(&sender, "#!/bin/sh\ncat >/dev/null\n").unwrap();
    chmod(&sender, 0o755);
    env.append_config(&format!(
        "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://localhost\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n\n[sms]\ncommand = \"{}\"\n",
        cert.display(),
        key.display(),
        sender.display()
    ));

    // A private key others may read, in two ways; a group may read it
    // (the ssl-cert group of Debian).
    for mode in [0o644, 0o604] {
        chmod(&key, mode);
        let said = refused_start(&env, &key, &format!("tls_key mode {mode:04o}"));
        assert!(
            said.contains("[web] tls_key")
                && said.contains("readable by others")
                && said.contains(&format!("chmod go-w,o-r {}", key.display())),
            "{said}"
        );
    }
    chmod(&key, 0o640);

    // Each file the daemon trusts, given to another user.
    let owner = format!("belongs to uid {NOBODY_UID}, not to root or the daemon (uid 0)");
    for (file, what) in [
        (&env.config, "the config"),
        (&key, "[web] tls_key"),
        (&sender, "[sms] command"),
        (&env.key_file, "the key file"),
    ] {
        give_to(file, NOBODY_UID);
        let said = refused_start(&env, file, &format!("{what} of uid {NOBODY_UID}"));
        assert!(
            said.contains(&owner) && said.contains(&format!("chown root {}", file.display())),
            "{what}: {said}"
        );
        give_to(file, 0);
    }
    give_to(&env.state_dir, NOBODY_UID);
    let said = refused_start(&env, &env.state_dir, "the state dir of another user");
    assert!(
        said.contains(&format!("belongs to uid {NOBODY_UID}")),
        "{said}"
    );
    give_to(&env.state_dir, 0);

    // Everything put right: it starts (and serves its pages).
    env.spawn_daemon();
    let started = Instant::now();
    while !env
        .log()
        .contains("serving the enrolment pages on https://")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the pages did not start:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One datagram that reached the test's `NOTIFY_SOCKET`, and what the
/// daemon's socket did at that moment.
#[derive(Debug, Clone)]
struct Notification {
    /// The datagram's text (`READY=1` …).
    text: String,
    /// When it arrived, from the daemon's spawn.
    at: Duration,
    /// Whether the daemon's socket file existed when it arrived.
    socket_existed: bool,
    /// For `READY=1`: the first answer to a login begun on a fresh
    /// connection the moment READY arrived, or why there was none.
    answer: Option<Result<Response, String>>,
}

/// Begins the login of a user nobody enrolled: the daemon's first step.
fn ask(socket: &Path) -> Result<Response, String> {
    otpd_tests::client::ask(
        socket,
        &otpd_tests::client::login_start("nobody-enrolled"),
        Duration::from_secs(5),
    )
}

/// A listener on a datagram socket, as systemd's `NOTIFY_SOCKET`: every
/// datagram is recorded with what the daemon's socket did right then.
struct NotifyListener {
    path: PathBuf,
    seen: Arc<Mutex<Vec<Notification>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotifyListener {
    fn bind(dir: &Path, daemon_socket: &Path, spawned: Instant) -> NotifyListener {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            let daemon_socket = daemon_socket.to_path_buf();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    let at = spawned.elapsed();
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let socket_existed = daemon_socket.exists();
                    let answer = text
                        .lines()
                        .any(|l| l == "READY=1")
                        .then(|| ask(&daemon_socket));
                    seen.lock().unwrap().push(Notification {
                        text,
                        at,
                        socket_existed,
                        answer,
                    });
                }
            })
        };
        NotifyListener {
            path,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Notification> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) for a datagram that contains `line`.
    fn wait_for(&self, line: &str, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self
                .seen()
                .iter()
                .any(|n| n.text.lines().any(|l| l == line))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A daemon (and the `strace` it may run under) in a process group of its
/// own, killed whole when dropped: SIGKILL to strace alone would leave the
/// traced daemon running.
struct DaemonGroup {
    child: Child,
}

impl DaemonGroup {
    fn spawn(mut cmd: Command, log: &Path) -> DaemonGroup {
        use std::os::unix::process::CommandExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the daemon log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup the log"))
            .stderr(file)
            .process_group(0);
        DaemonGroup {
            child: cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
        }
    }

    /// SIGTERM to the daemon (its pid read from the lock file it holds in
    /// `state_dir`: under strace, the child is strace) and the child's
    /// exit status (strace exits with the daemon's).
    fn terminate(&mut self, state_dir: &Path) -> ExitStatus {
        let lock = std::fs::read_to_string(state_dir.join("otpd.lock")).expect("read otpd.lock");
        let pid: u32 = lock
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid in otpd.lock: {lock:?}"));
        process::send_signal(pid, libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the daemon (pid {pid}) did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DaemonGroup {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = libc::pid_t::try_from(self.child.id()).expect("pid fits in pid_t");
            // SAFETY: killpg(2) takes plain integers and touches no memory of ours.
            unsafe { libc::killpg(group, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Starts `env`'s daemon with a `NOTIFY_SOCKET` of the test's (under
/// `strace` holding back every `bind()` by `bind_delay`, when given),
/// waits for READY, stops it with SIGTERM, and returns the datagrams seen.
fn notifications(env: &TestEnv, bind_delay: Option<Duration>) -> Vec<Notification> {
    let spawned = Instant::now();
    let listener = NotifyListener::bind(&env.dir, &env.socket, spawned);
    let strace_log = env.dir.join("strace.log");
    let mut cmd = match bind_delay {
        Some(delay) => {
            let mut cmd = Command::new(Program::Strace.path());
            cmd.args(["-f", "-qq", "-o"])
                .arg(&strace_log)
                .args(["-e", "trace=bind,listen", "-e"])
                .arg(format!("inject=bind:delay_enter={}", delay.as_micros()))
                .arg(programs::otpd_binary());
            cmd
        }
        None => Command::new(programs::otpd_binary()),
    };
    cmd.arg("--config")
        .arg(&env.config)
        .arg("serve")
        .env("NOTIFY_SOCKET", &listener.path)
        .env("RUST_LOG", otpd_tests::campaign::daemon_log_filter());
    let from = env.log().len();
    let mut daemon = DaemonGroup::spawn(cmd, &env.daemon_log);
    let ready = listener.wait_for("READY=1", Duration::from_secs(20));
    assert!(
        ready,
        "[{}] no READY=1 within 20 s; seen {:?}:\n{}",
        env.name,
        listener.seen(),
        env.log()
    );
    TestEnv::assert_logs_at_trace(&env.daemon_log, from, &env.name);
    let status = daemon.terminate(&env.state_dir);
    assert!(status.success(), "SIGTERM ended it with {status}");
    assert!(
        listener.wait_for("STOPPING=1", Duration::from_secs(5)),
        "no STOPPING=1 at SIGTERM: {:?}",
        listener.seen()
    );
    if bind_delay.is_some() {
        let trace = std::fs::read_to_string(&strace_log).unwrap_or_default();
        // The halves of a call another thread's line interrupted are
        // joined by the parser: "(DELAYED)" is on the resumed half.
        let socket = env.socket.to_string_lossy();
        let bind = otpd_tests::strace::parse(&trace)
            .into_iter()
            .find(|call| call.name == "bind" && call.args.contains(&*socket))
            .unwrap_or_else(|| panic!("no bind() of {socket} in the strace log:\n{trace}"));
        assert!(
            bind.result
                .as_deref()
                .is_some_and(|r| r.contains("(DELAYED)")),
            "strace did not hold back the bind() of {socket}: {bind:?}"
        );
        println!(
            "[{}] strace: bind({socket}) = {}",
            env.name,
            bind.result.as_deref().unwrap_or("?")
        );
    }
    listener.seen()
}

/// What must hold of the datagrams: READY=1 once, when the socket file
/// existed and answered a question asked the moment it came; then
/// STOPPING=1; nothing else.
fn assert_ready_only_when_serving(name: &str, seen: &[Notification]) {
    for n in seen {
        println!(
            "[{name}] {:>5} ms {:?}: socket {}, asked then: {}",
            n.at.as_millis(),
            n.text,
            if n.socket_existed {
                "existed"
            } else {
                "did not exist"
            },
            match &n.answer {
                Some(Ok(response)) => format!("{response:?}"),
                Some(Err(e)) => format!("no answer ({e})"),
                None => "-".into(),
            }
        );
    }
    let texts: Vec<&str> = seen.iter().map(|n| n.text.trim_end()).collect();
    assert_eq!(texts, ["READY=1", "STOPPING=1"], "{seen:?}");
    let ready = &seen[0];
    assert!(
        ready.socket_existed,
        "READY=1 came before the socket existed: {ready:?}"
    );
    match &ready.answer {
        Some(Ok(Response::Step(Step::Prompt { .. }))) => {}
        other => panic!("the socket did not answer when READY=1 came: {other:?}"),
    }
}

#[test]
fn ready_is_notified_once_the_socket_serves() {
    let env = TestEnv::without_daemon("startup_notify", &Limits::default());
    let seen = notifications(&env, None);
    assert_ready_only_when_serving(&env.name, &seen);
}

#[test]
fn ready_waits_for_a_socket_whose_bind_is_held_back() {
    if !require("READY and a slow bind", &[Program::Strace]) {
        return;
    }
    let env = TestEnv::without_daemon("startup_notify_slow", &Limits::default());
    let delay = Duration::from_millis(500);
    let seen = notifications(&env, Some(delay));
    assert_ready_only_when_serving(&env.name, &seen);
    assert!(
        seen[0].at >= delay,
        "READY=1 came {} ms after the start, before the held-back bind() could end",
        seen[0].at.as_millis()
    );
}

#[test]
fn the_key_comes_from_the_credentials_directory_before_key_file() {
    if !require("LoadCredential", PAM) {
        return;
    }
    let mut env = TestEnv::start("startup_credentials");
    let t = settled_now(30, 15);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.kill_daemon(libc::SIGTERM);

    // As systemd's LoadCredential=otpd.key:… leaves it: a directory only
    // the service may read, with the key in `otpd.key`.
    let credentials = env.dir.join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    chmod(&credentials, 0o500);
    let credential = credentials.join("otpd.key");
    std::fs::rename(&env.key_file, &credential).unwrap();
    let with_credentials: Vec<OsString> = vec![
        "/usr/bin/env".into(),
        format!("CREDENTIALS_DIRECTORY={}", credentials.display()).into(),
    ];

    // Without the variable the key file is missing: no start.
    let said = refused_start(&env, &env.key_file, "no credential, no key file");
    assert!(said.contains("is missing"), "{said}");

    // With it, the same store opens: alice logs in.
    env.launcher = with_credentials.clone();
    env.spawn_daemon();
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.90", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    env.kill_daemon(libc::SIGTERM);

    // Another key in key_file: the credential still wins.
    env.keygen(&env.key_file);
    env.spawn_daemon();
    let login = env.pam_login("alice", &alice.code_at(t + 30), "192.0.2.91", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    env.kill_daemon(libc::SIGTERM);

    // The other key as the credential, the store's key in key_file: the
    // credential is what is read, and it does not fit.
    let right = env.dir.join("right.key");
    std::fs::rename(&credential, &right).unwrap();
    std::fs::rename(&env.key_file, &credential).unwrap();
    std::fs::rename(&right, &env.key_file).unwrap();
    let said = refused_start(&env, &credential, "a credential with another key");
    assert!(said.contains("holds key ID"), "{said}");

    // A credentials directory without otpd.key: key_file is read (the
    // sealed record opens: alice is listed as active).
    std::fs::remove_file(&credential).unwrap();
    env.spawn_daemon();
    let entry = env.list_entry("alice").expect("alice is listed");
    assert_eq!(entry["state"], "active", "{entry}");
}
