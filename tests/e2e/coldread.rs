//! The per-file open/stat/read path of a backup, cut to fewer system calls
//! (one stat of the opened file, one read for a small file, nonces drawn in
//! batches): what it captures must not change.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use super::util::*;

/// Sizes around the one-read limit (256 KiB) and the 4 KiB page.
const SIZES: [u64; 9] = [0, 1, 4095, 4096, 4097, 65536, 262_143, 262_144, 262_145];

fn mtime_rfc3339(meta: &fs::Metadata) -> String {
    let ts = jiff::Timestamp::new(meta.mtime(), meta.mtime_nsec() as i32).expect("mtime in range");
    ts.to_string()
}

/// `ls --json` of a backed-up tree matches what `std::fs` says of every
/// entry (mode, owner, mtime, size, symlink target), and a restore gives
/// back the same bytes, extended attributes and hard links.
#[test]
fn metadata_captured_matches_the_filesystem() {
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    for (i, size) in SIZES.iter().enumerate() {
        let path = src.join(format!("d/f{i}"));
        write_random_file(&path, *size, i as u64 + 1);
        chmod(&path, [0o600, 0o644, 0o755, 0o4750, 0o640][i % 5]);
    }
    fs::write(src.join("d/e/small"), b"small file\n").unwrap();
    fs::hard_link(src.join("d/f3"), src.join("d/e/link_to_f3")).unwrap();
    std::os::unix::fs::symlink("../f2", src.join("d/e/sym")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    let xattrs = xattrs_supported(&src);
    if xattrs {
        xattr::set(src.join("d/f1"), "user.one", b"1").unwrap();
        xattr::set(src.join("d/f7"), "user.big", &vec![7u8; 2000]).unwrap();
        xattr::set(src.join("d/e"), "user.dir", b"dir").unwrap();
    } else {
        eprintln!("note: no user xattrs on this filesystem; not checked");
    }
    if is_root() {
        chown(&src.join("d/f2"), 1234, 5678);
        chown(&src.join("d/e/small"), 4321, 0);
    }
    set_tree_times(&src);

    let created = snap.create(&[s(&src)]);
    assert_eq!(summary(&created, "errors"), 0, "{created}");
    assert_eq!(created["warnings"], serde_json::json!([]), "{created}");

    let listed = snap.ls("latest");
    let on_disk = walk(&src);
    for (rel, meta) in &on_disk {
        let path = if rel.as_os_str().is_empty() {
            src.clone()
        } else {
            src.join(rel)
        };
        let entry = listed
            .iter()
            .find(|e| e["path"].as_str() == Some(s(&path)))
            .unwrap_or_else(|| panic!("{} not listed", path.display()));
        let what = path.display();
        assert_eq!(
            entry["mode"].as_u64(),
            Some(u64::from(meta.mode() & 0o7777)),
            "mode of {what}"
        );
        assert_eq!(entry["uid"].as_u64(), Some(u64::from(meta.uid())), "uid of {what}");
        assert_eq!(entry["gid"].as_u64(), Some(u64::from(meta.gid())), "gid of {what}");
        assert_eq!(
            entry["mtime"].as_str(),
            Some(mtime_rfc3339(meta).as_str()),
            "mtime of {what}"
        );
        if meta.is_file() {
            assert_eq!(entry["size"].as_u64(), Some(meta.len()), "size of {what}");
            assert_eq!(entry["type"], "file", "{what}");
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap();
            assert_eq!(entry["link_target"].as_str(), target.to_str(), "target of {what}");
        }
    }
    assert_eq!(
        listed
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with(s(&src))))
            .count(),
        on_disk.len()
    );

    let target = work.path().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    let back = restored(&target, &src);
    assert_same_tree(&src, &back, Compare::all());
    for (i, _) in SIZES.iter().enumerate() {
        let rel = format!("d/f{i}");
        assert!(same_content(&src.join(&rel), &back.join(&rel)), "{rel} differs");
    }
    let a = fs::metadata(back.join("d/f3")).unwrap();
    let b = fs::metadata(back.join("d/e/link_to_f3")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "hard link restored as two files");
    if xattrs {
        assert_eq!(user_xattrs(&back.join("d/f1")), user_xattrs(&src.join("d/f1")));
        assert_eq!(user_xattrs(&back.join("d/f7"))[b"user.big".as_slice()], vec![7u8; 2000]);
        assert_eq!(user_xattrs(&back.join("d/e"))[b"user.dir".as_slice()], b"dir".to_vec());
    }
    // Unchanged re-backup: attributes carried over from the parent, the same listing.
    let again = snap.create(&[s(&src)]);
    assert_eq!(
        summary(&again, "files_unmodified"),
        summary(&created, "files_new"),
        "{again}"
    );
    // (Entries above the source differ: the restore changed their mtimes.)
    let under = |all: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        all.into_iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with(s(&src))))
            .collect()
    };
    assert_eq!(under(snap.ls("latest")), under(listed));
    make_removable(work.path());
}

/// A file whose content is not what its stat said when the backup read it
/// (here /proc/version bind-mounted over a regular file: stat says 0 bytes,
/// reading gives more) is read to its end and stored whole, with the
/// warning "changed while being read", as before the one-read path.
#[test]
fn file_longer_than_its_stat_is_read_to_the_end_with_a_warning() {
    if !is_root() {
        eprintln!("skipped: needs root (bind mount)");
        return;
    }
    let snap = Snap::init(&[]);
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let over = src.join("grows");
    fs::write(&over, b"").unwrap();
    fs::write(src.join("plain"), b"plain\n").unwrap();
    let kernel_file = Path::new("/proc/version");
    let mounted = Command::new("mount").arg("--bind").arg(kernel_file).arg(&over).status();
    if !mounted.is_ok_and(|st| st.success()) {
        eprintln!("skipped: cannot bind-mount here");
        return;
    }
    let meta = fs::metadata(&over).unwrap();
    let out = snap.run(&["create", "--json", s(&src)]);
    // The content as the backup saw it varies (a kernel file): what
    // it read is what it stored, with the warning, and more than the stat's 0 bytes.
    let listed = snap.ls("latest");
    let dump = snap.run(&["dump", "latest", s(&over)]);
    let _ = Command::new("umount").arg(&over).status();
    assert_eq!(meta.len(), 0, "the bind-mounted kernel file reports size 0");
    // A warning, not an error: the backup succeeds.
    assert_code(&out, 0);
    let created = parse_json(&out);
    let warnings = created["warnings"].to_string();
    assert!(warnings.contains("changed while being read"), "{created}");
    assert_code(&dump, 0);
    assert!(dump.stdout.len() > 10, "stored {} bytes", dump.stdout.len());
    assert_eq!(
        dump.stdout,
        fs::read(kernel_file).unwrap(),
        "not the kernel file's content"
    );
    let entry = listed
        .iter()
        .find(|e| e["path"].as_str() == Some(s(&over)))
        .expect("listed");
    assert_eq!(
        entry["size"].as_u64(),
        Some(dump.stdout.len() as u64),
        "size is what was read"
    );
    make_removable(work.path());
}
