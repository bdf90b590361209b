//! What `create` backs up: `--iexclude`, `--exclude-if-present`,
//! `--exclude-caches`, `--exclude-larger-than`, `--files-from*`,
//! `.snapignore` files; `--dry-run` and `-v`; `--description` and `snap tag`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::util::*;

fn write(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, data) in files {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
}

/// `ls` paths below `src`, relative to it.
fn listed_below(snap: &Snap, snapshot: &str, src: &Path) -> BTreeSet<String> {
    let prefix = format!("{}/", src.display());
    snap.ls_paths(snapshot)
        .into_iter()
        .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Relative paths of every entry under `root` (without the root itself).
fn rel_paths(root: &Path) -> BTreeSet<String> {
    walk(root)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Restores `id` and checks that the restored tree under `src` holds exactly
/// `expected`, each file with its original bytes.
fn assert_restores(snap: &Snap, id: &str, src: &Path, expected: &BTreeSet<String>) {
    let target = snap.scratch().join(format!("restore-{id}"));
    assert_code(&snap.restore(id, &target, &[]), 0);
    let got = restored(&target, src);
    assert_eq!(&rel_paths(&got), expected);
    for rel in expected {
        let original = src.join(rel);
        if original.is_file() {
            assert!(same_content(&original, &got.join(rel)), "{rel}");
        }
    }
}

fn id(created: &Value) -> &str {
    created["id"].as_str().unwrap()
}

#[test]
fn iexclude_markers_caches_and_sizes_leave_out_what_they_name() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    let big = vec![7u8; 3000];
    write(
        &src,
        &[
            ("Photo.JPG", b"jpg"),
            ("photo2.jpg", b"jpg2"),
            ("notes.txt", b"notes"),
            ("big.bin", &big),
            ("edge.bin", &[1u8; 2048]),
            ("project/.nobackup", b""),
            ("project/src.rs", b"fn main() {}"),
            ("keep/inner/.nobackup-not", b"x"),
            ("keep/inner/f.txt", b"f"),
            // A valid tag: left out with --exclude-caches.
            (
                "cache/CACHEDIR.TAG",
                b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
            ),
            ("cache/blob", b"cached"),
            // A tag without the signature does not count.
            ("fake/CACHEDIR.TAG", b"not a signature"),
            ("fake/data", b"data"),
            // NAME:HEADER: only a marker with that content.
            ("tagged/MARK", b"skip me please"),
            ("tagged/x", b"x"),
            ("untagged/MARK", b"keep me"),
            ("untagged/y", b"y"),
        ],
    );
    let created = snap.create(&[
        "--iexclude",
        "*.jpg",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-if-present",
        "MARK:skip me",
        "--exclude-caches",
        "--exclude-larger-than",
        "2K",
        s(&src),
    ]);
    let expected = set(&[
        "notes.txt",
        "edge.bin",
        "keep",
        "keep/inner",
        "keep/inner/.nobackup-not",
        "keep/inner/f.txt",
        "fake",
        "fake/CACHEDIR.TAG",
        "fake/data",
        "untagged",
        "untagged/MARK",
        "untagged/y",
    ]);
    assert_eq!(listed_below(&snap, id(&created), &src), expected);
    // Counted, not silently dropped: big.bin is larger than 2 KiB, edge.bin is exactly 2 KiB.
    assert_eq!(summary(&created, "files_too_large"), 1);
    assert_restores(&snap, id(&created), &src, &expected);

    // A directory named as a source path is backed up even with a marker
    // (as --exclude never removes a source path); the size limit holds for
    // files named explicitly too.
    let project = src.join("project");
    let created = snap.create(&[
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "2K",
        s(&project),
        s(&src.join("big.bin")),
        s(&src.join("notes.txt")),
    ]);
    let listed = snap.ls_paths(id(&created));
    assert!(listed.contains(s(&project.join("src.rs"))), "{listed:?}");
    assert!(listed.contains(s(&src.join("notes.txt"))), "{listed:?}");
    assert!(!listed.contains(s(&src.join("big.bin"))), "{listed:?}");
    assert_eq!(summary(&created, "files_too_large"), 1);

    // The text summary says so.
    let out = snap.ok(&["create", "--force", "--exclude-larger-than", "2K", s(&src)]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("left out: 1 file larger than --exclude-larger-than"),
        "{}",
        describe(&out)
    );

    // Bad values are usage errors and write nothing.
    let before = snap.snapshots().len();
    for bad in [
        &["--exclude-larger-than", "10X"][..],
        &["--exclude-if-present", "a/b"][..],
    ] {
        let mut args = vec!["create"];
        args.extend_from_slice(bad);
        args.push(s(&src));
        snap.run_code(&args, 2);
    }
    assert_eq!(snap.snapshots().len(), before);
}

#[test]
fn files_from_lists_combine_with_the_paths_given() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write(
        &src,
        &[
            ("a.txt", b"a"),
            ("b/c.txt", b"c"),
            (" spaced ", b"spaced"),
            ("new\nline", b"newline"),
            ("d.txt", b"d"),
            ("e.txt", b"e"),
            ("unlisted.txt", b"no"),
        ],
    );
    let list = snap.scratch().join("list");
    // Comments, blank lines and surrounding spaces go; a relative path is
    // taken from the working directory, as on the command line.
    fs::write(
        &list,
        format!(
            "# what to keep\n\n  {}  \n{}/b\n",
            src.join("a.txt").display(),
            src.display()
        ),
    )
    .unwrap();
    let verbatim = snap.scratch().join("verbatim");
    fs::write(&verbatim, format!("{}\n\n", src.join(" spaced ").display())).unwrap();
    let raw = snap.scratch().join("raw");
    fs::write(&raw, format!("{}\0", src.join("new\nline").display())).unwrap();
    let out = snap
        .command()
        .current_dir(&src)
        .args([
            "create",
            "--json",
            "--files-from",
            s(&list),
            "--files-from-verbatim",
            s(&verbatim),
        ])
        .args(["--files-from-raw", s(&raw), "d.txt"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let created = parse_json(&out);
    let expected = set(&["a.txt", "b", "b/c.txt", " spaced ", "new\nline", "d.txt"]);
    assert_eq!(listed_below(&snap, id(&created), &src), expected);
    assert_restores(&snap, id(&created), &src, &expected);

    // `-`: the list comes from standard input.
    let out = snap.run_with_stdin(
        &["create", "--json", "--files-from", "-"],
        format!("{}\n", src.join("e.txt").display()).into_bytes(),
    );
    assert_code(&out, 0);
    let created = parse_json(&out);
    assert_eq!(listed_below(&snap, id(&created), &src), set(&["e.txt"]));

    // A list naming nothing, or one that cannot be read, is a usage error.
    let empty = snap.scratch().join("empty");
    fs::write(&empty, "# nothing\n\n").unwrap();
    snap.run_code(&["create", "--files-from", s(&empty)], 2);
    let out = snap.run_code(&["create", "--files-from", s(&snap.scratch().join("missing"))], 2);
    assert!(stderr(&out).contains("missing"), "{}", describe(&out));
    // Two lists cannot both be standard input.
    snap.run_code(&["create", "--files-from", "-", "--files-from-raw", "-"], 2);
}

#[test]
fn snapignore_files_apply_to_their_directory_with_negation() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write(
        &src,
        &[
            (".snapignore", b"# top\n*.log\nbuild/\n"),
            ("app.log", b"log"),
            ("main.rs", b"main"),
            ("build/out.o", b"obj"),
            // A nested file adds patterns for its directory and re-includes
            // what the outer one left out.
            ("sub/.snapignore", b"!keep.log\n/local.txt\n"),
            ("sub/keep.log", b"kept"),
            ("sub/other.log", b"gone"),
            ("sub/local.txt", b"anchored to sub"),
            ("sub/deeper/local.txt", b"not anchored here"),
            ("sub/deeper/x.log", b"gone too"),
            ("other/local.txt", b"not under sub"),
        ],
    );
    let created = snap.create(&[s(&src)]);
    let expected = set(&[
        ".snapignore",
        "main.rs",
        "sub",
        "sub/.snapignore",
        "sub/keep.log",
        "sub/deeper",
        "sub/deeper/local.txt",
        "other",
        "other/local.txt",
    ]);
    assert_eq!(listed_below(&snap, id(&created), &src), expected);
    assert_restores(&snap, id(&created), &src, &expected);

    // --exclude wins over a `!` in a .snapignore.
    let created = snap.create(&["--force", "--exclude", "keep.log", s(&src)]);
    let mut without = expected.clone();
    without.remove("sub/keep.log");
    assert_eq!(listed_below(&snap, id(&created), &src), without);

    // --no-snapignore: everything.
    let created = snap.create(&["--force", "--no-snapignore", s(&src)]);
    assert_eq!(listed_below(&snap, id(&created), &src), rel_paths(&src));
}

/// Below the depth where the walk stops recursing (`archive_deep`), the
/// `.snapignore` files, markers and the size limit apply just the same.
#[test]
fn selection_holds_below_the_recursive_depth() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    let mut deep = src.clone();
    let mut rel = String::new();
    for i in 0..40 {
        deep.push(format!("d{i}"));
        rel.push_str(&format!("{}d{i}", if i == 0 { "" } else { "/" }));
        if i == 30 {
            fs::create_dir_all(&deep).unwrap();
            fs::write(deep.join(".snapignore"), "!special.log\n").unwrap();
        }
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(src.join(".snapignore"), "*.log\n").unwrap();
    for name in ["keep.txt", "drop.log", "special.log"] {
        fs::write(deep.join(name), name).unwrap();
    }
    fs::write(deep.join("large.bin"), vec![0u8; 5000]).unwrap();
    fs::create_dir_all(deep.join("marked")).unwrap();
    fs::write(deep.join("marked/.nobackup"), "").unwrap();
    fs::write(deep.join("marked/f"), "f").unwrap();
    let created = snap.create(&[
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "4K",
        s(&src),
    ]);
    assert_eq!(summary(&created, "files_too_large"), 1);
    let listed = listed_below(&snap, id(&created), &src);
    let under: BTreeSet<&str> = listed
        .iter()
        .filter_map(|p| p.strip_prefix(&format!("{rel}/")))
        .collect();
    assert_eq!(under, ["keep.txt", "special.log"].into_iter().collect());
    let mut expected = rel_paths(&src);
    for gone in ["drop.log", "large.bin", "marked", "marked/.nobackup", "marked/f"] {
        assert!(expected.remove(&format!("{rel}/{gone}")), "{gone}");
    }
    assert_eq!(listed, expected);
    assert_restores(&snap, id(&created), &src, &expected);
}

/// Every file in the repository directory, with its size and content hash.
fn repository_files(repo: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    walk(repo)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(rel, _)| {
            let hash = blake3::hash(&fs::read(repo.join(&rel)).unwrap());
            (rel, hash)
        })
        .collect()
}

const PREDICTED: [&str; 8] = [
    "files_new",
    "files_changed",
    "files_unmodified",
    "dirs",
    "bytes_read",
    "bytes_total",
    "blobs_added",
    "bytes_added_raw",
];

#[test]
fn dry_run_writes_nothing_and_predicts_the_run_that_follows() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    write_random_file(&src.join("same.bin"), 300_000, 1);
    write_random_file(&src.join("dir/changed.bin"), 200_000, 2);
    write(&src, &[("small.txt", b"small")]);
    let first = snap.create(&[s(&src)]);

    // Changes: one file rewritten, one new, one duplicate of stored data.
    write_random_file(&src.join("dir/changed.bin"), 200_000, 3);
    write_random_file(&src.join("new.bin"), 100_000, 4);
    fs::copy(src.join("same.bin"), src.join("copy.bin")).unwrap();

    let before = repository_files(&snap.repo);
    let dry = snap.create(&["--dry-run", s(&src)]);
    assert_eq!(
        repository_files(&snap.repo),
        before,
        "a dry run wrote to the repository"
    );
    assert_eq!(dry["dry_run"], true);
    assert!(dry.get("changes").is_none(), "changes are listed only with -v: {dry}");
    assert_eq!(snap.snapshots().len(), 1);

    // -v on a dry run: the new and modified files, on stdout.
    let out = snap.ok(&["create", "-n", "-v", s(&src)]);
    let text = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("+ ") || l.starts_with("M "))
        .collect();
    let want = [
        format!("+ {}", src.join("copy.bin").display()),
        format!("M {}", src.join("dir/changed.bin").display()),
        format!("+ {}", src.join("new.bin").display()),
    ];
    assert_eq!(listed, want, "{}", describe(&out));
    assert!(text.contains("dry run: nothing was written"), "{text}");
    assert_eq!(
        repository_files(&snap.repo),
        before,
        "a dry run wrote to the repository"
    );

    // The real run does what the dry run said.
    let real = snap.create(&["-v", s(&src)]);
    for field in PREDICTED {
        assert_eq!(summary(&dry, field), summary(&real, field), "{field}: {dry} vs {real}");
    }
    assert_eq!(summary(&real, "files_new"), 2);
    assert_eq!(summary(&real, "files_changed"), 1);
    assert_eq!(summary(&real, "files_unmodified"), 2);
    assert!(summary(&real, "blobs_added") > 0);
    // The estimate of stored bytes is the blobs' sealed size: the packs hold those and headers.
    assert!(summary(&dry, "bytes_added_stored") <= summary(&real, "bytes_added_stored"));
    assert!(real.get("dry_run").is_none(), "{real}");
    let changes: Vec<(String, String)> = real["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (s(&src.join("copy.bin")).to_string(), "new".to_string()),
            (s(&src.join("dir/changed.bin")).to_string(), "modified".to_string()),
            (s(&src.join("new.bin")).to_string(), "new".to_string()),
        ]
    );
    assert_eq!(real["parent"], first["id"]);
    assert_restores(&snap, id(&real), &src, &rel_paths(&src));

    // Nothing changed since: a dry run reads nothing (only trees above the
    // source, whose directories the restore above changed, may be new).
    let again = snap.create(&["--dry-run", s(&src)]);
    assert_eq!(summary(&again, "bytes_read"), 0, "{again}");
    assert_eq!(summary(&again, "files_unmodified"), 5, "{again}");
}

#[test]
fn dry_run_on_a_missing_repository_creates_nothing() {
    let snap = Snap::new();
    let src = snap.scratch().join("src");
    write(&src, &[("a", b"a")]);
    snap.run_code(&["create", "--dry-run", s(&src)], 10);
    assert!(!snap.repo.exists());
}

#[test]
fn description_is_stored_and_tag_rewrites_the_snapshot() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write(&src, &[("a.txt", b"a"), ("b/c.txt", b"c")]);
    let created = snap.create(&["--tag", "daily", "--description", "before the upgrade", s(&src)]);
    assert_eq!(created["description"], "before the upgrade");
    let old = id(&created).to_string();
    let listed = snap.snapshots();
    assert_eq!(listed[0]["description"], "before the upgrade");
    assert_eq!(listed[0]["original"], Value::Null);
    let table = snap.ok(&["snapshots"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("    before the upgrade"),
        "{}",
        describe(&table)
    );
    // A snapshot without one has `null`.
    let plain = snap.create(&["--force", s(&src)]);
    assert_eq!(plain["description"], Value::Null);

    // --add: a new object with a new id; the old one is gone.
    let out = snap.ok(&["tag", "--json", &old[..8], "--add", "keep", "--add", "daily"]);
    let result = parse_json(&out);
    let new = result[0]["new_id"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(result[0]["tags"], serde_json::json!(["daily", "keep"]));
    assert!(!snap.repo.join("snapshots").join(&old).exists());
    let by_id = |id: &str| -> Value {
        snap.snapshots()
            .into_iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no snapshot {id}"))
    };
    let tagged = by_id(&new);
    assert_eq!(tagged["tags"], serde_json::json!(["daily", "keep"]));
    assert_eq!(tagged["original"], old.as_str());
    // Everything else is the snapshot it was.
    for field in ["time", "tree", "paths", "host", "summary", "description"] {
        assert_eq!(tagged[field], created[field], "{field}");
    }

    // --remove, then --set; `original` stays the first id.
    let result = parse_json(&snap.ok(&["tag", "--json", &new, "--remove", "daily"]));
    let newer = result[0]["new_id"].as_str().unwrap().to_string();
    assert_eq!(by_id(&newer)["tags"], serde_json::json!(["keep"]));
    let result = parse_json(&snap.ok(&["tag", "--json", &newer, "--set", "a", "--set", "b"]));
    let newest = result[0]["new_id"].as_str().unwrap().to_string();
    let last = by_id(&newest);
    assert_eq!(last["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(last["original"], old.as_str());
    assert_eq!(snap.snapshots().len(), 2);

    // Unchanged tags: nothing rewritten.
    let result = parse_json(&snap.ok(&["tag", "--json", &newest, "--add", "a"]));
    assert_eq!(result[0]["new_id"], Value::Null);
    assert!(snap.repo.join("snapshots").join(&newest).exists());

    // The rewritten snapshot restores as the original did.
    let target = snap.scratch().join("target");
    assert_code(&snap.restore(&newest, &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());

    // The checkpoint tag is not the user's to give; nothing to change is a usage error.
    snap.run_code(&["tag", &newest, "--add", "checkpoint"], 2);
    snap.run_code(&["tag", &newest], 2);
    assert!(snap.repo.join("snapshots").join(&newest).exists());
}

/// `snap tag` killed between writing the new snapshot and deleting the old
/// one leaves both, never neither; the next `tag` still works.
#[test]
fn an_interrupted_tag_leaves_both_snapshots() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write(&src, &[("a.txt", b"a")]);
    let created = snap.create(&[s(&src)]);
    let old = id(&created).to_string();
    let out = snap
        .command()
        .args(["tag", &old, "--add", "x"])
        .env("SNAP_FAILPOINT", "retag-written")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let listed = snap.snapshots();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let new = listed.iter().find(|s| s["id"] != old.as_str()).unwrap();
    assert_eq!(new["original"], old.as_str());
    assert_eq!(new["tags"], serde_json::json!(["x"]));
    assert_eq!(new["tree"], created["tree"]);
    // The killed process's lock is stale (its process is gone): tagging goes on.
    let result = parse_json(&snap.ok(&["tag", "--json", &old, "--add", "x"]));
    assert_eq!(result[0]["tags"], serde_json::json!(["x"]));
    assert!(!snap.repo.join("snapshots").join(&old).exists());
}

/// Two `snap tag` commands given the same id at once both apply: the one
/// that takes the lock second finds the snapshot the first rewrote, by its
/// `original` (before, it failed with "no snapshot matches").
#[test]
fn concurrent_tags_of_one_snapshot_both_apply() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    write(&src, &[("a.txt", b"a")]);
    let created = snap.create(&[s(&src)]);
    let old = id(&created).to_string();
    let children: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|tag| {
            snap.command()
                .args(["--retry-lock", "60s", "tag", &old, "--add", tag])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_code(&out, 0);
    }
    let listed = snap.snapshots();
    assert_eq!(listed.len(), 1, "one snapshot, rewritten three times: {listed:?}");
    let mut tags: Vec<&str> = listed[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        ["x", "y", "z"],
        "every tag applied, in the order the locks were taken"
    );
    assert_eq!(listed[0]["original"], Value::String(old));
}
