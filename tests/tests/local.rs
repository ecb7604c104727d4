//! Local logins through the system's own libpam inside a private mount
//! namespace: a screen locker (a PAM client running as the user), and the
//! group exemption recipe with pam_succeed_if.

use otpd_tests::process::{self, Output};
use otpd_tests::system::{
    example, module_for_users, pam_example_for, require_private_host, verify_outcomes, World,
};
use otpd_tests::{settled_now, Limits, PamOutcome, Program};
use std::time::Duration;

/// What these tests need besides a private host.
const NEEDS: &[Program] = &[Program::Pamtester, Program::Oathtool];

/// `pamtester -v SERVICE USER authenticate` inside the namespace, as
/// `runner` (a test user) or root, with `input` on stdin.
fn pamtester(
    w: &World,
    runner: Option<&str>,
    service: &str,
    user: &str,
    input: &str,
) -> (PamOutcome, Output) {
    let pamtester = Program::Pamtester.path();
    let mut cmd = match runner {
        Some(runner) => w.host.command_as(w.host.user(runner), &pamtester),
        None => w.host.command(&pamtester),
    };
    cmd.args(["-v", service, user, "authenticate"]);
    let out = process::run(cmd, input.as_bytes(), Duration::from_secs(30));
    (PamOutcome::from_output(&out), out)
}

#[test]
fn a_screen_locker_verifies_its_own_user_and_no_other() {
    if !require_private_host("screen locker", NEEDS) {
        return;
    }
    let w = World::start("screen_locker", &["kim", "lou"], &[], Limits::default());
    let module = module_for_users(&w.env);
    w.host.write_pam_service(
        "otpd-screenlock",
        &format!(
            "auth required {} socket={}\n",
            module.display(),
            w.env.socket.display()
        ),
    );
    let t = settled_now(30, 10);
    let kim = w.env.enroll_active("kim", &[], t - 30);
    let lou = w.env.enroll_active("lou", &[], t - 30);
    let kim_uid = w.host.user("kim").uid;

    // kim's locker unlocks kim.
    let (outcome, out) = pamtester(
        &w,
        Some("kim"),
        "otpd-screenlock",
        "kim",
        &format!("{}\n", kim.code_at(t)),
    );
    assert_eq!(outcome, PamOutcome::Success, "{out}");
    assert!(
        w.env.log().contains(&format!("uid={kim_uid}")),
        "the daemon did not see kim's uid:\n{}",
        w.env.log()
    );

    // kim's process asking about lou, with lou's right code: refused by
    // the daemon, which logs why; lou's code is not used up.
    let lou_code = lou.code_at(t);
    let (outcome, out) = pamtester(
        &w,
        Some("kim"),
        "otpd-screenlock",
        "lou",
        &format!("{lou_code}\n"),
    );
    assert_eq!(outcome, PamOutcome::AuthErr, "{out}");
    let denied = w
        .env
        .log()
        .lines()
        .find(|line| line.contains("outcome=\"denied\""))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no denial logged:\n{}", w.env.log()));
    assert!(
        denied.contains(&format!("uid={kim_uid}"))
            // The audit line's message is a JSON string: its quotes escaped.
            && denied.contains("may only check codes of its own user, not of \\\"lou\\\""),
        "{denied}"
    );
    assert!(verify_outcomes(&w.env, "lou").is_empty());

    // lou's own locker: the same code still works.
    let (outcome, out) = pamtester(
        &w,
        Some("lou"),
        "otpd-screenlock",
        "lou",
        &format!("{lou_code}\n"),
    );
    assert_eq!(outcome, PamOutcome::Success, "{out}");
}

#[test]
fn only_members_of_otp_users_are_asked_for_a_code() {
    if !require_private_host("otp-users group recipe", NEEDS) {
        return;
    }
    let w = World::start(
        "group_recipe",
        &["mia", "ned"],
        &[("otp-users", &["mia"])],
        Limits::default(),
    );
    let recipe = pam_example_for(
        &example("pam.d/otp-users-only.snippet"),
        &module_for_users(&w.env),
        &w.env.socket,
        "",
    );
    w.host
        .write_pam_service("otpd-group", &format!("@include common-auth\n{recipe}"));
    let t = settled_now(30, 10);
    let mia = w.env.enroll_active("mia", &[], t - 30);
    // ned has no token and is not in the group: never asked for one.
    let (outcome, out) = pamtester(
        &w,
        None,
        "otpd-group",
        "ned",
        &format!("{}\n", w.password("ned")),
    );
    assert_eq!(outcome, PamOutcome::Success, "{out}");
    assert!(
        !out.stderr.contains("Verification code") && !out.stdout.contains("Verification code"),
        "{out}"
    );
    assert!(verify_outcomes(&w.env, "ned").is_empty());

    // mia is in the group: password and code.
    let input = format!("{}\n{}\n", w.password("mia"), mia.code_at(t));
    let (outcome, out) = pamtester(&w, None, "otpd-group", "mia", &input);
    assert_eq!(outcome, PamOutcome::Success, "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("Verification code: "),
        "{out}"
    );
    let input = format!("{}\n{}\n", w.password("mia"), mia.wrong_code(t));
    let (outcome, out) = pamtester(&w, None, "otpd-group", "mia", &input);
    assert_eq!(outcome, PamOutcome::AuthErr, "{out}");
    assert_eq!(verify_outcomes(&w.env, "mia"), ["accepted", "wrong_code"]);
}
