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
                errln!(
                    "{} pack {pack}: {why}; its blobs are not indexed",
                    crate::term::label("error")
                );
            }
            if global.json {
                super::print_json(&stats)?;
            } else if !global.quiet {
                outln!(
                    "indexed {} in {} into {} (replacing {})",
                    super::count(stats.blobs_indexed, "blob", "blobs"),
                    super::count(stats.packs_indexed, "pack", "packs"),
                    super::count(stats.index_files_written, "index file", "index files"),
                    stats.index_files_removed
                )?;
            }
            Ok(if stats.packs_unreadable.is_empty() {
                crate::exit::OK
            } else {
                crate::exit::INCOMPLETE
            })
        }
        What::Snapshots { dry_run, forget } => {
            let repaired = repair::repair_snapshots(&repo, &RepairSnapshotsOptions { dry_run, forget }, &CANCEL)
                .context("repair snapshots failed")?;
            if global.json {
                super::print_json(&repaired)?;
            } else if !global.quiet {
                for r in &repaired {
                    let outcome = match (&r.repaired, dry_run) {
                        (_, true) => "would be repaired".to_string(),
                        (Some(new), false) => format!("repaired as {}", new.short()),
                        (None, false) => "cannot be repaired (its root is unreadable)".to_string(),
                    };
                    outln!("snapshot {} {outcome}:", r.original.short())?;
                    for path in &r.damaged_paths {
                        outln!("  damaged: {}", crate::term::printable(path))?;
                    }
                }
                if repaired.is_empty() {
                    outln!("no snapshot references missing data")?;
                }
            }
            Ok(crate::exit::OK)
        }
    }
}
