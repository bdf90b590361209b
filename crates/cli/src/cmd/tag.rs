//! `snap tag`: change the tags of existing snapshots.

use anyhow::{bail, Result};
use snap_core::id::SnapshotId;
use snap_core::lock::LockKind;
use snap_core::snapshot::TagChange;

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to change: ids, unique prefixes or `latest`.
    #[arg(required = true)]
    ids: Vec<String>,
    /// Add this tag (repeatable).
    #[arg(long = "add", value_name = "TAG")]
    add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long = "remove", value_name = "TAG")]
    remove: Vec<String>,
    /// Replace all tags by these (repeatable; `--set ''` removes every tag).
    #[arg(long = "set", value_name = "TAG")]
    set: Vec<String>,
}

/// One snapshot of `snap tag --json`.
#[derive(serde::Serialize)]
struct Retagged {
    /// The id before the change.
    id: String,
    /// The id of the rewritten snapshot; `null` when the tags were already as asked.
    new_id: Option<String>,
    tags: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    if args.add.is_empty() && args.remove.is_empty() && args.set.is_empty() {
        bail!(snap_core::Error::InvalidArgument(
            "nothing to change: give --add, --remove or --set".into()
        ));
    }
    let change = TagChange {
        set: (!args.set.is_empty()).then(|| args.set.clone()),
        add: args.add,
        remove: args.remove,
    };
    let repo = global.open()?;
    // Exclusive, as forget: the old object is deleted, and a backup that
    // chose it as its parent must not find it gone halfway.
    let lock = global.lock(&repo, LockKind::Exclusive, "tag")?;
    let mut chosen: Vec<SnapshotId> = Vec::new();
    for spec in &args.ids {
        let (id, _) = find_following_retags(&repo, spec)?;
        if !chosen.contains(&id) {
            chosen.push(id);
        }
    }
    let mut done = Vec::new();
    for id in chosen {
        let result = snap_core::snapshot::retag(&repo, &id, &change, &lock)?;
        let (new_id, tags) = match result {
            Some((new_id, s)) => (Some(new_id), s.tags),
            None => (
                None,
                change.apply(&snap_core::snapshot::Snapshot::load(&repo, &id)?.tags),
            ),
        };
        if !global.json && !global.quiet {
            match new_id {
                Some(new_id) => outln!(
                    "snapshot {} is now {}: tags {}",
                    id.short(),
                    new_id.short(),
                    crate::term::printable(&tags.join(","))
                )?,
                None => outln!("snapshot {}: tags unchanged", id.short())?,
            }
        }
        done.push(Retagged {
            id: id.to_hex(),
            new_id: new_id.map(|n| n.to_hex()),
            tags,
        });
    }
    if global.json {
        super::print_json(&done)?;
    }
    Ok(crate::exit::OK)
}

/// [`snap_core::snapshot::find`], and for an id no longer stored, the one
/// snapshot a `snap tag` rewrote it as (its `original`): two `tag` commands
/// given the same id, run at once, then both apply, one after the other.
fn find_following_retags(
    repo: &snap_core::repo::Repository,
    spec: &str,
) -> Result<(SnapshotId, snap_core::snapshot::Snapshot)> {
    let error = match snap_core::snapshot::find(repo, spec) {
        Ok(found) => return Ok(found),
        Err(e @ snap_core::Error::SnapshotNotFound(_)) => e,
        Err(e) => return Err(e.into()),
    };
    let spec_lower = spec.to_ascii_lowercase();
    if spec_lower.len() < 8 || !spec_lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(error.into());
    }
    let mut rewritten: Vec<_> = snap_core::snapshot::list(repo)?
        .into_iter()
        .filter(|(_, s)| s.original.is_some_and(|o| o.to_hex().starts_with(&spec_lower)))
        .collect();
    match rewritten.len() {
        1 => Ok(rewritten.pop().expect("one")),
        _ => Err(error.into()),
    }
}
