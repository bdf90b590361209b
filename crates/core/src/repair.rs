//! `repair`: makes a damaged repository usable again.
//!
//! - [`repair_index`] rebuilds every index file from the pack headers alone,
//!   so a repository whose index files were all lost works again. New index
//!   files are written before the old ones are deleted.
//! - [`repair_snapshots`] rewrites snapshots that reference missing blobs:
//!   a file with missing chunks keeps its readable chunks and is renamed
//!   `<name>.damaged`; an unreadable directory becomes an empty
//!   `<name>.damaged`. The repaired snapshot is tagged `repaired`; the
//!   original is kept unless asked otherwise.
//!
//! The caller holds the exclusive lock.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::{self, IndexedPack};
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
pub fn repair_index(repo: &Repository, progress: &dyn Progress, cancel: &AtomicBool) -> Result<RepairIndexStats> {
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
    repo.index().sync(repo.backend(), repo.crypto())?;
    Ok(stats)
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
}

/// Result of rewriting one tree: its new id and whether anything changed.
type Rewritten = HashMap<BlobId, (BlobId, bool)>;

struct SnapshotRepairer<'a> {
    repo: &'a Repository,
    packer: Option<Packer>,
    memo: Rewritten,
    cancel: &'a AtomicBool,
}

pub fn repair_snapshots(
    repo: &Repository,
    options: &RepairSnapshotsOptions,
    cancel: &AtomicBool,
) -> Result<Vec<RepairedSnapshot>> {
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
        if options.forget && !options.dry_run {
            repo.backend().delete(ObjectKind::Snapshot, &id.to_hex())?;
            original_removed = true;
        }
        out.push(RepairedSnapshot {
            original: id,
            repaired,
            damaged_paths,
            original_removed,
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
                            if let Some(location) = self.repo.index().lookup(blob)? {
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
