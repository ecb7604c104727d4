//! The chained audit trail (issue 22): every decision's line carries a
//! sequence number and a chain value; `otpd audit verify` names the first
//! line removed, altered or reordered and the last good number; a restart
//! continues the chain; `otpd audit export` prints one stable format; under
//! the journal the lines carry fields to search by. Logins go through the
//! real libpam (pamtester); the journal is a real systemd-journald, run by
//! the test in a private mount namespace.

use otpd_tests::{require, settled_now, PamOutcome, Program, TestEnv, PAM};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: &str = "203.0.113.10";

/// The audit lines of `text` (the daemon's log), with their line numbers
/// in it (1-based).
fn audit_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("otpd-audit "))
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

fn seq_of(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("seq="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {line}"))
}

/// Writes `lines` to a copy of the log beside it; returns the copy's path.
fn copy_with(env: &TestEnv, name: &str, lines: &[String]) -> PathBuf {
    let path = env.dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Logins: right and wrong codes and an unknown user.
fn some_logins(env: &TestEnv, t: u64) -> u64 {
    let alice = env.enroll_active("alice", &[], t - 30);
    assert_eq!(
        env.pam_login("alice", &alice.code_at(t), HOST, "").outcome,
        PamOutcome::Success
    );
    assert_eq!(
        env.pam_login("alice", &alice.wrong_code(t), HOST, "")
            .outcome,
        PamOutcome::AuthErr
    );
    assert_eq!(
        env.pam_login("mallory", "123456", "198.51.100.7", "")
            .outcome,
        PamOutcome::AuthErr
    );
    t
}

#[test]
fn a_removed_edited_or_swapped_line_is_named_and_a_restart_continues_the_chain() {
    if !require("audit_trail", PAM) {
        return;
    }
    let mut env = TestEnv::start("audit_trail");
    let t = settled_now(30, 10);
    some_logins(&env, t);

    let log = env.daemon_log.clone();
    let out = env.otpd_expect(&["audit", "verify", log.to_str().unwrap()], 0);
    println!("{out}");
    assert!(out.stdout.contains("intact:"), "{out}");
    assert!(
        out.stdout.contains("the running daemon is at seq="),
        "{out}"
    );

    let lines: Vec<String> = audit_lines(&env.log())
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert!(lines.len() >= 5, "too few audit lines: {lines:#?}");
    assert!(lines[0].contains("op=\"start\"") && lines[0].contains("outcome=\"new\""));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("op=\"login\"") && l.contains("user=\"alice\"")),
        "{lines:#?}"
    );
    let seqs: Vec<u64> = lines.iter().map(|l| seq_of(l)).collect();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());

    // A line deleted in the middle: named with the last good number.
    let mut deleted = lines.clone();
    let gone = deleted.remove(2);
    let copy = copy_with(&env, "deleted.log", &deleted);
    let out = env.otpd_expect(&["audit", "verify", copy.to_str().unwrap()], 1);
    println!("deleted seq={}: {out}", seq_of(&gone));
    assert!(out.stderr.contains("line seq=3 was removed"), "{out}");
    assert!(out.stderr.contains("last good line: seq=2"), "{out}");

    // A line edited: the outcome of a wrong code made "accepted".
    let edit_at = lines
        .iter()
        .position(|l| l.contains("op=\"login\"") && l.contains("outcome=\"wrong_code\""))
        .or_else(|| {
            lines
                .iter()
                .position(|l| l.contains("outcome=\"wrong_code\""))
        })
        .unwrap_or_else(|| panic!("no wrong-code line: {lines:#?}"));
    let mut edited = lines.clone();
    edited[edit_at] = edited[edit_at].replace("outcome=\"wrong_code\"", "outcome=\"accepted\"");
    let copy = copy_with(&env, "edited.log", &edited);
    let out = env.otpd_expect(&["audit", "verify", copy.to_str().unwrap()], 1);
    println!("edited seq={}: {out}", seqs[edit_at]);
    assert!(
        out.stderr
            .contains(&format!("line seq={} was altered", seqs[edit_at])),
        "{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("last good line: seq={}", seqs[edit_at] - 1)),
        "{out}"
    );

    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let copy = copy_with(&env, "swapped.log", &swapped);
    let out = env.otpd_expect(&["audit", "verify", copy.to_str().unwrap()], 1);
    println!("swapped 2 and 3: {out}");
    assert!(
        out.stderr
            .contains("line seq=3 is out of order (it follows seq=1)"),
        "{out}"
    );
    assert!(out.stderr.contains("last good line: seq=1"), "{out}");

    // The last line removed: only the daemon's head shows it.
    let mut cut = lines.clone();
    cut.pop();
    let copy = copy_with(&env, "cut.log", &cut);
    let out = env.otpd_expect(&["audit", "verify", copy.to_str().unwrap()], 1);
    println!("last line cut: {out}");
    assert!(
        out.stderr.contains(&format!(
            "the trail ends at seq={} but the daemon is at seq={}",
            lines.len() - 1,
            lines.len()
        )),
        "{out}"
    );

    // A line written by someone without the key, appended.
    let mut forged = lines.clone();
    let last = lines.last().unwrap();
    let body = last.rsplit_once(" chain=").unwrap().0.replace(
        &format!("seq={}", lines.len()),
        &format!("seq={}", lines.len() + 1),
    );
    forged.push(format!("{body} chain={}", "ab".repeat(32)));
    let copy = copy_with(&env, "forged.log", &forged);
    let out = env.otpd_expect(&["audit", "verify", copy.to_str().unwrap()], 1);
    assert!(
        out.stderr
            .contains(&format!("line seq={} was altered", lines.len() + 1)),
        "{out}"
    );

    // A restart continues the chain: the start line resumes after the
    // stop line, and the whole log verifies.
    let before = lines.len() as u64;
    env.restart_daemon();
    let alice_again = env.pam_login("alice", "000000", HOST, "").outcome;
    assert_eq!(alice_again, PamOutcome::AuthErr);
    let after: Vec<String> = audit_lines(&env.log())
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let stop = &after[before as usize];
    assert!(stop.contains("op=\"stop\""), "{after:#?}");
    let start = &after[before as usize + 1];
    assert!(
        start.contains("op=\"start\"")
            && start.contains("outcome=\"resumed\"")
            && start.contains(&format!("after={}", before + 1))
            && seq_of(start) == before + 2,
        "{start}"
    );
    let out = env.otpd_expect(&["audit", "verify", log.to_str().unwrap()], 0);
    println!("after the restart: {out}");
    assert!(out.stdout.contains("intact:"), "{out}");

    // `otpd status` shows where the trail is.
    let status = env.otpd_expect(&["status"], 0);
    assert!(
        status.stdout.contains("audit:    chained, last line seq="),
        "{status}"
    );

    // The export: one JSON object per line, the same numbers; --since.
    let out = env.otpd_expect(&["audit", "export", "--json", log.to_str().unwrap()], 0);
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(objects.len(), after.len(), "{out}");
    assert!(objects.iter().any(|o| o["op"] == "verify"
        && o["user"] == "alice"
        && o["outcome"] == "accepted"
        && o["service"].is_string()
        && o["seq"].is_u64()
        && o["chain"].as_str().is_some_and(|c| c.len() == 64)));
    let out = env.otpd_expect(
        &[
            "audit",
            "export",
            "--since",
            "2999-01-01",
            log.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(out.stdout, "", "{out}");
    let out = env.otpd_expect(
        &["audit", "export", "--since", "1h", log.to_str().unwrap()],
        0,
    );
    assert_eq!(out.stdout.lines().count(), after.len(), "{out}");
    let out = env.otpd_expect(
        &[
            "audit",
            "export",
            "--since",
            "someday",
            log.to_str().unwrap(),
        ],
        2,
    );
    assert!(out.stderr.contains("--since \"someday\""), "{out}");

    // A crash (SIGKILL, no stop line) right after a login: the next start
    // resumes from the head the store kept, and the trail still verifies
    // (with a note when that head was behind the last line).
    assert_eq!(
        env.pam_login("alice", "000000", HOST, "").outcome,
        PamOutcome::AuthErr
    );
    env.kill_daemon(libc::SIGKILL);
    env.spawn_daemon();
    assert_eq!(
        env.pam_login("alice", "000000", HOST, "").outcome,
        PamOutcome::AuthErr
    );
    let out = env.otpd_expect(&["audit", "verify", log.to_str().unwrap()], 0);
    println!("after a crash: {out}");
    assert!(out.stdout.contains("intact:"), "{out}");

    // The export checks the chain first (root can read the key): a
    // trail with an edited line is not exported.
    let out = env.otpd_expect(
        &["audit", "export", "--json", &copy_path(&env, "edited.log")],
        1,
    );
    println!("export of the edited copy: {out}");
    assert_eq!(out.stdout, "", "{out}");
    assert!(out.stderr.contains("TAMPERED"), "{out}");

    // Without the key (another key file), nothing verifies.
    let other = env.dir.join("other.key");
    env.keygen(&other);
    let out = env.otpd_expect(
        &[
            "audit",
            "verify",
            "--key-file",
            other.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        1,
    );
    assert!(out.stderr.contains("line seq=1 was altered"), "{out}");

    // With the daemon stopped, the end of the trail cannot be compared:
    // the last lines cut off do not show, so verify says it is incomplete
    // (exit 3), never plainly intact.
    env.kill_daemon(libc::SIGTERM);
    let mut all: Vec<String> = audit_lines(&env.log())
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    all.truncate(all.len() - 2);
    let copy = copy_with(&env, "cut-while-down.log", &all);
    let out = env.otpd_expect(&["audit", "verify", copy.to_str().unwrap()], 3);
    println!("cut while the daemon is down: {out}");
    assert!(out.stdout.contains("intact:"), "{out}");
    assert!(
        out.stderr.contains("incomplete: the daemon did not answer"),
        "{out}"
    );
}

fn copy_path(env: &TestEnv, name: &str) -> String {
    env.dir.join(name).display().to_string()
}

#[test]
fn a_user_name_cannot_forge_an_audit_line_or_field() {
    let env = TestEnv::start("audit_forged_name");
    // A name is whatever the client sends; it ends in a made-up field.
    let name = "x\" outcome=\"accepted\" user=\"alice";
    let out = env.otpd(&["verify", name, "123456"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let log = env.log();
    assert!(
        audit_lines(&log).iter().all(|(_, l)| !l.contains('\n')),
        "{log}"
    );
    let out = env.otpd_expect(&["audit", "verify", env.daemon_log.to_str().unwrap()], 0);
    assert!(out.stdout.contains("intact:"), "{out}");
    let out = env.otpd_expect(
        &[
            "audit",
            "export",
            "--json",
            env.daemon_log.to_str().unwrap(),
        ],
        0,
    );
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("{objects:#?}");
    assert!(objects.len() >= 2, "{out}");
    for object in &objects {
        assert_ne!(object["outcome"], "accepted", "{object}");
        assert_ne!(object["user"], "alice", "{object}");
    }
}

/// A systemd-journald of the test's own, in a private mount namespace,
/// writing its files to a directory of the test (bound over
/// /run/log/journal: without a flush request journald keeps its files
/// there); the daemon runs in the
/// same namespace (the env's launcher), so its journal socket is this
/// journald's.
struct Journald {
    dir: PathBuf,
    pid_file: PathBuf,
}

impl Journald {
    fn launcher(env: &TestEnv) -> Journald {
        let dir = env.dir.join("journal");
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = env.dir.join("journald.pid");
        let script = env.dir.join("with-journald.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 set -e\n\
                 mkdir -p /run/systemd/journal /run/log/journal /var/log/journal\n\
                 mount -t tmpfs tmpfs /run/systemd/journal\n\
                 mount --bind {dir} /run/log/journal\n\
                 mount -t tmpfs tmpfs /var/log/journal\n\
                 /lib/systemd/systemd-journald >{log} 2>&1 &\n\
                 echo $! >{pid}\n\
                 i=0; while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n\
                 exec \"$@\"\n",
                dir = dir.display(),
                log = env.dir.join("journald.log").display(),
                pid = pid_file.display(),
            ),
        )
        .unwrap();
        Journald { dir, pid_file }
    }

    /// The journal files journald wrote.
    fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for machine in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(machine.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file.path().extension().is_some_and(|e| e == "journal") {
                    files.push(file.path());
                }
            }
        }
        files
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) on the pid of the journald this test started.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
    }
}

fn journalctl(files: &[PathBuf], args: &[&str]) -> String {
    let mut cmd = Command::new("journalctl");
    cmd.args(["--no-pager", "--quiet", "--output=json"]);
    for f in files {
        cmd.arg(format!("--file={}", f.display()));
    }
    cmd.args(args);
    let out = cmd.output().expect("run journalctl");
    assert!(out.status.success(), "journalctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn under_the_journal_the_lines_carry_fields_and_verify() {
    if !require("audit_journal", &[PAM, &[Program::Unshare]].concat()) {
        return;
    }
    let journald = Path::new("/lib/systemd/systemd-journald");
    if !journald.exists()
        || Command::new("journalctl")
            .arg("--version")
            .output()
            .is_err()
    {
        otpd_tests::ci::skip("audit_journal", "systemd-journald not installed");
        return;
    }
    let mut env = TestEnv::without_daemon("audit_journal", &otpd_tests::Limits::default());
    env.append_config("[audit]\noutput = \"journal\"\n");
    let jd = Journald::launcher(&env);
    env.launcher = vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        env.dir.join("with-journald.sh").into(),
    ];
    env.spawn_daemon();
    let t = settled_now(30, 10);
    some_logins(&env, t);

    // The lines went to the journal, not to the log.
    assert!(audit_lines(&env.log()).is_empty(), "{}", env.log());
    let deadline = Instant::now() + Duration::from_secs(10);
    let denied = loop {
        let files = jd.files();
        let text = if files.is_empty() {
            String::new()
        } else {
            journalctl(&files, &["OTPD_OUTCOME=wrong_code"])
        };
        if !text.is_empty() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let files = jd.files();
    assert!(!files.is_empty(), "journald wrote no file");
    println!("journal files: {files:?}");
    let entry: serde_json::Value = serde_json::from_str(denied.lines().next().unwrap_or("null"))
        .unwrap_or(serde_json::Value::Null);
    println!("an entry: {entry}");
    assert_eq!(entry["OTPD_USER"], "alice", "{denied}");
    assert_eq!(entry["OTPD_OP"], "verify", "{denied}");
    assert_eq!(entry["OTPD_SOURCE"], HOST, "{denied}");
    assert!(entry["OTPD_SERVICE"].is_string(), "{entry}");
    assert!(
        entry["OTPD_SEQ"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{entry}"
    );
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "otpd", "{entry}");
    assert!(
        entry["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.starts_with("otpd-audit seq=")),
        "{entry}"
    );
    // The unknown user's line is searchable by user too.
    let mallory = journalctl(&files, &["OTPD_USER=mallory"]);
    assert!(!mallory.is_empty(), "no line for mallory");

    // Any local user can send an entry that claims to be otpd's: one that
    // looks like an audit line, from `nobody`, between the daemon's lines.
    // verify leaves it out (it is not from the daemon's account or root)
    // and still checks every line after it.
    let forged = format!(
        "otpd-audit seq=2 time=2026-12-05T12:00:00Z host=\"vm\" level=INFO op=\"verify\" \
         outcome=\"accepted\" user=\"mallory\" prev={} chain={}",
        "0".repeat(64),
        "0".repeat(64)
    );
    let out = Command::new("nsenter")
        .args(["--mount", "--target", &env.daemon_pid().to_string()])
        .args([
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
        ])
        .args(["logger", "--journald"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            write!(
                stdin,
                "SYSLOG_IDENTIFIER=otpd\nMESSAGE={forged}\nOTPD_OUTCOME=accepted\n"
            )?;
            drop(stdin);
            child.wait_with_output()
        })
        .expect("run logger as nobody in the daemon's namespace");
    assert!(out.status.success(), "logger: {out:?}");
    assert_eq!(
        env.pam_login("mallory", "654321", "198.51.100.8", "")
            .outcome,
        PamOutcome::AuthErr
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while journalctl(&files, &["_UID=65534"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the forged entry never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut args = vec!["audit".to_string(), "verify".to_string()];
    for f in &files {
        args.push("--journal-file".into());
        args.push(f.display().to_string());
    }
    let out = env.otpd_expect(&args, 0);
    println!("{out}");
    assert!(out.stdout.contains("intact:"), "{out}");
    assert!(
        out.stderr
            .contains("1 journal entry with SYSLOG_IDENTIFIER=otpd from another sender"),
        "{out}"
    );
    assert!(
        out.stdout.contains("the running daemon is at seq="),
        "{out}"
    );
    args[1] = "export".into();
    args.push("--json".into());
    let out = env.otpd_expect(&args, 0);
    assert!(out.stdout.lines().count() >= 4, "{out}");
    env.kill_daemon(libc::SIGTERM);
}
