//! A syslog sink for machines without one (containers, CI): libpam and the
//! modules log through syslog(3), and with no /dev/log glibc falls back to
//! writing every line to /dev/console, whose speed has nothing to do with
//! the module. `bench/run.sh` starts the benchmark in a private mount
//! namespace with an overlay on /dev, so that this socket never appears on
//! the host. The lines are read and counted, as journald would receive them.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// syslog(3)'s socket.
pub const DEV_LOG: &str = "/dev/log";

/// Lines received so far.
#[derive(Clone, Default)]
pub struct Sink {
    lines: Arc<AtomicU64>,
}

impl Sink {
    /// Binds /dev/log (it must not exist) and reads it in a thread.
    pub fn start() -> Result<Sink, String> {
        let socket = UnixDatagram::bind(DEV_LOG).map_err(|e| {
            format!("cannot serve {DEV_LOG} ({e}); run the benchmark through bench/run.sh")
        })?;
        let sink = Sink::default();
        let lines = Arc::clone(&sink.lines);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while socket.recv(&mut buf).is_ok() {
                lines.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(sink)
    }

    /// Lines received so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }
}
