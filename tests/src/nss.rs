//! The user database pamtester sees: `libnss_wrapper` with a passwd file of
//! the test's own. pam_otpd.so resolves PAM_USER with getpwnam_r and refuses
//! a name that is no account, so every name a test logs in with is an
//! account here unless the test says otherwise ([`NOT_AN_ACCOUNT`]).
//!
//! For the NSS that ignores case (SSSD, winbind, LDAP can), which we cannot
//! run here, [`case_folding_module`] builds a small NSS module that
//! nss_wrapper loads beside its files: it answers any spelling of an
//! account's name with the account's own spelling.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Names that start with this are never made accounts: a test of a name
/// that does not resolve uses one.
pub const NOT_AN_ACCOUNT: &str = "nosuchaccount";

/// The uid a test account gets: stable for a name, above the system's.
fn uid_for(name: &str) -> u32 {
    let hash = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    70_000 + hash % 20_000
}

/// Whether `name` can be a line of a passwd file.
fn fits_passwd(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(NOT_AN_ACCOUNT)
        && !name.contains([':', '\n', '\0'])
        && name.is_ascii()
}

/// A passwd file under `dir` with the host's accounts and, unless it is
/// [`NOT_AN_ACCOUNT`] or cannot be one, `user`. Written once per name
/// (a temporary file renamed into place, so concurrent logins agree).
pub fn passwd_with(dir: &Path, user: &[u8]) -> PathBuf {
    let dir = dir.join("nss");
    std::fs::create_dir_all(&dir).expect("create the nss_wrapper dir");
    let name = std::str::from_utf8(user).ok().filter(|n| fits_passwd(n));
    let file = dir.join(match name {
        Some(name) => format!("passwd.{}", hex(name.as_bytes())),
        None => "passwd".to_owned(),
    });
    if !file.exists() {
        let mut text = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        if let Some(name) = name {
            let known = text
                .lines()
                .any(|line| line.split(':').next() == Some(name));
            if !known {
                let uid = uid_for(name);
                text.push_str(&format!(
                    "{name}:x:{uid}:{uid}:otpd test:/nonexistent:/usr/sbin/nologin\n"
                ));
            }
        }
        let tmp = dir.join(format!(
            "tmp.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&tmp, text).expect("write the passwd file");
        std::fs::rename(&tmp, &file).expect("rename the passwd file");
    }
    file
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets nss_wrapper's variables on `cmd` for a login of `user`: the passwd
/// file, the host's groups and hosts.
pub fn configure(cmd: &mut Command, dir: &Path, user: &[u8]) {
    cmd.env("NSS_WRAPPER_PASSWD", passwd_with(dir, user))
        .env("NSS_WRAPPER_GROUP", "/etc/group")
        .env("NSS_WRAPPER_HOSTS", "/etc/hosts");
}

/// The C source of the case-folding module (see the module docs).
const CASE_FOLDING_C: &str = r#"
#include <nss.h>
#include <pwd.h>
#include <string.h>
#include <strings.h>
#include <errno.h>

/* One account, from the environment: NSS_CASEFOLD_NAME and _UID. */
static enum nss_status fill(struct passwd *pw, char *buf, size_t len, int *err) {
    const char *name = getenv("NSS_CASEFOLD_NAME");
    const char *uid = getenv("NSS_CASEFOLD_UID");
    size_t n;
    if (!name || !uid) return NSS_STATUS_NOTFOUND;
    n = strlen(name) + 1;
    if (n + 2 + 12 + 18 > len) { *err = ERANGE; return NSS_STATUS_TRYAGAIN; }
    memcpy(buf, name, n);
    pw->pw_name = buf;
    pw->pw_passwd = buf + n; buf[n] = 'x'; buf[n + 1] = 0;
    pw->pw_uid = (uid_t)atol(uid);
    pw->pw_gid = pw->pw_uid;
    pw->pw_gecos = buf + n + 1;
    pw->pw_dir = buf + n + 2; memcpy(buf + n + 2, "/nonexistent", 13);
    pw->pw_shell = buf + n + 2 + 13; memcpy(buf + n + 2 + 13, "/bin/false", 11);
    return NSS_STATUS_SUCCESS;
}

enum nss_status _nss_casefold_getpwnam_r(const char *name, struct passwd *pw,
        char *buf, size_t len, int *err) {
    const char *known = getenv("NSS_CASEFOLD_NAME");
    if (!known || strcasecmp(name, known) != 0) return NSS_STATUS_NOTFOUND;
    return fill(pw, buf, len, err);
}

enum nss_status _nss_casefold_getpwuid_r(uid_t uid, struct passwd *pw,
        char *buf, size_t len, int *err) {
    const char *known = getenv("NSS_CASEFOLD_UID");
    if (!known || (uid_t)atol(known) != uid) return NSS_STATUS_NOTFOUND;
    return fill(pw, buf, len, err);
}

enum nss_status _nss_casefold_setpwent(void) { return NSS_STATUS_SUCCESS; }
enum nss_status _nss_casefold_endpwent(void) { return NSS_STATUS_SUCCESS; }
enum nss_status _nss_casefold_getpwent_r(struct passwd *pw, char *buf, size_t len, int *err) {
    (void)pw; (void)buf; (void)len; (void)err; return NSS_STATUS_NOTFOUND;
}
"#;

/// Builds the case-folding NSS module into `dir` with the system's C
/// compiler and returns its path. Use it with [`case_folding`].
pub fn case_folding_module(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the module dir");
    let source = dir.join("casefold.c");
    let module = dir.join("libnss_casefold.so.2");
    std::fs::write(
        &source,
        CASE_FOLDING_C.replace(
            "#include <errno.h>",
            "#include <errno.h>\n#include <stdlib.h>",
        ),
    )
    .expect("write casefold.c");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&module)
        .arg(&source)
        .output()
        .expect("run cc (the tests need a C compiler, as rustup does)");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    module
}

/// Makes `account` (uid `uid`) known under any spelling of its name, through
/// `module` ([`case_folding_module`]) loaded by nss_wrapper.
pub fn case_folding(cmd: &mut Command, module: &Path, account: &str, uid: u32) {
    cmd.env("NSS_WRAPPER_MODULE_SO_PATH", module)
        .env("NSS_WRAPPER_MODULE_FN_PREFIX", "casefold")
        .env("NSS_CASEFOLD_NAME", account)
        .env("NSS_CASEFOLD_UID", uid.to_string());
}
