//! `otpd audit verify` and `otpd audit export`: read the chained audit
//! lines from log files or the journal (`core::audit` checks them).

use super::{CliError, Client};
use crate::cli::AuditSource;
use crate::config::Config;
use crate::core::audit::{self, ChainValue, Entry, Head, Problem};
use otpd_proto::{Request, Response};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The log file of a daemon that systemd does not run (packaging/install.sh).
const DEFAULT_LOG: &str = "/var/log/otpd.log";

/// Reads the entries `source` names, in the order they were written.
/// From the journal, only entries sent by the daemon's account or root
/// count: any local user can send an entry that says `SYSLOG_IDENTIFIER=otpd`.
fn read_entries(config: &Config, source: &AuditSource) -> Result<Vec<Entry>, CliError> {
    let journal = source.journal || !source.journal_file.is_empty();
    if !source.files.is_empty() {
        let mut entries = Vec::new();
        for file in &source.files {
            read_file(file, &mut entries)?;
        }
        return Ok(entries);
    }
    if journal || Path::new("/run/systemd/system").exists() {
        let mut trusted = vec![0];
        trusted.extend(crate::server::worker::state_dir_owner(&config.state_dir));
        return read_journal(&source.journal_file, &trusted);
    }
    let mut entries = Vec::new();
    read_file(Path::new(DEFAULT_LOG), &mut entries).map_err(|e| {
        CliError::Usage(format!(
            "{e} (name the log FILE, or --journal where systemd runs otpd)"
        ))
    })?;
    Ok(entries)
}

fn read_file(path: &Path, entries: &mut Vec<Entry>) -> Result<(), CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let name = path.display().to_string();
    entries.extend(text.lines().enumerate().map(|(i, line)| Entry {
        origin: format!("{name}:{}", i + 1),
        text: line.to_string(),
    }));
    Ok(())
}

/// The journal's otpd entries through `journalctl -o json` (the journal's
/// own reader: its file format is not ours to parse).
fn read_journal(files: &[PathBuf], trusted_uids: &[u32]) -> Result<Vec<Entry>, CliError> {
    let mut command = Command::new("journalctl");
    command.args(["--output=json", "--no-pager", "--quiet", "--all"]);
    for file in files {
        command.arg(format!("--file={}", file.display()));
    }
    command.arg("SYSLOG_IDENTIFIER=otpd");
    let output = command
        .output()
        .map_err(|e| CliError::Usage(format!("cannot run journalctl: {e}")))?;
    if !output.status.success() {
        return Err(CliError::Usage(format!(
            "journalctl failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut entries = Vec::new();
    let mut others = 0u64;
    for (i, line) in text.lines().enumerate() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // `_UID` is the journal's own (from the sender's credentials).
        let sender = value
            .get("_UID")
            .and_then(|u| u.as_str())
            .and_then(|u| u.parse::<u32>().ok());
        if !sender.is_some_and(|uid| trusted_uids.contains(&uid)) {
            others += 1;
            continue;
        }
        let message = match value.get("MESSAGE") {
            Some(serde_json::Value::String(s)) => s.clone(),
            // journalctl gives a message that is not UTF-8 as its bytes.
            Some(serde_json::Value::Array(bytes)) => String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
            _ => continue,
        };
        entries.push(Entry {
            origin: format!("journal entry {}", i + 1),
            text: message,
        });
    }
    if others > 0 {
        eprintln!(
            "note: {others} journal entr{} with SYSLOG_IDENTIFIER=otpd from another sender \
             (not the daemon's account nor root) left out",
            if others == 1 { "y" } else { "ies" }
        );
    }
    Ok(entries)
}

/// The chain keys of `files`, or of the configured key.
fn chain_keys(config: &Config, files: &[PathBuf]) -> Result<Vec<ChainValue>, CliError> {
    let owner = crate::server::worker::state_dir_owner(&config.state_dir);
    let configured = [crate::server::keyfile::KeySource::of(config)
        .path()
        .to_path_buf()];
    let files = if files.is_empty() {
        &configured[..]
    } else {
        files
    };
    files
        .iter()
        .map(|path| {
            let text = crate::server::keyfile::read_key_text(path, owner).map_err(|e| {
                CliError::Usage(format!(
                    "{} (the chain's key comes from the store's key: run as root)",
                    e.0
                ))
            })?;
            let key =
                crate::server::keyfile::key_of(&text, path).map_err(|e| CliError::Usage(e.0))?;
            Ok(key.meta_tag(audit::KEY_LABEL, &[]))
        })
        .collect()
}

/// The running daemon's head, when it answers.
fn daemon_head(client: &Client) -> Option<Head> {
    match client.call(&Request::DaemonStatus {}) {
        Ok(Response::DaemonStatus(s)) => s.audit_head.as_deref().and_then(Head::from_text),
        _ => None,
    }
}

/// `otpd audit verify`
pub fn verify(
    config: &Config,
    client: &Client,
    source: &AuditSource,
    key_files: &[PathBuf],
) -> Result<(), CliError> {
    let keys = chain_keys(config, key_files)?;
    // The head first, then the lines: every line up to the head is written
    // by the time the daemon answers.
    let head = daemon_head(client);
    let mut entries = read_entries(config, source)?;
    let this_host = crate::server::audit::host_name();
    let last_host = |entries: &[Entry]| {
        entries
            .iter()
            .rev()
            .filter_map(|e| audit::find_line(&e.text).and_then(audit::parse))
            .map(|p| p.host)
            .next()
    };
    let other_host = last_host(&entries).filter(|h| *h != this_host);
    let head = head.filter(|_| other_host.is_none());
    let mut report = audit::verify(&entries, &keys, head);
    if matches!(report.problem, Some(Problem::Truncated { .. })) {
        // The journal may not have stored the newest line yet.
        std::thread::sleep(std::time::Duration::from_secs(1));
        entries = read_entries(config, source)?;
        report = audit::verify(&entries, &keys, head);
    }
    if report.lines == 0 && report.problem.is_none() {
        return Err(CliError::Usage(
            "no audit line found in what was read".into(),
        ));
    }
    for origin in &report.new_trails {
        super::emit(&format!(
            "note: a new trail begins at {origin} (a new store, `otpd migrate`, or another \
             host name): the lines before it end where it begins\n"
        ));
    }
    for (seq, lost) in &report.unclean_restarts {
        super::emit(&format!(
            "note: the daemon restarted after an unclean stop at seq={seq}: the {lost} line(s) \
             before it were written after the head the store kept (a crash; their removal \
             could not have been told from one)\n"
        ));
    }
    let range = match (report.first_seq, report.last_good) {
        (Some(first), Some(last)) => format!("seq={first} to seq={last}"),
        _ => "no line".into(),
    };
    match &report.problem {
        None => {
            let start = match report.first_seq {
                Some(1) | None => String::new(),
                Some(first) => format!(
                    " (seq={first} is where what was read starts: its own link is checked \
                     only with the file before it)"
                ),
            };
            let intact = format!("intact: {} audit lines, {range}{start}", report.lines);
            match (head, other_host) {
                (Some(h), _) => {
                    super::emit(&format!(
                        "{intact}; the running daemon is at seq={}\n",
                        h.seq
                    ));
                    Ok(())
                }
                (None, Some(host)) => {
                    super::emit(&format!("{intact}\n"));
                    Err(CliError::Unreachable(format!(
                        "incomplete: these are the lines of host {host:?}, not of this host \
                         ({this_host:?}): their end was not compared with their daemon's, so \
                         lines cut off the end would not show (run verify on {host})"
                    )))
                }
                (None, None) => {
                    super::emit(&format!("{intact}\n"));
                    Err(CliError::Unreachable(
                        "incomplete: the daemon did not answer, so the end of the trail was not \
                         compared with its head: lines cut off the end would not show (start \
                         otpd and run verify again)"
                            .into(),
                    ))
                }
            }
        }
        Some(problem) => {
            let last_good = report
                .last_good
                .map_or("none".to_string(), |s| format!("seq={s}"));
            Err(CliError::Refused(format!(
                "TAMPERED: {problem}\nlast good line: {last_good}"
            )))
        }
    }
}

/// `otpd audit export`: the chain is checked first when the key can be
/// read (root); a trail that does not verify is not exported.
pub fn export(
    config: &Config,
    source: &AuditSource,
    since: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let since = since.map(parse_since).transpose()?;
    let entries = read_entries(config, source)?;
    match chain_keys(config, &[]) {
        Ok(keys) => {
            let report = audit::verify(&entries, &keys, None);
            if let Some(problem) = &report.problem {
                return Err(CliError::Refused(format!(
                    "TAMPERED: {problem}; nothing exported (`otpd audit verify` tells more)"
                )));
            }
        }
        Err(e) => eprintln!("note: the lines are not verified: {e}"),
    }
    let mut unreadable = 0u64;
    for entry in &entries {
        let Some(text) = audit::find_line(&entry.text) else {
            continue;
        };
        let Some(parsed) = audit::parse(text) else {
            unreadable += 1;
            eprintln!(
                "{}: an audit line that cannot be read; left out",
                entry.origin
            );
            continue;
        };
        if let Some(since) = since {
            match chrono::DateTime::parse_from_rfc3339(&parsed.time) {
                Ok(t) if t < since => continue,
                Ok(_) => {}
                Err(_) => {
                    unreadable += 1;
                    eprintln!(
                        "{}: a line whose time cannot be read; left out",
                        entry.origin
                    );
                    continue;
                }
            }
        }
        if json {
            super::emit(&format!("{}\n", parsed.to_json()));
        } else {
            super::emit(&format!("{text}\n"));
        }
    }
    if unreadable > 0 {
        return Err(CliError::Refused(format!(
            "{unreadable} audit line(s) could not be read (run `otpd audit verify`)"
        )));
    }
    Ok(())
}

/// `--since`: a time, a date (UTC) or how long ago.
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, CliError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().fixed_offset());
        }
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        if let Ok(ago) = chrono::Duration::from_std(ago) {
            if let Some(t) = chrono::Utc::now().checked_sub_signed(ago) {
                return Ok(t.fixed_offset());
            }
        }
    }
    Err(CliError::Usage(format!(
        "--since {text:?}: not a time (2026-12-01T08:00:00Z), a date (2026-12-01) or a \
         duration (24h)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_times_dates_and_durations() {
        assert_eq!(
            parse_since("2026-12-01T08:00:00Z").unwrap().to_rfc3339(),
            "2026-12-01T08:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        let ago = chrono::Utc::now() - parse_since("24h").unwrap().with_timezone(&chrono::Utc);
        assert!((ago.num_seconds() - 86_400).abs() < 5);
        assert!(matches!(parse_since("yesterday"), Err(CliError::Usage(_))));
    }
}
