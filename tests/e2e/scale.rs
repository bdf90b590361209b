//! Scale: memory must not grow with the repository. Slow (about a minute in
//! release, several in debug), so ignored by default: `just torture` or
//! `cargo test --release -- --ignored scale`.

use std::fs;
use std::process::Command;

use super::util::*;

/// Peak RSS in KiB of `snap ARGS`, measured by `/usr/bin/time`.
fn peak_rss_kib(snap: &Snap, args: &[&str]) -> Option<u64> {
    let time = std::path::Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let inner = snap.command();
    let mut cmd = Command::new(time);
    cmd.arg("-f")
        .arg("RSS=%M")
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(args);
    for (key, value) in inner.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "snap {args:?}\n{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("RSS="))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
#[ignore = "slow: grows a repository to a million blobs"]
fn rss_stays_flat_as_the_index_grows_to_a_million_blobs() {
    // 64 B / 256 B / 1 KiB chunks: a million blobs from 256 MiB.
    let snap = Snap::init(&["--chunk-sizes", "64,256,1024"]);
    let bulk = snap.scratch().join("bulk");
    let probe = snap.scratch().join("probe");
    fs::create_dir_all(&bulk).unwrap();
    fs::create_dir_all(&probe).unwrap();
    let mut rows = Vec::new();
    let mut written_mib = 0u64;
    for (step, target_mib) in [2u64, 25, 256].into_iter().enumerate() {
        // Grow the index to about `target_mib` * 4096 blobs.
        while written_mib < target_mib {
            let mib = (target_mib - written_mib).min(16);
            write_random_file(&bulk.join(format!("b{written_mib}")), mib * MIB, 1000 + written_mib);
            written_mib += mib;
        }
        snap.create(&[s(&bulk)]);
        // Then measure a backup and a restore of the same amount of new data.
        write_random_file(&probe.join("p.bin"), 2 * MIB, 5000 + step as u64);
        let Some(create_rss) = peak_rss_kib(&snap, &["create", "-q", s(&probe)]) else {
            eprintln!("skipped: /usr/bin/time is not installed");
            return;
        };
        let target = snap.scratch().join(format!("out{step}"));
        let restore_rss = peak_rss_kib(&snap, &["restore", "latest", "--target", s(&target)]).unwrap();
        assert_same_tree(&probe, &restored(&target, &probe), Compare::all());
        fs::remove_dir_all(&target).unwrap();
        let blobs = written_mib * 4096;
        eprintln!("index ~{blobs} blobs: create peak RSS {create_rss} KiB, restore peak RSS {restore_rss} KiB");
        rows.push((blobs, create_rss, restore_rss));
    }
    let (_, first_create, first_restore) = rows[0];
    let (_, last_create, last_restore) = rows[rows.len() - 1];
    // A hundredfold index may cost the redb page cache (16 MiB cap), not more.
    assert!(last_create < first_create + 40 * 1024, "create RSS grew: {rows:?}");
    assert!(last_restore < first_restore + 40 * 1024, "restore RSS grew: {rows:?}");
}
