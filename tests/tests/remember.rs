//! Remembered logins (`[remember]`) with the real programs: Debian's sshd
//! under `AuthenticationMethods publickey,keyboard-interactive` (the key
//! sshd verified reaches PAM in `SSH_AUTH_INFO_0`) and the real `ssh`
//! client; the real `sudo` in audit sessions of its own. What is
//! remembered is the binding (the key, with the source's network; the
//! audit session and tty), never the address alone.

use otpd_tests::process::{self, Output};
use otpd_tests::sshd::{SshAuth, SshLogin, Sshd, SSH};
use otpd_tests::system::{example, require_private_host, World};
use otpd_tests::{settled_now, Limits, Program};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const COMMAND: &str = "echo otpd-remote-output $(id -un)";

/// A world whose daemon remembers logins as `remember` says.
fn world(name: &str, users: &[&str], remember: &str) -> World {
    let mut w = World::start(name, users, &[], Limits::default());
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&w.env.config)
        .expect("open the config");
    writeln!(config, "\n[remember]\n{remember}").expect("write [remember]");
    w.env.restart_daemon();
    w
}

fn sshd(w: &World, conf: &str, pam: &str) -> Sshd {
    w.install_pam_example("sshd", pam, "");
    Sshd::start(
        &w.host,
        conf,
        &example(&format!("sshd_config.d/{conf}.conf")),
    )
}

/// One more key pair for `user`, appended to its authorized_keys; returns
/// the private half and the public key's fingerprint.
fn another_key(sshd: &Sshd, home: &Path) -> (PathBuf, String) {
    let key = sshd.dir.join("id_second");
    let out = process::run(
        {
            let mut cmd = Command::new(Program::SshKeygen.path());
            cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "second", "-f"])
                .arg(&key);
            cmd
        },
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "ssh-keygen: {out}");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("read .pub");
    let mut authorized = std::fs::OpenOptions::new()
        .append(true)
        .open(home.join(".ssh/authorized_keys"))
        .expect("open authorized_keys");
    authorized
        .write_all(public.as_bytes())
        .expect("append a key");
    (key.clone(), fingerprint(&key))
}

/// `ssh-keygen -lf KEY.pub`'s fingerprint (`SHA256:…`).
fn fingerprint(key: &Path) -> String {
    let mut cmd = Command::new(Program::SshKeygen.path());
    cmd.arg("-lf").arg(key.with_extension("pub"));
    let out = process::run(cmd, b"", Duration::from_secs(30));
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint: {out}"))
        .to_owned()
}

fn asked(login: &SshLogin) -> bool {
    !login.prompts.is_empty()
}

fn report(what: &str, login: &SshLogin) {
    println!(
        "{what}: {} in {} ms, prompts {:?}",
        if login.succeeded() { "in" } else { "refused" },
        login.elapsed().as_millis(),
        login.prompts
    );
}

fn remembered_count(w: &World, user: &str) -> u64 {
    w.env.list_entry(user).expect("listed")["remembered"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn ssh_logins_are_remembered_by_key_and_network_until_forgotten_unlocked_or_expired() {
    if !require_private_host("remember ssh", &[SSH, &[Program::Oathtool]].concat()) {
        return;
    }
    let w = world("remember_ssh", &["ben"], "sshd = \"20s\"\n");
    let sshd = sshd(&w, "otpd-key-code", "sshd.key-code");
    let key = sshd.authorize_key(w.host.user("ben"));
    let (second, second_fp) = another_key(&sshd, &w.host.user("ben").home);
    let first_fp = fingerprint(&key);
    let t = settled_now(30, 25);
    let ben = w.env.enroll_active("ben", &[], t - 30);
    let auth = |key: &PathBuf, code: String, bind: Option<&str>| SshAuth {
        code,
        key: Some(key.clone()),
        bind: bind.map(str::to_owned),
        ..SshAuth::default()
    };
    let wrong = ben.wrong_code(t);

    // Key and code: in, and remembered.
    let login = sshd.ssh("ben", &auth(&key, ben.code_at(t), None), COMMAND);
    report("key + code", &login);
    assert!(login.succeeded() && asked(&login), "{login}");
    assert_eq!(remembered_count(&w, "ben"), 1);

    // The same key again: no code asked.
    let login = sshd.ssh("ben", &auth(&key, wrong.clone(), None), COMMAND);
    report("the same key again", &login);
    assert!(login.succeeded(), "the remembered key was refused: {login}");
    assert!(
        !asked(&login),
        "a code was asked of a remembered key: {login}"
    );
    assert!(
        login.output.stdout.contains("otpd-remote-output ben"),
        "{login}"
    );
    let audit = std::fs::read_to_string(&w.env.daemon_log).unwrap_or_default();
    assert!(
        audit.contains("outcome=\"remembered\""),
        "no remembered audit line"
    );

    // Another key of the same user: asked (a wrong code: refused).
    let login = sshd.ssh("ben", &auth(&second, wrong.clone(), None), COMMAND);
    report("another key", &login);
    assert!(asked(&login) && !login.succeeded(), "{login}");

    // Another source (127.0.0.2) with the remembered key: same_source asks.
    let login = sshd.ssh(
        "ben",
        &auth(&key, wrong.clone(), Some("127.0.0.2")),
        COMMAND,
    );
    report("the key from 127.0.0.2", &login);
    assert!(asked(&login) && !login.succeeded(), "{login}");

    // otpd forget --key of another key leaves it; of this key ends it.
    w.env
        .otpd_expect(&["forget", "ben", "--key", &second_fp], 0);
    let login = sshd.ssh("ben", &auth(&key, wrong.clone(), None), COMMAND);
    assert!(
        login.succeeded() && !asked(&login),
        "forgetting another key: {login}"
    );
    let out = w.env.otpd_expect(&["forget", "ben", "--key", &first_fp], 0);
    println!("{}", out.stdout.trim());
    let login = sshd.ssh("ben", &auth(&key, wrong.clone(), None), COMMAND);
    report("after otpd forget --key", &login);
    assert!(asked(&login) && !login.succeeded(), "{login}");

    // Remembered again, then otpd unlock ends it.
    let login = sshd.ssh("ben", &auth(&key, ben.code_at(t + 30), None), COMMAND);
    assert!(login.succeeded(), "{login}");
    w.env.otpd_expect(&["unlock", "ben"], 0);
    let login = sshd.ssh("ben", &auth(&key, wrong.clone(), None), COMMAND);
    report("after otpd unlock", &login);
    assert!(asked(&login) && !login.succeeded(), "{login}");
    assert_eq!(remembered_count(&w, "ben"), 0);

    // After the window (20 s) it asks again. First a fresh code: a step
    // after the two used above.
    let fresh_step = (t / 30) * 30 + 60;
    let now = loop {
        let now = settled_now(30, 3);
        if now >= fresh_step {
            break now;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let login = sshd.ssh("ben", &auth(&key, ben.code_at(now), None), COMMAND);
    assert!(login.succeeded(), "{login}");
    let login = sshd.ssh("ben", &auth(&key, wrong.clone(), None), COMMAND);
    assert!(login.succeeded() && !asked(&login), "{login}");
    std::thread::sleep(Duration::from_secs(21));
    let login = sshd.ssh("ben", &auth(&key, wrong, None), COMMAND);
    report("after the window", &login);
    assert!(asked(&login) && !login.succeeded(), "{login}");
}

#[test]
fn a_password_only_ssh_login_is_never_remembered() {
    if !require_private_host("remember password", &[SSH, &[Program::Oathtool]].concat()) {
        return;
    }
    let w = world("remember_password", &["cat"], "sshd = \"1h\"\n");
    let sshd = sshd(&w, "otpd-password-code", "sshd.password-code");
    let t = settled_now(30, 15);
    let cat = w.env.enroll_active("cat", &[], t - 30);
    let auth = |code: String| SshAuth {
        password: w.password("cat"),
        code,
        ..SshAuth::default()
    };
    let login = sshd.ssh("cat", &auth(cat.code_at(t)), COMMAND);
    report("password + code", &login);
    assert!(login.succeeded(), "{login}");
    assert_eq!(remembered_count(&w, "cat"), 0);
    let login = sshd.ssh("cat", &auth(cat.wrong_code(t)), COMMAND);
    report("password again", &login);
    assert!(
        !login.succeeded(),
        "a password-only login was remembered: {login}"
    );
    assert!(login.prompts.len() >= 2, "{login}");
}

/// Runs `sudo -S -k id -un` as `user` twice in ONE new audit session (a
/// shell that writes its loginuid, as pam_loginuid does at a login), the
/// first with `first` on stdin, the second with `second`; the combined
/// output with `rc1=`/`rc2=` lines.
fn sudo_twice_in_a_session(w: &World, user: &str, first: &str, second: &str) -> Output {
    let sudo = format!("{} -S -k -- id -un", Program::Sudo.path().display());
    twice_in_a_session(w, user, &sudo, first, second)
}

/// Runs `command` (a shell command line) as `user` twice in ONE new audit
/// session, with `first` and then `second` on stdin; the output, with an
/// `rc=` line after each run.
fn twice_in_a_session(w: &World, user: &str, command: &str, first: &str, second: &str) -> Output {
    let u = w.host.user(user);
    let script = format!(
        "echo {uid} > /proc/self/loginuid || exit 90\n\
         for answer in \"$1\" \"$2\"; do\n\
           printf '%s\\n' \"$answer\" | {setpriv} --reuid={uid} --regid={uid} --init-groups -- \
             {command}; echo \"rc=$?\"\n\
         done\n",
        uid = u.uid,
        setpriv = Program::Setpriv.path().display(),
    );
    let mut cmd = w.host.command("/bin/sh");
    cmd.args(["-c", &script, "sh", first, second])
        .env("HOME", &u.home)
        .env("USER", &u.name)
        .env("LOGNAME", &u.name);
    let out = process::run(cmd, b"", Duration::from_secs(120));
    println!("sudo twice in a session as {user}:\n{out}");
    out
}

#[test]
fn sudo_is_remembered_in_its_audit_session_only() {
    if !require_private_host("remember sudo", &[Program::Sudo, Program::Oathtool]) {
        return;
    }
    let w = world("remember_sudo", &["ivy"], "sudo = \"10m\"\n");
    w.host.write_sudoers("ivy ALL=(ALL) ALL\n");
    w.install_pam_example("sudo", "sudo.code", "");
    let t = settled_now(30, 15);
    let ivy = w.env.enroll_active("ivy", &[], t - 30);
    let wrong = ivy.wrong_code(t);

    // One session: the code, then nothing asked (a wrong answer unread).
    let out = sudo_twice_in_a_session(&w, "ivy", &ivy.code_at(t), &wrong);
    let rcs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rc="))
        .collect();
    assert_eq!(rcs, ["rc=0", "rc=0"], "{out}");
    assert_eq!(out.stdout.matches("root").count(), 2, "{out}");

    // Another session (another audit session): asked again.
    let out = sudo_twice_in_a_session(&w, "ivy", &wrong, &wrong);
    let rcs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rc="))
        .collect();
    assert_eq!(rcs, ["rc=1", "rc=1"], "another session was let in: {out}");
    assert_eq!(remembered_count(&w, "ivy"), 1);
}

#[test]
fn a_screen_locker_is_remembered_in_its_audit_session_only() {
    if !require_private_host("remember locker", &[Program::Pamtester, Program::Oathtool]) {
        return;
    }
    let w = world("remember_locker", &["kim"], "otpd-screenlock = \"10m\"\n");
    let module = otpd_tests::system::module_for_users(&w.env);
    w.host.write_pam_service(
        "otpd-screenlock",
        &format!(
            "auth required {} socket={}\n",
            module.display(),
            w.env.socket.display()
        ),
    );
    let t = settled_now(30, 15);
    let kim = w.env.enroll_active("kim", &[], t - 30);
    let wrong = kim.wrong_code(t);
    let locker = format!(
        "{} -v otpd-screenlock kim authenticate",
        Program::Pamtester.path().display()
    );
    // The locker, run as kim: the code, then (same session) nothing asked.
    let out = twice_in_a_session(&w, "kim", &locker, &kim.code_at(t), &wrong);
    let rcs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rc="))
        .collect();
    assert_eq!(rcs, ["rc=0", "rc=0"], "{out}");
    // Another session: asked again.
    let out = twice_in_a_session(&w, "kim", &locker, &wrong, &wrong);
    let rcs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rc="))
        .collect();
    assert!(
        rcs.iter().all(|rc| *rc != "rc=0"),
        "another session was let in: {out}"
    );
}
