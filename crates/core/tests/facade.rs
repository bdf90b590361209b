//! `Repository` as the one door: what a frontend's calls cost in requests
//! (a backup lists the snapshots once; commands that need no blob index do
//! not read it), and that locks are the proof the writing operations ask for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snap_core::archiver::{self, ArchiveOptions, ParentChoice, Source};
use snap_core::backend::{Backend, BackendResult, LocalBackend, ObjectInfo, ObjectKind};
use snap_core::keys::{KdfParams, Password};
use snap_core::lock::LockKind;
use snap_core::progress::NoProgress;
use snap_core::prune::{self, PruneOptions};
use snap_core::repo::{InitOptions, OpenFailure, Opened, PasswordRequest, Repository};
use snap_core::snapshot;

static NEVER_CANCELLED: AtomicBool = AtomicBool::new(false);

/// Counts reads and lists per object kind, over a local directory.
#[derive(Debug)]
struct Counting {
    inner: LocalBackend,
    reads: Mutex<HashMap<&'static str, u64>>,
}

impl Counting {
    fn new(root: &Path) -> Arc<Self> {
        Arc::new(Counting {
            inner: LocalBackend::new(root),
            reads: Mutex::new(HashMap::new()),
        })
    }

    fn reads(&self, kind: ObjectKind) -> u64 {
        self.reads.lock().unwrap().get(kind.name()).copied().unwrap_or(0)
    }

    fn reset(&self) {
        self.reads.lock().unwrap().clear();
    }

    fn count(&self, kind: ObjectKind) {
        *self.reads.lock().unwrap().entry(kind.name()).or_default() += 1;
    }
}

impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> BackendResult<()> {
        self.inner.create()
    }
    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
        self.count(kind);
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.count(kind);
        self.inner.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.write(kind, name, data)
    }
    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.write_new(kind, name, data)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        self.inner.delete(kind, name)
    }
    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }
    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        self.inner.exists(kind, name)
    }
    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<std::time::SystemTime>> {
        self.inner.modified(kind, name)
    }
}

fn options() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    }
}

fn password() -> Password {
    Password::new("facade")
}

fn backup(repo: &Repository, source: &Path, parent: ParentChoice) -> archiver::ArchiveResult {
    let lock = repo
        .lock(LockKind::Shared, "create", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    let options = ArchiveOptions {
        source: Source::Paths(vec![source.to_path_buf()]),
        excludes: vec![],
        exclude_files: vec![],
        one_file_system: false,
        tags: vec![],
        host: "test".into(),
        parent,
        compression: None,
        threads: 2,
        checkpoint_interval: None,
        selection: Default::default(),
        description: None,
        dry_run: false,
        list_changes: false,
    };
    archiver::archive(repo, options, &NoProgress, &AtomicBool::new(false), &lock).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    source: PathBuf,
}

impl Fixture {
    /// A repository with `snapshots` backups of a small tree.
    fn new(snapshots: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::create_dir_all(&source).unwrap();
        let repo = Repository::init(
            Arc::new(LocalBackend::new(dir.path().join("repo"))),
            Some(&password()),
            &options(),
            &dir.path().join("cache"),
        )
        .unwrap();
        for i in 0..snapshots {
            // Each backup stores a new file: one more pack and index file.
            std::fs::write(source.join(format!("f{i}")), format!("content {i}").repeat(100)).unwrap();
            backup(&repo, &source, ParentChoice::Latest);
        }
        Fixture { dir, source }
    }

    fn open_counting(&self) -> (Repository, Arc<Counting>) {
        let counting = Counting::new(&self.dir.path().join("repo"));
        let repo = Repository::open(counting.clone(), Some(&password()), &self.dir.path().join("cache")).unwrap();
        (repo, counting)
    }
}

/// Regression (issue 12): every `create` read every snapshot twice, once to
/// choose the parent and once to remove obsolete checkpoints.
#[test]
fn a_backup_reads_each_snapshot_once() {
    let fixture = Fixture::new(5);
    let (repo, counting) = fixture.open_counting();
    // Without the local object cache (backend::cache), which would serve
    // every snapshot: the backup's own reads are what is counted.
    let drop_object_cache = || {
        let _ = std::fs::remove_dir_all(repo.cache_dir().join("objects"));
    };
    drop_object_cache();
    counting.reset();
    backup(&repo, &fixture.source, ParentChoice::Latest);
    assert_eq!(counting.reads(ObjectKind::Snapshot), 5, "one read per snapshot");
    // With --force there is no parent to choose; the checkpoints still come
    // from the one listing.
    drop_object_cache();
    counting.reset();
    backup(&repo, &fixture.source, ParentChoice::None);
    assert_eq!(counting.reads(ObjectKind::Snapshot), 6);
}

/// "The index loaded lazily": listing snapshots reads no index file; the
/// first blob lookup does, and a lock makes the next lookup resync.
#[test]
fn the_index_is_read_only_when_needed() {
    let fixture = Fixture::new(3);
    // A fresh cache directory: a sync would have to read every index file.
    let counting = Counting::new(&fixture.dir.path().join("repo"));
    let cache = fixture.dir.path().join("fresh-cache");
    let repo = Repository::open(counting.clone(), Some(&password()), &cache).unwrap();
    assert_eq!(snapshot::list(&repo).unwrap().len(), 3);
    let lock = repo
        .lock(LockKind::Exclusive, "forget", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    let (first, _) = snapshot::list(&repo).unwrap()[0].clone();
    snapshot::delete(&repo, &first, &lock).unwrap();
    assert_eq!(
        counting.reads(ObjectKind::Index),
        0,
        "no index file read without a lookup"
    );
    drop(lock);

    // The first lookup syncs.
    let (_, latest) = snapshot::find(&repo, "latest").unwrap();
    let root = repo.read_blob(&latest.tree).expect("the root tree is indexed");
    assert!(!root.is_empty());
    let loaded = counting.reads(ObjectKind::Index);
    assert!(loaded >= 1, "the sync read the index files ({loaded})");

    // Another process stores data; a lock resyncs before the next lookup,
    // so this handle sees it.
    let other = Repository::open(
        Arc::new(LocalBackend::new(fixture.dir.path().join("repo"))),
        Some(&password()),
        &fixture.dir.path().join("cache"),
    )
    .unwrap();
    std::fs::write(fixture.source.join("new"), "new data ".repeat(500)).unwrap();
    let done = backup(&other, &fixture.source, ParentChoice::Latest);
    let _lock = repo
        .lock(LockKind::Shared, "restore", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    repo.read_blob(&done.snapshot.tree)
        .expect("the other process's tree is found after the lock");
    assert!(
        counting.reads(ObjectKind::Index) > loaded,
        "the lock made the index resync"
    );
}

/// A writing operation refuses a lock that does not prove what it needs.
#[test]
fn writing_operations_check_their_lock() {
    let fixture = Fixture::new(1);
    let (repo, _) = fixture.open_counting();
    let scratch = fixture.dir.path().join("scratch");
    let shared = repo
        .lock(LockKind::Shared, "prune", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    let err = prune::prune(
        &repo,
        &PruneOptions::default(),
        &scratch,
        &NoProgress,
        &AtomicBool::new(false),
        &shared,
    )
    .unwrap_err();
    assert!(err.to_string().contains("exclusive"), "{err}");
    let (id, _) = snapshot::find(&repo, "latest").unwrap();
    assert!(snapshot::delete(&repo, &id, &shared).is_err());
    drop(shared);

    // A lock on another repository proves nothing about this one.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Repository::init(
        Arc::new(LocalBackend::new(other_dir.path().join("repo"))),
        Some(&password()),
        &options(),
        &other_dir.path().join("cache"),
    )
    .unwrap();
    let foreign = other
        .lock(LockKind::Exclusive, "forget", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    let err = snapshot::delete(&repo, &id, &foreign).unwrap_err();
    assert!(err.to_string().contains("another repository"), "{err}");
    assert_eq!(snapshot::list(&repo).unwrap().len(), 1, "nothing was deleted");
}

/// Open-or-init asks for the password it needs, and only then.
#[test]
fn open_or_init_asks_only_for_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let backend = || -> Arc<dyn Backend> { Arc::new(LocalBackend::new(dir.path().join("repo"))) };
    let cache = dir.path().join("cache");
    // Nothing there and nothing to create: "not a repository", no prompt.
    let result = Repository::open_or_init(backend(), &cache, None, |_| -> Result<Password, ()> {
        panic!("no password is needed to find nothing")
    });
    assert!(matches!(
        result,
        Err(OpenFailure::Config(snap_core::Error::NotARepository { .. }))
    ));
    let mut asked = Vec::new();
    let created = Repository::open_or_init(backend(), &cache, Some(&options()), |request| {
        asked.push(request);
        Ok::<_, ()>(password())
    })
    .unwrap();
    assert!(matches!(created, Opened::Created(_)));
    let opened = Repository::open_or_init(backend(), &cache, Some(&options()), |request| {
        asked.push(request);
        Ok::<_, ()>(password())
    })
    .unwrap();
    assert!(matches!(opened, Opened::Existing(_)));
    assert_eq!(asked, [PasswordRequest::New, PasswordRequest::Existing]);
    // The caller's own error comes back as it was.
    let failed = Repository::open_or_init(backend(), &cache, None, |_| Err("no tty"));
    assert!(matches!(failed, Err(OpenFailure::Password("no tty"))));
}

/// Issue 11: a backup's walk state is bounded by the tree's shape, not by
/// its number of files. With one worker the walk is depth first, so the
/// directories being walked are one path from the root: the parent trees
/// loaded at once are at most that path (the source's ancestors and its
/// depth), and the checkpoint records (finished entries; a finished
/// directory stands for everything below it) at most the finished entries of
/// the directories on that path. Both used to grow with the file count (a
/// record per finished file, kept for the whole backup).
#[test]
fn walk_state_is_bounded_by_depth_not_file_count() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    let (fanout, files) = (4, 12);
    let mut count = 0;
    for a in 0..fanout {
        for b in 0..fanout {
            for c in 0..fanout {
                let leaf = source.join(format!("a{a}/b{b}/c{c}"));
                std::fs::create_dir_all(&leaf).unwrap();
                for f in 0..files {
                    count += 1;
                    std::fs::write(leaf.join(format!("f{f}")), format!("file {count} ").repeat(20)).unwrap();
                }
            }
        }
    }
    let repo = Repository::init(
        Arc::new(LocalBackend::new(dir.path().join("repo"))),
        Some(&password()),
        &options(),
        &dir.path().join("cache"),
    )
    .unwrap();
    let run = |parent| {
        let lock = repo
            .lock(LockKind::Shared, "create", Duration::ZERO, &NEVER_CANCELLED)
            .unwrap();
        let options = ArchiveOptions {
            source: Source::Paths(vec![source.clone()]),
            excludes: vec![],
            exclude_files: vec![],
            one_file_system: false,
            tags: vec![],
            host: "test".into(),
            parent,
            compression: None,
            threads: 1,
            // Records are kept, never written in this short run.
            checkpoint_interval: Some(Duration::from_secs(3600)),
            selection: Default::default(),
            description: None,
            dry_run: false,
            list_changes: false,
        };
        archiver::archive(&repo, options, &NoProgress, &AtomicBool::new(false), &lock).unwrap()
    };
    let depth = 3;
    // On the path: `fanout` finished siblings at each level above the
    // leaves, and a leaf directory's files.
    let records_bound = (depth * fanout + files) as u64;
    let first = run(ParentChoice::None);
    assert_eq!(first.snapshot.summary.files_new, count as u64);
    assert!(
        first.peaks.checkpoint_records <= records_bound,
        "{} records held at once for {count} files (bound {records_bound})",
        first.peaks.checkpoint_records
    );
    assert_eq!(first.peaks.parent_trees, 0, "no parent, no parent trees");

    let second = run(ParentChoice::Latest);
    assert_eq!(second.snapshot.summary.files_unmodified, count as u64);
    assert!(second.peaks.checkpoint_records <= records_bound);
    // The source's ancestors ("/", "tmp", ...) and itself, then its depth.
    let path_len = source.components().count() as u64 + depth as u64;
    assert!(
        second.peaks.parent_trees <= path_len,
        "{} parent trees held at once (path from the root: {path_len})",
        second.peaks.parent_trees
    );
    assert!(
        second.peaks.parent_trees >= depth as u64,
        "the parent's trees were walked in step"
    );
}

/// A restore holds one batch of planned entries at a time and a bounded
/// look-ahead of directory listings, not a plan of the whole snapshot: with
/// a batch of 20 entries, 768 files (and hard links whose names fall into
/// different batches) come back whole, the entries reach the sink in path
/// order, and the peaks stay within the batch and the look-ahead.
#[test]
fn restore_state_is_bounded_by_batch_and_shape_not_file_count() {
    use snap_core::restorer::{self, Action, EntrySink, PlanEntry, RestoreOptions};
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    let (fanout, files) = (4, 12);
    let mut count = 0;
    for a in 0..fanout {
        for b in 0..fanout {
            for c in 0..fanout {
                let leaf = source.join(format!("a{a}/b{b}/c{c}"));
                std::fs::create_dir_all(&leaf).unwrap();
                for f in 0..files {
                    count += 1;
                    std::fs::write(leaf.join(format!("f{f}")), format!("file {count} ").repeat(20 + f)).unwrap();
                }
            }
        }
    }
    // A hard-linked pair far apart in the walk: other batches between them.
    std::fs::write(source.join("a0/first"), b"linked content").unwrap();
    std::fs::hard_link(source.join("a0/first"), source.join("a3/b3/second")).unwrap();
    std::os::unix::fs::symlink("a0/first", source.join("link")).unwrap();
    let repo = Repository::init(
        Arc::new(LocalBackend::new(dir.path().join("repo"))),
        Some(&password()),
        &options(),
        &dir.path().join("cache"),
    )
    .unwrap();
    let snapshot = backup(&repo, &source, ParentChoice::None).snapshot;
    let target = dir.path().join("target");
    let entries: Arc<Mutex<Vec<PlanEntry>>> = Arc::default();
    let sink = {
        let entries = entries.clone();
        EntrySink(Arc::new(move |e: &PlanEntry| entries.lock().unwrap().push(e.clone())))
    };
    let batch = 20;
    let run = |dry_run: bool| {
        restorer::restore(
            &repo,
            &snapshot,
            &RestoreOptions {
                target: target.clone(),
                threads: 2,
                dry_run,
                entry_sink: Some(sink.clone()),
                batch_entries: batch,
                ..RestoreOptions::default()
            },
            &NoProgress,
            &NEVER_CANCELLED,
        )
        .unwrap()
    };
    let preview = run(true);
    let previewed = std::mem::take(&mut *entries.lock().unwrap());
    let result = run(false);
    let streamed = std::mem::take(&mut *entries.lock().unwrap());
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    assert!(
        result.entries.is_empty(),
        "a sink gets the entries, the result keeps none"
    );
    assert_eq!(result.files, count as u64 + 2);
    assert_eq!(previewed, streamed, "the preview lists what the restore does");
    assert_eq!(preview.total(Action::New), result.total(Action::New));
    assert_eq!(result.total(Action::New).count, streamed.len() as u64);
    let mut sorted = streamed.clone();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        streamed.iter().map(|e| &e.path).collect::<Vec<_>>(),
        sorted.iter().map(|e| &e.path).collect::<Vec<_>>(),
        "entries come in path order"
    );

    // Everything came back, the hard link as a link.
    let restored = target.join(source.strip_prefix("/").unwrap());
    for a in 0..fanout {
        for b in 0..fanout {
            for c in 0..fanout {
                for f in 0..files {
                    let rel = format!("a{a}/b{b}/c{c}/f{f}");
                    assert_eq!(
                        std::fs::read(restored.join(&rel)).unwrap(),
                        std::fs::read(source.join(&rel)).unwrap(),
                        "{rel}"
                    );
                }
            }
        }
    }
    let (first, second) = (
        std::fs::metadata(restored.join("a0/first")).unwrap(),
        std::fs::metadata(restored.join("a3/b3/second")).unwrap(),
    );
    assert_eq!(first.ino(), second.ino(), "the second name is a hard link of the first");
    assert_eq!(
        std::fs::read_link(restored.join("link")).unwrap(),
        Path::new("a0/first")
    );
    assert_eq!(
        std::fs::metadata(restored.join("a1")).unwrap().mtime(),
        std::fs::metadata(source.join("a1")).unwrap().mtime(),
        "directory times are set after their content"
    );

    // Held at once: one batch, the look-ahead, and the directories.
    assert!(
        result.peaks.planned <= batch as u64,
        "{} entries planned at once (batch {batch})",
        result.peaks.planned
    );
    assert!(result.peaks.trees <= 32, "{} listings loaded ahead", result.peaks.trees);
    let dirs = (fanout + fanout * fanout + fanout * fanout * fanout + 1) as u64;
    assert!(
        result.peaks.dirs <= dirs + source.components().count() as u64 + 1,
        "{} directories known at once",
        result.peaks.dirs
    );
}
