//! The default store: sled under `state_dir`, with a real `fdatasync`.

use super::{RecordChange, SourcesChange, Store, StoreError};
use crate::core::record::{SourceCounter, UserRecord};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::fs::File;
use std::path::Path;

/// Layout version of the trees below; bumped by migrations.
const SCHEMA_VERSION: u64 = 1;

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

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            StoreError::Backend(format!("cannot open the store in {}: {e}", dir.display()))
        })?;
        let meta = db.open_tree("meta").map_err(backend)?;
        match meta.get("schema").map_err(backend)? {
            None => {
                meta.insert("schema", encode(&SCHEMA_VERSION)?)
                    .map_err(backend)?;
            }
            Some(v) => {
                let found: u64 = decode("schema version", &v)?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Corrupt(format!(
                        "the store in {} has schema version {found}; this otpd reads version {SCHEMA_VERSION}",
                        dir.display()
                    )));
                }
            }
        }
        let users = db.open_tree("users").map_err(backend)?;
        let sources = db.open_tree("sources").map_err(backend)?;
        let log_file = File::open(dir.join("db")).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open {} for fdatasync: {e}",
                dir.join("db").display()
            ))
        })?;
        let store = Self {
            db,
            users,
            sources,
            log_file,
        };
        store.sync()?;
        // The directory entries of a new store must be durable too.
        for d in [dir, dir.parent().unwrap_or(dir)] {
            File::open(d).and_then(|f| f.sync_all()).map_err(backend)?;
        }
        Ok(store)
    }
}

impl Store for SledStore {
    fn user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.users
            .get(user.as_bytes())
            .map_err(backend)?
            .map(|v| decode("user record", &v))
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
                let name = String::from_utf8(k.to_vec())
                    .map_err(|_| StoreError::Corrupt("a user name is not UTF-8".into()))?;
                Ok((name, decode("user record", &v)?))
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
            RecordChange::Put(r) => Some(encode(r)?),
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
                Some(v) => Some(
                    decode::<UserRecord>("user record", &v)
                        .map_err(ConflictableTransactionError::Abort)?
                        .version,
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
        self.db.flush().map_err(backend)?;
        self.log_file
            .sync_data()
            .map_err(|e| StoreError::Backend(format!("fdatasync of the store failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{EnrolState, SecretBytes};
    use otpd_proto::Algorithm;

    fn record(version: u64) -> UserRecord {
        UserRecord {
            version,
            state: EnrolState::Active,
            secret: SecretBytes::new(vec![7; 20]),
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
        let store = SledStore::open(dir.path()).unwrap();
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
            let store = SledStore::open(dir.path()).unwrap();
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
        let store = SledStore::open(dir.path()).unwrap();
        let names: Vec<_> = store.users().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["al", "alice"]);
        store
            .commit("al", Some(2), RecordChange::Delete, SourcesChange::ClearAll)
            .unwrap();
        assert!(store.user("al").unwrap().is_none());
    }
}
