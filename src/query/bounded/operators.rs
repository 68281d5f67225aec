//! [`OperatorMemory`]: reservations for the DataFusion operators that
//! hold or build rows without reserving them.
//!
//! ```text
//!   WindowAggExec             ReleaseExec           (gives back what went out)
//!        |            =>           |
//!      input                 WindowAggExec
//!                                  |
//!                             ReserveExec           (reserves what goes in)
//!                                  |
//!                                input
//!
//!   UnnestExec                 UnnestExec
//!        |            =>           |
//!      input                  ReserveExec           (reserves what each batch becomes)
//!                                  |
//!                                input
//! ```
//!
//! A window operator emits every input row once, with its window values:
//! what it holds is what went in and has not come out yet. The node under
//! it reserves each batch that goes in; the node over it counts the rows
//! that come out, and shrinks the reservation by their share of the
//! bytes. `WindowAggExec` also concatenates its whole input before it
//! computes, so it holds twice that.
//!
//! `UnnestExec` builds its output a chunk of input rows at a time, each
//! chunk about `batch_size` rows of output (one row with a longer list is
//! a chunk of its own). The node under it reserves, for each batch it
//! passes up, the largest chunk that batch will become, until the
//! operator asks for the next batch.

use super::estimate::{leaf_count, list_range, value_bytes};
use arrow::array::{Array, RecordBatch};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Puts a [`ReserveExec`] under every window and unnest operator (and a
/// [`ReleaseExec`] over every window operator). It runs after the other
/// rules, so nothing moves the nodes apart.
#[derive(Debug, Default)]
pub struct OperatorMemory;

impl PhysicalOptimizerRule for OperatorMemory {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let held = if node.is::<WindowAggExec>() {
                    2
                } else if node.is::<BoundedWindowAggExec>() {
                    1
                } else if let Some(unnest) = node.downcast_ref::<UnnestExec>() {
                    let lists = unnest
                        .list_column_indices()
                        .iter()
                        .map(|l| (l.index_in_input_schema, l.depth))
                        .collect();
                    let input = ReserveExec::over(unnest.input().clone(), Reserve::Unnest(lists));
                    let node = replace_children_if_necessary(node, vec![input])?;
                    return Ok(Transformed::new(node, true, TreeNodeRecursion::Continue));
                } else {
                    return Ok(Transformed::no(node));
                };
                let ledger = Arc::new(Ledger {
                    operator: node.name().to_string(),
                    held,
                    partitions: Mutex::default(),
                });
                let [input] = <[_; 1]>::try_from(node.children()).map_err(|_| {
                    DataFusionError::Internal(format!("{} has one input", node.name()))
                })?;
                let input = ReserveExec::over(input.clone(), Reserve::Window(ledger.clone()));
                let node = replace_children_if_necessary(node, vec![input])?;
                let release: Arc<dyn ExecutionPlan> = Arc::new(ReleaseExec {
                    properties: Arc::clone(node.properties()),
                    input: node,
                    ledger,
                });
                Ok(Transformed::yes(release))
            })?
            .data)
    }

    fn name(&self) -> &str {
        "operator_memory"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What one window operator holds, per partition.
#[derive(Debug)]
struct Ledger {
    operator: String,
    /// How many times the rows in it it holds at once.
    held: usize,
    partitions: Mutex<HashMap<usize, Held>>,
}

#[derive(Debug)]
struct Held {
    reservation: MemoryReservation,
    rows_in: usize,
    bytes_in: usize,
    rows_out: usize,
}

impl Held {
    /// The bytes of the rows that went in and have not come out.
    fn bytes(&self, held: usize) -> usize {
        if self.rows_in == 0 {
            return 0;
        }
        let left = self.rows_in.saturating_sub(self.rows_out) as u128;
        let bytes = self.bytes_in as u128 * left / self.rows_in as u128;
        usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .saturating_mul(held)
    }
}

impl Ledger {
    fn open(&self, partition: usize, context: &TaskContext) {
        let name = format!("{}[{partition}]", self.operator);
        let reservation = MemoryConsumer::new(name).register(context.memory_pool());
        self.partitions.lock().insert(
            partition,
            Held {
                reservation,
                rows_in: 0,
                bytes_in: 0,
                rows_out: 0,
            },
        );
    }

    fn went_in(&self, partition: usize, batch: &RecordBatch) -> Result<()> {
        let mut partitions = self.partitions.lock();
        let Some(h) = partitions.get_mut(&partition) else {
            return Ok(());
        };
        h.rows_in += batch.num_rows();
        h.bytes_in = h
            .bytes_in
            .saturating_add(get_record_batch_memory_size(batch));
        let bytes = h.bytes(self.held);
        h.reservation.try_resize(bytes)
    }

    fn came_out(&self, partition: usize, rows: usize) {
        let mut partitions = self.partitions.lock();
        if let Some(h) = partitions.get_mut(&partition) {
            h.rows_out += rows;
            let bytes = h.bytes(self.held);
            h.reservation.resize(bytes);
        }
    }

    fn close(&self, partition: usize) {
        self.partitions.lock().remove(&partition);
    }
}

/// What a [`ReserveExec`] reserves.
#[derive(Debug)]
enum Reserve {
    /// The rows going into a window operator.
    Window(Arc<Ledger>),
    /// The output each batch going into an unnest becomes: the unnested
    /// columns (by index) and their depth.
    Unnest(Vec<(usize, usize)>),
}

/// Passes its input's batches on, reserving what the operator above will
/// hold or build from them.
#[derive(Debug)]
pub struct ReserveExec {
    input: Arc<dyn ExecutionPlan>,
    reserve: Reserve,
    properties: Arc<PlanProperties>,
}

impl ReserveExec {
    /// The node over `input`.
    fn over(input: Arc<dyn ExecutionPlan>, reserve: Reserve) -> Arc<dyn ExecutionPlan> {
        Arc::new(ReserveExec {
            properties: Arc::clone(input.properties()),
            input,
            reserve,
        })
    }
}

impl DisplayAs for ReserveExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reserve {
            Reserve::Window(ledger) => write!(f, "ReserveExec: rows held by {}", ledger.operator),
            Reserve::Unnest(_) => write!(f, "ReserveExec: rows built by UnnestExec"),
        }
    }
}

impl ExecutionPlan for ReserveExec {
    fn name(&self) -> &str {
        "ReserveExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ReserveExec has one input".into()))?;
        let reserve = match &self.reserve {
            Reserve::Window(ledger) => Reserve::Window(Arc::clone(ledger)),
            Reserve::Unnest(lists) => Reserve::Unnest(lists.clone()),
        };
        Ok(ReserveExec::over(input, reserve))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        let stream = match &self.reserve {
            Reserve::Window(ledger) => {
                ledger.open(partition, &context);
                let ledger = Arc::clone(ledger);
                input
                    .map(move |batch| {
                        let batch = batch?;
                        ledger.went_in(partition, &batch)?;
                        Ok(batch)
                    })
                    .boxed()
            }
            Reserve::Unnest(lists) => {
                let name = format!("UnnestExec[{partition}]");
                let reservation = MemoryConsumer::new(name).register(context.memory_pool());
                let lists = lists.clone();
                let batch_size = context.session_config().batch_size();
                input
                    .map(move |batch| {
                        let batch = batch?;
                        reservation.try_resize(unnest_bytes(&batch, &lists, batch_size))?;
                        Ok(batch)
                    })
                    .boxed()
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Counts the rows a window operator emits, which it no longer holds.
#[derive(Debug)]
pub struct ReleaseExec {
    input: Arc<dyn ExecutionPlan>,
    ledger: Arc<Ledger>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for ReleaseExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReleaseExec: rows held by {}", self.ledger.operator)
    }
}

/// Closes a partition's account when its output stream is dropped.
struct CloseOnDrop(Arc<Ledger>, usize);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(self.1);
    }
}

impl ExecutionPlan for ReleaseExec {
    fn name(&self) -> &str {
        "ReleaseExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ReleaseExec has one input".into()))?;
        Ok(Arc::new(ReleaseExec {
            properties: Arc::clone(input.properties()),
            input,
            ledger: Arc::clone(&self.ledger),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let close = CloseOnDrop(Arc::clone(&self.ledger), partition);
        let stream = input.map(move |batch| {
            if let Ok(batch) = &batch {
                close.0.came_out(partition, batch.num_rows());
            }
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The bytes of the largest chunk of output that unnesting `batch` builds
/// at once: each row becomes as many rows as its longest list (one for an
/// empty or NULL list, at most), each with the row's other columns, and
/// rows are taken while the chunk stays within `batch_size` output rows.
/// Recursive unnesting is built in one go.
fn unnest_bytes(batch: &RecordBatch, lists: &[(usize, usize)], batch_size: usize) -> usize {
    let columns = batch.columns();
    let is_list = |c: usize| lists.iter().any(|(i, _)| *i == c);
    let recursive = lists.iter().any(|(_, depth)| *depth > 1);
    let mut largest = 0usize;
    let (mut rows, mut bytes) = (0usize, 0usize);
    for row in 0..batch.num_rows() {
        let mut out_rows = 1usize;
        let mut own = 0usize;
        let mut other = 0usize;
        for (c, column) in columns.iter().enumerate() {
            let size = if column.is_valid(row) {
                value_bytes(column.as_ref(), row, row + 1)
            } else {
                0
            };
            if is_list(c) {
                own = own.saturating_add(size);
                let len = if recursive {
                    leaf_count(column.as_ref(), row, row + 1)
                } else {
                    list_range(column.as_ref(), row, row + 1).map_or(1, |(s, e, _)| e - s)
                };
                out_rows = out_rows.max(len);
            } else {
                other = other.saturating_add(size);
            }
        }
        // The other columns for each output row, the lists' values, and
        // the validity of the unnested columns.
        let out = out_rows
            .saturating_mul(other)
            .saturating_add(own)
            .saturating_add(out_rows.div_ceil(8) * lists.len());
        if !recursive && rows > 0 && rows.saturating_add(out_rows) > batch_size {
            largest = largest.max(bytes);
            (rows, bytes) = (0, 0);
        }
        rows = rows.saturating_add(out_rows);
        bytes = bytes.saturating_add(out);
    }
    largest.max(bytes)
}
