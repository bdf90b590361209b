//! `snap serve`: serve a local repository directory over HTTP to clients
//! that use `-r rest:http(s)://...` (docs/rest-protocol.md). The directory
//! is the global `-r/--repo`, which must be local.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use snap_remote::Location;

use crate::global::{GlobalArgs, CANCEL};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, HOST:PORT (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
    listen: String,
    /// Refuse every delete and overwrite (except of a client's own locks):
    /// clients can back up and restore, but not forget or prune.
    #[arg(long)]
    append_only: bool,
    /// User U may use only the repository /U/ (needs --htpasswd).
    #[arg(long)]
    private_repos: bool,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt entries, `htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let root = match global.location()?.0 {
        Location::Local(path) => path,
        other => bail!(snap_core::Error::InvalidArgument(format!(
            "snap serve serves a local directory, not {other:?}"
        ))),
    };
    let options = snap_server::ServeOptions {
        root: root.clone(),
        listen: args.listen,
        append_only: args.append_only,
        private_repos: args.private_repos,
        htpasswd: args.htpasswd,
        tls: args.tls_cert.zip(args.tls_key),
    };
    let append_only = options.append_only;
    snap_server::serve(options, &CANCEL, |addr, tls| {
        let scheme = if tls { "https" } else { "http" };
        let mode = if append_only { ", append-only" } else { "" };
        // Scripts (and the tests) read the address from this line.
        let _ = outln!("serving {} on {scheme}://{addr}/{mode}", root.display());
    })?;
    Ok(if CANCEL.load(Ordering::SeqCst) {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::OK
    })
}
