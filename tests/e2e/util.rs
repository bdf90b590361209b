//! Helpers for the end-to-end tests: [`Snap`], a handle on one repository
//! and index cache that runs the real binary; builders of source trees; and
//! [`tree_differences`], which compares two directory trees entry by entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";
/// Chunk sizes (MIN,AVG,MAX) that make small test files span many chunks.
pub const SMALL_CHUNKS: &str = "4096,16384,65536";
pub const MIB: u64 = 1 << 20;

/// Environment variables snap reads; removed from every command so the
/// caller's environment cannot leak into a test.
pub const SNAP_ENV: [&str; 15] = [
    "SNAP_PROFILE",
    "SNAP_CONFIG",
    "SNAP_IN_HOOK",
    "SNAP_COMMAND",
    "SNAP_REPOSITORY",
    "SNAP_FROM_REPOSITORY",
    "SNAP_FROM_PASSWORD",
    "SNAP_FROM_PASSWORD_FILE",
    "SNAP_FROM_PASSWORD_COMMAND",
    "SNAP_PASSWORD",
    "SNAP_PASSWORD_FILE",
    "SNAP_PASSWORD_COMMAND",
    "SNAP_NEW_PASSWORD",
    "SNAP_CACHE_DIR",
    "SNAP_LOG",
];

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("snap-e2e-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A path as a `&str` argument (temporary paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Where a full restore into `target` puts the source path `source`.
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source path"))
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stdout: String = stdout.chars().take(4000).collect();
    format!(
        "exit status: {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}\n{}",
        describe(out)
    );
}

/// One repository location and one index cache, each in its own temporary
/// directory, and the password (or none) snap is given.
pub struct Snap {
    dir: TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
    /// Given as `SNAP_PASSWORD`; `None` gives no password at all.
    pub password: Option<String>,
    /// Run snap as this (uid, gid) instead of the test's user (root only).
    pub user: Option<(u32, u32)>,
    /// Extra environment for every command (e.g. S3 credentials).
    pub env: Vec<(String, String)>,
}

impl Snap {
    /// A location without a repository yet.
    pub fn new() -> Snap {
        let dir = tempdir();
        Snap {
            repo: dir.path().join("repo"),
            cache: dir.path().join("cache"),
            dir,
            password: Some(PASSWORD.into()),
            user: None,
            env: Vec::new(),
        }
    }

    /// An encrypted repository with a fast key derivation and `extra` init flags.
    pub fn init(extra: &[&str]) -> Snap {
        let snap = Snap::new();
        snap.init_repo(extra);
        snap
    }

    /// An unencrypted repository (and no password anywhere).
    pub fn init_unencrypted(extra: &[&str]) -> Snap {
        let mut snap = Snap::new();
        snap.password = None;
        let mut args = vec!["--no-encryption"];
        args.extend_from_slice(extra);
        snap.init_repo(&args);
        snap
    }

    /// A location for a repository that snap reaches as a user without
    /// privileges: as root, `nobody` (uid/gid 65534), owning the location;
    /// otherwise the test's own user. `None` (with a note) when `nobody`
    /// cannot be used here or cannot reach `sources`.
    pub fn unprivileged(sources: &Path) -> Option<Snap> {
        let mut snap = Snap::new();
        if !is_root() {
            return Some(snap);
        }
        let (uid, gid) = (65534, 65534);
        let closed = sources
            .ancestors()
            .find(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0));
        if let Some(closed) = closed {
            eprintln!("note: {} is closed to other users; test skipped", closed.display());
            return None;
        }
        chown(snap.scratch(), uid, gid);
        chmod(snap.scratch(), 0o755);
        snap.user = Some((uid, gid));
        // Spawning as another user can be forbidden (no CAP_SETUID in a container).
        if let Err(e) = snap.command().arg("snapshots").output() {
            eprintln!("note: cannot run snap as uid {uid} ({e}); test skipped");
            return None;
        }
        Some(snap)
    }

    pub fn init_repo(&self, extra: &[&str]) {
        let mut args = vec!["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// A directory beside the repository for the test's own files.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snap"));
        cmd.arg("-r").arg(&self.repo).arg("--cache-dir").arg(&self.cache);
        for var in SNAP_ENV {
            cmd.env_remove(var);
        }
        if let Some(password) = &self.password {
            cmd.env("SNAP_PASSWORD", password);
        }
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run snap {args:?}: {e}"))
    }

    /// Runs and checks the exit code.
    #[track_caller]
    pub fn run_code(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "snap {args:?}: expected exit code {code}\n{}",
            describe(&out)
        );
        out
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        self.run_code(args, 0)
    }

    /// Runs with `input` on standard input.
    pub fn run_with_stdin(&self, args: &[&str], input: Vec<u8>) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn snap");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || {
            // snap may stop reading early on an error; that shows in its output.
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait for snap");
        writer.join().expect("stdin writer");
        out
    }

    /// `create --json ARGS`, expecting success; the parsed JSON.
    #[track_caller]
    pub fn create(&self, args: &[&str]) -> Value {
        let mut all = vec!["create", "--json"];
        all.extend_from_slice(args);
        parse_json(&self.ok(&all))
    }

    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.ok(&["snapshots", "--json"]);
        match parse_json(&out) {
            Value::Array(items) => items,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    /// `ls --json SNAPSHOT`: one object per line.
    pub fn ls(&self, snapshot: &str) -> Vec<Value> {
        let out = self.ok(&["ls", "--json", snapshot]);
        String::from_utf8(out.stdout.clone())
            .expect("ls --json is UTF-8")
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("ls --json line {line:?}: {e}\n{}", describe(&out)))
            })
            .collect()
    }

    /// The paths `ls --json` lists.
    pub fn ls_paths(&self, snapshot: &str) -> BTreeSet<String> {
        self.ls(snapshot)
            .iter()
            .map(|e| e["path"].as_str().expect("path is a string").to_string())
            .collect()
    }

    pub fn restore(&self, snapshot: &str, target: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["restore", snapshot, "--target", s(target)];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

#[track_caller]
pub fn parse_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(out)))
}

/// A summary counter of `create --json` output.
#[track_caller]
pub fn summary(created: &Value, field: &str) -> u64 {
    created["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary.{field} missing in {created}"))
}

// ---------------------------------------------------------------- file data

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// Writes `len` pseudo-random bytes (a function of `seed`) to a new file.
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut file = std::io::BufWriter::new(File::create(path).expect("create file"));
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n]).expect("write file");
        left -= n as u64;
    }
    file.into_inner().expect("flush").sync_all().ok();
}

/// Sets a path's access and modification times without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let time = Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// Gives every entry under `root` (and `root`) a distinct past mtime with
/// nanoseconds, children before their directory so the times stick.
pub fn set_tree_times(root: &Path) {
    fn visit(path: &Path, counter: &mut i64) {
        let meta = fs::symlink_metadata(path).expect("lstat");
        if meta.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)
                .expect("read_dir")
                .map(|e| e.expect("dir entry").file_name())
                .collect();
            names.sort();
            for name in names {
                visit(&path.join(name), counter);
            }
        }
        *counter += 1;
        // 2009-02-13T23:31:30Z plus a few hours; nanoseconds vary too.
        set_mtime(
            path,
            1_234_567_890 + *counter * 3_607,
            (*counter as u32 * 7_919_311) % 1_000_000_000,
        );
    }
    let mut counter = 0;
    visit(root, &mut counter);
}

pub fn mkfifo(path: &Path, mode: u32) {
    use rustix::fs::{FileType, Mode, CWD};
    rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(mode), 0)
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Makes every directory under `path` writable again so the temporary
/// directory can be removed (matters when not running as root).
pub fn make_removable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                make_removable(&entry.path());
            }
        }
    }
}

/// Whether user.* extended attributes can be set on files in `dir`.
pub fn xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"probe").expect("write probe");
    let ok = xattr::set(&probe, "user.probe", b"1").is_ok();
    fs::remove_file(&probe).expect("remove probe");
    ok
}

/// What [`build_rich_tree`] managed to create.
#[derive(Debug, Default)]
pub struct RichTree {
    pub xattrs: bool,
    pub device: bool,
    pub foreign_owner: bool,
    /// The sparse file, when asked for.
    pub sparse: Option<PathBuf>,
}

/// Fills `root` (an existing directory) with every kind of entry snap
/// handles: regular files of many sizes, hard links, symlinks (relative,
/// absolute, dangling, to a directory), a fifo, a socket, a device node
/// (root only), nested and empty directories, non-UTF-8 names, xattrs, odd
/// modes and owners, and distinct past mtimes. With `sparse`, also a 50 MiB
/// file with only a few blocks written.
pub fn build_rich_tree(root: &Path, sparse: bool) -> RichTree {
    use std::ffi::OsStr;
    let mut info = RichTree::default();
    let w = |rel: &str, data: &[u8]| fs::write(root.join(rel), data).expect("write file");

    for dir in [
        "dir/sub/deeper",
        "emptydir",
        "setgid",
        "sticky",
        "ro",
        "owned_dir",
        "dir with spaces",
    ] {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    w("empty", b"");
    w("small.txt", b"hello, world\n");
    w("dir/sub/deeper/leaf.txt", b"deep down\n");
    w("dir with spaces/it's \"quoted\".txt", b"quotes\n");
    w("line\nbreak", b"a newline in the name\n");
    w("big.bin", &random_bytes(MIB as usize + 12_345, 1));
    w("dir/medium.bin", &random_bytes(200_000, 2));
    // The same content under another name: stored once, restored twice.
    w("dir/sub/big-copy.bin", &random_bytes(MIB as usize + 12_345, 1));
    // Compressible content longer than the max chunk.
    w("text.log", "a log line that repeats\n".repeat(20_000).as_bytes());
    w("secret", b"mode 600\n");
    chmod(&root.join("secret"), 0o600);
    w("script.sh", b"#!/bin/sh\necho hi\n");
    chmod(&root.join("script.sh"), 0o755);
    w("readonly", b"mode 444\n");
    chmod(&root.join("readonly"), 0o444);
    w("setuid", b"mode 4755\n");
    chmod(&root.join("setuid"), 0o4755);
    w("setgid/inside", b"in a setgid directory\n");
    chmod(&root.join("setgid"), 0o2755);
    w("sticky/inside", b"in a sticky directory\n");
    chmod(&root.join("sticky"), 0o1777);
    w("ro/inside", b"in a read-only directory\n");

    // Non-UTF-8 names: a Latin-1 file name and a directory.
    let latin1 = root.join(OsStr::from_bytes(b"caf\xe9"));
    fs::write(&latin1, b"latin-1 name\n").expect("write latin-1 name");
    let bad_dir = root.join(OsStr::from_bytes(b"dir\xff\xfe"));
    fs::create_dir(&bad_dir).expect("mkdir non-UTF-8");
    fs::write(bad_dir.join(OsStr::from_bytes(b"\x80inner")), b"inner\n").expect("write");

    // Hard links: three names of one file, across directories.
    w("hard_a", b"one inode, three names\n");
    fs::hard_link(root.join("hard_a"), root.join("dir/hard_b")).expect("hard link");
    fs::hard_link(root.join("hard_a"), root.join("dir/sub/hard_c")).expect("hard link");
    // And a second, separate group.
    w("pair_1", b"another inode, two names\n");
    fs::hard_link(root.join("pair_1"), root.join("pair_2")).expect("hard link");

    // Symlinks.
    let link = |target: &str, rel: &str| std::os::unix::fs::symlink(target, root.join(rel)).expect("symlink");
    link("small.txt", "link_rel");
    link("../big.bin", "dir/link_up");
    link("/etc/passwd", "link_abs");
    link("does/not/exist", "link_dangling");
    link("dir", "link_dir");
    std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9"), root.join("link_latin1")).expect("symlink");

    // Special files.
    mkfifo(&root.join("fifo"), 0o640);
    drop(std::os::unix::net::UnixListener::bind(root.join("dir/socket")).expect("bind a unix socket"));
    if is_root() {
        use rustix::fs::{FileType, Mode, CWD};
        let dev = rustix::fs::makedev(1, 3);
        info.device = rustix::fs::mknodat(
            CWD,
            root.join("null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o620),
            dev,
        )
        .is_ok();
        if !info.device {
            eprintln!("note: cannot create a device node here; that part is not tested");
        }
        w("owned", b"owned by someone else\n");
        chown(&root.join("owned"), 1234, 5678);
        chown(&root.join("owned_dir"), 4321, 4321);
        info.foreign_owner = true;
    }

    if xattrs_supported(root) {
        info.xattrs = true;
        let set = |rel: &str, name: &str, value: &[u8]| {
            xattr::set(root.join(rel), name, value).unwrap_or_else(|e| panic!("xattr {rel} {name}: {e}"))
        };
        set("small.txt", "user.comment", b"a comment");
        set("small.txt", "user.binary", &[0, 1, 2, 0xff, 0xfe]);
        set("small.txt", "user.empty", b"");
        set("dir", "user.on_a_dir", b"directory attribute");
        set("hard_a", "user.linked", b"shared by all names");
        set("big.bin", "user.big", &random_bytes(3000, 3));
    } else {
        eprintln!("note: the filesystem refuses user.* xattrs; xattrs are not tested");
    }

    if sparse {
        let path = root.join("sparse.img");
        let file = File::create(&path).expect("create sparse file");
        file.set_len(50 * MIB).expect("set_len");
        use std::os::unix::fs::FileExt;
        for (i, offset) in [0, 10 * MIB, 33 * MIB + 123, 50 * MIB - 100].into_iter().enumerate() {
            let block = vec![0xa0 + i as u8; if offset == 50 * MIB - 100 { 100 } else { 4096 }];
            file.write_all_at(&block, offset).expect("write block");
        }
        drop(file);
        info.sparse = Some(path);
    }

    // Times before 1970 and after 2038 (set below).
    w("before-1970", b"1938\n");
    w("after-2038", b"2100\n");

    // Modes that would stop writes last, then the times.
    chmod(&root.join("ro"), 0o555);
    set_tree_times(root);
    set_mtime(&root.join("before-1970"), -999_205_079, 250_000_000);
    set_mtime(&root.join("after-2038"), 4_102_444_800, 999_999_999);
    info
}

/// Regular-file entries (names, so hard links count once per name) under `root`.
pub fn count_files(root: &Path) -> u64 {
    walk(root).values().filter(|m| m.file_type().is_file()).count() as u64
}

// ---------------------------------------------------------------- comparing trees

/// Every entry under `root` (root itself as ""), by relative path, with its
/// `lstat` metadata. Symlinks are not followed.
pub fn walk(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    fn visit(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, fs::Metadata>) {
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let is_dir = meta.is_dir();
        out.insert(rel.to_path_buf(), meta);
        if is_dir {
            for entry in fs::read_dir(&path).unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display())) {
                visit(root, &rel.join(entry.expect("dir entry").file_name()), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, Path::new(""), &mut out);
    out
}

/// What [`tree_differences`] compares besides types, names, contents,
/// modes and symlink targets (always compared).
#[derive(Clone, Copy, Debug)]
pub struct Compare {
    pub mtime: bool,
    pub owner: bool,
    pub xattrs: bool,
}

impl Compare {
    /// Everything snap promises to restore when run by this user.
    pub fn all() -> Compare {
        Compare {
            mtime: true,
            owner: true,
            xattrs: true,
        }
    }
}

fn kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else {
        "unknown"
    }
}

/// user.* extended attributes of a path (not following symlinks).
pub fn user_xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if name.as_bytes().starts_with(b"user.") {
                let value = xattr::get(path, &name).ok().flatten().unwrap_or_default();
                out.insert(name.as_bytes().to_vec(), value);
            }
        }
    }
    out
}

/// Whether two files have the same bytes (streamed, for large files).
pub fn same_content(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Hard-link groups (sets of two or more names of one inode) among the
/// regular files of a walked tree.
fn link_groups(entries: &BTreeMap<PathBuf, fs::Metadata>) -> BTreeSet<Vec<PathBuf>> {
    let mut by_inode: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for (rel, meta) in entries {
        if meta.is_file() {
            by_inode.entry((meta.dev(), meta.ino())).or_default().push(rel.clone());
        }
    }
    by_inode
        .into_values()
        .filter(|names| names.len() > 1)
        .map(|mut names| {
            names.sort();
            names
        })
        .collect()
}

/// Every difference between the tree at `expected` and the one at `actual`.
pub fn tree_differences(expected: &Path, actual: &Path, what: Compare) -> Vec<String> {
    let want = walk(expected);
    let got = walk(actual);
    let mut diffs = Vec::new();
    for rel in want.keys().filter(|k| !got.contains_key(*k)) {
        diffs.push(format!("missing: {rel:?}"));
    }
    for rel in got.keys().filter(|k| !want.contains_key(*k)) {
        diffs.push(format!("unexpected: {rel:?}"));
    }
    for (rel, w) in &want {
        let Some(g) = got.get(rel) else { continue };
        let (kw, kg) = (kind(w), kind(g));
        if kw != kg {
            diffs.push(format!("{rel:?}: type {kw} became {kg}"));
            continue;
        }
        if kw != "symlink" && w.mode() & 0o7777 != g.mode() & 0o7777 {
            diffs.push(format!(
                "{rel:?}: mode {:o} became {:o}",
                w.mode() & 0o7777,
                g.mode() & 0o7777
            ));
        }
        if what.owner && (w.uid(), w.gid()) != (g.uid(), g.gid()) {
            diffs.push(format!(
                "{rel:?}: owner {}:{} became {}:{}",
                w.uid(),
                w.gid(),
                g.uid(),
                g.gid()
            ));
        }
        if what.mtime && (w.mtime(), w.mtime_nsec()) != (g.mtime(), g.mtime_nsec()) {
            diffs.push(format!(
                "{rel:?}: mtime {}.{:09} became {}.{:09}",
                w.mtime(),
                w.mtime_nsec(),
                g.mtime(),
                g.mtime_nsec()
            ));
        }
        let (pw, pg) = (expected.join(rel), actual.join(rel));
        match kw {
            "file" => {
                if w.len() != g.len() {
                    diffs.push(format!("{rel:?}: size {} became {}", w.len(), g.len()));
                } else if !same_content(&pw, &pg) {
                    diffs.push(format!("{rel:?}: content differs"));
                }
            }
            "symlink" => {
                let (tw, tg) = (fs::read_link(&pw).ok(), fs::read_link(&pg).ok());
                if tw != tg {
                    diffs.push(format!("{rel:?}: symlink target {tw:?} became {tg:?}"));
                }
            }
            "chardev" | "blockdev" if w.rdev() != g.rdev() => {
                diffs.push(format!("{rel:?}: device {:x} became {:x}", w.rdev(), g.rdev()));
            }
            _ => {}
        }
        if what.xattrs {
            let (xw, xg) = (user_xattrs(&pw), user_xattrs(&pg));
            if xw != xg {
                diffs.push(format!("{rel:?}: xattrs {xw:?} became {xg:?}"));
            }
        }
    }
    let (lw, lg) = (link_groups(&want), link_groups(&got));
    if lw != lg {
        diffs.push(format!("hard links: {lw:?} became {lg:?}"));
    }
    diffs
}

#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path, what: Compare) {
    let diffs = tree_differences(expected, actual, what);
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n  {}",
        actual.display(),
        expected.display(),
        diffs.join("\n  ")
    );
}

/// The names directly in a directory, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------- the repository on disk

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(rel, _)| dir.join(rel))
        .collect()
}

/// Total size of the regular files under `dir`.
pub fn size_under(dir: &Path) -> u64 {
    walk(dir).values().filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// Every file under `dir` with its bytes, to show a directory did not change.
pub fn contents_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

/// The pack files of a repository with their sizes, largest first.
pub fn packs(repo: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<(PathBuf, u64)> = walk(&repo.join("data"))
        .into_iter()
        .filter(|(rel, m)| m.is_file() && !rel.file_name().is_some_and(|n| n.as_bytes().starts_with(b".")))
        .map(|(rel, m)| (repo.join("data").join(rel), m.len()))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Regular files in a repository subdirectory (e.g. "index", "snapshots").
pub fn object_count(repo: &Path, sub: &str) -> usize {
    match fs::read_dir(repo.join(sub)) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| !e.file_name().as_bytes().starts_with(b"."))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .count(),
        Err(_) => 0,
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------- time

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00.5Z`, `...+02:00`) into
/// seconds and nanoseconds since the Unix epoch; `None` if malformed.
pub fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(r)?;
        (!part.is_empty() && part.bytes().all(|c| c.is_ascii_digit())).then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &text[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return None;
        }
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = digits(i + 1..i + 3)? * 60 + digits(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((secs, nanos))
}

pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i128
}

#[test]
fn rfc3339_parser_agrees_with_known_instants() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
    assert_eq!(
        parse_rfc3339("2009-02-13T23:31:30.123456789Z"),
        Some((1_234_567_890, 123_456_789))
    );
    assert_eq!(
        parse_rfc3339("2009-02-14T01:31:30.5+02:00"),
        Some((1_234_567_890, 500_000_000))
    );
    assert_eq!(parse_rfc3339("2009-02-13 23:31:30Z"), None);
    assert_eq!(parse_rfc3339("2009-02-13T23:31:30"), None);
    assert_eq!(parse_rfc3339("2009-13-13T23:31:30Z"), None);
}

/// The comparison is only as good as its power to see differences: two
/// identically built trees compare equal, and each kind of change is caught.
#[test]
fn tree_comparison_sees_every_kind_of_difference() {
    let work = tempdir();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let info = build_rich_tree(&a, false);
    build_rich_tree(&b, false);
    assert_same_tree(&a, &b, Compare::all());

    let expect_diff = |what: &str, undo: &dyn Fn()| {
        let diffs = tree_differences(&a, &b, Compare::all());
        assert!(
            diffs.iter().any(|d| d.contains(what)),
            "a change of {what} was not seen: {diffs:?}"
        );
        undo();
        assert_same_tree(&a, &b, Compare::all());
    };
    let f = b.join("dir/medium.bin");
    let t = fs::symlink_metadata(&f).unwrap();
    let restore_time = || set_mtime(&f, t.mtime(), t.mtime_nsec() as u32);

    set_mtime(&f, t.mtime(), t.mtime_nsec() as u32 + 1);
    expect_diff("mtime", &restore_time);
    chmod(&f, 0o640);
    expect_diff("mode", &|| {
        chmod(&f, 0o644);
        restore_time();
    });
    let original = fs::read(&f).unwrap();
    let mut changed = original.clone();
    changed[100_000] ^= 1;
    fs::write(&f, &changed).unwrap();
    expect_diff("content", &|| {
        fs::write(&f, &original).unwrap();
        restore_time();
    });
    fs::remove_file(b.join("link_rel")).unwrap();
    std::os::unix::fs::symlink("big.bin", b.join("link_rel")).unwrap();
    let link_time = fs::symlink_metadata(a.join("link_rel")).unwrap();
    expect_diff("symlink target", &|| {
        fs::remove_file(b.join("link_rel")).unwrap();
        std::os::unix::fs::symlink("small.txt", b.join("link_rel")).unwrap();
        set_mtime(&b.join("link_rel"), link_time.mtime(), link_time.mtime_nsec() as u32);
        let dir = fs::symlink_metadata(&a).unwrap();
        set_mtime(&b, dir.mtime(), dir.mtime_nsec() as u32);
    });
    // A hard link replaced by a copy: same bytes, different grouping.
    let c = b.join("dir/sub/hard_c");
    let c_meta = fs::symlink_metadata(&c).unwrap();
    fs::remove_file(&c).unwrap();
    fs::write(&c, fs::read(b.join("hard_a")).unwrap()).unwrap();
    chmod(&c, c_meta.mode() & 0o7777);
    if info.xattrs {
        xattr::set(&c, "user.linked", b"shared by all names").unwrap();
    }
    set_mtime(&c, c_meta.mtime(), c_meta.mtime_nsec() as u32);
    let sub = fs::symlink_metadata(a.join("dir/sub")).unwrap();
    set_mtime(&b.join("dir/sub"), sub.mtime(), sub.mtime_nsec() as u32);
    let diffs = tree_differences(&a, &b, Compare::all());
    assert!(diffs.len() == 1 && diffs[0].starts_with("hard links"), "{diffs:?}");
    if info.xattrs {
        xattr::set(b.join("small.txt"), "user.comment", b"changed").unwrap();
        assert!(tree_differences(&a, &b, Compare::all())
            .iter()
            .any(|d| d.contains("xattrs")));
    }
    fs::write(b.join("extra"), b"").unwrap();
    assert!(tree_differences(&a, &b, Compare::all())
        .iter()
        .any(|d| d.contains("unexpected: \"extra\"")));
    fs::remove_file(b.join("empty")).unwrap();
    assert!(tree_differences(&a, &b, Compare::all())
        .iter()
        .any(|d| d.contains("missing: \"empty\"")));
    make_removable(work.path());
}

// ---------------------------------------------------------------- long-running harnesses

/// Iterations for a harness: `SNAP_TORTURE_N` when set, else `default`.
pub fn torture_n(default: usize) -> usize {
    match std::env::var("SNAP_TORTURE_N") {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SNAP_TORTURE_N={value:?} is not a number")),
        Err(_) => default,
    }
}

/// Seed for a harness's random choices: `SNAP_TORTURE_SEED` when set, else
/// `default`. Harnesses print it so that a failing run can be repeated.
pub fn torture_seed(default: u64) -> u64 {
    match std::env::var("SNAP_TORTURE_SEED") {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SNAP_TORTURE_SEED={value:?} is not a number")),
        Err(_) => default,
    }
}

/// `cp -a from to`: a copy with modes, owners, times and links.
pub fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp -a");
    assert!(
        out.status.success(),
        "cp -a {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Snap {
    /// Forgets the trees kept in the local cache (`Repository::read_tree_blob`),
    /// so that the next command reads them from the repository again.
    pub fn drop_tree_cache(&self) {
        if let Ok(entries) = fs::read_dir(&self.cache) {
            for entry in entries.flatten() {
                let _ = fs::remove_dir_all(entry.path().join("trees"));
            }
        }
    }

    /// A handle on a copy of this repository and of its index cache, in a
    /// new temporary directory, with the same password and user.
    pub fn copy(&self) -> Snap {
        let mut copy = Snap::new();
        copy_dir(&self.repo, &copy.repo);
        if self.cache.exists() {
            copy_dir(&self.cache, &copy.cache);
        }
        copy.password = self.password.clone();
        copy.user = self.user;
        copy
    }
}

/// Whether the output shows a panic (exit code 101 or a panic message).
pub fn panicked(out: &Output) -> bool {
    out.status.code() == Some(101) || String::from_utf8_lossy(&out.stderr).contains("panicked")
}

/// Sets a flag when dropped: a background thread told to stop by it stops
/// even when the test panics (`std::thread::scope` waits for its threads).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A test that cannot run here (a server it needs is not installed) says
/// why and passes, except in CI: `.ci/run` sets `SNAP_TEST_REQUIRE_ALL`,
/// where everything is installed and a skip would hide a test that never ran.
pub fn skip_note(note: String) {
    if std::env::var_os("SNAP_TEST_REQUIRE_ALL").is_some() {
        panic!("{note} (SNAP_TEST_REQUIRE_ALL is set: no test may be skipped)");
    }
    eprintln!("{note}");
}
