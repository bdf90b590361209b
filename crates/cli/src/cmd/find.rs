//! `snap find`: which snapshots hold which version of the files matching
//! a pattern (the search is `snap_core::find`; this renders it).

use anyhow::{Context, Result};
use serde::Serialize;
use snap_core::find::{self, FindOptions, Found};
use snap_core::id::SnapshotId;
use snap_core::ls::{Entry, EntryJson};
use snap_core::tree::NodeKind;

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Globs: one without `/` matches names, one with `/` full paths (see README).
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Match patterns regardless of case.
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// Search only this snapshot (repeatable): `latest`, an id or a unique prefix.
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    snapshots: Vec<String>,
    #[command(flatten)]
    select: super::SelectArgs,
    /// Only entries modified at or before TIME (RFC 3339, `YYYY-MM-DD[ HH:MM[:SS]]` local, or `2 days ago`).
    #[arg(long, value_name = "TIME", value_parser = super::parse_time)]
    newest: Option<jiff::Timestamp>,
    /// Only entries modified at or after TIME.
    #[arg(long, value_name = "TIME", value_parser = super::parse_time)]
    oldest: Option<jiff::Timestamp>,
    /// Show mode and owner of each version too.
    #[arg(short, long)]
    long: bool,
}

/// `snap find --json`.
#[derive(Serialize)]
struct FindJson {
    snapshots_searched: u64,
    trees_read: u64,
    matches: Vec<MatchJson>,
}

#[derive(Serialize)]
struct MatchJson {
    path: String,
    versions: Vec<VersionJson>,
}

#[derive(Serialize)]
struct VersionJson {
    /// The entry as the oldest snapshot holding this version recorded it.
    entry: EntryJson,
    /// Equal for equal content (hex).
    content: String,
    snapshots: Vec<SnapshotRef>,
}

#[derive(Serialize)]
struct SnapshotRef {
    id: String,
    short_id: String,
    time: String,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let filter = args.select.filter()?;
    let snapshots = super::chosen_snapshots(&repo, &args.snapshots, &filter)?;
    let ns = |t: &jiff::Timestamp| i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX);
    let options = FindOptions {
        patterns: args.patterns.clone(),
        ignore_case: args.ignore_case,
        oldest_ns: args.oldest.as_ref().map(ns),
        newest_ns: args.newest.as_ref().map(ns),
    };
    let (found, stats) =
        find::find(&repo, &snapshots, &options, &crate::global::CANCEL).context("searching the snapshots")?;
    let times: std::collections::HashMap<SnapshotId, jiff::Timestamp> =
        snapshots.iter().map(|(id, s)| (*id, s.time)).collect();
    if global.json {
        let matches = found
            .iter()
            .map(|f| MatchJson {
                path: f.path.to_string_lossy().into_owned(),
                versions: f
                    .versions
                    .iter()
                    .map(|v| VersionJson {
                        entry: Entry {
                            path: f.path.clone(),
                            node: v.node.clone(),
                        }
                        .to_json(),
                        content: hex::encode(v.content_key),
                        snapshots: v
                            .snapshots
                            .iter()
                            .map(|id| SnapshotRef {
                                id: id.to_hex(),
                                short_id: id.short(),
                                time: times[id].to_string(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        super::print_json(&FindJson {
            snapshots_searched: stats.snapshots,
            trees_read: stats.trees_read,
            matches,
        })?;
        return Ok(crate::exit::OK);
    }
    for f in &found {
        print_found(f, args.long)?;
    }
    if !global.quiet {
        outln!(
            "{} in {} ({} versions)",
            super::count(found.len(), "path", "paths"),
            super::count(stats.snapshots, "snapshot", "snapshots"),
            found.iter().map(|f| f.versions.len()).sum::<usize>()
        )?;
    }
    Ok(crate::exit::OK)
}

/// A path, then one line per version:
/// `  5 B  2026-12-01 10:00:00  in 2 snapshots: 1a2b3c4d 5e6f7a8b`.
fn print_found(f: &Found, long: bool) -> Result<()> {
    outln!("{}", crate::term::printable(&f.path.to_string_lossy()))?;
    for v in &f.versions {
        let node = &v.node;
        let what = match node.kind {
            NodeKind::File => super::human_bytes(node.size),
            NodeKind::Symlink => format!("-> {}", String::from_utf8_lossy(&node.link_target)),
            kind => snap_core::ls::kind_name(kind).to_string(),
        };
        let mtime = jiff::Timestamp::from_nanosecond(i128::from(node.mtime_ns)).unwrap_or_default();
        let mut line = format!("  {what}  {}", super::local_time(&mtime));
        if long {
            let (owner, group) = super::ls::owner_group(node);
            line.push_str(&format!("  {} {owner}:{group}", super::ls::mode_string(node.mode)));
        }
        let ids: Vec<String> = v.snapshots.iter().map(|id| id.short()).collect();
        line.push_str(&format!(
            "  in {}: {}",
            super::count(ids.len(), "snapshot", "snapshots"),
            ids.join(" ")
        ));
        outln!("{}", crate::term::printable(&line))?;
    }
    Ok(())
}
