//! snap-mount: snapshots as a filesystem, over snap-core's read-only
//! [`snap_core::vfs`]: `snap webdav` ([`webdav`]) and `snap mount`
//! ([`fuse`]). tokio and the FUSE session live here, not in the engine.

pub mod fuse;
pub mod webdav;
