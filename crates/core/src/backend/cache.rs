//! A backend wrapper that keeps a local copy of immutable objects whose
//! name is the BLAKE3 hash of their bytes (snapshots and index files), so
//! that listing the snapshots of a remote repository reads each snapshot
//! once per machine, not once per command.
//!
//! Nothing is trusted for being in the cache: a cached copy is used only if
//! its bytes hash to its name, so a damaged or planted file is noticed,
//! removed, and fetched again. The repository stays the truth:
//! - `list` always asks the backend, and drops cached copies of objects it
//!   no longer lists (deleted by `forget` or `prune` on another host);
//! - `delete` removes the object from both;
//! - writes go to the backend first and are then kept;
//! - the cache never makes a request fail: a cache that cannot be read or
//!   written is skipped with a message.
//!
//! Other kinds (packs, keys, locks, the config) pass through. Verify and
//! repair, which judge the repository's own copies, use the backend under
//! this wrapper (`Repository::without_cache`).

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Backend, BackendResult, ObjectInfo, ObjectKind};

/// Keeps local copies of snapshots and index files in a directory.
#[derive(Debug)]
pub struct CacheBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
}

/// Whether objects of this kind are cached: immutable and content-named.
fn cached(kind: ObjectKind) -> bool {
    matches!(kind, ObjectKind::Snapshot | ObjectKind::Index)
}

/// Whether `bytes` are the object named `name` (its hex BLAKE3 hash).
fn matches_name(name: &str, bytes: &[u8]) -> bool {
    blake3::hash(bytes).to_hex().as_str() == name
}

/// Whether `name` can be a file name in the cache: a hex id, never a path.
fn valid_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl CacheBackend {
    /// Caches under `dir` (created on first use), one subdirectory per kind.
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> Self {
        CacheBackend { inner, dir }
    }

    /// The backend under the cache.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    fn path(&self, kind: ObjectKind, name: &str) -> Option<PathBuf> {
        (cached(kind) && valid_name(name)).then(|| self.dir.join(kind.name()).join(name))
    }

    /// The cached copy, if there is one and it is whole.
    fn load(&self, kind: ObjectKind, name: &str, path: &Path) -> Option<Vec<u8>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cannot read cached {} {name} ({e}); asking the repository", kind.name());
                return None;
            }
        };
        if matches_name(name, &bytes) {
            return Some(bytes);
        }
        tracing::warn!(
            "cached {} {name} is damaged (its bytes do not match its name); fetching it again",
            kind.name()
        );
        let _ = std::fs::remove_file(path);
        None
    }

    /// Keeps `bytes` if they are the object: written to a temporary file and
    /// renamed, so a reader never sees half of one.
    fn store(&self, kind: ObjectKind, name: &str, path: &Path, bytes: &[u8]) {
        if !matches_name(name, bytes) {
            // Damaged in the repository: the caller's checks will say so;
            // keeping it would only hide the damage for longer.
            return;
        }
        let result = (|| -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(&self.dir);
            // Private, as the rest of the cache: the names and sizes of
            // snapshots are nobody else's business (the files are 0600).
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(bytes)?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::debug!("cannot keep {} {name} in the cache: {e}", kind.name());
        }
    }

    fn forget(&self, path: &Path) {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {} from the cache: {e}", path.display()),
        }
    }

    /// Removes cached objects of `kind` that the repository no longer lists.
    fn prune_unlisted(&self, kind: ObjectKind, listed: &[ObjectInfo]) {
        let dir = self.dir.join(kind.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let listed: std::collections::HashSet<&str> = listed.iter().map(|i| i.name.as_str()).collect();
        for entry in entries.flatten() {
            let name = entry.file_name();
            match name.to_str() {
                Some(name) if listed.contains(name) => {}
                // Not listed, or a leftover temporary file.
                _ => self.forget(&entry.path()),
            }
        }
    }
}

impl Backend for CacheBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
    fn append_only(&self) -> bool {
        self.inner.append_only()
    }

    fn create(&self) -> BackendResult<()> {
        self.inner.create()
    }

    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
        let Some(path) = self.path(kind, name) else {
            return self.inner.read(kind, name);
        };
        if let Some(bytes) = self.load(kind, name, &path) {
            return Ok(bytes);
        }
        let bytes = self.inner.read(kind, name)?;
        self.store(kind, name, &path, &bytes);
        Ok(bytes)
    }

    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_range_into(kind, name, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> BackendResult<()> {
        if let Some(path) = self.path(kind, name) {
            if let Some(bytes) = self.load(kind, name, &path) {
                let end = offset.checked_add(len).filter(|&end| end <= bytes.len() as u64);
                if let Some(end) = end {
                    buf.clear();
                    buf.extend_from_slice(&bytes[offset as usize..end as usize]);
                    return Ok(());
                }
                // Out of range: the backend gives the proper error.
            }
        }
        self.inner.read_range_into(kind, name, offset, len, buf)
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.write(kind, name, data)?;
        if let Some(path) = self.path(kind, name) {
            self.store(kind, name, &path, data);
        }
        Ok(())
    }

    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.write_new(kind, name, data)?;
        if let Some(path) = self.path(kind, name) {
            self.store(kind, name, &path, data);
        }
        Ok(())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        // The cached copy goes first: were it left after the object is
        // gone, a read by name would still find it.
        if let Some(path) = self.path(kind, name) {
            self.forget(&path);
        }
        self.inner.delete(kind, name)
    }

    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        let listed = self.inner.list(kind)?;
        if cached(kind) {
            self.prune_unlisted(kind, &listed);
        }
        Ok(listed)
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        self.inner.exists(kind, name)
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<std::time::SystemTime>> {
        self.inner.modified(kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::counting::{CountingBackend, RequestCounts, RequestOp};
    use crate::backend::LocalBackend;

    struct Setup {
        dir: tempfile::TempDir,
        local: Arc<dyn Backend>,
        counts: Arc<RequestCounts>,
        cache: CacheBackend,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
        local.create().unwrap();
        let counts = Arc::new(RequestCounts::new());
        let counting = Arc::new(CountingBackend::new(local.clone(), counts.clone()));
        let cache = CacheBackend::new(counting, dir.path().join("cache"));
        Setup {
            dir,
            local,
            counts,
            cache,
        }
    }

    fn name_of(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    fn reads(s: &Setup, kind: ObjectKind) -> u64 {
        s.counts.stats().get(kind, RequestOp::Read)
    }

    #[test]
    fn a_second_read_is_served_from_the_cache() {
        let s = setup();
        let bytes = b"snapshot bytes".to_vec();
        let name = name_of(&bytes);
        s.local.write(ObjectKind::Snapshot, &name, &bytes).unwrap();
        assert_eq!(s.cache.read(ObjectKind::Snapshot, &name).unwrap(), bytes);
        assert_eq!(s.cache.read(ObjectKind::Snapshot, &name).unwrap(), bytes);
        assert_eq!(
            s.cache.read_range(ObjectKind::Snapshot, &name, 2, 3).unwrap(),
            &bytes[2..5]
        );
        assert_eq!(reads(&s, ObjectKind::Snapshot), 1);
        // A written object is kept at once.
        let other = b"index bytes".to_vec();
        let other_name = name_of(&other);
        s.cache.write(ObjectKind::Index, &other_name, &other).unwrap();
        assert_eq!(s.cache.read(ObjectKind::Index, &other_name).unwrap(), other);
        assert_eq!(reads(&s, ObjectKind::Index), 0);
    }

    #[test]
    fn a_damaged_cache_file_is_noticed_and_repaired() {
        let s = setup();
        let bytes = b"snapshot bytes".to_vec();
        let name = name_of(&bytes);
        s.local.write(ObjectKind::Snapshot, &name, &bytes).unwrap();
        s.cache.read(ObjectKind::Snapshot, &name).unwrap();
        let path = s.dir.path().join("cache/snapshot").join(&name);
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[3] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(s.cache.read(ObjectKind::Snapshot, &name).unwrap(), bytes);
        assert_eq!(reads(&s, ObjectKind::Snapshot), 2, "fetched again");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "cache file repaired");
    }

    #[test]
    fn a_damaged_object_in_the_repository_is_not_kept() {
        let s = setup();
        let name = name_of(b"the real bytes");
        s.local.write(ObjectKind::Snapshot, &name, b"other bytes").unwrap();
        assert_eq!(s.cache.read(ObjectKind::Snapshot, &name).unwrap(), b"other bytes");
        assert!(!s.dir.path().join("cache/snapshot").join(&name).exists());
    }

    #[test]
    fn list_and_delete_drop_cached_copies() {
        let s = setup();
        let (a, b) = (b"a".to_vec(), b"b".to_vec());
        let (na, nb) = (name_of(&a), name_of(&b));
        s.cache.write(ObjectKind::Snapshot, &na, &a).unwrap();
        s.cache.write(ObjectKind::Snapshot, &nb, &b).unwrap();
        // Deleted by another host: the next list drops it.
        s.local.delete(ObjectKind::Snapshot, &na).unwrap();
        let listed = s.cache.list(ObjectKind::Snapshot).unwrap();
        assert_eq!(listed.len(), 1);
        let cached = s.dir.path().join("cache/snapshot");
        assert!(!cached.join(&na).exists());
        assert!(cached.join(&nb).exists());
        s.cache.delete(ObjectKind::Snapshot, &nb).unwrap();
        assert!(!cached.join(&nb).exists());
        assert!(s.cache.read(ObjectKind::Snapshot, &nb).unwrap_err().is_not_found());
    }

    #[test]
    fn other_kinds_and_odd_names_pass_through() {
        let s = setup();
        let bytes = b"pack".to_vec();
        let name = name_of(&bytes);
        s.cache.write(ObjectKind::Pack, &name, &bytes).unwrap();
        s.cache.read(ObjectKind::Pack, &name).unwrap();
        s.cache.read(ObjectKind::Pack, &name).unwrap();
        assert_eq!(reads(&s, ObjectKind::Pack), 2);
        assert!(!s.dir.path().join("cache/pack").exists());
        assert!(s.cache.read(ObjectKind::Snapshot, "../../etc").is_err());
        assert!(!s.dir.path().join("cache/snapshot").exists());
    }
}
