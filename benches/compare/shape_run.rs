//! Racing the tools on one shape: each tool, in a fresh repository, runs the
//! shape's steps with the page cache dropped before each; restores go into a
//! freshly made ext4 and are compared with the source byte for byte.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::loopfs::{self, LoopFs};
use crate::measure::{self, Sample, Usage};
use crate::shapes::{self, Action, Data, Params, Shape, ShapeStep};
use crate::tools::{Kind, Paths, Tool};
use crate::verify::{self, TreeStats};
use crate::{remove_if_exists, Outcome, Step, QUIET};

/// What snap said of its memory with `SNAP_DEBUG_RSS=1` (KiB).
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugRss {
    /// RSS right after the key was opened (argon2's memory already freed).
    pub after_key_rss: u64,
    /// The peak up to then: argon2's.
    pub after_key_hwm: u64,
    /// The peak from the key's opening to the exit (the high-water mark was reset at the key).
    pub working_set: u64,
}

/// Reads snap's `snap-debug-rss:` lines from a step's log.
pub fn parse_debug_rss(log: &str) -> Option<DebugRss> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let key_line = log.lines().find(|l| l.starts_with("snap-debug-rss: after-key"))?;
    let exit_line = log.lines().find(|l| l.starts_with("snap-debug-rss: exit"))?;
    if !key_line.contains("hwm-reset=yes") {
        return None;
    }
    Some(DebugRss {
        after_key_rss: field(key_line, "VmRSS=")?,
        after_key_hwm: field(key_line, "VmHWM=")?,
        working_set: field(exit_line, "VmHWM=")?,
    })
}

pub struct ShapeResult {
    pub step: ShapeStep,
    pub sample: Sample,
    pub bytes: u64,
    pub repo: Option<Usage>,
    /// Bytes the step added to the repository (du).
    pub added: Option<i64>,
    pub verified: Option<Result<TreeStats, String>>,
    pub rss: Option<DebugRss>,
    pub wall_range: (f64, f64),
    pub command: String,
}

impl ShapeResult {
    pub fn differs(&self) -> bool {
        matches!(self.verified, Some(Err(_)))
    }
}

pub struct ShapeToolRun {
    pub kind: Kind,
    pub version: String,
    pub outcome: Outcome,
    pub rounds: Vec<Vec<ShapeResult>>,
    pub steps: Vec<ShapeResult>,
}

impl ShapeToolRun {
    /// A step's median result, if the run did not fail and its restore is right.
    pub fn step(&self, key: &str) -> Option<&ShapeResult> {
        match self.outcome {
            Outcome::Ok => self.steps.iter().find(|s| s.step.key == key && !s.differs()),
            _ => None,
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_)) || self.steps.iter().any(ShapeResult::differs)
    }
}

pub struct ShapeRun {
    pub shape: Shape,
    pub description: String,
    pub change: String,
    pub stats: TreeStats,
    /// Where restores went: a fresh ext4 per restore, or why not.
    pub restore_fs: String,
    pub tools: Vec<ShapeToolRun>,
}

pub struct Ctx<'a> {
    pub work: &'a Path,
    pub params: &'a Params,
    pub rounds: usize,
    pub may_drop: bool,
    pub quiet_wait: Duration,
}

/// Races `tools` on `shape`; `skipped` are the tools that were not found.
pub fn race(ctx: &Ctx, shape: Shape, tools: &[Tool], skipped: &[(Kind, String)]) -> Result<ShapeRun> {
    let dir = ctx.work.join("shapes").join(shape.slug());
    println!("shape {}: making the data", shape.slug());
    let data = shapes::prepare(shape, &dir.join("data"), ctx.params)
        .with_context(|| format!("making the data of shape {}", shape.slug()))?;
    let stats = verify::stats(&data.src)?;
    println!(
        "shape {}: {}; {} files, {:.1} MiB",
        shape.slug(),
        data.description,
        stats.files,
        crate::mib(stats.bytes)
    );
    let no_loop = loopfs::unavailable(&dir);
    let mut run = ShapeRun {
        shape,
        description: data.description.clone(),
        change: String::new(),
        stats,
        restore_fs: no_loop
            .clone()
            .unwrap_or_else(|| "a freshly made ext4 on a loop device for every restore".into()),
        tools: Vec::new(),
    };
    for (kind, why) in skipped {
        run.tools.push(ShapeToolRun {
            kind: *kind,
            version: String::new(),
            outcome: Outcome::Skipped(why.clone()),
            rounds: Vec::new(),
            steps: Vec::new(),
        });
    }
    for tool in tools {
        run.tools.push(ShapeToolRun {
            kind: tool.kind,
            version: tool.version.clone(),
            outcome: Outcome::Ok,
            rounds: Vec::new(),
            steps: Vec::new(),
        });
    }
    for round in 1..=ctx.rounds {
        println!("shape {}: round {round} of {}", shape.slug(), ctx.rounds);
        for tool in tools {
            let entry = run
                .tools
                .iter_mut()
                .find(|r| r.kind == tool.kind)
                .expect("a run per tool");
            if !matches!(entry.outcome, Outcome::Ok) {
                continue;
            }
            let mut results = Vec::new();
            let outcome = run_tool(
                ctx,
                shape,
                &data,
                &dir,
                tool,
                no_loop.is_none(),
                &mut results,
                &mut run.change,
            );
            entry.rounds.push(results);
            if let Err(e) = outcome {
                entry.outcome = Outcome::Failed(format!("round {round}: {e:#}"));
                println!("  {:<16} FAILED: {e:#}", tool.kind.name());
            }
        }
    }
    for entry in &mut run.tools {
        entry.steps = aggregate(shape, &entry.rounds);
    }
    run.tools.sort_by_key(|t| Kind::ALL.iter().position(|k| *k == t.kind));
    remove_if_exists(&dir)?;
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
fn run_tool(
    ctx: &Ctx,
    shape: Shape,
    data: &Data,
    dir: &Path,
    tool: &Tool,
    use_loop: bool,
    results: &mut Vec<ShapeResult>,
    change: &mut String,
) -> Result<()> {
    let tdir = dir.join(tool.kind.slug());
    remove_if_exists(&tdir)?;
    for sub in ["cache", "logs", "stdin-cache"] {
        fs::create_dir_all(tdir.join(sub))?;
    }
    let paths = Paths {
        repo: tdir.join("repo"),
        cache: tdir.join("cache"),
        src: data.src.clone(),
        sub: data.src.clone(),
    };
    let mut undo = None;
    let result = (|| -> Result<()> {
        for step in shape.steps() {
            if step.action == Action::Tool(Step::BackupV2) {
                std::thread::sleep(shapes::SETTLE);
                let (u, what) = shapes::change(shape, data, ctx.params)?;
                undo = Some(u);
                *change = what;
                std::thread::sleep(shapes::SETTLE);
            }
            results.push(run_step(ctx, data, &tdir, tool, &paths, *step, use_loop)?);
        }
        Ok(())
    })();
    if let Some(u) = undo {
        shapes::undo(u).context("undoing the shape's change")?;
    }
    remove_if_exists(&tdir)?;
    result
}

fn run_step(
    ctx: &Ctx,
    data: &Data,
    tdir: &Path,
    tool: &Tool,
    paths: &Paths,
    step: ShapeStep,
    use_loop: bool,
) -> Result<ShapeResult> {
    let log = tdir.join("logs").join(format!("{}.log", step.key));
    let mut mounted: Option<LoopFs> = None;
    let mut landed: Option<PathBuf> = None;
    let mut repo_path = paths.repo.clone();
    let mut cmd = match step.action {
        Action::Stdin => {
            // A repository of its own: a new one is what a first dump meets,
            // and the latest snapshot of the main one stays the file's.
            let stdin_paths = Paths {
                repo: tdir.join("stdin-repo"),
                cache: tdir.join("stdin-cache"),
                src: paths.src.clone(),
                sub: paths.sub.clone(),
            };
            let (init, _) = tool.command(Step::Init, &stdin_paths, tdir);
            let sample = measure::run_timed(&init, &tdir.join("logs/stdin-init.log"))?;
            if sample.exit_code != 0 {
                bail!("init of the stdin repository exited with {}", sample.exit_code);
            }
            repo_path = stdin_paths.repo.clone();
            let file = data.file.as_ref().context("the stdin step needs the big file")?;
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("disk.img");
            tool.stdin_command(&stdin_paths, file, name)
        }
        Action::Tool(Step::Restore) => {
            let target = if use_loop {
                let stats = verify::stats(&paths.src)?;
                let (size, inodes) = loopfs::size_for(stats.bytes, stats.files, stats.dirs);
                let fs = LoopFs::create(&tdir.join("restore.img"), &tdir.join("mnt"), size, inodes)
                    .context("making the restore's file system")?;
                let target = fs.path().join("restore");
                mounted = Some(fs);
                target
            } else {
                tdir.join("restore")
            };
            fs::create_dir_all(&target)?;
            let (cmd, at) = tool.command(Step::Restore, paths, &target);
            landed = at;
            cmd
        }
        Action::Tool(other) => tool.command(other, paths, tdir).0,
    };
    let is_snap = matches!(tool.kind, Kind::Snap | Kind::SnapCheapKdf);
    if is_snap {
        cmd = cmd.env("SNAP_DEBUG_RSS", "1");
    }
    let before = if repo_path.exists() {
        Some(measure::usage(&repo_path)?)
    } else {
        None
    };
    if ctx.may_drop {
        measure::drop_caches();
    } else {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
    }
    measure::wait_for_quiet(QUIET, ctx.quiet_wait);
    let mut sample = measure::run_timed(&cmd, &log)?;
    let warning_only = tool.kind == Kind::Borg && sample.exit_code == 1;
    if sample.exit_code != 0 && !warning_only {
        bail!(
            "{} exited with {}:\n{}",
            step.key,
            sample.exit_code,
            measure::tail(&log, 8)
        );
    }
    let rss = if is_snap {
        parse_debug_rss(&fs::read_to_string(&log).unwrap_or_default())
    } else {
        None
    };
    // The reset at the key hides argon2's peak from getrusage: the whole
    // run's peak is the larger of the two.
    if let Some(r) = rss {
        sample.max_rss_kib = sample.max_rss_kib.max(r.after_key_hwm);
    }
    let writes = step.action != Action::Tool(Step::Restore);
    let repo = if writes {
        Some(measure::usage(&repo_path)?)
    } else {
        None
    };
    let added = repo.map(|after| after.allocated as i64 - before.map_or(0, |b| b.allocated as i64));
    let verified = landed.as_ref().map(|at| verify::compare(&paths.src, at));
    drop(mounted);
    let bytes = if step.action == Action::Tool(Step::Init) {
        0
    } else {
        verify::stats(&paths.src)?.bytes
    };
    let result = ShapeResult {
        step,
        sample,
        bytes,
        repo,
        added,
        verified,
        rss,
        wall_range: (sample.wall_s, sample.wall_s),
        command: cmd.display(),
    };
    println!("{}", progress_line(tool.kind, &result, warning_only));
    Ok(result)
}

fn progress_line(kind: Kind, r: &ShapeResult, warning_only: bool) -> String {
    let mut line = format!(
        "  {:<16} {:<10} wall {:>7.2} s  user {:>6.2}  sys {:>6.2}  peak {:>6.1} MiB",
        kind.name(),
        r.step.key,
        r.sample.wall_s,
        r.sample.user_s,
        r.sample.sys_s,
        r.sample.max_rss_kib as f64 / 1024.0
    );
    if let Some(rss) = r.rss {
        line += &format!("  after key {:.1} MiB", rss.working_set as f64 / 1024.0);
    }
    if let Some(added) = r.added {
        line += &format!("  +{:.1} MiB", added as f64 / (1 << 20) as f64);
    }
    match &r.verified {
        Some(Ok(stats)) => line += &format!("  verified ({} files)", stats.files),
        Some(Err(e)) => line += &format!("  RESTORE DIFFERS: {e}"),
        None => {}
    }
    if warning_only {
        line += "  (exit 1: warnings)";
    }
    line
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Per step, the median of each figure over the rounds; a restore that
/// differed in any round stays a difference.
fn aggregate(shape: Shape, rounds: &[Vec<ShapeResult>]) -> Vec<ShapeResult> {
    let mut out = Vec::new();
    for step in shape.steps() {
        let all: Vec<&ShapeResult> = rounds
            .iter()
            .filter_map(|r| r.iter().find(|s| s.step.key == step.key))
            .collect();
        let Some(first) = all.first() else { continue };
        let of = |f: &dyn Fn(&ShapeResult) -> f64| median(all.iter().map(|r| f(r)).collect());
        let walls: Vec<f64> = all.iter().map(|r| r.sample.wall_s).collect();
        out.push(ShapeResult {
            step: *step,
            sample: Sample {
                wall_s: of(&|r| r.sample.wall_s),
                user_s: of(&|r| r.sample.user_s),
                sys_s: of(&|r| r.sample.sys_s),
                max_rss_kib: of(&|r| r.sample.max_rss_kib as f64) as u64,
                exit_code: all.iter().map(|r| r.sample.exit_code).max().unwrap_or(0),
            },
            bytes: first.bytes,
            repo: first.repo.map(|_| Usage {
                apparent: of(&|r| r.repo.map_or(0, |u| u.apparent) as f64) as u64,
                allocated: of(&|r| r.repo.map_or(0, |u| u.allocated) as f64) as u64,
            }),
            added: first.added.map(|_| of(&|r| r.added.unwrap_or(0) as f64) as i64),
            verified: all
                .iter()
                .find(|r| r.differs())
                .or(all.last())
                .and_then(|r| r.verified.clone()),
            rss: first.rss.map(|_| DebugRss {
                after_key_rss: of(&|r| r.rss.map_or(0, |x| x.after_key_rss) as f64) as u64,
                after_key_hwm: of(&|r| r.rss.map_or(0, |x| x.after_key_hwm) as f64) as u64,
                working_set: of(&|r| r.rss.map_or(0, |x| x.working_set) as f64) as u64,
            }),
            wall_range: (
                walls.iter().copied().fold(f64::INFINITY, f64::min),
                walls.iter().copied().fold(0.0, f64::max),
            ),
            command: first.command.clone(),
        });
    }
    out
}
