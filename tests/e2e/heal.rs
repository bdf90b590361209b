//! Damage heals: after `verify --read-data` finds a damaged blob,
//! `repair packs` salvages the rest of its pack and removes the damage from
//! the index, the next `create` stores the lost data again (re-reading the
//! unchanged file whose blobs are gone), and `repair snapshots` marks what
//! the old snapshot lost.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::util::*;

/// A repository with one snapshot of three files, each in its own packs
/// (1 MiB packs, 400 KB files of small chunks).
fn fixture() -> (Snap, PathBuf, String) {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("a.bin"), 400_000, 11);
    write_random_file(&src.join("b.bin"), 400_000, 12);
    fs::write(src.join("c.txt"), "a small file\n").unwrap();
    set_tree_times(&src);
    let created = snap.create(&[s(&src)]);
    (snap, src, created["id"].as_str().unwrap().to_string())
}

/// Flips one byte inside the blobs of the largest pack (a data pack; the
/// header is at its end). Returns the pack's id.
fn damage_largest_pack(repo: &Path) -> String {
    let (pack, _) = packs(repo).into_iter().next().expect("a pack");
    let file = fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 1000).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], 1000).unwrap();
    pack.file_name().unwrap().to_str().unwrap().to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_damaged_blob_heals_through_repair_packs_and_the_next_backup() {
    let (snap, src, first) = fixture();
    let pack = damage_largest_pack(&snap.repo);

    // verify names the damage and the way out.
    let verified = snap.run_code(&["verify", "--read-data"], 1);
    let told = stdout(&verified);
    assert!(told.contains("snap repair packs"), "{}", describe(&verified));
    assert!(told.contains("snap create"), "{}", describe(&verified));
    assert!(stderr(&verified).contains(&pack[..8]), "{}", describe(&verified));

    // With no pack named, repair takes what verify found.
    let repaired = snap.ok(&["repair", "packs"]);
    let said = stdout(&repaired);
    assert!(
        said.contains(&format!("pack {}", &pack[..8])) && said.contains("removed"),
        "{}",
        describe(&repaired)
    );
    assert!(
        !packs(&snap.repo).iter().any(|(p, _)| p.ends_with(&pack)),
        "the damaged pack is still stored"
    );
    // Nothing the index lists is damaged now: only the snapshot's reference
    // to the lost blob remains, as a missing blob.
    let after = snap.run_code(&["verify", "--read-data"], 1);
    assert!(stderr(&after).contains("is not in any index"), "{}", describe(&after));
    assert!(
        !stderr(&after).contains(&format!("pack {}", &pack[..8])),
        "{}",
        describe(&after)
    );

    // The files did not change, but the damaged one's blobs are not all
    // indexed any more: the next backup reads it again and is whole.
    let second = snap.create(&[s(&src)]);
    assert!(
        summary(&second, "files_unmodified") < 3,
        "every file was taken from the parent: {second}"
    );
    assert!(summary(&second, "blobs_added") > 0, "{second}");
    let second = second["id"].as_str().unwrap().to_string();
    let target = snap.scratch().join("restored");
    let out = snap.restore(&second, &target, &[]);
    assert_code(&out, 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());

    // The lost blob was stored again with the same content (ids are content
    // hashes), so the old snapshot is whole again too.
    let old_target = snap.scratch().join("restored-first");
    assert_code(&snap.restore(&first, &old_target, &[]), 0);
    assert_same_tree(&src, &restored(&old_target, &src), Compare::all());
    let fixed = snap.ok(&["repair", "snapshots"]);
    assert!(
        stdout(&fixed).contains("no snapshot references missing data"),
        "{}",
        describe(&fixed)
    );
    let healthy = snap.run(&["verify", "--read-data"]);
    assert_code(&healthy, 0);
    // Running repair packs again finds nothing recorded.
    let again = snap.ok(&["repair", "packs"]);
    assert!(
        stdout(&again).contains("no damaged packs known"),
        "{}",
        describe(&again)
    );
}

#[test]
fn repair_packs_reads_everything_names_packs_and_drops_missing_ones() {
    let (snap, src, first) = fixture();
    // No verify first: --read-data finds the damage itself.
    let pack = damage_largest_pack(&snap.repo);
    let out = snap.ok(&["repair", "packs", "--read-data", "--json"]);
    let stats = parse_json(&out);
    let packs_seen = stats["packs"].as_array().unwrap();
    let removed: Vec<&str> = packs_seen
        .iter()
        .filter(|p| p["outcome"] == "removed")
        .map(|p| p["pack"].as_str().unwrap())
        .collect();
    assert_eq!(removed, vec![pack.as_str()], "{stats}");
    assert!(packs_seen.iter().any(|p| p["outcome"] == "intact"), "{stats}");
    let damaged = &packs_seen.iter().find(|p| p["outcome"] == "removed").unwrap();
    assert!(damaged["blobs_salvaged"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(damaged["blobs_damaged"].as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(stats["blobs_lost"].as_array().unwrap().len(), 1, "{stats}");

    // Before any new backup, the snapshot's file that lost a blob is marked.
    let fixed = snap.ok(&["repair", "snapshots", "--forget"]);
    let said = stdout(&fixed);
    assert!(
        said.contains(&first[..8]) && said.contains(".bin"),
        "{}",
        describe(&fixed)
    );
    let repaired = snap.snapshots();
    assert_eq!(repaired.len(), 1);
    let listed = snap.ls_paths(repaired[0]["id"].as_str().unwrap());
    assert!(listed.iter().any(|p| p.ends_with(".bin.damaged")), "{listed:?}");

    // A pack named by prefix, intact: left alone.
    let (intact, _) = packs(&snap.repo).into_iter().next().unwrap();
    let intact = intact.file_name().unwrap().to_str().unwrap().to_string();
    let out = snap.ok(&["repair", "packs", &intact[..10]]);
    assert!(stdout(&out).contains("intact"), "{}", describe(&out));
    assert!(packs(&snap.repo).iter().any(|(p, _)| p.ends_with(&intact)));

    // A pack deleted from the storage: removed from the index.
    let (gone, _) = packs(&snap.repo).into_iter().next().unwrap();
    let gone_id = gone.file_name().unwrap().to_str().unwrap().to_string();
    fs::remove_file(&gone).unwrap();
    let missing = snap.run_code(&["verify"], 1);
    assert!(stderr(&missing).contains("missing"), "{}", describe(&missing));
    let out = snap.ok(&["repair", "packs"]);
    assert!(stdout(&out).contains("missing from the storage"), "{}", describe(&out));
    let after = snap.run(&["verify"]);
    assert!(!stderr(&after).contains(&gone_id[..8]), "{}", describe(&after));

    // A new backup stores all of it again.
    let latest = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    let target = snap.scratch().join("restored");
    assert_code(&snap.restore(&latest, &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());

    // Nonsense is refused with a usage-style error, not a panic.
    let bad = snap.run(&["repair", "packs", "zz-not-hex"]);
    assert_ne!(bad.status.code(), Some(0), "{}", describe(&bad));
    assert!(!panicked(&bad), "{}", describe(&bad));
}

#[test]
fn a_killed_repair_packs_leaves_a_valid_repository_and_runs_again() {
    for point in ["repair-packs-index-written", "repair-packs-deleting"] {
        let (snap, src, first) = fixture();
        let pack = damage_largest_pack(&snap.repo);
        snap.run_code(&["verify", "--read-data"], 1);
        let killed = snap
            .command()
            .args(["repair", "packs"])
            .env("SNAP_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            !killed.status.success() && stderr(&killed).contains("failpoint"),
            "{point}: {}",
            describe(&killed)
        );
        // Whatever the kill left, the intact files of the old snapshot restore.
        snap.ok(&["unlock", "--remove-all"]);
        let target = snap.scratch().join("after-kill");
        snap.restore(&first, &target, &[]);
        assert!(
            same_content(&src.join("c.txt"), &restored(&target, &src).join("c.txt")),
            "{point}"
        );
        // A second run finishes the job, and a backup makes everything whole.
        snap.ok(&["repair", "packs"]);
        let second = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
        // Killed while deleting, the damaged pack may be left unindexed:
        // prune removes it like any pack no index lists.
        snap.ok(&["prune"]);
        assert!(
            !packs(&snap.repo).iter().any(|(p, _)| p.ends_with(&pack)),
            "{point}: the damaged pack is still stored"
        );
        let target = snap.scratch().join("after-repair");
        assert_code(&snap.restore(&second, &target, &[]), 0);
        assert_same_tree(&src, &restored(&target, &src), Compare::all());
        assert_code(&snap.run(&["verify", "--read-data"]), 0);
    }
}
