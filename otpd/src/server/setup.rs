//! The daemon's files: state directory, lock, socket.

use super::statefs::Dir;
use super::ServeError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::Path;

/// Creates `state_dir` (mode 0700) or tightens it to 0700: the store is
/// readable by the daemon's user alone (design.md §3). Judged and changed
/// through the opened directory (a symbolic link there is refused).
pub fn prepare_state_dir(dir: &Path) -> Result<(), ServeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            ServeError(format!(
                "state_dir {}: cannot create it: {e}",
                dir.display()
            ))
        })?;
    let opened = Dir::open(dir).map_err(|e| ServeError(format!("state_dir {}", e.0)))?;
    let (owner, mode) = opened.owner_and_mode()?;
    let euid = nix::unistd::geteuid().as_raw();
    if owner.uid != euid {
        return Err(ServeError(format!(
            "state_dir {} belongs to uid {}, not to the daemon's uid {euid}; fix its owner",
            dir.display(),
            owner.uid
        )));
    }
    if mode & 0o022 != 0 {
        return Err(ServeError(format!(
            "state_dir {} is writable by others (mode {mode:04o}): anyone could replace the \
             store; fix it with: chmod 0700 {}",
            dir.display(),
            dir.display()
        )));
    }
    if mode & 0o077 != 0 {
        opened.set_mode(0o700)?;
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
/// The file is opened through the state directory without following a
/// link, and one with a second name is refused (writing the pid would
/// otherwise clobber whatever file the daemon's account pointed it at); a
/// lock file root creates (`otpd rekey` of a fleet's store) is given to
/// the directory's owner through its descriptor. `command` (e.g. "otpd
/// rekey") names who needs the lock in the message when a daemon holds it.
pub fn lock_state_dir(dir: &Path, command: Option<&str>) -> Result<Flock<File>, ServeError> {
    let opened = Dir::open(dir).map_err(|e| ServeError(format!("state_dir {}", e.0)))?;
    let path = opened.child_path("otpd.lock");
    let (file, created) = opened.open_lock_file("otpd.lock")?;
    if created {
        let (owner, _) = opened.owner_and_mode()?;
        if owner.uid != nix::unistd::geteuid().as_raw() {
            std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid)).map_err(|e| {
                ServeError(format!(
                    "cannot give {} to uid {}: {e}",
                    path.display(),
                    owner.uid
                ))
            })?;
        }
    }
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = Read::by_ref(&mut file).take(64).read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(ServeError(format!(
                "another otpd{} is already running with state_dir {}; {}",
                if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
                dir.display(),
                match command {
                    Some(command) => format!(
                        "{command} needs the store to itself (systemctl stop otpd.socket \
                         otpd.service)"
                    ),
                    None => "stop it first".into(),
                }
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

/// Binds the daemon's socket at `path`: creates its directory (0755) when
/// missing, removes a stale socket (only if it is a socket and nobody
/// answers on it), and makes it connectable by everyone (mode 0666): who
/// may ask what is decided per request from SO_PEERCRED, not by file modes
/// (a screen locker runs as the user).
pub fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    bind_socket_with_mode(path, 0o666)
}

/// [`bind_socket`], the socket file made with `mode` (the metrics' socket:
/// 0660, for the daemon's group).
pub fn bind_socket_with_mode(
    path: &Path,
    mode: u32,
) -> Result<tokio::net::UnixListener, ServeError> {
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
    let listener = std::thread::scope(|scope| {
        scope
            .spawn(|| bind_with_mode(path, mode))
            .join()
            .unwrap_or_else(|_| Err(ServeError("binding the socket failed (a panic)".into())))
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", path.display())))?;
    tokio::net::UnixListener::from_std(listener)
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", path.display())))
}

/// Binds `path`, the socket file made with `mode` from its first instant.
/// bind() creates the file with 0777 less the umask, and a chmod of the
/// path afterwards leaves a moment with the wrong mode (and follows
/// whatever is at the path by then). The umask is what must be right at
/// bind(); but it is shared by all threads (the runtime's and sled's run
/// already, and create files), so this runs on a thread of its own that
/// first stops sharing it (`unshare(CLONE_FS)`, allowed in a threaded
/// process and by otpd.service's filters) and sets it for itself alone.
/// Binding in a private directory and renaming the socket into place was
/// the other way, but the socket then keeps the temporary name as its
/// address (getsockname, `ss -x`, strace show a path that is gone).
fn bind_with_mode(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener, ServeError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(|e| {
        ServeError(format!(
            "cannot listen on {}: cannot set the socket's mode (unshare: {e})",
            path.display()
        ))
    })?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777));
    std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn state_dir_is_created_private_and_locked_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        prepare_state_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let _held = lock_state_dir(&dir, None).unwrap();
        let err = lock_state_dir(&dir, None).unwrap_err().0;
        assert!(
            err.contains("already running") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_linked_state_dir_or_lock_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        prepare_state_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = prepare_state_dir(&link).unwrap_err().0;
        assert!(e.contains("symbolic link"), "{e}");
        let target = tmp.path().join("not-a-lock");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, real.join("otpd.lock")).unwrap();
        let e = lock_state_dir(&real, None).unwrap_err().0;
        assert!(e.contains("otpd.lock is a symbolic link"), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"keep");
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
        let umask = || {
            fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_owned()))
        };
        let before = umask();
        let live = bind_socket(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o666);
        // Only the binding thread had the umask that gives 0666.
        assert_eq!(umask(), before);
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
