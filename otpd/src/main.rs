//! `otpd`: the daemon (`otpd serve`) and its admin commands.

#![forbid(unsafe_code)]

use clap::Parser;

/// jemalloc instead of glibc's malloc: it returns what the daemon freed
/// (the start-up check reads every record once) to the system
/// (docs/performance.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The filter is the log's alone: RUST_LOG never drops an audit line.
    // Once the daemon chains them, the audit layer writes those lines and
    // the log leaves them out.
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() != otpd::server::audit::TARGET || !otpd::server::audit::chained()
        }));
    tracing_subscriber::registry()
        .with(log)
        .with(otpd::server::audit::AuditLayer)
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
    let client = || Client::new(&config.socket, &config.state_dir);
    match cli.command {
        Command::Serve => {
            init_logging("info");
            otpd::server::serve(config.clone()).map_err(|e| CliError::Refused(e.0))
        }
        Command::CheckConfig { .. } => admin::check_config(&config),
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
            otpd::cli::ImportSource::Pskc {
                file,
                users,
                user,
                key_file,
                password,
                options,
            } => admin::import_pskc(
                &client(),
                &file,
                users.as_deref(),
                user,
                key_file.as_deref(),
                password,
                options,
            ),
        },
        Command::Unlock { user } => admin::unlock(&client(), user),
        Command::Forget { user, all: _, key } => admin::forget(&client(), user, key),
        Command::RecoveryCodes { user, count } => admin::recovery_codes(&client(), user, count),
        Command::Phone {
            user,
            number,
            confirm,
        } => admin::phone(&client(), user, number, confirm),
        Command::Status => admin::status(&client()),
        Command::Audit { command } => match command {
            otpd::cli::AuditCommand::Verify { source, key_file } => {
                admin::audit::verify(&config, &client(), &source, &key_file)
            }
            otpd::cli::AuditCommand::Export {
                source,
                since,
                json,
            } => admin::audit::export(&config, &source, since.as_deref(), json),
        },
        Command::SelfService { command } => admin::self_service(&client(), command),
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
