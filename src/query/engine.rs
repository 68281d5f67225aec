//! The query engine of one server: the database it reads, the limits every
//! query runs under, the runtime environment queries share (spill files)
//! and the threads they execute on.
//!
//! The database knows nothing of queries; the engine reads it through the
//! tables it offers ([`Database::table`], [`Database::view`]).

use super::limits::{LimitSettings, QueryLimits, QueryRuntime, plan_limited, run_limited};
use crate::auth::Principal;
use crate::db::Database;
use arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;
use std::future::Future;
use std::sync::Arc;

/// Tables that layers above the engine keep (projections), offered to a
/// tenant's sessions as one more schema.
pub trait ExtraSchema: std::fmt::Debug + Send + Sync {
    /// The schema's name in the tenant's catalog.
    fn name(&self) -> &str;
    /// The tenant's tables in it.
    fn for_tenant(
        &self,
        tenant: &crate::ids::TenantId,
    ) -> Arc<dyn datafusion::catalog::SchemaProvider>;
    /// The event table `table` of `tenant` holds rows of, if any: a
    /// caller whose policies restrict that table may not read it.
    fn source_of(&self, _tenant: &crate::ids::TenantId, _table: &str) -> Option<String> {
        None
    }
    /// Whom `table` read its source as, when another caller defined it.
    fn definer_of(
        &self,
        _tenant: &crate::ids::TenantId,
        _table: &str,
    ) -> Option<crate::auth::Definer> {
        None
    }
    /// The name of the table about them in the `system` schema.
    fn system_table_name(&self) -> &str;
    /// That table for the tenant, as it is now.
    fn system_table(
        &self,
        tenant: &crate::ids::TenantId,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>>;
}

/// One more table of the `system` schema, about what a layer above the
/// engine keeps (`system.pipelines`).
pub trait SystemTable: std::fmt::Debug + Send + Sync {
    /// Its name in the `system` schema.
    fn name(&self) -> &str;
    /// The table for `tenant`, as it is now.
    fn for_tenant(
        &self,
        tenant: &crate::ids::TenantId,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>>;
}

/// What every query of the server shares.
#[derive(Debug)]
pub struct QueryEngine {
    /// Set once, by the layer that keeps those tables.
    extra: std::sync::OnceLock<Arc<dyn ExtraSchema>>,
    /// Added by the layers above, at start-up.
    system_tables: parking_lot::RwLock<Vec<Arc<dyn SystemTable>>>,
    /// Where reads refused by policies are recorded; set once, by the
    /// layer that keeps the audit log.
    denials: std::sync::OnceLock<Arc<crate::audit::DenialLog>>,
    db: Arc<Database>,
    limits: QueryLimits,
    /// Spill files and caches; each query gets its own memory pool on top.
    env: Arc<RuntimeEnv>,
    threads: QueryRuntime,
    /// Each caller's `pg_catalog`, for the PostgreSQL wire protocol.
    pg_catalogs: super::pg_catalog::PgCatalogs,
    /// Where distributed queries go, once set.
    cluster: std::sync::OnceLock<super::distributed::Cluster>,
}

impl QueryEngine {
    /// The engine over `db`, with the limits of its configuration.
    pub fn new(db: Arc<Database>) -> Result<Arc<Self>, String> {
        let config = db.config();
        let limits = QueryLimits::new(LimitSettings {
            query_memory: config.query_memory_limit,
            total_memory: config.memory_limit.max(config.query_memory_limit),
            timeout: config.query_timeout,
            concurrent_per_tenant: config.max_concurrent_queries.max(1),
            sql: super::bounds::SqlLimits {
                max_bytes: config.max_query_bytes,
            },
        });
        let env = runtime_env(config)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = QueryRuntime::new(threads)
            .map_err(|e| format!("cannot start the query threads: {e}"))?;
        Ok(Arc::new(QueryEngine {
            extra: Default::default(),
            system_tables: Default::default(),
            denials: Default::default(),
            db,
            limits,
            env,
            threads,
            pg_catalogs: Default::default(),
            cluster: Default::default(),
        }))
    }

    /// Offers `schema` in every session from now on (once; a second call
    /// changes nothing).
    pub fn add_schema(&self, schema: Arc<dyn ExtraSchema>) {
        let _ = self.extra.set(schema);
    }

    /// The schema [`QueryEngine::add_schema`] offered, if any.
    pub fn extra_schema(&self) -> Option<&Arc<dyn ExtraSchema>> {
        self.extra.get()
    }

    /// Records reads refused by policies in `log` from now on.
    pub fn set_denials(&self, log: Arc<crate::audit::DenialLog>) {
        let _ = self.denials.set(log);
    }

    /// Where reads refused by policies are recorded, once set.
    pub fn denials(&self) -> Option<&Arc<crate::audit::DenialLog>> {
        self.denials.get()
    }

    /// Sends distributed queries to `cluster` from now on (once; a second
    /// call changes nothing).
    pub fn set_cluster(&self, cluster: super::distributed::Cluster) {
        let _ = self.cluster.set(cluster);
    }

    /// Where distributed queries go, if anywhere.
    pub fn cluster(&self) -> Option<&super::distributed::Cluster> {
        self.cluster.get()
    }

    /// Offers `table` in every session's `system` schema from now on.
    pub fn add_system_table(&self, table: Arc<dyn SystemTable>) {
        self.system_tables.write().push(table);
    }

    /// The tables [`QueryEngine::add_system_table`] offered.
    pub fn system_tables(&self) -> Vec<Arc<dyn SystemTable>> {
        self.system_tables.read().clone()
    }

    /// The database queries read.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// The limits every query runs under.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// The threads queries execute on.
    pub fn threads(&self) -> &QueryRuntime {
        &self.threads
    }

    /// The runtime environment queries share (spill files, caches).
    pub fn env(&self) -> &Arc<RuntimeEnv> {
        &self.env
    }

    /// A session for `caller`: its tenant's tables only, with every
    /// AllSource function registered.
    pub fn session(&self, caller: &Principal) -> Result<SessionContext> {
        super::session(self, caller)
    }

    pub(super) fn pg_catalogs(&self) -> &super::pg_catalog::PgCatalogs {
        &self.pg_catalogs
    }

    /// Plans `sql` (with `params` bound to its placeholders, if given) and
    /// starts it for `caller`, under the query limits.
    pub async fn sql(
        self: &Arc<Self>,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
    ) -> Result<SendableRecordBatchStream> {
        self.sql_with(caller, sql, params, super::QueryOptions::default())
            .await
    }

    /// [`QueryEngine::sql`], reading the tables as `options` say.
    pub async fn sql_with(
        self: &Arc<Self>,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
        options: super::QueryOptions,
    ) -> Result<SendableRecordBatchStream> {
        let (engine, who, text) = (self.clone(), caller.clone(), sql.to_string());
        self.run(caller, async move {
            let ctx = super::session_with(&engine, &who, &options)?;
            super::start(&ctx, &text, params.as_ref()).await
        })
        .await
    }

    /// Starts `read` (one entity's stream) for `caller`, under the limits
    /// of any query, without going through SQL ([`super::stream`]).
    pub async fn entity_read(
        self: &Arc<Self>,
        caller: &Principal,
        read: super::stream::EntityRead,
        options: super::QueryOptions,
    ) -> Result<SendableRecordBatchStream> {
        let (engine, who) = (self.clone(), caller.clone());
        self.run(caller, async move {
            let ctx = super::session_with(&engine, &who, &options)?;
            super::stream::start(&ctx, &read).await
        })
        .await
    }

    /// [`QueryEngine::sql_with`] on the cluster: the tables read what is
    /// stored, and the plan runs on the Ballista executors. Fails when no
    /// cluster is set.
    pub async fn distributed(
        self: &Arc<Self>,
        caller: &Principal,
        sql: &str,
        mut options: super::QueryOptions,
    ) -> Result<SendableRecordBatchStream> {
        let cluster = self.cluster().cloned().ok_or_else(|| {
            DataFusionError::Plan(
                "this server sends no queries to a cluster (start it with --ballista)".into(),
            )
        })?;
        options.stored_only = true;
        let (engine, who, text) = (self.clone(), caller.clone(), sql.to_string());
        self.run(caller, async move {
            let ctx = super::session_with(&engine, &who, &options)?;
            super::distributed::start(&ctx, &cluster, &text).await
        })
        .await
    }

    /// Runs `start`, which plans and starts a query, under the limits: a
    /// slot of `caller`'s tenant, the query threads, the timeout.
    pub async fn run<F, E>(
        &self,
        caller: &Principal,
        start: F,
    ) -> Result<SendableRecordBatchStream, E>
    where
        F: Future<Output = Result<SendableRecordBatchStream, E>> + Send + 'static,
        E: From<DataFusionError> + Send + 'static,
    {
        run_limited(&self.limits, &self.threads, &caller.tenant, start).await
    }

    /// Runs `work`, which plans without executing, under the limits as
    /// [`QueryEngine::run`] runs a query.
    pub async fn plan<F, T, E>(&self, caller: &Principal, work: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<DataFusionError> + Send + 'static,
    {
        plan_limited(&self.limits, &self.threads, &caller.tenant, work).await
    }
}

/// What every query's runtime shares. Spill files go to a directory of
/// their own, capped in size: DataFusion's default (the system temp dir,
/// up to 100 GB) could fill the disk the WAL needs.
fn runtime_env(config: &crate::config::Config) -> Result<Arc<RuntimeEnv>, String> {
    let dir = config.spill_dir();
    let disk = crate::db::spill::spill_disk(&dir, config.max_spill_bytes)
        .map_err(|e| format!("cannot prepare the spill directory {}: {e}", dir.display()))?;
    datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_disk_manager_builder(disk)
        .build_arc()
        .map_err(|e| format!("cannot set up the query runtime: {e}"))
}
