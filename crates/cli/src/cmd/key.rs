//! `snap key list | add | remove | passwd`.

use anyhow::{Context, Result};
use serde::Serialize;
use snap_core::keyring;
use snap_core::keys::KdfParams;
use snap_core::lock::LockKind;

use crate::global::GlobalArgs;
use crate::password;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// List the key files (passwords) of the repository.
    List,
    /// Add a password. It is read from --new-password-file, or asked for.
    Add {
        #[arg(long)]
        new_password_file: Option<std::path::PathBuf>,
    },
    /// Remove a key file by id (prefix). Not the one in use, not the last.
    Remove { id: String },
    /// Change the password of the key in use.
    Passwd {
        #[arg(long)]
        new_password_file: Option<std::path::PathBuf>,
    },
}

#[derive(Serialize)]
struct KeyJson {
    id: String,
    current: bool,
    created: String,
    host: String,
    username: String,
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    match args.what {
        What::List => {
            let keys = keyring::list(&repo)?;
            if global.json {
                let out: Vec<KeyJson> = keys
                    .iter()
                    .map(|k| KeyJson {
                        id: k.id.to_hex(),
                        current: k.current,
                        created: k.file.created.to_string(),
                        host: k.file.host.clone(),
                        username: k.file.username.clone(),
                    })
                    .collect();
                super::print_json(&out)?;
            } else {
                outln!("  ID        Created              User@Host")?;
                for k in keys {
                    outln!(
                        "{} {}  {}  {}@{}",
                        if k.current { "*" } else { " " },
                        k.id.short(),
                        super::local_time(&k.file.created),
                        k.file.username,
                        k.file.host
                    )?;
                }
            }
        }
        What::Add { new_password_file } => {
            let lock = global.lock(&repo, LockKind::Shared, "key add")?;
            let new = password::get_new(new_password_file.as_deref())?;
            let id = keyring::add(&repo, &new, KdfParams::default(), &lock).context("cannot add the key")?;
            report(global, "added key", &id)?;
        }
        What::Remove { id } => {
            let lock = global.lock(&repo, LockKind::Exclusive, "key remove")?;
            let id = keyring::remove(&repo, &id, &lock)?;
            report(global, "removed key", &id)?;
        }
        What::Passwd { new_password_file } => {
            let lock = global.lock(&repo, LockKind::Shared, "key passwd")?;
            let new = password::get_new(new_password_file.as_deref())?;
            let id = keyring::change_password(&repo, &new, KdfParams::default(), &lock)
                .context("cannot change the password")?;
            report(global, "password changed; new key", &id)?;
        }
    }
    Ok(crate::exit::OK)
}

fn report(global: &GlobalArgs, what: &str, id: &snap_core::id::KeyId) -> Result<()> {
    if global.json {
        super::print_json(&serde_json::json!({ "id": id.to_hex() }))?;
    } else if !global.quiet {
        outln!("{what} {}", id.short())?;
    }
    Ok(())
}
