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
    /// Open the UI in a browser (xdg-open), through a private redirect file so
    /// the token never appears on a command line.
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
            // The command lines of xdg-open and the browser are readable by
            // every local user (/proc/PID/cmdline): they get the path of a
            // 0600 file in a 0700 directory that redirects to the URL.
            let started = redirect_file(&url).and_then(|file| {
                std::process::Command::new("xdg-open")
                    .arg(&file)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .context("xdg-open")
            });
            if let Err(e) = started {
                errln!("cannot start a browser ({e:#}); open the URL above yourself");
            }
        }
    })?;
    Ok(if CANCEL.load(Ordering::SeqCst) {
        crate::exit::INTERRUPTED
    } else {
        crate::exit::OK
    })
}

/// Writes a page that sends the browser on to `url` into a new private
/// directory under the temporary directory, and returns its path. It is
/// left for the browser to read; the directory only the user can enter.
fn redirect_file(url: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = std::env::temp_dir().join(format!("snap-ui-{}", &snap_ui::new_token()[..16]));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join("open.html");
    // The URL holds only the address and the token (hex or A-Za-z0-9-_):
    // nothing to escape in an attribute, but be strict anyway.
    let escaped = url.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;");
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={escaped}\">\
         <title>snap ui</title><a href=\"{escaped}\">open snap ui</a>\n"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(page.as_bytes()))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}
