//! `snap catalog export`: the files of snapshots in an SQLite database
//! (schema: docs/catalog.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use snap_core::catalog;

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Write every file of the snapshots (default: all) to an SQLite database.
    Export(ExportArgs),
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The database file to write (replaced if it exists). (`-o` is the
    /// global backend option.)
    #[arg(short = 't', long, visible_alias = "target", value_name = "FILE.sqlite")]
    output: PathBuf,
    /// Snapshots to include (ids, prefixes or `latest`; default: all).
    snapshots: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let Command::Export(args) = args.command;
    let repo = global.open()?;
    let _lock = global.read_lock(&repo, "catalog")?;
    let snapshots = if args.snapshots.is_empty() {
        snap_core::snapshot::list(&repo)?
    } else {
        args.snapshots
            .iter()
            .map(|spec| snap_core::snapshot::find(&repo, spec))
            .collect::<Result<Vec<_>, _>>()?
    };
    let result = catalog::export(&repo, &snapshots, &args.output, &CANCEL)
        .with_context(|| format!("cannot write the catalog {}", args.output.display()))?;
    if global.json {
        super::print_json(&result)?;
    } else if !global.quiet {
        outln!(
            "catalog {}: {}, {}",
            args.output.display(),
            super::count(result.snapshots, "snapshot", "snapshots"),
            super::count(result.files, "entry", "entries")
        )?;
    }
    Ok(exit::OK)
}
