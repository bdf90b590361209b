//! One large file's (or stream's) content turned into blobs on every core.
//!
//! The chunker is sequential: where a chunk ends depends on the bytes
//! before it. Nothing after the cut is: hashing, the index lookup,
//! compression and sealing of one chunk do not depend on any other. Reading
//! does not depend on the cut either. So three kinds of work overlap:
//! - a reader thread of its own fills blocks of [`READ`] bytes from the
//!   content, one after the other, while the disk's latency would otherwise
//!   stall the cutting (with `O_DIRECT`, crate::direct_read, there is no
//!   kernel readahead to hide it);
//! - the calling thread puts the previous block's uncut rest in front of
//!   each filled block and cuts it;
//! - every chunk it cuts becomes a task of its own on the rayon pool, which
//!   stores it and files its id under the chunk's number; the ids are put
//!   back in file order at the end.
//!
//! Up to [`BLOCKS`] blocks exist (one being read while the cutter holds
//! the one it cuts and the previous one, whose tail it carries over), and
//! a block goes back to the reader when the last task using it ends.
//! Memory is bounded whatever the file's size.
//!
//! The cutter waiting for a filled block does not sleep while work is
//! queued: it runs the pool's pending tasks itself (`rayon::yield_now`), so a
//! pool whose other threads are all waiting in the same way (two large files
//! on a small pool) still drains its queue and cannot deadlock. The reader
//! thread depends on no pool thread but for the blocks given back.
//!
//! Cut points are exactly those of [`Chunker::chunks`]. A cut is kept only
//! when more content could not have moved it: the chunker found a boundary
//! inside the bytes it was given, or it was given a maximum chunk's worth,
//! or the content ended. Only the uncut rest (shorter than a maximum chunk)
//! is copied into the next block. So a file stored through here
//! deduplicates against the same file stored the sequential way.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::chunker::Chunker;
use crate::direct_read::ALIGN;
use crate::error::{Error, Result};
use crate::id::BlobId;

/// Content above this size goes through here (smaller content is cut on
/// the caller's thread): a maximum-size chunk plus 2 MiB, at least 8 MiB.
pub fn block_size(chunker: &Chunker) -> usize {
    (chunker.params().max_size as usize + (2 << 20)).max(8 << 20)
}

/// Bytes read into a block at a time: a multiple of [`ALIGN`]. Direct
/// reads of 4 MiB ran at 2.2 GB/s on the 2026-12-02 bench machine (`fio`,
/// qd 1), as fast as 8 MiB ones; smaller blocks let a third be in use for
/// the same memory.
pub const READ: usize = 4 << 20;
const _: () = assert!(READ.is_multiple_of(ALIGN));

/// Blocks in use at once: the previous one (its uncut tail is copied in
/// front of the next block's bytes, and its last chunks may still be
/// stored), the one being cut, and the one being read. With two, the
/// reader could start on a block only once the cutter had finished the one
/// before (the previous block is given back after the next is cut), so
/// reading and cutting took turns: re-reading a 2 GiB file whose chunks
/// were all stored took 2.6-2.8 s with two 8 MiB blocks, 1.4-1.6 s with
/// three of 4 MiB, for the same memory.
pub const BLOCKS: usize = 3;
const _: () = assert!(BLOCKS >= 3, "the reader reads one block while the cutter holds two");

/// Headroom a block keeps in memory between uses, for the tails of
/// ordinary chunks (an average chunk's worth; see `Block::release_headroom`).
const HEADROOM_KEPT: usize = 1 << 20;

/// A block of content and the chunks cut from it.
///
/// The reader fills `buf[head..]`, an [`ALIGN`]-aligned place, with
/// [`READ`] bytes, so that a file opened with `O_DIRECT` is read straight
/// into it; the cutter then puts the previous block's uncut rest (shorter
/// than a maximum chunk) right in front, in the headroom. Headroom the rests
/// never reach is never touched, so it costs address space, not memory.
struct Block {
    /// Allocated (and zeroed) once at its full size: reads go straight into
    /// it, with no per-read resize (a pipe hands out 64 KiB a read).
    buf: Vec<u8>,
    /// Where the read bytes start: aligned, after a maximum chunk's headroom.
    head: usize,
    /// Where the content starts (the carried rest first) and ends.
    start: usize,
    end: usize,
    /// `(start, end)` of each chunk cut from `buf`, in order.
    chunks: Vec<(usize, usize)>,
    /// Where the uncut rest starts (carried over into the next block).
    rest: usize,
    /// The reader has ended: `buf` was cut to its end.
    eof: bool,
    /// The reader failed after the content in `buf`. The chunks cut before
    /// it are still stored, so a retry (a dump whose command failed at its
    /// end) finds them in the index, as the sequential path did.
    error: Option<io::Error>,
}

impl Block {
    fn new(headroom: usize) -> Block {
        let headroom = headroom.next_multiple_of(ALIGN);
        let buf = vec![0; ALIGN + headroom + READ];
        let head = buf.as_ptr().align_offset(ALIGN) + headroom;
        Block {
            buf,
            head,
            start: head,
            end: head,
            chunks: Vec::new(),
            rest: head,
            eof: false,
            error: None,
        }
    }

    /// The uncut rest, for the next block.
    fn rest(&self) -> &[u8] {
        &self.buf[self.rest..self.end]
    }

    /// Gives the memory of a long tail's place in the headroom back to the
    /// kernel, beyond the last [`HEADROOM_KEPT`] bytes. A tail is shorter
    /// than a chunk, but over a large file the longest reach several MiB,
    /// and each block would keep the pages they touched: about 10 MiB of
    /// the peak over three blocks. About half the blocks of a large file
    /// come back with a tail over 1 MiB (241 of 512 for a 2 GiB file), and
    /// each costs one `madvise` and the page faults of the next long tail:
    /// cheaper than the page faults saved elsewhere with the memory.
    fn release_headroom(&mut self) {
        let touched_from = self.start;
        let keep_from = self.head.saturating_sub(HEADROOM_KEPT);
        if touched_from >= keep_from {
            return;
        }
        let page = rustix::param::page_size();
        let base = self.buf.as_mut_ptr() as usize;
        // Whole pages inside the buffer only: rounded in, never out.
        let from = (base + touched_from).next_multiple_of(page);
        let to = (base + keep_from) / page * page;
        if from < to {
            // SAFETY: [from, to) lies inside `buf`, which this block owns and
            // nothing borrows now; the bytes there (an old tail) are never
            // read again before a new tail is copied over them, and an
            // anonymous page given back reads as zeros, a valid `u8`.
            // Only advice: a failure leaves the pages where they were.
            let _ = unsafe {
                rustix::mm::madvise(
                    from as *mut std::ffi::c_void,
                    to - from,
                    rustix::mm::Advice::LinuxDontNeed,
                )
            };
        }
    }

    /// Fills the block from `reader` with up to [`READ`] bytes (fewer at
    /// the reader's end or error).
    fn fill(&mut self, reader: &mut impl Read) {
        self.start = self.head;
        self.end = self.head;
        self.chunks.clear();
        self.eof = false;
        self.error = None;
        let limit = self.head + READ;
        while self.end < limit {
            match reader.read(&mut self.buf[self.end..limit]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
    }

    /// Puts `carry` (the previous block's uncut rest) in front of the bytes
    /// read, and cuts the whole.
    fn cut(&mut self, carry: &[u8], chunker: &Chunker) {
        self.start = self.head - carry.len();
        self.buf[self.start..self.head].copy_from_slice(carry);
        let last = self.eof || self.error.is_some();
        let max = chunker.params().max_size as usize;
        let mut at = self.start;
        while at < self.end {
            let window = self.end - at;
            let len = chunker.cut(&self.buf[at..self.end]);
            // A boundary found before the window's end is where the chunker
            // would cut with more content too; a cut at the window's end is
            // final only at a maximum chunk or the content's end.
            if len == window && window < max && !last {
                break;
            }
            self.chunks.push((at, at + len));
            at += len;
        }
        self.rest = at;
    }
}

/// A block lent to the tasks storing its chunks; the last one to drop it
/// hands the buffer back to the reader.
struct Lent {
    block: Option<Block>,
    back: Sender<Block>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            // The reader may have stopped (an error); the buffer is then freed.
            let _ = self.back.send(block);
        }
    }
}

impl Lent {
    fn block(&self) -> &Block {
        self.block.as_ref().expect("lent until dropped")
    }
}

/// What the chunk tasks report.
#[derive(Default)]
struct Stored {
    /// `(chunk number, id)`, in the order the tasks ended.
    ids: Vec<(usize, BlobId)>,
    /// The first error of a task; later chunks are then skipped.
    error: Option<Error>,
}

/// The reader thread: fills new blocks until [`BLOCKS`] exist, then the
/// ones given back, and sends each on, until the content ends, the reader
/// fails, or the cutter stops (`stop`, or its end of `filled` is gone).
fn read_ahead(
    mut reader: impl Read,
    headroom: usize,
    given_back: Receiver<Block>,
    filled: std::sync::mpsc::SyncSender<Block>,
    stop: &AtomicBool,
) {
    let mut made = 0;
    loop {
        let mut block = if made < BLOCKS {
            made += 1;
            Block::new(headroom)
        } else {
            match given_back.recv() {
                Ok(mut block) => {
                    block.release_headroom();
                    block
                }
                Err(_) => return,
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        block.fill(&mut reader);
        let last = block.eof || block.error.is_some();
        if filled.send(block).is_err() || last {
            return;
        }
    }
}

/// The next filled block, running queued pool tasks while none is.
fn take_filled(filled: &Receiver<Block>) -> Option<Block> {
    loop {
        match filled.try_recv() {
            Ok(block) => return Some(block),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        let wait = match rayon::yield_now() {
            Some(rayon::Yield::Executed) => continue,
            // Nothing queued: the reader is reading, or the blocks are with
            // tasks running on other threads. The timeout only bounds how
            // late a task queued meanwhile is noticed.
            Some(rayon::Yield::Idle) => Duration::from_millis(1),
            // Not on a pool thread: the tasks run on the pool's own
            // threads, which this one does not hold up.
            None => Duration::from_secs(3600),
        };
        match filled.recv_timeout(wait) {
            Ok(block) => return Some(block),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Reads `reader` to its end, cutting it with `chunker` and handing each
/// chunk to `store` (on the current rayon pool's workers, several at a
/// time), which returns its id. Appends the ids to `content` in the
/// content's order and counts the bytes cut in `read`. Stops with
/// [`Error::Interrupted`] once `cancel` is set, and with the first error of
/// `store` or of the reader (as [`Error::Io`] with an empty path; the caller
/// adds context). On an error `content` is left as it was.
pub fn store_content(
    chunker: &Chunker,
    reader: impl Read + Send,
    cancel: &AtomicBool,
    store: &(dyn Fn(&[u8]) -> Result<BlobId> + Sync),
    content: &mut Vec<BlobId>,
    read: &mut u64,
) -> Result<()> {
    let stored = Mutex::new(Stored::default());
    let failed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let mut chunks = 0usize;
    let mut total = 0u64;
    let mut read_error = None;
    // A rest is shorter than a maximum chunk.
    let headroom = chunker.params().max_size as usize;
    std::thread::scope(|threads| {
        let (back, given_back) = channel();
        let (to_cutter, filled) = sync_channel(BLOCKS);
        let stop = &stop;
        std::thread::Builder::new()
            .name("snap-read-ahead".into())
            .spawn_scoped(threads, move || {
                read_ahead(reader, headroom, given_back, to_cutter, stop)
            })
            .expect("spawning a thread");
        rayon::in_place_scope_fifo(|scope| {
            let mut previous: Option<Arc<Lent>> = None;
            loop {
                if cancel.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                    break;
                }
                let Some(mut block) = take_filled(&filled) else {
                    // The reader sends a last block before it ends; without
                    // one it panicked (which the scope then raises). Never
                    // taken for the content's end.
                    read_error = Some(io::Error::other("the read-ahead thread stopped"));
                    break;
                };
                let carry = previous.as_ref().map_or(&[][..], |lent| lent.block().rest());
                block.cut(carry, chunker);
                // Kept here, not with the block, which may outlive this loop in a task.
                read_error = block.error.take();
                let last = block.eof || read_error.is_some();
                let lent = Arc::new(Lent {
                    block: Some(block),
                    back: back.clone(),
                });
                for &(start, end) in &lent.block().chunks {
                    let number = chunks;
                    chunks += 1;
                    total += (end - start) as u64;
                    let lent = Arc::clone(&lent);
                    let (stored, failed) = (&stored, &failed);
                    scope.spawn_fifo(move |_| {
                        if cancel.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let result = store(&lent.block().buf[start..end]);
                        let mut stored = stored.lock().expect("ingest lock");
                        match result {
                            Ok(id) => stored.ids.push((number, id)),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                stored.error.get_or_insert(e);
                            }
                        }
                    });
                }
                if last {
                    break;
                }
                // Its uncut rest is in the new block by now: it may go back.
                previous = Some(lent);
            }
            // The reader stops at its next block (and its next send fails).
            stop.store(true, Ordering::Relaxed);
            drop(filled);
            drop(back);
        });
    });
    let stored = stored.into_inner().expect("ingest lock");
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    if let Some(e) = stored.error {
        return Err(e);
    }
    if let Some(e) = read_error {
        return Err(Error::io("", e));
    }
    let mut ids = stored.ids;
    debug_assert_eq!(ids.len(), chunks);
    ids.sort_unstable_by_key(|&(number, _)| number);
    content.extend(ids.into_iter().map(|(_, id)| id));
    *read += total;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkerParams;
    use std::sync::Mutex;

    fn chunker() -> Chunker {
        Chunker::new(
            ChunkerParams {
                min_size: 4096,
                avg_size: 16384,
                max_size: 65536,
            },
            &[7u8; 32],
        )
    }

    /// Text-like runs and random runs, `len` bytes.
    fn content(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut xof = blake3::Hasher::new();
        xof.update(b"ingest test");
        xof.finalize_xof().fill(&mut out);
        for (i, block) in out.chunks_mut(1 << 20).enumerate() {
            if i % 2 == 0 {
                let text = b"fn main() { println!(\"hello\"); }\n";
                for (j, b) in block.iter_mut().enumerate() {
                    *b = text[j % text.len()];
                }
            }
        }
        out
    }

    /// A reader handing out at most `step` bytes a call (a pipe's way).
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// What a run returns: the result, the ids, the bytes read, each chunk stored.
    type Run = (Result<()>, Vec<BlobId>, u64, Vec<(BlobId, Vec<u8>)>);

    /// Runs `store_content` on a 4-thread pool, the store keeping each chunk.
    fn run(reader: impl Read + Send, cancel: &AtomicBool) -> Run {
        let chunker = chunker();
        let kept = Mutex::new(Vec::new());
        let store = |chunk: &[u8]| -> Result<BlobId> {
            let id = BlobId(*blake3::hash(chunk).as_bytes());
            kept.lock().unwrap().push((id, chunk.to_vec()));
            Ok(id)
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let mut ids = Vec::new();
        let mut read = 0;
        let result = pool.install(|| store_content(&chunker, reader, cancel, &store, &mut ids, &mut read));
        (result, ids, read, kept.into_inner().unwrap())
    }

    #[test]
    fn cuts_as_the_sequential_chunker_does_and_keeps_the_order() {
        // Several blocks (8 MiB each here), and a last one cut short.
        let data = content(19 << 20 | 12345);
        let expected: Vec<Vec<u8>> = chunker().chunks(&data[..], None).map(|c| c.unwrap()).collect();
        assert!(expected.len() > 300, "{} chunks", expected.len());
        for step in [usize::MAX, 4096] {
            let (result, ids, read, kept) = run(Trickle { data: &data, step }, &AtomicBool::new(false));
            result.unwrap();
            assert_eq!(read, data.len() as u64);
            let by_id: std::collections::HashMap<_, _> = kept.into_iter().collect();
            let got: Vec<&Vec<u8>> = ids.iter().map(|id| &by_id[id]).collect();
            assert_eq!(got.len(), expected.len(), "step {step}");
            assert!(
                got.iter().zip(&expected).all(|(a, b)| *a == b),
                "step {step}: chunks differ"
            );
            assert_eq!(got.into_iter().flatten().copied().collect::<Vec<u8>>(), data);
        }
    }

    /// [`assert_cuts_as_sequential_here`] on a new pool of `threads`.
    fn assert_cuts_as_sequential(data: &[u8], threads: usize) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| assert_cuts_as_sequential_here(data));
    }

    /// Cuts `data` through `store_content` on the current pool (the global
    /// one outside any) and checks the chunks are the sequential chunker's,
    /// in order.
    fn assert_cuts_as_sequential_here(data: &[u8]) {
        let chunker = chunker();
        let expected: Vec<Vec<u8>> = chunker.chunks(data, None).map(|c| c.unwrap()).collect();
        let kept = Mutex::new(std::collections::HashMap::new());
        let store = |chunk: &[u8]| -> Result<BlobId> {
            let id = BlobId(*blake3::hash(chunk).as_bytes());
            kept.lock().unwrap().insert(id, chunk.to_vec());
            Ok(id)
        };
        let (mut ids, mut read) = (Vec::new(), 0);
        store_content(&chunker, data, &AtomicBool::new(false), &store, &mut ids, &mut read).unwrap();
        let kept = kept.into_inner().unwrap();
        let got: Vec<&Vec<u8>> = ids.iter().map(|id| &kept[id]).collect();
        assert_eq!(read, data.len() as u64);
        assert_eq!(got.len(), expected.len());
        assert!(got.iter().zip(&expected).all(|(a, b)| *a == b), "chunks differ");
    }

    #[test]
    fn long_runs_without_a_boundary_cut_as_the_sequential_chunker_does() {
        // Zeros have no boundary: maximum chunks, and uncut rests of up to
        // a maximum chunk carried from block to block; random runs between.
        let mut data = content(9 << 20);
        data[(1 << 20)..(5 << 20) + 777].fill(0);
        data.extend(std::iter::repeat_n(0u8, (3 << 20) + 3));
        data.extend(content(1 << 20));
        data.extend(std::iter::repeat_n(0u8, 65536 * 3 + 1));
        assert_cuts_as_sequential(&data, 3);
    }

    #[test]
    fn two_contents_at_once_on_a_one_or_two_thread_pool_finish() {
        // Each reader waits for its blocks while the other's tasks (and its
        // own) are queued: it must run them itself, or the pool deadlocks.
        let a = content(30 << 20);
        let b = content(21 << 20 | 999);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                rayon::join(
                    || assert_cuts_as_sequential_here(&a),
                    || assert_cuts_as_sequential_here(&b),
                )
            });
        }
        // From a thread outside any pool (the tasks go to the global pool).
        assert_cuts_as_sequential_here(&b);
    }

    #[test]
    fn empty_and_small_content() {
        for len in [0usize, 1, 4095, 65536, 200_000] {
            let data = content(len);
            let (result, ids, read, _) = run(&data[..], &AtomicBool::new(false));
            result.unwrap();
            assert_eq!(read, len as u64);
            assert_eq!(ids.len(), chunker().chunks(&data[..], None).count(), "{len}");
        }
    }

    /// A large file read around the page cache (where the temp directory's
    /// file system allows) is cut as the sequential chunker cuts it.
    #[test]
    fn a_file_read_directly_cuts_as_the_sequential_chunker_does() {
        use std::io::Write;
        let data = content(crate::direct_read::MIN_DIRECT as usize + (5 << 20) + 777);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        let reader = crate::direct_read::DirectReader::new(&file, data.len() as u64);
        let (result, ids, read, kept) = run(reader, &AtomicBool::new(false));
        result.unwrap();
        assert_eq!(read, data.len() as u64);
        let expected: Vec<Vec<u8>> = chunker().chunks(&data[..], None).map(|c| c.unwrap()).collect();
        let by_id: std::collections::HashMap<_, _> = kept.into_iter().collect();
        let got: Vec<&Vec<u8>> = ids.iter().map(|id| &by_id[id]).collect();
        assert_eq!(got.len(), expected.len());
        assert!(got.iter().zip(&expected).all(|(a, b)| *a == b), "chunks differ");
    }

    /// A reader that fails after `ok` bytes.
    struct FailAfter<'a> {
        data: &'a [u8],
        ok: usize,
    }

    impl Read for FailAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("injected read error"));
            }
            let n = buf.len().min(self.ok).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.ok -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_in_the_middle_fails_and_leaves_no_content() {
        let data = content(40 << 20);
        let (result, ids, read, kept) = run(
            FailAfter {
                data: &data,
                ok: 19 << 20,
            },
            &AtomicBool::new(false),
        );
        let e = result.expect_err("the read error was lost");
        assert!(matches!(&e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("injected read error"), "{e}");
        assert!(ids.is_empty(), "a partial content list came back");
        assert_eq!(read, 0);
        assert!(!kept.is_empty(), "the blocks before the error were stored");
    }

    #[test]
    fn stops_when_cancelled() {
        let data = content(64 << 20);
        let cancel = AtomicBool::new(false);
        // Cancel from inside the read of the third block.
        struct CancelAt<'a> {
            inner: &'a [u8],
            at: usize,
            cancel: &'a AtomicBool,
        }
        impl Read for CancelAt<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.inner.read(buf)?;
                self.at = self.at.saturating_sub(n);
                if self.at == 0 {
                    self.cancel.store(true, Ordering::Relaxed);
                }
                Ok(n)
            }
        }
        let (result, ids, _, kept) = run(
            CancelAt {
                inner: &data,
                at: 20 << 20,
                cancel: &cancel,
            },
            &cancel,
        );
        assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
        assert!(ids.is_empty());
        let stored: usize = kept.iter().map(|(_, c)| c.len()).sum();
        assert!(stored < 40 << 20, "kept storing after the cancel: {stored} bytes");
    }
}
