//! `otpd serve`: the daemon.

// Without the pages (feature `web`), the handler's side of them
// (`handler::WebBackend`) is built but has no caller.
#[cfg_attr(not(feature = "web"), allow(dead_code, unused_imports))]
mod handler;
pub mod keyfile;
mod listener;
mod login;
pub mod policy;
mod setup;
mod slots;
pub mod sms;
mod statefs;
pub mod stores;
pub mod worker;

pub use handler::Handler;

use crate::config::Config;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

/// Runs the daemon until SIGTERM or SIGINT; returns after a clean shutdown.
pub fn serve(config: Config) -> Result<(), ServeError> {
    use setup::{check_trusted_file, Trust};
    let mut config = config;
    // A loaded config was checked already; this covers one built in code.
    config
        .check_features(crate::config::BuiltFeatures::THIS_BINARY)
        .map_err(ServeError)?;
    // First, while this is the only thread.
    sms::prepare(&mut config.sms).map_err(ServeError)?;
    if let Some(path) = &config.path {
        check_trusted_file("config", path, Trust::NoForeignWrites)?;
    }
    if let Some(key) = &config.web.tls_key {
        check_trusted_file("[web] tls_key", key, Trust::Private)?;
    }
    if let Some(command) = &config.sms.command {
        check_trusted_file("[sms] command", command, Trust::NoForeignWrites)?;
        info!(
            command = %command.display(),
            "text messages are sent {}",
            sms::describe_sender(&config.sms).map_err(ServeError)?
        );
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    setup::prepare_state_dir(&config.state_dir)?;
    // Held for the daemon's lifetime: a second daemon on the same state_dir
    // fails here, before it touches the store or the socket.
    let _lock = setup::lock_state_dir(&config.state_dir, None)?;
    if rekey_backup(&config).exists() {
        return Err(ServeError(format!(
            "`otpd rekey` was interrupted ({} exists): run it again with the same new key \
             file to finish, then start otpd",
            rekey_backup(&config).display()
        )));
    }
    let store = stores::open(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("otpd")
        .build()
        .map_err(|e| ServeError(format!("cannot start the runtime: {e}")))?;
    let handler = Arc::new(Handler::new(store.clone(), config.clone()));
    let own_socket = runtime.block_on(async {
        let signals = listener::stop_signals();
        // The pages first: a port in use or a bad certificate stops the
        // daemon here, with a message, before it reports ready.
        #[cfg(feature = "web")]
        let web = match config.web.listen {
            Some(_) => Some(
                crate::web::bind(&config.web)
                    .await
                    .map_err(|e| ServeError(format!("[web]: {e}")))?,
            ),
            None => None,
        };
        // systemd's otpd.socket, or our own (standalone, or as installed
        // without socket activation). systemd owns the file of its socket.
        let (listener, own_socket) = match setup::inherited_socket()? {
            Some(listener) => {
                info!("using the socket handed over by systemd");
                handler.set_socket_activated(true);
                (listener, false)
            }
            None => (setup::bind_socket(&config.socket)?, true),
        };
        #[cfg(feature = "web")]
        let (stop_web, web_task) = {
            let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
            let web_task = web.map(|bound| {
                let backend = Arc::new(handler::WebBackend::new(handler.clone()));
                tokio::spawn(bound.serve(backend, async move {
                    let _ = web_stopped.await;
                }))
            });
            (stop_web, web_task)
        };
        info!(
            socket = %config.socket.display(),
            state_dir = %config.state_dir.display(),
            "otpd ready"
        );
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        listener::run(listener, handler, signals).await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        #[cfg(feature = "web")]
        {
            let _ = stop_web.send(());
            if let Some(task) = web_task {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!("the enrolment pages stopped with an error: {e}")
                    }
                    Err(e) => tracing::error!("the enrolment pages task failed: {e}"),
                }
            }
        }
        Ok::<bool, ServeError>(own_socket)
    })?;
    if own_socket {
        let _ = std::fs::remove_file(&config.socket);
    }
    store
        .sync()
        .map_err(|e| ServeError(format!("final flush of the store failed: {e}")))?;
    info!("otpd stopped");
    Ok(())
}

/// `otpd rekey NEWKEYFILE`: re-seals every record with the key in
/// `new_key_file` (created first if missing), then installs that key as
/// the configured `key_file`. The daemon must be stopped (the store is
/// single-process). Crash-safe: see [`worker::rekey_store`] and
/// [`crate::store::SledStore::rekey`]; run again with the same file to finish an
/// interrupted rekey. Root reads the key files (which may belong to the
/// daemon's account, as the packages make them) and installs the new one;
/// the work on the store runs as the state directory's owner. Returns what
/// was done, for the operator.
pub fn rekey(config: &Config, new_key_file: &Path) -> Result<String, ServeError> {
    if config.store.kind == crate::config::StoreKind::Postgres {
        let _lock = setup::lock_state_dir(&config.state_dir, Some("otpd rekey"))?;
        return rekey_postgres(config, new_key_file);
    }
    // A running daemon is refused before anything is made (the new key
    // file); the store work takes the lock again for itself.
    drop(setup::lock_state_dir(
        &config.state_dir,
        Some("otpd rekey"),
    )?);
    let daemon_uid = worker::state_dir_owner(&config.state_dir);
    let old = if config.key_file.exists() {
        Some(keyfile::read_key_text(&config.key_file, daemon_uid)?)
    } else {
        None
    };
    let (new, created) = if new_key_file.exists() {
        (keyfile::read_key_text(new_key_file, daemon_uid)?, false)
    } else {
        (keyfile::create_key_text(new_key_file)?, true)
    };
    let new_id = keyfile::key_of(&new, new_key_file)?.id();
    let (report, held) = worker::rekey_store(&config.state_dir, old, new.clone())?;
    let same_file = match (new_key_file.canonicalize(), config.key_file.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_file {
        keyfile::install_key(&new, &config.key_file)?;
    }
    held.finish()?;
    Ok(format!(
        "{} key ID {new_id}; {} now holds it{}",
        rekey_summary(created, new_key_file, &report, ""),
        config.key_file.display(),
        if same_file {
            String::new()
        } else {
            format!(
                " (keep {} in your backup, or delete it)",
                new_key_file.display()
            )
        }
    ))
}

/// `otpd rekey` in a build without the PostgreSQL store (which refuses
/// such a config when it loads it).
#[cfg(not(feature = "postgres"))]
fn rekey_postgres(_config: &Config, _new_key_file: &Path) -> Result<String, ServeError> {
    Err(ServeError(crate::config::built_without(
        "[store] kind = \"postgres\"",
        crate::config::Feature::Postgres,
    )))
}

/// `otpd rekey` for a fleet's database: [`crate::store::PgStore::rekey`]
/// (one transaction), then the new key becomes this host's `key_file`.
#[cfg(feature = "postgres")]
fn rekey_postgres(config: &Config, new_key_file: &Path) -> Result<String, ServeError> {
    let settings = stores::pg_settings(config, None)?;
    // The packages give the key file to the daemon's account.
    let daemon_uid = worker::state_dir_owner(&config.state_dir);
    let old = keyfile::read_key_text(&config.key_file, daemon_uid)
        .and_then(|text| keyfile::key_of(&text, &config.key_file))
        .map_err(|e| {
            ServeError(format!(
                "{}: the current key is needed to open the fleet's records",
                e.0
            ))
        })?;
    let (new_text, created) = if new_key_file.exists() {
        (keyfile::read_key_text(new_key_file, daemon_uid)?, false)
    } else {
        (keyfile::create_key_text(new_key_file)?, true)
    };
    let new = keyfile::key_of(&new_text, new_key_file)?;
    let new_id = new.id();
    let report =
        crate::store::PgStore::rekey(&settings, old, new).map_err(|e| ServeError(e.to_string()))?;
    let same_file = match (new_key_file.canonicalize(), config.key_file.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_file {
        keyfile::install_key(&new_text, &config.key_file)?;
    }
    Ok(format!(
        "{} key ID {new_id}; {} now holds it. Copy it to every host of the fleet (as {}), \
         then start otpd there: a host with the old key refuses to start",
        rekey_summary(created, new_key_file, &report, " of the fleet's database"),
        config.key_file.display(),
        config.key_file.display(),
    ))
}

/// "created FILE with a new key; N records{of} re-sealed with" (or "were
/// already sealed with"), the start of both rekeys' reports.
fn rekey_summary(
    created: bool,
    new_key_file: &Path,
    report: &crate::store::RekeyReport,
    of: &str,
) -> String {
    format!(
        "{}{} records{of} {}",
        if created {
            format!("created {} with a new key; ", new_key_file.display())
        } else {
            String::new()
        },
        report.records,
        if report.already_done {
            "were already sealed with"
        } else {
            "re-sealed with"
        },
    )
}

/// The copy of the store that `otpd rekey` keeps until its switch is done.
pub fn rekey_backup(config: &Config) -> std::path::PathBuf {
    config.state_dir.join(worker::REKEY_BACKUP)
}
