//! A [`Backend`] over an Apache OpenDAL [`Operator`]: the one place where
//! snap's synchronous engine meets an async storage client.
//!
//! The backend owns a small multi-thread tokio runtime and `block_on`s one
//! future per trait method, so nothing above this module knows tokio exists
//! (as rustic does). The engine calls these methods from its own threads
//! (the packer uploads from several); each call blocks only its caller.
//! A call from inside a tokio runtime would deadlock or panic, so it is
//! refused with an error instead.
//!
//! Objects keep the local layout (`config`, `keys/`, `data/XX/`, `index/`,
//! `snapshots/`, `locks/`), so a repository can be moved between a bucket,
//! an SFTP server and a local disk with plain copy tools.
//!
//! Atomic writes: an object store's PUT is atomic by itself. A service that
//! can rename (fs, sftp) writes `.tmp-<16 hex>` beside the target and
//! renames it into place, as the local backend does; listing skips names
//! that start with `.`.
//!
//! What this module does not do: retry. Temporary failures become
//! [`BackendError::Transient`] and snap's retry wrapper decides; OpenDAL's
//! own `RetryLayer` is not used, so there is one retry policy, not two.

use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opendal::layers::TimeoutLayer;
use opendal::{EntryMode, ErrorKind, Operator};
use snap_core::backend::{Backend, BackendError, BackendResult, ObjectInfo, ObjectKind};

use crate::location::{LocationError, Options};

/// Time budgets of one request, set with `-o timeout=SECS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Requests that move object bytes, and each page of a listing.
    pub io: Duration,
    /// Requests that move no bytes (stat, delete, rename): a healthy server
    /// answers these at once, so a stall shows sooner.
    pub control: Duration,
}

impl Timeouts {
    pub const DEFAULT: Timeouts = Timeouts {
        io: Duration::from_secs(60),
        control: Duration::from_secs(10),
    };

    /// `timeout=SECS`: data requests get `SECS`, the others the smaller of
    /// `SECS` and 10 s.
    pub fn from_secs(secs: f64) -> Option<Timeouts> {
        if !(secs.is_finite() && secs > 0.0) {
            return None;
        }
        let io = Duration::from_secs_f64(secs);
        Some(Timeouts {
            io,
            control: io.min(Timeouts::DEFAULT.control),
        })
    }
}

/// How the service makes writes atomic and `write_new` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteMode {
    /// Whole-object PUT (object stores): atomic as it is.
    Put,
    /// Write a temporary object beside the target, then rename it.
    TempRename,
}

pub struct OpendalBackend {
    op: Operator,
    runtime: tokio::runtime::Runtime,
    /// For messages: never holds a secret.
    location: String,
    concurrency: usize,
    write_mode: WriteMode,
    /// The service creates an object only if none exists, atomically.
    conditional_create: bool,
    /// The service has directories (create them in `create`).
    has_dirs: bool,
}

impl fmt::Debug for OpendalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The operator's Debug may show configuration; the location is enough.
        f.debug_struct("OpendalBackend")
            .field("location", &self.location)
            .field("scheme", &self.op.info().scheme())
            .finish_non_exhaustive()
    }
}

const TMP_PREFIX: &str = ".tmp-";

/// Worker threads of the runtime: the engine's threads do the waiting, the
/// runtime only drives sockets, so two are plenty.
const RUNTIME_THREADS: usize = 2;

impl OpendalBackend {
    /// Wraps an operator built by `s3`, `sftp` or the generic `opendal:`
    /// path. `location` is what messages show; `concurrency` the hint the
    /// engine gets.
    pub fn new(
        op: Operator,
        location: String,
        timeouts: Timeouts,
        concurrency: usize,
    ) -> BackendResult<OpendalBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("snap-remote")
            .enable_all()
            .build()
            .map_err(|error| BackendError::Io {
                op: "start the network runtime for",
                what: location.clone(),
                error,
            })?;
        // The timeout layer needs the runtime's timer; it is applied here,
        // outermost, so a stalled server fails the request, not the process.
        let op = op.layer(
            TimeoutLayer::new()
                .with_timeout(timeouts.control)
                .with_io_timeout(timeouts.io),
        );
        let cap = op.info().capability();
        let write_mode = if cap.rename {
            WriteMode::TempRename
        } else {
            WriteMode::Put
        };
        Ok(OpendalBackend {
            conditional_create: cap.write_with_if_not_exists,
            // Object stores "create" directories as empty `dir/` objects:
            // only services that rename have real ones worth making.
            has_dirs: cap.create_dir && cap.rename,
            op,
            runtime,
            location,
            concurrency: concurrency.max(1),
            write_mode,
        })
    }

    /// Runs one future to completion on the backend's runtime.
    fn block_on<T>(&self, what: &str, fut: impl Future<Output = BackendResult<T>>) -> BackendResult<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // block_on inside a runtime panics; say what went wrong instead.
            return Err(BackendError::Remote {
                op: "use",
                what: format!("{} ({what})", self.location),
                reason: "the storage client was called from inside an async runtime".into(),
            });
        }
        self.runtime.block_on(fut)
    }

    fn what(&self, path: &str) -> String {
        format!("{}/{path}", self.location.trim_end_matches('/'))
    }

    /// Maps an OpenDAL error to snap's kinds. The reason is one line and
    /// built from the error's kind and message only: OpenDAL's `Display`
    /// adds request context (URIs, response headers) that can run long.
    fn map_err(&self, op: &'static str, kind: ObjectKind, name: &str, path: &str, e: opendal::Error) -> BackendError {
        match e.kind() {
            ErrorKind::NotFound => BackendError::NotFound {
                kind: kind.name(),
                name: name.to_string(),
            },
            ErrorKind::AlreadyExists | ErrorKind::ConditionNotMatch => BackendError::AlreadyExists {
                kind: kind.name(),
                name: name.to_string(),
            },
            _ if e.is_temporary() || e.kind() == ErrorKind::RateLimited => BackendError::Transient {
                op,
                what: self.what(path),
                reason: reason_of(&e),
            },
            _ => BackendError::Remote {
                op,
                what: self.what(path),
                reason: reason_of(&e),
            },
        }
    }

    fn tmp_path(path: &str) -> String {
        let mut random = [0u8; 8];
        snap_core::crypto::fill_random(&mut random);
        let mut hex = String::with_capacity(16);
        for b in random {
            let _ = write!(hex, "{b:02x}");
        }
        match path.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{TMP_PREFIX}{hex}"),
            None => format!("{TMP_PREFIX}{hex}"),
        }
    }

    /// Writes through a temporary name and a rename. `exclusive`: fail with
    /// `AlreadyExists` if the target exists, checked before the rename: a
    /// writer racing inside that window can replace the object (weaker than
    /// the local backend's hard link; docs/format.md §14).
    async fn write_via_rename(
        &self,
        kind: ObjectKind,
        name: &str,
        path: &str,
        data: &[u8],
        exclusive: bool,
    ) -> BackendResult<()> {
        let op = &self.op;
        if exclusive
            && op
                .exists(path)
                .await
                .map_err(|e| self.map_err("stat", kind, name, path, e))?
        {
            return Err(BackendError::AlreadyExists {
                kind: kind.name(),
                name: name.to_string(),
            });
        }
        let tmp = Self::tmp_path(path);
        op.write(&tmp, data.to_vec())
            .await
            .map_err(|e| self.map_err("write", kind, name, path, e))?;
        match op.rename(&tmp, path).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = op.delete(&tmp).await;
                // A server whose rename refuses an existing target (SFTP
                // without posix-rename): for `write` the object is there
                // already with the same bytes (names are content hashes or
                // random); for `write_new` someone else won.
                match op.exists(path).await {
                    Ok(true) if exclusive => Err(BackendError::AlreadyExists {
                        kind: kind.name(),
                        name: name.to_string(),
                    }),
                    Ok(true) => Ok(()),
                    _ => Err(self.map_err("write", kind, name, path, e)),
                }
            }
        }
    }
}

/// Registers the services compiled in and OpenDAL's HTTP client, once per
/// process (the crate's automatic registration is off, to keep its
/// constructor from running before `main`).
pub(crate) fn install_defaults() {
    ::opendal::install_default();
}

/// The services this build has, for `opendal:SCHEME`.
pub const SCHEMES: &[&str] = &["fs", "s3", "sftp", "memory"];

/// `opendal:SCHEME` with `-o key=value`: any service compiled in, configured
/// by OpenDAL's own option names (`-o root=/srv/repo` for `fs`). snap's
/// `timeout` and `connections` are taken out first; everything else goes to
/// the service builder as it is. Less tested than `s3:` and `sftp:`.
pub fn open_scheme(scheme: &str, options: &Options) -> Result<Arc<dyn Backend>, LocationError> {
    if !SCHEMES.contains(&scheme) {
        return Err(LocationError::Unsupported(format!(
            "this build of snap has no OpenDAL service {scheme:?} (it has: {})",
            SCHEMES.join(", ")
        )));
    }
    let mut timeouts = Timeouts::DEFAULT;
    let mut concurrency = 4;
    let mut config = Vec::new();
    let mut root = None;
    for (key, value) in options {
        match key.as_str() {
            "timeout" => timeouts = crate::s3::parse_timeout(value)?,
            "connections" => concurrency = crate::s3::parse_connections(value)?,
            _ => {
                if key == "root" {
                    root = Some(value.clone());
                }
                config.push((key.clone(), value.clone()));
            }
        }
    }
    install_defaults();
    let op = Operator::via_iter(scheme, config)
        .map_err(|e| LocationError::Unsupported(format!("cannot use opendal:{scheme}: {}", reason_of(&e))))?;
    // Only the root is shown: other options may hold secrets.
    let location = match root {
        Some(root) => format!("opendal:{scheme}:{root}"),
        None => format!("opendal:{scheme}"),
    };
    Ok(Arc::new(OpendalBackend::new(op, location, timeouts, concurrency)?))
}

/// One line, no secrets: the kind and the service's message (for S3, the
/// error code and message out of the XML body), and the innermost cause
/// (e.g. "Connection refused").
fn reason_of(e: &opendal::Error) -> String {
    let mut reason = match e.kind() {
        ErrorKind::PermissionDenied => "permission denied".to_string(),
        ErrorKind::ConfigInvalid => "invalid configuration".to_string(),
        ErrorKind::Unsupported => "not supported by the service".to_string(),
        ErrorKind::RateLimited => "rate limited".to_string(),
        _ => String::new(),
    };
    let message = s3_message(e.message()).unwrap_or_else(|| e.message().to_string());
    let message = message.trim();
    if !message.is_empty() {
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(message);
    }
    let mut cause = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    if let Some(c) = innermost {
        if !c.is_empty() && !reason.contains(&c) {
            reason.push_str(": ");
            reason.push_str(&c);
        }
    }
    let mut line: String = reason
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > 300 {
        line = line.chars().take(300).collect::<String>() + "...";
    }
    if line.is_empty() {
        line = format!("{:?}", e.kind());
    }
    line
}

/// OpenDAL's S3 service puts the error body's `Debug` in the message
/// (`S3Error { code: "NoSuchBucket", message: "...", ... }`): keep the code
/// and the message, drop the request ids.
fn s3_message(message: &str) -> Option<String> {
    if !message.starts_with("S3Error") {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        let start = message.find(&format!("{name}: \""))? + name.len() + 3;
        let rest = &message[start..];
        let end = rest.find('"')?;
        Some(rest[..end].to_string())
    };
    let code = field("code")?;
    match field("message") {
        Some(text) if !text.is_empty() => Some(format!("{text} ({code})")),
        _ => Some(code),
    }
}

/// The object's path inside the operator's root.
fn dir_of(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => "",
        ObjectKind::Key => "keys/",
        ObjectKind::Pack => "data/",
        ObjectKind::Index => "index/",
        ObjectKind::Snapshot => "snapshots/",
        ObjectKind::Lock => "locks/",
    }
}

fn path_of(kind: ObjectKind, name: &str) -> BackendResult<String> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(BackendError::Io {
            op: "use object name",
            what: name.to_string(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid object name"),
        });
    }
    Ok(match kind {
        ObjectKind::Config => "config".to_string(),
        ObjectKind::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("xx")),
        _ => format!("{}{name}", dir_of(kind)),
    })
}

impl Backend for OpendalBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn create(&self) -> BackendResult<()> {
        self.block_on("create", async {
            if !self.has_dirs {
                // Object stores have no directories; a missing bucket shows
                // at the first write.
                return Ok(());
            }
            // Pack directories `data/XX/` are made by the first write into
            // each (the services that have directories create parents).
            for dir in ["keys/", "data/", "index/", "snapshots/", "locks/"] {
                self.op
                    .create_dir(dir)
                    .await
                    .map_err(|e| self.map_err("create", ObjectKind::Config, dir, dir, e))?;
            }
            Ok(())
        })
    }

    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
        let path = path_of(kind, name)?;
        self.block_on("read", async {
            let buf = self
                .op
                .read(&path)
                .await
                .map_err(|e| self.map_err("read", kind, name, &path, e))?;
            Ok(buf.to_vec())
        })
    }

    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let path = path_of(kind, name)?;
        let end = offset.saturating_add(len);
        self.block_on("read", async {
            let short = |size: u64| BackendError::ShortRead {
                kind: kind.name(),
                name: name.to_string(),
                offset,
                end,
                size,
            };
            let size_now = || async {
                let meta = self
                    .op
                    .stat(&path)
                    .await
                    .map_err(|e| self.map_err("stat", kind, name, &path, e))?;
                Ok::<u64, BackendError>(meta.content_length())
            };
            if len == 0 {
                // An empty HTTP range is not expressible; still check that
                // the object exists and is long enough.
                let size = size_now().await?;
                return if offset > size {
                    Err(short(size))
                } else {
                    Ok(Vec::new())
                };
            }
            match self.op.read_with(&path).range(offset..end).await {
                Ok(buf) if buf.len() as u64 == len => Ok(buf.to_vec()),
                // A server may answer a range past the end with what it
                // has: the size tells the caller how short the object is.
                Ok(_) => Err(short(size_now().await?)),
                Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => Err(short(size_now().await?)),
                Err(e) => Err(self.map_err("read", kind, name, &path, e)),
            }
        })
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        let path = path_of(kind, name)?;
        self.block_on("write", async {
            match self.write_mode {
                WriteMode::Put => self
                    .op
                    .write(&path, data.to_vec())
                    .await
                    .map(|_| ())
                    .map_err(|e| self.map_err("write", kind, name, &path, e)),
                WriteMode::TempRename => self.write_via_rename(kind, name, &path, data, false).await,
            }
        })
    }

    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        let path = path_of(kind, name)?;
        self.block_on("write", async {
            if self.write_mode == WriteMode::TempRename {
                // Whole or nothing comes first: a conditional create on
                // these services (O_EXCL) would expose a partial object.
                return self.write_via_rename(kind, name, &path, data, true).await;
            }
            if self.conditional_create {
                // S3's `If-None-Match: *`: of racing writers exactly one wins.
                return self
                    .op
                    .write_with(&path, data.to_vec())
                    .if_not_exists(true)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.map_err("write", kind, name, &path, e));
            }
            // Weaker: check, then write. Two writers racing inside one round
            // trip can both succeed (docs/format.md §14).
            if self
                .op
                .exists(&path)
                .await
                .map_err(|e| self.map_err("stat", kind, name, &path, e))?
            {
                return Err(BackendError::AlreadyExists {
                    kind: kind.name(),
                    name: name.to_string(),
                });
            }
            self.op
                .write(&path, data.to_vec())
                .await
                .map(|_| ())
                .map_err(|e| self.map_err("write", kind, name, &path, e))
        })
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        let path = path_of(kind, name)?;
        self.block_on("delete", async {
            // S3 deletes are idempotent, but a lock holder learns that its
            // lock was removed by another process from NotFound.
            if kind == ObjectKind::Lock
                && !self
                    .op
                    .exists(&path)
                    .await
                    .map_err(|e| self.map_err("stat", kind, name, &path, e))?
            {
                return Err(BackendError::NotFound {
                    kind: kind.name(),
                    name: name.to_string(),
                });
            }
            self.op
                .delete(&path)
                .await
                .map_err(|e| self.map_err("delete", kind, name, &path, e))
        })
    }

    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        self.block_on("list", async {
            if kind == ObjectKind::Config {
                return match self.op.stat("config").await {
                    Ok(meta) => Ok(vec![ObjectInfo {
                        name: "config".into(),
                        size: meta.content_length(),
                    }]),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
                    Err(e) => Err(self.map_err("stat", kind, "config", "config", e)),
                };
            }
            let dir = dir_of(kind);
            // Packs sit one level down (data/XX/); OpenDAL pages through
            // the listing (S3 returns 1,000 keys per request).
            let entries = match self.op.list_with(dir).recursive(kind == ObjectKind::Pack).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(self.map_err("list", kind, dir, dir, e)),
            };
            let mut out = Vec::new();
            for entry in entries {
                if entry.metadata().mode() != EntryMode::FILE {
                    continue;
                }
                let name = entry.name().trim_end_matches('/');
                let name = name.rsplit('/').next().unwrap_or(name);
                if name.is_empty() || name.starts_with('.') {
                    continue;
                }
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: entry.metadata().content_length(),
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        let path = path_of(kind, name)?;
        self.block_on("stat", async {
            self.op
                .exists(&path)
                .await
                .map_err(|e| self.map_err("stat", kind, name, &path, e))
        })
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<SystemTime>> {
        let path = path_of(kind, name)?;
        self.block_on("stat", async {
            let meta = self
                .op
                .stat(&path)
                .await
                .map_err(|e| self.map_err("stat", kind, name, &path, e))?;
            Ok(meta.last_modified().map(SystemTime::from))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_messages_keep_code_and_text() {
        assert_eq!(
            s3_message(r#"S3Error { code: "NoSuchBucket", message: "The specified bucket does not exist", resource: "", request_id: "x" }"#).as_deref(),
            Some("The specified bucket does not exist (NoSuchBucket)")
        );
        assert_eq!(s3_message("plain"), None);
    }

    #[test]
    fn timeouts_from_option() {
        assert_eq!(
            Timeouts::from_secs(2.0),
            Some(Timeouts {
                io: Duration::from_secs(2),
                control: Duration::from_secs(2)
            })
        );
        assert_eq!(Timeouts::from_secs(120.0).unwrap().control, Duration::from_secs(10));
        assert_eq!(Timeouts::from_secs(0.0), None);
        assert_eq!(Timeouts::from_secs(f64::NAN), None);
    }

    #[test]
    fn paths_follow_the_local_layout() {
        let id = "ab".repeat(32);
        assert_eq!(path_of(ObjectKind::Pack, &id).unwrap(), format!("data/ab/{id}"));
        assert_eq!(path_of(ObjectKind::Config, "config").unwrap(), "config");
        assert_eq!(path_of(ObjectKind::Lock, &id).unwrap(), format!("locks/{id}"));
        assert!(path_of(ObjectKind::Index, "../config").is_err());
        assert!(path_of(ObjectKind::Index, ".tmp-1").is_err());
    }
}
