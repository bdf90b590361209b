//! snap-remote: where a repository can live besides a local directory.
//!
//! This crate turns a repository location as the user types it (`-r`) into a
//! [`snap_core::backend::Backend`]. The engine stays synchronous; backends
//! that need an async runtime (OpenDAL's S3 and SFTP services) keep their
//! tokio runtime inside their own module.
//!
//! | location | module |
//! |---|---|
//! | `/path`, `local:/path` | [`snap_core::backend::LocalBackend`] |
//! | `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]` | `s3` |
//! | `sftp:[USER@]HOST[:PORT]:/PATH` | `sftp` |
//! | `rest:http(s)://[USER:PASS@]HOST:PORT/[NAME/]` | `rest` (client of `snap serve`) |
//! | `opendal:SCHEME` with `-o key=value` | `opendal` (any OpenDAL service; less tested) |

pub mod location;
pub mod opendal;
pub mod rest;
pub mod s3;
pub mod sftp;

pub use location::{open, Location, LocationError, Options};
