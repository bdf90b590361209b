//! `snap dump SNAPSHOT PATH`: one file's content on standard output, or
//! with `--archive tar|tar.zst|zip` a directory (or any subtree) as an
//! archive, written by the `export` command's writer.
//!
//! The content is written blob by blob as it is read, each blob checked
//! against its id (`Repository::read_blob`) before any of its bytes is
//! written, so memory holds one chunk at a time and no byte that does not
//! match the snapshot reaches the output. A damaged blob stops the dump
//! with an error (exit 1) after the good bytes before it: the output is
//! then incomplete, as the exit status says.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use snap_core::id::SnapshotId;
use snap_core::repo::Repository;
use snap_core::snapshot::Snapshot;
use snap_core::tree::{self, Node, NodeKind};

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` (the newest that holds PATH and matches --host
    /// and --tag), an id or a unique id prefix.
    snapshot: String,
    /// The file, as `snap ls` shows it. A relative path is taken from the
    /// working directory, as `create` does; if the snapshot has no such
    /// path, from the snapshot's root (so `pg_dump.dump` names the file of
    /// a `--stdin-from-command` backup).
    path: PathBuf,
    /// Write PATH and everything below it as an archive (tar, tar.zst or
    /// zip) instead: the way to dump a directory.
    #[arg(long, value_parser = |s: &str| s.parse::<snap_core::export::ArchiveFormat>())]
    archive: Option<snap_core::export::ArchiveFormat>,
    #[command(flatten)]
    select: super::SelectArgs,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let _lock = global.read_lock(&repo, "dump")?;
    if let Some(format) = args.archive {
        let path = snap_core::snapshot::source_path(&args.path)?;
        let mut filter = args.select.filter()?;
        filter.paths.push(path.clone());
        let (id, snapshot) = snap_core::snapshot::find_in(&repo, &args.snapshot, &filter)?;
        return super::export::dump_archive(&repo, &snapshot, &path, format)
            .with_context(|| format!("cannot dump {} of snapshot {}", path.display(), id.short()));
    }
    let (id, _snapshot, path, node) = find(&repo, &args)?;
    match node.kind {
        NodeKind::File => write_file(&repo, &path, &node)?,
        NodeKind::Dir => return directory(global, &repo, &id, &path, &node),
        NodeKind::Symlink => bail!(snap_core::Error::InvalidArgument(format!(
            "{} is a symbolic link (to {}), not a file",
            crate::term::printable(&path.to_string_lossy()),
            crate::term::printable(&String::from_utf8_lossy(&node.link_target))
        ))),
        kind => bail!(snap_core::Error::InvalidArgument(format!(
            "{} is a {}, not a file: it has no content to dump",
            crate::term::printable(&path.to_string_lossy()),
            snap_core::ls::kind_name(kind)
        ))),
    }
    Ok(crate::exit::OK)
}

/// A directory: written as an archive with `--archive tar|zip`; without
/// it, a usage error that says so. (The archive formats are the `export`
/// command's; this is where `dump --archive` joins them.)
fn directory(_global: &GlobalArgs, _repo: &Repository, id: &SnapshotId, path: &Path, _node: &Node) -> Result<i32> {
    bail!(snap_core::Error::InvalidArgument(format!(
        "{} is a directory in snapshot {}: give --archive tar or --archive zip to dump it as an archive",
        crate::term::printable(&path.to_string_lossy()),
        id.short()
    )))
}

/// The snapshot and the node `args.path` names in it, with the path's
/// absolute form. The path as `create` would record it is tried first;
/// a relative one is then tried from the snapshot's root.
fn find(repo: &Repository, args: &Args) -> Result<(SnapshotId, Snapshot, PathBuf, Node)> {
    let mut candidates = vec![snap_core::snapshot::source_path(&args.path)?];
    if args.path.is_relative() {
        let from_root = Path::new("/").join(&args.path);
        let from_root = snap_core::snapshot::source_path(&from_root)?;
        if !candidates.contains(&from_root) {
            candidates.push(from_root);
        }
    }
    let mut last_error = None;
    for path in &candidates {
        match find_at(repo, args, path) {
            Ok(found) => return Ok(found),
            // Not there: the next reading of the path may be.
            Err(e) if is_not_found(&e) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    let error = last_error.expect("at least one candidate path");
    if candidates.len() == 1 {
        return Err(error);
    }
    let tried: Vec<String> = candidates
        .iter()
        .map(|p| crate::term::printable(&p.to_string_lossy()).into_owned())
        .collect();
    // Both readings were not found: one message names both paths.
    bail!(snap_core::Error::InvalidArgument(format!(
        "'{}' is not in snapshot '{}', neither as {} nor as {}",
        crate::term::printable(&args.path.to_string_lossy()),
        args.snapshot,
        tried[0],
        tried[1],
    )))
}

fn is_not_found(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<snap_core::Error>(),
        Some(snap_core::Error::SnapshotNotFound(_) | snap_core::Error::InvalidArgument(_))
    )
}

fn find_at(repo: &Repository, args: &Args, path: &Path) -> Result<(SnapshotId, Snapshot, PathBuf, Node)> {
    let mut filter = args.select.filter()?;
    filter.paths.push(path.to_path_buf());
    let (id, snapshot) = snap_core::snapshot::find_in(repo, &args.snapshot, &filter)?;
    let components = tree::path_components(path).context("a path without '..'")?;
    if components.is_empty() {
        return directory_root(&id, path);
    }
    let node = tree::lookup_path(repo, &snapshot.tree, &components)?.ok_or_else(|| {
        snap_core::Error::InvalidArgument(format!(
            "{} is not in snapshot {}",
            crate::term::printable(&path.to_string_lossy()),
            id.short()
        ))
    })?;
    Ok((id, snapshot, path.to_path_buf(), node))
}

/// `/` is the snapshot's root tree, which has no node of its own.
fn directory_root(id: &SnapshotId, path: &Path) -> Result<(SnapshotId, Snapshot, PathBuf, Node)> {
    bail!(snap_core::Error::InvalidArgument(format!(
        "{} is the root of snapshot {}: give --archive tar or --archive zip to dump it as an archive",
        path.display(),
        id.short()
    )))
}

/// Streams the file's blobs to stdout, and checks that they add up to the
/// size recorded for it.
fn write_file(repo: &Repository, path: &Path, node: &Node) -> Result<()> {
    let mut out = crate::term::Stdout::lock();
    let mut written: u64 = 0;
    let name = || crate::term::printable(&String::from_utf8_lossy(path.as_os_str().as_bytes())).into_owned();
    for (i, blob) in node.content.iter().enumerate() {
        let data = repo
            .read_blob(blob)
            .with_context(|| format!("{}: chunk {} of {}", name(), i + 1, node.content.len()))?;
        out.write_all(&data)?;
        written += data.len() as u64;
    }
    out.flush()?;
    if written != node.size {
        bail!(snap_core::Error::Corrupt {
            what: name(),
            reason: format!(
                "its chunks hold {written} bytes, but its recorded size is {}",
                node.size
            ),
        });
    }
    Ok(())
}
