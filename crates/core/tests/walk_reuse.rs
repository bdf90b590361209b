//! A re-backup takes the parent snapshot's tree id for a directory whose
//! entries are all unchanged instead of encoding and storing it again
//! (`Archiver::save_dir_tree`): the ids it ends with must be exactly those
//! a backup without a parent computes from scratch, and a directory with a
//! changed file, mode or extended attribute must get a new tree.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use snap_core::archiver::{self, ArchiveOptions, ArchiveResult, ParentChoice, Source};
use snap_core::backend::LocalBackend;
use snap_core::id::BlobId;
use snap_core::keys::{KdfParams, Password};
use snap_core::lock::LockKind;
use snap_core::progress::NoProgress;
use snap_core::repo::{InitOptions, Repository};
use snap_core::tree::{self, Node};

static NEVER_CANCELLED: AtomicBool = AtomicBool::new(false);

fn init(dir: &Path) -> Repository {
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(
        Arc::new(LocalBackend::new(dir.join("repo"))),
        Some(&Password::new("walk")),
        &options,
        &dir.join("cache"),
    )
    .unwrap()
}

fn backup(repo: &Repository, source: &Path, parent: ParentChoice) -> ArchiveResult {
    let lock = repo
        .lock(LockKind::Shared, "create", Duration::ZERO, &NEVER_CANCELLED)
        .unwrap();
    let options = ArchiveOptions {
        source: Source::Paths(vec![source.to_path_buf()]),
        excludes: vec![],
        exclude_files: vec![],
        one_file_system: false,
        tags: vec![],
        host: "test".into(),
        parent,
        compression: None,
        threads: 2,
        // Records of finished entries are kept (as `snap create` does), never written.
        checkpoint_interval: Some(Duration::from_secs(3600)),
        selection: Default::default(),
        description: None,
        dry_run: false,
        list_changes: false,
    };
    archiver::archive(repo, options, &NoProgress, &AtomicBool::new(false), &lock).unwrap()
}

/// The node at `path` (a directory of the source) in a snapshot's tree.
fn node(repo: &Repository, root: &BlobId, path: &Path) -> Node {
    let components = tree::path_components(path).unwrap();
    tree::lookup_path(repo, root, &components).unwrap().unwrap()
}

#[test]
fn unchanged_directories_keep_their_tree_and_changed_ones_get_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    for (sub, files) in [("d1", 3), ("d2", 2), ("d3", 2), ("d4/deeper", 2)] {
        std::fs::create_dir_all(source.join(sub)).unwrap();
        for f in 0..files {
            std::fs::write(source.join(sub).join(format!("f{f}")), format!("{sub} {f} ").repeat(50)).unwrap();
        }
    }
    std::fs::write(source.join("top"), b"top").unwrap();
    let repo = init(dir.path());

    let first = backup(&repo, &source, ParentChoice::None);
    let again = backup(&repo, &source, ParentChoice::Latest);
    assert_eq!(again.snapshot.summary.files_unmodified, 10);
    // The source's own tree (the directories above it, such as the temporary
    // directory, may change meanwhile).
    let subtree = |result: &ArchiveResult| node(&repo, &result.snapshot.tree, &source).subtree.unwrap();
    assert_eq!(
        subtree(&again),
        subtree(&first),
        "an unchanged re-backup ends with the same tree"
    );

    // One file of d1 changed; d2's mode; an extended attribute on d3 (when
    // the filesystem takes user attributes); d4 untouched.
    std::fs::write(source.join("d1/f1"), b"changed").unwrap();
    std::fs::set_permissions(source.join("d2"), std::fs::Permissions::from_mode(0o751)).unwrap();
    let xattr_set = xattr::set(source.join("d3"), "user.walk", b"v").is_ok();
    if !xattr_set {
        println!("skipping the extended attribute part: the filesystem refuses user attributes");
    }
    let changed = backup(&repo, &source, ParentChoice::Latest);
    assert_eq!(changed.snapshot.summary.files_changed, 1);
    // The same tree as a backup that encodes every directory from scratch.
    let scratch = backup(&repo, &source, ParentChoice::None);
    assert_eq!(
        subtree(&changed),
        subtree(&scratch),
        "trees taken from the parent are the trees a backup without one writes"
    );
    assert_ne!(subtree(&changed), subtree(&first));

    let (old, new) = (&first.snapshot.tree, &changed.snapshot.tree);
    let at = |root: &BlobId, sub: &str| node(&repo, root, &source.join(sub));
    assert_ne!(
        at(old, "d1").subtree,
        at(new, "d1").subtree,
        "a directory whose file changed has a new tree"
    );
    assert_eq!(at(new, "d2").mode, 0o751, "a directory's new mode is seen");
    assert_eq!(
        at(old, "d2").subtree,
        at(new, "d2").subtree,
        "its entries did not change"
    );
    if xattr_set {
        let attrs = at(new, "d3").xattrs;
        assert!(
            attrs.iter().any(|a| a.name == b"user.walk" && a.value == b"v"),
            "a directory's new extended attribute is seen: {attrs:?}"
        );
    }
    assert_eq!(
        at(old, "d4").subtree,
        at(new, "d4").subtree,
        "an untouched directory keeps its tree"
    );
    assert_eq!(at(old, "d4/deeper").subtree, at(new, "d4/deeper").subtree);
    assert_eq!(
        node(&repo, new, &source.join("d1/f1")).size,
        7,
        "the changed file's new node is in the tree"
    );
}
