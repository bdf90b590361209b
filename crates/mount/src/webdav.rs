//! `snap webdav`: the vfs over WebDAV (the `dav-server` crate on hyper),
//! read-only.
//!
//! Only GET, HEAD, OPTIONS and PROPFIND are allowed (every other method is
//! 405, and the filesystem refuses writes with 403 besides). The vfs is
//! blocking (it reads packs and decrypts), so each call runs on tokio's
//! blocking pool. Symbolic links are shown as small files holding their
//! target (WebDAV has no links); fifos, devices and sockets are left out.

use std::io::SeekFrom;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError, FsFuture, FsResult, FsStream, OpenOptions, ReadDirMeta,
};
use dav_server::{DavHandler, DavMethodSet};
use futures_util::FutureExt;
use snap_core::tree::NodeKind;
use snap_core::vfs::{Entry, OpenFile, Vfs};

/// How `snap webdav` serves.
#[derive(Clone, Debug)]
pub struct WebdavOptions {
    /// HOST:PORT (port 0: any free port).
    pub listen: String,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt).
    pub htpasswd: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebdavError {
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error("{reason}")]
    Htpasswd { path: PathBuf, reason: String },
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
}

fn fs_error(e: &snap_core::Error) -> FsError {
    tracing::warn!("{e}");
    FsError::GeneralFailure
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Whether WebDAV shows an entry at all.
fn shown(e: &Entry) -> bool {
    matches!(e.kind, NodeKind::File | NodeKind::Dir | NodeKind::Symlink)
}

#[derive(Clone, Debug)]
struct Meta(Entry);

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(time(self.0.mtime_ns))
    }
    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }
    fn etag(&self) -> Option<String> {
        Some(self.0.etag())
    }
    fn executable(&self) -> FsResult<bool> {
        Ok(self.0.kind == NodeKind::File && self.0.mode & 0o111 != 0)
    }
    fn status_changed(&self) -> FsResult<SystemTime> {
        Ok(time(self.0.ctime_ns))
    }
}

struct DirEntry(Entry);

impl DavDirEntry for DirEntry {
    fn name(&self) -> Vec<u8> {
        self.0.name.clone()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(Meta(self.0.clone()));
        Box::pin(std::future::ready(Ok(meta)))
    }
}

/// An open file: its content (a symlink: its target) and the position.
#[derive(Debug)]
enum Content {
    File(Arc<OpenFile>),
    Link(Bytes),
}

#[derive(Debug)]
struct File {
    vfs: Arc<Vfs>,
    entry: Entry,
    content: Content,
    pos: u64,
}

impl DavFile for File {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(Meta(self.entry.clone()));
        Box::pin(std::future::ready(Ok(meta)))
    }
    fn write_buf(&mut self, _buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }
    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        let pos = self.pos;
        match &self.content {
            Content::Link(target) => {
                let from = (pos as usize).min(target.len());
                let to = from.saturating_add(count).min(target.len());
                self.pos = to as u64;
                Box::pin(std::future::ready(Ok(target.slice(from..to))))
            }
            Content::File(file) => {
                let (vfs, file) = (self.vfs.clone(), file.clone());
                async move {
                    let data = tokio::task::spawn_blocking(move || vfs.read(&file, pos, count))
                        .await
                        .map_err(|_| FsError::GeneralFailure)?
                        .map_err(|e| fs_error(&e))?;
                    self.pos = pos + data.len() as u64;
                    Ok(Bytes::from(data))
                }
                .boxed()
            }
        }
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let size = self.entry.size as i128;
        let to = match pos {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(n) => size + n as i128,
            SeekFrom::Current(n) => self.pos as i128 + n as i128,
        };
        let result = if (0..=u64::MAX as i128).contains(&to) {
            self.pos = to as u64;
            Ok(self.pos)
        } else {
            Err(FsError::GeneralFailure)
        };
        Box::pin(std::future::ready(result))
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The vfs as a dav-server filesystem.
#[derive(Clone)]
struct SnapDav {
    vfs: Arc<Vfs>,
}

impl SnapDav {
    /// The entry at a request path, on the blocking pool.
    async fn entry(&self, path: &DavPath) -> FsResult<Entry> {
        let vfs = self.vfs.clone();
        let bytes = path.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            let components: Vec<Vec<u8>> = bytes
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty() && *c != b".")
                .map(<[u8]>::to_vec)
                .collect();
            if components.iter().any(|c| c == b"..") {
                return Err(FsError::Forbidden);
            }
            match vfs.lookup_path(&components) {
                Ok(Some(e)) if shown(&e) || e.name.is_empty() => Ok(e),
                Ok(_) => Err(FsError::NotFound),
                Err(e) => Err(fs_error(&e)),
            }
        })
        .await
        .map_err(|_| FsError::GeneralFailure)?
    }
}

impl DavFileSystem for SnapDav {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write || options.append || options.truncate || options.create || options.create_new {
                return Err(FsError::Forbidden);
            }
            let entry = self.entry(path).await?;
            let content = match entry.kind {
                NodeKind::Symlink => Content::Link(Bytes::from(entry.link_target.clone())),
                NodeKind::File => {
                    let (vfs, e) = (self.vfs.clone(), entry.clone());
                    let file = tokio::task::spawn_blocking(move || vfs.open(&e))
                        .await
                        .map_err(|_| FsError::GeneralFailure)?
                        .map_err(|e| fs_error(&e))?;
                    Content::File(Arc::new(file))
                }
                _ => return Err(FsError::Forbidden),
            };
            let file: Box<dyn DavFile> = Box::new(File {
                vfs: self.vfs.clone(),
                entry,
                content,
                pos: 0,
            });
            Ok(file)
        }
        .boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, _meta: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let dir = self.entry(path).await?;
            if !dir.is_dir() {
                return Err(FsError::Forbidden);
            }
            let vfs = self.vfs.clone();
            let entries = tokio::task::spawn_blocking(move || vfs.list(&dir))
                .await
                .map_err(|_| FsError::GeneralFailure)?
                .map_err(|e| fs_error(&e))?;
            let items: Vec<FsResult<Box<dyn DavDirEntry>>> = entries
                .into_iter()
                .filter(shown)
                .map(|e| Ok(Box::new(DirEntry(e)) as Box<dyn DavDirEntry>))
                .collect();
            let stream: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures_util::stream::iter(items));
            Ok(stream)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let meta: Box<dyn DavMetaData> = Box::new(Meta(self.entry(path).await?));
            Ok(meta)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, _path: &'a DavPath) -> FsFuture<'a, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }
    fn remove_dir<'a>(&'a self, _path: &'a DavPath) -> FsFuture<'a, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }
    fn remove_file<'a>(&'a self, _path: &'a DavPath) -> FsFuture<'a, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }
    fn rename<'a>(&'a self, _from: &'a DavPath, _to: &'a DavPath) -> FsFuture<'a, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }
    fn copy<'a>(&'a self, _from: &'a DavPath, _to: &'a DavPath) -> FsFuture<'a, ()> {
        Box::pin(std::future::ready(Err(FsError::Forbidden)))
    }
}

/// Serves `vfs` until `cancel` is set. `ready` gets the bound address.
pub fn serve(
    vfs: Arc<Vfs>,
    options: WebdavOptions,
    cancel: &'static AtomicBool,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), WebdavError> {
    let users = match &options.htpasswd {
        Some(path) => Some(Arc::new(snap_server::Htpasswd::load(path).map_err(|e| {
            WebdavError::Htpasswd {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?)),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(WebdavError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .map_err(|error| WebdavError::Listen {
                addr: options.listen.clone(),
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| WebdavError::Listen {
            addr: options.listen.clone(),
            error,
        })?;
        let handler = DavHandler::builder()
            .filesystem(Box::new(SnapDav { vfs }))
            .methods(DavMethodSet::WEBDAV_RO)
            .read_buf_size(256 << 10)
            .autoindex(true)
            .build_handler();
        ready(addr);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = wait_for(cancel) => return Ok(()),
            };
            let Ok((stream, _)) = accepted else { continue };
            let handler = handler.clone();
            let users = users.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let users = users.clone();
                    async move {
                        if let Some(refused) = screen(&req, addr) {
                            return Ok::<_, std::convert::Infallible>(refused);
                        }
                        let req = limit_ranges(req);
                        if let Some(users) = &users {
                            let given = req
                                .headers()
                                .get(http::header::AUTHORIZATION)
                                .and_then(|v| v.to_str().ok());
                            if users.check(given).is_none() {
                                return Ok::<_, std::convert::Infallible>(unauthorized());
                            }
                        }
                        Ok(handler.handle(req).await)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("webdav connection: {e}");
                }
            });
        }
    })
}

/// Most ranges a GET may ask for; past that the Range header is dropped and
/// the whole file is sent once (RFC 9110 lets a server ignore Range), since
/// dav-server reads the file once per range (`bytes=0-,0-,...`).
const MAX_RANGES: usize = 16;

/// Refusals made before dav-server sees a request: a Host that is not a
/// loopback name on a loopback listen (a web page reaching us by DNS
/// rebinding sends its own name; 421), and a PROPFIND of unbounded depth
/// (dav-server walks the whole tree for it when an `X-Litmus` header is
/// present, whatever that header holds; 403 with the RFC 4918 precondition).
fn screen<B>(req: &http::Request<B>, addr: SocketAddr) -> Option<http::Response<dav_server::body::Body>> {
    if addr.ip().is_loopback() && !host_ok(req.headers(), addr.port()) {
        return Some(refusal(
            http::StatusCode::MISDIRECTED_REQUEST,
            "421: Host is not a loopback name\n",
        ));
    }
    let depth = req
        .headers()
        .get("depth")
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    let unbounded = match depth.as_deref() {
        Some("infinity") => true,
        // RFC 4918: a PROPFIND without Depth means infinity.
        None => req.method().as_str() == "PROPFIND",
        Some(_) => false,
    };
    if unbounded {
        let mut response = refusal(
            http::StatusCode::FORBIDDEN,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n",
        );
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml; charset=utf-8"),
        );
        return Some(response);
    }
    None
}

/// Whether the Host header names this loopback server: localhost,
/// 127.0.0.1 or [::1], with our port or none.
fn host_ok(headers: &http::HeaderMap, port: u16) -> bool {
    let Some(host) = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        Some((name, p)) if !host.ends_with(']') => {
            if p != port.to_string() {
                return false;
            }
            name
        }
        _ => host.as_str(),
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// The request without its Range header when it asks for too many ranges.
fn limit_ranges<B>(mut req: http::Request<B>) -> http::Request<B> {
    let too_many = req
        .headers()
        .get_all(http::header::RANGE)
        .iter()
        .map(|v| v.as_bytes().iter().filter(|&&b| b == b',').count() + 1)
        .sum::<usize>()
        > MAX_RANGES;
    if too_many {
        req.headers_mut().remove(http::header::RANGE);
    }
    req
}

fn refusal(status: http::StatusCode, body: &'static str) -> http::Response<dav_server::body::Body> {
    let mut response = http::Response::new(dav_server::body::Body::from(body));
    *response.status_mut() = status;
    response
}

fn unauthorized() -> http::Response<dav_server::body::Body> {
    let mut response = http::Response::new(dav_server::body::Body::from("credentials required\n"));
    *response.status_mut() = http::StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"snap\""),
    );
    response
}

async fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
