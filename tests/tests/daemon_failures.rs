//! Fail closed, fast: the module's answer when the daemon is gone or frozen;
//! what survives SIGKILL; one daemon per state dir; SIGTERM.

use otpd_tests::process::{ChildGuard, Running};
use otpd_tests::{require, settled_now, strace, PamOutcome, Program, TestEnv, PAM};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Logs in with timeout=1 and with the default (3 s): both must be
/// PAM_AUTHINFO_UNAVAIL, `pam_authenticate` returning within timeout + 1 s
/// (the module's own time, [`otpd_tests::PamLogin::authenticate_time`]:
/// not pamtester's start-up, which alone can take a second on a busy
/// machine).
fn assert_unavailable_in_time(env: &TestEnv, code: &str, what: &str) {
    for (args, timeout) in [("timeout=1", 1), ("", 3)] {
        let login = env.pam_login("alice", code, "192.0.2.1", args);
        let ms = login.authenticate_time().as_millis();
        println!(
            "{what}, timeout {timeout} s: {:?} after {ms} ms in pam_authenticate ({} ms in all)",
            login.outcome,
            login.elapsed().as_millis()
        );
        assert_eq!(
            login.outcome,
            PamOutcome::AuthInfoUnavail,
            "{what}: {}",
            login.output
        );
        assert!(
            login.authenticate_time() < Duration::from_secs(timeout + 1),
            "{what}: pam_authenticate took {ms} ms with a {timeout} s timeout"
        );
    }
}

#[test]
fn a_killed_daemon_means_authinfo_unavail_at_once() {
    if !require("a_killed_daemon_means_authinfo_unavail", PAM) {
        return;
    }
    let mut env = TestEnv::start("killed");
    let t = settled_now(30, 10);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.kill_daemon(libc::SIGKILL);
    assert_unavailable_in_time(&env, &alice.code_at(t), "daemon killed");
    // nullok lets users without a token through only when the daemon says
    // so: a daemon that cannot be asked is no reason to let anyone in.
    for user in ["alice", "ghost"] {
        let login = env.pam_service_nullok("").login(
            OsStr::new(user),
            &alice.code_at(t),
            "192.0.2.1",
            None,
        );
        assert_eq!(
            login.outcome,
            PamOutcome::AuthInfoUnavail,
            "nullok, {user}: {}",
            login.output
        );
    }
    let out = env.otpd_expect(&["list"], 3);
    assert!(!out.stderr.trim().is_empty(), "exit 3 without a reason");
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "more than one line: {out}"
    );
}

#[test]
fn a_stopped_daemon_means_authinfo_unavail_within_the_timeout() {
    if !require("a_stopped_daemon_means_authinfo_unavail", PAM) {
        return;
    }
    let env = TestEnv::start("stopped");
    let t = settled_now(30, 15);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.signal_daemon(libc::SIGSTOP);
    assert_unavailable_in_time(&env, &alice.code_at(t), "daemon stopped");
    env.signal_daemon(libc::SIGCONT);
    // The requests sent to the frozen daemon may still be carried out once it
    // runs again (using step t): the next step must work.
    let login = env.pam_login("alice", &alice.code_at(t + 30), "192.0.2.1", "");
    assert_eq!(
        login.outcome,
        PamOutcome::Success,
        "after SIGCONT: {}",
        login.output
    );
}

#[test]
fn an_accepted_step_and_every_user_survive_sigkill() {
    if !require("an_accepted_step_and_every_user_survive_sigkill", PAM) {
        return;
    }
    let mut env = TestEnv::start("sigkill");
    let t = settled_now(30, 14);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.enroll_active("bob", &["--algorithm", "SHA256", "--digits", "8"], t - 30);
    env.enroll("carl", &[]);
    let dora = env.enroll_active("dora", &[], t - 30);
    let guesser = "198.51.100.66";
    let wrong = dora.wrong_code(t);
    for _ in 0..5 {
        let login = env.pam_login("dora", &wrong, guesser, "");
        assert_eq!(login.outcome, PamOutcome::AuthErr, "{}", login.output);
    }
    let before: BTreeSet<String> = env.list().iter().map(|u| u["user"].to_string()).collect();

    let code = alice.code_at(t);
    let login = env.pam_login("alice", &code, "192.0.2.1", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    env.kill_daemon(libc::SIGKILL);
    let restarted = Instant::now();
    env.spawn_daemon();
    println!(
        "restart after SIGKILL: {} ms",
        restarted.elapsed().as_millis()
    );

    let replay = env.pam_login("alice", &code, "192.0.2.1", "");
    assert_eq!(
        replay.outcome,
        PamOutcome::AuthErr,
        "replay after SIGKILL: {}",
        replay.output
    );
    let after = env.list();
    let names: BTreeSet<String> = after.iter().map(|u| u["user"].to_string()).collect();
    assert_eq!(names, before, "users before and after the SIGKILL");
    let state = |name: &str| {
        after
            .iter()
            .find(|u| u["user"] == name)
            .map(|u| u["state"].clone())
            .unwrap()
    };
    assert_eq!(state("alice"), "active");
    assert_eq!(state("bob"), "active");
    assert_eq!(state("carl"), "pending");
    // Failure counters survive the SIGKILL too.
    let throttled = env.pam_login("dora", &dora.code_at(t), guesser, "");
    assert_eq!(
        throttled.outcome,
        PamOutcome::MaxTries,
        "dora's guesser after the restart: {}",
        throttled.output
    );
    let elsewhere = env.pam_login("dora", &dora.code_at(t), "192.0.2.1", "");
    assert_eq!(
        elsewhere.outcome,
        PamOutcome::Success,
        "dora elsewhere: {}",
        elsewhere.output
    );
    let next = env.pam_login("alice", &alice.code_at(t + 30), "192.0.2.1", "");
    assert_eq!(
        next.outcome,
        PamOutcome::Success,
        "the next step: {}",
        next.output
    );
}

#[test]
fn sigterm_ends_the_daemon_with_status_0_and_a_second_daemon_is_refused() {
    if !require("sigterm_and_second_daemon", PAM) {
        return;
    }
    let mut env = TestEnv::start("lifecycle");
    let t = settled_now(30, 12);
    let alice = env.enroll_active("alice", &[], t - 30);

    let second = Running::spawn(env.serve_command()).wait(Duration::from_secs(10));
    env.append_to_log(&second);
    println!(
        "second otpd serve: {} after {} ms",
        second.status,
        second.elapsed.as_millis()
    );
    assert!(
        !second.status.success(),
        "a second daemon on the same state dir: {second}"
    );
    assert!(
        second.elapsed < Duration::from_secs(5),
        "not at once: {second}"
    );
    assert!(
        !second.stderr.trim().is_empty(),
        "refused without a message: {second}"
    );

    // The first daemon kept its socket and serves on.
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    assert_eq!(
        login.outcome,
        PamOutcome::Success,
        "after the second daemon: {}",
        login.output
    );

    env.restart_daemon();
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    assert_eq!(
        login.outcome,
        PamOutcome::AuthErr,
        "replay after restart: {}",
        login.output
    );
    let status = env.kill_daemon(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "SIGTERM: {status}\n{}", env.log());
}

#[test]
fn the_accepted_step_is_fsynced_before_the_reply_is_written() {
    if !require(
        "the_accepted_step_is_fsynced_before_the_reply",
        &[
            Program::Pamtester,
            Program::PamWrapper,
            Program::Oathtool,
            Program::Strace,
        ],
    ) {
        return;
    }
    let env = TestEnv::start("durability");
    let t = settled_now(30, 15);
    let alice = env.enroll_active("alice", &[], t - 30);

    let trace = env.dir.join("strace.trace");
    let strace_out = env.dir.join("strace.out");
    let mut cmd = Command::new(Program::Strace.path());
    cmd.args(["-f", "-yy", "-s", "512", "-e"])
        .arg("trace=fsync,fdatasync,write,writev,sendto,sendmsg,read,readv,recvfrom,recvmsg")
        .arg("-o")
        .arg(&trace)
        .arg("-p")
        .arg(env.daemon_pid().to_string());
    let mut tracer = ChildGuard::spawn(cmd, &strace_out);
    let attach = Instant::now();
    while !std::fs::read_to_string(&strace_out)
        .unwrap_or_default()
        .contains("attached")
    {
        assert!(
            attach.elapsed() < Duration::from_secs(10),
            "strace did not attach"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.1", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    std::thread::sleep(Duration::from_millis(300));
    tracer.stop(libc::SIGINT, Duration::from_secs(10));

    let log = std::fs::read_to_string(&trace).expect("read the strace log");
    let calls = strace::parse(&log);
    let socket = env.socket.display().to_string();
    let state = env.state_dir.display().to_string();
    let is_read = |name: &str| matches!(name, "read" | "readv" | "recvfrom" | "recvmsg");
    let is_write = |name: &str| matches!(name, "write" | "writev" | "sendto" | "sendmsg");

    let request = calls
        .iter()
        // The login's answer to the prompt: the code.
        .find(|c| is_read(&c.name) && c.on_socket(&socket) && c.args.contains("answer"))
        .unwrap_or_else(|| panic!("no read of the answer with the code in the trace:\n{log}"));
    let reply = calls
        .iter()
        .filter(|c| is_write(&c.name) && c.on_socket(&socket) && c.fd == request.fd)
        .find(|c| c.start_line > request.end_line)
        .unwrap_or_else(|| panic!("no reply on the request's connection:\n{log}"));
    assert!(
        calls[calls.iter().position(|c| c == reply).unwrap()..]
            .iter()
            .any(|c| c.fd == reply.fd && c.args.contains("success")),
        "the reply is not the login's successful end:\n{log}"
    );
    let syncs: Vec<_> = calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "fsync" | "fdatasync"))
        .filter(|c| c.on_file_under(&state) && c.succeeded())
        .filter(|c| c.end_line > request.end_line && c.end_line < reply.start_line)
        .collect();
    let all_syncs = calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "fsync" | "fdatasync"))
        .count();
    println!(
        "{} system calls traced; {all_syncs} fsync/fdatasync in all; between the request \
         (line {}) and the reply (line {}): {:?}",
        calls.len(),
        request.end_line,
        reply.start_line,
        syncs
            .iter()
            .map(|c| format!("{}({})", c.name, c.fd.as_deref().unwrap_or("?")))
            .collect::<Vec<_>>()
    );
    assert!(
        !syncs.is_empty(),
        "no successful fsync/fdatasync of a file under {state} completed between reading the \
         code and writing the login's end:\n{log}"
    );
}
