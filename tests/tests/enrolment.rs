//! Enrolment as an authenticator app sees it: the QR code decoded by
//! `zbarimg`, codes of every supported shape computed by `oathtool`.

use otpd_tests::{require, settled_now, Enrollment, Program, TestEnv};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn the_qr_png_decodes_to_the_printed_uri_and_files_are_private() {
    if !require(
        "the_qr_png_decodes_to_the_printed_uri",
        &[Program::Zbarimg, Program::Oathtool],
    ) {
        return;
    }
    let env = TestEnv::start("qr");
    let png = env.dir.join("alice.png");
    let svg = env.dir.join("alice.svg");
    let out = env.otpd_expect(
        &[
            "enroll".as_ref(),
            "alice".as_ref(),
            "--qr-png".as_ref(),
            png.as_os_str(),
            "--qr-svg".as_ref(),
            svg.as_os_str(),
        ],
        0,
    );
    let uri = out
        .stdout
        .lines()
        .find(|l| l.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth:// line: {out}"))
        .trim_end()
        .to_owned();
    let enrollment = Enrollment::from_uri(&uri).unwrap();
    assert_eq!(enrollment.issuer, "otpd-test", "the configured issuer");

    let decoded = Command::new(Program::Zbarimg.path())
        .args(["--raw", "-q"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        decoded.status.success(),
        "zbarimg found no code: {decoded:?}"
    );
    assert_eq!(String::from_utf8_lossy(&decoded.stdout).trim_end(), uri);

    for file in [&png, &svg] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg_text.contains("<svg"),
        "not an SVG: {}",
        &svg_text[..svg_text.len().min(200)]
    );

    // The secret is also printed for typing, in groups.
    let grouped = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("otpauth://"))
        .any(|l| {
            l.contains(' ')
                && l.split_whitespace()
                    .collect::<String>()
                    .contains(&enrollment.secret)
        });
    assert!(
        grouped,
        "the secret is not printed in groups:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(['█', '▀', '▄']),
        "no QR code for the terminal:\n{}",
        out.stdout
    );
}

#[test]
fn every_supported_shape_of_token_agrees_with_oathtool() {
    if !require(
        "every_supported_shape_of_token_agrees_with_oathtool",
        &[Program::Oathtool],
    ) {
        return;
    }
    let env = TestEnv::start("shapes");
    // 60 s step boundaries are 30 s boundaries too, so this covers both periods.
    let t = settled_now(30, 12);
    let shapes: [(&str, &[&str], &str, u32, u64); 4] = [
        ("sha1six", &[], "SHA1", 6, 30),
        (
            "sha256eight",
            &["--algorithm", "SHA256", "--digits", "8"],
            "SHA256",
            8,
            30,
        ),
        (
            "sha512six",
            &["--algorithm", "SHA512", "--digits", "6"],
            "SHA512",
            6,
            30,
        ),
        ("sixtyseconds", &["--period", "60"], "SHA1", 6, 60),
    ];
    for (user, args, algorithm, digits, period) in shapes {
        let e = env.enroll(user, args);
        assert_eq!(
            (e.algorithm.as_str(), e.digits, e.period),
            (algorithm, digits, period),
            "{}",
            e.uri
        );
        assert_eq!(env.list_entry(user).unwrap()["state"], "pending");
        env.otpd_expect(&["confirm", user, &e.code_at(t - period)], 0);
        let entry = env.list_entry(user).unwrap();
        assert_eq!(entry["state"], "active", "{entry}");
        assert_eq!(entry["algorithm"], algorithm, "{entry}");
        assert_eq!(entry["digits"], digits, "{entry}");
        assert_eq!(entry["period"], period, "{entry}");
        let code = e.code_at(t);
        env.otpd_expect(&["verify", user, &code], 0);
        env.otpd_expect(&["verify", user, &code], 1);
        println!("{user}: {algorithm}/{digits} digits/{period} s accepted once");
        env.assert_log_free_of(&e.secret);
    }
}

#[test]
fn enroll_json_carries_the_same_enrollment_as_the_uri() {
    if !require(
        "enroll_json_carries_the_same_enrolment",
        &[Program::Oathtool],
    ) {
        return;
    }
    let env = TestEnv::start("enroll_json");
    let t = settled_now(30, 8);
    let out = env.otpd_expect(
        &[
            "enroll",
            "erin",
            "--json",
            "--issuer",
            "Example Corp",
            "--digits",
            "8",
        ],
        0,
    );
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "user",
        "issuer",
        "algorithm",
        "digits",
        "period",
        "secret",
        "uri",
    ] {
        assert!(keys.contains(&key), "no {key} in {json}");
    }
    let e = Enrollment::from_uri(json["uri"].as_str().unwrap()).unwrap();
    assert_eq!(json["user"], "erin");
    assert_eq!(e.user, "erin");
    assert_eq!(json["issuer"], "Example Corp");
    assert_eq!(e.issuer, "Example Corp");
    assert_eq!(json["secret"], e.secret.as_str());
    assert_eq!(json["algorithm"], e.algorithm.as_str());
    assert_eq!(json["digits"], 8);
    assert_eq!(e.digits, 8);
    assert_eq!(json["period"], e.period);
    env.otpd_expect(&["confirm", "erin", &e.code_at(t)], 0);
}

#[test]
fn confirm_re_enroll_and_remove_follow_the_states() {
    if !require(
        "confirm_re_enrol_and_remove_follow_the_states",
        &[Program::Oathtool],
    ) {
        return;
    }
    let env = TestEnv::start("states");
    let t = settled_now(30, 10);
    let frank = env.enroll("frank", &[]);
    env.otpd_expect(&["confirm", "frank", &frank.wrong_code(t)], 1);
    assert_eq!(env.list_entry("frank").unwrap()["state"], "pending");
    // A pending user cannot log in, even with the right code.
    env.otpd_expect(&["verify", "frank", &frank.code_at(t)], 1);
    // Re-enrolling a pending user replaces it without --force.
    let frank = env.enroll("frank", &[]);
    env.otpd_expect(&["confirm", "frank", &frank.code_at(t)], 0);
    // The confirm code's step is used.
    env.otpd_expect(&["verify", "frank", &frank.code_at(t)], 1);
    env.otpd_expect(&["confirm", "frank", &frank.code_at(t + 30)], 1);

    // An active user is not replaced without --force, and keeps working.
    let refused = env.otpd_expect(&["enroll", "frank"], 1);
    assert!(!refused.stdout.contains("otpauth://"), "{refused}");
    env.otpd_expect(&["verify", "frank", &frank.code_at(t + 30)], 0);

    // --force: the old token keeps working until the new one is confirmed
    // (a second factor, once on, stays on: design.md §7).
    let replaced = env.enroll("frank", &["--force"]);
    assert_ne!(replaced.secret, frank.secret);
    assert_eq!(env.list_entry("frank").unwrap()["state"], "active");
    env.otpd_expect(&["verify", "frank", &replaced.code_at(t + 30)], 1);
    env.otpd_expect(&["confirm", "frank", &replaced.code_at(t + 30)], 0);
    env.otpd_expect(&["verify", "frank", &frank.code_at(t + 60)], 1);
    // --force --revoke: the old token stops at once.
    let revoked = env.enroll("frank", &["--force", "--revoke"]);
    assert_eq!(env.list_entry("frank").unwrap()["state"], "pending");
    env.otpd_expect(&["verify", "frank", &replaced.code_at(t + 60)], 1);

    let listing = [
        env.otpd_expect(&["list"], 0),
        env.otpd_expect(&["list", "--json"], 0),
    ];
    for out in listing {
        for secret in [&frank.secret, &replaced.secret, &revoked.secret] {
            assert!(
                !out.stdout.contains(secret.as_str()),
                "list shows a secret: {out}"
            );
        }
    }

    env.otpd_expect(&["remove", "frank"], 0);
    assert_eq!(env.list_entry("frank"), None);
    env.otpd_expect(&["remove", "frank"], 1);
    env.otpd_expect(&["verify", "frank", &replaced.code_at(t)], 1);
}
