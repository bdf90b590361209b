//! The config is parsed before any key is tried.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = snap_core::config::Config::from_bytes(data);
});
