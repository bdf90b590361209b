//! `snap copy` and `snap init --from-repo --copy-chunker-params` between
//! local repositories with different keys and settings: what is copied
//! restores byte-identical from the destination, a second copy copies
//! nothing, filters select, a damaged source fails before any snapshot is
//! written, and a repository sharing the source's chunker dedups with it.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::util::*;

/// A source password file for `--from-password-file`, beside `dest`.
fn from_password_file(dest: &Snap, src: &Snap) -> PathBuf {
    let path = dest.scratch().join("from-password");
    fs::write(
        &path,
        format!("{}\n", src.password.as_deref().expect("encrypted source")),
    )
    .unwrap();
    path
}

/// `snap -r DEST copy --from-repo SRC --from-password-file F EXTRA...`.
fn copy(dest: &Snap, src: &Snap, extra: &[&str]) -> std::process::Output {
    let file = from_password_file(dest, src);
    let mut args = vec!["copy", "--from-repo", s(&src.repo), "--from-password-file", s(&file)];
    args.extend_from_slice(extra);
    dest.run(&args)
}

/// `copy --json`: one object per source snapshot.
fn copy_json(dest: &Snap, src: &Snap, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = copy(dest, src, &args);
    assert_code(&out, 0);
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}\n{}", describe(&out))))
        .collect()
}

fn pack_bytes(repo: &Path) -> u64 {
    packs(repo).iter().map(|(_, n)| n).sum()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

const TEXT_LINES: u64 = 30_000;
/// Bytes of `a/text.txt`.
const TEXT_LEN: u64 = TEXT_LINES * 35;

/// A source tree: random (incompressible) and repetitive (compressible)
/// files, nested directories, an empty file, a symlink.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    write_random_file(&root.join("random.bin"), 600_000, 1);
    write_random_file(&root.join("a/b/c/deep.bin"), 150_000, 2);
    // Compressible but not repetitive (identical chunks would dedup).
    let text: String = (0..TEXT_LINES)
        .map(|i| format!("line {i:06} of a compressible file\n"))
        .collect();
    fs::write(root.join("a/text.txt"), text).unwrap();
    fs::write(root.join("a/b/empty"), b"").unwrap();
    std::os::unix::fs::symlink("../random.bin", root.join("a/link")).unwrap();
    set_tree_times(root);
}

/// Snapshots copied between repositories with different passwords, pack
/// sizes and compression restore byte-identical from the destination,
/// keep their metadata, get their parent mapped, and a second copy adds
/// nothing. The destination stores with its own compression.
#[test]
fn copy_across_keys_and_settings_restores_identical() {
    let src = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let mut dest = Snap::new();
    dest.password = Some("another password".into());
    dest.init_repo(&["--compression", "off", "--pack-size-mib", "1"]);

    let data = src.scratch().join("data");
    build_tree(&data);
    let first = src.create(&[s(&data), "--tag", "one", "--host", "alpha"]);
    let first_copy = src.scratch().join("first");
    copy_dir(&data, &first_copy);
    write_random_file(&data.join("a/new.bin"), 200_000, 3);
    fs::remove_file(data.join("a/b/c/deep.bin")).unwrap();
    set_tree_times(&data);
    let second = src.create(&[s(&data), "--host", "alpha"]);
    assert_eq!(second["parent"], first["id"]);

    let out = copy(&dest, &src, &[]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    let src_snapshots = src.snapshots();
    let dest_snapshots = dest.snapshots();
    assert_eq!(dest_snapshots.len(), 2, "{text}");
    for (s_snap, d_snap) in src_snapshots.iter().zip(&dest_snapshots) {
        let (s_id, d_id) = (id_of(s_snap), id_of(d_snap));
        assert!(
            text.contains(&format!("copied {} -> {}", &s_id[..8], &d_id[..8])),
            "{text}"
        );
        assert_ne!(s_id, d_id);
        for field in [
            "time",
            "host",
            "username",
            "paths",
            "tags",
            "summary",
            "program_version",
        ] {
            assert_eq!(s_snap[field], d_snap[field], "{field}");
        }
        // Ids are keyed: even the root tree differs.
        assert_ne!(s_snap["tree"], d_snap["tree"]);
    }
    assert_eq!(dest_snapshots[1]["parent"], dest_snapshots[0]["id"]);

    // Byte-identical restores, against the originals.
    for (snapshot, original) in [(&dest_snapshots[0], &first_copy), (&dest_snapshots[1], &data)] {
        let target = dest.scratch().join(format!("restore-{}", &id_of(snapshot)[..8]));
        assert_code(&dest.restore(&id_of(snapshot), &target, &[]), 0);
        assert_same_tree(original, &restored(&target, &data), Compare::all());
    }

    // DEST's own settings: uncompressed, so it stores the compressible text
    // in full where SRC compressed it; packs near DEST's 1 MiB target.
    assert_eq!(fs::metadata(data.join("a/text.txt")).unwrap().len(), TEXT_LEN);
    assert!(
        pack_bytes(&dest.repo) > pack_bytes(&src.repo) + TEXT_LEN / 2,
        "dest {} src {}",
        pack_bytes(&dest.repo),
        pack_bytes(&src.repo)
    );
    assert!(
        packs(&dest.repo).iter().all(|(_, n)| *n < 2 * MIB),
        "{:?}",
        packs(&dest.repo)
    );
    assert!(packs(&dest.repo).len() > 1);

    dest.ok(&["verify", "--read-data"]);

    // A second copy copies nothing and writes no pack, index or snapshot.
    let before = (packs(&dest.repo), object_count(&dest.repo, "index"));
    let again = copy_json(&dest, &src, &[]);
    assert_eq!(again.len(), 2);
    for (line, d_snap) in again.iter().zip(&dest_snapshots) {
        assert_eq!(line["outcome"], "already-present", "{line}");
        assert_eq!(line["dest"], d_snap["id"]);
        assert_eq!(line["blobs_read"], 0);
    }
    assert_eq!(before, (packs(&dest.repo), object_count(&dest.repo, "index")));
    assert_eq!(dest.snapshots().len(), 2);
    let out = copy(&dest, &src, &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "skipped {} (already in destination as {})",
            &id_of(&src_snapshots[0])[..8],
            &id_of(&dest_snapshots[0])[..8]
        )),
        "{}",
        describe(&out)
    );
}

/// `--host`, `--tag`, `--path` and snapshot ids choose what is copied;
/// `--dry-run` lists it and writes nothing.
#[test]
fn copy_filters_and_dry_run_select() {
    let src = Snap::init(&[]);
    let dest = Snap::init(&[]);
    let data = src.scratch().join("data");
    let other = src.scratch().join("other");
    fs::create_dir_all(&data).unwrap();
    fs::create_dir_all(&other).unwrap();
    fs::write(data.join("f"), b"data").unwrap();
    fs::write(other.join("g"), b"other").unwrap();
    let a = src.create(&[s(&data), "--host", "a", "--tag", "x"]);
    let b = src.create(&[s(&data), "--host", "b"]);
    let c = src.create(&[s(&other), "--host", "a"]);
    let d = src.create(&[s(&other), "--host", "b", "--tag", "x"]);

    let dry = copy_json(&dest, &src, &["--dry-run"]);
    assert_eq!(dry.len(), 4);
    assert!(dry.iter().all(|l| l["outcome"] == "would-copy" && l["dest"].is_null()));
    assert_eq!(object_count(&dest.repo, "snapshots"), 0);
    assert!(packs(&dest.repo).is_empty());

    let sources = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["outcome"] == "copied")
            .map(|l| l["source"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        sources(&copy_json(&dest, &src, &["--host", "a"])),
        vec![id_of(&a), id_of(&c)]
    );
    assert_eq!(sources(&copy_json(&dest, &src, &["--tag", "x"])), vec![id_of(&d)]);
    let by_path = copy_json(&dest, &src, &["--path", s(&data)]);
    assert_eq!(sources(&by_path), vec![id_of(&b)]);
    assert_eq!(by_path.len(), 2, "a is already there: {by_path:?}");
    assert_eq!(dest.snapshots().len(), 4);

    // By id prefix, into a fresh destination.
    let dest2 = Snap::init(&[]);
    let prefix = &id_of(&c)[..10];
    assert_eq!(sources(&copy_json(&dest2, &src, &[prefix])), vec![id_of(&c)]);
    assert_eq!(
        sources(&copy_json(&dest2, &src, &["latest", "--host", "a"])),
        Vec::<String>::new()
    );
    let dest2_snapshots = dest2.snapshots();
    assert_eq!(dest2_snapshots.len(), 1);
    assert_eq!(dest2_snapshots[0]["paths"], c["paths"]);
    assert_code(&copy(&dest2, &src, &["ffffffffffff"]), 2);
}

/// A blob damaged in the source fails the copy with a clear error, and no
/// snapshot is written in the destination; what was stored is indexed and
/// the destination verifies clean.
#[test]
fn damaged_source_blob_fails_without_snapshot() {
    let src = Snap::init(&[]);
    let dest = Snap::init(&[]);
    let data = src.scratch().join("data");
    fs::create_dir_all(&data).unwrap();
    write_random_file(&data.join("big.bin"), 3_000_000, 7);
    src.create(&[s(&data)]);
    let (pack, len) = packs(&src.repo)[0].clone();
    assert!(len > 2_000_000);
    make_removable(&pack);
    let mut file = fs::OpenOptions::new().write(true).read(true).open(&pack).unwrap();
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.write_all(b"\xde\xad\xbe\xef").unwrap();
    drop(file);

    let out = copy(&dest, &src, &[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("copy failed") && err.contains("damaged"), "{err}");
    assert!(!panicked(&out));
    assert_eq!(object_count(&dest.repo, "snapshots"), 0);
    dest.ok(&["verify", "--read-data"]);
}

/// Exit codes: a wrong source password is 12, a source that is not a
/// repository 10, a missing --from-repo a usage error.
#[test]
fn copy_exit_codes() {
    let src = Snap::init(&[]);
    let dest = Snap::init(&[]);
    let wrong = dest.scratch().join("wrong");
    fs::write(&wrong, "not it\n").unwrap();
    let out = dest.run(&["copy", "--from-repo", s(&src.repo), "--from-password-file", s(&wrong)]);
    assert_code(&out, 12);
    assert!(stderr(&out).contains("source repository"), "{}", describe(&out));
    // The destination's password is not the source's.
    let out = dest.run(&["copy", "--from-repo", s(&src.repo)]);
    assert_code(&out, 12);

    let empty = dest.scratch().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let file = from_password_file(&dest, &src);
    assert_code(
        &dest.run(&["copy", "--from-repo", s(&empty), "--from-password-file", s(&file)]),
        10,
    );
    assert_code(&dest.run(&["copy"]), 2);
    assert_code(&copy(&dest, &dest, &[]), 2);
    assert_code(&dest.run(&["init", "--from-repo", s(&src.repo)]), 2);
}

/// `init --from-repo --copy-chunker-params`: the same files chunk alike
/// in both repositories, so a copy after a backup of the same tree into
/// the destination (and a backup after a copy) adds almost nothing.
/// Without it (same chunk sizes, another gear key) the data is stored again.
#[test]
fn copy_chunker_params_dedups_with_source() {
    let src = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let data = src.scratch().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    write_random_file(&data.join("one.bin"), 1_500_000, 11);
    write_random_file(&data.join("sub/two.bin"), 700_000, 12);
    src.create(&[s(&data)]);
    let data_len = 2_200_000u64;

    let init_from = |extra: &[&str]| {
        let dest = Snap::new();
        let file = dest.scratch().join("from-password");
        fs::write(&file, PASSWORD).unwrap();
        let mut args = vec!["--from-repo", s(&src.repo), "--from-password-file", s(&file)];
        args.extend_from_slice(extra);
        dest.init_repo(&args);
        dest
    };

    // Backup, then copy.
    let shared = init_from(&["--copy-chunker-params"]);
    let config: Value = serde_json::from_slice(&fs::read(shared.repo.join("config")).unwrap()).unwrap();
    let src_config: Value = serde_json::from_slice(&fs::read(src.repo.join("config")).unwrap()).unwrap();
    assert_eq!(config["chunker"], src_config["chunker"]);
    assert_ne!(config["id"], src_config["id"]);
    shared.create(&[s(&data)]);
    let before = pack_bytes(&shared.repo);
    let lines = copy_json(&shared, &src, &[]);
    let added = pack_bytes(&shared.repo) - before;
    assert_eq!(lines[0]["outcome"], "copied");
    assert!(added < data_len / 50, "copy added {added} bytes");
    shared.ok(&["verify", "--read-data"]);

    // Copy, then backup.
    let reverse = init_from(&["--copy-chunker-params"]);
    copy_json(&reverse, &src, &[]);
    // --force: re-read and re-chunk every file, not trust the copied parent.
    let created = reverse.create(&[s(&data), "--force"]);
    assert!(summary(&created, "bytes_added_stored") < data_len / 50, "{created}");

    // Same chunk sizes but a gear key of its own: everything again.
    let separate = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    separate.create(&[s(&data), "--force"]);
    let before = pack_bytes(&separate.repo);
    copy_json(&separate, &src, &[]);
    let added = pack_bytes(&separate.repo) - before;
    assert!(added > data_len * 9 / 10, "copy added only {added} bytes");

    // The copied snapshot restores the same files from a shared repository.
    let target = shared.scratch().join("restore");
    let copied = lines[0]["dest"].as_str().unwrap();
    assert_code(&shared.restore(copied, &target, &[]), 0);
    assert_same_tree(&data, &restored(&target, &data), Compare::all());
}

/// A later copy of a snapshot whose parent was copied in an earlier run
/// reads only what changed since the parent (ids of the rest are taken from
/// the parent's copy), and still restores byte-identical.
#[test]
fn later_copy_reads_only_what_changed() {
    let src = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let dest = Snap::init(&[]);
    let data = src.scratch().join("data");
    for dir in ["x", "y/z"] {
        fs::create_dir_all(data.join(dir)).unwrap();
        for i in 0..8 {
            write_random_file(
                &data.join(dir).join(format!("f{i}")),
                100_000,
                i + 100 * dir.len() as u64,
            );
        }
    }
    // Appended to: its first chunks are unchanged.
    write_random_file(&data.join("log"), 200_000, 5);
    set_tree_times(&data);
    src.create(&[s(&data)]);
    let first = copy_json(&dest, &src, &[]);
    let full = first[0]["blobs_read"].as_u64().unwrap();
    assert!(full > 50, "{first:?}");

    write_random_file(&data.join("x/f3"), 100_000, 999);
    fs::OpenOptions::new()
        .append(true)
        .open(data.join("log"))
        .unwrap()
        .write_all(&random_bytes(30_000, 6))
        .unwrap();
    set_tree_times(&data);
    fs::write(data.join("y/new"), b"new file").unwrap();
    src.create(&[s(&data)]);
    let second = copy_json(&dest, &src, &[]);
    assert_eq!(second[0]["outcome"], "already-present");
    assert_eq!(second[1]["outcome"], "copied");
    let read = second[1]["blobs_read"].as_u64().unwrap();
    assert!(read < full / 4, "read {read} of {full} blobs again");

    let snapshots = dest.snapshots();
    assert_eq!(snapshots[1]["parent"], snapshots[0]["id"]);
    let target = dest.scratch().join("restore");
    assert_code(&dest.restore(&id_of(&snapshots[1]), &target, &[]), 0);
    assert_same_tree(&data, &restored(&target, &data), Compare::all());
    dest.ok(&["verify", "--read-data"]);
}

/// A checkpoint (the partial snapshot of an interrupted backup) is copied
/// only when named.
#[test]
fn checkpoints_are_copied_only_when_named() {
    let src = Snap::init(&[]);
    let dest = Snap::init(&[]);
    let data = src.scratch().join("data");
    fs::create_dir_all(&data).unwrap();
    for i in 0..6 {
        write_random_file(&data.join(format!("a{i}")), 64 << 10, 300 + i);
    }
    let complete = src.create(&[s(&data)]);
    for i in 0..6 {
        write_random_file(&data.join(format!("b{i}")), 64 << 10, 400 + i);
    }
    let out = src
        .command()
        .args([
            "create",
            "-q",
            "--threads",
            "1",
            "--checkpoint-interval",
            "1ms",
            s(&data),
        ])
        .env("SNAP_FAILPOINT", "checkpoint-written:2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let checkpoint = src
        .snapshots()
        .into_iter()
        .find(|s| s["checkpoint"] == true)
        .expect("a checkpoint was left");

    let all = copy_json(&dest, &src, &[]);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["source"], complete["id"]);
    let named = copy_json(&dest, &src, &[&id_of(&checkpoint)]);
    assert_eq!(named[0]["outcome"], "copied");
    let dest_snapshots = dest.snapshots();
    assert_eq!(dest_snapshots.len(), 2);
    assert!(dest_snapshots.iter().any(|s| s["checkpoint"] == true));
}
