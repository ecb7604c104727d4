//! The daemon's state directory as its own account would leave it: handed
//! to an unprivileged uid, with links planted in it, and the checks that
//! root's commands neither followed them nor left root-owned files behind.

use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state directory `state_dir` and its rollback anchor beside it
/// (`STATE_DIR-anchor`, when there is one) handed to `uid`, as the packages
/// give both to the daemon's account.
pub fn give_state_dir(state_dir: &Path, uid: u32) {
    chown_tree(state_dir, uid);
    let mut anchor = state_dir.as_os_str().to_owned();
    anchor.push("-anchor");
    let anchor = PathBuf::from(anchor);
    if anchor.exists() {
        chown_tree(&anchor, uid);
    }
}

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

/// Copies a directory of plain files and directories (a sled store).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if std::fs::symlink_metadata(&path).expect("lstat").is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        }
    }
}
