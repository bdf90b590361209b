//! Repository lifecycle: verify, forget, prune, repair, locks and keys.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::util::*;

/// A source tree whose content changes between snapshots: `common` stays,
/// `gen<N>` replaces the previous generation's directory.
fn write_generation(src: &Path, generation: u64) {
    if generation > 0 {
        let _ = fs::remove_dir_all(src.join(format!("gen{}", generation - 1)));
    }
    fs::create_dir_all(src.join("common")).unwrap();
    if generation == 0 {
        write_random_file(&src.join("common/base.bin"), 300_000, 1);
        fs::write(src.join("common/notes.txt"), "kept in every snapshot\n".repeat(200)).unwrap();
    }
    let dir = src.join(format!("gen{generation}"));
    fs::create_dir_all(&dir).unwrap();
    write_random_file(&dir.join("data.bin"), 400_000, 100 + generation);
}

fn snapshot_ids(snap: &Snap) -> Vec<String> {
    snap.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Restores every snapshot and checks it against the copy saved when it was taken.
fn assert_all_restore(snap: &Snap, copies: &[(String, std::path::PathBuf)], src: &Path) {
    let alive = snapshot_ids(snap);
    for (id, copy) in copies.iter().filter(|(id, _)| alive.contains(id)) {
        let target = snap.scratch().join(format!("check-{}", &id[..8]));
        let out = snap.restore(id, &target, &[]);
        assert_code(&out, 0);
        assert_same_tree(copy, &restored(&target, src), Compare::all());
        fs::remove_dir_all(&target).unwrap();
    }
}

/// Takes `n` snapshots of a changing tree, keeping a copy of each state.
fn history(snap: &Snap, n: u64) -> (std::path::PathBuf, Vec<(String, std::path::PathBuf)>) {
    let src = snap.scratch().join("src");
    let mut copies = Vec::new();
    for generation in 0..n {
        write_generation(&src, generation);
        set_tree_times(&src);
        let created = snap.create(&[s(&src)]);
        let copy = snap.scratch().join(format!("copy{generation}"));
        copy_tree(&src, &copy);
        copies.push((created["id"].as_str().unwrap().to_string(), copy));
    }
    (src, copies)
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn forget_and_prune_shrink_the_repository_and_keep_the_rest_intact() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    // Each generation's data is only in its own snapshot.
    let (src, copies) = history(&snap, 4);
    let before = size_under(&snap.repo.join("data"));

    let dry = snap.ok(&["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(snap.snapshots().len(), 4, "a dry run removes nothing");
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(text.contains("remove") && text.contains("last snapshot"), "{text}");

    snap.ok(&["forget", "--keep-last", "2", "--prune"]);
    assert_eq!(snap.snapshots().len(), 2);
    let after = size_under(&snap.repo.join("data"));
    assert!(
        after < before * 3 / 4,
        "the repository shrank: {before} -> {after} bytes"
    );

    snap.ok(&["verify", "--read-data"]);
    assert_all_restore(&snap, &copies, &src);

    // A second prune finds nothing more to do.
    let out = parse_json(&snap.ok(&["prune", "--json"]));
    assert_eq!(out["packs_deleted"], 0, "{out}");
}

#[test]
fn forget_refuses_to_empty_a_group_and_needs_a_policy() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write_generation(&src, 0);
    snap.create(&[s(&src), "--tag", "a"]);
    let out = snap.run_code(&["forget", "--keep-tag", "other"], 2);
    assert!(stderr(&out).contains("every snapshot"), "{}", describe(&out));
    let out = snap.run_code(&["forget"], 2);
    assert!(stderr(&out).contains("no policy"), "{}", describe(&out));
    assert_eq!(snap.snapshots().len(), 1);
    snap.ok(&["forget", "--keep-tag", "other", "--allow-empty-group"]);
    assert!(snap.snapshots().is_empty());
}

#[test]
fn forget_by_id_and_by_tag_policy() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write_generation(&src, 0);
    let a = snap.create(&[s(&src), "--tag", "keep"]);
    let b = snap.create(&[s(&src)]);
    let c = snap.create(&[s(&src)]);
    snap.ok(&["forget", b["short_id"].as_str().unwrap()]);
    let ids = snapshot_ids(&snap);
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&b["id"].as_str().unwrap().to_string()));
    // keep-tag keeps `a`, keep-last 1 keeps `c`.
    let decisions = parse_json(&snap.ok(&[
        "forget",
        "--keep-tag",
        "keep",
        "--keep-last",
        "1",
        "--json",
        "--dry-run",
    ]));
    let group = &decisions[0];
    let kept: Vec<&str> = group["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(kept.contains(&a["id"].as_str().unwrap()) && kept.contains(&c["id"].as_str().unwrap()));
}

/// Flips one byte in the middle of a file.
fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

/// A repository with one snapshot, and the pack files that hold data and trees.
fn damaged_fixture() -> (
    Snap,
    std::path::PathBuf,
    Vec<std::path::PathBuf>,
    Vec<std::path::PathBuf>,
) {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = snap.scratch().join("src");
    write_generation(&src, 0);
    write_generation(&src, 1);
    snap.create(&[s(&src)]);
    snap.ok(&["verify", "--read-data"]);
    // Tree packs are the ones without which `ls` fails.
    let (mut data, mut trees) = (Vec::new(), Vec::new());
    for (pack, _) in packs(&snap.repo) {
        let saved = fs::read(&pack).unwrap();
        flip_byte(&pack);
        snap.drop_tree_cache();
        let ls_ok = snap.run(&["ls", "latest"]).status.success();
        fs::write(&pack, saved).unwrap();
        if ls_ok {
            data.push(pack);
        } else {
            trees.push(pack);
        }
    }
    assert!(!data.is_empty() && !trees.is_empty(), "data {data:?} trees {trees:?}");
    (snap, src, data, trees)
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn verify_names_each_kind_of_damage() {
    let (snap, _src, data, trees) = damaged_fixture();
    let check = |what: &str, expect_in_message: &str, read_data: bool| {
        let mut args = vec!["verify", "--json"];
        if read_data {
            args.push("--read-data");
        }
        let out = snap.run_code(&args, 1);
        let report = parse_json(&out);
        let problems = report["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p["severity"] == "error" && p["object"].as_str().unwrap().contains(expect_in_message)),
            "{what}: no error names {expect_in_message}: {report}"
        );
    };

    // A flipped byte inside a data pack: only --read-data sees it, and names the file.
    let pack = &data[0];
    let saved = fs::read(pack).unwrap();
    flip_byte(pack);
    snap.ok(&["verify"]);
    check("flipped data byte", &name_of(pack), true);
    let report = parse_json(&snap.run_code(&["verify", "--json", "--read-data"], 1));
    let affects: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["affects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["path"].as_str().unwrap())
        })
        .collect();
    assert!(
        affects.iter().any(|p| p.ends_with(".bin")),
        "affected files named: {report}"
    );
    fs::write(pack, &saved).unwrap();

    // A truncated pack.
    fs::write(pack, &saved[..saved.len() / 2]).unwrap();
    check("truncated pack", &name_of(pack), false);
    fs::write(pack, &saved).unwrap();

    // A deleted pack.
    fs::remove_file(pack).unwrap();
    check("deleted pack", &name_of(pack), false);
    fs::write(pack, &saved).unwrap();
    snap.ok(&["verify", "--read-data"]);

    // A damaged tree.
    let tree_pack = &trees[0];
    let saved_tree = fs::read(tree_pack).unwrap();
    flip_byte(tree_pack);
    check("damaged tree", "tree", false);
    fs::write(tree_pack, &saved_tree).unwrap();

    // A damaged snapshot.
    let snapshot = files_under(&snap.repo.join("snapshots")).pop().unwrap();
    let saved_snapshot = fs::read(&snapshot).unwrap();
    flip_byte(&snapshot);
    check("damaged snapshot", &name_of(&snapshot), false);
    fs::write(&snapshot, &saved_snapshot).unwrap();

    // A deleted index file: its packs are unindexed and the blobs they hold missing.
    let index = files_under(&snap.repo.join("index")).pop().unwrap();
    let saved_index = fs::read(&index).unwrap();
    fs::remove_file(&index).unwrap();
    let out = snap.run_code(&["verify", "--json"], 1);
    let report = parse_json(&out);
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["severity"] == "notice"),
        "unindexed packs noticed: {report}"
    );
    assert!(
        problems.iter().any(|p| p["severity"] == "error"),
        "missing blobs are errors: {report}"
    );
    fs::write(&index, saved_index).unwrap();
    snap.ok(&["verify", "--read-data"]);
}

#[test]
fn repair_index_rebuilds_from_packs() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = snap.scratch().join("src");
    write_generation(&src, 0);
    set_tree_times(&src);
    snap.create(&[s(&src)]);
    for index in files_under(&snap.repo.join("index")) {
        fs::remove_file(index).unwrap();
    }
    // A fresh cache too, as on a new machine.
    fs::remove_dir_all(&snap.cache).unwrap();
    assert_code(&snap.run(&["verify"]), 1);
    snap.ok(&["repair", "index"]);
    snap.ok(&["verify", "--read-data"]);
    let target = snap.scratch().join("out");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}

#[test]
fn repair_snapshots_marks_files_whose_data_is_lost() {
    let (snap, src, data, _trees) = damaged_fixture();
    for pack in &data {
        fs::remove_file(pack).unwrap();
    }
    snap.ok(&["repair", "index"]);
    let report = parse_json(&snap.ok(&["repair", "snapshots", "--json"]));
    let damaged = report[0]["damaged_paths"].as_array().unwrap();
    assert!(!damaged.is_empty(), "{report}");
    assert_eq!(snap.snapshots().len(), 2, "the original is kept");
    let repaired = report[0]["repaired"].as_str().unwrap().to_string();
    let target = snap.scratch().join("out");
    assert_code(&snap.restore(&repaired, &target, &[]), 0);
    let names: Vec<String> = files_under(&restored(&target, &src))
        .iter()
        .map(|p| name_of(p))
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".damaged")), "{names:?}");
    // Notes are small text in a tree-adjacent pack; whatever survived is exact.
    for path in files_under(&restored(&target, &src)) {
        if !name_of(&path).ends_with(".damaged") {
            let original = src.join(path.strip_prefix(restored(&target, &src)).unwrap());
            assert!(same_content(&original, &path), "{} differs", path.display());
        }
    }
}

#[test]
fn killed_prune_leaves_a_valid_repository() {
    for point in [
        "prune-repacked",
        "prune-index-written",
        "prune-index-deleting",
        "prune-packs-deleting:2",
    ] {
        let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
        let (src, copies) = history(&snap, 3);
        let first = copies[0].0.clone();
        snap.ok(&["forget", &first]);
        let out = snap
            .command()
            .args(["prune"])
            .env("SNAP_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the failpoint was reached\n{}",
            describe(&out)
        );
        assert!(stderr(&out).contains("failpoint"), "{point}: {}", describe(&out));

        // Valid: verify reports no error (unreferenced data is only a notice).
        snap.ok(&["unlock"]);
        snap.ok(&["verify", "--read-data"]);
        assert_all_restore(&snap, &copies, &src);
        // And the next prune completes the job.
        snap.ok(&["prune"]);
        snap.ok(&["verify", "--read-data"]);
        assert_all_restore(&snap, &copies, &src);
    }
}

#[test]
fn killed_backup_keeps_the_repository_valid() {
    for point in ["pack-written:3", "index-written", "before-snapshot"] {
        let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
        let src = snap.scratch().join("src");
        write_generation(&src, 0);
        write_random_file(&src.join("big.bin"), 12 * MIB, 7);
        set_tree_times(&src);
        let out = snap
            .command()
            .args(["create", s(&src)])
            .env("SNAP_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: {}", describe(&out));
        assert!(snap.snapshots().is_empty(), "{point}: no snapshot after a crash");
        snap.ok(&["verify"]);
        let created = snap.create(&[s(&src)]);
        if point != "pack-written:3" {
            assert!(
                summary(&created, "bytes_added_raw") < 12 * MIB,
                "{point}: uploaded chunks were reused: {created}"
            );
        }
        snap.ok(&["verify", "--read-data"]);
        let target = snap.scratch().join("out");
        assert_code(&snap.restore("latest", &target, &[]), 0);
        assert_same_tree(&src, &restored(&target, &src), Compare::all());
    }
}

#[test]
fn concurrent_backups_both_land_and_prune_waits_for_them() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let a = snap.scratch().join("a");
    let b = snap.scratch().join("b");
    for (dir, seed) in [(&a, 1), (&b, 2)] {
        fs::create_dir_all(dir).unwrap();
        write_random_file(&dir.join("big.bin"), 24 * MIB, seed);
        fs::write(dir.join("shared.txt"), "the same in both\n".repeat(5000)).unwrap();
        set_tree_times(dir);
    }
    let spawn = |dir: &Path| {
        snap.command()
            .args(["create", "--json", s(dir)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&a);
    let second = spawn(&b);
    // Wait until a backup holds its lock, then a prune without waiting is refused...
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while object_count(&snap.repo, "locks") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = snap.run(&["prune"]);
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    if refused.status.code() == Some(11) {
        assert!(
            stderr(&refused).contains("create"),
            "the message names the holder: {}",
            describe(&refused)
        );
    } else {
        // The backups finished before prune looked; nothing to assert about the refusal.
        assert_code(&refused, 0);
    }
    assert_code(&first, 0);
    assert_code(&second, 0);
    // ...and one that waits succeeds once they are done.
    snap.ok(&["prune", "--retry-lock", "15m"]);
    snap.ok(&["verify", "--read-data"]);
    for dir in [&a, &b] {
        let snapshots = snap.snapshots();
        let id = snapshots
            .iter()
            .find(|snapshot| snapshot["paths"][0].as_str() == Some(s(dir)))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let target = snap.scratch().join(format!("out-{}", name_of(dir)));
        assert_code(&snap.restore(&id, &target, &[]), 0);
        assert_same_tree(dir, &restored(&target, dir), Compare::all());
    }
}

#[test]
fn prune_waits_for_a_running_backup() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("big.bin"), 64 * MIB, 3);
    let backup = snap
        .command()
        .args(["create", "-q", s(&src)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while object_count(&snap.repo, "locks") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pruned = snap.run(&["prune", "--retry-lock", "15m"]);
    let backup = backup.wait_with_output().unwrap();
    assert_code(&backup, 0);
    assert_code(&pruned, 0);
    assert_eq!(snap.snapshots().len(), 1);
    snap.ok(&["verify", "--read-data"]);
    let target = snap.scratch().join("out");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}

#[test]
fn stale_lock_of_a_killed_process_is_ignored_and_removed() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("big.bin"), 32 * MIB, 4);
    let out = snap
        .command()
        .args(["create", s(&src)])
        .env("SNAP_FAILPOINT", "pack-written:2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(object_count(&snap.repo, "locks"), 1, "the killed backup left its lock");
    // Its process is gone on this host: the lock is stale, prune proceeds.
    snap.ok(&["prune"]);
    snap.ok(&["unlock"]);
    assert_eq!(object_count(&snap.repo, "locks"), 0);
}

#[test]
fn keys_add_list_remove_and_change_password() {
    let mut snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write_generation(&src, 0);
    snap.create(&[s(&src)]);
    let keys = |snap: &Snap| parse_json(&snap.ok(&["key", "list", "--json"]));
    assert_eq!(keys(&snap).as_array().unwrap().len(), 1);

    let added = snap
        .command()
        .args(["key", "add"])
        .env("SNAP_NEW_PASSWORD", "second password")
        .output()
        .unwrap();
    assert_code(&added, 0);
    let list = keys(&snap);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let current: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    let first_id = current[0]["id"].as_str().unwrap().to_string();

    // The key in use cannot be removed.
    let out = snap.run_code(&["key", "remove", &first_id[..8]], 2);
    assert!(
        stderr(&out).contains("opened the repository with"),
        "{}",
        describe(&out)
    );

    // With the second password, the first key can go.
    snap.password = Some("second password".into());
    snap.ok(&["key", "remove", &first_id[..8]]);
    snap.password = Some(PASSWORD.into());
    assert_code(&snap.run(&["snapshots"]), 12);
    snap.password = Some("second password".into());

    // The last key cannot be removed (it is also the current one).
    let only = keys(&snap)[0]["id"].as_str().unwrap().to_string();
    snap.run_code(&["key", "remove", &only], 2);

    // passwd replaces the current key.
    let changed = snap
        .command()
        .args(["key", "passwd"])
        .env("SNAP_NEW_PASSWORD", "third")
        .output()
        .unwrap();
    assert_code(&changed, 0);
    assert_code(&snap.run(&["snapshots"]), 12);
    snap.password = Some("third".into());
    assert_eq!(snap.snapshots().len(), 1);
    assert_eq!(keys(&snap).as_array().unwrap().len(), 1);

    // A crash between writing the new key and deleting the old leaves both working.
    let crashed = snap
        .command()
        .args(["key", "passwd"])
        .env("SNAP_NEW_PASSWORD", "fourth")
        .env("SNAP_FAILPOINT", "key-added")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    assert_eq!(snap.snapshots().len(), 1);
    snap.password = Some("fourth".into());
    assert_eq!(snap.snapshots().len(), 1);
    // No password ever appears in output or in the repository.
    for (path, bytes) in contents_under(&snap.repo) {
        for secret in ["second password", "third", "fourth", PASSWORD] {
            assert!(!contains(&bytes, secret.as_bytes()), "{secret} in {}", path.display());
        }
    }
}

#[test]
fn interrupted_backup_resumes_from_its_checkpoint() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        write_random_file(&src.join(format!("f{i:02}.bin")), MIB, 300 + i);
    }
    set_tree_times(&src);
    // One worker, a checkpoint after (nearly) every file, killed at the third.
    let out = snap
        .command()
        .args([
            "create",
            "-q",
            "--threads",
            "1",
            "--checkpoint-interval",
            "1ms",
            s(&src),
        ])
        .env("SNAP_FAILPOINT", "checkpoint-written:3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let checkpoints = snap.snapshots();
    assert!(!checkpoints.is_empty());
    assert!(
        checkpoints.iter().all(|s| s["tags"][0] == "checkpoint"),
        "{checkpoints:?}"
    );

    // The next backup takes the checkpoint as parent: its files are not read again.
    let resumed = snap.create(&[s(&src)]);
    assert!(summary(&resumed, "files_unmodified") >= 3, "{resumed}");
    assert!(summary(&resumed, "bytes_read") <= 21 * MIB, "{resumed}");
    // Checkpoints are gone, and the result equals an uninterrupted backup.
    let all = snap.snapshots();
    assert_eq!(all.len(), 1, "{all:?}");
    let full = snap.create(&["--force", s(&src)]);
    assert_eq!(summary(&full, "bytes_read"), 24 * MIB);
    // Same content and metadata as an uninterrupted backup. (Root tree ids
    // may differ: they include /tmp, whose mtime other tests change.)
    let listing = |id: &serde_json::Value| {
        let out = snap.ok(&["ls", "--json", id.as_str().unwrap(), s(&src)]);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        listing(&resumed["id"]),
        listing(&full["id"]),
        "same tree as an uninterrupted backup"
    );
    snap.ok(&["verify", "--read-data"]);
    let target = snap.scratch().join("out");
    assert_code(&snap.restore(resumed["id"].as_str().unwrap(), &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}
