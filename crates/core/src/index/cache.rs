//! The local index cache: a redb database mapping blob id -> location.
//!
//! It is derived from the repository's index files and is never the only copy
//! of anything: on open it loads index files it has not seen, and if an index
//! file it loaded is gone (prune, repair) or the database is damaged, it is
//! rebuilt from scratch. Lookups go to disk through redb's bounded page cache,
//! so memory does not grow with the repository. Several snap processes may
//! share one cache (redb's multi-writer mode).

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::backend::{Backend, ObjectKind};
use crate::compress::Encoding;
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::IndexFile;
use crate::pack::{BlobKind, PackEntry};

/// blob id (32 bytes) -> [`encode_location`] (46 bytes).
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
/// pack id -> size (u64 LE) and kind (u8).
const PACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("packs");
/// index file id -> number of packs it lists.
const INDEX_FILES: TableDefinition<&[u8], u64> = TableDefinition::new("index_files");
/// "repository" -> repository id; "schema" -> cache schema version.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

const SCHEMA: &str = "1";
/// redb's page cache; bounds the memory the index costs whatever its size.
const CACHE_BYTES: usize = 16 << 20;
/// Index files decoded per write transaction while syncing.
const SYNC_BATCH: usize = 64;
/// How often one sync lists again for index files removed while it read
/// them (each time, another process replaced files meanwhile).
const SYNC_ROUNDS: usize = 4;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub entry: PackEntry,
}

fn encode_location(pack: &PackId, e: &PackEntry) -> [u8; 46] {
    let mut out = [0u8; 46];
    out[..32].copy_from_slice(&pack.0);
    out[32..36].copy_from_slice(&e.offset.to_le_bytes());
    out[36..40].copy_from_slice(&e.length.to_le_bytes());
    out[40..44].copy_from_slice(&e.raw_length.to_le_bytes());
    out[44] = match e.kind {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    };
    out[45] = match e.encoding {
        Encoding::Raw => 0,
        Encoding::Zstd => 1,
    };
    out
}

fn decode_location(id: &BlobId, v: &[u8]) -> Option<BlobLocation> {
    if v.len() != 46 {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().expect("4 bytes"));
    Some(BlobLocation {
        pack: PackId(v[..32].try_into().ok()?),
        entry: PackEntry {
            kind: match v[44] {
                0 => BlobKind::Data,
                1 => BlobKind::Tree,
                _ => return None,
            },
            id: *id,
            offset: u32_at(32),
            length: u32_at(36),
            raw_length: u32_at(40),
            encoding: match v[45] {
                0 => Encoding::Raw,
                1 => Encoding::Zstd,
                _ => return None,
            },
        },
    })
}

/// Creates the cache file, if missing, with mode 0600 (redb would use 0644),
/// and takes group and other access away from one made by an older snap.
/// An empty file is fine: redb initialises it as a new database.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mode = file.metadata().map_err(|e| Error::io(path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// What a sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncStats {
    pub index_files_loaded: usize,
    pub rebuilt: bool,
    /// Index files that could not be read or decoded, with why.
    pub damaged: Vec<(IndexId, String)>,
}

enum OpenError {
    /// The file is not a usable cache for this repository: replace it.
    Damaged(String),
    /// Anything else (locking, I/O): report it.
    Other(String),
}

impl OpenError {
    fn into_error(self, path: &Path) -> Error {
        let (OpenError::Damaged(reason) | OpenError::Other(reason)) = self;
        Error::Cache {
            path: path.to_path_buf(),
            reason,
        }
    }
}

pub struct IndexCache {
    /// Shared with the renewing readers ([`IndexCache::renewing_reader`]).
    db: std::sync::Arc<Database>,
    /// The read snapshot this process's renewing readers share; dropped
    /// when this process writes ([`IndexCache::begin_write`]).
    view: std::sync::Arc<SharedView>,
    path: PathBuf,
    /// The temporary directory holding the cache when the persistent one
    /// could not be used; removed when the cache is dropped (after `db`,
    /// fields drop in order).
    _temporary: Option<tempfile::TempDir>,
}

/// A cache file with at least this many bytes of free pages, and more
/// free than used, is compacted when the last user closes it.
const COMPACT_MIN_FREE: u64 = 8 << 20;

impl Drop for IndexCache {
    /// Compacts a file mostly made of free pages. redb reuses a page a
    /// commit freed only after a later commit, once no reader sees it; with
    /// random blob ids every index write copies most of the table, so a
    /// backup leaves a file about three times the size of what it holds
    /// (37 MB of which 13 used after a first backup of 100k files), and
    /// never gives the free pages back. Only the last user can compact
    /// (redb needs the database to itself, readers included), and only
    /// when no other process reads it; otherwise it is left for next time.
    fn drop(&mut self) {
        if std::thread::panicking() || self._temporary.is_some() {
            return;
        }
        self.view.drop_snapshot();
        let Some(db) = std::sync::Arc::get_mut(&mut self.db) else {
            return;
        };
        if let Err(e) = compact_if_sparse(db, &self.path) {
            tracing::debug!("not compacting the index cache {}: {e}", self.path.display());
        }
    }
}

/// Inserts `key` -> `value` into `table`, unless `look_first` and the table
/// already holds exactly that (see [`IndexCache::write_files`]).
fn insert_unless_held(
    table: &mut redb::Table<&[u8], &[u8]>,
    key: &[u8],
    value: &[u8],
    look_first: bool,
) -> std::result::Result<(), redb::StorageError> {
    if look_first && table.get(key)?.is_some_and(|v| v.value() == value) {
        return Ok(());
    }
    table.insert(key, value)?;
    Ok(())
}

fn compact_if_sparse(db: &mut Database, path: &Path) -> std::result::Result<(), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len < COMPACT_MIN_FREE {
        return Ok(());
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let stats = txn.stats().map_err(|e| e.to_string())?;
    txn.abort().map_err(|e| e.to_string())?;
    let used = stats.allocated_pages() * stats.page_size() as u64;
    let free = len.saturating_sub(used);
    if free < COMPACT_MIN_FREE || free < used {
        return Ok(());
    }
    let start = std::time::Instant::now();
    match db.compact() {
        Ok(_) => {
            let after = std::fs::metadata(path).map_or(0, |m| m.len());
            tracing::debug!(before = len, after, took = ?start.elapsed(), "index cache compacted");
            Ok(())
        }
        // Another process reads it: a later close compacts.
        Err(redb::CompactionError::TransactionInProgress) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexCache").field("path", &self.path).finish()
    }
}

impl IndexCache {
    /// Opens (or creates) the cache for repository `repo_id` at `path`. A
    /// damaged file, or one made for another repository, is replaced.
    pub fn open(path: &Path, repo_id: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            // The cache lists every blob id and pack of the repository:
            // private to its user, like the repository itself.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, e))?;
        }
        create_private(path)?;
        match Self::open_file(path, repo_id) {
            Ok(cache) => Ok(cache),
            // Only a file known to be bad is replaced: another snap process may
            // have a healthy cache open, and a passing I/O error is no reason to
            // throw the cache away.
            Err(OpenError::Damaged(reason)) => {
                tracing::warn!("rebuilding the index cache {}: {reason}", path.display());
                std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
                create_private(path)?;
                Self::open_file(path, repo_id).map_err(|e| e.into_error(path))
            }
            Err(e) => Err(e.into_error(path)),
        }
    }

    /// [`IndexCache::open`], falling back to a cache in a new temporary
    /// directory when the one at `path` cannot be used (a read-only or full
    /// home, a file where the directory should be): the cache is derived
    /// data, and no command, restore least of all, should fail for want of
    /// it. The caller gets the reason to warn about once.
    pub fn open_or_temporary(path: &Path, repo_id: &str) -> Result<(Self, Option<Error>)> {
        let error = match Self::open(path, repo_id) {
            Ok(cache) => return Ok((cache, None)),
            Err(e) => e,
        };
        let dir = tempfile::Builder::new()
            .prefix("snap-cache-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let mut cache = Self::open(&dir.path().join("index.redb"), repo_id)?;
        cache._temporary = Some(dir);
        Ok((cache, Some(error)))
    }

    fn open_file(path: &Path, repo_id: &str) -> Result<Self, OpenError> {
        // redb documents that a plain open of a damaged file may panic; a
        // damaged cache must cost a rebuild, never the backup.
        let db = std::panic::catch_unwind(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_concurrency_mode(ConcurrencyMode::MultiWriter)
                .create(path)
        })
        .map_err(|_| OpenError::Damaged("opening it panicked".into()))?
        .map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Io(ref io))
                if io.kind() == std::io::ErrorKind::InvalidData =>
            {
                OpenError::Damaged(e.to_string())
            }
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch
            | redb::DatabaseError::Storage(redb::StorageError::Io(_)) => OpenError::Other(e.to_string()),
            e => OpenError::Damaged(e.to_string()),
        })?;
        let other = |e: &dyn std::fmt::Display| OpenError::Other(e.to_string());
        let cache = IndexCache {
            db: std::sync::Arc::new(db),
            view: std::sync::Arc::default(),
            path: path.to_path_buf(),
            _temporary: None,
        };
        let txn = cache.begin_write().map_err(|e| other(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| OpenError::Damaged(e.to_string()))?;
            let stored_repo = meta
                .get("repository")
                .map_err(|e| other(&e))?
                .map(|v| v.value().to_string());
            let stored_schema = meta
                .get("schema")
                .map_err(|e| other(&e))?
                .map(|v| v.value().to_string());
            match (stored_repo.as_deref(), stored_schema.as_deref()) {
                (Some(r), Some(SCHEMA)) if r == repo_id => {}
                (None, None) => {
                    meta.insert("repository", repo_id).map_err(|e| other(&e))?;
                    meta.insert("schema", SCHEMA).map_err(|e| other(&e))?;
                }
                _ => return Err(OpenError::Damaged("made for another repository or cache schema".into())),
            }
            txn.open_table(BLOBS).map_err(|e| OpenError::Damaged(e.to_string()))?;
            txn.open_table(PACKS).map_err(|e| OpenError::Damaged(e.to_string()))?;
            txn.open_table(INDEX_FILES)
                .map_err(|e| OpenError::Damaged(e.to_string()))?;
        }
        txn.commit().map_err(|e| other(&e))?;
        Ok(cache)
    }

    /// The directory holding the cache in use (a temporary one after
    /// [`IndexCache::open_or_temporary`] fell back): commands put their
    /// scratch files there.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Begins a write transaction, first dropping the snapshot the renewing
    /// readers share: redb reuses a page freed by a commit only once no read
    /// transaction can still see it, and a snapshot kept across this
    /// process's own commits pinned every page they replaced (the cache
    /// file of a first backup of 100k files held 135 of its 144 MB as freed
    /// pages). Lookups under way keep the snapshot they hold; the next
    /// lookup opens a new one.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.view.drop_snapshot();
        self.db.begin_write().map_err(|e| self.err(e))
    }

    /// Commits a write transaction of [`IndexCache::begin_write`]. The
    /// shared snapshot is dropped again afterwards: one opened while the
    /// transaction ran does not show what it wrote, and a lookup that starts
    /// once this returns must (the packer forgets the blobs it indexed,
    /// trusting the index to answer for them).
    fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        txn.commit().map_err(|e| self.err(e))?;
        self.view.drop_snapshot();
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Cache {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Brings the cache up to date with the repository's index files.
    ///
    /// Other processes share the cache and change the repository meanwhile:
    /// a backup replaces its small index files by a merged one (stored
    /// first, recorded here, then the small ones deleted), prune deletes
    /// what it rewrote. A file listed but gone when read was superseded by
    /// one a new listing shows, so the sync lists again until every listed
    /// file was read.
    pub fn sync(&self, backend: &dyn Backend, crypto: &Crypto) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        for _ in 0..SYNC_ROUNDS {
            if !self.sync_round(backend, crypto, &mut stats)? {
                break;
            }
        }
        Ok(stats)
    }

    /// One listing and the loads it calls for. Returns whether a listed
    /// file vanished before it was read.
    fn sync_round(&self, backend: &dyn Backend, crypto: &Crypto, stats: &mut SyncStats) -> Result<bool> {
        let mut listed: HashSet<IndexId> = super::list_ids(backend)?.into_iter().collect();
        let known = self.known_index_files()?;
        let rebuild = known.iter().any(|id| !listed.contains(id));
        // A rebuild clears and reloads in one transaction: other processes
        // sharing the cache see the old index or the new one, never an empty
        // or partial one (which would make them report blobs as lost). It
        // lists again inside the transaction: a listing from before it began
        // may predate a merged file another process recorded meanwhile, and
        // clearing would drop that record with nothing to replace it.
        let (known, rebuild) = if rebuild {
            let txn = self.begin_write()?;
            self.clear_in(&txn)?;
            listed = super::list_ids(backend)?.into_iter().collect();
            stats.rebuilt = true;
            (HashSet::new(), Some(txn))
        } else {
            (known, None)
        };
        let mut missing: Vec<IndexId> = listed.into_iter().filter(|id| !known.contains(id)).collect();
        missing.sort();
        let mut vanished = false;
        for batch in missing.chunks(SYNC_BATCH) {
            // `None`: listed, but gone by the time it was read.
            let results: Vec<(IndexId, Result<Option<IndexFile>>)> = batch
                .par_iter()
                .map(|id| {
                    let loaded = match backend.read(ObjectKind::Index, &id.to_hex()) {
                        Ok(bytes) => IndexFile::decode(crypto, id, &bytes).map(Some),
                        Err(e) if e.is_not_found() => Ok(None),
                        Err(e) => Err(e.into()),
                    };
                    (*id, loaded)
                })
                .collect();
            let mut files = Vec::with_capacity(results.len());
            for (id, loaded) in results {
                match loaded {
                    Ok(Some(file)) => files.push((id, file)),
                    Ok(None) => {
                        tracing::debug!("index file {id} was removed while the index was read");
                        vanished = true;
                    }
                    // Left unrecorded, so the next sync tries it again; `verify`
                    // reports it and `repair index` replaces it.
                    Err(e) => {
                        tracing::warn!("skipping index file {id}: {e}");
                        stats.damaged.push((id, e.to_string()));
                    }
                }
            }
            match &rebuild {
                Some(txn) => self.write_files(txn, &files)?,
                None => self.insert(&files)?,
            }
            stats.index_files_loaded += files.len();
        }
        if let Some(txn) = rebuild {
            self.commit(txn)?;
        }
        Ok(vanished)
    }

    fn known_index_files(&self) -> Result<HashSet<IndexId>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        let mut out = HashSet::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, _) = row.map_err(|e| self.err(e))?;
            if let Ok(bytes) = <[u8; 32]>::try_from(k.value()) {
                out.insert(IndexId(bytes));
            }
        }
        Ok(out)
    }

    fn clear_in(&self, txn: &redb::WriteTransaction) -> Result<()> {
        for name in [BLOBS, PACKS] {
            txn.delete_table(name).map_err(|e| self.err(e))?;
            txn.open_table(name).map_err(|e| self.err(e))?;
        }
        txn.delete_table(INDEX_FILES).map_err(|e| self.err(e))?;
        txn.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records index files (already stored in the repository) in one transaction.
    pub fn insert(&self, files: &[(IndexId, IndexFile)]) -> Result<()> {
        let txn = self.begin_write()?;
        self.write_files(&txn, files)?;
        self.commit(txn)
    }

    /// Records index files that replace `removed` (which list nothing the
    /// new files do not), in one transaction: the cache stays valid when
    /// `removed` disappear from the repository, so it is not rebuilt.
    pub fn replace_index_files(&self, removed: &[IndexId], files: &[(IndexId, IndexFile)]) -> Result<()> {
        let txn = self.begin_write()?;
        self.write_files(&txn, files)?;
        {
            let mut index_files = txn.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
            for id in removed {
                index_files.remove(&id.0[..]).map_err(|e| self.err(e))?;
            }
        }
        self.commit(txn)
    }

    fn write_files(&self, txn: &redb::WriteTransaction, files: &[(IndexId, IndexFile)]) -> Result<()> {
        {
            let mut blobs = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
            let mut packs = txn.open_table(PACKS).map_err(|e| self.err(e))?;
            let mut index_files = txn.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
            for (id, file) in files {
                // An entry already there as it is is not written again:
                // redb would copy every leaf it touches, and with random blob
                // ids that is most of the table. Only a merged index file
                // (one that supersedes others) lists entries the cache is
                // likely to hold: what the files it replaces listed. For any
                // other file the lookup first would be a wasted search.
                let merged = !file.supersedes.is_empty();
                for pack in &file.packs {
                    let mut pack_value = [0u8; 9];
                    pack_value[..8].copy_from_slice(&pack.size.to_le_bytes());
                    pack_value[8] = matches!(pack.kind, BlobKind::Tree) as u8;
                    insert_unless_held(&mut packs, &pack.id.0, &pack_value, merged).map_err(|e| self.err(e))?;
                    for entry in &pack.blobs {
                        let location = encode_location(&pack.id, entry);
                        insert_unless_held(&mut blobs, &entry.id.0, &location, merged).map_err(|e| self.err(e))?;
                    }
                }
                index_files
                    .insert(&id.0[..], file.packs.len() as u64)
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Where `id` is stored, if it is indexed.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        self.reader()?.lookup(id)
    }

    /// Opens a reader for many lookups in one read transaction.
    pub fn reader(&self) -> Result<IndexReader> {
        Ok(IndexReader {
            source: Source::Fixed(std::sync::Arc::new(self.blob_table()?)),
            path: self.path.clone(),
        })
    }

    /// A reader for a long run of lookups while this process also writes
    /// (a backup). redb cannot reuse a page that a live read transaction
    /// may see, so the reader must not keep one across this process's
    /// writes: all renewing readers of a cache share one snapshot, which
    /// every write transaction of this process drops first and the next
    /// lookup replaces (at most [`RENEW_READER`] old, so that other
    /// processes' commits are seen and not pinned either). Before, a reader
    /// held for a whole first backup (the archiver's, which looks nothing up
    /// without a parent) kept its snapshot from the start: the cache file
    /// grew to about ten times the index it holds. The newer view only adds
    /// blobs: nothing removes index entries while a backup holds its shared
    /// lock.
    pub fn renewing_reader(&self) -> Result<IndexReader> {
        Ok(IndexReader {
            source: Source::Shared {
                db: self.db.clone(),
                view: self.view.clone(),
            },
            path: self.path.clone(),
        })
    }

    fn blob_table(&self) -> Result<BlobTable> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        txn.open_table(BLOBS).map_err(|e| self.err(e))
    }

    pub fn blob_count(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(BLOBS).map_err(|e| self.err(e))?;
        table.len().map_err(|e| self.err(e))
    }

    /// Every indexed pack with its size and kind.
    pub fn packs(&self) -> Result<Vec<(PackId, u64, BlobKind)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(PACKS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (k, v) = (k.value(), v.value());
            if k.len() != 32 || v.len() != 9 {
                return Err(self.err("damaged pack entry"));
            }
            let size = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
            let kind = if v[8] == 1 { BlobKind::Tree } else { BlobKind::Data };
            out.push((PackId(k.try_into().expect("32 bytes")), size, kind));
        }
        Ok(out)
    }
}

type BlobTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// How long a renewing reader keeps one read transaction.
const RENEW_READER: std::time::Duration = std::time::Duration::from_millis(250);

/// The read snapshot shared by a cache's renewing readers: `None` until a
/// lookup needs one, and again after each write transaction of this process
/// began.
#[derive(Default)]
struct SharedView {
    current: std::sync::RwLock<Option<View>>,
}

struct View {
    table: std::sync::Arc<BlobTable>,
    opened: std::time::Instant,
}

impl SharedView {
    fn drop_snapshot(&self) {
        let old = self.current.write().expect("index view lock").take();
        // The read transaction ends here (or when the last lookup under
        // way lets go of it), outside the lock.
        drop(old);
    }

    /// The current snapshot, opening a new one when there is none or it is
    /// older than [`RENEW_READER`].
    fn table(&self, db: &Database) -> std::result::Result<std::sync::Arc<BlobTable>, String> {
        let fresh = |v: &Option<View>| {
            v.as_ref()
                .filter(|v| v.opened.elapsed() < RENEW_READER)
                .map(|v| v.table.clone())
        };
        if let Some(table) = fresh(&self.current.read().expect("index view lock")) {
            return Ok(table);
        }
        let mut slot = self.current.write().expect("index view lock");
        // Another lookup may have renewed it while this one waited.
        if let Some(table) = fresh(&slot) {
            return Ok(table);
        }
        // The old snapshot goes before the new one is opened.
        *slot = None;
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let table = std::sync::Arc::new(txn.open_table(BLOBS).map_err(|e| e.to_string())?);
        *slot = Some(View {
            table: table.clone(),
            opened: std::time::Instant::now(),
        });
        Ok(table)
    }
}

/// Lookups on the blob table: in one read transaction, or in the snapshot
/// the cache's renewing readers share.
pub struct IndexReader {
    source: Source,
    path: PathBuf,
}

enum Source {
    Fixed(std::sync::Arc<BlobTable>),
    Shared {
        db: std::sync::Arc<Database>,
        view: std::sync::Arc<SharedView>,
    },
}

impl IndexReader {
    fn current(&self) -> Result<std::sync::Arc<BlobTable>> {
        match &self.source {
            Source::Fixed(table) => Ok(table.clone()),
            Source::Shared { db, view } => view.table(db).map_err(|reason| Error::Cache {
                path: self.path.clone(),
                reason,
            }),
        }
    }

    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let err = |e: &dyn std::fmt::Display| Error::Cache {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let table = self.current()?;
        match table.get(&id.0[..]).map_err(|e| err(&e))? {
            None => Ok(None),
            Some(v) => decode_location(id, v.value())
                .map(Some)
                .ok_or_else(|| err(&format!("entry for blob {id} is damaged"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::crypto::{Encryption, MasterKey};
    use crate::index::IndexedPack;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entry(id: [u8; 32], offset: u32) -> PackEntry {
        PackEntry {
            kind: BlobKind::Data,
            id: BlobId(id),
            offset,
            length: 10,
            raw_length: 20,
            encoding: Encoding::Zstd,
        }
    }

    fn store(backend: &LocalBackend, crypto: &Crypto, file: &IndexFile) -> IndexId {
        let bytes = file.encode(crypto);
        let id = IndexId::hash_of(&bytes);
        backend.write(ObjectKind::Index, &id.to_hex(), &bytes).unwrap();
        id
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// The cache answers exactly like a BTreeMap model of the index files.
        #[test]
        fn cache_matches_model(packs in proptest::collection::vec(proptest::collection::vec(any::<[u8; 32]>(), 0..20), 1..6)) {
            let dir = tempfile::tempdir().unwrap();
            let backend = LocalBackend::new(dir.path().join("repo"));
            backend.create().unwrap();
            let crypto = Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305);
            let mut model = BTreeMap::new();
            let mut ids = Vec::new();
            for (n, blobs) in packs.iter().enumerate() {
                let pack_id = PackId([n as u8; 32]);
                let entries: Vec<_> = blobs.iter().enumerate().map(|(i, b)| entry(*b, i as u32 * 10)).collect();
                for e in &entries {
                    model.entry(e.id).or_insert((pack_id, *e));
                }
                ids.push(store(&backend, &crypto, &IndexFile {
                    packs: vec![IndexedPack { id: pack_id, kind: BlobKind::Data, size: 1000, blobs: entries }],
                    supersedes: vec![],
                }));
            }
            let cache = IndexCache::open(&dir.path().join("cache/index.redb"), "repo").unwrap();
            let stats = cache.sync(&backend, &crypto).unwrap();
            prop_assert_eq!(stats.index_files_loaded, packs.len());
            prop_assert_eq!(cache.blob_count().unwrap() as usize, model.len());
            for (id, (_, e)) in &model {
                let found = cache.lookup(id).unwrap().unwrap();
                // A blob in several packs may be found in any of them.
                prop_assert_eq!(found.entry.id, e.id);
            }
            prop_assert!(cache.lookup(&BlobId([0xee; 32])).unwrap().is_none() || model.contains_key(&BlobId([0xee; 32])));

            // Removing an index file makes the next sync rebuild without it.
            backend.delete(ObjectKind::Index, &ids[0].to_hex()).unwrap();
            let stats = cache.sync(&backend, &crypto).unwrap();
            prop_assert!(stats.rebuilt);
            prop_assert_eq!(stats.index_files_loaded, packs.len() - 1);
            prop_assert_eq!(cache.sync(&backend, &crypto).unwrap().index_files_loaded, 0);
        }
    }

    #[test]
    fn damaged_cache_file_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        std::fs::write(&path, b"this is not a redb database at all").unwrap();
        let cache = IndexCache::open(&path, "repo").unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
        drop(cache);
        // Another repository's cache is replaced too.
        let cache = IndexCache::open(&path, "other").unwrap();
        assert_eq!(cache.blob_count().unwrap(), 0);
    }

    /// A backup's index writes must reuse the pages they free: the file
    /// stays near the size of a cache built in one go from the same index
    /// files, though a renewing reader (the archiver's, which makes no
    /// lookup in a first backup) lives through them all. Before the fix the
    /// reader's first snapshot pinned every replaced page and the file grew
    /// with every index file written.
    #[test]
    fn index_writes_under_a_renewing_reader_reuse_freed_pages() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let crypto = Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305);
        // Blob ids are hashes: spread over the key space like real ones.
        let id = |n: u8, i: u32| *blake3::hash(&[&[n][..], &i.to_le_bytes()].concat()).as_bytes();
        let files: Vec<(IndexId, IndexFile)> = (0..24u8)
            .map(|n| {
                let blobs = (0..1500).map(|i| entry(id(n, i), i * 10)).collect();
                let file = IndexFile {
                    packs: vec![IndexedPack {
                        id: PackId([n; 32]),
                        kind: BlobKind::Data,
                        size: 1 << 24,
                        blobs,
                    }],
                    supersedes: vec![],
                };
                (store(&backend, &crypto, &file), file)
            })
            .collect();

        let path = dir.path().join("cache/index.redb");
        let cache = IndexCache::open(&path, "repo").unwrap();
        let reader = cache.renewing_reader().unwrap();
        let first = files[0].1.packs[0].blobs[0].id;
        assert!(reader.lookup(&first).unwrap().is_none());
        for file in &files {
            cache.insert(std::slice::from_ref(file)).unwrap();
        }
        // The reader sees what was written since.
        assert!(reader.lookup(&first).unwrap().is_some());
        let live = std::fs::metadata(&path).unwrap().len();
        drop(reader);
        drop(cache);
        let grown = std::fs::metadata(&path).unwrap().len();

        let fresh_path = dir.path().join("fresh/index.redb");
        let fresh = IndexCache::open(&fresh_path, "repo").unwrap();
        fresh.sync(&backend, &crypto).unwrap();
        assert_eq!(fresh.blob_count().unwrap(), 24 * 1500);
        drop(fresh);
        let built = std::fs::metadata(&fresh_path).unwrap().len();
        eprintln!("written under a reader: {live} bytes, {grown} once closed; built at once: {built}");
        assert!(
            live <= 5 * built,
            "cache written under a reader is {live} bytes, one built at once {built}"
        );
        // Closing compacts it.
        assert!(
            grown <= built + built / 2,
            "closed cache is {grown} bytes, one built at once {built}"
        );
        let cache = IndexCache::open(&path, "repo").unwrap();
        assert_eq!(cache.blob_count().unwrap(), 24 * 1500);
        assert!(cache.lookup(&first).unwrap().is_some());
    }

    /// Storage that, after its first listing of index files, lets another
    /// process act (merge index files) before the listing reaches the caller.
    struct MergeAfterList {
        inner: LocalBackend,
        after_first_list: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl std::fmt::Debug for MergeAfterList {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("MergeAfterList")
        }
    }

    impl Backend for MergeAfterList {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> crate::backend::BackendResult<()> {
            self.inner.create()
        }
        fn read(&self, kind: ObjectKind, name: &str) -> crate::backend::BackendResult<Vec<u8>> {
            self.inner.read(kind, name)
        }
        fn read_range(
            &self,
            kind: ObjectKind,
            name: &str,
            offset: u64,
            len: u64,
        ) -> crate::backend::BackendResult<Vec<u8>> {
            self.inner.read_range(kind, name, offset, len)
        }
        fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> crate::backend::BackendResult<()> {
            self.inner.write(kind, name, data)
        }
        fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> crate::backend::BackendResult<()> {
            self.inner.write_new(kind, name, data)
        }
        fn delete(&self, kind: ObjectKind, name: &str) -> crate::backend::BackendResult<()> {
            self.inner.delete(kind, name)
        }
        fn list(&self, kind: ObjectKind) -> crate::backend::BackendResult<Vec<crate::backend::ObjectInfo>> {
            let listed = self.inner.list(kind)?;
            if let Some(act) = self.after_first_list.lock().unwrap().take() {
                act();
            }
            Ok(listed)
        }
        fn exists(&self, kind: ObjectKind, name: &str) -> crate::backend::BackendResult<bool> {
            self.inner.exists(kind, name)
        }
    }

    /// A sync that must rebuild, whose listing predates another process's
    /// merge (merged file stored and recorded in the shared cache, small
    /// files deleted), must not clear away the merged file's record: before
    /// the fix every blob of the merged file was unknown until the next
    /// sync, and a concurrent backup failed as if a prune had removed them.
    #[test]
    fn a_rebuild_from_a_stale_listing_keeps_a_merge_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let crypto = Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305);
        let local = LocalBackend::new(dir.path().join("repo"));
        local.create().unwrap();
        let file = |n: u8| IndexFile {
            packs: vec![IndexedPack {
                id: PackId([n; 32]),
                kind: BlobKind::Data,
                size: 1000,
                blobs: vec![entry([n; 32], 0)],
            }],
            supersedes: vec![],
        };
        let gone = store(&local, &crypto, &file(1));
        let small = [store(&local, &crypto, &file(2)), store(&local, &crypto, &file(3))];
        let cache = std::sync::Arc::new(IndexCache::open(&dir.path().join("cache/index.redb"), "repo").unwrap());
        cache.sync(&local, &crypto).unwrap();
        // A prune removed `gone`: the next sync rebuilds.
        local.delete(ObjectKind::Index, &gone.to_hex()).unwrap();

        let merged = IndexFile {
            packs: [file(2), file(3)].into_iter().flat_map(|f| f.packs).collect(),
            supersedes: small.to_vec(),
        };
        let backend = MergeAfterList {
            inner: LocalBackend::new(dir.path().join("repo")),
            after_first_list: std::sync::Mutex::new(None),
        };
        let (merger_cache, merger_crypto) = (cache.clone(), crypto.clone());
        let merger_backend = LocalBackend::new(dir.path().join("repo"));
        *backend.after_first_list.lock().unwrap() = Some(Box::new(move || {
            let id = store(&merger_backend, &merger_crypto, &merged);
            merger_cache.replace_index_files(&small, &[(id, merged)]).unwrap();
            for s in &small {
                merger_backend.delete(ObjectKind::Index, &s.to_hex()).unwrap();
            }
        }));
        cache.sync(&backend, &crypto).unwrap();
        for n in [2, 3] {
            assert!(cache.lookup(&BlobId([n; 32])).unwrap().is_some(), "blob {n} lost");
        }
        assert!(cache.lookup(&BlobId([1; 32])).unwrap().is_none());
    }
}
