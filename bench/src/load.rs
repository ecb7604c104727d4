//! The load: N threads logging in as fast as they can, each login a user
//! whose code of the current step has not been used yet, and the race of N
//! threads with the same code.

use crate::libpam::{self, PamHandle, PAM_SUCCESS};
use crate::procfs;
use crate::setup::{ask, unix_now, World, PERIOD};
use crate::stats::{summarise, Latencies};
use crate::syslog::Sink;
use otpd_proto::{Request, Response, SecretText, VerifyOutcome};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// What a login goes through.
#[derive(Clone)]
pub enum Target {
    /// A service in the world's `pam.d`, through libpam.
    Pam {
        /// The service file's name.
        service: CString,
        /// The module asks for the code (all but pam_permit): a login
        /// that succeeds without a prompt is counted as a failure.
        prompts: bool,
    },
    /// otpd's socket without libpam: one `Verify` request per login.
    Socket {
        /// The daemon's socket.
        path: PathBuf,
    },
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// Concurrent logins.
    pub threads: usize,
    /// Stop after this many logins …
    pub max_logins: usize,
    /// … or after this long.
    pub max_time: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Logins tried.
    pub logins: usize,
    /// Valid codes refused, by libpam's or the daemon's name for the result.
    pub failures: BTreeMap<String, usize>,
    /// From the first login's start to the last one's end.
    pub wall: Duration,
    /// Latency of one whole login.
    pub latencies: Latencies,
    /// Mean latency.
    pub mean: Duration,
    /// CPU of the benchmark process (the PAM modules run in it).
    pub cpu_client: Duration,
    /// CPU of the daemon, when there is one.
    pub cpu_daemon: Duration,
    /// Every user's code of this step was used before the limits were hit.
    pub exhausted: bool,
    /// Lines the benchmark's syslog sink received during the run.
    pub syslog_lines: Option<u64>,
}

impl RunResult {
    /// Failed valid logins.
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    /// Accepted logins per second (a refused login is not throughput).
    pub fn rate(&self) -> f64 {
        if self.wall.is_zero() {
            0.0
        } else {
            (self.logins - self.failed()) as f64 / self.wall.as_secs_f64()
        }
    }

    /// CPU (client + daemon) per login, in microseconds.
    pub fn cpu_per_login_us(&self) -> f64 {
        if self.logins == 0 {
            return 0.0;
        }
        (self.cpu_client + self.cpu_daemon).as_secs_f64() * 1e6 / self.logins as f64
    }
}

/// Takes a user whose code of the current step is unused (marking it used)
/// and returns it with the time its code is computed for; `None` when every
/// user has used this step's code.
pub fn take_user(last_step: &[AtomicU64], cursor: &AtomicUsize) -> Option<(usize, u64)> {
    let n = last_step.len();
    for _ in 0..n {
        let i = cursor.fetch_add(1, Ordering::Relaxed) % n;
        let now = unix_now();
        let step = now / PERIOD;
        let previous = last_step[i].load(Ordering::Relaxed);
        if previous < step
            && last_step[i]
                .compare_exchange(previous, step, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some((i, now));
        }
    }
    None
}

/// Users whose code of the current step is unused.
pub fn available(last_step: &[AtomicU64]) -> usize {
    let step = unix_now() / PERIOD;
    last_step
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) < step)
        .count()
}

/// Waits for the next time step when fewer than `needed` users can log in
/// now; says so.
pub fn ensure_available(last_step: &[AtomicU64], needed: usize) {
    let have = available(last_step);
    if have >= needed.min(last_step.len()) {
        return;
    }
    let now = unix_now();
    let wait = PERIOD - now % PERIOD;
    println!(
        "  (only {have} users have an unused code in this step: waiting {wait} s for the next)"
    );
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(50));
}

/// What a PAM login sends last, without libpam: a `Verify` of a local
/// login by root.
fn verify_request(user: &str, code: &str) -> Request {
    Request::Verify {
        user: user.to_owned(),
        code: SecretText::from(code),
        service: "bench".into(),
        rhost: String::new(),
        ruid: None,
    }
}

/// One login of user `i` with the code of `now`. `Ok(())` when accepted,
/// else the name of the result.
fn one_login(world: &World, target: &Target, i: usize, now: u64) -> Result<(), String> {
    let user = &world.users[i];
    let code = user.code_at(now);
    match target {
        Target::Pam { service, prompts } => {
            let mut handle = PamHandle::start(&world.confdir, service, &user.name, &code)
                .map_err(|rc| format!("pam_start: {}", libpam::strerror(rc)))?;
            let rc = handle.authenticate();
            if rc != PAM_SUCCESS {
                Err(libpam::strerror(rc))
            } else if *prompts && handle.prompts() != 1 {
                Err(format!("{} prompts", handle.prompts()))
            } else {
                Ok(())
            }
        }
        Target::Socket { path } => match ask(path, &verify_request(&user.name_str, &code)) {
            Ok(Response::Verified {
                outcome: VerifyOutcome::Accepted,
            }) => Ok(()),
            Ok(Response::Verified { outcome }) => Err(format!("{outcome:?}")),
            Ok(Response::Error { code, .. }) => Err(format!("error {code:?}")),
            Ok(other) => Err(format!("unexpected {other:?}")),
            Err(e) => Err(e),
        },
    }
}

/// Runs `spec.threads` threads of logins until a limit is hit.
pub fn run(
    world: &World,
    target: &Target,
    last_step: &[AtomicU64],
    spec: RunSpec,
    daemon_pid: Option<&str>,
    sink: Option<&Sink>,
) -> RunResult {
    let lines_before = sink.map(Sink::lines);
    let cursor = AtomicUsize::new(0);
    let started_logins = AtomicUsize::new(0);
    let exhausted = AtomicBool::new(false);
    let failures: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let samples: Mutex<Vec<Duration>> = Mutex::new(Vec::with_capacity(spec.max_logins));
    let cpu_client_before = procfs::own_cpu_time();
    let cpu_daemon_before = daemon_pid.map(procfs::cpu_time).unwrap_or_default();
    let started = Instant::now();
    let deadline = started + spec.max_time;
    std::thread::scope(|scope| {
        for _ in 0..spec.threads {
            scope.spawn(|| {
                let mut mine = Vec::with_capacity(spec.max_logins / spec.threads + 1);
                let mut my_failures: BTreeMap<String, usize> = BTreeMap::new();
                loop {
                    if Instant::now() >= deadline
                        || started_logins.fetch_add(1, Ordering::Relaxed) >= spec.max_logins
                    {
                        break;
                    }
                    let Some((i, now)) = take_user(last_step, &cursor) else {
                        exhausted.store(true, Ordering::Relaxed);
                        break;
                    };
                    let t0 = Instant::now();
                    let result = one_login(world, target, i, now);
                    mine.push(t0.elapsed());
                    if let Err(name) = result {
                        *my_failures.entry(name).or_default() += 1;
                    }
                }
                if let Ok(mut all) = samples.lock() {
                    all.extend(mine);
                }
                if let Ok(mut all) = failures.lock() {
                    for (k, v) in my_failures {
                        *all.entry(k).or_default() += v;
                    }
                }
            });
        }
    });
    let wall = started.elapsed();
    let cpu_client = procfs::own_cpu_time().saturating_sub(cpu_client_before);
    let cpu_daemon = daemon_pid
        .map(|pid| procfs::cpu_time(pid).saturating_sub(cpu_daemon_before))
        .unwrap_or_default();
    let mut samples = samples.into_inner().unwrap_or_default();
    let logins = samples.len();
    let mean = if logins == 0 {
        Duration::ZERO
    } else {
        samples.iter().sum::<Duration>() / logins as u32
    };
    RunResult {
        logins,
        failures: failures.into_inner().unwrap_or_default(),
        wall,
        latencies: summarise(&mut samples),
        mean,
        cpu_client,
        cpu_daemon,
        exhausted: exhausted.load(Ordering::Relaxed),
        // The sink thread may still be reading the last lines.
        syslog_lines: sink.zip(lines_before).map(|(s, before)| {
            std::thread::sleep(Duration::from_millis(20));
            s.lines() - before
        }),
    }
}

/// One round of the race: a fresh user's one valid code, submitted by
/// `threads` threads released at the same instant. Returns how many were
/// accepted.
pub fn race_round(
    world: &World,
    target: &Target,
    last_step: &[AtomicU64],
    threads: usize,
) -> usize {
    // Far enough from a step boundary that every thread checks the same code
    // in the same step.
    let into_step = unix_now() % PERIOD;
    if into_step > PERIOD - 4 {
        std::thread::sleep(Duration::from_secs(PERIOD - into_step + 1));
    }
    ensure_available(last_step, 1);
    let cursor = AtomicUsize::new(0);
    let Some((i, now)) = take_user(last_step, &cursor) else {
        return 0;
    };
    let user = &world.users[i];
    let code = user.code_at(now);
    let barrier = Barrier::new(threads);
    let accepted = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| match target {
                Target::Pam { service, .. } => {
                    let handle = PamHandle::start(&world.confdir, service, &user.name, &code);
                    barrier.wait();
                    if let Ok(mut handle) = handle {
                        if handle.authenticate() == PAM_SUCCESS {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Target::Socket { path } => {
                    let request = verify_request(&user.name_str, &code);
                    barrier.wait();
                    if let Ok(Response::Verified {
                        outcome: VerifyOutcome::Accepted,
                    }) = ask(path, &request)
                    {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    accepted.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_taken_once_per_step_and_then_none_is_left() {
        let steps: Vec<AtomicU64> = (0..5).map(|_| AtomicU64::new(0)).collect();
        let cursor = AtomicUsize::new(0);
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(take_user(&steps, &cursor).expect("a user").0);
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(take_user(&steps, &cursor), None);
        assert_eq!(available(&steps), 0);
    }

    #[test]
    fn a_user_whose_code_of_this_step_was_used_is_skipped() {
        let step = unix_now() / PERIOD;
        let steps: Vec<AtomicU64> = [step, 0, step].into_iter().map(AtomicU64::new).collect();
        assert_eq!(available(&steps), 1);
        let cursor = AtomicUsize::new(0);
        assert_eq!(take_user(&steps, &cursor).map(|(i, _)| i), Some(1));
        assert_eq!(take_user(&steps, &cursor), None);
    }
}
