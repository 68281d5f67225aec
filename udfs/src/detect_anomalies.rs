//! `detect_anomalies('<query>', '<value column>' [, method [, k]])`: the
//! inner query's rows with two more columns, `score` and `is_anomaly`,
//! computed over the whole result (see [`crate::anomaly`]).

use crate::anomaly::{Method, check_k, judge_series};
use crate::udtf::{Args, FoldTable, Gather, column_index, plan_inner, reserve_rows};
use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use std::sync::Arc;

const NAME: &str = "detect_anomalies";

/// Working memory per row while scoring: the values as `f64` and as
/// `Option<f64>`, the non-NULL copy the model sorts (with the sort's
/// buffer), the scores and flags, and the two output columns.
const WORK_BYTES_PER_ROW: usize = 8 + 16 + 8 + 4 + 16 + 2 + 9 + 2;

/// The table function.
#[derive(Debug, Default)]
pub struct DetectAnomalies;

impl TableFunctionImpl for DetectAnomalies {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let a = Args {
            func: NAME,
            usage: "('<query>', '<value column>' [, method [, k]])",
            exprs: args.exprs(),
        };
        a.count(2, 4)?;
        let sql = a.string(0, "the query")?;
        let column = a.string(1, "the value column")?;
        let method = if a.has(2) {
            Method::parse(NAME, &a.string(2, "the method")?)?
        } else {
            Method::ZScore
        };
        let k = if a.has(3) {
            check_k(NAME, a.number(3, "the threshold k")?)?
        } else {
            method.default_k()
        };
        let plan = plan_inner(NAME, args.session(), &sql)?;
        detect_anomalies_provider(plan, &column, method, k)
    }
}

/// The table `detect_anomalies` returns, over an already planned query.
pub fn detect_anomalies_provider(
    plan: LogicalPlan,
    column: &str,
    method: Method,
    k: f64,
) -> Result<Arc<dyn TableProvider>> {
    let inner = Arc::new(plan.schema().as_arrow().clone());
    let index = column_index(NAME, &inner, column)?;
    let dt = inner.field(index).data_type();
    if !dt.is_numeric() {
        return plan_err!("{NAME}: the value column {column:?} must be numeric, got {dt}");
    }
    let mut fields: Vec<Field> = inner.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["score", "is_anomaly"] {
        if inner.index_of(name).is_ok() {
            return plan_err!(
                "{NAME}: the inner query already has a column named {name:?}; rename it with AS"
            );
        }
    }
    fields.push(Field::new("score", DataType::Float64, true));
    fields.push(Field::new("is_anomaly", DataType::Boolean, true));
    let schema = Arc::new(Schema::new(fields));
    let out = Arc::clone(&schema);
    let make = move || {
        let out = Arc::clone(&out);
        Gather::boxed(Arc::clone(&inner), move |batch: RecordBatch, memory| {
            reserve_rows(memory, batch.num_rows(), WORK_BYTES_PER_ROW)?;
            let x = cast(batch.column(index), &DataType::Float64)?;
            let values: Vec<Option<f64>> = x.as_primitive::<Float64Type>().iter().collect();
            let (scores, flags) = judge_series(&values, method, k);
            let scores: Float64Array = scores.into_iter().collect();
            let flags: BooleanArray = flags.into_iter().collect();
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            columns.push(Arc::new(scores));
            columns.push(Arc::new(flags));
            Ok(RecordBatch::try_new(out, columns)?)
        })
    };
    Ok(FoldTable::provider(NAME, plan, schema, Arc::new(make)))
}
