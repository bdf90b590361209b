//! `repair`: makes a damaged repository usable again.
//!
//! - [`repair_index`] rebuilds every index file from the pack headers alone,
//!   so a repository whose index files were all lost works again. New index
//!   files are written before the old ones are deleted.
//! - [`repair_packs`] salvages the intact blobs of damaged packs into new
//!   packs and removes the damaged packs from the index and the storage, so
//!   nothing points at damaged data any more: the next backup stores the lost
//!   blobs again (it re-reads every file whose blobs are not all indexed),
//!   and [`repair_snapshots`] marks what older snapshots lost.
//! - [`repair_snapshots`] rewrites snapshots that reference missing blobs:
//!   a file with missing chunks keeps its readable chunks and is renamed
//!   `<name>.damaged`; an unreadable directory becomes an empty
//!   `<name>.damaged`. The repaired snapshot is tagged `repaired`; the
//!   original is kept unless asked otherwise.
//!
//! The caller holds the exclusive lock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::ObjectKind;
use crate::damaged;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{self, IndexFile, IndexedPack};
use crate::lock::{LockGuard, LockKind};
use crate::pack::{self, BlobKind};
use crate::packer::Packer;
use crate::progress::{Event, Progress};
use crate::repo::Repository;
use crate::snapshot::{self, Snapshot};
use crate::tree::{Node, NodeKind, Tree};

const PACKS_PER_INDEX: usize = 2_000;
/// Appended to the names of damaged entries in repaired snapshots.
pub const DAMAGED_SUFFIX: &str = ".damaged";

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexStats {
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    /// Packs whose header cannot be read: their blobs stay unindexed.
    pub packs_unreadable: Vec<(String, String)>,
    pub index_files_written: u64,
    pub index_files_removed: u64,
}

/// Rebuilds the index from the headers of every stored pack.
/// Needs `repo`'s exclusive lock.
pub fn repair_index(
    repo: &Repository,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    lock: &LockGuard,
) -> Result<RepairIndexStats> {
    lock.proves(repo, LockKind::Exclusive)?;
    // Repair judges the repository's own copies, past the local object cache.
    let repo = &repo.without_cache();
    let mut stats = RepairIndexStats::default();
    let old = index::list_ids(repo.backend())?;
    let stored = repo.backend().list(ObjectKind::Pack)?;
    progress.event(Event::Total {
        bytes: 0,
        items: stored.len() as u64,
    });
    let headers: Vec<(String, Result<IndexedPack>)> = stored
        .par_iter()
        .map(|info| {
            if cancel.load(Ordering::Relaxed) {
                return (info.name.clone(), Err(Error::Interrupted));
            }
            let result = PackId::from_hex(&info.name)
                .map_err(|e| Error::corrupt(format!("pack {}", info.name), e))
                .and_then(|id| {
                    let header = pack::read_header(repo.backend(), repo.crypto(), &id, info.size)?;
                    let kind = header.entries.first().map_or(BlobKind::Data, |e| e.kind);
                    Ok(IndexedPack {
                        id,
                        kind,
                        size: info.size,
                        blobs: header.entries,
                    })
                });
            progress.event(Event::ItemDone(Path::new(&info.name)));
            (info.name.clone(), result)
        })
        .collect();
    let mut batch = Vec::new();
    for (name, result) in headers {
        match result {
            Ok(pack) if !pack.blobs.is_empty() => {
                stats.packs_indexed += 1;
                stats.blobs_indexed += pack.blobs.len() as u64;
                batch.push(pack);
            }
            Ok(_) => {}
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => stats.packs_unreadable.push((name, e.to_string())),
        }
        if batch.len() >= PACKS_PER_INDEX && repo.save_pending_index(&mut batch, &old)? {
            stats.index_files_written += 1;
        }
    }
    if repo.save_pending_index(&mut batch, &old)? {
        stats.index_files_written += 1;
    }
    for id in &old {
        repo.backend().delete(ObjectKind::Index, &id.to_hex())?;
        stats.index_files_removed += 1;
    }
    repo.sync_index()?;
    Ok(stats)
}

/// Which packs `repair packs` looks at.
#[derive(Clone, Debug, Default)]
pub struct RepairPacksOptions {
    /// Packs named by the user (full ids or unique prefixes). Empty: the
    /// packs the last `verify` found damaged ([`crate::damaged`]), or every
    /// indexed pack with `read_data`.
    pub packs: Vec<String>,
    pub read_data: bool,
}

/// What became of one pack `repair packs` looked at.
#[derive(Clone, Debug, Serialize)]
pub struct RepairedPack {
    pub pack: PackId,
    /// `intact` (read whole and found so: left as it is), or `removed`
    /// (damaged or missing: its intact blobs were copied to new packs and it
    /// was removed from the index and the storage).
    pub outcome: PackOutcome,
    /// Why the pack counts as damaged (empty when intact).
    pub damage: String,
    pub blobs_salvaged: u64,
    /// Blobs of the pack that could not be read back.
    pub blobs_damaged: Vec<BlobId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackOutcome {
    Intact,
    Removed,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairPacksStats {
    pub packs: Vec<RepairedPack>,
    /// Damaged blobs that no other pack holds: the data is gone from the
    /// repository until a backup stores it again.
    pub blobs_lost: Vec<BlobId>,
    pub packs_written: u64,
    pub index_files_written: u64,
    pub index_files_removed: u64,
}

impl RepairPacksStats {
    pub fn removed(&self) -> impl Iterator<Item = &RepairedPack> {
        self.packs.iter().filter(|p| p.outcome == PackOutcome::Removed)
    }
}

/// Salvages and removes damaged packs. See the module documentation; the
/// order is crash safe as prune's is: new packs and their index files first,
/// then new index files without the damaged packs (superseding all old
/// ones), then the old index files go, and only then the damaged packs.
/// Needs `repo`'s exclusive lock.
pub fn repair_packs(
    repo: &Repository,
    options: &RepairPacksOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    lock: &LockGuard,
) -> Result<RepairPacksStats> {
    lock.proves(repo, LockKind::Exclusive)?;
    let repo = &repo.without_cache();
    let check_cancel = || {
        if cancel.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    };
    let indexed: HashMap<PackId, (u64, BlobKind)> = repo
        .index()?
        .packs()?
        .into_iter()
        .map(|(id, size, kind)| (id, (size, kind)))
        .collect();
    // The record is a local hint: an unreadable one is as good as none.
    let recorded = damaged::load(repo).unwrap_or_else(|e| {
        tracing::warn!("cannot read the packs verify found damaged: {e}");
        BTreeSet::new()
    });
    let candidates: BTreeSet<PackId> = if !options.packs.is_empty() {
        options
            .packs
            .iter()
            .map(|name| resolve_pack(name, &indexed))
            .collect::<Result<_>>()?
    } else if options.read_data {
        indexed.keys().copied().collect()
    } else {
        // Packs recorded but no longer indexed were removed since (by an
        // earlier repair or prune): nothing to do for them.
        recorded.iter().filter(|p| indexed.contains_key(p)).copied().collect()
    };
    let mut stats = RepairPacksStats::default();
    if candidates.is_empty() {
        forget_recorded(repo, &recorded);
        return Ok(stats);
    }

    // The index's entries of each candidate: what restore would read.
    let old_index = index::list_ids(repo.backend())?;
    let mut entries: HashMap<PackId, Vec<crate::pack::PackEntry>> = HashMap::new();
    for id in &old_index {
        check_cancel()?;
        for p in load_index(repo, id)?.packs {
            if candidates.contains(&p.id) {
                entries.entry(p.id).or_insert(p.blobs);
            }
        }
    }
    let stored: HashMap<String, u64> = repo
        .backend()
        .list(ObjectKind::Pack)?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let total: u64 = candidates.iter().map(|p| indexed[p].0).sum();
    progress.event(Event::Total {
        bytes: total,
        items: candidates.len() as u64,
    });

    // Check each candidate and copy the intact blobs of the damaged ones.
    let packer = Packer::for_repack(repo, repo.config().compression);
    let checked: Result<Vec<RepairedPack>> = candidates
        .par_iter()
        .map(|pack| {
            check_cancel()?;
            let (size, kind) = indexed[pack];
            let list = entries.get(pack).map(Vec::as_slice).unwrap_or_default();
            let result = salvage_pack(
                repo,
                &packer,
                pack,
                kind,
                size,
                stored.get(&pack.to_hex()).copied(),
                list,
            );
            progress.event(Event::Bytes(size));
            result
        })
        .collect();
    // Index what was copied even on failure; nothing has been removed yet.
    let finished = packer.finish();
    let checked = checked?;
    let finished = finished?;
    stats.packs_written = finished.packs_written;
    stats.index_files_written = finished.index_files_written;

    let gone: HashSet<PackId> = checked
        .iter()
        .filter(|p| p.outcome == PackOutcome::Removed)
        .map(|p| p.pack)
        .collect();
    if !gone.is_empty() {
        check_cancel()?;
        // New index files for every other pack, superseding all old ones.
        let mut written: HashSet<PackId> = HashSet::new();
        let mut pending: Vec<IndexedPack> = Vec::new();
        for id in &old_index {
            for p in load_index(repo, id)?.packs {
                if gone.contains(&p.id) || !written.insert(p.id) {
                    continue;
                }
                pending.push(p);
                if pending.len() >= PACKS_PER_INDEX && repo.save_pending_index(&mut pending, &old_index)? {
                    stats.index_files_written += 1;
                }
            }
        }
        if repo.save_pending_index(&mut pending, &old_index)? {
            stats.index_files_written += 1;
        }
        crate::failpoint::hit("repair-packs-index-written");
        for id in &old_index {
            repo.backend().delete(ObjectKind::Index, &id.to_hex())?;
            stats.index_files_removed += 1;
        }
        // No index lists them now. Deleted rather than kept: `repair index`
        // would otherwise read their headers and index the damage again.
        for pack in &gone {
            crate::failpoint::hit("repair-packs-deleting");
            match repo.backend().delete(ObjectKind::Pack, &pack.to_hex()) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        repo.sync_index()?;
    }
    let index = repo.index()?.reader()?;
    let mut lost = BTreeSet::new();
    for p in &checked {
        for blob in &p.blobs_damaged {
            if index.lookup(blob)?.is_none() {
                lost.insert(*blob);
            }
        }
    }
    stats.blobs_lost = lost.into_iter().collect();
    let handled: BTreeSet<PackId> = checked.iter().map(|p| p.pack).collect();
    forget_recorded(repo, &handled);
    stats.packs = checked;
    Ok(stats)
}

/// Removes `packs` from verify's record. The repair is done whatever
/// happens to the hint, so failing to update it is only a warning.
fn forget_recorded(repo: &Repository, packs: &BTreeSet<PackId>) {
    if let Err(e) = damaged::update(repo, &BTreeSet::new(), packs) {
        tracing::warn!("cannot update the packs verify found damaged: {e}");
    }
}

/// A pack named on the command line: a full id or a prefix of one indexed pack.
fn resolve_pack(name: &str, indexed: &HashMap<PackId, (u64, BlobKind)>) -> Result<PackId> {
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!("'{name}' is not a pack id")));
    }
    let mut matches = indexed.keys().filter(|id| id.to_hex().starts_with(&name));
    match (matches.next(), matches.next()) {
        (Some(id), None) => Ok(*id),
        (None, _) => Err(Error::InvalidArgument(format!(
            "no indexed pack matches '{name}' (an unindexed pack has nothing to repair; `snap prune` removes it)"
        ))),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "'{name}' matches several packs: give more of the id"
        ))),
    }
}

/// Reads `pack` whole (if it is stored), checks its name and every indexed
/// blob, and when anything is wrong hands the intact blobs to `packer`.
fn salvage_pack(
    repo: &Repository,
    packer: &Packer,
    pack: &PackId,
    kind: BlobKind,
    indexed_size: u64,
    stored_size: Option<u64>,
    entries: &[crate::pack::PackEntry],
) -> Result<RepairedPack> {
    let mut out = RepairedPack {
        pack: *pack,
        outcome: PackOutcome::Removed,
        damage: String::new(),
        blobs_salvaged: 0,
        blobs_damaged: Vec::new(),
    };
    let Some(stored_size) = stored_size else {
        out.damage = "missing from the storage".into();
        out.blobs_damaged = entries.iter().map(|e| e.id).collect();
        return Ok(out);
    };
    let mut bytes = match repo.backend().read(ObjectKind::Pack, &pack.to_hex()) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => {
            out.damage = "missing from the storage".into();
            out.blobs_damaged = entries.iter().map(|e| e.id).collect();
            return Ok(out);
        }
        // A passing read error is not damage: stop rather than drop the pack.
        Err(e) => return Err(e.into()),
    };
    let mut damage = Vec::new();
    if stored_size != indexed_size || bytes.len() as u64 != indexed_size {
        damage.push(format!("is {} bytes, the index says {indexed_size}", bytes.len()));
    }
    if PackId::hash_of(&bytes) != *pack {
        damage.push("its content does not match its name".to_string());
    }
    // The pack's own header, when it opens: if the index disagrees with it
    // (a buggy or hostile index), the blobs are salvaged as the header says,
    // so a wrong index never costs data the pack still holds.
    let mut sorted_index = entries.to_vec();
    sorted_index.sort_by_key(|e| e.offset);
    let header = pack::decode_header(repo.crypto(), pack, &bytes, bytes.len() as u64)
        .ok()
        .map(|h| {
            let mut entries = h.entries;
            entries.sort_by_key(|e| e.offset);
            entries
        });
    // Decoded to find the damage, and kept only if the pack must go
    // (bounded by the pack: at most one pack's plaintext per thread).
    let mut intact: Vec<(BlobId, Vec<u8>)> = Vec::new();
    let mut scratch = Vec::new();
    let mut bad = Vec::new();
    let by_header = match &header {
        Some(h) if *h == sorted_index => None,
        Some(h) => {
            damage.push("its header disagrees with the index".into());
            Some(h.as_slice())
        }
        None => {
            damage.push("its header cannot be read".into());
            None
        }
    };
    // Blobs are opened in place: a second pass needs its own copy.
    let mut second = by_header.map(|_| bytes.clone());
    repo.decode_pack_blobs(
        pack,
        0,
        &mut bytes,
        entries,
        &mut scratch,
        |entry, result| match result {
            Ok(plain) => intact.push((entry.id, plain.to_vec())),
            Err(_) => bad.push(entry.id),
        },
    );
    if let (Some(header_entries), Some(copy)) = (by_header, second.as_mut()) {
        let mut have: HashSet<BlobId> = intact.iter().map(|(id, _)| *id).collect();
        repo.decode_pack_blobs(pack, 0, copy, header_entries, &mut scratch, |entry, result| {
            if let Ok(plain) = result {
                if have.insert(entry.id) {
                    intact.push((entry.id, plain.to_vec()));
                }
            }
        });
        bad.retain(|id| !have.contains(id));
    }
    if !bad.is_empty() {
        damage.push(format!(
            "{} of its {} {} damaged",
            bad.len(),
            entries.len(),
            if bad.len() == 1 { "blobs is" } else { "blobs are" }
        ));
    }
    if damage.is_empty() {
        out.outcome = PackOutcome::Intact;
        return Ok(out);
    }
    for (id, plain) in &intact {
        packer.add_with_id(kind, *id, plain)?;
        out.blobs_salvaged += 1;
    }
    out.damage = damage.join("; ");
    out.blobs_damaged = bad;
    Ok(out)
}

fn load_index(repo: &Repository, id: &IndexId) -> Result<IndexFile> {
    let bytes = repo.backend().read(ObjectKind::Index, &id.to_hex())?;
    IndexFile::decode(repo.crypto(), id, &bytes).map_err(|e| match e {
        Error::Corrupt { what, reason } => Error::Corrupt {
            what,
            reason: format!("{reason}; run `snap repair index` first"),
        },
        other => other,
    })
}

#[derive(Clone, Debug, Default)]
pub struct RepairSnapshotsOptions {
    pub dry_run: bool,
    /// Delete the originals of repaired snapshots.
    pub forget: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    /// The repaired snapshot (`None` on a dry run, or when even its root
    /// directory is unreadable).
    pub repaired: Option<SnapshotId>,
    /// Source paths of the damaged entries.
    pub damaged_paths: Vec<String>,
    pub original_removed: bool,
    /// Even the root directory is unreadable: the snapshot cannot be
    /// repaired (on a dry run too, so the dry run predicts the run).
    pub root_unreadable: bool,
}

/// Result of rewriting one tree: its new id and whether anything changed.
type Rewritten = HashMap<BlobId, (BlobId, bool)>;

struct SnapshotRepairer<'a> {
    repo: &'a Repository,
    packer: Option<Packer>,
    memo: Rewritten,
    cancel: &'a AtomicBool,
}

/// Needs `repo`'s exclusive lock.
pub fn repair_snapshots(
    repo: &Repository,
    options: &RepairSnapshotsOptions,
    cancel: &AtomicBool,
    lock: &LockGuard,
) -> Result<Vec<RepairedSnapshot>> {
    lock.proves(repo, LockKind::Exclusive)?;
    let repo = &repo.without_cache();
    let mut repairer = SnapshotRepairer {
        repo,
        packer: (!options.dry_run)
            .then(|| Packer::new(repo, repo.config().compression))
            .transpose()?,
        memo: HashMap::new(),
        cancel,
    };
    let mut plans: Vec<(SnapshotId, Snapshot, Option<BlobId>, Vec<String>)> = Vec::new();
    for (id, snapshot) in snapshot::list(repo)? {
        let mut damaged = Vec::new();
        match repairer.rewrite(&snapshot.tree, Path::new("/"), &mut damaged)? {
            Some((_, false)) => {}
            Some((new_root, true)) => plans.push((id, snapshot, Some(new_root), damaged)),
            None => {
                damaged.push("/".into());
                plans.push((id, snapshot, None, damaged));
            }
        }
    }
    // Trees first, then the snapshots that point at them.
    if let Some(packer) = repairer.packer.take() {
        packer.finish()?;
    }
    let mut out = Vec::new();
    for (id, snapshot, new_root, damaged_paths) in plans {
        let mut repaired = None;
        if let (Some(root), false) = (new_root, options.dry_run) {
            let mut fixed = snapshot.clone();
            fixed.tree = root;
            if !fixed.tags.iter().any(|t| t == "repaired") {
                fixed.tags.push("repaired".into());
            }
            repaired = Some(fixed.save(repo)?);
        }
        let mut original_removed = false;
        let root_unreadable = new_root.is_none();
        // Only an original that has a repaired copy is removed.
        if options.forget && !options.dry_run && repaired.is_some() {
            snapshot::delete(repo, &id, lock)?;
            original_removed = true;
        }
        out.push(RepairedSnapshot {
            original: id,
            repaired,
            damaged_paths,
            original_removed,
            root_unreadable,
        });
    }
    Ok(out)
}

impl SnapshotRepairer<'_> {
    /// Rewrites the tree `id` (at `path`) without missing data. `None` when
    /// the tree itself cannot be read. Walks with a stack on the heap, not
    /// recursion: a snapshot may be as deep as the tree it was made of.
    fn rewrite(&mut self, id: &BlobId, path: &Path, damaged: &mut Vec<String>) -> Result<Option<(BlobId, bool)>> {
        /// A tree being rewritten.
        struct Level {
            id: BlobId,
            /// Entries still to look at.
            nodes: std::vec::IntoIter<Node>,
            /// Entries done.
            out: Vec<Node>,
            changed: bool,
            /// Its directory entry in the parent tree; `None` for the root.
            dir: Option<Node>,
        }
        let mut path = path.to_path_buf();
        let root = match self.enter(id, &path, damaged)? {
            Enter::Done(result) => return Ok(result),
            Enter::Walk(tree) => tree,
        };
        let mut stack = vec![Level {
            id: *id,
            out: Vec::with_capacity(root.nodes.len()),
            nodes: root.nodes.into_iter(),
            changed: false,
            dir: None,
        }];
        loop {
            let level = stack.last_mut().expect("the stack is not empty in the loop");
            if let Some(mut node) = level.nodes.next() {
                path.push(std::ffi::OsStr::from_bytes(&node.name));
                match node.kind {
                    NodeKind::Dir => {
                        let sub = node.subtree.expect("decode checked: directories have subtrees");
                        match self.enter(&sub, &path, damaged)? {
                            Enter::Walk(tree) => {
                                stack.push(Level {
                                    id: sub,
                                    out: Vec::with_capacity(tree.nodes.len()),
                                    nodes: tree.nodes.into_iter(),
                                    changed: false,
                                    dir: Some(node),
                                });
                                // The path stays pushed while its tree is rewritten.
                                continue;
                            }
                            Enter::Done(result) => {
                                self.set_subtree(&mut node, result, &path, damaged, &mut level.changed)?;
                            }
                        }
                    }
                    NodeKind::File => {
                        let mut kept = Vec::with_capacity(node.content.len());
                        let mut size = 0u64;
                        for blob in &node.content {
                            if let Some(location) = self.repo.index()?.lookup(blob)? {
                                kept.push(*blob);
                                size += u64::from(location.entry.raw_length);
                            }
                        }
                        if kept.len() != node.content.len() {
                            damaged.push(path.to_string_lossy().into_owned());
                            node.content = kept;
                            node.size = size;
                            mark_damaged(&mut node);
                            level.changed = true;
                        }
                    }
                    _ => {}
                }
                level.out.push(node);
                path.pop();
                continue;
            }
            let done = stack.pop().expect("the stack is not empty in the loop");
            let result = if done.changed {
                let mut nodes = done.out;
                // Renamed entries may have moved; names stay unique and sorted.
                nodes.sort_by(|a, b| a.name.cmp(&b.name));
                dedup_names(&mut nodes);
                (self.save(&Tree { nodes })?, true)
            } else {
                (done.id, false)
            };
            self.memo.insert(done.id, result);
            let Some(mut node) = done.dir else {
                return Ok(Some(result));
            };
            let parent = stack.last_mut().expect("a subtree's level has its parent's below it");
            self.set_subtree(&mut node, Some(result), &path, damaged, &mut parent.changed)?;
            parent.out.push(node);
            path.pop();
        }
    }

    /// The start of [`Self::rewrite`] for one tree: done already (memo, or
    /// unreadable), or loaded to be walked.
    fn enter(&self, id: &BlobId, path: &Path, damaged: &mut Vec<String>) -> Result<Enter> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        if let Some(done) = self.memo.get(id) {
            if done.1 {
                // Shared subtree already repaired under another path: report it here too.
                damaged.push(format!("{}/", path.display()));
            }
            return Ok(Enter::Done(Some(*done)));
        }
        match Tree::load(self.repo, id) {
            Ok(tree) => Ok(Enter::Walk(tree)),
            Err(Error::Interrupted) => Err(Error::Interrupted),
            Err(_) => Ok(Enter::Done(None)),
        }
    }

    /// Points a directory entry at its rewritten subtree, or, when the
    /// subtree could not be read (`None`), at an empty one under a
    /// damaged name.
    fn set_subtree(
        &self,
        node: &mut Node,
        result: Option<(BlobId, bool)>,
        path: &Path,
        damaged: &mut Vec<String>,
        changed: &mut bool,
    ) -> Result<()> {
        match result {
            Some((new_id, sub_changed)) => {
                *changed |= sub_changed;
                node.subtree = Some(new_id);
            }
            None => {
                damaged.push(path.to_string_lossy().into_owned());
                node.subtree = Some(self.save(&Tree::default())?);
                mark_damaged(node);
                *changed = true;
            }
        }
        Ok(())
    }

    fn save(&self, tree: &Tree) -> Result<BlobId> {
        match &self.packer {
            Some(packer) => Ok(packer.add(BlobKind::Tree, &tree.encode())?.0),
            // Dry run: the id the tree would have.
            None => Ok(self.repo.crypto().blob_id(&tree.encode())),
        }
    }
}

/// What [`SnapshotRepairer::enter`] found.
enum Enter {
    Done(Option<(BlobId, bool)>),
    Walk(Tree),
}

fn mark_damaged(node: &mut Node) {
    node.name.extend_from_slice(DAMAGED_SUFFIX.as_bytes());
}

/// Makes names unique after renames by adding `.1`, `.2`, ... to later duplicates.
fn dedup_names(nodes: &mut [Node]) {
    let mut i = 1;
    while i < nodes.len() {
        if nodes[i].name == nodes[i - 1].name {
            let mut n = 1;
            let base = nodes[i].name.clone();
            loop {
                let mut candidate = base.clone();
                candidate.extend_from_slice(format!(".{n}").as_bytes());
                if !nodes.iter().any(|x| x.name == candidate) {
                    nodes[i].name = candidate;
                    break;
                }
                n += 1;
            }
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            i = 1;
        } else {
            i += 1;
        }
    }
}
