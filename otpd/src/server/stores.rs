//! Opening the configured store, and `otpd migrate --to postgres`.

use super::keyfile;
use super::ServeError;
use crate::config::{Config, StoreKind};
use crate::store::{SledStore, Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(feature = "postgres")]
use {
    super::setup::{check_trusted_file, Trust},
    crate::store::{PgSettings, PgStore},
    std::os::unix::fs::MetadataExt,
    std::path::Path,
    std::time::Duration,
    zeroize::Zeroizing,
};

/// The store `config` names, opened and checked against the key file.
pub fn open(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    match config.store.kind {
        StoreKind::Sled => open_sled(config).map(|s| Arc::new(s) as Arc<dyn Store>),
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres => Err(ServeError(crate::config::built_without(
            "[store] kind = \"postgres\"",
            crate::config::Feature::Postgres,
        ))),
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => {
            let settings = PgSettings {
                anchor_file: postgres_anchor(config),
                ..pg_settings(config, None)?
            };
            if settings.anchor_file.is_none() {
                tracing::warn!(
                    "[store] anchor_dir is off: an older copy of the fleet's database put \
                     back would not be noticed"
                );
            }
            open_postgres(config, settings).map(|s| Arc::new(s) as _)
        }
    }
}

/// This host's anchor for the sled store (`[store] anchor_dir`), outside
/// `state_dir`: see [`crate::store::anchor`].
pub fn sled_anchor(config: &Config) -> Option<PathBuf> {
    config.anchor_dir().map(|dir| dir.join("store.anchor"))
}

#[cfg(feature = "postgres")]
/// This host's anchor for the fleet's database, in `[store] anchor_dir`
/// too (it only has to be out of the database's reach).
pub fn postgres_anchor(config: &Config) -> Option<PathBuf> {
    config.anchor_dir().map(|dir| dir.join("postgres.anchor"))
}

fn open_sled(config: &Config) -> Result<SledStore, ServeError> {
    let store_dir = config.state_dir.join("store");
    let new_store = !store_dir.join("db").exists();
    let key_existed = keyfile::KeySource::of(config).path().exists();
    let anchor = sled_anchor(config);
    if anchor.is_none() {
        tracing::warn!(
            "[store] anchor_dir is off: an older copy of the state directory put back \
             would not be noticed"
        );
    }
    let store = SledStore::open_anchored(&store_dir, anchor.as_deref(), |stored| {
        keyfile::load_key(config, stored).map_err(|e| StoreError::WrongKey(e.0))
    })
    .map_err(|e| ServeError(e.to_string()))?;
    if new_store && key_existed {
        // With the store and its watermark both gone nothing says a store
        // was here; the operator must at least read what happened.
        tracing::warn!(
            store = %store_dir.display(),
            "started a new, empty store with the existing key file; if this host had \
             enrolments, its store is gone (restore it from a backup)"
        );
    }
    Ok(store)
}

#[cfg(feature = "postgres")]
fn open_postgres(config: &Config, settings: PgSettings) -> Result<PgStore, ServeError> {
    let name = match PgStore::target_of(&settings.url) {
        Ok(target) => format!("the PostgreSQL store {target}"),
        Err(e) => return Err(ServeError(e.to_string())),
    };
    PgStore::open(&settings, |stored| {
        let name = name.as_str();
        let hint = "every host of a fleet needs the same key file: copy it from a host that \
                    works; after an `otpd rekey`, copy the new one";
        keyfile::load_key_for(config, stored, name, hint).map_err(|e| StoreError::WrongKey(e.0))
    })
    .map_err(|e| ServeError(e.to_string()))
}

#[cfg(feature = "postgres")]
/// What `otpd check-config` can check of a PostgreSQL store without
/// connecting: the connection string (from `url` or a private `url_file`,
/// no password in a config others can read) parses, and `ca_file` exists.
/// Returns `user@host:port/db`.
pub fn check_postgres(config: &Config) -> Result<String, ServeError> {
    let settings = pg_settings(config, None)?;
    if let Some(ca) = &settings.ca_file {
        std::fs::metadata(ca)
            .map_err(|e| ServeError(format!("[store] ca_file {}: {e}", ca.display())))?;
    }
    PgStore::target_of(&settings.url).map_err(|e| ServeError(e.to_string()))
}

#[cfg(feature = "postgres")]
/// How to reach the database: `url` if given (`otpd migrate`), else the
/// configured `url` or `url_file`; the rest from `[store]`, without the
/// anchor.
pub fn pg_settings(config: &Config, url: Option<&str>) -> Result<PgSettings, ServeError> {
    let store = &config.store;
    let url = match (url, &store.url, &store.url_file) {
        (Some(url), ..) => Zeroizing::new(url.to_owned()),
        (None, Some(url), _) => {
            refuse_password_in_shared_config(config, &url.0)?;
            url.0.clone()
        }
        (None, None, Some(path)) => read_url_file(path)?,
        (None, None, None) => {
            return Err(ServeError(
                "no PostgreSQL connection string: set [store] url or url_file, or give one \
                 on the command line"
                    .into(),
            ))
        }
    };
    Ok(PgSettings {
        url,
        ca_file: store.ca_file.clone(),
        timeout: Duration::from_millis(store.timeout_ms),
        pool_size: usize::try_from(store.pool_size).unwrap_or(16),
        // Kept by the daemon alone (`open`): the admin commands run as
        // root beside it.
        anchor_file: None,
        synchronous_commit: store.synchronous_commit,
    })
}

#[cfg(feature = "postgres")]
/// A password in a config file that others can read would be one `cat`
/// away from every user of the host.
fn refuse_password_in_shared_config(config: &Config, url: &str) -> Result<(), ServeError> {
    let has_password = url
        .parse::<tokio_postgres::Config>()
        .map(|c| c.get_password().is_some())
        .unwrap_or(false);
    let Some(path) = &config.path else {
        return Ok(());
    };
    if !has_password {
        return Ok(());
    }
    let mode = std::fs::metadata(path).map(|m| m.mode()).unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(ServeError(format!(
            "[store] url in {} holds a password, and the file is readable by others \
             (mode {:o}): move the connection string to a file of its own with \
             `url_file = \"/etc/otpd/db-url\"` (mode 0600), or chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(feature = "postgres")]
fn read_url_file(path: &Path) -> Result<Zeroizing<String>, ServeError> {
    check_trusted_file("[store] url_file", path, Trust::Private)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        ServeError(format!(
            "[store] url_file {}: cannot read: {e}",
            path.display()
        ))
    })?);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    match line {
        Some(line) => Ok(Zeroizing::new(line.to_owned())),
        None => Err(ServeError(format!(
            "[store] url_file {}: no connection string in it",
            path.display()
        ))),
    }
}

/// `otpd check-config` in a build without the PostgreSQL store (which
/// refuses such a config when it loads it).
#[cfg(not(feature = "postgres"))]
pub fn check_postgres(_config: &Config) -> Result<String, ServeError> {
    Err(ServeError(crate::config::built_without(
        "[store] kind = \"postgres\"",
        crate::config::Feature::Postgres,
    )))
}

/// `otpd migrate` in a build without the PostgreSQL store.
#[cfg(not(feature = "postgres"))]
pub fn migrate_to_postgres(_config: &Config, _url: Option<&str>) -> Result<String, ServeError> {
    Err(ServeError(crate::config::built_without(
        "otpd migrate --to postgres",
        crate::config::Feature::Postgres,
    )))
}

/// What `otpd migrate` found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Users in the sled store.
    pub users: usize,
    /// Users copied now.
    pub copied: usize,
    /// Users that were in the database already, identical.
    pub already_there: usize,
    /// Failure counters copied with the copied users.
    pub counters: usize,
}

#[cfg(feature = "postgres")]
/// `otpd migrate --to postgres [URL]`: copies every user of this host's
/// sled store, with its failure counters, into the database. The daemon
/// must be stopped (sled is single-process). Idempotent: a user already in
/// the database with an identical record is left alone; if any user is
/// there with a different record, nothing at all is copied.
pub fn migrate_to_postgres(config: &Config, url: Option<&str>) -> Result<String, ServeError> {
    let store_dir = config.state_dir.join("store");
    if !store_dir.join("db").exists() {
        return Err(ServeError(format!(
            "there is no sled store in {}: nothing to migrate",
            store_dir.display()
        )));
    }
    // Read as the state directory's owner, which holds its lock until this
    // returns (root reads the key for it): see server::worker.
    let key = keyfile::KeySource::of(config);
    let key = keyfile::read_key_text(
        key.path(),
        super::worker::state_dir_owner(&config.state_dir),
    )?;
    let sled = super::worker::export_sled(&config.state_dir, sled_anchor(config).as_deref(), key)?;
    let pg = open_postgres(config, pg_settings(config, url)?)?;
    let fail = |e: StoreError| ServeError(e.to_string());
    let users = sled.users().map_err(fail)?;
    let mut report = MigrateReport {
        users: users.len(),
        ..MigrateReport::default()
    };
    // First every check, then the writes: a refusal leaves the database
    // as it was.
    let mut differ = Vec::new();
    let mut to_copy = Vec::new();
    for (name, record) in &users {
        match pg.user(name).map_err(fail)? {
            None => to_copy.push((name, record)),
            Some(there) if &there == record => report.already_there += 1,
            Some(_) => differ.push(name.as_str()),
        }
    }
    if !differ.is_empty() {
        return Err(ServeError(format!(
            "{} of the {} users are in the database {} already with different data \
             (enrolment, counters or replay state): {}; nothing was copied. The database \
             is probably in use: remove these users there (otpd remove USER on a host that \
             uses it) or migrate into an empty database",
            differ.len(),
            users.len(),
            pg.target(),
            differ.join(", ")
        )));
    }
    for (name, record) in to_copy {
        let sources = sled.sources_of(name).map_err(fail)?;
        if pg.import_user(name, record, &sources).map_err(fail)? {
            report.copied += 1;
            report.counters += sources.len();
        } else {
            // Added by someone else since the check: compare again.
            match pg.user(name).map_err(fail)? {
                Some(there) if &there == record => report.already_there += 1,
                _ => {
                    return Err(ServeError(format!(
                        "user {name} appeared in the database {} with different data while \
                         migrating; {} users were copied before it. Is a daemon using the \
                         database? Run otpd migrate again once it is stopped",
                        pg.target(),
                        report.copied
                    )))
                }
            }
        }
    }
    // Verify: every user reads back from the database as it is in sled.
    for (name, record) in &users {
        match pg.user(name).map_err(fail)? {
            Some(there) if &there == record => {}
            _ => {
                return Err(ServeError(format!(
                    "verification failed: user {name} does not read back from the database {} \
                     as it is in the sled store",
                    pg.target()
                )))
            }
        }
    }
    Ok(format!(
        "{} users in the sled store {}: {} copied (with {} failure counters), {} already in \
         the database and identical; verified: all {} read back identical from {}.\n\
         Next: set [store] kind = \"postgres\" in the config of every host, copy the key file \
         {} to every host, and start otpd.",
        report.users,
        store_dir.display(),
        report.copied,
        report.counters,
        report.already_there,
        report.users,
        pg.target(),
        keyfile::KeySource::of(config).path().display(),
    ))
}

/// `otpd seal-store`: seals a sled store written by an otpd from before
/// encryption at rest ([`SledStore::seal_store`]), with the key file (made
/// now if missing). The daemon must be stopped. Refuses a store that has
/// had a key: records in clear there were planted.
pub fn seal_store(config: &Config) -> Result<String, ServeError> {
    if config.store.kind == StoreKind::Postgres {
        return Err(ServeError(
            "the store is PostgreSQL ([store] kind), whose records are always sealed: \
             nothing to do"
                .into(),
        ));
    }
    // A running daemon is refused before anything is made (the key file);
    // the store work takes the lock again for itself, as the state
    // directory's owner (server::worker).
    drop(super::setup::lock_state_dir(
        &config.state_dir,
        Some("otpd seal-store"),
    )?);
    let store_dir = config.state_dir.join("store");
    if !store_dir.join("db").exists() {
        return Err(ServeError(format!(
            "there is no store in {}: nothing to seal",
            store_dir.display()
        )));
    }
    let source = keyfile::KeySource::of(config);
    let key = if source.path().exists() {
        keyfile::read_key_text(
            source.path(),
            super::worker::state_dir_owner(&config.state_dir),
        )?
    } else {
        keyfile::create_key_text(source.path())?
    };
    let (records, key_id, held) =
        super::worker::seal_store(&config.state_dir, sled_anchor(config).as_deref(), key)?;
    held.finish()?;
    Ok(format!(
        "sealed {records} records of the store in {} with key ID {key_id} ({}); start otpd",
        store_dir.display(),
        keyfile::KeySource::of(config).path().display()
    ))
}
