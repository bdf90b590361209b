//! A backend wrapper that makes a request again when it failed in a way that
//! may pass ([`BackendError::is_transient`]: a timeout, a reset connection, a
//! 5xx answer), waiting longer each time (exponential backoff with jitter,
//! so that many clients hit by one outage do not return in step).
//!
//! What it owns is the question of when a repeat is safe. Reads, lists,
//! stats and writes of content-named objects are idempotent: the same bytes
//! under the same name. Two steps are not, and get their own rule:
//! - `write_new` (create-only): a first attempt can fail *after* the storage
//!   stored the object (the answer was lost). A retry then answers
//!   "already exists"; the wrapper reads the object back, and only if it
//!   holds our bytes is the write done. Anything else stays "already exists",
//!   so an `init` that lost a race still loses.
//! - `delete`: "not found" on a retry after an ambiguous failure means the
//!   first attempt deleted it.
//!
//! Permanent errors (not found, refused credentials, a full disk) are never
//! repeated. Timeouts themselves are the remote backends' job.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, BackendError, BackendResult, ObjectInfo, ObjectKind};

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each one after.
    pub initial_delay: Duration,
    /// No wait is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts over about 7.5 s (0.5, 1, 2, 4 s, each ±50%): long
    /// enough for a restarted server or a dropped connection, short enough
    /// that a dead one is reported while the user still waits.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The default policy, unless `SNAP_RETRY_DELAY_MS` (for tests) sets
    /// the first delay in milliseconds.
    pub fn from_env() -> Self {
        let mut policy = RetryPolicy::default();
        if let Some(ms) = std::env::var("SNAP_RETRY_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            policy.initial_delay = Duration::from_millis(ms);
        }
        policy
    }

    /// The wait before retry number `retry` (1-based), before jitter.
    fn base_delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// [`RetryPolicy::base_delay`] scaled by a random factor in 0.5..1.5.
    fn delay(&self, retry: u32) -> Duration {
        let mut byte = [0u8; 2];
        crate::crypto::fill_random(&mut byte);
        let unit = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX);
        self.base_delay(retry).mul_f64(0.5 + unit).min(self.max_delay)
    }
}

/// Retries transient failures of the backend it wraps.
#[derive(Debug)]
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
}

impl RetryBackend {
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy) -> Self {
        RetryBackend { inner, policy }
    }

    /// Runs `request` until it succeeds, fails permanently, or the attempts
    /// are used up. `request` learns whether an earlier attempt failed
    /// transiently (its effect unknown).
    fn run<T>(
        &self,
        op: &str,
        kind: ObjectKind,
        name: &str,
        mut request: impl FnMut(bool) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let mut retry = 0;
        loop {
            match request(retry > 0) {
                Err(e) if e.is_transient() && retry + 1 < self.policy.attempts => {
                    retry += 1;
                    let delay = self.policy.delay(retry);
                    // Retries are logged for -v only: a server that is down
                    // must end in one line, the error below.
                    tracing::info!(
                        "{op} {} {name} failed ({e}); retry {retry} of {} in {:.1} s",
                        kind.name(),
                        self.policy.attempts - 1,
                        delay.as_secs_f64()
                    );
                    std::thread::sleep(delay);
                }
                Err(BackendError::Transient { op, what, reason }) if retry > 0 => {
                    return Err(BackendError::Transient {
                        op,
                        what,
                        reason: format!("{reason} (gave up after {} attempts)", retry + 1),
                    })
                }
                result => return result,
            }
        }
    }
}

impl Backend for RetryBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
    fn append_only(&self) -> bool {
        self.inner.append_only()
    }

    fn create(&self) -> BackendResult<()> {
        // Creating the structure makes directories (or nothing): idempotent.
        self.run("create", ObjectKind::Config, "repository", |_| self.inner.create())
    }

    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
        self.run("read", kind, name, |_| self.inner.read(kind, name))
    }

    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.run("read", kind, name, |_| self.inner.read_range(kind, name, offset, len))
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> BackendResult<()> {
        self.run("read", kind, name, |_| {
            self.inner.read_range_into(kind, name, offset, len, buf)
        })
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        // A write may replace an object only with identical bytes: doing it
        // twice is doing it once.
        self.run("write", kind, name, |_| self.inner.write(kind, name, data))
    }

    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.run("write", kind, name, |retrying| {
            match self.inner.write_new(kind, name, data) {
                Err(BackendError::AlreadyExists { kind: k, name: n }) if retrying => {
                    // Ours, stored by the attempt whose answer was lost? Only
                    // then is the create-only write done.
                    match self.inner.read(kind, name) {
                        Ok(stored) if stored == data => {
                            tracing::info!(
                                "{} {name} exists after a failed attempt and holds our bytes: written",
                                kind.name()
                            );
                            Ok(())
                        }
                        Ok(_) => Err(BackendError::AlreadyExists { kind: k, name: n }),
                        // Transient: the whole step is tried again.
                        Err(e) => Err(e),
                    }
                }
                other => other,
            }
        })
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        self.run("delete", kind, name, |retrying| match self.inner.delete(kind, name) {
            // The attempt that failed ambiguously removed it.
            Err(e) if retrying && e.is_not_found() => Ok(()),
            other => other,
        })
    }

    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        self.run("list", kind, "*", |_| self.inner.list(kind))
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        self.run("stat", kind, name, |_| self.inner.exists(kind, name))
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<std::time::SystemTime>> {
        self.run("stat", kind, name, |_| self.inner.modified(kind, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::faulty::{Action, Fault, FaultyBackend, Op};
    use crate::backend::LocalBackend;
    use std::io::ErrorKind;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    struct Setup {
        dir: tempfile::TempDir,
        local: LocalBackend,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalBackend::new(dir.path().join("repo"));
        local.create().unwrap();
        Setup { dir, local }
    }

    /// A retrying backend over a faulty one over the setup's directory.
    fn over(s: &Setup, faults: Vec<Fault>) -> (Arc<FaultyBackend<LocalBackend>>, RetryBackend) {
        let faulty = Arc::new(FaultyBackend::new(LocalBackend::new(s.dir.path().join("repo")), faults));
        let retry = RetryBackend::new(faulty.clone(), fast());
        (faulty, retry)
    }

    fn transient(op: Op, nth: u64) -> Fault {
        Fault::at(op, None, nth, Action::Fail(ErrorKind::TimedOut))
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let s = setup();
        s.local.write(ObjectKind::Snapshot, "a", b"bytes").unwrap();
        let (_, retry) = over(&s, vec![transient(Op::Read, 1), transient(Op::Read, 2)]);
        assert_eq!(retry.read(ObjectKind::Snapshot, "a").unwrap(), b"bytes");
    }

    #[test]
    fn gives_up_after_the_attempts_with_the_last_error() {
        let s = setup();
        s.local.write(ObjectKind::Snapshot, "a", b"bytes").unwrap();
        let mut fault = transient(Op::Read, 1);
        fault.repeat = true;
        let (faulty, retry) = over(&s, vec![fault]);
        let e = retry.read(ObjectKind::Snapshot, "a").unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(faulty.count(Op::Read), 5, "5 attempts in all");
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let s = setup();
        let (faulty, retry) = over(&s, vec![]);
        assert!(retry.read(ObjectKind::Snapshot, "missing").unwrap_err().is_not_found());
        assert_eq!(faulty.count(Op::Read), 1);
        let (faulty, retry) = over(
            &s,
            vec![Fault::at(Op::Write, None, 1, Action::Fail(ErrorKind::PermissionDenied))],
        );
        assert!(retry.write(ObjectKind::Pack, "p", b"x").is_err());
        assert_eq!(faulty.count(Op::Write), 1);
    }

    #[test]
    fn write_new_whose_answer_was_lost_is_done_if_the_object_holds_our_bytes() {
        let s = setup();
        // The first attempt stores the object, then the answer is lost.
        let (_, retry) = over(&s, vec![Fault::at(Op::Write, None, 1, Action::StoreThenFail)]);
        retry.write_new(ObjectKind::Config, "config", b"ours").unwrap();
        assert_eq!(s.local.read(ObjectKind::Config, "config").unwrap(), b"ours");
    }

    #[test]
    fn write_new_racing_another_writer_still_reports_already_exists() {
        let s = setup();
        // Our first attempt times out without storing anything; meanwhile
        // another writer has created the object with its own bytes.
        s.local.write_new(ObjectKind::Config, "config", b"theirs").unwrap();
        let (faulty, retry) = over(&s, vec![transient(Op::Write, 1)]);
        let e = retry.write_new(ObjectKind::Config, "config", b"ours").unwrap_err();
        assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e}");
        assert_eq!(faulty.count(Op::Write), 2);
        assert_eq!(s.local.read(ObjectKind::Config, "config").unwrap(), b"theirs");
        // Without any failure, an existing object is simply AlreadyExists,
        // even with our bytes: the caller asked for a new object.
        let (_, retry) = over(&s, vec![]);
        let e = retry.write_new(ObjectKind::Config, "config", b"theirs").unwrap_err();
        assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e}");
    }

    #[test]
    fn delete_that_answers_not_found_on_a_retry_is_done() {
        let s = setup();
        s.local.write(ObjectKind::Lock, "l", b"x").unwrap();
        let (_, retry) = over(&s, vec![Fault::at(Op::Delete, None, 1, Action::StoreThenFail)]);
        retry.delete(ObjectKind::Lock, "l").unwrap();
        assert!(!s.local.exists(ObjectKind::Lock, "l").unwrap());
        // A first answer of "not found" is still an error.
        let (_, retry) = over(&s, vec![]);
        assert!(retry.delete(ObjectKind::Lock, "l").unwrap_err().is_not_found());
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.base_delay(1), Duration::from_millis(500));
        assert_eq!(policy.base_delay(2), Duration::from_secs(1));
        assert_eq!(policy.base_delay(4), Duration::from_secs(4));
        assert_eq!(policy.base_delay(10), Duration::from_secs(30));
        assert_eq!(policy.base_delay(100), Duration::from_secs(30));
        for retry in 1..8 {
            let d = policy.delay(retry);
            let base = policy.base_delay(retry);
            assert!(
                d >= base / 2 && d <= (base * 3 / 2).min(policy.max_delay),
                "{d:?} vs {base:?}"
            );
        }
    }
}
