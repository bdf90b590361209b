//! A repository in a local directory.
//!
//! Layout: `config`, `keys/<id>`, `data/<first 2 hex digits>/<pack id>`,
//! `index/<id>`, `snapshots/<id>`, `locks/<id>`. A write goes to a temporary
//! file beside its target, is fsynced, renamed into place, and the directory
//! is fsynced, so a crash leaves either the whole object or none (plus, at
//! worst, a `.tmp-` file that listing ignores).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Backend, BackendError, BackendResult, ObjectInfo, ObjectKind};

#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

const TMP_PREFIX: &str = ".tmp-";

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
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

    fn path(&self, kind: ObjectKind, name: &str) -> PathBuf {
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
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> BackendResult<()> {
        fs::create_dir_all(&self.root).map_err(|e| Self::io_err("create", &self.root, e))?;
        for kind in [
            ObjectKind::Key,
            ObjectKind::Index,
            ObjectKind::Snapshot,
            ObjectKind::Lock,
        ] {
            let dir = self.dir(kind);
            fs::create_dir_all(&dir).map_err(|e| Self::io_err("create", &dir, e))?;
        }
        for prefix in 0..=255u8 {
            let dir = self.dir(ObjectKind::Pack).join(format!("{prefix:02x}"));
            fs::create_dir_all(&dir).map_err(|e| Self::io_err("create", &dir, e))?;
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
            fs::create_dir_all(&dir).map_err(|e| Self::io_err("create", &dir, e))?;
        }
        let mut tmp_name = [0u8; 8];
        crate::crypto::fill_random(&mut tmp_name);
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(tmp_name)));
        let result = (|| {
            super::direct::create_synced(&tmp, data)?;
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Self::io_err("write", &path, e));
        }
        Ok(())
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
}
