//! Where the password comes from, in order: `--password-file` /
//! `SNAP_PASSWORD_FILE`, `SNAP_PASSWORD_COMMAND`, `SNAP_PASSWORD`, and last a
//! prompt when standard input is a terminal.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context, Result};
use snap_core::keys::Password;

/// No password source was available.
#[derive(Debug, thiserror::Error)]
#[error("no password given and no terminal to ask on: use --password-file, SNAP_PASSWORD_FILE, SNAP_PASSWORD_COMMAND or SNAP_PASSWORD")]
pub struct NoPassword;

/// Whether to ask twice (a new password).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Existing,
    New,
}

pub fn get(password_file: Option<&Path>, prompt: Prompt) -> Result<Password> {
    if let Some(path) = password_file {
        let text = std::fs::read(path).with_context(|| format!("cannot read password file {}", path.display()))?;
        return Ok(Password::new(first_line(text)));
    }
    if let Ok(command) = std::env::var("SNAP_PASSWORD_COMMAND") {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("cannot run SNAP_PASSWORD_COMMAND")?;
        if !output.status.success() {
            bail!("SNAP_PASSWORD_COMMAND failed ({})", output.status);
        }
        return Ok(Password::new(first_line(output.stdout)));
    }
    if let Ok(password) = std::env::var("SNAP_PASSWORD") {
        return Ok(Password::new(password.into_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(NoPassword.into());
    }
    ask(prompt)
}

/// Asks on the terminal; a new password is asked twice and must not be empty.
fn ask(prompt: Prompt) -> Result<Password> {
    let first = rpassword::prompt_password(match prompt {
        Prompt::Existing => "repository password: ",
        Prompt::New => "new repository password: ",
    })
    .context("cannot read the password from the terminal")?;
    if prompt == Prompt::New {
        if first.is_empty() {
            bail!("an empty password is not allowed (use --no-encryption for an unencrypted repository)");
        }
        let again = rpassword::prompt_password("repeat the password: ").context("cannot read the password")?;
        if again != first {
            bail!("the passwords differ");
        }
    }
    Ok(Password::new(first.into_bytes()))
}

/// A new password for `key add` / `key passwd`: from `file`,
/// `SNAP_NEW_PASSWORD`, or asked twice on the terminal.
pub fn get_new(file: Option<&Path>) -> Result<Password> {
    if let Some(path) = file {
        let text = std::fs::read(path).with_context(|| format!("cannot read password file {}", path.display()))?;
        return Ok(Password::new(first_line(text)));
    }
    if let Ok(password) = std::env::var("SNAP_NEW_PASSWORD") {
        return Ok(Password::new(password.into_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no new password: use --new-password-file or SNAP_NEW_PASSWORD");
    }
    ask(Prompt::New)
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
