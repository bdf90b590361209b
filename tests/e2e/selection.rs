//! Which snapshot a command acts on: `latest` with --host/--path/--tag,
//! checkpoints (never `latest`, never counted by a policy, at most one per
//! host and paths), relative paths, damaged snapshot objects.

use std::fs;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::util::*;

/// `snapshots --json ARGS` run from `cwd`.
fn snapshots_in(snap: &Snap, cwd: &Path, args: &[&str]) -> Vec<Value> {
    let out = snap
        .command()
        .current_dir(cwd)
        .args(["snapshots", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert_code(&out, 0);
    match parse_json(&out) {
        Value::Array(items) => items,
        other => panic!("not an array: {other}"),
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn id(created: &Value) -> String {
    created["id"].as_str().unwrap().to_string()
}

/// A backup with a checkpoint after every file, aborted by `failpoint`.
fn interrupted_backup(snap: &Snap, src: &Path, failpoint: &str) {
    let out = snap
        .command()
        .args(["create", "-q", "--threads", "1", "--checkpoint-interval", "1ms", s(src)])
        .env("SNAP_FAILPOINT", failpoint)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
}

fn checkpoints(snap: &Snap) -> Vec<Value> {
    snap.snapshots()
        .into_iter()
        .filter(|s| s["checkpoint"] == true)
        .collect()
}

#[test]
fn a_checkpoint_is_never_latest_nor_kept_in_place_of_a_complete_snapshot() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..8 {
        write_random_file(&src.join(format!("a{i:02}.bin")), 64 << 10, 700 + i);
    }
    let complete = id(&snap.create(&[s(&src)]));
    for i in 0..8 {
        write_random_file(&src.join(format!("b{i:02}.bin")), 64 << 10, 800 + i);
    }

    // Killed after its third checkpoint: one checkpoint is left, not three.
    interrupted_backup(&snap, &src, "checkpoint-written:3");
    let left = checkpoints(&snap);
    assert_eq!(left.len(), 1, "{left:?}");
    let checkpoint = &left[0];
    assert!(checkpoint["tags"].as_array().unwrap().contains(&"checkpoint".into()));
    // Its real size: the files it holds.
    let files: u64 = snap
        .ls(checkpoint["id"].as_str().unwrap())
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| e["size"].as_u64().unwrap())
        .sum();
    assert!(files > 0);
    assert_eq!(
        checkpoint["summary"]["bytes_total"].as_u64(),
        Some(files),
        "{checkpoint}"
    );
    let table = String::from_utf8(snap.ok(&["snapshots"]).stdout).unwrap();
    assert!(table.contains("* checkpoint"), "{table}");

    // `latest` is the complete snapshot, for every command.
    assert_eq!(
        ids(&snapshots_in(&snap, snap.scratch(), &["latest"])),
        [complete.as_str()]
    );
    let listed = snap.ls_paths("latest");
    assert!(
        !listed.iter().any(|p| p.contains("b00.bin")),
        "ls latest shows the checkpoint"
    );

    // The report's case: --keep-last 1 kept the checkpoint and removed the
    // complete snapshot.
    let out = snap.ok(&["forget", "--json", "--keep-last", "1"]);
    let groups = parse_json(&out);
    let kept: Vec<&str> = groups[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(kept.contains(&complete.as_str()), "{groups}");
    assert_eq!(groups[0]["remove"].as_array().unwrap().len(), 0, "{groups}");
    assert!(ids(&snap.snapshots()).contains(&complete));

    // Killed between writing a new checkpoint and removing the older one:
    // two are left, never none.
    interrupted_backup(&snap, &src, "checkpoint-saved:2");
    assert_eq!(checkpoints(&snap).len(), 2);
    assert_eq!(
        ids(&snapshots_in(&snap, snap.scratch(), &["latest"])),
        [complete.as_str()]
    );

    // A completed backup, even one that writes no checkpoints, resumes from
    // them and removes them.
    let done = snap.create(&["--checkpoint-interval", "0s", s(&src)]);
    // The newest checkpoint carried the older one's files over: none lost.
    assert!(summary(&done, "files_unmodified") >= 3, "{done}");
    assert_eq!(checkpoints(&snap).len(), 0);
    assert_eq!(ids(&snap.snapshots()), [complete, id(&done)]);
}

#[test]
fn the_checkpoint_tag_is_reserved() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    let out = snap.run_code(&["create", "--tag", "checkpoint", s(&src)], 2);
    assert!(stderr(&out).contains("reserved"), "{}", describe(&out));
    assert!(snap.snapshots().is_empty());
}

fn run_in(snap: &Snap, cwd: &Path, args: &[&str]) -> Output {
    snap.command().current_dir(cwd).args(args).output().unwrap()
}

#[test]
fn latest_honours_host_path_and_tag_and_paths_are_relative_to_the_working_directory() {
    let snap = Snap::init(&[]);
    let dir = snap.scratch();
    let (a, b) = (dir.join("a"), dir.join("b"));
    fs::create_dir_all(a.join("sub")).unwrap();
    fs::create_dir_all(&b).unwrap();
    write_random_file(&a.join("sub/f.bin"), 10_000, 1);
    write_random_file(&b.join("g.bin"), 10_000, 2);
    let s1 = id(&snap.create(&["--host", "h1", "--tag", "x", s(&a)]));
    write_random_file(&a.join("sub/f.bin"), 20_000, 3);
    let s2 = id(&snap.create(&["--host", "h2", "--tag", "y", s(&a)]));
    let s3 = id(&snap.create(&["--host", "h2", s(&b)]));
    let s4 = id(&snap.create(&["--host", "h2", s(&b)]));

    let latest = |args: &[&str]| {
        let mut all = vec!["latest"];
        all.extend_from_slice(args);
        ids(&snapshots_in(&snap, dir, &all))
    };
    assert_eq!(latest(&[]), [s4.as_str()]);
    assert_eq!(latest(&["--host", "h1"]), [s1.as_str()]);
    assert_eq!(latest(&["--tag", "y"]), [s2.as_str()]);
    assert_eq!(latest(&["--path", "a"]), [s2.as_str()], "relative --path");
    assert_eq!(latest(&["--path", "a/sub/f.bin", "--host", "h1"]), [s1.as_str()]);
    let out = run_in(&snap, dir, &["snapshots", "latest", "--host", "nowhere"]);
    assert_code(&out, 2);

    // Ids, and the newest N of each host and path set.
    let short = &s1[..8];
    assert_eq!(
        ids(&snapshots_in(&snap, dir, &[&s3, short])),
        [s1.as_str(), s3.as_str()]
    );
    assert_eq!(
        ids(&snapshots_in(&snap, dir, &["--latest", "1"])),
        [s1.as_str(), s2.as_str(), s4.as_str()]
    );
    assert_eq!(
        ids(&snapshots_in(&snap, dir, &["--latest", "1", "--host", "h2"])),
        [s2.as_str(), s4.as_str()]
    );

    // ls: `latest a/sub` is the newest snapshot holding the path, which is
    // taken from the working directory as `create` takes it.
    let out = run_in(&snap, dir, &["ls", "--json", "latest", "a/sub/f.bin"]);
    assert_code(&out, 0);
    let entry: Value = serde_json::from_slice(out.stdout.split(|&c| c == b'\n').next().unwrap()).unwrap();
    assert_eq!(entry["path"], s(&a.join("sub/f.bin")));
    assert_eq!(entry["size"], 20_000);
    let out = run_in(
        &snap,
        &a,
        &["ls", "--json", "latest", "./sub/../sub/f.bin", "--host", "h1"],
    );
    assert_code(&out, 0);
    let entry: Value = serde_json::from_slice(out.stdout.split(|&c| c == b'\n').next().unwrap()).unwrap();
    assert_eq!(entry["size"], 10_000);

    // restore --path: relative, and it selects `latest` too.
    let target = dir.join("out");
    let out = run_in(
        &snap,
        dir,
        &[
            "restore",
            "--json",
            "latest",
            "--path",
            "a/sub",
            "--host",
            "h1",
            "--target",
            s(&target),
        ],
    );
    assert_code(&out, 0);
    assert_eq!(parse_json(&out)["snapshot"], s1.as_str());
    assert_eq!(fs::read(target.join("sub/f.bin")).unwrap().len(), 10_000);

    // forget latest with a filter, and the documented JSON array for ids.
    let out = run_in(&snap, dir, &["forget", "--json", "latest", "--tag", "y"]);
    assert_code(&out, 0);
    let groups = parse_json(&out);
    assert_eq!(groups[0]["remove"][0]["id"], s2.as_str(), "{groups}");
    assert_eq!(groups[0]["keep"].as_array().map(Vec::len), Some(0), "{groups}");
    let out = snap.ok(&["forget", "--json", &s3]);
    assert_eq!(parse_json(&out)[0]["remove"][0]["id"], s3.as_str());
    assert_eq!(ids(&snap.snapshots()), [s1, s4]);
}

/// A damaged object in `snapshots/`: the content does not match the name,
/// an empty file, a name that is not an id.
fn plant_damaged_snapshots(snap: &Snap) -> Vec<String> {
    let dir = snap.repo.join("snapshots");
    let existing = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&existing).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let names = vec!["0".repeat(64), "1".repeat(64), "not-a-snapshot".to_string()];
    fs::write(dir.join(&names[0]), b"").unwrap();
    fs::write(dir.join(&names[1]), bytes).unwrap();
    fs::write(dir.join(&names[2]), b"junk").unwrap();
    names
}

#[test]
fn a_damaged_snapshot_object_is_reported_and_does_not_stop_other_commands() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("f"), 50_000, 9);
    let first = id(&snap.create(&[s(&src)]));
    let damaged = plant_damaged_snapshots(&snap);

    write_random_file(&src.join("g"), 50_000, 10);
    let out = snap.ok(&["create", "--json", s(&src)]);
    let second = parse_json(&out)["id"].as_str().unwrap().to_string();
    assert!(stderr(&out).contains("damaged"), "{}", describe(&out));
    assert_eq!(ids(&snap.snapshots()), [first.as_str(), second.as_str()]);
    snap.ok(&["ls", "latest"]);
    snap.ok(&["forget", "--keep-last", "5"]);
    snap.ok(&["prune"]);

    // verify lists each of them.
    let out = snap.run_code(&["verify"], 1);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    for name in &damaged {
        assert!(text.contains(name.as_str()), "verify does not name {name}:\n{text}");
    }

    // repair snapshots: the dry run names them and keeps them; the run removes them.
    let out = snap.ok(&["repair", "snapshots", "--dry-run"]);
    assert!(stderr(&out).contains("would be removed"), "{}", describe(&out));
    for name in &damaged {
        assert!(snap.repo.join("snapshots").join(name).exists());
    }
    let out = snap.ok(&["repair", "snapshots"]);
    for name in &damaged {
        assert!(stderr(&out).contains(name.as_str()), "{}", describe(&out));
        assert!(!snap.repo.join("snapshots").join(name).exists());
    }
    snap.ok(&["verify", "--read-data"]);
    assert_eq!(ids(&snap.snapshots()), [first, second]);
}

#[test]
fn repair_snapshots_dry_run_predicts_the_run_and_a_failure_is_not_exit_0() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("f"), 50_000, 11);
    snap.create(&[s(&src)]);
    // Every pack gone: the root tree cannot be read.
    fs::remove_dir_all(snap.repo.join("data")).unwrap();
    fs::create_dir_all(snap.repo.join("data")).unwrap();
    let dry = snap.run_code(&["repair", "snapshots", "--dry-run"], 1);
    let dry_text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(dry_text.contains("cannot be repaired"), "{}", describe(&dry));
    let real = snap.run_code(&["repair", "snapshots", "--forget"], 1);
    assert_eq!(
        String::from_utf8_lossy(&real.stdout),
        dry_text,
        "the dry run predicts the run"
    );
    // --forget removes only originals that have a repaired copy.
    assert_eq!(snap.snapshots().len(), 1);
}
