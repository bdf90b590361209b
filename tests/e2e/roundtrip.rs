//! Back up and restore: the whole tree (again over itself), a subtree,
//! standard input, an unencrypted repository, relative and multiple source
//! paths, and two backups at once.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::util::*;

/// Every file type and the metadata snap keeps survive a round trip.
#[test]
fn round_trip_restores_every_file_type_and_metadata() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let info = build_rich_tree(&src, true);
    let sparse = info.sparse.clone().expect("sparse file made");
    let sparse_allocated = fs::metadata(&sparse).unwrap().blocks() * 512;

    let created = snap.create(&[s(&src)]);
    assert_eq!(summary(&created, "errors"), 0, "{created}");
    assert_eq!(created["warnings"], serde_json::json!([]), "{created}");
    assert_eq!(summary(&created, "files_new"), count_files(&src), "{created}");

    let target = work.path().join("target");
    let out = snap.restore("latest", &target, &[]);
    assert_code(&out, 0);
    let restored_src = restored(&target, &src);
    assert_same_tree(&src, &restored_src, Compare::all());

    // Hard links come back as one inode with three names.
    let a = fs::metadata(restored_src.join("hard_a")).unwrap();
    let c = fs::metadata(restored_src.join("dir/sub/hard_c")).unwrap();
    assert_eq!(
        (a.ino(), a.nlink()),
        (c.ino(), 3),
        "hard links restored as separate files"
    );

    // The sparse file keeps its holes: 50 MiB apparent, a few blocks on disk.
    let restored_sparse = restored(&target, &sparse);
    let meta = fs::metadata(&restored_sparse).unwrap();
    assert_eq!(meta.len(), 50 * MIB);
    if sparse_allocated < MIB {
        assert!(
            meta.blocks() * 512 < 2 * MIB,
            "restored sparse file occupies {} bytes on disk for 50 MiB of mostly holes",
            meta.blocks() * 512
        );
    } else {
        eprintln!("note: this filesystem does not keep sparse files sparse; not checked");
    }
    // Restoring again over the restored tree gives the same tree (files are
    // rewritten, links and special files replaced). As root only: see
    // `restore_again_as_an_unprivileged_user` for the rest.
    if is_root() {
        let out = snap.restore("latest", &target, &[]);
        assert_code(&out, 0);
        assert_same_tree(&src, &restored_src, Compare::all());
    }

    if info.device {
        let meta = fs::symlink_metadata(restored_src.join("null")).unwrap();
        assert!(meta.file_type().is_char_device(), "device node restored as {meta:?}");
    }
    make_removable(work.path());
}

/// `restore --path` restores exactly that subtree, under its own name.
#[test]
fn restore_path_gives_exactly_the_subtree() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("keep/inner")).unwrap();
    fs::create_dir_all(src.join("other")).unwrap();
    fs::write(src.join("keep/a.txt"), b"a").unwrap();
    fs::write(src.join("keep/inner/b.bin"), random_bytes(300_000, 7)).unwrap();
    std::os::unix::fs::symlink("../a.txt", src.join("keep/inner/up")).unwrap();
    fs::write(src.join("other/c.txt"), b"c").unwrap();
    fs::write(src.join("top.txt"), b"top").unwrap();
    // A sibling whose name starts like the restored one.
    fs::create_dir_all(src.join("keep2")).unwrap();
    fs::write(src.join("keep2/d.txt"), b"d").unwrap();
    set_tree_times(&src);
    snap.create(&[s(&src)]);

    let target = work.path().join("t1");
    assert_code(&snap.restore("latest", &target, &["--path", s(&src.join("keep"))]), 0);
    assert_eq!(dir_names(&target), ["keep"]);
    assert_same_tree(&src.join("keep"), &target.join("keep"), Compare::all());

    // A single file, and two paths at once.
    let target = work.path().join("t2");
    let (file, other) = (src.join("keep/inner/b.bin"), src.join("other"));
    assert_code(
        &snap.restore("latest", &target, &["--path", s(&file), "--path", s(&other)]),
        0,
    );
    assert_eq!(dir_names(&target), ["b.bin", "other"]);
    assert!(same_content(&src.join("keep/inner/b.bin"), &target.join("b.bin")));
    assert_same_tree(&src.join("other"), &target.join("other"), Compare::all());
}

/// `restore --path` of a path the snapshot does not have is a usage error.
#[test]
fn restore_path_not_in_the_snapshot_is_a_usage_error() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(src.join("keep/a.txt"), b"a").unwrap();
    snap.create(&[s(&src)]);
    let target = work.path().join("t3");
    let out = snap.restore("latest", &target, &["--path", s(&src.join("nope"))]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("nope"), "{}", describe(&out));
    assert!(
        !target.exists() || dir_names(&target).is_empty(),
        "something was restored: {:?}",
        dir_names(&target)
    );
}

/// `create --stdin` stores a stream as one file that restores byte for byte.
#[test]
fn stdin_backup_restores_the_same_bytes() {
    let snap = Snap::init(&[]);
    let data = random_bytes(5 * MIB as usize, 9);
    let out = snap.run_with_stdin(
        &["create", "--json", "--stdin", "--stdin-filename", "dump.sql"],
        data.clone(),
    );
    assert_code(&out, 0);
    let created = parse_json(&out);
    assert_eq!(created["paths"], serde_json::json!(["/dump.sql"]), "{created}");
    assert_eq!(summary(&created, "bytes_total"), data.len() as u64);

    let entries = snap.ls("latest");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["path"], "/dump.sql");
    assert_eq!(entries[0]["size"], data.len() as u64);

    let target = snap.scratch().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_eq!(dir_names(&target), ["dump.sql"]);
    let restored = fs::read(target.join("dump.sql")).unwrap();
    assert!(
        restored == data,
        "restored stream differs ({} bytes, expected {})",
        restored.len(),
        data.len()
    );
}

/// `create --stdin < FILE` reads a regular file from where its offset
/// stands (directly, around the page cache, when it is large), leaves the
/// shared file description's flags as they were and its offset at the end,
/// as a buffered read would.
#[test]
fn stdin_redirected_from_a_large_file_stores_it_from_its_offset() {
    use std::io::{Seek, SeekFrom};
    let snap = Snap::init(&[]);
    // Past the direct reader's 32 MiB, text and random runs.
    let mut data = random_bytes(40 * MIB as usize, 11);
    for run in data.chunks_mut(3 * MIB as usize).step_by(2) {
        for (i, b) in run.iter_mut().enumerate() {
            *b = b"INSERT INTO t VALUES (1, 'x');\n"[i % 31];
        }
    }
    let path = snap.scratch().join("disk.img");
    fs::write(&path, &data).unwrap();
    for skip in [0u64, 8192, 12345] {
        let mut file = fs::File::open(&path).unwrap();
        // Out of the page cache where the kernel allows, so the read is direct.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        file.seek(SeekFrom::Start(skip)).unwrap();
        let before = rustix::fs::fcntl_getfl(&file).unwrap();
        let out = snap
            .command()
            .args(["create", "--json", "--stdin", "--stdin-filename", "disk.img"])
            .stdin(file.try_clone().unwrap())
            .output()
            .unwrap();
        assert_code(&out, 0);
        assert_eq!(
            summary(&parse_json(&out), "bytes_total"),
            data.len() as u64 - skip,
            "skip {skip}"
        );
        assert_eq!(
            rustix::fs::fcntl_getfl(&file).unwrap(),
            before,
            "flags put back (skip {skip})"
        );
        assert_eq!(file.stream_position().unwrap(), data.len() as u64, "offset at the end");

        let target = snap.scratch().join(format!("target-{skip}"));
        assert_code(&snap.restore("latest", &target, &[]), 0);
        let restored = fs::read(target.join("disk.img")).unwrap();
        assert!(
            restored == data[skip as usize..],
            "restored stream differs at skip {skip} ({} bytes)",
            restored.len()
        );
    }
}

/// An unencrypted repository round-trips without any password.
#[test]
fn unencrypted_repository_round_trip_needs_no_password() {
    let snap = Snap::init_unencrypted(&["--chunk-sizes", SMALL_CHUNKS]);
    assert!(snap.password.is_none());
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src, false);
    snap.create(&[s(&src)]);
    assert_eq!(snap.snapshots().len(), 1);
    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
    make_removable(work.path());
}

/// Relative source paths are recorded as absolute ones, and one snapshot of
/// two separate directories restores both.
#[test]
fn relative_and_multiple_source_paths() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    for (dir, file) in [("one", "a.txt"), ("two/nested", "b.txt")] {
        fs::create_dir_all(work.path().join(dir)).unwrap();
        fs::write(work.path().join(dir).join(file), dir.as_bytes()).unwrap();
    }
    let out = snap
        .command()
        .current_dir(work.path().join("two"))
        .args(["create", "--json", "../one", "./nested/../nested", "nested"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let created = parse_json(&out);
    let (one, nested) = (work.path().join("one"), work.path().join("two/nested"));
    let mut paths: Vec<&str> = created["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, [s(&one), s(&nested)], "{created}");

    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&one, &restored(&target, &one), Compare::all());
    assert_same_tree(&nested, &restored(&target, &nested), Compare::all());
    // Only the given paths: `two` holds nothing but `nested`.
    assert_eq!(dir_names(&restored(&target, &work.path().join("two"))), ["nested"]);
}

/// Two backups into one repository at the same time both succeed and both
/// restore. (Chunks both are uploading at the same moment may be stored
/// twice; only more than that would be wrong.)
#[test]
fn two_concurrent_backups_into_one_repository() {
    let snap = Snap::init(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let shared = random_bytes(4 * MIB as usize, 77);
    let mut sources = Vec::new();
    for (i, name) in ["left", "right"].into_iter().enumerate() {
        let dir = work.path().join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("own.bin"), random_bytes(8 * MIB as usize, i as u64)).unwrap();
        fs::write(dir.join("shared.bin"), &shared).unwrap();
        set_tree_times(&dir);
        sources.push(dir);
    }
    let children: Vec<_> = sources
        .iter()
        .map(|dir| {
            snap.command()
                .args(["create", "--json", s(dir)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut added = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_code(&out, 0);
        added += summary(&parse_json(&out), "bytes_added_raw");
    }
    assert!(added <= 24 * MIB + 64 * 1024, "24 MiB of files stored as {added} bytes");
    let snapshots = snap.snapshots();
    let mut paths: Vec<&str> = snapshots.iter().map(|v| v["paths"][0].as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(paths, [s(&sources[0]), s(&sources[1])]);
    for snapshot in &snapshots {
        let (id, path) = (
            snapshot["id"].as_str().unwrap(),
            Path::new(snapshot["paths"][0].as_str().unwrap()),
        );
        let target = work.path().join(format!("target-{id}"));
        assert_code(&snap.restore(id, &target, &[]), 0);
        assert_same_tree(path, &restored(&target, path), Compare::all());
    }
}

/// A second restore into the same target, by a user without privileges,
/// replaces the first one's files, read-only ones included.
#[test]
fn restore_again_as_an_unprivileged_user() {
    let work = tempdir();
    chmod(work.path(), 0o755);
    let Some(snap) = Snap::unprivileged(work.path()) else {
        return;
    };
    snap.init_repo(&[]);
    let src = work.path().join("src");
    fs::create_dir_all(src.join("ro")).unwrap();
    fs::write(src.join("readonly"), b"mode 444\n").unwrap();
    chmod(&src.join("readonly"), 0o444);
    fs::write(src.join("ro/inside"), b"in a read-only directory\n").unwrap();
    fs::write(src.join("plain"), b"plain\n").unwrap();
    chmod(&src.join("ro"), 0o555);
    set_tree_times(&src);
    snap.create(&[s(&src)]);

    let target = snap.scratch().join("target");
    let what = Compare {
        owner: false,
        ..Compare::all()
    };
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), what);
    let out = snap.restore("latest", &target, &[]);
    assert_code(&out, 0);
    assert_same_tree(&src, &restored(&target, &src), what);
    make_removable(snap.scratch());
}

/// Files whose blobs are spread over many packs are written a pack at a
/// time, so a restore holds many of them half-written at once. With few file
/// descriptors allowed (`ulimit -n 64`), it closes and reopens them instead
/// of failing, and every byte still lands where it belongs.
#[test]
fn restore_with_few_file_descriptors_allowed() {
    use std::os::unix::process::CommandExt;

    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..300u64 {
        write_random_file(&src.join(format!("f{i:03}")), 48 * 1024, i);
    }
    snap.create(&[s(&src)]);
    // New first blocks: every file now has blobs in old and in new packs.
    for i in 0..300u64 {
        let path = src.join(format!("f{i:03}"));
        let mut bytes = fs::read(&path).unwrap();
        bytes[..6000].copy_from_slice(&random_bytes(6000, 1000 + i));
        fs::write(&path, bytes).unwrap();
    }
    snap.create(&[s(&src)]);

    let target = work.path().join("target");
    let mut cmd = snap.command();
    cmd.args(["restore", "latest", "--target", s(&target)]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(64),
                maximum: Some(64),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).map_err(std::io::Error::from)
        });
    }
    let out = cmd.output().unwrap();
    assert_code(&out, 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}
