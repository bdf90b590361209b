//! Micro benchmarks of the backup pipeline's stages, each in bytes or
//! operations per second, beside the machine's raw BLAKE3 speed (the
//! physical limit of a pipeline that hashes every byte).
//!
//! `cargo bench --bench throughput` (or `just bench`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use snap_core::backend::{Backend, LocalBackend, ObjectKind};
use snap_core::chunker::{Chunker, ChunkerParams};
use snap_core::compress::{self, Compression};
use snap_core::crypto::{Crypto, Encryption, MasterKey};
use snap_core::id::{BlobId, IndexId, PackId};
use snap_core::index::cache::IndexCache;
use snap_core::index::{IndexFile, IndexedPack};
use snap_core::pack::{BlobKind, PackEntry, PackWriter};

const DATA_LEN: usize = 64 << 20;

/// Half compressible text-like data, half random, deterministic.
fn sample_data(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut xof = blake3::Hasher::new();
    xof.update(b"snap bench data");
    xof.finalize_xof().fill(&mut out[len / 2..]);
    let words = [
        &b"backup "[..],
        b"snapshot ",
        b"chunk ",
        b"repository ",
        b"restore ",
        b"\n",
    ];
    let mut at = 0;
    let mut i = 0usize;
    while at < len / 2 {
        let w = words[(out[len / 2 + (i % (len / 2))] as usize) % words.len()];
        let n = w.len().min(len / 2 - at);
        out[at..at + n].copy_from_slice(&w[..n]);
        at += n;
        i += 1;
    }
    out
}

fn crypto() -> Crypto {
    Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305)
}

fn bench_hashing(c: &mut Criterion) {
    let data = sample_data(DATA_LEN);
    let crypto = crypto();
    let chunker = Chunker::new(ChunkerParams::default(), &[7; 32]);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("blake3 raw (limit)", |b| b.iter(|| black_box(blake3::hash(&data))));
    group.bench_function("chunk", |b| {
        b.iter(|| {
            let mut chunks = chunker.chunks(&data[..], Some(data.len() as u64));
            let mut n = 0;
            while let Some(chunk) = chunks.next_chunk().unwrap() {
                n += chunk.len();
            }
            black_box(n)
        })
    });
    group.bench_function("chunk + keyed hash", |b| {
        b.iter(|| {
            let mut chunks = chunker.chunks(&data[..], Some(data.len() as u64));
            let mut last = BlobId([0; 32]);
            while let Some(chunk) = chunks.next_chunk().unwrap() {
                last = crypto.blob_id(chunk);
            }
            black_box(last)
        })
    });
    group.bench_function("compress (zstd 3) + seal", |b| {
        b.iter(|| {
            let mut stored = 0;
            for chunk in data.chunks(1 << 20) {
                let packed = compress::compress(chunk, Compression::Zstd(3));
                let payload = packed.as_deref().unwrap_or(chunk);
                stored += crypto.seal(payload).len();
            }
            black_box(stored)
        })
    });
    group.bench_function("open + decompress", |b| {
        let sealed: Vec<(Vec<u8>, bool, usize)> = data
            .chunks(1 << 20)
            .map(|chunk| match compress::compress(chunk, Compression::Zstd(3)) {
                Some(p) => (crypto.seal(&p), true, chunk.len()),
                None => (crypto.seal(chunk), false, chunk.len()),
            })
            .collect();
        b.iter(|| {
            for (blob, zstd, len) in &sealed {
                let opened = crypto.open(blob).unwrap();
                let plain = if *zstd {
                    compress::decompress(&opened, *len).unwrap()
                } else {
                    opened
                };
                black_box(plain);
            }
        })
    });
    group.finish();
}

fn bench_packs(c: &mut Criterion) {
    let crypto = crypto();
    let blob = sample_data(1 << 20);
    let sealed = crypto.seal(&blob);
    let mut group = c.benchmark_group("pack");
    group.throughput(Throughput::Bytes(16 * sealed.len() as u64));
    group.sample_size(10);
    group.bench_function("seal 16 MiB into a pack and write it to local disk", |b| {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        b.iter(|| {
            let mut writer = PackWriter::new(BlobKind::Data, 17 << 20);
            for i in 0..16u8 {
                writer.seal_and_add(
                    &crypto,
                    BlobId([i; 32]),
                    blob.len() as u32,
                    compress::Encoding::Raw,
                    &blob,
                );
            }
            let pack = writer.finish(&crypto);
            backend.write(ObjectKind::Pack, &pack.id.to_hex(), &pack.bytes).unwrap();
        })
    });
    group.finish();
}

fn bench_index(c: &mut Criterion) {
    const BLOBS: u32 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let crypto = crypto();
    let id_of = |i: u32| BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes());
    let files: Vec<(IndexId, IndexFile)> = (0..BLOBS / 1000)
        .map(|p| {
            let blobs = (0..1000)
                .map(|i| PackEntry {
                    kind: BlobKind::Data,
                    id: id_of(p * 1000 + i),
                    offset: i * 100,
                    length: 100,
                    raw_length: 200,
                    encoding: compress::Encoding::Zstd,
                })
                .collect();
            let file = IndexFile {
                packs: vec![IndexedPack {
                    id: PackId([p as u8; 32]),
                    kind: BlobKind::Data,
                    size: 100_000,
                    blobs,
                }],
                supersedes: vec![],
            };
            (IndexId::hash_of(&file.encode(&crypto)), file)
        })
        .collect();
    let cache = IndexCache::open(&dir.path().join("cache.redb"), "bench").unwrap();
    cache.insert(&files).unwrap();

    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("lookup x1000 (1M blobs, hits)", |b| {
        let reader = cache.reader().unwrap();
        let mut i = 0u32;
        b.iter(|| {
            for _ in 0..1000 {
                i = (i + 7919) % BLOBS;
                black_box(reader.lookup(&id_of(i)).unwrap().unwrap());
            }
        })
    });
    group.bench_function("lookup x1000 (misses)", |b| {
        let reader = cache.reader().unwrap();
        let mut i = BLOBS;
        b.iter(|| {
            for _ in 0..1000 {
                i += 1;
                black_box(reader.lookup(&id_of(i)).unwrap());
            }
        })
    });
    group.bench_function("insert 1000 blobs (one index file)", |b| {
        let mut n = BLOBS;
        b.iter_batched(
            || {
                n += 1000;
                let base = n;
                let blobs = (0..1000)
                    .map(|i| PackEntry {
                        kind: BlobKind::Data,
                        id: id_of(base + i),
                        offset: i * 100,
                        length: 100,
                        raw_length: 200,
                        encoding: compress::Encoding::Zstd,
                    })
                    .collect();
                vec![(
                    IndexId([0; 32]),
                    IndexFile {
                        packs: vec![IndexedPack {
                            id: PackId([1; 32]),
                            kind: BlobKind::Data,
                            size: 100_000,
                            blobs,
                        }],
                        supersedes: vec![],
                    },
                )]
            },
            |files| cache.insert(&files).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_hashing, bench_packs, bench_index);
criterion_main!(benches);
