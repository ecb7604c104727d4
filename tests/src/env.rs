//! [`TestEnv`]: a temporary directory with a config, a running `otpd serve`,
//! and helpers to drive it through the CLI and through libpam.

use crate::pam::{PamLogin, PamService};
use crate::process::{self, ChildGuard, Output};
use crate::programs;
use crate::secrets;
use crate::totp::Enrolment;
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
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

/// How long `otpd serve` may take to accept its first connection.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one CLI command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

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
    services: AtomicU32,
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
                "socket = \"{}\"\nstate_dir = \"{}\"\nkey_file = \"{}\"\n\n[totp]\nissuer = \"otpd-test\"\n\n\
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
            services: AtomicU32::new(0),
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

    /// The remembered secrets ([`crate::secrets`]) found in the daemon's log,
    /// or in clear in the store.
    pub fn leaked_secrets(&self) -> Vec<String> {
        let all = secrets::all();
        let log = self.log();
        println!(
            "[{}] secrets check: {} remembered secrets against {} log lines ({} KiB) and the store",
            self.name,
            all.len(),
            log.lines().count(),
            log.len() / 1024
        );
        let mut found: Vec<String> = secrets::leaked_into(&log, &all)
            .into_iter()
            .map(|s| format!("{s} in the daemon's log {}", self.daemon_log.display()))
            .collect();
        found.extend(secrets::in_clear_under(&self.state_dir, &all));
        found
    }

    /// Starts `otpd serve` and waits until its socket accepts a connection.
    pub fn spawn_daemon(&mut self) {
        assert!(self.daemon.is_none(), "a daemon is already running");
        let started = Instant::now();
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
            std::fs::copy(source, &partial).expect("copy a binary");
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
    pub fn enroll(&self, user: &str, extra: &[&str]) -> Enrolment {
        let mut args = vec!["enroll", user];
        args.extend_from_slice(extra);
        let out = self.otpd_expect(&args, 0);
        let uri = out
            .stdout
            .lines()
            .find(|line| line.starts_with("otpauth://"))
            .unwrap_or_else(|| panic!("otpd enroll printed no otpauth:// line:\n{out}"));
        let enrolment =
            Enrolment::from_uri(uri.trim_end()).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(enrolment.user, user, "the URI names another user");
        enrolment
    }

    /// Enrols `user` and confirms with the code of `unix_time`.
    pub fn enroll_active(&self, user: &str, extra: &[&str], unix_time: u64) -> Enrolment {
        let enrolment = self.enroll(user, extra);
        let code = enrolment.code_at(unix_time);
        self.otpd_expect(&["confirm", user, &code], 0);
        enrolment
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
    pub fn pam_stack(&self, stack: &str) -> PamService {
        let n = self.services.fetch_add(1, Ordering::SeqCst);
        PamService::create(&self.dir.join("pam.d"), &format!("otptest{n}"), stack)
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
