//! Lock JSON after opening.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = snap_core::lock::LockInfo::from_json(data);
});
