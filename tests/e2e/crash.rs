//! Random kills of real processes: `create`, `forget --prune`, `prune` and
//! `key passwd` are started on a copy of a prepared repository and killed
//! with SIGKILL after a random delay, from 0 to the command's measured
//! duration. After every kill:
//!
//! - `verify --read-data` (with a fresh index cache) exits 0: only notices,
//!   i.e. data no index or snapshot uses, are allowed;
//! - every snapshot that existed before (unless the command removes it) and
//!   every snapshot the command wrote restores bit-exact, against a copy of
//!   the source state it was taken of;
//! - after `key passwd`, the old or the new password opens the repository;
//! - the same command, run again, completes, and the repository verifies.
//!
//! Three kills per command by default; the ignored `torture_*` variants do
//! `SNAP_TORTURE_N` (default 50). `SNAP_TORTURE_SEED` picks the delays. A
//! failing iteration's directory is kept under the system temporary directory
//! and named in the output.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::util::*;

/// The password `key passwd` sets (given as `SNAP_NEW_PASSWORD`).
const NEW_PASSWORD: &str = "the new password";
/// The password the follow-up `key passwd` sets.
const THIRD_PASSWORD: &str = "the third password";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    /// `create` of a ~20 MiB tree into a repository with one small snapshot.
    Create,
    /// `forget --keep-last 1 --prune` with three snapshots.
    ForgetPrune,
    /// `prune` after the first of three snapshots was forgotten.
    Prune,
    /// `key passwd`.
    Passwd,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::ForgetPrune => "forget --prune",
            Op::Prune => "prune",
            Op::Passwd => "key passwd",
        }
    }

    fn command(self, snap: &Snap, src: &Path, new_password: &str) -> Command {
        let mut cmd = snap.command();
        match self {
            Op::Create => cmd.args(["create", "--json", s(src)]),
            Op::ForgetPrune => cmd.args(["forget", "--keep-last", "1", "--prune"]),
            Op::Prune => cmd.args(["prune"]),
            Op::Passwd => cmd.args(["key", "passwd"]).env("SNAP_NEW_PASSWORD", new_password),
        };
        cmd
    }
}

/// A prepared repository and the source states of its snapshots.
struct Scenario {
    op: Op,
    base: Snap,
    /// The path every snapshot was taken of.
    src: PathBuf,
    /// (snapshot id, copy of the source it holds), oldest first.
    states: Vec<(String, PathBuf)>,
    /// The source as it is now: what a snapshot written by `create` holds.
    current: PathBuf,
}

impl Scenario {
    fn new(op: Op) -> Scenario {
        match op {
            Op::Create => create_scenario(),
            Op::ForgetPrune | Op::Prune => history_scenario(op),
            Op::Passwd => passwd_scenario(),
        }
    }

    fn expected(&self, id: &str) -> Option<&Path> {
        self.states
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, copy)| copy.as_path())
    }
}

/// Overwrites `count` random 8 KiB ranges of a file with random bytes.
fn scribble(path: &Path, count: usize, seed: u64) {
    let mut bytes = fs::read(path).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..count {
        let len = 8192.min(bytes.len());
        let at = rng.random_range(0..=bytes.len() - len);
        rng.fill(&mut bytes[at..at + len]);
    }
    fs::write(path, bytes).unwrap();
}

fn save_state(snap: &Snap, src: &Path, name: &str) -> PathBuf {
    let copy = snap.scratch().join(name);
    copy_dir(src, &copy);
    copy
}

fn id_of(created: &Value) -> String {
    created["id"].as_str().expect("id").to_string()
}

fn small_pack_repo() -> Snap {
    Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"])
}

/// One snapshot of a small tree (state 0), then the source grows by 18 MiB
/// of new data and a changed file: the state `create` is killed backing up.
fn create_scenario() -> Scenario {
    let base = small_pack_repo();
    let src = base.scratch().join("src");
    fs::create_dir_all(src.join("keep/sub")).unwrap();
    write_random_file(&src.join("keep/a.bin"), MIB, 11);
    write_random_file(&src.join("keep/sub/b.bin"), MIB / 2, 12);
    for i in 0..20 {
        fs::write(
            src.join(format!("keep/notes{i}.txt")),
            format!("note {i}\n").repeat(100 * (i + 1)),
        )
        .unwrap();
    }
    set_tree_times(&src);
    let id = id_of(&base.create(&[s(&src)]));
    let state0 = save_state(&base, &src, "state0");

    fs::create_dir_all(src.join("big/deeper")).unwrap();
    for i in 0..6 {
        let dir = if i % 2 == 0 { "big" } else { "big/deeper" };
        write_random_file(&src.join(format!("{dir}/part{i}.bin")), 3 * MIB, 100 + i);
    }
    scribble(&src.join("keep/a.bin"), 3, 13);
    set_tree_times(&src);
    let current = save_state(&base, &src, "state1");
    Scenario {
        op: Op::Create,
        base,
        src,
        states: vec![(id, state0)],
        current,
    }
}

/// Generation `g` of a source whose snapshots share some data, differ in
/// scattered chunks of one file (so prune repacks) and each own a file.
fn write_generation(src: &Path, g: u64) {
    if g == 0 {
        fs::create_dir_all(src.join("common")).unwrap();
        write_random_file(&src.join("common/c0.bin"), MIB, 1);
        fs::write(src.join("common/c1.txt"), "shared text\n".repeat(20_000)).unwrap();
        write_random_file(&src.join("mixed.bin"), 2 * MIB, 2);
    } else {
        let _ = fs::remove_dir_all(src.join(format!("gen{}", g - 1)));
        scribble(&src.join("mixed.bin"), 6, 10 + g);
    }
    let dir = src.join(format!("gen{g}"));
    fs::create_dir_all(&dir).unwrap();
    write_random_file(&dir.join("u.bin"), MIB + MIB / 2, 100 + g);
    set_tree_times(src);
}

fn history_scenario(op: Op) -> Scenario {
    let base = small_pack_repo();
    let src = base.scratch().join("src");
    let mut states = Vec::new();
    for g in 0..3 {
        write_generation(&src, g);
        let id = id_of(&base.create(&[s(&src)]));
        states.push((id, save_state(&base, &src, &format!("state{g}"))));
    }
    if op == Op::Prune {
        let (first, _) = states.remove(0);
        base.ok(&["forget", &first]);
    }
    let current = states.last().unwrap().1.clone();
    Scenario {
        op,
        base,
        src,
        states,
        current,
    }
}

fn passwd_scenario() -> Scenario {
    let base = Snap::init(&[]);
    let src = base.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("data.bin"), 200_000, 5);
    fs::write(src.join("text.txt"), "protected by a password\n".repeat(100)).unwrap();
    set_tree_times(&src);
    let id = id_of(&base.create(&[s(&src)]));
    let state = save_state(&base, &src, "state0");
    Scenario {
        op: Op::Passwd,
        base,
        src,
        states: vec![(id, state.clone())],
        current: state,
    }
}

/// How a run of the command ended.
struct Run {
    killed: bool,
    elapsed: Duration,
    out: Output,
}

/// Runs the scenario's command on `snap`, killing it with SIGKILL once
/// `delay` has passed (never, without one). The process is reaped before
/// this returns, so its lock is stale.
fn run_command(sc: &Scenario, snap: &Snap, delay: Option<Duration>) -> Run {
    let logs = snap.scratch();
    let stdout = fs::File::create(logs.join("command.stdout")).unwrap();
    let stderr = fs::File::create(logs.join("command.stderr")).unwrap();
    let mut cmd = sc.op.command(snap, &sc.src, NEW_PASSWORD);
    cmd.stdout(stdout).stderr(stderr);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn snap");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let elapsed = started.elapsed();
        if delay.is_some_and(|d| elapsed >= d) || elapsed > Duration::from_secs(600) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = started.elapsed();
    let out = Output {
        status,
        stdout: fs::read(logs.join("command.stdout")).unwrap(),
        stderr: fs::read(logs.join("command.stderr")).unwrap(),
    };
    Run {
        killed: status.signal() == Some(rustix::process::Signal::KILL.as_raw()),
        elapsed,
        out,
    }
}

/// `verify ARGS --json` with an empty index cache, so that what is checked is
/// the repository alone; returns the notices after asserting exit code 0.
#[track_caller]
fn verify_with_fresh_cache(snap: &mut Snap, read_data: bool) -> usize {
    let fresh = snap.scratch().join("fresh-cache");
    let _ = fs::remove_dir_all(&fresh);
    let cache = std::mem::replace(&mut snap.cache, fresh.clone());
    let mut args = vec!["verify", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let out = snap.run(&args);
    snap.cache = cache;
    let _ = fs::remove_dir_all(&fresh);
    assert_code(&out, 0);
    let report = parse_json(&out);
    let problems = report["problems"].as_array().expect("problems");
    assert!(
        problems.iter().all(|p| p["severity"] == "notice"),
        "exit 0 with errors: {report}"
    );
    problems.len()
}

fn snapshot_ids(snap: &Snap) -> Vec<String> {
    snap.snapshots().iter().map(id_of).collect()
}

/// Restores `id` and compares it with `expected`.
#[track_caller]
fn assert_restores(snap: &Snap, id: &str, src: &Path, expected: &Path) {
    let target = snap.scratch().join(format!("restore-{}", &id[..8]));
    let out = snap.restore(id, &target, &[]);
    assert_code(&out, 0);
    assert_same_tree(expected, &restored(&target, src), Compare::all());
    fs::remove_dir_all(&target).unwrap();
}

/// Which password opens the repository after a killed `key passwd`.
fn working_password(snap: &mut Snap, completed: bool) -> String {
    let mut codes = Vec::new();
    for password in [PASSWORD, NEW_PASSWORD] {
        snap.password = Some(password.into());
        let out = snap.run(&["snapshots"]);
        assert!(
            matches!(out.status.code(), Some(0 | 12)),
            "password {password:?}: {}",
            describe(&out)
        );
        codes.push(out.status.code() == Some(0));
    }
    assert!(
        codes[0] || codes[1],
        "neither the old nor the new password opens the repository"
    );
    if completed {
        assert!(
            !codes[0] && codes[1],
            "after a completed passwd: old opens {}, new opens {}",
            codes[0],
            codes[1]
        );
    }
    let password = if codes[1] { NEW_PASSWORD } else { PASSWORD };
    snap.password = Some(password.into());
    let keys = parse_json(&snap.ok(&["key", "list", "--json"]));
    let count = keys.as_array().unwrap().len();
    assert!((1..=2).contains(&count), "{count} key files: {keys}");
    format!("old password opens: {}, new: {}, {count} key files", codes[0], codes[1])
}

/// One kill and every check after it; returns a line for the log.
fn iteration(sc: &Scenario, snap: &mut Snap, delay: Duration) -> String {
    let run = run_command(sc, snap, Some(delay));
    assert!(!panicked(&run.out), "snap panicked\n{}", describe(&run.out));
    if !run.killed {
        assert_code(&run.out, 0);
    }
    let mut notes = vec![format!(
        "{} after {} ms",
        if run.killed { "killed" } else { "completed" },
        run.elapsed.as_millis()
    )];
    if sc.op == Op::Passwd {
        notes.push(working_password(snap, !run.killed));
    }

    // The repository is valid: nothing but unreferenced data.
    let notices = verify_with_fresh_cache(snap, true);
    notes.push(format!("{notices} notices"));

    // Snapshots: the ones the command may not remove are there, new ones
    // hold the current source, and each restores bit-exact.
    let before: BTreeSet<String> = sc.states.iter().map(|(id, _)| id.clone()).collect();
    let after_list = snapshot_ids(snap);
    let after: BTreeSet<String> = after_list.iter().cloned().collect();
    let new: Vec<&String> = after.difference(&before).collect();
    let latest = &sc.states.last().unwrap().0;
    match sc.op {
        Op::Create => {
            assert!(before.is_subset(&after), "snapshots lost: {before:?} -> {after:?}");
            assert!(new.len() <= 1, "more than one new snapshot: {new:?}");
            let reported = serde_json::from_slice::<Value>(&run.out.stdout).ok().map(|v| id_of(&v));
            if let Some(reported) = &reported {
                assert!(after.contains(reported), "reported snapshot {reported} is missing");
            } else {
                assert!(run.killed, "a completed create reported no snapshot");
            }
            notes.push(match (reported.is_some(), new.len()) {
                (true, _) => "snapshot reported".into(),
                (false, 1) => "snapshot written, not reported".into(),
                _ => "no snapshot".to_string(),
            });
        }
        Op::ForgetPrune => {
            assert!(after.is_subset(&before), "unknown snapshots appeared: {new:?}");
            assert!(after.contains(latest), "the newest snapshot was removed");
            if !run.killed {
                assert_eq!(after.len(), 1, "a completed forget --keep-last 1 left {after:?}");
            }
            notes.push(format!("{} of {} snapshots left", after.len(), before.len()));
        }
        Op::Prune | Op::Passwd => assert_eq!(before, after, "{} changed the snapshots", sc.op.name()),
    }
    for id in &after {
        let expected = sc.expected(id).unwrap_or(&sc.current);
        assert_restores(snap, id, &sc.src, expected);
    }

    // The same command, run again, completes and leaves a valid repository.
    if sc.op == Op::Passwd {
        let out = snap
            .command()
            .args(["key", "passwd"])
            .env("SNAP_NEW_PASSWORD", THIRD_PASSWORD)
            .output()
            .unwrap();
        assert_code(&out, 0);
        snap.password = Some(THIRD_PASSWORD.into());
        snap.ok(&["snapshots"]);
    } else {
        let again = run_command(sc, snap, None);
        assert_code(&again.out, 0);
    }
    let notices = verify_with_fresh_cache(snap, false);
    if matches!(sc.op, Op::ForgetPrune | Op::Prune) {
        assert_eq!(notices, 0, "prune after the crash left unreferenced data");
    }
    if sc.op == Op::Create {
        let last = snapshot_ids(snap).pop().unwrap();
        assert!(!before.contains(&last), "the second create wrote no snapshot");
    }
    notes.push(format!("{} again: ok", sc.op.name()));
    notes.join("; ")
}

/// Runs `n` kills of the scenario's command and fails if any check failed.
fn harness(op: Op, n: usize, seed: u64) {
    let started = Instant::now();
    let sc = Scenario::new(op);
    // Measure once how long the command takes, on a copy, uninterrupted.
    let probe = sc.base.copy();
    let run = run_command(&sc, &probe, None);
    assert_code(&run.out, 0);
    let typical = run.elapsed;
    drop(probe);
    eprintln!(
        "crash[{}]: {} ms uninterrupted; {n} kills, seed {seed} (setup {:.1} s)",
        op.name(),
        typical.as_millis(),
        started.elapsed().as_secs_f64()
    );

    let mut rng = SmallRng::seed_from_u64(seed);
    let mut failures = Vec::new();
    for i in 0..n {
        // A little past the typical duration too, so that some runs end on their own.
        let delay = Duration::from_micros(rng.random_range(0..=typical.as_micros() as u64 * 11 / 10));
        let mut snap = sc.base.copy();
        let result = catch_unwind(AssertUnwindSafe(|| iteration(&sc, &mut snap, delay)));
        match result {
            Ok(line) => eprintln!(
                "crash[{}] {}/{n}: kill at {} ms: {line}",
                op.name(),
                i + 1,
                delay.as_millis()
            ),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let kept = std::env::temp_dir().join(format!(
                    "snap-crash-failed-{}-{}-{i}",
                    op.name().replace([' ', '-'], ""),
                    std::process::id()
                ));
                copy_dir(snap.scratch(), &kept);
                eprintln!(
                    "crash[{}] {}/{n}: kill at {} ms: FAILED (kept in {}): {message}",
                    op.name(),
                    i + 1,
                    delay.as_millis(),
                    kept.display()
                );
                failures.push(format!("kill at {} ms: {message}", delay.as_millis()));
            }
        }
    }
    eprintln!(
        "crash[{}]: {n} iterations, {} passed, in {:.1} s",
        op.name(),
        n - failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} kills failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const DEFAULT_KILLS: usize = 3;
const TORTURE_KILLS: usize = 50;

fn torture_seed_from_clock() -> u64 {
    torture_seed(now_ns() as u64)
}

#[test]
fn killed_create_leaves_a_valid_repository() {
    harness(Op::Create, DEFAULT_KILLS, torture_seed(1));
}

#[test]
fn killed_forget_prune_leaves_a_valid_repository() {
    harness(Op::ForgetPrune, DEFAULT_KILLS, torture_seed(2));
}

#[test]
fn killed_prune_leaves_a_valid_repository() {
    harness(Op::Prune, DEFAULT_KILLS, torture_seed(3));
}

#[test]
fn killed_key_passwd_leaves_a_working_password() {
    harness(Op::Passwd, DEFAULT_KILLS, torture_seed(4));
}

#[test]
#[ignore = "long: SNAP_TORTURE_N kills (default 50)"]
fn torture_killed_create() {
    harness(Op::Create, torture_n(TORTURE_KILLS), torture_seed_from_clock());
}

#[test]
#[ignore = "long: SNAP_TORTURE_N kills (default 50)"]
fn torture_killed_forget_prune() {
    harness(Op::ForgetPrune, torture_n(TORTURE_KILLS), torture_seed_from_clock());
}

#[test]
#[ignore = "long: SNAP_TORTURE_N kills (default 50)"]
fn torture_killed_prune() {
    harness(Op::Prune, torture_n(TORTURE_KILLS), torture_seed_from_clock());
}

#[test]
#[ignore = "long: SNAP_TORTURE_N kills (default 50)"]
fn torture_killed_key_passwd() {
    harness(Op::Passwd, torture_n(TORTURE_KILLS), torture_seed_from_clock());
}
