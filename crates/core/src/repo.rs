//! Opening and creating repositories: backend + keys + config + index cache.
//!
//! A [`Repository`] is a cheap-to-clone handle. It reads blobs; writing
//! blobs is the [`crate::packer::Packer`]'s job, and every operation
//! (archiver, restorer, ...) lives in its own module.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backend::cache::CacheBackend;
use crate::backend::{Backend, ObjectKind};
use crate::chunker::{Chunker, ChunkerParams};
use crate::compress::{self, Compression, Encoding};
use crate::config::{Config, ConfigBody};
use crate::crypto::{Crypto, Encryption, MasterKey};
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, KeyId};
use crate::index::cache::{BlobLocation, IndexCache, SyncStats};
use crate::index::{IndexFile, IndexedPack};
use crate::keys::{KdfParams, KeyFile, Password};

/// Choices made once, at `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub encryption: Encryption,
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression: Compression,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::XChaCha20Poly1305,
            kdf: KdfParams::default(),
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            compression: Compression::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Repository {
    /// The storage seen through the object cache (snapshots, index files).
    backend: Arc<dyn Backend>,
    /// The same storage without the cache: what verify and repair judge.
    uncached: Arc<dyn Backend>,
    crypto: Arc<Crypto>,
    config: Arc<Config>,
    chunker: Arc<Chunker>,
    index: Arc<IndexCache>,
    /// Whether `index` is current: it is synced lazily, on first use (see
    /// [`Repository::index`]), and again after every lock is taken.
    index_synced: Arc<IndexSynced>,
    key_id: KeyId,
    /// This repository's directory in the local cache.
    cache_dir: Arc<std::path::PathBuf>,
    /// Where tree blobs read before are kept, sealed again with this
    /// repository's key (`None` on a [`Repository::without_cache`] handle).
    tree_cache: Option<Arc<std::path::PathBuf>>,
}

impl Repository {
    /// Creates a repository in an empty location and opens it.
    /// `password` is `None` only with `Encryption::None`.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: Option<&Password>,
        options: &InitOptions,
        cache_root: &Path,
    ) -> Result<Self> {
        Self::init_with_chunker_key(backend, password, options, None, cache_root)
    }

    /// [`Repository::init`] with the chunker parameters and gear-table key
    /// of `source` (`snap init --from-repo --copy-chunker-params`): a file
    /// backed up into both repositories is cut at the same points, so a
    /// `snap copy` between them stores only the chunks the destination
    /// lacks. The encryption, id and MAC keys stay fresh: sharing the gear
    /// key only lets each repository's owner see the other's cut points,
    /// which they could read from the data anyway.
    pub fn init_sharing_chunker(
        backend: Arc<dyn Backend>,
        password: Option<&Password>,
        options: &InitOptions,
        source: &Repository,
        cache_root: &Path,
    ) -> Result<Self> {
        let options = InitOptions {
            chunker: source.config().chunker,
            ..options.clone()
        };
        let key = source.crypto().master_key().chunker;
        Self::init_with_chunker_key(backend, password, &options, Some(key), cache_root)
    }

    fn init_with_chunker_key(
        backend: Arc<dyn Backend>,
        password: Option<&Password>,
        options: &InitOptions,
        chunker_key: Option<[u8; 32]>,
        cache_root: &Path,
    ) -> Result<Self> {
        options.chunker.validate().map_err(Error::InvalidArgument)?;
        options
            .kdf
            .check()
            .map_err(|reason| Error::InvalidArgument(format!("argon2id parameters: {reason}")))?;
        if password.is_some_and(|p| p.as_bytes().is_empty()) && options.encryption != Encryption::None {
            return Err(Error::InvalidArgument("an empty password is not allowed".into()));
        }
        if let Compression::Zstd(level) = options.compression {
            if !(1..=22).contains(&level) {
                return Err(Error::InvalidArgument(format!("zstd level {level} is not in 1..22")));
            }
        }
        if !(1 << 20..=1 << 30).contains(&options.pack_size) {
            return Err(Error::InvalidArgument(
                "pack size must be between 1 MiB and 1 GiB".into(),
            ));
        }
        if backend.exists(ObjectKind::Config, "config")? {
            return Err(Error::AlreadyExists {
                location: backend.location(),
            });
        }
        // Keys, packs, index files or snapshots without a config are what is
        // left of a repository whose config was lost: a new config (with a
        // new master key) would make all of it unreadable. Locks alone are
        // harmless leftovers and do not count.
        for kind in [
            ObjectKind::Key,
            ObjectKind::Snapshot,
            ObjectKind::Index,
            ObjectKind::Pack,
        ] {
            if !backend.list(kind)?.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{} holds {} objects but no config: it is (part of) a repository, not an empty location; \
                     refusing to create a new repository over it",
                    backend.location(),
                    kind.name()
                )));
            }
        }
        let password = match options.encryption {
            Encryption::XChaCha20Poly1305 => Some(
                password.ok_or_else(|| Error::InvalidArgument("an encrypted repository needs a password".into()))?,
            ),
            Encryption::None => None,
        };
        backend.create()?;
        let mut key = MasterKey::generate();
        if let Some(chunker_key) = chunker_key {
            key.chunker = chunker_key;
        }
        let key_file = KeyFile::create(&key, password, options.kdf)?;
        let key_bytes = key_file.to_bytes();
        let key_id = KeyId::hash_of(&key_bytes);
        backend.write(ObjectKind::Key, &key_id.to_hex(), &key_bytes)?;

        let crypto = Crypto::new(key, options.encryption);
        let mut repo_id = [0u8; 32];
        crate::crypto::fill_random(&mut repo_id);
        let body = ConfigBody {
            version: crate::FORMAT_VERSION,
            id: hex::encode(repo_id),
            encryption: options.encryption,
            chunker: options.chunker,
            pack_size: options.pack_size,
            compression: options.compression,
        };
        // The config is written last: until it exists, the location is not a
        // repository. It is created exclusively: of several `init`s racing on
        // one location exactly one writes it, and the others take back their
        // key file (which wraps a master key no config belongs to) and fail.
        match backend.write_new(ObjectKind::Config, "config", &Config::new(body, &crypto).to_bytes()) {
            Ok(()) => {}
            Err(e) => {
                let _ = backend.delete(ObjectKind::Key, &key_id.to_hex());
                return Err(match e {
                    crate::backend::BackendError::AlreadyExists { .. } => Error::AlreadyExists {
                        location: backend.location(),
                    },
                    e => e.into(),
                });
            }
        }
        let config = read_config(backend.as_ref())?;
        Self::open_with_key(backend, config, crypto, key_id, cache_root)
    }

    /// Opens an existing repository, trying `password` against every key file.
    pub fn open(backend: Arc<dyn Backend>, password: Option<&Password>, cache_root: &Path) -> Result<Self> {
        let config = read_config(backend.as_ref())?;
        Self::open_config(backend, config, password, cache_root)
    }

    /// Opens the repository at `backend`, or creates it with `create`'s
    /// options when the location holds none (and `create` is given). The
    /// caller is asked for a password only when one is needed: an existing
    /// encrypted repository's, or a new one for a new encrypted repository.
    /// What every frontend would otherwise repeat: read the config first,
    /// to know whether to ask at all.
    pub fn open_or_init<E>(
        backend: Arc<dyn Backend>,
        cache_root: &Path,
        create: Option<&InitOptions>,
        password: impl FnOnce(PasswordRequest) -> std::result::Result<Password, E>,
    ) -> std::result::Result<Opened, OpenFailure<E>> {
        let config = match read_config(backend.as_ref()) {
            Ok(config) => config,
            Err(e @ Error::NotARepository { .. }) => {
                let Some(options) = create else {
                    return Err(OpenFailure::Config(e));
                };
                let password = match options.encryption {
                    Encryption::None => None,
                    Encryption::XChaCha20Poly1305 => {
                        Some(password(PasswordRequest::New).map_err(OpenFailure::Password)?)
                    }
                };
                return Self::init(backend, password.as_ref(), options, cache_root)
                    .map(Opened::Created)
                    .map_err(OpenFailure::Init);
            }
            Err(e) => return Err(OpenFailure::Config(e)),
        };
        let password = match config.body.encryption {
            Encryption::None => None,
            Encryption::XChaCha20Poly1305 => Some(password(PasswordRequest::Existing).map_err(OpenFailure::Password)?),
        };
        Self::open_config(backend, config, password.as_ref(), cache_root)
            .map(Opened::Existing)
            .map_err(OpenFailure::Open)
    }

    fn open_config(
        backend: Arc<dyn Backend>,
        config: Config,
        password: Option<&Password>,
        cache_root: &Path,
    ) -> Result<Self> {
        let mut keys = backend.list(ObjectKind::Key)?;
        if keys.is_empty() {
            return Err(Error::corrupt("repository", "it has no key files"));
        }
        // Newest first is as good as any order; sorting keeps it deterministic.
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        let mut last_err = Error::WrongPassword;
        for info in keys {
            // A key file is small; a huge one is hostile or damaged, and is
            // not read into memory.
            if info.size > crate::keys::bounds::MAX_KEY_FILE {
                let e = Error::corrupt(
                    format!("key file {}", info.name),
                    format!("it has {} bytes, more than a key file can have", info.size),
                );
                tracing::warn!("{e}; skipped");
                last_err = e;
                continue;
            }
            let bytes = backend.read(ObjectKind::Key, &info.name)?;
            // A key file that cannot be used (damaged, too new, or with
            // kdf parameters outside the bounds) is reported and skipped:
            // anyone who can write to `keys/` could otherwise lock every
            // user out, or make every command hang.
            let file = match KeyFile::from_bytes(&bytes, &info.name) {
                Ok(file) => file,
                Err(e) => {
                    tracing::warn!("{e}; skipped");
                    last_err = e;
                    continue;
                }
            };
            if let Err(e) = config.body.check_key_kdf(file.is_encrypted(), &info.name) {
                tracing::warn!("{e}; skipped");
                last_err = e;
                continue;
            }
            if file.is_encrypted() && password.is_none() {
                continue;
            }
            match file.unlock(password, &info.name) {
                Ok(key) => {
                    let crypto = Crypto::new(key, config.body.encryption);
                    // A key that opens but does not authenticate the config
                    // wraps another master key: left by an `init` that lost
                    // a race, or planted. Another key file may still be right.
                    if let Err(e) = config.verify(&crypto) {
                        tracing::warn!(
                            "skipping key file {}: it does not belong to this config ({e})",
                            info.name
                        );
                        last_err = e;
                        continue;
                    }
                    let key_id = KeyId::from_hex(&info.name)
                        .map_err(|e| Error::corrupt(format!("key file {}", info.name), e))?;
                    return Self::open_with_key(backend, config, crypto, key_id, cache_root);
                }
                Err(Error::WrongPassword) => {}
                Err(e) => {
                    tracing::warn!("{e}; skipped");
                    last_err = e;
                }
            }
        }
        if password.is_none() && config.body.encryption != Encryption::None {
            return Err(Error::InvalidArgument(
                "the repository is encrypted and no password was given (use --password-file, SNAP_PASSWORD_FILE, SNAP_PASSWORD_COMMAND or SNAP_PASSWORD)".into(),
            ));
        }
        Err(last_err)
    }

    fn open_with_key(
        backend: Arc<dyn Backend>,
        config: Config,
        crypto: Crypto,
        key_id: KeyId,
        cache_root: &Path,
    ) -> Result<Self> {
        config.verify(&crypto)?;
        let cache_path = cache_root.join(&config.body.id).join("index.redb");
        let (index, fallback) = IndexCache::open_or_temporary(&cache_path, &config.body.id)?;
        if let Some(e) = fallback {
            tracing::warn!("{e}; using a temporary index cache instead (slower: it is rebuilt every time)");
        }
        // Local hints (damaged packs) live beside the cache in use.
        let cache_dir = index.dir().to_path_buf();
        // Immutable objects are kept beside the index cache, so that a
        // command on a remote repository reads each snapshot once per
        // machine (backend::cache).
        let uncached = backend;
        let backend: Arc<dyn Backend> = Arc::new(CacheBackend::new(uncached.clone(), cache_dir.join("objects")));
        // The index cache is not synced here: commands that never look up a
        // blob (snapshots, forget, key, unlock) then cost no index reads.
        let chunker = Chunker::new(config.body.chunker, &crypto.master_key().chunker);
        Ok(Repository {
            backend,
            uncached,
            crypto: Arc::new(crypto),
            config: Arc::new(config),
            chunker: Arc::new(chunker),
            index: Arc::new(index),
            index_synced: Arc::default(),
            key_id,
            tree_cache: Some(Arc::new(cache_dir.join("trees"))),
            cache_dir: Arc::new(cache_dir),
        })
    }

    /// The storage. Private to the engine: a frontend reaches objects only
    /// through the typed operations (snapshot, tree, keyring, lock, ...).
    pub(crate) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Where the repository is, for messages (`/srv/backup`, `s3:...`).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Takes a repository lock, waiting up to `wait` for conflicting holders,
    /// and syncs the index cache under it. A lost lock sets `cancel`, so the
    /// operation stops as an interruption would. The guard is the proof the
    /// writing operations ask for: the index it was taken with is current.
    pub fn lock(
        &self,
        kind: crate::lock::LockKind,
        operation: &str,
        wait: std::time::Duration,
        cancel: &'static std::sync::atomic::AtomicBool,
    ) -> Result<crate::lock::LockGuard> {
        crate::lock::lock(self, kind, operation, wait, cancel)
    }

    /// A shared lock for operations that only read; `None` on a read-only
    /// repository (where no lock can be written), which they read without one.
    pub fn read_lock(
        &self,
        operation: &str,
        wait: std::time::Duration,
        cancel: &'static std::sync::atomic::AtomicBool,
    ) -> Result<Option<crate::lock::LockGuard>> {
        crate::lock::read_lock(self, operation, wait, cancel)
    }

    /// The storage itself, past the object cache: what locks are written
    /// to and compared by (the same for a [`Repository::without_cache`] handle).
    pub(crate) fn storage_arc(&self) -> Arc<dyn Backend> {
        self.uncached.clone()
    }

    /// Whether `backend` is this repository's storage ([`Repository::storage_arc`]).
    pub(crate) fn is_storage(&self, backend: &Arc<dyn Backend>) -> bool {
        // Compared as thin pointers: the same object may be reached through
        // different vtables.
        std::ptr::eq(
            Arc::as_ptr(backend) as *const (),
            Arc::as_ptr(&self.uncached) as *const (),
        )
    }

    /// A handle that reads and writes storage directly, past the local
    /// object cache: for the operations that judge the repository's own
    /// copies (verify, repair), where a good cached copy would hide damage.
    pub fn without_cache(&self) -> Repository {
        Repository {
            backend: self.uncached.clone(),
            tree_cache: None,
            ..self.clone()
        }
    }

    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    pub fn config(&self) -> &ConfigBody {
        &self.config.body
    }

    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The index cache, synced with the repository's index files on the
    /// first call after open and after each lock was taken.
    pub(crate) fn index(&self) -> Result<&IndexCache> {
        if !self.index_synced.current.load(Ordering::Acquire) {
            let _one_at_a_time = self.index_synced.syncing.lock().expect("index sync");
            if !self.index_synced.current.load(Ordering::Acquire) {
                let stats = self.index.sync(self.backend.as_ref(), &self.crypto)?;
                tracing::debug!(?stats, "index cache synced");
                self.index_synced.current.store(true, Ordering::Release);
            }
        }
        Ok(&self.index)
    }

    /// Syncs the index cache now (after the caller changed index files),
    /// returning what the sync did.
    pub fn sync_index(&self) -> Result<SyncStats> {
        let _one_at_a_time = self.index_synced.syncing.lock().expect("index sync");
        let stats = self.index.sync(self.backend.as_ref(), &self.crypto)?;
        self.index_synced.current.store(true, Ordering::Release);
        Ok(stats)
    }

    /// Makes the next [`Repository::index`] sync again (a lock was just
    /// taken: what was read before it may be out of date).
    pub(crate) fn invalidate_index(&self) {
        self.index_synced.current.store(false, Ordering::Release);
    }

    /// This repository's directory in the local cache (the index cache and
    /// other local, rebuildable state such as [`crate::damaged`]).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The key file this handle was opened with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Reads, opens, decompresses and checks one blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let location = self
            .index()?
            .lookup(id)?
            .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
        self.read_blob_at(&location)
    }

    /// Reads a tree blob. Trees are read again by every backup (the
    /// parent's), `ls` and restore; on remote storage each is a request, so
    /// a tree once read is kept in the cache directory, sealed again with
    /// this repository's key (file names stay encrypted at rest) and checked
    /// against its id when used. The index is asked first either way: a
    /// tree the repository no longer holds is not served from the cache.
    pub fn read_tree_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let location = self
            .index()?
            .lookup(id)?
            .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
        let Some(dir) = &self.tree_cache else {
            return self.read_blob_at(&location);
        };
        let hex = id.to_hex();
        let path = tree_cache_path(dir, &hex);
        if let Ok(sealed) = std::fs::read(&path) {
            match self
                .crypto
                .open(&sealed)
                .ok()
                .and_then(|kept| self.cached_tree(id, kept))
            {
                Some(plain) => return Ok(plain),
                None => {
                    tracing::debug!("cached tree {hex} is damaged; reading it again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let plain = self.read_blob_at(&location)?;
        if let Err(e) = store_private(&path, &self.crypto.seal(&compress_tree(&plain))) {
            tracing::debug!("cannot cache tree {hex}: {e}");
        }
        Ok(plain)
    }

    /// The tree a tree-cache file holds, if it is tree `id`: stored as it
    /// is (older snap) or compressed ([`compress_tree`]).
    fn cached_tree(&self, id: &BlobId, kept: Vec<u8>) -> Option<Vec<u8>> {
        // The tag first, so that a compressed entry (all this snap writes)
        // is hashed once, after decompressing; an old entry that happens to
        // start with the tag falls through to being hashed as it is.
        let unpacked = kept.strip_prefix(TREE_ZSTD).and_then(|rest| {
            let raw_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
            let plain = crate::compress::decompress(&rest[4..], raw_len as usize).ok()?;
            (self.crypto.blob_id(&plain) == *id).then_some(plain)
        });
        unpacked.or_else(|| (self.crypto.blob_id(&kept) == *id).then_some(kept))
    }

    /// Keeps a tree this process just stored in the tree cache, so the next
    /// backup, whose parent it is, reads it without a request. Harmless if
    /// the upload then fails: [`Repository::read_tree_blob`] asks the index
    /// first.
    pub(crate) fn cache_tree(&self, id: &BlobId, plain: &[u8]) {
        let Some(dir) = &self.tree_cache else { return };
        let hex = id.to_hex();
        if let Err(e) = store_private(&tree_cache_path(dir, &hex), &self.crypto.seal(&compress_tree(plain))) {
            tracing::debug!("cannot cache tree {hex}: {e}");
        }
    }

    /// Reads one blob through the checks of [`Repository::read_pack_blobs`].
    pub fn read_blob_at(&self, location: &BlobLocation) -> Result<Vec<u8>> {
        let mut bufs = crate::packread::BlobBuffers::new();
        let mut out = Err(Error::corrupt(format!("blob {}", location.entry.id), "not read"));
        self.read_pack_blobs(&location.pack, &[location.entry], &mut bufs, |_, result| {
            out = result.map(<[u8]>::to_vec);
        })?;
        out
    }

    /// Turns a blob's stored bytes into its plaintext, checking its id.
    pub fn decode_blob(&self, location: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>> {
        self.decode_owned_blob(location, sealed.to_vec())
    }

    /// [`Repository::decode_blob`] of bytes the caller no longer needs: they
    /// are opened where they lie.
    fn decode_owned_blob(&self, location: &BlobLocation, mut opened: Vec<u8>) -> Result<Vec<u8>> {
        let mut decompressed = Vec::new();
        let plain = self.decode_blob_in_place(location, &mut opened, &mut decompressed)?;
        Ok(match location.entry.encoding {
            Encoding::Raw => plain.to_vec(),
            Encoding::Zstd => decompressed,
        })
    }

    /// [`Repository::decode_blob`] without allocating: opens `sealed` where
    /// it lies and decompresses into `scratch` when the blob is compressed.
    /// Returns the plaintext, checked against its id.
    pub fn decode_blob_in_place<'a>(
        &self,
        location: &BlobLocation,
        sealed: &'a mut [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let e = &location.entry;
        let what = || format!("blob {} in pack {}", e.id, location.pack);
        let opened = self
            .crypto
            .open_in_place(sealed)
            .map_err(|err| Error::corrupt(what(), err))?;
        let plain: &[u8] = match e.encoding {
            Encoding::Raw => opened,
            Encoding::Zstd => {
                compress::decompress_into(opened, e.raw_length as usize, scratch)
                    .map_err(|err| Error::corrupt(what(), err))?;
                scratch
            }
        };
        if plain.len() != e.raw_length as usize || self.crypto.blob_id(plain) != e.id {
            return Err(Error::corrupt(what(), "its content does not match its id"));
        }
        Ok(plain)
    }

    /// Stores an index file and records it in the cache.
    pub fn save_index(&self, file: IndexFile) -> Result<IndexId> {
        let bytes = file.encode(&self.crypto);
        let id = IndexId::hash_of(&bytes);
        self.backend.write(ObjectKind::Index, &id.to_hex(), &bytes)?;
        self.index.insert(&[(id, file)])?;
        Ok(id)
    }

    /// Stores the packs in `pending` (leaving it empty) as one index file
    /// that supersedes `supersedes`. Returns whether there was anything to
    /// store.
    pub fn save_pending_index(&self, pending: &mut Vec<IndexedPack>, supersedes: &[IndexId]) -> Result<bool> {
        if pending.is_empty() {
            return Ok(false);
        }
        self.save_index(IndexFile {
            packs: std::mem::take(pending),
            supersedes: supersedes.to_vec(),
        })?;
        Ok(true)
    }
}

/// Which password [`Repository::open_or_init`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordRequest {
    /// The password of an existing key file.
    Existing,
    /// The password of the repository about to be created.
    New,
}

/// What [`Repository::open_or_init`] did.
#[derive(Debug)]
pub enum Opened {
    Existing(Repository),
    Created(Repository),
}

impl Opened {
    pub fn into_repository(self) -> Repository {
        match self {
            Opened::Existing(repo) | Opened::Created(repo) => repo,
        }
    }
}

/// Why [`Repository::open_or_init`] failed, by step, so a frontend can say
/// which (and keep its own password errors apart).
#[derive(Debug)]
pub enum OpenFailure<E> {
    /// The config could not be read; [`Error::NotARepository`] when the
    /// location holds no repository and none was to be created.
    Config(Error),
    /// The caller's password function failed.
    Password(E),
    /// The repository exists but could not be opened (wrong password, ...).
    Open(Error),
    /// The repository could not be created.
    Init(Error),
}

/// Whether the index cache is current; shared by a handle's clones.
#[derive(Debug, Default)]
struct IndexSynced {
    current: AtomicBool,
    syncing: std::sync::Mutex<()>,
}

/// Writes a local cache file atomically, in directories only its owner can read.
fn store_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().expect("a cache file has a directory");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads the config, mapping a missing one to "not a repository".
pub fn read_config(backend: &dyn Backend) -> Result<Config> {
    match backend.read(ObjectKind::Config, "config") {
        Ok(bytes) => Config::from_bytes(&bytes),
        Err(e) if e.is_not_found() => Err(Error::NotARepository {
            location: backend.location(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Marks a compressed tree in the tree cache: the tag, the tree's length
/// (u32 LE), its zstd frame. A tree kept uncompressed has no tag; it is told
/// apart by hashing to its id.
const TREE_ZSTD: &[u8] = b"Z";

/// A tree as the tree cache keeps it: compressed when that is smaller.
/// Trees are mostly names and metadata; kept as they are, the cached trees
/// of a first backup of 100k files took 9.4 MB, more than the index.
fn compress_tree(plain: &[u8]) -> Vec<u8> {
    match crate::compress::compress(plain, Compression::Zstd(3)) {
        Some(packed) if u32::try_from(plain.len()).is_ok() => {
            let mut out = Vec::with_capacity(TREE_ZSTD.len() + 4 + packed.len());
            out.extend_from_slice(TREE_ZSTD);
            out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
            out.extend_from_slice(&packed);
            out
        }
        _ => plain.to_vec(),
    }
}

/// Where the tree cache keeps tree `hex`: fanned out by its first two digits.
fn tree_cache_path(dir: &Path, hex: &str) -> PathBuf {
    dir.join(&hex[..2]).join(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::pack::BlobKind;

    /// Trees in the tree cache are kept compressed (before, as they are:
    /// 9.4 MB for the trees of 100k files, the largest part of the local
    /// cache), and a tree an older snap kept uncompressed is still served.
    #[test]
    fn the_tree_cache_keeps_trees_compressed_and_reads_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
        let options = InitOptions {
            kdf: crate::keys::FAST_KDF_FOR_TESTS,
            ..InitOptions::default()
        };
        let password = Password::new("trees");
        let repo = Repository::init(backend.clone(), Some(&password), &options, &dir.path().join("cache")).unwrap();
        let tree: Vec<u8> = (0..3000)
            .flat_map(|i| format!("file-{i:05}.txt 0644 1000\n").into_bytes())
            .collect();
        let packer = crate::packer::Packer::new(&repo, Compression::default()).unwrap();
        let (id, _) = packer.add(BlobKind::Tree, &tree).unwrap();
        packer.finish().unwrap();

        let path = tree_cache_path(repo.tree_cache.as_ref().unwrap(), &id.to_hex());
        let kept = repo.crypto.open(&std::fs::read(&path).unwrap()).unwrap();
        assert!(kept.starts_with(TREE_ZSTD), "kept uncompressed");
        assert!(
            kept.len() < tree.len() / 4,
            "{} bytes kept for {}",
            kept.len(),
            tree.len()
        );

        // With the packs gone, only the cache can answer.
        for pack in backend.list(ObjectKind::Pack).unwrap() {
            backend.delete(ObjectKind::Pack, &pack.name).unwrap();
        }
        assert_eq!(repo.read_tree_blob(&id).unwrap(), tree);
        store_private(&path, &repo.crypto.seal(&tree)).unwrap();
        assert_eq!(repo.read_tree_blob(&id).unwrap(), tree);
    }
}
