//! Request counts (backend::counting) in `-v` and `--json` output, and the
//! local object cache (backend::cache): what a command costs in requests,
//! and that a warm cache takes snapshot reads off the repository.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::util::*;

/// `requests.by_kind.KIND.OP` of a `--json` result (0 when left out).
fn count(json: &Value, kind: &str, op: &str) -> u64 {
    json["requests"]["by_kind"][kind][op].as_u64().unwrap_or(0)
}

/// The `  by kind:` line of `-v` output, as (kind, op) -> count.
fn by_kind(out: &std::process::Output) -> std::collections::BTreeMap<(String, String), u64> {
    let text = stderr(out);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("  by kind: "))
        .unwrap_or_else(|| panic!("no request summary on stderr\n{}", describe(out)));
    let mut map = std::collections::BTreeMap::new();
    for group in line.split("; ") {
        let (kind, ops) = group.split_once(' ').expect("kind then ops");
        for op in ops.split(", ") {
            let (op, n) = op.split_once(' ').expect("op then count");
            map.insert((kind.to_string(), op.to_string()), n.parse().expect("a count"));
        }
    }
    map
}

/// The object cache directory of the one repository under `cache`.
fn object_cache(cache: &Path) -> PathBuf {
    let repo_dirs: Vec<PathBuf> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(repo_dirs.len(), 1, "one repository in the cache: {repo_dirs:?}");
    repo_dirs[0].join("objects")
}

#[test]
fn create_and_restore_report_their_requests_in_json() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    write_random_file(&src.join("big"), 3 << 20, 1);
    fs::write(src.join("small"), b"small file").unwrap();
    // Old enough not to be re-read as possibly changing (racy mtime).
    set_tree_times(&src);

    let first = snap.create(&[s(&src)]);
    let r = &first["requests"];
    assert!(count(&first, "pack", "write") >= 1, "{r}");
    assert_eq!(count(&first, "snapshot", "write"), 1, "{r}");
    assert!(count(&first, "index", "write") >= 1, "{r}");
    assert!(r["bytes_up"].as_u64().unwrap() >= 3 << 20, "the data went up: {r}");
    let by_op_sum: u64 = r["by_op"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(r["total"].as_u64().unwrap(), by_op_sum, "{r}");

    // Unchanged: no data stored (at most one small pack of the ancestor
    // directories' trees, whose times the backup itself changed), and with
    // the cache warm no snapshot is read (the parent comes from the cache)
    // and no data, only the parent's trees.
    let second = snap.create(&[s(&src)]);
    let r = &second["requests"];
    assert!(count(&second, "pack", "write") <= 1, "{r}");
    assert_eq!(count(&second, "pack", "read"), 0, "{r}");
    assert_eq!(count(&second, "snapshot", "read"), 0, "{r}");
    assert_eq!(count(&second, "snapshot", "write"), 1, "{r}");
    assert!(r["bytes_up"].as_u64().unwrap() < 64 << 10, "no data went up: {r}");
    assert!(
        r["bytes_down"].as_u64().unwrap() < 64 << 10,
        "only metadata came down: {r}"
    );
    assert!(r["total"].as_u64().unwrap() < 40, "a bounded number of requests: {r}");

    // The parent's trees were read once by the second backup and kept in
    // the local tree cache: the third reads no pack at all.
    let third = snap.create(&[s(&src)]);
    let r = &third["requests"];
    assert_eq!(
        count(&third, "pack", "read_range"),
        0,
        "trees come from the tree cache: {r}"
    );
    assert_eq!(count(&third, "pack", "read"), 0, "{r}");

    let target = snap.scratch().join("target");
    let out = snap.restore("latest", &target, &["--json"]);
    assert_code(&out, 0);
    let restored = parse_json(&out);
    let r = &restored["requests"];
    assert!(
        count(&restored, "pack", "read_range") + count(&restored, "pack", "read") >= 1,
        "{r}"
    );
    assert_eq!(count(&restored, "pack", "write"), 0, "{r}");
    assert!(r["bytes_down"].as_u64().unwrap() >= 3 << 20, "the data came down: {r}");
    let back = super::util::restored(&target, &src);
    assert!(same_content(&src.join("big"), &back.join("big")));
    assert_eq!(fs::read(back.join("small")).unwrap(), b"small file");
}

#[test]
fn verbose_prints_one_request_summary() {
    let snap = Snap::init(&[]);
    let out = snap.ok(&["snapshots", "-v"]);
    let text = stderr(&out);
    let summary: Vec<&str> = text.lines().filter(|l| l.starts_with("requests: ")).collect();
    assert_eq!(summary.len(), 1, "{text}");
    assert!(summary[0].contains("list"), "{text}");
    assert!(summary[0].ends_with(" down"), "{text}");
    assert!(by_kind(&out)[&("config".to_string(), "read".to_string())] >= 1);
    // Not without -v.
    let quiet = snap.ok(&["snapshots"]);
    assert!(!stderr(&quiet).contains("requests:"), "{}", describe(&quiet));
}

#[test]
fn a_second_listing_reads_no_snapshot_from_the_repository() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join("f"), format!("version {i}")).unwrap();
        snap.create(&[s(&src)]);
    }
    // Written snapshots are kept at once; without them (as on a machine
    // that did not write them), each snapshot is read once...
    fs::remove_dir_all(object_cache(&snap.cache)).unwrap();
    let listing = || snap.ok(&["snapshots", "-v"]);
    let first = by_kind(&listing());
    let key = |kind: &str, op: &str| (kind.to_string(), op.to_string());
    assert_eq!(first.get(&key("snapshot", "read")), Some(&3), "{first:?}");
    // ...and then none: they are served from its cache, checked by hash.
    let second = by_kind(&listing());
    assert_eq!(second.get(&key("snapshot", "read")), None, "{second:?}");
    assert_eq!(second.get(&key("snapshot", "list")), Some(&1), "{second:?}");
    assert_eq!(second.get(&key("index", "read")), None, "{second:?}");
    assert!(object_cache(&snap.cache).join("snapshot").read_dir().unwrap().count() == 3);
}

#[test]
fn a_damaged_cache_file_is_fetched_again_and_repaired() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    let created = snap.create(&[s(&src)]);
    let id = created["id"].as_str().unwrap().to_string();
    let cached = object_cache(&snap.cache).join("snapshot").join(&id);
    let original = fs::read(snap.repo.join("snapshots").join(&id)).unwrap();
    assert_eq!(fs::read(&cached).unwrap(), original, "kept when written");

    let mut damaged = original.clone();
    damaged[10] ^= 0x01;
    chmod(&cached, 0o600);
    fs::write(&cached, &damaged).unwrap();
    let out = snap.ok(&["snapshots", "--json", "-v"]);
    assert_eq!(parse_json(&out)[0]["id"], id);
    assert_eq!(by_kind(&out)[&("snapshot".to_string(), "read".to_string())], 1);
    assert_eq!(fs::read(&cached).unwrap(), original, "repaired");

    // A snapshot deleted by another host drops out of the cache at the
    // next listing.
    fs::remove_file(snap.repo.join("snapshots").join(&id)).unwrap();
    snap.ok(&["snapshots"]);
    assert!(!cached.exists(), "a snapshot gone from the repository stays cached");
}

#[test]
fn verify_judges_the_repository_not_the_cache() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    let id = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    // The repository's copy is damaged; the cache still holds a good one.
    let stored = snap.repo.join("snapshots").join(&id);
    let mut bytes = fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    chmod(&stored, 0o600);
    fs::write(&stored, &bytes).unwrap();
    let out = snap.run_code(&["verify"], 1);
    assert!(
        stderr(&out).contains(&id[..8]) || String::from_utf8_lossy(&out.stdout).contains(&id[..8]),
        "{}",
        describe(&out)
    );
}

#[test]
fn an_unchanged_backup_costs_the_same_reads_with_one_snapshot_or_many() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    set_tree_times(&src);
    let other = snap.scratch().join("other");
    fs::create_dir(&other).unwrap();
    snap.create(&[s(&src)]);
    let reads = |created: &Value| {
        let ops = &created["requests"]["by_op"];
        (
            ops["read"].as_u64().unwrap_or(0),
            ops["list"].as_u64().unwrap_or(0),
            count(created, "snapshot", "read"),
        )
    };
    let with_one = reads(&snap.create(&[s(&src)]));
    // More snapshots (of another path, so the parent stays the same).
    for i in 0..6 {
        fs::write(other.join("g"), format!("{i}")).unwrap();
        snap.create(&[s(&other)]);
    }
    let with_many = reads(&snap.create(&[s(&src)]));
    assert_eq!(with_one.2, 0, "no snapshot read with a warm cache");
    assert_eq!(
        with_one, with_many,
        "(reads, lists, snapshot reads) grew with the snapshots"
    );
}
