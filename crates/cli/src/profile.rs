//! Profiles: named sets of options in one TOML file (README "Profiles").
//!
//! The file is read into raw tables where every key is optional, so that a
//! profile can inherit (`inherit = "base"`) what it leaves unset; the
//! resolved [`Profile`] is what commands use. Every error names the file,
//! the line and the key: a config file is edited by hand, often far from
//! the command that reads it (a timer, the daemon).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use snap_core::compress::Compression;
use snap_core::policy::{CalendarDuration, Count, KeepRules};
use toml::Spanned;

use crate::global::GlobalArgs;

/// How long a hook may run when its profile sets no `timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A config file that cannot be used: exit code 2, like a bad command line
/// (the file is the command line of scheduled runs).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Every profile of one config file, inheritance resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub path: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

/// One profile, inheritance resolved. Lists and options left unset are empty.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Profile {
    pub name: String,
    /// The profile this one inherits from, if any (already applied).
    pub inherit: Option<String>,
    pub repository: Option<String>,
    /// Backend options (`-o key=value`).
    pub options: BTreeMap<String, String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    /// A password written in the config itself (allowed only in a file of
    /// mode 0600); never shown.
    #[serde(serialize_with = "mask")]
    pub password: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    // `create` options, named as its flags.
    pub exclude: Vec<String>,
    pub iexclude: Vec<String>,
    pub exclude_file: Vec<PathBuf>,
    pub iexclude_file: Vec<PathBuf>,
    pub exclude_if_present: Vec<String>,
    pub exclude_caches: Option<bool>,
    /// Bytes.
    pub exclude_larger_than: Option<u64>,
    pub no_snapignore: Option<bool>,
    pub one_file_system: Option<bool>,
    pub files_from: Vec<PathBuf>,
    pub files_from_verbatim: Vec<PathBuf>,
    pub files_from_raw: Vec<PathBuf>,
    pub host: Option<String>,
    pub compression: Option<Compression>,
    pub threads: Option<usize>,
    #[serde(serialize_with = "opt_duration")]
    pub checkpoint_interval: Option<Duration>,
    pub description: Option<String>,
    pub retention: Option<Retention>,
    pub schedule: Option<Schedule>,
    pub hooks: Hooks,
    pub notify: Notify,
}

/// A retention policy: a profile's `[retention]` table, and `forget`'s
/// `--keep-*` flags (one struct, so the two cannot drift apart).
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
#[serde(rename_all = "kebab-case")]
pub struct Retention {
    /// Keep the N newest snapshots (`unlimited` for all).
    #[arg(long, value_name = "N")]
    #[serde(serialize_with = "opt_display")]
    pub keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the last N hours with snapshots.
    #[arg(long, value_name = "N")]
    #[serde(serialize_with = "opt_display")]
    pub keep_hourly: Option<Count>,
    /// Keep the newest snapshot of each of the last N days with snapshots.
    #[arg(long, value_name = "N")]
    #[serde(serialize_with = "opt_display")]
    pub keep_daily: Option<Count>,
    /// Keep the newest snapshot of each of the last N weeks with snapshots.
    #[arg(long, value_name = "N")]
    #[serde(serialize_with = "opt_display")]
    pub keep_weekly: Option<Count>,
    /// Keep the newest snapshot of each of the last N months with snapshots.
    #[arg(long, value_name = "N")]
    #[serde(serialize_with = "opt_display")]
    pub keep_monthly: Option<Count>,
    /// Keep the newest snapshot of each of the last N years with snapshots.
    #[arg(long, value_name = "N")]
    #[serde(serialize_with = "opt_display")]
    pub keep_yearly: Option<Count>,
    /// Keep every snapshot within this duration of the newest, e.g. `1y2m3d4h`.
    #[arg(long, value_name = "DURATION")]
    #[serde(serialize_with = "opt_calendar")]
    pub keep_within: Option<CalendarDuration>,
    #[arg(long, value_name = "DURATION")]
    #[serde(serialize_with = "opt_calendar")]
    pub keep_within_hourly: Option<CalendarDuration>,
    #[arg(long, value_name = "DURATION")]
    #[serde(serialize_with = "opt_calendar")]
    pub keep_within_daily: Option<CalendarDuration>,
    #[arg(long, value_name = "DURATION")]
    #[serde(serialize_with = "opt_calendar")]
    pub keep_within_weekly: Option<CalendarDuration>,
    #[arg(long, value_name = "DURATION")]
    #[serde(serialize_with = "opt_calendar")]
    pub keep_within_monthly: Option<CalendarDuration>,
    #[arg(long, value_name = "DURATION")]
    #[serde(serialize_with = "opt_calendar")]
    pub keep_within_yearly: Option<CalendarDuration>,
    /// Keep snapshots with these tags (`a,b` needs both; repeatable).
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tag: Vec<String>,
}

impl Retention {
    pub fn rules(&self) -> KeepRules {
        KeepRules {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            within_hourly: self.keep_within_hourly,
            within_daily: self.keep_within_daily,
            within_weekly: self.keep_within_weekly,
            within_monthly: self.keep_within_monthly,
            within_yearly: self.keep_within_yearly,
            tags: self.keep_tag.clone(),
        }
    }
}

/// When the daemon runs this profile's jobs (helper 14b parses the strings).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Schedule {
    /// `"every 1s"`, `"every 6h"`, a 5-field cron expression, `"@daily"`...
    pub backup: Option<String>,
    pub prune: Option<String>,
    pub verify: Option<String>,
    /// TOML key `verify-read-data-subset`, e.g. `"5%"`.
    #[serde(rename = "verify-read-data-subset")]
    pub verify_subset: Option<String>,
    pub run_missed: bool,
    pub random_delay: Option<String>,
    /// `"local"` (default) or `"utc"`.
    pub timezone: Option<String>,
}

/// Shell commands (`sh -c`) around a run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hooks {
    pub before: Option<String>,
    /// Always, after the run (and after `after-success` / `on-failure`).
    pub after: Option<String>,
    pub after_success: Option<String>,
    pub on_failure: Option<String>,
    /// For each hook; [`DEFAULT_HOOK_TIMEOUT`] when unset.
    #[serde(serialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

impl Hooks {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT)
    }

    pub fn is_empty(&self) -> bool {
        self.before.is_none() && self.after.is_none() && self.after_success.is_none() && self.on_failure.is_none()
    }
}

/// Where to report a run: always on failure, on success when `on_success`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Notify {
    /// URLs that get a JSON POST (shown redacted: they may hold secrets).
    #[serde(serialize_with = "redacted_urls")]
    pub webhook: Vec<String>,
    /// A shell command that gets the same JSON on standard input.
    pub command: Option<String>,
    pub on_success: bool,
    /// For each notification (default 30s).
    #[serde(serialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

impl Notify {
    pub fn is_empty(&self) -> bool {
        self.webhook.is_empty() && self.command.is_none()
    }
}

impl Config {
    /// `--config FILE`, else `$SNAP_CONFIG`, else `$XDG_CONFIG_HOME/snap/config.toml`.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        if let Some(path) = std::env::var_os("SNAP_CONFIG").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        let dir = dirs::config_dir()
            .ok_or_else(|| ConfigError("no home directory: give the config file with --config".into()))?;
        Ok(dir.join("snap").join("config.toml"))
    }

    /// Reads and resolves every profile. Errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let at = |span: Option<Range<usize>>, message: &str| located(path, &text, span, message);
        let raw: RawFile = toml::from_str(&text).map_err(|e| at(e.span(), e.message()))?;
        let mut profiles = BTreeMap::new();
        for name in raw.profile.keys() {
            if !valid_name(name) {
                // The map lost the key's span: find the table header.
                let span = [
                    format!("profile.\"{name}\""),
                    format!("profile.'{name}'"),
                    format!("profile.{name}"),
                ]
                .iter()
                .find_map(|needle| text.find(needle.as_str()))
                .map(|start| start + "profile.".len()..start + "profile.".len() + 1);
                return Err(at(
                    span,
                    &format!(
                        "{name:?} is not a profile name: use letters, digits, '.', '_' and '-', not starting with '-'"
                    ),
                ));
            }
            let resolved = resolve(&raw.profile, name).map_err(|(span, message)| at(span, &message))?;
            if let Some(password) = &resolved.password {
                check_private(path, &text, password.span())?;
            }
            profiles.insert(name.clone(), finish(name, resolved));
        }
        Ok(Config {
            path: path.to_path_buf(),
            profiles,
        })
    }

    /// The named profile; the error lists the names there are.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            ConfigError(format!(
                "no profile {name:?} in {} (profiles: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
            .into()
        })
    }
}

impl Profile {
    /// This profile without its hooks, which are a backup's: `forget`,
    /// `prune` and `verify` of a profile send its notifications only.
    pub fn notify_only(&self) -> Profile {
        Profile {
            hooks: Hooks::default(),
            ..self.clone()
        }
    }

    /// The global options of this profile, filling what `base` (the command
    /// line and environment) left unset: repository, options, password
    /// file/command, cache dir. The password source is one choice: any
    /// source in `base` (file or command) replaces every source of the profile.
    pub fn global_args(&self, base: &GlobalArgs) -> GlobalArgs {
        let mut args = base.clone();
        args.profile = Some(self.name.clone());
        if args.repo.is_none() {
            args.repo = self.repository.clone();
        }
        if args.options.is_empty() {
            args.options = self.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if args.password_file.is_none() && args.password_command.is_none() && args.password.is_none() {
            args.password_file = self.password_file.clone();
            args.password_command = self.password_command.clone();
            args.password = self.password.clone();
        }
        if args.cache_dir.is_none() {
            args.cache_dir = self.cache_dir.clone();
        }
        args
    }
}

/// The profile named by `--profile` (or `SNAP_PROFILE`), loaded from the
/// config `--config` names (or the default one).
pub fn selected(global: &GlobalArgs) -> Result<Option<Profile>> {
    let Some(name) = &global.profile else {
        return Ok(None);
    };
    let path = Config::locate(global.config.as_deref())?;
    let config = Config::load(&path)?;
    Ok(Some(config.profile(name)?.clone()))
}

// ---- Errors with file, line and key.

fn located(path: &Path, text: &str, span: Option<Range<usize>>, message: &str) -> anyhow::Error {
    let message = message.trim_end();
    match span {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            let key = key_at(text, span.start);
            ConfigError(format!("{}:{line}:{column}: {key}: {message}", path.display())).into()
        }
        None => ConfigError(format!("{}: {message}", path.display())).into(),
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The dotted key an offset of the file is in: the last table header above
/// it and the key of its line, e.g. `profile.docs.retention.keep-last`.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return header_name(line);
    }
    let key = line.split('=').next().unwrap_or("").trim();
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(header_name);
    match header {
        Some(header) if !key.is_empty() => format!("{header}.{key}"),
        Some(header) => header,
        None => key.to_string(),
    }
}

fn header_name(line: &str) -> String {
    let line = line.split('#').next().unwrap_or(line);
    line.trim()
        .trim_start_matches('[')
        .trim_end()
        .trim_end_matches(']')
        .trim()
        .to_string()
}

/// A password may sit in the config only if no one else can read it.
fn check_private(path: &Path, text: &str, span: Range<usize>) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the mode of {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(located(
                path,
                text,
                Some(span),
                &format!(
                    "a password in the config file needs the file to be private (mode 0600, it is {:04o}): \
                     run `chmod 600 {}`, or use password-file or password-command",
                    mode & 0o7777,
                    path.display()
                ),
            ));
        }
    }
    let _ = (path, text, span);
    Ok(())
}

// ---- The file as written: every key optional, so profiles can inherit.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    profile: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProfile {
    inherit: Option<Spanned<String>>,
    repository: Option<String>,
    options: Option<BTreeMap<String, String>>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    password: Option<Spanned<String>>,
    cache_dir: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    tags: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    iexclude: Option<Vec<String>>,
    exclude_file: Option<Vec<PathBuf>>,
    iexclude_file: Option<Vec<PathBuf>>,
    exclude_if_present: Option<Vec<String>>,
    exclude_caches: Option<bool>,
    exclude_larger_than: Option<Size>,
    no_snapignore: Option<bool>,
    one_file_system: Option<bool>,
    files_from: Option<Vec<PathBuf>>,
    files_from_verbatim: Option<Vec<PathBuf>>,
    files_from_raw: Option<Vec<PathBuf>>,
    host: Option<String>,
    compression: Option<Parsed<Compression>>,
    threads: Option<usize>,
    checkpoint_interval: Option<HumanDuration>,
    description: Option<String>,
    retention: Option<RawRetention>,
    schedule: Option<RawSchedule>,
    hooks: Option<RawHooks>,
    notify: Option<RawNotify>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetention {
    keep_last: Option<KeepCount>,
    keep_hourly: Option<KeepCount>,
    keep_daily: Option<KeepCount>,
    keep_weekly: Option<KeepCount>,
    keep_monthly: Option<KeepCount>,
    keep_yearly: Option<KeepCount>,
    keep_within: Option<Calendar>,
    keep_within_hourly: Option<Calendar>,
    keep_within_daily: Option<Calendar>,
    keep_within_weekly: Option<Calendar>,
    keep_within_monthly: Option<Calendar>,
    keep_within_yearly: Option<Calendar>,
    keep_tag: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSchedule {
    backup: Option<ScheduleText>,
    prune: Option<ScheduleText>,
    verify: Option<ScheduleText>,
    verify_read_data_subset: Option<String>,
    run_missed: Option<bool>,
    random_delay: Option<HumanDurationText>,
    timezone: Option<Timezone>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHooks {
    before: Option<String>,
    after: Option<String>,
    after_success: Option<String>,
    on_failure: Option<String>,
    timeout: Option<PositiveDuration>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNotify {
    webhook: Option<OneOrMany<Url>>,
    command: Option<String>,
    on_success: Option<bool>,
    timeout: Option<PositiveDuration>,
}

/// Fills in `child`'s unset keys from `parent`'s.
macro_rules! inherit {
    ($child:expr, $parent:expr; $($field:ident),* $(,)?) => {
        {$( if $child.$field.is_none() { $child.$field = $parent.$field.clone(); } )*}
    };
}

/// Tables inherit key by key, except the retention policy, which is one
/// rule set: a child's `[retention]` replaces its parent's.
fn merge(child: &mut RawProfile, parent: &RawProfile) {
    inherit!(child, parent; repository, options, password_file, password_command, password, cache_dir,
        paths, tags, exclude, iexclude, exclude_file, iexclude_file, exclude_if_present, exclude_caches,
        exclude_larger_than, no_snapignore, one_file_system, files_from, files_from_verbatim, files_from_raw,
        host, compression, threads, checkpoint_interval, description, retention);
    match (&mut child.schedule, &parent.schedule) {
        (Some(c), Some(p)) => {
            inherit!(c, p; backup, prune, verify, verify_read_data_subset, run_missed, random_delay, timezone)
        }
        (None, Some(p)) => child.schedule = Some(p.clone()),
        _ => {}
    }
    match (&mut child.hooks, &parent.hooks) {
        (Some(c), Some(p)) => inherit!(c, p; before, after, after_success, on_failure, timeout),
        (None, Some(p)) => child.hooks = Some(p.clone()),
        _ => {}
    }
    match (&mut child.notify, &parent.notify) {
        (Some(c), Some(p)) => inherit!(c, p; webhook, command, on_success, timeout),
        (None, Some(p)) => child.notify = Some(p.clone()),
        _ => {}
    }
}

type Located = (Option<Range<usize>>, String);

/// Profile names travel in environment variables, unit files, crontab
/// lines and metrics labels, and follow `--profile` on command lines:
/// `[A-Za-z0-9._-]`, not starting with `-` (it would read as an option).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `name` with everything it inherits, nearest ancestor first.
fn resolve(all: &BTreeMap<String, RawProfile>, name: &str) -> std::result::Result<RawProfile, Located> {
    let mut resolved = all[name].clone();
    let mut chain = vec![name.to_string()];
    let mut current = all[name].clone();
    while let Some(parent_name) = current.inherit.clone() {
        let Some(parent) = all.get(parent_name.get_ref()) else {
            let known: Vec<&str> = all.keys().map(String::as_str).collect();
            return Err((
                Some(parent_name.span()),
                format!(
                    "profile {name:?} inherits from {:?}, which is not a profile (profiles: {})",
                    parent_name.get_ref(),
                    known.join(", ")
                ),
            ));
        };
        if let Some(first) = chain.iter().position(|n| n == parent_name.get_ref()) {
            // The cycle is from the parent's first place in the chain on;
            // the profiles before it (`name` perhaps) only lead into it.
            let mut cycle: Vec<String> = chain[first..].iter().map(|n| format!("{n:?}")).collect();
            cycle.push(format!("{:?}", parent_name.get_ref()));
            return Err((
                Some(parent_name.span()),
                format!(
                    "inheritance cycle: {} (closed by profile {:?})",
                    cycle.join(" inherits from "),
                    chain.last().map(String::as_str).unwrap_or(name)
                ),
            ));
        }
        chain.push(parent_name.get_ref().clone());
        merge(&mut resolved, parent);
        current = parent.clone();
    }
    Ok(resolved)
}

fn finish(name: &str, raw: RawProfile) -> Profile {
    let schedule = raw.schedule.map(|s| Schedule {
        backup: s.backup.map(|t| t.0),
        prune: s.prune.map(|t| t.0),
        verify: s.verify.map(|t| t.0),
        verify_subset: s.verify_read_data_subset,
        run_missed: s.run_missed.unwrap_or(false),
        random_delay: s.random_delay.map(|d| d.0),
        timezone: s.timezone.map(|t| t.0),
    });
    let retention = raw.retention.map(|r| Retention {
        keep_last: r.keep_last.map(|c| c.0),
        keep_hourly: r.keep_hourly.map(|c| c.0),
        keep_daily: r.keep_daily.map(|c| c.0),
        keep_weekly: r.keep_weekly.map(|c| c.0),
        keep_monthly: r.keep_monthly.map(|c| c.0),
        keep_yearly: r.keep_yearly.map(|c| c.0),
        keep_within: r.keep_within.map(|c| c.0),
        keep_within_hourly: r.keep_within_hourly.map(|c| c.0),
        keep_within_daily: r.keep_within_daily.map(|c| c.0),
        keep_within_weekly: r.keep_within_weekly.map(|c| c.0),
        keep_within_monthly: r.keep_within_monthly.map(|c| c.0),
        keep_within_yearly: r.keep_within_yearly.map(|c| c.0),
        keep_tag: r.keep_tag.unwrap_or_default(),
    });
    let hooks = raw.hooks.unwrap_or_default();
    let notify = raw.notify.unwrap_or_default();
    Profile {
        name: name.to_string(),
        inherit: raw.inherit.map(Spanned::into_inner),
        repository: raw.repository,
        options: raw.options.unwrap_or_default(),
        password_file: raw.password_file,
        password_command: raw.password_command,
        password: raw.password.map(Spanned::into_inner),
        cache_dir: raw.cache_dir,
        paths: raw.paths.unwrap_or_default(),
        tags: raw.tags.unwrap_or_default(),
        exclude: raw.exclude.unwrap_or_default(),
        iexclude: raw.iexclude.unwrap_or_default(),
        exclude_file: raw.exclude_file.unwrap_or_default(),
        iexclude_file: raw.iexclude_file.unwrap_or_default(),
        exclude_if_present: raw.exclude_if_present.unwrap_or_default(),
        exclude_caches: raw.exclude_caches,
        exclude_larger_than: raw.exclude_larger_than.map(|s| s.0),
        no_snapignore: raw.no_snapignore,
        one_file_system: raw.one_file_system,
        files_from: raw.files_from.unwrap_or_default(),
        files_from_verbatim: raw.files_from_verbatim.unwrap_or_default(),
        files_from_raw: raw.files_from_raw.unwrap_or_default(),
        host: raw.host,
        compression: raw.compression.map(|c| c.0),
        threads: raw.threads,
        checkpoint_interval: raw.checkpoint_interval.map(|d| d.0),
        description: raw.description,
        retention,
        schedule,
        hooks: Hooks {
            before: hooks.before,
            after: hooks.after,
            after_success: hooks.after_success,
            on_failure: hooks.on_failure,
            timeout: hooks.timeout.map(|d| d.0),
        },
        notify: Notify {
            webhook: notify
                .webhook
                .map(|w| w.0.into_iter().map(|u| u.0).collect())
                .unwrap_or_default(),
            command: notify.command,
            on_success: notify.on_success.unwrap_or(false),
            timeout: notify.timeout.map(|d| d.0),
        },
    }
}

// ---- Values checked as they are read, so toml reports where they are.

/// A duration such as `30s`, `5m`, `1h 30m`.
#[derive(Clone)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration (e.g. 30s, 5m, 6h): {e}")))
    }
}

/// A duration more than zero (a timeout of 0 would fail every hook at once).
#[derive(Clone)]
struct PositiveDuration(Duration);

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let HumanDuration(duration) = HumanDuration::deserialize(d)?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom("a timeout must be more than 0 (e.g. 30s, 5m)"));
        }
        Ok(PositiveDuration(duration))
    }
}

/// A schedule expression kept as written (the daemon parses it again, in
/// the profile's timezone), checked here with the daemon's own parser so
/// `snap config check` and a reload refuse what the daemon would.
#[derive(Clone)]
struct ScheduleText(String);

impl<'de> Deserialize<'de> for ScheduleText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::schedule::Expr::parse(&text, crate::schedule::Zone::Utc)
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))?;
        Ok(ScheduleText(text))
    }
}

/// A duration kept as written (the daemon reads it), but checked here.
#[derive(Clone)]
struct HumanDurationText(String);

impl<'de> Deserialize<'de> for HumanDurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration (e.g. 30s, 10m): {e}")))?;
        Ok(HumanDurationText(text))
    }
}

#[derive(Clone)]
struct Timezone(String);

impl<'de> Deserialize<'de> for Timezone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "local" | "utc" => Ok(Timezone(text)),
            _ => Err(serde::de::Error::custom(format!(
                "{text:?} is not a time zone setting (expected \"local\" or \"utc\")"
            ))),
        }
    }
}

/// A size: a number of bytes, or a string such as `10M`.
#[derive(Clone)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Bytes(u64),
            Text(String),
        }
        match Either::deserialize(d).map_err(|_: D::Error| {
            serde::de::Error::custom("expected a size: a number of bytes, or a string such as \"10M\"")
        })? {
            Either::Bytes(n) => Ok(Size(n)),
            Either::Text(text) => crate::cmd::create::parse_size(&text)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A `keep-*` count: a number from 0, or `"unlimited"`.
#[derive(Clone)]
struct KeepCount(Count);

impl<'de> Deserialize<'de> for KeepCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(i64),
            Text(String),
        }
        let bad = |what: String| serde::de::Error::custom(format!("{what}: expected a count from 0, or \"unlimited\""));
        match Either::deserialize(d).map_err(|_: D::Error| bad("not a count".into()))? {
            Either::Number(n) => u32::try_from(n)
                .map(|n| KeepCount(Count::N(n)))
                .map_err(|_| bad(n.to_string())),
            Either::Text(text) if text == "unlimited" => Ok(KeepCount(Count::Unlimited)),
            Either::Text(text) => Err(bad(format!("{text:?}"))),
        }
    }
}

/// A calendar duration such as `1y5m7d2h` (as `forget --keep-within`).
#[derive(Clone)]
struct Calendar(CalendarDuration);

impl<'de> Deserialize<'de> for Calendar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        snap_core::policy::parse_duration(&text)
            .map(Calendar)
            .map_err(serde::de::Error::custom)
    }
}

/// A value parsed with its `FromStr`, as its command-line flag is.
#[derive(Clone)]
struct Parsed<T>(T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(i64),
            Text(String),
        }
        let text = match Either::deserialize(d)? {
            Either::Number(n) => n.to_string(),
            Either::Text(text) => text,
        };
        text.parse().map(Parsed).map_err(serde::de::Error::custom)
    }
}

/// An `http://` or `https://` URL.
#[derive(Clone)]
struct Url(String);

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let rest = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(Url(text)),
            // The value is not quoted: a mistyped URL still holds its secrets.
            _ => Err(serde::de::Error::custom(
                "not a webhook URL (expected http://HOST/... or https://HOST/...)",
            )),
        }
    }
}

/// One value or a list of them.
#[derive(Clone)]
struct OneOrMany<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either<T> {
            Many(Vec<T>),
            One(T),
        }
        Ok(match Either::deserialize(d)? {
            Either::Many(v) => OneOrMany(v),
            Either::One(v) => OneOrMany(vec![v]),
        })
    }
}

// ---- How `config show` writes values.

fn redacted_urls<S: Serializer>(urls: &[String], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(urls.iter().map(|u| crate::hooks::redact(u)))
}

fn mask<S: Serializer>(value: &Option<String>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("********"),
        None => s.serialize_none(),
    }
}

fn opt_duration<S: Serializer>(value: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

fn opt_display<S: Serializer, T: std::fmt::Display>(value: &Option<T>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

fn opt_calendar<S: Serializer>(value: &Option<CalendarDuration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_str(&format!("{}y{}m{}d{}h", d.years, d.months, d.days, d.hours)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    fn error(text: &str) -> String {
        format!("{:#}", load(text).unwrap_err())
    }

    #[test]
    fn reads_the_minimal_profile() {
        let config = load(
            r#"
[profile.docs]
repository = "/var/backups/snap"
password-file = "/etc/snap/password"
paths = ["/home/ana/Documents"]
exclude = ["*.tmp"]
tags = ["docs"]

[profile.docs.schedule]
backup = "every 1s"          # or a cron expression, e.g. "0 2 * * *"
run-missed = true

[profile.docs.retention]
keep-last = 3

[profile.docs.hooks]
after-success = "echo ok >> /tmp/snap-hooks.log"
on-failure = "echo failed >> /tmp/snap-hooks.log"
"#,
        )
        .unwrap();
        let docs = config.profile("docs").unwrap();
        assert_eq!(docs.repository.as_deref(), Some("/var/backups/snap"));
        assert_eq!(docs.paths, [PathBuf::from("/home/ana/Documents")]);
        assert_eq!(docs.exclude, ["*.tmp"]);
        let schedule = docs.schedule.as_ref().unwrap();
        assert_eq!(schedule.backup.as_deref(), Some("every 1s"));
        assert!(schedule.run_missed);
        assert_eq!(docs.retention.as_ref().unwrap().keep_last, Some(Count::N(3)));
        assert_eq!(
            docs.hooks.on_failure.as_deref(),
            Some("echo failed >> /tmp/snap-hooks.log")
        );
        assert!(format!("{:#}", config.profile("nope").unwrap_err()).contains("profiles: docs"));
    }

    #[test]
    fn inherits_key_by_key() {
        let config = load(
            r#"
[profile.base]
repository = "/r"
tags = ["a"]
hooks.before = "true"
hooks.timeout = "10s"
retention.keep-daily = 7

[profile.child]
inherit = "base"
tags = ["b"]
hooks.after = "true"
retention.keep-last = 2
"#,
        )
        .unwrap();
        let child = config.profile("child").unwrap();
        assert_eq!(child.repository.as_deref(), Some("/r"));
        assert_eq!(child.tags, ["b"]);
        assert_eq!(child.hooks.before.as_deref(), Some("true"));
        assert_eq!(child.hooks.after.as_deref(), Some("true"));
        assert_eq!(child.hooks.timeout(), Duration::from_secs(10));
        let retention = child.retention.as_ref().unwrap();
        assert_eq!((retention.keep_last, retention.keep_daily), (Some(Count::N(2)), None));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[profile.a]\nrepository = \"/r\"\nbogus = 1\n",
                ":3:",
                "profile.a.bogus",
            ),
            (
                "[profile.a]\n\n[profile.a.retention]\nkeep-last = -1\n",
                ":4:",
                "profile.a.retention.keep-last",
            ),
            (
                "[profile.a]\nexclude-caches = \"yes\"\n",
                ":2:",
                "profile.a.exclude-caches",
            ),
            (
                "[profile.a]\ncheckpoint-interval = \"soon\"\n",
                ":2:",
                "profile.a.checkpoint-interval",
            ),
            (
                "[profile.a]\nexclude-larger-than = \"10Q\"\n",
                ":2:",
                "profile.a.exclude-larger-than",
            ),
            (
                "[profile.a]\ninherit = \"b\"\n[profile.b]\ninherit = \"a\"\n",
                ":",
                "inherit",
            ),
            ("[profile.a]\n\ninherit = \"zz\"\n", ":3:", "profile.a.inherit"),
            (
                "[profile.a.hooks]\ntimeout = \"forever\"\n",
                ":2:",
                "profile.a.hooks.timeout",
            ),
            (
                "[profile.a.hooks]\ntimeout = \"0s\"\n",
                ":2:",
                "profile.a.hooks.timeout",
            ),
            (
                "[profile.a.notify]\ntimeout = \"0s\"\n",
                ":2:",
                "profile.a.notify.timeout",
            ),
            (
                "[profile.a.schedule]\nbackup = \"every 0s\"\n",
                ":2:",
                "profile.a.schedule.backup",
            ),
            (
                "[profile.a.schedule]\nbackup = \"every 500ms\"\n",
                ":2:",
                "profile.a.schedule.backup",
            ),
            (
                "[profile.a.schedule]\nprune = \"61 * * * *\"\n",
                ":2:",
                "profile.a.schedule.prune",
            ),
            (
                "[profile.a.schedule]\nverify = \"0 0 31 2 *\"\n",
                ":2:",
                "profile.a.schedule.verify",
            ),
            (
                "[profile.a.notify]\nwebhook = \"ftp://x\"\n",
                ":2:",
                "profile.a.notify.webhook",
            ),
        ];
        for (text, line, key) in cases {
            let message = error(text);
            assert!(
                message.contains("config.toml") && message.contains(line) && message.contains(key),
                "{text:?}: {message}"
            );
        }
        assert!(error("[profile.a]\ninherit = \"b\"\n[profile.b]\ninherit = \"a\"\n").contains("cycle"));
        // a only leads into the cycle b -> c -> b, closed in c (line 6).
        let message =
            error("[profile.a]\ninherit = \"b\"\n[profile.b]\ninherit = \"c\"\n[profile.c]\ninherit = \"b\"\n");
        assert!(message.contains(":6:"), "{message}");
        assert!(
            message.contains("\"b\" inherits from \"c\" inherits from \"b\" (closed by profile \"c\")"),
            "{message}"
        );
        for bad in ["\"-x\"", "\"a b\"", "\"ü\"", "\"a;rm\""] {
            let message = error(&format!("[profile.ok]\n\n[profile.{bad}]\nrepository = \"/r\"\n"));
            assert!(
                message.contains(":3:") && message.contains("not a profile name"),
                "{bad}: {message}"
            );
        }
        // A mistyped webhook URL's secrets stay out of the message.
        let message = error("[profile.a.notify]\nwebhook = \"htps://ana:s3cret@host/T0/tok3n\"\n");
        assert!(message.contains("profile.a.notify.webhook"), "{message}");
        assert!(
            !message.contains("s3cret") && !message.contains("tok3n") && !message.contains("ana"),
            "{message}"
        );
        assert!(load("[profile.\"a-b.c_1\"]\n")
            .unwrap()
            .profiles
            .contains_key("a-b.c_1"));
    }

    #[test]
    fn a_password_needs_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[profile.a]\n\npassword = \"secret\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(
            message.contains(":3:") && message.contains("profile.a.password") && message.contains("0600"),
            "{message}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.profile("a").unwrap().password.as_deref(), Some("secret"));
        let shown = serde_json::to_string(config.profile("a").unwrap()).unwrap();
        assert!(!shown.contains("secret"), "{shown}");
    }
}
