//! The repository config: format version, repository id, chunker and pack
//! parameters, compression default. Stored as JSON under `config`, readable
//! without a key (so a too-new version is reported before asking for a
//! password), and authenticated by a MAC under the master key.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::compress::Compression;
use crate::crypto::{Crypto, Encryption};
use crate::error::{Error, Result};

/// What the config fixes for the life of the repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigBody {
    pub version: u32,
    /// 32 random bytes, hex: names the local cache directory.
    pub id: String,
    pub encryption: Encryption,
    pub chunker: ChunkerParams,
    /// Target size of a pack file in bytes.
    pub pack_size: u32,
    pub compression: Compression,
}

/// The stored config: the body and its MAC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub body: ConfigBody,
    /// Hex of keyed BLAKE3 (MAC key) of the postcard encoding of `body`.
    pub mac: String,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl Config {
    pub fn new(body: ConfigBody, crypto: &Crypto) -> Self {
        let mac = hex::encode(crypto.mac(&postcard::to_allocvec(&body).expect("config encodes")));
        Config { body, mac }
    }

    /// Parses the config, refusing versions newer than this build.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let version: VersionOnly = serde_json::from_slice(bytes).map_err(|e| Error::corrupt("config", e))?;
        if version.version == 0 {
            return Err(Error::corrupt("config", "format version 0 does not exist"));
        }
        if version.version > crate::FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version.version,
                supported: crate::FORMAT_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt("config", e))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config encodes")
    }

    /// Checks the MAC once the master key is known.
    pub fn verify(&self, crypto: &Crypto) -> Result<()> {
        let expected = hex::encode(crypto.mac(&postcard::to_allocvec(&self.body).expect("config encodes")));
        if expected != self.mac {
            return Err(Error::corrupt(
                "config",
                "its MAC does not match: it was changed after init, or belongs to another key",
            ));
        }
        if self.body.encryption != crypto.encryption() {
            return Err(Error::corrupt("config", "encryption mode differs from the key's"));
        }
        Ok(())
    }
}
