//! Pack header plaintext: must parse or fail, never panic or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snap_core::id::PackId;

fuzz_target!(|data: &[u8]| {
    let _ = snap_core::pack::parse_header(&PackId([0; 32]), data, 16 << 20);
});
