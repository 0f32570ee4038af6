//! When a BackupSchedule fires: the slots of a cron expression in a time zone, which of them are due,
//! missed or next, the jitter added to each, and the names of the MySQLBackups they create. Pure.
//!
//! **Time zones.** The cron expression is matched against wall-clock times of `timeZone`, and each
//! matching wall-clock time becomes an instant the way RFC 5545 and JavaScript's Temporal do
//! ("compatible" disambiguation):
//! - a wall-clock time that does not exist (the hour skipped when clocks go forward) fires that much
//!   later: `30 2 * * *` in Europe/Berlin fires at 03:30 on the last Sunday of March;
//! - a wall-clock time that occurs twice (the hour repeated when clocks go back) fires once, at its first
//!   occurrence: a daily backup at 02:30 runs once on the last Sunday of October, not twice.
//!
//! Instants are kept strictly increasing, so a shifted slot never fires twice or out of order.
//!
//! **Due and missed.** A slot is due when its fire time (the slot plus its jitter) has passed. Of the
//! slots due since the cursor (`status.lastScheduleTime`), only the newest is started, and only if it is
//! not older than `startingDeadlineSeconds`; the others are counted as missed. This is what Kubernetes
//! CronJobs do, and it keeps a controller that was down for a day from starting a backup per missed slot.

use std::str::FromStr;

use croner::Cron;

use crate::stable_hash;
use jiff::{Timestamp, tz::TimeZone};

/// Errors in a schedule's spec, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("spec.schedule {expr:?} is not a 5-field cron expression or @shorthand: {reason}")]
    Cron { expr: String, reason: String },
    /// The cron expression has seconds or years, which a backup schedule does not take.
    #[error("spec.schedule {0:?} has {1} fields; a backup schedule takes 5 (minute hour day month weekday)")]
    FieldCount(String, usize),
    /// The time zone is unknown.
    #[error("spec.timeZone {zone:?} is not an IANA time zone: {reason}")]
    TimeZone { zone: String, reason: String },
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    jitter_seconds: u64,
    seed: u64,
}

/// At most this many missed slots are counted in one reconcile (a minute schedule suspended for a year
/// would otherwise mean half a million steps); the count says "at least".
pub const MISSED_COUNT_CAP: u64 = 10_000;

/// What is due at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The slot to start now, if any.
    pub start: Option<Timestamp>,
    /// Slots that came due since the cursor and will not be started (capped at [`MISSED_COUNT_CAP`]).
    pub missed: u64,
    /// The new cursor: the newest slot that came due, started or missed.
    pub cursor: Timestamp,
    /// The next slot after the cursor, and when it fires (jitter included).
    pub next: Option<(Timestamp, Timestamp)>,
}

impl Schedule {
    /// Parses `expr` in `time_zone` (default UTC). Each slot fires up to `jitter_seconds` late, by an
    /// amount fixed by `seed` (the schedule's uid) and the slot, so retries and restarts agree on it.
    pub fn parse(expr: &str, time_zone: Option<&str>, jitter_seconds: u64, seed: &str) -> Result<Self, ScheduleError> {
        let trimmed = expr.trim();
        if !trimmed.starts_with('@') {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 {
                return Err(ScheduleError::FieldCount(expr.to_string(), fields));
            }
        }
        let cron = Cron::from_str(trimmed)
            .map_err(|e| ScheduleError::Cron { expr: expr.to_string(), reason: e.to_string() })?;
        let tz = match time_zone {
            None => TimeZone::UTC,
            Some(zone) => TimeZone::get(zone)
                .map_err(|e| ScheduleError::TimeZone { zone: zone.to_string(), reason: e.to_string() })?,
        };
        Ok(Self { cron, tz, jitter_seconds, seed: stable_hash(&[seed.as_bytes()]) })
    }

    /// Slots strictly after `after` and at most `until`, oldest first, at most `limit` of them.
    pub fn slots(&self, after: Timestamp, until: Timestamp, limit: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        // Start a little before `after` in wall-clock time: a shifted or repeated hour can map wall-clock
        // times before it to instants after it.
        let start = after.to_zoned(self.tz.clone()).datetime() - jiff::SignedDuration::from_hours(3);
        let mut last = after;
        for civil in self.cron.iter_after(start) {
            let Ok(zoned) = self.tz.to_ambiguous_zoned(civil).compatible() else { continue };
            let t = zoned.timestamp();
            if t <= last {
                continue;
            }
            if t > until || out.len() >= limit {
                break;
            }
            out.push(t);
            last = t;
        }
        out
    }

    /// The first slot after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.slots(after, Timestamp::MAX, 1).into_iter().next()
    }

    /// When `slot` fires: the slot plus its jitter, in `0..=jitter_seconds`.
    pub fn fire_time(&self, slot: Timestamp) -> Timestamp {
        if self.jitter_seconds == 0 {
            return slot;
        }
        let offset =
            stable_hash(&[&self.seed.to_le_bytes(), &slot.as_second().to_le_bytes()]) % (self.jitter_seconds + 1);
        slot.checked_add(jiff::SignedDuration::from_secs(offset as i64)).unwrap_or(slot)
    }

    /// What is due at `now` for a schedule whose cursor is `cursor`, with an optional starting deadline.
    pub fn due(&self, cursor: Timestamp, now: Timestamp, deadline_seconds: Option<i64>) -> Due {
        // Slots whose fire time has passed: the slot itself is at most the fire time.
        let candidates = self.slots(cursor, now, MISSED_COUNT_CAP as usize + 1);
        let due: Vec<Timestamp> = candidates.into_iter().filter(|s| self.fire_time(*s) <= now).collect();
        let Some(&newest) = due.last() else {
            return Due { start: None, missed: 0, cursor, next: self.next_fire(cursor) };
        };
        let within_deadline = deadline_seconds
            .is_none_or(|d| now.duration_since(self.fire_time(newest)) <= jiff::SignedDuration::from_secs(d));
        let start = within_deadline.then_some(newest);
        let missed = (due.len() as u64 - u64::from(within_deadline)).min(MISSED_COUNT_CAP);
        Due { start, missed, cursor: newest, next: self.next_fire(newest) }
    }

    fn next_fire(&self, after: Timestamp) -> Option<(Timestamp, Timestamp)> {
        self.next_after(after).map(|s| (s, self.fire_time(s)))
    }
}

/// Name of the MySQLBackup a schedule creates for `slot`: `<schedule>-<UTC slot as YYYYMMDD-HHMM>`.
pub fn child_name(schedule: &str, slot: Timestamp) -> String {
    format!("{schedule}-{}", slot.strftime("%Y%m%d-%H%M"))
}

/// Name of the `binlog` incremental a schedule's `binlogSchedule` creates for `slot`:
/// `<schedule>-i-<UTC slot as YYYYMMDD-HHMM>`.
pub fn incremental_name(schedule: &str, slot: Timestamp) -> String {
    format!("{schedule}-i-{}", slot.strftime("%Y%m%d-%H%M"))
}

/// Name of the MySQLBackup an on-demand trigger creates: `<schedule>-manual-<hash of the trigger>`, so
/// the same trigger value never creates a second backup.
pub fn on_demand_name(schedule: &str, trigger: &str) -> String {
    format!("{schedule}-manual-{:08x}", stable_hash(&[trigger.as_bytes()]) as u32)
}

/// Longest schedule name whose children's names stay within 63 characters (they become label values).
pub const MAX_SCHEDULE_NAME: usize = 63 - "-manual-0123abcd".len();

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn berlin(expr: &str) -> Schedule {
        Schedule::parse(expr, Some("Europe/Berlin"), 0, "uid").unwrap()
    }

    fn strings(v: &[Timestamp]) -> Vec<String> {
        v.iter().map(|t| t.to_string()).collect()
    }

    /// The first ten slots of `s` between `from` and `to`, as text.
    fn slots_of(s: &Schedule, from: &str, to: &str) -> Vec<String> {
        strings(&s.slots(t(from), t(to), 10))
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(
            Schedule::parse("0 2 * *", None, 0, "u").unwrap_err().to_string(),
            "spec.schedule \"0 2 * *\" has 4 fields; a backup schedule takes 5 (minute hour day month weekday)"
        );
        assert_eq!(
            Schedule::parse("0 0 2 * * *", None, 0, "u").unwrap_err(),
            ScheduleError::FieldCount("0 0 2 * * *".into(), 6)
        );
        let err = Schedule::parse("61 2 * * *", None, 0, "u").unwrap_err().to_string();
        assert!(
            err.starts_with("spec.schedule \"61 2 * * *\" is not a 5-field cron expression or @shorthand: "),
            "{err}"
        );
        let err = Schedule::parse("@daily", Some("Mars/Olympus"), 0, "u").unwrap_err().to_string();
        assert!(err.starts_with("spec.timeZone \"Mars/Olympus\" is not an IANA time zone: "), "{err}");
    }

    #[test]
    fn shorthands_and_utc_default() {
        assert_eq!(
            slots_of(&Schedule::parse("@daily", None, 0, "u").unwrap(), "2026-11-22T10:00:00Z", "2026-11-25T00:00:00Z"),
            ["2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"]
        );
        let s = Schedule::parse("@hourly", None, 0, "u").unwrap();
        assert_eq!(s.next_after(t("2026-11-22T10:00:00Z")), Some(t("2026-11-22T11:00:00Z")));
    }

    #[test]
    fn a_skipped_wall_clock_time_fires_later_by_the_gap() {
        // Clocks go from 02:00 to 03:00 in Berlin on 2026-03-29 (01:00 UTC).
        assert_eq!(
            slots_of(&berlin("30 2 * * *"), "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:30:00Z", // 02:30 does not exist: 03:30 CEST
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        // Every 30 minutes in the skipped hour: both shifted, each once, in order.
        assert_eq!(
            slots_of(&berlin("*/30 2 * * *"), "2026-03-28T12:00:00Z", "2026-03-29T12:00:00Z"),
            ["2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"]
        );
        // Every 30 minutes all night: the shifted slots coincide with real ones and fire once.
        assert_eq!(
            slots_of(&berlin("*/30 1-3 * * *"), "2026-03-28T23:59:00Z", "2026-03-29T02:00:00Z"),
            ["2026-03-29T00:00:00Z", "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"]
        );
    }

    #[test]
    fn a_repeated_wall_clock_time_fires_once() {
        // Clocks go from 03:00 back to 02:00 in Berlin on 2026-10-25 (01:00 UTC).
        let s = berlin("30 2 * * *");
        assert_eq!(
            strings(&s.slots(t("2026-10-24T12:00:00Z"), t("2026-10-26T12:00:00Z"), 10)),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // Hourly: 02:00 happens twice and fires once; every other hour fires.
        assert_eq!(
            slots_of(&berlin("0 * * * *"), "2026-10-24T23:30:00Z", "2026-10-25T03:00:00Z"),
            ["2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"]
        );
        // A cursor inside the repeated hour does not fire its first occurrence again.
        let s = berlin("30 2 * * *");
        assert_eq!(s.next_after(t("2026-10-25T00:30:00Z")), Some(t("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn leap_days_fire_only_in_leap_years() {
        assert_eq!(
            slots_of(
                &Schedule::parse("0 3 29 2 *", None, 0, "u").unwrap(),
                "2026-01-01T00:00:00Z",
                "2033-01-01T00:00:00Z"
            ),
            ["2028-02-29T03:00:00Z", "2032-02-29T03:00:00Z"]
        );
        // The last day of February, every year.
        assert_eq!(
            slots_of(
                &Schedule::parse("0 3 L 2 *", None, 0, "u").unwrap(),
                "2027-01-01T00:00:00Z",
                "2029-01-01T00:00:00Z"
            ),
            ["2027-02-28T03:00:00Z", "2028-02-29T03:00:00Z"]
        );
    }

    #[test]
    fn the_newest_due_slot_starts_and_older_ones_are_missed() {
        let s = Schedule::parse("0 * * * *", None, 0, "u").unwrap();
        // The controller was away from 01:00 to 05:10: 02:00..05:00 came due.
        let d = s.due(t("2026-11-22T01:00:00Z"), t("2026-11-22T05:10:00Z"), None);
        assert_eq!(d.start, Some(t("2026-11-22T05:00:00Z")));
        assert_eq!(d.missed, 3);
        assert_eq!(d.cursor, t("2026-11-22T05:00:00Z"));
        assert_eq!(d.next, Some((t("2026-11-22T06:00:00Z"), t("2026-11-22T06:00:00Z"))));
        // With a 5-minute deadline, 05:00 is too old as well: nothing starts, all four are missed.
        let d = s.due(t("2026-11-22T01:00:00Z"), t("2026-11-22T05:10:00Z"), Some(300));
        assert_eq!((d.start, d.missed, d.cursor), (None, 4, t("2026-11-22T05:00:00Z")));
        // Exactly at the deadline still starts.
        let d = s.due(t("2026-11-22T04:00:00Z"), t("2026-11-22T05:05:00Z"), Some(300));
        assert_eq!((d.start, d.missed), (Some(t("2026-11-22T05:00:00Z")), 0));
        // Nothing due: the cursor stays, next is reported.
        let d = s.due(t("2026-11-22T05:00:00Z"), t("2026-11-22T05:59:59Z"), None);
        assert_eq!((d.start, d.missed, d.cursor), (None, 0, t("2026-11-22T05:00:00Z")));
        assert_eq!(d.next.map(|n| n.0), Some(t("2026-11-22T06:00:00Z")));
    }

    #[test]
    fn resuming_after_a_long_suspension_counts_misses_up_to_the_cap() {
        let s = Schedule::parse("* * * * *", None, 0, "u").unwrap();
        let d = s.due(t("2026-01-01T00:00:00Z"), t("2026-03-01T00:00:00Z"), Some(60));
        assert_eq!(d.missed, MISSED_COUNT_CAP);
        assert_eq!(d.start, None, "only the newest slot could start, and it is past the deadline");
    }

    #[test]
    fn jitter_is_bounded_stable_and_spread() {
        let a = Schedule::parse("0 * * * *", None, 600, "uid-a").unwrap();
        let b = Schedule::parse("0 * * * *", None, 600, "uid-b").unwrap();
        let slots = a.slots(t("2026-11-01T00:00:00Z"), t("2026-11-08T00:00:00Z"), 1000);
        assert_eq!(slots.len(), 168);
        let mut distinct = std::collections::BTreeSet::new();
        for s in &slots {
            let off = a.fire_time(*s).duration_since(*s).as_secs();
            assert!((0..=600).contains(&off), "offset {off}");
            assert_eq!(a.fire_time(*s), a.clone().fire_time(*s), "stable");
            distinct.insert(off);
        }
        assert!(distinct.len() > 100, "offsets spread over the window: {}", distinct.len());
        let same = slots.iter().filter(|s| a.fire_time(**s) == b.fire_time(**s)).count();
        assert!(same < 5, "two schedules of one cron do not fire together: {same}");
        // A slot is not due before its fire time.
        let slot = t("2026-11-22T05:00:00Z");
        let fire = a.fire_time(slot);
        if fire > slot {
            let before = a.due(t("2026-11-22T04:00:00Z"), fire - jiff::SignedDuration::from_secs(1), None);
            assert_eq!(before.start, None);
            assert_eq!(before.next, Some((slot, fire)));
        }
        assert_eq!(a.due(t("2026-11-22T04:00:00Z"), fire, None).start, Some(slot));
    }

    #[test]
    fn names_are_stable_and_short_enough() {
        assert_eq!(child_name("db-nightly", t("2026-11-22T01:30:00Z")), "db-nightly-20261122-0130");
        assert_eq!(on_demand_name("db-nightly", "before-upgrade"), on_demand_name("db-nightly", "before-upgrade"));
        assert_ne!(on_demand_name("db-nightly", "a"), on_demand_name("db-nightly", "b"));
        let long = "x".repeat(MAX_SCHEDULE_NAME);
        assert_eq!(on_demand_name(&long, "x").len(), 63);
        assert!(child_name(&long, t("2026-11-22T01:30:00Z")).len() < 63);
        assert_eq!(incremental_name(&long, t("2026-11-22T01:30:00Z")).len(), 63);
    }
}
