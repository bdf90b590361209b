//! The end-to-end suite, one module per area.

pub mod util;

mod bad_inputs;
mod encryption;
mod filters;
mod incremental;
mod interrupt;
mod json;
mod lifecycle;
mod roundtrip;
mod scale;
mod unreadable;
