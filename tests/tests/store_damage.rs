//! A damaged or unreadable store: `otpd serve` either refuses to start with
//! a message naming the damaged file or directory (and a non-zero exit), or
//! starts with every record intact. It never starts with an empty or
//! partial store, where `nullok` would let users in without a code.
//!
//! One store is built (active users, a pending one, an accepted code), kept
//! as a pristine copy, and each case starts from that copy, damages it and
//! starts the daemon. The store is a black box under `state_dir`: the
//! damage goes to "the largest file" or "every file", never to a named
//! part of an on-disk format. The cases that need file permissions to
//! matter run the daemon as uid 65534 (root reads any file). Two cases put
//! back an older copy of the state directory, or empty it: this host's
//! anchor outside it (`[store] anchor_dir`) refuses both; only with the
//! anchor gone too does the daemon start a new, empty store (with a
//! warning: the documented limit).

use otpd_proto::{Request, Response, SecretText, VerifyOutcome};
use otpd_tests::process::{ChildGuard, NOBODY_UID};
use otpd_tests::rng::Rng;
use otpd_tests::statedir::{self, chown_tree, copy_tree};
use otpd_tests::totp::unix_now;
use otpd_tests::{programs, require, Enrollment, Limits, PamOutcome, Program, TestEnv};
use std::ffi::OsStr;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Seconds per code: long, so that every code stays in the window for the
/// whole run.
const PERIOD: &str = "300";
/// Active users besides alice and bob, so that the store spans more than
/// a page or two.
const OTHER_USERS: usize = 30;
/// How long a daemon may take to either exit or answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Every regular file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The store's files: everything under `state_dir` but the daemon's lock.
fn store_files(state_dir: &Path) -> Vec<PathBuf> {
    files_under(state_dir)
        .into_iter()
        .filter(|f| f.file_name() != Some(OsStr::new("otpd.lock")))
        .collect()
}

fn largest_file(state_dir: &Path) -> PathBuf {
    store_files(state_dir)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .expect("the store has files")
}

/// One request over the socket, as root, trusting a daemon run by root or
/// by uid 65534 (`nobody`).
fn call(socket: &Path, request: &Request) -> Result<Response, String> {
    let mut client = otpd_tests::client::client(socket, Duration::from_secs(20));
    // Some cases run the daemon as uid 65534: it is the daemon user here.
    client.trust.daemon_user = "nobody".into();
    client.ask(request).map_err(|e| e.to_string())
}

/// `user → state` (as `list --json` spells it), sorted.
fn states(socket: &Path) -> Result<Vec<(String, String)>, String> {
    match call(socket, &Request::List {})? {
        Response::Users { users } => {
            let mut states: Vec<(String, String)> = users
                .into_iter()
                .map(|u| {
                    let state = serde_json::to_value(u.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    (u.user, state)
                })
                .collect();
            states.sort();
            Ok(states)
        }
        other => Err(format!("list answered {other:?}")),
    }
}

/// How a start on a damaged store ended.
enum Start {
    Refused { status: String, message: String },
    Started(ChildGuard),
    Hung,
}

fn try_start(cmd: Command, socket: &Path, log: &Path) -> Start {
    let mut daemon = ChildGuard::spawn(cmd, log);
    let started = Instant::now();
    loop {
        if let Some(status) = daemon.child.try_wait().expect("try_wait") {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            // main() prints the reason as `otpd: …` on stderr.
            let message = text
                .lines()
                .filter(|l| l.starts_with("otpd:"))
                .collect::<Vec<_>>()
                .join(" | ");
            return Start::Refused {
                status: status.to_string(),
                message: if message.is_empty() {
                    text.lines().last().unwrap_or("").to_owned()
                } else {
                    message
                },
            };
        }
        if UnixStream::connect(socket).is_ok() {
            return Start::Started(daemon);
        }
        if started.elapsed() > START_TIMEOUT {
            return Start::Hung;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the store held before any damage.
struct Expected {
    states: Vec<(String, String)>,
    alice: Enrollment,
    bob: Enrollment,
    other: Enrollment,
    /// alice's code whose acceptance was acknowledged.
    alice_used_code: String,
    t: u64,
}

/// Where a case's daemon listens and as whom it runs.
struct Runner {
    /// Runs as uid 65534 (else root).
    as_nobody: bool,
    socket: PathBuf,
    config: PathBuf,
}

/// Checks a daemon that started on a damaged store: all data there, the
/// used code refused, nullok letting no enrolled user in. Returns the
/// problems.
fn check_intact(env: &TestEnv, runner: &Runner, expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    match states(&runner.socket) {
        Ok(states) if states == expected.states => {}
        Ok(states) => {
            let missing: Vec<&(String, String)> = expected
                .states
                .iter()
                .filter(|s| !states.contains(s))
                .collect();
            problems.push(format!(
                "list differs: {} users listed of {}; missing or changed: {:?}",
                states.len(),
                expected.states.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        Err(e) => problems.push(e),
    }
    let replay = call(
        &runner.socket,
        &Request::Verify {
            user: "alice".into(),
            code: SecretText::from(expected.alice_used_code.as_str()),
            service: "store-damage".into(),
            rhost: String::new(),
            ruid: None,
        },
    );
    match replay {
        Ok(Response::Verified {
            outcome: VerifyOutcome::Replayed,
        }) => {}
        Ok(Response::Verified {
            outcome: VerifyOutcome::Accepted,
        }) => {
            problems.push("ALICE'S USED CODE WAS ACCEPTED AGAIN (an accepted step was lost)".into())
        }
        other => problems.push(format!("alice's used code: {other:?}")),
    }
    let nullok = nullok_service(env, &runner.socket);
    for (user, enrollment) in [
        ("alice", &expected.alice),
        ("bob", &expected.bob),
        (expected.other.user.as_str(), &expected.other),
    ] {
        let login = nullok.login(
            OsStr::new(user),
            &enrollment.wrong_code(expected.t),
            "192.0.2.1",
            None,
        );
        if login.outcome == PamOutcome::Success {
            problems.push(format!(
                "NULLOK LETS {user} IN with a wrong code (the daemon lost the user)"
            ));
        }
    }
    problems
}

/// `nullok`, trusting root and uid 65534 as the daemon.
fn nullok_service(env: &TestEnv, socket: &Path) -> otpd_tests::pam::PamService {
    env.pam_stack(&format!(
        "auth [success=done ignore=ignore default=die] {} socket={} nullok daemon_user=nobody\n\
         auth required {}\n",
        programs::pam_module().display(),
        socket.display(),
        programs::find_pam_module("pam_permit.so").display()
    ))
}

/// One way to damage the store: its name, whether the daemon runs as uid
/// 65534, and the damage (returns the paths a refusal should name).
struct Case {
    name: &'static str,
    as_nobody: bool,
    damage: Damage,
}

/// Damages the store; returns the paths a refusal should name.
type Damage = fn(&Paths, &mut Rng) -> Vec<PathBuf>;

struct Paths {
    state_dir: PathBuf,
    key_file: PathBuf,
    /// This host's anchor directory (`[store] anchor_dir`, by default
    /// beside the state dir).
    anchor_dir: PathBuf,
    /// A copy of the state dir taken before alice's code was used.
    older_state: PathBuf,
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Writes `bytes` at `offset` of `path`.
fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for damage");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(bytes).expect("write damage");
    file.sync_all().expect("sync damage");
}

fn flip_byte(path: &Path, offset: u64) {
    let bytes = std::fs::read(path).expect("read for damage");
    let offset = offset.min(bytes.len() as u64 - 1);
    overwrite(path, offset, &[bytes[offset as usize] ^ 0xff]);
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "undamaged (control)",
            as_nobody: false,
            damage: |p, _| vec![p.state_dir.clone()],
        },
        Case {
            name: "undamaged, daemon uid 65534 (control)",
            as_nobody: true,
            damage: |p, _| vec![p.state_dir.clone()],
        },
        Case {
            name: "every store file chmod 000",
            as_nobody: true,
            damage: |p, _| {
                let files = store_files(&p.state_dir);
                files.iter().for_each(|f| set_mode(f, 0o000));
                files
            },
        },
        Case {
            name: "every store file owned by root, 0600",
            as_nobody: true,
            damage: |p, _| {
                let files = store_files(&p.state_dir);
                for f in &files {
                    chown(f, Some(0), Some(0)).expect("chown");
                    set_mode(f, 0o600);
                }
                files
            },
        },
        Case {
            name: "the store's directory chmod 000",
            as_nobody: true,
            damage: |p, _| {
                let dir = largest_file(&p.state_dir)
                    .parent()
                    .expect("a parent")
                    .to_path_buf();
                set_mode(&dir, 0o000);
                vec![dir]
            },
        },
        Case {
            name: "largest file replaced by a directory",
            as_nobody: false,
            damage: |p, _| {
                let target = largest_file(&p.state_dir);
                std::fs::remove_file(&target).expect("remove");
                std::fs::create_dir(&target).expect("mkdir");
                vec![target]
            },
        },
        Case {
            name: "largest file truncated to 0 bytes",
            as_nobody: false,
            damage: |p, _| {
                let target = largest_file(&p.state_dir);
                std::fs::File::options()
                    .write(true)
                    .open(&target)
                    .and_then(|f| f.set_len(0))
                    .expect("truncate");
                vec![target]
            },
        },
        Case {
            name: "largest file truncated to half",
            as_nobody: false,
            damage: |p, _| {
                let target = largest_file(&p.state_dir);
                let len = std::fs::metadata(&target).expect("stat").len();
                std::fs::File::options()
                    .write(true)
                    .open(&target)
                    .and_then(|f| f.set_len(len / 2))
                    .expect("truncate");
                vec![target]
            },
        },
        Case {
            name: "largest file overwritten with zeros",
            as_nobody: false,
            damage: |p, _| {
                let target = largest_file(&p.state_dir);
                let len = std::fs::metadata(&target).expect("stat").len();
                overwrite(&target, 0, &vec![0u8; len as usize]);
                vec![target]
            },
        },
        Case {
            name: "4 KiB of random bytes in the middle of the largest file",
            as_nobody: false,
            damage: |p, rng| {
                let target = largest_file(&p.state_dir);
                let len = std::fs::metadata(&target).expect("stat").len();
                let size = 4096.min(len / 2);
                let junk: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
                overwrite(&target, len / 2 - size / 2, &junk);
                vec![target]
            },
        },
        Case {
            name: "one byte flipped in the middle of the largest file",
            as_nobody: false,
            damage: |p, _| {
                let target = largest_file(&p.state_dir);
                let len = std::fs::metadata(&target).expect("stat").len();
                flip_byte(&target, len / 2);
                vec![target]
            },
        },
        Case {
            name: "one byte flipped in alice's latest record",
            as_nobody: false,
            damage: |p, _| {
                // The user name is the record's key: the record's value is
                // near its last occurrence (the latest version). Without
                // one, the middle of the file.
                let target = largest_file(&p.state_dir);
                let bytes = std::fs::read(&target).expect("read");
                let at = bytes
                    .windows(5)
                    .rposition(|w| w == b"alice")
                    .map(|i| i as u64 + 5 + 12)
                    .unwrap_or(bytes.len() as u64 / 2);
                println!(
                    "  (flipping byte {at} of {} in {})",
                    bytes.len(),
                    target.display()
                );
                flip_byte(&target, at);
                vec![target]
            },
        },
        Case {
            name: "key file removed, store kept",
            as_nobody: false,
            damage: |p, _| {
                std::fs::remove_file(&p.key_file).expect("remove the key");
                vec![p.key_file.clone()]
            },
        },
        Case {
            name: "store directory removed, watermark and key file kept",
            as_nobody: false,
            damage: |p, _| {
                let store = p.state_dir.join("store");
                std::fs::remove_dir_all(&store).expect("remove the store");
                vec![store, p.state_dir.join("store.watermark")]
            },
        },
        Case {
            name: "store removed (state_dir emptied), key file kept",
            as_nobody: false,
            damage: |p, _| empty_state_dir(p),
        },
        Case {
            name: "an older copy of the state dir put back (store and watermark)",
            as_nobody: false,
            damage: |p, _| {
                std::fs::remove_dir_all(&p.state_dir).expect("remove the state dir");
                copy_tree(&p.older_state, &p.state_dir);
                vec![p.state_dir.clone(), p.anchor_dir.clone()]
            },
        },
        Case {
            name: "state_dir emptied and the anchor removed, key file kept",
            as_nobody: false,
            damage: |p, _| {
                std::fs::remove_dir_all(&p.anchor_dir).expect("remove the anchor");
                empty_state_dir(p)
            },
        },
    ]
}

/// Removes everything in the state dir; returns what a refusal may name.
fn empty_state_dir(p: &Paths) -> Vec<PathBuf> {
    let mut removed = vec![p.state_dir.clone(), p.anchor_dir.clone()];
    for entry in std::fs::read_dir(&p.state_dir).expect("read").flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove a dir");
        } else {
            std::fs::remove_file(&path).expect("remove a file");
        }
        removed.push(path);
    }
    removed.push(p.key_file.clone());
    removed
}

#[test]
fn a_damaged_store_is_refused_by_name_or_read_intact_never_started_empty() {
    if !require(
        "store_damage",
        &[
            Program::Pamtester,
            Program::PamWrapper,
            Program::Oathtool,
            Program::Setpriv,
        ],
    ) {
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "store_damage switches uids: run as root");
    let seed = std::env::var("OTPD_DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| unix_now() ^ u64::from(std::process::id()));
    println!("store damage: seed {seed} (repeat with OTPD_DAMAGE_SEED={seed})");
    let mut rng = Rng(seed);

    let mut env = TestEnv::without_daemon("storedamage", &Limits::default());
    let key_file = env.key_file.clone();
    env.spawn_daemon();
    let t = unix_now();
    let period = ["--period", PERIOD];
    let alice = env.enroll_active("alice", &period, t);
    let bob = env.enroll_active(
        "bob",
        &["--period", PERIOD, "--algorithm", "SHA256", "--digits", "8"],
        t,
    );
    env.enroll("carl", &period);
    let mut other = None;
    for i in 0..OTHER_USERS {
        other = Some(env.enroll_active(&format!("user{i:02}"), &period, t));
    }
    let other = other.expect("OTHER_USERS > 0");
    // The state dir as a backup taken now would hold it: before alice's
    // code below is used.
    let status = env.kill_daemon(libc::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}\n{}", env.log());
    let older_state = env.dir.join("older-state");
    copy_tree(&env.state_dir, &older_state);
    env.spawn_daemon();
    let alice_used_code = alice.code_at(t + 300);
    env.otpd_expect(&["verify", "alice", &alice_used_code], 0);
    let expected = Expected {
        states: states(&env.socket).expect("list the undamaged store"),
        alice,
        bob,
        other,
        alice_used_code,
        t,
    };
    let status = env.kill_daemon(libc::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}\n{}", env.log());
    assert!(
        key_file.exists(),
        "no key file at {} after the first start",
        key_file.display()
    );

    let pristine = env.dir.join("pristine");
    let anchor_dir = statedir::anchor_dir(&env);
    assert!(
        anchor_dir.join("store.anchor").exists(),
        "the default anchor beside the state dir was not made"
    );
    copy_tree(&env.state_dir, &pristine.join("state"));
    copy_tree(&anchor_dir, &pristine.join("state-anchor"));
    copy_tree(&key_file, &pristine.join("otpd.key"));
    println!(
        "the store: {}",
        store_files(&env.state_dir)
            .iter()
            .map(|f| format!(
                "{} ({} bytes)",
                f.strip_prefix(&env.state_dir).unwrap_or(f).display(),
                std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The daemon as uid 65534: its own socket dir and config, the same
    // state dir and key file (chowned to it per case).
    let nobody_dir = env.dir.join("nobody-run");
    std::fs::create_dir(&nobody_dir).expect("create the run dir of uid 65534");
    chown(&nobody_dir, Some(NOBODY_UID), Some(NOBODY_UID)).expect("chown the run dir");
    let nobody_config = env.dir.join("otpd-nobody.toml");
    let config_text = std::fs::read_to_string(&env.config).expect("read the config");
    let socket_line = format!("socket = \"{}\"", env.socket.display());
    assert!(config_text.contains(&socket_line), "{config_text}");
    std::fs::write(
        &nobody_config,
        config_text.replace(
            &socket_line,
            &format!("socket = \"{}\"", nobody_dir.join("otpd.sock").display()),
        ),
    )
    .expect("write the config of uid 65534");
    let otpd_for_nobody = env.copy_for_nobody(&programs::otpd_binary(), "otpd", 0o755);

    let paths = Paths {
        state_dir: env.state_dir.clone(),
        key_file: key_file.clone(),
        anchor_dir: anchor_dir.clone(),
        older_state,
    };
    let mut table: Vec<(String, String, String, bool)> = Vec::new();
    for (n, case) in cases().into_iter().enumerate() {
        // From the pristine copy.
        let _ = std::fs::remove_dir_all(&env.state_dir);
        copy_tree(&pristine.join("state"), &env.state_dir);
        let _ = std::fs::remove_dir_all(&anchor_dir);
        copy_tree(&pristine.join("state-anchor"), &anchor_dir);
        let _ = std::fs::remove_file(&key_file);
        copy_tree(&pristine.join("otpd.key"), &key_file);
        let runner = if case.as_nobody {
            chown_tree(&env.state_dir, NOBODY_UID);
            // The anchor is the daemon's too (otpd.service's second
            // StateDirectory).
            chown_tree(&anchor_dir, NOBODY_UID);
            chown(&key_file, Some(NOBODY_UID), Some(NOBODY_UID)).expect("chown the key");
            Runner {
                as_nobody: true,
                socket: nobody_dir.join("otpd.sock"),
                config: nobody_config.clone(),
            }
        } else {
            Runner {
                as_nobody: false,
                socket: env.socket.clone(),
                config: env.config.clone(),
            }
        };
        println!("case {n}: {}", case.name);
        let damaged = (case.damage)(&paths, &mut rng);

        let mut cmd = if runner.as_nobody {
            let mut cmd = otpd_tests::process::as_nobody(&otpd_for_nobody);
            cmd.arg("--config").arg(&runner.config).arg("serve");
            cmd
        } else {
            let mut cmd = Command::new(programs::otpd_binary());
            cmd.arg("--config").arg(&runner.config).arg("serve");
            cmd
        };
        // At trace, as every test daemon ([`TestEnv::serve_command`]), and
        // its log read by the env's secrets check.
        cmd.env("RUST_LOG", otpd_tests::campaign::daemon_log_filter());
        let log = env.dir.join(format!("case-{n}.log"));
        env.scan_also(&log);
        let who = if runner.as_nobody { "65534" } else { "root" };
        let (outcome, detail, ok) = match try_start(cmd, &runner.socket, &log) {
            Start::Refused { status, message } => {
                // The damaged path, or the directory holding it when that
                // is inside the state dir (the test dir holds every path).
                let named = damaged.iter().find(|path| {
                    message.contains(&*path.to_string_lossy())
                        || path.parent().is_some_and(|dir| {
                            dir.starts_with(&paths.state_dir)
                                && message.contains(&*dir.to_string_lossy())
                        })
                });
                match named {
                    Some(_) => (
                        "refused with message".to_owned(),
                        format!("{status}: {message}"),
                        !case.name.contains("control"),
                    ),
                    None => (
                        "REFUSED, DAMAGE NOT NAMED".to_owned(),
                        format!("{status}: {message:?}"),
                        false,
                    ),
                }
            }
            Start::Hung => (
                "HUNG".to_owned(),
                format!(
                    "neither exited nor answered within {} s",
                    START_TIMEOUT.as_secs()
                ),
                false,
            ),
            Start::Started(mut daemon) => {
                TestEnv::assert_logs_at_trace(&log, 0, &format!("case {n}: {}", case.name));
                let problems = check_intact(&env, &runner, &expected);
                if case.name.contains("control") {
                    // The nullok check proves something only if nullok
                    // does let a user without a token in.
                    let ghost = nullok_service(&env, &runner.socket).login(
                        OsStr::new("ghost"),
                        "123456",
                        "192.0.2.1",
                        None,
                    );
                    assert_eq!(
                        ghost.outcome,
                        PamOutcome::Success,
                        "nullok did not let a user without a token in: the check is void\n{}",
                        ghost.output
                    );
                }
                let _ = daemon.stop(libc::SIGTERM, Duration::from_secs(10));
                let warned_new_store = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.contains("WARN") && l.contains("new, empty store"));
                if problems.is_empty() {
                    ("started intact".to_owned(), String::new(), true)
                } else if case.name.contains("anchor removed") && warned_new_store {
                    // Documented limit (docs/security.md): with the store,
                    // its watermark and the anchor all gone, nothing on the
                    // host says a store existed; this looks like a first
                    // start. The daemon must at least say what it did.
                    (
                        "started a new store, with the warning (documented limit)".to_owned(),
                        String::new(),
                        true,
                    )
                } else {
                    (
                        "STARTED DAMAGED".to_owned(),
                        {
                            let warnings: Vec<String> = std::fs::read_to_string(&log)
                                .unwrap_or_default()
                                .lines()
                                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                                .take(3)
                                .map(str::to_owned)
                                .collect();
                            if warnings.is_empty() {
                                format!("{} (no warning in the log)", problems.join("; "))
                            } else {
                                format!("{}; log: {}", problems.join("; "), warnings.join(" | "))
                            }
                        },
                        false,
                    )
                }
            }
        };
        println!("  -> {outcome} {detail}");
        table.push((case.name.to_owned(), who.to_owned(), outcome, ok));
        if !detail.is_empty() {
            table
                .last_mut()
                .expect("just pushed")
                .2
                .push_str(&format!(": {detail}"));
        }
    }
    // Leave the store as the env's final checks expect it.
    let _ = std::fs::remove_dir_all(&env.state_dir);
    copy_tree(&pristine.join("state"), &env.state_dir);
    let _ = std::fs::remove_dir_all(&anchor_dir);
    copy_tree(&pristine.join("state-anchor"), &anchor_dir);
    let _ = std::fs::remove_file(&key_file);
    copy_tree(&pristine.join("otpd.key"), &key_file);

    println!("---- store damage (seed {seed}) ----");
    println!("{:<58} {:<6} outcome", "case", "uid");
    for (name, who, outcome, ok) in &table {
        println!(
            "{}{:<56} {:<6} {outcome}",
            if *ok { "  " } else { "! " },
            name,
            who
        );
    }
    println!("---- end ----");
    let failed: Vec<String> = table
        .iter()
        .filter(|(_, _, _, ok)| !ok)
        .map(|(name, who, outcome, _)| format!("{name} (uid {who}): {outcome}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases neither refused with a message naming the damage nor started intact:\n{}",
        failed.len(),
        table.len(),
        failed.join("\n")
    );
}
