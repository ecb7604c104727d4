//! `otpd`: the daemon (`otpd serve`) and its admin commands.

use clap::{Parser, Subcommand};
use otpd::admin::{self, CliError, Client, EnrollOptions, EXIT_STATUS_HELP};
use otpd::config::{Config, DEFAULT_CONFIG_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "otpd",
    version,
    about = "A second factor for Linux logins: TOTP codes checked by a daemon that alone holds the secrets",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// Config file [default: /etc/otpd/otpd.toml]
    #[arg(long, global = true, env = "OTPD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// The daemon's socket (overrides the config)
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Remove a user's token and counters
    Remove {
        /// The user
        user: String,
    },
    /// Clear a user's failure counters and backoff
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
    CheckConfig,
}

fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let (path, explicit) = match &cli.config {
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

fn run(cli: Cli) -> Result<(), CliError> {
    let config = load_config(&cli)?;
    let client = || Client::new(&config.socket);
    match cli.command {
        Command::Serve => {
            init_logging("info");
            otpd::server::serve(config.clone()).map_err(|e| CliError::Refused(e.0))
        }
        Command::CheckConfig => {
            println!(
                "config is valid: socket {}, state_dir {}, issuer {:?}, {} {} digits {} s window ±{}, limits {:?}",
                config.socket.display(),
                config.state_dir.display(),
                config.issuer(),
                config.totp.algorithm,
                config.totp.digits,
                config.totp.period,
                config.totp.window,
                config.rules().limits
            );
            match (&config.web.listen, &config.web.public_url) {
                (Some(listen), Some(url)) => println!(
                    "enrolment pages: {}://{listen}, links {url}/enroll/…",
                    if config.web.tls_cert.is_some() {
                        "https"
                    } else {
                        "http"
                    }
                ),
                (None, Some(url)) => println!(
                    "enrolment pages: not served here ([web] listen unset), links {url}/enroll/…"
                ),
                _ => println!("enrolment pages: off"),
            }
            match &config.sms.command {
                Some(command) => println!(
                    "text messages: {} (timeout {} s, {} per user per hour)",
                    command.display(),
                    config.sms.timeout,
                    config.sms.max_per_hour
                ),
                None => println!("text messages: off"),
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
        Command::Remove { user } => admin::remove(&client(), user),
        Command::Unlock { user } => admin::unlock(&client(), user),
        Command::RecoveryCodes { user, count } => admin::recovery_codes(&client(), user, count),
        Command::Phone {
            user,
            number,
            confirm,
        } => admin::phone(&client(), user, number, confirm),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpd: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
