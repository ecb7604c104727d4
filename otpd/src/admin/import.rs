//! `otpd import google-authenticator|oath|pskc`: reads the files (only
//! reads them), turns each user into one `Import` request, and prints what
//! happened to every user and a summary.

use super::{CliError, Client};
use crate::cli::ImportOptions;
use crate::import::{google_authenticator, oath, pskc, ImportedUser};
use otpd_proto::{
    ImportParams, ImportResult, ImportedDevice, Request, Response, SecretText, TokenKind,
};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The longest file read.
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;

#[derive(Default)]
struct Tally {
    read: usize,
    created: usize,
    replaced: usize,
    left_alone: usize,
    failed: usize,
    /// User names came from a file (the map of `import pskc`): shown
    /// quoted and escaped, so that one cannot pass for another.
    quote_users: bool,
}

impl Tally {
    fn finish(self, dry_run: bool) -> Result<(), CliError> {
        let would = if dry_run { "would be " } else { "" };
        say!(
            "\n{} user{} read: {} {would}imported, {} {would}replaced, {} left alone (already in otpd; --replace to overwrite), {} failed.{}",
            self.read,
            if self.read == 1 { "" } else { "s" },
            self.created,
            self.replaced,
            self.left_alone,
            self.failed,
            if dry_run {
                " Dry run: nothing was changed."
            } else {
                ""
            }
        );
        if self.failed > 0 {
            return Err(CliError::Refused(format!(
                "{} user{} could not be imported (see above); the others are done",
                self.failed,
                if self.failed == 1 { "" } else { "s" }
            )));
        }
        Ok(())
    }

    fn fail(&mut self, who: &str, why: &str) {
        self.failed += 1;
        say!("{}: cannot import: {why}", self.who(who));
    }

    /// A user name as the report shows it.
    fn who(&self, user: &str) -> String {
        if self.quote_users {
            format!("{user:?}")
        } else {
            user.to_owned()
        }
    }
}

/// Reads a file of at most [`MAX_FILE_LEN`] bytes as UTF-8 text. The file
/// is opened without following a symbolic link at its last component and
/// without blocking (a FIFO put in its place cannot hang the import), and
/// what was opened is checked: a regular file. For `home_user` (the
/// `--homes` mode) it must also be owned by root or that user, and be
/// readable by nobody else, as pam_google_authenticator demands.
fn read_text(path: &Path, home_user: Option<&str>) -> Result<zeroize::Zeroizing<String>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => format!("{} is a symbolic link", path.display()),
            _ => format!("cannot read {}: {e}", path.display()),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if let Some(user) = home_user {
        let owner_uid = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw());
        if meta.uid() != 0 && Some(meta.uid()) != owner_uid {
            return Err(format!(
                "{} is owned by uid {}, neither root nor {user}",
                path.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{} has mode {:04o}: others may read or change it, and pam_google_authenticator refuses such a file",
                path.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(format!(
            "{} is larger than {MAX_FILE_LEN} bytes",
            path.display()
        ));
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    Ok(zeroize::Zeroizing::new(text.to_owned()))
}

/// The secret as the daemon reads it: base32 without padding (totp-rs).
fn base32(bytes: &[u8]) -> SecretText {
    SecretText::new(totp_rs::Secret::from(bytes.to_vec()).to_base32())
}

fn unix_now() -> u64 {
    crate::clock::unix_now()
}

/// What an imported user's token is, in words (no secret).
fn describe(u: &ImportedUser) -> String {
    let mut parts: Vec<String> = u
        .tokens
        .iter()
        .map(|t| {
            let mut s = match t.kind {
                TokenKind::Totp => format!("TOTP {} digits every {} s", t.digits, t.period),
                TokenKind::Hotp => format!(
                    "HOTP {} digits, next counter {}",
                    t.digits,
                    t.last_used.map_or(t.first_counter, |c| c + 1)
                ),
            };
            if let Some(w) = t.window {
                s += &match t.kind {
                    TokenKind::Totp => format!(", window ±{w}"),
                    TokenKind::Hotp => format!(", look-ahead {w}"),
                };
            }
            if let (TokenKind::Totp, Some(step)) = (t.kind, t.last_used) {
                s += &format!(", codes up to step {step} used");
                // A skewed phone (TIME_SKEW) or another time zone can put
                // the last used step ahead of this host's clock: every code
                // is refused until then, which the admin should know.
                let now_step = unix_now() / t.period.max(1);
                if step > now_step + 1 {
                    s += &format!(
                        " (that is {} s ahead of this host's clock: codes are refused until then)",
                        (step - now_step) * t.period
                    );
                }
            }
            s
        })
        .collect();
    if !u.scratch_codes.is_empty() {
        parts.push(format!(
            "{} scratch code{} as recovery codes",
            u.scratch_codes.len(),
            if u.scratch_codes.len() == 1 { "" } else { "s" }
        ));
    }
    parts.join("; ")
}

/// Sends one user; prints its line and notes.
fn send(
    client: &Client,
    u: &ImportedUser,
    names: &[String],
    options: ImportOptions,
    tally: &mut Tally,
) -> Result<(), CliError> {
    tally.read += 1;
    let params = ImportParams {
        user: u.user.clone(),
        devices: u
            .tokens
            .iter()
            .zip(names)
            .map(|(t, name)| ImportedDevice {
                name: name.clone(),
                kind: t.kind,
                secret_base32: base32(&t.secret),
                algorithm: t.algorithm,
                digits: t.digits,
                period: t.period,
                last_used: t.last_used,
                first_counter: t.first_counter,
                window: t.window,
            })
            .collect(),
        recovery_codes: u
            .scratch_codes
            .iter()
            .map(|c| SecretText::new(c.0.to_string()))
            .collect(),
        replace: options.replace,
        dry_run: options.dry_run,
    };
    let result = match client.call(&Request::Import(Box::new(params))) {
        Ok(Response::Imported { result, .. }) => result,
        Ok(other) => return Err(super::commands::unexpected(&other)),
        Err(CliError::Unreachable(m)) => return Err(CliError::Unreachable(m)),
        Err(e) => {
            tally.fail(&u.user, &e.to_string());
            return Ok(());
        }
    };
    let would = if options.dry_run { "would be " } else { "" };
    match result {
        ImportResult::Created => {
            tally.created += 1;
            say!("{}: {would}imported ({})", tally.who(&u.user), describe(u));
        }
        ImportResult::Replaced => {
            tally.replaced += 1;
            say!(
                "{}: {would}imported, replacing the user's otpd enrolment ({})",
                tally.who(&u.user),
                describe(u)
            );
        }
        ImportResult::LeftAlone => {
            tally.left_alone += 1;
            say!(
                "{}: left alone: already enrolled in otpd (--replace to overwrite)",
                tally.who(&u.user)
            );
        }
    }
    if result != ImportResult::LeftAlone {
        for note in &u.notes {
            say!("  note: {note}");
        }
    }
    Ok(())
}

/// `otpd import google-authenticator --user USER FILE` or `--homes [DIR]`.
pub fn import_google_authenticator(
    client: &Client,
    user: Option<String>,
    file: Option<PathBuf>,
    homes: Option<PathBuf>,
    device: &str,
    options: ImportOptions,
) -> Result<(), CliError> {
    let sources: Vec<(String, PathBuf, bool)> = match (user, file, homes) {
        (Some(user), Some(file), None) => vec![(user, file, false)],
        (None, _, Some(dir)) => home_files(&dir)?,
        _ => {
            return Err(CliError::Usage(
                "give --user USER FILE, or --homes [DIR]".into(),
            ))
        }
    };
    let mut tally = Tally::default();
    let names = [device.to_owned()];
    for (user, path, from_homes) in sources {
        let parsed = read_text(&path, from_homes.then_some(user.as_str())).and_then(|text| {
            google_authenticator::parse(&user, &text)
                .map_err(|e| format!("{}: {e}", path.display()))
        });
        match parsed {
            Ok(u) => send(client, &u, &names, options, &mut tally)?,
            Err(why) => {
                tally.read += 1;
                tally.fail(&user, &why);
            }
        }
    }
    tally.finish(options.dry_run)
}

/// Every `DIR/NAME/.google_authenticator`, as (NAME, path), sorted.
fn home_files(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::Usage(format!("cannot list {}: {e}", dir.display())))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path().join(".google_authenticator");
        if entry.path().is_dir() && path.symlink_metadata().is_ok() {
            found.push((name, path, true));
        }
    }
    found.sort();
    if found.is_empty() {
        say!("no {}/*/.google_authenticator file found", dir.display());
    }
    Ok(found)
}

/// `otpd import oath FILE`.
pub fn import_oath(
    client: &Client,
    file: &Path,
    device: &str,
    options: ImportOptions,
) -> Result<(), CliError> {
    let text = read_text(file, None).map_err(CliError::Usage)?;
    // pam_oath writes the time of the last code in local time.
    let local_time = |t: &str| {
        use chrono::TimeZone;
        let naive = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%SL").ok()?;
        let local = chrono::Local.from_local_datetime(&naive).earliest()?;
        u64::try_from(local.timestamp()).ok()
    };
    let parsed = oath::parse(&text, &local_time);
    for problem in &parsed.problems {
        say!("{}: {problem}", file.display());
    }
    let mut tally = Tally::default();
    tally.failed += parsed.failed_users.len();
    tally.read += parsed.failed_users.len();
    for (user, why) in &parsed.failed_users {
        say!("{user}: cannot import: {why}");
    }
    for u in &parsed.users {
        let names: Vec<String> = (1..=u.tokens.len())
            .map(|n| {
                if n == 1 {
                    device.to_owned()
                } else {
                    format!("{device}-{n}")
                }
            })
            .collect();
        send(client, u, &names, options, &mut tally)?;
    }
    tally.finish(options.dry_run)
}

/// `otpd import pskc FILE (--users MAP.csv | --user NAME) [--key-file HEX
/// | --password]`. Everything that concerns the whole run (the file, the
/// map, the key, the password, any MAC) is checked before the first user
/// is sent: a failure there imports nothing (exit 2). Then each user is
/// one request, as in the other imports; a user any of whose keys cannot
/// be imported is not imported at all.
pub fn import_pskc(
    client: &Client,
    file: &Path,
    users: Option<&Path>,
    user: Option<String>,
    key_file: Option<&Path>,
    password: bool,
    options: ImportOptions,
) -> Result<(), CliError> {
    let text = read_text(file, None).map_err(CliError::Usage)?;
    let map = match (users, &user) {
        (Some(path), None) => {
            let map_text = read_text(path, None).map_err(CliError::Usage)?;
            Some((
                path,
                pskc::parse_map(&map_text)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?,
            ))
        }
        (None, Some(name)) => {
            crate::core::names::validate_user(name).map_err(CliError::Usage)?;
            None
        }
        _ => {
            return Err(CliError::Usage(
                "give --users MAP.csv or --user NAME".into(),
            ))
        }
    };
    let key = match key_file {
        Some(path) => Some(read_key_file(path)?),
        None => None,
    };
    let typed_password = if password {
        Some(read_password()?)
    } else {
        None
    };
    let unlock = match (&key, &typed_password) {
        (Some(k), _) => pskc::Unlock::PreSharedKey(k),
        (None, Some(p)) => pskc::Unlock::Password(p.as_bytes()),
        (None, None) => pskc::Unlock::Nothing,
    };
    let parsed = pskc::parse(&text, &unlock)
        .map_err(|e| CliError::Usage(format!("{}: {e}; nothing was imported", file.display())))?;
    for note in &parsed.notes {
        say!("{}: note: {note}", file.display());
    }

    // Each user's keys with their device names, users in file order.
    // Taken out one by one as users are sent.
    let mut keys: Vec<Option<pskc::PskcKey>> = parsed.keys.into_iter().map(Some).collect();
    let mut plan = Plan::default();
    let mut unmapped: Vec<String> = Vec::new();
    match &map {
        None => {
            let name = user.clone().unwrap_or_default();
            for (index, key) in keys.iter().enumerate() {
                if let Some(k) = key {
                    plan.add(&name, Ok((pskc::default_device_name(k), index)));
                }
            }
        }
        Some((map_path, lines)) => {
            // A key is found by its serial number, or by its Id when its
            // key package has no serial number.
            let tag = |k: &pskc::PskcKey| k.serial.clone().unwrap_or_else(|| k.id.clone());
            for k in keys.iter().flatten() {
                if !lines.iter().any(|l| l.serial == tag(k)) {
                    unmapped.push(k.label());
                }
            }
            for line in lines {
                let found: Vec<usize> = keys
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.as_ref().is_some_and(|k| tag(k) == line.serial))
                    .map(|(i, _)| i)
                    .collect();
                let entry = match found.as_slice() {
                    [] => Err(format!(
                        "{} line {}: serial {} is not in {}",
                        map_path.display(),
                        line.line,
                        pskc::shown(&line.serial),
                        file.display()
                    )),
                    [index] => {
                        let k = keys[*index].as_ref().expect("found above");
                        Ok((
                            line.device
                                .clone()
                                .unwrap_or_else(|| pskc::default_device_name(k)),
                            *index,
                        ))
                    }
                    more => Err(format!(
                        "serial {} names {} keys of the file: which one is meant cannot be told",
                        pskc::shown(&line.serial),
                        more.len()
                    )),
                };
                plan.add(&line.user, entry);
            }
        }
    }

    let mut tally = Tally {
        quote_users: map.is_some(),
        ..Tally::default()
    };
    for PlannedUser {
        user: name,
        devices: entries,
        mut problems,
    } in plan.0
    {
        let mut tokens = Vec::new();
        let mut names = Vec::new();
        let mut notes = Vec::new();
        for (device, index) in entries {
            let Some(key) = keys[index].take() else {
                continue;
            };
            let label = key.label();
            match key.token {
                Ok(t) => {
                    notes.push(format!("device {device} is the key of {label}"));
                    notes.extend(t.notes.into_iter().map(|n| format!("{label}: {n}")));
                    tokens.push(t.token);
                    names.push(device);
                }
                Err(why) => problems.push(format!("{label}: {why}")),
            }
        }
        if !problems.is_empty() {
            tally.read += 1;
            tally.fail(&name, &problems.join("; "));
            continue;
        }
        let imported = ImportedUser {
            user: name,
            tokens,
            scratch_codes: Vec::new(),
            notes,
        };
        send(client, &imported, &names, options, &mut tally)?;
    }
    if let Some((map_path, _)) = &map {
        const SHOWN: usize = 20;
        for label in unmapped.iter().take(SHOWN) {
            say!(
                "{label}: on no line of {}: not imported",
                map_path.display()
            );
        }
        if unmapped.len() > SHOWN {
            say!(
                "… and {} more keys on no line of the map",
                unmapped.len() - SHOWN
            );
        }
        if !unmapped.is_empty() {
            say!(
                "{} key{} of {} on no line of {}: not imported (not a failure)",
                unmapped.len(),
                if unmapped.len() == 1 { "" } else { "s" },
                file.display(),
                map_path.display()
            );
        }
    }
    tally.finish(options.dry_run)
}

/// One user of a PSKC import: the keys it gets (device name, index of the
/// key in the file) and why some cannot be given.
struct PlannedUser {
    user: String,
    devices: Vec<(String, usize)>,
    problems: Vec<String>,
}

/// The users of a PSKC import, in the order they first appear.
#[derive(Default)]
struct Plan(Vec<PlannedUser>);

impl Plan {
    fn add(&mut self, user: &str, entry: Result<(String, usize), String>) {
        let at = match self.0.iter().position(|p| p.user == user) {
            Some(at) => at,
            None => {
                self.0.push(PlannedUser {
                    user: user.to_owned(),
                    devices: Vec::new(),
                    problems: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        match entry {
            Ok(device) => self.0[at].devices.push(device),
            Err(why) => self.0[at].problems.push(why),
        }
    }
}

/// The pre-shared key of `--key-file`: hexadecimal digits (whitespace
/// ignored), never shown.
fn read_key_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, CliError> {
    let text = read_text(path, None).map_err(CliError::Usage)?;
    let digits: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    match crate::import::hex_decode(&digits) {
        Some(key) if !key.is_empty() => Ok(key),
        _ => Err(CliError::Usage(format!(
            "{} does not hold a key in hexadecimal digits",
            path.display()
        ))),
    }
}

/// `--password`: from the terminal with its echo off, or the first line of
/// stdin when stdin is not a terminal. Only the line end is removed (a
/// password may start or end with a space).
fn read_password() -> Result<zeroize::Zeroizing<String>, CliError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let mut line = zeroize::Zeroizing::new(String::new());
    let read_error = |e: std::io::Error| CliError::Usage(format!("cannot read the password: {e}"));
    if stdin.is_terminal() {
        let saved = tcgetattr(&stdin)
            .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        // Echo off before the prompt: nothing typed after the prompt shows.
        tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet)
            .map_err(|e| CliError::Usage(format!("cannot turn the terminal's echo off: {e}")))?;
        eprint!("Password of the PSKC file: ");
        let _ = std::io::Write::flush(&mut std::io::stderr());
        let read = stdin.lock().read_line(&mut line);
        // The echo comes back whatever the read did.
        let restored = tcsetattr(&stdin, SetArg::TCSAFLUSH, &saved);
        read.map_err(read_error)?;
        restored.map_err(|e| {
            CliError::Usage(format!("cannot turn the terminal's echo back on: {e}"))
        })?;
    } else {
        stdin.lock().read_line(&mut line).map_err(read_error)?;
    }
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    if line.is_empty() {
        return Err(CliError::Usage("no password was given".into()));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trips_through_the_importer_decoder() {
        for len in [10, 16, 20, 32, 64] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base32(&bytes);
            assert_eq!(
                crate::import::base32_decode(text.expose())
                    .unwrap()
                    .as_slice(),
                bytes.as_slice()
            );
            let secret = totp_rs::Secret::try_from_base32(text.expose()).unwrap();
            assert_eq!(secret.as_ref(), bytes.as_slice());
        }
        assert_eq!(
            base32(b"12345678901234567890").expose(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }
}
