//! Index files: immutable objects listing packs and the blobs in them.
//!
//! The repository's index is the union of its index files. They are written
//! during a backup after every few packs (so an interrupted backup keeps what
//! it uploaded) and at its end. The local [`cache`] (redb) is derived from
//! them and can always be rebuilt.

pub mod cache;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ObjectKind};
use crate::compress;
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::{IndexId, PackId};
use crate::pack::{BlobKind, PackEntry};

/// One pack as listed in an index file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    pub id: PackId,
    pub kind: BlobKind,
    /// Total size of the pack file in bytes.
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

/// The content of one index file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
    /// Index files whose content this one replaces (written by prune and
    /// repair, which delete those files afterwards).
    pub supersedes: Vec<IndexId>,
}

/// The ids of the repository's index files. Names that are not ids are
/// left out (`verify` reports them).
pub fn list_ids(backend: &dyn Backend) -> Result<Vec<IndexId>> {
    Ok(backend
        .list(ObjectKind::Index)?
        .into_iter()
        .filter_map(|o| IndexId::from_hex(&o.name).ok())
        .collect())
}

impl IndexFile {
    /// postcard, then zstd, then sealed, in one buffer: the serializer
    /// writes straight into the compressor, which writes after the length,
    /// and the result is sealed where it lies. A merged index file of 100k
    /// blobs is about 8 MB of postcard; holding it, its compressed copy and
    /// the sealed copy at once was a backup's largest allocation.
    pub fn encode(&self, crypto: &Crypto) -> Vec<u8> {
        let raw_len = postcard::experimental::serialized_size(self).expect("index encodes");
        let prefix = crypto.seal_prefix();
        let mut framed = vec![0u8; prefix];
        framed.extend_from_slice(&(raw_len as u64).to_le_bytes());
        let mut encoder = zstd::stream::Encoder::new(framed, 3).expect("zstd at level 3");
        // The frame records its content size, as every zstd frame snap writes.
        encoder
            .set_pledged_src_size(Some(raw_len as u64))
            .expect("zstd takes a pledged size");
        // postcard writes field by field; the buffer saves a compressor call per field.
        let buffered =
            postcard::to_io(self, std::io::BufWriter::with_capacity(64 << 10, encoder)).expect("index encodes");
        let encoder = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .expect("zstd into memory");
        let mut sealed = encoder.finish().expect("zstd into memory");
        crypto.seal_in_place(&mut sealed);
        sealed
    }

    pub fn decode(crypto: &Crypto, id: &IndexId, bytes: &[u8]) -> Result<Self> {
        let what = || format!("index file {id}");
        if IndexId::hash_of(bytes) != *id {
            return Err(Error::corrupt(what(), "its content does not match its name"));
        }
        let framed = crypto.open(bytes).map_err(|e| Error::corrupt(what(), e))?;
        Self::parse(&framed).map_err(|reason| Error::corrupt(what(), reason))
    }

    /// Parses the opened bytes of an index file: raw length, then zstd(postcard).
    pub fn parse(framed: &[u8]) -> std::result::Result<Self, String> {
        if framed.len() < 8 {
            return Err("too short".into());
        }
        let raw_len = u64::from_le_bytes(framed[..8].try_into().expect("8 bytes"));
        // Index files written by snap stay far below this; a larger claim could
        // only serve to exhaust memory.
        if raw_len > MAX_INDEX_PLAINTEXT {
            return Err(format!("claims {raw_len} bytes"));
        }
        let plain = compress::decompress(&framed[8..], raw_len as usize).map_err(|e| e.to_string())?;
        crate::codec::decode_exact(&plain)
    }
}

/// Upper bound of an index file's decoded size. prune and repair write at
/// most 2000 packs per file, about 25 MB with small chunks.
const MAX_INDEX_PLAINTEXT: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Encoding;
    use crate::crypto::{Encryption, MasterKey};
    use crate::id::BlobId;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = PackEntry> {
        (
            any::<[u8; 32]>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
        )
            .prop_map(|(id, offset, length, raw_length, tree)| PackEntry {
                kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                id: BlobId(id),
                offset,
                length,
                raw_length,
                encoding: if tree { Encoding::Zstd } else { Encoding::Raw },
            })
    }

    proptest! {
        #[test]
        fn index_round_trip(packs in proptest::collection::vec((any::<[u8; 32]>(), any::<u64>(), proptest::collection::vec(entry(), 0..10)), 0..10)) {
            let crypto = Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305);
            let file = IndexFile {
                packs: packs.into_iter().map(|(id, size, blobs)| IndexedPack { id: PackId(id), kind: BlobKind::Data, size, blobs }).collect(),
                supersedes: vec![IndexId([3; 32])],
            };
            let bytes = file.encode(&crypto);
            let id = IndexId::hash_of(&bytes);
            prop_assert_eq!(IndexFile::decode(&crypto, &id, &bytes).unwrap(), file.clone());
            // The frame records its content size, which decoding checks.
            let framed = crypto.open(&bytes).unwrap();
            let raw_len = u64::from_le_bytes(framed[..8].try_into().unwrap());
            prop_assert_eq!(zstd::zstd_safe::get_frame_content_size(&framed[8..]).unwrap(), Some(raw_len));
            prop_assert_eq!(raw_len as usize, postcard::to_allocvec(&file).unwrap().len());
            prop_assert!(IndexFile::decode(&crypto, &IndexId([0; 32]), &bytes).is_err());
        }
    }
}
