//! `snap diff`: what changed between two snapshots, or between a snapshot
//! and the live files (the walk is `snap_core::diff`; this renders it).

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;
use snap_core::diff::{self, Change, ChangeKind, DiffStats, LocalOptions};
use snap_core::ls::{kind_name, Entry, EntryJson};
use snap_core::tree::{Node, NodeKind};

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The first snapshot: `latest`, an id or a unique id prefix.
    from: String,
    /// The second snapshot (not with --local).
    to: Option<String>,
    /// Compare the first snapshot with the live files at PATH instead (a
    /// relative path is taken from the working directory, as `create` does).
    #[arg(long, value_name = "PATH", conflicts_with = "to")]
    local: Option<PathBuf>,
    /// With --local: read every file whose size matches to compare its
    /// content, not only those whose mtime differs.
    #[arg(long, requires = "local")]
    content: bool,
    /// Also list entries whose metadata alone changed (`U`); they are
    /// always counted.
    #[arg(long)]
    metadata: bool,
}

/// `snap diff --json`: the two sides, the changes in path order, and the counts.
#[derive(Serialize)]
struct DiffJson {
    from: SideJson,
    to: SideJson,
    changes: Vec<ChangeJson>,
    stats: DiffStats,
}

#[derive(Serialize)]
struct SideJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<String>,
}

#[derive(Serialize)]
struct ChangeJson {
    path: String,
    change: ChangeKind,
    old: Option<EntryJson>,
    new: Option<EntryJson>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let (from_id, from) = snap_core::snapshot::find(&repo, &args.from)?;
    let mut changes = Vec::new();
    // A failed write to stdout (a closed pipe) stops the walk and is the
    // error reported, so it is recognised as such.
    let mut write_error: Option<std::io::Error> = None;
    let show = |c: &Change| args.metadata || c.kind != ChangeKind::Metadata;
    let mut printer = |c: &Change| -> snap_core::Result<()> {
        if !show(c) {
            return Ok(());
        }
        if global.json {
            changes.push(ChangeJson {
                path: c.path.to_string_lossy().into_owned(),
                change: c.kind,
                old: c.old.clone().map(|node| entry_json(&c.path, node)),
                new: c.new.clone().map(|node| entry_json(&c.path, node)),
            });
        } else {
            if let Err(e) = outln!("{}", line(c)) {
                write_error = Some(e);
                return Err(snap_core::Error::Interrupted);
            }
        }
        Ok(())
    };
    let walked = walk(&repo, &args, &from, &mut printer);
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let (stats, to) = walked?;
    if global.json {
        super::print_json(&DiffJson {
            from: SideJson {
                snapshot: Some(from_id.to_hex()),
                local: None,
            },
            to,
            changes,
            stats,
        })?;
    } else if !global.quiet {
        outln!()?;
        outln!("{}", totals(&stats))?;
    }
    Ok(crate::exit::OK)
}

/// Runs the diff the arguments ask for: its counts and what the second side was.
fn walk(
    repo: &snap_core::repo::Repository,
    args: &Args,
    from: &snap_core::snapshot::Snapshot,
    printer: &mut dyn FnMut(&Change) -> snap_core::Result<()>,
) -> Result<(DiffStats, SideJson)> {
    Ok(match (&args.to, &args.local) {
        (Some(spec), None) => {
            let (to_id, to) = snap_core::snapshot::find(repo, spec)?;
            let stats = diff::diff_trees(repo, &from.tree, &to.tree, &crate::global::CANCEL, printer)?;
            (
                stats,
                SideJson {
                    snapshot: Some(to_id.to_hex()),
                    local: None,
                },
            )
        }
        (None, Some(path)) => {
            let path = snap_core::snapshot::source_path(path)?;
            let components = snap_core::tree::path_components(&path).unwrap_or_default();
            let node = if components.is_empty() {
                let mut root = Node::new(b"/".to_vec(), NodeKind::Dir);
                root.subtree = Some(from.tree);
                Some(root)
            } else {
                snap_core::tree::lookup_path(repo, &from.tree, &components)?
            };
            let options = LocalOptions { content: args.content };
            let stats = diff::diff_local(repo, node, &path, &options, &crate::global::CANCEL, printer)?;
            (
                stats,
                SideJson {
                    snapshot: None,
                    local: Some(path.to_string_lossy().into_owned()),
                },
            )
        }
        _ => bail!(snap_core::Error::InvalidArgument(
            "give a second snapshot or --local PATH".into()
        )),
    })
}

fn entry_json(path: &std::path::Path, node: Node) -> EntryJson {
    Entry {
        path: path.to_path_buf(),
        node,
    }
    .to_json()
}

/// `M /src/file (3 B -> 7 B)`: the marker, the path (`/` after a
/// directory) and what changed.
fn line(c: &Change) -> String {
    let node = c.new.as_ref().or(c.old.as_ref()).expect("a change has a side");
    let mut path = c.path.to_string_lossy().into_owned();
    if node.kind == NodeKind::Dir && c.kind != ChangeKind::TypeChanged {
        path.push('/');
    }
    let size = |n: &Node| super::human_bytes(n.size);
    let detail = match (c.kind, &c.old, &c.new) {
        (ChangeKind::Added, _, Some(n)) | (ChangeKind::Removed, Some(n), _) if n.kind == NodeKind::File => {
            Some(size(n))
        }
        (ChangeKind::Modified, Some(a), Some(b)) if a.kind == NodeKind::File => {
            Some(format!("{} -> {}", size(a), size(b)))
        }
        (ChangeKind::Modified, Some(a), Some(b)) if a.kind == NodeKind::Symlink => Some(format!(
            "-> {} now -> {}",
            String::from_utf8_lossy(&a.link_target),
            String::from_utf8_lossy(&b.link_target)
        )),
        (ChangeKind::TypeChanged, Some(a), Some(b)) => Some(format!("{} -> {}", kind_name(a.kind), kind_name(b.kind))),
        (ChangeKind::Metadata, Some(a), Some(b)) => Some(metadata_detail(a, b)),
        _ => None,
    };
    let text = match detail {
        Some(d) => format!("{} {path} ({d})", c.kind.marker()),
        None => format!("{} {path}", c.kind.marker()),
    };
    // Names from a snapshot or the disk must not drive the terminal.
    crate::term::printable(&text).into_owned()
}

/// Which metadata changed, e.g. `mode 0644 -> 0600, mtime`.
fn metadata_detail(a: &Node, b: &Node) -> String {
    let mut parts = Vec::new();
    if a.mode != b.mode {
        parts.push(format!("mode {:04o} -> {:04o}", a.mode, b.mode));
    }
    if (a.uid, a.gid, &a.user, &a.group) != (b.uid, b.gid, &b.user, &b.group) {
        parts.push(format!("owner {}:{} -> {}:{}", a.uid, a.gid, b.uid, b.gid));
    }
    if a.mtime_ns != b.mtime_ns {
        parts.push("mtime".to_string());
    }
    if a.xattrs != b.xattrs {
        parts.push("xattrs".to_string());
    }
    parts.join(", ")
}

/// The closing line of the text output.
fn totals(s: &DiffStats) -> String {
    format!(
        "{} added ({}), {} removed ({}), {} modified ({} -> {}), {} type changed, {} metadata only",
        s.added,
        super::human_bytes(s.bytes_added),
        s.removed,
        super::human_bytes(s.bytes_removed),
        s.modified,
        super::human_bytes(s.bytes_modified_before),
        super::human_bytes(s.bytes_modified_after),
        s.type_changed,
        s.metadata,
    )
}
