//! The default store: sled under `state_dir`, with a real `fdatasync`, and
//! every user record sealed with the daemon's key ([`crate::core::seal`]).

use super::{RecordChange, SourcesChange, Store, StoreError};
use crate::core::record::{SourceCounter, UserRecord};
use crate::core::seal::{self, KeyId, RecordKey, NONCE_LEN};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Layout version of the trees below. 1: records in clear (before
/// encryption at rest; migrated on open); 2: sealed records.
const SCHEMA_VERSION: u64 = 2;

/// The `meta` entry that says which tree holds the users and which key
/// sealed them. `otpd rekey` fills a new tree and then switches this one
/// entry, so a rekey killed half-way leaves the store whole under one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Active {
    tree: String,
    key_id: String,
}

/// sled 0.34 under `<state_dir>/store`.
///
/// sled's `flush` ends in `sync_file_range`, which neither flushes the
/// drive's write cache nor the file's metadata (sled issue #1452). After
/// every flush this store therefore calls `fdatasync` on sled's log file
/// itself (`<dir>/db`) through a handle of its own: fdatasync acts on the
/// inode, so it covers what sled wrote through its descriptor.
pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    sources: sled::Tree,
    log_file: File,
    key: RecordKey,
    dir: PathBuf,
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

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
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
    serde_json::to_vec(value).map_err(backend)
}

fn nonce() -> Result<[u8; NONCE_LEN], StoreError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut n)
        .map_err(|e| StoreError::Backend(format!("the OS random number generator failed: {e}")))?;
    Ok(n)
}

fn user_name(key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key.to_vec())
        .map_err(|_| StoreError::Corrupt("a user name is not UTF-8".into()))
}

/// The sled database with its meta tree read, before any key is involved.
struct Opened {
    db: sled::Db,
    meta: sled::Tree,
    /// `None`: a new store, or one written before encryption at rest.
    active: Option<Active>,
    log_file: File,
}

fn open_db(dir: &Path) -> Result<Opened, StoreError> {
    let db = sled::Config::new().path(dir).open().map_err(|e| {
        StoreError::Backend(format!("cannot open the store in {}: {e}", dir.display()))
    })?;
    let meta = db.open_tree("meta").map_err(backend)?;
    let corrupt = |e: StoreError| StoreError::Corrupt(format!("{}: {e}", dir.display()));
    let schema: Option<u64> = match meta.get("schema").map_err(backend)? {
        None => None,
        Some(v) => Some(decode("schema version", &v).map_err(corrupt)?),
    };
    if let Some(found) = schema {
        if found > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "the store in {} has schema version {found}; this otpd reads versions up to {SCHEMA_VERSION} (was it written by a newer otpd?)",
                dir.display()
            )));
        }
    }
    let active: Option<Active> = match meta.get("active").map_err(backend)? {
        None => None,
        Some(v) => Some(decode("the store's key entry", &v).map_err(corrupt)?),
    };
    if schema == Some(SCHEMA_VERSION) && active.is_none() {
        return Err(StoreError::Corrupt(format!(
            "{}: the store's key entry is missing",
            dir.display()
        )));
    }
    let log_file = File::open(dir.join("db")).map_err(|e| {
        StoreError::Backend(format!(
            "cannot open {} for fdatasync: {e}",
            dir.join("db").display()
        ))
    })?;
    Ok(Opened {
        db,
        meta,
        active,
        log_file,
    })
}

fn active_key_id(active: &Option<Active>, dir: &Path) -> Result<Option<KeyId>, StoreError> {
    active
        .as_ref()
        .map(|a| {
            a.key_id.parse::<KeyId>().map_err(|()| {
                StoreError::Corrupt(format!("{}: the store's key ID is damaged", dir.display()))
            })
        })
        .transpose()
}

fn flush_and_sync(db: &sled::Db, log_file: &File) -> Result<(), StoreError> {
    db.flush().map_err(backend)?;
    log_file
        .sync_data()
        .map_err(|e| StoreError::Backend(format!("fdatasync of the store failed: {e}")))
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`. `key_for` is asked
    /// for the key with the ID the store was sealed with (`None` for a new
    /// store, or one written in clear by an older otpd, which is sealed
    /// now). Every record is opened once here, so a damaged record or a
    /// wrong key stops the daemon at start, with the file named.
    pub fn open(
        dir: &Path,
        key_for: impl FnOnce(Option<KeyId>) -> Result<RecordKey, StoreError>,
    ) -> Result<Self, StoreError> {
        let Opened {
            db,
            meta,
            active,
            log_file,
        } = open_db(dir)?;
        let stored_id = active_key_id(&active, dir)?;
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
        let active = match active {
            Some(a) => a,
            None => {
                // New, or written in clear: seal what is there (in one
                // atomic batch), then record the key. Killed in between, the
                // next start finds sealed records and leaves them be.
                let users = db.open_tree("users").map_err(backend)?;
                let mut batch = sled::Batch::default();
                let mut sealed = 0usize;
                for item in users.iter() {
                    let (k, v) = item.map_err(backend)?;
                    if seal::is_sealed(&v) {
                        continue;
                    }
                    let name = user_name(&k)?;
                    let record: UserRecord = decode("user record", &v).map_err(|e| {
                        StoreError::Corrupt(format!("{}: user {name}: {e}", dir.display()))
                    })?;
                    let value = seal::seal_record(&key, &name, &record, nonce()?)
                        .map_err(|e| StoreError::Corrupt(format!("user {name}: {e}")))?;
                    batch.insert(k, value);
                    sealed += 1;
                }
                users.apply_batch(batch).map_err(backend)?;
                flush_and_sync(&db, &log_file)?;
                let a = Active {
                    tree: "users".into(),
                    key_id: key.id().to_string(),
                };
                meta.insert("active", encode(&a)?).map_err(backend)?;
                meta.insert("schema", encode(&SCHEMA_VERSION)?)
                    .map_err(backend)?;
                if sealed > 0 {
                    tracing::info!(
                        records = sealed,
                        "sealed the records written in clear by an older otpd"
                    );
                }
                a
            }
        };
        // Trees left by a rekey that was killed before its switch.
        for name in db.tree_names() {
            if name.starts_with(b"users-") && name.as_ref() != active.tree.as_bytes() {
                db.drop_tree(&name).map_err(backend)?;
            }
        }
        let users = db.open_tree(active.tree.as_bytes()).map_err(backend)?;
        let sources = db.open_tree("sources").map_err(backend)?;
        let store = Self {
            db,
            users,
            sources,
            log_file,
            key,
            dir: dir.to_owned(),
        };
        store.sync()?;
        // The directory entries of a new store must be durable too.
        for d in [dir, dir.parent().unwrap_or(dir)] {
            File::open(d).and_then(|f| f.sync_all()).map_err(backend)?;
        }
        let count = store.users()?.len();
        tracing::debug!(users = count, key_id = %store.key.id(), "store opened");
        Ok(store)
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
            meta,
            active,
            log_file,
        } = open_db(dir)?;
        let Some(active) = active else {
            return Err(StoreError::WrongKey(format!(
                "the store in {} has never been opened with a key; start otpd once first",
                dir.display()
            )));
        };
        let stored_id = active_key_id(&Some(active.clone()), dir)?.unwrap_or(KeyId([0; 8]));
        let from = db.open_tree(active.tree.as_bytes()).map_err(backend)?;
        if stored_id == new.id() {
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
        let tree_name = format!("users-{}", new.id());
        let _ = db.drop_tree(tree_name.as_bytes()).map_err(backend)?;
        let to = db.open_tree(tree_name.as_bytes()).map_err(backend)?;
        let mut records = 0;
        for item in from.iter() {
            let (k, v) = item.map_err(backend)?;
            let name = user_name(&k)?;
            let record = seal::open_record(old, &name, &v)
                .map_err(|e| StoreError::Corrupt(format!("{}: user {name}: {e}", dir.display())))?;
            let value = seal::seal_record(new, &name, &record, nonce()?)
                .map_err(|e| StoreError::Corrupt(format!("user {name}: {e}")))?;
            to.insert(k, value).map_err(backend)?;
            records += 1;
        }
        flush_and_sync(&db, &log_file)?;
        let switched = Active {
            tree: tree_name,
            key_id: new.id().to_string(),
        };
        meta.insert("active", encode(&switched)?).map_err(backend)?;
        flush_and_sync(&db, &log_file)?;
        if active.tree != switched.tree {
            db.drop_tree(active.tree.as_bytes()).map_err(backend)?;
            flush_and_sync(&db, &log_file)?;
        }
        Ok(RekeyReport {
            records,
            already_done: false,
        })
    }

    fn open_value(&self, name: &str, value: &[u8]) -> Result<UserRecord, StoreError> {
        seal::open_record(&self.key, name, value).map_err(|e| {
            StoreError::Corrupt(format!(
                "{}: the record of user {name}: {e}",
                self.dir.display()
            ))
        })
    }

    fn seal_value(&self, name: &str, record: &UserRecord) -> Result<Vec<u8>, StoreError> {
        seal::seal_record(&self.key, name, record, nonce()?)
            .map_err(|e| StoreError::Backend(format!("user {name}: {e}")))
    }
}

impl Store for SledStore {
    fn user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.users
            .get(user.as_bytes())
            .map_err(backend)?
            .map(|v| self.open_value(user, &v))
            .transpose()
    }

    fn source(&self, user: &str, source: &str) -> Result<Option<SourceCounter>, StoreError> {
        self.sources
            .get(source_key(user, source))
            .map_err(backend)?
            .map(|v| decode("source counter", &v))
            .transpose()
    }

    fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        self.users
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
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
        let new_value = match record {
            RecordChange::Put(r) => Some(self.seal_value(user, r)?),
            RecordChange::Delete => None,
        };
        let source_write = match sources {
            SourcesChange::Set(s, counter) => Some((source_key(user, s), Some(encode(&counter)?))),
            SourcesChange::Reset(s) => Some((source_key(user, s), None)),
            SourcesChange::Keep | SourcesChange::ClearAll => None,
        };
        // Keys to clear are listed before the transaction (sled transactions
        // cannot scan). A counter added meanwhile came with a version bump,
        // so the compare-and-swap below fails and the caller retries.
        let clear: Vec<sled::IVec> = if matches!(sources, SourcesChange::ClearAll) {
            self.sources
                .scan_prefix(source_prefix(user))
                .keys()
                .collect::<Result<_, _>>()
                .map_err(backend)?
        } else {
            Vec::new()
        };

        let result = (&self.users, &self.sources).transaction(|(users, srcs)| {
            let current = match users.get(user.as_bytes())? {
                None => None,
                // The version is in the sealed header: no need to open
                // the record here.
                Some(v) => Some(
                    seal::peek(&v)
                        .map_err(|e| {
                            ConflictableTransactionError::Abort(StoreError::Corrupt(format!(
                                "the record of user {user}: {e}"
                            )))
                        })?
                        .1,
                ),
            };
            if current != expected_version {
                return Err(ConflictableTransactionError::Abort(StoreError::Conflict));
            }
            match &new_value {
                Some(v) => users.insert(user.as_bytes(), v.as_slice())?,
                None => users.remove(user.as_bytes())?,
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
            Ok(()) => self.sync(),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    fn sync(&self) -> Result<(), StoreError> {
        flush_and_sync(&self.db, &self.log_file)
    }

    fn decoy_write(&self) -> Result<(), StoreError> {
        // A record-sized sealed value under a key nothing reads.
        let decoy = UserRecord::decoy();
        let value = self.seal_value("\0decoy", &decoy)?;
        self.sources.insert(b"\0decoy", value).map_err(backend)?;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{EnrolState, SecretBytes};
    use crate::core::seal::KEY_LEN;
    use otpd_proto::Algorithm;

    fn key(byte: u8) -> RecordKey {
        RecordKey::from_bytes(&[byte; KEY_LEN])
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
        UserRecord {
            version,
            state: EnrolState::Active,
            secret: SecretBytes::new(b"SECRET-1234567890abc".to_vec()),
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
            issuer: "t".into(),
            created: 1,
            last_success: None,
            last_accepted_step: Some(5),
            user_failures: 0,
            last_failure: None,
            fallback: Default::default(),
        }
    }

    #[test]
    fn commit_is_a_compare_and_swap_on_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), |_| Ok(key(1))).unwrap();
        store
            .commit(
                "alice",
                None,
                RecordChange::Put(&record(1)),
                SourcesChange::Keep,
            )
            .unwrap();
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
            let store = SledStore::open(dir.path(), |_| Ok(key(1))).unwrap();
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
        let store = SledStore::open(dir.path(), |_| Ok(key(1))).unwrap();
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
            let store = SledStore::open(dir.path(), |stored| {
                assert_eq!(stored, None, "a new store has no key yet");
                Ok(key(1))
            })
            .unwrap();
            store
                .commit(
                    "alice",
                    None,
                    RecordChange::Put(&record(1)),
                    SourcesChange::Keep,
                )
                .unwrap();
            store.sync().unwrap();
        }
        let raw = raw_bytes(dir.path());
        assert!(!contains(&raw, b"SECRET-1234567890abc"));
        let as_json = serde_json::to_vec(&record(1).secret).unwrap();
        assert!(!contains(&raw, &as_json));
        assert!(!contains(&raw, b"\"issuer\""));
        // The store asks for the key it was sealed with, and refuses another.
        let e = SledStore::open(dir.path(), |stored| {
            assert_eq!(stored, Some(key(1).id()));
            Ok(key(2))
        })
        .err()
        .unwrap();
        assert!(
            matches!(e, StoreError::WrongKey(ref m) if m.contains(&key(1).id().to_string())),
            "{e}"
        );
        let store = SledStore::open(dir.path(), |_| Ok(key(1))).unwrap();
        assert_eq!(store.user("alice").unwrap().unwrap(), record(1));
    }

    #[test]
    fn a_store_written_in_clear_is_sealed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What otpd wrote before encryption at rest: schema 1, JSON.
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema", b"1".to_vec())
                .unwrap();
            let users = db.open_tree("users").unwrap();
            users
                .insert("alice", serde_json::to_vec(&record(3)).unwrap())
                .unwrap();
            users
                .insert("bob", serde_json::to_vec(&record(4)).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        {
            let store = SledStore::open(dir.path(), |stored| {
                assert_eq!(stored, None);
                Ok(key(1))
            })
            .unwrap();
            assert_eq!(store.user("alice").unwrap().unwrap(), record(3));
            assert_eq!(store.users().unwrap().len(), 2);
        }
        assert!(!contains(&raw_bytes(dir.path()), b"SECRET-1234567890abc"));
        let store = SledStore::open(dir.path(), |stored| {
            assert_eq!(stored, Some(key(1).id()));
            Ok(key(1))
        })
        .unwrap();
        assert_eq!(store.user("bob").unwrap().unwrap(), record(4));
    }

    #[test]
    fn rekey_switches_every_record_and_can_be_repeated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), |_| Ok(key(1))).unwrap();
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
        let e = SledStore::rekey(dir.path(), Some(&key(9)), &key(2)).unwrap_err();
        assert!(matches!(e, StoreError::WrongKey(_)), "{e}");
        let report = SledStore::rekey(dir.path(), Some(&key(1)), &key(2)).unwrap();
        assert_eq!(
            report,
            RekeyReport {
                records: 3,
                already_done: false
            }
        );
        let again = SledStore::rekey(dir.path(), Some(&key(1)), &key(2)).unwrap();
        assert_eq!(
            again,
            RekeyReport {
                records: 3,
                already_done: true
            }
        );
        assert!(SledStore::open(dir.path(), |_| Ok(key(1))).is_err());
        let store = SledStore::open(dir.path(), |stored| {
            assert_eq!(stored, Some(key(2).id()));
            Ok(key(2))
        })
        .unwrap();
        assert_eq!(store.user("b").unwrap().unwrap(), record(2));
        assert_eq!(store.users().unwrap().len(), 3);
        let trees: Vec<_> = store.db.tree_names();
        assert!(
            !trees.iter().any(|t| t.as_ref() == b"users"),
            "the old tree is dropped"
        );
    }

    #[test]
    fn a_tampered_record_is_refused_at_open_naming_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), |_| Ok(key(1))).unwrap();
            store
                .commit(
                    "alice",
                    None,
                    RecordChange::Put(&record(1)),
                    SourcesChange::Keep,
                )
                .unwrap();
            // Bob's slot gets a copy of alice's sealed record.
            let sealed = store.users.get("alice").unwrap().unwrap();
            store.users.insert("bob", sealed).unwrap();
            store.sync().unwrap();
        }
        let e = SledStore::open(dir.path(), |_| Ok(key(1))).err().unwrap();
        let message = e.to_string();
        assert!(
            message.contains("user bob") && message.contains(&*dir.path().to_string_lossy()),
            "{message}"
        );
    }
}
