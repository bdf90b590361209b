//! The `snap` command line. Each subcommand lives in `cmd/<name>.rs`: its
//! clap arguments, the conversion into snap-core options, one call, and the
//! rendering of the result. This file sets up logging and turns errors into
//! exit codes.

#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod term;
mod cmd;
mod config_edit;
mod debug_rss;
mod exit;
mod global;
mod hooks;
mod metrics;
mod password;
mod profile;
mod progress;
mod schedule;
mod state;
mod stdin_command;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "snap", version, about = "Deduplicating, encrypted snapshots of your files", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: global::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init(cmd::init::Args),
    /// Back up paths (or standard input) as a new snapshot.
    Create(cmd::create::Args),
    /// Restore a snapshot, or parts of it, into a directory.
    Restore(cmd::restore::Args),
    /// List snapshots.
    Snapshots(cmd::snapshots::Args),
    /// List the files in a snapshot.
    Ls(cmd::ls::Args),
    /// Show what changed between two snapshots, or a snapshot and the live files.
    Diff(cmd::diff::Args),
    /// Find files by name or path across snapshots, grouped by version.
    Find(cmd::find::Args),
    /// Restore size, deduplicated stored size and ratios of snapshots.
    Stats(cmd::stats::Args),
    /// Check that the repository is whole (--read-data: every byte).
    Verify(cmd::verify::Args),
    /// Remove snapshots by id or by a retention policy.
    Forget(cmd::forget::Args),
    /// Change the tags of snapshots (--add, --remove, --set).
    Tag(cmd::tag::Args),
    /// Delete data that no snapshot uses.
    Prune(cmd::prune::Args),
    /// Rebuild the index, or rewrite snapshots that reference missing data.
    Repair(cmd::repair::Args),
    /// Copy snapshots from another repository into this one.
    Copy(cmd::copy::Args),
    /// Write one file of a snapshot to stdout, or a directory as an archive.
    Dump(cmd::dump::Args),
    /// Write a snapshot, or a path of it, as a tar, tar.zst or zip archive.
    Export(cmd::export::Args),
    /// Export the files of snapshots as an SQLite catalog.
    Catalog(cmd::catalog::Args),
    /// Create a snapshot from a tar, tar.zst or zip archive.
    Import(cmd::import::Args),
    /// Manage the passwords (key files) of the repository.
    Key(cmd::key::Args),
    /// Remove stale locks.
    Unlock(cmd::unlock::Args),
    /// Serve a repository directory to `rest:` clients over HTTP(S).
    Serve(cmd::serve::Args),
    /// Run every profile's schedule (README "Scheduling").
    Daemon(cmd::daemon::Args),
    /// Show or install the schedules of profiles (`list`, `install`).
    Schedule(cmd::schedule::Args),
    /// Check that each profile's backups are recent and whole (exit codes 20-24).
    Health(cmd::health::Args),
    /// Check the config file of profiles, or show one profile resolved.
    Config(cmd::config::Args),
    /// A local web UI: browse, restore, back up (prints its URL with the access token).
    Ui(cmd::ui::Args),
    /// Serve snapshots read-only over WebDAV (a directory per snapshot, plus latest).
    Webdav(cmd::webdav::Args),
    /// Mount snapshots as a read-only FUSE filesystem.
    Mount(cmd::mount::Args),
}

/// Tunes glibc's malloc for snap's allocation pattern: few, large,
/// short-lived buffers (chunks of 0.5-8 MiB, packs of 16 MiB).
/// - One arena: with one per thread, each kept its own freed buffers.
/// - A fixed 4 MiB mmap threshold: glibc raises the threshold after a large
///   mmapped block is freed (argon2's 64 MiB at open), after which pack and
///   chunk buffers came from a heap that never shrank.
///
/// First backup of a 1.1 GB data set: peak RSS 314 MB (default) -> 229 MB
/// (one arena) -> 119 MB (both), system time 3.7 s -> 1.3 s; restore peak
/// RSS 129 MB -> 105 MB (docs/performance.md).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

fn main() {
    tune_malloc();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNAP_LOG").unwrap_or_else(|_| {
        // OpenDAL's own warnings are about its internals (a writer dropped
        // after a timeout); what they mean for the user arrives as snap's error.
        tracing_subscriber::EnvFilter::new(match cli.global.verbose {
            0 => "warn,opendal=error",
            1 => "info,opendal=warn",
            _ => "debug",
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(term::LogFormat)
        .init();
    global::install_interrupt_handler();

    let verbose = cli.global.verbose;
    let result = profile::selected(&cli.global).and_then(|profile| run(cli.global, profile, cli.command));
    if verbose > 0 {
        global::print_request_summary();
    }
    let code = match result {
        Ok(code) => code,
        Err(error) if term::is_stdout_closed(&error) => term::exit_stdout_closed(),
        Err(error) => {
            // Errors can quote names from a snapshot or the source tree.
            errln!("{} {}", term::label("error"), term::printable(&format!("{error:#}")));
            exit::code_for(&error)
        }
    };
    debug_rss::at_exit();
    std::process::exit(code);
}

/// Runs one command; with `--profile`, the profile fills the global options
/// the command line and environment left unset.
fn run(base: global::GlobalArgs, profile: Option<profile::Profile>, command: Command) -> anyhow::Result<i32> {
    let global = match &profile {
        Some(profile) => profile.global_args(&base),
        None => base,
    };
    let global = &global;
    if let Some(profile) = &profile {
        let repository = global.repo.as_deref();
        match command {
            Command::Create(mut args) => {
                args.apply_profile(profile);
                return hooks::around(profile, repository, "backup", || cmd::create::run(global, args));
            }
            Command::Forget(mut args) => {
                args.apply_profile(profile);
                return hooks::around(&profile.notify_only(), repository, "forget", || {
                    cmd::forget::run(global, args)
                });
            }
            Command::Prune(args) => {
                return hooks::around(&profile.notify_only(), repository, "prune", || {
                    cmd::prune::run(global, args)
                });
            }
            Command::Verify(args) => {
                return hooks::around(&profile.notify_only(), repository, "verify", || {
                    cmd::verify::run(global, args)
                });
            }
            command => return dispatch(global, command),
        }
    }
    dispatch(global, command)
}

fn dispatch(global: &global::GlobalArgs, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Init(args) => cmd::init::run(global, args),
        Command::Create(args) => cmd::create::run(global, args),
        Command::Restore(args) => cmd::restore::run(global, args),
        Command::Snapshots(args) => cmd::snapshots::run(global, args),
        Command::Ls(args) => cmd::ls::run(global, args),
        Command::Diff(args) => cmd::diff::run(global, args),
        Command::Find(args) => cmd::find::run(global, args),
        Command::Stats(args) => cmd::stats::run(global, args),
        Command::Verify(args) => cmd::verify::run(global, args),
        Command::Forget(args) => cmd::forget::run(global, args),
        Command::Tag(args) => cmd::tag::run(global, args),
        Command::Prune(args) => cmd::prune::run(global, args),
        Command::Repair(args) => cmd::repair::run(global, args),
        Command::Copy(args) => cmd::copy::run(global, args),
        Command::Dump(args) => cmd::dump::run(global, args),
        Command::Export(args) => cmd::export::run(global, args),
        Command::Catalog(args) => cmd::catalog::run(global, args),
        Command::Import(args) => cmd::import::run(global, args),
        Command::Key(args) => cmd::key::run(global, args),
        Command::Unlock(args) => cmd::unlock::run(global, args),
        Command::Serve(args) => cmd::serve::run(global, args),
        Command::Daemon(args) => cmd::daemon::run(global, args),
        Command::Schedule(args) => cmd::schedule::run(global, args),
        Command::Health(args) => cmd::health::run(global, args),
        Command::Config(args) => cmd::config::run(global, args),
        Command::Ui(args) => cmd::ui::run(global, args),
        Command::Webdav(args) => cmd::webdav::run(global, args),
        Command::Mount(args) => cmd::mount::run(global, args),
    }
}
