//! Running child processes with a deadline, and sending them signals.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished program left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote on stdout, lossily decoded.
    pub stdout: String,
    /// Everything it wrote on stderr, lossily decoded.
    pub stderr: String,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// When stderr was read: (time since spawn, bytes of stderr read by
    /// then), one entry per read, so that a test can tell when a line
    /// came ([`Output::stderr_at`]). Empty when not recorded.
    pub stderr_times: Vec<(Duration, usize)>,
}

impl Output {
    /// Everything it printed: stdout, then stderr.
    pub fn printed(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Its `otpd: …` lines ([`otpd_lines`]).
    pub fn otpd_lines(&self) -> String {
        otpd_lines(&self.printed())
    }

    /// When (time since spawn) the program had written the first `marker`
    /// on stderr, as far as its reader saw; `None` when it never did.
    pub fn stderr_at(&self, marker: &str) -> Option<Duration> {
        let end = self.stderr.find(marker)? + marker.len();
        self.stderr_times
            .iter()
            .find(|(_, read)| *read >= end)
            .map(|(at, _)| *at)
    }

    /// The exit code; panics if the program died of a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} after {} ms\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status,
            self.elapsed.as_millis(),
            self.stdout,
            self.stderr
        )
    }
}

/// The lines of `text` that start with `otpd:`, joined by newlines: the
/// messages `otpd` prints when a command, or `otpd serve`, fails.
pub fn otpd_lines(text: &str) -> String {
    text.lines()
        .filter(|line| line.starts_with("otpd:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A spawned program whose output is being collected.
pub struct Running {
    child: Child,
    started: Instant,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Timed>>,
    what: String,
}

impl Running {
    /// Spawns `cmd` with piped stdin/stdout/stderr.
    pub fn spawn(mut cmd: Command) -> Running {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let stdout = child.stdout.take().map(collect);
        let stderr = child.stderr.take().map(|pipe| collect_timed(pipe, started));
        Running {
            child,
            started,
            stdout,
            stderr,
            what,
        }
    }

    /// Writes `input` to stdin and keeps it open for more.
    pub fn write(&mut self, input: &[u8]) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(input);
            let _ = stdin.flush();
        }
    }

    /// Writes `input` to stdin and closes it.
    pub fn feed(&mut self, input: &[u8]) {
        if let Some(mut stdin) = self.child.stdin.take() {
            // The program may exit without reading (pamtester with nullok):
            // a broken pipe here is not an error of the test.
            let _ = stdin.write_all(input);
        }
    }

    /// Waits for the exit, killing the program after `deadline` (and failing).
    pub fn wait(mut self, deadline: Duration) -> Output {
        drop(self.child.stdin.take());
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not finish within {} s",
                    self.what,
                    deadline.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            h.map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
                .unwrap_or_default()
        };
        let (stderr, stderr_times) = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Output {
            status,
            stdout: text(self.stdout.take()),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
            stderr_times,
        }
    }
}

/// What a pipe carried, and when ([`Output::stderr_times`]).
type Timed = (Vec<u8>, Vec<(Duration, usize)>);

/// Reads `pipe` to its end, noting when each read returned.
fn collect_timed(mut pipe: impl Read + Send + 'static, started: Instant) -> JoinHandle<Timed> {
    std::thread::spawn(move || {
        let (mut buf, mut times) = (Vec::new(), Vec::new());
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    times.push((started.elapsed(), buf.len()));
                }
            }
        }
        (buf, times)
    })
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` to completion with `input` on stdin, within `deadline`.
pub fn run(cmd: Command, input: &[u8], deadline: Duration) -> Output {
    let mut running = Running::spawn(cmd);
    running.feed(input);
    running.wait(deadline)
}

/// Sends `signal` (a `libc::SIG*` number) to process `pid`; panics on failure.
pub fn send_signal(pid: u32, signal: i32) {
    try_signal(pid, signal).unwrap_or_else(|e| panic!("kill({pid}, {signal}): {e}"));
}

/// Sends `signal` to process `pid`.
pub fn try_signal(pid: u32, signal: i32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).expect("pid fits in pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A `Command` that runs `program` as uid/gid 65534 (`nobody`) with no
/// supplementary groups, through util-linux `setpriv`.
pub fn as_nobody(program: &std::path::Path) -> Command {
    let mut cmd = Command::new(crate::Program::Setpriv.path());
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program);
    cmd
}

/// The uid the unprivileged tests use.
pub const NOBODY_UID: u32 = 65534;

/// A background child (an impostor daemon, an strace) that is killed and
/// reaped when the guard is dropped, also when the test panics.
pub struct ChildGuard {
    /// The child.
    pub child: Child,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout/stderr sent to `log`.
    pub fn spawn(mut cmd: Command, log: &std::path::Path) -> ChildGuard {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log fd"))
            .stderr(file);
        ChildGuard {
            child: cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` and waits up to `deadline` for the exit.
    pub fn stop(&mut self, signal: i32, deadline: Duration) -> ExitStatus {
        send_signal(self.pid(), signal);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "pid {} did not exit within {} s of signal {signal}",
                self.pid(),
                deadline.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
