//! `snap create`: back up paths or standard input.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use snap_core::archiver::{self, ArchiveOptions, ParentChoice, Source};
use snap_core::compress::Compression;

use crate::exit;
use crate::global::{GlobalArgs, CANCEL};
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Back up standard input instead of paths (e.g. a database dump).
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// File name for the data read with --stdin (default: stdin).
    // Checked in `run`: clap's `requires` counts the `--stdin` flag's default
    // (false) as present, so the name was ignored silently without it.
    #[arg(long, value_name = "NAME")]
    stdin_filename: Option<String>,
    /// Back up the standard output of the command given after `--` (run
    /// without a shell), e.g. `-- pg_dump mydb`, stored as NAME.dump after
    /// the program (or --stdin-filename); if the command fails, no snapshot
    /// is written.
    #[arg(long, conflicts_with = "stdin")]
    stdin_from_command: bool,
    /// Leave out paths matching this gitignore-style pattern (repeatable).
    #[arg(short, long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Do not cross filesystem boundaries.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Compare with this snapshot instead of the latest of the same host and
    /// paths (`latest` is that default).
    #[arg(long, conflicts_with = "force")]
    parent: Option<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    force: bool,
    /// Compression for this backup: off, auto, max or 1..22 (default: the repository's).
    #[arg(long)]
    compression: Option<Compression>,
    /// Worker threads (default: cores + 4, to overlap the disk's waits).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Save the files finished so far as a `checkpoint` snapshot this often,
    /// so an interrupted backup resumes without reading them again (`0s`: never).
    #[arg(long, value_name = "DURATION")]
    checkpoint_interval: Option<humantime::Duration>,
    // Selection, description and dry run: see `SelectionArgs` below.
    #[command(flatten)]
    selection: SelectionArgs,
}

/// `--checkpoint-interval` when neither the flag nor the profile sets it.
const DEFAULT_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl Args {
    /// Fills what the command line left unset from `profile` (README
    /// "Profiles"): a list given on the command line replaces the profile's
    /// (the paths and the `--files-from*` lists count as one list: what to
    /// back up); a switch the profile turns on cannot be turned off here.
    pub fn apply_profile(&mut self, profile: &crate::profile::Profile) {
        fn list<T: Clone>(cli: &mut Vec<T>, profile: &[T]) {
            if cli.is_empty() {
                *cli = profile.to_vec();
            }
        }
        let sel = &mut self.selection;
        if self.paths.is_empty() && !sel.has_lists() && !self.stdin && !self.stdin_from_command {
            self.paths = profile.paths.clone();
            sel.files_from = profile.files_from.clone();
            sel.files_from_verbatim = profile.files_from_verbatim.clone();
            sel.files_from_raw = profile.files_from_raw.clone();
        }
        list(&mut self.excludes, &profile.exclude);
        list(&mut self.exclude_files, &profile.exclude_file);
        list(&mut self.tags, &profile.tags);
        list(&mut sel.iexcludes, &profile.iexclude);
        list(&mut sel.iexclude_files, &profile.iexclude_file);
        list(&mut sel.exclude_if_present, &profile.exclude_if_present);
        sel.exclude_caches |= profile.exclude_caches.unwrap_or(false);
        sel.no_snapignore |= profile.no_snapignore.unwrap_or(false);
        self.one_file_system |= profile.one_file_system.unwrap_or(false);
        if sel.exclude_larger_than.is_none() {
            sel.exclude_larger_than = profile.exclude_larger_than;
        }
        if sel.description.is_none() {
            sel.description = profile.description.clone();
        }
        if self.host.is_none() {
            self.host = profile.host.clone();
        }
        if self.compression.is_none() {
            self.compression = profile.compression;
        }
        if self.threads == 0 {
            self.threads = profile.threads.unwrap_or(0);
        }
        if self.checkpoint_interval.is_none() {
            self.checkpoint_interval = profile.checkpoint_interval.map(Into::into);
        }
    }
}

/// `snap create --json`: the engine's result (snap_core::archiver::ArchiveResult)
/// and what the command cost in requests.
#[derive(serde::Serialize)]
struct CreateJson<'a> {
    #[serde(flatten)]
    result: &'a snap_core::archiver::ArchiveResult,
    /// What the repository holds after the backup (absent on a dry run or
    /// when the index cannot say): the daemon's size metric comes from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<snap_core::stats::RepositorySize>,
    requests: snap_core::backend::counting::RequestStats,
}

pub fn run(global: &GlobalArgs, mut args: Args) -> Result<i32> {
    // With --stdin-from-command the positional arguments are the command.
    if args.stdin_from_command && args.paths.is_empty() {
        bail!(snap_core::Error::InvalidArgument(
            "--stdin-from-command needs the command after `--`, e.g. snap create --stdin-from-command -- pg_dump mydb"
                .into()
        ));
    }
    if args.stdin_from_command && args.selection.has_lists() {
        bail!(snap_core::Error::InvalidArgument(
            "--files-from and its kin name paths to back up; --stdin-from-command backs up a command's output instead"
                .into()
        ));
    }
    args.paths.extend(args.selection.listed_paths(args.stdin)?);
    if args.paths.is_empty() && !args.stdin {
        bail!(snap_core::Error::InvalidArgument(
            "nothing to back up: give paths, or --stdin".into()
        ));
    }
    if args.stdin_filename.is_some() && !args.stdin && !args.stdin_from_command {
        bail!(snap_core::Error::InvalidArgument(
            "--stdin-filename names the file read with --stdin or --stdin-from-command; it needs one of them".into()
        ));
    }
    if let Some(name) = &args.stdin_filename {
        // Checked again by the archiver; here so a bad name costs no repository open.
        if name.len() > archiver::MAX_NAME_LEN {
            bail!(snap_core::Error::InvalidArgument(format!(
                "--stdin-filename is {} bytes long; a file name may have at most {}",
                name.len(),
                archiver::MAX_NAME_LEN
            )));
        }
    }
    let selection = args.selection.resolve()?;
    // A dry run never creates the repository it would have written to.
    let repo = if args.selection.dry_run {
        global.open()?
    } else {
        global.open_or_init_default()?
    };
    let lock = global.lock(&repo, snap_core::lock::LockKind::Shared, "create")?;
    let parent = if args.force {
        ParentChoice::None
    } else if let Some(spec) = args.parent.as_deref().filter(|&p| p != "latest") {
        let (id, _) = snap_core::snapshot::find(&repo, spec)?;
        ParentChoice::Snapshot(id)
    } else {
        ParentChoice::Latest
    };
    let from_command = args.stdin_from_command;
    let source = if args.stdin {
        Source::Stdin {
            filename: args.stdin_filename.unwrap_or_else(|| "stdin".into()),
        }
    } else if from_command {
        // Started only now that the repository is open and locked: a dump
        // is not taken for a backup that cannot be written.
        let argv: Vec<std::ffi::OsString> = args.paths.into_iter().map(PathBuf::into_os_string).collect();
        let stream = crate::stdin_command::CommandStream::spawn(&argv)?;
        Source::Reader {
            filename: args
                .stdin_filename
                .unwrap_or_else(|| crate::stdin_command::default_filename(&argv[0])),
            label: stream.label().into(),
            reader: archiver::StreamReader(Box::new(stream)),
        }
    } else {
        Source::Paths(args.paths)
    };
    let options = ArchiveOptions {
        source,
        excludes: args.excludes,
        exclude_files: args.exclude_files,
        one_file_system: args.one_file_system,
        tags: args.tags,
        host: args.host.unwrap_or_else(snap_core::snapshot::hostname),
        parent,
        compression: args.compression,
        threads: args.threads,
        checkpoint_interval: Some(args.checkpoint_interval.map_or(DEFAULT_CHECKPOINT_INTERVAL, Into::into))
            .filter(|d: &std::time::Duration| !d.is_zero()),
        selection,
        description: args.selection.description.clone(),
        dry_run: args.selection.dry_run,
        list_changes: global.verbose > 0,
    };
    let bar = Bar::new(global.quiet, global.json);
    let result = archiver::archive(&repo, options, &bar, &CANCEL, &lock);
    bar.finish();
    // The interrupt terminated the command, so its failure is the interrupt's.
    let result = match result {
        Err(e) if from_command && CANCEL.load(std::sync::atomic::Ordering::SeqCst) => {
            tracing::info!("{e}");
            return Err(anyhow::Error::new(snap_core::Error::Interrupted).context("backup failed"));
        }
        result => result,
    };
    let result = result.context("backup failed")?;
    let s = &result.snapshot;
    // Read from the local index (no storage request); a failure here must
    // not fail a backup that is already written.
    let repository = (!result.dry_run)
        .then(|| snap_core::stats::repository_size(&repo).ok())
        .flatten();
    if !result.dry_run {
        let summary = serde_json::to_value(CreateJson {
            result: &result,
            repository,
            requests: crate::global::REQUESTS.stats(),
        })?;
        crate::hooks::record_summary(result.id.to_string(), summary);
    }
    if global.json {
        // The documented form is the engine's (snap_core::archiver::ArchiveResult).
        super::print_json(&CreateJson {
            result: &result,
            repository,
            requests: crate::global::REQUESTS.stats(),
        })?;
    } else if !global.quiet {
        print_changes(&result)?;
        print_summary(&result, s)?;
    }
    if s.summary.errors > 0 {
        errln!(
            "{} {} could not be read and {} not in snapshot {}",
            crate::term::label("warning"),
            super::count(s.summary.errors, "file or directory", "files or directories"),
            if s.summary.errors == 1 { "is" } else { "are" },
            result.id.short()
        );
        return Ok(exit::INCOMPLETE);
    }
    Ok(exit::OK)
}

fn print_summary(result: &archiver::ArchiveResult, s: &snap_core::snapshot::Snapshot) -> Result<()> {
    let m = &s.summary;
    if result.dry_run {
        outln!("dry run: nothing was written to the repository")?;
    } else {
        outln!("snapshot {} saved", result.id.short())?;
    }
    outln!(
        "  files:  {} new, {} changed, {} unmodified; {}",
        m.files_new,
        m.files_changed,
        m.files_unmodified,
        super::count(m.dirs, "directory", "directories")
    )?;
    outln!(
        "  read:   {} of {} in {:.1} s",
        super::human_bytes(m.bytes_read),
        super::human_bytes(m.bytes_total),
        m.duration_seconds
    )?;
    outln!(
        "  {}  {} stored ({} before compression) in {}",
        if result.dry_run { "would add:" } else { "added: " },
        super::human_bytes(m.bytes_added_stored),
        super::human_bytes(m.bytes_added_raw),
        super::count(m.blobs_added, "new blob", "new blobs")
    )?;
    if m.files_too_large > 0 {
        outln!(
            "  left out: {} larger than --exclude-larger-than",
            super::count(m.files_too_large, "file", "files")
        )?;
    }
    Ok(())
}

// ---- Selection (`--iexclude`, markers, sizes, `--files-from`), description, dry run.

/// What to back up beside the positional paths and `--exclude`; kept apart
/// from `Args` so each group reads on its own.
#[derive(clap::Args)]
struct SelectionArgs {
    /// Like --exclude, ignoring case (repeatable).
    #[arg(long = "iexclude", value_name = "PATTERN")]
    iexcludes: Vec<String>,
    /// Like --exclude-file, ignoring case (repeatable).
    #[arg(long = "iexclude-file", value_name = "FILE")]
    iexclude_files: Vec<PathBuf>,
    /// Leave out every directory holding a file of this name; `NAME:HEADER`
    /// only when the file starts with HEADER (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    exclude_if_present: Vec<String>,
    /// Leave out directories holding a valid CACHEDIR.TAG (bford.info/cachedir).
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out files larger than SIZE (bytes, or with K, M, G, T: powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    exclude_larger_than: Option<u64>,
    /// Do not read `.snapignore` files (gitignore syntax, applying to their directory and below).
    #[arg(long)]
    no_snapignore: bool,
    /// Back up the paths listed in FILE, one per line (`-`: standard input);
    /// blank lines and lines starting with `#` are skipped, spaces around a
    /// path trimmed (repeatable; adds to the paths given).
    #[arg(long = "files-from", value_name = "FILE", conflicts_with = "stdin")]
    files_from: Vec<PathBuf>,
    /// Like --files-from, but every line is a path exactly as written (only
    /// empty lines are skipped).
    #[arg(long = "files-from-verbatim", value_name = "FILE", conflicts_with = "stdin")]
    files_from_verbatim: Vec<PathBuf>,
    /// Like --files-from-verbatim, with paths separated by NUL bytes (`find -print0`).
    #[arg(long = "files-from-raw", value_name = "FILE", conflicts_with = "stdin")]
    files_from_raw: Vec<PathBuf>,
    /// A description stored in the snapshot (shown by `snapshots`).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Read and chunk as a backup does, but write nothing to the repository;
    /// report what would be stored (with -v: each new and changed file).
    #[arg(short = 'n', long)]
    dry_run: bool,
}

/// How a `--files-from*` file separates and cleans its paths.
#[derive(Clone, Copy)]
enum ListForm {
    Lines,
    Verbatim,
    Raw,
}

impl SelectionArgs {
    /// The paths of the `--files-from*` files, in the order given.
    /// Whether any `--files-from*` list was given.
    fn has_lists(&self) -> bool {
        !(self.files_from.is_empty() && self.files_from_verbatim.is_empty() && self.files_from_raw.is_empty())
    }

    fn listed_paths(&self, stdin: bool) -> Result<Vec<PathBuf>> {
        let lists = self
            .files_from
            .iter()
            .map(|f| (f, ListForm::Lines, "--files-from"))
            .chain(
                self.files_from_verbatim
                    .iter()
                    .map(|f| (f, ListForm::Verbatim, "--files-from-verbatim")),
            )
            .chain(
                self.files_from_raw
                    .iter()
                    .map(|f| (f, ListForm::Raw, "--files-from-raw")),
            );
        let mut paths = Vec::new();
        let mut stdin_used = stdin;
        for (file, form, flag) in lists {
            let bytes = if file.as_os_str() == "-" {
                if stdin_used {
                    bail!(snap_core::Error::InvalidArgument(format!(
                        "{flag} -: standard input is read once; only one list can come from it"
                    )));
                }
                stdin_used = true;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                    .context("reading the list of paths from standard input")?;
                bytes
            } else {
                std::fs::read(file).map_err(|e| {
                    snap_core::Error::InvalidArgument(format!("{flag} {}: cannot read: {e}", file.display()))
                })?
            };
            paths.extend(parse_list(&bytes, form));
        }
        let listed =
            !self.files_from.is_empty() || !self.files_from_verbatim.is_empty() || !self.files_from_raw.is_empty();
        if listed && paths.is_empty() {
            bail!(snap_core::Error::InvalidArgument(
                "the --files-from lists name no path".into()
            ));
        }
        Ok(paths)
    }

    fn resolve(&self) -> Result<archiver::Selection> {
        let mut markers = self
            .exclude_if_present
            .iter()
            .map(|spec| archiver::Marker::parse(spec))
            .collect::<Result<Vec<_>, _>>()?;
        if self.exclude_caches {
            markers.push(archiver::Marker::cachedir_tag());
        }
        Ok(archiver::Selection {
            iexcludes: self.iexcludes.clone(),
            iexclude_files: self.iexclude_files.clone(),
            markers,
            max_file_size: self.exclude_larger_than,
            skip_snapignore: self.no_snapignore,
        })
    }
}

/// The paths in a `--files-from*` list's bytes.
fn parse_list(bytes: &[u8], form: ListForm) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let path = |b: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(b));
    match form {
        ListForm::Raw => bytes.split(|&b| b == 0).filter(|p| !p.is_empty()).map(path).collect(),
        ListForm::Verbatim => bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(path)
            .collect(),
        ListForm::Lines => bytes
            .split(|&b| b == b'\n')
            .map(|line| line.trim_ascii())
            .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
            .map(path)
            .collect(),
    }
}

/// `10M`, `1G`, `512K`, `100`: bytes, with binary multiples (as restic).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 500K, 10M, 1G)"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (use K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// `-v`: each new (`+`) and modified (`M`) file, on stdout.
fn print_changes(result: &archiver::ArchiveResult) -> Result<()> {
    for (path, change) in result.changes.iter().flatten() {
        let mark = match change {
            archiver::Change::New => "+",
            archiver::Change::Modified => "M",
        };
        outln!("{mark} {}", crate::term::printable(&path.to_string_lossy()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn lists_of_paths_are_cleaned_as_their_form_says() {
        let text = b"# comment\n  /a b  \n\n/c\n#not\n";
        let lines: Vec<_> = parse_list(text, ListForm::Lines);
        assert_eq!(lines, vec![PathBuf::from("/a b"), PathBuf::from("/c")]);
        let verbatim: Vec<_> = parse_list(text, ListForm::Verbatim);
        assert_eq!(
            verbatim,
            ["# comment", "  /a b  ", "/c", "#not"].map(PathBuf::from).to_vec()
        );
        let raw = parse_list(b"/x\ny\0/z\0\0", ListForm::Raw);
        assert_eq!(raw, vec![PathBuf::from("/x\ny"), PathBuf::from("/z")]);
    }
}
