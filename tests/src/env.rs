//! [`TestEnv`]: a temporary directory with a config, a running `otpd serve`,
//! and helpers to drive it through the CLI and through libpam.

use crate::pam::{PamLogin, PamService};
use crate::process::{self, ChildGuard, Output};
use crate::programs;
use crate::secrets;
use crate::totp::Enrollment;
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `[limits]` section of the test config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Failures per (user, source) before backoff.
    pub max_failures: u32,
    /// First backoff, as written in TOML: `"30s"` (a string) or `30` (seconds).
    pub base_delay: String,
    /// Backoff cap, as written in TOML.
    pub max_delay: String,
    /// Failures per user across all sources before backoff.
    pub user_max_failures: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_failures: 5,
            base_delay: "\"30s\"".into(),
            max_delay: "\"15m\"".into(),
            user_max_failures: 20,
        }
    }
}

/// The `[totp] issuer` of every env's config: the issuer of the URIs and
/// pages of its enrolments.
pub const ISSUER: &str = "otpd-test";

/// How long `otpd serve` may take to accept its first connection.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one CLI command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon that must refuse to start may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon that came up may take to write its first line at
/// TRACE (it writes it while opening its store, before it serves).
const TRACE_TIMEOUT: Duration = Duration::from_secs(5);

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory `otpd-{kind}{name}-{pid}-{n}` under the temp
/// dir (canonical path), `name` shortened to 20 alphanumerics.
pub fn fresh_temp_dir(kind: &str, name: &str) -> PathBuf {
    let short: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(20)
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "otpd-{kind}{short}-{}-{}",
        std::process::id(),
        DIR_COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a test dir");
    dir.canonicalize().expect("canonical test dir")
}

/// One test's world: a unique temp dir (mode 0755, so that a non-root
/// process can reach the socket), `otpd.toml`, and a running `otpd serve`
/// whose output goes to `otpd.log`. Dropping it kills the daemon and
/// removes the dir, also when the test panics (then the log is printed).
pub struct TestEnv {
    /// The test's name, for messages.
    pub name: String,
    /// The temp dir (canonical path).
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The daemon's state dir.
    pub state_dir: PathBuf,
    /// The key that seals the store (created by the first `otpd serve`).
    pub key_file: PathBuf,
    /// stdout and stderr of every daemon run, appended.
    pub daemon_log: PathBuf,
    /// A prefix for `otpd serve` (`nsenter … --`), so that the daemon runs
    /// inside a [`crate::system::PrivateHost`] and resolves its users.
    pub launcher: Vec<OsString>,
    daemon: Option<ChildGuard>,
    /// Logs besides [`TestEnv::daemon_log`] that the secrets check at the
    /// end reads too ([`TestEnv::scan_also`]).
    other_logs: Mutex<Vec<PathBuf>>,
    /// Where in the daemon's log the latest `otpd serve` began to write.
    run_from: usize,
}

impl TestEnv {
    /// A new env with the default limits and a running daemon.
    pub fn start(name: &str) -> TestEnv {
        TestEnv::start_with(name, Limits::default())
    }

    /// A new env with `limits` and a running daemon.
    pub fn start_with(name: &str, limits: Limits) -> TestEnv {
        let mut env = TestEnv::without_daemon(name, &limits);
        env.spawn_daemon();
        env
    }

    /// A new env with `limits`, `extra_toml` appended to the config (for
    /// `[web]`, `[sms]` … sections), and a running daemon.
    pub fn start_with_config(name: &str, limits: Limits, extra_toml: &str) -> TestEnv {
        let mut env = TestEnv::without_daemon(name, &limits);
        let mut config = std::fs::read_to_string(&env.config).expect("read the config");
        config.push('\n');
        config.push_str(extra_toml);
        std::fs::write(&env.config, config).expect("write the config");
        env.spawn_daemon();
        env
    }

    /// A new env whose daemon is not started yet.
    pub fn without_daemon(name: &str, limits: &Limits) -> TestEnv {
        let dir = fresh_temp_dir("", name);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the test dir");
        let dir = dir.canonicalize().expect("canonical test dir");
        let socket = dir.join("otpd.sock");
        let state_dir = dir.join("state");
        // As systemd's StateDirectory= would leave it.
        std::fs::create_dir(&state_dir).expect("create the state dir");
        std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod the state dir");
        let config = dir.join("otpd.toml");
        std::fs::write(
            &config,
            format!(
                "socket = \"{}\"\nstate_dir = \"{}\"\nkey_file = \"{}\"\n\n[totp]\nissuer = \"{ISSUER}\"\n\n\
                 [limits]\nmax_failures = {}\nbase_delay = {}\nmax_delay = {}\n\
                 user_max_failures = {}\n",
                socket.display(),
                state_dir.display(),
                dir.join("otpd.key").display(),
                limits.max_failures,
                limits.base_delay,
                limits.max_delay,
                limits.user_max_failures
            ),
        )
        .expect("write the config");
        TestEnv {
            name: name.to_owned(),
            daemon_log: dir.join("otpd.log"),
            key_file: dir.join("otpd.key"),
            dir,
            config,
            socket,
            state_dir,
            launcher: Vec::new(),
            daemon: None,
            other_logs: Mutex::new(Vec::new()),
            run_from: 0,
        }
    }

    /// The `otpd serve` command of this env.
    pub fn serve_command(&self) -> Command {
        let mut cmd = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(programs::otpd_binary());
                cmd
            }
            None => Command::new(programs::otpd_binary()),
        };
        cmd.arg("--config").arg(&self.config).arg("serve");
        // Everything otpd can log, so that the check at the end of every
        // test (no remembered secret in the log) covers all of it. sled's
        // own trace lines (page and log positions, megabytes of them) are
        // left at info: they never see a secret (records are sealed first).
        cmd.env("RUST_LOG", crate::campaign::daemon_log_filter());
        cmd
    }

    /// The remembered secrets ([`crate::secrets`]) found in the daemon's log
    /// or in another log of this test ([`TestEnv::scan_also`]), or in clear
    /// in the store.
    pub fn leaked_secrets(&self) -> Vec<String> {
        let all = secrets::all();
        let mut logs = vec![self.daemon_log.clone()];
        logs.extend(
            self.other_logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        let mut found = Vec::new();
        let (mut lines, mut bytes) = (0, 0);
        for path in &logs {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            lines += log.lines().count();
            bytes += log.len();
            found.extend(
                secrets::leaked_into(&log, &all)
                    .into_iter()
                    .map(|s| format!("{s} in the log {}", path.display())),
            );
        }
        println!(
            "[{}] secrets check: {} remembered secrets against {} log lines ({} KiB, {} logs) \
             and the store",
            self.name,
            all.len(),
            lines,
            bytes / 1024,
            logs.len()
        );
        found.extend(secrets::in_clear_under(&self.state_dir, &all));
        found
    }

    /// Has the secrets check at the end ([`TestEnv::leaked_secrets`]) read
    /// `log` too: the log of a daemon run outside [`TestEnv::spawn_daemon`],
    /// or the output of another program of the test. It must stay in the
    /// test's dir (or outlive the env).
    pub fn scan_also(&self, log: &Path) {
        let mut logs = self.other_logs.lock().unwrap_or_else(|e| e.into_inner());
        if !logs.iter().any(|known| known == log) {
            logs.push(log.to_path_buf());
        }
    }

    /// Appends `out` (what a program printed) to the daemon's log, so that
    /// the secrets check reads it too.
    pub fn append_to_log(&self, out: &Output) {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.daemon_log)
            .expect("open the daemon log");
        write!(log, "{}{}", out.stdout, out.stderr).expect("append to the daemon log");
    }

    /// Fails unless the lines a daemon wrote to `log` from byte `from` on
    /// include one at TRACE, waiting up to 5 s for it: the daemons of the
    /// tests log at trace ([`crate::campaign::daemon_log_filter`]), so that
    /// the secrets check sees every line they can write. Nothing to check
    /// when `OTPD_TEST_RUST_LOG` lowered the level (outside CI only).
    pub fn assert_logs_at_trace(log: &Path, from: usize, what: &str) {
        if !crate::campaign::daemons_log_at_trace() {
            return;
        }
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let since = text.get(from..).unwrap_or_default();
            if secrets::trace_lines(since) > 0 {
                return;
            }
            assert!(
                started.elapsed() < TRACE_TIMEOUT,
                "{what}: the daemon logged no line at TRACE in {} s, so it does not log at \
                 trace and the secrets check would not see everything it can write \
                 (RUST_LOG={:?}); its log {} from byte {from}:\n{since}",
                TRACE_TIMEOUT.as_secs(),
                crate::campaign::daemon_log_filter(),
                log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `otpd serve` that must refuse to start: runs it (30 s at most),
    /// appends what it printed to the daemon's log (for the secrets
    /// check), and fails unless it exited with a failure status and
    /// nothing answers on the socket. Returns the run.
    pub fn serve_refused(&self, what: &str) -> Output {
        let out = process::run(self.serve_command(), b"", REFUSAL_TIMEOUT);
        self.append_to_log(&out);
        assert!(
            !out.status.success(),
            "[{}] {what}: otpd serve was expected to refuse to start, but ended with \
             success:\n{out}",
            self.name
        );
        assert!(
            self.daemon.is_some() || UnixStream::connect(&self.socket).is_err(),
            "[{}] {what}: a refused daemon is answering on {}",
            self.name,
            self.socket.display()
        );
        out
    }

    /// Starts `otpd serve` once, as a probe: `Ok` when it came up (it
    /// accepted a connection and logged at trace; it is then stopped with
    /// SIGTERM, which must end it with status 0), `Err` with what it
    /// printed when it exited instead. Its output goes to the daemon's log.
    pub fn try_serve(&self) -> Result<(), String> {
        assert!(self.daemon.is_none(), "a daemon is already running");
        let from = self.log().len();
        let mut probe = ChildGuard::spawn(self.serve_command(), &self.daemon_log);
        let started = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                TestEnv::assert_logs_at_trace(&self.daemon_log, from, "a probe of otpd serve");
                let status = probe.stop(libc::SIGTERM, Duration::from_secs(10));
                assert!(status.success(), "the probe daemon ended with {status}");
                return Ok(());
            }
            if let Some(status) = probe.child.try_wait().expect("try_wait") {
                assert!(!status.success(), "otpd serve exited 0 without serving");
                return Err(self.log().get(from..).unwrap_or_default().to_owned());
            }
            assert!(
                started.elapsed() < REFUSAL_TIMEOUT,
                "otpd serve neither came up nor exited within {} s",
                REFUSAL_TIMEOUT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Appends `toml` (after an empty line) to the config.
    pub fn append_config(&self, toml: &str) {
        let mut config = std::fs::read_to_string(&self.config).expect("read the config");
        config.push('\n');
        config.push_str(toml);
        std::fs::write(&self.config, config).expect("write the config");
    }

    /// Runs `otpd keygen PATH` (with this env's config) and returns the key
    /// ID it printed (16 hexadecimal digits).
    pub fn keygen(&self, path: &Path) -> String {
        let out = self.otpd_expect(&[OsStr::new("keygen"), path.as_os_str()], 0);
        let id = out
            .stdout
            .split_once("key ID ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(id, _)| id.trim().to_owned())
            .unwrap_or_else(|| panic!("otpd keygen printed no key ID:\n{out}"));
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "key ID {id:?}:\n{out}"
        );
        id
    }

    /// Starts `otpd serve` and waits until its socket accepts a connection.
    pub fn spawn_daemon(&mut self) {
        assert!(self.daemon.is_none(), "a daemon is already running");
        let started = Instant::now();
        let from = self.log().len();
        let mut daemon = ChildGuard::spawn(self.serve_command(), &self.daemon_log);
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                break;
            }
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                panic!(
                    "otpd serve exited with {status} before accepting connections:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "otpd serve did not accept a connection on {} within {} s:\n{}",
                self.socket.display(),
                READY_TIMEOUT.as_secs(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "[{}] otpd serve ready in {} ms",
            self.name,
            started.elapsed().as_millis()
        );
        self.daemon = Some(daemon);
        self.run_from = from;
        TestEnv::assert_logs_at_trace(&self.daemon_log, from, &self.name);
    }

    /// The pid of the running daemon.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("no daemon running").pid()
    }

    /// Sends `signal` to the daemon without waiting (SIGSTOP, SIGCONT …).
    pub fn signal_daemon(&self, signal: i32) {
        process::send_signal(self.daemon_pid(), signal);
    }

    /// Sends a terminating `signal` and waits (10 s at most) for the exit.
    pub fn kill_daemon(&mut self, signal: i32) -> ExitStatus {
        let mut daemon = self.daemon.take().expect("no daemon running");
        daemon.stop(signal, Duration::from_secs(10))
    }

    /// SIGTERM (which must end it with status 0), then a new `otpd serve`.
    pub fn restart_daemon(&mut self) {
        let status = self.kill_daemon(libc::SIGTERM);
        assert!(
            status.success(),
            "otpd serve ended with {status} on SIGTERM:\n{}",
            self.log()
        );
        self.spawn_daemon();
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon_log).unwrap_or_default()
    }

    /// What the latest daemon started by [`TestEnv::spawn_daemon`] printed
    /// so far (the whole log before the first start).
    pub fn run_log(&self) -> String {
        self.log()
            .get(self.run_from..)
            .unwrap_or_default()
            .to_owned()
    }

    /// Fails if the daemon's output contains `secret` (secrets never reach a log).
    pub fn assert_log_free_of(&self, secret: &str) {
        assert!(
            !self.log().contains(secret),
            "the daemon's log contains a secret:\n{}",
            self.log()
        );
    }

    /// Runs `otpd --config CONFIG ARGS…` as root with stdin closed (not a terminal).
    pub fn otpd<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = Command::new(programs::otpd_binary());
        cmd.arg("--config").arg(&self.config).args(args);
        let out = process::run(cmd, b"", COMMAND_TIMEOUT);
        secrets::remember_from_output(&out.stdout);
        out
    }

    /// Runs `otpd --config CONFIG ARGS…` as uid 65534 (through `setpriv`).
    pub fn otpd_as_nobody<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let otpd = self.copy_for_nobody(&programs::otpd_binary(), "otpd", 0o755);
        let mut cmd = process::as_nobody(&otpd);
        cmd.arg("--config").arg(&self.config).args(args);
        let out = process::run(cmd, b"", COMMAND_TIMEOUT);
        secrets::remember_from_output(&out.stdout);
        out
    }

    /// Copies `source` to `bin/NAME` in the test dir (which any uid can
    /// reach), so that an unprivileged process can load it wherever the
    /// target dir is. Returns the copy.
    pub fn copy_for_nobody(&self, source: &Path, name: &str, mode: u32) -> PathBuf {
        let bin = self.dir.join("bin");
        std::fs::create_dir_all(&bin).expect("create bin dir");
        let copy = bin.join(name);
        if !copy.exists() {
            let partial = bin.join(format!(".{name}.{:?}", std::thread::current().id()));
            // Copied by `cp`, not by this process: a child that another
            // thread of the test forks while the copy is open for writing
            // would hold that descriptor until it execs, and exec(2) of the
            // copy would fail with ETXTBSY ("Text file busy"; seen in CI).
            let copied = Command::new("cp")
                .arg("--")
                .arg(source)
                .arg(&partial)
                .status()
                .expect("run cp");
            assert!(
                copied.success(),
                "cp {} {}: {copied}",
                source.display(),
                partial.display()
            );
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode))
                .expect("chmod the copy");
            std::fs::rename(&partial, &copy).expect("rename the copy");
        }
        copy
    }

    /// Runs `otpd` and asserts its exit status.
    pub fn otpd_expect<S: AsRef<OsStr>>(&self, args: &[S], status: i32) -> Output {
        let out = self.otpd(args);
        assert_eq!(
            out.status.code(),
            Some(status),
            "otpd {:?}: expected exit {status}, got {out}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        out
    }

    /// `otpd enroll USER EXTRA…`: must succeed; returns the enrolment parsed
    /// from the printed `otpauth://` line.
    pub fn enroll(&self, user: &str, extra: &[&str]) -> Enrollment {
        self.enroll_printing(user, extra).0
    }

    /// [`TestEnv::enroll`], with what the command printed (its notes about
    /// a replaced device, say).
    pub fn enroll_printing(&self, user: &str, extra: &[&str]) -> (Enrollment, Output) {
        let mut args = vec!["enroll", user];
        args.extend_from_slice(extra);
        let out = self.otpd_expect(&args, 0);
        let uri = out
            .stdout
            .lines()
            .find(|line| line.starts_with("otpauth://"))
            .unwrap_or_else(|| panic!("otpd enroll printed no otpauth:// line:\n{out}"));
        let enrollment =
            Enrollment::from_uri(uri.trim_end()).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(enrollment.user, user, "the URI names another user");
        (enrollment, out)
    }

    /// Enrols `user` and confirms with the code of `unix_time`.
    pub fn enroll_active(&self, user: &str, extra: &[&str], unix_time: u64) -> Enrollment {
        let enrollment = self.enroll(user, extra);
        let code = enrollment.code_at(unix_time);
        self.otpd_expect(&["confirm", user, &code], 0);
        enrollment
    }

    /// `otpd list --json`, parsed; panics unless it is a JSON array.
    pub fn list(&self) -> Vec<Value> {
        let out = self.otpd_expect(&["list", "--json"], 0);
        match serde_json::from_str(&out.stdout) {
            Ok(Value::Array(users)) => users,
            _ => panic!("otpd list --json did not print a JSON array:\n{out}"),
        }
    }

    /// The `list --json` entry of `user`, if any.
    pub fn list_entry(&self, user: &str) -> Option<Value> {
        self.list().into_iter().find(|entry| entry["user"] == user)
    }

    /// A PAM service whose stack is `stack`, in this env's service dir.
    ///
    /// Its name is unique in the whole test process (and across
    /// processes: the pid), not only in this env: libpam_wrapper 1.1.4
    /// copies each process's service dir into `/tmp/pam.X`, where X is one
    /// of 62 characters picked from the pid, and two pamtesters started at
    /// once can pick the same directory. With the same service name in two
    /// envs, one login then read the other env's file and went to the
    /// other test's daemon (seen in CI: a stranger's guess that never
    /// reached its daemon).
    pub fn pam_stack(&self, stack: &str) -> PamService {
        static ALL: AtomicUsize = AtomicUsize::new(0);
        let n = ALL.fetch_add(1, Ordering::SeqCst);
        let name = format!("otptest{}x{n}", std::process::id());
        PamService::create(&self.dir.join("pam.d"), &name, stack)
    }

    /// `auth required MODULE socket=SOCKET EXTRA` as a service.
    pub fn pam_service_with(&self, module: &Path, extra_module_args: &str) -> PamService {
        self.pam_stack(&format!(
            "auth required {} socket={} {extra_module_args}\n",
            module.display(),
            self.socket.display()
        ))
    }

    /// `auth required /abs/libpam_otpd.so socket=SOCKET EXTRA` as a service.
    pub fn pam_service(&self, extra_module_args: &str) -> PamService {
        self.pam_service_with(&programs::pam_module(), extra_module_args)
    }

    /// The `nullok` stack: the module's IGNORE becomes success through
    /// `pam_permit`, anything else but success fails.
    pub fn pam_service_nullok(&self, extra_module_args: &str) -> PamService {
        self.pam_stack(&format!(
            "auth [success=done ignore=ignore default=die] {} socket={} nullok {extra_module_args}\n\
             auth required {}\n",
            programs::pam_module().display(),
            self.socket.display(),
            programs::find_pam_module("pam_permit.so").display()
        ))
    }

    /// One login of `user` from `rhost` (empty: local) typing `code`, through
    /// a service `auth required libpam_otpd.so socket=… EXTRA`.
    pub fn pam_login(
        &self,
        user: &str,
        code: &str,
        rhost: &str,
        extra_module_args: &str,
    ) -> PamLogin {
        self.pam_service(extra_module_args)
            .login(OsStr::new(user), code, rhost, None)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(daemon) = &self.daemon {
            // A test may leave it SIGSTOPped; SIGKILL ends it anyway, but
            // continuing it first lets it flush what it was writing.
            let _ = process::try_signal(daemon.pid(), libc::SIGCONT);
        }
        drop(self.daemon.take());
        let leaked = if std::thread::panicking() {
            Vec::new()
        } else {
            self.leaked_secrets()
        };
        if std::thread::panicking() || !leaked.is_empty() {
            eprintln!(
                "---- otpd log of {} ({}) ----\n{}---- end of otpd log ----",
                self.name,
                self.dir.display(),
                self.log()
            );
        }
        if std::env::var_os("OTPD_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        assert!(
            leaked.is_empty(),
            "[{}] secrets leaked (design.md §3):\n  {}",
            self.name,
            leaked.join("\n  ")
        );
    }
}
