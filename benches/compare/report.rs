//! The results: a Markdown table per step with snap/peer ratios, the
//! targets as PASS/FAIL lines, the machine's limit, and the same as JSON.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::limit::{self, Limit};
use crate::tools::Kind;
use crate::{mib, Config, Dataset, Outcome, Step, StepResult, ToolRun};

pub struct Report<'a> {
    cfg: &'a Config,
    data: &'a Dataset,
    limit: &'a Limit,
    caches_dropped: bool,
    runs: &'a [ToolRun],
    date: String,
    machine: Machine,
    git: String,
    command: String,
    /// Load averages before and after the race: others' work on the machine adds noise.
    load: (String, String),
    targets: Vec<Target>,
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One of the issue's goals, evaluated: `None` when a peer it needs did not run.
pub struct Target {
    pub goal: &'static str,
    pub pass: Option<bool>,
    pub detail: String,
}

struct Machine {
    cpus: usize,
    memory: String,
    cpu_model: String,
    kernel: String,
}

/// One line per step while the race runs.
pub fn progress_line(kind: Kind, r: &StepResult, warning_only: bool) -> String {
    let mut line = format!(
        "  {:<16} {:<15} wall {:>7.2} s  cpu {:>7.2} s  rss {:>7.1} MiB",
        kind.name(),
        r.step.key(),
        r.sample.wall_s,
        r.sample.cpu_s(),
        r.sample.max_rss_kib as f64 / 1024.0
    );
    if r.bytes > 0 {
        let _ = write!(line, "  {:>6.0} MiB/s", limit::mib_per_s(r.bytes, r.sample.wall_s));
    }
    if let Some(repo) = r.repo {
        let _ = write!(line, "  repo {:.1} MiB", mib(repo.allocated));
    }
    match &r.verified {
        Some(Ok(stats)) => {
            let _ = write!(line, "  verified ({} files)", stats.files);
        }
        Some(Err(e)) => {
            let _ = write!(line, "  RESTORE DIFFERS: {e}");
        }
        None => {}
    }
    if warning_only {
        line += "  (exit 1: warnings)";
    }
    if let Some(busy) = r.busy_before.filter(|b| *b > 0.15) {
        let _ = write!(line, "  (machine {:.0}% busy before)", busy * 100.0);
    }
    line
}

impl<'a> Report<'a> {
    pub fn new(
        cfg: &'a Config,
        data: &'a Dataset,
        limit: &'a Limit,
        caches_dropped: bool,
        runs: &'a [ToolRun],
        load_before: String,
        snap_source: String,
    ) -> Self {
        let mut command = String::new();
        let mut vars: Vec<(String, String)> = env::vars().filter(|(k, _)| k.starts_with("SNAP_BENCH_")).collect();
        vars.sort();
        for (key, value) in vars {
            let _ = write!(command, "{key}={value} ");
        }
        command += "cargo bench --bench compare";
        let mut report = Report {
            cfg,
            data,
            limit,
            caches_dropped,
            runs,
            date: jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
            machine: Machine::probe(),
            load: (load_before, load_average()),
            git: snap_source,
            command,
            targets: Vec::new(),
        };
        report.targets = report.evaluate();
        report
    }

    fn run(&self, kind: Kind) -> Option<&ToolRun> {
        self.runs.iter().find(|r| r.kind == kind)
    }

    fn result(&self, kind: Kind, step: Step) -> Option<&StepResult> {
        self.run(kind).and_then(|r| r.step(step))
    }

    /// Writes compare.md and compare.json (and docs/performance.md when due),
    /// and prints the targets.
    /// `shapes_md` and `shapes_json` are the shapes' results (empty and null when none ran).
    pub fn write(&self, shapes_md: &str, shapes_json: Value) -> Result<()> {
        let out = self.cfg.target_dir.join("bench");
        fs::create_dir_all(&out)?;
        let body = format!(
            "{}{}{shapes_md}",
            self.body(),
            if shapes_md.is_empty() { "" } else { "\n" }
        );
        let md = format!("# snap against restic, borg and rustic\n\n{body}");
        fs::write(out.join("compare.md"), md)?;
        let mut json = self.json();
        json["real_data_shapes"] = shapes_json;
        let json = serde_json::to_string_pretty(&json)?;
        fs::write(out.join("compare.json"), json + "\n")?;
        println!("\n{}", self.targets_md());
        println!(
            "wrote {} and {}",
            out.join("compare.md").display(),
            out.join("compare.json").display()
        );

        let full_run = self.cfg.spec.scale == 1.0 && self.cfg.only.is_none();
        if self.cfg.write_docs.unwrap_or(full_run) {
            let path = self.cfg.root.join("docs/performance.md");
            // The sections other benchmarks fill in (from "## UI and browsing"
            // on, `just bench-ui`) are not this bench's to drop.
            let kept = fs::read_to_string(&path)
                .ok()
                .and_then(|old| old.find("\n## UI and browsing").map(|i| old[i..].to_string()))
                .unwrap_or_default();
            fs::write(&path, self.performance_md(&body) + &kept)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        } else {
            println!(
                "docs/performance.md left alone (not a full-scale run of every tool; SNAP_BENCH_DOCS=1 forces it)"
            );
        }
        Ok(())
    }

    /// snap's and a peer's result of a step, or the target saying which is missing.
    fn pair(&self, goal: &'static str, step: Step, peer: Kind) -> Result<(&StepResult, &StepResult), Target> {
        let Some(snap) = self.result(Kind::Snap, step) else {
            return Err(Target {
                goal,
                pass: Some(false),
                detail: format!("snap's {} failed or did not run", step.key()),
            });
        };
        let Some(other) = self.result(peer, step) else {
            return Err(Target {
                goal,
                pass: None,
                detail: format!("{}'s {} failed or did not run", peer.name(), step.key()),
            });
        };
        Ok((snap, other))
    }

    fn evaluate(&self) -> Vec<Target> {
        // snap's throughput relative to a peer's: the peer's time over snap's (same bytes).
        let speed = |goal, step, peer: Kind, at_least: f64| match self.pair(goal, step, peer) {
            Ok((s, p)) => {
                let x = p.sample.wall_s / s.sample.wall_s;
                Target {
                    goal,
                    pass: Some(x >= at_least),
                    detail: format!(
                        "snap {:.2} s, {} {:.2} s: {x:.2}x its throughput",
                        s.sample.wall_s,
                        peer.name(),
                        p.sample.wall_s
                    ),
                }
            }
            Err(target) => target,
        };
        let time = |goal, step, peer: Kind, at_most: f64| match self.pair(goal, step, peer) {
            Ok((s, p)) => {
                let x = s.sample.wall_s / p.sample.wall_s;
                Target {
                    goal,
                    pass: Some(x <= at_most),
                    detail: format!(
                        "snap {:.2} s, {} {:.2} s: {x:.2}x its time",
                        s.sample.wall_s,
                        peer.name(),
                        p.sample.wall_s
                    ),
                }
            }
            Err(target) => target,
        };
        let mut targets = vec![
            speed(
                "first backup >= 2x restic's throughput",
                Step::Backup,
                Kind::Restic,
                2.0,
            ),
            speed(
                "first backup >= 1.3x rustic's throughput",
                Step::Backup,
                Kind::Rustic,
                1.3,
            ),
            time(
                "unchanged re-backup <= 0.5x restic's time",
                Step::Rebackup,
                Kind::Restic,
                0.5,
            ),
            time("v2 backup <= 0.5x restic's time", Step::BackupV2, Kind::Restic, 0.5),
            speed(
                "full restore >= 2x restic's throughput",
                Step::Restore,
                Kind::Restic,
                2.0,
            ),
        ];

        // The same comparison on several steps: every one must hold.
        let every = |goal, steps: &[Step], figure: fn(&StepResult) -> u64, unit: &str| {
            let mut worst: Option<(Step, u64, u64)> = None;
            let (mut over, mut failed) = (Vec::new(), Vec::new());
            for &step in steps {
                let (s, p) = match self.pair(goal, step, Kind::Restic) {
                    Ok((s, p)) => (figure(s), figure(p)),
                    Err(target) if target.pass.is_none() => return target,
                    Err(_) => {
                        failed.push(step.key());
                        continue;
                    }
                };
                if s > p {
                    over.push(step.key());
                }
                if worst.is_none_or(|(_, ws, wp)| ratio(s, p) > ratio(ws, wp)) {
                    worst = Some((step, s, p));
                }
            }
            let mut detail = match worst {
                Some((step, s, p)) => format!(
                    "highest ratio on {}: snap {:.1} {unit}, restic {:.1} {unit} ({:.2}x)",
                    step.key(),
                    mib(s),
                    mib(p),
                    ratio(s, p)
                ),
                None => "no step to compare".to_owned(),
            };
            if !over.is_empty() {
                let _ = write!(detail, "; above restic on: {}", over.join(", "));
            }
            if !failed.is_empty() {
                let _ = write!(detail, "; snap failed: {}", failed.join(", "));
            }
            Target {
                goal,
                pass: Some(over.is_empty() && failed.is_empty()),
                detail,
            }
        };
        targets.push(every(
            "repository size <= restic's (du, after every backup)",
            &[Step::Backup, Step::Rebackup, Step::BackupV2],
            |r| r.repo.map_or(0, |u| u.allocated),
            "MiB",
        ));
        targets.push(every(
            "peak RSS <= restic's on every step",
            &Step::ALL,
            |r| r.sample.max_rss_kib * 1024,
            "MiB",
        ));

        let goal = "first backup within 3x of the BLAKE3+read limit";
        let limit = self.limit.pipelined_s();
        targets.push(match self.result(Kind::Snap, Step::Backup) {
            Some(s) => Target {
                goal,
                pass: Some(s.sample.wall_s <= 3.0 * limit),
                detail: format!(
                    "snap {:.2} s = {:.2}x the limit of {limit:.2} s (the slower of reading and hashing; \
                     {:.2}x their sum)",
                    s.sample.wall_s,
                    s.sample.wall_s / limit,
                    s.sample.wall_s / self.limit.serial_s()
                ),
            },
            None => Target {
                goal,
                pass: Some(false),
                detail: "snap's backup-v1 failed or did not run".into(),
            },
        });
        targets
    }

    fn targets_md(&self) -> String {
        let mut out = String::new();
        for t in &self.targets {
            let verdict = match t.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "SKIP",
            };
            let _ = writeln!(out, "- **{verdict}** {}: {}", t.goal, t.detail);
        }
        out
    }

    /// Everything but the title: shared by compare.md and docs/performance.md.
    fn body(&self) -> String {
        let mut out = String::new();
        let d = self.data;
        let _ = writeln!(
            out,
            "{} on {} ({} CPUs, {}); snap at {}. Page cache {} before every step.\n",
            self.date,
            self.machine.cpu_model,
            self.machine.cpus,
            self.machine.memory,
            self.git,
            if self.caches_dropped {
                "dropped"
            } else {
                "NOT dropped (not allowed here)"
            }
        );
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "Every figure is the median of {} round(s), the tools interleaved; the wall column gives the \
             fastest and slowest round in brackets.\n",
            self.cfg.rounds
        );

        out += "## Targets\n\n";
        out += &self.targets_md();

        out += "\n## snap/peer ratios\n\n";
        out +=
            "Wall time, CPU time (user+sys) and peak RSS of snap divided by the peer's: below 1 is better for snap. \
                The last column is the peak RSS of snap with a cheap KDF (1 MiB, 1 pass), \
                argon2's 64 MiB being a floor under the default one.\n\n";
        let peers: Vec<Kind> = Kind::ALL.into_iter().filter(|k| k.is_peer()).collect();
        out += "| step |";
        for peer in &peers {
            let _ = write!(out, " vs {} |", peer.name());
        }
        out += " snap RSS without KDF |\n|---|";
        out += &"---|".repeat(peers.len() + 1);
        out.push('\n');
        for step in Step::ALL {
            let _ = write!(out, "| {} |", step.title());
            for &peer in &peers {
                let cell = match (self.result(Kind::Snap, step), self.result(peer, step)) {
                    (Some(s), Some(p)) => format!(
                        " wall {:.2} · CPU {:.2} · RSS {:.2} |",
                        s.sample.wall_s / p.sample.wall_s,
                        s.sample.cpu_s() / p.sample.cpu_s().max(1e-3),
                        ratio(s.sample.max_rss_kib, p.sample.max_rss_kib)
                    ),
                    _ => " — |".to_owned(),
                };
                out += &cell;
            }
            let cheap = self.result(Kind::SnapCheapKdf, step).map_or("—".to_owned(), |r| {
                format!("{:.1} MiB", r.sample.max_rss_kib as f64 / 1024.0)
            });
            let _ = writeln!(out, " {cheap} |");
        }

        for step in Step::ALL {
            let _ = writeln!(out, "\n## {}\n", step.title());
            out += &self.step_table(step);
        }

        out += "\n## Physical limit\n\n";
        let l = self.limit;
        let _ = writeln!(
            out,
            "Over the {} files ({:.1} MiB) of v1, best of three passes: reading them {} runs at {:.0} MiB/s ({:.2} s); \
             BLAKE3 on one thread over the same files from the page cache at {:.0} MiB/s ({:.2} s). \
             A pipeline that reads and hashes every byte needs at least {:.2} s (the slower of the two, \
             {:.0} MiB/s), {:.2} s if they do not overlap.",
            l.files,
            mib(l.bytes),
            if l.caches_dropped {
                "with the page cache dropped"
            } else {
                "(page cache NOT dropped)"
            },
            limit::mib_per_s(l.bytes, l.read_s),
            l.read_s,
            limit::mib_per_s(l.bytes, l.hash_s),
            l.hash_s,
            l.pipelined_s(),
            limit::mib_per_s(l.bytes, l.pipelined_s()),
            l.serial_s()
        );
        if let Some(s) = self.result(Kind::Snap, Step::Backup) {
            let _ = writeln!(
                out,
                "\nsnap's first backup: {:.0} MiB/s, {:.0}% of that limit ({:.2}x its time).",
                limit::mib_per_s(s.bytes, s.sample.wall_s),
                100.0 * l.pipelined_s() / s.sample.wall_s,
                s.sample.wall_s / l.pipelined_s()
            );
        }

        out += "\n## Data set\n\n";
        let _ = writeln!(
            out,
            "Seed {}, scale {}{}. v1: {} files in {} directories, {:.1} MiB: small text-like files of 1-20 KiB in a deep \
             random tree, 4 large text-like and 4 large random files, copies of every 20th small file, and 4 files \
             sharing long runs with one of the random files.",
            self.cfg.spec.seed,
            self.cfg.spec.scale,
            d.generated_s.map_or(String::new(), |s| format!(" (generated in {s:.1} s)")),
            d.v1.files,
            d.v1.dirs,
            mib(d.v1.bytes)
        );
        if let (Some(v2), Some(c)) = (d.v2, d.changes) {
            let _ = writeln!(
                out,
                "\nv2 (the same tree changed in place, so that unchanged files keep inode and ctime): {} files edited \
                 in place, {} appended to, {} added, {} deleted, {} KiB appended to a large text file, {} blocks of \
                 4 KiB overwritten in a large random file; {} files, {:.1} MiB.",
                c.edited,
                c.appended,
                c.added,
                c.deleted,
                c.log_appended_bytes / 1024,
                c.blocks_overwritten,
                v2.files,
                mib(v2.bytes)
            );
        }
        if let Some(sub) = d.sub {
            let _ = writeln!(
                out,
                "\nThe subdirectory restored alone: `{}` ({} files, {:.1} MiB in v2).",
                d.subdir.display(),
                sub.files,
                mib(sub.bytes)
            );
        }

        out += "\n## Machine and tools\n\n";
        let m = &self.machine;
        let _ = writeln!(
            out,
            "- {} CPUs: {}; memory {}; Linux {}; load average {} before the race, {} after",
            m.cpus, m.cpu_model, m.memory, m.kernel, self.load.0, self.load.1
        );
        for run in self.runs {
            let what = match &run.outcome {
                Outcome::Skipped(why) => format!("skipped: {why}"),
                Outcome::Failed(why) => format!("{} — FAILED: {}", run.version, first_line(why)),
                Outcome::Ok if run.failed() => format!("{} — a restore FAILED verification", run.version),
                Outcome::Ok => run.version.clone(),
            };
            let _ = writeln!(out, "- {}: {what}", run.kind.name());
        }
        out += "\nCommands of each step (the password in each tool's variable: SNAP_PASSWORD, RESTIC_PASSWORD, \
                BORG_PASSPHRASE, RUSTIC_PASSWORD):\n\n```\n";
        for run in self.runs.iter().filter(|r| !r.steps.is_empty()) {
            for r in &run.steps {
                let _ = writeln!(out, "{}", r.command);
            }
        }
        out += "```\n";
        out
    }

    fn step_table(&self, step: Step) -> String {
        let mut out = String::from(
            "| tool | wall | MiB/s | CPU | peak RSS | repo (du) | verified | wall s/p | CPU s/p | RSS s/p | repo s/p |\n\
             |---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
        );
        let snap = self.result(Kind::Snap, step);
        for run in self.runs {
            let name = run.kind.name();
            let Some(r) = run.step(step) else {
                let differs = run
                    .steps
                    .iter()
                    .find(|r| r.step == step)
                    .and_then(|r| r.verified.clone());
                let why = match (&run.outcome, differs) {
                    (Outcome::Skipped(why), _) => format!("skipped: {why}"),
                    (Outcome::Failed(why), _) => format!("FAILED: {}", first_line(why)),
                    (Outcome::Ok, Some(Err(e))) => format!("FAILED: the restore differs from its source: {e}"),
                    (Outcome::Ok, _) => "not run".to_owned(),
                };
                let _ = writeln!(out, "| {name} | {why} ||||||||||");
                continue;
            };
            let s = &r.sample;
            let speed = if r.bytes > 0 {
                format!("{:.0}", limit::mib_per_s(r.bytes, s.wall_s))
            } else {
                "—".into()
            };
            let repo = r.repo.map_or("—".into(), |u| format!("{:.1} MiB", mib(u.allocated)));
            let verified = match &r.verified {
                Some(Ok(stats)) => format!("ok, {} files", stats.files),
                Some(Err(e)) => format!("DIFFERS: {}", first_line(e)),
                None => "—".into(),
            };
            let ratios = match snap {
                Some(mine) if run.kind.is_peer() => format!(
                    "{:.2} | {:.2} | {:.2} | {} |",
                    mine.sample.wall_s / s.wall_s,
                    mine.sample.cpu_s() / s.cpu_s().max(1e-3),
                    ratio(mine.sample.max_rss_kib, s.max_rss_kib),
                    match (mine.repo, r.repo) {
                        (Some(a), Some(b)) => format!("{:.2}", ratio(a.allocated, b.allocated)),
                        _ => "—".into(),
                    }
                ),
                _ => "— | — | — | — |".into(),
            };
            let wall = if self.cfg.rounds > 1 {
                format!("{:.2} s ({:.2}–{:.2})", s.wall_s, r.wall_range.0, r.wall_range.1)
            } else {
                format!("{:.2} s", s.wall_s)
            };
            let _ = writeln!(
                out,
                "| {name} | {wall} | {speed} | {:.2} s | {:.1} MiB | {repo} | {verified} | {ratios}",
                s.cpu_s(),
                s.max_rss_kib as f64 / 1024.0
            );
        }
        out
    }

    fn performance_md(&self, body: &str) -> String {
        format!(
            "# Performance\n\n\
             How snap compares with restic, borg and rustic on one machine. This file is written by \
             `cargo bench --bench compare` (`just bench-compare`, source in `benches/compare.rs`); \
             do not edit it by hand, run the bench again.\n\n\
             ## Method\n\n\
             The bench generates a data set of about 1 GiB from a seed (`SNAP_BENCH_SCALE` scales it, \
             `SNAP_BENCH_SEED` changes it) under `target/bench/work` (`SNAP_BENCH_DIR`). Each tool then runs, \
             in its own fresh repository and cache directory, with encryption on and its default compression \
             (snap: zstd auto; restic: repository version 2, compression auto; borg 1.x: `repokey-blake2`, lz4; \
             rustic: its defaults), these steps on a source kept at one path:\n\n\
             1. init;\n\
             2. first backup of v1;\n\
             3. backup of v1 again, unchanged;\n\
             4. backup of v2 (v1 changed in place: about 2% of the files edited, some appended to, added \
             and deleted, a few blocks of one large file overwritten);\n\
             5. restore of the latest snapshot into an empty directory;\n\
             6. restore of one subdirectory into an empty directory.\n\n\
             Each step runs under `/usr/bin/time -v` (wall time measured around it, CPU = user + system, peak \
             RSS = maximum resident set size), after `sync` and, where allowed, dropping the page cache. The \
             repository's size (`du`) is taken after each step that writes it. Before each step the bench waits (up to \
             `SNAP_BENCH_QUIET_WAIT`, 120 s) for other work to leave the CPUs alone; the JSON records how busy \
             the machine was. Every restore is compared with its source, names, sizes and bytes: a full restore \
             that differs fails the tool's whole run, a subdirectory restore that differs fails that step, and \
             neither counts as a result. snap runs a second time with a cheap KDF (`snap init --kdf-memory-kib 1024 \
             --kdf-iterations 1`) to show its working set without argon2's 64 MiB. In the tables, \"s/p\" is \
             snap's figure over the peer's (time, CPU, RSS, size: below 1 favours snap).\n\n\
             ## Shapes of real data\n\n\
             Three more races (issue 11; `SNAP_BENCH_SHAPE` picks among `generated,bigfile,tree,files`, \
             source in `benches/compare/shapes.rs`), each tool in a fresh repository, page cache dropped \
             before every step, restores into a freshly made ext4 on a loop device per restore (made with \
             `mkfs.ext4 -E lazy_itable_init=0,lazy_journal_init=0`, unmounted and deleted after; a directory \
             of the work file system when not root), every restore compared byte for byte:\n\n\
             - **bigfile**: one 2 GiB file (times the scale): slices of 256 KiB-4 MiB of the first 512 MiB of a \
             tar of `~/.cargo/registry/src`, random filler of 256 KiB-2 MiB between them; first backup; 16 \
             scattered 4 KiB writes, then a backup (the repository bytes added are reported); the same \
             file through standard input into a new repository (snap and restic `--stdin`, borg `-`, rustic `-`); \
             restore;\n\
             - **tree**: a copy of `~/.cargo/registry/src` (`SNAP_BENCH_TREE`; below scale 1, its first \
             packages by name up to that share of its bytes); first backup; unchanged re-backup; every \
             file's mtime changed and one file in 500 edited, then a backup; restore;\n\
             - **files**: 100k distinct text-like files of 1-6 KiB, 1000 a directory (`SNAP_BENCH_FILES`, \
             times the scale; 1000000 for 1M); first backup; unchanged; 100 files rewritten; restore.\n\n\
             ### Working set after the KDF\n\n\
             With `SNAP_DEBUG_RSS=1` in its environment, snap prints to stderr \
             `snap-debug-rss: after-key VmRSS=… VmHWM=… hwm-reset=yes` as soon as the repository's key is \
             open, and `snap-debug-rss: exit VmRSS=… VmHWM=…` just before it exits (both from \
             `/proc/self/status`). After the first line it resets the kernel's high-water mark \
             (`/proc/self/clear_refs`, 5), so the exit line's `VmHWM` is the peak after the key: the \
             working set, without argon2's 64 MiB. The reset also hides argon2's peak from a parent's \
             `getrusage`, so the bench's peak RSS for snap is the larger of `/usr/bin/time`'s figure and \
             the first line's `VmHWM`. The shapes set it on every snap step; it is meant for measuring only.\n\n\
             ## Latest run\n\n{}",
            body.replace("\n### ", "\n#### ").replace("\n## ", "\n### ")
        )
    }

    fn json(&self) -> Value {
        let l = self.limit;
        let d = self.data;
        let tree = |t: Option<crate::verify::TreeStats>| {
            t.map(|t| json!({ "files": t.files, "dirs": t.dirs, "bytes": t.bytes }))
        };
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|run| {
                let (outcome, reason) = match &run.outcome {
                    Outcome::Ok => ("ok", None),
                    Outcome::Skipped(why) => ("skipped", Some(why.clone())),
                    Outcome::Failed(why) => ("failed", Some(why.clone())),
                };
                let steps: Vec<Value> = run.steps.iter().map(step_json).collect();
                let rounds: Vec<Value> = run
                    .rounds
                    .iter()
                    .map(|round| Value::Array(round.iter().map(step_json).collect()))
                    .collect();
                json!({
                    "tool": run.kind.slug(),
                    "version": run.version,
                    "outcome": outcome,
                    "reason": reason,
                    "steps": steps,
                    "rounds": rounds,
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|t| json!({ "goal": t.goal, "pass": t.pass, "detail": t.detail }))
            .collect();
        json!({
            "date": self.date,
            "command": self.command,
            "snap_source": self.git,
            "caches_dropped": self.caches_dropped,
            "load_average_before": self.load.0,
            "load_average_after": self.load.1,
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "memory": self.machine.memory,
                "kernel": self.machine.kernel,
            },
            "dataset": {
                "seed": self.cfg.spec.seed,
                "scale": self.cfg.spec.scale,
                "v1": tree(Some(d.v1)),
                "v2": tree(d.v2),
                "subdir": d.subdir.display().to_string(),
                "subdir_v2": tree(d.sub),
                "changes": d.changes.map(|c| json!({
                    "edited": c.edited,
                    "appended": c.appended,
                    "added": c.added,
                    "deleted": c.deleted,
                    "blocks_overwritten": c.blocks_overwritten,
                    "log_appended_bytes": c.log_appended_bytes,
                })),
            },
            "limit": {
                "bytes": l.bytes,
                "files": l.files,
                "read_s": l.read_s,
                "read_cold": l.caches_dropped,
                "blake3_s": l.hash_s,
                "pipelined_s": l.pipelined_s(),
                "serial_s": l.serial_s(),
            },
            "tools": runs,
            "targets": targets,
        })
    }
}

fn step_json(r: &StepResult) -> Value {
    json!({
        "step": r.step.key(),
        "wall_s": r.sample.wall_s,
        "wall_min_s": r.wall_range.0,
        "wall_max_s": r.wall_range.1,
        "user_s": r.sample.user_s,
        "sys_s": r.sample.sys_s,
        "cpu_s": r.sample.cpu_s(),
        "max_rss_kib": r.sample.max_rss_kib,
        "exit_code": r.sample.exit_code,
        "others_busy_before": r.busy_before,
        "bytes": r.bytes,
        "mib_per_s": (r.bytes > 0).then(|| limit::mib_per_s(r.bytes, r.sample.wall_s)),
        "repo_bytes": r.repo.map(|u| u.apparent),
        "repo_du_bytes": r.repo.map(|u| u.allocated),
        "verified": r.verified.as_ref().map(|v| match v {
            Ok(stats) => json!({ "ok": true, "files": stats.files, "bytes": stats.bytes }),
            Err(e) => json!({ "ok": false, "error": e }),
        }),
        "command": r.command,
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / (b as f64).max(1.0)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl Machine {
    fn probe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        };
        let memory = field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or("unknown".into(), |kib| {
                format!("{:.1} GiB", kib as f64 / (1 << 20) as f64)
            });
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory,
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".into()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease").map_or("unknown".into(), |s| s.trim().to_owned()),
        }
    }
}

/// The commit snap is built from, and whether the work tree differs from it.
pub fn git_state(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => {
                format!(
                    "commit {commit} with uncommitted changes in {} files",
                    changes.lines().count()
                )
            }
            _ => format!("commit {commit}"),
        },
        None => "an unknown commit".into(),
    }
}
