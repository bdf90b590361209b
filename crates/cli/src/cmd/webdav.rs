//! `snap webdav [--listen ADDR] [SNAPSHOT...]`: snapshots served read-only
//! over WebDAV (crates/mount), one directory per snapshot plus `latest`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use snap_core::id::SnapshotId;
use snap_core::repo::Repository;
use snap_core::snapshot::Snapshot;
use snap_core::vfs::{Vfs, VfsOptions};

use crate::global::{GlobalArgs, CANCEL};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, HOST:PORT (port 0: any free port, printed).
    /// Loopback by default: anyone who can connect reads every file.
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    listen: String,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt entries, `htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    #[command(flatten)]
    view: ViewArgs,
}

/// Which snapshots a filesystem view shows, and its cache.
#[derive(clap::Args)]
pub struct ViewArgs {
    /// Snapshots to show (`latest`, ids or id prefixes); all that match
    /// --host/--path/--tag when none is given.
    snapshots: Vec<String>,
    /// Content blobs kept in memory, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    cache_mib: u64,
    #[command(flatten)]
    select: super::SelectArgs,
}

impl ViewArgs {
    /// The view of the chosen snapshots.
    pub fn vfs(&self, repo: &Repository) -> Result<Vfs> {
        let filter = self.select.filter()?;
        let chosen: Vec<(SnapshotId, Snapshot)> = if self.snapshots.is_empty() {
            snap_core::snapshot::list_matching(repo, &filter)?
        } else {
            let mut out: Vec<(SnapshotId, Snapshot)> = Vec::new();
            for spec in &self.snapshots {
                let found = snap_core::snapshot::find_in(repo, spec, &filter)?;
                if !out.iter().any(|(id, _)| *id == found.0) {
                    out.push(found);
                }
            }
            out
        };
        let options = VfsOptions {
            blob_cache_bytes: self.cache_mib.max(1) << 20,
            ..VfsOptions::default()
        };
        Ok(Vfs::new(repo.clone(), chosen, options))
    }
}

/// Whether every address `listen` names is a loopback one. An address that
/// does not resolve counts as not loopback (binding reports the real error).
fn listen_is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    // Checked before the repository opens: a usage error costs no password.
    // Without credentials anyone who can connect reads every decrypted file,
    // so only loopback (guarded by the Host check in crates/mount) goes open.
    if !listen_is_loopback(&args.listen) {
        if args.htpasswd.is_none() {
            anyhow::bail!(snap_core::Error::InvalidArgument(format!(
                "--listen {} is not a loopback address: anyone who can connect would read every file; \
                 give --htpasswd FILE (and put TLS in front: passwords and files cross the network in clear)",
                args.listen
            )));
        }
        errln!(
            "warning: serving on {} without TLS: passwords and file contents cross the network in clear",
            args.listen
        );
    }
    super::mount::stop_on_sigterm();
    let repo = global.open()?;
    let _lock = global.read_lock(&repo, "webdav")?;
    let vfs = Arc::new(args.view.vfs(&repo)?);
    let options = snap_mount::webdav::WebdavOptions {
        listen: args.listen,
        htpasswd: args.htpasswd,
    };
    snap_mount::webdav::serve(vfs, options, &CANCEL, |addr| {
        // Scripts (and the tests) read the address from this line.
        let _ = outln!("serving snapshots over WebDAV on http://{addr}/ (read-only)");
    })?;
    Ok(if CANCEL.load(Ordering::SeqCst) {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::OK
    })
}
