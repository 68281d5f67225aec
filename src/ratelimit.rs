//! Per-tenant rate limits with `governor`: one token bucket per tenant for
//! ingested events and one for queries, each refilling at the tenant's
//! rate with one second's worth of burst. Over quota → 429 with
//! Retry-After.

use crate::config::Config;
use crate::ids::TenantId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

mod quota;

pub use quota::{Period, QuotaBuckets, QuotaKey, SavedBucket};

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Events,
    Queries,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Queries => "queries",
        }
    }
}

/// One tenant's rates; `None` follows the server default, `0` is no limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRates {
    pub events_per_second: Option<u32>,
    pub queries_per_second: Option<u32>,
}

/// Refusal: how long to wait (`None`: waiting will not help, the request
/// is larger than the tenant's burst), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Option<Duration>,
    pub message: String,
}

/// A tenant's bucket for one kind; `None` when the rate is unlimited.
type Bucket = Option<Arc<DefaultDirectRateLimiter>>;

/// The limiters of every tenant seen so far.
#[derive(Debug, Default)]
pub struct RateLimits {
    default: TenantRates,
    overrides: HashMap<TenantId, TenantRates>,
    buckets: Mutex<HashMap<(TenantId, Kind), Bucket>>,
}

/// Why the per-tenant limits file (`--tenant-limits`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LimitsFileError {
    #[error("cannot read --tenant-limits {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("--tenant-limits {path}: {source}")]
    Malformed {
        path: String,
        source: serde_json::Error,
    },
    #[error("--tenant-limits {path}: {source}")]
    Tenant {
        path: String,
        source: crate::ids::InvalidName,
    },
}

impl RateLimits {
    /// From `--rate-limit-events`, `--rate-limit-queries` and the
    /// per-tenant file `--tenant-limits`.
    pub fn from_config(config: &Config) -> Result<Self, LimitsFileError> {
        let overrides = match &config.tenant_limits {
            None => HashMap::new(),
            Some(path) => {
                let file = || path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| {
                    LimitsFileError::Unreadable {
                        path: file(),
                        source,
                    }
                })?;
                let raw: HashMap<String, TenantRates> =
                    serde_json::from_str(&text).map_err(|source| LimitsFileError::Malformed {
                        path: file(),
                        source,
                    })?;
                raw.into_iter()
                    .map(|(t, r)| {
                        t.parse::<TenantId>().map(|t| (t, r)).map_err(|source| {
                            LimitsFileError::Tenant {
                                path: file(),
                                source,
                            }
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(RateLimits {
            default: TenantRates {
                events_per_second: Some(config.rate_limit_events),
                queries_per_second: Some(config.rate_limit_queries),
            },
            overrides,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn rate(&self, tenant: &TenantId, kind: Kind) -> u32 {
        let pick = |r: &TenantRates| match kind {
            Kind::Events => r.events_per_second,
            Kind::Queries => r.queries_per_second,
        };
        self.overrides
            .get(tenant)
            .and_then(pick)
            .or_else(|| pick(&self.default))
            .unwrap_or(0)
    }

    fn bucket(&self, tenant: &TenantId, kind: Kind) -> Bucket {
        self.buckets
            .lock()
            .entry((tenant.clone(), kind))
            .or_insert_with(|| {
                NonZeroU32::new(self.rate(tenant, kind))
                    .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))))
            })
            .clone()
    }

    /// Takes `n` units (events, or 1 query) from `tenant`'s bucket.
    pub fn check(&self, tenant: &TenantId, kind: Kind, n: u32) -> Result<(), Limited> {
        let Some(bucket) = self.bucket(tenant, kind) else {
            return Ok(());
        };
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let rate = self.rate(tenant, kind);
        let refuse = |retry_after: Option<Duration>, message: String| {
            crate::metrics::get()
                .rate_limited
                .with_label_values(&[tenant.as_str(), kind.label()])
                .inc();
            Err(Limited {
                retry_after,
                message,
            })
        };
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => refuse(
                Some(not_until.wait_time_from(DefaultClock::default().now())),
                format!(
                    "tenant {tenant} is over its limit of {rate} {}/s; retry later",
                    kind.label()
                ),
            ),
            Err(_) => refuse(
                None,
                format!(
                    "a request of {n} {} exceeds tenant {tenant}'s limit of {rate}/s; send smaller batches",
                    kind.label()
                ),
            ),
        }
    }
}

/// Seconds a [`Meters`] remembers.
pub(crate) const METER_SECONDS: usize = 60;

/// One second's counts: (the second since the epoch, events, queries).
type MeterSlot = (u64, u64, u64);

/// Each tenant's admitted events and queries per second over the last
/// minute, for monitoring.
#[derive(Debug, Default)]
pub struct Meters {
    /// Per tenant: a slot per second of the last minute.
    tenants: Mutex<HashMap<TenantId, [MeterSlot; METER_SECONDS]>>,
}

fn now_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Meters {
    /// Counts `n` of `kind` for `tenant` now.
    pub fn record(&self, tenant: &TenantId, kind: Kind, n: u64) {
        let second = now_second();
        let mut tenants = self.tenants.lock();
        let ring = tenants
            .entry(tenant.clone())
            .or_insert([(0, 0, 0); METER_SECONDS]);
        let slot = &mut ring[(second % METER_SECONDS as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        match kind {
            Kind::Events => slot.1 += n,
            Kind::Queries => slot.2 += n,
        }
    }

    /// `tenant`'s events and queries per second over the last minute
    /// (the current second left out).
    pub fn per_second(&self, tenant: &TenantId) -> (f64, f64) {
        let second = now_second();
        let tenants = self.tenants.lock();
        let Some(ring) = tenants.get(tenant) else {
            return (0.0, 0.0);
        };
        let window = (METER_SECONDS - 1) as u64;
        let (events, queries) = ring
            .iter()
            .filter(|(s, _, _)| *s < second && second - *s <= window)
            .fold((0, 0), |(e, q), (_, se, sq)| (e + se, q + sq));
        (
            events as f64 / window as f64,
            queries as f64 / window as f64,
        )
    }
}

#[cfg(test)]
mod meter_tests {
    use super::*;

    #[test]
    fn meters_count_the_last_minute_by_kind() {
        let m = Meters::default();
        let t = TenantId::default_tenant();
        // Counted now: the current second is left out of the rate.
        m.record(&t, Kind::Events, 590);
        m.record(&t, Kind::Queries, 59);
        assert_eq!(m.per_second(&t), (0.0, 0.0));
        let mut tenants = m.tenants.lock();
        let ring = tenants.get_mut(&t).unwrap();
        for slot in ring.iter_mut() {
            if slot.0 != 0 {
                slot.0 -= 1;
            }
        }
        drop(tenants);
        assert_eq!(m.per_second(&t), (10.0, 1.0));
    }
}
