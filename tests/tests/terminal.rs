//! The CLI's interactive flows on a real pseudo-terminal
//! ([`otpd_tests::pty::Terminal`]), as an administrator sitting with the
//! user goes through them: `otpd enroll` shows the URI, the secret and the
//! QR code and asks "Enter your OTP" (the help-desk manuals' "Enter your
//! OTP" → "Validate"), takes a wrong code with "try again", then the right
//! one; Enter leaves the enrolment pending for `otpd confirm`, which asks
//! for the code on the terminal too; `otpd phone` texts a code and asks for
//! it on the terminal. What the terminal shows is checked, and the store
//! afterwards (`otpd list`), and a login with the enrolled app.

use otpd_tests::programs;
use otpd_tests::pty::Terminal;
use otpd_tests::sms::Outbox;
use otpd_tests::{require, secrets, settled_now, Enrollment, Limits, PamOutcome, TestEnv, PAM};
use std::process::Command;
use std::time::Duration;

/// How long one step on the terminal may take.
const STEP: Duration = Duration::from_secs(30);

/// `otpd --config CONFIG ARGS…` on a new terminal.
fn on_terminal(env: &TestEnv, args: &[&str]) -> Terminal {
    let mut cmd = Command::new(programs::otpd_binary());
    cmd.arg("--config").arg(&env.config).args(args);
    Terminal::spawn(cmd)
}

/// The text from `from` on, for messages and counting.
fn since(screen: &str, from: usize) -> &str {
    screen.get(from..).unwrap_or("")
}

const PROMPT: &str =
    "Enter your OTP (the code the app shows now), or press Enter to validate later: ";

#[test]
fn enroll_asks_for_the_first_code_on_the_terminal_and_activates() {
    if !require("otpd enroll on a terminal", PAM) {
        return;
    }
    let env = TestEnv::start("terminal_enroll");
    let mut term = on_terminal(&env, &["enroll", "alice"]);
    let screen = term.expect_after(0, PROMPT, STEP);
    secrets::remember_from_output(&screen);
    let uri = screen
        .lines()
        .find(|line| line.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth:// line on the terminal:\n{screen}"));
    let alice = Enrollment::from_uri(uri.trim_end()).unwrap_or_else(|e| panic!("{e}\n{screen}"));
    assert_eq!(alice.user, "alice");
    // The secret in groups of four, and the QR code drawn in half blocks.
    let grouped: Vec<String> = alice
        .secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(
        screen.contains(&format!("Secret for manual entry: {}", grouped.join(" "))),
        "{screen}"
    );
    let qr_rows = screen
        .lines()
        .filter(|l| l.contains('▀') || l.contains('▄') || l.contains('█'))
        .count();
    assert!(
        qr_rows >= 15,
        "no QR code on the terminal ({qr_rows} rows):\n{screen}"
    );
    assert_eq!(screen.matches(PROMPT).count(), 1, "{screen}");
    assert_eq!(env.list_entry("alice").unwrap()["state"], "pending");

    // A wrong code: said, and asked again; nothing activated.
    let t = settled_now(30, 10);
    let mark = term.screen().len();
    term.type_line(&alice.wrong_code(t));
    let screen = term.expect_after(mark, "Try again (2 of 3).", STEP);
    let screen = term.expect_after(screen.rfind("Try again").unwrap(), PROMPT, STEP);
    println!(
        "[terminal_enroll] after a wrong code the terminal shows:\n{}",
        since(&screen, mark)
    );
    assert!(
        since(&screen, mark).contains("Not validated: wrong code for alice"),
        "{}",
        since(&screen, mark)
    );
    assert_eq!(env.list_entry("alice").unwrap()["state"], "pending");

    // The code the app shows now: validated.
    let mark = term.screen().len();
    term.type_line(&alice.code_at(t));
    term.expect_after(
        mark,
        "Validated: the token of alice is active. From now on alice logs in with the password and the tokencode from the app.",
        STEP,
    );
    let (status, screen) = term.wait(STEP);
    assert!(
        status.success(),
        "otpd enroll ended with {status}:\n{screen}"
    );
    println!(
        "[terminal_enroll] the right code:\n{}",
        since(&screen, mark)
    );
    assert_eq!(screen.matches(PROMPT).count(), 2, "{screen}");
    let entry = env.list_entry("alice").unwrap();
    assert_eq!(entry["state"], "active", "{entry}");
    // The code typed at the terminal is used; the next one logs in.
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.30", "");
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    let login = env.pam_login("alice", &alice.code_at(t + 30), "192.0.2.31", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
}

#[test]
fn enter_leaves_the_enrollment_pending_and_confirm_asks_on_the_terminal() {
    if !require("otpd confirm on a terminal", PAM) {
        return;
    }
    let env = TestEnv::start("terminal_confirm");
    let mut term = on_terminal(&env, &["enroll", "bob"]);
    let screen = term.expect_after(0, PROMPT, STEP);
    secrets::remember_from_output(&screen);
    let uri = screen
        .lines()
        .find(|line| line.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth:// line on the terminal:\n{screen}"));
    let bob = Enrollment::from_uri(uri.trim_end()).unwrap_or_else(|e| panic!("{e}\n{screen}"));
    let mark = screen.len();
    term.type_line("");
    let (status, screen) = term.wait(STEP);
    assert!(
        status.success(),
        "otpd enroll ended with {status}:\n{screen}"
    );
    assert!(
        since(&screen, mark)
            .contains("The enrolment stays pending. Validate it later with: otpd confirm bob CODE"),
        "{screen}"
    );
    assert_eq!(env.list_entry("bob").unwrap()["state"], "pending");

    // `otpd confirm bob` without a code asks for it.
    let t = settled_now(30, 10);
    let mut term = on_terminal(&env, &["confirm", "bob"]);
    term.expect_after(0, "Verification code: ", STEP);
    term.type_line(&bob.code_at(t));
    let (status, screen) = term.wait(STEP);
    println!("[terminal_confirm] otpd confirm bob:\n{screen}");
    assert!(
        status.success(),
        "otpd confirm ended with {status}:\n{screen}"
    );
    assert!(
        screen.contains("Validated: the token of bob is active."),
        "{screen}"
    );
    assert_eq!(env.list_entry("bob").unwrap()["state"], "active");
    let login = env.pam_login("bob", &bob.code_at(t + 30), "192.0.2.32", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
}

const TEXT_PROMPT: &str = "Code from the text message (then Enter to verify): ";

#[test]
fn phone_asks_for_the_texted_code_on_the_terminal_and_registers_the_number() {
    if !require("otpd phone on a terminal", PAM) {
        return;
    }
    let probe = TestEnv::without_daemon("terminal_phone_sender", &Limits::default());
    let outbox = Outbox::create(&probe.dir);
    let env = TestEnv::start_with_config(
        "terminal_phone",
        Limits::default(),
        &format!(
            "[sms]\ncommand = \"{}\"\nmax_per_hour = 10\n",
            outbox.script.display()
        ),
    );
    let t = settled_now(30, 5);
    env.enroll_active("carol", &[], t - 30);

    // A wrong code: refused, the number not registered.
    let mut term = on_terminal(&env, &["phone", "carol", "+31 6 1234 5678"]);
    let screen = term.expect_after(0, TEXT_PROMPT, STEP);
    assert!(
        screen.contains("A code was texted to +31 6 1234 5678."),
        "{screen}"
    );
    let (number, code) = outbox.text(1);
    assert_eq!(number, "+31612345678");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    term.type_line(wrong);
    let (status, screen) = term.wait(STEP);
    println!("[terminal_phone] a wrong texted code:\n{screen}");
    assert_eq!(status.code(), Some(1), "{screen}");
    assert!(
        screen.contains("that is not the code that was texted"),
        "{screen}"
    );
    assert_eq!(env.list_entry("carol").unwrap()["phone"], false);

    // The texted code, typed at the terminal: registered.
    let mut term = on_terminal(&env, &["phone", "carol", "+31612345678"]);
    let screen = term.expect_after(0, TEXT_PROMPT, STEP);
    let code = outbox.code(2);
    let mark = screen.len();
    term.type_line(&code);
    let (status, screen) = term.wait(STEP);
    println!("[terminal_phone] the texted code:\n{screen}");
    assert!(
        status.success(),
        "otpd phone ended with {status}:\n{screen}"
    );
    assert!(
        since(&screen, mark).contains(
            "Verified: carol can now type \"sms\" at the code prompt to get a code by text message."
        ),
        "{screen}"
    );
    // One question, asked once: the code is typed right after it.
    assert_eq!(screen.matches(TEXT_PROMPT).count(), 1, "{screen}");
    assert!(
        screen.contains(&format!("{TEXT_PROMPT}{code}")),
        "the code is not typed right after the question:\n{screen}"
    );
    assert_eq!(env.list_entry("carol").unwrap()["phone"], true);
    env.assert_log_free_of(&code);
}
