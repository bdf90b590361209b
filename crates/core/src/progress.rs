//! Progress events. Operations report what they do through [`Progress`]; the
//! CLI turns events into bars or JSON. The library never prints. Events and
//! [`PathMessage`] are serde structs, so a server or UI can stream the same
//! events `--json` would print.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One thing that happened during an operation. Serialized as an object
/// tagged by `event` (`{"event":"bytes","value":4096}`).
#[derive(Debug, Serialize)]
#[serde(tag = "event", content = "value", rename_all = "snake_case")]
pub enum Event<'a> {
    /// The total amount of work became known (or grew), in bytes and items.
    Total { bytes: u64, items: u64 },
    /// Bytes of source data processed (read, or skipped as unchanged).
    Bytes(u64),
    /// One item (file, directory, blob) finished.
    ItemDone(#[serde(serialize_with = "lossy_path")] &'a Path),
    /// A problem that did not stop the operation, such as an unreadable file.
    Warning {
        #[serde(serialize_with = "lossy_path")]
        path: &'a Path,
        message: String,
    },
}

/// Paths as lossy UTF-8: serde's own form fails on a non-UTF-8 name, and
/// one odd file name must not stop a progress stream.
fn lossy_path<S: serde::Serializer>(path: &&Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// A path and what happened to it (a backup's warning, a restore's error),
/// in the documented JSON form `{"path": ..., "message": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMessage {
    /// Lossy UTF-8 for display.
    pub path: String,
    pub message: String,
}

impl PathMessage {
    pub fn new(path: &Path, message: &str) -> Self {
        PathMessage {
            path: path.to_string_lossy().into_owned(),
            message: message.to_string(),
        }
    }
}

/// A sink for [`Event`]s. Called from many threads at once.
pub trait Progress: Sync {
    fn event(&self, event: Event<'_>);

    /// Whether [`Event::Total`] is shown. When not, an operation may skip the
    /// work of finding the total (a backup then walks its sources once, not
    /// twice).
    fn shows_total(&self) -> bool {
        true
    }
}

/// Discards every event.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: Event<'_>) {}

    fn shows_total(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn events_serialize_even_with_non_utf8_paths() {
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/a/\xff.txt"));
        let json = |e: Event<'_>| serde_json::to_string(&e).unwrap();
        assert_eq!(json(Event::Bytes(4096)), r#"{"event":"bytes","value":4096}"#);
        assert_eq!(
            json(Event::Total { bytes: 1, items: 2 }),
            r#"{"event":"total","value":{"bytes":1,"items":2}}"#
        );
        assert_eq!(
            json(Event::ItemDone(odd)),
            r#"{"event":"item_done","value":"/a/\ufffd.txt"}"#.replace("\\ufffd", "\u{fffd}")
        );
        let warning = json(Event::Warning {
            path: odd,
            message: "unreadable".into(),
        });
        assert!(warning.contains(r#""message":"unreadable""#), "{warning}");
        let back: PathMessage = serde_json::from_str(r#"{"path":"/x","message":"m"}"#).unwrap();
        assert_eq!(back, PathMessage::new(Path::new("/x"), "m"));
    }
}
