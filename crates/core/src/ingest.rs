//! One large file's (or stream's) content turned into blobs on every core.
//!
//! The chunker is sequential: where a chunk ends depends on the bytes
//! before it. Nothing after the cut is: hashing, the index lookup,
//! compression and sealing of one chunk do not depend on any other. So the
//! content is read in blocks of [`block_size`] bytes; the calling thread
//! reads and cuts block `n + 1` while the pool's workers store the chunks of
//! block `n` (a rayon task per block, split chunk by chunk), and the chunk
//! ids are collected in file order. Two blocks are held at a time, plus the
//! compressed and sealed copy of each chunk being stored: memory is bounded
//! whatever the file's size.
//!
//! The reader never waits for a worker and a worker never waits for the
//! reader (the block is handed over as a task of a rayon scope, not through
//! a channel), so a pool whose other threads are busy with other files
//! cannot deadlock: the calling thread then stores its block itself.
//!
//! Cut points are exactly those of [`Chunker::chunks`]: a chunk is cut only
//! from a window of at least the maximum chunk size (or the end of the
//! data), so a file stored through here deduplicates against the same file
//! stored the sequential way.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::BlobId;

/// The block read at a time: two maximum-size chunks, at least 8 MiB (the
/// read calls are then few and large, and each block holds several chunks
/// for the workers to share).
pub fn block_size(chunker: &Chunker) -> usize {
    (2 * chunker.params().max_size as usize).max(8 << 20)
}

/// A block of content and the chunks cut from it.
struct Block {
    /// Allocated (and zeroed) once at its full size: reads go straight into
    /// it, with no per-read resize (a pipe hands out 64 KiB a read).
    buf: Vec<u8>,
    /// How much of `buf` holds content.
    len: usize,
    /// `(start, end)` of each chunk cut from `buf`, in order.
    chunks: Vec<(usize, usize)>,
    /// Where the uncut rest starts (shorter than a maximum chunk; carried
    /// over into the next block).
    rest: usize,
    /// The reader has ended: `buf` was cut to its end.
    eof: bool,
    /// The reader failed after the content in `buf`. The chunks cut before
    /// it are still stored, so a retry (a dump whose command failed at its
    /// end) finds them in the index, as the sequential path did.
    error: Option<io::Error>,
}

impl Block {
    fn new(capacity: usize) -> Block {
        Block {
            buf: vec![0; capacity],
            len: 0,
            chunks: Vec::new(),
            rest: 0,
            eof: false,
            error: None,
        }
    }

    /// The uncut rest, for the next block.
    fn rest(&self) -> &[u8] {
        &self.buf[self.rest..self.len]
    }

    /// Starts the block with `carry` (the previous block's uncut rest), fills
    /// it from `reader` up to its capacity or the reader's end, and cuts it.
    fn refill(&mut self, carry: &[u8], reader: &mut impl Read, chunker: &Chunker) {
        self.buf[..carry.len()].copy_from_slice(carry);
        self.len = carry.len();
        self.chunks.clear();
        self.eof = false;
        self.error = None;
        while self.len < self.buf.len() {
            match reader.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        let max = chunker.params().max_size as usize;
        let mut at = 0;
        while at < self.len && (self.eof || self.len - at >= max) {
            let len = chunker.cut(&self.buf[at..self.len]);
            self.chunks.push((at, at + len));
            at += len;
        }
        self.rest = at;
    }

    fn bytes(&self) -> u64 {
        self.chunks.last().map_or(0, |&(_, end)| end as u64)
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
    mut reader: impl Read,
    cancel: &AtomicBool,
    store: &(dyn Fn(&[u8]) -> Result<BlobId> + Sync),
    content: &mut Vec<BlobId>,
    read: &mut u64,
) -> Result<()> {
    let capacity = block_size(chunker);
    let mut current = Block::new(capacity);
    let mut next = Block::new(capacity);
    current.refill(&[], &mut reader, chunker);
    let mut ids = Vec::new();
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let mut stored: Result<Vec<BlobId>> = Ok(Vec::new());
        let more = !current.eof && current.error.is_none();
        rayon::in_place_scope(|scope| {
            let block = &current;
            let stored = &mut stored;
            scope.spawn(move |_| {
                *stored = block
                    .chunks
                    .par_iter()
                    .with_max_len(1)
                    .map(|&(start, end)| {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(Error::Interrupted);
                        }
                        store(&block.buf[start..end])
                    })
                    .collect();
            });
            if more {
                next.refill(current.rest(), &mut reader, chunker);
            }
        });
        ids.extend(stored?);
        total += current.bytes();
        if let Some(error) = current.error.take() {
            return Err(Error::io("", error));
        }
        if !more {
            break;
        }
        std::mem::swap(&mut current, &mut next);
    }
    content.extend(ids);
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
