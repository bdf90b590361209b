//! Database dumps through `create --stdin-from-command`, restored through
//! `snap dump` into fresh databases (SQLite and a PostgreSQL server the test
//! starts), and the command's failures: a non-zero exit, a signal, a
//! command that cannot start, an interrupt. Also `snap dump` of one file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::util::*;

/// Runs a helper program of the test (not snap), expecting success.
#[track_caller]
fn run_tool(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert!(out.status.success(), "{cmd:?} failed\n{}", describe(&out));
    out
}

/// Runs `program args` with `input` on its standard input, expecting success.
#[track_caller]
fn run_tool_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    assert!(out.status.success(), "{cmd:?} failed\n{}", describe(&out));
    out
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `snap create --json --stdin-from-command ARGS... -- COMMAND...`
#[track_caller]
fn create_from_command(snap: &Snap, options: &[&str], command: &[&str]) -> serde_json::Value {
    let mut args = vec!["--stdin-from-command"];
    args.extend_from_slice(options);
    args.push("--");
    args.extend_from_slice(command);
    snap.create(&args)
}

/// `snap dump SNAPSHOT PATH`'s stdout, expecting success.
#[track_caller]
fn dump(snap: &Snap, snapshot: &str, path: &str) -> Vec<u8> {
    snap.ok(&["dump", snapshot, path]).stdout
}

fn sqlite(db: &Path, sql: &str) -> Vec<u8> {
    run_tool(Command::new("sqlite3").arg("-bail").arg(db).arg(sql)).stdout
}

#[test]
fn sqlite_dump_round_trips_through_snap_dump() {
    if !have("sqlite3") {
        skip_note("note: sqlite3 is not installed (Debian package sqlite3); test skipped".into());
        return;
    }
    let snap = Snap::init(&[]);
    let db = snap.scratch().join("app.db");
    // A few thousand rows of text (with non-ASCII and quotes), blobs with
    // every byte value, reals and NULLs, plus an index and a view the dump
    // must carry too.
    sqlite(
        &db,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, data BLOB, price REAL, note TEXT);
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 4000)
         INSERT INTO items SELECT x, 'Zeile ' || x || ' — ünïcødé 日本語 ''quoted'' ' || char(10) || 'line 2',
                randomblob(64 + x % 200), x * 1.25, CASE WHEN x % 7 = 0 THEN NULL ELSE 'n' || x END FROM n;
         CREATE TABLE tags (item INTEGER REFERENCES items(id), tag TEXT);
         INSERT INTO tags SELECT id, 'tag' || (id % 13) FROM items;
         CREATE INDEX tags_by_tag ON tags(tag);
         CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 100;",
    );
    let original_dump = sqlite(&db, ".dump");

    let created = create_from_command(&snap, &[], &["sqlite3", s(&db), ".dump"]);
    let paths = &created["paths"];
    assert_eq!(paths, &serde_json::json!(["/sqlite3.dump"]), "{created}");
    assert_eq!(summary(&created, "bytes_read"), original_dump.len() as u64, "{created}");

    // `snap dump latest NAME | sqlite3 NEW`.
    let restored_db = snap.scratch().join("restored.db");
    let dumped = dump(&snap, "latest", "sqlite3.dump");
    assert_eq!(
        dumped, original_dump,
        "snap dump gave other bytes than the command wrote"
    );
    run_tool_with_input(Command::new("sqlite3").arg("-bail").arg(&restored_db), &dumped);

    for count in [
        "SELECT count(*) FROM items",
        "SELECT count(*) FROM tags",
        "SELECT count(*) FROM cheap",
    ] {
        let (a, b) = (sqlite(&db, count), sqlite(&restored_db, count));
        assert_eq!(a, b, "{count}");
        assert_ne!(String::from_utf8_lossy(&a).trim(), "0", "{count}");
    }
    // A checksum of all the data, read back from each database in one order.
    let all = "SELECT id, quote(name), hex(data), quote(price), quote(note) FROM items ORDER BY id;
               SELECT item, tag FROM tags ORDER BY item, tag;";
    let (a, b) = (sqlite(&db, all), sqlite(&restored_db, all));
    assert_eq!(
        blake3::hash(&a),
        blake3::hash(&b),
        "the restored database holds other data"
    );
    assert_eq!(sqlite(&restored_db, ".dump"), original_dump);
    assert_eq!(sqlite(&restored_db, "PRAGMA integrity_check").trim_ascii(), b"ok");
}

/// A PostgreSQL cluster in a temporary directory, on a unix socket there
/// only (no TCP), run as a user without privileges when the test is root.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    /// `runuser -u nobody --` when root (postgres refuses to run as root).
    as_user: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Result<Postgres, String> {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no /usr/lib/postgresql ({e}): Debian package postgresql"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
            .max()
            .ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        let dir = tempdir();
        let as_user: Vec<String> = if is_root() {
            if !have("runuser") {
                return Err("running as root and runuser is missing".into());
            }
            chown(dir.path(), 65534, 65534);
            vec!["runuser".into(), "-u".into(), "nobody".into(), "--".into()]
        } else {
            Vec::new()
        };
        chmod(dir.path(), 0o755);
        let pg = Postgres {
            data: dir.path().join("data"),
            socket: dir.path().to_path_buf(),
            bin,
            as_user,
            _dir: dir,
        };
        let initdb = pg
            .server_tool("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&pg.data)
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!("initdb failed (cannot run here?)\n{}", describe(&initdb)));
        }
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c fsync=off -c max_connections=10",
            pg.socket.display()
        );
        let started = pg
            .server_tool("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(pg.socket.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !started.status.success() {
            let log = fs::read_to_string(pg.socket.join("server.log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed\n{}\n--- server log ---\n{log}",
                describe(&started)
            ));
        }
        Ok(pg)
    }

    /// A server program, as the cluster's owner.
    fn server_tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match self.as_user.split_first() {
            Some((runuser, rest)) => {
                let mut cmd = Command::new(runuser);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// The client arguments that reach this server as `postgres`.
    fn conn(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.socket.to_str().expect("UTF-8").into(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    fn client(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.args(self.conn());
        cmd
    }

    fn psql(&self, db: &str, sql: &str) -> Vec<u8> {
        run_tool(
            self.client("psql")
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c"])
                .arg(sql),
        )
        .stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .server_tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[test]
fn pg_dump_round_trips_through_snap_dump() {
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(why) => {
            skip_note(format!(
                "note: no PostgreSQL server can be started here: {why}; test skipped"
            ));
            return;
        }
    };
    run_tool(pg.client("createdb").arg("shop"));
    pg.psql(
        "shop",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
         CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers(id),
                              placed timestamptz NOT NULL, total numeric(12,2), items jsonb, receipt bytea);
         INSERT INTO customers (name, email)
           SELECT 'Kundin ' || i || ' — Ünïcødé 日本 ''q''', 'c' || i || '@example.org' FROM generate_series(1, 1500) i;
         INSERT INTO orders (customer, placed, total, items, receipt)
           SELECT 1 + i % 1500, timestamptz '2024-01-01 00:00:00+00' + i * interval '37 minutes',
                  (i * 7.31)::numeric(12,2), jsonb_build_object('n', i, 'sku', 'S-' || (i % 97), 'tags', jsonb_build_array('a', i % 5)),
                  decode(md5(i::text) || md5((i * 3)::text), 'hex')
           FROM generate_series(1, 4000) i;
         CREATE INDEX orders_by_customer ON orders(customer);",
    );

    let snap = Snap::init(&[]);
    let pg_dump = pg.bin.join("pg_dump");
    let mut command = vec![s(&pg_dump).to_string()];
    command.extend(pg.conn());
    command.extend(["--no-owner".into(), "shop".into()]);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let created = create_from_command(&snap, &[], &command);
    assert_eq!(created["paths"], serde_json::json!(["/pg_dump.dump"]), "{created}");

    // Restore into a fresh database: `snap dump latest pg_dump.dump | psql`.
    run_tool(pg.client("createdb").arg("restored"));
    let dumped = dump(&snap, "latest", "pg_dump.dump");
    assert_eq!(summary(&created, "bytes_read"), dumped.len() as u64);
    run_tool_with_input(
        pg.client("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "restored"]),
        &dumped,
    );

    for count in ["SELECT count(*) FROM customers", "SELECT count(*) FROM orders"] {
        let (a, b) = (pg.psql("shop", count), pg.psql("restored", count));
        assert_eq!(a, b, "{count}");
        assert_ne!(String::from_utf8_lossy(&a).trim(), "0");
    }
    for checksum in [
        "SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c",
        "SELECT md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o",
        // The serials go on where they were.
        "SELECT last_value FROM orders_id_seq",
        "SELECT indexname FROM pg_indexes WHERE tablename = 'orders' ORDER BY 1",
    ] {
        assert_eq!(pg.psql("shop", checksum), pg.psql("restored", checksum), "{checksum}");
    }
}

#[test]
fn a_failing_command_writes_no_snapshot_and_its_data_is_reused() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    // Enough data for several chunks: what the failed run stored is indexed
    // and the next run does not store it again.
    let data = snap.scratch().join("data");
    write_random_file(&data, 3 * MIB, 13);
    let script = format!("cat '{}'; echo partial; exit 3", s(&data));
    let out = snap.run_code(&["create", "--stdin-from-command", "--", "sh", "-c", &script], 1);
    let err = stderr(&out);
    assert!(
        err.contains("command 'sh'") && err.contains("exited with status 3"),
        "{err}"
    );
    assert!(err.contains("no snapshot was written"), "{err}");
    assert!(snap.snapshots().is_empty(), "a failed dump left a snapshot");

    let script = format!("cat '{}'", s(&data));
    let created = create_from_command(&snap, &[], &["sh", "-c", &script]);
    let added = summary(&created, "bytes_added_raw");
    assert!(
        added < MIB,
        "the retry stored {added} bytes again of the 3 MiB the failed run uploaded"
    );
    assert_eq!(dump(&snap, "latest", "sh.dump"), fs::read(&data).unwrap());
    snap.ok(&["verify", "--read-data"]);
}

#[test]
fn a_command_killed_by_a_signal_writes_no_snapshot() {
    let snap = Snap::init(&[]);
    let out = snap.run_code(
        &[
            "create",
            "--stdin-from-command",
            "--",
            "sh",
            "-c",
            "echo partial; kill -KILL $$",
        ],
        1,
    );
    let err = stderr(&out);
    assert!(err.contains("command 'sh': was killed by signal 9 (SIGKILL)"), "{err}");
    assert!(snap.snapshots().is_empty());
}

#[test]
fn a_command_that_cannot_start_is_one_clear_line() {
    let snap = Snap::init(&[]);
    let out = snap.run_code(
        &["create", "--stdin-from-command", "--", "no-such-dump-tool-4711", "db"],
        1,
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot start command 'no-such-dump-tool-4711'"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(!panicked(&out));
    // A file that is not executable: the same, with the reason.
    let script = snap.scratch().join("dump.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    if !is_root() {
        let out = snap.run_code(&["create", "--stdin-from-command", "--", s(&script)], 1);
        assert!(stderr(&out).contains("Permission denied"), "{}", describe(&out));
    }
    // No command at all is a usage error.
    let out = snap.run_code(&["create", "--stdin-from-command"], 2);
    assert!(
        stderr(&out).contains("needs the command after `--`"),
        "{}",
        describe(&out)
    );
    let out = snap.run_code(&["create", "--stdin", "--stdin-from-command", "--", "true"], 2);
    assert!(!panicked(&out));
    assert!(snap.snapshots().is_empty());
}

#[test]
fn command_output_is_stored_stderr_passes_through_and_args_are_not_recorded() {
    let snap = Snap::init_unencrypted(&["--compression", "off"]);
    // The argument stands for a password given on a dump tool's command line.
    let secret = "hunter2-secret-argument";
    let out = snap.ok(&[
        "create",
        "--json",
        "--stdin-from-command",
        "--stdin-filename",
        "app.sql",
        "--",
        "sh",
        "-c",
        "printf 'line 1\\nline 2\\n'; echo 'a warning from the tool' >&2",
        secret,
    ]);
    let created = parse_json(&out);
    assert!(stderr(&out).contains("a warning from the tool"), "{}", describe(&out));
    assert_eq!(created["paths"], serde_json::json!(["/app.sql"]));
    assert_eq!(dump(&snap, "latest", "app.sql"), b"line 1\nline 2\n");
    assert_eq!(dump(&snap, "latest", "/app.sql"), b"line 1\nline 2\n");
    // Nothing in the (unencrypted) repository holds the arguments.
    for file in files_under(&snap.repo) {
        let bytes = fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{} holds the command's argument",
            file.display()
        );
    }
    assert!(!contains(&snap.ok(&["snapshots", "--json"]).stdout, secret.as_bytes()));
    // The command read nothing from snap's standard input.
    let created = create_from_command(&snap, &["--stdin-filename", "stdin-of-command"], &["cat"]);
    assert_eq!(summary(&created, "bytes_read"), 0);
}

#[test]
fn an_interrupt_stops_the_command_and_writes_no_snapshot() {
    let snap = Snap::init(&[]);
    // The command stays silent: only snap's handler can end it (the signal
    // goes to snap alone, as `kill -INT` would).
    let (mut child, pid) = spawn_silent_command(&snap);
    let deadline = Instant::now() + Duration::from_secs(60);
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::INT)
        .expect("send SIGINT");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("snap did not stop after SIGINT while its command was silent");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = fs::read_to_string(snap.scratch().join("stderr")).unwrap();
    assert_eq!(status.code(), Some(130), "{status}; stderr:\n{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(process_ended(pid), "the command (pid {pid}) outlived snap");
    assert!(snap.snapshots().is_empty(), "an interrupted dump left a snapshot");
}

/// Whether process `pid` is gone (or a zombie: it ended, and whoever
/// inherited it has not reaped it yet).
fn process_ended(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Starts `create --stdin-from-command -- sh -c SCRIPT` where the script
/// writes its pid to a file and then stays silent; returns snap and the
/// command's pid once it runs.
fn spawn_silent_command(snap: &Snap) -> (std::process::Child, i32) {
    let pidfile = snap.scratch().join("command.pid");
    let script = format!("echo started; echo $$ > '{}'; exec sleep 120", s(&pidfile));
    let log = fs::File::create(snap.scratch().join("stderr")).unwrap();
    let mut child = snap
        .command()
        .args(["create", "--stdin-from-command", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn snap");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = fs::read_to_string(&pidfile).ok().and_then(|t| t.trim().parse().ok()) {
            return (child, pid);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "snap ended before the command started"
        );
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_snap_takes_its_command_with_it() {
    let snap = Snap::init(&[]);
    let (mut child, pid) = spawn_silent_command(&snap);
    child.kill().expect("SIGKILL snap");
    child.wait().expect("wait for snap");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !process_ended(pid) {
        if Instant::now() > deadline {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).expect("pid"),
                rustix::process::Signal::KILL,
            );
            panic!("the command (pid {pid}) outlived a killed snap");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(snap.snapshots().is_empty());
}

#[test]
fn dump_writes_one_file_and_refuses_what_is_not_a_file() {
    let snap = Snap::init(&["--chunk-sizes", SMALL_CHUNKS]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    write_random_file(&src.join("dir/big"), 2 * MIB + 17, 5);
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("dir/big", src.join("link")).unwrap();
    snap.create(&[s(&src)]);

    let big = src.join("dir/big");
    assert_eq!(dump(&snap, "latest", s(&big)), fs::read(&big).unwrap());
    assert_eq!(dump(&snap, "latest", s(&src.join("empty"))), b"");
    let id = snap.snapshots()[0]["id"].as_str().unwrap().to_string();
    assert_eq!(dump(&snap, &id[..8], s(&big)), fs::read(&big).unwrap());

    let out = snap.run_code(&["dump", "latest", s(&src.join("dir"))], 2);
    assert!(
        stderr(&out).contains("is a directory") && stderr(&out).contains("--archive tar"),
        "{}",
        describe(&out)
    );
    let out = snap.run_code(&["dump", "latest", s(&src.join("link"))], 2);
    assert!(stderr(&out).contains("symbolic link"), "{}", describe(&out));
    let out = snap.run_code(&["dump", "latest", s(&src.join("missing"))], 2);
    assert!(stderr(&out).contains("missing"), "{}", describe(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn dump_of_a_damaged_chunk_fails_and_writes_no_byte_of_it() {
    let snap = Snap::init_unencrypted(&["--chunk-sizes", SMALL_CHUNKS, "--compression", "off"]);
    let src = snap.scratch().join("src");
    fs::create_dir_all(&src).unwrap();
    let file = src.join("f");
    write_random_file(&file, 512 * 1024, 8);
    snap.create(&[s(&src)]);
    let original = fs::read(&file).unwrap();
    // Flip one byte of the file's content where it lies in a pack.
    let probe = &original[300_000..300_032];
    let (pack, at) = packs(&snap.repo)
        .into_iter()
        .find_map(|(pack, _)| {
            let bytes = fs::read(&pack).unwrap();
            bytes.windows(probe.len()).position(|w| w == probe).map(|at| (pack, at))
        })
        .expect("the content lies in a pack unencrypted");
    let mut bytes = fs::read(&pack).unwrap();
    bytes[at] ^= 0xff;
    chmod(&pack, 0o644);
    fs::write(&pack, &bytes).unwrap();

    let out = snap.run_code(&["dump", "latest", s(&file)], 1);
    assert!(stderr(&out).contains("chunk"), "{}", describe(&out));
    assert!(out.stdout.len() < 300_000, "bytes of the damaged chunk were written");
    assert_eq!(
        out.stdout[..],
        original[..out.stdout.len()],
        "the bytes before the damage differ"
    );
}

/// A long dump is streamed: snap's memory stays far below the stream's
/// size. The command itself reads snap's peak RSS (its parent's VmHWM) once
/// it has written everything, so the measure covers the whole stream.
#[test]
#[ignore = "slow: 128 MiB through the archiver (just torture)"]
fn a_long_dump_is_streamed_not_held_in_memory() {
    let snap = Snap::init(&["--pack-size-mib", "1"]);
    let stream_mib = 128;
    let script = format!(
        "head -c {} /dev/urandom; grep VmHWM /proc/$PPID/status >&2",
        stream_mib * MIB
    );
    let out = snap.ok(&["create", "--json", "--stdin-from-command", "--", "sh", "-c", &script]);
    let err = stderr(&out);
    let kib: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM line in\n{err}"));
    eprintln!("peak RSS of snap for a {stream_mib} MiB dump: {} MiB", kib / 1024);
    assert_eq!(summary(&parse_json(&out), "bytes_read"), stream_mib * MIB);
    assert!(
        kib * 1024 < stream_mib * MIB / 2,
        "snap held {kib} KiB for a {stream_mib} MiB stream"
    );
}
