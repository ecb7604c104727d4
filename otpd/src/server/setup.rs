//! The daemon's files: state directory, lock, socket.

use super::ServeError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `state_dir` (mode 0700) or tightens it to 0700: the store is
/// readable by the daemon's user alone (design.md §3).
pub fn prepare_state_dir(dir: &Path) -> Result<(), ServeError> {
    let err = |what: &str, e: std::io::Error| {
        ServeError(format!("state_dir {}: {what}: {e}", dir.display()))
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err("cannot create it", e))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| err("cannot inspect it", e))?;
    if !meta.is_dir() {
        return Err(ServeError(format!(
            "state_dir {} is not a directory",
            dir.display()
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(ServeError(format!(
            "state_dir {} belongs to uid {}, not to the daemon's uid {euid}; fix its owner",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(ServeError(format!(
            "state_dir {} is writable by others (mode {:04o}): anyone could replace the store; \
             fix it with: chmod 0700 {}",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| err("cannot set mode 0700", e))?;
    }
    Ok(())
}

/// What a file the daemon trusts may not allow others.
#[derive(Debug, Clone, Copy)]
pub enum Trust {
    /// Read by the daemon (config, a program it runs): nobody but root and
    /// the daemon may write it.
    NoForeignWrites,
    /// A private key: nobody else may write it, and the world may not read it.
    Private,
}

/// Refuses a file that others could change (or read, for keys), naming the
/// path and the fix. A missing file is not checked here.
pub fn check_trusted_file(what: &str, path: &Path, trust: Trust) -> Result<(), ServeError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ServeError(format!(
                "{what} {}: cannot inspect it: {e}",
                path.display()
            )))
        }
    };
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(ServeError(format!(
            "{what} {} belongs to uid {}, not to root or the daemon (uid {euid}): \
             fix it with: chown root {}",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    let (forbidden, fix) = match trust {
        Trust::NoForeignWrites => (0o022, "go-w"),
        Trust::Private => (0o026, "go-w,o-r"),
    };
    if mode & forbidden != 0 {
        return Err(ServeError(format!(
            "{what} {} is {} by others (mode {mode:04o}): fix it with: chmod {fix} {}",
            path.display(),
            if mode & 0o022 != 0 {
                "writable"
            } else {
                "readable"
            },
            path.display()
        )));
    }
    Ok(())
}

/// Takes the exclusive lock `state_dir/otpd.lock`, writing our pid into it.
pub fn lock_state_dir(dir: &Path) -> Result<Flock<File>, ServeError> {
    let path = dir.join("otpd.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ServeError(format!("cannot open {}: {e}", path.display())))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(ServeError(format!(
                "another otpd{} is already running with state_dir {}; stop it first",
                if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
                dir.display()
            )));
        }
    };
    let write_pid = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())
    };
    write_pid(&mut lock)
        .map_err(|e| ServeError(format!("cannot write {}: {e}", path.display())))?;
    Ok(lock)
}

/// Binds the socket: creates its directory (0755) when missing, removes a
/// stale socket (only if it is a socket and nobody answers on it), and makes
/// it connectable by everyone: who may ask what is decided per request from
/// SO_PEERCRED, not by file modes (a screen locker runs as the user).
/// The socket systemd handed over (`otpd.socket`, `LISTEN_FDS`), if any:
/// `Ok(None)` when the daemon was started without one and binds its own.
/// A handed-over descriptor that is not a listening Unix socket is an error.
pub fn inherited_socket() -> Result<Option<tokio::net::UnixListener>, ServeError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if fds.len() > 1 {
        return Err(ServeError(format!(
            "systemd handed over {} sockets; otpd.socket must have exactly one ListenStream",
            fds.len()
        )));
    }
    let listener = fds
        .take_unix_listener(0)
        .map_err(|e| {
            ServeError(format!(
                "the socket systemd handed over is not a Unix stream socket: {e}"
            ))
        })?
        .ok_or_else(|| ServeError("the socket systemd handed over was already taken".into()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ServeError(format!("cannot use the socket systemd handed over: {e}")))?;
    tokio::net::UnixListener::from_std(listener)
        .map(Some)
        .map_err(|e| ServeError(format!("cannot use the socket systemd handed over: {e}")))
}

/// Binds the daemon's socket at `path` (mode 0666: every local program may
/// ask, SO_PEERCRED decides what it may ask).
pub fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| {
                    ServeError(format!(
                        "cannot create socket directory {}: {e}",
                        parent.display()
                    ))
                })?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError(format!(
                    "another daemon is listening on {}; stop it first",
                    path.display()
                )));
            }
            fs::remove_file(path).map_err(|e| {
                ServeError(format!(
                    "cannot remove stale socket {}: {e}",
                    path.display()
                ))
            })?;
        }
        Ok(_) => {
            return Err(ServeError(format!(
                "{} exists and is not a socket; refusing to remove it",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ServeError(format!(
                "cannot inspect {}: {e}",
                path.display()
            )))
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .map_err(|e| ServeError(format!("cannot set the mode of {}: {e}", path.display())))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_is_created_private_and_locked_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        prepare_state_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let _held = lock_state_dir(&dir).unwrap();
        let err = lock_state_dir(&dir).unwrap_err().0;
        assert!(
            err.contains("already running") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_loose_state_dir_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        prepare_state_dir(tmp.path()).unwrap();
        assert_eq!(fs::metadata(tmp.path()).unwrap().mode() & 0o777, 0o700);
    }

    #[tokio::test]
    async fn only_stale_sockets_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/otpd.sock");
        let live = bind_socket(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o666);
        // Someone is listening: refused.
        assert!(bind_socket(&path).unwrap_err().0.contains("listening"));
        drop(live);
        // Stale: replaced.
        let _again = bind_socket(&path).unwrap();
        // A regular file is never removed.
        let file = tmp.path().join("not-a-socket");
        fs::write(&file, b"keep").unwrap();
        assert!(bind_socket(&file).unwrap_err().0.contains("not a socket"));
        assert_eq!(fs::read(&file).unwrap(), b"keep");
    }
}
