//! The version rule.
//!
//! Invariant: a line's version is `(file date, file SEQ, line number)` compared in that
//! order, and a line is applied only when its version is strictly greater than the stored
//! version of its identity. A lower version is *stale*, an equal one is the *same* line
//! seen again; both are no-ops. Because the rule only ever keeps the greatest version per
//! identity, the final state depends on which lines were applied, never on their order,
//! with one exception the contract fixes: an identity is (record type, position_id) with
//! no region in it, so lines of two regions' files with the same date and SEQ can tie at
//! one version. The tie is the "same line seen again", so the first applied stays.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The version of one record line. Field order is comparison order (derived `Ord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub date: NaiveDate,
    pub seq: u64,
    pub line: u64,
}

/// What the version rule says about an incoming line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Newer than what is stored (or nothing is stored): write it.
    Apply,
    /// Older than what is stored: a no-op, counted.
    Stale,
    /// Exactly the stored version: the same line seen again, a no-op, counted.
    Same,
}

/// Applies the version rule to an incoming line given the stored version, if any.
pub fn decide(stored: Option<Version>, incoming: Version) -> Decision {
    match stored {
        None => Decision::Apply,
        Some(stored) if incoming > stored => Decision::Apply,
        Some(stored) if incoming == stored => Decision::Same,
        Some(_) => Decision::Stale,
    }
}

/// Decides the lines of one identity, given in version order, against the stored
/// version: each gets what [`decide`] says at its turn, when every line applied before it
/// is stored. Returns the decisions and the index of the newest applied line (the one a
/// store writes: it leaves the row the whole sequence of writes would), if any.
pub fn decide_in_order(
    stored: Option<Version>,
    lines: impl IntoIterator<Item = Version>,
) -> (Vec<Decision>, Option<usize>) {
    let (mut newest, mut to_write) = (stored, None);
    let decisions = lines
        .into_iter()
        .enumerate()
        .map(|(i, incoming)| {
            let d = decide(newest, incoming);
            if d == Decision::Apply {
                (newest, to_write) = (Some(incoming), Some(i));
            }
            d
        })
        .collect();
    (decisions, to_write)
}

impl Version {
    /// The date as the integer `YYYYMMDD`, convenient for stores that index it.
    pub fn date_number(&self) -> u32 {
        use chrono::Datelike;
        // Dates come from YYYYMMDD names, so the year has at most 4 digits and is positive.
        (self.date.year() as u32) * 10_000 + self.date.month() * 100 + self.date.day()
    }

    /// Inverse of [`Version::date_number`]; `None` for a number that is not a date.
    pub fn date_from_number(n: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt((n / 10_000) as i32, (n / 100) % 100, n % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(d: (i32, u32, u32), seq: u64, line: u64) -> Version {
        Version { date: NaiveDate::from_ymd_opt(d.0, d.1, d.2).unwrap(), seq, line }
    }

    #[test]
    fn date_dominates_seq_and_seq_dominates_line() {
        assert!(v((2022, 7, 31), 1, 1) > v((2022, 7, 30), 999, 999));
        assert!(v((2022, 7, 30), 2, 1) > v((2022, 7, 30), 1, 999));
        assert_eq!(decide(Some(v((2022, 7, 30), 2, 5)), v((2022, 7, 30), 2, 5)), Decision::Same);
        assert_eq!(decide(Some(v((2022, 7, 30), 2, 5)), v((2022, 7, 30), 2, 4)), Decision::Stale);
        assert_eq!(decide(None, v((2022, 7, 30), 2, 4)), Decision::Apply);
    }

    fn arb_version() -> impl Strategy<Value = Version> {
        (0u32..3, 1u64..4, 1u64..4).prop_map(|(d, s, l)| v((2022, 7, 29 + d), s, l))
    }

    proptest! {
        /// Applying any sequence of versions in any order keeps the maximum.
        #[test]
        fn rule_keeps_the_greatest_version_in_any_order(mut vs in proptest::collection::vec(arb_version(), 1..20), seed in any::<u64>()) {
            let max = *vs.iter().max().unwrap();
            // a deterministic shuffle driven by the seed
            let n = vs.len();
            for i in 0..n { vs.swap(i, (seed.wrapping_mul(i as u64 + 7) % n as u64) as usize); }
            let mut stored = None;
            for incoming in vs {
                match decide(stored, incoming) {
                    Decision::Apply => { prop_assert!(stored.is_none_or(|s| incoming > s)); stored = Some(incoming) }
                    Decision::Same => prop_assert_eq!(stored, Some(incoming)),
                    Decision::Stale => prop_assert!(stored.is_some_and(|s| incoming < s)),
                }
            }
            prop_assert_eq!(stored, Some(max));
        }

        /// Deciding a run in order is deciding line by line with each applied line
        /// stored; the line to write is the last applied one.
        #[test]
        fn a_run_decided_in_order_is_the_line_by_line_rule(stored in proptest::option::of(arb_version()), mut vs in proptest::collection::vec(arb_version(), 0..8)) {
            vs.sort();
            let (decisions, to_write) = decide_in_order(stored, vs.iter().copied());
            let mut current = stored;
            let mut last_applied = None;
            for (i, incoming) in vs.iter().enumerate() {
                let d = decide(current, *incoming);
                prop_assert_eq!(decisions[i], d);
                if d == Decision::Apply { current = Some(*incoming); last_applied = Some(i); }
            }
            prop_assert_eq!(to_write, last_applied);
        }

        #[test]
        fn date_number_round_trips(d in arb_version()) {
            prop_assert_eq!(Version::date_from_number(d.date_number()), Some(d.date));
        }
    }
}
