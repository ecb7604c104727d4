//! The record key on disk: systemd's credential, the key file, or a new
//! key file made at the first start of a new store; and `otpd keygen` and
//! `otpd rekey`.

use super::ServeError;
use crate::config::Config;
use crate::core::seal::{key_file_text, KeyId, RecordKey, KEY_LEN};
use otpd_proto::SecretText;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The credential name for `LoadCredential=otpd.key:/etc/otpd/otpd.key`.
pub const CREDENTIAL_NAME: &str = "otpd.key";
/// A key file is 65 bytes; anything much larger is not one.
const MAX_KEY_FILE: u64 = 4096;

/// Where the key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `$CREDENTIALS_DIRECTORY/otpd.key`, handed in by systemd.
    Credential(PathBuf),
    /// The configured `key_file`.
    File(PathBuf),
}

impl KeySource {
    /// The credential when systemd handed one in, else `key_file`.
    pub fn of(config: &Config) -> Self {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = Path::new(&dir).join(CREDENTIAL_NAME);
            if path.exists() {
                return KeySource::Credential(path);
            }
        }
        KeySource::File(config.key_file.clone())
    }

    /// The path read.
    pub fn path(&self) -> &Path {
        match self {
            KeySource::Credential(p) | KeySource::File(p) => p,
        }
    }
}

/// Reads a key file, refusing one that others may read or write.
pub fn read_key(path: &Path) -> Result<RecordKey, ServeError> {
    key_of(&read_key_text(path, None)?, path)
}

/// The key in `text` (64 hexadecimal digits); `path` names it in errors.
pub fn key_of(text: &SecretText, path: &Path) -> Result<RecordKey, ServeError> {
    RecordKey::parse(text.expose().as_bytes())
        .map_err(|e| ServeError(format!("key file {}: {e}", path.display())))
}

/// Reads a key file as [`read_key`] does and returns its key as 64
/// hexadecimal digits: what `otpd rekey` and `otpd migrate`, run by root,
/// hand to the store work they run as the daemon's account. Owned by root,
/// by us, or by `daemon_uid` (the state directory's owner, when root reads
/// the key file of the packages, which belongs to the daemon's account).
pub fn read_key_text(path: &Path, daemon_uid: Option<u32>) -> Result<SecretText, ServeError> {
    let err = |what: String| ServeError(format!("key file {}: {what}", path.display()));
    let mut file = File::open(path).map_err(|e| {
        err(if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!(
                "cannot read it ({e}); it must be readable by the daemon's user \
                 (uid {}): chown it to that user, or hand it in with systemd's \
                 LoadCredential={CREDENTIAL_NAME}:{}",
                nix::unistd::geteuid(),
                path.display()
            )
        } else {
            format!("cannot read it: {e}")
        })
    })?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot inspect it: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    let daemon = daemon_uid.unwrap_or(euid);
    if meta.uid() != 0 && meta.uid() != euid && meta.uid() != daemon {
        return Err(err(format!(
            "belongs to uid {}, not to root or the daemon (uid {daemon}): fix it with: chown root {}",
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "others may access it (mode {mode:04o}); it must be 0400: fix it with: chmod 0400 {}",
            path.display()
        )));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(err(
            "too large to be an otpd key (64 hexadecimal digits)".into()
        ));
    }
    // Sized for the largest file read: reading never reallocates, so no
    // unwiped copy of the key is left behind.
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 64));
    Read::by_ref(&mut file)
        .take(MAX_KEY_FILE)
        .read_to_end(&mut text)
        .map_err(|e| err(format!("cannot read it: {e}")))?;
    RecordKey::parse(&text).map_err(|e| err(e.to_string()))?;
    // Parsed: the trimmed text is 64 ASCII hexadecimal digits.
    Ok(SecretText::new(
        String::from_utf8_lossy(text.trim_ascii()).into_owned(),
    ))
}

/// How a key file reaches its name.
#[derive(Clone, Copy)]
enum Place {
    /// Linked: fails if the name exists (a key is never overwritten).
    New,
    /// Renamed over the name, keeping its owner.
    Replace,
}

/// Writes `text` to a temporary file (mode 0400) beside `path`, syncs it,
/// puts it in place and syncs the directory. The temporary file never stays.
fn write_key_file(path: &Path, text: &[u8], place: Place) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let owner = fs::metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let tmp = dir.join(format!(".otpd-key.new-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        match place {
            Place::New => fs::hard_link(&tmp, path)?,
            Place::Replace => {
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
                }
                fs::rename(&tmp, path)?;
            }
        }
        File::open(dir)?.sync_all()
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Writes a new random key to `path` (mode 0400), never over an existing
/// file.
pub fn create_key_file(path: &Path) -> Result<RecordKey, ServeError> {
    key_of(&create_key_text(path)?, path)
}

/// [`create_key_file`], returning the key as 64 hexadecimal digits.
pub fn create_key_text(path: &Path) -> Result<SecretText, ServeError> {
    let err = |what: String| ServeError(format!("key file {}: {what}", path.display()));
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    crate::rng::fill(bytes.as_mut_slice())
        .map_err(|e| err(format!("the OS random number generator failed: {e}")))?;
    let text = key_file_text(&bytes);
    match write_key_file(path, text.as_bytes(), Place::New) {
        Ok(()) => Ok(SecretText::new(text.trim_end().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(err(
            "already exists; otpd never overwrites a key (move it away first)".into(),
        )),
        Err(e) => Err(err(format!("cannot create it: {e}"))),
    }
}

/// Replaces `path` with a key file holding `key` (64 hexadecimal digits),
/// mode 0400, atomically; the file keeps the owner of the one it replaces
/// (the daemon's account, in the packages).
pub fn install_key(key: &SecretText, path: &Path) -> Result<(), ServeError> {
    let mut text = Zeroizing::new(String::with_capacity(key.expose().len() + 1));
    text.push_str(key.expose());
    text.push('\n');
    write_key_file(path, text.as_bytes(), Place::Replace).map_err(|e| {
        ServeError(format!(
            "key file {}: cannot replace it: {e}",
            path.display()
        ))
    })
}

/// The daemon's key for a store sealed with `stored` (`None`: a new store,
/// or one written in clear). A missing key file is created only then:
/// with a store that holds sealed records it is an error, never a fresh key
/// and an unreadable (or silently empty) store.
pub fn load_key(config: &Config, stored: Option<KeyId>) -> Result<RecordKey, ServeError> {
    let store = format!("the store in {}", config.state_dir.join("store").display());
    load_key_for(
        config,
        stored,
        &store,
        "if `otpd rekey` was interrupted, run it again with the same new key file to finish",
    )
}

/// [`load_key`] for `store` (named in messages: "the store in DIR", "the
/// PostgreSQL store"); `hint` ends the message of a key that does not fit.
pub fn load_key_for(
    config: &Config,
    stored: Option<KeyId>,
    store: &str,
    hint: &str,
) -> Result<RecordKey, ServeError> {
    let source = KeySource::of(config);
    let path = source.path();
    let missing =
        matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let key = match (&source, missing, stored) {
        (KeySource::File(_), true, None) => {
            let key = create_key_file(path)?;
            tracing::warn!(
                key_file = %path.display(),
                key_id = %key.id(),
                "created a new key for the store; back it up: without it the store cannot be read"
            );
            key
        }
        (_, true, Some(id)) => {
            return Err(ServeError(format!(
                "key file {} is missing, and {store} is sealed with key ID {id}: \
                 restore that key file from your backup (or copy it from another host \
                 of the fleet)",
                path.display(),
            )))
        }
        _ => read_key(path)?,
    };
    if let Some(id) = stored {
        if id != key.id() {
            return Err(ServeError(format!(
                "key file {} holds key ID {}, but {store} is sealed with key ID {id}: \
                 use the right key file ({hint})",
                path.display(),
                key.id(),
            )));
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_keys_are_0400_read_back_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otpd.key");
        let key = create_key_file(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o400);
        assert_eq!(meta.len(), 65);
        assert_eq!(read_key(&path).unwrap().id(), key.id());
        let again = create_key_file(&path).unwrap_err();
        assert!(again.0.contains("already exists"), "{}", again.0);
        assert_eq!(read_key(&path).unwrap().id(), key.id());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn loose_or_junk_key_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        create_key_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o440)).unwrap();
        let e = read_key(&path).unwrap_err().0;
        assert!(
            e.contains("chmod 0400") && e.contains(&*path.to_string_lossy()),
            "{e}"
        );
        let junk = dir.path().join("junk");
        fs::write(&junk, "not a key\n").unwrap();
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o400)).unwrap();
        let e = read_key(&junk).unwrap_err().0;
        assert!(e.contains("64 hexadecimal digits"), "{e}");
    }

    #[test]
    fn a_missing_key_is_created_only_for_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            key_file: dir.path().join("otpd.key"),
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        let stored = RecordKey::from_bytes(&[3; KEY_LEN]).id();
        let e = load_key(&config, Some(stored)).unwrap_err().0;
        assert!(
            e.contains("is missing") && e.contains(&stored.to_string()),
            "{e}"
        );
        assert!(!config.key_file.exists());
        let key = load_key(&config, None).unwrap();
        assert!(config.key_file.exists());
        assert_eq!(load_key(&config, Some(key.id())).unwrap().id(), key.id());
        let e = load_key(&config, Some(stored)).unwrap_err().0;
        assert!(e.contains("holds key ID"), "{e}");
    }
}
