//! Exit codes, one table for every command (also in README.md).

use snap_core::Error;

/// Success.
pub const OK: i32 = 0;
/// The command failed (damaged repository, I/O error, ...).
pub const FAILED: i32 = 1;
/// Bad command line (clap uses this code too).
pub const USAGE: i32 = 2;
/// Done, but incomplete: a backup skipped unreadable files (the snapshot was
/// written), or a restore could not restore some files.
pub const INCOMPLETE: i32 = 3;
/// No repository at the given location.
pub const NO_REPOSITORY: i32 = 10;
/// The repository is locked by another process.
pub const LOCKED: i32 = 11;
/// Wrong password, none given for an encrypted repository, a password
/// source that failed (file, command), or a refused new password.
pub const WRONG_PASSWORD: i32 = 12;
/// Interrupted by Ctrl-C or SIGTERM; nothing half-written is visible.
pub const INTERRUPTED: i32 = 130;

// `snap health`: one code per kind of failure; with several, the lowest.
/// No snapshot of the profile in its repository.
pub const HEALTH_NO_SNAPSHOT: i32 = 20;
/// The last snapshot is older than `--max-age`.
pub const HEALTH_TOO_OLD: i32 = 21;
/// The last run failed, or skipped files (errors in the last snapshot).
pub const HEALTH_LAST_RUN: i32 = 22;
/// A stale lock is in the repository (`snap unlock` removes it).
pub const HEALTH_STALE_LOCK: i32 = 23;
/// The last scheduled verify failed.
pub const HEALTH_VERIFY: i32 = 24;

/// The exit code for an error, looking through `anyhow` context layers.
pub fn code_for(error: &anyhow::Error) -> i32 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return match e {
                Error::NotARepository { .. } => NO_REPOSITORY,
                Error::WrongPassword => WRONG_PASSWORD,
                Error::Interrupted | Error::LockLost { .. } => INTERRUPTED,
                Error::Locked { .. } => LOCKED,
                Error::InvalidArgument(_) | Error::SnapshotNotFound(_) | Error::AmbiguousSnapshot { .. } => USAGE,
                _ => FAILED,
            };
        }
        if let Some(e) = cause.downcast_ref::<snap_remote::LocationError>() {
            return match e {
                snap_remote::LocationError::Backend(_) => FAILED,
                _ => USAGE,
            };
        }
        if cause.downcast_ref::<crate::cmd::daemon::StateLocked>().is_some() {
            return LOCKED;
        }
        if cause.downcast_ref::<crate::profile::ConfigError>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<crate::password::NoPassword>().is_some()
            || cause.downcast_ref::<crate::password::PasswordError>().is_some()
        {
            return WRONG_PASSWORD;
        }
    }
    FAILED
}
