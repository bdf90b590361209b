//! The key files of an open repository: list, add, remove, change password.
//! Every key file wraps the same master key; removing one never touches data.

use crate::backend::{ObjectInfo, ObjectKind};
use crate::error::{Error, Result};
use crate::id::KeyId;
use crate::keys::{KdfParams, KeyFile, Password};
use crate::lock::{LockGuard, LockKind};
use crate::repo::Repository;

#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub id: KeyId,
    pub file: KeyFile,
    /// The key this repository handle was opened with.
    pub current: bool,
}

/// The usable key files. One that cannot be used (damaged, too large, kdf
/// parameters outside the bounds) is reported and left out, so that the
/// others can still be listed; [`remove`] can still remove it.
pub fn list(repo: &Repository) -> Result<Vec<KeyEntry>> {
    let mut out = Vec::new();
    for info in repo.backend().list(ObjectKind::Key)? {
        match read_entry(repo, &info) {
            Ok(entry) => out.push(entry),
            Err(e) => tracing::warn!("{e}; skipped"),
        }
    }
    out.sort_by_key(|k| k.file.created);
    Ok(out)
}

fn read_entry(repo: &Repository, info: &ObjectInfo) -> Result<KeyEntry> {
    let what = || format!("key file {}", info.name);
    let id = KeyId::from_hex(&info.name).map_err(|e| Error::corrupt(what(), e))?;
    if info.size > crate::keys::bounds::MAX_KEY_FILE {
        return Err(Error::corrupt(what(), format!("it has {} bytes", info.size)));
    }
    let bytes = repo.backend().read(ObjectKind::Key, &info.name)?;
    Ok(KeyEntry {
        id,
        file: KeyFile::from_bytes(&bytes, &info.name)?,
        current: id == repo.key_id(),
    })
}

/// Adds a key file for `password` (another way to open the same
/// repository), under a lock of `repo`.
pub fn add(repo: &Repository, password: &Password, params: KdfParams, lock: &LockGuard) -> Result<KeyId> {
    lock.proves(repo, LockKind::Shared)?;
    if repo.config().encryption == crate::crypto::Encryption::None {
        return Err(Error::InvalidArgument(
            "an unencrypted repository has no passwords".into(),
        ));
    }
    let file = KeyFile::create(repo.crypto().master_key(), Some(password), params)?;
    let bytes = file.to_bytes();
    let id = KeyId::hash_of(&bytes);
    repo.backend().write(ObjectKind::Key, &id.to_hex(), &bytes)?;
    Ok(id)
}

/// Removes the key file whose id starts with `prefix`. The key in use and
/// the last key are refused. Needs an exclusive lock: two removals at once
/// could each leave the other's key as the last one.
pub fn remove(repo: &Repository, prefix: &str, lock: &LockGuard) -> Result<KeyId> {
    lock.proves(repo, LockKind::Exclusive)?;
    // Matched against every key file name, usable or not: a damaged or
    // hostile key file must be removable.
    let names = repo.backend().list(ObjectKind::Key)?;
    let prefix = prefix.to_ascii_lowercase();
    let matches: Vec<&ObjectInfo> = names.iter().filter(|k| k.name.starts_with(&prefix)).collect();
    let info = match matches.as_slice() {
        [] => return Err(Error::InvalidArgument(format!("no key file matches '{prefix}'"))),
        [info] => *info,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "'{prefix}' matches {} key files",
                matches.len()
            )))
        }
    };
    let id = KeyId::from_hex(&info.name).map_err(|e| Error::corrupt(format!("key file {}", info.name), e))?;
    if id == repo.key_id() {
        return Err(Error::InvalidArgument(
            "this is the key you opened the repository with; open it with another password to remove this one".into(),
        ));
    }
    // The key in use is usable, so removing any other file never removes
    // the last usable key.
    repo.backend().delete(ObjectKind::Key, &info.name)?;
    Ok(id)
}

/// Replaces the current key file by one for `new_password`. The new file is
/// written before the old one is deleted, so a crash leaves both passwords
/// working, never neither.
pub fn change_password(
    repo: &Repository,
    new_password: &Password,
    params: KdfParams,
    lock: &LockGuard,
) -> Result<KeyId> {
    let id = add(repo, new_password, params, lock)?;
    crate::failpoint::hit("key-added");
    repo.backend().delete(ObjectKind::Key, &repo.key_id().to_hex())?;
    Ok(id)
}
