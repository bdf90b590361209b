//! `prune`: reclaims the space of blobs no snapshot uses.
//!
//! 1. Mark: every tree and data blob reachable from any snapshot goes into a
//!    temporary redb table (so memory does not grow with the repository).
//!    An unreadable tree or an unindexed blob stops prune: without a full
//!    picture of what is used, deleting anything could lose data.
//! 2. Plan, streaming over the index files: per pack, used and unused blobs
//!    and bytes. A blob stored in several packs is used in one of them.
//!    Packs without used blobs are deleted; packs whose unused share exceeds
//!    `max_unused` are repacked, and so are tiny packs where merging leaves
//!    fewer of them (see `decide`: a second prune has nothing to do); packs
//!    that no index lists (left by interrupted backups) are deleted.
//! 3. Act, in the order crash safety needs: repack (new packs and their
//!    index files), write new index files for the kept packs, delete the old
//!    index files, and only then delete packs. Killed at any point, the
//!    repository stays valid: at worst unused data remains for the next run.
//!
//! The caller holds the exclusive lock.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{self, IndexFile, IndexedPack};
use crate::packer::Packer;
use crate::progress::{Event, Progress};
use crate::repo::Repository;
use crate::snapshot;
use crate::tree;

/// used blob id -> number of the pack whose copy is kept ([`NOT_KEPT`] until chosen).
const USED: TableDefinition<&[u8], u32> = TableDefinition::new("used");
const NOT_KEPT: u32 = u32::MAX;
/// Ids inserted per write transaction while marking.
const MARK_BATCH: usize = 50_000;
/// Packs listed per index file written by prune.
const PACKS_PER_NEW_INDEX: usize = 2_000;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack packs whose unused share is above this fraction (0.05 = 5%).
    pub max_unused: f64,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            dry_run: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PruneStats {
    pub snapshots: u64,
    pub used_blobs: u64,
    pub packs_total: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_unindexed: u64,
    pub bytes_total: u64,
    /// Bytes of packs deleted (including repacked and unindexed ones).
    pub bytes_deleted: u64,
    /// Bytes written again by repacking.
    pub bytes_repacked: u64,
    pub index_files_replaced: u64,
    pub dry_run: bool,
}

impl PruneStats {
    /// Space the repository shrinks by.
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_deleted.saturating_sub(self.bytes_repacked)
    }
}

struct PackPlan {
    number: u32,
    kind: crate::pack::BlobKind,
    size: u64,
    used_blobs: u64,
    used_bytes: u64,
    unused_bytes: u64,
}

enum Action {
    Keep,
    Delete,
    Repack,
}

/// Runs prune. See the module documentation for the steps.
/// Needs `repo`'s exclusive lock.
pub fn prune(
    repo: &Repository,
    options: &PruneOptions,
    scratch_dir: &Path,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    lock: &crate::lock::LockGuard,
) -> Result<PruneStats> {
    lock.proves(repo, crate::lock::LockKind::Exclusive)?;
    let check_cancel = || {
        if cancel.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    };
    let mut stats = PruneStats {
        dry_run: options.dry_run,
        ..PruneStats::default()
    };
    std::fs::create_dir_all(scratch_dir).map_err(|e| Error::io(scratch_dir, e))?;
    let scratch = tempfile::Builder::new()
        .prefix("prune-")
        .suffix(".redb")
        .tempfile_in(scratch_dir)
        .map_err(|e| Error::io(scratch_dir, e))?;
    let cache_err = |e: &dyn std::fmt::Display| Error::Cache {
        path: scratch.path().to_path_buf(),
        reason: e.to_string(),
    };
    let used = Database::builder()
        .set_cache_size(64 << 20)
        .create(scratch.path())
        .map_err(|e| cache_err(&e))?;

    // 1. Mark.
    let snapshots = snapshot::list(repo)?;
    stats.snapshots = snapshots.len() as u64;
    let roots: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    let index = repo.index()?.reader()?;
    let mut batch: Vec<BlobId> = Vec::new();
    let flush = |batch: &mut Vec<BlobId>| -> Result<()> {
        let mut txn = used.begin_write().map_err(|e| cache_err(&e))?;
        txn.set_durability(Durability::None).map_err(|e| cache_err(&e))?;
        {
            let mut table = txn.open_table(USED).map_err(|e| cache_err(&e))?;
            for id in batch.drain(..) {
                table.insert(&id.0[..], NOT_KEPT).map_err(|e| cache_err(&e))?;
            }
        }
        txn.commit().map_err(|e| cache_err(&e))
    };
    tree::walk_trees(
        repo,
        &roots,
        &mut |id, tree, path| {
            check_cancel()?;
            batch.push(*id);
            for node in &tree.nodes {
                for blob in &node.content {
                    if index.lookup(blob)?.is_none() {
                        return Err(Error::corrupt(
                            format!("blob {blob}"),
                            format!(
                                "used by {} but not in the index; prune stops so nothing more is lost (run `snap verify`, then `snap repair`)",
                                path.join(node.name_lossy()).display()
                            ),
                        ));
                    }
                    batch.push(*blob);
                }
            }
            if batch.len() >= MARK_BATCH {
                flush(&mut batch)?;
            }
            Ok(())
        },
        &mut |id, path, e| {
            Err(Error::corrupt(
                format!("tree {id}"),
                format!(
                    "the directory {} cannot be read ({e}); prune stops so nothing more is lost (run `snap verify`, then `snap repair`)",
                    path.display()
                ),
            ))
        },
    )?;
    flush(&mut batch)?;

    // 2. Plan.
    let index_files = index::list_ids(repo.backend())?;
    let mut packs: HashMap<PackId, PackPlan> = HashMap::new();
    let mut numbers: Vec<PackId> = Vec::new();
    {
        let mut txn = used.begin_write().map_err(|e| cache_err(&e))?;
        txn.set_durability(Durability::None).map_err(|e| cache_err(&e))?;
        {
            let mut table = txn.open_table(USED).map_err(|e| cache_err(&e))?;
            for index_id in &index_files {
                check_cancel()?;
                let file = load_index(repo, index_id)?;
                for p in file.packs {
                    if packs.contains_key(&p.id) {
                        continue;
                    }
                    let number = u32::try_from(numbers.len()).expect("fewer than 4 billion packs");
                    numbers.push(p.id);
                    let mut plan = PackPlan {
                        number,
                        kind: p.kind,
                        size: p.size,
                        used_blobs: 0,
                        used_bytes: 0,
                        unused_bytes: 0,
                    };
                    for blob in &p.blobs {
                        let key = &blob.id.0[..];
                        let state = table.get(key).map_err(|e| cache_err(&e))?.map(|v| v.value());
                        match state {
                            Some(NOT_KEPT) => {
                                table.insert(key, number).map_err(|e| cache_err(&e))?;
                                stats.used_blobs += 1;
                                plan.used_blobs += 1;
                                plan.used_bytes += u64::from(blob.length);
                            }
                            _ => plan.unused_bytes += u64::from(blob.length),
                        }
                    }
                    packs.insert(p.id, plan);
                }
            }
        }
        txn.commit().map_err(|e| cache_err(&e))?;
    }
    let small = u64::from(repo.config().pack_size) / 16;
    let wasteful =
        |p: &PackPlan| p.unused_bytes as f64 / (p.used_bytes + p.unused_bytes).max(1) as f64 > options.max_unused;
    // Small packs are merged per blob kind, since a pack holds one kind: a
    // small tree pack and a small data pack cannot become one, and counting
    // them together repacked both on every run. Repacking a kind's small packs
    // pays when there are several (they become one), or when packs of that
    // kind are repacked anyway (the small ones join the partly filled pack
    // that repack ends with). Either way at most one small pack per kind is
    // left, so the next prune has nothing to do.
    let mut merge_small: HashMap<crate::pack::BlobKind, (usize, bool)> = HashMap::new();
    for p in packs.values().filter(|p| p.used_blobs > 0) {
        let (small_count, rewritten) = merge_small.entry(p.kind).or_default();
        if p.size < small {
            *small_count += 1;
        }
        *rewritten |= wasteful(p);
    }
    let decide = |p: &PackPlan| -> Action {
        if p.used_blobs == 0 {
            return Action::Delete;
        }
        let (small_count, rewritten) = merge_small[&p.kind];
        if wasteful(p) || (p.size < small && (small_count > 1 || rewritten)) {
            Action::Repack
        } else {
            Action::Keep
        }
    };
    let stored = repo.backend().list(ObjectKind::Pack)?;
    let mut to_delete: Vec<PackId> = Vec::new();
    let mut to_repack: Vec<PackId> = Vec::new();
    for (id, plan) in &packs {
        stats.packs_total += 1;
        stats.bytes_total += plan.size;
        match decide(plan) {
            Action::Keep => {}
            Action::Delete => {
                stats.packs_deleted += 1;
                stats.bytes_deleted += plan.size;
                to_delete.push(*id);
            }
            Action::Repack => {
                stats.packs_repacked += 1;
                stats.bytes_deleted += plan.size;
                stats.bytes_repacked += plan.used_bytes;
                to_repack.push(*id);
            }
        }
    }
    let mut unindexed: Vec<PackId> = Vec::new();
    for info in &stored {
        match PackId::from_hex(&info.name) {
            Ok(id) if !packs.contains_key(&id) => {
                stats.packs_unindexed += 1;
                stats.bytes_deleted += info.size;
                stats.bytes_total += info.size;
                unindexed.push(id);
            }
            _ => {}
        }
    }
    let nothing_to_do = to_delete.is_empty() && to_repack.is_empty() && unindexed.is_empty();
    if options.dry_run || nothing_to_do {
        return Ok(stats);
    }

    // 3a. Repack: copy the kept copies of used blobs out of the packs to repack.
    progress.event(Event::Total {
        bytes: stats.bytes_repacked,
        items: to_repack.len() as u64,
    });
    if !to_repack.is_empty() {
        let packer = Packer::for_repack(repo, repo.config().compression);
        let copied = to_repack.par_iter().try_for_each(|pack_id| -> Result<()> {
            check_cancel()?;
            let plan = &packs[pack_id];
            let bytes = repo.backend().read(ObjectKind::Pack, &pack_id.to_hex())?;
            let header = crate::pack::decode_header(repo.crypto(), pack_id, &bytes, bytes.len() as u64)?;
            let txn = used.begin_read().map_err(|e| cache_err(&e))?;
            let table = txn.open_table(USED).map_err(|e| cache_err(&e))?;
            let mut kept = Vec::new();
            for entry in &header.entries {
                let keeper = table
                    .get(&entry.id.0[..])
                    .map_err(|e| cache_err(&e))?
                    .map(|v| v.value());
                if keeper == Some(plan.number) {
                    kept.push(*entry);
                }
            }
            let mut bytes = bytes;
            let mut scratch = Vec::new();
            let mut outcome = Ok(());
            repo.decode_pack_blobs(pack_id, 0, &mut bytes, &kept, &mut scratch, |entry, result| {
                if outcome.is_err() {
                    return;
                }
                outcome = result
                    .map_err(|e| match e {
                        // A used blob that cannot be read: copying the rest
                        // and deleting the pack would lose it for good.
                        Error::Corrupt { what, reason } => Error::Corrupt {
                            what,
                            reason: format!("{reason}; prune stops (run `snap repair packs {pack_id}` first)"),
                        },
                        other => other,
                    })
                    .and_then(|plain| packer.add_with_id(plan.kind, entry.id, plain))
                    .map(|_| progress.event(Event::Bytes(u64::from(entry.length))));
            });
            outcome
        });
        // Index what was copied even on failure; nothing has been deleted yet.
        let finished = packer.finish();
        copied?;
        finished?;
        crate::failpoint::hit("prune-repacked");
    }

    // 3b. New index files for the packs that stay, superseding all old ones.
    let gone: HashSet<PackId> = to_delete.iter().chain(&to_repack).copied().collect();
    let mut written: HashSet<PackId> = HashSet::new();
    let mut pending: Vec<IndexedPack> = Vec::new();
    for index_id in &index_files {
        check_cancel()?;
        let file = load_index(repo, index_id)?;
        for p in file.packs {
            if gone.contains(&p.id) || !written.insert(p.id) {
                continue;
            }
            pending.push(p);
            if pending.len() >= PACKS_PER_NEW_INDEX {
                repo.save_pending_index(&mut pending, &index_files)?;
            }
        }
    }
    repo.save_pending_index(&mut pending, &index_files)?;
    crate::failpoint::hit("prune-index-written");

    // 3c. Old index files go before any pack does.
    for index_id in &index_files {
        crate::failpoint::hit("prune-index-deleting");
        repo.backend().delete(ObjectKind::Index, &index_id.to_hex())?;
        stats.index_files_replaced += 1;
    }
    // 3d. Now no index lists these packs: delete them.
    for id in to_delete.iter().chain(&to_repack).chain(&unindexed) {
        crate::failpoint::hit("prune-packs-deleting");
        match repo.backend().delete(ObjectKind::Pack, &id.to_hex()) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    repo.sync_index()?;
    Ok(stats)
}

fn load_index(repo: &Repository, id: &IndexId) -> Result<IndexFile> {
    let bytes = repo.backend().read(ObjectKind::Index, &id.to_hex())?;
    IndexFile::decode(repo.crypto(), id, &bytes).map_err(|e| match e {
        Error::Corrupt { what, reason } => Error::Corrupt {
            what,
            reason: format!("{reason}; prune stops (run `snap repair index` first)"),
        },
        other => other,
    })
}
