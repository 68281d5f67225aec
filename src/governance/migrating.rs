//! The check that events a writer declares at an older schema version
//! still read at the latest one: the table's migrations are run over them
//! at ingest, so a stored event can never make reads of a migrated column
//! fail (an old-shaped value a transform cannot cast, say).

use crate::query::upcast::compose;
use crate::schema::governed::TableGovernance;
use arrow::array::{RecordBatch, UInt32Array};
use datafusion::common::DFSchema;
use datafusion::execution::session_state::SessionState;
use datafusion::physical_expr::PhysicalExpr;
use std::sync::Arc;

/// A table's migrations, ready to try on ingested rows.
#[derive(Debug)]
pub(super) struct Migrating {
    gov: Arc<TableGovernance>,
    /// The session the migrations' SQL is planned in (its functions).
    session: SessionState,
}

impl Migrating {
    /// `None` when the table has no live migration.
    pub(super) fn new(gov: &TableGovernance, session: &SessionState) -> Option<Self> {
        gov.migrates().then(|| Migrating {
            gov: Arc::new(gov.clone()),
            session: session.clone(),
        })
    }

    /// The rows of `batch` among `rows` whose migration to the latest
    /// versions fails, each with why. The migrations are planned once,
    /// over the rows with a null column for every declared field they
    /// lack; only an evaluation error counts: a migration that cannot be
    /// planned over them (it reads a column they lack and no version
    /// declares) is not this check's to judge, as reads plan it over the
    /// whole table.
    pub(super) fn failures(&self, batch: &RecordBatch, rows: &[u32]) -> Vec<(u32, String)> {
        let take = UInt32Array::from(rows.to_vec());
        let part = match arrow::compute::take_record_batch(batch, &take) {
            Ok(p) => self.with_declared(&p),
            Err(e) => return rows.iter().map(|r| (*r, e.to_string())).collect(),
        };
        let Some(exprs) = self.plan(&part) else {
            return Vec::new();
        };
        let run = |batch: &RecordBatch| -> Result<(), String> {
            for expr in &exprs {
                expr.evaluate(batch)
                    .map_err(|e| crate::query::first_line(&e.to_string()))?;
            }
            Ok(())
        };
        if run(&part).is_ok() {
            return Vec::new();
        }
        // Row by row, to name each one that fails: rows written at an
        // older version are few.
        rows.iter()
            .enumerate()
            .filter_map(|(i, row)| run(&part.slice(i, 1)).err().map(|e| (*row, e)))
            .collect()
    }

    /// The migrations over `batch`'s columns as physical expressions;
    /// `None` when they change nothing or cannot be planned over them.
    fn plan(&self, batch: &RecordBatch) -> Option<Vec<Arc<dyn PhysicalExpr>>> {
        let schema = DFSchema::try_from(batch.schema().as_ref().clone()).ok()?;
        let parse = |sql: &str, s: &DFSchema| self.session.create_logical_expr(sql, s);
        let exprs = compose(&self.gov, &schema, &parse).ok()??;
        exprs
            .into_iter()
            .map(|e| super::physical(e, &schema, &self.session).ok())
            .collect()
    }
}

impl Migrating {
    /// `batch` with a null column of its declared kind for every declared
    /// field it lacks, as reads see the table.
    fn with_declared(&self, batch: &RecordBatch) -> RecordBatch {
        let mut fields: Vec<arrow::datatypes::FieldRef> =
            batch.schema().fields().iter().cloned().collect();
        let mut columns = batch.columns().to_vec();
        for spec in self
            .gov
            .types
            .values()
            .flatten()
            .flat_map(|v| v.def.fields.iter())
        {
            let (name, spec) = spec;
            let Some(kind) = spec.field_type.column_kind() else {
                continue;
            };
            if fields.iter().any(|f| f.name() == name) {
                continue;
            }
            fields.push(Arc::new(arrow::datatypes::Field::new(
                name,
                kind.data_type(),
                true,
            )));
            columns.push(arrow::array::new_null_array(
                &kind.data_type(),
                batch.num_rows(),
            ));
        }
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
            .unwrap_or_else(|_| batch.clone())
    }
}
