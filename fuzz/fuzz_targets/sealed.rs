//! Opening sealed bytes (both modes) must fail cleanly on anything forged.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use snap_core::crypto::{Crypto, Encryption, MasterKey};

fuzz_target!(|data: &[u8]| {
    static KEYS: OnceLock<[Crypto; 2]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        [
            Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305),
            Crypto::new(MasterKey::generate(), Encryption::None),
        ]
    });
    for crypto in keys {
        assert!(crypto.open(data).is_err(), "forged bytes opened");
    }
});
