//! A backend wrapper that injects faults, for tests: errors, silently
//! truncated writes, delays, a storage limit ("disk full"), and "crash now"
//! (after which every operation fails, as if the process had died). Each
//! fault fires at the N-th operation of a kind, optionally on one object kind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{Backend, BackendError, BackendResult, ObjectInfo, ObjectKind};

/// A backend operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    ReadRange,
    Write,
    Delete,
    List,
    Exists,
}

/// What happens when a fault fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The operation fails with an I/O error of this kind.
    Fail(std::io::ErrorKind),
    /// A write stores only the first half of the object and reports success:
    /// storage that breaks its promise. Readers must detect it.
    Truncate,
    /// The operation is delayed, then runs.
    Delay(Duration),
    /// This and every later operation fail: the process "died" here.
    Crash,
    /// The operation runs, then fails with a transient error (a timeout):
    /// storage that did what was asked but whose answer was lost. Only a
    /// retry can tell.
    StoreThenFail,
}

#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub op: Op,
    /// Only operations on this kind of object count; `None` counts all.
    pub kind: Option<ObjectKind>,
    /// Fires at the `nth` counted operation (1-based)...
    pub nth: u64,
    /// ...and, if set, at every one after it too.
    pub repeat: bool,
    pub action: Action,
}

impl Fault {
    pub fn at(op: Op, kind: Option<ObjectKind>, nth: u64, action: Action) -> Self {
        Fault {
            op,
            kind,
            nth,
            repeat: false,
            action,
        }
    }
}

#[derive(Debug)]
pub struct FaultyBackend<B> {
    inner: B,
    faults: Vec<Fault>,
    counts: Mutex<Vec<u64>>,
    crashed: AtomicBool,
    /// Bytes that may still be written; `u64::MAX` for no limit.
    space_left: AtomicU64,
    /// Operations of each [`Op`] made so far, faulty or not.
    calls: Mutex<std::collections::HashMap<Op, u64>>,
}

impl<B: Backend> FaultyBackend<B> {
    pub fn new(inner: B, faults: Vec<Fault>) -> Self {
        let counts = Mutex::new(vec![0; faults.len()]);
        FaultyBackend {
            inner,
            faults,
            counts,
            crashed: AtomicBool::new(false),
            space_left: AtomicU64::new(u64::MAX),
            calls: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// How many operations of this kind were made (failed ones included).
    pub fn count(&self, op: Op) -> u64 {
        self.calls.lock().expect("call counts").get(&op).copied().unwrap_or(0)
    }

    /// Writes fail with "no space left" once `bytes` have been written.
    pub fn with_space_limit(self, bytes: u64) -> Self {
        self.space_left.store(bytes, Ordering::SeqCst);
        self
    }

    pub fn has_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn error(op: Op, kind: ObjectKind, name: &str, error_kind: std::io::ErrorKind, why: &str) -> BackendError {
        BackendError::Io {
            op: match op {
                Op::Read | Op::ReadRange => "read",
                Op::Write => "write",
                Op::Delete => "delete",
                Op::List => "list",
                Op::Exists => "stat",
            },
            what: format!("{} {name}", kind.name()),
            error: std::io::Error::new(error_kind, why.to_string()),
        }
    }

    /// The answer to the caller: with [`Action::StoreThenFail`], a timeout
    /// in place of the success.
    fn answer<T>(
        action: Option<Action>,
        op: Op,
        kind: ObjectKind,
        name: &str,
        result: BackendResult<T>,
    ) -> BackendResult<T> {
        match (action, result) {
            (Some(Action::StoreThenFail), Ok(_)) => Err(Self::error(
                op,
                kind,
                name,
                std::io::ErrorKind::TimedOut,
                "injected: done, but the answer was lost",
            )),
            (_, result) => result,
        }
    }

    /// Counts the operation and returns the action of a fault that fires.
    fn check(&self, op: Op, kind: ObjectKind, name: &str) -> BackendResult<Option<Action>> {
        *self.calls.lock().expect("call counts").entry(op).or_default() += 1;
        if self.has_crashed() {
            return Err(Self::error(
                op,
                kind,
                name,
                std::io::ErrorKind::Other,
                "injected: crashed earlier",
            ));
        }
        let mut counts = self.counts.lock().expect("fault counts");
        let mut fired = None;
        for (fault, count) in self.faults.iter().zip(counts.iter_mut()) {
            if fault.op != op || fault.kind.is_some_and(|k| k != kind) {
                continue;
            }
            *count += 1;
            if *count == fault.nth || (fault.repeat && *count > fault.nth) {
                fired.get_or_insert(fault.action);
            }
        }
        drop(counts);
        match fired {
            Some(Action::Fail(error_kind)) => Err(Self::error(op, kind, name, error_kind, "injected fault")),
            Some(Action::Crash) => {
                self.crashed.store(true, Ordering::SeqCst);
                Err(Self::error(
                    op,
                    kind,
                    name,
                    std::io::ErrorKind::Other,
                    "injected: crash",
                ))
            }
            Some(Action::Delay(pause)) => {
                std::thread::sleep(pause);
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
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
        self.inner.create()
    }

    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
        self.check(Op::Read, kind, name)?;
        self.inner.read(kind, name)
    }

    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.check(Op::ReadRange, kind, name)?;
        self.inner.read_range(kind, name, offset, len)
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> BackendResult<()> {
        self.check(Op::ReadRange, kind, name)?;
        self.inner.read_range_into(kind, name, offset, len, buf)
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        let action = self.check(Op::Write, kind, name)?;
        let len = data.len() as u64;
        let reserved = self
            .space_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(len));
        if reserved.is_err() {
            return Err(Self::error(
                Op::Write,
                kind,
                name,
                std::io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ));
        }
        let result = match action {
            Some(Action::Truncate) => self.inner.write(kind, name, &data[..data.len() / 2]),
            _ => self.inner.write(kind, name, data),
        };
        Self::answer(action, Op::Write, kind, name, result)
    }

    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        let action = self.check(Op::Write, kind, name)?;
        Self::answer(action, Op::Write, kind, name, self.inner.write_new(kind, name, data))
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        let action = self.check(Op::Delete, kind, name)?;
        Self::answer(action, Op::Delete, kind, name, self.inner.delete(kind, name))
    }

    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        self.check(Op::List, kind, "*")?;
        self.inner.list(kind)
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        self.check(Op::Exists, kind, name)?;
        self.inner.exists(kind, name)
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<std::time::SystemTime>> {
        self.check(Op::Exists, kind, name)?;
        self.inner.modified(kind, name)
    }
}
