//! The `rest:` backend against a real `snap serve` (in this process, on a
//! loopback port): every `Backend` method, and the errors each refusal maps to.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use snap_core::backend::{Backend, BackendError, ObjectKind};
use snap_remote::rest::RestBackend;

static STOP: AtomicBool = AtomicBool::new(false);

fn start(root: &std::path::Path, append_only: bool) -> String {
    let options = snap_server::ServeOptions {
        root: root.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        append_only,
        private_repos: false,
        htpasswd: None,
        tls: None,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        snap_server::serve(options, &STOP, |addr, _| tx.send(addr).unwrap()).unwrap();
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server listens");
    format!("http://{addr}/")
}

fn hashed(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

#[test]
fn every_backend_method_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path(), false);
    let backend = RestBackend::open(&format!("{url}repo/"), &Vec::new()).unwrap();
    assert!(backend.list(ObjectKind::Snapshot).unwrap().is_empty());
    assert!(!backend.exists(ObjectKind::Config, "config").unwrap());
    backend.create().unwrap();
    backend.write_new(ObjectKind::Config, "config", b"{}").unwrap();
    assert!(matches!(
        backend.write_new(ObjectKind::Config, "config", b"{}"),
        Err(BackendError::AlreadyExists { .. })
    ));
    let pack = b"0123456789".to_vec();
    let name = hashed(&pack);
    backend.write(ObjectKind::Pack, &name, &pack).unwrap();
    // The same bytes again: fine (names are hashes).
    backend.write(ObjectKind::Pack, &name, &pack).unwrap();
    assert_eq!(backend.read(ObjectKind::Pack, &name).unwrap(), pack);
    assert_eq!(backend.read_range(ObjectKind::Pack, &name, 2, 3).unwrap(), b"234");
    assert!(matches!(
        backend.read_range(ObjectKind::Pack, &name, 8, 3),
        Err(BackendError::ShortRead { size: 10, .. })
    ));
    let listed = backend.list(ObjectKind::Pack).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].size), (name.as_str(), 10));
    assert_eq!(backend.list(ObjectKind::Config).unwrap()[0].size, 2);
    // A pack under a name that is not its hash: refused, permanently.
    let wrong = hashed(b"other");
    let err = backend.write(ObjectKind::Pack, &wrong, &pack).unwrap_err();
    assert!(matches!(err, BackendError::Remote { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("BLAKE3"), "{err}");
    // Locks: the server's clock.
    let lock = "ab".repeat(32);
    backend.write(ObjectKind::Lock, &lock, b"lock").unwrap();
    let modified = backend
        .modified(ObjectKind::Lock, &lock)
        .unwrap()
        .expect("a modification time");
    let age = SystemTime::now().duration_since(modified).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{age:?}");
    assert!(matches!(
        backend.write(ObjectKind::Lock, &lock, b"other"),
        Err(BackendError::AlreadyExists { .. })
    ));
    backend.delete(ObjectKind::Lock, &lock).unwrap();
    assert!(backend.read(ObjectKind::Lock, &lock).unwrap_err().is_not_found());
    assert!(backend.delete(ObjectKind::Lock, &lock).unwrap_err().is_not_found());
    assert!(!backend.append_only());
    // A server that is gone: transient.
    let gone = RestBackend::open("http://127.0.0.1:1/", &Vec::new()).unwrap();
    assert!(gone.read(ObjectKind::Config, "config").unwrap_err().is_transient());
}

#[test]
fn an_append_only_server_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let url = start(dir.path(), true);
    let backend = RestBackend::open(&url, &Vec::new()).unwrap();
    backend.create().unwrap();
    assert!(backend.append_only());
    let data = b"snapshot".to_vec();
    let name = hashed(&data);
    backend.write(ObjectKind::Snapshot, &name, &data).unwrap();
    let err = backend.delete(ObjectKind::Snapshot, &name).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(backend.read(ObjectKind::Snapshot, &name).unwrap(), data);
    // Its own lock it may remove.
    let lock = "cd".repeat(32);
    backend.write(ObjectKind::Lock, &lock, b"mine").unwrap();
    backend.delete(ObjectKind::Lock, &lock).unwrap();
}
