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

impl ConfigBody {
    /// Checks that a key file's wrapping agrees with `encryption`: an
    /// encrypted repository's keys are sealed under a password (a key file
    /// holding the master key in the clear would open it without one), and an
    /// unencrypted repository's keys are stored in the clear (`init` writes
    /// nothing else). Called before a key file is tried.
    pub fn check_key_kdf(&self, key_encrypted: bool, key_name: &str) -> Result<()> {
        let (kdf, mode) = match (self.encryption, key_encrypted) {
            (Encryption::XChaCha20Poly1305, true) | (Encryption::None, false) => return Ok(()),
            (Encryption::XChaCha20Poly1305, false) => ("none", "encrypted"),
            (Encryption::None, true) => ("argon2id", "unencrypted"),
        };
        Err(Error::corrupt(
            format!("key file {key_name}"),
            format!("its kdf is {kdf} but the repository is {mode} (config encryption)"),
        ))
    }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::backend::{Backend, LocalBackend, ObjectKind};
    use crate::crypto::Encryption;
    use crate::error::Error;
    use crate::id::KeyId;
    use crate::keys::{KdfParams, KeyFile, Password};
    use crate::repo::{InitOptions, Repository};

    const FAST: KdfParams = crate::keys::FAST_KDF_FOR_TESTS;

    /// Writes a key file holding `repo`'s master key, wrapped under
    /// `password` (or in the clear), as a storage writer could.
    fn plant_key(backend: &dyn Backend, repo: &Repository, password: Option<&Password>) {
        let file = KeyFile::create(repo.crypto().master_key(), password, FAST).unwrap();
        let bytes = file.to_bytes();
        backend
            .write(ObjectKind::Key, &KeyId::hash_of(&bytes).to_hex(), &bytes)
            .unwrap();
    }

    /// `config.encryption` is tied to the key files: an encrypted repository
    /// does not open through a key file without a KDF (no password needed),
    /// and an unencrypted one ignores password-sealed key files.
    #[test]
    fn key_files_must_agree_with_config_encryption() {
        let dir = tempfile::tempdir().unwrap();
        let password = Password::new("pw");
        let cache = dir.path().join("cache");

        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("enc")));
        let options = InitOptions {
            kdf: FAST,
            ..InitOptions::default()
        };
        let repo = Repository::init(backend.clone(), Some(&password), &options, &cache).unwrap();
        plant_key(backend.as_ref(), &repo, None);
        assert!(
            Repository::open(backend.clone(), None, &cache).is_err(),
            "opened without a password"
        );
        let err = Repository::open(backend.clone(), Some(&Password::new("wrong")), &cache).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { reason, .. } if reason.contains("kdf is none")),
            "{err}"
        );
        // The real key still opens it, and verify reports the planted key.
        let repo = Repository::open(backend, Some(&password), &cache).unwrap();
        let report = crate::verify::verify(
            &repo,
            &Default::default(),
            &crate::progress::NoProgress,
            &Default::default(),
        )
        .unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.object.starts_with("key file") && p.message.contains("kdf is none")),
            "{:?}",
            report.problems
        );

        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("plain")));
        let options = InitOptions {
            encryption: Encryption::None,
            kdf: FAST,
            ..InitOptions::default()
        };
        let repo = Repository::init(backend.clone(), None, &options, &cache).unwrap();
        let keys = backend.list(ObjectKind::Key).unwrap();
        backend.delete(ObjectKind::Key, &keys[0].name).unwrap();
        plant_key(backend.as_ref(), &repo, Some(&password));
        let err = Repository::open(backend, Some(&password), &cache).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { reason, .. } if reason.contains("kdf is argon2id")),
            "{err}"
        );
    }
}
