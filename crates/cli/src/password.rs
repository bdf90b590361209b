//! Where the password comes from, in order: `--password-file` /
//! `SNAP_PASSWORD_FILE`, `--password-command` / `SNAP_PASSWORD_COMMAND`, a
//! `password` in the profile (a config file of mode 0600), `SNAP_PASSWORD`,
//! and last a prompt when standard input is a terminal. A profile's
//! `password-file` and `password-command` arrive as the first two.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Result;
use snap_core::keys::Password;

use crate::global::{CANCEL, PROMPTING};

/// No password source was available.
#[derive(Debug, thiserror::Error)]
#[error("no password given and no terminal to ask on: use --password-file, SNAP_PASSWORD_FILE, SNAP_PASSWORD_COMMAND or SNAP_PASSWORD")]
pub struct NoPassword;

/// A password source that failed, or a new password that is refused: exit
/// code 12 like [`NoPassword`], not the generic 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PasswordError(String);

fn fail<T>(message: String) -> Result<T> {
    Err(PasswordError(message).into())
}

/// Whether to ask twice (a new password).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Existing,
    New,
}

/// The configured password sources of the repository.
#[derive(Clone, Copy, Default)]
pub struct Source<'a> {
    pub file: Option<&'a Path>,
    pub command: Option<&'a str>,
    pub inline: Option<&'a str>,
}

pub fn get(source: &Source<'_>, prompt: Prompt) -> Result<Password> {
    let password = get_any(source, prompt)?;
    if prompt == Prompt::New {
        refuse_empty(&password)?;
    }
    Ok(password)
}

/// The first line a shell command named by the environment variable `var`
/// prints (`None` when `var` is unset).
fn from_command(var: &str) -> Option<Result<Password>> {
    let command = std::env::var(var).ok()?;
    Some(run_command(var, &command))
}

/// The first line `command` prints; `var` names its source in errors.
fn run_command(var: &str, command: &str) -> Result<Password> {
    let output = match std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(std::process::Stdio::inherit())
        .output()
    {
        Ok(output) => output,
        Err(e) => return fail(format!("cannot run {var}: {e}")),
    };
    if !output.status.success() {
        return fail(format!("{var} failed ({})", output.status));
    }
    Ok(Password::new(first_line(output.stdout)))
}

fn get_any(source: &Source<'_>, prompt: Prompt) -> Result<Password> {
    if let Some(path) = source.file {
        return read_file(path);
    }
    if let Some(command) = source.command {
        return run_command(
            "the password command (--password-command, SNAP_PASSWORD_COMMAND or a profile's password-command)",
            command,
        );
    }
    if let Some(password) = source.inline {
        return Ok(Password::new(password.as_bytes()));
    }
    if let Ok(password) = std::env::var("SNAP_PASSWORD") {
        return Ok(Password::new(password.into_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(NoPassword.into());
    }
    ask(prompt)
}

fn read_file(path: &Path) -> Result<Password> {
    match std::fs::read(path) {
        Ok(text) => Ok(Password::new(first_line(text))),
        Err(e) => fail(format!("cannot read password file {}: {e}", path.display())),
    }
}

/// A new password must not be empty, from whatever source: an empty one
/// protects nothing, and is more likely an unset variable or an empty file
/// than a choice.
fn refuse_empty(password: &Password) -> Result<()> {
    if password.as_bytes().is_empty() {
        return fail(
            "an empty password is not allowed (use `snap init --no-encryption` for an unencrypted repository)".into(),
        );
    }
    Ok(())
}

/// Reads one password from the terminal. Ctrl-C (rpassword reads the
/// terminal raw, raises SIGINT itself and returns `Interrupted`) is an
/// interruption, exit 130, not a failure.
/// A Ctrl-C that reaches snap as SIGINT before the terminal is in raw mode
/// sets [`CANCEL`] and ends the read as well: also an interruption.
fn prompt_password(prompt: &str) -> Result<String> {
    PROMPTING.store(true, Ordering::SeqCst);
    let result = rpassword::prompt_password(prompt);
    PROMPTING.store(false, Ordering::SeqCst);
    if CANCEL.load(Ordering::SeqCst) {
        return Err(snap_core::Error::Interrupted.into());
    }
    match result {
        Ok(password) => Ok(password),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(snap_core::Error::Interrupted.into()),
        Err(e) => fail(format!("cannot read the password from the terminal: {e}")),
    }
}

/// Asks on the terminal; a new password is asked twice and must not be empty.
fn ask(prompt: Prompt) -> Result<Password> {
    let first = prompt_password(match prompt {
        Prompt::Existing => "repository password: ",
        Prompt::New => "new repository password: ",
    })?;
    if prompt == Prompt::New {
        refuse_empty(&Password::new(first.as_bytes()))?;
        let again = prompt_password("repeat the password: ")?;
        if again != first {
            return fail("the passwords differ".into());
        }
    }
    Ok(Password::new(first.into_bytes()))
}

/// The password of the source repository of `copy` and `init --from-repo`:
/// from `file` (`--from-password-file` / `SNAP_FROM_PASSWORD_FILE`),
/// `SNAP_FROM_PASSWORD_COMMAND`, `SNAP_FROM_PASSWORD`, or asked on the
/// terminal. Never from the destination's sources: two repositories with
/// one password should say so twice.
pub fn get_from(file: Option<&Path>) -> Result<Password> {
    if let Some(path) = file {
        return read_file(path);
    }
    if let Some(password) = from_command("SNAP_FROM_PASSWORD_COMMAND") {
        return password;
    }
    if let Ok(password) = std::env::var("SNAP_FROM_PASSWORD") {
        return Ok(Password::new(password.into_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        return fail(
            "no password for the source repository and no terminal to ask on: use --from-password-file, \
             SNAP_FROM_PASSWORD_FILE, SNAP_FROM_PASSWORD_COMMAND or SNAP_FROM_PASSWORD"
                .into(),
        );
    }
    Ok(Password::new(
        prompt_password("source repository password: ")?.into_bytes(),
    ))
}

/// A new password for `key add` / `key passwd`: from `file`,
/// `SNAP_NEW_PASSWORD`, or asked twice on the terminal.
pub fn get_new(file: Option<&Path>) -> Result<Password> {
    let password = if let Some(path) = file {
        read_file(path)?
    } else if let Ok(password) = std::env::var("SNAP_NEW_PASSWORD") {
        Password::new(password.into_bytes())
    } else if !std::io::stdin().is_terminal() {
        return fail("no new password: use --new-password-file or SNAP_NEW_PASSWORD".into());
    } else {
        ask(Prompt::New)?
    };
    refuse_empty(&password)?;
    Ok(password)
}

/// The first line, without its line ending: password files often end in a newline.
fn first_line(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
        bytes.truncate(end);
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    bytes
}
