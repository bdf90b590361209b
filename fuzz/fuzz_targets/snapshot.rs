//! Snapshot JSON after opening.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = snap_core::snapshot::Snapshot::from_json(data);
});
