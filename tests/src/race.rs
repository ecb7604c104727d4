//! Logins raced at one instant: each `pamtester` is started and held at
//! its prompt (the test waits until the kernel shows it blocked reading
//! its stdin). They share a process group. When every one of them waits,
//! the group is stopped (SIGSTOP), the code is written into each one's
//! stdin, and the group is continued with one SIGCONT: they wake together,
//! code in hand, rather than spread over the tens of milliseconds that
//! starting so many processes takes (or the milliseconds that waking each
//! with its own write or signal takes on two cores, as each woken one
//! runs before the next is woken).

use crate::pam::{PamLogin, PamOutcome};
use crate::process::Output;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a login may take to reach its prompt, and to finish.
const LIMIT: Duration = Duration::from_secs(30);

/// A started login whose stdin stays open until its code is typed.
pub struct HeldLogin {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
    what: String,
}

impl HeldLogin {
    /// Starts `cmd` (a pamtester command, [`crate::pam::PamService::command`])
    /// in process group `group` (0: a new one, which it leads).
    fn start_in(mut cmd: Command, group: i32) -> HeldLogin {
        use std::os::unix::process::CommandExt;
        let what = format!("{cmd:?}");
        cmd.process_group(group)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let collect = |pipe: Option<Box<dyn Read + Send>>| {
            pipe.map(|mut pipe| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = pipe.read_to_end(&mut buf);
                    buf
                })
            })
        };
        let stdout = collect(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = collect(child.stderr.take().map(|p| Box::new(p) as _));
        HeldLogin {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            started,
            what,
        }
    }

    /// Types `text` (an answer before the raced one, such as `sms\n`).
    pub fn write(&mut self, text: &[u8]) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(text);
            let _ = stdin.flush();
        }
    }

    /// Whether the program is blocked in `read(0, …)`, waiting for what
    /// is typed (`/proc/PID/syscall`: the call's number, then its first
    /// argument), or has exited.
    fn waiting_for_input(&mut self) -> bool {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return true;
        }
        let syscall = std::fs::read_to_string(format!("/proc/{}/syscall", self.child.id()))
            .unwrap_or_default();
        let mut fields = syscall.split_whitespace();
        fields.next() == Some(&libc::SYS_read.to_string()) && fields.next() == Some("0x0")
    }

    /// Waits until the program waits for input (see above).
    fn wait_at_prompt(&mut self) {
        let since = Instant::now();
        while !self.waiting_for_input() {
            assert!(
                since.elapsed() < LIMIT,
                "{} never waited for input within {} s",
                self.what,
                LIMIT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the program is stopped (state `T` in `/proc/PID/stat`).
    fn wait_stopped(&self) {
        let since = Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state == Some('T') {
                return;
            }
            assert!(
                since.elapsed() < LIMIT,
                "{} did not stop on SIGSTOP (state {state:?})",
                self.what
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Types the last `line` (and Enter), closing stdin.
    fn type_last(&mut self, line: &[u8]) {
        if let Some(mut stdin) = self.stdin.take() {
            // It may have ended already: not an error of the test.
            let _ = stdin.write_all(line);
        }
    }

    /// Waits for the exit and reads the outcome.
    fn finish(mut self) -> PamLogin {
        drop(self.stdin.take());
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not finish within {} s", self.what, LIMIT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            h.map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
                .unwrap_or_default()
        };
        let output = Output {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
            elapsed,
            stderr_times: Vec::new(),
        };
        PamLogin {
            outcome: PamOutcome::from_output(&output),
            output,
        }
    }
}

impl Drop for HeldLogin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // A test that failed between SIGSTOP and SIGCONT: SIGKILL ends
            // a stopped process too.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Logins to race, in one process group of their own.
#[derive(Default)]
pub struct Racers {
    logins: Vec<HeldLogin>,
}

impl Racers {
    /// No logins yet.
    pub fn new() -> Racers {
        Racers::default()
    }

    /// Starts `cmd` (a pamtester command, [`crate::pam::PamService::command`])
    /// in the racers' process group; returns it, to type earlier answers.
    pub fn start(&mut self, cmd: Command) -> &mut HeldLogin {
        let group = self.group().unwrap_or(0);
        self.logins.push(HeldLogin::start_in(cmd, group));
        self.logins.last_mut().expect("just pushed")
    }

    /// The process group: the first login's pid.
    fn group(&self) -> Option<i32> {
        self.logins
            .first()
            .map(|first| i32::try_from(first.child.id()).expect("pid fits in pid_t"))
    }

    /// Waits until every login waits at its prompt, then types `line` into
    /// all of them at once (see the module's doc); returns their outcomes
    /// (in the order they were started) and how long waking them took.
    pub fn type_at_once(mut self, line: &str) -> (Vec<PamLogin>, Duration) {
        let group = self.group().expect("no logins to race");
        for login in &mut self.logins {
            login.wait_at_prompt();
        }
        signal_group(group, libc::SIGSTOP);
        for login in &self.logins {
            login.wait_stopped();
        }
        let input = format!("{line}\n");
        for login in &mut self.logins {
            login.type_last(input.as_bytes());
        }
        let waking = Instant::now();
        signal_group(group, libc::SIGCONT);
        let spread = waking.elapsed();
        let logins = std::mem::take(&mut self.logins);
        (logins.into_iter().map(HeldLogin::finish).collect(), spread)
    }
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: killpg(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::killpg(group, signal) };
    assert_eq!(
        rc,
        0,
        "killpg({group}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}
