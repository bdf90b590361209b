//! `snap schedule list` (each profile's jobs, last and next runs) and
//! `snap schedule install` (a systemd user unit or a crontab line that
//! starts `snap daemon`, for users who prefer the system's scheduler to
//! start it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;

use crate::global::GlobalArgs;
use crate::{exit, state};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Show each profile's scheduled jobs with their last and next runs.
    List {
        /// The daemon's state directory. Default: $XDG_STATE_HOME/snap
        #[arg(long, value_name = "DIR", env = "SNAP_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Have the system start `snap daemon`: a systemd user unit (default) or a crontab line.
    Install {
        /// Write ~/.config/systemd/user/snap-daemon.service (the default).
        #[arg(long, conflicts_with = "cron")]
        systemd: bool,
        /// Add an `@reboot` line to the user's crontab.
        #[arg(long)]
        cron: bool,
        /// Print what would be written, and where, without writing it.
        #[arg(long)]
        dry_run: bool,
        /// Passed on to the daemon.
        #[arg(long, value_name = "DIR", env = "SNAP_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Passed on to the daemon: serve /metrics on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
        /// Passed on to the daemon: write a node_exporter textfile here.
        #[arg(long, value_name = "FILE")]
        metrics_textfile: Option<PathBuf>,
    },
}

/// What `schedule install` passes on to the daemon it installs.
struct DaemonArgs<'a> {
    state_dir: Option<&'a Path>,
    metrics_listen: Option<&'a str>,
    metrics_textfile: Option<&'a Path>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    match args.command {
        Sub::List { state_dir } => list(global, state_dir.as_deref()),
        Sub::Install {
            cron,
            dry_run,
            state_dir,
            metrics_listen,
            metrics_textfile,
            ..
        } => {
            let daemon = DaemonArgs {
                state_dir: state_dir.as_deref(),
                metrics_listen: metrics_listen.as_deref(),
                metrics_textfile: metrics_textfile.as_deref(),
            };
            install(global, cron, dry_run, &daemon)
        }
    }
}

#[derive(serde::Serialize)]
struct Row {
    profile: String,
    job: &'static str,
    schedule: String,
    last_start: Option<Timestamp>,
    last_end: Option<Timestamp>,
    result: Option<String>,
    exit_code: Option<i32>,
    next_run: Option<Timestamp>,
}

fn list(global: &GlobalArgs, state_dir: Option<&Path>) -> Result<i32> {
    let path = crate::profile::Config::locate(global.config.as_deref())?;
    let config = crate::profile::Config::load(&path)?;
    let specs = super::daemon::jobs(&config)?;
    let state = state::load(&state::dir(state_dir)?)?;
    let now = Timestamp::now();
    let mut rows = Vec::new();
    for spec in specs
        .iter()
        .filter(|s| global.profile.as_ref().is_none_or(|p| *p == s.profile))
    {
        let job = state.profiles.get(&spec.profile).and_then(|p| p.jobs.get(spec.job));
        let next_run = next_run(spec, job, now);
        rows.push(Row {
            profile: spec.profile.clone(),
            job: spec.job,
            schedule: spec.expr.text().to_string(),
            last_start: job.and_then(|j| j.last_start),
            last_end: job.and_then(|j| j.last_end),
            result: job.and_then(|j| j.result.clone()),
            exit_code: job.and_then(|j| j.exit_code),
            next_run,
        });
    }
    if global.json {
        super::print_json(&rows)?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        if !global.quiet {
            errln!("no profile of {} has a schedule", path.display());
        }
        return Ok(exit::OK);
    }
    let when = |t: Option<Timestamp>| t.map(|t| super::local_time(&t)).unwrap_or_else(|| "-".into());
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.profile.clone(),
                r.job.to_string(),
                r.schedule.clone(),
                when(r.last_start),
                r.result.clone().unwrap_or_else(|| "-".into()),
                when(r.next_run),
            ]
        })
        .collect();
    let header = ["PROFILE", "JOB", "SCHEDULE", "LAST RUN", "RESULT", "NEXT RUN"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", cells.join("  ").trim_end())?;
    }
    Ok(exit::OK)
}

/// The next run of a job (`schedule list`, the UI): the daemon's, while the
/// schedule is the one it computed it from; else what the daemon would
/// compute at start-up.
pub fn next_run(spec: &super::daemon::JobSpec, job: Option<&state::JobState>, now: Timestamp) -> Option<Timestamp> {
    match job.filter(|j| j.schedule == spec.expr.text()).and_then(|j| j.next_run) {
        Some(next) => Some(next),
        None if spec.expr.runs_at_first_start() && job.and_then(|j| j.last_start).is_none() => Some(now),
        None => spec.expr.next_after(now, job.and_then(|j| j.last_scheduled)).ok(),
    }
}

/// A word for sh: quoted only when it needs to be.
fn sh_quote(word: &str) -> String {
    if is_plain(word) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A word for systemd's ExecStart, which has its own rules: `%` starts a
/// specifier and `$` a variable (both doubled), and inside double quotes a
/// backslash escapes (systemd.service(5), "Command lines").
fn systemd_quote(word: &str) -> String {
    let word = word.replace('%', "%%").replace('$', "$$");
    if is_plain(&word) {
        word
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A command for a crontab line: sh words, and every `%` escaped, since
/// cron turns an unescaped one into a newline (crontab(5)).
fn cron_command(words: &[String]) -> String {
    let words: Vec<String> = words.iter().map(|w| sh_quote(w)).collect();
    words.join(" ").replace('%', "\\%")
}

fn is_plain(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b))
}

fn install(global: &GlobalArgs, cron: bool, dry_run: bool, daemon: &DaemonArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find the snap binary")?;
    let config = std::path::absolute(crate::profile::Config::locate(global.config.as_deref())?)?;
    // The file must load now: a unit that fails at every boot helps no one.
    crate::profile::Config::load(&config)?;
    let mut command = vec![
        exe.to_string_lossy().into_owned(),
        "--config".to_string(),
        config.to_string_lossy().into_owned(),
        "daemon".to_string(),
    ];
    if let Some(dir) = daemon.state_dir {
        command.push("--state-dir".into());
        command.push(std::path::absolute(dir)?.to_string_lossy().into_owned());
    }
    if let Some(addr) = daemon.metrics_listen {
        command.push("--metrics-listen".into());
        command.push(addr.into());
    }
    if let Some(file) = daemon.metrics_textfile {
        command.push("--metrics-textfile".into());
        command.push(std::path::absolute(file)?.to_string_lossy().into_owned());
    }
    // Neither a unit file nor a crontab can carry a newline in a word.
    if let Some(word) = command.iter().find(|w| w.contains(['\n', '\r'])) {
        bail!(snap_core::Error::InvalidArgument(format!(
            "cannot install a command with a line break in {word:?}"
        )));
    }
    if cron {
        let line = format!("@reboot {}", cron_command(&command));
        if dry_run {
            outln!("would add to the crontab of this user:")?;
            outln!("{line}")?;
            return Ok(exit::OK);
        }
        let current = std::process::Command::new("crontab")
            .arg("-l")
            .output()
            .context("cannot run crontab (is cron installed?)")?;
        // `crontab -l` fails when the user has no crontab yet.
        let mut table = if current.status.success() {
            String::from_utf8_lossy(&current.stdout).into_owned()
        } else {
            String::new()
        };
        if table.lines().any(|l| l.trim() == line) {
            outln!("the crontab already has: {line}")?;
            return Ok(exit::OK);
        }
        if !table.is_empty() && !table.ends_with('\n') {
            table.push('\n');
        }
        table.push_str(&line);
        table.push('\n');
        let mut child = std::process::Command::new("crontab")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("cannot run crontab")?;
        std::io::Write::write_all(&mut child.stdin.take().context("no stdin")?, table.as_bytes())?;
        if !child.wait()?.success() {
            bail!("crontab refused the new table");
        }
        outln!("added to the crontab: {line}")?;
        return Ok(exit::OK);
    }
    let unit_dir = dirs::config_dir()
        .context("no home directory: cannot place the systemd user unit")?
        .join("systemd")
        .join("user");
    let unit_path = unit_dir.join("snap-daemon.service");
    let exec_start: Vec<String> = command.iter().map(|w| systemd_quote(w)).collect();
    let exec_start = exec_start.join(" ");
    let unit = format!(
        "[Unit]\n\
         Description=snap backups on their schedules (snap daemon)\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec_start}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         # SIGTERM to the daemon alone: it interrupts its running backup itself\n\
         # (which stops at its next safe point) and waits for it.\n\
         KillMode=mixed\n\
         TimeoutStopSec=5min\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    );
    if dry_run {
        outln!("would write {}:", unit_path.display())?;
    } else {
        std::fs::create_dir_all(&unit_dir).with_context(|| format!("cannot create {}", unit_dir.display()))?;
        state::write_atomic(&unit_path, unit.as_bytes())?;
        outln!("wrote {}:", unit_path.display())?;
    }
    outln!("{unit}")?;
    if !dry_run && !global.quiet {
        errln!("start it with: systemctl --user daemon-reload && systemctl --user enable --now snap-daemon.service");
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_quoting_leaves_plain_words_alone() {
        assert_eq!(sh_quote("/usr/bin/snap"), "/usr/bin/snap");
        assert_eq!(sh_quote("/home/a b/c'd"), "'/home/a b/c'\\''d'");
    }

    #[test]
    fn systemd_words_escape_specifiers_variables_and_quotes() {
        assert_eq!(systemd_quote("/usr/bin/snap"), "/usr/bin/snap");
        assert_eq!(systemd_quote("/srv/100%"), "\"/srv/100%%\"");
        assert_eq!(systemd_quote("/home/a b/$x"), "\"/home/a b/$$x\"");
        assert_eq!(systemd_quote("c'd\"e\\f"), "\"c'd\\\"e\\\\f\"");
    }

    #[test]
    fn cron_commands_escape_percent() {
        let words = ["/usr/bin/snap".to_string(), "/srv/50% off".to_string()];
        assert_eq!(cron_command(&words), "/usr/bin/snap '/srv/50\\% off'");
    }
}
