//! Remembers recently stored event ids so a client's retry (same
//! `event_id`s, sent again after a lost reply) is stored once.
//!
//! Ids are kept as 128-bit hashes (xxh3) — a collision is astronomically
//! unlikely at any size this holds — with the time they were stored. Ids
//! older than the window, or beyond the capacity (oldest first), are
//! forgotten; the README states the window.

use std::collections::{HashMap, VecDeque};

/// The recent ids of one table.
#[derive(Debug)]
pub struct DedupIndex {
    seen: HashMap<u128, i64>,
    /// (time stored, hash) in the order stored, for expiry.
    order: VecDeque<(i64, u128)>,
    window_us: i64,
    capacity: usize,
}

fn key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
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
            if self.seen.get(&h) == Some(&t) {
                self.seen.remove(&h);
            }
        }
    }

    /// Claims `id` at time `now`: true when it is new (and now remembered),
    /// false when it was seen within the window.
    pub fn claim(&mut self, id: &str, now: i64) -> bool {
        self.expire(now);
        let h = key(id);
        if self.seen.contains_key(&h) {
            return false;
        }
        self.seen.insert(h, now);
        self.order.push_back((now, h));
        true
    }

    /// Forgets ids claimed by a request that then failed.
    pub fn release(&mut self, ids: &[&str]) {
        for id in ids {
            self.seen.remove(&key(id));
        }
    }

    /// Remembers an id that is already stored (on start-up).
    pub fn remember(&mut self, id: &str, stored_at: i64) {
        if self.seen.len() >= self.capacity {
            return;
        }
        let h = key(id);
        if self.seen.insert(h, stored_at).is_none() {
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

    #[test]
    fn claims_expire_after_the_window() {
        let mut idx = DedupIndex::new(100, 10);
        assert!(idx.claim("a", 0));
        assert!(!idx.claim("a", 50));
        assert!(idx.claim("b", 60));
        // "a" stored at 0 is forgotten past 100
        assert!(idx.claim("a", 101));
        idx.release(&["a"]);
        assert!(idx.claim("a", 102));
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let mut idx = DedupIndex::new(1_000, 3);
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert!(idx.claim(id, i as i64));
        }
        assert!(idx.len() <= 4);
        assert!(!idx.claim("e", 6));
        assert!(idx.claim("a", 7));
    }
}
