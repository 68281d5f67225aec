//! Table maintenance: compaction of small files, Delta checkpoints, data
//! retention and vacuum. Run by the scheduler inside `allsource serve`, by
//! `POST /v1/admin/compact` and by `allsource compact`.
//!
//! Compaction runs partition by partition, one commit each, next to
//! flushes and queries. [`plan`] chooses the files each partition merges
//! (all small files when asked for, a logarithmic share when scheduled),
//! and [`merge`] sorts them into new files:
//! - a flush commits appends while a partition is rewritten; deltalake's
//!   conflict check lets a blind append and a rewrite both commit, and a
//!   rewrite that loses a race is retried, then skipped (it gives way);
//! - queries keep the snapshot they started with; the replaced files stay
//!   until vacuum, which only deletes files replaced more than
//!   `--vacuum-retention` ago and handed to no query within that time
//!   (`db::served`: a file's age counts from when queries stopped being
//!   given it, not from the commit that replaced it);
//! - after each commit, queries move to the new snapshot, when it holds
//!   exactly the rows the buffer was trimmed to (`Table::adopt_latest`;
//!   otherwise the next flush moves them), so the replaced files can go
//!   one retention after the commit rather than after the run.
//!
//! The scheduler ([`MaintenanceSchedule`]) is the job of a background
//! worker (`db::Background`); it reads the time, as retention and vacuum
//! do, from the database's clock.
//!
//! A run killed midway leaves every partition either rewritten (committed)
//! or untouched; the next run picks up the rest. A run that panics is
//! caught (`crate::background`) and reported as failed; the schedule goes
//! on.
//!
//! [`history`] keeps past runs (`maintenance.jsonl`, bounded), and
//! [`settings`] each table's retention and schedule.

mod concat;
mod entities;
mod history;
mod merge;
mod outcome;
mod plan;
mod rewrite;
mod schedule;
mod settings;

pub use history::History;
pub use outcome::Outcome;
pub use plan::{Mode, QUIET_AFTER};
pub(crate) use rewrite::Rewriter;
pub(crate) use schedule::MaintenanceSchedule;
pub use settings::{MAX_RETENTION, SettingsStore, TableSettings, parse_retention};

use super::served::Served;
use super::table::Table;
use super::{Database, Error, Result};
use crate::ids::{TableName, TenantId};
use crate::storage::lease::Taken;
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use deltalake::operations::optimize::OptimizeType;
use deltalake::{DeltaTable, FilterOp, FilterValue};
use merge::Failure;
use plan::compaction_plan;
use rewrite::writer_properties;
use serde::Serialize;
use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one maintenance run of one table did.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceReport {
    pub tenant: String,
    pub table: String,
    /// RFC 3339.
    pub started_at: String,
    pub duration_ms: u64,
    /// Of `duration_ms`, the time spent bringing the entity copy up to
    /// date (0 when the run kept none).
    pub entity_copy_ms: u64,
    pub dry_run: bool,
    /// Partitions compacted (or that would be, in a dry run).
    pub partitions: usize,
    pub files_in: u64,
    pub bytes_in: u64,
    pub files_out: u64,
    pub bytes_out: u64,
    /// Files written or removed by data retention.
    pub retention_files_removed: u64,
    pub vacuumed_files: u64,
    pub checkpoint: bool,
    pub outcome: Outcome,
}

/// Progress of a run, for the CLI's progress bar.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub table: String,
    pub partition: String,
    pub partitions_done: usize,
    pub partitions_total: usize,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("table {0} is already being compacted; try again when that run is done")]
    Busy(String),
    #[error("no table {0}")]
    NoTable(String),
    #[error(transparent)]
    Db(#[from] Error),
}

/// A deltalake failure on table `label`, as the database reports it.
fn delta_error(label: &str, source: deltalake::DeltaTableError) -> Error {
    Error::Storage(Box::new(crate::storage::Error::Delta {
        table: label.to_string(),
        source,
    }))
}

/// The database's clock as deltalake's vacuum reads it, so that tombstone
/// ages are measured on the same clock as retention.
#[derive(Debug)]
struct VacuumClock(Arc<dyn crate::background::Clock>);

impl deltalake::operations::vacuum::Clock for VacuumClock {
    fn current_timestamp_millis(&self) -> i64 {
        self.0.now().timestamp_millis()
    }
}

/// The lease whose holder, among several writers of a storage root, runs
/// maintenance (compaction, retention, checkpoints, vacuum).
const MAINTENANCE_LEASE: &str = "maintenance";
/// How long a maintenance term lasts: a writer that dies holding it
/// blocks the others' maintenance this long at most. A run is one table;
/// a longer run than this may meet another writer's run of the same
/// table, whose commits then conflict and give way.
const LEASE_TERM: Duration = Duration::from_secs(300);

fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    matches!(
        e,
        deltalake::DeltaTableError::Transaction { .. }
            | deltalake::DeltaTableError::VersionAlreadyExists(_)
    )
}

impl Database {
    /// The run history.
    pub fn maintenance_history(&self) -> &History {
        &self.history
    }

    /// Maintains every table of `tenant` (or of all tenants), or the one
    /// named. Tables already being maintained are reported as busy.
    pub async fn maintain_all(
        &self,
        tenant: Option<&TenantId>,
        table: Option<&TableName>,
        dry_run: bool,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> std::result::Result<Vec<MaintenanceReport>, MaintenanceError> {
        let tables: Vec<Arc<Table>> = self
            .tables
            .read()
            .values()
            .filter(|t| tenant.is_none_or(|x| &t.tenant == x))
            .filter(|t| table.is_none_or(|x| &t.name == x))
            .cloned()
            .collect();
        if let (Some(name), true) = (table, tables.is_empty()) {
            return Err(MaintenanceError::NoTable(name.to_string()));
        }
        let mut reports = Vec::new();
        for t in tables {
            match self.maintain(&t, Mode::Full, dry_run, progress).await {
                Ok(r) => reports.push(r),
                // a scheduled sweep skips a table a manual run is busy with
                Err(MaintenanceError::Busy(_)) if table.is_none() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(reports)
    }

    /// One run over one table: compaction (merging what `mode` says),
    /// checkpoint, retention, vacuum.
    pub async fn maintain(
        &self,
        table: &Arc<Table>,
        mode: Mode,
        dry_run: bool,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> std::result::Result<MaintenanceReport, MaintenanceError> {
        let Ok(_one_at_a_time) = table.maintenance_lock.try_lock() else {
            return Err(MaintenanceError::Busy(table.label()));
        };
        let started = Instant::now();
        let mut report = MaintenanceReport {
            tenant: table.tenant.to_string(),
            table: table.name.to_string(),
            started_at: self.clock.now().to_rfc3339(),
            duration_ms: 0,
            entity_copy_ms: 0,
            dry_run,
            partitions: 0,
            files_in: 0,
            bytes_in: 0,
            files_out: 0,
            bytes_out: 0,
            retention_files_removed: 0,
            vacuumed_files: 0,
            checkpoint: false,
            outcome: Outcome::NothingToDo,
        };
        // Beside other writers, one of them maintains the root at a time,
        // and this writer one run at a time while it holds the lease.
        let _leased = match (self.config.node_id, dry_run) {
            (Some(_), false) => Some(self.leased_runs.lock().await),
            _ => None,
        };
        let term = match (self.config.node_id, dry_run) {
            (Some(node), false) => {
                let now = self.clock.now().timestamp_millis();
                match self
                    .storage
                    .take_lease(MAINTENANCE_LEASE, node, LEASE_TERM, now)
                    .await
                {
                    Ok(Taken::Held { term, .. }) => Some((node, term)),
                    Ok(Taken::Busy { node, .. }) => {
                        report.outcome = Outcome::OtherWriter { node };
                        return Ok(report);
                    }
                    Err(e) => {
                        report.outcome =
                            Outcome::Failed(format!("cannot take the maintenance lease: {e}"));
                        return Ok(report);
                    }
                }
            }
            _ => None,
        };
        let result = crate::background::caught(
            "maintenance",
            self.run_maintenance(table, mode, dry_run, progress, &mut report),
        )
        .await;
        if let Some((node, term)) = term
            && let Err(e) = self
                .storage
                .release_lease(MAINTENANCE_LEASE, node, term)
                .await
        {
            tracing::warn!(error = %e, "cannot release the maintenance lease; it runs out");
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(table = %table.label(), error = %e, "maintenance failed");
                report.outcome = Outcome::Failed(e.to_string());
            }
            Err(panic) => report.outcome = Outcome::Failed(format!("the run panicked: {panic}")),
        }
        if !dry_run {
            self.history.record(&report);
            let m = crate::metrics::get();
            m.compactions
                .with_label_values(&[report.outcome.metric_label()])
                .inc();
            m.compaction_files
                .with_label_values(&["in"])
                .inc_by(report.files_in);
            m.compaction_files
                .with_label_values(&["out"])
                .inc_by(report.files_out);
        }
        Ok(report)
    }

    async fn run_maintenance(
        &self,
        table: &Arc<Table>,
        mode: Mode,
        dry_run: bool,
        progress: &mut (dyn FnMut(Progress) + Send),
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        let label = table.label();
        let target = self.config.compaction_target_bytes.max(1 << 20);
        let mut delta = self.storage.refresh(table.delta(), &label).await?;
        if delta.version().is_none() {
            report.outcome = Outcome::NothingToDo;
            return Ok(());
        }
        let plan = compaction_plan(&delta, target, mode, self.clock.now().timestamp_millis());
        report.partitions = plan.len();
        report.files_in = plan.values().map(|p| p.files.len() as u64).sum();
        report.bytes_in = plan.values().map(|p| p.bytes()).sum();
        if dry_run {
            report.outcome = if plan.is_empty() {
                Outcome::NothingToDo
            } else {
                Outcome::DryRun
            };
            return Ok(());
        }
        // Before compaction, from the same snapshot: the copy takes the
        // files flushed since its last run while they are still the
        // flushes' own (each a short run of positions), and compaction
        // then merges only files the copy covers. The copy is derived
        // data: when it cannot be kept (its sort cannot finish within the
        // compaction memory, say), queries read what it covers from it
        // and the rest from the table, and the next run tries again; the
        // run itself is not failed.
        let copy_started = Instant::now();
        if let Err(e) = self.maintain_entities(table, &delta).await {
            tracing::warn!(table = %label, error = %e, "the entity copy was not brought up to date");
        }
        report.entity_copy_ms = copy_started.elapsed().as_millis() as u64;
        let delta_err = |source| delta_error(&label, source);
        let mut changed = false;
        let mut gave_way = Vec::new();
        let (mut files_done, mut bytes_done) = (0u64, 0u64);
        let total = plan.len();
        // The run's files, listed once: each merge reads its own files
        // from this version, which holds them all.
        let scan = if plan.is_empty() {
            None
        } else {
            crate::storage::scan::DeltaFiles::try_new(&delta).map_err(|e| {
                delta_err(deltalake::DeltaTableError::Generic(format!(
                    "compaction cannot list the table's files: {e}"
                )))
            })?
        };
        for (i, (partition, part)) in plan.iter().enumerate() {
            let mut attempt = 0;
            let mut sorted = part.sorted;
            loop {
                attempt += 1;
                let run = match &scan {
                    Some(scan) => merge::merge(
                        &self.rewriter,
                        scan,
                        &delta,
                        &part.files,
                        target,
                        match sorted {
                            true => merge::Order::Sort,
                            false => merge::Order::AsRead,
                        },
                        writer_properties(sorted),
                    )
                    .await
                    .map(|(t, m)| (t, m.files_added, m.bytes_added, m.files_removed)),
                    None => self
                        .bin_pack(&delta, partition, target)
                        .await
                        .map(|(t, m)| {
                            let bytes = m.files_added.total_size.max(0) as u64;
                            (t, m.num_files_added, bytes, m.num_files_removed)
                        })
                        .map_err(Failure::Commit),
                };
                match run {
                    Ok((t, added, bytes, removed)) => {
                        self.storage.make_durable(&t).await?;
                        report.files_out += added;
                        report.bytes_out += bytes;
                        changed |= added > 0 || removed > 0;
                        delta = t;
                        // Queries move to the merged files at once, so the
                        // replaced ones can go one retention from now, not
                        // one after the run, which can last longer.
                        table.adopt_latest(&self.storage).await?;
                        if let Some(wait) = crate::fault::delay("maintenance-after-merge") {
                            tokio::time::sleep(wait).await;
                        }
                        break;
                    }
                    Err(Failure::Commit(e)) if is_conflict(&e) && attempt < 3 => {
                        tracing::info!(table = %label, %partition, error = %e, "compaction lost a commit race; retrying");
                        delta = self.storage.refresh(delta, &label).await?;
                    }
                    Err(Failure::Commit(e)) if is_conflict(&e) => {
                        gave_way.push(partition.clone());
                        delta = self.storage.refresh(delta, &label).await?;
                        break;
                    }
                    // Whether a commit that failed otherwise landed is
                    // unknown, so nothing is retried from this plan: the
                    // next run plans from the table as it then is.
                    Err(Failure::Commit(e)) => return Err(delta_err(e)),
                    // A sorted merge that failed before its commit (its
                    // sort could not spill, say) left the partition as it
                    // was; the files are then merged in the order they
                    // are read.
                    Err(Failure::Write(e)) if sorted => {
                        tracing::warn!(table = %label, %partition, error = %e, "sorted compaction failed; merging the files unsorted instead");
                        sorted = false;
                        attempt = 0;
                    }
                    Err(Failure::Write(e)) => return Err(delta_err(e)),
                }
            }
            files_done += part.files.len() as u64;
            bytes_done += part.bytes();
            progress(Progress {
                table: label.clone(),
                partition: partition.clone(),
                partitions_done: i + 1,
                partitions_total: total,
                files_done,
                files_total: report.files_in,
                bytes_done,
                bytes_total: report.bytes_in,
            });
        }

        // Data retention: delete what is older than the cutoff.
        let keep =
            TableSettings::duration(&self.settings.get(table).retention).or(self.config.retention);
        // A cutoff before the calendar's start (a retention stored before
        // retentions were bounded) deletes nothing.
        let cutoff = keep.and_then(|keep| {
            self.clock
                .now()
                .checked_sub_signed(chrono::Duration::from_std(keep).ok()?)
        });
        if let Some(cutoff) = cutoff {
            self.hide_in_entities(table, cutoff.timestamp_micros())
                .await?;
            let predicate = col("timestamp").lt(lit(ScalarValue::TimestampMicrosecond(
                Some(cutoff.timestamp_micros()),
                Some("UTC".into()),
            )));
            let (t, metrics) = delta
                .clone()
                .delete()
                .with_predicate(predicate)
                .await
                .map_err(delta_err)?;
            if metrics.num_removed_files > 0 || metrics.num_added_files > 0 {
                self.storage.make_durable(&t).await?;
                changed = true;
            }
            report.retention_files_removed = metrics.num_removed_files as u64;
            delta = t;
            table.adopt_latest(&self.storage).await?;
        }

        if changed {
            deltalake::checkpoints::create_checkpoint(&delta, None)
                .await
                .map_err(delta_err)?;
            self.storage.make_durable(&delta).await?;
            report.checkpoint = true;
            table.adopt_latest(&self.storage).await?;
        }

        let in_use = table.served.in_use(Served::Table);
        report.vacuumed_files = self.vacuum(delta, &label, in_use).await?;

        report.outcome = if !gave_way.is_empty() {
            Outcome::GaveWay {
                partitions: gave_way.len(),
            }
        } else if changed || report.vacuumed_files > 0 {
            Outcome::Done
        } else {
            Outcome::NothingToDo
        };
        Ok(())
    }

    /// deltalake's own bin-packing of a partition's small files, for a
    /// table the merge cannot scan itself.
    async fn bin_pack(
        &self,
        delta: &DeltaTable,
        partition: &str,
        target: u64,
    ) -> std::result::Result<
        (DeltaTable, deltalake::operations::optimize::Metrics),
        deltalake::DeltaTableError,
    > {
        let filters = [(
            crate::storage::PARTITION_COLUMN,
            FilterOp::Eq,
            FilterValue::Scalar(partition),
        )];
        delta
            .clone()
            .optimize()
            .with_filters(&filters)
            .with_target_size(NonZeroU64::new(target).unwrap_or(NonZeroU64::MIN))
            .with_type(OptimizeType::Compact)
            .with_writer_properties(writer_properties(false))
            .with_session_state(self.rewriter.session())
            .await
    }

    /// Deletes the files replaced more than `--vacuum-retention` ago (on
    /// the database's clock) that are not `in_use`: queries were handed
    /// them within that time (`served`). The rest stay listed as
    /// tombstones for a later run. deltalake lists every tombstone still in
    /// the log, including files an earlier vacuum already deleted; each
    /// listed file is looked up first (S3 answers a delete of a missing
    /// key as done), and those already gone are not counted.
    async fn vacuum(&self, delta: DeltaTable, label: &str, in_use: HashSet<String>) -> Result<u64> {
        let delta_err = |source| delta_error(label, source);
        let retention = chrono::Duration::from_std(self.config.effective_vacuum_retention())
            .unwrap_or(chrono::Duration::hours(1));
        let (delta, listed) = delta
            .vacuum()
            .with_clock(Arc::new(VacuumClock(self.clock.clone())))
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_dry_run(true)
            .await
            .map_err(delta_err)?;
        let store = delta.object_store();
        let mut deleted = 0u64;
        for file in listed.files_deleted.iter().filter(|f| !in_use.contains(*f)) {
            let path = object_store::path::Path::parse(file)
                .unwrap_or_else(|_| object_store::path::Path::from(file.as_str()));
            match object_store::ObjectStoreExt::head(store.as_ref(), &path).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(delta_err(e.into())),
            }
            match object_store::ObjectStoreExt::delete(store.as_ref(), &path).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(delta_err(e.into())),
            }
        }
        Ok(deleted)
    }

    /// The table settings store.
    pub fn table_settings(&self) -> &SettingsStore {
        &self.settings
    }
}
