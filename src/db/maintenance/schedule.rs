//! The maintenance schedule: each table is maintained every
//! `--maintenance-interval`, or every interval of its own when its
//! settings give one. A background worker calls [`MaintenanceSchedule`]
//! each [`MaintenanceSchedule::TICK`]; it runs the tables that are due.

use super::super::{Database, Table};
use super::{MaintenanceError, TableSettings};
use crate::background::Job;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The schedule's state between ticks: when each table last ran.
#[derive(Debug)]
pub(crate) struct MaintenanceSchedule {
    db: Arc<Database>,
    /// The clock's reading when the schedule started: a table that never
    /// ran is first due one interval after it.
    started: Duration,
    /// The clock's reading at each table's last scheduled run, by label.
    last_run: HashMap<String, Duration>,
    /// The clock's reading at each table's last run of its entity copy
    /// alone, by label.
    last_follow: HashMap<String, Duration>,
}

impl MaintenanceSchedule {
    /// How often the schedule looks for due tables.
    pub(crate) const TICK: Duration = Duration::from_secs(1);
    /// Runs of a table's entity copy alone are at least this far apart.
    const FOLLOW_SPACING: Duration = Duration::from_secs(10);

    pub(crate) fn new(db: Arc<Database>) -> Self {
        MaintenanceSchedule {
            started: db.clock.elapsed(),
            db,
            last_run: HashMap::new(),
            last_follow: HashMap::new(),
        }
    }

    /// Maintains the tables that are due, one after another.
    async fn run_due(&mut self) {
        let tables: Vec<Arc<Table>> = self.db.tables.read().values().cloned().collect();
        for t in tables {
            let every = TableSettings::duration(&self.db.settings.get(&t).maintenance_interval)
                .unwrap_or(self.db.config.maintenance_interval);
            if every.is_zero() {
                continue;
            }
            let now = self.db.clock.elapsed();
            let since = self
                .last_run
                .get(&t.label())
                .copied()
                .unwrap_or(self.started);
            if now.saturating_sub(since) < every {
                self.follow(&t, now).await;
                continue;
            }
            self.last_run.insert(t.label(), now);
            match self
                .db
                .maintain(&t, super::Mode::Incremental, false, &mut |_| {})
                .await
            {
                Ok(r) if r.outcome != crate::db::maintenance::Outcome::NothingToDo => {
                    tracing::info!(table = %t.label(), files_in = r.files_in, files_out = r.files_out,
                        vacuumed = r.vacuumed_files, outcome = %r.outcome, "maintenance");
                }
                Ok(_) => {}
                Err(MaintenanceError::Busy(_)) => {
                    tracing::debug!(table = %t.label(), "maintenance already running")
                }
                Err(e) => tracing::error!(table = %t.label(), error = %e, "maintenance failed"),
            }
        }
    }

    /// Between a table's runs: extends its entity copy once
    /// `--entity-copy-follow-files` of its files lie above it.
    async fn follow(&mut self, t: &Arc<Table>, now: Duration) {
        let at = self.db.config.entity_copy_follow_files;
        if at == 0 {
            return;
        }
        let label = t.label();
        let last = self.last_follow.get(&label).copied().unwrap_or_default();
        if now.saturating_sub(last) < Self::FOLLOW_SPACING {
            return;
        }
        let behind = self.db.entity_files_behind(t);
        if behind < at {
            return;
        }
        match self.db.follow_entities(t).await {
            Ok(true) => tracing::debug!(table = %label, files = behind, "entity copy extended"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(table = %label, error = %e, "the entity copy was not brought up to date")
            }
        }
        self.last_follow.insert(label, now);
    }
}

impl Job for MaintenanceSchedule {
    async fn run(&mut self) {
        self.run_due().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::background::{Clock, ManualClock, Worker};
    use crate::config::Config;
    use crate::ids::{TableName, TenantId};
    use crate::ingest::Event;
    use arrow::array::AsArray;
    use chrono::{DateTime, Utc};

    /// The schedule and retention read the injected clock: a table is
    /// maintained once its interval has passed on the clock and not
    /// before, and retention cuts at the clock's "now" (in 2020, where the
    /// system's clock would delete every event).
    #[test]
    fn tables_are_maintained_when_due_on_the_clock() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let start: DateTime<Utc> = "2020-06-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        let hour = Duration::from_secs(3600);
        let mut config = Config::for_tests(dir.path());
        config.maintenance_interval = hour;
        config.retention = Some(Duration::from_secs(10 * 86_400));
        let tenant: TenantId = "acme".parse().unwrap();
        let name: TableName = "events".parse().unwrap();
        let db = runtime.block_on(async {
            let db = Database::open_with_clock(config, clock.clone())
                .await
                .unwrap();
            let events = [("a", 20), ("b", 5), ("c", 1)]
                .map(|(id, days_ago)| Event {
                    event_id: Some(id.into()),
                    event_type: "t".into(),
                    entity_id: "u".into(),
                    timestamp: Some((start - chrono::Duration::days(days_ago)).timestamp_micros()),
                    payload: Default::default(),
                    expected_version: Default::default(),
                    schema_version: None,
                })
                .to_vec();
            db.ingest(&tenant, &name, events).await.unwrap();
            db.flush_table(&db.table(&tenant, &name).unwrap())
                .await
                .unwrap();
            db
        });
        let worker = Worker::builder("test-schedule", MaintenanceSchedule::TICK, clock.clone())
            .spawn(MaintenanceSchedule::new(db.clone()))
            .unwrap();
        let parked = || {
            assert!(
                clock.wait_for_sleepers(1, Duration::from_secs(60)),
                "the schedule never waited for its next tick"
            )
        };
        parked();
        clock.advance(hour - Duration::from_secs(1));
        parked();
        assert!(
            db.maintenance_history().runs(&tenant).is_empty(),
            "ran early"
        );
        clock.advance(Duration::from_secs(1));
        parked();
        let runs = db.maintenance_history().runs(&tenant);
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].started_at, "2020-06-01T01:00:00+00:00");
        assert_eq!(
            runs[0].outcome,
            crate::db::maintenance::Outcome::Done,
            "{runs:?}"
        );
        drop(worker);

        let ids: Vec<String> = runtime.block_on(async {
            // What is stored, read as any reader of the table would.
            let view = db.view(&db.table(&tenant, &name).unwrap());
            assert!(view.buffered.is_empty());
            let ctx = datafusion::prelude::SessionContext::new();
            let batches = ctx
                .read_table(view.stored.unwrap())
                .unwrap()
                .select_columns(&["event_id"])
                .unwrap()
                .sort_by(vec![datafusion::prelude::col("event_id")])
                .unwrap()
                .collect()
                .await
                .unwrap();
            batches
                .iter()
                .flat_map(|b| {
                    let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
                        .unwrap();
                    (0..col.len())
                        .map(|i| col.as_string::<i32>().value(i).to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(clock.now(), start + chrono::Duration::hours(1));
    }
}
