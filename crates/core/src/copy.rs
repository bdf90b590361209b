//! Copying snapshots from one repository into another (`snap copy`).
//!
//! Blob and tree ids are keyed hashes (format.md, "Keys"), so the same
//! plaintext has different ids in two repositories: a copy cannot move packs
//! or reuse ids. It re-ids the content instead: every blob a source snapshot
//! reaches is read from the source (opened and checked against its id),
//! hashed under the destination's id key and handed to a destination
//! [`Packer`], which stores it only if the destination does not have it yet.
//! Trees are rewritten bottom-up with the new ids, and the snapshot record is
//! saved with the source's metadata (time, host, username, paths, tags,
//! summary), the new root tree and its parent mapped to the destination.
//!
//! A snapshot is already in the destination when one there has the same
//! time, host, username, paths, tags, program version and summary
//! ([`same_origin`]): that needs no format change, and a copy of a copy is
//! recognised too. Taking the locks is the caller's job; this module owns
//! choosing the snapshots, recognising copies, and the rewrite. It does not
//! own the walk order of restore or verify, nor writing packs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::lock::LockGuard;
use crate::pack::BlobKind;
use crate::packer::Packer;
use crate::progress::{Event, Progress};
use crate::repo::Repository;
use crate::snapshot::{self, Filter, Snapshot};
use crate::tree::{Node, Tree};

/// Entries kept in each id map of one run (source id -> destination id)
/// before it is emptied: about 70 bytes an entry, so ~18 MiB per map. A
/// cleared map costs only re-reads of blobs met again, never correctness.
const MEMO_LIMIT: usize = 1 << 18;

/// What to copy, and how.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Snapshot ids, unique id prefixes or `latest` (the newest complete
    /// snapshot the filter matches). Empty: every complete snapshot the
    /// filter matches. Checkpoints are copied only when named.
    pub snapshots: Vec<String>,
    pub filter: Filter,
    /// Only decide what would be copied; read and write nothing.
    pub dry_run: bool,
    /// Compression for the copied blobs (default: the destination's).
    pub compression: Option<Compression>,
}

/// What happened to one source snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Copied now, as [`CopiedSnapshot::dest`].
    Copied,
    /// The destination already holds it (as [`CopiedSnapshot::dest`]).
    AlreadyPresent,
    /// Dry run: it would be copied.
    WouldCopy,
}

/// What copying one snapshot stored in the destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyStats {
    /// Blobs (data and trees) read from the source.
    pub blobs_read: u64,
    /// Blobs the destination did not have, now stored.
    pub blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub bytes_added_raw: u64,
    /// Bytes of pack files written to the destination.
    pub bytes_added_stored: u64,
    pub packs_written: u64,
}

/// One source snapshot and what became of it.
#[derive(Clone, Debug)]
pub struct CopiedSnapshot {
    pub source: SnapshotId,
    pub snapshot: Snapshot,
    /// Its id in the destination (`None` on a dry run for one not there yet).
    pub dest: Option<SnapshotId>,
    pub outcome: Outcome,
    pub stats: CopyStats,
}

/// Whether `a` and `b` record the same backup: all the metadata a copy
/// keeps. The tree and parent are left out (their ids differ between
/// repositories). Times have nanoseconds, so two different backups match only
/// if one host made both in the same nanosecond with identical summaries.
pub fn same_origin(a: &Snapshot, b: &Snapshot) -> bool {
    a.time == b.time
        && a.host == b.host
        && a.username == b.username
        && a.paths == b.paths
        && a.tags == b.tags
        && a.program_version == b.program_version
        && a.summary == b.summary
}

/// The destination's snapshots, looked up by [`same_origin`].
struct DestSnapshots {
    by_time: HashMap<jiff::Timestamp, Vec<(SnapshotId, Snapshot)>>,
}

impl DestSnapshots {
    fn find(&self, s: &Snapshot) -> Option<SnapshotId> {
        self.by_time
            .get(&s.time)?
            .iter()
            .find(|(_, d)| same_origin(d, s))
            .map(|(id, _)| *id)
    }

    fn tree_of(&self, id: &SnapshotId) -> Option<BlobId> {
        self.by_time
            .values()
            .flatten()
            .find(|(d, _)| d == id)
            .map(|(_, s)| s.tree)
    }

    fn insert(&mut self, id: SnapshotId, s: Snapshot) {
        self.by_time.entry(s.time).or_default().push((id, s));
    }
}

/// Copies the snapshots `options` selects from `src` into `dest`, oldest
/// first, calling `on_snapshot` as each is done. The caller holds a lock on
/// each repository; `dest_lock` is checked before every snapshot is written.
/// A snapshot whose blobs cannot all be read from `src` fails the copy
/// before its snapshot record is written (the blobs stored so far stay
/// indexed in `dest`, for the next run to reuse).
pub fn copy(
    src: &Repository,
    dest: &Repository,
    options: &CopyOptions,
    dest_lock: Option<&LockGuard>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    on_snapshot: &mut dyn FnMut(&CopiedSnapshot),
) -> Result<Vec<CopiedSnapshot>> {
    let src_all = snapshot::list(src)?;
    let selected = select(&src_all, &options.snapshots, &options.filter)?;
    let mut in_dest = DestSnapshots {
        by_time: HashMap::new(),
    };
    for (id, s) in snapshot::list(dest)? {
        in_dest.insert(id, s);
    }
    let src_by_id: HashMap<SnapshotId, &Snapshot> = src_all.iter().map(|(id, s)| (*id, s)).collect();
    let compression = options.compression.unwrap_or(dest.config().compression);
    let mut rewriter = Rewriter {
        src,
        dest,
        progress,
        cancel,
        same_ids: src.crypto().master_key().id == dest.crypto().master_key().id,
        blobs: Mutex::new(HashMap::new()),
        trees: HashMap::new(),
    };
    let mut done = Vec::with_capacity(selected.len());
    for (source, s) in selected {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let result = match in_dest.find(&s) {
            Some(existing) => CopiedSnapshot {
                source,
                snapshot: s,
                dest: Some(existing),
                outcome: Outcome::AlreadyPresent,
                stats: CopyStats::default(),
            },
            None if options.dry_run => CopiedSnapshot {
                source,
                snapshot: s,
                dest: None,
                outcome: Outcome::WouldCopy,
                stats: CopyStats::default(),
            },
            None => {
                // The source parent and its copy, if it has one: their
                // trees show which parts of this snapshot are copied already.
                let parent = s.parent.and_then(|p| {
                    let src_parent = src_by_id.get(&p)?;
                    let dest_id = in_dest.find(src_parent)?;
                    Some((src_parent.tree, in_dest.tree_of(&dest_id)?, dest_id))
                });
                let (dest_snapshot, id, stats) = rewriter.copy_one(&s, parent, compression, dest_lock)?;
                in_dest.insert(id, dest_snapshot);
                CopiedSnapshot {
                    source,
                    snapshot: s,
                    dest: Some(id),
                    outcome: Outcome::Copied,
                    stats,
                }
            }
        };
        on_snapshot(&result);
        done.push(result);
    }
    Ok(done)
}

/// The source snapshots to copy, oldest first, each once.
fn select(all: &[(SnapshotId, Snapshot)], specs: &[String], filter: &Filter) -> Result<Vec<(SnapshotId, Snapshot)>> {
    if specs.is_empty() {
        return Ok(all
            .iter()
            .filter(|(_, s)| !s.is_checkpoint() && filter.matches(s))
            .cloned()
            .collect());
    }
    let mut chosen: Vec<SnapshotId> = Vec::new();
    for spec in specs {
        let id = if spec == "latest" {
            all.iter()
                .rfind(|(_, s)| !s.is_checkpoint() && filter.matches(s))
                .map(|(id, _)| *id)
                .ok_or_else(|| Error::SnapshotNotFound(spec.clone()))?
        } else {
            let prefix = spec.to_ascii_lowercase();
            if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::SnapshotNotFound(spec.clone()));
            }
            let matches: Vec<SnapshotId> = all
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| id.to_hex().starts_with(&prefix))
                .collect();
            match matches.as_slice() {
                [] => return Err(Error::SnapshotNotFound(spec.clone())),
                [id] => *id,
                _ => {
                    return Err(Error::AmbiguousSnapshot {
                        prefix: spec.clone(),
                        count: matches.len(),
                    })
                }
            }
        };
        if !chosen.contains(&id) {
            chosen.push(id);
        }
    }
    // `all` is oldest first: copying in that order copies a parent before
    // its child, so the child's parent can be mapped.
    Ok(all.iter().filter(|(id, _)| chosen.contains(id)).cloned().collect())
}

/// Rewrites trees of `src` into `dest`, remembering the ids it mapped.
struct Rewriter<'a> {
    src: &'a Repository,
    dest: &'a Repository,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
    /// The two repositories share their id key (one was copied from the
    /// other with its keys): ids need no re-hashing.
    same_ids: bool,
    /// Source data blob -> destination id, for blobs met again this run.
    blobs: Mutex<HashMap<BlobId, BlobId>>,
    /// Source tree -> destination tree, so a subtree unchanged between the
    /// snapshots of this run is rewritten once.
    trees: HashMap<BlobId, BlobId>,
}

/// A tree being rewritten: its nodes, the next one to map.
struct Frame {
    src_id: BlobId,
    tree: Tree,
    next: usize,
    /// The same directory in the parent snapshot and in its copy.
    shadow: Option<Shadow>,
}

/// A directory of the parent snapshot in the source and the same directory
/// of the parent's copy in the destination.
struct Shadow {
    src: Tree,
    dest: Tree,
}

impl Shadow {
    /// The parent's entry named as `node` and its copy, if the copy
    /// matches the source entry in everything but ids (so it was rewritten
    /// from it, not changed since or repaired).
    fn twin(&self, node: &Node) -> Option<(&Node, &Node)> {
        let src = self.src.find(&node.name)?;
        let dest = self.dest.find(&node.name)?;
        let without_ids = |n: &Node| Node {
            content: Vec::new(),
            subtree: None,
            ..n.clone()
        };
        (without_ids(src) == without_ids(dest)
            && src.content.len() == dest.content.len()
            && src.subtree.is_some() == dest.subtree.is_some())
        .then_some((src, dest))
    }
}

/// Counters of one snapshot's copy, shared by the worker threads.
#[derive(Default)]
struct Counters {
    blobs_read: std::sync::atomic::AtomicU64,
}

impl Rewriter<'_> {
    fn copy_one(
        &mut self,
        s: &Snapshot,
        parent: Option<(BlobId, BlobId, SnapshotId)>,
        compression: Compression,
        dest_lock: Option<&LockGuard>,
    ) -> Result<(Snapshot, SnapshotId, CopyStats)> {
        let packer = Packer::new(self.dest, compression)?;
        let counters = Counters::default();
        let shadow = parent.map(|(src_tree, dest_tree, _)| (src_tree, dest_tree));
        let rewritten = self.rewrite(&s.tree, shadow, &packer, &counters);
        let parent = parent.map(|(_, _, id)| id);
        // Index what was stored even when the rewrite failed, so the next
        // run reuses it; report the rewrite's error first.
        let packed = packer.finish();
        let root = rewritten?;
        let packed = packed?;
        let copy = Snapshot {
            tree: root,
            parent,
            ..s.clone()
        };
        if let Some(lock) = dest_lock {
            crate::snapshot::check_before_save(self.dest, lock, &root)?;
        }
        let id = copy.save(self.dest)?;
        let stats = CopyStats {
            blobs_read: counters.blobs_read.into_inner(),
            blobs_added: packed.blobs_added,
            bytes_added_raw: packed.bytes_added_raw,
            bytes_added_stored: packed.bytes_added_stored,
            packs_written: packed.packs_written,
        };
        Ok((copy, id, stats))
    }

    /// Rewrites the tree `root` and everything below it; returns the
    /// destination id of the root. Iterative, with one frame per directory
    /// level: a chain of 10,000 directories must not overflow the stack.
    ///
    /// `shadow` is the source tree of the parent snapshot and its copy in
    /// the destination: where this snapshot holds the same subtree or file
    /// content as the parent at the same path, the copy's ids are taken
    /// from the parent's copy instead of reading the data again (so a
    /// nightly copy reads only what changed, as a backup does).
    fn rewrite(
        &mut self,
        root: &BlobId,
        shadow: Option<(BlobId, BlobId)>,
        packer: &Packer,
        counters: &Counters,
    ) -> Result<BlobId> {
        if let Some(done) = self.trees.get(root) {
            return Ok(*done);
        }
        let mut stack = vec![self.load_tree(root, shadow, counters)?];
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let top = stack.last_mut().expect("the stack holds the tree being rewritten");
            if top.next < top.tree.nodes.len() {
                let twin = top.shadow.as_ref().and_then(|sh| sh.twin(&top.tree.nodes[top.next]));
                let node = &mut top.tree.nodes[top.next];
                if let Some(sub) = node.subtree {
                    let done = match (self.trees.get(&sub), twin) {
                        (Some(done), _) => Some(*done),
                        (None, Some((src_twin, dest_twin))) if src_twin.subtree == Some(sub) => {
                            let dest_sub = dest_twin.subtree.expect("twins are both directories");
                            self.dest_has(&dest_sub)?.then_some(dest_sub)
                        }
                        (None, _) => None,
                    };
                    match done {
                        Some(done) => {
                            node.subtree = Some(done);
                            top.next += 1;
                        }
                        None => {
                            let shadow = twin.and_then(|(s, d)| Some((s.subtree?, d.subtree?)));
                            let frame = self.load_tree(&sub, shadow, counters)?;
                            stack.push(frame);
                        }
                    }
                    continue;
                }
                if !node.content.is_empty() {
                    // Chunk by chunk: a file appended to keeps its first chunks.
                    let known: HashMap<BlobId, BlobId> = match twin {
                        Some((src_twin, dest_twin)) => src_twin
                            .content
                            .iter()
                            .copied()
                            .zip(dest_twin.content.iter().copied())
                            .collect(),
                        None => HashMap::new(),
                    };
                    node.content = node
                        .content
                        .par_iter()
                        .map(|id| match known.get(id) {
                            Some(mapped) if self.dest_has(mapped)? => Ok(*mapped),
                            _ => self.map_blob(id, packer, counters),
                        })
                        .collect::<Result<Vec<BlobId>>>()?;
                }
                top.next += 1;
                continue;
            }
            let frame = stack.pop().expect("the stack holds the tree being rewritten");
            let (dest_id, _) = packer.add(BlobKind::Tree, &frame.tree.encode())?;
            if self.trees.len() >= MEMO_LIMIT {
                self.trees.clear();
            }
            self.trees.insert(frame.src_id, dest_id);
            match stack.last_mut() {
                Some(parent) => {
                    parent.tree.nodes[parent.next].subtree = Some(dest_id);
                    parent.next += 1;
                }
                None => return Ok(dest_id),
            }
        }
    }

    fn load_tree(&self, id: &BlobId, shadow: Option<(BlobId, BlobId)>, counters: &Counters) -> Result<Frame> {
        let tree = Tree::load(self.src, id)?;
        counters.blobs_read.fetch_add(1, Ordering::Relaxed);
        // The shadow is a shortcut: one that cannot be read is not used.
        let shadow = shadow.and_then(|(src, dest)| {
            let src = Tree::load(self.src, &src).ok()?;
            let dest = Tree::load(self.dest, &dest).ok()?;
            Some(Shadow { src, dest })
        });
        Ok(Frame {
            src_id: *id,
            tree,
            next: 0,
            shadow,
        })
    }

    /// Whether the destination's index lists `id` (a blob taken from the
    /// parent's copy must still be there).
    fn dest_has(&self, id: &BlobId) -> Result<bool> {
        Ok(self.dest.index()?.lookup(id)?.is_some())
    }

    /// The destination id of the source data blob `id`, storing the blob in
    /// the destination when it does not have it.
    fn map_blob(&self, id: &BlobId, packer: &Packer, counters: &Counters) -> Result<BlobId> {
        if let Some(mapped) = self.blobs.lock().expect("blob map").get(id) {
            return Ok(*mapped);
        }
        if self.same_ids && self.dest.index()?.lookup(id)?.is_some() {
            return Ok(*id);
        }
        // Read through the index and checked against its id: a damaged
        // blob fails the copy here, before any snapshot refers to it.
        let data = self.src.read_blob(id)?;
        counters.blobs_read.fetch_add(1, Ordering::Relaxed);
        self.progress.event(Event::Bytes(data.len() as u64));
        let (mapped, _) = packer.add(BlobKind::Data, &data)?;
        let mut blobs = self.blobs.lock().expect("blob map");
        if blobs.len() >= MEMO_LIMIT {
            blobs.clear();
        }
        blobs.insert(*id, mapped);
        Ok(mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seconds: i64, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: jiff::Timestamp::from_second(seconds).unwrap(),
            host: host.into(),
            username: "u".into(),
            paths: vec!["/data".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: BlobId([seconds as u8; 32]),
            parent: None,
            program_version: "snap test".into(),
            summary: Default::default(),
            description: None,
            original: None,
        }
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    /// Oldest first, each once, checkpoints only when named, `latest`
    /// through the filter, unknown and ambiguous names refused.
    #[test]
    fn select_orders_dedups_and_skips_checkpoints() {
        let all = vec![
            (id(0xa1), snap(1, "a", &[])),
            (id(0xa2), snap(2, "b", &[])),
            (id(0xb3), snap(3, "a", &[snapshot::CHECKPOINT_TAG])),
            (id(0xb4), snap(4, "b", &[])),
        ];
        let ids = |v: Vec<(SnapshotId, Snapshot)>| v.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        let none = Filter::default();
        assert_eq!(ids(select(&all, &[], &none).unwrap()), [id(0xa1), id(0xa2), id(0xb4)]);
        let host_a = Filter {
            host: Some("a".into()),
            ..Filter::default()
        };
        assert_eq!(ids(select(&all, &[], &host_a).unwrap()), [id(0xa1)]);
        let named = ["b4".to_string(), "b3".into(), "latest".into(), "B4".into()];
        assert_eq!(
            ids(select(&all, &named, &host_a).unwrap()),
            [id(0xa1), id(0xb3), id(0xb4)]
        );
        assert!(matches!(
            select(&all, &["a".into()], &none),
            Err(Error::AmbiguousSnapshot { count: 2, .. })
        ));
        assert!(matches!(
            select(&all, &["c".into()], &none),
            Err(Error::SnapshotNotFound(_))
        ));
        assert!(matches!(
            select(&all, &["x!".into()], &none),
            Err(Error::SnapshotNotFound(_))
        ));
    }

    /// A copy keeps the metadata that identifies it; a tree or parent of
    /// its own does not matter, any other field does.
    #[test]
    fn same_origin_ignores_only_tree_and_parent() {
        let a = snap(5, "h", &["t"]);
        let copy = Snapshot {
            tree: BlobId([9; 32]),
            parent: Some(id(1)),
            ..a.clone()
        };
        assert!(same_origin(&a, &copy));
        let mut other = a.clone();
        other.summary.files_new = 1;
        assert!(!same_origin(&a, &other));
        assert!(!same_origin(&a, &snap(5, "h", &[])));
        assert!(!same_origin(&a, &snap(6, "h", &["t"])));
    }
}
