//! [`Terminal`]: a program run on a pseudo-terminal, as a person at a
//! terminal runs it: its stdin, stdout and stderr are the terminal (so
//! `isatty` is true and what it prints is what the person sees, typed
//! characters echoed by the line discipline included), and the test types
//! lines into it.
//!
//! Written on libc's `openpty` (the crate already depends on libc, and the
//! pty needs only that and a new session for the child): util-linux's
//! `script` would add a second terminal in between.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A program on a pseudo-terminal; killed when dropped if still running.
pub struct Terminal {
    child: Child,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    what: String,
}

impl Terminal {
    /// Starts `cmd` in a new session whose controlling terminal is a new
    /// pseudo-terminal of 120 columns and 50 rows.
    pub fn spawn(mut cmd: Command) -> Terminal {
        use std::os::unix::process::CommandExt;
        let what = format!("{cmd:?}");
        let (mut master_fd, mut slave_fd) = (-1, -1);
        let size = libc::winsize {
            ws_row: 50,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty(3) writes two descriptors into the two ints we
        // pass; the name pointer may be null, the termios pointer is null
        // (defaults) and the winsize pointer points to a live value.
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded: both are open descriptors that nothing
        // else owns.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: between fork and exec the closure calls only setsid(2) and
        // ioctl(2), which are async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // stdin is the terminal by now: make it the controlling one.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what} on a terminal: {e}"));
        // Only the child holds the terminal's other end now: when it (and
        // anything it started) exits, reading the master ends.
        drop(cmd);
        drop(slave);
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let mut master = master.try_clone().expect("dup the master");
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once no process has the terminal open any more.
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        Terminal {
            child,
            master,
            screen,
            reader: Some(reader),
            what,
        }
    }

    /// Everything shown on the terminal so far, CRLF turned into LF.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).replace("\r\n", "\n")
    }

    /// Waits (up to `limit`) until the screen shows `text` after the
    /// first `from` bytes of [`Terminal::screen`]; returns the screen.
    /// Panics with the screen when it does not.
    pub fn expect_after(&self, from: usize, text: &str, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if screen.get(from..).is_some_and(|rest| rest.contains(text)) {
                return screen;
            }
            assert!(
                started.elapsed() < limit,
                "{text:?} did not appear on the terminal of {} within {} s; it shows:\n{screen}",
                self.what,
                limit.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .expect("type on the terminal");
    }

    /// Waits (up to `limit`) for the program to exit; returns its status
    /// and the whole screen.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "{} did not exit within {} s; the terminal shows:\n{}",
                self.what,
                limit.as_secs(),
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.screen())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
