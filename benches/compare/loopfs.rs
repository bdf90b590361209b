//! A freshly made ext4 file system on a loop device, one per restore.
//!
//! ext4 scans recently freed inodes on every create for minutes after a large
//! delete, so a restore right after another tool's cleanup would pay for it
//! (issue 11): each restore gets a file system of its own, made just before
//! and unmounted and deleted just after.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub struct LoopFs {
    image: PathBuf,
    mount: PathBuf,
}

/// Whether this process can make and mount a file system (tried once, in
/// `scratch`); the reason when not.
pub fn unavailable(scratch: &Path) -> Option<String> {
    if let Some(why) = missing_tools() {
        return Some(why);
    }
    if let Err(e) = fs::create_dir_all(scratch) {
        return Some(format!("cannot create {}: {e}", scratch.display()));
    }
    match LoopFs::create(&scratch.join("probe.img"), &scratch.join("probe"), 16 << 20, 1024) {
        Ok(probe) => {
            drop(probe);
            None
        }
        Err(e) => Some(format!(
            "cannot mount a loop device here ({e:#}): restores go into a directory of the work file system"
        )),
    }
}

fn missing_tools() -> Option<String> {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: restores go into a directory of the work file system".into());
    }
    for tool in ["mkfs.ext4", "mount", "umount"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(format!(
                "{tool} is missing: restores go into a directory of the work file system"
            ));
        }
    }
    None
}

/// Room for `bytes` of content in `files` files and `dirs` directories: each
/// file and directory rounded up to 4 KiB blocks, plus a quarter and 128 MiB
/// for ext4's own metadata.
pub fn size_for(bytes: u64, files: u64, dirs: u64) -> (u64, u64) {
    let blocks = bytes + (files + dirs) * 4096;
    let size = blocks + blocks / 4 + (128 << 20);
    let inodes = (files + dirs) + (files + dirs) / 4 + 1024;
    (size, inodes)
}

impl LoopFs {
    /// Makes an image of `size` bytes with `inodes` inodes at `image` and
    /// mounts it at `mount`.
    pub fn create(image: &Path, mount: &Path, size: u64, inodes: u64) -> Result<LoopFs> {
        let _ = fs::remove_file(image);
        fs::create_dir_all(mount)?;
        let file = fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
        file.set_len(size)?;
        drop(file);
        // The inode tables and journal are written now, not by a kernel thread
        // while the restore runs.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-N"])
            .arg(inodes.to_string())
            .arg(image))?;
        let fs = LoopFs {
            image: image.to_owned(),
            mount: mount.to_owned(),
        };
        run(Command::new("mount").args(["-o", "loop"]).arg(image).arg(mount)).inspect_err(|_| {
            let _ = fs::remove_file(image);
        })?;
        Ok(fs)
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("umount").arg(&self.mount)) {
            eprintln!("compare: cannot unmount {}: {e:#}", self.mount.display());
            return;
        }
        let _ = fs::remove_dir(&self.mount);
        if let Err(e) = fs::remove_file(&self.image) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("compare: cannot delete {}: {e}", self.image.display());
            }
        }
    }
}

fn run(command: &mut Command) -> Result<()> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
