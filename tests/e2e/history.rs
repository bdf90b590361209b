//! History: `snapshots` columns, groups and CSV; `diff` between snapshots
//! and against live files; `find` across snapshots; `stats`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::util::*;

fn id_of(created: &Value) -> String {
    created["id"].as_str().expect("id").to_string()
}

fn short(id: &str) -> &str {
    &id[..8]
}

/// The change lines of `diff` text output (before the blank line and totals).
fn change_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .expect("UTF-8")
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// src/ with keep.txt, chmod.txt, modify.txt, same.txt (same-size
/// rewrite), remove.txt, thing (a file that becomes a directory), gone/
/// (a directory removed) and unchanged/deep/ (a subtree left alone).
fn first_version(src: &Path) {
    for (rel, data) in [
        ("keep.txt", "keep"),
        ("chmod.txt", "chmod"),
        ("modify.txt", "short"),
        ("same.txt", "abcd"),
        ("remove.txt", "remove me"),
        ("thing", "a file"),
        ("gone/inner.txt", "bye"),
        ("unchanged/deep/f.txt", "still here"),
    ] {
        let path = src.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    chmod(&src.join("chmod.txt"), 0o644);
}

/// The hand-made change set, applied to [`first_version`]'s tree.
fn change(src: &Path) {
    chmod(&src.join("chmod.txt"), 0o600);
    fs::write(src.join("modify.txt"), "a longer text").unwrap();
    fs::write(src.join("same.txt"), "wxyz").unwrap();
    fs::remove_file(src.join("remove.txt")).unwrap();
    fs::remove_file(src.join("thing")).unwrap();
    fs::create_dir(src.join("thing")).unwrap();
    fs::write(src.join("thing/inside.txt"), "in").unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("new.txt"), "new").unwrap();
}

#[test]
fn diff_lists_a_hand_made_change_set() {
    let snap = Snap::init(&[]);
    let dir = tempdir();
    let src = dir.path().join("src");
    first_version(&src);
    let a = id_of(&snap.create(&[s(&src)]));
    change(&src);
    let b = id_of(&snap.create(&[s(&src)]));
    let p = s(&src);

    let out = snap.ok(&["diff", &a, &b]);
    let expected = [
        format!("- {p}/gone/"),
        format!("- {p}/gone/inner.txt (3 B)"),
        format!("M {p}/modify.txt (5 B -> 13 B)"),
        format!("+ {p}/new.txt (3 B)"),
        format!("- {p}/remove.txt (9 B)"),
        format!("M {p}/same.txt (4 B -> 4 B)"),
        format!("T {p}/thing (file -> dir)"),
        format!("+ {p}/thing/inside.txt (2 B)"),
    ];
    assert_eq!(change_lines(&out), expected, "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("2 added (5 B), 3 removed (18 B), 2 modified (9 B -> 17 B), 1 type changed, "),
        "{text}"
    );

    // --metadata adds the chmod and the directory whose entries changed
    // (ancestors above src/ may change too: /tmp is busy).
    let out = snap.ok(&["diff", "--metadata", &a, &b]);
    let below: Vec<String> = change_lines(&out)
        .into_iter()
        .filter(|l| l[2..].starts_with(&format!("{p}/")))
        .collect();
    let mut with_metadata = vec![
        format!("U {p}/ (mtime)"),
        format!("U {p}/chmod.txt (mode 0644 -> 0600)"),
    ];
    with_metadata.extend(expected.iter().cloned());
    assert_eq!(below, with_metadata, "{}", describe(&out));
    for line in change_lines(&out) {
        assert!(line[2..].starts_with(p) || line.starts_with("U "), "{line}");
    }
    // The metadata-only count is what --metadata lists (with any ancestor
    // of src/ whose mtime moved: /tmp is busy).
    let listed = change_lines(&out).iter().filter(|l| l.starts_with("U ")).count();
    assert!(text.contains(&format!(", {listed} metadata only")), "{text}");

    // The same in JSON: one entry per change, both sides' nodes.
    let json = parse_json(&snap.ok(&["diff", "--json", "--metadata", &a, &b]));
    assert_eq!(json["from"]["snapshot"], a.as_str());
    assert_eq!(json["to"]["snapshot"], b.as_str());
    let got: Vec<(String, String, Value, Value, Value, Value)> = json["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["path"].as_str().unwrap().starts_with(p))
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
                c["old"]["type"].clone(),
                c["new"]["type"].clone(),
                c["old"]["size"].clone(),
                c["new"]["size"].clone(),
            )
        })
        .collect();
    let n = Value::Null;
    let f = || Value::from("file");
    let d = || Value::from("dir");
    let want = vec![
        ("metadata", p.to_string(), d(), d(), Value::from(0), Value::from(0)),
        ("metadata", format!("{p}/chmod.txt"), f(), f(), 5.into(), 5.into()),
        ("removed", format!("{p}/gone"), d(), n.clone(), 0.into(), n.clone()),
        (
            "removed",
            format!("{p}/gone/inner.txt"),
            f(),
            n.clone(),
            3.into(),
            n.clone(),
        ),
        ("modified", format!("{p}/modify.txt"), f(), f(), 5.into(), 13.into()),
        ("added", format!("{p}/new.txt"), n.clone(), f(), n.clone(), 3.into()),
        (
            "removed",
            format!("{p}/remove.txt"),
            f(),
            n.clone(),
            9.into(),
            n.clone(),
        ),
        ("modified", format!("{p}/same.txt"), f(), f(), 4.into(), 4.into()),
        ("type_changed", format!("{p}/thing"), f(), d(), 6.into(), 0.into()),
        (
            "added",
            format!("{p}/thing/inside.txt"),
            n.clone(),
            f(),
            n.clone(),
            2.into(),
        ),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(c, path, a, b, x, y)| (c.to_string(), path, a, b, x, y))
        .collect();
    assert_eq!(got, want);
    let stats = &json["stats"];
    assert_eq!(stats["added"], 2);
    assert_eq!(stats["removed"], 3);
    assert_eq!(stats["modified"], 2);
    assert_eq!(stats["type_changed"], 1);
    assert_eq!(stats["bytes_added"], 5);
    assert_eq!(stats["bytes_removed"], 18);
    // unchanged/ has the same tree id on both sides: not read.
    assert!(stats["trees_skipped"].as_u64().unwrap() >= 1, "{stats}");

    // A snapshot against itself: nothing.
    let out = snap.ok(&["diff", "--metadata", &a, &a]);
    assert!(change_lines(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn diff_local_compares_live_files() {
    let snap = Snap::init(&[]);
    let dir = tempdir();
    let src = dir.path().join("src");
    first_version(&src);
    set_tree_times(&src);
    let a = id_of(&snap.create(&[s(&src)]));
    let p = s(&src);

    // Unchanged files: nothing, without reading a byte.
    let out = snap.ok(&["diff", &a, "--local", p, "--metadata"]);
    assert!(change_lines(&out).is_empty(), "{}", describe(&out));

    use std::os::unix::fs::MetadataExt;
    let src_meta = fs::symlink_metadata(&src).unwrap();
    // Same size and mtime, other content: only --content sees it.
    let kept = fs::symlink_metadata(src.join("keep.txt")).unwrap();
    fs::write(src.join("keep.txt"), "KEEP").unwrap();
    set_mtime(&src.join("keep.txt"), kept.mtime(), kept.mtime_nsec() as u32);
    // Touched only: read (mtime differs), same chunks: metadata only.
    set_mtime(&src.join("same.txt"), 1_700_000_000, 0);
    fs::write(src.join("added.txt"), "added").unwrap();
    fs::remove_file(src.join("remove.txt")).unwrap();
    // The directory's own mtime changed by the add/remove: restored as it was.
    set_mtime(&src, src_meta.mtime(), src_meta.mtime_nsec() as u32);

    let out = snap.ok(&["diff", &a, "--local", p]);
    assert_eq!(
        change_lines(&out),
        [format!("+ {p}/added.txt (5 B)"), format!("- {p}/remove.txt (9 B)")],
        "{}",
        describe(&out)
    );
    let out = snap.ok(&["diff", &a, "--local", p, "--metadata"]);
    assert_eq!(
        change_lines(&out),
        [
            format!("+ {p}/added.txt (5 B)"),
            format!("- {p}/remove.txt (9 B)"),
            format!("U {p}/same.txt (mtime)"),
        ],
        "{}",
        describe(&out)
    );
    let out = snap.ok(&["diff", &a, "--local", p, "--content"]);
    assert_eq!(
        change_lines(&out),
        [
            format!("+ {p}/added.txt (5 B)"),
            format!("M {p}/keep.txt (4 B -> 4 B)"),
            format!("- {p}/remove.txt (9 B)"),
        ],
        "{}",
        describe(&out)
    );
    let json = parse_json(&snap.ok(&["diff", "--json", &a, "--local", p]));
    assert_eq!(json["to"]["local"], p);
    assert_eq!(json["stats"]["added"], 1);
    assert_eq!(json["stats"]["removed"], 1);
    assert_eq!(json["stats"]["metadata"], 1);

    // A path the snapshot does not hold: all of it is new.
    let extra = dir.path().join("extra");
    fs::create_dir(&extra).unwrap();
    fs::write(extra.join("x"), "x").unwrap();
    let out = snap.ok(&["diff", &a, "--local", s(&extra)]);
    assert_eq!(
        change_lines(&out),
        [format!("+ {}/", s(&extra)), format!("+ {}/x (1 B)", s(&extra))]
    );
    // Neither side: a usage error.
    snap.run_code(&["diff", &a, "--local", s(&dir.path().join("nowhere"))], 2);
    // A second snapshot and --local together: a usage error.
    snap.run_code(&["diff", &a, &a, "--local", p], 2);
}

#[test]
fn find_groups_versions_across_snapshots() {
    let snap = Snap::init(&[]);
    let dir = tempdir();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("notes.txt"), "version one").unwrap();
    fs::write(src.join("sub/other.txt"), "other").unwrap();
    chmod(&src.join("sub/other.txt"), 0o640);
    fs::write(src.join("sub/Notes.md"), "md").unwrap();
    set_mtime(&src.join("notes.txt"), 1_577_836_800, 0); // 2020-01-01
    let s1 = id_of(&snap.create(&[s(&src)]));
    fs::write(src.join("sub/more.bin"), "bin").unwrap();
    let s2 = id_of(&snap.create(&[s(&src)]));
    fs::write(src.join("notes.txt"), "version two!").unwrap();
    set_mtime(&src.join("notes.txt"), 1_704_067_200, 0); // 2024-01-01
    let s3 = id_of(&snap.create(&[s(&src)]));
    let notes = format!("{}/notes.txt", s(&src));

    let json = parse_json(&snap.ok(&["find", "--json", "notes.txt"]));
    assert_eq!(json["snapshots_searched"], 3);
    let matches = json["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{json}");
    assert_eq!(matches[0]["path"], notes.as_str());
    let versions = matches[0]["versions"].as_array().unwrap();
    let ids = |v: &Value| -> Vec<String> {
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(versions.len(), 2, "{json}");
    assert_eq!(ids(&versions[0]), [s1.clone(), s2.clone()]);
    assert_eq!(versions[0]["entry"]["size"], 11);
    assert_eq!(ids(&versions[1]), [s3.as_str()]);
    assert_eq!(versions[1]["entry"]["size"], 12);
    assert_ne!(versions[0]["content"], versions[1]["content"]);
    // Every distinct tree once: all of s1's (`/`, src's ancestors, src,
    // sub), then those that changed: all again for s2 (sub got a file),
    // all but sub for s3 (its sub is s2's, searched already).
    let per_snapshot = src.ancestors().count() as u64 + 1;
    assert_eq!(json["trees_read"].as_u64().unwrap(), 3 * per_snapshot - 1, "{json}");

    // The text form says the same.
    let out = snap.ok(&["find", "notes.txt"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], notes);
    assert!(
        lines[1].starts_with("  11 B") && lines[1].ends_with(&format!("in 2 snapshots: {} {}", short(&s1), short(&s2))),
        "{text}"
    );
    assert!(
        lines[2].starts_with("  12 B") && lines[2].ends_with(&format!("in 1 snapshot: {}", short(&s3))),
        "{text}"
    );

    // --long adds mode and owner.
    let out = snap.ok(&["find", "--long", "other.txt"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let entry = &parse_json(&snap.ok(&["find", "--json", "other.txt"]))["matches"][0]["versions"][0]["entry"];
    let (user, group) = (entry["user"].as_str().unwrap(), entry["group"].as_str().unwrap());
    let owner = if user.is_empty() {
        entry["uid"].to_string()
    } else {
        user.to_string()
    };
    let group = if group.is_empty() {
        entry["gid"].to_string()
    } else {
        group.to_string()
    };
    let line = text.lines().nth(1).unwrap_or_default();
    assert!(line.contains(&format!("  rw-r----- {owner}:{group}  ")), "{text}");
    assert!(
        line.ends_with(&format!("in 3 snapshots: {} {} {}", short(&s1), short(&s2), short(&s3))),
        "{text}"
    );

    // Case, full-path patterns, several patterns, one snapshot.
    let paths = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["find", "--json"];
        all.extend_from_slice(args);
        parse_json(&snap.ok(&all))["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths(&["notes.*"]), ["notes.txt"]);
    assert_eq!(paths(&["-i", "notes.*"]), ["notes.txt", "Notes.md"]);
    assert_eq!(paths(&["sub/*.txt"]), ["other.txt"]);
    assert_eq!(paths(&["*.bin", "other.*"]), ["more.bin", "other.txt"]);
    assert_eq!(paths(&["--snapshot", &s1, "*.bin"]), Vec::<String>::new());
    let one = parse_json(&snap.ok(&["find", "--json", "--snapshot", &s3, "notes.txt"]));
    let v = one["matches"][0]["versions"].as_array().unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(ids(&v[0]), [s3.as_str()]);

    // --newest/--oldest filter by the entry's modification time.
    let only = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["find", "--json", "notes.txt"];
        all.extend_from_slice(args);
        parse_json(&snap.ok(&all))["matches"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["versions"].as_array().unwrap().clone())
            .map(|v| v["entry"]["size"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(only(&["--newest", "2022-01-01T00:00:00Z"]), [11]);
    assert_eq!(only(&["--oldest", "2022-01-01T00:00:00Z"]), [12]);
    assert_eq!(only(&["--oldest", "1 day ago"]), Vec::<u64>::new());
    let bad = snap.run_code(&["find", "notes.txt", "--newest", "someday"], 2);
    assert!(stderr(&bad).contains("someday"), "{}", describe(&bad));
    snap.run_code(&["find", "[unclosed"], 2);
}

#[test]
fn stats_counts_restore_size_and_unique_data() {
    let snap = Snap::init(&[]);
    let dir = tempdir();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    write_random_file(&src.join("dup1"), 300_000, 7);
    write_random_file(&src.join("dup2"), 300_000, 7);
    write_random_file(&src.join("unique"), 100_000, 8);
    let a = id_of(&snap.create(&[s(&src)]));
    fs::write(src.join("small"), "0123456789").unwrap();
    let b = id_of(&snap.create(&[s(&src)]));

    let json = parse_json(&snap.ok(&["stats", "--json"]));
    let per = json["snapshots"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert_eq!(per[0]["id"], a.as_str());
    assert_eq!(per[1]["id"], b.as_str());
    // Restore size: the sum of the file sizes, each name counted.
    assert_eq!(per[0]["restore_size"]["files"], 3);
    assert_eq!(per[0]["restore_size"]["bytes"], 700_000);
    assert_eq!(per[1]["restore_size"]["files"], 4);
    assert_eq!(per[1]["restore_size"]["bytes"], 700_010);
    // Stored once: the two identical files' content counts once.
    assert_eq!(per[0]["raw_data"]["data_bytes"], 400_000);
    assert_eq!(per[1]["raw_data"]["data_bytes"], 400_010);
    let total = &json["total"];
    assert_eq!(total["count"], 2);
    assert_eq!(total["restore_size"]["bytes"], 1_400_010);
    assert_eq!(total["raw_data"]["data_bytes"], 400_010);
    let ratio = total["dedup_ratio"].as_f64().unwrap();
    assert!((ratio - 1_400_010.0 / 400_010.0).abs() < 1e-9, "{ratio}");
    let raw = total["raw_data"]["raw_bytes"].as_f64().unwrap();
    let stored = total["raw_data"]["stored_bytes"].as_f64().unwrap();
    assert!((total["compression_ratio"].as_f64().unwrap() - raw / stored).abs() < 1e-9);
    // Random data does not compress: sealing only adds.
    assert!(stored > 400_010.0, "{total}");
    assert_eq!(total["raw_data"]["missing_blobs"], 0);
    // The repository's packs are what is on disk.
    let on_disk: u64 = packs(&snap.repo).iter().map(|(_, size)| size).sum();
    assert_eq!(json["repository"]["pack_bytes"], on_disk);
    assert!(json["repository"]["pack_bytes"].as_f64().unwrap() >= stored);

    // One snapshot, one mode.
    let only = parse_json(&snap.ok(&["stats", "--json", "--mode", "restore-size", &b]));
    assert_eq!(only["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(only["total"]["restore_size"]["bytes"], 700_010);
    assert!(only["total"].get("raw_data").is_none(), "{only}");
    let raw_only = parse_json(&snap.ok(&["stats", "--json", "--mode", "raw-data", &a]));
    assert_eq!(raw_only["total"]["raw_data"]["data_bytes"], 400_000);
    assert!(raw_only["total"].get("restore_size").is_none());
    // The table prints a row per snapshot and a total.
    let out = snap.ok(&["stats"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with(short(&a))), "{text}");
    assert!(text.lines().any(|l| l.starts_with("total")), "{text}");
    snap.run_code(&["stats", "--mode", "everything"], 2);
}

/// Parses CSV with Python's csv module (the reference reader), as JSON rows.
fn python_csv(csv: &[u8]) -> Option<Vec<Value>> {
    let mut child = match Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys; print(json.dumps(list(csv.DictReader(sys.stdin))))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            skip_note(format!("python3 not available ({e}): CSV not checked"));
            return None;
        }
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(csv).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(rows) => Some(rows),
        other => panic!("{other}"),
    }
}

#[test]
fn snapshots_csv_groups_and_latest() {
    let snap = Snap::init(&[]);
    let dir = tempdir();
    // A comma, a quote and a space in the path: the fields must be quoted.
    let src = dir.path().join("a, \"b\" c");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "one").unwrap();
    snap.create(&["--host", "alpha", "--tag", "daily", s(&src)]);
    fs::write(src.join("g"), "two!").unwrap();
    snap.create(&["--host", "alpha", s(&src)]);
    snap.create(&["--host", "beta", "--tag", "daily", "--tag", "x", s(&src)]);
    let listed = snap.snapshots();
    assert_eq!(listed.len(), 3);

    let out = snap.ok(&["snapshots", "--format", "csv"]);
    if let Some(rows) = python_csv(&out.stdout) {
        assert_eq!(rows.len(), 3);
        for (row, json) in rows.iter().zip(&listed) {
            assert_eq!(row["id"], json["id"]);
            assert_eq!(row["host"], json["host"]);
            assert_eq!(row["paths"], s(&src));
            let sum = &json["summary"];
            let files = sum["files_new"].as_u64().unwrap()
                + sum["files_changed"].as_u64().unwrap()
                + sum["files_unmodified"].as_u64().unwrap();
            assert_eq!(row["files"], files.to_string().as_str());
            assert_eq!(row["size"], sum["bytes_total"].to_string().as_str());
            assert_eq!(row["added_stored"], sum["bytes_added_stored"].to_string().as_str());
            assert_eq!(row["added_raw"], sum["bytes_added_raw"].to_string().as_str());
            assert_eq!(row["checkpoint"], "false");
        }
        assert_eq!(rows[0]["files"], "1");
        assert_eq!(rows[1]["files"], "2");
        assert_eq!(rows[1]["size"], "7");
        assert_eq!(rows[2]["tags"], "daily\nx");
    }

    // The table has the summary columns.
    let text = String::from_utf8(snap.ok(&["snapshots"]).stdout).unwrap();
    let header = text.lines().next().unwrap();
    for col in ["Files", "Size", "Added"] {
        assert!(header.contains(col), "{text}");
    }

    // --group-by host --latest 1: the newest of each host.
    let json = parse_json(&snap.ok(&["snapshots", "--json", "--group-by", "host", "--latest", "1"]));
    let groups = json.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{json}");
    assert_eq!(groups[0]["group"]["host"], "alpha");
    assert!(groups[0]["group"]["paths"].is_null());
    assert_eq!(groups[0]["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["snapshots"][0]["id"], listed[1]["id"]);
    assert_eq!(groups[1]["group"]["host"], "beta");
    assert_eq!(groups[1]["snapshots"][0]["id"], listed[2]["id"]);
    // Without --latest, every member; groups sorted by key, tags sorted.
    let json = parse_json(&snap.ok(&["snapshots", "--json", "--group-by", "tags"]));
    let keys: Vec<Value> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"]["tags"].clone())
        .collect();
    assert_eq!(
        keys,
        [
            serde_json::json!([]),
            serde_json::json!(["daily"]),
            serde_json::json!(["daily", "x"])
        ]
    );
    // --latest without --group-by: per host and path set, as before.
    let json = parse_json(&snap.ok(&["snapshots", "--json", "--latest", "1"]));
    let ids: Vec<&Value> = json.as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&listed[1]["id"], &listed[2]["id"]]);
    // The filters still apply, and the text form names the groups.
    let out = snap.ok(&["snapshots", "--group-by", "host,tags", "--tag", "daily"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("host alpha, tags [daily]"), "{text}");
    assert!(text.contains("host beta, tags [daily, x]"), "{text}");
    assert!(text.trim_end().ends_with("2 snapshots"), "{text}");
    snap.run_code(&["snapshots", "--group-by", "colour"], 2);
}
