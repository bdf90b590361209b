//! The end-to-end suite, one module per area.

pub mod util;

mod bad_inputs;
mod concurrency;
mod corruption;
mod crash;
mod encryption;
mod environment;
mod filters;
mod incremental;
mod interrupt;
mod json;
mod lifecycle;
mod restore_safety;
mod roundtrip;
mod scale;
mod unreadable;
