//! Arrival expectations: "a file every weekday by 14:30 Europe/London" for a region, and
//! whether the stream is late against them.
//!
//! Invariants:
//! - Deadlines are wall-clock times in the expectation's time zone, so they follow daylight
//!   saving (14:30 London is 13:30 UTC in summer, 14:30 UTC in winter). A local time that
//!   does not exist on a day (skipped by a clock change) moves to the first instant after.
//! - Each arrival satisfies at most one deadline, the earliest unsatisfied one after the
//!   previous deadline: a file that comes an hour late clears that day's alert, but does
//!   not also count for the next day.
//! - A stream is late exactly when the most recent deadline at or before `now` has no
//!   arrival matched to it. Nothing else (held files, gaps) changes the verdict.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// How far back arrivals and deadlines are matched: a week and a day, so one missed
/// weekly deadline is still seen.
pub const LOOKBACK_DAYS: i64 = 8;

/// Which regions an expectation is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionSet {
    /// Every region that has sent a file.
    Seen,
    /// These regions, even before their first file.
    Named(Vec<String>),
}

/// One expectation from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub regions: RegionSet,
    pub days: Vec<Weekday>,
    pub by: NaiveTime,
    pub timezone: Tz,
}

/// The verdict for one stream at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lateness {
    /// The deadline that passed without a file, when the stream is late.
    pub missed: Option<DateTime<Utc>>,
    /// The next deadline after `now`.
    pub next_deadline: Option<DateTime<Utc>>,
}

impl Lateness {
    pub fn late(&self) -> bool {
        self.missed.is_some()
    }
}

impl Expectation {
    /// Whether the expectation covers `region`.
    pub fn covers(&self, region: &str) -> bool {
        match &self.regions {
            RegionSet::Seen => true,
            RegionSet::Named(names) => names.iter().any(|n| n == region),
        }
    }

    /// The deadline on local `date`, if files are expected that day.
    fn deadline_on(&self, date: NaiveDate) -> Option<DateTime<Utc>> {
        if !self.days.contains(&date.weekday()) {
            return None;
        }
        let local = date.and_time(self.by);
        // A local time skipped by a clock change: the first minute after it that exists.
        (0..=180).find_map(|m| {
            let t = local + Duration::minutes(m);
            self.timezone.from_local_datetime(&t).earliest().map(|d| d.with_timezone(&Utc))
        })
    }

    /// Every deadline in `(from, to]`, ascending.
    pub fn deadlines(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let first = from.with_timezone(&self.timezone).date_naive() - Duration::days(1);
        let last = to.with_timezone(&self.timezone).date_naive() + Duration::days(1);
        first
            .iter_days()
            .take_while(|d| *d <= last)
            .filter_map(|d| self.deadline_on(d))
            .filter(|t| *t > from && *t <= to)
            .collect()
    }

    /// Whether a stream whose files arrived at `arrivals` (any order) is late at `now`.
    /// `since` is when the stream started being watched (its first arrival, or the start
    /// of the service for a named region with none): deadlines before it do not count.
    pub fn evaluate(&self, arrivals: &[DateTime<Utc>], since: DateTime<Utc>, now: DateTime<Utc>) -> Lateness {
        let window_start = since.max(now - Duration::days(LOOKBACK_DAYS));
        let deadlines = self.deadlines(window_start, now);
        let next_deadline = self.deadlines(now, now + Duration::days(8)).first().copied();
        let mut recent: Vec<DateTime<Utc>> = arrivals.iter().copied().filter(|a| *a > window_start).collect();
        recent.sort_unstable();
        Lateness { missed: unmatched_last(window_start, &deadlines, &recent), next_deadline }
    }
}

/// Matches each deadline (ascending) to the first unused arrival after the previous
/// deadline; returns the last deadline when it has none.
pub fn unmatched_last(
    start: DateTime<Utc>,
    deadlines: &[DateTime<Utc>],
    arrivals: &[DateTime<Utc>],
) -> Option<DateTime<Utc>> {
    let mut next = 0;
    let mut previous = start;
    let mut last_matched = true;
    for deadline in deadlines {
        while next < arrivals.len() && arrivals[next] <= previous {
            next += 1; // extra files in an earlier window count for nothing later
        }
        last_matched = next < arrivals.len();
        if last_matched {
            next += 1;
        }
        previous = *deadline;
    }
    if last_matched { None } else { deadlines.last().copied() }
}

/// The first expectation that covers `region`.
pub fn for_region<'a>(expectations: &'a [Expectation], region: &str) -> Option<&'a Expectation> {
    expectations.iter().find(|e| e.covers(region))
}

/// Parses `Mon`, `monday`, `weekdays`, `weekends`, `daily` into days.
pub fn parse_days(items: &[String]) -> Result<Vec<Weekday>, String> {
    let mut days = Vec::new();
    for item in items {
        let item = item.trim();
        let more: Vec<Weekday> = match item.to_ascii_lowercase().as_str() {
            "weekdays" => vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
            "weekends" => vec![Weekday::Sat, Weekday::Sun],
            "daily" | "every day" => {
                vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun]
            }
            other => {
                vec![other.parse::<Weekday>().map_err(|_| {
                    format!("`{item}` is not a day (Mon..Sun, monday..sunday, weekdays, weekends, daily)")
                })?]
            }
        };
        for d in more {
            if !days.contains(&d) {
                days.push(d);
            }
        }
    }
    if days.is_empty() {
        return Err("no days given".into());
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn london_weekdays() -> Expectation {
        Expectation {
            regions: RegionSet::Seen,
            days: parse_days(&["weekdays".into()]).unwrap(),
            by: NaiveTime::from_hms_opt(14, 30, 0).unwrap(),
            timezone: chrono_tz::Europe::London,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn deadlines_follow_daylight_saving_and_skip_weekends() {
        let e = london_weekdays();
        // Fri 2022-07-29 (BST) .. Mon 2022-08-01
        let d = e.deadlines(utc("2022-07-29T00:00:00Z"), utc("2022-08-01T23:00:00Z"));
        assert_eq!(d, vec![utc("2022-07-29T13:30:00Z"), utc("2022-08-01T13:30:00Z")]);
        let winter = e.deadlines(utc("2022-12-05T00:00:00Z"), utc("2022-12-05T23:00:00Z"));
        assert_eq!(winter, vec![utc("2022-12-05T14:30:00Z")]);
    }

    #[test]
    fn a_local_time_skipped_by_the_clock_change_moves_forward() {
        let e = Expectation {
            days: parse_days(&["daily".into()]).unwrap(),
            by: NaiveTime::from_hms_opt(1, 30, 0).unwrap(),
            ..london_weekdays()
        };
        // 2023-03-26: London clocks go from 01:00 to 02:00.
        let d = e.deadlines(utc("2023-03-26T00:00:00Z"), utc("2023-03-26T05:00:00Z"));
        assert_eq!(d, vec![utc("2023-03-26T01:00:00Z")]);
    }

    #[test]
    fn late_after_the_deadline_until_a_file_comes() {
        let e = london_weekdays();
        let monday = [utc("2022-07-25T09:00:00Z")]; // Mon; Tuesday's file missing
        let since = monday[0] - Duration::milliseconds(1);
        let before = e.evaluate(&monday, since, utc("2022-07-26T13:29:00Z"));
        assert!(!before.late(), "{before:?}");
        assert_eq!(before.next_deadline, Some(utc("2022-07-26T13:30:00Z")));
        let after = e.evaluate(&monday, since, utc("2022-07-26T13:31:00Z"));
        assert_eq!(after.missed, Some(utc("2022-07-26T13:30:00Z")));
        let with_late_file = [monday[0], utc("2022-07-26T15:00:00Z")];
        assert!(!e.evaluate(&with_late_file, since, utc("2022-07-26T15:01:00Z")).late());
        // ... but that late file does not also cover Wednesday
        assert!(e.evaluate(&with_late_file, since, utc("2022-07-27T13:31:00Z")).late());
    }

    #[test]
    fn no_deadline_before_the_stream_started() {
        let e = london_weekdays();
        let first = utc("2022-07-27T16:00:00Z"); // after Wednesday's deadline
        assert!(!e.evaluate(&[first], first - Duration::milliseconds(1), utc("2022-07-27T17:00:00Z")).late());
    }

    #[test]
    fn days_parse() {
        assert_eq!(parse_days(&["Mon".into(), "friday".into()]).unwrap(), vec![Weekday::Mon, Weekday::Fri]);
        assert!(parse_days(&["Funday".into()]).unwrap_err().contains("Funday"));
        assert!(parse_days(&[]).is_err());
    }

    proptest! {
        /// One arrival just before each deadline: never late. Take any one away: at the
        /// deadline it served, the stream is late.
        #[test]
        fn one_file_per_deadline_is_on_time(days in 2i64..40, drop in 0usize..40, minutes_early in 1i64..600) {
            let e = london_weekdays();
            let start = utc("2022-06-01T00:00:00Z");
            let now = start + Duration::days(days);
            let deadlines = e.deadlines(start, now);
            let arrivals: Vec<_> = deadlines.iter().map(|d| *d - Duration::minutes(minutes_early.min(60 * 20))).collect();
            prop_assert_eq!(unmatched_last(start, &deadlines, &arrivals), None);
            if !deadlines.is_empty() {
                let drop = drop % deadlines.len();
                let mut fewer = arrivals.clone();
                fewer.remove(drop);
                // as seen at that deadline: later files have not come yet
                let by_then: Vec<_> = fewer.into_iter().filter(|a| *a <= deadlines[drop]).collect();
                let missed = unmatched_last(start, &deadlines[..=drop], &by_then);
                prop_assert_eq!(missed, Some(deadlines[drop]));
            }
        }
    }
}
