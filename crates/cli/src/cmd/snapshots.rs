//! `snap snapshots`: list snapshots, oldest first.

use anyhow::Result;
use snap_core::id::SnapshotId;
use snap_core::policy::{self, GroupBy, GroupKey};
use snap_core::snapshot::Snapshot;

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Show only these snapshots: `latest` (with the filters below), ids or unique prefixes.
    ids: Vec<String>,
    #[command(flatten)]
    select: super::SelectArgs,
    /// Show only the N newest complete snapshots of each group (`--group-by`;
    /// without it, of each host and path set).
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
    /// Group by any of `host`, `paths`, `tags`, comma-separated.
    #[arg(long, value_name = "KEYS", value_parser = policy::parse_group_by)]
    group_by: Option<GroupBy>,
    /// Output format; `--json` is `--format json`.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

/// A group of `--format json` with `--group-by` (the key as `forget --json`'s).
#[derive(serde::Serialize)]
struct GroupJson<'a> {
    group: &'a GroupKey,
    snapshots: Vec<super::SnapshotJson<'a>>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let filter = args.select.filter()?;
    let mut all: Vec<_> = if args.ids.is_empty() {
        snap_core::snapshot::list(&repo)?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect()
    } else {
        let mut chosen = Vec::new();
        for spec in &args.ids {
            let found = snap_core::snapshot::find_in(&repo, spec, &filter)?;
            if !chosen.iter().any(|(id, _)| *id == found.0) {
                chosen.push(found);
            }
        }
        chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        chosen
    };
    // Without --group-by, --latest counts per host and path set (as
    // restic), and a checkpoint belongs with what it will complete: the
    // groups of `forget`.
    if let Some(n) = args.latest {
        let mut keep = vec![false; all.len()];
        for (_, members) in policy::group(&all, args.group_by.unwrap_or_default()) {
            let complete = members.into_iter().rev().filter(|&i| !all[i].1.is_checkpoint());
            for i in complete.take(n) {
                keep[i] = true;
            }
        }
        let mut keep = keep.into_iter();
        all.retain(|_| keep.next().unwrap_or(false));
    }
    let format = match (args.format, global.json) {
        (Some(f), _) => f,
        (None, true) => Format::Json,
        (None, false) => Format::Table,
    };
    // One unnamed group of everything without --group-by.
    let by = args.group_by.unwrap_or(GroupBy {
        host: false,
        paths: false,
        tags: false,
    });
    let groups: Vec<(GroupKey, Vec<&(SnapshotId, Snapshot)>)> = policy::group(&all, by)
        .into_iter()
        .map(|(key, members)| (key, members.into_iter().map(|i| &all[i]).collect()))
        .collect();
    match format {
        Format::Json => {
            if args.group_by.is_some() {
                let items: Vec<_> = groups
                    .iter()
                    .map(|(key, members)| GroupJson {
                        group: key,
                        snapshots: members.iter().map(|(id, s)| super::SnapshotJson::new(id, s)).collect(),
                    })
                    .collect();
                super::print_json(&items)?;
            } else {
                let items: Vec<_> = all.iter().map(|(id, s)| super::SnapshotJson::new(id, s)).collect();
                super::print_json(&items)?;
            }
        }
        Format::Csv => print_csv(&all)?,
        Format::Table => {
            for (i, (key, members)) in groups.iter().enumerate() {
                if args.group_by.is_some() {
                    if i > 0 {
                        outln!()?;
                    }
                    outln!("{}", crate::term::printable(&key.to_string()))?;
                }
                print_table(members)?;
            }
            let checkpoints = all.iter().filter(|(_, s)| s.is_checkpoint()).count();
            if checkpoints > 0 {
                outln!(
                    "* checkpoint: the files an interrupted backup finished; never `latest`, removed when a backup of its paths completes"
                )?;
            }
            outln!("{}", super::count(all.len(), "snapshot", "snapshots"))?;
        }
    }
    Ok(crate::exit::OK)
}

/// The summary numbers of the table, `-` for a snapshot stored without a summary.
fn summary_cells(s: &Snapshot) -> [String; 3] {
    let sum = &s.summary;
    if !sum.is_known() {
        return ["-", "-", "-"].map(String::from);
    }
    [
        sum.files().to_string(),
        super::human_bytes(sum.bytes_total),
        super::human_bytes(sum.bytes_added_stored),
    ]
}

const COLUMNS: usize = 8;

fn print_table(members: &[&(SnapshotId, Snapshot)]) -> Result<()> {
    let rows: Vec<[String; COLUMNS]> = members
        .iter()
        .map(|(id, s)| {
            let [files, size, added] = summary_cells(s);
            [
                if s.is_checkpoint() {
                    format!("{}*", id.short())
                } else {
                    id.short()
                },
                super::local_time(&s.time),
                crate::term::printable(&s.host).into_owned(),
                crate::term::printable(&s.tags.join(",")).into_owned(),
                files,
                size,
                added,
                crate::term::printable(&s.paths.join(" ")).into_owned(),
            ]
        })
        .collect();
    let header = ["ID", "Time", "Host", "Tags", "Files", "Size", "Added", "Paths"].map(String::from);
    let mut widths = header.each_ref().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; COLUMNS]| {
        let mut out = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i == COLUMNS - 1 {
                out.push_str(cell);
            } else if (4..=6).contains(&i) {
                // Numbers right-aligned.
                out.push_str(&format!("{cell:>w$}  "));
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    outln!("{}", line(&header))?;
    for (row, (_, s)) in rows.iter().zip(members) {
        outln!("{}", line(row))?;
        // Free text of any length: on its own line, under its snapshot.
        if let Some(description) = &s.description {
            outln!("    {}", crate::term::printable(description))?;
        }
    }
    Ok(())
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// `--format csv`: a header and one row per snapshot; exact numbers (bytes),
/// empty fields for a snapshot stored without a summary. Tags and paths are
/// each joined by a line break (either may hold spaces and commas); such
/// fields are quoted.
fn print_csv(all: &[(SnapshotId, Snapshot)]) -> Result<()> {
    outln!("id,time,host,username,tags,paths,files,dirs,size,added_raw,added_stored,checkpoint")?;
    for (id, s) in all {
        let sum = &s.summary;
        let num = |n: u64| if sum.is_known() { n.to_string() } else { String::new() };
        let fields = [
            id.to_hex(),
            s.time.to_string(),
            s.host.clone(),
            s.username.clone(),
            s.tags.join("\n"),
            s.paths.join("\n"),
            num(sum.files()),
            num(sum.dirs),
            num(sum.bytes_total),
            num(sum.bytes_added_raw),
            num(sum.bytes_added_stored),
            s.is_checkpoint().to_string(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        outln!("{}", row.join(","))?;
    }
    Ok(())
}
