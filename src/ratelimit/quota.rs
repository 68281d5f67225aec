//! The buckets of quota policies.
//!
//! Each bucket is a generic cell rate algorithm on the wall clock: it
//! keeps the time at which it will be full again (`full_at`); taking `n`
//! units moves that time on by `n` units' share of the period, and is
//! refused when it would then lie more than one period ahead. A bucket
//! whose `full_at` has passed is the same as a new one, so only buckets
//! still refilling carry anything: those are not dropped when idle (only
//! past a tenant's cap of refilling buckets), nor at a restart
//! ([`QuotaBuckets::saved`] and [`QuotaBuckets::restore`] carry them
//! across one).

use super::{Kind, Limited};
use crate::ids::TenantId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Over what time a quota's amount may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Second,
    Day,
}

impl Period {
    fn label(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Day => "day",
        }
    }

    fn nanos(self) -> u128 {
        match self {
            Period::Second => 1_000_000_000,
            Period::Day => 86_400 * 1_000_000_000,
        }
    }
}

/// Whose use one quota bucket counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    pub tenant: TenantId,
    /// The policy that sets it.
    pub policy: String,
    /// The subject it counts, or `None` when all its callers share it.
    pub subject: Option<String>,
    pub kind: Kind,
    pub period: Period,
}

struct QuotaBucket {
    amount: u32,
    /// Nanoseconds since the epoch at which the bucket is full again.
    full_at: u128,
    /// When it was last used, for choosing which to drop at the cap.
    used: u128,
}

/// A bucket still refilling, as kept across a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBucket {
    pub tenant: String,
    pub policy: String,
    pub subject: Option<String>,
    pub kind: Kind,
    pub period: Period,
    pub amount: u32,
    /// Nanoseconds since the epoch at which it is full again.
    pub full_at_ns: u128,
}

/// The buckets of quota policies, made on first use and remade when the
/// amount changes. A full bucket is dropped when another is made (it
/// would start full anyway); a tenant holds at most
/// [`QuotaBuckets::PER_TENANT`] still refilling (past that the least
/// recently used goes, and starts full when next used).
#[derive(Default)]
pub struct QuotaBuckets {
    buckets: Mutex<HashMap<QuotaKey, QuotaBucket>>,
}

impl std::fmt::Debug for QuotaBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuotaBuckets({} buckets)", self.buckets.lock().len())
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl QuotaBuckets {
    pub const PER_TENANT: usize = 10_000;

    /// Takes `n` units from the bucket of `key`, which allows `amount` per
    /// period (with all of it as burst).
    pub fn check(&self, key: QuotaKey, amount: u32, n: u32) -> Result<(), Limited> {
        self.check_at(key, amount, n, now_nanos())
    }

    fn check_at(&self, key: QuotaKey, amount: u32, n: u32, now: u128) -> Result<(), Limited> {
        if amount == 0 || n == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&key) {
            buckets.retain(|_, b| b.full_at > now);
            let mine: Vec<(QuotaKey, u128)> = buckets
                .iter()
                .filter(|(k, _)| k.tenant == key.tenant)
                .map(|(k, b)| (k.clone(), b.used))
                .collect();
            if mine.len() >= Self::PER_TENANT
                && let Some((oldest, _)) = mine.into_iter().min_by_key(|(_, used)| *used)
            {
                buckets.remove(&oldest);
            }
        }
        let fresh = || QuotaBucket {
            amount,
            full_at: now,
            used: now,
        };
        let bucket = buckets.entry(key.clone()).or_insert_with(fresh);
        if bucket.amount != amount {
            *bucket = fresh();
        }
        bucket.used = now;
        let whose = match &key.subject {
            Some(s) => format!("subject {s:?}"),
            None => "its callers together".to_string(),
        };
        let what = format!(
            "policy {:?} allows {whose} {amount} {} per {}",
            key.policy,
            key.kind.label(),
            key.period.label()
        );
        let refuse = |retry_after: Option<Duration>, message: String| {
            crate::metrics::get()
                .rate_limited
                .with_label_values(&[key.tenant.as_str(), key.kind.label()])
                .inc();
            Err(Limited {
                retry_after,
                message,
            })
        };
        if n > amount {
            return refuse(
                None,
                format!("a request of {n} {} exceeds it: {what}", key.kind.label()),
            );
        }
        let period = key.period.nanos();
        let cost = (u128::from(n) * period).div_ceil(u128::from(amount));
        let next = bucket.full_at.max(now).saturating_add(cost);
        if next - now > period {
            let wait = next - now - period;
            return refuse(
                Some(Duration::from_nanos(
                    u64::try_from(wait).unwrap_or(u64::MAX),
                )),
                format!("{what}; retry later"),
            );
        }
        bucket.full_at = next;
        Ok(())
    }

    /// The buckets a restart would otherwise lose: those of daily amounts
    /// still refilling (a second's refill before the server is back).
    pub fn saved(&self) -> Vec<SavedBucket> {
        let now = now_nanos();
        let mut out: Vec<SavedBucket> = self
            .buckets
            .lock()
            .iter()
            .filter(|(k, b)| k.period == Period::Day && b.full_at > now)
            .map(|(k, b)| SavedBucket {
                tenant: k.tenant.to_string(),
                policy: k.policy.clone(),
                subject: k.subject.clone(),
                kind: k.kind,
                period: k.period,
                amount: b.amount,
                full_at_ns: b.full_at,
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.tenant, &a.policy, &a.subject).cmp(&(&b.tenant, &b.policy, &b.subject))
        });
        out
    }

    /// Puts back buckets [`QuotaBuckets::saved`] gave; those of tenants
    /// whose names no longer parse are skipped.
    pub fn restore(&self, saved: Vec<SavedBucket>) {
        let now = now_nanos();
        let mut buckets = self.buckets.lock();
        for s in saved {
            let Ok(tenant) = s.tenant.parse::<TenantId>() else {
                continue;
            };
            let key = QuotaKey {
                tenant,
                policy: s.policy,
                subject: s.subject,
                kind: s.kind,
                period: s.period,
            };
            // A bucket is never more than one period from full; a file
            // that says otherwise (or a clock that went back) is held to it.
            let full_at = s.full_at_ns.min(now + s.period.nanos());
            buckets.insert(
                key,
                QuotaBucket {
                    amount: s.amount,
                    full_at,
                    used: now,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u128 = 1_000_000_000;
    const DAY: u128 = 86_400 * SECOND;

    fn key(policy: &str, period: Period) -> QuotaKey {
        QuotaKey {
            tenant: "acme".parse().unwrap(),
            policy: policy.into(),
            subject: Some("bot-1".into()),
            kind: Kind::Events,
            period,
        }
    }

    #[test]
    fn a_day_amount_refills_over_the_day_and_never_by_idling() {
        let q = QuotaBuckets::default();
        let t0 = 1_000 * DAY;
        let day = key("daily", Period::Day);
        assert!(q.check_at(day.clone(), 3, 2, t0).is_ok());
        assert!(q.check_at(day.clone(), 3, 1, t0).is_ok());
        let refused = q.check_at(day.clone(), 3, 1, t0).unwrap_err();
        // One unit back after a third of a day.
        let wait = refused.retry_after.unwrap().as_nanos();
        assert_eq!(wait, DAY / 3);
        // Other buckets come and go (full ones are dropped) without
        // refilling this one.
        let later = t0 + 20 * 60 * SECOND;
        for i in 0..50 {
            let other = key(&format!("p{i}"), Period::Second);
            assert!(q.check_at(other, 5, 1, later + i * 2 * SECOND).is_ok());
        }
        assert!(q.check_at(day.clone(), 3, 1, later + 100 * SECOND).is_err());
        assert!(q.check_at(day.clone(), 3, 1, t0 + DAY / 3).is_ok());
        // A request above the whole amount is refused without a wait.
        let too_big = q.check_at(day, 3, 4, t0 + DAY * 5).unwrap_err();
        assert!(too_big.retry_after.is_none());
        assert!(too_big.message.contains("exceeds"), "{}", too_big.message);
    }

    #[test]
    fn a_second_amount_allows_its_burst_then_its_rate() {
        let q = QuotaBuckets::default();
        let k = key("fast", Period::Second);
        let t0 = 5 * SECOND;
        assert!((0..5).all(|_| q.check_at(k.clone(), 5, 1, t0).is_ok()));
        assert!(q.check_at(k.clone(), 5, 1, t0).is_err());
        assert!(q.check_at(k.clone(), 5, 1, t0 + SECOND / 5).is_ok());
        // A changed amount starts over, full.
        assert!((0..10).all(|_| q.check_at(k.clone(), 10, 1, t0 + SECOND / 5).is_ok()));
    }

    #[test]
    fn refilling_day_buckets_are_carried_across_a_restart() {
        let q = QuotaBuckets::default();
        let day = key("daily", Period::Day);
        assert!(q.check(day.clone(), 2, 2).is_ok());
        assert!(q.check(key("fast", Period::Second), 2, 2).is_ok());
        let saved = q.saved();
        assert_eq!(saved.len(), 1, "only the day bucket: {saved:?}");
        let json = serde_json::to_string(&saved).unwrap();
        let back = QuotaBuckets::default();
        back.restore(serde_json::from_str(&json).unwrap());
        assert!(back.check(day.clone(), 2, 1).is_err());
        // A fresh process without them would have allowed it.
        assert!(QuotaBuckets::default().check(day, 2, 1).is_ok());
    }
}
