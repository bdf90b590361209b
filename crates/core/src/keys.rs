//! Key files: the repository's [`MasterKey`], sealed under a key derived from
//! a password with argon2id. A repository may hold several key files (several
//! passwords); each is an independent JSON object under `keys/`.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};

/// A password, zeroed when dropped. Its `Debug` never shows it.
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Password(Zeroizing::new(bytes.into()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<secret>)")
    }
}

/// argon2id cost parameters, stored in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 4 lanes: borg 2's choice, about 0.3 s on a current core.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

/// How the master key is wrapped.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Kdf {
    /// Sealed with XChaCha20-Poly1305 under argon2id(password, salt).
    Argon2id {
        #[serde(flatten)]
        params: KdfParams,
        /// 32 random bytes, hex.
        salt: String,
    },
    /// Stored in the clear: the repository was made with `--no-encryption`.
    None,
}

/// One key file, stored as JSON under `keys/<BLAKE3 of the JSON>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: jiff::Timestamp,
    pub host: String,
    pub username: String,
    pub kdf: Kdf,
    /// Hex of the postcard-encoded [`MasterKey`], sealed unless `kdf` is none.
    pub master_key: String,
}

impl KeyFile {
    /// Wraps `key` under `password` (or stores it in the clear when `password` is `None`).
    pub fn create(key: &MasterKey, password: Option<&Password>, params: KdfParams) -> Result<Self> {
        let encoded = Zeroizing::new(postcard::to_allocvec(key).expect("encoding a key cannot fail"));
        let (kdf, master_key) = match password {
            Some(password) => {
                let mut salt = [0u8; 32];
                crypto::fill_random(&mut salt);
                let wrapping = derive(password, &salt, params)?;
                let sealed = crypto::seal_with(&wrapping, &encoded);
                let kdf = Kdf::Argon2id {
                    params,
                    salt: hex::encode(salt),
                };
                (kdf, hex::encode(sealed))
            }
            None => (Kdf::None, hex::encode(&*encoded)),
        };
        Ok(KeyFile {
            version: 1,
            created: jiff::Timestamp::now(),
            host: crate::snapshot::hostname(),
            username: crate::snapshot::username(),
            kdf,
            master_key,
        })
    }

    /// Unwraps the master key. A wrong password is [`Error::WrongPassword`].
    pub fn unlock(&self, password: Option<&Password>, name: &str) -> Result<MasterKey> {
        let bytes =
            Zeroizing::new(hex::decode(&self.master_key).map_err(|e| Error::corrupt(format!("key file {name}"), e))?);
        let plain = match &self.kdf {
            Kdf::Argon2id { params, salt } => {
                let password = password.ok_or(Error::WrongPassword)?;
                let salt = hex::decode(salt).map_err(|e| Error::corrupt(format!("key file {name}"), e))?;
                let wrapping = derive(password, &salt, *params)?;
                Zeroizing::new(crypto::open_with(&wrapping, &bytes).map_err(|_| Error::WrongPassword)?)
            }
            Kdf::None => bytes,
        };
        crate::codec::decode_exact(&plain).map_err(|e| Error::corrupt(format!("key file {name}"), e))
    }

    pub fn is_encrypted(&self) -> bool {
        matches!(self.kdf, Kdf::Argon2id { .. })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a key file always encodes")
    }

    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("key file {name}"), e))?;
        if file.version != 1 {
            return Err(Error::UnsupportedVersion {
                found: file.version,
                supported: 1,
            });
        }
        Ok(file)
    }
}

fn derive(password: &Password, salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let argon_params = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| Error::InvalidArgument(format!("argon2 parameters {params:?}: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password.as_bytes(), salt, &mut *out)
        .map_err(|e| Error::InvalidArgument(format!("argon2: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn unlocks_with_right_password_only() {
        let key = MasterKey::generate();
        let file = KeyFile::create(&key, Some(&Password::new("correct horse")), FAST).unwrap();
        let file = KeyFile::from_bytes(&file.to_bytes(), "k").unwrap();
        let opened = file.unlock(Some(&Password::new("correct horse")), "k").unwrap();
        assert_eq!(opened.id, key.id);
        assert!(matches!(
            file.unlock(Some(&Password::new("wrong")), "k"),
            Err(Error::WrongPassword)
        ));
        let json = String::from_utf8(file.to_bytes()).unwrap();
        assert!(!json.contains("correct horse"));
    }
}
