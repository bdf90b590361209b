//! The read-only snapshot view: lookups, listings, and reads that fetch
//! only the blobs covering the range asked for, through a bounded cache.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use snap_core::archiver::{self, ArchiveOptions, ParentChoice, Source};
use snap_core::backend::LocalBackend;
use snap_core::chunker::ChunkerParams;
use snap_core::keys::{KdfParams, Password};
use snap_core::lock::LockKind;
use snap_core::progress::NoProgress;
use snap_core::repo::{InitOptions, Repository};
use snap_core::tree::NodeKind;
use snap_core::vfs::{Vfs, VfsOptions, LATEST};

static NEVER: AtomicBool = AtomicBool::new(false);

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A repository (small chunks) with one snapshot of `src`: big (3 MiB),
/// d/small and an empty file.
fn fixture(dir: &Path) -> (Repository, Vec<u8>, std::path::PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let big = data(3 << 20, 1);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("d/small"), b"small").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let repo = Repository::init(
        Arc::new(LocalBackend::new(dir.join("repo"))),
        Some(&Password::new("vfs")),
        &InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            chunker: ChunkerParams {
                min_size: 16 << 10,
                avg_size: 64 << 10,
                max_size: 256 << 10,
            },
            ..InitOptions::default()
        },
        &dir.join("cache"),
    )
    .unwrap();
    let lock = repo.lock(LockKind::Shared, "create", Duration::ZERO, &NEVER).unwrap();
    let options = ArchiveOptions {
        source: Source::Paths(vec![src.clone()]),
        excludes: vec![],
        exclude_files: vec![],
        one_file_system: false,
        tags: vec![],
        host: "test".into(),
        parent: ParentChoice::None,
        compression: None,
        threads: 2,
        checkpoint_interval: None,
        selection: Default::default(),
        description: None,
        dry_run: false,
        list_changes: false,
    };
    archiver::archive(&repo, options, &NoProgress, &NEVER, &lock).unwrap();
    drop(lock);
    (repo, big, src)
}

fn components(root: &str, path: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = vec![root.as_bytes().to_vec()];
    out.extend(path.iter().skip(1).map(|c| c.as_bytes().to_vec()));
    out
}

#[test]
fn reads_fetch_only_the_blobs_covering_the_range_and_match_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, big, src) = fixture(dir.path());
    let snapshots = snap_core::snapshot::list(&repo).unwrap();
    let no_read_ahead = VfsOptions {
        read_ahead: 0,
        ..VfsOptions::default()
    };
    let vfs = Vfs::new(repo, snapshots.clone(), no_read_ahead);

    // The root: the snapshot's directory and latest.
    let root = vfs.list(&vfs.root()).unwrap();
    let names: Vec<String> = root.iter().map(|e| e.name_lossy()).collect();
    let dir_name = snap_core::vfs::snapshot_dir_name(&snapshots[0].0, &snapshots[0].1);
    assert_eq!(names, vec![dir_name.clone(), LATEST.to_string()]);

    let entry = vfs.lookup_path(&components(LATEST, &src.join("big"))).unwrap().unwrap();
    assert_eq!((entry.kind, entry.size), (NodeKind::File, big.len() as u64));
    let same = vfs
        .lookup_path(&components(&dir_name, &src.join("big")))
        .unwrap()
        .unwrap();
    assert_eq!(entry, same);
    assert!(vfs
        .lookup_path(&components(LATEST, &src.join("nope")))
        .unwrap()
        .is_none());
    let listing = vfs
        .list(&vfs.lookup_path(&components(LATEST, &src)).unwrap().unwrap())
        .unwrap();
    let names: Vec<String> = listing.iter().map(|e| e.name_lossy()).collect();
    assert_eq!(names, ["big", "d", "empty"]);

    let file = vfs.open(&entry).unwrap();
    let before = vfs.stats();
    assert_eq!(before.blobs_read, 0, "open reads no content");
    // 100 bytes inside one chunk: one blob read.
    let got = vfs.read(&file, 1_000_000, 100).unwrap();
    assert_eq!(got, &big[1_000_000..1_000_100]);
    assert_eq!(vfs.stats().blobs_read, 1);
    // Again: from the cache.
    assert_eq!(vfs.read(&file, 1_000_050, 10).unwrap(), &big[1_000_050..1_000_060]);
    assert_eq!(vfs.stats().blobs_read, 1);
    // A range over several chunks, the end, past the end.
    assert_eq!(vfs.read(&file, 10, 700_000).unwrap(), &big[10..700_010]);
    let n = big.len() as u64;
    assert_eq!(vfs.read(&file, n - 5, 100).unwrap(), &big[big.len() - 5..]);
    assert!(vfs.read(&file, n, 100).unwrap().is_empty());
    assert!(vfs.read(&file, n + 100, 100).unwrap().is_empty());
    let empty = vfs
        .lookup_path(&components(LATEST, &src.join("empty")))
        .unwrap()
        .unwrap();
    let empty = vfs.open(&empty).unwrap();
    assert!(vfs.read(&empty, 0, 10).unwrap().is_empty());
    // Every read so far touched well under the whole file.
    assert!(vfs.stats().blob_bytes_read < big.len() as u64 / 2, "{:?}", vfs.stats());
}

#[test]
fn a_sequential_read_through_a_small_cache_matches_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, big, src) = fixture(dir.path());
    let snapshots = snap_core::snapshot::list(&repo).unwrap();
    let options = VfsOptions {
        blob_cache_bytes: 512 << 10,
        ..VfsOptions::default()
    };
    let vfs = Vfs::new(repo, snapshots, options);
    let entry = vfs.lookup_path(&components(LATEST, &src.join("big"))).unwrap().unwrap();
    let file = vfs.open(&entry).unwrap();
    let mut out = Vec::new();
    loop {
        let got = vfs.read(&file, out.len() as u64, 128 << 10).unwrap();
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
        // The bound, plus at most the one blob kept over it (max 256 KiB).
        assert!(
            vfs.stats().blob_cache_bytes <= (512 << 10) + (256 << 10),
            "{:?}",
            vfs.stats()
        );
    }
    assert!(out == big, "sequential read differs");
}
