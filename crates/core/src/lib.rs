//! snap-core: the engine of snap, a content-addressed, deduplicating,
//! encrypted snapshot store.
//!
//! This crate never prints and never exits: it returns data and errors, and
//! reports progress through the [`progress::Progress`] trait. The CLI lives in
//! `crates/cli`. Modules are layered; imports point down only:
//!
//! | layer | modules |
//! |---|---|
//! | 0 | [`id`], [`error`], [`progress`], [`codec`], [`failpoint`], [`pool`] |
//! | 1 | [`chunker`], [`compress`], [`crypto`], [`keys`], [`config`], [`backend`], [`fsmeta`] |
//! | 2 | [`pack`], [`index`], [`repo`], [`packer`], [`lock`], [`keyring`] |
//! | 3 | [`tree`], [`snapshot`], [`policy`], [`ls`] |
//! | 4 | [`archiver`], [`restorer`], [`verify`], [`prune`], [`repair`], [`forget`], [`copy`], [`export`], [`import`], [`catalog`], [`diff`], [`find`], [`stats`], [`vfs`] |
//!
//! The bytes on disk are specified in `docs/format.md`.

pub mod archiver;
pub mod backend;
pub mod catalog;
pub mod chunker;
pub mod codec;
pub mod compress;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod damaged;
pub mod diff;
pub mod direct_read;
pub mod display;
pub mod error;
pub mod export;
pub mod failpoint;
pub mod find;
pub mod forget;
pub mod fsmeta;
pub mod id;
pub mod import;
pub mod index;
pub mod ingest;
pub mod keyring;
pub mod keys;
pub mod lock;
pub mod ls;
pub mod pack;
pub mod packer;
pub mod packread;
pub mod policy;
pub mod pool;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod repo;
pub mod restorer;
pub mod safety;
pub mod snapshot;
pub mod stats;
#[cfg(test)]
mod test_vectors;
pub mod tree;
pub mod verify;
pub mod vfs;

pub use error::{Error, Result};

/// The repository format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
