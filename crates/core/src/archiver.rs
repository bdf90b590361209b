//! `create`: turns source paths (or a stream) into a snapshot.
//!
//! The walk is depth-first; each directory's entries are processed in
//! parallel on a rayon pool (files are read, chunked, hashed, and their new
//! chunks compressed and sealed on the same worker; a file larger than a
//! block, or a stream, is read and cut on its worker and stored on all of
//! them, see [`crate::ingest`]), and its tree blob is
//! stored once its children are done, so trees are built bottom-up and only
//! one directory listing per level is held in memory. A file whose size,
//! mtime, ctime and inode match its entry in the parent snapshot, and whose
//! blobs are all indexed, is not read again.
//!
//! Absolute source paths are kept: `/home/ana/docs` is stored under a root
//! tree with entries `home` -> `ana` -> `docs`, the intermediate directories
//! carrying their real metadata.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;

use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::fsmeta::{self, OwnerNames};
use crate::id::{BlobId, SnapshotId};
use crate::index::cache::IndexReader;
use crate::lock::LockGuard;
use crate::pack::BlobKind;
use crate::packer::Packer;
use crate::progress::{Event, Progress};
use crate::repo::Repository;
use crate::snapshot::{self, Snapshot, Summary};
use crate::tree::{Node, NodeKind, Tree};

/// Which snapshot to compare files against.
#[derive(Clone, Debug, Default)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    #[default]
    Latest,
    None,
    Snapshot(SnapshotId),
}

/// What to back up.
#[derive(Debug)]
pub enum Source {
    Paths(Vec<PathBuf>),
    /// One stream (a database dump) stored as a file of this name.
    Stdin {
        filename: String,
    },
    /// Any other stream stored as a file of this name, read to its end
    /// exactly as standard input is (`snap create --stdin-from-command`).
    /// The reader decides whether the stream ended well: an error from its
    /// last `read` (a dump command that failed) fails the backup, and no
    /// snapshot is written. `label` names the stream in errors.
    Reader {
        filename: String,
        label: String,
        reader: StreamReader,
    },
}

/// The reader of [`Source::Reader`].
pub struct StreamReader(pub Box<dyn Read + Send>);

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamReader")
    }
}

#[derive(Debug)]
pub struct ArchiveOptions {
    pub source: Source,
    /// gitignore-style patterns, matched against absolute paths.
    pub excludes: Vec<String>,
    pub exclude_files: Vec<PathBuf>,
    pub one_file_system: bool,
    pub tags: Vec<String>,
    pub host: String,
    pub parent: ParentChoice,
    /// Overrides the repository's default compression.
    pub compression: Option<Compression>,
    /// Worker threads; 0 means the number of cores plus four (`pool::WAITING_WALK`).
    pub threads: usize,
    /// Write a checkpoint snapshot this often (see [`Checkpoints`]); `None` never.
    pub checkpoint_interval: Option<std::time::Duration>,
    /// What else to leave out, beside `excludes` (see [`Selection`]).
    pub selection: Selection,
    /// Free text stored in the snapshot.
    pub description: Option<String>,
    /// Walk, read and chunk as a backup does, asking the index which blobs
    /// are new, but write nothing: no pack, index file, checkpoint or
    /// snapshot (see [`ArchiveResult`] for what comes back).
    pub dry_run: bool,
    /// Return each new and changed file in [`ArchiveResult::changes`].
    pub list_changes: bool,
}

/// The ways to leave things out of a backup beside the gitignore-style
/// `excludes`. `Default` leaves out nothing but what `.snapignore` files say.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Like `excludes`, matched regardless of case (`--iexclude`).
    pub iexcludes: Vec<String>,
    /// Files of case-insensitive patterns (`--iexclude-file`).
    pub iexclude_files: Vec<PathBuf>,
    /// A directory holding one of these is left out, whole (`--exclude-if-present`, `--exclude-caches`).
    pub markers: Vec<Marker>,
    /// Files larger than this many bytes are left out and counted in
    /// [`Summary::files_too_large`] (`--exclude-larger-than`).
    pub max_file_size: Option<u64>,
    /// Do not read `.snapignore` files (`--no-snapignore`).
    pub skip_snapignore: bool,
}

/// The name of the per-directory ignore files, read with gitignore semantics.
pub const SNAPIGNORE: &str = ".snapignore";

/// A file whose presence leaves its directory out of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub name: String,
    /// When set, the file only counts if it is a regular file whose content
    /// starts with these bytes (a `CACHEDIR.TAG` signature).
    pub header: Option<Vec<u8>>,
}

impl Marker {
    /// `NAME` or `NAME:HEADER`, as restic's `--exclude-if-present`.
    pub fn parse(spec: &str) -> Result<Marker> {
        let (name, header) = match spec.split_once(':') {
            Some((name, header)) => (name, Some(header.as_bytes().to_vec())),
            None => (spec, None),
        };
        if !crate::tree::is_valid_name(name.as_bytes()) {
            return Err(Error::InvalidArgument(format!(
                "--exclude-if-present '{spec}': '{name}' is not a file name (a name without '/')"
            )));
        }
        Ok(Marker {
            name: name.to_string(),
            header,
        })
    }

    /// The cache directory tag (<https://bford.info/cachedir/>): `--exclude-caches`.
    pub fn cachedir_tag() -> Marker {
        Marker {
            name: "CACHEDIR.TAG".into(),
            header: Some(b"Signature: 8a477f597d28d172789f06886806bc55".to_vec()),
        }
    }
}

/// A file `-v` reports: new (no entry in the parent snapshot) or modified
/// (an entry, but not the same file any more).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    New,
    Modified,
}

/// The `.snapignore` files that apply in a directory of the walk: its own
/// and those of the directories above it (within the source paths),
/// innermost first. The innermost file with a matching pattern decides, so
/// a `!pattern` re-includes what an outer file left out, as in git.
#[derive(Clone, Default)]
struct IgnoreChain(Option<std::sync::Arc<IgnoreLink>>);

struct IgnoreLink {
    matcher: Gitignore,
    outer: IgnoreChain,
}

impl IgnoreChain {
    fn ignored(&self, path: &Path, is_dir: bool) -> bool {
        let mut link = self.0.as_deref();
        while let Some(l) = link {
            match l.matcher.matched(path, is_dir) {
                ignore::Match::Ignore(_) => return true,
                ignore::Match::Whitelist(_) => return false,
                ignore::Match::None => link = l.outer.0.as_deref(),
            }
        }
        false
    }
}

/// The longest file name Linux filesystems accept (`NAME_MAX`), in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Tag of checkpoint snapshots.
pub use crate::snapshot::CHECKPOINT_TAG;

/// Checkpoints make an interrupted backup resumable. Every interval, the
/// files finished so far (new, changed or unchanged) are written as a
/// snapshot tagged `checkpoint`, after everything they reference is stored
/// and indexed. A later backup of the same host and paths takes it as its
/// parent, so those files are not read again. There is at most one
/// checkpoint per host and paths: each new one is written before the older
/// ones are deleted, and a backup that completes deletes them all. A
/// checkpoint is never `latest` and never counted by a retention policy.
///
/// What is finished is what the walk holds anyway: the finished entries of
/// the directories being walked ([`DirRecords`], registered in `open`), a
/// finished directory standing, by its node, for everything below it. So
/// memory stays flat with the number of files, and recording a finished
/// file costs no copy of its node: the checkpoint writer copies the nodes
/// only when it writes one (most backups never do). Recording by a copy
/// of each node in a map by path was a third of the instructions of an
/// unchanged re-backup of small files (callgrind).
struct Checkpoints {
    interval: std::time::Duration,
    /// The directories being walked, by [`OpenDir::id`]. Held while a
    /// directory's finished node moves into its parent's records, and
    /// while the writer copies the records: it sees either the directory's
    /// entries or its node, never neither.
    open: Mutex<BTreeMap<u64, std::sync::Arc<DirRecords>>>,
    next_id: AtomicU64,
    /// The files of the checkpoint this run resumes, by [`record_key`],
    /// each with its size: those this run has not passed again are kept in
    /// the next checkpoint.
    carried: Mutex<BTreeMap<Vec<u8>, (Node, u64)>>,
    carried_len: AtomicU64,
    /// The records in `open` now, and the most held at once with the
    /// carried ones (see [`WalkPeaks`]).
    records: AtomicI64,
    peak: AtomicU64,
    last: Mutex<Instant>,
    /// Held while one worker writes a checkpoint; others skip.
    writing: Mutex<()>,
    paths: Vec<String>,
    host: String,
    tags: Vec<String>,
}

impl Checkpoints {
    fn new(interval: std::time::Duration, paths: Vec<String>, host: String, tags: Vec<String>) -> Checkpoints {
        Checkpoints {
            interval,
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            carried: Mutex::new(BTreeMap::new()),
            carried_len: AtomicU64::new(0),
            records: AtomicI64::new(0),
            peak: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
            writing: Mutex::new(()),
            paths,
            host,
            tags,
        }
    }

    /// Starts from the files of the checkpoint this run resumes: the new
    /// checkpoint replaces it and must not know less, even before this run
    /// has passed those files again (files it finishes later replace them).
    /// Best effort: an unreadable tree only means those files are not carried.
    fn carry_over(&self, repo: &Repository, root: &BlobId) {
        let mut carried = BTreeMap::new();
        // A stack, not recursion: the tree's depth is the source's.
        let mut stack = vec![(PathBuf::from("/"), *root)];
        while let Some((dir, id)) = stack.pop() {
            let Ok(tree) = Tree::load(repo, &id) else {
                tracing::debug!("checkpoint tree {id} unreadable; its files are not carried over");
                continue;
            };
            for node in tree.nodes {
                let path = dir.join(std::ffi::OsStr::from_bytes(&node.name));
                match (node.kind, node.subtree) {
                    (NodeKind::Dir, Some(sub)) => stack.push((path, sub)),
                    (NodeKind::File, _) => {
                        let size = node.size;
                        carried.insert(record_key(&path), (node, size));
                    }
                    _ => {}
                }
            }
        }
        self.carried_len.store(carried.len() as u64, Ordering::Relaxed);
        self.peak.fetch_max(carried.len() as u64, Ordering::Relaxed);
        *self.carried.lock().expect("checkpoint lock") = carried;
    }

    /// Counts records added (positive) or removed (negative).
    fn count(&self, change: i64) {
        let now = self.records.fetch_add(change, Ordering::Relaxed) + change;
        let carried = self.carried_len.load(Ordering::Relaxed);
        self.peak.fetch_max(now.max(0) as u64 + carried, Ordering::Relaxed);
    }

    /// What is finished now, by [`record_key`], each with the bytes of the
    /// files it stands for: this run's finished files and directories, and
    /// the carried files it has not passed again. A carried file that this
    /// run finished, or that lies below a directory it finished, is left
    /// out: what this run found wins.
    fn finished(&self) -> BTreeMap<Vec<u8>, (Node, u64)> {
        let mut walked = Vec::new();
        {
            let open = self.open.lock().expect("checkpoint lock");
            for dir in open.values() {
                let slots = dir.slots.lock().expect("records lock");
                for (node, size) in slots.iter().flatten() {
                    if matches!(node.kind, NodeKind::File | NodeKind::Dir) {
                        let mut key = dir.key.clone();
                        key.push(0);
                        key.extend_from_slice(&node.name);
                        walked.push((key, node.clone(), *size));
                    }
                }
            }
        }
        let mut finished = self.carried.lock().expect("checkpoint lock").clone();
        for (key, node, size) in walked {
            if node.kind == NodeKind::Dir && !finished.is_empty() {
                // Its descendants are the keys from `key\0` up to `key\x01`.
                let mut start = key.clone();
                start.push(0);
                let mut end = key.clone();
                end.push(1);
                let below: Vec<Vec<u8>> = finished.range(start..end).map(|(k, _)| k.clone()).collect();
                for k in below {
                    finished.remove(&k);
                }
            }
            finished.insert(key, (node, size));
        }
        finished
    }
}

/// The finished entries of a directory being walked, each in the slot of
/// its index in the directory's listing with the bytes of the files it
/// stands for. The directory's tree is made from them.
struct DirRecords {
    /// The directory's [`record_key`].
    key: Vec<u8>,
    slots: Mutex<Vec<Option<(Node, u64)>>>,
}

/// A directory being walked, with its [`DirRecords`] registered in
/// [`Checkpoints::open`] until it is closed ([`Archiver::close_dir`]) or
/// dropped (the walk failed).
struct OpenDir<'c> {
    records: std::sync::Arc<DirRecords>,
    id: u64,
    checkpoints: Option<&'c Checkpoints>,
}

impl OpenDir<'_> {
    /// Records a finished entry.
    fn set(&self, index: usize, node: Node) {
        let size = node.size;
        self.records.slots.lock().expect("records lock")[index] = Some((node, size));
        if let Some(checkpoints) = self.checkpoints {
            checkpoints.count(1);
        }
    }
}

impl Drop for OpenDir<'_> {
    fn drop(&mut self) {
        if let Some(checkpoints) = self.checkpoints {
            let removed = checkpoints.open.lock().expect("checkpoint lock").remove(&self.id);
            if removed.is_some() {
                let held = self
                    .records
                    .slots
                    .lock()
                    .expect("records lock")
                    .iter()
                    .flatten()
                    .count();
                checkpoints.count(-(held as i64));
            }
        }
    }
}

/// The key of a path in checkpoint records: its components joined
/// by NUL bytes, which no name holds and which sort below every other byte,
/// so that keys compare as bytes in the order of `Path`'s components (a
/// path's descendants right after it, before its next sibling) without
/// `Path`'s component-by-component comparison, which made recording a
/// finished file cost ~13k instructions (callgrind; half the instructions
/// of an unchanged re-backup after the key derivation).
///
/// The walk's paths are absolute and clean, so splitting at `/` finds the
/// same names as `Path::components` (`.` and `..`, which such paths never
/// hold, are left out here).
fn record_key(path: &Path) -> Vec<u8> {
    let bytes = path.as_os_str().as_bytes();
    let mut key = Vec::with_capacity(bytes.len() + 1);
    for name in bytes.split(|b| *b == b'/') {
        if !name.is_empty() && name != b"." && name != b".." {
            key.push(0);
            key.extend_from_slice(name);
        }
    }
    key
}

/// The most walk state a backup held at once, for tests and diagnostics:
/// bounded by the tree's shape (depth and entries per directory), not by
/// its number of files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkPeaks {
    /// Parent-snapshot trees loaded at once (one per directory being walked).
    pub parent_trees: u64,
    /// Records of finished entries kept for checkpoints at once.
    pub checkpoint_records: u64,
}

/// A count of things held now, and the most held at once.
#[derive(Default)]
struct Gauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    fn add(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A parent-snapshot tree, counted in [`Archiver::parent_trees`] while alive.
struct ParentTree<'g> {
    tree: Tree,
    /// Its blob id, checked against its bytes when it was read.
    id: BlobId,
    gauge: &'g Gauge,
}

impl std::ops::Deref for ParentTree<'_> {
    type Target = Tree;
    fn deref(&self) -> &Tree {
        &self.tree
    }
}

impl Drop for ParentTree<'_> {
    fn drop(&mut self) {
        self.gauge.sub();
    }
}

/// The tree of a checkpoint: the finished entries under their directories.
enum CheckpointEntry {
    /// A finished file, or a finished directory with its subtree.
    Leaf(Box<Node>),
    Dir(BTreeMap<Vec<u8>, CheckpointEntry>),
}

/// Directories this deep and deeper are walked by [`Archiver::archive_deep`]
/// (on the heap) instead of recursively in parallel: the recursion's stack
/// use stays bounded (a few KiB per level) whatever the tree's depth.
const PARALLEL_DEPTH: usize = 24;

/// What [`Archiver::archive_entry`] leaves to its caller.
enum Entry {
    /// Left out (and reported).
    Skipped,
    Done(Node),
    /// A directory whose content is still to be walked.
    Dir(SubDir),
}

/// A directory to walk: its node (without subtree yet), the device of the
/// walk's root (for `--one-file-system`), and whether the node already has
/// its extended attributes.
struct SubDir {
    node: Node,
    root_dev: u64,
    have_xattrs: bool,
}

/// The result of [`Archiver::open_subdir`].
enum Opened {
    Walk(OwnedFd),
    /// Not listable: its node is finished as an empty directory.
    Finished,
    /// Gone or replaced: left out.
    Skipped,
}

/// A directory being walked by [`Archiver::archive_deep`].
struct Frame<'g> {
    /// Its index in its parent's listing and its node in its parent's tree;
    /// `None` for the walk's first directory.
    node: Option<(usize, Node)>,
    /// Open while subdirectories are left to open through it.
    fd: Option<OwnedFd>,
    parent_tree: Option<ParentTree<'g>>,
    /// Subdirectories still to walk, by index in its listing, the next one last.
    pending: Vec<(usize, SubDir)>,
    /// The `.snapignore` files that apply to its entries.
    ignores: IgnoreChain,
    /// Its finished entries.
    records: OpenDir<'g>,
}

/// The written snapshot and every problem met on the way. Serialized as
/// `snap create --json` documents it: the snapshot's JSON form
/// ([`snapshot::SnapshotJson`]) and `warnings`.
///
/// On a dry run nothing is written: `id` is the id the snapshot object built
/// would have had (never stored), and the summary's `blobs_added` and
/// `bytes_added_raw` are what the backup would add; `bytes_added_stored`
/// is their sealed size without pack headers.
#[derive(Debug)]
pub struct ArchiveResult {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub warnings: Vec<(PathBuf, String)>,
    pub dry_run: bool,
    /// New and modified files, sorted by path, when asked with
    /// [`ArchiveOptions::list_changes`].
    pub changes: Option<Vec<(PathBuf, Change)>>,
    /// The most walk state held at once (zero for streams and imports).
    pub peaks: WalkPeaks,
}

impl serde::Serialize for ArchiveResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct ChangeJson {
            path: String,
            change: Change,
        }
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            snapshot: snapshot::SnapshotJson<'a>,
            warnings: Vec<crate::progress::PathMessage>,
            // Present only on a dry run and only when asked: the default
            // form stays what it was.
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            dry_run: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            changes: Option<Vec<ChangeJson>>,
        }
        Json {
            snapshot: snapshot::SnapshotJson::new(&self.id, &self.snapshot),
            warnings: self
                .warnings
                .iter()
                .map(|(p, m)| crate::progress::PathMessage::new(p, m))
                .collect(),
            dry_run: self.dry_run,
            changes: self.changes.as_ref().map(|changes| {
                changes
                    .iter()
                    .map(|(p, change)| ChangeJson {
                        path: p.to_string_lossy().into_owned(),
                        change: *change,
                    })
                    .collect()
            }),
        }
        .serialize(serializer)
    }
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
    files_too_large: AtomicU64,
}

struct Archiver<'a> {
    repo: &'a Repository,
    /// The index, for the unchanged-file check (a renewing reader; see
    /// `Packer::indexed`).
    index: IndexReader,
    packer: Packer,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
    excludes: Gitignore,
    /// `--iexclude` patterns (a matcher that ignores case).
    iexcludes: Gitignore,
    selection: Selection,
    /// `Some` when the new and changed files are listed.
    changes: Option<Mutex<Vec<(PathBuf, Change)>>>,
    one_file_system: bool,
    names: OwnerNames,
    counters: Counters,
    warnings: Mutex<Vec<(PathBuf, String)>>,
    checkpoints: Option<Checkpoints>,
    /// The checkpoints of this host and paths that the next checkpoint (or
    /// the complete snapshot) makes obsolete: those found in the one listing
    /// of snapshots a backup makes, and those this run wrote since.
    obsolete: Mutex<Vec<SnapshotId>>,
    /// Files being stored through [`crate::ingest`] now (see [`MAX_PIPELINES`]).
    pipelines: AtomicUsize,
    /// Parent-snapshot trees loaded now and at most.
    parent_trees: Gauge,
}

/// Large files stored block by block on every core at once (each holds two
/// blocks, 32 MiB by default); others beside them take the sequential path
/// (one buffer of two maximum chunks). A rayon thread waiting for its
/// file's block may pick up another file's work, so without a bound the
/// blocks held would grow with the pool.
const MAX_PIPELINES: usize = 2;

/// Runs a backup and writes its snapshot, under `lock` (a lock of `repo`,
/// shared at least). Files that cannot be read are reported in
/// [`ArchiveResult::warnings`] and left out; the snapshot is still written.
/// When `cancel` becomes true the backup stops with [`Error::Interrupted`],
/// keeping (and indexing) what was uploaded so far. Before the snapshot is
/// written, the lock must never have been lost and every blob the snapshot
/// refers to must still be indexed ([`crate::snapshot::check_before_save`]); a backup
/// stopped by a lost lock fails with [`Error::LockLost`].
pub fn archive(
    repo: &Repository,
    mut options: ArchiveOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    lock: &LockGuard,
) -> Result<ArchiveResult> {
    lock.proves(repo, crate::lock::LockKind::Shared)?;
    let started = Instant::now();
    let time = jiff::Timestamp::now();
    // The tag marks partial snapshots; a complete one must not carry it.
    if options.tags.iter().any(|t| t == CHECKPOINT_TAG) {
        return Err(Error::InvalidArgument(format!(
            "the tag '{CHECKPOINT_TAG}' is reserved for the partial snapshots of interrupted backups"
        )));
    }
    let (excludes, mut pattern_warnings) = build_excludes(&options.excludes, &options.exclude_files, false)?;
    let (iexcludes, more_warnings) =
        build_excludes(&options.selection.iexcludes, &options.selection.iexclude_files, true)?;
    pattern_warnings.extend(more_warnings);
    let compression = options.compression.unwrap_or(repo.config().compression);
    let pool = crate::pool::workers(options.threads, crate::pool::WAITING_WALK, "archiver")?;
    let packer = if options.dry_run {
        Packer::dry_run(repo, compression)?
    } else {
        Packer::new(repo, compression)?
    };

    let archiver = Archiver {
        repo,
        index: repo.index()?.renewing_reader()?,
        packer,
        progress,
        cancel,
        excludes,
        iexcludes,
        selection: options.selection.clone(),
        changes: options.list_changes.then(|| Mutex::new(Vec::new())),
        one_file_system: options.one_file_system,
        names: OwnerNames::default(),
        counters: Counters::default(),
        warnings: Mutex::new(Vec::new()),
        checkpoints: None,
        obsolete: Mutex::new(Vec::new()),
        pipelines: AtomicUsize::new(0),
        parent_trees: Gauge::default(),
    };
    let mut archiver = archiver;
    for (origin, why) in pattern_warnings {
        archiver.warn(&origin, why);
    }
    // Checkpoints exist only for backups of paths.
    let resumable = matches!(options.source, Source::Paths(_));

    let (paths, parent, walked) = match &mut options.source {
        Source::Paths(paths) => {
            let paths = absolute_paths(paths)?;
            let display: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            // A dry run writes no checkpoint.
            let interval = options.checkpoint_interval.filter(|_| !options.dry_run);
            archiver.checkpoints = interval.map(|interval| {
                Checkpoints::new(interval, display.clone(), options.host.clone(), options.tags.clone())
            });
            // The one listing of snapshots a backup makes: the default
            // parent and the checkpoints to clean up both come from it (a
            // listing reads every snapshot object).
            let mut sorted_display = display.clone();
            sorted_display.sort();
            let same_source: Vec<(SnapshotId, Snapshot)> = snapshot::list(repo)?
                .into_iter()
                .filter(|(_, s)| s.host == options.host && s.sorted_paths() == sorted_display)
                .collect();
            *archiver.obsolete.get_mut().expect("obsolete lock") = same_source
                .iter()
                .filter(|(_, s)| s.is_checkpoint())
                .map(|(id, _)| *id)
                .collect();
            let archiver = &archiver;
            let parent = match &options.parent {
                ParentChoice::None => None,
                // The newest of this host and paths; a checkpoint qualifies:
                // resuming from it skips the files an interrupted backup finished.
                ParentChoice::Latest => same_source.into_iter().next_back(),
                ParentChoice::Snapshot(id) => Some((*id, Snapshot::load(repo, id)?)),
            };
            // A missing source path is reported and left out, as an unreadable
            // file is; the others are still saved. Only when none is left
            // does the backup fail.
            let mut present = Vec::with_capacity(paths.len());
            let mut missing = Vec::new();
            for path in &paths {
                match std::fs::symlink_metadata(path) {
                    Ok(_) => present.push(path.clone()),
                    Err(e) => missing.push((path, e)),
                }
            }
            if present.is_empty() {
                let (path, e) = missing.swap_remove(0);
                return Err(Error::io(path, e));
            }
            for (path, e) in missing {
                archiver.skip(path, format!("cannot back up: {e}"));
            }
            if let (Some(checkpoints), Some((_, parent))) = (&archiver.checkpoints, &parent) {
                if parent.is_checkpoint() {
                    checkpoints.carry_over(repo, &parent.tree);
                }
            }
            let root = SourceTree::build(&present);
            let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
            let scan_roots = present.clone();
            let walked = std::thread::scope(|scope| {
                // Sizes for the progress bar's total, found while the backup runs.
                if archiver.progress.shows_total() {
                    scope.spawn(|| archiver.scan(&scan_roots));
                }
                pool.install(|| {
                    archiver
                        .archive_virtual(Path::new("/"), &root, parent_tree)
                        .map(|(id, _)| id)
                })
            });
            (display, parent.map(|(id, _)| id), walked)
        }
        Source::Stdin { filename } => {
            check_stream_name(filename)?;
            // On the pool: a stream is stored on every worker (`crate::ingest`).
            // `Stdin`, not its lock: the reader moves between threads.
            let archiver = &archiver;
            let stdin = std::io::stdin();
            let file = crate::direct_read::DirectReader::stdin(stdin.as_fd());
            let walked = match file {
                // A regular file (`< disk.img`): read around the page cache
                // as a file given by path would be.
                Some(file) => pool.install(|| archiver.archive_stream(filename, file, "standard input", time)),
                // A pipe or a terminal, read as it comes (a handle of its
                // own: `file` borrows `stdin`).
                None => pool.install(|| archiver.archive_stream(filename, std::io::stdin(), "standard input", time)),
            };
            (vec![format!("/{filename}")], None, walked)
        }
        Source::Reader {
            filename,
            label,
            reader,
        } => {
            check_stream_name(filename)?;
            let archiver = &archiver;
            let walked = pool.install(|| archiver.archive_stream(filename, &mut reader.0, label, time));
            (vec![format!("/{filename}")], None, walked)
        }
    };

    // Flush and index what was uploaded even when the walk failed, so the
    // next backup reuses it; report the walk's error first.
    let peaks = archiver.peaks();
    let Archiver {
        packer,
        counters,
        warnings,
        obsolete,
        changes,
        ..
    } = archiver;
    let packed = packer.finish();
    let (root, packed) = match (walked, packed) {
        // Stopped because the lock was lost: say that, not "interrupted".
        (Err(Error::Interrupted), _) => {
            return Err(match lock.lost() {
                Some(reason) => Error::LockLost { reason },
                None => Error::Interrupted,
            })
        }
        // A storage failure makes the walk fail too ("the uploader stopped");
        // the packer's error is the cause (e.g. no space left on device).
        (_, Err(e)) => return Err(e),
        (Err(e), Ok(_)) => return Err(e),
        (Ok(root), Ok(packed)) => (root, packed),
    };

    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let summary = Summary {
        files_new: c(&counters.files_new),
        files_changed: c(&counters.files_changed),
        files_unmodified: c(&counters.files_unmodified),
        dirs: c(&counters.dirs),
        errors: c(&counters.errors),
        bytes_read: c(&counters.bytes_read),
        bytes_total: c(&counters.bytes_total),
        blobs_added: packed.blobs_added,
        bytes_added_raw: packed.bytes_added_raw,
        bytes_added_stored: packed.bytes_added_stored,
        duration_seconds: started.elapsed().as_secs_f64(),
        files_too_large: c(&counters.files_too_large),
    };
    let changes = changes.map(|changes| {
        let mut changes = changes.into_inner().expect("changes lock");
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes
    });
    let snapshot = Snapshot {
        time,
        host: options.host,
        username: snapshot::username(),
        paths,
        tags: options.tags,
        tree: root,
        parent,
        program_version: format!("snap {}", env!("CARGO_PKG_VERSION")),
        summary,
        description: options.description,
        original: None,
    };
    if options.dry_run {
        return Ok(ArchiveResult {
            id: snapshot.seal(repo).0,
            snapshot,
            warnings: warnings.into_inner().expect("warnings lock"),
            dry_run: true,
            changes,
            peaks,
        });
    }
    crate::snapshot::check_before_save(repo, lock, &snapshot.tree)?;
    crate::failpoint::hit("before-snapshot");
    let id = snapshot.save(repo)?;
    // Whether or not this run wrote checkpoints, the complete snapshot makes
    // those of earlier, interrupted runs of the same host and paths obsolete.
    if resumable {
        remove_checkpoints(repo, &obsolete.into_inner().expect("obsolete lock"));
    }
    Ok(ArchiveResult {
        id,
        snapshot,
        warnings: warnings.into_inner().expect("warnings lock"),
        dry_run: false,
        changes,
        peaks,
    })
}

/// The name a stream is stored under must be one a restore can create.
fn check_stream_name(filename: &str) -> Result<()> {
    if !crate::tree::is_valid_name(filename.as_bytes()) {
        return Err(Error::InvalidArgument(format!("'{filename}' is not a valid file name")));
    }
    // Longer names are valid in a tree but no Linux filesystem can
    // create them, so the file could never be restored.
    if filename.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "--stdin-filename is {} bytes long; a file name may have at most {MAX_NAME_LEN}",
            filename.len()
        )));
    }
    Ok(())
}

/// Deletes obsolete checkpoints of this backup's host and paths: a completed
/// backup makes them all obsolete, a new checkpoint the older ones. They are
/// the ones the backup's listing found and the ones it wrote itself, so no
/// snapshot is read again (a checkpoint another process wrote meanwhile is
/// left to its own run or to a retention policy). Failing to delete one only
/// leaves a snapshot behind (never `latest`, and a retention policy removes
/// it once a complete snapshot is newer).
fn remove_checkpoints(repo: &Repository, ids: &[SnapshotId]) {
    // An append-only server refuses the delete: the checkpoints stay, for
    // prune where the repository is local, without a warning per backup.
    if !ids.is_empty() && repo.backend().append_only() {
        tracing::info!("checkpoints kept: the storage is append-only");
        return;
    }
    for id in ids {
        match repo
            .backend()
            .delete(crate::backend::ObjectKind::Snapshot, &id.to_hex())
        {
            Err(e) if !e.is_not_found() => tracing::warn!("cannot remove checkpoint {id}: {e}"),
            _ => {}
        }
    }
}

/// Builds the exclude matcher (one that ignores case for `--iexclude`).
/// Also returns a warning, with where the pattern came from (`--exclude` or
/// the file), for each pattern that can never match.
fn build_excludes(
    patterns: &[String],
    files: &[PathBuf],
    ignore_case: bool,
) -> Result<(Gitignore, Vec<(PathBuf, String)>)> {
    let mut builder = GitignoreBuilder::new("/");
    builder
        .case_insensitive(ignore_case)
        .map_err(|e| Error::InvalidArgument(format!("exclude patterns: {e}")))?;
    let flag = if ignore_case { "--iexclude" } else { "--exclude" };
    let mut warnings = Vec::new();
    for pattern in patterns {
        builder
            .add_line(None, pattern)
            .map_err(|e| Error::InvalidArgument(format!("{flag} pattern '{pattern}': {e}")))?;
        if let Some(why) = never_matches(pattern) {
            warnings.push((PathBuf::from(flag), why));
        }
    }
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        for line in text.lines() {
            builder
                .add_line(Some(file.clone()), line)
                .map_err(|e| Error::InvalidArgument(format!("{}: pattern '{line}': {e}", file.display())))?;
            if let Some(why) = never_matches(line) {
                warnings.push((file.clone(), why));
            }
        }
    }
    let matcher = builder
        .build()
        .map_err(|e| Error::InvalidArgument(format!("exclude patterns: {e}")))?;
    Ok((matcher, warnings))
}

/// Why an exclude pattern can never match, if it cannot: paths are matched
/// as absolute paths without `.` or `..` components, so a pattern with such
/// a component (`./x`, `a/../b`) matches nothing.
pub fn never_matches(pattern: &str) -> Option<String> {
    let trimmed = pattern.trim_end();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let body = trimmed.strip_prefix('!').unwrap_or(trimmed);
    let has_dot_component = body.split('/').any(|c| c == "." || c == "..");
    has_dot_component.then(|| {
        format!(
            "pattern '{pattern}' can never match: paths are matched as absolute paths without '.' or '..' \
             components (write 'x' to match that name anywhere, or '/full/path/x')"
        )
    })
}

/// Makes paths absolute without resolving symlinks.
fn absolute_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut out = Vec::new();
    for path in paths {
        // `.` and `..` go lexically, as the user sees them (and as `ls` and
        // `restore --path` resolve the paths they are given).
        let clean = snapshot::source_path(path)?;
        if !out.contains(&clean) {
            out.push(clean);
        }
    }
    Ok(out)
}

/// The directories above the source paths, down to the paths themselves.
enum SourceTree {
    /// Back up this path and everything under it.
    Real(PathBuf),
    /// An ancestor of source paths: only the listed children are included.
    Virtual(BTreeMap<Vec<u8>, SourceTree>),
}

impl SourceTree {
    fn build(paths: &[PathBuf]) -> SourceTree {
        let mut root = SourceTree::Virtual(BTreeMap::new());
        for path in paths {
            let components: Vec<Vec<u8>> = path
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n.as_bytes().to_vec()),
                    _ => None,
                })
                .collect();
            root.insert(&components, path);
        }
        root
    }

    fn insert(&mut self, components: &[Vec<u8>], path: &Path) {
        if components.is_empty() {
            *self = SourceTree::Real(path.to_path_buf());
            return;
        }
        // Below a path that is backed up whole, deeper paths add nothing.
        let SourceTree::Virtual(children) = self else {
            return;
        };
        let (name, rest) = components.split_first().expect("not empty");
        if rest.is_empty() {
            children.insert(name.clone(), SourceTree::Real(path.to_path_buf()));
        } else {
            children
                .entry(name.clone())
                .or_insert_with(|| SourceTree::Virtual(BTreeMap::new()))
                .insert(rest, path);
        }
    }
}

impl Archiver<'_> {
    fn warn(&self, path: &Path, message: String) {
        self.progress.event(Event::Warning {
            path,
            message: message.clone(),
        });
        self.warnings
            .lock()
            .expect("warnings lock")
            .push((path.to_path_buf(), message));
    }

    fn skip(&self, path: &Path, message: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.warn(path, message);
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    fn load_parent_tree(&self, path: &Path, id: Option<BlobId>) -> Option<ParentTree<'_>> {
        let id = id?;
        match Tree::load(self.repo, &id) {
            Ok(tree) => {
                self.parent_trees.add();
                Some(ParentTree {
                    tree,
                    id,
                    gauge: &self.parent_trees,
                })
            }
            Err(e) => {
                // Without the parent's tree the files are simply read again.
                self.warn(
                    path,
                    format!("parent snapshot's tree unreadable, reading files again: {e}"),
                );
                None
            }
        }
    }

    fn save_tree(&self, tree: &Tree) -> Result<BlobId> {
        Ok(self.packer.add(BlobKind::Tree, &tree.encode())?.0)
    }

    /// Stores a walked directory's tree, or, when its entries are exactly
    /// the parent snapshot's tree for it, takes that tree's id without
    /// encoding, hashing or looking it up again.
    ///
    /// The reuse is the tree [`Archiver::save_tree`] would store: a tree's
    /// encoding is a function of its value, and `parent` was decoded from
    /// the bytes its id was checked against when it was loaded (with
    /// [`Repository::read_tree_blob`], through the index, so it is indexed:
    /// the same answer the packer's lookup would give). `Node`'s equality
    /// covers every field that is encoded. In an unchanged re-backup every
    /// directory is such a tree; encoding, hashing and the index lookup
    /// were a third of the instructions left per directory (callgrind).
    ///
    /// The tree is made from the directory's records in place: they stay
    /// where a checkpoint finds them until the directory's node stands for
    /// them ([`Archiver::close_dir`]).
    fn save_dir_tree(&self, dir: &OpenDir<'_>, parent: Option<&ParentTree<'_>>) -> Result<BlobId> {
        let encoded = {
            let slots = dir.records.slots.lock().expect("records lock");
            let nodes: Vec<&Node> = slots.iter().flatten().map(|(node, _)| node).collect();
            if let Some(parent) = parent {
                if parent.tree.nodes.iter().eq(nodes.iter().copied()) {
                    return Ok(parent.id);
                }
            }
            Tree::encode_nodes(&nodes)
        };
        Ok(self.packer.add(BlobKind::Tree, &encoded)?.0)
    }

    /// Opens the records of the directory at `path`, of `len` entries.
    fn open_records(&self, path: &Path, len: usize) -> OpenDir<'_> {
        let records = std::sync::Arc::new(DirRecords {
            key: record_key(path),
            slots: Mutex::new(std::iter::repeat_with(|| None).take(len).collect()),
        });
        let checkpoints = self.checkpoints.as_ref();
        let id = checkpoints.map_or(0, |checkpoints| {
            let id = checkpoints.next_id.fetch_add(1, Ordering::Relaxed);
            let mut open = checkpoints.open.lock().expect("checkpoint lock");
            open.insert(id, records.clone());
            id
        });
        OpenDir {
            records,
            id,
            checkpoints,
        }
    }

    /// Records a finished entry other than a walked directory, and writes a
    /// checkpoint when one is due.
    fn entry_done(&self, into: &OpenDir<'_>, index: usize, node: Node) -> Result<()> {
        let file = node.kind == NodeKind::File;
        into.set(index, node);
        if file {
            self.checkpoint_if_due()?;
        }
        Ok(())
    }

    /// Records a finished directory in its parent's records. A walked one
    /// (`walked`, its tree written) is closed in the same step: its node
    /// stands for its records from then on.
    fn close_dir(&self, into: &OpenDir<'_>, index: usize, node: Node, walked: Option<OpenDir<'_>>) {
        let Some(walked) = walked else {
            into.set(index, node);
            return;
        };
        let (held, size) = walked
            .records
            .slots
            .lock()
            .expect("records lock")
            .iter()
            .flatten()
            .fold((0i64, 0u64), |(held, size), (_, bytes)| (held + 1, size + bytes));
        // Under `open`'s lock when checkpoints are kept: a checkpoint sees
        // the directory's records or its node, never neither.
        let open = walked.checkpoints.map(|c| c.open.lock().expect("checkpoint lock"));
        into.records.slots.lock().expect("records lock")[index] = Some((node, size));
        if let (Some(mut open), Some(checkpoints)) = (open, walked.checkpoints) {
            open.remove(&walked.id);
            drop(open);
            checkpoints.count(1 - held);
        }
        // `walked` drops here and finds itself closed.
    }

    /// Archives an ancestor directory of the source paths.
    /// Returns its tree and its records, which its tree stands for.
    fn archive_virtual(
        &self,
        path: &Path,
        source: &SourceTree,
        parent: Option<BlobId>,
    ) -> Result<(BlobId, OpenDir<'_>)> {
        let children = match source {
            SourceTree::Real(real) => {
                let meta = std::fs::symlink_metadata(real).map_err(|e| Error::io(real, e))?;
                let fd = open_dir(None, b"", real, (meta.dev(), meta.ino())).map_err(|e| Error::io(real, e))?;
                return self.archive_dir(real, parent, None, &fd, 0, &IgnoreChain::default());
            }
            SourceTree::Virtual(children) => children,
        };
        let parent_tree = self.load_parent_tree(path, parent);
        let records = self.open_records(path, children.len());
        let children: Vec<(&Vec<u8>, &SourceTree)> = children.iter().collect();
        children
            .par_iter()
            .enumerate()
            .try_for_each(|(index, (name, child))| -> Result<()> {
                let child_path = child_path(path, name);
                let parent_node = parent_tree.as_ref().and_then(|t| t.find(name));
                match child {
                    SourceTree::Real(real) => match self.archive_entry(real, name.to_vec(), parent_node, None, None)? {
                        Entry::Skipped => Ok(()),
                        Entry::Done(node) => self.entry_done(&records, index, node),
                        Entry::Dir(dir) => {
                            if let Some((node, walked)) =
                                self.descend(None, real, dir, parent_node, 0, &IgnoreChain::default())?
                            {
                                self.close_dir(&records, index, node, walked);
                            }
                            Ok(())
                        }
                    },
                    SourceTree::Virtual(_) => {
                        // A component that is a symlink to a directory (the
                        // source path was given through it) is recorded as the
                        // directory it leads to: a symlink's own mode is 0777.
                        let st = rustix::fs::lstat(&child_path).and_then(|st| match fsmeta::node_kind(&st) {
                            Some(NodeKind::Symlink) => rustix::fs::stat(&child_path),
                            _ => Ok(st),
                        });
                        let st = match st {
                            Ok(st) => st,
                            Err(e) => {
                                self.skip(&child_path, format!("cannot read metadata: {e}"));
                                return Ok(());
                            }
                        };
                        let mut node = fsmeta::node_from_stat(name.to_vec(), NodeKind::Dir, &st, &self.names);
                        node.xattrs = fsmeta::read_xattrs(&child_path);
                        if fsmeta::mtime_out_of_range(&st) {
                            self.warn(
                                &child_path,
                                fsmeta::clamped_time_warning(node.mtime_ns).unwrap_or_default().into(),
                            );
                        }
                        let (subtree, walked) =
                            self.archive_virtual(&child_path, child, parent_node.and_then(|n| n.subtree))?;
                        node.subtree = Some(subtree);
                        self.counters.dirs.fetch_add(1, Ordering::Relaxed);
                        self.close_dir(&records, index, node, Some(walked));
                        Ok(())
                    }
                }
            })?;
        let id = self.save_dir_tree(&records, parent_tree.as_ref())?;
        Ok((id, records))
    }

    /// Archives a directory's content into a tree blob. `depth`: how many
    /// directories above it this walk has entered.
    ///
    /// `dir` is the directory itself, opened by [`open_dir`]: entries are
    /// listed, checked and opened through it, so a directory swapped for a
    /// symlink during the walk cannot bring in files from elsewhere.
    ///
    /// Down to [`PARALLEL_DEPTH`], subdirectories are archived recursively
    /// and in parallel; below it, [`Archiver::archive_deep`] walks them with
    /// a stack on the heap, so no tree is too deep for the thread's stack.
    fn archive_dir(
        &self,
        path: &Path,
        parent: Option<BlobId>,
        root_dev: Option<u64>,
        dir: &OwnedFd,
        depth: usize,
        ignores: &IgnoreChain,
    ) -> Result<(BlobId, OpenDir<'_>)> {
        if depth >= PARALLEL_DEPTH {
            return self.archive_deep(path, parent, root_dev, dir, ignores);
        }
        self.check_cancel()?;
        let parent_tree = self.load_parent_tree(path, parent);
        let (entries, ignores) = self.list_entries(path, dir, ignores);
        let records = self.open_records(path, entries.len());
        // The names move into the entries' nodes.
        entries
            .into_par_iter()
            .enumerate()
            .try_for_each(|(index, name)| -> Result<()> {
                let child = child_path(path, &name);
                let parent_node = parent_tree.as_ref().and_then(|t| t.find_near(&name, index));
                match self.archive_entry(&child, name, parent_node, root_dev, Some(dir))? {
                    Entry::Skipped => Ok(()),
                    Entry::Done(node) => self.entry_done(&records, index, node),
                    Entry::Dir(sub) => {
                        if let Some((node, walked)) =
                            self.descend(Some(dir), &child, sub, parent_node, depth + 1, &ignores)?
                        {
                            self.close_dir(&records, index, node, walked);
                        }
                        Ok(())
                    }
                }
            })?;
        let id = self.save_dir_tree(&records, parent_tree.as_ref())?;
        Ok((id, records))
    }

    /// The names to archive in an open directory, sorted, without excluded
    /// ones, and the `.snapignore` files that apply in it (`inherited` and
    /// its own, if it has one). `--exclude` and `--iexclude` always win: a
    /// `!pattern` in a `.snapignore` only re-includes what an outer
    /// `.snapignore` left out.
    fn list_entries(&self, path: &Path, dir: &OwnedFd, inherited: &IgnoreChain) -> (Vec<Vec<u8>>, IgnoreChain) {
        let mut entries = match list_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.skip(path, format!("cannot list directory: {e}"));
                Vec::new()
            }
        };
        entries.sort_unstable();
        let has_snapignore = !self.selection.skip_snapignore
            && entries
                .iter()
                .any(|(name, is_dir)| !is_dir && name == SNAPIGNORE.as_bytes());
        let ignores = match has_snapignore.then(|| self.read_snapignore(path, dir)).flatten() {
            Some(matcher) => IgnoreChain(Some(std::sync::Arc::new(IgnoreLink {
                matcher,
                outer: inherited.clone(),
            }))),
            None => inherited.clone(),
        };
        if self.excludes.is_empty() && self.iexcludes.is_empty() && ignores.0.is_none() {
            // No pattern can match: no path to build per entry.
            return (entries.into_iter().map(|(name, _)| name).collect(), ignores);
        }
        let entries = entries
            .into_iter()
            .filter(|(name, is_dir)| {
                let child = child_path(path, name);
                !self.excludes.matched(&child, *is_dir).is_ignore()
                    && !self.iexcludes.matched(&child, *is_dir).is_ignore()
                    && !ignores.ignored(&child, *is_dir)
            })
            .map(|(name, _)| name)
            .collect();
        (entries, ignores)
    }

    /// The patterns of the `.snapignore` in the open directory `dir` (at
    /// `path`), anchored there. An unreadable file or a bad pattern is
    /// reported and the rest is used.
    fn read_snapignore(&self, path: &Path, dir: &OwnedFd) -> Option<Gitignore> {
        let file_path = path.join(SNAPIGNORE);
        let mut text = String::new();
        // Opened as backups open files: through the directory, never
        // through a symlink, only a regular file. Bounded: it is a list of
        // patterns, not data.
        let read = open_for_backup(Some(dir), SNAPIGNORE.as_bytes(), &file_path)
            .and_then(|file| file.take(1 << 20).read_to_string(&mut text));
        if let Err(e) = read {
            self.warn(&file_path, format!("cannot read: {e}; its patterns are not applied"));
            return None;
        }
        let mut builder = GitignoreBuilder::new(path);
        for line in text.lines() {
            if let Err(e) = builder.add_line(Some(file_path.clone()), line) {
                self.warn(&file_path, format!("pattern '{line}' ignored: {e}"));
            }
        }
        match builder.build() {
            Ok(matcher) => Some(matcher),
            Err(e) => {
                self.warn(&file_path, format!("its patterns are not applied: {e}"));
                None
            }
        }
    }

    /// Whether the directory `name` in the open directory `dir` holds one of
    /// the `--exclude-if-present` markers.
    fn has_marker(&self, dir: &OwnedFd, name: &[u8]) -> bool {
        use rustix::fs::{Mode, OFlags};
        if self.selection.markers.is_empty() {
            return false;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Not listable: the walk reports it when it gets there.
        let Ok(subdir) = rustix::fs::openat(dir, std::ffi::OsStr::from_bytes(name), flags, Mode::empty()) else {
            return false;
        };
        self.selection.markers.iter().any(|marker| match &marker.header {
            None => rustix::fs::statat(&subdir, marker.name.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok(),
            Some(header) => {
                let Ok(file) = open_for_backup(Some(&subdir), marker.name.as_bytes(), Path::new(&marker.name)) else {
                    return false;
                };
                let mut start = Vec::with_capacity(header.len());
                file.take(header.len() as u64).read_to_end(&mut start).is_ok() && start == *header
            }
        })
    }

    /// Archives the subdirectory `sub` (at `path`, in the open directory
    /// `dir`) recursively: its node, with the records it stands for when it
    /// was walked, for [`Archiver::close_dir`]. `Ok(None)` when it was skipped.
    fn descend(
        &self,
        dir: Option<&OwnedFd>,
        path: &Path,
        mut sub: SubDir,
        parent: Option<&Node>,
        depth: usize,
        ignores: &IgnoreChain,
    ) -> Result<Option<(Node, Option<OpenDir<'_>>)>> {
        let walked = match self.open_subdir(dir, path, &mut sub)? {
            Opened::Walk(fd) => {
                let parent_subtree = parent.and_then(|p| p.subtree);
                let (id, walked) = self.archive_dir(path, parent_subtree, Some(sub.root_dev), &fd, depth, ignores)?;
                sub.node.subtree = Some(id);
                Some(walked)
            }
            Opened::Finished => None,
            Opened::Skipped => return Ok(None),
        };
        self.progress.event(Event::ItemDone(path));
        Ok(Some((sub.node, walked)))
    }

    /// Opens a subdirectory to walk it, reading its extended attributes
    /// through the opened descriptor (a path may be longer than the kernel
    /// accepts in a deep tree).
    fn open_subdir(&self, dir: Option<&OwnedFd>, path: &Path, sub: &mut SubDir) -> Result<Opened> {
        let node = &mut sub.node;
        match open_dir(dir, &node.name, path, (node.device, node.inode)) {
            Ok(fd) => {
                if !sub.have_xattrs {
                    let file = File::from(fd);
                    node.xattrs = fsmeta::read_file_xattrs(&file);
                    return Ok(Opened::Walk(OwnedFd::from(file)));
                }
                Ok(Opened::Walk(fd))
            }
            // Kept, with its metadata, as an empty directory.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                if !sub.have_xattrs {
                    node.xattrs = fsmeta::read_xattrs(path);
                }
                self.skip(path, format!("cannot list directory: {e}"));
                node.subtree = Some(self.save_tree(&Tree::default())?);
                Ok(Opened::Finished)
            }
            // Replaced (by a symlink or another directory) since the walk saw it.
            Err(e) => {
                self.skip(path, format!("cannot open directory: {e}"));
                Ok(Opened::Skipped)
            }
        }
    }

    /// Archives the tree below `dir` without recursion: the directories
    /// being walked are [`Frame`]s on a stack on the heap, so a chain of any
    /// depth (any user who can `mkdir` can make one) cannot overflow the
    /// thread's stack. Each directory's entries are still archived in
    /// parallel; its subdirectories are walked one after the other.
    ///
    /// A frame keeps its directory open only while it has subdirectories
    /// left, so a chain holds a few descriptors whatever its depth.
    fn archive_deep(
        &self,
        path: &Path,
        parent: Option<BlobId>,
        root_dev: Option<u64>,
        dir: &OwnedFd,
        ignores: &IgnoreChain,
    ) -> Result<(BlobId, OpenDir<'_>)> {
        let mut path = path.to_path_buf();
        let fd = rustix::io::fcntl_dupfd_cloexec(dir, 0).map_err(|e| Error::io(&path, e.into()))?;
        let mut stack = vec![self.open_frame(&path, None, fd, parent, root_dev, ignores)?];
        loop {
            let top = stack.last_mut().expect("the stack is not empty in the loop");
            if let Some((index, mut sub)) = top.pending.pop() {
                path.push(std::ffi::OsStr::from_bytes(&sub.node.name));
                let parent_node = top.parent_tree.as_ref().and_then(|t| t.find(&sub.node.name));
                let parent_subtree = parent_node.and_then(|p| p.subtree);
                // Never by path: a frame keeps its descriptor while it has pending subdirectories.
                let dir = top.fd.as_ref().expect("a frame with pending subdirectories is open");
                let opened = self.open_subdir(Some(dir), &path, &mut sub)?;
                if top.pending.is_empty() {
                    // No more subdirectories to open through it.
                    top.fd = None;
                }
                let ignores = top.ignores.clone();
                match opened {
                    Opened::Walk(fd) => {
                        self.check_cancel()?;
                        let node = Some((index, sub.node));
                        let frame = self.open_frame(&path, node, fd, parent_subtree, Some(sub.root_dev), &ignores)?;
                        stack.push(frame);
                    }
                    Opened::Finished => {
                        self.close_dir(&top.records, index, sub.node, None);
                        self.progress.event(Event::ItemDone(&path));
                        path.pop();
                    }
                    Opened::Skipped => {
                        path.pop();
                    }
                }
                continue;
            }
            let frame = stack.pop().expect("the stack is not empty in the loop");
            let id = self.save_dir_tree(&frame.records, frame.parent_tree.as_ref())?;
            let Some((index, mut node)) = frame.node else {
                return Ok((id, frame.records));
            };
            node.subtree = Some(id);
            let parent = stack.last().expect("a subdirectory's frame has its parent's below it");
            self.close_dir(&parent.records, index, node, Some(frame.records));
            self.progress.event(Event::ItemDone(&path));
            path.pop();
        }
    }

    /// Lists the open directory `fd` (at `path`) and archives its entries
    /// other than subdirectories, which are left pending in the frame.
    fn open_frame(
        &self,
        path: &Path,
        node: Option<(usize, Node)>,
        fd: OwnedFd,
        parent: Option<BlobId>,
        root_dev: Option<u64>,
        inherited: &IgnoreChain,
    ) -> Result<Frame<'_>> {
        self.check_cancel()?;
        let parent_tree = self.load_parent_tree(path, parent);
        let (entries, ignores) = self.list_entries(path, &fd, inherited);
        let records = self.open_records(path, entries.len());
        // The names move into the entries' nodes.
        let done = entries
            .into_par_iter()
            .enumerate()
            .map(|(index, name)| {
                let child = child_path(path, &name);
                let parent_node = parent_tree.as_ref().and_then(|t| t.find_near(&name, index));
                match self.archive_entry(&child, name, parent_node, root_dev, Some(&fd))? {
                    Entry::Skipped => Ok(None),
                    Entry::Done(node) => self.entry_done(&records, index, node).map(|()| None),
                    Entry::Dir(sub) => Ok(Some((index, sub))),
                }
            })
            .collect::<Result<Vec<Option<(usize, SubDir)>>>>()?;
        // Popped from the end: walked in name order.
        let mut pending: Vec<(usize, SubDir)> = done.into_iter().flatten().collect();
        pending.reverse();
        Ok(Frame {
            node,
            fd: (!pending.is_empty()).then_some(fd),
            parent_tree,
            pending,
            records,
            ignores,
        })
    }

    /// Archives one entry of any kind but walks no directory: a directory
    /// to walk comes back as [`Entry::Dir`] for the caller.
    fn archive_entry(
        &self,
        path: &Path,
        name: Vec<u8>,
        parent: Option<&Node>,
        root_dev: Option<u64>,
        dir: Option<&OwnedFd>,
    ) -> Result<Entry> {
        self.check_cancel()?;
        // Through the directory being walked, not the path: if a directory
        // above was swapped for a symlink, the path leads elsewhere.
        let stat = match dir {
            Some(dir) => rustix::fs::statat(
                dir,
                std::ffi::OsStr::from_bytes(&name),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ),
            None => rustix::fs::lstat(path),
        };
        let st = match stat {
            Ok(st) => st,
            Err(e) => {
                self.skip(path, format!("cannot read metadata: {}", std::io::Error::from(e)));
                return Ok(Entry::Skipped);
            }
        };
        let Some(kind) = fsmeta::node_kind(&st) else {
            self.skip(path, "unknown file type".into());
            return Ok(Entry::Skipped);
        };
        let mut node = fsmeta::node_from_stat(name, kind, &st, &self.names);
        if kind == NodeKind::File && self.selection.max_file_size.is_some_and(|max| node.size > max) {
            self.counters.files_too_large.fetch_add(1, Ordering::Relaxed);
            return Ok(Entry::Skipped);
        }
        // Only below the source paths, as `--exclude`: a directory given
        // explicitly (`dir` is `None`) is backed up.
        if let (NodeKind::Dir, Some(dir)) = (kind, dir) {
            if self.has_marker(dir, &node.name) {
                return Ok(Entry::Skipped);
            }
        }
        if fsmeta::mtime_out_of_range(&st) {
            self.warn(
                path,
                fsmeta::clamped_time_warning(node.mtime_ns).unwrap_or_default().into(),
            );
        }
        // Changing extended attributes changes ctime: while kind, inode and
        // ctime match the parent snapshot's entry, its attributes still hold
        // and are not read again (a listxattr per file is a large part of an
        // unchanged backup).
        let same_attributes = parent.filter(|p| p.kind == kind && p.inode == node.inode && p.ctime_ns == node.ctime_ns);
        if let Some(p) = same_attributes {
            node.xattrs = p.xattrs.clone();
        } else if kind != NodeKind::File && kind != NodeKind::Dir {
            // Files' attributes are read from the open file, directories'
            // from the open directory.
            node.xattrs = fsmeta::read_xattrs(path);
        }
        if kind == NodeKind::Symlink {
            let target = match dir {
                Some(dir) => rustix::fs::readlinkat(dir, std::ffi::OsStr::from_bytes(&node.name), Vec::new()),
                None => rustix::fs::readlinkat(rustix::fs::CWD, path, Vec::new()),
            };
            // Linux has no empty symlinks: an empty or unreadable target means
            // the entry changed after the stat above.
            match target {
                Ok(target) if !target.as_bytes().is_empty() => node.link_target = target.into_bytes(),
                _ => {
                    self.skip(path, "changed while being backed up (symlink unreadable)".into());
                    return Ok(Entry::Skipped);
                }
            }
        }
        match kind {
            NodeKind::Dir => {
                self.counters.dirs.fetch_add(1, Ordering::Relaxed);
                let dev = node.device;
                let root_dev = root_dev.unwrap_or(dev);
                if self.one_file_system && dev != root_dev {
                    // A mount point: kept as an empty directory, like restic does.
                    if same_attributes.is_none() {
                        node.xattrs = fsmeta::read_xattrs(path);
                    }
                    node.subtree = Some(self.save_tree(&Tree::default())?);
                } else {
                    return Ok(Entry::Dir(SubDir {
                        node,
                        root_dev,
                        have_xattrs: same_attributes.is_some(),
                    }));
                }
            }
            NodeKind::File => {
                let stored = self.archive_file(path, &mut node, parent, dir, same_attributes.is_some())?;
                if !stored {
                    return Ok(Entry::Skipped);
                }
            }
            _ => {}
        }
        self.progress.event(Event::ItemDone(path));
        Ok(Entry::Done(node))
    }

    /// Whether the parent's entry can stand for this file without reading it.
    fn unchanged(&self, node: &Node, parent: &Node) -> Result<bool> {
        if parent.kind != NodeKind::File
            || parent.size != node.size
            || parent.mtime_ns != node.mtime_ns
            || parent.ctime_ns != node.ctime_ns
            || parent.inode != node.inode
        {
            return Ok(false);
        }
        for id in &parent.content {
            if self.index.lookup(id)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Fills a file node's content. `Ok(false)` when the file was skipped.
    /// `have_xattrs`: the node already has the file's extended attributes.
    fn archive_file(
        &self,
        path: &Path,
        node: &mut Node,
        parent: Option<&Node>,
        dir: Option<&OwnedFd>,
        have_xattrs: bool,
    ) -> Result<bool> {
        self.counters.bytes_total.fetch_add(node.size, Ordering::Relaxed);
        if let Some(parent) = parent {
            if self.unchanged(node, parent)? {
                node.content = parent.content.clone();
                self.counters.files_unmodified.fetch_add(1, Ordering::Relaxed);
                self.progress.event(Event::Bytes(node.size));
                return Ok(true);
            }
        }
        let (file, opened) = match open_for_backup_stat(dir, &node.name, path, Some(node.uid)) {
            Ok(opened) => opened,
            Err(e) => {
                self.skip(path, format!("cannot open: {e}"));
                return Ok(false);
            }
        };
        #[allow(clippy::unnecessary_cast)]
        if (opened.st_ino as u64, opened.st_dev as u64) != (node.inode, node.device) {
            self.skip(path, "replaced by another file while being backed up".into());
            return Ok(false);
        }
        if !have_xattrs {
            node.xattrs = fsmeta::read_file_xattrs(&file);
        }
        let mut content = Vec::new();
        let mut read = 0u64;
        let result = self.read_file_into(path, &file, node, &mut content, &mut read);
        match result {
            Ok(()) => {}
            Err(e) if matches!(e, Error::Interrupted) || !matches!(e, Error::Io { .. }) => return Err(e),
            Err(e) => {
                self.skip(path, format!("cannot read: {e}"));
                return Ok(false);
            }
        }
        node.size = read;
        node.content = content;
        let (counter, change) = if parent.is_some() {
            (&self.counters.files_changed, Change::Modified)
        } else {
            (&self.counters.files_new, Change::New)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(changes) = &self.changes {
            changes.lock().expect("changes lock").push((path.to_path_buf(), change));
        }
        Ok(true)
    }

    /// Reads an opened file's content into chunks, then checks that the file
    /// did not change while it was read (warning if it did): its size after
    /// the read must be what was read and its mtime what the walk saw.
    ///
    /// A small file is read with one `read` into a buffer the thread reuses,
    /// asking for one byte more than its size: getting fewer means the end
    /// was reached, which the `fstat` after the read (made anyway) confirms,
    /// so the second `read` that would only return 0 is not needed. If the
    /// file turns out longer, the rest is read as before, after the bytes
    /// already in the buffer: the chunker sees the same stream either way.
    fn read_file_into(
        &self,
        path: &Path,
        file: &File,
        node: &Node,
        content: &mut Vec<BlobId>,
        read: &mut u64,
    ) -> Result<()> {
        /// Files up to this size are read in one call.
        const ONE_READ: u64 = 256 << 10;
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mtime_of = |st: &rustix::fs::Stat| {
            #[allow(clippy::unnecessary_cast)]
            (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64)
        };
        #[allow(clippy::unnecessary_cast)]
        let whole = |st: &rustix::fs::Stat, read: u64| st.st_size as u64 == read && mtime_of(st) == node.mtime_ns;
        let warn_if_changed = |read: u64| {
            if let Ok(after) = rustix::fs::fstat(file) {
                if !whole(&after, read) {
                    self.warn(path, format!("changed while being read ({read} bytes stored)"));
                }
            }
        };
        if node.size > ONE_READ {
            let reader = crate::direct_read::DirectReader::new(file, node.size);
            self.chunk_into(reader, Some(node.size), content, read)?;
            warn_if_changed(*read);
            return Ok(());
        }
        // Taken out while in use, not borrowed: if storing a chunk lets this
        // thread pick up another file meanwhile, that one finds an empty
        // buffer and allocates its own.
        let mut buf = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        buf.resize(node.size as usize + 1, 0);
        let result = (|| {
            let n = loop {
                match (&*file).read(&mut buf[..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("", e)),
                }
            };
            let head = &buf[..n];
            if n <= node.size as usize {
                if let Ok(after) = rustix::fs::fstat(file) {
                    if whole(&after, n as u64) {
                        return self.chunk_into(head, Some(n as u64), content, read);
                    }
                }
            }
            // Longer than it was, or changed: read on to the end as before.
            self.chunk_into(head.chain(file), Some(node.size), content, read)?;
            warn_if_changed(*read);
            Ok(())
        })();
        BUF.with(|b| *b.borrow_mut() = buf);
        result
    }

    /// Chunks a reader and stores the new chunks. I/O errors come back as
    /// [`Error::Io`] with an empty path; the caller adds context. Content
    /// larger than a block (or of unknown size) is read ahead and stored on
    /// every worker ([`crate::ingest`]); smaller content chunk by chunk on
    /// this thread (files beside it keep the other workers busy).
    fn chunk_into(
        &self,
        reader: impl Read + Send,
        size_hint: Option<u64>,
        content: &mut Vec<BlobId>,
        read: &mut u64,
    ) -> Result<()> {
        let chunker = self.repo.chunker();
        let large = size_hint.is_none_or(|size| size > crate::ingest::block_size(chunker) as u64);
        if large && self.pipelines.fetch_add(1, Ordering::AcqRel) < MAX_PIPELINES {
            let store = |chunk: &[u8]| -> Result<BlobId> {
                let (id, _) = self.packer.add(BlobKind::Data, chunk)?;
                self.counters
                    .bytes_read
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                self.progress.event(Event::Bytes(chunk.len() as u64));
                Ok(id)
            };
            let stored = crate::ingest::store_content(chunker, reader, self.cancel, &store, content, read);
            self.pipelines.fetch_sub(1, Ordering::AcqRel);
            return stored;
        }
        if large {
            self.pipelines.fetch_sub(1, Ordering::AcqRel);
        }
        let mut chunks = chunker.chunks(reader, size_hint);
        while let Some(chunk) = chunks.next_chunk().map_err(|e| Error::io("", e))? {
            self.check_cancel()?;
            let (id, _) = self.packer.add(BlobKind::Data, chunk)?;
            content.push(id);
            *read += chunk.len() as u64;
            self.counters
                .bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            self.progress.event(Event::Bytes(chunk.len() as u64));
        }
        Ok(())
    }

    /// Stores one stream as the only file of the snapshot; `label` names
    /// the stream in errors ("standard input", "command 'pg_dump'").
    fn archive_stream(
        &self,
        filename: &str,
        reader: impl Read + Send,
        label: &str,
        time: jiff::Timestamp,
    ) -> Result<BlobId> {
        let mut node = Node::new(filename.as_bytes().to_vec(), NodeKind::File);
        node.mode = 0o600;
        node.uid = rustix::process::getuid().as_raw();
        node.gid = rustix::process::getgid().as_raw();
        node.user = self.names.user(node.uid);
        node.group = self.names.group(node.gid);
        node.mtime_ns = time.as_nanosecond() as i64;
        node.ctime_ns = node.mtime_ns;
        node.links = 1;
        let mut content = Vec::new();
        let mut read = 0;
        self.chunk_into(reader, None, &mut content, &mut read)
            .map_err(|e| match e {
                Error::Io { error, .. } => Error::io(label, error),
                other => other,
            })?;
        node.size = read;
        node.content = content;
        self.counters.files_new.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_total.fetch_add(read, Ordering::Relaxed);
        self.save_tree(&Tree { nodes: vec![node] })
    }

    /// Writes a checkpoint when one is due.
    fn checkpoint_if_due(&self) -> Result<()> {
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        if checkpoints.last.lock().expect("checkpoint lock").elapsed() < checkpoints.interval {
            return Ok(());
        }
        // One worker writes the checkpoint; the others carry on.
        let Ok(_writing) = checkpoints.writing.try_lock() else {
            return Ok(());
        };
        self.write_checkpoint(checkpoints)?;
        *checkpoints.last.lock().expect("checkpoint lock") = Instant::now();
        Ok(())
    }

    fn peaks(&self) -> WalkPeaks {
        WalkPeaks {
            parent_trees: self.parent_trees.peak.load(Ordering::Relaxed),
            checkpoint_records: self.checkpoints.as_ref().map_or(0, |c| c.peak.load(Ordering::Relaxed)),
        }
    }

    fn write_checkpoint(&self, checkpoints: &Checkpoints) -> Result<()> {
        // A file carried over from the resumed checkpoint and finished again
        // is in the list twice: the later entry wins.
        let finished = checkpoints.finished();
        let size: u64 = finished.values().map(|(_, size)| size).sum();
        let mut root = BTreeMap::new();
        for (key, (node, _)) in finished {
            let mut components: Vec<Vec<u8>> = key
                .split(|b| *b == 0)
                .filter(|name| !name.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            let Some(file_name) = components.pop() else {
                continue;
            };
            let mut dir = &mut root;
            for name in components {
                let entry = dir.entry(name).or_insert_with(|| CheckpointEntry::Dir(BTreeMap::new()));
                if let CheckpointEntry::Leaf(_) = entry {
                    // A file carried over from the resumed checkpoint that
                    // is a directory now: what this run finished below wins.
                    *entry = CheckpointEntry::Dir(BTreeMap::new());
                }
                dir = match entry {
                    CheckpointEntry::Dir(children) => children,
                    CheckpointEntry::Leaf(_) => unreachable!("replaced just above"),
                };
            }
            dir.insert(file_name, CheckpointEntry::Leaf(Box::new(node)));
        }
        let tree = self.save_checkpoint_tree(root)?;
        // The snapshot may only point at what is stored and indexed.
        self.packer.checkpoint()?;
        let mut tags = checkpoints.tags.clone();
        tags.push(CHECKPOINT_TAG.to_string());
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let snapshot = Snapshot {
            time: jiff::Timestamp::now(),
            host: checkpoints.host.clone(),
            username: snapshot::username(),
            paths: checkpoints.paths.clone(),
            tags,
            tree,
            parent: None,
            program_version: format!("snap {}", env!("CARGO_PKG_VERSION")),
            // What `snapshots` shows: the files the checkpoint holds.
            summary: Summary {
                files_new: c(&self.counters.files_new),
                files_changed: c(&self.counters.files_changed),
                files_unmodified: c(&self.counters.files_unmodified),
                errors: c(&self.counters.errors),
                bytes_read: c(&self.counters.bytes_read),
                bytes_total: size,
                ..Summary::default()
            },
            description: None,
            original: None,
        };
        // The new checkpoint first, then the older ones: an interruption in
        // between leaves two, never none.
        let id = snapshot.save(self.repo)?;
        crate::failpoint::hit("checkpoint-saved");
        let older = std::mem::replace(&mut *self.obsolete.lock().expect("obsolete lock"), vec![id]);
        remove_checkpoints(self.repo, &older);
        crate::failpoint::hit("checkpoint-written");
        Ok(())
    }

    fn save_checkpoint_tree(&self, entries: BTreeMap<Vec<u8>, CheckpointEntry>) -> Result<BlobId> {
        let mut nodes = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            match entry {
                CheckpointEntry::Leaf(node) => nodes.push(*node),
                CheckpointEntry::Dir(children) => {
                    let mut dir = Node::new(name, NodeKind::Dir);
                    dir.mode = 0o700;
                    dir.subtree = Some(self.save_checkpoint_tree(children)?);
                    nodes.push(dir);
                }
            }
        }
        self.save_tree(&Tree { nodes })
    }

    /// Walks the sources to report the total size for the progress bar.
    fn scan(&self, roots: &[PathBuf]) {
        let mut stack: Vec<PathBuf> = roots.to_vec();
        let (mut bytes, mut items) = (0u64, 0u64);
        let mut last_report = Instant::now();
        while let Some(path) = stack.pop() {
            if self.cancel.load(Ordering::Relaxed) {
                return;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            items += 1;
            if meta.is_file() {
                bytes += meta.len();
            } else if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    for entry in entries.flatten() {
                        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                        let child = entry.path();
                        if !self.excludes.matched(&child, is_dir).is_ignore()
                            && !self.iexcludes.matched(&child, is_dir).is_ignore()
                        {
                            stack.push(child);
                        }
                    }
                }
            }
            if last_report.elapsed().as_millis() > 200 {
                self.progress.event(Event::Total { bytes, items });
                last_report = Instant::now();
            }
        }
        self.progress.event(Event::Total { bytes, items });
    }
}

/// Opens a file for reading through its directory (`openat`, never following
/// a symlink), without updating its access time when allowed.
fn open_for_backup(dir: Option<&OwnedFd>, name: &[u8], path: &Path) -> std::io::Result<File> {
    open_for_backup_stat(dir, name, path, None).map(|(file, _)| file)
}

/// [`open_for_backup`], also handing back the `fstat` of what was opened
/// (the check that it is a regular file needs it anyway: one stat, not two).
/// `owner`: the file's owner as the walk saw it, if known.
fn open_for_backup_stat(
    dir: Option<&OwnedFd>,
    name: &[u8],
    path: &Path,
    owner: Option<u32>,
) -> std::io::Result<(File, rustix::fs::Stat)> {
    use rustix::fs::{Mode, OFlags};
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let open = |flags: OFlags| -> std::io::Result<OwnedFd> {
        let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(match dir {
            Some(dir) => rustix::fs::openat(dir, std::ffi::OsStr::from_bytes(name), flags, Mode::empty())?,
            None => rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty())?,
        })
    };
    // O_NONBLOCK: if the file was swapped for a FIFO since it was listed, a
    // blocking open would wait for a writer forever. It changes nothing for
    // reading a regular file. O_NOATIME is refused (EPERM) for files the
    // caller does not own, unless it is root: not tried then, which saves a
    // failed openat per file of another user.
    let euid = *EUID.get_or_init(|| rustix::process::geteuid().as_raw());
    let fd = if euid != 0 && owner.is_some_and(|uid| uid != euid) {
        open(OFlags::NONBLOCK)?
    } else {
        open(OFlags::NOATIME | OFlags::NONBLOCK).or_else(|_| open(OFlags::NONBLOCK))?
    };
    // Whatever was opened must be a regular file: reading a FIFO or a device
    // swapped in since the listing could block or never end.
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::other(
            "replaced by something that is not a regular file",
        ));
    }
    Ok((File::from(fd), st))
}

/// Opens a directory for listing (through its parent when given), never
/// through a symlink, and only while it is still the directory the walk saw:
/// `expect` is its (device, inode).
fn open_dir(dir: Option<&OwnedFd>, name: &[u8], path: &Path, expect: (u64, u64)) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match dir {
        Some(dir) => rustix::fs::openat(dir, std::ffi::OsStr::from_bytes(name), flags, Mode::empty())?,
        None => rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty())?,
    };
    let st = rustix::fs::fstat(&fd)?;
    if (st.st_dev, st.st_ino) != expect {
        return Err(std::io::Error::other("replaced while being backed up"));
    }
    Ok(fd)
}

/// `dir.join(name)` in one allocation: `join` copies `dir` at its length and
/// grows the buffer again for `name`, two allocations per entry walked.
fn child_path(dir: &Path, name: &[u8]) -> PathBuf {
    let mut path = PathBuf::with_capacity(dir.as_os_str().len() + 1 + name.len());
    path.push(dir);
    path.push(std::ffi::OsStr::from_bytes(name));
    path
}

/// The entries of an open directory: name, and whether it is a directory.
fn list_dir(dir: &OwnedFd) -> std::io::Result<Vec<(Vec<u8>, bool)>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            rustix::fs::FileType::Directory => true,
            // Some filesystems do not report types in listings.
            rustix::fs::FileType::Unknown => rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory),
            _ => false,
        };
        out.push((name.to_vec(), is_dir));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file swapped for a FIFO between the listing and the open: the open
    /// must neither block (waiting for a writer that never comes) nor hand
    /// back something to read that is not a regular file.
    #[test]
    fn opening_a_fifo_for_backup_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("swapped");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
        let parent: OwnedFd = rustix::fs::open(
            dir.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let through_dir = open_for_backup(Some(&parent), b"swapped", &fifo).map(|_| ());
            let by_path = open_for_backup(None, b"", &fifo).map(|_| ());
            let _ = done.send((through_dir, by_path));
        });
        let (through_dir, by_path) = result
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO blocked");
        for opened in [through_dir, by_path] {
            let e = opened.expect_err("a FIFO is not opened for backup");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    /// Checkpoint records are keyed so that bytes compare as `Path`s do,
    /// and a directory's descendants are the keys between `key\0` and `key\x01`.
    #[test]
    fn record_keys_sort_as_paths_and_group_descendants() {
        let paths = [
            "/", "/a", "/a/b", "/a/b/c", "/a b", "/a.b", "/a.b/c", "/a\x01", "/ab", "/b", "/a/b.c", "/a/b c",
        ];
        let mut by_path: Vec<&Path> = paths.iter().map(Path::new).collect();
        by_path.sort();
        let mut by_key = by_path.clone();
        by_key.sort_by_key(|p| record_key(p));
        assert_eq!(by_key, by_path);
        for dir in paths.iter().map(Path::new) {
            let key = record_key(dir);
            let (mut start, mut end) = (key.clone(), key);
            start.push(0);
            end.push(1);
            for p in paths.iter().map(Path::new) {
                let k = record_key(p);
                let below = k >= start && k < end;
                assert_eq!(below, p != dir && p.starts_with(dir), "{p:?} below {dir:?}");
            }
        }
    }

    #[test]
    fn patterns_with_dot_components_never_match() {
        for bad in ["./x", "../x", "a/./b", "!./x", "x/..", "/home/./a"] {
            assert!(never_matches(bad).is_some(), "{bad}");
        }
        for good in [
            "x",
            "*.tmp",
            "/home/a",
            "a/b/",
            "!keep",
            "# comment",
            "",
            ".cache",
            "..x",
            "a.b/c",
        ] {
            assert!(never_matches(good).is_none(), "{good}");
        }
    }
}
