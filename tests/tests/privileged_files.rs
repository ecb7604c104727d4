//! What root's commands do with files others control, through the real
//! `otpd` binary (the tests run as root):
//!
//! - `otpd rekey` and `otpd migrate` on a state directory that belongs to
//!   the daemon's account (uid 65534 here): a symbolic link or a hard link
//!   that account planted in the store, in the copy an interrupted rekey
//!   keeps, or as the lock file is refused with the file named; the
//!   root-only file it points to is neither copied, nor changed, nor given
//!   away; and root leaves no file of its own in the directory;
//! - `otpd enroll --qr-png/--qr-svg FILE` never writes through an existing
//!   path (a file, a symbolic link, a dangling one);
//! - the daemon's socket never exists on its path with another mode than
//!   0666 (bound with the right umask by a thread of its own, no `chmod` of
//!   the path after `bind`: the system calls are traced);
//! - the SMS sender starts with a clean environment, as `[sms] user`.

use otpd_tests::postgres::PgCluster;
use otpd_tests::process::{self, NOBODY_UID};
use otpd_tests::statedir::{self, RootSecret};
use otpd_tests::{programs, require, settled_now, strace, Limits, Program, TestEnv};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How the daemon's account plants a name for a file it may not read.
#[derive(Debug, Clone, Copy)]
enum Plant {
    Symlink,
    HardLink,
}

impl Plant {
    fn at(self, secret: &RootSecret, link: &Path) {
        match self {
            Plant::Symlink => {
                secret.symlink_at(link);
                // Planted by the daemon's account: the link is its own.
                std::os::unix::fs::lchown(link, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
            }
            Plant::HardLink => secret.hard_link_at(link),
        }
    }

    /// What the refusal must say.
    fn words(self) -> &'static str {
        match self {
            Plant::Symlink => "symbolic link",
            Plant::HardLink => "hard link",
        }
    }
}

/// A store with one active user, made by a daemon run by root, then handed
/// to uid 65534 as the daemon's account would own it; the daemon stopped.
fn store_of_nobody(name: &str) -> TestEnv {
    let mut env = TestEnv::start(name);
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t - 30);
    env.kill_daemon(libc::SIGTERM);
    // The state directory and the anchor directory, as the packages have
    // them (the key file stays root's, as in the tests of root's commands).
    statedir::chown_tree(&env.state_dir, NOBODY_UID);
    statedir::chown_tree(&statedir::anchor_dir(&env), NOBODY_UID);
    env
}

/// Asserts that `out` is a refusal (exit 1) naming `file` and `words`.
fn assert_refused(out: &process::Output, file: &Path, words: &str, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{what}: not refused: {out}");
    assert!(
        out.stderr.contains(&file.display().to_string()) && out.stderr.contains(words),
        "{what}: the refusal does not name {} and say \"{words}\": {out}",
        file.display()
    );
}

/// Asserts that nothing in the state directory belongs to root (but the
/// planted `leak`, a name of root's file).
fn assert_nothing_of_roots(env: &TestEnv, leak: &Path, what: &str) {
    let mut root_owned = statedir::root_owned_under(&env.state_dir);
    root_owned.retain(|p| p != leak);
    assert!(
        root_owned.is_empty(),
        "{what}: files of root's in the daemon's state directory: {root_owned:?}"
    );
}

#[test]
fn rekey_refuses_links_planted_in_the_copy_of_an_interrupted_rekey() {
    for plant in [Plant::Symlink, Plant::HardLink] {
        let what = format!("{plant:?} in store.before-rekey");
        let env = store_of_nobody(&format!("rekeycopy{plant:?}"));
        let secret = RootSecret::create(&env.dir, "root-secret");
        // An interrupted rekey left its copy; the daemon's account adds a
        // name for the root-only file to it.
        let copy = env.state_dir.join("store.before-rekey");
        statedir::copy_tree(&env.state_dir.join("store"), &copy);
        statedir::chown_tree(&copy, NOBODY_UID);
        let leak = copy.join("leak");
        plant.at(&secret, &leak);
        let new_key = env.dir.join("new.key");

        let out = env.otpd(&["rekey", new_key.to_str().unwrap()]);
        assert_refused(&out, &leak, plant.words(), &what);
        secret.assert_untouched(&env.state_dir, &what);
        assert_nothing_of_roots(&env, &leak, &what);

        // Without it, the same command finishes the rekey.
        std::fs::remove_file(&leak).unwrap();
        let out = env.otpd(&["rekey", new_key.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{what}: then: {out}");
        assert!(!copy.exists(), "{what}: the copy is gone after the rekey");
        secret.assert_untouched(&env.state_dir, &what);
        assert_nothing_of_roots(&env, &leak, &what);
        println!("{what}: refused ({}), then rekeyed", out.stdout.trim());
    }
}

#[test]
fn rekey_refuses_links_planted_in_the_store_and_as_its_lock() {
    for (plant, name) in [
        (Plant::Symlink, "store/leak"),
        (Plant::HardLink, "store/leak"),
        (Plant::Symlink, "otpd.lock"),
        (Plant::HardLink, "otpd.lock"),
    ] {
        let what = format!("{plant:?} as {name}");
        let env = store_of_nobody(&format!("rekeystore{plant:?}{}", name.len()));
        let secret = RootSecret::create(&env.dir, "root-secret");
        let leak = env.state_dir.join(name);
        let _ = std::fs::remove_file(&leak);
        plant.at(&secret, &leak);
        let new_key = env.dir.join("new.key");

        let out = env.otpd(&["rekey", new_key.to_str().unwrap()]);
        assert_refused(&out, &leak, plant.words(), &what);
        secret.assert_untouched(&env.state_dir, &what);
        assert_nothing_of_roots(&env, &leak, &what);
        assert!(
            !env.state_dir.join("store.before-rekey").exists(),
            "{what}: a refused rekey left a copy of the store"
        );

        std::fs::remove_file(&leak).unwrap();
        let out = env.otpd(&["rekey", new_key.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{what}: then: {out}");
        secret.assert_untouched(&env.state_dir, &what);
        assert_nothing_of_roots(&env, &leak, &what);
        println!("{what}: refused, then rekeyed");
    }
}

#[test]
fn migrate_refuses_links_planted_in_the_store() {
    let Some(pg) = PgCluster::start("migrate_links") else {
        return;
    };
    for (n, plant) in [Plant::Symlink, Plant::HardLink].into_iter().enumerate() {
        let what = format!("{plant:?} in the store, otpd migrate");
        let env = store_of_nobody(&format!("migratelinks{plant:?}"));
        let db = format!("links{n}");
        pg.create_database(&db);
        let url = pg.url_for_db(&db);
        let secret = RootSecret::create(&env.dir, "root-secret");
        let leak = env.state_dir.join("store/leak");
        plant.at(&secret, &leak);

        let out = env.otpd(&["migrate", "--to", "postgres", &url]);
        assert_refused(&out, &leak, plant.words(), &what);
        secret.assert_untouched(&env.state_dir, &what);
        assert_nothing_of_roots(&env, &leak, &what);

        // Nothing was copied: without the link, the user is copied now.
        std::fs::remove_file(&leak).unwrap();
        let out = env.otpd(&["migrate", "--to", "postgres", &url]);
        assert_eq!(out.status.code(), Some(0), "{what}: then: {out}");
        assert!(
            out.stdout.contains("1 users in the sled store") && out.stdout.contains(": 1 copied"),
            "{what}: {out}"
        );
        assert!(!out.stdout.contains(&pg.password) && !out.stderr.contains(&pg.password));
        secret.assert_untouched(&env.state_dir, &what);
        assert_nothing_of_roots(&env, &leak, &what);
    }
}

#[test]
fn qr_files_are_created_new_never_written_through_an_existing_path() {
    let env = TestEnv::start("qrfiles");
    let precious = env.dir.join("precious");
    std::fs::write(&precious, "keep\n").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o644)).unwrap();
    let existing = env.dir.join("existing.png");
    std::fs::write(&existing, "keep too\n").unwrap();
    let link = env.dir.join("link.svg");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let would_be = env.dir.join("would-be-created");
    let dangling = env.dir.join("dangling.png");
    std::os::unix::fs::symlink(&would_be, &dangling).unwrap();

    for (flag, path) in [
        ("--qr-png", &existing),
        ("--qr-svg", &link),
        ("--qr-png", &dangling),
    ] {
        let out = env.otpd(&["enroll", "alice", flag, path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {}: {out}",
            path.display()
        );
        assert!(
            out.stderr.contains(&path.display().to_string()) && out.stderr.contains("exists"),
            "{flag} {}: the refusal does not name the file: {out}",
            path.display()
        );
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep\n");
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep too\n");
        assert_eq!(
            std::fs::metadata(&precious).unwrap().mode() & 0o777,
            0o644,
            "the link's target keeps its mode"
        );
        assert!(!would_be.exists(), "a dangling link was followed");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(
            env.list_entry("alice").is_none(),
            "{flag} {}: a refused enroll enrolled alice anyway",
            path.display()
        );
    }

    let fresh = env.dir.join("fresh.png");
    env.otpd_expect(&["enroll", "alice", "--qr-png", fresh.to_str().unwrap()], 0);
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    assert!(std::fs::read(&fresh).unwrap().starts_with(b"\x89PNG"));
}

/// The daemon started under `strace -f`: the socket is bound on its path by
/// a thread that first stopped sharing the process's umask and set it to
/// give 0666, and nothing changes the path's mode afterwards (no `chmod`),
/// so the socket never exists there with another mode.
#[test]
fn the_socket_has_its_mode_from_the_first_instant() {
    if !require(
        "the_socket_has_its_mode_from_the_first_instant",
        &[Program::Strace],
    ) {
        return;
    }
    let mut env = TestEnv::without_daemon("socketmode", &Limits::default());
    let trace = env.dir.join("strace.trace");
    env.launcher = vec![
        Program::Strace.path().into(),
        "-f".into(),
        "-yy".into(),
        "-s".into(),
        "512".into(),
        "-e".into(),
        "trace=bind,fchmod,umask,unshare,%file".into(),
        "-o".into(),
        trace.clone().into(),
        "--".into(),
    ];
    env.spawn_daemon();
    std::thread::sleep(Duration::from_millis(200));
    let mode = std::fs::symlink_metadata(&env.socket).unwrap().mode();
    // The daemon is strace's child: stop it (its pid is in the lock file),
    // then wait for strace, which ends with it (signal 0 sends nothing).
    let pid: u32 = std::fs::read_to_string(env.state_dir.join("otpd.lock"))
        .unwrap()
        .trim()
        .parse()
        .expect("the daemon's pid in its lock file");
    process::send_signal(pid, libc::SIGTERM);
    env.kill_daemon(0);

    let log = std::fs::read_to_string(&trace).expect("read the strace log");
    let calls = strace::parse(&log);
    let socket = env.socket.display().to_string();
    let quoted = format!("\"{socket}\"");
    let parent = env.socket.parent().unwrap().display().to_string();
    let name = format!("\"{}\"", env.socket.file_name().unwrap().to_string_lossy());
    let bind = calls
        .iter()
        .find(|c| c.name == "bind" && c.args.contains(&format!("sun_path={quoted}")))
        .unwrap_or_else(|| panic!("no bind on {socket} traced:\n{log}"));
    assert!(bind.succeeded(), "{bind:?}");
    let before_bind: Vec<_> = calls
        .iter()
        .filter(|c| c.tid == bind.tid && c.start_line < bind.start_line)
        .collect();
    // strace pads short calls' results (`umask(0111)        = 022`), which
    // the parser leaves in the arguments: split them here.
    let split = |c: &strace::Syscall| -> (String, String) {
        match &c.result {
            Some(result) => (c.args.clone(), result.clone()),
            None => match c.args.rsplit_once(')') {
                Some((args, rest)) => (
                    args.to_owned(),
                    rest.trim().trim_start_matches('=').trim().to_owned(),
                ),
                None => (c.args.clone(), String::new()),
            },
        }
    };
    let unshared = before_bind.iter().any(|c| {
        let (args, result) = split(c);
        c.name == "unshare" && args == "CLONE_FS" && result == "0"
    });
    let umask = before_bind.iter().rev().find(|c| c.name == "umask");
    assert!(
        unshared && umask.is_some_and(|c| split(c).0 == "0111"),
        "the socket was bound with the process's umask (the thread that bound it did \
         not unshare it and set 0111 first): it existed at {socket} with another mode \
         than 0666 until a chmod: {bind:?}; the last calls before it in that thread: {:?}",
        &before_bind[before_bind.len().saturating_sub(3)..]
    );
    let chmods: Vec<_> = calls
        .iter()
        .filter(|c| c.name.contains("chmod"))
        .filter(|c| {
            c.args.contains(&quoted)
                || (c.fd.as_deref() == Some(parent.as_str()) && c.args.contains(&name))
        })
        .collect();
    assert!(
        chmods.is_empty(),
        "the daemon changed the mode of {socket} by its path: {chmods:?}"
    );
    // The umask of 0111 stayed with that thread: no other thread set one.
    let other_umasks: Vec<_> = calls
        .iter()
        .filter(|c| c.name == "umask" && c.tid != bind.tid)
        .collect();
    assert!(other_umasks.is_empty(), "{other_umasks:?}");
    assert_eq!(mode & 0o777, 0o666, "the socket's mode");
    println!(
        "{} system calls traced; the bind's thread: {:?}; the socket's mode {:o}",
        calls.len(),
        before_bind
            .iter()
            .rev()
            .take(2)
            .rev()
            .map(|c| {
                let (args, result) = split(c);
                format!("{}({args}) = {result}", c.name)
            })
            .collect::<Vec<_>>(),
        mode & 0o777
    );
}

/// A sender that writes its arguments, `id` and `env` to `out_dir/report`.
fn reporting_sender(env: &TestEnv) -> (PathBuf, PathBuf) {
    let out_dir = env.dir.join("sender-out");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();
    let report = out_dir.join("report");
    let script = env.dir.join("send-sms-report");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >/dev/null\n{{ echo \"args=$*\"; echo \"cwd=$(pwd)\"; /usr/bin/id; \
             /usr/bin/env; }} > {dir}/report.tmp && mv {dir}/report.tmp {dir}/report\n",
            dir = out_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, report)
}

/// `otpd --config CONFIG ARGS…` with a config of its own.
fn otpd_with(config: &Path, args: &[&str]) -> process::Output {
    let mut cmd = Command::new(programs::otpd_binary());
    cmd.arg("--config").arg(config).args(args);
    process::run(cmd, b"", Duration::from_secs(30))
}

#[test]
fn the_sms_sender_runs_with_a_clean_environment_as_the_configured_user() {
    let mut env = TestEnv::without_daemon("smsuser", &Limits::default());
    let (script, report) = reporting_sender(&env);
    let base = std::fs::read_to_string(&env.config).unwrap();
    let with_user = |user: &str| {
        format!(
            "{base}\n[sms]\ncommand = \"{}\"\nuser = \"{user}\"\n",
            script.display()
        )
    };
    // Refused at check-config and at start: root, a name that does not
    // resolve.
    for (user, said) in [("root", "root"), ("otpd-no-such-user", "no such user")] {
        let config = env.dir.join(format!("otpd-{user}.toml"));
        std::fs::write(&config, with_user(user)).unwrap();
        let out = otpd_with(&config, &["check-config"]);
        assert_eq!(out.status.code(), Some(2), "[sms] user = {user}: {out}");
        assert!(
            out.stderr.contains("[sms] user") && out.stderr.contains(said),
            "[sms] user = {user}: {out}"
        );
        let out = otpd_with(&config, &["serve"]);
        env.append_to_log(&out);
        assert!(!out.status.success(), "[sms] user = {user}: serve: {out}");
        assert!(
            out.stderr.contains("[sms] user") && out.stderr.contains(said),
            "[sms] user = {user}: serve: {out}"
        );
    }

    std::fs::write(&env.config, with_user("nobody")).unwrap();
    let out = env.otpd_expect(&["check-config"], 0);
    assert!(
        out.stdout
            .contains(&format!("as user nobody (uid {NOBODY_UID}")),
        "check-config does not report the sender's user: {out}"
    );
    env.spawn_daemon();
    let daemon_env =
        std::fs::read(format!("/proc/{}/environ", env.daemon_pid())).unwrap_or_default();
    assert!(
        daemon_env
            .split(|b| *b == 0)
            .any(|v| v.starts_with(b"RUST_LOG=")),
        "the test daemon should have RUST_LOG in its environment"
    );
    let t = settled_now(30, 5);
    env.enroll_active("alice", &[], t - 30);
    env.otpd_expect(&["phone", "alice", "+31612345678"], 0);
    let started = Instant::now();
    while !report.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sender wrote no report:\n{}",
            env.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&report).unwrap();
    println!("the sender's report:\n{text}");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("args=+31612345678"), "{text}");
    assert_eq!(lines.next(), Some("cwd=/"), "{text}");
    let id = lines.next().unwrap_or_default();
    assert!(
        id.starts_with(&format!("uid={NOBODY_UID}("))
            && id.contains(&format!(" gid={NOBODY_UID}("))
            && id.ends_with(&format!("groups={NOBODY_UID}(nogroup)")),
        "the sender does not run as nobody with only its own group: {id}"
    );
    let vars: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once('=')).collect();
    let get = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    assert_eq!(get("PATH"), Some("/usr/local/bin:/usr/bin:/bin"), "{text}");
    assert_eq!(get("LANG"), Some("C.UTF-8"), "{text}");
    // The shell itself may add PWD, OLDPWD and SHLVL; nothing of the daemon's.
    let foreign: Vec<_> = vars
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !matches!(*n, "PATH" | "LANG" | "PWD" | "OLDPWD" | "SHLVL" | "_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "the sender inherited the daemon's environment: {foreign:?}\n{text}"
    );
}
