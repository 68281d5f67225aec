//! The one service every interface offers: ingest, SQL, the DSL,
//! maintenance and the server's own state, each call made by a
//! [`Principal`]. Roles, rate limits, query admission, metrics and the
//! audit log are applied here, once; HTTP and Flight (the transports) only
//! translate their wire formats to and from these calls, and map
//! [`Error`]'s [`Kind`] to their own codes.
//!
//! - [`caller`]: who a request is, from its credentials.
//! - [`query`]: SQL and DSL queries, and planning without running.
//! - [`ingest`]: events in, by request or by streamed batches.
//! - [`admin`]: maintenance runs and table settings.
//! - [`projections`]: aggregates kept up to date as events arrive.

pub mod admin;
pub mod backup;
pub mod caller;
mod error;
pub mod groups;
pub mod ingest;
pub mod migrations;
mod pipeline_feed;
mod pipeline_task;
pub mod pipelines;
pub mod policies;
mod policy_checks;
pub mod projections;
pub mod query;
mod quota_file;
pub mod replay;
pub mod schemas;
mod snapshots;
pub mod stream;
pub mod subscribe;
mod versions;

pub use error::{Error, Kind, Result, is_user_error};

use crate::audit::Auditor;
use crate::auth::{Principal, Role, Verifier};
use crate::db::Database;
use crate::ingest::budget::IngestBudget;
use crate::query::QueryEngine;
use crate::ratelimit::{self, RateLimits};
use std::sync::Arc;

/// The service of one server process.
#[derive(Debug)]
pub struct Service {
    db: Arc<Database>,
    queries: Arc<QueryEngine>,
    auditor: Auditor,
    /// Checks bearer tokens; `None` when auth is off.
    verifier: Option<Arc<Verifier>>,
    /// Per-tenant event and query rates.
    rate_limits: Arc<RateLimits>,
    /// The buckets of quota policies.
    quotas: ratelimit::QuotaBuckets,
    /// Where they are kept across restarts.
    quota_file: quota_file::QuotaFile,
    /// Admitted events and queries per second, per tenant.
    meters: ratelimit::Meters,
    /// Memory that ingest requests in flight may take together, and one
    /// of them alone (`--ingest-memory-budget`,
    /// `--max-ingest-request-bytes`).
    ingest_budget: Arc<IngestBudget>,
    /// Each tenant's open subscriptions.
    subscriptions: subscribe::Subscriptions,
    /// Consumers connected to durable subscriptions.
    consumers: groups::Consumers,
    /// Cancelled when the server shuts down: open subscriptions end.
    closing: tokio_util::sync::CancellationToken,
    /// Every tenant's projections.
    projections: Arc<crate::projection::Registry>,
    /// The projections an earlier process stored, until
    /// [`Service::start_projections`] defines them again.
    stored_projections: parking_lot::Mutex<Vec<crate::projection::registry::StoredSpec>>,
    /// Every tenant's pipelines.
    pipelines: Arc<crate::pipeline::PipelineStore>,
    /// Held while a table's schemas change, so changes are compiled,
    /// stored and installed in the order they were made.
    governing: tokio::sync::Mutex<()>,
    /// Where maintenance runs that a request starts go: one thread at the
    /// background priority, as the scheduled runs have, not the request
    /// threads.
    manual_runs: crate::background::LowPriorityRuntime,
}

impl Service {
    /// The service over `db`: the query engine of its configuration, the
    /// given token verifier and rate limits.
    pub fn new(
        db: Arc<Database>,
        verifier: Option<Arc<Verifier>>,
        rate_limits: Arc<RateLimits>,
    ) -> Result<Arc<Self>> {
        let queries = QueryEngine::new(db.clone()).map_err(Error::internal)?;
        let (quota_file, saved) = quota_file::QuotaFile::open(&db.config().data_dir);
        let quotas = ratelimit::QuotaBuckets::default();
        quotas.restore(saved);
        let auditor = Auditor::new(db.clone());
        queries.set_denials(auditor.denials().clone());
        let config = db.config();
        let ingest_budget =
            IngestBudget::new(config.ingest_memory_budget, config.max_ingest_request_bytes);
        let (projections, stored) =
            crate::projection::Registry::open(config.data_dir.join("projections.json"))
                .map_err(|e| Error::internal(format!("cannot read the projections: {e}")))?;
        let projections = Arc::new(projections);
        let pipelines = Arc::new(
            crate::pipeline::PipelineStore::load(config.data_dir.join(crate::ids::PIPELINES_DIR))
                .map_err(|e| Error::internal(format!("cannot read the pipelines: {e}")))?,
        );
        queries.add_system_table(Arc::new(crate::pipeline::sql::PipelinesTable {
            store: pipelines.clone(),
            db: db.clone(),
        }));
        queries.add_schema(Arc::new(crate::projection::sql::SqlSchema {
            registry: projections.clone(),
            db: db.clone(),
        }));
        let manual_runs = crate::background::LowPriorityRuntime::new("manual-maint", 1, None)
            .map_err(|e| Error::internal(format!("cannot start a maintenance thread: {e}")))?;
        let service = Arc::new(Service {
            manual_runs,
            governing: Default::default(),
            projections,
            stored_projections: parking_lot::Mutex::new(stored),
            pipelines,
            auditor,
            db,
            queries,
            verifier,
            rate_limits,
            quotas,
            quota_file,
            meters: Default::default(),
            ingest_budget,
            subscriptions: Default::default(),
            consumers: Default::default(),
            closing: Default::default(),
        });
        service.start_schemas();
        Ok(service)
    }

    /// Whether requests must carry a token.
    pub fn auth_enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// Cancelled when the server shuts down.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing.clone()
    }

    /// Ends every open subscription: the server is shutting down.
    pub fn close_subscriptions(&self) {
        self.closing.cancel();
    }

    /// The database the service runs on.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// The query engine.
    pub fn queries(&self) -> &Arc<QueryEngine> {
        &self.queries
    }

    /// The memory ingest requests in flight share.
    pub fn ingest_budget(&self) -> &Arc<IngestBudget> {
        &self.ingest_budget
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &crate::config::Config {
        self.db.config()
    }

    /// Records `entry` in the audit log, in the background.
    pub fn audit(&self, entry: crate::audit::AuditEntry) {
        self.auditor.record(entry);
    }

    /// Whether the server can take writes: false once the WAL has failed.
    pub fn health(&self) -> Result<()> {
        if self.db.is_healthy() {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Unavailable,
                "the write-ahead log has failed; restart the server",
            ))
        }
    }

    /// The metrics in the Prometheus text format. Series are labelled by
    /// tenant: only admins see them.
    pub fn metrics_text(&self, caller: &Principal) -> Result<String> {
        caller.require(Role::Admin, "read metrics")?;
        let m = crate::metrics::get();
        m.buffer_bytes.set(self.db.buffered_bytes() as i64);
        m.entity_index_bytes
            .set(self.db.entity_index_bytes() as i64);
        m.buffer_rows.set(self.db.buffered_rows() as i64);
        m.query_memory_bytes
            .set(self.queries.limits().memory_in_use() as i64);
        m.compaction_memory_bytes
            .set(self.db.compaction_memory_in_use() as i64);
        m.subscription_lag_positions.reset();
        m.subscription_consumers.reset();
        for group in self.db.groups().all() {
            let info = self.group_info(&group);
            let labels = [group.tenant.as_str(), group.name.as_str()];
            m.subscription_lag_positions
                .with_label_values(&labels)
                .set(info.lag_positions as i64);
            m.subscription_consumers
                .with_label_values(&labels)
                .set(info.consumers as i64);
        }
        for gauge in [
            &m.projection_lag_positions,
            &m.projection_rows,
            &m.projection_state_bytes,
            &m.projection_failed,
            &m.projection_errors,
        ] {
            gauge.reset();
        }
        for live in self.projections.all() {
            let info = self.projection_info(&live);
            let labels = [live.tenant.as_str(), live.name.as_str()];
            m.projection_lag_positions
                .with_label_values(&labels)
                .set(info.lag_positions as i64);
            m.projection_rows
                .with_label_values(&labels)
                .set(info.rows as i64);
            m.projection_state_bytes
                .with_label_values(&labels)
                .set(info.state_bytes as i64);
            m.projection_failed
                .with_label_values(&labels)
                .set(i64::from(info.health != crate::projection::Health::Running));
            m.projection_errors
                .with_label_values(&labels)
                .set(info.errors as i64);
        }
        self.pipeline_metrics(m);
        Ok(m.render())
    }

    /// The caller's table `name`, or not found.
    pub(crate) fn table_of(
        &self,
        caller: &Principal,
        name: &crate::ids::TableName,
    ) -> Result<Arc<crate::db::Table>> {
        self.db.table(&caller.tenant, name).ok_or_else(|| {
            Error::new(
                Kind::NotFound,
                format!("table {:?} does not exist", name.as_str()),
            )
        })
    }

    /// Takes `n` units of `kind` from the caller's tenant's bucket, or
    /// refuses: overloaded (retry later), or too large when the request
    /// alone is over the tenant's burst.
    pub fn rate_check(&self, caller: &Principal, kind: ratelimit::Kind, n: u32) -> Result<()> {
        self.rate_limits.check(&caller.tenant, kind, n)?;
        self.quota_check(caller, kind, n)
    }

    /// Counts `n` of `kind` done for `caller`'s tenant in the rates
    /// [`Service::rates`] gives: events once stored, queries once started.
    fn meter(&self, caller: &Principal, kind: ratelimit::Kind, n: u64) {
        self.meters.record(&caller.tenant, kind, n);
    }

    /// The caller's tenant's stored events and started queries per second
    /// over the last minute. Work refused at any step is left out.
    pub fn rates(&self, caller: &Principal) -> (f64, f64) {
        self.meters.per_second(&caller.tenant)
    }
}

#[cfg(test)]
mod tests;

/// A request body that must be one JSON object, read as `T`. (serde reads
/// a struct from an array of its fields too, which no client means.)
pub fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !value.is_object() {
        let found = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(format!("expected a JSON object, found {found}"));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}
