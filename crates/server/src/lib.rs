//! snap-server: `snap serve`, a repository server for clients that are not
//! trusted with the storage (docs/rest-protocol.md).
//!
//! The server stores objects with snap-core's [`LocalBackend`], so the
//! served directory is an ordinary local repository (prune runs there) and
//! every write takes the same atomic path (temporary file, fsync, link).
//! What it adds is refusal: a write never replaces an object, an object
//! named by a hash must have that hash, names cannot leave the directory,
//! sizes are capped per kind, a truncated upload stores nothing, and with
//! `append_only` nothing is deleted except the client's own locks. The
//! HTTP machinery (axum on tokio) stays inside this crate: [`serve`] blocks.
//!
//! [`LocalBackend`]: snap_core::backend::LocalBackend

mod auth;
mod handler;
pub mod route;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use auth::{Htpasswd, HtpasswdError};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The served directory: the repository at `/`, and `DIR/NAME` at `/NAME/`.
    pub root: PathBuf,
    pub listen: String,
    /// Refuse every delete and overwrite, except of the client's own locks.
    pub append_only: bool,
    /// User U may use only `/U/` (needs `htpasswd`).
    pub private_repos: bool,
    /// bcrypt htpasswd file; without one, anyone who reaches the port may use it.
    pub htpasswd: Option<PathBuf>,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    #[error("cannot load the TLS certificate {cert} and key {key}: {error}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        error: std::io::Error,
    },
    #[error("--private-repos needs --htpasswd: without users there is no one to keep apart")]
    PrivateWithoutUsers,
    #[error("{0} is not a directory")]
    NoDirectory(PathBuf),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves until `stop` becomes true. `on_listening` is called once the
/// socket is bound, with its address (port 0 picks a free one).
pub fn serve(
    options: ServeOptions,
    stop: &'static AtomicBool,
    on_listening: impl FnOnce(SocketAddr, bool),
) -> Result<(), ServeError> {
    if options.private_repos && options.htpasswd.is_none() {
        return Err(ServeError::PrivateWithoutUsers);
    }
    if !options.root.is_dir() {
        return Err(ServeError::NoDirectory(options.root.clone()));
    }
    let htpasswd = options.htpasswd.as_deref().map(Htpasswd::load).transpose()?;
    let listener = std::net::TcpListener::bind(&options.listen).map_err(|error| ServeError::Listen {
        addr: options.listen.clone(),
        error,
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    if options.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "serving {addr} without TLS: passwords and repository traffic cross the network unencrypted \
             (the data itself stays encrypted); use --tls-cert and --tls-key"
        );
    }
    if htpasswd.is_none() {
        tracing::info!("no --htpasswd: every client that reaches {addr} may use the repositories");
    }
    let state = Arc::new(handler::State::new(
        options.root.clone(),
        options.append_only,
        options.private_repos,
        htpasswd,
    ));
    let app = handler::router(state);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(4)
        .build()?;
    runtime.block_on(async move {
        let tls = match &options.tls {
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|error| ServeError::Tls {
                        cert: cert.clone(),
                        key: key.clone(),
                        error,
                    })?;
                Some(config)
            }
            None => None,
        };
        on_listening(addr, tls.is_some());
        let handle = axum_server::Handle::new();
        let watcher = handle.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            watcher.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        match tls {
            Some(config) => {
                axum_server::from_tcp_rustls(listener, config)
                    .handle(handle)
                    .serve(service)
                    .await?
            }
            None => axum_server::from_tcp(listener).handle(handle).serve(service).await?,
        }
        Ok(())
    })
}
