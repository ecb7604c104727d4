//! `otpd import pskc`: hardware tokens from their vendor's PSKC file (RFC
//! 6030). The files are RFC 6030's own examples (Figures 2, 3, 6 and 7, in
//! tests/fixtures/pskc/) and a vendor-style batch written by
//! tests/fixtures/pskc/make-batch.py (AES-256-CBC, HMAC-SHA256). After the
//! import the keys log in through libpam and pam_otpd.so with the codes
//! `oathtool` computes for them; a wrong MAC, key or password imports
//! nothing; no secret reaches the output.

use otpd_tests::process::{self, Output};
use otpd_tests::pty::Terminal;
use otpd_tests::{programs, require, secrets, settled_now, PamOutcome, Program, TestEnv};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const NEEDS: &[Program] = &[Program::Pamtester, Program::PamWrapper, Program::Oathtool];

/// RFC 4226's key, "12345678901234567890", the secret of RFC 6030's examples.
const RFC_KEY: &str = "3132333435363738393031323334353637383930";
const RFC_KEY_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// RFC 6030 Figure 6's pre-shared key.
const FIGURE6_KEY: &str = "12345678901234567890123456789012";
/// The batch's keys (make-batch.py).
const BATCH_TOTP_KEY: &str = "3132333435363738393031323334353637383930313233343536373839303132";
const BATCH_HOTP_KEY: &str = "00112233445566778899aabbccddeeff00112233";
const BATCH_DRIFT_KEY: &str = "3132333435363738393a3b3c3d3e3f4041424344";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/pskc")
        .join(name)
}

fn remember_secrets() {
    for s in [
        RFC_KEY,
        RFC_KEY_BASE32,
        FIGURE6_KEY,
        BATCH_TOTP_KEY,
        BATCH_HOTP_KEY,
        BATCH_DRIFT_KEY,
        "qwerty",
    ] {
        secrets::remember(s);
    }
    secrets::remember(
        std::fs::read_to_string(fixture("batch.key"))
            .unwrap()
            .trim(),
    );
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

/// `oathtool --hotp -d DIGITS -c COUNTER HEX`.
fn hotp(hex: &str, digits: u32, counter: u64) -> String {
    oathtool(&[
        "--hotp".into(),
        format!("-d{digits}"),
        format!("-c{counter}"),
        hex.into(),
    ])
}

/// `oathtool --totp=ALGORITHM -d DIGITS -s PERIOD -N @TIME HEX`.
fn totp(hex: &str, algorithm: &str, digits: u32, period: u64, unix_time: u64) -> String {
    oathtool(&[
        format!("--totp={algorithm}"),
        format!("-d{digits}"),
        format!("-s{period}s"),
        format!("-N@{unix_time}"),
        hex.into(),
    ])
}

fn login(env: &TestEnv, user: &str, code: &str) -> PamOutcome {
    let login = env.pam_login(user, code, "192.0.2.41", "");
    println!("login of {user}: {:?}", login.outcome);
    login.outcome
}

/// `otpd import pskc ARGS` with `input` on stdin (not a terminal).
fn import_with_stdin(env: &TestEnv, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(programs::otpd_binary());
    cmd.arg("--config")
        .arg(&env.config)
        .args(["import", "pskc"])
        .args(args);
    process::run(cmd, input, Duration::from_secs(60))
}

/// Asserts that no secret of this test is in the command's output.
fn assert_no_secret(out: &Output) {
    let printed = out.printed();
    let batch_key = std::fs::read_to_string(fixture("batch.key")).unwrap();
    for secret in [
        RFC_KEY,
        RFC_KEY_BASE32,
        FIGURE6_KEY,
        BATCH_TOTP_KEY,
        BATCH_HOTP_KEY,
        BATCH_DRIFT_KEY,
        batch_key.trim(),
        "qwerty",
    ] {
        assert!(
            !printed.to_lowercase().contains(&secret.to_lowercase()),
            "a secret in the output:\n{out}"
        );
    }
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn rfc_6030_examples_in_clear_with_a_pre_shared_key_and_with_a_password() {
    if !require("rfc_6030_examples", NEEDS) {
        return;
    }
    remember_secrets();
    let env = TestEnv::start("pskc_rfc");

    // Figure 2: read, but its secret ("1234") is too short for otpd.
    let figure2 = fixture("rfc6030-figure2.pskcxml");
    let out = env.otpd(&["import", "pskc", path(&figure2), "--user", "alice"]);
    println!("{out}");
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stdout.contains("alice: cannot import"), "{out}");
    assert!(out.stdout.contains("32 bits"), "{out}");
    assert!(env.list_entry("alice").is_none());

    // Figure 3, in clear: HOTP, 8 digits, serial 987654321.
    let figure3 = fixture("rfc6030-figure3.pskcxml");
    let out = env.otpd_expect(&["import", "pskc", path(&figure3), "--user", "bob"], 0);
    println!("{out}");
    assert!(
        out.stdout
            .contains("bob: imported (HOTP 8 digits, next counter 0)"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "note: device token-987654321 is the key of serial \"987654321\" (key Id \"12345678\")"
        ),
        "{out}"
    );
    assert_no_secret(&out);
    let used = hotp(RFC_KEY, 8, 0);
    assert_eq!(login(&env, "bob", &used), PamOutcome::Success);
    assert_eq!(login(&env, "bob", &used), PamOutcome::AuthErr);
    assert_eq!(
        login(&env, "bob", &hotp(RFC_KEY, 8, 1)),
        PamOutcome::Success
    );

    // Figure 6: AES-128-CBC with a pre-shared key, HMAC-SHA1.
    let figure6 = fixture("rfc6030-figure6.pskcxml");
    let out = env.otpd_expect(&["import", "pskc", path(&figure6), "--user", "carol"], 2);
    assert!(
        out.stderr.contains(
            "encrypted with a pre-shared key named \"Pre-shared-key\": give it with --key-file"
        ),
        "{out}"
    );
    let key_file = env.dir.join("figure6.key");
    std::fs::write(&key_file, format!("{FIGURE6_KEY}\n")).unwrap();
    let wrong_key_file = env.dir.join("wrong.key");
    std::fs::write(&wrong_key_file, "12345678901234567890123456789013\n").unwrap();
    let out = env.otpd_expect(
        &[
            "import",
            "pskc",
            path(&figure6),
            "--user",
            "carol",
            "--key-file",
            path(&wrong_key_file),
        ],
        2,
    );
    println!("{out}");
    assert!(out.stderr.contains("nothing was imported"), "{out}");
    assert!(env.list_entry("carol").is_none());
    let out = env.otpd_expect(
        &[
            "import",
            "pskc",
            path(&figure6),
            "--user",
            "carol",
            "--key-file",
            path(&key_file),
        ],
        0,
    );
    println!("{out}");
    assert!(
        out.stdout.contains("carol: imported (HOTP 8 digits"),
        "{out}"
    );
    assert_no_secret(&out);
    assert_eq!(
        login(&env, "carol", &hotp(RFC_KEY, 8, 0)),
        PamOutcome::Success
    );

    // Figure 7: PBKDF2 from the password "qwerty", read from stdin.
    let figure7 = fixture("rfc6030-figure7.pskcxml");
    let out = env.otpd_expect(&["import", "pskc", path(&figure7), "--user", "dave"], 2);
    assert!(
        out.stderr.contains(
            "encrypted with a password named \"My Password 1\" (PBKDF2): give --password"
        ),
        "{out}"
    );
    let out = import_with_stdin(
        &env,
        &[path(&figure7), "--user", "dave", "--password"],
        b"qwertz\n",
    );
    println!("{out}");
    assert_eq!(out.code(), 2, "{out}");
    assert!(
        out.stderr
            .contains("the password is wrong, or the file was altered; nothing was imported"),
        "{out}"
    );
    assert!(env.list_entry("dave").is_none());
    let out = import_with_stdin(
        &env,
        &[path(&figure7), "--user", "dave", "--password"],
        b"qwerty\n",
    );
    println!("{out}");
    assert_eq!(out.code(), 0, "{out}");
    assert!(
        out.stdout.contains("dave: imported (HOTP 8 digits"),
        "{out}"
    );
    assert_no_secret(&out);
    assert_eq!(
        login(&env, "dave", &hotp(RFC_KEY, 8, 0)),
        PamOutcome::Success
    );

    // Importing again leaves dave alone; --replace takes the file again.
    let again = import_with_stdin(
        &env,
        &[path(&figure7), "--user", "dave", "--password"],
        b"qwerty\n",
    );
    assert!(again.stdout.contains("dave: left alone"), "{again}");
    env.assert_log_free_of(RFC_KEY);
    env.assert_log_free_of(RFC_KEY_BASE32);
}

#[test]
fn the_password_typed_at_a_terminal_is_not_shown() {
    if !require("password_at_a_terminal", NEEDS) {
        return;
    }
    remember_secrets();
    let env = TestEnv::start("pskc_tty");
    let mut cmd = Command::new(programs::otpd_binary());
    cmd.arg("--config").arg(&env.config).args([
        "import",
        "pskc",
        path(&fixture("rfc6030-figure7.pskcxml")),
        "--user",
        "erin",
        "--password",
    ]);
    let mut terminal = Terminal::spawn(cmd);
    terminal.expect_after(0, "Password of the PSKC file: ", Duration::from_secs(30));
    terminal.type_line("qwerty");
    let (status, screen) = terminal.wait(Duration::from_secs(60));
    println!("{screen}");
    assert!(status.success(), "{screen}");
    assert!(screen.contains("erin: imported (HOTP 8 digits"), "{screen}");
    assert!(
        !screen.contains("qwerty"),
        "the password was echoed:\n{screen}"
    );
    assert_eq!(
        login(&env, "erin", &hotp(RFC_KEY, 8, 0)),
        PamOutcome::Success
    );
}

/// The map of the batch: keys 1001 and 1002 to alice, 1003 (OCRA) to carol,
/// 1004 (T0 = 1000) to dave, 1006 (60 s, drifted) to frank, and a serial
/// the file does not have to erin. Key 1005 is on no line.
const BATCH_MAP: &str = "serial,user,device\n\
                         1001,alice,fob\n\
                         1002,alice\n\
                         1003,carol\n\
                         1004,dave\n\
                         # erin's token is not in this batch\n\
                         7777,erin\n\
                         1006,frank\n";

#[test]
fn a_vendor_batch_goes_to_users_by_serial_number() {
    if !require("a_vendor_batch", NEEDS) {
        return;
    }
    remember_secrets();
    let env = TestEnv::start("pskc_batch");
    let batch = fixture("batch-aes256.pskcxml");
    let map = env.dir.join("map.csv");
    std::fs::write(&map, BATCH_MAP).unwrap();
    let key = fixture("batch.key");
    let args = [
        "import",
        "pskc",
        path(&batch),
        "--users",
        path(&map),
        "--key-file",
        path(&key),
    ];

    let dry = env.otpd(&[&args[..], &["--dry-run"]].concat());
    println!("{dry}");
    assert_eq!(dry.code(), 1, "{dry}");
    assert!(dry.stdout.contains("\"alice\": would be imported"), "{dry}");
    assert!(dry.stdout.contains("Dry run: nothing was changed"), "{dry}");
    assert!(env.list().is_empty(), "a dry run changes nothing");

    let out = env.otpd(&args);
    println!("{out}");
    assert_eq!(
        out.code(),
        1,
        "three users fail, the others are done: {out}"
    );
    for line in [
        "\"alice\": imported (TOTP 8 digits every 30 s; HOTP 6 digits, next counter 5)",
        "note: device fob is the key of serial \"1001\" (key Id \"K1001\")",
        "note: device token-1002 is the key of serial \"1002\" (key Id \"K1002\")",
        "\"carol\": cannot import: serial \"1003\" (key Id \"K1003\"): its algorithm \"urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6:QN08\" is neither HOTP nor TOTP",
        "\"dave\": cannot import: serial \"1004\" (key Id \"K1004\"): its Time (T0) is 1000: otpd counts time steps from the Unix epoch (T0 = 0) only",
        "\"erin\": cannot import: ",
        "line 7: serial \"7777\" is not in ",
        "\"frank\": imported (TOTP 6 digits every 60 s, window ±3)",
        "its TimeDrift of -2 steps is taken up by a window of ±3 steps",
        "serial \"1005\" (key Id \"K1005\"): on no line of ",
        "1 key of ",
        "5 users read: 2 imported, 0 replaced, 0 left alone",
        "3 failed",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:\n{out}");
    }
    assert_no_secret(&out);
    for user in ["carol", "dave", "erin"] {
        assert!(env.list_entry(user).is_none(), "{user} was not imported");
    }

    // alice's two tokens: TOTP HMAC-SHA256 8 digits, and HOTP from counter 5.
    let t = settled_now(30, 8);
    assert_eq!(
        login(&env, "alice", &totp(BATCH_TOTP_KEY, "sha256", 8, 30, t)),
        PamOutcome::Success
    );
    assert_eq!(
        login(&env, "alice", &hotp(BATCH_HOTP_KEY, 6, 4)),
        PamOutcome::AuthErr
    );
    assert_eq!(
        login(&env, "alice", &hotp(BATCH_HOTP_KEY, 6, 5)),
        PamOutcome::Success
    );
    // frank's token runs two 60 s steps behind: its code for then works
    // now (the window of ±3 steps), one for four steps back does not.
    let now = settled_now(60, 8);
    assert_eq!(
        login(
            &env,
            "frank",
            &totp(BATCH_DRIFT_KEY, "sha1", 6, 60, now - 240)
        ),
        PamOutcome::AuthErr
    );
    assert_eq!(
        login(
            &env,
            "frank",
            &totp(BATCH_DRIFT_KEY, "sha1", 6, 60, now - 120)
        ),
        PamOutcome::Success
    );

    // Again: alice and frank are left alone; with --replace they are
    // replaced, and the HOTP code used in otpd stays used.
    let again = env.otpd(&args);
    assert!(again.stdout.contains("\"alice\": left alone"), "{again}");
    let replaced = env.otpd(&[&args[..], &["--replace"]].concat());
    println!("{replaced}");
    assert!(
        replaced.stdout.contains("\"alice\": imported, replacing"),
        "{replaced}"
    );
    assert_eq!(
        login(&env, "alice", &hotp(BATCH_HOTP_KEY, 6, 5)),
        PamOutcome::AuthErr
    );
    assert_eq!(
        login(&env, "alice", &hotp(BATCH_HOTP_KEY, 6, 6)),
        PamOutcome::Success
    );
    env.assert_log_free_of(BATCH_TOTP_KEY);
    env.assert_log_free_of(BATCH_HOTP_KEY);
}

/// `text` with the character at `at` changed to another base64 character.
fn flip_base64_at(text: &str, at: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_wrong_mac_anywhere_refuses_the_whole_file() {
    if !require("a_wrong_mac", &[]) {
        return;
    }
    remember_secrets();
    let env = TestEnv::start("pskc_mac");
    let map = env.dir.join("map.csv");
    std::fs::write(&map, BATCH_MAP).unwrap();
    let key = fixture("batch.key");
    let text = std::fs::read_to_string(fixture("batch-aes256.pskcxml")).unwrap();

    // The last key's MAC altered: the keys before it are good, and still
    // nothing is imported.
    let last_mac = text.rfind("<ValueMAC>").unwrap() + "<ValueMAC>".len();
    let altered = env.dir.join("altered-mac.pskcxml");
    std::fs::write(&altered, flip_base64_at(&text, last_mac)).unwrap();
    // A secret's ciphertext altered, its MAC left as it was.
    let value = text.find("<xenc:CipherValue>").unwrap();
    let first_secret = text[value + 1..].find("<xenc:CipherValue>").unwrap() + value + 1;
    let altered_value = env.dir.join("altered-value.pskcxml");
    std::fs::write(
        &altered_value,
        flip_base64_at(&text, first_secret + "<xenc:CipherValue>".len() + 20),
    )
    .unwrap();
    let wrong_key = env.dir.join("wrong.key");
    std::fs::write(&wrong_key, "ff".repeat(32)).unwrap();

    for (file, key, what) in [
        (
            &altered,
            &key,
            "the MAC of the TimeInterval of key Id \"K1006\" does not match",
        ),
        (
            &altered_value,
            &key,
            "the MAC of the Secret of key Id \"K1001\" does not match",
        ),
        (
            &fixture("batch-aes256.pskcxml"),
            &wrong_key,
            "the key file is wrong",
        ),
    ] {
        let out = env.otpd(&[
            "import",
            "pskc",
            path(file),
            "--users",
            path(&map),
            "--key-file",
            path(key),
        ]);
        println!("{out}");
        assert_eq!(out.code(), 2, "{out}");
        assert!(out.stderr.contains(what), "missing {what:?}: {out}");
        assert!(out.stderr.contains("nothing was imported"), "{out}");
        assert!(!out.stdout.contains("imported ("), "{out}");
        assert_no_secret(&out);
        assert!(env.list().is_empty(), "nothing was imported");
    }

    // A map line that is not serial,user: refused before anything is read.
    let bad_map = env.dir.join("bad-map.csv");
    std::fs::write(&bad_map, "1001;alice\n").unwrap();
    let out = env.otpd_expect(
        &[
            "import",
            "pskc",
            path(&fixture("batch-aes256.pskcxml")),
            "--users",
            path(&bad_map),
            "--key-file",
            path(&key),
        ],
        2,
    );
    assert!(out.stderr.contains("line 1: not serial,user"), "{out}");
    assert!(env.list().is_empty());
}

/// Review 22's attack files: a secret in clear put in an encrypted file
/// (alone, and before the real encrypted one), the same file stripped to
/// clear and given with the key, a MAC key forged to nothing with an 8-byte
/// AES key wrap, and one key's encrypted secret and MAC copied under
/// another serial. Each imports nothing (exit 2) and `otpd list` stays
/// empty.
#[test]
fn an_encrypted_file_with_a_value_in_clear_or_a_forged_mac_key_imports_nothing() {
    if !require("pskc_attack_files", &[]) {
        return;
    }
    remember_secrets();
    let env = TestEnv::start("pskc_attacks");
    // 20 bytes "AAAA…": a secret of the attacker's choosing.
    const CHOSEN: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    let figure6 = std::fs::read_to_string(fixture("rfc6030-figure6.pskcxml")).unwrap();
    let batch = std::fs::read_to_string(fixture("batch-aes256.pskcxml")).unwrap();
    let cut = |text: &str, start: &str, end: &str| {
        let a = text.find(start).unwrap();
        let b = text.find(end).unwrap() + end.len();
        (a, b)
    };
    let (a, b) = cut(&figure6, "<Secret>", "</Secret>");
    let plain = format!(
        "{}<Secret><PlainValue>{CHOSEN}</PlainValue></Secret>{}",
        &figure6[..a],
        &figure6[b..]
    );
    let before = figure6.replacen(
        "<Secret>",
        &format!("<Secret><PlainValue>{CHOSEN}</PlainValue></Secret><Secret>"),
        1,
    );
    let (a, b) = cut(&plain, "<EncryptionKey>", "</EncryptionKey>");
    let stripped = format!("{}{}", &plain[..a], &plain[b..]);
    let (a, b) = cut(&stripped, "<MACMethod", "</MACMethod>");
    let stripped = format!("{}{}", &stripped[..a], &stripped[b..]);
    let secret_of = |serial: &str| {
        let at = batch
            .find(&format!("<SerialNo>{serial}</SerialNo>"))
            .unwrap();
        let a = at + batch[at..].find("<Secret>").unwrap();
        let b = at + batch[at..].find("</Secret>").unwrap() + "</Secret>".len();
        (a, b)
    };
    let ((a1, b1), (a2, b2)) = (secret_of("1001"), secret_of("1002"));
    let duplicated = format!("{}{}{}", &batch[..a1], &batch[a2..b2], &batch[b1..]);

    let figure6_key = env.dir.join("figure6.key");
    std::fs::write(&figure6_key, format!("{FIGURE6_KEY}\n")).unwrap();
    let batch_key = fixture("batch.key");
    let mut cases = Vec::new();
    for (name, text, key, what) in [
        ("plain.pskcxml", &plain, &figure6_key, "is in clear"),
        ("before.pskcxml", &before, &figure6_key, "two Secret"),
        (
            "stripped.pskcxml",
            &stripped,
            &figure6_key,
            "names no EncryptionKey",
        ),
        ("duplicated.pskcxml", &duplicated, &batch_key, "same secret"),
    ] {
        let file = env.dir.join(name);
        std::fs::write(&file, text).unwrap();
        cases.push((file, key.clone(), what));
    }
    cases.push((
        fixture("evil-kw-mackey.pskcxml"),
        batch_key.clone(),
        "the MAC key does not decrypt",
    ));
    for (file, key, what) in &cases {
        let out = env.otpd(&[
            "import",
            "pskc",
            path(file),
            "--user",
            "alice",
            "--key-file",
            path(key),
        ]);
        println!("{out}");
        assert_eq!(out.code(), 2, "{}: {out}", file.display());
        assert!(out.stderr.contains(what), "missing {what:?}: {out}");
        assert!(out.stderr.contains("nothing was imported"), "{out}");
        assert_no_secret(&out);
        assert!(
            env.list().is_empty(),
            "{}: nothing was imported",
            file.display()
        );
    }
    // The file stripped to clear, given with --password.
    let out = import_with_stdin(
        &env,
        &[path(&cases[2].0), "--user", "alice", "--password"],
        b"qwerty\n",
    );
    println!("{out}");
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("names no EncryptionKey"), "{out}");
    assert!(env.list().is_empty());
}
