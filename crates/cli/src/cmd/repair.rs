//! `snap repair index | packs | snapshots`.

use anyhow::{Context, Result};
use snap_core::lock::LockKind;
use snap_core::repair::{self, RepairPacksOptions, RepairSnapshotsOptions};

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
    /// Salvage the intact blobs of damaged packs into new packs and remove the damaged packs.
    ///
    /// With no PACK: the packs the last `snap verify` found damaged.
    Packs {
        /// Packs to repair (ids or unique prefixes).
        #[arg(value_name = "PACK")]
        packs: Vec<String>,
        /// Read every indexed pack to find the damaged ones.
        #[arg(long, conflicts_with = "packs")]
        read_data: bool,
    },
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
    let lock = global.lock(&repo, LockKind::Exclusive, "repair")?;
    match args.what {
        What::Index => {
            let bar = Bar::new(global.quiet, global.json);
            let stats = repair::repair_index(&repo, &bar, &CANCEL, &lock);
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
        What::Packs { packs, read_data } => {
            let bar = Bar::new(global.quiet, global.json);
            let stats = repair::repair_packs(&repo, &RepairPacksOptions { packs, read_data }, &bar, &CANCEL, &lock);
            bar.finish();
            let stats = stats.context("repair packs failed")?;
            if global.json {
                super::print_json(&stats)?;
            } else if !global.quiet {
                if stats.packs.is_empty() {
                    outln!(
                        "no damaged packs known: run `snap verify --read-data` first, name the packs, or use --read-data"
                    )?;
                }
                for p in &stats.packs {
                    match p.outcome {
                        repair::PackOutcome::Intact => outln!("pack {}: intact, left as it is", p.pack.short())?,
                        repair::PackOutcome::Removed => outln!(
                            "pack {}: {}; salvaged {}, {} damaged; removed",
                            p.pack.short(),
                            p.damage,
                            super::count(p.blobs_salvaged as usize, "blob", "blobs"),
                            p.blobs_damaged.len()
                        )?,
                    }
                }
                let removed = stats.removed().count();
                if removed > 0 {
                    outln!(
                        "removed {removed} damaged {} from the index; {} {} no longer stored anywhere",
                        if removed == 1 { "pack" } else { "packs" },
                        stats.blobs_lost.len(),
                        if stats.blobs_lost.len() == 1 {
                            "blob is"
                        } else {
                            "blobs are"
                        }
                    )?;
                    if !stats.blobs_lost.is_empty() {
                        outln!("next: `snap create` of the same paths stores the lost data again (files that still exist are read again),")?;
                        outln!("      then `snap repair snapshots` marks what the older snapshots lost as `.damaged`")?;
                    }
                }
            }
            Ok(crate::exit::OK)
        }
        What::Snapshots { dry_run, forget } => {
            // Unreadable snapshot objects first: they name nothing to repair.
            let damaged =
                snap_core::snapshot::remove_damaged(&repo, dry_run, &lock).context("repair snapshots failed")?;
            for d in &damaged {
                errln!(
                    "snapshot object {} is damaged ({}): {}",
                    d.name,
                    d.reason,
                    if dry_run { "would be removed" } else { "removed" }
                );
            }
            let repaired = repair::repair_snapshots(&repo, &RepairSnapshotsOptions { dry_run, forget }, &CANCEL, &lock)
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
                    outln!("snapshot {} {outcome}:", r.original.short())?;
                    for path in &r.damaged_paths {
                        outln!("  damaged: {}", crate::term::printable(path))?;
                    }
                }
                if repaired.is_empty() {
                    outln!("no snapshot references missing data")?;
                }
            }
            if unrepairable > 0 {
                errln!(
                    "{} {} cannot be repaired (`snap forget` {})",
                    crate::term::label("error"),
                    super::count(unrepairable, "snapshot", "snapshots"),
                    if unrepairable == 1 { "it" } else { "them" }
                );
                return Ok(crate::exit::FAILED);
            }
            Ok(crate::exit::OK)
        }
    }
}
