//! Key files, passwords, `init` and permissions: hostile key files are
//! skipped without hanging, racing `init`s leave one working repository,
//! repository and cache are private to their user, password sources that
//! fail exit 12, the default repository is created only from a terminal,
//! and an unusable cache never stops a command.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::util::*;

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("lstat").permissions().mode() & 0o777
}

/// Waits for `child` up to `limit`; kills it and fails the test past that.
#[track_caller]
fn wait_limited(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("{what} did not finish within {limit:?}\n{}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn key_names(repo: &Path) -> Vec<String> {
    dir_names(&repo.join("keys"))
}

// ------------------------------------------------------------ hostile keys

/// A storage writer plants key files whose argon2id parameters would take
/// hours (2^32 passes) or a gigabyte, and one huge file: every command still
/// opens the repository at once with the real key, reports each planted
/// file, and `key remove` can take them away.
#[test]
fn key_files_with_absurd_kdf_parameters_are_reported_and_skipped() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), b"alpha").unwrap();
    snap.create(&[s(&src)]);

    let real = key_names(&snap.repo);
    assert_eq!(real.len(), 1);
    let bytes = fs::read(snap.repo.join("keys").join(&real[0])).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    // Names that sort before the real key, so they are tried first.
    let planted = [
        ("iterations", 4294967295u64, format!("{:064x}", 1)),
        ("memory_kib", 1 << 20, format!("{:064x}", 2)),
        ("parallelism", 255, format!("{:064x}", 3)),
    ];
    for (field, value, name) in &planted {
        let mut hostile = json.clone();
        hostile["kdf"][*field] = (*value).into();
        fs::write(snap.repo.join("keys").join(name), serde_json::to_vec(&hostile).unwrap()).unwrap();
    }
    let huge = format!("{:064x}", 4);
    fs::write(snap.repo.join("keys").join(&huge), vec![b' '; 1 << 20]).unwrap();

    for args in [&["snapshots"][..], &["ls", "latest"], &["key", "list", "--json"]] {
        let child = snap
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let out = wait_limited(child, Duration::from_secs(30), &format!("snap {args:?}"));
        assert_code(&out, 0);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "snap {args:?} took {:?}",
            started.elapsed()
        );
        let err = stderr(&out);
        for (field, _, name) in &planted {
            assert!(
                err.contains(name.as_str()) && err.contains("outside the accepted bounds"),
                "{field}: snap {args:?} does not report key file {name}\n{err}"
            );
        }
        assert!(err.contains(huge.as_str()), "the huge key file is not reported\n{err}");
    }
    // `key list` shows the usable key only.
    let listed = parse_json(&snap.ok(&["key", "list", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // The planted files can be removed, and then nothing is reported.
    for (_, _, name) in &planted {
        snap.ok(&["key", "remove", &name[..]]);
    }
    snap.ok(&["key", "remove", &huge[..]]);
    assert_eq!(key_names(&snap.repo), real);
    let out = snap.ok(&["snapshots"]);
    assert!(!stderr(&out).contains("skipped"), "{}", describe(&out));
}

/// A storage writer plants an unencrypted key file (one from another
/// repository, sorted first) in an encrypted repository: it "unlocks"
/// without a password check but its master key does not authenticate the
/// config. It is skipped with a report; it must not lock the owner out.
#[test]
fn a_planted_key_of_another_repository_is_skipped() {
    let snap = Snap::init(&[]);
    let other = Snap::init_unencrypted(&[]);
    let foreign = key_names(&other.repo);
    let planted = format!("{:064x}", 0);
    fs::copy(
        other.repo.join("keys").join(&foreign[0]),
        snap.repo.join("keys").join(&planted),
    )
    .unwrap();
    let out = snap.ok(&["snapshots"]);
    assert!(
        // Caught by the kdf check (an unencrypted key in an encrypted
        // repository) before its master key is even tried against the config.
        stderr(&out).contains(&planted) && stderr(&out).contains("kdf is none but the repository is encrypted"),
        "{}",
        describe(&out)
    );
    snap.ok(&["key", "remove", &planted[..8]]);
    let out = snap.ok(&["snapshots"]);
    assert!(!stderr(&out).contains("skipped"), "{}", describe(&out));
}

/// `init` refuses KDF parameters that opening would refuse.
#[test]
fn init_refuses_kdf_parameters_outside_the_bounds() {
    let snap = Snap::new();
    let out = snap.run(&["init", "--kdf-memory-kib", "1048576", "--kdf-iterations", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stderr(&out).contains("argon2id parameters"), "{}", describe(&out));
    assert!(!snap.repo.join("config").exists());
}

// ------------------------------------------------------------------- init

/// Eight `init`s race on one location: exactly one succeeds, the others
/// fail, the repository opens with the password, and only the winner's key
/// file is left.
#[test]
fn concurrent_inits_leave_exactly_one_working_repository() {
    for round in 0..3 {
        let snap = Snap::new();
        let children: Vec<Child> = (0..8)
            .map(|_| {
                snap.command()
                    .args(["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| wait_limited(c, Duration::from_secs(60), "init"))
            .collect();
        let winners = outs.iter().filter(|o| o.status.code() == Some(0)).count();
        let all: String = outs.iter().map(describe).collect::<Vec<_>>().join("\n");
        assert_eq!(winners, 1, "round {round}: {winners} inits succeeded\n{all}");
        for out in outs.iter().filter(|o| o.status.code() != Some(0)) {
            // A loser either finds the config written, or (earlier) the
            // winner's key file already there.
            assert!(
                stderr(out).contains("already exists") || stderr(out).contains("not an empty location"),
                "round {round}\n{}",
                describe(out)
            );
        }
        assert_eq!(
            key_names(&snap.repo).len(),
            1,
            "round {round}: {:?}",
            key_names(&snap.repo)
        );
        let src = snap.scratch().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"data").unwrap();
        snap.create(&[s(&src)]);
        snap.ok(&["verify", "--read-data"]);
    }
}

/// A location that holds keys, snapshots and packs but lost its config is
/// what is left of a repository: `init` must not put a new master key over
/// it (every old snapshot would become unreadable).
#[test]
fn init_refuses_a_location_that_holds_repository_objects() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    snap.create(&[s(&src)]);
    let config = fs::read(snap.repo.join("config")).unwrap();
    fs::remove_file(snap.repo.join("config")).unwrap();
    let keys = key_names(&snap.repo);

    let out = snap.run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stderr(&out).contains("no config"), "{}", describe(&out));
    assert!(!snap.repo.join("config").exists());
    assert_eq!(key_names(&snap.repo), keys);

    // The refused init changed nothing: with its config back, the old
    // repository opens and restores.
    fs::write(snap.repo.join("config"), &config).unwrap();
    let target = snap.scratch().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_eq!(fs::read(restored(&target, &src).join("f")).unwrap(), b"data");

    // Only packs left (keys, snapshots and index gone): still refused.
    fs::remove_file(snap.repo.join("config")).unwrap();
    for dir in ["keys", "snapshots", "index"] {
        for name in dir_names(&snap.repo.join(dir)) {
            fs::remove_file(snap.repo.join(dir).join(name)).unwrap();
        }
    }
    let out = snap.run(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stderr(&out).contains("pack objects"), "{}", describe(&out));
    assert!(!snap.repo.join("config").exists());
}

// ------------------------------------------------------------ permissions

fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022)
}

/// Every entry under `root`, with its mode.
fn modes_under(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    walk(root)
        .into_iter()
        .map(|(rel, meta)| (root.join(rel), meta.is_dir(), meta.permissions().mode() & 0o777))
        .collect()
}

/// A new repository and its cache are private: directories 0700, files
/// 0600, so other local users cannot copy the key files.
#[test]
fn new_repository_and_cache_are_private() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    write_random_file(&src.join("big"), 3 * MIB, 1);
    fs::write(src.join("small"), b"small").unwrap();
    snap.create(&[s(&src)]);
    let mask = umask();
    for root in [&snap.repo, &snap.cache] {
        let entries = modes_under(root);
        assert!(entries.len() >= 3, "{entries:?}");
        for (path, is_dir, mode) in entries {
            let want = if is_dir { 0o700 } else { 0o600 } & !mask;
            assert_eq!(mode, want, "{} is {mode:o}", path.display());
        }
    }
    assert_eq!(mode_of(&snap.repo), 0o700 & !mask);
}

/// A repository made with group and world read access (as older snaps made
/// them) keeps working: backups and restores go on, new objects keep the
/// group's access but give other users none.
#[test]
fn an_existing_open_repository_keeps_working() {
    let snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("one"), b"first").unwrap();
    snap.create(&[s(&src)]);
    for (path, is_dir, _) in modes_under(&snap.repo) {
        chmod(&path, if is_dir { 0o755 } else { 0o644 });
    }
    chmod(&snap.repo, 0o755);
    let before: Vec<PathBuf> = modes_under(&snap.repo).into_iter().map(|(p, _, _)| p).collect();

    fs::write(src.join("two"), b"second").unwrap();
    snap.create(&[s(&src)]);
    let target = snap.scratch().join("target");
    assert_code(&snap.restore("latest", &target, &[]), 0);
    assert_same_tree(&src, &restored(&target, &src), Compare::all());

    let mask = umask();
    let new: Vec<(PathBuf, bool, u32)> = modes_under(&snap.repo)
        .into_iter()
        .filter(|(p, _, _)| !before.contains(p))
        .collect();
    assert!(
        new.iter().any(|(p, _, _)| p.starts_with(snap.repo.join("snapshots"))),
        "{new:?}"
    );
    for (path, is_dir, mode) in new {
        if !is_dir {
            assert_eq!(mode, 0o640 & !mask, "{} is {mode:o}", path.display());
        }
    }
}

// -------------------------------------------------------------- passwords

/// An empty new password, from any source, is refused with exit 12 and
/// changes nothing.
#[test]
fn empty_new_passwords_are_refused() {
    let mut snap = Snap::new();
    snap.password = Some(String::new());
    let out = snap.run_code(&["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"], 12);
    assert!(stderr(&out).contains("empty password"), "{}", describe(&out));
    assert!(!snap.repo.join("config").exists());

    let empty = snap.scratch().join("empty");
    fs::write(&empty, b"\n").unwrap();
    snap.password = None;
    let out = snap.run_code(
        &[
            "init",
            "--kdf-memory-kib",
            "64",
            "--kdf-iterations",
            "1",
            "--password-file",
            s(&empty),
        ],
        12,
    );
    assert!(stderr(&out).contains("empty password"), "{}", describe(&out));
    assert!(!snap.repo.join("config").exists());

    snap.password = Some(PASSWORD.into());
    snap.init_repo(&[]);
    let keys = key_names(&snap.repo);
    for what in ["passwd", "add"] {
        let out = snap
            .command()
            .args(["key", what])
            .env("SNAP_NEW_PASSWORD", "")
            .output()
            .unwrap();
        assert_code(&out, 12);
        let out = snap.run_code(&["key", what, "--new-password-file", s(&empty)], 12);
        assert!(stderr(&out).contains("empty password"), "{}", describe(&out));
    }
    assert_eq!(key_names(&snap.repo), keys);
    snap.ok(&["snapshots"]);
}

/// README: 12 for every password problem, not 1.
#[test]
fn failing_password_sources_exit_12() {
    let snap = Snap::init(&[]);
    let out = snap
        .command()
        .arg("snapshots")
        .env_remove("SNAP_PASSWORD")
        .env("SNAP_PASSWORD_COMMAND", "exit 3")
        .output()
        .unwrap();
    assert_code(&out, 12);
    assert!(stderr(&out).contains("SNAP_PASSWORD_COMMAND"), "{}", describe(&out));

    let missing = snap.scratch().join("no-such-file");
    let out = snap.run_code(&["snapshots", "--password-file", s(&missing)], 12);
    assert!(stderr(&out).contains("no-such-file"), "{}", describe(&out));
    let out = snap.run_code(&["key", "passwd", "--new-password-file", s(&missing)], 12);
    assert!(stderr(&out).contains("no-such-file"), "{}", describe(&out));
    let out = snap.run_code(&["key", "add"], 12);
    assert!(stderr(&out).contains("SNAP_NEW_PASSWORD"), "{}", describe(&out));
}

// ------------------------------------------------------------------ a pty

/// snap run on a pseudo-terminal (util-linux `script`), with what it prints
/// collected as it comes.
struct Pty {
    child: Child,
    stdin: std::process::ChildStdin,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// `None` (with a note) when `script` is not installed.
    fn spawn(args: &[&str], env: &[(&str, &str)], env_remove: &[&str]) -> Option<Pty> {
        if Command::new("script").arg("--version").output().is_err() {
            super::util::skip_note("note: util-linux `script` is not installed; test skipped".to_string());
            return None;
        }
        let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_snap"))
            .chain(args.iter().copied())
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let mut cmd = Command::new("script");
        cmd.args(["-qefc", &quoted.join(" "), "/dev/null"]);
        for var in env_remove {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn script");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Some(Pty { child, stdin, output })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output has `count` occurrences of `what`, then
    /// a moment more (the prompt is printed before the terminal is set up).
    #[track_caller]
    fn expect(&self, what: &str, count: usize) {
        let started = Instant::now();
        while self.text().matches(what).count() < count {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {what:?} in {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Exit code and everything printed.
    fn finish(self) -> (Option<i32>, String) {
        let Pty { child, stdin, output } = self;
        let out = wait_limited(child, Duration::from_secs(60), "snap on a pty");
        drop(stdin);
        std::thread::sleep(Duration::from_millis(100));
        let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
        (out.status.code(), text)
    }
}

const NO_SNAP_ENV: [&str; 7] = [
    "SNAP_REPOSITORY",
    "SNAP_PASSWORD",
    "SNAP_PASSWORD_FILE",
    "SNAP_PASSWORD_COMMAND",
    "SNAP_NEW_PASSWORD",
    "SNAP_CACHE_DIR",
    "SNAP_LOG",
];

fn init_args(snap: &Snap) -> Vec<String> {
    [
        "-r",
        s(&snap.repo),
        "--cache-dir",
        s(&snap.cache),
        "init",
        "--kdf-memory-kib",
        "64",
        "--kdf-iterations",
        "1",
    ]
    .map(String::from)
    .to_vec()
}

/// Two different new passwords at the prompt: exit 12, no repository.
#[test]
fn differing_new_passwords_exit_12() {
    let snap = Snap::new();
    let args = init_args(&snap);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(mut pty) = Pty::spawn(&args, &[], &NO_SNAP_ENV) else {
        return;
    };
    pty.expect("new repository password:", 1);
    pty.send(b"one password\r");
    pty.expect("repeat the password:", 1);
    pty.send(b"another password\r");
    let (code, text) = pty.finish();
    assert_eq!(code, Some(12), "{text}");
    assert!(text.contains("differ"), "{text}");
    assert!(!snap.repo.join("config").exists());
}

/// Ctrl-C at the password prompt is an interruption (130), not a failure.
#[test]
fn ctrl_c_at_the_password_prompt_exits_130() {
    let snap = Snap::init(&[]);
    let repo = ["-r", s(&snap.repo), "--cache-dir", s(&snap.cache), "snapshots"];
    let Some(mut pty) = Pty::spawn(&repo, &[], &NO_SNAP_ENV) else {
        return;
    };
    pty.expect("repository password:", 1);
    pty.send(b"\x03");
    let (code, text) = pty.finish();
    assert_eq!(code, Some(130), "{text}");

    // The same for a new password.
    let fresh = Snap::new();
    let args = init_args(&fresh);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut pty = Pty::spawn(&args, &[], &NO_SNAP_ENV).unwrap();
    pty.expect("new repository password:", 1);
    pty.send(b"\x03");
    let (code, text) = pty.finish();
    assert_eq!(code, Some(130), "{text}");
    assert!(!fresh.repo.join("config").exists());
}

// ------------------------------------------------------ default repository

/// A home of its own: HOME and the XDG directories under `home`.
fn home_env(home: &Path) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), s(home).into()),
        ("XDG_DATA_HOME".into(), s(&home.join("data")).into()),
        ("XDG_CACHE_HOME".into(), s(&home.join("cache")).into()),
    ]
}

/// From cron or a script (no terminal) a missing default repository is an
/// error naming the location and `snap init`, exit 10, even with a password
/// in the environment; nothing is created.
#[test]
fn the_default_repository_is_not_created_without_a_terminal() {
    let home = tempdir();
    let src = home.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let location = home.path().join("data/snap/repository");
    for password in [Some(PASSWORD), None] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snap"));
        cmd.args(["create", s(&src)]).stdin(Stdio::null());
        for var in NO_SNAP_ENV {
            cmd.env_remove(var);
        }
        for (k, v) in home_env(home.path()) {
            cmd.env(k, v);
        }
        if let Some(password) = password {
            cmd.env("SNAP_PASSWORD", password);
        }
        let out = cmd.output().unwrap();
        assert_code(&out, 10);
        let err = stderr(&out);
        assert!(err.contains(s(&location)) && err.contains("snap init"), "{err}");
        assert!(!location.exists(), "{} was created", location.display());
    }

    // `snap init` creates it explicitly; then `create` uses it.
    let mut init = Command::new(env!("CARGO_BIN_EXE_snap"));
    init.args(["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"])
        .env("SNAP_PASSWORD", PASSWORD);
    let mut create = Command::new(env!("CARGO_BIN_EXE_snap"));
    create.args(["create", s(&src)]).env("SNAP_PASSWORD", PASSWORD);
    for cmd in [&mut init, &mut create] {
        for var in [
            "SNAP_REPOSITORY",
            "SNAP_PASSWORD_FILE",
            "SNAP_PASSWORD_COMMAND",
            "SNAP_CACHE_DIR",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in home_env(home.path()) {
            cmd.env(k, v);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert_code(&out, 0);
    }
    assert!(location.join("config").exists());
}

/// The README's quick start: `snap create` from a terminal creates the
/// default repository, asking for the new password twice.
#[test]
fn the_default_repository_is_created_from_a_terminal() {
    let home = tempdir();
    let src = home.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let env = home_env(home.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let Some(mut pty) = Pty::spawn(&["create", s(&src)], &env, &NO_SNAP_ENV) else {
        return;
    };
    pty.expect("new repository password:", 1);
    pty.send(b"a new password\r");
    pty.expect("repeat the password:", 1);
    pty.send(b"a new password\r");
    let (code, text) = pty.finish();
    assert_eq!(code, Some(0), "{text}");
    let location = home.path().join("data/snap/repository");
    assert!(
        text.contains(&format!("created repository {}", location.display())),
        "{text}"
    );
    assert!(location.join("config").exists());
}

// ------------------------------------------------------------------ cache

/// A cache directory that cannot be created or written costs one warning,
/// never the command: backup, listing, restore, verify and prune all work.
#[test]
fn an_unusable_cache_falls_back_to_a_temporary_one() {
    let mut snap = Snap::init(&[]);
    let src = snap.scratch().join("src");
    fs::create_dir(&src).unwrap();
    write_random_file(&src.join("f"), 2 * MIB, 5);
    // A file where the cache directory should be: unusable even for root.
    let blocker = snap.scratch().join("blocker");
    fs::write(&blocker, b"not a directory").unwrap();
    snap.cache = blocker.join("cache");
    let target = snap.scratch().join("target");
    let commands: [&[&str]; 7] = [
        &["create", s(&src)],
        &["snapshots"],
        &["ls", "latest"],
        &["restore", "latest", "--target", s(&target)],
        &["verify", "--read-data"],
        &["forget", "--keep-last", "1"],
        &["prune"],
    ];
    for args in commands {
        let out = snap.ok(args);
        let err = stderr(&out);
        assert_eq!(
            err.matches("temporary index cache").count(),
            1,
            "snap {args:?}: expected one warning\n{}",
            describe(&out)
        );
    }
    assert!(same_content(&src.join("f"), &restored(&target, &src).join("f")));
}

/// The same with a read-only cache directory, for a user the permissions
/// apply to (not root).
#[test]
fn a_read_only_cache_falls_back_to_a_temporary_one() {
    let src_dir = tempdir();
    let src = src_dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    chmod(src_dir.path(), 0o755);
    let Some(snap) = Snap::unprivileged(&src) else {
        return;
    };
    snap.init_repo(&[]);
    // Everything under the cache is read-only now.
    for (path, is_dir, _) in modes_under(&snap.cache) {
        chmod(&path, if is_dir { 0o500 } else { 0o400 });
    }
    chmod(&snap.cache, 0o500);
    let target = snap.scratch().join("target");
    for args in [&["create", s(&src)][..], &["restore", "latest", "--target", s(&target)]] {
        let out = snap.ok(args);
        assert!(stderr(&out).contains("temporary index cache"), "{}", describe(&out));
    }
    assert_eq!(fs::read(restored(&target, &src).join("f")).unwrap(), b"content");
    chmod(&snap.cache, 0o700);
    for (path, is_dir, _) in modes_under(&snap.cache) {
        chmod(&path, if is_dir { 0o700 } else { 0o600 });
    }
}
