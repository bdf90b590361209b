//! Interrupted backups: uploaded data survives SIGKILL and is reused; SIGINT
//! stops cleanly with exit code 130 and no snapshot.

use std::fs;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::util::*;

/// Packs an index file written during a backup lists before the merge at
/// its end: one (snap-core's packer indexes every pack as soon as it is
/// stored); with 1 MiB packs, each such index file stands for at least
/// 1 MiB of uploaded chunks.
const PACKS_PER_INDEX: u64 = 1;

fn spawn_create(snap: &Snap, src: &Path) -> Child {
    let log = fs::File::create(snap.scratch().join("interrupted.stderr")).unwrap();
    snap.command()
        .args(["create", s(src)])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn snap create")
}

fn child_stderr(snap: &Snap) -> String {
    fs::read_to_string(snap.scratch().join("interrupted.stderr")).unwrap_or_default()
}

/// Waits until the repository has `count` index files; returns how many.
fn wait_for_index_files(snap: &Snap, child: &mut Child, count: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = object_count(&snap.repo, "index");
        if n >= count {
            return n;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "snap create ended ({status}) before {count} index files were written (saw {n}); stderr:\n{}",
                child_stderr(snap)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no {count} index files after 300 s (saw {n})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("snap did not stop within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn random_source(dir: &Path, files: u64, size: u64, seed: u64) -> u64 {
    fs::create_dir(dir).unwrap();
    for i in 0..files {
        write_random_file(&dir.join(format!("part{i}.bin")), size, seed + i);
    }
    set_tree_times(dir);
    files * size
}

#[test]
fn killed_backup_keeps_uploaded_data_for_the_next_one() {
    let snap = Snap::init(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    let total = random_source(&src, 4, 50 * MIB, 1000);

    let mut child = spawn_create(&snap, &src);
    let index_files = wait_for_index_files(&snap, &mut child, 10) as u64;
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the backup finished before it was killed");
    assert!(snap.snapshots().is_empty(), "a killed backup left a snapshot");

    let created = snap.create(&[s(&src)]);
    assert_eq!(summary(&created, "bytes_read"), total, "{created}");
    // At least `index_files` * 8 packs of at least 1 MiB were indexed before the kill.
    let reused_at_least = index_files * PACKS_PER_INDEX * (MIB - 4096);
    let added = summary(&created, "bytes_added_raw");
    eprintln!("killed after {index_files} index files; the next backup stored {added} of {total} bytes");
    assert!(
        added <= total - reused_at_least,
        "the second backup stored {added} of {total} bytes; at least {reused_at_least} were uploaded before the kill"
    );

    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
    // Packs the killed run uploaded but never indexed are not damage.
    snap.ok(&["verify"]);
}

#[test]
fn sigint_stops_the_backup_with_code_130_and_no_snapshot() {
    let snap = Snap::init(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    let total = random_source(&src, 4, 16 * MIB, 2000);

    let mut child = spawn_create(&snap, &src);
    wait_for_index_files(&snap, &mut child, 1);
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the backup ended ({status}) before it could be interrupted");
    }
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::INT)
        .expect("send SIGINT");
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let err = child_stderr(&snap);
    assert_eq!(status.code(), Some(130), "{status}; stderr:\n{err}");
    assert!(err.contains("interrupted"), "stderr:\n{err}");
    assert!(snap.snapshots().is_empty(), "an interrupted backup left a snapshot");
    let indexed_after_interrupt = object_count(&snap.repo, "index") as u64;

    // The repository still works, and what was uploaded is reused.
    let created = snap.create(&[s(&src)]);
    let added = summary(&created, "bytes_added_raw");
    eprintln!("after SIGINT: {indexed_after_interrupt} index files; the next backup stored {added} of {total} bytes");
    let reused_at_least = indexed_after_interrupt.saturating_sub(1) * PACKS_PER_INDEX * (MIB - 4096);
    assert!(
        added <= total - reused_at_least && added < total,
        "the backup after the interrupt stored {added} of {total} bytes"
    );
    assert_eq!(snap.snapshots().len(), 1);
    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}
