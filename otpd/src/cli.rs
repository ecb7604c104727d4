//! `otpd`'s command line (clap). It lives in the library, not in `main.rs`,
//! so the man page and shell completions in `packaging/` are generated from
//! this very definition (`tests/manpages.rs` fails when they drift).

use crate::admin::{EnrollOptions, EXIT_STATUS_HELP};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The whole command line: global options and one subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "otpd",
    version,
    about = "A second factor for Linux logins: TOTP codes checked by a daemon that alone holds the secrets",
    after_help = EXIT_STATUS_HELP
)]
pub struct Cli {
    /// Config file [default: /etc/otpd/otpd.toml]
    #[arg(long, global = true, env = "OTPD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The daemon's socket (overrides the config)
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; their doc comments are the help texts and man page.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd Type=notify)
    Serve,
    /// Start an enrolment: print the otpauth URI, the secret and a QR code
    #[command(after_help = EXIT_STATUS_HELP)]
    Enroll(EnrollOptions),
    /// Validate a pending enrolment with the first code from the app
    #[command(after_help = EXIT_STATUS_HELP)]
    Confirm {
        /// The user
        user: String,
        /// The code; read from stdin when omitted
        code: Option<String>,
    },
    /// Check a code for real (it is used up, like at a login)
    #[command(after_help = EXIT_STATUS_HELP)]
    Verify {
        /// The user
        user: String,
        /// The code; read from stdin when omitted
        code: Option<String>,
    },
    /// List enrolled users (never a secret)
    List {
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a user's tokens and counters, or one device of the user
    Remove {
        /// The user
        user: String,
        /// Only this device; the user keeps the others (the last one is
        /// refused: replace it with enroll --force, or remove the user)
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// Bring a counter-based (HOTP) token back in step: press its button
    /// twice and give both codes
    #[command(after_help = EXIT_STATUS_HELP)]
    Resync {
        /// The user
        user: String,
        /// The first code
        code1: String,
        /// The next code
        code2: String,
        /// Only this device [default: whichever HOTP device the codes fit]
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// Import users from pam_google_authenticator or pam_oath, with their
    /// replay state, so that nobody has to enrol again, or hardware tokens
    /// from their vendor's PSKC file. The files are only read
    #[command(after_help = EXIT_STATUS_HELP)]
    Import {
        /// Where from.
        #[command(subcommand)]
        from: ImportSource,
    },
    /// End a user's remembered logins ([remember]): all, or one SSH key's
    Forget {
        /// The user
        user: String,
        /// Every remembered login of the user
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        all: bool,
        /// Only those of this SSH key (SHA256:… as `ssh-keygen -l` prints it)
        #[arg(long, value_name = "FINGERPRINT")]
        key: Option<String>,
    },
    /// Clear a user's failure counters and backoff (and end remembered logins)
    Unlock {
        /// The user
        user: String,
    },
    /// Replace a user's recovery codes and print the new ones once
    #[command(after_help = EXIT_STATUS_HELP)]
    RecoveryCodes {
        /// The user
        user: String,
        /// How many [default: [recovery] count, else 10]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        count: Option<u32>,
    },
    /// Register a phone number for codes by text message: texts a code to
    /// NUMBER, then registers it with the code (asked on a terminal, or
    /// given later with --confirm)
    #[command(after_help = EXIT_STATUS_HELP)]
    Phone {
        /// The user
        user: String,
        /// The number in international form, e.g. +31612345678
        #[arg(required_unless_present = "confirm")]
        number: Option<String>,
        /// The code from the text message
        #[arg(long, value_name = "CODE", conflicts_with = "number")]
        confirm: Option<String>,
    },
    /// Check the config file and print the settings in effect
    CheckConfig {
        /// The config to check [default: --config, else OTPD_CONFIG, else
        /// /etc/otpd/otpd.toml]
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
    /// Write a new random key file (64 hexadecimal digits, mode 0400);
    /// never overwrites a file
    #[command(after_help = EXIT_STATUS_HELP)]
    Keygen {
        /// Where to write it, e.g. /etc/otpd/otpd.key
        path: PathBuf,
    },
    /// Re-seal every record of the store with the key in NEWKEYFILE
    /// (created if missing), then install it as key_file. Stop the daemon
    /// first. Safe to interrupt: run it again with the same file to finish
    #[command(after_help = EXIT_STATUS_HELP)]
    Rekey {
        /// The new key file
        #[arg(id = "newkeyfile", value_name = "NEWKEYFILE")]
        new_key_file: PathBuf,
    },
    /// Seal a store written by an otpd from before encryption at rest (its
    /// records are in clear) with the key file, made if missing. Stop the
    /// daemon first. Refuses a store that has had a key: records in clear
    /// there were put in by someone without the key
    #[command(after_help = EXIT_STATUS_HELP)]
    SealStore,
    /// Copy this host's sled store (every user, with its replay state and
    /// failure counters) into a PostgreSQL database, for a fleet. Stop the
    /// daemon first. Safe to run again: identical users are skipped, and
    /// nothing is copied if any user is there with different data
    #[command(after_help = EXIT_STATUS_HELP)]
    Migrate {
        /// The kind of store to copy into
        #[arg(long, value_enum, value_name = "KIND")]
        to: MigrateTarget,
        /// The connection string, e.g. postgresql://otpd@db.example.com/otpd?sslmode=require
        /// [default: the config's [store] url or url_file]. A password here is
        /// visible to every user in the process list: prefer url_file
        #[arg(value_name = "URL")]
        url: Option<String>,
    },
    /// Show whether the daemon runs, its version, store, users by state and uptime
    #[command(after_help = EXIT_STATUS_HELP)]
    Status,
    /// The audit trail: check that no line was removed, altered or
    /// reordered, or print it for a SIEM
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Your own second factor, run as yourself (not as root): your devices,
    /// a new device, your recovery codes, your latest logins. Every change
    /// needs a code from one of your active devices, checked like a login
    #[command(name = "self", after_help = EXIT_STATUS_HELP)]
    SelfService {
        /// What to do.
        #[command(subcommand)]
        command: SelfCommand,
    },
}

/// The subcommands of `otpd self`.
#[derive(Debug, Subcommand)]
pub enum SelfCommand {
    /// List your devices and paired phones (never a secret)
    Devices {
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Add a device (a second phone, a key): prints its QR code, then asks
    /// for its first code (or confirm later with otpd self confirm)
    #[command(name = "add-device", after_help = EXIT_STATUS_HELP)]
    AddDevice {
        /// The new device's name (tablet, yubikey …)
        name: String,
        /// A code from one of your active devices; asked for when omitted
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
        /// A recovery code instead (a lost phone); it is used up, and your
        /// administrator is told
        #[arg(long, value_name = "CODE", conflicts_with = "code")]
        recovery_code: Option<String>,
    },
    /// Validate your new device with the first code it shows
    #[command(after_help = EXIT_STATUS_HELP)]
    Confirm {
        /// The device
        name: String,
        /// The code; read from stdin when omitted
        code: Option<String>,
    },
    /// Remove one of your devices or paired phones (never your last active
    /// device)
    #[command(name = "remove-device", after_help = EXIT_STATUS_HELP)]
    RemoveDevice {
        /// The device
        name: String,
        /// A code from one of your active devices; asked for when omitted
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// Replace your recovery codes with a new set, shown once
    #[command(name = "recovery-codes", after_help = EXIT_STATUS_HELP)]
    RecoveryCodes {
        /// A code from one of your active devices; asked for when omitted
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// Your latest logins and failures (service, source, time): was this you?
    Activity {
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// `otpd audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the chain of the audit lines: report the first line removed,
    /// altered or reordered and the last good sequence number, and compare
    /// the end with the running daemon's. Needs the store's key (root).
    /// Exit status: 0 intact, 1 tampered with, 2 bad usage or nothing to
    /// read, 3 intact as far as it goes but its end not compared (the
    /// daemon did not answer, or another host's lines)
    Verify {
        /// Where the lines are
        #[command(flatten)]
        source: AuditSource,
        /// A key file whose chain key may have chained lines (repeat it for
        /// the keys before `otpd rekey`) [default: the configured key]
        #[arg(long, value_name = "FILE")]
        key_file: Vec<PathBuf>,
    },
    /// Print the audit lines, one per line in their own stable format, or
    /// as JSON objects (one per line) with --json. Run as root, the chain is
    /// checked first and a trail that does not verify is not exported
    Export {
        /// Where the lines are
        #[command(flatten)]
        source: AuditSource,
        /// Only lines from then on: a time (2026-12-01T08:00:00Z), a date
        /// (2026-12-01, UTC) or how long ago (24h, 7d)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

/// Where `otpd audit` reads the lines. Without FILE or --journal: the
/// journal where systemd runs, /var/log/otpd.log elsewhere.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditSource {
    /// Log files, oldest first (otpd.log.1 otpd.log)
    #[arg(value_name = "FILE", conflicts_with_all = ["journal", "journal_file"])]
    pub files: Vec<PathBuf>,
    /// The system journal (journalctl SYSLOG_IDENTIFIER=otpd)
    #[arg(long)]
    pub journal: bool,
    /// A journal file instead of the system journal (journalctl --file)
    #[arg(long, value_name = "FILE")]
    pub journal_file: Vec<PathBuf>,
}

/// What `otpd import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// pam_google_authenticator's secret files (~/.google_authenticator):
    /// one with --user USER FILE, or every user's with --homes
    #[command(name = "google-authenticator", after_help = EXIT_STATUS_HELP)]
    GoogleAuthenticator {
        /// The user whose FILE it is
        #[arg(long, requires = "file", conflicts_with = "homes")]
        user: Option<String>,
        /// The secret file
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Every DIR/NAME/.google_authenticator that can be read, as user
        /// NAME [default DIR: /home]
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "/home", required_unless_present = "user")]
        homes: Option<PathBuf>,
        /// The device name of the imported tokens
        #[arg(long, value_name = "NAME", default_value = "google-authenticator")]
        device: String,
        /// --dry-run and --replace
        #[command(flatten)]
        options: ImportOptions,
    },
    /// pam_oath's usersfile (/etc/users.oath): every TOTP and HOTP entry
    #[command(after_help = EXIT_STATUS_HELP)]
    Oath {
        /// The usersfile
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The device name of the imported tokens (a user's second entry
        /// gets NAME-2, and so on)
        #[arg(long, value_name = "NAME", default_value = "oath")]
        device: String,
        /// --dry-run and --replace
        #[command(flatten)]
        options: ImportOptions,
    },
    /// A token vendor's PSKC file (RFC 6030): its HOTP and TOTP keys, in
    /// clear or encrypted, each becoming a device of its user. Every MAC is
    /// checked first: one that does not match refuses the whole file
    #[command(after_help = EXIT_STATUS_HELP)]
    Pskc {
        /// The PSKC file
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Which user each key goes to: CSV lines serial,user[,device], by
        /// the token's serial number (a key without one: its Id). The device
        /// is named token-SERIAL when the line names none. Keys of the file
        /// on no line are not imported
        #[arg(
            long,
            value_name = "MAP.csv",
            conflicts_with = "user",
            required_unless_present = "user"
        )]
        users: Option<PathBuf>,
        /// Every key of the file becomes a device of this user (named
        /// token-SERIAL)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The file is encrypted with a pre-shared key: the file holding it
        /// in hexadecimal
        #[arg(long, value_name = "HEX", conflicts_with = "password")]
        key_file: Option<PathBuf>,
        /// The file is encrypted with a password (PBKDF2): read it from the
        /// terminal without echo, or the first line of stdin when stdin is
        /// not a terminal
        #[arg(long)]
        password: bool,
        /// --dry-run and --replace
        #[command(flatten)]
        options: ImportOptions,
    },
}

/// Options of every import.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ImportOptions {
    /// Print what would happen; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Replace users who are enrolled in otpd already [default: leave them alone]
    #[arg(long)]
    pub replace: bool,
}

/// Where `otpd migrate` copies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateTarget {
    /// A PostgreSQL database (or an engine that speaks its protocol)
    Postgres,
}
