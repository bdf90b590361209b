//! Repository locks: objects under `locks/` that say who is working on the
//! repository. `create`, `restore` and `verify` take shared locks; `forget`,
//! `prune` and `repair` take an exclusive one, so prune never deletes data a
//! running backup is about to reference.
//!
//! A lock is sealed JSON naming host, user, pid and time. The holder rewrites
//! it every [`REFRESH`]; a lock not refreshed for [`STALE_AFTER`], or whose
//! process is gone on this same host, is stale and ignored (and removed by
//! `snap unlock`). Taking a lock writes ours first and then looks for
//! conflicting ones, so two processes racing for an exclusive lock both see
//! each other and back off.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, ObjectKind};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::id::KeyId;
use crate::repo::Repository;

/// How often a held lock is rewritten.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock older than this (not refreshed) is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Pause between attempts while waiting for a conflicting lock.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

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

impl LockInfo {
    pub fn is_stale(&self, now: jiff::Timestamp, this_host: &str) -> bool {
        let age = now.duration_since(self.time);
        if age > jiff::SignedDuration::try_from(STALE_AFTER).expect("small duration") {
            return true;
        }
        self.host == this_host && !process_exists(self.pid)
    }

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
    let mut out = Vec::new();
    for info in repo.backend().list(ObjectKind::Lock)? {
        match repo.backend().read(ObjectKind::Lock, &info.name) {
            Ok(bytes) => {
                let decoded = LockInfo::decode(repo.crypto(), &info.name, &bytes);
                out.push((info.name, decoded));
            }
            // Released between listing and reading.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

struct Shared {
    backend: Arc<dyn Backend>,
    crypto: Crypto,
    info: Mutex<(String, LockInfo)>,
    stop: Mutex<bool>,
    wake: Condvar,
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

/// Takes a lock, waiting up to `wait` for conflicting holders to finish.
pub fn acquire(repo: &Repository, kind: LockKind, operation: &str, wait: Duration) -> Result<LockGuard> {
    let host = crate::snapshot::hostname();
    let started = Instant::now();
    loop {
        let info = LockInfo {
            kind,
            time: jiff::Timestamp::now(),
            host: host.clone(),
            username: crate::snapshot::username(),
            pid: std::process::id(),
            operation: operation.to_string(),
        };
        let name = new_name();
        repo.backend()
            .write(ObjectKind::Lock, &name, &info.encode(repo.crypto()))?;
        let conflict = find_conflict(repo, &name, kind, &host);
        match conflict {
            Ok(None) => {
                let shared = Arc::new(Shared {
                    backend: repo.backend_arc(),
                    crypto: repo.crypto().clone(),
                    info: Mutex::new((name, info)),
                    stop: Mutex::new(false),
                    wake: Condvar::new(),
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
            Ok(Some(holder)) => {
                let _ = repo.backend().delete(ObjectKind::Lock, &name);
                if started.elapsed() >= wait {
                    return Err(Error::Locked { holder });
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

/// The description of a lock that conflicts with ours, if any.
fn find_conflict(repo: &Repository, ours: &str, kind: LockKind, host: &str) -> Result<Option<String>> {
    let now = jiff::Timestamp::now();
    for (name, info) in list(repo)? {
        if name == ours {
            continue;
        }
        match info {
            Ok(info) if info.is_stale(now, host) => {}
            Ok(info) if kind == LockKind::Shared && info.kind == LockKind::Shared => {}
            Ok(info) => return Ok(Some(info.describe())),
            // An unreadable lock might be anyone's: respect it; `snap unlock --remove-all` clears it.
            Err(e) => return Ok(Some(format!("an unreadable lock ({e})"))),
        }
    }
    Ok(None)
}

fn refresh_loop(shared: &Shared) {
    let mut stopped = shared.stop.lock().expect("lock state");
    loop {
        // Checked before every wait: a stop requested before this thread
        // first waited would otherwise go unnoticed until the timeout.
        if *stopped {
            return;
        }
        let (guard, timeout) = shared.wake.wait_timeout(stopped, REFRESH).expect("lock state");
        stopped = guard;
        if *stopped {
            return;
        }
        if timeout.timed_out() {
            // Write the fresh lock before removing the old one, so the
            // repository is never seen unlocked while we hold it.
            let mut current = shared.info.lock().expect("lock state");
            let mut info = current.1.clone();
            info.time = jiff::Timestamp::now();
            let name = new_name();
            match shared
                .backend
                .write(ObjectKind::Lock, &name, &info.encode(&shared.crypto))
            {
                Ok(()) => {
                    let _ = shared.backend.delete(ObjectKind::Lock, &current.0);
                    *current = (name, info);
                }
                Err(e) => tracing::warn!("cannot refresh the repository lock: {e}"),
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        *self.shared.stop.lock().expect("lock state") = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.refresher.take() {
            let _ = handle.join();
        }
        let name = self.shared.info.lock().expect("lock state").0.clone();
        if let Err(e) = self.shared.backend.delete(ObjectKind::Lock, &name) {
            tracing::warn!("cannot remove the repository lock {name}: {e}");
        }
    }
}

/// Removes stale locks (all locks with `all`). Returns the names removed.
pub fn remove(repo: &Repository, all: bool) -> Result<Vec<String>> {
    let host = crate::snapshot::hostname();
    let now = jiff::Timestamp::now();
    let mut removed = Vec::new();
    for (name, info) in list(repo)? {
        let stale = match &info {
            Ok(info) => info.is_stale(now, &host),
            Err(_) => false,
        };
        if all || stale {
            repo.backend().delete(ObjectKind::Lock, &name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::keys::{KdfParams, Password};
    use crate::repo::{InitOptions, Repository};

    fn repo(dir: &std::path::Path) -> Repository {
        let options = InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
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
            Err(Error::Locked { holder }) => assert!(holder.contains("create"), "{holder}"),
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
        assert!(!info.is_stale(now, "this-host"));
        info.pid = u32::MAX - 1; // no such process
        assert!(info.is_stale(now, "this-host"));
        assert!(
            !info.is_stale(now, "other-host"),
            "a pid on another host cannot be checked"
        );
        info.time = now - jiff::SignedDuration::from_secs(31 * 60);
        assert!(info.is_stale(now, "other-host"));
    }
}
