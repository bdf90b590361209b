//! Keyed hashing and authenticated encryption.
//!
//! A repository has one [`MasterKey`]: four independent 32-byte keys drawn
//! from the OS random source at `init`. Everything stored is sealed by
//! [`Crypto::seal`]:
//!
//! - encrypted repositories: `nonce (24) || XChaCha20-Poly1305 ciphertext || tag (16)`,
//!   with a fresh random nonce per object (192 bits: random nonces never collide
//!   in practice);
//! - unencrypted repositories (`--no-encryption`): `plaintext || tag (16)`, where the
//!   tag is keyed BLAKE3 of the plaintext under the MAC key. The MAC key is
//!   then stored in the clear in the key file, so this detects damage, not
//!   deliberate forgery by someone who can read the repository.
//!
//! Blob ids are keyed BLAKE3 under the id key, so a stored id does not reveal
//! whether a known file is in the repository.

use std::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::id::BlobId;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// The secret key material of a repository. Zeroed when dropped; never printed.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    /// XChaCha20-Poly1305 key for every sealed object.
    pub encryption: [u8; 32],
    /// Keyed-BLAKE3 key for blob ids.
    pub id: [u8; 32],
    /// Keyed-BLAKE3 key for the MAC of unencrypted objects and of the config.
    pub mac: [u8; 32],
    /// Seed of the chunker's gear table, so cut points do not fingerprint files.
    pub chunker: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

impl MasterKey {
    /// Fresh key material from the operating system's random source.
    pub fn generate() -> Self {
        let mut key = MasterKey {
            encryption: [0; 32],
            id: [0; 32],
            mac: [0; 32],
            chunker: [0; 32],
        };
        fill_random(&mut key.encryption);
        fill_random(&mut key.id);
        fill_random(&mut key.mac);
        fill_random(&mut key.chunker);
        key
    }
}

/// Fills `buf` from the OS random source. Failing to get randomness is not
/// something a backup tool can recover from safely, so it panics.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// Whether objects are encrypted, as recorded in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    None,
}

/// The operations a repository needs from its master key.
#[derive(Clone)]
pub struct Crypto {
    key: MasterKey,
    aead: Option<XChaCha20Poly1305>,
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("encrypted", &self.aead.is_some())
            .finish()
    }
}

/// Sealed bytes failed authentication: damaged or forged.
#[derive(Debug, thiserror::Error)]
#[error("authentication failed (the data was damaged or changed after it was written)")]
pub struct AuthError;

impl Crypto {
    pub fn new(key: MasterKey, encryption: Encryption) -> Self {
        let aead = match encryption {
            Encryption::XChaCha20Poly1305 => Some(XChaCha20Poly1305::new(&Key::from(key.encryption))),
            Encryption::None => None,
        };
        Crypto { key, aead }
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.key
    }

    pub fn encryption(&self) -> Encryption {
        if self.aead.is_some() {
            Encryption::XChaCha20Poly1305
        } else {
            Encryption::None
        }
    }

    /// The id of a blob with this plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.key.id, plaintext).as_bytes())
    }

    /// Keyed BLAKE3 under the MAC key.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.key.mac, data).as_bytes()
    }

    /// Bytes added by [`Crypto::seal`].
    pub fn overhead(&self) -> usize {
        if self.aead.is_some() {
            NONCE_LEN + TAG_LEN
        } else {
            TAG_LEN
        }
    }

    /// Seals `plaintext`, appending the result to `out`.
    pub fn seal_into(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.seal_prefix(), 0);
        out.extend_from_slice(plaintext);
        self.seal_tail(out, start);
    }

    /// Bytes [`Crypto::seal_in_place`] needs free at the start of its buffer.
    pub fn seal_prefix(&self) -> usize {
        if self.aead.is_some() {
            NONCE_LEN
        } else {
            0
        }
    }

    /// Seals `buf[self.seal_prefix()..]` where it lies, filling the prefix
    /// and appending the tag: the bytes [`Crypto::seal`] gives, without a
    /// second copy of a large plaintext.
    pub fn seal_in_place(&self, buf: &mut Vec<u8>) {
        assert!(buf.len() >= self.seal_prefix(), "the buffer holds the seal's prefix");
        self.seal_tail(buf, 0);
    }

    /// Seals what follows the prefix at `buf[start..]` where it lies: fills
    /// the prefix (the nonce) and appends the tag.
    fn seal_tail(&self, buf: &mut Vec<u8>, start: usize) {
        match &self.aead {
            Some(aead) => aead_seal_tail(aead, buf, start),
            None => {
                let tag = self.mac(&buf[start..]);
                buf.extend_from_slice(&tag[..TAG_LEN]);
            }
        }
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + self.overhead());
        self.seal_into(plaintext, &mut out);
        out
    }

    /// Opens bytes produced by [`Crypto::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        let start = if self.aead.is_some() { NONCE_LEN } else { 0 };
        open_copy(sealed, start, |buf| Ok(self.open_in_place(buf)?.len()))
    }

    /// Opens bytes produced by [`Crypto::seal`] where they lie, returning the
    /// plaintext as a part of `sealed`: no allocation, no copy.
    pub fn open_in_place<'a>(&self, sealed: &'a mut [u8]) -> Result<&'a mut [u8], AuthError> {
        match &self.aead {
            Some(aead) => aead_open_in_place(aead, sealed),
            None => {
                if sealed.len() < TAG_LEN {
                    return Err(AuthError);
                }
                let (plaintext, tag) = sealed.split_at_mut(sealed.len() - TAG_LEN);
                let expected = self.mac(plaintext);
                if !constant_time_eq(&expected[..TAG_LEN], tag) {
                    return Err(AuthError);
                }
                Ok(plaintext)
            }
        }
    }
}

/// Bytes of OS randomness a thread draws at once for nonces: a backup seals
/// one object per small file, and a `getrandom` call for each was one of the
/// ten system calls per file. 4 KiB serves 170 nonces per call.
const NONCE_POOL: usize = 4096;

thread_local! {
    /// Random bytes from the OS not yet used as a nonce, and how many of
    /// them are used. Every byte is used once, then overwritten with zeros.
    /// Sound because snap never forks without exec: a forked copy of the
    /// pool would hand out the same nonces twice.
    static NONCES: std::cell::RefCell<(Vec<u8>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// A fresh random nonce, straight from the OS random source (batched per thread).
fn random_nonce() -> [u8; NONCE_LEN] {
    NONCES.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if *used + NONCE_LEN > bytes.len() {
            bytes.resize(NONCE_POOL, 0);
            fill_random(bytes);
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[*used..*used + NONCE_LEN]);
        bytes[*used..*used + NONCE_LEN].fill(0);
        *used += NONCE_LEN;
        nonce
    })
}

/// Seals `buf[start + NONCE_LEN..]` in place: the nonce goes to the
/// `NONCE_LEN` bytes at `start`, the tag after the ciphertext.
fn aead_seal_tail(aead: &XChaCha20Poly1305, buf: &mut Vec<u8>, start: usize) {
    let nonce = random_nonce();
    buf[start..start + NONCE_LEN].copy_from_slice(&nonce);
    let tag = aead
        .encrypt_inout_detached(&XNonce::from(nonce), &[], (&mut buf[start + NONCE_LEN..]).into())
        .expect("XChaCha20-Poly1305 accepts any message below 256 GiB");
    buf.extend_from_slice(tag.as_slice());
}

fn aead_open_in_place<'a>(aead: &XChaCha20Poly1305, sealed: &'a mut [u8]) -> Result<&'a mut [u8], AuthError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(AuthError);
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let nonce = XNonce::try_from(&*nonce).map_err(|_| AuthError)?;
    let tag = Tag::try_from(&*tag).map_err(|_| AuthError)?;
    aead.decrypt_inout_detached(&nonce, &[], (&mut *ciphertext).into(), &tag)
        .map_err(|_| AuthError)?;
    Ok(ciphertext)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seals with a key that is not a repository's master key (the key-file
/// wrapping key derived from a password).
pub fn seal_with(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + NONCE_LEN + TAG_LEN);
    out.resize(NONCE_LEN, 0);
    out.extend_from_slice(plaintext);
    aead_seal_tail(&XChaCha20Poly1305::new(&Key::from(*key)), &mut out, 0);
    out
}

/// Opens bytes produced by [`seal_with`].
pub fn open_with(key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    let aead = XChaCha20Poly1305::new(&Key::from(*key));
    open_copy(sealed, NONCE_LEN, |buf| Ok(aead_open_in_place(&aead, buf)?.len()))
}

/// Opens a copy of `sealed` with `open_in_place` (which returns the
/// plaintext's length; the plaintext starts at `start`) and returns just the
/// plaintext.
fn open_copy(
    sealed: &[u8],
    start: usize,
    open_in_place: impl FnOnce(&mut [u8]) -> Result<usize, AuthError>,
) -> Result<Vec<u8>, AuthError> {
    let mut buf = sealed.to_vec();
    let len = open_in_place(&mut buf)?;
    buf.copy_within(start..start + len, 0);
    // What is left past the plaintext is a stale copy of part of it: clear
    // it rather than leave it in spare capacity (key files open through here).
    buf[len..].fill(0);
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn both() -> [Crypto; 2] {
        [
            Crypto::new(MasterKey::generate(), Encryption::XChaCha20Poly1305),
            Crypto::new(MasterKey::generate(), Encryption::None),
        ]
    }

    #[test]
    fn opening_in_place_matches_opening() {
        for crypto in both() {
            let plain: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
            let mut sealed = crypto.seal(&plain);
            assert_eq!(crypto.open_in_place(&mut sealed).unwrap(), &plain[..]);
            let mut damaged = crypto.seal(&plain);
            damaged[30] ^= 1;
            assert!(crypto.open_in_place(&mut damaged).is_err());
            assert!(crypto.open_in_place(&mut [0u8; 3]).is_err());
        }
    }

    #[test]
    fn tampering_is_detected() {
        for c in both() {
            let mut sealed = c.seal(b"some secret bytes");
            assert_eq!(c.open(&sealed).unwrap(), b"some secret bytes");
            let last = sealed.len() - 1;
            sealed[last] ^= 1;
            assert!(c.open(&sealed).is_err());
            sealed[last] ^= 1;
            sealed[3] ^= 0x80;
            assert!(c.open(&sealed).is_err());
            assert!(c.open(&sealed[..5]).is_err());
        }
    }

    /// Nonces come from a per-thread pool of OS randomness: across several
    /// refills of the pool, and across threads, none repeats.
    #[test]
    fn pooled_nonces_never_repeat() {
        let per_thread = 3 * NONCE_POOL / NONCE_LEN + 7;
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || (0..per_thread).map(|_| random_nonce()).collect::<Vec<_>>()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in threads {
            for nonce in t.join().expect("thread") {
                assert_ne!(nonce, [0u8; NONCE_LEN], "a used (zeroed) pool byte run was handed out");
                assert!(seen.insert(nonce), "nonce repeated");
            }
        }
        assert_eq!(seen.len(), 4 * per_thread);
    }

    #[test]
    fn encrypted_output_hides_plaintext() {
        let c = &both()[0];
        let marker = b"MARKER-MARKER-MARKER";
        let sealed = c.seal(marker);
        assert!(!sealed.windows(marker.len()).any(|w| w == marker));
        assert_ne!(c.seal(marker), sealed, "nonces must differ");
    }

    #[test]
    fn blob_ids_are_keyed() {
        let [a, b] = both();
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for c in both() {
                prop_assert_eq!(c.open(&c.seal(&data)).unwrap(), data.clone());
            }
            // Sealing in place gives what sealing a copy gives.
            for c in both() {
                let mut buf = vec![0xAA; c.seal_prefix()];
                buf.extend_from_slice(&data);
                c.seal_in_place(&mut buf);
                prop_assert_eq!(buf.len(), data.len() + c.overhead());
                prop_assert_eq!(c.open(&buf).unwrap(), data.clone());
                if c.encryption() == Encryption::None {
                    prop_assert_eq!(buf, c.seal(&data));
                }
            }
            let key = [7u8; 32];
            prop_assert_eq!(open_with(&key, &seal_with(&key, &data)).unwrap(), data);
        }
    }
}
