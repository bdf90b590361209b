//! A profile's hooks and notifications around one command (README "Hooks
//! and notifications").
//!
//! Order: `before`; the command (not run when `before` fails); then
//! `after-success` or `on-failure`; then `after`, always; then the
//! notifications (on failure, and on success with `on-success = true`).
//! Each hook runs as `sh -c` in a process group of its own, so that a
//! timeout kills all it started, not just the shell.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::profile::Profile;

/// A `before` hook failed: the command was not run (exit code 1, the message
/// says which hook and why).
#[derive(Debug, thiserror::Error)]
#[error("the before hook of profile {profile:?} failed ({reason}); the {command} was not run")]
pub struct BeforeHookFailed {
    pub profile: String,
    pub command: String,
    pub reason: String,
}

/// How long a notification may take when the profile sets no `timeout`.
const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `create` reports for the hooks: the snapshot id and its `--json` summary.
static SUMMARY: Mutex<Option<(String, serde_json::Value)>> = Mutex::new(None);

pub fn record_summary(snapshot: String, summary: serde_json::Value) {
    if let Ok(mut slot) = SUMMARY.lock() {
        *slot = Some((snapshot, summary));
    }
}

/// Runs `command` (the name for messages, e.g. "backup") between the hooks
/// of `profile`, then sends its notifications. The result is the command's:
/// hooks after it and notifications only warn.
pub fn around(
    profile: &Profile,
    repository: Option<&str>,
    command: &str,
    run: impl FnOnce() -> Result<i32>,
) -> Result<i32> {
    if profile.hooks.is_empty() && profile.notify.is_empty() {
        return run();
    }
    let timeout = profile.hooks.timeout();
    let mut env: Vec<(&str, String)> = vec![
        ("SNAP_PROFILE", profile.name.clone()),
        ("SNAP_COMMAND", command.to_string()),
        ("SNAP_REPOSITORY", repository.unwrap_or("").to_string()),
    ];
    let result = match &profile.hooks.before {
        Some(hook) => match run_hook("before", hook, &env, timeout) {
            Ok(()) => run(),
            Err(reason) => Err(BeforeHookFailed {
                profile: profile.name.clone(),
                command: command.to_string(),
                reason,
            }
            .into()),
        },
        None => run(),
    };
    let status = match &result {
        Ok(code) => *code,
        Err(error) => crate::exit::code_for(error),
    };
    let error_text = result.as_ref().err().map(|e| format!("{e:#}"));
    let (snapshot, summary) = SUMMARY.lock().ok().and_then(|mut s| s.take()).unzip();
    env.push(("SNAP_EXIT_STATUS", status.to_string()));
    env.push(("SNAP_ERROR", error_text.clone().unwrap_or_default()));
    env.push(("SNAP_SNAPSHOT_ID", snapshot.clone().unwrap_or_default()));
    env.push((
        "SNAP_SUMMARY",
        summary.as_ref().map(|s| s.to_string()).unwrap_or_default(),
    ));
    // Exit 3 (a snapshot written, some files unreadable) is a failure to be told about.
    let success = status == crate::exit::OK;
    let outcome = if success {
        ("after-success", &profile.hooks.after_success)
    } else {
        ("on-failure", &profile.hooks.on_failure)
    };
    for (name, hook) in [outcome, ("after", &profile.hooks.after)] {
        if let Some(hook) = hook {
            if let Err(reason) = run_hook(name, hook, &env, timeout) {
                warn(&format!(
                    "the {name} hook of profile {:?} failed ({reason})",
                    profile.name
                ));
            }
        }
    }
    if !success || profile.notify.on_success {
        let notice = serde_json::json!({
            "profile": profile.name,
            "command": command,
            "host": snap_core::snapshot::hostname(),
            "status": if success { "success" } else { "failure" },
            "exit_status": status,
            "error": error_text,
            "snapshot": snapshot,
            "summary": summary,
            "time": jiff::Timestamp::now().to_string(),
        });
        notify(profile, &notice);
    }
    result
}

fn warn(message: &str) {
    errln!("{} {}", crate::term::label("warning"), message);
}

/// Runs one hook; the error says why it failed (exit status, timeout).
fn run_hook(name: &str, hook: &str, env: &[(&str, String)], timeout: Duration) -> Result<(), String> {
    let mut command = Command::new("sh");
    command.arg("-c").arg(hook).stdin(Stdio::null());
    // Its output goes to stderr: stdout may be `--json` a program reads.
    command.stdout(std::io::stderr());
    command.env("SNAP_HOOK", name);
    for (key, value) in env {
        command.env(key, value);
    }
    // Never hand the password on.
    for var in ["SNAP_PASSWORD", "SNAP_FROM_PASSWORD", "SNAP_NEW_PASSWORD"] {
        command.env_remove(var);
    }
    let status = run_with_timeout(command, None, timeout).map_err(|e| format!("`{hook}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{hook}` {status}"))
    }
}

/// Runs `command` in a process group of its own, with `input` on its stdin;
/// past `timeout` the whole group is killed.
fn run_with_timeout(
    mut command: Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<std::process::ExitStatus, String> {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    let pid = child.id() as i32;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that does not read its input must not block us: a
        // writer thread, and a failed write (closed pipe) is the command's business.
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
        if start.elapsed() >= timeout {
            // SAFETY: kill only sends a signal, to the group the child leads
            // (not reaped yet, so the id is still its).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.wait();
            return Err(format!(
                "timed out after {} and was killed",
                humantime::format_duration(timeout)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `notice` to the profile's webhooks and command; failures warn.
fn notify(profile: &Profile, notice: &serde_json::Value) {
    let timeout = profile.notify.timeout.unwrap_or(DEFAULT_NOTIFY_TIMEOUT);
    let body = notice.to_string();
    for url in &profile.notify.webhook {
        if let Err(e) = post(url, body.as_bytes(), timeout) {
            warn(&format!("notification to {url} failed: {e}"));
        }
    }
    if let Some(command_text) = &profile.notify.command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(command_text).stdout(std::io::stderr());
        for var in ["SNAP_PASSWORD", "SNAP_FROM_PASSWORD", "SNAP_NEW_PASSWORD"] {
            command.env_remove(var);
        }
        match run_with_timeout(command, Some(body.as_bytes()), timeout) {
            Ok(status) if status.success() => {}
            Ok(status) => warn(&format!("notification command `{command_text}` {status}")),
            Err(e) => warn(&format!("notification command `{command_text}`: {e}")),
        }
    }
}

/// A JSON POST over plain HTTP/1.1, with a timeout on connecting, writing
/// and reading; a status other than 2xx is an error.
fn post(url: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("only http:// webhooks are supported (for https, use a notify command such as curl)".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs =
        std::net::ToSocketAddrs::to_socket_addrs(&address).map_err(|e| format!("cannot resolve {authority}: {e}"))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(timeout));
                let _ = stream.set_write_timeout(Some(timeout));
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nUser-Agent: snap/{}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    env!("CARGO_PKG_VERSION")
                );
                stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(body))
                    .map_err(|e| format!("sending: {e}"))?;
                let mut response = Vec::new();
                let mut buf = [0u8; 1024];
                // The status line is enough; the rest may never end before the timeout.
                while !response.windows(2).any(|w| w == b"\r\n") && response.len() < 8192 {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => response.extend_from_slice(&buf[..n]),
                        Err(e) => return Err(format!("reading the response: {e}")),
                    }
                }
                let line = String::from_utf8_lossy(&response);
                let line = line.lines().next().unwrap_or("");
                let code = line.split_whitespace().nth(1).unwrap_or("");
                return if code.starts_with('2') {
                    Ok(())
                } else {
                    Err(format!("the server answered {line:?}"))
                };
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}
