//! A hostile repository (trees crafted by someone with the key, or a
//! repository received from elsewhere) must never make restore write outside
//! its target, follow a planted symlink, or crash.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use snap_core::backend::LocalBackend;
use snap_core::id::BlobId;
use snap_core::keys::{KdfParams, Password};
use snap_core::pack::BlobKind;
use snap_core::packer::Packer;
use snap_core::progress::NoProgress;
use snap_core::repo::{InitOptions, Repository};
use snap_core::restorer::{self, RestoreOptions, RestoreResult};
use snap_core::snapshot::{Snapshot, Summary};
use snap_core::tree::{Node, NodeKind, Tree};

struct Hostile {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl Hostile {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let options = InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        };
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
        let repo = Repository::init(backend, Some(&Password::new("pw")), &options, &dir.path().join("cache")).unwrap();
        Hostile { dir, repo }
    }

    /// Stores trees (bottom-up: children first) bypassing every check, and
    /// a snapshot of the last one.
    fn snapshot(&self, build: impl FnOnce(&dyn Fn(&Tree) -> BlobId) -> BlobId) -> Snapshot {
        let packer = Packer::new(&self.repo, self.repo.config().compression).unwrap();
        let root = build(&|tree: &Tree| packer.add(BlobKind::Tree, &tree.encode()).unwrap().0);
        packer.finish().unwrap();
        Snapshot {
            time: jiff::Timestamp::now(),
            host: "evil".into(),
            username: "evil".into(),
            paths: vec!["/x".into()],
            tags: vec![],
            tree: root,
            parent: None,
            program_version: "evil".into(),
            summary: Summary::default(),
            description: None,
            original: None,
        }
    }

    fn data(&self, bytes: &[u8]) -> BlobId {
        let packer = Packer::new(&self.repo, self.repo.config().compression).unwrap();
        let id = packer.add(BlobKind::Data, bytes).unwrap().0;
        packer.finish().unwrap();
        id
    }

    fn restore(&self, snapshot: &Snapshot, target: &Path) -> snap_core::Result<RestoreResult> {
        restorer::restore(
            &self.repo,
            snapshot,
            &RestoreOptions {
                target: target.to_path_buf(),
                ..RestoreOptions::default()
            },
            &NoProgress,
            &AtomicBool::new(false),
        )
    }

    /// Everything under the test directory outside `target` and the repository.
    fn outside(&self, target: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.starts_with(target) || path.starts_with(self.dir.path().join("repo")) {
                    continue;
                }
                if path.starts_with(self.dir.path().join("cache")) {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path.clone());
                }
                out.push(path);
            }
        }
        out.sort();
        out
    }
}

fn file(name: &[u8], content: Vec<BlobId>, size: u64) -> Node {
    let mut node = Node::new(name.to_vec(), NodeKind::File);
    node.mode = 0o644;
    node.content = content;
    node.size = size;
    node
}

#[test]
fn hostile_names_are_refused_and_nothing_escapes() {
    for bad in [&b".."[..], b".", b"a/../../escape", b"/etc/passwd", b"x\0y", b""] {
        let hostile = Hostile::new();
        let blob = hostile.data(b"owned\n");
        let snapshot = hostile.snapshot(|save| {
            save(&Tree {
                nodes: vec![file(bad, vec![blob], 6)],
            })
        });
        let target = hostile.dir.path().join("target");
        let before = hostile.outside(&target);
        let result = hostile.restore(&snapshot, &target);
        assert!(result.is_err(), "{:?} was accepted", String::from_utf8_lossy(bad));
        assert_eq!(hostile.outside(&target), before, "nothing written outside the target");
    }
}

#[test]
fn hostile_subtree_is_reported_and_the_rest_restored() {
    let hostile = Hostile::new();
    let blob = hostile.data(b"fine\n");
    let snapshot = hostile.snapshot(|save| {
        let evil = save(&Tree {
            nodes: vec![file(b"..", vec![blob], 5)],
        });
        let mut dir = Node::new(b"evil".to_vec(), NodeKind::Dir);
        dir.mode = 0o755;
        dir.subtree = Some(evil);
        save(&Tree {
            nodes: vec![dir, file(b"good.txt", vec![blob], 5)],
        })
    });
    let target = hostile.dir.path().join("target");
    let before = hostile.outside(&target);
    let result = hostile.restore(&snapshot, &target).unwrap();
    assert!(
        result.errors.iter().any(|(p, _)| p.ends_with("evil")),
        "{:?}",
        result.errors
    );
    assert_eq!(std::fs::read(target.join("good.txt")).unwrap(), b"fine\n");
    assert_eq!(hostile.outside(&target), before);
}

#[test]
fn planted_symlink_is_never_followed() {
    let hostile = Hostile::new();
    let outside = hostile.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    let blob = hostile.data(b"overwritten!");
    // First snapshot: `d` is a symlink to the outside directory, and `f` a
    // symlink to the victim file.
    let first = hostile.snapshot(|save| {
        let mut d = Node::new(b"d".to_vec(), NodeKind::Symlink);
        d.link_target = outside.as_os_str().as_encoded_bytes().to_vec();
        let mut f = Node::new(b"f".to_vec(), NodeKind::Symlink);
        f.link_target = outside.join("victim").as_os_str().as_encoded_bytes().to_vec();
        save(&Tree { nodes: vec![d, f] })
    });
    // Second snapshot: `d` is a directory with a file `victim`, and `f` a file.
    let second = hostile.snapshot(|save| {
        let inner = save(&Tree {
            nodes: vec![file(b"victim", vec![blob], 12)],
        });
        let mut d = Node::new(b"d".to_vec(), NodeKind::Dir);
        d.mode = 0o755;
        d.subtree = Some(inner);
        save(&Tree {
            nodes: vec![d, file(b"f", vec![blob], 12)],
        })
    });
    let target = hostile.dir.path().join("target");
    hostile.restore(&first, &target).unwrap();
    // Restoring the second over the first must not write through the symlinks.
    let result = hostile.restore(&second, &target).unwrap();
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");
    assert!(
        result.errors.iter().any(|(p, _)| p.ends_with("d")),
        "{:?}",
        result.errors
    );
    // `f` was a symlink: it is replaced by the file, not written through.
    assert!(!std::fs::symlink_metadata(target.join("f")).unwrap().is_symlink());
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"overwritten!");
}

#[test]
fn absurd_sizes_and_dangling_blobs_are_reported_not_fatal() {
    let hostile = Hostile::new();
    let blob = hostile.data(b"tiny");
    let snapshot = hostile.snapshot(|save| {
        save(&Tree {
            nodes: vec![
                file(b"huge", vec![blob], 1 << 62),
                file(b"missing", vec![BlobId([7; 32])], 10),
                file(b"ok", vec![blob], 4),
            ],
        })
    });
    let target = hostile.dir.path().join("target");
    let result = hostile.restore(&snapshot, &target).unwrap();
    let named: Vec<String> = result
        .errors
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        named.contains(&"huge".to_string()) && named.contains(&"missing".to_string()),
        "{named:?}"
    );
    assert_eq!(std::fs::read(target.join("ok")).unwrap(), b"tiny");
}
