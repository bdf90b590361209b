//! Concurrent writers and pruning: four `create` loops, each backing up its
//! own ~5 MiB tree that changes a little every round, run into one
//! repository while another loop runs `forget --keep-last 2 --group-by
//! host,paths --prune`; everyone waits for locks with `--retry-lock 1m`.
//! Every writer keeps a copy of its tree per snapshot. At the end the
//! repository verifies with `--read-data` without any problem, each writer
//! has exactly its last two snapshots, and each restores bit-exact.
//!
//! Default: 3 rounds per writer; the ignored `torture_concurrency` does
//! `SNAP_TORTURE_N` (default 30). Two more tests race readers of `locks/`
//! and `snapshots/` with concurrent deletions.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::util::*;

const WRITERS: usize = 4;

/// Copies of the writers' trees by snapshot id, and the ids forget removed
/// before their writer recorded a copy.
#[derive(Default)]
struct Copies {
    by_id: HashMap<String, PathBuf>,
    removed: HashSet<String>,
}

/// What a writer and the forget loop saw, for the summary.
#[derive(Default)]
struct Stats {
    creates: usize,
    forgets: usize,
    removed: usize,
    failures: Vec<String>,
}

/// Counts running writers down when dropped, even by a panic, so that the
/// forget loop always stops.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn writer_tree(dir: &Path, writer: u64) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..4 {
        write_random_file(&dir.join(format!("d{i}.bin")), MIB, writer * 100 + i);
    }
    write_random_file(&dir.join("sub/e.bin"), 768 * 1024, writer * 100 + 50);
    fs::write(
        dir.join("text.txt"),
        format!("writer {writer} says hello\n").repeat(6000),
    )
    .unwrap();
    fs::write(dir.join("log.txt"), "round 0\n").unwrap();
    toggle(dir, writer, 0);
}

/// A file whose content cycles through three versions: with the last two
/// snapshots kept, the version coming back was just pruned, and must be
/// stored again (an index cache that still lists it would lose it).
fn toggle(dir: &Path, writer: u64, round: u64) {
    fs::write(
        dir.join("toggle.bin"),
        random_bytes(256 * 1024, writer * 10 + round % 3),
    )
    .unwrap();
}

/// A small change: a few KiB of one file rewritten, a line appended, a file
/// added and an older one removed.
fn change_tree(dir: &Path, writer: u64, round: u64) {
    let path = dir.join(format!("d{}.bin", round % 4));
    let mut bytes = fs::read(&path).unwrap();
    let mut rng = SmallRng::seed_from_u64(writer * 1000 + round);
    let at = rng.random_range(0..bytes.len() - 4096);
    rng.fill(&mut bytes[at..at + 4096]);
    fs::write(&path, bytes).unwrap();
    let mut log = fs::read_to_string(dir.join("log.txt")).unwrap();
    log.push_str(&format!("round {round}\n"));
    fs::write(dir.join("log.txt"), log).unwrap();
    fs::write(
        dir.join(format!("sub/r{round}.txt")),
        format!("added in round {round}\n"),
    )
    .unwrap();
    let _ = fs::remove_file(dir.join(format!("sub/r{}.txt", round.saturating_sub(2))));
    toggle(dir, writer, round);
}

/// Backs up `dir` `rounds` times, changing it in between; returns the ids.
fn writer(
    snap: &Snap,
    writer: u64,
    dir: &Path,
    rounds: u64,
    copies: &Mutex<Copies>,
    stats: &Mutex<Stats>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rng = SmallRng::seed_from_u64(writer);
    for round in 0..rounds {
        // Back-to-back backups always hold a shared lock between them, and
        // forget would only get in at the end: pause now and then.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        if round == 0 {
            writer_tree(dir, writer);
        } else {
            change_tree(dir, writer, round);
        }
        let out = snap.run(&["create", "--json", "--retry-lock", "1m", s(dir)]);
        if out.status.code() != Some(0) {
            stats.lock().unwrap().failures.push(format!(
                "writer {writer} round {round}: create failed\n{}",
                describe(&out)
            ));
            continue;
        }
        let id = parse_json(&out)["id"].as_str().unwrap().to_string();
        let copy = snap.scratch().join(format!("copies/w{writer}-r{round}"));
        copy_dir(dir, &copy);
        let mut copies = copies.lock().unwrap();
        if copies.removed.contains(&id) {
            fs::remove_dir_all(&copy).unwrap();
        } else {
            copies.by_id.insert(id.clone(), copy);
        }
        stats.lock().unwrap().creates += 1;
        ids.push(id);
    }
    ids
}

/// One `forget --prune` run; drops the copies of the snapshots it removed.
fn forget(snap: &Snap, copies: &Mutex<Copies>, stats: &Mutex<Stats>) {
    let out = snap.run(&[
        "forget",
        "--keep-last",
        "2",
        "--group-by",
        "host,paths",
        "--prune",
        "--retry-lock",
        "1m",
        "--json",
    ]);
    let mut stats = stats.lock().unwrap();
    if out.status.code() != Some(0) {
        stats
            .failures
            .push(format!("forget --prune failed\n{}", describe(&out)));
        return;
    }
    stats.forgets += 1;
    // stdout: forget's groups, then prune's statistics.
    let groups = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .next()
        .expect("forget --json output")
        .expect("forget --json is JSON");
    let mut copies = copies.lock().unwrap();
    for group in groups.as_array().unwrap() {
        for removed in group["remove"].as_array().unwrap() {
            let id = removed["id"].as_str().unwrap().to_string();
            stats.removed += 1;
            match copies.by_id.remove(&id) {
                Some(copy) => fs::remove_dir_all(copy).unwrap(),
                None => {
                    copies.removed.insert(id);
                }
            }
        }
    }
}

fn harness(rounds: u64, seed: u64) {
    let started = Instant::now();
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    fs::create_dir_all(snap.scratch().join("copies")).unwrap();
    let copies = Mutex::new(Copies::default());
    let stats = Mutex::new(Stats::default());
    let running = AtomicUsize::new(WRITERS);
    let dirs: Vec<PathBuf> = (0..WRITERS).map(|w| snap.scratch().join(format!("tree{w}"))).collect();

    let ids: Vec<Vec<String>> = std::thread::scope(|scope| {
        let writers: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(w, dir)| {
                let (snap, copies, stats, running) = (&snap, &copies, &stats, &running);
                scope.spawn(move || {
                    let _running = Running(running);
                    writer(snap, w as u64, dir, rounds, copies, stats)
                })
            })
            .collect();
        scope.spawn(|| {
            let mut rng = SmallRng::seed_from_u64(seed);
            while running.load(Ordering::SeqCst) > 0 {
                forget(&snap, &copies, &stats);
                std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
            }
        });
        writers
            .into_iter()
            .map(|w| w.join().expect("writer panicked"))
            .collect()
    });
    // A last one once everyone is done: each writer keeps exactly its last two.
    forget(&snap, &copies, &stats);
    let stats = stats.into_inner().unwrap();
    eprintln!(
        "concurrency: {WRITERS} writers × {rounds} rounds: {} creates, {} forget --prune runs removing {} snapshots, \
         {} failures; {:.1} s",
        stats.creates,
        stats.forgets,
        stats.removed,
        stats.failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(stats.failures.is_empty(), "{}", stats.failures.join("\n\n"));

    // With a fresh index cache: the repository alone must be whole.
    let mut fresh = Snap::new();
    fresh.repo = snap.repo.clone();
    let verify = fresh.run(&["verify", "--read-data", "--json"]);
    assert_code(&verify, 0);
    let report = parse_json(&verify);
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "problems after concurrent backups and prunes: {report}"
    );

    let alive: HashSet<String> = snap
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let copies = copies.into_inner().unwrap();
    let mut restored_count = 0;
    for (w, (dir, ids)) in dirs.iter().zip(&ids).enumerate() {
        let kept: Vec<&String> = ids.iter().filter(|id| alive.contains(*id)).collect();
        let last: Vec<&String> = ids.iter().rev().take(2).rev().collect();
        assert_eq!(kept, last, "writer {w}: the kept snapshots are not its last two");
        for id in kept {
            let copy = copies.by_id.get(id).expect("a copy of every kept snapshot");
            let target = snap.scratch().join(format!("restore-{}", &id[..8]));
            assert_code(&snap.restore(id, &target, &[]), 0);
            assert_same_tree(copy, &restored(&target, dir), Compare::all());
            fs::remove_dir_all(&target).unwrap();
            restored_count += 1;
        }
    }
    assert_eq!(alive.len(), restored_count, "snapshots nobody wrote: {alive:?}");
    eprintln!(
        "concurrency: verify clean; {restored_count} snapshots restored bit-exact; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn concurrent_writers_and_forget_prune_lose_nothing() {
    harness(3, torture_seed(11));
}

#[test]
#[ignore = "long: SNAP_TORTURE_N rounds per writer (default 30)"]
fn torture_concurrency() {
    harness(torture_n(30) as u64, torture_seed(now_ns() as u64));
}

/// Processes taking and releasing locks at once, with many stale locks in
/// `locks/` (left by killed processes) so that each listing takes a while:
/// a lock deleted between the directory listing and its stat must count as
/// released, not fail the command (`create` fails; `verify` goes on
/// without a lock, "going on without a lock: cannot stat ...").
#[test]
fn lock_listing_survives_locks_released_meanwhile() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "f\n").unwrap();
    let crashed = snap
        .command()
        .args(["create", s(&src)])
        .env("SNAP_FAILPOINT", "pack-written")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let stale = files_under(&snap.repo.join("locks"))
        .pop()
        .expect("the crashed backup's lock");
    for i in 0..500u64 {
        let name = hex(&random_bytes(32, i));
        fs::copy(&stale, snap.repo.join("locks").join(name)).unwrap();
    }
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..6 {
            let (snap, failures) = (&snap, &failures);
            scope.spawn(move || {
                let dir = snap.scratch().join(format!("src{t}"));
                fs::create_dir(&dir).unwrap();
                for i in 0..25 {
                    fs::write(dir.join("f"), format!("{i}\n")).unwrap();
                    let out = snap.run(&["create", "-q", s(&dir)]);
                    if !out.status.success() {
                        failures.lock().unwrap().push(describe(&out));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!("lock listing: 150 concurrent backups, {} failed", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `snapshots` (which takes no lock) while `forget` deletes snapshots: a
/// snapshot deleted between the listing and its loading must be left out,
/// not fail the listing.
#[test]
fn snapshot_listing_survives_a_concurrent_forget() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    let mut failures = Vec::new();
    let mut listings = 0;
    for round in 0..5 {
        for i in 0..30 {
            fs::write(src.join("f"), format!("{round} {i}\n")).unwrap();
            snap.ok(&["create", "-q", s(&src)]);
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let lister = scope.spawn(|| {
                let mut outs = Vec::new();
                while !done.load(Ordering::SeqCst) || outs.is_empty() {
                    outs.push(snap.run(&["snapshots", "--json"]));
                }
                outs
            });
            let _done = StopOnDrop(&done);
            std::thread::sleep(Duration::from_millis(20));
            snap.ok(&["forget", "--keep-last", "1", "-q"]);
            done.store(true, Ordering::SeqCst);
            for out in lister.join().unwrap() {
                listings += 1;
                if !out.status.success() {
                    failures.push(describe(&out));
                }
            }
        });
    }
    eprintln!(
        "snapshot listing: {listings} listings during forget, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
