//! The anchor: how far this host's store had come, kept outside the store,
//! so that an older copy of the store put back is refused.
//!
//! The store's own checks (the sealed records, the authenticated metadata,
//! the watermark) cannot tell an older copy of the whole store from the
//! store itself: the copy is consistent, authentic, and carries its own
//! watermark. What can is a number kept where that copy does not reach:
//! for the sled store a file outside `state_dir` (`[store] anchor_dir`,
//! by default `/var/lib/otpd-anchor`, a state directory of its own under
//! systemd), for the fleet's database a file on each host (in the same
//! directory: out of the database's reach).
//! It holds the store's ID and the highest change (sled) or generation
//! (PostgreSQL) this host saw made durable; a store that holds less, or
//! another store, is refused at open.
//!
//! One line, rewritten in place with one `pwrite` after each durable
//! change (so it is never ahead of the store) and synced when the store
//! syncs: `otpd-anchor <store ID, 32 hex> <number, 20 digits>\n`. Deleting
//! the file accepts the store as it is at the next start (an operator's
//! step after a deliberate restore).

use super::StoreError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const MAGIC: &str = "otpd-anchor";
/// Hex digits of a store ID.
pub const STORE_ID_HEX: usize = 32;
const LINE_LEN: usize = MAGIC.len() + 1 + STORE_ID_HEX + 1 + 20 + 1;

/// What an anchor file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorState {
    /// The ID of the store it belongs to.
    pub store_id: String,
    /// The highest change (sled) or generation (PostgreSQL) seen durable.
    pub reached: u64,
}

/// A new random store ID (hex).
pub fn new_store_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; STORE_ID_HEX / 2];
    crate::rng::fill(&mut bytes)
        .map_err(|e| StoreError::Backend(format!("the OS random number generator failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the shape of a store ID.
pub fn is_store_id(id: &str) -> bool {
    id.len() == STORE_ID_HEX && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads the anchor at `path`: `None` when there is none (no file, or an
/// empty one: created, then killed before its first write). A file that is
/// there but is no anchor is refused: it cannot be told from one that was
/// tampered with.
pub fn read(path: &Path) -> Result<Option<AnchorState>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::io(
                format_args!("cannot read the anchor {}", path.display()),
                &e,
            ))
        }
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    let parsed = std::str::from_utf8(&bytes).ok().and_then(|text| {
        let mut words = text.trim_end_matches('\n').split(' ');
        let (magic, id, number) = (words.next()?, words.next()?, words.next()?);
        if magic != MAGIC || !is_store_id(id) || words.next().is_some() || number.len() != 20 {
            return None;
        }
        Some(AnchorState {
            store_id: id.to_owned(),
            reached: number.parse().ok()?,
        })
    });
    parsed.map(Some).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the anchor {} is damaged (not a line `otpd-anchor ID NUMBER`); if nothing \
             else is wrong with this host, delete it to accept the store as it is",
            path.display()
        ))
    })
}

/// Refuses a store that is not the one the anchor knows, or that holds
/// less than the anchor says was reached. `store` names the store ("the
/// store in DIR", "the PostgreSQL store …"), `holds` says what it holds
/// ("changes up to number 7"), `what_to_do` ends the message.
pub fn check(
    path: &Path,
    anchor: Option<&AnchorState>,
    store: &str,
    store_id: Option<&str>,
    reached: u64,
    what_to_do: &str,
) -> Result<(), StoreError> {
    let Some(anchor) = anchor else {
        return Ok(());
    };
    let path = path.display();
    match store_id {
        None => Err(StoreError::Corrupt(format!(
            "{store} is new or empty, but this host's anchor {path} says its store (ID {}) \
             had reached number {}: the store was wiped or replaced, and every enrolment, \
             used code and removal would be forgotten. {what_to_do}",
            anchor.store_id, anchor.reached
        ))),
        Some(id) if id != anchor.store_id => Err(StoreError::Corrupt(format!(
            "{store} has store ID {id}, but this host's anchor {path} belongs to store ID \
             {}: the store was replaced by another one. {what_to_do}",
            anchor.store_id
        ))),
        Some(_) if reached < anchor.reached => Err(StoreError::Corrupt(format!(
            "{store} went backwards: it holds number {reached}, but this host's anchor \
             {path} says number {} was reached. It is an older copy (a backup or a \
             snapshot put back, by mistake or by someone who wants used codes, HOTP \
             counters or removed users back); otpd refuses it. {what_to_do}",
            anchor.reached
        ))),
        Some(_) => Ok(()),
    }
}

/// The anchor file, open for writing.
pub struct Anchor {
    path: PathBuf,
    file: Mutex<File>,
    store_id: String,
    high: AtomicU64,
}

impl Anchor {
    /// Opens (creating it, and its directory with mode 0700, if needed) the
    /// anchor at `path` for store `store_id` and writes `reached` into it.
    pub fn open(path: &Path, store_id: &str, reached: u64) -> Result<Self, StoreError> {
        let fail = |e: std::io::Error| {
            StoreError::io(
                format_args!("cannot write the anchor {}", path.display()),
                &e,
            )
        };
        if let Some(dir) = path.parent() {
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(e)),
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nofollow_flag())
            .open(path)
            .map_err(fail)?;
        let anchor = Self {
            path: path.to_owned(),
            file: Mutex::new(file),
            store_id: store_id.to_owned(),
            high: AtomicU64::new(0),
        };
        anchor.write(reached)?;
        anchor.sync()?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
        }
        Ok(anchor)
    }

    /// Records that number `reached` is durable in the store; a lower one
    /// leaves the file as it is (the file never goes back).
    pub fn advance(&self, reached: u64) -> Result<(), StoreError> {
        if self.high.load(Ordering::SeqCst) >= reached {
            return Ok(());
        }
        self.write(reached)
    }

    fn write(&self, reached: u64) -> Result<(), StoreError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let high = self.high.fetch_max(reached, Ordering::SeqCst).max(reached);
        let line = format!("{MAGIC} {} {high:020}\n", self.store_id);
        debug_assert_eq!(line.len(), LINE_LEN);
        file.write_all_at(line.as_bytes(), 0).map_err(|e| {
            StoreError::io(
                format_args!("cannot write the anchor {}", self.path.display()),
                &e,
            )
        })
    }

    /// fdatasync of the file.
    pub fn sync(&self) -> Result<(), StoreError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.sync_data().map_err(|e| {
            StoreError::io(
                format_args!("fdatasync of the anchor {} failed", self.path.display()),
                &e,
            )
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `O_NOFOLLOW`: the anchor's directory may be writable by the daemon's
/// user only, but a symbolic link planted there must not redirect the
/// writes of a daemon (or an admin command run as root) elsewhere.
fn nofollow_flag() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_reads_back_never_goes_back_and_refuses_less() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchors").join("store.anchor");
        assert_eq!(read(&path).unwrap(), None, "no directory yet");
        let id = new_store_id().unwrap();
        assert!(is_store_id(&id));
        let anchor = Anchor::open(&path, &id, 5).unwrap();
        anchor.advance(9).unwrap();
        anchor.advance(7).unwrap();
        let state = read(&path).unwrap().unwrap();
        assert_eq!(
            state,
            AnchorState {
                store_id: id.clone(),
                reached: 9
            }
        );
        let check = |store_id: Option<&str>, reached| {
            super::check(
                &path,
                Some(&state),
                "the store",
                store_id,
                reached,
                "Fix it.",
            )
        };
        assert!(check(Some(&id), 9).is_ok());
        assert!(check(Some(&id), 10).is_ok());
        let e = check(Some(&id), 8).unwrap_err().to_string();
        assert!(e.contains("went backwards") && e.contains("Fix it."), "{e}");
        let e = check(Some(&new_store_id().unwrap()), 99)
            .unwrap_err()
            .to_string();
        assert!(e.contains("replaced"), "{e}");
        let e = check(None, 0).unwrap_err().to_string();
        assert!(e.contains("wiped"), "{e}");
        assert!(super::check(&path, None, "s", None, 0, "").is_ok());
        // Junk is refused, an empty file is no anchor.
        std::fs::write(&path, b"otpd-anchor zz 1\n").unwrap();
        assert!(read(&path).is_err());
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }
}
