//! `snap restore`: write a snapshot, or parts of it, into a directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use snap_core::restorer::{self, RestoreOptions};

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` (the newest that holds every --path and matches
    /// --host and --tag), an id or a unique id prefix.
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
    /// Restore only entries matching this gitignore-style pattern (repeatable).
    #[arg(long = "include", value_name = "PATTERN")]
    includes: Vec<String>,
    /// Do not restore entries matching this gitignore-style pattern (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Worker threads (default: cores + 2).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// `snap restore --json`: which snapshot went where, then the engine's
/// result (counts, errors, and files restored with content missing as
/// `NAME.damaged`, never under their own names; each is in `errors` too).
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
    let _lock = global.read_lock(&repo, "restore")?;
    let filter = super::filter(args.host.clone(), &args.paths, args.tags.clone())?;
    let (id, snapshot) = snap_core::snapshot::find_in(&repo, &args.snapshot, &filter)?;
    let options = RestoreOptions {
        target: args.target.clone(),
        paths: filter.paths,
        includes: args.includes,
        excludes: args.excludes,
        ownership: None,
        threads: args.threads,
    };
    let bar = Bar::new(global.quiet, global.json);
    let result = restorer::restore(&repo, &snapshot, &options, &bar, &CANCEL);
    bar.finish();
    let result = result.with_context(|| format!("cannot restore snapshot {}", id.short()))?;
    if global.json {
        super::print_json(&RestoreJson {
            snapshot: id.to_hex(),
            target: args.target.to_string_lossy().into_owned(),
            result: &result,
            requests: crate::global::REQUESTS.stats(),
        })?;
    } else if !global.quiet {
        outln!(
            "restored snapshot {} to {}: {}, {}, {} other, {}",
            id.short(),
            args.target.display(),
            super::count(result.files, "file", "files"),
            super::count(result.dirs, "directory", "directories"),
            result.other,
            super::human_bytes(result.bytes)
        )?;
    }
    if !result.errors.is_empty() {
        errln!(
            "{} {} not restored completely (see the messages above)",
            crate::term::label("error"),
            match result.errors.len() {
                1 => "1 entry was".to_string(),
                n => format!("{n} entries were"),
            }
        );
        return Ok(exit::INCOMPLETE);
    }
    Ok(exit::OK)
}
