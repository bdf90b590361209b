//! Reading blobs out of a pack: one range read, then every blob opened,
//! decompressed and checked against its id.
//!
//! The entries that say where blobs lie come from index files or a pack's
//! header, and either may have been written by a buggy or hostile client
//! holding the key (its MAC is then valid). So nothing here trusts them:
//! every entry is checked against the bytes actually read before it is
//! sliced, entries that overlap are refused, and no allocation is sized by a
//! claim alone (the read is bounded by the stored pack, a blob by
//! [`MAX_BLOB_SIZE`], decompression by the compressed frame's own size
//! field, see [`crate::compress::decompress_into`]). A bad entry costs only
//! its own blob, reported as damaged; it never panics or aborts the others.
//!
//! restore, verify, prune, repair and single-blob reads all go through
//! [`Repository::read_pack_blobs`] or [`Repository::decode_pack_blobs`]; the
//! operations only decide which entries they want.

use crate::backend::ObjectKind;
use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::index::cache::BlobLocation;
use crate::pack::PackEntry;
use crate::repo::Repository;

/// Largest plaintext of one blob snap reads (and the largest any snap
/// writes: data chunks are at most 16 MiB, and a tree this large would be a
/// directory of millions of entries). A larger claim is refused before
/// anything is allocated for it.
pub const MAX_BLOB_SIZE: u32 = 1 << 30;

/// Largest stored (sealed) length of one blob.
const MAX_SEALED: u64 = MAX_BLOB_SIZE as u64 + (NONCE_LEN + TAG_LEN) as u64;

/// The buffers one thread reuses across reads: the bytes read, and the
/// plaintext of a compressed blob (the others are opened in place).
#[derive(Debug, Default)]
pub struct BlobBuffers {
    bytes: Vec<u8>,
    scratch: Vec<u8>,
}

impl BlobBuffers {
    pub const fn new() -> Self {
        BlobBuffers {
            bytes: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl AsRef<PackEntry> for PackEntry {
    fn as_ref(&self) -> &PackEntry {
        self
    }
}

impl AsRef<PackEntry> for BlobLocation {
    fn as_ref(&self) -> &PackEntry {
        &self.entry
    }
}

impl Repository {
    /// Reads the part of `pack` that holds `entries` with one request and
    /// calls `each` once per entry, in offset order, with the blob's
    /// plaintext (checked against its id) or why it cannot be had.
    ///
    /// `Err` only when the read itself fails; `each` was then not called,
    /// and every entry is lost to the caller.
    pub fn read_pack_blobs<E: AsRef<PackEntry>>(
        &self,
        pack: &PackId,
        entries: &[E],
        bufs: &mut BlobBuffers,
        each: impl FnMut(&E, Result<&[u8]>),
    ) -> Result<()> {
        // The span to read, from the entries that could be real: one claiming
        // an impossible length must not make the read (or its buffer) huge,
        // nor fail the read for its neighbours. It is reported by the decode.
        let mut start = u64::MAX;
        let mut end = 0u64;
        for e in entries {
            let e = e.as_ref();
            if u64::from(e.length) <= MAX_SEALED {
                start = start.min(u64::from(e.offset));
                end = end.max(u64::from(e.offset) + u64::from(e.length));
            }
        }
        if start < end {
            // The backend reads exactly this many bytes or fails (it checks
            // the length against the stored object before allocating).
            self.backend()
                .read_range_into(ObjectKind::Pack, &pack.to_hex(), start, end - start, &mut bufs.bytes)?;
        } else {
            start = 0;
            bufs.bytes.clear();
        }
        self.decode_pack_blobs(pack, start, &mut bufs.bytes, entries, &mut bufs.scratch, each);
        Ok(())
    }

    /// The checking half of [`Repository::read_pack_blobs`], for callers
    /// that already hold the bytes (a whole pack read for its hash): `bytes`
    /// are the pack's bytes from offset `base` on. Blobs are opened where
    /// they lie, so `bytes` are changed; `scratch` holds the plaintext of
    /// compressed blobs.
    pub fn decode_pack_blobs<E: AsRef<PackEntry>>(
        &self,
        pack: &PackId,
        base: u64,
        bytes: &mut [u8],
        entries: &[E],
        scratch: &mut Vec<u8>,
        mut each: impl FnMut(&E, Result<&[u8]>),
    ) {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| entries[i].as_ref().offset);
        let read_end = base + bytes.len() as u64;
        // End of the last blob handed out: blobs are opened in place, so one
        // that overlaps it would be read from bytes already changed (and a
        // real pack never has overlapping blobs).
        let mut taken_end = 0u64;
        for i in order {
            let e = entries[i].as_ref();
            let location = BlobLocation { pack: *pack, entry: *e };
            let what = || format!("blob {} in pack {pack}", e.id);
            let (offset, end) = (u64::from(e.offset), u64::from(e.offset) + u64::from(e.length));
            let result = if u64::from(e.length) > MAX_SEALED || e.raw_length > MAX_BLOB_SIZE {
                Err(Error::corrupt(
                    what(),
                    format!(
                        "its index entry claims {} stored and {} plain bytes, above the limit of {MAX_BLOB_SIZE}",
                        e.length, e.raw_length
                    ),
                ))
            } else if offset < base || end > read_end {
                Err(Error::corrupt(
                    what(),
                    format!("its index entry ({offset}..{end}) lies outside the pack's bytes ({base}..{read_end})"),
                ))
            } else if offset < taken_end {
                Err(Error::corrupt(
                    what(),
                    format!("its index entry ({offset}..{end}) overlaps another blob (which ends at {taken_end})"),
                ))
            } else {
                taken_end = end;
                let sealed = &mut bytes[(offset - base) as usize..(end - base) as usize];
                self.decode_blob_in_place(&location, sealed, scratch)
            };
            each(&entries[i], result);
        }
    }
}
