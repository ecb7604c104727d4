//! Enrolment at the first login (`[enrol_at_login]`) through the real
//! `sshd` and `ssh`: a member of the group without a device, after the
//! password (pam_unix, `requisite` before pam_otpd), sees the steps, the QR
//! code in terminal blocks and the key; the test reads the QR code off the
//! client's prompt, renders the blocks to an image that `zbarimg` decodes,
//! types the first code `oathtool` computes, and the login goes on with
//! the recovery codes shown once. A user outside the group is not offered
//! it; an abandoned enrolment leaves nothing active.

use otpd_tests::process;
use otpd_tests::sshd::{Sshd, SSH};
use otpd_tests::system::{example, require_private_host, World};
use otpd_tests::{Limits, Program};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GROUP: &str = "otp-new";

/// Answers ssh's prompts: the password, the first code once the test has
/// written it (`code`), Enter for anything else; each prompt kept in
/// `prompt-N`. With `abandon` present, it gives up at the code prompt.
const ASKPASS: &str = r#"#!/bin/sh
d="$OTPD_TEST_DIR"
n=$(ls "$d" | grep -c '^prompt-')
printf '%s' "$1" > "$d/prompt-$n"
case "$1" in
  *assword*) cat "$d/password" ;;
  *"Enter your OTP"*)
    [ -f "$d/abandon" ] && exit 1
    i=0
    while [ ! -f "$d/code" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    cat "$d/code"; rm -f "$d/code" ;;
  *) printf '\n' ;;
esac
"#;

fn world(name: &str) -> (World, Sshd) {
    let mut w = World::start(
        name,
        &["eve", "fay"],
        &[(GROUP, &["eve"])],
        Limits::default(),
    );
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&w.env.config)
        .expect("open the config");
    writeln!(config, "\n[enrol_at_login]\ngroup = \"{GROUP}\"").expect("write the config");
    w.env.restart_daemon();
    w.install_pam_example("sshd", "sshd.password-code", "");
    let sshd = Sshd::start(
        &w.host,
        "otpd-password-code",
        &example("sshd_config.d/otpd-password-code.conf"),
    );
    (w, sshd)
}

/// An ssh login of `user` with the password, prompts answered by
/// [`ASKPASS`] in `dir`; returns the running client.
fn ssh(sshd: &Sshd, dir: &Path, user: &str, password: &str) -> std::process::Child {
    std::fs::create_dir_all(dir).expect("create the askpass dir");
    std::fs::write(dir.join("password"), password).expect("write the password");
    let askpass = dir.join("askpass");
    std::fs::write(&askpass, ASKPASS).expect("write askpass");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755))
        .expect("chmod askpass");
    Command::new(Program::Ssh.path())
        .args(["-F", "/dev/null", "-T"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(["-o", "ConnectTimeout=20", "-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", "PubkeyAuthentication=no", "-o", "BatchMode=no"])
        .args(["-o", "PreferredAuthentications=keyboard-interactive"])
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg(format!("{user}@127.0.0.1"))
        .arg("echo otpd-remote-output $(id -un)")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("OTPD_TEST_DIR", dir)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh")
}

/// The prompts the askpass was asked so far, in order.
fn prompts(dir: &Path) -> Vec<String> {
    (0..)
        .map(|n| dir.join(format!("prompt-{n}")))
        .take_while(|p| p.exists())
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

fn wait_for_prompt(dir: &Path, marker: &str, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        if let Some(p) = prompts(dir).into_iter().find(|p| p.contains(marker)) {
            return p;
        }
        assert!(
            Instant::now() < end,
            "no prompt with {marker:?}: {:?}",
            prompts(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The QR code's lines of the prompt (Unicode half blocks, ANSI colours
/// stripped), rendered to a PGM image (4 pixels a module) for zbarimg.
fn qr_image(prompt: &str, path: &Path) {
    let strip = |line: &str| {
        let mut out = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let rows: Vec<Vec<char>> = prompt
        .lines()
        .map(strip)
        .filter(|l| l.chars().any(|c| "▀▄█".contains(c)) || (l.len() > 20 && l.trim().is_empty()))
        .map(|l| l.chars().collect())
        .collect();
    assert!(rows.len() > 10, "no QR code in the prompt:\n{prompt}");
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let scale = 4;
    let (w, h) = (width * scale, rows.len() * 2 * scale);
    let mut pixels = vec![255u8; w * h];
    for (r, row) in rows.iter().enumerate() {
        for (c, ch) in row.iter().enumerate() {
            // (top, bottom) dark: the glyph's ink is a dark module.
            let (top, bottom) = match ch {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            for (half, dark) in [(0, top), (1, bottom)] {
                if !dark {
                    continue;
                }
                for y in 0..scale {
                    for x in 0..scale {
                        pixels[((r * 2 + half) * scale + y) * w + c * scale + x] = 0;
                    }
                }
            }
        }
    }
    let mut out = format!("P5\n{w} {h}\n255\n").into_bytes();
    out.extend_from_slice(&pixels);
    std::fs::write(path, out).expect("write the image");
}

fn zbarimg(path: &Path) -> String {
    let mut cmd = Command::new(Program::Zbarimg.path());
    cmd.args(["--quiet", "--raw"]).arg(path);
    let out = process::run(cmd, b"", Duration::from_secs(30));
    assert!(out.status.success(), "zbarimg: {out}");
    out.stdout.trim().to_owned()
}

fn oathtool(secret: &str) -> String {
    let mut cmd = Command::new(Program::Oathtool.path());
    cmd.args(["--totp", "-b", secret]);
    let out = process::run(cmd, b"", Duration::from_secs(10));
    assert!(out.status.success(), "oathtool: {out}");
    out.stdout.trim().to_owned()
}

fn state_of(w: &World, user: &str) -> Option<String> {
    w.env
        .list_entry(user)
        .and_then(|e| e["state"].as_str().map(str::to_owned))
}

#[test]
fn a_member_of_the_group_sets_up_the_app_at_the_first_ssh_login() {
    let needs = [SSH, &[Program::Oathtool, Program::Zbarimg]].concat();
    if !require_private_host("enrol at login", &needs) {
        return;
    }
    let (w, sshd) = world("enrol_at_login");
    let base: PathBuf = w.env.dir.join("logins");

    // Abandoned at the code prompt: nothing active.
    let dir = base.join("abandoned");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("abandon"), "").expect("abandon");
    let out = ssh(&sshd, &dir, "eve", &w.password("eve"))
        .wait_with_output()
        .expect("ssh");
    assert!(!out.status.success(), "an abandoned enrolment let eve in");
    assert!(prompts(&dir).iter().any(|p| p.contains("Enter your OTP")));
    assert_ne!(state_of(&w, "eve").as_deref(), Some("active"));
    println!(
        "after the abandoned enrolment: eve is {:?}",
        state_of(&w, "eve")
    );

    // The enrolment: the QR code read off the prompt, the first code.
    let dir = base.join("enrol");
    let child = ssh(&sshd, &dir, "eve", &w.password("eve"));
    let prompt = wait_for_prompt(&dir, "Enter your OTP", Duration::from_secs(60));
    println!("the enrolment prompt ({} bytes):\n{prompt}", prompt.len());
    assert!(
        !prompt.contains('\u{1b}') && !prompt.contains("\\033"),
        "terminal escapes in the prompt (ssh shows them as text)"
    );
    let key_line = prompt
        .lines()
        .skip_while(|l| !l.contains("Enter this key in the app"))
        .nth(2)
        .unwrap_or_else(|| panic!("no key in the prompt:\n{prompt}"));
    let secret: String = key_line.split_whitespace().collect();
    assert!(secret.len() >= 16, "{secret:?}");
    let image = dir.join("qr.pgm");
    qr_image(&prompt, &image);
    let uri = zbarimg(&image);
    println!("zbarimg read: {}", uri.replace(&secret, "<secret>"));
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(
        uri.contains(&format!("secret={secret}")),
        "the QR code holds another key"
    );
    std::fs::write(dir.join("code"), oathtool(&secret)).expect("write the code");
    let out = child.wait_with_output().expect("ssh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("otpd-remote-output eve"),
        "the login did not go on: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = prompts(&dir);
    assert!(
        shown
            .iter()
            .any(|p| p.contains("Recovery codes") && p.contains("Press Enter")),
        "no recovery codes shown: {shown:?}"
    );
    assert_eq!(state_of(&w, "eve").as_deref(), Some("active"));

    // Enrolled now: the next login asks for a code, and offers nothing.
    let dir = base.join("again");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("abandon"), "").expect("abandon");
    let out = ssh(&sshd, &dir, "eve", &w.password("eve"))
        .wait_with_output()
        .expect("ssh");
    assert!(!out.status.success());
    assert!(
        !prompts(&dir).iter().any(|p| p.contains("Enter your OTP")),
        "an enrolled user was offered enrolment: {:?}",
        prompts(&dir)
    );

    // fay is not in the group: refused, not offered.
    let dir = base.join("fay");
    let out = ssh(&sshd, &dir, "fay", &w.password("fay"))
        .wait_with_output()
        .expect("ssh");
    assert!(!out.status.success(), "fay was let in without a device");
    assert!(
        !prompts(&dir).iter().any(|p| p.contains("Enter your OTP")),
        "fay was offered enrolment: {:?}",
        prompts(&dir)
    );
    assert_eq!(state_of(&w, "fay"), None);
}

#[test]
fn not_offered_without_a_first_factor_nor_over_a_device_an_admin_made() {
    let needs = [SSH, &[Program::Pamtester]].concat();
    if !require_private_host("enrol at login refused", &needs) {
        return;
    }
    let (w, sshd) = world("enrol_at_login_refused");
    // A code-only stack (like the shipped sudo.code): nothing before
    // pam_otpd collected a password, so nothing proves a first factor.
    let module = otpd_tests::system::module_for_users(&w.env);
    w.host.write_pam_service(
        "otpd-codeonly",
        &format!(
            "auth required {} socket={}\n",
            module.display(),
            w.env.socket.display()
        ),
    );
    let mut cmd = w.host.command(Program::Pamtester.path());
    cmd.args(["-v", "otpd-codeonly", "eve", "authenticate"]);
    let out = process::run(cmd, b"\n\n\n\n", Duration::from_secs(30));
    println!("a code-only stack: {out}");
    assert!(
        !out.stdout.contains("Enter your OTP") && !out.stderr.contains("Enter your OTP"),
        "enrolment offered without a first factor: {out}"
    );
    assert!(!out.status.success(), "{out}");
    assert_eq!(state_of(&w, "eve"), None, "a device was made");

    // A pending device an admin made (otpd enroll eve): not replaced at a
    // login, even after the password.
    w.env.otpd_expect(&["enroll", "eve"], 0);
    let dir = w.env.dir.join("logins").join("admin-pending");
    let out = ssh(&sshd, &dir, "eve", &w.password("eve"))
        .wait_with_output()
        .expect("ssh");
    assert!(!out.status.success());
    assert!(
        !prompts(&dir).iter().any(|p| p.contains("Enter your OTP")),
        "the admin's pending device was replaced at a login: {:?}",
        prompts(&dir)
    );
    let devices = w.env.list_entry("eve").expect("listed")["devices"].clone();
    assert_eq!(devices[0]["name"], "default", "{devices}");
}
