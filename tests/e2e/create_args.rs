//! What `create` does with the sources and options it is given: a missing
//! path among several, `--stdin-filename` misuse, exclude patterns that can
//! never match, and a file that is a FIFO by the time it is opened.

use std::fs;

use super::util::*;

#[test]
fn a_missing_source_path_is_a_warning_and_the_others_are_saved() {
    let snap = Snap::init(&[]);
    let present = snap.scratch().join("present");
    fs::create_dir(&present).unwrap();
    fs::write(present.join("a"), b"kept").unwrap();
    let lone = snap.scratch().join("lone-file");
    fs::write(&lone, b"kept too").unwrap();
    let missing = snap.scratch().join("missing");

    let out = snap.run_code(&["--json", "create", s(&present), s(&missing), s(&lone)], 3);
    let created = parse_json(&out);
    let err = stderr(&out);
    assert!(
        err.contains(s(&missing)),
        "the missing path is named\n{}",
        describe(&out)
    );
    assert_eq!(summary(&created, "errors"), 1, "{created}");
    let warned: Vec<&str> = created["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["path"].as_str())
        .collect();
    assert_eq!(warned, vec![s(&missing)], "{created}");
    let listed = snap.ls_paths("latest");
    assert!(listed.contains(s(&present.join("a"))), "{listed:?}");
    assert!(listed.contains(s(&lone)), "{listed:?}");
    assert!(!listed.contains(s(&missing)), "{listed:?}");

    // All of them missing: nothing to save, the backup fails.
    let out = snap.run_code(&["create", s(&missing)], 1);
    assert!(stderr(&out).contains(s(&missing)), "{}", describe(&out));
}

#[test]
fn stdin_filename_misuse_is_a_usage_error() {
    let snap = Snap::init(&[]);
    let dir = snap.scratch().join("src");
    fs::create_dir(&dir).unwrap();

    // Without --stdin it used to be ignored while the paths were backed up.
    let out = snap.run_code(&["create", "--stdin-filename", "dump.sql", s(&dir)], 2);
    assert!(stderr(&out).contains("--stdin"), "{}", describe(&out));

    // Longer than NAME_MAX: the snapshot could never be restored.
    let long = "n".repeat(256);
    let out = snap.run_with_stdin(&["create", "--stdin", "--stdin-filename", &long], b"data".to_vec());
    assert_code(&out, 2);
    assert!(stderr(&out).contains("255"), "{}", describe(&out));
    assert!(snap.snapshots().is_empty(), "no snapshot was written");

    // 255 bytes is fine, and restores.
    let longest = "n".repeat(255);
    let out = snap.run_with_stdin(&["create", "--stdin", "--stdin-filename", &longest], b"data".to_vec());
    assert_code(&out, 0);
    let target = snap.scratch().join("restored");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_eq!(fs::read(target.join(&longest)).unwrap(), b"data");
}

#[test]
fn an_exclude_pattern_that_can_never_match_is_warned_about() {
    let snap = Snap::init(&[]);
    let dir = snap.scratch().join("src");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("x"), b"x").unwrap();
    let list = snap.scratch().join("excludes");
    fs::write(&list, "# comment\n*.tmp\nsub/../y\n").unwrap();

    let out = snap.ok(&["create", "--exclude", "./x", "--exclude-file", s(&list), s(&dir)]);
    let err = stderr(&out);
    assert!(err.contains("'./x' can never match"), "{}", describe(&out));
    assert!(err.contains("'sub/../y' can never match"), "{}", describe(&out));
    assert!(
        !err.contains("*.tmp"),
        "a pattern that can match is not warned about\n{err}"
    );

    // A pattern that can match says nothing.
    let out = snap.ok(&["create", "--exclude", "x", s(&dir)]);
    assert!(!stderr(&out).contains("never match"), "{}", describe(&out));
}

/// A swapper renames a FIFO over regular files while backups run: each
/// backup must finish (a blocking open of the FIFO used to hang it
/// forever), with exit 0 or 3.
#[test]
fn a_file_swapped_for_a_fifo_does_not_hang_the_backup() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let snap = Snap::init(&[]);
    let dir = snap.scratch().join("src");
    fs::create_dir(&dir).unwrap();
    const FILES: usize = 200;
    for i in 0..FILES {
        fs::write(dir.join(format!("f{i:03}")), b"regular").unwrap();
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop_on_panic = StopOnDrop(&stop);
        let dir = &dir;
        let stop = &stop;
        scope.spawn(move || {
            let spare = dir.parent().unwrap().join("spare-fifo");
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let name = dir.join(format!("f{:03}", i % FILES));
                let _ = fs::remove_file(&spare);
                mkfifo(&spare, 0o644);
                // The file becomes a FIFO, then a regular file again.
                let _ = fs::rename(&spare, &name);
                let _ = fs::remove_file(&name);
                let _ = fs::write(&name, b"regular");
                i += 1;
            }
        });
        for _ in 0..5 {
            let mut child = snap
                .command()
                .args(["create", "--checkpoint-interval", "0s", s(dir)])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn snap");
            let started = std::time::Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                if started.elapsed() > std::time::Duration::from_secs(60) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the backup hangs on a file swapped for a FIFO");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            assert!(matches!(status.code(), Some(0) | Some(3)), "backup exited {status:?}");
        }
        stop.store(true, Ordering::SeqCst);
    });
}
