//! The ingest memory budget: bytes that in-flight ingest requests (HTTP
//! bodies, Flight uploads) may hold together while they are read,
//! decompressed, parsed and built into batches.
//!
//! A request holds a [`Reservation`] and grows it *before* each step
//! allocates: as body bytes arrive, as decompressed bytes come out, per
//! parsed event, and by an estimate of its Arrow batch before the batch is
//! built. A step that would take the request past the per-request cap is
//! refused as too large (413); one that does not fit in what other requests
//! left is refused as busy (503, retry). Nothing waits: a request never
//! holds memory while queueing for more.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a reservation could not grow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The request alone would hold more than one request may.
    #[error(
        "the request needs more than {limit} bytes of memory to ingest (--max-ingest-request-bytes)"
    )]
    TooLarge { needed: usize, limit: usize },
    /// Other requests hold the rest of the budget now.
    #[error(
        "the server is busy ingesting other requests (--ingest-memory-budget of {total} bytes is in use); retry shortly"
    )]
    Busy { total: usize },
}

/// The budget shared by every ingest request of the process.
#[derive(Debug)]
pub struct IngestBudget {
    /// Bytes all reservations together may hold.
    total: usize,
    /// Bytes one reservation may hold.
    per_request: usize,
    used: AtomicUsize,
}

impl IngestBudget {
    /// A budget of `total` bytes, of which one request may hold at most
    /// `per_request` (never more than `total`).
    pub fn new(total: usize, per_request: usize) -> Arc<Self> {
        Arc::new(IngestBudget {
            total,
            per_request: per_request.min(total),
            used: AtomicUsize::new(0),
        })
    }

    /// An empty reservation, to grow as the request proceeds.
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes one request may hold.
    pub fn per_request(&self) -> usize {
        self.per_request
    }

    /// Bytes held by all reservations now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they are free.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= self.total)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Bytes one request holds of the [`IngestBudget`]; given back when
/// dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<IngestBudget>,
    bytes: usize,
}

impl Reservation {
    /// Takes `n` more bytes.
    pub fn grow(&mut self, n: usize) -> Result<(), BudgetError> {
        let needed = self.bytes.saturating_add(n);
        if needed > self.budget.per_request {
            return Err(BudgetError::TooLarge {
                needed,
                limit: self.budget.per_request,
            });
        }
        if !self.budget.take(n) {
            return Err(BudgetError::Busy {
                total: self.budget.total,
            });
        }
        self.bytes = needed;
        Ok(())
    }

    /// Gives back `n` bytes (memory the request has freed).
    pub fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.budget.give_back(n);
        self.bytes -= n;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The cap one request is held to.
    pub fn limit(&self) -> usize {
        self.budget.per_request
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_total_and_give_it_back() {
        let budget = IngestBudget::new(100, 60);
        let mut a = budget.reserve();
        a.grow(50).unwrap();
        let mut b = budget.reserve();
        assert_eq!(b.grow(60), Err(BudgetError::Busy { total: 100 }));
        b.grow(50).unwrap();
        assert_eq!(budget.in_use(), 100);
        // over the per-request cap is "too large", whatever is free
        a.shrink(40);
        assert_eq!(
            a.grow(51),
            Err(BudgetError::TooLarge {
                needed: 61,
                limit: 60
            })
        );
        drop(b);
        assert_eq!(budget.in_use(), 10);
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }
}
