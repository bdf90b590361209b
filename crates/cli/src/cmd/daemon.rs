//! `snap daemon`: runs every profile's schedule in one process (README
//! "Scheduling"). Each run is a child process of the snap binary itself
//! (`snap --config F --profile NAME create --json`, then `forget`, ...), so a
//! run fails, is interrupted and is logged exactly as the same command typed
//! by hand; the daemon only decides when, keeps the state, and exports it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jiff::Timestamp;

use crate::global::GlobalArgs;
use crate::schedule::{self, Expr, Zone};
use crate::state::{self, BackupSummary, JobState, State};
use crate::{exit, metrics};

#[derive(clap::Args)]
pub struct Args {
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9721.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Write the metrics to FILE after every run (node_exporter textfile collector).
    #[arg(long, value_name = "FILE")]
    metrics_textfile: Option<PathBuf>,
    /// Where the daemon keeps its state. Default: $XDG_STATE_HOME/snap
    #[arg(long, value_name = "DIR", env = "SNAP_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// One scheduled job of a profile.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub profile: String,
    /// `backup`, `prune` or `verify`.
    pub job: &'static str,
    pub expr: Expr,
    pub random_delay: Duration,
    pub run_missed: bool,
    /// The snap commands run one after the other (after `--config F --profile NAME`).
    pub steps: Vec<Vec<String>>,
}

impl JobSpec {
    fn key(&self) -> (String, String) {
        (self.profile.clone(), self.job.to_string())
    }
}

/// The jobs of every profile in the config, in profile order; a profile
/// without a schedule has none. A bad schedule is a config error (exit 2)
/// naming the file, profile and key.
pub fn jobs(config: &crate::profile::Config) -> Result<Vec<JobSpec>> {
    jobs_of(config).map_err(|e| crate::profile::ConfigError(format!("{e:#}")).into())
}

fn jobs_of(config: &crate::profile::Config) -> Result<Vec<JobSpec>> {
    let mut out = Vec::new();
    for (name, profile) in &config.profiles {
        let Some(schedule) = &profile.schedule else { continue };
        let context = || format!("{}: profile {name:?}, schedule", config.path.display());
        let zone: Zone = schedule
            .timezone
            .as_deref()
            .unwrap_or("local")
            .parse()
            .with_context(context)?;
        let random_delay = match &schedule.random_delay {
            Some(text) => humantime::parse_duration(text)
                .with_context(|| format!("random-delay {text:?}"))
                .with_context(context)?,
            None => Duration::ZERO,
        };
        let mut add = |job: &'static str, text: &str, steps: Vec<Vec<String>>| -> Result<()> {
            out.push(JobSpec {
                profile: name.clone(),
                job,
                expr: Expr::parse(text, zone)
                    .with_context(|| format!("{job} = {text:?}"))
                    .with_context(context)?,
                random_delay,
                run_missed: schedule.run_missed,
                steps,
            });
            Ok(())
        };
        let has_retention = profile.retention.is_some();
        if let Some(text) = &schedule.backup {
            let mut steps = vec![vec!["create".to_string(), "--json".to_string()]];
            if has_retention {
                steps.push(vec!["forget".to_string()]);
            }
            add("backup", text, steps)?;
        }
        // Forgotten snapshots only free space once pruned: weekly unless said otherwise.
        let prune = schedule
            .prune
            .clone()
            .or_else(|| (has_retention && schedule.backup.is_some()).then(|| "@weekly".to_string()));
        if let Some(text) = &prune {
            add("prune", text, vec![vec!["prune".to_string()]])?;
        }
        if let Some(text) = &schedule.verify {
            let mut verify = vec!["verify".to_string()];
            if let Some(subset) = &schedule.verify_subset {
                verify.push("--read-data-subset".to_string());
                verify.push(subset.clone());
            }
            add("verify", text, vec![verify])?;
        }
    }
    Ok(out)
}

// Signals: the handlers only set flags; the loop acts on them.
static TERMINATE: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Replaces the interrupt handler of every other command (main.rs): a
/// daemon stops between runs, and SIGHUP means reload, not hang-up.
fn install_signal_handlers() {
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGHUP,
            on_reload as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// A log line on stderr: UTC time to the second, then the message.
fn log(message: impl std::fmt::Display) {
    errln!("{} {message}", Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"));
}

/// A run in progress: its steps, the child of the current one, and what
/// the steps reported so far.
struct Run {
    spec: JobSpec,
    step: usize,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<()>>,
    started: Timestamp,
    clock: Instant,
    /// The worst outcome so far, with the exit code and step that gave it.
    outcome: Outcome,
    code: i32,
    error: Option<String>,
    backup: Option<BackupSummary>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Success,
    Incomplete,
    Failed,
    Interrupted,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Incomplete => "incomplete",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    fn of(code: i32) -> Outcome {
        match code {
            exit::OK => Outcome::Success,
            exit::INCOMPLETE => Outcome::Incomplete,
            exit::INTERRUPTED => Outcome::Interrupted,
            _ => Outcome::Failed,
        }
    }
}

struct Daemon {
    exe: PathBuf,
    config_path: PathBuf,
    state_dir: PathBuf,
    specs: Vec<JobSpec>,
    profiles: Vec<String>,
    state: State,
    /// By profile: at most one run each.
    running: BTreeMap<String, Run>,
    /// When a due occurrence starts, its random delay included (in memory:
    /// after a restart a new delay is drawn).
    start_at: BTreeMap<(String, String), Timestamp>,
    metrics: metrics::Shared,
    textfile: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let config_path = crate::profile::Config::locate(global.config.as_deref())?;
    let config = crate::profile::Config::load(&config_path)?;
    let specs = jobs(&config)?;
    let state_dir = state::dir(args.state_dir.as_deref())?;
    // Held until the daemon returns: the kernel drops it when we exit.
    let _lock = lock_state_dir(&state_dir)?;
    let (state, aside) = state::load_or_set_aside(&state_dir)?;
    if let Some((aside, why)) = aside {
        log(format_args!(
            "warning: {} was not a snap state file ({why}); moved it to {} and started with an empty state",
            state_dir.join(state::FILE).display(),
            aside.display()
        ));
    }
    install_signal_handlers();
    let mut daemon = Daemon {
        exe: std::env::current_exe().context("cannot find the snap binary to run jobs with")?,
        config_path,
        state_dir,
        profiles: config.profiles.keys().cloned().collect(),
        specs: Vec::new(),
        state,
        running: BTreeMap::new(),
        start_at: BTreeMap::new(),
        metrics: Arc::new(Mutex::new(String::new())),
        textfile: args.metrics_textfile,
    };
    if let Some(addr) = &args.metrics_listen {
        let bound = metrics::serve(addr, daemon.metrics.clone())?;
        // Scripts (and the tests) read the address from this line.
        log(format_args!("metrics on http://{bound}/metrics"));
    }
    daemon.install(specs, Timestamp::now(), true)?;
    log(format_args!(
        "daemon started: {} from {}, state in {}",
        crate::cmd::count(daemon.specs.len(), "job", "jobs"),
        daemon.config_path.display(),
        daemon.state_dir.display()
    ));
    daemon.main_loop()?;
    log("daemon stopped");
    Ok(exit::OK)
}

/// Another daemon holds the state directory (exit 11, as a locked repository).
#[derive(Debug, thiserror::Error)]
#[error("another snap daemon{holder} uses the state directory {dir} (its lock file {file} is held)")]
pub struct StateLocked {
    holder: String,
    dir: String,
    file: String,
}

/// Two daemons on one state directory would run every job twice and
/// overwrite each other's state: an exclusive flock on `daemon.lock` in it
/// keeps the second out. The lock file holds the holder's pid, for the message.
fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::io::{Seek, Write};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("daemon.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let holder = match text.trim().parse::<u32>() {
            Ok(pid) => format!(" (pid {pid})"),
            Err(_) => String::new(),
        };
        return Err(StateLocked {
            holder,
            dir: dir.display().to_string(),
            file: path.display().to_string(),
        }
        .into());
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    written.with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

impl Daemon {
    /// Takes `specs` as the schedule: a job keeps its persisted next run
    /// when its expression is unchanged; else (or the first time) the next
    /// run is computed afresh. At start-up, a run missed while the daemon
    /// was not running is run at once with `run-missed`, else skipped.
    fn install(&mut self, specs: Vec<JobSpec>, now: Timestamp, startup: bool) -> Result<()> {
        for spec in &specs {
            let job = self.job_mut(spec);
            let known = job.schedule == spec.expr.text() && job.next_run.is_some();
            if !known {
                job.schedule = spec.expr.text().to_string();
                job.next_run = Some(if spec.expr.runs_at_first_start() && job.last_start.is_none() {
                    now
                } else {
                    spec.expr.next_after(now, job.last_scheduled)?
                });
                continue;
            }
            let next = job.next_run.expect("checked above");
            if startup && next < now && !self.running.contains_key(&spec.profile) {
                if spec.run_missed {
                    log(format_args!(
                        "{} {}: the run due {} was missed; running it now",
                        spec.profile,
                        spec.job,
                        next.strftime("%Y-%m-%dT%H:%M:%SZ")
                    ));
                } else {
                    let later = spec.expr.next_after(now, Some(next))?;
                    log(format_args!(
                        "{} {}: the run due {} was missed (run-missed is off); next {}",
                        spec.profile,
                        spec.job,
                        next.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        later.strftime("%Y-%m-%dT%H:%M:%SZ")
                    ));
                    let job = self.job_mut(spec);
                    job.last_scheduled = Some(next);
                    job.next_run = Some(later);
                }
            }
        }
        self.specs = specs;
        self.start_at.clear();
        self.correct_clock(now);
        self.save();
        Ok(())
    }

    /// A clock that once ran ahead (a bad RTC, a wrong NTP answer, a test
    /// under faketime) leaves the state with runs started in the future and
    /// a next run far ahead: nothing would run until the clock catches up,
    /// silently. Such a job's times are dropped and its next run computed
    /// afresh from now, with a log line; true once something was changed.
    fn correct_clock(&mut self, now: Timestamp) -> bool {
        // Room for a clock slewed back a little, so no correction flaps.
        let slack = jiff::SignedDuration::from_secs(60);
        let mut changed = false;
        for i in 0..self.specs.len() {
            if self.running.contains_key(&self.specs[i].profile) {
                continue;
            }
            let spec = self.specs[i].clone();
            let Some(job) = self
                .state
                .profiles
                .get_mut(&spec.profile)
                .and_then(|p| p.jobs.get_mut(spec.job))
            else {
                continue;
            };
            let ahead = |t: Option<Timestamp>| t.is_some_and(|t| t > now + slack);
            // For `every` the latest sane next run is now + interval; for
            // cron, the next occurrence from now.
            let latest = spec.expr.next_after(now, None).ok();
            let far = match (job.next_run, latest) {
                (Some(next), Some(latest)) => next > latest + slack,
                _ => false,
            };
            if !(far || ahead(job.last_start) || ahead(job.last_scheduled) || ahead(job.last_end)) {
                continue;
            }
            let before = job.next_run;
            for t in [&mut job.last_start, &mut job.last_scheduled, &mut job.last_end] {
                if ahead(*t) {
                    *t = None;
                }
            }
            job.next_run = if spec.expr.runs_at_first_start() && job.last_start.is_none() {
                Some(now)
            } else {
                spec.expr.next_after(now, job.last_scheduled).ok()
            };
            let show = |t: Option<Timestamp>| {
                t.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "none".into())
            };
            log(format_args!(
                "warning: {} {}: the state holds times in the future (next run {}; the clock ran ahead?); next run now {}",
                spec.profile,
                spec.job,
                show(before),
                show(job.next_run)
            ));
            self.start_at.remove(&spec.key());
            changed = true;
        }
        changed
    }

    fn job_mut(&mut self, spec: &JobSpec) -> &mut JobState {
        self.state
            .profiles
            .entry(spec.profile.clone())
            .or_default()
            .jobs
            .entry(spec.job.to_string())
            .or_default()
    }

    /// Refreshes the metrics and persists the state; a failure is logged,
    /// not fatal: the schedule goes on from memory.
    fn save(&mut self) {
        let running: metrics::Running = self
            .running
            .values()
            .map(|r| (r.spec.profile.clone(), r.spec.job.to_string()))
            .collect();
        let text = metrics::render(&self.state, &self.profiles, &running);
        if let Some(path) = &self.textfile {
            if let Err(e) = metrics::write_textfile(path, &text) {
                log(format_args!("error: metrics textfile: {e:#}"));
            }
        }
        if let Ok(mut body) = self.metrics.lock() {
            *body = text;
        }
        // The state file last: whoever sees a change there (`snap health`,
        // a test) finds the metrics already showing it.
        if let Err(e) = state::save(&self.state_dir, &self.state) {
            log(format_args!("error: {e:#}"));
        }
    }

    fn main_loop(&mut self) -> Result<()> {
        let mut stopping = false;
        loop {
            if TERMINATE.load(Ordering::SeqCst) && !stopping {
                stopping = true;
                log(format_args!(
                    "stopping: {}",
                    if self.running.is_empty() {
                        "no run is going".to_string()
                    } else {
                        format!(
                            "interrupting {} (it stops at its next safe point)",
                            self.running.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    }
                ));
                for run in self.running.values() {
                    interrupt(&run.child);
                }
            }
            if RELOAD.swap(false, Ordering::SeqCst) && !stopping {
                self.reload();
            }
            self.reap(stopping);
            if stopping {
                if self.running.is_empty() {
                    return Ok(());
                }
            } else {
                let now = Timestamp::now();
                if self.correct_clock(now) {
                    self.save();
                }
                self.start_due(now);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGHUP: the new config replaces the old only when it loads whole.
    fn reload(&mut self) {
        let loaded = crate::profile::Config::load(&self.config_path).and_then(|config| Ok((jobs(&config)?, config)));
        match loaded {
            Ok((specs, config)) => {
                self.profiles = config.profiles.keys().cloned().collect();
                match self.install(specs, Timestamp::now(), false) {
                    Ok(()) => log(format_args!(
                        "reloaded {}: {}",
                        self.config_path.display(),
                        crate::cmd::count(self.specs.len(), "job", "jobs")
                    )),
                    Err(e) => log(format_args!("error: reload: {e:#}")),
                }
            }
            Err(e) => log(format_args!("error: reload failed, keeping the old config: {e:#}")),
        }
    }

    fn start_due(&mut self, now: Timestamp) {
        for i in 0..self.specs.len() {
            let spec = self.specs[i].clone();
            let key = spec.key();
            let Some(due) = self
                .state
                .profiles
                .get(&spec.profile)
                .and_then(|p| p.jobs.get(spec.job))
                .and_then(|j| j.next_run)
            else {
                continue;
            };
            if due > now {
                continue;
            }
            let start = *self
                .start_at
                .entry(key.clone())
                .or_insert_with(|| due + schedule::random_delay(spec.random_delay));
            if start > now {
                continue;
            }
            self.start_at.remove(&key);
            let next = match spec.expr.next_after(now, Some(due)) {
                Ok(next) => Some(next),
                Err(e) => {
                    log(format_args!("error: {} {}: {e:#}", spec.profile, spec.job));
                    None
                }
            };
            if let Some(busy) = self.running.get(&spec.profile) {
                log(format_args!(
                    "{} {}: skipped the run due {}: the {} run of this profile is still going",
                    spec.profile,
                    spec.job,
                    due.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    busy.spec.job
                ));
                let job = self.job_mut(&spec);
                job.skipped += 1;
                job.last_scheduled = Some(due);
                job.next_run = next;
                self.save();
                continue;
            }
            let job = self.job_mut(&spec);
            job.last_scheduled = Some(due);
            job.next_run = next;
            job.last_start = Some(now);
            job.runs += 1;
            match self.spawn(&spec, 0) {
                Ok((child, stdout, stderr)) => {
                    log(format_args!("{} {}: started", spec.profile, spec.job));
                    self.running.insert(
                        spec.profile.clone(),
                        Run {
                            spec: spec.clone(),
                            step: 0,
                            child,
                            stdout: Some(stdout),
                            stderr: Some(stderr),
                            started: now,
                            clock: Instant::now(),
                            outcome: Outcome::Success,
                            code: exit::OK,
                            error: None,
                            backup: None,
                        },
                    );
                }
                Err(e) => {
                    log(format_args!("error: {} {}: {e:#}", spec.profile, spec.job));
                    let job = self.job_mut(&spec);
                    job.last_end = Some(now);
                    job.result = Some(Outcome::Failed.name().into());
                    job.exit_code = Some(exit::FAILED);
                    job.error = Some(format!("{e:#}"));
                }
            }
            self.save();
        }
    }

    fn spawn(&self, spec: &JobSpec, step: usize) -> Result<(Child, JoinHandle<String>, JoinHandle<()>)> {
        let mut command = Command::new(&self.exe);
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--profile")
            .arg(&spec.profile)
            .args(&spec.steps[step])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the daemon's terminal
            // reaches the child once, from the daemon, not twice (a second
            // interrupt makes snap quit at once).
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        let mut stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let prefix = format!("{} {}:", spec.profile, spec.steps[step][0]);
        let err = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(line) => log(format_args!("{prefix} {line}")),
                    Err(_) => break,
                }
            }
        });
        Ok((child, out, err))
    }

    /// Collects finished steps: starts the run's next step, or records the run.
    fn reap(&mut self, stopping: bool) {
        let profiles: Vec<String> = self.running.keys().cloned().collect();
        for profile in profiles {
            let run = self.running.get_mut(&profile).expect("listed above");
            let status = match run.child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(e) => {
                    log(format_args!("error: {profile}: cannot wait for the run: {e}"));
                    continue;
                }
            };
            let stdout = run.stdout.take().and_then(|h| h.join().ok()).unwrap_or_default();
            if let Some(h) = run.stderr.take() {
                let _ = h.join();
            }
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .unwrap_or_else(|| status.signal().map_or(exit::FAILED, |s| 128 + s));
            let outcome = Outcome::of(code);
            let step_name = run.spec.steps[run.step][0].clone();
            if run.spec.steps[run.step][0] == "create" && matches!(outcome, Outcome::Success | Outcome::Incomplete) {
                run.backup = summary(&stdout);
            }
            if outcome > run.outcome {
                run.outcome = outcome;
                run.code = code;
                if outcome != Outcome::Success {
                    run.error = Some(format!("{step_name} exited with {code}"));
                }
            }
            // forget after a backup that skipped files still applies the policy;
            // nothing after a failure or interruption.
            let go_on = matches!(outcome, Outcome::Success | Outcome::Incomplete) && !stopping;
            if go_on && run.step + 1 < run.spec.steps.len() {
                run.step += 1;
                let (spec, step) = (run.spec.clone(), run.step);
                match self.spawn(&spec, step) {
                    Ok((child, out, err)) => {
                        let run = self.running.get_mut(&profile).expect("still running");
                        run.child = child;
                        run.stdout = Some(out);
                        run.stderr = Some(err);
                        continue;
                    }
                    Err(e) => {
                        let run = self.running.get_mut(&profile).expect("still running");
                        run.outcome = Outcome::Failed;
                        run.code = exit::FAILED;
                        run.error = Some(format!("{e:#}"));
                    }
                }
            }
            let run = self.running.remove(&profile).expect("still running");
            self.finish(run);
        }
    }

    fn finish(&mut self, run: Run) {
        let now = Timestamp::now();
        let seconds = run.clock.elapsed().as_secs_f64();
        let spec = &run.spec;
        log(format_args!(
            "{} {}: {} in {seconds:.1}s{}{}",
            spec.profile,
            spec.job,
            run.outcome.name(),
            run.backup
                .as_ref()
                .map(|b| format!(", snapshot {}", &b.snapshot_id[..b.snapshot_id.len().min(8)]))
                .unwrap_or_default(),
            run.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
        let profile = self.state.profiles.entry(spec.profile.clone()).or_default();
        if let Some(backup) = run.backup {
            profile.last_backup = Some(backup);
        }
        let job = profile.jobs.entry(spec.job.to_string()).or_default();
        job.last_start = Some(run.started);
        job.last_end = Some(now);
        job.result = Some(run.outcome.name().into());
        job.exit_code = Some(run.code);
        job.duration_seconds = Some(seconds);
        job.error = run.error;
        self.save();
    }
}

/// Sends SIGINT to a run's child: snap stops at its next safe point, as at
/// Ctrl-C (a backup saves what it has as a checkpoint to resume from).
fn interrupt(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill only sends a signal; the child is not reaped yet, so
        // the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
}

/// The numbers of `snap create --json`'s summary.
fn summary(stdout: &str) -> Option<BackupSummary> {
    let json: serde_json::Value = serde_json::from_str(stdout.lines().rev().find(|l| l.starts_with('{'))?).ok()?;
    let s = &json["summary"];
    let n = |key: &str| s[key].as_u64().unwrap_or(0);
    Some(BackupSummary {
        snapshot_id: json["id"].as_str()?.to_string(),
        time: json["time"].as_str().and_then(|t| t.parse().ok()),
        files: n("files_new") + n("files_changed") + n("files_unmodified"),
        errors: n("errors"),
        bytes_read: n("bytes_read"),
        bytes_added: n("bytes_added_stored"),
        bytes_total: n("bytes_total"),
        repository_bytes: json["repository"]["pack_bytes"].as_u64(),
        repository_packs: json["repository"]["packs"].as_u64(),
    })
}

/// The jobs each configured profile has, for `schedule list` and `health`.
pub fn profile_jobs(specs: &[JobSpec]) -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut out: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for spec in specs {
        out.entry(spec.profile.clone()).or_default().insert(spec.job);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_summary_is_read_from_its_json() {
        let json = r#"{"id":"abcdef0123","time":"2026-01-01T00:00:00Z","summary":{"files_new":2,"files_changed":1,"files_unmodified":4,"errors":1,"bytes_read":10,"bytes_total":30,"bytes_added_stored":7},"repository":{"packs":2,"pack_bytes":99,"blobs":5}}"#;
        let s = summary(&format!("noise\n{json}\n")).unwrap();
        assert_eq!(
            (s.files, s.errors, s.bytes_read, s.bytes_added, s.bytes_total),
            (7, 1, 10, 7, 30)
        );
        assert_eq!((s.repository_bytes, s.repository_packs), (Some(99), Some(2)));
        assert_eq!(s.snapshot_id, "abcdef0123");
        assert!(summary("not json").is_none());
    }
}
