//! Content-defined chunking: FastCDC (2020) with a keyed gear table.
//!
//! The cut-point search is `fastcdc::v2020::cut_gear`; this module owns the
//! gear table, which is derived from the repository's chunker key with BLAKE3
//! (borg does the same), so chunk boundaries do not reveal which known file is
//! stored. fastcdc's own seed only XORs one constant into its public table.
//! The streaming loop here hands out each chunk as an owned buffer without
//! holding more than two maximum-size chunks of the file in memory.

use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, select_masks, Normalization};
use serde::{Deserialize, Serialize};

/// Chunk size bounds in bytes, fixed per repository in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB (see docs/format.md for the reasoning).
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the bounds FastCDC 2020 accepts.
    pub fn validate(&self) -> Result<(), String> {
        let (min, avg, max) = (self.min_size as usize, self.avg_size as usize, self.max_size as usize);
        let ok = (fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX).contains(&min)
            && (fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&avg)
            && (fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&max)
            && min < avg
            && avg < max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {min}/{avg}/{max} are out of range: need even min < avg < max, \
                 min 64..1 MiB, avg 256..4 MiB, max 1 KiB..16 MiB"
            ))
        }
    }
}

/// A configured chunker: parameters, masks and the keyed gear tables.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker").field("params", &self.params).finish()
    }
}

impl Chunker {
    pub fn new(params: ChunkerParams, key: &[u8; 32]) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        let mut gear = Box::new([0u64; 256]);
        let mut xof = blake3::Hasher::new_keyed(key);
        xof.update(b"snap chunker gear table v1");
        let mut bytes = [0u8; 256 * 8];
        xof.finalize_xof().fill(&mut bytes);
        for (slot, word) in gear.iter_mut().zip(bytes.chunks_exact(8)) {
            *slot = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        }
        let mut gear_ls = Box::new([0u64; 256]);
        for (shifted, value) in gear_ls.iter_mut().zip(gear.iter()) {
            *shifted = value << 1;
        }
        Chunker {
            params,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The keyed gear table, for the published test vectors.
    #[cfg(test)]
    pub(crate) fn gear_table(&self) -> &[u64; 256] {
        &self.gear
    }

    /// Length of the first chunk of `data` (all of it when it is the last chunk).
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = self.params;
        let (_, len) = cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        len
    }

    /// Iterates the chunks of `reader`. `size_hint` (the file size, if known)
    /// keeps the buffer small for small files.
    pub fn chunks<R: Read>(&self, reader: R, size_hint: Option<u64>) -> Chunks<'_, R> {
        let cap = 2 * self.params.max_size as usize;
        let cap = match size_hint {
            Some(size) => (size as usize).saturating_add(1).clamp(cap.min(4096), cap),
            None => cap,
        };
        Chunks {
            chunker: self,
            reader,
            buf: Vec::with_capacity(cap),
            start: 0,
            eof: false,
        }
    }
}

/// Iterator over the chunks of a reader. Each item is one chunk's bytes.
pub struct Chunks<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl<R: Read> Chunks<'_, R> {
    /// Reads until the buffer holds a full maximum-size window or the reader ends.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunker.params.max_size as usize;
        if self.eof || self.buf.len() - self.start >= max {
            return Ok(());
        }
        // Move the unconsumed tail to the front, then read into the free space.
        self.buf.drain(..self.start);
        self.start = 0;
        let target = self.buf.capacity().max(max);
        while !self.eof && self.buf.len() < target {
            let old_len = self.buf.len();
            if self.buf.capacity() == old_len {
                self.buf.reserve(target - old_len);
            }
            let cap = self.buf.capacity().min(target);
            self.buf.resize(cap, 0);
            match self.reader.read(&mut self.buf[old_len..]) {
                Ok(0) => {
                    self.buf.truncate(old_len);
                    self.eof = true;
                }
                Ok(n) => self.buf.truncate(old_len + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(old_len),
                Err(e) => {
                    self.buf.truncate(old_len);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Chunks<'_, R> {
    /// The next chunk, borrowed from the internal buffer; `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill()?;
        let window = &self.buf[self.start..];
        if window.is_empty() {
            return Ok(None);
        }
        let len = self.chunker.cut(window);
        self.start += len;
        Ok(Some(&window[..len]))
    }
}

impl<R: Read> Iterator for Chunks<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().map(|c| c.map(<[u8]>::to_vec)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Chunker {
        let params = ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
        };
        params.validate().unwrap();
        Chunker::new(params, &[9u8; 32])
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut xof = blake3::Hasher::new();
        xof.update(&seed.to_le_bytes());
        xof.finalize_xof().fill(&mut out);
        out
    }

    fn cuts(chunker: &Chunker, data: &[u8]) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut at = 0;
        for chunk in chunker.chunks(data, None) {
            at += chunk.unwrap().len();
            offsets.push(at);
        }
        offsets
    }

    #[test]
    fn default_params_are_valid() {
        ChunkerParams::default().validate().unwrap();
        assert!(ChunkerParams {
            min_size: 3,
            avg_size: 1024,
            max_size: 4096
        }
        .validate()
        .is_err());
    }

    /// Regression: a maximum chunk below 2 KiB made the buffer sizing panic.
    #[test]
    fn tiny_chunk_sizes_work() {
        let params = ChunkerParams {
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
        };
        params.validate().unwrap();
        let chunker = Chunker::new(params, &[3u8; 32]);
        let data = pseudo_random(100_000, 9);
        let joined: Vec<u8> = chunker
            .chunks(&data[..], Some(data.len() as u64))
            .flat_map(|c| c.unwrap())
            .collect();
        assert_eq!(joined, data);
        let small: Vec<u8> = chunker.chunks(&data[..10], Some(10)).flat_map(|c| c.unwrap()).collect();
        assert_eq!(small, &data[..10]);
    }

    #[test]
    fn keys_change_cut_points() {
        let data = pseudo_random(200_000, 1);
        let a = small();
        let b = Chunker::new(a.params(), &[1u8; 32]);
        assert_ne!(cuts(&a, &data), cuts(&b, &data));
    }

    #[test]
    fn sizes_stay_in_bounds() {
        let chunker = small();
        let data = pseudo_random(1_000_000, 2);
        let sizes: Vec<usize> = chunker.chunks(&data[..], None).map(|c| c.unwrap().len()).collect();
        let (last, body) = sizes.split_last().unwrap();
        assert!(body.iter().all(|&s| (256..=4096).contains(&s)));
        assert!(*last <= 4096);
        let mean = data.len() / sizes.len();
        assert!((512..=2048).contains(&mean), "mean chunk {mean}");
    }

    /// A reader that returns at most 7 bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_input(len in 0usize..40_000, seed in any::<u64>()) {
            let chunker = small();
            let data = pseudo_random(len, seed);
            let joined: Vec<u8> = chunker.chunks(&data[..], Some(len as u64)).flat_map(|c| c.unwrap()).collect();
            prop_assert_eq!(&joined, &data);
            let trickled: Vec<u8> = chunker.chunks(Trickle(&data), None).flat_map(|c| c.unwrap()).collect();
            prop_assert_eq!(&trickled, &data);
        }

        #[test]
        fn an_edit_moves_only_nearby_cuts(seed in any::<u64>(), at in 0usize..60_000) {
            let chunker = small();
            let data = pseudo_random(60_000, seed);
            let mut edited = data.clone();
            edited[at] ^= 0xff;
            let before = cuts(&chunker, &data);
            let after = cuts(&chunker, &edited);
            // Cuts well past the edit (beyond four max-size chunks) are unchanged.
            let far = |v: &Vec<usize>| v.iter().copied().filter(|&c| c > at + 4 * 4096).collect::<Vec<_>>();
            prop_assert_eq!(far(&before), far(&after));
        }
    }
}
