//! `snap snapshots`: list snapshots, oldest first.

use anyhow::Result;

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Show only these snapshots: `latest` (with the filters below), ids or unique prefixes.
    ids: Vec<String>,
    #[command(flatten)]
    select: super::SelectArgs,
    /// Show only the N newest complete snapshots of each host and path set.
    #[arg(long, value_name = "N")]
    latest: Option<usize>,
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
    if let Some(n) = args.latest {
        // Per group, as restic: the newest N of each host and path set.
        let mut seen: std::collections::HashMap<(String, Vec<String>), usize> = Default::default();
        let mut keep = vec![false; all.len()];
        for (i, (_, s)) in all.iter().enumerate().rev() {
            if s.is_checkpoint() {
                continue;
            }
            let count = seen.entry((s.host.clone(), s.sorted_paths())).or_default();
            if *count < n {
                *count += 1;
                keep[i] = true;
            }
        }
        let mut keep = keep.into_iter();
        all.retain(|_| keep.next().unwrap_or(false));
    }
    if global.json {
        let items: Vec<_> = all.iter().map(|(id, s)| super::SnapshotJson::new(id, s)).collect();
        super::print_json(&items)?;
        return Ok(crate::exit::OK);
    }
    let rows: Vec<[String; 6]> = all
        .iter()
        .map(|(id, s)| {
            [
                if s.is_checkpoint() {
                    format!("{}*", id.short())
                } else {
                    id.short()
                },
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
    for (row, (_, s)) in rows.iter().zip(&all) {
        outln!("{}", line(row))?;
        // Free text of any length: on its own line, under its snapshot.
        if let Some(description) = &s.description {
            outln!("    {}", crate::term::printable(description))?;
        }
    }
    let checkpoints = all.iter().filter(|(_, s)| s.is_checkpoint()).count();
    if checkpoints > 0 {
        outln!(
            "* checkpoint: the files an interrupted backup finished; never `latest`, removed when a backup of its paths completes"
        )?;
    }
    outln!("{}", super::count(rows.len(), "snapshot", "snapshots"))?;
    Ok(crate::exit::OK)
}
