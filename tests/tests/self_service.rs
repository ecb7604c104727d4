//! `otpd self`, run by a real non-root user (uid 65534, `nobody`, through
//! `setpriv`) against the real daemon: the user's own devices, recovery
//! codes and activity; every change proved with a code of an active device
//! that is checked like a login (counted, throttled, used up); a recovery
//! code for a lost phone, with its audit line; another user's record never
//! reachable; root refused.

use otpd_tests::process::{as_nobody, run, Output, NOBODY_UID};
use otpd_tests::programs::test_peer_binary;
use otpd_tests::totp::recovery_codes_in;
use otpd_tests::{require, settled_now, Enrollment, Limits, Program, TestEnv};
use serde_json::Value;
use std::time::Duration;

/// What these tests run besides otpd.
const NEEDS: &[Program] = &[Program::Setpriv, Program::Oathtool];

/// The user uid 65534 is in the user database.
const NOBODY: &str = "nobody";

/// `otpd self ARGS…` as uid 65534; asserts the exit status.
fn otpd_self(env: &TestEnv, args: &[&str], status: i32) -> Output {
    let mut all = vec!["self"];
    all.extend_from_slice(args);
    let out = env.otpd_as_nobody(&all);
    assert_eq!(
        out.status.code(),
        Some(status),
        "otpd {all:?} as uid {NOBODY_UID}: expected exit {status}, got {out}"
    );
    out
}

/// `otpd self devices --json` as uid 65534, parsed.
fn own_devices(env: &TestEnv) -> Value {
    let out = otpd_self(env, &["devices", "--json"], 0);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The (name, state) of each device in `otpd self devices --json`.
fn device_states(env: &TestEnv) -> Vec<(String, String)> {
    own_devices(env)["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The enrolment `otpd self add-device` printed.
fn printed_enrollment(out: &Output) -> Enrollment {
    let uri = out
        .stdout
        .lines()
        .find(|line| line.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth:// line: {out}"));
    Enrollment::from_uri(uri.trim_end()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// One raw request as uid 65534 through the protocol's framing; the
/// response as JSON.
fn raw_as_nobody(env: &TestEnv, body: &str) -> Value {
    let peer = env.copy_for_nobody(&test_peer_binary(), "otpd-test-peer", 0o755);
    let mut cmd = as_nobody(&peer);
    cmd.arg("request").arg(&env.socket).arg(body);
    let out = run(cmd, b"", Duration::from_secs(20));
    assert_eq!(out.code(), 0, "no response: {out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The audit lines of `op` in the daemon's log.
fn audit_lines(env: &TestEnv, op: &str) -> Vec<String> {
    env.log()
        .lines()
        .filter(|line| line.contains(&format!("op=\"{op}\"")))
        .map(str::to_owned)
        .collect()
}

/// `otpd list`'s failure count of `user`.
fn failures(env: &TestEnv, user: &str) -> u64 {
    env.list_entry(user).expect("listed")["failures"]
        .as_u64()
        .expect("failures")
}

#[test]
fn a_user_adds_confirms_and_removes_devices_and_renews_recovery_codes() {
    if !require(
        "a_user_adds_confirms_and_removes_devices_and_renews_recovery_codes",
        NEEDS,
    ) {
        return;
    }
    let env = TestEnv::start("self_devices");
    let t = settled_now(30, 20);
    let phone = env.enroll_active(NOBODY, &[], t - 30);
    let alice = env.enroll_active("alice", &[], t - 30);
    let alice_before = env.list_entry("alice").unwrap();

    assert_eq!(device_states(&env), [("default".into(), "active".into())]);
    let table = otpd_self(&env, &["devices"], 0);
    assert!(
        table.stdout.contains("Devices of nobody") && table.stdout.contains("default"),
        "{table}"
    );

    // A second device, proved with the phone's code; pending until its
    // own first code.
    let added = otpd_self(
        &env,
        &["add-device", "tablet", "--code", &phone.code_at(t)],
        0,
    );
    let tablet = printed_enrollment(&added);
    assert_eq!(tablet.user, NOBODY, "{added}");
    assert!(added.stdout.contains("otpd self confirm tablet"), "{added}");
    assert!(
        added.stdout.contains('█') || added.stdout.contains('▀'),
        "no QR code in the terminal: {added}"
    );
    assert_eq!(
        device_states(&env),
        [
            ("default".into(), "active".into()),
            ("tablet".into(), "pending".into())
        ]
    );
    // A wrong first code leaves it pending.
    otpd_self(&env, &["confirm", "tablet", &tablet.wrong_code(t - 30)], 1);
    let confirmed = otpd_self(&env, &["confirm", "tablet", &tablet.code_at(t - 30)], 0);
    let first_codes = recovery_codes_in(&confirmed.stdout);
    assert_eq!(first_codes.len(), 10, "{confirmed}");
    assert_eq!(
        device_states(&env),
        [
            ("default".into(), "active".into()),
            ("tablet".into(), "active".into())
        ]
    );

    // New recovery codes, shown once, replacing the old ones.
    let renewed = otpd_self(&env, &["recovery-codes", "--code", &tablet.code_at(t)], 0);
    let codes = recovery_codes_in(&renewed.stdout);
    assert_eq!(codes.len(), 10, "{renewed}");
    assert!(codes.iter().all(|c| !first_codes.contains(c)), "{renewed}");
    assert_eq!(own_devices(&env)["recovery_codes"], 10);
    // The code that proved it is used up: a replay changes nothing.
    let again = otpd_self(&env, &["recovery-codes", "--code", &tablet.code_at(t)], 1);
    assert!(again.stderr.contains("already used"), "{again}");
    assert!(recovery_codes_in(&again.stdout).is_empty(), "{again}");

    // The phone goes, proved with the tablet's code.
    otpd_self(
        &env,
        &[
            "remove-device",
            "default",
            "--code",
            &tablet.code_at(t + 30),
        ],
        0,
    );
    assert_eq!(device_states(&env), [("tablet".into(), "active".into())]);
    // The last active device never goes (refused before any code is
    // checked: nothing counted).
    let before = failures(&env, NOBODY);
    let last = otpd_self(
        &env,
        &["remove-device", "tablet", "--code", &tablet.wrong_code(t)],
        1,
    );
    assert!(last.stderr.contains("last active device"), "{last}");
    assert_eq!(device_states(&env), [("tablet".into(), "active".into())]);
    assert_eq!(failures(&env, NOBODY), before);
    // A device that does not exist.
    let none = otpd_self(
        &env,
        &["remove-device", "laptop", "--code", &tablet.wrong_code(t)],
        1,
    );
    assert!(none.stderr.contains("no device \"laptop\""), "{none}");

    // Every change has its audit line with the user and the uid.
    for op in [
        "self_add_device",
        "self_confirm",
        "self_recovery_codes",
        "self_remove_device",
    ] {
        let lines = audit_lines(&env, op);
        assert!(!lines.is_empty(), "no {op} audit line:\n{}", env.log());
        assert!(
            lines
                .iter()
                .all(|l| l.contains("user=\"nobody\"") && l.contains(&format!("uid={NOBODY_UID}"))),
            "{lines:#?}"
        );
    }
    // alice was never touched.
    assert_eq!(env.list_entry("alice").unwrap(), alice_before);
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    assert_eq!(
        login.outcome,
        otpd_tests::PamOutcome::Success,
        "{}",
        login.output
    );
}

#[test]
fn activity_shows_the_users_logins_and_failures() {
    if !require("activity_shows_the_users_logins_and_failures", NEEDS) {
        return;
    }
    let env = TestEnv::start("self_activity");
    let t = settled_now(30, 15);
    let phone = env.enroll_active(NOBODY, &[], t - 30);
    let empty = otpd_self(&env, &["activity"], 0);
    assert!(empty.stdout.contains("No logins"), "{empty}");

    // A failure from one host, a login from another, through real PAM.
    let failed = env.pam_login(NOBODY, &phone.wrong_code(t), "192.0.2.7", "");
    assert_ne!(failed.outcome, otpd_tests::PamOutcome::Success);
    let ok = env.pam_login(NOBODY, &phone.code_at(t), "198.51.100.4", "");
    assert_eq!(ok.outcome, otpd_tests::PamOutcome::Success, "{}", ok.output);

    let out = otpd_self(&env, &["activity", "--json"], 0);
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(json["user"], NOBODY);
    let events: Vec<(String, String)> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["time"].as_u64().unwrap() >= t - 5, "{e}");
            assert!(e["service"].as_str().unwrap().starts_with("otptest"), "{e}");
            (
                e["source"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("192.0.2.7".into(), "wrong_code".into()),
            ("198.51.100.4".into(), "accepted".into())
        ]
    );
    let table = otpd_self(&env, &["activity"], 0);
    let newest = table
        .stdout
        .lines()
        .position(|l| l.contains("198.51.100.4"))
        .unwrap_or_else(|| panic!("{table}"));
    let oldest = table
        .stdout
        .lines()
        .position(|l| l.contains("192.0.2.7"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(newest < oldest, "newest first: {table}");

    // Bounded: 19 more failures (under the per-user ceiling of 20, each
    // from a host of its own) keep only the latest 20 of the 21 events.
    for n in 0..19 {
        env.pam_login(NOBODY, &phone.wrong_code(t), &format!("203.0.113.{n}"), "");
    }
    let out = otpd_self(&env, &["activity", "--json"], 0);
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), 20, "{out}");
    assert_eq!(events[0]["source"], "198.51.100.4", "{out}");
    assert_eq!(events[19]["source"], "203.0.113.18", "{out}");
}

#[test]
fn a_wrong_code_is_refused_counted_and_throttled_like_a_login() {
    if !require(
        "a_wrong_code_is_refused_counted_and_throttled_like_a_login",
        NEEDS,
    ) {
        return;
    }
    let limits = Limits {
        max_failures: 3,
        ..Limits::default()
    };
    let env = TestEnv::start_with("self_limits", limits);
    let t = settled_now(30, 15);
    let phone = env.enroll_active(NOBODY, &[], t - 30);
    let devices_before = device_states(&env);

    for n in 1..=3 {
        let out = otpd_self(
            &env,
            &["add-device", "tablet", "--code", &phone.wrong_code(t)],
            1,
        );
        assert!(out.stderr.contains("wrong code"), "{out}");
        assert!(out.stderr.contains("nothing was changed"), "{out}");
        assert!(!out.stdout.contains("otpauth://"), "{out}");
        assert_eq!(failures(&env, NOBODY), n, "counted like a failed login");
        assert_eq!(device_states(&env), devices_before);
    }
    // Past max_failures the caller's uid waits: even the right code is
    // refused without a look, and is not used up.
    let throttled = otpd_self(&env, &["recovery-codes", "--code", &phone.code_at(t)], 1);
    assert!(
        throttled.stderr.contains("too many failed attempts"),
        "{throttled}"
    );
    assert!(recovery_codes_in(&throttled.stdout).is_empty());
    let throttled_lines = audit_lines(&env, "self_recovery_codes");
    assert!(
        throttled_lines
            .iter()
            .any(|l| l.contains("outcome=\"throttled\"")),
        "{throttled_lines:#?}"
    );
    // The same code still logs in from elsewhere (a source of its own).
    let login = env.pam_login(NOBODY, &phone.code_at(t), "192.0.2.1", "");
    assert_eq!(
        login.outcome,
        otpd_tests::PamOutcome::Success,
        "{}",
        login.output
    );
    // The source of the self-service checks is the caller's uid.
    let counted = audit_lines(&env, "self_add_device");
    assert!(
        counted
            .iter()
            .filter(|l| l.contains("outcome=\"wrong_code\""))
            .count()
            == 3,
        "{counted:#?}"
    );
    let list = env.otpd_expect(&["list"], 0);
    assert!(list.stdout.contains("nobody"), "{list}");
}

#[test]
fn another_users_record_is_never_reachable() {
    if !require("another_users_record_is_never_reachable", NEEDS) {
        return;
    }
    let env = TestEnv::start("self_other_user");
    let t = settled_now(30, 15);
    env.enroll_active(NOBODY, &[], t - 30);
    let alice = env.enroll_active("alice", &["--device", "phone"], t - 30);
    let alice_before = env.list_entry("alice").unwrap();

    // The CLI takes no user name.
    for args in [
        vec!["devices", "alice"],
        vec!["activity", "--user", "alice"],
        vec!["recovery-codes", "alice", "--code", "123456"],
    ] {
        let out = otpd_self(&env, &args, 2);
        assert!(out.stderr.contains("unexpected argument"), "{out}");
    }
    // Raw requests: a name in a self request is no field of it, and the
    // admin requests that take one are root's.
    for body in [
        r#"{"op":"self_devices","user":"alice"}"#.to_owned(),
        r#"{"op":"self_activity","user":"alice"}"#.to_owned(),
        format!(
            r#"{{"op":"self_recovery_codes","user":"alice","proof":{{"with":"code","code":"{}"}}}}"#,
            alice.code_at(t)
        ),
    ] {
        let raw = raw_as_nobody(&env, &body);
        assert_eq!(raw["kind"], "error", "{body}: {raw}");
        assert_eq!(raw["code"], "bad_request", "{body}: {raw}");
    }
    for body in [
        r#"{"op":"recovery_codes","user":"alice","count":null}"#.to_owned(),
        r#"{"op":"remove","user":"alice","device":"phone"}"#.to_owned(),
        r#"{"op":"enroll","user":"alice","issuer":null,"algorithm":null,"digits":null,"period":null,"force":false,"device":"evil"}"#.to_owned(),
    ] {
        let raw = raw_as_nobody(&env, &body);
        assert_eq!(raw["kind"], "error", "{body}: {raw}");
        assert_eq!(raw["code"], "permission_denied", "{body}: {raw}");
    }
    // alice's own code proves nothing for nobody (it is not nobody's
    // device), and is not used up.
    let out = otpd_self(&env, &["recovery-codes", "--code", &alice.code_at(t)], 1);
    assert!(out.stderr.contains("wrong code"), "{out}");
    // What a self request reaches is the caller's own record.
    let raw = raw_as_nobody(&env, r#"{"op":"self_devices"}"#);
    assert_eq!(raw["kind"], "own_devices", "{raw}");
    assert_eq!(raw["user"], NOBODY, "{raw}");
    assert_eq!(raw["devices"][0]["name"], "default", "{raw}");

    assert_eq!(env.list_entry("alice").unwrap(), alice_before);
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    assert_eq!(
        login.outcome,
        otpd_tests::PamOutcome::Success,
        "{}",
        login.output
    );
}

#[test]
fn root_is_refused_with_a_pointer_to_the_admin_commands() {
    if !require(
        "root_is_refused_with_a_pointer_to_the_admin_commands",
        NEEDS,
    ) {
        return;
    }
    let env = TestEnv::start("self_root");
    let t = settled_now(30, 10);
    env.enroll_active("root", &[], t - 30);
    for args in [vec!["self", "devices"], vec!["self", "activity"]] {
        let out = env.otpd_expect(&args, 1);
        assert!(
            out.stderr.contains("admin commands") && out.stderr.contains("otpd list"),
            "{out}"
        );
    }
    let denied = audit_lines(&env, "self_devices");
    assert!(
        denied
            .iter()
            .any(|l| l.contains("outcome=\"denied\"") && l.contains("uid=0")),
        "{denied:#?}"
    );
}

#[test]
fn a_recovery_code_adds_a_device_for_a_lost_phone_and_tells_the_admin() {
    if !require(
        "a_recovery_code_adds_a_device_for_a_lost_phone_and_tells_the_admin",
        NEEDS,
    ) {
        return;
    }
    let env = TestEnv::start("self_recovery");
    let t = settled_now(30, 15);
    let lost = env.enroll(NOBODY, &[]);
    let confirmed = env.otpd_expect(&["confirm", NOBODY, &lost.code_at(t - 30)], 0);
    let codes = recovery_codes_in(&confirmed.stdout);
    assert_eq!(codes.len(), 10, "{confirmed}");

    // Not a recovery code at all: a usage error, nothing counted.
    let bad = otpd_self(
        &env,
        &["add-device", "newphone", "--recovery-code", "not-one"],
        2,
    );
    assert!(bad.stderr.contains("not a recovery code"), "{bad}");
    assert_eq!(failures(&env, NOBODY), 0);

    let added = otpd_self(
        &env,
        &["add-device", "newphone", "--recovery-code", &codes[3]],
        0,
    );
    let newphone = printed_enrollment(&added);
    let warned = audit_lines(&env, "self_recovery");
    assert!(
        warned.iter().any(|l| l.contains("WARN")
            && l.contains("outcome=\"accepted_recovery_code\"")
            && l.contains("user=\"nobody\"")
            && l.contains(&format!("uid={NOBODY_UID}"))),
        "{warned:#?}"
    );
    otpd_self(&env, &["confirm", "newphone", &newphone.code_at(t - 30)], 0);
    assert_eq!(
        device_states(&env),
        [
            ("default".into(), "active".into()),
            ("newphone".into(), "active".into())
        ]
    );
    // The lost phone goes, proved with the new one.
    otpd_self(
        &env,
        &["remove-device", "default", "--code", &newphone.code_at(t)],
        0,
    );
    assert_eq!(device_states(&env), [("newphone".into(), "active".into())]);

    // The recovery code was used up: refused, counted, and warned about.
    let again = otpd_self(
        &env,
        &["add-device", "spare", "--recovery-code", &codes[3]],
        1,
    );
    assert!(again.stderr.contains("wrong or used up"), "{again}");
    assert!(
        audit_lines(&env, "self_recovery")
            .iter()
            .any(|l| l.contains("WARN") && l.contains("outcome=\"wrong_code\"")),
        "{}",
        env.log()
    );
    assert_eq!(device_states(&env), [("newphone".into(), "active".into())]);
    // A recovery code proves only the adding of a device.
    let raw = raw_as_nobody(
        &env,
        &format!(
            r#"{{"op":"self_recovery_codes","proof":{{"with":"recovery_code","code":"{}"}}}}"#,
            codes[4]
        ),
    );
    assert_eq!(raw["code"], "bad_request", "{raw}");
}
