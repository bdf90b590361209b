//! `snap create`: back up paths or standard input.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use snap_core::archiver::{self, ArchiveOptions, ParentChoice, Source};
use snap_core::compress::Compression;
use snap_core::id::SnapshotId;

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Back up standard input instead of paths (e.g. a database dump).
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// File name for the data read with --stdin (default: stdin).
    // Checked in `run`: clap's `requires` counts the `--stdin` flag's default
    // (false) as present, so the name was ignored silently without it.
    #[arg(long, value_name = "NAME")]
    stdin_filename: Option<String>,
    /// Back up the standard output of the command given after `--` (run
    /// without a shell), e.g. `-- pg_dump mydb`, stored as NAME.dump after
    /// the program (or --stdin-filename); if the command fails, no snapshot
    /// is written.
    #[arg(long, conflicts_with = "stdin")]
    stdin_from_command: bool,
    /// Leave out paths matching this gitignore-style pattern (repeatable).
    #[arg(short, long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Do not cross filesystem boundaries.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Compare with this snapshot instead of the latest of the same host and
    /// paths (`latest` is that default).
    #[arg(long, conflicts_with = "force")]
    parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    force: bool,
    /// Compression for this backup: off, auto, max or 1..22 (default: the repository's).
    #[arg(long)]
    compression: Option<Compression>,
    /// Worker threads (default: cores + 2).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Save the files finished so far as a `checkpoint` snapshot this often,
    /// so an interrupted backup resumes without reading them again (`0s`: never).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    checkpoint_interval: humantime::Duration,
}

/// `snap create --json`: the engine's result (snap_core::archiver::ArchiveResult)
/// and what the command cost in requests.
#[derive(serde::Serialize)]
struct CreateJson<'a> {
    #[serde(flatten)]
    result: &'a snap_core::archiver::ArchiveResult,
    requests: snap_core::backend::counting::RequestStats,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    // With --stdin-from-command the positional arguments are the command.
    if args.stdin_from_command && args.paths.is_empty() {
        bail!(snap_core::Error::InvalidArgument(
            "--stdin-from-command needs the command after `--`, e.g. snap create --stdin-from-command -- pg_dump mydb"
                .into()
        ));
    }
    if args.paths.is_empty() && !args.stdin {
        bail!(snap_core::Error::InvalidArgument(
            "nothing to back up: give paths, or --stdin".into()
        ));
    }
    if args.stdin_filename.is_some() && !args.stdin && !args.stdin_from_command {
        bail!(snap_core::Error::InvalidArgument(
            "--stdin-filename names the file read with --stdin or --stdin-from-command; it needs one of them".into()
        ));
    }
    if let Some(name) = &args.stdin_filename {
        // Checked again by the archiver; here so a bad name costs no repository open.
        if name.len() > archiver::MAX_NAME_LEN {
            bail!(snap_core::Error::InvalidArgument(format!(
                "--stdin-filename is {} bytes long; a file name may have at most {}",
                name.len(),
                archiver::MAX_NAME_LEN
            )));
        }
    }
    let repo = global.open_or_init_default()?;
    let lock = global.lock(&repo, snap_core::lock::LockKind::Shared, "create")?;
    let parent = if args.force {
        ParentChoice::None
    } else if let Some(spec) = args.parent.as_deref().filter(|&p| p != "latest") {
        let (id, _) = snap_core::snapshot::find(&repo, spec)?;
        ParentChoice::Snapshot(id)
    } else {
        ParentChoice::Latest
    };
    let from_command = args.stdin_from_command;
    let source = if args.stdin {
        Source::Stdin {
            filename: args.stdin_filename.unwrap_or_else(|| "stdin".into()),
        }
    } else if from_command {
        // Started only now that the repository is open and locked: a dump
        // is not taken for a backup that cannot be written.
        let argv: Vec<std::ffi::OsString> = args.paths.into_iter().map(PathBuf::into_os_string).collect();
        let stream = crate::stdin_command::CommandStream::spawn(&argv)?;
        Source::Reader {
            filename: args
                .stdin_filename
                .unwrap_or_else(|| crate::stdin_command::default_filename(&argv[0])),
            label: stream.label().into(),
            reader: archiver::StreamReader(Box::new(stream)),
        }
    } else {
        Source::Paths(args.paths)
    };
    let options = ArchiveOptions {
        source,
        excludes: args.excludes,
        exclude_files: args.exclude_files,
        one_file_system: args.one_file_system,
        tags: args.tags,
        host: args.host.unwrap_or_else(snap_core::snapshot::hostname),
        parent,
        compression: args.compression,
        threads: args.threads,
        checkpoint_interval: Some(args.checkpoint_interval.into()).filter(|d: &std::time::Duration| !d.is_zero()),
    };
    let bar = Bar::new(global.quiet, global.json);
    let result = archiver::archive(&repo, options, &bar, &CANCEL, &lock);
    bar.finish();
    // The interrupt terminated the command, so its failure is the interrupt's.
    let result = match result {
        Err(e) if from_command && CANCEL.load(std::sync::atomic::Ordering::SeqCst) => {
            tracing::info!("{e}");
            return Err(anyhow::Error::new(snap_core::Error::Interrupted).context("backup failed"));
        }
        result => result,
    };
    let result = result.context("backup failed")?;
    let s = &result.snapshot;
    if global.json {
        // The documented form is the engine's (snap_core::archiver::ArchiveResult).
        super::print_json(&CreateJson {
            result: &result,
            requests: crate::global::REQUESTS.stats(),
        })?;
    } else if !global.quiet {
        print_summary(&result.id, s)?;
    }
    if s.summary.errors > 0 {
        errln!(
            "{} {} could not be read and {} not in snapshot {}",
            crate::term::label("warning"),
            super::count(s.summary.errors, "file or directory", "files or directories"),
            if s.summary.errors == 1 { "is" } else { "are" },
            result.id.short()
        );
        return Ok(exit::INCOMPLETE);
    }
    Ok(exit::OK)
}

fn print_summary(id: &SnapshotId, s: &snap_core::snapshot::Snapshot) -> Result<()> {
    let m = &s.summary;
    outln!("snapshot {} saved", id.short())?;
    outln!(
        "  files:  {} new, {} changed, {} unmodified; {}",
        m.files_new,
        m.files_changed,
        m.files_unmodified,
        super::count(m.dirs, "directory", "directories")
    )?;
    outln!(
        "  read:   {} of {} in {:.1} s",
        super::human_bytes(m.bytes_read),
        super::human_bytes(m.bytes_total),
        m.duration_seconds
    )?;
    outln!(
        "  added:  {} stored ({} before compression) in {}",
        super::human_bytes(m.bytes_added_stored),
        super::human_bytes(m.bytes_added_raw),
        super::count(m.blobs_added, "new blob", "new blobs")
    )?;
    Ok(())
}
