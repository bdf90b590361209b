//! The contestants: how to find each tool and the command line of each step.
//!
//! Every tool runs with encryption on, its default compression and chunking,
//! its own repository and cache directory, and the password in its
//! environment variable.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::measure::Cmd;
use crate::Step;

pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Snap,
    /// snap again, its key wrapped with a 1 MiB, 1-pass argon2id: argon2's
    /// 64 MiB at open is a floor that hides the working set of the rest.
    SnapCheapKdf,
    Restic,
    Borg,
    Rustic,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Snap, Kind::Restic, Kind::Borg, Kind::Rustic, Kind::SnapCheapKdf];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Snap => "snap",
            Kind::SnapCheapKdf => "snap (cheap KDF)",
            Kind::Restic => "restic",
            Kind::Borg => "borg",
            Kind::Rustic => "rustic",
        }
    }

    /// Names its directories, logs and JSON entries.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::SnapCheapKdf => "snap-cheap-kdf",
            other => other.name(),
        }
    }

    /// A peer is what snap is compared with; the cheap-KDF run of snap is not one.
    pub fn is_peer(self) -> bool {
        matches!(self, Kind::Restic | Kind::Borg | Kind::Rustic)
    }
}

/// Where one tool's run keeps its things.
pub struct Paths {
    pub repo: PathBuf,
    pub cache: PathBuf,
    /// The backed-up directory (absolute, the same for every tool and step).
    pub src: PathBuf,
    /// The subdirectory restored on its own (absolute, under `src`).
    pub sub: PathBuf,
}

pub struct Tool {
    pub kind: Kind,
    pub program: PathBuf,
    pub version: String,
}

/// Finds a tool, or says why it is skipped.
pub fn discover(kind: Kind, snap: &Path) -> Result<Tool, String> {
    let program = match kind {
        Kind::Snap | Kind::SnapCheapKdf => snap.to_owned(),
        Kind::Restic => which("restic").ok_or("not installed (apt-get install restic)")?,
        Kind::Borg => which("borg").ok_or("not installed (apt-get install borgbackup)")?,
        Kind::Rustic => which("rustic").ok_or("not installed (cargo install rustic-rs)")?,
    };
    let version_arg = if kind == Kind::Restic { "version" } else { "--version" };
    let output = Command::new(&program)
        .arg(version_arg)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let version = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    if !output.status.success() || version.is_empty() {
        return Err(format!("{} {version_arg} failed", program.display()));
    }
    if kind == Kind::Borg && !version.starts_with("borg 1.") {
        return Err(format!("{version} is not supported (the harness drives borg 1.x)"));
    }
    Ok(Tool { kind, program, version })
}

fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(cargo_home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(cargo_home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// `/a/b` as the relative path `a/b`: where tools put an absolute source path under a restore target.
fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

impl Tool {
    fn base(&self, p: &Paths) -> Cmd {
        let cmd = Cmd::new(&self.program);
        match self.kind {
            Kind::Snap | Kind::SnapCheapKdf => cmd
                .env("SNAP_PASSWORD", PASSWORD)
                .arg("-q")
                .arg("-r")
                .arg(&p.repo)
                .arg("--cache-dir")
                .arg(&p.cache),
            Kind::Restic => cmd
                .env("RESTIC_PASSWORD", PASSWORD)
                .arg("-q")
                .arg("-r")
                .arg(&p.repo)
                .arg("--cache-dir")
                .arg(&p.cache),
            Kind::Borg => cmd
                .env("BORG_PASSPHRASE", PASSWORD)
                .env("BORG_BASE_DIR", p.cache.to_string_lossy())
                .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes"),
            Kind::Rustic => cmd
                .env("RUSTIC_PASSWORD", PASSWORD)
                .arg("--no-progress")
                .arg("-r")
                .arg(&p.repo)
                .arg("--cache-dir")
                .arg(&p.cache),
        }
    }

    /// The command of a step. Restores go into `target` (an empty directory);
    /// the second value is where the restored copy of what was asked for lands.
    pub fn command(&self, step: Step, p: &Paths, target: &Path) -> (Cmd, Option<PathBuf>) {
        let base = self.base(p);
        let borg_repo = |archive: &str| format!("{}::{archive}", p.repo.display());
        match (self.kind, step) {
            (Kind::Borg, Step::Init) => (base.args(["init", "-e", "repokey-blake2"]).arg(&p.repo), None),
            (Kind::Borg, Step::Backup | Step::Rebackup | Step::BackupV2) => {
                (base.arg("create").arg(borg_repo(step.key())).arg(&p.src), None)
            }
            (Kind::Borg, Step::Restore) => (
                base.cwd(target).arg("extract").arg(borg_repo(Step::BackupV2.key())),
                Some(target.join(relative(&p.src))),
            ),
            (Kind::Borg, Step::RestoreSub) => (
                base.cwd(target)
                    .arg("extract")
                    .arg(borg_repo(Step::BackupV2.key()))
                    .arg(relative(&p.sub)),
                Some(target.join(relative(&p.sub))),
            ),

            (Kind::SnapCheapKdf, Step::Init) => (
                base.args(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]),
                None,
            ),
            (_, Step::Init) => (base.arg("init"), None),
            (Kind::Snap | Kind::SnapCheapKdf, Step::Backup | Step::Rebackup | Step::BackupV2) => {
                (base.arg("create").arg(&p.src), None)
            }
            (Kind::Restic | Kind::Rustic, Step::Backup | Step::Rebackup | Step::BackupV2) => {
                (base.arg("backup").arg(&p.src), None)
            }
            (Kind::Snap | Kind::SnapCheapKdf, Step::Restore) => (
                base.args(["restore", "latest", "--target"]).arg(target),
                Some(target.join(relative(&p.src))),
            ),
            (Kind::Snap | Kind::SnapCheapKdf, Step::RestoreSub) => (
                base.args(["restore", "latest", "--target"])
                    .arg(target)
                    .arg("--path")
                    .arg(&p.sub),
                Some(target.join(p.sub.file_name().expect("subdirectory name"))),
            ),
            (Kind::Restic, Step::Restore) => (
                base.args(["restore", "latest", "--target"]).arg(target),
                Some(target.join(relative(&p.src))),
            ),
            (Kind::Restic, Step::RestoreSub) => (
                base.args(["restore", "latest", "--target"])
                    .arg(target)
                    .arg("--include")
                    .arg(&p.sub),
                Some(target.join(relative(&p.sub))),
            ),
            (Kind::Rustic, Step::Restore) => (
                base.args(["restore", "latest"]).arg(target),
                Some(target.join(relative(&p.src))),
            ),
            (Kind::Rustic, Step::RestoreSub) => (
                base.arg("restore")
                    .arg(format!("latest:{}", p.sub.display()))
                    .arg(target),
                Some(target.to_owned()),
            ),
        }
    }
}

impl Tool {
    /// A backup of `input` read through standard input, stored under the
    /// file name `name` (a database dump piped into the tool).
    pub fn stdin_command(&self, p: &Paths, input: &Path, name: &str) -> Cmd {
        let base = self.base(p).stdin(input);
        match self.kind {
            Kind::Snap | Kind::SnapCheapKdf => base.args(["create", "--stdin", "--stdin-filename", name]),
            Kind::Restic => base.args(["backup", "--stdin", "--stdin-filename", name]),
            Kind::Borg => base
                .args(["create", "--stdin-name", name])
                .arg(format!("{}::stdin", p.repo.display()))
                .arg("-"),
            Kind::Rustic => base.args(["backup", "--stdin-filename", name, "-"]),
        }
    }
}
