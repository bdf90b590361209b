//! `snap mount MOUNTPOINT [SNAPSHOT...]`: snapshots as a read-only FUSE
//! filesystem (crates/mount) until Ctrl-C, SIGTERM or `fusermount3 -u`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use snap_mount::fuse::Ended;

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
    let ended = snap_mount::fuse::mount(vfs, &args.mountpoint, &options, &CANCEL, || {
        // Scripts (and the tests) wait for this line.
        let _ = outln!("mounted snapshots on {shown} (read-only); Ctrl-C or `fusermount3 -u {shown}` unmounts");
    })?;
    match ended {
        Ended::Outside => Ok(crate::exit::OK),
        Ended::Unmounted => {
            errln!("unmounted {shown}");
            Ok(crate::exit::INTERRUPTED)
        }
        Ended::Detached => {
            errln!(
                "{shown} was busy (a process has a file or directory open in it): detached it lazily; \
                 it is gone from {shown} now, and files still open there fail (ENOTCONN) once snap exits"
            );
            Ok(crate::exit::INTERRUPTED)
        }
    }
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
