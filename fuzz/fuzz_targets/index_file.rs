//! Index file after opening: length prefix, zstd, postcard.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = snap_core::index::IndexFile::parse(data);
});
