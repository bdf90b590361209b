//! `snap unlock`: remove stale locks.

use anyhow::Result;

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Remove every lock, not only stale ones. Only when no other snap is running.
    #[arg(long)]
    remove_all: bool,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let removed = snap_core::lock::remove(&repo, args.remove_all)?;
    if global.json {
        super::print_json(&serde_json::json!({ "removed": removed }))?;
    } else if !global.quiet {
        outln!("removed {}", super::count(removed.len(), "lock", "locks"))?;
    }
    Ok(crate::exit::OK)
}
