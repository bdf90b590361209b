//! `snap serve` and the `rest:` client: backups and restores through the
//! server are bit-exact; an append-only server lets clients back up and
//! restore but not forget or prune; a hostile client speaking raw HTTP
//! (deletes, overwrites, traversal, mis-named, oversized and truncated
//! uploads, wrong credentials, another user's repository) is refused with
//! the documented status and changes nothing; HTTPS with a private CA.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::util::*;

/// A running `snap serve`, killed on drop.
struct Server {
    child: Child,
    /// `http(s)://127.0.0.1:PORT/`
    url: String,
    addr: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_snap"))
            .arg("-r")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("SNAP_REPOSITORY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn snap serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the serve line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches(',')
            .to_string();
        let addr = url.split("://").nth(1).unwrap().trim_end_matches('/').to_string();
        Server { child, url, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of `url` (a `Snap` whose location is `rest:URL`), with its own cache.
fn client(url: &str) -> Snap {
    let mut snap = Snap::new();
    snap.repo = PathBuf::from(format!("rest:{url}"));
    snap
}

fn source_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    write_random_file(&src.join("big.bin"), 3 * MIB, 1);
    write_random_file(&src.join("sub/small.bin"), 5000, 2);
    std::fs::write(src.join("sub/empty"), b"").unwrap();
    src
}

#[test]
fn backup_restore_verify_through_the_server() {
    let dir = tempdir();
    let served = dir.path().join("served");
    let server = Server::start(&served, &[]);
    let snap = client(&server.url);
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = source_tree(snap.scratch());
    snap.create(&[s(&src)]);
    // An unchanged second backup dedups against what the server holds.
    let second = snap.create(&[s(&src)]);
    assert_eq!(summary(&second, "files_unmodified"), 3, "{second}");
    assert_eq!(summary(&second, "bytes_read"), 0, "{second}");
    let target = snap.scratch().join("restore");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
    snap.ok(&["verify", "--read-data"]);
    // The served directory is an ordinary local repository.
    let mut local = Snap::new();
    local.repo = served.clone();
    local.ok(&["verify", "--read-data"]);
    assert_eq!(local.snapshots().len(), 2);
    // And forget works through a server that is not append-only.
    snap.ok(&["forget", "--keep-last", "1"]);
    assert_eq!(snap.snapshots().len(), 1);
}

#[test]
fn a_missing_repository_and_bad_credentials_are_one_line_errors() {
    let dir = tempdir();
    let served = dir.path().join("served");
    let htpasswd = write_htpasswd(dir.path(), &[("ana", "s3cret")]);
    let server = Server::start(&served, &["--htpasswd", s(&htpasswd)]);
    let url = &server.url;
    let good = client(&url.replace("http://", "http://ana:s3cret@"));
    // No repository yet: exit 10.
    let out = good.run_code(&["snapshots"], 10);
    assert!(stderr(&out).contains("is not a snap repository"), "{}", describe(&out));
    good.init_repo(&[]);
    good.ok(&["snapshots"]);
    // Credentials from options work too.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let by_option = client(url);
    by_option.ok(&[
        "-o",
        "user=ana",
        "-o",
        &format!("password-file={}", s(&pw)),
        "snapshots",
    ]);
    // A wrong password: exit 1, the reason, and never the password.
    let bad = client(&url.replace("http://", "http://ana:hunter2@"));
    let out = bad.run_code(&["snapshots"], 1);
    let err = stderr(&out);
    assert!(err.contains("refused the credentials"), "{}", describe(&out));
    assert!(!err.contains("hunter2"), "{}", describe(&out));
    assert_eq!(err.trim().lines().count(), 1, "{}", describe(&out));
}

#[test]
fn append_only_allows_backup_and_restore_but_not_forget_or_prune() {
    let dir = tempdir();
    let served = dir.path().join("served");
    let server = Server::start(&served, &["--append-only"]);
    let snap = client(&server.url);
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = source_tree(snap.scratch());
    snap.create(&[s(&src)]);
    std::fs::write(src.join("sub/new"), b"more").unwrap();
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("restore");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());

    let before = contents_under(&served);
    for args in [
        &["forget", "--keep-last", "1"][..],
        &["prune"][..],
        &["forget", "--keep-last", "1", "--prune"][..],
    ] {
        let out = snap.run_code(args, 1);
        let err = stderr(&out);
        assert!(err.contains("append-only"), "{args:?}: {}", describe(&out));
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {}", describe(&out));
    }
    assert!(contents_under(&served) == before, "the repository changed");
    assert_eq!(snap.snapshots().len(), 2);

    // Where the repository is local, forget and prune work.
    let mut local = Snap::new();
    local.repo = served.clone();
    local.ok(&["forget", "--keep-last", "1", "--prune"]);
    local.ok(&["verify", "--read-data"]);
    assert_eq!(snap.snapshots().len(), 1);
}

fn write_htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("htpasswd");
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// One raw HTTP/1.1 request; the status code and body (`None`: no answer).
fn raw(addr: &str, method: &str, path: &str, auth: Option<(&str, &str)>, body: &[u8]) -> (Option<u16>, String) {
    raw_with(addr, method, path, auth, &[], body, None)
}

fn raw_with(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[&str],
    body: &[u8],
    content_length: Option<u64>,
) -> (Option<u16>, String) {
    let (status, body) = raw_bytes(addr, method, path, auth, headers, body, content_length);
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn raw_bytes(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    headers: &[&str],
    body: &[u8],
    content_length: Option<u64>,
) -> (Option<u16>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        head.push_str(&format!("Authorization: Basic {}\r\n", base64(&format!("{u}:{p}"))));
    }
    for h in headers {
        head.push_str(&format!("{h}\r\n"));
    }
    let length = content_length.unwrap_or(body.len() as u64);
    if length > 0 || method == "POST" {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    if content_length.is_some() {
        // A client that dies mid-upload.
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let status = answer
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok());
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| answer[at + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

fn base64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn first_file(dir: &Path) -> (String, Vec<u8>) {
    let path = files_under(dir)
        .into_iter()
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap_or_else(|| panic!("no file under {}", dir.display()));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    (name, std::fs::read(&path).unwrap())
}

#[test]
fn a_hostile_client_is_refused_and_changes_nothing() {
    let dir = tempdir();
    let served = dir.path().join("served");
    let htpasswd = write_htpasswd(dir.path(), &[("ana", "s3cret"), ("bob", "hunter2")]);
    let server = Server::start(
        &served,
        &["--append-only", "--private-repos", "--htpasswd", s(&htpasswd)],
    );
    let ana = Some(("ana", "s3cret"));
    let bob = Some(("bob", "hunter2"));
    let snap = client(&format!("{}ana/", server.url.replace("http://", "http://ana:s3cret@")));
    snap.init_repo(&["--chunk-sizes", SMALL_CHUNKS, "--pack-size-mib", "1"]);
    let src = source_tree(snap.scratch());
    snap.create(&[s(&src)]);
    let repo = served.join("ana");
    // A lock someone else left (not written through this server process).
    let foreign_lock = "f0".repeat(32);
    std::fs::write(repo.join("locks").join(&foreign_lock), b"not ours").unwrap();
    let before = contents_under(&served);

    let a = server.addr.as_str();
    let (snapshot, snapshot_bytes) = first_file(&repo.join("snapshots"));
    let (pack, pack_bytes) = first_file(&repo.join("data"));
    let (index, _) = first_file(&repo.join("index"));
    let (key, _) = first_file(&repo.join("keys"));
    let config = std::fs::read(repo.join("config")).unwrap();
    let expect = |what: &str, (status, body): (Option<u16>, String), want: u16| {
        assert_eq!(status, Some(want), "{what}: {body}");
    };

    // Deletes (append-only).
    expect(
        "delete snapshot",
        raw(a, "DELETE", &format!("/ana/snapshots/{snapshot}"), ana, b""),
        403,
    );
    expect(
        "delete pack",
        raw(a, "DELETE", &format!("/ana/data/{pack}"), ana, b""),
        403,
    );
    expect(
        "delete index",
        raw(a, "DELETE", &format!("/ana/index/{index}"), ana, b""),
        403,
    );
    expect(
        "delete key",
        raw(a, "DELETE", &format!("/ana/keys/{key}"), ana, b""),
        403,
    );
    expect("delete config", raw(a, "DELETE", "/ana/config", ana, b""), 403);
    expect(
        "delete a foreign lock",
        raw(a, "DELETE", &format!("/ana/locks/{foreign_lock}"), ana, b""),
        403,
    );

    // Overwrites: other bytes under an existing name are refused; the very
    // same bytes are a harmless no-op.
    let other = b"ransom note".to_vec();
    expect(
        "overwrite pack",
        raw(a, "POST", &format!("/ana/data/{pack}"), ana, &other),
        400,
    );
    expect(
        "rewrite pack identically",
        raw(a, "POST", &format!("/ana/data/{pack}"), ana, &pack_bytes),
        200,
    );
    expect(
        "overwrite snapshot",
        raw(a, "POST", &format!("/ana/snapshots/{snapshot}"), ana, &other),
        400,
    );
    expect(
        "rewrite snapshot identically",
        raw(a, "POST", &format!("/ana/snapshots/{snapshot}"), ana, &snapshot_bytes),
        200,
    );
    expect("overwrite config", raw(a, "POST", "/ana/config", ana, &other), 409);
    expect(
        "rewrite config identically",
        raw(a, "POST", "/ana/config", ana, &config),
        409,
    );
    expect(
        "overwrite a lock",
        raw(a, "POST", &format!("/ana/locks/{foreign_lock}"), ana, &other),
        409,
    );

    // Traversal and malformed names.
    for path in [
        "/ana/data/../config".to_string(),
        "/ana/%2e%2e/config".to_string(),
        "/ana/data/%2e%2e%2fconfig".to_string(),
        "/%2e%2e/ana/config".to_string(),
        "/ana/../bob/config".to_string(),
        format!("/ana/data/{}/{}", &pack[..2], pack),
        format!("/ana/keys/.{}", &key[1..]),
        format!("/ana/keys/{}", key.to_uppercase()),
        "/ana/keys/..%2F..%2Fhtpasswd".to_string(),
        "/ana/snapshots/%00".to_string(),
    ] {
        expect(&format!("GET {path}"), raw(a, "GET", &path, ana, b""), 400);
        expect(&format!("POST {path}"), raw(a, "POST", &path, ana, &other), 400);
    }

    // A pack whose name is not its hash.
    let planted = random_bytes(100_000, 9);
    let wrong_name = hash_hex(b"something else");
    expect(
        "misnamed pack",
        raw(a, "POST", &format!("/ana/data/{wrong_name}"), ana, &planted),
        400,
    );
    expect(
        "misnamed index",
        raw(a, "POST", &format!("/ana/index/{wrong_name}"), ana, &planted),
        400,
    );

    // Oversized: a lock of 1 MiB, and a pack that claims 2 GiB.
    let big = random_bytes(1 << 20, 10);
    expect(
        "oversized lock",
        raw(a, "POST", &format!("/ana/locks/{}", "ab".repeat(32)), ana, &big),
        413,
    );
    let (status, _) = raw_with(
        a,
        "POST",
        &format!("/ana/data/{}", hash_hex(&big)),
        ana,
        &[],
        &big[..1000],
        Some(2 << 30),
    );
    assert_eq!(status, Some(413));

    // Truncated: half of the declared body, then the connection closes.
    let whole = random_bytes(2 << 20, 11);
    let name = hash_hex(&whole);
    let (status, _) = raw_with(
        a,
        "POST",
        &format!("/ana/data/{name}"),
        ana,
        &[],
        &whole[..1 << 20],
        Some(whole.len() as u64),
    );
    assert_ne!(status, Some(200));
    assert_ne!(status, Some(201));
    assert!(!repo.join("data").join(&name[..2]).join(&name).exists());

    // Credentials.
    let (status, body) = raw(a, "GET", "/ana/config", Some(("ana", "wrong")), b"");
    assert_eq!(status, Some(401));
    assert!(body.is_empty(), "a 401 says nothing more: {body:?}");
    expect("no credentials", raw(a, "GET", "/ana/config", None, b""), 401);
    expect(
        "unknown user",
        raw(a, "GET", "/ana/config", Some(("eve", "s3cret")), b""),
        401,
    );
    // Another user's repository (--private-repos), and the shared root.
    expect("bob reads ana", raw(a, "GET", "/ana/config", bob, b""), 403);
    expect("bob lists ana", raw(a, "GET", "/ana/snapshots/", bob, b""), 403);
    expect(
        "bob writes ana",
        raw(a, "POST", &format!("/ana/locks/{}", "cd".repeat(32)), bob, b"x"),
        403,
    );
    expect(
        "bob deletes ana",
        raw(a, "DELETE", &format!("/ana/snapshots/{snapshot}"), bob, b""),
        403,
    );
    expect("ana reads the root", raw(a, "GET", "/config", ana, b""), 403);

    // A client's own lock it may delete, even append-only.
    let lock = random_bytes(100, 12);
    let lock_name = "cd".repeat(32);
    expect(
        "write a lock",
        raw(a, "POST", &format!("/ana/locks/{lock_name}"), ana, &lock),
        201,
    );
    expect(
        "bob deletes ana's lock",
        raw(a, "DELETE", &format!("/ana/locks/{lock_name}"), bob, b""),
        403,
    );
    expect(
        "delete own lock",
        raw(a, "DELETE", &format!("/ana/locks/{lock_name}"), ana, b""),
        200,
    );

    // The legitimate reads still work: a range read answers 206.
    let (status, body) = raw_bytes(
        a,
        "GET",
        &format!("/ana/data/{pack}"),
        ana,
        &["Range: bytes=0-9"],
        b"",
        None,
    );
    assert_eq!(status, Some(206));
    assert_eq!(body, pack_bytes[..10]);

    assert!(contents_under(&served) == before, "the repository changed");
    std::fs::remove_file(repo.join("locks").join(&foreign_lock)).unwrap();
    let mut local = Snap::new();
    local.repo = repo.clone();
    local.ok(&["verify", "--read-data"]);
    snap.ok(&["verify"]);
}

#[test]
fn https_with_a_private_certificate_authority() {
    let dir = tempdir();
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    // A private CA, and a server certificate it signed for 127.0.0.1.
    let ca_key = dir.path().join("ca-key.pem");
    let csr = dir.path().join("server.csr");
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let steps: [Vec<&str>; 3] = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=snap test CA",
            "-keyout",
            s(&ca_key),
            "-out",
            s(&ca),
        ],
        vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&ca),
            "-CAkey",
            s(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            s(&ext),
            "-out",
            s(&cert),
        ],
    ];
    for args in steps {
        match Command::new("openssl").args(&args).output() {
            Ok(out) if out.status.success() => {}
            other => {
                super::util::skip_note(format!(
                    "note: openssl cannot make a test certificate ({other:?}); test skipped"
                ));
                return;
            }
        }
    }
    let served = dir.path().join("served");
    let server = Server::start(&served, &["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let snap = client(&server.url);
    let ca = format!("tls-ca={}", s(&ca));
    // Not trusted without the CA: a clear failure, not a hang.
    let out = snap.run_code(&["snapshots"], 1);
    assert!(stderr(&out).contains("cannot"), "{}", describe(&out));
    snap.init_repo(&["-o", &ca]);
    let src = source_tree(snap.scratch());
    snap.create(&["-o", &ca, s(&src)]);
    let target = snap.scratch().join("restore");
    assert_code(&snap.restore("latest", &target, &["-o", &ca]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());
}
