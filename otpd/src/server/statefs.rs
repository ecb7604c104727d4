//! File work in the state directory, whose contents the daemon's account
//! controls. Every step is relative to an opened directory (`openat`,
//! `mkdirat`, `renameat`, `unlinkat`), never follows a symbolic link
//! (`O_NOFOLLOW`), and judges the file it opened (`fstat` of the open
//! descriptor), so that nothing planted or swapped in between can send the
//! work elsewhere. A symbolic link, a file with a second name (a hard link:
//! it could be any file on the same file system) and anything but a plain
//! file or directory are refused with the file named.
//!
//! Root's commands do their store work as the directory's owner besides
//! (`super::worker`); this is the second wall, and what the daemon and the
//! worker themselves rely on.

use super::ServeError;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An opened directory, with its path for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The owner of a file: uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The owner's uid.
    pub uid: u32,
    /// The file's gid.
    pub gid: u32,
}

/// What a refused or failed step says: the path, then why.
fn failed(path: &Path, what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError(format!("{}: {what}: {e}", path.display()))
}

fn symlink_refused(path: &Path) -> ServeError {
    ServeError(format!(
        "{} is a symbolic link: otpd never follows a link in its state directory (the \
         daemon's account can write there, and the link could point at any file); remove \
         it, then run the command again",
        path.display()
    ))
}

fn hard_link_refused(path: &Path, links: u64) -> ServeError {
    ServeError(format!(
        "{} has {links} names (a hard link): otpd never works on a file of its state \
         directory that has another name, which could be any file on this file system; \
         remove it, then run the command again",
        path.display()
    ))
}

fn kind_refused(path: &Path, kind: FileType) -> ServeError {
    ServeError(format!(
        "{} is not a plain file or directory ({kind:?}); nothing but otpd's files belongs \
         in its state directory: remove it, then run the command again",
        path.display()
    ))
}

/// A plain file with one name, or the reason it is refused.
fn check_file(path: &Path, stat: &rfs::Stat) -> Result<(), ServeError> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_nlink > 1 => Err(hard_link_refused(path, stat.st_nlink)),
        FileType::RegularFile => Ok(()),
        FileType::Symlink => Err(symlink_refused(path)),
        other => Err(kind_refused(path, other)),
    }
}

impl Dir {
    /// Opens `path` as a directory; its last component may not be a
    /// symbolic link.
    pub fn open(path: &Path) -> Result<Dir, ServeError> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // O_DIRECTORY|O_NOFOLLOW on a link fails with ENOTDIR.
            Errno::LOOP | Errno::NOTDIR
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) =>
            {
                symlink_refused(path)
            }
            Errno::NOTDIR => ServeError(format!("{} is not a directory", path.display())),
            e => failed(path, "cannot open it", e),
        })?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path of `name` in this directory, for messages.
    pub fn child_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Owner and mode bits of the directory itself.
    pub fn owner_and_mode(&self) -> Result<(Owner, u32), ServeError> {
        let stat = rfs::fstat(&self.fd).map_err(|e| failed(&self.path, "cannot inspect it", e))?;
        Ok((
            Owner {
                uid: stat.st_uid,
                gid: stat.st_gid,
            },
            stat.st_mode & 0o7777,
        ))
    }

    /// Sets the directory's mode through its descriptor.
    pub fn set_mode(&self, mode: u32) -> Result<(), ServeError> {
        rfs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| failed(&self.path, &format!("cannot set mode {mode:04o}"), e))
    }

    /// What is at `name` (not following a link), or `None`.
    fn lstat(&self, name: &OsStr) -> Result<Option<rfs::Stat>, ServeError> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(failed(&self.path.join(name), "cannot inspect it", e)),
        }
    }

    /// Whether anything (even a dangling link) is at `name`.
    pub fn exists(&self, name: &str) -> Result<bool, ServeError> {
        Ok(self.lstat(OsStr::new(name))?.is_some())
    }

    /// Opens the subdirectory `name` (`None` if nothing is there); a link
    /// or another kind of file there is refused.
    pub fn open_dir(&self, name: &OsStr) -> Result<Option<Dir>, ServeError> {
        let path = self.path.join(name);
        match rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Dir { fd, path })),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP) => Err(symlink_refused(&path)),
            Err(Errno::NOTDIR) => match self.lstat(name)? {
                Some(stat) => Err(check_file(&path, &stat).err().unwrap_or_else(|| {
                    ServeError(format!("{} is not a directory", path.display()))
                })),
                None => Ok(None),
            },
            Err(e) => Err(failed(&path, "cannot open it", e)),
        }
    }

    /// The names in the directory, without `.` and `..`.
    fn names(&self) -> Result<Vec<OsString>, ServeError> {
        let fail = |e| failed(&self.path, "cannot list it", e);
        let mut dir = rfs::Dir::read_from(&self.fd).map_err(fail)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(fail)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Refuses the tree below this directory if it holds anything but
    /// plain files with one name and directories (see the module's
    /// documentation). Checked before any work starts, so that a refusal
    /// changes nothing; each file is checked again as it is opened.
    pub fn check_tree(&self) -> Result<(), ServeError> {
        for name in self.names()? {
            let path = self.path.join(&name);
            let Some(stat) = self.lstat(&name)? else {
                continue;
            };
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                if let Some(sub) = self.open_dir(&name)? {
                    sub.check_tree()?;
                }
            } else {
                check_file(&path, &stat)?;
            }
        }
        Ok(())
    }

    /// Opens the plain file `name` for reading, refusing a link or a file
    /// with another name (judged on the opened file).
    fn open_file(&self, name: &OsStr) -> Result<File, ServeError> {
        let path = self.path.join(name);
        // O_NONBLOCK: a FIFO planted here must not hang the open; it is
        // refused by the check below.
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.open_failed(name, e))?;
        let stat = rfs::fstat(&fd).map_err(|e| failed(&path, "cannot inspect it", e))?;
        check_file(&path, &stat)?;
        Ok(File::from(fd))
    }

    /// Why `name` could not be opened: the refusal when it is a link, a
    /// file with a second name (which we may not even be allowed to open,
    /// as the directory's owner) or not a plain file; else the error.
    fn open_failed(&self, name: &OsStr, e: Errno) -> ServeError {
        let path = self.path.join(name);
        if let Ok(Some(stat)) = self.lstat(name) {
            if let Err(refused) = check_file(&path, &stat) {
                return refused;
            }
        }
        failed(&path, "cannot open it", e)
    }

    /// Creates the new file `name` (mode `mode`) for writing; fails if
    /// anything is at that name already.
    fn create_file(&self, name: &OsStr, mode: u32) -> Result<File, ServeError> {
        rfs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map(File::from)
        .map_err(|e| failed(&self.path.join(name), "cannot create it", e))
    }

    /// Opens (creating it, mode 0600) the lock file `name`: a link or a
    /// file with another name there is refused. Returns the file and
    /// whether it was created now.
    pub fn open_lock_file(&self, name: &str) -> Result<(File, bool), ServeError> {
        let path = self.path.join(name);
        let open = |flags: OFlags| {
            rfs::openat(
                &self.fd,
                name,
                OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | flags,
                Mode::from_raw_mode(0o600),
            )
        };
        let (fd, created) = match open(OFlags::CREATE | OFlags::EXCL) {
            Ok(fd) => (fd, true),
            Err(Errno::EXIST) => (
                open(OFlags::empty()).map_err(|e| self.open_failed(OsStr::new(name), e))?,
                false,
            ),
            Err(e) => return Err(failed(&path, "cannot create it", e)),
        };
        let stat = rfs::fstat(&fd).map_err(|e| failed(&path, "cannot inspect it", e))?;
        check_file(&path, &stat)?;
        Ok((File::from(fd), created))
    }

    /// Creates the subdirectory `name` (mode 0700) and opens it.
    pub fn create_dir(&self, name: &OsStr) -> Result<Dir, ServeError> {
        rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700))
            .map_err(|e| failed(&self.path.join(name), "cannot create it", e))?;
        self.open_dir(name)?.ok_or_else(|| {
            ServeError(format!(
                "{} disappeared as it was made",
                self.path.join(name).display()
            ))
        })
    }

    /// Copies the tree below this directory into `to` (which must be
    /// empty): plain files (mode 0600, each synced) and directories
    /// (0700, each synced). Anything else is refused.
    pub fn copy_tree_to(&self, to: &Dir) -> Result<(), ServeError> {
        for name in self.names()? {
            let path = self.path.join(&name);
            let Some(stat) = self.lstat(&name)? else {
                continue;
            };
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                let Some(from) = self.open_dir(&name)? else {
                    continue;
                };
                from.copy_tree_to(&to.create_dir(&name)?)?;
                continue;
            }
            check_file(&path, &stat)?;
            let mut source = self.open_file(&name)?;
            let mut target = to.create_file(&name, 0o600)?;
            std::io::copy(&mut source, &mut target)
                .and_then(|_| target.sync_all())
                .map_err(|e| failed(&path, "cannot copy it", e))?;
        }
        to.sync()
    }

    /// Removes `name` and everything below it, never following a link (a
    /// link is removed, not what it points at). Nothing there: nothing done.
    pub fn remove_tree(&self, name: &OsStr) -> Result<(), ServeError> {
        let path = self.path.join(name);
        let Some(stat) = self.lstat(name)? else {
            return Ok(());
        };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            if let Some(sub) = self.open_dir(name)? {
                for child in sub.names()? {
                    sub.remove_tree(&child)?;
                }
            }
            rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
        } else {
            rfs::unlinkat(&self.fd, name, AtFlags::empty())
        }
        .map_err(|e| failed(&path, "cannot remove it", e))
    }

    /// Renames `from` to `to` within this directory (replacing `to`).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> Result<(), ServeError> {
        rfs::renameat(&self.fd, from, &self.fd, to).map_err(|e| {
            failed(
                &self.path.join(from),
                &format!("cannot rename it to {}", to.to_string_lossy()),
                e,
            )
        })
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> Result<(), ServeError> {
        rfs::fsync(&self.fd).map_err(|e| failed(&self.path, "cannot sync it", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tree() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("store/blobs")).unwrap();
        std::fs::write(tmp.path().join("store/db"), b"records").unwrap();
        std::fs::write(tmp.path().join("store/blobs/1"), b"blob").unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        (tmp, dir)
    }

    #[test]
    fn copies_a_tree_of_plain_files_and_removes_it() {
        let (tmp, dir) = tree();
        let store = dir.open_dir(OsStr::new("store")).unwrap().unwrap();
        store.check_tree().unwrap();
        store
            .copy_tree_to(&dir.create_dir(OsStr::new("copy")).unwrap())
            .unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("copy/db")).unwrap(),
            b"records"
        );
        assert_eq!(
            std::fs::read(tmp.path().join("copy/blobs/1")).unwrap(),
            b"blob"
        );
        let meta = std::fs::metadata(tmp.path().join("copy/db")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        dir.remove_tree(OsStr::new("copy")).unwrap();
        assert!(!tmp.path().join("copy").exists());
        dir.remove_tree(OsStr::new("copy")).unwrap();
    }

    #[test]
    fn links_are_refused_by_name_and_never_followed() {
        let (tmp, dir) = tree();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"not yours").unwrap();
        let store = dir.open_dir(OsStr::new("store")).unwrap().unwrap();

        std::os::unix::fs::symlink(&secret, tmp.path().join("store/blobs/leak")).unwrap();
        let e = store.check_tree().unwrap_err().0;
        assert!(e.contains("blobs/leak is a symbolic link"), "{e}");
        let copy = dir.create_dir(OsStr::new("copy")).unwrap();
        let e = store.copy_tree_to(&copy).unwrap_err().0;
        assert!(e.contains("symbolic link"), "{e}");
        // Removing the tree removes the link, not what it points at.
        dir.remove_tree(OsStr::new("store")).unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"not yours");

        std::fs::create_dir(tmp.path().join("store2")).unwrap();
        std::fs::hard_link(&secret, tmp.path().join("store2/leak")).unwrap_or_else(|_| {
            // Another file system: link within the temp dir instead.
            std::fs::write(tmp.path().join("other"), b"x").unwrap();
            std::fs::hard_link(tmp.path().join("other"), tmp.path().join("store2/leak")).unwrap();
        });
        let store2 = dir.open_dir(OsStr::new("store2")).unwrap().unwrap();
        let e = store2.check_tree().unwrap_err().0;
        assert!(e.contains("store2/leak has 2 names (a hard link)"), "{e}");

        // A link as the directory itself, and as the lock file.
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("linked")).unwrap();
        let e = dir.open_dir(OsStr::new("linked")).unwrap_err().0;
        assert!(e.contains("linked is a symbolic link"), "{e}");
        let e = Dir::open(&tmp.path().join("linked")).unwrap_err().0;
        assert!(e.contains("symbolic link"), "{e}");
        std::os::unix::fs::symlink(&secret, tmp.path().join("otpd.lock")).unwrap();
        let e = dir.open_lock_file("otpd.lock").unwrap_err().0;
        assert!(e.contains("otpd.lock is a symbolic link"), "{e}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"not yours");
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let (tmp, dir) = tree();
        nix::unistd::mkfifo(
            &tmp.path().join("store/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let store = dir.open_dir(OsStr::new("store")).unwrap().unwrap();
        let e = store.check_tree().unwrap_err().0;
        assert!(e.contains("store/fifo is not a plain file"), "{e}");
        let copy = dir.create_dir(OsStr::new("copy")).unwrap();
        assert!(store.copy_tree_to(&copy).is_err());
    }
}
