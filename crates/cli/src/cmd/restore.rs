//! `snap restore`: write a snapshot, or parts of it, into a directory.

use std::io::{Seek, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::Serialize;
use snap_core::restorer::{self, Action, EntrySink, Overwrite, PlanEntry, RestoreOptions, Safety};

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` (the newest that holds every --path and matches
    /// --host, --tag and --as-of), `latest~N` (the N-th before it), an id or
    /// a unique id prefix; `SNAPSHOT:PATH` restores only PATH, as --path.
    snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only this path of the snapshot, as shown by `snap ls` (a
    /// relative path is taken from the working directory, as `create` does);
    /// it lands in the target under its own name (repeatable).
    #[arg(long = "path")]
    paths: Vec<PathBuf>,
    /// With `latest`: the newest snapshot of this host.
    #[arg(long)]
    host: Option<String>,
    /// With `latest`: the newest snapshot with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// With `latest`: the newest snapshot not after TIME (RFC 3339, or an
    /// age: `2 days ago`, `3h ago`).
    #[arg(long, value_name = "TIME", value_parser = super::parse_time)]
    as_of: Option<jiff::Timestamp>,
    /// Restore only entries matching this gitignore-style pattern (repeatable).
    #[arg(long = "include", value_name = "PATTERN")]
    includes: Vec<String>,
    /// Do not restore entries matching this gitignore-style pattern (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Show what the restore would do, entry by entry, and change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// What to do with an entry the target already has: `if-changed`
    /// replaces it unless its content already matches (then only its
    /// metadata is set), `if-newer` only if the snapshot's is newer.
    #[arg(long, value_enum, default_value_t = OverwriteArg::IfChanged)]
    overwrite: OverwriteArg,
    /// Remove what the target holds below the restored directories that the
    /// snapshot does not (symlinks are removed, never followed).
    #[arg(long)]
    delete: bool,
    /// Do not back up what is about to be replaced or deleted first.
    #[arg(long)]
    no_safety_snapshot: bool,
    /// Read every written file back and check it against the snapshot
    /// before it is put in place.
    #[arg(long)]
    verify: bool,
    /// Worker threads (default: cores + 2).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OverwriteArg {
    Always,
    IfChanged,
    IfNewer,
    Never,
}

/// `snap restore --json`: which snapshot went where, then the engine's
/// result (counts, errors, files restored with content missing as
/// `NAME.damaged`, the plan entry by entry with its totals per action, and
/// the safety snapshot).
#[derive(Serialize)]
struct RestoreJson<'a> {
    snapshot: String,
    target: String,
    #[serde(flatten)]
    result: &'a restorer::RestoreResult,
    requests: snap_core::backend::counting::RequestStats,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let lock = global.read_lock(&repo, "restore")?;
    let (spec, subtree) = snap_core::snapshot::split_subtree(&args.snapshot);
    let mut paths = args.paths.clone();
    if let Some(subtree) = subtree {
        if !paths.is_empty() {
            anyhow::bail!(snap_core::Error::InvalidArgument(
                "give the path to restore as SNAPSHOT:PATH or with --path, not both".into()
            ));
        }
        paths.push(PathBuf::from(subtree));
    }
    let mut filter = super::filter(args.host.clone(), &paths, args.tags.clone())?;
    filter.as_of = args.as_of;
    let (id, snapshot) = snap_core::snapshot::find_in(&repo, spec, &filter)?;
    let options = RestoreOptions {
        target: args.target.clone(),
        paths: filter.paths,
        includes: args.includes,
        excludes: args.excludes,
        ownership: None,
        threads: args.threads,
        overwrite: match args.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        },
        delete: args.delete,
        dry_run: args.dry_run,
        verify: args.verify,
        entry_sink: None,
        batch_entries: 0,
    };
    // The plan's entries are not kept: a dry run prints them as they come,
    // `--json` spools them to a file (the document is written whole, once
    // the restore is done, or not at all), and a restore forgets them.
    let spool = Arc::new(Mutex::new(Spool::new(global.json)?));
    let options = RestoreOptions {
        entry_sink: Some(entry_sink(&spool, global.json, args.dry_run && !global.quiet)),
        ..options
    };
    let threads = args.threads;
    let take = |paths: &[PathBuf]| safety_snapshot(&repo, lock.as_ref(), paths, threads);
    let safety: Option<&Safety> = (!args.no_safety_snapshot).then_some(&take);
    let bar = Bar::new(global.quiet || args.dry_run, global.json);
    let result = restorer::restore_with(&repo, &snapshot, &options, safety, &bar, &CANCEL);
    bar.finish();
    let result = result.with_context(|| format!("cannot restore snapshot {}", id.short()))?;
    let mut spool = std::mem::replace(&mut *spool.lock().unwrap_or_else(|e| e.into_inner()), Spool::none());
    if let Some(e) = spool.failed.take() {
        return Err(e);
    }
    if global.json {
        let head = serde_json::to_value(RestoreJson {
            snapshot: id.to_hex(),
            target: args.target.to_string_lossy().into_owned(),
            result: &result,
            requests: crate::global::REQUESTS.stats(),
        })?;
        spool.print_json(head)?;
    } else if !global.quiet {
        print_text(&result, &id, &args.target)?;
    }
    if !result.errors.is_empty() {
        let (one, many) = if result.dry_run {
            ("would be", "would be")
        } else {
            ("was", "were")
        };
        errln!(
            "{} {} not restored completely (see the messages above)",
            crate::term::label("error"),
            match result.errors.len() {
                1 => format!("1 entry {one}"),
                n => format!("{n} entries {many}"),
            }
        );
        return Ok(exit::INCOMPLETE);
    }
    Ok(exit::OK)
}

/// The safety snapshot of `paths` (snap-core's `safety`); none without a
/// lock, on a repository opened read-only.
fn safety_snapshot(
    repo: &snap_core::repo::Repository,
    lock: Option<&snap_core::lock::LockGuard>,
    paths: &[PathBuf],
    threads: usize,
) -> snap_core::error::Result<snap_core::id::SnapshotId> {
    let Some(lock) = lock else {
        return Err(snap_core::Error::SafetySnapshot {
            reason: "the repository is read-only here (--no-safety-snapshot restores without one)".into(),
        });
    };
    snap_core::safety::safety_snapshot(repo, lock, paths, threads, &CANCEL)
}

/// Where the plan's entries go while the restore runs.
struct Spool {
    /// `--json`: entries as JSON, comma-separated, in an unlinked file.
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// Entries written to `file`.
    count: u64,
    /// The first error writing them.
    failed: Option<anyhow::Error>,
}

impl Spool {
    fn none() -> Spool {
        Spool {
            file: None,
            count: 0,
            failed: None,
        }
    }

    fn new(json: bool) -> Result<Spool> {
        if !json {
            return Ok(Spool::none());
        }
        // Private (0600) and unlinked from the start where the system
        // allows: the entries name every restored path.
        let file = tempfile::tempfile().context("cannot create a temporary file for the entries")?;
        Ok(Spool {
            file: Some(std::io::BufWriter::new(file)),
            count: 0,
            failed: None,
        })
    }

    /// Prints `head` (the JSON object of the result, whose `entries` are
    /// empty) with the spooled entries as its `entries`.
    fn print_json(self, mut head: serde_json::Value) -> Result<()> {
        if let Some(object) = head.as_object_mut() {
            object.remove("entries");
        }
        let head = serde_json::to_string(&head)?;
        let head = head.strip_suffix('}').unwrap_or(&head);
        let sep = if head.ends_with('{') { "" } else { "," };
        let mut out = std::io::stdout().lock();
        write!(out, "{head}{sep}\"entries\":[")?;
        if let Some(file) = self.file {
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            std::io::copy(&mut file, &mut out)?;
        }
        writeln!(out, "]}}")?;
        out.flush()?;
        Ok(())
    }
}

/// The JSON form of one plan entry (README, `snap restore --json`).
#[derive(Serialize)]
struct EntryJson<'a> {
    path: std::borrow::Cow<'a, str>,
    kind: &'static str,
    action: Action,
    size: u64,
}

fn entry_sink(spool: &Arc<Mutex<Spool>>, json: bool, print: bool) -> EntrySink {
    let spool = spool.clone();
    EntrySink(Arc::new(move |e: &PlanEntry| {
        let mut spool = spool.lock().unwrap_or_else(|e| e.into_inner());
        if spool.failed.is_some() {
            return;
        }
        let written: Result<()> = (|| {
            if json {
                let first = spool.count == 0;
                spool.count += 1;
                let Some(file) = spool.file.as_mut() else {
                    return Ok(());
                };
                if !first {
                    file.write_all(b",")?;
                }
                let entry = EntryJson {
                    path: e.path.to_string_lossy(),
                    kind: e.kind,
                    action: e.action,
                    size: e.size,
                };
                serde_json::to_writer(&mut *file, &entry)?;
            } else if print {
                print_entry(e)?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            spool.failed = Some(e.context("cannot list the restore's entries"));
        }
    }))
}

fn print_entry(e: &PlanEntry) -> Result<()> {
    let size = if e.kind == "file" {
        super::human_bytes(e.size)
    } else {
        e.kind.to_string()
    };
    outln!(
        "{:<11} {:>10}  {}",
        e.action.name(),
        size,
        crate::term::printable(&e.path.to_string_lossy())
    )?;
    Ok(())
}

fn print_text(
    result: &restorer::RestoreResult,
    id: &snap_core::id::SnapshotId,
    target: &std::path::Path,
) -> Result<()> {
    if result.dry_run {
        // The entries were printed as the plan was made.
        for e in &result.entries {
            print_entry(e)?;
        }
    } else {
        outln!(
            "restored snapshot {} to {}: {}, {}, {} other, {}",
            id.short(),
            target.display(),
            super::count(result.files, "file", "files"),
            super::count(result.dirs, "directory", "directories"),
            result.other,
            super::human_bytes(result.bytes)
        )?;
    }
    let totals: Vec<String> = Action::ALL
        .iter()
        .map(|a| (a, result.total(*a)))
        .filter(|(_, t)| t.count > 0)
        .map(|(a, t)| format!("{} {} ({})", t.count, a.name(), super::human_bytes(t.bytes)))
        .collect();
    let lead = if result.dry_run { "would restore" } else { "in all" };
    outln!(
        "{lead}: {}",
        if totals.is_empty() {
            "nothing".to_string()
        } else {
            totals.join(", ")
        }
    )?;
    if let Some(safety) = &result.safety_snapshot {
        outln!(
            "safety snapshot {} (tag {}) holds what was replaced or deleted",
            safety.short(),
            restorer::SAFETY_TAG
        )?;
    }
    if result.verified > 0 {
        outln!("verified {}", super::count(result.verified, "file", "files"))?;
    }
    Ok(())
}
