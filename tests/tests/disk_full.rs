//! Disk full: the state dir on a small filesystem (a tmpfs with a size
//! limit, mounted in a private mount namespace) that fills up. Logins fail
//! closed with a clear error, nothing already stored is damaged, a refused
//! write changes nothing, and service resumes when space returns, without a
//! restart of the daemon.
//!
//! The daemon runs inside the namespace (through `nsenter`); the test
//! reaches the tmpfs through `/proc/<holder>/root`, and the daemon's socket
//! lives outside the tmpfs, so the CLI and libpam reach it as usual.

use otpd_tests::process::ChildGuard;
use otpd_tests::totp::unix_now;
use otpd_tests::{require, Limits, PamOutcome, Program, TestEnv};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Size of the state dir's filesystem.
const FS_SIZE: &str = "8m";
/// Seconds per code: long, so that every code of the test stays in the
/// window for its whole run without waiting for a step boundary.
const PERIOD: &str = "300";

/// A mount namespace of its own whose state dir is a small tmpfs; the holder
/// process keeps it alive, and dropping the guard ends it (with the mount),
/// also when the test fails.
struct SmallStateFs {
    holder: ChildGuard,
    /// The state dir as the test sees it (`/proc/<holder>/root/<state_dir>`).
    view: PathBuf,
}

impl SmallStateFs {
    fn mount(env: &TestEnv, size: &str) -> SmallStateFs {
        let ready = env.dir.join("small-fs.ready");
        let mut cmd = Command::new(Program::Unshare.path());
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "set -e\n\
                 mount -t tmpfs -o \"size=$3,mode=0700\" otpd-test-small \"$1\"\n\
                 : > \"$2\"\n\
                 exec sleep 86400\n",
            )
            .arg("holder")
            .arg(&env.state_dir)
            .arg(&ready)
            .arg(size);
        let mut holder = ChildGuard::spawn(cmd, &env.dir.join("small-fs.log"));
        let started = Instant::now();
        while !ready.exists() {
            let log = std::fs::read_to_string(env.dir.join("small-fs.log")).unwrap_or_default();
            if let Some(status) = holder.child.try_wait().expect("try_wait") {
                panic!("the tmpfs for the state dir could not be mounted ({status}): {log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the private mount namespace did not come up: {log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let view = PathBuf::from(format!("/proc/{}/root", holder.pid()))
            .join(env.state_dir.strip_prefix("/").expect("absolute state dir"));
        SmallStateFs { holder, view }
    }

    /// `nsenter … --`: runs a program inside the namespace.
    fn launcher(&self) -> Vec<OsString> {
        vec![
            Program::Nsenter.path().into(),
            format!("--target={}", self.holder.pid()).into(),
            "--mount".into(),
            "--".into(),
        ]
    }

    /// Free bytes on the small filesystem.
    fn free_bytes(&self) -> u64 {
        // statfs(2) follows /proc/<pid>/root into the namespace.
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.view)
            .output()
            .expect("run stat -f");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        fields.next().unwrap_or(0) * fields.next().unwrap_or(0)
    }

    /// Writes `filler` until the filesystem is full; returns the bytes written.
    fn fill(&self) -> u64 {
        let path = self.view.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let mut written = 0u64;
        for chunk in [64 * 1024, 4096, 512, 1] {
            let buf = vec![0x5a_u8; chunk];
            loop {
                match file.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("write the filler: {e}"),
                }
            }
        }
        let _ = file.sync_all();
        written
    }

    fn free_filler(&self) {
        std::fs::remove_file(self.view.join("filler")).expect("remove the filler");
    }
}

/// `user → state` from `otpd list --json`, or why it failed.
fn states(env: &TestEnv) -> Result<Vec<(String, String)>, String> {
    let out = env.otpd(&["list", "--json"]);
    if out.status.code() != Some(0) {
        return Err(format!("otpd list failed: {out}"));
    }
    let users: serde_json::Value =
        serde_json::from_str(&out.stdout).map_err(|e| format!("list --json: {e}: {out}"))?;
    Ok(users
        .as_array()
        .ok_or("list --json is not an array")?
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap_or("?").to_owned(),
                u["state"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect())
}

fn state_of(states: &[(String, String)], user: &str) -> Option<String> {
    states
        .iter()
        .find(|(u, _)| u == user)
        .map(|(_, s)| s.clone())
}

/// One line: the daemon is alive (not exited, not a zombie).
fn daemon_alive(env: &TestEnv) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", env.daemon_pid()));
    stat.is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn first_lines(text: &str, needle: &str, n: usize) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(n)
        .map(str::to_owned)
        .collect()
}

/// Records a problem and prints it at once.
fn problem(problems: &mut Vec<String>, what: String) {
    println!("PROBLEM: {what}");
    problems.push(what);
}

/// What docs/security.md says every write on the full disk ends with: exit
/// status 1 and this line, naming the full disk.
const FULL_DISK_ERROR: &str = "otpd could not write its store: no space left on device";

/// Prints what the CLI command `what` did on the full disk, and records a
/// problem unless it is what docs/security.md says: exit 1, one line on
/// stderr naming the full disk, nothing on stdout.
fn refused_on_full_disk(problems: &mut Vec<String>, what: &str, out: &otpd_tests::process::Output) {
    println!(
        "{what} on the full disk: exit {:?}, stderr {:?}",
        out.status.code(),
        out.stderr.trim()
    );
    if out.status.code() != Some(1)
        || out.stderr.trim().lines().count() != 1
        || !out.stderr.contains(FULL_DISK_ERROR)
        || !out.stdout.trim().is_empty()
    {
        problem(
            problems,
            format!(
                "{what} on a full disk: not exit 1 with the one line \"{FULL_DISK_ERROR}\" \
                 (docs/security.md): {out}"
            ),
        );
    }
}

#[test]
fn a_full_state_dir_fails_closed_damages_nothing_and_service_resumes_with_space() {
    if !require(
        "disk_full",
        &[
            Program::Pamtester,
            Program::PamWrapper,
            Program::Oathtool,
            Program::Unshare,
            Program::Nsenter,
        ],
    ) {
        return;
    }
    // Mounting needs CAP_SYS_ADMIN.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "disk_full mounts a tmpfs: run as root");
    let mut env = TestEnv::without_daemon("diskfull", &Limits::default());
    let small = SmallStateFs::mount(&env, FS_SIZE);
    env.launcher = small.launcher();
    env.spawn_daemon();
    let mut problems = Vec::new();

    // The users before the disk fills: alice, bob, carol active (each has
    // the code of step s+1 left for one login), carl pending.
    let t = unix_now();
    let next = t + 300;
    let period = ["--period", PERIOD];
    let alice = env.enroll_active("alice", &period, t);
    let bob = env.enroll_active("bob", &period, t);
    let carol = env.enroll_active("carol", &period, t);
    let carl = env.enroll("carl", &period);
    let login = env.pam_login("alice", &alice.code_at(next), "192.0.2.1", "");
    assert_eq!(login.outcome, PamOutcome::Success, "{}", login.output);
    let before = states(&env).expect("list before the disk fills");
    println!(
        "before: {before:?}; {} KiB free of {FS_SIZE}",
        small.free_bytes() / 1024
    );

    // Fill it. What the store had in hand (a partly written page) may still
    // take a few small writes: enrol throw-away users until one is refused,
    // which is then the CLI's "disk full" answer.
    let filled = small.fill();
    println!(
        "filler: {} KiB written, {} bytes free now",
        filled / 1024,
        small.free_bytes()
    );
    let mut junk_acked = Vec::new();
    let mut junk_refused = None;
    for i in 0..200 {
        let user = format!("junk{i:03}");
        let out = env.otpd(&["enroll", &user, "--period", PERIOD]);
        match out.status.code() {
            Some(0) => junk_acked.push(user),
            _ => {
                refused_on_full_disk(&mut problems, &format!("enroll {user}"), &out);
                junk_refused = Some(user);
                break;
            }
        }
    }
    println!(
        "enrolments acknowledged after the filler hit ENOSPC: {}",
        junk_acked.len()
    );
    let junk_refused = junk_refused.expect("200 enrolments fitted on a full disk");
    let log = env.log();
    let enospc = first_lines(&log, "No space left on device", 3);
    println!("daemon log on ENOSPC:\n  {}", enospc.join("\n  "));
    if enospc.is_empty() {
        problem(
            &mut problems,
            "the daemon's log does not say \"No space left on device\"".into(),
        );
    }

    // Full: logins fail closed (docs/security.md: PAM_AUTHINFO_UNAVAIL, the
    // store could not record the step), a refused write changes nothing.
    let during = env.pam_login("bob", &bob.code_at(next), "192.0.2.1", "");
    println!(
        "login of bob (valid code) on the full disk: {:?}",
        during.outcome
    );
    if during.outcome != PamOutcome::AuthInfoUnavail {
        problem(
            &mut problems,
            format!(
                "the login with a valid code on a full disk ended in {:?}, not \
                 PAM_AUTHINFO_UNAVAIL as docs/security.md says: {}",
                during.outcome, during.output
            ),
        );
    }
    let confirm = env.otpd(&["confirm", "carl", &carl.code_at(t)]);
    refused_on_full_disk(&mut problems, "confirm carl", &confirm);
    let force = env.otpd(&["enroll", "alice", "--force", "--period", PERIOD]);
    refused_on_full_disk(&mut problems, "enroll --force alice", &force);
    let removal = env.otpd(&["remove", "bob"]);
    refused_on_full_disk(&mut problems, "remove bob", &removal);
    let nullok = env.pam_service_nullok("");
    for user in ["alice", "bob"] {
        let wrong = if user == "alice" { &alice } else { &bob }.wrong_code(t);
        let login = nullok.login(OsStr::new(user), &wrong, "192.0.2.1", None);
        println!(
            "nullok login of {user} with a wrong code on the full disk: {:?}",
            login.outcome
        );
        if login.outcome != PamOutcome::AuthInfoUnavail {
            problem(
                &mut problems,
                format!(
                    "the nullok login of {user} with a wrong code on a full disk ended in \
                     {:?}, not PAM_AUTHINFO_UNAVAIL as docs/security.md says (never success): {}",
                    login.outcome, login.output
                ),
            );
        }
    }
    if !daemon_alive(&env) {
        problem(
            &mut problems,
            format!("the daemon died on the full disk:\n{}", env.log()),
        );
    }
    match states(&env) {
        Ok(now) => {
            println!("list on the full disk: {now:?}");
            let mut expected = before.clone();
            expected.extend(junk_acked.iter().map(|u| (u.clone(), "pending".to_owned())));
            expected.sort();
            let mut now = now;
            now.sort();
            for (user, state) in &expected {
                if state_of(&now, user).as_ref() != Some(state) {
                    problem(
                        &mut problems,
                        format!(
                            "after refused writes, {user} is {:?} in the daemon's answers, \
                             but {state} in the store (a failed write took effect in memory)",
                            state_of(&now, user)
                        ),
                    );
                }
            }
            if let Some(state) = state_of(&now, &junk_refused) {
                problem(
                    &mut problems,
                    format!(
                        "{junk_refused} is listed ({state}) although its enrolment was refused"
                    ),
                );
            }
        }
        // Failing closed is allowed while the disk is full (the store is
        // read again from disk first, and that needs space), but it must
        // say why.
        Err(e) if e.contains("no space left") => {
            println!("list on the full disk: refused, naming the full disk");
        }
        Err(e) => problem(
            &mut problems,
            format!("list on the full disk failed without naming the full disk: {e}"),
        ),
    }

    // Space returns: service resumes without a restart.
    small.free_filler();
    println!("filler removed: {} KiB free", small.free_bytes() / 1024);
    let resumed = env.pam_login("carol", &carol.code_at(next), "192.0.2.1", "");
    println!(
        "login of carol after space returned (no restart): {:?}",
        resumed.outcome
    );
    let carol_accepted = resumed.outcome == PamOutcome::Success;
    if !carol_accepted {
        problem(
            &mut problems,
            format!(
                "logins did not resume when space returned (without a restart): {:?}; \
                 the daemon's last error: {}",
                resumed.outcome,
                env.log()
                    .lines()
                    .rfind(|line| line.contains("ERROR"))
                    .unwrap_or("(none)")
            ),
        );
    }
    let erin = env.otpd(&["enroll", "erin", "--period", PERIOD]);
    println!(
        "enroll erin after space returned (no restart): exit {:?} {}",
        erin.status.code(),
        erin.stderr.trim()
    );
    let erin_acked = erin.status.code() == Some(0);
    if !erin_acked {
        problem(
            &mut problems,
            format!("enrolments did not resume when space returned: {erin}"),
        );
    }

    // A restart: everything acknowledged is there, nothing refused is.
    let status = env.kill_daemon(libc::SIGTERM);
    let stop_lines: Vec<String> = env.log().lines().rev().take(2).map(str::to_owned).collect();
    println!("SIGTERM: {status}; last lines: {stop_lines:?}");
    env.spawn_daemon();
    let after = states(&env).expect("list after the restart");
    println!("after the restart: {after:?}");
    for (user, state) in &before {
        if state_of(&after, user).as_ref() != Some(state) {
            problem(
                &mut problems,
                format!(
                    "after the restart {user} is {:?}, was {state} before the disk filled",
                    state_of(&after, user)
                ),
            );
        }
    }
    for user in &junk_acked {
        if state_of(&after, user).is_none() {
            problem(
                &mut problems,
                format!("{user}'s acknowledged enrolment (on the full disk) is lost"),
            );
        }
    }
    if state_of(&after, &junk_refused).is_some() {
        problem(
            &mut problems,
            format!("{junk_refused}'s refused enrolment is in the store"),
        );
    }
    if erin_acked && state_of(&after, "erin").is_none() {
        problem(
            &mut problems,
            "erin's acknowledged enrolment is lost".into(),
        );
    }
    let replay = env.otpd(&["verify", "alice", &alice.code_at(next)]);
    if replay.status.code() != Some(1) {
        problem(
            &mut problems,
            format!("alice's code accepted before the disk filled was not refused: {replay}"),
        );
    }
    if carol_accepted {
        let replay = env.otpd(&["verify", "carol", &carol.code_at(next)]);
        if replay.status.code() != Some(1) {
            problem(
                &mut problems,
                format!("carol's code accepted after space returned was not refused: {replay}"),
            );
        }
    }
    // bob's login on the full disk was refused, so his code is still
    // unused in the store: docs/security.md says it is accepted after the
    // restart.
    let bob_after = env.otpd(&["verify", "bob", &bob.code_at(next)]);
    println!(
        "bob's code (refused on the full disk) after the restart: exit {:?} {}{}",
        bob_after.status.code(),
        bob_after.stdout.trim(),
        bob_after.stderr.trim()
    );
    if bob_after.status.code() != Some(0) {
        problem(
            &mut problems,
            format!("bob's valid code, refused on the full disk, is refused after the restart: {bob_after}"),
        );
    }
    assert!(
        problems.is_empty(),
        "{} problems with a full disk:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
