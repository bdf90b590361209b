//! The scheduler (`snap daemon`), `snap schedule`, `snap health` and the
//! metrics: the real daemon, running the real binary as its jobs, on temp
//! repositories, with the daemon's state in a temp directory.

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::util::*;

/// A repository, a source tree, a config file and a state directory.
struct Setup {
    snap: Snap,
    src: PathBuf,
    config: PathBuf,
    state: PathBuf,
    hooks_log: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_init(&[])
    }

    fn with_init(init: &[&str]) -> Setup {
        let snap = Snap::init(init);
        let src = snap.scratch().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a.txt"), b"alpha").unwrap();
        fs::write(src.join("b.tmp"), b"left out").unwrap();
        fs::write(snap.scratch().join("password"), format!("{PASSWORD}\n")).unwrap();
        Setup {
            config: snap.scratch().join("config.toml"),
            state: snap.scratch().join("state"),
            hooks_log: snap.scratch().join("hooks.log"),
            src,
            snap,
        }
    }

    /// The issue's minimal profile, pointed at this setup's files.
    fn profile(&self, name: &str, backup: &str, extra_schedule: &str, keep_last: u32, extra: &str) -> String {
        format!(
            r#"
[profile.{name}]
repository = "{repo}"
password-file = "{pw}"
cache-dir = "{cache}"
paths = ["{src}"]
exclude = ["*.tmp"]
tags = ["{name}"]
{extra}

[profile.{name}.schedule]
backup = "{backup}"
run-missed = true
{extra_schedule}

[profile.{name}.retention]
keep-last = {keep_last}

[profile.{name}.hooks]
after-success = "echo ok >> {log}"
on-failure = "echo failed >> {log}"
"#,
            repo = s(&self.snap.repo),
            pw = s(&self.snap.scratch().join("password")),
            cache = s(&self.snap.cache),
            src = s(&self.src),
            log = s(&self.hooks_log),
        )
    }

    fn write_config(&self, text: &str) {
        fs::write(&self.config, text).unwrap();
    }

    /// A snap command with this setup's config and state, and no other
    /// environment snap reads.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snap"));
        for (var, _) in std::env::vars() {
            if var.starts_with("SNAP_") {
                cmd.env_remove(var);
            }
        }
        cmd.arg("--config").arg(&self.config);
        cmd.env("SNAP_STATE_DIR", &self.state);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().unwrap()
    }

    fn daemon(&self, extra: &[&str]) -> Daemon {
        let log = self.snap.scratch().join(format!("daemon-{}.log", now_ns()));
        let child = self
            .command()
            .arg("daemon")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn state(&self) -> Value {
        fs::read(self.state.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    fn job(&self, profile: &str, job: &str) -> Value {
        self.state()["profiles"][profile]["jobs"][job].clone()
    }

    /// Complete (not checkpoint) snapshots, with `tag` if given.
    fn complete_snapshots(&self, tag: Option<&str>) -> Vec<Value> {
        self.snap
            .snapshots()
            .into_iter()
            .filter(|s| s["checkpoint"] == false)
            .filter(|s| tag.is_none_or(|t| s["tags"].as_array().unwrap().iter().any(|x| x == t)))
            .collect()
    }

    /// Makes the persisted next run of a job lie in the past, as after the
    /// machine was off when the run was due.
    fn make_overdue(&self, profile: &str, job: &str) {
        let mut state = self.state();
        let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
        state["profiles"][profile]["jobs"][job]["next_run"] = Value::String(past.to_string());
        fs::write(self.state.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal).unwrap();
    }

    /// SIGTERM, and the daemon must exit 0 within `limit`.
    fn stop(mut self, limit: Duration) -> String {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                assert_eq!(status.code(), Some(0), "daemon exit {status}; log:\n{log}");
                return log;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the daemon did not stop within {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `done` holds; panics with the log after `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the daemon ended ({status}) before {what}; log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("no {what} within {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `job` of `profile` have finished (`runs` started and the last one ended).
fn finished_runs(setup: &Setup, profile: &str, job: &str) -> u64 {
    let j = setup.job(profile, job);
    let runs = j["runs"].as_u64().unwrap_or(0);
    let ended = match (j["last_start"].as_str(), j["last_end"].as_str()) {
        (Some(start), Some(end)) => {
            end.parse::<jiff::Timestamp>().unwrap() >= start.parse::<jiff::Timestamp>().unwrap()
        }
        _ => false,
    };
    if ended {
        runs
    } else {
        runs.saturating_sub(1)
    }
}

#[test]
fn every_second_makes_the_expected_snapshots_and_keeps_the_last_three() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "every 1s", "", 3, ""));
    let started = Instant::now();
    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("5 finished backups", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 5
    });
    let elapsed = started.elapsed();
    // Stopped right after a run ended: the next is most of a second away.
    let log = daemon.stop(Duration::from_secs(30));
    // `every 1s`: the first run at start-up, then one a second, not faster.
    assert!(
        elapsed >= Duration::from_millis(3900),
        "5 runs in {elapsed:?}; log:\n{log}"
    );
    let backup = setup.job("docs", "backup");
    assert_eq!(backup["result"], "success", "{backup}; log:\n{log}");
    let runs = backup["runs"].as_u64().unwrap();
    assert!((5..=6).contains(&runs), "{runs} runs; log:\n{log}");
    // keep-last = 3 applied by the forget after each backup.
    let kept = setup.complete_snapshots(Some("docs"));
    assert_eq!(kept.len(), 3, "{kept:?}\nlog:\n{log}");
    // The profile's excludes apply; its hooks ran once per successful run.
    let listed = setup.snap.ls_paths("latest");
    assert!(listed.iter().any(|p| p.ends_with("a.txt")), "{listed:?}");
    assert!(!listed.iter().any(|p| p.ends_with("b.tmp")), "{listed:?}");
    let hooks = fs::read_to_string(&setup.hooks_log).unwrap_or_default();
    assert_eq!(hooks.lines().filter(|l| *l == "ok").count() as u64, runs, "{hooks}");
    assert!(log.contains("docs backup: success"), "{log}");
    // Log lines start with a timestamp.
    assert!(
        log.lines()
            .all(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T'),
        "{log}"
    );
    setup.snap.ok(&["verify"]);
}

#[test]
fn a_restart_neither_repeats_nor_forgets_runs() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "every 1h", "", 10, ""));
    // First start: `every` runs at once (no run yet), then not for an hour.
    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("the first backup", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 1
    });
    daemon.stop(Duration::from_secs(30));
    assert_eq!(setup.complete_snapshots(None).len(), 1);

    // A restart before the next run is due runs nothing.
    let daemon = setup.daemon(&[]);
    std::thread::sleep(Duration::from_millis(1500));
    let log = daemon.stop(Duration::from_secs(30));
    assert_eq!(
        setup.complete_snapshots(None).len(),
        1,
        "a restart repeated the run; log:\n{log}"
    );
    assert_eq!(setup.job("docs", "backup")["runs"], 1);

    // The machine was off when the run was due: run-missed catches it up at once.
    setup.make_overdue("docs", "backup");
    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("the missed backup", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 2
    });
    let log = daemon.stop(Duration::from_secs(30));
    assert!(log.contains("was missed; running it now"), "{log}");
    assert_eq!(setup.complete_snapshots(None).len(), 2);
    let next: jiff::Timestamp = setup.job("docs", "backup")["next_run"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(next > jiff::Timestamp::now(), "next run {next} is not ahead");

    // Without run-missed, a missed run is skipped to the next one.
    setup.write_config(
        &setup
            .profile("docs", "every 1h", "", 10, "")
            .replace("run-missed = true", "run-missed = false"),
    );
    setup.make_overdue("docs", "backup");
    let daemon = setup.daemon(&[]);
    std::thread::sleep(Duration::from_millis(1500));
    let log = daemon.stop(Duration::from_secs(30));
    assert!(log.contains("run-missed is off"), "{log}");
    assert_eq!(setup.complete_snapshots(None).len(), 2, "{log}");
}

#[test]
fn a_run_still_going_when_the_next_is_due_is_skipped() {
    let setup = Setup::new();
    // A before-hook of 2.5 s makes each run outlast the 1 s interval.
    let config = setup.profile("docs", "every 1s", "", 10, "").replace(
        "[profile.docs.hooks]\n",
        "[profile.docs.hooks]\nbefore = \"sleep 2.5\"\n",
    );
    setup.write_config(&config);
    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("a skipped run", Duration::from_secs(30), || {
        setup.job("docs", "backup")["skipped"].as_u64().unwrap_or(0) >= 2
    });
    daemon.wait_for("the first run's end", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 1
    });
    let log = daemon.stop(Duration::from_secs(30));
    assert!(log.contains("skipped the run due"), "{log}");
    assert!(log.contains("still going"), "{log}");
    // Never two at once: each run started after the previous ended.
    let starts = log.matches("docs backup: started").count();
    let ends = log.matches("docs backup: success").count() + log.matches("docs backup: interrupted").count();
    assert!(
        starts >= 1 && starts - ends <= 1,
        "{starts} starts, {ends} ends; log:\n{log}"
    );
    assert!(!setup.complete_snapshots(None).is_empty(), "{log}");
}

#[test]
fn sigterm_mid_backup_leaves_a_verifiable_repository_and_the_next_run_succeeds() {
    // Small packs: the backup indexes some early, well before it ends.
    let setup = Setup::with_init(&["--pack-size-mib", "1"]);
    let big = setup.src.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..3 {
        write_random_file(&big.join(format!("part{i}.bin")), 8 * MIB, 7000 + i);
    }
    setup.write_config(&setup.profile("docs", "every 1h", "", 10, ""));
    let mut daemon = setup.daemon(&[]);
    // Interrupted once it has uploaded something.
    daemon.wait_for("a backup under way", Duration::from_secs(60), || {
        object_count(&setup.snap.repo, "index") >= 1 || finished_runs(&setup, "docs", "backup") >= 1
    });
    let log = daemon.stop(Duration::from_secs(60));
    let backup = setup.job("docs", "backup");
    if backup["result"] == "success" {
        eprintln!("note: the backup finished before the signal; the interruption was not exercised");
    } else {
        assert_eq!(backup["result"], "interrupted", "{backup}; log:\n{log}");
        assert_eq!(backup["exit_code"], 130, "{backup}");
        assert!(log.contains("interrupting docs"), "{log}");
    }
    setup.snap.ok(&["verify"]);

    // The next run (caught up at start-up) completes the backup.
    setup.make_overdue("docs", "backup");
    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("the next backup", Duration::from_secs(120), || {
        finished_runs(&setup, "docs", "backup") >= 2
    });
    let log = daemon.stop(Duration::from_secs(60));
    assert_eq!(setup.job("docs", "backup")["result"], "success", "{log}");
    let target = setup.snap.scratch().join("restored");
    assert_code(&setup.snap.restore("latest", &target, &[]), 0);
    assert!(same_content(
        &big.join("part2.bin"),
        &restored(&target, &big).join("part2.bin")
    ));
    setup.snap.ok(&["verify"]);
}

#[test]
fn sighup_reloads_the_config_and_a_bad_one_keeps_the_old() {
    let setup = Setup::new();
    let one = setup.profile("docs", "every 1h", "", 10, "");
    setup.write_config(&one);
    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("the first profile's backup", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 1
    });
    // A bad config: the daemon says why and keeps going with the old one.
    setup.write_config(&format!("{one}\n[profile.bad]\nno-such-key = 1\n"));
    daemon.signal(rustix::process::Signal::HUP);
    daemon.wait_for("the reload error", Duration::from_secs(10), || {
        daemon_log_has(&setup, "reload failed, keeping the old config")
    });
    // A new profile is picked up.
    setup.write_config(&format!("{one}\n{}", setup.profile("music", "every 1h", "", 10, "")));
    daemon.signal(rustix::process::Signal::HUP);
    daemon.wait_for("the new profile's backup", Duration::from_secs(30), || {
        finished_runs(&setup, "music", "backup") >= 1
    });
    let log = daemon.stop(Duration::from_secs(30));
    assert!(log.contains("no-such-key"), "the reload error names the key:\n{log}");
    assert!(log.contains("reloaded"), "{log}");
    assert_eq!(setup.complete_snapshots(Some("music")).len(), 1, "{log}");
    assert_eq!(setup.complete_snapshots(Some("docs")).len(), 1, "{log}");
}

/// Whether any daemon log of this setup has `text`.
fn daemon_log_has(setup: &Setup, text: &str) -> bool {
    fs::read_dir(setup.snap.scratch()).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("daemon-")
            && fs::read_to_string(e.path()).is_ok_and(|l| l.contains(text))
    })
}

#[test]
fn health_is_zero_when_fresh_and_names_each_failure_by_its_code() {
    let setup = Setup::new();
    let config = format!(
        "{}\n{}",
        setup.profile("docs", "every 1h", "verify = \"@weekly\"", 10, ""),
        setup.profile("never", "every 1h", "", 10, "")
    );
    setup.write_config(&config);
    setup.snap.ok(&["create", "--tag", "docs", s(&setup.src)]);

    // Fresh: 0, and the JSON says so.
    let out = setup.run(&["--profile", "docs", "health", "--json"]);
    assert_code(&out, 0);
    let json = parse_json(&out);
    assert_eq!(json["healthy"], true, "{json}");
    assert_eq!(json["profiles"][0]["profile"], "docs");
    assert!(json["profiles"][0]["last_snapshot"]["id"].is_string(), "{json}");

    // Stale: older than --max-age is 21.
    std::thread::sleep(Duration::from_millis(2100));
    let out = setup.run(&["--profile", "docs", "health", "--max-age", "2s"]);
    assert_code(&out, 21);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("older than --max-age"),
        "{}",
        describe(&out)
    );

    // No snapshot at all is 20; --all reports the lowest code.
    let out = setup.run(&["--profile", "never", "health"]);
    assert_code(&out, 20);
    let out = setup.run(&["health", "--all", "--json"]);
    assert_code(&out, 20);
    let json = parse_json(&out);
    assert_eq!(json["profiles"].as_array().unwrap().len(), 2, "{json}");

    // A failed scheduled verify is 24 (the daemon's state records it).
    fs::create_dir_all(&setup.state).unwrap();
    fs::write(
        setup.state.join("state.json"),
        r#"{"profiles":{"docs":{"jobs":{"verify":{"result":"failed","exit_code":1}}}}}"#,
    )
    .unwrap();
    assert_code(&setup.run(&["--profile", "docs", "health"]), 24);
    // A failed last backup is 22.
    fs::write(
        setup.state.join("state.json"),
        r#"{"profiles":{"docs":{"jobs":{"backup":{"result":"failed","exit_code":1,"error":"create exited with 1"}}}}}"#,
    )
    .unwrap();
    let out = setup.run(&["--profile", "docs", "health"]);
    assert_code(&out, 22);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("create exited with 1"),
        "{}",
        describe(&out)
    );

    // A stale lock (a dead process of this host) is 23.
    fs::remove_file(setup.state.join("state.json")).unwrap();
    leave_stale_lock(&setup);
    let out = setup.run(&["--profile", "docs", "health", "--json"]);
    assert_code(&out, 23);
}

/// Leaves a lock whose process is gone: a backup of a never-ending
/// standard input holds its lock until SIGKILL.
fn leave_stale_lock(setup: &Setup) {
    let fifo = setup.snap.scratch().join("fifo");
    mkfifo(&fifo, 0o600);
    let mut child = setup
        .snap
        .command()
        .args(["create", "--stdin", "--stdin-filename", "x"])
        .stdin(fs::File::options().read(true).write(true).open(&fifo).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while object_count(&setup.snap.repo, "locks") == 0 {
        assert!(Instant::now() < deadline, "no lock taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Parses Prometheus text with prometheus_client's parser; returns the
/// family names, or None (with a note) when the module is missing here.
fn prometheus_families(text: &str) -> Option<Vec<String>> {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       assert 'profile' in s.labels, s\n\
        \x20   print(f.name)\n";
    let have = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .status();
    if !have.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("SNAP_TEST_REQUIRE_ALL").is_none(),
            "python3 prometheus_client missing (pip install prometheus_client)"
        );
        eprintln!("note: python3 prometheus_client missing; parse check skipped");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected:\n{text}\n{}",
        describe(&out)
    );
    Some(String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect())
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn metrics_are_served_and_written_as_prometheus_text() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "every 1h", "", 10, ""));
    let textfile = setup.snap.scratch().join("textfile").join("snap.prom");
    let mut daemon = setup.daemon(&["--metrics-listen", "127.0.0.1:0", "--metrics-textfile", s(&textfile)]);
    daemon.wait_for("the first backup", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 1
    });
    let line = daemon.log();
    let addr = line
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{line}"))
        .to_string();
    let response = http_get(&addr, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains("snap_job_last_success{profile=\"docs\",job=\"backup\"} 1"),
        "{body}"
    );
    assert!(body.contains("snap_backup_last_files{profile=\"docs\"} 1"), "{body}");
    // The size metric is the repository's, as `stats` reports it.
    let size: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("snap_repository_size_bytes{profile=\"docs\"} "))
        .unwrap_or_else(|| panic!("no repository size in {body}"))
        .parse()
        .unwrap();
    let stats = setup.run(&["--profile", "docs", "stats", "--json"]);
    assert_code(&stats, 0);
    assert_eq!(
        parse_json(&stats)["repository"]["pack_bytes"].as_u64(),
        Some(size),
        "{body}"
    );
    assert!(size > 0);
    assert!(http_get(&addr, "/other").starts_with("HTTP/1.1 404"));
    let file = fs::read_to_string(&textfile).unwrap();
    daemon.stop(Duration::from_secs(30));
    for text in [body, file.as_str()] {
        if let Some(families) = prometheus_families(text) {
            for name in [
                "snap_job_last_success",
                "snap_job_last_duration_seconds",
                "snap_job_next_run_timestamp_seconds",
                "snap_job_running",
                "snap_backup_last_snapshot_timestamp_seconds",
                "snap_backup_last_read_bytes",
                "snap_backup_last_added_bytes",
                "snap_backup_last_errors",
                "snap_repository_size_bytes",
            ] {
                // prometheus_client drops a counter's `_total` and a
                // gauge keeps its name.
                assert!(families.iter().any(|f| f == name), "{name} missing from {families:?}");
            }
        }
    }
}

#[test]
fn schedule_list_and_install_dry_run() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "0 2 * * *", "verify = \"@weekly\"\ntimezone = \"utc\"", 3, ""));
    let out = setup.run(&["schedule", "list", "--json"]);
    assert_code(&out, 0);
    let rows = parse_json(&out);
    let jobs: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"].as_str().unwrap())
        .collect();
    // A retention policy brings a weekly prune.
    assert_eq!(jobs, ["backup", "prune", "verify"], "{rows}");
    let next: jiff::Timestamp = rows[0]["next_run"].as_str().unwrap().parse().unwrap();
    let at = next.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    assert_eq!((at.hour(), at.minute()), (2, 0), "{next}");
    let out = setup.run(&["schedule", "list"]);
    assert_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 2 * * *"),
        "{}",
        describe(&out)
    );

    let home = tempdir();
    let mut cmd = setup.command();
    cmd.env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"));
    let out = cmd
        .args(["schedule", "install", "--systemd", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "would write {}",
            s(&home.path().join("config/systemd/user/snap-daemon.service"))
        )),
        "{text}"
    );
    assert!(
        text.contains("ExecStart=") && text.contains(" daemon") && text.contains(s(&setup.config)),
        "{text}"
    );
    assert!(!home.path().join("config").exists(), "a dry run wrote files");

    let mut cmd = setup.command();
    cmd.env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"));
    let out = cmd.args(["schedule", "install", "--systemd"]).output().unwrap();
    assert_code(&out, 0);
    let unit = fs::read_to_string(home.path().join("config/systemd/user/snap-daemon.service")).unwrap();
    assert!(
        unit.contains("KillMode=mixed") && unit.contains("ExecReload="),
        "{unit}"
    );

    let out = setup
        .command()
        .args(["schedule", "install", "--cron", "--dry-run"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("@reboot "),
        "{}",
        describe(&out)
    );

    // A bad schedule is a config error naming the profile and the key.
    setup.write_config(&setup.profile("docs", "every soon", "", 3, ""));
    let out = setup.run(&["schedule", "list"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("docs") && err.contains("backup") && err.contains("every soon"),
        "{err}"
    );
}

#[test]
fn schedule_install_quotes_odd_paths_and_passes_daemon_flags_on() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "0 2 * * *", "", 3, ""));
    let odd = setup.snap.scratch().join("50% of $HOME's \"state\"");
    let metrics = setup.snap.scratch().join("prom").join("snap.prom");
    let flags = [
        "--state-dir",
        s(&odd),
        "--metrics-listen",
        "127.0.0.1:9911",
        "--metrics-textfile",
        s(&metrics),
    ];
    let mut cron = vec!["schedule", "install", "--cron", "--dry-run"];
    cron.extend(flags);
    let out = setup.run(&cron);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("@reboot "))
        .unwrap_or_else(|| panic!("no crontab line in {text}"));
    // A bare `%` would end cron's command; undo cron's `\%`, then let sh
    // split the words as it will at boot.
    assert!(!line.replace("\\%", "").contains('%'), "{line}");
    let script = format!("set -- {}; printf '%s\\n' \"$@\"", line.replace("\\%", "%"));
    let words = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let words = String::from_utf8(words.stdout).unwrap();
    let words: Vec<&str> = words.lines().collect();
    assert_eq!(&words[1..4], ["--config", s(&setup.config), "daemon"], "{line}");
    assert_eq!(&words[4..], flags, "{line}");

    // Every `%` and `$` in the unit is doubled, so systemd expands none.
    let home = tempdir();
    let mut systemd = vec!["schedule", "install", "--systemd", "--dry-run"];
    systemd.extend(flags);
    let out = setup
        .command()
        .env("XDG_CONFIG_HOME", home.path())
        .args(&systemd)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains("50%% of $$HOME's \\\"state\\\""), "{exec}");
    assert!(exec.contains("--metrics-listen 127.0.0.1:9911"), "{exec}");

    // A line break cannot be written into either file.
    let broken = setup.snap.scratch().join("a\nb");
    let out = setup.run(&["schedule", "install", "--cron", "--dry-run", "--state-dir", s(&broken)]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("line break"), "{}", describe(&out));
}

#[test]
fn sigterm_interrupts_a_plain_create_like_ctrl_c() {
    let snap = Snap::init(&["--pack-size-mib", "1"]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..4 {
        write_random_file(&src.join(format!("part{i}.bin")), 16 * MIB, 9100 + i);
    }
    let log = snap.scratch().join("create.log");
    let mut child = snap
        .command()
        .args(["create", s(&src)])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while object_count(&snap.repo, "index") == 0 {
        if child.try_wait().unwrap().is_some() {
            eprintln!("note: the backup finished before it could be interrupted");
            return;
        }
        assert!(Instant::now() < deadline, "no index file within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    let err = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{status}; stderr:\n{err}");
    assert!(err.contains("interrupted"), "{err}");
    snap.ok(&["verify"]);
}

/// A daemon once run with its clock a year ahead leaves a next run a year
/// ahead in the state; the next daemon, on the right clock, must see that
/// and run within seconds instead of waiting a year.
#[test]
fn a_clock_that_ran_ahead_does_not_stall_the_schedule() {
    if Command::new("faketime")
        .arg("-f")
        .arg("+0d")
        .arg("true")
        .status()
        .is_err()
    {
        println!("skipped: faketime is not installed (.ci/run installs it)");
        return;
    }
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "every 2s", "", 3, ""));
    let log = setup.snap.scratch().join("daemon-ahead.log");
    // faketime's own preload, set on the daemon itself (the `faketime`
    // wrapper would take the SIGTERM meant for it); its runs inherit it.
    let probe = Command::new("faketime")
        .args(["-f", "+0d", "sh", "-c", "printf %s \"$LD_PRELOAD\""])
        .output()
        .unwrap();
    let preload = String::from_utf8(probe.stdout).unwrap();
    assert!(preload.contains("faketime"), "no faketime preload: {preload:?}");
    let child = setup
        .command()
        .arg("daemon")
        .env("LD_PRELOAD", preload)
        .env("FAKETIME", "+365d")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, log };
    daemon.wait_for("a backup a year ahead", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 1
    });
    daemon.stop(Duration::from_secs(30));
    let next: jiff::Timestamp = setup.job("docs", "backup")["next_run"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(next > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 300));

    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("a backup on the right clock", Duration::from_secs(15), || {
        finished_runs(&setup, "docs", "backup") >= 2
    });
    let log = daemon.stop(Duration::from_secs(30));
    assert!(log.contains("the state holds times in the future"), "{log}");
    let next: jiff::Timestamp = setup.job("docs", "backup")["next_run"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next < jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        "{next}"
    );
}

#[test]
fn a_second_daemon_on_one_state_dir_exits_locked() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "every 1h", "", 3, ""));
    let mut first = setup.daemon(&[]);
    let log = first.log.clone();
    first.wait_for("the daemon's start", Duration::from_secs(15), || {
        log_file_has(&log, "daemon started")
    });
    let out = setup.run(&["daemon"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    let pid = first.child.id();
    assert!(
        stderr.contains(&format!("another snap daemon (pid {pid}) uses the state directory")),
        "{stderr}"
    );
    first.stop(Duration::from_secs(30));
    // Its lock went with it: the next daemon starts.
    let mut next = setup.daemon(&[]);
    let log = next.log.clone();
    next.wait_for("the next daemon's start", Duration::from_secs(15), || {
        log_file_has(&log, "daemon started")
    });
    next.stop(Duration::from_secs(30));
}

fn log_file_has(log: &std::path::Path, text: &str) -> bool {
    fs::read_to_string(log).is_ok_and(|l| l.contains(text))
}

#[test]
fn a_truncated_state_file_is_set_aside_and_the_daemon_runs() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "every 1h", "", 3, ""));
    fs::create_dir_all(&setup.state).unwrap();
    let truncated = br#"{"profiles": {"docs": {"jobs": {"backup": {"next_run": "2026-"#;
    fs::write(setup.state.join("state.json"), truncated).unwrap();
    let mut daemon = setup.daemon(&[]);
    daemon.wait_for("a backup", Duration::from_secs(30), || {
        finished_runs(&setup, "docs", "backup") >= 1
    });
    let log = daemon.stop(Duration::from_secs(30));
    assert!(log.contains("was not a snap state file"), "{log}");
    let aside: Vec<_> = fs::read_dir(&setup.state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{log}");
    assert_eq!(fs::read(aside[0].path()).unwrap(), truncated);
    assert_eq!(setup.job("docs", "backup")["result"], "success", "{log}");
}

/// A client that connects and sends nothing, and one that drips its
/// request, must not keep a scraper out; an oversized head is refused.
#[test]
fn a_stalled_metrics_client_does_not_block_a_scrape() {
    let setup = Setup::new();
    setup.write_config(&setup.profile("docs", "every 1h", "", 10, ""));
    let mut daemon = setup.daemon(&["--metrics-listen", "127.0.0.1:0"]);
    let log = daemon.log.clone();
    daemon.wait_for("the metrics address", Duration::from_secs(15), || {
        log_file_has(&log, "/metrics")
    });
    let line = daemon.log();
    let addr = line
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap()
        .to_string();
    let _silent = std::net::TcpStream::connect(&addr).unwrap();
    let mut dripping = std::net::TcpStream::connect(&addr).unwrap();
    dripping.write_all(b"GET /met").unwrap();
    let started = Instant::now();
    let response = http_get(&addr, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(http_get(&addr, "/").starts_with("HTTP/1.1 404"));

    let mut big = std::net::TcpStream::connect(&addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = big.write_all(format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000)).as_bytes());
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The dripping client is cut off at the deadline (5 s), not kept forever.
    dripping.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    let cut = Instant::now();
    let _ = dripping.read_to_end(&mut rest);
    assert!(cut.elapsed() < Duration::from_secs(10), "{:?}", cut.elapsed());
    daemon.stop(Duration::from_secs(30));
}
