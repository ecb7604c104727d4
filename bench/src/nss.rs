//! The benchmark's users as accounts: pam_otpd.so resolves PAM_USER with
//! getpwnam_r and refuses a name that is no account. The benchmark runs
//! itself again under `libnss_wrapper` with a passwd file that holds the
//! host's accounts and every benchmark user, so that every module sees the
//! same user database (pam_permit and pam_oath do not look; pam_otpd.so
//! and pam_google_authenticator do). A lookup costs what a files backend
//! with that many lines costs: docs/performance.md.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Set in the environment of the second run.
const MARKER: &str = "OTPD_BENCH_NSS";

/// The users' names for `counts` (the largest world holds every smaller one's).
fn passwd_text(counts: &[usize], probe: &str) -> Result<String, String> {
    let mut text =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let most = counts.iter().copied().max().unwrap_or(0);
    for (i, name) in (0..most)
        .map(crate::setup::user_name)
        .chain([probe.to_owned()])
        .enumerate()
    {
        let uid = 200_000 + i;
        text.push_str(&format!(
            "{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
        ));
    }
    Ok(text)
}

fn library() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(|dir| PathBuf::from(dir).join("libnss_wrapper.so"))
    .find(|path| path.is_file())
}

/// Returns in the second run; in the first, writes the passwd file and
/// replaces this process with the second run (or returns the error).
pub fn reexec_with_users(counts: &[usize], probe: &str) -> Result<(), String> {
    if std::env::var_os(MARKER).is_some() {
        return Ok(());
    }
    let library = library().ok_or(
        "libnss_wrapper.so is not installed (apt-get install libnss-wrapper; bench/run.sh does)",
    )?;
    let file = std::env::temp_dir().join(format!("otpd-bench-passwd-{}", std::process::id()));
    std::fs::write(&file, passwd_text(counts, probe)?)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(other) if !other.is_empty() => format!("{}:{other}", library.display()),
        _ => library.display().to_string(),
    };
    let error = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MARKER, &file)
        .env("LD_PRELOAD", preload)
        .env("NSS_WRAPPER_PASSWD", &file)
        .env("NSS_WRAPPER_GROUP", "/etc/group")
        .exec();
    Err(format!(
        "cannot run the benchmark again under nss_wrapper: {error}"
    ))
}

/// The environment of the programs the benchmark starts (the daemon):
/// without the wrapper, as they run on a real host.
pub fn clean(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("LD_PRELOAD")
        .env_remove("NSS_WRAPPER_PASSWD")
        .env_remove("NSS_WRAPPER_GROUP")
        .env_remove(MARKER)
}

/// Removes the passwd file at the end of the second run.
pub fn remove_file() {
    if let Some(file) = std::env::var_os(MARKER) {
        let _ = std::fs::remove_file(file);
    }
}
