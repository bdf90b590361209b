//! `snap repair index | snapshots`.

use anyhow::{Context, Result};
use snap_core::lock::LockKind;
use snap_core::repair::{self, RepairSnapshotsOptions};

use crate::global::{GlobalArgs, CANCEL};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Rebuild the index files (and the local cache) from the pack headers.
    Index,
    /// Rewrite snapshots that reference missing data, marking damaged files `.damaged`.
    Snapshots {
        /// Say what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete the original of each repaired snapshot.
        #[arg(long)]
        forget: bool,
    },
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let _lock = global.lock(&repo, LockKind::Exclusive, "repair")?;
    match args.what {
        What::Index => {
            let bar = Bar::new(global.quiet, global.json);
            let stats = repair::repair_index(&repo, &bar, &CANCEL);
            bar.finish();
            let stats = stats.context("repair index failed")?;
            for (pack, why) in &stats.packs_unreadable {
                eprintln!("error: pack {pack}: {why}; its blobs are not indexed");
            }
            if global.json {
                super::print_json(&stats)?;
            } else if !global.quiet {
                println!(
                    "indexed {} blobs in {} packs into {} index files (replacing {})",
                    stats.blobs_indexed, stats.packs_indexed, stats.index_files_written, stats.index_files_removed
                );
            }
            Ok(if stats.packs_unreadable.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::INCOMPLETE
            })
        }
        What::Snapshots { dry_run, forget } => {
            // Unreadable snapshot objects first: they name nothing to repair.
            let damaged = snap_core::snapshot::remove_damaged(&repo, dry_run).context("repair snapshots failed")?;
            for d in &damaged {
                eprintln!(
                    "snapshot object {} is damaged ({}): {}",
                    d.name,
                    d.reason,
                    if dry_run { "would be removed" } else { "removed" }
                );
            }
            let repaired = repair::repair_snapshots(&repo, &RepairSnapshotsOptions { dry_run, forget }, &CANCEL)
                .context("repair snapshots failed")?;
            let unrepairable = repaired.iter().filter(|r| r.root_unreadable).count();
            if global.json {
                super::print_json(&repaired)?;
            } else if !global.quiet {
                for r in &repaired {
                    let outcome = match (&r.repaired, dry_run) {
                        _ if r.root_unreadable => "cannot be repaired (its root is unreadable)".to_string(),
                        (_, true) => "would be repaired".to_string(),
                        (Some(new), false) => format!("repaired as {}", new.short()),
                        (None, false) => "was not repaired".to_string(),
                    };
                    println!("snapshot {} {outcome}:", r.original.short());
                    for path in &r.damaged_paths {
                        println!("  damaged: {path}");
                    }
                }
                if repaired.is_empty() {
                    println!("no snapshot references missing data");
                }
            }
            if unrepairable > 0 {
                eprintln!("error: {unrepairable} snapshots cannot be repaired (`snap forget` them)");
                return Ok(crate::exit::FAILED);
            }
            Ok(crate::exit::OK)
        }
    }
}
