//! Encryption: nothing of the plaintext (contents or names) is visible in
//! the repository, and the password is required and checked.

use std::fs;
use std::path::Path;

use super::util::*;

const CONTENT_MARKER: &[u8] = b"PLAINTEXT-CONTENT-MARKER-4f1c9e";
const NAME_MARKER: &str = "PLAINNAME-MARKER-b7d2";

/// A source tree where the markers appear in contents (compressible and
/// not), in file names, in a directory name, in a symlink target and in an
/// xattr value.
fn marked_tree(src: &Path) {
    fs::create_dir_all(src.join(format!("dir-{NAME_MARKER}"))).unwrap();
    let mut text = Vec::new();
    for i in 0..2000 {
        text.extend_from_slice(format!("line {i} ").as_bytes());
        text.extend_from_slice(CONTENT_MARKER);
        text.push(b'\n');
    }
    fs::write(src.join(format!("file-{NAME_MARKER}.txt")), &text).unwrap();
    let mut once = random_bytes(100_000, 5);
    once[50_000..50_000 + CONTENT_MARKER.len()].copy_from_slice(CONTENT_MARKER);
    fs::write(src.join(format!("dir-{NAME_MARKER}/random.bin")), &once).unwrap();
    fs::write(src.join("small"), CONTENT_MARKER).unwrap();
    std::os::unix::fs::symlink(format!("target-{NAME_MARKER}"), src.join("link")).unwrap();
    let _ = xattr::set(src.join("small"), "user.note", CONTENT_MARKER);
}

/// Files under `repo` whose names or contents contain a marker.
fn marker_hits(repo: &Path) -> Vec<String> {
    let mut hits = Vec::new();
    for (rel, meta) in walk(repo) {
        let name = rel.to_string_lossy();
        if name.contains(NAME_MARKER) {
            hits.push(format!("name of {name}"));
        }
        if meta.is_file() {
            let bytes = fs::read(repo.join(&rel)).unwrap();
            for marker in [CONTENT_MARKER, NAME_MARKER.as_bytes(), PASSWORD.as_bytes()] {
                if contains(&bytes, marker) {
                    hits.push(format!("{} in {name}", String::from_utf8_lossy(marker)));
                }
            }
        }
    }
    hits
}

#[test]
fn encrypted_repository_hides_contents_and_names() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    marked_tree(&src);
    // Without compression the plaintext would be in the packs as is.
    snap.create(&["--compression", "off", s(&src)]);
    snap.create(&["--force", s(&src)]);
    assert_eq!(snap.snapshots().len(), 2);
    assert!(files_under(&snap.repo).len() > 5, "the repository is nearly empty");
    let hits = marker_hits(&snap.repo);
    assert!(hits.is_empty(), "plaintext found in the encrypted repository: {hits:?}");

    // The restore gives the markers back, so they were stored.
    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}

/// The control for the test above: the same scan finds the markers in an
/// unencrypted, uncompressed repository, so "not found" means something.
#[test]
fn unencrypted_repository_shows_plaintext_to_the_same_scan() {
    let snap = Snap::init_unencrypted(&["--chunk-sizes", SMALL_CHUNKS, "--compression", "off"]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    marked_tree(&src);
    snap.create(&[s(&src)]);
    let hits = marker_hits(&snap.repo);
    assert!(
        hits.iter().any(|h| h.starts_with("PLAINTEXT-CONTENT")),
        "content marker not found in an unencrypted repository: {hits:?}"
    );
    assert!(
        hits.iter().any(|h| h.starts_with("PLAINNAME")),
        "name marker not found in an unencrypted repository: {hits:?}"
    );
}

#[test]
fn wrong_or_missing_password_is_refused_with_code_12() {
    let mut snap = Snap::init(&[]);
    let work = tempdir();
    fs::write(work.path().join("f"), b"data").unwrap();
    snap.create(&[s(work.path())]);
    let before = contents_under(&snap.repo);

    snap.password = Some("not the password".into());
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["create", s(work.path())],
        vec!["restore", "latest", "--target", s(&work.path().join("t"))],
    ] {
        let out = snap.run_code(&args, 12);
        let err = stderr(&out);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one line expected: {}",
            describe(&out)
        );
        assert!(err.to_lowercase().contains("password"), "{}", describe(&out));
        assert!(!err.contains("not the password"), "the password is echoed: {err}");
    }
    assert!(
        !work.path().join("t").exists(),
        "restore with a wrong password wrote files"
    );

    // No password at all, and standard input is not a terminal.
    snap.password = None;
    let out = snap.run_code(&["snapshots"], 12);
    let err = stderr(&out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {}",
        describe(&out)
    );
    assert!(err.to_lowercase().contains("password"), "{}", describe(&out));

    // An empty password is a password, and a wrong one.
    snap.password = Some(String::new());
    snap.run_code(&["snapshots"], 12);

    // Nothing was written by the refused commands (no locks, no snapshots).
    assert_eq!(
        contents_under(&snap.repo).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );

    // The right password (also from a file) still works.
    snap.password = None;
    let password_file = work.path().join("pw");
    fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let out = snap.ok(&["--password-file", s(&password_file), "snapshots", "--json"]);
    assert_eq!(parse_json(&out).as_array().map(Vec::len), Some(1));
}
