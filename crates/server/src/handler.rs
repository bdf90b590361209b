//! One request: authenticate, parse the target (`route`), then read, list,
//! store or delete through a [`LocalBackend`], with the checks that make the
//! server safe for clients it does not trust (docs/rest-protocol.md §4).

// The error of a request step is the answer to send, built once per
// refused request: its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use snap_core::backend::{Backend, BackendError, LocalBackend, ObjectInfo, ObjectKind};

use crate::auth::Htpasswd;
use crate::route::{self, Resource, Target};

/// The protocol version this server speaks, sent on every answer.
pub const PROTOCOL_VERSION: &str = "1";
pub const VERSION_HEADER: &str = "snap-protocol";
/// Sent on every answer of an append-only server, so that clients can
/// refuse deleting operations before they start.
pub const APPEND_ONLY_HEADER: &str = "snap-append-only";
/// A client's `write_new`: fail with 409 if the object exists, even with
/// identical bytes.
pub const CREATE_HEADER: &str = "snap-create";
pub const LIST_MEDIA_TYPE: &str = "application/vnd.snap.rest.v1+json";

/// The largest upload of each kind. Packs: the largest `--pack-size` (1 GiB)
/// plus one more chunk (at most 8 MiB) and the header. The others are a
/// few hundred bytes (config, key, lock) or a few KiB to MiB (snapshots,
/// index files of up to 2,000 packs).
pub fn size_cap(kind: ObjectKind) -> u64 {
    match kind {
        ObjectKind::Pack => (1 << 30) + (16 << 20),
        ObjectKind::Index => 512 << 20,
        ObjectKind::Snapshot => 16 << 20,
        ObjectKind::Config | ObjectKind::Key | ObjectKind::Lock => 64 << 10,
    }
}

pub struct State {
    root: PathBuf,
    append_only: bool,
    private_repos: bool,
    htpasswd: Option<Htpasswd>,
    /// Locks written through this process, and by whom: in append-only mode
    /// the only objects a client may delete.
    lock_owners: Mutex<HashMap<(PathBuf, String), Option<String>>>,
}

impl State {
    pub fn new(root: PathBuf, append_only: bool, private_repos: bool, htpasswd: Option<Htpasswd>) -> State {
        State {
            root,
            append_only,
            private_repos,
            htpasswd,
            lock_owners: Mutex::new(HashMap::new()),
        }
    }
}

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .fallback(move |ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request| {
            let state = state.clone();
            async move { handle(state, peer, request).await }
        })
        // Uploads are read frame by frame against the kind's cap (`store`).
        .layer(DefaultBodyLimit::disable())
}

fn text(status: StatusCode, message: &str) -> Response {
    let mut response = Response::new(Body::from(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

async fn handle(state: Arc<State>, peer: SocketAddr, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (user, mut response) = match authenticate(&state, request.headers()) {
        Ok(user) => {
            let response = dispatch(&state, user.as_deref(), request).await;
            (user, response)
        }
        Err(response) => (None, response),
    };
    let headers = response.headers_mut();
    headers.insert(VERSION_HEADER, HeaderValue::from_static(PROTOCOL_VERSION));
    if state.append_only {
        headers.insert(APPEND_ONLY_HEADER, HeaderValue::from_static("true"));
    }
    // Never the Authorization header; the path is validated or refused.
    tracing::info!(
        peer = %peer,
        user = user.as_deref().unwrap_or("-"),
        "{method} {path:?} {}",
        response.status().as_u16()
    );
    response
}

/// The user, or the 401 answer (no detail: which part was wrong is not
/// the client's business).
fn authenticate(state: &State, headers: &HeaderMap) -> Result<Option<String>, Response> {
    let Some(htpasswd) = &state.htpasswd else {
        return Ok(None);
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match htpasswd.check(authorization) {
        Some(user) => Ok(Some(user)),
        None => {
            let mut response = empty(StatusCode::UNAUTHORIZED);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"snap\""),
            );
            Err(response)
        }
    }
}

async fn dispatch(state: &Arc<State>, user: Option<&str>, request: Request) -> Response {
    let Some(target) = route::parse(request.uri().path()) else {
        return text(StatusCode::BAD_REQUEST, "invalid path");
    };
    if state.private_repos && target.repo.as_deref() != user {
        return text(StatusCode::FORBIDDEN, "this repository belongs to another user");
    }
    let repo_dir = match &target.repo {
        Some(name) => state.root.join(name),
        None => state.root.clone(),
    };
    let method = request.method().clone();
    let create = request.uri().query() == Some("create=true");
    // Reads of a repository not made yet answer as an empty one would
    // (`init` looks before it creates); writes need it made.
    let writes = method == Method::DELETE || (method == Method::POST && target.resource != Resource::Repository);
    if writes && !repo_dir.is_dir() {
        return text(StatusCode::NOT_FOUND, "no repository here");
    }
    let backend = LocalBackend::new(repo_dir.clone());
    match (&method, &target.resource) {
        (&Method::POST, Resource::Repository) if create => {
            blocking(move || backend.create().map(|()| empty(StatusCode::OK))).await
        }
        (&Method::GET, Resource::List(kind)) => {
            let kind = *kind;
            blocking(move || {
                let listed = backend.list(kind)?;
                Ok(list_response(&listed))
            })
            .await
        }
        (&Method::HEAD, Resource::Object(kind, name)) | (&Method::GET, Resource::Object(kind, name)) => {
            let (kind, name) = (*kind, name.clone());
            let head = method == Method::HEAD;
            let range = request.headers().get(header::RANGE).cloned();
            blocking(move || read(&backend, kind, &name, head, range.as_ref())).await
        }
        (&Method::POST, Resource::Object(kind, name)) => store(state, user, &target, *kind, name, request).await,
        (&Method::DELETE, Resource::Object(kind, name)) => delete(state, user, &repo_dir, backend, *kind, name).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

/// Runs a blocking storage call off the async workers, mapping its error.
async fn blocking(f: impl FnOnce() -> Result<Response, BackendError> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => backend_error(&e),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

fn backend_error(e: &BackendError) -> Response {
    match e {
        BackendError::NotFound { .. } => text(StatusCode::NOT_FOUND, "no such object"),
        BackendError::AlreadyExists { .. } => text(StatusCode::CONFLICT, "the object exists"),
        BackendError::ShortRead { .. } => text(StatusCode::RANGE_NOT_SATISFIABLE, "range beyond the object"),
        other => {
            // The client learns that the server failed, not its paths.
            tracing::error!("{other}");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server cannot access its storage",
            )
        }
    }
}

fn list_response(listed: &[ObjectInfo]) -> Response {
    let entries: Vec<serde_json::Value> = listed
        .iter()
        .filter(|info| info.name == "config" || route::valid_object_name(&info.name))
        .map(|info| serde_json::json!({ "name": info.name, "size": info.size }))
        .collect();
    let mut response = Response::new(Body::from(serde_json::Value::Array(entries).to_string()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(LIST_MEDIA_TYPE));
    response
}

/// `bytes=START-END` (inclusive), the one form clients send.
fn parse_range(value: &HeaderValue) -> Option<(u64, u64)> {
    let spec = value.to_str().ok()?.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = end.parse().ok()?;
    (end >= start).then_some((start, end))
}

fn read(
    backend: &LocalBackend,
    kind: ObjectKind,
    name: &str,
    head: bool,
    range: Option<&HeaderValue>,
) -> Result<Response, BackendError> {
    let path = backend.path(kind, name);
    let meta = std::fs::metadata(&path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => BackendError::NotFound {
            kind: kind.name(),
            name: name.to_string(),
        },
        _ => BackendError::Io {
            op: "stat",
            what: path.display().to_string(),
            error,
        },
    })?;
    if !meta.is_file() {
        return Err(BackendError::NotFound {
            kind: kind.name(),
            name: name.to_string(),
        });
    }
    let size = meta.len();
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let mut response = if head {
        let mut response = empty(StatusCode::OK);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        response
    } else if let Some(range) = range {
        let Some((start, end)) = parse_range(range) else {
            return Ok(text(StatusCode::BAD_REQUEST, "unsupported Range header"));
        };
        if end >= size {
            let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "range beyond the object");
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
        let bytes = backend.read_range(kind, name, start, end - start + 1)?;
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    } else {
        Response::new(Body::from(backend.read(kind, name)?))
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    Ok(response)
}

/// Reads the whole body, refusing more than `cap` bytes or a body that
/// ends before its Content-Length (the connection dropped): then nothing
/// is stored.
async fn read_body(request: Request, cap: u64) -> Result<Vec<u8>, Response> {
    let declared = match request.headers().get(header::CONTENT_LENGTH) {
        Some(value) => match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => return Err(text(StatusCode::BAD_REQUEST, "invalid Content-Length")),
        },
        None => None,
    };
    if declared.is_some_and(|n| n > cap) {
        return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "object too large for its kind"));
    }
    let mut body = request.into_body();
    // The declared length bounds the allocation only after it was checked
    // against the cap.
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| text(StatusCode::BAD_REQUEST, "the upload was cut short"))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > cap {
                return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "object too large for its kind"));
            }
            buf.extend_from_slice(&data);
        }
    }
    if declared.is_some_and(|n| n != buf.len() as u64) {
        return Err(text(StatusCode::BAD_REQUEST, "the upload was cut short"));
    }
    Ok(buf)
}

async fn store(
    state: &Arc<State>,
    user: Option<&str>,
    target: &Target,
    kind: ObjectKind,
    name: &str,
    request: Request,
) -> Response {
    let exclusive = request
        .headers()
        .get(CREATE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"exclusive");
    let data = match read_body(request, size_cap(kind)).await {
        Ok(data) => data,
        Err(response) => return response,
    };
    if route::named_by_hash(kind) && hex::encode(blake3::hash(&data).as_bytes()) != name {
        return text(
            StatusCode::BAD_REQUEST,
            "the object's name is not the BLAKE3 hash of its bytes",
        );
    }
    let repo_dir = match &target.repo {
        Some(repo) => state.root.join(repo),
        None => state.root.clone(),
    };
    let backend = LocalBackend::new(repo_dir.clone());
    let name = name.to_string();
    let owner = user.map(str::to_string);
    let state = state.clone();
    blocking(move || {
        let path = backend.path(kind, &name);
        if kind == ObjectKind::Pack {
            // As LocalBackend::write: `data/XX` may have been removed by hand.
            if let Some(dir) = path.parent() {
                use std::os::unix::fs::DirBuilderExt;
                let _ = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(backend.modes().dir)
                    .create(dir);
            }
        }
        // Create-only, atomically (a hard link that fails on an existing
        // name): the server never replaces an object, whatever it is sent.
        match backend.write_new(kind, &name, &data) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { .. }) => {
                let same = if exclusive || kind == ObjectKind::Config {
                    false
                } else if route::named_by_hash(kind) {
                    // Its name is the hash just checked: the bytes are these.
                    true
                } else {
                    backend.read(kind, &name).is_ok_and(|existing| existing == data)
                };
                return Ok(if same {
                    empty(StatusCode::OK)
                } else {
                    text(StatusCode::CONFLICT, "the object exists; the server never replaces one")
                });
            }
            Err(e) => return Err(e),
        }
        if kind == ObjectKind::Lock {
            if let Ok(mut owners) = state.lock_owners.lock() {
                owners.insert((repo_dir, name), owner);
            }
        }
        Ok(empty(StatusCode::CREATED))
    })
    .await
}

async fn delete(
    state: &Arc<State>,
    user: Option<&str>,
    repo_dir: &std::path::Path,
    backend: LocalBackend,
    kind: ObjectKind,
    name: &str,
) -> Response {
    if kind == ObjectKind::Config {
        return text(StatusCode::FORBIDDEN, "the server never deletes a config");
    }
    let key = (repo_dir.to_path_buf(), name.to_string());
    if state.append_only {
        let own_lock = kind == ObjectKind::Lock
            && state
                .lock_owners
                .lock()
                .is_ok_and(|owners| owners.get(&key).is_some_and(|owner| owner.as_deref() == user));
        if !own_lock {
            return text(
                StatusCode::FORBIDDEN,
                "the server is append-only: it deletes nothing but the client's own locks",
            );
        }
    }
    let name = name.to_string();
    let state = state.clone();
    blocking(move || {
        backend.delete(kind, &name)?;
        if kind == ObjectKind::Lock {
            if let Ok(mut owners) = state.lock_owners.lock() {
                owners.remove(&key);
            }
        }
        Ok(empty(StatusCode::OK))
    })
    .await
}
