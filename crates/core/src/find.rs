//! Which snapshots hold which version of a file (`snap find`): entries
//! whose name or full path matches a glob, across many snapshots, with the
//! snapshots that hold each distinct version (same path and same content)
//! grouped. Snapshots share most of their trees, so the matches below a
//! tree are worked out once per tree id and path and reused by every
//! snapshot that holds that tree there: the cost follows the number of
//! distinct directories in the history, not snapshots times directories.
//! Owns the matching and grouping; it does not print.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeKind, Tree};

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct FindOptions {
    /// Globs (`*`, `?`, `[...]`, `**`). One without `/` is matched against
    /// the entry's name; one with `/` against its full path: from the root
    /// when it starts with `/`, else against the path's end (as if it began
    /// with `**/`). `*` and `?` do not match `/`; `**` does.
    pub patterns: Vec<String>,
    pub ignore_case: bool,
    /// Only entries modified at or after this time (nanoseconds since the epoch).
    pub oldest_ns: Option<i64>,
    /// Only entries modified at or before this time.
    pub newest_ns: Option<i64>,
}

/// One version of a matched path: its node (as the oldest snapshot holding
/// it recorded it) and every snapshot holding it, oldest first.
#[derive(Clone, Debug)]
pub struct Version {
    pub node: Node,
    /// Names the content: equal for entries of the same type and content
    /// (BLAKE3 of the type, size, chunk ids, link target and device number).
    pub content_key: [u8; 32],
    pub snapshots: Vec<SnapshotId>,
}

/// A matched path and its versions, oldest first.
#[derive(Clone, Debug)]
pub struct Found {
    pub path: PathBuf,
    pub versions: Vec<Version>,
}

/// What a search read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindStats {
    pub snapshots: u64,
    /// Distinct trees read (each once).
    pub trees_read: u64,
}

struct Matcher {
    names: GlobSet,
    paths: GlobSet,
    options: FindOptions,
}

impl Matcher {
    fn new(options: &FindOptions) -> Result<Self> {
        if options.patterns.is_empty() {
            return Err(Error::InvalidArgument("no pattern given".into()));
        }
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for pattern in &options.patterns {
            let (set, text) = if !pattern.contains('/') {
                (&mut names, pattern.clone())
            } else if pattern.starts_with('/') {
                (&mut paths, pattern.clone())
            } else {
                (&mut paths, format!("**/{pattern}"))
            };
            let glob = GlobBuilder::new(&text)
                .case_insensitive(options.ignore_case)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("pattern {pattern:?}: {e}")))?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidArgument(format!("patterns: {e}")));
        Ok(Matcher {
            names: build(names)?,
            paths: build(paths)?,
            options: options.clone(),
        })
    }

    fn matches(&self, path: &std::path::Path, node: &Node) -> bool {
        let name = std::ffi::OsStr::from_bytes(&node.name);
        (self.names.is_match(name) || self.paths.is_match(path))
            && self.options.oldest_ns.is_none_or(|t| node.mtime_ns >= t)
            && self.options.newest_ns.is_none_or(|t| node.mtime_ns <= t)
    }
}

/// The content key of a node (see [`Version::content_key`]).
pub fn content_key(node: &Node) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(crate::ls::kind_name(node.kind).as_bytes());
    h.update(&[0]);
    if node.kind != NodeKind::Dir {
        h.update(&node.size.to_le_bytes());
        for id in &node.content {
            h.update(&id.0);
        }
        h.update(&(node.link_target.len() as u64).to_le_bytes());
        h.update(&node.link_target);
        h.update(&node.rdev.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// One directory being searched: its entries and the matches found so far
/// below it (indexes into the hits).
struct Frame {
    key: (BlobId, PathBuf),
    nodes: std::vec::IntoIter<Node>,
    found: Vec<usize>,
}

/// Searches `snapshots` (oldest first) for entries matching `options`.
/// Results are sorted by path; versions by the first snapshot holding them.
/// Stops with [`Error::Interrupted`] once `cancel` is set.
pub fn find(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    options: &FindOptions,
    cancel: &AtomicBool,
) -> Result<(Vec<Found>, FindStats)> {
    let matcher = Matcher::new(options)?;
    let mut stats = FindStats::default();
    // Every distinct (path, content) matched, and the snapshots holding it.
    let mut hits: Vec<(PathBuf, Version)> = Vec::new();
    let mut hit_ids: HashMap<(PathBuf, [u8; 32]), usize> = HashMap::new();
    let mut memo: HashMap<(BlobId, PathBuf), Rc<Vec<usize>>> = HashMap::new();
    for (snapshot_id, snapshot) in snapshots {
        stats.snapshots += 1;
        let root = (snapshot.tree, PathBuf::from("/"));
        if !memo.contains_key(&root) {
            let tree = Tree::load(repo, &snapshot.tree)?;
            stats.trees_read += 1;
            let mut stack = vec![Frame {
                key: root.clone(),
                nodes: tree.nodes.into_iter(),
                found: Vec::new(),
            }];
            while let Some(top) = stack.last_mut() {
                let Some(node) = top.nodes.next() else {
                    let done = stack.pop().expect("a frame");
                    let found = Rc::new(done.found);
                    if let Some(parent) = stack.last_mut() {
                        parent.found.extend(found.iter().copied());
                    }
                    memo.insert(done.key, found);
                    continue;
                };
                let path = top.key.1.join(std::ffi::OsStr::from_bytes(&node.name));
                let subtree = node.subtree;
                if matcher.matches(&path, &node) {
                    let key = content_key(&node);
                    let next = hits.len();
                    let index = *hit_ids.entry((path.clone(), key)).or_insert(next);
                    if index == next {
                        hits.push((
                            path.clone(),
                            Version {
                                node,
                                content_key: key,
                                snapshots: Vec::new(),
                            },
                        ));
                    }
                    top.found.push(index);
                }
                if let Some(sub) = subtree {
                    let key = (sub, path);
                    if let Some(found) = memo.get(&key) {
                        top.found.extend(found.iter().copied());
                    } else {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(Error::Interrupted);
                        }
                        let tree = Tree::load(repo, &sub)?;
                        stats.trees_read += 1;
                        stack.push(Frame {
                            key,
                            nodes: tree.nodes.into_iter(),
                            found: Vec::new(),
                        });
                    }
                }
            }
        }
        for &index in memo.get(&root).expect("the root was searched").iter() {
            hits[index].1.snapshots.push(*snapshot_id);
        }
    }
    drop(memo);
    // Group by path; versions in the order their first snapshot came.
    let position: HashMap<SnapshotId, usize> = snapshots.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let mut by_path: std::collections::BTreeMap<PathBuf, Vec<Version>> = Default::default();
    for (path, version) in hits {
        by_path.entry(path).or_default().push(version);
    }
    let found = by_path
        .into_iter()
        .map(|(path, mut versions)| {
            versions.sort_by_key(|v| v.snapshots.first().map_or(usize::MAX, |id| position[id]));
            Found { path, versions }
        })
        .collect();
    Ok((found, stats))
}
