//! Snapshot records: when, where from, which paths, and the root tree.
//! Stored as sealed JSON under `snapshots/<BLAKE3 of the stored bytes>`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::lock::{LockGuard, LockKind};
use crate::repo::Repository;

/// What a backup did, stored with its snapshot. Every field may be absent
/// on read (0): a snapshot written without one (by another writer, or a
/// future one that drops a counter) still opens.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Files left out by `--exclude-larger-than` (absent in older snapshots).
    #[serde(default)]
    pub files_too_large: u64,
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
    /// Absent on read: all zeros, shown as `-` (see [`Summary::is_known`]).
    #[serde(default)]
    pub summary: Summary,
    /// Free text given with `create --description`. Absent from the stored
    /// JSON when there is none, so a snapshot without one is stored exactly
    /// as before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Set when `snap tag` rewrote the snapshot: the id it had when the
    /// backup wrote it (kept through every later rewrite), as restic's
    /// `original`. Absent when never rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

impl Summary {
    /// False for a snapshot stored without a summary (it reads as all
    /// zeros). A backup always counts at least its root directory.
    pub fn is_known(&self) -> bool {
        *self != Summary::default()
    }

    /// Files in the snapshot: new, changed and unmodified ones.
    pub fn files(&self) -> u64 {
        self.files_new + self.files_changed + self.files_unmodified
    }
}

impl Snapshot {
    pub fn save(&self, repo: &Repository) -> Result<SnapshotId> {
        let (id, bytes) = self.seal(repo);
        repo.backend().write(ObjectKind::Snapshot, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// The stored form and its id, without writing it (a dry run's id).
    pub fn seal(&self, repo: &Repository) -> (SnapshotId, Vec<u8>) {
        let json = serde_json::to_vec(self).expect("snapshot encodes");
        let bytes = repo.crypto().seal(&json);
        (SnapshotId::hash_of(&bytes), bytes)
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

/// The stable JSON form of a snapshot with its id (`snap snapshots --json`,
/// `snap create --json`).
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotJson<'a> {
    pub id: String,
    pub short_id: String,
    pub time: String,
    pub host: &'a str,
    pub username: &'a str,
    pub paths: &'a [String],
    pub tags: &'a [String],
    pub tree: String,
    pub parent: Option<String>,
    pub program_version: &'a str,
    /// A partial snapshot of an interrupted backup (tagged `checkpoint`).
    pub checkpoint: bool,
    pub summary: &'a Summary,
    /// `null` when the snapshot has none.
    pub description: Option<&'a str>,
    /// The id the snapshot had before `snap tag` rewrote it; `null` when never rewritten.
    pub original: Option<String>,
}

impl<'a> SnapshotJson<'a> {
    pub fn new(id: &SnapshotId, s: &'a Snapshot) -> Self {
        SnapshotJson {
            id: id.to_hex(),
            short_id: id.short(),
            time: s.time.to_string(),
            host: &s.host,
            username: &s.username,
            paths: &s.paths,
            tags: &s.tags,
            tree: s.tree.to_hex(),
            parent: s.parent.map(|p| p.to_hex()),
            program_version: &s.program_version,
            checkpoint: s.is_checkpoint(),
            summary: &s.summary,
            description: s.description.as_deref(),
            original: s.original.map(|o| o.to_hex()),
        }
    }
}

/// Tag of checkpoint snapshots: the finished files of a backup that has not
/// completed yet (see `archiver`). Reserved: a backup may not be given it.
pub const CHECKPOINT_TAG: &str = "checkpoint";

impl Snapshot {
    /// A partial snapshot written while a backup runs, so an interrupted one
    /// can resume. Never `latest`, never counted by a retention policy.
    pub fn is_checkpoint(&self) -> bool {
        self.tags.iter().any(|t| t == CHECKPOINT_TAG)
    }

    /// True when the snapshot holds `path` (absolute, normalized): it is one
    /// of the snapshot's source paths, lies below one, or is a directory above
    /// one (recorded as a parent of it).
    pub fn holds_path(&self, path: &Path) -> bool {
        self.paths.iter().any(|p| {
            let p = Path::new(p);
            path.starts_with(p) || p.starts_with(path)
        })
    }
}

/// A file in `snapshots/` that cannot be read as a snapshot. It is left out
/// of [`list`] so one damaged object does not stop the commands that do not
/// need it; `verify` lists it and `repair snapshots` removes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedSnapshot {
    /// The object's name in `snapshots/`.
    pub name: String,
    pub reason: String,
}

/// Every readable snapshot (oldest first) and the damaged objects.
#[derive(Debug, Default)]
pub struct Listing {
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    pub damaged: Vec<DamagedSnapshot>,
}

/// Reads every object in `snapshots/`. Damaged ones (content that does not
/// match the name, cannot be opened or decoded, or a name that is not an id)
/// are returned apart; storage errors still fail.
pub fn list_all(repo: &Repository) -> Result<Listing> {
    let names = repo.backend().list(ObjectKind::Snapshot)?;
    let loaded = names
        .par_iter()
        .map(|info| match SnapshotId::from_hex(&info.name) {
            Ok(id) => (info.name.clone(), Some(id), Snapshot::load(repo, &id)),
            Err(e) => (
                info.name.clone(),
                None,
                Err(Error::corrupt(
                    format!("snapshot {}", info.name),
                    format!("its name is not a snapshot id ({e})"),
                )),
            ),
        })
        .collect::<Vec<_>>();
    let mut listing = Listing::default();
    for (name, id, result) in loaded {
        match (id, result) {
            (Some(id), Ok(snapshot)) => listing.snapshots.push((id, snapshot)),
            // Forgotten by another process after the listing.
            (_, Err(Error::Backend(e))) if e.is_not_found() => {}
            (_, Err(Error::Corrupt { reason, .. })) => listing.damaged.push(DamagedSnapshot { name, reason }),
            (_, Err(e)) => return Err(e),
            (None, Ok(_)) => unreachable!("only a parsed id is loaded"),
        }
    }
    listing
        .snapshots
        .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    listing.damaged.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listing)
}

/// The ids of the snapshots the repository holds now, without reading
/// them (names that are not ids are left out: [`list_all`] reports those),
/// so a caller that keeps the snapshots it read can load only new ones (a
/// snapshot object never changes: its name is the hash of its content).
pub fn ids(repo: &Repository) -> Result<Vec<SnapshotId>> {
    let names = repo.backend().list(ObjectKind::Snapshot)?;
    Ok(names
        .iter()
        .filter_map(|i| SnapshotId::from_hex(&i.name).ok())
        .collect())
}

/// Reads `ids` in parallel, in no particular order. Snapshots gone since
/// the listing (forgotten by another process) are left out, and so are
/// damaged ones, with a warning as in [`list`]; storage errors still fail.
pub fn load_many(repo: &Repository, ids: &[SnapshotId]) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let loaded = ids
        .par_iter()
        .map(|id| (*id, Snapshot::load(repo, id)))
        .collect::<Vec<_>>();
    let mut out = Vec::with_capacity(loaded.len());
    for (id, result) in loaded {
        match result {
            Ok(snapshot) => out.push((id, snapshot)),
            Err(Error::Backend(e)) if e.is_not_found() => {}
            Err(Error::Corrupt { reason, .. }) => tracing::warn!(
                "snapshot {} is damaged and left out: {reason} (`snap repair snapshots` removes it)",
                id.to_hex()
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Every readable snapshot in the repository, oldest first. Damaged snapshot
/// objects are left out with a warning (see [`list_all`]).
pub fn list(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let listing = list_all(repo)?;
    for d in &listing.damaged {
        tracing::warn!(
            "snapshot {} is damaged and left out: {} (`snap repair snapshots` removes it)",
            d.name,
            d.reason
        );
    }
    Ok(listing.snapshots)
}

/// The readable snapshots `filter` matches, oldest first (see [`list`]).
pub fn list_matching(repo: &Repository, filter: &Filter) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut all = list(repo)?;
    all.retain(|(_, s)| filter.matches(s));
    Ok(all)
}

/// Removes a snapshot (`forget`), under `repo`'s exclusive lock: what it
/// referenced stays until a prune. One already gone is not an error.
pub fn delete(repo: &Repository, id: &SnapshotId, lock: &LockGuard) -> Result<()> {
    lock.proves(repo, LockKind::Exclusive)?;
    match repo.backend().delete(ObjectKind::Snapshot, &id.to_hex()) {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// How `snap tag` changes a snapshot's tags: `set` (when given) replaces
/// them, then `add` and `remove` apply, in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagChange {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags after the change, each once, in the order first met.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let start = self.set.as_deref().unwrap_or(tags);
        for tag in start.iter().chain(&self.add) {
            if !tag.is_empty() && !self.remove.contains(tag) && !out.contains(tag) {
                out.push(tag.clone());
            }
        }
        out
    }
}

/// Changes the tags of snapshot `id`, under `repo`'s exclusive lock. A
/// snapshot is named by the hash of its bytes, so it is rewritten: the new
/// object (with `original` naming the id the backup gave it) is written
/// before the old one is deleted; an interruption in between leaves both,
/// never neither. `Ok(None)` when the tags are already as asked (nothing is
/// written). The `checkpoint` tag can be neither given nor taken away: it
/// says whether a snapshot is partial.
pub fn retag(
    repo: &Repository,
    id: &SnapshotId,
    change: &TagChange,
    lock: &LockGuard,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    lock.proves(repo, LockKind::Exclusive)?;
    let old = Snapshot::load(repo, id)?;
    let tags = change.apply(&old.tags);
    let was_checkpoint = old.is_checkpoint();
    if was_checkpoint != tags.iter().any(|t| t == CHECKPOINT_TAG) {
        return Err(Error::InvalidArgument(format!(
            "the tag '{CHECKPOINT_TAG}' marks the partial snapshots of interrupted backups; it cannot be {}",
            if was_checkpoint { "removed" } else { "added" }
        )));
    }
    if tags == old.tags {
        return Ok(None);
    }
    let new = Snapshot {
        tags,
        original: old.original.or(Some(*id)),
        ..old
    };
    lock.check()?;
    let new_id = new.save(repo)?;
    crate::failpoint::hit("retag-written");
    match repo.backend().delete(ObjectKind::Snapshot, &id.to_hex()) {
        Err(e) if !e.is_not_found() => return Err(e.into()),
        _ => {}
    }
    Ok(Some((new_id, new)))
}

/// Deletes the damaged objects in `snapshots/` (see [`list_all`]), or only
/// names them on a dry run. Their content is lost already: what they
/// referenced cannot be found from them. Needs `repo`'s exclusive lock.
pub fn remove_damaged(repo: &Repository, dry_run: bool, lock: &LockGuard) -> Result<Vec<DamagedSnapshot>> {
    lock.proves(repo, LockKind::Exclusive)?;
    // Damage is judged on the repository's copies, past the local cache.
    let repo = &repo.without_cache();
    let damaged = list_all(repo)?.damaged;
    if !dry_run {
        for d in &damaged {
            match repo.backend().delete(ObjectKind::Snapshot, &d.name) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(damaged)
}

/// Which snapshots `latest` may name, as restic's `--host`, `--path` and
/// `--tag`. An empty filter matches every snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub host: Option<String>,
    /// Absolute, normalized paths the snapshot must hold (all of them; see
    /// [`Snapshot::holds_path`]).
    pub paths: Vec<PathBuf>,
    /// Tags the snapshot must have (all of them).
    pub tags: Vec<String>,
    /// `latest` (and `latest~N`) count only snapshots not after this time.
    /// Not part of [`Filter::matches`]: it chooses among matches.
    pub as_of: Option<jiff::Timestamp>,
}

impl Filter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| &s.host == h)
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.holds_path(p))
    }
}

/// Finds a snapshot by `latest`, a full id, or a unique id prefix.
pub fn find(repo: &Repository, spec: &str) -> Result<(SnapshotId, Snapshot)> {
    find_in(repo, spec, &Filter::default())
}

/// Finds a snapshot by `latest` (the newest complete snapshot that `filter`
/// matches and not after its `as_of`; never a checkpoint, and never a
/// restore's safety snapshot unless the filter asks for its tag),
/// `latest~N` (the N-th before that one), a full id, or a unique id prefix
/// (an id names its snapshot whatever the filter).
pub fn find_in(repo: &Repository, spec: &str, filter: &Filter) -> Result<(SnapshotId, Snapshot)> {
    if let Some(back) = latest_offset(spec)? {
        let mut candidates: Vec<(SnapshotId, Snapshot)> = list(repo)?
            .into_iter()
            .filter(|(_, s)| {
                !s.is_checkpoint()
                    && filter.matches(s)
                    && filter.as_of.is_none_or(|t| s.time <= t)
                    && (!s.tags.iter().any(|t| t == SAFETY_TAG) || filter.tags.iter().any(|t| t == SAFETY_TAG))
            })
            .collect();
        let wanted = candidates.len().checked_sub(back + 1);
        return match wanted {
            Some(i) => Ok(candidates.swap_remove(i)),
            None => Err(Error::SnapshotNotFound(describe_latest(spec, filter))),
        };
    }
    if filter.as_of.is_some() {
        return Err(Error::InvalidArgument(format!(
            "--as-of chooses among `latest` snapshots; '{spec}' names one already"
        )));
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

/// Tag of the snapshots a restore takes of what it replaces (see
/// `restorer`): not `latest`, unless asked for by tag.
pub const SAFETY_TAG: &str = "pre-restore";

/// `latest` is 0, `latest~N` is N; `None` for anything else.
fn latest_offset(spec: &str) -> Result<Option<usize>> {
    if spec == "latest" {
        return Ok(Some(0));
    }
    match spec.strip_prefix("latest~") {
        None => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|_| {
            Error::InvalidArgument(format!(
                "'{spec}': after `latest~` comes a number of snapshots to go back"
            ))
        }),
    }
}

/// Splits `SNAPSHOT:PATH` (a subtree of a snapshot) into its parts. A
/// snapshot spec (`latest`, `latest~N`, a hex id) has no colon.
pub fn split_subtree(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((snapshot, path)) => (snapshot, Some(path)),
        None => (spec, None),
    }
}

/// `latest` with the filter spelled out, for "no snapshot matches ...".
fn describe_latest(spec: &str, filter: &Filter) -> String {
    let mut out = spec.to_string();
    if let Some(host) = &filter.host {
        out.push_str(&format!(" --host {host}"));
    }
    for path in &filter.paths {
        out.push_str(&format!(" --path {}", path.display()));
    }
    for tag in &filter.tags {
        out.push_str(&format!(" --tag {tag}"));
    }
    if let Some(t) = &filter.as_of {
        out.push_str(&format!(" --as-of {t}"));
    }
    out
}

/// The newest snapshot of `host` with exactly these paths (the default
/// parent). A checkpoint qualifies: resuming from it skips the files an
/// interrupted backup finished.
pub fn latest_matching(repo: &Repository, host: &str, paths: &[String]) -> Result<Option<(SnapshotId, Snapshot)>> {
    let mut wanted = paths.to_vec();
    wanted.sort();
    Ok(list(repo)?
        .into_iter()
        .rfind(|(_, s)| s.host == host && s.sorted_paths() == wanted))
}

/// A path as `create` records it: relative paths are taken from the working
/// directory, `.` and `..` are removed lexically. Used wherever the user
/// names a source path (`ls`, `restore --path`, `--path` filters).
pub fn source_path(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::Normal(n) => clean.push(n),
            _ => {}
        }
    }
    Ok(clean)
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

/// The last step before a snapshot is written (by a backup or a copy): it may only refer to what
/// the repository still holds. A prune that took the backup's lock as stale
/// (or ran after `snap unlock --remove-all`) may have deleted blobs the
/// backup reused from the index; a snapshot over them could not be restored.
/// So: the lock was never lost ([`LockGuard::check`]), and if any index file
/// that existed when it was taken is gone, every blob under `root` is looked
/// up in the freshly synced index (rare, so the walk's cost is paid only then).
pub(crate) fn check_before_save(repo: &Repository, lock: &LockGuard, root: &BlobId) -> Result<()> {
    lock.check()?;
    if !lock.index_files_removed()? {
        return Ok(());
    }
    repo.sync_index()?;
    let index = repo.index()?.reader()?;
    let missing = std::sync::atomic::AtomicU64::new(0);
    crate::tree::walk_trees(
        repo,
        &[*root],
        &mut |_, tree, _| {
            for node in &tree.nodes {
                for blob in &node.content {
                    if index.lookup(blob)?.is_none() {
                        missing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        },
        &mut |_, _, _| {
            missing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        },
    )?;
    let missing = missing.into_inner();
    if missing > 0 {
        return Err(Error::BlobsRemoved { missing });
    }
    lock.check()
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    const WITHOUT_SUMMARY: &str = r#"{"time":"2026-01-02T03:04:05Z","host":"h","username":"u",
        "paths":["/data"],"tree":"0000000000000000000000000000000000000000000000000000000000000000",
        "parent":null,"program_version":"other 1.0"}"#;

    #[test]
    fn a_snapshot_without_summary_opens_with_an_unknown_one() {
        let s = Snapshot::from_json(WITHOUT_SUMMARY.as_bytes()).expect("opens");
        assert!(!s.summary.is_known());
        assert_eq!(s.summary.files(), 0);
    }

    #[test]
    fn a_partial_summary_keeps_its_fields() {
        let json = WITHOUT_SUMMARY.replace(
            r#""parent":null"#,
            r#""parent":null,"summary":{"files_new":2,"files_unmodified":3,"bytes_total":9}"#,
        );
        let s = Snapshot::from_json(json.as_bytes()).expect("opens");
        assert!(s.summary.is_known());
        assert_eq!(s.summary.files(), 5);
        assert_eq!(s.summary.bytes_total, 9);
    }
}
