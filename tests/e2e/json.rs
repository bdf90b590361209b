//! The JSON outputs: `snapshots --json`, `create --json`, `ls --json`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::util::*;

fn is_hex(v: &Value, len: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

const SUMMARY_FIELDS: [&str; 11] = [
    "files_new",
    "files_changed",
    "files_unmodified",
    "dirs",
    "errors",
    "bytes_read",
    "bytes_total",
    "blobs_added",
    "bytes_added_raw",
    "bytes_added_stored",
    "duration_seconds",
];

#[track_caller]
fn check_snapshot_fields(snapshot: &Value, src: &Path, tags: &[&str], started_ns: i128, ended_ns: i128) {
    assert!(is_hex(&snapshot["id"], 64), "id: {snapshot}");
    assert!(is_hex(&snapshot["short_id"], 8), "short_id: {snapshot}");
    assert!(
        snapshot["id"]
            .as_str()
            .unwrap()
            .starts_with(snapshot["short_id"].as_str().unwrap()),
        "short_id is not a prefix of id: {snapshot}"
    );
    assert!(is_hex(&snapshot["tree"], 64), "tree: {snapshot}");
    let time = snapshot["time"].as_str().expect("time is a string");
    let (secs, nanos) = parse_rfc3339(time).unwrap_or_else(|| panic!("time {time:?} is not RFC 3339"));
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    assert!(
        (started_ns - 1_000_000_000..=ended_ns + 1_000_000_000).contains(&ns),
        "time {time} is not the time of the backup"
    );
    assert_eq!(snapshot["paths"], serde_json::json!([s(src)]));
    assert_eq!(snapshot["tags"], serde_json::json!(tags));
    assert_eq!(snapshot["host"], "test-host");
    assert!(snapshot["username"].is_string(), "username: {snapshot}");
    assert!(
        snapshot["program_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("snap ")),
        "program_version: {snapshot}"
    );
    let summary = snapshot["summary"].as_object().expect("summary object");
    for field in SUMMARY_FIELDS {
        assert!(
            summary.get(field).is_some_and(Value::is_number),
            "summary.{field}: {snapshot}"
        );
    }
}

#[test]
fn snapshots_json_has_every_field() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), b"first").unwrap();

    let t0 = now_ns();
    let first = snap.create(&["--host", "test-host", "--tag", "daily", "--tag", "db", s(&src)]);
    let t1 = now_ns();
    fs::write(src.join("b"), b"second").unwrap();
    let second = snap.create(&["--host", "test-host", "--tag", "weekly", s(&src)]);
    let t2 = now_ns();

    assert_eq!(first["warnings"], serde_json::json!([]));
    check_snapshot_fields(&first, &src, &["daily", "db"], t0, t1);
    check_snapshot_fields(&second, &src, &["weekly"], t1, t2);
    assert!(first["parent"].is_null(), "the first snapshot has no parent: {first}");
    assert_eq!(second["parent"], first["id"]);
    assert_eq!(summary(&first, "files_new"), 1);
    assert_eq!(summary(&second, "files_new"), 1);
    assert_eq!(summary(&second, "files_unmodified"), 1);

    let listed = snap.snapshots();
    assert_eq!(listed.len(), 2);
    check_snapshot_fields(&listed[0], &src, &["daily", "db"], t0, t1);
    check_snapshot_fields(&listed[1], &src, &["weekly"], t1, t2);
    // `snapshots --json` repeats what `create --json` said, minus the
    // warnings, the requests the backup made and the repository's size.
    for (from_list, from_create) in listed.iter().zip([&first, &second]) {
        let mut expected = from_create.clone();
        expected.as_object_mut().unwrap().remove("warnings");
        expected.as_object_mut().unwrap().remove("requests");
        let repository = expected.as_object_mut().unwrap().remove("repository");
        let repository = repository.unwrap_or_else(|| panic!("no repository in {from_create}"));
        assert!(repository["pack_bytes"].as_u64() > Some(0), "{repository}");
        assert_eq!(from_list, &expected);
    }

    // Filters of `snapshots`.
    let out = snap.ok(&["snapshots", "--json", "--tag", "weekly"]);
    let weekly = parse_json(&out);
    assert_eq!(weekly.as_array().map(Vec::len), Some(1));
    assert_eq!(weekly[0]["id"], second["id"]);
    let out = snap.ok(&["snapshots", "--json", "--host", "elsewhere"]);
    assert_eq!(parse_json(&out), serde_json::json!([]));
}

#[test]
fn ls_json_lists_every_path_with_its_metadata() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("file.txt"), b"12345").unwrap();
    fs::write(src.join("d/e/deep.bin"), random_bytes(70_000, 3)).unwrap();
    fs::write(src.join("d/empty"), b"").unwrap();
    chmod(&src.join("d/empty"), 0o640);
    std::os::unix::fs::symlink("file.txt", src.join("link")).unwrap();
    mkfifo(&src.join("pipe"), 0o600);
    set_tree_times(&src);
    snap.create(&[s(&src)]);

    let entries = snap.ls("latest");
    let mut by_path: BTreeMap<String, Value> = BTreeMap::new();
    for e in &entries {
        let path = e["path"].as_str().expect("path").to_string();
        assert!(by_path.insert(path.clone(), e.clone()).is_none(), "{path} listed twice");
        for field in ["type", "mode", "size", "mtime", "uid", "gid", "user", "group"] {
            assert!(e.get(field).is_some(), "{field} missing: {e}");
        }
    }

    // Every source entry, and every directory above the source.
    let mut expected: Vec<PathBuf> = src
        .ancestors()
        .skip(1)
        .filter(|p| *p != Path::new("/"))
        .map(Path::to_path_buf)
        .collect();
    expected.extend(walk(&src).into_keys().map(|rel| {
        if rel.as_os_str().is_empty() {
            src.clone()
        } else {
            src.join(rel)
        }
    }));
    let expected_paths: Vec<String> = {
        let mut v: Vec<String> = expected.iter().map(|p| s(p).to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(by_path.keys().cloned().collect::<Vec<_>>(), expected_paths);

    for (rel, meta) in walk(&src) {
        let path = if rel.as_os_str().is_empty() {
            src.clone()
        } else {
            src.join(&rel)
        };
        let e = &by_path[s(&path)];
        let kind = match () {
            _ if meta.is_dir() => "dir",
            _ if meta.is_file() => "file",
            _ if meta.file_type().is_symlink() => "symlink",
            _ => "fifo",
        };
        assert_eq!(e["type"], kind, "{e}");
        assert_eq!(e["mode"].as_u64(), Some(u64::from(meta.mode() & 0o7777)), "{e}");
        assert_eq!(e["uid"].as_u64(), Some(u64::from(meta.uid())), "{e}");
        assert_eq!(e["gid"].as_u64(), Some(u64::from(meta.gid())), "{e}");
        if kind == "file" {
            assert_eq!(e["size"].as_u64(), Some(meta.len()), "{e}");
        }
        let mtime = parse_rfc3339(e["mtime"].as_str().unwrap()).unwrap_or_else(|| panic!("mtime not RFC 3339: {e}"));
        assert_eq!(mtime, (meta.mtime(), meta.mtime_nsec() as u32), "{e}");
        if kind == "symlink" {
            assert_eq!(e["link_target"], "file.txt");
        } else {
            assert!(e.get("link_target").is_none(), "{e}");
        }
    }

    // `ls SNAPSHOT PATH` lists that path and what is below it.
    let out = snap.ok(&["ls", "--json", "latest", s(&src.join("d"))]);
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: Vec<String> = ["d", "d/e", "d/e/deep.bin", "d/empty"]
        .iter()
        .map(|r| s(&src.join(r)).to_string())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, want);
}
