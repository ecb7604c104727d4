//! A real OpenSSH server on a loopback port inside a [`PrivateHost`], and
//! the real `ssh` client driven through its prompts with `SSH_ASKPASS`
//! (`SSH_ASKPASS_REQUIRE=force`): a small script that records each prompt
//! and answers the password prompt with the password and any other prompt
//! with the code.

use crate::process::{self, ChildGuard, Output};
use crate::programs::Program;
use crate::system::{PrivateHost, TestUser};
use std::net::TcpStream;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The programs the sshd tests need besides a [`PrivateHost`].
pub const SSH: &[Program] = &[Program::Sshd, Program::Ssh, Program::SshKeygen];

/// How long one ssh login may take before the test fails.
const LOGIN_DEADLINE: Duration = Duration::from_secs(60);

/// A running `sshd -D -e` (its log in `sshd.log`), killed on drop.
pub struct Sshd {
    /// The loopback port it listens on (127.0.0.1).
    pub port: u16,
    /// Its own directory: config, host key, log, askpass.
    pub dir: PathBuf,
    /// sshd's stderr.
    pub log: PathBuf,
    guard: ChildGuard,
    logins: AtomicU32,
}

/// How the client authenticates.
#[derive(Debug, Clone, Default)]
pub struct SshAuth {
    /// Answer to prompts that ask for a password.
    pub password: String,
    /// Answer to every other prompt (the verification code).
    pub code: String,
    /// A private key file: publickey is tried first.
    pub key: Option<PathBuf>,
    /// `ssh -b ADDRESS`: the source address (127.0.0.2 …).
    pub bind: Option<String>,
    /// `PreferredAuthentications` when not derived from `key`.
    pub methods: Option<String>,
}

/// The outcome of one `ssh` run.
#[derive(Debug)]
pub struct SshLogin {
    /// What ssh printed (the remote command's output on stdout).
    pub output: Output,
    /// Every prompt the askpass script was asked, in order.
    pub prompts: Vec<String>,
}

impl SshLogin {
    /// ssh exited 0: authenticated and the remote command ran.
    pub fn succeeded(&self) -> bool {
        self.output.status.success()
    }

    /// Wall-clock time of the ssh run.
    pub fn elapsed(&self) -> Duration {
        self.output.elapsed
    }
}

impl std::fmt::Display for SshLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "prompts {:?}\n{}", self.prompts, self.output)
    }
}

const ASKPASS: &str = r#"#!/bin/sh
d="$OTPD_TEST_ASKPASS"
printf '%s\n' "$1" >> "$d/prompts"
case "$1" in
  *assword*|*achtwoord*) cat "$d/password" ;;
  *) cat "$d/code" ;;
esac
"#;

impl Sshd {
    /// Starts sshd in `host` with `example_config` (the shipped
    /// `sshd_config.d` lines) first, as Debian's `Include` at the top of
    /// sshd_config puts them, and the test's own port, host key and logging
    /// after.
    pub fn start(host: &PrivateHost, name: &str, example_config: &str) -> Sshd {
        let dir = host.dir.join(format!("sshd-{name}"));
        std::fs::create_dir_all(&dir).expect("create the sshd dir");
        let key = dir.join("ssh_host_ed25519_key");
        ssh_keygen(&key);
        let askpass = dir.join("askpass");
        std::fs::write(&askpass, ASKPASS).expect("write askpass");
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755))
            .expect("chmod askpass");
        let log = dir.join("sshd.log");
        let mut last_log = String::new();
        // OpenSSH refuses `Port 0`: a port that was free a moment ago, and
        // another when sshd could not bind it (it exits) or when the
        // listener on it turns out not to be this sshd's.
        for _attempt in 0..5 {
            let port = crate::net::free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "# The example under test:\n{example_config}\n\
                     # The test's own settings:\n\
                     Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
                     UseDNS no\nLogLevel VERBOSE\nPermitRootLogin no\n\
                     LoginGraceTime 60\nMaxStartups 100\nMaxAuthTries 10\n",
                    key.display()
                ),
            )
            .expect("write sshd_config");
            let _ = std::fs::remove_file(&log);
            let sshd = Program::Sshd.path();
            let mut cmd = host.command(&sshd);
            cmd.arg("-D").arg("-e").arg("-f").arg(&config);
            let mut guard = ChildGuard::spawn(cmd, &log);
            let started = Instant::now();
            loop {
                if banner(port) && crate::net::listens_on(guard.pid(), port) {
                    println!(
                        "[sshd {name}] listening on 127.0.0.1:{port} after {} ms",
                        started.elapsed().as_millis()
                    );
                    return Sshd {
                        port,
                        dir,
                        log,
                        guard,
                        logins: AtomicU32::new(0),
                    };
                }
                if guard.child.try_wait().expect("try_wait").is_some()
                    || started.elapsed() > Duration::from_secs(10)
                {
                    last_log = std::fs::read_to_string(&log).unwrap_or_default();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("sshd did not start:\n{last_log}");
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether sshd is still running.
    pub fn is_running(&mut self) -> bool {
        self.guard.child.try_wait().expect("try_wait").is_none()
    }

    /// A key pair for `user`: the public half in the user's
    /// `~/.ssh/authorized_keys` (owned by the user, as sshd's StrictModes
    /// demands); returns the private half for [`SshAuth::key`].
    pub fn authorize_key(&self, user: &TestUser) -> PathBuf {
        let key = self.dir.join(format!("id_{}", user.name));
        ssh_keygen(&key);
        let ssh_dir = user.home.join(".ssh");
        std::fs::create_dir_all(&ssh_dir).expect("create ~/.ssh");
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("read .pub");
        let authorized = ssh_dir.join("authorized_keys");
        std::fs::write(&authorized, public).expect("write authorized_keys");
        std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod ~/.ssh");
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600))
            .expect("chmod authorized_keys");
        for path in [&ssh_dir, &authorized] {
            chown(path, Some(user.uid), Some(user.uid)).expect("chown ~/.ssh");
        }
        key
    }

    /// `ssh -p PORT USER@127.0.0.1 COMMAND`, answering prompts from `auth`.
    pub fn ssh(&self, user: &str, auth: &SshAuth, command: &str) -> SshLogin {
        let n = self.logins.fetch_add(1, Ordering::SeqCst);
        let answers = self.dir.join(format!("login-{n}"));
        std::fs::create_dir_all(&answers).expect("create the askpass dir");
        std::fs::write(answers.join("password"), &auth.password).expect("write password");
        std::fs::write(answers.join("code"), &auth.code).expect("write code");

        let methods = match (&auth.methods, &auth.key) {
            (Some(methods), _) => methods.clone(),
            (None, Some(_)) => "publickey,keyboard-interactive".to_owned(),
            (None, None) => "keyboard-interactive".to_owned(),
        };
        let mut cmd = Command::new(Program::Ssh.path());
        cmd.args(["-F", "/dev/null", "-T"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "ConnectTimeout=20"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .args(["-o", "IdentityAgent=none"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "BatchMode=no"])
            .arg("-o")
            .arg(format!("PreferredAuthentications={methods}"));
        match &auth.key {
            Some(key) => {
                cmd.arg("-i").arg(key);
            }
            None => {
                cmd.args(["-o", "PubkeyAuthentication=no"]);
            }
        }
        if let Some(bind) = &auth.bind {
            cmd.arg("-b").arg(bind);
        }
        cmd.arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .env("SSH_ASKPASS", self.dir.join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("OTPD_TEST_ASKPASS", &answers)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DISPLAY");
        let output = process::run(cmd, b"", LOGIN_DEADLINE);
        let prompts = std::fs::read_to_string(answers.join("prompts"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        SshLogin { output, prompts }
    }
}

/// `ssh-keygen -t ed25519` with no passphrase.
fn ssh_keygen(path: &Path) {
    let mut cmd = Command::new(Program::SshKeygen.path());
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "otpd-test", "-f"])
        .arg(path);
    let out = process::run(cmd, b"", Duration::from_secs(30));
    assert!(out.status.success(), "ssh-keygen: {out}");
}

/// Whether an SSH server answers on `port` with its banner.
fn banner(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}
