//! Prometheus text exposition (format 0.0.4) of the daemon's state: served
//! at `/metrics` by a tiny blocking HTTP server, and written as a
//! node_exporter textfile after every run. README "Metrics" lists the names.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jiff::Timestamp;

use crate::state::State;

/// What is running now, as (profile, job) pairs.
pub type Running = BTreeSet<(String, String)>;

/// One metric family: its samples are added under one HELP/TYPE header.
struct Family<'a> {
    out: &'a mut String,
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let _ = writeln!(self.out, "{name}{{{}}} {}", labels.join(","), number(value));
    }
}

/// Label values escape backslash, double quote and newline (the exposition format's rule).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The exposition of `state` for `profiles` (the configured ones, in order).
pub fn render(state: &State, profiles: &[String], running: &Running) -> String {
    let mut out = String::new();
    let jobs = |profile: &str| {
        state
            .profiles
            .get(profile)
            .map(|p| p.jobs.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    macro_rules! per_job {
        ($name:expr, $kind:expr, $help:expr, |$job:ident| $value:expr) => {{
            let mut f = family(&mut out, $name, $kind, $help);
            for profile in profiles {
                for (job_name, $job) in jobs(profile) {
                    if let Some(v) = $value {
                        f.sample($name, &[("profile", profile), ("job", &job_name)], v);
                    }
                }
            }
        }};
    }
    per_job!(
        "snap_job_last_start_timestamp_seconds",
        "gauge",
        "When the last run of the job started (Unix time).",
        |j| j.last_start.map(seconds)
    );
    per_job!(
        "snap_job_last_end_timestamp_seconds",
        "gauge",
        "When the last run of the job ended (Unix time).",
        |j| j.last_end.map(seconds)
    );
    per_job!(
        "snap_job_last_success",
        "gauge",
        "1 if the last run of the job succeeded completely, else 0.",
        |j| j.result.as_ref().map(|_| if j.succeeded() { 1.0 } else { 0.0 })
    );
    per_job!(
        "snap_job_last_exit_code",
        "gauge",
        "Exit code of the last run's failing step (0: all steps succeeded).",
        |j| j.exit_code.map(f64::from)
    );
    per_job!(
        "snap_job_last_duration_seconds",
        "gauge",
        "How long the last run of the job took.",
        |j| j.duration_seconds
    );
    per_job!(
        "snap_job_next_run_timestamp_seconds",
        "gauge",
        "When the job is scheduled to run next (Unix time).",
        |j| j.next_run.map(seconds)
    );
    per_job!(
        "snap_job_runs_total",
        "counter",
        "Runs of the job started by the daemon.",
        |j| Some(j.runs as f64)
    );
    per_job!(
        "snap_job_skipped_total",
        "counter",
        "Runs of the job skipped because the profile's previous run was still going.",
        |j| Some(j.skipped as f64)
    );
    {
        let mut f = family(
            &mut out,
            "snap_job_running",
            "gauge",
            "1 while a run of the job is going, else 0.",
        );
        for profile in profiles {
            for (job_name, _) in jobs(profile) {
                let on = running.contains(&(profile.clone(), job_name.clone()));
                f.sample(
                    "snap_job_running",
                    &[("profile", profile), ("job", &job_name)],
                    f64::from(u8::from(on)),
                );
            }
        }
    }
    type Field = fn(&crate::state::BackupSummary) -> f64;
    let backup: [(&str, &str, Field); 6] = [
        (
            "snap_backup_last_snapshot_timestamp_seconds",
            "Time of the last snapshot the daemon's backups wrote (Unix time).",
            |b| b.time.map(seconds).unwrap_or(0.0),
        ),
        (
            "snap_backup_last_files",
            "Files in the last snapshot (new, changed and unmodified).",
            |b| b.files as f64,
        ),
        (
            "snap_backup_last_errors",
            "Files and directories the last backup could not read.",
            |b| b.errors as f64,
        ),
        (
            "snap_backup_last_read_bytes",
            "Bytes of file content the last backup read.",
            |b| b.bytes_read as f64,
        ),
        (
            "snap_backup_last_added_bytes",
            "Bytes of packs the last backup added to the repository.",
            |b| b.bytes_added as f64,
        ),
        (
            "snap_backup_last_total_bytes",
            "Total size of the files in the last snapshot.",
            |b| b.bytes_total as f64,
        ),
    ];
    for (name, help, field) in &backup {
        let mut f = family(&mut out, name, "gauge", help);
        for profile in profiles {
            if let Some(b) = state.profiles.get(profile).and_then(|p| p.last_backup.as_ref()) {
                f.sample(name, &[("profile", profile)], field(b));
            }
        }
    }
    type Size = fn(&crate::state::BackupSummary) -> Option<u64>;
    let repository: [(&str, &str, Size); 2] = [
        (
            "snap_repository_size_bytes",
            "Bytes of the repository's packs after the last backup.",
            |b| b.repository_bytes,
        ),
        (
            "snap_repository_packs",
            "Packs in the repository after the last backup.",
            |b| b.repository_packs,
        ),
    ];
    for (name, help, field) in &repository {
        let mut f = family(&mut out, name, "gauge", help);
        for profile in profiles {
            let last = state.profiles.get(profile).and_then(|p| p.last_backup.as_ref());
            if let Some(v) = last.and_then(field) {
                f.sample(name, &[("profile", profile)], v as f64);
            }
        }
    }
    out
}

/// The body `/metrics` serves, replaced by the daemon after every change.
pub type Shared = Arc<Mutex<String>>;

/// Connections answered at once; more are closed at once (a scraper
/// retries), so a crowd of idle clients costs at most this many threads.
const MAX_CONNECTIONS: usize = 16;
/// The whole exchange of one connection: request head in, answer out.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// The longest request head read; a longer one is refused.
const MAX_HEAD: u64 = 8 * 1024;

/// Serves `GET /metrics` on `addr`: an accepting thread and one thread per
/// connection (at most `MAX_CONNECTIONS`), so a stalled client cannot keep
/// a scraper out; returns the bound address.
pub fn serve(addr: &str, body: Shared) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                continue; // dropped: closed
            }
            let (body, active) = (body.clone(), active.clone());
            let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn({
                let active = active.clone();
                move || {
                    let _ = answer(stream, &body);
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    })?;
    Ok(bound)
}

/// The time left before `deadline`, or a timeout error.
fn left(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "request deadline passed"))
}

fn answer(mut stream: TcpStream, body: &Shared) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    // The head, up to its blank line; each read may wait only for what is
    // left of the deadline, so dripping bytes cannot stretch it.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() as u64 >= MAX_HEAD {
            break false;
        }
        stream.set_read_timeout(Some(left(deadline)?))?;
        let room = (MAX_HEAD - head.len() as u64).min(buf.len() as u64) as usize;
        match (&mut stream).take(room as u64).read(&mut buf[..room])? {
            0 => return Ok(()),
            n => head.extend_from_slice(&buf[..n]),
        }
    };
    let request = String::from_utf8_lossy(&head);
    let mut parts = request.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, text) = match (complete, method, path) {
        (false, _, _) => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head over 8 KiB\n".to_string(),
        ),
        (true, "GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            body.lock().map(|b| b.clone()).unwrap_or_default(),
        ),
        (true, "GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(text.as_bytes());
    }
    // Written in pieces so that a client not reading cannot hold the
    // thread past the deadline either.
    for piece in response.chunks(16 * 1024) {
        stream.set_write_timeout(Some(left(deadline)?))?;
        stream.write_all(piece)?;
    }
    stream.flush()
}

/// Writes the exposition for node_exporter's textfile collector, atomically
/// (it reads `*.prom` files whenever it is scraped).
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    crate::state::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type() {
        let mut state = State::default();
        let p = state.profiles.entry("we\"ird".into()).or_default();
        p.jobs.entry("backup".into()).or_default().runs = 3;
        p.last_backup = Some(Default::default());
        let text = render(&state, &["we\"ird".to_string()], &Running::new());
        assert!(
            text.contains("snap_job_runs_total{profile=\"we\\\"ird\",job=\"backup\"} 3\n"),
            "{text}"
        );
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(helps, types);
        assert!(helps >= 10);
    }
}
