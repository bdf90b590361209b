//! Worker thread pools of the operations that read or write many objects.

use crate::error::{Error, Result};

/// A pool of `threads` workers named `snap-<name>-<i>`. 0 means the number of
/// cores plus two: the extra workers keep the cores busy while others wait
/// for the disk.
pub fn workers(threads: usize, name: &'static str) -> Result<rayon::ThreadPool> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()) + 2,
        n => n,
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("snap-{name}-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("thread pool: {e}")))
}
