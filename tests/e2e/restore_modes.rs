//! Restoring safely (issue 13): a dry run that is exactly what the restore
//! then does, `--overwrite` modes, `--delete`, the safety snapshot that
//! undoes a mistaken restore, files renamed into place so a killed restore
//! leaves no partial file, `--verify`, and the point-in-time snapshot specs
//! (`--as-of`, `latest~N`, `SNAPSHOT:PATH`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::util::*;

/// (action, kind, size) per path of a restore's `--json` plan.
fn plan_of(report: &Value) -> BTreeMap<String, (String, String, u64)> {
    report["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {report}"))
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                (
                    e["action"].as_str().unwrap().to_string(),
                    e["kind"].as_str().unwrap().to_string(),
                    e["size"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn action<'a>(plan: &'a BTreeMap<String, (String, String, u64)>, path: &Path) -> &'a str {
    plan.get(s(path))
        .map(|e| e.0.as_str())
        .unwrap_or_else(|| panic!("{} not in the plan: {plan:#?}", path.display()))
}

/// Path -> (inode, content) of the regular files below `root`; directories
/// and symlinks by kind.
fn state(root: &Path) -> BTreeMap<PathBuf, (u64, Option<Vec<u8>>)> {
    walk(root)
        .into_iter()
        .map(|(rel, meta)| {
            let path = root.join(&rel);
            let content = meta.is_file().then(|| fs::read(&path).unwrap());
            (path, (meta.ino(), content))
        })
        .collect()
}

fn source_tree(root: &Path) {
    fs::create_dir_all(root.join("d/deep")).unwrap();
    fs::write(root.join("same"), b"the same in both").unwrap();
    fs::write(root.join("changed"), b"version of the snapshot").unwrap();
    fs::write(root.join("gone"), b"deleted from the target").unwrap();
    fs::write(root.join("d/deep/f"), random_bytes(70_000, 1)).unwrap();
    std::os::unix::fs::symlink("same", root.join("link")).unwrap();
    set_tree_times(root);
}

#[test]
fn a_dry_run_is_exactly_what_the_restore_then_does() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    source_tree(&src);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    let dir = restored(&target, &src);
    // The hand-made change set.
    fs::write(dir.join("changed"), b"edited in the target since").unwrap();
    fs::remove_file(dir.join("gone")).unwrap();
    fs::write(dir.join("extra"), b"not in the snapshot").unwrap();
    fs::create_dir_all(dir.join("d/more/sub")).unwrap();
    fs::write(dir.join("d/more/sub/x"), b"x").unwrap();
    // A symlink out of the target: removed, never followed.
    let outside = snap.scratch().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"outside the target").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("d/out")).unwrap();
    let before = state(&target);
    let snapshots_before = snap.snapshots().len();

    let out = snap.restore("latest", &target, &["--dry-run", "--delete", "--json"]);
    assert_code(&out, 0);
    let preview = parse_json(&out);
    assert_eq!(preview["dry_run"], true);
    assert!(preview["safety_snapshot"].is_null());
    assert_eq!(state(&target), before, "a dry run changed the target");
    assert_eq!(snap.snapshots().len(), snapshots_before, "a dry run wrote a snapshot");
    let planned = plan_of(&preview);
    assert_eq!(action(&planned, &dir.join("same")), "unchanged");
    assert_eq!(action(&planned, &dir.join("changed")), "overwritten");
    assert_eq!(action(&planned, &dir.join("gone")), "new");
    assert_eq!(action(&planned, &dir.join("link")), "unchanged");
    assert_eq!(action(&planned, &dir.join("d/deep/f")), "unchanged");
    assert_eq!(action(&planned, &dir.join("d")), "unchanged");
    for deleted in ["extra", "d/more", "d/more/sub", "d/more/sub/x", "d/out"] {
        assert_eq!(action(&planned, &dir.join(deleted)), "deleted", "{deleted}");
    }
    assert_eq!(planned[s(&dir.join("gone"))].2, 23, "the size of a new file");
    assert_eq!(planned[s(&dir.join("extra"))].2, 19, "the size of a deleted file");
    assert_eq!(planned[s(&dir.join("d/out"))].1, "symlink");
    // Totals add the entries up.
    let totals = &preview["totals"];
    assert_eq!(totals["deleted"]["count"], 5);
    assert_eq!(totals["deleted"]["bytes"], 20);
    assert_eq!(totals["new"]["count"], 1);
    assert_eq!(totals["overwritten"]["bytes"], 23);
    // The text form lists the same.
    let text = snap.restore("latest", &target, &["--dry-run", "--delete"]);
    assert_code(&text, 0);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("deleted") && l.ends_with(s(&dir.join("extra")))),
        "{text}"
    );
    assert!(text.contains("would restore:"), "{text}");

    let out = snap.restore("latest", &target, &["--delete", "--json"]);
    assert_code(&out, 0);
    let report = parse_json(&out);
    assert_eq!(plan_of(&report), planned, "the restore did other than its dry run said");
    assert!(report["safety_snapshot"].is_string(), "{report}");
    let after = state(&target);
    // Entry by entry: what the plan said happened.
    for (path, (what, kind, _)) in &planned {
        let path = PathBuf::from(path);
        let (was, now) = (before.get(&path), after.get(&path));
        match what.as_str() {
            "new" => assert!(was.is_none() && now.is_some(), "{}", path.display()),
            "deleted" => assert!(was.is_some() && now.is_none(), "{}", path.display()),
            "unchanged" => {
                assert_eq!(was, now, "{} was rewritten", path.display());
            }
            "overwritten" => {
                let (was, now) = (was.unwrap(), now.unwrap());
                assert_ne!(was.0, now.0, "{} was not replaced", path.display());
                assert_ne!(was.1, now.1, "{}", path.display());
            }
            other => panic!("{other} for {} ({kind})", path.display()),
        }
    }
    // Nothing outside the plan changed, and the target is the snapshot.
    for (path, was) in &before {
        if !planned.contains_key(s(path)) && path.starts_with(&dir) && path != &dir {
            panic!("{} changed without a plan entry ({was:?})", path.display());
        }
    }
    assert_same_tree(&src, &dir, Compare::all());
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"outside the target");
}

/// A target whose files differ from the snapshot in the ways the modes
/// tell apart: `older` is edited and older than the snapshot's, `newer`
/// edited and newer, `touched` the same content with another mtime.
fn mode_fixture(snap: &Snap, src: &Path, name: &str) -> PathBuf {
    let target = snap.scratch().join(name);
    assert_code(&snap.restore("latest", &target, &["--no-safety-snapshot"]), 0);
    let dir = restored(&target, src);
    let base = |name: &str| fs::symlink_metadata(src.join(name)).unwrap().mtime();
    fs::write(dir.join("older"), b"local, older").unwrap();
    set_mtime(&dir.join("older"), base("older") - 1000, 0);
    fs::write(dir.join("newer"), b"local, newer").unwrap();
    set_mtime(&dir.join("newer"), base("newer") + 1000, 0);
    set_mtime(&dir.join("touched"), base("touched") + 5, 0);
    dir
}

#[test]
fn each_overwrite_mode_does_what_it_says() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for name in ["older", "newer", "touched"] {
        fs::write(src.join(name), format!("snapshot's {name}")).unwrap();
    }
    set_tree_times(&src);
    snap.create(&[s(&src)]);
    let expect = |mode: &str, older: &str, newer: &str, touched: &str| {
        let dir = mode_fixture(&snap, &src, mode);
        let before = state(&dir);
        let target = snap.scratch().join(mode);
        let out = snap.restore("latest", &target, &["--overwrite", mode, "--json"]);
        assert_code(&out, 0);
        let plan = plan_of(&parse_json(&out));
        let after = state(&dir);
        for (name, want) in [("older", older), ("newer", newer), ("touched", touched)] {
            let path = dir.join(name);
            assert_eq!(action(&plan, &path), want, "--overwrite {mode}: {name}");
            let (was, now) = (&before[&path], &after[&path]);
            let snapshot_content = fs::read(src.join(name)).unwrap();
            match want {
                "overwritten" => {
                    assert_ne!(was.0, now.0, "--overwrite {mode}: {name} not replaced");
                    assert_eq!(now.1.as_deref(), Some(snapshot_content.as_slice()));
                }
                "unchanged" => {
                    assert_eq!(was, now, "--overwrite {mode}: {name} rewritten");
                    let mtime = fs::metadata(&path).unwrap().mtime();
                    assert_eq!(
                        mtime,
                        fs::metadata(src.join(name)).unwrap().mtime(),
                        "metadata not fixed"
                    );
                }
                "skipped" => {
                    assert_eq!(was, now, "--overwrite {mode}: {name} touched");
                }
                other => panic!("{other}"),
            }
        }
        // A skipped file keeps its own mtime.
        if touched == "skipped" {
            let base = fs::metadata(src.join("touched")).unwrap().mtime();
            assert_eq!(fs::metadata(dir.join("touched")).unwrap().mtime(), base + 5);
        }
    };
    expect("always", "overwritten", "overwritten", "overwritten");
    expect("if-changed", "overwritten", "overwritten", "unchanged");
    expect("if-newer", "overwritten", "skipped", "skipped");
    expect("never", "skipped", "skipped", "skipped");
}

#[test]
fn delete_makes_the_target_identical_within_the_restored_path_only() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    source_tree(&src);
    snap.create(&[s(&src)]);
    // Restored with --path: the target's other entries are not the
    // restore's business.
    let target = snap.scratch().join("t");
    fs::create_dir_all(target.join("src/junk/deeper")).unwrap();
    fs::write(target.join("src/junk/deeper/j"), b"junk").unwrap();
    fs::write(target.join("src/changed"), b"local").unwrap();
    fs::write(target.join("unrelated"), b"stays").unwrap();
    let out = snap.restore("latest", &target, &["--path", s(&src), "--delete", "--json"]);
    assert_code(&out, 0);
    assert_same_tree(&src, &target.join("src"), Compare::all());
    assert_eq!(fs::read(target.join("unrelated")).unwrap(), b"stays");
    // Excluded entries are not deleted either.
    fs::write(target.join("src/keep.log"), b"log").unwrap();
    fs::write(target.join("src/drop.tmp"), b"tmp").unwrap();
    let out = snap.restore(
        "latest",
        &target,
        &["--path", s(&src), "--delete", "--exclude", "*.log", "--json"],
    );
    assert_code(&out, 0);
    assert!(target.join("src/keep.log").exists(), "an excluded entry was deleted");
    assert!(!target.join("src/drop.tmp").exists());
}

/// A whole snapshot restored with --delete judges only what is at and
/// below its source paths: their ancestors were never backed up as
/// directories, and what else lies beside them in the target stays (before
/// the fix, a restore to `/` would have planned to delete the rest of the
/// file system).
#[test]
fn delete_of_a_whole_snapshot_stays_within_its_source_paths() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    source_tree(&src);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    let inside = restored(&target, &src);
    fs::create_dir_all(inside.join("junk")).unwrap();
    fs::write(inside.join("junk/j"), b"junk").unwrap();
    fs::write(target.join("beside-the-root"), b"stays").unwrap();
    let parent = inside.parent().unwrap();
    fs::write(parent.join("beside-the-source"), b"stays").unwrap();
    fs::create_dir_all(target.join("etc")).unwrap();
    fs::write(target.join("etc/passwd"), b"stays").unwrap();

    let preview = snap.restore("latest", &target, &["--delete", "--dry-run", "--json"]);
    assert_code(&preview, 0);
    let plan = plan_of(&parse_json(&preview));
    let deleted: Vec<&String> = plan.iter().filter(|(_, v)| v.0 == "deleted").map(|(k, _)| k).collect();
    assert!(
        deleted.iter().all(|p| p.contains("/src/junk")),
        "only the junk below the source path is deleted: {deleted:?}"
    );
    let out = snap.restore("latest", &target, &["--delete", "--json"]);
    assert_code(&out, 0);
    assert_same_tree(&src, &inside, Compare::all());
    for kept in [
        target.join("beside-the-root"),
        parent.join("beside-the-source"),
        target.join("etc/passwd"),
    ] {
        assert_eq!(fs::read(&kept).unwrap(), b"stays", "{} was deleted", kept.display());
    }
}

#[test]
fn a_safety_snapshot_undoes_a_mistaken_restore() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    source_tree(&src);
    snap.create(&[s(&src)]);
    let first = snap.snapshots()[0]["id"].as_str().unwrap().to_string();
    // Work goes on: edits, a new file, a new directory.
    fs::write(src.join("changed"), b"today's work, not backed up yet").unwrap();
    fs::write(src.join("d/new"), random_bytes(50_000, 9)).unwrap();
    fs::create_dir(src.join("e")).unwrap();
    fs::write(src.join("e/g"), b"g").unwrap();
    // Only its mtime changed: the mistaken restore sets it back, so the
    // safety snapshot holds it too.
    set_mtime(&src.join("d/deep/f"), 1_600_000_000, 0);
    let original = snap.scratch().join("original");
    copy_dir(&src, &original);

    // The mistake: yesterday's snapshot over today's work, with --delete.
    let out = snap.restore(&first, snap.scratch(), &["--path", s(&src), "--delete", "--json"]);
    assert_code(&out, 0);
    let report = parse_json(&out);
    assert_eq!(fs::read(src.join("changed")).unwrap(), b"version of the snapshot");
    assert!(!src.join("e").exists());
    let safety = report["safety_snapshot"]
        .as_str()
        .expect("a safety snapshot")
        .to_string();
    let listed = snap.snapshots();
    let record = listed.iter().find(|s| s["id"] == safety.as_str()).expect("listed");
    assert_eq!(record["tags"], serde_json::json!(["pre-restore"]));
    assert_eq!(record["host"].as_str(), Some(snap_core::snapshot::hostname().as_str()));
    // Only what was replaced or deleted is in it.
    let held: Vec<String> = snap.ls_paths(&safety).into_iter().collect();
    let file = |rel: &str| s(&src.join(rel)).to_string();
    assert!(held.contains(&file("changed")) && held.contains(&file("e/g")) && held.contains(&file("d/new")));
    assert!(
        !held.contains(&file("same")),
        "an unchanged file was backed up: {held:?}"
    );
    assert!(
        !held.contains(&file("link")),
        "an unchanged symlink was backed up: {held:?}"
    );
    // What only got its metadata set is in it too: the undo sets it back.
    assert!(held.contains(&file("d/deep/f")), "{held:?}");

    // Undone: the safety snapshot's subtree restored back.
    let spec = format!("{safety}:{}", s(&src));
    let out = snap.restore(&spec, snap.scratch(), &[]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("in all:") && text.contains("safety snapshot "), "{text}");
    assert_same_tree(&original, &src, Compare::all());

    // `latest` is never a safety snapshot (unless asked for by tag).
    let out = snap.restore("latest", &snap.scratch().join("x"), &["--dry-run", "--json"]);
    assert_ne!(parse_json(&out)["snapshot"], safety.as_str());
    let out = snap.restore(
        "latest",
        &snap.scratch().join("x"),
        &["--dry-run", "--json", "--tag", "pre-restore"],
    );
    assert_code(&out, 0);
    assert_eq!(
        snap.snapshots()
            .iter()
            .find(|s| s["id"] == parse_json(&out)["snapshot"])
            .map(|s| s["tags"].clone()),
        Some(serde_json::json!(["pre-restore"]))
    );
}

#[test]
fn a_safety_snapshot_that_fails_stops_the_restore_before_anything_changes() {
    // A file the restoring user cannot read: as root, the restore runs as
    // `nobody` in a directory it owns.
    let work = tempdir();
    chmod(work.path(), 0o755);
    let Some(snap) = Snap::unprivileged(work.path()) else {
        return;
    };
    snap.init_repo(&[]);
    let src = work.path().join("src");
    source_tree(&src);
    let target = work.path().join("t");
    fs::create_dir(&target).unwrap();
    if is_root() {
        for path in [&src, &target] {
            assert!(std::process::Command::new("chown")
                .args(["-R", "65534:65534", s(path)])
                .status()
                .unwrap()
                .success());
        }
    }
    snap.create(&[s(&src)]);
    assert_code(&snap.restore("latest", &target, &[]), 0);
    let dir = restored(&target, &src);
    fs::write(dir.join("changed"), b"mine").unwrap();
    chmod(&dir.join("changed"), 0o200);
    fs::write(dir.join("extra"), b"not in the snapshot").unwrap();
    let before = state(&target);
    let out = snap.restore("latest", &target, &["--delete"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("safety snapshot failed"), "{}", describe(&out));
    assert_eq!(
        state(&target),
        before,
        "a restore whose safety snapshot failed changed the target"
    );
    // Without one, the restore goes ahead.
    assert_code(
        &snap.restore("latest", &target, &["--delete", "--no-safety-snapshot"]),
        0,
    );
    assert_same_tree(&src, &dir, Compare::all());
}

/// The files below `root` by path relative to it, with their content.
fn rel_contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    contents_under(root)
        .into_iter()
        .map(|(p, c)| (p.strip_prefix(root).map(Path::to_path_buf).unwrap_or(p), c))
        .collect()
}

/// Lists `.snap-restore-` temporary files below `root`.
fn temps_under(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".snap-restore-"))
        })
        .collect()
}

#[test]
fn a_killed_restore_leaves_every_file_old_or_new_and_the_next_one_cleans_up() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    write_random_file(&src.join("big"), 16 * MIB, 3);
    for i in 0..20 {
        fs::write(src.join(format!("small{i}")), format!("new {i}")).unwrap();
    }
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    let dir = restored(&target, &src);
    fs::create_dir_all(&dir).unwrap();
    write_random_file(&dir.join("big"), 5 * MIB, 4);
    for i in 0..20 {
        fs::write(dir.join(format!("small{i}")), format!("old {i}")).unwrap();
    }
    let old = rel_contents(&dir);
    let new = rel_contents(&src);

    let mut child = snap
        .command()
        .args(["restore", "latest", "--target", s(&target), "--no-safety-snapshot"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn restore");
    // Killed once its temporary copy of `big` holds some data.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while Instant::now() < deadline {
        if let Some(temp) = temps_under(&dir).first() {
            seen = fs::symlink_metadata(dir.join(temp))
                .map(|m| m.blocks() * 512)
                .unwrap_or(0);
            if seen > MIB {
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the restore finished before it was killed (saw {seen} bytes)"
    );
    assert!(seen > MIB, "no temporary file with data was seen");

    let now = rel_contents(&dir);
    let mut replaced = 0;
    for (rel, content) in &now {
        let name = rel.file_name().unwrap().to_string_lossy();
        if name.starts_with(".snap-restore-") {
            continue;
        }
        replaced += usize::from(new.get(rel) == Some(content));
        assert!(
            old.get(rel) == Some(content) || new.get(rel) == Some(content),
            "{} is neither the old file nor the new one ({} bytes)",
            rel.display(),
            content.len()
        );
    }
    for rel in old.keys() {
        assert!(now.contains_key(rel), "{} vanished", rel.display());
    }
    assert!(
        !temps_under(&dir).is_empty(),
        "the killed run left no temporary file: it proved nothing"
    );
    eprintln!(
        "killed with {seen} bytes in a temporary file; {replaced} of {} files were new",
        now.len()
    );

    let out = snap.restore("latest", &target, &["--no-safety-snapshot", "--verify", "--json"]);
    assert_code(&out, 0);
    assert!(
        temps_under(&target).is_empty(),
        "leftovers stayed: {:?}",
        temps_under(&target)
    );
    assert!(
        rel_contents(&dir) == new,
        "the second restore did not restore the snapshot"
    );
    assert!(parse_json(&out)["verified"].as_u64().unwrap() >= 1);
}

#[test]
fn verify_reads_back_every_written_file() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let src = snap.scratch().join("src");
    source_tree(&src);
    write_random_file(&src.join("d/big"), 700_000, 5);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    let out = snap.restore("latest", &target, &["--verify", "--json"]);
    assert_code(&out, 0);
    let report = parse_json(&out);
    // Every regular file was written, and each was checked.
    assert_eq!(report["verified"].as_u64(), Some(5), "{report}");
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
    // Unchanged files are not written, so not read back.
    let out = snap.restore("latest", &target, &["--verify", "--json"]);
    assert_eq!(parse_json(&out)["verified"].as_u64(), Some(0));
}

#[test]
fn as_of_latest_n_and_snapshot_path_pick_what_they_say() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let mut ids = Vec::new();
    for version in 0..3 {
        fs::write(src.join("f"), format!("version {version}")).unwrap();
        fs::write(src.join("sub/g"), format!("sub {version}")).unwrap();
        ids.push(snap.create(&[s(&src)])["id"].as_str().unwrap().to_string());
    }
    let times: Vec<String> = snap
        .snapshots()
        .iter()
        .map(|s| s["time"].as_str().unwrap().to_string())
        .collect();
    let picked = |spec: &str, extra: &[&str]| -> Value {
        let mut args = vec!["--dry-run", "--json"];
        args.extend_from_slice(extra);
        let out = snap.restore(spec, &snap.scratch().join("none"), &args);
        assert_code(&out, 0);
        parse_json(&out)["snapshot"].clone()
    };
    assert_eq!(picked("latest", &[]), ids[2].as_str());
    assert_eq!(picked("latest~1", &[]), ids[1].as_str());
    assert_eq!(picked("latest~2", &[]), ids[0].as_str());
    assert_eq!(picked("latest", &["--as-of", &times[1]]), ids[1].as_str());
    assert_eq!(picked("latest~1", &["--as-of", &times[1]]), ids[0].as_str());
    assert_eq!(picked("latest", &["--as-of", "0s ago"]), ids[2].as_str());
    assert_eq!(picked("latest", &["--as-of", "2099-01-01T00:00:00Z"]), ids[2].as_str());
    assert!(!snap.scratch().join("none").exists(), "a dry run created the target");
    // Nothing old enough, too far back, bad specs: usage errors.
    assert_code(
        &snap.restore("latest", &snap.scratch().join("n"), &["--as-of", "3 days ago"]),
        2,
    );
    assert_code(&snap.restore("latest~3", &snap.scratch().join("n"), &[]), 2);
    assert_code(&snap.restore("latest~x", &snap.scratch().join("n"), &[]), 2);
    assert_code(
        &snap.restore("latest", &snap.scratch().join("n"), &["--as-of", "whenever"]),
        2,
    );
    assert_code(
        &snap.restore(&ids[0], &snap.scratch().join("n"), &["--as-of", "1h ago"]),
        2,
    );

    // SNAPSHOT:PATH: only that subtree, landing under its own name.
    let target = snap.scratch().join("t");
    let spec = format!("latest~2:{}", s(&src.join("sub")));
    assert_code(&snap.restore(&spec, &target, &[]), 0);
    assert_eq!(dir_names(&target), vec!["sub".to_string()]);
    assert_eq!(fs::read(target.join("sub/g")).unwrap(), b"sub 0");
    assert_code(&snap.restore(&spec, &target, &["--path", s(&src)]), 2);
    // ls takes it too, and the filters of every snapshot command.
    let listed = snap.ok(&["ls", "--json", &format!("latest~1:{}", s(&src.join("sub")))]);
    let paths: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        paths,
        vec![s(&src.join("sub")).to_string(), s(&src.join("sub/g")).to_string()]
    );
    let listed = snap.ok(&["ls", "--json", "latest", s(&src.join("f")), "--as-of", &times[0]]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(s(&src.join("f"))));
    assert_code(&snap.run(&["ls", "latest", "--as-of", "1 day ago"]), 2);
}

/// A file of the target that shares its inode with a file outside (a hard
/// link planted there) is replaced, never changed in place: before the fix
/// its content matched, so it was kept as unchanged and its mode and mtime
/// were set on the outside file too, and the group's other name was linked
/// to it.
#[test]
fn a_hard_link_to_a_file_outside_the_target_is_replaced_not_changed() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("hsrc");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("A"), b"ORIGINAL\n").unwrap();
    fs::hard_link(src.join("A"), src.join("B")).unwrap();
    fs::set_permissions(src.join("A"), fs::Permissions::from_mode(0o644)).unwrap();
    snap.create(&[s(&src)]);

    let target = snap.scratch().join("t");
    // `--path P` restores P as DIR/<name of P>.
    let inside = target.join("hsrc");
    fs::create_dir_all(&inside).unwrap();
    let outside = snap.scratch().join("outside");
    fs::write(&outside, b"ORIGINAL\n").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&outside, 1_000_000_000, 0);
    fs::hard_link(&outside, inside.join("A")).unwrap();

    let out = snap.restore("latest", &target, &["--path", s(&src), "--json"]);
    assert_code(&out, 0);
    let meta = fs::metadata(&outside).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "the outside file's mode was changed");
    assert_eq!(meta.mtime(), 1_000_000_000, "the outside file's mtime was changed");
    assert_eq!(meta.nlink(), 1, "the outside file got new names in the target");
    assert_same_tree(&src, &inside, Compare::all());
}

/// With `--overwrite never`, a hard-link group whose first name is a local
/// file left in place does not link its other names to that file: they get
/// the snapshot's content (before the fix, `B` got the local edit).
#[test]
fn a_skipped_file_does_not_lead_its_hard_link_group() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("hsrc");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("A"), b"ORIGINAL\n").unwrap();
    fs::hard_link(src.join("A"), src.join("B")).unwrap();
    snap.create(&[s(&src)]);

    let target = snap.scratch().join("t");
    // `--path P` restores P as DIR/<name of P>.
    let inside = target.join("hsrc");
    fs::create_dir_all(&inside).unwrap();
    fs::write(inside.join("A"), b"LOCAL EDIT\n").unwrap();
    let out = snap.restore(
        "latest",
        &target,
        &["--path", s(&src), "--overwrite", "never", "--json"],
    );
    assert_code(&out, 0);
    assert_eq!(fs::read(inside.join("A")).unwrap(), b"LOCAL EDIT\n", "never overwrites");
    assert_eq!(
        fs::read(inside.join("B")).unwrap(),
        b"ORIGINAL\n",
        "B has the snapshot's content"
    );
}

/// Only the temporary names a restore gives are removed as leftovers; a
/// user's own file that merely starts the same way stays.
#[test]
fn a_users_file_named_like_a_temporary_stays() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    source_tree(&src);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    assert_code(&snap.restore("latest", &target, &["--path", s(&src)]), 0);
    let notes = target.join("src/.snap-restore-notes.txt");
    let leftover = target.join("src/.snap-restore-4242-7");
    fs::write(&notes, b"my notes").unwrap();
    fs::write(&leftover, b"half a file").unwrap();
    assert_code(&snap.restore("latest", &target, &["--path", s(&src)]), 0);
    assert_eq!(fs::read(&notes).unwrap(), b"my notes");
    assert!(!leftover.exists(), "a killed restore's leftover is removed");
}

/// A preview of a restore that would meet a conflict (a file where the
/// snapshot has a directory) names it and exits 3, as the restore does.
#[test]
fn a_dry_run_with_a_conflict_exits_as_the_restore_does() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    source_tree(&src);
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("t");
    fs::create_dir_all(target.join("src")).unwrap();
    fs::write(target.join("src/d"), b"a file where the snapshot has a directory").unwrap();
    let preview = snap.restore("latest", &target, &["--path", s(&src), "--dry-run"]);
    assert_code(&preview, 3);
    assert!(stderr(&preview).contains("src/d"), "{}", stderr(&preview));
    let real = snap.restore("latest", &target, &["--path", s(&src), "--no-safety-snapshot"]);
    assert_code(&real, 3);
    assert_eq!(
        fs::read(target.join("src/d")).unwrap(),
        b"a file where the snapshot has a directory",
        "the local file in the way is left alone"
    );
}
