//! The S3 backend against a real S3 server on loopback: moto's server
//! (PyPI `moto[server]`, installed by `.ci/run`), started by each test on a
//! free port and killed when the test ends. Each test has its own server,
//! since some kill or stop theirs.
//!
//! Covered: the whole life of a repository on S3 (bit-exact restore,
//! `verify --read-data`, `forget --prune`); two hosts backing up into one
//! bucket at once; locks; and bad input: a missing bucket, a bucket that
//! holds something else, refused credentials, a server killed mid-backup,
//! and a server that stops answering (a timeout, not a hang; the next run
//! reuses what was uploaded).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::*;

/// A moto S3 server on 127.0.0.1, killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Moto {
    /// Starts a server with `env` (moto's settings); `None`, with a note,
    /// where moto is not installed.
    pub fn start(env: &[(&str, &str)]) -> Option<Moto> {
        Self::start_on(free_port(), env)
    }

    fn start_on(port: u16, env: &[(&str, &str)]) -> Option<Moto> {
        // Through the interpreter, not the `moto_server` script: pip puts
        // scripts where PATH may not look (pyenv shims, ~/.local/bin).
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // If the test process dies without unwinding, the server goes too.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                super::util::skip_note(format!(
                    "note: cannot start moto_server ({e}); `pip install 'moto[server]'`; test skipped"
                ));
                return None;
            }
        };
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        // A bare connection, not a request: with INITIAL_NO_AUTH_ACTION_COUNT
        // every request counts.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One unsigned HTTP/1.1 request; the status code and body. moto
    /// accepts unsigned requests unless told to check credentials.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
        let body_at = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(response.len());
        Ok((status, response[body_at..].to_vec()))
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self
            .request("PUT", &format!("/{bucket}"), &[], b"")
            .expect("create bucket");
        assert_eq!(status, 200, "create bucket: {}", String::from_utf8_lossy(&body));
    }

    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let (status, _) = self
            .request("PUT", &format!("/{bucket}/{key}"), &[], data)
            .expect("put");
        assert_eq!(status, 200);
    }

    /// The keys under `prefix` (one page: tests store fewer than 1,000).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), &[], b"")
            .expect("list");
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body);
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect()
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal moto_server");
    }

    /// SIGSTOP: the server keeps its sockets and answers nothing.
    pub fn stall(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials moto accepts when it does not check them.
const TEST_KEYS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];

/// A handle on `s3:ENDPOINT/BUCKET[/PREFIX]` (the bucket is not created).
fn s3_snap(moto: &Moto, bucket_and_prefix: &str) -> Snap {
    let mut snap = Snap::new();
    snap.repo = PathBuf::from(format!("s3:{}/{bucket_and_prefix}", moto.endpoint()));
    // The test's own AWS settings must not leak in.
    snap.env = TEST_KEYS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    snap.env.push(("AWS_DEFAULT_REGION".into(), "us-east-1".into()));
    snap.env.push(("AWS_SESSION_TOKEN".into(), String::new()));
    snap
}

fn source_tree(dir: &Path, files: u64, size: u64, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        write_random_file(&dir.join(format!("file{i}.bin")), size, seed + i);
    }
    fs::write(dir.join("small.txt"), b"a small file\n").unwrap();
    set_tree_times(dir);
}

/// The single line of an error, checked for what a user must see.
#[track_caller]
fn one_line_error(out: &std::process::Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty() && lines.len() <= 3,
        "expected a short error, got:\n{}",
        describe(out)
    );
    assert!(!panicked(out), "{}", describe(out));
    assert!(!err.contains("testing"), "a credential in the message:\n{err}");
    err
}

#[test]
fn a_repository_lives_its_whole_life_on_s3() {
    let Some(moto) = Moto::start(&[]) else { return };
    moto.create_bucket("backups");
    let snap = s3_snap(&moto, "backups/hosts/ana");
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);

    let src = snap.scratch().join("src");
    source_tree(&src, 3, 700_000, 1);
    let first = snap.create(&[s(&src)]);
    assert!(summary(&first, "files_new") >= 4, "{first}");
    // The layout is the local one, under the prefix.
    let keys = moto.keys("backups", "hosts/ana/");
    assert!(keys.iter().any(|k| k == "hosts/ana/config"), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("hosts/ana/keys/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("hosts/ana/snapshots/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("hosts/ana/index/")), "{keys:?}");
    let packs: Vec<_> = keys.iter().filter(|k| k.starts_with("hosts/ana/data/")).collect();
    assert!(!packs.is_empty(), "{keys:?}");
    for pack in &packs {
        let name = pack.rsplit('/').next().unwrap();
        assert_eq!(**pack, format!("hosts/ana/data/{}/{name}", &name[..2]));
    }
    assert!(keys.iter().all(|k| !k.contains("/.tmp-")), "{keys:?}");

    let target = snap.scratch().join("out");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
    snap.ok(&["verify", "--read-data"]);

    // A second snapshot, then forget the first and prune its data.
    fs::remove_file(src.join("file0.bin")).unwrap();
    write_random_file(&src.join("file3.bin"), 500_000, 9);
    set_tree_times(&src);
    snap.create(&[s(&src)]);
    assert_eq!(snap.snapshots().len(), 2);
    snap.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(snap.snapshots().len(), 1);
    snap.ok(&["verify", "--read-data"]);
    let target = snap.scratch().join("out2");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
    // The pruned pack space is gone from the bucket, not only from the index.
    let after: Vec<_> = moto.keys("backups", "hosts/ana/data/").into_iter().collect();
    assert!(
        after.len() < packs.len() + 3,
        "prune deleted nothing: {} -> {}",
        packs.len(),
        after.len()
    );
}

#[test]
fn two_hosts_back_up_into_one_bucket_at_once() {
    let Some(moto) = Moto::start(&[]) else { return };
    moto.create_bucket("shared");
    let snap = s3_snap(&moto, "shared");
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let common = snap.scratch().join("common");
    source_tree(&common, 2, 600_000, 20);
    let mut children = Vec::new();
    for host in ["alpha", "beta"] {
        let dir = snap.scratch().join(host);
        source_tree(&dir, 2, 400_000, if host == "alpha" { 30 } else { 40 });
        let child = snap
            .command()
            .args(["create", "--json", "--host", host, s(&common), s(&dir)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((host, dir, child));
    }
    for (host, _, child) in children.iter_mut() {
        let out = child.wait().unwrap();
        assert!(out.success(), "create on {host} failed");
    }
    let snapshots = snap.snapshots();
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    snap.ok(&["verify", "--read-data"]);
    for (host, dir, _) in &children {
        let target = snap.scratch().join(format!("out-{host}"));
        assert_code(&snap.restore("latest", &target, &["--host", host]), 0);
        assert_same_tree(dir, &restored(&target, dir), Compare::all());
        assert_same_tree(&common, &restored(&target, &common), Compare::all());
    }
}

#[test]
fn an_exclusive_operation_waits_for_a_backup_on_s3() {
    let Some(moto) = Moto::start(&[]) else { return };
    moto.create_bucket("locked");
    let snap = s3_snap(&moto, "locked");
    snap.init_repo(&[]);
    // A backup reading from a pipe the test holds open keeps its lock.
    let mut backup = snap
        .command()
        .args(["create", "--json", "--stdin", "--stdin-filename", "db.dump"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = backup.stdin.take().unwrap();
    stdin.write_all(&random_bytes(100_000, 5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while moto.keys("locked", "locks/").is_empty() {
        assert!(Instant::now() < deadline, "the backup never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = snap.run(&["forget", "--keep-last", "1", "--prune"]);
    assert_code(&out, 11);
    one_line_error(&out);
    drop(stdin);
    let done = backup.wait_with_output().unwrap();
    assert_code(&done, 0);
    // The lock is released: the exclusive operation now runs.
    assert!(moto.keys("locked", "locks/").is_empty());
    snap.ok(&["forget", "--keep-last", "1", "--prune"]);
    snap.ok(&["verify", "--read-data"]);
}

#[test]
fn bad_buckets_are_one_line_errors() {
    let Some(moto) = Moto::start(&[]) else { return };
    let src = tempdir();
    fs::write(src.path().join("f"), b"x").unwrap();

    // No such bucket: for init, and for a command that expects a repository.
    let missing = s3_snap(&moto, "nosuchbucket");
    let out = missing.run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_code(&out, 1);
    let err = one_line_error(&out);
    assert!(err.contains("NoSuchBucket") || err.contains("does not exist"), "{err}");
    let out = missing.run(&["snapshots"]);
    assert_code(&out, 1);
    let err = one_line_error(&out);
    assert!(err.contains("NoSuchBucket") || err.contains("does not exist"), "{err}");

    // A bucket holding something that is not a snap repository.
    moto.create_bucket("photos");
    moto.put("photos", "2024/img001.jpg", b"\xff\xd8\xff not really a jpeg");
    moto.put("photos", "index.html", b"<html></html>");
    let other = s3_snap(&moto, "photos");
    let out = other.run(&["snapshots"]);
    assert_code(&out, 10);
    one_line_error(&out);
    let out = other.run(&["create", s(src.path())]);
    assert_code(&out, 10);

    // An unknown option is a usage error, before any request.
    let out = other.run(&["-o", "regoin=eu", "snapshots"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("regoin"), "{}", describe(&out));

    // A port nobody listens on: a one-line failure, not a hang.
    let mut closed = s3_snap(&moto, "photos");
    closed.repo = PathBuf::from(format!("s3:http://127.0.0.1:{}/photos", free_port()));
    let started = Instant::now();
    let out = closed.run(&["-o", "timeout=5", "snapshots"]);
    assert_code(&out, 1);
    one_line_error(&out);
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

#[test]
fn refused_credentials_are_a_one_line_error() {
    // After one unauthenticated request (creating the bucket), moto checks
    // every signature against its IAM users, of which there are none.
    let Some(moto) = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]) else {
        return;
    };
    moto.create_bucket("private");
    let snap = s3_snap(&moto, "private");
    let out = snap.run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_code(&out, 1);
    let err = one_line_error(&out);
    assert!(
        err.contains("permission denied")
            || err.contains("InvalidAccessKeyId")
            || err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert_code(&snap.run(&["snapshots"]), 1);
    // Only one of the two keys set: refused before any request.
    let mut half = s3_snap(&moto, "private");
    half.env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    half.env.push(("AWS_SECRET_ACCESS_KEY".into(), String::new()));
    let out = half.run(&["snapshots"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("AWS_SECRET_ACCESS_KEY"), "{}", describe(&out));
}

/// Bytes under `data/` in the bucket.
fn pack_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    moto.keys(bucket, "data/")
}

#[test]
fn a_stalled_server_times_out_and_the_next_run_reuses_the_uploads() {
    let Some(moto) = Moto::start(&[]) else { return };
    moto.create_bucket("slow");
    let snap = s3_snap(&moto, "slow");
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = snap.scratch().join("src");
    source_tree(&src, 6, 2_000_000, 50);

    let mut child = snap
        .command()
        .args(["-o", "timeout=3", "create", s(&src)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the server once some packs are stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pack_keys(&moto, "slow").len() < 2 {
        assert!(Instant::now() < deadline, "no pack was uploaded");
        if child.try_wait().unwrap().is_some() {
            panic!("the backup finished before the server was stopped: make the source larger");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    moto.stall();
    let stalled_at = Instant::now();
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        if stalled_at.elapsed() > Duration::from_secs(150) {
            moto.resume();
            let _ = child.kill();
            panic!("snap hung on a stalled server for 150 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = stalled_at.elapsed();
    moto.resume();
    assert_code(&out, 1);
    let err = one_line_error(&out);
    assert!(err.contains("timeout") || err.contains("timed out"), "{err}");
    // Each request gets 5 attempts of 3 s with about 7.5 s of backoff
    // between them (~23 s), and a few requests (the packs in flight, then
    // the lock's removal) give up one after another.
    assert!(waited < Duration::from_secs(120), "took {waited:?} to give up");
    assert!(
        moto.keys("slow", "snapshots/").is_empty(),
        "a snapshot from the failed run"
    );

    // The next run finishes, and reuses what the first one uploaded.
    let uploaded = pack_keys(&moto, "slow");
    let again = snap.create(&[s(&src)]);
    let after = pack_keys(&moto, "slow");
    let kept = uploaded.iter().filter(|k| after.contains(k)).count();
    assert!(kept > 0, "none of {} uploaded packs survived: {again}", uploaded.len());
    snap.ok(&["prune"]);
    let pruned = pack_keys(&moto, "slow");
    let reused = uploaded.iter().filter(|k| pruned.contains(k)).count();
    assert!(reused > 0, "no pack of the stalled run is used after prune");
    snap.ok(&["verify", "--read-data"]);
    let target = snap.scratch().join("out");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}

#[test]
fn a_server_killed_mid_backup_fails_the_backup_cleanly() {
    let Some(mut moto) = Moto::start(&[]) else { return };
    moto.create_bucket("doomed");
    let snap = s3_snap(&moto, "doomed");
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = snap.scratch().join("src");
    source_tree(&src, 6, 2_000_000, 70);
    let child = snap
        .command()
        .args(["-o", "timeout=5", "create", s(&src)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pack_keys(&moto, "doomed").len() < 2 {
        assert!(Instant::now() < deadline, "no pack was uploaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = moto.child.kill();
    let _ = moto.child.wait();
    let killed_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 1);
    one_line_error(&out);
    assert!(
        killed_at.elapsed() < Duration::from_secs(45),
        "{:?}",
        killed_at.elapsed()
    );
    // moto keeps everything in memory: a server started again on the same
    // port is empty, and says so as a missing bucket, not a crash.
    let Some(again) = Moto::start_on(moto.port, &[]) else {
        return;
    };
    let out = snap.run(&["snapshots"]);
    assert_code(&out, 1);
    one_line_error(&out);
    drop(again);
}
