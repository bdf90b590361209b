//! Resuming a killed first backup: every pack the killed run finished
//! writing is indexed right after it is stored, so the next backup reuses
//! it instead of uploading it again. Measured as the share of the killed
//! run's packs that are still referenced after the next backup and a prune
//! (prune deletes packs no index lists or no snapshot uses).
//!
//! The quick test kills a 30 MiB backup at two points; the ignored
//! `resume_share_of_a_large_killed_backup` kills a 300 MiB one at
//! `SNAP_TORTURE_N` (default 5) random points and prints the share.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::util::*;

fn pack_names(repo: &Path) -> BTreeSet<PathBuf> {
    packs(repo).into_iter().map(|(path, _)| path).collect()
}

fn random_source(dir: &Path, files: u64, size: u64, seed: u64) {
    fs::create_dir(dir).unwrap();
    for i in 0..files {
        write_random_file(&dir.join(format!("part{i}.bin")), size, seed + i);
    }
    set_tree_times(dir);
}

/// Pack files under `data/` while a backup writes there: temporary files
/// come and go between the listing and a look at them, so nothing here may
/// fail on an entry that vanished (`util::packs` would).
fn stored_packs(repo: &Path) -> usize {
    let Ok(dirs) = fs::read_dir(repo.join("data")) else {
        return 0;
    };
    dirs.flatten()
        .filter_map(|dir| fs::read_dir(dir.path()).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| !e.file_name().as_encoded_bytes().starts_with(b".") && e.file_type().is_ok_and(|t| t.is_file()))
        .count()
}

fn spawn_create(snap: &Snap, src: &Path) -> Child {
    let log = File::create(snap.scratch().join("killed-create.log")).expect("create log");
    snap.command()
        .args(["create", "--checkpoint-interval", "0s", s(src)])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn snap create")
}

/// One round: a first backup of `src` killed once it has stored `kill_at`
/// packs, then a complete backup and a prune. Returns (packs the killed run
/// stored, how many of them are still in use). On a loaded machine the
/// poller can be descheduled long enough for the backup to finish before
/// the kill: that round proves nothing and is tried again.
fn killed_then_resumed(src: &Path, kill_at: usize) -> (usize, usize) {
    for _ in 0..3 {
        if let Some(result) = try_killed_then_resumed(src, kill_at) {
            return result;
        }
        eprintln!("resume: the backup finished before the kill at {kill_at} packs; again");
    }
    panic!("three backups finished before they could be killed at {kill_at} packs");
}

fn try_killed_then_resumed(src: &Path, kill_at: usize) -> Option<(usize, usize)> {
    let snap = Snap::init(&["--pack-size-mib", "1"]);
    let mut child = spawn_create(&snap, src);
    let deadline = Instant::now() + Duration::from_secs(600);
    while stored_packs(&snap.repo) < kill_at {
        if let Some(status) = child.try_wait().unwrap() {
            if status.success() {
                return None;
            }
            let log = std::fs::read_to_string(snap.scratch().join("killed-create.log")).unwrap_or_default();
            panic!("the backup ended ({status}) before it stored {kill_at} packs\n{log}");
        }
        assert!(Instant::now() < deadline, "no {kill_at} packs after 600 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    if child.wait().unwrap().success() {
        return None;
    }
    assert!(snap.snapshots().is_empty(), "a killed backup left a snapshot");
    let killed = pack_names(&snap.repo);

    let created = snap.create(&["--checkpoint-interval", "0s", s(src)]);
    assert_eq!(summary(&created, "errors"), 0, "{created}");
    // Unreferenced and unindexed packs go; what remains is what was reused.
    snap.ok(&["prune"]);
    let after = pack_names(&snap.repo);
    let reused = killed.intersection(&after).count();

    let target = snap.scratch().join("restored");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(src, &restored(&target, src), Compare::all());
    Some((killed.len(), reused))
}

#[test]
fn a_killed_first_backup_is_resumed_from_its_packs() {
    let work = tempdir();
    let src = work.path().join("src");
    random_source(&src, 3, 10 * MIB, 4000);
    let mut total = (0, 0);
    // Not multiples of 8: the old index-every-8-packs rule lost up to 7 there.
    for kill_at in [11, 19] {
        let (killed, reused) = killed_then_resumed(&src, kill_at);
        eprintln!("resume: killed after {killed} packs, {reused} reused");
        // Only the packs stored in the instant before their index file may
        // be lost: as many as uploads in flight (two on a local disk).
        assert!(
            reused + 2 >= killed,
            "killed after {killed} packs, only {reused} reused"
        );
        total = (total.0 + killed, total.1 + reused);
    }
    // The 95% of the issue is measured on a larger backup (the ignored test
    // below); on about 32 packs two unlucky kills cost 12%.
    assert!(
        total.1 * 100 >= total.0 * 85,
        "{} of {} killed packs reused",
        total.1,
        total.0
    );
}

/// The measurement: a 300 MiB first backup killed at random points.
#[test]
#[ignore]
fn resume_share_of_a_large_killed_backup() {
    let work = tempdir();
    let src = work.path().join("src");
    random_source(&src, 10, 30 * MIB, 5000);
    let seed = torture_seed(10);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut total = (0, 0);
    for round in 0..torture_n(5) {
        // Fewer packs than 280 when the data compresses: a kill point the
        // backup never reached is halved until one is.
        let mut kill_at = rng.random_range(2..280);
        let (killed, reused) = loop {
            match try_killed_then_resumed(&src, kill_at) {
                Some(result) => break result,
                None if kill_at > 2 => kill_at /= 2,
                None => panic!("the backup finished before 2 packs"),
            }
        };
        eprintln!("resume round {round}: killed after {killed} packs, {reused} reused");
        total = (total.0 + killed, total.1 + reused);
    }
    let share = total.1 as f64 / total.0.max(1) as f64;
    eprintln!(
        "resume: {} of {} packs of killed backups reused ({:.1}%), seed {seed}",
        total.1,
        total.0,
        share * 100.0
    );
    assert!(share >= 0.95, "only {:.1}% reused", share * 100.0);
}
