//! The snapshots the pages list, kept between page loads. A snapshot
//! object never changes (its name is the hash of its content), so a page
//! load lists the names and reads only the snapshots not seen before; a
//! snapshot another process forgot drops out with its name.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use snap_core::id::SnapshotId;
use snap_core::snapshot::{self, Snapshot};

use crate::App;

/// Snapshots read so far, by id.
#[derive(Default)]
pub struct SnapshotCache(Mutex<HashMap<SnapshotId, Snapshot>>);

impl App {
    /// The readable snapshots, oldest first, as `snapshot::list` returns
    /// them, reading only those this process has not read before.
    pub fn list_snapshots(&self) -> snap_core::Result<Vec<(SnapshotId, Snapshot)>> {
        let ids = snapshot::ids(&self.repo)?;
        let unknown: Vec<SnapshotId> = {
            let cache = self.snapshots.0.lock().unwrap_or_else(|e| e.into_inner());
            ids.iter().filter(|id| !cache.contains_key(id)).copied().collect()
        };
        // Read without the lock: another page may list meanwhile (and at
        // worst read the same new snapshots once more).
        let fresh = snapshot::load_many(&self.repo, &unknown)?;
        let mut cache = self.snapshots.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.extend(fresh);
        let present: HashSet<&SnapshotId> = ids.iter().collect();
        cache.retain(|id, _| present.contains(id));
        let mut all: Vec<(SnapshotId, Snapshot)> = cache.iter().map(|(id, s)| (*id, s.clone())).collect();
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(all)
    }
}
