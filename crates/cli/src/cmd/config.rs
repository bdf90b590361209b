//! `snap config`: check the config file of profiles and show them resolved.

use anyhow::Result;

use crate::global::GlobalArgs;
use crate::profile::{Config, Profile};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Check every profile of the config file (--config FILE, SNAP_CONFIG or
    /// the default) and print them resolved; errors name file, line and key.
    Check,
    /// Print one profile resolved (inheritance applied, secrets masked).
    Show {
        /// The profile (default: --profile / SNAP_PROFILE).
        name: Option<String>,
    },
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let path = Config::locate(global.config.as_deref())?;
    let config = Config::load(&path)?;
    match args.action {
        Action::Check => {
            if global.json {
                super::print_json(&config)?;
            } else {
                for profile in config.profiles.values() {
                    print_profile(profile)?;
                }
                if !global.quiet {
                    errln!(
                        "{}: {} ok",
                        path.display(),
                        super::count(config.profiles.len(), "profile", "profiles")
                    );
                }
            }
        }
        Action::Show { name } => {
            let Some(name) = name.or_else(|| global.profile.clone()) else {
                anyhow::bail!(snap_core::Error::InvalidArgument(
                    "which profile? give its name: snap config show NAME".into()
                ));
            };
            let profile = config.profile(&name)?;
            if global.json {
                super::print_json(profile)?;
            } else {
                print_profile(profile)?;
            }
        }
    }
    Ok(crate::exit::OK)
}

/// A profile as the TOML it resolves to, under its own table.
fn print_profile(profile: &Profile) -> Result<()> {
    let mut table = toml::Table::new();
    table.insert(profile.name.clone(), toml::Value::try_from(profile)?);
    let mut root = toml::Table::new();
    root.insert("profile".into(), toml::Value::Table(table));
    outln!("{}", toml::to_string(&root)?)?;
    Ok(())
}
