//! One large file, and one large stream, through the parallel content
//! pipeline (`snap_core::ingest`): stored byte-identical with its chunks in
//! order (the same chunks the sequential chunker cuts), stopped cleanly when
//! cancelled, and failed (no snapshot) when the stream's read fails midway.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use snap_core::archiver::{self, ArchiveOptions, ParentChoice, Source, StreamReader};
use snap_core::backend::LocalBackend;
use snap_core::chunker::ChunkerParams;
use snap_core::error::Error;
use snap_core::keys::{KdfParams, Password};
use snap_core::lock::LockKind;
use snap_core::progress::{Event, NoProgress, Progress};
use snap_core::repo::{InitOptions, Repository};
use snap_core::restorer::{self, RestoreOptions};
use snap_core::snapshot;
use snap_core::tree::Tree;

static NEVER_CANCELLED: AtomicBool = AtomicBool::new(false);

/// Small chunks (max 64 KiB) make the pipeline's 8 MiB blocks hold
/// hundreds of them, so a 20 MiB file crosses several blocks.
fn repo(dir: &Path) -> Repository {
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
        ..InitOptions::default()
    };
    let backend = std::sync::Arc::new(LocalBackend::new(dir.join("repo")));
    Repository::init(backend, Some(&Password::new("big")), &options, &dir.join("cache")).unwrap()
}

/// Alternating runs of text (compressible, repeated: deduplicated inside
/// the file) and random bytes, `len` bytes.
fn content(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut xof = blake3::Hasher::new();
    xof.update(b"bigfile test");
    xof.finalize_xof().fill(&mut out);
    let text = b"pub fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }\n";
    for (i, block) in out.chunks_mut(3 << 20).enumerate() {
        if i % 2 == 0 {
            for (j, b) in block.iter_mut().enumerate() {
                *b = text[j % text.len()];
            }
        }
    }
    out
}

fn options(source: Source) -> ArchiveOptions {
    ArchiveOptions {
        source,
        excludes: vec![],
        exclude_files: vec![],
        one_file_system: false,
        tags: vec![],
        host: "test".into(),
        parent: ParentChoice::None,
        compression: None,
        threads: 4,
        checkpoint_interval: None,
        selection: Default::default(),
        description: None,
        dry_run: false,
        list_changes: false,
    }
}

fn archive(
    repo: &Repository,
    source: Source,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> snap_core::error::Result<archiver::ArchiveResult> {
    let lock = repo
        .lock(LockKind::Shared, "create", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    archiver::archive(repo, options(source), progress, cancel, &lock)
}

/// The ids of the chunks the sequential chunker cuts from `data`.
fn sequential_ids(repo: &Repository, data: &[u8]) -> Vec<snap_core::id::BlobId> {
    repo.chunker()
        .chunks(data, None)
        .map(|c| repo.crypto().blob_id(&c.unwrap()))
        .collect()
}

/// Restores `result`'s snapshot into `target`, returning the file at `rel`.
fn restored(repo: &Repository, result: &archiver::ArchiveResult, target: &Path, rel: &str) -> Vec<u8> {
    let options = RestoreOptions {
        target: target.to_path_buf(),
        ..RestoreOptions::default()
    };
    let done = restorer::restore(repo, &result.snapshot, &options, &NoProgress, &NEVER_CANCELLED).unwrap();
    assert!(done.errors.is_empty(), "{:?}", done.errors);
    std::fs::read(target.join(rel)).unwrap()
}

/// The content list of the only file under the snapshot's tree at `path`.
fn file_content(repo: &Repository, result: &archiver::ArchiveResult, path: &[&str]) -> Vec<snap_core::id::BlobId> {
    let mut tree = Tree::load(repo, &result.snapshot.tree).unwrap();
    for name in path {
        let node = tree.nodes.iter().find(|n| n.name == name.as_bytes()).unwrap().clone();
        match node.subtree {
            Some(sub) => tree = Tree::load(repo, &sub).unwrap(),
            None => return node.content,
        }
    }
    panic!("no file at {path:?}")
}

#[test]
fn a_big_file_is_stored_in_chunk_order_and_restored_identical() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = content((20 << 20) + 4321);
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("disk.img"), &data).unwrap();

    let result = archive(&repo, Source::Paths(vec![src.clone()]), &NoProgress, &NEVER_CANCELLED).unwrap();
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    assert_eq!(result.snapshot.summary.bytes_read, data.len() as u64);
    let components: Vec<&str> = src
        .iter()
        .skip(1)
        .map(|c| c.to_str().unwrap())
        .chain(["disk.img"])
        .collect();
    let ids = file_content(&repo, &result, &components);
    assert!(ids.len() > 500, "{} chunks", ids.len());
    assert_eq!(
        ids,
        sequential_ids(&repo, &data),
        "not the sequential chunker's chunks, in order"
    );
    // The repeated text is stored once.
    assert!(result.snapshot.summary.bytes_added_raw < data.len() as u64 * 3 / 4);

    let target = dir.path().join("restored");
    let rel = src.join("disk.img");
    assert!(
        restored(
            &repo,
            &result,
            &target,
            rel.strip_prefix("/").unwrap().to_str().unwrap()
        ) == data
    );
}

#[test]
fn a_big_stream_is_stored_in_chunk_order_and_restored_identical() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = content((17 << 20) + 77);
    // A pipe's reads: at most 64 KiB each.
    struct Pipe(std::io::Cursor<Vec<u8>>);
    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(65536);
            self.0.read(&mut buf[..n])
        }
    }
    let source = Source::Reader {
        filename: "dump.sql".into(),
        label: "test stream".into(),
        reader: StreamReader(Box::new(Pipe(std::io::Cursor::new(data.clone())))),
    };
    let result = archive(&repo, source, &NoProgress, &NEVER_CANCELLED).unwrap();
    assert_eq!(result.snapshot.summary.bytes_total, data.len() as u64);
    assert_eq!(
        file_content(&repo, &result, &["dump.sql"]),
        sequential_ids(&repo, &data)
    );
    let target = dir.path().join("restored");
    assert!(restored(&repo, &result, &target, "dump.sql") == data);
}

/// Sets the cancel flag once this many bytes were stored.
struct CancelAfter<'a> {
    bytes: AtomicU64,
    limit: u64,
    cancel: &'a AtomicBool,
}

impl Progress for CancelAfter<'_> {
    fn event(&self, event: Event<'_>) {
        if let Event::Bytes(n) = event {
            if self.bytes.fetch_add(n, Ordering::Relaxed) + n >= self.limit {
                self.cancel.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn an_interrupted_big_file_backup_stops_cleanly_and_the_next_one_completes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = content(32 << 20);
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("disk.img"), &data).unwrap();

    let cancel = AtomicBool::new(false);
    let progress = CancelAfter {
        bytes: AtomicU64::new(0),
        limit: 8 << 20,
        cancel: &cancel,
    };
    let stopped = archive(&repo, Source::Paths(vec![src.clone()]), &progress, &cancel);
    assert!(matches!(stopped, Err(Error::Interrupted)), "{stopped:?}");
    // Stopped within a block or two of the cancel, not at the file's end.
    let stored = progress.bytes.load(Ordering::Relaxed);
    assert!(stored < 24 << 20, "{stored} bytes stored after the cancel at 8 MiB");
    assert!(
        snapshot::list(&repo).unwrap().is_empty(),
        "an interrupted backup wrote a snapshot"
    );

    // What was uploaded is indexed and reused; the next backup is whole.
    let result = archive(&repo, Source::Paths(vec![src.clone()]), &NoProgress, &NEVER_CANCELLED).unwrap();
    assert!(result.snapshot.summary.bytes_added_raw < data.len() as u64);
    let target = dir.path().join("restored");
    let rel = src.join("disk.img");
    assert!(
        restored(
            &repo,
            &result,
            &target,
            rel.strip_prefix("/").unwrap().to_str().unwrap()
        ) == data
    );
}

#[test]
fn a_read_error_in_the_middle_of_a_big_stream_fails_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = content(20 << 20);
    struct FailAt {
        data: std::io::Cursor<Vec<u8>>,
        at: u64,
    }
    impl Read for FailAt {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.position() >= self.at {
                return Err(std::io::Error::other("the dump command failed"));
            }
            let room = (self.at - self.data.position()) as usize;
            let n = buf.len().min(room);
            self.data.read(&mut buf[..n])
        }
    }
    let source = Source::Reader {
        filename: "dump.sql".into(),
        label: "command 'pg_dump'".into(),
        reader: StreamReader(Box::new(FailAt {
            data: std::io::Cursor::new(data),
            at: 10 << 20,
        })),
    };
    let e = archive(&repo, source, &NoProgress, &NEVER_CANCELLED).expect_err("a failed stream was stored");
    let message = e.to_string();
    assert!(
        message.contains("pg_dump") && message.contains("the dump command failed"),
        "{message}"
    );
    assert!(
        snapshot::list(&repo).unwrap().is_empty(),
        "a snapshot of a broken stream was written"
    );
}
