//! The text-message sender: the configured program, run once per text.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of the sender's stderr kept for the log line.
const SENDER_STDERR_MAX: u64 = 4096;

/// Runs the sender: `COMMAND NUMBER`, no shell, the message on stdin,
/// in a process group of its own that is killed whole after `timeout`
/// (with anything it started). Its stderr is read on a thread under the
/// same deadline, so a child that keeps the pipe open cannot hold us.
/// `Err` says why it failed (never the message).
pub fn send_text(
    command: &Path,
    number: &str,
    message: &str,
    timeout: Duration,
) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut child = Command::new(command)
        .arg(number)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
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
