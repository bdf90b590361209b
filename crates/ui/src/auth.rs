//! Who may use the UI, and what a browser may do with it (docs/security.md,
//! "The web UI").
//!
//! Every request must show the per-start token: once as `?token=` (the URL
//! `snap ui` prints), which starts a session (an HttpOnly, SameSite=Strict
//! cookie) and redirects to the same URL without it, so the token does not
//! stay in the address bar or history; or on each request as
//! `Authorization: Bearer TOKEN` (scripts). Anything else is 401.
//!
//! A request that changes something is a POST; from a session it must come
//! from the UI's own origin (`Origin`, else `Referer`) and carry the
//! session's CSRF token (form field `csrf` or header `X-CSRF-Token`). A
//! bearer request needs neither: a browser never adds that header by itself.
//! On loopback the `Host` must name the loopback address, so a hostile page
//! that rebinds its own name to 127.0.0.1 reaches nothing. Off loopback the
//! server insists on TLS and an htpasswd file (checked before the token).
//!
//! This module owns only the checks; the pages never see a request that
//! failed one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::App;

/// Most sessions kept; past it the oldest are dropped (each login makes one).
const MAX_SESSIONS: usize = 256;
/// Largest form a POST may carry (the forms are a few fields).
const MAX_FORM: usize = 1 << 20;

/// What a page needs to know about the request's session.
#[derive(Clone)]
pub struct Session {
    /// Put into every form as the hidden `csrf` field.
    pub csrf: String,
}

pub struct Auth {
    token: String,
    htpasswd: Option<snap_server::Htpasswd>,
    tls: bool,
    addr: SocketAddr,
    /// Session id -> (CSRF token, creation order).
    sessions: Mutex<HashMap<String, (String, u64)>>,
    counter: std::sync::atomic::AtomicU64,
}

/// A fresh random token: 32 bytes from the OS, as hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not something to serve through.
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    hex::encode(bytes)
}

pub fn token_is_strong(token: &str) -> bool {
    token.len() >= 16
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(token: String, htpasswd: Option<snap_server::Htpasswd>, tls: bool, addr: SocketAddr) -> Self {
        Auth {
            token,
            htpasswd,
            tls,
            addr,
            sessions: Mutex::new(HashMap::new()),
            counter: Default::default(),
        }
    }

    fn cookie_name(&self) -> String {
        // Cookies are not kept apart by port: two UIs on one host must not
        // overwrite each other's session.
        format!("snap_ui_{}", self.addr.port())
    }

    fn new_session(&self) -> (String, String) {
        let id = new_token();
        let csrf = new_token();
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, (_, n))| *n).map(|(k, _)| k.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), (csrf.clone(), n));
        (id, csrf)
    }

    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let name = self.cookie_name();
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for value in headers.get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if k == name {
                        if let Some((csrf, _)) = sessions.get(v) {
                            return Some(Session { csrf: csrf.clone() });
                        }
                    }
                }
            }
        }
        None
    }

    /// The origin a same-site request names: the scheme and the Host it was sent to.
    fn origin(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        Some(format!("{}://{host}", if self.tls { "https" } else { "http" }))
    }

    /// On loopback, the Host must be the loopback address itself (or
    /// `localhost`): a name a hostile page controls is refused.
    fn host_ok(&self, headers: &HeaderMap) -> bool {
        if !self.addr.ip().is_loopback() {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let port = self.addr.port();
        [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            self.addr.to_string(),
        ]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{}: {message}\n", status.as_u16())).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The query without its `token` parameter, for the redirect after login.
fn without_token(query: &str) -> String {
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("token=") && *p != "token")
        .collect();
    if rest.is_empty() {
        String::new()
    } else {
        format!("?{}", rest.join("&"))
    }
}

fn query_token(query: &str) -> Option<&str> {
    query.split('&').find_map(|p| p.strip_prefix("token="))
}

/// The middleware every route sits behind.
pub async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let mut response = check(&app.auth, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        // A download sets its own, stricter policy.
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    response
}

async fn check(auth: &Auth, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !auth.host_ok(headers) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this UI answers only to its loopback address (Host header)",
        );
    }
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(htpasswd) = &auth.htpasswd {
        if htpasswd.check(authorization).is_none() {
            let mut response = refuse(StatusCode::UNAUTHORIZED, "user name and password needed");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"snap ui\""),
            );
            return response;
        }
    }
    let query = request.uri().query().unwrap_or("").to_string();
    if let Some(given) = query_token(&query) {
        if !same(given, &auth.token) {
            return refuse(StatusCode::UNAUTHORIZED, "wrong token");
        }
        let (id, _) = auth.new_session();
        let location = format!("{}{}", local_path(request.uri().path()), without_token(&query));
        let secure = if auth.tls { "; Secure" } else { "" };
        let cookie = format!("{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}", auth.cookie_name());
        let mut response = Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    // With --htpasswd the one Authorization header carries Basic, so a
    // script sends the token in X-Snap-Token instead.
    let bearer = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-snap-token").and_then(|v| v.to_str().ok()))
        .is_some_and(|t| same(t.trim(), &auth.token));
    let session = if bearer {
        // A script's request: no cookie was involved, so no cross-site
        // page could have made it; no CSRF token needed.
        Session { csrf: String::new() }
    } else {
        match auth.session(headers) {
            Some(session) => session,
            None => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "open the URL `snap ui` printed (it carries the token), or send Authorization: Bearer TOKEN (or X-Snap-Token: TOKEN)",
                )
            }
        }
    };
    let mut request = request;
    if request.method() != Method::GET && request.method() != Method::HEAD && !bearer {
        request = match check_post(auth, &session, request).await {
            Ok(request) => request,
            Err(response) => return response,
        };
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The redirect after `?token=` goes back to the requested path, but only
/// as a path on this server: `//host/` or `/\host/` would be read by the
/// browser as another site (an open redirect), so those go to `/`.
fn local_path(path: &str) -> &str {
    let mut chars = path.chars();
    match (chars.next(), chars.next()) {
        (Some('/'), Some('/' | '\\')) => "/",
        (Some('/'), _) => path,
        _ => "/",
    }
}

/// A state-changing request from a session: same origin, and the CSRF token.
async fn check_post(auth: &Auth, session: &Session, request: Request) -> Result<Request, Response> {
    let headers = request.headers();
    let Some(origin) = auth.origin(headers) else {
        return Err(refuse(StatusCode::FORBIDDEN, "no Host header"));
    };
    let from = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok());
    let same_origin = match (from, referer) {
        (Some(from), _) => from == origin,
        (None, Some(referer)) => referer == origin || referer.starts_with(&format!("{origin}/")),
        (None, None) => false,
    };
    if !same_origin {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "cross-site request refused (Origin/Referer is not this UI)",
        ));
    }
    if let Some(given) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        if same(given, &session.csrf) {
            return Ok(request);
        }
        return Err(refuse(StatusCode::FORBIDDEN, "wrong CSRF token"));
    }
    // The token is a field of the form: read the body, check, and hand the
    // same bytes on to the page.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| refuse(StatusCode::PAYLOAD_TOO_LARGE, "form too large"))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let ok = fields.iter().any(|(k, v)| k == "csrf" && same(v, &session.csrf));
    if !ok {
        return Err(refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token"));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_leaves_the_redirect() {
        assert_eq!(without_token("token=abc"), "");
        assert_eq!(without_token("path=%2Fa&token=abc&page=2"), "?path=%2Fa&page=2");
        assert_eq!(query_token("a=1&token=xyz"), Some("xyz"));
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(token_is_strong(&new_token()));
        assert!(!token_is_strong("short"));
        assert!(!token_is_strong("has spaces in it, long enough"));
    }

    #[test]
    fn redirect_stays_on_this_server() {
        assert_eq!(local_path("/snapshots"), "/snapshots");
        assert_eq!(local_path("/"), "/");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example/"), "/");
        assert_eq!(local_path(""), "/");
        assert_eq!(local_path("evil"), "/");
    }
}
