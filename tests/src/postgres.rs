//! [`PgCluster`]: a throw-away PostgreSQL server for the tests of the
//! PostgreSQL store.
//!
//! Debian's server binaries (`/usr/lib/postgresql/<major>/bin`, the highest
//! major installed) build a cluster in a fresh temporary directory. It
//! listens on a free port of 127.0.0.1 only, takes SCRAM passwords only (no
//! `trust` line), offers TLS with a certificate for `localhost` and
//! 127.0.0.1 from a CA made for this cluster, and keeps `fsync = on` so that
//! durability is real. initdb refuses root, so when the tests run as root
//! the server runs as uid/gid 65534 (`nobody`); otherwise as the tests' own
//! user. Dropping the cluster stops the server, kills whatever is left of
//! it and removes the directory, also when the test panicked (then the
//! server log's tail is printed).

use crate::ca::TestCa;
use crate::env::fresh_temp_dir;
use crate::process::{self, Output, NOBODY_UID};
use crate::programs::{self, Program};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the server binaries, one dir per major version.
const SERVER_ROOT: &str = "/usr/lib/postgresql";
/// Debian's `psql` (pg_wrapper picks the newest client installed).
const PSQL: &str = "/usr/bin/psql";
/// How long initdb, pg_ctl or psql may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// `pg_ctl -t`: how long pg_ctl waits for a start or a stop.
const PG_CTL_WAIT_SECONDS: &str = "30";
/// Start attempts, each on a new free port, when the port was taken
/// between choosing it and the server binding it.
const START_ATTEMPTS: u32 = 5;
/// Lines of the server log printed when a test panics.
const LOG_TAIL_LINES: usize = 60;

/// Who owns the cluster's files and runs its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerUser {
    /// uid/gid 65534, through `setpriv` (the tests run as root).
    Nobody,
    /// The user running the tests (not root).
    Current,
}

/// A running PostgreSQL cluster in its own temporary directory.
///
/// Layout of [`PgCluster::dir`]: `data/` (the cluster), `server.log`,
/// `tls/` (`ca.pem`, `server.crt`, `server.key`) and the Unix socket
/// (`.s.PGSQL.<port>`, which the tests do not use: they connect over TCP).
pub struct PgCluster {
    /// The test's name, for messages.
    pub name: String,
    /// The temporary directory holding everything of this cluster.
    pub dir: PathBuf,
    /// The data directory (`PGDATA`), `dir/data`.
    pub data_dir: PathBuf,
    /// The server's log, `dir/server.log`.
    pub log: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The role the tests connect as: the cluster's bootstrap superuser.
    pub user: String,
    /// Its password (24 random alphanumerics).
    pub password: String,
    /// The database made for the tests, owned by [`PgCluster::user`].
    pub database: String,
    /// The PEM certificate of the CA that signed the server's certificate
    /// (readable by every user).
    pub ca_file: PathBuf,
    bin: PathBuf,
    server_user: ServerUser,
}

impl PgCluster {
    /// Starts a cluster, or returns `None` with a one-line reason printed
    /// when PostgreSQL's server binaries (or psql, openssl, setpriv) are
    /// missing and CI is not set (under `CI=true`: panics instead, no skip).
    pub fn start(name: &str) -> Option<PgCluster> {
        let Some(bin) = server_bin_dir() else {
            skip(
                name,
                &format!(
                    "PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not installed \
                     in {SERVER_ROOT}/<major>/bin (apt-get install postgresql)"
                ),
            );
            return None;
        };
        if !Path::new(PSQL).is_file() {
            skip(
                name,
                &format!("{PSQL} is not installed (apt-get install postgresql)"),
            );
            return None;
        }
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        let server_user = if unsafe { libc::geteuid() } == 0 {
            ServerUser::Nobody
        } else {
            ServerUser::Current
        };
        let mut needed = vec![Program::Openssl];
        if server_user == ServerUser::Nobody {
            needed.push(Program::Setpriv);
        }
        if !programs::require(name, &needed) {
            return None;
        }

        let started = Instant::now();
        let dir = fresh_temp_dir("pg", name);
        // From here on a panic drops the cluster, which cleans up.
        let mut cluster = PgCluster {
            name: name.to_owned(),
            data_dir: dir.join("data"),
            log: dir.join("server.log"),
            ca_file: dir.join("tls").join("ca.pem"),
            dir,
            port: 0,
            user: "otpd".to_owned(),
            password: random_alphanumerics(24),
            database: "otpd".to_owned(),
            bin,
            server_user,
        };
        cluster.prepare_dir();
        cluster.make_certificates();
        let certificates_done = Instant::now();
        cluster.initdb();
        let initdb_done = Instant::now();
        cluster.configure();
        cluster.start_on_a_free_port();
        let server_up = Instant::now();
        cluster.create_database(&cluster.database);
        println!(
            "[pg {name}] cluster {} on 127.0.0.1:{} (PostgreSQL {}): certificates {} ms, \
             initdb {} ms, start {} ms, createdb {} ms",
            cluster.dir.display(),
            cluster.port,
            cluster
                .bin
                .parent()
                .and_then(Path::file_name)
                .unwrap_or_default()
                .to_string_lossy(),
            (certificates_done - started).as_millis(),
            (initdb_done - certificates_done).as_millis(),
            (server_up - initdb_done).as_millis(),
            server_up.elapsed().as_millis()
        );
        Some(cluster)
    }

    /// `postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE?sslmode=disable`.
    pub fn url(&self) -> String {
        self.url_for_db(&self.database)
    }

    /// [`PgCluster::url`] with `sslmode=require`, the host written as
    /// `localhost` so that a client verifying the certificate (against
    /// [`PgCluster::ca_file`]) finds its name in it.
    pub fn url_tls(&self) -> String {
        format!(
            "postgresql://{}:{}@localhost:{}/{}?sslmode=require",
            self.user,
            self.password,
            self.port,
            percent_encode(&self.database)
        )
    }

    /// [`PgCluster::url`] for the database `db`.
    pub fn url_for_db(&self, db: &str) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}?sslmode=disable",
            self.user,
            self.password,
            self.port,
            percent_encode(db)
        )
    }

    /// `CREATE DATABASE db OWNER user`; panics on failure.
    pub fn create_database(&self, db: &str) {
        let sql = format!(
            "CREATE DATABASE {} OWNER {};",
            quote_ident(db),
            quote_ident(&self.user)
        );
        let out = self.psql_with(&self.url_for_db("postgres"), &sql);
        assert!(
            out.status.success(),
            "[pg {}] {sql} failed: {out}",
            self.name
        );
    }

    /// Runs `sql` (one or more statements, stopping at the first error)
    /// through psql over TCP as [`PgCluster::user`] on
    /// [`PgCluster::database`]; panics with psql's stderr on failure.
    /// Returns psql's unaligned, tuples-only output (`-At`).
    pub fn psql(&self, sql: &str) -> String {
        let out = self.psql_with(&self.url(), sql);
        assert!(
            out.status.success(),
            "[pg {}] psql failed on {sql:?}: {}\n{}",
            self.name,
            out.stderr.trim_end(),
            out
        );
        out.stdout
    }

    /// Runs `sql` through psql (`-X -q -At -v ON_ERROR_STOP=1`, the SQL on
    /// stdin) connecting with `conninfo` (a URL or `key=value` pairs), and
    /// returns what happened, whether it failed or not. `PG*` variables of
    /// the environment are removed, so `conninfo` says everything.
    pub fn psql_with(&self, conninfo: &str, sql: &str) -> Output {
        let mut cmd = Command::new(PSQL);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("LC_ALL", "C")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(conninfo);
        process::run(cmd, sql.as_bytes(), COMMAND_TIMEOUT)
    }

    /// `pg_ctl stop -m fast`, waiting until the server has exited; panics
    /// if it does not stop.
    pub fn stop(&self) {
        let started = Instant::now();
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", PG_CTL_WAIT_SECONDS]);
        assert!(
            out.status.success(),
            "[pg {}] pg_ctl stop failed: {out}\n{}",
            self.name,
            self.log_tail()
        );
        println!(
            "[pg {}] stopped in {} ms",
            self.name,
            started.elapsed().as_millis()
        );
    }

    /// `pg_ctl start` on the same directory and port, waiting until the
    /// server accepts connections; panics if it does not.
    pub fn start_again(&self) {
        let started = Instant::now();
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "[pg {}] pg_ctl start failed: {out}\n{}",
            self.name,
            self.log_tail()
        );
        self.wait_until_accepting();
        println!(
            "[pg {}] started again in {} ms",
            self.name,
            started.elapsed().as_millis()
        );
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"]).status.success()
    }

    /// The postmaster's pid, from `postmaster.pid`, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The pids of the server's processes: every process working in this
    /// cluster's directory (PostgreSQL's processes all work in the data
    /// dir, and each backend is a session leader of its own, so neither
    /// the command line nor the process group finds them all), plus any
    /// process whose command line names the directory.
    pub fn server_processes(&self) -> Vec<u32> {
        let inside = format!("{}/", self.dir.display());
        live_processes()
            .into_iter()
            .filter(|process| {
                process.working_dir.starts_with(&self.dir) || process.command.contains(&inside)
            })
            .map(|process| process.pid)
            .collect()
    }

    /// Everything the server logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the server log, framed for a failure message.
    fn log_tail(&self) -> String {
        let log = self.server_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!(
            "---- tail of the PostgreSQL log of {} ({}) ----\n{tail}\n---- end of the PostgreSQL log ----",
            self.name,
            self.log.display()
        )
    }

    /// Makes the dir reachable and writable for the server user: it holds
    /// the log, the socket and the data dir, which initdb creates.
    fn prepare_dir(&self) {
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the cluster dir");
        if self.server_user == ServerUser::Nobody {
            for ancestor in self.dir.ancestors().skip(1) {
                let mode = ancestor
                    .metadata()
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                assert!(
                    mode & 0o001 != 0,
                    "[pg {}] {} is not searchable by others (mode {mode:o}), so uid {NOBODY_UID} \
                     cannot reach {}: point TMPDIR at a dir such as /tmp",
                    self.name,
                    ancestor.display(),
                    self.dir.display()
                );
            }
        }
        self.give_to_server(&self.dir);
        std::fs::create_dir(self.dir.join("tls")).expect("create the tls dir");
    }

    /// chown to the server user (nothing to do when that is us).
    fn give_to_server(&self, path: &Path) {
        if self.server_user == ServerUser::Nobody {
            chown(path, Some(NOBODY_UID), Some(NOBODY_UID))
                .unwrap_or_else(|e| panic!("chown {} to {NOBODY_UID}: {e}", path.display()));
        }
    }

    /// A test CA ([`TestCa`]), and a certificate for `localhost` and
    /// 127.0.0.1 signed by it. The CA's key is deleted once it has signed:
    /// nothing else may carry this CA's signature.
    fn make_certificates(&self) {
        let tls = self.dir.join("tls");
        let mut ca = TestCa::root(&tls, "ca", &format!("otpd test CA for {}", self.name));
        assert_eq!(ca.cert, self.ca_file, "the CA's certificate is tls/ca.pem");
        let (_, server_key) = ca.issue_server("server");
        ca.forget_key();
        // PostgreSQL refuses a key file that others can read (TestCa makes
        // it 0600), and one owned by anyone but the server user or root.
        self.give_to_server(&server_key);
    }

    /// `initdb` with a SCRAM password for [`PgCluster::user`].
    fn initdb(&self) {
        let password_file = self.dir.join("password");
        std::fs::write(&password_file, format!("{}\n", self.password))
            .expect("write the password file");
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the password file");
        self.give_to_server(&password_file);
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("--auth=scram-sha-256")
            .arg(format!("--username={}", self.user))
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["-E", "UTF8", "--locale=C", "--no-instructions"]);
        let out = process::run(cmd, b"", COMMAND_TIMEOUT);
        let _ = std::fs::remove_file(&password_file);
        assert!(
            out.status.success(),
            "[pg {}] initdb failed: {out}",
            self.name
        );
    }

    /// Replaces initdb's pg_hba.conf: SCRAM over TCP from 127.0.0.1 only.
    /// A `host` line covers TLS and plain connections alike; there is no
    /// `local` line, so the Unix socket lets nobody in. Then makes
    /// postgresql.conf include the test's settings ([`Self::write_settings`]).
    fn configure(&self) {
        let path = self.data_dir.join("pg_hba.conf");
        std::fs::write(
            &path,
            "# Written by otpd-tests (tests/src/postgres.rs).\n\
             # TYPE  DATABASE  USER  ADDRESS       METHOD\n\
             host    all       all   127.0.0.1/32  scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        self.give_to_server(&path);
        let conf = self.data_dir.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .expect("open postgresql.conf");
        file.write_all(
            b"\n# The test's own settings (tests/src/postgres.rs):\ninclude 'otpd-test.conf'\n",
        )
        .expect("append to postgresql.conf");
    }

    /// The settings that differ between attempts (the port) and the rest.
    fn write_settings(&self) {
        let tls = self.dir.join("tls");
        let path = self.data_dir.join("otpd-test.conf");
        std::fs::write(
            &path,
            format!(
                "# Written by otpd-tests (tests/src/postgres.rs).\n\
                 listen_addresses = '127.0.0.1'\n\
                 port = {}\n\
                 unix_socket_directories = {}\n\
                 max_connections = 200\n\
                 fsync = on\n\
                 ssl = on\n\
                 ssl_cert_file = {}\n\
                 ssl_key_file = {}\n\
                 log_connections = on\n\
                 log_statement = 'all'\n\
                 log_line_prefix = '%m [pid=%p] '\n",
                self.port,
                conf_string(&self.dir),
                conf_string(&tls.join("server.crt")),
                conf_string(&tls.join("server.key")),
            ),
        )
        .expect("write otpd-test.conf");
        self.give_to_server(&path);
    }

    /// Starts the server, on a new free port while the chosen one turns out
    /// to be taken.
    fn start_on_a_free_port(&mut self) {
        let mut last_failure = String::new();
        for _attempt in 0..START_ATTEMPTS {
            self.port = crate::net::free_port();
            self.write_settings();
            let log_before = self.server_log().len();
            let out = self.pg_ctl_start();
            if out.status.success() {
                self.wait_until_accepting();
                return;
            }
            let new_log = self.server_log().get(log_before..).unwrap_or("").to_owned();
            last_failure = format!("{out}\n---- server log ----\n{new_log}");
            if !new_log.contains("Address already in use") {
                break;
            }
        }
        panic!(
            "[pg {}] the server did not start: {last_failure}",
            self.name
        );
    }

    fn pg_ctl_start(&self) -> Output {
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            PG_CTL_WAIT_SECONDS,
            "-l",
            &self.log.to_string_lossy(),
        ])
    }

    /// pg_ctl -w already waits for the postmaster to report "ready"; this
    /// checks it from the outside too, and that the listener on the port
    /// is this cluster's postmaster (the port was only free a moment ago).
    fn wait_until_accepting(&self) {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "[pg {}] nothing accepts on 127.0.0.1:{}\n{}",
                self.name,
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let postmaster = self.postmaster_pid();
        assert!(
            postmaster.is_some_and(|pid| crate::net::listens_on(pid, self.port)),
            "[pg {}] the listener on 127.0.0.1:{} is not this cluster's postmaster \
             (pid {postmaster:?})\n{}",
            self.name,
            self.port,
            self.log_tail()
        );
    }

    /// `pg_ctl ARGS… -D DATA` as the server user.
    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.server_command("pg_ctl");
        cmd.args(args).arg("-D").arg(&self.data_dir);
        process::run(cmd, b"", COMMAND_TIMEOUT)
    }

    /// A server binary, run as the server user from the cluster dir (the
    /// tests' working dir may be closed to uid 65534).
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.server_user {
            ServerUser::Nobody => process::as_nobody(&path),
            ServerUser::Current => Command::new(path),
        };
        cmd.current_dir(&self.dir).env("LC_ALL", "C");
        cmd
    }

    /// Stops the server however it can, without panicking (it runs in
    /// `Drop`), and kills what is left of it.
    fn stop_for_good(&self) {
        let mut cmd = self.server_command("pg_ctl");
        cmd.args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = cmd.status();
        let started = Instant::now();
        loop {
            let left = self.server_processes();
            if left.is_empty() {
                return;
            }
            for pid in &left {
                let _ = process::try_signal(*pid, libc::SIGKILL);
            }
            if started.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "[pg {}] processes {left:?} survived SIGKILL for 10 s",
                    self.name
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl PgCluster {
    /// The remembered secrets ([`crate::secrets`]) in the server's log,
    /// with the lines that hold them. The server logs every statement
    /// with its parameters (`log_statement = 'all'`), so this is every
    /// value the hosts sent, as the database saw it.
    pub fn leaked_secrets(&self) -> Vec<String> {
        let all = crate::secrets::all();
        let log = self.server_log();
        println!(
            "[pg {}] secrets check: {} remembered secrets against {} lines ({} KiB) of the \
             PostgreSQL server's log",
            self.name,
            all.len(),
            log.lines().count(),
            log.len() / 1024
        );
        crate::secrets::leaked_into(&log, &all)
            .into_iter()
            .map(|secret| {
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|line| {
                        !crate::secrets::leaked_into(line, std::slice::from_ref(&secret)).is_empty()
                    })
                    .take(3)
                    .collect();
                format!(
                    "{secret} in the PostgreSQL server's log {}: {}",
                    self.log.display(),
                    lines.join(" | ")
                )
            })
            .collect()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let started = Instant::now();
        self.stop_for_good();
        let leaked = if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            Vec::new()
        } else {
            self.leaked_secrets()
        };
        if std::env::var_os("OTPD_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        println!(
            "[pg {}] dropped (server stopped, dir removed) in {} ms",
            self.name,
            started.elapsed().as_millis()
        );
        assert!(
            leaked.is_empty(),
            "[pg {}] secrets leaked into the database server's log (design.md §3):\n  {}",
            self.name,
            leaked.join("\n  ")
        );
    }
}

/// Prints the skip line, or panics under CI.
fn skip(test: &str, reason: &str) {
    if programs::under_ci() {
        panic!("{test}: {reason}, and CI=true forbids skipping (run tests/run-all.sh)");
    }
    println!("SKIP {test}: {reason}");
}

/// `/usr/lib/postgresql/<major>/bin` of the highest major that has
/// initdb, pg_ctl and postgres.
fn server_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir(SERVER_ROOT).ok()?;
    entries
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|program| is_executable(&bin.join(program)))
                .then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}

/// `n` random characters of `[A-Za-z0-9]`, from /dev/urandom (the
/// crate's [`crate::rng`] is seeded and repeatable: not for passwords).
fn random_alphanumerics(n: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for byte in random_bytes(n) {
            // 248 = 4 × 62: dropping the bytes above keeps the characters
            // equally likely.
            if byte < 248 && out.len() < n {
                out.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    out
}

/// A string literal of postgresql.conf.
fn conf_string(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "''"))
}

/// An SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What `/proc/<pid>` says about a process.
struct ProcessInfo {
    pid: u32,
    /// The command line, arguments joined by spaces.
    command: String,
    /// The working directory (its last part suffixed ` (deleted)` once
    /// removed).
    working_dir: PathBuf,
}

/// Every process but this one and the zombies.
fn live_processes() -> Vec<ProcessInfo> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own {
                return None;
            }
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state …"; comm may hold spaces and parens.
            let state = stat
                .get(stat.rfind(')')? + 1..)?
                .split_whitespace()
                .next()?;
            if state == "Z" || state == "X" {
                return None;
            }
            let command = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let working_dir = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
            Some(ProcessInfo {
                pid,
                command: String::from_utf8_lossy(&command)
                    .replace('\0', " ")
                    .trim_end()
                    .to_owned(),
                working_dir,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{percent_encode, quote_ident, random_alphanumerics};

    #[test]
    fn passwords_are_alphanumeric_and_differ() {
        let (a, b) = (random_alphanumerics(24), random_alphanumerics(24));
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn names_are_quoted_for_urls_and_sql() {
        assert_eq!(percent_encode("otpd_2-x"), "otpd_2-x");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
