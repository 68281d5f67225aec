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
}

impl MaintenanceSchedule {
    /// How often the schedule looks for due tables.
    pub(crate) const TICK: Duration = Duration::from_secs(1);

    pub(crate) fn new(db: Arc<Database>) -> Self {
        MaintenanceSchedule {
            started: db.clock.elapsed(),
            db,
            last_run: HashMap::new(),
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
                continue;
            }
            self.last_run.insert(t.label(), now);
            match self.db.maintain(&t, false, &mut |_| {}).await {
                Ok(r) if r.outcome != "nothing to do" => {
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
}

impl Job for MaintenanceSchedule {
    async fn run(&mut self) {
        self.run_due().await
    }
}
