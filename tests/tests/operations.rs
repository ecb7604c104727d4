//! Running otpd as an operator does: `otpd status`, the checks that stop a
//! daemon whose config, state dir or programs others could change, and a
//! socket handed over by systemd (`systemd-socket-activate`, as
//! otpd.socket does).

use otpd_tests::process::ChildGuard;
use otpd_tests::programs::otpd_binary;
use otpd_tests::{require, settled_now, Limits, PamOutcome, TestEnv, PAM};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn status_shows_the_daemon_and_exits_3_when_it_is_down() {
    let mut env = TestEnv::start("status");
    let t = settled_now(30, 3);
    env.enroll_active("alice", &[], t - 30);
    env.enroll("bob", &[]);
    let out = env.otpd_expect(&["status"], 0);
    assert!(
        out.stdout
            .contains(&format!("otpd {} is running", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(
        out.stdout.contains("1 active (0 throttled now), 1 pending"),
        "{out}"
    );
    assert!(
        out.stdout.contains(&env.state_dir.display().to_string()),
        "{out}"
    );
    // Not for a non-root caller.
    assert_eq!(env.otpd_as_nobody(&["status"]).status.code(), Some(1));

    env.kill_daemon(libc::SIGTERM);
    let out = env.otpd_expect(&["status"], 3);
    assert!(
        out.stderr.contains(&env.socket.display().to_string()),
        "{out}"
    );
}

/// `otpd serve` with `env`'s config, expected to refuse to start
/// ([`TestEnv::serve_refused`]); returns its stderr.
fn refused_start(env: &TestEnv) -> String {
    env.serve_refused("files others could change").stderr
}

#[test]
fn files_others_could_change_stop_the_daemon_with_the_fix() {
    let env = TestEnv::without_daemon("trusted_files", &Limits::default());

    chmod(&env.config, 0o666);
    let said = refused_start(&env);
    assert!(
        said.contains("is writable by others")
            && said.contains(&format!("chmod go-w {}", env.config.display())),
        "{said}"
    );
    chmod(&env.config, 0o644);

    chmod(&env.state_dir, 0o777);
    let said = refused_start(&env);
    assert!(
        said.contains(&format!("chmod 0700 {}", env.state_dir.display())),
        "{said}"
    );
    chmod(&env.state_dir, 0o700);

    // A sender others may rewrite would run their code.
    let sender = env.dir.join("send-sms");
    std::fs::write(&sender, "#!/bin/sh\nexit 0\n").unwrap();
    chmod(&sender, 0o777);
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(&format!("\n[sms]\ncommand = \"{}\"\n", sender.display()));
    std::fs::write(&env.config, text).unwrap();
    let said = refused_start(&env);
    assert!(
        said.contains("[sms] command") && said.contains("chmod go-w"),
        "{said}"
    );
    chmod(&sender, 0o755);

    // Fixed: it starts.
    if let Err(said) = env.try_serve() {
        panic!("with every file fixed, otpd serve still refused:\n{said}");
    }
}

#[test]
fn a_socket_handed_over_by_systemd_is_used_and_left_to_systemd() {
    if !require("socket activation", PAM) {
        return;
    }
    let Some(activate) = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .iter()
    .map(std::path::Path::new)
    .find(|p| p.exists()) else {
        assert!(
            !otpd_tests::programs::under_ci(),
            "systemd-socket-activate is missing"
        );
        println!("SKIP socket activation: systemd-socket-activate not installed");
        return;
    };
    let env = TestEnv::without_daemon("socket_activation", &Limits::default());
    // systemd-socket-activate passes otpd no variable of its own
    // environment: RUST_LOG goes through -E.
    let mut cmd = Command::new(activate);
    cmd.arg("-l")
        .arg(&env.socket)
        .arg(format!(
            "-ERUST_LOG={}",
            otpd_tests::campaign::daemon_log_filter()
        ))
        .arg(otpd_binary())
        .arg("--config")
        .arg(&env.config)
        .arg("serve");
    let mut daemon = ChildGuard::spawn(cmd, &env.daemon_log);
    let started = Instant::now();
    while !env.socket.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", env.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first connection starts otpd on the handed-over socket.
    let out = env.otpd_expect(&["status"], 0);
    assert!(out.stdout.contains("from systemd's otpd.socket"), "{out}");
    assert!(
        env.log()
            .contains("using the socket handed over by systemd"),
        "{}",
        env.log()
    );
    TestEnv::assert_logs_at_trace(&env.daemon_log, 0, &env.name);
    let t = settled_now(30, 3);
    let alice = env.enroll_active("alice", &[], t - 30);
    let login = env.pam_login("alice", &alice.code_at(t), "192.0.2.90", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);

    // SIGTERM: otpd stops cleanly and leaves systemd's socket file alone.
    let status = daemon.stop(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", env.log());
    assert!(env.socket.exists(), "otpd removed the socket systemd owns");
}
