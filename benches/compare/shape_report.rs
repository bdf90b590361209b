//! The shapes' results: per shape a table of every step and tool, snap/peer
//! ratios, and the issue's targets, each met or missed and by how much.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::mib;
use crate::shape_run::{ShapeResult, ShapeRun};
use crate::shapes::Shape;
use crate::tools::Kind;
use crate::Outcome;

/// One of issue 11's targets, evaluated; `met` is `None` when a figure it needs is missing.
pub struct Target {
    pub goal: String,
    pub met: Option<bool>,
    pub detail: String,
}

/// Wall-time targets: (shape, step, snap's time at most this share of restic's).
const TIME_TARGETS: [(Shape, &str, f64); 11] = [
    (Shape::Bigfile, "backup", 0.45),
    (Shape::Bigfile, "writes", 0.35),
    (Shape::Bigfile, "stdin", 0.45),
    (Shape::Bigfile, "restore", 0.35),
    (Shape::Tree, "backup", 0.40),
    (Shape::Tree, "unchanged", 0.25),
    (Shape::Tree, "v2", 0.40),
    (Shape::Tree, "restore", 0.25),
    (Shape::Files, "backup", 0.40),
    (Shape::Files, "unchanged", 0.30),
    (Shape::Files, "changed", 0.30),
];
const PEAK_RSS_MIB: f64 = 100.0;
const WRITES_ADDED_MIB: f64 = 20.0;
const TREE_REPO_RATIO: f64 = 0.96;

fn snap_and<'a>(run: &'a ShapeRun, key: &str, peer: Kind) -> (Option<&'a ShapeResult>, Option<&'a ShapeResult>) {
    let get = |kind: Kind| run.tools.iter().find(|t| t.kind == kind).and_then(|t| t.step(key));
    (get(Kind::Snap), get(peer))
}

pub fn evaluate(runs: &[ShapeRun]) -> Vec<Target> {
    let mut out = Vec::new();
    for run in runs {
        let shape = run.shape.slug();
        for (s, key, at_most) in TIME_TARGETS {
            if s != run.shape {
                continue;
            }
            let goal = format!("{shape} {key}: snap's time <= {at_most:.2}x restic's");
            out.push(match snap_and(run, key, Kind::Restic) {
                (Some(a), Some(b)) => {
                    let x = a.sample.wall_s / b.sample.wall_s.max(1e-9);
                    Target {
                        goal,
                        met: Some(x <= at_most),
                        detail: format!(
                            "snap {:.2} s, restic {:.2} s: {x:.2}x{}",
                            a.sample.wall_s,
                            b.sample.wall_s,
                            by_how_much(x, at_most)
                        ),
                    }
                }
                (a, _) => missing(goal, a.is_none()),
            });
        }
        // Memory: snap's peak (argon2's 64 MiB included) on every step.
        let goal = format!("{shape}: snap's peak RSS <= {PEAK_RSS_MIB:.0} MiB on every step");
        let snap = run.tools.iter().find(|t| t.kind == Kind::Snap);
        out.push(match snap {
            Some(t) if !t.steps.is_empty() && !t.failed() => {
                let worst = t.steps.iter().max_by_key(|r| r.sample.max_rss_kib).expect("steps");
                let peak = worst.sample.max_rss_kib as f64 / 1024.0;
                Target {
                    goal,
                    met: Some(peak <= PEAK_RSS_MIB),
                    detail: format!(
                        "highest on {}: {peak:.1} MiB{}",
                        worst.step.key,
                        by_how_much(peak, PEAK_RSS_MIB)
                    ),
                }
            }
            _ => missing(goal, true),
        });
        if run.shape == Shape::Bigfile {
            let goal = format!("bigfile writes: <= {WRITES_ADDED_MIB:.0} MiB added to snap's repository");
            out.push(match snap_and(run, "writes", Kind::Restic).0.and_then(|r| r.added) {
                Some(added) => {
                    let m = added as f64 / (1 << 20) as f64;
                    let peer = snap_and(run, "writes", Kind::Restic)
                        .1
                        .and_then(|r| r.added)
                        .map_or(String::new(), |b| {
                            format!(" (restic: {:.1} MiB)", b as f64 / (1 << 20) as f64)
                        });
                    Target {
                        goal,
                        met: Some(m <= WRITES_ADDED_MIB),
                        detail: format!("{m:.1} MiB{peer}{}", by_how_much(m, WRITES_ADDED_MIB)),
                    }
                }
                None => missing(goal, true),
            });
        }
        if run.shape == Shape::Tree {
            let goal = format!("tree: repository size <= {TREE_REPO_RATIO:.2}x restic's (du, after v2)");
            out.push(match snap_and(run, "v2", Kind::Restic) {
                (Some(a), Some(b)) => {
                    let (sa, sb) = (a.repo.map_or(0, |u| u.allocated), b.repo.map_or(0, |u| u.allocated));
                    let x = sa as f64 / (sb as f64).max(1.0);
                    Target {
                        goal,
                        met: Some(x <= TREE_REPO_RATIO),
                        detail: format!(
                            "snap {:.1} MiB, restic {:.1} MiB: {x:.3}x{}",
                            mib(sa),
                            mib(sb),
                            by_how_much(x, TREE_REPO_RATIO)
                        ),
                    }
                }
                (a, _) => missing(goal, a.is_none()),
            });
        }
    }
    out
}

fn by_how_much(value: f64, limit: f64) -> String {
    if value <= limit {
        String::new()
    } else {
        format!(", {:.0}% over the target", 100.0 * (value / limit - 1.0))
    }
}

fn missing(goal: String, snap_missing: bool) -> Target {
    Target {
        goal,
        met: if snap_missing { Some(false) } else { None },
        detail: if snap_missing {
            "snap's step failed or did not run".into()
        } else {
            "restic's step failed or did not run".into()
        },
    }
}

pub fn targets_md(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let verdict = match t.met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "SKIP",
        };
        let _ = writeln!(out, "- **{verdict}** {}: {}", t.goal, t.detail);
    }
    out
}

fn mib_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The shapes' section of compare.md (headings at level 2).
pub fn markdown(runs: &[ShapeRun], targets: &[Target], rounds: usize, scale: f64) -> String {
    let mut out = String::from("## Shapes of real data (issue 11)\n\n");
    let _ = writeln!(
        out,
        "Scale {scale}; every figure is the median of {rounds} round(s), the tools interleaved. \
         Page cache dropped before every step. \"after key\" is snap's peak RSS from the moment its key is \
         open to its exit (`SNAP_DEBUG_RSS=1`: argon2's 64 MiB left out); \"peak RSS\" includes it. \
         Ratios are snap's wall time over the peer's (below 1 favours snap). The targets are the issue's, \
         meant for scale 1.\n"
    );
    out += "### Targets\n\n";
    out += &targets_md(targets);
    for run in runs {
        let _ = writeln!(out, "\n### {} (`{}`)\n", run.shape.title(), run.shape.slug());
        let _ = writeln!(
            out,
            "{}; {} files, {} directories, {:.1} MiB. Second version: {}. Restores: {}.\n",
            run.description,
            run.stats.files,
            run.stats.dirs,
            mib(run.stats.bytes),
            if run.change.is_empty() { "not made" } else { &run.change },
            run.restore_fs
        );
        let peers: Vec<Kind> = run.tools.iter().map(|t| t.kind).filter(|k| k.is_peer()).collect();
        out += "| step | snap wall |";
        for p in &peers {
            let _ = write!(out, " snap/{} |", p.name());
        }
        out += "\n|---|---:|";
        out += &"---:|".repeat(peers.len());
        out.push('\n');
        for step in run.shape.steps() {
            let snap = run
                .tools
                .iter()
                .find(|t| t.kind == Kind::Snap)
                .and_then(|t| t.step(step.key));
            let _ = write!(
                out,
                "| {} | {} |",
                step.title,
                snap.map_or("—".into(), |s| format!("{:.2} s", s.sample.wall_s))
            );
            for &p in &peers {
                let other = run.tools.iter().find(|t| t.kind == p).and_then(|t| t.step(step.key));
                match (snap, other) {
                    (Some(a), Some(b)) => {
                        let _ = write!(out, " {:.2} |", a.sample.wall_s / b.sample.wall_s.max(1e-9));
                    }
                    _ => out += " — |",
                }
            }
            out.push('\n');
        }
        out += "\n| step | tool | wall | user | sys | peak RSS | after key | repo (du) | added | verified |\n\
                |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
        for step in run.shape.steps() {
            for t in &run.tools {
                let Some(r) = t.steps.iter().find(|r| r.step.key == step.key) else {
                    let why = match &t.outcome {
                        // Said once, under the table.
                        Outcome::Skipped(_) => continue,
                        Outcome::Failed(why) => format!("FAILED: {}", why.lines().next().unwrap_or("")),
                        Outcome::Ok => "not run".into(),
                    };
                    let _ = writeln!(out, "| {} | {} | {why} ||||||||", step.key, t.kind.name());
                    continue;
                };
                let s = &r.sample;
                let wall = if rounds > 1 {
                    format!("{:.2} s ({:.2}–{:.2})", s.wall_s, r.wall_range.0, r.wall_range.1)
                } else {
                    format!("{:.2} s", s.wall_s)
                };
                let verified = match &r.verified {
                    Some(Ok(v)) => format!("ok, {} files", v.files),
                    Some(Err(e)) => format!("DIFFERS: {}", e.lines().next().unwrap_or("")),
                    None => "—".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {wall} | {:.2} s | {:.2} s | {} | {} | {} | {} | {verified} |",
                    step.key,
                    t.kind.name(),
                    s.user_s,
                    s.sys_s,
                    mib_kib(s.max_rss_kib),
                    r.rss.map_or("—".into(), |x| mib_kib(x.working_set)),
                    r.repo.map_or("—".into(), |u| format!("{:.1} MiB", mib(u.allocated))),
                    r.added
                        .map_or("—".into(), |a| format!("{:+.1} MiB", a as f64 / (1 << 20) as f64)),
                );
            }
        }
        for t in &run.tools {
            if let Outcome::Skipped(why) = &t.outcome {
                let _ = writeln!(out, "\n{} skipped: {why}", t.kind.name());
            }
        }
        if run.shape == Shape::Files {
            if let Some(r) = run
                .tools
                .iter()
                .find(|t| t.kind == Kind::Snap)
                .and_then(|t| t.step("backup"))
                .and_then(|r| r.rss)
            {
                let _ = writeln!(
                    out,
                    "\nsnap's working set after the key, first backup: {} for {} files ({:.0} bytes a file). \
                     Whether it is flat in the file count takes two runs, e.g. SNAP_BENCH_FILES=50000 and 1000000.",
                    mib_kib(r.working_set),
                    run.stats.files,
                    r.working_set as f64 * 1024.0 / run.stats.files.max(1) as f64
                );
            }
        }
    }
    out += "\nCommands (of every step, tool by tool):\n\n```\n";
    for run in runs {
        for t in run.tools.iter().filter(|t| !t.steps.is_empty()) {
            for r in &t.steps {
                let _ = writeln!(out, "{}", r.command);
            }
        }
    }
    out += "```\n";
    out
}

pub fn json(runs: &[ShapeRun], targets: &[Target]) -> Value {
    let shapes: Vec<Value> = runs
        .iter()
        .map(|run| {
            let tools: Vec<Value> = run
                .tools
                .iter()
                .map(|t| {
                    let (outcome, reason) = match &t.outcome {
                        Outcome::Ok => ("ok", None),
                        Outcome::Skipped(why) => ("skipped", Some(why.clone())),
                        Outcome::Failed(why) => ("failed", Some(why.clone())),
                    };
                    let step = |r: &ShapeResult| {
                        json!({
                            "step": r.step.key,
                            "wall_s": r.sample.wall_s,
                            "wall_min_s": r.wall_range.0,
                            "wall_max_s": r.wall_range.1,
                            "user_s": r.sample.user_s,
                            "sys_s": r.sample.sys_s,
                            "max_rss_kib": r.sample.max_rss_kib,
                            "after_key_rss_kib": r.rss.map(|x| x.after_key_rss),
                            "kdf_peak_kib": r.rss.map(|x| x.after_key_hwm),
                            "working_set_after_key_kib": r.rss.map(|x| x.working_set),
                            "bytes": r.bytes,
                            "repo_du_bytes": r.repo.map(|u| u.allocated),
                            "repo_added_bytes": r.added,
                            "verified": r.verified.as_ref().map(|v| match v {
                                Ok(s) => json!({ "ok": true, "files": s.files, "bytes": s.bytes }),
                                Err(e) => json!({ "ok": false, "error": e }),
                            }),
                            "command": r.command,
                        })
                    };
                    json!({
                        "tool": t.kind.slug(),
                        "version": t.version,
                        "outcome": outcome,
                        "reason": reason,
                        "steps": t.steps.iter().map(step).collect::<Vec<_>>(),
                        "rounds": t.rounds.iter().map(|r| r.iter().map(step).collect::<Vec<_>>()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "shape": run.shape.slug(),
                "description": run.description,
                "change": run.change,
                "files": run.stats.files,
                "dirs": run.stats.dirs,
                "bytes": run.stats.bytes,
                "restore_fs": run.restore_fs,
                "tools": tools,
            })
        })
        .collect();
    json!({
        "shapes": shapes,
        "targets": targets
            .iter()
            .map(|t| json!({ "goal": t.goal, "met": t.met, "detail": t.detail }))
            .collect::<Vec<_>>(),
    })
}
