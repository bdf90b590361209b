//! Storage faults injected under the engine (backend::faulty): a crash, an
//! error or a full disk at the N-th write of a backup or a prune must leave
//! a repository that verifies clean and restores every snapshot exactly; a
//! storage that silently truncates must be caught by verify and restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use snap_core::archiver::{self, ArchiveOptions, ParentChoice, Source};
use snap_core::backend::faulty::{Action, Fault, FaultyBackend, Op};
use snap_core::backend::{Backend, LocalBackend, ObjectKind};
use snap_core::chunker::ChunkerParams;
use snap_core::keys::{KdfParams, Password};
use snap_core::lock::LockKind;
use snap_core::progress::NoProgress;
use snap_core::prune::{self, PruneOptions};
use snap_core::repo::{InitOptions, Repository};
use snap_core::restorer::{self, RestoreOptions};
use snap_core::snapshot;
use snap_core::verify::{self, DataSubset, VerifyOptions};

const PASSWORD: &str = "fault tests";

/// The cancel flag a lost lock would set; nothing here loses one.
static NEVER_CANCELLED: AtomicBool = AtomicBool::new(false);

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        let options = InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            chunker: ChunkerParams {
                min_size: 4096,
                avg_size: 16384,
                max_size: 65536,
            },
            pack_size: 1 << 20,
            ..InitOptions::default()
        };
        Repository::init(
            fixture.local(),
            Some(&Password::new(PASSWORD)),
            &options,
            &fixture.cache(),
        )
        .unwrap();
        fixture
    }

    fn local(&self) -> Arc<dyn Backend> {
        Arc::new(LocalBackend::new(self.dir.path().join("repo")))
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn open(&self, backend: Arc<dyn Backend>) -> Repository {
        Repository::open(backend, Some(&Password::new(PASSWORD)), &self.cache()).unwrap()
    }

    fn faulty(&self, faults: Vec<Fault>) -> Repository {
        let backend = FaultyBackend::new(LocalBackend::new(self.dir.path().join("repo")), faults);
        self.open(Arc::new(backend))
    }

    fn source(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write_tree(root: &Path, seed: u8, files: usize) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..files {
        let mut data = vec![0u8; 20_000 + i * 7_000];
        let mut xof = blake3::Hasher::new();
        xof.update(&[seed, i as u8]);
        xof.finalize_xof().fill(&mut data);
        let dir = if i % 2 == 0 {
            root.to_path_buf()
        } else {
            root.join("sub")
        };
        std::fs::write(dir.join(format!("f{i}.bin")), data).unwrap();
    }
    std::fs::write(root.join("text.txt"), "compressible text\n".repeat(3000)).unwrap();
}

fn backup(repo: &Repository, source: &Path) -> snap_core::Result<archiver::ArchiveResult> {
    let options = ArchiveOptions {
        source: Source::Paths(vec![source.to_path_buf()]),
        excludes: vec![],
        exclude_files: vec![],
        one_file_system: false,
        tags: vec![],
        host: "test".into(),
        parent: ParentChoice::Latest,
        compression: None,
        threads: 2,
        checkpoint_interval: None,
        selection: Default::default(),
        description: None,
        dry_run: false,
        list_changes: false,
    };
    let lock = repo.lock(LockKind::Shared, "create", Duration::ZERO, &NEVER_CANCELLED)?;
    archiver::archive(repo, options, &NoProgress, &AtomicBool::new(false), &lock)
}

fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

/// Verify with --read-data finds no error, and every snapshot restores to
/// the tree recorded for it.
fn assert_whole(fixture: &Fixture, expected: &BTreeMap<String, BTreeMap<PathBuf, Vec<u8>>>, what: &str) {
    let repo = fixture.open(fixture.local());
    let report = verify::verify(
        &repo,
        &VerifyOptions {
            read_data: Some(DataSubset::All),
        },
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(!report.has_errors(), "{what}: {:#?}", report.problems);
    for (id, snap) in snapshot::list(&repo).unwrap() {
        let Some(tree) = expected.get(&id.to_hex()) else {
            continue;
        };
        let target = tempfile::tempdir().unwrap();
        let result = restorer::restore(
            &repo,
            &snap,
            &RestoreOptions {
                target: target.path().to_path_buf(),
                ..RestoreOptions::default()
            },
            &NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(result.errors.is_empty(), "{what}: {:?}", result.errors);
        let source = Path::new(&snap.paths[0]);
        let restored = target.path().join(source.strip_prefix("/").unwrap());
        assert_eq!(&contents(&restored), tree, "{what}: snapshot {id} restores exactly");
    }
}

/// How many writes a clean backup of `source` makes, to place faults.
fn writes_of_a_backup(source: &Path) -> u64 {
    let fixture = Fixture::new();
    let fault = Fault::at(Op::Write, None, u64::MAX, Action::Crash);
    let backend = Arc::new(FaultyBackend::new(
        LocalBackend::new(fixture.dir.path().join("repo")),
        vec![fault],
    ));
    let repo = fixture.open(backend.clone());
    backup(&repo, source).unwrap();
    fixture.local().list(ObjectKind::Pack).unwrap().len() as u64
        + fixture.local().list(ObjectKind::Index).unwrap().len() as u64
        + 2 // the lock and the snapshot
}

#[test]
fn crash_or_error_at_any_write_of_a_backup_leaves_a_valid_repository() {
    let fixture = Fixture::new();
    let first_src = fixture.source("first");
    write_tree(&first_src, 1, 6);
    let repo = fixture.open(fixture.local());
    let first = backup(&repo, &first_src).unwrap();
    let mut expected = BTreeMap::new();
    expected.insert(first.id.to_hex(), contents(&first_src));

    let src = fixture.source("second");
    write_tree(&src, 2, 12);
    let writes = writes_of_a_backup(&src);
    assert!(writes >= 4, "the backup makes several writes ({writes})");
    let mut failures = 0;
    for n in 1..=writes {
        for action in [Action::Crash, Action::Fail(std::io::ErrorKind::Other)] {
            let repo = fixture.faulty(vec![Fault::at(Op::Write, None, n, action)]);
            if backup(&repo, &src).is_err() {
                failures += 1;
            }
            assert_whole(&fixture, &expected, &format!("after {action:?} at write {n}"));
        }
    }
    assert!(
        failures as u64 >= writes,
        "faults made backups fail ({failures} of {})",
        2 * writes
    );
    // After all that, a clean backup works and restores.
    let repo = fixture.open(fixture.local());
    let done = backup(&repo, &src).unwrap();
    expected.insert(done.id.to_hex(), contents(&src));
    assert_whole(&fixture, &expected, "after a clean backup");
}

#[test]
fn full_disk_fails_cleanly() {
    let fixture = Fixture::new();
    let src = fixture.source("src");
    write_tree(&src, 3, 10);
    let backend =
        FaultyBackend::new(LocalBackend::new(fixture.dir.path().join("repo")), vec![]).with_space_limit(200_000);
    let repo = fixture.open(Arc::new(backend));
    let error = backup(&repo, &src).unwrap_err();
    assert!(error.to_string().contains("no space"), "{error}");
    assert!(snapshot::list(&fixture.open(fixture.local())).unwrap().is_empty());
    assert_whole(&fixture, &BTreeMap::new(), "after a full disk");
}

#[test]
fn silently_truncated_pack_is_caught_by_verify_and_restore() {
    caught_when_storage_truncates_pack_writes(&[1]);
}

/// Every pack truncated, the tree pack among them: the restore cannot begin
/// and must fail with an error naming the pack, writing nothing.
#[test]
fn silently_truncated_tree_pack_fails_the_restore_cleanly() {
    caught_when_storage_truncates_pack_writes(&[1, 2, 3, 4]);
}

fn caught_when_storage_truncates_pack_writes(writes: &[u64]) {
    let fixture = Fixture::new();
    let src = fixture.source("src");
    write_tree(&src, 4, 10);
    let faults = writes
        .iter()
        .map(|&nth| Fault::at(Op::Write, Some(ObjectKind::Pack), nth, Action::Truncate))
        .collect();
    let repo = fixture.faulty(faults);
    let done = backup(&repo, &src).expect("the storage claims success");
    let repo = fixture.open(fixture.local());
    let report = verify::verify(&repo, &VerifyOptions::default(), &NoProgress, &AtomicBool::new(false)).unwrap();
    assert!(report.has_errors(), "verify notices the short pack");
    // Past the local caches: the backup cached the trees it stored, and a
    // truncated tree pack would be read from there (checked, and right).
    let repo = repo.without_cache();
    let target = tempfile::tempdir().unwrap();
    let result = restorer::restore(
        &repo,
        &done.snapshot,
        &RestoreOptions {
            target: target.path().to_path_buf(),
            ..RestoreOptions::default()
        },
        &NoProgress,
        &AtomicBool::new(false),
    );
    // Which pack the storage truncated depends on upload order. If it held
    // the root tree, nothing can be restored, and the restore must say so
    // rather than write anything.
    let result = match result {
        Ok(result) => result,
        Err(error) => {
            assert!(
                repo.read_tree_blob(&done.snapshot.tree).is_err(),
                "the restore failed ({error}) although the root tree is readable"
            );
            assert!(error.to_string().contains("pack"), "{error}");
            assert!(std::fs::read_dir(target.path()).unwrap().next().is_none());
            return;
        }
    };
    // Whatever was not reported as damaged is exact.
    let restored = contents(&target.path().join(src.strip_prefix("/").unwrap()));
    let original = contents(&src);
    let damaged: Vec<&PathBuf> = result.errors.iter().map(|(p, _)| p).collect();
    for (path, bytes) in &restored {
        if original.get(path) != Some(bytes) {
            assert!(
                damaged.iter().any(|d| d.ends_with(path)),
                "{} differs but was not reported",
                path.display()
            );
        }
    }
    assert!(!damaged.is_empty());
}

#[test]
fn crash_at_any_step_of_prune_keeps_every_snapshot() {
    let fixture = Fixture::new();
    let repo = fixture.open(fixture.local());
    let mut expected = BTreeMap::new();
    let mut ids = Vec::new();
    for round in 0..3u8 {
        let src = fixture.source(&format!("round{round}"));
        write_tree(&src, 10 + round, 8);
        let done = backup(&repo, &src).unwrap();
        ids.push(done.id);
        expected.insert(done.id.to_hex(), contents(&src));
    }
    // Forget the first snapshot, so prune has packs to delete and repack.
    fixture.local().delete(ObjectKind::Snapshot, &ids[0].to_hex()).unwrap();
    expected.remove(&ids[0].to_hex());
    let scratch = fixture.dir.path().join("scratch");
    for (op, n) in [
        (Op::Write, 1),
        (Op::Write, 3),
        (Op::Delete, 1),
        (Op::Delete, 2),
        (Op::Delete, 5),
    ] {
        // The lock is the first write: the crash points are counted after it.
        let n = if op == Op::Write { n + 1 } else { n };
        let repo = fixture.faulty(vec![Fault::at(op, None, n, Action::Crash)]);
        let lock = repo
            .lock(LockKind::Exclusive, "prune", Duration::ZERO, &NEVER_CANCELLED)
            .unwrap();
        let _ = prune::prune(
            &repo,
            &PruneOptions::default(),
            &scratch,
            &NoProgress,
            &AtomicBool::new(false),
            &lock,
        );
        drop(lock);
        // The "dead" process could not remove its lock; it is this live
        // process's, so it would never be taken as stale.
        for info in fixture.local().list(ObjectKind::Lock).unwrap() {
            fixture.local().delete(ObjectKind::Lock, &info.name).unwrap();
        }
        assert_whole(&fixture, &expected, &format!("prune crashed at {op:?} {n}"));
    }
    let repo = fixture.open(fixture.local());
    let lock = repo
        .lock(LockKind::Exclusive, "prune", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    let stats = prune::prune(
        &repo,
        &PruneOptions::default(),
        &scratch,
        &NoProgress,
        &AtomicBool::new(false),
        &lock,
    )
    .unwrap();
    assert_whole(&fixture, &expected, "after a clean prune");
    let again = prune::prune(
        &repo,
        &PruneOptions::default(),
        &scratch,
        &NoProgress,
        &AtomicBool::new(false),
        &lock,
    )
    .unwrap();
    assert_eq!(
        again.packs_deleted + again.packs_unindexed,
        0,
        "{stats:?} then {again:?}"
    );
}

#[test]
fn slow_storage_changes_nothing() {
    let fixture = Fixture::new();
    let src = fixture.source("src");
    write_tree(&src, 5, 4);
    let mut delay = Fault::at(
        Op::ReadRange,
        None,
        1,
        Action::Delay(std::time::Duration::from_millis(2)),
    );
    delay.repeat = true;
    let mut slow_write = Fault::at(Op::Write, None, 1, Action::Delay(std::time::Duration::from_millis(20)));
    slow_write.repeat = true;
    let repo = fixture.faulty(vec![delay, slow_write]);
    let done = backup(&repo, &src).unwrap();
    let mut expected = BTreeMap::new();
    expected.insert(done.id.to_hex(), contents(&src));
    assert_whole(&fixture, &expected, "slow storage");
}
