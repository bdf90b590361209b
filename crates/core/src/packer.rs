//! The packer turns blobs into packs and index files in the repository.
//!
//! Callers (the archiver, later prune and repair) hand it plaintext blobs
//! from many threads. It skips blobs already in the index or already handed
//! in during this session, compresses and seals the rest on the caller's
//! thread (so compression runs on every core), appends them to the open data
//! or tree pack, and passes full packs over a bounded channel to one uploader
//! thread. The channel's bound is what keeps memory flat when storage is slow:
//! producers wait for the uploader.
//!
//! Write order, which crash safety rests on: a pack is stored before any
//! index file lists it, and the snapshot (written by the caller after
//! [`Packer::finish`]) after the index files. An index file is written right
//! after every pack, so a backup killed at any point keeps every pack it
//! finished (but the one being indexed) for the next backup to reuse. The
//! small index files are merged as they accumulate: every
//! [`PACKS_PER_INDEX`] of them, and at the end, one index file listing
//! their packs is written (superseding them) before they are deleted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::backend::ObjectKind;
use crate::compress::{self, Compression, Encoding};
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId};
use crate::index::cache::IndexReader;
use crate::index::{IndexFile, IndexedPack};
use crate::pack::{BlobKind, FinishedPack, PackWriter};
use crate::repo::Repository;

/// Packs listed per merged index file written during a backup.
pub const PACKS_PER_INDEX: usize = 64;
/// Full packs waiting for the uploader.
const UPLOAD_QUEUE: usize = 2;

/// What the packer stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackerStats {
    pub blobs_added: u64,
    pub bytes_added_raw: u64,
    pub bytes_added_stored: u64,
    pub packs_written: u64,
    pub index_files_written: u64,
    /// This session's one-pack index files replaced by merged ones.
    pub index_files_merged: u64,
}

/// What the uploader thread is asked to do, in order.
enum Upload {
    Pack(FinishedPack),
    /// Write the index file for every pack stored so far, then answer.
    Flush(SyncSender<Result<()>>),
}

struct OpenPacks {
    data: PackWriter,
    tree: PackWriter,
}

pub struct Packer {
    repo: Repository,
    compression: Compression,
    /// The index as it was when the packer started, to skip blobs it lists
    /// (one read transaction for all lookups: one per blob made the workers
    /// queue on redb's locks). `None` when repacking: the blobs are in the
    /// index (in packs about to be deleted) and must be stored again.
    indexed: Option<IndexReader>,
    pack_size: usize,
    open: Mutex<OpenPacks>,
    seen: Mutex<HashSet<BlobId>>,
    sender: Option<SyncSender<Upload>>,
    uploader: Option<JoinHandle<Result<PackerStats>>>,
    blobs_added: AtomicU64,
    bytes_added_raw: AtomicU64,
}

impl Packer {
    pub fn new(repo: &Repository, compression: Compression) -> Result<Self> {
        Ok(Self::with_mode(repo, compression, Some(repo.index().reader()?)))
    }

    /// A packer for prune: stores every blob handed in once, even when the
    /// index already lists it.
    pub fn for_repack(repo: &Repository, compression: Compression) -> Self {
        Self::with_mode(repo, compression, None)
    }

    fn with_mode(repo: &Repository, compression: Compression, indexed: Option<IndexReader>) -> Self {
        let pack_size = repo.config().pack_size as usize;
        let (sender, receiver) = sync_channel(UPLOAD_QUEUE);
        let uploader_repo = repo.clone();
        let uploader = std::thread::Builder::new()
            .name("snap-uploader".into())
            .spawn(move || upload_loop(&uploader_repo, receiver))
            .expect("spawning a thread");
        Packer {
            repo: repo.clone(),
            compression,
            indexed,
            pack_size,
            open: Mutex::new(OpenPacks {
                data: PackWriter::new(BlobKind::Data, 0),
                tree: PackWriter::new(BlobKind::Tree, 0),
            }),
            seen: Mutex::new(HashSet::new()),
            sender: Some(sender),
            uploader: Some(uploader),
            blobs_added: AtomicU64::new(0),
            bytes_added_raw: AtomicU64::new(0),
        }
    }

    /// Stores `data` unless the repository has it. Returns its id and whether it was new.
    pub fn add(&self, kind: BlobKind, data: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.repo.crypto().blob_id(data);
        let added = self.add_with_id(kind, id, data)?;
        Ok((id, added))
    }

    /// Like [`Packer::add`] for a caller that already hashed `data`.
    pub fn add_with_id(&self, kind: BlobKind, id: BlobId, data: &[u8]) -> Result<bool> {
        if let Some(indexed) = &self.indexed {
            if indexed.lookup(&id)?.is_some() {
                return Ok(false);
            }
        }
        if !self.seen.lock().expect("packer lock").insert(id) {
            return Ok(false);
        }
        let (encoding, payload) = match compress::compress(data, self.compression) {
            Some(packed) => (Encoding::Zstd, std::borrow::Cow::Owned(packed)),
            None => (Encoding::Raw, std::borrow::Cow::Borrowed(data)),
        };
        let sealed = self.repo.crypto().seal(&payload);
        let raw_length =
            u32::try_from(data.len()).map_err(|_| Error::InvalidArgument("blob larger than 4 GiB".into()))?;
        let full = {
            let mut open = self.open.lock().expect("packer lock");
            let writer = match kind {
                BlobKind::Data => &mut open.data,
                BlobKind::Tree => &mut open.tree,
            };
            writer.add(id, raw_length, encoding, &sealed);
            (writer.len() >= self.pack_size).then(|| std::mem::replace(writer, PackWriter::new(kind, 0)))
        };
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.bytes_added_raw.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(writer) = full {
            self.send(writer)?;
        }
        Ok(true)
    }

    fn send(&self, writer: PackWriter) -> Result<()> {
        let pack = writer.finish(self.repo.crypto());
        let sender = self.sender.as_ref().expect("sender lives until finish");
        // If the uploader stopped, its own error is reported by `finish`.
        sender.send(Upload::Pack(pack)).map_err(|_| uploader_stopped())
    }

    /// Swaps out the open data and tree packs for empty ones.
    fn take_open_packs(&self) -> OpenPacks {
        std::mem::replace(
            &mut *self.open.lock().expect("packer lock"),
            OpenPacks {
                data: PackWriter::new(BlobKind::Data, 0),
                tree: PackWriter::new(BlobKind::Tree, 0),
            },
        )
    }

    /// Makes every blob handed in so far durable and indexed: stores the
    /// partly filled packs, waits for the uploads and writes an index file.
    /// Blobs added concurrently may or may not be included.
    pub fn checkpoint(&self) -> Result<()> {
        let open = self.take_open_packs();
        for writer in [open.data, open.tree] {
            if !writer.is_empty() {
                self.send(writer)?;
            }
        }
        let (ack, done) = sync_channel(1);
        let sender = self.sender.as_ref().expect("sender lives until finish");
        sender.send(Upload::Flush(ack)).map_err(|_| uploader_stopped())?;
        done.recv().map_err(|_| uploader_stopped())?
    }

    /// Stores the partly filled packs, waits for the uploads, and writes the
    /// last index file. Call it on success and on interruption alike: what was
    /// uploaded is then indexed and the next backup reuses it.
    pub fn finish(mut self) -> Result<PackerStats> {
        let open = self.take_open_packs();
        let mut send_result = Ok(());
        for writer in [open.data, open.tree] {
            if !writer.is_empty() && send_result.is_ok() {
                send_result = self.send(writer);
            }
        }
        drop(self.sender.take());
        let uploaded = self
            .uploader
            .take()
            .expect("finish runs once")
            .join()
            .map_err(|_| Error::InvalidArgument("the uploader thread panicked".into()))?;
        let mut stats = uploaded?;
        send_result?;
        stats.blobs_added = self.blobs_added.load(Ordering::Relaxed);
        stats.bytes_added_raw = self.bytes_added_raw.load(Ordering::Relaxed);
        Ok(stats)
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        // A packer dropped without `finish` (a panic) still stops its thread.
        drop(self.sender.take());
        if let Some(handle) = self.uploader.take() {
            let _ = handle.join();
        }
    }
}

/// The error of a producer whose uploader thread has stopped.
fn uploader_stopped() -> Error {
    Error::Backend(crate::backend::BackendError::Io {
        op: "upload",
        what: "pack".into(),
        error: std::io::Error::other("the uploader stopped after an earlier error"),
    })
}

fn upload_loop(repo: &Repository, receiver: Receiver<Upload>) -> Result<PackerStats> {
    let mut stats = PackerStats::default();
    let mut pending: Vec<IndexedPack> = Vec::new();
    // The one-pack index files of this session not merged yet, with their packs.
    let mut unmerged = Unmerged::default();
    let flush = |pending: &mut Vec<IndexedPack>, unmerged: &mut Unmerged, stats: &mut PackerStats| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let packs = std::mem::take(pending);
        let id = repo.save_index(IndexFile {
            packs: packs.clone(),
            supersedes: Vec::new(),
        })?;
        crate::failpoint::hit("index-written");
        stats.index_files_written += 1;
        unmerged.ids.push(id);
        unmerged.packs.extend(packs);
        Ok(())
    };
    for message in receiver {
        let pack = match message {
            Upload::Pack(pack) => pack,
            Upload::Flush(ack) => {
                if let Err(e) = flush(&mut pending, &mut unmerged, &mut stats) {
                    let _ = ack.send(Err(Error::InvalidArgument(format!(
                        "checkpoint index not written: {e}"
                    ))));
                    return Err(e);
                }
                let _ = ack.send(Ok(()));
                continue;
            }
        };
        if let Err(e) = repo.backend().write(ObjectKind::Pack, &pack.id.to_hex(), &pack.bytes) {
            // Index the packs stored before the failure, so a retry reuses them.
            let _ = flush(&mut pending, &mut unmerged, &mut stats);
            return Err(e.into());
        }
        crate::failpoint::hit("pack-written");
        stats.packs_written += 1;
        stats.bytes_added_stored += pack.bytes.len() as u64;
        pending.push(IndexedPack {
            id: pack.id,
            kind: pack.kind,
            size: pack.bytes.len() as u64,
            blobs: pack.entries,
        });
        // At once: a backup killed from here on still has this pack indexed.
        flush(&mut pending, &mut unmerged, &mut stats)?;
        if unmerged.ids.len() >= PACKS_PER_INDEX {
            merge(repo, &mut unmerged, &mut stats)?;
        }
    }
    flush(&mut pending, &mut unmerged, &mut stats)?;
    merge(repo, &mut unmerged, &mut stats)?;
    Ok(stats)
}

/// Index files written by this packer that [`merge`] has not replaced yet.
#[derive(Default)]
struct Unmerged {
    ids: Vec<IndexId>,
    packs: Vec<IndexedPack>,
}

/// Replaces the session's small index files by one listing all their
/// packs: the new file is stored first, then the small ones are deleted, so
/// at every moment each pack is listed by at least one index file (a crash
/// in between leaves packs listed twice, which is harmless). The local
/// cache is told in one transaction, so it need not be rebuilt.
fn merge(repo: &Repository, unmerged: &mut Unmerged, stats: &mut PackerStats) -> Result<()> {
    // Storage that refuses deletes would keep the small files and the
    // merged one: more index, not less.
    if unmerged.ids.len() < 2 || repo.backend().append_only() {
        *unmerged = Unmerged::default();
        return Ok(());
    }
    let old = std::mem::take(unmerged);
    let file = IndexFile {
        packs: old.packs,
        supersedes: old.ids.clone(),
    };
    let bytes = file.encode(repo.crypto());
    let id = IndexId::hash_of(&bytes);
    repo.backend().write(ObjectKind::Index, &id.to_hex(), &bytes)?;
    stats.index_files_written += 1;
    repo.index().replace_index_files(&old.ids, &[(id, file)])?;
    crate::failpoint::hit("index-merged");
    for small in &old.ids {
        match repo.backend().delete(ObjectKind::Index, &small.to_hex()) {
            Ok(()) => stats.index_files_merged += 1,
            Err(e) if e.is_not_found() => {}
            // Left behind, it only lists packs the merged file lists too.
            Err(e) => tracing::warn!("cannot remove merged index file {small}: {e}"),
        }
    }
    Ok(())
}
