//! Storage of named, immutable objects. Nothing above this module assumes a
//! local filesystem: a backend stores whole objects, reads whole objects or
//! byte ranges, lists them by kind, and deletes them. Writes are atomic: a
//! reader sees the whole object or nothing.

pub mod cache;
pub mod counting;
mod direct;
pub mod faulty;
mod local;
pub mod retry;

pub use local::{LocalBackend, Modes};

use std::fmt;

/// The kinds of object in a repository, each in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// The single `config` object.
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "key",
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Lock => "lock",
        }
    }
}

/// A listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{kind} {name} is missing from the repository")]
    NotFound { kind: &'static str, name: String },

    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: &'static str, name: String },

    #[error("{kind} {name} is shorter than expected: wanted bytes {offset}..{end}, object has {size}")]
    ShortRead {
        kind: &'static str,
        name: String,
        offset: u64,
        end: u64,
        size: u64,
    },

    /// A failure that may pass if the same request is made again: a
    /// timeout, a reset connection, a 5xx answer, throttling. Remote
    /// backends report these so that the retry wrapper can tell them from
    /// permanent ones (wrong credentials, a missing bucket).
    #[error("cannot {op} {what}: {reason}")]
    Transient {
        op: &'static str,
        what: String,
        reason: String,
    },

    /// A permanent failure of remote storage (refused credentials, a
    /// missing bucket, a server that answers with something unexpected).
    #[error("cannot {op} {what}: {reason}")]
    Remote {
        op: &'static str,
        what: String,
        reason: String,
    },

    // The OS error is part of the message, not a `source` (see crate::Error::Io).
    #[error("cannot {op} {what}: {error}")]
    Io {
        op: &'static str,
        what: String,
        error: std::io::Error,
    },
}

impl BackendError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// Whether making the same request again may succeed.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            BackendError::Transient { .. } => true,
            BackendError::Io { error, .. } => matches!(
                error.kind(),
                TimedOut | ConnectionReset | ConnectionAborted | BrokenPipe | Interrupted
            ),
            _ => false,
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// Object storage for one repository.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the repository is, for messages. Never holds a secret.
    fn location(&self) -> String;
    /// How many requests this storage serves well at once: the packer and
    /// the readers keep up to this many in flight. A local disk gains
    /// little from more than a few; an object store, from many.
    fn concurrency(&self) -> usize {
        2
    }
    /// Whether the storage refuses deletes (a `snap serve --append-only`
    /// server): operations that delete take the exclusive lock, which then
    /// fails at once instead of half-way through. Wrappers must forward it.
    fn append_only(&self) -> bool {
        false
    }
    /// Creates the empty structure of a new repository.
    fn create(&self) -> BackendResult<()>;
    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>>;
    /// Reads exactly `len` bytes at `offset`.
    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>>;
    /// [`Backend::read_range`] into `buf` (replacing its contents), so that a
    /// caller reading many ranges can reuse one allocation.
    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> BackendResult<()> {
        *buf = self.read_range(kind, name, offset, len)?;
        Ok(())
    }
    /// Stores an object atomically and durably. Overwriting an existing name is
    /// allowed only with identical bytes (names are content hashes).
    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()>;
    /// Stores an object atomically and durably only if no object of that
    /// name exists ([`BackendError::AlreadyExists`] otherwise), even when
    /// several writers race: `init` writes the config this way.
    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()>;
    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()>;
    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>>;
    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool>;
    /// When the storage last wrote the object, by the storage's own clock
    /// (`None` if it keeps no such time). Locks judge staleness by it, since
    /// the clocks of the hosts sharing a repository may differ.
    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<std::time::SystemTime>> {
        let _ = (kind, name);
        Ok(None)
    }
}
