//! `snap verify`: check that the repository is whole.

use anyhow::{Context, Result};
use snap_core::verify::{self, DataSubset, Severity, VerifyOptions};

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Also read every pack and check every blob against its id.
    #[arg(long)]
    read_data: bool,
    /// Read only part of the data: `n/m` (part n of m), `10%`, or a size such as `2GiB`.
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<DataSubset>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let _lock = global.read_lock(&repo, "verify")?;
    let read_data = match (args.read_data, args.read_data_subset) {
        (true, _) => Some(DataSubset::All),
        (false, subset) => subset,
    };
    let bar = Bar::new(global.quiet, global.json);
    let report = verify::verify(&repo, &VerifyOptions { read_data }, &bar, &CANCEL);
    bar.finish();
    let report = report.context("verify failed")?;
    if global.json {
        super::print_json(&report)?;
    } else {
        for p in &report.problems {
            let label = match p.severity {
                Severity::Error => "error",
                Severity::Notice => "notice",
            };
            errln!(
                "{} {}: {}",
                crate::term::label(label),
                p.object,
                crate::term::printable(&p.message)
            );
            for (i, a) in p.affects.iter().enumerate() {
                if i == 20 {
                    errln!("  ... and {} more", p.affects.len() - 20);
                    break;
                }
                errln!(
                    "  used by {} in snapshot {}",
                    crate::term::printable(&a.path),
                    &a.snapshot[..8]
                );
            }
        }
        if !global.quiet {
            let s = &report.stats;
            outln!(
                "checked {}, {}, {} ({} read, {}), {}, {}",
                super::count(s.snapshots, "snapshot", "snapshots"),
                super::count(s.index_files, "index file", "index files"),
                super::count(s.packs, "pack", "packs"),
                s.packs_read,
                super::human_bytes(s.bytes_read),
                super::count(s.trees, "tree", "trees"),
                super::count(s.blob_references, "blob reference", "blob references")
            )?;
            if report.has_errors() {
                outln!("the repository is damaged: see the errors above")?;
                let n = report.damaged_packs.len();
                if n > 0 {
                    outln!(
                        "next: 1. `snap repair packs` salvages the intact blobs of the {n} damaged {} and removes {} from the index",
                        if n == 1 { "pack" } else { "packs" },
                        if n == 1 { "it" } else { "them" }
                    )?;
                    outln!("      2. `snap create` of the same paths stores the lost data again (files that still exist are read again)")?;
                    outln!("      then `snap repair snapshots` marks what the older snapshots lost as `.damaged`")?;
                }
            } else {
                outln!("no errors found")?;
            }
        }
    }
    Ok(if report.has_errors() { exit::FAILED } else { exit::OK })
}
