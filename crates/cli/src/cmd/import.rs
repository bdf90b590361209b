//! `snap import`: a snapshot from a tar, tar.zst or zip archive.

use std::path::PathBuf;

use anyhow::{Context, Result};
use snap_core::compress::Compression;
use snap_core::export::ArchiveFormat;
use snap_core::import::{self, ImportOptions};

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};

#[derive(clap::Args)]
pub struct Args {
    /// The archive (`-` for standard input, tar or tar.zst only).
    file: PathBuf,
    /// Archive format: tar, tar.zst or zip (default: from the file name).
    #[arg(long, value_parser = |s: &str| s.parse::<ArchiveFormat>())]
    format: Option<ArchiveFormat>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// The snapshot's time, RFC 3339 (e.g. 2024-05-01T12:00:00Z; default: now).
    #[arg(long)]
    time: Option<jiff::Timestamp>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Compression: off, auto, max or 1..22 (default: the repository's).
    #[arg(long)]
    compression: Option<Compression>,
}

#[derive(serde::Serialize)]
struct ImportJson<'a> {
    #[serde(flatten)]
    result: &'a snap_core::archiver::ArchiveResult,
    requests: snap_core::backend::counting::RequestStats,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let lock = global.lock(&repo, snap_core::lock::LockKind::Shared, "import")?;
    let options = ImportOptions {
        file: args.file.clone(),
        format: args.format,
        host: args.host.unwrap_or_else(snap_core::snapshot::hostname),
        time: args.time,
        tags: args.tags,
        compression: args.compression,
    };
    let result = import::import(&repo, options, &CANCEL, &lock)
        .with_context(|| format!("cannot import {}", args.file.display()))?;
    if global.json {
        super::print_json(&ImportJson {
            result: &result,
            requests: crate::global::REQUESTS.stats(),
        })?;
    } else if !global.quiet {
        let m = &result.snapshot.summary;
        outln!(
            "snapshot {} saved from {}: {}, {}, {} ({} new in {})",
            result.id.short(),
            args.file.display(),
            super::count(m.files_new, "file", "files"),
            super::count(m.dirs, "directory", "directories"),
            super::human_bytes(m.bytes_total),
            super::human_bytes(m.bytes_added_raw),
            super::count(m.blobs_added, "blob", "blobs"),
        )?;
    }
    Ok(exit::OK)
}
