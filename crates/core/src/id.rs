//! Identifiers: 32-byte hashes printed as lowercase hex.
//!
//! Blob ids are keyed BLAKE3 hashes of a blob's plaintext (see [`crate::crypto`]);
//! pack, index, snapshot and key ids are plain BLAKE3 hashes of the stored
//! object's bytes, so anyone can check a stored object against its name.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error returned when a string is not a valid hex id.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a 64-digit hex id")]
pub struct ParseIdError(pub String);

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        /// Hex in JSON (snapshots), 32 raw bytes in postcard (trees, packs, index).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(serializer)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = String::deserialize(deserializer)?;
                    Self::from_hex(&text).map_err(serde::de::Error::custom)
                } else {
                    Ok(Self(<[u8; 32]>::deserialize(deserializer)?))
                }
            }
        }

        impl $name {
            /// The full id as 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, as shown in tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self, ParseIdError> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseIdError(s.to_string()))?;
                Ok(Self(bytes))
            }

            /// The plain BLAKE3 hash of `bytes` as this kind of id.
            pub fn hash_of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

define_id!(
    /// A data or tree blob: keyed BLAKE3 of its plaintext.
    BlobId
);
define_id!(
    /// A pack file: BLAKE3 of its bytes.
    PackId
);
define_id!(
    /// An index file: BLAKE3 of its bytes.
    IndexId
);
define_id!(
    /// A snapshot object: BLAKE3 of its bytes.
    SnapshotId
);
define_id!(
    /// A key file: BLAKE3 of its bytes.
    KeyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = PackId::hash_of(b"hello");
        assert_eq!(PackId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!(PackId::from_hex("xyz").is_err());
        assert!(PackId::from_hex(&"0".repeat(63)).is_err());
    }

    #[test]
    fn serde_forms() {
        let id = BlobId([0xab; 32]);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{}\"", "ab".repeat(32)));
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bytes, vec![0xab; 32]);
        assert_eq!(postcard::from_bytes::<BlobId>(&bytes).unwrap(), id);
        assert_eq!(
            serde_json::from_str::<BlobId>(&serde_json::to_string(&id).unwrap()).unwrap(),
            id
        );
    }
}
