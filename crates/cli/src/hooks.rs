//! A profile's hooks and notifications around one command (README "Hooks
//! and notifications").
//!
//! Order: `before`; the command (not run when `before` fails); then
//! `after-success` or `on-failure`; then `after`, always; then the
//! notifications (on failure, and on success with `on-success = true`).
//! Each hook runs as `sh -c` in a process group of its own, so that a
//! timeout kills all it started, not just the shell.

use std::io::Write;
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

/// Set to 1 in the environment of hooks and notification commands.
const IN_HOOK: &str = "SNAP_IN_HOOK";

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
    // A hook (or notification command) that runs snap itself inherits
    // SNAP_PROFILE: its run must not start the profile's hooks again, or a
    // `before = "snap create"` would recurse until a timeout.
    let in_hook = std::env::var_os(IN_HOOK).is_some_and(|v| !v.is_empty());
    if in_hook || (profile.hooks.is_empty() && profile.notify.is_empty()) {
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
    command.env("SNAP_HOOK", name).env(IN_HOOK, "1");
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
            warn(&format!("notification to {} failed: {e}", redact(url)));
        }
    }
    if let Some(command_text) = &profile.notify.command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(command_text)
            .stdout(std::io::stderr())
            .env(IN_HOOK, "1");
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

/// A JSON POST over HTTP or HTTPS (rustls, webpki roots); `timeout` bounds
/// the whole exchange (DNS, connect, TLS, sending, the response head), not
/// each read, so a server answering a byte at a time cannot hold a backup
/// for longer. A status other than 2xx is an error. The body of the
/// response is not read.
fn post(url: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(format!("snap/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => format!("timed out after {}", humantime::format_duration(timeout)),
            // Its text may quote the URL, credentials and all.
            e => e.to_string().replace(url, &redact(url)),
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the server answered {status}"))
    }
}

/// `url` as messages may show it: scheme and host only
/// (`https://***@HOST/***`). User info and path both go: a webhook's
/// secret is often its path (`/services/T0/B0/TOKEN`) or a user name.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = if tail.is_empty() || tail == "/" { tail } else { "/***" };
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_url_passwords() {
        assert_eq!(redact("http://u:p@host:8/x?y"), "http://***@host:8/***");
        assert_eq!(redact("https://token@host/a@b"), "https://***@host/***");
        assert_eq!(redact("http://host/a@b"), "http://host/***");
        assert_eq!(redact("https://host/"), "https://host/");
        assert_eq!(redact("https://host?k=v"), "https://host/***");
        assert_eq!(redact("nonsense u:p@h"), "***");
    }
}
