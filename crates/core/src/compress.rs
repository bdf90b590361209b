//! zstd compression of blobs. A blob is stored raw when compressing does not
//! make it smaller (already-compressed media, encrypted files).

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};

/// How a stored blob is encoded, recorded per blob in the pack header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    Raw,
    Zstd,
}

/// A compression choice: off, or a zstd level 1..=22.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Compression {
    Off,
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Off => f.write_str("off"),
            Compression::Zstd(level) => write!(f, "{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// `off`, `auto` (level 3), `max` (level 19) or a level `1`..`22`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Compression::Off),
            "auto" => Ok(Compression::Zstd(3)),
            "max" => Ok(Compression::Zstd(19)),
            n => match n.parse::<i32>() {
                Ok(level @ 1..=22) => Ok(Compression::Zstd(level)),
                _ => Err(format!("compression must be off, auto, max or 1..22, not '{s}'")),
            },
        }
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

thread_local! {
    // One zstd context per thread and level for `compress` (trees for the
    // local cache, small): creating one per blob costs more than
    // compressing a small blob. Blobs for packs use the packer's `Slots`.
    static COMPRESSOR: RefCell<Context> = const { RefCell::new(None) };
    // Likewise for decompression, which a restore does once per blob.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` with `compression`. Returns `None` when the result would
/// not be smaller, so the caller stores the blob raw.
pub fn compress(data: &[u8], compression: Compression) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    compress_into(data, compression, &mut out).then_some(out)
}

/// [`compress`] into `out` (replacing its contents), so that a caller
/// compressing many blobs reuses one buffer instead of faulting in fresh
/// pages for every blob. Returns whether `out` holds a smaller encoding.
pub fn compress_into(data: &[u8], compression: Compression, out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|cell| compress_with(&mut cell.borrow_mut(), data, compression, out))
}

/// A zstd context of one level, kept from blob to blob.
type Context = Option<(i32, zstd::bulk::Compressor<'static>)>;

/// Compresses `data` into `out` (replacing its contents) with `context`,
/// made anew when it is of another level; whether the encoding is smaller
/// than `data` (`out` is left empty when not).
fn compress_with(context: &mut Context, data: &[u8], compression: Compression, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Compression::Zstd(level) = compression else {
        return false;
    };
    if data.len() < 64 {
        return false;
    }
    if context.as_ref().map(|(l, _)| *l) != Some(level) {
        match zstd::bulk::Compressor::new(level) {
            Ok(compressor) => *context = Some((level, compressor)),
            Err(_) => return false,
        }
    }
    let Some((_, compressor)) = context.as_mut() else {
        return false;
    };
    // Room for one byte less than the input: an encoding that does not
    // fit is not wanted, and zstd stops with an error instead.
    out.reserve(data.len() - 1);
    let fits = match compressor.compress_to_buffer(data, out) {
        Ok(n) => n < data.len(),
        Err(_) => false,
    };
    if !fits {
        out.clear();
    }
    fits
}

/// The largest output buffer a compression slot keeps between blobs (two
/// average chunks; larger blobs are rare and get a buffer of their own).
const SLOT_BUF_KEPT: usize = 2 << 20;

/// A zstd context and an output buffer, kept from blob to blob.
#[derive(Default)]
struct Slot {
    context: Context,
    buf: Vec<u8>,
}

/// Compression slots: at most `limit` blobs are compressed at once, each
/// with a context and an output buffer kept for the next. A backup runs
/// more workers than cores so that some wait for the disk while others
/// work, but a context and buffer for 1 MiB chunks is 3-4 MB: with one per
/// worker, a large file's first backup peaked at 103 MB with 8 workers
/// against 90 MB with 4. Owned by the packer, so the memory goes with it
/// (a long-running `snap daemon` keeps none between backups).
pub struct Slots {
    /// The idle slots, and how many exist.
    state: Mutex<(Vec<Slot>, usize)>,
    freed: Condvar,
    limit: usize,
}

impl Slots {
    /// Slots for the cores plus [`crate::pool::WAITING`] compressions at once.
    pub fn for_cores() -> Slots {
        Slots::new(std::thread::available_parallelism().map_or(2, |n| n.get()) + crate::pool::WAITING)
    }

    fn new(limit: usize) -> Slots {
        Slots {
            state: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
            limit,
        }
    }

    /// Waits for a free slot.
    pub fn begin(&self) -> Compressing<'_> {
        let mut state = self.state.lock().expect("compression slots lock");
        loop {
            if let Some(slot) = state.0.pop() {
                return Compressing(Some(slot), self);
            }
            if state.1 < self.limit {
                state.1 += 1;
                return Compressing(Some(Slot::default()), self);
            }
            state = self.freed.wait(state).expect("compression slots lock");
        }
    }
}

/// The right to compress one blob, with the context and buffer to do it:
/// taken before compressing and held until the compressed bytes are used
/// (sealed into a pack), given back when dropped. Nothing that waits for
/// another slot may run while one is held.
pub struct Compressing<'a>(Option<Slot>, &'a Slots);

impl Compressing<'_> {
    /// Compresses `data` into this slot's buffer; whether that is a
    /// smaller encoding, as [`compress_into`].
    pub fn compress(&mut self, data: &[u8], compression: Compression) -> bool {
        let slot = self.0.as_mut().expect("held until dropped");
        compress_with(&mut slot.context, data, compression, &mut slot.buf)
    }

    /// The encoding of the last [`Compressing::compress`] that returned true.
    pub fn output(&self) -> &[u8] {
        &self.0.as_ref().expect("held until dropped").buf
    }
}

impl Drop for Compressing<'_> {
    fn drop(&mut self) {
        let Some(mut slot) = self.0.take() else {
            return;
        };
        // A buffer grown for an unusually large blob is not kept.
        if slot.buf.capacity() > SLOT_BUF_KEPT {
            slot.buf = Vec::new();
        }
        let slots = self.1;
        let mut state = slots.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.0.push(slot);
        slots.freed.notify_one();
    }
}

/// Decompresses a blob whose plaintext is exactly `raw_len` bytes.
pub fn decompress(data: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress_into(data, raw_len, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out` (replacing its contents), so that a caller
/// decompressing many blobs can reuse one allocation.
///
/// `raw_len` comes from an index or pack header, which a hostile writer
/// holding the key can fill with anything: it is checked before the output
/// is reserved, against the blob size limit and against the content size
/// the compressed frame itself records (snap always writes one), so a claim
/// the data cannot back allocates nothing.
pub fn decompress_into(data: &[u8], raw_len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
    out.clear();
    if raw_len > crate::packread::MAX_BLOB_SIZE as usize {
        return Err(invalid(format!(
            "claims {raw_len} bytes decompressed, above the limit of {}",
            crate::packread::MAX_BLOB_SIZE
        )));
    }
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(size)) if size == raw_len as u64 => {}
        Ok(Some(size)) => {
            return Err(invalid(format!(
                "the compressed frame holds {size} bytes, header says {raw_len}"
            )))
        }
        // Not written by snap, but valid zstd: the limit above still bounds it.
        Ok(None) => {}
        Err(_) => return Err(invalid("not a zstd frame".into())),
    }
    out.reserve(raw_len);
    let written = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decompressor = match cell.as_mut() {
            Some(d) => d,
            None => cell.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress_to_buffer(data, out)
    })?;
    if written != raw_len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("decompressed to {written} bytes, header says {raw_len}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_incompressible() {
        let text = b"hello world ".repeat(1000);
        let packed = compress(&text, Compression::Zstd(3)).unwrap();
        assert!(packed.len() < text.len());
        assert_eq!(decompress(&packed, text.len()).unwrap(), text);
        assert!(decompress(&packed, text.len() - 1).is_err());

        let mut noise = vec![0u8; 4096];
        crate::crypto::fill_random(&mut noise);
        assert!(compress(&noise, Compression::Zstd(3)).is_none());
        assert!(compress(&text, Compression::Off).is_none());
    }

    /// No more blobs are compressed at once than there are slots: one more
    /// waits until a slot is given back, and then reuses its context.
    #[test]
    fn compressions_at_once_are_bounded_by_the_slots() {
        let slots = std::sync::Arc::new(Slots::new(2));
        let text = b"hello world ".repeat(1000);
        let mut first = slots.begin();
        let second = slots.begin();
        assert!(first.compress(&text, Compression::Zstd(3)));
        assert_eq!(decompress(first.output(), text.len()).unwrap(), text);
        let (done, waited) = std::sync::mpsc::channel();
        let text2 = text.clone();
        let shared = slots.clone();
        let third = std::thread::spawn(move || {
            let slots = shared;
            let mut third = slots.begin();
            assert!(third.compress(&text2, Compression::Zstd(3)));
            done.send(third.output().to_vec()).unwrap();
        });
        assert!(
            waited.recv_timeout(std::time::Duration::from_millis(200)).is_err(),
            "a third compression ran beside two slots held"
        );
        drop(first);
        let out = waited.recv().unwrap();
        assert_eq!(decompress(&out, text.len()).unwrap(), text);
        third.join().unwrap();
        drop(second);
        assert_eq!(slots.state.lock().unwrap().1, 2, "no slot made beyond the limit");
    }

    #[test]
    fn absurd_raw_length_is_refused_before_allocating() {
        let text = b"hello world ".repeat(1000);
        let packed = compress(&text, Compression::Zstd(3)).unwrap();
        let mut out = Vec::new();
        // A claim of 3 GiB for 12 KB of text: refused, nothing reserved.
        let err = decompress_into(&packed, 3 << 30, &mut out).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        assert_eq!(out.capacity(), 0);
        // Below the limit but above what the frame holds: likewise.
        let err = decompress_into(&packed, 500 << 20, &mut out).unwrap_err();
        assert!(err.to_string().contains("frame holds"), "{err}");
        assert_eq!(out.capacity(), 0);
        assert!(decompress_into(b"not zstd at all", 10, &mut out).is_err());
        decompress_into(&packed, text.len(), &mut out).unwrap();
        assert_eq!(out, text);
    }

    #[test]
    fn parses_choices() {
        assert_eq!("auto".parse::<Compression>().unwrap(), Compression::Zstd(3));
        assert_eq!("off".parse::<Compression>().unwrap(), Compression::Off);
        assert_eq!("22".parse::<Compression>().unwrap(), Compression::Zstd(22));
        assert!("23".parse::<Compression>().is_err());
        assert!("0".parse::<Compression>().is_err());
    }
}
