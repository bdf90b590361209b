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
    let snap_core::lock::Removed { removed, kept } = snap_core::lock::remove(&repo, args.remove_all)?;
    if global.json {
        super::print_json(&serde_json::json!({ "removed": removed, "kept": kept }))?;
    } else if !global.quiet {
        outln!("removed {}", super::count(removed.len(), "lock", "locks"))?;
    }
    // Locks of live processes (or unreadable ones) stay: say so, and what
    // would remove them, so the advice in "the repository is locked" holds.
    for lock in &kept {
        errln!(
            "{} kept {lock}: it is not stale; if that process is gone, `snap unlock --remove-all` removes it",
            crate::term::label("warning")
        );
    }
    Ok(crate::exit::OK)
}
