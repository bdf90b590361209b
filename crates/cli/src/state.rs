//! The daemon's persisted state: per profile and job, the last run and the
//! next one, so a restart neither repeats nor forgets runs. One JSON file,
//! `state.json` in the state directory, replaced atomically on every change
//! (`snap health`, `snap schedule list` and the metrics read it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const FILE: &str = "state.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub profiles: BTreeMap<String, ProfileState>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileState {
    /// By job: `backup`, `prune`, `verify`.
    pub jobs: BTreeMap<String, JobState>,
    /// What the last backup that wrote a snapshot reported.
    pub last_backup: Option<BackupSummary>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobState {
    /// The expression `next_run` was computed from: a changed schedule
    /// starts afresh instead of keeping a time of the old one.
    pub schedule: String,
    pub next_run: Option<Timestamp>,
    /// The scheduled time of the last run started (or skipped); the grid
    /// of `every` schedules counts from it.
    pub last_scheduled: Option<Timestamp>,
    pub last_start: Option<Timestamp>,
    pub last_end: Option<Timestamp>,
    /// `success`, `incomplete` (files skipped), `failed` or `interrupted`.
    pub result: Option<String>,
    pub exit_code: Option<i32>,
    pub duration_seconds: Option<f64>,
    /// The last failed step's exit code and command, for the log and health.
    pub error: Option<String>,
    pub runs: u64,
    /// Runs not started because the previous run of the profile was still going.
    pub skipped: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupSummary {
    pub snapshot_id: String,
    pub time: Option<Timestamp>,
    pub files: u64,
    pub errors: u64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub bytes_total: u64,
    /// Bytes of the repository's packs after the backup (absent from a
    /// state written before snap reported it).
    pub repository_bytes: Option<u64>,
    pub repository_packs: Option<u64>,
}

impl JobState {
    pub fn succeeded(&self) -> bool {
        self.result.as_deref() == Some("success")
    }
}

/// `--state-dir`, else $XDG_STATE_HOME/snap (~/.local/state/snap).
pub fn dir(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(dirs::state_dir()
            .context("no home directory: give the state directory with --state-dir")?
            .join("snap")),
    }
}

/// The state in `dir`; none yet is an empty state.
pub fn load(dir: &Path) -> Result<State> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not a snap state file", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// For the daemon: as `load`, but a state file that does not parse (empty,
/// truncated, not JSON, dates out of range) is renamed to
/// `state.json.corrupt-TIMESTAMP` and the state starts empty, so a damaged
/// file cannot keep the daemon from starting ever again. Returns the new
/// name of the file moved aside and why, for the log.
pub fn load_or_set_aside(dir: &Path) -> Result<(State, Option<(PathBuf, String)>)> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((State::default(), None)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Ok((state, None)),
        Err(e) => {
            let aside = dir.join(format!(
                "{FILE}.corrupt-{}",
                Timestamp::now().strftime("%Y%m%dT%H%M%S%.fZ")
            ));
            std::fs::rename(&path, &aside).with_context(|| {
                format!(
                    "{}: not a snap state file ({e}), and cannot move it aside",
                    path.display()
                )
            })?;
            Ok((State::default(), Some((aside, e.to_string()))))
        }
    }
}

/// Replaces the state file whole: a crash leaves the old one or the new one.
pub fn save(dir: &Path, state: &State) -> Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    write_atomic(&dir.join(FILE), &json)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it
/// over `path`, so a reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is synced.
        std::fs::File::open(parent)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().profiles.is_empty());
        let mut state = State::default();
        let job = state
            .profiles
            .entry("docs".into())
            .or_default()
            .jobs
            .entry("backup".into())
            .or_default();
        job.next_run = Some("2026-01-01T00:00:00Z".parse().unwrap());
        job.runs = 2;
        let next = job.next_run;
        save(dir.path(), &state).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.profiles["docs"].jobs["backup"].runs, 2);
        assert_eq!(back.profiles["docs"].jobs["backup"].next_run, next);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_daemon_sets_a_damaged_file_aside() {
        for bad in [
            &b""[..],
            b"{\"profiles\": {\"a\"",
            b"{\"profiles\":{\"a\":{\"jobs\":{\"backup\":{\"next_run\":\"99999-01-01T00:00:00Z\"}}}}}",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE), bad).unwrap();
            let (state, aside) = load_or_set_aside(dir.path()).unwrap();
            assert!(state.profiles.is_empty());
            let (aside, _why) = aside.unwrap();
            assert_eq!(std::fs::read(&aside).unwrap(), bad);
            assert!(aside
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state.json.corrupt-"));
            assert!(!dir.path().join(FILE).exists());
        }
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(err.contains("state.json"), "{err}");
    }
}
