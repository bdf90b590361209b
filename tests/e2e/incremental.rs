//! Second backups: unchanged files are not read again, and a small change
//! stores about one chunk.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::util::*;

/// Trees that can change between two backups of an unchanged source: those
/// of the directories above `src` (`/`, `/tmp`, the temporary directory),
/// whose mtimes move as other tests create files; never `src`'s own.
fn ancestor_trees(src: &Path) -> u64 {
    src.ancestors().count() as u64 - 1
}

#[test]
fn unchanged_second_backup_reads_and_stores_nothing() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src, false);
    let files = count_files(&src);

    let first = snap.create(&[s(&src)]);
    assert_eq!(summary(&first, "files_new"), files, "{first}");
    assert!(summary(&first, "bytes_read") > 2 * MIB, "{first}");
    let data_before = size_under(&snap.repo.join("data"));

    let second = snap.create(&[s(&src)]);
    let data_after = size_under(&snap.repo.join("data"));
    assert_eq!(second["parent"], first["id"], "the first snapshot is the parent");
    assert_eq!(summary(&second, "files_unmodified"), files, "{second}");
    assert_eq!(summary(&second, "files_new"), 0, "{second}");
    assert_eq!(summary(&second, "files_changed"), 0, "{second}");
    assert_eq!(summary(&second, "bytes_read"), 0, "{second}");
    assert_eq!(
        summary(&second, "bytes_total"),
        summary(&first, "bytes_total"),
        "{second}"
    );
    assert!(summary(&second, "blobs_added") <= ancestor_trees(&src), "{second}");
    assert!(summary(&second, "bytes_added_raw") < 64 * 1024, "{second}");
    assert!(
        data_after - data_before < 64 * 1024,
        "data/ grew by {} bytes (from {data_before})",
        data_after - data_before
    );
    make_removable(work.path());
}

/// With the default chunk sizes (1 MiB average), flipping one byte in the
/// middle of a 100 MiB file stores about one new chunk, not the file.
#[test]
fn one_byte_change_in_a_large_file_adds_about_one_chunk() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = src.join("big.img");
    write_random_file(&big, 100 * MIB, 42);

    let first = snap.create(&[s(&src)]);
    let chunks = summary(&first, "blobs_added");
    assert!(
        chunks > 40,
        "100 MiB in 1 MiB-average chunks gave only {chunks} blobs: {first}"
    );

    let file = fs::OpenOptions::new().read(true).write(true).open(&big).unwrap();
    let offset = 50 * MIB + 12_345;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[!byte[0]], offset).unwrap();
    drop(file);

    let second = snap.create(&[s(&src)]);
    assert_eq!(summary(&second, "files_changed"), 1, "{second}");
    assert_eq!(summary(&second, "bytes_read"), 100 * MIB, "{second}");
    // At most 3 data blobs, plus the trees of src and its ancestors.
    assert!(
        summary(&second, "blobs_added") <= 3 + 1 + ancestor_trees(&src),
        "one changed byte stored {} blobs: {second}",
        summary(&second, "blobs_added")
    );
    assert!(
        summary(&second, "bytes_added_raw") < 20 * MIB,
        "one changed byte stored {} bytes: {second}",
        summary(&second, "bytes_added_raw")
    );

    // And the new snapshot has the new byte.
    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert!(same_content(&big, &restored(&target, &big)), "restored file differs");
}

/// A file rewritten in place with the same size and its old mtime put back
/// (as `rsync -t` or a careless tool might) is still read again: its ctime
/// changed.
#[test]
fn rewritten_file_with_the_same_size_and_mtime_is_read_again() {
    use std::os::unix::fs::MetadataExt;
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let file = src.join("config.ini");
    fs::write(&file, b"value = 1\n").unwrap();
    fs::write(src.join("other"), b"unchanged\n").unwrap();
    set_tree_times(&src);
    snap.create(&[s(&src)]);

    let before = fs::metadata(&file).unwrap();
    fs::write(&file, b"value = 2\n").unwrap();
    set_mtime(&file, before.mtime(), before.mtime_nsec() as u32);

    let second = snap.create(&[s(&src)]);
    assert_eq!(summary(&second, "files_changed"), 1, "{second}");
    assert_eq!(summary(&second, "files_unmodified"), 1, "{second}");
    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_eq!(fs::read(restored(&target, &file)).unwrap(), b"value = 2\n");
}

/// A second backup takes the extended attributes of an untouched entry from
/// the parent snapshot instead of reading them; changing one (which changes
/// ctime) is still seen, on a file and on a directory.
#[test]
fn changed_extended_attributes_are_seen_on_unchanged_content() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    if !xattrs_supported(&src) {
        eprintln!("no user xattrs on this file system: nothing to test");
        return;
    }
    let file = src.join("dir/file");
    fs::write(&file, b"same content").unwrap();
    let dir = src.join("dir");
    xattr::set(&file, "user.kept", b"1").unwrap();
    xattr::set(&file, "user.changed", b"old").unwrap();
    xattr::set(&dir, "user.d", b"old").unwrap();
    let untouched = src.join("untouched");
    fs::write(&untouched, b"other content").unwrap();
    xattr::set(&untouched, "user.u", b"kept").unwrap();
    snap.create(&[s(&src)]);

    xattr::set(&file, "user.changed", b"new").unwrap();
    xattr::set(&dir, "user.d", b"new").unwrap();
    let second = snap.create(&[s(&src)]);
    // The changed ctime makes the file count as changed (it is read again).
    assert_eq!(summary(&second, "files_changed"), 1, "{second}");
    assert_eq!(summary(&second, "files_unmodified"), 1, "{second}");

    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    let restored = restored(&target, &src);
    assert_eq!(
        xattr::get(restored.join("dir/file"), "user.changed").unwrap().unwrap(),
        b"new"
    );
    assert_eq!(
        xattr::get(restored.join("dir/file"), "user.kept").unwrap().unwrap(),
        b"1"
    );
    assert_eq!(xattr::get(restored.join("dir"), "user.d").unwrap().unwrap(), b"new");
    // Taken from the parent snapshot, not read: still there.
    assert_eq!(
        xattr::get(restored.join("untouched"), "user.u").unwrap().unwrap(),
        b"kept"
    );
}
