//! Real SSH logins: Debian's `sshd` on a loopback port, configured with the
//! shipped examples (`packaging/examples/sshd_config.d/*.conf` and
//! `pam.d/sshd.*`), the real `ssh` client answering its prompts, real
//! pam_unix checking a real password, and the real otpd deciding the code.
//! Test users exist only in a private mount namespace ([`PrivateHost`]).

use otpd_tests::sshd::{SshAuth, SshLogin, Sshd, SSH};
use otpd_tests::system::{example, require_private_host, World};
use otpd_tests::{settled_now, Limits, Program};
use std::time::Duration;

/// What these tests need besides a private host (and [`SSH`]).
const NEEDS: &[Program] = &[Program::Oathtool];

fn world(name: &str, users: &[&str], limits: Limits) -> World {
    World::start(name, users, &[], limits)
}

trait SshWorld {
    fn install_pam(&self, example_name: &str, extra_args: &str);
    fn sshd(&self, conf: &str) -> Sshd;
}

impl SshWorld for World {
    /// Installs the shipped PAM example as the namespace's /etc/pam.d/sshd.
    fn install_pam(&self, example_name: &str, extra_args: &str) {
        self.install_pam_example("sshd", example_name, extra_args);
    }

    fn sshd(&self, conf: &str) -> Sshd {
        Sshd::start(
            &self.host,
            conf,
            &example(&format!("sshd_config.d/{conf}.conf")),
        )
    }
}

const COMMAND: &str = "echo otpd-remote-output $(id -un)";

fn assert_in(login: &SshLogin, user: &str, what: &str) {
    assert!(login.succeeded(), "{what}: refused\n{login}");
    assert_eq!(
        login.output.stdout.trim(),
        format!("otpd-remote-output {user}"),
        "{what}: the remote command's output did not come back\n{login}"
    );
}

fn assert_refused(login: &SshLogin, what: &str) {
    assert!(!login.succeeded(), "{what}: let in\n{login}");
    assert!(
        login.output.stderr.contains("Permission denied"),
        "{what}: not refused by authentication\n{login}"
    );
    assert!(
        !login.output.stdout.contains("otpd-remote-output"),
        "{what}: the command ran\n{login}"
    );
}

fn report(what: &str, login: &SshLogin) {
    println!(
        "{what}: {} in {} ms, prompts {:?}",
        if login.succeeded() { "in" } else { "refused" },
        login.elapsed().as_millis(),
        login.prompts
    );
}

#[test]
fn password_and_code_over_keyboard_interactive() {
    if !require_private_host("sshd password_and_code", &[SSH, NEEDS].concat()) {
        return;
    }
    let w = world("sshd_password_code", &["ann"], Limits::default());
    w.install_pam("sshd.password-code", "");
    let sshd = w.sshd("otpd-password-code");
    let t = settled_now(30, 15);
    let ann = w.env.enroll_active("ann", &[], t - 30);
    let auth = |password: String, code: String| SshAuth {
        password,
        code,
        ..SshAuth::default()
    };

    let code = ann.code_at(t);
    let login = sshd.ssh("ann", &auth(w.password("ann"), code.clone()), COMMAND);
    report("right password + right code", &login);
    assert_in(&login, "ann", "right password + right code");
    assert_eq!(login.prompts.len(), 2, "{login}");
    assert!(login.prompts[0].ends_with("Password: "), "{login}");
    assert!(login.prompts[1].ends_with("Verification code: "), "{login}");

    let replay = sshd.ssh("ann", &auth(w.password("ann"), code), COMMAND);
    report("replayed code", &replay);
    assert_refused(&replay, "the same code again");

    let wrong = sshd.ssh("ann", &auth(w.password("ann"), ann.wrong_code(t)), COMMAND);
    report("wrong code", &wrong);
    assert_refused(&wrong, "right password + wrong code");

    // A wrong password ends the stack at pam_unix: the code is not asked,
    // so the fresh code below is still unused.
    let next = ann.code_at(t + 30);
    let bad_password = sshd.ssh(
        "ann",
        &auth("not-the-password".into(), next.clone()),
        COMMAND,
    );
    report("wrong password + right code", &bad_password);
    assert_refused(&bad_password, "wrong password + right code");
    assert_eq!(bad_password.prompts.len(), 1, "{bad_password}");

    let login = sshd.ssh("ann", &auth(w.password("ann"), next), COMMAND);
    assert_in(&login, "ann", "the next code, never used");

    let outcomes: Vec<String> = w.verify_audit("ann");
    let expected = ["accepted", "replayed", "wrong_code", "accepted"];
    assert_eq!(outcomes.len(), expected.len(), "{outcomes:#?}");
    for (line, outcome) in outcomes.iter().zip(expected) {
        assert!(
            line.contains(&format!("outcome=\"{outcome}\""))
                && line.contains("service=\"sshd\"")
                && line.contains("rhost=\"127.0.0.1\""),
            "expected {outcome}: {line}"
        );
    }
    w.env.assert_log_free_of(&ann.secret);
}

#[test]
fn public_key_and_code() {
    if !require_private_host("sshd public_key_and_code", &[SSH, NEEDS].concat()) {
        return;
    }
    let w = world("sshd_key_code", &["ben"], Limits::default());
    w.install_pam("sshd.key-code", "");
    let sshd = w.sshd("otpd-key-code");
    let key = sshd.authorize_key(w.host.user("ben"));
    let t = settled_now(30, 15);
    let ben = w.env.enroll_active("ben", &[], t - 30);
    let with_key = |code: String| SshAuth {
        code,
        key: Some(key.clone()),
        ..SshAuth::default()
    };

    let code = ben.code_at(t);
    let login = sshd.ssh("ben", &with_key(code.clone()), COMMAND);
    report("key + right code", &login);
    assert_in(&login, "ben", "key + right code");
    assert_eq!(login.prompts.len(), 1, "only the code is asked: {login}");
    assert!(login.prompts[0].ends_with("Verification code: "), "{login}");
    assert!(
        sshd.log()
            .contains("Partial publickey for ben from 127.0.0.1"),
        "sshd did not check the key:\n{}",
        sshd.log()
    );

    assert_refused(
        &sshd.ssh("ben", &with_key(code), COMMAND),
        "key + replayed code",
    );
    assert_refused(
        &sshd.ssh("ben", &with_key(ben.wrong_code(t)), COMMAND),
        "key + wrong code",
    );

    // Without the key a valid code is not enough: sshd never offers
    // keyboard-interactive before publickey has succeeded.
    let no_key = SshAuth {
        password: w.password("ben"),
        code: ben.code_at(t + 30),
        ..SshAuth::default()
    };
    let login = sshd.ssh("ben", &no_key, COMMAND);
    report("no key, right code", &login);
    assert_refused(&login, "no key, right code");
    assert!(login.prompts.is_empty(), "{login}");
}

#[test]
fn a_stopped_otpd_refuses_within_the_timeout_and_sshd_keeps_serving() {
    if !require_private_host("sshd otpd_stopped", &[SSH, NEEDS].concat()) {
        return;
    }
    let mut w = world("sshd_stopped", &["cat", "dan"], Limits::default());
    let timeout = Duration::from_secs(1);
    w.install_pam("sshd.password-code", "timeout=1");
    let sshd = w.sshd("otpd-password-code");
    let t = settled_now(30, 20);
    let cat = w.env.enroll_active("cat", &[], t - 30);
    let dan = w.env.enroll_active("dan", &[], t - 30);
    let passwords = [("cat", w.password("cat")), ("dan", w.password("dan"))];
    let auth = |user: &str, code: String| SshAuth {
        password: passwords
            .iter()
            .find(|(name, _)| *name == user)
            .map(|(_, password)| password.clone())
            .unwrap_or_default(),
        code,
        ..SshAuth::default()
    };

    // A refusal with otpd healthy, for comparison (pam_unix's fail delay
    // and ssh's own work are in every refusal).
    let baseline = sshd.ssh("cat", &auth("cat", cat.wrong_code(t)), COMMAND);
    assert_refused(&baseline, "wrong code");

    // otpd killed: the socket refuses connections.
    w.env.kill_daemon(libc::SIGKILL);
    let killed = sshd.ssh("cat", &auth("cat", cat.code_at(t)), COMMAND);
    assert_refused(&killed, "otpd killed");

    // otpd hung (SIGSTOP): the module gives up after timeout=1.
    w.env.spawn_daemon();
    w.env.signal_daemon(libc::SIGSTOP);
    let stopped = sshd.ssh("dan", &auth("dan", dan.code_at(t)), COMMAND);
    w.env.signal_daemon(libc::SIGCONT);
    assert_refused(&stopped, "otpd stopped");

    println!(
        "refusals through sshd: wrong code {} ms, otpd killed {} ms, otpd stopped {} ms (timeout=1)",
        baseline.elapsed().as_millis(),
        killed.elapsed().as_millis(),
        stopped.elapsed().as_millis()
    );
    let margin = Duration::from_secs(5);
    assert!(
        stopped.elapsed() < timeout + margin,
        "a stopped otpd held the login for {:?} (timeout {timeout:?} + margin {margin:?})",
        stopped.elapsed()
    );
    assert!(killed.elapsed() < margin, "{killed}");
    assert!(
        sshd.log()
            .contains("Failed keyboard-interactive/pam for dan"),
        "{}",
        sshd.log()
    );

    // sshd still serves: cat's code was never seen by a daemon, so it is
    // still good now that otpd answers again.
    let login = sshd.ssh("cat", &auth("cat", cat.code_at(t)), COMMAND);
    report("after otpd came back", &login);
    assert_in(&login, "cat", "the next connection after the outage");
}

#[test]
fn unenrolled_users_are_refused_without_nullok_and_let_through_with_it() {
    if !require_private_host("sshd nullok", &[SSH, NEEDS].concat()) {
        return;
    }
    let w = world("sshd_nullok", &["eve", "fay"], Limits::default());
    let sshd = w.sshd("otpd-password-code");
    let t = settled_now(30, 15);
    let fay = w.env.enroll_active("fay", &[], t - 30);
    let auth = |user: &str, code: String| SshAuth {
        password: w.password(user),
        code,
        ..SshAuth::default()
    };

    w.install_pam("sshd.password-code", "");
    let login = sshd.ssh("eve", &auth("eve", "123456".into()), COMMAND);
    report("eve (no token), without nullok", &login);
    assert_refused(&login, "a user without a token, without nullok");
    assert_eq!(login.prompts.len(), 2, "asked like everyone: {login}");

    w.install_pam("sshd.password-code", "nullok");
    let login = sshd.ssh("eve", &auth("eve", String::new()), COMMAND);
    report("eve (no token), nullok", &login);
    assert_in(&login, "eve", "a user without a token, with nullok");
    assert_eq!(login.prompts.len(), 1, "only the password: {login}");

    // nullok is no bypass for a user who has a token.
    let login = sshd.ssh("fay", &auth("fay", fay.wrong_code(t)), COMMAND);
    assert_refused(&login, "an enrolled user with a wrong code, nullok");
    let login = sshd.ssh("fay", &auth("fay", fay.code_at(t)), COMMAND);
    assert_in(
        &login,
        "fay",
        "an enrolled user with the right code, nullok",
    );
}

#[test]
fn a_source_that_keeps_failing_is_throttled_and_another_source_is_not() {
    if !require_private_host("sshd per-source throttle", &[SSH, NEEDS].concat()) {
        return;
    }
    let limits = Limits {
        max_failures: 3,
        base_delay: "\"60s\"".into(),
        max_delay: "\"15m\"".into(),
        user_max_failures: 20,
    };
    let w = world("sshd_throttle", &["gus"], limits);
    w.install_pam("sshd.password-code", "");
    let sshd = w.sshd("otpd-password-code");
    let t = settled_now(30, 20);
    let gus = w.env.enroll_active("gus", &[], t - 30);
    let from = |bind: &str, code: String| SshAuth {
        password: w.password("gus"),
        code,
        bind: Some(bind.into()),
        ..SshAuth::default()
    };

    for i in 0..3 {
        let login = sshd.ssh("gus", &from("127.0.0.2", gus.wrong_code(t)), COMMAND);
        assert_refused(&login, &format!("wrong code {i} from 127.0.0.2"));
    }
    // Now even the right code is refused from 127.0.0.2 …
    let code = gus.code_at(t);
    let throttled = sshd.ssh("gus", &from("127.0.0.2", code.clone()), COMMAND);
    report("right code from the throttled 127.0.0.2", &throttled);
    assert_refused(&throttled, "the right code from a throttled source");
    let audit = w.verify_audit("gus");
    let last = audit.last().expect("an audit line");
    assert!(
        last.contains("outcome=\"throttled\"") && last.contains("rhost=\"127.0.0.2\""),
        "{audit:#?}"
    );
    // … and the same code, which was never consumed, works from 127.0.0.1.
    let login = sshd.ssh("gus", &from("127.0.0.1", code), COMMAND);
    report("right code from 127.0.0.1", &login);
    assert_in(&login, "gus", "the same user from another source");
    assert!(
        sshd.log()
            .contains("Accepted keyboard-interactive/pam for gus from 127.0.0.1"),
        "{}",
        sshd.log()
    );
}

#[test]
fn password_and_code_at_one_password_prompt_with_forward_pass() {
    if !require_private_host("sshd forward_pass", &[SSH, NEEDS].concat()) {
        return;
    }
    let w = world("sshd_forward_pass", &["hal"], Limits::default());
    w.install_pam("sshd.password-once", "");
    let sshd = w.sshd("otpd-password-once");
    let t = settled_now(30, 15);
    let hal = w.env.enroll_active("hal", &[], t - 30);
    let typed = |text: String| SshAuth {
        password: text,
        methods: Some("password".into()),
        ..SshAuth::default()
    };
    let password = w.password("hal");

    let code = hal.code_at(t);
    let login = sshd.ssh("hal", &typed(format!("{password}{code}")), COMMAND);
    report("password+code at one prompt", &login);
    assert_in(&login, "hal", "password followed by the code");
    assert_eq!(login.prompts.len(), 1, "{login}");
    assert!(
        sshd.log()
            .contains("Accepted password for hal from 127.0.0.1"),
        "{}",
        sshd.log()
    );

    assert_refused(
        &sshd.ssh("hal", &typed(format!("{password}{code}")), COMMAND),
        "the same code again",
    );
    let next = hal.code_at(t + 30);
    assert_refused(
        &sshd.ssh("hal", &typed(format!("wrong{next}")), COMMAND),
        "a wrong password with a right code",
    );
    assert_refused(
        &sshd.ssh("hal", &typed(password.clone()), COMMAND),
        "the password without a code",
    );
    assert_refused(
        &sshd.ssh(
            "hal",
            &typed(format!("{password}{}", hal.wrong_code(t))),
            COMMAND,
        ),
        "the password with a wrong code",
    );
}
