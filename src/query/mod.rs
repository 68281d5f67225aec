//! The read path: a DataFusion session per request, scoped to one tenant.
//!
//! [`session`] builds a `SessionContext` whose default schema is the
//! tenant's tables (and nothing else), with the `udfs` functions
//! registered. Each table resolves to an [`table::EventTable`]: the Delta
//! snapshot and the buffer frozen together when the query names it.
//! [`output`] turns result batches into the wire formats. [`bounds`]
//! holds what a query's text may be (size, nesting depth, names), checked
//! before planning; [`limits`] what it may use while it runs.

pub mod bounded;
pub mod bounds;
mod coercion;
mod days;
pub mod distributed;
pub mod engine;
mod entity_reads;
mod grouping_sets;
mod late;
pub mod limits;
pub mod live;
pub mod output;
pub mod partition;
mod pg_catalog;
pub mod pin;
pub mod policy;
mod positions;
pub mod quality;
mod sanity;
pub mod statement;
pub mod stream;
mod system;
pub mod table;
pub mod upcast;
mod zeros;

use crate::auth::Principal;
use crate::db::Database;
use crate::db::policies::TenantPolicies;
use crate::ids::{TableName, TenantId};
use crate::policy::decide::Decision;
use async_trait::async_trait;
use datafusion::catalog::CatalogProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider};
use datafusion::datasource::{TableProvider, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::optimizer::analyzer::{Analyzer, AnalyzerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};
pub use engine::{ExtraSchema, QueryEngine, SystemTable};
use object_store::ObjectStore;
pub use statement::{
    ReadOnlyRefusal, bind, parameters, plan_sql, read_only, read_only_refusal, start, tables_named,
};
use std::sync::Arc;

/// A name as an SQL identifier: in double quotes, any inside doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Text as an SQL string literal: in single quotes, any inside doubled.
pub fn quote_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The first line of an error's text, for messages that name a place
/// before it.
pub fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// Catalog and schema names under which a tenant's tables appear.
pub const CATALOG: &str = "allsource";
pub const SCHEMA: &str = "public";

/// The tables of one tenant, as a DataFusion schema.
#[derive(Debug)]
struct TenantSchema {
    db: Arc<Database>,
    tenant: TenantId,
    options: QueryOptions,
    /// Whose policies decide what the tables read as.
    caller: Principal,
    denials: Option<Arc<crate::audit::DenialLog>>,
}

/// How a session reads its tables.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Limits every table read (a table named with its own pin, from
    /// `as_of(...)`, keeps that one).
    pub pin: Option<pin::Pin>,
    /// Where the tables read are recorded.
    pub reads: Option<Arc<pin::ReadLog>>,
    /// The query wants only rows after this position (it says so in its
    /// own filter): buffered batches wholly at or below it are not even
    /// taken into the tables' views. Live streams set it.
    pub after: Option<u64>,
    /// Read events as they were written, without their schema
    /// migrations.
    pub raw: bool,
    /// What the reads are for, as policies see them: a query or a stream.
    pub action: crate::policy::Action,
    /// The session also offers PostgreSQL's catalog (`pg_catalog`) and
    /// the functions its clients call, for the wire protocol.
    pub pg_catalog: bool,
    /// Tables read only what is stored (no buffered rows): what the
    /// distributed engine runs on.
    pub stored_only: bool,
    /// The query reads a few rows of one entity: it is planned for one
    /// partition, so that no time goes into splitting files into ranges
    /// read in parallel, repartitioning and merging what little it reads.
    pub point_read: bool,
}

impl QueryOptions {
    /// Options reading as of `pin` (and, when `raw`, without schema
    /// migrations) and recording what is read, with the record.
    pub fn recording(pin: Option<pin::Pin>, raw: bool) -> (QueryOptions, Arc<pin::ReadLog>) {
        let reads = Arc::new(pin::ReadLog::default());
        let options = QueryOptions {
            pin,
            reads: Some(reads.clone()),
            after: None,
            raw,
            action: Default::default(),
            pg_catalog: false,
            stored_only: false,
            point_read: false,
        };
        (options, reads)
    }
}

#[async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.db.table_names(&self.tenant);
        names.retain(|t| self.decide(t).1.allowed);
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let (name, pin) = match pin::Pin::split_name(name) {
            Some((name, pin)) => (name, Some(pin)),
            None => (name, self.options.pin),
        };
        let Ok(name) = name.parse::<TableName>() else {
            return Ok(None);
        };
        let Some(t) = self.db.table(&self.tenant, &name) else {
            return Ok(None);
        };
        let (policies, decision) = self.decide(name.as_str());
        if !decision.allowed {
            return Err(self.denied(name.as_str(), decision.because));
        }
        let view = match pin {
            Some(pin::Pin::TableVersion(v)) => self
                .db
                .view_at_version(&t, v)
                .await
                .map_err(|e| DataFusionError::Plan(e.to_string()))?,
            _ => self.db.view_after(&t, self.options.after),
        };
        let view = match self.options.stored_only {
            true => view.stored_only(),
            false => view,
        };
        if let Some(reads) = &self.options.reads {
            reads.add(pin::TableRead {
                table: name.to_string(),
                delta_version: view.delta_version,
                position: match pin {
                    None | Some(pin::Pin::TableVersion(_)) => view.position,
                    Some(pin::Pin::Position(p)) => view.position.map(|v| v.min(p)),
                    Some(pin::Pin::Timestamp(_)) => None,
                },
            });
        }
        let mut table: Arc<dyn TableProvider> = Arc::new(table::EventTable::from_view(view));
        if let Some(filter) = pin.and_then(pin::Pin::filter) {
            let plan = LogicalPlanBuilder::scan(name.as_str(), provider_as_source(table), None)?
                .filter(filter)?
                .build()?;
            table = Arc::new(ViewTable::new(plan, None));
        }
        if !self.options.raw
            && let Some(gov) = self.db.schemas().get(&self.tenant, &name)
            && gov.migrates()
        {
            table = Arc::new(upcast::UpcastTable::new(table, gov, name.as_str()));
        }
        if !decision.restriction.is_none() {
            table = Arc::new(policy::PolicyTable::new(
                table,
                name.as_str(),
                decision.restriction,
                policies.salt_bytes(),
            ));
        }
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        name.parse::<TableName>()
            .ok()
            .is_some_and(|n| self.db.table(&self.tenant, &n).is_some())
    }
}

impl TenantSchema {
    fn decide(&self, table: &str) -> (Arc<TenantPolicies>, Decision) {
        policy::decide_for(&self.db, &self.caller, self.options.action, table)
    }

    fn denied(&self, table: &str, because: String) -> DataFusionError {
        let (denials, action) = (self.denials.as_ref(), self.options.action);
        policy::denial(denials, &self.caller, action, table, because)
    }
}

/// The table functions a session offers: DataFusion's generators and the
/// `udfs` crate's, whose inner queries run in the caller's own session.
/// None of them reads files or URLs; a test keeps it that way.
pub const TABLE_FUNCTIONS: &[&str] = &[
    "generate_series",
    "range",
    "detect_anomalies",
    "gapfill",
    "trend",
    "cohorts",
    "data_quality",
];

/// A session that sees `caller`'s tenant's tables and nothing else, with
/// its own memory pool under the server's query limits.
pub fn session(engine: &QueryEngine, caller: &Principal) -> Result<SessionContext> {
    session_with(engine, caller, &QueryOptions::default())
}

/// [`session`], reading its tables as `options` say.
pub fn session_with(
    engine: &QueryEngine,
    caller: &Principal,
    options: &QueryOptions,
) -> Result<SessionContext> {
    let db = engine.db().clone();
    // The bounds on a statement's text, for `plan_sql` and, through the
    // `udfs` hook, the table functions' inner queries.
    let bounds = Arc::new(bounds::SessionBounds::new(engine.limits().settings.sql));
    let parser = bounds.clone();
    let inner = udfs::udtf::InnerQueryParser(Box::new(move |state, sql| parser.parse(state, sql)));
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_extension(bounds)
        .with_extension(Arc::new(inner))
        .with_extension(Arc::new(quality::Declared {
            db: db.clone(),
            tenant: caller.tenant.clone(),
        }));
    // Each sort partition keeps this much for merging its spill files
    // (DataFusion's default: 10 MB). A small budget must leave the sorts
    // room to hold batches, so the reserve is a sixteenth of the budget
    // at most.
    let merge_reserve = &mut config.options_mut().execution.sort_spill_reservation_bytes;
    *merge_reserve = (*merge_reserve).min(db.config().query_memory_limit / 16);
    if options.point_read {
        config.options_mut().execution.target_partitions = 1;
    }
    // DataFusion 55 plans `x IS TRUE` (and the other truth tests) over a
    // nullable `x` as nullable while its logical plan says it never is; an
    // aggregation over such a value failed this check with an internal
    // error. The values agree (a truth test is never NULL); only the
    // schemas' nullability flags differ (DataFusion issue 24096).
    config
        .options_mut()
        .execution
        .skip_physical_aggregate_schema_check = true;
    // DataFusion 55's TopK aggregation (`GROUP BY g ORDER BY max(x) LIMIT
    // k` keeping only k groups) panicked in its hash table on the SQL
    // fuzzer's queries ("entered unreachable code" in `remove_at`), a 500.
    // Such queries aggregate every group instead.
    config.options_mut().optimizer.enable_topk_aggregation = false;
    // A fresh object-store registry: it holds only what the Delta scans of
    // this query register, so no statement can reach `file://` or another
    // tenant's store.
    let registry = Arc::new(SandboxStores::default());
    let runtime = RuntimeEnvBuilder::from_runtime_env(engine.env())
        .with_memory_pool(engine.limits().query_pool())
        .with_object_store_registry(registry)
        .build_arc()?;
    // The grouping-sets rule runs before DataFusion's own rules, which
    // would otherwise act on the order claims it removes.
    let mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> =
        vec![Arc::new(grouping_sets::GroupingSetOutputs)];
    // DataFusion's rules, with its sanity check replaced by one without a
    // known false refusal (see `sanity`).
    // The TopK filters' children are set just before the filters are
    // pushed into the scans (see `late`).
    let pushdown = FilterPushdown::new_post_optimization();
    for rule in PhysicalOptimizer::new().rules {
        if rule.name() == pushdown.name() {
            rules.push(Arc::new(late::TopKFilterColumns));
        }
        match rule.name() == sanity::SanityCheck::default().name() {
            true => rules.push(Arc::new(sanity::SanityCheck::default())),
            false => rules.push(rule),
        }
    }
    // DataFusion's analyzer rules, with its type coercion answering the
    // user's type errors as such (see `coercion`).
    let analyzer: Vec<Arc<dyn AnalyzerRule + Send + Sync>> = Analyzer::new()
        .rules
        .into_iter()
        .map(|rule| match coercion::Coercion::replaces(rule.name()) {
            true => Arc::new(coercion::Coercion::default()) as _,
            false => rule,
        })
        .collect();
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_analyzer_rules(analyzer)
        .with_optimizer_rule(Arc::new(policy::TopInside))
        .with_optimizer_rule(Arc::new(zeros::SignlessSortKeys))
        .with_optimizer_rule(Arc::new(days::DayFromPartition))
        .with_physical_optimizer_rules(rules)
        .with_physical_optimizer_rule(Arc::new(late::TopKRowFilters))
        .with_physical_optimizer_rule(Arc::new(bounded::OperatorMemory))
        .build();
    let tenant = caller.tenant.clone();
    let mut ctx = SessionContext::new_with_state(state);
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(
        "system",
        Arc::new(system::SystemSchema {
            db: db.clone(),
            tenant: tenant.clone(),
            admin: caller.is_admin(),
            extra: engine.extra_schema().cloned(),
            more: engine.system_tables(),
            caller: caller.clone(),
            action: options.action,
            denials: engine.denials().cloned(),
        }),
    )?;
    catalog.register_schema(
        SCHEMA,
        Arc::new(TenantSchema {
            db,
            tenant,
            options: options.clone(),
            caller: caller.clone(),
            denials: engine.denials().cloned(),
        }),
    )?;
    if let Some(extra) = engine.extra_schema() {
        let guarded = policy::GuardedSchema {
            inner: extra.for_tenant(&caller.tenant),
            extra: extra.clone(),
            db: engine.db().clone(),
            caller: caller.clone(),
            action: options.action,
            denials: engine.denials().cloned(),
        };
        catalog.register_schema(extra.name(), Arc::new(guarded))?;
    }
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    udfs::register_all(&mut ctx)?;
    bounded::register(&mut ctx)?;
    ctx.register_udf(partition::udf());
    for f in policy::masks::caller_functions(caller) {
        ctx.register_udf(f);
    }
    ctx.register_udtf("data_quality", Arc::new(quality::DataQuality));
    #[cfg(debug_assertions)]
    {
        let state = ctx.state_ref();
        let state = state.read();
        let mut offered: Vec<&str> = state.table_functions().keys().map(String::as_str).collect();
        offered.sort_unstable();
        let mut vetted = TABLE_FUNCTIONS.to_vec();
        vetted.sort_unstable();
        assert_eq!(
            offered, vetted,
            "the table functions on offer are not the vetted list"
        );
    }
    if options.pg_catalog {
        pg_catalog::install(engine, &ctx, caller)?;
    }
    Ok(ctx)
}

/// An object-store registry that starts empty: unlike DataFusion's
/// default, it does not serve the local file system.
#[derive(Debug, Default)]
struct SandboxStores {
    stores: parking_lot::RwLock<std::collections::HashMap<String, Arc<dyn ObjectStore>>>,
}

fn store_key(url: &url::Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl ObjectStoreRegistry for SandboxStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores.write().insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &url::Url) -> Result<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .remove(&store_key(url))
            .ok_or_else(|| DataFusionError::Plan(format!("no object store for {url}")))
    }

    fn get_store(&self, url: &url::Url) -> Result<Arc<dyn ObjectStore>> {
        self.stores
            .read()
            .get(&store_key(url))
            .cloned()
            .ok_or_else(|| {
                DataFusionError::Plan(format!("{} is not readable from a query", url.scheme()))
            })
    }
}
