//! How big snapshots are (`snap stats`): what a restore would write, and
//! what the repository stores for them once deduplicated. The restore size
//! of a tree is worked out once per tree id (it does not depend on where
//! the tree is) and reused by every snapshot and directory sharing it.
//! The stored sizes come from the index, each blob counted once. Owns the
//! counting; it does not print.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::pack::BlobKind;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{NodeKind, Tree};

/// What a full restore of a snapshot writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreSize {
    /// Regular files (a hard-linked file counts once per name).
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, devices, FIFOs and sockets.
    pub others: u64,
    /// Sum of the sizes of the files.
    pub bytes: u64,
}

impl std::ops::AddAssign for RestoreSize {
    fn add_assign(&mut self, o: Self) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.others += o.others;
        self.bytes += o.bytes;
    }
}

/// The distinct blobs referenced, each counted once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RawData {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext bytes of the data blobs (file content after dedup).
    pub data_bytes: u64,
    /// Plaintext bytes of the tree blobs.
    pub tree_bytes: u64,
    /// Bytes the blobs take in packs: compressed, sealed (nonce and tag).
    pub stored_bytes: u64,
    /// Referenced blobs the index does not have (their size is unknown).
    pub missing_blobs: u64,
}

impl RawData {
    /// Plaintext bytes of all the blobs.
    pub fn raw_bytes(&self) -> u64 {
        self.data_bytes + self.tree_bytes
    }
}

/// Which numbers to work out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsMode {
    pub restore_size: bool,
    pub raw_data: bool,
}

/// The numbers of one snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotStats {
    pub id: SnapshotId,
    pub restore: Option<RestoreSize>,
    pub raw: Option<RawData>,
}

/// The numbers of each snapshot and of all of them together (`total`: the
/// restore sizes summed, the blobs of all counted once).
#[derive(Clone, Debug)]
pub struct Stats {
    pub snapshots: Vec<SnapshotStats>,
    pub total_restore: Option<RestoreSize>,
    pub total_raw: Option<RawData>,
}

/// Restore size over stored plaintext: how many times deduplication shrank
/// the data (`None` when nothing is stored).
pub fn dedup_ratio(restore: &RestoreSize, raw: &RawData) -> Option<f64> {
    (raw.data_bytes > 0).then(|| restore.bytes as f64 / raw.data_bytes as f64)
}

/// Plaintext over stored bytes: how many times compression shrank the blobs
/// (below 1 when encryption overhead outweighs it).
pub fn compression_ratio(raw: &RawData) -> Option<f64> {
    (raw.stored_bytes > 0).then(|| raw.raw_bytes() as f64 / raw.stored_bytes as f64)
}

/// Works out `mode`'s numbers for each of `snapshots`. Stops with
/// [`Error::Interrupted`] once `cancel` is set.
pub fn stats(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    mode: StatsMode,
    cancel: &AtomicBool,
) -> Result<Stats> {
    let mut sizes: HashMap<BlobId, RestoreSize> = HashMap::new();
    let index = if mode.raw_data {
        Some(repo.index()?.reader()?)
    } else {
        None
    };
    let mut all_blobs: HashSet<BlobId> = HashSet::new();
    let mut total_raw = RawData::default();
    let mut total_restore = RestoreSize::default();
    let mut out = Vec::new();
    for (id, snapshot) in snapshots {
        let restore = if mode.restore_size {
            let size = restore_size(repo, &snapshot.tree, &mut sizes, cancel)?;
            total_restore += size;
            Some(size)
        } else {
            None
        };
        let raw = match &index {
            None => None,
            Some(index) => {
                let blobs = blobs_of(repo, &snapshot.tree, cancel)?;
                let mut raw = RawData::default();
                for blob in &blobs {
                    let fresh = all_blobs.insert(*blob);
                    let add = |r: &mut RawData| match index.lookup(blob) {
                        Ok(Some(location)) => {
                            let e = &location.entry;
                            match e.kind {
                                BlobKind::Data => {
                                    r.data_blobs += 1;
                                    r.data_bytes += u64::from(e.raw_length);
                                }
                                BlobKind::Tree => {
                                    r.tree_blobs += 1;
                                    r.tree_bytes += u64::from(e.raw_length);
                                }
                            }
                            r.stored_bytes += u64::from(e.length);
                            Ok(())
                        }
                        Ok(None) => {
                            r.missing_blobs += 1;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                    add(&mut raw)?;
                    if fresh {
                        add(&mut total_raw)?;
                    }
                }
                Some(raw)
            }
        };
        out.push(SnapshotStats { id: *id, restore, raw });
    }
    Ok(Stats {
        snapshots: out,
        total_restore: mode.restore_size.then_some(total_restore),
        total_raw: mode.raw_data.then_some(total_raw),
    })
}

/// Every blob (trees and file content) reachable from `root`, once.
fn blobs_of(repo: &Repository, root: &BlobId, cancel: &AtomicBool) -> Result<HashSet<BlobId>> {
    let mut blobs = HashSet::new();
    crate::tree::walk_trees(
        repo,
        &[*root],
        &mut |id, tree, _| {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            blobs.insert(*id);
            for node in &tree.nodes {
                blobs.extend(node.content.iter().copied());
            }
            Ok(())
        },
        &mut |_, _, e| Err(e),
    )?;
    Ok(blobs)
}

/// One directory being counted: its entries and the sum so far.
struct Frame {
    id: BlobId,
    nodes: std::vec::IntoIter<crate::tree::Node>,
    size: RestoreSize,
}

/// The restore size of the tree `root` (the root directory itself not
/// counted), memoised per tree id in `sizes`.
fn restore_size(
    repo: &Repository,
    root: &BlobId,
    sizes: &mut HashMap<BlobId, RestoreSize>,
    cancel: &AtomicBool,
) -> Result<RestoreSize> {
    if let Some(size) = sizes.get(root) {
        return Ok(*size);
    }
    let mut stack = vec![Frame {
        id: *root,
        nodes: Tree::load(repo, root)?.nodes.into_iter(),
        size: RestoreSize::default(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some(node) = top.nodes.next() else {
            let done = stack.pop().expect("a frame");
            sizes.insert(done.id, done.size);
            match stack.last_mut() {
                Some(parent) => parent.size += done.size,
                None => return Ok(done.size),
            }
            continue;
        };
        match node.kind {
            NodeKind::File => {
                top.size.files += 1;
                top.size.bytes += node.size;
            }
            NodeKind::Dir => top.size.dirs += 1,
            _ => top.size.others += 1,
        }
        if let Some(sub) = node.subtree {
            match sizes.get(&sub) {
                Some(size) => top.size += *size,
                None if cancel.load(Ordering::Relaxed) => return Err(Error::Interrupted),
                None => stack.push(Frame {
                    id: sub,
                    nodes: Tree::load(repo, &sub)?.nodes.into_iter(),
                    size: RestoreSize::default(),
                }),
            }
        }
    }
    unreachable!("the root frame returns")
}

/// What the repository holds in all: its indexed packs (referenced or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepositorySize {
    pub packs: u64,
    pub pack_bytes: u64,
    pub blobs: u64,
}

/// The repository's indexed packs and blobs; what the snapshots do not
/// reference in them is what a prune could free.
pub fn repository_size(repo: &Repository) -> Result<RepositorySize> {
    let index = repo.index()?;
    let packs = index.packs()?;
    Ok(RepositorySize {
        packs: packs.len() as u64,
        pack_bytes: packs.iter().map(|(_, size, _)| size).sum(),
        blobs: index.blob_count()?,
    })
}
