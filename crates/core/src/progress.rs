//! Progress events. Operations report what they do through [`Progress`]; the
//! CLI turns events into bars or JSON. The library never prints.

use std::path::Path;

/// One thing that happened during an operation.
#[derive(Debug)]
pub enum Event<'a> {
    /// The total amount of work became known (or grew), in bytes and items.
    Total { bytes: u64, items: u64 },
    /// Bytes of source data processed (read, or skipped as unchanged).
    Bytes(u64),
    /// One item (file, directory, blob) finished.
    ItemDone(&'a Path),
    /// A problem that did not stop the operation, such as an unreadable file.
    Warning { path: &'a Path, message: String },
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
