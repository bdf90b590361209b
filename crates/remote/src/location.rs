//! Parsing repository locations (`-r`), and opening the backend each names.
//!
//! The syntax follows restic's, so that users moving from it can keep their
//! scripts: a location that starts with a known `SCHEME:` names a remote
//! backend; anything else is a local directory.

use std::path::PathBuf;
use std::sync::Arc;

use snap_core::backend::{Backend, LocalBackend};

/// Backend options given with `-o key=value` (and, later, profile keys).
pub type Options = Vec<(String, String)>;

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Local(PathBuf),
    /// An S3-compatible bucket: `endpoint` is `http(s)://HOST[:PORT]`.
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
    },
    /// A directory on an SFTP server.
    Sftp {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
    /// A `snap serve` repository server; `url` ends in `/`.
    Rest { url: String },
    /// Any other OpenDAL service, configured entirely by `-o` options.
    Opendal { scheme: String },
}

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("invalid repository location {location:?}: {reason}")]
    Invalid { location: String, reason: String },

    #[error("{0}")]
    Unsupported(String),

    #[error(transparent)]
    Backend(#[from] snap_core::backend::BackendError),
}

impl Location {
    /// Parses a location as the user typed it.
    pub fn parse(location: &str) -> Result<Location, LocationError> {
        let invalid = |reason: &str| LocationError::Invalid {
            location: redacted(location),
            reason: reason.to_string(),
        };
        if let Some(path) = location.strip_prefix("local:") {
            if path.is_empty() {
                return Err(invalid("no directory after `local:`"));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if let Some(rest) = location.strip_prefix("s3:") {
            let (scheme, after) = rest
                .split_once("://")
                .ok_or_else(|| invalid("expected s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]"))?;
            if scheme != "http" && scheme != "https" {
                return Err(invalid("the endpoint must start with http:// or https://"));
            }
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            if host.is_empty() {
                return Err(invalid("no host in the endpoint"));
            }
            let path = path.trim_matches('/');
            let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket: expected s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]"));
            }
            return Ok(Location::S3 {
                endpoint: format!("{scheme}://{host}"),
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(rest) = location.strip_prefix("sftp:") {
            // sftp:[user@]host[:port]:/path, or sftp://[user@]host[:port]/path.
            let (user_host, path) = if let Some(url) = rest.strip_prefix("//") {
                let (authority, path) = url.split_once('/').ok_or_else(|| invalid("no path after the host"))?;
                (authority, format!("/{path}"))
            } else {
                let (authority, path) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| invalid("expected sftp:[USER@]HOST[:PORT]:/PATH"))?;
                (authority, path.to_string())
            };
            let (user, host_port) = match user_host.split_once('@') {
                Some((user, host)) => (Some(user.to_string()), host),
                None => (None, user_host),
            };
            let (host, port) = match host_port.split_once(':') {
                Some((host, port)) => (
                    host,
                    Some(port.parse::<u16>().map_err(|_| invalid("the port is not a number"))?),
                ),
                None => (host_port, None),
            };
            if host.is_empty() || path.is_empty() {
                return Err(invalid("expected sftp:[USER@]HOST[:PORT]:/PATH"));
            }
            return Ok(Location::Sftp {
                user,
                host: host.to_string(),
                port,
                path,
            });
        }
        if let Some(url) = location.strip_prefix("rest:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid("expected rest:http(s)://HOST:PORT/[NAME/]"));
            }
            let url = if url.ends_with('/') {
                url.to_string()
            } else {
                format!("{url}/")
            };
            return Ok(Location::Rest { url });
        }
        if let Some(scheme) = location.strip_prefix("opendal:") {
            if scheme.is_empty() {
                return Err(invalid("no service after `opendal:`"));
            }
            return Ok(Location::Opendal {
                scheme: scheme.to_string(),
            });
        }
        if location.is_empty() {
            return Err(invalid("it is empty"));
        }
        Ok(Location::Local(PathBuf::from(location)))
    }
}

/// `location` with the password of a `USER:PASS@` part replaced, for
/// messages: a mistyped `rest:` URL must not print its password.
fn redacted(location: &str) -> String {
    let Some(scheme_end) = location.find("//") else {
        return location.to_string();
    };
    let authority_start = scheme_end + 2;
    let rest = &location[authority_start..];
    let authority_len = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!(
                "{}{user}:***@{host}{}",
                &location[..authority_start],
                &rest[authority_len..]
            )
        }
        None => location.to_string(),
    }
}

/// Opens the backend a location names. Nothing is read or written yet.
pub fn open(location: &Location, options: &Options) -> Result<Arc<dyn Backend>, LocationError> {
    match location {
        Location::Local(path) => {
            if let Some((key, _)) = options.first() {
                return Err(LocationError::Unsupported(format!(
                    "a local repository takes no -o options (got {key:?})"
                )));
            }
            Ok(Arc::new(LocalBackend::new(path.clone())))
        }
        Location::Rest { url } => Ok(Arc::new(crate::rest::RestBackend::open(url, options)?)),
        Location::S3 {
            endpoint,
            bucket,
            prefix,
        } => crate::s3::open(endpoint, bucket, prefix, options),
        Location::Sftp { user, host, port, path } => crate::sftp::open(user.as_deref(), host, *port, path, options),
        Location::Opendal { scheme } => crate::opendal::open_scheme(scheme, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_show_a_password() {
        let err = Location::parse("rest:htp://ana:s3cret@host:8000/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret") && err.contains("ana:***@host"), "{err}");
    }

    #[test]
    fn plain_paths_are_local() {
        assert_eq!(
            Location::parse("/srv/backup").unwrap(),
            Location::Local("/srv/backup".into())
        );
        assert_eq!(Location::parse("rel/dir").unwrap(), Location::Local("rel/dir".into()));
        assert_eq!(Location::parse("local:/x").unwrap(), Location::Local("/x".into()));
        // A colon alone does not make a scheme.
        assert_eq!(Location::parse("a:b").unwrap(), Location::Local("a:b".into()));
    }

    #[test]
    fn s3_locations() {
        assert_eq!(
            Location::parse("s3:http://127.0.0.1:9000/bucket/some/prefix/").unwrap(),
            Location::S3 {
                endpoint: "http://127.0.0.1:9000".into(),
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            Location::parse("s3:https://s3.example.com/b").unwrap(),
            Location::S3 {
                endpoint: "https://s3.example.com".into(),
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        for bad in ["s3:", "s3:ftp://h/b", "s3:http://h", "s3:http:///b", "s3:http://h/"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sftp_locations() {
        assert_eq!(
            Location::parse("sftp:ana@nas:/srv/snap").unwrap(),
            Location::Sftp {
                user: Some("ana".into()),
                host: "nas".into(),
                port: None,
                path: "/srv/snap".into()
            }
        );
        assert_eq!(
            Location::parse("sftp:nas:2222:/srv/snap").unwrap(),
            Location::Sftp {
                user: None,
                host: "nas".into(),
                port: Some(2222),
                path: "/srv/snap".into()
            }
        );
        assert_eq!(
            Location::parse("sftp://ana@nas:2222/srv/snap").unwrap(),
            Location::Sftp {
                user: Some("ana".into()),
                host: "nas".into(),
                port: Some(2222),
                path: "/srv/snap".into()
            }
        );
        for bad in ["sftp:", "sftp:nas", "sftp:nas:x:/p", "sftp::/p"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rest_and_opendal_locations() {
        assert_eq!(
            Location::parse("rest:http://127.0.0.1:8000/repo").unwrap(),
            Location::Rest {
                url: "http://127.0.0.1:8000/repo/".into()
            }
        );
        assert!(Location::parse("rest:127.0.0.1:8000").is_err());
        assert_eq!(
            Location::parse("opendal:fs").unwrap(),
            Location::Opendal { scheme: "fs".into() }
        );
        assert!(Location::parse("opendal:").is_err());
    }
}
