//! Moving a site from pam_google_authenticator and pam_oath to otpd without
//! touching a phone: the secret files are written by the real
//! `google-authenticator` tool and used for a real login by the real
//! modules first; after `otpd import`, the codes that `oathtool` computes
//! for those secrets log in through libpam and pam_otpd.so, scratch codes
//! work once, and a code used before the import stays used.

use otpd_tests::hotp;
use otpd_tests::totp::code_at;
use otpd_tests::{require, secrets, settled_now, PamOutcome, Program, TestEnv};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const NEEDS: &[Program] = &[
    Program::Pamtester,
    Program::PamWrapper,
    Program::Oathtool,
    Program::GoogleAuthenticator,
    Program::PamGoogleAuthenticator,
    Program::PamOath,
];

/// A secret file written by `google-authenticator` with `flags`, as
/// `homes/USER/.google_authenticator`; returns the path, the base32 secret
/// and the scratch codes (all remembered: none may reach otpd's log).
fn ga_file(homes: &Path, user: &str, flags: &[&str]) -> (PathBuf, String, Vec<String>) {
    let home = homes.join(user);
    std::fs::create_dir_all(&home).unwrap();
    let path = home.join(".google_authenticator");
    let out = Command::new(Program::GoogleAuthenticator.path())
        .args(flags)
        .args(["-f", "-C", "-q", "-Q", "NONE", "-s"])
        .arg(&path)
        .output()
        .expect("run google-authenticator");
    assert!(
        out.status.success(),
        "google-authenticator {flags:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let secret = text.lines().next().unwrap().trim().to_owned();
    let scratch: Vec<String> = text
        .lines()
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    secrets::remember(&secret);
    for code in &scratch {
        secrets::remember(code);
    }
    (path, secret, scratch)
}

/// What `oathtool ARGS` prints (a code), remembered as a secret.
fn oathtool(args: &[String]) -> String {
    let out = Command::new(Program::Oathtool.path())
        .args(args)
        .output()
        .expect("run oathtool");
    assert!(out.status.success(), "oathtool {args:?} failed");
    let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    secrets::remember(&code);
    code
}

/// `oathtool --totp` for a hex key.
fn totp_hex(hex: &str, digits: u32, period: u64, unix_time: u64) -> String {
    oathtool(&[
        "--totp".into(),
        format!("-d{digits}"),
        format!("-s{period}s"),
        format!("-N@{unix_time}"),
        hex.to_owned(),
    ])
}

fn login(env: &TestEnv, user: &str, code: &str) -> PamOutcome {
    let login = env.pam_login(user, code, "192.0.2.40", "");
    println!("otpd login of {user}: {:?}", login.outcome);
    login.outcome
}

/// One login through `module ARGS` (the module otpd replaces).
fn peer_login(env: &TestEnv, module: Program, args: &str, user: &str, code: &str) -> PamOutcome {
    let service = env.pam_stack(&format!(
        "auth required {} {args}\n",
        module.path().display()
    ));
    let login = service.login(OsStr::new(user), code, "", None);
    println!("{} login of {user}: {:?}", module.name(), login.outcome);
    login.outcome
}

fn file_bytes(paths: &[&Path]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn google_authenticator_users_move_with_their_replay_state_and_scratch_codes() {
    if !require("google_authenticator_users_move", NEEDS) {
        return;
    }
    let env = TestEnv::start("migrate_ga");
    let homes = env.dir.join("homes");
    // Time-based with every option, counter-based, one without a token,
    // and one who is in otpd already.
    let (alice_file, alice, alice_scratch) = ga_file(
        &homes,
        "alice",
        &["-t", "-d", "-r", "3", "-R", "30", "-w", "3", "-e", "5"],
    );
    let (bob_file, bob, bob_scratch) = ga_file(&homes, "bob", &["-c", "-u", "-w", "3", "-e", "2"]);
    let (carol_file, _, _) = ga_file(&homes, "carol", &["-t", "-D", "-u", "-W", "-e", "1"]);
    // pam_google_authenticator accepts only scratch codes for a file
    // without TOTP_AUTH or HOTP_COUNTER: there is no token to import.
    let carol_text = std::fs::read_to_string(&carol_file).unwrap();
    std::fs::set_permissions(&carol_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&carol_file, carol_text.replace("\" TOTP_AUTH\n", "")).unwrap();
    let (_, dave_ga, _) = ga_file(&homes, "dave", &["-t", "-d", "-u", "-w", "3", "-e", "1"]);
    // Files the import must not believe: a link to another user's file,
    // and one that others can read.
    std::fs::create_dir_all(homes.join("erin")).unwrap();
    std::os::unix::fs::symlink(&alice_file, homes.join("erin/.google_authenticator")).unwrap();
    let (frank_file, _, _) = ga_file(&homes, "frank", &["-t", "-d", "-u", "-w", "3", "-e", "1"]);
    std::fs::set_permissions(&frank_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let t = settled_now(30, 12);
    let dave = env.enroll_active("dave", &[], t - 30);

    // The site's last logins with the old module.
    let ga_args = format!(
        "secret={}/${{USER}}/.google_authenticator user=root",
        homes.display()
    );
    let used = code_at(&alice, "SHA1", 6, 30, t);
    assert_eq!(
        peer_login(
            &env,
            Program::PamGoogleAuthenticator,
            &ga_args,
            "alice",
            &used
        ),
        PamOutcome::Success
    );
    let bob_used = hotp::code(&bob, 1);
    assert_eq!(
        peer_login(
            &env,
            Program::PamGoogleAuthenticator,
            &ga_args,
            "bob",
            &bob_used
        ),
        PamOutcome::Success
    );
    let alice_text = std::fs::read_to_string(&alice_file).unwrap();
    assert!(
        alice_text.contains(&format!("DISALLOW_REUSE {}", t / 30)),
        "{alice_text}"
    );
    let files = [
        alice_file.as_path(),
        bob_file.as_path(),
        carol_file.as_path(),
    ];
    let before = file_bytes(&files);

    // A dry run says what would happen and changes nothing.
    let dry = env.otpd(&[
        "import",
        "google-authenticator",
        "--homes",
        homes.to_str().unwrap(),
        "--dry-run",
    ]);
    println!("{dry}");
    assert_eq!(dry.code(), 1, "carol cannot be imported: {dry}");
    assert!(dry.stdout.contains("alice: would be imported"), "{dry}");
    assert!(dry.stdout.contains("Dry run: nothing was changed"), "{dry}");
    assert!(env.list_entry("alice").is_none());

    let out = env.otpd(&[
        "import",
        "google-authenticator",
        "--homes",
        homes.to_str().unwrap(),
    ]);
    println!("{out}");
    assert_eq!(out.code(), 1, "one user fails, the others are done: {out}");
    for line in [
        "alice: imported (TOTP 6 digits every 30 s, window ±1",
        "used; 5 scratch codes as recovery codes)",
        "note: line 2: RATE_LIMIT 3 30 is not carried over",
        "bob: imported (HOTP 6 digits, next counter 2, look-ahead 2",
        "carol: cannot import",
        "neither TOTP_AUTH nor HOTP_COUNTER",
        "dave: left alone: already enrolled in otpd",
        "erin: cannot import: ",
        "erin/.google_authenticator is a symbolic link",
        "frank: cannot import: ",
        "has mode 0644: others may read or change it",
        "6 users read: 2 imported, 0 replaced, 1 left alone",
        "3 failed",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{out}");
    }
    for secret in [&alice, &bob, &dave_ga] {
        assert!(
            !out.stdout.contains(secret.as_str()),
            "a secret in the output"
        );
    }
    assert_eq!(file_bytes(&files), before, "the files are only read");

    let entry = env.list_entry("alice").unwrap();
    assert_eq!(entry["state"], "active", "{entry}");
    assert_eq!(entry["recovery_codes"], 5, "{entry}");
    assert_eq!(entry["devices"][0]["name"], "google-authenticator");
    let bob_entry = env.list_entry("bob").unwrap();
    assert_eq!(bob_entry["devices"][0]["kind"], "hotp", "{bob_entry}");
    assert_eq!(bob_entry["devices"][0]["next_counter"], 2, "{bob_entry}");
    assert!(env.list_entry("carol").is_none());
    assert!(env.list_entry("erin").is_none() && env.list_entry("frank").is_none());

    // `import --replace` of alice's file, which otpd's logins did not touch.
    let replace_alice = || {
        env.otpd_expect(
            &[
                "import",
                "google-authenticator",
                "--user",
                "alice",
                alice_file.to_str().unwrap(),
                "--replace",
            ],
            0,
        )
    };

    // The code used with the old module stays used; the next one works.
    assert_eq!(login(&env, "alice", &used), PamOutcome::AuthErr);
    let newer = code_at(&alice, "SHA1", 6, 30, t + 30);
    assert_eq!(login(&env, "alice", &newer), PamOutcome::Success);
    // Importing the old file again (--replace) does not make the code otpd
    // accepted since good again: the newer replay state is kept.
    let again = replace_alice();
    assert!(
        again.stdout.contains("alice: imported, replacing"),
        "{again}"
    );
    assert_eq!(login(&env, "alice", &newer), PamOutcome::AuthErr);
    // Scratch codes are recovery codes, each good once, at the prompt and
    // through the CLI (which is a login too).
    assert_eq!(login(&env, "alice", &alice_scratch[0]), PamOutcome::Success);
    assert_eq!(login(&env, "alice", &alice_scratch[0]), PamOutcome::AuthErr);
    env.otpd_expect(&["verify", "alice", &alice_scratch[1]], 0);
    env.otpd_expect(&["verify", "alice", &alice_scratch[1]], 1);
    assert_eq!(env.list_entry("alice").unwrap()["recovery_codes"], 3);
    // Nor does it bring back the scratch codes used in otpd.
    replace_alice();
    assert_eq!(env.list_entry("alice").unwrap()["recovery_codes"], 3);
    assert_eq!(login(&env, "alice", &alice_scratch[0]), PamOutcome::AuthErr);
    assert_eq!(login(&env, "alice", &alice_scratch[2]), PamOutcome::Success);

    // bob's counter: the code used with the old module is refused, the
    // next one and bob's scratch codes work.
    assert_eq!(login(&env, "bob", &bob_used), PamOutcome::AuthErr);
    assert_eq!(
        login(&env, "bob", &hotp::code(&bob, 2)),
        PamOutcome::Success
    );
    assert_eq!(login(&env, "bob", &bob_scratch[0]), PamOutcome::Success);
    assert_eq!(login(&env, "bob", &bob_scratch[0]), PamOutcome::AuthErr);

    // dave was left alone: his otpd token works, the old one does not.
    let now = settled_now(30, 8);
    assert_eq!(
        login(&env, "dave", &code_at(&dave_ga, "SHA1", 6, 30, now)),
        PamOutcome::AuthErr
    );
    assert_eq!(login(&env, "dave", &dave.code_at(now)), PamOutcome::Success);

    // --replace takes dave's old token, and --user reads one file.
    let dave_file = homes.join("dave/.google_authenticator");
    let out = env.otpd_expect(
        &[
            "import",
            "google-authenticator",
            "--user",
            "dave",
            dave_file.to_str().unwrap(),
            "--replace",
        ],
        0,
    );
    assert!(out.stdout.contains("dave: imported, replacing"), "{out}");
    assert_eq!(
        login(&env, "dave", &code_at(&dave_ga, "SHA1", 6, 30, now + 30)),
        PamOutcome::Success
    );
    env.assert_log_free_of(&alice);
}

#[test]
fn oath_users_move_with_their_counters_and_last_codes() {
    if !require("oath_users_move", NEEDS) {
        return;
    }
    let env = TestEnv::start("migrate_oath");
    // pam_oath refuses users that the system does not know: the entries
    // use system accounts that every Debian has.
    let totp_key = "3132333435363738393031323334353637383930";
    let hotp_key = "00112233445566778899aabbccddeeff00112233";
    let t60_key = "0102030405060708090a0b0c0d0e0f1011121314";
    for key in [totp_key, hotp_key, t60_key] {
        secrets::remember(key);
    }
    let usersfile = env.dir.join("users.oath");
    std::fs::write(
        &usersfile,
        format!(
            "# moved to otpd\n\
             HOTP/T30 daemon - {totp_key}\n\
             HOTP bin - {hotp_key}\n\
             HOTP/T60/8 sys + {t60_key}\n\
             HOTP/T30 sync 1234 {totp_key}\n\
             HOTP/T30 games - not-hex\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&usersfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let oath_args = format!("usersfile={} window=5", usersfile.display());

    // Last logins with pam_oath: it writes the counter, the code and the time.
    let t = settled_now(30, 12);
    let used = totp_hex(totp_key, 6, 30, t);
    assert_eq!(
        peer_login(&env, Program::PamOath, &oath_args, "daemon", &used),
        PamOutcome::Success
    );
    let bin_used = hotp::code_hex(hotp_key, 0);
    assert_eq!(
        peer_login(&env, Program::PamOath, &oath_args, "bin", &bin_used),
        PamOutcome::Success
    );
    let written = std::fs::read_to_string(&usersfile).unwrap();
    assert!(
        written.contains(&used),
        "pam_oath wrote its state:\n{written}"
    );
    let before = std::fs::read(&usersfile).unwrap();

    let out = env.otpd(&["import", "oath", usersfile.to_str().unwrap()]);
    println!("{out}");
    assert_eq!(out.code(), 1, "games cannot be imported: {out}");
    for line in [
        "daemon: imported (TOTP 6 digits every 30 s",
        &format!("codes up to step {} used", t / 30),
        "bin: imported (HOTP 6 digits, next counter 1)",
        "sys: imported (TOTP 8 digits every 60 s)",
        "sync: imported",
        "the PIN in the file is not carried over",
        "games: cannot import: line 6: the secret is not hexadecimal",
        "5 users read: 4 imported",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{out}");
    }
    assert_eq!(std::fs::read(&usersfile).unwrap(), before, "only read");
    assert!(!out.stdout.contains(totp_key) && !out.stdout.contains(&used));

    // The code pam_oath accepted is used; the next ones log in.
    assert_eq!(login(&env, "daemon", &used), PamOutcome::AuthErr);
    assert_eq!(
        login(&env, "daemon", &totp_hex(totp_key, 6, 30, t + 30)),
        PamOutcome::Success
    );
    assert_eq!(login(&env, "bin", &bin_used), PamOutcome::AuthErr);
    assert_eq!(
        login(&env, "bin", &hotp::code_hex(hotp_key, 1)),
        PamOutcome::Success
    );
    assert_eq!(
        login(&env, "sys", &totp_hex(t60_key, 8, 60, t)),
        PamOutcome::Success
    );

    // Importing again leaves everyone alone.
    let again = env.otpd(&["import", "oath", usersfile.to_str().unwrap(), "--dry-run"]);
    assert!(again.stdout.contains("daemon: left alone"), "{again}");
}
