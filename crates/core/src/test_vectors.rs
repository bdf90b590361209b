//! The test vectors published in docs/test-vectors.md, asserted exactly, so
//! an independent implementation can check itself against them and so a
//! change to ids, the key file or the chunker's gear table cannot go
//! unnoticed (each would be a format change, docs/format.md §15).

use crate::chunker::{Chunker, ChunkerParams};
use crate::compress::Compression;
use crate::config::{Config, ConfigBody};
use crate::crypto::{Crypto, Encryption, MasterKey};
use crate::id::{BlobId, PackId};
use crate::keys::{KeyFile, Password};
use crate::tree::{Node, NodeKind, Tree};

/// The vector master key: bytes 0x00..0x7f, i.e. encryption = 00..1f,
/// id = 20..3f, mac = 40..5f, chunker = 60..7f.
fn master_key() -> MasterKey {
    let byte = |start: u8| std::array::from_fn(|i| start + i as u8);
    MasterKey {
        encryption: byte(0x00),
        id: byte(0x20),
        mac: byte(0x40),
        chunker: byte(0x60),
    }
}

fn crypto() -> Crypto {
    Crypto::new(master_key(), Encryption::XChaCha20Poly1305)
}

fn vector_tree(crypto: &Crypto) -> Tree {
    let mut node = Node::new(b"hello.txt".to_vec(), NodeKind::File);
    node.mode = 0o644;
    node.uid = 1000;
    node.gid = 1000;
    node.user = "ana".into();
    node.group = "ana".into();
    node.mtime_ns = 1_700_000_000_123_456_789;
    node.ctime_ns = 1_700_000_000_123_456_789;
    node.inode = 2;
    node.device = 3;
    node.links = 1;
    node.size = 15;
    node.content = vec![crypto.blob_id(b"hello, snap v1\n")];
    Tree { nodes: vec![node] }
}

const BLOB_EMPTY: &str = "4b57adcaf21ce6ec2187b5732f8e7537feffdd7951cf299f222e55172e33c881";
const BLOB_HELLO: &str = "04ce86a04109f21e15ff6221bb6e3bb23d7cfcd5b011f866ed0c07687546c20f";
const TREE_BYTES: &str = "010968656c6c6f2e74787400a403e807e80703616e6103616e61aab4aed8c7bfce972faab4aed8c7bfce972f\
                          020301000f0104ce86a04109f21e15ff6221bb6e3bb23d7cfcd5b011f866ed0c07687546c20f000000";
const TREE_ID: &str = "82fc3bab4a9368c0f1f2f496d2841803931da6e3d0529a267e2e144c0cb1297d";
const PACK_ID: &str = "fc3421d25ebc707452b3b4bf5dc43a1289dfef39cd28bd1a20dc61e672265f09";
const CONFIG_MAC: &str = "8afa4d1e164e96fc30a80f25e21ce5dd44edb6c9d2f9dfaece1297e983b4688e";
const GEAR_FIRST: [u64; 4] = [
    0x91d1a77399a0caf8,
    0x58283c4a14362761,
    0xacfa3d0a61340c54,
    0x44f4bf9684242ba7,
];
const GEAR_LAST: u64 = 0xf387a7f6bcf5dc7e;
const CUTS_SMALL: [usize; 10] = [
    22640, 48476, 81142, 85329, 99373, 138807, 150796, 167368, 180030, 200000,
];
const CUTS_DEFAULT: [usize; 3] = [1738140, 2855197, 4194304];
const WRAPPING_KEY: &str = "0895e19f8ff6b940e638b286f15264a4e1bd0ab70a23860c74c7bf7bc1f68d92";
const SEALED_MASTER_KEY: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7\
    5db093c78a2a0983ac38315d72f78b21c12d1732055b2ea35059efd3a88fddab960efecfed1dd10e4da88257a470adb7b4ff57\
    170ce2e265ec7abf86f00c3e2015c6efda2e2e27b474c2c390289451482d84a6b0816bc7c87aa36a0567a0a4a13c3e1a78fa4a\
    ab2997cf9e0df54ac2d842136738ca6cbe52820f85e0360d7a63b31544439d4f987315913a5a095a9dcd";
const PASSWORD: &str = "correct horse battery staple";

/// The input of the chunker vectors: BLAKE3's XOF of the vector string.
fn xof_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut xof = blake3::Hasher::new();
    xof.update(b"snap chunker test vector");
    xof.finalize_xof().fill(&mut out);
    out
}

fn cut_points(chunker: &Chunker, data: &[u8]) -> Vec<usize> {
    let mut at = 0;
    chunker
        .chunks(data, None)
        .map(|chunk| {
            at += chunk.expect("reading a slice cannot fail").len();
            at
        })
        .collect()
}

#[test]
fn blob_and_tree_ids() {
    let c = crypto();
    assert_eq!(c.blob_id(b"").to_hex(), BLOB_EMPTY);
    assert_eq!(c.blob_id(b"hello, snap v1\n").to_hex(), BLOB_HELLO);
    // The definition: keyed BLAKE3 under the id key.
    assert_eq!(
        blake3::keyed_hash(&master_key().id, b"hello, snap v1\n")
            .to_hex()
            .as_str(),
        BLOB_HELLO
    );
    let encoded = vector_tree(&c).encode();
    assert_eq!(hex::encode(&encoded), TREE_BYTES);
    assert_eq!(c.blob_id(&encoded).to_hex(), TREE_ID);
    let id = BlobId::from_hex(TREE_ID).unwrap();
    assert_eq!(Tree::decode(&id, &encoded).unwrap(), vector_tree(&c));
    // Ids of stored objects are plain BLAKE3 of their bytes.
    assert_eq!(PackId::hash_of(b"snap pack").to_hex(), PACK_ID);
}

#[test]
fn config_mac() {
    let body = ConfigBody {
        version: 1,
        id: "00".repeat(32),
        encryption: Encryption::XChaCha20Poly1305,
        chunker: ChunkerParams::default(),
        pack_size: 16 << 20,
        compression: Compression::default(),
    };
    let config = Config::new(body, &crypto());
    assert_eq!(config.mac, CONFIG_MAC);
    config.verify(&crypto()).unwrap();
}

#[test]
fn key_file_unwraps_the_master_key() {
    let salt: [u8; 32] = std::array::from_fn(|i| 0xa0 + i as u8);
    let params = argon2::Params::new(64, 1, 1, Some(32)).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut wrapping = [0u8; 32];
    argon
        .hash_password_into(PASSWORD.as_bytes(), &salt, &mut wrapping)
        .unwrap();
    assert_eq!(hex::encode(wrapping), WRAPPING_KEY);

    let json = format!(
        r#"{{"version": 1, "created": "2025-03-01T09:30:12Z", "host": "h", "username": "u",
            "kdf": {{"algorithm": "argon2id", "memory_kib": 64, "iterations": 1, "parallelism": 1,
                     "salt": "{}"}},
            "master_key": "{SEALED_MASTER_KEY}"}}"#,
        hex::encode(salt)
    );
    let file = KeyFile::from_bytes(json.as_bytes(), "vector").unwrap();
    let key = file.unlock(Some(&Password::new(PASSWORD)), "vector").unwrap();
    let expected = master_key();
    assert_eq!(
        (key.encryption, key.id, key.mac, key.chunker),
        (expected.encryption, expected.id, expected.mac, expected.chunker)
    );
    // postcard(MasterKey) is the 128 key bytes in order: here 00..7f.
    let plain: Vec<u8> = (0..128).collect();
    assert_eq!(postcard::to_allocvec(&expected).unwrap(), plain);
    assert!(file.unlock(Some(&Password::new("wrong")), "vector").is_err());
}

#[test]
fn chunker_gear_table_and_cut_points() {
    let params = ChunkerParams {
        min_size: 4096,
        avg_size: 16384,
        max_size: 65536,
    };
    let chunker = Chunker::new(params, &master_key().chunker);
    let gear = chunker.gear_table();
    assert_eq!(gear[..4], GEAR_FIRST);
    assert_eq!(gear[255], GEAR_LAST);
    // The definition in docs/format.md §6, computed here independently.
    let mut bytes = [0u8; 2048];
    let mut xof = blake3::Hasher::new_keyed(&master_key().chunker);
    xof.update(b"snap chunker gear table v1");
    xof.finalize_xof().fill(&mut bytes);
    for (i, word) in bytes.chunks_exact(8).enumerate() {
        assert_eq!(gear[i], u64::from_le_bytes(word.try_into().unwrap()), "gear[{i}]");
    }
    assert_eq!(cut_points(&chunker, &xof_bytes(200_000)), CUTS_SMALL);
    let default = Chunker::new(ChunkerParams::default(), &master_key().chunker);
    assert_eq!(cut_points(&default, &xof_bytes(4 << 20)), CUTS_DEFAULT);
}
