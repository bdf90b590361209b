//! `opendal:SCHEME -o key=value`: the generic path to OpenDAL's services,
//! tested with its `fs` service on a local directory. The same directory
//! opens as a local repository too, which shows that the OpenDAL backend
//! keeps the local layout (a repository moves with plain copy tools).

use std::fs;
use std::path::PathBuf;

use super::util::*;

#[test]
fn opendal_fs_and_local_share_one_layout() {
    let mut remote = Snap::new();
    let dir = remote.scratch().join("store");
    remote.repo = PathBuf::from("opendal:fs");
    let root = format!("root={}", dir.display());
    remote.init_repo(&["-o", &root, "--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);

    let src = remote.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        write_random_file(&src.join(format!("f{i}.bin")), 400_000, 300 + i);
    }
    set_tree_times(&src);
    remote.create(&["-o", &root, s(&src)]);
    let target = remote.scratch().join("out");
    assert_code(&remote.restore("latest", &target, &["-o", &root]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());

    // The directory is an ordinary local repository: packs under data/XX/,
    // no temporary files left.
    let mut local = Snap::new();
    local.repo = dir.clone();
    assert!(!packs(&dir).is_empty());
    assert!(files_under(&dir)
        .iter()
        .all(|p| !p.file_name().unwrap().to_string_lossy().starts_with(".tmp-")));
    local.ok(&["verify", "--read-data"]);
    // And what the local backend adds, the OpenDAL one reads.
    write_random_file(&src.join("f9.bin"), 300_000, 399);
    set_tree_times(&src);
    local.create(&[s(&src)]);
    assert_eq!(
        remote.run_code(&["-o", &root, "snapshots", "--json"], 0).status.code(),
        Some(0)
    );
    remote.ok(&["-o", &root, "verify", "--read-data"]);
    let target = remote.scratch().join("out2");
    assert_code(&remote.restore("latest", &target, &["-o", &root]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());

    // A second init on the same root is refused.
    let out = remote.run(&["-o", &root, "init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));

    // A service this build does not have, and an option the service does not know.
    let mut other = Snap::new();
    other.repo = PathBuf::from("opendal:nosuchservice");
    assert_code(&other.run(&["snapshots"]), 2);
}
