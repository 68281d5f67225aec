//! A projection's state as rows, and back: what a snapshot stores.
//!
//! One row per group: its key columns (`k0`, `k1`, …), then each
//! aggregate's fold in columns named after its index `j`:
//!
//! | fold | columns |
//! |---|---|
//! | count | `a{j}_count` (Int64) |
//! | sum, min, max | `a{j}` (the aggregate's type) |
//! | avg | `a{j}_sum` (Float64), `a{j}_count` (Int64) |
//! | count(DISTINCT x) | `a{j}_values` (a list of the distinct values of x) |
//! | first_value, last_value | `a{j}_key` (Int64: the order key), `a{j}` |
//!
//! A distinct count keeps its values, not the count, so that folding
//! resumes from the snapshot exactly. Types a Delta table would change
//! (timestamps other than microseconds, `Date64`) are stored as their
//! Int64 values and cast back when loaded.

use super::{State, Value};
use crate::projection::define::Fold;
use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, ListArray, RecordBatch, RecordBatchOptions,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::concat;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::OwnedRow;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use std::collections::HashSet;
use std::sync::Arc;

/// How a column of `data_type` is stored: as itself, or as Int64 when a
/// Delta table would not keep it exactly.
fn stored_type(data_type: &DataType) -> DataType {
    use arrow::datatypes::TimeUnit;
    match data_type {
        DataType::Timestamp(unit, _) if *unit != TimeUnit::Microsecond => DataType::Int64,
        DataType::Date64 => DataType::Int64,
        DataType::List(item) => DataType::List(Arc::new(Field::new(
            item.name(),
            stored_type(item.data_type()),
            item.is_nullable(),
        ))),
        other => other.clone(),
    }
}

/// `real` with each column's type as it is stored.
pub(super) fn stored(real: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        real.fields()
            .iter()
            .map(|f| Field::new(f.name(), stored_type(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ))
}

/// `batch`'s columns cast to `schema`'s types (same names, same order).
fn cast_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The snapshot's columns for a state of these keys and aggregates, in
/// their types in memory.
pub(super) fn schema(keys: &[Field], aggregates: &[super::Compiled]) -> SchemaRef {
    let mut fields: Vec<Field> = keys
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(format!("k{i}"), f.data_type().clone(), true))
        .collect();
    for (j, a) in aggregates.iter().enumerate() {
        let int = |name: String| Field::new(name, DataType::Int64, false);
        let value = || Field::new(format!("a{j}"), a.output.clone(), true);
        match a.fold {
            Fold::Count => fields.push(int(format!("a{j}_count"))),
            Fold::Sum | Fold::Min | Fold::Max => fields.push(value()),
            Fold::Avg => {
                fields.push(Field::new(format!("a{j}_sum"), DataType::Float64, false));
                fields.push(int(format!("a{j}_count")));
            }
            Fold::CountDistinct => {
                let item = a.arg_type.clone().unwrap_or(DataType::Null);
                fields.push(Field::new(
                    format!("a{j}_values"),
                    DataType::List(Arc::new(Field::new("item", item, true))),
                    false,
                ));
            }
            Fold::First(_) | Fold::Last(_) => {
                fields.push(Field::new(format!("a{j}_key"), DataType::Int64, true));
                fields.push(value());
            }
        }
    }
    Arc::new(Schema::new(fields))
}

impl State {
    /// The columns [`State::snapshot`] writes.
    pub fn snapshot_schema(&self) -> SchemaRef {
        self.snapshot_schema.clone()
    }

    /// The state as rows of [`State::snapshot_schema`], one per group.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some(converter) = &self.rows {
            let rows = self.group_keys.iter().map(|r| r.row());
            columns.extend(converter.convert_rows(rows)?);
        }
        let groups = self.values.len();
        for (j, a) in self.aggregates.iter().enumerate() {
            match a.fold {
                Fold::Count => {
                    let n = self.values.iter().map(|g| match at(g, j) {
                        Value::Count(n) => *n,
                        _ => 0,
                    });
                    columns.push(Arc::new(Int64Array::from_iter_values(n)));
                }
                Fold::Sum | Fold::Min | Fold::Max => {
                    let values = self.values.iter().map(|g| match at(g, j) {
                        Value::Scalar(Some(v)) => v.clone(),
                        _ => ScalarValue::try_from(&a.output).unwrap_or(ScalarValue::Null),
                    });
                    columns.push(scalars(values, &a.output, groups)?);
                }
                Fold::Avg => {
                    let (sums, counts): (Vec<f64>, Vec<i64>) = self
                        .values
                        .iter()
                        .map(|g| match at(g, j) {
                            Value::Avg { sum, count } => (*sum, *count as i64),
                            _ => (0.0, 0),
                        })
                        .unzip();
                    columns.push(Arc::new(Float64Array::from(sums)));
                    columns.push(Arc::new(Int64Array::from(counts)));
                }
                Fold::CountDistinct => {
                    let item = a.arg_type.clone().unwrap_or(DataType::Null);
                    let mut lengths = Vec::with_capacity(groups);
                    let mut parts: Vec<ArrayRef> = Vec::with_capacity(groups);
                    for g in &self.values {
                        let Value::Distinct(set) = at(g, j) else {
                            lengths.push(0);
                            continue;
                        };
                        lengths.push(set.len());
                        if !set.is_empty() {
                            parts.push(ScalarValue::iter_to_array(set.iter().cloned())?);
                        }
                    }
                    let values = if parts.is_empty() {
                        arrow::array::new_empty_array(&item)
                    } else {
                        let refs: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
                        arrow::compute::cast(&concat(&refs)?, &item)?
                    };
                    let field = Arc::new(Field::new("item", item, true));
                    columns.push(Arc::new(ListArray::try_new(
                        field,
                        OffsetBuffer::from_lengths(lengths),
                        values,
                        None,
                    )?));
                }
                Fold::First(_) | Fold::Last(_) => {
                    let held = |g: &Vec<Value>| match at(g, j) {
                        Value::Ordered(Some((k, v))) => Some((*k, v.clone())),
                        _ => None,
                    };
                    let keys: Int64Array = self
                        .values
                        .iter()
                        .map(|g| held(g).map(|(k, _)| k))
                        .collect();
                    let values = self.values.iter().map(|g| match held(g) {
                        Some((_, v)) => v,
                        None => ScalarValue::try_from(&a.output).unwrap_or(ScalarValue::Null),
                    });
                    columns.push(Arc::new(keys));
                    columns.push(scalars(values, &a.output, groups)?);
                }
            }
        }
        let real = RecordBatch::try_new_with_options(
            self.snapshot_real.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(groups)),
        )?;
        cast_to(&real, &self.snapshot_schema)
    }

    /// Loads `batches` (rows of [`State::snapshot_schema`], as
    /// [`State::snapshot`] wrote them) into this state, which must be
    /// empty.
    pub fn restore(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let fresh = self.rows.is_some() && self.values.is_empty()
            || self.rows.is_none() && self.values.len() == 1;
        if !fresh {
            return Err(DataFusionError::Internal(
                "a snapshot is loaded only into an empty state".into(),
            ));
        }
        let stored = self.snapshot_schema.clone();
        let real = self.snapshot_real.clone();
        let mut expected: Vec<&str> = stored.fields().iter().map(|f| f.name().as_str()).collect();
        expected.sort_unstable();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if self.rows.is_none() && rows > 1 {
            return Err(DataFusionError::Plan(format!(
                "the snapshot of a projection without GROUP BY has {rows} rows"
            )));
        }
        for batch in batches {
            let schema = batch.schema();
            let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            names.sort_unstable();
            if names != expected {
                return Err(DataFusionError::Plan(format!(
                    "the snapshot's columns {names:?} are not the projection's {expected:?}"
                )));
            }
            let batch = crate::schema::adapt_batch(batch, &stored)?;
            self.restore_batch(&cast_to(&batch, &real)?)?;
        }
        Ok(())
    }

    fn restore_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.keys.len();
        let rows = match &self.rows {
            Some(converter) => Some(converter.convert_columns(&batch.columns()[..keys])?),
            None => None,
        };
        for i in 0..batch.num_rows() {
            let mut column = keys;
            let mut next = || {
                column += 1;
                batch.column(column - 1)
            };
            let mut values = Vec::with_capacity(self.aggregates.len());
            let mut inserted = 0;
            for a in &self.aggregates {
                let scalar = |c: &ArrayRef| ScalarValue::try_from_array(c, i);
                let value = match a.fold {
                    Fold::Count => Value::Count(int(next(), i)?),
                    Fold::Sum | Fold::Min | Fold::Max => {
                        let c = next();
                        Value::Scalar(c.is_valid(i).then(|| scalar(c)).transpose()?)
                    }
                    Fold::Avg => {
                        let sum = next().as_primitive::<arrow::datatypes::Float64Type>();
                        let sum = sum.value(i);
                        let count = int(next(), i)?;
                        Value::Avg {
                            sum,
                            count: count.max(0) as u64,
                        }
                    }
                    Fold::CountDistinct => {
                        let list = next().as_list::<i32>().value(i);
                        let mut set = HashSet::with_capacity(list.len());
                        for v in 0..list.len() {
                            let v = ScalarValue::try_from_array(&list, v)?;
                            inserted += v.size() + 16;
                            set.insert(v);
                        }
                        Value::Distinct(set)
                    }
                    Fold::First(_) | Fold::Last(_) => {
                        let key = next();
                        let value = next();
                        Value::Ordered(if key.is_valid(i) {
                            Some((int(key, i)?, scalar(value)?))
                        } else {
                            None
                        })
                    }
                };
                values.push(value);
            }
            self.bytes += inserted + values.iter().map(Value::heap_size).sum::<usize>();
            match &rows {
                Some(rows) => {
                    let owned: OwnedRow = rows.row(i).owned();
                    if self.groups.contains_key(&owned) {
                        return Err(DataFusionError::Plan(
                            "the snapshot holds one group twice".into(),
                        ));
                    }
                    self.bytes += 2 * owned.as_ref().len() + 64 + 48 * self.aggregates.len();
                    self.groups.insert(owned.clone(), self.values.len());
                    self.group_keys.push(owned);
                    self.values.push(values);
                }
                None => self.values[0] = values,
            }
        }
        Ok(())
    }
}

/// Aggregate `j`'s value in a group.
fn at(group: &[Value], j: usize) -> &Value {
    &group[j]
}

/// Value `i` of an Int64 column.
fn int(column: &ArrayRef, i: usize) -> Result<i64> {
    column
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .filter(|c| c.is_valid(i))
        .map(|c| c.value(i))
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "the snapshot has no count in a column of type {}",
                column.data_type()
            ))
        })
}

/// `values` as one array of `data_type` (`rows` long, for an empty state).
fn scalars(
    values: impl Iterator<Item = ScalarValue>,
    data_type: &DataType,
    rows: usize,
) -> Result<ArrayRef> {
    if rows == 0 {
        return Ok(arrow::array::new_empty_array(data_type));
    }
    Ok(arrow::compute::cast(
        &ScalarValue::iter_to_array(values)?,
        data_type,
    )?)
}
