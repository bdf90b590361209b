//! File metadata between the filesystem and tree [`Node`]s: reading it on
//! backup, applying it on restore. Linux/Unix only.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, Mode, Stat, Timespec, Timestamps, XattrFlags, CWD};

use crate::tree::{Node, NodeKind, OwnerName, Xattr};

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

/// Caches uid -> user name and gid -> group name lookups; a name handed
/// out is shared, not copied.
#[derive(Default)]
pub struct OwnerNames {
    users: Mutex<HashMap<u32, OwnerName>>,
    groups: Mutex<HashMap<u32, OwnerName>>,
}

impl OwnerNames {
    pub fn user(&self, uid: u32) -> OwnerName {
        let mut users = self.users.lock().expect("names lock");
        users
            .entry(uid)
            .or_insert_with(|| {
                uzers::get_user_by_uid(uid)
                    .map(|u| u.name().to_string_lossy().into())
                    .unwrap_or_default()
            })
            .clone()
    }

    pub fn group(&self, gid: u32) -> OwnerName {
        let mut groups = self.groups.lock().expect("names lock");
        groups
            .entry(gid)
            .or_insert_with(|| {
                uzers::get_group_by_gid(gid)
                    .map(|g| g.name().to_string_lossy().into())
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

/// The latest time a node can hold: times are stored as i64 nanoseconds
/// since 1970, so a later time (past 2262-04-11) is clamped to this, and an
/// earlier one (before 1677-09-21) to [`TIME_MIN_NS`].
pub const TIME_MAX_NS: i64 = i64::MAX;
pub const TIME_MIN_NS: i64 = i64::MIN;

/// Whether the modification time in `st` lies outside what a node can hold
/// (and so was clamped by [`node_from_stat`]).
// `stat` field types differ between targets: the casts are not all no-ops.
#[allow(clippy::unnecessary_cast)]
pub fn mtime_out_of_range(st: &Stat) -> bool {
    (st.st_mtime as i64)
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(st.st_mtime_nsec as i64))
        .is_none()
}

/// The warning for a time that was clamped when it was backed up.
pub fn clamped_time_warning(mtime_ns: i64) -> Option<&'static str> {
    match mtime_ns {
        TIME_MAX_NS => {
            Some("modification time is after 2262-04-11, which snap cannot store: it is saved as 2262-04-11")
        }
        TIME_MIN_NS => {
            Some("modification time is before 1677-09-21, which snap cannot store: it is saved as 1677-09-21")
        }
        _ => None,
    }
}

/// Which parts of a node's metadata could not be restored.
#[derive(Debug, Default)]
pub struct ApplyErrors(pub Vec<String>);

/// What of a node's metadata to apply.
#[derive(Debug, Clone, Copy)]
pub struct Apply {
    /// Ownership (root only, usually).
    pub chown: bool,
    /// Modification and access times: not for a file whose content is
    /// incomplete, which must not pass for the original.
    pub times: bool,
}

fn timestamps(node: &Node) -> Timestamps {
    let mtime = Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// Applies ownership, mode, extended attributes and times to an open
/// regular file or directory: through the descriptor, so nothing that
/// replaces the entry's name meanwhile can redirect the change. Times come
/// last, since every other change touches ctime and some mtime.
pub fn apply_metadata_fd(file: BorrowedFd<'_>, node: &Node, apply: Apply) -> ApplyErrors {
    apply_metadata_fd_over(file, node, apply, None)
}

/// The owner and mode an entry has now (from a `stat` of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
}

impl Owned {
    // `stat` field types differ between targets: the casts are not all no-ops.
    #[allow(clippy::unnecessary_cast)]
    pub fn of(st: &Stat) -> Owned {
        Owned {
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            mode: st.st_mode as u32 & 0o7777,
        }
    }
}

/// [`apply_metadata_fd`] for an entry whose owner and mode (`now`) are
/// known, and that nothing has changed since: they are set only where they
/// differ from the node's (restore creates most files already owned by the
/// right user, with the right mode), which saves two system calls per file.
/// Attributes and times are always set.
pub fn apply_metadata_fd_over(file: BorrowedFd<'_>, node: &Node, apply: Apply, now: Option<Owned>) -> ApplyErrors {
    let mut errors = ApplyErrors::default();
    let owner_right = now.is_some_and(|o| o.uid == node.uid && o.gid == node.gid);
    // chown clears the setuid and setgid bits: after one, the mode is set
    // whatever it was.
    let mut mode_right = now.is_some_and(|o| o.mode == node.mode);
    if apply.chown && !owner_right {
        mode_right = false;
        let uid = rustix::fs::Uid::from_raw(node.uid);
        let gid = rustix::fs::Gid::from_raw(node.gid);
        if let Err(e) = rustix::fs::fchown(file, Some(uid), Some(gid)) {
            errors.0.push(format!("owner: {e}"));
        }
    }
    // Without root, setuid/setgid bits of files we could not chown are dropped by the kernel.
    if !mode_right {
        if let Err(e) = rustix::fs::fchmod(file, Mode::from_raw_mode(node.mode)) {
            errors.0.push(format!("mode: {e}"));
        }
    }
    for attr in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(&attr.name);
        if let Err(e) = rustix::fs::fsetxattr(file, name, &attr.value, XattrFlags::empty()) {
            errors.0.push(format!("xattr {}: {e}", name.to_string_lossy()));
        }
    }
    if apply.times {
        if let Err(e) = rustix::fs::futimens(file, &timestamps(node)) {
            errors.0.push(format!("times: {e}"));
        }
    }
    errors
}

/// Applies metadata to the symlink `name` in the directory `dir`, never
/// following it (a symlink has no mode of its own on Linux).
pub fn apply_symlink_metadata(dir: BorrowedFd<'_>, name: &[u8], node: &Node, apply: Apply) -> ApplyErrors {
    let mut errors = ApplyErrors::default();
    let name = std::ffi::OsStr::from_bytes(name);
    if apply.chown {
        let uid = rustix::fs::Uid::from_raw(node.uid);
        let gid = rustix::fs::Gid::from_raw(node.gid);
        if let Err(e) = rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW) {
            errors.0.push(format!("owner: {e}"));
        }
    }
    if !node.xattrs.is_empty() {
        // lsetxattr through the directory's descriptor: only the last
        // component, the symlink itself, is looked up, and not followed.
        let path = proc_fd_path(dir).join(name);
        for attr in &node.xattrs {
            let attr_name = std::ffi::OsStr::from_bytes(&attr.name);
            if let Err(e) = rustix::fs::lsetxattr(&path, attr_name, &attr.value, XattrFlags::empty()) {
                errors.0.push(format!("xattr {}: {e}", attr_name.to_string_lossy()));
            }
        }
    }
    if apply.times {
        if let Err(e) = rustix::fs::utimensat(dir, name, &timestamps(node), AtFlags::SYMLINK_NOFOLLOW) {
            errors.0.push(format!("times: {e}"));
        }
    }
    errors
}

/// Applies metadata to a fifo, socket or device node opened with `O_PATH`
/// (opening it for reading could block or, for a device, act on it). Linux
/// has no `fchmod` for such a descriptor nor a `chmod` that does not follow
/// symlinks, so mode, attributes and times go through `/proc/self/fd`, which
/// names the opened inode itself.
pub fn apply_special_metadata(fd: BorrowedFd<'_>, node: &Node, apply: Apply) -> ApplyErrors {
    let mut errors = ApplyErrors::default();
    if apply.chown {
        let uid = rustix::fs::Uid::from_raw(node.uid);
        let gid = rustix::fs::Gid::from_raw(node.gid);
        if let Err(e) = rustix::fs::chownat(fd, "", Some(uid), Some(gid), AtFlags::EMPTY_PATH) {
            errors.0.push(format!("owner: {e}"));
        }
    }
    let path = proc_fd_path(fd);
    if let Err(e) = rustix::fs::chmodat(CWD, &path, Mode::from_raw_mode(node.mode), AtFlags::empty()) {
        errors.0.push(format!("mode: {e}"));
    }
    for attr in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(&attr.name);
        if let Err(e) = rustix::fs::setxattr(&path, name, &attr.value, XattrFlags::empty()) {
            errors.0.push(format!("xattr {}: {e}", name.to_string_lossy()));
        }
    }
    if apply.times {
        if let Err(e) = rustix::fs::utimensat(CWD, &path, &timestamps(node), AtFlags::empty()) {
            errors.0.push(format!("times: {e}"));
        }
    }
    errors
}

fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates a fifo, socket or device node `name` in the directory `dir`.
pub fn make_special(dir: BorrowedFd<'_>, name: &[u8], node: &Node) -> std::io::Result<()> {
    use rustix::fs::FileType;
    let file_type = match node.kind {
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharacterDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        _ => return Err(std::io::Error::other("not a special file")),
    };
    // Owner-only until its metadata is applied at the end.
    rustix::fs::mknodat(
        dir,
        std::ffi::OsStr::from_bytes(name),
        file_type,
        Mode::from_raw_mode(0o600),
        node.rdev,
    )?;
    Ok(())
}
