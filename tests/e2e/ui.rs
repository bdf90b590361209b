//! `snap ui`: the access checks over raw HTTP (token, session cookie,
//! CSRF, origin, Host, security headers), and the pages in a real headless
//! browser (tests/ui/browser.py: Debian's chromium, chromium-driver and
//! python3-selenium), which logs in, browses, downloads, runs the restore
//! wizard and a backup; this side compares the restored tree with the source.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::util::*;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Ui {
    child: Child,
    addr: String,
    url: String,
}

impl Ui {
    fn start(snap: &Snap, extra: &[&str]) -> Ui {
        let token_file = snap.scratch().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let mut child = snap
            .command()
            .args(["ui", "--listen", "127.0.0.1:0", "--token-file", s(&token_file)])
            .args(extra)
            // Never the user's own profiles and daemon state (--config and
            // --state-dir in `extra` take precedence).
            .env("SNAP_CONFIG", snap.scratch().join("no-config.toml"))
            .env("SNAP_STATE_DIR", snap.scratch().join("no-state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(snap.scratch().join("ui.log")).unwrap())
            .spawn()
            .expect("spawn snap ui");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the ui line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!(
                    "no URL in {line:?}; log: {}",
                    std::fs::read_to_string(snap.scratch().join("ui.log")).unwrap_or_default()
                )
            })
            .to_string();
        let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        Ui { child, addr, url }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 request; `headers` are whole lines without the line end.
fn request(addr: &str, method: &str, path: &str, headers: &[String], body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if method == "POST" {
        text.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn source_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("docs/deep")).unwrap();
    std::fs::write(src.join("top.txt"), b"top level\n").unwrap();
    std::fs::write(src.join("docs/notes.txt"), b"some notes\n").unwrap();
    write_random_file(&src.join("docs/data.bin"), 700_000, 15);
    std::fs::write(src.join("docs/deep/x.txt"), b"deep\n").unwrap();
    set_tree_times(&src);
    src
}

#[test]
fn ui_refuses_without_token_and_cross_site_posts() {
    let snap = Snap::init(&[]);
    let src = source_tree(snap.scratch());
    snap.create(&[s(&src)]);
    let ui = Ui::start(&snap, &[]);
    let addr = &ui.addr;
    assert!(ui.url.ends_with(&format!("/?token={TOKEN}")), "{}", ui.url);

    // No token, a wrong one, a wrong bearer: 401.
    assert_eq!(request(addr, "GET", "/", &[], "").status, 401);
    assert_eq!(request(addr, "GET", "/snapshots", &[], "").status, 401);
    assert_eq!(
        request(addr, "GET", "/?token=wrong-token-0123456789", &[], "").status,
        401
    );
    assert_eq!(
        request(addr, "GET", "/", &["Authorization: Bearer nope".into()], "").status,
        401
    );
    assert_eq!(request(addr, "POST", "/backup", &[], "paths=/tmp").status, 401);

    // The token sets an HttpOnly, SameSite=Strict cookie and redirects without it.
    let login = request(addr, "GET", &format!("/snapshots?token={TOKEN}&page=1"), &[], "");
    assert_eq!(login.status, 303, "{}", login.head);
    assert_eq!(login.header("location").as_deref(), Some("/snapshots?page=1"));
    let cookie = login.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = format!("Cookie: {}", cookie.split(';').next().unwrap());

    let page = request(addr, "GET", "/", std::slice::from_ref(&cookie), "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains(PASSWORD), "the password reached the page");
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(page.header("x-content-type-options").as_deref(), Some("nosniff"));
    let csrf = page
        .body
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the CSRF token in the page")
        .to_string();
    assert!(csrf.len() >= 32);

    // A name that is not the loopback address (DNS rebinding) reaches nothing.
    let rebound = request(addr, "GET", "/", &[cookie.clone(), "Host: evil.example".into()], "");
    assert_eq!(rebound.status, 421);

    // Cross-site POSTs: wrong Origin, wrong Referer, no origin at all,
    // missing or wrong CSRF token. None starts a backup.
    let origin = format!("Origin: http://{addr}");
    let form = format!("paths={}&csrf={csrf}", s(&src));
    let no_csrf = format!("paths={}", s(&src));
    let refused = [
        (vec![cookie.clone(), "Origin: http://evil.example".into()], form.clone()),
        (
            vec![cookie.clone(), "Referer: http://evil.example/".into()],
            form.clone(),
        ),
        (vec![cookie.clone()], form.clone()),
        (vec![cookie.clone(), origin.clone()], no_csrf.clone()),
        (
            vec![cookie.clone(), origin.clone()],
            format!("{no_csrf}&csrf=0123456789abcdef0123456789abcdef"),
        ),
    ];
    for (headers, body) in &refused {
        let reply = request(addr, "POST", "/backup", headers, body);
        assert_eq!(reply.status, 403, "{headers:?} {body}: {}", reply.body);
    }
    assert_eq!(snap.snapshots().len(), 1, "a refused POST started a backup");

    // Same origin with the token: accepted (the backup runs as a job).
    let accepted = request(addr, "POST", "/backup", &[cookie.clone(), origin.clone()], &form);
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    let job = accepted.header("location").unwrap();
    assert!(job.starts_with("/jobs/"));
    // One backup at a time: wait for this one to end before the next.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !request(addr, "GET", &job, std::slice::from_ref(&cookie), "")
        .body
        .contains("Finished.")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // So is a script's bearer request, which no browser sends by itself.
    let bearer = request(
        addr,
        "POST",
        "/backup",
        &[format!("Authorization: Bearer {TOKEN}")],
        &no_csrf,
    );
    assert_eq!(bearer.status, 303, "{}", bearer.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while snap.snapshots().len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(snap.snapshots().len(), 3, "the two accepted backups");

    // A file download: exact bytes, length, type and a safe name.
    let download = request(
        addr,
        "GET",
        &format!("/snapshots/latest/download?path={}/docs/notes.txt", s(&src)),
        std::slice::from_ref(&cookie),
        "",
    );
    assert_eq!(download.status, 200, "{}", download.body);
    assert_eq!(download.body, "some notes\n");
    assert_eq!(download.header("content-length").as_deref(), Some("11"));
    assert!(download.header("content-type").unwrap().starts_with("text/plain"));
    assert!(download
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment; filename=\"notes.txt\""));
    // `..` cannot leave the snapshot; a missing path is 404, not a crash.
    let up = request(
        addr,
        "GET",
        "/snapshots/latest/browse?path=/../etc",
        std::slice::from_ref(&cookie),
        "",
    );
    assert_eq!(up.status, 400);
    let missing = request(
        addr,
        "GET",
        "/snapshots/latest/browse?path=/no/such",
        std::slice::from_ref(&cookie),
        "",
    );
    assert_eq!(missing.status, 404);
    let bad_id = request(
        addr,
        "GET",
        &format!("/snapshots/{}/browse", "ab".repeat(32)),
        &[cookie],
        "",
    );
    assert_eq!(bad_id.status, 404);
}

#[test]
fn ui_off_loopback_needs_tls_and_htpasswd() {
    let snap = Snap::init(&[]);
    let token_file = snap.scratch().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let out = snap.run(&["ui", "--listen", "0.0.0.0:0", "--token-file", s(&token_file)]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("not a loopback address"), "{}", stderr(&out));
    std::fs::write(&token_file, "short").unwrap();
    let out = snap.run(&["ui", "--listen", "127.0.0.1:0", "--token-file", s(&token_file)]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("at least 16 characters"), "{}", stderr(&out));
}

fn browser_missing() -> Option<String> {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (apt-get install chromium chromium-driver)"));
        }
    }
    let selenium = Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .output();
    if !selenium.is_ok_and(|o| o.status.success()) {
        return Some("python3-selenium is missing (apt-get install python3-selenium)".into());
    }
    None
}

#[test]
fn ui_in_a_headless_browser() {
    if let Some(why) = browser_missing() {
        skip_note(format!("note: {why}; browser test skipped"));
        return;
    }
    let snap = Snap::init(&[]);
    let src = source_tree(snap.scratch());
    snap.create(&[s(&src)]);
    std::fs::write(src.join("top.txt"), b"top level, changed\n").unwrap();
    set_tree_times(&src);
    snap.create(&[s(&src)]);
    let more = snap.scratch().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::write(more.join("new.txt"), b"backed up from the dashboard\n").unwrap();
    let (config, state, _) = schedules_config(&snap);
    let ui = Ui::start(&snap, &["--config", s(&config), "--state-dir", s(&state)]);
    let restore_target = snap.scratch().join("restored");
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let downloads = snap.scratch().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let args = serde_json::json!({
        "url": ui.url,
        "snapshots": 2,
        "source": s(&src),
        "subdir": "docs",
        "file": "data.bin",
        "restore_target": s(&restore_target),
        "backup_path": s(&more),
        "screenshots": s(&screenshots),
        "downloads": s(&downloads),
        "profile": "docs",
    });
    let out = Command::new("/usr/bin/python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/browser.py"))
        .arg(args.to_string())
        .output()
        .expect("run the browser test");
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}\nui log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(snap.scratch().join("ui.log")).unwrap_or_default()
    );
    // The wizard restored the source directory under its own name.
    assert_same_tree(&src, &restore_target.join("src"), Compare::all());
    let snapshots = snap.snapshots();
    assert_eq!(snapshots.len(), 3, "the dashboard's backup is a snapshot");
    assert_eq!(snapshots[2]["paths"][0], s(&more));
    // The schedules page saved keep-last 4 and refused `every 0s`.
    let edited = std::fs::read_to_string(&config).unwrap();
    assert!(
        edited.contains("keep-last = 4") && edited.contains("backup = \"every 6h\""),
        "{edited}"
    );
    assert_code(&snap.run(&["--config", s(&config), "config", "check"]), 0);
}

/// Time to first byte and whole response of `path`, with a session cookie.
fn timed(addr: &str, path: &str, cookie: &str) -> (u16, std::time::Duration, std::time::Duration) {
    let start = std::time::Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{cookie}\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    let ttfb = start.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let status = String::from_utf8_lossy(&first[9..12]).parse().unwrap_or(0);
    (status, ttfb, start.elapsed())
}

/// The benchmark of the issue: time to first byte of the snapshots page
/// with 1,000 snapshots (the first load, which reads them all, and later
/// ones, which read only the listing) and of a directory of 10,000 entries
/// (printed; `just bench-ui`, or `cargo test --release --test tests
/// ui_time_to_first_byte -- --ignored --nocapture`). One real backup of
/// the directory; the other 999 snapshots are written through snap-core,
/// pointing at the same tree (999 runs of the binary take minutes).
#[test]
#[ignore]
fn ui_time_to_first_byte() {
    use std::time::{Duration, Instant};
    let snap = Snap::init(&[]);
    let wide = snap.scratch().join("wide");
    std::fs::create_dir_all(&wide).unwrap();
    for i in 0..10_000 {
        std::fs::write(wide.join(format!("f{i:05}")), i.to_string()).unwrap();
    }
    let made = Instant::now();
    let first = snap.create(&[s(&wide)])["id"].as_str().unwrap().to_string();
    {
        let backend = std::sync::Arc::new(snap_core::backend::LocalBackend::new(snap.repo.clone()));
        let password = snap_core::keys::Password::new(PASSWORD);
        let repo = snap_core::repo::Repository::open(backend, Some(&password), &snap.scratch().join("libcache"))
            .expect("open");
        let id = snap_core::id::SnapshotId::from_hex(&first).unwrap();
        let real = snap_core::snapshot::Snapshot::load(&repo, &id).unwrap();
        for i in 1..1000i64 {
            let mut copy = real.clone();
            copy.time = real.time - jiff::SignedDuration::from_mins(i);
            copy.host = format!("host{}", i % 7);
            copy.tags = vec![format!("t{}", i % 3)];
            copy.save(&repo).unwrap();
        }
    }
    eprintln!(
        "setup: 10,000 files backed up and 999 snapshots written in {:?}",
        made.elapsed()
    );
    assert_eq!(snap.snapshots().len(), 1000);
    let ui = Ui::start(&snap, &[]);
    let login = request(&ui.addr, "GET", &format!("/?token={TOKEN}"), &[], "");
    let cookie = format!(
        "Cookie: {}",
        login.header("set-cookie").unwrap().split(';').next().unwrap()
    );
    // The login's redirect reached no page: the cache is still empty.
    let (status, ttfb, total) = timed(&ui.addr, "/snapshots", &cookie);
    assert_eq!(status, 200);
    eprintln!("snapshots page, 1,000 snapshots, first load: first byte {ttfb:?}, whole page {total:?}");
    let wide_path = format!("/snapshots/{first}/browse?path={}", s(&wide));
    for (what, path) in [
        (
            "snapshots page, 1,000 snapshots, cached",
            "/snapshots?sort=size&page=3".to_string(),
        ),
        ("directory of 10,000 entries", wide_path),
    ] {
        let mut best = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            let (status, ttfb, total) = timed(&ui.addr, &path, &cookie);
            assert_eq!(status, 200, "{path}");
            best = (best.0.min(ttfb), best.1.min(total));
        }
        eprintln!("{what}: first byte {:?}, whole page {:?} (best of 5)", best.0, best.1);
    }
}

/// After `?token=` the UI redirects to the requested path: never to
/// another host (`//host/`, `/\host/`). Under --htpasswd the Authorization
/// header carries Basic, so scripts send the token as X-Snap-Token.
#[test]
fn ui_redirect_stays_local_and_htpasswd_takes_x_snap_token() {
    let snap = Snap::init(&[]);
    let src = source_tree(snap.scratch());
    snap.create(&[s(&src)]);
    let htpasswd = snap.scratch().join("htpasswd");
    std::fs::write(&htpasswd, format!("ana:{}\n", bcrypt::hash("s3cret", 4).unwrap())).unwrap();
    let ui = Ui::start(&snap, &["--htpasswd", s(&htpasswd)]);
    let addr = &ui.addr;
    // base64("ana:s3cret")
    let basic = "Authorization: Basic YW5hOnMzY3JldA==".to_string();

    let evil = request(
        addr,
        "GET",
        &format!("//evil.example/?token={TOKEN}"),
        std::slice::from_ref(&basic),
        "",
    );
    assert_eq!(evil.status, 303, "{}", evil.head);
    assert_eq!(evil.header("location").as_deref(), Some("/"));
    let evil = request(
        addr,
        "GET",
        &format!("/\\evil.example/?token={TOKEN}"),
        std::slice::from_ref(&basic),
        "",
    );
    let location = evil.header("location").unwrap_or_default();
    assert!(
        !location.starts_with("//") && !location.starts_with("/\\"),
        "{}",
        evil.head
    );
    let fine = request(
        addr,
        "GET",
        &format!("/snapshots?token={TOKEN}"),
        std::slice::from_ref(&basic),
        "",
    );
    assert_eq!(fine.header("location").as_deref(), Some("/snapshots"));

    let token = format!("X-Snap-Token: {TOKEN}");
    assert_eq!(
        request(addr, "GET", "/", &[basic.clone(), token.clone()], "").status,
        200
    );
    assert_eq!(request(addr, "GET", "/", std::slice::from_ref(&token), "").status, 401);
    assert_eq!(
        request(
            addr,
            "GET",
            "/",
            &[basic.clone(), "X-Snap-Token: wrong-token-0123456789".into()],
            ""
        )
        .status,
        401
    );
    assert_eq!(request(addr, "GET", "/", std::slice::from_ref(&basic), "").status, 401);
    let form = format!("paths={}", s(&src));
    let posted = request(addr, "POST", "/backup", &[basic, token], &form);
    assert_eq!(posted.status, 303, "{}", posted.body);
}

/// `--open` hands xdg-open a private file, never the token itself (command
/// lines are readable by every local user).
#[test]
fn ui_open_keeps_the_token_off_command_lines() {
    use std::os::unix::fs::PermissionsExt;
    let snap = Snap::init(&[]);
    let bin = snap.scratch().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let seen = snap.scratch().join("seen");
    let fake = bin.join("xdg-open");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > '{0}.args'\ncat \"$1\" > '{0}.page'\nstat -c %a \"$1\" > '{0}.mode'\nstat -c %a \"$(dirname \"$1\")\" >> '{0}.mode'\n",
            s(&seen)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());
    let token_file = snap.scratch().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut child = snap
        .command()
        .env("PATH", path)
        .args([
            "ui",
            "--open",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            s(&token_file),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mode = seen.with_extension("mode");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&mode).map_or(true, |m| m.lines().count() < 2) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let args = std::fs::read_to_string(seen.with_extension("args")).expect("xdg-open ran");
    assert!(!args.contains(TOKEN), "the token on xdg-open's command line: {args}");
    let page = std::fs::read_to_string(seen.with_extension("page")).unwrap();
    assert!(
        page.contains("http-equiv=refresh") && page.contains(&format!("?token={TOKEN}")),
        "{page}"
    );
    assert_eq!(std::fs::read_to_string(&mode).unwrap(), "600\n700\n");
    let _ = std::fs::remove_dir_all(Path::new(args.trim()).parent().unwrap());
}

/// Restore to the original location restores exactly the chosen path: a
/// name with glob characters (`[a]`) must not match its neighbour `a`.
#[test]
fn ui_restore_in_place_takes_exact_paths() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a as backed up\n").unwrap();
    std::fs::write(src.join("[a]"), b"[a] as backed up\n").unwrap();
    snap.create(&[s(&src)]);
    std::fs::write(src.join("a"), b"a changed since\n").unwrap();
    std::fs::write(src.join("[a]"), b"[a] changed since\n").unwrap();
    let ui = Ui::start(&snap, &[]);
    let id = snap.snapshots()[0]["id"].as_str().unwrap().to_string();
    let chosen = src.join("[a]");
    let form = format!(
        "snapshot={id}&paths={}&target_kind=original&overwrite=always",
        s(&chosen).replace('[', "%5B").replace(']', "%5D").replace('/', "%2F")
    );
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let preview = request(
        &ui.addr,
        "POST",
        "/restore/preview",
        std::slice::from_ref(&bearer),
        &form,
    );
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(
        preview.body.contains("[a]") && !preview.body.contains(&format!("{}/a<", s(&src))),
        "{}",
        preview.body
    );
    let run = request(&ui.addr, "POST", "/restore/run", std::slice::from_ref(&bearer), &form);
    assert_eq!(run.status, 303, "{}", run.body);
    let job = run.header("location").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let page = request(&ui.addr, "GET", &job, std::slice::from_ref(&bearer), "");
        if page.body.contains("Finished.") || page.body.contains("Failed") {
            assert!(page.body.contains("id=\"result\""), "{}", page.body);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the restore did not end");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(std::fs::read(src.join("[a]")).unwrap(), b"[a] as backed up\n");
    assert_eq!(
        std::fs::read(src.join("a")).unwrap(),
        b"a changed since\n",
        "a pattern matched `a`"
    );
}

/// A config file with two profiles (one inheriting), comments and keys the
/// schedules page does not edit, for the schedules tests.
fn schedules_config(snap: &Snap) -> (PathBuf, PathBuf, String) {
    let config = snap.scratch().join("config.toml");
    let state = snap.scratch().join("state");
    std::fs::write(snap.scratch().join("password"), format!("{PASSWORD}\n")).unwrap();
    let text = format!(
        r#"# Backups of this machine.
[profile.docs]
repository = "{repo}"   # the test repository
password-file = "{pw}"
paths = ["/home/ana/Documents"]
exclude = ["*.tmp"]

[profile.docs.schedule]
backup = "every 6h"   # four times a day
run-missed = true

[profile.docs.retention]
# Three is plenty.
keep-last = 3
keep-tag = ["pinned"]

[profile.child]
inherit = "docs"
tags = ["child"]
"#,
        repo = s(&snap.repo),
        pw = s(&snap.scratch().join("password")),
    );
    std::fs::write(&config, &text).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let state_json = serde_json::json!({
        "profiles": {
            "docs": {
                "jobs": {
                    "backup": {
                        "schedule": "every 6h",
                        "last_start": "2026-01-02T03:04:05Z",
                        "last_end": "2026-01-02T03:04:08Z",
                        "result": "failed",
                        "exit_code": 1,
                        "duration_seconds": 3.25,
                        "error": "create exited with 1",
                        "runs": 4,
                    }
                },
                "last_backup": {
                    "snapshot_id": "ab".repeat(32),
                    "time": "2026-01-01T03:04:05Z",
                    "files": 12,
                    "errors": 0,
                    "bytes_total": 4096,
                    "bytes_added": 1024,
                }
            }
        }
    });
    std::fs::write(state.join("state.json"), state_json.to_string()).unwrap();
    (config, state, text)
}

/// The schedules page shows each profile's schedule, retention, next run
/// and the daemon's last run; an edit that the loader accepts is written
/// into the file (its other keys and comments untouched, `snap config
/// check` still happy), one it refuses is a 400 with the reason and leaves
/// the file as it was.
#[test]
fn ui_schedules_page_reads_and_edits_profiles() {
    let snap = Snap::init(&[]);
    let (config, state, original) = schedules_config(&snap);
    let ui = Ui::start(&snap, &["--config", s(&config), "--state-dir", s(&state)]);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let auth = std::slice::from_ref(&bearer);

    let page = request(&ui.addr, "GET", "/schedules", auth, "");
    assert_eq!(page.status, 200, "{}", page.body);
    for wanted in [
        "Profile docs",
        "Profile child",
        "value=\"every 6h\"",
        "value=\"3\"",
        "create exited with 1",
        "failed",
        "(exit 1)",
        "3.2 s",
        "retention keeps tags pinned",
        "SIGHUP",
    ] {
        assert!(page.body.contains(wanted), "{wanted:?} not on the page:\n{}", page.body);
    }
    // The next run comes from the schedule: a date, not a dash.
    let jobs = page.body.split("<table class=\"jobs\">").nth(1).unwrap();
    let next_cell = jobs.split("<td class=\"mono\">every 6h</td><td>").nth(1).unwrap();
    assert!(next_cell.starts_with("20"), "{next_cell}");
    let dashboard = request(&ui.addr, "GET", "/", auth, "");
    assert!(
        dashboard.body.contains("id=\"profiles\"") && dashboard.body.contains("(backup)"),
        "{}",
        dashboard.body
    );

    // A valid edit: a cron backup, keep-last 5 and keep-daily 7.
    let form = "profile=docs&schedule.backup=0+3+*+*+*&schedule.prune=&schedule.verify=\
                &retention.keep-last=5&retention.keep-hourly=&retention.keep-daily=7\
                &retention.keep-weekly=&retention.keep-monthly=&retention.keep-yearly=&retention.keep-within=";
    let saved = request(&ui.addr, "POST", "/schedules", auth, form);
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(saved.header("location").as_deref(), Some("/schedules?saved=docs"));
    let edited = std::fs::read_to_string(&config).unwrap();
    assert!(
        edited.contains("backup = \"0 3 * * *\"   # four times a day\n"),
        "{edited}"
    );
    assert!(edited.contains("# Three is plenty.\nkeep-last = 5\n"), "{edited}");
    assert!(edited.contains("keep-daily = 7"), "{edited}");
    // Every other line is as it was.
    for line in original
        .lines()
        .filter(|l| !l.starts_with("backup =") && !l.starts_with("keep-last ="))
    {
        assert!(edited.contains(line), "{line:?} lost:\n{edited}");
    }
    let check = snap.run(&["--config", s(&config), "config", "check"]);
    assert_code(&check, 0);
    let show = snap.run(&["--config", s(&config), "--json", "config", "show", "docs"]);
    let shown = parse_json(&show);
    assert_eq!(shown["schedule"]["backup"], "0 3 * * *");
    assert_eq!(shown["retention"]["keep-last"], "5");
    assert_eq!(shown["retention"]["keep-daily"], "7");
    assert_eq!(shown["retention"]["keep-tag"][0], "pinned");
    let page = request(&ui.addr, "GET", "/schedules?saved=docs", auth, "");
    assert!(page.body.contains("value=\"0 3 * * *\"") && page.body.contains("id=\"saved\""));

    // Invalid edits: refused with the loader's reason, the file unchanged.
    for (field, value, reason) in [
        ("schedule.backup", "every+0s", "at least 1s"),
        ("schedule.verify", "0+0+31+2+*", "never fires"),
        ("retention.keep-last", "-1", "expected a count"),
        ("retention.keep-weekly", "lots", "expected a count"),
        ("retention.keep-within", "soon", "keep-within"),
    ] {
        let refused = request(
            &ui.addr,
            "POST",
            "/schedules",
            auth,
            &format!("profile=docs&{field}={value}"),
        );
        assert_eq!(refused.status, 400, "{field}={value}: {}", refused.body);
        assert!(
            refused.body.contains("Not saved") && refused.body.contains(reason),
            "{field}={value}: {}",
            refused.body
        );
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            edited,
            "{field}={value} changed the file"
        );
    }
    // A key the child inherits cannot be cleared in the child.
    let refused = request(&ui.addr, "POST", "/schedules", auth, "profile=child&schedule.backup=");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("inherited from profile"), "{}", refused.body);
    // The child's first own retention keeps the policy it inherited.
    let saved = request(
        &ui.addr,
        "POST",
        "/schedules",
        auth,
        "profile=child&retention.keep-last=1",
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    let shown = parse_json(&snap.run(&["--config", s(&config), "--json", "config", "show", "child"]));
    assert_eq!(shown["retention"]["keep-last"], "1");
    assert_eq!(shown["retention"]["keep-daily"], "7");
    assert_eq!(shown["retention"]["keep-tag"][0], "pinned");
    assert_eq!(shown["tags"][0], "child");
    let parent = parse_json(&snap.run(&["--config", s(&config), "--json", "config", "show", "docs"]));
    assert_eq!(parent["retention"]["keep-last"], "5");
    assert_code(&snap.run(&["--config", s(&config), "config", "check"]), 0);
    // An unknown setting or profile is refused too.
    let refused = request(&ui.addr, "POST", "/schedules", auth, "profile=docs&hooks.before=rm");
    assert_eq!(refused.status, 400);
    let refused = request(
        &ui.addr,
        "POST",
        "/schedules",
        auth,
        "profile=nope&retention.keep-last=1",
    );
    assert_eq!(refused.status, 400);
}

/// The snapshots the UI keeps between page loads follow the repository: a
/// snapshot another process makes after the UI started appears on the next
/// load, and one it forgets disappears (from the table, the dashboard and
/// the restore wizard's list).
#[test]
fn ui_snapshot_list_follows_other_processes() {
    let snap = Snap::init(&[]);
    let src = source_tree(snap.scratch());
    let first = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    let ui = Ui::start(&snap, &[]);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let auth = std::slice::from_ref(&bearer);
    let get = |path: &str| {
        let reply = request(&ui.addr, "GET", path, auth, "");
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        reply.body
    };
    let page = get("/snapshots");
    assert!(page.contains("1 snapshots") && page.contains(&first), "{page}");

    std::fs::write(src.join("top.txt"), b"changed by another process\n").unwrap();
    let second = snap.create(&[s(&src)])["id"].as_str().unwrap().to_string();
    let page = get("/snapshots");
    assert!(page.contains("2 snapshots") && page.contains(&second), "{page}");
    assert!(get("/restore").contains(&second));
    assert!(get("/").contains(&second[..8]), "the dashboard's last backup");

    snap.ok(&["forget", &second]);
    let page = get("/snapshots");
    assert!(page.contains("1 snapshots") && !page.contains(&second), "{page}");
    assert!(!get("/restore").contains(&second));
    assert!(!get("/").contains(&second[..8]));
    assert!(get("/").contains(&first[..8]));
}
