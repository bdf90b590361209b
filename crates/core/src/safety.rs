//! The safety snapshot a restore takes before it replaces or deletes
//! anything (`snap restore` and the UI's restore wizard): a backup of those
//! target paths, tagged [`SAFETY_TAG`], under the restore's own lock.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::archiver::{self, ArchiveOptions, ParentChoice, Source};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::lock::LockGuard;
use crate::repo::Repository;
use crate::restorer::SAFETY_TAG;

/// Backs up `paths` as a snapshot tagged [`SAFETY_TAG`]. Anything it could
/// not read fails it ([`Error::SafetySnapshot`]): an incomplete safety
/// snapshot could not undo the restore. An interruption or a lost lock is
/// returned as itself.
pub fn safety_snapshot(
    repo: &Repository,
    lock: &LockGuard,
    paths: &[PathBuf],
    threads: usize,
    stop: &AtomicBool,
) -> Result<SnapshotId> {
    let failed = |reason: String| Error::SafetySnapshot { reason };
    let options = ArchiveOptions {
        source: Source::Paths(paths.to_vec()),
        excludes: Vec::new(),
        exclude_files: Vec::new(),
        one_file_system: false,
        tags: vec![SAFETY_TAG.to_string()],
        host: crate::snapshot::hostname(),
        parent: ParentChoice::None,
        compression: None,
        threads,
        checkpoint_interval: None,
        // Everything about to be replaced is kept, whatever `.snapignore`
        // files in the target say.
        selection: archiver::Selection {
            skip_snapignore: true,
            ..archiver::Selection::default()
        },
        description: Some("files a restore replaced or deleted".into()),
        dry_run: false,
        list_changes: false,
    };
    let result = match archiver::archive(repo, options, &crate::progress::NoProgress, stop, lock) {
        Ok(result) => result,
        Err(e @ (Error::Interrupted | Error::LockLost { .. })) => return Err(e),
        Err(e) => return Err(failed(e.to_string())),
    };
    if let Some((path, message)) = result.warnings.first() {
        return Err(failed(format!(
            "{}: {message} ({} problem(s) in all; the incomplete snapshot {} can be forgotten)",
            path.display(),
            result.warnings.len(),
            result.id.short()
        )));
    }
    Ok(result.id)
}
