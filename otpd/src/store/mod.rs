//! Where otpd keeps its state, behind a small trait: sled for one host
//! (the default), PostgreSQL for a fleet of hosts sharing one truth.

pub mod anchor;
#[cfg(any(test, feature = "store-contract"))]
pub mod contract;
#[cfg(test)]
mod fixture_records;
pub mod format;
mod group_sync;
#[cfg(feature = "postgres")]
mod pg_store;
mod sled_store;

#[cfg(feature = "postgres")]
pub use pg_store::{PgSettings, PgStore};
pub use sled_store::{RekeyReport, SledStore};

use crate::core::decision::SourceChange;
use crate::core::record::{SourceCounter, UserRecord};

/// The link-token hashes a record holds (its enrolment link, its phone
/// session, its phone-pairing link and its phones' app tokens), sorted, each once: what the stores' token index maps to the
/// record's user (see [`Store::user_by_token_hash`]).
pub(crate) fn token_hashes(record: &UserRecord) -> Vec<String> {
    let f = &record.fallback;
    let a = &record.approvals;
    let mut hashes: Vec<String> = [
        f.link.as_ref(),
        f.phone_session.as_ref(),
        a.pairing.as_ref().map(|p| &p.link),
    ]
    .into_iter()
    .flatten()
    .map(|l| l.token_hash.clone())
    .chain(a.phones.iter().map(|p| p.app_token_hash.clone()))
    .collect();
    hashes.sort();
    hashes.dedup();
    hashes
}

/// A store failure. Every caller fails closed on it.
///
/// The variant says what happened, decided where the error is made (from
/// an [`std::io::ErrorKind`], a sled or PostgreSQL error kind), so that no
/// caller has to read the text; the text is for the log. The failures that
/// were all `Backend` before keep its `store error: …` text, which tests
/// and operators look for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The record changed since it was read; re-read and decide again.
    #[error("the record changed concurrently")]
    Conflict,
    /// A stored value could not be decoded.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The key does not open the store (a message for the operator).
    #[error("{0}")]
    WrongKey(String),
    /// The database cannot be reached: no connection could be made, or it
    /// dropped the one in use.
    #[error("store error: {0}")]
    Unreachable(String),
    /// The store did not answer within its timeout.
    #[error("store error: {0}")]
    TimedOut(String),
    /// The file system or the database has no space left for the write.
    #[error("store error: {0}")]
    DiskFull(String),
    /// Any other failure of the engine or the disk.
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// A failed file operation: `what` says which ("cannot write
    /// /var/lib/otpd/x"), and the I/O error's text follows it.
    pub(crate) fn io(what: impl std::fmt::Display, e: &std::io::Error) -> StoreError {
        let text = format!("{what}: {e}");
        if is_disk_full(e) {
            StoreError::DiskFull(text)
        } else {
            StoreError::Backend(text)
        }
    }

    /// The one sentence the daemon sends a caller for this failure (the
    /// details go to its log, never to the caller). A full disk and an
    /// unreachable or slow database are named, as an operator can fix them
    /// at once; everything else is "see its log".
    pub fn for_caller(&self) -> &'static str {
        match self {
            StoreError::DiskFull(_) => {
                "otpd could not write its store: no space left on device (see its log)"
            }
            StoreError::Unreachable(_) => "otpd cannot reach its database (see its log)",
            StoreError::TimedOut(_) => "otpd's database did not answer in time (see its log)",
            StoreError::Conflict
            | StoreError::Corrupt(_)
            | StoreError::WrongKey(_)
            | StoreError::Backend(_) => "otpd could not complete the request (see its log)",
        }
    }
}

/// Whether an I/O error says the file system is full: `ENOSPC`, which the
/// standard library reports as [`std::io::ErrorKind::StorageFull`]. The
/// kind, not the errno: sled hands out copies of a failed write's error
/// that keep only the kind.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
}

/// What to do with a user's record in a commit.
#[derive(Debug, Clone, Copy)]
pub enum RecordChange<'a> {
    /// Store this record.
    Put(&'a UserRecord),
    /// Delete the record.
    Delete,
}

/// What to do with the user's per-source counters in a commit.
#[derive(Debug, Clone, Copy)]
pub enum SourcesChange<'a> {
    /// Leave all alone.
    Keep,
    /// Store one source's counter.
    Set(&'a str, SourceCounter),
    /// Delete one source's counter.
    Reset(&'a str),
    /// Delete every source counter of the user.
    ClearAll,
}

impl<'a> SourcesChange<'a> {
    /// The store writes for a decision's source change, given the counter
    /// the decision was taken on. Resetting a counter that does not exist
    /// writes nothing, and saying so lets the store commit the record alone
    /// (one swap instead of a transaction: docs/performance.md). A counter
    /// created since it was read came with a version bump, so the commit
    /// then conflicts and the decision is taken again.
    pub fn from_decision(
        source: &'a str,
        change: SourceChange,
        current: Option<&SourceCounter>,
    ) -> Self {
        match change {
            SourceChange::Keep => SourcesChange::Keep,
            SourceChange::Reset if current.is_none() => SourcesChange::Keep,
            SourceChange::Reset => SourcesChange::Reset(source),
            SourceChange::Set(counter) => SourcesChange::Set(source, counter),
        }
    }
}

/// Who is told how long a store's durable steps took.
pub trait StoreObserver: Send + Sync {
    /// One `commit`, from its call to its return (success or failure).
    fn commit(&self, took: std::time::Duration);
    /// One flush and fdatasync of the sled store's log.
    fn fdatasync(&self, took: std::time::Duration);
}

/// A networked store's state, as far as it knows without asking the
/// server: for the metrics, read at each scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// The database answered its last use in time (no outage under way,
    /// and the last operation that ended did not time out waiting for it).
    pub reachable: bool,
    /// Connections the pool holds now.
    pub pool_size: usize,
    /// Of them, idle.
    pub pool_available: usize,
    /// The pool's limit.
    pub pool_max: usize,
    /// Requests waiting for a connection.
    pub pool_waiting: usize,
}

/// The operations the daemon needs.
///
/// `commit` is the only write. It is a compare-and-swap on the record's
/// `version` (`expected = None`: the user must not exist) that writes the
/// record and the source counters together, and it returns only once the
/// write is durable on disk. This is what makes "a code is good once" hold
/// for concurrent connections and across crashes; a networked store must
/// give the same guarantee (a conditional `UPDATE … WHERE version = $v`).
pub trait Store: Send + Sync + 'static {
    /// One user's record.
    fn user(&self, user: &str) -> Result<Option<UserRecord>, StoreError>;
    /// One (user, source) failure counter.
    fn source(&self, user: &str, source: &str) -> Result<Option<SourceCounter>, StoreError>;
    /// What a code check reads: the user's record and the (user, source)
    /// counter. A networked store answers both with one round trip.
    fn read_for_check(
        &self,
        user: &str,
        source: &str,
    ) -> Result<(Option<UserRecord>, Option<SourceCounter>), StoreError> {
        Ok((self.user(user)?, self.source(user, source)?))
    }
    /// Every user, sorted by name.
    fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError>;
    /// Atomic, durable compare-and-swap; see the trait documentation.
    fn commit(
        &self,
        user: &str,
        expected_version: Option<u64>,
        record: RecordChange<'_>,
        sources: SourcesChange<'_>,
    ) -> Result<(), StoreError>;
    /// Where the state is, for `otpd status` ("sled in DIR", "PostgreSQL
    /// user@host:port/db"; never a password).
    fn describe(&self) -> String;
    /// A 32-byte secret derived from the store's key for `label` (HKDF's
    /// expand step, as the metadata's tags): the same on every host that
    /// has the key file, never stored. `None` for a store without a key.
    fn derived_secret(&self, label: &str) -> Option<[u8; 32]> {
        let _ = label;
        None
    }
    /// Makes everything written so far durable (used at shutdown).
    fn sync(&self) -> Result<(), StoreError>;
    /// Where this host's audit trail stands (`core::audit::Head`, in its
    /// text form), kept so that a restart continues the chain; `None`
    /// before the first line. Keyed by host: on a fleet store each host
    /// keeps its own trail.
    fn audit_head(&self, host: &str) -> Result<Option<String>, StoreError>;
    /// Keeps this host's audit head (written in the background after each
    /// audit line, and at shutdown before [`Store::sync`]).
    fn set_audit_head(&self, host: &str, head: &str) -> Result<(), StoreError>;
    /// Reports the time of each commit (and of each fdatasync, for a store
    /// that makes them) to `observer` from now on (the daemon's metrics).
    /// Set once; a later call is ignored. A store that times nothing
    /// ignores it.
    fn observe(&self, observer: std::sync::Arc<dyn StoreObserver>) {
        let _ = observer;
    }
    /// A networked store's reachability and connection pool; `None` for a
    /// store without (sled).
    fn health(&self) -> Option<StoreHealth> {
        None
    }
    /// A durable write that costs what a `commit` costs but changes nothing
    /// the daemon reads: a login for an unknown user does it, so that from
    /// the socket it takes as long as a wrong code for an enrolled user.
    fn decoy_write(&self) -> Result<(), StoreError>;
    /// The user whose record holds a link, phone session, pairing link or
    /// phone app token with this token hash ([`crate::core::tokens::token_hash`]), expired or not; the
    /// caller reads that record and checks the link itself. A store keeps
    /// an index for this: the pages look up every token a stranger sends,
    /// and that must not cost a read of every record (docs/security.md).
    ///
    /// Both stores keep that index beside the records and change it in the
    /// same atomic commit as the record (a token hash → user name entry
    /// for each link of a record). The index is a hint: the record, whose
    /// seal is checked, decides. The default scans every record: correct,
    /// and slow with many users.
    fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self.users()?.into_iter().find_map(|(name, r)| {
            token_hashes(&r)
                .iter()
                .any(|h| constant_time_eq::constant_time_eq(h.as_bytes(), token_hash.as_bytes()))
                .then_some(name)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn each_failure_has_its_sentence_for_the_caller() {
        let m = || "detail".to_string();
        let cases = [
            (
                StoreError::DiskFull(m()),
                "otpd could not write its store: no space left on device (see its log)",
            ),
            (
                StoreError::Unreachable(m()),
                "otpd cannot reach its database (see its log)",
            ),
            (
                StoreError::TimedOut(m()),
                "otpd's database did not answer in time (see its log)",
            ),
            (
                StoreError::Conflict,
                "otpd could not complete the request (see its log)",
            ),
            (
                StoreError::Corrupt(m()),
                "otpd could not complete the request (see its log)",
            ),
            (
                StoreError::WrongKey(m()),
                "otpd could not complete the request (see its log)",
            ),
            (
                StoreError::Backend(m()),
                "otpd could not complete the request (see its log)",
            ),
        ];
        for (e, sentence) in cases {
            assert_eq!(e.for_caller(), sentence, "{e:?}");
            // The detail is for the log only.
            assert!(!e.for_caller().contains("detail"));
        }
    }

    #[test]
    fn a_full_file_system_is_disk_full_and_keeps_its_log_text() {
        let enospc = io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32);
        let e = StoreError::io("cannot write /x/y", &enospc);
        assert!(matches!(e, StoreError::DiskFull(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "store error: cannot write /x/y: No space left on device (os error 28)"
        );
        // A copy that kept only the kind (as sled makes them) is one too.
        let copied = io::Error::new(enospc.kind(), format!("{enospc:?}"));
        assert!(matches!(
            StoreError::io("fdatasync", &copied),
            StoreError::DiskFull(_)
        ));
    }

    #[test]
    fn other_file_errors_stay_backend_errors() {
        for errno in [
            nix::errno::Errno::EACCES,
            nix::errno::Errno::EIO,
            nix::errno::Errno::EROFS,
            nix::errno::Errno::ETIMEDOUT,
        ] {
            let e = StoreError::io(
                "cannot write /x",
                &io::Error::from_raw_os_error(errno as i32),
            );
            assert!(matches!(e, StoreError::Backend(_)), "{errno}: {e:?}");
            assert!(e.to_string().starts_with("store error: cannot write /x: "));
        }
        let e = StoreError::io(
            "cannot read /x",
            &io::Error::other("No space left on device"),
        );
        assert!(
            matches!(e, StoreError::Backend(_)),
            "classified by its text: {e:?}"
        );
    }
}
