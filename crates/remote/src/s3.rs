//! `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`: S3-compatible object storage
//! through OpenDAL's S3 service (AWS, Garage, MinIO, Ceph, moto...).
//!
//! Credentials come from the environment only, as restic reads them:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; the
//! region from `-o region=`, `AWS_DEFAULT_REGION` or `AWS_REGION`, else
//! `us-east-1`. OpenDAL's own discovery (`~/.aws/config`, instance metadata
//! on 169.254.169.254) is off unless `-o profile=NAME` asks for a profile:
//! a backup tool that silently picks up other credentials, or waits on a
//! metadata server that is not there, surprises. Addressing is path-style
//! (`http://host/bucket/key`), what self-hosted servers expect, unless
//! `-o virtual-host-style=true`.

use std::sync::Arc;

use ::opendal::services::S3Config;
use ::opendal::{Configurator, Operator};
use snap_core::backend::Backend;

use crate::location::{LocationError, Options};
use crate::opendal::{OpendalBackend, Timeouts};

/// Requests in flight: object stores serve many at once, and a pack upload
/// is one request, so this is also the packer's upload parallelism.
const DEFAULT_CONCURRENCY: usize = 8;

/// The `-o` keys an S3 location takes.
const KEYS: &str = "region, virtual-host-style, timeout, connections, profile, storage-class";

/// Where credentials come from; never shown in a message.
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn credentials_from_env() -> Result<Option<Credentials>, LocationError> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: env("AWS_SESSION_TOKEN"),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(LocationError::Unsupported(
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        )),
        (None, Some(_)) => Err(LocationError::Unsupported(
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
        )),
    }
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, LocationError> {
    match value {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(LocationError::Unsupported(format!(
            "-o {key}= takes true or false, not {value:?}"
        ))),
    }
}

pub(crate) fn parse_timeout(value: &str) -> Result<Timeouts, LocationError> {
    let secs = value.strip_suffix('s').unwrap_or(value);
    secs.parse::<f64>()
        .ok()
        .and_then(Timeouts::from_secs)
        .ok_or_else(|| LocationError::Unsupported(format!("-o timeout= takes seconds, e.g. 30, not {value:?}")))
}

pub(crate) fn parse_connections(value: &str) -> Result<usize, LocationError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(LocationError::Unsupported(format!(
            "-o connections= takes a number from 1 to 256, not {value:?}"
        ))),
    }
}

/// Opens an S3 bucket (or a prefix in it). Nothing is sent yet.
pub fn open(endpoint: &str, bucket: &str, prefix: &str, options: &Options) -> Result<Arc<dyn Backend>, LocationError> {
    let mut region = None;
    let mut virtual_host = false;
    let mut timeouts = Timeouts::DEFAULT;
    let mut concurrency = DEFAULT_CONCURRENCY;
    let mut profile = None;
    let mut storage_class = None;
    for (key, value) in options {
        match key.as_str() {
            "region" => region = Some(value.clone()),
            "virtual-host-style" => virtual_host = parse_bool(key, value)?,
            "timeout" => timeouts = parse_timeout(value)?,
            "connections" => concurrency = parse_connections(value)?,
            "profile" => profile = Some(value.clone()),
            "storage-class" => storage_class = Some(value.clone()),
            _ => {
                return Err(LocationError::Unsupported(format!(
                    "an s3: repository takes no -o {key:?} (it takes: {KEYS})"
                )))
            }
        }
    }
    let region = region
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| env("AWS_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());

    let mut config = S3Config::default();
    config.endpoint = Some(endpoint.to_string());
    config.bucket = bucket.to_string();
    config.root = Some(format!("/{prefix}"));
    config.region = Some(region);
    // Never ask the instance metadata endpoint: it is off this machine, and
    // where it is absent the request hangs until it times out.
    config.disable_ec2_metadata = true;
    match &profile {
        // A profile is the one case where the AWS config files are wanted.
        Some(_) => config.profile = profile.clone(),
        None => config.disable_config_load = true,
    }
    match credentials_from_env()? {
        Some(creds) => {
            config.access_key_id = Some(creds.access_key_id);
            config.secret_access_key = Some(creds.secret_access_key);
            config.session_token = creds.session_token;
        }
        // No keys and no profile: unsigned requests, for public buckets
        // and servers without authentication.
        None if profile.is_none() => config.skip_signature = true,
        None => {}
    }
    config.enable_virtual_host_style = virtual_host;
    config.default_storage_class = storage_class;
    crate::opendal::install_defaults();
    let op = Operator::new(config.into_builder())
        .map_err(|e| LocationError::Unsupported(format!("cannot use the S3 location: {}", e.message())))?;
    let location = format!(
        "s3:{endpoint}/{bucket}{}{prefix}",
        if prefix.is_empty() { "" } else { "/" }
    );
    Ok(Arc::new(OpendalBackend::new(op, location, timeouts, concurrency)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_options_are_refused() {
        let err = open("http://127.0.0.1:1", "b", "", &vec![("regoin".into(), "x".into())]).unwrap_err();
        assert!(err.to_string().contains("regoin"), "{err}");
        assert!(open("http://127.0.0.1:1", "b", "", &vec![("timeout".into(), "-1".into())]).is_err());
        assert!(open(
            "http://127.0.0.1:1",
            "b",
            "",
            &vec![("virtual-host-style".into(), "maybe".into())]
        )
        .is_err());
        assert!(open("http://127.0.0.1:1", "b", "", &vec![("connections".into(), "0".into())]).is_err());
    }

    #[test]
    fn the_location_shows_no_secret() {
        let backend = open("http://127.0.0.1:1", "b", "p/q", &vec![]).unwrap();
        assert_eq!(backend.location(), "s3:http://127.0.0.1:1/b/p/q");
        assert_eq!(backend.concurrency(), 8);
    }
}
