//! The ways in besides the app, through the real libpam against the real
//! daemon: recovery codes typed at the normal prompt, and a code by text
//! message ("sms" at the prompt) sent by a real sender program — a script
//! that writes the number and the message it was given to a file the test
//! reads.

use otpd_tests::pam::finish;
use otpd_tests::process::Running;
use otpd_tests::sms::{broken_sender, Broken, Outbox};
use otpd_tests::system::verify_outcomes;
use otpd_tests::totp::{recovery_codes_in, unix_now, wrong_code_besides};
use otpd_tests::{require, settled_now, Enrollment, Limits, PamLogin, PamOutcome, TestEnv, PAM};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

fn recovery_left(env: &TestEnv, user: &str) -> u64 {
    env.list_entry(user).expect("listed")["recovery_codes"]
        .as_u64()
        .expect("recovery_codes in list --json")
}

/// `otpd confirm` and the page's Validate are one confirmation
/// (core::plan): each activation shows a new set of recovery codes, and
/// the older set stops working.
#[test]
fn every_confirmation_that_activates_a_device_shows_new_recovery_codes() {
    if !require("confirmation recovery codes", PAM) {
        return;
    }
    let env = TestEnv::start("confirm_codes");
    let t = settled_now(30, 5);
    let alice = env.enroll("alice", &[]);
    let out = env.otpd_expect(&["confirm", "alice", &alice.code_at(t - 30)], 0);
    assert!(out.stdout.contains("Validated"), "{out}");
    let first = recovery_codes_in(&out.stdout);
    assert_eq!(first.len(), 10, "{out}");
    assert_eq!(recovery_left(&env, "alice"), 10);
    let login = env.pam_login("alice", &first[0], "192.0.2.41", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);

    // A second device's confirmation: a new set; the first one is void.
    let phone = env.enroll("alice", &["--device", "phone"]);
    let out = env.otpd_expect(&["confirm", "alice", &phone.code_at(t)], 0);
    let second = recovery_codes_in(&out.stdout);
    assert_eq!(second.len(), 10, "{out}");
    assert!(second.iter().all(|code| !first.contains(code)), "{out}");
    let login = env.pam_login("alice", &first[1], "192.0.2.41", "");
    assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    let login = env.pam_login("alice", &second[0], "192.0.2.41", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);

    // A refused confirmation shows none.
    let out = env.otpd_expect(&["confirm", "alice", &phone.code_at(t)], 1);
    assert!(recovery_codes_in(&out.stdout).is_empty(), "{out}");
}

#[test]
fn recovery_codes_work_once_at_the_normal_prompt() {
    if !require("recovery codes", PAM) {
        return;
    }
    let env = TestEnv::start("recovery_codes");
    let t = settled_now(30, 5);
    let alice = env.enroll_active("alice", &[], t - 30);
    // The confirmation came with the configured number of codes.
    assert_eq!(recovery_left(&env, "alice"), 10);

    let out = env.otpd_expect(&["recovery-codes", "alice", "--count", "3"], 0);
    let codes = recovery_codes_in(&out.stdout);
    assert_eq!(codes.len(), 3, "{out}");
    assert!(
        out.stdout.contains("somewhere"),
        "says to keep them safe: {out}"
    );
    assert_eq!(recovery_left(&env, "alice"), 3);

    // Typed in lower case without dashes: still the code.
    let typed = codes[0].replace('-', "").to_lowercase();
    let login = env.pam_login("alice", &typed, "192.0.2.40", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let again = env.pam_login("alice", &codes[0], "192.0.2.40", "");
    assert_eq!(
        again.outcome,
        PamOutcome::AuthErr,
        "used twice: {}",
        again.output
    );
    assert_eq!(recovery_left(&env, "alice"), 2);
    let log = env.log();
    assert!(
        log.contains("outcome=\"accepted_recovery_code\" recovery_codes_left=2"),
        "{log}"
    );

    // A new set replaces the old one.
    let out = env.otpd_expect(&["recovery-codes", "alice"], 0);
    let fresh = recovery_codes_in(&out.stdout);
    assert_eq!(fresh.len(), 10, "{out}");
    let old = env.pam_login("alice", &codes[1], "192.0.2.41", "");
    assert_eq!(old.outcome, PamOutcome::AuthErr, "{}", old.output);
    let new = env.pam_login("alice", &fresh[9], "192.0.2.41", "");
    assert_eq!(new.outcome, PamOutcome::Success, "{}", new.output);
    // The app's codes still work.
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.41", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);

    for code in codes.iter().chain(&fresh) {
        env.assert_log_free_of(code);
        env.assert_log_free_of(&code.replace('-', ""));
    }
    // Not for someone without a token; not by a non-root caller.
    let out = env.otpd_expect(&["recovery-codes", "nobody-here"], 1);
    assert!(out.stderr.contains("not enrolled"), "{out}");
    let out = env.otpd_as_nobody(&["recovery-codes", "alice"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(recovery_left(&env, "alice"), 9);
}

/// A login that types "sms" first, then (once texted) the code of the
/// next text in `outbox` (`before` sent so far).
fn sms_login(env: &TestEnv, outbox: &Outbox, before: usize, rhost: &str) -> (PamLogin, String) {
    let service = env.pam_service("lang=en");
    let mut running: Running = service.start(OsStr::new("alice"), rhost, None);
    running.write(b"sms\n");
    let code = outbox.code(before + 1);
    running.feed(format!("{code}\n").as_bytes());
    (finish(running), code)
}

#[test]
fn a_code_by_text_message_registers_the_phone_and_logs_in() {
    if !require("sms", PAM) {
        return;
    }
    let probe = TestEnv::without_daemon("sms_probe", &Limits::default());
    let outbox = Outbox::create(&probe.dir);
    let script = &outbox.script;
    let env = TestEnv::start_with_config(
        "sms",
        Limits::default(),
        &format!(
            "[sms]\ncommand = \"{}\"\nmax_per_hour = 3\nmessage = \"otpd code {{code}}\"\n",
            script.display()
        ),
    );
    let t = settled_now(30, 5);
    let alice = env.enroll_active("alice", &[], t - 30);

    // Registration: a bad number is refused; a good one gets a code.
    let out = env.otpd_expect(&["phone", "alice", "0612345678"], 2);
    assert!(out.stderr.contains("international form"), "{out}");
    let out = env.otpd_expect(&["phone", "alice", "+31 6 1234 5678"], 0);
    assert!(out.stdout.contains("--confirm"), "{out}");
    let (number, code) = outbox.text(1);
    assert_eq!(number, "+31612345678");
    let wrong = wrong_code_besides(std::slice::from_ref(&code), 6);
    env.otpd_expect(&["phone", "alice", "--confirm", &wrong], 1);
    assert_eq!(env.list_entry("alice").unwrap()["phone"], false);
    env.otpd_expect(&["phone", "alice", "--confirm", &code], 0);

    // The texted code cannot be guessed: five wrong tries end it.
    env.otpd_expect(&["phone", "bob-has-no-token", "+31612345678"], 1);
    // Confirmed with the code of the step before the one it is sent in.
    let bob = env.enroll_active("bob", &[], settled_now(30, 5) - 30);
    env.otpd_expect(&["phone", "bob", "+31687654321"], 0);
    let bob_code = outbox.code(2);
    let bob_wrong = wrong_code_besides(std::slice::from_ref(&bob_code), 6);
    for _ in 0..5 {
        env.otpd_expect(&["phone", "bob", "--confirm", &bob_wrong], 1);
    }
    env.otpd_expect(&["phone", "bob", "--confirm", &bob_code], 1);
    assert_eq!(env.list_entry("bob").unwrap()["phone"], false);
    drop(bob);
    // Typing "sms" answers the same for a user without a phone, a user
    // without a token, and nobody at all: no text, the same message.
    for user in ["bob", "nobody-at-all"] {
        let service = env.pam_service("lang=en");
        let mut running = service.start(OsStr::new(user), "192.0.2.59", None);
        running.write(b"sms\n");
        running.feed(b"123456\n");
        let login = finish(running);
        assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
        let said = login.module_messages();
        assert!(
            said.contains("Verification code (or type sms): "),
            "{user}: {said}"
        );
        assert!(
            said.contains("No text message can be sent now"),
            "{user}: {said}"
        );
    }
    let texts_before_logins = 2;
    assert_eq!(env.list_entry("alice").unwrap()["phone"], true);

    // The prompt offers sms; "sms" texts a code; that code logs in, once.
    let (login, code) = sms_login(&env, &outbox, texts_before_logins, "192.0.2.50");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let said = login.module_messages();
    assert!(said.contains("Verification code (or type sms): "), "{said}");
    assert!(
        said.contains("A code has been sent to your phone"),
        "{said}"
    );
    assert!(said.contains("Code from the text message: "), "{said}");
    let again = env.pam_login("alice", &code, "192.0.2.50", "");
    assert_eq!(again.outcome, PamOutcome::AuthErr, "{}", again.output);

    // Login texts have a budget of their own (3 an hour here), apart from
    // the phone's registration: the third login text is sent, the fourth
    // is refused with a message, and the app's code still works.
    let (login, _) = sms_login(&env, &outbox, texts_before_logins + 1, "192.0.2.51");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let (login, _) = sms_login(&env, &outbox, texts_before_logins + 2, "192.0.2.53");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let service = env.pam_service("lang=nl");
    let mut running = service.start(OsStr::new("alice"), "192.0.2.52", None);
    running.write(b"sms\n");
    // The app's code of now: no step of alice's was used since her
    // confirmation (of the step before `t`).
    running.feed(format!("{}\n", alice.code_at(unix_now())).as_bytes());
    let login = finish(running);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert!(
        login.module_messages().contains("Te veel sms-berichten"),
        "{}",
        login.output
    );
    assert_eq!(
        std::fs::read_to_string(&outbox.file)
            .unwrap()
            .matches("to=")
            .count(),
        texts_before_logins + 3
    );
    assert_eq!(
        verify_outcomes(&env, "alice"),
        [
            "sms_sent",
            "accepted_sms_code",
            "wrong_code",
            "sms_sent",
            "accepted_sms_code",
            "sms_sent",
            "accepted_sms_code",
            "sms_limited",
            "accepted"
        ]
    );
    // The login texts did not use up the registration's budget.
    env.otpd_expect(&["phone", "alice", "+31612345679"], 0);
    env.assert_log_free_of(&code);
}

#[test]
fn a_failing_or_hanging_sender_never_holds_a_login() {
    if !require("sms sender failures", PAM) {
        return;
    }
    for (behaviour, how) in [
        ("fail", Broken::Fails),
        ("fail-leaving-a-child", Broken::FailsLeavingAChild),
        ("hang", Broken::Hangs),
    ] {
        let probe = TestEnv::without_daemon("sms_probe", &Limits::default());
        let outbox = Outbox::create(&probe.dir);
        let good = outbox.script.clone();
        let bad = broken_sender(&probe.dir, how);
        // Register with a working sender, then switch to the broken one.
        let config = |command: &Path| {
            format!(
                "[sms]\ncommand = \"{}\"\ntimeout = \"1s\"\n",
                command.display()
            )
        };
        let mut env = TestEnv::start_with_config(
            &format!("sms_{behaviour}"),
            Limits::default(),
            &config(&good),
        );
        let t = settled_now(30, 5);
        let alice = env.enroll_active("alice", &[], t - 30);
        env.otpd_expect(&["phone", "alice", "+31612345678"], 0);
        let code = outbox.code(1);
        env.otpd_expect(&["phone", "alice", "--confirm", &code], 0);
        let text = std::fs::read_to_string(&env.config).unwrap();
        std::fs::write(
            &env.config,
            text.replace(&*good.to_string_lossy(), &bad.to_string_lossy()),
        )
        .unwrap();
        env.restart_daemon();

        let service = env.pam_service("");
        let mut running = service.start(OsStr::new("alice"), "192.0.2.60", None);
        running.write(b"sms\n");
        running.feed(format!("{}\n", alice.code_at(t)).as_bytes());
        let login = finish(running);
        // The module's own time (pam_authenticate, the sender's 1 s
        // time-out included), not pamtester's start-up.
        let took = login.authenticate_time();
        println!(
            "sender that {behaviour}s: login answered in {} ms ({} ms with pamtester's start-up)",
            took.as_millis(),
            login.elapsed().as_millis()
        );
        assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
        assert!(
            login
                .module_messages()
                .contains("No text message can be sent now"),
            "{}",
            login.output
        );
        assert!(
            took < Duration::from_secs(3),
            "the login waited too long: {} ms",
            took.as_millis()
        );
        let log = env.log();
        assert!(
            log.contains(if behaviour == "hang" {
                "did not finish within 1 s and was killed"
            } else {
                "exited with exit status: 3: provider said no"
            }),
            "{log}"
        );
    }
}

/// A daemon that texts through an outbox (`max_per_hour` login texts), and
/// alice, active since the step before `t`, with her phone registered (one
/// text). The probe env holds the outbox: keep it alive.
fn alice_with_a_phone(
    name: &str,
    max_per_hour: u32,
) -> (TestEnv, Outbox, TestEnv, u64, Enrollment) {
    let probe = TestEnv::without_daemon(&format!("{name}_probe"), &Limits::default());
    let outbox = Outbox::create(&probe.dir);
    let env = TestEnv::start_with_config(
        name,
        Limits::default(),
        &format!(
            "[sms]\ncommand = \"{}\"\nmax_per_hour = {max_per_hour}\n",
            outbox.script.display()
        ),
    );
    let t = settled_now(30, 10);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.otpd_expect(&["phone", "alice", "+31612345678"], 0);
    let code = outbox.code(1);
    env.otpd_expect(&["phone", "alice", "--confirm", &code], 0);
    (probe, outbox, env, t, alice)
}

/// Typing "sms" at the prompt could be a guess (it asks for a code a
/// stranger may then try) and costs the user a text: it counts against the
/// source like a wrong code (design.md §2), so a stranger cannot ask for
/// texts without end, and the texted code typed back clears the count.
#[test]
fn asking_for_a_text_counts_against_the_source() {
    if !require("sms counts", PAM) {
        return;
    }
    let (_probe, outbox, env, t, alice) = alice_with_a_phone("sms_count", 50);

    // The user's own flow costs nothing: "sms", then the texted code.
    let (login, _) = sms_login(&env, &outbox, 1, "192.0.2.70");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    assert_eq!(env.list_entry("alice").unwrap()["failures"], 0);

    // A stranger types "sms" and gives up, five times (the fifth request
    // is the source's fifth failure: the answer after it is throttled);
    // the sixth time nothing more is texted.
    let stranger = "198.51.100.70";
    for attempt in 1..=5 {
        let service = env.pam_service("lang=en");
        let mut running = service.start(OsStr::new("alice"), stranger, None);
        running.write(b"sms\n");
        running.feed(b"\n");
        let login = finish(running);
        let expected = if attempt < 5 {
            PamOutcome::AuthErr
        } else {
            PamOutcome::MaxTries
        };
        assert_eq!(
            login.outcome, expected,
            "attempt {attempt}: {}",
            login.output
        );
    }
    let texted = std::fs::read_to_string(&outbox.file)
        .unwrap()
        .matches("to=")
        .count();
    assert_eq!(
        texted,
        1 + 1 + 5,
        "registration, alice's own, the stranger's five"
    );
    let service = env.pam_service("lang=en");
    let mut running = service.start(OsStr::new("alice"), stranger, None);
    running.write(b"sms\n");
    running.feed(b"\n");
    let login = finish(running);
    assert_eq!(login.outcome, PamOutcome::MaxTries, "{}", login.output);
    assert_eq!(
        std::fs::read_to_string(&outbox.file)
            .unwrap()
            .matches("to=")
            .count(),
        texted,
        "a throttled source got a text"
    );
    let entry = env.list_entry("alice").unwrap();
    println!("after a stranger's five requests: {entry}");
    assert_eq!(entry["failures"], 5, "{entry}");
    // alice from her own host is not held up.
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.70", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
}

/// Strangers cannot use up the texts the user needs: the hourly budget of
/// login texts holds back sources the user has not proven; a known source
/// (and the user's own uid) is held back by its own backoff alone.
#[test]
fn strangers_cannot_use_up_the_users_texts() {
    if !require("sms budget", PAM) {
        return;
    }
    let (_probe, outbox, env, t, alice) = alice_with_a_phone("sms_budget", 2);
    // alice logs in from home once: a known source.
    let home = "192.0.2.80";
    let login = env.pam_login("alice", &alice.code_at(t), home, "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);

    // Two strangers use up the hour's budget; a third gets none.
    let ask = |rhost: &str| {
        let service = env.pam_service("lang=en");
        let mut running = service.start(OsStr::new("alice"), rhost, None);
        running.write(b"sms\n");
        running.feed(b"\n");
        finish(running)
    };
    for stranger in ["198.51.100.81", "198.51.100.82"] {
        assert_eq!(ask(stranger).outcome, PamOutcome::AuthErr);
    }
    let third = ask("198.51.100.83");
    assert!(
        third.module_messages().contains("Too many text messages"),
        "{}",
        third.output
    );
    let texted = std::fs::read_to_string(&outbox.file)
        .unwrap()
        .matches("to=")
        .count();
    assert_eq!(texted, 1 + 2, "registration and the strangers' two");
    // From home alice still gets her text, and logs in with it.
    let (login, _) = sms_login(&env, &outbox, texted, home);
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
}
