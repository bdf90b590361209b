//! Sources that cannot be read: unreadable files and directories are
//! skipped and reported (exit 3, snapshot saved); a missing path argument
//! fails the backup.

use std::fs;

use super::util::*;

/// As root, permission bits do not stop reads, so snap runs as `nobody`
/// (uid/gid 65534) there; otherwise as the test's own user.
#[test]
fn unreadable_file_and_directory_are_skipped_and_reported() {
    let work = tempdir();
    chmod(work.path(), 0o755);
    let Some(snap) = Snap::unprivileged(work.path()) else {
        return;
    };
    snap.init_repo(&[]);

    let src = work.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::write(src.join("ok.txt"), b"readable\n").unwrap();
    fs::write(src.join("sub/ok2.bin"), random_bytes(100_000, 11)).unwrap();
    fs::write(src.join("secret.txt"), b"nobody may read this\n").unwrap();
    fs::write(src.join("locked/inner.txt"), b"behind a locked directory\n").unwrap();
    chmod(&src.join("secret.txt"), 0o000);
    chmod(&src.join("locked"), 0o000);

    let out = snap.run(&["create", "--json", s(&src)]);
    assert_code(&out, 3);
    let created = parse_json(&out);
    assert_eq!(summary(&created, "errors"), 2, "{created}");
    let warned: Vec<&str> = created["warnings"]
        .as_array()
        .expect("warnings array")
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    for path in [src.join("secret.txt"), src.join("locked")] {
        assert!(
            warned.contains(&s(&path)),
            "{} not in warnings {warned:?}",
            path.display()
        );
        assert!(
            stderr(&out).contains(s(&path)),
            "{} not named on stderr\n{}",
            path.display(),
            describe(&out)
        );
    }

    // The snapshot was saved, without the unreadable content.
    let snapshots = snap.snapshots();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["id"], created["id"]);
    let listed = snap.ls_paths("latest");
    for present in ["ok.txt", "sub", "sub/ok2.bin", "locked"] {
        assert!(
            listed.contains(s(&src.join(present))),
            "{present} missing from ls: {listed:?}"
        );
    }
    for absent in ["secret.txt", "locked/inner.txt"] {
        assert!(!listed.contains(s(&src.join(absent))), "{absent} is in ls: {listed:?}");
    }

    let target = snap.scratch().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    let dir = restored(&target, &src);
    for rel in ["ok.txt", "sub/ok2.bin"] {
        assert!(same_content(&src.join(rel), &dir.join(rel)), "{rel}");
    }
    assert!(!dir.join("secret.txt").exists());
    make_removable(work.path());
    make_removable(snap.scratch());
}

#[test]
fn missing_source_path_fails_and_writes_no_snapshot() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    let missing = snap.scratch().join("does-not-exist");
    // Alone; beside an existing path it is a warning (create_args.rs).
    let out = snap.run(&["create", s(&missing)]);
    let code = out.status.code();
    assert!(code != Some(0) && code != Some(3), "{}", describe(&out));
    assert!(
        stderr(&out).contains(s(&missing)),
        "the missing path is not named: {}",
        describe(&out)
    );
    assert!(snap.snapshots().is_empty(), "a snapshot was written");

    // A dangling symlink given as the path is backed up as a symlink.
    let link = snap.scratch().join("dangling");
    std::os::unix::fs::symlink("nowhere/at/all", &link).unwrap();
    snap.create(&[s(&link)]);
    let entry = snap
        .ls("latest")
        .into_iter()
        .find(|e| e["path"] == s(&link))
        .expect("the symlink is listed");
    assert_eq!(entry["type"], "symlink");
    assert_eq!(entry["link_target"], "nowhere/at/all");
}

/// An I/O error names the path and the OS error once.
#[test]
fn io_errors_name_the_os_error_once() {
    let snap = Snap::init(&[]);
    let missing = snap.scratch().join("does-not-exist");
    let out = snap.run(&["create", s(&missing)]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let out = snap.run(&["create", "--exclude-file", s(&missing), s(snap.scratch())]);
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
