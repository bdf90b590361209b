//! `import`: a snapshot from a tar, tar.zst or zip archive (migration from
//! other tools), through the packer like any backup, so its content is
//! deduplicated against the repository.
//!
//! Archives are untrusted. Every entry is checked before anything of it is
//! stored, and the snapshot is written only after the last one passed:
//! - its name must be relative, without `..`, NUL or over-long components
//!   (`.` components and a leading `./` are dropped);
//! - no name may occur twice (a directory named implicitly by its entries
//!   and then given explicitly is one name), and nothing may lie below a
//!   file;
//! - a hard link must name an earlier regular file of the archive;
//! - the archive must be whole: a file shorter than its header says, or a
//!   tar without its end-of-archive blocks, is truncated.
//!
//! A refused archive fails with [`Error::InvalidArchive`] naming the entry;
//! content stored before the bad entry was met is in packs no snapshot
//! uses (prune removes it). Symlink targets are stored verbatim, as restic
//! does and as `create` stores them: a symlink is data, restore creates it
//! without following it and after all content is written (see restorer).
//!
//! Directories the archive does not list but its entries lie in get mode
//! 0755 and the import's time. Zip times are the extended timestamp field
//! when present, else the DOS time read as UTC.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::archiver::{ArchiveResult, MAX_NAME_LEN};
use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::export::ArchiveFormat;
use crate::id::BlobId;
use crate::lock::LockGuard;
use crate::pack::BlobKind;
use crate::packer::Packer;
use crate::repo::Repository;
use crate::snapshot::{Snapshot, Summary};
use crate::tree::{Node, NodeKind, Tree};

/// Most path components an entry may have: no restore target could hold
/// more (`PATH_MAX` is 4096 bytes), and it bounds the recursion that
/// stores the trees.
const MAX_DEPTH: usize = 2048;

#[derive(Debug)]
pub struct ImportOptions {
    /// The archive; `-` for standard input (tar and tar.zst only: zip needs
    /// to seek).
    pub file: PathBuf,
    /// The archive's format; `None`: from the file name.
    pub format: Option<ArchiveFormat>,
    pub host: String,
    /// The snapshot's time (default: now).
    pub time: Option<jiff::Timestamp>,
    pub tags: Vec<String>,
    pub compression: Option<Compression>,
}

/// One archive entry, checked and normalized.
struct Item {
    /// The name as the archive gives it, for messages.
    name: String,
    components: Vec<Vec<u8>>,
    node: Node,
    /// A hard link: the components of the file it names.
    hardlink: Option<Vec<Vec<u8>>>,
}

/// The tree being built.
enum Pending {
    Dir {
        node: Node,
        /// Given by an entry of its own (not only implied by its children).
        explicit: bool,
        children: BTreeMap<Vec<u8>, Pending>,
    },
    Leaf(Node),
}

fn refuse(entry: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidArchive {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

/// Splits and checks an archive name: relative, no `..`, no NUL, each
/// component at most [`MAX_NAME_LEN`] bytes, not empty.
fn split_name(entry: &str, raw: &[u8]) -> Result<Vec<Vec<u8>>> {
    if raw.contains(&0) {
        return Err(refuse(entry, "the name contains a NUL byte"));
    }
    if raw.first() == Some(&b'/') {
        return Err(refuse(entry, "absolute paths are not allowed"));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refuse(entry, "'..' components are not allowed")),
            c if c.len() > MAX_NAME_LEN => {
                return Err(refuse(
                    entry,
                    format!("a name component is longer than {MAX_NAME_LEN} bytes"),
                ))
            }
            c => out.push(c.to_vec()),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(refuse(entry, format!("it is more than {MAX_DEPTH} directories deep")));
    }
    Ok(out)
}

struct Importer<'a> {
    repo: &'a Repository,
    packer: Packer,
    root: BTreeMap<Vec<u8>, Pending>,
    /// Inode numbers given to files, so hard links share one.
    next_inode: u64,
    /// Inode -> how many names it has.
    link_counts: HashMap<u64, u64>,
    summary: Summary,
    now_ns: i64,
    cancel: &'a AtomicBool,
}

impl Importer<'_> {
    /// Chunks and stores `data`: the file's content ids and its length.
    fn store(&mut self, entry: &str, data: &mut dyn Read, expected: u64) -> Result<(Vec<BlobId>, u64)> {
        let mut chunks = self.repo.chunker().chunks(data, Some(expected));
        let mut ids = Vec::new();
        let mut total = 0u64;
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let chunk = match chunks.next_chunk() {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(refuse(
                        entry,
                        format!("cannot read its content: {e} (truncated archive?)"),
                    ))
                }
            };
            total += chunk.len() as u64;
            let (id, _) = self.packer.add(BlobKind::Data, chunk)?;
            ids.push(id);
        }
        if total != expected {
            return Err(refuse(
                entry,
                format!("the archive ends inside it ({total} of {expected} bytes): truncated archive"),
            ));
        }
        self.summary.bytes_read += total;
        Ok((ids, total))
    }

    /// Adds a checked entry to the tree.
    fn insert(&mut self, mut item: Item) -> Result<()> {
        let entry = item.name.clone();
        if item.components.is_empty() {
            // `.` or `./`: the archive's root, which has no node.
            if item.node.kind == NodeKind::Dir {
                return Ok(());
            }
            return Err(refuse(&entry, "an entry that is not a directory has an empty name"));
        }
        if let Some(target) = &item.hardlink {
            let node = self
                .find_file(target)
                .ok_or_else(|| refuse(&entry, "a hard link must name an earlier regular file of the archive"))?;
            let inode = node.inode;
            // One inode: its metadata is the file's, whatever the link
            // entry says (GNU tar gives link entries no xattrs).
            let name = std::mem::take(&mut item.node.name);
            item.node = node.clone();
            item.node.name = name;
            item.node.inode = inode;
            *self.link_counts.entry(inode).or_insert(1) += 1;
        } else if item.node.kind == NodeKind::File {
            self.next_inode += 1;
            item.node.inode = self.next_inode;
        }
        let (name, parents) = item.components.split_last().expect("not empty");
        let mut dir = &mut self.root;
        for parent in parents {
            let now = self.now_ns;
            let slot = dir.entry(parent.clone()).or_insert_with(|| {
                let mut node = Node::new(parent.clone(), NodeKind::Dir);
                node.mode = 0o755;
                node.mtime_ns = now;
                node.ctime_ns = now;
                Pending::Dir {
                    node,
                    explicit: false,
                    children: BTreeMap::new(),
                }
            });
            dir = match slot {
                Pending::Dir { children, .. } => children,
                Pending::Leaf(_) => {
                    return Err(refuse(
                        &entry,
                        format!("'{}' above it is not a directory", String::from_utf8_lossy(parent)),
                    ))
                }
            };
        }
        item.node.name = name.clone();
        match dir.get_mut(name) {
            None => {
                let pending = if item.node.kind == NodeKind::Dir {
                    Pending::Dir {
                        node: item.node,
                        explicit: true,
                        children: BTreeMap::new(),
                    }
                } else {
                    Pending::Leaf(item.node)
                };
                dir.insert(name.clone(), pending);
            }
            Some(Pending::Dir { node, explicit, .. }) if !*explicit && item.node.kind == NodeKind::Dir => {
                *node = item.node;
                *explicit = true;
            }
            Some(_) => return Err(refuse(&entry, "the archive holds this name twice")),
        }
        Ok(())
    }

    fn find_file(&self, components: &[Vec<u8>]) -> Option<&Node> {
        let (name, parents) = components.split_last()?;
        let mut dir = &self.root;
        for p in parents {
            match dir.get(p)? {
                Pending::Dir { children, .. } => dir = children,
                Pending::Leaf(_) => return None,
            }
        }
        match dir.get(name)? {
            Pending::Leaf(node) if node.kind == NodeKind::File => Some(node),
            _ => None,
        }
    }

    /// Stores the trees bottom-up; returns the root tree's id.
    fn save(&mut self, dir: BTreeMap<Vec<u8>, Pending>) -> Result<BlobId> {
        let mut nodes = Vec::with_capacity(dir.len());
        for (_, pending) in dir {
            match pending {
                Pending::Dir { mut node, children, .. } => {
                    node.subtree = Some(self.save(children)?);
                    self.summary.dirs += 1;
                    nodes.push(node);
                }
                Pending::Leaf(mut node) => {
                    if node.kind == NodeKind::File {
                        node.links = self.link_counts.get(&node.inode).copied().unwrap_or(1);
                        self.summary.files_new += 1;
                        self.summary.bytes_total += node.size;
                    }
                    nodes.push(node);
                }
            }
        }
        // BTreeMap order is byte order of the names: what trees require.
        let tree = Tree { nodes };
        Ok(self.packer.add(BlobKind::Tree, &tree.encode())?.0)
    }
}

/// Imports the archive `options.file` as a new snapshot, under `lock` (a
/// shared lock of `repo`). Nothing is written as a snapshot unless every
/// entry passed the checks of this module.
pub fn import(
    repo: &Repository,
    options: ImportOptions,
    cancel: &AtomicBool,
    lock: &LockGuard,
) -> Result<ArchiveResult> {
    lock.proves(repo, crate::lock::LockKind::Shared)?;
    let started = std::time::Instant::now();
    let stdin = options.file == Path::new("-");
    let format = match options.format {
        Some(f) => f,
        None if stdin => ArchiveFormat::Tar,
        None => ArchiveFormat::from_file_name(&options.file).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: cannot tell the archive format from the name; give --format tar, tar.zst or zip",
                options.file.display()
            ))
        })?,
    };
    for tag in &options.tags {
        if tag == crate::snapshot::CHECKPOINT_TAG {
            return Err(Error::InvalidArgument(format!(
                "the tag '{tag}' is reserved for the partial snapshots of interrupted backups"
            )));
        }
    }
    let time = options.time.unwrap_or_else(jiff::Timestamp::now);
    let compression = options.compression.unwrap_or(repo.config().compression);
    let mut importer = Importer {
        repo,
        packer: Packer::new(repo, compression)?,
        root: BTreeMap::new(),
        next_inode: 0,
        link_counts: HashMap::new(),
        summary: Summary::default(),
        now_ns: time.as_nanosecond() as i64,
        cancel,
    };
    let read = match format {
        ArchiveFormat::Zip => {
            if stdin {
                return Err(Error::InvalidArgument(
                    "a zip archive cannot be read from standard input (its directory is at its end); give the file"
                        .into(),
                ));
            }
            read_zip(&mut importer, &options.file)
        }
        ArchiveFormat::Tar | ArchiveFormat::TarZst => {
            let input: Box<dyn Read> = if stdin {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::fs::File::open(&options.file).map_err(|e| Error::io(&options.file, e))?)
            };
            let input: Box<dyn Read> = if format == ArchiveFormat::TarZst {
                Box::new(zstd::Decoder::new(input).map_err(|e| Error::io(&options.file, e))?)
            } else {
                input
            };
            read_tar(&mut importer, input)
        }
    };
    let root = match read {
        Ok(()) => {
            let root = std::mem::take(&mut importer.root);
            importer.save(root)
        }
        Err(e) => Err(e),
    };
    let Importer {
        packer, mut summary, ..
    } = importer;
    // Whatever was stored is indexed, so a second try reuses it.
    let packed = packer.finish();
    let root = root?;
    let packed = packed?;
    summary.blobs_added = packed.blobs_added;
    summary.bytes_added_raw = packed.bytes_added_raw;
    summary.bytes_added_stored = packed.bytes_added_stored;
    summary.duration_seconds = started.elapsed().as_secs_f64();
    let tree = Tree::load(repo, &root)?;
    let paths = if tree.nodes.is_empty() {
        vec!["/".to_string()]
    } else {
        tree.nodes.iter().map(|n| format!("/{}", n.name_lossy())).collect()
    };
    let snapshot = Snapshot {
        time,
        host: options.host,
        username: crate::snapshot::username(),
        paths,
        tags: options.tags,
        tree: root,
        parent: None,
        program_version: format!("snap {}", env!("CARGO_PKG_VERSION")),
        summary,
        description: None,
        original: None,
    };
    crate::snapshot::check_before_save(repo, lock, &snapshot.tree)?;
    let id = snapshot.save(repo)?;
    Ok(ArchiveResult {
        id,
        snapshot,
        warnings: Vec::new(),
        dry_run: false,
        changes: None,
        peaks: Default::default(),
    })
}

/// Counts the bytes read through it, so the end of a tar archive can be
/// checked.
struct Counting<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

fn pax_ns(value: &str) -> Option<i64> {
    let (negative, value) = match value.strip_prefix('-') {
        Some(v) => (true, v),
        None => (false, value),
    };
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let frac: i64 = digits.parse().ok()?;
    let ns = secs.checked_mul(1_000_000_000)?.checked_add(frac)?;
    Some(if negative { -ns } else { ns })
}

/// Parses pax records (`LEN KEY=VALUE\n`, LEN counting the whole record),
/// by their lengths: values may hold newlines and any bytes (binary
/// extended attributes, names with newlines).
fn parse_pax(entry: &str, data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let bad = || refuse(entry, "malformed pax header");
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad())?;
        out.push((key.to_string(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Reads all of an extension entry's data (pax records, a GNU long name).
fn read_extension(entry: &mut dyn Read, size: u64, what: &str) -> Result<Vec<u8>> {
    if size > 16 << 20 {
        return Err(refuse(what, "an extension header larger than 16 MiB"));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| refuse(what, format!("cannot read it: {e} (truncated archive?)")))?;
    if data.len() as u64 != size {
        return Err(refuse(what, "the archive ends inside it: truncated archive"));
    }
    Ok(data)
}

/// Reads a tar archive. The tar crate reads the headers (in raw mode), and
/// pax and GNU long-name extensions are applied here: its own pax parser
/// splits records at newlines, which cut binary xattr values and names
/// with newlines.
fn read_tar(importer: &mut Importer<'_>, input: Box<dyn Read>) -> Result<()> {
    let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut archive = tar::Archive::new(Counting {
        inner: input,
        count: count.clone(),
    });
    // Where the last entry's data ends (padded): the end-of-archive blocks
    // must follow it.
    let mut end = 0u64;
    let mut pax: Option<Vec<(String, Vec<u8>)>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let entries = archive
        .entries()
        .map_err(|e| refuse("(archive start)", format!("not a tar archive: {e}")))?
        .raw(true);
    for (index, entry) in entries.enumerate() {
        let index = index + 1;
        let mut entry = entry.map_err(|e| {
            refuse(
                &format!("(entry {index}, after byte {end})"),
                format!("unreadable header: {e} (truncated or not a tar archive?)"),
            )
        })?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let size = entry.size();
        end = entry.raw_file_position() + size.div_ceil(512) * 512;
        let what = format!("(extension header of entry {index})");
        match kind {
            tar::EntryType::XHeader => {
                let data = read_extension(&mut entry, size, &what)?;
                pax = Some(parse_pax(&what, &data)?);
                continue;
            }
            tar::EntryType::XGlobalHeader => {
                // Global defaults (comments, charset): nothing snap keeps.
                read_extension(&mut entry, size, &what)?;
                continue;
            }
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                let mut data = read_extension(&mut entry, size, &what)?;
                if let Some(nul) = data.iter().position(|&b| b == 0) {
                    data.truncate(nul);
                }
                if kind == tar::EntryType::GNULongName {
                    long_name = Some(data);
                } else {
                    long_link = Some(data);
                }
                continue;
            }
            _ => {}
        }
        let records = pax.take().unwrap_or_default();
        let record = |key: &str| records.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice());
        let raw_name = record("path")
            .map(<[u8]>::to_vec)
            .or_else(|| long_name.take())
            .unwrap_or_else(|| header.path_bytes().into_owned());
        long_name = None;
        let raw_link = record("linkpath")
            .map(<[u8]>::to_vec)
            .or_else(|| long_link.take())
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        long_link = None;
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        if kind == tar::EntryType::GNUSparse || records.iter().any(|(k, _)| k.starts_with("GNU.sparse.")) {
            return Err(refuse(
                &name,
                "GNU sparse entries are not supported: extract the archive and back it up with `snap create`",
            ));
        }
        if let Some(pax_size) = record("size") {
            if std::str::from_utf8(pax_size).ok().and_then(|v| v.parse::<u64>().ok()) != Some(size) {
                return Err(refuse(
                    &name,
                    "a pax size that differs from the header's is not supported",
                ));
            }
        }
        let text = |key: &str| record(key).map(|v| String::from_utf8_lossy(v).into_owned());
        let number = |key: &str| -> Result<Option<u32>> {
            match record(key) {
                None => Ok(None),
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .map(Some)
                    .ok_or_else(|| refuse(&name, format!("bad pax {key}"))),
            }
        };
        let mtime_ns = match text("mtime") {
            Some(v) => pax_ns(&v).ok_or_else(|| refuse(&name, "bad pax mtime"))?,
            None => header.mtime().map(|s| s as i64 * 1_000_000_000).unwrap_or(0),
        };
        let xattrs = records
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("SCHILY.xattr.").map(|x| crate::tree::Xattr {
                    name: x.as_bytes().to_vec(),
                    value: v.clone(),
                })
            })
            .collect();
        let node_kind = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => NodeKind::File,
            tar::EntryType::Directory => NodeKind::Dir,
            tar::EntryType::Symlink => NodeKind::Symlink,
            tar::EntryType::Fifo => NodeKind::Fifo,
            tar::EntryType::Char => NodeKind::CharDevice,
            tar::EntryType::Block => NodeKind::BlockDevice,
            other => {
                return Err(refuse(
                    &name,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        };
        let components = split_name(&name, &raw_name)?;
        let mut node = Node::new(Vec::new(), node_kind);
        node.mode = header.mode().map_err(|e| refuse(&name, e))? & 0o7777;
        node.uid = match number("uid")? {
            Some(v) => v,
            None => header.uid().ok().and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        };
        node.gid = match number("gid")? {
            Some(v) => v,
            None => header.gid().ok().and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        };
        node.user = text("uname")
            .unwrap_or_else(|| header.username().ok().flatten().unwrap_or("").to_string())
            .into();
        node.group = text("gname")
            .unwrap_or_else(|| header.groupname().ok().flatten().unwrap_or("").to_string())
            .into();
        node.mtime_ns = mtime_ns;
        node.ctime_ns = mtime_ns;
        node.links = 1;
        node.xattrs = xattrs;
        let mut hardlink = None;
        match kind {
            tar::EntryType::Link => {
                let target = raw_link.ok_or_else(|| refuse(&name, "a hard link without a target"))?;
                let target_name = String::from_utf8_lossy(&target).into_owned();
                let target = split_name(&name, &target).map_err(|_| {
                    refuse(
                        &name,
                        format!("hard link target '{target_name}' is outside the archive"),
                    )
                })?;
                hardlink = Some(target);
            }
            tar::EntryType::Symlink => {
                node.link_target = raw_link.ok_or_else(|| refuse(&name, "a symlink without a target"))?;
                if node.link_target.contains(&0) || node.link_target.is_empty() {
                    return Err(refuse(&name, "the symlink target is empty or holds a NUL byte"));
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                node.rdev = rustix::fs::makedev(major, minor);
            }
            _ => {}
        }
        if node_kind == NodeKind::File && hardlink.is_none() {
            let (content, stored) = importer.store(&name, &mut entry, size)?;
            node.content = content;
            node.size = stored;
        }
        importer.insert(Item {
            name,
            components,
            node,
            hardlink,
        })?;
    }
    if pax.is_some() || long_name.is_some() || long_link.is_some() {
        return Err(refuse(
            "(end of archive)",
            "an extension header describes an entry that is missing: truncated archive",
        ));
    }
    // A tar ends with two zero blocks; at least one must be there after the
    // last entry, else the archive was cut at an entry boundary.
    if count.get() < end + 512 {
        return Err(refuse(
            "(end of archive)",
            "the archive ends without its end-of-archive blocks: truncated archive",
        ));
    }
    Ok(())
}

/// Names given more than once in a zip's central directory (the zip crate
/// keeps one entry per name, so they are found by reading it directly).
fn zip_duplicates(file: &Path, start: u64) -> Result<Vec<String>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(file, e))?;
    let mut r = std::io::BufReader::new(f);
    let mut seen = std::collections::HashSet::new();
    let mut dups = Vec::new();
    let mut fixed = [0u8; 46];
    while r.read_exact(&mut fixed).is_ok() && fixed[..4] == [0x50, 0x4b, 0x01, 0x02] {
        let n = u16::from_le_bytes([fixed[28], fixed[29]]) as usize;
        let m = u16::from_le_bytes([fixed[30], fixed[31]]) as usize;
        let k = u16::from_le_bytes([fixed[32], fixed[33]]) as usize;
        let mut name = vec![0u8; n];
        if r.read_exact(&mut name).is_err() {
            break;
        }
        let mut rest = vec![0u8; m + k];
        if r.read_exact(&mut rest).is_err() {
            break;
        }
        if !seen.insert(name.clone()) {
            dups.push(String::from_utf8_lossy(&name).into_owned());
        }
    }
    Ok(dups)
}

fn read_zip(importer: &mut Importer<'_>, path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        refuse(
            "(central directory)",
            format!("not a readable zip archive: {e} (truncated?)"),
        )
    })?;
    if zip.has_duplicate_names() {
        let dups = zip_duplicates(path, zip.central_directory_start())?;
        let first = dups.first().cloned().unwrap_or_else(|| "(unknown)".into());
        return Err(refuse(&first, "the archive holds this name twice"));
    }
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| refuse(&format!("(entry {})", i + 1), format!("unreadable: {e} (truncated?)")))?;
        let raw = f.name_raw().to_vec();
        let name = String::from_utf8_lossy(&raw).into_owned();
        if f.encrypted() {
            return Err(refuse(&name, "encrypted entries are not supported"));
        }
        let unix = f.unix_mode();
        let kind = if f.is_symlink() {
            NodeKind::Symlink
        } else if f.is_dir() {
            NodeKind::Dir
        } else {
            NodeKind::File
        };
        let components = split_name(&name, &raw)?;
        // The manifest of snap's own zip exports describes the archive; it
        // is not one of the exported files.
        if components.len() == 1 && components[0] == crate::export::MANIFEST_NAME.as_bytes() {
            continue;
        }
        let mut node = Node::new(Vec::new(), kind);
        node.mode = match (unix, kind) {
            (Some(m), _) => m & 0o7777,
            (None, NodeKind::Dir) => 0o755,
            (None, _) => 0o644,
        };
        let mut mtime_ns = None;
        for field in f.extra_data_fields() {
            if let zip::ExtraField::ExtendedTimestamp(ts) = field {
                if let Some(t) = ts.mod_time() {
                    mtime_ns = Some(i64::from(t) * 1_000_000_000);
                }
            }
        }
        let mtime_ns = mtime_ns.unwrap_or_else(|| {
            f.last_modified()
                .and_then(|d| {
                    let civil = jiff::civil::DateTime::new(
                        d.year() as i16,
                        d.month() as i8,
                        d.day() as i8,
                        d.hour() as i8,
                        d.minute() as i8,
                        d.second() as i8,
                        0,
                    )
                    .ok()?;
                    jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
                })
                .map(|t| t.as_nanosecond() as i64)
                .unwrap_or(importer.now_ns)
        });
        node.mtime_ns = mtime_ns;
        node.ctime_ns = mtime_ns;
        node.links = 1;
        node.uid = rustix::process::getuid().as_raw();
        node.gid = rustix::process::getgid().as_raw();
        let size = f.size();
        match kind {
            NodeKind::File => {
                let (content, stored) = importer.store(&name, &mut f, size)?;
                node.content = content;
                node.size = stored;
            }
            NodeKind::Symlink => {
                let mut target = Vec::new();
                (&mut f)
                    .take(4096)
                    .read_to_end(&mut target)
                    .map_err(|e| refuse(&name, format!("cannot read the symlink target: {e}")))?;
                if target.is_empty() || target.contains(&0) {
                    return Err(refuse(&name, "the symlink target is empty or holds a NUL byte"));
                }
                node.link_target = target;
            }
            _ => {}
        }
        drop(f);
        importer.insert(Item {
            name,
            components,
            node,
            hardlink: None,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_are_split_by_length_not_by_newline() {
        let value = b"two\nlines\0and a NUL";
        let mut data = Vec::new();
        for (k, v) in [("path", &b"a\nb"[..]), ("SCHILY.xattr.user.x", &value[..])] {
            // LEN counts the whole record, its own digits included.
            let rest = 3 + k.len() + v.len();
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let records = parse_pax("e", &data).unwrap();
        assert_eq!(records[0], ("path".to_string(), b"a\nb".to_vec()));
        assert_eq!(records[1], ("SCHILY.xattr.user.x".to_string(), value.to_vec()));
        for bad in [&b"5 a=b"[..], b"99 a=b\n", b"x a=b\n", b"6 ab\n\n"] {
            assert!(parse_pax("e", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked_and_normalized() {
        assert_eq!(
            split_name("e", b"./a//b/./c/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(split_name("e", b".").unwrap().is_empty());
        for bad in [&b"/etc/x"[..], b"a/../b", b"..", b"a\0b"] {
            assert!(
                matches!(split_name("e", bad), Err(Error::InvalidArchive { .. })),
                "{bad:?}"
            );
        }
        assert!(split_name("e", &[b'x'; 256]).is_err());
    }

    #[test]
    fn pax_times_keep_nanoseconds_and_sign() {
        assert_eq!(pax_ns("1.5"), Some(1_500_000_000));
        assert_eq!(pax_ns("-999205078.75"), Some(-999_205_078_750_000_000));
        assert_eq!(pax_ns("12"), Some(12_000_000_000));
        assert_eq!(pax_ns("1.1234567891"), Some(1_123_456_789));
        assert_eq!(pax_ns("x"), None);
        assert_eq!(
            crate::export::pax_time(-999_205_078_750_000_000),
            "-999205078.750000000"
        );
    }
}
