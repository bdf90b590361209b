//! Named crash points for tests. In debug builds, when the environment
//! variable `SNAP_FAILPOINT` names a point (optionally `name:N` to crash at
//! the N-th time it is reached), the process aborts there, as a kill -9 or a
//! power loss would stop it. Release builds compile the checks away.
//!
//! Points: `pack-written`, `index-written`, `before-snapshot`,
//! `prune-repacked`, `prune-index-written`, `prune-index-deleting`,
//! `prune-packs-deleting`, `key-added`, `checkpoint-saved` (a checkpoint
//! written, the older ones not yet removed), `checkpoint-written`,
//! `repair-packs-index-written`, `repair-packs-deleting`, `index-merged`,
//! `retag-written` (`snap tag` wrote the new snapshot, the old one is not deleted yet).

#[cfg(debug_assertions)]
static COUNTS: std::sync::Mutex<Vec<(&'static str, u32)>> = std::sync::Mutex::new(Vec::new());

/// Aborts the process if `SNAP_FAILPOINT` selects this point (debug builds only).
#[inline]
pub fn hit(name: &'static str) {
    #[cfg(debug_assertions)]
    {
        let Ok(wanted) = std::env::var("SNAP_FAILPOINT") else {
            return;
        };
        let (wanted_name, nth) = match wanted.split_once(':') {
            Some((n, count)) => (n.to_string(), count.parse::<u32>().unwrap_or(1)),
            None => (wanted, 1),
        };
        if wanted_name != name {
            return;
        }
        let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let count = match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                counts.push((name, 1));
                1
            }
        };
        if count == nth {
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
