//! `snap forget`: remove snapshots by id or by a retention policy.

use anyhow::{bail, Result};
use snap_core::forget::{self, ForgetEntry, ForgetGroup, PolicyOptions};
use snap_core::id::SnapshotId;
use snap_core::lock::LockKind;
use snap_core::policy::{self, GroupBy, GroupKey, KeepRules};

use crate::global::GlobalArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshots to remove (ids or unique prefixes), instead of a policy.
    ids: Vec<String>,
    #[command(flatten)]
    keep: crate::profile::Retention,
    /// Apply the policy per group of snapshots with equal host, paths, tags.
    #[arg(long, default_value = "host,paths", value_parser = policy::parse_group_by)]
    group_by: GroupBy,
    /// Consider only snapshots of this host, these paths, these tags (and
    /// `latest` is the newest of them).
    #[command(flatten)]
    select: super::SelectArgs,
    /// Allow a policy to remove every snapshot of a group.
    #[arg(long)]
    allow_empty_group: bool,
    /// Show what would be removed and why the rest is kept; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run `prune` afterwards.
    #[arg(long)]
    prune: bool,
    /// With --prune: repack packs whose unused share exceeds this.
    #[arg(long, default_value = "5%", value_parser = super::prune::parse_share)]
    max_unused: f64,
}

impl Args {
    /// With no snapshot ids and no policy flag, the profile's retention
    /// policy (README "Profiles").
    pub fn apply_profile(&mut self, profile: &crate::profile::Profile) {
        if let Some(retention) = &profile.retention {
            if self.ids.is_empty() && self.keep.rules().is_empty() {
                self.keep = retention.clone();
            }
        }
    }
}

pub fn run(global: &GlobalArgs, args: Args) -> Result<i32> {
    let repo = global.open()?;
    let lock = global.lock(&repo, LockKind::Exclusive, "forget")?;
    let rules = args.keep.rules();
    let mut to_remove: Vec<SnapshotId> = Vec::new();
    if !args.ids.is_empty() {
        if !rules.is_empty() {
            bail!(snap_core::Error::InvalidArgument(
                "give snapshot ids or a policy, not both".into()
            ));
        }
        let filter = args.select.filter()?;
        let mut named = Vec::new();
        for spec in &args.ids {
            let (id, snapshot) = snap_core::snapshot::find_in(&repo, spec, &filter)?;
            if !to_remove.contains(&id) {
                to_remove.push(id);
                named.push(ForgetEntry::new(
                    &id,
                    &snapshot,
                    vec!["named on the command line".to_string()],
                ));
            }
        }
        if global.json {
            // The documented array of groups: one group of everything, with
            // the named snapshots to remove.
            super::print_json(&[ForgetGroup {
                group: GroupKey {
                    host: None,
                    paths: None,
                    tags: None,
                },
                keep: Vec::new(),
                remove: named,
            }])?;
        } else if !global.quiet {
            for id in &to_remove {
                outln!(
                    "{} snapshot {}",
                    if args.dry_run { "would remove" } else { "remove" },
                    id.short()
                )?;
            }
        }
    } else {
        to_remove = apply_policy(global, &repo, &args, rules)?;
    }
    if !args.dry_run {
        forget::remove(&repo, &to_remove, &lock)?;
        if !global.quiet && !global.json {
            outln!("removed {}", super::count(to_remove.len(), "snapshot", "snapshots"))?;
        }
    }
    if args.prune {
        let prune_args = super::prune::Args {
            dry_run: args.dry_run,
            max_unused: args.max_unused,
        };
        super::prune::run_locked(global, &repo, &prune_args, &lock)?;
    }
    Ok(crate::exit::OK)
}

/// Decides per group (snap_core::forget), prints the decisions, and
/// returns the snapshots to remove.
fn apply_policy(
    global: &GlobalArgs,
    repo: &snap_core::repo::Repository,
    args: &Args,
    rules: KeepRules,
) -> Result<Vec<SnapshotId>> {
    let options = PolicyOptions {
        rules,
        group_by: args.group_by,
        filter: args.select.filter()?,
        allow_empty_group: args.allow_empty_group,
    };
    let plan = forget::plan(repo, &options, jiff::Timestamp::now(), &jiff::tz::TimeZone::system())?;
    if global.json {
        super::print_json(&plan.groups)?;
    } else if !global.quiet {
        for (group, decisions) in plan.groups.iter().zip(&plan.decisions) {
            outln!(
                "group {}: keep {}, remove {}",
                crate::term::printable(&group.group.to_string()),
                group.keep.len(),
                group.remove.len()
            )?;
            for (id, snapshot, decision) in decisions {
                let verdict = if decision.keep { "keep  " } else { "remove" };
                outln!(
                    "  {verdict} {}  {}  {}",
                    id.short(),
                    super::local_time(&snapshot.time),
                    decision.reasons.join(", ")
                )?;
            }
        }
    }
    Ok(plan.remove)
}
