//! `snap mount`: the vfs through FUSE (the `fuser` crate), read-only.
//!
//! Inode numbers are handed out as the kernel looks entries up, one per
//! (parent, name), and kept for the life of the mount: memory grows with the
//! entries visited, not with the snapshots' size. The mount is read-only
//! (`ro`): the kernel refuses writes with EROFS before they reach us.
//! Permissions are not checked (no `default_permissions`): whoever may use
//! the mount (its owner, or everyone with `--allow-other`) may read every
//! file, as whoever knows the repository password can with `restore`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};
use snap_core::tree::NodeKind;
use snap_core::vfs::{Entry, OpenFile, Vfs};

/// Snapshots do not change: the kernel may keep what it was told.
const TTL: Duration = Duration::from_secs(3600);

/// How `snap mount` mounts.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Let other users use the mount (`allow_other`; needs `user_allow_other`
    /// in /etc/fuse.conf unless root).
    pub allow_other: bool,
}

struct Inodes {
    /// Index `ino - 1`: the entry and its parent's inode.
    entries: Vec<(Entry, u64)>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
}

struct SnapFs {
    vfs: Arc<Vfs>,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    uid: u32,
}

fn errno(e: &snap_core::Error) -> Errno {
    tracing::warn!("{e}");
    Errno::EIO
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

impl SnapFs {
    fn attr(&self, ino: u64, e: &Entry) -> FileAttr {
        let synthetic = e.name.is_empty() || ino == 1;
        FileAttr {
            ino: INodeNo(ino),
            size: e.size,
            blocks: e.size.div_ceil(512),
            atime: time(e.mtime_ns),
            mtime: time(e.mtime_ns),
            ctime: time(e.ctime_ns),
            crtime: time(e.mtime_ns),
            kind: file_type(e.kind),
            perm: (e.mode & 0o7777) as u16,
            nlink: if e.is_dir() { 2 } else { 1 },
            // The synthetic root belongs to whoever mounted it.
            uid: if synthetic { self.uid } else { e.uid },
            gid: if synthetic { 0 } else { e.gid },
            rdev: e.rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    fn entry(&self, ino: u64) -> Option<Entry> {
        let inodes = self.inodes.lock().expect("inodes");
        inodes
            .entries
            .get((ino as usize).checked_sub(1)?)
            .map(|(e, _)| e.clone())
    }

    fn parent(&self, ino: u64) -> u64 {
        let inodes = self.inodes.lock().expect("inodes");
        inodes.entries.get(ino as usize - 1).map(|(_, p)| *p).unwrap_or(1)
    }

    /// The inode of `entry` named in `parent`, handed out on first sight.
    fn inode(&self, parent: u64, entry: &Entry) -> u64 {
        let mut inodes = self.inodes.lock().expect("inodes");
        let key = (parent, entry.name.clone());
        if let Some(&ino) = inodes.by_name.get(&key) {
            return ino;
        }
        inodes.entries.push((entry.clone(), parent));
        let ino = inodes.entries.len() as u64;
        inodes.by_name.insert(key, ino);
        ino
    }
}

impl Filesystem for SnapFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.entry(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.vfs.lookup(&dir, name.as_bytes()) {
            Ok(Some(e)) => {
                let ino = self.inode(parent.0, &e);
                reply.entry(&TTL, &self.attr(ino, &e), fuser::Generation(0));
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry(ino.0) {
            Some(e) => reply.attr(&TTL, &self.attr(ino.0, &e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.entry(ino.0) {
            Some(e) if e.kind == NodeKind::Symlink => reply.data(&e.link_target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some(e) = self.entry(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if e.kind != NodeKind::File {
            return reply.error(Errno::EINVAL);
        }
        match self.vfs.open(&e) {
            Ok(file) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.files.lock().expect("files").insert(fh, Arc::new(file));
                // The content never changes: the page cache may keep it
                // across opens.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.files.lock().expect("files").get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match self.vfs.read(&file, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Sent at every close: a read-only filesystem has nothing to flush
    /// (fuser's default answers ENOSYS and logs a warning each time).
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    /// access(2) on a file: the kernel already answers EROFS for W_OK on
    /// this read-only mount and checks modes itself where it must, so yes
    /// (what fuser's default ENOSYS also means to the kernel, minus a
    /// warning logged for every call).
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().expect("files").remove(&fh.0);
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(dir) = self.entry(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if !dir.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = match self.vfs.list(&dir) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        let parent = self.parent(ino.0);
        let dots = [
            (ino.0, FileType::Directory, b".".to_vec()),
            (parent, FileType::Directory, b"..".to_vec()),
        ];
        let all = dots.into_iter().chain(
            entries
                .iter()
                .map(|e| (self.inode(ino.0, e), file_type(e.kind), e.name.clone())),
        );
        for (i, (child, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }
}

/// How a mount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Unmounted from outside (`fusermount3 -u`, `umount`).
    Outside,
    /// Unmounted on `cancel`.
    Unmounted,
    /// On `cancel`, but a process held the mount busy (an open file, a
    /// working directory in it): detached lazily. The mount point is free
    /// at once; what is still open there fails once this process exits.
    Detached,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount on {path}: {error}")]
    Mount { path: PathBuf, error: std::io::Error },
    #[error("cannot unmount {path}: {error}")]
    Unmount { path: PathBuf, error: std::io::Error },
    #[error("the FUSE session on {path} failed: {error}")]
    Session { path: PathBuf, error: std::io::Error },
}

/// Mounts `vfs` at `mountpoint` and serves it until `cancel` is set (then
/// unmounts, lazily when the mount is busy) or the mount goes away
/// (`fusermount3 -u`). `ready` is called once it is mounted.
pub fn mount(
    vfs: Arc<Vfs>,
    mountpoint: &Path,
    options: &MountOptions,
    cancel: &AtomicBool,
    ready: impl FnOnce(),
) -> Result<Ended, MountError> {
    // fuser mounts the canonical path; unmount the same one.
    let path = mountpoint.canonicalize().map_err(|error| MountError::Mount {
        path: mountpoint.to_path_buf(),
        error,
    })?;
    let root = vfs.root();
    let fs = SnapFs {
        vfs,
        inodes: Mutex::new(Inodes {
            entries: vec![(root, 1)],
            by_name: HashMap::new(),
        }),
        files: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
        // SAFETY: getuid has no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("snap".into()),
        MountOption::Subtype("snap".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
        // Without it the kernel lets every local user open every file: this
        // filesystem does no permission checks of its own, so the kernel must
        // check the modes and owners the snapshot recorded.
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.n_threads = Some(2);
    let session = fuser::spawn_mount(fs, &path, &config).map_err(|error| MountError::Mount {
        path: path.clone(),
        error,
    })?;
    ready();
    let session_error = |error| MountError::Session {
        path: path.clone(),
        error,
    };
    loop {
        if session.guard.is_finished() {
            // Unmounted from outside (`fusermount3 -u`).
            session.join().map_err(session_error)?;
            return Ok(Ended::Outside);
        }
        if cancel.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Unmounted here rather than by fuser's `umount_and_join`, which gives
    // up on a busy mount and leaves it behind, dead (ENOTCONN for all).
    match unmount(&path, false) {
        Ok(()) => {
            // The kernel ends the session: its thread returns.
            session.join().map_err(session_error)?;
            Ok(Ended::Unmounted)
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            unmount(&path, true).map_err(|error| MountError::Unmount {
                path: path.clone(),
                error,
            })?;
            // The session lives on until the last holder lets go, which
            // may be never: no join. Forgotten, not dropped: dropping it
            // would unmount `path` again, which may by then be another
            // mount.
            std::mem::forget(session);
            Ok(Ended::Detached)
        }
        Err(error) => Err(MountError::Unmount { path, error }),
    }
}

/// Unmounts `path` (`lazy`: detaches it, MNT_DETACH). A busy mount is
/// EBUSY. Root calls umount2; anyone else goes through the setuid
/// `fusermount3 -u [-z]`, as libfuse does.
fn unmount(path: &Path, lazy: bool) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: c_path is a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EPERM) {
        return Err(error);
    }
    let mut command = std::process::Command::new(fusermount());
    command.arg("-u");
    if lazy {
        command.arg("-z");
    }
    let out = command
        .arg("--")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if said.contains("busy") {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(std::io::Error::other(if said.is_empty() {
        format!("{} failed ({})", fusermount().to_string_lossy(), out.status)
    } else {
        said
    }))
}

/// The unmount helper: `$FUSERMOUNT_PATH` (as fuser honours it), else
/// fusermount3 when installed, else fuse 2's fusermount.
fn fusermount() -> std::ffi::OsString {
    if let Some(path) = std::env::var_os("FUSERMOUNT_PATH") {
        return path;
    }
    let has = |tool: &str| {
        std::env::var_os("PATH").is_some_and(|dirs| std::env::split_paths(&dirs).any(|d| d.join(tool).is_file()))
    };
    if has("fusermount3") || !has("fusermount") {
        "fusermount3".into()
    } else {
        "fusermount".into()
    }
}
