//! Key files are read before any key is known: JSON, then unwrapping.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snap_core::keys::{KeyFile, Password};

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = KeyFile::from_bytes(data, "fuzz") {
        // argon2 with attacker-chosen parameters would make this target slow,
        // not unsafe; only unencrypted key files are unwrapped here.
        if !file.is_encrypted() {
            let _ = file.unlock(None::<&Password>, "fuzz");
        }
    }
});
