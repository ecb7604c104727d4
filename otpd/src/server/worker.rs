//! The store work of root's admin commands (`otpd rekey`, `otpd migrate`,
//! `otpd seal-store`), done as the state directory's owner.
//!
//! The daemon's account owns the state directory and may put anything in
//! it; root working there could be made to read, write or give away any
//! file of the host. So when root runs one of these commands on a state
//! directory that belongs to another user, the work on the directory runs
//! in a child `otpd` (started as `otpd-store-worker`) with that user's uid and
//! gid and no supplementary groups, started through std's
//! `CommandExt::uid`/`gid` (no `unsafe` here, no fork of our own). Root
//! keeps what needs root: reading the key files, which it hands to the
//! child over a pipe, and installing the new key outside the directory.
//! The child holds the directory's lock until root has finished and closed
//! the pipe, so no daemon starts in between.
//!
//! Run by the owner itself (or by root on a directory of root's), the same
//! work is done in this process. Either way it goes through
//! [`super::statefs`]: no link is followed, none is copied.

use super::setup::lock_state_dir;
use super::statefs::{Dir, Owner};
use super::ServeError;
use crate::core::record::{SourceCounter, UserRecord};
use crate::store::format::StoredRecord;
use crate::store::{RekeyReport, SledStore, Store, StoreError};
use nix::fcntl::Flock;
use otpd_proto::{read_frame, write_frame, SecretText};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The name (argv\[0\]) the worker is started under.
const WORKER_NAME: &str = "otpd-store-worker";

/// Whether this process was started as the worker (`argv0` is
/// [`WORKER_NAME`]).
pub fn is_worker(argv0: Option<std::ffi::OsString>) -> bool {
    argv0.is_some_and(|name| name == WORKER_NAME)
}

/// The copy of the store that `otpd rekey` keeps until its switch is done.
pub const REKEY_BACKUP: &str = "store.before-rekey";
/// Where that copy is made before it is renamed to [`REKEY_BACKUP`].
const REKEY_PARTIAL: &str = "store.before-rekey.partial";
/// Where the copy goes once the switch is done, to be removed: renamed
/// first, so that a removal cut short never leaves half a copy under
/// [`REKEY_BACKUP`] (which the next run would restore).
const REKEY_DONE: &str = "store.before-rekey.done";

/// What root asks of the worker (one frame on its stdin).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "job")]
enum Job {
    /// `otpd rekey`'s store part ([`rekey_here`]).
    Rekey {
        state_dir: PathBuf,
        old: Option<SecretText>,
        new: SecretText,
    },
    /// `otpd migrate`'s reading of the sled store ([`export_here`]).
    Export {
        state_dir: PathBuf,
        anchor: Option<PathBuf>,
        key: SecretText,
    },
    /// `otpd seal-store`'s store part ([`seal_here`]).
    Seal {
        state_dir: PathBuf,
        anchor: Option<PathBuf>,
        key: SecretText,
    },
}

/// What the worker answers (frames on its stdout).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "reply")]
enum Reply {
    /// The rekey is done (the lock is held until root closes the pipe).
    Rekeyed { records: usize, already_done: bool },
    /// One user of the store (in the store's layout), with its failure
    /// counters.
    User {
        name: String,
        record: Box<StoredRecord>,
        sources: Vec<(String, SourceCounter)>,
    },
    /// Every user was sent.
    Exported { users: usize },
    /// The store was sealed (the lock is held until root closes the pipe).
    Sealed { records: usize, key_id: String },
    /// The work was refused or failed: the message for the operator.
    Failed { message: String },
}

/// The command's hold on the state directory: released (the lock dropped,
/// the worker told to exit) with [`Held::finish`] or on drop.
pub enum Held {
    /// This process holds the lock.
    Lock(Flock<File>),
    /// The worker holds it.
    Worker(Worker),
}

impl Held {
    /// Releases the directory; for a worker, checks that it ended well.
    pub fn finish(self) -> Result<(), ServeError> {
        match self {
            Held::Lock(lock) => {
                drop(lock);
                Ok(())
            }
            Held::Worker(mut worker) => worker.finish(),
        }
    }
}

/// A running worker: its pipes and the uid it runs as.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    uid: u32,
}

impl Worker {
    /// Starts `otpd-store-worker` (this very binary) as `owner` and sends
    /// it `job`.
    fn start(owner: Owner, job: &Job) -> Result<Worker, ServeError> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| {
            ServeError(format!(
                "cannot find the otpd binary to run the store work: {e}"
            ))
        })?;
        let mut child = Command::new(&exe)
            .arg0(WORKER_NAME)
            .env_clear()
            .current_dir("/")
            // std sets the gid, drops the supplementary groups (we are
            // root), then sets the uid, in the child before exec.
            .gid(owner.gid)
            .uid(owner.uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                ServeError(format!(
                    "cannot run the store work as the state directory's owner (uid {}): \
                     {}: {e}; that user must be able to run it",
                    owner.uid,
                    exe.display()
                ))
            })?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ServeError("the store worker has no pipes".into()));
        };
        let mut worker = Worker {
            stdin: None,
            stdout,
            uid: owner.uid,
            child,
        };
        if let Err(e) = write_frame(&mut stdin, job) {
            drop(stdin);
            return Err(worker.ended_without_answer(&e.to_string()));
        }
        worker.stdin = Some(stdin);
        Ok(worker)
    }

    /// The next reply; a `Failed` one becomes the error.
    fn reply(&mut self) -> Result<Reply, ServeError> {
        match read_frame::<Reply>(&mut self.stdout) {
            Ok(Reply::Failed { message }) => {
                let _ = self.finish();
                Err(ServeError(message))
            }
            Ok(reply) => Ok(reply),
            Err(e) => Err(self.ended_without_answer(&e.to_string())),
        }
    }

    fn ended_without_answer(&mut self, why: &str) -> ServeError {
        self.stdin = None;
        let status = self
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        ServeError(format!(
            "the store work (otpd as uid {}) ended without an answer ({why}; {status})",
            self.uid
        ))
    }

    /// Closes the pipe (the worker then drops the lock and exits) and waits.
    fn finish(&mut self) -> Result<(), ServeError> {
        self.stdin = None;
        match self.child.wait() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(ServeError(format!(
                "the store work (otpd as uid {}) ended with {status}",
                self.uid
            ))),
            Err(e) => Err(ServeError(format!(
                "waiting for the store work (otpd as uid {}): {e}",
                self.uid
            ))),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.finish();
        }
    }
}

/// The files sled makes during the work are the daemon's alone, as those
/// it makes when it runs (systemd's `UMask=0077`), whatever the umask of
/// the shell root ran the command from. Set while this process (the CLI
/// or the worker, before the store is opened) has one thread.
fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Who does the work on `state_dir`: `None` for this process (we own the
/// directory, or we are root and root owns it), `Some(owner)` for a worker
/// as the owner (we are root). Anyone else is refused.
fn worker_for(state_dir: &Path, command: &str) -> Result<Option<Owner>, ServeError> {
    let (owner, _) = Dir::open(state_dir)
        .map_err(|e| ServeError(format!("state_dir {}", e.0)))?
        .owner_and_mode()?;
    let euid = nix::unistd::geteuid().as_raw();
    if owner.uid == euid {
        Ok(None)
    } else if euid == 0 {
        Ok(Some(owner))
    } else {
        Err(ServeError(format!(
            "state_dir {} belongs to uid {}: run otpd {command} as root or as that user",
            state_dir.display(),
            owner.uid
        )))
    }
}

/// The uid that owns `state_dir` (for the owner check of key files that
/// root reads for it), if the directory can be opened.
pub fn state_dir_owner(state_dir: &Path) -> Option<u32> {
    Dir::open(state_dir)
        .and_then(|d| d.owner_and_mode())
        .ok()
        .map(|(owner, _)| owner.uid)
}

/// The lock of `state_dir` for `command`, with the way out when a daemon
/// holds it.
fn lock_for(state_dir: &Path, command: &str) -> Result<Flock<File>, ServeError> {
    lock_state_dir(state_dir, Some(&format!("otpd {command}")))
}

/// `otpd rekey`'s store part: re-seals the sled store in `state_dir` with
/// `new` (see [`rekey_here`]), as the directory's owner. The returned
/// [`Held`] keeps the directory locked until the new key is installed.
pub fn rekey_store(
    state_dir: &Path,
    old: Option<SecretText>,
    new: SecretText,
) -> Result<(RekeyReport, Held), ServeError> {
    match worker_for(state_dir, "rekey")? {
        None => {
            private_umask();
            let lock = lock_for(state_dir, "rekey")?;
            let old = old.map(|k| super::keyfile::key_of(&k, Path::new("(current key)")));
            let report = rekey_here(
                state_dir,
                old.transpose()?.as_ref(),
                &super::keyfile::key_of(&new, Path::new("(new key)"))?,
            )?;
            Ok((report, Held::Lock(lock)))
        }
        Some(owner) => {
            let mut worker = Worker::start(
                owner,
                &Job::Rekey {
                    state_dir: state_dir.to_owned(),
                    old,
                    new,
                },
            )?;
            match worker.reply()? {
                Reply::Rekeyed {
                    records,
                    already_done,
                } => Ok((
                    RekeyReport {
                        records,
                        already_done,
                    },
                    Held::Worker(worker),
                )),
                _ => Err(ServeError("the store work answered out of turn".into())),
            }
        }
    }
}

/// Re-seals the store with `new`, crash-safely, with the lock held: first a
/// synced copy of the store ([`REKEY_BACKUP`]), which an interrupted rekey
/// starts over from; then [`SledStore::rekey`]; then the copy is removed
/// (before the key is installed: a copy on disk always means "old key";
/// renamed away first, so that it is whole or gone).
/// The copy and the store are checked whole before anything changes: a
/// link or a file with a second name in either is refused, naming it.
fn rekey_here(
    state_dir: &Path,
    old: Option<&crate::core::seal::RecordKey>,
    new: &crate::core::seal::RecordKey,
) -> Result<RekeyReport, ServeError> {
    let dir = Dir::open(state_dir)?;
    let store = OsStr::new("store");
    let backup = OsStr::new(REKEY_BACKUP);
    let partial = OsStr::new(REKEY_PARTIAL);
    let done = OsStr::new(REKEY_DONE);
    dir.remove_tree(done)?;
    if let Some(copy) = dir.open_dir(backup)? {
        // A rekey that did not finish: whatever it left (sled can fail to
        // recover from a SIGKILL at a bad moment), start again from the
        // copy taken before it touched anything.
        copy.check_tree()?;
        dir.remove_tree(store)?;
        copy.copy_tree_to(&dir.create_dir(store)?)?;
        dir.sync()?;
    } else {
        let live = dir.open_dir(store)?;
        match &live {
            Some(live) if live.exists("db")? => live.check_tree()?,
            _ => {
                return Err(ServeError(format!(
                    "there is no store in {}: nothing to rekey",
                    dir.child_path("store").display()
                )))
            }
        }
        if let Some(live) = live {
            dir.remove_tree(partial)?;
            live.copy_tree_to(&dir.create_dir(partial)?)?;
            dir.rename(partial, backup)
                .and_then(|()| dir.sync())
                .map_err(|e| ServeError(format!("cannot keep a copy of the store: {}", e.0)))?;
        }
    }
    let report = SledStore::rekey(&dir.child_path("store"), old, new)
        .map_err(|e| ServeError(e.to_string()))?;
    dir.rename(backup, done)?;
    dir.sync()?;
    dir.remove_tree(done)?;
    dir.sync()?;
    Ok(report)
}

/// The users of a sled store and their failure counters, read for `otpd
/// migrate`; holds the state directory until dropped.
pub struct SledSnapshot {
    users: Vec<(String, UserRecord)>,
    sources: BTreeMap<String, Vec<(String, SourceCounter)>>,
    _held: Held,
}

impl SledSnapshot {
    /// Every user, as [`Store::users`] returns them.
    pub fn users(&self) -> Result<Vec<(String, UserRecord)>, StoreError> {
        Ok(self.users.clone())
    }

    /// The failure counters of `user`, as [`SledStore::sources_of`].
    pub fn sources_of(&self, user: &str) -> Result<Vec<(String, SourceCounter)>, StoreError> {
        Ok(self.sources.get(user).cloned().unwrap_or_default())
    }
}

/// `otpd seal-store`'s store part: seals the records in clear of the sled
/// store in `state_dir` with `key` ([`SledStore::seal_store`], which
/// refuses a store that has had a key), as the directory's owner. Returns
/// the records sealed and the key ID; the directory stays locked until the
/// returned [`Held`] is finished.
pub fn seal_store(
    state_dir: &Path,
    anchor: Option<&Path>,
    key: SecretText,
) -> Result<(usize, String, Held), ServeError> {
    match worker_for(state_dir, "seal-store")? {
        None => {
            private_umask();
            let lock = lock_for(state_dir, "seal-store")?;
            let (records, key_id) = seal_here(state_dir, anchor, &key)?;
            Ok((records, key_id, Held::Lock(lock)))
        }
        Some(owner) => {
            let mut worker = Worker::start(
                owner,
                &Job::Seal {
                    state_dir: state_dir.to_owned(),
                    anchor: anchor.map(Path::to_owned),
                    key,
                },
            )?;
            match worker.reply()? {
                Reply::Sealed { records, key_id } => Ok((records, key_id, Held::Worker(worker))),
                _ => Err(ServeError("the store work answered out of turn".into())),
            }
        }
    }
}

/// Seals the store in `state_dir` with `key`, with the lock held; the
/// store is checked whole first (no link, no second name), as in
/// [`rekey_here`].
fn seal_here(
    state_dir: &Path,
    anchor: Option<&Path>,
    key: &SecretText,
) -> Result<(usize, String), ServeError> {
    let dir = Dir::open(state_dir)?;
    match dir.open_dir(OsStr::new("store"))? {
        Some(store) if store.exists("db")? => store.check_tree()?,
        _ => {
            return Err(ServeError(format!(
                "there is no store in {}: nothing to seal",
                dir.child_path("store").display()
            )))
        }
    }
    let key = super::keyfile::key_of(key, Path::new("(key)"))?;
    let (records, key_id) = SledStore::seal_store(&dir.child_path("store"), anchor, |_| Ok(key))
        .map_err(|e| ServeError(e.to_string()))?;
    Ok((records, key_id.to_string()))
}

/// `otpd migrate`'s reading of the sled store in `state_dir`, sealed with
/// `key`, as the directory's owner (see the module's documentation). The
/// store is checked against this host's `anchor`, as the daemon checks it,
/// so that an older copy of the state directory is not carried into the
/// database.
pub fn export_sled(
    state_dir: &Path,
    anchor: Option<&Path>,
    key: SecretText,
) -> Result<SledSnapshot, ServeError> {
    match worker_for(state_dir, "migrate")? {
        None => {
            private_umask();
            let lock = lock_for(state_dir, "migrate")?;
            let key = super::keyfile::key_of(&key, Path::new("(key)"))?;
            let (users, sources) = export_here(state_dir, anchor, key)?;
            Ok(SledSnapshot {
                users,
                sources,
                _held: Held::Lock(lock),
            })
        }
        Some(owner) => {
            let mut worker = Worker::start(
                owner,
                &Job::Export {
                    state_dir: state_dir.to_owned(),
                    anchor: anchor.map(Path::to_owned),
                    key,
                },
            )?;
            let mut users = Vec::new();
            let mut sources = BTreeMap::new();
            loop {
                match worker.reply()? {
                    Reply::User {
                        name,
                        record,
                        sources: counters,
                    } => {
                        sources.insert(name.clone(), counters);
                        users.push((name, UserRecord::from(*record)));
                    }
                    Reply::Exported { users: n } if n == users.len() => break,
                    _ => return Err(ServeError("the store work answered out of turn".into())),
                }
            }
            Ok(SledSnapshot {
                users,
                sources,
                _held: Held::Worker(worker),
            })
        }
    }
}

type Exported = (
    Vec<(String, UserRecord)>,
    BTreeMap<String, Vec<(String, SourceCounter)>>,
);

/// Opens the sled store (checked whole first, as in [`rekey_here`]) and
/// reads every user with its counters.
fn export_here(
    state_dir: &Path,
    anchor: Option<&Path>,
    key: crate::core::seal::RecordKey,
) -> Result<Exported, ServeError> {
    let dir = Dir::open(state_dir)?;
    match dir.open_dir(OsStr::new("store"))? {
        Some(store) if store.exists("db")? => store.check_tree()?,
        _ => {
            return Err(ServeError(format!(
                "there is no sled store in {}: nothing to migrate",
                dir.child_path("store").display()
            )))
        }
    }
    let store_dir = dir.child_path("store");
    let shown = store_dir.display().to_string();
    let sled = SledStore::open_anchored(&store_dir, anchor, move |stored| match stored {
        Some(id) if id != key.id() => Err(StoreError::WrongKey(format!(
            "the key file holds key ID {}, but the store in {shown} is sealed with key ID {id}",
            key.id(),
        ))),
        _ => Ok(key),
    })
    .map_err(|e| ServeError(e.to_string()))?;
    let fail = |e: StoreError| ServeError(e.to_string());
    let users = sled.users().map_err(fail)?;
    let mut sources = BTreeMap::new();
    for (name, _) in &users {
        sources.insert(name.clone(), sled.sources_of(name).map_err(fail)?);
    }
    Ok((users, sources))
}

/// The worker (`otpd-store-worker`): reads one job from stdin, does it, answers on
/// stdout, then waits for stdin to close (holding the lock meanwhile).
/// Errors are answered as [`Reply::Failed`]; the exit status says whether
/// an answer could be given.
pub fn run_worker() -> Result<(), ServeError> {
    // Root's command killed (SIGKILL, a crash) takes the worker with it, as
    // when it did the work itself: the work is safe to interrupt, and a
    // worker left running would hold the lock on its own. (Set after the
    // uid change, which would clear it.)
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| {
        ServeError(format!(
            "otpd-store-worker: cannot tie itself to root's command: {e}"
        ))
    })?;
    private_umask();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let job: Job = read_frame(&mut stdin)
        .map_err(|e| ServeError(format!("otpd-store-worker: no job on stdin: {e}")))?;
    let send = |out: &mut std::io::StdoutLock<'_>, reply: &Reply| {
        write_frame(out, reply).map_err(|e| ServeError(format!("cannot answer root: {e}")))
    };
    let held = match job {
        Job::Rekey {
            state_dir,
            old,
            new,
        } => {
            let done = (|| {
                let lock = lock_for(&state_dir, "rekey")?;
                let old = old
                    .map(|k| super::keyfile::key_of(&k, Path::new("(current key)")))
                    .transpose()?;
                let new = super::keyfile::key_of(&new, Path::new("(new key)"))?;
                Ok::<_, ServeError>((rekey_here(&state_dir, old.as_ref(), &new)?, lock))
            })();
            match done {
                Ok((report, lock)) => {
                    send(
                        &mut stdout,
                        &Reply::Rekeyed {
                            records: report.records,
                            already_done: report.already_done,
                        },
                    )?;
                    Some(lock)
                }
                Err(e) => {
                    send(&mut stdout, &Reply::Failed { message: e.0 })?;
                    None
                }
            }
        }
        Job::Seal {
            state_dir,
            anchor,
            key,
        } => {
            let done = (|| {
                let lock = lock_for(&state_dir, "seal-store")?;
                Ok::<_, ServeError>((seal_here(&state_dir, anchor.as_deref(), &key)?, lock))
            })();
            match done {
                Ok(((records, key_id), lock)) => {
                    send(&mut stdout, &Reply::Sealed { records, key_id })?;
                    Some(lock)
                }
                Err(e) => {
                    send(&mut stdout, &Reply::Failed { message: e.0 })?;
                    None
                }
            }
        }
        Job::Export {
            state_dir,
            anchor,
            key,
        } => {
            let done = (|| {
                let lock = lock_for(&state_dir, "migrate")?;
                let key = super::keyfile::key_of(&key, Path::new("(key)"))?;
                Ok::<_, ServeError>((export_here(&state_dir, anchor.as_deref(), key)?, lock))
            })();
            match done {
                Ok(((users, mut sources), lock)) => {
                    let count = users.len();
                    for (name, record) in users {
                        let counters = sources.remove(&name).unwrap_or_default();
                        let record = StoredRecord::from(&record);
                        send(
                            &mut stdout,
                            &Reply::User {
                                name,
                                record: Box::new(record),
                                sources: counters,
                            },
                        )?;
                    }
                    send(&mut stdout, &Reply::Exported { users: count })?;
                    Some(lock)
                }
                Err(e) => {
                    send(&mut stdout, &Reply::Failed { message: e.0 })?;
                    None
                }
            }
        }
    };
    // Root is done (or gone) when the pipe closes: only then is the lock
    // released. Nothing else is expected on it.
    let _ = read_frame::<Job>(&mut stdin);
    drop(held);
    Ok(())
}
