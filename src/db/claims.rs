//! A request's claim on its client event ids, from the dedup check until
//! its WAL record is durable.
//!
//! The guard travels with the batch into the WAL writer's apply callback:
//! the callback marks the ids stored once the record is on disk. If the
//! request fails or is dropped anywhere before that (a bad batch, a full
//! WAL, a client that hangs up, a WAL write that fails and drops the
//! callback), dropping the guard releases the ids, so a retry is stored
//! rather than answered "duplicate".

use super::Table;
use super::sequence::Stamps;
use crate::dedup::{Claimed, Inflight};
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct Claims {
    table: Arc<Table>,
    keys: Vec<u128>,
    /// Per key, the row its event has among the request's new events.
    rows: Vec<usize>,
    owner: Arc<Inflight>,
    settled: bool,
}

impl Claims {
    /// Claims `ids` (one per event; `None` for events without a client
    /// id) in `table`'s dedup index. While another request holds one of
    /// them unsettled, waits for it and tries again. Returns, per event,
    /// whether it is new.
    pub(crate) async fn take(
        table: &Arc<Table>,
        ids: &[Option<&str>],
        now: i64,
    ) -> (Claims, Vec<bool>) {
        let owner = Inflight::new();
        loop {
            let got = table
                .dedup
                .lock()
                .claim_all(ids.iter().copied(), now, &owner);
            match got {
                Claimed::Taken { fresh, keys } => {
                    // New events with a client id each took a key, in order.
                    let mut rows = Vec::with_capacity(keys.len());
                    let mut row = 0;
                    for (id, new) in ids.iter().zip(&fresh) {
                        if *new {
                            if id.is_some() {
                                rows.push(row);
                            }
                            row += 1;
                        }
                    }
                    let claims = Claims {
                        table: table.clone(),
                        keys,
                        rows,
                        owner,
                        settled: false,
                    };
                    return (claims, fresh);
                }
                Claimed::Busy(settled) => settled.wait().await,
            }
        }
    }

    /// The batch holding the ids is durable, stamped with `stamps`.
    pub(crate) fn stored(mut self, stamps: &Stamps) {
        self.settled = true;
        let rows = &self.rows;
        self.table
            .dedup
            .lock()
            .stored(&self.keys, &self.owner, |i| stamps.of(rows[i]));
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        if !self.settled {
            self.table.dedup.lock().release(&self.keys, &self.owner);
        }
    }
}
