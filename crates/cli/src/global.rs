//! Options every command takes, and how they become an open repository.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use snap_core::backend::counting::{CountingBackend, RequestCounts};
use snap_core::backend::retry::{RetryBackend, RetryPolicy};
use snap_core::backend::Backend;
use snap_core::lock::{LockGuard, LockKind};
use snap_core::repo::{InitOptions, OpenFailure, Opened, PasswordRequest, Repository};
use snap_core::Error;
use snap_remote::Location;

use crate::password::{self, Prompt};

#[derive(clap::Args, Clone)]
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
    /// Read the password from the first line this shell command prints.
    #[arg(long, env = "SNAP_PASSWORD_COMMAND", global = true, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Use the settings of this profile of the config file (README "Profiles").
    #[arg(long, env = "SNAP_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// The config file of profiles. Default: $XDG_CONFIG_HOME/snap/config.toml
    #[arg(long, env = "SNAP_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A password written in the profile itself (a config file of mode 0600).
    #[arg(skip)]
    pub password: Option<String>,
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

/// The running command of `create --stdin-from-command` (0: none). An
/// interrupt terminates it: the signal may reach snap alone (`kill -INT`),
/// and the backup cannot stop while it waits on the command's silent output.
pub static STDIN_COMMAND_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            // A second interrupt: the user wants out now. Everything written
            // so far is whole (atomic writes), so leaving is safe.
            std::process::exit(crate::exit::INTERRUPTED);
        }
        let pid = STDIN_COMMAND_PID.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill only sends a signal; the pid is cleared before
            // the child is reaped, so it is still that command's.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        // At a password prompt nothing is being written: the prompt returns
        // and the command ends as interrupted (password.rs).
        if !PROMPTING.load(Ordering::SeqCst) {
            errln!("interrupted: finishing the current writes (press Ctrl-C again to quit at once)");
        }
    });
}

impl GlobalArgs {
    /// Where the password comes from (password.rs gives the order).
    pub fn password_source(&self) -> password::Source<'_> {
        password::Source {
            file: self.password_file.as_deref(),
            command: self.password_command.as_deref(),
            inline: self.password.as_deref(),
        }
    }

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

    /// Takes a repository lock, waiting up to `--retry-lock`; a lost lock
    /// stops the command as an interruption would.
    pub fn lock(&self, repo: &Repository, kind: LockKind, operation: &str) -> Result<LockGuard> {
        Ok(repo.lock(kind, operation, self.retry_lock(), &CANCEL)?)
    }

    /// A shared lock for commands that only read; none on a read-only repository.
    pub fn read_lock(&self, repo: &Repository, operation: &str) -> Result<Option<LockGuard>> {
        Ok(repo.read_lock(operation, self.retry_lock(), &CANCEL)?)
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
        self.open_backend(backend, false)
    }

    /// Opens the repository; the default repository is created on first use
    /// from a terminal.
    pub fn open_or_init_default(&self) -> Result<Repository> {
        let (backend, default) = self.backend()?;
        self.open_backend(backend, default)
    }

    fn open_backend(&self, backend: Arc<dyn Backend>, default: bool) -> Result<Repository> {
        let location = backend.location();
        // Created only for someone at a terminal, who is asked for the new
        // password and told where the repository went. From cron or a
        // script (where HOME may not be what the user thinks) a missing
        // default repository is an error, even with a password in the
        // environment: a password says nothing about whether this is the
        // repository meant.
        let at_terminal = default && std::io::stdin().is_terminal();
        let create = InitOptions::default();
        let opened = Repository::open_or_init(
            backend,
            &self.cache_root()?,
            at_terminal.then_some(&create),
            |request| {
                password::get(
                    &self.password_source(),
                    match request {
                        PasswordRequest::Existing => Prompt::Existing,
                        PasswordRequest::New => Prompt::New,
                    },
                )
            },
        );
        if opened.is_ok() {
            crate::debug_rss::after_key();
        }
        match opened {
            Ok(Opened::Existing(repo)) => Ok(repo),
            Ok(Opened::Created(repo)) => {
                if !self.quiet && !self.json {
                    errln!("created repository {location}");
                }
                Ok(repo)
            }
            Err(OpenFailure::Config(e @ Error::NotARepository { .. })) if default => Err(anyhow::Error::new(e)
                .context(format!(
                    "no repository at {location} (the default location); create it with `snap init` \
                     (or give one with -r/--repo): snap creates the default repository by itself only \
                     when run from a terminal"
                ))),
            Err(OpenFailure::Config(e)) => Err(e.into()),
            Err(OpenFailure::Password(e)) => Err(e),
            Err(OpenFailure::Open(e)) => {
                Err(anyhow::Error::new(e).context(format!("cannot open repository {location}")))
            }
            Err(OpenFailure::Init(e)) => {
                Err(anyhow::Error::new(e).context(format!("cannot create the default repository at {location}")))
            }
        }
    }
}

/// The wrappers every storage the CLI opens gets (docs/design.md, "Remote
/// storage"): retries over request counting over the storage itself, so
/// each retry is counted as the request it is. The object cache goes on top
/// when the repository is opened (`Repository::open`).
pub fn with_wrappers(storage: Arc<dyn Backend>) -> Arc<dyn Backend> {
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

/// `-o key=value`.
fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
