//! Worker thread pools of the operations that read or write many objects.

use crate::error::{Error, Result};

/// Workers beyond the cores by default: they keep the cores busy while
/// others wait for the disk.
pub const WAITING: usize = 2;

/// Workers beyond the cores of a backup by default. Walking a cold tree
/// waits for the disk on every directory, inode and small file, one request
/// per worker, so more requests in flight pay until the device's queue is
/// full. Blobs compressed at once stay bounded by the cores plus
/// [`WAITING`] (`compress::Compressing`), so a worker costs little memory
/// beyond the files it reads; what does grow is its share of index lookups
/// and allocator arenas. First backup, page cache dropped, 2 cores, 4 / 6 / 8
/// workers: 1M small files 66.6 / 59.5 / 57.0 s, peak RSS 95.5 / 97.6 /
/// 103.3 MB (over the 100 MiB bound); 100k files 5.27-5.32 s with 4 and
/// 3.97-4.11 s with 8; the real tree of 18,820 files 1.46-1.53 s and
/// 1.29-1.46 s. Restores keep [`WAITING`]: each of their workers holds up
/// to 8 MiB of pack reads.
pub const WAITING_WALK: usize = 4;

/// A pool of `threads` workers named `snap-<name>-<i>`. 0 means the number of
/// cores plus `waiting`.
pub fn workers(threads: usize, waiting: usize, name: &'static str) -> Result<rayon::ThreadPool> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()) + waiting,
        n => n,
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("snap-{name}-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("thread pool: {e}")))
}
