//! Where the programs under test and the test programs are, and the skip rule.

use std::path::{Path, PathBuf};

/// A program (or preloadable library) that some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `pamtester`, a libpam client that reads the code from stdin.
    Pamtester,
    /// `libpam_wrapper.so`, which lets a test point libpam at its own service dir.
    PamWrapper,
    /// `libnss_wrapper.so`, which gives pamtester a user database of the
    /// test's own (the module resolves PAM_USER with getpwnam_r). Required
    /// with [`Program::PamWrapper`].
    NssWrapper,
    /// `oathtool`, the independent TOTP implementation.
    Oathtool,
    /// `zbarimg`, the QR decoder.
    Zbarimg,
    /// `strace`, to watch the daemon's system calls.
    Strace,
    /// util-linux `setpriv`, to run a program as another uid.
    Setpriv,
    /// util-linux `unshare`, for the private mount namespace.
    Unshare,
    /// util-linux `nsenter`, to run programs inside that namespace.
    Nsenter,
    /// `openssl`, to hash the test users' passwords for /etc/shadow.
    Openssl,
    /// OpenSSH's server.
    Sshd,
    /// OpenSSH's client.
    Ssh,
    /// OpenSSH's key generator.
    SshKeygen,
    /// `sudo`.
    Sudo,
    /// Debian's `chromium`, the browser of the enrolment-page tests.
    Chromium,
    /// Debian's `chromedriver` (package chromium-driver), its WebDriver server.
    Chromedriver,
    /// `google-authenticator` (libpam-google-authenticator), which writes
    /// the secret files that `otpd import google-authenticator` reads.
    GoogleAuthenticator,
    /// `pam_google_authenticator.so`, the module otpd replaces.
    PamGoogleAuthenticator,
    /// `pam_oath.so` (libpam-oath), the other module otpd replaces.
    PamOath,
    /// `curl`, a TLS client that verifies the pages' certificate chain.
    Curl,
}

impl Program {
    /// The name printed in a skip line and searched in `PATH`.
    pub fn name(self) -> &'static str {
        match self {
            Program::Pamtester => "pamtester",
            Program::PamWrapper => "libpam_wrapper.so",
            Program::NssWrapper => "libnss_wrapper.so",
            Program::Oathtool => "oathtool",
            Program::Zbarimg => "zbarimg",
            Program::Strace => "strace",
            Program::Setpriv => "setpriv",
            Program::Unshare => "unshare",
            Program::Nsenter => "nsenter",
            Program::Openssl => "openssl",
            Program::Sshd => "sshd",
            Program::Ssh => "ssh",
            Program::SshKeygen => "ssh-keygen",
            Program::Sudo => "sudo",
            Program::Chromium => "chromium",
            Program::Chromedriver => "chromedriver",
            Program::GoogleAuthenticator => "google-authenticator",
            Program::PamGoogleAuthenticator => "pam_google_authenticator.so",
            Program::PamOath => "pam_oath.so",
            Program::Curl => "curl",
        }
    }

    /// Where it is installed, if it is.
    pub fn locate(self) -> Option<PathBuf> {
        match self {
            Program::PamWrapper | Program::NssWrapper => find_library(self.name()),
            Program::PamGoogleAuthenticator | Program::PamOath => {
                find_library(&format!("security/{}", self.name()))
            }
            _ => find_in_path(self.name()),
        }
    }

    /// Where it is installed; panics when it is not (call [`require`] first).
    pub fn path(self) -> PathBuf {
        self.locate()
            .unwrap_or_else(|| panic!("{} is not installed (see tests/run-all.sh)", self.name()))
    }
}

/// What a login through libpam needs: `pamtester` under both wrappers,
/// and `oathtool` for the codes.
pub const PAM: &[Program] = &[Program::Pamtester, Program::PamWrapper, Program::Oathtool];

/// True when the tests run under CI, where no test may skip (the rule is
/// [`crate::ci::under_ci`]'s).
pub use crate::ci::under_ci;

/// The skip rule: `true` when every program is installed. Otherwise prints one
/// `SKIP <test>: <program> not installed` line and returns `false`, except
/// under CI ([`under_ci`]), where a missing program fails the test.
pub fn require(test: &str, programs: &[Program]) -> bool {
    // pamtester runs under both wrappers (crate::pam::PamService::command).
    let with_nss = programs
        .contains(&Program::PamWrapper)
        .then_some(&Program::NssWrapper);
    for program in programs.iter().chain(with_nss) {
        if program.locate().is_none() {
            crate::ci::skip(test, &format!("{} not installed", program.name()));
            return false;
        }
    }
    true
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds a shared library in the usual multiarch and plain library dirs.
pub fn find_library(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for root in ["/usr/lib", "/lib", "/usr/lib64", "/lib64"] {
        dirs.push(root.into());
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains("-linux-") {
                    dirs.push(entry.path());
                }
            }
        }
    }
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Finds a PAM module shipped with Linux-PAM (`pam_permit.so` …).
pub fn find_pam_module(name: &str) -> PathBuf {
    find_library(&format!("security/{name}"))
        .unwrap_or_else(|| panic!("{name} not found: is libpam-modules installed?"))
}

/// `target/<profile>/`, the directory of the binaries this test was built with.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test executables live in target/<profile>/deps/; the binaries one up.
    let deps = exe.parent().expect("test executable has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn built_artifact(name: &str) -> PathBuf {
    let path = build_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first (same profile and target dir as the tests)",
        path.display()
    );
    path
}

/// The `otpd` binary under test.
pub fn otpd_binary() -> PathBuf {
    built_artifact("otpd")
}

/// The PAM module under test, `libpam_otpd.so`.
pub fn pam_module() -> PathBuf {
    built_artifact("libpam_otpd.so")
}

/// The impostor daemon and raw client of this crate.
pub fn test_peer_binary() -> PathBuf {
    built_artifact("otpd-test-peer")
}

#[cfg(test)]
mod tests {
    use crate::ci::means_ci;
    use std::ffi::OsStr;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The scripts that decide by themselves whether they run under CI,
    /// each with a one-line shell `under_ci()`.
    const SCRIPTS: [&str; 2] = ["tests/fuzz.sh", "packaging/test-install.sh"];

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is in the repository")
            .to_path_buf()
    }

    /// The `under_ci() { … }` line of `script`: exactly one.
    fn shell_rule(script: &str) -> String {
        let text = std::fs::read_to_string(repo().join(script)).expect("read the script");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("under_ci() {"))
            .collect();
        assert_eq!(lines.len(), 1, "{script}: one `under_ci() {{ … }}` line");
        lines[0].to_owned()
    }

    #[test]
    fn the_scripts_read_ci_as_the_tests_do() {
        let values: [Option<&str>; 12] = [
            None,
            Some(""),
            Some("0"),
            Some("false"),
            Some("FALSE"),
            Some("False"),
            Some("true"),
            Some("1"),
            Some("yes"),
            Some("no"),
            Some(" "),
            Some("false "),
        ];
        for script in SCRIPTS {
            let rule = shell_rule(script);
            for value in values {
                let mut cmd = Command::new("bash");
                cmd.arg("-c").arg(format!("{rule}\nunder_ci"));
                match value {
                    Some(v) => cmd.env("CI", v),
                    None => cmd.env_remove("CI"),
                };
                let status = cmd.status().expect("run bash");
                assert_eq!(
                    status.success(),
                    means_ci(value.map(OsStr::new)),
                    "{script} and tests/src/ci.rs disagree about CI={value:?}"
                );
            }
        }
    }

    /// True when the shell line `line` expands the variable CI (a dollar
    /// sign and CI, braced or not; not a longer name such as CIPHER).
    fn expands_ci(line: &str) -> bool {
        ["$", "${"].iter().any(|opening| {
            let needle = format!("{opening}CI");
            line.match_indices(&needle).any(|(at, _)| {
                !line[at + needle.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        })
    }

    /// No file reads the variable CI but through the rule.
    #[test]
    fn nothing_else_reads_ci_by_itself() {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read a directory").flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if path.is_dir() {
                    if name != "target" && name != ".git" {
                        walk(&path, found);
                    }
                } else if path.extension().is_some_and(|e| e == "rs" || e == "sh") || name == "run"
                {
                    found.push(path);
                }
            }
        }
        let root = repo();
        let mut files = Vec::new();
        for dir in [
            "otpd",
            "pam_module",
            "tests",
            "bench",
            "packaging",
            "fuzz",
            ".ci",
        ] {
            walk(&root.join(dir), &mut files);
        }
        let rule_file = root.join("tests/src/ci.rs");
        let mut readers = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                let rust = line.contains("var(\"CI\")") || line.contains("var_os(\"CI\")");
                let shell = !line.starts_with("under_ci() {") && expands_ci(line);
                if (rust && file != rule_file) || shell {
                    readers.push(format!("{}:{}: {line}", file.display(), n + 1));
                }
            }
        }
        assert!(
            readers.is_empty(),
            "these read CI by themselves; use tests/src/ci.rs (Rust) or a one-line \
             `under_ci()` checked by the_scripts_read_ci_as_the_tests_do (shell):\n{}",
            readers.join("\n")
        );
    }
}
