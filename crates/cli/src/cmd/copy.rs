//! `snap copy`: copy snapshots from another repository into this one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use snap_core::copy::{self, CopiedSnapshot, CopyOptions, CopyStats, Outcome};
use snap_core::repo::Repository;

use crate::global::{GlobalArgs, CANCEL};
use crate::password;
use crate::progress::Bar;

/// The source repository of `copy` and `init --from-repo`, named as `-r`,
/// `-o` and `--password-file` name the destination.
#[derive(clap::Args, Clone, Debug)]
pub struct FromRepoArgs {
    /// The source repository (any location `-r` accepts).
    #[arg(long = "from-repo", env = "SNAP_FROM_REPOSITORY", value_name = "LOCATION")]
    pub from_repo: Option<String>,
    /// Read the source repository's password from the first line of this file.
    #[arg(long = "from-password-file", env = "SNAP_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// A backend option of the source repository, `key=value` (repeatable).
    #[arg(long = "from-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub from_options: Vec<(String, String)>,
}

impl FromRepoArgs {
    /// Opens the source repository; its password comes from the `--from-`
    /// sources only.
    pub fn open(&self, global: &GlobalArgs) -> Result<Repository> {
        let location = self
            .from_repo
            .as_deref()
            .ok_or_else(|| snap_core::Error::InvalidArgument("give the source repository with --from-repo".into()))?;
        let location = snap_remote::Location::parse(location)?;
        let backend = crate::global::with_wrappers(snap_remote::open(&location, &self.from_options)?);
        let name = backend.location();
        let config = snap_core::repo::read_config(backend.as_ref())
            .with_context(|| format!("cannot open source repository {name}"))?;
        let password = match config.body.encryption {
            snap_core::crypto::Encryption::None => None,
            _ => Some(password::get_from(self.from_password_file.as_deref())?),
        };
        Repository::open(backend, password.as_ref(), &global.cache_root()?)
            .with_context(|| format!("cannot open source repository {name}"))
    }
}

/// `-o key=value`, for the source.
fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to copy: ids, unique prefixes or `latest` (default: every
    /// complete snapshot the filters match; checkpoints only when named).
    snapshots: Vec<String>,
    #[command(flatten)]
    from: FromRepoArgs,
    #[command(flatten)]
    select: super::SelectArgs,
    /// List what would be copied, and copy nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Compression of the copied data: off, auto, max or 1..22 (default: this repository's).
    #[arg(long)]
    compression: Option<snap_core::compress::Compression>,
}

/// `snap copy --json`: one line per source snapshot.
#[derive(Serialize)]
struct CopyJson<'a> {
    /// The source snapshot.
    source: String,
    /// Its copy in this repository (`null` on a dry run for one not copied yet).
    dest: Option<String>,
    /// `copied`, `already-present` or `would-copy`.
    outcome: Outcome,
    time: String,
    host: &'a str,
    paths: &'a [String],
    tags: &'a [String],
    #[serde(flatten)]
    stats: CopyStats,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    if args.from.from_repo.is_none() {
        anyhow::bail!(snap_core::Error::InvalidArgument(
            "give the source repository with --from-repo".into()
        ));
    }
    let dest = global.open()?;
    let src = args.from.open(global)?;
    if src.config().id == dest.config().id {
        anyhow::bail!(snap_core::Error::InvalidArgument(
            "the source and destination are the same repository".into()
        ));
    }
    let _src_lock = global.read_lock(&src, "copy (source)")?;
    let dest_lock = if args.dry_run {
        global.read_lock(&dest, "copy --dry-run")?
    } else {
        Some(global.lock(&dest, snap_core::lock::LockKind::Shared, "copy")?)
    };
    let options = CopyOptions {
        snapshots: args.snapshots,
        filter: args.select.filter()?,
        dry_run: args.dry_run,
        compression: args.compression,
    };
    let bar = Bar::new(global.quiet, global.json);
    let mut print_error = None;
    let result = copy::copy(
        &src,
        &dest,
        &options,
        dest_lock.as_ref().filter(|_| !args.dry_run),
        &bar,
        &CANCEL,
        &mut |done| {
            if print_error.is_none() {
                print_error = print(global, done).err();
            }
        },
    );
    bar.finish();
    let done = result.context("copy failed")?;
    if let Some(e) = print_error {
        return Err(e);
    }
    if !global.json && !global.quiet {
        let count = |o: Outcome| done.iter().filter(|d| d.outcome == o).count();
        let added: u64 = done.iter().map(|d| d.stats.bytes_added_stored).sum();
        if args.dry_run {
            outln!(
                "{} would be copied, {} already present",
                super::count(count(Outcome::WouldCopy), "snapshot", "snapshots"),
                count(Outcome::AlreadyPresent)
            )?;
        } else {
            outln!(
                "{} copied ({} stored), {} already present",
                super::count(count(Outcome::Copied), "snapshot", "snapshots"),
                super::human_bytes(added),
                count(Outcome::AlreadyPresent)
            )?;
        }
    }
    Ok(crate::exit::OK)
}

fn print(global: &GlobalArgs, done: &CopiedSnapshot) -> Result<()> {
    let s = &done.snapshot;
    if global.json {
        return super::print_json(&CopyJson {
            source: done.source.to_hex(),
            dest: done.dest.map(|d| d.to_hex()),
            outcome: done.outcome,
            time: s.time.to_string(),
            host: &s.host,
            paths: &s.paths,
            tags: &s.tags,
            stats: done.stats,
        });
    }
    if global.quiet {
        return Ok(());
    }
    let dest = done.dest.map(|d| d.short()).unwrap_or_default();
    match done.outcome {
        Outcome::Copied => outln!(
            "copied {} -> {} ({}, {} new in {})",
            done.source.short(),
            dest,
            super::local_time(&s.time),
            super::human_bytes(done.stats.bytes_added_stored),
            super::count(done.stats.blobs_added, "blob", "blobs")
        ),
        Outcome::AlreadyPresent => outln!("skipped {} (already in destination as {dest})", done.source.short()),
        Outcome::WouldCopy => outln!("would copy {} ({})", done.source.short(), super::local_time(&s.time)),
    }?;
    Ok(())
}
