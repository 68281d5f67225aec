//! The database's background work: the flusher, the maintenance schedule
//! and, beside other writers of the storage root, the refresher, each a
//! [`Worker`] on a low-priority thread of its own, owned by one
//! [`Background`] that stops them when it is stopped or dropped.

use super::Database;
use super::maintenance::MaintenanceSchedule;
use crate::background::{Job, Worker};
use std::sync::Arc;
use std::time::Duration;

/// The running flusher and maintenance schedule of one database.
#[derive(Debug)]
pub struct Background {
    flusher: Worker,
    maintenance: Worker,
    /// With `--node-id`: brings the tables to the other writers' commits.
    refresher: Option<Worker>,
}

impl Background {
    /// Starts both loops on the database's clock.
    ///
    /// The flusher's runtime has a worker per core (at most 4), also at low
    /// priority, so a flush encodes its date partitions in parallel
    /// (`Storage::append`) without holding up the threads that answer
    /// ingest requests, whose latency clients see. Maintenance rewrites
    /// files and must not slow ingest or flushes either; one thread does.
    pub fn start(db: &Arc<Database>) -> std::io::Result<Background> {
        let flusher = Worker::builder("flusher", db.flush_tick(), db.clock.clone())
            .woken_by(db.flush_wanted.clone())
            .runtime_threads(crate::storage::flush_parallelism())
            .spawn(Flusher { db: db.clone() })?;
        let maintenance =
            Worker::builder("maintenance", MaintenanceSchedule::TICK, db.clock.clone())
                .spawn(MaintenanceSchedule::new(db.clone()))?;
        let refresher = match db.config.node_id {
            Some(_) => Some(
                Worker::builder(
                    "refresher",
                    db.config.refresh_interval.max(Duration::from_millis(50)),
                    db.clock.clone(),
                )
                .spawn(Refresher { db: db.clone() })?,
            ),
            None => None,
        };
        Ok(Background {
            flusher,
            maintenance,
            refresher,
        })
    }

    /// Stops both loops once their current runs are done, and waits for
    /// their threads.
    pub async fn stop(self) {
        // Both at once: a long flush must not let another maintenance run
        // start meanwhile.
        self.flusher.cancel();
        self.maintenance.cancel();
        if let Some(r) = &self.refresher {
            r.cancel();
        }
        self.flusher.stop().await;
        self.maintenance.stop().await;
        if let Some(r) = self.refresher {
            r.stop().await;
        }
    }
}

/// The refresher's run: finds the tables other writers created and
/// brings every table's snapshot to their latest commits.
struct Refresher {
    db: Arc<Database>,
}

impl Job for Refresher {
    async fn run(&mut self) {
        self.db.refresh_shared().await
    }
}

/// The flusher's run: flushes the tables that are due.
struct Flusher {
    db: Arc<Database>,
}

impl Job for Flusher {
    async fn run(&mut self) {
        self.db.flush_due().await
    }
}

impl Database {
    /// Beside other writers: opens the tables they created, and swaps in
    /// each table's latest snapshot (`Table::refresh_shared`).
    async fn refresh_shared(&self) {
        match self.storage.list_tables().await {
            Ok(found) => {
                for (tenant, name) in found {
                    if self.table(&tenant, &name).is_none()
                        && let Err(e) = self.load_table(&tenant, &name).await
                    {
                        tracing::warn!(table = %format!("{tenant}.{name}"), error = %e, "cannot open a table another writer created");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the stored tables"),
        }
        let tables: Vec<_> = self.tables.read().values().cloned().collect();
        for t in tables {
            if let Err(e) = t.refresh_shared(&self.storage).await {
                tracing::warn!(table = %t.label(), error = %e, "cannot refresh the table's snapshot");
            }
        }
    }

    /// How often the flusher looks for due tables when nothing wakes it:
    /// a quarter of `--flush-age`, between 50 ms and 1 s.
    fn flush_tick(&self) -> Duration {
        (self.config.flush_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Flushes the tables whose buffers are large or old enough, or all
    /// that hold anything once the buffers together pass half of
    /// `--max-buffer-bytes`; then deletes the WAL segments no longer
    /// needed.
    async fn flush_due(&self) {
        let tables: Vec<_> = self.tables.read().values().cloned().collect();
        let mut flushed = false;
        for t in tables {
            let due = t.over_threshold(self.config.flush_rows, self.config.flush_bytes)
                || t.oldest_age()
                    .is_some_and(|age| age >= self.config.flush_age)
                || (self.buffered_bytes() >= self.config.max_buffer_bytes / 2
                    && t.buffered_bytes() > 0);
            if !due {
                continue;
            }
            match self.flush_table(&t).await {
                Ok(_) => flushed = true,
                Err(e) => {
                    tracing::error!(table = %t.label(), error = %e, "flush failed; will retry")
                }
            }
        }
        if flushed && let Err(e) = self.truncate_wal().await {
            tracing::error!(error = %e, "WAL truncation failed");
        }
    }
}
