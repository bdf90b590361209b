//! Deep trees: any user who can `mkdir` inside a backed-up tree chooses its
//! depth, so no command may walk it with recursion bounded by the thread's
//! stack. A chain 10,000 directories deep (far past PATH_MAX, built through
//! directory descriptors) is backed up, listed, pruned, verified (with a
//! damaged pack, so the search for affected paths walks it too) and
//! repaired. A deep tree with branches checks that the walk below the
//! parallel depth stores the same trees, and that the next backup reuses
//! them.

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::util::*;

const CHAIN_DEPTH: usize = 10_000;

fn open_dir_at(dir: &OwnedFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn write_at(dir: &OwnedFd, name: &str, data: &[u8]) {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, data).expect("write");
}

/// Builds `root/d/d/.../d` (`depth` directories) through descriptors, with
/// a file `mid` halfway and a file `f` at the bottom, holding one
/// descriptor at a time. Returns the bottom file's content.
fn build_chain(root: &Path, depth: usize) -> Vec<u8> {
    std::fs::create_dir(root).expect("create the chain's root");
    let mut dir: OwnedFd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open");
    let bottom = random_bytes(4_000_000, 7);
    for level in 0..depth {
        rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).expect("mkdirat");
        dir = open_dir_at(&dir, "d");
        if level == depth / 2 {
            write_at(&dir, "mid", &random_bytes(3_000_000, 8));
        }
    }
    write_at(&dir, "f", &bottom);
    bottom
}

/// Moves every level of a chain up beside `root`, so that the standard
/// (recursive, descriptor-per-level) removal of the temporary directory
/// can cope with it.
fn flatten_chain(root: &Path) {
    let parent = root.parent().expect("root has a parent");
    let mut current = root.to_path_buf();
    for i in 0.. {
        let child = current.join("d");
        if std::fs::symlink_metadata(&child).is_err() {
            break;
        }
        let moved = parent.join(format!("level-{i}"));
        std::fs::rename(&child, &moved).expect("move a level up");
        current = moved;
    }
}

/// The path of the chain's bottom directory, below `root`.
fn chain_path(root: &Path, depth: usize) -> PathBuf {
    let mut path = root.to_path_buf();
    for _ in 0..depth {
        path.push("d");
    }
    path
}

/// 1,500 levels: before the walks used heap stacks, `create` aborted at about 440.
#[test]
fn a_deep_tree_is_backed_up_listed_verified_pruned_and_repaired() {
    deep_chain_round_trip(1_500);
}

/// The 10,000 levels (about a minute in a debug build).
#[test]
#[ignore]
fn a_ten_thousand_deep_tree_is_backed_up_listed_verified_pruned_and_repaired() {
    deep_chain_round_trip(CHAIN_DEPTH);
}

fn deep_chain_round_trip(depth: usize) {
    let snap = Snap::init(&[]);
    let root = snap.scratch().join("chain");
    build_chain(&root, depth);
    let bottom_file = chain_path(&root, depth).join("f");

    let created = snap.create(&[s(&root)]);
    assert_eq!(summary(&created, "errors"), 0, "{created}");
    assert!(summary(&created, "dirs") >= depth as u64, "{created}");
    assert_eq!(summary(&created, "files_new"), 2, "{created}");

    // Every level listed, the bottom file under its full path.
    let out = snap.ok(&["ls", "latest"]);
    let lines: Vec<&[u8]> = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= depth + 2, "ls listed {} entries", lines.len());
    assert!(
        lines.iter().any(|l| *l == bottom_file.as_os_str().as_bytes()),
        "ls does not list the bottom file"
    );

    // Walks of every tree: prune and verify.
    snap.ok(&["prune"]);
    snap.ok(&["verify", "--read-data"]);

    // Damage the data pack (the largest: both files' 7 MB of chunks; the
    // trees take about 2 MB): verify must walk the chain to name the damaged file.
    let (data_pack, _) = packs(&snap.repo).into_iter().next().expect("a pack");
    let mut bytes = std::fs::read(&data_pack).expect("read the pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    make_removable(&data_pack);
    std::fs::write(&data_pack, &bytes).expect("damage the pack");
    let out = snap.run_code(&["--json", "verify", "--read-data"], 1);
    let report = parse_json(&out);
    let affected: Vec<String> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .flat_map(|p| p["affects"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["path"].as_str().map(str::to_string))
        .collect();
    let deep_hits = affected.iter().filter(|p| p.matches("/d").count() >= depth / 2).count();
    assert!(
        deep_hits > 0,
        "verify names no deep path among {} paths",
        affected.len()
    );

    // Lose the pack, rebuild the index, repair the snapshot: the rewrite
    // walks the chain to the damaged files.
    std::fs::remove_file(&data_pack).expect("remove the damaged pack");
    snap.ok(&["repair", "index"]);
    let out = snap.ok(&["repair", "snapshots"]);
    let repaired = snap
        .snapshots()
        .into_iter()
        .find(|s| s["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "repaired")));
    assert!(repaired.is_some(), "no repaired snapshot\n{}", describe(&out));
    let repaired = repaired.expect("checked")["id"].as_str().expect("id").to_string();
    let out = snap.ok(&["ls", &repaired]);
    let damaged_bottom = format!("{}.damaged", bottom_file.display());
    assert!(
        out.stdout
            .split(|b| *b == b'\n')
            .any(|l| l == damaged_bottom.as_bytes()),
        "the repaired snapshot does not mark the bottom file"
    );

    flatten_chain(&root);
}

/// A tree deeper than the archiver's parallel depth, with branches, files
/// and symlinks at every level.
fn build_branching(root: &Path, depth: usize) {
    let mut dir = root.to_path_buf();
    for level in 0..depth {
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (i, name) in ["b", "c"].iter().enumerate() {
            let side = dir.join(name);
            std::fs::create_dir(&side).expect("mkdir side");
            write_random_file(&side.join("file"), 5000 + level as u64, (level * 3 + i) as u64);
        }
        write_random_file(&dir.join("z"), 1000 + level as u64, 10_000 + level as u64);
        std::os::unix::fs::symlink("z", dir.join("link")).expect("symlink");
        dir.push("a");
    }
    std::fs::create_dir_all(&dir).expect("mkdir bottom");
}

#[test]
fn a_deep_branching_tree_round_trips_and_is_reused() {
    let snap = Snap::init(&[]);
    let root = snap.scratch().join("tree");
    build_branching(&root, 60);
    set_tree_times(&root);

    let first = snap.create(&[s(&root)]);
    assert_eq!(summary(&first, "errors"), 0, "{first}");
    // Restored outside the scratch directory, whose metadata is in the snapshot.
    let restore_dir = tempdir();
    let target = restore_dir.path().join("restored");
    let out = snap.restore("latest", &target, &[]);
    assert_code(&out, 0);
    assert_same_tree(&root, &restored(&target, &root), Compare::all());

    // Unchanged: every file comes from the parent, and no tree is new.
    let second = snap.create(&[s(&root)]);
    assert_eq!(
        summary(&second, "files_new") + summary(&second, "files_changed"),
        0,
        "{second}"
    );
    // Only the trees of the ancestors (/, /tmp, the scratch directory) may
    // change between the runs; the 180 below the source path are reused.
    assert!(summary(&second, "blobs_added") <= 3, "{second}");
}
