//! Options every command takes, and how they become an open repository.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use snap_core::backend::counting::{CountingBackend, RequestCounts};
use snap_core::backend::retry::{RetryBackend, RetryPolicy};
use snap_core::backend::Backend;
use snap_core::lock::{self, LockGuard, LockKind};
use snap_core::repo::{InitOptions, Repository};
use snap_core::Error;
use snap_remote::Location;

use crate::password::{self, Prompt};

#[derive(clap::Args)]
pub struct GlobalArgs {
    /// Repository location: a directory, s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX],
    /// sftp:[USER@]HOST[:PORT]:/PATH, rest:http(s)://HOST:PORT/[NAME/] or
    /// opendal:SCHEME. Default: $XDG_DATA_HOME/snap/repository
    #[arg(short = 'r', long = "repo", env = "SNAP_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// A backend option, `key=value` (repeatable; see README "Remote repositories").
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", value_parser = parse_option, global = true)]
    pub options: Vec<(String, String)>,
    /// Read the password from the first line of this file.
    #[arg(long, env = "SNAP_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Directory of the local index cache. Default: $XDG_CACHE_HOME/snap
    #[arg(long, env = "SNAP_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (see README for the schemas).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How long to wait for a conflicting repository lock, e.g. `5m` (default: fail at once).
    #[arg(long, global = true, value_name = "DURATION")]
    pub retry_lock: Option<humantime::Duration>,
    /// More logging on stderr (-v info, -vv debug); SNAP_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Set by Ctrl-C / SIGTERM; operations stop at the next safe point.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

/// The requests this process made to storage (all repositories it opened),
/// for the `-v` summary and the `requests` object of `--json`.
pub static REQUESTS: std::sync::LazyLock<Arc<RequestCounts>> = std::sync::LazyLock::new(Default::default);

/// Set while a password is being read from the terminal.
pub static PROMPTING: AtomicBool = AtomicBool::new(false);

pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            // A second interrupt: the user wants out now. Everything written
            // so far is whole (atomic writes), so leaving is safe.
            std::process::exit(crate::exit::INTERRUPTED);
        }
        // At a password prompt nothing is being written: the prompt returns
        // and the command ends as interrupted (password.rs).
        if !PROMPTING.load(Ordering::SeqCst) {
            errln!("interrupted: finishing the current writes (press Ctrl-C again to quit at once)");
        }
    });
}

impl GlobalArgs {
    pub fn retry_lock(&self) -> std::time::Duration {
        self.retry_lock.map(Into::into).unwrap_or_default()
    }

    /// The repository location, and whether it is the implicit default.
    pub fn location(&self) -> Result<(Location, bool)> {
        match &self.repo {
            Some(location) => Ok((Location::parse(location)?, false)),
            None => {
                let data = dirs::data_dir().context("no home directory: give the repository with -r/--repo")?;
                Ok((Location::Local(data.join("snap").join("repository")), true))
            }
        }
    }

    /// Takes a repository lock, waiting up to `--retry-lock`.
    pub fn lock(&self, repo: &Repository, kind: LockKind, operation: &str) -> Result<LockGuard> {
        let guard = lock::acquire(repo, kind, operation, self.retry_lock())?;
        // A lost lock stops the operation as an interruption would.
        guard.stop_on_loss(&CANCEL);
        resync(repo)?;
        Ok(guard)
    }

    /// A shared lock for commands that only read: on a read-only repository,
    /// where no lock can be written, they go on without one.
    pub fn read_lock(&self, repo: &Repository, operation: &str) -> Result<Option<LockGuard>> {
        match lock::acquire(repo, LockKind::Shared, operation, self.retry_lock()) {
            Ok(guard) => {
                guard.stop_on_loss(&CANCEL);
                resync(repo)?;
                Ok(Some(guard))
            }
            // Only a repository that refuses writes goes on without a lock; any
            // other storage error stops the command.
            Err(Error::Backend(snap_core::backend::BackendError::Io { error, op, what }))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                tracing::warn!("the repository is read-only ({op} {what}: {error}); going on without a lock");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn cache_root(&self) -> Result<PathBuf> {
        match &self.cache_dir {
            Some(path) => Ok(path.clone()),
            None => Ok(dirs::cache_dir()
                .context("no home directory: give the cache directory with --cache-dir")?
                .join("snap")),
        }
    }

    pub fn backend(&self) -> Result<(Arc<dyn Backend>, bool)> {
        let (location, default) = self.location()?;
        Ok((with_wrappers(snap_remote::open(&location, &self.options)?), default))
    }

    /// Opens the repository, asking for the password only if it is encrypted.
    pub fn open(&self) -> Result<Repository> {
        let (backend, _) = self.backend()?;
        self.open_backend(backend)
    }

    fn open_backend(&self, backend: Arc<dyn Backend>) -> Result<Repository> {
        let location = backend.location();
        let config = snap_core::repo::read_config(backend.as_ref())?;
        let password = match config.body.encryption {
            snap_core::crypto::Encryption::None => None,
            _ => Some(password::get(self.password_file.as_deref(), Prompt::Existing)?),
        };
        Repository::open(backend, password.as_ref(), &self.cache_root()?)
            .with_context(|| format!("cannot open repository {location}"))
    }

    /// Opens the repository; the default repository is created on first use
    /// from a terminal.
    pub fn open_or_init_default(&self) -> Result<Repository> {
        let (backend, default) = self.backend()?;
        match snap_core::repo::read_config(backend.as_ref()) {
            Err(e @ Error::NotARepository { .. }) if default => {
                let location = backend.location();
                // Created only for someone at a terminal, who is asked for
                // the new password and told where the repository went. From
                // cron or a script (where HOME may not be what the user
                // thinks) a missing default repository is an error, even
                // with a password in the environment: a password says
                // nothing about whether this is the repository meant.
                if !std::io::stdin().is_terminal() {
                    return Err(anyhow::Error::new(e).context(format!(
                        "no repository at {location} (the default location); create it with `snap init` \
                         (or give one with -r/--repo): snap creates the default repository by itself only \
                         when run from a terminal"
                    )));
                }
                let password = password::get(self.password_file.as_deref(), Prompt::New)?;
                let repo = Repository::init(backend, Some(&password), &InitOptions::default(), &self.cache_root()?)
                    .with_context(|| format!("cannot create the default repository at {location}"))?;
                if !self.quiet && !self.json {
                    errln!("created repository {location}");
                }
                Ok(repo)
            }
            _ => self.open_backend(backend),
        }
    }
}

/// The wrappers every storage the CLI opens gets (docs/design.md, "Remote
/// storage"): retries over request counting over the storage itself, so
/// each retry is counted as the request it is. The object cache goes on top
/// when the repository is opened (`Repository::open`).
fn with_wrappers(storage: Arc<dyn Backend>) -> Arc<dyn Backend> {
    let counted = Arc::new(CountingBackend::new(storage, REQUESTS.clone()));
    Arc::new(RetryBackend::new(counted, RetryPolicy::from_env()))
}

/// The `-v` line on stderr: what the command cost in requests.
pub fn print_request_summary() {
    let stats = REQUESTS.stats();
    if stats.total == 0 {
        return;
    }
    let mut ops: Vec<(&str, u64)> = stats.by_op.iter().map(|(op, n)| (*op, *n)).collect();
    ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
    errln!(
        "requests: {} ({}), {} up, {} down",
        stats.total,
        ops.join(", "),
        crate::cmd::human_bytes(stats.bytes_up),
        crate::cmd::human_bytes(stats.bytes_down)
    );
    let kinds: Vec<String> = stats
        .by_kind
        .iter()
        .map(|(kind, ops)| {
            let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{op} {n}")).collect();
            format!("{kind} {}", ops.join(", "))
        })
        .collect();
    errln!("  by kind: {}", kinds.join("; "));
}

/// The index cache was synced when the repository was opened, before the
/// lock: a prune that finished in between may have deleted packs the cache
/// still lists, and a backup trusting it would skip storing those chunks.
/// Syncing again under the lock closes that window (one listing when nothing
/// changed).
fn resync(repo: &Repository) -> Result<()> {
    repo.index()
        .sync(repo.backend(), repo.crypto())
        .context("cannot refresh the index cache")?;
    Ok(())
}

/// `-o key=value`.
fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
