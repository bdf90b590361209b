//! One module per subcommand.

pub mod catalog;
pub mod config;
pub mod copy;
pub mod create;
pub mod daemon;
pub mod diff;
pub mod dump;
pub mod export;
pub mod find;
pub mod forget;
pub mod health;
pub mod import;
pub mod init;
pub mod key;
pub mod ls;
pub mod mount;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod schedule;
pub mod serve;
pub mod snapshots;
pub mod stats;
pub mod tag;
pub mod ui;
pub mod unlock;
pub mod verify;
pub mod webdav;

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

/// A time on the command line (`--as-of`, `find --newest/--oldest`):
/// RFC 3339, an age (`2 days ago`, `36h`), or a local date or date and
/// time (`YYYY-MM-DD[ HH:MM[:SS]]`).
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let civil = text.parse::<jiff::civil::DateTime>().or_else(|_| {
        text.parse::<jiff::civil::Date>()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    });
    if let Ok(civil) = civil {
        return jiff::tz::TimeZone::system()
            .to_timestamp(civil)
            .map_err(|e| format!("'{text}': {e}"));
    }
    let age = text.strip_suffix("ago").unwrap_or(text).trim();
    let age = humantime::parse_duration(age).map_err(|e| {
        format!(
            "'{text}' is neither an RFC 3339 time (2026-05-01T12:00:00Z), a local date (2026-05-01[ 12:00]) nor an age (2 days ago): {e}"
        )
    })?;
    let age = jiff::SignedDuration::try_from(age).map_err(|e| format!("'{text}': {e}"))?;
    jiff::Timestamp::now()
        .checked_sub(age)
        .map_err(|e| format!("'{text}' is too long ago: {e}"))
}

/// The snapshots `find` and `stats` work on: those named (each once, oldest
/// first), or every complete snapshot the filter matches.
pub fn chosen_snapshots(
    repo: &snap_core::repo::Repository,
    specs: &[String],
    filter: &Filter,
) -> anyhow::Result<Vec<(snap_core::id::SnapshotId, snap_core::snapshot::Snapshot)>> {
    if specs.is_empty() {
        return Ok(snap_core::snapshot::list_matching(repo, filter)?
            .into_iter()
            .filter(|(_, s)| !s.is_checkpoint())
            .collect());
    }
    let mut chosen: Vec<(snap_core::id::SnapshotId, snap_core::snapshot::Snapshot)> = Vec::new();
    for spec in specs {
        let found = snap_core::snapshot::find_in(repo, spec, filter)?;
        if !chosen.iter().any(|(id, _)| *id == found.0) {
            chosen.push(found);
        }
    }
    chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(chosen)
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

// Shared with the UI's pages.
pub use snap_core::display::{human_bytes, local_time};

#[cfg(test)]
mod time_tests {
    use super::parse_time;

    #[test]
    fn times_parse_in_every_form_the_commands_document() {
        let exact = parse_time("2026-05-01T12:00:00Z").unwrap();
        assert_eq!(exact.as_second(), 1_777_636_800);
        let now = jiff::Timestamp::now().as_second();
        let ago = parse_time("2 days ago").unwrap().as_second();
        assert!((now - 2 * 86_400 - ago).abs() < 60, "{ago}");
        let bare = parse_time("36h").unwrap().as_second();
        assert!((now - 36 * 3600 - bare).abs() < 60, "{bare}");
        let date = parse_time("2026-05-01").unwrap();
        let local = parse_time("2026-05-01 12:00").unwrap();
        assert_eq!(local.as_second() - date.as_second(), 12 * 3600);
        assert!(parse_time("the day before").is_err());
    }
}
