//! What changed between two snapshots, or between a snapshot and the live
//! files (`snap diff`). Both sides are walked in step, directory by
//! directory, in name order; two subtrees with the same tree id are equal
//! throughout (a tree id is the hash of its content, which holds its
//! children's ids), so they are skipped unread: the cost of a diff follows
//! the size of the change, not of the snapshots. Owns the comparison of
//! entries; it does not print.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsmeta::{self, OwnerNames};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{Node, NodeKind, Tree};

/// How an entry changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the second side (`+`).
    Added,
    /// Only in the first side (`-`).
    Removed,
    /// Same type, other content (`M`): file data, symlink target or device number.
    Modified,
    /// Same type and content; mode, owner, mtime or extended attributes differ (`U`).
    Metadata,
    /// Another type at the same path (`T`), e.g. a file that became a directory.
    TypeChanged,
}

impl ChangeKind {
    /// The one-character marker of the text output.
    pub fn marker(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
            ChangeKind::TypeChanged => 'T',
        }
    }
}

/// One changed entry: its full path and its node on each side that has it.
#[derive(Clone, Debug)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
    pub old: Option<Node>,
    pub new: Option<Node>,
}

/// Counts of a diff. Sizes are file sizes (bytes of content), not stored bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffStats {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub type_changed: u64,
    /// Size of the files only in the second side (added, or new by a type change).
    pub bytes_added: u64,
    /// Size of the files only in the first side.
    pub bytes_removed: u64,
    /// Size of modified files before and after.
    pub bytes_modified_before: u64,
    pub bytes_modified_after: u64,
    /// Subtrees skipped unread because both sides had the same tree id.
    pub trees_skipped: u64,
}

impl DiffStats {
    fn count(&mut self, change: &Change) {
        let size = |n: &Option<Node>| n.as_ref().filter(|n| n.kind == NodeKind::File).map_or(0, |n| n.size);
        match change.kind {
            ChangeKind::Added => {
                self.added += 1;
                self.bytes_added += size(&change.new);
            }
            ChangeKind::Removed => {
                self.removed += 1;
                self.bytes_removed += size(&change.old);
            }
            ChangeKind::Modified => {
                self.modified += 1;
                self.bytes_modified_before += size(&change.old);
                self.bytes_modified_after += size(&change.new);
            }
            ChangeKind::Metadata => self.metadata += 1,
            ChangeKind::TypeChanged => {
                self.type_changed += 1;
                self.bytes_removed += size(&change.old);
                self.bytes_added += size(&change.new);
            }
        }
    }
}

/// Options of a diff against live files.
#[derive(Clone, Debug, Default)]
pub struct LocalOptions {
    /// Read every file whose size matches, not only those whose mtime
    /// differs: catches content changed behind an unchanged size and mtime.
    pub content: bool,
}

/// Where the entries of a directory come from.
#[derive(Clone, Debug)]
enum Dir {
    Tree(BlobId),
    Local(PathBuf),
}

/// An entry of one side, with where its children are listed.
struct Entry {
    node: Node,
    children: Option<Dir>,
    /// The live file, for a file of the local side (its content is read on demand).
    local: Option<PathBuf>,
}

/// The work list of the walk: a heap stack, not recursion (a snapshot is as
/// deep as the tree it was made of).
enum Work {
    /// Compare the children of two directories (either may be absent: all
    /// of the other's entries are then added or removed).
    Dirs {
        path: PathBuf,
        old: Option<Dir>,
        new: Option<Dir>,
    },
    /// Compare one entry present on at least one side.
    Pair {
        path: PathBuf,
        old: Option<Box<Entry>>,
        new: Option<Box<Entry>>,
    },
}

struct Walker<'a> {
    repo: &'a Repository,
    cancel: &'a AtomicBool,
    names: OwnerNames,
    local: LocalOptions,
    stats: DiffStats,
}

/// Every change between the trees `old` and `new` (root trees of two
/// snapshots), depth-first in name order, passed to `visit`. Stops with
/// [`Error::Interrupted`] once `cancel` is set.
pub fn diff_trees(
    repo: &Repository,
    old: &BlobId,
    new: &BlobId,
    cancel: &AtomicBool,
    visit: &mut dyn FnMut(&Change) -> Result<()>,
) -> Result<DiffStats> {
    let mut walker = Walker {
        repo,
        cancel,
        names: OwnerNames::default(),
        local: LocalOptions::default(),
        stats: DiffStats::default(),
    };
    walker.run(
        Work::Dirs {
            path: PathBuf::from("/"),
            old: Some(Dir::Tree(*old)),
            new: Some(Dir::Tree(*new)),
        },
        visit,
    )?;
    Ok(walker.stats)
}

/// Every change from `node` (the snapshot's entry at `path`, `None` when
/// the snapshot does not hold it) to the live file or directory at `path`.
/// Files whose size and mtime match are taken as unchanged unless
/// `options.content`; the others are chunked with the repository's chunker
/// and their chunk ids compared, so a touched but unchanged file is `U`.
pub fn diff_local(
    repo: &Repository,
    node: Option<Node>,
    path: &Path,
    options: &LocalOptions,
    cancel: &AtomicBool,
    visit: &mut dyn FnMut(&Change) -> Result<()>,
) -> Result<DiffStats> {
    let mut walker = Walker {
        repo,
        cancel,
        names: OwnerNames::default(),
        local: options.clone(),
        stats: DiffStats::default(),
    };
    let new = match std::fs::symlink_metadata(path) {
        Ok(_) => walker.local_entry(path, path.file_name().map_or(b"/".to_vec(), |n| n.as_bytes().to_vec()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(path, e)),
    };
    let old = node.map(|node| Entry {
        children: node.subtree.map(Dir::Tree),
        node,
        local: None,
    });
    if old.is_none() && new.is_none() {
        return Err(Error::InvalidArgument(format!(
            "{} is neither in the snapshot nor on disk",
            path.display()
        )));
    }
    walker.run(
        Work::Pair {
            path: path.to_path_buf(),
            old: old.map(Box::new),
            new: new.map(Box::new),
        },
        visit,
    )?;
    Ok(walker.stats)
}

impl Walker<'_> {
    fn run(&mut self, first: Work, visit: &mut dyn FnMut(&Change) -> Result<()>) -> Result<()> {
        let mut stack = vec![first];
        while let Some(work) = stack.pop() {
            match work {
                Work::Dirs { path, old, new } => {
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(Error::Interrupted);
                    }
                    if let (Some(Dir::Tree(a)), Some(Dir::Tree(b))) = (&old, &new) {
                        if a == b {
                            self.stats.trees_skipped += 1;
                            continue;
                        }
                    }
                    let old = self.list(old.as_ref())?;
                    let new = self.list(new.as_ref())?;
                    let mut pairs = merge(old, new);
                    // Reversed onto the stack: popped in name order.
                    while let Some((old, new)) = pairs.pop() {
                        let name = old
                            .as_ref()
                            .or(new.as_ref())
                            .map(|e| e.node.name.clone())
                            .unwrap_or_default();
                        stack.push(Work::Pair {
                            path: path.join(std::ffi::OsStr::from_bytes(&name)),
                            old: old.map(Box::new),
                            new: new.map(Box::new),
                        });
                    }
                }
                Work::Pair { path, old, new } => {
                    let kind = match (&old, &new) {
                        (Some(_), None) => Some(ChangeKind::Removed),
                        (None, Some(_)) => Some(ChangeKind::Added),
                        (Some(o), Some(n)) => self.compare(o, n)?,
                        (None, None) => None,
                    };
                    let (old_children, new_children) = (
                        old.as_ref().and_then(|e| e.children.clone()),
                        new.as_ref().and_then(|e| e.children.clone()),
                    );
                    if let Some(kind) = kind {
                        let change = Change {
                            path: path.clone(),
                            kind,
                            old: old.map(|e| e.node),
                            new: new.map(|e| e.node),
                        };
                        self.stats.count(&change);
                        visit(&change)?;
                    }
                    if old_children.is_some() || new_children.is_some() {
                        stack.push(Work::Dirs {
                            path,
                            old: old_children,
                            new: new_children,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The change between two entries at the same path, `None` when equal.
    fn compare(&self, old: &Entry, new: &Entry) -> Result<Option<ChangeKind>> {
        let (a, b) = (&old.node, &new.node);
        if a.kind != b.kind {
            return Ok(Some(ChangeKind::TypeChanged));
        }
        let content_differs = match a.kind {
            NodeKind::File => self.file_differs(old, new)?,
            NodeKind::Symlink => a.link_target != b.link_target,
            NodeKind::CharDevice | NodeKind::BlockDevice => a.rdev != b.rdev,
            NodeKind::Dir | NodeKind::Fifo | NodeKind::Socket => false,
        };
        if content_differs {
            return Ok(Some(ChangeKind::Modified));
        }
        Ok(metadata_differs(a, b).then_some(ChangeKind::Metadata))
    }

    fn file_differs(&self, old: &Entry, new: &Entry) -> Result<bool> {
        let (a, b) = (&old.node, &new.node);
        if a.size != b.size {
            return Ok(true);
        }
        let Some(live) = &new.local else {
            return Ok(a.content != b.content);
        };
        if a.mtime_ns == b.mtime_ns && !self.local.content {
            return Ok(false);
        }
        Ok(self.chunk_ids(live)? != a.content)
    }

    /// The chunk ids the repository would give the live file's content.
    fn chunk_ids(&self, path: &Path) -> Result<Vec<BlobId>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().ok().map(|m| m.len());
        let mut chunks = self.repo.chunker().chunks(file, size);
        let mut ids = Vec::new();
        while let Some(chunk) = chunks.next_chunk().map_err(|e| Error::io(path, e))? {
            ids.push(self.repo.crypto().blob_id(chunk));
        }
        Ok(ids)
    }

    fn list(&self, dir: Option<&Dir>) -> Result<Vec<Entry>> {
        match dir {
            None => Ok(Vec::new()),
            Some(Dir::Tree(id)) => Ok(Tree::load(self.repo, id)?
                .nodes
                .into_iter()
                .map(|node| Entry {
                    children: node.subtree.map(Dir::Tree),
                    node,
                    local: None,
                })
                .collect()),
            Some(Dir::Local(dir)) => {
                let mut names = Vec::new();
                for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                    let item = item.map_err(|e| Error::io(dir, e))?;
                    names.push(item.file_name().as_bytes().to_vec());
                }
                // Tree order: by name bytes.
                names.sort();
                let mut entries = Vec::with_capacity(names.len());
                for name in names {
                    entries.extend(self.local_entry(&dir.join(std::ffi::OsStr::from_bytes(&name)), name)?);
                }
                Ok(entries)
            }
        }
    }

    /// The node a backup would record for the live entry at `path` (content
    /// not read); `None` for a file type snap does not store (a backup
    /// skips it too).
    fn local_entry(&self, path: &Path, name: Vec<u8>) -> Result<Option<Entry>> {
        let st = rustix::fs::lstat(path).map_err(|e| Error::io(path, e.into()))?;
        let Some(kind) = fsmeta::node_kind(&st) else {
            tracing::warn!("{}: unknown file type, left out as a backup would", path.display());
            return Ok(None);
        };
        let mut node = fsmeta::node_from_stat(name, kind, &st, &self.names);
        node.xattrs = fsmeta::read_xattrs(path);
        if kind == NodeKind::Symlink {
            node.link_target = std::fs::read_link(path)
                .map_err(|e| Error::io(path, e))?
                .into_os_string()
                .into_encoded_bytes();
        }
        Ok(Some(Entry {
            node,
            children: (kind == NodeKind::Dir).then(|| Dir::Local(path.to_path_buf())),
            local: (kind == NodeKind::File).then(|| path.to_path_buf()),
        }))
    }
}

/// Whether what a restore applies besides content differs: mode, owner,
/// mtime, extended attributes. Not ctime, inode, device or link count:
/// they change when a file is merely copied or restored.
fn metadata_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.user != b.user
        || a.group != b.group
        || a.mtime_ns != b.mtime_ns
        || a.xattrs != b.xattrs
}

/// Pairs the entries of two name-sorted lists by name.
fn merge(old: Vec<Entry>, new: Vec<Entry>) -> Vec<(Option<Entry>, Option<Entry>)> {
    let mut out = Vec::with_capacity(old.len().max(new.len()));
    let mut old = old.into_iter().peekable();
    let mut new = new.into_iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.node.name.cmp(&b.node.name),
        };
        out.push(match order {
            std::cmp::Ordering::Less => (old.next(), None),
            std::cmp::Ordering::Greater => (None, new.next()),
            std::cmp::Ordering::Equal => (old.next(), new.next()),
        });
    }
    out
}
