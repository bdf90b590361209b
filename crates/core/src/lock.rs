//! Repository locks: objects under `locks/` that say who is working on the
//! repository. `create`, `restore` and `verify` take shared locks; `forget`,
//! `prune` and `repair` take an exclusive one, so prune never deletes data a
//! running backup is about to reference.
//!
//! A lock is sealed JSON naming host, user, pid and time. The holder rewrites
//! it every [`REFRESH`]. Whether another process's lock is stale (ignored,
//! and removed by `snap unlock`) is judged so that a live holder is never
//! taken for a dead one:
//! - on this host, by its pid alone: a lock whose process is alive is never
//!   stale, however long ago it was refreshed (a stalled `--stdin` producer,
//!   a stopped process, a clock that jumped);
//! - from another host, by age: not refreshed for [`STALE_AFTER`]. The age is
//!   measured with the storage's clock (the lock object's modification time
//!   against that of the lock the judging process just wrote, or the newest
//!   lock it sees), not with the wall clocks of the two hosts, which may
//!   differ; only storage that keeps no times falls back to the wall clock.
//!
//! The holder keeps its side of that bargain: a lock it could not refresh
//! for [`LOST_AFTER`] (well before anyone may take it as stale), or whose
//! object someone removed, is lost. A lost lock sets the operation's cancel
//! flag ([`LockGuard::stop_on_loss`]), so it stops as if interrupted, and
//! [`LockGuard::check`] fails, so a backup never writes a snapshot under it.
//!
//! Taking a lock writes ours first and then looks for conflicting ones, so
//! two processes racing for an exclusive lock both see each other and back off.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ObjectKind};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::{IndexId, KeyId};
use crate::repo::Repository;

/// How often a held lock is rewritten.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock from another host not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A holder that could not refresh its lock for this long gives it up and
/// stops: two refresh intervals before others may take it as stale.
pub const LOST_AFTER: Duration = Duration::from_secs(20 * 60);
/// Pause between attempts to refresh after a failed one.
const REFRESH_RETRY: Duration = Duration::from_secs(30);
/// Pause between attempts while waiting for a conflicting lock.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The holder's clock for refreshing. Debug builds read
/// `SNAP_LOCK_REFRESH_SECS` (tests): refresh every N seconds, retry a
/// failed refresh every N/4, lose the lock after 4N without a refresh.
#[derive(Clone, Copy, Debug)]
struct Timing {
    refresh: Duration,
    retry: Duration,
    lost_after: Duration,
}

impl Timing {
    fn from_env() -> Self {
        #[cfg(debug_assertions)]
        if let Some(secs) = std::env::var("SNAP_LOCK_REFRESH_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0 && *v < 3600.0)
        {
            let refresh = Duration::from_secs_f64(secs);
            return Timing {
                refresh,
                retry: refresh / 4,
                lost_after: refresh * 4,
            };
        }
        Timing {
            refresh: REFRESH,
            retry: REFRESH_RETRY,
            lost_after: LOST_AFTER,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// The content of a lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    pub time: jiff::Timestamp,
    pub host: String,
    pub username: String,
    pub pid: u32,
    /// The command holding it, for messages ("prune").
    pub operation: String,
}

/// How one process judges the locks it finds (see the module comment).
#[derive(Clone, Debug)]
pub struct Judge {
    /// This host's name: its locks are judged by pid.
    pub host: String,
    /// This process's wall clock, for storage that keeps no times.
    pub wall_now: jiff::Timestamp,
    /// The storage's clock: the modification time of an object just written.
    pub storage_now: Option<SystemTime>,
}

impl Judge {
    /// Whether a lock (last written at `modified` by the storage's clock, if
    /// known) belongs to no live process.
    pub fn is_stale(&self, info: &LockInfo, modified: Option<SystemTime>) -> bool {
        if info.host == self.host {
            // The one thing known for certain: is the process alive?
            return !process_exists(info.pid);
        }
        match (self.storage_now, modified) {
            // One clock for both ends. A lock "from the future" is fresh.
            (Some(now), Some(modified)) => now.duration_since(modified).is_ok_and(|age| age > STALE_AFTER),
            _ => {
                let age = self.wall_now.duration_since(info.time);
                age > jiff::SignedDuration::try_from(STALE_AFTER).expect("small duration")
            }
        }
    }

    /// What the user can do about a conflicting lock, true to how it is judged.
    fn advice(&self, info: &LockInfo) -> String {
        if info.host == self.host {
            format!(
                "pid {} is running on this host: wait for it to finish (or use --retry-lock); \
                 only if pid {} is not snap, `snap unlock --remove-all` removes the lock",
                info.pid, info.pid
            )
        } else {
            format!(
                "wait for it to finish (or use --retry-lock); if that process is gone, its lock is \
                 ignored {} minutes after its last refresh, and `snap unlock --remove-all` removes it \
                 at once (only when no snap is running on {})",
                STALE_AFTER.as_secs() / 60,
                info.host
            )
        }
    }
}

impl LockInfo {
    pub fn describe(&self) -> String {
        format!(
            "{} lock held by {}@{} (pid {}, {}) since {}",
            match self.kind {
                LockKind::Shared => "a shared",
                LockKind::Exclusive => "an exclusive",
            },
            self.username,
            self.host,
            self.pid,
            self.operation,
            self.time
        )
    }

    fn encode(&self, crypto: &Crypto) -> Vec<u8> {
        crypto.seal(&serde_json::to_vec(self).expect("lock encodes"))
    }

    pub fn decode(crypto: &Crypto, name: &str, bytes: &[u8]) -> Result<Self> {
        let json = crypto
            .open(bytes)
            .map_err(|e| Error::corrupt(format!("lock {name}"), e))?;
        Self::from_json(&json).map_err(|e| Error::corrupt(format!("lock {name}"), e))
    }

    /// Parses the opened JSON of a lock object.
    pub fn from_json(json: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    fn ours(kind: LockKind, operation: &str) -> Self {
        LockInfo {
            kind,
            time: jiff::Timestamp::now(),
            host: crate::snapshot::hostname(),
            username: crate::snapshot::username(),
            pid: std::process::id(),
            operation: operation.to_string(),
        }
    }
}

fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // EPERM: it exists but belongs to someone else.
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// A lock object's name: random, so refreshes and other holders never collide.
fn new_name() -> String {
    let mut bytes = [0u8; 32];
    crate::crypto::fill_random(&mut bytes);
    KeyId(bytes).to_hex()
}

/// Every lock in the repository with its decoded content (or why it is unreadable).
pub fn list(repo: &Repository) -> Result<Vec<(String, Result<LockInfo>)>> {
    Ok(list_with_times(repo)?
        .into_iter()
        .map(|(name, info, _)| (name, info))
        .collect())
}

/// A listed lock: name, content, and when the storage last wrote it.
type Listed = (String, Result<LockInfo>, Option<SystemTime>);

/// Like [`list`], with each lock's modification time by the storage's clock.
fn list_with_times(repo: &Repository) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for info in repo.backend().list(ObjectKind::Lock)? {
        let read = repo.backend().read(ObjectKind::Lock, &info.name).and_then(|bytes| {
            let modified = repo.backend().modified(ObjectKind::Lock, &info.name)?;
            Ok((bytes, modified))
        });
        match read {
            Ok((bytes, modified)) => {
                let decoded = LockInfo::decode(repo.crypto(), &info.name, &bytes);
                out.push((info.name, decoded, modified));
            }
            // Released between listing and reading.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The judge for this process, with the storage's clock read from `written`
/// (an object this process just wrote) and the newest of the `listed` locks:
/// the storage's "now" is at least as late as either.
fn judge(repo: &Repository, written: Option<&str>, listed: &[Listed]) -> Judge {
    let ours = written.and_then(|name| repo.backend().modified(ObjectKind::Lock, name).ok().flatten());
    let newest = listed.iter().filter_map(|(_, _, m)| *m).max();
    Judge {
        host: crate::snapshot::hostname(),
        wall_now: jiff::Timestamp::now(),
        storage_now: ours.max(newest).filter(|_| ours.is_some()),
    }
}

struct State {
    stop: bool,
    /// Why the lock was lost, once it is.
    lost: Option<String>,
    /// The last successful write of the lock, by the wall clock (which, unlike
    /// `Instant`, goes on while the computer sleeps).
    last_refresh: SystemTime,
    /// Why the refreshes since `last_refresh` failed, if they did.
    failing: Option<String>,
    /// Set when the lock is lost (the operation's cancel flag).
    cancel: Option<&'static AtomicBool>,
}

struct Shared {
    backend: Arc<dyn Backend>,
    crypto: Crypto,
    timing: Timing,
    info: Mutex<(String, LockInfo)>,
    state: Mutex<State>,
    wake: Condvar,
    /// The index files when the lock was taken: none of them may disappear
    /// while a shared lock holds (only exclusive holders delete them).
    index_at_start: HashSet<IndexId>,
}

/// A held lock. Refreshed in the background; released on drop.
pub struct LockGuard {
    shared: Arc<Shared>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.shared.info.lock().expect("lock state");
        f.debug_struct("LockGuard")
            .field("name", &info.0)
            .field("kind", &info.1.kind)
            .finish()
    }
}

/// [`Repository::lock`]: takes the lock, ties its loss to `cancel`, and
/// syncs the index cache under it. The cache was synced when the repository
/// was opened, before the lock: a prune that finished in between may have
/// deleted packs the cache still lists, and a backup trusting it would skip
/// storing those chunks. Syncing again under the lock closes that window
/// (one listing when nothing changed). The sync is lazy: the first index
/// lookup after the lock makes it, so an operation that never looks up a
/// blob (forget) pays nothing.
pub(crate) fn lock(
    repo: &Repository,
    kind: LockKind,
    operation: &str,
    wait: Duration,
    cancel: &'static AtomicBool,
) -> Result<LockGuard> {
    let guard = acquire(repo, kind, operation, wait)?;
    guard.stop_on_loss(cancel);
    repo.invalidate_index();
    Ok(guard)
}

/// [`Repository::read_lock`]: [`lock`] shared, or `None` when the storage
/// refuses the write as read-only. Any other storage error still fails.
pub(crate) fn read_lock(
    repo: &Repository,
    operation: &str,
    wait: Duration,
    cancel: &'static AtomicBool,
) -> Result<Option<LockGuard>> {
    match lock(repo, LockKind::Shared, operation, wait, cancel) {
        Ok(guard) => Ok(Some(guard)),
        Err(Error::Backend(crate::backend::BackendError::Io { error, op, what }))
            if matches!(
                error.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            tracing::warn!("the repository is read-only ({op} {what}: {error}); going on without a lock");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Takes a lock, waiting up to `wait` for conflicting holders to finish.
pub(crate) fn acquire(repo: &Repository, kind: LockKind, operation: &str, wait: Duration) -> Result<LockGuard> {
    acquire_with(repo, kind, operation, wait, Timing::from_env())
}

fn acquire_with(
    repo: &Repository,
    kind: LockKind,
    operation: &str,
    wait: Duration,
    timing: Timing,
) -> Result<LockGuard> {
    // Every operation that deletes takes the exclusive lock: on storage that
    // refuses deletes it would fail half-way, after writing (prune's new
    // index files), so it stops here, before anything is written.
    if kind == LockKind::Exclusive && repo.backend().append_only() {
        return Err(Error::Backend(crate::backend::BackendError::Remote {
            op: "change",
            what: repo.backend().location(),
            reason: format!(
                "the server is append-only and refuses deletes; run `snap {operation}` where the repository is a local directory"
            ),
        }));
    }
    let started = Instant::now();
    loop {
        let info = LockInfo::ours(kind, operation);
        let name = new_name();
        repo.backend()
            .write(ObjectKind::Lock, &name, &info.encode(repo.crypto()))?;
        let conflict = find_conflict(repo, &name, kind).and_then(|conflict| match conflict {
            None => Ok(Ok(crate::index::list_ids(repo.backend())?)),
            Some(holder) => Ok(Err(holder)),
        });
        match conflict {
            Ok(Ok(index)) => {
                let shared = Arc::new(Shared {
                    backend: repo.storage_arc(),
                    crypto: repo.crypto().clone(),
                    timing,
                    info: Mutex::new((name, info)),
                    state: Mutex::new(State {
                        stop: false,
                        lost: None,
                        last_refresh: SystemTime::now(),
                        failing: None,
                        cancel: None,
                    }),
                    wake: Condvar::new(),
                    index_at_start: index.into_iter().collect(),
                });
                let for_thread = shared.clone();
                let refresher = std::thread::Builder::new()
                    .name("snap-lock-refresh".into())
                    .spawn(move || refresh_loop(&for_thread))
                    .expect("spawning a thread");
                return Ok(LockGuard {
                    shared,
                    refresher: Some(refresher),
                });
            }
            Ok(Err((holder, advice))) => {
                let _ = repo.backend().delete(ObjectKind::Lock, &name);
                if started.elapsed() >= wait {
                    return Err(Error::Locked { holder, advice });
                }
                // Jitter, so two processes backing off from each other do not retry in step.
                let mut jitter = [0u8; 1];
                crate::crypto::fill_random(&mut jitter);
                std::thread::sleep(RETRY_PAUSE + Duration::from_millis(u64::from(jitter[0]) * 2));
            }
            Err(e) => {
                let _ = repo.backend().delete(ObjectKind::Lock, &name);
                return Err(e);
            }
        }
    }
}

/// The description of a lock that conflicts with ours, and what to do about it.
fn find_conflict(repo: &Repository, ours: &str, kind: LockKind) -> Result<Option<(String, String)>> {
    let listed = list_with_times(repo)?;
    let judge = judge(repo, Some(ours), &listed);
    for (name, info, modified) in listed {
        if name == ours {
            continue;
        }
        match info {
            Ok(info) if judge.is_stale(&info, modified) => {}
            Ok(info) if kind == LockKind::Shared && info.kind == LockKind::Shared => {}
            Ok(info) => return Ok(Some((info.describe(), judge.advice(&info)))),
            // An unreadable lock might be anyone's: respect it.
            Err(e) => {
                return Ok(Some((
                    format!("an unreadable lock ({e})"),
                    "if no other snap is running, `snap unlock --remove-all` removes it".into(),
                )))
            }
        }
    }
    Ok(None)
}

/// Why a refresh did not keep the lock.
enum RefreshError {
    /// The write failed; the old lock is still there.
    Failed(crate::backend::BackendError),
    /// Our previous lock object was gone: someone removed it.
    Removed,
}

impl Shared {
    /// Writes a fresh lock, then removes the old one, so the repository is
    /// never seen unlocked while we hold it.
    fn refresh(&self) -> std::result::Result<(), RefreshError> {
        let mut current = self.info.lock().expect("lock state");
        let mut info = current.1.clone();
        info.time = jiff::Timestamp::now();
        let name = new_name();
        self.backend
            .write(ObjectKind::Lock, &name, &info.encode(&self.crypto))
            .map_err(RefreshError::Failed)?;
        let old = std::mem::replace(&mut *current, (name, info)).0;
        match self.backend.delete(ObjectKind::Lock, &old) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Err(RefreshError::Removed),
            // It goes stale by itself; ours is written.
            Err(e) => {
                tracing::warn!("cannot remove the old repository lock {old}: {e}");
                Ok(())
            }
        }
    }

    /// Marks the lock lost and stops the operation (through its cancel flag).
    fn lose(&self, state: &mut State, reason: String) {
        if state.lost.is_none() {
            tracing::error!("the repository lock was lost ({reason}): stopping");
            state.lost = Some(reason);
        }
        if let Some(cancel) = state.cancel {
            cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Loses the lock if it went unrefreshed so long that others may soon take it as stale.
    fn check_age(&self, state: &mut State) {
        let since = SystemTime::now().duration_since(state.last_refresh).unwrap_or_default();
        if since >= self.timing.lost_after {
            let reason = match &state.failing {
                Some(e) => format!("cannot refresh it, for {}s now: {e}", since.as_secs()),
                None => format!(
                    "not refreshed for {}s (was the process stopped or the computer asleep?)",
                    since.as_secs()
                ),
            };
            self.lose(state, reason);
        }
    }
}

const REMOVED: &str =
    "its lock object was removed by another process (`snap unlock --remove-all`, or one that took it as stale)";

fn refresh_loop(shared: &Shared) {
    let mut state = shared.state.lock().expect("lock state");
    let mut pause = shared.timing.refresh;
    loop {
        // Checked before every wait: a stop requested before this thread
        // first waited would otherwise go unnoticed until the timeout.
        if state.stop || state.lost.is_some() {
            return;
        }
        let (guard, timeout) = shared.wake.wait_timeout(state, pause).expect("lock state");
        state = guard;
        if state.stop {
            return;
        }
        if !timeout.timed_out() {
            continue;
        }
        // After a sleep or a stop, first see whether others may already
        // have taken the lock as stale: a fresh write would not undo that.
        shared.check_age(&mut state);
        if state.lost.is_some() {
            return;
        }
        drop(state);
        let refreshed = shared.refresh();
        state = shared.state.lock().expect("lock state");
        match refreshed {
            Ok(()) => {
                state.last_refresh = SystemTime::now();
                state.failing = None;
                pause = shared.timing.refresh;
            }
            Err(RefreshError::Removed) => shared.lose(&mut state, REMOVED.into()),
            Err(RefreshError::Failed(e)) => {
                tracing::warn!("cannot refresh the repository lock (trying again): {e}");
                pause = shared.timing.retry;
                state.failing = Some(e.to_string());
                shared.check_age(&mut state);
            }
        }
    }
}

impl LockGuard {
    /// Shared or exclusive.
    pub fn kind(&self) -> LockKind {
        self.shared.info.lock().expect("lock state").1.kind
    }

    /// The proof a writing operation asks for: this guard is a lock on
    /// `repo`'s storage, of `kind` or stronger.
    pub(crate) fn proves(&self, repo: &Repository, kind: LockKind) -> Result<()> {
        // Compared as thin pointers: the same object may be reached through
        // different vtables.
        let same = repo.is_storage(&self.shared.backend);
        if !same {
            return Err(Error::InvalidArgument("the lock given is on another repository".into()));
        }
        if kind == LockKind::Exclusive && self.kind() != LockKind::Exclusive {
            return Err(Error::InvalidArgument("this operation needs an exclusive lock".into()));
        }
        Ok(())
    }

    /// Sets `cancel` when the lock is lost (at once if it already is), so
    /// the operation stops at its next safe point.
    pub fn stop_on_loss(&self, cancel: &'static AtomicBool) {
        let mut state = self.shared.state.lock().expect("lock state");
        state.cancel = Some(cancel);
        if state.lost.is_some() {
            cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Why the lock was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.shared.state.lock().expect("lock state").lost.clone()
    }

    /// Before writing something that relies on the lock (a snapshot): fails
    /// with [`Error::LockLost`] if it was lost, went unrefreshed too long,
    /// or its object is no longer in the repository.
    pub fn check(&self) -> Result<()> {
        let mut state = self.shared.state.lock().expect("lock state");
        self.shared.check_age(&mut state);
        if state.lost.is_none() {
            let name = self.shared.info.lock().expect("lock state").0.clone();
            if !self.shared.backend.exists(ObjectKind::Lock, &name)? {
                self.shared.lose(&mut state, REMOVED.into());
            }
        }
        match &state.lost {
            Some(reason) => Err(Error::LockLost { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Whether an index file present when the lock was taken is gone: then
    /// blobs indexed at the start may no longer be (a prune, `repair index`
    /// or a consolidation of index files ran meanwhile).
    pub fn index_files_removed(&self) -> Result<bool> {
        let now: HashSet<IndexId> = crate::index::list_ids(self.shared.backend.as_ref())?
            .into_iter()
            .collect();
        Ok(self.shared.index_at_start.iter().any(|id| !now.contains(id)))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.shared.state.lock().expect("lock state").stop = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.refresher.take() {
            let _ = handle.join();
        }
        let name = self.shared.info.lock().expect("lock state").0.clone();
        match self.shared.backend.delete(ObjectKind::Lock, &name) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!("cannot remove the repository lock {name}: {e}"),
        }
    }
}

/// Removes stale locks (all locks with `all`). Returns the names removed
/// and the locks left in place (held by live processes, or unreadable).
pub fn remove(repo: &Repository, all: bool) -> Result<Removed> {
    // The storage's clock, from an object written now (a shared lock that
    // is removed at once); storage that refuses it falls back to the wall clock.
    let probe = new_name();
    let probe_info = LockInfo::ours(LockKind::Shared, "unlock");
    let probe_written = repo
        .backend()
        .write(ObjectKind::Lock, &probe, &probe_info.encode(repo.crypto()))
        .is_ok();
    let listed = list_with_times(repo);
    let judge = judge(
        repo,
        probe_written.then_some(probe.as_str()),
        listed.as_deref().unwrap_or(&[]),
    );
    if probe_written {
        let _ = repo.backend().delete(ObjectKind::Lock, &probe);
    }
    let mut out = Removed::default();
    for (name, info, modified) in listed? {
        if name == probe {
            continue;
        }
        let stale = match &info {
            Ok(info) => judge.is_stale(info, modified),
            Err(_) => false,
        };
        if all || stale {
            match repo.backend().delete(ObjectKind::Lock, &name) {
                Ok(()) => out.removed.push(name),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            out.kept.push(match info {
                Ok(info) => info.describe(),
                Err(e) => format!("an unreadable lock ({e})"),
            });
        }
    }
    Ok(out)
}

/// What [`remove`] did.
#[derive(Debug, Default)]
pub struct Removed {
    pub removed: Vec<String>,
    /// Descriptions of the locks left: not stale, or unreadable.
    pub kept: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::keys::Password;
    use crate::repo::{InitOptions, Repository};

    fn repo(dir: &std::path::Path) -> Repository {
        let options = InitOptions {
            kdf: crate::keys::FAST_KDF_FOR_TESTS,
            ..InitOptions::default()
        };
        let backend = Arc::new(LocalBackend::new(dir.join("repo")));
        Repository::init(backend, Some(&Password::new("pw")), &options, &dir.join("cache")).unwrap()
    }

    /// Regression: dropping a guard right after taking it used to wait for
    /// the refresh interval (5 minutes), because the stop signal was lost.
    #[test]
    fn release_is_immediate_and_exclusive_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let started = Instant::now();
        for _ in 0..20 {
            drop(acquire(&repo, LockKind::Shared, "test", Duration::ZERO).unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(list(&repo).unwrap().is_empty(), "released locks are deleted");

        let shared = acquire(&repo, LockKind::Shared, "create", Duration::ZERO).unwrap();
        let second = acquire(&repo, LockKind::Shared, "create", Duration::ZERO).unwrap();
        match acquire(&repo, LockKind::Exclusive, "prune", Duration::ZERO) {
            Err(Error::Locked { holder, advice }) => {
                assert!(holder.contains("create"), "{holder}");
                assert!(
                    advice.contains("--remove-all") && advice.contains("running on this host"),
                    "{advice}"
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        drop((shared, second));
        let exclusive = acquire(&repo, LockKind::Exclusive, "prune", Duration::ZERO).unwrap();
        assert!(matches!(
            acquire(&repo, LockKind::Shared, "create", Duration::ZERO),
            Err(Error::Locked { .. })
        ));
        drop(exclusive);
    }

    fn judge_at(host: &str, wall_now: jiff::Timestamp, storage_now: Option<SystemTime>) -> Judge {
        Judge {
            host: host.into(),
            wall_now,
            storage_now,
        }
    }

    /// Regression: a live process's lock was stale once 30 minutes old (a
    /// stalled `--stdin` producer, a stopped backup, a pruner whose clock is
    /// 31 minutes ahead), and prune deleted packs the backup had reused.
    #[test]
    fn live_holders_on_this_host_are_never_stale() {
        let now = jiff::Timestamp::now();
        let mut info = LockInfo {
            kind: LockKind::Shared,
            time: now - jiff::SignedDuration::from_secs(24 * 3600),
            host: "this-host".into(),
            username: "u".into(),
            pid: std::process::id(),
            operation: "create".into(),
        };
        let old = Some(SystemTime::now() - Duration::from_secs(24 * 3600));
        let judge = judge_at("this-host", now, Some(SystemTime::now()));
        assert!(!judge.is_stale(&info, old), "alive on this host, however old");
        assert!(!judge_at("this-host", now, None).is_stale(&info, None));
        info.pid = u32::MAX - 1; // no such process
        assert!(
            judge.is_stale(&info, Some(SystemTime::now())),
            "dead on this host, however fresh"
        );
    }

    /// Locks from other hosts age by the storage's clock when it has one:
    /// a pruner whose wall clock is 31 minutes ahead (or a holder whose
    /// clock is behind) must not take a fresh lock for a stale one.
    #[test]
    fn other_hosts_age_by_the_storage_clock() {
        let storage_now = SystemTime::now();
        let info = LockInfo {
            kind: LockKind::Shared,
            time: jiff::Timestamp::now(),
            host: "other-host".into(),
            username: "u".into(),
            pid: 1,
            operation: "create".into(),
        };
        let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(31 * 60);
        let judge = judge_at("this-host", ahead, Some(storage_now));
        let refreshed = Some(storage_now - Duration::from_secs(60));
        assert!(
            !judge.is_stale(&info, refreshed),
            "the wall clock is ignored when storage keeps times"
        );
        assert!(judge.is_stale(&info, Some(storage_now - Duration::from_secs(31 * 60))));
        // A holder whose clock is behind writes old times into a fresh lock.
        let mut behind = info.clone();
        behind.time = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
        let judge = judge_at("this-host", jiff::Timestamp::now(), Some(storage_now));
        assert!(!judge.is_stale(&behind, refreshed));
        // Storage without times: the wall clock is all there is.
        let judge = judge_at("this-host", ahead, None);
        assert!(judge.is_stale(&info, None));
        assert!(!judge_at("this-host", jiff::Timestamp::now(), None).is_stale(&info, None));
    }

    fn fast() -> Timing {
        Timing {
            refresh: Duration::from_millis(50),
            retry: Duration::from_millis(10),
            lost_after: Duration::from_millis(300),
        }
    }

    /// Regression: a refresh that failed only logged a warning, and the
    /// operation went on under a lock others would soon take as stale.
    #[test]
    fn a_lock_that_cannot_be_refreshed_stops_the_operation() {
        use crate::backend::faulty::{Action, Fault, FaultyBackend, Op};
        let dir = tempfile::tempdir().unwrap();
        drop(repo(dir.path()));
        // The first lock write (taking it) succeeds, every refresh fails.
        let mut fault = Fault::at(
            Op::Write,
            Some(ObjectKind::Lock),
            2,
            Action::Fail(std::io::ErrorKind::PermissionDenied),
        );
        fault.repeat = true;
        let backend = Arc::new(FaultyBackend::new(
            LocalBackend::new(dir.path().join("repo")),
            vec![fault],
        ));
        let repo = Repository::open(backend, Some(&Password::new("pw")), &dir.path().join("cache")).unwrap();
        static CANCEL: AtomicBool = AtomicBool::new(false);
        let guard = acquire_with(&repo, LockKind::Shared, "create", Duration::ZERO, fast()).unwrap();
        guard.stop_on_loss(&CANCEL);
        assert!(guard.check().is_ok(), "held at first");
        let started = Instant::now();
        while !CANCEL.load(Ordering::SeqCst) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the operation was never stopped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let reason = guard.lost().expect("lost");
        assert!(reason.contains("injected"), "{reason}");
        assert!(matches!(guard.check(), Err(Error::LockLost { .. })));
    }

    /// A lock whose object another process removed is lost, even though
    /// its refreshes work: a prune may have run in between.
    #[test]
    fn a_removed_lock_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        static CANCEL: AtomicBool = AtomicBool::new(false);
        let slow = Timing {
            refresh: Duration::from_secs(3600),
            ..fast()
        };
        let guard = acquire_with(&repo, LockKind::Shared, "create", Duration::ZERO, slow).unwrap();
        guard.stop_on_loss(&CANCEL);
        assert_eq!(remove(&repo, false).unwrap().kept.len(), 1, "a live lock is not stale");
        assert_eq!(remove(&repo, true).unwrap().removed.len(), 1);
        match guard.check() {
            Err(Error::LockLost { reason }) => assert!(reason.contains("removed"), "{reason}"),
            other => panic!("expected a lost lock, got {other:?}"),
        }
        assert!(CANCEL.load(Ordering::SeqCst));
        // Found by the refresher too, without a check.
        let guard = acquire_with(&repo, LockKind::Shared, "create", Duration::ZERO, fast()).unwrap();
        remove(&repo, true).unwrap();
        let started = Instant::now();
        while guard.lost().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the refresher never noticed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(guard);
        assert!(list(&repo).unwrap().is_empty(), "the refresh's own lock is released");
    }

    #[test]
    fn dead_holders_and_old_locks_are_stale() {
        let now = jiff::Timestamp::now();
        let mut info = LockInfo {
            kind: LockKind::Exclusive,
            time: now,
            host: "this-host".into(),
            username: "u".into(),
            pid: std::process::id(),
            operation: "prune".into(),
        };
        let judge = judge_at("this-host", now, None);
        let elsewhere = judge_at("other-host", now, None);
        assert!(!judge.is_stale(&info, None));
        info.pid = u32::MAX - 1; // no such process
        assert!(judge.is_stale(&info, None));
        assert!(
            !elsewhere.is_stale(&info, None),
            "a pid on another host cannot be checked"
        );
        info.time = now - jiff::SignedDuration::from_secs(31 * 60);
        assert!(elsewhere.is_stale(&info, None));
    }
}
