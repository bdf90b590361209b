//! `snap init`: create a repository.

use anyhow::{Context, Result};
use serde::Serialize;
use snap_core::chunker::ChunkerParams;
use snap_core::compress::Compression;
use snap_core::crypto::Encryption;
use snap_core::keys::KdfParams;
use snap_core::repo::{InitOptions, Repository};

use crate::global::GlobalArgs;
use crate::password::{self, Prompt};

#[derive(clap::Args)]
pub struct Args {
    /// Store data unencrypted (ids stay keyed, and every object still carries a MAC).
    #[arg(long)]
    no_encryption: bool,
    /// Default compression: off, auto, max or a zstd level 1..22.
    #[arg(long, default_value = "auto")]
    compression: Compression,
    /// Chunk sizes in bytes as MIN,AVG,MAX (default 524288,1048576,8388608).
    #[arg(long, value_parser = parse_chunk_sizes)]
    chunk_sizes: Option<ChunkerParams>,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16)]
    pack_size_mib: u32,
    /// Take the chunker parameters and chunker key of the --from-repo
    /// repository, so that the same files chunk identically in both and
    /// `snap copy` between them stores only what is new.
    #[arg(long, requires = "from_repo", conflicts_with = "chunk_sizes")]
    copy_chunker_params: bool,
    #[command(flatten)]
    from: super::copy::FromRepoArgs,
    /// argon2id memory in KiB (default 65536). Lower only for tests.
    #[arg(long, hide = true)]
    kdf_memory_kib: Option<u32>,
    /// argon2id passes (default 3). Lower only for tests.
    #[arg(long, hide = true)]
    kdf_iterations: Option<u32>,
}

fn parse_chunk_sizes(s: &str) -> Result<ChunkerParams, String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("'{p}': {e}")))
        .collect::<Result<_, _>>()?;
    let [min_size, avg_size, max_size] = parts[..] else {
        return Err("expected MIN,AVG,MAX".into());
    };
    let params = ChunkerParams {
        min_size,
        avg_size,
        max_size,
    };
    params.validate()?;
    Ok(params)
}

#[derive(Serialize)]
struct InitJson {
    id: String,
    location: String,
    encrypted: bool,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let (backend, _) = global.backend()?;
    let location = backend.location();
    let defaults = KdfParams::default();
    let options = InitOptions {
        encryption: if args.no_encryption {
            Encryption::None
        } else {
            Encryption::XChaCha20Poly1305
        },
        kdf: KdfParams {
            memory_kib: args.kdf_memory_kib.unwrap_or(defaults.memory_kib),
            iterations: args.kdf_iterations.unwrap_or(defaults.iterations),
            parallelism: defaults.parallelism,
        },
        chunker: args.chunk_sizes.unwrap_or_default(),
        pack_size: args.pack_size_mib.saturating_mul(1 << 20),
        compression: args.compression,
    };
    // Without --copy-chunker-params there is nothing to take from the
    // source: refused rather than ignored.
    if args.from.from_repo.is_some() && !args.copy_chunker_params {
        anyhow::bail!(snap_core::Error::InvalidArgument(
            "--from-repo needs --copy-chunker-params (it is what init takes from the source)".into()
        ));
    }
    // The source is opened first: a wrong source password leaves no new
    // repository behind.
    let source = if args.copy_chunker_params {
        Some(args.from.open(global)?)
    } else {
        None
    };
    let password = if args.no_encryption {
        None
    } else {
        Some(password::get(&global.password_source(), Prompt::New)?)
    };
    let cache_root = global.cache_root()?;
    let repo = match &source {
        Some(source) => Repository::init_sharing_chunker(backend, password.as_ref(), &options, source, &cache_root),
        None => Repository::init(backend, password.as_ref(), &options, &cache_root),
    }
    .with_context(|| format!("cannot create repository at {location}"))?;
    if global.json {
        super::print_json(&InitJson {
            id: repo.config().id.clone(),
            location,
            encrypted: !args.no_encryption,
        })?;
    } else if !global.quiet {
        outln!("created repository {} at {location}", &repo.config().id[..8])?;
        if !args.no_encryption {
            outln!("keep the password safe: without it the data cannot be read")?;
        }
    }
    Ok(crate::exit::OK)
}
