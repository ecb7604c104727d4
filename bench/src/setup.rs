//! The benchmark's world: one set of users with their secrets, and each
//! module set up for them as its own tools and documentation say, in a
//! temporary directory that is removed at the end (also on a panic).

use crate::postgres::Postgres;
use otpd_proto::{EnrollParams, Request, Response, SecretText};
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use totp_rs::{Builder, Totp};

/// Seconds per time step (RFC 6238 default, and every module's).
pub const PERIOD: u64 = 30;

/// Now, in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One user of the benchmark.
pub struct User {
    /// The login name, for libpam.
    pub name: CString,
    /// The same, for the socket protocol.
    pub name_str: String,
    /// The raw secret.
    pub secret: Vec<u8>,
    totp: Totp,
}

impl User {
    /// The user's code at unix time `t`.
    pub fn code_at(&self, t: u64) -> String {
        self.totp.generate(t).to_string()
    }
}

/// The user the daemon is asked about to see that it answers.
pub const PROBE_USER: &str = "bench-probe";

/// A user name for index `i`.
pub fn user_name(i: usize) -> String {
    format!("bu{i:06}")
}

fn totp_for(secret: &[u8]) -> Result<Totp, String> {
    Builder::new()
        .with_secret(secret.to_vec())
        .build()
        .map_err(|e| e.to_string())
}

fn make_user(name: String, secret: Vec<u8>) -> Result<User, String> {
    Ok(User {
        name: CString::new(name.clone()).map_err(|e| e.to_string())?,
        name_str: name,
        totp: totp_for(&secret)?,
        secret,
    })
}

/// The RFC 4648 base32 alphabet, without padding, as every authenticator
/// file format here wants it.
fn base32(bytes: &[u8]) -> String {
    totp_rs::Secret::from(bytes.to_vec()).to_base32()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One request on a new connection to the daemon.
pub fn ask(socket: &Path, request: &Request) -> Result<Response, String> {
    otpd_proto::Client {
        socket: socket.display().to_string(),
        timeout: Duration::from_secs(10),
        trust: otpd_proto::Trust {
            daemon_user: "otpd".into(),
            caller_itself: true,
        },
    }
    .ask(request)
    .map_err(|e| e.to_string())
}

/// The running daemon and where it lives.
pub struct Daemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    otpd: PathBuf,
}

impl Daemon {
    /// The daemon's pid, for /proc.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn spawn(otpd: &Path, config: &Path, log: &Path) -> Result<Child, String> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        crate::nss::clean(&mut Command::new(otpd))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", otpd.display()))
    }

    /// Starts `otpd serve` and returns once it answers a request, with the
    /// time that took.
    fn start(
        otpd: &Path,
        config: &Path,
        socket: &Path,
        log: &Path,
    ) -> Result<(Daemon, Duration), String> {
        let started = Instant::now();
        let mut child = Daemon::spawn(otpd, config, log)?;
        loop {
            // The first answer of a login: its first step.
            let probe = Request::Login(Box::new(otpd_proto::LoginStart::plain(
                PROBE_USER,
                "otpd-bench",
                "192.0.2.250",
                0,
            )));
            if let Ok(Response::Step(_)) = ask(socket, &probe) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("otpd serve exited with {status}:\n{text}"));
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                return Err("otpd serve did not answer within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let ready = started.elapsed();
        Ok((
            Daemon {
                child,
                socket: socket.to_owned(),
                config: config.to_owned(),
                log: log.to_owned(),
                otpd: otpd.to_owned(),
            },
            ready,
        ))
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM: the daemon syncs and exits; then reap it.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon and starts it again over the same store; returns
    /// the time from the start to the first answered request.
    pub fn restart(&mut self) -> Result<Duration, String> {
        self.stop();
        let (daemon, ready) = Daemon::start(&self.otpd, &self.config, &self.socket, &self.log)?;
        *self = daemon;
        Ok(ready)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Paths of the programs and modules under test.
pub struct Programs {
    /// `otpd`.
    pub otpd: PathBuf,
    /// `libpam_otpd.so`.
    pub pam_otpd: PathBuf,
}

/// The world of one run: users, files, services and the daemon.
pub struct World {
    /// The temporary directory.
    pub dir: PathBuf,
    /// Its `pam.d`, for `pam_start_confdir`.
    pub confdir: CString,
    /// Every user.
    pub users: Vec<User>,
    /// The daemon, when otpd is benchmarked.
    pub daemon: Option<Daemon>,
    /// The time `otpd serve` took to answer its first request after a
    /// restart with every user enrolled.
    pub startup: Option<Duration>,
    /// Per user, the last step whose code otpd accepted (the enrolment's
    /// confirmation uses one).
    pub otpd_confirmed_step: Vec<AtomicU64>,
    keep: bool,
}

impl Drop for World {
    fn drop(&mut self) {
        self.daemon = None;
        if self.keep {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Where a system PAM module lives (Debian multiarch or the plain path).
pub fn system_module(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/lib") {
        for entry in entries.flatten() {
            dirs.push(entry.path().join("security"));
        }
    }
    dirs.extend(
        [
            "/lib/security",
            "/lib64/security",
            "/usr/lib/security",
            "/usr/lib64/security",
        ]
        .map(PathBuf::from),
    );
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.exists())
}

/// What to set up.
pub struct Plan<'a> {
    /// How many users.
    pub users: usize,
    /// Set up otpd (enrol every user through the daemon).
    pub otpd: bool,
    /// Write pam_google_authenticator's files.
    pub google_authenticator: bool,
    /// Write pam_oath's usersfile.
    pub oath: bool,
    /// Threads for the enrolment.
    pub enroll_threads: usize,
    /// The programs.
    pub programs: &'a Programs,
    /// otpd's store: this PostgreSQL database (wiped before the daemon
    /// starts), or sled in the world's state directory when `None`.
    pub postgres: Option<&'a Postgres>,
    /// Keep the directory at the end.
    pub keep: bool,
}

impl World {
    /// Creates the directory, the users and every module's files, and
    /// starts the daemon with every user enrolled and confirmed.
    pub fn build(plan: &Plan<'_>) -> Result<World, String> {
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("otpd-bench-{}", hex(&random)));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let confdir_path = dir.join("pam.d");
        std::fs::create_dir(&confdir_path).map_err(|e| e.to_string())?;
        let mut world = World {
            confdir: CString::new(confdir_path.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?,
            dir,
            users: Vec::new(),
            daemon: None,
            startup: None,
            otpd_confirmed_step: Vec::new(),
            keep: plan.keep,
        };
        // libpam reads "other" when a service has no rule for a type, and
        // logs a complaint on every start when it is missing.
        world.write_service(
            "other",
            &format!("auth required {}\n", module_path("pam_deny.so")?),
        )?;
        world.write_service(
            "bench-permit",
            &format!("auth required {}\n", module_path("pam_permit.so")?),
        )?;
        if plan.otpd {
            world.start_otpd(plan)?;
        } else {
            let started = Instant::now();
            for i in 0..plan.users {
                let mut secret = vec![0u8; 20];
                getrandom::getrandom(&mut secret).map_err(|e| e.to_string())?;
                world.users.push(make_user(user_name(i), secret)?);
            }
            world.otpd_confirmed_step = (0..plan.users).map(|_| AtomicU64::new(0)).collect();
            println!(
                "made {} random secrets in {:.1} s",
                plan.users,
                started.elapsed().as_secs_f64()
            );
        }
        if plan.google_authenticator {
            world.write_google_authenticator()?;
        }
        if plan.oath {
            world.write_oath()?;
        }
        Ok(world)
    }

    fn write_service(&self, name: &str, stack: &str) -> Result<(), String> {
        write_file(&self.dir.join("pam.d").join(name), stack, 0o644)
    }

    /// otpd: the packaged config with this world's paths (and the
    /// PostgreSQL store, when planned, wiped first), a daemon, and every
    /// user enrolled (`Enrol`) and confirmed (`Confirm`) through the
    /// socket, as `otpd enroll` and `otpd confirm` do.
    fn start_otpd(&mut self, plan: &Plan<'_>) -> Result<(), String> {
        let state = self.dir.join("state");
        std::fs::create_dir(&state).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let socket = self.dir.join("otpd.sock");
        let config = self.dir.join("otpd.toml");
        let mut text = format!(
            "socket = \"{}\"\nstate_dir = \"{}\"\nkey_file = \"{}\"\n",
            socket.display(),
            state.display(),
            self.dir.join("otpd.key").display()
        );
        if let Some(pg) = plan.postgres {
            // The password stays out of the config, as README.md says.
            let url_file = self.dir.join("db-url");
            write_file(&url_file, &format!("{}\n", pg.url), 0o600)?;
            let _ = write!(
                text,
                "\n[store]\nkind = \"postgres\"\nurl_file = \"{}\"\ntimeout = \"1s\"\npool_size = 16\n",
                url_file.display()
            );
            pg.wipe()?;
        }
        write_file(&config, &text, 0o644)?;
        let log = self.dir.join("otpd.log");
        let (daemon, _) = Daemon::start(&plan.programs.otpd, &config, &socket, &log)?;
        self.write_service(
            "bench-otpd",
            &format!(
                "auth required {} socket={}\n",
                plan.programs.pam_otpd.display(),
                socket.display()
            ),
        )?;

        let started = Instant::now();
        let n = plan.users;
        let slots: Vec<Mutex<Option<Enrolled>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failure: Mutex<Option<String>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..plan.enroll_threads.max(1) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    match enroll_one(&socket, &user_name(i)) {
                        Ok(done) => {
                            if let Ok(mut slot) = slots[i].lock() {
                                *slot = Some(done);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().ok().flatten() {
            return Err(format!("enrolment failed: {e}"));
        }
        let took = started.elapsed();
        println!(
            "otpd: enrolled and confirmed {n} users through the socket in {:.1} s ({:.0} users/s, {} threads)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            plan.enroll_threads
        );
        for (i, slot) in slots.into_iter().enumerate() {
            let (secret, step) = slot
                .into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| format!("user {i} was not enrolled"))?;
            self.users.push(make_user(user_name(i), secret)?);
            self.otpd_confirmed_step.push(AtomicU64::new(step));
        }
        let mut daemon = daemon;
        let ready = daemon.restart()?;
        println!(
            "otpd: restarted with {n} users: answering after {:.0} ms",
            ready.as_secs_f64() * 1000.0
        );
        self.startup = Some(ready);
        self.daemon = Some(daemon);
        Ok(())
    }

    /// pam_google_authenticator: one secret file per user with the option
    /// lines that Debian's `google-authenticator` tool writes for
    /// `-t -d -r 3 -R 30 -w 3` (TOTP, DISALLOW_REUSE, RATE_LIMIT 3 per 30 s,
    /// window 3), and five scratch codes. The option lines are taken from a
    /// file the tool itself wrote.
    fn write_google_authenticator(&self) -> Result<(), String> {
        let started = Instant::now();
        let template = self.dir.join("ga-template");
        let out = Command::new("google-authenticator")
            .args([
                "-t",
                "-d",
                "-f",
                "-r",
                "3",
                "-R",
                "30",
                "-w",
                "3",
                "-q",
                "--no-confirm",
                "-s",
            ])
            .arg(&template)
            .output()
            .map_err(|e| {
                format!("google-authenticator (Debian's libpam-google-authenticator): {e}")
            })?;
        if !out.status.success() {
            return Err(format!(
                "google-authenticator failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let written = std::fs::read_to_string(&template).map_err(|e| e.to_string())?;
        let options: String = written
            .lines()
            .filter(|l| l.starts_with('"'))
            .map(|l| format!("{l}\n"))
            .collect();
        if !options.contains("DISALLOW_REUSE") || !options.contains("RATE_LIMIT") {
            return Err(format!(
                "google-authenticator wrote no DISALLOW_REUSE or RATE_LIMIT line:\n{options}"
            ));
        }
        let dir = self.dir.join("ga");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        for user in &self.users {
            let mut text = format!("{}\n{options}", base32(&user.secret));
            for _ in 0..5 {
                let mut b = [0u8; 4];
                getrandom::getrandom(&mut b).map_err(|e| e.to_string())?;
                let _ = writeln!(
                    text,
                    "{:08}",
                    10_000_000 + u32::from_le_bytes(b) % 90_000_000
                );
            }
            write_file(&dir.join(&user.name_str), &text, 0o400)?;
        }
        self.write_service(
            "bench-google-authenticator",
            &format!(
                "auth required {} secret={}/${{USER}} user=root\n",
                module_path("pam_google_authenticator.so")?,
                dir.display()
            ),
        )?;
        println!(
            "pam_google_authenticator: wrote {} secret files in {:.1} s",
            self.users.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// pam_oath: one usersfile with a `HOTP/T30` (TOTP, 30 s, 6 digits)
    /// line per user, no PIN, the secret in hex.
    fn write_oath(&self) -> Result<(), String> {
        let mut text = String::with_capacity(self.users.len() * 64);
        for user in &self.users {
            let _ = writeln!(
                text,
                "HOTP/T30\t{}\t-\t{}",
                user.name_str,
                hex(&user.secret)
            );
        }
        let file = self.dir.join("users.oath");
        write_file(&file, &text, 0o600)?;
        self.write_service(
            "bench-oath",
            &format!(
                "auth required {} usersfile={} window=1 digits=6\n",
                module_path("pam_oath.so")?,
                file.display()
            ),
        )?;
        Ok(())
    }
}

fn module_path(name: &str) -> Result<String, String> {
    system_module(name)
        .map(|p| p.display().to_string())
        .ok_or_else(|| format!("{name} is not installed"))
}

/// A user's secret and the step whose code confirmed the enrolment.
type Enrolled = (Vec<u8>, u64);

/// `Enrol` then `Confirm` with the current code; returns the secret and the
/// step the confirmation used.
fn enroll_one(socket: &Path, user: &str) -> Result<Enrolled, String> {
    let request = Request::Enroll(EnrollParams {
        user: user.to_owned(),
        issuer: None,
        algorithm: None,
        digits: None,
        period: None,
        force: false,
        link_expires: None,
        ..EnrollParams::default()
    });
    let enrollment = match ask(socket, &request)? {
        Response::Enrolled(e) => e,
        other => return Err(format!("enrol {user}: {other:?}")),
    };
    let secret = totp_rs::Secret::try_from_base32(enrollment.secret_base32.expose())
        .map_err(|e| format!("enrol {user}: {e}"))?
        .as_ref()
        .to_vec();
    let totp = totp_for(&secret)?;
    let now = unix_now();
    let confirm = Request::Confirm {
        user: user.to_owned(),
        code: SecretText::from(totp.generate(now).to_string().as_str()),
    };
    match ask(socket, &confirm)? {
        Response::Confirmed { .. } => Ok((secret, now / PERIOD)),
        other => Err(format!("confirm {user}: {other:?}")),
    }
}
