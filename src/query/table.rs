//! The table a query sees: the Delta snapshot's files plus the buffer's
//! batches, frozen together at one instant so every event appears once.

use super::entity_reads;
use crate::schema::{POSITION, adapt_batch, query_schema};
use crate::storage::entities::EntityCopy;
use crate::storage::readers::PageIndexReaders;
use crate::storage::scan::DeltaFiles;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::scalar::ScalarValue;
use std::collections::HashSet;
use std::sync::Arc;

/// One table as of one instant.
#[derive(Debug)]
pub struct EventTable {
    /// Query schema: fixed columns, then every payload column known.
    schema: SchemaRef,
    /// The Delta snapshot's provider; `None` before the first flush.
    delta: Option<Arc<dyn TableProvider>>,
    /// Buffered batches not yet in that snapshot, each in the shape it was
    /// ingested with.
    buffer: Vec<RecordBatch>,
    /// No stored row has a higher position below `positions_end`
    /// (`None`: not known).
    stored_position: Option<u64>,
    /// Stored rows at or above this position are other writers'.
    positions_end: u64,
    /// The entity copy one entity's stored events are read from.
    entities: Option<Arc<EntityCopy>>,
}

impl EventTable {
    /// The table a query reads, from the database's view of it.
    pub fn from_view(view: crate::db::TableView) -> Self {
        let mut table = Self::new(query_schema(&view.schema), view.stored, view.buffered);
        table.stored_position = view.stored_position;
        table.positions_end = view.positions_end;
        table.entities = view.entities;
        table
    }

    pub fn new(
        schema: SchemaRef,
        delta: Option<Arc<dyn TableProvider>>,
        buffer: Vec<RecordBatch>,
    ) -> Self {
        EventTable {
            schema,
            delta,
            buffer,
            stored_position: None,
            positions_end: u64::MAX,
            entities: None,
        }
    }

    /// A table of stored files only (`None`: nothing stored yet), for a
    /// query planned elsewhere.
    pub fn stored(
        schema: SchemaRef,
        files: Option<DeltaFiles>,
        stored_position: Option<u64>,
        positions_end: u64,
    ) -> Self {
        let delta = files.map(|f| Arc::new(f) as Arc<dyn TableProvider>);
        let mut table = Self::new(schema, delta, Vec::new());
        table.stored_position = stored_position;
        table.positions_end = positions_end;
        table
    }

    /// The stored files, when they are all the table reads (`Ok(None)`:
    /// nothing is stored yet); otherwise why not.
    pub fn stored_files(&self) -> std::result::Result<Option<&DeltaFiles>, &'static str> {
        if !self.buffer.is_empty() {
            return Err("it holds buffered rows");
        }
        match &self.delta {
            None => Ok(None),
            Some(d) => d
                .downcast_ref::<DeltaFiles>()
                .map(Some)
                .ok_or("its Delta table uses reader features only deltalake's own scan reads"),
        }
    }

    /// No stored row has a higher position (`None`: not known).
    pub fn stored_position(&self) -> Option<u64> {
        self.stored_position
    }

    /// Where the reading writer's positions end (`u64::MAX`: the only
    /// writer).
    pub fn positions_end(&self) -> u64 {
        self.positions_end
    }

    /// [`EventTable::delta_plan`] with only the rows `keep` holds for.
    async fn kept_plan(
        &self,
        provider: &Arc<dyn TableProvider>,
        state: &dyn Session,
        projected: &SchemaRef,
        filters: &[Expr],
        keep: Option<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(keep) = keep else {
            return self
                .delta_plan(provider, state, projected, filters, None)
                .await;
        };
        let wide = entity_reads::widened(projected, &self.schema, &keep)?;
        let mut all = filters.to_vec();
        all.push(keep.clone());
        let plan = self.delta_plan(provider, state, &wide, &all, None).await?;
        entity_reads::keep_rows(plan, state, &wide, projected, keep)
    }

    async fn delta_plan(
        &self,
        delta: &Arc<dyn TableProvider>,
        state: &dyn Session,
        projected: &SchemaRef,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let delta_schema = delta.schema();
        // Ask the Delta side only for the columns it has; the others were
        // added after its snapshot and read as NULL.
        let mut indices = Vec::new();
        for field in projected.fields() {
            if let Ok(i) = delta_schema.index_of(field.name())
                && !indices.contains(&i)
            {
                indices.push(i);
            }
        }
        let known: HashSet<&str> = delta_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        // Filters only prune there (we report them Inexact, so DataFusion
        // applies them again above the union); pass those it can evaluate.
        let usable: Vec<Expr> = filters
            .iter()
            .filter(|f| {
                f.column_refs()
                    .iter()
                    .all(|c| known.contains(c.name.as_str()))
            })
            .cloned()
            .collect();
        let plan = delta.scan(state, Some(&indices), &usable, limit).await?;
        // deltalake's own provider (the fallback) gets the same metadata
        // caching as our scan.
        let plan = if delta.is::<DeltaFiles>() {
            plan
        } else {
            with_cached_page_index(plan)?
        };
        let plan_schema = plan.schema();
        let exprs = projected
            .fields()
            .iter()
            .map(|field| {
                let expr: Arc<dyn PhysicalExpr> = match plan_schema.index_of(field.name()) {
                    Ok(i) => {
                        let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
                        if plan_schema.field(i).data_type() == field.data_type() {
                            col
                        } else {
                            Arc::new(CastExpr::new(col, field.data_type().clone(), None))
                        }
                    }
                    Err(_) => Arc::new(Literal::new(ScalarValue::try_from(field.data_type())?)),
                };
                Ok((expr, field.name().clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}

#[async_trait]
impl TableProvider for EventTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let range = super::positions::Range::of(filters);
        // Positions above everything stored are only in the buffer: the
        // files are not planned at all (live streams read there).
        let as_i64 = |p: u64| i64::try_from(p).unwrap_or(i64::MAX);
        let above_stored = self.stored_position.is_some_and(|p| {
            range.lowest > as_i64(p)
                && (self.positions_end == u64::MAX || range.highest < as_i64(self.positions_end))
        });
        if let Some(delta) = self.delta.as_ref().filter(|_| !above_stored) {
            // One entity's events: those the entity copy covers from its
            // bucket there, the rest from the table's files.
            let copy = self.entities.as_ref().and_then(|copy| {
                let entity = entity_reads::entity_of(filters)?;
                Some(entity_reads::split(copy, &self.schema, filters, &entity).map(|s| (copy, s)))
            });
            match copy.transpose()? {
                None => inputs.push(
                    self.delta_plan(delta, state, &projected, filters, limit)
                        .await?,
                ),
                Some((copy, split)) => {
                    let files: Arc<dyn TableProvider> = copy.files.clone();
                    inputs.push(
                        self.kept_plan(
                            &files,
                            state,
                            &projected,
                            &split.copy_filters,
                            split.copy_keep,
                        )
                        .await?,
                    );
                    // The table's part, unless no file holds a position
                    // above the covered one.
                    let beyond = delta
                        .downcast_ref::<DeltaFiles>()
                        .is_none_or(|files| files.any_reaching_above(POSITION, copy.covered));
                    if beyond {
                        inputs.push(
                            self.kept_plan(
                                delta,
                                state,
                                &projected,
                                filters,
                                Some(split.table_keep),
                            )
                            .await?,
                        );
                    }
                }
            }
        }
        // Batches wholly outside the positions asked for are left out
        // before their conversion.
        let kept = range.select(&self.buffer);
        if !kept.is_empty() || inputs.is_empty() {
            let batches = kept
                .into_iter()
                .map(|b| adapt_batch(b, &projected))
                .collect::<Result<Vec<_>, _>>()?;
            inputs.push(MemorySourceConfig::try_new_exec(
                &[batches],
                projected.clone(),
                None,
            )?);
        }
        UnionExec::try_new(inputs)
    }
}

/// Makes the Parquet scans under `plan` keep each file's page index in the
/// shared metadata cache along with its footer.
///
/// DataFusion caches footers without the page index and then reads and
/// decodes the page index of every file on every query that prunes pages.
/// On a 30-file table that was about a tenth of a point lookup's CPU
/// (ARCHITECTURE.md, "Compacted file layout"). Asking for the index when
/// the footer is fetched makes the cache hold it, so later queries find it
/// there.
fn with_cached_page_index(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    Ok(plan
        .transform_down(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some((config, parquet)) = exec.downcast_to_file_source::<ParquetSource>() else {
                return Ok(Transformed::no(node));
            };
            let Some(inner) = parquet.parquet_file_reader_factory() else {
                return Ok(Transformed::no(node));
            };
            let source = parquet
                .clone()
                .with_parquet_file_reader_factory(Arc::new(PageIndexReaders(inner.clone())));
            let config = FileScanConfigBuilder::from(config.clone())
                .with_source(Arc::new(source))
                .build();
            Ok(Transformed::yes(
                DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
            ))
        })?
        .data)
}
