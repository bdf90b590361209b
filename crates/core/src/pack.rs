//! Pack files: many sealed blobs followed by a sealed header that lists them.
//!
//! ```text
//! blob 0 (sealed) | blob 1 (sealed) | ... | header (sealed postcard) | header length (u32 LE)
//! ```
//!
//! A pack's name is the BLAKE3 hash of all its bytes. Data and tree blobs go
//! to separate packs, so trees can be fetched without touching file data.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ObjectKind};
use crate::compress::Encoding;
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// An encoded directory ([`crate::tree::Tree`]).
    Tree,
}

/// One blob in a pack, as listed by the pack header and by index files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob (stored bytes, with nonce and tag).
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
    pub encoding: Encoding,
}

/// The decoded header of a pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackHeader {
    pub entries: Vec<PackEntry>,
}

/// Accumulates sealed blobs into one pack in memory.
#[derive(Debug)]
pub struct PackWriter {
    kind: BlobKind,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A complete pack, ready to be stored under `id`.
#[derive(Debug)]
pub struct FinishedPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn new(kind: BlobKind, capacity: usize) -> Self {
        Self::with_buffer(kind, Vec::with_capacity(capacity))
    }

    /// A writer that fills `buf` (emptied first): a finished pack's buffer
    /// used again, whose pages are already in memory.
    pub fn with_buffer(kind: BlobKind, mut buf: Vec<u8>) -> Self {
        buf.clear();
        PackWriter {
            kind,
            buf,
            entries: Vec::new(),
        }
    }

    pub fn kind(&self) -> BlobKind {
        self.kind
    }

    /// The buffer, for another pack.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals `plaintext` (a blob's stored encoding) straight into the pack
    /// and lists it: no sealed copy is made on the side.
    pub fn seal_and_add(&mut self, crypto: &Crypto, id: BlobId, raw_length: u32, encoding: Encoding, plaintext: &[u8]) {
        let start = self.buf.len();
        let offset = u32::try_from(start).expect("packs stay below 4 GiB");
        crypto.seal_into(plaintext, &mut self.buf);
        self.entries.push(PackEntry {
            kind: self.kind,
            id,
            offset,
            length: u32::try_from(self.buf.len() - start).expect("blobs stay below 4 GiB"),
            raw_length,
            encoding,
        });
    }

    /// Seals the header, appends it and its length, and names the pack.
    pub fn finish(mut self, crypto: &Crypto) -> FinishedPack {
        let header = PackHeader { entries: self.entries };
        let plain = postcard::to_allocvec(&header).expect("pack header encodes");
        let before = self.buf.len();
        crypto.seal_into(&plain, &mut self.buf);
        let header_len = u32::try_from(self.buf.len() - before).expect("header below 4 GiB");
        self.buf.extend_from_slice(&header_len.to_le_bytes());
        FinishedPack {
            id: PackId::hash_of(&self.buf),
            kind: self.kind,
            bytes: self.buf,
            entries: header.entries,
        }
    }
}

/// Decodes a pack header from the pack's tail bytes (which must end at the
/// pack's end), checking that every entry lies inside the pack.
pub fn decode_header(crypto: &Crypto, pack: &PackId, tail: &[u8], pack_size: u64) -> Result<PackHeader> {
    let what = || format!("pack {pack}");
    if tail.len() < 4 {
        return Err(Error::corrupt(what(), "shorter than its trailer"));
    }
    let (rest, len_bytes) = tail.split_at(tail.len() - 4);
    let header_len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    if header_len > rest.len() {
        return Err(Error::corrupt(
            what(),
            format!("header length {header_len} exceeds the pack"),
        ));
    }
    let sealed = &rest[rest.len() - header_len..];
    let plain = crypto
        .open(sealed)
        .map_err(|e| Error::corrupt(format!("header of pack {pack}"), e))?;
    parse_header(pack, &plain, pack_size.saturating_sub(4 + header_len as u64))
}

/// Parses a header's plaintext, checking that every entry lies within the
/// pack's first `blobs_end` bytes (the part before the header).
pub fn parse_header(pack: &PackId, plain: &[u8], blobs_end: u64) -> Result<PackHeader> {
    let header: PackHeader =
        crate::codec::decode_exact(plain).map_err(|e| Error::corrupt(format!("header of pack {pack}"), e))?;
    for entry in &header.entries {
        if u64::from(entry.offset) + u64::from(entry.length) > blobs_end {
            return Err(Error::corrupt(
                format!("pack {pack}"),
                format!("blob {} lies outside the pack", entry.id),
            ));
        }
    }
    Ok(header)
}

/// Reads and decodes the header of a stored pack of known size.
pub fn read_header(backend: &dyn Backend, crypto: &Crypto, pack: &PackId, pack_size: u64) -> Result<PackHeader> {
    let name = pack.to_hex();
    if pack_size < 4 {
        return Err(Error::corrupt(format!("pack {pack}"), "shorter than its trailer"));
    }
    let trailer = backend.read_range(ObjectKind::Pack, &name, pack_size - 4, 4)?;
    let header_len = u64::from(u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")));
    if header_len + 4 > pack_size {
        return Err(Error::corrupt(
            format!("pack {pack}"),
            format!("header length {header_len} exceeds the pack"),
        ));
    }
    let tail = backend.read_range(ObjectKind::Pack, &name, pack_size - 4 - header_len, header_len + 4)?;
    decode_header(crypto, pack, &tail, pack_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encryption, MasterKey};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let crypto = Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305);
            let mut writer = PackWriter::new(BlobKind::Data, 0);
            for blob in &blobs {
                writer.seal_and_add(&crypto, crypto.blob_id(blob), blob.len() as u32, Encoding::Raw, blob);
            }
            let pack = writer.finish(&crypto);
            prop_assert_eq!(pack.id, PackId::hash_of(&pack.bytes));
            let header = decode_header(&crypto, &pack.id, &pack.bytes, pack.bytes.len() as u64).unwrap();
            prop_assert_eq!(&header.entries, &pack.entries);
            for (entry, blob) in header.entries.iter().zip(&blobs) {
                let sealed = &pack.bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
                prop_assert_eq!(&crypto.open(sealed).unwrap(), blob);
            }
        }
    }

    #[test]
    fn damaged_header_is_reported() {
        let crypto = Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305);
        let mut writer = PackWriter::new(BlobKind::Tree, 0);
        writer.seal_and_add(&crypto, crypto.blob_id(b"x"), 1, Encoding::Raw, b"x");
        let mut pack = writer.finish(&crypto);
        let n = pack.bytes.len();
        pack.bytes[n - 10] ^= 1;
        assert!(decode_header(&crypto, &pack.id, &pack.bytes, n as u64).is_err());
        assert!(decode_header(&crypto, &pack.id, &pack.bytes[n - 2..], n as u64).is_err());
    }
}
