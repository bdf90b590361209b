//! Exclude patterns on `create`, include and exclude patterns on `restore`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::util::*;

/// src/
///   a.txt  a.log  keep.bin
///   docs/  b.txt  c.md  notes.log
///   cache/ big.tmp  d.txt
///   deep/x/y/ e.txt  f.dat
///   nolog/ g.dat
fn filter_tree(src: &Path) {
    for (rel, data) in [
        ("a.txt", "a"),
        ("a.log", "log a"),
        ("keep.bin", "bin"),
        ("docs/b.txt", "b"),
        ("docs/c.md", "c"),
        ("docs/notes.log", "notes"),
        ("cache/big.tmp", "tmp"),
        ("cache/d.txt", "d"),
        ("deep/x/y/e.txt", "e"),
        ("deep/x/y/f.dat", "f"),
        ("nolog/g.dat", "g"),
    ] {
        let path = src.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    set_tree_times(src);
}

/// Relative paths of every entry under `root` (without the root itself).
fn rel_paths(root: &Path) -> BTreeSet<String> {
    walk(root)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `ls` paths below `src`, relative to it.
fn listed_below(snap: &Snap, snapshot: &str, src: &Path) -> BTreeSet<String> {
    let prefix = format!("{}/", src.display());
    snap.ls_paths(snapshot)
        .into_iter()
        .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[test]
fn create_exclude_and_exclude_file_leave_paths_out() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    filter_tree(&src);
    let exclude_file = work.path().join("excludes");
    // A comment, a blank line, a basename pattern and an anchored directory.
    fs::write(&exclude_file, format!("# comment\n\n*.tmp\n{}/deep/x\n", src.display())).unwrap();

    let created = snap.create(&[
        "--exclude",
        "*.log",
        "--exclude",
        "cache/",
        "--exclude-file",
        s(&exclude_file),
        s(&src),
    ]);
    let id = created["id"].as_str().unwrap();
    let listed = listed_below(&snap, id, &src);
    let expected = set(&[
        "a.txt",
        "keep.bin",
        "docs",
        "docs/b.txt",
        "docs/c.md",
        "deep",
        "nolog",
        "nolog/g.dat",
    ]);
    assert_eq!(listed, expected);

    // Only the exclude file: *.tmp and deep/x go, the rest stays.
    let created = snap.create(&["--force", "--exclude-file", s(&exclude_file), s(&src)]);
    let listed = listed_below(&snap, created["id"].as_str().unwrap(), &src);
    let mut expected = rel_paths(&src);
    for gone in [
        "cache/big.tmp",
        "deep/x",
        "deep/x/y",
        "deep/x/y/e.txt",
        "deep/x/y/f.dat",
    ] {
        assert!(expected.remove(gone), "{gone}");
    }
    assert_eq!(listed, expected);

    // What is in the snapshot restores exactly.
    let target = work.path().join("target");
    assert_code(&snap.restore(created["id"].as_str().unwrap(), &target, &[]), 0);
    assert_eq!(rel_paths(&restored(&target, &src)), expected);

    // A missing exclude file is an error, not an empty list.
    let out = snap.run(&["create", "--exclude-file", s(&work.path().join("missing")), s(&src)]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stderr(&out).contains("missing"), "{}", describe(&out));
}

#[test]
fn restore_include_and_exclude_select_entries() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    filter_tree(&src);
    snap.create(&[s(&src)]);
    let restore = |name: &str, args: &[&str]| -> PathBuf {
        let target = work.path().join(name);
        assert_code(&snap.restore("latest", &target, args), 0);
        restored(&target, &src)
    };

    // --include: matching files and the directories leading to them.
    let got = restore("inc", &["--include", "*.txt"]);
    assert_eq!(
        rel_paths(&got),
        set(&[
            "a.txt",
            "docs",
            "docs/b.txt",
            "cache",
            "cache/d.txt",
            "deep",
            "deep/x",
            "deep/x/y",
            "deep/x/y/e.txt",
        ])
    );
    for rel in ["a.txt", "docs/b.txt", "deep/x/y/e.txt"] {
        assert!(same_content(&src.join(rel), &got.join(rel)), "{rel}");
    }

    // --include of a directory brings everything below it.
    let got = restore("incdir", &["--include", &format!("{}/docs", src.display())]);
    assert_eq!(
        rel_paths(&got),
        set(&["docs", "docs/b.txt", "docs/c.md", "docs/notes.log"])
    );
    assert_same_tree(&src.join("docs"), &got.join("docs"), Compare::all());

    // --exclude: everything but the matches.
    let got = restore("exc", &["--exclude", "*.log", "--exclude", "deep/"]);
    let mut expected = rel_paths(&src);
    expected.retain(|p| !p.ends_with(".log") && !p.starts_with("deep"));
    assert_eq!(rel_paths(&got), expected);
    for rel in &expected {
        let (a, b) = (src.join(rel), got.join(rel));
        if a.is_file() {
            assert!(same_content(&a, &b), "{rel}");
        }
    }

    // Both: includes select, excludes win.
    let got = restore(
        "both",
        &["--include", "*.txt", "--include", "*.dat", "--exclude", "cache/"],
    );
    assert_eq!(
        rel_paths(&got),
        set(&[
            "a.txt",
            "docs",
            "docs/b.txt",
            "deep",
            "deep/x",
            "deep/x/y",
            "deep/x/y/e.txt",
            "deep/x/y/f.dat",
            "nolog",
            "nolog/g.dat",
        ])
    );
}
