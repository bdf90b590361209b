//! snap-ui: `snap ui`, a local web UI over one open repository.
//!
//! Server-rendered HTML (maud templates) with one small script of our own
//! (`assets/app.js`, embedded: it only follows a job's progress over
//! server-sent events); no Node toolchain, nothing fetched at run time. The
//! engine stays synchronous: every call into snap-core runs on
//! `tokio::task::spawn_blocking`, and long operations (backup, restore,
//! verify) run as [`jobs`] whose progress a page follows.
//!
//! Who may use it is [`auth`]'s concern (token, session cookie, CSRF,
//! origin and host checks, security headers); what a page shows is
//! [`pages`]' and [`restore`]'s. The repository password stays in the
//! process: no page, header or cookie carries it.

mod auth;
mod cache;
mod html;
mod jobs;
mod pages;
mod restore;
mod schedules;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use snap_core::repo::Repository;

pub use auth::new_token;
pub use schedules::{BackupView, JobView, ProfileList, ProfileSource, ProfileView, Setting};

/// How to serve the UI.
pub struct UiOptions {
    /// HOST:PORT; port 0 picks a free one.
    pub listen: String,
    /// What every request must prove it knows (`?token=`, then the cookie, or `Authorization: Bearer`).
    pub token: String,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// bcrypt htpasswd file: HTTP Basic credentials on top of the token.
    pub htpasswd: Option<PathBuf>,
    /// How long an operation waits for a conflicting repository lock.
    pub retry_lock: Duration,
    /// The profiles of the config file, for the schedules page and the
    /// dashboard (none: those show an empty state).
    pub profiles: Option<Arc<dyn ProfileSource>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error(
        "{0} is not a loopback address: listening there needs --tls-cert, --tls-key and --htpasswd \
         (the token alone would cross the network in the clear, and anyone who reads it is in)"
    )]
    Exposed(SocketAddr),
    #[error("the token must be at least 16 characters of [A-Za-z0-9_-]")]
    WeakToken,
    #[error(transparent)]
    Htpasswd(#[from] snap_server::HtpasswdError),
    #[error("cannot load the TLS certificate {cert} and key {key}: {error}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        error: std::io::Error,
    },
    #[error("UI server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What the handlers share.
pub(crate) struct App {
    pub repo: Arc<Repository>,
    pub auth: auth::Auth,
    pub jobs: jobs::Jobs,
    pub stop: &'static AtomicBool,
    pub retry_lock: Duration,
    pub profiles: Option<Arc<dyn ProfileSource>>,
    /// The snapshots read so far (see [`cache`]).
    pub snapshots: cache::SnapshotCache,
}

/// Serves until `stop` becomes true. `on_listening` gets the bound address
/// and whether it is HTTPS, once the socket is open.
pub fn serve(
    repo: Repository,
    options: UiOptions,
    stop: &'static AtomicBool,
    on_listening: impl FnOnce(SocketAddr, bool),
) -> Result<(), UiError> {
    if !auth::token_is_strong(&options.token) {
        return Err(UiError::WeakToken);
    }
    let listener = std::net::TcpListener::bind(&options.listen).map_err(|error| UiError::Listen {
        addr: options.listen.clone(),
        error,
    })?;
    let addr = listener.local_addr()?;
    let loopback = addr.ip().is_loopback();
    if !loopback && (options.tls.is_none() || options.htpasswd.is_none()) {
        return Err(UiError::Exposed(addr));
    }
    listener.set_nonblocking(true)?;
    let htpasswd = options
        .htpasswd
        .as_deref()
        .map(snap_server::Htpasswd::load)
        .transpose()?;
    let app = Arc::new(App {
        repo: Arc::new(repo),
        auth: auth::Auth::new(options.token.clone(), htpasswd, options.tls.is_some(), addr),
        jobs: jobs::Jobs::default(),
        stop,
        retry_lock: options.retry_lock,
        profiles: options.profiles.clone(),
        snapshots: Default::default(),
    });
    let router = pages::router(app.clone())
        .merge(restore::router(app.clone()))
        .merge(jobs::router(app.clone()))
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::guard));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?;
    runtime.block_on(async move {
        let tls = match &options.tls {
            Some((cert, key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|error| UiError::Tls {
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
            watcher.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        let service = router.into_make_service();
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
