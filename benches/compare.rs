//! A reproducible race of snap against restic, borg and rustic.
//!
//! `cargo bench --bench compare` (or `just bench-compare`) generates a data
//! set of about 1 GiB from a seed, then has each tool, one after the other,
//! create a repository, back the data set up, back it up again unchanged,
//! back up a changed version of it, restore it whole and restore one
//! subdirectory; every restore is compared byte for byte with its source.
//! The race runs three rounds (the tools interleaved) and reports medians.
//! Each step runs under `/usr/bin/time -v` with the page cache dropped
//! beforehand where the machine allows it. Results go to
//! `target/bench/compare.md`, `target/bench/compare.json` and (at full scale)
//! `docs/performance.md`.
//!
//! Environment:
//! - `SNAP_BENCH_DIR`: work directory (default `target/bench/work`);
//! - `SNAP_BENCH_SCALE`: size of the data set relative to 1 GiB (default 1; 0.1 for a quick run);
//! - `SNAP_BENCH_ROUNDS`: how many times every tool runs every step (default 3; figures are medians);
//! - `SNAP_BENCH_SEED`: seed of the data set (default 1);
//! - `SNAP_BENCH_TOOLS`: comma-separated subset of `snap,restic,borg,rustic,snap-cheap-kdf`;
//! - `SNAP_BENCH_SNAP`: a snap binary to use instead of building `target/release/snap`;
//! - `SNAP_BENCH_DOCS`: `1` or `0` to rewrite `docs/performance.md` or not
//!   (default: only at scale 1 with every tool run);
//! - `SNAP_BENCH_QUIET_WAIT`: seconds to wait before each step for other work
//!   to leave the CPUs alone (default 120; 0 to never wait);
//! - `SNAP_BENCH_SHAPE`: comma-separated subset of `generated,bigfile,tree,files`
//!   (default: all): the generated race above and the three shapes of real
//!   data of issue 11 (`compare/shapes.rs`: one big file, a real source tree,
//!   many small files), each with its own steps, restores into a freshly made
//!   ext4 per tool;
//! - `SNAP_BENCH_TREE`: the real tree of the `tree` shape (default `~/.cargo/registry/src`;
//!   the scale takes that share of its bytes);
//! - `SNAP_BENCH_FILES`: files of the `files` shape at scale 1 (default 100000).

#[path = "compare/dataset.rs"]
mod dataset;
#[path = "compare/limit.rs"]
mod limit;
#[path = "compare/loopfs.rs"]
mod loopfs;
#[path = "compare/measure.rs"]
mod measure;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/rng.rs"]
mod rng;
#[path = "compare/shape_report.rs"]
mod shape_report;
#[path = "compare/shape_run.rs"]
mod shape_run;
#[path = "compare/shapes.rs"]
mod shapes;
#[path = "compare/tools.rs"]
mod tools;
#[path = "compare/verify.rs"]
mod verify;

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use measure::{Sample, Usage};
use tools::{Kind, Paths, Tool};
use verify::TreeStats;

/// The steps every tool goes through, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Init,
    Backup,
    Rebackup,
    BackupV2,
    Restore,
    RestoreSub,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Init,
        Step::Backup,
        Step::Rebackup,
        Step::BackupV2,
        Step::Restore,
        Step::RestoreSub,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Step::Init => "init",
            Step::Backup => "backup-v1",
            Step::Rebackup => "rebackup-v1",
            Step::BackupV2 => "backup-v2",
            Step::Restore => "restore",
            Step::RestoreSub => "restore-subdir",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Step::Init => "init",
            Step::Backup => "first backup (v1)",
            Step::Rebackup => "unchanged re-backup (v1)",
            Step::BackupV2 => "backup of v2",
            Step::Restore => "full restore (v2)",
            Step::RestoreSub => "restore of one subdirectory (v2)",
        }
    }

    pub fn writes_repo(self) -> bool {
        matches!(self, Step::Init | Step::Backup | Step::Rebackup | Step::BackupV2)
    }
}

pub struct StepResult {
    pub step: Step,
    pub sample: Sample,
    /// Bytes of the data the step backs up or restores (0 for init).
    pub bytes: u64,
    /// The repository after the step (steps that write it).
    pub repo: Option<Usage>,
    /// For restores: the comparison with the source.
    pub verified: Option<Result<TreeStats, String>>,
    /// Share of the machine's CPU time that other work used just before the
    /// step (the most over the rounds).
    pub busy_before: Option<f64>,
    /// Fastest and slowest wall time over the rounds.
    pub wall_range: (f64, f64),
    pub command: String,
}

impl StepResult {
    pub fn differs(&self) -> bool {
        matches!(self.verified, Some(Err(_)))
    }
}

/// How a tool's run ended. A subdirectory restore that differs from its source
/// fails that step only; a full restore that differs fails the whole run.
pub enum Outcome {
    Ok,
    Skipped(String),
    Failed(String),
}

pub struct ToolRun {
    pub kind: Kind,
    pub version: String,
    pub outcome: Outcome,
    /// Each round's results, in order.
    pub rounds: Vec<Vec<StepResult>>,
    /// Per step, the median over the rounds.
    pub steps: Vec<StepResult>,
}

impl ToolRun {
    fn new(kind: Kind, version: String, outcome: Outcome) -> ToolRun {
        ToolRun {
            kind,
            version,
            outcome,
            rounds: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// A step's result, if the run did not fail and the step's restore (if
    /// any) is identical to its source: a wrong result does not count as fast.
    pub fn step(&self, step: Step) -> Option<&StepResult> {
        match self.outcome {
            Outcome::Ok => self.steps.iter().find(|s| s.step == step && !s.differs()),
            _ => None,
        }
    }

    /// Whether the run failed or any of its restores differs from its source.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_)) || self.steps.iter().any(StepResult::differs)
    }
}

pub struct Config {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub work: PathBuf,
    pub spec: dataset::Spec,
    pub only: Option<Vec<String>>,
    pub snap_bin: Option<PathBuf>,
    pub rounds: usize,
    pub write_docs: Option<bool>,
    /// How long to wait, before each step, for other work to stop using the CPUs.
    pub quiet_wait: Duration,
    /// Whether the generated race runs, and which shapes of real data.
    pub generated: bool,
    pub shapes: Vec<shapes::Shape>,
    pub shape_params: shapes::Params,
}

/// Other work may use at most this share of the CPUs when a step starts (if it
/// stops within `quiet_wait`).
const QUIET: f64 = 0.15;

impl Config {
    fn from_env() -> Result<Config> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cwd = env::current_dir()?;
        let target_dir = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| cwd.join(d));
        let work = env::var_os("SNAP_BENCH_DIR").map_or_else(|| target_dir.join("bench/work"), |d| cwd.join(d));
        let number = |key: &str, default: &str| -> Result<f64> {
            let value = env::var(key).unwrap_or_else(|_| default.to_owned());
            value
                .trim()
                .parse()
                .with_context(|| format!("{key}={value} is not a number"))
        };
        let scale = number("SNAP_BENCH_SCALE", "1")?;
        ensure!(scale > 0.0 && scale <= 100.0, "SNAP_BENCH_SCALE must be in (0, 100]");
        let seed = number("SNAP_BENCH_SEED", "1")? as u64;
        let only = env::var("SNAP_BENCH_TOOLS").ok().map(|list| {
            list.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        });
        let write_docs = match env::var("SNAP_BENCH_DOCS").as_deref() {
            Ok("1") => Some(true),
            Ok("0") => Some(false),
            _ => None,
        };
        let (generated, shape_list) =
            shapes::parse_selection(&env::var("SNAP_BENCH_SHAPE").unwrap_or_else(|_| "all".into()))?;
        let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        let tree_src = env::var_os("SNAP_BENCH_TREE").map_or_else(|| home.join(".cargo/registry/src"), |d| cwd.join(d));
        let files = ((number("SNAP_BENCH_FILES", "100000")? * scale).round() as u64).max(1000);
        Ok(Config {
            generated,
            shapes: shape_list,
            shape_params: shapes::Params {
                seed,
                scale,
                tree_src,
                files,
            },
            root,
            target_dir,
            work,
            spec: dataset::Spec { seed, scale },
            only,
            snap_bin: env::var_os("SNAP_BENCH_SNAP").map(|p| cwd.join(p)),
            rounds: (number("SNAP_BENCH_ROUNDS", "3")? as usize).max(1),
            write_docs,
            quiet_wait: Duration::from_secs_f64(number("SNAP_BENCH_QUIET_WAIT", "120")?),
        })
    }

    /// The backed-up directory: one fixed path for every tool and step.
    pub fn src(&self) -> PathBuf {
        self.work.join("src")
    }
}

/// What was backed up: version 1, version 2 and the subdirectory restored alone.
pub struct Dataset {
    pub v1: TreeStats,
    pub v2: Option<TreeStats>,
    pub sub: Option<TreeStats>,
    pub subdir: PathBuf,
    pub changes: Option<dataset::Changes>,
    pub generated_s: Option<f64>,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("compare: FAILED (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("compare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let cfg = Config::from_env()?;
    ensure!(
        Path::new(measure::TIME).exists(),
        "{} is missing (apt-get install time)",
        measure::TIME
    );
    fs::create_dir_all(&cfg.work)?;
    let snap_source = report::git_state(&cfg.root);
    let snap = build_snap(&cfg)?;
    let load_before = report::load_average();
    let may_drop = measure::drop_caches();
    println!(
        "page cache: {}",
        if may_drop {
            "dropped before every step"
        } else {
            "cannot be dropped here (not root?): steps run with a warm cache"
        }
    );

    let shape_out = race_shapes(&cfg, &snap, may_drop)?;
    if !cfg.generated {
        return write_shapes_only(&cfg, shape_out);
    }

    let (v1_dir, mut data) = prepare_dataset(&cfg)?;
    println!(
        "data set v1: {} files, {} directories, {:.1} MiB in {}",
        data.v1.files,
        data.v1.dirs,
        mib(data.v1.bytes),
        v1_dir.display()
    );
    let limit = limit::measure(&v1_dir, may_drop, cfg.quiet_wait).context("measuring the read and BLAKE3 limit")?;
    println!(
        "limit: read {:.0} MiB/s ({}), BLAKE3 on one thread {:.0} MiB/s",
        limit::mib_per_s(limit.bytes, limit.read_s),
        if limit.caches_dropped { "cold" } else { "warm" },
        limit::mib_per_s(limit.bytes, limit.hash_s)
    );

    // Found once; a missing tool is skipped, never faked.
    let mut runs = Vec::new();
    let mut tools = Vec::new();
    for kind in Kind::ALL {
        if cfg
            .only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|s| s == kind.slug()))
        {
            continue;
        }
        match tools::discover(kind, &snap) {
            Err(why) => {
                println!("{:<17} skipped: {why}", kind.name());
                runs.push(ToolRun::new(kind, String::new(), Outcome::Skipped(why)));
            }
            Ok(tool) => {
                println!("{:<17} {}", kind.name(), tool.version);
                runs.push(ToolRun::new(kind, tool.version.clone(), Outcome::Ok));
                tools.push(tool);
            }
        }
    }

    // Rounds interleave the tools, so that a noisy moment on a shared machine
    // does not fall on one tool in every round; each figure is the median.
    for round in 1..=cfg.rounds {
        println!("round {round} of {}", cfg.rounds);
        for tool in &tools {
            let run = runs.iter_mut().find(|r| r.kind == tool.kind).expect("a run per tool");
            if !matches!(run.outcome, Outcome::Ok) {
                continue;
            }
            let mut steps = Vec::new();
            let result = run_steps(&cfg, tool, &v1_dir, &mut data, may_drop, &mut steps);
            let full_restore = steps
                .iter()
                .find(|s| s.step == Step::Restore)
                .and_then(|s| s.verified.clone());
            run.rounds.push(steps);
            if let Err(e) = result {
                run.outcome = Outcome::Failed(format!("round {round}: {e:#}"));
            } else if let Some(Err(e)) = full_restore {
                run.outcome = Outcome::Failed(format!("round {round}: the full restore differs from the source: {e}"));
            }
            if let Outcome::Failed(why) = &run.outcome {
                println!("{:<17} FAILED: {why}", tool.kind.name());
            }
        }
    }
    for run in &mut runs {
        run.steps = aggregate(&run.rounds);
    }
    remove_if_exists(&cfg.src())?;

    let report = report::Report::new(&cfg, &data, &limit, may_drop, &runs, load_before, snap_source);
    report.write(&shape_out.markdown, shape_out.json.clone())?;
    Ok(!runs.iter().any(ToolRun::failed) && shape_out.ok)
}

/// The shapes' part of the report.
struct ShapeOutput {
    markdown: String,
    json: serde_json::Value,
    ok: bool,
}

/// Races the selected tools on each selected shape of real data. The cheap-KDF
/// run of snap is left out unless named: `SNAP_DEBUG_RSS` gives snap's
/// working set after the key directly.
fn race_shapes(cfg: &Config, snap: &Path, may_drop: bool) -> Result<ShapeOutput> {
    if cfg.shapes.is_empty() {
        return Ok(ShapeOutput {
            markdown: String::new(),
            json: serde_json::Value::Null,
            ok: true,
        });
    }
    let (mut tools, mut skipped) = (Vec::new(), Vec::new());
    for kind in Kind::ALL {
        let chosen = match &cfg.only {
            Some(only) => only.iter().any(|s| s == kind.slug()),
            None => kind != Kind::SnapCheapKdf,
        };
        if !chosen {
            continue;
        }
        match tools::discover(kind, snap) {
            Ok(tool) => tools.push(tool),
            Err(why) => {
                println!("{:<17} skipped: {why}", kind.name());
                skipped.push((kind, why));
            }
        }
    }
    let ctx = shape_run::Ctx {
        work: &cfg.work,
        params: &cfg.shape_params,
        rounds: cfg.rounds,
        may_drop,
        quiet_wait: cfg.quiet_wait,
    };
    let mut runs = Vec::new();
    for &shape in &cfg.shapes {
        runs.push(shape_run::race(&ctx, shape, &tools, &skipped)?);
    }
    let targets = shape_report::evaluate(&runs);
    println!("\n{}", shape_report::targets_md(&targets));
    Ok(ShapeOutput {
        markdown: shape_report::markdown(&runs, &targets, cfg.rounds, cfg.shape_params.scale),
        json: shape_report::json(&runs, &targets),
        ok: !runs.iter().flat_map(|r| &r.tools).any(shape_run::ShapeToolRun::failed),
    })
}

/// compare.md and compare.json when only shapes ran (docs/performance.md
/// keeps the last full run of everything).
fn write_shapes_only(cfg: &Config, out: ShapeOutput) -> Result<bool> {
    let dir = cfg.target_dir.join("bench");
    fs::create_dir_all(&dir)?;
    let md = format!(
        "# snap against restic, borg and rustic\n\n{} ({} CPUs); snap at {}.\n\n{}",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        report::git_state(&cfg.root),
        out.markdown
    );
    fs::write(dir.join("compare.md"), md)?;
    fs::write(
        dir.join("compare.json"),
        serde_json::to_string_pretty(&out.json)? + "\n",
    )?;
    println!("wrote {}", dir.join("compare.md").display());
    Ok(out.ok)
}

/// The release snap binary, built now so that it is the current source's,
/// and copied into the work directory: others may rebuild target/release/snap
/// while the race runs.
fn build_snap(cfg: &Config) -> Result<PathBuf> {
    let built = match &cfg.snap_bin {
        Some(bin) => bin.clone(),
        None => build_release(cfg)?,
    };
    let pinned = cfg.work.join("bin/snap");
    fs::create_dir_all(cfg.work.join("bin"))?;
    remove_if_exists(&pinned)?;
    fs::copy(&built, &pinned).with_context(|| format!("copying {}", built.display()))?;
    Ok(pinned)
}

fn build_release(cfg: &Config) -> Result<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("building snap: cargo build --release --bin snap");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "snap"])
        .current_dir(&cfg.root)
        .status()
        .context("cannot run cargo")?;
    ensure!(status.success(), "cargo build --release --bin snap failed");
    let bin = cfg.target_dir.join("release/snap");
    ensure!(bin.is_file(), "{} is missing after the build", bin.display());
    Ok(bin)
}

/// Generates version 1 under `work/data/v1` unless the same one is already there.
fn prepare_dataset(cfg: &Config) -> Result<(PathBuf, Dataset)> {
    let dir = cfg.work.join("data");
    let (v1, stamp) = (dir.join("v1"), dir.join("v1.stamp"));
    let subdir = dataset::subdir(&cfg.spec);
    let mut generated_s = None;
    if fs::read_to_string(&stamp).ok().as_deref() != Some(cfg.spec.stamp().as_str()) || !v1.is_dir() {
        println!(
            "generating the data set (scale {}, seed {})",
            cfg.spec.scale, cfg.spec.seed
        );
        remove_if_exists(&stamp)?;
        remove_if_exists(&v1)?;
        let tmp = dir.join("v1.tmp");
        remove_if_exists(&tmp)?;
        let start = Instant::now();
        dataset::generate_v1(&tmp, &cfg.spec).context("generating the data set")?;
        generated_s = Some(start.elapsed().as_secs_f64());
        fs::rename(&tmp, &v1)?;
        fs::write(&stamp, cfg.spec.stamp())?;
    }
    let v1_stats = verify::stats(&v1)?;
    Ok((
        v1,
        Dataset {
            v1: v1_stats,
            v2: None,
            sub: None,
            subdir,
            changes: None,
            generated_s,
        },
    ))
}

fn run_steps(
    cfg: &Config,
    tool: &Tool,
    v1: &Path,
    data: &mut Dataset,
    may_drop: bool,
    results: &mut Vec<StepResult>,
) -> Result<()> {
    let dir = cfg.work.join(tool.kind.slug());
    remove_if_exists(&dir)?;
    fs::create_dir_all(dir.join("cache"))?;
    fs::create_dir_all(dir.join("logs"))?;
    let paths = Paths {
        repo: dir.join("repo"),
        cache: dir.join("cache"),
        src: cfg.src(),
        sub: cfg.src().join(&data.subdir),
    };
    install_v1(v1, &paths.src)?;

    for step in Step::ALL {
        if step == Step::BackupV2 {
            data.changes = Some(dataset::mutate_to_v2(&paths.src, &cfg.spec).context("making v2")?);
            data.v2 = Some(verify::stats(&paths.src)?);
            data.sub = Some(verify::stats(&paths.sub)?);
        }
        let target = dir.join(format!("restore-{}", step.key()));
        let (cmd, landed) = tool.command(step, &paths, &target);
        if landed.is_some() {
            fs::create_dir_all(&target)?;
        }
        let log = dir.join("logs").join(format!("{}.log", step.key()));
        if may_drop {
            measure::drop_caches();
        } else {
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
        }
        let busy_before = measure::wait_for_quiet(QUIET, cfg.quiet_wait);
        let sample = measure::run_timed(&cmd, &log)?;
        let warning_only = tool.kind == Kind::Borg && sample.exit_code == 1;
        if sample.exit_code != 0 && !warning_only {
            bail!(
                "{} exited with {}:\n{}",
                step.key(),
                sample.exit_code,
                measure::tail(&log, 8)
            );
        }
        let bytes = match step {
            Step::Init => 0,
            Step::Backup | Step::Rebackup => data.v1.bytes,
            Step::BackupV2 | Step::Restore => data.v2.map_or(0, |s| s.bytes),
            Step::RestoreSub => data.sub.map_or(0, |s| s.bytes),
        };
        let repo = if step.writes_repo() {
            Some(measure::usage(&paths.repo)?)
        } else {
            None
        };
        let verified = landed.as_ref().map(|landed| {
            let expected = if step == Step::Restore { &paths.src } else { &paths.sub };
            verify::compare(expected, landed).map_err(|e| {
                // Say so when the data is right but elsewhere than the tool documents.
                if !landed.exists() && verify::compare(expected, &target).is_ok() {
                    format!(
                        "nothing at {}, where the tool documents it; the target directory itself holds an \
                         identical copy",
                        landed.display()
                    )
                } else {
                    e
                }
            })
        });
        if landed.is_some() {
            remove_if_exists(&target)?;
        }
        let result = StepResult {
            step,
            sample,
            bytes,
            repo,
            verified,
            busy_before,
            wall_range: (sample.wall_s, sample.wall_s),
            command: cmd.display(),
        };
        println!("{}", report::progress_line(tool.kind, &result, warning_only));
        results.push(result);
    }
    Ok(())
}

/// Per step, the median of each figure over the rounds that ran it. A
/// restore that differed in any round stays a difference.
fn aggregate(rounds: &[Vec<StepResult>]) -> Vec<StepResult> {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    };
    let mut steps = Vec::new();
    for step in Step::ALL {
        let all: Vec<&StepResult> = rounds
            .iter()
            .filter_map(|r| r.iter().find(|s| s.step == step))
            .collect();
        let Some(first) = all.first() else { continue };
        let of = |f: fn(&StepResult) -> f64| median(all.iter().map(|r| f(r)).collect());
        let walls: Vec<f64> = all.iter().map(|r| r.sample.wall_s).collect();
        let repo = first.repo.map(|_| Usage {
            apparent: of(|r| r.repo.map_or(0, |u| u.apparent) as f64) as u64,
            allocated: of(|r| r.repo.map_or(0, |u| u.allocated) as f64) as u64,
        });
        let verified = all
            .iter()
            .find(|r| r.differs())
            .or(all.last())
            .and_then(|r| r.verified.clone());
        steps.push(StepResult {
            step,
            sample: Sample {
                wall_s: of(|r| r.sample.wall_s),
                user_s: of(|r| r.sample.user_s),
                sys_s: of(|r| r.sample.sys_s),
                max_rss_kib: of(|r| r.sample.max_rss_kib as f64) as u64,
                exit_code: all.iter().map(|r| r.sample.exit_code).max().unwrap_or(0),
            },
            bytes: first.bytes,
            repo,
            verified,
            busy_before: all.iter().filter_map(|r| r.busy_before).max_by(f64::total_cmp),
            wall_range: (
                walls.iter().copied().fold(f64::INFINITY, f64::min),
                walls.iter().copied().fold(0.0, f64::max),
            ),
            command: first.command.clone(),
        });
    }
    steps
}

/// Puts a fresh copy of version 1 at the source path (a copy, since v2 is
/// made by changing it in place).
fn install_v1(v1: &Path, src: &Path) -> Result<()> {
    let fresh = src.with_extension("new");
    remove_if_exists(&fresh)?;
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(v1)
        .arg(&fresh)
        .status()
        .context("cannot run cp")?;
    ensure!(status.success(), "cp -a {} {} failed", v1.display(), fresh.display());
    remove_if_exists(src)?;
    fs::rename(&fresh, src)?;
    Ok(())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
