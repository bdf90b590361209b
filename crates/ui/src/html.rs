//! The page frame, the error page, and small helpers every page uses
//! (sizes, times, URL encoding of raw path bytes). maud escapes every
//! interpolated value, so names from a snapshot cannot inject markup.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::auth::Session;

pub const APP_JS: &str = include_str!("../assets/app.js");
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

const NAV: [(&str, &str); 6] = [
    ("/", "Dashboard"),
    ("/snapshots", "Snapshots"),
    ("/restore", "Restore"),
    ("/diff", "Diff"),
    ("/verify", "Verify"),
    ("/schedules", "Schedules"),
];

/// A whole page: header, navigation (the current one marked), the body.
pub fn page(title: &str, active: &str, session: &Session, body: Markup) -> Response {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="csrf-token" content=(session.csrf);
                    title { (title) " - snap" }
                    link rel="stylesheet" href="/assets/style.css";
                    script src="/assets/app.js" defer {}
                }
                body {
                    header {
                        a.brand href="/" { "snap" }
                        nav {
                            @for (href, name) in NAV {
                                a href=(href) class=[(href == active).then_some("active")] { (name) }
                            }
                        }
                    }
                    main {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
    .into_response()
}

/// The hidden field every POST form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A failed page: the status and a sentence saying what went wrong.
pub struct Fail(pub StatusCode, pub String);

impl Fail {
    pub fn bad(message: impl Into<String>) -> Self {
        Fail(StatusCode::BAD_REQUEST, message.into())
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Fail(StatusCode::NOT_FOUND, message.into())
    }
}

impl From<snap_core::Error> for Fail {
    fn from(e: snap_core::Error) -> Self {
        let status = match &e {
            snap_core::Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            snap_core::Error::SnapshotNotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Fail(status, e.to_string())
    }
}

impl From<tokio::task::JoinError> for Fail {
    fn from(e: tokio::task::JoinError) -> Self {
        Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("the operation failed: {e}"))
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Error - snap" }
                    link rel="stylesheet" href="/assets/style.css";
                }
                body {
                    main {
                        h1 { "Error " (self.0.as_u16()) }
                        p.error { (self.1) }
                        p { a href="/" { "Back to the dashboard" } }
                    }
                }
            }
        };
        (self.0, Html(body.into_string())).into_response()
    }
}

pub type PageResult = Result<Response, Fail>;

// The CLI's own, so a size or time reads the same on a page as in a terminal.
pub use snap_core::display::{human_bytes, local_time};

pub fn time_ns(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| local_time(&t))
        .unwrap_or_else(|_| "-".into())
}

/// Percent-encodes raw bytes for a query value (names need not be UTF-8).
pub fn enc(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The raw bytes of query parameter `key` (percent- and `+`-decoded).
pub fn query_bytes(query: Option<&str>, key: &str) -> Option<Vec<u8>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| decode(v))
    })
}

pub fn query_str(query: Option<&str>, key: &str) -> Option<String> {
    query_bytes(query, key).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn decode(v: &str) -> Vec<u8> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// An empty state: one sentence in a box.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// Marks text as already escaped (only for our own constant markup).
#[allow(dead_code)]
pub fn raw(text: &'static str) -> PreEscaped<&'static str> {
    PreEscaped(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_round_trip_raw_bytes() {
        let name = b"/a b/\xff%&=.txt";
        let q = format!("x=1&path={}", enc(name));
        assert_eq!(query_bytes(Some(&q), "path").unwrap(), name);
        assert_eq!(query_bytes(Some("path=a+b%2"), "path").unwrap(), b"a b%2");
        assert_eq!(query_bytes(Some("path=%"), "path").unwrap(), b"%");
        assert_eq!(query_bytes(Some("other=1"), "path"), None);
    }
}
