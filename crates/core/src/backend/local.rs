//! A repository in a local directory.
//!
//! Layout: `config`, `keys/<id>`, `data/<first 2 hex digits>/<pack id>`,
//! `index/<id>`, `snapshots/<id>`, `locks/<id>`. A write goes to a temporary
//! file beside its target, is fsynced, renamed into place, and the directory
//! is fsynced, so a crash leaves either the whole object or none (plus, at
//! worst, a `.tmp-` file that listing ignores).
//!
//! Permissions: objects are created 0600 and directories 0700 (restic's
//! choice), so other local users cannot copy the key files and attack the
//! password offline. A repository whose `config` is readable by its group
//! (shared on purpose, or made by an older snap with 0644) gets the group's
//! bits on new objects too, so every member can go on using it.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{Backend, BackendError, BackendResult, ObjectInfo, ObjectKind};

#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    /// Decided at the first write, from the config's permissions.
    modes: OnceLock<Modes>,
}

/// Permission bits of new objects and directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub file: u32,
    pub dir: u32,
}

impl Modes {
    /// A new repository: only the owner.
    pub const PRIVATE: Modes = Modes {
        file: 0o600,
        dir: 0o700,
    };

    /// The owner's bits, plus the group's read (and write) bits when the
    /// config grants them; never anything for other users.
    fn from_config_mode(mode: u32) -> Modes {
        let mut modes = Modes::PRIVATE;
        if mode & 0o040 != 0 {
            modes.file |= 0o040 | (mode & 0o020);
            modes.dir |= 0o050 | (mode & 0o020);
        }
        modes
    }
}

const TMP_PREFIX: &str = ".tmp-";

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            modes: OnceLock::new(),
        }
    }

    /// The permissions new objects get here.
    pub fn modes(&self) -> Modes {
        *self.modes.get_or_init(|| match fs::metadata(self.root.join("config")) {
            Ok(meta) => Modes::from_config_mode(meta.permissions().mode()),
            Err(_) => Modes::PRIVATE,
        })
    }

    fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        DirBuilder::new().recursive(true).mode(self.modes().dir).create(dir)
    }

    /// Writes `data` to a fresh temporary file in `dir`, fsynced, and
    /// returns its path.
    fn write_tmp(&self, dir: &Path, data: &[u8]) -> io::Result<PathBuf> {
        let mut tmp_name = [0u8; 8];
        crate::crypto::fill_random(&mut tmp_name);
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(tmp_name)));
        if let Err(e) = super::direct::create_synced_with_mode(&tmp, data, self.modes().file) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, kind: ObjectKind) -> PathBuf {
        match kind {
            ObjectKind::Config => self.root.clone(),
            ObjectKind::Key => self.root.join("keys"),
            ObjectKind::Pack => self.root.join("data"),
            ObjectKind::Index => self.root.join("index"),
            ObjectKind::Snapshot => self.root.join("snapshots"),
            ObjectKind::Lock => self.root.join("locks"),
        }
    }

    /// Where an object lives (format.md §4). The name is not checked here:
    /// callers outside this module (`snap serve`) validate it first.
    pub fn path(&self, kind: ObjectKind, name: &str) -> PathBuf {
        match kind {
            ObjectKind::Config => self.root.join("config"),
            ObjectKind::Pack => self.dir(kind).join(name.get(..2).unwrap_or("xx")).join(name),
            _ => self.dir(kind).join(name),
        }
    }

    fn io_err(op: &'static str, path: &Path, error: io::Error) -> BackendError {
        BackendError::Io {
            op,
            what: path.display().to_string(),
            error,
        }
    }

    fn not_found_or(kind: ObjectKind, name: &str, op: &'static str, path: &Path, e: io::Error) -> BackendError {
        if e.kind() == io::ErrorKind::NotFound {
            BackendError::NotFound {
                kind: kind.name(),
                name: name.to_string(),
            }
        } else {
            Self::io_err(op, path, e)
        }
    }
}

/// Names are hex ids (or "config"); refuse anything that could escape the directory.
fn check_name(name: &str) -> BackendResult<()> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(BackendError::Io {
            op: "use object name",
            what: name.to_string(),
            error: io::Error::new(io::ErrorKind::InvalidInput, "invalid object name"),
        });
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    /// One pack written at a time: a local write (and its fsync) keeps up
    /// with a 2-core backup on its own, and each pack in flight is 16 MiB
    /// more memory. A 2 GiB file's first backup peaked at 97-98 MiB with
    /// one and 109-115 MiB with two, in the same time (docs/design.md,
    /// "Memory of one large file").
    fn concurrency(&self) -> usize {
        1
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> BackendResult<()> {
        // A root that exists already (made by the user) keeps its mode: the
        // directories inside are private anyway.
        self.create_dirs(&self.root)
            .map_err(|e| Self::io_err("create", &self.root, e))?;
        for kind in [
            ObjectKind::Key,
            ObjectKind::Index,
            ObjectKind::Snapshot,
            ObjectKind::Lock,
        ] {
            let dir = self.dir(kind);
            self.create_dirs(&dir).map_err(|e| Self::io_err("create", &dir, e))?;
        }
        for prefix in 0..=255u8 {
            let dir = self.dir(ObjectKind::Pack).join(format!("{prefix:02x}"));
            self.create_dirs(&dir).map_err(|e| Self::io_err("create", &dir, e))?;
        }
        sync_dir(&self.root).map_err(|e| Self::io_err("sync", &self.root, e))
    }

    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
        check_name(name)?;
        let path = self.path(kind, name);
        fs::read(&path).map_err(|e| Self::not_found_or(kind, name, "read", &path, e))
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
        check_name(name)?;
        let path = self.path(kind, name);
        let file = File::open(&path).map_err(|e| Self::not_found_or(kind, name, "open", &path, e))?;
        let size = file.metadata().map_err(|e| Self::io_err("stat", &path, e))?.len();
        let end = offset.saturating_add(len);
        if end > size {
            return Err(BackendError::ShortRead {
                kind: kind.name(),
                name: name.to_string(),
                offset,
                end,
                size,
            });
        }
        // The length was checked against the file, so this cannot be a
        // hostile allocation.
        buf.resize(len as usize, 0);
        file.read_exact_at(buf, offset)
            .map_err(|e| Self::io_err("read", &path, e))
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        check_name(name)?;
        let path = self.path(kind, name);
        let dir = path.parent().expect("object paths have a parent").to_path_buf();
        if kind == ObjectKind::Pack {
            // Repositories made by `init` have all 256 pack directories; this
            // covers ones whose directories were removed by hand.
            self.create_dirs(&dir).map_err(|e| Self::io_err("create", &dir, e))?;
        }
        let tmp = self
            .write_tmp(&dir, data)
            .map_err(|e| Self::io_err("write", &path, e))?;
        let result = fs::rename(&tmp, &path).and_then(|()| sync_dir(&dir));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Self::io_err("write", &path, e));
        }
        Ok(())
    }

    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        check_name(name)?;
        let path = self.path(kind, name);
        let dir = path.parent().expect("object paths have a parent").to_path_buf();
        let tmp = self
            .write_tmp(&dir, data)
            .map_err(|e| Self::io_err("write", &path, e))?;
        // A hard link, unlike a rename, fails when the target exists: of
        // several writers exactly one succeeds, and the object still appears
        // whole or not at all.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(&dir).map_err(|e| Self::io_err("sync", &dir, e)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(BackendError::AlreadyExists {
                kind: kind.name(),
                name: name.to_string(),
            }),
            Err(e) => Err(Self::io_err("write", &path, e)),
        }
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        check_name(name)?;
        let path = self.path(kind, name);
        fs::remove_file(&path).map_err(|e| Self::not_found_or(kind, name, "delete", &path, e))
    }

    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        if kind == ObjectKind::Config {
            if let Ok(meta) = fs::metadata(self.path(kind, "config")) {
                out.push(ObjectInfo {
                    name: "config".into(),
                    size: meta.len(),
                });
            }
            return Ok(out);
        }
        let dir = self.dir(kind);
        let mut dirs = vec![dir.clone()];
        if kind == ObjectKind::Pack {
            dirs.clear();
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(Self::io_err("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Self::io_err("list", &dir, e))?;
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(entry.path());
                }
            }
        }
        for dir in dirs {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::io_err("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Self::io_err("list", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted between listing and stat (a released lock, a
                    // forgotten snapshot): it is simply not there any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Self::io_err("stat", &entry.path(), e)),
                };
                if meta.is_file() {
                    out.push(ObjectInfo { name, size: meta.len() });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        check_name(name)?;
        let path = self.path(kind, name);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::io_err("stat", &path, e)),
        }
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<std::time::SystemTime>> {
        check_name(name)?;
        let path = self.path(kind, name);
        let meta = fs::symlink_metadata(&path).map_err(|e| Self::not_found_or(kind, name, "stat", &path, e))?;
        Ok(meta.modified().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let name = "ab".repeat(32);
        backend.write(ObjectKind::Pack, &name, b"0123456789").unwrap();
        assert_eq!(backend.read(ObjectKind::Pack, &name).unwrap(), b"0123456789");
        assert_eq!(backend.read_range(ObjectKind::Pack, &name, 2, 3).unwrap(), b"234");
        assert!(matches!(
            backend.read_range(ObjectKind::Pack, &name, 8, 3),
            Err(BackendError::ShortRead { .. })
        ));
        let listed = backend.list(ObjectKind::Pack).unwrap();
        assert_eq!(
            listed,
            vec![ObjectInfo {
                name: name.clone(),
                size: 10
            }]
        );
        backend.delete(ObjectKind::Pack, &name).unwrap();
        assert!(backend.read(ObjectKind::Pack, &name).unwrap_err().is_not_found());
        assert!(backend.read(ObjectKind::Index, "../config").is_err());
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        backend.write_new(ObjectKind::Config, "config", b"first").unwrap();
        assert!(matches!(
            backend.write_new(ObjectKind::Config, "config", b"second"),
            Err(BackendError::AlreadyExists { .. })
        ));
        assert_eq!(backend.read(ObjectKind::Config, "config").unwrap(), b"first");
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(backend.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().starts_with(TMP_PREFIX)),
            "{names:?}"
        );
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_objects_and_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        backend.write_new(ObjectKind::Config, "config", b"{}").unwrap();
        backend.write(ObjectKind::Key, &"cd".repeat(32), b"key").unwrap();
        // Large enough for the O_DIRECT path.
        backend
            .write(ObjectKind::Pack, &"ab".repeat(32), &vec![7u8; 3 << 20])
            .unwrap();
        let root = backend.root();
        assert_eq!(mode_of(root), 0o700);
        for d in ["keys", "data", "data/ab", "index", "snapshots", "locks"] {
            assert_eq!(mode_of(&root.join(d)), 0o700, "{d}");
        }
        assert_eq!(mode_of(&root.join("config")), 0o600);
        assert_eq!(mode_of(&root.join("keys").join("cd".repeat(32))), 0o600);
        assert_eq!(mode_of(&root.join("data/ab").join("ab".repeat(32))), 0o600);
    }

    /// A repository shared with its group (config 0640 or 0660, or 0644 from
    /// an older snap) keeps its group's access to new objects; other users
    /// never get any.
    #[test]
    fn a_group_readable_repository_stays_group_readable() {
        assert_eq!(Modes::from_config_mode(0o600), Modes::PRIVATE);
        assert_eq!(
            Modes::from_config_mode(0o644),
            Modes {
                file: 0o640,
                dir: 0o750
            }
        );
        assert_eq!(
            Modes::from_config_mode(0o660),
            Modes {
                file: 0o660,
                dir: 0o770
            }
        );
    }
}
