//! [`PrivateHost`]: the host's own programs (sshd, sudo, libpam, pam_unix)
//! with private copies of the files a login reads — `/etc/passwd`,
//! `/etc/group`, `/etc/shadow`, `/etc/gshadow`, `/etc/pam.d`,
//! `/etc/sudoers.d` — bind-mounted over the real ones in a mount namespace
//! of its own, and a tmpfs on `/run`. Test users exist only in those
//! copies: the host's files are never written, and everything disappears
//! with the namespace, also when a test fails.
//!
//! A holder process (`unshare --mount … sleep`) keeps the namespace alive;
//! every program that must see the private files runs through `nsenter`.

use crate::env::TestEnv;
use crate::process::{self, ChildGuard};
use crate::programs::{self, Program};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The first uid (and gid) given to test users.
const FIRST_UID: u32 = 23_001;

/// A user that exists only in the private `/etc/passwd`.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// uid, and gid of the user's own group.
    pub uid: u32,
    /// Home directory (in the test dir), owned by the user.
    pub home: PathBuf,
    /// The Unix password, as pam_unix checks it against the private shadow.
    pub password: String,
}

/// See the module documentation.
pub struct PrivateHost {
    /// Where the private files live (`<test dir>/host`).
    pub dir: PathBuf,
    /// The test users, in the order given.
    pub users: Vec<TestUser>,
    holder: ChildGuard,
}

/// The programs a [`PrivateHost`] needs.
pub const PRIVATE_HOST: &[Program] = &[
    Program::Unshare,
    Program::Nsenter,
    Program::Setpriv,
    Program::Openssl,
];

/// The skip rule ([`crate::require`]) for a test on a [`PrivateHost`]
/// that also needs `others`.
pub fn require_private_host(test: &str, others: &[Program]) -> bool {
    crate::require(test, &[PRIVATE_HOST, others].concat())
}

impl PrivateHost {
    /// Creates `users` (each with its own group) and `groups` (name,
    /// members) in private copies of the account files, and starts the
    /// namespace. Must run as root.
    pub fn start(env: &TestEnv, users: &[&str], groups: &[(&str, &[&str])]) -> PrivateHost {
        assert!(
            nix_is_root(),
            "{}: the private host needs root (mount namespaces, chown)",
            env.name
        );
        let dir = env.dir.join("host");
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).expect("create host/etc");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod host dir");

        let mut passwd = read_host("/etc/passwd");
        let mut group = read_host("/etc/group");
        let mut shadow = read_host("/etc/shadow");
        let mut gshadow = read_host("/etc/gshadow");
        let mut created = Vec::new();
        for (i, name) in users.iter().enumerate() {
            let uid = FIRST_UID + u32::try_from(i).expect("few users");
            let home = dir.join("home").join(name);
            std::fs::create_dir_all(&home).expect("create a home dir");
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755))
                .expect("chmod home");
            chown(&home, Some(uid), Some(uid)).expect("chown home");
            let password = format!("pw-{name}-Tq7!");
            let hash = hash_password(&password);
            passwd.push_str(&format!(
                "{name}:x:{uid}:{uid}:otpd test user:{}:/bin/sh\n",
                home.display()
            ));
            shadow.push_str(&format!("{name}:{hash}:19000:0:99999:7:::\n"));
            group.push_str(&format!("{name}:x:{uid}:\n"));
            gshadow.push_str(&format!("{name}:!::\n"));
            created.push(TestUser {
                name: (*name).to_owned(),
                uid,
                home,
                password,
            });
        }
        for (i, (name, members)) in groups.iter().enumerate() {
            let gid = FIRST_UID + 500 + u32::try_from(i).expect("few groups");
            group.push_str(&format!("{name}:x:{gid}:{}\n", members.join(",")));
            gshadow.push_str(&format!("{name}:!::{}\n", members.join(",")));
        }
        write_mode(&etc.join("passwd"), &passwd, 0o644);
        write_mode(&etc.join("group"), &group, 0o644);
        write_mode(&etc.join("shadow"), &shadow, 0o640);
        write_mode(&etc.join("gshadow"), &gshadow, 0o640);

        copy_dir("/etc/pam.d", &etc.join("pam.d"));
        copy_dir("/etc/sudoers.d", &etc.join("sudoers.d"));
        std::fs::set_permissions(
            etc.join("sudoers.d"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod sudoers.d");

        let ready = dir.join("ready");
        let mut script = String::from("set -e\n");
        for file in ["passwd", "group", "shadow", "gshadow"] {
            if Path::new("/etc").join(file).exists() {
                script.push_str(&format!("mount --bind \"$1/etc/{file}\" /etc/{file}\n"));
            }
        }
        script.push_str(
            "mount --bind \"$1/etc/pam.d\" /etc/pam.d\n\
             mount --bind \"$1/etc/sudoers.d\" /etc/sudoers.d\n\
             mount -t tmpfs -o mode=0755 otpd-test-run /run\n\
             mkdir -m 0755 /run/sshd\n\
             : > \"$1/ready\"\n\
             exec sleep 86400\n",
        );
        let mut cmd = Command::new(Program::Unshare.path());
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .arg("holder")
            .arg(&dir);
        let holder = ChildGuard::spawn(cmd, &dir.join("holder.log"));
        let host = PrivateHost {
            dir,
            users: created,
            holder,
        };
        let started = Instant::now();
        while !ready.exists() {
            let log = std::fs::read_to_string(host.dir.join("holder.log")).unwrap_or_default();
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the private mount namespace did not come up: {log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        host
    }

    /// The test user called `name`.
    pub fn user(&self, name: &str) -> &TestUser {
        self.users
            .iter()
            .find(|user| user.name == name)
            .unwrap_or_else(|| panic!("no test user {name}"))
    }

    /// The prefix that runs a program inside the namespace.
    pub fn launcher(&self) -> Vec<OsString> {
        vec![
            Program::Nsenter.path().into(),
            format!("--target={}", self.holder.pid()).into(),
            "--mount".into(),
            "--".into(),
        ]
    }

    /// `program` run as root inside the namespace.
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let launcher = self.launcher();
        let mut cmd = Command::new(&launcher[0]);
        cmd.args(&launcher[1..]).arg(program);
        cmd
    }

    /// `program` run inside the namespace as `user` (real and effective
    /// uid and gid, the user's groups), as a login would leave it.
    pub fn command_as<S: AsRef<OsStr>>(&self, user: &TestUser, program: S) -> Command {
        let mut cmd = self.command(Program::Setpriv.path());
        cmd.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.uid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
        cmd
    }

    /// Writes `/etc/pam.d/NAME` as the namespace sees it.
    pub fn write_pam_service(&self, name: &str, text: &str) {
        write_mode(&self.dir.join("etc/pam.d").join(name), text, 0o644);
    }

    /// Writes `/etc/sudoers.d/otpd-test` as the namespace sees it.
    pub fn write_sudoers(&self, text: &str) {
        write_mode(&self.dir.join("etc/sudoers.d/otpd-test"), text, 0o440);
    }
}

/// An example file shipped in `packaging/examples/` (`pam.d/sudo.code` …).
pub fn example(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/examples")
        .join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the example {}: {e}", path.display()))
}

/// A shipped PAM example as the test installs it: every `pam_otpd.so` is
/// replaced by `module` with `socket=SOCKET` and `extra` arguments; every
/// other line is kept as the administrator would copy it.
pub fn pam_example_for(text: &str, module: &Path, socket: &Path, extra: &str) -> String {
    let replacement = format!("{} socket={} {extra}", module.display(), socket.display());
    let out: String = text
        .lines()
        .map(|line| {
            let active = !line.trim_start().starts_with('#');
            if active && line.contains("pam_otpd.so") {
                line.replacen("pam_otpd.so", replacement.trim_end(), 1)
            } else {
                line.to_owned()
            }
        })
        .map(|line| line + "\n")
        .collect();
    assert!(
        out.contains(&*module.to_string_lossy()),
        "the example has no active pam_otpd.so line:\n{text}"
    );
    out
}

/// A copy of `libpam_otpd.so` that every test user can load.
pub fn module_for_users(env: &TestEnv) -> PathBuf {
    env.copy_for_nobody(&programs::pam_module(), "libpam_otpd.so", 0o644)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn read_host(path: &str) -> String {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// `cp -a SRC DEST` for a flat config directory (files and symlinks).
fn copy_dir(source: &str, dest: &Path) {
    if !Path::new(source).exists() {
        std::fs::create_dir_all(dest).expect("create an empty config dir");
        return;
    }
    let mut cmd = Command::new("cp");
    cmd.arg("-a").arg(source).arg(dest);
    let out = process::run(cmd, b"", Duration::from_secs(30));
    assert!(out.status.success(), "cp -a {source}: {out}");
}

/// A SHA-512 crypt hash of `password`, as `/etc/shadow` holds it.
fn hash_password(password: &str) -> String {
    let mut cmd = Command::new(Program::Openssl.path());
    cmd.args(["passwd", "-6", "-stdin"]);
    let out = process::run(
        cmd,
        format!("{password}\n").as_bytes(),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl passwd: {out}");
    let hash = out.stdout.trim().to_owned();
    assert!(hash.starts_with("$6$"), "openssl passwd printed {hash:?}");
    hash
}

/// A test's world for the system tests: a [`PrivateHost`] and an otpd
/// running inside it (so that it resolves the test users' uids). The host
/// is the first field, so it is dropped first.
pub struct World {
    /// The private accounts and PAM config.
    pub host: PrivateHost,
    /// The daemon, its config and socket.
    pub env: TestEnv,
}

impl World {
    /// Users (each with its own group), extra groups (name, members), the
    /// daemon's limits; the daemon is started inside the namespace.
    pub fn start(
        name: &str,
        users: &[&str],
        groups: &[(&str, &[&str])],
        limits: crate::Limits,
    ) -> World {
        let mut env = TestEnv::without_daemon(name, &limits);
        let host = PrivateHost::start(&env, users, groups);
        env.launcher = host.launcher();
        env.spawn_daemon();
        World { host, env }
    }

    /// Installs the shipped `packaging/examples/pam.d/EXAMPLE` as the
    /// namespace's `/etc/pam.d/SERVICE`, with this daemon's socket and
    /// `extra_args` on the pam_otpd.so line.
    pub fn install_pam_example(&self, service: &str, example_name: &str, extra_args: &str) {
        let text = pam_example_for(
            &example(&format!("pam.d/{example_name}")),
            &module_for_users(&self.env),
            &self.env.socket,
            extra_args,
        );
        self.host.write_pam_service(service, &text);
    }

    /// The test user's Unix password.
    pub fn password(&self, user: &str) -> String {
        self.host.user(user).password.clone()
    }

    /// The daemon's audit lines about verifications of `user`.
    pub fn verify_audit(&self, user: &str) -> Vec<String> {
        verify_audit(&self.env, user)
    }
}

/// The daemon's audit lines about verifications of `user`.
pub fn verify_audit(env: &TestEnv, user: &str) -> Vec<String> {
    env.log()
        .lines()
        .filter(|line| line.contains(&format!("user=\"{user}\"")))
        .filter(|line| line.contains("op=\"verify\""))
        .map(str::to_owned)
        .collect()
}

/// When the daemon wrote `line` (its first field, an RFC 3339 timestamp,
/// or an audit line's `time=`), in seconds since the epoch; `None` for a
/// line without one.
pub fn log_time(line: &str) -> Option<f64> {
    // An audit line (`otpd-audit seq=… time=…`) has it as `time=`.
    let stamp = match line.strip_prefix("otpd-audit ") {
        Some(audit) => audit
            .split_whitespace()
            .find_map(|w| w.strip_prefix("time="))?,
        None => line.split_whitespace().next()?,
    };
    let at = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(at.timestamp() as f64 + f64::from(at.timestamp_subsec_micros()) / 1e6)
}

/// The outcomes (`accepted`, `wrong_code` …) of those lines, in order.
pub fn verify_outcomes(env: &TestEnv, user: &str) -> Vec<String> {
    verify_audit(env, user)
        .iter()
        .filter_map(|line| line.split("outcome=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}
