//! zstd compression of blobs. A blob is stored raw when compressing does not
//! make it smaller (already-compressed media, encrypted files).

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

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
    // One zstd context per thread and level: creating one per blob costs more
    // than compressing a small blob.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
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
    out.clear();
    let Compression::Zstd(level) = compression else {
        return false;
    };
    if data.len() < 64 {
        return false;
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().map(|(l, _)| *l) != Some(level) {
            match zstd::bulk::Compressor::new(level) {
                Ok(compressor) => *cell = Some((level, compressor)),
                Err(_) => return false,
            }
        }
        let Some((_, compressor)) = cell.as_mut() else {
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
    })
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
