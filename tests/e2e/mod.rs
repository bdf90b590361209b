//! The end-to-end suite, one module per area.

pub mod util;

mod bad_inputs;
mod concurrency;
mod corruption;
mod crash;
mod create_args;
mod deep;
mod encryption;
mod environment;
mod filters;
mod incremental;
mod interrupt;
mod json;
mod lifecycle;
mod resume;
mod roundtrip;
mod scale;
mod unreadable;
