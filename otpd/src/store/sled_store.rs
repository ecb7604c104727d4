//! The default store: sled under `state_dir`, with a real `fdatasync`, and
//! every user record sealed with the daemon's key ([`crate::core::seal`]).

use super::anchor::{self, Anchor, AnchorState};
use super::group_sync::{GroupSync, Ticket};
use super::{token_hashes, RecordChange, SourcesChange, Store, StoreError};
use crate::core::record::{SourceCounter, UserRecord};
use crate::core::seal::{self, KeyId, RecordKey, NONCE_LEN};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Layout version of the trees below. 1: records in clear (before
/// encryption at rest; sealed by `otpd seal-store`, never by an open);
/// 2: sealed records; 3: the metadata authenticated (`auth`), a store ID,
/// and the link-token index (a schema-2 store is upgraded at open).
const SCHEMA_VERSION: u64 = 3;

/// The `meta` entry that says which tree holds the users and which key
/// sealed them. `otpd rekey` fills a new tree and then switches this one
/// entry, so a rekey killed half-way leaves the store whole under one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Active {
    tree: String,
    key_id: String,
}

/// The open sled database.
struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    users: sled::Tree,
    sources: sled::Tree,
    /// The link-token index: token hash → user name (see
    /// [`Store::user_by_token_hash`]).
    tokens: sled::Tree,
    log_file: File,
    /// Which handle this is: 0 from `open`, one more at every `reopen`. A
    /// write applied through one handle is made durable only by a flush of
    /// that same handle (a reopen drops what was not flushed).
    generation: u64,
}

/// sled 0.34 under `<state_dir>/store`.
///
/// sled's `flush` ends in `sync_file_range`, which neither flushes the
/// drive's write cache nor the file's metadata (sled issue #1452). After
/// every flush this store therefore calls `fdatasync` on sled's log file
/// itself (`<dir>/db`) through a handle of its own: fdatasync acts on the
/// inode, so it covers what sled wrote through its descriptor.
///
/// Two more things sled does not do, done here:
/// - After a write error (a full disk) sled fails every later write, and
///   its memory may hold the write that failed. The store then drops the
///   database and opens it again from disk before the next request, so
///   nothing that failed is visible and service resumes when space returns.
/// - sled takes a damaged spot in its log for the torn end of a crash and
///   silently drops everything after it. Every write here carries a change
///   number (in the sealed header); the highest one made durable is kept in
///   `<state_dir>/store.watermark`, written after the store's fdatasync. A
///   store that holds less than its watermark lost writes, and is refused.
///
/// Concurrent commits share their flush and fdatasync (group commit, see
/// [`GroupSync`]): a commit applies its transaction in memory, then waits
/// for a sync that started after that; while one sync runs, the commits
/// that arrive meanwhile gather and are made durable by the next one.
/// Every commit still returns only once its own write is durable.
pub struct SledStore {
    inner: RwLock<Option<Inner>>,
    broken: AtomicBool,
    key: RecordKey,
    dir: PathBuf,
    next_change: AtomicU64,
    watermark: Watermark,
    /// This host's anchor outside `state_dir` ([`super::anchor`]), when one
    /// is configured and could be written.
    anchor: Option<Anchor>,
    /// The key entry and the store ID, as verified at open: what the
    /// metadata's tag covers besides the number of the last removal.
    active: Active,
    store_id: String,
    /// The shared syncs; a successful one reports the generation of the
    /// handle it flushed.
    group: GroupSync<u64, StoreError>,
    /// The generation of the newest handle (see [`Inner::generation`]).
    generation: AtomicU64,
    /// Told the time of each commit and fdatasync ([`Store::observe`]).
    observer: std::sync::OnceLock<std::sync::Arc<dyn super::StoreObserver>>,
}

/// What `otpd rekey` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// Records now sealed with the new key.
    pub records: usize,
    /// The store was already under the new key (a rekey that was killed
    /// after its switch is being finished).
    pub already_done: bool,
}

fn backend(e: sled::Error) -> StoreError {
    sled_error(e.to_string(), &e)
}

/// `text` (which says what failed) as the [`StoreError`] that sled's error
/// `e` is: an I/O error on a full disk is [`StoreError::DiskFull`], every
/// other one [`StoreError::Backend`]. sled's own corruption error stays
/// `Backend` too: like any engine failure it makes the store be read again
/// from disk before the next request (see [`SledStore::with`]).
fn sled_error(text: String, e: &sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if super::is_disk_full(io) => StoreError::DiskFull(text),
        _ => StoreError::Backend(text),
    }
}

fn source_key(user: &str, source: &str) -> Vec<u8> {
    // User names never contain NUL (names::validate_user), so the prefix
    // `user\0` selects exactly this user's sources.
    let mut key = Vec::with_capacity(user.len() + 1 + source.len());
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(source.as_bytes());
    key
}

fn source_prefix(user: &str) -> Vec<u8> {
    source_key(user, "")
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    // serde_json's message can quote the stored value (a secret's bytes):
    // only the position is kept.
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "{what} cannot be decoded (line {} column {})",
            e.line(),
            e.column()
        ))
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(e.to_string()))
}

fn nonce() -> Result<[u8; NONCE_LEN], StoreError> {
    let mut n = [0u8; NONCE_LEN];
    crate::rng::fill(&mut n)
        .map_err(|e| StoreError::Backend(format!("the OS random number generator failed: {e}")))?;
    Ok(n)
}

fn user_name(key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key.to_vec())
        .map_err(|_| StoreError::Corrupt("a user name is not UTF-8".into()))
}

/// What [`check_records`] found in the records.
#[derive(Default)]
struct Checked {
    /// The highest change number.
    highest: u64,
    /// (token hash, user) of every link the records hold: what the token
    /// index must hold.
    tokens: Vec<(String, String)>,
}

/// How many records the start-up check hands to one of its threads at a
/// time. The check holds at most `2 × threads + 1` such batches, never the
/// whole tree: with 100,000 users, collecting every record first made the
/// daemon's memory peak at about 80 MiB and glibc kept most of it
/// (docs/performance.md).
const CHECK_BATCH: usize = 1024;

/// Opens every record of `tree` (its tag is checked) and returns how many
/// there are, the highest change number among them and their link tokens.
/// The tree is read once, in key order, on the calling thread, and the
/// records are checked in batches on all cores (up to 8 threads): with
/// 100,000 users this is most of the daemon's start-up. The error is the
/// one of the first failing record in key order, as if checked one by one.
/// A record in clear is for the caller to refuse first ([`scan_clear`]).
fn check_records(
    key: &RecordKey,
    dir: &Path,
    tree: &sled::Tree,
) -> Result<(usize, Checked), StoreError> {
    let check = |part: &[(sled::IVec, sled::IVec)]| -> Result<Checked, StoreError> {
        let mut found = Checked::default();
        for (k, v) in part {
            let name = user_name(k)?;
            let opened = seal::open_record(key, &name, v).and_then(|r| Ok((r, seal::peek(v)?)));
            let (record, header) = opened.map_err(|e| {
                StoreError::Corrupt(format!("{}: the record of user {name}: {e}", dir.display()))
            })?;
            found.highest = found.highest.max(header.change);
            for hash in token_hashes(&record) {
                found.tokens.push((hash, name.clone()));
            }
        }
        Ok(found)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    type Batch = (usize, Vec<(sled::IVec, sled::IVec)>);
    let (send, receive) = std::sync::mpsc::sync_channel::<Batch>(threads);
    let receive = Mutex::new(receive);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (check, receive) = (&check, &receive);
                scope.spawn(move || {
                    let mut found = Checked::default();
                    // The failure of the lowest batch this thread checked.
                    let mut failed: Option<(usize, StoreError)> = None;
                    loop {
                        let next = receive.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((index, part)) = next else { break };
                        if failed.as_ref().is_some_and(|(at, _)| *at < index) {
                            continue;
                        }
                        match check(&part) {
                            Ok(part) => {
                                found.highest = found.highest.max(part.highest);
                                found.tokens.extend(part.tokens);
                            }
                            Err(e) => failed = Some((index, e)),
                        }
                    }
                    (found, failed)
                })
            })
            .collect();
        let mut count = 0;
        let mut index = 0;
        let mut batch = Vec::with_capacity(CHECK_BATCH);
        let mut read = Ok(());
        for item in tree.iter() {
            match item {
                Ok(kv) => batch.push(kv),
                Err(e) => {
                    read = Err(backend(e));
                    break;
                }
            }
            count += 1;
            if batch.len() == CHECK_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(CHECK_BATCH));
                // Fails only when every check thread has ended (a panic).
                if send.send((index, full)).is_err() {
                    break;
                }
                index += 1;
            }
        }
        if !batch.is_empty() {
            let _ = send.send((index, batch));
        }
        drop(send);
        let mut all = Checked::default();
        let mut first_failure: Option<(usize, StoreError)> = None;
        for worker in workers {
            let (found, failed) = worker
                .join()
                .map_err(|_| StoreError::Backend("a record check panicked".into()))?;
            all.highest = all.highest.max(found.highest);
            all.tokens.extend(found.tokens);
            if let Some((at, e)) = failed {
                if first_failure.as_ref().is_none_or(|(first, _)| at < *first) {
                    first_failure = Some((at, e));
                }
            }
        }
        read?;
        match first_failure {
            Some((_, e)) => Err(e),
            None => Ok((count, all)),
        }
    })
}

/// What [`scan_clear`] found: the number of records, the first one in
/// clear (written before encryption at rest, or planted) and whether any
/// is sealed.
struct Scanned {
    count: usize,
    clear: Option<String>,
    any_sealed: bool,
}

/// Reads every record of `tree` once, keeping none: only their number and
/// which are in clear (the first byte). Cheaper than collecting them: sled
/// hands out each value as a slice of its node, so a list of every record
/// kept every node of the tree alive.
fn scan_clear(tree: &sled::Tree) -> Result<Scanned, StoreError> {
    let mut scanned = Scanned {
        count: 0,
        clear: None,
        any_sealed: false,
    };
    for item in tree.iter() {
        let (k, v) = item.map_err(backend)?;
        scanned.count += 1;
        if seal::is_sealed(&v) {
            scanned.any_sealed = true;
        } else if scanned.clear.is_none() {
            scanned.clear = Some(user_name(&k)?);
        }
    }
    Ok(scanned)
}

/// The name of the token index's tree.
const TOKENS_TREE: &str = "tokens";

/// Makes the token index hold exactly `want` (token hash, user): builds it
/// for a store written before the index, and mends one that a crash or a
/// hand cannot have left wrong anyway. Returns how many entries changed.
fn sync_token_index(tokens: &sled::Tree, want: &[(String, String)]) -> Result<usize, StoreError> {
    let want: std::collections::HashMap<&[u8], &[u8]> = want
        .iter()
        .map(|(hash, user)| (hash.as_bytes(), user.as_bytes()))
        .collect();
    let mut batch = sled::Batch::default();
    let mut changed = 0;
    for item in tokens.iter() {
        let (hash, user) = item.map_err(backend)?;
        if want.get(hash.as_ref()) != Some(&user.as_ref()) {
            batch.remove(hash);
            changed += 1;
        }
    }
    for (hash, user) in &want {
        if tokens.get(hash).map_err(backend)?.as_deref() != Some(*user) {
            batch.insert(*hash, *user);
            changed += 1;
        }
    }
    if changed > 0 {
        tokens.apply_batch(batch).map_err(backend)?;
    }
    Ok(changed)
}

/// The watermark file: the highest change number known durable, rewritten
/// in place with one `pwrite`: 20 decimal digits, a space, the number's
/// tag (hex; [`RecordKey::meta_tag`] over the store ID and the number) and
/// a newline. An otpd before schema 3 wrote the digits and the newline
/// alone; such a file is read by its number.
///
/// Commits run concurrently and end out of change-number order, so the
/// file keeps the highest number any durable commit carried (never less):
/// the check at open asks that the store hold a change at least that high,
/// not that every lower number be present (a commit that failed or
/// conflicted leaves a gap).
struct Watermark {
    path: PathBuf,
    file: Mutex<File>,
    high: AtomicU64,
    store_id: String,
}

const WATERMARK_LEN: usize = 20 + 1 + 2 * seal::META_TAG_LEN + 1;

/// A watermark file as read: its number, and its tag if it has one.
struct WatermarkText {
    change: u64,
    tag: Option<String>,
}

fn watermark_tag(key: &RecordKey, store_id: &str, change: u64) -> [u8; seal::META_TAG_LEN] {
    key.meta_tag("watermark", &[store_id.as_bytes(), &change.to_be_bytes()])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Watermark {
    fn path_for(dir: &Path) -> PathBuf {
        dir.with_extension("watermark")
    }

    /// Reads (`None`: no file, or unreadable text, which is logged) without
    /// creating anything.
    fn read(path: &Path) -> Result<Option<WatermarkText>, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let value = std::str::from_utf8(&bytes).ok().and_then(|t| {
                    let mut words = t.trim_end().split(' ');
                    let change = words.next()?.parse::<u64>().ok()?;
                    let tag = words.next().map(str::to_owned);
                    words
                        .next()
                        .is_none()
                        .then_some(WatermarkText { change, tag })
                });
                if value.is_none() {
                    tracing::warn!(file = %path.display(), "the store's watermark is unreadable; not checked this time");
                }
                Ok(value)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(
                format_args!("cannot read {}", path.display()),
                &e,
            )),
        }
    }

    fn open(path: PathBuf, key: &RecordKey, store_id: &str, high: u64) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(format_args!("cannot open {}", path.display()), &e))?;
        let w = Self {
            path,
            file: Mutex::new(file),
            high: AtomicU64::new(0),
            store_id: store_id.to_owned(),
        };
        w.advance(key, high)?;
        w.sync()?;
        Ok(w)
    }

    /// Records that change `change` is durable in the store. Called after
    /// that commit's own durable sync; a lower number, from a commit that
    /// ended later, leaves the file as it is. The maximum is taken and
    /// written under the file's lock, so the file never goes back.
    fn advance(&self, key: &RecordKey, change: u64) -> Result<(), StoreError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let high = self.high.fetch_max(change, Ordering::SeqCst).max(change);
        let text = format!(
            "{high:020} {}\n",
            hex(&watermark_tag(key, &self.store_id, high))
        );
        debug_assert_eq!(text.len(), WATERMARK_LEN);
        file.write_all_at(text.as_bytes(), 0)
            .map_err(|e| StoreError::io(format_args!("cannot write {}", self.path.display()), &e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.sync_data().map_err(|e| {
            StoreError::io(
                format_args!("fdatasync of {} failed", self.path.display()),
                &e,
            )
        })
    }
}

/// The sled database with its meta tree read, before any key is involved.
struct Opened {
    db: sled::Db,
    meta_tree: sled::Tree,
    meta: Meta,
    log_file: File,
}

/// The `meta` tree's entries.
struct Meta {
    schema: Option<u64>,
    /// `None`: a new store, or one written before encryption at rest.
    active: Option<Active>,
    /// From schema 3 on.
    store_id: Option<String>,
    /// The change number of the last removal (removals leave no record).
    deleted_change: u64,
    /// The tag over the others (hex), from schema 3 on.
    auth: Option<String>,
}

/// sled's page cache. Its default (1 GiB) let a daemon with 100,000 users
/// grow past 130 MiB; records are a few hundred bytes and a login reads one,
/// so a small cache costs a page-cache read at most.
const CACHE_CAPACITY: u64 = 8 * 1024 * 1024;

/// The `meta` entry of the number of the last removal.
const DELETED_CHANGE: &str = "deleted_change";
/// The `meta` entry of the store's ID (random, made with the store).
const STORE_ID: &str = "store_id";
/// The `meta` entry of the tag over the others ([`meta_auth`]).
const AUTH: &str = "auth";
/// The tree of the audit trail's head ([`Store::audit_head`]).
const AUDIT_TREE: &str = "audit";
/// Its one entry.
const AUDIT_HEAD: &[u8] = b"head";

fn open_db(dir: &Path) -> Result<Opened, StoreError> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_CAPACITY)
        .open()
        .map_err(|e| {
            sled_error(
                format!("cannot open the store in {}: {e}", dir.display()),
                &e,
            )
        })?;
    let meta_tree = db.open_tree("meta").map_err(backend)?;
    let meta = read_meta(&meta_tree, dir)?;
    if let Some(found) = meta.schema {
        if found > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "the store in {} has schema version {found}; this otpd reads versions up to {SCHEMA_VERSION} (was it written by a newer otpd?)",
                dir.display()
            )));
        }
    }
    let log_file = File::open(dir.join("db")).map_err(|e| {
        StoreError::io(
            format_args!("cannot open {} for fdatasync", dir.join("db").display()),
            &e,
        )
    })?;
    Ok(Opened {
        db,
        meta_tree,
        meta,
        log_file,
    })
}

fn read_meta(meta: &sled::Tree, dir: &Path) -> Result<Meta, StoreError> {
    let corrupt = |e: StoreError| StoreError::Corrupt(format!("{}: {e}", dir.display()));
    let get = |key: &str| meta.get(key).map_err(backend);
    Ok(Meta {
        schema: get("schema")?
            .map(|v| decode("schema version", &v).map_err(corrupt))
            .transpose()?,
        active: get("active")?
            .map(|v| decode("the store's key entry", &v).map_err(corrupt))
            .transpose()?,
        store_id: get(STORE_ID)?
            .map(|v| decode("the store ID", &v).map_err(corrupt))
            .transpose()?,
        deleted_change: get(DELETED_CHANGE)?
            .map(|v| decode(DELETED_CHANGE, &v).map_err(corrupt))
            .transpose()?
            .unwrap_or(0),
        auth: get(AUTH)?
            .map(|v| decode("the metadata's tag", &v).map_err(corrupt))
            .transpose()?,
    })
}

/// The tag over the store's metadata: the schema, the key entry, the store
/// ID and the number of the last removal, all read at open and all deciding
/// what the store is taken for. Hex, as `meta/auth` holds it.
fn meta_auth(key: &RecordKey, active: &Active, store_id: &str, deleted_change: u64) -> String {
    hex(&key.meta_tag(
        "store",
        &[
            &SCHEMA_VERSION.to_be_bytes(),
            active.tree.as_bytes(),
            active.key_id.as_bytes(),
            store_id.as_bytes(),
            &deleted_change.to_be_bytes(),
        ],
    ))
}

/// The metadata entries of a schema-3 store, for one batch.
fn meta_batch(
    key: &RecordKey,
    active: &Active,
    store_id: &str,
    deleted_change: u64,
) -> Result<sled::Batch, StoreError> {
    let mut batch = sled::Batch::default();
    batch.insert("schema", encode(&SCHEMA_VERSION)?);
    batch.insert("active", encode(active)?);
    batch.insert(STORE_ID, encode(&store_id)?);
    batch.insert(DELETED_CHANGE, encode(&deleted_change)?);
    batch.insert(
        AUTH,
        encode(&meta_auth(key, active, store_id, deleted_change))?,
    );
    Ok(batch)
}

fn active_key_id(active: &Active, dir: &Path) -> Result<KeyId, StoreError> {
    active.key_id.parse::<KeyId>().map_err(|()| {
        StoreError::Corrupt(format!("{}: the store's key ID is damaged", dir.display()))
    })
}

fn flush_and_sync(db: &sled::Db, log_file: &File) -> Result<(), StoreError> {
    db.flush().map_err(backend)?;
    log_file
        .sync_data()
        .map_err(|e| StoreError::io("fdatasync of the store failed", &e))
}

/// The first record of `records` that is in clear (written before
/// encryption at rest, or planted), and whether any record is sealed.
fn find_clear(records: &[(sled::IVec, sled::IVec)]) -> Result<(Option<String>, bool), StoreError> {
    let mut clear = None;
    let mut sealed = false;
    for (k, v) in records {
        if seal::is_sealed(v) {
            sealed = true;
        } else if clear.is_none() {
            clear = Some(user_name(k)?);
        }
    }
    Ok((clear, sealed))
}

/// Whether the store shows any sign of having had a key: a key entry, its
/// metadata's ID or tag, a sealed record, a watermark (written only by an
/// otpd that seals), or this host's anchor. Removing one of them leaves the
/// others; the anchor is out of reach of whoever writes the store.
fn had_a_key(
    meta: &Meta,
    any_sealed: bool,
    watermark: &Option<WatermarkText>,
    anchor: &Option<AnchorState>,
) -> bool {
    meta.active.is_some()
        || meta.store_id.is_some()
        || meta.auth.is_some()
        || any_sealed
        || watermark.is_some()
        || anchor.is_some()
}

/// Rewrites the watermark of the store in `dir` with its tag under `new`
/// (a rekey), if its tag verifies under `old` or `new` already (a rekey run
/// again may find either). Without a watermark, nothing to do.
fn retag_watermark(
    dir: &Path,
    store_id: &str,
    old: Option<&RecordKey>,
    new: &RecordKey,
) -> Result<(), StoreError> {
    let path = Watermark::path_for(dir);
    let Some(WatermarkText { change, tag }) = Watermark::read(&path)? else {
        return Ok(());
    };
    let verifies = |k: &RecordKey| {
        tag.as_deref().and_then(unhex).is_some_and(|t| {
            k.verify_meta_tag(
                "watermark",
                &[store_id.as_bytes(), &change.to_be_bytes()],
                &t,
            )
        })
    };
    if tag.is_some() && !verifies(new) && !old.is_some_and(verifies) {
        return Err(StoreError::Corrupt(format!(
            "the watermark {} fails its authentication check under the old and the new key",
            path.display()
        )));
    }
    Watermark::open(path, new, store_id, change).map(drop)
}

impl SledStore {
    /// [`Self::open_anchored`] without an anchor.
    pub fn open(
        dir: &Path,
        key_for: impl FnOnce(Option<KeyId>) -> Result<RecordKey, StoreError>,
    ) -> Result<Self, StoreError> {
        Self::open_anchored(dir, None, key_for)
    }

    /// Opens (creating if needed) the store in `dir`. `key_for` is asked
    /// for the key with the ID the store was sealed with (`None` for a new
    /// store). Every record is opened once here, so a damaged record or a
    /// wrong key stops the daemon at start, with the file named; the
    /// metadata's tag is checked; a record in clear is refused (a store
    /// written before encryption at rest is sealed by [`Self::seal_store`],
    /// never here); and a store that holds fewer changes than its watermark,
    /// or than the anchor at `anchor_path` (outside `state_dir`) says it
    /// had reached, is refused.
    pub fn open_anchored(
        dir: &Path,
        anchor_path: Option<&Path>,
        key_for: impl FnOnce(Option<KeyId>) -> Result<RecordKey, StoreError>,
    ) -> Result<Self, StoreError> {
        let watermark_path = Watermark::path_for(dir);
        let expected = Watermark::read(&watermark_path)?;
        let anchor_state = match anchor_path {
            Some(path) => anchor::read(path)?,
            None => None,
        };
        let Opened {
            db,
            meta_tree,
            meta,
            log_file,
        } = open_db(dir)?;
        let dir_name = dir.display();
        let damaged_meta = |what: &str| {
            StoreError::Corrupt(format!(
                "the metadata of the store in {dir_name} fails its authentication check \
                 ({what}): it was changed by someone who can write the store but not read \
                 the key, or damaged; otpd refuses it. Restore the store from a backup"
            ))
        };
        let users_tree = meta
            .active
            .as_ref()
            .map_or("users".to_owned(), |a| a.tree.clone());
        let records_tree = db.open_tree(users_tree.as_bytes()).map_err(backend)?;
        let Scanned {
            count: scanned,
            clear,
            any_sealed,
        } = scan_clear(&records_tree)?;
        if let Some(name) = clear {
            return Err(StoreError::Corrupt(
                if had_a_key(&meta, any_sealed, &expected, &anchor_state) {
                    format!(
                        "the store in {dir_name} holds the record of user {name} in clear, \
                         but the store is sealed with a key: a record in clear can only have \
                         been put there by someone who can write the store without the key \
                         (or the store is damaged), and would let them choose the user's \
                         secret; otpd refuses it. Restore the store from a backup"
                    )
                } else {
                    format!(
                        "the store in {dir_name} was written by an otpd from before encryption \
                         at rest (the record of user {name} is in clear): seal it once with \
                         `otpd seal-store` (otpd stopped), then start otpd"
                    )
                },
            ));
        }
        let new_store = meta.active.is_none() && scanned == 0;
        if meta.active.is_none() && !new_store {
            // Sealed records and no key entry: the entry was removed.
            return Err(damaged_meta("the key entry is missing"));
        }
        if new_store {
            // Before a key is made: a store that vanished is not a first start.
            if let Some(path) = anchor_path {
                let what_to_do = format!(
                    "Restore the state directory from your backup; or, to start over with an \
                     empty store on purpose, delete {}",
                    path.display()
                );
                anchor::check(
                    path,
                    anchor_state.as_ref(),
                    &format!("the store in {dir_name}"),
                    None,
                    0,
                    &what_to_do,
                )?;
            }
        }
        let stored_id = meta
            .active
            .as_ref()
            .map(|a| active_key_id(a, dir))
            .transpose()?;
        let key = key_for(stored_id)?;
        if let Some(id) = stored_id {
            if id != key.id() {
                return Err(StoreError::WrongKey(format!(
                    "the store in {} is sealed with key ID {id}, but the key file holds key ID {}",
                    dir.display(),
                    key.id()
                )));
            }
        }
        // The metadata: made for a new store, upgraded from schema 2 (its
        // number of the last removal taken as it is, once), else checked.
        let (active, store_id, deleted_change) = match (&meta.active, meta.schema) {
            (None, _) => {
                let active = Active {
                    tree: "users".into(),
                    key_id: key.id().to_string(),
                };
                let store_id = anchor::new_store_id()?;
                meta_tree
                    .apply_batch(meta_batch(&key, &active, &store_id, 0)?)
                    .map_err(backend)?;
                (active, store_id, 0)
            }
            (Some(active), Some(2)) if meta.auth.is_none() && meta.store_id.is_none() => {
                if anchor_state.is_some() {
                    // This host's otpd wrote schema 3 already: the metadata
                    // was put back to an older form.
                    return Err(damaged_meta(
                        "it claims schema 2, but this host has run it at schema 3",
                    ));
                }
                if expected.as_ref().is_some_and(|w| w.tag.is_some()) {
                    return Err(damaged_meta(
                        "it claims schema 2, but its watermark was written at schema 3",
                    ));
                }
                let store_id = anchor::new_store_id()?;
                meta_tree
                    .apply_batch(meta_batch(&key, active, &store_id, meta.deleted_change)?)
                    .map_err(backend)?;
                tracing::info!(store = %dir_name, "upgraded the store to schema 3 (authenticated metadata)");
                (active.clone(), store_id, meta.deleted_change)
            }
            (Some(active), Some(SCHEMA_VERSION)) => {
                let (Some(store_id), Some(auth)) = (&meta.store_id, &meta.auth) else {
                    return Err(damaged_meta("its tag or store ID is missing"));
                };
                let tag = unhex(auth).unwrap_or_default();
                let authentic = anchor::is_store_id(store_id)
                    && key.verify_meta_tag(
                        "store",
                        &[
                            &SCHEMA_VERSION.to_be_bytes(),
                            active.tree.as_bytes(),
                            active.key_id.as_bytes(),
                            store_id.as_bytes(),
                            &meta.deleted_change.to_be_bytes(),
                        ],
                        &tag,
                    );
                if !authentic {
                    return Err(damaged_meta(
                        "schema, key entry, store ID or the number of the last removal",
                    ));
                }
                (active.clone(), store_id.clone(), meta.deleted_change)
            }
            (Some(_), _) => return Err(damaged_meta("its schema version")),
        };
        // Trees left by a rekey that was killed before its switch.
        for name in db.tree_names() {
            if name.starts_with(b"users-") && name.as_ref() != active.tree.as_bytes() {
                db.drop_tree(&name).map_err(backend)?;
            }
        }
        let users = db.open_tree(active.tree.as_bytes()).map_err(backend)?;
        let sources = db.open_tree("sources").map_err(backend)?;
        let tokens = db.open_tree(TOKENS_TREE).map_err(backend)?;
        flush_and_sync(&db, &log_file)?;
        // The directory entries of a new store must be durable too.
        for d in [dir, dir.parent().unwrap_or(dir)] {
            File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::io(format_args!("cannot sync {}", d.display()), &e))?;
        }
        // Every record opens (the tag is checked), and the highest change.
        let (count, checked) = check_records(&key, dir, &records_tree)?;
        drop(records_tree);
        let highest = deleted_change.max(checked.highest);
        if let Some(WatermarkText { change, tag }) = &expected {
            if highest < *change {
                return Err(StoreError::Corrupt(format!(
                    "the store in {} has lost changes: it holds changes up to number {highest}, \
                     but number {change} was made and recorded in {}. Its files were damaged \
                     (sled drops everything after a damaged spot) or replaced by an older copy; \
                     otpd will not run on a store that may have forgotten used codes, removals \
                     or enrolments. Restore the store from a backup and then delete {} to accept \
                     that copy",
                    dir.display(),
                    watermark_path.display(),
                    watermark_path.display()
                )));
            }
            let authentic = match tag {
                Some(tag) => unhex(tag).is_some_and(|tag| {
                    key.verify_meta_tag(
                        "watermark",
                        &[store_id.as_bytes(), &change.to_be_bytes()],
                        &tag,
                    )
                }),
                // Schema 3 writes its watermark right after its metadata:
                // killed in between, the watermark is still untagged.
                None => true,
            };
            if !authentic {
                return Err(StoreError::Corrupt(format!(
                    "the watermark {} of the store in {dir_name} fails its authentication check: \
                     it was changed by someone who can write the state directory but not read \
                     the key, or it belongs to another store; otpd refuses it. If you restored \
                     the store from a backup on purpose, delete {} to accept that copy",
                    watermark_path.display(),
                    watermark_path.display()
                )));
            }
        }
        let anchor = match anchor_path {
            None => None,
            Some(path) => {
                let what_to_do = format!(
                    "If you restored the state directory from a backup on purpose, delete {} \
                     (and start otpd again) to accept it as it is",
                    path.display()
                );
                anchor::check(
                    path,
                    anchor_state.as_ref(),
                    &format!("the store in {dir_name}"),
                    Some(&store_id),
                    highest,
                    &what_to_do,
                )?;
                match Anchor::open(path, &store_id, highest) {
                    Ok(a) => Some(a),
                    Err(e) if anchor_state.is_none() => {
                        // No anchor yet, and none can be made: the store
                        // runs, the operator reads why rollback goes
                        // unnoticed (docs/security.md).
                        tracing::error!(
                            "{e}; an older copy of the state directory put back would not be \
                             noticed: make the directory writable for otpd, or set \
                             [store] anchor_dir"
                        );
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let watermark = Watermark::open(watermark_path, &key, &store_id, highest)?;
        // The records were all opened just now: the token index is made to
        // match them (built once for a store written before it).
        let mended = sync_token_index(&tokens, &checked.tokens)?;
        if mended > 0 {
            flush_and_sync(&db, &log_file)?;
            tracing::info!(entries = mended, "built the store's link-token index");
        }
        tracing::debug!(users = count, key_id = %key.id(), change = highest, "store opened");
        Ok(Self {
            inner: RwLock::new(Some(Inner {
                db,
                meta: meta_tree,
                users,
                sources,
                tokens,
                log_file,
                generation: 0,
            })),
            broken: AtomicBool::new(false),
            key,
            dir: dir.to_owned(),
            next_change: AtomicU64::new(highest + 1),
            watermark,
            anchor,
            active,
            store_id,
            group: GroupSync::new(),
            generation: AtomicU64::new(0),
            observer: std::sync::OnceLock::new(),
        })
    }

    /// `otpd seal-store`: seals the records of a store written before
    /// encryption at rest (schema 1, records in clear), with the key
    /// `key_for(None)` gives, and makes it a schema-3 store. Refuses a store
    /// that shows any sign of having had a key (a key entry, a sealed record,
    /// a watermark, this host's anchor): records in clear there were put in
    /// by someone without the key, and sealing them would adopt their
    /// secrets. The store must not be open elsewhere (sled's lock). Returns
    /// how many records it sealed, and with which key.
    pub fn seal_store(
        dir: &Path,
        anchor_path: Option<&Path>,
        key_for: impl FnOnce(Option<KeyId>) -> Result<RecordKey, StoreError>,
    ) -> Result<(usize, KeyId), StoreError> {
        let io = |what: &str, path: &Path, e: std::io::Error| {
            StoreError::io(format_args!("cannot {what} {}", path.display()), &e)
        };
        // Left by a run that was killed: a new store half-written, or (killed
        // right after the exchange below) the old one in clear.
        let sealing = dir.with_extension("sealing");
        if sealing.exists() {
            std::fs::remove_dir_all(&sealing).map_err(|e| io("remove", &sealing, e))?;
        }
        let watermark = Watermark::read(&Watermark::path_for(dir))?;
        let anchor_state = match anchor_path {
            Some(path) => anchor::read(path)?,
            None => None,
        };
        let (records, sources) = {
            let Opened { db, meta, .. } = open_db(dir)?;
            let all = |tree: &str| -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
                db.open_tree(tree)
                    .map_err(backend)?
                    .iter()
                    .collect::<Result<_, _>>()
                    .map_err(backend)
            };
            let (records, sources) = (all("users")?, all("sources")?);
            let (clear, any_sealed) = find_clear(&records)?;
            if had_a_key(&meta, any_sealed, &watermark, &anchor_state) {
                return Err(StoreError::Corrupt(format!(
                    "the store in {} has had a key (a key entry, sealed records, a watermark \
                     or this host's anchor): it is not a store from before encryption at \
                     rest, and otpd will not seal records in clear in it{}",
                    dir.display(),
                    if clear.is_some() {
                        " (they can only have been put there by someone without the key: \
                         restore the store from a backup)"
                    } else {
                        ""
                    }
                )));
            }
            if clear.is_none() {
                return Err(StoreError::Corrupt(format!(
                    "the store in {} holds no records: nothing to seal",
                    dir.display()
                )));
            }
            (records, sources)
        };
        let key = key_for(None)?;
        // A new database: sled keeps old values in its log until it reuses
        // the space, so sealing in place would leave the secrets in clear in
        // the store's files. Numbered 1, 2, …: the watermark and the anchor
        // start from there.
        {
            let Opened {
                db,
                meta_tree,
                log_file,
                ..
            } = open_db(&sealing)?;
            let mut users = sled::Batch::default();
            for (change, (k, v)) in (1u64..).zip(&records) {
                let name = user_name(k)?;
                let record = super::format::decode(v).map_err(|e| {
                    StoreError::Corrupt(format!("{}: user {name}: {e}", dir.display()))
                })?;
                let value = seal::seal_record(&key, &name, &record, change, nonce()?)
                    .map_err(|e| StoreError::Corrupt(format!("user {name}: {e}")))?;
                users.insert(k.clone(), value);
            }
            db.open_tree("users")
                .map_err(backend)?
                .apply_batch(users)
                .map_err(backend)?;
            let mut counters = sled::Batch::default();
            for (k, v) in sources {
                counters.insert(k, v);
            }
            db.open_tree("sources")
                .map_err(backend)?
                .apply_batch(counters)
                .map_err(backend)?;
            let active = Active {
                tree: "users".into(),
                key_id: key.id().to_string(),
            };
            meta_tree
                .apply_batch(meta_batch(&key, &active, &anchor::new_store_id()?, 0)?)
                .map_err(backend)?;
            flush_and_sync(&db, &log_file)?;
            File::open(&sealing)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("sync", &sealing, e))?;
        }
        // One atomic exchange: killed at any moment, `dir` is the old store
        // or the new one, whole; then the old one goes.
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &sealing,
            nix::fcntl::AT_FDCWD,
            dir,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| io("exchange the sealed store with", dir, e.into()))?;
        let parent = dir.parent().unwrap_or(dir);
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", parent, e))?;
        std::fs::remove_dir_all(&sealing).map_err(|e| io("remove", &sealing, e))?;
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", parent, e))?;
        Ok((records.len(), key.id()))
    }

    /// Every failure counter of `user`, by source (for `otpd migrate`).
    pub fn sources_of(&self, user: &str) -> Result<Vec<(String, SourceCounter)>, StoreError> {
        let prefix = source_prefix(user);
        let all: Vec<(sled::IVec, sled::IVec)> = self.with(|i| {
            i.sources
                .scan_prefix(&prefix)
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
        })?;
        all.into_iter()
            .map(|(k, v)| {
                let source = String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| StoreError::Corrupt("a source name is not UTF-8".into()))?;
                Ok((source, decode("a failure counter", &v)?))
            })
            .collect()
    }

    /// Re-seals every record with `new`, crash-safely: the records are
    /// copied into a fresh tree, made durable, and then one `meta` entry is
    /// switched. Killed before the switch, the store is whole under the old
    /// key (and the copy is dropped at the next open); after it, whole under
    /// the new one. The store must not be open elsewhere (sled's lock).
    pub fn rekey(
        dir: &Path,
        old: Option<&RecordKey>,
        new: &RecordKey,
    ) -> Result<RekeyReport, StoreError> {
        let Opened {
            db,
            meta_tree,
            meta,
            log_file,
        } = open_db(dir)?;
        let (Some(active), Some(store_id), Some(SCHEMA_VERSION)) =
            (&meta.active, &meta.store_id, meta.schema)
        else {
            return Err(StoreError::WrongKey(format!(
                "the store in {} has not been opened by this version of otpd yet; start otpd \
                 once first",
                dir.display()
            )));
        };
        let stored_id = active_key_id(active, dir)?;
        let from = db.open_tree(active.tree.as_bytes()).map_err(backend)?;
        // The metadata is checked under the key it says it was sealed with.
        let tag = meta.auth.as_deref().and_then(unhex).unwrap_or_default();
        let sealed_with = if stored_id == new.id() {
            Some(new)
        } else {
            old
        };
        let authentic = sealed_with.is_some_and(|k| {
            k.id() == stored_id
                && unhex(&meta_auth(k, active, store_id, meta.deleted_change))
                    .is_some_and(|want| constant_time_eq::constant_time_eq(&want, &tag))
        });
        if stored_id == new.id() {
            if !authentic {
                return Err(StoreError::Corrupt(format!(
                    "the metadata of the store in {} fails its authentication check",
                    dir.display()
                )));
            }
            retag_watermark(dir, store_id, old, new)?;
            return Ok(RekeyReport {
                records: from.len(),
                already_done: true,
            });
        }
        let old = match old {
            Some(k) if k.id() == stored_id => k,
            Some(k) => {
                return Err(StoreError::WrongKey(format!(
                    "the store in {} is sealed with key ID {stored_id}, but the current key file holds key ID {}",
                    dir.display(),
                    k.id()
                )))
            }
            None => {
                return Err(StoreError::WrongKey(format!(
                    "the store in {} is sealed with key ID {stored_id}, and its key file is missing",
                    dir.display()
                )))
            }
        };
        if !authentic {
            return Err(StoreError::Corrupt(format!(
                "the metadata of the store in {} fails its authentication check: it was \
                 changed by someone without the key, or damaged; restore the store from a \
                 backup before a rekey",
                dir.display()
            )));
        }
        let tree_name = format!("users-{}", new.id());
        let _ = db.drop_tree(tree_name.as_bytes()).map_err(backend)?;
        let to = db.open_tree(tree_name.as_bytes()).map_err(backend)?;
        let mut records = 0;
        for item in from.iter() {
            let (k, v) = item.map_err(backend)?;
            let name = user_name(&k)?;
            let damaged = |e: seal::SealError| {
                StoreError::Corrupt(format!("{}: user {name}: {e}", dir.display()))
            };
            let record = seal::open_record(old, &name, &v).map_err(damaged)?;
            let change = seal::peek(&v).map_err(damaged)?.change;
            let value = seal::seal_record(new, &name, &record, change, nonce()?)
                .map_err(|e| StoreError::Corrupt(format!("user {name}: {e}")))?;
            to.insert(k, value).map_err(backend)?;
            records += 1;
        }
        flush_and_sync(&db, &log_file)?;
        let switched = Active {
            tree: tree_name,
            key_id: new.id().to_string(),
        };
        // One batch: the key entry and the tag over it switch together.
        meta_tree
            .apply_batch(meta_batch(new, &switched, store_id, meta.deleted_change)?)
            .map_err(backend)?;
        flush_and_sync(&db, &log_file)?;
        retag_watermark(dir, store_id, Some(old), new)?;
        if active.tree != switched.tree {
            db.drop_tree(active.tree.as_bytes()).map_err(backend)?;
            flush_and_sync(&db, &log_file)?;
        }
        Ok(RekeyReport {
            records,
            already_done: false,
        })
    }

    /// Runs `f` on the open database. After a backend error or a full disk
    /// the database is dropped and opened again from disk before the next
    /// use (see the type's documentation); until that succeeds every call
    /// fails closed.
    fn with<T>(&self, f: impl FnOnce(&Inner) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            self.reopen()?;
        }
        let guard = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let inner = guard
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store is closed after a write error".into()))?;
        let result = f(inner);
        if let Err(StoreError::Backend(e) | StoreError::DiskFull(e)) = &result {
            if !self.broken.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    "the store failed ({e}); it is read again from disk before the next request"
                );
            }
        }
        result
    }

    /// The commit of a record alone (a login: the record's replay state
    /// changes, no source counter does): one compare-and-swap on the
    /// record's exact stored bytes instead of a multi-tree transaction.
    /// sled serialises its transactions against every other operation with
    /// one process-wide lock, so a transaction per login queued every login
    /// (and every read) behind every other; a single-key swap takes only the
    /// shared side of that lock. The version check is the same: the stored
    /// bytes carry the version in their sealed header, and any other commit
    /// of this user changes those bytes (a fresh nonce every write).
    ///
    /// Only while the record's link tokens stay as they are: returns
    /// `Ok(false)`, having written nothing, when the token index must
    /// change too (then the caller takes the transaction).
    fn commit_record_only(
        &self,
        user: &str,
        expected_version: Option<u64>,
        value: &[u8],
        new_tokens: &[String],
        change: u64,
    ) -> Result<bool, StoreError> {
        let applied = self.with(|inner| {
            let current = inner.users.get(user.as_bytes()).map_err(backend)?;
            let version = match &current {
                None => None,
                Some(v) => Some(
                    seal::peek(v)
                        .map_err(|e| {
                            StoreError::Corrupt(format!("the record of user {user}: {e}"))
                        })?
                        .version,
                ),
            };
            if version != expected_version {
                return Err(StoreError::Conflict);
            }
            // The index changes only in a commit that changes the record,
            // so the tokens of the bytes swapped out are the index's now.
            let old_tokens = match &current {
                None => Vec::new(),
                Some(v) => token_hashes(&self.open_value(user, v)?),
            };
            if old_tokens != new_tokens {
                return Ok(None);
            }
            match inner
                .users
                .compare_and_swap(user.as_bytes(), current, Some(value))
                .map_err(backend)?
            {
                Ok(()) => Ok(Some(self.applied(inner))),
                Err(_) => Err(StoreError::Conflict),
            }
        })?;
        let Some((generation, ticket)) = applied else {
            return Ok(false);
        };
        self.make_durable(generation, ticket)?;
        self.made_durable(change)?;
        Ok(true)
    }

    /// Change `change` is durable now: the watermark and the anchor may say
    /// so (never before).
    fn made_durable(&self, change: u64) -> Result<(), StoreError> {
        self.watermark.advance(&self.key, change)?;
        match &self.anchor {
            Some(anchor) => anchor.advance(change),
            None => Ok(()),
        }
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !self.broken.load(Ordering::SeqCst) {
            return Ok(()); // another request reopened it meanwhile
        }
        // sled's lock and memory go with the old handle; what is on disk is
        // what was made durable.
        drop(guard.take());
        let Opened {
            db,
            meta_tree,
            meta,
            log_file,
        } = open_db(&self.dir).inspect_err(|e| {
            tracing::error!("the store cannot be read again yet: {e}");
        })?;
        // The metadata was checked at open; the same process wrote it since.
        let same = meta
            .active
            .as_ref()
            .is_some_and(|a| a.tree == self.active.tree && a.key_id == self.active.key_id)
            && meta.store_id.as_deref() == Some(self.store_id.as_str());
        if !same {
            return Err(StoreError::Corrupt(format!(
                "the metadata of the store in {} changed while it was open",
                self.dir.display()
            )));
        }
        let users = db.open_tree(self.active.tree.as_bytes()).map_err(backend)?;
        let sources = db.open_tree("sources").map_err(backend)?;
        let tokens = db.open_tree(TOKENS_TREE).map_err(backend)?;
        // A new number: commits applied through the dropped handle but not
        // yet synced were lost with it, and must not take a sync of this
        // one for theirs (see `make_durable`).
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *guard = Some(Inner {
            db,
            meta: meta_tree,
            users,
            sources,
            tokens,
            log_file,
            generation,
        });
        self.broken.store(false, Ordering::SeqCst);
        tracing::info!("the store was read again from disk and serves again");
        Ok(())
    }

    fn open_value(&self, name: &str, value: &[u8]) -> Result<UserRecord, StoreError> {
        seal::open_record(&self.key, name, value).map_err(|e| {
            StoreError::Corrupt(format!(
                "{}: the record of user {name}: {e}",
                self.dir.display()
            ))
        })
    }

    fn seal_value(
        &self,
        name: &str,
        record: &UserRecord,
        change: u64,
    ) -> Result<Vec<u8>, StoreError> {
        seal::seal_record(&self.key, name, record, change, nonce()?)
            .map_err(|e| StoreError::Backend(format!("user {name}: {e}")))
    }

    /// How many shared syncs (sled flush and fdatasync) commits and decoy
    /// writes have run since the store was opened. Fewer than the writes:
    /// concurrent writes share one (for a status or a benchmark).
    pub fn syncs(&self) -> u64 {
        self.group.syncs()
    }

    /// The ticket of a write just applied through `inner`. Called inside
    /// `with`, under the read lock, so no reopen comes between the write
    /// and its ticket.
    fn applied(&self, inner: &Inner) -> (u64, Ticket<u64, StoreError>) {
        (inner.generation, self.group.ticket())
    }

    /// Returns once the write that took `ticket` (applied through the
    /// handle of `generation`) is durable, sharing the sync with the
    /// commits running at the same time.
    ///
    /// The leader's sync goes through `with`, so a failed flush marks the
    /// store for a reopen as before, and its error reaches every commit of
    /// the batch. A reopen between a write and the sync that covers it
    /// drops the write (sled kept it in memory only), yet the sync of the
    /// new handle succeeds: the generation it reports tells those commits
    /// apart, and they fail. A reopen after the covering sync harms
    /// nothing: the write was on disk when the old handle was dropped.
    fn make_durable(
        &self,
        generation: u64,
        ticket: Ticket<u64, StoreError>,
    ) -> Result<(), StoreError> {
        let synced = self.group.sync_through(ticket, || {
            self.with(|i| {
                let started = std::time::Instant::now();
                flush_and_sync(&i.db, &i.log_file)?;
                if let Some(observer) = self.observer.get() {
                    observer.fdatasync(started.elapsed());
                }
                Ok(i.generation)
            })
        })?;
        if synced != generation {
            // Not a failure of the current handle: the store is not marked
            // for another reopen.
            return Err(StoreError::Backend(
                "the store was read again from disk after a write error before this write \
                 was made durable, so the write was dropped"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let value = self.with(|i| i.users.get(user.as_bytes()).map_err(backend))?;
        value.map(|v| self.open_value(user, &v)).transpose()
    }

    fn source(&self, user: &str, source: &str) -> Result<Option<SourceCounter>, StoreError> {
        self.with(|i| {
            i.sources
                .get(source_key(user, source))
                .map_err(backend)?
                .map(|v| decode("source counter", &v))
                .transpose()
        })
    }

    fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        let all: Vec<(sled::IVec, sled::IVec)> = self.with(|i| {
            i.users
                .iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
        })?;
        all.into_iter()
            .map(|(k, v)| {
                let name = user_name(&k)?;
                let record = self.open_value(&name, &v)?;
                Ok((name, record))
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
        let started = std::time::Instant::now();
        // Timed as a whole, whichever way it returns (the metrics).
        let result = (|| -> Result<(), StoreError> {
            let change = self.next_change.fetch_add(1, Ordering::SeqCst);
            let new_value = match record {
                RecordChange::Put(r) => Some(self.seal_value(user, r, change)?),
                RecordChange::Delete => None,
            };
            let new_tokens = match record {
                RecordChange::Put(r) => token_hashes(r),
                RecordChange::Delete => Vec::new(),
            };
            let source_write = match sources {
                SourcesChange::Set(s, counter) => {
                    Some((source_key(user, s), Some(encode(&counter)?)))
                }
                SourcesChange::Reset(s) => Some((source_key(user, s), None)),
                SourcesChange::Keep | SourcesChange::ClearAll => None,
            };
            let deleted = encode(&change)?;
            let auth = encode(&meta_auth(&self.key, &self.active, &self.store_id, change))?;
            if let (Some(value), None) = (&new_value, &source_write) {
                if !matches!(sources, SourcesChange::ClearAll)
                    && self.commit_record_only(
                        user,
                        expected_version,
                        value,
                        &new_tokens,
                        change,
                    )?
                {
                    return Ok(());
                }
            }
            let (generation, ticket) = self.with(|inner| {
                // Keys to clear are listed before the transaction (sled
                // transactions cannot scan). A counter added meanwhile came with
                // a version bump, so the compare-and-swap below fails and the
                // caller retries.
                let clear: Vec<sled::IVec> = if matches!(sources, SourcesChange::ClearAll) {
                    inner
                        .sources
                        .scan_prefix(source_prefix(user))
                        .keys()
                        .collect::<Result<_, _>>()
                        .map_err(backend)?
                } else {
                    Vec::new()
                };
                let trees = (&inner.users, &inner.sources, &inner.meta, &inner.tokens);
                let result = trees.transaction(|(users, srcs, meta, tokens)| {
                    let stored = users.get(user.as_bytes())?;
                    let current = match &stored {
                        None => None,
                        // The version is in the sealed header: no need to
                        // open the record for it.
                        Some(v) => Some(
                            seal::peek(v)
                                .map_err(|e| {
                                    ConflictableTransactionError::Abort(StoreError::Corrupt(
                                        format!("the record of user {user}: {e}"),
                                    ))
                                })?
                                .version,
                        ),
                    };
                    if current != expected_version {
                        return Err(ConflictableTransactionError::Abort(StoreError::Conflict));
                    }
                    // The token index follows the record: the old record's
                    // links out, the new one's in.
                    let old_tokens = match &stored {
                        None => Vec::new(),
                        Some(v) => token_hashes(
                            &self
                                .open_value(user, v)
                                .map_err(ConflictableTransactionError::Abort)?,
                        ),
                    };
                    for hash in old_tokens.iter().filter(|h| !new_tokens.contains(h)) {
                        // Only an entry that names this user (a hash is
                        // random: another user's would be a forgery).
                        if tokens.get(hash.as_bytes())?.as_deref() == Some(user.as_bytes()) {
                            tokens.remove(hash.as_bytes())?;
                        }
                    }
                    for hash in new_tokens.iter().filter(|h| !old_tokens.contains(h)) {
                        tokens.insert(hash.as_bytes(), user.as_bytes())?;
                    }
                    match &new_value {
                        Some(v) => {
                            users.insert(user.as_bytes(), v.as_slice())?;
                        }
                        None => {
                            users.remove(user.as_bytes())?;
                            // A removal leaves no record to carry its number,
                            // so meta keeps the highest removal's. Commits
                            // apply out of number order (the number is taken
                            // before the transaction): a lower number written
                            // over a higher one would make the check at open
                            // take the store for one that lost changes.
                            // The metadata's tag covers the number.
                            let previous = match meta.get(DELETED_CHANGE)? {
                                None => 0,
                                Some(v) => decode::<u64>(DELETED_CHANGE, &v)
                                    .map_err(ConflictableTransactionError::Abort)?,
                            };
                            if change > previous {
                                meta.insert(DELETED_CHANGE, deleted.as_slice())?;
                                meta.insert(AUTH, auth.as_slice())?;
                            }
                        }
                    };
                    if let Some((key, value)) = &source_write {
                        match value {
                            Some(v) => srcs.insert(key.as_slice(), v.as_slice())?,
                            None => srcs.remove(key.as_slice())?,
                        };
                    }
                    for key in &clear {
                        srcs.remove(key)?;
                    }
                    Ok(())
                });
                match result {
                    Ok(()) => Ok(self.applied(inner)),
                    Err(TransactionError::Abort(e)) => Err(e),
                    Err(TransactionError::Storage(e)) => Err(backend(e)),
                }
            })?;
            self.make_durable(generation, ticket)?;
            self.made_durable(change)
        })();
        if let Some(observer) = self.observer.get() {
            observer.commit(started.elapsed());
        }
        result
    }

    fn derived_secret(&self, label: &str) -> Option<[u8; 32]> {
        Some(self.key.meta_tag(label, &[]))
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    // The head lives in a tree of its own, outside the sealed records and
    // the authenticated metadata: it is itself a chain value (an HMAC), and
    // sled makes it durable with its next flush (every commit's, sled's own
    // every 500 ms, or the shutdown's `sync`). One store, one host: the
    // host name is not part of the key.
    fn audit_head(&self, _host: &str) -> Result<Option<String>, StoreError> {
        self.with(|i| {
            let tree = i.db.open_tree(AUDIT_TREE).map_err(backend)?;
            match tree.get(AUDIT_HEAD).map_err(backend)? {
                None => Ok(None),
                Some(bytes) => String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|_| StoreError::Corrupt("the audit head is not text".into())),
            }
        })
    }

    fn set_audit_head(&self, _host: &str, head: &str) -> Result<(), StoreError> {
        self.with(|i| {
            let tree = i.db.open_tree(AUDIT_TREE).map_err(backend)?;
            tree.insert(AUDIT_HEAD, head.as_bytes()).map_err(backend)?;
            Ok(())
        })
    }

    fn observe(&self, observer: std::sync::Arc<dyn super::StoreObserver>) {
        let _ = self.observer.set(observer);
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.with(|i| flush_and_sync(&i.db, &i.log_file))?;
        self.watermark.sync()?;
        match &self.anchor {
            Some(anchor) => anchor.sync(),
            None => Ok(()),
        }
    }

    fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        let user = self.with(|i| i.tokens.get(token_hash.as_bytes()).map_err(backend))?;
        user.map(|u| user_name(&u)).transpose()
    }

    fn decoy_write(&self) -> Result<(), StoreError> {
        // A record-sized sealed value under a key nothing reads.
        let value = self.seal_value("\0decoy", &UserRecord::decoy(), 0)?;
        let (generation, ticket) = self.with(|i| {
            i.sources.insert(b"\0decoy", value).map_err(backend)?;
            Ok(self.applied(i))
        })?;
        self.make_durable(generation, ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::SecretBytes;
    use crate::core::seal::KEY_LEN;

    fn key(byte: u8) -> RecordKey {
        RecordKey::from_bytes(&[byte; KEY_LEN])
    }

    #[test]
    fn a_full_disk_under_sled_is_disk_full_also_in_sleds_copies() {
        let enospc = || std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32);
        let e = backend(sled::Error::Io(enospc()));
        assert!(matches!(e, StoreError::DiskFull(_)), "{e:?}");
        assert!(e.to_string().contains("No space left on device"), "{e}");
        // sled hands later operations a copy of a failed flush's error,
        // which keeps the kind but not the errno.
        let copy = sled::Error::Io(enospc()).clone();
        assert!(matches!(backend(copy), StoreError::DiskFull(_)));
        let opening = sled_error(
            "cannot open the store in /x".into(),
            &sled::Error::Io(enospc()),
        );
        assert!(matches!(opening, StoreError::DiskFull(_)), "{opening:?}");
        assert_eq!(
            opening.for_caller(),
            "otpd could not write its store: no space left on device (see its log)"
        );
    }

    #[test]
    fn other_sled_failures_are_backend_errors() {
        let eacces = std::io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32);
        for e in [
            sled::Error::Io(eacces),
            sled::Error::Corruption { at: None, bt: () },
            sled::Error::ReportableBug("x".into()),
            sled::Error::Unsupported("x".into()),
        ] {
            let got = backend(e);
            assert!(matches!(got, StoreError::Backend(_)), "{got:?}");
        }
    }

    /// Retries `f` while sled's lock on the store is taken. sled's I/O
    /// threads finish the last writes of a database just dropped, and hold
    /// its lock file until then: an open right after a drop, as these tests
    /// do while other tests load the machine, can fail with `WouldBlock`
    /// for a moment. (The daemon opens right after a drop only in `reopen`,
    /// which the next request retries.)
    fn unlocked<T>(mut f: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match f() {
                Err(StoreError::Backend(m))
                    if m.contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn open_store(
        dir: &Path,
        key_for: impl Fn(Option<KeyId>) -> Result<RecordKey, StoreError>,
    ) -> Result<SledStore, StoreError> {
        unlocked(|| SledStore::open(dir, &key_for))
    }

    /// Every file under `dir`, concatenated.
    fn raw_bytes(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                all.extend(raw_bytes(&path));
            } else {
                all.extend(std::fs::read(&path).unwrap());
            }
        }
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn record(version: u64) -> UserRecord {
        let mut r = UserRecord::decoy();
        r.version = version;
        r.issuer = "t".into();
        r.change_devices(|d| {
            d[0].secret = SecretBytes::new(b"SECRET-1234567890abc".to_vec());
            d[0].created = 1;
            d[0].last_accepted_step = Some(5);
        })
        .unwrap();
        r
    }

    /// Creates `user` with `record(version)`; must succeed.
    fn create(store: &SledStore, user: &str, version: u64) {
        store
            .commit(
                user,
                None,
                RecordChange::Put(&record(version)),
                SourcesChange::Keep,
            )
            .unwrap();
    }

    #[test]
    fn commit_is_a_compare_and_swap_on_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        create(&store, "alice", 1);
        // Creating again, or writing against a stale version, conflicts.
        assert!(matches!(
            store.commit(
                "alice",
                None,
                RecordChange::Put(&record(1)),
                SourcesChange::Keep
            ),
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            store.commit(
                "alice",
                Some(0),
                RecordChange::Put(&record(2)),
                SourcesChange::Keep
            ),
            Err(StoreError::Conflict)
        ));
        let c = SourceCounter {
            failures: 3,
            last_failure: 9,
        };
        store
            .commit(
                "alice",
                Some(1),
                RecordChange::Put(&record(2)),
                SourcesChange::Set("rhost:a", c),
            )
            .unwrap();
        assert_eq!(store.user("alice").unwrap().unwrap().version, 2);
        assert_eq!(store.source("alice", "rhost:a").unwrap(), Some(c));
        // A failed swap wrote nothing.
        assert!(store.source("alice", "rhost:b").unwrap().is_none());
    }

    #[test]
    fn clear_all_touches_only_that_user_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            let c = SourceCounter {
                failures: 1,
                last_failure: 1,
            };
            for user in ["al", "alice"] {
                store
                    .commit(
                        user,
                        None,
                        RecordChange::Put(&record(1)),
                        SourcesChange::Set("x", c),
                    )
                    .unwrap();
            }
            store
                .commit(
                    "al",
                    Some(1),
                    RecordChange::Put(&record(2)),
                    SourcesChange::ClearAll,
                )
                .unwrap();
            assert!(store.source("al", "x").unwrap().is_none());
            assert!(store.source("alice", "x").unwrap().is_some());
        }
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        let names: Vec<_> = store.users().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["al", "alice"]);
        store
            .commit("al", Some(2), RecordChange::Delete, SourcesChange::ClearAll)
            .unwrap();
        assert!(store.user("al").unwrap().is_none());
    }

    #[test]
    fn records_are_sealed_on_disk_and_need_the_right_key() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), |stored| {
                assert_eq!(stored, None, "a new store has no key yet");
                Ok(key(1))
            })
            .unwrap();
            create(&store, "alice", 1);
            store.sync().unwrap();
        }
        let raw = raw_bytes(dir.path());
        assert!(!contains(&raw, b"SECRET-1234567890abc"));
        let as_json = serde_json::to_vec(&record(1).first_device().secret).unwrap();
        assert!(!contains(&raw, &as_json));
        assert!(!contains(&raw, b"\"issuer\""));
        // The store asks for the key it was sealed with, and refuses another.
        let e = open_store(dir.path(), |stored| {
            assert_eq!(stored, Some(key(1).id()));
            Ok(key(2))
        })
        .err()
        .unwrap();
        assert!(
            matches!(e, StoreError::WrongKey(ref m) if m.contains(&key(1).id().to_string())),
            "{e}"
        );
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        assert_eq!(store.user("alice").unwrap().unwrap(), record(1));
    }

    /// What otpd wrote before encryption at rest: schema 1, JSON.
    fn write_clear_store(dir: &Path) {
        let db = sled::open(dir).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", b"1".to_vec())
            .unwrap();
        let users = db.open_tree("users").unwrap();
        users
            .insert(
                "alice",
                crate::store::format::encode(&record(3)).unwrap().to_vec(),
            )
            .unwrap();
        users
            .insert(
                "bob",
                crate::store::format::encode(&record(4)).unwrap().to_vec(),
            )
            .unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn a_store_written_in_clear_is_refused_at_open_and_sealed_by_seal_store() {
        let dir = tempfile::tempdir().unwrap();
        write_clear_store(dir.path());
        let e = open_store(dir.path(), |_| panic!("no key is asked for"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("otpd seal-store") && e.contains("user alice"),
            "{e}"
        );
        let sealed = unlocked(|| {
            SledStore::seal_store(dir.path(), None, |stored| {
                assert_eq!(stored, None);
                Ok(key(1))
            })
        })
        .unwrap();
        assert_eq!(sealed, (2, key(1).id()));
        // Gone from the files, not only sealed beside the old values.
        let as_json = serde_json::to_vec(&record(3).first_device().secret).unwrap();
        assert!(!contains(&raw_bytes(dir.path()), &as_json));
        let store = open_store(dir.path(), |stored| {
            assert_eq!(stored, Some(key(1).id()));
            Ok(key(1))
        })
        .unwrap();
        assert_eq!(store.user("alice").unwrap().unwrap(), record(3));
        assert_eq!(store.user("bob").unwrap().unwrap(), record(4));
        drop(store);
        // Not twice: the store has a key now.
        let e = unlocked(|| SledStore::seal_store(dir.path(), None, |_| Ok(key(1))))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has had a key"), "{e}");
    }

    #[test]
    fn a_record_in_clear_in_a_sealed_store_is_refused_and_never_sealed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            create(&store, "alice", 1);
            create(&store, "bob", 1);
            store.sync().unwrap();
        }
        // Planted in clear, with and without the key entry and the tag.
        for remove in [&[][..], &["active", "schema", AUTH, STORE_ID][..]] {
            {
                let db = sled::open(dir.path()).unwrap();
                let meta = db.open_tree("meta").unwrap();
                for entry in remove {
                    meta.remove(entry).unwrap();
                }
                db.open_tree("users")
                    .unwrap()
                    .insert(
                        "alice",
                        crate::store::format::encode(&record(9)).unwrap().to_vec(),
                    )
                    .unwrap();
                db.flush().unwrap();
            }
            let e = open_store(dir.path(), |_| Ok(key(1)))
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains("user alice in clear") && e.contains("sealed with a key"),
                "{e}"
            );
            assert!(!e.contains("seal-store"), "{e}");
            let e = unlocked(|| SledStore::seal_store(dir.path(), None, |_| Ok(key(1))))
                .unwrap_err()
                .to_string();
            assert!(e.contains("has had a key"), "{e}");
        }
    }

    /// Opens the store in `dir` raw, changes its `meta` tree with `change`,
    /// and returns the open's error.
    fn open_after(dir: &Path, change: impl FnOnce(&sled::Tree)) -> String {
        {
            let db = sled::open(dir).unwrap();
            change(&db.open_tree("meta").unwrap());
            db.flush().unwrap();
        }
        open_store(dir, |_| Ok(key(1)))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn metadata_changed_without_the_key_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("store");
        {
            let store = open_store(&dir, |_| Ok(key(1))).unwrap();
            create(&store, "alice", 1);
            create(&store, "bob", 1);
            store
                .commit(
                    "bob",
                    Some(1),
                    RecordChange::Delete,
                    SourcesChange::ClearAll,
                )
                .unwrap();
        }
        let pristine = state.path().join("pristine");
        copy_dir(&dir, &pristine);
        type Change = Box<dyn FnOnce(&sled::Tree)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "deleted_change raised",
                Box::new(|m| {
                    m.insert(DELETED_CHANGE, encode(&99u64).unwrap()).unwrap();
                }),
            ),
            (
                "deleted_change lowered",
                Box::new(|m| {
                    m.insert(DELETED_CHANGE, encode(&1u64).unwrap()).unwrap();
                }),
            ),
            (
                "deleted_change removed",
                Box::new(|m| {
                    m.remove(DELETED_CHANGE).unwrap();
                }),
            ),
            (
                "another store ID",
                Box::new(|m| {
                    m.insert(STORE_ID, encode(&"0".repeat(32)).unwrap())
                        .unwrap();
                }),
            ),
            (
                "the tag removed",
                Box::new(|m| {
                    m.remove(AUTH).unwrap();
                }),
            ),
            (
                "the tag flipped",
                Box::new(|m| {
                    let mut tag: String = decode("t", &m.get(AUTH).unwrap().unwrap()).unwrap();
                    tag.replace_range(0..1, if tag.starts_with('0') { "1" } else { "0" });
                    m.insert(AUTH, encode(&tag).unwrap()).unwrap();
                }),
            ),
            (
                "schema 2 without a tag (an older form put back)",
                Box::new(|m| {
                    m.insert("schema", encode(&2u64).unwrap()).unwrap();
                    m.remove(AUTH).unwrap();
                    m.remove(STORE_ID).unwrap();
                    m.insert(DELETED_CHANGE, encode(&99u64).unwrap()).unwrap();
                }),
            ),
            (
                "the key entry removed",
                Box::new(|m| {
                    m.remove("active").unwrap();
                }),
            ),
        ];
        for (what, change) in cases {
            std::fs::remove_dir_all(&dir).unwrap();
            copy_dir(&pristine, &dir);
            let e = open_after(&dir, change);
            assert!(
                e.contains("metadata") && e.contains(&*dir.to_string_lossy()),
                "{what}: {e:?}"
            );
        }
        // The pristine copy itself opens.
        std::fs::remove_dir_all(&dir).unwrap();
        copy_dir(&pristine, &dir);
        assert!(open_store(&dir, |_| Ok(key(1))).is_ok());
    }

    #[test]
    fn a_schema_2_store_is_upgraded_once_and_its_watermark_is_checked() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("store");
        {
            let store = open_store(&dir, |_| Ok(key(1))).unwrap();
            create(&store, "alice", 1);
        }
        // As otpd of schema 2 left it: no tag, no store ID, a watermark of
        // digits alone.
        {
            let db = sled::open(&dir).unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert("schema", b"2".to_vec()).unwrap();
            meta.remove(AUTH).unwrap();
            meta.remove(STORE_ID).unwrap();
            db.flush().unwrap();
        }
        let watermark = state.path().join("store.watermark");
        let number = std::fs::read_to_string(&watermark).unwrap()[..20].to_owned();
        std::fs::write(&watermark, format!("{number}\n")).unwrap();
        let store = open_store(&dir, |_| Ok(key(1))).unwrap();
        assert_eq!(store.user("alice").unwrap().unwrap(), record(1));
        drop(store);
        let text = std::fs::read_to_string(&watermark).unwrap();
        assert_eq!(text.len(), WATERMARK_LEN, "{text:?}");
        assert!(open_store(&dir, |_| Ok(key(1))).is_ok());
        // A watermark of the right number with another tag is refused.
        let forged = format!("{} {}\n", &text[..20], "ab".repeat(32));
        std::fs::write(&watermark, forged).unwrap();
        let e = open_store(&dir, |_| Ok(key(1))).err().unwrap().to_string();
        assert!(
            e.contains("authentication check") && e.contains("store.watermark"),
            "{e}"
        );
    }

    #[test]
    fn the_anchor_refuses_an_older_copy_a_wiped_store_and_another_store() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("store");
        let anchor_path = state.path().join("anchor").join("store.anchor");
        let open = |dir: &Path| {
            unlocked(|| SledStore::open_anchored(dir, Some(&anchor_path), |_| Ok(key(1))))
        };
        let older = state.path().join("older");
        let older_watermark = state.path().join("older.watermark");
        {
            let store = open(&dir).unwrap();
            create(&store, "alice", 1);
            create(&store, "bob", 1);
            store.sync().unwrap();
            drop(store);
            copy_dir(&dir, &older);
            std::fs::copy(state.path().join("store.watermark"), &older_watermark).unwrap();
            let store = open(&dir).unwrap();
            store
                .commit(
                    "bob",
                    Some(1),
                    RecordChange::Delete,
                    SourcesChange::ClearAll,
                )
                .unwrap();
        }
        assert!(open(&dir).is_ok());
        // The older copy with its own watermark: only the anchor knows.
        let pristine = state.path().join("pristine");
        copy_dir(&dir, &pristine);
        std::fs::remove_dir_all(&dir).unwrap();
        copy_dir(&older, &dir);
        std::fs::copy(&older_watermark, state.path().join("store.watermark")).unwrap();
        let e = open(&dir).err().unwrap().to_string();
        assert!(
            e.contains("went backwards") && e.contains(&*anchor_path.to_string_lossy()),
            "{e}"
        );
        // Wiped: no store, no watermark.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(state.path().join("store.watermark")).unwrap();
        let e = open(&dir).err().unwrap().to_string();
        assert!(e.contains("new or empty"), "{e}");
        // Another store (its own ID).
        std::fs::remove_dir_all(&dir).unwrap();
        let other = state.path().join("other");
        drop(open_store(&other, |_| Ok(key(1))).unwrap());
        copy_dir(&other, &dir);
        let e = open(&dir).err().unwrap().to_string();
        assert!(e.contains("replaced by another"), "{e}");
        // The real one opens; deleting the anchor accepts the older copy.
        std::fs::remove_dir_all(&dir).unwrap();
        copy_dir(&pristine, &dir);
        assert!(open(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
        copy_dir(&older, &dir);
        std::fs::copy(&older_watermark, state.path().join("store.watermark")).unwrap();
        std::fs::remove_file(&anchor_path).unwrap();
        let store = open(&dir).unwrap();
        assert!(store.user("bob").unwrap().is_some());
    }

    #[test]
    fn rekey_switches_every_record_and_can_be_repeated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            for (i, user) in ["a", "b", "c"].iter().enumerate() {
                store
                    .commit(
                        user,
                        None,
                        RecordChange::Put(&record(i as u64 + 1)),
                        SourcesChange::Keep,
                    )
                    .unwrap();
            }
        }
        // A wrong "old" key changes nothing.
        let e = unlocked(|| SledStore::rekey(dir.path(), Some(&key(9)), &key(2))).unwrap_err();
        assert!(matches!(e, StoreError::WrongKey(_)), "{e}");
        let report = unlocked(|| SledStore::rekey(dir.path(), Some(&key(1)), &key(2))).unwrap();
        assert_eq!(
            report,
            RekeyReport {
                records: 3,
                already_done: false
            }
        );
        let again = unlocked(|| SledStore::rekey(dir.path(), Some(&key(1)), &key(2))).unwrap();
        assert_eq!(
            again,
            RekeyReport {
                records: 3,
                already_done: true
            }
        );
        assert!(open_store(dir.path(), |_| Ok(key(1))).is_err());
        let store = open_store(dir.path(), |stored| {
            assert_eq!(stored, Some(key(2).id()));
            Ok(key(2))
        })
        .unwrap();
        assert_eq!(store.user("b").unwrap().unwrap(), record(2));
        assert_eq!(store.users().unwrap().len(), 3);
        let trees: Vec<_> = store
            .inner
            .read()
            .unwrap()
            .as_ref()
            .unwrap()
            .db
            .tree_names();
        assert!(
            !trees.iter().any(|t| t.as_ref() == b"users"),
            "the old tree is dropped"
        );
    }

    #[test]
    fn a_tampered_record_is_refused_at_open_naming_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            create(&store, "alice", 1);
            // Bob's slot gets a copy of alice's sealed record.
            let inner = store.inner.read().unwrap();
            let users = &inner.as_ref().unwrap().users;
            let sealed = users.get("alice").unwrap().unwrap();
            users.insert("bob", sealed).unwrap();
            drop(inner);
            store.sync().unwrap();
        }
        let e = open_store(dir.path(), |_| Ok(key(1))).err().unwrap();
        let message = e.to_string();
        assert!(
            message.contains("user bob") && message.contains(&*dir.path().to_string_lossy()),
            "{message}"
        );
    }

    #[test]
    fn the_start_up_check_reads_every_batch_and_names_the_first_damaged_record() {
        // More records than one check batch holds, over several threads.
        let n = 3 * CHECK_BATCH + 7;
        let name = |i: usize| format!("u{i:05}");
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            for i in 0..n {
                create(&store, &name(i), 1);
            }
        }
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        // Every record was read: the next change follows the highest.
        assert_eq!(store.next_change.load(Ordering::SeqCst), n as u64 + 1);
        {
            let inner = store.inner.read().unwrap();
            let users = &inner.as_ref().unwrap().users;
            // Two records swapped in, in different batches.
            let later = name(3 * CHECK_BATCH + 1);
            let first = name(CHECK_BATCH + 5);
            users
                .insert(later.as_str(), users.get(name(0)).unwrap().unwrap())
                .unwrap();
            users
                .insert(first.as_str(), users.get(name(1)).unwrap().unwrap())
                .unwrap();
        }
        store.sync().unwrap();
        drop(store);
        let message = open_store(dir.path(), |_| Ok(key(1)))
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains(&format!("user {}:", name(CHECK_BATCH + 5))),
            "{message}"
        );
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy_dir(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }

    #[test]
    fn a_store_that_lost_changes_is_refused_and_a_removal_is_no_false_alarm() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("store");
        let older = state.path().join("older");
        {
            let store = open_store(&dir, |_| Ok(key(1))).unwrap();
            create(&store, "alice", 1);
            create(&store, "bob", 1);
            store.sync().unwrap();
            drop(store);
            copy_dir(&dir, &older);
            let store = open_store(&dir, |_| Ok(key(1))).unwrap();
            // The last change is a removal: no record carries its number.
            store
                .commit(
                    "alice",
                    Some(1),
                    RecordChange::Put(&record(2)),
                    SourcesChange::Keep,
                )
                .unwrap();
            store
                .commit(
                    "bob",
                    Some(1),
                    RecordChange::Delete,
                    SourcesChange::ClearAll,
                )
                .unwrap();
        }
        // Reopening the real store is fine, again and again.
        for _ in 0..2 {
            let store = open_store(&dir, |_| Ok(key(1))).unwrap();
            assert_eq!(store.user("alice").unwrap().unwrap().version, 2);
            assert!(store.user("bob").unwrap().is_none());
        }
        // The older copy put back (or a store that dropped its tail) is not.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::rename(&older, &dir).unwrap();
        let e = open_store(&dir, |_| Ok(key(1))).err().unwrap().to_string();
        assert!(
            e.contains("lost changes") && e.contains("store.watermark"),
            "{e}"
        );
        // So is no store at all beside a watermark.
        std::fs::remove_dir_all(&dir).unwrap();
        let e = open_store(&dir, |_| Ok(key(1))).err().unwrap().to_string();
        assert!(e.contains("lost changes"), "{e}");
        // The operator's way out: delete the watermark to accept the store.
        std::fs::remove_file(state.path().join("store.watermark")).unwrap();
        assert!(open_store(&dir, |_| Ok(key(1))).is_ok());
    }

    #[test]
    fn concurrent_commits_share_syncs_and_are_all_durable() {
        const THREADS: usize = 16;
        const COMMITS: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let syncs = {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let store = &store;
                    s.spawn(move || {
                        for i in 0..COMMITS {
                            store
                                .commit(
                                    &format!("user{t}-{i}"),
                                    None,
                                    RecordChange::Put(&record(i as u64 + 1)),
                                    SourcesChange::Keep,
                                )
                                .unwrap();
                        }
                    });
                }
            });
            store.syncs()
        };
        let commits = (THREADS * COMMITS) as u64;
        println!("sled store: {commits} concurrent commits, {syncs} shared syncs");
        assert!(
            syncs < commits,
            "{syncs} syncs for {commits} commits: no commit shared a sync"
        );
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        assert_eq!(store.users().unwrap().len(), THREADS * COMMITS);
        for t in 0..THREADS {
            for i in 0..COMMITS {
                let got = store.user(&format!("user{t}-{i}")).unwrap();
                assert_eq!(got, Some(record(i as u64 + 1)), "user{t}-{i}");
            }
        }
    }

    #[test]
    fn a_write_dropped_by_a_reopen_is_not_reported_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        // A write applied in memory and ticketed, as in `commit`...
        let (generation, ticket) = store
            .with(|i| {
                i.sources
                    .insert(b"\0decoy", b"x".to_vec())
                    .map_err(backend)?;
                Ok(store.applied(i))
            })
            .unwrap();
        // ...then another request's write error: the next use reads the
        // store again from disk, dropping what was not flushed.
        store.broken.store(true, Ordering::SeqCst);
        unlocked(|| store.with(|_| Ok(()))).unwrap();
        assert!(!store.broken.load(Ordering::SeqCst), "read again");
        // The sync of the new handle succeeds, but does not cover the write.
        let e = store.make_durable(generation, ticket).unwrap_err();
        assert!(
            matches!(e, StoreError::Backend(ref m) if m.contains("dropped")),
            "{e}"
        );
        assert!(
            !store.broken.load(Ordering::SeqCst),
            "the new handle is not marked for another reopen"
        );
        // The store serves again, and its commits are durable.
        create(&store, "alice", 1);
        store.decoy_write().unwrap();
        drop(store);
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        assert_eq!(store.user("alice").unwrap(), Some(record(1)));
    }

    #[test]
    fn removals_that_end_out_of_number_order_keep_the_highest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            for user in ["x", "y"] {
                create(&store, user, 1);
            }
            // Concurrent removals: y took number 7 before x took 8, and x's
            // transaction ran first.
            store.next_change.store(8, Ordering::SeqCst);
            store
                .commit("x", Some(1), RecordChange::Delete, SourcesChange::ClearAll)
                .unwrap();
            store.next_change.store(7, Ordering::SeqCst);
            store
                .commit("y", Some(1), RecordChange::Delete, SourcesChange::ClearAll)
                .unwrap();
            store.sync().unwrap();
        }
        // The watermark says 8; the store must still hold number 8.
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        assert!(store.users().unwrap().is_empty());
    }

    #[test]
    fn sled_store_passes_the_reopening_contract() {
        let mut dirs = Vec::new();
        crate::store::contract::check_all_reopening(&mut || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_owned();
            dirs.push(dir);
            Box::new(move || Box::new(open_store(&path, |_| Ok(key(7))).unwrap()) as Box<dyn Store>)
        });
    }

    #[test]
    fn a_store_written_before_the_token_index_gets_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let with_link = |version: u64, hash: &str| {
            let mut r = record(version);
            r.fallback.link = Some(crate::core::record::Link {
                token_hash: hash.into(),
                expires: 9,
                ..Default::default()
            });
            r
        };
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        {
            let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
            for (user, hash) in [("alice", &a), ("bob", &b)] {
                store
                    .commit(
                        user,
                        None,
                        RecordChange::Put(&with_link(1, hash)),
                        SourcesChange::Keep,
                    )
                    .unwrap();
            }
            // As an otpd before the index left it: no tree; and an entry
            // that no record holds, and one naming the wrong user.
            let inner = store.inner.read().unwrap();
            let i = inner.as_ref().unwrap();
            i.db.drop_tree(TOKENS_TREE).unwrap();
            let tokens = i.db.open_tree(TOKENS_TREE).unwrap();
            tokens.insert("c".repeat(64), "alice").unwrap();
            tokens.insert(b.as_bytes(), "alice").unwrap();
            drop(inner);
            store.sync().unwrap();
        }
        let store = open_store(dir.path(), |_| Ok(key(1))).unwrap();
        assert_eq!(
            store.user_by_token_hash(&a).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            store.user_by_token_hash(&b).unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(store.user_by_token_hash(&"c".repeat(64)).unwrap(), None);
        // A look-up reads the index only: a record that does not open (a
        // scan of every record would fail on it) does not disturb it.
        store
            .with(|i| i.users.insert("zed", b"junk".to_vec()).map_err(backend))
            .unwrap();
        assert!(store.users().is_err());
        assert_eq!(
            store.user_by_token_hash(&b).unwrap().as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn sled_store_passes_the_store_contract() {
        // Each case gets a fresh store in its own directory; the directories
        // live until the end of the test.
        let mut dirs = Vec::new();
        crate::store::contract::check_all(&mut || {
            let dir = tempfile::tempdir().unwrap();
            let store = open_store(dir.path(), |_| Ok(key(7))).unwrap();
            dirs.push(dir);
            Box::new(store)
        });
    }
}
