//! Locks under attack: a backup stalled while it holds its shared lock (a
//! slow `--stdin` producer, a stopped process, a pruner whose clock is ahead)
//! must not be taken as stale; a backup whose lock was lost anyway must not
//! write a snapshot over blobs a prune deleted; a lock that cannot be
//! refreshed stops the operation as an interruption; the lock messages give
//! advice that works.
//!
//! The shifted clocks come from `faketime` (Debian package `faketime`,
//! installed by `.ci/run`); a test without it says so and is skipped.

use std::fs;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::util::*;

const MIB: usize = 1 << 20;

/// Small chunks (the backup reads and stores them as they come, not
/// 16 MiB at a time) and small packs, so the reused data spans several.
fn repo() -> Snap {
    Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"])
}

/// A first backup of `data` from standard input, then forgotten: its packs
/// are unreferenced but indexed, so the next backup of the same bytes reuses
/// them and a prune would delete them.
fn forgotten_backup(snap: &Snap, data: &[u8]) {
    let out = snap.run_with_stdin(
        &["create", "--json", "--stdin", "--stdin-filename", "db.dump"],
        data.to_vec(),
    );
    assert_code(&out, 0);
    let id = parse_json(&out)["id"].as_str().unwrap().to_string();
    snap.ok(&["forget", &id]);
    assert!(snap.snapshots().is_empty());
}

/// A backup reading `db.dump` from a pipe the test holds open: it has read
/// `data` (all of it reused from the index) and waits for more.
struct StalledBackup {
    child: Option<Child>,
    pid: rustix::process::Pid,
    stdin: Option<ChildStdin>,
}

impl StalledBackup {
    fn start(snap: &Snap, data: &[u8], command: Option<Command>, env: &[(&str, &str)]) -> StalledBackup {
        let mut cmd = command.unwrap_or_else(|| snap.command());
        cmd.args(["create", "--json", "--stdin", "--stdin-filename", "db.dump"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn snap create");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(data).expect("feed the backup");
        stdin.flush().unwrap();
        let backup = StalledBackup {
            pid: rustix::process::Pid::from_child(&child),
            child: Some(child),
            stdin: Some(stdin),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while object_count(&snap.repo, "locks") == 0 {
            assert!(Instant::now() < deadline, "the backup never took its lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The pipe holds at most 64 KiB: all but that much has been read.
        std::thread::sleep(Duration::from_millis(500));
        backup
    }

    fn stop(&self) {
        rustix::process::kill_process(self.pid, rustix::process::Signal::STOP).unwrap();
    }

    fn resume(&self) {
        rustix::process::kill_process(self.pid, rustix::process::Signal::CONT).unwrap();
    }

    /// Ends the input and waits for the backup's result.
    fn finish(mut self) -> Output {
        drop(self.stdin.take());
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for StalledBackup {
    fn drop(&mut self) {
        // A failed assertion must not leave a stopped process behind.
        if let Some(mut child) = self.child.take() {
            let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::CONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// `snap ARGS` with the wall clock shifted by `offset` (faketime's `-f`
/// syntax, e.g. `+31m`); the storage's clock (file times, set by the
/// kernel) is not shifted, as for a host whose clock is wrong.
fn with_clock(snap: &Snap, offset: &str, args: &[&str]) -> Output {
    let base = snap.command();
    let mut cmd = Command::new("faketime");
    cmd.arg("-f")
        .arg(offset)
        .arg(base.get_program())
        .args(base.get_args())
        .args(args);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(Stdio::null());
    let out = cmd.output().expect("run faketime");
    // faketime itself must work here: its clock is the point of the test.
    let probe = Command::new("faketime")
        .args(["-f", offset, "date", "+%s"])
        .output()
        .unwrap();
    let faked: i64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap_or(0);
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((faked - real).abs() > 60, "faketime did not shift the clock: {probe:?}");
    out
}

fn restores_to(snap: &Snap, data: &[u8]) {
    snap.ok(&["verify", "--read-data"]);
    let target = snap.scratch().join("out");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert!(
        fs::read(target.join("db.dump")).unwrap() == data,
        "restored bytes differ"
    );
}

/// The reproduction from the issue: a backup stopped (SIGSTOP) while it
/// holds its lock, and a prune whose clock is 31 minutes ahead. The
/// backup's pid is alive on this host, so its lock is not stale: prune is
/// refused, and the resumed backup saves a snapshot that restores.
/// Before: prune took the lock as stale by age, deleted the packs the
/// backup had reused, and the backup said "saved" over missing data.
#[test]
fn stopped_backup_survives_a_prune_with_its_clock_ahead() {
    if !have("faketime") {
        super::util::skip_note("note: faketime is not installed (Debian package faketime); test skipped".to_string());
        return;
    }
    let snap = repo();
    let data = random_bytes(3 * MIB, 11);
    forgotten_backup(&snap, &data);
    let backup = StalledBackup::start(&snap, &data, None, &[]);
    backup.stop();
    let pruned = with_clock(&snap, "+31m", &["prune"]);
    assert_code(&pruned, 11);
    let message = stderr(&pruned);
    assert!(message.contains("running on this host"), "{message}");
    assert!(
        !message.contains("run `snap unlock`"),
        "advice that cannot work: {message}"
    );
    backup.resume();
    let out = backup.finish();
    assert_code(&out, 0);
    restores_to(&snap, &data);
}

/// The same across hosts: the backup runs under another host name (a UTS
/// namespace), so its pid cannot be checked and only age counts. Measured
/// with the storage's clock, its lock is seconds old though the pruner's
/// wall clock says 31 minutes: still not stale.
#[test]
fn another_hosts_fresh_lock_is_not_stale_to_a_clock_ahead() {
    if !have("faketime") {
        super::util::skip_note("note: faketime is not installed (Debian package faketime); test skipped".to_string());
        return;
    }
    if !is_root()
        || Command::new("unshare")
            .args(["-u", "true"])
            .status()
            .map_or(true, |s| !s.success())
    {
        eprintln!("note: cannot make a UTS namespace here (needs root); test skipped");
        return;
    }
    let snap = repo();
    let data = random_bytes(3 * MIB, 12);
    forgotten_backup(&snap, &data);
    let base = snap.command();
    let mut cmd = Command::new("unshare");
    cmd.args(["-u", "sh", "-c", "hostname snap-other-host && exec \"$0\" \"$@\""])
        .arg(base.get_program())
        .args(base.get_args());
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let backup = StalledBackup::start(&snap, &data, Some(cmd), &[]);
    backup.stop();
    let pruned = with_clock(&snap, "+31m", &["prune"]);
    assert_code(&pruned, 11);
    let message = stderr(&pruned);
    assert!(message.contains("snap-other-host"), "{message}");
    assert!(message.contains("--remove-all"), "{message}");
    // `snap unlock` with its clock ahead keeps the fresh lock too.
    let unlocked = with_clock(&snap, "+31m", &["unlock"]);
    assert_code(&unlocked, 0);
    assert_eq!(object_count(&snap.repo, "locks"), 1, "{}", describe(&unlocked));
    backup.resume();
    assert_code(&backup.finish(), 0);
    restores_to(&snap, &data);
}

/// A backup whose lock was taken away (`snap unlock --remove-all`, as the
/// refused prune's advice says, while the backup was in fact alive) and a
/// prune that deleted the packs it reused: the backup fails loudly and
/// writes no snapshot. Before: it printed "saved" and exited 0 with a
/// snapshot that could not be restored.
#[test]
fn backup_whose_lock_was_removed_writes_no_snapshot() {
    let snap = repo();
    let data = random_bytes(3 * MIB, 13);
    forgotten_backup(&snap, &data);
    let packs_before = packs(&snap.repo).len();
    let backup = StalledBackup::start(&snap, &data, None, &[]);
    // The advice is true: plain `unlock` keeps a live lock and says what would remove it.
    assert_code(&snap.run(&["prune"]), 11);
    let unlocked = snap.ok(&["unlock"]);
    assert!(stderr(&unlocked).contains("--remove-all"), "{}", describe(&unlocked));
    assert_eq!(object_count(&snap.repo, "locks"), 1);
    snap.ok(&["unlock", "--remove-all"]);
    snap.ok(&["prune"]);
    assert!(packs(&snap.repo).len() < packs_before, "prune deleted the reused packs");
    let out = backup.finish();
    assert_code(&out, 130);
    assert!(stderr(&out).contains("lock was lost"), "{}", describe(&out));
    assert!(snap.snapshots().is_empty(), "no snapshot over deleted data");
    snap.ok(&["verify"]);
}

/// The same with the lock object still in place (a pruner that ignored it,
/// e.g. an older snap on another host): the index files the backup started
/// with are gone, so every blob of its snapshot is looked up again; the
/// reused ones are missing and the snapshot is not written.
#[test]
fn backup_checks_its_reused_blobs_are_still_indexed() {
    let snap = repo();
    let data = random_bytes(3 * MIB, 14);
    forgotten_backup(&snap, &data);
    let backup = StalledBackup::start(&snap, &data, None, &[]);
    let locks = snap.repo.join("locks");
    let aside = snap.scratch().join("locks-aside");
    copy_dir(&locks, &aside);
    snap.ok(&["unlock", "--remove-all"]);
    snap.ok(&["prune"]);
    fs::remove_dir_all(&locks).unwrap();
    copy_dir(&aside, &locks);
    let out = backup.finish();
    // The stalled backup may not have looked its chunks up before the prune
    // (a stream is cut a block at a time, and its index reader renews): then
    // it stores them again and its snapshot must be whole. If it did reuse
    // them, it must notice they are gone and write no snapshot.
    if out.status.code() == Some(0) {
        restores_to(&snap, &data);
        return;
    }
    assert_code(&out, 1);
    assert!(stderr(&out).contains("snapshot not written"), "{}", describe(&out));
    assert!(snap.snapshots().is_empty(), "no snapshot over deleted data");
    // A backup after that stores the data again and restores.
    assert_code(
        &snap.run_with_stdin(&["create", "--stdin", "--stdin-filename", "db.dump"], data.clone()),
        0,
    );
    restores_to(&snap, &data);
}

/// A lock that cannot be refreshed (here `locks/` stops being a directory
/// while the backup runs) stops the backup as an interruption, long before
/// anyone could take the lock as stale, and no snapshot is written.
/// Before: a warning, and the backup went on to the end and exited 0.
#[test]
fn backup_stops_when_its_lock_cannot_be_refreshed() {
    let snap = repo();
    let locks = snap.repo.join("locks");
    let mut backup = StalledBackup::start(&snap, b"start\n", None, &[("SNAP_LOCK_REFRESH_SECS", "0.5")]);
    fs::rename(&locks, snap.scratch().join("locks-moved")).unwrap();
    fs::write(&locks, "not a directory\n").unwrap();
    // Keep data flowing, so the backup reaches its cancellation checks; a
    // backup that is not stopped ends when the input does, after 20 s.
    let mut stdin = backup.stdin.take().unwrap();
    let started = Instant::now();
    let feeder = std::thread::spawn(move || {
        let mut seed = 0;
        while started.elapsed() < Duration::from_secs(20) {
            seed += 1;
            if stdin.write_all(&random_bytes(64 * 1024, seed)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let out = backup.finish();
    let took = started.elapsed();
    feeder.join().unwrap();
    fs::remove_file(&locks).unwrap();
    fs::rename(snap.scratch().join("locks-moved"), &locks).unwrap();
    assert_code(&out, 130);
    assert!(stderr(&out).contains("lock was lost"), "{}", describe(&out));
    assert!(
        took < Duration::from_secs(15),
        "stopped only after {took:?}: {}",
        describe(&out)
    );
    assert!(snap.snapshots().is_empty());
    snap.ok(&["verify"]);
}

/// An unreadable lock: the message says `--remove-all` (plain `unlock`
/// keeps it, and says so), and that works.
#[test]
fn unreadable_lock_advice_is_true() {
    let snap = repo();
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "f\n").unwrap();
    fs::write(snap.repo.join("locks").join("ab".repeat(32)), "garbage").unwrap();
    let refused = snap.run(&["create", s(&src)]);
    assert_code(&refused, 11);
    assert!(
        stderr(&refused).contains("unlock --remove-all"),
        "{}",
        describe(&refused)
    );
    let kept = snap.ok(&["unlock"]);
    assert!(stderr(&kept).contains("--remove-all"), "{}", describe(&kept));
    assert_eq!(object_count(&snap.repo, "locks"), 1);
    snap.ok(&["unlock", "--remove-all"]);
    snap.ok(&["create", s(&src)]);
}
