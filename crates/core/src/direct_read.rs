//! Reading a large file around the page cache (`O_DIRECT`).
//!
//! A backup reads most files once, cold. Through the page cache the kernel
//! first reads each page into the cache and then copies it into our buffer;
//! on this project's bench machine that copy was two thirds of the CPU time
//! of re-reading a 1 GiB file whose content was already stored (`perf`:
//! `_copy_to_iter` 67%), and it pushes the user's own working set out of
//! the cache. With `O_DIRECT` the device writes straight into our buffer.
//!
//! It is used only where it pays and is safe:
//! - for files of at least [`MIN_DIRECT`] bytes, read from start to end in
//!   aligned blocks (`ingest`'s blocks are [`ALIGN`]-aligned for this);
//! - not when the file is mostly in the page cache already (a dump written
//!   a moment ago): reading it again from the disk would be slower. A few
//!   probes with `RWF_NOWAIT`, which fails rather than wait for the disk,
//!   tell;
//! - on any read `O_DIRECT` cannot serve (an unaligned buffer, length or
//!   offset, say after a short read of a file that is still growing) or a
//!   file system refuses (`EINVAL`), the reader drops the flag and goes on
//!   with buffered reads from the same offset. The bytes read are the same
//!   either way: the kernel writes dirty cached pages back before a direct
//!   read of them.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::OFlags;
use rustix::io::{Errno, ReadWriteFlags};

/// Alignment of buffer address, file offset and length that `O_DIRECT`
/// asks for: the largest logical block size of common devices.
pub const ALIGN: usize = 4096;
/// Smaller files are read through the page cache: a few blocks' worth of
/// saved copying does not pay for the probes and flag changes.
pub const MIN_DIRECT: u64 = 32 << 20;
/// Places in the file probed for cached pages.
const PROBES: u64 = 8;

/// A reader of a file from its start (or, for standard input, from where
/// its offset stands) that bypasses the page cache while it can.
pub struct DirectReader<'a> {
    file: BorrowedFd<'a>,
    /// The flags to put back once `O_DIRECT` is dropped; `None` while reads
    /// are buffered.
    restore: Option<OFlags>,
    /// Bytes read so far: the file offset of the next read.
    offset: u64,
}

impl<'a> DirectReader<'a> {
    /// Reads `file` (at offset 0, `size` bytes long as last seen) directly
    /// when it is large, mostly uncached, and its file system allows.
    pub fn new(file: &'a File, size: u64) -> Self {
        Self::at(file.as_fd(), 0, size)
    }

    /// Reads standard input (`fd`) from its current offset when it is a
    /// regular file (`snap create --stdin < disk.img`), directly where that
    /// pays as for [`DirectReader::new`]; `None` for a pipe, a terminal or a
    /// socket. The file description is shared with the shell that opened
    /// it: its flags are put back when the reader is dropped, and the reads
    /// move its offset as buffered reads would.
    pub fn stdin(fd: BorrowedFd<'a>) -> Option<Self> {
        let stat = rustix::fs::fstat(fd).ok()?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return None;
        }
        let offset = rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).ok()?;
        let left = (stat.st_size as u64).saturating_sub(offset);
        Some(Self::at(fd, offset, left))
    }

    /// Reads `file` from `offset`, where it has `size` bytes left.
    fn at(file: BorrowedFd<'a>, offset: u64, size: u64) -> Self {
        let mut reader = DirectReader {
            file,
            restore: None,
            offset,
        };
        if size >= MIN_DIRECT && !mostly_cached(file, offset, size) {
            if let Ok(flags) = rustix::fs::fcntl_getfl(file) {
                // Refused (EINVAL) where the file system cannot read directly.
                if rustix::fs::fcntl_setfl(file, flags | OFlags::DIRECT).is_ok() {
                    reader.restore = Some(flags);
                }
            }
        }
        reader
    }

    /// Whether reads bypass the page cache (until a read that cannot).
    pub fn is_direct(&self) -> bool {
        self.restore.is_some()
    }

    /// Goes on with buffered reads.
    fn stop_direct(&mut self) {
        if let Some(flags) = self.restore.take() {
            // If even this fails, the next direct read fails again and the
            // error is the caller's; nothing is read wrongly.
            let _ = rustix::fs::fcntl_setfl(self.file, flags);
        }
    }

    fn can_read_directly(&self, buf: &[u8]) -> bool {
        let aligned = |n: usize| n.is_multiple_of(ALIGN);
        !buf.is_empty()
            && aligned(buf.as_ptr() as usize)
            && aligned(buf.len())
            && self.offset.is_multiple_of(ALIGN as u64)
    }
}

impl Read for DirectReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.is_direct() {
            if self.can_read_directly(buf) {
                match rustix::io::read(self.file, &mut *buf) {
                    Ok(n) => {
                        self.offset += n as u64;
                        return Ok(n);
                    }
                    Err(Errno::INVAL) => self.stop_direct(),
                    Err(e) => return Err(e.into()),
                }
            } else {
                self.stop_direct();
            }
        }
        let n = loop {
            match rustix::io::read(self.file, &mut *buf) {
                Ok(n) => break n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.offset += n as u64;
        Ok(n)
    }
}

impl Drop for DirectReader<'_> {
    fn drop(&mut self) {
        self.stop_direct();
    }
}

/// Whether most of [`PROBES`] places spread over the `size` bytes from
/// `start` are in the page cache: a one-byte read with `RWF_NOWAIT`
/// succeeds only from the cache. A kernel or file system without
/// `RWF_NOWAIT` counts as uncached (the common case for a backup).
fn mostly_cached(file: BorrowedFd<'_>, start: u64, size: u64) -> bool {
    let mut byte = [0u8; 1];
    let cached = (0..PROBES)
        .filter(|i| {
            let offset = start + size / PROBES * i;
            matches!(
                rustix::io::preadv2(
                    file,
                    &mut [io::IoSliceMut::new(&mut byte)],
                    offset,
                    ReadWriteFlags::NOWAIT
                ),
                Ok(1)
            )
        })
        .count() as u64;
    cached * 2 > PROBES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A buffer of `len` bytes whose start is `ALIGN`-aligned.
    fn aligned(len: usize) -> (Vec<u8>, usize) {
        let buf = vec![0u8; len + ALIGN];
        let at = buf.as_ptr().align_offset(ALIGN);
        (buf, at)
    }

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
        (dir, File::open(&path).unwrap())
    }

    fn content(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(b"direct read")
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// Reads `reader` to its end in steps of `step` bytes from an aligned buffer.
    fn read_all(reader: &mut DirectReader<'_>, step: usize) -> Vec<u8> {
        let (mut buf, at) = aligned(step);
        let mut out = Vec::new();
        loop {
            let n = reader.read(&mut buf[at..at + step]).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[at..at + n]);
        }
    }

    /// Whatever way the reads go (direct where the temp directory's file
    /// system allows, buffered after an unaligned read), the bytes are the
    /// file's.
    #[test]
    fn reads_the_file_directly_or_not_and_gets_its_bytes() {
        let data = content((MIN_DIRECT as usize) + 12345);
        let (_dir, file) = file_of(&data);
        // Dropped from the cache where the kernel allows, so the probes see
        // it uncached.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        let mut reader = DirectReader::new(&file, data.len() as u64);
        assert_eq!(read_all(&mut reader, 1 << 20), data);

        // An unaligned read part-way: the rest is read buffered, and right.
        let file = File::open(_dir.path().join("f")).unwrap();
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        let mut reader = DirectReader::new(&file, data.len() as u64);
        let (mut buf, at) = aligned(1 << 20);
        let mut out = Vec::new();
        let n = reader.read(&mut buf[at..at + (1 << 20)]).unwrap();
        out.extend_from_slice(&buf[at..at + n]);
        let n = reader.read(&mut buf[at + 1..at + 1 + 1000]).unwrap();
        assert!(!reader.is_direct(), "an unaligned buffer ends direct reads");
        out.extend_from_slice(&buf[at + 1..at + 1 + n]);
        out.extend(read_all(&mut reader, 3 << 20));
        assert_eq!(out, data);
        // The file's own flags are back.
        assert!(!rustix::fs::fcntl_getfl(&file).unwrap().contains(OFlags::DIRECT));
    }

    /// Standard input redirected from a file is read from its offset, an
    /// aligned one directly, an unaligned one buffered; a pipe is not a file.
    #[test]
    fn standard_input_from_a_file_is_read_from_its_offset() {
        use std::io::{Seek, SeekFrom};
        let data = content((MIN_DIRECT as usize) + 3 * ALIGN + 77);
        let (dir, _file) = file_of(&data);
        for skip in [0, 2 * ALIGN, 1000] {
            let mut file = File::open(dir.path().join("f")).unwrap();
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
            file.seek(SeekFrom::Start(skip as u64)).unwrap();
            let mut reader = DirectReader::stdin(file.as_fd()).expect("a regular file");
            assert_eq!(read_all(&mut reader, 1 << 20), data[skip..]);
            drop(reader);
            assert!(!rustix::fs::fcntl_getfl(&file).unwrap().contains(OFlags::DIRECT));
            assert_eq!(file.stream_position().unwrap(), data.len() as u64);
        }
        let (read_end, _write_end) = std::io::pipe().unwrap();
        assert!(DirectReader::stdin(read_end.as_fd()).is_none());
    }

    #[test]
    fn small_and_cached_files_are_read_through_the_cache() {
        let data = content(4 << 20);
        let (_dir, file) = file_of(&data);
        assert!(
            !DirectReader::new(&file, data.len() as u64).is_direct(),
            "below MIN_DIRECT"
        );
        // Just written and read: in the cache (where RWF_NOWAIT works).
        let big = content(MIN_DIRECT as usize);
        let (_dir, file) = file_of(&big);
        let mut warm = Vec::new();
        (&file).read_to_end(&mut warm).unwrap();
        if mostly_cached(file.as_fd(), 0, big.len() as u64) {
            assert!(!DirectReader::new(&file, big.len() as u64).is_direct());
        }
    }
}
