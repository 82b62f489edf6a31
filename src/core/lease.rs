//! Region leases: which instance drives a region's stream, and the fencing token its
//! writes carry.
//!
//! Invariants (the stores apply [`claim`] by compare-and-set, so they hold across
//! processes):
//! - At most one owner holds an unexpired lease at any moment.
//! - The token grows by one every time the lease changes hands (or is taken again after
//!   it lapsed); a renewal by the current owner keeps it. So a write carrying an older
//!   token than the lease's is from an owner that lost the lease, and the store refuses
//!   it — a process paused past its lease cannot write when it wakes.
//! - A released lease keeps its token and expires at once, so the next owner's token is
//!   still greater than every token used before.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub token: u64,
    pub expires_at: DateTime<Utc>,
}

/// The token a commit carries, checked by the store inside the commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: u64,
}

/// What a claim does to the stored lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The claimant already holds it: extend the expiry, same token.
    Renew(Lease),
    /// Free, lapsed or never held: the claimant takes it with the next token.
    Take(Lease),
    /// Held by another owner until it expires.
    Busy(Lease),
}

/// The lease name of a region (bad names, which have none, share one lease).
pub fn region_lease(region: Option<&str>) -> String {
    match region {
        Some(r) => format!("region/{r}"),
        None => "region/-".into(),
    }
}

/// Decides a claim by `owner` at `now` for `ttl`, given the stored lease.
pub fn claim(name: &str, current: Option<&Lease>, owner: &str, ttl: TimeDelta, now: DateTime<Utc>) -> Claim {
    let expires_at = now + ttl;
    match current {
        None => Claim::Take(Lease { name: name.into(), owner: owner.into(), token: 1, expires_at }),
        Some(l) if l.expires_at > now && l.owner == owner => Claim::Renew(Lease { expires_at, ..l.clone() }),
        Some(l) if l.expires_at > now => Claim::Busy(l.clone()),
        Some(l) => Claim::Take(Lease { name: name.into(), owner: owner.into(), token: l.token + 1, expires_at }),
    }
}

/// The stored lease after `owner` releases it (unchanged when someone else holds it).
pub fn release(current: &Lease, owner: &str, now: DateTime<Utc>) -> Option<Lease> {
    (current.owner == owner && current.expires_at > now).then(|| Lease { expires_at: now, ..current.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_660_000_000 + s, 0).unwrap()
    }

    proptest! {
        /// Any interleaving of claims and releases by three owners over time, each applied
        /// atomically: never two unexpired owners, tokens never go back, and a token is
        /// only ever used by one owner.
        #[test]
        fn one_owner_at_a_time_and_tokens_only_grow(
            steps in proptest::collection::vec((0usize..3, 0i64..20, any::<bool>()), 1..200)
        ) {
            let owners = ["a", "b", "c"];
            let ttl = TimeDelta::seconds(10);
            let mut stored: Option<Lease> = None;
            let mut now = 0;
            let mut token_owner: std::collections::HashMap<u64, String> = Default::default();
            for (who, advance, release_it) in steps {
                now += advance;
                let owner = owners[who];
                let before = stored.as_ref().map(|l| l.token).unwrap_or(0);
                if release_it {
                    if let Some(l) = &stored && let Some(r) = release(l, owner, t(now)) {
                        stored = Some(r);
                    }
                } else {
                    match claim("region/SEV", stored.as_ref(), owner, ttl, t(now)) {
                        Claim::Renew(l) => {
                            prop_assert_eq!(l.token, before);
                            prop_assert_eq!(&l.owner, owner);
                            stored = Some(l);
                        }
                        Claim::Take(l) => {
                            prop_assert!(stored.as_ref().is_none_or(|s| s.expires_at <= t(now)), "taken while held");
                            prop_assert_eq!(l.token, before + 1);
                            stored = Some(l);
                        }
                        Claim::Busy(l) => {
                            prop_assert!(l.owner != owner && l.expires_at > t(now));
                        }
                    }
                }
                if let Some(l) = &stored {
                    prop_assert!(l.token >= before, "the token went back");
                    let first = token_owner.entry(l.token).or_insert_with(|| l.owner.clone()).clone();
                    prop_assert_eq!(first, l.owner.clone(), "a token used by two owners");
                }
            }
        }
    }

    #[test]
    fn a_lapsed_lease_is_taken_with_the_next_token() {
        let ttl = TimeDelta::seconds(10);
        let Claim::Take(a) = claim("region/SEV", None, "a", ttl, t(0)) else { panic!() };
        assert_eq!(a.token, 1);
        assert!(matches!(claim("region/SEV", Some(&a), "b", ttl, t(5)), Claim::Busy(_)));
        let Claim::Renew(a2) = claim("region/SEV", Some(&a), "a", ttl, t(5)) else { panic!() };
        assert_eq!((a2.token, a2.expires_at), (1, t(15)));
        let Claim::Take(b) = claim("region/SEV", Some(&a2), "b", ttl, t(15)) else { panic!() };
        assert_eq!((b.token, b.owner.as_str()), (2, "b"));
        let released = release(&b, "b", t(16)).unwrap();
        assert_eq!(released.expires_at, t(16));
        assert!(release(&b, "a", t(16)).is_none(), "only the owner releases");
    }
}
