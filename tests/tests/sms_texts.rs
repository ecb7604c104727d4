//! Texted login codes through the real libpam and a real sender program:
//!
//! - the three newest texted codes are valid: after four texts the oldest
//!   is refused and each of the other three logs in (one per round, as a
//!   success spends them all); after three, the oldest still works;
//! - a sender that hangs is killed with its whole process group when
//!   `[sms] timeout` runs out: the child it started in the background is
//!   gone too once the login has its answer.

use otpd_tests::pam::finish;
use otpd_tests::sms::Outbox;
use otpd_tests::{require, settled_now, Limits, PamLogin, PamOutcome, TestEnv, PAM};
use std::ffi::OsStr;
use std::time::{Duration, Instant};

/// A login from `rhost` that types "sms", waits for the text, then gives
/// up (an empty answer): a text asked for and not used.
fn ask_for_a_text(env: &TestEnv, outbox: &Outbox, rhost: &str) -> String {
    let before = outbox.count();
    let service = env.pam_service("lang=en");
    let mut running = service.start(OsStr::new("alice"), rhost, None);
    running.write(b"sms\n");
    let code = outbox.code(before + 1);
    running.feed(b"\n");
    let login = finish(running);
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    assert!(
        login
            .module_messages()
            .contains("A code has been sent to your phone"),
        "{}",
        login.output
    );
    code
}

fn login(env: &TestEnv, code: &str, rhost: &str) -> PamLogin {
    env.pam_login("alice", code, rhost, "lang=en")
}

#[test]
fn the_three_newest_texted_codes_are_valid_and_a_fourth_text_retires_the_oldest() {
    if !require("the newest texted codes", PAM) {
        return;
    }
    let probe = TestEnv::without_daemon("sms_newest_sender", &Limits::default());
    let outbox = Outbox::create(&probe.dir);
    let env = TestEnv::start_with_config(
        "sms_newest",
        Limits::default(),
        &format!(
            "[sms]\ncommand = \"{}\"\nmax_per_hour = 20\n",
            outbox.script.display()
        ),
    );
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t - 30);
    env.otpd_expect(&["phone", "alice", "+31612345678"], 0);
    let registration = outbox.code(1);
    env.otpd_expect(&["phone", "alice", "--confirm", &registration], 0);

    // Each round asks for `texts` texts from as many hosts (each request
    // counts against its own source), then types the oldest (refused
    // after four texts) and the one of index `used`.
    let mut host = 0;
    for (round, (texts_asked, used)) in [(4, 1), (4, 2), (4, 3), (3, 0)].into_iter().enumerate() {
        let codes: Vec<String> = (0..texts_asked)
            .map(|_| {
                host += 1;
                ask_for_a_text(&env, &outbox, &format!("192.0.2.{host}"))
            })
            .collect();
        let mut distinct = codes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            codes.len(),
            "round {round}: two texts carried the same code by chance: {codes:?}"
        );
        if texts_asked == 4 {
            host += 1;
            let oldest = login(&env, &codes[0], &format!("192.0.2.{host}"));
            assert_eq!(
                oldest.outcome,
                PamOutcome::AuthErr,
                "round {round}: the oldest of four texted codes was accepted: {}",
                oldest.output
            );
        }
        host += 1;
        let newer = login(&env, &codes[used], &format!("192.0.2.{host}"));
        assert_eq!(
            newer.outcome,
            PamOutcome::Success,
            "round {round}: text {} of {texts_asked} was refused: {}",
            used + 1,
            newer.output
        );
        println!(
            "round {round}: {texts_asked} texts; {}text {} logged in",
            if texts_asked == 4 {
                "the oldest refused, "
            } else {
                ""
            },
            used + 1
        );
        if round == 0 {
            // A success spends the others.
            host += 1;
            let spent = login(&env, &codes[3], &format!("192.0.2.{host}"));
            assert_eq!(spent.outcome, PamOutcome::AuthErr, "{}", spent.output);
        }
    }
    let sent = outbox.count();
    assert_eq!(sent, 1 + 4 + 4 + 4 + 3, "texts sent");
    let outcomes = otpd_tests::system::verify_outcomes(&env, "alice");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| *o == "accepted_sms_code")
            .count(),
        4,
        "{outcomes:?}"
    );
}

/// Whether process `pid` is running (a zombie, dead but not yet reaped by
/// whoever inherited it, is not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments joined by spaces.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn a_hanging_sender_is_killed_with_the_child_it_started() {
    if !require("the sender's process group", PAM) {
        return;
    }
    let probe = TestEnv::without_daemon("sms_group_sender", &Limits::default());
    let outbox = Outbox::create(&probe.dir);
    let env = TestEnv::start_with_config(
        "sms_group",
        Limits::default(),
        &format!(
            "[sms]\ncommand = \"{}\"\ntimeout = \"1s\"\n",
            outbox.script.display()
        ),
    );
    let t = settled_now(30, 8);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.otpd_expect(&["phone", "alice", "+31612345678"], 0);
    let registration = outbox.code(1);
    env.otpd_expect(&["phone", "alice", "--confirm", &registration], 0);

    // From now on the sender hangs, with a child.
    outbox.hang();
    let started = Instant::now();
    let service = env.pam_service("lang=en");
    let mut running_login = service.start(OsStr::new("alice"), "192.0.2.60", None);
    running_login.write(b"sms\n");
    running_login.feed(format!("{}\n", alice.code_at(t)).as_bytes());
    let login = finish(running_login);
    let answered = started.elapsed();
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert!(
        login
            .module_messages()
            .contains("No text message can be sent now"),
        "{}",
        login.output
    );
    assert!(
        env.log()
            .contains("did not finish within 1 s and was killed"),
        "{}",
        env.log()
    );

    let (sender_pid, child_pid) = outbox.hanging_pids();
    // The kill was sent before the answer; the kernel may take a moment
    // to finish the processes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while (running(sender_pid) || running(child_pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "login with a hanging sender answered in {} ms; sender pid {sender_pid} {}, \
         its child pid {child_pid} {}",
        answered.as_millis(),
        if running(sender_pid) {
            "RUNNING"
        } else {
            "gone"
        },
        if running(child_pid) {
            format!("RUNNING ({})", command_line(child_pid))
        } else {
            "gone".into()
        }
    );
    let survivors: Vec<(u32, String)> = [sender_pid, child_pid]
        .into_iter()
        .filter(|pid| running(*pid))
        .map(|pid| (pid, command_line(pid)))
        .collect();
    // What the sender left (when the test fails) is ended here, not left
    // behind: only processes of this sender's script.
    for (pid, command) in &survivors {
        if command.contains("sleep 600") || command.contains(&*outbox.script.to_string_lossy()) {
            let _ = otpd_tests::process::try_signal(*pid, libc::SIGKILL);
        }
    }
    assert!(
        answered < Duration::from_secs(3),
        "the login waited for the sender"
    );
    assert!(
        survivors.is_empty(),
        "the sender (pid {sender_pid}) or the child it started (pid {child_pid}) outlived \
         the sender's timeout: {survivors:?}"
    );
}
