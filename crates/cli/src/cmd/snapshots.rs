//! `snap snapshots`: list snapshots, oldest first.

use anyhow::Result;

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let all: Vec<_> = snap_core::snapshot::list(&repo)?
        .into_iter()
        .filter(|(_, s)| args.host.as_ref().is_none_or(|h| &s.host == h))
        .filter(|(_, s)| args.tags.iter().all(|t| s.tags.contains(t)))
        .collect();
    if global.json {
        let items: Vec<_> = all.iter().map(|(id, s)| super::SnapshotJson::new(id, s)).collect();
        super::print_json(&items)?;
        return Ok(crate::exit::OK);
    }
    let rows: Vec<[String; 6]> = all
        .iter()
        .map(|(id, s)| {
            [
                id.short(),
                super::local_time(&s.time),
                crate::term::printable(&s.host).into_owned(),
                crate::term::printable(&s.tags.join(",")).into_owned(),
                super::human_bytes(s.summary.bytes_total),
                crate::term::printable(&s.paths.join(" ")).into_owned(),
            ]
        })
        .collect();
    let header = ["ID", "Time", "Host", "Tags", "Size", "Paths"].map(String::from);
    let mut widths = header.each_ref().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i == 5 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    outln!("{}", line(&header))?;
    for row in &rows {
        outln!("{}", line(row))?;
    }
    outln!("{}", super::count(rows.len(), "snapshot", "snapshots"))?;
    Ok(crate::exit::OK)
}
