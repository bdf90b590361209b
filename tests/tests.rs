//! End-to-end tests of the `snap` binary: every test runs the built
//! executable on real files in temporary directories and compares what comes
//! back with the originals (bytes and metadata). See `e2e/util.rs` for the
//! helpers and each module for what it covers.

mod e2e;
