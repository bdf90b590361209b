//! One module per subcommand.

pub mod catalog;
pub mod copy;
pub mod create;
pub mod diff;
pub mod dump;
pub mod export;
pub mod find;
pub mod forget;
pub mod import;
pub mod init;
pub mod key;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod serve;
pub mod snapshots;
pub mod stats;
pub mod tag;
pub mod unlock;
pub mod verify;

use std::path::PathBuf;

use serde::Serialize;
use snap_core::snapshot::Filter;

/// Which snapshots `latest` may name (restic's `--host`, `--path`, `--tag`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SelectArgs {
    /// Only snapshots of this host (and `latest` is the newest of them).
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots holding this source path, relative to the working
    /// directory as with `create` (repeatable: all must be held).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only snapshots with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// `latest` (and `latest~N`) is the newest snapshot not after TIME:
    /// RFC 3339 (`2026-05-01T12:00:00Z`) or an age (`2 days ago`, `3h ago`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub as_of: Option<jiff::Timestamp>,
}

impl SelectArgs {
    pub fn filter(&self) -> anyhow::Result<Filter> {
        let mut filter = filter(self.host.clone(), &self.paths, self.tags.clone())?;
        filter.as_of = self.as_of;
        Ok(filter)
    }
}

/// `--as-of TIME`: an RFC 3339 time, or an age before now (`2 days ago`,
/// `3h ago`, `90min`; humantime's units).
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let age = text.strip_suffix("ago").unwrap_or(text).trim();
    let age = humantime::parse_duration(age).map_err(|e| {
        format!("'{text}' is neither an RFC 3339 time (2026-05-01T12:00:00Z) nor an age (2 days ago): {e}")
    })?;
    let age = jiff::SignedDuration::try_from(age).map_err(|e| format!("'{text}': {e}"))?;
    jiff::Timestamp::now()
        .checked_sub(age)
        .map_err(|e| format!("'{text}' is too long ago: {e}"))
}

/// A snapshot filter with `paths` resolved as `create` resolves its sources.
pub fn filter(host: Option<String>, paths: &[PathBuf], tags: Vec<String>) -> anyhow::Result<Filter> {
    let paths = paths
        .iter()
        .map(|p| snap_core::snapshot::source_path(p))
        .collect::<Result<_, _>>()?;
    Ok(Filter {
        host,
        paths,
        tags,
        as_of: None,
    })
}

/// Prints one JSON document on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(value)?)?;
    Ok(())
}

/// The stable JSON form of a snapshot (`snap snapshots --json`, `snap create --json`).
pub use snap_core::snapshot::SnapshotJson;

/// A count with its noun, singular for one: `1 snapshot`, `2 snapshots`.
pub fn count(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Sizes for people: 1.5 GiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A timestamp in the local time zone, to the second.
pub fn local_time(t: &jiff::Timestamp) -> String {
    t.to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}
