//! `forget`: which snapshots a retention policy removes, per group, and
//! removing them. The decisions are [`crate::policy`]'s (a pure function);
//! this module applies them to a repository's snapshots and returns the
//! plan as serde structs (the documented `snap forget --json` array), so
//! every frontend shows and removes the same thing. It never prunes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::lock::LockGuard;
use crate::policy::{self, GroupBy, GroupKey, KeepRules};
use crate::repo::Repository;
use crate::snapshot::{self, Filter, Snapshot};

/// One snapshot in a [`ForgetGroup`], with why it is kept or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetEntry {
    pub id: String,
    pub time: String,
    pub reasons: Vec<String>,
}

impl ForgetEntry {
    pub fn new(id: &SnapshotId, snapshot: &Snapshot, reasons: Vec<String>) -> Self {
        ForgetEntry {
            id: id.to_hex(),
            time: snapshot.time.to_string(),
            reasons,
        }
    }
}

/// The decisions for one group, newest first in each list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetGroup {
    pub group: GroupKey,
    pub keep: Vec<ForgetEntry>,
    pub remove: Vec<ForgetEntry>,
}

/// What a policy decides: the groups as documented, and the snapshots to
/// remove with their records (for frontends that show more than the JSON).
#[derive(Clone, Debug)]
pub struct ForgetPlan {
    pub groups: Vec<ForgetGroup>,
    /// Per group, newest first: each snapshot, whether it is kept, and why.
    pub decisions: Vec<Vec<(SnapshotId, Snapshot, policy::Decision)>>,
    pub remove: Vec<SnapshotId>,
}

/// How to apply a policy.
#[derive(Clone, Debug)]
pub struct PolicyOptions {
    pub rules: KeepRules,
    pub group_by: GroupBy,
    /// Only these snapshots are considered.
    pub filter: Filter,
    /// Allow a policy to remove every complete snapshot of a group.
    pub allow_empty_group: bool,
}

/// Decides, per group of the snapshots `options.filter` matches, which to
/// keep and which to remove, as of `now` in `tz`. Refuses (removing
/// nothing) a policy that would leave a group without a complete snapshot,
/// unless `allow_empty_group`.
pub fn plan(
    repo: &Repository,
    options: &PolicyOptions,
    now: jiff::Timestamp,
    tz: &jiff::tz::TimeZone,
) -> Result<ForgetPlan> {
    if options.rules.is_empty() {
        return Err(Error::InvalidArgument(
            "no policy: give snapshot ids or --keep-* options (nothing was removed)".into(),
        ));
    }
    let all = snapshot::list_matching(repo, &options.filter)?;
    let mut out = ForgetPlan {
        groups: Vec::new(),
        decisions: Vec::new(),
        remove: Vec::new(),
    };
    for (key, members) in policy::group(&all, options.group_by) {
        let snapshots: Vec<&Snapshot> = members.iter().map(|&i| &all[i].1).collect();
        let decisions = policy::apply(&snapshots, &options.rules, now, tz);
        // A checkpoint kept as a resume point does not make up for the
        // complete snapshots.
        let complete = snapshots.iter().filter(|s| !s.is_checkpoint()).count();
        let kept_complete = snapshots
            .iter()
            .zip(&decisions)
            .filter(|(s, d)| d.keep && !s.is_checkpoint())
            .count();
        if complete > 0 && kept_complete == 0 && !options.allow_empty_group {
            return Err(Error::InvalidArgument(format!(
                "the policy would remove every snapshot of group {key}; nothing was removed (--allow-empty-group to do it anyway)"
            )));
        }
        let mut group = ForgetGroup {
            group: key,
            keep: Vec::new(),
            remove: Vec::new(),
        };
        let mut detail = Vec::new();
        // Newest first, as people read retention tables.
        for (&i, decision) in members.iter().zip(decisions).rev() {
            let (id, snapshot) = &all[i];
            let entry = ForgetEntry::new(id, snapshot, decision.reasons.clone());
            if decision.keep {
                group.keep.push(entry);
            } else {
                group.remove.push(entry);
                out.remove.push(*id);
            }
            detail.push((*id, snapshot.clone(), decision));
        }
        out.groups.push(group);
        out.decisions.push(detail);
    }
    Ok(out)
}

/// Removes `ids` under `repo`'s exclusive lock. Their data stays until a
/// prune.
pub fn remove(repo: &Repository, ids: &[SnapshotId], lock: &LockGuard) -> Result<()> {
    for id in ids {
        snapshot::delete(repo, id, lock)?;
    }
    Ok(())
}
