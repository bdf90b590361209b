//! `snap ui`: the local web UI (crates/ui) over the repository the global
//! options name. Prints the URL with its token; `--open` starts a browser.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};

use crate::config_edit::{self, Change};
use crate::global::{GlobalArgs, CANCEL};
use crate::profile::{Config, Profile};
use crate::state;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, HOST:PORT (port 0: any free port, printed). Off
    /// loopback it needs --tls-cert, --tls-key and --htpasswd.
    #[arg(long, default_value = "127.0.0.1:8123", value_name = "ADDR")]
    listen: String,
    /// Open the UI in a browser (xdg-open), through a private redirect file so
    /// the token never appears on a command line.
    #[arg(long)]
    open: bool,
    /// Read the access token from the first line of this file (at least 16
    /// characters of A-Z a-z 0-9 - _) instead of making a random one.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt entries, `htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The daemon's state directory, for the last and next runs the
    /// schedules page shows. Default: $XDG_STATE_HOME/snap
    #[arg(long, value_name = "DIR", env = "SNAP_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        None => snap_ui::new_token(),
    };
    let repo = global.open()?;
    let options = snap_ui::UiOptions {
        listen: args.listen,
        token: token.clone(),
        tls: args.tls_cert.zip(args.tls_key),
        htpasswd: args.htpasswd,
        retry_lock: global.retry_lock(),
        profiles: Some(std::sync::Arc::new(Profiles {
            config: Config::locate(global.config.as_deref()).map_err(|e| format!("{e:#}")),
            state_dir: state::dir(args.state_dir.as_deref()).map_err(|e| format!("{e:#}")),
            selected: global.profile.clone(),
        })),
    };
    let open = args.open;
    snap_ui::serve(repo, options, &CANCEL, |addr, tls| {
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}/?token={token}");
        // Scripts (and the tests) read the address from this line.
        let _ = outln!("snap ui on {url}");
        if open {
            // The command lines of xdg-open and the browser are readable by
            // every local user (/proc/PID/cmdline): they get the path of a
            // 0600 file in a 0700 directory that redirects to the URL.
            let started = redirect_file(&url).and_then(|file| {
                std::process::Command::new("xdg-open")
                    .arg(&file)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .context("xdg-open")
            });
            if let Err(e) = started {
                errln!("cannot start a browser ({e:#}); open the URL above yourself");
            }
        }
    })?;
    Ok(if CANCEL.load(Ordering::SeqCst) {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::OK
    })
}

/// Writes a page that sends the browser on to `url` into a new private
/// directory under the temporary directory, and returns its path. It is
/// left for the browser to read; the directory only the user can enter.
fn redirect_file(url: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = std::env::temp_dir().join(format!("snap-ui-{}", &snap_ui::new_token()[..16]));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join("open.html");
    // The URL holds only the address and the token (hex or A-Za-z0-9-_):
    // nothing to escape in an attribute, but be strict anyway.
    let escaped = url.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;");
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={escaped}\">\
         <title>snap ui</title><a href=\"{escaped}\">open snap ui</a>\n"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(page.as_bytes()))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// The schedules page's view of the config file and the daemon's state.
/// Both are read again on every call: the file is edited by hand and the
/// daemon updates its state while the UI runs.
struct Profiles {
    config: Result<PathBuf, String>,
    state_dir: Result<PathBuf, String>,
    selected: Option<String>,
}

/// What a setting's value is, to write it as the loader reads it.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A schedule expression or a calendar duration: a string.
    Text,
    /// A `keep-*` count: an integer, or the string `unlimited`.
    Count,
}

/// The editable settings: (form key, table, TOML key, label, kind, hint).
const SCHEDULE: [(&str, &str, &str, &str); 3] = [
    (
        "schedule.backup",
        "backup",
        "Backup",
        "every 6h, a cron line such as 0 2 * * *, or @daily",
    ),
    (
        "schedule.prune",
        "prune",
        "Prune",
        "unset: @weekly when backups and retention are set",
    ),
    ("schedule.verify", "verify", "Verify", "unset: no scheduled verify"),
];
const RETENTION_SHOWN: usize = 7;
/// Every `keep-*` key but keep-tag, the form's first; the rest are kept
/// when a profile's first own retention table is written.
const RETENTION: [(&str, &str, Kind); 12] = [
    ("keep-last", "Keep last", Kind::Count),
    ("keep-hourly", "Hourly", Kind::Count),
    ("keep-daily", "Daily", Kind::Count),
    ("keep-weekly", "Weekly", Kind::Count),
    ("keep-monthly", "Monthly", Kind::Count),
    ("keep-yearly", "Yearly", Kind::Count),
    ("keep-within", "Keep within", Kind::Text),
    ("keep-within-hourly", "", Kind::Text),
    ("keep-within-daily", "", Kind::Text),
    ("keep-within-weekly", "", Kind::Text),
    ("keep-within-monthly", "", Kind::Text),
    ("keep-within-yearly", "", Kind::Text),
];

fn schedule_value(p: &Profile, key: &str) -> String {
    let Some(s) = &p.schedule else { return String::new() };
    match key {
        "backup" => s.backup.clone(),
        "prune" => s.prune.clone(),
        "verify" => s.verify.clone(),
        _ => None,
    }
    .unwrap_or_default()
}

fn retention_value(p: &Profile, key: &str) -> String {
    let Some(r) = &p.retention else { return String::new() };
    let count = |c: &Option<snap_core::policy::Count>| c.map(|c| c.to_string());
    let within = |d: &Option<snap_core::policy::CalendarDuration>| d.map(|d| d.to_string());
    match key {
        "keep-last" => count(&r.keep_last),
        "keep-hourly" => count(&r.keep_hourly),
        "keep-daily" => count(&r.keep_daily),
        "keep-weekly" => count(&r.keep_weekly),
        "keep-monthly" => count(&r.keep_monthly),
        "keep-yearly" => count(&r.keep_yearly),
        "keep-within" => within(&r.keep_within),
        "keep-within-hourly" => within(&r.keep_within_hourly),
        "keep-within-daily" => within(&r.keep_within_daily),
        "keep-within-weekly" => within(&r.keep_within_weekly),
        "keep-within-monthly" => within(&r.keep_within_monthly),
        "keep-within-yearly" => within(&r.keep_within_yearly),
        _ => None,
    }
    .unwrap_or_default()
}

/// The current value of a form key (`schedule.backup`, `retention.keep-last`).
fn current(p: &Profile, form_key: &str) -> Option<String> {
    if let Some(key) = form_key.strip_prefix("schedule.") {
        return SCHEDULE.iter().any(|s| s.1 == key).then(|| schedule_value(p, key));
    }
    let key = form_key.strip_prefix("retention.")?;
    RETENTION.iter().any(|r| r.0 == key).then(|| retention_value(p, key))
}

impl Profiles {
    fn config_path(&self) -> Result<&PathBuf, String> {
        self.config.as_ref().map_err(Clone::clone)
    }

    fn view(&self, profile: &Profile, specs: &[super::daemon::JobSpec], state: &state::State) -> snap_ui::ProfileView {
        let now = jiff::Timestamp::now();
        let ps = state.profiles.get(&profile.name);
        let jobs = specs
            .iter()
            .filter(|s| s.profile == profile.name)
            .map(|spec| {
                let job = ps.and_then(|p| p.jobs.get(spec.job));
                snap_ui::JobView {
                    job: spec.job.to_string(),
                    schedule: spec.expr.text().to_string(),
                    next_run: super::schedule::next_run(spec, job, now),
                    last_start: job.and_then(|j| j.last_start),
                    last_end: job.and_then(|j| j.last_end),
                    result: job.and_then(|j| j.result.clone()),
                    exit_code: job.and_then(|j| j.exit_code),
                    duration_seconds: job.and_then(|j| j.duration_seconds),
                    error: job.and_then(|j| j.error.clone()),
                    runs: job.map_or(0, |j| j.runs),
                    skipped: job.map_or(0, |j| j.skipped),
                }
            })
            .collect();
        let mut notes = Vec::new();
        if let Some(s) = &profile.schedule {
            notes.push(format!("times in {}", s.timezone.as_deref().unwrap_or("local")));
            if s.run_missed {
                notes.push("missed runs are run at start-up".into());
            }
            if let Some(d) = &s.random_delay {
                notes.push(format!("random delay up to {d}"));
            }
            if let Some(subset) = &s.verify_subset {
                notes.push(format!("verify reads {subset} of the data"));
            }
        }
        if let Some(r) = &profile.retention {
            if !r.keep_tag.is_empty() {
                notes.push(format!("retention keeps tags {}", r.keep_tag.join(", ")));
            }
            for (key, _, _) in &RETENTION[RETENTION_SHOWN..] {
                let value = retention_value(profile, key);
                if !value.is_empty() {
                    notes.push(format!("{key} = {value}"));
                }
            }
        }
        snap_ui::ProfileView {
            name: profile.name.clone(),
            inherit: profile.inherit.clone(),
            repository: profile.repository.clone(),
            paths: profile.paths.iter().map(|p| p.display().to_string()).collect(),
            schedule: SCHEDULE
                .iter()
                .map(|(form, key, label, help)| snap_ui::Setting {
                    key: (*form).into(),
                    label: (*label).into(),
                    value: schedule_value(profile, key),
                    help: (*help).into(),
                })
                .collect(),
            retention: RETENTION[..RETENTION_SHOWN]
                .iter()
                .map(|(key, label, kind)| snap_ui::Setting {
                    key: format!("retention.{key}"),
                    label: (*label).into(),
                    value: retention_value(profile, key),
                    help: match kind {
                        Kind::Count => "a count, or unlimited".into(),
                        Kind::Text => "e.g. 7d, 1y6m".into(),
                    },
                })
                .collect(),
            notes,
            jobs,
            last_backup: ps.and_then(|p| p.last_backup.as_ref()).map(|b| snap_ui::BackupView {
                snapshot_id: b.snapshot_id.clone(),
                time: b.time,
                files: b.files,
                errors: b.errors,
                bytes_total: b.bytes_total,
                bytes_added: b.bytes_added,
            }),
        }
    }
}

impl snap_ui::ProfileSource for Profiles {
    fn list(&self) -> std::result::Result<snap_ui::ProfileList, String> {
        let path = self.config_path()?;
        let mut list = snap_ui::ProfileList {
            config: path.display().to_string(),
            exists: path.exists(),
            state_dir: self
                .state_dir
                .as_ref()
                .map_or_else(Clone::clone, |d| d.display().to_string()),
            selected: self.selected.clone(),
            profiles: Vec::new(),
        };
        if !list.exists {
            return Ok(list);
        }
        let config = Config::load(path).map_err(|e| format!("{e:#}"))?;
        let specs = super::daemon::jobs(&config).map_err(|e| format!("{e:#}"))?;
        // No state yet (the daemon never ran) is an empty one.
        let state = match &self.state_dir {
            Ok(dir) => state::load(dir).map_err(|e| format!("{e:#}"))?,
            Err(_) => state::State::default(),
        };
        list.profiles = config.profiles.values().map(|p| self.view(p, &specs, &state)).collect();
        Ok(list)
    }

    fn save(&self, name: &str, values: &[(String, String)]) -> std::result::Result<String, String> {
        let path = self.config_path()?;
        let config = Config::load(path).map_err(|e| format!("{e:#}"))?;
        let profile = config.profile(name).map_err(|e| format!("{e:#}"))?;
        let mut wanted: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
        for (key, value) in values {
            if current(profile, key).is_none() {
                return Err(format!("{key:?} is not a setting this page edits"));
            }
            wanted.insert(key.as_str(), value.trim().to_string());
        }
        let mut changes = Vec::new();
        let mut cleared = Vec::new();
        let keys = SCHEDULE
            .iter()
            .map(|s| ("schedule", s.1, Kind::Text))
            .chain(RETENTION.iter().map(|r| ("retention", r.0, r.2)));
        for (table, key, kind) in keys {
            let form_key = format!("{table}.{key}");
            let now = current(profile, &form_key).unwrap_or_default();
            let value = wanted.get(form_key.as_str()).cloned().unwrap_or_else(|| now.clone());
            let changed = value != now;
            if changed && value.is_empty() {
                cleared.push(form_key.clone());
            }
            changes.push(Change {
                table,
                key: key.to_string(),
                value: (!value.is_empty()).then(|| match (kind, value.parse::<i64>()) {
                    // As the loader reads a count: a number, else a string
                    // (only `unlimited` passes; anything else is refused).
                    (Kind::Count, Ok(n)) => toml_edit::Value::from(n),
                    _ => toml_edit::Value::from(value.as_str()),
                }),
                changed,
            });
        }
        if !changes.iter().any(|c| c.changed) {
            return Ok(format!("Profile {name}: nothing changed."));
        }
        if let Some(r) = &profile.retention {
            if !r.keep_tag.is_empty() {
                let tags: toml_edit::Array = r.keep_tag.iter().map(String::as_str).collect();
                changes.push(Change {
                    table: "retention",
                    key: "keep-tag".into(),
                    value: Some(toml_edit::Value::Array(tags)),
                    changed: false,
                });
            }
        }
        let parent = profile.inherit.clone();
        config_edit::apply(path, name, &changes, |new| {
            // A key cleared here but still set comes from the parent.
            let new = new.profile(name).map_err(|e| format!("{e:#}"))?;
            for key in &cleared {
                if !current(new, key).unwrap_or_default().is_empty() {
                    return Err(format!(
                        "{key} is inherited from profile {:?}: clear it there, or give this profile another value",
                        parent.as_deref().unwrap_or("?")
                    ));
                }
            }
            Ok(())
        })?;
        Ok(format!("Saved profile {name}."))
    }
}
