//! `snap dump`: one file of a snapshot to stdout, or a directory as an
//! archive (`--archive tar|zip`).

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use snap_core::export::ArchiveFormat;
use snap_core::tree::NodeKind;

use crate::exit;
use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest`, an id or a unique id prefix.
    snapshot: String,
    /// The path in the snapshot, as `snap ls` shows it.
    path: PathBuf,
    /// For a directory: write it and everything below it as an archive
    /// (tar, tar.zst or zip).
    #[arg(long, value_parser = |s: &str| s.parse::<ArchiveFormat>())]
    archive: Option<ArchiveFormat>,
    /// With `latest`: the newest snapshot of this host.
    #[arg(long)]
    host: Option<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let _lock = global.read_lock(&repo, "dump")?;
    let filter = super::filter(args.host.clone(), &[], args.tags.clone())?;
    let (id, snapshot) = snap_core::snapshot::find_in(&repo, &args.snapshot, &filter)?;
    let path = snap_core::snapshot::source_path(&args.path)?;
    if let Some(format) = args.archive {
        return super::export::dump_archive(&repo, &snapshot, &path, format)
            .with_context(|| format!("cannot dump {} of snapshot {}", path.display(), id.short()));
    }
    let components = snap_core::tree::path_components(&path)
        .ok_or_else(|| snap_core::Error::InvalidArgument(format!("{}: '..' is not allowed", path.display())))?;
    let node = snap_core::tree::lookup_path(&repo, &snapshot.tree, &components)?;
    let Some(node) = node else {
        bail!(snap_core::Error::InvalidArgument(format!(
            "{} is not in snapshot {}",
            path.display(),
            id.short()
        )));
    };
    if node.kind != NodeKind::File {
        bail!(snap_core::Error::InvalidArgument(format!(
            "{} is not a file: give --archive tar or zip to dump a directory",
            path.display()
        )));
    }
    let mut out = BufWriter::with_capacity(1 << 20, crate::term::Stdout::lock());
    let written = snap_core::export::copy_content(&repo, &path, &node, &mut out).and_then(|n| {
        out.flush()
            .map_err(|e| snap_core::Error::Io {
                path: "standard output".into(),
                error: e,
            })
            .map(|_| n)
    });
    match written {
        Err(snap_core::Error::Io { error, .. })
            if error
                .get_ref()
                .is_some_and(|inner| inner.is::<crate::term::StdoutClosed>()) =>
        {
            crate::term::exit_stdout_closed()
        }
        other => {
            other.with_context(|| format!("cannot dump {} of snapshot {}", path.display(), id.short()))?;
        }
    }
    Ok(exit::OK)
}
