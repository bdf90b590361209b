//! A hostile environment: a repository on a full disk, a read-only
//! repository, source files that vanish and grow while they are backed up,
//! and a source directory swapped for a symlink to outside the source in the
//! middle of the walk. Tests that need root (mounts, another user) say so and
//! skip when they cannot run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::util::*;

/// A mount that is unmounted when dropped (also when the test panics).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            // Something still uses it: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Runs `mount ARGS DIR`; `None` (with a note) when mounting is not allowed here.
fn mount(args: &[&str], dir: &Path) -> Option<Mount> {
    if !is_root() {
        eprintln!("note: mounting needs root; test skipped");
        return None;
    }
    let out = Command::new("mount").args(args).arg(dir).output();
    match out {
        Ok(out) if out.status.success() => Some(Mount(dir.to_path_buf())),
        Ok(out) => {
            eprintln!(
                "note: mount {args:?} {} is not permitted here ({}); test skipped",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("note: cannot run mount ({e}); test skipped");
            None
        }
    }
}

/// A read-only view of `dir` at `at` (a bind mount, remounted read-only).
fn read_only_bind(dir: &Path, at: &Path) -> Option<Mount> {
    let bind = mount(&["--bind", s(dir)], at)?;
    let out = Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(at)
        .output()
        .expect("run mount");
    if !out.status.success() {
        eprintln!(
            "note: cannot remount a bind mount read-only ({}); test skipped",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(bind)
}

/// Asserts `verify --read-data` exits 0 and returns the number of notices.
#[track_caller]
fn verify_notices(snap: &Snap) -> usize {
    let out = snap.run(&["verify", "--read-data", "--json"]);
    assert_code(&out, 0);
    let report = parse_json(&out);
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.iter().all(|p| p["severity"] == "notice"), "{report}");
    problems.len()
}

#[track_caller]
fn assert_restores(snap: &Snap, id: &str, src: &Path, expected: &Path, what: Compare) {
    let target = snap.scratch().join(format!("restore-{}", &id[..8]));
    let out = snap.restore(id, &target, &[]);
    assert_code(&out, 0);
    assert_same_tree(expected, &restored(&target, src), what);
    fs::remove_dir_all(&target).unwrap();
}

fn small_tree(src: &Path) {
    fs::create_dir_all(src.join("sub")).unwrap();
    write_random_file(&src.join("a.bin"), 700_000, 1);
    write_random_file(&src.join("sub/b.bin"), 300_000, 2);
    fs::write(src.join("sub/c.txt"), "some text\n".repeat(1000)).unwrap();
    set_tree_times(src);
}

// ---------------------------------------------------------------- full disk

/// The repository on an 8 MiB tmpfs: a backup of more than fits fails
/// (exit 1, no panic) saying the disk is full, leaves no snapshot, and the
/// repository stays valid; the earlier snapshot restores; prune reclaims
/// the space and the next backup fits.
#[test]
fn full_disk_fails_the_backup_cleanly_and_keeps_the_repository_valid() {
    let mut snap = Snap::new();
    let disk = snap.scratch().join("small-disk");
    fs::create_dir(&disk).unwrap();
    let Some(_mount) = mount(&["-t", "tmpfs", "-o", "size=8m", "tmpfs"], &disk) else {
        return;
    };
    snap.repo = disk.join("repo");
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);

    let src = snap.scratch().join("src");
    small_tree(&src);
    let first = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    let first_state = snap.scratch().join("state0");
    copy_dir(&src, &first_state);

    fs::create_dir(src.join("big")).unwrap();
    for i in 0..4 {
        write_random_file(&src.join(format!("big/{i}.bin")), 4 * MIB, 10 + i);
    }
    let out = snap.run(&["create", s(&src)]);
    assert!(!panicked(&out), "{}", describe(&out));
    assert_code(&out, 1);
    let err = stderr(&out);
    eprintln!("full disk: create says: {}", err.trim());
    assert!(
        err.contains("No space left on device") || err.contains("os error 28"),
        "the message does not say the disk is full: {}",
        describe(&out)
    );
    assert_eq!(snap.snapshots().len(), 1, "a failed backup left a snapshot");

    let notices = verify_notices(&snap);
    assert_restores(&snap, &first, &src, &first_state, Compare::all());

    // Prune removes what the failed backup left, and a backup fits again.
    let used = size_under(&snap.repo);
    snap.ok(&["prune"]);
    assert_eq!(verify_notices(&snap), 0, "prune left unreferenced data");
    let freed = used - size_under(&snap.repo);
    fs::remove_dir_all(src.join("big")).unwrap();
    fs::write(src.join("after.txt"), "written after the disk was full\n").unwrap();
    let second = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    assert_restores(&snap, &second, &src, &src, Compare::all());
    assert_restores(&snap, &first, &src, &first_state, Compare::all());
    eprintln!("full disk: clean failure, {notices} notices, prune freed {freed} bytes, next backup fine");
}

// ---------------------------------------------------------------- read-only repository

/// Reading commands work and writing ones fail cleanly; nothing changes.
fn check_read_only(ro: &Snap, src: &Path, id: &str, what: Compare, repo: &Path) {
    let before = contents_under(repo);
    assert_eq!(ro.snapshots().len(), 1);
    assert!(ro.ls_paths(id).contains(s(&src.join("sub/c.txt"))));
    verify_notices(ro);
    assert_restores(ro, id, src, src, what);
    for args in [vec!["create", s(src)], vec!["prune"], vec!["forget", id]] {
        let out = ro.run(&args);
        assert!(!panicked(&out), "{args:?}: {}", describe(&out));
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            [
                "Read-only file system",
                "Permission denied",
                "os error 30",
                "os error 13"
            ]
            .iter()
            .any(|m| err.contains(m)),
            "{args:?}: the message does not say why: {}",
            describe(&out)
        );
    }
    assert_eq!(contents_under(repo), before, "the read-only repository changed");
}

/// A read-only bind mount of the repository (root only).
#[test]
fn read_only_mounted_repository_can_be_read_not_written() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    small_tree(&src);
    let id = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    let view = snap.scratch().join("read-only");
    fs::create_dir(&view).unwrap();
    let Some(_mount) = read_only_bind(&snap.repo, &view) else {
        return;
    };
    let mut ro = Snap::new();
    ro.repo = view.clone();
    check_read_only(&ro, &src, &id, Compare::all(), &snap.repo);
}

/// A repository the user may read but not write: as root, snap runs as
/// `nobody`; otherwise the repository's permission bits are cleared.
#[test]
fn read_only_repository_for_this_user_can_be_read_not_written() {
    let snap = Snap::init(&[]);
    chmod(snap.scratch(), 0o755);
    let src = snap.scratch().join("src");
    small_tree(&src);
    let id = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    let Some(mut ro) = Snap::unprivileged(&src) else {
        return;
    };
    ro.repo = snap.repo.clone();
    // A new repository is private to its owner (0600/0700); shared
    // read-only with everyone on purpose here.
    let mode = Command::new("chmod")
        .args(["-R", "a+rX,a-w"])
        .arg(&snap.repo)
        .status()
        .unwrap();
    assert!(mode.success());
    let what = Compare {
        owner: is_root() == ro.user.is_none(),
        ..Compare::all()
    };
    check_read_only(&ro, &src, &id, what, &snap.repo);
    make_removable(snap.scratch());
    make_removable(ro.scratch());
}

// ---------------------------------------------------------------- a changing source

/// Content that names its own seed and length, so a copy of any prefix of
/// it can be checked: 8 bytes seed, 8 bytes length, then random bytes.
fn self_describing(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len.max(16));
    bytes.extend_from_slice(&seed.to_le_bytes());
    bytes.extend_from_slice(&(len as u64).to_le_bytes());
    bytes.extend_from_slice(&random_bytes(len.saturating_sub(16), seed));
    bytes
}

/// Whether `bytes` is a prefix of the [`self_describing`] content it names.
fn is_self_describing_prefix(bytes: &[u8]) -> bool {
    if bytes.len() < 16 {
        return true;
    }
    let seed = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    len >= bytes.len() && self_describing(seed, len).starts_with(bytes)
}

/// While `stop` is false: deletes and rewrites (in two steps) files in
/// `churn/`, creates and removes directories there, and appends to the
/// files in `grow/`.
fn churn(src: &Path, stop: &AtomicBool, seed: u64) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut changes = 0;
    while !stop.load(Ordering::Relaxed) {
        let i = rng.random_range(0..20);
        let path = src.join(format!("churn/c{i}"));
        let _ = fs::remove_file(&path);
        let content = self_describing(rng.random(), rng.random_range(0..300_000));
        let mut file = fs::File::create(&path).unwrap();
        let half = content.len() / 2;
        file.write_all(&content[..half]).unwrap();
        std::thread::yield_now();
        file.write_all(&content[half..]).unwrap();
        drop(file);

        let dir = src.join(format!("churn/d{}", rng.random_range(0..5)));
        if dir.exists() {
            let _ = fs::remove_dir_all(&dir);
        } else {
            fs::create_dir_all(dir.join("inner")).unwrap();
            fs::write(dir.join("inner/f"), "in a short-lived directory\n").unwrap();
        }

        let grow = src.join(format!("grow/g{}", rng.random_range(0..4)));
        let mut file = fs::OpenOptions::new().append(true).open(&grow).unwrap();
        file.write_all(&random_bytes(16 * 1024, rng.random())).unwrap();
        changes += 1;
        // Leave the backup some of the machine.
        std::thread::sleep(Duration::from_millis(2));
    }
    changes
}

/// Files deleted, recreated and appended to while `create` runs: it exits 0
/// or 3, never crashes, the snapshot restores, files that did not change are
/// bit-exact, and every other file holds bytes that really were in it.
fn vanishing_and_growing(backups: usize) {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let src = snap.scratch().join("src");
    for dir in ["stable/deep", "churn", "grow"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    for i in 0..6 {
        write_random_file(&src.join(format!("stable/s{i}.bin")), 300_000, 50 + i);
    }
    fs::write(src.join("stable/deep/t.txt"), "never changes\n".repeat(2000)).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("grow/g{i}")), random_bytes(200_000, 60 + i)).unwrap();
    }
    set_tree_times(&src.join("stable"));
    let stable = snap.scratch().join("stable-copy");
    copy_dir(&src.join("stable"), &stable);

    let stop = AtomicBool::new(false);
    let mut ids = Vec::new();
    let changes = std::thread::scope(|scope| {
        let churner = scope.spawn(|| churn(&src, &stop, 7));
        let _stop = StopOnDrop(&stop);
        for _ in 0..backups {
            let out = snap.run(&["create", "--json", s(&src)]);
            assert!(!panicked(&out), "{}", describe(&out));
            assert!(matches!(out.status.code(), Some(0 | 3)), "{}", describe(&out));
            ids.push(parse_json(&out)["id"].as_str().unwrap().to_string());
        }
        stop.store(true, Ordering::Relaxed);
        churner.join().unwrap()
    });

    let mut checked = 0;
    for id in &ids {
        let target = snap.scratch().join(format!("restore-{}", &id[..8]));
        let out = snap.restore(id, &target, &[]);
        assert_code(&out, 0);
        let root = restored(&target, &src);
        assert_same_tree(&stable, &root.join("stable"), Compare::all());
        for file in files_under(&root.join("grow")) {
            let now = fs::read(src.join("grow").join(file.file_name().unwrap())).unwrap();
            let saved = fs::read(&file).unwrap();
            assert!(
                now.starts_with(&saved),
                "{}: {} bytes that were never the file's beginning",
                file.display(),
                saved.len()
            );
            checked += 1;
        }
        for file in files_under(&root.join("churn")) {
            let saved = fs::read(&file).unwrap();
            if file.parent().unwrap().ends_with("churn") {
                assert!(
                    is_self_describing_prefix(&saved),
                    "{}: bytes that were never in the file",
                    file.display()
                );
            }
            checked += 1;
        }
        fs::remove_dir_all(&target).unwrap();
    }
    verify_notices(&snap);
    eprintln!("changing source: {backups} backups during {changes} changes; {checked} changing files checked");
}

#[test]
fn files_vanishing_and_growing_during_a_backup() {
    vanishing_and_growing(3);
}

#[test]
#[ignore = "long: SNAP_TORTURE_N backups of a changing source (default 50)"]
fn torture_files_vanishing_and_growing() {
    vanishing_and_growing(torture_n(50));
}

// ---------------------------------------------------------------- a directory swapped for a symlink

const SECRET: &str = "OUTSIDE THE SOURCE";

/// `src/inner` and a symlink to a directory outside the source trade places
/// (`renameat2(RENAME_EXCHANGE)`) again and again while backups run. A
/// snapshot may hold the directory or the symlink, never the files the
/// symlink leads to.
fn swapped_directory(backups: usize) {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    let outside = snap.scratch().join("outside");
    for root in [&src.join("inner"), &outside] {
        fs::create_dir_all(root.join("deep")).unwrap();
        let secret = root == &outside;
        for i in 0..30 {
            let text = if secret {
                format!("{SECRET} {i}\n")
            } else {
                format!("inside {i}\n")
            };
            fs::write(root.join(format!("data{i}.txt")), &text).unwrap();
            fs::write(root.join(format!("deep/x{i}.txt")), &text).unwrap();
        }
    }
    fs::write(outside.join("only-outside.txt"), SECRET).unwrap();
    fs::write(src.join("top.txt"), "at the top\n").unwrap();
    let link = src.join("inner.swap");
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let stop = AtomicBool::new(false);
    let mut escapes = Vec::new();
    let swaps = std::thread::scope(|scope| {
        let swapper = scope.spawn(|| {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                renameat_with(CWD, src.join("inner"), CWD, &link, RenameFlags::EXCHANGE).expect("exchange");
                swaps += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
            // Leave the directory in place.
            if swaps % 2 == 1 {
                renameat_with(CWD, src.join("inner"), CWD, &link, RenameFlags::EXCHANGE).expect("exchange");
            }
            swaps
        });
        let _stop = StopOnDrop(&stop);
        for round in 0..backups {
            let out = snap.run(&["create", "--json", s(&src)]);
            assert!(!panicked(&out), "{}", describe(&out));
            assert!(matches!(out.status.code(), Some(0 | 3)), "{}", describe(&out));
            let id = parse_json(&out)["id"].as_str().unwrap().to_string();
            let prefix = format!("{}/", s(&src));
            for path in snap.ls_paths(&id) {
                let inside = path == s(&src) || path.starts_with(&prefix) || src.starts_with(&path);
                if !inside || path.contains("only-outside") {
                    escapes.push(format!("backup {round}: snapshot {} lists {path}", &id[..8]));
                }
            }
            let target = snap.scratch().join("restore");
            assert_code(&snap.restore(&id, &target, &[]), 0);
            for file in files_under(&target) {
                if contains(&fs::read(&file).unwrap(), SECRET.as_bytes()) {
                    escapes.push(format!(
                        "backup {round}: snapshot {} holds the content of a file outside the source as {}",
                        &id[..8],
                        file.display()
                    ));
                }
            }
            fs::remove_dir_all(&target).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap()
    });
    eprintln!(
        "swapped directory: {backups} backups during {swaps} swaps; {} escapes",
        escapes.len()
    );
    let shown: Vec<&String> = escapes.iter().take(10).collect();
    assert!(
        escapes.is_empty(),
        "{} files from outside the source, the first: {shown:#?}",
        escapes.len()
    );
}

#[test]
fn directory_swapped_for_a_symlink_never_lets_outside_files_in() {
    swapped_directory(20);
}
