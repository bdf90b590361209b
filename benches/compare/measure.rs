//! Running one command under `/usr/bin/time -v`, dropping the page cache,
//! and the size of a directory.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const TIME: &str = "/usr/bin/time";

/// Variables that would make a tool read its password or repository from
/// somewhere other than what the harness gives it.
const UNSET: [&str; 15] = [
    "SNAP_PASSWORD_FILE",
    "SNAP_PASSWORD_COMMAND",
    "SNAP_REPOSITORY",
    "SNAP_CACHE_DIR",
    "SNAP_LOG",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
    "RESTIC_REPOSITORY",
    "RESTIC_REPOSITORY_FILE",
    "BORG_PASSCOMMAND",
    "BORG_PASSPHRASE_FD",
    "BORG_REPO",
    "RUSTIC_PASSWORD_FILE",
    "RUSTIC_PASSWORD_COMMAND",
    "RUSTIC_REPOSITORY",
];

/// A command line: program, arguments, extra environment, working directory.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// A file to read standard input from (none: /dev/null).
    pub stdin: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: impl Into<PathBuf>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Cmd {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Cmd {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Cmd {
        self.cwd = Some(dir.to_owned());
        self
    }

    pub fn stdin(mut self, file: &Path) -> Cmd {
        self.stdin = Some(file.to_owned());
        self
    }

    /// The command as one would type it (without the password variables' values).
    pub fn display(&self) -> String {
        let mut out = String::new();
        if let Some(dir) = &self.cwd {
            out += &format!("(cd {} && ", dir.display());
        }
        for (key, value) in &self.env {
            if !key.ends_with("PASSWORD") && !key.ends_with("PASSPHRASE") {
                out += &format!("{key}={value} ");
            }
        }
        out += &self.program.display().to_string();
        for arg in &self.args {
            out.push(' ');
            out += &arg.to_string_lossy();
        }
        if let Some(file) = &self.stdin {
            out += &format!(" < {}", file.display());
        }
        if self.cwd.is_some() {
            out.push(')');
        }
        out
    }
}

/// What `/usr/bin/time -v` saw of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub max_rss_kib: u64,
    pub exit_code: i32,
}

impl Sample {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Runs `cmd` under `/usr/bin/time -v`, its output going to `log` (the time
/// report to `log` with extension `.time`). A non-zero exit is not an error
/// here: the caller decides (borg exits with 1 on warnings).
pub fn run_timed(cmd: &Cmd, log: &Path) -> Result<Sample> {
    let report_path = log.with_extension("time");
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let stdin = match &cmd.stdin {
        Some(file) => Stdio::from(File::open(file).with_context(|| format!("cannot open {}", file.display()))?),
        None => Stdio::null(),
    };
    let mut command = Command::new(TIME);
    command
        .arg("-v")
        .arg("-o")
        .arg(&report_path)
        .arg(&cmd.program)
        .args(&cmd.args)
        .stdin(stdin)
        .stdout(out.try_clone()?)
        .stderr(out);
    for key in UNSET {
        command.env_remove(key);
    }
    for (key, value) in &cmd.env {
        command.env(key, value);
    }
    if let Some(dir) = &cmd.cwd {
        command.current_dir(dir);
    }
    let start = Instant::now();
    let status = command.status().with_context(|| format!("cannot run {TIME}"))?;
    let wall_s = start.elapsed().as_secs_f64();
    let report = fs::read_to_string(&report_path)
        .with_context(|| format!("{TIME} wrote no report for {}", cmd.program.display()))?;
    let mut sample = parse_time_report(&report)?;
    sample.wall_s = wall_s;
    if status.code().is_none() {
        bail!("{} was killed ({status})", cmd.program.display());
    }
    Ok(sample)
}

fn parse_time_report(report: &str) -> Result<Sample> {
    let mut sample = Sample::default();
    let mut seen = 0;
    for line in report.lines() {
        let Some((key, value)) = line.trim().rsplit_once(": ") else {
            continue;
        };
        let value = value.trim();
        match key {
            "User time (seconds)" => sample.user_s = value.parse()?,
            "System time (seconds)" => sample.sys_s = value.parse()?,
            "Maximum resident set size (kbytes)" => sample.max_rss_kib = value.parse()?,
            "Exit status" => sample.exit_code = value.parse()?,
            _ => continue,
        }
        seen += 1;
    }
    if seen < 4 {
        bail!("unexpected report from {TIME}:\n{report}");
    }
    Ok(sample)
}

/// Writes dirty pages back, then empties the page cache if allowed (root, and
/// a kernel that lets this container do it). Returns whether it was emptied.
pub fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Size of a directory tree: bytes of content and bytes allocated (as `du`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub apparent: u64,
    pub allocated: u64,
}

pub fn usage(path: &Path) -> io::Result<Usage> {
    let meta = fs::symlink_metadata(path)?;
    let mut total = Usage {
        apparent: meta.len(),
        allocated: meta.blocks() * 512,
    };
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            let sub = usage(&entry?.path())?;
            total.apparent += sub.apparent;
            total.allocated += sub.allocated;
        }
    }
    Ok(total)
}

/// The last lines of a log, for error messages.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The share of all CPUs' time spent busy over `window` (this process is
/// idle meanwhile, so it is other work).
fn busy_fraction(window: Duration) -> Option<f64> {
    let read = || -> Option<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let times: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        let idle = times.get(3)? + times.get(4).copied().unwrap_or(0);
        Some((idle, times.iter().sum()))
    };
    let (idle0, total0) = read()?;
    thread::sleep(window);
    let (idle1, total1) = read()?;
    let total = total1.saturating_sub(total0);
    Some(if total == 0 {
        0.0
    } else {
        1.0 - idle1.saturating_sub(idle0) as f64 / total as f64
    })
}

/// Waits, at most `patience`, for other work on the machine to use less
/// than `threshold` of its CPU time; returns the share last seen.
pub fn wait_for_quiet(threshold: f64, patience: Duration) -> Option<f64> {
    let start = Instant::now();
    let mut said = false;
    loop {
        let busy = busy_fraction(Duration::from_millis(500))?;
        if busy <= threshold || start.elapsed() >= patience {
            return Some(busy);
        }
        if !said {
            println!("  (waiting for the machine to quieten: {:.0}% busy)", busy * 100.0);
            said = true;
        }
    }
}
