//! Profiles, hooks and notifications (README "Profiles", "Hooks and notifications").

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::util::{describe, parse_json, tempdir, SNAP_ENV};

/// The issue's minimal profile, exactly; tests point its paths elsewhere by
/// replacing only the values.
const MINIMAL: &str = r#"[profile.docs]
repository = "/var/backups/snap"
password-file = "/etc/snap/password"
paths = ["/home/ana/Documents"]
exclude = ["*.tmp"]
tags = ["docs"]

[profile.docs.schedule]
backup = "every 1s"          # or a cron expression, e.g. "0 2 * * *"
run-missed = true

[profile.docs.retention]
keep-last = 3

[profile.docs.hooks]
after-success = "echo ok >> /tmp/snap-hooks.log"
on-failure = "echo failed >> /tmp/snap-hooks.log"
"#;

/// A home of its own: config, cache and data directories in `root`.
struct Home {
    root: PathBuf,
    config: PathBuf,
}

impl Home {
    fn new(root: &Path, config_text: &str) -> Home {
        let config = root.join("config.toml");
        fs::write(&config, config_text).unwrap();
        fs::write(root.join("password"), "profile password\n").unwrap();
        Home {
            root: root.to_path_buf(),
            config,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snap"));
        for var in SNAP_ENV {
            cmd.env_remove(var);
        }
        cmd.env("HOME", &self.root)
            .env("XDG_CONFIG_HOME", self.root.join("xdg-config"))
            .env("XDG_CACHE_HOME", self.root.join("xdg-cache"))
            .env("XDG_DATA_HOME", self.root.join("xdg-data"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    #[track_caller]
    fn code(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "snap {args:?}\n{}", describe(&out));
        out
    }

    fn init(&self, profile: &str) {
        self.code(
            &[
                "--profile",
                profile,
                "init",
                "--kdf-memory-kib",
                "64",
                "--kdf-iterations",
                "1",
            ],
            0,
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(self.root.join("hooks.log")).unwrap_or_default()
    }
}

/// MINIMAL with its paths in `root`.
fn minimal_in(root: &Path) -> String {
    let at = |name: &str| root.join(name).display().to_string();
    MINIMAL
        .replace("/var/backups/snap", &at("repo"))
        .replace("/etc/snap/password", &at("password"))
        .replace("/home/ana/Documents", &at("Documents"))
        .replace("/tmp/snap-hooks.log", &at("hooks.log"))
}

#[test]
fn the_minimal_profile_works_as_written() {
    let dir = tempdir();
    let root = dir.path();
    let home = Home::new(root, &minimal_in(root));
    let docs = root.join("Documents");
    fs::create_dir(&docs).unwrap();
    fs::write(docs.join("letter.txt"), "dear ana").unwrap();
    fs::write(docs.join("draft.tmp"), "scratch").unwrap();
    home.init("docs");
    for i in 0..4 {
        fs::write(docs.join(format!("note{i}.txt")), format!("note {i}")).unwrap();
        home.code(&["--profile", "docs", "create"], 0);
    }
    let snapshots = parse_json(&home.code(&["--profile", "docs", "snapshots", "--json"], 0));
    let snapshots = snapshots.as_array().unwrap();
    assert_eq!(snapshots.len(), 4);
    for s in snapshots {
        assert_eq!(s["tags"], serde_json::json!(["docs"]), "{s}");
        assert_eq!(s["paths"], serde_json::json!([docs.display().to_string()]), "{s}");
    }
    let latest = home.code(&["--profile", "docs", "ls", "latest", "--json"], 0);
    let listing = String::from_utf8_lossy(&latest.stdout);
    assert!(
        listing.contains("letter.txt") && listing.contains("note3.txt"),
        "{listing}"
    );
    assert!(
        !listing.contains("draft.tmp"),
        "the profile's exclude was not applied: {listing}"
    );
    assert_eq!(home.log(), "ok\nok\nok\nok\n");

    // forget with no policy flag applies the profile's keep-last = 3.
    home.code(&["--profile", "docs", "forget"], 0);
    let left = parse_json(&home.code(&["--profile", "docs", "snapshots", "--json"], 0));
    assert_eq!(left.as_array().unwrap().len(), 3);

    // The environment names the profile too; a flag overrides its key (a
    // list flag replaces the profile's list).
    let out = home
        .command(&["create", "--tag", "manual", "--json"])
        .env("SNAP_PROFILE", "docs")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let id = parse_json(&out)["id"].clone();
    let all = parse_json(&home.code(&["--profile", "docs", "snapshots", "--json"], 0));
    let manual = all.as_array().unwrap().iter().find(|s| s["id"] == id).unwrap();
    assert_eq!(manual["tags"], serde_json::json!(["manual"]), "{manual}");

    // A failed backup runs on-failure: the repository is gone.
    fs::rename(root.join("repo"), root.join("repo.moved")).unwrap();
    home.code(&["--profile", "docs", "create"], 10);
    assert!(home.log().ends_with("ok\nfailed\n"), "{}", home.log());
}

#[test]
fn hooks_run_in_order_with_their_environment() {
    let dir = tempdir();
    let root = dir.path();
    let log = root.join("hooks.log");
    let line = format!(
        "echo \"$SNAP_HOOK profile=$SNAP_PROFILE status=$SNAP_EXIT_STATUS id=$SNAP_SNAPSHOT_ID \
         repo=$SNAP_REPOSITORY password=${{SNAP_PASSWORD:-none}}\" >> {log}; \
         [ -z \"$SNAP_SUMMARY\" ] || echo \"$SNAP_SUMMARY\" > {summary}; \
         [ -z \"$SNAP_ERROR\" ] || echo \"error=$SNAP_ERROR\" >> {log}",
        log = log.display(),
        summary = root.join("summary.json").display()
    );
    let config = format!(
        r#"
[profile.base]
repository = "{repo}"
password-file = "{password}"
paths = ["{data}"]

[profile.base.hooks]
before = '{line}'
after-success = '{line}'
on-failure = '{line}'
after = '{line}'

[profile.broken]
inherit = "base"
hooks.before = "echo before-failed >> {log}; exit 7"
"#,
        repo = root.join("repo").display(),
        password = root.join("password").display(),
        data = root.join("data").display(),
        log = log.display(),
    );
    let home = Home::new(root, &config);
    fs::create_dir(root.join("data")).unwrap();
    fs::write(root.join("data/file"), "contents").unwrap();
    home.init("base");
    fs::remove_file(&log).ok();

    let out = home
        .command(&["--profile", "base", "create", "--json"])
        .env("SNAP_PASSWORD", "must not leak")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let created = parse_json(&out);
    let id = created["id"].as_str().unwrap().to_string();
    let repo = root.join("repo").display().to_string();
    let lines: Vec<String> = home.log().lines().map(String::from).collect();
    assert_eq!(
        lines,
        [
            format!("before profile=base status= id= repo={repo} password=none"),
            format!("after-success profile=base status=0 id={id} repo={repo} password=none"),
            format!("after profile=base status=0 id={id} repo={repo} password=none"),
        ]
    );
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["id"], created["id"]);
    assert_eq!(summary["snapshot"]["summary"], created["snapshot"]["summary"]);

    // A failing before hook: no backup, exit 1, on-failure and after still run.
    fs::remove_file(&log).unwrap();
    let out = home.code(&["--profile", "broken", "create"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("before hook") && stderr.contains("exit status: 7"),
        "{stderr}"
    );
    let text = home.log();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "before-failed");
    assert!(
        lines[1].starts_with("on-failure profile=broken status=1 id= "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("error=") && lines[2].contains("before hook"),
        "{text}"
    );
    assert!(lines[3].starts_with("after profile=broken status=1 "), "{text}");
    assert_eq!(lines.len(), 5, "{text}");
    let snapshots = parse_json(&home.code(&["--profile", "base", "snapshots", "--json"], 0));
    assert_eq!(
        snapshots.as_array().unwrap().len(),
        1,
        "a snapshot was written after a failed before hook"
    );
}

#[test]
fn a_hanging_hook_is_killed_with_its_children_at_its_timeout() {
    let dir = tempdir();
    let root = dir.path();
    let pidfile = root.join("pid");
    let config = format!(
        r#"
[profile.slow]
repository = "{repo}"
password-file = "{password}"
paths = ["{password}"]
hooks.timeout = "1s"
hooks.before = "sleep 300 & echo $! > {pidfile}; wait"
"#,
        repo = root.join("repo").display(),
        password = root.join("password").display(),
        pidfile = pidfile.display(),
    );
    let home = Home::new(root, &config);
    let start = Instant::now();
    let out = home.code(&["--profile", "slow", "create"], 1);
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timed out after 1s and was killed"), "{stderr}");
    let pid = fs::read_to_string(&pidfile).unwrap().trim().to_string();
    // Killed, not left behind: gone, or a zombie waiting for a reaper.
    std::thread::sleep(Duration::from_millis(200));
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "the hook's child {pid} still runs: {state}"
    );
}

/// Accepts one HTTP request on loopback and answers 200; returns its body.
fn receive_one() -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook/path", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).unwrap();
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if data.len() >= end + 4 + length {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                    return text;
                }
            }
            assert!(n > 0, "connection closed early: {text}");
        }
    });
    (url, handle)
}

#[test]
fn failures_are_posted_to_the_webhook_and_piped_to_the_command() {
    let dir = tempdir();
    let root = dir.path();
    let (url, receiver) = receive_one();
    let config = format!(
        r#"
[profile.p]
repository = "{repo}"
password-file = "{password}"
paths = ["{password}"]

[profile.p.notify]
webhook = "{url}"
command = "cat > {notice}"
"#,
        repo = root.join("no-repo-here").display(),
        password = root.join("password").display(),
        notice = root.join("notice.json").display(),
    );
    let home = Home::new(root, &config);
    home.code(&["--profile", "p", "create"], 10);
    let request = receiver.join().unwrap();
    assert!(request.starts_with("POST /hook/path HTTP/1.1\r\n"), "{request}");
    assert!(
        request.to_ascii_lowercase().contains("content-type: application/json"),
        "{request}"
    );
    let body: serde_json::Value = serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["profile"], "p");
    assert_eq!(body["status"], "failure");
    assert_eq!(body["exit_status"], 10);
    assert!(body["error"].as_str().unwrap().contains("no-repo-here"), "{body}");
    assert!(body["host"].is_string() && body["time"].is_string(), "{body}");
    let piped: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.join("notice.json")).unwrap()).unwrap();
    assert_eq!(piped["error"], body["error"]);

    // A notification that cannot be sent only warns: the exit code is the backup's.
    let config = config.replace(&url, "http://127.0.0.1:1/closed");
    fs::write(&home.config, config).unwrap();
    let out = home.code(&["--profile", "p", "create"], 10);
    assert!(String::from_utf8_lossy(&out.stderr).contains("notification to http://127.0.0.1:1/*** failed"));
}

/// A webhook server that reads the request, then answers a 200 one byte
/// every 500 ms for up to 30 s: only a timeout on the whole request ends the
/// notification early (and as a failure).
#[test]
fn a_dripping_webhook_fails_at_its_timeout_and_hides_url_credentials() {
    let dir = tempdir();
    let root = dir.path();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let start = Instant::now();
        let head = b"HTTP/1.1 200 OK\r\nX-Drip: ";
        for i in 0.. {
            let byte = head.get(i).copied().unwrap_or(b'a');
            if start.elapsed() > Duration::from_secs(30) || stream.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let config = format!(
        r#"
[profile.p]
repository = "{repo}"
password-file = "{password}"
paths = ["{password}"]

[profile.p.notify]
webhook = "http://ana:s3cret-token@127.0.0.1:{port}/drip"
timeout = "2s"
"#,
        repo = root.join("no-repo-here").display(),
        password = root.join("password").display(),
    );
    let home = Home::new(root, &config);
    let start = Instant::now();
    let out = home.code(&["--profile", "p", "create"], 10);
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(12), "took {took:?}\n{stderr}");
    assert!(
        stderr.contains(&format!("notification to http://***@127.0.0.1:{port}/*** failed")),
        "{stderr}"
    );
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(!stderr.contains("s3cret-token") && !stderr.contains("ana:"), "{stderr}");
}

#[test]
fn config_check_and_show() {
    let dir = tempdir();
    let root = dir.path();
    let home = Home::new(
        root,
        &(minimal_in(root) + "\n[profile.work]\ninherit = \"docs\"\npaths = [\"/w\"]\n"),
    );
    let out = home.code(&["config", "check"], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[profile.work]") && text.contains("keep-last = \"3\""),
        "{text}"
    );
    let shown = parse_json(&home.code(&["config", "show", "work", "--json"], 0));
    assert_eq!(shown["paths"], serde_json::json!(["/w"]));
    assert_eq!(shown["tags"], serde_json::json!(["docs"]));

    // A password in the file: masked, and refused unless the file is 0600.
    let with_password = minimal_in(root).replace("password-file = ", "password = \"hunter2\"\n#");
    fs::write(&home.config, &with_password).unwrap();
    super::util::chmod(&home.config, 0o644);
    let out = home.code(&["config", "check"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", home.config.display())) && stderr.contains("profile.docs.password"),
        "{stderr}"
    );
    super::util::chmod(&home.config, 0o600);
    let shown = home.code(&["config", "show", "docs", "--json"], 0);
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("hunter2"));

    // A webhook's credentials and path (often its token) are not shown either.
    let hooked = minimal_in(root) + "\n[profile.docs.notify]\nwebhook = \"https://ana:pw1@hooks.example/T0/tok3n\"\n";
    fs::write(&home.config, hooked).unwrap();
    for args in [&["config", "check"][..], &["config", "show", "docs", "--json"]] {
        let out = home.code(args, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("https://***@hooks.example/***"), "{text}");
        assert!(!text.contains("pw1") && !text.contains("tok3n"), "{text}");
    }

    // Bad values name file, line and key, for every command that reads the profile.
    let bad = minimal_in(root).replace("keep-last = 3", "keep-last = -1");
    fs::write(&home.config, bad).unwrap();
    for args in [&["config", "check"][..], &["--profile", "docs", "snapshots"]] {
        let out = home.code(args, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}:13:", home.config.display()))
                && stderr.contains("profile.docs.retention.keep-last"),
            "{stderr}"
        );
    }
    fs::write(&home.config, minimal_in(root)).unwrap();
    let out = home.code(&["--profile", "nope", "snapshots"], 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile \"nope\""));
}

/// `config check` and the daemon refuse the schedules the daemon cannot
/// run, naming file, line and key: exit 2, not a crash at the first run.
#[test]
fn bad_schedules_and_zero_timeouts_are_config_errors() {
    let dir = tempdir();
    let root = dir.path();
    for (table, line) in [
        ("[profile.p.schedule]", "backup = \"every 0s\""),
        ("[profile.p.schedule]", "prune = \"61 * * * *\""),
        ("[profile.p.schedule]", "verify = \"0 0 31 2 *\""),
        ("[profile.p.hooks]", "timeout = \"0s\""),
    ] {
        let config = format!("[profile.p]\nrepository = \"/nowhere\"\n\n{table}\n{line}\n");
        let home = Home::new(root, &config);
        let key = format!("{}.{}", &table[1..table.len() - 1], line.split(' ').next().unwrap());
        let state = root.join("state").display().to_string();
        for args in [&["config", "check"][..], &["daemon", "--state-dir", &state][..]] {
            let out = home.code(args, 2);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("config.toml") && stderr.contains(":5:") && stderr.contains(&key),
                "{args:?} {line}: {stderr}"
            );
        }
    }
}

/// A `before` hook that runs `snap create` itself (SNAP_PROFILE inherited)
/// makes one nested backup without the profile's hooks: no recursion.
#[test]
fn snap_inside_a_hook_does_not_run_the_hooks_again() {
    let dir = tempdir();
    let root = dir.path();
    fs::create_dir(root.join("Documents")).unwrap();
    fs::write(root.join("Documents").join("a.txt"), "a").unwrap();
    let log = root.join("hooks.log");
    let config = format!(
        r#"
[profile.p]
repository = "{repo}"
password-file = "{password}"
paths = ["{docs}"]

[profile.p.hooks]
before = "echo before >> {log} && {snap} --config {config} create --json > /dev/null"
after = "echo after >> {log}"
timeout = "20s"
"#,
        repo = root.join("repo").display(),
        password = root.join("password").display(),
        docs = root.join("Documents").display(),
        log = log.display(),
        snap = env!("CARGO_BIN_EXE_snap"),
        config = root.join("config.toml").display(),
    );
    let home = Home::new(root, &config);
    home.init("p");
    let started = Instant::now();
    home.code(&["--profile", "p", "create"], 0);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(home.log(), "before\nafter\n");
    let out = home.code(&["--profile", "p", "snapshots", "--json"], 0);
    let snapshots = parse_json(&out);
    assert_eq!(snapshots.as_array().map(Vec::len), Some(2), "{snapshots}");
}
