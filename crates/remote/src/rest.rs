//! The client of `snap serve` (docs/rest-protocol.md): a [`Backend`] over
//! plain HTTP requests, synchronous (ureq, rustls), so no async runtime is
//! needed on this side.
//!
//! Failures are sorted for the retry wrapper: timeouts, resets, refused
//! connections and 5xx answers are [`BackendError::Transient`]; refused
//! credentials (401, 403) and anything else unexpected are
//! [`BackendError::Remote`] with a one-line reason. Credentials (from the
//! URL or `-o user=` / `-o password-file=`) go only into the
//! `Authorization` header: never into [`Backend::location`] or an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use snap_core::backend::{Backend, BackendError, BackendResult, ObjectInfo, ObjectKind};
use ureq::http::Response;
use ureq::Body;

use crate::location::{LocationError, Options};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may wait for the answer, or stall while sending or
/// receiving a body. Not a bound on a whole transfer: a large pack on a
/// slow link may take longer, as long as bytes keep moving.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const LIST_MEDIA_TYPE: &str = "application/vnd.snap.rest.v1+json";

pub struct RestBackend {
    /// `http(s)://HOST:PORT/[NAME/]`, without credentials.
    base: String,
    authorization: Option<String>,
    agent: ureq::Agent,
    /// Learned from the server's answers (`Snap-Append-Only`).
    append_only: AtomicBool,
}

// Hand-written: the Authorization header stays out of logs.
impl std::fmt::Debug for RestBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestBackend").field("base", &self.base).finish()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RestBackend {
    /// `url` as in [`crate::Location::Rest`]; options `user`, `password-file`, `tls-ca`.
    pub fn open(url: &str, options: &Options) -> Result<RestBackend, LocationError> {
        let invalid = |reason: String| LocationError::Invalid {
            // Without the credentials the URL may hold.
            location: "rest:".to_string(),
            reason,
        };
        let (scheme, after) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected rest:http(s)://HOST:PORT/[NAME/]".into()))?;
        let (authority, path) = after.split_once('/').unwrap_or((after, ""));
        let (mut user, mut password, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some(percent_decode(user)),
                    Some(percent_decode(password)),
                    host.to_string(),
                )
            }
            None => (None, None, authority.to_string()),
        };
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        let mut tls_ca = None;
        for (key, value) in options {
            match key.as_str() {
                "user" => user = Some(value.clone()),
                "password-file" => {
                    let text = std::fs::read_to_string(value).map_err(|e| {
                        LocationError::Unsupported(format!("cannot read the password file {value}: {e}"))
                    })?;
                    password = Some(text.lines().next().unwrap_or("").to_string());
                }
                "tls-ca" => tls_ca = Some(value.clone()),
                other => {
                    return Err(LocationError::Unsupported(format!(
                        "a rest: repository takes the options user, password-file and tls-ca (got {other:?})"
                    )))
                }
            }
        }
        let authorization = match (user, password) {
            (Some(user), password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.unwrap_or_default()))
            )),
            (None, Some(_)) => return Err(invalid("a password without a user".into())),
            (None, None) => None,
        };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(REQUEST_TIMEOUT))
            .timeout_per_read(Some(REQUEST_TIMEOUT))
            .timeout_per_write(Some(REQUEST_TIMEOUT))
            .max_idle_connections_per_host(16)
            .max_redirects(0)
            .user_agent(concat!("snap/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = tls_ca {
            let pem = std::fs::read(&ca)
                .map_err(|e| LocationError::Unsupported(format!("cannot read the CA file {ca}: {e}")))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(LocationError::Unsupported(format!(
                    "no certificate in the CA file {ca}"
                )));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let base = format!("{scheme}://{host}/{path}");
        Ok(RestBackend {
            base,
            authorization,
            agent: config.build().into(),
            append_only: AtomicBool::new(false),
        })
    }

    fn url(&self, kind: ObjectKind, name: &str) -> String {
        match kind {
            ObjectKind::Config => format!("{}config", self.base),
            _ => format!("{}{}/{name}", self.base, kind_dir(kind)),
        }
    }

    fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response<Body>, ureq::Error> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        if let Some(auth) = &self.authorization {
            builder = builder.header("Authorization", auth.as_str());
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = match body {
            Some(data) => self.agent.run(builder.body(data)?)?,
            None => self.agent.run(builder.body(())?)?,
        };
        if response.headers().contains_key("snap-append-only") {
            self.append_only.store(true, Ordering::Relaxed);
        }
        Ok(response)
    }

    /// A request whose answer must be a success; anything else becomes the
    /// matching error for `op` on `what`.
    fn call(&self, op: &'static str, kind: ObjectKind, name: &str, req: Req<'_>) -> BackendResult<Response<Body>> {
        let what = || describe(kind, name);
        let mut response = self
            .request(req.method, req.url, req.headers, req.body)
            .map_err(|e| transport_error(op, what(), e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(status_error(op, kind, name, &mut response))
    }
}

/// One request of [`RestBackend::call`].
struct Req<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<&'a [u8]>,
}

fn kind_dir(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => "config",
        ObjectKind::Key => "keys",
        ObjectKind::Pack => "data",
        ObjectKind::Index => "index",
        ObjectKind::Snapshot => "snapshots",
        ObjectKind::Lock => "locks",
    }
}

fn describe(kind: ObjectKind, name: &str) -> String {
    if kind == ObjectKind::Config {
        "the config".into()
    } else {
        format!("{} {name}", kind.name())
    }
}

fn transport_error(op: &'static str, what: String, e: ureq::Error) -> BackendError {
    use ureq::Error as E;
    let transient = matches!(e, E::Timeout(_) | E::Io(_) | E::ConnectionFailed | E::Protocol(_));
    let reason = match &e {
        E::Timeout(t) => format!("the server did not answer in time ({t})"),
        E::ConnectionFailed => "cannot connect to the server".into(),
        E::HostNotFound => "the server's host name does not resolve".into(),
        other => other.to_string(),
    };
    if transient {
        BackendError::Transient { op, what, reason }
    } else {
        BackendError::Remote { op, what, reason }
    }
}

fn status_error(op: &'static str, kind: ObjectKind, name: &str, response: &mut Response<Body>) -> BackendError {
    let status = response.status().as_u16();
    // The server's one-line reason, bounded: a hostile server's body is not
    // read whole.
    let message = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .filter(|s| !s.is_empty() && s.chars().all(|c| !c.is_control()))
        .unwrap_or_default();
    let what = describe(kind, name);
    let reason = |default: &str| {
        if message.is_empty() {
            format!("{default} (HTTP {status})")
        } else {
            format!("{message} (HTTP {status})")
        }
    };
    match status {
        404 => BackendError::NotFound {
            kind: kind.name(),
            name: name.to_string(),
        },
        409 => BackendError::AlreadyExists {
            kind: kind.name(),
            name: name.to_string(),
        },
        401 => BackendError::Remote {
            op,
            what,
            reason: format!("the server refused the credentials (HTTP {status})"),
        },
        403 => BackendError::Remote {
            op,
            what,
            reason: reason("the server refused the request"),
        },
        408 | 429 | 500..=599 => BackendError::Transient {
            op,
            what,
            reason: reason("the server failed"),
        },
        _ => BackendError::Remote {
            op,
            what,
            reason: reason("unexpected answer"),
        },
    }
}

fn read_body(op: &'static str, kind: ObjectKind, name: &str, mut response: Response<Body>) -> BackendResult<Vec<u8>> {
    response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| transport_error(op, describe(kind, name), e))
}

impl Backend for RestBackend {
    fn location(&self) -> String {
        format!("rest:{}", self.base)
    }

    fn concurrency(&self) -> usize {
        8
    }

    fn append_only(&self) -> bool {
        self.append_only.load(Ordering::Relaxed)
    }

    fn create(&self) -> BackendResult<()> {
        let url = format!("{}?create=true", self.base);
        self.call(
            "create",
            ObjectKind::Config,
            "config",
            Req {
                method: "POST",
                url: &url,
                headers: &[],
                body: Some(&[]),
            },
        )
        .map(|_| ())
    }

    fn read(&self, kind: ObjectKind, name: &str) -> BackendResult<Vec<u8>> {
        let response = self.call(
            "read",
            kind,
            name,
            Req {
                method: "GET",
                url: &self.url(kind, name),
                headers: &[],
                body: None,
            },
        )?;
        read_body("read", kind, name, response)
    }

    fn read_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        if len == 0 {
            return if self.exists(kind, name)? {
                Ok(Vec::new())
            } else {
                Err(BackendError::NotFound {
                    kind: kind.name(),
                    name: name.to_string(),
                })
            };
        }
        let end = offset.saturating_add(len);
        let range = format!("bytes={offset}-{}", end - 1);
        let url = self.url(kind, name);
        let mut response = self
            .request("GET", &url, &[("Range", &range)], None)
            .map_err(|e| transport_error("read", describe(kind, name), e))?;
        match response.status().as_u16() {
            206 => {}
            416 => {
                let size = response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                return Err(BackendError::ShortRead {
                    kind: kind.name(),
                    name: name.to_string(),
                    offset,
                    end,
                    size,
                });
            }
            200 => {
                return Err(BackendError::Remote {
                    op: "read",
                    what: describe(kind, name),
                    reason: "the server ignored the byte range".into(),
                })
            }
            _ => return Err(status_error("read", kind, name, &mut response)),
        }
        let bytes = read_body("read", kind, name, response)?;
        if bytes.len() as u64 != len {
            return Err(BackendError::Transient {
                op: "read",
                what: describe(kind, name),
                reason: format!("the server sent {} bytes of {len}", bytes.len()),
            });
        }
        Ok(bytes)
    }

    fn write(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.call(
            "write",
            kind,
            name,
            Req {
                method: "POST",
                url: &self.url(kind, name),
                headers: &[],
                body: Some(data),
            },
        )
        .map(|_| ())
    }

    fn write_new(&self, kind: ObjectKind, name: &str, data: &[u8]) -> BackendResult<()> {
        let headers = [("snap-create", "exclusive")];
        self.call(
            "write",
            kind,
            name,
            Req {
                method: "POST",
                url: &self.url(kind, name),
                headers: &headers,
                body: Some(data),
            },
        )
        .map(|_| ())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> BackendResult<()> {
        self.call(
            "delete",
            kind,
            name,
            Req {
                method: "DELETE",
                url: &self.url(kind, name),
                headers: &[],
                body: None,
            },
        )
        .map(|_| ())
    }

    fn list(&self, kind: ObjectKind) -> BackendResult<Vec<ObjectInfo>> {
        let url = match kind {
            ObjectKind::Config => {
                return Ok(match self.modified_and_size(kind, "config")? {
                    Some((_, size)) => vec![ObjectInfo {
                        name: "config".into(),
                        size,
                    }],
                    None => Vec::new(),
                })
            }
            _ => format!("{}{}/", self.base, kind_dir(kind)),
        };
        let what = format!("the {} list", kind.name());
        let response = self.call(
            "list",
            kind,
            "",
            Req {
                method: "GET",
                url: &url,
                headers: &[("Accept", LIST_MEDIA_TYPE)],
                body: None,
            },
        )?;
        let body = read_body("list", kind, "", response)?;
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
            size: u64,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&body).map_err(|e| BackendError::Remote {
            op: "list",
            what,
            reason: format!("the server's answer is not a listing: {e}"),
        })?;
        Ok(entries
            .into_iter()
            .map(|e| ObjectInfo {
                name: e.name,
                size: e.size,
            })
            .collect())
    }

    fn exists(&self, kind: ObjectKind, name: &str) -> BackendResult<bool> {
        Ok(self.modified_and_size(kind, name)?.is_some())
    }

    fn modified(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<SystemTime>> {
        match self.modified_and_size(kind, name)? {
            Some((modified, _)) => Ok(modified),
            None => Err(BackendError::NotFound {
                kind: kind.name(),
                name: name.to_string(),
            }),
        }
    }
}

impl RestBackend {
    /// HEAD: `None` if there is no such object.
    fn modified_and_size(&self, kind: ObjectKind, name: &str) -> BackendResult<Option<(Option<SystemTime>, u64)>> {
        let response = match self.call(
            "stat",
            kind,
            name,
            Req {
                method: "HEAD",
                url: &self.url(kind, name),
                headers: &[],
                body: None,
            },
        ) {
            Ok(response) => response,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let headers = response.headers();
        let modified = headers
            .get("last-modified")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let size = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Some((modified, size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_out_of_the_location() {
        let backend = RestBackend::open("http://ana:s%40cret@127.0.0.1:8000/repo/", &Vec::new()).unwrap();
        assert_eq!(backend.location(), "rest:http://127.0.0.1:8000/repo/");
        assert!(!format!("{backend:?}").contains("cret"));
        let expected = base64::engine::general_purpose::STANDARD.encode("ana:s@cret");
        assert_eq!(
            backend.authorization.as_deref(),
            Some(format!("Basic {expected}").as_str())
        );
        assert!(RestBackend::open("http://127.0.0.1:1/", &vec![("bucket".into(), "x".into())]).is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
