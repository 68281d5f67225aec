//! The table a table function returns ([`FoldTable`]): its scan runs the
//! inner query and folds its rows into the result ([`Fold`]), reserving
//! what the fold holds in the query's memory pool.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::{RecordBatchMemoryCounter, get_record_batch_memory_size};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::OrderingRequirements;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, execute_stream,
};
use futures::StreamExt;
use std::fmt;
use std::sync::Arc;

/// Folds the inner query's batches into the result.
pub(crate) trait Fold: Send {
    /// Takes one batch of the inner query.
    fn push(&mut self, batch: RecordBatch) -> Result<()>;
    /// The bytes the fold holds now; reserved after every push.
    fn size(&self) -> usize;
    /// Produces the result once the inner query is done. `memory` holds
    /// [`Fold::size`] bytes on entry: grow it before allocating working
    /// memory in proportion to the input, so an input too large for the
    /// query's budget is refused before it is allocated.
    fn finish(self: Box<Self>, memory: &mut MemoryReservation) -> Result<RecordBatch>;
}

/// Makes the fold for one execution.
pub(crate) type MakeFold = Arc<dyn Fn() -> Box<dyn Fold> + Send + Sync>;

/// The table a table function returns: the inner query's plan and what to
/// do with its rows.
pub(crate) struct FoldTable {
    name: &'static str,
    plan: LogicalPlan,
    schema: SchemaRef,
    make: MakeFold,
}

impl fmt::Debug for FoldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoldTable")
            .field("name", &self.name)
            .finish()
    }
}

impl FoldTable {
    pub(crate) fn provider(
        name: &'static str,
        plan: LogicalPlan,
        schema: SchemaRef,
        make: MakeFold,
    ) -> Arc<dyn TableProvider> {
        Arc::new(FoldTable {
            name,
            plan,
            schema,
            make,
        })
    }
}

#[async_trait]
impl TableProvider for FoldTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = state.create_physical_plan(&self.plan).await?;
        let projection = projection.cloned();
        let schema = match &projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        // The fold sees rows in the inner query's order (an ORDER BY there
        // matters to detect_anomalies' output, for one): require it, so the
        // optimizer keeps the sort and merges partitions in order.
        let input_order = input
            .properties()
            .output_ordering()
            .cloned()
            .map(|o| OrderingRequirements::new(o.into()));
        Ok(Arc::new(FoldExec {
            name: self.name,
            input,
            input_order,
            schema,
            projection,
            make: Arc::clone(&self.make),
            properties: Arc::new(properties),
        }))
    }
}

/// Runs the inner plan to its end, then emits what the fold made of it.
struct FoldExec {
    name: &'static str,
    input: Arc<dyn ExecutionPlan>,
    input_order: Option<OrderingRequirements>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    make: MakeFold,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for FoldExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoldExec")
            .field("name", &self.name)
            .finish()
    }
}

impl DisplayAs for FoldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableFunctionExec: {}", self.name)
    }
}

impl ExecutionPlan for FoldExec {
    fn name(&self) -> &str {
        "TableFunctionExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.input_order.clone()]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        let d = if self.input_order.is_some() {
            Distribution::SinglePartition
        } else {
            Distribution::UnspecifiedDistribution
        };
        InputDistributionRequirements::new(vec![d])
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|_| {
            DataFusionError::Internal(format!("{} takes exactly one input", self.name))
        })?;
        Ok(Arc::new(FoldExec {
            name: self.name,
            input,
            input_order: self.input_order.clone(),
            schema: Arc::clone(&self.schema),
            projection: self.projection.clone(),
            make: Arc::clone(&self.make),
            properties: Arc::clone(&self.properties),
        }))
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let memory = MemoryConsumer::new(self.name).register(context.memory_pool());
        let input = execute_stream(Arc::clone(&self.input), context)?;
        let state = Folding::Input {
            input,
            fold: (self.make)(),
            memory,
            projection: self.projection.clone(),
        };
        let stream = futures::stream::unfold(state, |state| async move {
            match state {
                Folding::Input {
                    input,
                    fold,
                    memory,
                    projection,
                } => match run_fold(input, fold, memory, projection).await {
                    Ok((out, memory)) => Some((Ok(out), Folding::Emitted { _reserved: memory })),
                    Err(e) => Some((Err(e), Folding::Done)),
                },
                Folding::Emitted { .. } | Folding::Done => None,
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// Where a fold's stream is.
enum Folding {
    /// Reading the inner query.
    Input {
        input: SendableRecordBatchStream,
        fold: Box<dyn Fold>,
        memory: MemoryReservation,
        projection: Option<Vec<usize>>,
    },
    /// The result was emitted; its memory stays reserved until the
    /// stream is polled past it or dropped.
    Emitted {
        _reserved: MemoryReservation,
    },
    Done,
}

/// Feeds the inner query to `fold`, keeping `memory` equal to what the
/// fold holds, then finishes it; the result's bytes stay reserved.
async fn run_fold(
    mut input: SendableRecordBatchStream,
    mut fold: Box<dyn Fold>,
    mut memory: MemoryReservation,
    projection: Option<Vec<usize>>,
) -> Result<(RecordBatch, MemoryReservation)> {
    while let Some(batch) = input.next().await {
        fold.push(batch?)?;
        memory.try_resize(fold.size())?;
    }
    drop(input);
    let out = fold.finish(&mut memory)?;
    let out = match projection {
        Some(p) => out.project(&p)?,
        None => out,
    };
    // What was working memory is freed; the result itself lives on.
    memory.resize(get_record_batch_memory_size(&out));
    Ok((out, memory))
}

/// A fold that keeps every batch, for functions that need the whole input.
/// Its `finish` gets the input as one batch, with `memory` holding the
/// batch's bytes.
#[derive(Debug)]
pub(crate) struct Gather<F> {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Counts buffers the batches share (slices of one batch) once.
    bytes: RecordBatchMemoryCounter,
    finish: F,
}

impl<F> Gather<F>
where
    F: FnOnce(RecordBatch, &mut MemoryReservation) -> Result<RecordBatch> + Send + 'static,
{
    pub(crate) fn boxed(schema: SchemaRef, finish: F) -> Box<dyn Fold> {
        Box::new(Gather {
            schema,
            batches: Vec::new(),
            bytes: RecordBatchMemoryCounter::new(),
            finish,
        })
    }
}

impl<F> Fold for Gather<F>
where
    F: FnOnce(RecordBatch, &mut MemoryReservation) -> Result<RecordBatch> + Send + 'static,
{
    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            self.bytes.count_batch(&batch);
            self.batches.push(batch);
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.bytes.memory_usage()
    }

    fn finish(self: Box<Self>, memory: &mut MemoryReservation) -> Result<RecordBatch> {
        let this = *self;
        // Concatenating copies the rows: both copies live for a moment.
        memory.try_grow(this.bytes.memory_usage())?;
        let all = datafusion::arrow::compute::concat_batches(&this.schema, &this.batches)?;
        drop(this.batches);
        memory.resize(get_record_batch_memory_size(&all));
        (this.finish)(all, memory)
    }
}

/// Reserves `rows` × `bytes_per_row` more in `memory`: a function's
/// working memory for its final step, before it is allocated.
pub(crate) fn reserve_rows(
    memory: &mut MemoryReservation,
    rows: usize,
    bytes_per_row: usize,
) -> Result<()> {
    memory.try_grow(rows.saturating_mul(bytes_per_row))
}
