//! Who is asking: HTTP Basic credentials checked against an htpasswd file
//! of bcrypt entries (`htpasswd -B`). Other hash schemes (MD5, SHA-1,
//! crypt) are refused when the file is loaded, not silently never matched.
//!
//! bcrypt is slow on purpose (tens of milliseconds), and a client sends its
//! credentials with every request: a successful check is remembered as the
//! BLAKE3 of user and password, so only new or wrong passwords pay for it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read the htpasswd file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} line {line}: {reason}")]
    Entry { path: PathBuf, line: usize, reason: String },
}

pub struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

// Hand-written: the hashes stay out of logs.
impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|error| HtpasswdError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry_err = |reason: &str| HtpasswdError::Entry {
                path: path.to_path_buf(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let (user, hash) = line.split_once(':').ok_or_else(|| entry_err("expected USER:HASH"))?;
            if user.is_empty() {
                return Err(entry_err("empty user name"));
            }
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(entry_err("only bcrypt entries are supported (htpasswd -B)"));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// The user an `Authorization` header value proves, if it does.
    pub fn check(&self, authorization: Option<&str>) -> Option<String> {
        let (user, password) = parse_basic(authorization?)?;
        let hash = self.users.get(&user)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(user.as_bytes());
        hasher.update(&[0]);
        hasher.update(password.as_bytes());
        let token = *hasher.finalize().as_bytes();
        if self.verified.lock().ok()?.contains(&token) {
            return Some(user);
        }
        if bcrypt::verify(&password, hash).unwrap_or(false) {
            if let Ok(mut verified) = self.verified.lock() {
                verified.insert(token);
            }
            return Some(user);
        }
        None
    }
}

/// `Basic base64(user:password)`.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("# users\nana:{hash}\n")).unwrap();
        let file = Htpasswd::load(&path).unwrap();
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert_eq!(file.check(Some(&basic("ana", "s3cret"))), Some("ana".into()));
        // Again, from the remembered check.
        assert_eq!(file.check(Some(&basic("ana", "s3cret"))), Some("ana".into()));
        assert_eq!(file.check(Some(&basic("ana", "wrong"))), None);
        assert_eq!(file.check(Some(&basic("bob", "s3cret"))), None);
        assert_eq!(file.check(Some("Bearer x")), None);
        assert_eq!(file.check(None), None);

        std::fs::write(&path, "ana:$apr1$abc$def\n").unwrap();
        assert!(Htpasswd::load(&path).is_err());
    }
}
