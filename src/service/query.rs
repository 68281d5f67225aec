//! Queries: SQL and DSL documents, run or only planned, each admitted once
//! (role, the tenant's query rate, the size of its text), counted in the
//! metrics by interface and audited when it tries to change something.

use super::{Error, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{Principal, Role};
use crate::query::QueryOptions;
use crate::query::pin::{Pin, ReadLog};
use crate::ratelimit;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use std::sync::Arc;
use std::time::Instant;

/// The interface a query came through, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Sql,
    Dsl,
    Flight,
    /// A tool call over MCP.
    Mcp,
    /// A statement over the PostgreSQL wire protocol, which also sees
    /// PostgreSQL's catalog (`pg_catalog`).
    Postgres,
    /// An entity stream read.
    Stream,
    /// A subscription's read of new events.
    Subscription,
}

impl Interface {
    fn label(self) -> &'static str {
        match self {
            Interface::Sql => "sql",
            Interface::Dsl => "dsl",
            Interface::Flight => "flight",
            Interface::Mcp => "mcp",
            Interface::Postgres => "postgres",
            Interface::Stream => "stream",
            Interface::Subscription => "subscription",
        }
    }

    /// What its reads are, as policies see them.
    pub(super) fn action(self) -> crate::policy::Action {
        match self {
            Interface::Sql
            | Interface::Dsl
            | Interface::Flight
            | Interface::Mcp
            | Interface::Postgres => crate::policy::Action::Query,
            Interface::Stream | Interface::Subscription => crate::policy::Action::Stream,
        }
    }
}

/// Which engine runs a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// This server, over everything acknowledged.
    #[default]
    Local,
    /// The Ballista cluster the server was started with, over what is
    /// stored (see `query::distributed`).
    Distributed,
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "local" => Ok(Engine::Local),
            "distributed" | "ballista" => Ok(Engine::Distributed),
            other => Err(format!(
                "unknown engine {other:?}; use local or distributed"
            )),
        }
    }
}

/// What planning a statement tells a client before it runs.
#[derive(Debug)]
pub struct Planned {
    /// The schema of its results.
    pub dataset: SchemaRef,
    /// Its placeholders (`$1`, ...) and the type each was inferred to have
    /// (`Null` when none was).
    pub parameters: Schema,
}

impl Service {
    /// Runs a SQL statement (with `params` bound to its placeholders) for
    /// `caller` and returns its result stream.
    pub async fn sql(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
        interface: Interface,
    ) -> Result<SendableRecordBatchStream> {
        let (stream, _) = self
            .sql_read(caller, sql, params, None, false, interface)
            .await?;
        Ok(stream)
    }

    /// [`Service::sql`] reading every table as of `pin` (all it holds
    /// when `None`), and as written when `raw` (without schema
    /// migrations); also returns what the query read of each table.
    pub async fn sql_read(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
        pin: Option<Pin>,
        raw: bool,
        interface: Interface,
    ) -> Result<(SendableRecordBatchStream, Arc<ReadLog>)> {
        self.sql_read_on(caller, sql, params, pin, raw, interface, Engine::Local)
            .await
    }

    /// [`Service::sql_read`] on the engine chosen.
    #[allow(clippy::too_many_arguments)]
    pub async fn sql_read_on(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
        pin: Option<Pin>,
        raw: bool,
        interface: Interface,
        engine: Engine,
    ) -> Result<(SendableRecordBatchStream, Arc<ReadLog>)> {
        let started = Instant::now();
        let (mut options, reads) = QueryOptions::recording(pin, raw);
        options.action = interface.action();
        options.pg_catalog = interface == Interface::Postgres;
        let result = self.sql_with(caller, sql, params, options, engine).await;
        observe(interface, started, &result);
        result.map(|stream| (stream, reads))
    }

    async fn sql_with(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
        options: QueryOptions,
        engine: Engine,
    ) -> Result<SendableRecordBatchStream> {
        self.admit_query(caller)?;
        if sql.trim().is_empty() {
            return Err(Error::invalid("no SQL given"));
        }
        // Before a query slot is taken; planning checks it again, as it
        // does for inner queries.
        self.check_size("the SQL text", sql.len())?;
        let stream = match engine {
            Engine::Local => self.queries.sql_with(caller, sql, params, options).await,
            Engine::Distributed if params.is_some() => {
                return Err(Error::invalid(
                    "distributed queries take no bound parameters",
                ));
            }
            Engine::Distributed => self.queries.distributed(caller, sql, options).await,
        };
        let stream = stream.map_err(|e| self.query_error(caller, sql, e))?;
        self.meter(caller, ratelimit::Kind::Queries, 1);
        Ok(stream)
    }

    /// Runs a DSL document (docs/dsl.md) for `caller`, given as its JSON
    /// text.
    pub async fn dsl(&self, caller: &Principal, doc: &[u8]) -> Result<SendableRecordBatchStream> {
        let (stream, _) = self.dsl_read(caller, doc, None, false).await?;
        Ok(stream)
    }

    /// [`Service::dsl`] reading every table as of `pin`, and as written
    /// when `raw`; also returns what the query read of each table.
    pub async fn dsl_read(
        &self,
        caller: &Principal,
        doc: &[u8],
        pin: Option<Pin>,
        raw: bool,
    ) -> Result<(SendableRecordBatchStream, Arc<ReadLog>)> {
        let started = Instant::now();
        let (options, reads) = QueryOptions::recording(pin, raw);
        let result = self.dsl_with(caller, doc, &options).await;
        observe(Interface::Dsl, started, &result);
        result.map(|stream| (stream, reads))
    }

    async fn dsl_with(
        &self,
        caller: &Principal,
        doc: &[u8],
        options: &QueryOptions,
    ) -> Result<SendableRecordBatchStream> {
        self.admit_query(caller)?;
        self.check_size("the query document", doc.len())?;
        let doc: serde_json::Value = serde_json::from_slice(doc).map_err(|e| {
            Error::invalid(format!(
                "the query document is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let stream = crate::dsl::run_with(&self.queries, caller, &doc, options).await?;
        self.meter(caller, ratelimit::Kind::Queries, 1);
        Ok(stream)
    }

    /// Plans `sql` (with `params` bound) for `caller` without running it,
    /// as a query is run: under the tenant's query rate, with one of its
    /// query slots, on the query threads and within the query timeout, so
    /// that planning costs the caller what running would.
    pub async fn plan(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
        interface: Interface,
    ) -> Result<Planned> {
        self.admit_query(caller)?;
        self.check_size("the SQL text", sql.len())?;
        let options = QueryOptions {
            action: interface.action(),
            pg_catalog: interface == Interface::Postgres,
            ..Default::default()
        };
        let ctx = crate::query::session_with(&self.queries, caller, &options)?;
        let text = sql.to_string();
        let planned = self
            .queries
            .plan(caller, async move {
                let mut plan = crate::query::plan_sql(&ctx, &text).await?;
                let parameters = crate::query::parameters(&plan)?;
                if let Some(params) = &params {
                    plan = crate::query::bind(plan, params)?;
                }
                Ok::<_, DataFusionError>(Planned {
                    dataset: std::sync::Arc::new(plan.schema().as_arrow().clone()),
                    parameters: Schema::new(
                        parameters
                            .into_iter()
                            .map(|(name, ty)| Field::new(name, ty.unwrap_or(DataType::Null), true))
                            .collect::<Vec<_>>(),
                    ),
                })
            })
            .await;
        planned.map_err(|e| self.query_error(caller, sql, e))
    }

    /// Connects the query engine to the Ballista cluster `--ballista`
    /// names, or starts one in this process (`local`); returns the
    /// scheduler's URL, or `None` when the option is not set.
    pub async fn start_cluster(&self) -> Result<Option<String>> {
        use crate::query::distributed::Cluster;
        let config = self.db.config();
        let Some(spec) = config.ballista.as_deref() else {
            return Ok(None);
        };
        let cluster = match spec {
            "local" => {
                let stores = [self.db.storage().file_store()];
                Cluster::local(
                    config.ballista_executors,
                    &stores,
                    config.query_memory_limit,
                    &config.data_dir.join("ballista"),
                    self.queries.env(),
                )
                .await
            }
            address => Cluster::remote(address),
        }
        .map_err(|e| Error::invalid(format!("--ballista {spec}: {e}")))?;
        let scheduler = cluster.scheduler().to_string();
        self.queries.set_cluster(cluster);
        Ok(Some(scheduler))
    }

    /// Refuses a statement that would change data, which no interface
    /// runs, and records the attempt.
    pub fn refuse_update(&self, caller: &Principal, sql: &str, message: &str) -> Error {
        let refusal = crate::query::ReadOnlyRefusal(message.to_string());
        self.audit_refused(caller, sql, &refusal.to_string());
        Error::invalid(refusal.to_string())
    }

    /// The largest statement or parameter upload a query may send.
    pub fn max_query_bytes(&self) -> usize {
        self.queries.limits().settings.sql.max_bytes
    }

    /// The role and the rate every query needs.
    pub(super) fn admit_query(&self, caller: &Principal) -> Result<()> {
        caller.require(Role::Reader, "query")?;
        self.rate_check(caller, ratelimit::Kind::Queries, 1)
    }

    pub(super) fn check_size(&self, what: &str, len: usize) -> Result<()> {
        self.queries
            .limits()
            .settings
            .sql
            .check_size(what, len)
            .map_err(Error::invalid)
    }

    /// The error of a query that failed to start; a statement refused
    /// because it would change something is audited.
    fn query_error(&self, caller: &Principal, sql: &str, e: DataFusionError) -> Error {
        if let Some(refusal) = crate::query::read_only_refusal(&e) {
            self.audit_refused(caller, sql, &refusal.to_string());
        }
        e.into()
    }

    fn audit_refused(&self, caller: &Principal, sql: &str, message: &str) {
        self.audit(AuditEntry::by(
            caller,
            AuditKind::DdlRefused,
            sql.chars().take(1000).collect(),
            400,
            message.to_string(),
        ));
    }
}

/// Counts a query and its latency to the start of its result (or its
/// refusal).
pub(super) fn observe<T>(interface: Interface, started: Instant, result: &Result<T>) {
    let m = crate::metrics::get();
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.kind.outcome(),
    };
    m.queries
        .with_label_values(&[interface.label(), outcome])
        .inc();
    m.query_seconds
        .with_label_values(&[interface.label()])
        .observe(started.elapsed().as_secs_f64());
}
