//! Remembers recently stored event ids so a client's retry (same
//! `event_id`s, sent again after a lost reply) is stored once.
//!
//! Ids are kept as 128-bit hashes (xxh3) — a collision is astronomically
//! unlikely at any size this holds — with the time they were stored. Ids
//! older than the window, or beyond the capacity (oldest first), are
//! forgotten; the README states the window.
//!
//! An id is *pending* from the moment a request claims it until that
//! request's WAL record is on disk (then it is *stored*) or the request
//! fails (then it is forgotten). A retry that meets a pending id waits for
//! the outcome instead of answering "duplicate": that answer must mean the
//! event is durable. A request that finds another's pending id claims
//! nothing and waits, so a waiting request never holds a claim another
//! request waits on, and two requests cannot wait on each other.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::watch;

/// One request's claims while its batch is on its way to the WAL. The
/// request owns it; retries that meet its ids wait on it.
#[derive(Debug)]
pub struct Inflight {
    /// Set to true once the claims are settled (stored or released).
    /// Dropping the sender also ends every wait.
    done: watch::Sender<bool>,
}

impl Inflight {
    pub fn new() -> Arc<Inflight> {
        Arc::new(Inflight {
            done: watch::channel(false).0,
        })
    }

    fn settle(&self) {
        self.done.send_replace(true);
    }
}

/// Resolves once a pending claim another request holds is settled.
#[derive(Debug)]
pub struct Settled(watch::Receiver<bool>);

impl Settled {
    pub async fn wait(mut self) {
        // An error means the sender is gone: settled as well.
        let _ = self.0.wait_for(|done| *done).await;
    }
}

#[derive(Debug)]
struct Entry {
    /// When the id was claimed or stored.
    at: i64,
    /// The request whose batch holds the id, while it is not yet durable.
    pending: Option<Arc<Inflight>>,
    /// The event's (position, version), once stored; `None` for events
    /// stored before positions existed.
    stamp: Option<Stamp>,
}

/// An event's position in its table and version in its entity's stream.
pub type Stamp = (u64, u64);

/// The recent ids of one table.
#[derive(Debug)]
pub struct DedupIndex {
    seen: HashMap<u128, Entry>,
    /// (time stored, hash) in the order stored, for expiry.
    order: VecDeque<(i64, u128)>,
    window_us: i64,
    capacity: usize,
}

/// The key an id is remembered by.
pub fn key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// What [`DedupIndex::claim_all`] decided for a request.
#[derive(Debug)]
pub enum Claimed {
    /// Per id: true when it is new and now pending under the request,
    /// false when it is already stored (or repeats an earlier id of the
    /// same request). `keys` are the claimed ids' keys.
    Taken { fresh: Vec<bool>, keys: Vec<u128> },
    /// Another request holds one of the ids pending; nothing was claimed.
    /// Wait, then claim again.
    Busy(Settled),
}

impl DedupIndex {
    pub fn new(window_us: i64, capacity: usize) -> Self {
        DedupIndex {
            seen: HashMap::new(),
            order: VecDeque::new(),
            window_us,
            capacity,
        }
    }

    fn expire(&mut self, now: i64) {
        while let Some(&(t, h)) = self.order.front() {
            if t >= now - self.window_us && self.order.len() <= self.capacity {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&h).is_some_and(|e| e.at == t) {
                self.seen.remove(&h);
            }
        }
    }

    /// Claims the ids of one request (`None` for events without a client
    /// id, which are always fresh) for `owner` at time `now`.
    pub fn claim_all<'a>(
        &mut self,
        ids: impl IntoIterator<Item = Option<&'a str>>,
        now: i64,
        owner: &Arc<Inflight>,
    ) -> Claimed {
        self.expire(now);
        let mut fresh = Vec::new();
        let mut keys = Vec::new();
        for id in ids {
            let Some(id) = id else {
                fresh.push(true);
                continue;
            };
            let h = key(id);
            match self.seen.get(&h) {
                None => {
                    self.seen.insert(
                        h,
                        Entry {
                            at: now,
                            pending: Some(owner.clone()),
                            stamp: None,
                        },
                    );
                    self.order.push_back((now, h));
                    keys.push(h);
                    fresh.push(true);
                }
                Some(Entry {
                    pending: Some(other),
                    ..
                }) if !Arc::ptr_eq(other, owner) => {
                    let wait = Settled(other.done.subscribe());
                    self.forget(&keys, owner);
                    return Claimed::Busy(wait);
                }
                // Stored, or an earlier event of this same request.
                Some(_) => fresh.push(false),
            }
        }
        Claimed::Taken { fresh, keys }
    }

    /// The request's batch is durable: its ids are stored, with the
    /// stamps their events got (`stamp(i)` for `keys[i]`).
    pub fn stored(&mut self, keys: &[u128], owner: &Arc<Inflight>, stamp: impl Fn(usize) -> Stamp) {
        for (i, h) in keys.iter().enumerate() {
            if let Some(e) = self.seen.get_mut(h)
                && e.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, owner))
            {
                e.pending = None;
                e.stamp = Some(stamp(i));
            }
        }
        owner.settle();
    }

    /// The stamp of a stored id, if it is remembered with one.
    pub fn stamp_of(&self, id: &str) -> Option<Stamp> {
        self.seen
            .get(&key(id))
            .filter(|e| e.pending.is_none())
            .and_then(|e| e.stamp)
    }

    /// The request failed: its ids are forgotten, so a retry stores them.
    pub fn release(&mut self, keys: &[u128], owner: &Arc<Inflight>) {
        self.forget(keys, owner);
        owner.settle();
    }

    fn forget(&mut self, keys: &[u128], owner: &Arc<Inflight>) {
        for h in keys {
            if self
                .seen
                .get(h)
                .is_some_and(|e| e.pending.as_ref().is_some_and(|p| Arc::ptr_eq(p, owner)))
            {
                self.seen.remove(h);
            }
        }
    }

    /// Remembers an id that is already stored (on start-up).
    pub fn remember(&mut self, id: &str, stored_at: i64, stamp: Option<Stamp>) {
        if self.seen.len() >= self.capacity {
            return;
        }
        let h = key(id);
        let entry = Entry {
            at: stored_at,
            pending: None,
            stamp,
        };
        if self.seen.insert(h, entry).is_none() {
            self.order.push_back((stored_at, h));
        }
    }

    /// Puts remembered ids back in time order (they arrive newest first
    /// on start-up), so expiry forgets the oldest.
    pub fn sort_by_time(&mut self) {
        self.order.make_contiguous().sort_unstable();
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(idx: &mut DedupIndex, ids: &[&str], now: i64, owner: &Arc<Inflight>) -> Vec<bool> {
        match idx.claim_all(ids.iter().map(|i| Some(*i)), now, owner) {
            Claimed::Taken { fresh, keys } => {
                idx.stored(&keys, owner, |i| (i as u64 + 1, 1));
                fresh
            }
            Claimed::Busy(_) => panic!("busy"),
        }
    }

    #[test]
    fn claims_expire_after_the_window() {
        let mut idx = DedupIndex::new(100, 10);
        let o = Inflight::new();
        assert_eq!(take(&mut idx, &["a"], 0, &o), [true]);
        assert_eq!(take(&mut idx, &["a"], 50, &o), [false]);
        assert_eq!(take(&mut idx, &["b"], 60, &o), [true]);
        // "a" stored at 0 is forgotten past 100
        assert_eq!(take(&mut idx, &["a"], 101, &o), [true]);
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let mut idx = DedupIndex::new(1_000, 3);
        let o = Inflight::new();
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert_eq!(take(&mut idx, &[id], i as i64, &o), [true]);
        }
        assert!(idx.len() <= 4);
        assert_eq!(take(&mut idx, &["e"], 6, &o), [false]);
        assert_eq!(take(&mut idx, &["a"], 7, &o), [true]);
    }

    #[test]
    fn a_repeat_within_one_request_is_a_duplicate() {
        let mut idx = DedupIndex::new(1_000, 10);
        let o = Inflight::new();
        let got = idx.claim_all([Some("a"), None, Some("a")], 0, &o);
        assert!(matches!(got, Claimed::Taken { fresh, keys }
            if fresh == [true, true, false] && keys.len() == 1));
    }

    #[tokio::test]
    async fn a_retry_waits_for_a_pending_claim_and_stores_after_a_failure() {
        let mut idx = DedupIndex::new(1_000, 10);
        let first = Inflight::new();
        let Claimed::Taken { keys, .. } = idx.claim_all([Some("x"), Some("y")], 0, &first) else {
            panic!("busy")
        };
        let retry = Inflight::new();
        // "z" is new, "x" pending under `first`: nothing is claimed.
        let Claimed::Busy(wait) = idx.claim_all([Some("z"), Some("x")], 1, &retry) else {
            panic!("a pending id must not be answered as stored")
        };
        assert!(idx.claim_all([Some("z")], 1, &Inflight::new()).is_taken());
        idx.release(&keys, &first);
        wait.wait().await;
        assert!(matches!(idx.claim_all([Some("x")], 2, &retry),
            Claimed::Taken { fresh, .. } if fresh == [true]));
    }

    #[tokio::test]
    async fn a_retry_after_the_original_is_stored_is_a_duplicate() {
        let mut idx = DedupIndex::new(1_000, 10);
        let first = Inflight::new();
        let Claimed::Taken { keys, .. } = idx.claim_all([Some("x")], 0, &first) else {
            panic!("busy")
        };
        let Claimed::Busy(wait) = idx.claim_all([Some("x")], 1, &Inflight::new()) else {
            panic!("busy expected")
        };
        idx.stored(&keys, &first, |i| (i as u64 + 1, 1));
        wait.wait().await;
        assert!(matches!(idx.claim_all([Some("x")], 2, &Inflight::new()),
            Claimed::Taken { fresh, .. } if fresh == [false]));
    }

    impl Claimed {
        fn is_taken(&self) -> bool {
            matches!(self, Claimed::Taken { .. })
        }
    }
}
