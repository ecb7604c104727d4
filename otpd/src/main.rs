//! `otpd`: the daemon (`otpd serve`) and its admin commands.

#![forbid(unsafe_code)]

use clap::Parser;
use otpd::admin::{self, CliError, Client};
use otpd::cli::{Cli, Command};
use otpd::config::{Config, DEFAULT_CONFIG_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

fn load_config(cli: &Cli) -> Result<Config, CliError> {
    // `check-config PATH` checks that file, whatever --config or OTPD_CONFIG say.
    let chosen = match &cli.command {
        Command::CheckConfig { path: Some(path) } => Some(path),
        _ => cli.config.as_ref(),
    };
    let (path, explicit) = match chosen {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(&path, explicit).map_err(|e| CliError::Usage(e.0))?;
    if let Some(socket) = &cli.socket {
        config.socket = socket.clone();
    }
    Ok(config)
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Prints a line to stdout through `admin::emit` (a closed pipe ends the
/// program quietly instead of panicking).
macro_rules! out {
    ($($arg:tt)*) => {
        admin::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

fn run(cli: Cli) -> Result<(), CliError> {
    let config = load_config(&cli)?;
    let client = || Client::new(&config.socket);
    match cli.command {
        Command::Serve => {
            init_logging("info");
            otpd::server::serve(config.clone()).map_err(|e| CliError::Refused(e.0))
        }
        Command::CheckConfig { .. } => {
            // Checked before "config is valid" is printed.
            let database = match config.store.kind {
                otpd::config::StoreKind::Postgres => Some(
                    otpd::server::stores::check_postgres(&config)
                        .map_err(|e| CliError::Usage(e.0))?,
                ),
                otpd::config::StoreKind::Sled => None,
            };
            let sender =
                otpd::server::sms::describe_sender(&config.sms).map_err(CliError::Usage)?;
            out!(
                "config is valid: socket {}, state_dir {}, issuer {:?}, {} {} digits {} s window ±{}, HOTP look-ahead {} resync window {}, limits {:?}",
                config.socket.display(),
                config.state_dir.display(),
                config.issuer(),
                config.totp.algorithm,
                config.totp.digits,
                config.totp.period,
                config.totp.window,
                config.hotp.window,
                config.hotp.resync_window,
                config.rules().limits
            );
            match (&config.web.listen, &config.web.public_url) {
                (Some(listen), Some(url)) => out!(
                    "enrolment pages: {}://{listen}, links {url}/enroll/…",
                    if config.web.tls_cert.is_some() {
                        "https"
                    } else {
                        "http"
                    }
                ),
                (None, Some(url)) => out!(
                    "enrolment pages: not served here ([web] listen unset), links {url}/enroll/…"
                ),
                _ => out!("enrolment pages: off"),
            }
            for warning in config.warnings() {
                out!("warning: {warning}");
            }
            match &config.sms.command {
                Some(command) => out!(
                    "text messages: {} {sender} (timeout {} s, {} per user per hour)",
                    command.display(),
                    config.sms.timeout,
                    config.sms.max_per_hour
                ),
                None => out!("text messages: off"),
            }
            match config.anchor_dir() {
                Some(dir) => out!("rollback anchor: {}", dir.display()),
                None => out!(
                    "rollback anchor: none ([store] anchor_dir = \"\"): an older copy of the \
                     store put back is not noticed"
                ),
            }
            match config.store.kind {
                otpd::config::StoreKind::Sled => {
                    out!(
                        "store: sled in {}",
                        config.state_dir.join("store").display()
                    )
                }
                otpd::config::StoreKind::Postgres => out!(
                    "store: PostgreSQL {}, connection string {}, {} (timeout {} ms, {} connections, \
                     synchronous_commit {})",
                    database.unwrap_or_default(),
                    match &config.store.url_file {
                        Some(path) => format!("from {}", path.display()),
                        None => "in the config".into(),
                    },
                    match &config.store.ca_file {
                        Some(path) => format!("TLS authorities from {}", path.display()),
                        None => "TLS authorities of the system".into(),
                    },
                    config.store.timeout_ms,
                    config.store.pool_size,
                    config.store.synchronous_commit.as_sql()
                ),
            }
            Ok(())
        }
        Command::Enroll(options) => admin::enroll(
            &client(),
            options,
            config
                .web
                .link_expires
                .unwrap_or(otpd::config::DEFAULT_LINK_EXPIRES),
        ),
        Command::Confirm { user, code } => admin::confirm(&client(), user, code),
        Command::Verify { user, code } => admin::verify(&client(), user, code),
        Command::List { json } => admin::list(&client(), json),
        Command::Remove { user, device } => admin::remove(&client(), user, device),
        Command::Resync {
            user,
            code1,
            code2,
            device,
        } => admin::resync(&client(), user, code1, code2, device),
        Command::Import { from } => match from {
            otpd::cli::ImportSource::GoogleAuthenticator {
                user,
                file,
                homes,
                device,
                options,
            } => admin::import_google_authenticator(&client(), user, file, homes, &device, options),
            otpd::cli::ImportSource::Oath {
                file,
                device,
                options,
            } => admin::import_oath(&client(), &file, &device, options),
        },
        Command::Unlock { user } => admin::unlock(&client(), user),
        Command::RecoveryCodes { user, count } => admin::recovery_codes(&client(), user, count),
        Command::Phone {
            user,
            number,
            confirm,
        } => admin::phone(&client(), user, number, confirm),
        Command::Status => admin::status(&client()),
        Command::Keygen { path } => {
            let key = otpd::server::keyfile::create_key_file(&path)
                .map_err(|e| CliError::Refused(e.0))?;
            out!(
                "wrote a new key (key ID {}) to {}",
                key.id(),
                path.display()
            );
            Ok(())
        }
        Command::Migrate { to, url } => {
            let otpd::cli::MigrateTarget::Postgres = to;
            let done = otpd::server::stores::migrate_to_postgres(&config, url.as_deref())
                .map_err(|e| CliError::Refused(e.0))?;
            out!("{done}");
            Ok(())
        }
        Command::SealStore => {
            let done =
                otpd::server::stores::seal_store(&config).map_err(|e| CliError::Refused(e.0))?;
            out!("{done}");
            Ok(())
        }
        Command::Rekey { new_key_file } => {
            let done =
                otpd::server::rekey(&config, &new_key_file).map_err(|e| CliError::Refused(e.0))?;
            out!("{done}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // The store work of root's `rekey` and `migrate`, started by them as
    // the state directory's owner under this name (not a subcommand: it is
    // no command for people), with all it needs on stdin.
    if otpd::server::worker::is_worker(std::env::args_os().next()) {
        return match otpd::server::worker::run_worker() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("otpd: {e}");
                ExitCode::from(1)
            }
        };
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
