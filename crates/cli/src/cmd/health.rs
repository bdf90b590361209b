//! `snap health`: is each profile's backup where it should be? A check
//! command for monitoring systems (README "Health"): the repository is
//! asked for the last snapshot; the daemon's state says how the last runs
//! went. One exit code per kind of failure (exit.rs).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use jiff::Timestamp;
use serde::Serialize;

use crate::global::GlobalArgs;
use crate::{exit, state};

#[derive(clap::Args)]
pub struct Args {
    /// Check every profile of the config (the default without --profile).
    #[arg(long)]
    all: bool,
    /// The last snapshot must be younger than this.
    #[arg(long, default_value = "26h", value_name = "DURATION")]
    max_age: humantime::Duration,
    /// The daemon's state directory. Default: $XDG_STATE_HOME/snap
    #[arg(long, value_name = "DIR", env = "SNAP_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    /// The exit code this failure gives (0 when ok).
    code: i32,
    message: String,
}

#[derive(Serialize)]
struct ProfileHealth {
    profile: String,
    healthy: bool,
    last_snapshot: Option<LastSnapshot>,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct LastSnapshot {
    id: String,
    time: String,
    age_seconds: i64,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let path = crate::profile::Config::locate(global.config.as_deref())?;
    let config = crate::profile::Config::load(&path)?;
    let names: Vec<String> = match (&global.profile, args.all) {
        (Some(name), false) => {
            config.profile(name)?;
            vec![name.to_string()]
        }
        _ => config.profiles.keys().cloned().collect(),
    };
    let specs = super::daemon::jobs(&config)?;
    let scheduled = super::daemon::profile_jobs(&specs);
    let state = state::load(&state::dir(args.state_dir.as_deref())?)?;
    let max_age: Duration = args.max_age.into();
    let mut report = Vec::new();
    for name in &names {
        let profile = config.profile(name)?;
        let jobs = state.profiles.get(name).map(|p| &p.jobs);
        let verify_scheduled = scheduled.get(name).is_some_and(|j| j.contains("verify"));
        report.push(check_profile(global, profile, jobs, verify_scheduled, max_age));
    }
    let code = report
        .iter()
        .flat_map(|p| &p.checks)
        .filter(|c| !c.ok)
        .map(|c| c.code)
        .min()
        .unwrap_or(exit::OK);
    if global.json {
        super::print_json(&serde_json::json!({
            "healthy": code == exit::OK,
            "exit_code": code,
            "profiles": report,
        }))?;
    } else {
        for p in &report {
            let failed: Vec<&Check> = p.checks.iter().filter(|c| !c.ok).collect();
            if failed.is_empty() {
                if !global.quiet {
                    let last = p.checks.first().map(|c| c.message.as_str()).unwrap_or("");
                    outln!("{}: healthy ({last})", p.profile)?;
                }
            } else {
                outln!("{}: UNHEALTHY", p.profile)?;
                for c in failed {
                    outln!("  {}: {}", c.check, c.message)?;
                }
            }
        }
    }
    Ok(code)
}

fn check_profile(
    global: &GlobalArgs,
    profile: &crate::profile::Profile,
    jobs: Option<&std::collections::BTreeMap<String, state::JobState>>,
    verify_scheduled: bool,
    max_age: Duration,
) -> ProfileHealth {
    let mut checks = Vec::new();
    let mut last_snapshot = None;
    let args = profile.global_args(global);
    let ok = |check, message: String| Check {
        check,
        ok: true,
        code: 0,
        message,
    };
    let fail = |check, code, message: String| Check {
        check,
        ok: false,
        code,
        message,
    };
    match args.open() {
        Err(e) => checks.push(fail("repository", exit::code_for(&e), format!("{e:#}"))),
        Ok(repo) => {
            match latest_snapshot(&repo, profile) {
                Err(e) => checks.push(fail("snapshot", exit::code_for(&e), format!("{e:#}"))),
                Ok(None) => checks.push(fail(
                    "snapshot",
                    exit::HEALTH_NO_SNAPSHOT,
                    "no snapshot of this profile in the repository".into(),
                )),
                Ok(Some((id, snapshot))) => {
                    let age = Timestamp::now().duration_since(snapshot.time);
                    let human = humantime::format_duration(Duration::from_secs(age.as_secs().max(0) as u64));
                    let message = format!("last snapshot {} {human} ago", id.short());
                    last_snapshot = Some(LastSnapshot {
                        id: id.to_hex(),
                        time: snapshot.time.to_string(),
                        age_seconds: age.as_secs(),
                    });
                    if age.as_secs() > 0 && age.unsigned_abs() > max_age {
                        checks.push(fail(
                            "snapshot",
                            exit::HEALTH_TOO_OLD,
                            format!(
                                "{message}, older than --max-age {}",
                                humantime::format_duration(max_age)
                            ),
                        ));
                    } else {
                        checks.push(ok("snapshot", message));
                    }
                    if snapshot.summary.errors > 0 {
                        checks.push(fail(
                            "last-run",
                            exit::HEALTH_LAST_RUN,
                            format!(
                                "the last snapshot is missing {} it could not read",
                                super::count(snapshot.summary.errors, "file or directory", "files or directories")
                            ),
                        ));
                    }
                }
            }
            match stale_locks(&repo) {
                Ok(stale) if stale.is_empty() => checks.push(ok("locks", "no stale lock".into())),
                Ok(stale) => checks.push(fail(
                    "locks",
                    exit::HEALTH_STALE_LOCK,
                    format!("stale lock: {} (remove with `snap unlock`)", stale.join("; ")),
                )),
                Err(e) => checks.push(fail("locks", exit::code_for(&e), format!("{e:#}"))),
            }
        }
    }
    if let Some(backup) = jobs.and_then(|j| j.get("backup")) {
        match backup.result.as_deref() {
            Some("success") | None => {}
            Some(result) => checks.push(fail(
                "last-run",
                exit::HEALTH_LAST_RUN,
                format!(
                    "the last scheduled backup ended {result}{}",
                    backup.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                ),
            )),
        }
    }
    if verify_scheduled {
        match jobs.and_then(|j| j.get("verify")).and_then(|v| v.result.as_deref()) {
            Some("success") => checks.push(ok("verify", "the last verify passed".into())),
            // Not run yet is no failure: its first time may not have come.
            None => checks.push(ok("verify", "no verify has run yet".into())),
            Some(result) => checks.push(fail(
                "verify",
                exit::HEALTH_VERIFY,
                format!("the last verify ended {result}"),
            )),
        }
    }
    ProfileHealth {
        profile: profile.name.clone(),
        healthy: checks.iter().all(|c| c.ok),
        last_snapshot,
        checks,
    }
}

/// The newest complete snapshot of the profile: its tags, and its paths when
/// it names any (as `create` records them: absolute).
fn latest_snapshot(
    repo: &snap_core::repo::Repository,
    profile: &crate::profile::Profile,
) -> Result<Option<(snap_core::id::SnapshotId, snap_core::snapshot::Snapshot)>> {
    let paths: Vec<String> = profile
        .paths
        .iter()
        .map(|p| {
            snap_core::snapshot::source_path(p)
                .unwrap_or_else(|_| p.clone())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut found: Vec<_> = snap_core::snapshot::list(repo)?
        .into_iter()
        .filter(|(_, s)| !s.is_checkpoint())
        .filter(|(_, s)| profile.tags.iter().all(|t| s.tags.contains(t)))
        .filter(|(_, s)| paths.iter().all(|p| s.paths.contains(p)))
        .collect();
    found.sort_by_key(|(_, s)| s.time);
    Ok(found.pop())
}

/// Locks no live process holds: of this host with a dead pid, or not
/// refreshed for longer than other hosts wait before taking them as stale.
fn stale_locks(repo: &snap_core::repo::Repository) -> Result<Vec<String>> {
    let host = snap_core::snapshot::hostname();
    let limit = jiff::SignedDuration::try_from(snap_core::lock::STALE_AFTER)?;
    let mut out = Vec::new();
    for (_, info) in snap_core::lock::list(repo)? {
        let Ok(info) = info else { continue };
        let stale = if info.host == host {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(info.pid as libc::pid_t, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            !alive
        } else {
            Timestamp::now().duration_since(info.time) > limit
        };
        if stale {
            out.push(info.describe());
        }
    }
    Ok(out)
}
