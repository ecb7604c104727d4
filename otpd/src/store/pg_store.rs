//! The fleet store: every host's otpd shares one PostgreSQL database (or an
//! engine that speaks its protocol), so that an enrolment, a spent code or
//! a failure counter written on one host holds on all of them at once.
//!
//! The guarantees of [`Store::commit`] map onto SQL as follows:
//! - The compare-and-swap is one conditional statement on the user's row,
//!   `UPDATE otpd_users SET … WHERE name = $1 AND version = $2`: it wins
//!   iff it changed one row. PostgreSQL locks the row for the statement,
//!   and a concurrent one re-reads the row after the winner commits, finds
//!   another version and changes nothing. A login that accepts a code
//!   bumps the version with the new `last_accepted_step`, so two hosts
//!   that race with one code cannot both win (the replay guard), and a
//!   failure counter is always updated from the value it was read at.
//! - Source counters change in the same transaction as the row, after it,
//!   so they are written only by the winner; the link-token index
//!   (`otpd_tokens`) changes in the row's own statement.
//! - A commit returns only after PostgreSQL's COMMIT returned, and every
//!   writing transaction sets `synchronous_commit` itself (`on`: the WAL is
//!   flushed to disk; or `remote_apply`, [`PgSettings::synchronous_commit`]),
//!   so that a server, database or role default of `off` cannot make a
//!   spent code forgettable.
//!
//! Records are sealed with the key file before they leave the host (the
//! same [`seal`] as the sled store): the database never sees a secret,
//! and every host of a fleet needs the same key file.
//!
//! The trait is synchronous (the daemon calls it on its blocking threads,
//! the CLI from `main`), tokio-postgres is not: the store runs a small
//! runtime of its own and waits for each operation on a channel, which
//! works from any thread, in or out of another runtime.

use super::anchor::{self, Anchor};
use super::{token_hashes, RecordChange, SourcesChange, Store, StoreError};
use crate::config::SynchronousCommit;
use crate::core::record::{SourceCounter, UserRecord};
use crate::core::seal::{self, KeyId, RecordKey, NONCE_LEN};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use zeroize::Zeroizing;

/// The schema's migrations, in order; `otpd_schema` records which ran.
/// Never edit one that was released: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: users (sealed records), per-source failure counters, the key ID
    // the fleet seals with, and the rows the decoy write of an unknown
    // user's login updates.
    "CREATE TABLE otpd_users (
        name text PRIMARY KEY,
        version bigint NOT NULL,
        record bytea NOT NULL
     );
     CREATE TABLE otpd_sources (
        name text NOT NULL,
        source text NOT NULL,
        failures bigint NOT NULL,
        last_failure bigint NOT NULL,
        PRIMARY KEY (name, source)
     );
     CREATE TABLE otpd_meta (
        key text PRIMARY KEY,
        value text NOT NULL
     );
     CREATE TABLE otpd_decoy (
        slot integer PRIMARY KEY,
        value bytea NOT NULL
     );
     INSERT INTO otpd_decoy SELECT g, ''::bytea FROM generate_series(0, 63) AS g;",
    // 2: the link-token index (token hash → user), kept by every commit
    // (see `write_row`). The records written before it are indexed by the
    // first daemon that opens the database with the key (`build_token_index`),
    // which the marker row asks for.
    "CREATE TABLE otpd_tokens (
        token_hash text PRIMARY KEY,
        name text NOT NULL
     );
     CREATE INDEX otpd_tokens_name ON otpd_tokens (name);
     INSERT INTO otpd_meta (key, value) VALUES ('token_index', 'to build');",
];

/// The advisory lock that serialises migrations of daemons starting at the
/// same moment ("otpd" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f74_7064;

/// Decoy rows: a decoy write updates a random one, so that concurrent
/// unknown-user logins do not all queue on one row lock.
const DECOY_SLOTS: u32 = 64;

/// After a failure to reach the database, operations fail at once for this
/// long instead of each waiting for the timeout: logins fail closed fast
/// while the database is down, and the next try after it reconnects.
const DOWN_GRACE: Duration = Duration::from_millis(500);

/// Connections made at start.
const WARM_CONNECTIONS: usize = 4;

/// How long making one connection may take (TCP, TLS, SCRAM), whatever
/// an operation's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long listing every user may take (`otpd list`, `otpd status`).
const USERS_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// The connection string (key=value or `postgresql://` URL).
    pub url: Zeroizing<String>,
    /// PEM file of the authorities that sign the server's certificate;
    /// `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// How long one operation may take, connection included.
    pub timeout: Duration,
    /// Connections at most.
    pub pool_size: usize,
    /// This host's anchor for the database ([`super::anchor`]): checked at
    /// open and kept up to date while the store is open. `None`: neither
    /// (the admin commands that run beside the daemon).
    pub anchor_file: Option<PathBuf>,
    /// What a commit waits for. Set by every writing transaction itself
    /// (`set_config('synchronous_commit', …, true)`, i.e. `SET LOCAL`): a
    /// server, database or role whose default is `off` would acknowledge a
    /// COMMIT before its WAL is on disk, and a crash of the server would
    /// then forget a spent code that a login was told was accepted.
    pub synchronous_commit: SynchronousCommit,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("anchor_file", &self.anchor_file)
            .field("synchronous_commit", &self.synchronous_commit)
            .finish_non_exhaustive()
    }
}

/// The `otpd_meta` row of the fleet's metadata ([`FleetMeta`]).
const META_ROW: &str = "meta";

/// How often, at most, a host that commits raises the fleet's generation
/// (and its anchor with it). A restore of the database is noticed if it
/// undid a raise this host made or saw: everything older than this.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// The fleet's metadata, one JSON value in `otpd_meta`: the database's ID
/// (random, made by the first host), its generation (raised by every host
/// at its start, every [`CHECKPOINT_EVERY`] while it commits, and at its
/// stop; never lowered), and their tag under the key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetMeta {
    store_id: String,
    generation: u64,
    tag: String,
}

impl FleetMeta {
    fn new(key: &RecordKey, store_id: String, generation: u64) -> Self {
        let tag = fleet_tag(key, &store_id, generation);
        Self {
            store_id,
            generation,
            tag,
        }
    }

    fn authentic(&self, key: &RecordKey) -> bool {
        let tag: Option<Vec<u8>> = (0..self.tag.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(self.tag.get(i..i + 2)?, 16).ok())
            .collect();
        let parts = fleet_parts(key, &self.store_id, self.generation);
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        super::anchor::is_store_id(&self.store_id)
            && tag.is_some_and(|tag| key.verify_meta_tag("fleet", &parts, &tag))
    }
}

fn fleet_parts(key: &RecordKey, store_id: &str, generation: u64) -> [Vec<u8>; 3] {
    [
        store_id.as_bytes().to_vec(),
        key.id().to_string().into_bytes(),
        generation.to_be_bytes().to_vec(),
    ]
}

fn fleet_tag(key: &RecordKey, store_id: &str, generation: u64) -> String {
    let parts = fleet_parts(key, store_id, generation);
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    key.meta_tag("fleet", &parts)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What this host knows of the fleet's generation.
struct Generation {
    store_id: String,
    /// The highest generation this host wrote or read.
    known: u64,
    /// When this host last raised it.
    raised: Instant,
    /// Whether this host committed since.
    dirty: bool,
}

/// The pool and the database's name for messages.
struct Conn {
    pool: Pool,
    /// `user@host:port/db`, never the password: for messages.
    target: String,
    /// `synchronous_commit` of every transaction that writes (see
    /// [`PgSettings::synchronous_commit`]).
    synchronous_commit: &'static str,
}

struct Shared {
    conn: Arc<Conn>,
    key: RecordKey,
    /// When the database was last found unreachable (see [`DOWN_GRACE`]).
    down_since: Mutex<Option<(Instant, String)>>,
    /// Whether the outage was logged (once per outage, and once when it ends).
    down_logged: AtomicBool,
    /// Whether the last operation that ended got its answers from the
    /// database in time (false after an [`OpError::NoAnswer`], true again
    /// after a success): for [`Store::health`].
    answered: AtomicBool,
    /// The fleet's generation as this host knows it (`None` until open
    /// has read it).
    generation: Mutex<Option<Generation>>,
    /// Whether a raise of the generation runs.
    raising: AtomicBool,
    /// Set when the database was found to have gone backwards while open:
    /// every operation fails closed with it.
    went_backwards: Mutex<Option<String>>,
    /// This host's anchor, once open has checked it.
    anchor: std::sync::OnceLock<Anchor>,
}

/// The PostgreSQL store; see the module documentation.
pub struct PgStore {
    shared: Arc<Shared>,
    /// Always `Some` until dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
    /// Told the time of each commit ([`Store::observe`]).
    observer: std::sync::OnceLock<Arc<dyn super::StoreObserver>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A record version as the BIGINT column holds it: the same 64 bits (the
/// column is only compared for equality; re-enrolment picks random
/// versions, half of them above `i64::MAX`).
fn sql_version(version: u64) -> i64 {
    i64::from_ne_bytes(version.to_ne_bytes())
}

fn nonce() -> Result<[u8; NONCE_LEN], StoreError> {
    let mut n = [0u8; NONCE_LEN];
    crate::rng::fill(&mut n)
        .map_err(|e| StoreError::Backend(format!("the OS random number generator failed: {e}")))?;
    Ok(n)
}

/// Whether an error means "the database cannot be reached" (as opposed to
/// a statement it refused): those start the [`DOWN_GRACE`]. `closed`: the
/// connection is closed; `code`: the SQLSTATE, `None` when the error is
/// not the server's (a failed connect, TLS or I/O).
fn is_connectivity(closed: bool, code: Option<&SqlState>) -> bool {
    if closed {
        return true;
    }
    match code {
        None => true,
        Some(code) => {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || code.code().starts_with("08")
        }
    }
}

/// An operation's failure, before it becomes a [`StoreError`].
enum OpError {
    /// No answer in time: a hung or overloaded server, or a busy pool.
    /// Unlike [`OpError::Unreachable`] it starts no [`DOWN_GRACE`] and
    /// keeps the idle connections: under a burst of logins it is load,
    /// and every other login should still try.
    TimedOut(String),
    /// The operation's own timeout ran out: the database (or the network
    /// to it) did not answer in time. A [`OpError::TimedOut`] as far as
    /// the caller is concerned (no [`DOWN_GRACE`], the connections kept),
    /// but the metrics' `otpd_postgres_up` reads 0 until an operation
    /// succeeds again: a hung server answers nothing, yet refuses no
    /// connection.
    NoAnswer(String),
    /// The database could not be reached or dropped the connection.
    Unreachable(String),
    /// Anything else (a conflict, a refused statement, damaged data).
    Store(StoreError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

fn pg(e: tokio_postgres::Error) -> OpError {
    // tokio-postgres's Display is terse ("db error"); the server's message
    // says what happened. Neither quotes a parameter (a sealed record).
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    classify(e.is_closed(), e.code(), text)
}

/// What a tokio-postgres error is, from what it says of itself (see
/// [`is_connectivity`]); `text` describes it.
fn classify(closed: bool, code: Option<&SqlState>, text: String) -> OpError {
    if is_connectivity(closed, code) {
        OpError::Unreachable(text)
    } else if code == Some(&SqlState::DISK_FULL) {
        // 53100: the server could not extend a file (its disk is full).
        OpError::Store(StoreError::DiskFull(text))
    } else {
        OpError::Store(StoreError::Backend(text))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> OpError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg(e),
        PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => {
            OpError::Unreachable("no connection could be made within the timeout".into())
        }
        PoolError::Timeout(_) => {
            OpError::TimedOut("every connection stayed busy for the whole timeout".into())
        }
        other => OpError::Unreachable(other.to_string()),
    }
}

/// The TLS set-up: rustls with the configured authorities or the system's.
/// A certificate is always verified, whatever `sslmode` says: tokio-postgres
/// knows only disable/prefer/require, and "require without verification"
/// would let anyone on the path answer for the database.
fn tls(ca_file: Option<&PathBuf>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Backend(format!("[store] ca_file {}: {e}", path.display()))
            })?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    StoreError::Backend(format!(
                        "[store] ca_file {}: not a PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::Backend(format!(
                        "[store] ca_file {}: unusable certificate: {e}",
                        path.display()
                    ))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(StoreError::Backend(format!(
                    "[store] ca_file {}: no PEM certificate in it",
                    path.display()
                )));
            }
        }
        None => {
            // Without any system authority, TLS connections fail at the
            // handshake with a message naming the certificate; plain ones
            // (sslmode=disable) do not need any.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(backend)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `user@host:port/db` of a connection string, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres")
    )
}

/// Parses a connection string; the error names the problem, never a value.
fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse().map_err(|e: tokio_postgres::Error| {
        // The detail ("invalid value for parameter `port`", "unknown
        // option `sslmod`") is the error's source; neither quotes a value.
        let detail = match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        StoreError::Backend(format!(
            "the [store] connection string is not valid: {detail} (write e.g. \
                 postgresql://otpd@db.example.com/otpd?sslmode=require)"
        ))
    })
}

impl PgStore {
    /// `user@host:port/db` of a connection string, checked but without
    /// connecting (for `otpd check-config` and messages).
    pub fn target_of(url: &str) -> Result<String, StoreError> {
        parse_url(url).map(|c| describe(&c))
    }

    /// Connects, applies the schema's migrations that have not run (safe
    /// when several daemons start at once), and checks the key: `key_for`
    /// gets the ID of the key the fleet's records are sealed with (`None`
    /// for a new database) and returns the key to use, which then becomes
    /// the fleet's if there was none.
    ///
    /// Then the fleet's metadata (its ID and generation, made for a
    /// database that has none) is checked against the key, and against
    /// this host's anchor if `settings.anchor_file` names one: a database
    /// that is another one, or older than this host saw it, is refused.
    pub fn open(
        settings: &PgSettings,
        key_for: impl FnOnce(Option<KeyId>) -> Result<RecordKey, StoreError>,
    ) -> Result<Self, StoreError> {
        Self::open_checked(settings, key_for, true)
    }

    /// [`Self::open`]; `check_meta` false for `rekey`, which opens with the
    /// new key a database whose metadata the old one tagged.
    fn open_checked(
        settings: &PgSettings,
        key_for: impl FnOnce(Option<KeyId>) -> Result<RecordKey, StoreError>,
        check_meta: bool,
    ) -> Result<Self, StoreError> {
        let mut config = parse_url(&settings.url)?;
        config
            .connect_timeout(settings.timeout.max(CONNECT_TIMEOUT))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("otpd");
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            tls(settings.ca_file.as_ref())?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("otpd-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the store's runtime: {e}")))?;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            // Longer than an operation's timeout: a connection being made
            // when its operation gave up still joins the pool (see
            // `connection`), so a burst after a restart is not wasted.
            .create_timeout(Some(settings.timeout.max(CONNECT_TIMEOUT)))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot set up the connection pool: {e}")))?;
        // The first connection and the migrations get more time than a
        // login's operation: a migration may wait for another daemon's.
        let setup_timeout = settings.timeout.max(Duration::from_secs(10));
        let conn = Arc::new(Conn {
            pool,
            target,
            synchronous_commit: settings.synchronous_commit.as_sql(),
        });
        let stored = block_on(&runtime, &conn, setup_timeout, |c| async move {
            migrate(&c).await?;
            stored_key_id(&c).await
        })
        .map_err(|e| on_open(&conn.target, e))?;
        let key = key_for(stored)?;
        if stored.is_none() {
            let id = key.id();
            let fleet = block_on(&runtime, &conn, setup_timeout, move |c| async move {
                claim_key_id(&c, id).await
            })
            .map_err(|e| on_open(&conn.target, e))?;
            if fleet != id {
                return Err(StoreError::WrongKey(format!(
                    "the database {} was just claimed by another host with key ID {fleet}, \
                     but this host's key file holds key ID {id}: copy the fleet's key file \
                     to this host",
                    conn.target
                )));
            }
        }
        let shared = Arc::new(Shared {
            conn: conn.clone(),
            key,
            down_since: Mutex::new(None),
            down_logged: AtomicBool::new(false),
            answered: AtomicBool::new(true),
            generation: Mutex::new(None),
            raising: AtomicBool::new(false),
            went_backwards: Mutex::new(None),
            anchor: std::sync::OnceLock::new(),
        });
        if check_meta {
            open_generation(
                &runtime,
                &shared,
                setup_timeout,
                settings.anchor_file.as_deref(),
            )?;
        }
        let built = block_on(
            &runtime,
            &shared,
            setup_timeout.max(USERS_TIMEOUT),
            |s| async move { build_token_index(&s).await },
        )
        .map_err(|e| on_open(&conn.target, e))?;
        if let Some(entries) = built {
            tracing::info!(database = %conn.target, entries, "built the link-token index");
        }
        // A few connections made now, so that the first logins do not pay
        // for them (a failure here shows at the first login instead).
        let warm = settings.pool_size.clamp(1, WARM_CONNECTIONS);
        let _ = block_on(&runtime, &conn, setup_timeout, move |c| async move {
            let held: Vec<_> = (0..warm)
                .map(|_| {
                    let pool = c.pool.clone();
                    tokio::spawn(async move { pool.get().await })
                })
                .collect();
            for got in held {
                drop(got.await);
            }
            Ok(())
        });
        tracing::info!(database = %conn.target, "connected to the PostgreSQL store");
        Ok(PgStore {
            shared,
            runtime: Some(runtime),
            timeout: settings.timeout,
            observer: std::sync::OnceLock::new(),
        })
    }

    /// `otpd rekey` for the fleet's database: in one transaction, re-seals
    /// every record sealed with `old` under `new` (with its version bumped,
    /// so that a write a running daemon decided on the old record conflicts
    /// instead of putting an old-key record back), leaves records already
    /// under `new` alone, and records `new` as the fleet's key. All or
    /// nothing; running it again finishes what an earlier run left (records
    /// written under the old key by a daemon that was still running).
    pub fn rekey(
        settings: &PgSettings,
        old: RecordKey,
        new: RecordKey,
    ) -> Result<super::RekeyReport, StoreError> {
        // Opened as the new key's store, so that the key check at open
        // cannot refuse a database that is half-way or already done.
        let (old_id, new_id) = (old.id(), new.id());
        let store = PgStore::open_checked(
            settings,
            move |stored| match stored {
                Some(id) if id == old_id || id == new_id => Ok(new),
                Some(id) => Err(StoreError::WrongKey(format!(
                    "the database is sealed with key ID {id}, neither the key file's ({old_id}) \
                 nor the new one ({new_id})"
                ))),
                None => Err(StoreError::Backend(
                    "the database holds no otpd store yet: nothing to rekey".into(),
                )),
            },
            false,
        )?;
        let timeout = settings.timeout.max(USERS_TIMEOUT);
        store.run_within(timeout, move |s| async move {
            let mut client = connection(&s.conn).await?;
            let result = async {
                let tx = client.transaction().await.map_err(pg)?;
                durable(&tx, s.conn.synchronous_commit).await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                    .await
                    .map_err(pg)?;
                let rows = tx
                    .query("SELECT name, record FROM otpd_users FOR UPDATE", &[])
                    .await
                    .map_err(pg)?;
                let mut report = super::RekeyReport {
                    records: rows.len(),
                    already_done: true,
                };
                for row in &rows {
                    let name: String = row.get(0);
                    let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(row.get(1));
                    let header = seal::peek(&bytes).map_err(|e| {
                        OpError::Store(StoreError::Corrupt(format!(
                            "{}: the record of user {name}: {e}",
                            s.conn.target
                        )))
                    })?;
                    if header.key_id == new_id {
                        continue;
                    }
                    report.already_done = false;
                    let mut record = seal::open_record(&old, &name, &bytes).map_err(|e| {
                        OpError::Store(StoreError::WrongKey(format!(
                            "the record of user {name} in {} cannot be opened with the key \
                             file's key ID {old_id}: {e}",
                            s.conn.target
                        )))
                    })?;
                    record.version = record.version.wrapping_add(1);
                    let sealed = seal::seal_record(&s.key, &name, &record, 0, nonce()?)
                        .map_err(|e| backend(format!("sealing a record failed: {e}")))?;
                    tx.execute(
                        "UPDATE otpd_users SET version = $2, record = $3 WHERE name = $1",
                        &[&name, &sql_version(record.version), &sealed],
                    )
                    .await
                    .map_err(pg)?;
                }
                tx.execute(
                    "UPDATE otpd_meta SET value = $1 WHERE key = 'key_id'",
                    &[&new_id.to_string()],
                )
                .await
                .map_err(pg)?;
                // The fleet's metadata: checked under the key that tagged
                // it (the old one, or the new one when run again), then
                // tagged under the new one, its generation raised.
                let row = tx
                    .query_opt(
                        "SELECT value FROM otpd_meta WHERE key = $1 FOR UPDATE",
                        &[&META_ROW],
                    )
                    .await
                    .map_err(pg)?;
                let meta = match row {
                    Some(row) => {
                        let text: String = row.get(0);
                        match checked_meta(&s, &text, &old) {
                            Ok(meta) => meta,
                            Err(_) => checked_meta(&s, &text, &s.key)?,
                        }
                    }
                    None => FleetMeta::new(&s.key, anchor::new_store_id()?, 0),
                };
                let raised = FleetMeta::new(&s.key, meta.store_id, meta.generation + 1);
                tx.execute(
                    "INSERT INTO otpd_meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&META_ROW, &serde_json::to_string(&raised).map_err(backend)?],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
                Ok(report)
            }
            .await;
            finish(client, result)
        })
    }

    /// `user@host:port/db` of the database (no password).
    pub fn target(&self) -> &str {
        &self.shared.conn.target
    }

    /// After a commit: raises the fleet's generation in the background if
    /// this host has not for [`CHECKPOINT_EVERY`]. A raise that finds the
    /// database older than this host saw it makes every later operation
    /// fail closed.
    fn committed(&self) {
        let due = match &mut *lock(&self.shared.generation) {
            Some(g) => {
                g.dirty = true;
                g.raised.elapsed() >= CHECKPOINT_EVERY
            }
            None => false,
        };
        let Some(runtime) = &self.runtime else {
            return;
        };
        if !due || self.shared.raising.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.shared.clone();
        let timeout = self.timeout;
        runtime.spawn(async move {
            let raised = tokio::time::timeout(timeout, raise_generation(&shared)).await;
            if let Ok(Err(OpError::Store(StoreError::Corrupt(reason)))) = raised {
                tracing::error!(database = %shared.conn.target, "{reason}");
                *lock(&shared.went_backwards) = Some(reason);
            }
            // Other failures (an outage, a timeout): the next commit tries again.
            shared.raising.store(false, Ordering::SeqCst);
        });
    }

    /// Every failure counter of `user`, by source (for `otpd migrate`).
    pub fn sources_of(&self, user: &str) -> Result<Vec<(String, SourceCounter)>, StoreError> {
        let user = user.to_owned();
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                let rows = client
                    .query(
                        "SELECT source, failures, last_failure FROM otpd_sources \
                         WHERE name = $1 ORDER BY source COLLATE \"C\"",
                        &[&user],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter()
                    .map(|row| Ok((row.get(0), counter_of(row.get(1), row.get(2))?)))
                    .collect()
            }
            .await;
            finish(client, result)
        })
    }

    /// Adds `user` with `record` and its failure counters in one
    /// transaction, unless the user exists (then nothing is written).
    /// Returns whether it was added. For `otpd migrate`.
    pub fn import_user(
        &self,
        user: &str,
        record: &UserRecord,
        sources: &[(String, SourceCounter)],
    ) -> Result<bool, StoreError> {
        let sealed = Some(Row {
            version: sql_version(record.version),
            bytes: seal::seal_record(&self.shared.key, user, record, 0, nonce()?)
                .map_err(|e| StoreError::Backend(format!("sealing a record failed: {e}")))?,
            tokens: token_hashes(record),
        });
        let user = user.to_owned();
        let sources = sources.to_vec();
        self.run(move |s| async move {
            let mut client = connection(&s.conn).await?;
            let result = async {
                let tx = client.transaction().await.map_err(pg)?;
                if !write_row(&tx, s.conn.synchronous_commit, &user, None, &sealed).await? {
                    tx.rollback().await.map_err(pg)?;
                    return Ok(false);
                }
                for (source, counter) in &sources {
                    set_source(&tx, &user, source, counter).await?;
                }
                tx.commit().await.map_err(pg)?;
                Ok(true)
            }
            .await;
            finish(client, result)
        })
    }

    /// Runs `op` on the store's runtime within the timeout, from any thread.
    fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, OpError>> + Send + 'static,
    {
        self.run_within(self.timeout, op)
    }

    /// [`Self::run`] with another timeout.
    fn run_within<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, OpError>> + Send + 'static,
    {
        let shared = &self.shared;
        if let Some(reason) = &*lock(&shared.went_backwards) {
            return Err(StoreError::Corrupt(reason.clone()));
        }
        if let Some((since, reason)) = &*lock(&shared.down_since) {
            if since.elapsed() < DOWN_GRACE {
                return Err(unreachable(&shared.conn.target, reason));
            }
        }
        let Some(runtime) = &self.runtime else {
            return Err(backend("the store is closed"));
        };
        match block_on(runtime, shared, timeout, op) {
            Ok(value) => {
                *lock(&shared.down_since) = None;
                shared.answered.store(true, Ordering::Relaxed);
                if shared.down_logged.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        database = %shared.conn.target,
                        "the PostgreSQL store is reachable again; logins are checked again"
                    );
                }
                Ok(value)
            }
            Err(OpError::Store(e)) => Err(e),
            Err(OpError::TimedOut(reason)) => Err(StoreError::TimedOut(format!(
                "the PostgreSQL store {} did not answer in time: {reason}",
                shared.conn.target
            ))),
            Err(OpError::NoAnswer(reason)) => {
                shared.answered.store(false, Ordering::Relaxed);
                Err(StoreError::TimedOut(format!(
                    "the PostgreSQL store {} did not answer in time: {reason}",
                    shared.conn.target
                )))
            }
            Err(OpError::Unreachable(reason)) => {
                if !shared.down_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        database = %shared.conn.target,
                        "the PostgreSQL store is unreachable ({reason}); logins fail closed \
                         (PAM_AUTHINFO_UNAVAIL) until it is back"
                    );
                }
                let e = unreachable(&shared.conn.target, &reason);
                *lock(&shared.down_since) = Some((Instant::now(), reason));
                // The idle connections are suspect too (a restarted server
                // closed them; a timed-out one may still wait for an
                // answer that never comes): the next operation connects
                // afresh.
                shared.conn.pool.retain(|_, _| false);
                Err(e)
            }
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's
        // worker (where the last handle to the store could go): let its
        // threads end in the background instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unreachable(target: &str, reason: &str) -> StoreError {
    StoreError::Unreachable(format!(
        "the PostgreSQL store {target} is unreachable: {reason}"
    ))
}

fn on_open(target: &str, e: OpError) -> StoreError {
    match e {
        OpError::Unreachable(reason) => StoreError::Unreachable(format!(
            "cannot reach the PostgreSQL store {target}: {reason}"
        )),
        OpError::TimedOut(reason) | OpError::NoAnswer(reason) => StoreError::TimedOut(format!(
            "cannot reach the PostgreSQL store {target}: {reason}"
        )),
        OpError::Store(StoreError::Backend(m)) => {
            StoreError::Backend(format!("the PostgreSQL store {target}: {m}"))
        }
        OpError::Store(StoreError::DiskFull(m)) => {
            StoreError::DiskFull(format!("the PostgreSQL store {target}: {m}"))
        }
        OpError::Store(e) => e,
    }
}

/// Runs `op(context)` on `runtime` within `timeout` and waits for it on a
/// channel (see the module documentation).
fn block_on<C, T, F, Fut>(
    runtime: &tokio::runtime::Runtime,
    context: &Arc<C>,
    timeout: Duration,
    op: F,
) -> Result<T, OpError>
where
    C: Send + Sync + 'static,
    T: Send + 'static,
    F: FnOnce(Arc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, OpError>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let context = context.clone();
    runtime.spawn(async move {
        let result = match tokio::time::timeout(timeout, op(context)).await {
            Ok(result) => result,
            Err(_) => Err(OpError::NoAnswer(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        };
        let _ = tx.send(result);
    });
    rx.recv()
        .unwrap_or_else(|_| Err(OpError::Store(backend("a store operation panicked"))))
}

/// A pooled connection; `finish` drops it from the pool when the operation
/// met a connection error, so that a broken connection is not handed out
/// again (a dropped connection cannot always tell it is closed).
async fn connection(c: &Conn) -> Result<Object, OpError> {
    // On a task of its own: if the operation times out while a new
    // connection is being made (TCP, TLS and SCRAM take a while, more so
    // for a burst of logins after a restart), the connection is still
    // finished and handed back to the pool for the next operation.
    let pool = c.pool.clone();
    match tokio::spawn(async move { pool.get().await }).await {
        Ok(got) => got.map_err(pool_error),
        Err(e) => Err(OpError::Store(backend(format!(
            "getting a connection failed: {e}"
        )))),
    }
}

fn finish<T>(client: Object, result: Result<T, OpError>) -> Result<T, OpError> {
    if matches!(result, Err(OpError::Unreachable(_))) {
        drop(Object::take(client));
    }
    result
}

async fn migrate(s: &Conn) -> Result<(), OpError> {
    let mut client = connection(s).await?;
    let result = async {
        let tx = client.transaction().await.map_err(pg)?;
        durable(&tx, s.synchronous_commit).await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        // Checked first rather than CREATE … IF NOT EXISTS, which makes the
        // server send a notice (logged) at every start.
        let exists = tx
            .query_one("SELECT to_regclass('otpd_schema') IS NOT NULL", &[])
            .await
            .map_err(pg)?;
        if !exists.get::<_, bool>(0) {
            tx.batch_execute(
                "CREATE TABLE otpd_schema (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(pg)?;
        }
        let row = tx
            .query_one("SELECT coalesce(max(version), 0) FROM otpd_schema", &[])
            .await
            .map_err(pg)?;
        let current: i32 = row.get(0);
        let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        if current > known {
            return Err(OpError::Store(StoreError::Backend(format!(
                "the database {} has schema version {current}, newer than this otpd knows \
                 ({known}): upgrade otpd on this host",
                s.target
            ))));
        }
        for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute("INSERT INTO otpd_schema (version) VALUES ($1)", &[&version])
                .await
                .map_err(pg)?;
            tracing::info!(database = %s.target, version, "applied a schema migration");
        }
        tx.commit().await.map_err(pg)
    }
    .await;
    finish(client, result)
}

async fn stored_key_id(s: &Conn) -> Result<Option<KeyId>, OpError> {
    let client = connection(s).await?;
    let result = async {
        let row = client
            .query_opt("SELECT value FROM otpd_meta WHERE key = 'key_id'", &[])
            .await
            .map_err(pg)?;
        match row {
            None => Ok(None),
            Some(row) => parse_key_id(row.get(0)).map(Some),
        }
    }
    .await;
    finish(client, result)
}

/// Reads the fleet's metadata at open (made for a database that has none),
/// checks it against the key and this host's anchor, raises the generation
/// and keeps the anchor.
fn open_generation(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    timeout: Duration,
    anchor_file: Option<&std::path::Path>,
) -> Result<(), StoreError> {
    let target = shared.conn.target.clone();
    let anchor_state = anchor_file.map(anchor::read).transpose()?.flatten();
    let meta = block_on(
        runtime,
        shared,
        timeout,
        |s| async move { fleet_meta(&s).await },
    )
    .map_err(|e| on_open(&target, e))?;
    if let Some(path) = anchor_file {
        let what_to_do = format!(
            "If the database was restored from a backup on purpose, stop otpd on every host, \
             delete {} (and this file on every other host), and start them again",
            path.display()
        );
        anchor::check(
            path,
            anchor_state.as_ref(),
            &format!("the PostgreSQL store {target}"),
            Some(&meta.store_id),
            meta.generation,
            &what_to_do,
        )?;
    }
    *lock(&shared.generation) = Some(Generation {
        store_id: meta.store_id.clone(),
        known: meta.generation,
        raised: Instant::now(),
        dirty: false,
    });
    let raised = block_on(runtime, shared, timeout, |s| async move {
        raise_generation(&s).await
    })
    .map_err(|e| on_open(&target, e))?;
    if let Some(path) = anchor_file {
        let _ = shared
            .anchor
            .set(Anchor::open(path, &meta.store_id, raised)?);
    }
    Ok(())
}

/// The fleet's metadata row, made if the database has none (a new one, or
/// one from before it: taken as it is, once), checked against the key.
async fn fleet_meta(s: &Shared) -> Result<FleetMeta, OpError> {
    let client = connection(&s.conn).await?;
    let result = async {
        let fresh = FleetMeta::new(&s.key, anchor::new_store_id()?, 1);
        let fresh = serde_json::to_string(&fresh).map_err(backend)?;
        // The subquery sets synchronous_commit for the statement's own
        // transaction (see `PgSettings::synchronous_commit`).
        client
            .execute(
                "INSERT INTO otpd_meta (key, value) SELECT $1, $2 \
                 FROM (SELECT set_config('synchronous_commit', $3, true)) AS durable \
                 ON CONFLICT (key) DO NOTHING",
                &[&META_ROW, &fresh, &s.conn.synchronous_commit],
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one("SELECT value FROM otpd_meta WHERE key = $1", &[&META_ROW])
            .await
            .map_err(pg)?;
        checked_meta(s, row.get(0), &s.key)
    }
    .await;
    finish(client, result)
}

/// Parses the metadata row and checks its tag under `key`.
fn checked_meta(s: &Shared, text: &str, key: &RecordKey) -> Result<FleetMeta, OpError> {
    let meta = serde_json::from_str::<FleetMeta>(text)
        .ok()
        .filter(|m| m.authentic(key));
    meta.ok_or_else(|| {
        OpError::Store(StoreError::Corrupt(format!(
            "the metadata of the PostgreSQL store {} (otpd_meta '{META_ROW}': the database's \
             ID and generation) fails its authentication check: it was changed by someone \
             who can write the database but not read the key, or damaged; otpd refuses it",
            s.conn.target
        )))
    })
}

/// Raises the fleet's generation by one, after checking that it is not
/// below what this host knows (else the database went backwards: an error
/// `Corrupt`); this host's anchor follows. Returns the new generation.
async fn raise_generation(s: &Shared) -> Result<u64, OpError> {
    let mut client = connection(&s.conn).await?;
    let result = async {
        let tx = client.transaction().await.map_err(pg)?;
        durable(&tx, s.conn.synchronous_commit).await?;
        let row = tx
            .query_one(
                "SELECT value FROM otpd_meta WHERE key = $1 FOR UPDATE",
                &[&META_ROW],
            )
            .await
            .map_err(pg)?;
        let meta = checked_meta(s, row.get(0), &s.key)?;
        let (store_id, known) = match &*lock(&s.generation) {
            Some(g) => (g.store_id.clone(), g.known),
            None => (meta.store_id.clone(), 0),
        };
        if meta.store_id != store_id || meta.generation < known {
            return Err(OpError::Store(StoreError::Corrupt(format!(
                "the PostgreSQL store {} went backwards while otpd was running: its \
                 generation is {} (store ID {}), but this host saw {known} (store ID \
                 {store_id}). It was restored from an older copy, or replaced; otpd refuses \
                 to use it (logins fail closed). Restart otpd to see what its anchor says",
                s.conn.target, meta.generation, meta.store_id
            ))));
        }
        let raised = FleetMeta::new(&s.key, meta.store_id, meta.generation + 1);
        let text = serde_json::to_string(&raised).map_err(backend)?;
        tx.execute(
            "UPDATE otpd_meta SET value = $2 WHERE key = $1",
            &[&META_ROW, &text],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        if let Some(g) = &mut *lock(&s.generation) {
            g.known = g.known.max(raised.generation);
            g.raised = Instant::now();
            g.dirty = false;
        }
        if let Some(anchor) = s.anchor.get() {
            anchor.advance(raised.generation)?;
        }
        Ok(raised.generation)
    }
    .await;
    finish(client, result)
}

/// Indexes the link tokens of every record, once, if migration 2 asked for
/// it (a database with records from before the index). Returns how many
/// entries it wrote, `None` when there was nothing to do.
async fn build_token_index(s: &Shared) -> Result<Option<usize>, OpError> {
    let mut client = connection(&s.conn).await?;
    let result = async {
        let wanted = "SELECT 1 FROM otpd_meta WHERE key = 'token_index'";
        if client.query_opt(wanted, &[]).await.map_err(pg)?.is_none() {
            return Ok(None);
        }
        let tx = client.transaction().await.map_err(pg)?;
        durable(&tx, s.conn.synchronous_commit).await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        // Writers wait until the index is whole, so that no link changes
        // between the read below and the index's rows.
        tx.batch_execute("LOCK TABLE otpd_users IN SHARE MODE")
            .await
            .map_err(pg)?;
        if tx.query_opt(wanted, &[]).await.map_err(pg)?.is_none() {
            // Another host built it meanwhile.
            tx.commit().await.map_err(pg)?;
            return Ok(None);
        }
        let rows = tx
            .query("SELECT name, record FROM otpd_users", &[])
            .await
            .map_err(pg)?;
        let (mut hashes, mut names) = (Vec::new(), Vec::new());
        for row in &rows {
            let name: String = row.get(0);
            let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(row.get(1));
            for hash in token_hashes(&open(s, &name, &bytes)?) {
                hashes.push(hash);
                names.push(name.clone());
            }
        }
        tx.execute("DELETE FROM otpd_tokens", &[])
            .await
            .map_err(pg)?;
        tx.execute(
            "INSERT INTO otpd_tokens (token_hash, name) \
             SELECT * FROM unnest($1::text[], $2::text[]) \
             ON CONFLICT (token_hash) DO UPDATE SET name = EXCLUDED.name",
            &[&hashes, &names],
        )
        .await
        .map_err(pg)?;
        tx.execute("DELETE FROM otpd_meta WHERE key = 'token_index'", &[])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(hashes.len()))
    }
    .await;
    finish(client, result)
}

/// Records `id` as the fleet's key unless one is recorded; returns the
/// recorded one.
async fn claim_key_id(s: &Conn, id: KeyId) -> Result<KeyId, OpError> {
    let client = connection(s).await?;
    let result = async {
        client
            .execute(
                "INSERT INTO otpd_meta (key, value) SELECT 'key_id', $1 \
                 FROM (SELECT set_config('synchronous_commit', $2, true)) AS durable \
                 ON CONFLICT (key) DO NOTHING",
                &[&id.to_string(), &s.synchronous_commit],
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one("SELECT value FROM otpd_meta WHERE key = 'key_id'", &[])
            .await
            .map_err(pg)?;
        parse_key_id(row.get(0))
    }
    .await;
    finish(client, result)
}

fn parse_key_id(text: &str) -> Result<KeyId, OpError> {
    let bad = || {
        OpError::Store(StoreError::Corrupt(format!(
            "otpd_meta key_id {text:?} is not a key ID"
        )))
    };
    if text.len() != 16 {
        return Err(bad());
    }
    let mut id = [0u8; 8];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(KeyId(id))
}

fn open(s: &Shared, user: &str, bytes: &[u8]) -> Result<UserRecord, OpError> {
    seal::open_record(&s.key, user, bytes).map_err(|e| {
        OpError::Store(match e {
            seal::SealError::WrongKey { found, expected } => StoreError::WrongKey(format!(
                "the record of user {user} in {} is sealed with key ID {found}, but this \
                 host's key file holds key ID {expected}: every host of a fleet needs the \
                 same key file",
                s.conn.target
            )),
            other => StoreError::Corrupt(format!(
                "{}: the record of user {user}: {other}",
                s.conn.target
            )),
        })
    })
}

fn counter_of(failures: i64, last_failure: i64) -> Result<SourceCounter, OpError> {
    Ok(SourceCounter {
        failures: u32::try_from(failures).map_err(|_| {
            OpError::Store(StoreError::Corrupt(format!(
                "a failure counter is out of range ({failures})"
            )))
        })?,
        last_failure: u64::try_from(last_failure).map_err(|_| {
            OpError::Store(StoreError::Corrupt(format!(
                "a failure time is out of range ({last_failure})"
            )))
        })?,
    })
}

impl Store for PgStore {
    fn user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let user = user.to_owned();
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                let statement = client
                    .prepare_cached("SELECT record FROM otpd_users WHERE name = $1")
                    .await
                    .map_err(pg)?;
                let row = client.query_opt(&statement, &[&user]).await.map_err(pg)?;
                match row {
                    None => Ok(None),
                    Some(row) => {
                        let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(row.get(0));
                        open(&s, &user, &bytes).map(Some)
                    }
                }
            }
            .await;
            finish(client, result)
        })
    }

    fn source(&self, user: &str, source: &str) -> Result<Option<SourceCounter>, StoreError> {
        let (user, source) = (user.to_owned(), source.to_owned());
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                let statement = client
                    .prepare_cached(
                        "SELECT failures, last_failure FROM otpd_sources \
                         WHERE name = $1 AND source = $2",
                    )
                    .await
                    .map_err(pg)?;
                match client
                    .query_opt(&statement, &[&user, &source])
                    .await
                    .map_err(pg)?
                {
                    None => Ok(None),
                    Some(row) => counter_of(row.get(0), row.get(1)).map(Some),
                }
            }
            .await;
            finish(client, result)
        })
    }

    fn read_for_check(
        &self,
        user: &str,
        source: &str,
    ) -> Result<(Option<UserRecord>, Option<SourceCounter>), StoreError> {
        // One round trip for both (docs/performance.md): a login is this
        // read and one conditional write. Exactly one row, whether or not
        // the user or the counter exists.
        let (user, source) = (user.to_owned(), source.to_owned());
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                let statement = client
                    .prepare_cached(
                        "SELECT (SELECT record FROM otpd_users WHERE name = $1), \
                                s.failures, s.last_failure \
                         FROM (SELECT 1) AS one \
                         LEFT JOIN otpd_sources AS s ON s.name = $1 AND s.source = $2",
                    )
                    .await
                    .map_err(pg)?;
                let row = client
                    .query_one(&statement, &[&user, &source])
                    .await
                    .map_err(pg)?;
                let record = match row.get::<_, Option<Vec<u8>>>(0) {
                    None => None,
                    Some(bytes) => {
                        let bytes = Zeroizing::new(bytes);
                        Some(open(&s, &user, &bytes)?)
                    }
                };
                let counter = match (row.get::<_, Option<i64>>(1), row.get::<_, Option<i64>>(2)) {
                    (Some(failures), Some(last_failure)) => {
                        Some(counter_of(failures, last_failure)?)
                    }
                    _ => None,
                };
                Ok((record, counter))
            }
            .await;
            finish(client, result)
        })
    }

    fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        // Not on a login's path (status, list, the pages' look-up): a whole
        // table may take longer than one login's operation.
        let timeout = self.timeout.max(USERS_TIMEOUT);
        let rows = self.run_within(timeout, move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                // Byte order, as the sled store lists them.
                let rows = client
                    .query(
                        "SELECT name, record FROM otpd_users ORDER BY name COLLATE \"C\"",
                        &[],
                    )
                    .await
                    .map_err(pg)?;
                Ok(rows
                    .iter()
                    .map(|row| (row.get(0), Zeroizing::new(row.get(1))))
                    .collect::<Vec<(String, Zeroizing<Vec<u8>>)>>())
            }
            .await;
            finish(client, result)
        })?;
        // Opened here, on the caller's thread, not on the store's runtime.
        rows.iter()
            .map(|(name, bytes)| {
                let record = open(&self.shared, name, bytes).map_err(|e| match e {
                    OpError::Store(e) => e,
                    OpError::Unreachable(m) => StoreError::Unreachable(m),
                    OpError::TimedOut(m) | OpError::NoAnswer(m) => StoreError::TimedOut(m),
                })?;
                Ok((name.clone(), record))
            })
            .collect()
    }

    fn commit(
        &self,
        user: &str,
        expected_version: Option<u64>,
        record: RecordChange<'_>,
        sources: SourcesChange<'_>,
    ) -> Result<(), StoreError> {
        let sealed = match record {
            RecordChange::Put(r) => Some(Row {
                version: sql_version(r.version),
                bytes: seal::seal_record(&self.shared.key, user, r, 0, nonce()?)
                    .map_err(|e| StoreError::Backend(format!("sealing a record failed: {e}")))?,
                tokens: token_hashes(r),
            }),
            RecordChange::Delete => None,
        };
        let sources = match sources {
            SourcesChange::Keep => Sources::Keep,
            SourcesChange::Set(source, counter) => Sources::Set(source.to_owned(), counter),
            SourcesChange::Reset(source) => Sources::Reset(source.to_owned()),
            SourcesChange::ClearAll => Sources::ClearAll,
        };
        let user = user.to_owned();
        let expected = expected_version.map(sql_version);
        let started = Instant::now();
        let result = self.run(move |s| async move {
            let mut client = connection(&s.conn).await?;
            let result = commit(
                &mut client,
                s.conn.synchronous_commit,
                &user,
                expected,
                sealed,
                sources,
            )
            .await;
            finish(client, result)
        });
        if let Some(observer) = self.observer.get() {
            observer.commit(started.elapsed());
        }
        result?;
        self.committed();
        Ok(())
    }

    fn observe(&self, observer: Arc<dyn super::StoreObserver>) {
        let _ = self.observer.set(observer);
    }

    fn health(&self) -> Option<super::StoreHealth> {
        let status = self.shared.conn.pool.status();
        Some(super::StoreHealth {
            reachable: lock(&self.shared.down_since).is_none()
                && self.shared.answered.load(Ordering::Relaxed),
            pool_size: status.size,
            pool_available: status.available,
            pool_max: status.max_size,
            pool_waiting: status.waiting,
        })
    }

    fn derived_secret(&self, label: &str) -> Option<[u8; 32]> {
        Some(self.shared.key.meta_tag(label, &[]))
    }

    // One `otpd_meta` row per host (`audit_head:HOST`): every host of the
    // fleet keeps its own trail. No schema change: otpd_meta is a key-value
    // table.
    fn audit_head(&self, host: &str) -> Result<Option<String>, StoreError> {
        let key = format!("audit_head:{host}");
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                let row = client
                    .query_opt("SELECT value FROM otpd_meta WHERE key = $1", &[&key])
                    .await
                    .map_err(pg)?;
                Ok(row.map(|r| r.get::<_, String>(0)))
            }
            .await;
            finish(client, result)
        })
    }

    fn set_audit_head(&self, host: &str, head: &str) -> Result<(), StoreError> {
        let (key, head) = (format!("audit_head:{host}"), head.to_owned());
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                client
                    .execute(
                        "INSERT INTO otpd_meta (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        &[&key, &head],
                    )
                    .await
                    .map_err(pg)?;
                Ok(())
            }
            .await;
            finish(client, result)
        })
    }

    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.shared.conn.target)
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Every commit was durable when it returned. What this host wrote
        // since it last raised the generation gets a raise of its own (a
        // restore that undoes it is then noticed at the next start).
        let dirty = lock(&self.shared.generation)
            .as_ref()
            .is_some_and(|g| g.dirty);
        if dirty {
            self.run(|s| async move { raise_generation(&s).await })?;
        }
        match self.shared.anchor.get() {
            Some(anchor) => anchor.sync(),
            None => Ok(()),
        }
    }

    fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let hash = token_hash.to_owned();
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                let statement = client
                    .prepare_cached("SELECT name FROM otpd_tokens WHERE token_hash = $1")
                    .await
                    .map_err(pg)?;
                let row = client.query_opt(&statement, &[&hash]).await.map_err(pg)?;
                Ok(row.map(|r| r.get(0)))
            }
            .await;
            finish(client, result)
        })
    }

    fn decoy_write(&self) -> Result<(), StoreError> {
        let value = seal::seal_record(
            &self.shared.key,
            "\0decoy",
            &UserRecord::decoy(),
            0,
            nonce()?,
        )
        .map_err(|e| StoreError::Backend(format!("sealing a record failed: {e}")))?;
        let mut slot = [0u8; 4];
        crate::rng::fill(&mut slot).map_err(backend)?;
        let slot = i32::try_from(u32::from_le_bytes(slot) % DECOY_SLOTS).unwrap_or(0);
        self.run(move |s| async move {
            let client = connection(&s.conn).await?;
            let result = async {
                let statement = client
                    // As durable as a real commit (the same cost, the
                    // same synchronous_commit).
                    .prepare_cached(
                        "UPDATE otpd_decoy SET value = $2 FROM (SELECT \
                         set_config('synchronous_commit', $3, true)) AS durable WHERE slot = $1",
                    )
                    .await
                    .map_err(pg)?;
                client
                    .execute(&statement, &[&slot, &value, &s.conn.synchronous_commit])
                    .await
                    .map_err(pg)
                    .map(drop)
            }
            .await;
            finish(client, result)
        })
    }
}

/// [`SourcesChange`] with owned names, for the store's runtime.
enum Sources {
    Keep,
    Set(String, SourceCounter),
    Reset(String),
    ClearAll,
}

/// A user's row to write: the sealed record, its version, and its link
/// tokens for the index.
struct Row {
    version: i64,
    bytes: Vec<u8>,
    tokens: Vec<String>,
}

/// The token index's part of [`write_row`]'s statements, after a first
/// part `row` that returns the user's name iff it changed the row: the
/// index entries of the user that the new record does not hold ($T, a
/// text array) go, the new ones come, all only if `row` changed. One
/// statement: the record and its index entries commit together, and the
/// common login (no links before or after) costs one round trip as before.
///
/// The statement also sets `synchronous_commit` ($S) for its own
/// transaction: an autocommit statement commits as it ends, with that value.
macro_rules! with_token_index {
    ($row:literal, $t:literal, $s:literal) => {
        concat!(
            "WITH row AS (",
            $row,
            "), gone AS (DELETE FROM otpd_tokens WHERE name = $1 AND token_hash <> ALL(",
            $t,
            "::text[]) AND EXISTS (SELECT 1 FROM row)), added AS (INSERT INTO otpd_tokens \
             (token_hash, name) SELECT h, $1 FROM unnest(",
            $t,
            "::text[]) AS h WHERE EXISTS (SELECT 1 FROM row) ON CONFLICT (token_hash) DO \
             UPDATE SET name = EXCLUDED.name WHERE otpd_tokens.name <> EXCLUDED.name) \
             SELECT (SELECT count(*) FROM row), set_config('synchronous_commit', ",
            $s,
            ", true)"
        )
    };
}

/// `SET LOCAL synchronous_commit` for the transaction `client` is in (see
/// [`PgSettings::synchronous_commit`]).
async fn durable<C: deadpool_postgres::GenericClient>(
    client: &C,
    synchronous_commit: &str,
) -> Result<(), OpError> {
    client
        .execute(
            "SELECT set_config('synchronous_commit', $1, true)",
            &[&synchronous_commit],
        )
        .await
        .map_err(pg)
        .map(drop)
}

/// The conditional write of the user's row (and its token index entries):
/// one statement, which changes the row iff it is as the caller read it,
/// and sets `synchronous_commit` for the transaction it is in.
async fn write_row<C: deadpool_postgres::GenericClient>(
    client: &C,
    synchronous_commit: &str,
    user: &str,
    expected: Option<i64>,
    sealed: &Option<Row>,
) -> Result<bool, OpError> {
    let cached = |sql: &'static str| async move { client.prepare_cached(sql).await.map_err(pg) };
    let no_tokens: Vec<String> = Vec::new();
    let changed: i64 = match (expected, sealed) {
        (Some(expected), Some(row)) => {
            let statement = cached(with_token_index!(
                "UPDATE otpd_users SET version = $3, record = $4 \
                 WHERE name = $1 AND version = $2 RETURNING name",
                "$5",
                "$6"
            ))
            .await?;
            client
                .query_one(
                    &statement,
                    &[
                        &user,
                        &expected,
                        &row.version,
                        &row.bytes,
                        &row.tokens,
                        &synchronous_commit,
                    ],
                )
                .await
                .map_err(pg)?
                .get(0)
        }
        (None, Some(row)) => {
            let statement = cached(with_token_index!(
                "INSERT INTO otpd_users (name, version, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING RETURNING name",
                "$4",
                "$5"
            ))
            .await?;
            client
                .query_one(
                    &statement,
                    &[
                        &user,
                        &row.version,
                        &row.bytes,
                        &row.tokens,
                        &synchronous_commit,
                    ],
                )
                .await
                .map_err(pg)?
                .get(0)
        }
        (Some(expected), None) => {
            let statement = cached(with_token_index!(
                "DELETE FROM otpd_users WHERE name = $1 AND version = $2 RETURNING name",
                "$3",
                "$4"
            ))
            .await?;
            client
                .query_one(
                    &statement,
                    &[&user, &expected, &no_tokens, &synchronous_commit],
                )
                .await
                .map_err(pg)?
                .get(0)
        }
        (None, None) => {
            // "Delete a user that does not exist": nothing to write, but
            // only if it still does not exist (locked until the commit).
            let row = client
                .query_opt(
                    "SELECT 1 FROM otpd_users WHERE name = $1 FOR UPDATE",
                    &[&user],
                )
                .await
                .map_err(pg)?;
            durable(client, synchronous_commit).await?;
            return Ok(row.is_none());
        }
    };
    Ok(changed == 1)
}

async fn set_source<C: deadpool_postgres::GenericClient>(
    client: &C,
    user: &str,
    source: &str,
    counter: &SourceCounter,
) -> Result<(), OpError> {
    let statement = client
        .prepare_cached(
            "INSERT INTO otpd_sources (name, source, failures, last_failure) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name, source) \
             DO UPDATE SET failures = EXCLUDED.failures, last_failure = EXCLUDED.last_failure",
        )
        .await
        .map_err(pg)?;
    client
        .execute(
            &statement,
            &[
                &user,
                &source,
                &i64::from(counter.failures),
                &i64::try_from(counter.last_failure).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(pg)
        .map(drop)
}

async fn commit(
    client: &mut Object,
    synchronous_commit: &str,
    user: &str,
    expected: Option<i64>,
    sealed: Option<Row>,
    sources: Sources,
) -> Result<(), OpError> {
    if matches!(sources, Sources::Keep) && sealed.is_some() {
        // One statement, committed on its own (autocommit): the common
        // login without failures costs one round trip.
        return match write_row(&*client, synchronous_commit, user, expected, &sealed).await? {
            true => Ok(()),
            false => Err(OpError::Store(StoreError::Conflict)),
        };
    }
    let tx = client.transaction().await.map_err(pg)?;
    if !write_row(&tx, synchronous_commit, user, expected, &sealed).await? {
        tx.rollback().await.map_err(pg)?;
        return Err(OpError::Store(StoreError::Conflict));
    }
    match &sources {
        Sources::Keep => {}
        Sources::Set(source, counter) => set_source(&tx, user, source, counter).await?,
        Sources::Reset(source) => {
            tx.execute(
                "DELETE FROM otpd_sources WHERE name = $1 AND source = $2",
                &[&user, source],
            )
            .await
            .map_err(pg)?;
        }
        Sources::ClearAll => {
            tx.execute("DELETE FROM otpd_sources WHERE name = $1", &[&user])
                .await
                .map_err(pg)?;
        }
    }
    tx.commit().await.map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The [`StoreError`] a failed operation becomes at open, as a name.
    fn kind(e: OpError) -> (&'static str, String) {
        let e = on_open("otpd@db:5432/otpd", e);
        let kind = match &e {
            StoreError::Unreachable(_) => "unreachable",
            StoreError::TimedOut(_) => "timed out",
            StoreError::DiskFull(_) => "disk full",
            StoreError::Backend(_) => "backend",
            StoreError::Conflict | StoreError::Corrupt(_) | StoreError::WrongKey(_) => "other",
        };
        (kind, e.to_string())
    }

    #[test]
    fn server_errors_are_classified_by_their_sqlstate() {
        let text = || "ERROR: could not extend file".to_string();
        let cases = [
            (false, Some(SqlState::DISK_FULL), "disk full"),
            (false, None, "unreachable"),
            (true, Some(SqlState::UNIQUE_VIOLATION), "unreachable"),
            (false, Some(SqlState::CONNECTION_FAILURE), "unreachable"),
            (false, Some(SqlState::ADMIN_SHUTDOWN), "unreachable"),
            (false, Some(SqlState::TOO_MANY_CONNECTIONS), "unreachable"),
            (false, Some(SqlState::UNIQUE_VIOLATION), "backend"),
            (false, Some(SqlState::INSUFFICIENT_PRIVILEGE), "backend"),
        ];
        for (closed, code, want) in cases {
            let (got, message) = kind(classify(closed, code.as_ref(), text()));
            assert_eq!(got, want, "closed {closed}, SQLSTATE {code:?}: {message}");
            assert!(message.contains("could not extend file"), "{message}");
        }
        let (_, message) = kind(classify(false, Some(&SqlState::DISK_FULL), text()));
        assert_eq!(
            message,
            "store error: the PostgreSQL store otpd@db:5432/otpd: ERROR: could not extend file"
        );
    }

    #[test]
    fn a_busy_pool_is_a_timeout_and_a_connect_that_never_ends_is_unreachable() {
        use deadpool_postgres::{PoolError, TimeoutType};
        let (got, message) = kind(pool_error(PoolError::Timeout(TimeoutType::Wait)));
        assert_eq!(got, "timed out", "{message}");
        let (got, message) = kind(pool_error(PoolError::Timeout(TimeoutType::Create)));
        assert_eq!(got, "unreachable", "{message}");
        assert_eq!(
            message,
            "store error: cannot reach the PostgreSQL store otpd@db:5432/otpd: no connection \
             could be made within the timeout"
        );
        let (got, _) = kind(pool_error(PoolError::Closed));
        assert_eq!(got, "unreachable");
    }

    #[test]
    fn versions_keep_all_64_bits() {
        for v in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            let back = u64::from_ne_bytes(sql_version(v).to_ne_bytes());
            assert_eq!(back, v);
        }
        assert_ne!(sql_version(1), sql_version(2));
    }

    #[test]
    fn key_ids_round_trip_and_bad_ones_are_refused() {
        let id = KeyId([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        assert!(matches!(parse_key_id(&id.to_string()), Ok(back) if back == id));
        for bad in [
            "",
            "0123",
            "0123456789abcdeg",
            "0123456789abcdef00",
            "é123456789abcde",
        ] {
            assert!(parse_key_id(bad).is_err(), "{bad:?} was taken for a key ID");
        }
    }

    #[test]
    fn a_bad_connection_string_is_refused_without_quoting_the_password() {
        let settings = PgSettings {
            url: Zeroizing::new("postgresql://otpd:hunter2@db/otpd?sslmode=bogus".into()),
            ca_file: None,
            timeout: Duration::from_secs(1),
            pool_size: 1,
            anchor_file: None,
            synchronous_commit: Default::default(),
        };
        let e = PgStore::open(&settings, |_| unreachable!("no key is asked for"))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("connection string is not valid"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn an_unreachable_database_fails_within_the_timeout() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = PgSettings {
            url: Zeroizing::new(format!(
                "postgresql://otpd:pw@127.0.0.1:{port}/otpd?sslmode=disable"
            )),
            ca_file: None,
            timeout: Duration::from_millis(300),
            pool_size: 1,
            anchor_file: None,
            synchronous_commit: Default::default(),
        };
        let started = Instant::now();
        let e = PgStore::open(&settings, |_| unreachable!("no key is asked for"))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("cannot reach the PostgreSQL store"), "{e}");
        assert!(e.contains(&format!("127.0.0.1:{port}/otpd")), "{e}");
        assert!(started.elapsed() < Duration::from_secs(15), "{e}");
    }
}
