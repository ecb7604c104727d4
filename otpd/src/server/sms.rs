//! The text-message sender: the configured program, run once per text.

use crate::config::{RunAs, SmsConfig};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of the sender's stderr kept for the log line.
const SENDER_STDERR_MAX: u64 = 4096;

/// The sender's whole environment: nothing of the daemon's (its
/// `CREDENTIALS_DIRECTORY`, `NOTIFY_SOCKET`, `RUST_LOG`, whatever the
/// service manager or an admin's shell put there) reaches it.
const SENDER_ENV: [(&str, &str); 2] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
];

/// Looks up `[sms] user` (`name`): its uid and primary gid. Root is
/// refused: the sender handles untrusted network replies and gets every
/// code it texts, and needs no privilege to do that.
pub fn resolve_user(name: &str) -> Result<RunAs, String> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("[sms] user = {name:?}: cannot look it up: {e}"))?
        .ok_or_else(|| format!("[sms] user = {name:?}: no such user"))?;
    if user.uid.is_root() {
        return Err(format!(
            "[sms] user = {name:?}: the sender may not run as root (uid 0); name an \
             unprivileged user of its own"
        ));
    }
    Ok(RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

/// At the daemon's start, before any thread (capabilities are per thread,
/// and new threads copy them): drops the process's ambient capabilities,
/// so that no program it runs inherits the CAP_SETUID and CAP_SETGID that
/// the drop-in `sms-user.conf` gives the daemon (setuid between two
/// non-root uids keeps capabilities, and exec would hand ambient ones on);
/// then resolves `[sms] user`, refusing a user other than the daemon's
/// own when the daemon cannot switch to it.
pub fn prepare(sms: &mut SmsConfig) -> Result<(), String> {
    // Fails only on kernels without ambient capabilities (before Linux
    // 4.3), where there is nothing to clear.
    let _ = rustix::thread::clear_ambient_capability_set();
    let Some(name) = &sms.user else {
        return Ok(());
    };
    let ids = resolve_user(name)?;
    if ids.uid != nix::unistd::geteuid().as_raw() {
        use rustix::thread::CapabilitySet;
        let needed = CapabilitySet::SETUID | CapabilitySet::SETGID;
        let effective = rustix::thread::capabilities(None)
            .map(|sets| sets.effective)
            .unwrap_or(CapabilitySet::empty());
        if !effective.contains(needed) {
            return Err(format!(
                "[sms] user = {name:?} (uid {}): starting the sender as another user needs \
                 CAP_SETUID and CAP_SETGID, which the daemon does not have; under systemd \
                 install the drop-in otpd.service.d/sms-user.conf (see otpd.toml(5)), or \
                 leave [sms] user unset",
                ids.uid
            ));
        }
    }
    sms.run_as = Some(ids);
    Ok(())
}

/// Who the sender runs as, in words for `otpd check-config` and the log:
/// "as user NAME (uid U, gid G)", or "as the daemon's own user".
pub fn describe_sender(sms: &SmsConfig) -> Result<String, String> {
    Ok(match (&sms.user, run_as(sms)?) {
        (Some(name), Some(ids)) => {
            format!("as user {name} (uid {}, gid {})", ids.uid, ids.gid)
        }
        _ => "as the daemon's own user".into(),
    })
}

/// `[sms] user`'s identity: the one resolved at start, else looked up now.
fn run_as(sms: &SmsConfig) -> Result<Option<RunAs>, String> {
    match (&sms.user, sms.run_as) {
        (None, _) => Ok(None),
        (Some(_), Some(ids)) => Ok(Some(ids)),
        (Some(name), None) => resolve_user(name).map(Some),
    }
}

/// Runs the sender `command` (`[sms] command`): `COMMAND NUMBER`, no shell, the
/// message on stdin, with only [`SENDER_ENV`] in its environment, in `/`,
/// as `[sms] user` if set (uid, primary gid, no supplementary groups), in
/// a process group of its own that is killed whole after `[sms] timeout`
/// (with anything it started). Its stderr is read on a thread under the
/// same deadline, so a child that keeps the pipe open cannot hold us.
/// `Err` says why it failed (never the message).
pub fn send_text(
    sms: &SmsConfig,
    command: &Path,
    number: &str,
    message: &str,
) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let timeout = Duration::from_secs(sms.timeout);
    let started = Instant::now();
    let mut sender = Command::new(command);
    sender
        .arg(number)
        .env_clear()
        .envs(SENDER_ENV)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(ids) = run_as(sms)? {
        // std sets the gid, drops the supplementary groups, then sets the
        // uid, in the child before exec (CAP_SETGID and CAP_SETUID).
        sender.gid(ids.gid).uid(ids.uid);
    }
    let mut child = sender
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", command.display()))?;
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let kill_group = || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    let (stderr_tx, stderr_rx) = std::sync::mpsc::channel();
    if let Some(pipe) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut text = zeroize::Zeroizing::new(Vec::with_capacity(
                usize::try_from(SENDER_STDERR_MAX).unwrap_or(4096) + 1,
            ));
            let _ = pipe.take(SENDER_STDERR_MAX).read_to_end(&mut text);
            let _ = stderr_tx.send(text);
        });
    }
    if let Some(mut stdin) = child.stdin.take() {
        // A sender that exits without reading is judged by its exit status.
        let _ = stdin.write_all(message.as_bytes());
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                kill_group();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {} s and was killed",
                    command.display(),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill_group();
                return Err(format!("waiting for {}: {e}", command.display()));
            }
        }
    };
    // Whatever it left running has no business outliving it.
    kill_group();
    if status.success() {
        return Ok(());
    }
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(50));
    let stderr = stderr_rx.recv_timeout(left).unwrap_or_default();
    // The sender's words may echo its input in any shape (spaced, cut off):
    // every digit is masked, so no part of a code reaches the log.
    let first_line: String = String::from_utf8_lossy(&stderr)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    Err(format!(
        "{} exited with {status}{}{first_line}",
        command.display(),
        if first_line.is_empty() { "" } else { ": " }
    ))
}
