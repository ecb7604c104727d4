//! The CLI's exit statuses: 0 done, 1 refused, 2 usage or config error,
//! 3 daemon unreachable; always a one-line reason on stderr.

use otpd_tests::process::run;
use otpd_tests::programs::otpd_binary;
use otpd_tests::{Limits, TestEnv};
use std::process::Command;
use std::time::Duration;

fn otpd_with_config(config: &std::path::Path, args: &[&str]) -> otpd_tests::process::Output {
    let mut cmd = Command::new(otpd_binary());
    cmd.arg("--config").arg(config).args(args);
    run(cmd, b"", Duration::from_secs(20))
}

#[test]
fn exit_statuses_tell_usage_config_and_unreachable_apart() {
    let env = TestEnv::without_daemon("cli_status", &Limits::default());

    let usage = env.otpd(&["no-such-command"]);
    assert_eq!(usage.status.code(), Some(2), "unknown command: {usage}");

    let unreachable = env.otpd(&["list"]);
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "no daemon: {unreachable}"
    );
    assert_eq!(
        unreachable.stderr.trim().lines().count(),
        1,
        "{unreachable}"
    );

    let bad = env.dir.join("bad.toml");
    std::fs::write(&bad, "socket = \"/nonexistent/otpd.sock\"\nwindw = 2\n").unwrap();
    for args in [&["list"][..], &["serve"][..]] {
        let out = otpd_with_config(&bad, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "unknown key, otpd {args:?}: {out}"
        );
        assert!(
            out.stderr.contains("windw"),
            "the message does not name the key: {out}"
        );
    }

    // OTPD_CONFIG selects the config too.
    let mut cmd = Command::new(otpd_binary());
    cmd.env("OTPD_CONFIG", &bad).arg("list");
    let out = run(cmd, b"", Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(2),
        "OTPD_CONFIG with an unknown key: {out}"
    );

    // --socket overrides the config's socket: a path where nothing listens.
    let out = env.otpd(&["--socket", "/nonexistent/otpd.sock", "list"]);
    assert_eq!(out.status.code(), Some(3), "--socket to nowhere: {out}");
}

#[test]
fn the_socket_flag_overrides_the_config() {
    let env = TestEnv::start("cli_socket");
    let elsewhere = env.dir.join("elsewhere.toml");
    std::fs::write(&elsewhere, "socket = \"/nonexistent/otpd.sock\"\n").unwrap();
    let out = otpd_with_config(&elsewhere, &["list", "--json"]);
    assert_eq!(out.status.code(), Some(3), "the config's socket: {out}");
    let socket = env.socket.to_str().unwrap();
    let out = otpd_with_config(&elsewhere, &["--socket", socket, "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "--socket {socket}: {out}");
    assert_eq!(
        out.stdout.trim(),
        "[]",
        "an empty store lists no one: {out}"
    );
}
