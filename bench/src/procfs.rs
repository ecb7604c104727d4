//! CPU time and memory of a process, from /proc (no unsafe needed).

use std::time::Duration;

/// Clock ticks per second of /proc/PID/stat's utime and stime. Linux
/// reports them in USER_HZ, which is 100 on every architecture Debian and
/// Ubuntu build for.
const TICKS_PER_SEC: u64 = 100;

/// utime + stime of `pid` ("self" for this process), all threads.
pub fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    cpu_from_stat(&stat).unwrap_or(Duration::ZERO)
}

/// Parses fields 14 and 15 (utime, stime) of a /proc/PID/stat line. The
/// command name (field 2) may contain spaces and parentheses, so fields are
/// counted after its last ')'.
pub fn cpu_from_stat(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

/// This process's CPU time (user + system, all threads, also those that
/// have ended), in microseconds rather than /proc's 10 ms ticks.
pub fn own_cpu_time() -> Duration {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(usage.user_time()) + tv(usage.system_time())
        }
        Err(_) => cpu_time("self"),
    }
}

/// A `VmHWM:`/`VmRSS:` value of /proc/PID/status in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, field)
}

/// The KiB value of `field` in a /proc/PID/status text.
pub fn status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_name_full_of_spaces_and_parens() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_from_stat(stat), Some(Duration::from_millis(3250)));
        assert_eq!(cpu_from_stat("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\totpd\nVmHWM:\t   12345 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_field(status, "VmHWM"), Some(12345));
        assert_eq!(status_field(status, "VmRSS"), Some(2048));
        assert_eq!(status_field(status, "VmPeak"), None);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = own_cpu_time();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(own_cpu_time() > before);
    }

    #[test]
    fn this_process_has_a_stat_and_memory() {
        assert!(cpu_from_stat(&std::fs::read_to_string("/proc/self/stat").unwrap()).is_some());
        assert!(status_kib("self", "VmRSS").unwrap() > 0);
    }
}
