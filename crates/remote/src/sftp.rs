//! `sftp:[USER@]HOST[:PORT]:/PATH`: a directory on an SSH server (the NAS
//! case), through OpenDAL's SFTP service.
//!
//! The service runs the system `ssh` client (OpenSSH's multiplexing master),
//! so `~/.ssh/config` applies to HOST as it does for `ssh HOST`: aliases,
//! `IdentityFile`, `UserKnownHostsFile`, `ProxyJump`. Authentication is by
//! key or agent only (`BatchMode=yes`: never a password prompt). `-o key=`
//! names an identity file and `-o known-hosts=strict|add|accept` how an
//! unknown host key is treated (default strict: the host must be in
//! known_hosts already).
//!
//! SFTP writes go straight to the file they open, so the shared backend
//! writes `.tmp-<16 hex>` and renames it (`OpendalBackend`, `TempRename`):
//! a killed upload leaves a temporary file, never a partial object.

use std::sync::Arc;

use ::opendal::services::SftpConfig;
use ::opendal::{Configurator, Operator};
use snap_core::backend::Backend;

use crate::location::{LocationError, Options};
use crate::opendal::{OpendalBackend, Timeouts};

/// One SSH connection multiplexes the requests; a few in flight hide the
/// round trips without making the server's disk seek.
const DEFAULT_CONCURRENCY: usize = 4;

const KEYS: &str = "key, known-hosts, timeout, connections";

/// Opens an SFTP location. The SSH connection is made at the first request.
pub fn open(
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    path: &str,
    options: &Options,
) -> Result<Arc<dyn Backend>, LocationError> {
    let mut timeouts = Timeouts::DEFAULT;
    let mut concurrency = DEFAULT_CONCURRENCY;
    let mut key = None;
    let mut known_hosts = "strict".to_string();
    for (k, value) in options {
        match k.as_str() {
            "key" => key = Some(value.clone()),
            "known-hosts" => match value.as_str() {
                "strict" | "add" | "accept" => known_hosts = value.clone(),
                _ => {
                    return Err(LocationError::Unsupported(format!(
                        "-o known-hosts= takes strict, add or accept, not {value:?}"
                    )))
                }
            },
            "timeout" => timeouts = crate::s3::parse_timeout(value)?,
            "connections" => concurrency = crate::s3::parse_connections(value)?,
            _ => {
                return Err(LocationError::Unsupported(format!(
                    "an sftp: repository takes no -o {k:?} (it takes: {KEYS})"
                )))
            }
        }
    }
    let endpoint = match port {
        Some(port) => format!("ssh://{host}:{port}"),
        None => host.to_string(),
    };
    let mut config = SftpConfig::default();
    config.endpoint = Some(endpoint);
    config.root = Some(path.to_string());
    config.user = user.map(str::to_string);
    config.key = key;
    config.known_hosts_strategy = Some(known_hosts);
    crate::opendal::install_defaults();
    let op = Operator::new(config.into_builder())
        .map_err(|e| LocationError::Unsupported(format!("cannot use the SFTP location: {}", e.message())))?;
    let location = format!(
        "sftp:{}{host}{}:{path}",
        user.map(|u| format!("{u}@")).unwrap_or_default(),
        port.map(|p| format!(":{p}")).unwrap_or_default()
    );
    Ok(Arc::new(OpendalBackend::new(op, location, timeouts, concurrency)?))
}
