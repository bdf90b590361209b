//! `snap stats`: restore size, deduplicated stored size and ratios, per
//! snapshot and for all of them (the counting is `snap_core::stats`).

use anyhow::Result;
use serde::Serialize;
use snap_core::stats::{self, RawData, RepositorySize, RestoreSize, StatsMode};

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// These snapshots (`latest`, ids or unique prefixes; default: every
    /// complete snapshot the filters match).
    snapshots: Vec<String>,
    #[command(flatten)]
    select: super::SelectArgs,
    /// Only one kind of number: `restore-size` (what a restore writes) or
    /// `raw-data` (the blobs referenced, once each). Default: both.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    RestoreSize,
    RawData,
}

/// `snap stats --json`.
#[derive(Serialize)]
struct StatsJson {
    snapshots: Vec<NumbersJson>,
    total: NumbersJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<RepositorySize>,
}

#[derive(Serialize)]
struct NumbersJson {
    /// Absent in `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    short_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    /// In `total`: how many snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_size: Option<RestoreSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_data: Option<RawJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression_ratio: Option<f64>,
}

#[derive(Serialize)]
struct RawJson {
    #[serde(flatten)]
    raw: RawData,
    raw_bytes: u64,
}

fn numbers(restore: Option<RestoreSize>, raw: Option<RawData>) -> NumbersJson {
    NumbersJson {
        id: None,
        short_id: None,
        time: None,
        count: None,
        restore_size: restore,
        raw_data: raw.map(|raw| RawJson {
            raw,
            raw_bytes: raw.raw_bytes(),
        }),
        dedup_ratio: restore.zip(raw).and_then(|(r, d)| stats::dedup_ratio(&r, &d)),
        compression_ratio: raw.as_ref().and_then(stats::compression_ratio),
    }
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let filter = args.select.filter()?;
    let chosen = super::chosen_snapshots(&repo, &args.snapshots, &filter)?;
    let mode = StatsMode {
        restore_size: args.mode != Some(Mode::RawData),
        raw_data: args.mode != Some(Mode::RestoreSize),
    };
    let result = stats::stats(&repo, &chosen, mode, &crate::global::CANCEL)?;
    let repository = if mode.raw_data {
        Some(stats::repository_size(&repo)?)
    } else {
        None
    };
    let per: Vec<NumbersJson> = result
        .snapshots
        .iter()
        .zip(&chosen)
        .map(|(s, (_, snapshot))| NumbersJson {
            id: Some(s.id.to_hex()),
            short_id: Some(s.id.short()),
            time: Some(snapshot.time.to_string()),
            ..numbers(s.restore, s.raw)
        })
        .collect();
    let total = NumbersJson {
        count: Some(chosen.len()),
        ..numbers(result.total_restore, result.total_raw)
    };
    if global.json {
        super::print_json(&StatsJson {
            snapshots: per,
            total,
            repository,
        })?;
        return Ok(crate::exit::OK);
    }
    let header = [
        "ID",
        "Time",
        "Files",
        "Restore size",
        "Data stored",
        "In packs",
        "Dedup",
        "Compression",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let cells = |n: &NumbersJson, id: String, time: String| -> Vec<String> {
        let dash = || "-".to_string();
        let ratio = |r: Option<f64>| r.map_or_else(dash, |r| format!("{r:.2}x"));
        vec![
            id,
            time,
            n.restore_size.map_or_else(dash, |r| r.files.to_string()),
            n.restore_size.map_or_else(dash, |r| super::human_bytes(r.bytes)),
            n.raw_data
                .as_ref()
                .map_or_else(dash, |r| super::human_bytes(r.raw_bytes)),
            n.raw_data
                .as_ref()
                .map_or_else(dash, |r| super::human_bytes(r.raw.stored_bytes)),
            ratio(n.dedup_ratio),
            ratio(n.compression_ratio),
        ]
    };
    for (n, (id, s)) in per.iter().zip(&chosen) {
        rows.push(cells(n, id.short(), super::local_time(&s.time)));
    }
    rows.push(cells(
        &total,
        "total".into(),
        super::count(chosen.len(), "snapshot", "snapshots"),
    ));
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i < 2 {
                out.push_str(&format!("{cell:<w$}  "));
            } else {
                out.push_str(&format!("{cell:>w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    outln!("{}", line(&header.map(String::from)))?;
    for row in &rows {
        outln!("{}", line(row))?;
    }
    if let (Some(repo_size), Some(raw)) = (repository, result.total_raw) {
        outln!(
            "repository: {} in {}; the snapshots above reference {} of it",
            super::human_bytes(repo_size.pack_bytes),
            super::count(repo_size.packs, "pack", "packs"),
            super::human_bytes(raw.stored_bytes)
        )?;
        if raw.missing_blobs > 0 {
            outln!(
                "{} referenced blobs are not in the index (their size is not counted; run `snap verify`)",
                raw.missing_blobs
            )?;
        }
    }
    Ok(crate::exit::OK)
}
