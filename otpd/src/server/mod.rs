//! `otpd serve`: the daemon.

mod handler;
pub mod keyfile;
mod listener;
pub mod policy;
mod setup;
mod slots;
pub mod sms;
pub mod stores;

pub use handler::Handler;

use crate::config::Config;
use crate::store::SledStore;
use std::os::unix::fs::MetadataExt;
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
    if let Some(path) = &config.path {
        check_trusted_file("config", path, Trust::NoForeignWrites)?;
    }
    if let Some(key) = &config.web.tls_key {
        check_trusted_file("[web] tls_key", key, Trust::Private)?;
    }
    if let Some(command) = &config.sms.command {
        check_trusted_file("[sms] command", command, Trust::NoForeignWrites)?;
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    setup::prepare_state_dir(&config.state_dir)?;
    // Held for the daemon's lifetime: a second daemon on the same state_dir
    // fails here, before it touches the store or the socket.
    let _lock = setup::lock_state_dir(&config.state_dir)?;
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
        // The pages first: a port in use or a bad certificate stops the
        // daemon here, with a message, before it reports ready.
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
        let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
        let web_task = web.map(|bound| {
            let backend = Arc::new(handler::WebBackend::new(handler.clone()));
            tokio::spawn(bound.serve(backend, async move {
                let _ = web_stopped.await;
            }))
        });
        info!(
            socket = %config.socket.display(),
            state_dir = %config.state_dir.display(),
            "otpd ready"
        );
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        listener::run(listener, handler).await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let _ = stop_web.send(());
        if let Some(task) = web_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("the enrolment pages stopped with an error: {e}"),
                Err(e) => tracing::error!("the enrolment pages task failed: {e}"),
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
/// single-process). Crash-safe: see [`SledStore::rekey`]; run again with the
/// same file to finish an interrupted rekey. Returns what was done, for the
/// operator.
pub fn rekey(config: &Config, new_key_file: &Path) -> Result<String, ServeError> {
    let _lock = setup::lock_state_dir(&config.state_dir).map_err(|e| {
        ServeError(format!(
            "{}; otpd rekey needs the store to itself (systemctl stop otpd.socket otpd.service)",
            e.0
        ))
    })?;
    if config.store.kind == crate::config::StoreKind::Postgres {
        return rekey_postgres(config, new_key_file);
    }
    let store_dir = config.state_dir.join("store");
    let backup = rekey_backup(config);
    if backup.exists() {
        // A rekey that did not finish: whatever it left (sled can fail to
        // recover from a SIGKILL at a bad moment), start again from the
        // copy taken before it touched anything.
        restore_dir(&backup, &store_dir)?;
    } else if !store_dir.join("db").exists() {
        return Err(ServeError(format!(
            "there is no store in {}: nothing to rekey",
            store_dir.display()
        )));
    } else {
        let partial = config.state_dir.join("store.before-rekey.partial");
        let _ = std::fs::remove_dir_all(&partial);
        copy_dir_synced(&store_dir, &partial)?;
        std::fs::rename(&partial, &backup)
            .and_then(|()| std::fs::File::open(&config.state_dir)?.sync_all())
            .map_err(|e| ServeError(format!("cannot keep a copy of the store: {e}")))?;
    }
    let (new, created) = if new_key_file.exists() {
        (keyfile::read_key(new_key_file)?, false)
    } else {
        (keyfile::create_key_file(new_key_file)?, true)
    };
    let old = if config.key_file.exists() {
        Some(keyfile::read_key(&config.key_file)?)
    } else {
        None
    };
    let report =
        SledStore::rekey(&store_dir, old.as_ref(), &new).map_err(|e| ServeError(e.to_string()))?;
    // The switch is durable: the copy is no longer needed (removed before
    // the key is installed, so a copy on disk always means "old key").
    std::fs::remove_dir_all(&backup)
        .and_then(|()| std::fs::File::open(&config.state_dir)?.sync_all())
        .map_err(|e| ServeError(format!("cannot remove {}: {e}", backup.display())))?;
    let same_file = match (new_key_file.canonicalize(), config.key_file.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_file {
        keyfile::install_key_file(new_key_file, &config.key_file)?;
    }
    // Files sled made while root ran this belong to the daemon's user.
    let owner = std::fs::metadata(&config.state_dir)
        .map_err(|e| ServeError(format!("state_dir {}: {e}", config.state_dir.display())))?;
    chown_tree(&config.state_dir, owner.uid(), owner.gid())?;
    Ok(format!(
        "{} key ID {}; {} now holds it{}",
        rekey_summary(created, new_key_file, &report, ""),
        new.id(),
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

/// `otpd rekey` for a fleet's database: [`crate::store::PgStore::rekey`]
/// (one transaction), then the new key becomes this host's `key_file`.
fn rekey_postgres(config: &Config, new_key_file: &Path) -> Result<String, ServeError> {
    let settings = stores::pg_settings(config, None)?;
    let old = keyfile::read_key(&config.key_file).map_err(|e| {
        ServeError(format!(
            "{}: the current key is needed to open the fleet's records",
            e.0
        ))
    })?;
    let (new, created) = if new_key_file.exists() {
        (keyfile::read_key(new_key_file)?, false)
    } else {
        (keyfile::create_key_file(new_key_file)?, true)
    };
    let new_id = new.id();
    let report =
        crate::store::PgStore::rekey(&settings, old, new).map_err(|e| ServeError(e.to_string()))?;
    let same_file = match (new_key_file.canonicalize(), config.key_file.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_file {
        keyfile::install_key_file(new_key_file, &config.key_file)?;
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

pub(super) fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), ServeError> {
    let err =
        |p: &Path, e: std::io::Error| ServeError(format!("cannot chown {}: {e}", p.display()));
    for entry in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let path = entry.map_err(|e| err(dir, e))?.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| err(&path, e))?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| err(&path, e))?;
        }
        if meta.is_dir() {
            chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}

/// The copy of the store that `otpd rekey` keeps until its switch is done.
pub fn rekey_backup(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("store.before-rekey")
}

/// Copies a directory of plain files, syncing every file and the directory.
fn copy_dir_synced(from: &Path, to: &Path) -> Result<(), ServeError> {
    let err = |p: &Path, e: std::io::Error| ServeError(format!("cannot copy {}: {e}", p.display()));
    std::fs::create_dir_all(to).map_err(|e| err(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| err(from, e))? {
        let path = entry.map_err(|e| err(from, e))?.path();
        let target = to.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            copy_dir_synced(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(|e| err(&path, e))?;
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(|e| err(&target, e))?;
        }
    }
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(to, e))
}

/// Replaces `store` with a copy of `backup` (which stays).
fn restore_dir(backup: &Path, store: &Path) -> Result<(), ServeError> {
    let _ = std::fs::remove_dir_all(store);
    copy_dir_synced(backup, store)
}
