//! What a request path names (docs/rest-protocol.md §2): which repository
//! under the server's directory, and which object or listing in it. Every
//! name is checked here, before anything touches the disk: object names are
//! exactly 64 lowercase hex digits, repository names a short plain word, so
//! no path can reach outside the served directory (`..`, `/`, a `.` prefix,
//! NUL and percent-encoded forms of them are all refused, since `%` is never
//! valid).

use snap_core::backend::ObjectKind;

/// A request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The repository: `None` is the served directory itself, `Some(NAME)`
    /// its subdirectory NAME.
    pub repo: Option<String>,
    pub resource: Resource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `/[NAME/]`: the repository itself (`POST ?create=true` makes it).
    Repository,
    /// `/[NAME/]KIND/`: the listing of one kind.
    List(ObjectKind),
    /// `/[NAME/]config` or `/[NAME/]KIND/NAME`.
    Object(ObjectKind, String),
}

/// The path segment of each kind (restic's names).
pub fn kind_dir(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => "config",
        ObjectKind::Key => "keys",
        ObjectKind::Pack => "data",
        ObjectKind::Index => "index",
        ObjectKind::Snapshot => "snapshots",
        ObjectKind::Lock => "locks",
    }
}

fn kind_of_dir(segment: &str) -> Option<ObjectKind> {
    Some(match segment {
        "keys" => ObjectKind::Key,
        "data" => ObjectKind::Pack,
        "index" => ObjectKind::Index,
        "snapshots" => ObjectKind::Snapshot,
        "locks" => ObjectKind::Lock,
        _ => return None,
    })
}

/// Object names: 64 lowercase hex digits (a BLAKE3 hash, or a lock's 32
/// random bytes).
pub fn valid_object_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Repository names: 1 to 64 of `A-Z a-z 0-9 _ -` and inner `.`, never a
/// kind's segment (which would make paths ambiguous).
pub fn valid_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.contains("..")
        && name != "config"
        && kind_of_dir(name).is_none()
}

/// Whether objects of this kind are named by the BLAKE3 hash of their bytes
/// (format.md §2), which the server checks on upload.
pub fn named_by_hash(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Key | ObjectKind::Pack | ObjectKind::Index | ObjectKind::Snapshot
    )
}

/// Parses the raw (still percent-encoded) path of a request.
pub fn parse(path: &str) -> Option<Target> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    // The first segment names a repository unless it is `config` or a kind.
    let (repo, segments) = match segments.first() {
        Some(&first) if first != "config" && kind_of_dir(first).is_none() && segments.len() > 1 => {
            if !valid_repo_name(first) {
                return None;
            }
            (Some(first.to_string()), &segments[1..])
        }
        _ => (None, &segments[..]),
    };
    let resource = match segments {
        [""] => Resource::Repository,
        ["config"] => Resource::Object(ObjectKind::Config, "config".into()),
        [kind, ""] => Resource::List(kind_of_dir(kind)?),
        [kind, name] => {
            let kind = kind_of_dir(kind)?;
            if !valid_object_name(name) {
                return None;
            }
            Resource::Object(kind, (*name).to_string())
        }
        _ => return None,
    };
    Some(Target { repo, resource })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let hex = "ab".repeat(32);
        assert_eq!(
            parse("/"),
            Some(Target {
                repo: None,
                resource: Resource::Repository
            })
        );
        assert_eq!(
            parse("/ana/"),
            Some(Target {
                repo: Some("ana".into()),
                resource: Resource::Repository
            })
        );
        assert_eq!(
            parse("/config").unwrap().resource,
            Resource::Object(ObjectKind::Config, "config".into())
        );
        assert_eq!(parse("/data/").unwrap().resource, Resource::List(ObjectKind::Pack));
        assert_eq!(
            parse(&format!("/ana/locks/{hex}")),
            Some(Target {
                repo: Some("ana".into()),
                resource: Resource::Object(ObjectKind::Lock, hex.clone())
            })
        );
        for bad in [
            "",
            "/data/../config",
            "/../config",
            "/ana/../config",
            "/%2e%2e/config",
            "/data/%2e%2e",
            "/data",
            "/ana",
            &format!("/data/{hex}/x"),
            &format!("/data/{}", "AB".repeat(32)),
            &format!("/data/{}", &hex[..63]),
            "/data/.tmp-00",
            "/.hidden/config",
            "/a/b/config",
            "/ana//config",
            "/ana\0/config",
            "/ana/conf",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
