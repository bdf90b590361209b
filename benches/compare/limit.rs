//! The machine's physical limit for a backup pipeline that reads and hashes
//! every byte: reading the data set with the page cache dropped, and BLAKE3
//! on one thread over the same files read from the page cache (each the best
//! of three passes).

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::measure;

#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub bytes: u64,
    pub files: usize,
    /// Reading every file once, one after the other, from disk (or from the
    /// page cache when it could not be dropped).
    pub read_s: f64,
    pub caches_dropped: bool,
    /// Reading every file from the page cache and hashing it with BLAKE3 on one thread.
    pub hash_s: f64,
}

impl Limit {
    /// Reading and hashing overlap in a pipeline: the slower of the two bounds it.
    pub fn pipelined_s(&self) -> f64 {
        self.read_s.max(self.hash_s)
    }

    /// Reading, then hashing, one after the other.
    pub fn serial_s(&self) -> f64 {
        self.read_s + self.hash_s
    }
}

pub fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9)
}

/// Best of `ROUNDS` passes of each kind: a limit is what the machine can do
/// when nothing else gets in the way.
const ROUNDS: usize = 3;

pub fn measure(root: &Path, may_drop_caches: bool, quiet_wait: Duration) -> io::Result<Limit> {
    let mut files = Vec::new();
    list_files(root, &mut files)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut read_s, mut hash_s, mut bytes) = (f64::INFINITY, f64::INFINITY, 0);
    let mut caches_dropped = may_drop_caches;
    for _ in 0..ROUNDS {
        caches_dropped &= measure::drop_caches();
        measure::wait_for_quiet(0.15, quiet_wait);
        let start = Instant::now();
        bytes = 0;
        for path in &files {
            let mut file = File::open(path)?;
            loop {
                match file.read(&mut buf)? {
                    0 => break,
                    n => bytes += n as u64,
                }
            }
        }
        read_s = read_s.min(start.elapsed().as_secs_f64());

        // Everything is in the page cache now (the data set is far smaller than memory).
        let start = Instant::now();
        for path in &files {
            let mut file = File::open(path)?;
            let mut hasher = blake3::Hasher::new();
            loop {
                match file.read(&mut buf)? {
                    0 => break,
                    n => {
                        hasher.update(&buf[..n]);
                    }
                }
            }
            black_box(hasher.finalize());
        }
        hash_s = hash_s.min(start.elapsed().as_secs_f64());
    }
    Ok(Limit {
        bytes,
        files: files.len(),
        read_s,
        caches_dropped,
        hash_s,
    })
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}
