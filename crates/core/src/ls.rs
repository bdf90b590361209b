//! Listing a snapshot's entries with their full source paths (`snap ls`):
//! an iterator over [`Entry`], depth-first in name order, that a frontend
//! renders as lines, a long listing or JSON. Owns the walk below one path;
//! it does not print.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{self, Node, NodeKind, Tree};

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct LsOptions {
    /// Only this path and what is below it, as recorded on the source
    /// machine (absolute, normalized: see [`crate::snapshot::source_path`]).
    pub path: Option<PathBuf>,
    /// Descend into directories below `path`.
    pub recursive: bool,
}

/// One listed entry: its full path in the snapshot and its node. Serialized
/// as one line of `snap ls --json` (see [`EntryJson`]).
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub node: Node,
}

/// The stable JSON form of an [`Entry`].
#[derive(Clone, Debug, Serialize)]
pub struct EntryJson {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    pub mtime: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

impl Entry {
    /// The modification time (the epoch when out of range).
    pub fn mtime(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(i128::from(self.node.mtime_ns)).unwrap_or_default()
    }

    pub fn to_json(&self) -> EntryJson {
        let node = &self.node;
        EntryJson {
            path: self.path.to_string_lossy().into_owned(),
            kind: kind_name(node.kind),
            mode: node.mode,
            size: node.size,
            mtime: self.mtime().to_string(),
            uid: node.uid,
            gid: node.gid,
            user: node.user.to_string(),
            group: node.group.to_string(),
            link_target: (node.kind == NodeKind::Symlink)
                .then(|| String::from_utf8_lossy(&node.link_target).into_owned()),
        }
    }
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// The name of a node kind in JSON: `file`, `dir`, `symlink`, ...
pub fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
        NodeKind::Socket => "socket",
    }
}

/// The entries of `snapshot` (whose id is `id`, for messages) under
/// `options.path`: that path's own entry first, then what is below it.
/// Fails at once if the path is not in the snapshot; a tree that cannot be
/// read later ends the iteration with its error.
pub fn entries(repo: &Repository, id: &SnapshotId, snapshot: &Snapshot, options: &LsOptions) -> Result<Entries> {
    let mut entries = Entries {
        repo: repo.clone(),
        recursive: options.recursive,
        first: None,
        stack: Vec::new(),
        path: PathBuf::from("/"),
        pending_root: None,
        failed: None,
    };
    let components = match &options.path {
        None => Vec::new(),
        Some(path) => tree::path_components(path)
            .ok_or_else(|| Error::InvalidArgument(format!("{} has a '..' component", path.display())))?,
    };
    if components.is_empty() {
        entries.pending_root = Some(snapshot.tree);
        return Ok(entries);
    }
    let full = PathBuf::from("/").join(std::ffi::OsStr::from_bytes(&components.join(&b'/')));
    let node = tree::lookup_path(repo, &snapshot.tree, &components)?
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not in snapshot {}", full.display(), id.short())))?;
    // Below the named path even without `recursive`: listing a directory
    // shows its entries.
    entries.pending_root = node.subtree;
    entries.path = full.clone();
    entries.first = Some(Entry { path: full, node });
    Ok(entries)
}

/// The iterator of [`entries`]. A stack on the heap, not recursion: a
/// snapshot's depth is whatever the backed-up tree's was, and must not
/// overflow the thread's stack. Holds one tree per level.
pub struct Entries {
    repo: Repository,
    recursive: bool,
    /// The named path's own entry, returned first.
    first: Option<Entry>,
    /// The tree to start from, loaded on the first call (so an unreadable
    /// one is an item's error, after the named path's entry).
    pending_root: Option<BlobId>,
    stack: Vec<std::vec::IntoIter<Node>>,
    /// The path of the directory listed by the top of `stack`.
    path: PathBuf,
    /// Why a directory's tree could not be read: returned after the
    /// directory's own entry, and the end of the listing.
    failed: Option<Error>,
}

impl Entries {
    fn load(&self, id: &BlobId) -> Result<std::vec::IntoIter<Node>> {
        Ok(Tree::load(&self.repo, id)?.nodes.into_iter())
    }
}

impl Iterator for Entries {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        if let Some(root) = self.pending_root.take() {
            match self.load(&root) {
                Ok(level) => self.stack.push(level),
                Err(e) => return Some(Err(e)),
            }
        }
        loop {
            let level = self.stack.last_mut()?;
            let Some(node) = level.next() else {
                self.stack.pop();
                if !self.stack.is_empty() {
                    self.path.pop();
                }
                continue;
            };
            let path = self.path.join(std::ffi::OsStr::from_bytes(&node.name));
            if let (Some(sub), true) = (node.subtree, self.recursive) {
                match self.load(&sub) {
                    Ok(level) => {
                        self.stack.push(level);
                        self.path.push(std::ffi::OsStr::from_bytes(&node.name));
                    }
                    Err(e) => {
                        // Nothing more can be listed in order after this.
                        self.stack.clear();
                        self.failed = Some(e);
                    }
                }
            }
            return Some(Ok(Entry { path, node }));
        }
    }
}
