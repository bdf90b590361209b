//! `restore`: writes a snapshot, or parts of it, into a target directory.
//!
//! Three phases:
//! 1. plan: walk the snapshot's trees (with a stack of its own, not the
//!    thread's: a hostile or merely deep snapshot cannot overflow it), create
//!    directories, fifos and devices, and note which blob goes to which file
//!    offsets;
//! 2. content: group the needed blobs by pack, and on several threads read
//!    each pack's needed byte ranges once (neighbouring blobs are merged into
//!    one read), check every blob against its id, and write it with
//!    positional writes to every place it belongs. A file is created (at full
//!    length, all holes, so zero blobs and the zero blocks inside a blob need
//!    no write) when its first blob arrives and closed after its last, so
//!    creating files, which costs the kernel more than writing them, runs on
//!    every thread and overlaps the reads; files with no content are created
//!    at the end;
//! 3. finish: files whose content is incomplete are renamed `NAME.damaged`,
//!    then hard links, symlinks, then metadata, directories last and deepest
//!    first so their times stick.
//!
//! Everything is created and changed through directory descriptors opened
//! with `O_NOFOLLOW`, one name at a time below the target, never by path: a
//! local user who can rename entries inside the target (it owns a directory
//! there) and swaps a directory or file for a symlink while root restores
//! cannot redirect a write or a `chmod` outside it. A directory or file opened
//! again later must still be the inode restore created. Metadata is applied
//! to the opened entry (`fchmod`, `fchown`, `futimens`), or with no-follow
//! flags for symlinks. Paths are built only for messages, so the depth of a
//! tree is not bounded by `PATH_MAX`.
//!
//! Trees come from an untrusted repository: names are validated on decode,
//! and symlinks are created only after all content is written, so a hostile
//! tree cannot make snap write outside the target either.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fsmeta::{self, Apply};
use crate::id::{BlobId, PackId};
use crate::index::cache::{BlobLocation, IndexReader};
use crate::packread::BlobBuffers;
use crate::progress::{Event, Progress};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{self, Node, NodeKind, Tree};

/// Blobs closer than this in a pack are fetched in one read.
const MERGE_GAP: u64 = 256 * 1024;
/// Upper bound of one merged read (unless one blob is larger), which bounds
/// the read buffer each thread keeps.
const MAX_READ: u64 = 8 << 20;
/// Most files kept open between writes; past it a file is closed after each
/// write and opened again for the next (see `FileSlots`). Lower when the
/// process may open few files: see `open_file_budget`.
const MAX_OPEN_FILES: usize = 512;
/// Most directory descriptors kept open (see `DirFds`).
const MAX_OPEN_DIRS: usize = 256;
/// Zero runs this long, aligned to it in the file, are left as holes: the
/// usual filesystem block, the smallest hole a filesystem keeps.
const HOLE_BLOCK: u64 = 4096;
/// What a file with incomplete content is renamed to: `NAME` + this.
const DAMAGED_SUFFIX: &[u8] = b".damaged";

#[derive(Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Snapshot paths to restore (each lands in the target under its own
    /// name); empty for the whole snapshot (landing under its full path).
    pub paths: Vec<PathBuf>,
    /// gitignore-style patterns on snapshot paths: restore only matches (and
    /// everything below a matching directory).
    pub includes: Vec<String>,
    /// gitignore-style patterns on snapshot paths: never restore matches.
    pub excludes: Vec<String>,
    /// Restore owners; `None` means "when running as root".
    pub ownership: Option<bool>,
    /// Worker threads; 0 means cores + 2.
    pub threads: usize,
    /// What to do with an entry that exists in the target already.
    pub overwrite: Overwrite,
    /// Remove what the target holds below the restored directories that the
    /// snapshot does not (never following symlinks).
    pub delete: bool,
    /// Only plan: report what a restore would do, change nothing.
    pub dry_run: bool,
    /// Read every written file back and check it against its blob ids
    /// before it is renamed into place.
    pub verify: bool,
    /// Where the plan's entries go as they are decided; `None` keeps them
    /// all in [`RestoreResult::entries`].
    pub entry_sink: Option<EntrySink>,
    /// Entries planned and carried out at a time (0: [`BATCH_ENTRIES`]).
    pub batch_entries: usize,
}

/// Receives the plan's entries one by one, in path order, on the planning
/// thread, instead of [`RestoreResult::entries`] holding them all: a restore
/// then holds no state per restored file past its batch.
#[derive(Clone)]
pub struct EntrySink(pub Arc<dyn Fn(&PlanEntry) + Send + Sync>);

impl std::fmt::Debug for EntrySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntrySink")
    }
}

/// Entries (files, links, symlinks, special files, deletions) planned before
/// the restore carries them out and forgets them: what it holds at once,
/// whatever the snapshot's size.
pub const BATCH_ENTRIES: usize = 16384;
/// Distinct blobs planned before a batch is carried out (a few large files
/// fill a batch by their blobs).
const BATCH_BLOBS: usize = 65536;
/// Directory listings loaded ahead of the planning walk at once.
const PREFETCH_TREES: usize = 32;

/// `--overwrite`: what restore does with an entry that already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Always,
    /// Replace it unless its content already matches (files: chunked with the
    /// repository's chunker and compared blob id by blob id; symlinks: the
    /// same target; special files: the same kind and device). A match only
    /// gets its metadata fixed.
    #[default]
    IfChanged,
    /// Replace it only if the snapshot's mtime is newer.
    IfNewer,
    /// Never replace it.
    Never,
}

/// What restore does (or, on a dry run, would do) with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing was there: created.
    New,
    /// Something was there: replaced (and in the safety snapshot).
    Overwritten,
    /// Already what the snapshot holds: only its metadata is set.
    Unchanged,
    /// Left as it is (`--overwrite never`, or `if-newer` and not newer).
    Skipped,
    /// Not in the snapshot: removed (`--delete`; in the safety snapshot).
    Deleted,
    /// Something of another kind is in the way (a directory where a file
    /// goes, a file or symlink where a directory goes): left alone, and an
    /// error of the restore.
    Conflict,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::New,
        Action::Overwritten,
        Action::Unchanged,
        Action::Skipped,
        Action::Deleted,
        Action::Conflict,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::New => "new",
            Action::Overwritten => "overwritten",
            Action::Unchanged => "unchanged",
            Action::Skipped => "skipped",
            Action::Deleted => "deleted",
            Action::Conflict => "conflict",
        }
    }
}

/// One entry of the plan: where in the target, what it is, what happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEntry {
    pub path: PathBuf,
    /// `file`, `dir`, `symlink`, `fifo`, `chardev`, `blockdev`, `socket`.
    pub kind: &'static str,
    pub action: Action,
    /// Files: the snapshot's size (for `deleted`, the size in the target).
    pub size: u64,
}

/// Tag of the snapshots restore takes of what it is about to replace.
pub use crate::snapshot::SAFETY_TAG;

/// Prefix of the temporary names restore writes under before renaming into
/// place; leftovers of a killed restore are removed by the next one.
pub const TEMP_PREFIX: &[u8] = b".snap-restore-";

/// Whether `name` is one of the temporary names a restore gives
/// (`TEMP_PREFIX`, a process id, `-`, an optional kind letter, a counter):
/// only those are removed as leftovers of a killed restore, never a user's
/// own file that happens to share the prefix.
fn is_restore_temp(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    let Some(dash) = rest.iter().position(|&b| b == b'-') else {
        return false;
    };
    let (pid, counter) = (&rest[..dash], &rest[dash + 1..]);
    let counter = match counter.first() {
        Some(b's' | b'l' | b'y') => &counter[1..],
        _ => counter,
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    digits(pid) && digits(counter)
}

/// Takes the safety snapshot: a backup of these target paths (what the
/// restore is about to replace or delete, and the unchanged entries whose
/// mode or mtime it resets) tagged [`SAFETY_TAG`]. Given by the caller (the
/// restorer does not call the archiver); an error stops the restore before
/// anything in the target is touched.
pub type Safety<'a> = dyn Fn(&[PathBuf]) -> Result<crate::id::SnapshotId> + 'a;

/// What a restore did. Serialized as the part of `snap restore --json`
/// after `snapshot` and `target`: counts, `errors` as `{path, message}`,
/// `damaged` as paths.
#[derive(Debug, Default)]
pub struct RestoreResult {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    /// Entries that could not be restored (or not completely), with why.
    pub errors: Vec<(PathBuf, String)>,
    /// Files restored with part of their content missing, under the names
    /// they were given (`NAME.damaged`, never `NAME`); each is in `errors`
    /// too, under its snapshot name.
    pub damaged: Vec<PathBuf>,
    /// The plan, entry by entry, in path order; empty when the entries went
    /// to [`RestoreOptions::entry_sink`].
    pub entries: Vec<PlanEntry>,
    /// Per action (indexed as [`Action::ALL`]): how many entries, and the
    /// size of their files.
    pub totals: [Total; 6],
    /// The most state held at once (see [`RestorePeaks`]).
    pub peaks: RestorePeaks,
    /// The snapshot of what this restore replaced or deleted.
    pub safety_snapshot: Option<crate::id::SnapshotId>,
    pub dry_run: bool,
    /// Files read back and checked (`verify`).
    pub verified: u64,
}

/// Per action: how many entries, and the size of their files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Total {
    pub count: u64,
    pub bytes: u64,
}

/// The most a restore held at once: bounded by the batch size and the
/// tree's shape (its depth, its widest directory), not by its file count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestorePeaks {
    /// Entries planned and not yet carried out.
    pub planned: u64,
    /// Distinct blobs planned and not yet restored.
    pub blobs: u64,
    /// Directory listings loaded ahead of the walk.
    pub trees: u64,
    /// Directories known to the restore (their metadata is applied at the
    /// end, deepest first).
    pub dirs: u64,
}

impl RestoreResult {
    pub fn total(&self, action: Action) -> Total {
        self.totals[action as usize]
    }
}

impl serde::Serialize for RestoreResult {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Json {
            files: u64,
            dirs: u64,
            other: u64,
            bytes: u64,
            errors: Vec<crate::progress::PathMessage>,
            damaged: Vec<String>,
            dry_run: bool,
            safety_snapshot: Option<String>,
            verified: u64,
            totals: std::collections::BTreeMap<&'static str, Total>,
            entries: Vec<EntryJson>,
        }
        #[derive(serde::Serialize)]
        struct EntryJson {
            path: String,
            kind: &'static str,
            action: Action,
            size: u64,
        }
        Json {
            dry_run: self.dry_run,
            safety_snapshot: self.safety_snapshot.map(|id| id.to_hex()),
            verified: self.verified,
            totals: Action::ALL.iter().map(|a| (a.name(), self.total(*a))).collect(),
            entries: self
                .entries
                .iter()
                .map(|e| EntryJson {
                    path: e.path.to_string_lossy().into_owned(),
                    kind: e.kind,
                    action: e.action,
                    size: e.size,
                })
                .collect(),
            files: self.files,
            dirs: self.dirs,
            other: self.other,
            bytes: self.bytes,
            errors: self
                .errors
                .iter()
                .map(|(p, m)| crate::progress::PathMessage::new(p, m))
                .collect(),
            damaged: self.damaged.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
        }
        .serialize(serializer)
    }
}

/// (device, inode): what a name must still lead to when restore opens it
/// again.
type FileId = (u64, u64);

// `stat` field types differ between targets: the casts are not all no-ops.
#[allow(clippy::unnecessary_cast)]
fn file_id(st: &rustix::fs::Stat) -> FileId {
    (st.st_dev as u64, st.st_ino as u64)
}

/// A directory of the restore: the target itself (index 0) or one below it,
/// always reached by name through its parent's descriptor.
struct PlannedDir {
    /// Index of the parent (0, the target, for the target itself).
    parent: usize,
    name: Vec<u8>,
    /// `None` for the target, which keeps its metadata.
    node: Option<Node>,
    /// Set once the directory is created (or found): a directory opened
    /// again later must still be this one.
    id: Option<FileId>,
    /// Could not be created (reported once): nothing is restored below it.
    failed: bool,
    /// To be created (or kept): something below it is restored.
    needed: bool,
    /// It existed in the target when the plan was made.
    existed: bool,
    /// Created (or opened) by a batch already carried out.
    made: bool,
}

struct PlannedFile {
    dir: usize,
    name: Vec<u8>,
    node: Node,
    /// How many blob writes this file gets.
    writes: u32,
    /// Known at plan time to miss content.
    incomplete: bool,
    /// The name the content is written under before it is renamed into place.
    temp: Vec<u8>,
    /// An existing file that stays (unchanged or skipped): nothing is written.
    keep: Option<FileId>,
    /// Its metadata is applied (not for a skipped file).
    meta: bool,
}

/// A symlink or special file.
struct PlannedEntry {
    dir: usize,
    name: Vec<u8>,
    node: Node,
    /// An existing entry that stays (unchanged or skipped).
    keep: Option<FileId>,
    /// Its metadata is applied (not for a skipped entry).
    meta: bool,
}

/// A second (third, ...) name of a multiply-linked file.
struct PlannedLink {
    dir: usize,
    name: Vec<u8>,
    /// The file restored under the first name.
    first: FirstName,
    /// The existing entry stays (unchanged or skipped).
    keep: bool,
}

/// The first name of a group of hard links: a planned file of the current
/// batch, or one an earlier batch restored (then only what linking to it
/// needs is kept: one record per hard-linked file, not per file).
#[derive(Clone)]
enum FirstName {
    Planned(usize),
    Done(Arc<DoneFile>),
}

struct DoneFile {
    dir: usize,
    /// Its name in the snapshot, for messages.
    name: Vec<u8>,
    /// The name it was given (`NAME.damaged` for a damaged file); `None`
    /// if it was not restored.
    now: Option<Vec<u8>>,
    id: Option<FileId>,
    damaged: bool,
    keep: Option<FileId>,
}

/// An entry of the target that `delete` removes: `rel` are the names from
/// directory `dir` down to it. Listed parents first, removed children first,
/// each checked to be the entry the plan saw (and a directory only once it
/// is empty: nothing that appeared later is removed unseen).
struct Deletion {
    dir: usize,
    rel: Vec<Vec<u8>>,
    id: FileId,
    is_dir: bool,
}

/// A blob to restore: where it is stored, and where it goes.
struct PlannedBlob {
    location: BlobLocation,
    targets: Vec<Target>,
}

/// Where one blob's bytes go.
#[derive(Clone, Copy)]
struct Target {
    file: usize,
    offset: u64,
}

#[derive(Default)]
struct Plan {
    files: Vec<PlannedFile>,
    /// Directories, in creation order (parents first); index 0 is the target.
    dirs: Vec<PlannedDir>,
    symlinks: Vec<PlannedEntry>,
    specials: Vec<PlannedEntry>,
    links: Vec<PlannedLink>,
    /// Entries in the way of another kind, with the error reported when the
    /// restore runs.
    conflicts: Vec<(PathBuf, String)>,
    deletions: Vec<Deletion>,
    /// Temporary files of an earlier, killed restore: (directory, name).
    leftovers: Vec<(usize, Vec<u8>)>,
    /// Target paths of what is replaced or deleted: the safety snapshot's.
    safety_paths: Vec<PathBuf>,
    /// Numbers the temporary names.
    temps: u64,
    /// (device, inode) of multiply-linked files -> the first name.
    first_links: HashMap<(u64, u64), FirstName>,
    blobs: HashMap<BlobId, PlannedBlob>,
    /// Sizes of what the batches carried out so far added up to (progress).
    total_bytes: u64,
    total_items: u64,
}

impl Plan {
    /// Entries planned and not yet carried out.
    fn batch_len(&self) -> usize {
        self.files.len() + self.links.len() + self.symlinks.len() + self.specials.len() + self.deletions.len()
    }
}

/// A planned file once its batch is done: the name it has now (`None` if
/// it was not restored), its id, and whether it is damaged.
type Finished = (Option<Vec<u8>>, Option<FileId>, bool);

/// A directory whose entries the planning walk is going through.
struct Frame {
    dir: usize,
    nodes: std::vec::IntoIter<Node>,
    /// Entries of the target directory that `delete` removes, by name, with
    /// their plan entries: listed among the tree's entries in name order.
    deleted: std::collections::VecDeque<(Vec<u8>, Vec<PlanEntry>)>,
    /// An include pattern matched this directory or one above.
    selected: bool,
    /// Its name was pushed onto the walk's source path.
    pushed: bool,
}

/// The state of one planned file during the content phase.
enum Handle {
    /// Not created yet.
    New,
    Open(Arc<File>),
    /// Created, not open now.
    Closed,
    /// Could not be created; the error is reported once.
    Failed,
}

struct FileSlot {
    handle: Handle,
    /// Blob writes still to come; at 0 an open file is closed.
    remaining: u32,
    /// What was created, once it was.
    id: Option<FileId>,
    /// Part of the content could not be restored.
    damaged: bool,
    /// Created without a name (`O_TMPFILE`): it gets its name, with its
    /// metadata set, once its content is written (see `place`).
    anonymous: bool,
    /// Owner and mode it was created with (an anonymous file: nothing else
    /// can have changed them).
    created: Option<fsmeta::Owned>,
    /// End of the data written so far (an anonymous file is not created at
    /// full length: most get one write that reaches their end).
    len: u64,
    /// An anonymous file once placed: the name it was given, or `None` if
    /// it could not be (reported).
    placed: Option<Option<Vec<u8>>>,
}

/// One slot per planned file. Files are kept open from their first write to
/// their last, except that past `budget` open at once a file is closed after
/// each write (a file whose blobs are spread over many packs would otherwise
/// hold a descriptor for the whole restore).
struct FileSlots {
    slots: Vec<Mutex<FileSlot>>,
    open: AtomicUsize,
    budget: usize,
}

/// How many restored files may stay open: a quarter of the descriptor limit
/// (the rest is for pack reads, directories, the index and the caller), at
/// most `MAX_OPEN_FILES`.
fn open_file_budget() -> usize {
    (nofile_limit() / 4).clamp(1, MAX_OPEN_FILES as u64) as usize
}

fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Open descriptors of restored directories, so that an entry is created by
/// name in its directory's descriptor and nothing is looked up by path. At
/// most `budget` are kept besides the target's, the least recently used
/// closed first: a tree 10,000 levels deep cannot hold one per level. A
/// directory not open is opened again from its nearest open ancestor, one
/// name at a time with `O_NOFOLLOW`, each checked to be the directory the
/// restore created.
struct DirFds {
    cache: Mutex<DirFdCache>,
    budget: usize,
}

#[derive(Default)]
struct DirFdCache {
    /// Directory index -> descriptor and when it was last used.
    fds: HashMap<usize, (Arc<OwnedFd>, u64)>,
    tick: u64,
}

impl DirFds {
    fn new(target: OwnedFd) -> DirFds {
        let mut cache = DirFdCache::default();
        cache.fds.insert(0, (Arc::new(target), 0));
        DirFds {
            cache: Mutex::new(cache),
            budget: (nofile_limit() / 8).clamp(4, MAX_OPEN_DIRS as u64) as usize,
        }
    }

    /// The descriptor of directory `index`, opening it (and the ancestors
    /// between it and the nearest open one) if needed.
    fn get(&self, dirs: &[PlannedDir], index: usize) -> std::io::Result<Arc<OwnedFd>> {
        let mut cache = self.cache.lock().expect("directory cache lock");
        cache.tick += 1;
        let tick = cache.tick;
        if let Some((fd, used)) = cache.fds.get_mut(&index) {
            *used = tick;
            return Ok(fd.clone());
        }
        let mut chain = Vec::new();
        let mut at = index;
        while !cache.fds.contains_key(&at) {
            chain.push(at);
            at = dirs[at].parent;
        }
        let mut fd = cache.fds[&at].0.clone();
        for &i in chain.iter().rev() {
            let dir = &dirs[i];
            let opened = open_dir_at(fd.as_fd(), &dir.name)?;
            let st = rustix::fs::fstat(&opened)?;
            if dir.id != Some(file_id(&st)) {
                return Err(replaced());
            }
            fd = Arc::new(opened);
            cache.fds.insert(i, (fd.clone(), tick));
        }
        cache.evict(self.budget);
        Ok(fd)
    }

    /// Closes every descriptor but the target's.
    fn reset(&self) {
        self.cache
            .lock()
            .expect("directory cache lock")
            .fds
            .retain(|i, _| *i == 0);
    }

    /// Forgets directories `from` and later (their plan entries are gone,
    /// and the indexes will be given to others).
    fn forget_from(&self, from: usize) {
        self.cache
            .lock()
            .expect("directory cache lock")
            .fds
            .retain(|i, _| *i == 0 || *i < from);
    }

    fn insert(&self, index: usize, fd: OwnedFd) {
        let mut cache = self.cache.lock().expect("directory cache lock");
        cache.tick += 1;
        let tick = cache.tick;
        cache.fds.insert(index, (Arc::new(fd), tick));
        cache.evict(self.budget);
    }
}

impl DirFdCache {
    fn evict(&mut self, budget: usize) {
        while self.fds.len() > budget + 1 {
            let oldest = self
                .fds
                .iter()
                .filter(|(i, _)| **i != 0)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(i, _)| *i);
            match oldest {
                Some(i) => self.fds.remove(&i),
                None => return,
            };
        }
    }
}

fn replaced() -> std::io::Error {
    std::io::Error::other("it was replaced by something else during the restore")
}

struct Restorer<'a> {
    repo: &'a Repository,
    /// One read transaction for every blob lookup of the plan (one per
    /// lookup made them queue on redb's locks).
    index: IndexReader,
    /// Trees loaded ahead of the planning walk (see `prefetch_trees`); the
    /// walk takes each one out as it plans it.
    trees: Mutex<HashMap<BlobId, Tree>>,
    pool: &'a rayon::ThreadPool,
    mode: Pass,
    chown: bool,
    verify: bool,
    batch: usize,
    sink: Option<EntrySink>,
    /// The entries, when there is no sink.
    kept: Mutex<Vec<PlanEntry>>,
    totals: Mutex<[Total; 6]>,
    /// Files and other non-directories restored (or that would be), and
    /// directories.
    counts: Mutex<(u64, u64, u64)>,
    damaged: Mutex<Vec<PathBuf>>,
    verified: AtomicU64,
    peaks: Mutex<RestorePeaks>,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
    includes: Option<Gitignore>,
    excludes: Gitignore,
    errors: Mutex<Vec<(PathBuf, String)>>,
    bytes: AtomicU64,
    /// The target as given, for messages.
    target: PathBuf,
    dir_fds: DirFds,
    overwrite: Overwrite,
    delete: bool,
    /// Where `delete` may remove entries on a whole-snapshot restore: at and
    /// below the snapshot's source paths. Their ancestors (`/home` of a
    /// backup of `/home/ana/docs`) hold only what leads to them and were
    /// never backed up as directories: the rest of the target there is not
    /// the snapshot's to judge. `None`: anywhere in the restored subtrees.
    delete_within: Option<Vec<PathBuf>>,
    /// This process's id, for temporary names (`std::process::id` is a
    /// system call each time).
    pid: u32,
    /// How files with at most one write are created and named (see
    /// `Anonymous`).
    anonymous: Anonymous,
}

/// Whether the target takes unnamed files (`O_TMPFILE`) and how one is given
/// its name: found once per restore by trying (`probe_anonymous`).
///
/// A file of one blob (most files of a source tree) is created without a
/// name, written, given its owner, mode and times, and only then linked in
/// under its name: one directory operation per file where a named temporary
/// file renamed into place takes three (create, and a rename that looks up
/// and changes two names), which the profile of a restore of 100k small
/// files showed as the largest single cost (the rename alone 16% of the
/// restore's CPU time). A name still only ever holds a complete file, and a
/// killed restore leaves nothing of such files behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anonymous {
    /// Not supported (or a dry run, or `verify`, which reads files back by
    /// their temporary names): named temporary files.
    No,
    /// `linkat(fd, "", AT_EMPTY_PATH)` (needs `CAP_DAC_READ_SEARCH`).
    EmptyPath,
    /// `linkat` of `/proc/self/fd/N`, following it.
    ProcFd,
}

/// What the planning walk's batches are for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    /// Reported, not carried out.
    DryRun,
    /// A first walk that only collects what the restore would replace or
    /// delete, for the safety snapshot (taken before anything is touched);
    /// reports nothing, as the restore's own walk reports it all.
    Survey,
    /// Carried out, batch by batch.
    Restore,
}

fn matcher(patterns: &[String]) -> Result<Gitignore> {
    let mut builder = GitignoreBuilder::new("/");
    for p in patterns {
        builder
            .add_line(None, p)
            .map_err(|e| Error::InvalidArgument(format!("pattern '{p}': {e}")))?;
    }
    builder
        .build()
        .map_err(|e| Error::InvalidArgument(format!("patterns: {e}")))
}

/// Restores `snapshot` as `options` say, with no safety snapshot (see
/// [`restore_with`]).
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<RestoreResult> {
    restore_with(repo, snapshot, options, None, progress, cancel)
}

/// Restores `snapshot` as `options` say. Damaged or missing data is reported
/// per file in [`RestoreResult::errors`]; everything else is restored.
///
/// The plan is made first, changing nothing: the snapshot's trees are walked
/// against the target (read through directory descriptors, never following
/// a symlink), deciding per entry what happens ([`Action`]). A dry run
/// returns it. Otherwise, with `safety`, what the plan replaces or deletes
/// is backed up as a snapshot tagged [`SAFETY_TAG`] first (a failure stops
/// the restore before anything is touched), and the plan is carried out.
pub fn restore_with(
    repo: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    safety: Option<&Safety<'_>>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<RestoreResult> {
    // The target itself is the user's choice, and may be reached through
    // symlinks; everything below it is not. A dry run creates nothing.
    if !options.dry_run {
        std::fs::create_dir_all(&options.target).map_err(|e| Error::io(&options.target, e))?;
    }
    let target_fd = match rustix::fs::open(
        &options.target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Some(fd),
        Err(Errno::NOENT) if options.dry_run => None,
        Err(e) => return Err(Error::io(&options.target, e.into())),
    };
    let target_id = match &target_fd {
        Some(fd) => Some(file_id(
            &rustix::fs::fstat(fd).map_err(|e| Error::io(&options.target, e.into()))?,
        )),
        None => None,
    };
    let placeholder = || {
        // A dry run into a target that does not exist: nothing is read
        // through the descriptor (the target has no entries), it only fills
        // the slot.
        rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::io(Path::new("/"), e.into()))
    };
    let pool = crate::pool::workers(options.threads, crate::pool::WAITING, "restorer")?;
    let chown = options
        .ownership
        .unwrap_or_else(|| rustix::process::geteuid().is_root());
    // A restore into an empty (or new) target replaces nothing: no survey.
    let target_empty = match std::fs::read_dir(&options.target) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => true,
    };
    let mut restorer = Restorer {
        repo,
        index: repo.index()?.reader()?,
        trees: Mutex::new(HashMap::new()),
        pool: &pool,
        mode: if options.dry_run {
            Pass::DryRun
        } else if safety.is_some() && !target_empty {
            Pass::Survey
        } else {
            Pass::Restore
        },
        chown,
        verify: options.verify,
        batch: match options.batch_entries {
            0 => BATCH_ENTRIES,
            n => n,
        },
        sink: options.entry_sink.clone(),
        kept: Mutex::new(Vec::new()),
        totals: Mutex::new([Total::default(); 6]),
        counts: Mutex::new((0, 0, 0)),
        damaged: Mutex::new(Vec::new()),
        verified: AtomicU64::new(0),
        peaks: Mutex::new(RestorePeaks::default()),
        progress,
        cancel,
        includes: if options.includes.is_empty() {
            None
        } else {
            Some(matcher(&options.includes)?)
        },
        excludes: matcher(&options.excludes)?,
        errors: Mutex::new(Vec::new()),
        bytes: AtomicU64::new(0),
        target: options.target.clone(),
        dir_fds: DirFds::new(match target_fd {
            Some(fd) => fd,
            None => placeholder()?,
        }),
        overwrite: options.overwrite,
        delete: options.delete,
        delete_within: None,
        pid: std::process::id(),
        anonymous: Anonymous::No,
    };
    if !options.dry_run && !options.verify {
        let target = restorer
            .dir_fds
            .get(&[], 0)
            .map_err(|e| Error::io(&options.target, e))?;
        restorer.anonymous = probe_anonymous(target.as_fd(), restorer.pid);
    }
    // `--path /` is the whole snapshot.
    let whole = options.paths.is_empty()
        || options
            .paths
            .iter()
            .any(|p| tree::path_components(p).is_some_and(|c| c.is_empty()));
    if whole {
        restorer.delete_within = Some(snapshot.paths.iter().map(PathBuf::from).collect());
    }
    // The selected paths, each landing under its own name: in name order,
    // so that the entries come in path order.
    let mut selected = Vec::new();
    if !whole {
        let mut seen_names = std::collections::HashSet::new();
        for path in &options.paths {
            let components = tree::path_components(path)
                .ok_or_else(|| Error::InvalidArgument(format!("{}: '..' is not allowed", path.display())))?;
            let node = tree::lookup_path(repo, &snapshot.tree, &components)?
                .ok_or_else(|| Error::InvalidArgument(format!("{} is not in the snapshot", path.display())))?;
            if !seen_names.insert(node.name.clone()) {
                return Err(Error::InvalidArgument(format!(
                    "two --path arguments end in '{}': restore them one at a time",
                    node.name_lossy()
                )));
            }
            let source = PathBuf::from("/").join(OsStr::from_bytes(&components.join(&b'/')));
            selected.push((node, source));
        }
        selected.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    }

    let mut safety_snapshot = None;
    if restorer.mode == Pass::Survey {
        // What the restore will replace or delete, backed up before
        // anything is touched; the restore then walks the snapshot again.
        let plan = restorer.plan_all(snapshot, whole, &selected, target_id)?;
        if let Some(take) = safety {
            if !plan.safety_paths.is_empty() {
                safety_snapshot = Some(take(&plan.safety_paths)?);
            }
        }
        restorer.trees.lock().expect("trees lock").clear();
        restorer.dir_fds.reset();
        restorer.mode = Pass::Restore;
    }
    let mut plan = restorer.plan_all(snapshot, whole, &selected, target_id)?;
    if restorer.mode == Pass::Restore {
        pool.install(|| restorer.finish_dirs(&plan));
    }
    plan.safety_paths.clear();

    let mut errors = restorer.errors.into_inner().expect("errors lock");
    errors.sort_by(|a, b| a.0.cmp(&b.0));
    errors.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut damaged = restorer.damaged.into_inner().expect("damaged lock");
    damaged.sort();
    let (files, other, dirs) = restorer.counts.into_inner().expect("counts lock");
    let mut peaks = restorer.peaks.into_inner().expect("peaks lock");
    peaks.dirs = plan.dirs.len() as u64;
    Ok(RestoreResult {
        files,
        dirs,
        other,
        bytes: restorer.bytes.load(Ordering::Relaxed),
        errors,
        damaged,
        entries: restorer.kept.into_inner().expect("entries lock"),
        totals: restorer.totals.into_inner().expect("totals lock"),
        peaks,
        safety_snapshot,
        dry_run: options.dry_run,
        verified: restorer.verified.load(Ordering::Relaxed),
    })
}

impl Restorer<'_> {
    fn error(&self, path: &Path, message: String) {
        if self.mode == Pass::Survey {
            // The restore's own walk reports it.
            return;
        }
        self.progress.event(Event::Warning {
            path,
            message: message.clone(),
        });
        self.errors
            .lock()
            .expect("errors lock")
            .push((path.to_path_buf(), message));
    }

    /// Where directory `index` is, for messages.
    fn dir_path(&self, dirs: &[PlannedDir], index: usize) -> PathBuf {
        let mut names = Vec::new();
        let mut at = index;
        while at != 0 {
            names.push(&dirs[at].name);
            at = dirs[at].parent;
        }
        let mut path = self.target.clone();
        for name in names.iter().rev() {
            path.push(OsStr::from_bytes(name));
        }
        path
    }

    /// Where entry `name` of directory `dir` is, for messages.
    fn entry_path(&self, dirs: &[PlannedDir], dir: usize, name: &[u8]) -> PathBuf {
        self.dir_path(dirs, dir).join(OsStr::from_bytes(name))
    }

    /// Reports the zero-filled copy of the file at `original`, left as
    /// `name` of directory `dir`, under the name it has: that is where a user
    /// (or a script reading the errors) finds it. Returns that path.
    fn report_damaged_copy(&self, plan: &Plan, dir: usize, name: &[u8], original: &Path) -> PathBuf {
        let path = self.entry_path(&plan.dirs, dir, name);
        self.error(
            &path,
            format!(
                "an incomplete copy of {}: what could not be restored is zeros",
                original.display()
            ),
        );
        path
    }

    fn file_path(&self, plan: &Plan, file: usize) -> PathBuf {
        let file = &plan.files[file];
        self.entry_path(&plan.dirs, file.dir, &file.name)
    }

    /// One walk of the snapshot (or the selected paths) against the target,
    /// carried out (or reported) a batch at a time as `self.mode` says. The
    /// plan that is left holds the directories (their metadata is applied
    /// last) and, on a survey, the paths for the safety snapshot.
    fn plan_all(
        &self,
        snapshot: &Snapshot,
        whole: bool,
        selected: &[(Node, PathBuf)],
        target_id: Option<FileId>,
    ) -> Result<Plan> {
        let mut plan = Plan::default();
        plan.dirs.push(PlannedDir {
            parent: 0,
            name: Vec::new(),
            node: None,
            id: target_id,
            failed: false,
            needed: true,
            existed: target_id.is_some(),
            made: true,
        });
        if whole {
            let root = self.load_tree(&snapshot.tree)?;
            // The whole snapshot is the target's whole content.
            let deleted = self.scan(&mut plan, 0, &root, Path::new("/"), self.includes.is_none());
            let frame = Frame {
                dir: 0,
                nodes: root.nodes.into_iter(),
                deleted: deleted.into(),
                selected: false,
                pushed: false,
            };
            self.walk(&mut plan, frame, &mut PathBuf::from("/"))?;
        } else {
            for (node, source) in selected {
                let mut source = source.clone();
                if let Some(frame) = self.plan_node(&mut plan, 0, node.clone(), &source, false)? {
                    self.walk(&mut plan, frame, &mut source)?;
                }
                self.flush_if_full(&mut plan)?;
            }
        }
        self.flush(&mut plan)?;
        Ok(plan)
    }

    /// Plans everything below `first` (a directory already planned), depth
    /// first with a stack of its own. `source` is the snapshot path of
    /// `first`, extended and shortened as the walk goes. Batches are carried
    /// out as they fill.
    fn walk(&self, plan: &mut Plan, first: Frame, source: &mut PathBuf) -> Result<()> {
        let mut stack = vec![first];
        while let Some(frame) = stack.last_mut() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let Some(node) = frame.nodes.next() else {
                let done = stack.pop().expect("the stack is not empty");
                for (_, entries) in done.deleted {
                    entries.iter().for_each(|e| self.emit(e));
                }
                if done.pushed {
                    source.pop();
                }
                // A directory that only mattered if something below it was
                // selected, and nothing was: it is not created.
                if done.dir != 0 && !plan.dirs[done.dir].needed {
                    plan.dirs.truncate(done.dir);
                    plan.leftovers.retain(|(dir, _)| *dir < done.dir);
                    self.dir_fds.forget_from(done.dir);
                }
                continue;
            };
            // What `delete` removes here comes in name order among the rest.
            while frame.deleted.front().is_some_and(|(name, _)| *name < node.name) {
                let (_, entries) = frame.deleted.pop_front().expect("checked");
                entries.iter().for_each(|e| self.emit(e));
            }
            let (dir, selected) = (frame.dir, frame.selected);
            if node.kind == NodeKind::Dir {
                self.prefetch_ahead(&node, &stack);
            }
            source.push(OsStr::from_bytes(&node.name));
            match self.plan_node(plan, dir, node, source, selected)? {
                Some(mut child) => {
                    child.pushed = true;
                    stack.push(child);
                }
                None => {
                    source.pop();
                }
            }
            self.flush_if_full(plan)?;
        }
        Ok(())
    }

    /// Hands one plan entry on (to the sink, or to the result), counted.
    fn emit(&self, entry: &PlanEntry) {
        if self.mode == Pass::Survey {
            return;
        }
        {
            let mut totals = self.totals.lock().expect("totals lock");
            let total = &mut totals[entry.action as usize];
            total.count += 1;
            total.bytes += entry.size;
        }
        if matches!(entry.action, Action::New | Action::Overwritten | Action::Unchanged) {
            let mut counts = self.counts.lock().expect("counts lock");
            match entry.kind {
                "file" => counts.0 += 1,
                "dir" => counts.2 += 1,
                _ => counts.1 += 1,
            }
        }
        match &self.sink {
            Some(sink) => (sink.0)(entry),
            None => self.kept.lock().expect("entries lock").push(entry.clone()),
        }
    }

    /// The plan entry of directory `index`, once it is known to be restored.
    fn emit_dir(&self, plan: &Plan, index: usize) {
        let action = if plan.dirs[index].existed {
            Action::Unchanged
        } else {
            Action::New
        };
        self.emit(&PlanEntry {
            path: self.dir_path(&plan.dirs, index),
            kind: "dir",
            action,
            size: 0,
        });
    }

    /// Loads the listings the walk needs next on the pool's threads: the
    /// directory `next` and the directories after it in the walk (its
    /// siblings, then those of the directories above), at most
    /// `PREFETCH_TREES`, and only once those loaded before are used up. The
    /// planning walk (one thread, depth first) then finds them in memory
    /// instead of waiting for each read in turn, and holds few at a time.
    /// A tree that fails to load is left out: the walk loads it again and
    /// reports the error where it belongs.
    fn prefetch_ahead(&self, next: &Node, stack: &[Frame]) {
        if !self.trees.lock().expect("trees lock").is_empty() {
            return;
        }
        let mut ids: Vec<BlobId> = Vec::with_capacity(PREFETCH_TREES);
        let pending = stack.iter().rev().flat_map(|f| f.nodes.as_slice().iter());
        for id in std::iter::once(next).chain(pending).filter_map(|n| n.subtree) {
            if ids.len() == PREFETCH_TREES {
                break;
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.len() < 2 {
            // One tree: the walk loads it itself.
            return;
        }
        let loaded: Vec<(BlobId, Tree)> = self.pool.install(|| {
            ids.par_iter()
                .filter_map(|id| Tree::load(self.repo, id).ok().map(|tree| (*id, tree)))
                .collect()
        });
        let mut trees = self.trees.lock().expect("trees lock");
        trees.extend(loaded);
        let mut peaks = self.peaks.lock().expect("peaks lock");
        peaks.trees = peaks.trees.max(trees.len() as u64);
    }

    /// A tree, from the prefetched ones if it is there (the same tree can
    /// appear at several places: only the first takes it out).
    fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        match self.trees.lock().expect("trees lock").remove(id) {
            Some(tree) => Ok(tree),
            None => Tree::load(self.repo, id),
        }
    }

    fn flush_if_full(&self, plan: &mut Plan) -> Result<()> {
        if plan.batch_len() >= self.batch || plan.blobs.len() >= BATCH_BLOBS {
            self.flush(plan)?;
        }
        Ok(())
    }

    /// Carries out (or on a dry run reports, or on a survey forgets) what is
    /// planned so far, and forgets it but for the directories and the first
    /// names of hard-linked files.
    fn flush(&self, plan: &mut Plan) -> Result<()> {
        {
            let mut peaks = self.peaks.lock().expect("peaks lock");
            peaks.planned = peaks.planned.max(plan.batch_len() as u64);
            peaks.blobs = peaks.blobs.max(plan.blobs.len() as u64);
        }
        // Directories are made once something in them is restored, parents
        // first (indexes are in creation order).
        let mut now_made = Vec::new();
        for index in 1..plan.dirs.len() {
            if plan.dirs[index].needed && !plan.dirs[index].made {
                plan.dirs[index].made = true;
                now_made.push(index);
            }
        }
        let conflicts = std::mem::take(&mut plan.conflicts);
        let mut names = Vec::new();
        match self.mode {
            Pass::Survey => {}
            Pass::DryRun => {
                // The restore reports these as errors (exit 3): so does its
                // preview.
                for (path, message) in conflicts {
                    self.error(&path, message);
                }
            }
            Pass::Restore => {
                self.make_dirs(plan, &now_made);
                for (path, message) in conflicts {
                    self.error(&path, message);
                }
                names = self.restore_batch(plan)?;
            }
        }
        // The first names of this batch, for links in later ones.
        for first in plan.first_links.values_mut() {
            if let FirstName::Planned(index) = *first {
                let file = &plan.files[index];
                let (now, id, damaged) = names
                    .get(index)
                    .cloned()
                    .unwrap_or((Some(file.name.clone()), None, false));
                *first = FirstName::Done(Arc::new(DoneFile {
                    dir: file.dir,
                    name: file.name.clone(),
                    now,
                    id,
                    damaged,
                    keep: file.keep,
                }));
            }
        }
        plan.files.clear();
        plan.symlinks.clear();
        plan.specials.clear();
        plan.links.clear();
        plan.deletions.clear();
        plan.blobs = HashMap::new();
        // Leftovers in directories not made yet wait for them (or go with
        // them).
        let dirs = &plan.dirs;
        plan.leftovers.retain(|(dir, _)| !dirs[*dir].made);
        Ok(())
    }

    /// Carries out one batch of the plan (its directories are made): per
    /// planned file, the name it has now, its id, and whether it is damaged.
    fn restore_batch(&self, plan: &mut Plan) -> Result<Vec<Finished>> {
        self.remove_leftovers(plan);
        let specials = self.make_specials(plan);
        let restored = plan.files.iter().filter(|f| f.keep.is_none());
        plan.total_bytes += restored.clone().map(|f| f.node.size).sum::<u64>();
        plan.total_items += restored.count() as u64;
        self.progress.event(Event::Total {
            bytes: plan.total_bytes,
            items: plan.total_items,
        });
        let files = FileSlots {
            slots: plan
                .files
                .iter()
                .map(|f| {
                    let failed = plan.dirs[f.dir].failed;
                    Mutex::new(FileSlot {
                        handle: match (failed, f.keep) {
                            (true, _) => Handle::Failed,
                            (false, Some(_)) => Handle::Closed,
                            (false, None) => Handle::New,
                        },
                        remaining: if f.keep.is_some() || failed { 0 } else { f.writes },
                        id: f.keep,
                        damaged: f.incomplete,
                        anonymous: false,
                        created: None,
                        len: 0,
                        placed: None,
                    })
                })
                .collect(),
            open: AtomicUsize::new(0),
            budget: open_file_budget(),
        };
        if let Err(e) = self.pool.install(|| self.write_content(plan, &files)) {
            self.discard_temps(plan, &files);
            return Err(e);
        }
        self.delete(plan);
        if self.verify {
            let checked = self.pool.install(|| self.verify(plan, &files));
            self.verified.fetch_add(checked, Ordering::Relaxed);
        }
        Ok(self.pool.install(|| self.finish(plan, &files, &specials)))
    }

    /// Marks directory `index` and those above it that the plan left for
    /// later (not selected by an include pattern themselves) as needed.
    fn ensure_dir(&self, plan: &mut Plan, index: usize) {
        let mut at = index;
        let mut marked = Vec::new();
        while !plan.dirs[at].needed {
            plan.dirs[at].needed = true;
            marked.push(at);
            at = plan.dirs[at].parent;
        }
        for &index in marked.iter().rev() {
            self.emit_dir(plan, index);
        }
    }

    fn make_dir(&self, plan: &mut Plan, index: usize) -> std::io::Result<()> {
        let parent = self.dir_fds.get(&plan.dirs, plan.dirs[index].parent)?;
        let fd = create_dir_at(parent.as_fd(), &plan.dirs[index].name)?;
        plan.dirs[index].id = Some(file_id(&rustix::fs::fstat(&fd)?));
        self.dir_fds.insert(index, fd);
        Ok(())
    }

    /// Creates (or opens) the planned directories `indexes`, parents first.
    /// Below one that cannot be created (reported once) nothing is restored.
    fn make_dirs(&self, plan: &mut Plan, indexes: &[usize]) {
        for &index in indexes {
            if plan.dirs[plan.dirs[index].parent].failed {
                plan.dirs[index].failed = true;
                continue;
            }
            if let Err(e) = self.make_dir(plan, index) {
                self.error(
                    &self.dir_path(&plan.dirs, index),
                    format!("cannot create directory: {e}"),
                );
                plan.dirs[index].failed = true;
            }
        }
    }

    /// What is at `name` in planned directory `dir` now: `Ok(None)` when
    /// nothing is (or the directory does not exist yet). An error is
    /// reported, and the entry is left out of the plan.
    fn existing(&self, plan: &Plan, dir: usize, name: &[u8]) -> std::result::Result<Option<rustix::fs::Stat>, ()> {
        if plan.dirs[dir].id.is_none() {
            return Ok(None);
        }
        let found = self.dir_fds.get(&plan.dirs, dir).and_then(|fd| {
            match rustix::fs::statat(fd.as_fd(), OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Ok(Some(st)),
                Err(Errno::NOENT) => Ok(None),
                Err(e) => Err(e.into()),
            }
        });
        found.map_err(|e| {
            self.error(
                &self.entry_path(&plan.dirs, dir, name),
                format!("cannot look at what the target holds there: {e}"),
            )
        })
    }

    /// What happens to `node` given what the target holds at its name;
    /// `same` says whether that already is what the snapshot holds.
    fn decide(&self, node: &Node, existing: Option<&rustix::fs::Stat>, same: impl FnOnce() -> bool) -> Action {
        let Some(st) = existing else {
            return Action::New;
        };
        if is_dir(st) {
            return Action::Conflict;
        }
        match self.overwrite {
            Overwrite::Always => Action::Overwritten,
            Overwrite::Never => Action::Skipped,
            Overwrite::IfNewer if node.mtime_ns > mtime_ns(st) => Action::Overwritten,
            Overwrite::IfNewer => Action::Skipped,
            Overwrite::IfChanged if same() => Action::Unchanged,
            Overwrite::IfChanged => Action::Overwritten,
        }
    }

    /// Records `action` for entry `name` of `dir` (`existing` there) and,
    /// for what it replaces, its path for the safety snapshot: what is
    /// overwritten, and what is unchanged but gets another mode or mtime
    /// (so that restoring the safety snapshot sets those back too).
    fn note(
        &self,
        plan: &mut Plan,
        dir: usize,
        name: &[u8],
        node: &Node,
        existing: Option<&rustix::fs::Stat>,
        action: Action,
    ) {
        let path = self.entry_path(&plan.dirs, dir, name);
        let retimed = existing.is_some_and(|st| mtime_ns(st) != node.mtime_ns || mode_bits(st) != node.mode);
        if action == Action::Overwritten || (action == Action::Unchanged && retimed) {
            plan.safety_paths.push(path.clone());
        }
        if action == Action::Conflict {
            let message = if node.kind == NodeKind::Dir {
                "cannot create directory: exists and is not a directory"
            } else {
                "not restored: a directory is in the way"
            };
            plan.conflicts.push((path.clone(), message.into()));
        }
        self.emit(&PlanEntry {
            path,
            kind: crate::ls::kind_name(node.kind),
            action,
            size: if node.kind == NodeKind::File { node.size } else { 0 },
        });
    }

    /// A fresh temporary name for an entry written and renamed into place.
    fn temp_name(&self, plan: &mut Plan) -> Vec<u8> {
        plan.temps += 1;
        let mut name = TEMP_PREFIX.to_vec();
        name.extend_from_slice(format!("{}-{}", self.pid, plan.temps).as_bytes());
        name
    }

    /// True if the existing regular file `name` of `dir` (`st`) holds
    /// exactly `node`'s content: cut with the repository's chunker, as a
    /// backup would, every piece has the blob id the snapshot lists.
    fn content_matches(&self, plan: &Plan, dir: usize, name: &[u8], st: &rustix::fs::Stat, node: &Node) -> bool {
        if !is_file(st) || st.st_size as u64 != node.size {
            return false;
        }
        let matches = || -> std::io::Result<bool> {
            let fd = self.dir_fds.get(&plan.dirs, dir)?;
            let file = reopen_at(fd.as_fd(), name, file_id(st), OFlags::RDONLY)?;
            let mut chunks = self.repo.chunker().chunks(file, Some(node.size));
            let mut expected = node.content.iter();
            while let Some(chunk) = chunks.next_chunk()? {
                if expected.next() != Some(&self.repo.crypto().blob_id(chunk)) {
                    return Ok(false);
                }
            }
            Ok(expected.next().is_none())
        };
        // Unreadable: not known to match, so it is replaced (and the safety
        // snapshot, which cannot read it either, fails first).
        matches().unwrap_or(false)
    }

    /// Goes through the existing directory `dir` (holding `tree`'s entries,
    /// at snapshot path `source`): notes leftovers of a killed restore, and
    /// with `delete` (and `delete_here`: the directory is restored as a
    /// whole) every entry the tree does not have. Returns the plan entries
    /// of those deletions by name, in name order.
    fn scan(
        &self,
        plan: &mut Plan,
        dir: usize,
        tree: &Tree,
        source: &Path,
        delete_here: bool,
    ) -> Vec<(Vec<u8>, Vec<PlanEntry>)> {
        let mut deleted = Vec::new();
        if plan.dirs[dir].id.is_none() {
            return deleted;
        }
        let listed = self.dir_fds.get(&plan.dirs, dir).and_then(|fd| {
            let mut names = Vec::new();
            for entry in rustix::fs::Dir::read_from(fd.as_fd())? {
                let name = entry?.file_name().to_bytes().to_vec();
                if name != b"." && name != b".." {
                    names.push(name);
                }
            }
            Ok(names)
        });
        let names = match listed {
            Ok(names) => names,
            Err(e) => {
                self.error(&self.dir_path(&plan.dirs, dir), format!("cannot list directory: {e}"));
                return deleted;
            }
        };
        let mut names: Vec<Vec<u8>> = names.into_iter().filter(|n| tree.find(n).is_none()).collect();
        names.sort();
        for name in names {
            if is_restore_temp(&name) {
                plan.leftovers.push((dir, name));
                continue;
            }
            if !(self.delete && delete_here && self.may_delete_in(source)) {
                continue;
            }
            let Ok(Some(st)) = self.existing(plan, dir, &name) else {
                continue;
            };
            let path = source.join(OsStr::from_bytes(&name));
            if self.excludes.matched(&path, is_dir(&st)).is_ignore() {
                continue;
            }
            let entries = self.plan_deletion(plan, dir, name.clone(), st);
            deleted.push((name, entries));
        }
        deleted
    }

    /// Whether `delete` may remove entries of the directory at snapshot path `source`.
    fn may_delete_in(&self, source: &Path) -> bool {
        match &self.delete_within {
            None => true,
            Some(roots) => roots.iter().any(|root| source.starts_with(root)),
        }
    }

    /// Plans removing entry `name` of `dir` (`st`) and everything below it;
    /// returns their plan entries, in path order.
    fn plan_deletion(&self, plan: &mut Plan, dir: usize, name: Vec<u8>, st: rustix::fs::Stat) -> Vec<PlanEntry> {
        plan.safety_paths.push(self.entry_path(&plan.dirs, dir, &name));
        let mut entries = Vec::new();
        let mut stack = vec![(vec![name], st)];
        while let Some((rel, st)) = stack.pop() {
            let path = self.entry_path(&plan.dirs, dir, &rel.join(&b'/'));
            let is_dir = is_dir(&st);
            plan.deletions.push(Deletion {
                dir,
                rel: rel.clone(),
                id: file_id(&st),
                is_dir,
            });
            entries.push(PlanEntry {
                path: path.clone(),
                kind: stat_kind(&st),
                action: Action::Deleted,
                size: if is_file(&st) { st.st_size as u64 } else { 0 },
            });
            if !is_dir {
                continue;
            }
            let children = self.open_rel(plan, dir, &rel, file_id(&st)).and_then(|fd| {
                let mut out = Vec::new();
                for entry in rustix::fs::Dir::read_from(fd.as_fd())? {
                    let name = entry?.file_name().to_bytes().to_vec();
                    if name == b"." || name == b".." {
                        continue;
                    }
                    let st = rustix::fs::statat(fd.as_fd(), OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)?;
                    out.push((name, st));
                }
                Ok(out)
            });
            match children {
                Ok(mut children) => {
                    children.sort_by(|a, b| b.0.cmp(&a.0));
                    for (name, st) in children {
                        let mut rel = rel.clone();
                        rel.push(name);
                        stack.push((rel, st));
                    }
                }
                // Left in place: removing the directory fails as it is not
                // empty, and says so.
                Err(e) => self.error(&path, format!("cannot list directory: {e}")),
            }
        }
        entries
    }

    /// Opens directory `rel` below planned directory `dir`, one name at a
    /// time, never through a symlink, checking it is `id`.
    fn open_rel(&self, plan: &Plan, dir: usize, rel: &[Vec<u8>], id: FileId) -> std::io::Result<OwnedFd> {
        let base = self.dir_fds.get(&plan.dirs, dir)?;
        let mut fd = open_dir_at(base.as_fd(), &rel[0])?;
        for name in &rel[1..] {
            fd = open_dir_at(fd.as_fd(), name)?;
        }
        if file_id(&rustix::fs::fstat(&fd)?) != id {
            return Err(replaced());
        }
        Ok(fd)
    }

    /// Removes what `delete` planned, children first, each only if it is
    /// still what the plan saw.
    fn delete(&self, plan: &Plan) {
        for d in plan.deletions.iter().rev() {
            if plan.dirs[d.dir].failed {
                continue;
            }
            let (last, parents) = d.rel.split_last().expect("a deletion has a name");
            let removed = (|| -> std::io::Result<()> {
                let parent = match parents {
                    [] => (*self.dir_fds.get(&plan.dirs, d.dir)?).try_clone()?,
                    _ => {
                        let base = self.dir_fds.get(&plan.dirs, d.dir)?;
                        let mut fd = open_dir_at(base.as_fd(), &parents[0])?;
                        for name in &parents[1..] {
                            fd = open_dir_at(fd.as_fd(), name)?;
                        }
                        fd
                    }
                };
                let st = rustix::fs::statat(&parent, OsStr::from_bytes(last), AtFlags::SYMLINK_NOFOLLOW)?;
                if file_id(&st) != d.id {
                    return Err(replaced());
                }
                let flags = if d.is_dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
                rustix::fs::unlinkat(&parent, OsStr::from_bytes(last), flags)?;
                Ok(())
            })();
            match removed {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
                Err(e) => self.error(
                    &self.entry_path(&plan.dirs, d.dir, &d.rel.join(&b'/')),
                    format!("cannot delete: {e}"),
                ),
            }
        }
    }

    /// Removes the temporary files a killed restore left (regular files
    /// only: that is all restore leaves).
    fn remove_leftovers(&self, plan: &Plan) {
        for (dir, name) in &plan.leftovers {
            if plan.dirs[*dir].failed {
                continue;
            }
            let removed = self.dir_fds.get(&plan.dirs, *dir).and_then(|fd| {
                let st = rustix::fs::statat(fd.as_fd(), OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)?;
                if is_file(&st) {
                    rustix::fs::unlinkat(fd.as_fd(), OsStr::from_bytes(name), AtFlags::empty())?;
                }
                Ok(())
            });
            if let Err(e) = removed {
                self.error(
                    &self.entry_path(&plan.dirs, *dir, name),
                    format!("cannot remove what an interrupted restore left: {e}"),
                );
            }
        }
    }

    /// Creates the planned fifos, devices and sockets, each under a
    /// temporary name renamed into place. What was created, per entry.
    fn make_specials(&self, plan: &Plan) -> Vec<Option<FileId>> {
        let mut temps = 0u64;
        plan.specials
            .iter()
            .map(|entry| {
                if plan.dirs[entry.dir].failed {
                    return None;
                }
                if entry.keep.is_some() {
                    return entry.keep;
                }
                temps += 1;
                let temp = [TEMP_PREFIX, format!("{}-s{temps}", self.pid).as_bytes()].concat();
                let made = self.dir_fds.get(&plan.dirs, entry.dir).and_then(|dir| {
                    remove_non_dir(dir.as_fd(), &temp)?;
                    fsmeta::make_special(dir.as_fd(), &temp, &entry.node)?;
                    let st = rustix::fs::statat(dir.as_fd(), OsStr::from_bytes(&temp), AtFlags::SYMLINK_NOFOLLOW)?;
                    rename_into_place(dir.as_fd(), &temp, &entry.name).inspect_err(|_| {
                        let _ = unlink_if(dir.as_fd(), &temp, file_id(&st));
                    })?;
                    Ok(file_id(&st))
                });
                match made {
                    Ok(id) => Some(id),
                    Err(e) => {
                        let path = self.entry_path(&plan.dirs, entry.dir, &entry.name);
                        self.error(&path, format!("cannot create {:?}: {e}", entry.node.kind));
                        None
                    }
                }
            })
            .collect()
    }

    /// After an interruption: the temporary files written so far go.
    fn discard_temps(&self, plan: &Plan, files: &FileSlots) {
        for (index, file) in plan.files.iter().enumerate() {
            let id = {
                let mut slot = files.slots[index].lock().expect("file slot lock");
                slot.handle = Handle::Closed;
                slot.id
            };
            if let (None, Some(id)) = (file.keep, id) {
                if let Ok(dir) = self.dir_fds.get(&plan.dirs, file.dir) {
                    let _ = unlink_if(dir.as_fd(), &file.temp, id);
                }
            }
        }
    }

    /// `verify`: reads every written file back, blob by blob, and checks
    /// each piece against its id; a file that fails is damaged (renamed
    /// `NAME.damaged`, never into place). The number of files checked.
    fn verify(&self, plan: &Plan, files: &FileSlots) -> u64 {
        let checked = AtomicU64::new(0);
        plan.files.par_iter().enumerate().for_each(|(index, file)| {
            let (id, damaged, failed) = {
                let slot = files.slots[index].lock().expect("file slot lock");
                (slot.id, slot.damaged, matches!(slot.handle, Handle::Failed))
            };
            let Some(id) = id else { return };
            if file.keep.is_some() || damaged || failed {
                return;
            }
            let result = (|| -> std::io::Result<Option<u64>> {
                let dir = self.dir_fds.get(&plan.dirs, file.dir)?;
                let handle = reopen_at(dir.as_fd(), &file.temp, id, OFlags::RDONLY)?;
                let mut offset = 0u64;
                let mut buf = Vec::new();
                for blob in &file.node.content {
                    let Some(planned) = plan.blobs.get(blob) else {
                        return Ok(Some(offset));
                    };
                    buf.resize(planned.location.entry.raw_length as usize, 0);
                    handle.read_exact_at(&mut buf, offset)?;
                    if self.repo.crypto().blob_id(&buf) != *blob {
                        return Ok(Some(offset));
                    }
                    offset += buf.len() as u64;
                }
                Ok(None)
            })();
            let path = self.file_path(plan, index);
            match result {
                Ok(None) => {
                    checked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(offset)) => {
                    self.error(
                        &path,
                        format!("verification failed: what was written at offset {offset} does not match the snapshot"),
                    );
                    files.damaged(index);
                }
                Err(e) => {
                    self.error(&path, format!("verification failed: cannot read it back: {e}"));
                    files.damaged(index);
                }
            }
        });
        checked.into_inner()
    }

    /// Plans `node`, found at snapshot path `source`, as entry of directory
    /// `parent`. `selected`: an ancestor matched an include pattern. A
    /// directory comes back as a frame for the walk to go through.
    fn plan_node(
        &self,
        plan: &mut Plan,
        parent: usize,
        node: Node,
        source: &Path,
        selected: bool,
    ) -> Result<Option<Frame>> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let is_dir_node = node.kind == NodeKind::Dir;
        if self.excludes.matched(source, is_dir_node).is_ignore() {
            return Ok(None);
        }
        let selected = selected
            || match &self.includes {
                None => true,
                Some(includes) => includes.matched(source, is_dir_node).is_ignore(),
            };
        if node.kind == NodeKind::Dir {
            let subtree = node.subtree.expect("decode checked: directories have subtrees");
            let tree = match self.load_tree(&subtree) {
                Ok(tree) => tree,
                Err(e) => {
                    let path = self.entry_path(&plan.dirs, parent, &node.name);
                    self.error(&path, format!("cannot read directory listing: {e}"));
                    return Ok(None);
                }
            };
            // Not selected itself: created only once something below is.
            let now = selected || self.includes.is_none();
            let Ok(existing) = self.existing(plan, parent, &node.name) else {
                return Ok(None);
            };
            if let Some(st) = &existing {
                if !is_dir(st) {
                    if now {
                        self.ensure_dir(plan, parent);
                        self.note(plan, parent, &node.name.clone(), &node, None, Action::Conflict);
                    }
                    return Ok(None);
                }
            }
            if now {
                self.ensure_dir(plan, parent);
            }
            let index = plan.dirs.len();
            plan.dirs.push(PlannedDir {
                parent,
                name: node.name.clone(),
                node: Some(node),
                id: existing.as_ref().map(file_id),
                failed: false,
                needed: now,
                existed: existing.is_some(),
                made: false,
            });
            if now {
                self.emit_dir(plan, index);
            }
            let deleted = self.scan(plan, index, &tree, source, now);
            return Ok(Some(Frame {
                dir: index,
                nodes: tree.nodes.into_iter(),
                deleted: deleted.into(),
                selected,
                pushed: false,
            }));
        }
        if !selected {
            return Ok(None);
        }
        self.ensure_dir(plan, parent);
        let Ok(existing) = self.existing(plan, parent, &node.name) else {
            return Ok(None);
        };
        let name = node.name.clone();
        match node.kind {
            NodeKind::Dir => unreachable!("handled above"),
            NodeKind::File => self.plan_file(plan, parent, node, existing),
            _ => {
                let action = self.decide(&node, existing.as_ref(), || {
                    let st = existing.as_ref().expect("decide asks only about an existing entry");
                    self.same_entry(plan, parent, &name, st, &node)
                });
                self.note(plan, parent, &name, &node, existing.as_ref(), action);
                let keep = match action {
                    Action::Unchanged | Action::Skipped => existing.as_ref().map(file_id),
                    Action::Conflict => return Ok(None),
                    _ => None,
                };
                let entry = PlannedEntry {
                    dir: parent,
                    name,
                    node,
                    keep,
                    meta: action != Action::Skipped,
                };
                if entry.node.kind == NodeKind::Symlink {
                    plan.symlinks.push(entry);
                } else {
                    plan.specials.push(entry);
                }
            }
        }
        Ok(None)
    }

    /// True if the existing `st` at `name` is the symlink or special file
    /// `node` describes (its metadata aside).
    fn same_entry(&self, plan: &Plan, dir: usize, name: &[u8], st: &rustix::fs::Stat, node: &Node) -> bool {
        if stat_kind(st) != crate::ls::kind_name(node.kind) {
            return false;
        }
        match node.kind {
            NodeKind::Symlink => self
                .dir_fds
                .get(&plan.dirs, dir)
                .ok()
                .and_then(|fd| rustix::fs::readlinkat(fd.as_fd(), OsStr::from_bytes(name), Vec::new()).ok())
                .is_some_and(|target| target.as_bytes() == node.link_target.as_slice()),
            NodeKind::CharDevice | NodeKind::BlockDevice => rdev(st) == node.rdev,
            _ => true,
        }
    }

    fn plan_file(&self, plan: &mut Plan, dir: usize, node: Node, existing: Option<rustix::fs::Stat>) {
        if node.links > 1 {
            let key = (node.device, node.inode);
            if let Some(first) = plan.first_links.get(&key).cloned() {
                let first_keep = match &first {
                    FirstName::Planned(index) => plan.files[*index].keep,
                    FirstName::Done(done) => done.keep,
                };
                // The name already is a link of the file kept under the first.
                let action = self.decide(&node, existing.as_ref(), || {
                    existing.as_ref().map(file_id).is_some() && existing.as_ref().map(file_id) == first_keep
                });
                self.note(plan, dir, &node.name, &node, existing.as_ref(), action);
                if action != Action::Conflict {
                    plan.links.push(PlannedLink {
                        dir,
                        name: node.name,
                        first,
                        keep: matches!(action, Action::Unchanged | Action::Skipped),
                    });
                }
                return;
            }
        }
        let action = self.decide(&node, existing.as_ref(), || {
            let st = existing.as_ref().expect("decide asks only about an existing entry");
            // A file with other names may share its inode with a file
            // outside the target: kept as unchanged, its metadata would be
            // set on that file too. It is written anew and renamed in.
            st.st_nlink <= 1 && self.content_matches(plan, dir, &node.name, st, &node)
        });
        self.note(plan, dir, &node.name, &node, existing.as_ref(), action);
        if action == Action::Conflict {
            return;
        }
        // A group's other names are linked to its first: not to a local
        // file left in place (`--overwrite never|if-newer`), whose content
        // is not the snapshot's; the next name then leads the group.
        if node.links > 1 && action != Action::Skipped {
            plan.first_links
                .insert((node.device, node.inode), FirstName::Planned(plan.files.len()));
        }
        if matches!(action, Action::Unchanged | Action::Skipped) {
            plan.files.push(PlannedFile {
                dir,
                name: node.name.clone(),
                node,
                writes: 0,
                incomplete: false,
                temp: Vec::new(),
                keep: existing.as_ref().map(file_id),
                meta: action == Action::Unchanged,
            });
            return;
        }
        let file = plan.files.len();
        let mut offset = 0u64;
        let mut incomplete = false;
        let mut writes = 0u32;
        for id in &node.content {
            // Offsets come from the index; past a blob of unknown length no
            // offset can be trusted, so nothing more of this file is written
            // (a wrong byte is worse than a hole).
            let planned = match plan.blobs.entry(*id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => match self.index.lookup(id) {
                    Ok(Some(location)) => e.insert(PlannedBlob {
                        location,
                        targets: Vec::new(),
                    }),
                    _ => {
                        self.error(
                            &self.entry_path(&plan.dirs, dir, &node.name),
                            format!("content from offset {offset} on is lost: blob {id} is not in the index"),
                        );
                        incomplete = true;
                        break;
                    }
                },
            };
            planned.targets.push(Target { file, offset });
            offset += u64::from(planned.location.entry.raw_length);
            writes += 1;
        }
        if !incomplete && offset != node.size {
            self.error(
                &self.entry_path(&plan.dirs, dir, &node.name),
                format!("content adds up to {offset} bytes, the snapshot says {}", node.size),
            );
            incomplete = true;
        }
        let temp = self.temp_name(plan);
        plan.files.push(PlannedFile {
            dir,
            name: node.name.clone(),
            node,
            writes,
            incomplete,
            temp,
            keep: None,
            meta: true,
        });
    }

    /// Phase 2: reads every needed blob once and writes it everywhere it
    /// goes, then creates the files that got no write.
    fn write_content(&self, plan: &Plan, files: &FileSlots) -> Result<()> {
        let mut by_pack: HashMap<PackId, Vec<&BlobLocation>> = HashMap::new();
        for blob in plan.blobs.values() {
            by_pack.entry(blob.location.pack).or_default().push(&blob.location);
        }
        let mut packs: Vec<(PackId, Vec<&BlobLocation>)> = by_pack.into_iter().collect();
        packs.sort_by_key(|(id, _)| *id);
        packs.par_iter_mut().try_for_each(|(pack, blobs)| {
            blobs.sort_by_key(|b| b.entry.offset);
            for range in merge_ranges(blobs) {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                self.restore_range(plan, files, pack, range);
            }
            Ok(())
        })?;
        files.slots.par_iter().enumerate().for_each(|(index, slot)| {
            let mut slot = slot.lock().expect("file slot lock");
            if matches!(slot.handle, Handle::New) {
                slot.handle = match self.create_file(plan, index) {
                    Ok(created) => {
                        slot.id = Some(created.id);
                        slot.created = created.owned;
                        slot.anonymous = created.anonymous;
                        if created.anonymous {
                            self.place(plan, index, &mut slot, &created.file);
                        }
                        Handle::Closed
                    }
                    Err(e) => {
                        self.error(&self.file_path(plan, index), format!("cannot create file: {e}"));
                        Handle::Failed
                    }
                };
            }
        });
        Ok(())
    }

    /// Creates planned file `index`: without a name if it gets at most one
    /// write and the target allows (see `Anonymous`), else under its
    /// temporary name at full length.
    fn create_file(&self, plan: &Plan, index: usize) -> std::io::Result<Created> {
        let file = &plan.files[index];
        let dir = self.dir_fds.get(&plan.dirs, file.dir)?;
        if self.anonymous != Anonymous::No && file.writes <= 1 {
            // Nothing can open an unnamed file but this process: it is
            // created with the permission bits it will have (setuid and the
            // like wait for its owner), which saves the fchmod.
            if let Some((file, st)) = create_anonymous_at(dir.as_fd(), file.node.mode & 0o777)? {
                return Ok(Created {
                    file,
                    id: file_id(&st),
                    owned: Some(fsmeta::Owned::of(&st)),
                    anonymous: true,
                });
            }
        }
        let (file, id) = create_file_at(dir.as_fd(), &file.temp, file.node.size)?;
        Ok(Created {
            file,
            id,
            owned: None,
            anonymous: false,
        })
    }

    /// Gives the anonymous file `index` (`handle`), its content written, its
    /// metadata and then its name (`NAME.damaged` if damaged), replacing in
    /// one step whatever is at that name. Errors are reported here; the
    /// outcome is in `slot.placed`.
    fn place(&self, plan: &Plan, index: usize, slot: &mut FileSlot, handle: &File) {
        let file = &plan.files[index];
        let name = if slot.damaged {
            damaged_name(&file.name)
        } else {
            file.name.clone()
        };
        let mut failed = None;
        let placed = (|| -> std::io::Result<()> {
            // Zeros at the end are a hole: the write did not reach there.
            if slot.len < file.node.size {
                handle.set_len(file.node.size)?;
            }
            // Times last, as everywhere: nothing is written after them.
            let apply = Apply {
                chown: self.chown,
                times: !slot.damaged,
            };
            failed = Some(fsmeta::apply_metadata_fd_over(
                handle.as_fd(),
                &file.node,
                apply,
                slot.created,
            ));
            let dir = self.dir_fds.get(&plan.dirs, file.dir)?;
            self.link_anonymous(handle, dir.as_fd(), &name, &file.temp)
        })();
        match placed {
            Ok(()) => {
                if let Some(failed) = failed {
                    let path = || self.entry_path(&plan.dirs, file.dir, &name);
                    self.report_metadata(&path, &file.node, failed);
                }
                slot.placed = Some(Some(name));
            }
            Err(e) => {
                let message = if slot.damaged {
                    format!("content is incomplete, and not restored: {e}")
                } else {
                    format!("cannot put the restored file in place: {e}")
                };
                self.error(&self.file_path(plan, index), message);
                slot.placed = Some(None);
            }
        }
    }

    /// Links the anonymous `file` in as `name` of `dir`. Where something is
    /// at that name already (the file restore overwrites, or one that
    /// appeared since the plan), it is linked as `temp` and renamed over it,
    /// as a named temporary file would be: the name holds the old entry or
    /// the new, never neither.
    fn link_anonymous(&self, file: &File, dir: BorrowedFd<'_>, name: &[u8], temp: &[u8]) -> std::io::Result<()> {
        match link_fd(self.anonymous, file, dir, name) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                remove_non_dir(dir, temp)?;
                link_fd(self.anonymous, file, dir, temp)?;
                rename_into_place(dir, temp, name).inspect_err(|_| {
                    let _ = rustix::fs::unlinkat(dir, OsStr::from_bytes(temp), AtFlags::empty());
                })
            }
            other => other,
        }
    }

    fn restore_range(&self, plan: &Plan, files: &FileSlots, pack: &PackId, blobs: &[&BlobLocation]) {
        thread_local! {
            // Per thread, reused for every range.
            static BUFS: std::cell::RefCell<BlobBuffers> = const { std::cell::RefCell::new(BlobBuffers::new()) };
        }
        BUFS.with(|bufs| {
            // The shared reader checks every index entry against the bytes read.
            let read = self
                .repo
                .read_pack_blobs(pack, blobs, &mut bufs.borrow_mut(), |blob, result| match result {
                    Ok(plain) => self.write_blob(plan, files, &blob.entry.id, plain),
                    Err(e) => self.blob_failed(plan, files, &blob.entry.id, &e.to_string()),
                });
            if let Err(e) = read {
                for blob in blobs {
                    self.blob_failed(plan, files, &blob.entry.id, &e.to_string());
                }
            }
        });
    }

    fn write_blob(&self, plan: &Plan, files: &FileSlots, id: &BlobId, plain: &[u8]) {
        for target in &plan.blobs[id].targets {
            // Files are created at full length, all holes: zero blobs, and
            // whole zero blocks inside a blob, need no write.
            let runs = data_runs(plain, target.offset);
            let Some(handle) = self.file_for_write(plan, files, target.file, !runs.is_empty()) else {
                continue;
            };
            let written = match handle {
                Some(handle) => {
                    let preallocate = plan.files[target.file].node.size >= PREALLOCATE_FROM;
                    runs.iter().try_for_each(|&(start, end)| {
                        let offset = target.offset + start as u64;
                        if preallocate {
                            preallocate_run(&handle, offset, (end - start) as u64);
                        }
                        handle.write_all_at(&plain[start..end], offset)
                    })
                }
                None => Ok(()),
            };
            if let Err(e) = written {
                self.error(&self.file_path(plan, target.file), format!("cannot write: {e}"));
                files.damaged(target.file);
            } else {
                self.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                self.progress.event(Event::Bytes(plain.len() as u64));
            }
            let reach = runs.last().map_or(0, |&(_, end)| target.offset + end as u64);
            self.written(plan, files, target.file, reach);
        }
    }

    /// Creates the file on its first write and opens it if it is closed.
    /// `None`: the file cannot be written (already reported). `Some(None)`:
    /// the file exists and the caller needs no handle (a zero blob).
    fn file_for_write(
        &self,
        plan: &Plan,
        files: &FileSlots,
        index: usize,
        need_handle: bool,
    ) -> Option<Option<Arc<File>>> {
        let mut slot = files.slots[index].lock().expect("file slot lock");
        let opened = match &slot.handle {
            Handle::Open(handle) => return Some(Some(handle.clone())),
            Handle::Failed => return None,
            Handle::Closed if !need_handle => return Some(None),
            Handle::Closed => {
                let file = &plan.files[index];
                let id = slot.id.expect("a created file has its id");
                self.dir_fds
                    .get(&plan.dirs, file.dir)
                    .and_then(|dir| reopen_at(dir.as_fd(), &file.temp, id, OFlags::WRONLY))
                    .map(|file| (file, id))
            }
            Handle::New => self.create_file(plan, index).map(|created| {
                slot.created = created.owned;
                slot.anonymous = created.anonymous;
                (created.file, created.id)
            }),
        };
        match opened {
            Ok((handle, id)) => {
                let handle = Arc::new(handle);
                files.open.fetch_add(1, Ordering::Relaxed);
                slot.handle = Handle::Open(handle.clone());
                slot.id = Some(id);
                Some(Some(handle))
            }
            Err(e) => {
                let what = if matches!(slot.handle, Handle::New) {
                    "create"
                } else {
                    "open"
                };
                self.error(&self.file_path(plan, index), format!("cannot {what} file: {e}"));
                slot.handle = Handle::Failed;
                None
            }
        }
    }

    fn blob_failed(&self, plan: &Plan, files: &FileSlots, id: &BlobId, why: &str) {
        for target in plan.blobs.get(id).map(|b| b.targets.as_slice()).unwrap_or_default() {
            self.error(
                &self.file_path(plan, target.file),
                format!("content at offset {} is lost: {why}", target.offset),
            );
            files.damaged(target.file);
            self.written(plan, files, target.file, 0);
        }
    }

    /// Counts one write to file `index` as done (or given up; the data it
    /// wrote ends at `reach`). After its last, an anonymous file is placed;
    /// see `FileSlots::written` for the others.
    fn written(&self, plan: &Plan, files: &FileSlots, index: usize, reach: u64) {
        let mut slot = files.slots[index].lock().expect("file slot lock");
        slot.len = slot.len.max(reach);
        if slot.anonymous && slot.remaining <= 1 {
            slot.remaining = 0;
            // Its last write is done (each write counts itself after it
            // completes): no other thread writes to it any more.
            if let Handle::Open(handle) = std::mem::replace(&mut slot.handle, Handle::Closed) {
                files.open.fetch_sub(1, Ordering::Relaxed);
                self.place(plan, index, &mut slot, &handle);
            }
            return;
        }
        drop(slot);
        files.written(index);
    }

    /// Phase 3 of a batch: damaged files out of the way, links, symlinks and
    /// metadata (of directories: at the end, see `finish_dirs`). Returns,
    /// per planned file, the name it has now (`None` if it was not
    /// restored), its id and whether it is damaged.
    fn finish(&self, plan: &Plan, files: &FileSlots, specials: &[Option<FileId>]) -> Vec<Finished> {
        let chown = self.chown;
        // The name each file has now: `None` if it was not restored.
        let mut damaged_paths = Vec::new();
        let mut names: Vec<Option<Vec<u8>>> = Vec::with_capacity(plan.files.len());
        for (index, file) in plan.files.iter().enumerate() {
            let mut slot = files.slots[index].lock().expect("file slot lock");
            if matches!(slot.handle, Handle::Open(_)) {
                slot.handle = Handle::Closed;
            }
            if matches!(slot.handle, Handle::Failed | Handle::New) {
                names.push(None);
                continue;
            }
            if file.keep.is_some() {
                names.push(Some(file.name.clone()));
                continue;
            }
            let path = self.file_path(plan, index);
            if slot.anonymous {
                // Placed, with its metadata, when its content was done
                // (errors reported then).
                let Some(now) = slot.placed.clone() else {
                    // Cannot happen: every anonymous file is placed after its
                    // last write, or when created at the end of the content.
                    self.error(&path, "not restored: its content was never completed".into());
                    names.push(None);
                    continue;
                };
                if let (Some(now), true) = (&now, slot.damaged) {
                    damaged_paths.push(self.report_damaged_copy(plan, file.dir, now, &path));
                }
                names.push(now);
                continue;
            }
            let id = slot.id.expect("a created file has its id");
            if !slot.damaged {
                // Written in full under its temporary name: into place in one
                // step, so the name holds the old file or the new, never part.
                let moved = self.dir_fds.get(&plan.dirs, file.dir).and_then(|dir| {
                    let moved = check_id(dir.as_fd(), &file.temp, id)
                        .and_then(|()| rename_into_place(dir.as_fd(), &file.temp, &file.name));
                    if moved.is_err() {
                        let _ = unlink_if(dir.as_fd(), &file.temp, id);
                    }
                    moved
                });
                match moved {
                    Ok(()) => names.push(Some(file.name.clone())),
                    Err(e) => {
                        self.error(&path, format!("cannot put the restored file in place: {e}"));
                        names.push(None);
                    }
                }
                continue;
            }
            // Never left under its own name, where it would pass for the
            // original: zero-filled where content is lost. What was there
            // stays.
            let damaged = damaged_name(&file.name);
            let moved = self.dir_fds.get(&plan.dirs, file.dir).and_then(|dir| {
                let renamed = check_id(dir.as_fd(), &file.temp, id)
                    .and_then(|()| rename_into_place(dir.as_fd(), &file.temp, &damaged));
                if renamed.is_err() {
                    // Not even a damaged copy, then (a name too long for the
                    // suffix, a directory in the way).
                    let _ = unlink_if(dir.as_fd(), &file.temp, id);
                }
                renamed
            });
            match moved {
                Ok(()) => {
                    damaged_paths.push(self.report_damaged_copy(plan, file.dir, &damaged, &path));
                    names.push(Some(damaged));
                }
                Err(e) => {
                    self.error(&path, format!("content is incomplete, and not restored: {e}"));
                    names.push(None);
                }
            }
        }
        let damaged_of = |index: usize| files.slots[index].lock().expect("file slot lock").damaged;

        let mut linked = 0;
        let mut link_temps = 0u64;
        for link in &plan.links {
            if plan.dirs[link.dir].failed || link.keep {
                continue;
            }
            let path = self.entry_path(&plan.dirs, link.dir, &link.name);
            let (first_dir, first_path, first_now, damaged, id) = match &link.first {
                FirstName::Planned(index) => (
                    plan.files[*index].dir,
                    self.file_path(plan, *index),
                    names[*index].as_ref(),
                    damaged_of(*index),
                    files.slots[*index].lock().expect("file slot lock").id,
                ),
                FirstName::Done(done) => (
                    done.dir,
                    self.entry_path(&plan.dirs, done.dir, &done.name),
                    done.now.as_ref(),
                    done.damaged,
                    done.id,
                ),
            };
            let Some(first_name) = first_now else {
                self.error(
                    &path,
                    format!(
                        "not restored: its first name {} could not be restored",
                        first_path.display()
                    ),
                );
                continue;
            };
            let name = if damaged {
                damaged_name(&link.name)
            } else {
                link.name.clone()
            };
            link_temps += 1;
            let temp = [TEMP_PREFIX, format!("{}-l{link_temps}", self.pid).as_bytes()].concat();
            let made = self.dir_fds.get(&plan.dirs, first_dir).and_then(|from| {
                let to = self.dir_fds.get(&plan.dirs, link.dir)?;
                remove_non_dir(to.as_fd(), &temp)?;
                rustix::fs::linkat(
                    from.as_fd(),
                    OsStr::from_bytes(first_name),
                    to.as_fd(),
                    OsStr::from_bytes(&temp),
                    AtFlags::empty(),
                )?;
                // The first name could have been swapped for another file.
                let st = rustix::fs::statat(to.as_fd(), OsStr::from_bytes(&temp), AtFlags::SYMLINK_NOFOLLOW)?;
                if Some(file_id(&st)) != id {
                    let _ = rustix::fs::unlinkat(to.as_fd(), OsStr::from_bytes(&temp), AtFlags::empty());
                    return Err(replaced());
                }
                rename_into_place(to.as_fd(), &temp, &name).inspect_err(|_| {
                    let _ = rustix::fs::unlinkat(to.as_fd(), OsStr::from_bytes(&temp), AtFlags::empty());
                })
            });
            match made {
                Err(e) => self.error(&path, format!("cannot link to {}: {e}", first_path.display())),
                Ok(()) if damaged => {
                    let new_path = self.entry_path(&plan.dirs, link.dir, &name);
                    self.error(
                        &new_path,
                        format!(
                            "an incomplete copy of {} (a hard link of {}): what could not be restored is zeros",
                            path.display(),
                            first_path.display()
                        ),
                    );
                    damaged_paths.push(new_path);
                }
                Ok(()) => linked += 1,
            }
        }
        let _ = linked;

        let symlinks_made: Vec<bool> = plan
            .symlinks
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                if plan.dirs[entry.dir].failed {
                    return false;
                }
                if entry.keep.is_some() {
                    return entry.meta;
                }
                let temp = [TEMP_PREFIX, format!("{}-y{i}", self.pid).as_bytes()].concat();
                let made = self.dir_fds.get(&plan.dirs, entry.dir).and_then(|dir| {
                    remove_non_dir(dir.as_fd(), &temp)?;
                    rustix::fs::symlinkat(
                        OsStr::from_bytes(&entry.node.link_target),
                        dir.as_fd(),
                        OsStr::from_bytes(&temp),
                    )?;
                    rename_into_place(dir.as_fd(), &temp, &entry.name).inspect_err(|_| {
                        let _ = rustix::fs::unlinkat(dir.as_fd(), OsStr::from_bytes(&temp), AtFlags::empty());
                    })
                });
                if let Err(e) = &made {
                    let path = self.entry_path(&plan.dirs, entry.dir, &entry.name);
                    self.error(&path, format!("cannot create symlink: {e}"));
                }
                made.is_ok()
            })
            .collect();

        let report = |path: &dyn Fn() -> PathBuf, node: &Node, failed| self.report_metadata(path, node, failed);
        plan.files.par_iter().enumerate().for_each(|(index, file)| {
            let Some(name) = &names[index] else {
                return;
            };
            if !file.meta {
                return;
            }
            let (id, damaged) = {
                let slot = files.slots[index].lock().expect("file slot lock");
                if slot.anonymous {
                    // Its metadata came before its name.
                    return;
                }
                (slot.id.expect("a restored file has its id"), slot.damaged)
            };
            let path = || self.entry_path(&plan.dirs, file.dir, name);
            let opened = self
                .dir_fds
                .get(&plan.dirs, file.dir)
                .and_then(|dir| reopen_at(dir.as_fd(), name, id, OFlags::RDONLY));
            match opened {
                Ok(handle) => {
                    let apply = Apply { chown, times: !damaged };
                    report(
                        &path,
                        &file.node,
                        fsmeta::apply_metadata_fd(handle.as_fd(), &file.node, apply),
                    );
                }
                Err(e) => self.error(&path(), format!("metadata not restored: {e}")),
            }
        });
        let apply = Apply { chown, times: true };
        for (entry, _) in plan.symlinks.iter().zip(&symlinks_made).filter(|(_, made)| **made) {
            let path = || self.entry_path(&plan.dirs, entry.dir, &entry.name);
            match self.dir_fds.get(&plan.dirs, entry.dir) {
                Ok(dir) => report(
                    &path,
                    &entry.node,
                    fsmeta::apply_symlink_metadata(dir.as_fd(), &entry.name, &entry.node, apply),
                ),
                Err(e) => self.error(&path(), format!("metadata not restored: {e}")),
            }
        }
        for (entry, id) in plan.specials.iter().zip(specials) {
            let Some(id) = id.filter(|_| entry.meta) else {
                continue;
            };
            let path = || self.entry_path(&plan.dirs, entry.dir, &entry.name);
            let opened = self
                .dir_fds
                .get(&plan.dirs, entry.dir)
                .and_then(|dir| reopen_at(dir.as_fd(), &entry.name, id, OFlags::PATH));
            match opened {
                Ok(fd) => report(
                    &path,
                    &entry.node,
                    fsmeta::apply_special_metadata(fd.as_fd(), &entry.node, apply),
                ),
                Err(e) => self.error(&path(), format!("metadata not restored: {e}")),
            }
        }
        self.damaged.lock().expect("damaged lock").extend(damaged_paths);
        names
            .into_iter()
            .enumerate()
            .map(|(index, now)| {
                let slot = files.slots[index].lock().expect("file slot lock");
                (now, slot.id, slot.damaged)
            })
            .collect()
    }

    /// What applying an entry's metadata could not do, and a time the
    /// filesystem had to clamp, reported against its path.
    fn report_metadata(&self, path: &dyn Fn() -> PathBuf, node: &Node, failed: fsmeta::ApplyErrors) {
        if !failed.0.is_empty() {
            self.error(&path(), format!("metadata not restored: {}", failed.0.join(", ")));
        }
        if let Some(warning) = fsmeta::clamped_time_warning(node.mtime_ns) {
            self.progress.event(Event::Warning {
                path: &path(),
                message: warning.into(),
            });
        }
    }

    /// The end of the restore: the metadata of directories, deepest first
    /// so that their times stick.
    fn finish_dirs(&self, plan: &Plan) {
        let apply = Apply {
            chown: self.chown,
            times: true,
        };
        let report = |path: &dyn Fn() -> PathBuf, node: &Node, failed| self.report_metadata(path, node, failed);
        for (index, dir) in plan.dirs.iter().enumerate().rev() {
            let Some(node) = &dir.node else {
                continue;
            };
            if dir.failed || !dir.made {
                continue;
            }
            let path = || self.dir_path(&plan.dirs, index);
            match self.dir_fds.get(&plan.dirs, index) {
                Ok(fd) => report(&path, node, fsmeta::apply_metadata_fd(fd.as_fd(), node, apply)),
                Err(e) => self.error(&path(), format!("metadata not restored: {e}")),
            }
        }
    }
}

impl FileSlots {
    /// Counts one write to file `index` as done (or given up), and closes the
    /// file after its last write, or after every write while too many files
    /// are open.
    fn written(&self, index: usize) {
        let mut slot = self.slots[index].lock().expect("file slot lock");
        slot.remaining = slot.remaining.saturating_sub(1);
        if matches!(slot.handle, Handle::Open(_))
            && (slot.remaining == 0 || self.open.load(Ordering::Relaxed) > self.budget)
        {
            // Another thread may still hold a clone for a write in flight;
            // the descriptor closes when the last clone is dropped.
            slot.handle = Handle::Closed;
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Part of file `index` could not be restored.
    fn damaged(&self, index: usize) {
        self.slots[index].lock().expect("file slot lock").damaged = true;
    }
}

/// Splits blobs sorted by offset into runs read with one request each.
fn merge_ranges<'a, 'b>(blobs: &'a [&'b BlobLocation]) -> Vec<&'a [&'b BlobLocation]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let prev = &blobs[i - 1].entry;
            let next = &blobs[i].entry;
            let prev_end = u64::from(prev.offset) + u64::from(prev.length);
            let gap = u64::from(next.offset).saturating_sub(prev_end);
            let span = u64::from(next.offset) + u64::from(next.length) - u64::from(blobs[start].entry.offset);
            gap > MERGE_GAP || span > MAX_READ
        };
        if split {
            out.push(&blobs[start..i]);
            start = i;
        }
    }
    out
}

/// The byte ranges of `data`, to be written at file offset `offset`, that
/// hold more than zeros: every `HOLE_BLOCK`-aligned block of zeros (and zero
/// bytes at either end) is left out, so it stays a hole of the file created
/// at full length. Empty when `data` is all zeros. On dense data the check
/// stops at the first byte of each block.
fn data_runs(data: &[u8], offset: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0usize;
    let mut block = (HOLE_BLOCK - offset % HOLE_BLOCK) as usize;
    while start < data.len() {
        let end = (start + block).min(data.len());
        block = HOLE_BLOCK as usize;
        if !is_zero(&data[start..end]) {
            match runs.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => runs.push((start, end)),
            }
        }
        start = end;
    }
    runs
}

fn is_zero(bytes: &[u8]) -> bool {
    // Or-folding a fixed-size piece compiles to vector code; `all` would
    // test byte by byte.
    bytes
        .chunks(64)
        .all(|piece| piece.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// `NAME.damaged`.
fn damaged_name(name: &[u8]) -> Vec<u8> {
    [name, DAMAGED_SUFFIX].concat()
}

/// Opens directory `name` in `dir`, never through a symlink.
fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        OsStr::from_bytes(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates directory `name` in `dir` (owner-only until its metadata is
/// applied at the end) and opens it, accepting an existing directory but
/// never a symlink. An existing directory is made writable for its owner
/// while the restore fills it (an earlier restore may have made it
/// read-only); its recorded mode is applied again at the end.
fn create_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> std::io::Result<OwnedFd> {
    let existed = match rustix::fs::mkdirat(dir, OsStr::from_bytes(name), Mode::from_raw_mode(0o700)) {
        Ok(()) => false,
        Err(Errno::EXIST) => true,
        Err(e) => return Err(e.into()),
    };
    let fd = open_dir_at(dir, name).map_err(|e| match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::LOOP | Errno::NOTDIR) => {
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory")
        }
        _ => e,
    })?;
    if existed {
        let mode = rustix::fs::fstat(&fd)?.st_mode as u32 & 0o7777;
        if mode & 0o700 != 0o700 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode | 0o700))?;
        }
    }
    Ok(fd)
}

/// Creates regular file `name` in `dir`, of `size` bytes, all holes, and
/// owner-only until its metadata is applied at the end. An existing file is
/// replaced, not truncated: truncating would change every other hard link to
/// it, and fails on a read-only file the user may still delete. A directory
/// in the way is left alone, and the file is not restored.
fn create_file_at(dir: BorrowedFd<'_>, name: &[u8], size: u64) -> std::io::Result<(File, FileId)> {
    let create = || {
        rustix::fs::openat(
            dir,
            OsStr::from_bytes(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    };
    // Into an empty target, the first try succeeds: no stat per file.
    let fd = match create() {
        Err(Errno::EXIST) => {
            remove_non_dir(dir, name)?;
            create()?
        }
        other => other?,
    };
    let file = File::from(fd);
    if size > 0 {
        file.set_len(size)?;
    }
    let id = file_id(&rustix::fs::fstat(&file)?);
    Ok((file, id))
}

/// Files of this size or more get their blocks allocated before each write
/// (`preallocate_run`).
const PREALLOCATE_FROM: u64 = 8 << 20;

/// Allocates the blocks of one run of data about to be written at `offset`
/// of a large file, so the file system places the run in one extent now
/// instead of block by block as the workers' writes arrive. Only the data
/// runs are allocated: zero blocks stay holes. On an ext4 not much larger
/// than the data (the restore target of the comparison bench) a 2 GiB
/// file's restore took 6.4-10.8 s without and 3.0-3.7 s with (delayed
/// allocation gives up when free space runs low, and the four workers'
/// writes at four places in the file were then allocated one page at a
/// time). A file system that cannot preallocate (or has no room: the write
/// then says so) is written as before.
fn preallocate_run(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len);
}

/// A file `create_file` made.
struct Created {
    file: File,
    id: FileId,
    /// Owner and mode of an anonymous file.
    owned: Option<fsmeta::Owned>,
    anonymous: bool,
}

/// Creates an unnamed regular file in `dir` (`O_TMPFILE`, permission bits
/// `mode`), with its `stat`; `None` where the filesystem has no unnamed
/// files.
fn create_anonymous_at(dir: BorrowedFd<'_>, mode: u32) -> std::io::Result<Option<(File, rustix::fs::Stat)>> {
    match rustix::fs::openat(
        dir,
        ".",
        OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    ) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd)?;
            Ok(Some((File::from(fd), st)))
        }
        // EISDIR: a kernel that predates O_TMPFILE.
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Gives the unnamed `file` the name `name` in `dir`, as `how` says; fails
/// with `AlreadyExists` if something is at that name.
fn link_fd(how: Anonymous, file: &File, dir: BorrowedFd<'_>, name: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let name = OsStr::from_bytes(name);
    match how {
        Anonymous::EmptyPath => rustix::fs::linkat(file.as_fd(), "", dir, name, AtFlags::EMPTY_PATH)?,
        Anonymous::ProcFd => rustix::fs::linkat(
            rustix::fs::CWD,
            format!("/proc/self/fd/{}", file.as_raw_fd()).as_str(),
            dir,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )?,
        Anonymous::No => return Err(std::io::Error::other("unnamed files are not in use")),
    }
    Ok(())
}

/// Finds out whether files can be created without a name in the target and
/// named later (see `Anonymous`): by making one and linking it in under a
/// temporary name (removed again; a killed restore's leftover is removed by
/// the next as any temporary file). Any failure means no.
fn probe_anonymous(target: BorrowedFd<'_>, pid: u32) -> Anonymous {
    let Ok(Some((file, st))) = create_anonymous_at(target, 0o600) else {
        return Anonymous::No;
    };
    let name = [TEMP_PREFIX, format!("{pid}-0").as_bytes()].concat();
    for how in [Anonymous::EmptyPath, Anonymous::ProcFd] {
        if link_fd(how, &file, target, &name).is_ok() {
            let _ = unlink_if(target, &name, file_id(&st));
            return how;
        }
    }
    Anonymous::No
}

/// Opens entry `name` of `dir` again (`flags`: the access wanted), checking
/// it is still `id`, the entry restore made: never through a symlink, and
/// without blocking on a fifo swapped in.
fn reopen_at(dir: BorrowedFd<'_>, name: &[u8], id: FileId, flags: OFlags) -> std::io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        OsStr::from_bytes(name),
        flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if file_id(&rustix::fs::fstat(&fd)?) != id {
        return Err(replaced());
    }
    Ok(File::from(fd))
}

/// Renames `from` to `to` in `dir`, replacing a file or symlink at `to` (the
/// symlink itself, never what it points to) in one step; a directory there
/// stays, and is an error.
fn rename_into_place(dir: BorrowedFd<'_>, from: &[u8], to: &[u8]) -> std::io::Result<()> {
    match rustix::fs::renameat(dir, OsStr::from_bytes(from), dir, OsStr::from_bytes(to)) {
        Ok(()) => Ok(()),
        Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Fails unless entry `name` of `dir` is still `id` (not followed).
fn check_id(dir: BorrowedFd<'_>, name: &[u8], id: FileId) -> std::io::Result<()> {
    let st = rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW)?;
    if file_id(&st) != id {
        return Err(replaced());
    }
    Ok(())
}

/// Removes entry `name` of `dir` if it still is `id`.
fn unlink_if(dir: BorrowedFd<'_>, name: &[u8], id: FileId) -> std::io::Result<()> {
    check_id(dir, name, id)?;
    Ok(rustix::fs::unlinkat(dir, OsStr::from_bytes(name), AtFlags::empty())?)
}

fn file_type(st: &rustix::fs::Stat) -> rustix::fs::FileType {
    rustix::fs::FileType::from_raw_mode(st.st_mode as _)
}

fn is_dir(st: &rustix::fs::Stat) -> bool {
    file_type(st) == rustix::fs::FileType::Directory
}

fn is_file(st: &rustix::fs::Stat) -> bool {
    file_type(st) == rustix::fs::FileType::RegularFile
}

// `stat` field types differ between targets: the casts are not all no-ops.
#[allow(clippy::unnecessary_cast)]
fn mtime_ns(st: &rustix::fs::Stat) -> i64 {
    (st.st_mtime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

#[allow(clippy::unnecessary_cast)]
fn mode_bits(st: &rustix::fs::Stat) -> u32 {
    st.st_mode as u32 & 0o7777
}

#[allow(clippy::unnecessary_cast)]
fn rdev(st: &rustix::fs::Stat) -> u64 {
    st.st_rdev as u64
}

fn stat_kind(st: &rustix::fs::Stat) -> &'static str {
    use rustix::fs::FileType;
    match file_type(st) {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::CharacterDevice => "chardev",
        FileType::BlockDevice => "blockdev",
        FileType::Socket => "socket",
        FileType::Unknown => "unknown",
    }
}

/// Removes a file or symlink `name` of `dir` in the way of an entry to
/// restore; a directory stays, and is an error.
fn remove_non_dir(dir: BorrowedFd<'_>, name: &[u8]) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, OsStr::from_bytes(name), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_temporary_names_are_leftovers() {
        for ours in [
            ".snap-restore-123-4",
            ".snap-restore-9-s1",
            ".snap-restore-77-l20",
            ".snap-restore-1-y0",
        ] {
            assert!(is_restore_temp(ours.as_bytes()), "{ours}");
        }
        for theirs in [
            ".snap-restore-notes.txt",
            ".snap-restore-",
            ".snap-restore-12",
            ".snap-restore-12-",
            ".snap-restore-x-1",
            ".snap-restore-1-2.bak",
            "snap-restore-1-2",
        ] {
            assert!(!is_restore_temp(theirs.as_bytes()), "{theirs}");
        }
    }

    #[test]
    fn zero_blocks_inside_a_blob_are_left_out() {
        let mut data = vec![0u8; 5 * HOLE_BLOCK as usize];
        data[10] = 1;
        data[3 * HOLE_BLOCK as usize + 5] = 2;
        let b = HOLE_BLOCK as usize;
        assert_eq!(data_runs(&data, 0), vec![(0, b), (3 * b, 4 * b)]);
        // Blocks are aligned to the file, not the blob.
        assert_eq!(data_runs(&data, 100), vec![(0, b - 100), (3 * b - 100, 4 * b - 100)]);
        assert!(data_runs(&vec![0u8; 3 * b + 7], 12).is_empty());
        let dense = vec![7u8; 3 * b + 7];
        assert_eq!(data_runs(&dense, 12), vec![(0, dense.len())]);
        assert!(data_runs(&[], 0).is_empty());
    }
}
