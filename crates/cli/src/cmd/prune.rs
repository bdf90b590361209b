//! `snap prune`: delete data no snapshot uses.

use anyhow::{Context, Result};
use snap_core::lock::{LockGuard, LockKind};
use snap_core::prune::{self, PruneOptions, PruneStats};
use snap_core::repo::Repository;

use crate::global::{GlobalArgs, CANCEL};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Say what would be deleted and repacked, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack packs whose unused share exceeds this, e.g. `5%` or `0.05`.
    #[arg(long, default_value = "5%", value_parser = parse_share)]
    pub max_unused: f64,
}

pub fn parse_share(s: &str) -> Result<f64, String> {
    let value = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|e| e.to_string())? / 100.0,
        None => s.parse::<f64>().map_err(|e| e.to_string())?,
    };
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("'{s}' is not a share between 0% and 100%"))
    }
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let lock = global.lock(&repo, LockKind::Exclusive, "prune")?;
    run_locked(global, &repo, &args, &lock)?;
    Ok(crate::exit::OK)
}

/// Prune with the exclusive lock already held (also used by `forget --prune`).
pub fn run_locked(global: &GlobalArgs, repo: &Repository, args: &Args, lock: &LockGuard) -> Result<PruneStats> {
    let options = PruneOptions {
        max_unused: args.max_unused,
        dry_run: args.dry_run,
    };
    // Beside the index cache in use: a temporary directory when the cache
    // directory is not writable.
    let scratch = repo.cache_dir().to_path_buf();
    let bar = Bar::new(global.quiet, global.json);
    let stats = prune::prune(repo, &options, &scratch, &bar, &CANCEL, lock);
    bar.finish();
    let stats = stats.context("prune failed")?;
    if global.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            stats: &'a PruneStats,
            bytes_freed: u64,
        }
        super::print_json(&Out {
            stats: &stats,
            bytes_freed: stats.bytes_freed(),
        })?;
    } else if !global.quiet {
        let [delete, repack, remove] = if stats.dry_run {
            ["would delete", "repack", "remove"]
        } else {
            ["deleted", "repacked", "removed"]
        };
        outln!(
            "{} {} {}; {} ({}) in the repository",
            super::count(stats.snapshots, "snapshot", "snapshots"),
            if stats.snapshots == 1 { "uses" } else { "use" },
            super::count(stats.used_blobs, "blob", "blobs"),
            super::count(stats.packs_total, "pack", "packs"),
            super::human_bytes(stats.bytes_total)
        )?;
        outln!(
            "prune {delete} {}, {repack} {}, {remove} {} unindexed; {} freed",
            super::count(stats.packs_deleted, "unused pack", "unused packs"),
            stats.packs_repacked,
            stats.packs_unindexed,
            super::human_bytes(stats.bytes_freed())
        )?;
    }
    Ok(stats)
}
