//! `otpd rekey`: the operator's command that re-seals the store under a
//! new key (root reads and installs the key files; the work on the store
//! runs as the state directory's owner, `worker.rs`).

#[cfg(feature = "postgres")]
use super::stores;
use super::{keyfile, setup, worker, ServeError};
use crate::config::Config;
use std::path::Path;

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
