//! The packer turns blobs into packs and index files in the repository.
//!
//! Callers (the archiver, later prune and repair) hand it plaintext blobs
//! from many threads. It skips blobs already in the index or already handed
//! in during this session, compresses and seals the rest on the caller's
//! thread (so compression runs on every core), appends them to the open data
//! or tree pack, and passes full packs over a bounded channel to one uploader
//! thread, which keeps up to the backend's [`concurrency`] uploads in flight.
//! The channel's bound and the uploads' limit are what keep memory flat when
//! storage is slow: producers wait for the uploader.
//!
//! [`concurrency`]: crate::backend::Backend::concurrency
//!
//! Write order, which crash safety rests on: a pack is stored before any
//! index file lists it, and the snapshot (written by the caller after
//! [`Packer::finish`]) after the index files. An index file is written right
//! after every pack, so a backup killed at any point keeps every pack it
//! finished (but the one being indexed) for the next backup to reuse. The
//! small index files are merged as they accumulate: every
//! [`PACKS_PER_INDEX`] of them (or fewer holding [`BLOBS_PER_INDEX`]
//! blobs), and at the end, one index file listing
//! their packs is written (superseding them) before they are deleted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
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
/// Blobs listed per merged index file written during a backup, at most: the
/// entries of the packs not merged yet are held in memory, and 64 packs of
/// small files are about 640k blobs (36 MB) at a million files.
pub const BLOBS_PER_INDEX: usize = 100_000;
/// Tree packs are closed at this size (or the repository's pack size, if
/// smaller). A backup of many files writes a tree pack's worth of trees
/// slowly, and the open tree pack is held all the while: at a million
/// files, 16 MiB of the peak. prune repacks only packs under a sixteenth of
/// the pack size (1 MiB by default), so these stay.
const TREE_PACK_SIZE: usize = 4 << 20;
/// Full packs waiting for the uploader beyond those it uploads: none, so
/// that a producer hands its pack over only once an upload slot is free.
/// With one hand-over at a time (`OpenPacks::handing_over`), the packs held
/// at most are the open ones, one being handed over, and one per upload in
/// flight, however many threads add blobs.
const UPLOAD_QUEUE: usize = 0;
/// Room a pack's buffer is made with beyond the pack size, for the blob
/// that fills it and the header: growing a 16 MiB buffer by doubling
/// copied it (`memmove` was 5% of a large file's first backup).
const PACK_SLACK_DIVISOR: usize = 8;
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
    /// A full pack is on its way to the uploader. Until it is taken, a pack
    /// that fills up stays open, and blobs for it wait (`Packer::swapped`):
    /// otherwise each adding thread could hold a full pack of its own while
    /// the uploader is busy (at a million files, merging the index, that
    /// was six 16 MiB packs at once).
    handing_over: bool,
}

impl OpenPacks {
    fn empty(data: PackWriter) -> OpenPacks {
        OpenPacks {
            data,
            tree: PackWriter::new(BlobKind::Tree, 0),
            handing_over: false,
        }
    }

    fn writer(&mut self, kind: BlobKind) -> &mut PackWriter {
        match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        }
    }
}

/// The buffers of data packs: how many are in use, and the last stored
/// pack's, kept for the next pack. A fresh 16 MiB buffer is 4096 new pages
/// for the kernel to fault in and zero (page faults were 4% of a large
/// file's first backup, the kernel's page accounting about as much again).
/// A buffer is kept only while at most one other is in use (the open pack):
/// with two (the open one and one being handed over or stored), it would be
/// one pack more in memory than without reuse, and is freed.
struct PackBuffers {
    capacity: usize,
    state: Mutex<BuffersState>,
}

#[derive(Default)]
struct BuffersState {
    in_use: usize,
    spare: Option<Vec<u8>>,
}

impl PackBuffers {
    fn new(pack_size: usize) -> PackBuffers {
        PackBuffers {
            // Room for the blob that fills the pack and the header: growing
            // by doubling copied the 16 MiB (`memmove`, 5% of the backup).
            capacity: pack_size + pack_size / PACK_SLACK_DIVISOR,
            state: Mutex::default(),
        }
    }

    /// An empty buffer for a data pack: the spare one, or a new one (address
    /// space only until written).
    fn take(&self) -> Vec<u8> {
        let mut state = self.state.lock().expect("pack buffers lock");
        state.in_use += 1;
        state.spare.take().unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// `buf` is no longer in use: kept for the next pack, or freed.
    fn give_back(&self, mut buf: Vec<u8>) {
        let mut state = self.state.lock().expect("pack buffers lock");
        state.in_use = state.in_use.saturating_sub(1);
        if state.in_use <= 1 && state.spare.is_none() {
            buf.clear();
            state.spare = Some(buf);
        }
    }
}

/// The blobs handed in during this session that the index may not list
/// yet: in the open packs, on their way to storage, or stored and not yet
/// indexed. Once a pack's index file is recorded in the local cache, its
/// blobs are forgotten here and the index answers for them, so the set
/// holds a few packs' worth of ids, not one per blob of the backup (33
/// bytes each: 70 MB while growing past a million, before).
#[derive(Default)]
struct SessionBlobs {
    ids: Mutex<HashSet<BlobId>>,
    /// Bumped after each forgetting, so that a lookup that may have missed a
    /// forgotten blob's index entry is done again.
    forgotten: AtomicU64,
}

impl SessionBlobs {
    fn generation(&self) -> u64 {
        self.forgotten.load(Ordering::SeqCst)
    }

    /// Claims `id` for this caller to store, unless it was handed in
    /// before. `generation` is [`SessionBlobs::generation`] from before the
    /// caller's index lookup: if blobs were forgotten since, that lookup may
    /// have used a snapshot from before their index entries, so `indexed`
    /// asks again (the cache shows them to any lookup started after the
    /// forgetting).
    fn claim(&self, id: BlobId, generation: u64, indexed: impl Fn(&BlobId) -> Result<bool>) -> Result<bool> {
        let mut ids = self.ids.lock().expect("packer lock");
        if ids.contains(&id) {
            return Ok(false);
        }
        if self.generation() != generation && indexed(&id)? {
            return Ok(false);
        }
        ids.insert(id);
        Ok(true)
    }

    /// Forgets the blobs of packs whose index file the cache now holds.
    fn forget(&self, packs: &[IndexedPack]) {
        let mut ids = self.ids.lock().expect("packer lock");
        for pack in packs {
            for blob in &pack.blobs {
                ids.remove(&blob.id);
            }
        }
        // A set that held many ids keeps its table unless told.
        let held = ids.len();
        if ids.capacity() > 4 * held.max(1024) {
            ids.shrink_to(2 * held);
        }
        self.forgotten.fetch_add(1, Ordering::SeqCst);
    }
}

/// Ends a hand-over when dropped, also after a failed send or a panic:
/// the threads waiting for it must go on.
struct HandOver<'a> {
    packer: &'a Packer,
}

impl Drop for HandOver<'_> {
    fn drop(&mut self) {
        let mut open = self.packer.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.handing_over = false;
        self.packer.swapped.notify_all();
    }
}

pub struct Packer {
    repo: Repository,
    compression: Compression,
    /// The index, to skip blobs it lists (a renewing reader: one read
    /// transaction at a time for all lookups, as one per blob made the
    /// workers queue on redb's locks). `None` when repacking: the blobs are in the
    /// index (in packs about to be deleted) and must be stored again.
    indexed: Option<IndexReader>,
    pack_size: usize,
    open: Mutex<OpenPacks>,
    /// Signalled when a full pack leaves `open` or a hand-over ends.
    swapped: Condvar,
    session: Arc<SessionBlobs>,
    /// Data pack buffers, given back by the uploader once stored.
    buffers: Arc<PackBuffers>,
    /// Bounds the blobs compressed at once, whatever the workers.
    compressing: compress::Slots,
    sender: Option<SyncSender<Upload>>,
    uploader: Option<JoinHandle<Result<PackerStats>>>,
    blobs_added: AtomicU64,
    bytes_added_raw: AtomicU64,
    /// A dry run's packer: blobs are looked up, compressed and sealed (to
    /// count what they would cost) but never stored, indexed or cached.
    dry_run: bool,
    /// On a dry run, the sealed bytes of the blobs that would be stored.
    bytes_sealed: AtomicU64,
    /// Full packs being handed to the uploader now, and the most at once.
    #[cfg(test)]
    sending: (std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize),
}

impl Packer {
    pub fn new(repo: &Repository, compression: Compression) -> Result<Self> {
        Ok(Self::with_mode(
            repo,
            compression,
            Some(repo.index()?.renewing_reader()?),
        ))
    }

    /// A packer for prune: stores every blob handed in once, even when the
    /// index already lists it.
    pub fn for_repack(repo: &Repository, compression: Compression) -> Self {
        Self::with_mode(repo, compression, None)
    }

    /// A packer that writes nothing (`create --dry-run`): it answers as
    /// [`Packer::new`] would and counts what would be added; its
    /// `bytes_added_stored` is the sealed size of the new blobs, without the
    /// pack headers a real run adds.
    pub fn dry_run(repo: &Repository, compression: Compression) -> Result<Self> {
        let mut packer = Self::with_mode(repo, compression, Some(repo.index()?.renewing_reader()?));
        packer.dry_run = true;
        Ok(packer)
    }

    fn with_mode(repo: &Repository, compression: Compression, indexed: Option<IndexReader>) -> Self {
        let pack_size = repo.config().pack_size as usize;
        let (sender, receiver) = sync_channel(UPLOAD_QUEUE);
        let uploader_repo = repo.clone();
        let session = Arc::new(SessionBlobs::default());
        // Without an index to answer for them (repacking), every blob stays
        // in the session's set.
        let forget = indexed.is_some().then(|| session.clone());
        let buffers = Arc::new(PackBuffers::new(pack_size));
        let uploader_buffers = buffers.clone();
        let uploader = std::thread::Builder::new()
            .name("snap-uploader".into())
            .spawn(move || upload_loop(&uploader_repo, receiver, forget, uploader_buffers))
            .expect("spawning a thread");
        Packer {
            repo: repo.clone(),
            compression,
            indexed,
            pack_size,
            open: Mutex::new(OpenPacks::empty(PackWriter::with_buffer(
                BlobKind::Data,
                buffers.take(),
            ))),
            swapped: Condvar::new(),
            session,
            buffers,
            compressing: compress::Slots::for_cores(),
            sender: Some(sender),
            uploader: Some(uploader),
            blobs_added: AtomicU64::new(0),
            bytes_added_raw: AtomicU64::new(0),
            dry_run: false,
            bytes_sealed: AtomicU64::new(0),
            #[cfg(test)]
            sending: Default::default(),
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
        let generation = self.session.generation();
        let indexed = |id: &BlobId| match &self.indexed {
            Some(indexed) => Ok(indexed.lookup(id)?.is_some()),
            None => Ok(false),
        };
        if indexed(&id)? || !self.session.claim(id, generation, indexed)? {
            return Ok(false);
        }
        let raw_length =
            u32::try_from(data.len()).map_err(|_| Error::InvalidArgument("blob larger than 4 GiB".into()))?;
        // Held until the blob is sealed into its pack.
        let mut compressing = self.compressing.begin();
        let encoding = match compressing.compress(data, self.compression) {
            true => Encoding::Zstd,
            false => Encoding::Raw,
        };
        let payload = if encoding == Encoding::Zstd {
            compressing.output()
        } else {
            data
        };
        self.add_encoded(kind, id, data, raw_length, encoding, payload)
    }

    /// Seals a blob's stored encoding (`payload`) into the open pack of its
    /// kind (or counts it, on a dry run), and sends the pack on when it is
    /// full. Sealing under the pack's lock saves a copy of every blob; it is
    /// the cheapest step of storing one (a tenth of compressing it).
    fn add_encoded(
        &self,
        kind: BlobKind,
        id: BlobId,
        data: &[u8],
        raw_length: u32,
        encoding: Encoding,
        payload: &[u8],
    ) -> Result<bool> {
        if self.dry_run {
            let sealed = payload.len() + self.repo.crypto().overhead();
            self.bytes_sealed.fetch_add(sealed as u64, Ordering::Relaxed);
            self.blobs_added.fetch_add(1, Ordering::Relaxed);
            self.bytes_added_raw.fetch_add(data.len() as u64, Ordering::Relaxed);
            return Ok(true);
        }
        let pack_size = match kind {
            BlobKind::Data => self.pack_size,
            BlobKind::Tree => self.pack_size.min(TREE_PACK_SIZE),
        };
        let full = {
            let mut open = self.open.lock().expect("packer lock");
            // A full pack waits for the one before it to be handed over.
            while open.writer(kind).len() >= pack_size {
                open = self.swapped.wait(open).expect("packer lock");
            }
            open.writer(kind)
                .seal_and_add(self.repo.crypto(), id, raw_length, encoding, payload);
            if open.writer(kind).len() >= pack_size {
                while open.handing_over {
                    open = self.swapped.wait(open).expect("packer lock");
                }
                // A checkpoint may have taken it meanwhile.
                if open.writer(kind).len() >= pack_size {
                    open.handing_over = true;
                    let full = std::mem::replace(open.writer(kind), self.new_writer(kind));
                    self.swapped.notify_all();
                    Some(full)
                } else {
                    None
                }
            } else {
                None
            }
        };
        if kind == BlobKind::Tree {
            self.repo.cache_tree(&id, data);
        }
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.bytes_added_raw.fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(writer) = full {
            let _ending = HandOver { packer: self };
            self.send(writer)?;
        }
        Ok(true)
    }

    /// An empty pack of `kind` (a data pack in a buffer of `buffers`).
    fn new_writer(&self, kind: BlobKind) -> PackWriter {
        match kind {
            BlobKind::Data => PackWriter::with_buffer(kind, self.buffers.take()),
            BlobKind::Tree => PackWriter::new(kind, 0),
        }
    }

    /// Sends `writer` on if it holds blobs; an empty data pack's buffer
    /// goes back.
    fn send_unless_empty(&self, writer: PackWriter) -> Result<()> {
        if writer.is_empty() {
            if writer.kind() == BlobKind::Data {
                self.buffers.give_back(writer.into_buffer());
            }
            return Ok(());
        }
        self.send(writer)
    }

    fn send(&self, writer: PackWriter) -> Result<()> {
        let pack = writer.finish(self.repo.crypto());
        let sender = self.sender.as_ref().expect("sender lives until finish");
        #[cfg(test)]
        {
            let now = self.sending.0.fetch_add(1, Ordering::SeqCst) + 1;
            self.sending.1.fetch_max(now, Ordering::SeqCst);
        }
        // If the uploader stopped, its own error is reported by `finish`.
        let sent = sender.send(Upload::Pack(pack)).map_err(|_| uploader_stopped());
        #[cfg(test)]
        self.sending.0.fetch_sub(1, Ordering::SeqCst);
        sent
    }

    /// Swaps out the open data and tree packs for empty ones.
    fn take_open_packs(&self) -> OpenPacks {
        let mut open = self.open.lock().expect("packer lock");
        let taken = OpenPacks {
            data: std::mem::replace(&mut open.data, self.new_writer(BlobKind::Data)),
            tree: std::mem::replace(&mut open.tree, PackWriter::new(BlobKind::Tree, 0)),
            handing_over: false,
        };
        // Blobs waiting for a full pack to leave may go on.
        self.swapped.notify_all();
        taken
    }

    /// Makes every blob handed in so far durable and indexed: stores the
    /// partly filled packs, waits for the uploads and writes an index file.
    /// Blobs added concurrently may or may not be included.
    pub fn checkpoint(&self) -> Result<()> {
        let open = self.take_open_packs();
        for writer in [open.data, open.tree] {
            self.send_unless_empty(writer)?;
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
            if send_result.is_ok() {
                send_result = self.send_unless_empty(writer);
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
        if self.dry_run {
            stats.bytes_added_stored = self.bytes_sealed.load(Ordering::Relaxed);
        }
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

/// What the uploads share: the packs stored but not yet indexed, the
/// session's index files, the counts, and the first error.
struct Uploaded {
    /// Where a stored data pack's buffer goes back to the packer.
    buffers: Arc<PackBuffers>,
    /// The packer's session blobs, to forget what is indexed (`None` when
    /// the packer looks nothing up in the index).
    forget: Option<Arc<SessionBlobs>>,
    stats: PackerStats,
    pending: Vec<IndexedPack>,
    /// The one-pack index files of this session not merged yet, with their packs.
    unmerged: Unmerged,
    error: Option<Error>,
}

/// Writes an index file for the packs stored but not indexed yet.
fn flush(repo: &Repository, up: &mut Uploaded) -> Result<()> {
    if up.pending.is_empty() {
        return Ok(());
    }
    let packs = std::mem::take(&mut up.pending);
    let id = repo.save_index(IndexFile {
        packs: packs.clone(),
        supersedes: Vec::new(),
    })?;
    crate::failpoint::hit("index-written");
    if let Some(session) = &up.forget {
        session.forget(&packs);
    }
    up.stats.index_files_written += 1;
    up.unmerged.ids.push(id);
    up.unmerged.packs.extend(packs);
    Ok(())
}

/// Stores one pack, then (only once it is stored) indexes it. Runs on its
/// own thread, beside the other uploads in flight; the index files are
/// written one at a time, under the lock.
fn upload_pack(repo: &Repository, shared: &Mutex<Uploaded>, mut pack: FinishedPack) {
    let stored = repo.backend().write(ObjectKind::Pack, &pack.id.to_hex(), &pack.bytes);
    let size = pack.bytes.len() as u64;
    // Given back (or freed) before the index is written (and perhaps
    // merged, which at a million blobs takes a while): the next pack fills
    // it meanwhile, rather than holding 16 MiB more.
    let bytes = std::mem::take(&mut pack.bytes);
    let mut up = shared.lock().expect("upload state");
    if pack.kind == BlobKind::Data {
        up.buffers.give_back(bytes);
    } else {
        drop(bytes);
    }
    if let Err(e) = stored {
        up.error.get_or_insert(e.into());
        return;
    }
    crate::failpoint::hit("pack-written");
    up.stats.packs_written += 1;
    up.stats.bytes_added_stored += size;
    up.pending.push(IndexedPack {
        id: pack.id,
        kind: pack.kind,
        size,
        blobs: pack.entries,
    });
    // At once: a backup killed from here on still has this pack indexed.
    let indexed = flush(repo, &mut up).and_then(|()| {
        let blobs: usize = up.unmerged.packs.iter().map(|pack| pack.blobs.len()).sum();
        if up.unmerged.ids.len() >= PACKS_PER_INDEX || blobs >= BLOBS_PER_INDEX {
            let Uploaded { unmerged, stats, .. } = &mut *up;
            merge(repo, unmerged, stats)
        } else {
            Ok(())
        }
    });
    if let Err(e) = indexed {
        up.error.get_or_insert(e);
    }
}

/// Says "this upload is done" when dropped: also when the upload panics,
/// so that the uploader waiting for it does not wait forever.
struct Done(SyncSender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Receives finished packs and keeps up to `backend.concurrency()` uploads
/// in flight, each on its own thread. Memory: one pack per upload in
/// flight, plus the one being handed over. A pack's index file is written
/// only after the pack is stored, by the upload that stored it; a checkpoint waits for every upload
/// before it answers. After the first error no new upload starts; those in
/// flight finish (and index what they stored, so a retry reuses it), and the
/// error is returned.
fn upload_loop(
    repo: &Repository,
    receiver: Receiver<Upload>,
    forget: Option<Arc<SessionBlobs>>,
    buffers: Arc<PackBuffers>,
) -> Result<PackerStats> {
    let slots = repo.backend().concurrency().max(1);
    let shared = Mutex::new(Uploaded {
        buffers,
        forget,
        stats: PackerStats::default(),
        pending: Vec::new(),
        unmerged: Unmerged::default(),
        error: None,
    });
    let failed = |shared: &Mutex<Uploaded>| shared.lock().expect("upload state").error.is_some();
    std::thread::scope(|scope| -> Result<()> {
        // Each upload says here that it is done.
        let (done_tx, done_rx) = sync_channel::<()>(slots);
        let mut in_flight = 0usize;
        let wait_all = |in_flight: &mut usize| {
            while *in_flight > 0 {
                let _ = done_rx.recv();
                *in_flight -= 1;
            }
        };
        loop {
            // A slot first, then the next message: a pack received while
            // every slot is busy would be one more pack held in memory.
            while done_rx.try_recv().is_ok() {
                in_flight -= 1;
            }
            if in_flight == slots {
                let _ = done_rx.recv();
                in_flight -= 1;
            }
            let Ok(message) = receiver.recv() else {
                break;
            };
            match message {
                Upload::Pack(pack) => {
                    if failed(&shared) {
                        break;
                    }
                    let done = Done(done_tx.clone());
                    let shared = &shared;
                    std::thread::Builder::new()
                        .name("snap-upload".into())
                        .spawn_scoped(scope, move || {
                            let _done = done;
                            upload_pack(repo, shared, pack);
                        })
                        .map_err(|e| {
                            Error::Backend(crate::backend::BackendError::Io {
                                op: "start",
                                what: "an upload thread".into(),
                                error: e,
                            })
                        })?;
                    in_flight += 1;
                }
                Upload::Flush(ack) => {
                    wait_all(&mut in_flight);
                    let mut up = shared.lock().expect("upload state");
                    let result = match up.error.take() {
                        Some(e) => Err(e),
                        None => flush(repo, &mut up),
                    };
                    match result {
                        Ok(()) => {
                            let _ = ack.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = ack.send(Err(Error::InvalidArgument(format!(
                                "checkpoint index not written: {e}"
                            ))));
                            up.error = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        wait_all(&mut in_flight);
        Ok(())
    })?;
    let mut up = shared.into_inner().expect("upload state");
    if let Some(e) = up.error.take() {
        // Index the packs stored before the failure, so a retry reuses them.
        let _ = flush(repo, &mut up);
        return Err(e);
    }
    flush(repo, &mut up)?;
    merge(repo, &mut up.unmerged, &mut up.stats)?;
    Ok(up.stats)
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
    repo.index()?.replace_index_files(&old.ids, &[(id, file)])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BackendResult, LocalBackend, ObjectInfo};
    use crate::chunker::ChunkerParams;
    use crate::keys::{Password, FAST_KDF_FOR_TESTS};
    use crate::repo::InitOptions;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    /// Local storage whose pack writes are slow, counting how many overlap.
    #[derive(Debug)]
    struct SlowPacks {
        inner: LocalBackend,
        slots: usize,
        pause: Duration,
        now: AtomicUsize,
        most: AtomicUsize,
        /// Fail the pack writes after this many (`usize::MAX`: never).
        fail_after: usize,
        started: AtomicUsize,
    }

    impl Backend for SlowPacks {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn concurrency(&self) -> usize {
            self.slots
        }
        fn create(&self) -> BackendResult<()> {
            self.inner.create()
        }
        fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
            self.inner.read(kind, name)
        }
        fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
            self.inner.read_range(kind, name, offset, len)
        }
        fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
            if kind != ObjectKind::Pack {
                return self.inner.write(kind, name, data);
            }
            if self.started.fetch_add(1, Ordering::SeqCst) >= self.fail_after {
                return Err(crate::backend::BackendError::Remote {
                    op: "write",
                    what: format!("pack {name}"),
                    reason: "injected".into(),
                });
            }
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            // Slow storage: an upload lasts until another one has started
            // beside it (or `pause` passed), so that overlap, if the packer
            // allows it, shows however slowly this machine seals packs.
            let started = std::time::Instant::now();
            while self.most.load(Ordering::SeqCst) < 2 && started.elapsed() < self.pause {
                std::thread::sleep(Duration::from_millis(5));
            }
            let result = self.inner.write(kind, name, data);
            self.now.fetch_sub(1, Ordering::SeqCst);
            result
        }
        fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
            self.inner.write_new(kind, name, data)
        }
        fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
            self.inner.delete(kind, name)
        }
        fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
            self.inner.list(kind)
        }
        fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
            self.inner.exists(kind, name)
        }
    }

    fn slow_repo(
        dir: &std::path::Path,
        slots: usize,
        fail_after: usize,
        pause: Duration,
    ) -> (Arc<SlowPacks>, Repository) {
        let backend = Arc::new(SlowPacks {
            inner: LocalBackend::new(dir.join("repo")),
            slots,
            pause,
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            fail_after,
            started: AtomicUsize::new(0),
        });
        let options = InitOptions {
            kdf: FAST_KDF_FOR_TESTS,
            chunker: ChunkerParams {
                min_size: 4096,
                avg_size: 16384,
                max_size: 65536,
            },
            pack_size: 1 << 20,
            compression: Compression::Off,
            ..InitOptions::default()
        };
        let repo = Repository::init(backend.clone(), Some(&Password::new("p")), &options, &dir.join("cache")).unwrap();
        (backend, repo)
    }

    /// Incompressible blobs, 64 KiB each, `n` of them.
    fn blobs(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut blob = vec![0u8; 64 << 10];
                let mut hasher = blake3::Hasher::new();
                hasher.update(&(i as u64).to_le_bytes());
                hasher.finalize_xof().fill(&mut blob);
                blob
            })
            .collect()
    }

    #[test]
    fn packs_upload_in_parallel_and_are_all_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, repo) = slow_repo(dir.path(), 4, usize::MAX, Duration::from_secs(20));
        let data = blobs(16 * 6);
        let packer = Packer::new(&repo, Compression::Off).unwrap();
        let mut ids = Vec::new();
        for blob in &data {
            ids.push(packer.add(BlobKind::Data, blob).unwrap().0);
        }
        let stats = packer.finish().unwrap();
        assert!(stats.packs_written >= 5, "{stats:?}");
        let most = backend.most.load(Ordering::SeqCst);
        assert!(most >= 2, "uploads never overlapped ({most} at most)");
        assert!(most <= 4, "more uploads than the backend's concurrency: {most}");
        // Every blob is indexed, in a stored pack, with its bytes.
        let again = Repository::open(backend.clone(), Some(&Password::new("p")), &dir.path().join("cache2")).unwrap();
        for (id, blob) in ids.iter().zip(&data) {
            assert_eq!(&again.read_blob(id).unwrap(), blob);
        }
    }

    /// Many threads adding blobs while the one upload slot is slow: one
    /// full pack at a time waits for the uploader, not one per thread, and
    /// every blob is stored once and readable.
    #[test]
    fn adding_threads_hold_one_full_pack_between_them_while_uploads_are_slow() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, repo) = slow_repo(dir.path(), 1, usize::MAX, Duration::from_millis(100));
        let data = blobs(16 * 8);
        let packer = Packer::new(&repo, Compression::Off).unwrap();
        let ids: Vec<BlobId> = std::thread::scope(|threads| {
            let workers: Vec<_> = data
                .chunks(16)
                .map(|share| {
                    threads.spawn(|| {
                        share
                            .iter()
                            .map(|b| packer.add(BlobKind::Data, b).unwrap().0)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(
            packer.sending.1.load(Ordering::SeqCst),
            1,
            "full packs waited for the uploader at once"
        );
        let stats = packer.finish().unwrap();
        assert_eq!(stats.blobs_added, data.len() as u64);
        let again = Repository::open(backend.clone(), Some(&Password::new("p")), &dir.path().join("cache2")).unwrap();
        let by_id: std::collections::HashMap<_, _> = ids.iter().zip(&data).collect();
        for (id, blob) in by_id {
            assert_eq!(&again.read_blob(id).unwrap(), blob);
        }
    }

    #[test]
    fn a_failed_upload_stops_the_packer_and_what_was_stored_stays_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, repo) = slow_repo(dir.path(), 3, 3, Duration::from_millis(50));
        let data = blobs(16 * 8);
        let packer = Packer::new(&repo, Compression::Off).unwrap();
        let mut added = Ok(());
        for blob in &data {
            added = added.and_then(|()| packer.add(BlobKind::Data, blob).map(|_| ()));
        }
        let finished = packer.finish();
        assert!(finished.is_err(), "the failure was not reported");
        let again = Repository::open(backend.clone(), Some(&Password::new("p")), &dir.path().join("cache2")).unwrap();
        let indexed = again.index().unwrap().packs().unwrap();
        assert_eq!(indexed.len(), 3, "the three stored packs are indexed");
        for (pack, _, _) in indexed {
            assert!(backend.inner.exists(ObjectKind::Pack, &pack.to_hex()).unwrap());
        }
    }

    /// A stored pack's buffer is used again only while at most one other
    /// pack is in use: never one buffer more than without reuse.
    #[test]
    fn a_stored_packs_buffer_is_kept_for_the_next_pack_only_beside_the_open_one() {
        let buffers = PackBuffers::new(1 << 20);
        let mut open = buffers.take();
        assert!(open.capacity() >= 1 << 20, "room for a full pack from the start");
        open.extend_from_slice(&[1; 1000]);
        let stored = open.as_ptr();
        // Stored while the next pack is open: kept, emptied, and used next.
        let _next = buffers.take();
        buffers.give_back(open);
        let again = buffers.take();
        assert_eq!(again.as_ptr(), stored);
        assert!(again.is_empty());
        // Stored while two others are in use (one open, one on its way): freed.
        let third = buffers.take();
        buffers.give_back(third);
        assert!(buffers.state.lock().unwrap().spare.is_none());
        assert_eq!(buffers.state.lock().unwrap().in_use, 2);
    }

    #[test]
    fn indexed_blobs_leave_the_session_set_and_are_still_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_backend, repo) = slow_repo(dir.path(), 2, usize::MAX, Duration::ZERO);
        let data = blobs(16 * 3);
        let packer = Packer::new(&repo, Compression::Off).unwrap();
        for blob in &data {
            assert!(packer.add(BlobKind::Data, blob).unwrap().1);
        }
        packer.checkpoint().unwrap();
        // Every pack is indexed: the set no longer holds their blobs...
        assert_eq!(packer.session.ids.lock().unwrap().len(), 0);
        // ...and the index answers for them, before and after a forgetting.
        let generation = packer.session.generation();
        for blob in &data {
            assert!(!packer.add(BlobKind::Data, blob).unwrap().1, "a blob was stored twice");
        }
        let late = &data[0];
        let id = repo.crypto().blob_id(late);
        let indexed = |id: &BlobId| Ok(repo.index()?.lookup(id)?.is_some());
        assert!(!packer.session.claim(id, generation.wrapping_sub(1), indexed).unwrap());
        let stats = packer.finish().unwrap();
        assert_eq!(stats.blobs_added, data.len() as u64);
    }
}
