//! What snap prints, and what it leaves alone: a second `prune` has nothing
//! to do; a closed stdout (`snap ls latest | head`) ends snap quietly;
//! warnings have one style and carry colour only on a terminal; counts are
//! singular for one; `ls` escapes names on a terminal.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use serde_json::Value;

use super::util::*;

/// `prune --json` with the statistics parsed.
fn prune(snap: &Snap) -> Value {
    parse_json(&snap.ok(&["prune", "--json"]))
}

#[track_caller]
fn assert_nothing_to_do(stats: &Value, what: &str) {
    for field in [
        "packs_deleted",
        "packs_repacked",
        "packs_unindexed",
        "bytes_freed",
        "index_files_replaced",
    ] {
        assert_eq!(stats[field], 0, "{what}: {field} should be 0 in {stats}");
    }
}

/// Small trees and small data: one backup leaves one small data pack and one
/// small tree pack. Prune used to count small packs across kinds and repack
/// both (they cannot merge: a pack holds one kind), every run, forever.
#[test]
fn prune_of_a_fresh_small_repository_has_nothing_to_do() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..5 {
        write_random_file(&src.join(format!("f{i}")), 3000, i);
    }
    snap.create(&[s(&src)]);
    assert_eq!(packs(&snap.repo).len(), 2, "one data pack and one tree pack");
    assert_nothing_to_do(&prune(&snap), "first prune");
    assert_nothing_to_do(&prune(&snap), "second prune");
}

/// Many small packs of each kind (one per backup) are merged once; then the
/// repository is stable: a second prune right after has nothing to do.
#[test]
fn second_prune_after_merging_small_packs_has_nothing_to_do() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for round in 0..4u64 {
        write_random_file(&src.join(format!("f{round}")), 5000, round);
        snap.create(&[s(&src)]);
    }
    // Forgetting one snapshot leaves unused trees in some packs as well.
    let first = snap.snapshots()[0]["id"].as_str().unwrap().to_string();
    snap.ok(&["forget", &first]);
    let before = packs(&snap.repo).len();
    assert_eq!(before, 8, "four backups: four data and four tree packs");
    let stats = prune(&snap);
    assert!(
        stats["packs_repacked"].as_u64().unwrap() > 0,
        "small packs are merged: {stats}"
    );
    assert_eq!(packs(&snap.repo).len(), 2, "one pack per kind after merging");
    assert_nothing_to_do(&prune(&snap), "second prune");
    let out = snap.ok(&["verify", "--read-data"]);
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
    let target = snap.scratch().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}

// ------------------------------------------------------------ closed stdout

/// Runs snap with its stdout a pipe whose reading end is already closed, as
/// after `snap ... | head` has read what it wanted.
fn run_into_closed_pipe(snap: &Snap, args: &[&str]) -> std::process::Output {
    let mut child = snap
        .command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn snap");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for snap")
}

/// Ended as `ls` ends when its reader goes away: killed by SIGPIPE, with
/// nothing on stderr (it used to print `error: Broken pipe`, or panic in
/// `println!`).
#[track_caller]
fn assert_ended_quietly(out: &std::process::Output, what: &str) {
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{what}: killed by SIGPIPE\n{}",
        describe(out)
    );
    assert!(out.stderr.is_empty(), "{what}: nothing on stderr\n{}", describe(out));
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3 {
        write_random_file(&src.join(format!("f{i}")), 2000, i);
    }
    let commands: &[&[&str]] = &[
        &["create", s(&src)],
        &["create", "--json", s(&src)],
        &["snapshots"],
        &["snapshots", "--json"],
        &["ls", "latest"],
        &["ls", "-l", "latest"],
        &["ls", "--json", "latest"],
        &["verify"],
        &["verify", "--json"],
        &["prune", "--dry-run"],
        &["forget", "--keep-last", "5", "--dry-run"],
        &["repair", "snapshots", "--dry-run"],
        &["key", "list"],
        &["unlock"],
    ];
    for args in commands {
        let out = run_into_closed_pipe(&snap, args);
        assert_ended_quietly(&out, &format!("snap {args:?}"));
    }
    // The two backups above were saved before their summaries hit the pipe.
    assert_eq!(snap.snapshots().len(), 2);
    let fresh = Snap::new();
    let out = run_into_closed_pipe(&fresh, &["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_ended_quietly(&out, "snap init");
}

/// `snap ls latest | head -1`: the reader goes away in the middle of a long
/// listing.
#[test]
fn ls_into_head_ends_quietly() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3000 {
        fs::write(
            src.join(format!("a-rather-long-file-name-to-fill-the-pipe-{i:05}")),
            b"x",
        )
        .unwrap();
    }
    snap.create(&[s(&src)]);
    let mut child = snap
        .command()
        .args(["ls", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn snap");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "/tmp\n");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_ended_quietly(&out, "snap ls latest | head -1");
}

/// With stderr a closed pipe, messages there are dropped and the command goes
/// on (`eprintln!` panicked: exit 101 instead of verify's verdict).
#[test]
fn a_closed_stderr_does_not_stop_a_command() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    write_random_file(&src.join("f"), 5000, 1);
    snap.create(&[s(&src)]);
    for (pack, _) in packs(&snap.repo) {
        fs::remove_file(pack).unwrap();
    }
    let mut child = snap
        .command()
        .arg("verify")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn snap");
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the repository is damaged"), "{}", describe(&out));
}

/// A reader that reads to the end gets everything: stdout is flushed.
#[test]
fn a_full_listing_into_a_pipe_still_succeeds() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    snap.create(&[s(&src)]);
    let out = snap.ok(&["ls", "latest"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("/src/f\n"),
        "{}",
        describe(&out)
    );
}

// ------------------------------------------------------------ warnings

/// A damaged index cache gives a warning (the cache is rebuilt).
fn damage_cache(snap: &Snap) {
    let caches: Vec<_> = files_under(&snap.cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "redb"))
        .collect();
    assert!(!caches.is_empty(), "an index cache under {}", snap.cache.display());
    for cache in caches {
        fs::write(cache, b"not a database").unwrap();
    }
}

#[test]
fn warnings_have_one_style_and_no_colour_off_a_terminal() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    snap.create(&[s(&src)]);
    damage_cache(&snap);
    // Even with a terminal-looking environment, stderr is a pipe here.
    let out = snap
        .command()
        .arg("snapshots")
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.starts_with("warning: rebuilding the index cache"),
        "{}",
        describe(&out)
    );
    assert!(!err.contains('\x1b'), "no colour codes off a terminal: {err:?}");
    assert!(!err.contains("WARN"), "one style of warning: {err:?}");
}

/// The command line of `snap ARGS` for `sh -c`, with this test's repository.
fn shell_line(snap: &Snap, args: &[&str]) -> String {
    let mut line = format!(
        "{} -r {} --cache-dir {}",
        env!("CARGO_BIN_EXE_snap"),
        s(&snap.repo),
        s(&snap.cache)
    );
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    line
}

/// Runs `line` with stdout and stderr on a terminal (util-linux `script`),
/// returning what the terminal showed; `None` (with a note) without `script`.
fn on_a_terminal(line: &str, env: &[(&str, &str)]) -> Option<String> {
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", line, "/dev/null"])
        .env("SNAP_PASSWORD", PASSWORD)
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")),
        Ok(out) => panic!("script -c {line}\n{}", describe(&out)),
        Err(e) => {
            eprintln!("note: cannot run `script` ({e}); terminal part skipped");
            None
        }
    }
}

#[test]
fn warnings_are_coloured_only_on_a_terminal_without_no_color() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    snap.create(&[s(&src)]);
    let line = format!("{} >/dev/null", shell_line(&snap, &["snapshots"]));
    damage_cache(&snap);
    let Some(shown) = on_a_terminal(&line, &[]) else { return };
    assert!(
        shown.contains("\x1b[1;33mwarning\x1b[0m: rebuilding the index cache"),
        "{shown:?}"
    );
    damage_cache(&snap);
    let shown = on_a_terminal(&line, &[("NO_COLOR", "1")]).unwrap();
    assert!(shown.starts_with("warning: rebuilding the index cache"), "{shown:?}");
    assert!(!shown.contains('\x1b'), "NO_COLOR: {shown:?}");
}

// ------------------------------------------------------------ plurals

/// No "1 snapshots", "1 directories", "removed 1 locks", ... in `text`.
#[track_caller]
fn assert_singular_for_one(text: &str) {
    let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
    for pair in words.windows(2) {
        if pair[0] == "1" {
            let noun = pair[1];
            // One-letter units ("0.1 s") are not nouns.
            let plural = noun.len() > 1 && noun.ends_with('s') && !["was", "is", "uses"].contains(&noun);
            assert!(!plural, "\"1 {noun}\" in:\n{text}");
        }
    }
}

#[test]
fn counts_of_one_are_singular() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("only"), b"one file").unwrap();
    let mut text = String::new();
    let mut run = |args: &[&str]| {
        let out = snap.ok(args);
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&stderr(&out));
    };
    run(&["create", s(&src)]);
    run(&["snapshots"]);
    run(&["verify"]);
    run(&["prune"]);
    run(&["repair", "index"]);
    // `restore --path` of one directory holding one file: 1 file, 1 directory.
    let target = snap.scratch().join("target");
    run(&["restore", "latest", "--target", s(&target), "--path", s(&src)]);
    // A backup killed before its snapshot leaves one stale lock.
    let out = snap
        .command()
        .args(["create", s(&src)])
        .env("SNAP_FAILPOINT", "before-snapshot")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    run(&["unlock"]);
    let id = snap.snapshots()[0]["id"].as_str().unwrap().to_string();
    run(&["forget", &id]);
    for expected in [
        "1 snapshot\n",
        "1 directory",
        "1 file,",
        "removed 1 lock\n",
        "removed 1 snapshot\n",
        "checked 1 snapshot,",
        "1 snapshot uses",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert_singular_for_one(&text);
}

// ------------------------------------------------------------ names on a terminal

#[test]
fn ls_escapes_names_on_a_terminal_and_not_in_a_pipe_or_json() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    let odd = ["new\nline", "\x1b[31mred", "tab\there", "it's"];
    for name in odd {
        fs::write(src.join(name), b"x").unwrap();
    }
    std::os::unix::fs::symlink("to\x1b]0;title\x07", src.join("link")).unwrap();
    snap.create(&[s(&src)]);

    // A pipe gets the bytes, as from ls.
    let piped = String::from_utf8(snap.ok(&["ls", "latest"]).stdout).unwrap();
    assert!(piped.contains(&format!("{}/new\nline\n", s(&src))), "{piped:?}");
    // JSON is unchanged: the exact names, escaped only as JSON strings are.
    let paths = snap.ls_paths("latest");
    for name in odd {
        assert!(paths.contains(&format!("{}/{name}", s(&src))), "{name:?} in {paths:?}");
    }

    let Some(shown) = on_a_terminal(&shell_line(&snap, &["ls", "latest"]), &[]) else {
        return;
    };
    let base = s(&src);
    for expected in [
        format!("'{base}/new'$'\\n''line'\n"),
        format!("'{base}/'$'\\033''[31mred'\n"),
        format!("'{base}/tab'$'\\t''here'\n"),
        format!("'{base}/it'\\''s'\n"),
        format!("{base}/link\n"),
    ] {
        assert!(shown.contains(&expected), "{expected:?} in {shown:?}");
    }
    assert!(
        !shown.contains('\x1b'),
        "no raw escape byte reaches the terminal: {shown:?}"
    );
    let long = on_a_terminal(&shell_line(&snap, &["ls", "-l", "latest"]), &[]).unwrap();
    assert!(
        long.contains(&format!("{base}/link -> 'to'$'\\033'']0;title'$'\\a'\n")),
        "{long:?}"
    );
    assert!(!long.contains('\x1b') && !long.contains('\x07'), "{long:?}");
}

/// Names are not the only text from a snapshot that reaches a terminal: host
/// names, tags, group keys and the paths in messages are printed with their
/// control characters escaped, wherever they go.
#[test]
fn text_from_a_snapshot_cannot_drive_the_terminal() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    snap.create(&[s(&src), "--host", "evil\x1b]0;owned\x07", "--tag", "t\x1b[2J"]);
    let id = snap.snapshots()[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        snap.snapshots()[0]["host"],
        "evil\x1b]0;owned\x07",
        "JSON keeps the exact host"
    );
    let mut shown = String::new();
    for args in [
        vec!["snapshots"],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["ls", &id, "/no\x1b[2Jsuch"],
    ] {
        let out = snap.run(&args);
        shown.push_str(&String::from_utf8_lossy(&out.stdout));
        shown.push_str(&stderr(&out));
    }
    assert!(shown.contains("evil\\033]0;owned\\a"), "{shown}");
    assert!(shown.contains("t\\033[2J"), "{shown}");
    assert!(shown.contains("/no\\033[2Jsuch"), "the error names the path: {shown}");
    assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
}
