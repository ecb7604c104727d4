//! Callers are who the kernel says they are: the module believes only a
//! socket owned by root or `daemon_user`; the daemon lets a non-root caller
//! verify only its own name and use no admin operation.

use otpd_tests::pam::PamService;
use otpd_tests::process::{as_nobody, run, ChildGuard, NOBODY_UID};
use otpd_tests::programs::{pam_module, test_peer_binary};
use otpd_tests::{require, settled_now, Limits, PamOutcome, Program, TestEnv};
use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PAM_AS_NOBODY: &[Program] = &[
    Program::Pamtester,
    Program::PamWrapper,
    Program::Oathtool,
    Program::Setpriv,
];

fn wait_for_socket(socket: &Path, peer: &mut ChildGuard, log: &Path) {
    let started = Instant::now();
    while UnixStream::connect(socket).is_err() {
        if let Some(status) = peer.child.try_wait().unwrap() {
            panic!(
                "otpd-test-peer exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "otpd-test-peer did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An impostor on `socket`, run by `runner` (setpriv) or as root.
fn impostor(env: &TestEnv, socket: &Path, runner: Option<Command>) -> ChildGuard {
    let peer = env.copy_for_nobody(&test_peer_binary(), "otpd-test-peer", 0o755);
    let mut cmd = match runner {
        Some(mut runner) => {
            runner.arg(&peer);
            runner
        }
        None => Command::new(&peer),
    };
    cmd.arg("serve").arg(socket);
    let log = socket.with_extension("log");
    let mut guard = ChildGuard::spawn(cmd, &log);
    wait_for_socket(socket, &mut guard, &log);
    guard
}

#[test]
fn the_module_does_not_believe_a_socket_served_by_another_uid() {
    if !require(
        "the_module_does_not_believe_a_socket_served_by_another_uid",
        PAM_AS_NOBODY,
    ) {
        return;
    }
    let env = TestEnv::without_daemon("impostor", &Limits::default());
    let nobody_dir = env.dir.join("nobody");
    std::fs::create_dir(&nobody_dir).unwrap();
    std::os::unix::fs::chown(&nobody_dir, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
    let fake_socket = nobody_dir.join("otpd.sock");
    let _fake = impostor(&env, &fake_socket, Some(as_nobody_runner()));

    let stack = |args: &str| {
        env.pam_stack(&format!(
            "auth required {} socket={} {args}\n",
            pam_module().display(),
            fake_socket.display()
        ))
    };
    let login = stack("").login(OsStr::new("alice"), "123456", "192.0.2.1", None);
    println!("impostor as uid {NOBODY_UID}: {:?}", login.outcome);
    assert_ne!(
        login.outcome,
        PamOutcome::Success,
        "the module believed uid {NOBODY_UID}: {}",
        login.output
    );
    assert_eq!(
        login.outcome,
        PamOutcome::AuthInfoUnavail,
        "{}",
        login.output
    );

    // Controls: the impostor is convincing, only its uid gives it away.
    let trusted =
        stack("daemon_user=nobody").login(OsStr::new("alice"), "123456", "192.0.2.1", None);
    assert_eq!(
        trusted.outcome,
        PamOutcome::Success,
        "with daemon_user=nobody the same answer should be believed: {}",
        trusted.output
    );
    let root_socket = env.dir.join("root-impostor.sock");
    let _root_fake = impostor(&env, &root_socket, None);
    let as_root = env
        .pam_stack(&format!(
            "auth required {} socket={}\n",
            pam_module().display(),
            root_socket.display()
        ))
        .login(OsStr::new("alice"), "123456", "192.0.2.1", None);
    assert_eq!(
        as_root.outcome,
        PamOutcome::Success,
        "a root-owned peer: {}",
        as_root.output
    );
}

fn as_nobody_runner() -> Command {
    let mut cmd = Command::new(Program::Setpriv.path());
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    cmd
}

/// The service used by a pamtester running as nobody: a copy of the module
/// that uid 65534 can read wherever the target dir is.
fn service_for_nobody(env: &TestEnv) -> PamService {
    let module = env.copy_for_nobody(&pam_module(), "libpam_otpd.so", 0o644);
    env.pam_service_with(&module, "")
}

/// One raw request as uid 65534; the response body as JSON.
fn request_as_nobody(env: &TestEnv, body: &str) -> Value {
    let peer = env.copy_for_nobody(&test_peer_binary(), "otpd-test-peer", 0o755);
    let mut cmd = as_nobody(&peer);
    cmd.arg("request").arg(&env.socket).arg(body);
    let out = run(cmd, b"", Duration::from_secs(20));
    assert_eq!(out.code(), 0, "no response: {out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_non_root_caller_may_verify_only_its_own_name() {
    if !require(
        "a_non_root_caller_may_verify_only_its_own_name",
        PAM_AS_NOBODY,
    ) {
        return;
    }
    let env = TestEnv::start("non_root_caller");
    let t = settled_now(30, 12);
    let alice = env.enroll_active("alice", &[], t - 30);
    let nobody = env.enroll_active("nobody", &[], t - 30);
    let service = service_for_nobody(&env);

    let other = service.login(
        OsStr::new("alice"),
        &alice.code_at(t),
        "",
        Some(as_nobody_runner()),
    );
    println!("uid {NOBODY_UID} verifying alice: {:?}", other.outcome);
    assert_ne!(
        other.outcome,
        PamOutcome::Success,
        "uid {NOBODY_UID} verified alice: {}",
        other.output
    );

    let raw = request_as_nobody(
        &env,
        &format!(
            r#"{{"op":"verify","user":"alice","code":"{}","service":"test","rhost":""}}"#,
            alice.code_at(t)
        ),
    );
    assert_eq!(raw["kind"], "error", "{raw}");
    assert_eq!(raw["code"], "permission_denied", "{raw}");

    // A login of its own name but typed as another user's: refused before
    // anything is read (nullok must not pass a spelling with a record).
    let login = |user: &str, typed: &str| {
        request_as_nobody(
            &env,
            &format!(
                r#"{{"op":"login","user":"{user}","typed":"{typed}","known":true,"service":"test","rhost":"","ruid":{NOBODY_UID},"nullok":true}}"#
            ),
        )
    };
    for (user, typed) in [("nobody", "alice"), ("alice", "alice")] {
        let raw = login(user, typed);
        assert_eq!(raw["kind"], "error", "{user} typed {typed}: {raw}");
        assert_eq!(
            raw["code"], "permission_denied",
            "{user} typed {typed}: {raw}"
        );
    }
    // Its own name as spelled: the conversation begins (a prompt).
    let raw = login("nobody", "nobody");
    assert_eq!(raw["kind"], "step", "{raw}");

    // The refused attempts consumed nothing: alice's code still works for root.
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    assert_eq!(
        login.outcome,
        PamOutcome::Success,
        "alice after the refusals: {}",
        login.output
    );

    // A screen locker running as the user may verify the user.
    let own = service.login(
        OsStr::new("nobody"),
        &nobody.code_at(t),
        "",
        Some(as_nobody_runner()),
    );
    assert_eq!(
        own.outcome,
        PamOutcome::Success,
        "uid {NOBODY_UID} verifying nobody: {}",
        own.output
    );
}

#[test]
fn admin_operations_are_refused_to_a_non_root_caller() {
    if !require(
        "admin_operations_are_refused_to_a_non_root_caller",
        &[Program::Setpriv, Program::Oathtool],
    ) {
        return;
    }
    let env = TestEnv::start("non_root_admin");
    let t = settled_now(30, 8);
    env.enroll_active("alice", &[], t - 30);
    let before = env.list();

    for args in [
        vec!["list"],
        vec!["list", "--json"],
        vec!["enroll", "mallory"],
        vec!["remove", "alice"],
        vec!["unlock", "alice"],
    ] {
        let out = env.otpd_as_nobody(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "otpd {args:?} as uid {NOBODY_UID}: {out}"
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "refused without a reason: {out}"
        );
    }
    // The daemon itself refuses, whatever the CLI checks first.
    for body in [
        r#"{"op":"list"}"#,
        r#"{"op":"remove","user":"alice"}"#,
        r#"{"op":"unlock","user":"alice"}"#,
        r#"{"op":"enroll","user":"mallory","issuer":null,"algorithm":null,"digits":null,"period":null,"force":false}"#,
    ] {
        let response = request_as_nobody(&env, body);
        assert_eq!(response["kind"], "error", "{body}: {response}");
        assert_eq!(response["code"], "permission_denied", "{body}: {response}");
    }
    assert_eq!(
        env.list(),
        before,
        "a refused admin request changed the store"
    );
}

#[test]
fn one_local_user_cannot_take_every_connection_slot() {
    if !require(
        "one_local_user_cannot_take_every_connection_slot",
        PAM_AS_NOBODY,
    ) {
        return;
    }
    let env = TestEnv::start("slots");
    let t = settled_now(30, 15);
    let alice = env.enroll_active("alice", &[], t - 30);

    // uid 65534 opens 40 connections and keeps them open.
    let peer = env.copy_for_nobody(&test_peer_binary(), "otpd-test-peer", 0o755);
    let mut cmd = as_nobody(&peer);
    cmd.arg("hold")
        .arg(&env.socket)
        .args(["nobody", "40", "20"]);
    let log = env.dir.join("hold.log");
    let _holder = ChildGuard::spawn(cmd, &log);
    let started = Instant::now();
    // "answered A of N, K kept open"
    let (answered, kept): (usize, usize) = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        if let ["answered", answered, "of", _, kept, "kept", "open", ..] = words[..] {
            break (answered.parse().unwrap(), kept.parse().unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the holder never reported: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("uid {NOBODY_UID} got {answered} of 40 connections served, {kept} kept open");
    // Each new connection is served: the uid's own idle ones give way
    // (listener.rs), so it never holds more than its share.
    assert_eq!(
        answered, 40,
        "a uid at its share is served by closing its own idle ones"
    );
    assert!(
        kept <= 16,
        "uid {NOBODY_UID} holds {kept} connections, more than its share of 16"
    );

    // Root (sshd, sudo) is still served while they are held.
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    env.otpd_expect(&["list"], 0);
}
