//! No stranger can lock a user out (design.md §2, docs/security.md): the
//! per-user ceiling throttles only sources that have not proven themselves
//! for the user; a known source, the user's own uid and recovery codes
//! keep working however many strangers guess; strangers stay bounded;
//! IPv6 counts per /64; `otpd unlock` resets the whole ceiling. Every login
//! goes through the real libpam (pamtester) with PAM_RHOST.

use otpd_tests::totp::{recovery_codes_in, unix_now};
use otpd_tests::{require, settled_now, Enrollment, Limits, PamOutcome, Program, TestEnv, PAM};
use std::time::{Duration, Instant};

/// The user's own host.
const HOME: &str = "203.0.113.10";

/// The default limits with waits long enough that none runs out while a
/// test is still guessing, however slow the machine (a 30 s wait did, under
/// load, and let a stranger's source through).
fn patient() -> Limits {
    Limits {
        base_delay: "\"10m\"".into(),
        max_delay: "\"1h\"".into(),
        ..Limits::default()
    }
}

/// One login of `user` from `rhost` typing `code`; the outcome.
fn login(env: &TestEnv, user: &str, code: &str, rhost: &str) -> PamOutcome {
    env.pam_login(user, code, rhost, "").outcome
}

/// `per_source` wrong codes from each of `sources`; panics unless every
/// one is refused as a wrong code (none throttled yet).
fn strangers_guess(env: &TestEnv, user: &Enrollment, sources: &[String], per_source: usize) {
    let wrong = user.wrong_code(unix_now());
    for source in sources {
        for attempt in 1..=per_source {
            let outcome = login(env, &user.user, &wrong, source);
            assert_eq!(
                outcome,
                PamOutcome::AuthErr,
                "stranger {source} guess #{attempt}"
            );
        }
    }
}

fn strangers(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

fn recovery_codes(env: &TestEnv, user: &str) -> Vec<String> {
    let out = env.otpd_expect(&["recovery-codes", user, "--count", "3"], 0);
    let codes = recovery_codes_in(&out.stdout);
    assert_eq!(codes.len(), 3, "{out}");
    codes
}

#[test]
fn a_known_source_logs_in_after_five_strangers_reach_the_ceiling_and_keep_guessing() {
    if !require("a_known_source_logs_in", PAM) {
        return;
    }
    let env = TestEnv::start_with("known_source", patient());
    let t = settled_now(30, 20);
    let alice = env.enroll_active("alice", &[], t - 30);
    let codes = recovery_codes(&env, "alice");
    // alice logs in from home once: home is now a known source.
    assert_eq!(
        login(&env, "alice", &alice.code_at(t), HOME),
        PamOutcome::Success
    );

    // Five strangers, four wrong codes each: the per-user ceiling (20).
    strangers_guess(&env, &alice, &strangers("198.51.100.", 5), 4);
    let entry = env.list_entry("alice").unwrap();
    println!("after 5 strangers × 4 wrong codes: {entry}");
    assert_eq!(entry["failures"], 20, "{entry}");
    assert_eq!(entry["state"], "throttled", "{entry}");
    // A sixth stranger, and the first five again: throttled.
    let wrong = alice.wrong_code(t);
    for source in ["198.51.100.6", "198.51.100.1"] {
        assert_eq!(login(&env, "alice", &wrong, source), PamOutcome::MaxTries);
    }

    // From home: the right code, and a recovery code, still log in.
    assert_eq!(
        login(&env, "alice", &alice.code_at(t + 30), HOME),
        PamOutcome::Success,
        "the right code from the known source"
    );
    assert_eq!(
        login(&env, "alice", &codes[0], HOME),
        PamOutcome::Success,
        "a recovery code from the known source"
    );
    // A wrong code from home counts against home only: still not locked.
    assert_eq!(login(&env, "alice", &wrong, HOME), PamOutcome::AuthErr);
    assert_eq!(
        login(&env, "alice", &codes[1], HOME),
        PamOutcome::Success,
        "the known source after its own typo"
    );
    // The successes from home did not hand the strangers a fresh ceiling.
    assert_eq!(
        login(&env, "alice", &wrong, "198.51.100.7"),
        PamOutcome::MaxTries,
        "a new stranger after alice's logins from home"
    );
    let log = env.log();
    assert!(
        log.contains("outcome=\"throttled\""),
        "the audit log shows the throttled strangers"
    );
}

#[test]
fn strangers_stay_bounded_by_the_ceiling_and_its_backoff() {
    if !require("strangers_stay_bounded", PAM) {
        return;
    }
    // Short waits, so that the backoff can be watched for a few seconds.
    let env = TestEnv::start_with(
        "bounded",
        Limits {
            max_failures: 5,
            base_delay: "2".into(),
            max_delay: "\"4s\"".into(),
            user_max_failures: 20,
        },
    );
    let t = settled_now(30, 25);
    let bob = env.enroll_active("bob", &[], t - 30);
    let codes = recovery_codes(&env, "bob");
    assert_eq!(
        login(&env, "bob", &bob.code_at(t), HOME),
        PamOutcome::Success
    );

    // Forty strangers, one guess each: exactly the ceiling is looked at.
    let wrong = bob.wrong_code(t);
    let mut judged = 0;
    let mut throttled = 0;
    for source in strangers("192.0.2.", 40) {
        match login(&env, "bob", &wrong, &source) {
            PamOutcome::AuthErr => judged += 1,
            PamOutcome::MaxTries => throttled += 1,
            other => panic!("{source}: {other:?}"),
        }
    }
    println!("40 strangers, one guess each: {judged} judged, {throttled} throttled");
    assert_eq!((judged, throttled), (20, 20));

    // Then new strangers every 100 ms for 10 s: past the ceiling one guess
    // per wait (2 s, then 4 s) is judged.
    let started = Instant::now();
    let (mut later_judged, mut later_throttled, mut i) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(10) {
        i += 1;
        match login(
            &env,
            "bob",
            &bob.wrong_code(unix_now()),
            &format!("192.0.3.{i}"),
        ) {
            PamOutcome::AuthErr => later_judged += 1,
            PamOutcome::MaxTries => later_throttled += 1,
            other => panic!("stranger {i}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "then {i} new strangers in {seconds:.1} s: {later_judged} judged, {later_throttled} throttled \
         (bound: one per wait of 2 s, then 4 s)"
    );
    // 2 + 4 + 4 = 10 s: at most three judged, and some must be.
    assert!(
        (1..=3).contains(&later_judged),
        "{later_judged} guesses judged in {seconds:.1} s"
    );
    // bob from home meanwhile: never throttled (a recovery code: the
    // step of the code used above may not be over yet).
    assert_eq!(login(&env, "bob", &codes[0], HOME), PamOutcome::Success);
}

#[test]
fn ipv6_addresses_count_per_64() {
    if !require("ipv6_addresses_count_per_64", PAM) {
        return;
    }
    let env = TestEnv::start_with("ipv6", patient());
    let t = settled_now(30, 15);
    let carol = env.enroll_active("carol", &[], t - 30);
    let wrong = carol.wrong_code(t);
    // Twenty addresses of one /64: one source, throttled after five.
    let mut outcomes = Vec::new();
    for i in 1..=20 {
        outcomes.push(login(
            &env,
            "carol",
            &wrong,
            &format!("2001:db8:1:2::{i:x}"),
        ));
    }
    let judged = outcomes
        .iter()
        .filter(|o| **o == PamOutcome::AuthErr)
        .count();
    println!("20 addresses of 2001:db8:1:2::/64: {judged} judged, the rest throttled");
    assert_eq!(judged, 5, "{outcomes:?}");
    assert!(outcomes[5..].iter().all(|o| *o == PamOutcome::MaxTries));
    // The right code from yet another address of that /64: still throttled.
    assert_eq!(
        login(&env, "carol", &carol.code_at(t), "2001:db8:1:2:ffff::1"),
        PamOutcome::MaxTries
    );
    // The neighbouring /64 is another source.
    assert_eq!(
        login(&env, "carol", &carol.code_at(t), "2001:db8:1:3::1"),
        PamOutcome::Success
    );
    let entry = env.list_entry("carol").unwrap();
    assert_eq!(
        entry["failures"], 0,
        "the success reset the user-wide count: {entry}"
    );
}

#[test]
fn unlock_makes_strangers_need_the_whole_ceiling_again() {
    if !require("unlock_resets_the_ceiling", PAM) {
        return;
    }
    let env = TestEnv::start_with("unlock", patient());
    let t = settled_now(30, 20);
    let dave = env.enroll_active("dave", &[], t - 30);
    strangers_guess(&env, &dave, &strangers("198.51.100.", 5), 4);
    assert_eq!(
        login(&env, "dave", &dave.code_at(t), "192.0.2.200"),
        PamOutcome::MaxTries,
        "a new source at the ceiling"
    );
    env.otpd_expect(&["unlock", "dave"], 0);
    // One more stranger's guess does not lock dave again…
    strangers_guess(&env, &dave, &strangers("198.51.101.", 1), 1);
    let entry = env.list_entry("dave").unwrap();
    assert_eq!(entry["state"], "active", "{entry}");
    assert_eq!(entry["failures"], 1, "{entry}");
    // …and dave logs in from a new source.
    assert_eq!(
        login(&env, "dave", &dave.code_at(t), "192.0.2.200"),
        PamOutcome::Success
    );
}

/// `pamtester -v [-I rhost=RHOST] SERVICE USER authenticate` inside the
/// private host, as root with real uid `ruid` (what sshd is, with 0; what
/// su and sudo started by a user are), typing `answer`.
fn host_login(
    w: &otpd_tests::system::World,
    ruid: u32,
    service: &str,
    user: &str,
    rhost: &str,
    answer: &str,
) -> PamOutcome {
    let mut cmd = w.host.command(Program::Setpriv.path());
    cmd.arg(format!("--ruid={ruid}"))
        .arg("--")
        .arg(Program::Pamtester.path())
        .arg("-v");
    if !rhost.is_empty() {
        cmd.arg("-I").arg(format!("rhost={rhost}"));
    }
    cmd.args([service, user, "authenticate"]);
    let out = otpd_tests::process::run(
        cmd,
        format!("{answer}\n").as_bytes(),
        Duration::from_secs(30),
    );
    PamOutcome::from_output(&out)
}

#[test]
fn with_forward_pass_strangers_need_no_password_and_still_cannot_lock_the_user_out() {
    use otpd_tests::system::{require_private_host, World};
    if !require_private_host(
        "forward_pass_stack",
        &[Program::Pamtester, Program::Oathtool],
    ) {
        return;
    }
    // The shipped sshd.password-once stack: pam_otpd.so forward_pass, then
    // pam_unix.so use_first_pass. The code is judged before the password.
    let w = World::start("forward_pass", &["erin"], &[], patient());
    w.install_pam_example("otpd-once", "sshd.password-once", "");
    let t = settled_now(30, 20);
    let erin = w.env.enroll_active("erin", &[], t - 30);
    let password = w.password("erin");
    let answer = |code: &str| format!("{password}{code}");
    assert_eq!(
        host_login(&w, 0, "otpd-once", "erin", HOME, &answer(&erin.code_at(t))),
        PamOutcome::Success,
        "erin from home, password and code"
    );
    // Five strangers, no password at all: four guesses each reach the ceiling.
    let wrong = erin.wrong_code(t);
    for source in strangers("198.51.100.", 5) {
        for _ in 0..4 {
            assert_eq!(
                host_login(&w, 0, "otpd-once", "erin", &source, &wrong),
                PamOutcome::AuthErr
            );
        }
    }
    assert_eq!(
        host_login(&w, 0, "otpd-once", "erin", "198.51.100.99", &wrong),
        PamOutcome::MaxTries,
        "strangers are throttled"
    );
    let outcomes = otpd_tests::system::verify_outcomes(&w.env, "erin");
    let judged = outcomes.iter().filter(|o| *o == "wrong_code").count();
    println!("strangers without a password: {judged} guesses judged, then throttled");
    assert_eq!(judged, 20);
    // erin, from home: in.
    assert_eq!(
        host_login(
            &w,
            0,
            "otpd-once",
            "erin",
            HOME,
            &answer(&erin.code_at(t + 30))
        ),
        PamOutcome::Success,
        "erin from home after the strangers"
    );
    // Every code of the window is used now: recovery codes, at a prompt of
    // their own (a sudo that asks for the code only).
    let codes = recovery_codes(&w.env, "erin");
    w.host.write_pam_service(
        "otpd-code",
        &format!(
            "auth required {} socket={}\n",
            otpd_tests::system::module_for_users(&w.env).display(),
            w.env.socket.display()
        ),
    );
    // erin's own uid (su or sudo started by erin: no rhost, real uid
    // erin's) never logged in before, and is trusted all the same: a
    // stranger cannot be it.
    let uid = w.host.user("erin").uid;
    assert_eq!(
        host_login(&w, uid, "otpd-code", "erin", "", &codes[0]),
        PamOutcome::Success,
        "erin's own uid, locally"
    );
    // Root's console (real uid 0, no rhost) is an unknown source: throttled.
    assert_eq!(
        host_login(&w, 0, "otpd-code", "erin", "", &codes[1]),
        PamOutcome::MaxTries,
        "an unknown local source"
    );
}

#[test]
fn strangers_at_the_ceiling_cannot_keep_a_new_device_from_being_confirmed() {
    if !require("confirm_under_attack", PAM) {
        return;
    }
    let env = TestEnv::start_with("confirm_attack", patient());
    let t = settled_now(30, 20);
    let frank = env.enroll_active("frank", &[], t - 30);
    // A new phone for frank; the old one works until it is confirmed.
    let new = env.enroll("frank", &["--force"]);
    // Strangers reach the ceiling with guesses at the old phone's codes.
    strangers_guess(&env, &frank, &strangers("198.51.100.", 5), 4);
    assert_eq!(
        login(&env, "frank", &frank.code_at(t), "192.0.2.201"),
        PamOutcome::MaxTries
    );
    // The new phone's first code still confirms it (`otpd confirm` needs
    // root; the ceiling guards logins).
    env.otpd_expect(&["confirm", "frank", &new.code_at(t)], 0);
    let entry = env.list_entry("frank").unwrap();
    assert_eq!(
        entry["devices"].as_array().map(Vec::len),
        Some(1),
        "{entry}"
    );
    // After a revocation nothing a stranger can type counts (no device,
    // recovery code or text to hit), so the ceiling cannot be reached.
    let newer = env.enroll("frank", &["--force", "--revoke"]);
    env.otpd_expect(&["unlock", "frank"], 0);
    let entry_before = env.list_entry("frank").unwrap()["failures"].clone();
    for (source, guess) in [
        ("198.51.100.9", "000000"),
        ("198.51.100.9", "2345-6789-ABCD"),
    ] {
        assert_eq!(login(&env, "frank", guess, source), PamOutcome::AuthErr);
    }
    assert_eq!(env.list_entry("frank").unwrap()["failures"], entry_before);
    env.otpd_expect(&["confirm", "frank", &newer.code_at(t + 30)], 0);
}
