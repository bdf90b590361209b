//! `export`, `dump`, `import` and `catalog export`, checked with other
//! tools: GNU tar extracts the tar export, Python's zipfile and
//! `sha256sum -c` check the zip export, hostile archives made with Python's
//! tarfile and zipfile are refused, and the catalog is queried with Python's
//! sqlite3.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use super::util::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tools a test uses are here; if not, says so (a skip fails
/// under SNAP_TEST_REQUIRE_ALL).
fn tools(names: &[&str]) -> bool {
    let missing: Vec<&str> = names.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    skip_note(format!("note: {} not installed; test skipped", missing.join(", ")));
    false
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3")
}

#[track_caller]
fn python_ok(script: &str, args: &[&str]) -> String {
    let out = python(script, args);
    assert!(out.status.success(), "python3 failed:\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the rich tree's socket, keeping its directory's mtime.
fn remove_socket(src: &Path) {
    let dir = fs::symlink_metadata(src.join("dir")).unwrap();
    fs::remove_file(src.join("dir/socket")).unwrap();
    set_mtime(&src.join("dir"), dir.mtime(), dir.mtime_nsec() as u32);
}

#[test]
fn tar_export_extracted_by_gnu_tar_matches_the_source() {
    if !tools(&["tar", "zstd"]) {
        return;
    }
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src, true);
    snap.create(&[s(&src)]);
    // A socket cannot be in a tar archive: it is reported and left out.
    remove_socket(&src);

    let archive = snap.scratch().join("out.tar");
    let out = snap.run_code(&["export", "latest", "--output", s(&archive), "--path", s(&src)], 3);
    assert!(stderr(&out).contains("dir/socket"), "{}", describe(&out));

    let target = snap.scratch().join("extracted");
    fs::create_dir(&target).unwrap();
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&target)
        .args(["-x", "--xattrs", "--xattrs-include=user.*", "-f"]);
    tar.arg(&archive);
    if is_root() {
        tar.args(["--same-owner", "-p"]);
    }
    let out = tar.output().unwrap();
    assert!(out.status.success(), "GNU tar failed:\n{}", describe(&out));
    let what = Compare {
        mtime: true,
        owner: is_root(),
        xattrs: xattrs_supported(&target),
    };
    assert_same_tree(&src, &target.join("src"), what);

    // tar.zst of the whole snapshot: the same entries under their full paths.
    let zst = snap.scratch().join("out.tar.zst");
    snap.run_code(&["export", "latest", "--output", s(&zst)], 3);
    let whole = snap.scratch().join("whole");
    fs::create_dir(&whole).unwrap();
    let out = Command::new("tar")
        .arg("-C")
        .arg(&whole)
        .args(["--zstd", "-xf"])
        .arg(&zst)
        .output()
        .unwrap();
    assert!(out.status.success(), "GNU tar --zstd failed:\n{}", describe(&out));
    let compare = Compare {
        mtime: true,
        owner: false,
        xattrs: false,
    };
    assert_same_tree(&src, &restored(&whole, &src), compare);
}

/// A tree a zip can hold whole: files, directories, symlinks; names with a
/// newline and a backslash (escaped in the manifest).
fn zip_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/b/c/deep.txt"), b"deep\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    write_random_file(&root.join("big.bin"), 3 * MIB + 17, 7);
    fs::write(root.join("line\nbreak"), b"newline in the name\n").unwrap();
    fs::write(root.join("back\\slash"), b"backslash in the name\n").unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\n").unwrap();
    chmod(&root.join("script.sh"), 0o755);
    std::os::unix::fs::symlink("a/b", root.join("link")).unwrap();
}

#[test]
fn zip_export_passes_python_zipfile_and_its_manifest_passes_sha256sum() {
    if !tools(&["python3", "sha256sum"]) {
        return;
    }
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    zip_tree(&src);
    snap.create(&[s(&src)]);
    let archive = snap.scratch().join("out.zip");
    snap.ok(&["export", "latest", "--output", s(&archive), "--path", s(&src)]);

    let checked = python_ok(
        "import sys, zipfile\n\
         z = zipfile.ZipFile(sys.argv[1])\n\
         bad = z.testzip()\n\
         assert bad is None, bad\n\
         z.extractall(sys.argv[2])\n\
         print(len(z.namelist()))",
        &[s(&archive), s(&snap.scratch().join("x"))],
    );
    assert!(checked.trim().parse::<u32>().unwrap() > 8, "{checked}");
    let extracted = snap.scratch().join("x");
    let out = Command::new("sha256sum")
        .args(["-c", ".snap-manifest.sha256"])
        .current_dir(&extracted)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum -c failed:\n{}", describe(&out));
    // Every regular file is in the manifest, and the extracted bytes are the source's.
    let manifest = fs::read_to_string(extracted.join(".snap-manifest.sha256")).unwrap();
    assert_eq!(manifest.lines().count() as u64, count_files(&src), "{manifest}");
    for rel in [
        "src/a/b/c/deep.txt",
        "src/big.bin",
        "src/line\nbreak",
        "src/back\\slash",
        "src/empty",
    ] {
        let name = rel.strip_prefix("src/").unwrap();
        assert!(same_content(&src.join(name), &extracted.join(rel)), "{rel:?} differs");
    }
    // A damaged manifest line is noticed: the check is real.
    let tampered = manifest.replacen("src/big.bin", "src/script.sh", 1);
    fs::write(extracted.join(".snap-manifest.sha256"), tampered).unwrap();
    let out = Command::new("sha256sum")
        .args(["-c", ".snap-manifest.sha256"])
        .current_dir(&extracted)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong checksum passed:\n{}", describe(&out));

    // Through a pipe (no seeking): `-` writes the same archive to stdout.
    let out = snap.ok(&[
        "export",
        "latest",
        "--output",
        "-",
        "--format",
        "zip",
        "--path",
        s(&src),
    ]);
    let piped = snap.scratch().join("piped.zip");
    fs::write(&piped, &out.stdout).unwrap();
    python_ok(
        "import sys, zipfile\nassert zipfile.ZipFile(sys.argv[1]).testzip() is None",
        &[s(&piped)],
    );
}

/// Hostile and broken archives, made with Python: each is refused with its
/// entry named, exit 1, and no snapshot is written.
#[test]
fn hostile_archives_are_refused_naming_the_entry() {
    if !tools(&["python3"]) {
        return;
    }
    let snap = Snap::init(&[]);
    let dir = snap.scratch().join("archives");
    fs::create_dir(&dir).unwrap();
    python_ok(
        r#"
import io, os, sys, tarfile, zipfile
os.chdir(sys.argv[1])
def tar(name, members):
    with tarfile.open(name, 'w', format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
def f(n, d=b'x'):
    ti = tarfile.TarInfo(n); ti.size = len(d); return (ti, d)
def link(n, target, kind=tarfile.LNKTYPE):
    ti = tarfile.TarInfo(n); ti.type = kind; ti.linkname = target; return (ti, None)
tar('dotdot.tar', [f('fine'), f('sub/../../x')])
tar('absolute.tar', [f('fine'), f('/etc/x')])
tar('duplicate.tar', [f('d/same'), f('other'), f('d/same')])
tar('hardlink-out.tar', [f('fine'), link('evil', '../outside')])
tar('hardlink-missing.tar', [f('fine'), link('dangling', 'not/there')])
tar('below-a-file.tar', [f('plain'), f('plain/inner')])
tar('good.tar', [f('fine', b'a' * 100000), f('second', b'b' * 5000)])
data = open('good.tar', 'rb').read()
open('truncated-data.tar', 'wb').write(data[:len(data) // 3])
# Cut right after the last entry's data: no end-of-archive blocks.
end = data.rfind(b'b' * 5000) + 5120
open('truncated-end.tar', 'wb').write(data[:end])
with zipfile.ZipFile('dotdot.zip', 'w') as z:
    z.writestr('fine', 'x'); z.writestr('../evil', 'x')
with zipfile.ZipFile('absolute.zip', 'w') as z:
    z.writestr('/etc/evil', 'x')
import warnings; warnings.simplefilter('ignore')
with zipfile.ZipFile('duplicate.zip', 'w') as z:
    z.writestr('twice', 'x'); z.writestr('twice', 'y')
zdata = open('dotdot.zip', 'rb').read()
open('truncated.zip', 'wb').write(zdata[:len(zdata) - 30])
"#,
        &[s(&dir)],
    );
    let cases = [
        ("dotdot.tar", "sub/../../x"),
        ("absolute.tar", "/etc/x"),
        ("duplicate.tar", "d/same"),
        ("hardlink-out.tar", "evil"),
        ("hardlink-missing.tar", "dangling"),
        ("below-a-file.tar", "plain/inner"),
        ("truncated-data.tar", "fine"),
        ("truncated-end.tar", "(end of archive)"),
        ("dotdot.zip", "../evil"),
        ("absolute.zip", "/etc/evil"),
        ("duplicate.zip", "twice"),
        ("truncated.zip", "(central directory)"),
    ];
    for (file, entry) in cases {
        let out = snap.run(&["import", s(&dir.join(file))]);
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("'{entry}")),
            "{file}: the entry {entry:?} is not named:\n{err}"
        );
        assert!(err.contains("no snapshot was written"), "{file}:\n{err}");
        assert!(!panicked(&out), "{file}:\n{err}");
        assert!(snap.snapshots().is_empty(), "{file}: a snapshot was written");
    }
    // The good archive of the same set imports.
    snap.ok(&["import", s(&dir.join("good.tar"))]);
    assert_eq!(snap.snapshots().len(), 1);
}

#[test]
fn import_of_gnu_tar_and_zip_archives_restores_identical_trees() {
    if !tools(&["tar", "python3"]) {
        return;
    }
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src, false);
    // GNU tar cannot store sockets either.
    remove_socket(&src);
    let archive = snap.scratch().join("gnu.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["--format=posix", "--xattrs", "--xattrs-include=user.*", "-cf"])
        .arg(&archive)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "GNU tar failed:\n{}", describe(&out));

    let out = snap.ok(&[
        "--json",
        "import",
        s(&archive),
        "--host",
        "old-server",
        "--time",
        "2020-01-02T03:04:05Z",
        "--tag",
        "migrated",
    ]);
    let first = parse_json(&out);
    assert_eq!(first["host"], "old-server");
    assert_eq!(first["tags"][0], "migrated");
    assert!(first["time"].as_str().unwrap().starts_with("2020-01-02T03:04:05"));
    let target = snap.scratch().join("restored");
    assert_code(&snap.restore(&first["id"].as_str().unwrap()[..8], &target, &[]), 0);
    let what = Compare {
        mtime: true,
        owner: is_root(),
        xattrs: xattrs_supported(&target),
    };
    // The archive's root (`.`) is the snapshot's root: the target itself.
    let mut diffs = tree_differences(&src, &target, what);
    // The target directory is restore's own, not the archive's `./`.
    diffs.retain(|d| !d.starts_with("\"\":"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    // Imported again: every blob is already there (dedup through the packer).
    let second = parse_json(&snap.ok(&["--json", "import", s(&archive)]));
    assert_eq!(summary(&second, "blobs_added"), 0, "{second}");

    // A zip made by Python imports with its files' bytes, modes and symlinks.
    let zsrc = snap.scratch().join("zsrc");
    fs::create_dir(&zsrc).unwrap();
    zip_tree(&zsrc);
    let zip = snap.scratch().join("py.zip");
    python_ok(
        r#"
import os, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n); rel = os.path.relpath(p, root)
            if os.path.islink(p):
                info = zipfile.ZipInfo(rel)
                info.external_attr = (0o120777 << 16)
                z.writestr(info, os.readlink(p))
            elif os.path.isdir(p):
                z.write(p, rel)
            else:
                z.write(p, rel)
"#,
        &[s(&zsrc), s(&zip)],
    );
    let imported = parse_json(&snap.ok(&["--json", "import", s(&zip)]));
    let ztarget = snap.scratch().join("zrestored");
    assert_code(&snap.restore(&imported["id"].as_str().unwrap()[..8], &ztarget, &[]), 0);
    let compare = Compare {
        mtime: false,
        owner: false,
        xattrs: false,
    };
    let mut diffs = tree_differences(&zsrc, &ztarget, compare);
    diffs.retain(|d| !d.starts_with("\"\":"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn dump_writes_a_file_or_a_directory_as_an_archive() {
    if !tools(&["tar"]) {
        return;
    }
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    zip_tree(&src);
    snap.create(&[s(&src)]);
    let out = snap.ok(&["dump", "latest", s(&src.join("big.bin"))]);
    assert!(
        out.stdout == fs::read(src.join("big.bin")).unwrap(),
        "dump of a file differs"
    );

    let out = snap.ok(&["dump", "latest", s(&src.join("a")), "--archive", "tar"]);
    let tarfile = snap.scratch().join("a.tar");
    fs::write(&tarfile, &out.stdout).unwrap();
    let x = snap.scratch().join("x");
    fs::create_dir(&x).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&x)
        .arg("-xf")
        .arg(&tarfile)
        .status()
        .unwrap();
    assert!(status.success());
    assert_same_tree(&src.join("a"), &x.join("a"), Compare::all());

    // A directory without --archive is a usage error.
    snap.run_code(&["dump", "latest", s(&src.join("a"))], 2);
}

#[test]
fn catalog_export_is_queryable_with_sqlite() {
    if !tools(&["python3"]) {
        return;
    }
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("report.txt"), b"version one\n").unwrap();
    fs::write(src.join("same.txt"), b"never changes\n").unwrap();
    fs::create_dir(src.join("sub")).unwrap();
    fs::write(src.join("sub/note"), b"note\n").unwrap();
    let first = snap.create(&[s(&src)]);
    fs::write(src.join("report.txt"), b"version two, longer\n").unwrap();
    let second = snap.create(&[s(&src)]);

    let db = snap.scratch().join("catalog.sqlite");
    snap.ok(&["catalog", "export", "--output", s(&db)]);
    let report = format!("{}/report.txt", s(&src));
    let same = format!("{}/same.txt", s(&src));
    let got = python_ok(
        r#"
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
q = lambda sql, *a: db.execute(sql, a).fetchall()
out = {
  'snapshots': sorted(r[0] for r in q('SELECT id FROM snapshots')),
  'report': q('SELECT snapshot, size, content FROM files WHERE path = ? ORDER BY size', sys.argv[2]),
  'same_versions': q('SELECT COUNT(DISTINCT content) FROM files WHERE path = ?', sys.argv[3])[0][0],
  'types': sorted(set(r[0] for r in q('SELECT type FROM files'))),
  'indexes': sorted(r[0] for r in q("SELECT name FROM sqlite_master WHERE type = 'index'")),
  'plan': ' '.join(str(r) for r in q('EXPLAIN QUERY PLAN SELECT * FROM files WHERE path = ?', sys.argv[2])),
  'version': q('PRAGMA user_version')[0][0],
}
print(json.dumps(out))
"#,
        &[s(&db), &report, &same],
    );
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    let mut ids = vec![first["id"].as_str().unwrap(), second["id"].as_str().unwrap()];
    ids.sort();
    assert_eq!(v["snapshots"], serde_json::json!(ids));
    let report = v["report"].as_array().unwrap();
    assert_eq!(report.len(), 2, "{v}");
    assert_eq!(report[0][0], first["id"]);
    assert_eq!(report[0][1], 12);
    assert_eq!(report[1][0], second["id"]);
    assert_eq!(report[1][1], 20);
    assert_ne!(report[0][2], report[1][2], "changed content, same content id");
    assert_eq!(v["same_versions"], 1, "unchanged content, two content ids");
    assert_eq!(v["types"], serde_json::json!(["dir", "file"]));
    assert!(v["plan"].as_str().unwrap().contains("files_path"), "{v}");
    for index in ["files_content", "files_path"] {
        assert!(v["indexes"].as_array().unwrap().iter().any(|i| i == index), "{v}");
    }
    assert_eq!(v["version"], 1);

    // One snapshot asked for: only its rows.
    snap.ok(&[
        "catalog",
        "export",
        "--output",
        s(&db),
        &first["id"].as_str().unwrap()[..8],
    ]);
    let n = python_ok(
        "import sqlite3, sys\nprint(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(DISTINCT snapshot) FROM files').fetchone()[0])",
        &[s(&db)],
    );
    assert_eq!(n.trim(), "1");
    assert_eq!(fs::metadata(&db).unwrap().nlink(), 1);
}

/// A blob that does not match its id stops the export, naming the file, and
/// leaves no archive behind: an export is whole or not written.
#[test]
fn export_checks_content_against_blob_ids() {
    let snap = Snap::init_unencrypted(&["--compression", "off"]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    let marker = b"MARKER-0123456789-this-content-is-stored-in-clear".repeat(100);
    fs::write(src.join("victim.txt"), &marker).unwrap();
    snap.create(&[s(&src)]);
    // Flip one byte of the stored content inside its pack.
    let mut flipped = false;
    for (pack, _) in packs(&snap.repo) {
        let mut bytes = fs::read(&pack).unwrap();
        if let Some(at) = bytes.windows(marker.len().min(64)).position(|w| w == &marker[..64]) {
            bytes[at + 10] ^= 0x20;
            make_removable(&pack);
            fs::write(&pack, &bytes).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "the content was not found in clear in a pack");
    snap.drop_tree_cache();
    for format in ["tar", "zip"] {
        let archive = snap.scratch().join(format!("out.{format}"));
        let out = snap.run(&["export", "latest", "--output", s(&archive)]);
        assert_code(&out, 1);
        assert!(stderr(&out).contains("victim.txt"), "{}", describe(&out));
        assert!(!archive.exists(), "a partial {format} archive was left");
        let leftovers: Vec<_> = fs::read_dir(snap.scratch())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".snap-export-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }
}

/// snap's own tar export imported again (from stdin) restores the same
/// tree, with fifos, devices, hard links, xattrs and nanosecond times; a GNU
/// format archive (long names as GNU extensions) imports too.
#[test]
fn export_then_import_round_trips_and_gnu_format_imports() {
    if !tools(&["tar"]) {
        return;
    }
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src, false);
    let long = "a-name-longer-than-the-hundred-bytes-of-a-ustar-name-field-".repeat(2);
    fs::create_dir_all(src.join(&long).join(&long)).unwrap();
    fs::write(src.join(&long).join(&long).join("file"), b"deep and long\n").unwrap();
    set_tree_times(&src.join(&long));
    let root_meta = fs::symlink_metadata(&src).unwrap();
    snap.create(&[s(&src)]);
    remove_socket(&src);
    set_mtime(&src, root_meta.mtime(), root_meta.mtime_nsec() as u32);

    let out = snap.run_code(&["export", "latest", "--output", "-", "--path", s(&src)], 3);
    let imported = parse_json(&snap.run_with_stdin(&["--json", "import", "-"], out.stdout));
    let id = imported["id"].as_str().expect("an imported snapshot");
    let target = snap.scratch().join("restored");
    assert_code(&snap.restore(&id[..8], &target, &[]), 0);
    let what = Compare {
        mtime: true,
        owner: is_root(),
        xattrs: xattrs_supported(&target),
    };
    assert_same_tree(&src, &target.join("src"), what);

    let gnu = snap.scratch().join("gnu.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["--format=gnu", "-cf"])
        .arg(&gnu)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "GNU tar failed:\n{}", describe(&out));
    let imported = parse_json(&snap.ok(&["--json", "import", s(&gnu)]));
    let gtarget = snap.scratch().join("gnu-restored");
    assert_code(&snap.restore(&imported["id"].as_str().unwrap()[..8], &gtarget, &[]), 0);
    let what = Compare {
        mtime: false,
        owner: is_root(),
        xattrs: false,
    };
    let mut diffs = tree_differences(&src, &gtarget, what);
    diffs.retain(|d| !d.starts_with("\"\":"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// An output that is not a regular file is written through, never renamed
/// over: a FIFO's reader gets the archive, `/dev/full` is an error (exit 1)
/// and stays a device, a directory is refused. Before the fix the archive
/// replaced the FIFO (and, as root, `/dev/full`) and the export said it
/// succeeded.
#[test]
fn export_writes_through_pipes_and_devices_and_refuses_directories() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), random_bytes(100_000, 3)).unwrap();
    snap.create(&[s(&src)]);

    let fifo = snap.scratch().join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    snap.ok(&["export", "latest", "--format", "tar", "--output", s(&fifo)]);
    let archive = reader.join().unwrap();
    assert!(
        archive.len() > 100_000,
        "the reader got the archive: {} bytes",
        archive.len()
    );
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO is still a FIFO"
    );

    let full = Path::new("/dev/full");
    if full.exists() {
        let out = snap.run(&["export", "latest", "--format", "tar", "--output", "/dev/full"]);
        assert_code(&out, 1);
        assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
        assert!(fs::symlink_metadata(full).unwrap().file_type().is_char_device());
    }

    let dir = snap.scratch().join("a-dir");
    fs::create_dir(&dir).unwrap();
    let out = snap.run(&["export", "latest", "--format", "tar", "--output", s(&dir)]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}
