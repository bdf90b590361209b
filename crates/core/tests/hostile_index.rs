//! An index file with a valid MAC (written by a buggy or hostile client
//! holding the key) whose entries overlap, run past the pack or claim absurd
//! sizes: restore, verify and repair report the blobs as damaged, restore
//! the rest, and never panic or allocate what the entries claim.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use snap_core::backend::{Backend, LocalBackend, ObjectKind};
use snap_core::compress::Encoding;
use snap_core::id::BlobId;
use snap_core::index::{self, IndexFile};
use snap_core::keys::{KdfParams, Password};
use snap_core::lock::LockKind;
use snap_core::pack::BlobKind;
use snap_core::packer::Packer;
use snap_core::progress::NoProgress;
use snap_core::repair::{self, PackOutcome, RepairPacksOptions};
use snap_core::repo::{InitOptions, Repository};
use snap_core::restorer::{self, RestoreOptions};
use snap_core::snapshot::{Snapshot, Summary};
use snap_core::tree::{Node, NodeKind, Tree};
use snap_core::verify::{self, DataSubset, VerifyOptions};

fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file(name: &str, blob: BlobId, size: usize) -> Node {
    let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    node.mode = 0o644;
    node.content = vec![blob];
    node.size = size as u64;
    node
}

#[test]
fn hostile_index_entries_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    // The test's own handle on the storage, to plant a hostile index file.
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let cache = dir.path().join("cache");
    let repo = Repository::init(backend.clone(), Some(&Password::new("pw")), &options, &cache).unwrap();

    // One pack: a, b, c (raw), z (compressible, so zstd) and far (its entry
    // will point past the pack's end). Another pack: ok, left honest.
    let contents: Vec<(&str, Vec<u8>)> = vec![
        ("a", noise(20_000, 1)),
        ("b", noise(20_000, 2)),
        ("c", noise(20_000, 3)),
        ("z", b"compressible ".repeat(3000)),
        ("far", noise(5_000, 4)),
    ];
    let packer = Packer::new(&repo, repo.config().compression).unwrap();
    let ids: Vec<BlobId> = contents
        .iter()
        .map(|(_, data)| packer.add(BlobKind::Data, data).unwrap().0)
        .collect();
    packer.finish().unwrap();
    let ok_data = noise(10_000, 9);
    let packer = Packer::new(&repo, repo.config().compression).unwrap();
    let ok_id = packer.add(BlobKind::Data, &ok_data).unwrap().0;
    packer.finish().unwrap();

    let mut nodes: Vec<Node> = contents
        .iter()
        .zip(&ids)
        .map(|((name, data), id)| file(name, *id, data.len()))
        .collect();
    nodes.push(file("ok", ok_id, ok_data.len()));
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let packer = Packer::new(&repo, repo.config().compression).unwrap();
    let root = packer.add(BlobKind::Tree, &Tree { nodes }.encode()).unwrap().0;
    packer.finish().unwrap();
    let snapshot = Snapshot {
        time: jiff::Timestamp::now(),
        host: "h".into(),
        username: "u".into(),
        paths: vec!["/x".into()],
        tags: vec![],
        tree: root,
        parent: None,
        program_version: "test".into(),
        summary: Summary::default(),
        description: None,
        original: None,
    };
    snapshot.save(&repo).unwrap();

    // Rewrite the index: a covers every other blob and runs past the last
    // one's end (into the header, still inside the file); far lies beyond the pack; z claims a
    // 3 GiB plaintext. Sealed with the repository's key: its MAC is valid.
    let old = index::list_ids(backend.as_ref()).unwrap();
    let mut packs = Vec::new();
    for id in &old {
        let bytes = backend.read(ObjectKind::Index, &id.to_hex()).unwrap();
        packs.extend(IndexFile::decode(repo.crypto(), id, &bytes).unwrap().packs);
    }
    let target_pack = packs
        .iter_mut()
        .find(|p| p.blobs.iter().any(|b| b.id == ids[0]))
        .expect("the pack of a");
    // The end of the last blob of the pack (the header follows).
    let end_of_blobs = target_pack.blobs.iter().map(|b| b.offset + b.length).max().unwrap();
    for entry in &mut target_pack.blobs {
        if entry.id == ids[0] {
            entry.length = end_of_blobs - entry.offset + 10;
        } else if entry.id == ids[3] {
            assert_eq!(entry.encoding, Encoding::Zstd);
            entry.raw_length = 3 << 30;
        } else if entry.id == ids[4] {
            entry.offset = u32::MAX - 100;
        }
    }
    repo.save_index(IndexFile {
        packs,
        supersedes: old.clone(),
    })
    .unwrap();
    for id in &old {
        backend.delete(ObjectKind::Index, &id.to_hex()).unwrap();
    }
    repo.sync_index().unwrap();

    // Restore: no panic; the honest file is exact, the others are reported.
    let target = dir.path().join("target");
    let result = restorer::restore(
        &repo,
        &snapshot,
        &RestoreOptions {
            target: target.clone(),
            ..RestoreOptions::default()
        },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(std::fs::read(target.join("ok")).unwrap(), ok_data);
    let named: Vec<String> = result
        .errors
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in ["a", "b", "c", "z", "far"] {
        assert!(
            named.iter().any(|n| n == name),
            "{name} not reported: {:?}",
            result.errors
        );
    }
    let messages: String = result.errors.iter().map(|(_, m)| format!("{m}\n")).collect();
    assert!(messages.contains("overlaps"), "{messages}");
    assert!(messages.contains("limit") || messages.contains("above"), "{messages}");

    // Verify reads the pack against its (honest) header and reports the
    // disagreement; no panic.
    let report = verify::verify(
        &repo,
        &VerifyOptions {
            read_data: Some(DataSubset::All),
        },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(report.has_errors());
    assert!(!report.damaged_packs.is_empty());

    // Repair salvages every blob by the pack's header: nothing is lost, and
    // a restore afterwards is exact.
    static CANCEL: AtomicBool = AtomicBool::new(false);
    let lock = repo
        .lock(LockKind::Exclusive, "repair", std::time::Duration::ZERO, &CANCEL)
        .unwrap();
    let stats = repair::repair_packs(
        &repo,
        &RepairPacksOptions::default(),
        &NoProgress,
        &AtomicBool::new(false),
        &lock,
    )
    .unwrap();
    let removed: Vec<_> = stats
        .packs
        .iter()
        .filter(|p| p.outcome == PackOutcome::Removed)
        .collect();
    assert_eq!(removed.len(), 1, "{stats:?}");
    assert_eq!(removed[0].blobs_salvaged, 5, "{stats:?}");
    assert!(stats.blobs_lost.is_empty(), "{stats:?}");
    let again = dir.path().join("again");
    let result = restorer::restore(
        &repo,
        &snapshot,
        &RestoreOptions {
            target: again.clone(),
            ..RestoreOptions::default()
        },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    for (name, data) in &contents {
        assert_eq!(&std::fs::read(again.join(name)).unwrap(), data, "{name}");
    }
}
