//! Tree blob plaintext, including the name and order checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snap_core::id::BlobId;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = snap_core::tree::Tree::decode(&BlobId([0; 32]), data) {
        // Anything accepted must be safe to restore: valid, unique, sorted names.
        for pair in tree.nodes.windows(2) {
            assert!(pair[0].name < pair[1].name);
        }
        for node in &tree.nodes {
            assert!(snap_core::tree::is_valid_name(&node.name));
        }
    }
});
