//! The three shapes of real data of issue 11, next to the generated race:
//!
//! - `bigfile`: one file of 2 GiB (a disk image or database file): slices of
//!   a tar of real source text (the cargo registry's sources), repeated, with
//!   random filler between them; then 16 scattered 4 KiB writes into it; then
//!   the same content through standard input;
//! - `tree`: a real tree, copied from `~/.cargo/registry/src` (tens of
//!   thousands of real files), then a second version with every file's mtime
//!   changed and a few files edited;
//! - `files`: 100k distinct small files of 1-6 KiB, 1000 a directory
//!   (`SNAP_BENCH_FILES`), then 100 of them changed.
//!
//! Each shape's data is made once per run; the change a shape makes for its
//! second backup is undone after every tool, so that every tool sees the same
//! bytes (each starts with a fresh repository, to which every file is new).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};

use crate::dataset::Text;
use crate::rng::Rng;
use crate::Step;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Bigfile,
    Tree,
    Files,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Bigfile, Shape::Tree, Shape::Files];

    pub fn slug(self) -> &'static str {
        match self {
            Shape::Bigfile => "bigfile",
            Shape::Tree => "tree",
            Shape::Files => "files",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Shape::Bigfile => "One big file",
            Shape::Tree => "A real source tree",
            Shape::Files => "Many small files",
        }
    }

    /// The steps, in order.
    pub fn steps(self) -> &'static [ShapeStep] {
        const INIT: ShapeStep = ShapeStep {
            key: "init",
            title: "init",
            action: Action::Tool(Step::Init),
        };
        const FIRST: ShapeStep = ShapeStep {
            key: "backup",
            title: "first backup",
            action: Action::Tool(Step::Backup),
        };
        const UNCHANGED: ShapeStep = ShapeStep {
            key: "unchanged",
            title: "unchanged re-backup",
            action: Action::Tool(Step::Rebackup),
        };
        const RESTORE: ShapeStep = ShapeStep {
            key: "restore",
            title: "full restore (fresh ext4)",
            action: Action::Tool(Step::Restore),
        };
        match self {
            Shape::Bigfile => &[
                INIT,
                FIRST,
                ShapeStep {
                    key: "writes",
                    title: "after 16 scattered 4 KiB writes",
                    action: Action::Tool(Step::BackupV2),
                },
                ShapeStep {
                    key: "stdin",
                    title: "the same through standard input (new repository)",
                    action: Action::Stdin,
                },
                RESTORE,
            ],
            Shape::Tree => &[
                INIT,
                FIRST,
                UNCHANGED,
                ShapeStep {
                    key: "v2",
                    title: "every mtime changed, a few files edited",
                    action: Action::Tool(Step::BackupV2),
                },
                RESTORE,
            ],
            Shape::Files => &[
                INIT,
                FIRST,
                UNCHANGED,
                ShapeStep {
                    key: "changed",
                    title: "100 files changed",
                    action: Action::Tool(Step::BackupV2),
                },
                RESTORE,
            ],
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ShapeStep {
    pub key: &'static str,
    pub title: &'static str,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The tool's command for that step of the generated race (a backup of
    /// `Step::BackupV2` comes after the shape's change).
    Tool(Step),
    /// The big file piped into the tool, into a repository of its own.
    Stdin,
}

/// What `SNAP_BENCH_SHAPE` selects: the generated race and which shapes.
pub fn parse_selection(list: &str) -> Result<(bool, Vec<Shape>)> {
    let (mut generated, mut shapes) = (false, Vec::new());
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "generated" => generated = true,
            "all" => {
                generated = true;
                shapes = Shape::ALL.to_vec();
            }
            other => {
                let shape = Shape::ALL.into_iter().find(|s| s.slug() == other).with_context(|| {
                    format!("SNAP_BENCH_SHAPE: unknown shape {other} (generated, bigfile, tree, files)")
                })?;
                if !shapes.contains(&shape) {
                    shapes.push(shape);
                }
            }
        }
    }
    ensure!(generated || !shapes.is_empty(), "SNAP_BENCH_SHAPE selects nothing");
    Ok((generated, shapes))
}

/// How a shape's data is made.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    pub scale: f64,
    /// Where the real tree comes from (`SNAP_BENCH_TREE`, default `~/.cargo/registry/src`).
    pub tree_src: PathBuf,
    /// How many small files (`SNAP_BENCH_FILES` times the scale).
    pub files: u64,
}

pub const BIGFILE_LEN: f64 = (2u64 << 30) as f64;
pub const FILES_PER_DIR: u64 = 1000;
pub const SCATTERED_WRITES: usize = 16;
const WRITE_LEN: usize = 4096;
/// The tar prefix whose slices make the big file's compressible part.
const TEXT_SOURCE_LEN: f64 = (512u64 << 20) as f64;

/// A shape's data, ready at `src` (the backed-up directory).
pub struct Data {
    pub src: PathBuf,
    /// The big file (bigfile only).
    pub file: Option<PathBuf>,
    /// One line on what the data is.
    pub description: String,
}

/// Makes a shape's data under `dir` (emptied first).
pub fn prepare(shape: Shape, dir: &Path, p: &Params) -> Result<Data> {
    crate::remove_if_exists(dir)?;
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    match shape {
        Shape::Bigfile => {
            let len = (BIGFILE_LEN * p.scale).round().max(1048576.0) as u64;
            let file = src.join("disk.img");
            let text_from = if p.tree_src.is_dir() {
                p.tree_src.clone()
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates")
            };
            let text_len = (TEXT_SOURCE_LEN * p.scale).round().max(65536.0) as u64;
            let text = tar_prefix(&text_from, text_len).context("taking a tar of source text")?;
            let text_share = make_bigfile(&file, len, p.seed, &text)?;
            Ok(Data {
                src,
                file: Some(file),
                description: format!(
                    "one file of {:.1} MiB: slices (256 KiB-4 MiB) of the first {:.1} MiB of a tar of {} \
                     ({:.0}% of the file), random filler of 256 KiB-2 MiB between them",
                    crate::mib(len),
                    crate::mib(text.len() as u64),
                    text_from.display(),
                    100.0 * text_share
                ),
            })
        }
        Shape::Tree => {
            ensure!(
                p.tree_src.is_dir(),
                "{} is missing (SNAP_BENCH_TREE names another real tree)",
                p.tree_src.display()
            );
            let (total, taken, parts) = copy_tree(&p.tree_src, &src, p.scale)?;
            Ok(Data {
                src,
                file: None,
                description: format!(
                    "{} ({} packages of {}{}): {} files, {} directories, {:.1} MiB",
                    p.tree_src.display(),
                    parts.0,
                    parts.1,
                    if taken.bytes < total.bytes {
                        format!(", the first {:.0}% of its bytes by name", 100.0 * p.scale.min(1.0))
                    } else {
                        String::new()
                    },
                    taken.files,
                    taken.dirs,
                    crate::mib(taken.bytes)
                ),
            })
        }
        Shape::Files => {
            make_files(&src, p.files, p.seed)?;
            Ok(Data {
                src,
                file: None,
                description: format!(
                    "{} distinct files of 1-6 KiB of text-like bytes, {FILES_PER_DIR} a directory",
                    p.files
                ),
            })
        }
    }
}

/// What a shape's change for its second backup replaced, to put it back.
pub enum Undo {
    /// Offsets and original bytes of the scattered writes.
    Writes(PathBuf, Vec<(u64, Vec<u8>)>),
    /// Every file's mtime, and the edited files' original lengths.
    Tree(Vec<(PathBuf, SystemTime)>, Vec<(PathBuf, u64)>),
    /// The changed small files (their original content is regenerated).
    Files(PathBuf, Vec<u64>, u64),
}

/// Makes the second version in place; says what changed.
pub fn change(shape: Shape, data: &Data, p: &Params) -> Result<(Undo, String)> {
    match shape {
        Shape::Bigfile => {
            let file = data.file.clone().context("the big file")?;
            let saved = scatter_writes(&file, p.seed)?;
            let what = format!("{} writes of {WRITE_LEN} bytes, spread over the file", saved.len());
            Ok((Undo::Writes(file, saved), what))
        }
        Shape::Tree => {
            let mut files = Vec::new();
            list_files(&data.src, &mut files)?;
            let mut mtimes = Vec::with_capacity(files.len());
            let mut edited = Vec::new();
            let new_mtime = SystemTime::now();
            for (i, path) in files.iter().enumerate() {
                let meta = fs::symlink_metadata(path)?;
                mtimes.push((path.clone(), meta.modified()?));
                // A few files edited: one in 500 gets a line appended.
                if i % 500 == 250 {
                    edited.push((path.clone(), meta.len()));
                    OpenOptions::new()
                        .append(true)
                        .open(path)?
                        .write_all(b"\n// edited for the second version\n")?;
                }
                File::open(path)?.set_modified(new_mtime)?;
            }
            let what = format!(
                "every file's mtime set to the time of the change ({} files), {} of them edited (a line appended)",
                mtimes.len(),
                edited.len()
            );
            Ok((Undo::Tree(mtimes, edited), what))
        }
        Shape::Files => {
            let changed: Vec<u64> = (0..100.min(p.files)).map(|k| k * p.files / 100.min(p.files)).collect();
            let text = Text::new(p.seed);
            let mut buf = Vec::new();
            for &i in &changed {
                let mut rng = Rng::new(p.seed, "files-v2", i);
                small_file(&text, &mut rng, i, &mut buf);
                fs::write(small_path(&data.src, i), &buf)?;
            }
            let what = format!("{} files rewritten with new content", changed.len());
            Ok((Undo::Files(data.src.clone(), changed, p.seed), what))
        }
    }
}

pub fn undo(undo: Undo) -> Result<()> {
    match undo {
        Undo::Writes(file, saved) => {
            let mut f = OpenOptions::new().write(true).open(&file)?;
            for (at, bytes) in saved {
                f.seek(SeekFrom::Start(at))?;
                f.write_all(&bytes)?;
            }
        }
        Undo::Tree(mtimes, edited) => {
            for (path, len) in edited {
                OpenOptions::new().write(true).open(&path)?.set_len(len)?;
            }
            for (path, mtime) in mtimes {
                File::open(&path)?.set_modified(mtime)?;
            }
        }
        Undo::Files(src, changed, seed) => {
            let text = Text::new(seed);
            let mut buf = Vec::new();
            for i in changed {
                let mut rng = Rng::new(seed, "files", i);
                small_file(&text, &mut rng, i, &mut buf);
                fs::write(small_path(&src, i), &buf)?;
            }
        }
    }
    Ok(())
}

/// The first `len` bytes of a tar of `dir` (in name order), or all of it if shorter.
fn tar_prefix(dir: &Path, len: u64) -> Result<Vec<u8>> {
    let mut child = Command::new("tar")
        .args(["-c", "--sort=name", "-f", "-", "-C"])
        .arg(dir)
        .arg(".")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run tar")?;
    let mut out = Vec::with_capacity(len as usize);
    child
        .stdout
        .take()
        .context("tar's output")?
        .take(len)
        .read_to_end(&mut out)?;
    // Stopped once it gave enough: a broken pipe is expected.
    let _ = child.kill();
    let _ = child.wait();
    ensure!(
        out.len() >= 4096,
        "tar of {} gave only {} bytes",
        dir.display(),
        out.len()
    );
    Ok(out)
}

/// Writes the big file; returns the share of its bytes taken from `text`.
fn make_bigfile(path: &Path, len: u64, seed: u64, text: &[u8]) -> io::Result<f64> {
    let mut rng = Rng::new(seed, "bigfile", 0);
    let mut out = io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut written, mut from_text) = (0u64, 0u64);
    let mut filler = Vec::new();
    while written < len {
        let n = rng.range(256 << 10, 4 << 20).min(len - written) as usize;
        let mut at = rng.below(text.len() as u64) as usize;
        let mut left = n;
        while left > 0 {
            let k = left.min(text.len() - at);
            out.write_all(&text[at..at + k])?;
            left -= k;
            at = 0;
        }
        written += n as u64;
        from_text += n as u64;
        if written >= len {
            break;
        }
        let n = rng.range(256 << 10, 2 << 20).min(len - written) as usize;
        filler.resize(n, 0);
        rng.fill(&mut filler);
        out.write_all(&filler)?;
        written += n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(from_text as f64 / len as f64)
}

/// 16 writes of 4 KiB of random bytes, one in each sixteenth of the file at
/// a random 4 KiB-aligned offset; returns what they overwrote.
fn scatter_writes(path: &Path, seed: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut rng = Rng::new(seed, "scattered", 0);
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let blocks = len / WRITE_LEN as u64;
    let mut saved = Vec::new();
    let mut block = vec![0u8; WRITE_LEN];
    for k in 0..SCATTERED_WRITES as u64 {
        let span = (blocks / SCATTERED_WRITES as u64).max(1);
        let at = ((k * span + rng.below(span)).min(blocks.saturating_sub(1))) * WRITE_LEN as u64;
        let mut old = vec![0u8; WRITE_LEN];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut old)?;
        saved.push((at, old));
        rng.fill(&mut block);
        file.seek(SeekFrom::Start(at))?;
        file.write_all(&block)?;
    }
    Ok(saved)
}

/// Copies the first entries (by name, two levels down: a registry's
/// packages) of `from` to `to` until `scale` of its bytes are taken.
/// Returns the whole tree's size, the copy's, and (packages taken, of).
fn copy_tree(
    from: &Path,
    to: &Path,
    scale: f64,
) -> Result<(crate::verify::TreeStats, crate::verify::TreeStats, (usize, usize))> {
    let mut parts = Vec::new();
    for top in sorted_entries(from)? {
        if top.is_dir() {
            for part in sorted_entries(&top)? {
                parts.push(part);
            }
        }
    }
    let mut sized = Vec::with_capacity(parts.len());
    let mut total = crate::verify::TreeStats::default();
    for part in parts {
        let stats = if part.is_dir() {
            let mut s = crate::verify::stats(&part)?;
            s.dirs += 1;
            s
        } else {
            crate::verify::TreeStats {
                files: 1,
                dirs: 0,
                bytes: fs::symlink_metadata(&part)?.len(),
            }
        };
        total.files += stats.files;
        total.dirs += stats.dirs;
        total.bytes += stats.bytes;
        sized.push((part, stats));
    }
    let cap = (total.bytes as f64 * scale.min(1.0)) as u64;
    let mut taken = crate::verify::TreeStats::default();
    let mut count = 0;
    for (part, stats) in &sized {
        if taken.bytes >= cap {
            break;
        }
        let rel = part.strip_prefix(from).expect("under the tree");
        let dest_parent = to.join(rel.parent().unwrap_or(Path::new("")));
        fs::create_dir_all(&dest_parent)?;
        let status = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(part)
            .arg(&dest_parent)
            .status()
            .context("cannot run cp")?;
        ensure!(
            status.success(),
            "cp -a {} {} failed",
            part.display(),
            dest_parent.display()
        );
        taken.files += stats.files;
        taken.dirs += stats.dirs;
        taken.bytes += stats.bytes;
        count += 1;
    }
    ensure!(count > 0, "{} has nothing to copy", from.display());
    let copied = crate::verify::stats(to)?;
    Ok((total, copied, (count, sized.len())))
}

fn sorted_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    entries.sort();
    Ok(entries)
}

/// Regular files under `dir`, in name order.
fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for path in sorted_entries(dir)? {
        let kind = fs::symlink_metadata(&path)?.file_type();
        if kind.is_dir() {
            list_files(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn small_path(root: &Path, i: u64) -> PathBuf {
    root.join(format!("d{:05}", i / FILES_PER_DIR))
        .join(format!("f{i:07}.txt"))
}

/// File `i`'s bytes: its number, then 1-6 KiB of text from its own stream.
fn small_file(text: &Text, rng: &mut Rng, i: u64, buf: &mut Vec<u8>) {
    let len = rng.range(1024, 6 * 1024) as usize;
    text.fill(rng, buf, len);
    let header = format!("file {i}\n");
    let n = header.len().min(buf.len());
    buf[..n].copy_from_slice(&header.as_bytes()[..n]);
}

fn make_files(root: &Path, n: u64, seed: u64) -> io::Result<()> {
    let text = Text::new(seed);
    let mut buf = Vec::new();
    for i in 0..n {
        if i % FILES_PER_DIR == 0 {
            fs::create_dir_all(small_path(root, i).parent().expect("a directory"))?;
        }
        let mut rng = Rng::new(seed, "files", i);
        small_file(&text, &mut rng, i, &mut buf);
        fs::write(small_path(root, i), &buf)?;
    }
    Ok(())
}

/// How long to leave between a change and the backup that must see it: a
/// tool that compares mtimes at one-second granularity would miss a change
/// made in the same second as the previous backup.
pub const SETTLE: Duration = Duration::from_millis(1100);
