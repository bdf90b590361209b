//! `restore`: writes a snapshot, or parts of it, into a target directory.
//!
//! Three phases:
//! 1. plan: walk the snapshot's trees, create directories, fifos and
//!    devices, and note which blob goes to which file offsets;
//! 2. content: group the needed blobs by pack, and on several threads read
//!    each pack's needed byte ranges once (neighbouring blobs are merged into
//!    one read), check every blob against its id, and write it with
//!    positional writes to every place it belongs. A file is created (at full
//!    length, all holes, so zero blobs need no write) when its first blob
//!    arrives and closed after its last, so creating files, which costs the
//!    kernel more than writing them, runs on every thread and overlaps the
//!    reads; files with no content are created at the end;
//! 3. finish: hard links, symlinks, then metadata, directories last and
//!    deepest first so their times stick.
//!
//! Trees come from an untrusted repository: names are validated on decode,
//! paths are built only from those names under the target, files are opened
//! without following symlinks, and symlinks are created only after all
//! content is written, so a hostile tree cannot make snap write outside the
//! target.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fsmeta;
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
}

#[derive(Debug, Default)]
pub struct RestoreResult {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    /// Entries that could not be restored (or not completely), with why.
    pub errors: Vec<(PathBuf, String)>,
}

struct PlannedFile {
    path: PathBuf,
    node: Node,
    /// How many blob writes this file gets.
    writes: u32,
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
    /// Directories with their nodes, in creation order (parents first).
    dirs: Vec<(PathBuf, Node)>,
    symlinks: Vec<(PathBuf, Node)>,
    specials: Vec<(PathBuf, Node)>,
    /// (new path, existing path) pairs for hard links.
    links: Vec<(PathBuf, PathBuf, Node)>,
    /// (device, inode) of multiply-linked files -> first restored path.
    first_links: HashMap<(u64, u64), PathBuf>,
    blobs: HashMap<BlobId, PlannedBlob>,
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
/// (the rest is for pack reads, the index and the caller), at most
/// `MAX_OPEN_FILES`.
fn open_file_budget() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (limit / 4).clamp(1, MAX_OPEN_FILES as u64) as usize
}

struct Restorer<'a> {
    repo: &'a Repository,
    /// One read transaction for every blob lookup of the plan (one per
    /// lookup made them queue on redb's locks).
    index: IndexReader,
    /// Trees loaded ahead of the planning walk (see `prefetch_trees`); the
    /// walk takes each one out as it plans it.
    trees: Mutex<HashMap<BlobId, Tree>>,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
    includes: Option<Gitignore>,
    excludes: Gitignore,
    errors: Mutex<Vec<(PathBuf, String)>>,
    bytes: AtomicU64,
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

/// Restores `snapshot` as `options` say. Damaged or missing data is reported
/// per file in [`RestoreResult::errors`]; everything else is restored.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<RestoreResult> {
    let restorer = Restorer {
        repo,
        index: repo.index().reader()?,
        trees: Mutex::new(HashMap::new()),
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
    };
    let pool = crate::pool::workers(options.threads, "restorer")?;
    let chown = options
        .ownership
        .unwrap_or_else(|| rustix::process::geteuid().is_root());

    std::fs::create_dir_all(&options.target).map_err(|e| Error::io(&options.target, e))?;
    let mut plan = Plan::default();
    // `--path /` is the whole snapshot.
    let whole = options.paths.is_empty()
        || options
            .paths
            .iter()
            .any(|p| tree::path_components(p).is_some_and(|c| c.is_empty()));
    if whole {
        pool.install(|| restorer.prefetch_trees(vec![snapshot.tree]))?;
        let root = restorer.load_tree(&snapshot.tree)?;
        restorer.plan_tree(&mut plan, root, Path::new("/"), &options.target, false)?;
    } else {
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
            let source = PathBuf::from("/").join(std::ffi::OsStr::from_bytes(&components.join(&b'/')));
            let dest = options.target.join(std::ffi::OsStr::from_bytes(&node.name));
            if let Some(subtree) = node.subtree {
                pool.install(|| restorer.prefetch_trees(vec![subtree]))?;
            }
            restorer.plan_node(&mut plan, node, &source, &dest, false)?;
        }
    }
    // What the walk did not take (excluded directories) is not needed.
    restorer.trees.lock().expect("trees lock").clear();
    let total: u64 = plan.files.iter().map(|f| f.node.size).sum();
    progress.event(Event::Total {
        bytes: total,
        items: plan.files.len() as u64,
    });

    pool.install(|| restorer.write_content(&plan))?;
    restorer.finish(&plan, chown);

    let mut errors = restorer.errors.into_inner().expect("errors lock");
    errors.sort_by(|a, b| a.0.cmp(&b.0));
    errors.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    Ok(RestoreResult {
        files: (plan.files.len() + plan.links.len()) as u64,
        dirs: plan.dirs.len() as u64,
        other: (plan.symlinks.len() + plan.specials.len()) as u64,
        bytes: restorer.bytes.load(Ordering::Relaxed),
        errors,
    })
}

impl Restorer<'_> {
    fn error(&self, path: &Path, message: String) {
        self.progress.event(Event::Warning {
            path,
            message: message.clone(),
        });
        self.errors
            .lock()
            .expect("errors lock")
            .push((path.to_path_buf(), message));
    }

    /// Plans the children of `tree`, found at snapshot path `source` and to be
    /// restored at `dest`. `selected`: an ancestor matched an include pattern.
    /// Returns whether anything was planned.
    fn plan_tree(&self, plan: &mut Plan, tree: Tree, source: &Path, dest: &Path, selected: bool) -> Result<bool> {
        let mut any = false;
        for node in tree.nodes {
            let name = std::ffi::OsStr::from_bytes(&node.name).to_owned();
            any |= self.plan_node(plan, node, &source.join(&name), &dest.join(&name), selected)?;
        }
        Ok(any)
    }

    /// Loads every tree below `roots` on the pool's threads, a level of the
    /// hierarchy at a time, so that the planning walk (one thread, depth
    /// first) finds them in memory instead of waiting for each read in turn.
    /// A tree that fails to load is left out: the walk loads it again and
    /// reports the error where it belongs.
    fn prefetch_trees(&self, roots: Vec<BlobId>) -> Result<()> {
        let mut seen: std::collections::HashSet<BlobId> = roots.iter().copied().collect();
        let mut level = roots;
        while !level.is_empty() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let loaded: Vec<(BlobId, Tree)> = level
                .par_iter()
                .filter_map(|id| Tree::load(self.repo, id).ok().map(|tree| (*id, tree)))
                .collect();
            level = Vec::new();
            let mut trees = self.trees.lock().expect("trees lock");
            for (id, tree) in loaded {
                level.extend(
                    tree.nodes
                        .iter()
                        .filter_map(|n| n.subtree)
                        .filter(|id| seen.insert(*id)),
                );
                trees.insert(id, tree);
            }
        }
        Ok(())
    }

    /// A tree, from the prefetched ones if it is there (the same tree can
    /// appear at several places: only the first takes it out).
    fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        match self.trees.lock().expect("trees lock").remove(id) {
            Some(tree) => Ok(tree),
            None => Tree::load(self.repo, id),
        }
    }

    fn plan_node(&self, plan: &mut Plan, node: Node, source: &Path, dest: &Path, selected: bool) -> Result<bool> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let is_dir = node.kind == NodeKind::Dir;
        if self.excludes.matched(source, is_dir).is_ignore() {
            return Ok(false);
        }
        let selected = selected
            || match &self.includes {
                None => true,
                Some(includes) => includes.matched(source, is_dir).is_ignore(),
            };
        match node.kind {
            NodeKind::Dir => {
                let subtree = node.subtree.expect("decode checked: directories have subtrees");
                let tree = match self.load_tree(&subtree) {
                    Ok(tree) => tree,
                    Err(e) => {
                        self.error(dest, format!("cannot read directory listing: {e}"));
                        return Ok(false);
                    }
                };
                let index = plan.dirs.len();
                if selected || self.includes.is_none() {
                    if let Err(e) = create_dir(dest) {
                        self.error(dest, format!("cannot create directory: {e}"));
                        return Ok(false);
                    }
                    plan.dirs.push((dest.to_path_buf(), node));
                    self.plan_tree(plan, tree, source, dest, selected)?;
                    return Ok(true);
                }
                // Not selected itself: create it only if something below is.
                plan.dirs.push((dest.to_path_buf(), node));
                let created = create_dir(dest);
                let any = created.is_ok() && self.plan_tree(plan, tree, source, dest, false)?;
                if !any {
                    plan.dirs.truncate(index);
                    let _ = std::fs::remove_dir(dest);
                }
                Ok(any)
            }
            _ if !selected => Ok(false),
            NodeKind::File => {
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(first) = plan.first_links.get(&key) {
                        plan.links.push((dest.to_path_buf(), first.clone(), node));
                        return Ok(true);
                    }
                    plan.first_links.insert(key, dest.to_path_buf());
                }
                let file = plan.files.len();
                let mut offset = 0u64;
                let mut complete = true;
                let mut writes = 0u32;
                for id in &node.content {
                    // Offsets come from the index; past a blob of unknown
                    // length no offset can be trusted, so nothing more of this
                    // file is written (a wrong byte is worse than a hole).
                    let planned = match plan.blobs.entry(*id) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => match self.index.lookup(id) {
                            Ok(Some(location)) => e.insert(PlannedBlob {
                                location,
                                targets: Vec::new(),
                            }),
                            _ => {
                                self.error(
                                    dest,
                                    format!("content from offset {offset} on is lost: blob {id} is not in the index"),
                                );
                                complete = false;
                                break;
                            }
                        },
                    };
                    planned.targets.push(Target { file, offset });
                    offset += u64::from(planned.location.entry.raw_length);
                    writes += 1;
                }
                if complete && offset != node.size {
                    self.error(
                        dest,
                        format!("content adds up to {offset} bytes, the snapshot says {}", node.size),
                    );
                }
                plan.files.push(PlannedFile {
                    path: dest.to_path_buf(),
                    node,
                    writes,
                });
                Ok(true)
            }
            NodeKind::Symlink => {
                plan.symlinks.push((dest.to_path_buf(), node));
                Ok(true)
            }
            _ => {
                remove_existing_non_dir(dest);
                match fsmeta::make_special(dest, &node) {
                    Ok(()) => plan.specials.push((dest.to_path_buf(), node)),
                    Err(e) => self.error(dest, format!("cannot create {:?}: {e}", node.kind)),
                }
                Ok(true)
            }
        }
    }

    /// Phase 2: reads every needed blob once and writes it everywhere it
    /// goes, then creates the files that got no write.
    fn write_content(&self, plan: &Plan) -> Result<()> {
        let files = FileSlots {
            slots: plan
                .files
                .iter()
                .map(|f| {
                    Mutex::new(FileSlot {
                        handle: Handle::New,
                        remaining: f.writes,
                    })
                })
                .collect(),
            open: AtomicUsize::new(0),
            budget: open_file_budget(),
        };
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
                self.restore_range(plan, &files, pack, range);
            }
            Ok(())
        })?;
        files.slots.par_iter().zip(&plan.files).for_each(|(slot, file)| {
            let mut slot = slot.lock().expect("file slot lock");
            if matches!(slot.handle, Handle::New) {
                slot.handle = match create_file(&file.path, file.node.size) {
                    Ok(_) => Handle::Closed,
                    Err(e) => {
                        self.error(&file.path, format!("cannot create file: {e}"));
                        Handle::Failed
                    }
                };
            }
        });
        Ok(())
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
        // Files are created at full length, so zero blobs stay holes.
        let all_zero = plain.iter().all(|&b| b == 0);
        for target in &plan.blobs[id].targets {
            let file = &plan.files[target.file];
            let Some(handle) = self.file_for_write(files, target.file, file, !all_zero) else {
                continue;
            };
            let written = match handle.filter(|_| !all_zero) {
                Some(handle) => handle.write_all_at(plain, target.offset),
                None => Ok(()),
            };
            files.written(target.file);
            match written {
                Ok(()) => {
                    self.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    self.progress.event(Event::Bytes(plain.len() as u64));
                }
                Err(e) => self.error(&file.path, format!("cannot write: {e}")),
            }
        }
    }

    /// Creates the file on its first write and opens it if it is closed.
    /// `None`: the file cannot be written (already reported). `Some(None)`:
    /// the file exists and the caller needs no handle (a zero blob).
    fn file_for_write(
        &self,
        files: &FileSlots,
        index: usize,
        file: &PlannedFile,
        need_handle: bool,
    ) -> Option<Option<Arc<File>>> {
        let mut slot = files.slots[index].lock().expect("file slot lock");
        let opened = match &slot.handle {
            Handle::Open(handle) => return Some(Some(handle.clone())),
            Handle::Failed => return None,
            Handle::Closed if !need_handle => return Some(None),
            Handle::Closed => OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&file.path),
            Handle::New => create_file(&file.path, file.node.size),
        };
        match opened {
            Ok(handle) => {
                let handle = Arc::new(handle);
                files.open.fetch_add(1, Ordering::Relaxed);
                slot.handle = Handle::Open(handle.clone());
                Some(Some(handle))
            }
            Err(e) => {
                let what = if matches!(slot.handle, Handle::New) {
                    "create"
                } else {
                    "open"
                };
                self.error(&file.path, format!("cannot {what} file: {e}"));
                slot.handle = Handle::Failed;
                None
            }
        }
    }

    fn blob_failed(&self, plan: &Plan, files: &FileSlots, id: &BlobId, why: &str) {
        for target in plan.blobs.get(id).map(|b| b.targets.as_slice()).unwrap_or_default() {
            let path = &plan.files[target.file].path;
            self.error(path, format!("content at offset {} is lost: {why}", target.offset));
            files.written(target.file);
        }
    }

    /// Phase 3: links, symlinks and metadata.
    fn finish(&self, plan: &Plan, chown: bool) {
        for (path, existing, _) in &plan.links {
            remove_existing_non_dir(path);
            if let Err(e) = std::fs::hard_link(existing, path) {
                self.error(path, format!("cannot link to {}: {e}", existing.display()));
            }
        }
        for (path, node) in &plan.symlinks {
            remove_existing_non_dir(path);
            let target = std::ffi::OsStr::from_bytes(&node.link_target);
            if let Err(e) = std::os::unix::fs::symlink(target, path) {
                self.error(path, format!("cannot create symlink: {e}"));
            }
        }
        let apply = |path: &Path, node: &Node| {
            let failed = fsmeta::apply_metadata(path, node, chown);
            if !failed.0.is_empty() {
                self.error(path, format!("metadata not restored: {}", failed.0.join(", ")));
            }
        };
        plan.files.par_iter().for_each(|f| apply(&f.path, &f.node));
        for (path, node) in plan.symlinks.iter().chain(&plan.specials) {
            apply(path, node);
        }
        for (path, node) in plan.dirs.iter().rev() {
            apply(path, node);
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

/// Creates a directory, accepting an existing directory but never a symlink.
/// An existing directory is made writable for its owner while the restore
/// fills it (an earlier restore may have made it read-only); its recorded
/// mode is applied again at the end.
fn create_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(path)?;
            if meta.is_dir() {
                let mode = meta.permissions().mode();
                if mode & 0o700 != 0o700 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))?;
                }
                Ok(())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ))
            }
        }
        Err(e) => Err(e),
    }
}

/// Creates a regular file of `size` bytes, all holes. An existing file is
/// replaced, not truncated: truncating would change every other hard link to
/// it, and fails on a read-only file the user may still delete.
fn create_file(path: &Path, size: u64) -> std::io::Result<File> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
    };
    // Into an empty target, the first try succeeds: no stat per file.
    let file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            remove_existing_non_dir(path);
            create()?
        }
        other => other?,
    };
    if size > 0 {
        file.set_len(size)?;
    }
    Ok(file)
}

/// Removes a file or symlink in the way of a link, symlink or special file.
fn remove_existing_non_dir(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.is_dir() {
            let _ = std::fs::remove_file(path);
        }
    }
}
