//! Distributed queries on Apache DataFusion Ballista.
//!
//! The server plans a statement as it plans any query (the caller's
//! tenant, policies and bounds), except that its tables read only what is
//! stored: the buffer stays on the server that holds it. The logical plan
//! goes to a Ballista scheduler, which plans it into stages; executors run
//! them, reading the Delta tables' Parquet files from the store, and the
//! server streams the result back from them.
//!
//! Every process of a cluster plans or runs with [`cluster_state`]:
//! DataFusion's defaults, every AllSource function (the `udfs` crate's,
//! the bounded ones and `partition`) and [`codec::TableCodec`], which
//! sends a stored table as its file list. [`process`] starts the
//! scheduler and the executors, in the server (`--ballista local`) or as
//! processes of their own (`allsource scheduler`, `allsource executor`).
//!
//! What is refused, before anything is sent: tables read through row
//! filters, column masks or schema migrations (their rules are applied
//! where the plan is made, not on the executors), table functions, the
//! `system` and `projections` schemas.

pub mod codec;
pub mod process;

use crate::query::{bounded, partition, plan_sql, table::EventTable, zeros};
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::catalog::view::ViewTable;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::AsLogicalPlan;
use datafusion_proto::protobuf::LogicalPlanNode;
use object_store::ObjectStore;
use std::sync::Arc;
use url::Url;

/// Where distributed queries are sent.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The scheduler, as `http://host:port`.
    scheduler: String,
}

impl Cluster {
    /// The cluster whose scheduler is at `address`: `df://host:port`,
    /// `http://host:port` or `host:port` (port 50050 when not given).
    pub fn remote(address: &str) -> Result<Cluster, String> {
        let rest = address
            .strip_prefix("df://")
            .or_else(|| address.strip_prefix("http://"))
            .unwrap_or(address)
            .trim_end_matches('/');
        let url = Url::parse(&format!("http://{rest}"))
            .map_err(|e| format!("the Ballista scheduler address {address:?}: {e}"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("the Ballista scheduler address {address:?} has no host"))?;
        if url.path() != "/" {
            return Err(format!(
                "the Ballista scheduler address {address:?}: give host:port, without a path"
            ));
        }
        Ok(Cluster {
            scheduler: format!("http://{host}:{}", url.port().unwrap_or(50050)),
        })
    }

    /// A scheduler and `executors` executors in this process, on
    /// loopback ports, reading files from `stores`.
    pub async fn local(
        executors: usize,
        stores: &[(Url, Arc<dyn ObjectStore>)],
        memory_limit: usize,
        work_dir: &std::path::Path,
        base: &Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    ) -> Result<Cluster, String> {
        let state = cluster_state(stores, memory_limit, Some(base)).map_err(|e| e.to_string())?;
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("cannot bind a loopback port for Ballista: {e}"))
        };
        let listener = bind().await?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        process::start_scheduler(listener, state.clone()).await?;
        let cluster = Cluster {
            scheduler: format!("http://{address}"),
        };
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..executors.max(1) {
            let settings = process::ExecutorSettings {
                scheduler: cluster.scheduler.clone(),
                advertise_host: "127.0.0.1".to_string(),
                slots,
                work_dir: work_dir.join(format!("executor-{i}")),
            };
            process::start_executor(bind().await?, settings, state.clone()).await?;
        }
        Ok(cluster)
    }

    /// The scheduler's URL.
    pub fn scheduler(&self) -> &str {
        &self.scheduler
    }
}

/// The session state every process of a cluster plans and runs with.
pub fn cluster_state(
    stores: &[(Url, Arc<dyn ObjectStore>)],
    memory_limit: usize,
    base: Option<&Arc<datafusion::execution::runtime_env::RuntimeEnv>>,
) -> Result<SessionState> {
    let mut config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(codec::TableCodec::default()));
    // The same choices as a local session (see `query::session_with`).
    config
        .options_mut()
        .execution
        .skip_physical_aggregate_schema_check = true;
    config.options_mut().optimizer.enable_topk_aggregation = false;
    // Inside the server, the server's runtime: its spill directory and cap.
    let builder = match base {
        Some(env) => RuntimeEnvBuilder::from_runtime_env(env),
        None => RuntimeEnvBuilder::new(),
    };
    let runtime = builder
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
        .build_arc()?;
    for (url, store) in stores {
        runtime.register_object_store(url, store.clone());
    }
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    udfs::register_all(&mut ctx)?;
    bounded::register(&mut ctx)?;
    ctx.register_udf(partition::udf());
    // Put into sort keys by the planning server's own optimizer rules.
    ctx.register_udf(zeros::signless_zero().as_ref().clone());
    Ok(ctx.state())
}

/// Plans `sql` in `ctx` (a session whose tables read only what is
/// stored) and runs it on `cluster`.
pub async fn start(
    ctx: &SessionContext,
    cluster: &Cluster,
    sql: &str,
) -> Result<SendableRecordBatchStream> {
    let plan = plan_sql(ctx, sql).await?;
    refuse_local_only(&plan)?;
    let state = ctx.state();
    let optimized = state.optimize(&plan)?;
    if !reads_a_table(&optimized)? {
        // Nothing to distribute (`SELECT 1`, or a plan the optimizer
        // proved empty): Ballista would answer without the columns.
        return ctx.execute_logical_plan(plan).await?.execute_stream().await;
    }
    // What cannot be sent is refused here, as the caller's error, rather
    // than failing inside Ballista's planner as an internal one.
    let codec = codec::TableCodec::default();
    if let Err(e) = <LogicalPlanNode as AsLogicalPlan>::try_from_logical_plan(&optimized, &codec) {
        return Err(DataFusionError::Plan(format!(
            "this query cannot run distributed: {}",
            crate::query::first_line(&e.strip_backtrace())
        )));
    }
    let config = state
        .config()
        .clone()
        .with_ballista_logical_extension_codec(Arc::new(codec::TableCodec::default()));
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build()
        .upgrade_for_ballista(cluster.scheduler.clone())?;
    SessionContext::new_with_state(state)
        .execute_logical_plan(plan)
        .await?
        .execute_stream()
        .await
}

/// Whether `plan` scans any table.
fn reads_a_table(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        found |= matches!(node, LogicalPlan::TableScan(_));
        Ok(match found {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(found)
}

/// Refuses a plan that reads anything but stored tables read plainly, or
/// that needs the local engine's own corrections (see `grouping_sets`:
/// aggregations with grouping sets and outer joins, whose output
/// DataFusion 55 describes wrongly without them).
fn refuse_local_only(plan: &LogicalPlan) -> Result<()> {
    let mut refusal = None;
    plan.apply_with_subqueries(|node| {
        use datafusion::logical_expr::{Expr, JoinType};
        let needs_local = match node {
            LogicalPlan::Aggregate(a) => a
                .group_expr
                .iter()
                .any(|e| matches!(e, Expr::GroupingSet(_)))
                .then_some("ROLLUP, CUBE and GROUPING SETS"),
            LogicalPlan::Join(j) => {
                matches!(j.join_type, JoinType::Left | JoinType::Right | JoinType::Full)
                    .then_some("outer joins")
            }
            _ => None,
        };
        if let Some(what) = needs_local {
            refusal = Some(format!(
                "{what} run on the local engine only (engine=local)"
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(TreeNodeRecursion::Continue);
        };
        if scan.table_name.schema().is_some_and(|s| s != crate::query::SCHEMA) {
            refusal = Some(format!(
                "table {} cannot be read by a distributed query: only the tenant's event tables are",
                scan.table_name
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        let provider = source_as_provider(&scan.source)?;
        if let Some(view) = provider.downcast_ref::<ViewTable>() {
            refuse_local_only(view.logical_plan())?;
            return Ok(TreeNodeRecursion::Continue);
        }
        if provider.downcast_ref::<EventTable>().is_some() {
            return Ok(TreeNodeRecursion::Continue);
        }
        let name = &scan.table_name;
        let why = if provider.is::<crate::query::policy::PolicyTable>() {
            "the caller reads it through row filters or column masks"
        } else if provider.is::<crate::query::upcast::UpcastTable>() {
            "it is read through schema migrations (add raw=true to read it as written)"
        } else {
            "only the tenant's event tables are read by distributed queries (not table \
             functions, system or projection tables)"
        };
        refusal = Some(format!(
            "table {name} cannot be read by a distributed query: {why}"
        ));
        Ok(TreeNodeRecursion::Stop)
    })?;
    match refusal {
        Some(message) => Err(DataFusionError::Plan(message)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::Cluster;

    #[test]
    fn scheduler_addresses_are_read_in_their_usual_forms() {
        for (given, url) in [
            ("df://10.0.0.5:50050", "http://10.0.0.5:50050"),
            ("http://sched:6000", "http://sched:6000"),
            ("127.0.0.1:7000/", "http://127.0.0.1:7000"),
            ("df://sched", "http://sched:50050"),
        ] {
            assert_eq!(Cluster::remote(given).unwrap().scheduler(), url, "{given}");
        }
        for bad in ["df://", "df://host:port", "df://host:1/path", ""] {
            assert!(Cluster::remote(bad).is_err(), "{bad}");
        }
    }
}
