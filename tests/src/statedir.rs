//! The daemon's state directory as its own account would leave it: handed
//! to an unprivileged uid, with links planted in it, and the checks that
//! root's commands neither followed them nor left root-owned files behind.

use crate::env::TestEnv;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `chown -R uid:uid path` that never follows a link (the symbolic link
/// itself is changed), as the daemon running as `uid` would own its files.
pub fn chown_tree(path: &Path, uid: u32) {
    lchown(path, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    let meta = std::fs::symlink_metadata(path).expect("lstat");
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("dir entry").path(), uid);
        }
    }
}

/// Every path under `dir` (not following links) for which `keep` holds.
pub fn paths_under(dir: &Path, keep: &dyn Fn(&Path, &std::fs::Metadata) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if keep(&path, &meta) {
            found.push(path.clone());
        }
        if meta.is_dir() {
            found.extend(paths_under(&path, keep));
        }
    }
    found
}

/// Files and directories under `dir` (itself included) that belong to root.
pub fn root_owned_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = paths_under(dir, &|_, meta| meta.uid() == 0);
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.uid() == 0) {
        found.insert(0, dir.to_owned());
    }
    found
}

/// A file only root may read (mode 0600, root's), outside the state
/// directory but on the same file system, so that a hard link to it can
/// be planted there: what the daemon's account must never get a copy of.
#[derive(Debug)]
pub struct RootSecret {
    /// Where it is.
    pub path: PathBuf,
    /// Its text (unique per test).
    pub text: String,
    inode: u64,
}

impl RootSecret {
    /// Creates `dir/NAME` with a unique text.
    pub fn create(dir: &Path, name: &str) -> RootSecret {
        let path = dir.join(name);
        let text = format!(
            "root-only secret {name} {} {:?}\n",
            std::process::id(),
            std::time::SystemTime::now()
        );
        std::fs::write(&path, &text).expect("write the root secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the root secret");
        lchown(&path, Some(0), Some(0)).expect("chown the root secret");
        let inode = std::fs::metadata(&path).expect("stat").ino();
        RootSecret { path, text, inode }
    }

    /// Plants `link` as a symbolic link to the secret.
    pub fn symlink_at(&self, link: &Path) {
        std::os::unix::fs::symlink(&self.path, link)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
    }

    /// Plants `link` as a hard link to the secret.
    pub fn hard_link_at(&self, link: &Path) {
        std::fs::hard_link(&self.path, link)
            .unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
    }

    /// Panics unless the secret is as created: root's, mode 0600, same
    /// text, and no other file under `dir` holds a copy of its text.
    pub fn assert_untouched(&self, dir: &Path, what: &str) {
        let meta = std::fs::metadata(&self.path).expect("stat the root secret");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, 0o600),
            "{what}: the root-only file {} changed owner or mode",
            self.path.display()
        );
        assert_eq!(
            std::fs::read_to_string(&self.path).expect("read the root secret"),
            self.text,
            "{what}: the root-only file changed"
        );
        let copies = paths_under(dir, &|path, meta| {
            meta.is_file()
                && meta.ino() != self.inode
                && std::fs::read(path).is_ok_and(|bytes| {
                    bytes
                        .windows(self.text.len())
                        .any(|w| w == self.text.as_bytes())
                })
        });
        assert!(
            copies.is_empty(),
            "{what}: copies of the root-only file {} in {}: {copies:?}",
            self.path.display(),
            dir.display()
        );
    }
}

/// `cp -a` of plain files and directories (a sled store, a state
/// directory, a key file): `from` is a file or a directory; directories
/// keep their modes, files their permission bits.
pub fn copy_tree(from: &Path, to: &Path) {
    let meta =
        std::fs::symlink_metadata(from).unwrap_or_else(|e| panic!("lstat {}: {e}", from.display()));
    if meta.is_dir() {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            copy_tree(&path, &to.join(path.file_name().expect("a file name")));
        }
        std::fs::set_permissions(to, meta.permissions())
            .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// This host's anchor directory of `env`'s daemon: `[store] anchor_dir`
/// by default, `STATE_DIR-anchor` beside the state directory.
pub fn anchor_dir(env: &TestEnv) -> PathBuf {
    let mut name = env
        .state_dir
        .file_name()
        .expect("a state dir name")
        .to_owned();
    name.push("-anchor");
    env.state_dir.with_file_name(name)
}

/// Hands `env`'s daemon files to `uid`, as the packages have them for the
/// `otpd` account: the state directory, the anchor directory (the unit's
/// second `StateDirectory`, when the daemon made one) and the key file.
pub fn hand_over(env: &TestEnv, uid: u32) {
    chown_tree(&env.state_dir, uid);
    let anchor = anchor_dir(env);
    if anchor.exists() {
        chown_tree(&anchor, uid);
    }
    if env.key_file.exists() {
        lchown(&env.key_file, Some(uid), Some(uid)).expect("chown the key file");
    }
}
