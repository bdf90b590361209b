//! What snap prints, and what it leaves alone: a second `prune` has nothing
//! to do; a closed stdout (`snap ls latest | head`) ends snap quietly;
//! warnings have one style and carry colour only on a terminal; counts are
//! singular for one; `ls` escapes names on a terminal.

use std::fs;

use serde_json::Value;

use super::util::*;

/// `prune --json` with the statistics parsed.
fn prune(snap: &Snap) -> Value {
    parse_json(&snap.ok(&["prune", "--json"]))
}

#[track_caller]
fn assert_nothing_to_do(stats: &Value, what: &str) {
    for field in [
        "packs_deleted",
        "packs_repacked",
        "packs_unindexed",
        "bytes_freed",
        "index_files_replaced",
    ] {
        assert_eq!(stats[field], 0, "{what}: {field} should be 0 in {stats}");
    }
}

/// Small trees and small data: one backup leaves one small data pack and one
/// small tree pack. Prune used to count small packs across kinds and repack
/// both (they cannot merge: a pack holds one kind), every run, forever.
#[test]
fn prune_of_a_fresh_small_repository_has_nothing_to_do() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..5 {
        write_random_file(&src.join(format!("f{i}")), 3000, i);
    }
    snap.create(&[s(&src)]);
    assert_eq!(packs(&snap.repo).len(), 2, "one data pack and one tree pack");
    assert_nothing_to_do(&prune(&snap), "first prune");
    assert_nothing_to_do(&prune(&snap), "second prune");
}

/// Many small packs of each kind (one per backup) are merged once; then the
/// repository is stable: a second prune right after has nothing to do.
#[test]
fn second_prune_after_merging_small_packs_has_nothing_to_do() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for round in 0..4u64 {
        write_random_file(&src.join(format!("f{round}")), 5000, round);
        snap.create(&[s(&src)]);
    }
    // Forgetting one snapshot leaves unused trees in some packs as well.
    let first = snap.snapshots()[0]["id"].as_str().unwrap().to_string();
    snap.ok(&["forget", &first]);
    let before = packs(&snap.repo).len();
    assert_eq!(before, 8, "four backups: four data and four tree packs");
    let stats = prune(&snap);
    assert!(
        stats["packs_repacked"].as_u64().unwrap() > 0,
        "small packs are merged: {stats}"
    );
    assert_eq!(packs(&snap.repo).len(), 2, "one pack per kind after merging");
    assert_nothing_to_do(&prune(&snap), "second prune");
    let out = snap.ok(&["verify", "--read-data"]);
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
    let target = snap.scratch().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}
