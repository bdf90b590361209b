//! `SNAP_DEBUG_RSS=1`: the memory the process holds, on stderr, right after
//! the repository's key is opened and again at exit, for the comparison
//! bench (docs/performance.md, "Working set after the KDF").
//!
//! argon2's 64 MiB at key derivation is a floor under the peak RSS that
//! hides what the rest of a command holds. So at the first line the kernel's
//! high-water mark is reset to the current RSS (`/proc/self/clear_refs`,
//! value 5): the exit line's `VmHWM` is then the peak after the key, and a
//! parent's `getrusage` sees that peak too, not the KDF's; whoever measures
//! takes the larger of the two lines' `VmHWM` for the whole run's peak.

use std::sync::atomic::{AtomicBool, Ordering};

static AFTER_KEY_DONE: AtomicBool = AtomicBool::new(false);

fn enabled() -> bool {
    std::env::var_os("SNAP_DEBUG_RSS").is_some_and(|v| v == "1")
}

/// `VmRSS` and `VmHWM` from /proc/self/status, as that file spells them.
fn status_line() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or("unknown".to_owned(), |v| v.trim().replace(' ', ""))
    };
    format!("VmRSS={} VmHWM={}", field("VmRSS:"), field("VmHWM:"))
}

/// Called once the key is open (only the first call in a process reports).
pub fn after_key() {
    if !enabled() || AFTER_KEY_DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let line = status_line();
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    errln!(
        "snap-debug-rss: after-key {line} hwm-reset={}",
        if reset { "yes" } else { "no" }
    );
}

/// Called just before the process exits.
pub fn at_exit() {
    if enabled() {
        errln!("snap-debug-rss: exit {}", status_line());
    }
}
