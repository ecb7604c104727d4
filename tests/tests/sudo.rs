//! sudo step-up with the real `sudo`, run by a test user (setpriv) inside a
//! private mount namespace whose /etc/pam.d/sudo is a shipped example
//! (`packaging/examples/pam.d/sudo.*`) and whose /etc/sudoers.d gives that
//! user `ALL=(ALL) ALL`. The answers go to `sudo -S -k` on stdin; `-k`
//! ignores sudo's own timestamp, so every run authenticates.

use otpd_tests::process::{self, Output};
use otpd_tests::system::{require_private_host, verify_outcomes, World};
use otpd_tests::{settled_now, Limits, Program};
use std::time::Duration;

/// What these tests need besides a private host.
const NEEDS: &[Program] = &[Program::Sudo, Program::Oathtool];

/// `sudo -S -k id -un` as `user`, with `input` on stdin and `envs` set.
fn sudo(w: &World, user: &str, input: &str, envs: &[(&str, &str)]) -> Output {
    let mut cmd = w.host.command_as(w.host.user(user), Program::Sudo.path());
    cmd.args(["-S", "-k", "--", "id", "-un"]);
    for name in ["LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE"] {
        cmd.env_remove(name);
    }
    for (name, value) in envs {
        cmd.env(name, value);
    }
    let out = process::run(cmd, input.as_bytes(), Duration::from_secs(60));
    println!(
        "sudo as {user}: exit {:?} in {} ms",
        out.status.code(),
        out.elapsed.as_millis()
    );
    out
}

fn assert_root(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: refused\n{out}");
    assert_eq!(out.stdout.trim(), "root", "{what}\n{out}");
}

fn assert_refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{what}: not refused\n{out}");
    assert!(
        !out.stdout.contains("root"),
        "{what}: the command ran\n{out}"
    );
}

#[test]
fn sudo_with_the_code_alone() {
    if !require_private_host("sudo code", NEEDS) {
        return;
    }
    let w = World::start("sudo_code", &["ivy"], &[], Limits::default());
    w.host.write_sudoers("ivy ALL=(ALL) ALL\n");
    w.install_pam_example("sudo", "sudo.code", "");
    let t = settled_now(30, 15);
    let ivy = w.env.enroll_active("ivy", &[], t - 30);

    let code = ivy.code_at(t);
    let out = sudo(&w, "ivy", &format!("{code}\n"), &[]);
    assert_root(&out, "the right code");
    assert!(out.stderr.contains("Verification code: "), "{out}");
    assert!(!out.stderr.contains("password for ivy"), "{out}");

    assert_refused(
        &sudo(&w, "ivy", &format!("{code}\n"), &[]),
        "the same code again",
    );
    assert_refused(
        &sudo(&w, "ivy", &format!("{}\n", ivy.wrong_code(t)), &[]),
        "a wrong code",
    );
    // The person's locale: Dutch prompt.
    let out = sudo(
        &w,
        "ivy",
        &format!("{}\n", ivy.code_at(t + 30)),
        &[("LANG", "nl_NL.UTF-8")],
    );
    assert_root(&out, "the next code, Dutch locale");
    assert!(out.stderr.contains("Tokencode: "), "{out}");

    assert_eq!(
        verify_outcomes(&w.env, "ivy"),
        ["accepted", "replayed", "wrong_code", "accepted"]
    );
    let audit = w.verify_audit("ivy");
    assert!(
        audit
            .iter()
            .all(|line| line.contains("service=\"sudo\"") && line.contains("rhost=\"\"")),
        "{audit:#?}"
    );
}

#[test]
fn sudo_with_password_and_code() {
    if !require_private_host("sudo password+code", NEEDS) {
        return;
    }
    let w = World::start("sudo_password_code", &["jay"], &[], Limits::default());
    w.host.write_sudoers("jay ALL=(ALL) ALL\n");
    w.install_pam_example("sudo", "sudo.password-code", "");
    let t = settled_now(30, 15);
    let jay = w.env.enroll_active("jay", &[], t - 30);
    let password = w.password("jay");

    let code = jay.code_at(t);
    let out = sudo(&w, "jay", &format!("{password}\n{code}\n"), &[]);
    assert_root(&out, "password + code");
    assert!(out.stderr.contains("password for jay"), "{out}");
    assert!(out.stderr.contains("Verification code: "), "{out}");

    assert_refused(
        &sudo(&w, "jay", &format!("{password}\n{code}\n"), &[]),
        "password + the same code again",
    );
    assert_refused(
        &sudo(
            &w,
            "jay",
            &format!("{password}\n{}\n", jay.wrong_code(t)),
            &[],
        ),
        "password + wrong code",
    );
    // A wrong password: pam_unix stops the stack, no code is asked.
    let out = sudo(&w, "jay", "not-the-password\n", &[]);
    assert_refused(&out, "a wrong password");
    assert!(!out.stderr.contains("Verification code"), "{out}");
    assert_eq!(
        verify_outcomes(&w.env, "jay"),
        ["accepted", "replayed", "wrong_code"]
    );
}
