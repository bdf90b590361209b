//! Snapshot records: when, where from, which paths, and the root tree.
//! Stored as sealed JSON under `snapshots/<BLAKE3 of the stored bytes>`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;

/// What a backup did, stored with its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    /// Files and directories that could not be read and are missing from the snapshot.
    pub errors: u64,
    /// Bytes of file content read from disk (unchanged files are not read).
    pub bytes_read: u64,
    /// Total size of the files in the snapshot.
    pub bytes_total: u64,
    /// Blobs stored by this backup (not already in the repository).
    pub blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_added_raw: u64,
    /// Bytes of pack files written to the repository.
    pub bytes_added_stored: u64,
    pub duration_seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: jiff::Timestamp,
    pub host: String,
    pub username: String,
    /// Absolute source paths as given (lossy UTF-8 for display).
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub tree: BlobId,
    pub parent: Option<SnapshotId>,
    pub program_version: String,
    pub summary: Summary,
}

impl Snapshot {
    pub fn save(&self, repo: &Repository) -> Result<SnapshotId> {
        let json = serde_json::to_vec(self).expect("snapshot encodes");
        let bytes = repo.crypto().seal(&json);
        let id = SnapshotId::hash_of(&bytes);
        repo.backend().write(ObjectKind::Snapshot, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    pub fn load(repo: &Repository, id: &SnapshotId) -> Result<Self> {
        let bytes = repo.backend().read(ObjectKind::Snapshot, &id.to_hex())?;
        let what = || format!("snapshot {id}");
        if SnapshotId::hash_of(&bytes) != *id {
            return Err(Error::corrupt(what(), "its content does not match its name"));
        }
        let json = repo.crypto().open(&bytes).map_err(|e| Error::corrupt(what(), e))?;
        Self::from_json(&json).map_err(|e| Error::corrupt(what(), e))
    }

    /// Parses the opened JSON of a snapshot object.
    pub fn from_json(json: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Sorted paths, for grouping and parent selection.
    pub fn sorted_paths(&self) -> Vec<String> {
        let mut paths = self.paths.clone();
        paths.sort();
        paths
    }
}

/// Every snapshot in the repository, oldest first.
pub fn list(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let names = repo.backend().list(ObjectKind::Snapshot)?;
    let loaded = names
        .par_iter()
        .filter_map(|info| SnapshotId::from_hex(&info.name).ok())
        .map(|id| (id, Snapshot::load(repo, &id)))
        .collect::<Vec<_>>();
    let mut all = Vec::with_capacity(loaded.len());
    for (id, result) in loaded {
        match result {
            Ok(snapshot) => all.push((id, snapshot)),
            // Forgotten by another process after the listing.
            Err(Error::Backend(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(all)
}

/// Finds a snapshot by `latest`, a full id, or a unique id prefix.
pub fn find(repo: &Repository, spec: &str) -> Result<(SnapshotId, Snapshot)> {
    if spec == "latest" {
        return list(repo)?.pop().ok_or_else(|| Error::SnapshotNotFound(spec.into()));
    }
    let spec_lower = spec.to_ascii_lowercase();
    if spec_lower.is_empty() || !spec_lower.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::SnapshotNotFound(spec.into()));
    }
    let matches: Vec<SnapshotId> = repo
        .backend()
        .list(ObjectKind::Snapshot)?
        .into_iter()
        .filter(|o| o.name.starts_with(&spec_lower))
        .filter_map(|o| SnapshotId::from_hex(&o.name).ok())
        .collect();
    match matches.as_slice() {
        [] => Err(Error::SnapshotNotFound(spec.into())),
        [id] => Ok((*id, Snapshot::load(repo, id)?)),
        _ => Err(Error::AmbiguousSnapshot {
            prefix: spec.into(),
            count: matches.len(),
        }),
    }
}

/// The newest snapshot of `host` with exactly these paths (the default parent).
pub fn latest_matching(repo: &Repository, host: &str, paths: &[String]) -> Result<Option<(SnapshotId, Snapshot)>> {
    let mut wanted = paths.to_vec();
    wanted.sort();
    Ok(list(repo)?
        .into_iter()
        .rfind(|(_, s)| s.host == host && s.sorted_paths() == wanted))
}

/// This machine's host name.
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// The current user's name, or the uid when it has none.
pub fn username() -> String {
    uzers::get_current_username()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| uzers::get_current_uid().to_string())
}
