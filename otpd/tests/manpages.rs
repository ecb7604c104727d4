//! The man pages and shell completions in `packaging/` cannot drift from the
//! code. `otpd.8` and the completions are generated from the clap definition
//! in `src/cli.rs` (plus the hand-written sections below); a test fails when
//! the file in the repo differs from what the code generates now, and
//! `OTPD_BLESS=1 cargo test -p otpd --test manpages` rewrites them.
//! `otpd.toml.5` is written by hand; a test checks it against every key of
//! the shipped `packaging/otpd.toml`.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use otpd::admin::EXIT_STATUS_HELP;
use otpd::cli::Cli;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

// The skip rule of every test (under CI a missing program fails the test).
#[path = "../../tests/src/ci.rs"]
mod ci;

const REGENERATE: &str = "OTPD_BLESS=1 cargo test -p otpd --test manpages";

/// What each `Roff` rendering starts with; kept once, at the top of the page.
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// DESCRIPTION (clap's `about` is the NAME line already).
const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBotpd serve\fR is the daemon. It alone holds the TOTP secrets (RFC 6238),
in its store under \fIstate_dir\fR, and answers
.BR pam_otpd (8)
and the commands below over a Unix socket. It accepts a code once, refuses
every code of that or an earlier time step afterwards, and makes a source
that keeps guessing wait, and then the whole user. Installed as a package it
runs as the \fBotpd\fR system user from \fIotpd.service\fR (systemd
\fBType=notify\fR, ready once the store is open), on the socket handed over
by \fIotpd.socket\fR; started by hand it binds the socket itself.
.PP
Every record of the store is sealed with XChaCha20\-Poly1305 under the key
in \fIkey_file\fR, bound to its user name and version. A new store gets a
new key file at its first start; a store with records never starts without
its key.
.PP
Every other command except \fBcheck\-config\fR, \fBkeygen\fR,
\fBrekey\fR and \fBseal\-store\fR talks to the running daemon over its
socket, and only root may use them (the daemon asks the kernel who is
calling). \fBrekey\fR and \fBseal\-store\fR work on the store itself:
stop the daemon first. When a \fICODE\fR is omitted it is read from standard input,
so it does not show in the process list. A failing command prints a
one\-line reason to standard error and exits with the status below.
"#;

/// After EXIT STATUS, which is generated from `EXIT_STATUS_HELP`.
const ENVIRONMENT_FILES_SEE_ALSO: &str = r#".SH ENVIRONMENT
.TP
.B OTPD_CONFIG
The config file, when \fB\-\-config\fR is not given.
.TP
.B RUST_LOG
What \fBotpd serve\fR logs to standard error (the journal under systemd),
e.g. \fBdebug\fR; default \fBinfo\fR. Every decision is one audit line:
user, service, remote host, caller, outcome; never a code or a secret.
.SH FILES
.TP
.I /etc/otpd/otpd.toml
The configuration; see
.BR otpd.toml (5).
.TP
.I /run/otpd/otpd.sock
The daemon's socket.
.TP
.I /etc/otpd/otpd.key
The key that seals the store (mode 0400). Under systemd it is handed in with
\fBLoadCredential=otpd.key:/etc/otpd/otpd.key\fR, so it can stay owned by
root. Back it up: without it the store cannot be read.
.TP
.I /var/lib/otpd
The store: sealed secrets, used time steps, failure counters (mode 0700,
owned by the daemon's user).
.TP
.I /var/lib/otpd\-anchor
This host's anchor (\fB[store] anchor_dir\fR): how far the store had come,
kept outside the state directory so that an older copy of it put back is
refused. Keep it out of the backups of \fI/var/lib/otpd\fR.
.TP
.I /usr/lib/systemd/system/otpd.service
.TQ
.I /usr/lib/systemd/system/otpd.socket
The systemd units.
.SH SEE ALSO
.BR otpd.toml (5),
.BR pam_otpd (8),
.BR pam (8),
.BR pam\-auth\-update (8),
.BR systemctl (1)
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("otpd/ has a parent")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn render(roff: &Roff) -> String {
    let text = roff.render();
    text.strip_prefix(ROFF_PREAMBLE)
        .expect("roff output starts with its preamble")
        .to_owned()
}

/// One of `Man`'s sections without its `.SH` line (and without the preamble).
fn section_body(
    man: &Man,
    section: fn(&Man, &mut dyn std::io::Write) -> std::io::Result<()>,
) -> String {
    let mut out = Vec::new();
    section(man, &mut out).expect("rendering to memory works");
    let text = String::from_utf8(out).expect("clap text is UTF-8");
    let text = text.strip_prefix(ROFF_PREAMBLE).unwrap_or(&text);
    match text.split_once('\n') {
        Some((heading, body)) if heading.starts_with(".SH ") => {
            assert!(
                !body.contains("\n.SH ") && !body.starts_with(".SH "),
                "one section expected, got {text}"
            );
            body.to_owned()
        }
        _ => text.to_owned(),
    }
}

/// `packaging/man/otpd.8`: clap_mangen's page for `otpd`, one subsection per
/// subcommand (instead of clap_mangen's pointers to pages `otpd-enroll(8)` …
/// we do not ship), and the sections clap cannot carry.
fn otpd_8() -> String {
    let mut cmd = Cli::command()
        .disable_help_subcommand(true)
        .subcommand_value_name("COMMAND");
    cmd.build();
    let man = Man::new(cmd.clone());

    let mut page = String::new();
    page.push_str(".\\\" otpd(8): generated from otpd/src/cli.rs by otpd/tests/manpages.rs.\n");
    page.push_str(".\\\" Do not edit: change those, then run\n");
    page.push_str(&format!(".\\\" {REGENERATE}\n"));
    page.push_str(ROFF_PREAMBLE);
    // Written here, not by `Man`: its empty default date would vanish from
    // the line and shift the other fields.
    page.push_str(&format!(
        ".TH OTPD 8 \"\" \"otpd {}\" \"System Administration\"\n",
        cmd.get_version().expect("clap `version` is set")
    ));
    page.push_str(".SH NAME\n");
    page.push_str(&section_body(&man, Man::render_name_section));
    page.push_str(".SH SYNOPSIS\n");
    page.push_str(&section_body(&man, Man::render_synopsis_section));
    page.push_str(DESCRIPTION);
    page.push_str(".SH OPTIONS\n");
    page.push_str(&section_body(&man, Man::render_options_section));

    page.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // The global options and -h are listed once, above.
        let sub = sub.clone().mut_args(|arg| {
            if arg.is_global_set() || arg.get_id() == "help" {
                arg.hide(true)
            } else {
                arg
            }
        });
        let sub_man = Man::new(sub.clone());
        page.push_str(&format!(".SS {}\n", sub.get_name()));
        page.push_str(&section_body(&sub_man, Man::render_synopsis_section));
        page.push_str(".PP\n");
        page.push_str(&section_body(&sub_man, Man::render_description_section));
        if sub.get_arguments().any(|arg| !arg.is_hide_set()) {
            page.push_str(&section_body(&sub_man, Man::render_options_section));
        }
    }

    page.push_str(".SH \"EXIT STATUS\"\n");
    page.push_str(&exit_status());
    page.push_str(ENVIRONMENT_FILES_SEE_ALSO);
    page
}

/// `EXIT_STATUS_HELP` ("  0  done" lines) as a roff list.
fn exit_status() -> String {
    let mut roff = Roff::new();
    for line in EXIT_STATUS_HELP.lines().skip(1) {
        let (code, meaning) = line
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("EXIT_STATUS_HELP line {line:?} is not `CODE  meaning`"));
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning.trim())]);
    }
    render(&roff)
}

fn completion(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "otpd", &mut out);
    String::from_utf8(out).expect("completions are UTF-8")
}

/// Compares `generated` with the file at `relative` (from the repo root), or
/// writes it there when `OTPD_BLESS=1`.
fn check_or_bless(relative: &str, generated: &str) {
    let path = repo_root().join(relative);
    if std::env::var_os("OTPD_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .and_then(|()| std::fs::write(&path, generated))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let in_repo = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!(
            "{relative}: cannot read it ({e}); generate it with:\n    {REGENERATE}\nand commit it"
        ),
    };
    if in_repo == generated {
        return;
    }
    let ours: Vec<&str> = in_repo.lines().collect();
    let theirs: Vec<&str> = generated.lines().collect();
    // Equal lines but different files: the difference is in the line endings.
    let index = (0..ours.len().max(theirs.len()))
        .find(|&i| ours.get(i) != theirs.get(i))
        .unwrap_or(ours.len().min(theirs.len()));
    let line = index + 1;
    let ours = ours.get(index).copied().unwrap_or("(end of file)");
    let theirs = theirs.get(index).copied().unwrap_or("(end of file)");
    panic!(
        "{relative} is out of date with otpd/src/cli.rs (or tests/manpages.rs).\n\
         First difference, line {line}:\n    in the repo: {ours}\n    generated:   {theirs}\n\
         Update it with:\n    {REGENERATE}\nand commit the result."
    );
}

#[test]
fn otpd_8_is_generated_from_the_cli() {
    let page = otpd_8();
    // Every subcommand and every option must be on the page.
    let cmd = Cli::command();
    for sub in cmd.get_subcommands() {
        assert!(
            page.contains(&format!(".SS {}\n", sub.get_name())),
            "otpd.8 misses the subcommand {}",
            sub.get_name()
        );
        for arg in sub.get_arguments() {
            let shown = match arg.get_long() {
                Some(long) => format!("\\-\\-{}", long.replace('-', "\\-")),
                None => arg.get_id().as_str().to_uppercase(),
            };
            assert!(
                page.contains(&shown),
                "otpd.8 misses {shown} of {}",
                sub.get_name()
            );
        }
    }
    for long in ["config", "socket", "help", "version"] {
        assert!(page.contains(&format!("\\fB\\-\\-{long}\\fR")), "--{long}");
    }
    check_or_bless("packaging/man/otpd.8", &page);
}

#[test]
fn completions_are_generated_from_the_cli() {
    check_or_bless("packaging/completions/otpd.bash", &completion(Shell::Bash));
    check_or_bless("packaging/completions/_otpd", &completion(Shell::Zsh));
    check_or_bless("packaging/completions/otpd.fish", &completion(Shell::Fish));
}

/// `(section, key)` of every key `packaging/otpd.toml` shows (`#key = value`
/// lines), with the value shown; `section` is "" at the top level.
fn shipped_keys() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in read("packaging/otpd.toml").lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.strip_prefix('#').and_then(|l| l.split_once(" = "))
        {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                // `#digits = 6                # 6 or 8`: the value without its comment.
                let value = match value.find("  #") {
                    Some(at) => &value[..at],
                    None => value,
                };
                keys.push((section.clone(), key.to_owned(), value.trim().to_owned()));
            }
        }
    }
    keys
}

/// Roff source as plain text, enough to look for a value in it.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\(dq", "\"")
        .replace("\\(aq", "'")
        .replace("\\&", "")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}

/// `(section, key)` → the text of its entry, for every `.TP` / `.B key`
/// entry of otpd.toml(5); sections are `.SS [name]`, other `.SS` the top level.
fn documented_keys(page: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries: Vec<(String, String, String)> = Vec::new();
    let mut lines = page.lines().peekable();
    let mut in_entry = false;
    while let Some(line) = lines.next() {
        if let Some(heading) = line.strip_prefix(".SS ") {
            let heading = heading.trim_matches('"');
            section = match heading.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(name) => name.to_owned(),
                None => String::new(),
            };
            in_entry = false;
        } else if line.starts_with(".SH ") {
            section.clear();
            in_entry = false;
        } else if line == ".TP" {
            in_entry = false;
            if let Some(key) = lines.peek().and_then(|l| l.strip_prefix(".B ")) {
                let key = key.to_owned();
                lines.next();
                entries.push((section.clone(), key, String::new()));
                in_entry = true;
            }
        } else if in_entry {
            let entry = entries.last_mut().expect("in an entry");
            entry.2.push_str(&plain(line));
            entry.2.push('\n');
        }
    }
    entries
}

#[test]
fn otpd_toml_5_documents_every_key_of_the_shipped_config() {
    let page = read("packaging/man/otpd.toml.5");
    let documented = documented_keys(&page);
    let shipped = shipped_keys();
    assert!(shipped.len() >= 20, "too few keys found: {shipped:?}");
    let name = |s: &str, k: &str| {
        if s.is_empty() {
            k.to_owned()
        } else {
            format!("[{s}] {k}")
        }
    };

    let sections: BTreeSet<&str> = shipped.iter().map(|(s, _, _)| s.as_str()).collect();
    for section in sections.iter().filter(|s| !s.is_empty()) {
        assert!(
            page.lines().any(|l| l == format!(".SS [{section}]")),
            "otpd.toml.5 has no `.SS [{section}]` for the section of packaging/otpd.toml"
        );
    }
    for (section, key, value) in &shipped {
        let entry = documented
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .unwrap_or_else(|| {
                panic!(
                    "packaging/man/otpd.toml.5 does not document {} (an entry `.TP` / `.B {key}` under `.SS [{section}]`)",
                    name(section, key)
                )
            });
        assert!(
            entry.2.contains(value.as_str()),
            "otpd.toml.5, {}: packaging/otpd.toml shows {value}, the page does not:\n{}",
            name(section, key),
            entry.2
        );
    }
    for (section, key, _) in &documented {
        assert!(
            shipped.iter().any(|(s, k, _)| s == section && k == key),
            "otpd.toml.5 documents {}, which packaging/otpd.toml does not show",
            name(section, key)
        );
    }
}

/// `man --warnings` has nothing to say about any page we ship (skipped, with
/// a note, where man is not installed; under CI that fails instead).
#[test]
fn man_pages_render_without_warnings() {
    let dir = repo_root().join("packaging/man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "5" || e == "8"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 3, "pages: {pages:?}");
    for page in pages {
        let output = match std::process::Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
        {
            Ok(output) => output,
            Err(e) => {
                ci::skip(
                    "man_pages_render_without_warnings",
                    &format!("cannot run man ({e}; apt-get install man-db)"),
                );
                return;
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.trim().is_empty(),
            "man --warnings -l {}:\n{stderr}",
            page.display()
        );
    }
}
