//! `otpd-bench`: logins per second, latency and CPU per login through the
//! real libpam, for pam_otpd.so side by side with pam_google_authenticator,
//! pam_oath and the pam_permit floor, on the same users and machine; otpd's
//! socket alone; and the race of one valid code submitted by N threads at
//! once. It prints figures and asserts no time (docs/performance.md).
//!
//! Run it with `bench/run.sh` (installs the peer modules, builds in release
//! mode, runs as root).

mod libpam;
mod load;
mod nss;
mod postgres;
mod procfs;
mod setup;
mod stats;
mod syslog;

use clap::Parser;
use load::{ensure_available, race_round, run, RunResult, RunSpec, Target};
use postgres::Postgres;
use setup::{system_module, Plan, Programs, World};
use stats::{ms, ratio};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The modules the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Module {
    /// `auth required pam_permit.so`: what libpam itself costs.
    Permit,
    /// pam_otpd.so and the otpd daemon.
    Otpd,
    /// otpd's socket protocol alone, without libpam or the module.
    OtpdSocket,
    /// Debian's pam_google_authenticator.so.
    GoogleAuthenticator,
    /// Debian's pam_oath.so.
    Oath,
}

impl Module {
    fn label(self) -> &'static str {
        match self {
            Module::Permit => "pam_permit (floor)",
            Module::Otpd => "pam_otpd + otpd",
            Module::OtpdSocket => "otpd socket alone",
            Module::GoogleAuthenticator => "pam_google_authenticator",
            Module::Oath => "pam_oath",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "otpd-bench",
    about = "Logins/s, latency and CPU per login through the real libpam: pam_otpd.so against pam_google_authenticator, pam_oath and pam_permit"
)]
struct Args {
    /// Numbers of users, one world each.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    users: Vec<usize>,
    /// Concurrent logins.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    threads: Vec<usize>,
    /// Modules to measure.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "permit,otpd,otpd-socket,google-authenticator,oath"
    )]
    modules: Vec<Module>,
    /// Longest run of one module at one concurrency, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Most logins in one run.
    #[arg(long, default_value_t = 20_000)]
    max_logins: usize,
    /// Thread counts of the same-code race.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    race: Vec<usize>,
    /// Rounds of the race per module and thread count.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Threads that enrol the users in otpd.
    #[arg(long, default_value_t = 64)]
    enroll_threads: usize,
    /// The otpd binary (default: next to this one).
    #[arg(long)]
    otpd: Option<PathBuf>,
    /// pam_otpd.so (default: libpam_otpd.so next to this binary).
    #[arg(long)]
    pam_otpd: Option<PathBuf>,
    /// Keep the temporary directories.
    #[arg(long)]
    keep: bool,
    /// Exit with status 1 when otpd refused a valid code or accepted a
    /// code more than once in a race round (CI runs with it; no time is
    /// ever checked).
    #[arg(long)]
    check: bool,
    /// Serve /dev/log (which must not exist) and count the lines logged:
    /// for machines without a syslog daemon. bench/run.sh sets it inside a
    /// private mount namespace.
    #[arg(long)]
    syslog_sink: bool,
    /// otpd's store: the PostgreSQL database at this postgresql:// URL
    /// instead of sled. THE DATABASE IS WIPED: otpd's tables in it
    /// (otpd_users, otpd_sources, otpd_meta, otpd_decoy, otpd_schema) are
    /// dropped before each world starts its daemon, so never give one in
    /// use. `bench/run.sh --postgres` starts a throw-away server and passes
    /// this.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
}

fn beside_me(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// One row of the results.
struct Row {
    module: Module,
    threads: usize,
    result: RunResult,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = nss::reexec_with_users(&args.users, setup::PROBE_USER) {
        eprintln!("otpd-bench: {e}");
        return ExitCode::FAILURE;
    }
    let result = bench(&args);
    nss::remove_file();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = procfs::status_field(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        "MemTotal",
    )
    .map(|k| format!("{} GiB", k / 1024 / 1024))
    .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}, Linux {}", kernel.trim())
}

fn bench(args: &Args) -> Result<(), String> {
    let mut wrong: Vec<String> = Vec::new();
    let programs = Programs {
        otpd: args.otpd.clone().unwrap_or_else(|| beside_me("otpd")),
        pam_otpd: args
            .pam_otpd
            .clone()
            .unwrap_or_else(|| beside_me("libpam_otpd.so")),
    };
    let wants = |m: Module| args.modules.contains(&m);
    let otpd = wants(Module::Otpd) || wants(Module::OtpdSocket);
    if otpd {
        for p in [&programs.otpd, &programs.pam_otpd] {
            if !p.exists() {
                return Err(format!(
                    "{} is missing: build with `cargo build --release -p otpd -p pam_otpd`",
                    p.display()
                ));
            }
        }
    }
    for (m, name) in [
        (Module::GoogleAuthenticator, "pam_google_authenticator.so"),
        (Module::Oath, "pam_oath.so"),
    ] {
        if wants(m) && system_module(name).is_none() {
            return Err(format!(
                "{name} is not installed (apt-get install libpam-google-authenticator libpam-oath)"
            ));
        }
    }
    let postgres = args
        .postgres_url
        .as_deref()
        .map(Postgres::new)
        .transpose()?;
    let sink = if args.syslog_sink {
        Some(syslog::Sink::start()?)
    } else {
        None
    };
    println!("# otpd-bench");
    println!();
    println!("machine: {}", machine());
    println!(
        "users {:?}, threads {:?}, runs of at most {} s or {} logins, race {:?} × {} rounds",
        args.users, args.threads, args.seconds, args.max_logins, args.race, args.rounds
    );
    if otpd {
        match &postgres {
            Some(pg) => println!("store: PostgreSQL {}", pg.target),
            None => println!("store: sled"),
        }
    }
    let mut all_rows: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
    for &n in &args.users {
        println!();
        println!("## {n} users");
        println!();
        let world = World::build(&Plan {
            users: n,
            otpd,
            google_authenticator: wants(Module::GoogleAuthenticator),
            oath: wants(Module::Oath),
            enroll_threads: args.enroll_threads,
            programs: &programs,
            postgres: postgres.as_ref(),
            keep: args.keep,
        })?;
        let daemon_pid = world.daemon.as_ref().map(|d| d.pid());
        let fresh = || -> Vec<AtomicU64> { (0..n).map(|_| AtomicU64::new(0)).collect() };
        // Replay state per module: otpd's socket and PAM runs share the
        // daemon, so they share its users' state.
        let mut last_steps: BTreeMap<Module, Vec<AtomicU64>> = BTreeMap::new();
        last_steps.insert(Module::Permit, fresh());
        last_steps.insert(Module::GoogleAuthenticator, fresh());
        last_steps.insert(Module::Oath, fresh());
        let target_of = |m: Module| -> Result<Target, String> {
            let service = |s: &str| CString::new(s).map_err(|e| e.to_string());
            Ok(match m {
                Module::Permit => Target::Pam {
                    service: service("bench-permit")?,
                    prompts: false,
                },
                Module::Otpd => Target::Pam {
                    service: service("bench-otpd")?,
                    prompts: true,
                },
                Module::GoogleAuthenticator => Target::Pam {
                    service: service("bench-google-authenticator")?,
                    prompts: true,
                },
                Module::Oath => Target::Pam {
                    service: service("bench-oath")?,
                    prompts: true,
                },
                Module::OtpdSocket => Target::Socket {
                    path: world
                        .daemon
                        .as_ref()
                        .map(|d| d.socket.clone())
                        .ok_or("no daemon")?,
                },
            })
        };
        let mut rows = Vec::new();
        println!();
        println!("| module | threads | logins | accepted logins/s | p50 ms | p90 ms | p99 ms | max ms | mean ms | CPU µs/login (daemon) | syslog lines/login | failed valid logins |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for &threads in &args.threads {
            for &module in &args.modules {
                let target = target_of(module)?;
                let last = match module {
                    Module::Otpd | Module::OtpdSocket => &world.otpd_confirmed_step,
                    other => &last_steps[&other],
                };
                ensure_available(last, args.max_logins);
                let pid = match module {
                    Module::Otpd | Module::OtpdSocket => daemon_pid.as_deref(),
                    _ => None,
                };
                let result = run(
                    &world,
                    &target,
                    last,
                    RunSpec {
                        threads,
                        max_logins: args.max_logins,
                        max_time: Duration::from_secs_f64(args.seconds),
                    },
                    pid,
                    sink.as_ref(),
                );
                print_row(module, threads, &result);
                if matches!(module, Module::Otpd | Module::OtpdSocket) && result.failed() > 0 {
                    wrong.push(format!(
                        "{n} users, {threads} threads: {} refused {} valid codes",
                        module.label(),
                        result.failed()
                    ));
                }
                rows.push(Row {
                    module,
                    threads,
                    result,
                });
            }
        }
        println!();
        if let (Some(d), Some(startup)) = (world.daemon.as_ref(), world.startup) {
            let pid = d.pid();
            println!(
                "otpd daemon with {n} users: answering {:.0} ms after start; RSS {:.1} MiB now, peak {:.1} MiB since that start",
                startup.as_secs_f64() * 1000.0,
                procfs::status_kib(&pid, "VmRSS").unwrap_or(0) as f64 / 1024.0,
                procfs::status_kib(&pid, "VmHWM").unwrap_or(0) as f64 / 1024.0
            );
        }
        print_ratios(&rows, &args.threads);
        if !args.race.is_empty() && args.rounds > 0 {
            println!();
            println!("### The same valid code from N threads at once ({n} users)");
            println!();
            println!("| module | N | accepted per round | rounds with more than one accepted |");
            println!("|---|---:|---|---:|");
            for &module in &args.modules {
                if module == Module::Permit {
                    continue;
                }
                let target = target_of(module)?;
                let last = match module {
                    Module::Otpd | Module::OtpdSocket => &world.otpd_confirmed_step,
                    other => &last_steps[&other],
                };
                for &threads in &args.race {
                    let counts: Vec<usize> = (0..args.rounds)
                        .map(|_| race_round(&world, &target, last, threads))
                        .collect();
                    let over = counts.iter().filter(|&&c| c > 1).count();
                    if matches!(module, Module::Otpd | Module::OtpdSocket)
                        && counts.iter().any(|&c| c != 1)
                    {
                        wrong.push(format!(
                            "{n} users, race of {threads}: {} accepted {counts:?} per round, not exactly 1",
                            module.label()
                        ));
                    }
                    let list: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
                    println!(
                        "| {} | {threads} | {} | {over} |",
                        module.label(),
                        list.join(" ")
                    );
                }
            }
        }
        all_rows.insert(n, rows);
        drop(world);
    }
    print_flatness(&all_rows, &args.threads);
    if args.check && !wrong.is_empty() {
        return Err(format!("--check: {}", wrong.join("; ")));
    }
    Ok(())
}

fn print_row(module: Module, threads: usize, r: &RunResult) {
    let failures = if r.failures.is_empty() {
        "0".to_owned()
    } else {
        let parts: Vec<String> = r.failures.iter().map(|(k, v)| format!("{v} {k}")).collect();
        format!("{} ({})", r.failed(), parts.join(", "))
    };
    println!(
        "| {} | {threads} | {}{} | {:.0} | {} | {} | {} | {} | {} | {:.0}{} | {} | {failures} |",
        module.label(),
        r.logins,
        if r.exhausted { "*" } else { "" },
        r.rate(),
        ms(r.latencies.p50),
        ms(r.latencies.p90),
        ms(r.latencies.p99),
        ms(r.latencies.max),
        ms(r.mean),
        r.cpu_per_login_us(),
        if r.cpu_daemon.is_zero() {
            String::new()
        } else {
            format!(
                " ({:.0})",
                r.cpu_daemon.as_secs_f64() * 1e6 / r.logins.max(1) as f64
            )
        },
        match r.syslog_lines {
            Some(lines) if r.logins > 0 => format!("{:.1}", lines as f64 / r.logins as f64),
            _ => "–".into(),
        },
    );
}

fn find(rows: &[Row], module: Module, threads: usize) -> Option<&RunResult> {
    rows.iter()
        .find(|r| r.module == module && r.threads == threads)
        .map(|r| &r.result)
}

fn print_ratios(rows: &[Row], threads: &[usize]) {
    println!();
    println!("| threads | otpd/google-authenticator accepted/s | google-authenticator p99 / otpd p99 | otpd/oath accepted/s | oath p99 / otpd p99 | otpd mean − pam_permit mean |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &t in threads {
        let Some(o) = find(rows, Module::Otpd, t) else {
            continue;
        };
        let cell = |peer: Module, f: &dyn Fn(&RunResult, &RunResult) -> String| {
            find(rows, peer, t)
                .map(|p| f(o, p))
                .unwrap_or_else(|| "–".into())
        };
        let rate = |o: &RunResult, p: &RunResult| ratio(o.rate(), p.rate());
        let p99 = |o: &RunResult, p: &RunResult| {
            ratio(p.latencies.p99.as_secs_f64(), o.latencies.p99.as_secs_f64())
        };
        let over_floor =
            |o: &RunResult, p: &RunResult| format!("{} ms", ms(o.mean.saturating_sub(p.mean)));
        println!(
            "| {t} | {} | {} | {} | {} | {} |",
            cell(Module::GoogleAuthenticator, &rate),
            cell(Module::GoogleAuthenticator, &p99),
            cell(Module::Oath, &rate),
            cell(Module::Oath, &p99),
            cell(Module::Permit, &over_floor),
        );
    }
}

fn print_flatness(all: &BTreeMap<usize, Vec<Row>>, threads: &[usize]) {
    let (Some((&small, small_rows)), Some((&large, large_rows))) =
        (all.iter().next(), all.iter().next_back())
    else {
        return;
    };
    if small == large {
        return;
    }
    println!();
    println!("## Cost in the number of users: {large} against {small} users");
    println!();
    println!("| module | threads | accepted/s {small} | accepted/s {large} | change | p99 ms {small} | p99 ms {large} |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for module in [
        Module::Otpd,
        Module::OtpdSocket,
        Module::GoogleAuthenticator,
        Module::Oath,
    ] {
        for &t in threads {
            let (Some(a), Some(b)) = (find(small_rows, module, t), find(large_rows, module, t))
            else {
                continue;
            };
            let change = if a.rate() > 0.0 {
                format!("{:+.0} %", (b.rate() / a.rate() - 1.0) * 100.0)
            } else {
                "–".into()
            };
            println!(
                "| {} | {t} | {:.0} | {:.0} | {change} | {} | {} |",
                module.label(),
                a.rate(),
                b.rate(),
                ms(a.latencies.p99),
                ms(b.latencies.p99)
            );
        }
    }
}
