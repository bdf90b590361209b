//! A backend wrapper that counts the requests made to the backend it wraps,
//! by object kind and operation, and the bytes sent and received: what a
//! command cost in round trips and transfer, which on object storage is what
//! costs time and money. It changes nothing about the requests.
//!
//! It is meant to sit directly on the real backend, under the retry wrapper
//! and the object cache, so that it counts the requests storage really saw:
//! each retry is a request, a cache hit is none.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::{Backend, BackendResult, ObjectInfo, ObjectKind};

/// The operations counted; a stat (`exists`, `modified`) counts as `exists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestOp {
    Read,
    ReadRange,
    Write,
    List,
    Delete,
    Exists,
}

impl RequestOp {
    const ALL: [RequestOp; 6] = [
        RequestOp::Read,
        RequestOp::ReadRange,
        RequestOp::Write,
        RequestOp::List,
        RequestOp::Delete,
        RequestOp::Exists,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestOp::Read => "read",
            RequestOp::ReadRange => "read_range",
            RequestOp::Write => "write",
            RequestOp::List => "list",
            RequestOp::Delete => "delete",
            RequestOp::Exists => "exists",
        }
    }
}

const KINDS: [ObjectKind; 6] = [
    ObjectKind::Config,
    ObjectKind::Key,
    ObjectKind::Pack,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::Lock,
];

fn kind_index(kind: ObjectKind) -> usize {
    KINDS.iter().position(|&k| k == kind).unwrap_or(0)
}

/// Request counters shared by every [`CountingBackend`] made with them
/// (one set per process in the CLI: a command may open storage twice).
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// `[kind][op]`, in the order of `KINDS` and `RequestOp::ALL`.
    counts: [[AtomicU64; 6]; 6],
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl RequestCounts {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, kind: ObjectKind, op: RequestOp, up: u64, down: u64) {
        self.counts[kind_index(kind)][op as usize].fetch_add(1, Ordering::Relaxed);
        if up > 0 {
            self.bytes_up.fetch_add(up, Ordering::Relaxed);
        }
        if down > 0 {
            self.bytes_down.fetch_add(down, Ordering::Relaxed);
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> RequestStats {
        let mut stats = RequestStats {
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            ..RequestStats::default()
        };
        for (kind, row) in KINDS.iter().zip(&self.counts) {
            for (op, count) in RequestOp::ALL.iter().zip(row) {
                let n = count.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                stats.total += n;
                *stats.by_op.entry(op.name()).or_default() += n;
                stats.by_kind.entry(kind.name()).or_default().insert(op.name(), n);
            }
        }
        stats
    }
}

/// Requests made and bytes moved; operations and kinds that never
/// happened are left out. The `requests` object of `--json` output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestStats {
    pub total: u64,
    /// Bytes sent to storage (object writes).
    pub bytes_up: u64,
    /// Bytes received from storage (object and range reads).
    pub bytes_down: u64,
    /// Requests per operation: `read`, `read_range`, `write`, `list`,
    /// `delete`, `exists`.
    pub by_op: BTreeMap<&'static str, u64>,
    /// Requests per object kind (`config`, `key`, `pack`, `index`,
    /// `snapshot`, `lock`), then per operation.
    pub by_kind: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

impl RequestStats {
    /// Requests of one kind and operation.
    pub fn get(&self, kind: ObjectKind, op: RequestOp) -> u64 {
        self.by_kind
            .get(kind.name())
            .and_then(|ops| ops.get(op.name()))
            .copied()
            .unwrap_or(0)
    }
}

/// Counts the requests made to the backend it wraps.
#[derive(Debug)]
pub struct CountingBackend {
    inner: Arc<dyn Backend>,
    counts: Arc<RequestCounts>,
}

impl CountingBackend {
    pub fn new(inner: Arc<dyn Backend>, counts: Arc<RequestCounts>) -> Self {
        CountingBackend { inner, counts }
    }

    pub fn counts(&self) -> &Arc<RequestCounts> {
        &self.counts
    }
}

impl Backend for CountingBackend {
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
        let result = self.inner.read(kind, name);
        let down = result.as_ref().map_or(0, |b| b.len() as u64);
        self.counts.add(kind, RequestOp::Read, 0, down);
        result
    }

    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let result = self.inner.read_range(kind, name, offset, len);
        let down = result.as_ref().map_or(0, |b| b.len() as u64);
        self.counts.add(kind, RequestOp::ReadRange, 0, down);
        result
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> BackendResult<()> {
        let result = self.inner.read_range_into(kind, name, offset, len, buf);
        let down = if result.is_ok() { buf.len() as u64 } else { 0 };
        self.counts.add(kind, RequestOp::ReadRange, 0, down);
        result
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.counts.add(kind, RequestOp::Write, data.len() as u64, 0);
        self.inner.write(kind, name, data)
    }

    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.counts.add(kind, RequestOp::Write, data.len() as u64, 0);
        self.inner.write_new(kind, name, data)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        self.counts.add(kind, RequestOp::Delete, 0, 0);
        self.inner.delete(kind, name)
    }

    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        self.counts.add(kind, RequestOp::List, 0, 0);
        self.inner.list(kind)
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        self.counts.add(kind, RequestOp::Exists, 0, 0);
        self.inner.exists(kind, name)
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<std::time::SystemTime>> {
        self.counts.add(kind, RequestOp::Exists, 0, 0);
        self.inner.modified(kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    #[test]
    fn counts_each_request_by_kind_and_op_and_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("repo")));
        local.create().unwrap();
        let counts = Arc::new(RequestCounts::new());
        let b = CountingBackend::new(local, counts.clone());
        b.write(ObjectKind::Pack, "p", &[7; 1000]).unwrap();
        b.write_new(ObjectKind::Config, "config", b"cfg").unwrap();
        assert_eq!(b.read(ObjectKind::Pack, "p").unwrap().len(), 1000);
        assert_eq!(b.read_range(ObjectKind::Pack, "p", 10, 20).unwrap().len(), 20);
        let mut buf = Vec::new();
        b.read_range_into(ObjectKind::Pack, "p", 0, 5, &mut buf).unwrap();
        assert!(b.read(ObjectKind::Snapshot, "missing").is_err());
        b.list(ObjectKind::Snapshot).unwrap();
        b.list(ObjectKind::Snapshot).unwrap();
        assert!(b.exists(ObjectKind::Pack, "p").unwrap());
        b.delete(ObjectKind::Pack, "p").unwrap();

        let s = counts.stats();
        assert_eq!(s.total, 10);
        assert_eq!(s.bytes_up, 1003);
        assert_eq!(s.bytes_down, 1025);
        assert_eq!(s.get(ObjectKind::Pack, RequestOp::Write), 1);
        assert_eq!(s.get(ObjectKind::Pack, RequestOp::Read), 1);
        assert_eq!(s.get(ObjectKind::Pack, RequestOp::ReadRange), 2);
        assert_eq!(s.get(ObjectKind::Snapshot, RequestOp::Read), 1);
        assert_eq!(s.get(ObjectKind::Snapshot, RequestOp::List), 2);
        assert_eq!(s.get(ObjectKind::Config, RequestOp::Write), 1);
        assert_eq!(s.by_op["read"], 2);
        assert_eq!(s.by_op["write"], 2);
        assert!(!s.by_kind.contains_key("lock"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["by_kind"]["snapshot"]["list"], 2);
    }
}
