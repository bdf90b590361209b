//! The end-to-end suite, one module per area.

pub mod util;

mod bad_inputs;
mod compat;
mod concurrency;
mod copy;
mod corruption;
mod crash;
mod create_args;
mod deep;
mod dumps;
mod encryption;
mod environment;
mod export;
mod filters;
mod heal;
mod history;
mod incremental;
mod interrupt;
mod json;
mod keys_perms;
mod lifecycle;
mod locks;
mod opendal;
mod output;
mod requests;
mod restore_modes;
mod restore_safety;
mod resume;
mod roundtrip;
mod s3;
mod scale;
mod selection;
mod selection_create;
mod serve;
mod sftp;
mod unreadable;
