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

/// The bounds on the parameters of a key file this build accepts (format.md
/// §3.3). Anyone who can write to `keys/` can add a key file, and every
/// command derives a key from each key file it tries: without bounds, one
/// file with 2^32 passes or 1 GiB of memory makes every command hang or
/// swap. The lower bounds are argon2's own minimums, so the cheap test
/// settings (64 KiB, 1 pass) stay valid; the upper bounds allow four times
/// the default's work (about 1.2 s on a current core).
pub mod bounds {
    pub const MAX_PARALLELISM: u32 = 16;
    /// argon2's minimum is 8 KiB per lane.
    pub const MIN_MEMORY_KIB_PER_LANE: u32 = 8;
    /// 256 MiB.
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    pub const MAX_ITERATIONS: u32 = 16;
    /// memory_kib × iterations: four times the default (64 MiB × 3).
    pub const MAX_WORK: u64 = 4 * 64 * 1024 * 3;
    /// argon2's minimum salt is 8 bytes; snap writes 32.
    pub const MIN_SALT: usize = 8;
    pub const MAX_SALT: usize = 64;
    /// A key file is about 700 bytes; a larger one is not read.
    pub const MAX_KEY_FILE: u64 = 64 * 1024;
}

impl KdfParams {
    /// Checks the parameters against [`bounds`]; the error says which bound
    /// is exceeded.
    pub fn check(&self) -> std::result::Result<(), String> {
        use bounds::*;
        let KdfParams {
            memory_kib,
            iterations,
            parallelism,
        } = *self;
        if !(1..=MAX_PARALLELISM).contains(&parallelism) {
            return Err(format!("parallelism {parallelism} is not in 1..={MAX_PARALLELISM}"));
        }
        let min_memory = MIN_MEMORY_KIB_PER_LANE * parallelism;
        if !(min_memory..=MAX_MEMORY_KIB).contains(&memory_kib) {
            return Err(format!(
                "memory {memory_kib} KiB is not in {min_memory}..={MAX_MEMORY_KIB} KiB"
            ));
        }
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!("iterations {iterations} is not in 1..={MAX_ITERATIONS}"));
        }
        if u64::from(memory_kib) * u64::from(iterations) > MAX_WORK {
            return Err(format!(
                "memory × iterations ({memory_kib} KiB × {iterations}) exceeds {MAX_WORK} KiB"
            ));
        }
        Ok(())
    }
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
                if password.as_bytes().is_empty() {
                    return Err(Error::InvalidArgument(
                        "an empty password is not allowed (an unencrypted repository needs no password)".into(),
                    ));
                }
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
                check_kdf(params, &salt, name)?;
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
        if let Kdf::Argon2id { params, salt } = &file.kdf {
            let salt = hex::decode(salt).map_err(|e| Error::corrupt(format!("key file {name}"), e))?;
            check_kdf(params, &salt, name)?;
        }
        Ok(file)
    }
}

/// A key file's kdf within [`bounds`], before any work is spent on it.
fn check_kdf(params: &KdfParams, salt: &[u8], name: &str) -> Result<()> {
    let reason = match params.check() {
        Err(reason) => reason,
        Ok(()) if !(bounds::MIN_SALT..=bounds::MAX_SALT).contains(&salt.len()) => format!(
            "a salt of {} bytes is not in {}..={}",
            salt.len(),
            bounds::MIN_SALT,
            bounds::MAX_SALT
        ),
        Ok(()) => return Ok(()),
    };
    Err(Error::corrupt(
        format!("key file {name}"),
        format!("its argon2id parameters are outside the accepted bounds: {reason}"),
    ))
}

fn derive(password: &Password, salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    // Checked here too, so that no caller can start an unbounded derivation
    // (`init --kdf-memory-kib` included).
    params
        .check()
        .map_err(|reason| Error::InvalidArgument(format!("argon2id parameters: {reason}")))?;
    let argon_params = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|e| Error::InvalidArgument(format!("argon2 parameters {params:?}: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password.as_bytes(), salt, &mut *out)
        .map_err(|e| Error::InvalidArgument(format!("argon2: {e}")))?;
    Ok(out)
}

/// The cheapest parameters inside the bounds, for unit tests only.
#[cfg(test)]
pub(crate) const FAST_KDF_FOR_TESTS: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = FAST_KDF_FOR_TESTS;

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

    /// A key file whose kdf would take hours or a gigabyte is refused when
    /// read, before any derivation.
    #[test]
    fn refuses_key_files_with_absurd_kdf_parameters() {
        let key = MasterKey::generate();
        let file = KeyFile::create(&key, Some(&Password::new("pw")), FAST).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&file.to_bytes()).unwrap();
        for (field, value) in [
            ("iterations", 4294967295u64),
            ("iterations", 0),
            ("memory_kib", 1 << 20),
            ("memory_kib", 4),
            ("parallelism", 0),
            ("parallelism", 1000),
        ] {
            let mut hostile = json.clone();
            hostile["kdf"][field] = value.into();
            let bytes = serde_json::to_vec(&hostile).unwrap();
            let started = std::time::Instant::now();
            let err = KeyFile::from_bytes(&bytes, "k").unwrap_err();
            assert!(
                err.to_string().contains("outside the accepted bounds"),
                "{field} = {value}: {err}"
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        let mut short_salt = json.clone();
        short_salt["kdf"]["salt"] = "00".into();
        assert!(KeyFile::from_bytes(&serde_json::to_vec(&short_salt).unwrap(), "k").is_err());
        // The largest work allowed is accepted, and so are the test settings.
        let max = KdfParams {
            memory_kib: bounds::MAX_MEMORY_KIB,
            iterations: 3,
            parallelism: 4,
        };
        assert_eq!(max.check(), Ok(()));
        assert_eq!(FAST.check(), Ok(()));
        assert_eq!(KdfParams::default().check(), Ok(()));
        // Creation refuses what opening would refuse.
        let huge = KdfParams {
            memory_kib: 1 << 20,
            ..FAST
        };
        assert!(KeyFile::create(&key, Some(&Password::new("pw")), huge).is_err());
    }

    #[test]
    fn refuses_an_empty_password() {
        let key = MasterKey::generate();
        assert!(matches!(
            KeyFile::create(&key, Some(&Password::new("")), FAST),
            Err(Error::InvalidArgument(_))
        ));
    }
}
