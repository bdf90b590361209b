//! `snap webdav` and `snap mount`: snapshots as a read-only filesystem.
//! Listings, sizes, mtimes and bytes (whole and by range) are checked
//! against the source tree the snapshot was taken of; every write is
//! refused; a damaged blob is an error for its reader, never wrong bytes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::*;

/// Names that a URL or a shell must quote.
const ODD: &str = "odd dir ünï ✓";
const ODD_FILE: &str = "a file & more.txt";

/// A source tree: nested directories, a multi-MiB file, a symlink, an
/// empty file and odd names; fixed mtimes on the files.
fn source_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join(ODD)).unwrap();
    write_random_file(&src.join("big.bin"), 5 * MIB + 12345, 7);
    write_random_file(&src.join("a/b/c/deep.bin"), 70_000, 8);
    std::fs::write(src.join("a/small.txt"), b"hello, snapshot\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join(ODD).join(ODD_FILE), "ünïcødé content\n").unwrap();
    std::os::unix::fs::symlink("a/small.txt", src.join("link")).unwrap();
    set_mtime(&src.join("big.bin"), 1_700_000_000, 123_456_789);
    set_mtime(&src.join("a/small.txt"), 1_600_000_000, 0);
    set_mtime(&src.join(ODD).join(ODD_FILE), 1_650_000_000, 5);
    src
}

/// A repository with one snapshot of `source_tree`; the source's path.
fn repo_with_snapshot() -> (Snap, PathBuf) {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let src = source_tree(snap.scratch());
    snap.create(&[s(&src)]);
    (snap, src)
}

/// A running snap command (webdav or mount), stopped on drop.
struct Running {
    child: Child,
    /// The first line of its output.
    line: String,
}

impl Running {
    fn start(snap: &Snap, args: &[&str]) -> Running {
        let log = std::fs::File::create(snap.scratch().join("server.log")).unwrap();
        let mut child = snap
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn snap");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the first line");
        if line.is_empty() {
            let status = child.wait().unwrap();
            let log = std::fs::read_to_string(snap.scratch().join("server.log")).unwrap_or_default();
            panic!("snap {args:?} ended ({status}) before it was ready:\n{log}");
        }
        Running { child, line }
    }

    /// Sends SIGTERM and waits; the exit code.
    fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_timeout(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: as above.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

// ---------------------------------------------------------------- WebDAV

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.0 request (so the body ends with the connection, unchunked).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Percent-encodes a path for a URL (keeps `/`).
fn url_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL path of `file` (a path in the source tree) under `latest/`.
fn dav_path(file: &Path) -> String {
    url_path(&format!("/latest{}", file.display()))
}

fn start_webdav(snap: &Snap, extra: &[&str]) -> (Running, String) {
    let mut args = vec!["webdav", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let running = Running::start(snap, &args);
    let addr = running
        .line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no address in {:?}", running.line))
        .trim_end_matches('/')
        .to_string();
    (running, addr)
}

/// The `<response>` blocks of a PROPFIND answer, as (decoded href, block).
fn propfind_responses(xml: &str) -> Vec<(String, String)> {
    xml.split("<D:response>")
        .skip(1)
        .map(|block| {
            let href = between(block, "<D:href>", "</D:href>").unwrap_or_default();
            (percent_decode(&href), block.to_string())
        })
        .collect()
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_string())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn http_date(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .unwrap()
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[test]
fn webdav_lists_snapshots_and_serves_files_with_sizes_mtimes_and_ranges() {
    let (snap, src) = repo_with_snapshot();
    let id = snap.snapshots()[0]["short_id"].as_str().unwrap().to_string();
    let (_server, addr) = start_webdav(&snap, &[]);

    // The root: one directory per snapshot (time and short id) and latest.
    let root = http(&addr, "PROPFIND", "/", &[("Depth", "1")], b"");
    assert_eq!(root.status, 207, "{}", root.text());
    let names: Vec<String> = propfind_responses(&root.text()).into_iter().map(|(h, _)| h).collect();
    assert!(names.iter().any(|h| h == "/latest/"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|h| h.ends_with(&format!("_{id}/")) && h.len() == "/2026-12-01T10-00-00_".len() + id.len() + 1),
        "no snapshot directory for {id}: {names:?}"
    );

    // Depth 1 of the source directory: its entries with sizes and mtimes.
    let listing = http(
        &addr,
        "PROPFIND",
        &format!("{}/", dav_path(&src)),
        &[("Depth", "1")],
        b"",
    );
    assert_eq!(listing.status, 207, "{}", listing.text());
    let responses = propfind_responses(&listing.text());
    let prefix = format!("/latest{}/", src.display());
    let mut children: Vec<String> = responses
        .iter()
        .filter_map(|(h, _)| h.strip_prefix(&prefix))
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    children.sort();
    let mut expected = vec!["a/", "big.bin", "empty", "link", &format!("{ODD}/")]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    expected.sort();
    assert_eq!(children, expected);
    let block = |name: &str| {
        responses
            .iter()
            .find(|(h, _)| *h == format!("{prefix}{name}"))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no {name} in the listing"))
    };
    let big = block("big.bin");
    assert_eq!(
        between(&big, "<D:getcontentlength>", "</D:getcontentlength>").as_deref(),
        Some((5 * MIB + 12345).to_string().as_str()),
        "{big}"
    );
    assert_eq!(
        between(&big, "<D:getlastmodified>", "</D:getlastmodified>"),
        Some(http_date(1_700_000_000)),
        "{big}"
    );
    let empty = block("empty");
    assert_eq!(
        between(&empty, "<D:getcontentlength>", "</D:getcontentlength>").as_deref(),
        Some("0")
    );
    assert!(block("a/").contains("<D:collection"), "a directory is a collection");

    // Depth 0: the entry itself only.
    let one = http(
        &addr,
        "PROPFIND",
        &dav_path(&src.join("a/small.txt")),
        &[("Depth", "0")],
        b"",
    );
    assert_eq!(one.status, 207, "{}", one.text());
    let one = propfind_responses(&one.text());
    assert_eq!(one.len(), 1);
    assert_eq!(
        between(&one[0].1, "<D:getlastmodified>", "</D:getlastmodified>"),
        Some(http_date(1_600_000_000))
    );

    // GET: whole files, the same bytes as the source.
    let expected_big = std::fs::read(src.join("big.bin")).unwrap();
    let got = http(&addr, "GET", &dav_path(&src.join("big.bin")), &[], b"");
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("Content-Length"),
        Some(expected_big.len().to_string().as_str())
    );
    assert!(got.body == expected_big, "big.bin differs ({} bytes)", got.body.len());
    let etag = got.header("ETag").expect("an ETag").to_string();
    let odd = src.join(ODD).join(ODD_FILE);
    let got = http(&addr, "GET", &dav_path(&odd), &[], b"");
    assert_eq!((got.status, got.body.clone()), (200, std::fs::read(&odd).unwrap()));
    let got = http(&addr, "GET", &dav_path(&src.join("empty")), &[], b"");
    assert_eq!((got.status, got.body.len()), (200, 0));
    let got = http(&addr, "GET", &dav_path(&src.join("a/b/c/deep.bin")), &[], b"");
    assert!(got.body == std::fs::read(src.join("a/b/c/deep.bin")).unwrap());
    // A symlink reads as its target.
    let got = http(&addr, "GET", &dav_path(&src.join("link")), &[], b"");
    assert_eq!((got.status, got.text()), (200, "a/small.txt".to_string()));
    // The snapshot's own directory serves the same bytes as latest.
    let by_id = format!("/{}", names.iter().find(|h| h.contains(&id)).unwrap().trim_matches('/'));
    let got = http(
        &addr,
        "GET",
        &url_path(&format!("{by_id}{}", src.join("a/small.txt").display())),
        &[],
        b"",
    );
    assert_eq!(got.text(), "hello, snapshot\n");

    // Ranges: across chunk boundaries, open-ended, a suffix, out of range.
    let path = dav_path(&src.join("big.bin"));
    let len = expected_big.len();
    for (range, from, to) in [
        ("bytes=100000-2200000", 100_000, 2_200_001),
        ("bytes=0-0", 0, 1),
        (&format!("bytes={}-", len - 1000) as &str, len - 1000, len),
        ("bytes=-4096", len - 4096, len),
    ] {
        let got = http(&addr, "GET", &path, &[("Range", range)], b"");
        assert_eq!(got.status, 206, "{range}: {:?}", got.headers);
        assert!(
            got.body == expected_big[from..to],
            "{range}: wrong bytes ({} of them)",
            got.body.len()
        );
        assert_eq!(
            got.header("Content-Range"),
            Some(format!("bytes {from}-{}/{len}", to - 1).as_str()),
            "{range}"
        );
    }
    let got = http(&addr, "GET", &path, &[("Range", &format!("bytes={}-", len + 10))], b"");
    assert_eq!(got.status, 416, "an out-of-range request: {:?}", got.headers);
    // A conditional GET with the ETag: not modified.
    let got = http(&addr, "GET", &path, &[("If-None-Match", &etag)], b"");
    assert_eq!(got.status, 304);

    // Not there: 404.
    assert_eq!(http(&addr, "GET", "/latest/no/such/file", &[], b"").status, 404);
}

#[test]
fn webdav_refuses_every_write() {
    let (snap, src) = repo_with_snapshot();
    let (_server, addr) = start_webdav(&snap, &[]);
    let small = dav_path(&src.join("a/small.txt"));
    let dir = format!("{}/", dav_path(&src.join("a")));
    for (method, path, headers) in [
        ("PUT", small.clone(), vec![]),
        ("PUT", dav_path(&src.join("a/new.txt")), vec![]),
        ("DELETE", small.clone(), vec![]),
        ("DELETE", dir.clone(), vec![]),
        ("MKCOL", dav_path(&src.join("a/newdir")), vec![]),
        ("PROPPATCH", small.clone(), vec![]),
        ("LOCK", small.clone(), vec![]),
        (
            "MOVE",
            small.clone(),
            vec![("Destination", format!("http://{addr}/latest/moved"))],
        ),
        (
            "COPY",
            small.clone(),
            vec![("Destination", format!("http://{addr}/latest/copied"))],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = http(&addr, method, &path, &headers, b"overwritten\n");
        assert!(
            got.status == 403 || got.status == 405,
            "{method} {path}: {} {}",
            got.status,
            got.text()
        );
    }
    // Nothing changed.
    let got = http(&addr, "GET", &small, &[], b"");
    assert_eq!(got.text(), "hello, snapshot\n");
    assert_eq!(
        http(&addr, "GET", &dav_path(&src.join("a/new.txt")), &[], b"").status,
        404
    );
}

#[test]
fn webdav_basic_auth_and_clean_stop() {
    let (snap, src) = repo_with_snapshot();
    let htpasswd = snap.scratch().join("htpasswd");
    std::fs::write(&htpasswd, format!("ana:{}\n", bcrypt::hash("s3cret", 4).unwrap())).unwrap();
    let (mut server, addr) = start_webdav(&snap, &["--htpasswd", s(&htpasswd)]);
    let path = dav_path(&src.join("a/small.txt"));
    assert_eq!(http(&addr, "GET", &path, &[], b"").status, 401);
    let wrong = format!("Basic {}", base64_encode(b"ana:wrong"));
    assert_eq!(http(&addr, "GET", &path, &[("Authorization", &wrong)], b"").status, 401);
    let good = format!("Basic {}", base64_encode(b"ana:s3cret"));
    let got = http(&addr, "GET", &path, &[("Authorization", &good)], b"");
    assert_eq!((got.status, got.text()), (200, "hello, snapshot\n".to_string()));
    // SIGTERM stops it as interrupted (the documented 130).
    assert_eq!(server.terminate(), Some(130));
}

#[test]
fn webdav_refuses_a_foreign_host_and_an_open_non_loopback_listen() {
    let (snap, src) = repo_with_snapshot();
    let (mut server, addr) = start_webdav(&snap, &[]);
    let port = addr.rsplit_once(':').unwrap().1;
    let path = dav_path(&src.join("a/small.txt"));
    // DNS rebinding: a web page reaching 127.0.0.1 under its own name.
    let foreign = format!("evil.example:{port}");
    for host in ["evil.example", foreign.as_str(), "127.0.0.1:1"] {
        let got = http(&addr, "GET", &path, &[("Host", host)], b"");
        assert_eq!(got.status, 421, "Host {host}: {}", got.text());
        assert!(!got.text().contains("hello, snapshot"));
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_string(),
    ] {
        let got = http(&addr, "GET", &path, &[("Host", &host)], b"");
        assert_eq!(
            (got.status, got.text()),
            (200, "hello, snapshot\n".to_string()),
            "Host {host}"
        );
    }
    assert_eq!(server.terminate(), Some(130));
    // Anywhere but loopback needs credentials; refused before the repository opens.
    let out = snap.run_code(&["webdav", "--listen", "0.0.0.0:0"], 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--htpasswd"),
        "{err}"
    );
}

#[test]
fn webdav_refuses_infinite_depth_and_caps_ranges() {
    let (snap, src) = repo_with_snapshot();
    let (mut server, addr) = start_webdav(&snap, &[]);
    // X-Litmus made dav-server walk the whole tree; missing Depth means infinity.
    for headers in [
        vec![("Depth", "infinity"), ("X-Litmus", "props: 1")],
        vec![("Depth", "Infinity")],
        vec![("X-Litmus", "x")],
    ] {
        let got = http(&addr, "PROPFIND", "/", &headers, b"");
        assert_eq!(got.status, 403, "{headers:?}: {}", got.text());
        assert!(got.text().contains("propfind-finite-depth"), "{}", got.text());
    }
    let got = http(&addr, "PROPFIND", "/", &[("Depth", "1")], b"");
    assert_eq!(got.status, 207, "{}", got.text());
    let path = dav_path(&src.join("a/small.txt"));
    let want = std::fs::read(src.join("a/small.txt")).unwrap();
    // Many ranges: the whole file, once.
    let many = format!("bytes={}", vec!["0-"; 200].join(","));
    let got = http(&addr, "GET", &path, &[("Range", &many)], b"");
    assert_eq!((got.status, &got.body), (200, &want));
    // A few ranges are still served as ranges.
    let got = http(&addr, "GET", &path, &[("Range", "bytes=0-4")], b"");
    assert_eq!((got.status, &got.body[..]), (206, &want[..5]));
    assert_eq!(server.terminate(), Some(130));
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn webdav_a_damaged_blob_is_an_error_never_wrong_bytes() {
    let (snap, src) = repo_with_snapshot();
    // Flip one byte in the middle of every pack: some content blob of
    // big.bin is hit (it is most of the data).
    for (pack, _) in packs(&snap.repo) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        make_removable(&pack);
        std::fs::write(&pack, bytes).unwrap();
    }
    let (_server, addr) = start_webdav(&snap, &[]);
    let expected = std::fs::read(src.join("big.bin")).unwrap();
    let got = http(&addr, "GET", &dav_path(&src.join("big.bin")), &[], b"");
    // Either the response fails at once or it is cut short: never the
    // full length with wrong bytes in it.
    if got.status == 200 {
        assert!(got.body.len() < expected.len(), "a damaged file was served whole");
        assert!(expected.starts_with(&got.body), "wrong bytes were served");
    } else {
        assert!(got.status >= 500 || got.status == 404, "status {}", got.status);
    }
}

// ----------------------------------------------------------------- FUSE

/// Whether FUSE mounts can be tried here; prints why not (and fails with
/// SNAP_TEST_REQUIRE_ALL=1).
fn fuse_available() -> bool {
    let missing = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else if which("fusermount3").is_none() && which("fusermount").is_none() {
        Some("neither fusermount3 nor fusermount is installed")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) => {
            if std::env::var("SNAP_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1") {
                panic!("FUSE test cannot run: {why}");
            }
            eprintln!("note: {why}; FUSE test skipped");
            false
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn fusermount() -> &'static str {
    if which("fusermount3").is_some() {
        "fusermount3"
    } else {
        "fusermount"
    }
}

fn is_mounted(mountpoint: &Path) -> bool {
    let mounts = std::fs::read("/proc/self/mounts").unwrap_or_default();
    let want = mountpoint.as_os_str().as_bytes();
    mounts
        .split(|&b| b == b'\n')
        .any(|line| line.split(|&b| b == b' ').nth(1) == Some(want))
}

/// Starts `snap mount` on a fresh directory; `None` when mounting is not
/// possible here (reported, or fails under SNAP_TEST_REQUIRE_ALL=1).
fn start_mount(snap: &Snap) -> Option<(Running, PathBuf)> {
    start_mount_with(snap, &[])
}

fn start_mount_with(snap: &Snap, extra: &[&str]) -> Option<(Running, PathBuf)> {
    if !fuse_available() {
        return None;
    }
    let mnt = snap.scratch().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut args = vec!["mount", s(&mnt)];
    args.extend_from_slice(extra);
    let running = Running::start(snap, &args);
    assert!(running.line.starts_with("mounted"), "{:?}", running.line);
    assert!(is_mounted(&mnt), "not in /proc/self/mounts after the mounted line");
    Some((running, mnt))
}

#[test]
fn mount_find_cat_cmp_and_stat_against_the_source() {
    let (snap, src) = repo_with_snapshot();
    let Some((mut running, mnt)) = start_mount(&snap) else {
        return;
    };
    let inside = mnt.join("latest").join(src.strip_prefix("/").unwrap());

    // find: the same paths as the source.
    let list = |root: &Path| {
        let out = Command::new("find").arg(".").current_dir(root).output().unwrap();
        assert!(out.status.success(), "find in {}", root.display());
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
        lines.sort();
        lines
    };
    assert_eq!(list(&inside), list(&src));

    // cmp and cat: the same bytes.
    for file in [
        "big.bin",
        "a/small.txt",
        "a/b/c/deep.bin",
        "empty",
        &format!("{ODD}/{ODD_FILE}"),
    ] {
        let out = Command::new("cmp")
            .arg(src.join(file))
            .arg(inside.join(file))
            .output()
            .unwrap();
        assert!(out.status.success(), "cmp {file}: {}", describe(&out));
    }
    let out = Command::new("cat").arg(inside.join("a/small.txt")).output().unwrap();
    assert_eq!(out.stdout, b"hello, snapshot\n");
    assert_eq!(
        std::fs::read_link(inside.join("link")).unwrap(),
        Path::new("a/small.txt")
    );
    // Whole-tree comparison, through the symlink too.
    assert!(same_content(&src.join("big.bin"), &inside.join("big.bin")));

    // stat: sizes, mtimes (to the nanosecond), modes, kinds.
    for file in [
        "big.bin",
        "a/small.txt",
        "empty",
        &format!("{ODD}/{ODD_FILE}"),
        "a",
        "link",
    ] {
        let want = std::fs::symlink_metadata(src.join(file)).unwrap();
        let got = std::fs::symlink_metadata(inside.join(file)).unwrap();
        assert_eq!(got.file_type(), want.file_type(), "{file}");
        if !want.is_dir() {
            assert_eq!(got.len(), want.len(), "{file}: size");
        }
        assert_eq!(
            (got.mtime(), got.mtime_nsec()),
            (want.mtime(), want.mtime_nsec()),
            "{file}: mtime"
        );
        if !want.file_type().is_symlink() {
            assert_eq!(got.mode() & 0o7777, want.mode() & 0o7777, "{file}: mode");
        }
    }
    // A random read in the middle of the big file.
    let mut f = std::fs::File::open(inside.join("big.bin")).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(3_000_001)).unwrap();
    let mut buf = vec![0; 70_000];
    f.read_exact(&mut buf).unwrap();
    assert!(buf == std::fs::read(src.join("big.bin")).unwrap()[3_000_001..3_070_001]);

    // Writes are refused: read-only filesystem.
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs(std::fs::write(inside.join("a/small.txt"), b"x"), "overwrite");
    erofs(std::fs::write(inside.join("a/new"), b"x"), "create");
    erofs(std::fs::remove_file(inside.join("empty")), "unlink");
    erofs(std::fs::create_dir(inside.join("newdir")), "mkdir");
    erofs(std::fs::rename(inside.join("empty"), inside.join("moved")), "rename");

    // SIGTERM unmounts and exits 130 (once nothing holds the mount busy).
    drop(f);
    assert_eq!(running.terminate(), Some(130));
    assert!(!is_mounted(&mnt), "still mounted after SIGTERM");
    // Every close sends a flush: answered, not logged as unimplemented.
    let log = std::fs::read_to_string(snap.scratch().join("server.log")).unwrap();
    assert!(!log.contains("Not Implemented"), "{log}");
    assert!(
        std::fs::read_dir(&mnt).unwrap().next().is_none(),
        "the mount point is empty again"
    );
}

#[test]
fn mount_sigterm_while_busy_detaches_lazily_and_exits_130() {
    let (snap, src) = repo_with_snapshot();
    let Some((mut running, mnt)) = start_mount(&snap) else {
        return;
    };
    let inside = mnt.join("latest").join(src.strip_prefix("/").unwrap());
    // One process holds a file open in the mount, another has its working
    // directory there: either makes a plain unmount EBUSY.
    let file = inside.join("a/small.txt");
    let mut holders = vec![
        Command::new("sh")
            .arg("-c")
            .arg("exec sleep 600 < \"$1\"")
            .arg("sh")
            .arg(&file)
            .spawn()
            .unwrap(),
        Command::new("sleep")
            .arg("600")
            .current_dir(inside.join("a/b"))
            .spawn()
            .unwrap(),
    ];
    // Wait until the first holder has the file open (its stdin).
    let fd0 = PathBuf::from(format!("/proc/{}/fd/0", holders[0].id()));
    let start = Instant::now();
    while std::fs::read_link(&fd0).ok().as_deref() != Some(file.as_path()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the holder never opened {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let plain = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(
        !plain.status.success(),
        "the mount should be busy: {}",
        describe(&plain)
    );

    let code = running.terminate();
    let log = std::fs::read_to_string(snap.scratch().join("server.log")).unwrap();
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("was busy") && log.contains("detached it lazily"), "{log}");
    assert!(!log.contains("cannot mount"), "{log}");
    // Gone from the namespace at once, holders or not.
    assert!(!is_mounted(&mnt), "still mounted after SIGTERM: {log}");
    assert!(
        std::fs::read_dir(&mnt).unwrap().next().is_none(),
        "the mount point is empty again"
    );
    for holder in &mut holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    assert!(!is_mounted(&mnt));
    // The mount point is usable again.
    let (mut again, _) = start_mount(&snap).unwrap();
    assert_eq!(again.terminate(), Some(130));
    assert!(!is_mounted(&mnt));
}

#[test]
fn mount_allow_other_has_the_kernel_check_permissions() {
    let (snap, _src) = repo_with_snapshot();
    let Some((mut running, mnt)) = start_mount_with(&snap, &["--allow-other"]) else {
        return;
    };
    // Without default_permissions every local user could read every file.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(s(&mnt)))
        .unwrap_or_else(|| panic!("{} not in {mounts}", mnt.display()));
    let options: Vec<&str> = line.split_whitespace().nth(3).unwrap().split(',').collect();
    assert!(options.contains(&"default_permissions"), "{line}");
    assert!(options.contains(&"allow_other"), "{line}");
    assert_eq!(running.terminate(), Some(130));
}

#[test]
fn mount_ends_when_unmounted_from_outside() {
    let (snap, _src) = repo_with_snapshot();
    let Some((mut running, mnt)) = start_mount(&snap) else {
        return;
    };
    let names = dir_names(&mnt);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"latest".to_string()));
    let out = Command::new(fusermount()).arg("-u").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(wait_timeout(&mut running.child, Duration::from_secs(20)), Some(0));
    assert!(!is_mounted(&mnt));
}

#[test]
fn mount_a_damaged_blob_is_eio_never_wrong_bytes() {
    let (snap, src) = repo_with_snapshot();
    for (pack, _) in packs(&snap.repo) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        make_removable(&pack);
        std::fs::write(&pack, bytes).unwrap();
    }
    let Some((_running, mnt)) = start_mount(&snap) else {
        return;
    };
    let inside = mnt.join("latest").join(src.strip_prefix("/").unwrap());
    let expected = std::fs::read(src.join("big.bin")).unwrap();
    let mut f = match std::fs::File::open(inside.join("big.bin")) {
        Ok(f) => f,
        // The tree on the way may be what was hit.
        Err(e) => return assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    };
    let mut got = Vec::new();
    let e = f.read_to_end(&mut got).expect_err("a damaged file reads to its end");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(expected.starts_with(&got), "wrong bytes before the error");
}
