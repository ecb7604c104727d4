//! "Approve on your phone" with the real programs a person signs in with:
//! Debian's `sshd` with the shipped keyboard-interactive example (password
//! by pam_unix, then pam_otpd), the real `ssh` client on a terminal, and the
//! real `sudo` on a terminal. The person types the password, presses Enter
//! at the code prompt, reads the number off the terminal, picks it on the
//! phone (headless Chromium with WebDriver's virtual authenticator, paired
//! by the admin's `otpd enroll USER --approver --link`) and presses Enter:
//! logged in, the command runs. Test users exist only in a private mount
//! namespace ([`PrivateHost`]); the daemon runs inside it, its pages on a
//! loopback port the browser reaches.

use otpd_tests::browser::Browser;
use otpd_tests::phone;
use otpd_tests::pty::Terminal;
use otpd_tests::sshd::{Sshd, SSH};
use otpd_tests::system::{example, require_private_host, PrivateHost, World};
use otpd_tests::{settled_now, Limits, Program, TestEnv};
use std::process::Command;
use std::time::Duration;

const NEEDS: &[Program] = &[Program::Oathtool, Program::Chromium, Program::Chromedriver];

const FIRST_PROMPT: &str = "Verification code, or press Enter to approve on your phone: ";
const SECOND_PROMPT: &str = "to approve, then press Enter: ";
const WAIT: Duration = Duration::from_secs(30);

/// A private host with `users`, and a daemon inside it with `[web]` and
/// `[approve]` (timeout 20 s); returns the world and the pages' base URL.
fn approve_world(name: &str, users: &[&str]) -> World {
    let mut env = TestEnv::without_daemon(name, &Limits::default());
    let host = PrivateHost::start(&env, users, &[]);
    env.launcher = host.launcher();
    phone::start_approve(&mut env, 20, &[]);
    World { host, env }
}

/// At the terminal's code prompt (shown after `from`): Enter, the number
/// read off the terminal, picked on the phone (`browser`) in the request
/// whose text has `service`, then Enter. Returns the number.
fn approve_at_the_prompt(
    terminal: &mut Terminal,
    from: usize,
    browser: &Browser,
    service: &str,
) -> u32 {
    terminal.expect_after(from, FIRST_PROMPT, WAIT);
    let from = terminal.screen().len();
    terminal.type_line("");
    let screen = terminal.expect_after(from, SECOND_PROMPT, WAIT);
    let prompt = screen[from..]
        .lines()
        .find(|l| l.contains(SECOND_PROMPT))
        .expect("the second prompt")
        .to_owned();
    assert!(prompt.contains("On your phone, choose "), "{prompt:?}");
    let number = phone::number_in(&prompt).unwrap_or_else(|| panic!("no number in {prompt:?}"));
    let request = phone::wait_for_request(browser, service, Duration::from_secs(10));
    assert!(
        request.numbers.contains(&number),
        "{number} is not among the phone's numbers {request:?}"
    );
    let (outcome, detail) = phone::pick(browser, &request.id, number);
    assert_eq!(outcome, "approved", "{detail}");
    terminal.type_line("");
    number
}

#[test]
fn ssh_with_password_then_approval_on_the_phone() {
    if !require_private_host("approve ssh", &[SSH, NEEDS].concat()) {
        return;
    }
    let w = approve_world("approve_ssh", &["ann"]);
    w.install_pam_example("sshd", "sshd.password-code", "");
    let sshd = Sshd::start(
        &w.host,
        "otpd-password-code",
        &example("sshd_config.d/otpd-password-code.conf"),
    );
    let t = settled_now(30, 5);
    w.env.enroll_active("ann", &[], t - 30);
    let browser = phone::phone_browser("approve_ssh");
    phone::add_authenticator(&browser);
    phone::pair_active(&w.env, &browser, "ann", "ann-phone");

    let mut ssh = Command::new(Program::Ssh.path());
    ssh.args(["-F", "/dev/null", "-T"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=20"])
        .args(["-o", "IdentityAgent=none"])
        .args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", "PreferredAuthentications=keyboard-interactive"])
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg("ann@127.0.0.1")
        .arg("echo otpd-remote-output $(id -un)")
        .env_remove("SSH_ASKPASS")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY");
    let mut terminal = Terminal::spawn(ssh);
    terminal.expect_after(0, "Password: ", WAIT);
    let from = terminal.screen().len();
    terminal.type_line(&w.password("ann"));
    approve_at_the_prompt(&mut terminal, from, &browser, "sshd");
    let (status, screen) = terminal.wait(WAIT);
    assert!(status.success(), "ssh ended with {status}:\n{screen}");
    assert!(
        screen.contains("otpd-remote-output ann"),
        "the command did not run:\n{screen}"
    );
    let logins = phone::audit(&w.env, "login", "ann");
    assert!(
        logins
            .iter()
            .any(|l| l.contains("outcome=\"approved\"") && l.contains("sshd")),
        "{logins:#?}"
    );
}

#[test]
fn sudo_with_password_then_approval_on_the_phone() {
    if !require_private_host("approve sudo", &[&[Program::Sudo][..], NEEDS].concat()) {
        return;
    }
    let w = approve_world("approve_sudo", &["jay"]);
    w.host.write_sudoers("jay ALL=(ALL) ALL\n");
    w.install_pam_example("sudo", "sudo.password-code", "");
    let t = settled_now(30, 5);
    w.env.enroll_active("jay", &[], t - 30);
    let browser = phone::phone_browser("approve_sudo");
    phone::add_authenticator(&browser);
    phone::pair_active(&w.env, &browser, "jay", "jay-phone");

    let mut sudo = w.host.command_as(w.host.user("jay"), Program::Sudo.path());
    sudo.args(["-k", "--", "id", "-un"]);
    for name in ["LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE"] {
        sudo.env_remove(name);
    }
    let mut terminal = Terminal::spawn(sudo);
    terminal.expect_after(0, "password for jay: ", WAIT);
    let from = terminal.screen().len();
    terminal.type_line(&w.password("jay"));
    approve_at_the_prompt(&mut terminal, from, &browser, "sudo");
    let (status, screen) = terminal.wait(WAIT);
    assert!(status.success(), "sudo ended with {status}:\n{screen}");
    assert!(
        screen.lines().any(|l| l.trim() == "root"),
        "the command did not run as root:\n{screen}"
    );
    let logins = phone::audit(&w.env, "login", "jay");
    assert!(
        logins
            .iter()
            .any(|l| l.contains("outcome=\"approved\"") && l.contains("sudo")),
        "{logins:#?}"
    );
}
