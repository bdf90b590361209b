//! `export` and `dump --archive`: a snapshot, or one path of it, written as a
//! portable archive (tar, tar.zst or zip) to any writer.
//!
//! The archive is streamed: entries are written in tree order (a directory
//! before what it holds) and a file's content is read one blob at a time,
//! each checked against its id as restore checks it, so memory does not grow
//! with the size of a file or of the snapshot (one tree per directory level
//! is held). A blob that cannot be read or does not match stops the export
//! with an error naming the file: an archive is either whole or not written.
//!
//! What each format holds (docs/design.md, "Export and import"):
//! - tar: POSIX pax. Every entry has a pax header with its full path (any
//!   length, raw bytes), `mtime` with nanoseconds, `linkpath`, the owner
//!   names and, when they do not fit the ustar fields, `uid`, `gid` and
//!   `size`; extended attributes as `SCHILY.xattr.NAME` (GNU tar's and
//!   bsdtar's form). Hard links within the exported set are link entries to
//!   the first name; symlinks, fifos and devices are their own types.
//!   Sparse files are written with their holes as zeros (GNU sparse maps
//!   are not written: the content is exact, only not sparse on disk).
//! - zip: files, directories and symlinks with Unix modes and UTC times
//!   (DOS time and the extended timestamp field, to the second); hard links
//!   are written as separate copies; other types and owners cannot be held
//!   and are reported as skipped. A last entry, [`MANIFEST_NAME`], lists the
//!   SHA-256 of every file in `sha256sum` format, so the archive can be
//!   checked anywhere with `sha256sum -c` after extraction.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{self, Node, NodeKind, Tree};

/// The name of the checksum manifest inside a zip export.
pub const MANIFEST_NAME: &str = ".snap-manifest.sha256";

/// An archive format export writes and import reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
    TarZst,
    Zip,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tar" => Ok(ArchiveFormat::Tar),
            "tar.zst" | "tzst" => Ok(ArchiveFormat::TarZst),
            "zip" => Ok(ArchiveFormat::Zip),
            other => Err(format!("unknown archive format '{other}': use tar, tar.zst or zip")),
        }
    }
}

impl ArchiveFormat {
    /// The format a file name's extension says, if it says one.
    pub fn from_file_name(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            Some(ArchiveFormat::TarZst)
        } else if name.ends_with(".tar") {
            Some(ArchiveFormat::Tar)
        } else if name.ends_with(".zip") {
            Some(ArchiveFormat::Zip)
        } else {
            None
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub format: ArchiveFormat,
    /// A path of the snapshot to export (it is the archive's top entry, under
    /// its own name); `None` for the whole snapshot (entries under their full
    /// paths, without the leading `/`).
    pub path: Option<PathBuf>,
}

/// What an export wrote.
#[derive(Debug, Default, serde::Serialize)]
pub struct ExportResult {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Second and later names of hard-linked files written as link entries.
    pub hardlinks: u64,
    /// Fifos and devices.
    pub other: u64,
    /// File content bytes written.
    pub bytes: u64,
    /// Entries the format cannot hold, with why: not in the archive.
    pub skipped: Vec<crate::progress::PathMessage>,
}

/// Writes `snapshot` (or `options.path` of it) to `out` as an archive.
pub fn export<'w, W: Write + 'w>(
    repo: &Repository,
    snapshot: &Snapshot,
    options: &ExportOptions,
    out: W,
    cancel: &AtomicBool,
) -> Result<ExportResult> {
    let mut result = ExportResult::default();
    let out: Box<dyn Write + 'w> = Box::new(out);
    let sink = match options.format {
        ArchiveFormat::Tar => Sink::Tar(Box::new(TarSink::new(TarOut::Plain(out)))),
        ArchiveFormat::TarZst => {
            let encoder = zstd::Encoder::new(out, 3).map_err(|e| Error::io("zstd encoder", e))?;
            Sink::Tar(Box::new(TarSink::new(TarOut::Zst(encoder))))
        }
        ArchiveFormat::Zip => Sink::Zip(Box::new(ZipSink::new(out))),
    };
    let mut exporter = Exporter {
        repo,
        sink,
        links: HashMap::new(),
        cancel,
    };
    walk_export(repo, snapshot, options.path.as_deref(), &mut |path, node| {
        exporter.entry(path, node, &mut result)
    })?;
    exporter.sink.finish()?;
    Ok(result)
}

/// Visits every entry to export in archive order, with its archive path
/// (relative, `/`-separated bytes). A stack of its own, not recursion: a
/// deep snapshot cannot overflow the thread's stack.
fn walk_export(
    repo: &Repository,
    snapshot: &Snapshot,
    path: Option<&Path>,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    let mut stack: Vec<(Vec<u8>, std::vec::IntoIter<Node>)> = Vec::new();
    let whole = match path {
        None => true,
        Some(p) => tree::path_components(p)
            .ok_or_else(|| Error::InvalidArgument(format!("{}: '..' is not allowed", p.display())))?
            .is_empty(),
    };
    if whole {
        stack.push((Vec::new(), Tree::load(repo, &snapshot.tree)?.nodes.into_iter()));
    } else {
        let p = path.expect("a path");
        let components = tree::path_components(p).expect("checked above");
        let node = tree::lookup_path(repo, &snapshot.tree, &components)?
            .ok_or_else(|| Error::InvalidArgument(format!("{} is not in the snapshot", p.display())))?;
        let name = node.name.clone();
        visit(&name, &node)?;
        if let Some(sub) = node.subtree {
            stack.push((name, Tree::load(repo, &sub)?.nodes.into_iter()));
        }
    }
    while let Some((dir, nodes)) = stack.last_mut() {
        let Some(node) = nodes.next() else {
            stack.pop();
            continue;
        };
        let mut path = dir.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        visit(&path, &node)?;
        if let Some(sub) = node.subtree {
            let tree = Tree::load(repo, &sub)?;
            stack.push((path, tree.nodes.into_iter()));
        }
    }
    Ok(())
}

enum Sink<'w> {
    Tar(Box<TarSink<'w>>),
    Zip(Box<ZipSink<Box<dyn Write + 'w>>>),
}

impl Sink<'_> {
    fn finish(self) -> Result<()> {
        match self {
            Sink::Tar(tar) => tar.builder.into_inner().and_then(TarOut::finish),
            Sink::Zip(zip) => zip.finish(),
        }
        .map_err(|e| Error::io("archive output", e))
    }
}

struct Exporter<'a, 'w> {
    repo: &'a Repository,
    sink: Sink<'w>,
    /// (device, inode) of multiply-linked files -> the archive path of the
    /// first name written.
    links: HashMap<(u64, u64), Vec<u8>>,
    cancel: &'a AtomicBool,
}

fn display(path: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(path))
}

impl Exporter<'_, '_> {
    fn entry(&mut self, path: &[u8], node: &Node, result: &mut ExportResult) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let hardlink_of = if node.kind == NodeKind::File && node.links > 1 {
            match self.links.get(&(node.device, node.inode)) {
                Some(first) => Some(first.clone()),
                None => {
                    self.links.insert((node.device, node.inode), path.to_vec());
                    None
                }
            }
        } else {
            None
        };
        let skip = |result: &mut ExportResult, why: &str| {
            result
                .skipped
                .push(crate::progress::PathMessage::new(&display(path), why));
        };
        match &mut self.sink {
            Sink::Tar(tar) => {
                if node.kind == NodeKind::Socket {
                    skip(result, "a socket cannot be stored in a tar archive");
                    return Ok(());
                }
                if let Some(first) = &hardlink_of {
                    tar.write(path, node, Some(first), io::empty())?;
                    result.hardlinks += 1;
                    return Ok(());
                }
                match node.kind {
                    NodeKind::File => {
                        let reader = ContentReader::new(self.repo, path, node);
                        tar.write(path, node, None, reader)?;
                        result.files += 1;
                        result.bytes += node.size;
                    }
                    NodeKind::Dir => {
                        tar.write(path, node, None, io::empty())?;
                        result.dirs += 1;
                    }
                    NodeKind::Symlink => {
                        tar.write(path, node, None, io::empty())?;
                        result.symlinks += 1;
                    }
                    _ => {
                        tar.write(path, node, None, io::empty())?;
                        result.other += 1;
                    }
                }
            }
            Sink::Zip(zip) => match node.kind {
                _ if path == MANIFEST_NAME.as_bytes() => {
                    skip(result, "its name is the one of the checksum manifest");
                }
                NodeKind::File => {
                    let reader = ContentReader::new(self.repo, path, node);
                    zip.file(path, node, reader)?;
                    result.files += 1;
                    result.bytes += node.size;
                }
                NodeKind::Dir => {
                    zip.dir(path, node)?;
                    result.dirs += 1;
                }
                NodeKind::Symlink => {
                    zip.symlink(path, node)?;
                    result.symlinks += 1;
                }
                _ => skip(result, "a zip archive holds only files, directories and symlinks"),
            },
        }
        Ok(())
    }
}

/// A file's content, read one blob at a time; each blob is checked against
/// its id ([`Repository::read_blob`]) and the total against the recorded
/// size. Its errors are [`Error`]s inside `io::Error`s (see [`unwrap_io`]).
struct ContentReader<'a> {
    repo: &'a Repository,
    path: &'a [u8],
    ids: std::slice::Iter<'a, BlobId>,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes still to come, by the recorded size.
    remaining: u64,
}

impl<'a> ContentReader<'a> {
    fn new(repo: &'a Repository, path: &'a [u8], node: &'a Node) -> Self {
        ContentReader {
            repo,
            path,
            ids: node.content.iter(),
            buf: Vec::new(),
            pos: 0,
            remaining: node.size,
        }
    }

    fn fail(&self, reason: String) -> io::Error {
        io::Error::other(Error::Corrupt {
            what: format!("file {}", display(self.path).display()),
            reason,
        })
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.ids.next() {
                Some(id) => {
                    self.buf = self
                        .repo
                        .read_blob(id)
                        .map_err(|e| self.fail(format!("content blob {}: {e}", id.short())))?;
                    self.pos = 0;
                }
                None if self.remaining > 0 => {
                    return Err(self.fail(format!("its content is {} bytes shorter than its size", self.remaining)))
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        if n as u64 > self.remaining {
            return Err(self.fail("its content is longer than its size".into()));
        }
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The [`Error`] a [`ContentReader`] put inside an `io::Error`, or the
/// `io::Error` itself as an output error.
fn unwrap_io(e: io::Error, what: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(inner)) => return *inner,
            _ => unreachable!("checked above"),
        }
    }
    Error::io(what, e)
}

/// PAX `mtime`: seconds with nine decimals, negative before 1970.
pub(crate) fn pax_time(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// Largest value of an 8-byte octal ustar field (uid, gid).
const USTAR_ID_MAX: u64 = 0o7777777;
/// Largest value of the 12-byte octal size and mtime fields.
const USTAR_SIZE_MAX: u64 = 0o77777777777;

/// Where a tar stream goes: straight out, or through zstd.
enum TarOut<'w> {
    Plain(Box<dyn Write + 'w>),
    Zst(zstd::Encoder<'static, Box<dyn Write + 'w>>),
}

impl Write for TarOut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            TarOut::Plain(w) => w.write(buf),
            TarOut::Zst(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            TarOut::Plain(w) => w.flush(),
            TarOut::Zst(w) => w.flush(),
        }
    }
}

impl TarOut<'_> {
    /// Ends the zstd frame (an error here is an error of the export, not
    /// lost in a drop) and flushes.
    fn finish(self) -> io::Result<()> {
        match self {
            TarOut::Plain(mut w) => w.flush(),
            TarOut::Zst(w) => w.finish()?.flush(),
        }
    }
}

struct TarSink<'w> {
    builder: tar::Builder<TarOut<'w>>,
}

impl<'w> TarSink<'w> {
    fn new(out: TarOut<'w>) -> Self {
        TarSink {
            builder: tar::Builder::new(out),
        }
    }

    /// One entry: its pax header, its ustar header, and `data` (exactly
    /// `node.size` bytes for a file, nothing otherwise).
    fn write(&mut self, path: &[u8], node: &Node, hardlink_of: Option<&[u8]>, data: impl Read) -> Result<()> {
        let mut name = path.to_vec();
        if node.kind == NodeKind::Dir {
            name.push(b'/');
        }
        let size = if node.kind == NodeKind::File && hardlink_of.is_none() {
            node.size
        } else {
            0
        };
        let mtime = pax_time(node.mtime_ns);
        let mut pax: Vec<(String, Vec<u8>)> = vec![("path".into(), name.clone()), ("mtime".into(), mtime.into_bytes())];
        let link: Option<&[u8]> = match (hardlink_of, node.kind) {
            (Some(first), _) => Some(first),
            (None, NodeKind::Symlink) => Some(&node.link_target),
            _ => None,
        };
        if let Some(link) = link {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        if u64::from(node.uid) > USTAR_ID_MAX {
            pax.push(("uid".into(), node.uid.to_string().into_bytes()));
        }
        if u64::from(node.gid) > USTAR_ID_MAX {
            pax.push(("gid".into(), node.gid.to_string().into_bytes()));
        }
        if !node.user.is_empty() {
            pax.push(("uname".into(), node.user.as_bytes().to_vec()));
        }
        if !node.group.is_empty() {
            pax.push(("gname".into(), node.group.as_bytes().to_vec()));
        }
        if size > USTAR_SIZE_MAX {
            pax.push(("size".into(), size.to_string().into_bytes()));
        }
        for x in &node.xattrs {
            // A pax key is text ending at `=`; other names cannot be keys.
            if let Ok(name) = std::str::from_utf8(&x.name) {
                if !name.contains('=') && !name.contains('\n') {
                    pax.push((format!("SCHILY.xattr.{name}"), x.value.clone()));
                }
            }
        }
        let what = display(path);
        let out_err = |e: io::Error| unwrap_io(e, "archive output");
        self.builder
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(out_err)?;

        let mut header = tar::Header::new_ustar();
        header.set_entry_type(match (hardlink_of, node.kind) {
            (Some(_), _) => tar::EntryType::Link,
            (None, NodeKind::File) => tar::EntryType::Regular,
            (None, NodeKind::Dir) => tar::EntryType::Directory,
            (None, NodeKind::Symlink) => tar::EntryType::Symlink,
            (None, NodeKind::Fifo) => tar::EntryType::Fifo,
            (None, NodeKind::CharDevice) => tar::EntryType::Char,
            (None, NodeKind::BlockDevice) => tar::EntryType::Block,
            (None, NodeKind::Socket) => unreachable!("sockets are skipped"),
        });
        header.set_mode(node.mode & 0o7777);
        header.set_uid(u64::from(node.uid).min(USTAR_ID_MAX));
        header.set_gid(u64::from(node.gid).min(USTAR_ID_MAX));
        header.set_size(size.min(USTAR_SIZE_MAX));
        header.set_mtime(
            u64::try_from(node.mtime_ns.div_euclid(1_000_000_000))
                .unwrap_or(0)
                .min(USTAR_SIZE_MAX),
        );
        // The ustar fields are for readers without pax: truncated where too
        // long, the pax records above are what counts.
        if let Some(ustar) = header.as_ustar_mut() {
            let n = name.len().min(ustar.name.len());
            ustar.name[..n].copy_from_slice(&name[..n]);
            if let Some(link) = link {
                let n = link.len().min(ustar.linkname.len());
                ustar.linkname[..n].copy_from_slice(&link[..n]);
            }
            let user = node.user.as_bytes();
            let n = user.len().min(ustar.uname.len());
            ustar.uname[..n].copy_from_slice(&user[..n]);
            let group = node.group.as_bytes();
            let n = group.len().min(ustar.gname.len());
            ustar.gname[..n].copy_from_slice(&group[..n]);
        }
        if matches!(node.kind, NodeKind::CharDevice | NodeKind::BlockDevice) && hardlink_of.is_none() {
            let major = rustix::fs::major(node.rdev);
            let minor = rustix::fs::minor(node.rdev);
            header.set_device_major(major).map_err(out_err)?;
            header.set_device_minor(minor).map_err(out_err)?;
        }
        header.set_cksum();
        let mut data = data;
        self.builder
            .append(&header, &mut data)
            .map_err(|e| match unwrap_io(e, "archive output") {
                Error::Io { error, .. } => Error::io(format!("archive output (writing {})", what.display()), error),
                other => other,
            })
    }
}

/// A zip writer without seeking (data descriptors), so it writes to a pipe
/// as well as to a file.
struct ZipSink<W: Write> {
    zip: zip::ZipWriter<zip::write::StreamWriter<W>>,
    /// `sha256sum` lines, written as the last entry.
    manifest: Vec<u8>,
}

impl<W: Write> ZipSink<W> {
    fn new(out: W) -> Self {
        ZipSink {
            zip: zip::ZipWriter::new_stream(out),
            manifest: Vec::new(),
        }
    }

    fn options(node: &Node, size: u64) -> zip::write::FullFileOptions<'static, 'static> {
        let secs = node.mtime_ns.div_euclid(1_000_000_000);
        let mut options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(node.mode & 0o7777)
            .large_file(size >= u64::from(u32::MAX));
        if let Ok(t) = jiff::Timestamp::from_second(secs) {
            let t = t.to_zoned_datetime(jiff::tz::TimeZone::UTC);
            let dos = u16::try_from(t.year()).ok().and_then(|year| {
                zip::DateTime::from_date_and_time(
                    year,
                    t.month() as u8,
                    t.day() as u8,
                    t.hour() as u8,
                    t.minute() as u8,
                    t.second() as u8,
                )
                .ok()
            });
            if let Some(dos) = dos {
                options = options.last_modified_time(dos);
            }
        }
        let full = options.into_full_options();
        match u32::try_from(secs) {
            Ok(secs) => full
                .clone()
                .with_extended_timestamp(Some(secs), None, None)
                .unwrap_or(full),
            Err(_) => full,
        }
    }

    fn name(path: &[u8], dir: bool) -> String {
        let mut name = String::from_utf8_lossy(path).into_owned();
        if dir {
            name.push('/');
        }
        name
    }

    fn file(&mut self, path: &[u8], node: &Node, data: ContentReader<'_>) -> Result<()> {
        let what = display(path);
        let zip_err = |e: zip::result::ZipError| {
            Error::io(
                format!("archive output (writing {})", what.display()),
                io::Error::other(e),
            )
        };
        self.zip
            .start_file(Self::name(path, false), Self::options(node, node.size))
            .map_err(zip_err)?;
        let mut hasher = Sha256::new();
        let mut data = data;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = data.read(&mut buf).map_err(|e| unwrap_io(e, "archive output"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            self.zip
                .write_all(&buf[..n])
                .map_err(|e| Error::io(format!("archive output (writing {})", what.display()), e))?;
        }
        let digest = hasher.finalize();
        self.manifest_line(&hex::encode(digest), path);
        Ok(())
    }

    /// One line in `sha256sum` format; a name with a backslash or newline
    /// is escaped as GNU coreutils escapes it (the line starts with `\`).
    fn manifest_line(&mut self, hex: &str, path: &[u8]) {
        let escape = path.iter().any(|&b| b == b'\\' || b == b'\n');
        if escape {
            self.manifest.push(b'\\');
        }
        self.manifest.extend_from_slice(hex.as_bytes());
        self.manifest.extend_from_slice(b"  ");
        let name = Self::name(path, false);
        if escape {
            self.manifest
                .extend_from_slice(name.replace('\\', "\\\\").replace('\n', "\\n").as_bytes());
        } else {
            self.manifest.extend_from_slice(name.as_bytes());
        }
        self.manifest.push(b'\n');
    }

    fn dir(&mut self, path: &[u8], node: &Node) -> Result<()> {
        self.zip
            .add_directory(Self::name(path, true), Self::options(node, 0))
            .map_err(|e| Error::io("archive output", io::Error::other(e)))
    }

    fn symlink(&mut self, path: &[u8], node: &Node) -> Result<()> {
        self.zip
            .add_symlink(
                Self::name(path, false),
                String::from_utf8_lossy(&node.link_target),
                Self::options(node, 0),
            )
            .map_err(|e| Error::io("archive output", io::Error::other(e)))
    }

    fn finish(mut self) -> io::Result<()> {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644);
        self.zip.start_file(MANIFEST_NAME, options).map_err(io::Error::other)?;
        let manifest = std::mem::take(&mut self.manifest);
        self.zip.write_all(&manifest)?;
        let mut out = self.zip.finish().map_err(io::Error::other)?.into_inner();
        out.flush()
    }
}

/// Writes `path` through `write` into a temporary file beside it, renamed
/// into place only when `write` succeeds: a failed or interrupted export
/// never leaves a partial archive under the name asked for.
pub fn write_file_atomically<T>(path: &Path, write: impl FnOnce(&mut std::fs::File, &Path) -> Result<T>) -> Result<T> {
    // A device or a pipe is written through, never renamed over: the
    // temporary name is for regular files (as root, a rename over
    // `/dev/full` replaced the device with the archive).
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Error::InvalidArgument(format!(
                "{} is a directory: give the archive's file name",
                path.display()
            )))
        }
        Ok(meta) if !meta.is_file() => {
            // Opened without truncating, and judged again by what was
            // opened: a name swapped for a link to a regular file between
            // the two looks is never written through.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            let opened = file.metadata().map_err(|e| Error::io(path, e))?;
            if opened.is_file() || opened.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "{} changed while it was opened; give the output again",
                    path.display()
                )));
            }
            let value = write(&mut file, path)?;
            std::io::Write::flush(&mut file).map_err(|e| Error::io(path, e))?;
            return Ok(value);
        }
        _ => {}
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".snap-export-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let value = write(tmp.as_file_mut(), &tmp_path)?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(value)
}

/// Writes the content of the file `node` (at `path`, for messages) to
/// `out`, one blob at a time, each checked against its id: `snap dump` of a
/// file. Returns the bytes written.
pub fn copy_content(repo: &Repository, path: &Path, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut reader = ContentReader::new(repo, path.as_os_str().as_bytes(), node);
    io::copy(&mut reader, out).map_err(|e| unwrap_io(e, "standard output"))
}
