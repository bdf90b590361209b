//! `snap export`: a snapshot, or one path of it, as a tar, tar.zst or zip
//! archive in a file or on stdout. Also the archive writer of
//! `snap dump --archive` ([`write_archive`]).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use snap_core::export::{self, ArchiveFormat, ExportOptions, ExportResult};
use snap_core::repo::Repository;
use snap_core::snapshot::Snapshot;

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` (the newest that matches --host and --tag), an id
    /// or a unique id prefix.
    snapshot: String,
    /// Archive format: tar, tar.zst or zip (default: from the extension of
    /// -o, else tar).
    #[arg(long, value_parser = |s: &str| s.parse::<ArchiveFormat>())]
    format: Option<ArchiveFormat>,
    /// File to write (`-` for standard output). Written under a temporary
    /// name and renamed when complete. (`-o` is the global backend option.)
    #[arg(short = 't', long, visible_alias = "target", value_name = "FILE")]
    output: PathBuf,
    /// Export only this path of the snapshot (it is the archive's top entry,
    /// under its own name); default: the whole snapshot.
    #[arg(long = "path", value_name = "PATH")]
    path: Option<PathBuf>,
    /// With `latest`: the newest snapshot of this host.
    #[arg(long)]
    host: Option<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
}

#[derive(serde::Serialize)]
struct ExportJson<'a> {
    snapshot: String,
    output: String,
    format: &'static str,
    #[serde(flatten)]
    result: &'a ExportResult,
}

fn format_name(format: ArchiveFormat) -> &'static str {
    match format {
        ArchiveFormat::Tar => "tar",
        ArchiveFormat::TarZst => "tar.zst",
        ArchiveFormat::Zip => "zip",
    }
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let _lock = global.read_lock(&repo, "export")?;
    let filter = super::filter(args.host.clone(), &[], args.tags.clone())?;
    let (id, snapshot) = snap_core::snapshot::find_in(&repo, &args.snapshot, &filter)?;
    let to_stdout = args.output == Path::new("-");
    let format = args
        .format
        .or_else(|| {
            (!to_stdout)
                .then(|| ArchiveFormat::from_file_name(&args.output))
                .flatten()
        })
        .unwrap_or(ArchiveFormat::Tar);
    let path = match &args.path {
        Some(p) => Some(snap_core::snapshot::source_path(p)?),
        None => None,
    };
    let options = ExportOptions { format, path };
    let result = if to_stdout {
        write_archive(&repo, &snapshot, &options)
    } else {
        export::write_file_atomically(&args.output, |file, _| {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let result = export::export(&repo, &snapshot, &options, &mut out, &CANCEL)?;
            out.flush().map_err(|e| snap_core::Error::Io {
                path: args.output.clone(),
                error: e,
            })?;
            Ok(result)
        })
        .map_err(Into::into)
    }
    .with_context(|| format!("cannot export snapshot {}", id.short()))?;
    report_skipped(&result);
    if global.json && !to_stdout {
        super::print_json(&ExportJson {
            snapshot: id.to_hex(),
            output: args.output.to_string_lossy().into_owned(),
            format: format_name(format),
            result: &result,
        })?;
    } else if !global.quiet {
        let line = format!(
            "exported snapshot {} to {} ({}): {}, {}, {} symlinks, {} hard links, {} other, {}",
            id.short(),
            if to_stdout {
                "standard output".into()
            } else {
                args.output.display().to_string()
            },
            format_name(format),
            super::count(result.files, "file", "files"),
            super::count(result.dirs, "directory", "directories"),
            result.symlinks,
            result.hardlinks,
            result.other,
            super::human_bytes(result.bytes)
        );
        // With the archive on stdout, the summary must not go into it.
        if to_stdout {
            errln!("{line}");
        } else {
            outln!("{line}")?;
        }
    }
    Ok(if result.skipped.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

fn report_skipped(result: &ExportResult) {
    for skipped in &result.skipped {
        errln!(
            "{} {}: not in the archive: {}",
            crate::term::label("warning"),
            crate::term::printable(&skipped.path),
            skipped.message
        );
    }
}

/// Writes `options.path` of `snapshot` as an archive to standard output:
/// `snap export -o -` and `snap dump --archive`. A reader that goes away
/// ends snap quietly, as for any other output.
pub fn write_archive(repo: &Repository, snapshot: &Snapshot, options: &ExportOptions) -> Result<ExportResult> {
    let mut out = BufWriter::with_capacity(1 << 20, crate::term::Stdout::lock());
    let result = export::export(repo, snapshot, options, &mut out, &CANCEL).and_then(|r| {
        out.flush()
            .map_err(|e| snap_core::Error::Io {
                path: "standard output".into(),
                error: e,
            })
            .map(|_| r)
    });
    match result {
        Err(snap_core::Error::Io { error, .. })
            if error
                .get_ref()
                .is_some_and(|inner| inner.is::<crate::term::StdoutClosed>()) =>
        {
            crate::term::exit_stdout_closed()
        }
        other => Ok(other?),
    }
}

/// `snap dump SNAPSHOT PATH --archive FORMAT` for a directory: PATH and
/// everything below it, as an archive on stdout. Returns the exit code.
pub fn dump_archive(repo: &Repository, snapshot: &Snapshot, path: &Path, format: ArchiveFormat) -> Result<i32> {
    let options = ExportOptions {
        format,
        path: Some(path.to_path_buf()),
    };
    let result = write_archive(repo, snapshot, &options)?;
    report_skipped(&result);
    Ok(if result.skipped.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}
