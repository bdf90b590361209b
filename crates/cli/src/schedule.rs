//! Schedule expressions of profiles: `every DURATION`, 5-field cron and
//! `@daily`-style names, evaluated in local time or UTC, with an optional
//! random delay. Only this module knows croner (and the jiff 0.2 it speaks).

use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use croner::parser::{CronParser, Seconds, Year};
use jiff::{SignedDuration, Timestamp};

/// Where cron fields are read: the machine's local time or UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    Local,
    Utc,
}

impl FromStr for Zone {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "local" => Ok(Zone::Local),
            "utc" | "UTC" => Ok(Zone::Utc),
            other => bail!("timezone {other:?}: expected \"local\" or \"utc\""),
        }
    }
}

#[derive(Clone, Debug)]
enum Kind {
    /// Runs `interval` after the previous scheduled time.
    Every(Duration),
    Cron(Box<croner::Cron>),
}

/// A parsed schedule expression.
#[derive(Clone, Debug)]
pub struct Expr {
    text: String,
    kind: Kind,
    zone: Zone,
}

impl Expr {
    pub fn parse(text: &str, zone: Zone) -> Result<Expr> {
        let trimmed = text.trim();
        let kind = if let Some(rest) = trimmed.strip_prefix("every ") {
            let interval: Duration = humantime::parse_duration(rest.trim())
                .with_context(|| format!("schedule {text:?}: bad duration {:?}", rest.trim()))?;
            // Finer than the daemon's tick is meaningless, and 0 would spin.
            if interval < Duration::from_secs(1) {
                bail!("schedule {text:?}: the interval must be at least 1s");
            }
            Kind::Every(interval)
        } else {
            // 5 fields as in crontab(5); `every` covers anything finer.
            let cron = CronParser::builder()
                .seconds(Seconds::Disallowed)
                .year(Year::Disallowed)
                .build()
                .parse(trimmed)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "schedule {text:?}: {e} (expected `every DURATION`, 5 cron fields or @hourly/@daily/@weekly/@monthly/@yearly)"
                    )
                })?;
            Kind::Cron(Box::new(cron))
        };
        let expr = Expr {
            text: trimmed.to_string(),
            kind,
            zone,
        };
        // A cron that can never fire (`0 0 31 2 *`) is refused here, as a
        // config error, not found out by the daemon at its first run.
        if let Kind::Cron(_) = &expr.kind {
            expr.next_after(Timestamp::now(), None)
                .map_err(|_| anyhow::anyhow!("schedule {text:?} never fires (no such date)"))?;
        }
        Ok(expr)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first scheduled time strictly after `after`. For `every`, the
    /// grid is anchored at `anchor` (the previous scheduled time), so a
    /// late start does not shift every later run.
    pub fn next_after(&self, after: Timestamp, anchor: Option<Timestamp>) -> Result<Timestamp> {
        match &self.kind {
            Kind::Every(interval) => {
                let step = SignedDuration::try_from(*interval).context("interval too long")?;
                let Some(anchor) = anchor.filter(|a| *a <= after) else {
                    return Ok(after.checked_add(step)?);
                };
                let elapsed = after.duration_since(anchor).as_nanos();
                let steps = elapsed / step.as_nanos() + 1;
                let ahead = SignedDuration::from_nanos(
                    i64::try_from(steps * step.as_nanos()).context("schedule too far ahead")?,
                );
                Ok(anchor.checked_add(ahead)?)
            }
            Kind::Cron(cron) => {
                let tz = match self.zone {
                    Zone::Local => jiff02::tz::TimeZone::system(),
                    Zone::Utc => jiff02::tz::TimeZone::UTC,
                };
                let start = jiff02::Timestamp::new(after.as_second(), after.subsec_nanosecond())
                    .context("time out of range")?
                    .to_zoned(tz);
                let next = cron
                    .find_next_occurrence(&start, false)
                    .map_err(|e| anyhow::anyhow!("schedule {:?}: no next run ({e})", self.text))?;
                let ts = next.timestamp();
                Ok(Timestamp::new(ts.as_second(), ts.subsec_nanosecond())?)
            }
        }
    }

    /// Whether the first run of a job never run before is due at once:
    /// `every` counts from the last run, and there was none.
    pub fn runs_at_first_start(&self) -> bool {
        matches!(self.kind, Kind::Every(_))
    }
}

/// A random delay in `[0, max)`; std's per-process random hasher keys are
/// randomness enough to spread start times.
pub fn random_delay(max: Duration) -> Duration {
    if max.is_zero() {
        return max;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(hasher.finish() % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_keeps_its_grid() {
        let e = Expr::parse("every 10s", Zone::Utc).unwrap();
        let anchor = ts("2026-01-01T00:00:00Z");
        assert_eq!(
            e.next_after(ts("2026-01-01T00:00:03Z"), Some(anchor)).unwrap(),
            ts("2026-01-01T00:00:10Z")
        );
        assert_eq!(
            e.next_after(ts("2026-01-01T00:00:10Z"), Some(anchor)).unwrap(),
            ts("2026-01-01T00:00:20Z")
        );
        assert_eq!(
            e.next_after(ts("2026-01-01T00:00:03Z"), None).unwrap(),
            ts("2026-01-01T00:00:13Z")
        );
        assert!(e.runs_at_first_start());
    }

    #[test]
    fn cron_and_names_in_utc() {
        let e = Expr::parse("0 2 * * *", Zone::Utc).unwrap();
        assert_eq!(
            e.next_after(ts("2026-01-01T03:00:00Z"), None).unwrap(),
            ts("2026-01-02T02:00:00Z")
        );
        let d = Expr::parse("@daily", Zone::Utc).unwrap();
        assert_eq!(
            d.next_after(ts("2026-01-01T00:00:00Z"), None).unwrap(),
            ts("2026-01-02T00:00:00Z")
        );
        let w = Expr::parse("30 4 * * 1", Zone::Utc).unwrap();
        // 2026-01-05 is a Monday.
        assert_eq!(
            w.next_after(ts("2026-01-01T00:00:00Z"), None).unwrap(),
            ts("2026-01-05T04:30:00Z")
        );
        assert!(!d.runs_at_first_start());
    }

    #[test]
    fn bad_expressions_are_errors() {
        for bad in [
            "every",
            "every 0s",
            "every 999ms",
            "0 0 31 2 *",
            "0 0 30 2 *",
            "every soon",
            "* * *",
            "61 * * * *",
            "0 0 0 * * *",
            "@often",
        ] {
            assert!(Expr::parse(bad, Zone::Local).is_err(), "{bad}");
        }
        assert!("mars".parse::<Zone>().is_err());
    }

    #[test]
    fn random_delay_is_below_its_bound() {
        for _ in 0..100 {
            assert!(random_delay(Duration::from_millis(5)) < Duration::from_millis(5));
        }
        assert_eq!(random_delay(Duration::ZERO), Duration::ZERO);
    }
}
