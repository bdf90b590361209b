//! Trees: one blob per directory, listing its entries sorted by name bytes.
//!
//! A [`Node`] carries everything needed to restore an entry: type, mode,
//! owner, times, inode data (for hard links and change detection), content
//! blob ids or subtree id, symlink target and extended attributes. Names are
//! raw bytes, so non-UTF-8 names round-trip. Trees read from a repository are
//! untrusted: [`Tree::decode`] rejects names that could escape a restore
//! target and entries that are not strictly sorted.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A user or group name. Shared: a tree's entries and a backup's files
/// nearly all carry the same few names, and a clone of one is a reference
/// count, not an allocation (two per node were a tenth of an unchanged
/// re-backup's instructions, callgrind). Encoded as a string.
pub type OwnerName = Arc<str>;

/// (De)serializes an [`OwnerName`] as a string. Decoding shares the names
/// this thread decoded last, so a tree of one owner holds one copy.
mod owner_name {
    use super::OwnerName;
    use std::cell::RefCell;

    /// How many recent names a thread keeps to share.
    const RECENT: usize = 8;
    /// Longer names (none a system gives, but a hostile tree may hold
    /// megabytes) are not kept past their node.
    const SHARED_UP_TO: usize = 256;

    thread_local! {
        static RECENT_NAMES: RefCell<Vec<OwnerName>> = const { RefCell::new(Vec::new()) };
    }

    pub fn serialize<S: serde::Serializer>(name: &OwnerName, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(name)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<OwnerName, D::Error> {
        struct Shared;
        impl serde::de::Visitor<'_> for Shared {
            type Value = OwnerName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<OwnerName, E> {
                Ok(shared(name))
            }
        }
        deserializer.deserialize_str(Shared)
    }

    /// `name` as an [`OwnerName`], shared with the last ones this thread made.
    pub fn shared(name: &str) -> OwnerName {
        RECENT_NAMES.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(known) = recent.iter().find(|known| ***known == *name) {
                return known.clone();
            }
            let new = OwnerName::from(name);
            if name.len() > SHARED_UP_TO {
                return new;
            }
            if recent.len() == RECENT {
                recent.remove(0);
            }
            recent.push(new.clone());
            new
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits, with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(with = "owner_name")]
    pub user: OwnerName,
    #[serde(with = "owner_name")]
    pub group: OwnerName,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    /// The filesystem's device number (`st_dev`).
    pub device: u64,
    pub links: u64,
    /// For character and block devices: `st_rdev`.
    pub rdev: u64,
    pub size: u64,
    /// Files: the content, chunk by chunk.
    pub content: Vec<BlobId>,
    /// Directories: the tree blob of the directory.
    pub subtree: Option<BlobId>,
    #[serde(with = "serde_bytes")]
    pub link_target: Vec<u8>,
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// A node with only a name and kind set; callers fill the rest.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: owner_name::shared(""),
            group: owner_name::shared(""),
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            link_target: Vec::new(),
            xattrs: Vec::new(),
        }
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// Whether `name` is safe as one path component: not empty, not `.` or `..`,
/// and free of `/` and NUL.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("tree encodes")
    }

    /// The encoding of the tree of these nodes (what [`Tree::encode`] gives
    /// for them), from borrowed nodes: a tree being built need not own them.
    pub fn encode_nodes(nodes: &[&Node]) -> Vec<u8> {
        /// Serialized as [`Tree`] is: a struct of one sequence of nodes.
        #[derive(Serialize)]
        struct Borrowed<'a> {
            nodes: &'a [&'a Node],
        }
        postcard::to_allocvec(&Borrowed { nodes }).expect("tree encodes")
    }

    /// Decodes and checks a tree read from the repository.
    pub fn decode(id: &BlobId, bytes: &[u8]) -> Result<Self> {
        let what = || format!("tree {id}");
        let tree: Tree = crate::codec::decode_exact(bytes).map_err(|e| Error::corrupt(what(), e))?;
        for (i, node) in tree.nodes.iter().enumerate() {
            if !is_valid_name(&node.name) {
                return Err(Error::corrupt(
                    what(),
                    format!("entry name {:?} is not a valid file name", node.name_lossy()),
                ));
            }
            if i > 0 && tree.nodes[i - 1].name >= node.name {
                return Err(Error::corrupt(what(), "entries are not strictly sorted by name"));
            }
            if (node.kind == NodeKind::Dir) != node.subtree.is_some() {
                return Err(Error::corrupt(
                    what(),
                    format!("entry {:?} has a subtree only a directory may have", node.name_lossy()),
                ));
            }
        }
        Ok(tree)
    }

    pub fn load(repo: &Repository, id: &BlobId) -> Result<Self> {
        let bytes = repo.read_tree_blob(id)?;
        Self::decode(id, &bytes)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// [`Tree::find`], trying the entry at `hint` first: a directory listed
    /// again holds most names at the index they had (all of them when it is
    /// unchanged), which saves the binary search for each.
    pub fn find_near(&self, name: &[u8], hint: usize) -> Option<&Node> {
        match self.nodes.get(hint) {
            Some(node) if node.name == name => Some(node),
            _ => self.find(name),
        }
    }
}

/// Splits an absolute or relative path into its components as bytes,
/// skipping `/` and `.`. Returns `None` for paths with `..`.
pub fn path_components(path: &std::path::Path) -> Option<Vec<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    use std::path::Component;
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
            Component::Normal(name) => out.push(name.as_bytes().to_vec()),
        }
    }
    Some(out)
}

/// Follows `components` down from the tree `root`. Returns the node at that
/// path, or `None` when it is not in the snapshot. An empty path has no node.
pub fn lookup_path(repo: &Repository, root: &BlobId, components: &[Vec<u8>]) -> Result<Option<Node>> {
    let mut tree_id = *root;
    for (i, name) in components.iter().enumerate() {
        let tree = Tree::load(repo, &tree_id)?;
        let Some(node) = tree.find(name) else {
            return Ok(None);
        };
        if i + 1 == components.len() {
            return Ok(Some(node.clone()));
        }
        match node.subtree {
            Some(sub) => tree_id = sub,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Visits every tree reachable from `roots` once, depth-first, with the path
/// of the directory it lists. A tree that cannot be loaded is passed to
/// `on_error` and its subtrees are not visited. Remembers visited tree ids,
/// so memory grows with the number of distinct directories.
pub fn walk_trees(
    repo: &Repository,
    roots: &[BlobId],
    visit: &mut dyn FnMut(&BlobId, &Tree, &std::path::Path) -> Result<()>,
    on_error: &mut dyn FnMut(&BlobId, &std::path::Path, Error) -> Result<()>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<(BlobId, std::path::PathBuf)> = roots
        .iter()
        .rev()
        .map(|r| (*r, std::path::PathBuf::from("/")))
        .collect();
    while let Some((id, path)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let tree = match Tree::load(repo, &id) {
            Ok(tree) => tree,
            Err(e) => {
                on_error(&id, &path, e)?;
                continue;
            }
        };
        visit(&id, &tree, &path)?;
        for node in tree.nodes.iter().rev() {
            if let Some(sub) = node.subtree {
                use std::os::unix::ffi::OsStrExt;
                stack.push((sub, path.join(std::ffi::OsStr::from_bytes(&node.name))));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node_strategy() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(1u8..=255, 1..20),
            any::<u32>(),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::collection::vec(any::<u8>(), 0..30),
        )
            .prop_map(|(name, mode, mtime, size, content, value)| {
                let mut node = Node::new(name, NodeKind::File);
                node.mode = mode;
                node.mtime_ns = mtime;
                node.size = size;
                node.content = content.into_iter().map(BlobId).collect();
                node.xattrs = vec![Xattr {
                    name: b"user.x".to_vec(),
                    value,
                }];
                node
            })
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(node_strategy(), 0..10)) {
            let mut nodes: Vec<Node> = nodes.into_iter().filter(|n| is_valid_name(&n.name)).collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let tree = Tree { nodes };
            let id = BlobId([0; 32]);
            prop_assert_eq!(Tree::decode(&id, &tree.encode()).unwrap(), tree);
        }

        /// Trees built from borrowed nodes are stored byte for byte as owned ones.
        #[test]
        fn borrowed_nodes_encode_as_the_tree(nodes in proptest::collection::vec(node_strategy(), 0..10)) {
            let borrowed: Vec<&Node> = nodes.iter().collect();
            prop_assert_eq!(Tree::encode_nodes(&borrowed), Tree { nodes: nodes.clone() }.encode());
        }
    }

    #[test]
    fn hostile_names_are_rejected() {
        let id = BlobId([0; 32]);
        for bad in [&b".."[..], b".", b"", b"a/b", b"a\0b"] {
            let tree = Tree {
                nodes: vec![Node::new(bad.to_vec(), NodeKind::File)],
            };
            assert!(Tree::decode(&id, &tree.encode()).is_err(), "{bad:?}");
        }
        let dup = Tree {
            nodes: vec![
                Node::new(b"a".to_vec(), NodeKind::File),
                Node::new(b"a".to_vec(), NodeKind::File),
            ],
        };
        assert!(Tree::decode(&id, &dup.encode()).is_err());
        let dir_without_subtree = Tree {
            nodes: vec![Node::new(b"d".to_vec(), NodeKind::Dir)],
        };
        assert!(Tree::decode(&id, &dir_without_subtree.encode()).is_err());
        assert!(Tree::decode(&id, b"\xff\xff\xff\xff\xff\xff\xff").is_err());
    }
}
