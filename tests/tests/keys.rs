//! The key that seals the store, through the real `otpd` binary: a store
//! never opens without its key (missing, another key, loose mode), and
//! `otpd rekey` killed with SIGKILL at random moments loses nothing.

use otpd_tests::rng::Rng;
use otpd_tests::totp::unix_now;
use otpd_tests::{settled_now, Enrollment, TestEnv};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Seconds per code of user00 in the rekey campaigns, whose spent code is
/// tried again at the end: a code of the next 300 s step stays inside the
/// window (one step either side) for at least 300 s, however the 30 s steps
/// of the others move on while the campaign runs.
const LONG_PERIOD: u64 = 300;

/// Enrols `count` users for a rekey campaign, `user00`, `user01`…: each
/// confirmed with the code of the step before the one it is sent in
/// (computed just before, with at least 5 s left in the step), so that a
/// code of any later step logs in, however long the campaign takes.
/// `user00` has 300 s codes, and its code of the next step is spent:
/// returns the users and that code, refused ever after ("already used")
/// for at least 300 s.
fn campaign_users(env: &TestEnv, count: usize) -> (Vec<(String, Enrollment)>, String) {
    let users: Vec<(String, Enrollment)> = (0..count)
        .map(|i| {
            let name = format!("user{i:02}");
            let e = if i == 0 {
                let period = LONG_PERIOD.to_string();
                env.enroll_active(&name, &["--period", &period], unix_now())
            } else {
                env.enroll_active(&name, &[], settled_now(30, 5) - 30)
            };
            (name, e)
        })
        .collect();
    let used = users[0].1.code_at(unix_now() + LONG_PERIOD);
    env.otpd_expect(&["verify", "user00", &used], 0);
    (users, used)
}

/// The replay of user00's spent code ([`campaign_users`]), `started` (when
/// it was spent) being at most 300 s ago: refused as already used.
fn spent_code_is_refused(env: &TestEnv, used: &str, started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(LONG_PERIOD),
        "the campaign took {} s, longer than user00's spent code stays inside the window \
         ({LONG_PERIOD} s): its replay can no longer be told from a wrong code; run fewer kills",
        started.elapsed().as_secs()
    );
    let replay = env.otpd_expect(&["verify", "user00", used], 1);
    assert!(replay.stderr.contains("already used"), "{replay}");
}

/// `otpd rekey NEW_KEY` as root's command runs it, its output appended to
/// `rekey.log` in the env's dir, which the secrets check reads too.
fn spawn_rekey(env: &TestEnv, new_key: &Path) -> Child {
    let log = env.dir.join("rekey.log");
    env.scan_also(&log);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("open rekey.log");
    std::process::Command::new(otpd_tests::programs::otpd_binary())
        .arg("--config")
        .arg(&env.config)
        .arg("rekey")
        .arg(new_key)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("dup the log's fd"))
        .stderr(out)
        .spawn()
        .expect("spawn otpd rekey")
}

/// Where `otpd rekey` moves its copy of the store once the switch is done
/// (otpd's `REKEY_DONE`), to remove it: while it is there, the store is
/// whole under the new key and the key file not yet replaced.
const COPY_AFTER_THE_SWITCH: &str = "store.before-rekey.done";

/// When a rekey of the campaign is killed.
#[derive(Clone, Copy)]
enum Aim {
    /// After this long, whatever the rekey is doing then.
    After(Duration),
    /// As soon as the switch is seen done ([`COPY_AFTER_THE_SWITCH`]):
    /// random delays almost never land in the few milliseconds between
    /// the switch and the end (none of 20 in the run of 2026-11-22).
    JustAfterTheSwitch,
}

/// Runs `otpd rekey NEW_KEY` and SIGKILLs it as `aim` says; `true` when the
/// kill ended it (`false`: it had finished first).
fn kill_rekey(env: &TestEnv, new_key: &Path, aim: Aim) -> bool {
    let mut child = spawn_rekey(env, new_key);
    match aim {
        Aim::After(delay) => std::thread::sleep(delay),
        Aim::JustAfterTheSwitch => {
            let done = env.state_dir.join(COPY_AFTER_THE_SWITCH);
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() && !done.exists() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "otpd rekey neither switched nor ended within 30 s"
                );
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    let _ = child.kill(); // SIGKILL; harmless if it already exited
    !child.wait().unwrap().success()
}

/// `otpd serve` that must fail ([`TestEnv::serve_refused`]): returns its
/// stderr.
fn serve_must_fail(env: &TestEnv, what: &str) -> String {
    env.serve_refused(what).stderr
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn the_store_never_opens_without_its_own_key() {
    let mut env = TestEnv::start("keys");
    let t = settled_now(30, 10);
    let alice = env.enroll_active("alice", &[], t - 30);
    let key_meta = std::fs::metadata(&env.key_file).expect("the first start made the key");
    assert_eq!(key_meta.permissions().mode() & 0o777, 0o400);
    env.restart_daemon();
    let key = std::fs::read(&env.key_file).unwrap();

    env.kill_daemon(libc::SIGTERM);
    let aside = env.dir.join("otpd.key.aside");
    std::fs::rename(&env.key_file, &aside).unwrap();
    let said = serve_must_fail(&env, "the key file missing");
    assert!(
        said.contains("is missing") && said.contains(&env.key_file.display().to_string()),
        "missing key: {said}"
    );
    assert!(
        !env.key_file.exists(),
        "a store with records must never get a fresh key"
    );

    let other = env.dir.join("other.key");
    env.keygen(&other);
    std::fs::copy(&other, &env.key_file).unwrap();
    chmod(&env.key_file, 0o400);
    let said = serve_must_fail(&env, "another key");
    assert!(said.contains("holds key ID"), "another key: {said}");

    std::fs::remove_file(&env.key_file).unwrap();
    std::fs::write(&env.key_file, &key).unwrap();
    chmod(&env.key_file, 0o644);
    let said = serve_must_fail(&env, "a world-readable key");
    assert!(said.contains("chmod 0400"), "a world-readable key: {said}");

    chmod(&env.key_file, 0o400);
    env.spawn_daemon();
    // Confirmed with the code of the step before t: the code of now is of
    // a later step, however long the refusals above took.
    env.otpd_expect(&["verify", "alice", &alice.code_at(unix_now())], 0);
    // keygen never overwrites.
    let out = env.otpd_expect(&["keygen", env.key_file.to_str().unwrap()], 1);
    assert!(out.stderr.contains("already exists"), "{out}");
    assert_eq!(std::fs::read(&env.key_file).unwrap(), key);
}

#[test]
fn rekey_killed_at_random_moments_loses_nothing() {
    let mut env = TestEnv::start("rekey");
    let (users, used) = campaign_users(&env, 30);
    let spent = Instant::now();
    env.enroll("pending", &[]);
    let before = env.list();

    // With the daemon running, rekey refuses and changes nothing (not
    // even the new key file is made).
    let busy = env.otpd_expect(&["rekey", env.dir.join("k0").to_str().unwrap()], 1);
    assert!(busy.stderr.contains("stop"), "{busy}");
    assert!(
        !env.dir.join("k0").exists(),
        "a refused rekey made the key file"
    );
    env.kill_daemon(libc::SIGTERM);

    let seed = std::env::var("OTPD_REKEY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    // Odd rounds kill at a random moment, even ones just after the switch:
    // at least two, for a kill on either side of it.
    let rounds = otpd_tests::campaign::size("OTPD_REKEY_KILLS", 20);
    assert!(
        rounds >= 2,
        "OTPD_REKEY_KILLS={rounds}: the campaign kills on both sides of the switch, at least 2"
    );
    println!("rekey campaign: seed {seed} (OTPD_REKEY_SEED), {rounds} kills (OTPD_REKEY_KILLS)");
    let mut rng = Rng(seed);

    // How long one full rekey takes, to spread the kills over it.
    let timed = Instant::now();
    env.otpd_expect(&["rekey", env.dir.join("k0").to_str().unwrap()], 0);
    let full = timed.elapsed();
    println!(
        "one full rekey of {} records: {} ms",
        before.len(),
        full.as_millis()
    );

    let (mut old_key_whole, mut new_key_whole, mut finished_anyway) = (0, 0, 0);
    // Killed before its switch: the daemon refuses until the rekey is run
    // again (which starts over from the copy it took first).
    let mut interrupted = 0;
    let mut aimed = 0;
    for round in 1..=rounds {
        let new_key = env.dir.join(format!("k{round}"));
        let key_before = std::fs::read(&env.key_file).unwrap();
        let aim = if round % 2 == 0 {
            aimed += 1;
            Aim::JustAfterTheSwitch
        } else {
            Aim::After(Duration::from_micros(
                rng.next_u64() % (full.as_micros() as u64 + 1),
            ))
        };
        let killed = kill_rekey(&env, &new_key, aim);
        // Whatever the moment: the daemon starts with the key file as it is
        // now (old key: the switch had not happened), or refuses with the
        // way out, and a second rekey with the same file finishes the job.
        let key_now = std::fs::read(&env.key_file).unwrap();
        if !killed {
            finished_anyway += 1;
        } else if key_now == key_before {
            match env.try_serve() {
                Ok(()) => old_key_whole += 1,
                Err(said) => {
                    assert!(
                        said.contains("run it again"),
                        "round {round}: the daemon refused without naming the way out: {said}"
                    );
                    if said.contains("holds key ID") {
                        new_key_whole += 1;
                    } else {
                        interrupted += 1;
                    }
                }
            }
        } else {
            new_key_whole += 1;
        }
        let out = env.otpd(&["rekey", new_key.to_str().unwrap()]);
        let when = match aim {
            Aim::After(delay) => format!("at {} µs", delay.as_micros()),
            Aim::JustAfterTheSwitch => "just after the switch".to_owned(),
        };
        assert!(
            out.status.success(),
            "round {round}: finishing the rekey after a kill {when} failed: {out}"
        );
        assert_eq!(
            std::fs::read(&env.key_file).unwrap(),
            std::fs::read(&new_key).unwrap(),
            "round {round}: the new key is installed"
        );
    }
    env.spawn_daemon();
    let after = env.list();
    assert_eq!(
        after, before,
        "every record came through the rekeys unchanged"
    );
    spent_code_is_refused(&env, &used, spent);
    env.otpd_expect(&["verify", "user01", &users[1].1.code_at(unix_now())], 0);
    println!(
        "rekey campaign: {rounds} runs killed ({aimed} of them just after the switch, the others \
         at random moments); interrupted before the switch (daemon refuses until rerun) \
         {interrupted}, store whole under the old key {old_key_whole}, under the new key \
         {new_key_whole}, finished before the kill {finished_anyway}; records lost 0 of {}; \
         replays accepted 0",
        before.len()
    );
    // A campaign whose kills all landed on one side of the switch has
    // checked only half of what it claims.
    assert!(
        interrupted + old_key_whole > 0,
        "no kill landed before the switch"
    );
    assert!(new_key_whole > 0, "no kill landed after the switch");
}

/// The packaged layout (README, "A new key"): the state directory and the
/// key file belong to the daemon's account (uid 65534 here; `otpd` in the
/// packages), the daemon runs as it, and root runs `otpd rekey` with the
/// daemon stopped. Logins work before and after; the new key is installed
/// with the old file's owner; and root leaves no file of its own in the
/// state directory.
#[test]
fn root_rekeys_a_store_that_belongs_to_the_daemon_user() {
    if !otpd_tests::require(
        "root_rekeys_a_store_that_belongs_to_the_daemon_user",
        &[
            otpd_tests::Program::Pamtester,
            otpd_tests::Program::PamWrapper,
            otpd_tests::Program::Oathtool,
            otpd_tests::Program::Setpriv,
        ],
    ) {
        return;
    }
    use otpd_tests::process::NOBODY_UID;
    use otpd_tests::statedir;
    use std::os::unix::fs::MetadataExt;
    let mut env = TestEnv::start("rekeyowner");
    let t = settled_now(30, 12);
    let alice = env.enroll_active("alice", &[], t - 30);
    env.kill_daemon(libc::SIGTERM);

    // Handed over as the packages do: the store and the key are the
    // daemon account's, its socket in a directory of its own.
    statedir::hand_over(&env, NOBODY_UID);
    let run = env.dir.join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
    let config = std::fs::read_to_string(&env.config).unwrap();
    let socket_line = format!("socket = \"{}\"", env.socket.display());
    env.socket = run.join("otpd.sock");
    std::fs::write(
        &env.config,
        config.replace(
            &socket_line,
            &format!("socket = \"{}\"", env.socket.display()),
        ),
    )
    .unwrap();
    env.launcher = vec![
        otpd_tests::Program::Setpriv.path().into(),
        format!("--reuid={NOBODY_UID}").into(),
        format!("--regid={NOBODY_UID}").into(),
        "--clear-groups".into(),
        "--".into(),
    ];
    let login = |env: &TestEnv, at: u64| {
        env.pam_login("alice", &alice.code_at(at), "", "daemon_user=nobody")
    };
    env.spawn_daemon();
    let before = login(&env, t);
    assert_eq!(
        before.outcome,
        otpd_tests::PamOutcome::Success,
        "{}",
        before.output
    );
    env.kill_daemon(libc::SIGTERM);

    let new_key = env.dir.join("otpd.key.new");
    let out = env.otpd(&["rekey", new_key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "sudo otpd rekey failed: {out}");
    assert!(out.stdout.contains("re-sealed with"), "{out}");
    let root_owned = statedir::root_owned_under(&env.state_dir);
    assert!(
        root_owned.is_empty(),
        "otpd rekey left files of root's in the state directory: {root_owned:?}"
    );
    let key = std::fs::metadata(&env.key_file).unwrap();
    assert_eq!(
        (key.uid(), key.mode() & 0o7777),
        (NOBODY_UID, 0o400),
        "the installed key keeps its owner and mode"
    );
    assert_eq!(
        std::fs::read(&env.key_file).unwrap(),
        std::fs::read(&new_key).unwrap()
    );
    assert!(!env.state_dir.join("store.before-rekey").exists());

    env.spawn_daemon();
    let after = login(&env, t + 30);
    assert_eq!(
        after.outcome,
        otpd_tests::PamOutcome::Success,
        "{}",
        after.output
    );
    let replay = login(&env, t + 30);
    assert_eq!(
        replay.outcome,
        otpd_tests::PamOutcome::AuthErr,
        "{}",
        replay.output
    );
}

/// `otpd rekey` run by root on a store of the daemon's account (the work
/// then runs in a child as that account), killed with SIGKILL at random
/// moments: the child dies with root's command (it would hold the lock on
/// its own otherwise), running the command again finishes the job, no file
/// of root's is ever left in the state directory, and nothing is lost.
#[test]
fn root_rekey_of_a_daemon_users_store_killed_at_random_moments() {
    use otpd_tests::process::NOBODY_UID;
    use otpd_tests::statedir;
    use std::os::unix::fs::MetadataExt;
    let mut env = TestEnv::start("rekeyownerkills");
    let (users, used) = campaign_users(&env, 12);
    let spent = Instant::now();
    let before = env.list();
    env.kill_daemon(libc::SIGTERM);
    let hand_to = |uid: u32| statedir::hand_over(&env, uid);
    hand_to(NOBODY_UID);

    let seed = std::env::var("OTPD_REKEY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    let rounds = otpd_tests::campaign::size("OTPD_REKEY_KILLS", 10);
    println!("rekey as the owner: seed {seed} (OTPD_REKEY_SEED), {rounds} kills");
    let mut rng = Rng(seed);
    let timed = Instant::now();
    env.otpd_expect(&["rekey", env.dir.join("k0").to_str().unwrap()], 0);
    let full = timed.elapsed();
    let (mut killed, mut lock_waits) = (0, 0);
    for round in 1..=rounds {
        let new_key = env.dir.join(format!("k{round}"));
        let delay = Duration::from_micros(rng.next_u64() % (full.as_micros() as u64 + 1));
        if kill_rekey(&env, &new_key, Aim::After(delay)) {
            killed += 1;
        }
        // The worker dies with it; its exit (and the lock's release) may
        // trail the parent's by a moment.
        let started = Instant::now();
        let out = loop {
            let out = env.otpd(&["rekey", new_key.to_str().unwrap()]);
            if out.status.success()
                || !out.stderr.contains("already running")
                || started.elapsed() > Duration::from_secs(2)
            {
                break out;
            }
            lock_waits += 1;
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            out.status.success(),
            "round {round}: finishing the rekey after a kill at {} µs failed: {out}",
            delay.as_micros()
        );
        let root_owned = statedir::root_owned_under(&env.state_dir);
        assert!(
            root_owned.is_empty(),
            "round {round}: files of root's in the state directory: {root_owned:?}"
        );
        let key = std::fs::metadata(&env.key_file).unwrap();
        assert_eq!((key.uid(), key.mode() & 0o777), (NOBODY_UID, 0o400));
        assert_eq!(
            std::fs::read(&env.key_file).unwrap(),
            std::fs::read(&new_key).unwrap()
        );
    }
    hand_to(0);
    env.spawn_daemon();
    assert_eq!(env.list(), before, "every record came through the rekeys");
    spent_code_is_refused(&env, &used, spent);
    env.otpd_expect(&["verify", "user01", &users[1].1.code_at(unix_now())], 0);
    assert!(
        killed > 0,
        "no run of otpd rekey was killed: the campaign checked nothing"
    );
    println!(
        "rekey as the owner: {rounds} runs, {killed} killed at random moments within a full \
         rekey ({} ms); each finished by running it again ({lock_waits} retries while a \
         killed worker let go of the lock); no file of root's left; records lost 0 of {}",
        full.as_millis(),
        before.len()
    );
}
