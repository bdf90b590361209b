//! Restore against what stands in its way (issue 10): entries in the way,
//! damaged content, sparse files, symlinks planted by another user while
//! root restores, trees deeper than `PATH_MAX`, symlinked parents of a
//! backed-up path, and times snap cannot store.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::util::*;

#[test]
fn a_directory_in_the_way_of_a_file_is_left_alone() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    chmod(&src.join("f"), 0o644);
    fs::write(src.join("g"), b"other").unwrap();
    set_tree_times(&src);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    let dir = restored(&target, &src);
    // A directory stands where the snapshot has the file `f`.
    fs::create_dir_all(dir.join("f")).unwrap();
    fs::write(dir.join("f").join("keep"), b"mine").unwrap();
    chmod(&dir.join("f"), 0o751);
    set_mtime(&dir.join("f"), 1_000_000_000, 0);
    let out = snap.restore("latest", &target, &["--json"]);
    assert_code(&out, 3);
    let report = parse_json(&out);
    let errors = report["errors"].as_array().unwrap();
    let f = dir.join("f");
    assert!(
        errors.iter().any(|e| e["path"].as_str() == Some(s(&f))),
        "f not in the errors: {errors:?}"
    );
    // The failed entry got none of the file's metadata, and its content stays.
    let meta = fs::symlink_metadata(&f).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o751,
        "the directory took the file's mode"
    );
    assert_eq!(meta.mtime(), 1_000_000_000, "the directory took the file's mtime");
    assert_eq!(fs::read(f.join("keep")).unwrap(), b"mine");
    assert_eq!(fs::read(dir.join("g")).unwrap(), b"other");
}

#[test]
fn a_damaged_hard_linked_file_is_named_under_every_name_and_never_restored_as_itself() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ok"), b"intact").unwrap();
    snap.create(&[s(&src)]);
    let before: Vec<PathBuf> = packs(&snap.repo).into_iter().map(|(p, _)| p).collect();
    // The second backup's only new data is `a` (= `b`, a hard link).
    write_random_file(&src.join("a"), 300_000, 7);
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    set_mtime(&src.join("a"), 1_300_000_000, 0);
    snap.create(&[s(&src)]);
    let data_pack = packs(&snap.repo)
        .into_iter()
        .find(|(p, _)| !before.contains(p))
        .expect("a new pack")
        .0;
    fs::remove_file(&data_pack).unwrap();

    let target = snap.scratch().join("t");
    let out = snap.restore("latest", &target, &["--json"]);
    assert_code(&out, 3);
    let report = parse_json(&out);
    let dir = restored(&target, &src);
    let paths: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let damaged: Vec<&str> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for name in ["a", "b"] {
        let own = dir.join(name);
        let marked = dir.join(format!("{name}.damaged"));
        assert!(!own.exists(), "{name} restored under its own name with content missing");
        assert!(marked.is_file(), "{} missing", marked.display());
        assert!(
            paths.contains(&s(&marked)),
            "{name}.damaged not in the errors: {paths:?}"
        );
        assert!(
            damaged.contains(&s(&marked)),
            "{name}.damaged not in `damaged`: {damaged:?}"
        );
        // Not passing for the original: its mtime is not the file's.
        assert_ne!(fs::metadata(&marked).unwrap().mtime(), 1_300_000_000);
        assert!(err_names(&out, &marked), "{name}.damaged not on stderr");
    }
    assert_eq!(
        fs::metadata(dir.join("a.damaged")).unwrap().ino(),
        fs::metadata(dir.join("b.damaged")).unwrap().ino(),
        "still one file"
    );
    assert_eq!(fs::read(dir.join("ok")).unwrap(), b"intact");
}

fn err_names(out: &std::process::Output, path: &Path) -> bool {
    stderr(out).contains(&format!("{}:", path.display()))
}

/// Scattered 4 KiB writes into a large file: the restored file is about as
/// sparse as the source (chunks hold both data and long zero runs).
#[test]
fn zero_blocks_inside_chunks_come_back_as_holes() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    let path = src.join("sparse");
    let file = fs::File::create(&path).unwrap();
    let size = 64 * MIB;
    file.set_len(size).unwrap();
    let block = random_bytes(4096, 3);
    let mut offset = 12_345u64;
    while offset < size - 4096 {
        file.write_all_at(&block, offset).unwrap();
        offset += 1_048_573; // not block-aligned, one per MiB
    }
    drop(file);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    let out = snap.restore("latest", &target, &[]);
    assert_code(&out, 0);
    let back = restored(&target, &path);
    assert!(same_content(&path, &back));
    let (want, got) = (
        fs::metadata(&path).unwrap().blocks(),
        fs::metadata(&back).unwrap().blocks(),
    );
    eprintln!("sparse: source {want} blocks, restored {got} blocks");
    assert!(got <= 2 * want, "restored {got} blocks of 512 bytes, the source {want}");
}

/// A thread that acts as `nobody` (credentials are per thread on Linux, and
/// the raw syscalls change only this one's).
fn become_nobody() {
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
    }
}

/// While root restores into a directory that `nobody` owns, `nobody` swaps
/// every directory and file restore makes there for a symlink to a
/// root-owned directory or file outside the target. Nothing outside changes.
#[test]
fn symlinks_planted_during_a_restore_are_never_followed() {
    if !is_root() {
        eprintln!("note: needs root (a restore by root, a swapper as nobody); skipped");
        return;
    }
    let snap = Snap::init(&[]);
    chmod(snap.scratch(), 0o755);
    let src = snap.scratch().join("src");
    let d = src.join("d");
    fs::create_dir_all(&d).unwrap();
    for i in 0..150 {
        let sub = d.join(format!("sub{i}"));
        fs::create_dir(&sub).unwrap();
        for j in 0..2 {
            fs::write(sub.join(format!("f{j}")), format!("{i}/{j}")).unwrap();
        }
        fs::write(d.join(format!("f{i}")), vec![b'x'; 100 + i]).unwrap();
        chmod(&d.join(format!("f{i}")), 0o644);
    }
    snap.create(&[s(&src)]);

    let outside = snap.scratch().join("outside");
    fs::create_dir(&outside).unwrap();
    chmod(&outside, 0o755);
    let secret = outside.join("secret");
    fs::write(&secret, b"root only").unwrap();
    chmod(&secret, 0o600);

    let mut total_swaps = 0;
    for round in 0..3 {
        let target = snap.scratch().join(format!("t{round}"));
        let theirs = target.join("src").join("d");
        fs::create_dir_all(&theirs).unwrap();
        chmod(&target, 0o755);
        chmod(&target.join("src"), 0o755);
        chown(&theirs, 65534, 65534);
        chmod(&theirs, 0o755);

        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicUsize::new(0));
        let swapper = {
            let (stop, swaps, theirs, outside) = (stop.clone(), swaps.clone(), theirs.clone(), outside.clone());
            std::thread::spawn(move || {
                become_nobody();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(entries) = fs::read_dir(&theirs) else { continue };
                    for entry in entries.flatten() {
                        let name = entry.file_name();
                        if name.to_string_lossy().starts_with("moved") {
                            continue;
                        }
                        let path = theirs.join(&name);
                        let Ok(meta) = fs::symlink_metadata(&path) else {
                            continue;
                        };
                        let to = if meta.is_dir() {
                            outside.clone()
                        } else if meta.is_file() {
                            outside.join("secret")
                        } else {
                            continue;
                        };
                        n += 1;
                        if fs::rename(&path, theirs.join(format!("moved{n}"))).is_ok()
                            && std::os::unix::fs::symlink(&to, &path).is_ok()
                        {
                            swaps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let out = snap.restore("latest", &target, &["--path", s(&src)]);
        stop.store(true, Ordering::Relaxed);
        swapper.join().expect("swapper");
        assert!(!panicked(&out), "{}", describe(&out));
        assert!(matches!(out.status.code(), Some(0 | 3)), "{}", describe(&out));
        total_swaps += swaps.load(Ordering::Relaxed);

        let names: Vec<String> = dir_names(&outside);
        assert_eq!(names, vec!["secret".to_string()], "root wrote outside the target");
        let meta = fs::metadata(&secret).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o600,
            "a chmod followed a planted symlink"
        );
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "a chown followed a planted symlink");
        assert_eq!(fs::read(&secret).unwrap(), b"root only");
    }
    assert!(
        total_swaps > 0,
        "the swapper never swapped anything: the test proved nothing"
    );
}

/// A snapshot 10,000 directories deep (about 20,000 bytes of path, far past
/// `PATH_MAX`) restores completely: no recursion on the stack, no path
/// longer than a name.
#[test]
#[ignore = "long: 10,000 trees written and restored (minutes on a loaded machine)"]
fn a_tree_ten_thousand_levels_deep_restores() {
    deep_restore(10_000, b"d");
}

/// 200 levels of 60-byte names: 12,200 bytes of path, three times
/// `PATH_MAX`, restore through directory descriptors does not mind.
#[test]
fn a_tree_past_path_max_restores() {
    deep_restore(200, &[b'n'; 60]);
}

/// Writes a snapshot of a chain of `depth` directories named `name` with a
/// file at the bottom (with the library: the archiver's own limits are not
/// what this tests), restores it with snap and checks the file.
fn deep_restore(depth: usize, name: &[u8]) {
    use snap_core::pack::BlobKind;
    use snap_core::tree::{Node, NodeKind, Tree};
    let snap = Snap::init(&[]);
    let backend = Arc::new(snap_core::backend::LocalBackend::new(snap.repo.clone()));
    let password = snap_core::keys::Password::new(PASSWORD);
    let repo =
        snap_core::repo::Repository::open(backend, Some(&password), &snap.scratch().join("libcache")).expect("open");
    let packer = snap_core::packer::Packer::new(&repo, repo.config().compression).unwrap();
    let content = packer.add(BlobKind::Data, b"at the bottom\n").unwrap().0;
    let mut leaf = Node::new(b"leaf".to_vec(), NodeKind::File);
    leaf.mode = 0o644;
    leaf.size = 14;
    leaf.content = vec![content];
    let mut tree = Tree { nodes: vec![leaf] };
    for _ in 0..depth {
        let id = packer.add(BlobKind::Tree, &tree.encode()).unwrap().0;
        let mut dir = Node::new(name.to_vec(), NodeKind::Dir);
        dir.mode = 0o755;
        dir.subtree = Some(id);
        tree = Tree { nodes: vec![dir] };
    }
    let root = packer.add(BlobKind::Tree, &tree.encode()).unwrap().0;
    packer.finish().unwrap();
    snap_core::snapshot::Snapshot {
        time: jiff::Timestamp::now(),
        host: "deep".into(),
        username: "deep".into(),
        paths: vec!["/d".into()],
        tags: vec![],
        tree: root,
        parent: None,
        program_version: "test".into(),
        summary: Default::default(),
        description: None,
        original: None,
    }
    .save(&repo)
    .unwrap();
    drop(repo);

    let target = snap.scratch().join("t");
    let out = snap.restore("latest", &target, &[]);
    assert_code(&out, 0);
    // Down through descriptors: the path is too long for the kernel.
    let mut dir: OwnedFd = rustix::fs::open(&target, rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty()).unwrap();
    for level in 0..depth {
        dir = rustix::fs::openat(
            dir.as_fd(),
            std::ffi::OsStr::from_bytes(name),
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("level {level}: {e}"));
    }
    let leaf = rustix::fs::openat(
        dir.as_fd(),
        "leaf",
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&leaf, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"at the bottom\n");
    drop((dir, leaf));
    remove_chain(&target, std::ffi::OsStr::from_bytes(name));
}

/// Removes a chain `d/d/d/...` too deep for paths (and for a recursive
/// removal) one level at a time from the top: the child moves up beside its
/// parent, which is then empty.
fn remove_chain(dir: &Path, name: &std::ffi::OsStr) {
    let (top, spare) = (dir.join(name), dir.join("spare"));
    while top.join(name).exists() {
        fs::rename(top.join(name), &spare).unwrap();
        fs::remove_dir(&top).unwrap();
        fs::rename(&spare, &top).unwrap();
    }
    fs::remove_dir_all(&top).unwrap();
}

/// `create .../link/sub` where `link` is a symlink to a directory: the
/// directory above the backed-up path comes back with the real directory's
/// metadata, not the symlink's 0777.
#[test]
fn a_symlinked_parent_of_a_source_path_is_not_restored_as_0777() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    let real = src.join("real");
    fs::create_dir_all(real.join("sub")).unwrap();
    fs::write(real.join("sub").join("f"), b"f").unwrap();
    std::os::unix::fs::symlink("real", src.join("link")).unwrap();
    chmod(&real, 0o750);
    set_mtime(&real, 1_200_000_000, 0);
    snap.create(&[s(&src.join("link").join("sub"))]);
    let target = snap.scratch().join("t");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    let link = restored(&target, &src.join("link"));
    let meta = fs::symlink_metadata(&link).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o750,
        "not the real directory's mode"
    );
    assert_eq!(meta.mtime(), 1_200_000_000, "not the real directory's mtime");
    assert_eq!(fs::read(link.join("sub").join("f")).unwrap(), b"f");
}

#[test]
fn a_time_after_2262_is_clamped_with_a_warning() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    let f = src.join("future");
    fs::write(&f, b"later").unwrap();
    // 2286-11-20: past what i64 nanoseconds hold.
    set_mtime(&f, 10_000_000_000, 0);
    let out = snap.ok(&["create", s(&src)]);
    assert!(
        stderr(&out).contains(&format!("{}: modification time is after 2262", f.display())),
        "no warning on create\n{}",
        describe(&out)
    );
    let target = snap.scratch().join("t");
    let out = snap.restore("latest", &target, &[]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("modification time is after 2262"),
        "no warning on restore\n{}",
        describe(&out)
    );
    assert_eq!(fs::read(restored(&target, &f)).unwrap(), b"later");
}

/// Files of one blob are created without a name and linked in once their
/// content, owner, mode and times are set (issue 11): every mode comes back
/// whatever the umask, zeros at the end of a file stay its length, and an
/// entry already at the name is replaced in one step (no temporary name is
/// left either way).
#[test]
fn small_files_come_back_whole_with_their_metadata_and_replace_what_is_there() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    let mut tail_zeros = b"data, then zeros".to_vec();
    tail_zeros.resize(3 * 4096 + 17, 0);
    let files: Vec<(&str, Vec<u8>, u32)> = vec![
        ("plain", b"plain text".to_vec(), 0o644),
        ("group-writable", b"umask would drop a bit".to_vec(), 0o664),
        ("open", b"everyone".to_vec(), 0o777),
        ("read-only", b"owner reads".to_vec(), 0o400),
        ("no-access", b"nobody".to_vec(), 0o000),
        ("setuid", b"#!/bin/sh\n".to_vec(), 0o4755),
        ("tail-zeros", tail_zeros, 0o644),
        ("zeros", vec![0u8; 3 * 4096], 0o640),
        ("empty", Vec::new(), 0o600),
    ];
    for (name, content, _) in &files {
        fs::write(src.join(name), content).unwrap();
    }
    for (name, _, mode) in &files {
        chmod(&src.join(name), *mode);
    }
    set_tree_times(&src);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    let check = |round: &str| {
        let dir = restored(&target, &src);
        for (name, content, mode) in &files {
            let (want, got) = (src.join(name), dir.join(name));
            let (w, g) = (fs::metadata(&want).unwrap(), fs::metadata(&got).unwrap());
            assert_eq!(g.mode() & 0o7777, *mode, "{round}: mode of {name}");
            assert_eq!(g.len(), content.len() as u64, "{round}: length of {name}");
            assert_eq!(
                (g.mtime(), g.mtime_nsec()),
                (w.mtime(), w.mtime_nsec()),
                "{round}: mtime of {name}"
            );
            assert_eq!((g.uid(), g.gid()), (w.uid(), w.gid()), "{round}: owner of {name}");
            assert!(same_content(&want, &got), "{round}: content of {name}");
        }
        let temps: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.as_bytes().starts_with(b".snap-restore-"))
            .collect();
        assert!(temps.is_empty(), "{round}: temporary names left: {temps:?}");
        dir
    };
    let out = snap.restore("latest", &target, &[]);
    assert_code(&out, 0);
    let dir = check("new");
    let inodes: Vec<u64> = files
        .iter()
        .map(|(name, _, _)| fs::metadata(dir.join(name)).unwrap().ino())
        .collect();
    // Again over what is there: every name replaced by a new file.
    let out = snap.restore("latest", &target, &["--overwrite", "always"]);
    assert_code(&out, 0);
    check("overwritten");
    for ((name, _, _), before) in files.iter().zip(inodes) {
        assert_ne!(
            fs::metadata(dir.join(name)).unwrap().ino(),
            before,
            "{name} not replaced"
        );
    }
}
