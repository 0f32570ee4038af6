//! Which backups a retention policy keeps: a pure planner over complete backups.
//!
//! A backup is kept if any rule keeps it:
//! - `keepLast: N` — the N newest;
//! - `keepHourly`/`keepDaily`/`keepWeekly`/`keepMonthly: N` — the newest backup of each of the N newest
//!   hours/days/ISO weeks/months that have a backup (calendar periods of the schedule's time zone);
//! - `maxAge` — every backup younger than it;
//! - and, whatever the rules say, the newest backup: a schedule that stopped working never loses its
//!   last good backup to `maxAge`.
//!
//! Then dependencies are kept: a backup that another kept backup builds on (the full backup under an
//! incremental or a binary-log range) is never deleted. A backup whose base is missing cannot be
//! restored, so it counts for no rule (it is deleted unless something kept depends on it).
//! Incomplete and failed backups are not inputs at all: they have no manifest, so they are never listed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp, tz::TimeZone};

/// One complete backup, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Backup id.
    pub id: String,
    /// Its consistent point in time (when the backup completed).
    pub time: Timestamp,
    /// The backup it builds on, if any.
    pub base: Option<String>,
}

/// A retention policy; zero means the rule is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest.
    pub keep_last: u32,
    /// Keep the newest of each of the N newest hours.
    pub keep_hourly: u32,
    /// Keep the newest of each of the N newest days.
    pub keep_daily: u32,
    /// Keep the newest of each of the N newest ISO weeks.
    pub keep_weekly: u32,
    /// Keep the newest of each of the N newest months.
    pub keep_monthly: u32,
    /// Keep everything younger than this.
    pub max_age: Option<SignedDuration>,
}

/// Errors in a retention spec, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No rule keeps anything.
    #[error(
        "spec.retention keeps nothing: set at least one of keepLast, keepHourly, keepDaily, keepWeekly, \
         keepMonthly, maxAge above zero, or remove spec.retention to keep every backup"
    )]
    KeepsNothing,
    /// `maxAge` does not parse.
    #[error("spec.retention.maxAge {value:?} is not a duration like 720h, 30d or 2w: {reason}")]
    MaxAge { value: String, reason: String },
    /// A count is negative.
    #[error("spec.retention.{field} is {value}; counts cannot be negative")]
    Negative { field: &'static str, value: i32 },
}

impl PolicyError {
    /// The same error in terms of `agent prune`'s options.
    pub fn cli_message(&self) -> String {
        match self {
            Self::KeepsNothing => "prune keeps nothing: set at least one of --keep-last, --keep-hourly, \
                                   --keep-daily, --keep-weekly, --keep-monthly, --max-age"
                .into(),
            Self::MaxAge { value, reason } => {
                format!("--max-age {value:?} is not a duration like 720h, 30d or 2w: {reason}")
            }
            Self::Negative { field, value } => format!("--{field} is {value}; counts cannot be negative"),
        }
    }
}

/// Parses a duration: a number and a unit (`s`, `m`, `h`, `d`, `w`), several allowed (`1d12h`).
pub fn parse_duration(text: &str) -> Result<SignedDuration, PolicyError> {
    let err = |reason: &str| PolicyError::MaxAge { value: text.to_string(), reason: reason.to_string() };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| err("a number must come before each unit"))?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return Err(err(&format!("unknown unit {c:?}"))),
        };
        total = n.checked_mul(unit).and_then(|x| total.checked_add(x)).ok_or_else(|| err("too large"))?;
    }
    if !digits.is_empty() {
        return Err(err("a unit must follow the last number"));
    }
    if total == 0 {
        return Err(err("must be above zero"));
    }
    Ok(SignedDuration::from_secs(total))
}

/// A policy's rules as given — a BackupSchedule's `spec.retention`, or `agent prune`'s flags — before
/// they are checked; errors name them as `spec.retention` fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules<'a> {
    /// Keep the newest N backups.
    pub keep_last: Option<i32>,
    /// Keep the newest backup of each of the last N hours.
    pub keep_hourly: Option<i32>,
    /// Keep the newest backup of each of the last N days.
    pub keep_daily: Option<i32>,
    /// Keep the newest backup of each of the last N weeks.
    pub keep_weekly: Option<i32>,
    /// Keep the newest backup of each of the last N months.
    pub keep_monthly: Option<i32>,
    /// Keep every backup younger than this duration (`720h`, `30d`, `2w`).
    pub max_age: Option<&'a str>,
}

impl Policy {
    /// The policy of `rules`, checked.
    pub fn from_rules(spec: &Rules) -> Result<Self, PolicyError> {
        let count = |field: &'static str, v: Option<i32>| match v {
            Some(v) if v < 0 => Err(PolicyError::Negative { field, value: v }),
            v => Ok(v.unwrap_or(0) as u32),
        };
        let policy = Self {
            keep_last: count("keepLast", spec.keep_last)?,
            keep_hourly: count("keepHourly", spec.keep_hourly)?,
            keep_daily: count("keepDaily", spec.keep_daily)?,
            keep_weekly: count("keepWeekly", spec.keep_weekly)?,
            keep_monthly: count("keepMonthly", spec.keep_monthly)?,
            max_age: spec.max_age.map(parse_duration).transpose()?,
        };
        if policy == Self::default() {
            return Err(PolicyError::KeepsNothing);
        }
        Ok(policy)
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The newest backup.
    Newest,
    /// `keepLast`.
    Last,
    /// `keepHourly`.
    Hourly,
    /// `keepDaily`.
    Daily,
    /// `keepWeekly`.
    Weekly,
    /// `keepMonthly`.
    Monthly,
    /// `maxAge`.
    MaxAge,
    /// A kept backup builds on it.
    Base,
}

/// The outcome: what stays, with why, and what goes (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Kept ids and the rules that keep them.
    pub keep: BTreeMap<String, BTreeSet<Reason>>,
    /// Ids to delete, newest first.
    pub delete: Vec<String>,
}

/// Plans retention of `items` under `policy` at `now`, with calendar periods read in `tz`.
pub fn plan(items: &[Item], policy: &Policy, tz: &TimeZone, now: Timestamp) -> Plan {
    let ids: HashMap<&str, &Item> = items.iter().map(|i| (i.id.as_str(), i)).collect();
    // Restorable: every base up the chain is present.
    let restorable = |item: &Item| {
        let mut seen = BTreeSet::new();
        let mut cur = item;
        while let Some(base) = &cur.base {
            if !seen.insert(base.as_str()) {
                return false; // a cycle: nothing restores from it
            }
            match ids.get(base.as_str()) {
                Some(b) => cur = b,
                None => return false,
            }
        }
        true
    };
    let mut newest_first: Vec<&Item> = items.iter().filter(|i| restorable(i)).collect();
    newest_first.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));

    let mut keep: BTreeMap<String, BTreeSet<Reason>> = BTreeMap::new();
    let mut mark = |id: &str, reason: Reason| {
        keep.entry(id.to_string()).or_default().insert(reason);
    };
    if let Some(first) = newest_first.first() {
        mark(&first.id, Reason::Newest);
    }
    for item in newest_first.iter().take(policy.keep_last as usize) {
        mark(&item.id, Reason::Last);
    }
    let period = |item: &Item, unit: Reason| -> (i16, i16, i8, i8) {
        let z = item.time.to_zoned(tz.clone());
        match unit {
            Reason::Hourly => (z.year(), z.month() as i16, z.day(), z.hour()),
            Reason::Daily => (z.year(), z.month() as i16, z.day(), 0),
            Reason::Weekly => {
                let w = z.date().iso_week_date();
                (w.year(), w.week() as i16, 0, 0)
            }
            _ => (z.year(), z.month() as i16, 0, 0),
        }
    };
    for (unit, count) in [
        (Reason::Hourly, policy.keep_hourly),
        (Reason::Daily, policy.keep_daily),
        (Reason::Weekly, policy.keep_weekly),
        (Reason::Monthly, policy.keep_monthly),
    ] {
        let mut periods = BTreeSet::new();
        for item in &newest_first {
            if periods.len() >= count as usize {
                break;
            }
            // Newest first: the first item seen in a period is its newest.
            if periods.insert(period(item, unit)) {
                mark(&item.id, unit);
            }
        }
    }
    if let Some(age) = policy.max_age {
        for item in &newest_first {
            if now.duration_since(item.time) < age {
                mark(&item.id, Reason::MaxAge);
            }
        }
    }
    // Bases of everything kept.
    let kept: Vec<String> = keep.keys().cloned().collect();
    for id in kept {
        let mut cur = ids.get(id.as_str()).and_then(|i| i.base.as_deref());
        while let Some(base) = cur {
            if keep.get(base).is_some_and(|r| r.contains(&Reason::Base)) {
                break;
            }
            keep.entry(base.to_string()).or_default().insert(Reason::Base);
            cur = ids.get(base).and_then(|i| i.base.as_deref());
        }
    }
    let mut delete: Vec<&Item> = items.iter().filter(|i| !keep.contains_key(&i.id)).collect();
    delete.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    Plan { keep, delete: delete.into_iter().map(|i| i.id.clone()).collect() }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn full(id: &str, time: &str) -> Item {
        Item { id: id.into(), time: t(time), base: None }
    }

    fn hourly_year() -> Vec<Item> {
        let start = t("2025-11-22T00:00:00Z");
        (0..365 * 24)
            .map(|h| {
                let time = start + SignedDuration::from_hours(h);
                Item { id: format!("b{h:05}"), time, base: None }
            })
            .collect()
    }

    #[test]
    fn spec_errors_name_the_field() {
        type RetentionSpec<'a> = Rules<'a>;
        assert_eq!(
            Policy::from_rules(&RetentionSpec::default()).unwrap_err().to_string(),
            "spec.retention keeps nothing: set at least one of keepLast, keepHourly, keepDaily, keepWeekly, \
             keepMonthly, maxAge above zero, or remove spec.retention to keep every backup"
        );
        let zeros = RetentionSpec { keep_last: Some(0), keep_daily: Some(0), ..Default::default() };
        assert_eq!(Policy::from_rules(&zeros).unwrap_err(), PolicyError::KeepsNothing);
        let neg = RetentionSpec { keep_daily: Some(-1), ..Default::default() };
        assert_eq!(
            Policy::from_rules(&neg).unwrap_err().to_string(),
            "spec.retention.keepDaily is -1; counts cannot be negative"
        );
        let bad = RetentionSpec { max_age: Some("30 days"), ..Default::default() };
        assert_eq!(
            Policy::from_rules(&bad).unwrap_err().to_string(),
            "spec.retention.maxAge \"30 days\" is not a duration like 720h, 30d or 2w: unknown unit ' '"
        );
        assert_eq!(parse_duration("1d12h").unwrap(), SignedDuration::from_hours(36));
        assert_eq!(parse_duration("2w").unwrap(), SignedDuration::from_hours(336));
        assert!(parse_duration("12").is_err() && parse_duration("h").is_err() && parse_duration("0h").is_err());
    }

    #[test]
    fn a_year_of_hourly_backups_keeps_exactly_what_the_rules_say() {
        let items = hourly_year();
        let now = t("2026-11-22T00:30:00Z");
        let last = t("2026-11-21T23:00:00Z");
        assert_eq!(items.last().unwrap().time, last);
        let policy = Policy { keep_last: 24, keep_daily: 7, keep_weekly: 4, keep_monthly: 12, ..Default::default() };
        let p = plan(&items, &policy, &TimeZone::UTC, now);
        let at = |s: &str| items.iter().find(|i| i.time == t(s)).unwrap().id.clone();
        // keepLast: 2026-11-21 00:00 .. 23:00.
        let last24: BTreeSet<_> = items[items.len() - 24..].iter().map(|i| i.id.clone()).collect();
        // keepDaily: 23:00 of 2026-11-15 .. 2026-11-21.
        let daily: BTreeSet<_> = (15..=21).map(|d| at(&format!("2026-11-{d}T23:00:00Z"))).collect();
        // keepWeekly: ISO weeks end on Sundays: 2026-11-21 (Sat, this week's newest), 11-15, 11-08, 11-01.
        let weekly: BTreeSet<_> =
            ["2026-11-21T23:00:00Z", "2026-11-15T23:00:00Z", "2026-11-08T23:00:00Z", "2026-11-01T23:00:00Z"]
                .iter()
                .map(|s| at(s))
                .collect();
        // keepMonthly: the last hour of Dec 2025 .. Oct 2026, and this month's newest.
        let mut monthly: BTreeSet<_> = [
            "2025-12-31",
            "2026-01-31",
            "2026-02-28",
            "2026-03-31",
            "2026-04-30",
            "2026-05-31",
            "2026-06-30",
            "2026-07-31",
            "2026-08-31",
            "2026-09-30",
            "2026-10-31",
        ]
        .iter()
        .map(|d| at(&format!("{d}T23:00:00Z")))
        .collect();
        monthly.insert(at("2026-11-21T23:00:00Z"));
        let expected: BTreeSet<String> = last24.iter().chain(&daily).chain(&weekly).chain(&monthly).cloned().collect();
        let kept: BTreeSet<String> = p.keep.keys().cloned().collect();
        assert_eq!(kept, expected);
        // 24 + 6 more days + 3 more weeks (11-15 and 11-08 ... 11-15 is also a daily) + 11 months.
        assert_eq!(kept.len(), 24 + 6 + 2 + 11);
        assert_eq!(p.keep.len() + p.delete.len(), items.len());
        assert_eq!(
            p.keep[&at("2026-11-21T23:00:00Z")],
            BTreeSet::from([Reason::Newest, Reason::Last, Reason::Daily, Reason::Weekly, Reason::Monthly])
        );
        assert_eq!(p.keep[&at("2026-11-01T23:00:00Z")], BTreeSet::from([Reason::Weekly]));
    }

    #[test]
    fn periods_follow_the_time_zone() {
        // 23:30 UTC on the 21st is the 22nd in Berlin: two UTC days are one Berlin day.
        let items =
            [full("a", "2026-11-21T22:30:00Z"), full("b", "2026-11-21T23:30:00Z"), full("c", "2026-11-22T10:00:00Z")];
        let policy = Policy { keep_daily: 5, ..Default::default() };
        let utc = plan(&items, &policy, &TimeZone::UTC, t("2026-11-23T00:00:00Z"));
        assert_eq!(utc.delete, ["a"], "in UTC a and b are both on the 21st, and b is newer");
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let local = plan(&items, &policy, &berlin, t("2026-11-23T00:00:00Z"));
        assert_eq!(local.delete, ["b"], "in Berlin b and c are both on the 22nd; a is the 21st's");
    }

    #[test]
    fn max_age_never_deletes_the_newest_backup() {
        let items = [full("old", "2026-01-01T00:00:00Z"), full("older", "2025-12-01T00:00:00Z")];
        let policy = Policy { max_age: Some(SignedDuration::from_hours(24)), ..Default::default() };
        let p = plan(&items, &policy, &TimeZone::UTC, t("2026-11-22T00:00:00Z"));
        assert_eq!(p.keep.keys().collect::<Vec<_>>(), ["old"]);
        assert_eq!(p.delete, ["older"]);
    }

    #[test]
    fn bases_of_kept_backups_stay_and_orphans_count_for_nothing() {
        let items = [
            full("f1", "2026-11-20T00:00:00Z"),
            Item { id: "i1".into(), time: t("2026-11-20T06:00:00Z"), base: Some("f1".into()) },
            Item { id: "i2".into(), time: t("2026-11-20T12:00:00Z"), base: Some("i1".into()) },
            // Its base was deleted: it cannot be restored.
            Item { id: "orphan".into(), time: t("2026-11-21T00:00:00Z"), base: Some("gone".into()) },
        ];
        let p = plan(&items, &Policy { keep_last: 1, ..Default::default() }, &TimeZone::UTC, t("2026-11-22T00:00:00Z"));
        assert_eq!(p.keep.keys().collect::<Vec<_>>(), ["f1", "i1", "i2"]);
        assert_eq!(p.keep["f1"], BTreeSet::from([Reason::Base]));
        assert_eq!(p.delete, ["orphan"]);
    }

    fn arb_history() -> impl Strategy<Value = Vec<Item>> {
        // Up to 200 backups over two years; some build on an earlier one.
        prop::collection::vec((0i64..2 * 365 * 24 * 3600, prop::option::weighted(0.4, 0usize..200)), 0..200).prop_map(
            |raw| {
                let start = t("2025-01-01T00:00:00Z");
                let mut items: Vec<Item> = raw
                    .iter()
                    .enumerate()
                    .map(|(n, (secs, _))| Item {
                        id: format!("b{n:03}"),
                        time: start + SignedDuration::from_secs(*secs),
                        base: None,
                    })
                    .collect();
                // A base is always older, and sometimes missing (an id that is not in the list).
                for (n, (_, base)) in raw.iter().enumerate() {
                    if let Some(b) = base {
                        let candidate = format!("b{b:03}");
                        let older = items.iter().find(|i| i.id == candidate).is_none_or(|i| i.time < items[n].time);
                        if older {
                            items[n].base = Some(candidate);
                        }
                    }
                }
                items
            },
        )
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (0u32..10, 0u32..30, 0u32..15, 0u32..8, 0u32..14, prop::option::of(1i64..90 * 24)).prop_map(
            |(last, hourly, daily, weekly, monthly, age)| Policy {
                keep_last: last,
                keep_hourly: hourly,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                max_age: age.map(SignedDuration::from_hours),
            },
        )
    }

    proptest! {
        #[test]
        fn never_deletes_what_a_kept_backup_needs(items in arb_history(), policy in arb_policy()) {
            let now = t("2027-01-01T00:00:00Z");
            let p = plan(&items, &policy, &TimeZone::UTC, now);
            let by_id: HashMap<&str, &Item> = items.iter().map(|i| (i.id.as_str(), i)).collect();
            // Every item is either kept or deleted, never both.
            prop_assert_eq!(p.keep.len() + p.delete.len(), items.len());
            for id in &p.delete {
                prop_assert!(!p.keep.contains_key(id));
            }
            // Every kept item's chain of bases is kept (as far as it exists).
            for id in p.keep.keys() {
                let mut cur = by_id[id.as_str()].base.as_deref();
                let mut steps = 0;
                while let Some(base) = cur {
                    if let Some(b) = by_id.get(base) {
                        prop_assert!(p.keep.contains_key(base), "{} kept but its base {} deleted", id, base);
                        cur = b.base.as_deref();
                    } else {
                        cur = None;
                    }
                    steps += 1;
                    prop_assert!(steps <= items.len());
                }
            }
            // The newest restorable backup is always kept; keepLast keeps at least that many.
            let restorable: Vec<&Item> = items.iter().filter(|i| {
                let mut cur = i.base.as_deref();
                loop {
                    match cur { None => break true, Some(b) => match by_id.get(b) { Some(x) => cur = x.base.as_deref(), None => break false } }
                }
            }).collect();
            if let Some(newest) = restorable.iter().max_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id))) {
                prop_assert!(p.keep.contains_key(&newest.id));
            }
            let counted = p.keep.values().filter(|r| r.iter().any(|x| *x != Reason::Base)).count();
            prop_assert!(counted >= (policy.keep_last as usize).min(restorable.len()));
            // An item younger than maxAge is kept if restorable.
            if let Some(age) = policy.max_age {
                for i in &restorable {
                    if now.duration_since(i.time) < age {
                        prop_assert!(p.keep.contains_key(&i.id));
                    }
                }
            }
            // keepLast alone on bases-free histories keeps exactly min(N, len) (plus the newest when N is 0).
            if policy == (Policy { keep_last: policy.keep_last, ..Default::default() }) && items.iter().all(|i| i.base.is_none()) {
                prop_assert_eq!(p.keep.len(), (policy.keep_last as usize).max(1).min(items.len()));
            }
        }
    }
}
