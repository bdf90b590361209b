//! Writing large objects around the page cache (`O_DIRECT`).
//!
//! A pack is written once, fsynced, and not read again by the backup that
//! wrote it. Through the page cache, the kernel copies every byte into cache
//! pages (on a first backup that copy was 14% of snap's CPU time: the pages are
//! new to the kernel) and the backup pushes the user's own files out of the
//! cache. With `O_DIRECT` the disk reads the bytes straight from our buffer.
//!
//! `O_DIRECT` wants the buffer address, the file offset and the length to be
//! multiples of the device's block size, so the bytes are copied through an
//! aligned buffer in large blocks, and the tail that is not a whole block is
//! written normally. A file system that refuses `O_DIRECT` (tmpfs, some FUSE
//! and network file systems) gets the ordinary buffered write instead.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::OFlags;

/// Alignment of buffer, offsets and lengths: the largest logical block size
/// of common devices.
const ALIGN: usize = 4096;
/// Bytes handed to one direct `write`: large enough to keep a disk busy,
/// small enough to copy while the cache still holds the source.
const BLOCK: usize = 4 << 20;
/// Smaller objects are written normally: the saving would not pay for the
/// extra system calls.
const MIN_DIRECT: usize = 1 << 20;
/// What a file system answers when it cannot do `O_DIRECT` as asked.
const EINVAL: i32 = rustix::io::Errno::INVAL.raw_os_error();

/// A `BLOCK`-sized buffer aligned to `ALIGN`, reused by its thread.
struct AlignedBuf {
    ptr: *mut u8,
}

impl AlignedBuf {
    fn layout() -> Layout {
        Layout::from_size_align(BLOCK, ALIGN).expect("constant layout")
    }

    fn new() -> Self {
        // Zeroed, not merely allocated: `as_mut_slice` hands out a `&mut [u8]`
        // over the whole block, and a reference to uninitialised bytes is
        // undefined behaviour even if they are written before being read.
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(Self::layout()) };
        if ptr.is_null() {
            alloc::handle_alloc_error(Self::layout());
        }
        AlignedBuf { ptr }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to BLOCK initialised (zeroed in `new`) bytes
        // owned by `self`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, BLOCK) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { alloc::dealloc(self.ptr, Self::layout()) }
    }
}

thread_local! {
    static BUF: RefCell<Option<AlignedBuf>> = const { RefCell::new(None) };
}

/// Creates `path` (which must not exist) holding `data`, fsynced. Large data
/// bypasses the page cache where the file system allows it.
#[cfg(test)]
pub fn create_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    create_synced_with_mode(path, data, 0o600)
}

/// [`create_synced`] with the file's permission bits (before the umask).
pub fn create_synced_with_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    if data.len() >= MIN_DIRECT {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(OFlags::DIRECT.bits() as i32)
            .open(path)
        {
            Ok(mut file) => {
                match write_direct(&mut file, data) {
                    Ok(()) => {}
                    // The device wants a larger alignment, or the file system
                    // accepted the flag at open but not at write: start over
                    // through the page cache.
                    Err(e) if e.raw_os_error() == Some(EINVAL) => {
                        clear_direct(&file)?;
                        file.set_len(0)?;
                        file.seek(SeekFrom::Start(0))?;
                        file.write_all(data)?;
                    }
                    Err(e) => return Err(e),
                }
                return file.sync_all();
            }
            Err(e) if e.raw_os_error() == Some(EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// Writes whole aligned blocks directly, then the unaligned tail normally.
fn write_direct(file: &mut File, data: &[u8]) -> io::Result<()> {
    let aligned_len = data.len() / ALIGN * ALIGN;
    BUF.with(|cell| -> io::Result<()> {
        let mut cell = cell.borrow_mut();
        let buf = cell.get_or_insert_with(AlignedBuf::new).as_mut_slice();
        for block in data[..aligned_len].chunks(BLOCK) {
            buf[..block.len()].copy_from_slice(block);
            file.write_all(&buf[..block.len()])?;
        }
        Ok(())
    })?;
    if aligned_len < data.len() {
        clear_direct(file)?;
        file.write_all(&data[aligned_len..])?;
    }
    Ok(())
}

fn clear_direct(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - OFlags::DIRECT)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_size_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(BLOCK * 2 + ALIGN * 3 + 17) as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in [
            0,
            1,
            MIN_DIRECT - 1,
            MIN_DIRECT,
            MIN_DIRECT + 1,
            BLOCK,
            BLOCK + 5,
            data.len(),
        ] {
            let path = dir.path().join(format!("f{len}"));
            create_synced(&path, &data[..len]).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), &data[..len], "length {len}");
        }
        // The target must be new: an existing object is never overwritten.
        let again = create_synced(&dir.path().join(format!("f{}", BLOCK)), &data[..BLOCK]);
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn buffer_starts_initialised() {
        // A buffer freed after use and allocated again gets the allocator's
        // recycled memory: it must still read as zeros, not as the last
        // thread's pack bytes (with `alloc::alloc` this memory is
        // uninitialised and the slice over it undefined behaviour).
        for _ in 0..4 {
            let mut buf = AlignedBuf::new();
            assert!(buf.as_mut_slice().iter().all(|&b| b == 0), "fresh buffer is not zeroed");
            buf.as_mut_slice().fill(0xa5);
        }
    }

    #[test]
    fn falls_back_where_direct_io_is_refused() {
        // tmpfs refuses O_DIRECT at open.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            eprintln!("no /dev/shm here: nothing to test");
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let data: Vec<u8> = (0..MIN_DIRECT as u32 * 3 + 11).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("pack");
        create_synced(&path, &data).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
