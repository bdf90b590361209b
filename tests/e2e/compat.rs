//! Backward compatibility: repositories of format version 1, checked in under
//! `tests/fixtures/v1/` (made by `tests/fixtures/make-v1.sh`), must open,
//! list, verify and restore with this build, byte for byte and with their
//! metadata. A change to the format that breaks them fails here (see
//! docs/format.md §15; redb's `tests/backward_compatibility.rs` is the model).
//!
//! The expected content below is a description of the source trees the
//! script built (sizes, BLAKE3 of the bytes, modes, times), not output of
//! snap: it was computed from the kept source trees (`KEEP_SOURCE=...` and
//! the ignored test `v1_expected_table_of_kept_source`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::util::*;

/// Where the script put the source tree (snapshots record absolute paths).
const SOURCE: &str = "/tmp/snap-fixture-v1/src";
const T1: i64 = 1_700_000_000;
const T2: i64 = 1_710_000_000;

/// The ids of the three snapshots of each fixture, oldest first: the first
/// backup of the tree, the second (changed) backup, and a `--stdin` backup.
const ENCRYPTED_SNAPSHOTS: [&str; 3] = ["398dccdf", "8ba540d9", "484b2961"];
const UNENCRYPTED_SNAPSHOTS: [&str; 3] = ["b920eb6a", "edc14801", "7f5d1e2a"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Size and BLAKE3 of the content.
    File(u64, &'static str),
    Dir,
    Symlink(&'static str),
    Fifo,
}

/// One entry of a source tree: path below [`SOURCE`], kind, permission
/// bits, mtime in seconds (all times the script set are whole seconds).
type Entry = (&'static str, Kind, u32, i64);

const HELLO: Kind = Kind::File(15, "100367b0e42404e05d6a7cfe527b9db44d0b2f8445bac064f69e591098feccdf");
const DEEP: Kind = Kind::File(5, "53ee0df288d4f5a6e3ffca5d41ecb6eaf0d3d50cf6441c362a7d0f3bf37728a0");
const PRIVATE: Kind = Kind::File(8, "8e768bba1a8b624b1a82b11f3421d3f059df358841a8cddd6ded21ae6e226d22");
const SHARED: Kind = Kind::File(20, "61ebdd19d35bfb97d40a34a034f17933fcbef6d5aadc1947a82e14cb5745ec5d");
const EMPTY: Kind = Kind::File(0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");

/// The first snapshot's tree.
const FIRST: &[Entry] = &[
    ("", Kind::Dir, 0o755, T1),
    ("dir", Kind::Dir, 0o750, T1),
    ("dir/dangling", Kind::Symlink("../nowhere"), 0o777, T1),
    ("dir/hardlink-b", SHARED, 0o644, T1),
    ("dir/nested", Kind::Dir, 0o755, T1),
    ("dir/nested/deep.txt", DEEP, 0o644, T1),
    ("dir/private.txt", PRIVATE, 0o600, T1),
    ("empty", EMPTY, 0o644, T1),
    ("fifo", Kind::Fifo, 0o644, T1),
    ("hardlink-a", SHARED, 0o644, T1),
    ("hello.txt", HELLO, 0o644, T1),
    ("link", Kind::Symlink("hello.txt"), 0o777, T1),
    (
        "random.bin",
        Kind::File(
            100_000,
            "f534a77c1a0fb308052fd46e5ec62f72892cae7ad9b9332aca39900860bd0092",
        ),
        0o644,
        T1,
    ),
    (
        "text.txt",
        Kind::File(
            34_200,
            "4f27c3da83a5cc64656efa743ee8bbdc62b1984a0e15e1ab8fe957205a3bd4dc",
        ),
        0o644,
        T1,
    ),
];

/// The second: `text.txt` changed, `dir/new.txt` added, `random.bin` removed.
const SECOND: &[Entry] = &[
    ("", Kind::Dir, 0o755, T2),
    ("dir", Kind::Dir, 0o750, T2),
    ("dir/dangling", Kind::Symlink("../nowhere"), 0o777, T1),
    ("dir/hardlink-b", SHARED, 0o644, T1),
    ("dir/nested", Kind::Dir, 0o755, T1),
    ("dir/nested/deep.txt", DEEP, 0o644, T1),
    (
        "dir/new.txt",
        Kind::File(27, "222d64c04fcc6e92ec60277b2071d8f97aa7d501a874ec6fcb7be0bf49f3d867"),
        0o644,
        T2,
    ),
    ("dir/private.txt", PRIVATE, 0o600, T1),
    ("empty", EMPTY, 0o644, T1),
    ("fifo", Kind::Fifo, 0o644, T1),
    ("hardlink-a", SHARED, 0o644, T1),
    ("hello.txt", HELLO, 0o644, T1),
    ("link", Kind::Symlink("hello.txt"), 0o777, T1),
    (
        "text.txt",
        Kind::File(
            39_200,
            "6a141e9c1fe2b9f2869295f969bb401251ad8f5756adeb5404fb80353b81cac2",
        ),
        0o644,
        T2,
    ),
];

/// The `--stdin --stdin-filename dump.sql` snapshot's one file.
const DUMP: Kind = Kind::File(
    2_800,
    "8863703e762f5cf630e1218102de236665906fb6c3b4efc6dfe4a6055982d37d",
);

/// The extended attribute the script set on `hello.txt`.
const XATTR: (&str, &[u8]) = ("user.snap.comment", b"fixture");

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// A copy of the fixture `name` in a fresh temporary directory: commands
/// write locks and the checked-in copy must never change. git keeps no empty
/// directories, so those `init` made (§4 of docs/format.md) are recreated.
fn open_fixture(name: &str) -> Snap {
    let mut snap = Snap::new();
    copy_tree(&fixture_dir().join(name), &snap.repo);
    for dir in ["keys", "index", "snapshots", "locks"] {
        fs::create_dir_all(snap.repo.join(dir)).unwrap();
    }
    for byte in 0..=255u8 {
        fs::create_dir_all(snap.repo.join("data").join(format!("{byte:02x}"))).unwrap();
    }
    snap.password = match name {
        "encrypted" => {
            let text = fs::read_to_string(fixture_dir().join("encrypted.password")).unwrap();
            Some(text.lines().next().unwrap().to_string())
        }
        _ => None,
    };
    snap
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn hash_file(path: &Path) -> String {
    blake3::hash(&fs::read(path).unwrap()).to_hex().to_string()
}

fn mtime_secs(value: &Value) -> i64 {
    let text = value["mtime"].as_str().expect("mtime is a string");
    let time: jiff::Timestamp = text.parse().unwrap_or_else(|e| panic!("mtime {text}: {e}"));
    time.as_second()
}

/// Checks `ls --json` of a snapshot of the source tree against `expected`.
fn check_listing(snap: &Snap, snapshot: &str, expected: &[Entry]) {
    let listed: BTreeMap<String, Value> = snap
        .ls(snapshot)
        .into_iter()
        .filter_map(|e| {
            let path = e["path"].as_str().unwrap().to_string();
            let rel = path.strip_prefix(SOURCE)?.trim_start_matches('/').to_string();
            Some((rel, e))
        })
        .collect();
    let want: Vec<&str> = expected.iter().map(|e| e.0).collect();
    let got: Vec<&str> = listed.keys().map(String::as_str).collect();
    assert_eq!(got, want, "paths listed in {snapshot}");
    for &(rel, kind, mode, mtime) in expected {
        let e = &listed[rel];
        let what = format!("{snapshot}:{rel} {e}");
        assert_eq!(e["mode"].as_u64(), Some(u64::from(mode)), "mode of {what}");
        assert_eq!(mtime_secs(e), mtime, "mtime of {what}");
        match kind {
            Kind::File(size, _) => {
                assert_eq!(e["type"], "file", "{what}");
                assert_eq!(e["size"].as_u64(), Some(size), "size of {what}");
            }
            Kind::Dir => assert_eq!(e["type"], "dir", "{what}"),
            Kind::Symlink(target) => {
                assert_eq!(e["type"], "symlink", "{what}");
                assert_eq!(e["link_target"], target, "{what}");
            }
            Kind::Fifo => assert_eq!(e["type"], "fifo", "{what}"),
        }
    }
}

/// Checks a restored entry's type, content and metadata.
fn check_restored(path: &Path, kind: Kind, mode: u32, mtime: i64) {
    let what = path.display();
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{what} was not restored: {e}"));
    let file_type = meta.file_type();
    match kind {
        Kind::File(size, hash) => {
            assert!(file_type.is_file(), "{what} is not a file");
            assert_eq!(meta.len(), size, "size of {what}");
            assert_eq!(hash_file(path), hash, "content of {what}");
        }
        Kind::Dir => assert!(file_type.is_dir(), "{what} is not a directory"),
        Kind::Symlink(target) => {
            assert!(file_type.is_symlink(), "{what} is not a symlink");
            assert_eq!(fs::read_link(path).unwrap(), Path::new(target), "target of {what}");
        }
        Kind::Fifo => assert!(file_type.is_fifo(), "{what} is not a fifo"),
    }
    if !file_type.is_symlink() {
        assert_eq!(meta.mode() & 0o7777, mode, "mode of {what}");
    }
    assert_eq!(meta.mtime(), mtime, "mtime of {what}");
}

fn check_restored_tree(root: &Path, expected: &[Entry]) {
    for &(rel, kind, mode, mtime) in expected {
        check_restored(&root.join(rel), kind, mode, mtime);
    }
    let a = fs::metadata(root.join("hardlink-a")).unwrap();
    let b = fs::metadata(root.join("dir/hardlink-b")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hard link pair was not restored as one file");
    if xattrs_supported(root) {
        let value = xattr::get(root.join("hello.txt"), XATTR.0).unwrap();
        assert_eq!(value.as_deref(), Some(XATTR.1), "xattr of hello.txt");
    }
}

/// Opens, lists, verifies and restores one fixture.
fn check_fixture(name: &str, ids: [&str; 3]) {
    let snap = open_fixture(name);

    let snapshots = snap.snapshots();
    let listed: Vec<&str> = snapshots.iter().map(|s| s["short_id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids, "snapshots of the {name} fixture");
    for (s, tag) in snapshots.iter().zip(["first", "second", "dump"]) {
        assert_eq!(s["host"], "fixture");
        assert_eq!(s["tags"], serde_json::json!([tag]));
    }
    assert_eq!(snapshots[0]["paths"], serde_json::json!([SOURCE]));
    assert_eq!(snapshots[1]["parent"], snapshots[0]["id"]);
    assert_eq!(snapshots[2]["paths"], serde_json::json!(["/dump.sql"]));

    check_listing(&snap, ids[0], FIRST);
    check_listing(&snap, ids[1], SECOND);

    snap.ok(&["verify", "--read-data"]);

    for (id, expected) in [(ids[0], FIRST), (ids[1], SECOND)] {
        let target = snap.scratch().join(format!("restore-{id}"));
        let out = snap.restore(id, &target, &[]);
        assert_code(&out, 0);
        check_restored_tree(&restored(&target, Path::new(SOURCE)), expected);
    }
    let target = snap.scratch().join("restore-dump");
    assert_code(&snap.restore(ids[2], &target, &[]), 0);
    let Kind::File(size, hash) = DUMP else { unreachable!() };
    let dump = target.join("dump.sql");
    assert_eq!(fs::metadata(&dump).unwrap().len(), size);
    assert_eq!(hash_file(&dump), hash, "content of dump.sql");
}

#[test]
fn v1_encrypted_fixture_opens_lists_verifies_and_restores() {
    check_fixture("encrypted", ENCRYPTED_SNAPSHOTS);
}

#[test]
fn v1_unencrypted_fixture_opens_lists_verifies_and_restores() {
    check_fixture("unencrypted", UNENCRYPTED_SNAPSHOTS);
}

#[test]
fn v1_fixture_is_small_and_of_version_1() {
    let mut total = 0;
    let mut stack = vec![fixture_dir()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    assert!(total < 1 << 20, "the v1 fixture has {total} bytes");
    for name in ["encrypted", "unencrypted"] {
        let config: Value =
            serde_json::from_slice(&fs::read(fixture_dir().join(name).join("config")).unwrap()).unwrap();
        assert_eq!(config["version"], 1, "{name}/config");
    }
}

/// Prints the expected table's hashes for source trees kept by
/// `KEEP_SOURCE=DIR tests/fixtures/make-v1.sh` (DIR/first, DIR/second).
#[test]
#[ignore]
fn v1_expected_table_of_kept_source() {
    let Ok(dir) = std::env::var("KEEP_SOURCE") else {
        eprintln!("note: set KEEP_SOURCE to the directory make-v1.sh kept the sources in");
        return;
    };
    let dump = Path::new(&dir).join("dump.sql");
    println!(
        "dump.sql: File({}, \"{}\")",
        fs::metadata(&dump).unwrap().len(),
        hash_file(&dump)
    );
    for tree in ["first", "second"] {
        let root = Path::new(&dir).join(tree);
        let mut stack = vec![root.clone()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(&root).unwrap().display().to_string();
            if meta.is_dir() {
                for entry in fs::read_dir(&path).unwrap() {
                    stack.push(entry.unwrap().path());
                }
            }
            let kind = if meta.file_type().is_file() {
                format!("File({}, \"{}\")", meta.len(), hash_file(&path))
            } else {
                format!("{:?}", meta.file_type())
            };
            println!("{tree}: {rel:?} {kind} {:o} {}", meta.mode() & 0o7777, meta.mtime());
        }
    }
}
