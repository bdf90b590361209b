//! Retention policy: which snapshots `forget` keeps.
//!
//! Pure functions, no I/O. The semantics follow restic's documented `forget`
//! policy:
//!
//! - Snapshots are first split into groups ([`group`], by host, paths and/or
//!   tags) and the rules are applied to each group on its own ([`apply`]).
//! - Within a group, snapshots are walked newest first. `last N` keeps the `N`
//!   newest. A calendar rule (`hourly`, `daily`, `weekly`, `monthly`, `yearly`
//!   `N`) keeps a snapshot when its calendar bucket (hour, day, ISO week,
//!   month, year in the given time zone) differs from the bucket of the
//!   snapshot that rule kept last, until `N` buckets are used; so it keeps the
//!   newest snapshot of each of the `N` newest buckets that hold a snapshot.
//! - If a counted rule still has buckets left when the walk reaches the oldest
//!   snapshot of the group, that snapshot is kept too ("oldest daily
//!   snapshot"), so a young history is not thinned away.
//! - `within D` keeps every snapshot strictly newer than the latest snapshot
//!   minus `D` (relative to the latest snapshot, not to now). `within-daily D`
//!   and friends apply the calendar-bucket rule, without a count, to the
//!   snapshots in that window; the oldest snapshot of the group is kept as well
//!   when it lies inside the window.
//! - Snapshots dated after `now` are ignored when finding the latest snapshot
//!   for the `within` rules, and those rules keep them.
//! - `tags` keeps every snapshot that has all tags of any one of the listed
//!   tag lists.
//! - A snapshot is kept when any rule keeps it; its reasons name every rule
//!   that does. Rules that are all unused keep everything (the caller should
//!   refuse to act on an empty policy).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

use crate::id::SnapshotId;
use crate::snapshot::Snapshot;

/// How many buckets a counted rule keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    /// At most this many; `N(0)` leaves the rule unused.
    N(u32),
    /// Every bucket (restic's `unlimited`, or `-1`).
    Unlimited,
}

impl Count {
    fn is_used(self) -> bool {
        self != Count::N(0)
    }
}

impl From<u32> for Count {
    fn from(n: u32) -> Self {
        Count::N(n)
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// Parses a count: a non-negative number, `unlimited` or `-1`.
impl FromStr for Count {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "unlimited" | "-1" => Ok(Count::Unlimited),
            text => text
                .parse()
                .map(Count::N)
                .map_err(|_| format!("'{s}' is not a count (expected a number, 'unlimited' or -1)")),
        }
    }
}

/// A calendar duration of years, months, days and hours, as in `1y5m7d2h`.
///
/// Subtracted from an instant, the years, months and days are calendar units
/// in the policy's time zone (a day may be 23 or 25 hours; a month back from
/// March 31 is the last day of February), and the hours are absolute hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CalendarDuration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl CalendarDuration {
    /// True when every component is zero; a zero duration leaves its rule unused.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// As a jiff span (the components may exceed jiff's span limits, hence the `Result`).
    pub fn to_span(&self) -> Result<Span, jiff::Error> {
        Span::new()
            .try_years(self.years)?
            .try_months(self.months)?
            .try_days(self.days)?
            .try_hours(self.hours)
    }

    /// `t` minus this duration in `tz`: calendar units first, then hours.
    /// Saturates at [`Timestamp::MIN`] when the result is out of range.
    pub fn before(&self, t: Timestamp, tz: &TimeZone) -> Timestamp {
        let calendar = || -> Result<Timestamp, jiff::Error> {
            let span = Span::new()
                .try_years(self.years)?
                .try_months(self.months)?
                .try_days(self.days)?;
            let day = t.to_zoned_datetime(tz.clone()).checked_sub(span)?.timestamp();
            day.checked_sub(Span::new().try_hours(self.hours)?)
        };
        calendar().unwrap_or(Timestamp::MIN)
    }
}

/// Formats like restic: `1y2m3d4h`, leaving out zero components (`0h` when all are zero).
impl fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CalendarDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s)
    }
}

/// Parses a duration such as `1y5m7d2h`: numbers each followed by a unit,
/// `y` (years), `m` (months), `d` (days) or `h` (hours). Units may come in
/// any order and repeat (they add up); there is no unit for weeks.
pub fn parse_duration(s: &str) -> Result<CalendarDuration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration (expected e.g. 1y5m7d2h)".to_string());
    }
    let mut duration = CalendarDuration::default();
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration '{s}': expected a number at '{rest}'"));
        }
        let n: u32 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration '{s}': {} is too large", &rest[..digits]))?;
        let Some(unit) = rest[digits..].chars().next() else {
            return Err(format!("invalid duration '{s}': {n} has no unit (use y, m, d or h)"));
        };
        let field = match unit {
            'y' => &mut duration.years,
            'm' => &mut duration.months,
            'd' => &mut duration.days,
            'h' => &mut duration.hours,
            _ => {
                return Err(format!(
                    "invalid duration '{s}': unknown unit '{unit}' (use y, m, d or h)"
                ))
            }
        };
        *field = field
            .checked_add(n)
            .ok_or_else(|| format!("invalid duration '{s}': too large"))?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(duration)
}

/// The rules of a retention policy. `None`, `Some(Count::N(0))` and a zero
/// duration all leave a rule unused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepRules {
    /// Keep the newest N snapshots.
    pub last: Option<Count>,
    /// Keep the newest snapshot of each of the newest N hours that have one.
    pub hourly: Option<Count>,
    pub daily: Option<Count>,
    /// Weeks are ISO weeks, Monday to Sunday.
    pub weekly: Option<Count>,
    pub monthly: Option<Count>,
    pub yearly: Option<Count>,
    /// Keep every snapshot newer than the latest snapshot minus this.
    pub within: Option<CalendarDuration>,
    /// Keep the newest snapshot of each hour within this of the latest snapshot.
    pub within_hourly: Option<CalendarDuration>,
    pub within_daily: Option<CalendarDuration>,
    pub within_weekly: Option<CalendarDuration>,
    pub within_monthly: Option<CalendarDuration>,
    pub within_yearly: Option<CalendarDuration>,
    /// Tag lists, each comma-separated as in restic's `--keep-tag`: keep a
    /// snapshot that has all tags of any one list. An empty list (`""`)
    /// matches snapshots without tags.
    pub tags: Vec<String>,
}

impl KeepRules {
    /// True when no rule is in use: [`apply`] then keeps everything.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, c)| c.is_none())
            && self.within().is_none()
            && self.windows().iter().all(|(_, d)| d.is_none())
            && self.tags.is_empty()
    }

    /// The counted rules in use, in reason order.
    fn counts(&self) -> [(Slot, Option<Count>); 6] {
        let used = |c: Option<Count>| c.filter(|c| c.is_used());
        [
            (Slot::Last, used(self.last)),
            (Slot::Every(Period::Hourly), used(self.hourly)),
            (Slot::Every(Period::Daily), used(self.daily)),
            (Slot::Every(Period::Weekly), used(self.weekly)),
            (Slot::Every(Period::Monthly), used(self.monthly)),
            (Slot::Every(Period::Yearly), used(self.yearly)),
        ]
    }

    fn within(&self) -> Option<CalendarDuration> {
        self.within.filter(|d| !d.is_zero())
    }

    /// The windowed calendar rules in use, in reason order.
    fn windows(&self) -> [(Period, Option<CalendarDuration>); 5] {
        let used = |d: Option<CalendarDuration>| d.filter(|d| !d.is_zero());
        [
            (Period::Hourly, used(self.within_hourly)),
            (Period::Daily, used(self.within_daily)),
            (Period::Weekly, used(self.within_weekly)),
            (Period::Monthly, used(self.within_monthly)),
            (Period::Yearly, used(self.within_yearly)),
        ]
    }
}

/// A one-line summary of the rules in use, e.g. `last 3, daily 7, within 7d, tag work`.
impl fmt::Display for KeepRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (slot, count) in self.counts() {
            if let Some(count) = count {
                parts.push(format!("{} {count}", slot.name()));
            }
        }
        if let Some(d) = self.within() {
            parts.push(format!("within {d}"));
        }
        for (period, d) in self.windows() {
            if let Some(d) = d {
                parts.push(format!("{} within {d}", period.name()));
            }
        }
        parts.extend(self.tags.iter().map(|t| tag_reason(&split_tags(t))));
        if parts.is_empty() {
            f.write_str("empty policy")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Which snapshot fields split snapshots into groups; all false puts every
/// snapshot in one group. The default, as in restic, is host and paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

/// Formats as [`parse_group_by`] reads: `host,paths`, or the empty string.
impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [(self.host, "host"), (self.paths, "paths"), (self.tags, "tags")];
        let on: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
        f.write_str(&on.join(","))
    }
}

impl FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_group_by(s)
    }
}

/// Parses a comma-separated subset of `host`, `paths` and `tags`; the empty
/// string groups nothing (one group of all snapshots).
pub fn parse_group_by(s: &str) -> Result<GroupBy, String> {
    let mut by = GroupBy {
        host: false,
        paths: false,
        tags: false,
    };
    for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field {
            "host" => by.host = true,
            "paths" => by.paths = true,
            "tags" => by.tags = true,
            _ => {
                return Err(format!(
                    "unknown group-by field '{field}' (expected host, paths or tags)"
                ))
            }
        }
    }
    Ok(by)
}

/// What the snapshots of one group share; fields not grouped by are `None`.
/// Paths and tags are sorted (tags also deduplicated), so order does not matter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    pub host: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(paths) = &self.paths {
            parts.push(format!("paths [{}]", paths.join(", ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags [{}]", tags.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Splits snapshots into groups. Returns each group's key with the indices
/// (into `snapshots`, ascending) of its members; groups are sorted by key.
pub fn group(snapshots: &[(SnapshotId, Snapshot)], by: GroupBy) -> Vec<(GroupKey, Vec<usize>)> {
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, (_, snapshot)) in snapshots.iter().enumerate() {
        let key = GroupKey {
            host: by.host.then(|| snapshot.host.clone()),
            paths: by.paths.then(|| snapshot.sorted_paths()),
            // A checkpoint belongs with the snapshots it will complete.
            tags: by.tags.then(|| {
                let mut tags = snapshot.tags.clone();
                tags.retain(|t| t != crate::snapshot::CHECKPOINT_TAG);
                tags.sort();
                tags.dedup();
                tags
            }),
        };
        groups.entry(key).or_default().push(i);
    }
    groups.into_iter().collect()
}

/// The verdict on one snapshot: kept when at least one rule keeps it, and
/// then `reasons` names every such rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// Applies `rules` to the snapshots of one group. Returns one decision per
/// snapshot, in the order given (`result[i]` is for `snapshots[i]`).
///
/// The input order does not matter, except that of snapshots with equal
/// times the later one counts as newer (as with [`crate::snapshot::list`]'s
/// oldest-first order). Calendar buckets are civil hours, days, ISO weeks,
/// months and years in `tz`. `now` only matters to the `within` rules, which
/// ignore (and keep) snapshots dated after it. Reasons come in the order:
/// last, hourly, daily, weekly, monthly, yearly, within, within-hourly ...
/// within-yearly, tags.
///
/// Checkpoints (partial snapshots of a backup that has not completed) are
/// not counted by any rule and never kept in place of a complete snapshot:
/// one newer than every complete snapshot of the group is kept as the resume
/// point of an interrupted backup, an older one is removed.
pub fn apply(snapshots: &[&Snapshot], rules: &KeepRules, now: Timestamp, tz: &TimeZone) -> Vec<Decision> {
    let (complete, partial): (Vec<usize>, Vec<usize>) =
        (0..snapshots.len()).partition(|&i| !snapshots[i].is_checkpoint());
    let complete_snapshots: Vec<&Snapshot> = complete.iter().map(|&i| snapshots[i]).collect();
    let mut decisions = vec![Decision::default(); snapshots.len()];
    for (&i, decision) in complete.iter().zip(apply_complete(&complete_snapshots, rules, now, tz)) {
        decisions[i] = decision;
    }
    let newest_complete = complete_snapshots.iter().map(|s| s.time).max();
    for i in partial {
        let decision = &mut decisions[i];
        if newest_complete.is_none_or(|t| snapshots[i].time > t) {
            decision.keep = true;
            decision.reasons.push("checkpoint of an unfinished backup".to_string());
        }
        // Otherwise it is older than a complete snapshot: obsolete, removed
        // (a removed snapshot has no reasons).
    }
    decisions
}

/// [`apply`] on snapshots that are all complete.
fn apply_complete(snapshots: &[&Snapshot], rules: &KeepRules, now: Timestamp, tz: &TimeZone) -> Vec<Decision> {
    let mut decisions = vec![Decision::default(); snapshots.len()];
    if rules.is_empty() {
        for decision in &mut decisions {
            decision.keep = true;
            decision.reasons.push("policy is empty".to_string());
        }
        return decisions;
    }

    // Newest first; of equal times, the later in the input is newer.
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| snapshots[b].time.cmp(&snapshots[a].time).then(b.cmp(&a)));
    let latest = snapshots.iter().map(|s| s.time).filter(|t| *t <= now).max();
    // Without a snapshot up to now, every snapshot is in the future and kept.
    let window_start = |d: &CalendarDuration| latest.map_or(Timestamp::MIN, |t| d.before(t, tz));

    let mut counted: Vec<Counted> = rules
        .counts()
        .into_iter()
        .filter_map(|(slot, count)| {
            Some(Counted {
                slot,
                left: match count? {
                    Count::N(n) => Some(n),
                    Count::Unlimited => None,
                },
                last: None,
            })
        })
        .collect();
    let within = rules.within().map(|d| (d, window_start(&d)));
    let mut windowed: Vec<Windowed> = rules
        .windows()
        .into_iter()
        .filter_map(|(period, d)| {
            let d = d?;
            Some(Windowed {
                period,
                reason: format!("{} within {d}", period.name()),
                start: window_start(&d),
                last: None,
            })
        })
        .collect();
    let tag_lists: Vec<Vec<&str>> = rules.tags.iter().map(|t| split_tags(t)).collect();

    for (pos, &i) in order.iter().enumerate() {
        let snapshot = snapshots[i];
        let civil = tz.to_datetime(snapshot.time);
        let is_oldest = pos + 1 == order.len();
        let reasons = &mut decisions[i].reasons;

        for rule in &mut counted {
            if rule.left == Some(0) {
                continue;
            }
            let bucket = rule.slot.bucket(civil, pos);
            if rule.last != Some(bucket) {
                rule.last = Some(bucket);
                reasons.push(format!("{} snapshot", rule.slot.name()));
            } else if is_oldest {
                reasons.push(format!("oldest {} snapshot", rule.slot.name()));
            } else {
                continue;
            }
            if let Some(left) = &mut rule.left {
                *left -= 1;
            }
        }

        if let Some((d, start)) = within {
            if snapshot.time > start {
                reasons.push(format!("within {d}"));
            }
        }

        for rule in &mut windowed {
            if snapshot.time > now {
                reasons.push(format!("{} (future)", rule.reason));
                continue;
            }
            if snapshot.time <= rule.start {
                continue;
            }
            let bucket = rule.period.bucket(civil);
            if rule.last != Some(bucket) {
                rule.last = Some(bucket);
                reasons.push(rule.reason.clone());
            } else if is_oldest {
                reasons.push(format!("oldest {}", rule.reason));
            }
        }

        for list in &tag_lists {
            if has_tags(snapshot, list) {
                reasons.push(tag_reason(list));
            }
        }

        decisions[i].keep = !decisions[i].reasons.is_empty();
    }
    decisions
}

/// A calendar period, the bucket of the calendar rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// A bucket: the fields that identify a period (unused fields zero).
type Bucket = [i64; 4];

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    fn bucket(self, t: DateTime) -> Bucket {
        let (y, m, d, h): (i64, i64, i64, i64) = (t.year().into(), t.month().into(), t.day().into(), t.hour().into());
        match self {
            Period::Hourly => [y, m, d, h],
            Period::Daily => [y, m, d, 0],
            Period::Weekly => {
                let week = t.date().iso_week_date();
                [week.year().into(), week.week().into(), 0, 0]
            }
            Period::Monthly => [y, m, 0, 0],
            Period::Yearly => [y, 0, 0, 0],
        }
    }
}

/// What a counted rule buckets by: each snapshot its own (`last`) or a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Last,
    Every(Period),
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Last => "last",
            Slot::Every(period) => period.name(),
        }
    }

    /// `pos` is the snapshot's place in the newest-first walk.
    fn bucket(self, t: DateTime, pos: usize) -> Bucket {
        match self {
            Slot::Last => [pos as i64, 0, 0, 0],
            Slot::Every(period) => period.bucket(t),
        }
    }
}

/// The walking state of a counted rule.
struct Counted {
    slot: Slot,
    /// Buckets left to use; `None` is unlimited.
    left: Option<u32>,
    last: Option<Bucket>,
}

/// The walking state of a windowed calendar rule.
struct Windowed {
    period: Period,
    reason: String,
    /// Snapshots at or before this are outside the window.
    start: Timestamp,
    last: Option<Bucket>,
}

/// A `--keep-tag` value as a list of tags (empty for `""`).
fn split_tags(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn has_tags(snapshot: &Snapshot, list: &[&str]) -> bool {
    if list.is_empty() {
        snapshot.tags.is_empty()
    } else {
        list.iter().all(|want| snapshot.tags.iter().any(|t| t == want))
    }
}

fn tag_reason(list: &[&str]) -> String {
    match list {
        [] => "untagged".to_string(),
        [tag] => format!("tag {tag}"),
        _ => format!("tags {}", list.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use crate::snapshot::Summary;
    use proptest::prelude::*;

    /// `"2019-11-17 11:00"` (UTC) as a timestamp.
    fn ts(text: &str) -> Timestamp {
        format!("{}:00Z", text.replace(' ', "T"))
            .parse()
            .unwrap_or_else(|e| panic!("bad test time {text}: {e}"))
    }

    fn snapshot(time: Timestamp, host: &str, paths: &[&str], tags: &[&str]) -> Snapshot {
        Snapshot {
            time,
            host: host.to_string(),
            username: "user".to_string(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: BlobId([0; 32]),
            parent: None,
            program_version: "snap test".to_string(),
            summary: Summary::default(),
            description: None,
            original: None,
        }
    }

    fn at(time: Timestamp) -> Snapshot {
        snapshot(time, "mopped", &["/home/user/work"], &[])
    }

    /// A `now` after every test snapshot.
    fn far_future() -> Timestamp {
        ts("2100-01-01 00:00")
    }

    fn count(n: u32) -> Option<Count> {
        Some(Count::N(n))
    }

    fn dur(text: &str) -> Option<CalendarDuration> {
        Some(parse_duration(text).unwrap())
    }

    fn decide(snapshots: &[Snapshot], rules: &KeepRules, now: Timestamp, tz: &TimeZone) -> Vec<Decision> {
        let refs: Vec<&Snapshot> = snapshots.iter().collect();
        let decisions = apply(&refs, rules, now, tz);
        assert_eq!(decisions.len(), snapshots.len());
        for d in &decisions {
            assert_eq!(d.keep, !d.reasons.is_empty(), "keep must match having reasons: {d:?}");
        }
        decisions
    }

    /// The kept snapshots as (time as written, reasons), oldest first.
    fn kept<'a>(times: &[&'a str], decisions: &[Decision]) -> Vec<(&'a str, Vec<String>)> {
        times
            .iter()
            .zip(decisions)
            .filter(|(_, d)| d.keep)
            .map(|(t, d)| (*t, d.reasons.clone()))
            .collect()
    }

    struct Case {
        name: &'static str,
        /// UTC times, oldest first.
        times: &'static [&'static str],
        rules: KeepRules,
        now: Option<&'static str>,
        /// The kept snapshots with their reasons, oldest first.
        keep: &'static [(&'static str, &'static [&'static str])],
    }

    /// One backup every Sunday for 12 weeks: the example in restic's documentation.
    const SUNDAYS: &[&str] = &[
        "2019-09-01 11:00",
        "2019-09-08 11:00",
        "2019-09-15 11:00",
        "2019-09-22 11:00",
        "2019-09-29 11:00",
        "2019-10-06 11:00",
        "2019-10-13 11:00",
        "2019-10-20 11:00",
        "2019-10-27 11:00",
        "2019-11-03 11:00",
        "2019-11-10 11:00",
        "2019-11-17 11:00",
    ];

    /// Around a new year and two month ends.
    const NEW_YEAR: &[&str] = &[
        "2019-12-30 10:00",
        "2019-12-31 09:00",
        "2019-12-31 23:00",
        "2020-01-01 00:30",
        "2020-01-01 08:00",
        "2020-01-31 12:00",
        "2020-02-01 12:00",
    ];

    /// 2020 has 53 ISO weeks: Mon 2020-12-28 to Sun 2021-01-03 is 2020-W53.
    const ISO_WEEKS: &[&str] = &[
        "2020-12-27 12:00", // Sunday, 2020-W52
        "2020-12-28 12:00", // Monday, 2020-W53
        "2020-12-31 12:00", // Thursday, 2020-W53
        "2021-01-01 12:00", // Friday, 2020-W53
        "2021-01-03 12:00", // Sunday, 2020-W53
        "2021-01-04 12:00", // Monday, 2021-W01
    ];

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "docs: 12 Sundays, daily 4 keeps the last four Sundays",
                times: SUNDAYS,
                rules: KeepRules {
                    daily: count(4),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-10-27 11:00", &["daily snapshot"]),
                    ("2019-11-03 11:00", &["daily snapshot"]),
                    ("2019-11-10 11:00", &["daily snapshot"]),
                    ("2019-11-17 11:00", &["daily snapshot"]),
                ],
            },
            Case {
                name: "12 Sundays, weekly 5",
                times: SUNDAYS,
                rules: KeepRules {
                    weekly: count(5),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-10-20 11:00", &["weekly snapshot"]),
                    ("2019-10-27 11:00", &["weekly snapshot"]),
                    ("2019-11-03 11:00", &["weekly snapshot"]),
                    ("2019-11-10 11:00", &["weekly snapshot"]),
                    ("2019-11-17 11:00", &["weekly snapshot"]),
                ],
            },
            Case {
                name: "12 Sundays, monthly 3 keeps the last Sunday of each month",
                times: SUNDAYS,
                rules: KeepRules {
                    monthly: count(3),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-09-29 11:00", &["monthly snapshot"]),
                    ("2019-10-27 11:00", &["monthly snapshot"]),
                    ("2019-11-17 11:00", &["monthly snapshot"]),
                ],
            },
            Case {
                name: "12 Sundays, monthly 5: only 3 months, so the oldest is kept too",
                times: SUNDAYS,
                rules: KeepRules {
                    monthly: count(5),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-09-01 11:00", &["oldest monthly snapshot"]),
                    ("2019-09-29 11:00", &["monthly snapshot"]),
                    ("2019-10-27 11:00", &["monthly snapshot"]),
                    ("2019-11-17 11:00", &["monthly snapshot"]),
                ],
            },
            Case {
                name: "12 Sundays, yearly 1",
                times: SUNDAYS,
                rules: KeepRules {
                    yearly: count(1),
                    ..Default::default()
                },
                now: None,
                keep: &[("2019-11-17 11:00", &["yearly snapshot"])],
            },
            Case {
                name: "12 Sundays, yearly unlimited keeps the newest and the oldest",
                times: SUNDAYS,
                rules: KeepRules {
                    yearly: Some(Count::Unlimited),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-09-01 11:00", &["oldest yearly snapshot"]),
                    ("2019-11-17 11:00", &["yearly snapshot"]),
                ],
            },
            Case {
                name: "12 Sundays, daily 2 + weekly 3 + monthly 2: reasons are ORed",
                times: SUNDAYS,
                rules: KeepRules {
                    daily: count(2),
                    weekly: count(3),
                    monthly: count(2),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-10-27 11:00", &["monthly snapshot"]),
                    ("2019-11-03 11:00", &["weekly snapshot"]),
                    ("2019-11-10 11:00", &["daily snapshot", "weekly snapshot"]),
                    (
                        "2019-11-17 11:00",
                        &["daily snapshot", "weekly snapshot", "monthly snapshot"],
                    ),
                ],
            },
            Case {
                name: "12 Sundays, last 3",
                times: SUNDAYS,
                rules: KeepRules {
                    last: count(3),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-11-03 11:00", &["last snapshot"]),
                    ("2019-11-10 11:00", &["last snapshot"]),
                    ("2019-11-17 11:00", &["last snapshot"]),
                ],
            },
            Case {
                name: "12 Sundays, last 1 + within 14d + monthly 2; the window start itself is out",
                times: SUNDAYS,
                rules: KeepRules {
                    last: count(1),
                    monthly: count(2),
                    within: dur("14d"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-10-27 11:00", &["monthly snapshot"]),
                    ("2019-11-10 11:00", &["within 14d"]),
                    ("2019-11-17 11:00", &["last snapshot", "monthly snapshot", "within 14d"]),
                ],
            },
            Case {
                name: "new year: daily 3",
                times: NEW_YEAR,
                rules: KeepRules {
                    daily: count(3),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2020-01-01 08:00", &["daily snapshot"]),
                    ("2020-01-31 12:00", &["daily snapshot"]),
                    ("2020-02-01 12:00", &["daily snapshot"]),
                ],
            },
            Case {
                name: "new year: daily 10 keeps the newest of each day",
                times: NEW_YEAR,
                rules: KeepRules {
                    daily: count(10),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-12-30 10:00", &["daily snapshot"]),
                    ("2019-12-31 23:00", &["daily snapshot"]),
                    ("2020-01-01 08:00", &["daily snapshot"]),
                    ("2020-01-31 12:00", &["daily snapshot"]),
                    ("2020-02-01 12:00", &["daily snapshot"]),
                ],
            },
            Case {
                name: "new year: monthly 3 across the year change",
                times: NEW_YEAR,
                rules: KeepRules {
                    monthly: count(3),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-12-31 23:00", &["monthly snapshot"]),
                    ("2020-01-31 12:00", &["monthly snapshot"]),
                    ("2020-02-01 12:00", &["monthly snapshot"]),
                ],
            },
            Case {
                name: "new year: yearly 3, only two years, so the oldest too",
                times: NEW_YEAR,
                rules: KeepRules {
                    yearly: count(3),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-12-30 10:00", &["oldest yearly snapshot"]),
                    ("2019-12-31 23:00", &["yearly snapshot"]),
                    ("2020-02-01 12:00", &["yearly snapshot"]),
                ],
            },
            Case {
                name: "new year: hourly 4",
                times: NEW_YEAR,
                rules: KeepRules {
                    hourly: count(4),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2020-01-01 00:30", &["hourly snapshot"]),
                    ("2020-01-01 08:00", &["hourly snapshot"]),
                    ("2020-01-31 12:00", &["hourly snapshot"]),
                    ("2020-02-01 12:00", &["hourly snapshot"]),
                ],
            },
            Case {
                name: "hourly 2 within one day",
                times: &[
                    "2019-11-17 10:05",
                    "2019-11-17 10:55",
                    "2019-11-17 11:00",
                    "2019-11-17 11:59",
                    "2019-11-17 13:30",
                ],
                rules: KeepRules {
                    hourly: count(2),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-11-17 11:59", &["hourly snapshot"]),
                    ("2019-11-17 13:30", &["hourly snapshot"]),
                ],
            },
            Case {
                name: "hourly 10: three hours, so the oldest too",
                times: &[
                    "2019-11-17 10:05",
                    "2019-11-17 10:55",
                    "2019-11-17 11:00",
                    "2019-11-17 11:59",
                    "2019-11-17 13:30",
                ],
                rules: KeepRules {
                    hourly: count(10),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-11-17 10:05", &["oldest hourly snapshot"]),
                    ("2019-11-17 10:55", &["hourly snapshot"]),
                    ("2019-11-17 11:59", &["hourly snapshot"]),
                    ("2019-11-17 13:30", &["hourly snapshot"]),
                ],
            },
            Case {
                name: "ISO weeks: weekly 2; 2020-12-31 .. 2021-01-03 are all 2020-W53",
                times: ISO_WEEKS,
                rules: KeepRules {
                    weekly: count(2),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2021-01-03 12:00", &["weekly snapshot"]),
                    ("2021-01-04 12:00", &["weekly snapshot"]),
                ],
            },
            Case {
                name: "ISO weeks: weekly 4, three weeks",
                times: ISO_WEEKS,
                rules: KeepRules {
                    weekly: count(4),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2020-12-27 12:00", &["weekly snapshot"]),
                    ("2021-01-03 12:00", &["weekly snapshot"]),
                    ("2021-01-04 12:00", &["weekly snapshot"]),
                ],
            },
            Case {
                name: "ISO weeks: Dec 31 and Jan 1 share a week",
                times: &["2020-12-30 12:00", "2020-12-31 12:00", "2021-01-01 12:00"],
                rules: KeepRules {
                    weekly: count(1),
                    ..Default::default()
                },
                now: None,
                keep: &[("2021-01-01 12:00", &["weekly snapshot"])],
            },
            Case {
                name: "ISO weeks: but not a year",
                times: &["2020-12-30 12:00", "2020-12-31 12:00", "2021-01-01 12:00"],
                rules: KeepRules {
                    yearly: count(2),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2020-12-31 12:00", &["yearly snapshot"]),
                    ("2021-01-01 12:00", &["yearly snapshot"]),
                ],
            },
            Case {
                name: "within 7d: relative to the latest snapshot, not now; strictly newer",
                times: &[
                    "2019-11-10 10:00",
                    "2019-11-10 11:00",
                    "2019-11-10 11:01",
                    "2019-11-12 08:00",
                    "2019-11-17 11:00",
                ],
                rules: KeepRules {
                    within: dur("7d"),
                    ..Default::default()
                },
                now: Some("2030-01-01 00:00"),
                keep: &[
                    ("2019-11-10 11:01", &["within 7d"]),
                    ("2019-11-12 08:00", &["within 7d"]),
                    ("2019-11-17 11:00", &["within 7d"]),
                ],
            },
            Case {
                name: "within 2h",
                times: &[
                    "2019-11-17 09:00",
                    "2019-11-17 10:00",
                    "2019-11-17 10:30",
                    "2019-11-17 12:00",
                ],
                rules: KeepRules {
                    within: dur("2h"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-11-17 10:30", &["within 2h"]),
                    ("2019-11-17 12:00", &["within 2h"]),
                ],
            },
            Case {
                name: "within 1m: a month before March 31 is Feb 29 (leap year, clamped)",
                times: &[
                    "2020-02-29 11:59",
                    "2020-02-29 12:00",
                    "2020-02-29 12:01",
                    "2020-03-31 12:00",
                ],
                rules: KeepRules {
                    within: dur("1m"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2020-02-29 12:01", &["within 1m"]),
                    ("2020-03-31 12:00", &["within 1m"]),
                ],
            },
            Case {
                name: "within 1y2m3d4h",
                times: &["2019-04-12 08:00", "2019-04-12 08:01", "2020-06-15 12:00"],
                rules: KeepRules {
                    within: dur("1y2m3d4h"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-04-12 08:01", &["within 1y2m3d4h"]),
                    ("2020-06-15 12:00", &["within 1y2m3d4h"]),
                ],
            },
            Case {
                name: "within-daily 7d: one per day inside the window",
                times: &[
                    "2019-11-01 12:00",
                    "2019-11-10 12:00",
                    "2019-11-15 09:00",
                    "2019-11-15 10:00",
                    "2019-11-17 08:00",
                    "2019-11-17 20:00",
                ],
                rules: KeepRules {
                    within_daily: dur("7d"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-11-15 10:00", &["daily within 7d"]),
                    ("2019-11-17 20:00", &["daily within 7d"]),
                ],
            },
            Case {
                name: "within-daily 7d: the window reaches past the oldest, which is kept",
                times: &[
                    "2019-11-16 09:00",
                    "2019-11-16 10:00",
                    "2019-11-17 08:00",
                    "2019-11-17 20:00",
                ],
                rules: KeepRules {
                    within_daily: dur("7d"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-11-16 09:00", &["oldest daily within 7d"]),
                    ("2019-11-16 10:00", &["daily within 7d"]),
                    ("2019-11-17 20:00", &["daily within 7d"]),
                ],
            },
            Case {
                name: "within-hourly 3h + within-monthly 1y",
                times: &[
                    "2018-11-01 00:00",
                    "2019-10-05 10:00",
                    "2019-11-17 08:10",
                    "2019-11-17 08:20",
                    "2019-11-17 10:00",
                ],
                rules: KeepRules {
                    within_hourly: dur("3h"),
                    within_monthly: dur("1y"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-10-05 10:00", &["monthly within 1y"]),
                    ("2019-11-17 08:20", &["hourly within 3h"]),
                    ("2019-11-17 10:00", &["hourly within 3h", "monthly within 1y"]),
                ],
            },
            Case {
                name: "future snapshots: within uses the latest snapshot up to now and keeps the future",
                times: &[
                    "2019-11-01 12:00",
                    "2019-11-12 12:00",
                    "2019-11-17 10:00",
                    "2019-12-25 08:00",
                    "2019-12-25 09:00",
                ],
                rules: KeepRules {
                    within: dur("7d"),
                    ..Default::default()
                },
                now: Some("2019-11-17 12:00"),
                keep: &[
                    ("2019-11-12 12:00", &["within 7d"]),
                    ("2019-11-17 10:00", &["within 7d"]),
                    ("2019-12-25 08:00", &["within 7d"]),
                    ("2019-12-25 09:00", &["within 7d"]),
                ],
            },
            Case {
                name: "future snapshots: within-daily keeps them all, outside the buckets",
                times: &[
                    "2019-11-01 12:00",
                    "2019-11-12 12:00",
                    "2019-11-17 10:00",
                    "2019-12-25 08:00",
                    "2019-12-25 09:00",
                ],
                rules: KeepRules {
                    within_daily: dur("7d"),
                    ..Default::default()
                },
                now: Some("2019-11-17 12:00"),
                keep: &[
                    ("2019-11-12 12:00", &["daily within 7d"]),
                    ("2019-11-17 10:00", &["daily within 7d"]),
                    ("2019-12-25 08:00", &["daily within 7d (future)"]),
                    ("2019-12-25 09:00", &["daily within 7d (future)"]),
                ],
            },
            Case {
                name: "future snapshots: counted rules do not look at now",
                times: &[
                    "2019-11-01 12:00",
                    "2019-11-12 12:00",
                    "2019-11-17 10:00",
                    "2019-12-25 08:00",
                    "2019-12-25 09:00",
                ],
                rules: KeepRules {
                    daily: count(2),
                    ..Default::default()
                },
                now: Some("2019-11-17 12:00"),
                keep: &[
                    ("2019-11-17 10:00", &["daily snapshot"]),
                    ("2019-12-25 09:00", &["daily snapshot"]),
                ],
            },
            Case {
                name: "future snapshots only: within keeps them all",
                times: &["2019-12-24 08:00", "2019-12-25 09:00"],
                rules: KeepRules {
                    within: dur("1h"),
                    ..Default::default()
                },
                now: Some("2019-11-17 12:00"),
                keep: &[
                    ("2019-12-24 08:00", &["within 1h"]),
                    ("2019-12-25 09:00", &["within 1h"]),
                ],
            },
            Case {
                name: "empty rules keep everything",
                times: &["2019-11-16 09:00", "2019-11-17 20:00"],
                rules: KeepRules::default(),
                now: None,
                keep: &[
                    ("2019-11-16 09:00", &["policy is empty"]),
                    ("2019-11-17 20:00", &["policy is empty"]),
                ],
            },
            Case {
                name: "zero counts and durations are unused rules",
                times: &["2019-11-16 09:00", "2019-11-17 20:00"],
                rules: KeepRules {
                    last: count(0),
                    within: dur("0d"),
                    within_daily: dur("0h"),
                    ..Default::default()
                },
                now: None,
                keep: &[
                    ("2019-11-16 09:00", &["policy is empty"]),
                    ("2019-11-17 20:00", &["policy is empty"]),
                ],
            },
            Case {
                name: "no snapshots",
                times: &[],
                rules: KeepRules {
                    last: count(1),
                    ..Default::default()
                },
                now: None,
                keep: &[],
            },
        ]
    }

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for case in cases() {
            let now = case.now.map_or_else(far_future, ts);
            let mut snapshots: Vec<Snapshot> = case.times.iter().map(|t| at(ts(t))).collect();
            let got = kept(case.times, &decide(&snapshots, &case.rules, now, &TimeZone::UTC));
            let want: Vec<(&str, Vec<String>)> = case
                .keep
                .iter()
                .map(|(t, reasons)| (*t, reasons.iter().map(|r| r.to_string()).collect()))
                .collect();
            if got != want {
                failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", case.name));
            }
            // The input order does not matter (the test times are distinct).
            snapshots.reverse();
            let mut reversed = decide(&snapshots, &case.rules, now, &TimeZone::UTC);
            reversed.reverse();
            if kept(case.times, &reversed) != want {
                failures.push(format!("{}: differs with the input reversed", case.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Daily backups at noon UTC from `first` to 2019-11-17 (a Sunday).
    fn daily_until_2019_11_17(first: &str) -> (Vec<String>, Vec<Snapshot>) {
        let mut day: jiff::civil::Date = first.parse().unwrap();
        let end = jiff::civil::date(2019, 11, 17);
        let mut times = Vec::new();
        while day <= end {
            times.push(day.to_string());
            day = day.tomorrow().unwrap();
        }
        let snapshots = times.iter().map(|d| at(ts(&format!("{d} 12:00")))).collect();
        (times, snapshots)
    }

    /// restic's documentation: with a backup every day for a long time,
    /// `daily 7 weekly 5 monthly 12 yearly 75` keeps 7 dailies, 4 more
    /// weeklies, 11 or 12 more monthlies and 74 or 75 more yearlies.
    #[test]
    fn docs_daily_backups_for_a_century() {
        let rules = KeepRules {
            daily: count(7),
            weekly: count(5),
            monthly: count(12),
            yearly: count(75),
            ..Default::default()
        };
        let (days, snapshots) = daily_until_2019_11_17("1920-01-01");
        let decisions = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
        let kept: Vec<(&str, &Vec<String>)> = days
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.keep)
            .map(|(day, d)| (day.as_str(), &d.reasons))
            .collect();
        let with = |reason: &str| -> Vec<&str> {
            kept.iter()
                .filter(|(_, r)| r.iter().any(|x| x == reason))
                .map(|(day, _)| *day)
                .collect()
        };

        let daily = with("daily snapshot");
        assert_eq!(
            daily,
            [
                "2019-11-11",
                "2019-11-12",
                "2019-11-13",
                "2019-11-14",
                "2019-11-15",
                "2019-11-16",
                "2019-11-17"
            ]
        );
        // Sundays end ISO weeks.
        assert_eq!(
            with("weekly snapshot"),
            ["2019-10-20", "2019-10-27", "2019-11-03", "2019-11-10", "2019-11-17"]
        );
        assert_eq!(
            with("monthly snapshot"),
            [
                "2018-12-31",
                "2019-01-31",
                "2019-02-28",
                "2019-03-31",
                "2019-04-30",
                "2019-05-31",
                "2019-06-30",
                "2019-07-31",
                "2019-08-31",
                "2019-09-30",
                "2019-10-31",
                "2019-11-17"
            ]
        );
        let yearly = with("yearly snapshot");
        assert_eq!(yearly.len(), 75);
        assert_eq!(yearly[0], "1945-12-31");
        assert_eq!(yearly[73], "2018-12-31");
        assert_eq!(yearly[74], "2019-11-17");
        assert!(yearly[..74].iter().all(|d| d.ends_with("-12-31")));
        // 7 daily + 4 more weekly + 11 more monthly + 73 more yearly.
        assert_eq!(kept.len(), 7 + 4 + 11 + 73);
        assert_eq!(
            kept.iter().find(|(day, _)| *day == "2019-11-17").unwrap().1,
            &[
                "daily snapshot",
                "weekly snapshot",
                "monthly snapshot",
                "yearly snapshot"
            ]
        );
        assert_eq!(
            kept.iter().find(|(day, _)| *day == "2018-12-31").unwrap().1,
            &["monthly snapshot", "yearly snapshot"]
        );
        assert!(!kept.iter().any(|(_, r)| r.iter().any(|x| x.starts_with("oldest"))));

        // With only 70 years of history the yearly rule runs out of snapshots
        // and keeps the oldest as well.
        let (days, snapshots) = daily_until_2019_11_17("1950-01-01");
        let decisions = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
        assert_eq!(days[0], "1950-01-01");
        assert_eq!(decisions[0].reasons, ["oldest yearly snapshot"]);
        assert_eq!(decisions.iter().filter(|d| d.keep).count(), 7 + 4 + 11 + 68 + 1);
    }

    /// restic's documentation suggests `within-daily 7d within-weekly 1m` for irregular backups.
    #[test]
    fn within_daily_and_weekly() {
        let rules = KeepRules {
            within_daily: dur("7d"),
            within_weekly: dur("1m"),
            ..Default::default()
        };
        let (days, snapshots) = daily_until_2019_11_17("2019-10-01");
        let decisions = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
        let got: Vec<(&str, Vec<String>)> = days
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.keep)
            .map(|(day, d)| (day.as_str(), d.reasons.clone()))
            .collect();
        let daily = "daily within 7d".to_string();
        let weekly = "weekly within 1m".to_string();
        let want = vec![
            ("2019-10-20", vec![weekly.clone()]),
            ("2019-10-27", vec![weekly.clone()]),
            ("2019-11-03", vec![weekly.clone()]),
            ("2019-11-10", vec![weekly.clone()]),
            ("2019-11-11", vec![daily.clone()]),
            ("2019-11-12", vec![daily.clone()]),
            ("2019-11-13", vec![daily.clone()]),
            ("2019-11-14", vec![daily.clone()]),
            ("2019-11-15", vec![daily.clone()]),
            ("2019-11-16", vec![daily.clone()]),
            ("2019-11-17", vec![daily, weekly]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn last_unlimited_and_more_than_there_are() {
        let snapshots: Vec<Snapshot> = SUNDAYS.iter().map(|t| at(ts(t))).collect();
        for last in [Count::Unlimited, Count::N(12), Count::N(20)] {
            let rules = KeepRules {
                last: Some(last),
                ..Default::default()
            };
            let decisions = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
            assert!(
                decisions.iter().all(|d| d.reasons == ["last snapshot"]),
                "{last}: {decisions:?}"
            );
        }
    }

    #[test]
    fn equal_times_later_in_input_is_newer() {
        let time = ts("2019-11-17 11:00");
        let snapshots = vec![at(time), at(time), at(time)];
        let rules = KeepRules {
            last: count(1),
            ..Default::default()
        };
        let keep: Vec<bool> = decide(&snapshots, &rules, far_future(), &TimeZone::UTC)
            .iter()
            .map(|d| d.keep)
            .collect();
        assert_eq!(keep, [false, false, true]);
    }

    /// The report's case: a checkpoint newer than the complete snapshot must
    /// not take its place under `--keep-last 1`, nor be counted.
    #[test]
    fn checkpoints_are_not_counted_nor_kept_instead_of_complete_snapshots() {
        let complete = |t: &str| at(ts(t));
        let checkpoint = |t: &str| snapshot(ts(t), "mopped", &["/home/user/work"], &["checkpoint"]);
        let last = |n| KeepRules {
            last: count(n),
            ..Default::default()
        };
        let keep_of = |snapshots: &[Snapshot], rules: &KeepRules| -> Vec<bool> {
            decide(snapshots, rules, far_future(), &TimeZone::UTC)
                .iter()
                .map(|d| d.keep)
                .collect()
        };
        // A resume point after the newest complete snapshot: both kept.
        let snapshots = vec![
            complete("2019-11-15 11:00"),
            complete("2019-11-16 11:00"),
            checkpoint("2019-11-17 11:00"),
        ];
        assert_eq!(keep_of(&snapshots, &last(1)), [false, true, true]);
        assert_eq!(keep_of(&snapshots, &last(2)), [true, true, true]);
        let decisions = decide(&snapshots, &last(1), far_future(), &TimeZone::UTC);
        assert_eq!(decisions[2].reasons, ["checkpoint of an unfinished backup"]);
        assert_eq!(decisions[1].reasons, ["last snapshot"]);
        // A calendar rule does not spend its day on the checkpoint either.
        let daily = KeepRules {
            daily: count(1),
            ..Default::default()
        };
        let snapshots = vec![complete("2019-11-17 10:00"), checkpoint("2019-11-17 11:00")];
        assert_eq!(keep_of(&snapshots, &daily), [true, true]);
        // A checkpoint older than a complete snapshot is obsolete.
        let snapshots = vec![checkpoint("2019-11-16 11:00"), complete("2019-11-17 11:00")];
        assert_eq!(keep_of(&snapshots, &last(5)), [false, true]);
        // Alone in its group, it is kept.
        assert_eq!(keep_of(&[checkpoint("2019-11-16 11:00")], &last(1)), [true]);
        // Grouped by tags, it joins the snapshots it would complete.
        let tagged = |t: &str, tags: &[&str]| (SnapshotId([0; 32]), snapshot(ts(t), "h", &["/p"], tags));
        let all = vec![
            tagged("2019-11-16 11:00", &["daily"]),
            tagged("2019-11-17 11:00", &["daily", "checkpoint"]),
        ];
        let by = GroupBy {
            host: true,
            paths: true,
            tags: true,
        };
        let groups = group(&all, by);
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0].1, [0, 1]);
    }

    #[test]
    fn keep_tag() {
        let times = [
            "2019-11-13 10:00",
            "2019-11-14 10:00",
            "2019-11-15 10:00",
            "2019-11-16 10:00",
            "2019-11-17 10:00",
        ];
        let tags: [&[&str]; 5] = [&["work"], &["home"], &["db", "work"], &[], &["work", "home"]];
        let snapshots: Vec<Snapshot> = times
            .iter()
            .zip(tags)
            .map(|(t, tags)| snapshot(ts(t), "mopped", &["/srv"], tags))
            .collect();
        let run = |tags: &[&str], last: Option<Count>| {
            let rules = KeepRules {
                tags: tags.iter().map(|t| t.to_string()).collect(),
                last,
                ..Default::default()
            };
            kept(&times, &decide(&snapshots, &rules, far_future(), &TimeZone::UTC))
        };
        let r = |reasons: &[&str]| reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>();

        assert_eq!(
            run(&["work"], None),
            [
                ("2019-11-13 10:00", r(&["tag work"])),
                ("2019-11-15 10:00", r(&["tag work"])),
                ("2019-11-17 10:00", r(&["tag work"]))
            ]
        );
        // A list needs all its tags; separate lists are alternatives.
        assert_eq!(run(&["work,db"], None), [("2019-11-15 10:00", r(&["tags work,db"]))]);
        assert_eq!(
            run(&["db, work", "home"], None),
            [
                ("2019-11-14 10:00", r(&["tag home"])),
                ("2019-11-15 10:00", r(&["tags db,work"])),
                ("2019-11-17 10:00", r(&["tag home"]))
            ]
        );
        // The empty list matches untagged snapshots only.
        assert_eq!(run(&[""], None), [("2019-11-16 10:00", r(&["untagged"]))]);
        // A tag nobody has keeps nothing (the caller should refuse to remove a whole group).
        assert!(run(&["nope"], None).is_empty());
        // Combined with other rules.
        assert_eq!(
            run(&["home", "work"], Some(Count::N(2))),
            [
                ("2019-11-13 10:00", r(&["tag work"])),
                ("2019-11-14 10:00", r(&["tag home"])),
                ("2019-11-15 10:00", r(&["tag work"])),
                ("2019-11-16 10:00", r(&["last snapshot"])),
                ("2019-11-17 10:00", r(&["last snapshot", "tag home", "tag work"]))
            ]
        );
    }

    #[test]
    fn all_reasons_in_order() {
        let snapshots = vec![snapshot(ts("2019-11-17 10:00"), "h", &["/"], &["a"])];
        let all = Some(Count::Unlimited);
        let rules = KeepRules {
            last: all,
            hourly: all,
            daily: all,
            weekly: all,
            monthly: all,
            yearly: all,
            within: dur("1d"),
            within_hourly: dur("1h"),
            within_daily: dur("2d"),
            within_weekly: dur("3d"),
            within_monthly: dur("4d"),
            within_yearly: dur("5d"),
            tags: vec!["a".to_string(), "".to_string()],
        };
        let decisions = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
        assert_eq!(
            decisions[0].reasons,
            [
                "last snapshot",
                "hourly snapshot",
                "daily snapshot",
                "weekly snapshot",
                "monthly snapshot",
                "yearly snapshot",
                "within 1d",
                "hourly within 1h",
                "daily within 2d",
                "weekly within 3d",
                "monthly within 4d",
                "yearly within 5d",
                "tag a",
            ]
        );
        assert_eq!(
            rules.to_string(),
            "last unlimited, hourly unlimited, daily unlimited, weekly unlimited, monthly unlimited, \
             yearly unlimited, within 1d, hourly within 1h, daily within 2d, weekly within 3d, \
             monthly within 4d, yearly within 5d, tag a, untagged"
        );
        assert_eq!(KeepRules::default().to_string(), "empty policy");
    }

    #[test]
    fn is_empty() {
        assert!(KeepRules::default().is_empty());
        assert!(KeepRules {
            daily: count(0),
            within_yearly: dur("0y"),
            ..Default::default()
        }
        .is_empty());
        let used = [
            KeepRules {
                last: count(1),
                ..Default::default()
            },
            KeepRules {
                hourly: count(1),
                ..Default::default()
            },
            KeepRules {
                daily: Some(Count::Unlimited),
                ..Default::default()
            },
            KeepRules {
                weekly: count(1),
                ..Default::default()
            },
            KeepRules {
                monthly: count(1),
                ..Default::default()
            },
            KeepRules {
                yearly: count(1),
                ..Default::default()
            },
            KeepRules {
                within: dur("1h"),
                ..Default::default()
            },
            KeepRules {
                within_hourly: dur("1h"),
                ..Default::default()
            },
            KeepRules {
                within_daily: dur("1d"),
                ..Default::default()
            },
            KeepRules {
                within_weekly: dur("1m"),
                ..Default::default()
            },
            KeepRules {
                within_monthly: dur("1y"),
                ..Default::default()
            },
            KeepRules {
                within_yearly: dur("9y"),
                ..Default::default()
            },
            KeepRules {
                tags: vec![String::new()],
                ..Default::default()
            },
        ];
        for rules in used {
            assert!(!rules.is_empty(), "{rules:?}");
        }
    }

    #[test]
    fn parse_durations() {
        let d = |years, months, days, hours| CalendarDuration {
            years,
            months,
            days,
            hours,
        };
        let good = [
            ("1y2m3d4h", d(1, 2, 3, 4)),
            ("2y5m7d3h", d(2, 5, 7, 3)),
            ("7d", d(0, 0, 7, 0)),
            ("1m", d(0, 1, 0, 0)),
            ("36h", d(0, 0, 0, 36)),
            ("4h3d", d(0, 0, 3, 4)),
            ("1d1d", d(0, 0, 2, 0)),
            (" 75y ", d(75, 0, 0, 0)),
            ("0d", d(0, 0, 0, 0)),
        ];
        for (text, want) in good {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
            assert_eq!(text.parse::<CalendarDuration>(), Ok(want), "{text}");
        }
        for bad in [
            "",
            " ",
            "5",
            "d",
            "1w",
            "7D",
            "-1d",
            "1.5d",
            "1d 2h",
            "1dx",
            "99999999999d",
            "4294967295d1d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        for text in ["1y2m3d4h", "7d", "2y3h", "0h"] {
            assert_eq!(parse_duration(text).unwrap().to_string(), text);
        }
        assert_eq!(
            d(1, 0, 7, 0).to_span().unwrap().fieldwise(),
            Span::new().years(1).days(7).fieldwise()
        );
        // Out of range saturates instead of panicking.
        assert_eq!(
            d(u32::MAX, 0, 0, 0).before(ts("2019-11-17 11:00"), &TimeZone::UTC),
            Timestamp::MIN
        );
        assert_eq!(
            d(0, 0, 1, 2).before(ts("2019-11-17 11:00"), &TimeZone::UTC),
            ts("2019-11-16 09:00")
        );
    }

    #[test]
    fn parse_counts() {
        assert_eq!("unlimited".parse::<Count>(), Ok(Count::Unlimited));
        assert_eq!("-1".parse::<Count>(), Ok(Count::Unlimited));
        assert_eq!("5".parse::<Count>(), Ok(Count::N(5)));
        assert_eq!("0".parse::<Count>(), Ok(Count::N(0)));
        for bad in ["", "-2", "x", "1.5", "unlimitedd"] {
            assert!(bad.parse::<Count>().is_err(), "{bad:?}");
        }
        assert_eq!(Count::Unlimited.to_string(), "unlimited");
        assert_eq!(Count::from(3).to_string(), "3");
    }

    #[test]
    fn parse_group_by_values() {
        let by = |host, paths, tags| GroupBy { host, paths, tags };
        assert_eq!(parse_group_by("host,paths"), Ok(by(true, true, false)));
        assert_eq!(parse_group_by("host,paths,tags"), Ok(by(true, true, true)));
        assert_eq!(parse_group_by("tags, host"), Ok(by(true, false, true)));
        assert_eq!(parse_group_by("paths"), Ok(by(false, true, false)));
        assert_eq!(parse_group_by(""), Ok(by(false, false, false)));
        assert!(parse_group_by("hosts").is_err());
        assert!(parse_group_by("host,bogus").is_err());
        assert_eq!(GroupBy::default(), by(true, true, false));
        assert_eq!(GroupBy::default().to_string(), "host,paths");
        assert_eq!(by(false, false, false).to_string(), "");
        assert_eq!("host,tags".parse::<GroupBy>().unwrap().to_string(), "host,tags");
    }

    #[test]
    fn grouping() {
        let t = ts("2019-11-17 11:00");
        let list: Vec<(SnapshotId, Snapshot)> = [
            snapshot(t, "a", &["/x", "/y"], &["t1", "t2"]),
            snapshot(t, "b", &["/x"], &["t1"]),
            snapshot(t, "a", &["/y", "/x"], &["t2", "t1"]),
            snapshot(t, "a", &["/x"], &[]),
            snapshot(t, "b", &["/x"], &["t1", "t1"]),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, s)| (SnapshotId([i as u8; 32]), s))
        .collect();
        let groups = |by: &str| -> Vec<(String, Vec<usize>)> {
            group(&list, parse_group_by(by).unwrap())
                .into_iter()
                .map(|(key, members)| (key.to_string(), members))
                .collect()
        };
        let g = |key: &str, members: &[usize]| (key.to_string(), members.to_vec());

        assert_eq!(groups(""), [g("all snapshots", &[0, 1, 2, 3, 4])]);
        assert_eq!(groups("host"), [g("host a", &[0, 2, 3]), g("host b", &[1, 4])]);
        assert_eq!(
            groups("host,paths"),
            [
                g("host a, paths [/x]", &[3]),
                g("host a, paths [/x, /y]", &[0, 2]),
                g("host b, paths [/x]", &[1, 4])
            ]
        );
        assert_eq!(
            groups("paths"),
            [g("paths [/x]", &[1, 3, 4]), g("paths [/x, /y]", &[0, 2])]
        );
        assert_eq!(
            groups("tags"),
            [g("tags []", &[3]), g("tags [t1]", &[1, 4]), g("tags [t1, t2]", &[0, 2])]
        );
        assert_eq!(
            groups("host,paths,tags"),
            [
                g("host a, paths [/x], tags []", &[3]),
                g("host a, paths [/x, /y], tags [t1, t2]", &[0, 2]),
                g("host b, paths [/x], tags [t1]", &[1, 4])
            ]
        );
        assert!(group(&[], GroupBy::default()).is_empty());
        let (key, _) = &group(&list, GroupBy::default())[0];
        assert_eq!(
            key,
            &GroupKey {
                host: Some("a".into()),
                paths: Some(vec!["/x".into()]),
                tags: None
            }
        );
    }

    /// Calendar buckets follow the wall clock of the time zone, so a 23-hour
    /// or 25-hour day is still one day and the repeated hour of a DST fall-back
    /// is one hour; `within` days are calendar days.
    #[test]
    fn dst_in_europe_berlin() {
        let berlin = match TimeZone::get("Europe/Berlin") {
            Ok(tz) => tz,
            Err(e) => {
                eprintln!("skipping: no Europe/Berlin in the time zone database: {e}");
                return;
            }
        };
        let run = |times: &[&str], rules: &KeepRules, tz: &TimeZone| -> Vec<bool> {
            let snapshots: Vec<Snapshot> = times.iter().map(|t| at(ts(t))).collect();
            decide(&snapshots, rules, far_future(), tz)
                .iter()
                .map(|d| d.keep)
                .collect()
        };

        // 2021-03-28 has 23 hours in Berlin: 00:30 CET is 03-27 23:30 UTC, 23:30 CEST is 21:30 UTC.
        let spring = ["2021-03-27 11:00", "2021-03-27 23:30", "2021-03-28 21:30"];
        let daily = KeepRules {
            daily: count(2),
            ..Default::default()
        };
        assert_eq!(run(&spring, &daily, &berlin), [true, false, true]);
        assert_eq!(run(&spring, &daily, &TimeZone::UTC), [false, true, true]);

        // 2021-10-31 02:30 happens twice in Berlin: 00:30 UTC (CEST) and 01:30 UTC (CET).
        let fall = ["2021-10-30 23:30", "2021-10-31 00:30", "2021-10-31 01:30"];
        let hourly = KeepRules {
            hourly: count(2),
            ..Default::default()
        };
        assert_eq!(run(&fall, &hourly, &berlin), [true, false, true]);
        assert_eq!(run(&fall, &hourly, &TimeZone::UTC), [false, true, true]);

        // A day before 2021-03-28 12:00 CEST (10:00 UTC) is 2021-03-27 12:00 CET (11:00 UTC), 23 hours earlier.
        let within = KeepRules {
            within: dur("1d"),
            ..Default::default()
        };
        let times = ["2021-03-27 10:30", "2021-03-28 10:00"];
        assert_eq!(run(&times, &within, &berlin), [false, true]);
        assert_eq!(run(&times, &within, &TimeZone::UTC), [true, true]);
        assert_eq!(
            parse_duration("1d").unwrap().before(ts("2021-03-28 10:00"), &berlin),
            ts("2021-03-27 11:00")
        );

        // Weeks start on Monday at midnight local time: Sunday 23:30 UTC is Monday 00:30 in Berlin,
        // Sunday 22:30 UTC is still Sunday.
        let weekly = KeepRules {
            weekly: count(2),
            ..Default::default()
        };
        let times = ["2021-01-03 06:00", "2021-01-03 12:00", "2021-01-03 23:30"];
        assert_eq!(run(&times, &weekly, &berlin), [false, true, true]);
        assert_eq!(run(&times, &weekly, &TimeZone::UTC), [true, false, true]);
        let times = ["2021-01-03 06:00", "2021-01-03 12:00", "2021-01-03 22:30"];
        assert_eq!(run(&times, &weekly, &berlin), [true, false, true]);
    }

    /// Indices of `times` newest first (later index wins ties), as `apply` walks them.
    fn newest_first(times: &[Timestamp]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(b.cmp(&a)));
        order
    }

    /// Up to 40 times over about 400 days, on the minute, so buckets collide.
    fn times_strategy() -> impl Strategy<Value = Vec<Timestamp>> {
        let start = ts("2019-12-01 00:00").as_second();
        proptest::collection::vec((0i64..24 * 400, 0i64..60), 0..40).prop_map(move |offsets| {
            offsets
                .into_iter()
                .map(|(hour, minute)| Timestamp::from_second(start + hour * 3600 + minute * 60).unwrap())
                .collect()
        })
    }

    fn count_strategy() -> impl Strategy<Value = Option<Count>> {
        prop_oneof![
            2 => Just(None),
            1 => Just(Some(Count::Unlimited)),
            3 => (0u32..6).prop_map(|n| Some(Count::N(n))),
        ]
    }

    fn periods() -> [Period; 5] {
        [
            Period::Hourly,
            Period::Daily,
            Period::Weekly,
            Period::Monthly,
            Period::Yearly,
        ]
    }

    fn rules_for(period: Period, n: Count) -> KeepRules {
        let mut rules = KeepRules::default();
        let field = match period {
            Period::Hourly => &mut rules.hourly,
            Period::Daily => &mut rules.daily,
            Period::Weekly => &mut rules.weekly,
            Period::Monthly => &mut rules.monthly,
            Period::Yearly => &mut rules.yearly,
        };
        *field = Some(n);
        rules
    }

    proptest! {
        #[test]
        fn last_keeps_exactly_the_newest(times in times_strategy(), n in 1u32..10) {
            let snapshots: Vec<Snapshot> = times.iter().map(|t| at(*t)).collect();
            let rules = KeepRules { last: count(n), ..Default::default() };
            let decisions = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
            let newest: Vec<usize> = newest_first(&times).into_iter().take(n as usize).collect();
            for (i, d) in decisions.iter().enumerate() {
                prop_assert_eq!(d.keep, newest.contains(&i));
            }
            prop_assert_eq!(decisions.iter().filter(|d| d.keep).count(), times.len().min(n as usize));
        }

        #[test]
        fn a_bucket_rule_keeps_at_most_n(times in times_strategy(), p in 0usize..5, n in 1u32..10) {
            let period = periods()[p];
            let snapshots: Vec<Snapshot> = times.iter().map(|t| at(*t)).collect();
            let decisions = decide(&snapshots, &rules_for(period, Count::N(n)), far_future(), &TimeZone::UTC);
            let kept = decisions.iter().filter(|d| d.keep).count();
            prop_assert!(kept <= n as usize, "{} kept for {} {}", kept, period.name(), n);

            // Each kept snapshot is the newest of its bucket, or the oldest of all;
            // and the rule uses min(n, buckets) buckets.
            let order = newest_first(&times);
            let bucket = |i: usize| period.bucket(TimeZone::UTC.to_datetime(times[i]));
            let mut buckets: Vec<Bucket> = order.iter().map(|&i| bucket(i)).collect();
            buckets.dedup();
            let mut newest_in_bucket = Vec::new();
            for (pos, &i) in order.iter().enumerate() {
                if pos == 0 || bucket(order[pos - 1]) != bucket(i) {
                    newest_in_bucket.push(i);
                }
            }
            for (i, d) in decisions.iter().enumerate() {
                if d.keep {
                    prop_assert!(newest_in_bucket.contains(&i) || Some(&i) == order.last());
                }
            }
            let fresh = decisions.iter().filter(|d| d.reasons.iter().any(|r| !r.starts_with("oldest"))).count();
            prop_assert_eq!(fresh, buckets.len().min(n as usize));
        }

        #[test]
        fn bucket_rules_are_idempotent(
            times in times_strategy(),
            counts in proptest::collection::vec(count_strategy(), 6),
        ) {
            let rules = KeepRules {
                last: counts[0],
                hourly: counts[1],
                daily: counts[2],
                weekly: counts[3],
                monthly: counts[4],
                yearly: counts[5],
                ..Default::default()
            };
            let snapshots: Vec<Snapshot> = times.iter().map(|t| at(*t)).collect();
            let first = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
            let (kept, first_kept): (Vec<Snapshot>, Vec<Decision>) = snapshots
                .iter()
                .zip(&first)
                .filter(|(_, d)| d.keep)
                .map(|(s, d)| (s.clone(), d.clone()))
                .unzip();
            let second = decide(&kept, &rules, far_future(), &TimeZone::UTC);
            prop_assert!(second.iter().all(|d| d.keep));
            prop_assert_eq!(second, first_kept);
        }

        #[test]
        fn input_order_does_not_matter(
            times in times_strategy(),
            counts in proptest::collection::vec(count_strategy(), 3),
            within in 0u32..400,
        ) {
            let mut times = times;
            times.sort();
            times.dedup();
            let rules = KeepRules {
                last: counts[0],
                daily: counts[1],
                weekly: counts[2],
                within: Some(CalendarDuration { days: within, ..Default::default() }),
                within_monthly: Some(CalendarDuration { hours: within * 12, ..Default::default() }),
                ..Default::default()
            };
            let mut snapshots: Vec<Snapshot> = times.iter().map(|t| at(*t)).collect();
            let forward = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
            snapshots.reverse();
            let mut backward = decide(&snapshots, &rules, far_future(), &TimeZone::UTC);
            backward.reverse();
            prop_assert_eq!(forward, backward);
        }
    }
}
