//! `snap ui`: the local web UI (crates/ui) over the repository the global
//! options name. Prints the URL with its token; `--open` starts a browser.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};

use crate::global::{GlobalArgs, CANCEL};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on, HOST:PORT (port 0: any free port, printed). Off
    /// loopback it needs --tls-cert, --tls-key and --htpasswd.
    #[arg(long, default_value = "127.0.0.1:8123", value_name = "ADDR")]
    listen: String,
    /// Open the URL in a browser (xdg-open).
    #[arg(long)]
    open: bool,
    /// Read the access token from the first line of this file (at least 16
    /// characters of A-Z a-z 0-9 - _) instead of making a random one.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
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
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        None => snap_ui::new_token(),
    };
    let repo = global.open()?;
    let options = snap_ui::UiOptions {
        listen: args.listen,
        token: token.clone(),
        tls: args.tls_cert.zip(args.tls_key),
        htpasswd: args.htpasswd,
        retry_lock: global.retry_lock(),
    };
    let open = args.open;
    snap_ui::serve(repo, options, &CANCEL, |addr, tls| {
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}/?token={token}");
        // Scripts (and the tests) read the address from this line.
        let _ = outln!("snap ui on {url}");
        if open {
            if let Err(e) = std::process::Command::new("xdg-open")
                .arg(&url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            {
                errln!("cannot start a browser (xdg-open: {e}); open the URL above yourself");
            }
        }
    })?;
    Ok(if CANCEL.load(Ordering::SeqCst) {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::OK
    })
}
