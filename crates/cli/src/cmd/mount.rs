//! `snap mount MOUNTPOINT [SNAPSHOT...]`: snapshots as a read-only FUSE
//! filesystem (crates/mount) until Ctrl-C, SIGTERM or `fusermount3 -u`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::global::{GlobalArgs, CANCEL};

#[derive(clap::Args)]
pub struct Args {
    /// An existing, empty directory to mount on.
    mountpoint: PathBuf,
    /// Let other users use the mount too (needs `user_allow_other` in
    /// /etc/fuse.conf unless run as root). Off: only you can. On: the
    /// kernel checks the modes and owners the snapshot recorded
    /// (`default_permissions`), as for the files they came from.
    #[arg(long)]
    allow_other: bool,
    #[command(flatten)]
    view: super::webdav::ViewArgs,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    if !args.mountpoint.is_dir() {
        anyhow::bail!(snap_core::Error::InvalidArgument(format!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        )));
    }
    stop_on_sigterm();
    let repo = global.open()?;
    let _lock = global.read_lock(&repo, "mount")?;
    let vfs = Arc::new(args.view.vfs(&repo)?);
    let options = snap_mount::fuse::MountOptions {
        allow_other: args.allow_other,
    };
    let shown = args.mountpoint.display().to_string();
    snap_mount::fuse::mount(vfs, &args.mountpoint, &options, &CANCEL, || {
        // Scripts (and the tests) wait for this line.
        let _ = outln!("mounted snapshots on {shown} (read-only); Ctrl-C or `fusermount3 -u {shown}` unmounts");
    })
    .with_context(|| format!("cannot mount on {shown}"))?;
    Ok(if CANCEL.load(Ordering::SeqCst) {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::OK
    })
}

/// SIGTERM sets the interrupt flag as Ctrl-C does, so the mount is undone
/// (the default action would end the process with the mount left behind).
pub fn stop_on_sigterm() {
    extern "C" fn on_term(_: libc::c_int) {
        // An atomic store is async-signal-safe.
        CANCEL.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
}
