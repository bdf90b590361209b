//! File metadata between the filesystem and tree [`Node`]s: reading it on
//! backup, applying it on restore. Linux/Unix only.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{AtFlags, Mode, Stat, Timespec, Timestamps, CWD};

use crate::tree::{Node, NodeKind, Xattr};

/// The node kind of a file type, `None` for types snap does not know.
pub fn node_kind(st: &Stat) -> Option<NodeKind> {
    use rustix::fs::FileType;
    Some(match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => NodeKind::File,
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        FileType::Fifo => NodeKind::Fifo,
        FileType::CharacterDevice => NodeKind::CharDevice,
        FileType::BlockDevice => NodeKind::BlockDevice,
        FileType::Socket => NodeKind::Socket,
        FileType::Unknown => return None,
    })
}

/// Caches uid -> user name and gid -> group name lookups.
#[derive(Default)]
pub struct OwnerNames {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl OwnerNames {
    pub fn user(&self, uid: u32) -> String {
        let mut users = self.users.lock().expect("names lock");
        users
            .entry(uid)
            .or_insert_with(|| {
                uzers::get_user_by_uid(uid)
                    .map(|u| u.name().to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .clone()
    }

    pub fn group(&self, gid: u32) -> String {
        let mut groups = self.groups.lock().expect("names lock");
        groups
            .entry(gid)
            .or_insert_with(|| {
                uzers::get_group_by_gid(gid)
                    .map(|g| g.name().to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// Builds a node from `lstat` data: no symlink target, extended
/// attributes, content or subtree yet.
// `stat` field types differ between targets: the casts are not all no-ops.
#[allow(clippy::unnecessary_cast)]
pub fn node_from_stat(name: Vec<u8>, kind: NodeKind, st: &Stat, names: &OwnerNames) -> Node {
    let mut node = Node::new(name, kind);
    node.mode = st.st_mode as u32 & 0o7777;
    node.uid = st.st_uid;
    node.gid = st.st_gid;
    node.user = names.user(node.uid);
    node.group = names.group(node.gid);
    let ns = |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
    node.mtime_ns = ns(st.st_mtime as i64, st.st_mtime_nsec as i64);
    node.ctime_ns = ns(st.st_ctime as i64, st.st_ctime_nsec as i64);
    node.inode = st.st_ino as u64;
    node.device = st.st_dev as u64;
    node.links = st.st_nlink as u64;
    if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        node.rdev = st.st_rdev as u64;
    }
    if kind == NodeKind::File {
        node.size = st.st_size as u64;
    }
    node
}

/// Extended attributes of `path` itself (symlinks are not followed), sorted
/// by name. Those that cannot be read are left out.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    collect_xattrs(names, |name| xattr::get(path, name))
}

/// Extended attributes of an open file, sorted by name.
pub fn read_file_xattrs(file: &std::fs::File) -> Vec<Xattr> {
    use xattr::FileExt;
    let Ok(names) = file.list_xattr() else {
        return Vec::new();
    };
    collect_xattrs(names, |name| file.get_xattr(name))
}

fn collect_xattrs(
    names: xattr::XAttrs,
    get: impl Fn(&std::ffi::OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> Vec<Xattr> {
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = get(&name).ok()??;
            Some(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Which parts of a node's metadata could not be restored.
#[derive(Debug, Default)]
pub struct ApplyErrors(pub Vec<String>);

/// Applies ownership (when `chown` is set), mode, extended attributes and
/// times to the entry at `path`, which is never followed if it is a symlink.
/// Times come last, since every other change touches ctime and some mtime.
pub fn apply_metadata(path: &Path, node: &Node, chown: bool) -> ApplyErrors {
    let mut errors = ApplyErrors::default();
    if chown {
        let uid = rustix::fs::Uid::from_raw(node.uid);
        let gid = rustix::fs::Gid::from_raw(node.gid);
        if let Err(e) = rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW) {
            errors.0.push(format!("owner: {e}"));
        }
    }
    if node.kind != NodeKind::Symlink {
        // Without root, setuid/setgid bits of files we could not chown are dropped by the kernel.
        if let Err(e) = rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(node.mode), AtFlags::empty()) {
            errors.0.push(format!("mode: {e}"));
        }
    }
    for attr in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(&attr.name);
        if let Err(e) = xattr::set(path, name, &attr.value) {
            errors.0.push(format!("xattr {}: {e}", name.to_string_lossy()));
        }
    }
    let mtime = Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = Timestamps {
        last_access: mtime,
        last_modification: mtime,
    };
    if let Err(e) = rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW) {
        errors.0.push(format!("times: {e}"));
    }
    errors
}

/// Creates a fifo, socket or device node at `path`.
pub fn make_special(path: &Path, node: &Node) -> std::io::Result<()> {
    use rustix::fs::FileType;
    let file_type = match node.kind {
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharacterDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        _ => return Err(std::io::Error::other("not a special file")),
    };
    rustix::fs::mknodat(CWD, path, file_type, Mode::from_raw_mode(node.mode & 0o777), node.rdev)?;
    Ok(())
}
