//! The umbrella error type. Each variant carries what a user needs to act:
//! the object, the path, and what was expected.

use std::path::PathBuf;

use crate::backend::BackendError;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backend(#[from] BackendError),

    #[error("{location} is not a snap repository (no config object)")]
    NotARepository { location: String },

    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },

    #[error("repository format version {found} is newer than this snap supports ({supported}); upgrade snap")]
    UnsupportedVersion { found: u32, supported: u32 },

    #[error("wrong password: no key file of the repository opens with it")]
    WrongPassword,

    #[error("{what} is damaged: {reason}")]
    Corrupt { what: String, reason: String },

    #[error("no snapshot matches '{0}'")]
    SnapshotNotFound(String),

    #[error("'{prefix}' matches {count} snapshots; give more digits")]
    AmbiguousSnapshot { prefix: String, count: usize },

    #[error("blob {0} is not in the index")]
    BlobNotIndexed(String),

    // The OS error is part of the message, not a `source`: `{:#}` would
    // otherwise print it twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },

    #[error("local index cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// `advice` says what can be done about it: it differs between a live
    /// process on this host, one on another host and an unreadable lock.
    #[error("the repository is locked: {holder}; {advice}")]
    Locked { holder: String, advice: String },

    /// The operation's own lock could not be kept (refresh failed for too
    /// long, or the lock was removed): others may have taken it as stale, so
    /// the operation stopped as if interrupted, writing nothing that depends on it.
    #[error("the repository lock was lost ({reason}); stopped before it could be taken as stale")]
    LockLost { reason: String },

    /// A backup's snapshot would refer to blobs that were removed from the
    /// repository while it ran (a prune that ignored its lock): not written.
    #[error("snapshot not written: {missing} blob(s) it refers to were removed from the repository while the backup ran (by a prune that did not respect its lock); run the backup again")]
    BlobsRemoved { missing: u64 },

    /// An archive given to `import` that cannot be imported safely or
    /// whole: `entry` is its name in the archive.
    #[error("archive entry '{entry}': {reason}; no snapshot was written")]
    InvalidArchive { entry: String, reason: String },

    #[error("interrupted")]
    Interrupted,

    /// The snapshot restore takes of what it is about to replace could not
    /// be taken: nothing in the target was changed.
    #[error("safety snapshot failed, nothing was restored: {reason}")]
    SafetySnapshot { reason: String },
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}
