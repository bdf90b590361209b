//! A read-only filesystem view of snapshots, for `snap webdav` and
//! `snap mount` (crates/mount).
//!
//! The root holds one directory per snapshot, named by its local time and
//! short id (`2026-12-01T10-00-00_ab12cd34`), plus `latest`, the newest of
//! them. Below that are the snapshot's own trees. Nothing is read up front:
//! a lookup or listing loads only the trees on its path, and a read loads
//! only the content blobs that cover the requested range, found by binary
//! search in the file's chunk offsets.
//!
//! Two bounded caches keep what readers come back to: decoded trees (LRU,
//! weighed by their encoded size) and content blobs (LRU by bytes, 64 MiB
//! by default). A reader that goes on where its last read ended is taken
//! to be sequential, and the next blobs are fetched by worker threads while
//! it consumes the current one, so a big file streams near restore speed.
//!
//! Every blob comes through [`Repository::read_blob`], which checks it
//! against its id: a damaged blob is an error for the read that needs it
//! (EIO to a FUSE reader, a failed response to WebDAV), never wrong bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Tree};

/// The name of the root entry that is the newest snapshot.
pub const LATEST: &str = "latest";

/// Bounds of the caches and the read-ahead.
#[derive(Clone, Debug)]
pub struct VfsOptions {
    /// Content blobs kept, in plaintext bytes.
    pub blob_cache_bytes: u64,
    /// Decoded trees kept, weighed by their encoded size in bytes.
    pub tree_cache_bytes: u64,
    /// Blobs fetched ahead of a sequential reader (0: none).
    pub read_ahead: usize,
    /// Worker threads that fetch them.
    pub read_ahead_threads: usize,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            blob_cache_bytes: 64 << 20,
            tree_cache_bytes: 16 << 20,
            read_ahead: 4,
            read_ahead_threads: 2,
        }
    }
}

/// What an entry is backed by.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// The root of the view: the snapshot directories.
    Root,
    /// A directory: a tree blob.
    Tree(BlobId),
    /// A file's content, chunk by chunk.
    File(Arc<Vec<BlobId>>),
    /// Symbolic links and special files: metadata only.
    None,
}

/// One entry of the view, with the metadata a filesystem shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name in its parent directory (empty for the root).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    /// Symbolic links: the target, as recorded.
    pub link_target: Vec<u8>,
    target: Target,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// A tag that changes when the content does (an HTTP ETag): the hash
    /// of the chunk ids of a file, of the tree id of a directory, of the
    /// target of a symlink. The same file in two snapshots has one tag.
    pub fn etag(&self) -> String {
        let mut h = blake3::Hasher::new();
        match &self.target {
            Target::Root => h.update(b"root"),
            Target::Tree(id) => h.update(b"tree").update(&id.0),
            Target::File(content) => {
                h.update(b"file").update(&self.size.to_le_bytes());
                for id in content.iter() {
                    h.update(&id.0);
                }
                &mut h
            }
            Target::None => h.update(b"link").update(&self.link_target),
        };
        hex::encode(&h.finalize().as_bytes()[..12])
    }

    fn synthetic_dir(name: Vec<u8>, mtime_ns: i64, target: Target) -> Entry {
        Entry {
            name,
            kind: NodeKind::Dir,
            size: 0,
            mtime_ns,
            ctime_ns: mtime_ns,
            mode: 0o555,
            uid: 0,
            gid: 0,
            rdev: 0,
            link_target: Vec::new(),
            target,
        }
    }

    fn from_node(node: &Node) -> Entry {
        let target = match node.kind {
            NodeKind::Dir => match node.subtree {
                Some(id) => Target::Tree(id),
                None => Target::None,
            },
            NodeKind::File => Target::File(Arc::new(node.content.clone())),
            _ => Target::None,
        };
        Entry {
            name: node.name.clone(),
            kind: node.kind,
            size: match node.kind {
                NodeKind::File => node.size,
                NodeKind::Symlink => node.link_target.len() as u64,
                _ => 0,
            },
            mtime_ns: node.mtime_ns,
            ctime_ns: node.ctime_ns,
            mode: node.mode & 0o7777,
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev,
            link_target: node.link_target.clone(),
            target,
        }
    }
}

/// A snapshot as a root directory entry.
struct SnapshotDir {
    name: Vec<u8>,
    tree: BlobId,
    mtime_ns: i64,
}

/// The directory name of a snapshot: its local time (`:` is not allowed in
/// Windows file names, which WebDAV clients may be) and short id.
pub fn snapshot_dir_name(id: &SnapshotId, snapshot: &Snapshot) -> String {
    let local = jiff::tz::TimeZone::system().to_datetime(snapshot.time);
    format!("{}_{}", local.strftime("%Y-%m-%dT%H-%M-%S"), id.short())
}

/// The view. Shared between threads (`Arc<Vfs>`): the caches lock inside.
pub struct Vfs {
    shared: Arc<Shared>,
    root_mtime_ns: i64,
    snapshots: Vec<SnapshotDir>,
    latest: Option<usize>,
    ahead: Option<Mutex<mpsc::Sender<BlobId>>>,
    read_ahead: usize,
}

struct Shared {
    repo: Repository,
    blobs: Mutex<Blobs>,
    blob_ready: Condvar,
    trees: Mutex<Lru<Arc<Tree>>>,
    stats: Counters,
}

/// The blob cache and the blobs being fetched right now (by a reader or a
/// read-ahead worker), so one blob is fetched once.
struct Blobs {
    lru: Lru<Arc<Vec<u8>>>,
    in_flight: HashSet<BlobId>,
}

#[derive(Default)]
struct Counters {
    blobs_read: AtomicU64,
    blob_bytes_read: AtomicU64,
    trees_read: AtomicU64,
}

/// What the view has read from the repository so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfsStats {
    pub blobs_read: u64,
    pub blob_bytes_read: u64,
    pub trees_read: u64,
    pub blob_cache_bytes: u64,
}

impl std::fmt::Debug for Vfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vfs({} snapshots)", self.snapshots.len())
    }
}

impl Vfs {
    /// A view of `snapshots` (in any order; `latest` is the newest).
    pub fn new(repo: Repository, snapshots: Vec<(SnapshotId, Snapshot)>, options: VfsOptions) -> Vfs {
        let mut dirs: Vec<SnapshotDir> = snapshots
            .iter()
            .map(|(id, s)| SnapshotDir {
                name: snapshot_dir_name(id, s).into_bytes(),
                tree: s.tree,
                mtime_ns: s.time.as_nanosecond().clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            })
            .collect();
        dirs.sort_by(|a, b| a.name.cmp(&b.name));
        dirs.dedup_by(|a, b| a.name == b.name);
        let latest = snapshots.iter().max_by_key(|(_, s)| s.time).and_then(|(id, s)| {
            let name = snapshot_dir_name(id, s).into_bytes();
            dirs.iter().position(|d| d.name == name)
        });
        let root_mtime_ns = latest.map(|i| dirs[i].mtime_ns).unwrap_or(0);
        let shared = Arc::new(Shared {
            repo,
            blobs: Mutex::new(Blobs {
                lru: Lru::new(options.blob_cache_bytes),
                in_flight: HashSet::new(),
            }),
            blob_ready: Condvar::new(),
            trees: Mutex::new(Lru::new(options.tree_cache_bytes)),
            stats: Counters::default(),
        });
        let ahead = (options.read_ahead > 0 && options.read_ahead_threads > 0).then(|| {
            let (tx, rx) = mpsc::channel::<BlobId>();
            let rx = Arc::new(Mutex::new(rx));
            for n in 0..options.read_ahead_threads {
                let shared = Arc::downgrade(&shared);
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("vfs-read-ahead-{n}"))
                    .spawn(move || loop {
                        let next = rx.lock().expect("read-ahead queue").recv();
                        let Ok(id) = next else { return };
                        let Some(shared) = shared.upgrade() else { return };
                        // A read-ahead failure is not reported here: the
                        // reader that needs the blob reads it and sees it.
                        let _ = shared.blob(&id, true);
                    });
                if let Err(e) = spawned {
                    tracing::debug!("no read-ahead thread: {e}");
                }
            }
            Mutex::new(tx)
        });
        Vfs {
            shared,
            root_mtime_ns,
            snapshots: dirs,
            latest,
            ahead,
            read_ahead: options.read_ahead,
        }
    }

    pub fn repository(&self) -> &Repository {
        &self.shared.repo
    }

    pub fn stats(&self) -> VfsStats {
        let s = &self.shared.stats;
        VfsStats {
            blobs_read: s.blobs_read.load(Ordering::Relaxed),
            blob_bytes_read: s.blob_bytes_read.load(Ordering::Relaxed),
            trees_read: s.trees_read.load(Ordering::Relaxed),
            blob_cache_bytes: self.shared.blobs.lock().expect("blob cache").lru.used,
        }
    }

    /// The root directory.
    pub fn root(&self) -> Entry {
        Entry::synthetic_dir(Vec::new(), self.root_mtime_ns, Target::Root)
    }

    /// The entries of the root: one per snapshot, then `latest`.
    fn root_entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .snapshots
            .iter()
            .map(|d| Entry::synthetic_dir(d.name.clone(), d.mtime_ns, Target::Tree(d.tree)))
            .collect();
        if let Some(i) = self.latest {
            let d = &self.snapshots[i];
            out.push(Entry::synthetic_dir(
                LATEST.as_bytes().to_vec(),
                d.mtime_ns,
                Target::Tree(d.tree),
            ));
        }
        out
    }

    /// The entry `name` in directory `dir`; `None` when there is none (or
    /// `dir` is not a directory).
    pub fn lookup(&self, dir: &Entry, name: &[u8]) -> Result<Option<Entry>> {
        match &dir.target {
            Target::Root => Ok(self.root_entries().into_iter().find(|e| e.name == name)),
            Target::Tree(id) => {
                let tree = self.shared.tree(id)?;
                Ok(tree.find(name).map(Entry::from_node))
            }
            _ => Ok(None),
        }
    }

    /// The entry at `components` from the root (`[]`: the root). Reads only
    /// the trees on the way.
    pub fn lookup_path(&self, components: &[Vec<u8>]) -> Result<Option<Entry>> {
        let mut entry = self.root();
        for name in components {
            match self.lookup(&entry, name)? {
                Some(next) => entry = next,
                None => return Ok(None),
            }
        }
        Ok(Some(entry))
    }

    /// The entries of directory `dir`, sorted by name (the root: snapshots,
    /// then `latest`). Empty for anything that is not a directory.
    pub fn list(&self, dir: &Entry) -> Result<Vec<Entry>> {
        match &dir.target {
            Target::Root => Ok(self.root_entries()),
            Target::Tree(id) => Ok(self.shared.tree(id)?.nodes.iter().map(Entry::from_node).collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// Opens a file for reading: finds where each of its chunks starts
    /// (from the index, without reading them) and checks that they add up
    /// to the file's recorded size.
    pub fn open(&self, file: &Entry) -> Result<OpenFile> {
        let Target::File(content) = &file.target else {
            return Err(Error::InvalidArgument(format!(
                "{} is not a regular file",
                file.name_lossy()
            )));
        };
        let reader = self.shared.repo.index()?.reader()?;
        let mut starts = Vec::with_capacity(content.len() + 1);
        let mut at: u64 = 0;
        for id in content.iter() {
            let location = reader.lookup(id)?.ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
            starts.push(at);
            at += u64::from(location.entry.raw_length);
        }
        starts.push(at);
        if at != file.size {
            return Err(Error::corrupt(
                file.name_lossy(),
                format!("its chunks hold {at} bytes, but its recorded size is {}", file.size),
            ));
        }
        Ok(OpenFile {
            content: content.clone(),
            starts,
            // A first read from the start is sequential too.
            next_offset: AtomicU64::new(0),
        })
    }

    /// Up to `len` bytes of `file` from `offset` (fewer only at its end).
    /// Fetches only the blobs that cover the range.
    pub fn read(&self, file: &OpenFile, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = file.size();
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = size.min(offset.saturating_add(len as u64));
        let sequential = file.next_offset.swap(end, Ordering::Relaxed) == offset;
        let mut out = Vec::with_capacity((end - offset) as usize);
        // The chunk holding `offset`: the last that starts at or before it.
        let mut i = file.starts.partition_point(|&s| s <= offset) - 1;
        let mut at = offset;
        while at < end {
            let id = &file.content[i];
            self.read_ahead_from(file, i + 1, sequential);
            let blob = self.shared.blob(id, false)?;
            let start = file.starts[i];
            let from = (at - start) as usize;
            let to = ((end - start) as usize).min(blob.len());
            if from >= to {
                return Err(Error::corrupt(format!("blob {id}"), "shorter than the index says"));
            }
            out.extend_from_slice(&blob[from..to]);
            at = start + to as u64;
            i += 1;
        }
        Ok(out)
    }

    /// Queues the blobs after chunk `next` for the workers, if the reader
    /// is sequential and they are not cached or being fetched.
    fn read_ahead_from(&self, file: &OpenFile, next: usize, sequential: bool) {
        let Some(ahead) = &self.ahead else { return };
        if !sequential {
            return;
        }
        let upto = (next + self.read_ahead).min(file.content.len());
        let tx = ahead.lock().expect("read-ahead queue");
        let mut blobs = self.shared.blobs.lock().expect("blob cache");
        for id in &file.content[next..upto] {
            if !blobs.lru.contains(id) && blobs.in_flight.insert(*id) && tx.send(*id).is_err() {
                blobs.in_flight.remove(id);
            }
        }
    }
}

impl Shared {
    fn tree(&self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().expect("tree cache").get(id) {
            return Ok(t);
        }
        let bytes = self.repo.read_tree_blob(id)?;
        let tree = Arc::new(Tree::decode(id, &bytes)?);
        self.stats.trees_read.fetch_add(1, Ordering::Relaxed);
        self.trees
            .lock()
            .expect("tree cache")
            .insert(*id, tree.clone(), bytes.len() as u64);
        Ok(tree)
    }

    /// A content blob, from the cache or the repository (checked against
    /// its id there). `claimed`: the caller (a read-ahead worker) already
    /// marked it in flight.
    fn blob(&self, id: &BlobId, claimed: bool) -> Result<Arc<Vec<u8>>> {
        {
            let mut blobs = self.blobs.lock().expect("blob cache");
            if !claimed {
                loop {
                    if let Some(b) = blobs.lru.get(id) {
                        return Ok(b);
                    }
                    if !blobs.in_flight.contains(id) {
                        break;
                    }
                    // Another thread fetches it: wait for that, then look
                    // again (it may have failed, and this reader retries).
                    blobs = self.blob_ready.wait(blobs).expect("blob cache");
                }
                blobs.in_flight.insert(*id);
            }
        }
        let result = self.repo.read_blob(id).map(Arc::new);
        let mut blobs = self.blobs.lock().expect("blob cache");
        blobs.in_flight.remove(id);
        if let Ok(data) = &result {
            self.stats.blobs_read.fetch_add(1, Ordering::Relaxed);
            self.stats
                .blob_bytes_read
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            blobs.lru.insert(*id, data.clone(), data.len() as u64);
        }
        drop(blobs);
        self.blob_ready.notify_all();
        result
    }
}

/// A file opened with [`Vfs::open`]: its chunks and where each starts.
#[derive(Debug)]
pub struct OpenFile {
    content: Arc<Vec<BlobId>>,
    /// `starts[i]`: the offset of chunk `i`; the last is the file's size.
    starts: Vec<u64>,
    /// Where the last read ended: a read from there is sequential.
    next_offset: AtomicU64,
}

impl OpenFile {
    pub fn size(&self) -> u64 {
        *self.starts.last().expect("starts has the end")
    }
}

/// A least-recently-used map bounded by the sum of its values' weights.
/// The most recent entry is always kept, even when it alone is over.
struct Lru<V> {
    map: HashMap<BlobId, (V, u64, u64)>,
    order: BTreeMap<u64, BlobId>,
    tick: u64,
    used: u64,
    limit: u64,
}

impl<V: Clone> Lru<V> {
    fn new(limit: u64) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            used: 0,
            limit,
        }
    }

    fn contains(&self, id: &BlobId) -> bool {
        self.map.contains_key(id)
    }

    fn get(&mut self, id: &BlobId) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, _, t) = self.map.get_mut(id)?;
        self.order.remove(&*t);
        *t = tick;
        self.order.insert(tick, *id);
        Some(v.clone())
    }

    fn insert(&mut self, id: BlobId, value: V, weight: u64) {
        self.tick += 1;
        if let Some((_, w, t)) = self.map.remove(&id) {
            self.order.remove(&t);
            self.used -= w;
        }
        self.map.insert(id, (value, weight, self.tick));
        self.order.insert(self.tick, id);
        self.used += weight;
        while self.used > self.limit && self.map.len() > 1 {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, w, _)) = self.map.remove(&oldest) {
                self.used -= w;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    #[test]
    fn lru_evicts_the_least_recently_used_by_weight() {
        let mut lru = Lru::new(10);
        lru.insert(id(1), 1, 4);
        lru.insert(id(2), 2, 4);
        assert_eq!(lru.get(&id(1)), Some(1));
        lru.insert(id(3), 3, 4);
        assert!(lru.contains(&id(1)));
        assert!(!lru.contains(&id(2)), "2 was least recently used");
        assert!(lru.contains(&id(3)));
        assert_eq!(lru.used, 8);
        // One entry over the limit alone is kept (a reader needs it now).
        lru.insert(id(4), 4, 50);
        assert_eq!(lru.map.len(), 1);
        assert_eq!(lru.get(&id(4)), Some(4));
        assert_eq!(lru.used, 50);
    }
}
