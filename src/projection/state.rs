//! A projection's state: one row of folds per group, updated from each
//! batch of events, and read back as the projection's rows.
//!
//! The expressions of the [`Definition`] are evaluated over each batch as
//! DataFusion physical expressions (so a projection computes exactly what
//! the same SQL would); the groups are found by their key in Arrow's row
//! format; each fold keeps its value as a `ScalarValue` of the type the
//! query's aggregate returns.

use super::define::{Definition, Fold, OrderKey};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::physical_expr::PhysicalExpr;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

type Expr = Arc<dyn PhysicalExpr>;

/// One aggregate, compiled.
struct Compiled {
    fold: Fold,
    arg: Option<Expr>,
    filter: Option<Expr>,
    /// The type the aggregate returns (the state's column type).
    output: DataType,
    /// The type of the argument's values (what a distinct count keeps).
    arg_type: Option<DataType>,
}

/// One fold's value in one group.
#[derive(Debug, Clone)]
enum Value {
    Count(i64),
    /// Sum, min and max: `None` until a non-null value is folded.
    Scalar(Option<ScalarValue>),
    Avg {
        sum: f64,
        count: u64,
    },
    Distinct(HashSet<ScalarValue>),
    /// The value with the smallest (first) or largest (last) order key.
    Ordered(Option<(i64, ScalarValue)>),
}

impl Value {
    fn new(fold: Fold) -> Value {
        match fold {
            Fold::Count => Value::Count(0),
            Fold::Sum | Fold::Min | Fold::Max => Value::Scalar(None),
            Fold::Avg => Value::Avg { sum: 0.0, count: 0 },
            Fold::CountDistinct => Value::Distinct(HashSet::new()),
            Fold::First(_) | Fold::Last(_) => Value::Ordered(None),
        }
    }

    /// Bytes held beyond the value itself.
    fn heap_size(&self) -> usize {
        match self {
            Value::Scalar(Some(v)) => v.size(),
            // Counted as values are inserted ([`fold_row`]'s result):
            // summing the set on every row would be quadratic.
            Value::Distinct(_) => 0,
            Value::Ordered(Some((_, v))) => v.size(),
            _ => 0,
        }
    }
}

/// A projection's groups and their folds.
pub struct State {
    filter: Option<Expr>,
    keys: Vec<Expr>,
    aggregates: Vec<Compiled>,
    /// The expressions of the order keys (`timestamp`, `position`) that
    /// ordered folds compare.
    timestamp: Option<Expr>,
    position: Option<Expr>,
    /// Finds a group by its key (absent for a global projection, whose one
    /// group is created at once).
    rows: Option<RowConverter>,
    groups: HashMap<OwnedRow, usize>,
    /// Per group, one value per aggregate.
    values: Vec<Vec<Value>>,
    /// Per group, its key's row (to rebuild the key columns).
    group_keys: Vec<OwnedRow>,
    state_schema: SchemaRef,
    output: Vec<Expr>,
    output_schema: SchemaRef,
    /// The columns of [`State::snapshot`], as stored.
    snapshot_schema: SchemaRef,
    /// The same columns in the types the state holds.
    snapshot_real: SchemaRef,
    /// Estimated bytes of the groups and values.
    bytes: usize,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("groups", &self.values.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl State {
    /// An empty state for `definition`, its expressions compiled in
    /// `session` (which gives their functions and type coercion).
    pub fn new(definition: &Definition, session: &SessionState) -> Result<State> {
        let table = definition.table_schema.as_ref();
        // Simplified first, as a query's plan is: some functions
        // (`arrow_cast`) exist only to be rewritten by the simplifier.
        let compile = |e: &datafusion::logical_expr::Expr, schema: &DFSchema| {
            use datafusion::logical_expr::simplify::SimplifyContext;
            use datafusion::optimizer::simplify_expressions::ExprSimplifier;
            let context = SimplifyContext::builder()
                .with_schema(Arc::new(schema.clone()))
                .with_config_options(Arc::clone(session.config_options()))
                .build();
            let simplifier = ExprSimplifier::new(context);
            let e = simplifier.simplify(simplifier.coerce(e.clone(), schema)?)?;
            session.create_physical_expr(e, schema)
        };
        let filter = definition
            .filter
            .as_ref()
            .map(|f| compile(f, table))
            .transpose()?;
        let keys = definition
            .keys
            .iter()
            .map(|k| compile(k, table))
            .collect::<Result<Vec<_>>>()?;
        let state_schema: SchemaRef = Arc::new(definition.state_schema.as_arrow().clone());
        let mut aggregates = Vec::with_capacity(definition.aggregates.len());
        for (i, a) in definition.aggregates.iter().enumerate() {
            let output = state_schema.field(keys.len() + i).data_type().clone();
            if a.fold == Fold::Avg && output != DataType::Float64 {
                return Err(DataFusionError::Plan(format!(
                    "avg over a value of type {output}: a projection averages integers and floats only"
                )));
            }
            let arg = a.arg.as_ref().map(|e| compile(e, table)).transpose()?;
            let arg_type = arg
                .as_ref()
                .map(|e| e.data_type(table.as_arrow()))
                .transpose()?;
            aggregates.push(Compiled {
                fold: a.fold,
                arg,
                filter: a.filter.as_ref().map(|e| compile(e, table)).transpose()?,
                output,
                arg_type,
            });
        }
        let column = |name: &str| -> Result<Option<Expr>> {
            let needed = aggregates.iter().any(|a| match a.fold {
                Fold::First(k) | Fold::Last(k) => match k {
                    OrderKey::Timestamp => name == crate::schema::TIMESTAMP,
                    OrderKey::Position => name == crate::schema::POSITION,
                },
                _ => false,
            });
            if !needed {
                return Ok(None);
            }
            let e =
                datafusion::logical_expr::col(datafusion::common::Column::new_unqualified(name));
            compile(&e, table).map(Some)
        };
        let timestamp = column(crate::schema::TIMESTAMP)?;
        let position = column(crate::schema::POSITION)?;
        let output = definition
            .output
            .iter()
            .map(|e| compile(e, definition.state_schema.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let output_schema: SchemaRef = Arc::new(definition.output_schema.as_arrow().clone());
        let rows = if keys.is_empty() {
            None
        } else {
            let fields = state_schema.fields()[..keys.len()]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            Some(RowConverter::new(fields)?)
        };
        let key_fields: Vec<arrow::datatypes::Field> = state_schema.fields()[..keys.len()]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let snapshot_real = snapshot::schema(&key_fields, &aggregates);
        let snapshot_schema = snapshot::stored(&snapshot_real);
        let mut state = State {
            filter,
            keys,
            aggregates,
            timestamp,
            position,
            rows,
            groups: HashMap::new(),
            values: Vec::new(),
            group_keys: Vec::new(),
            state_schema,
            output,
            output_schema,
            snapshot_schema,
            snapshot_real,
            bytes: 0,
        };
        if state.rows.is_none() {
            state.values.push(state.fresh());
        }
        Ok(state)
    }

    fn fresh(&self) -> Vec<Value> {
        self.aggregates.iter().map(|a| Value::new(a.fold)).collect()
    }

    /// How many groups the state holds.
    pub fn groups(&self) -> usize {
        self.values.len()
    }

    /// Estimated bytes the state holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The rows of the projection, as its select list gives them.
    pub fn schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// Folds `batch`, events of the projection's table in position order.
    pub fn fold(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = match &self.filter {
            Some(filter) => filter_record_batch(batch, &mask(filter, batch)?)?,
            None => batch.clone(),
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let group_of = self.group_indices(&batch)?;
        let order = |e: &Option<Expr>| -> Result<Option<ArrayRef>> {
            e.as_ref()
                .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
                .transpose()
        };
        let timestamps = order(&self.timestamp)?
            .map(|a| cast(&a, &DataType::Timestamp(TimeUnit::Microsecond, None)))
            .transpose()?;
        let positions = order(&self.position)?
            .map(|a| cast(&a, &DataType::Int64))
            .transpose()?;
        for (j, aggregate) in self.aggregates.iter().enumerate() {
            let rows = match &aggregate.filter {
                Some(f) => Some(mask(f, &batch)?),
                None => None,
            };
            let selected = |i: usize| rows.as_ref().is_none_or(|m| m.is_valid(i) && m.value(i));
            let arg = match &aggregate.arg {
                Some(e) => {
                    let a = e.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let target = match aggregate.fold {
                        Fold::Avg => DataType::Float64,
                        Fold::Count | Fold::CountDistinct => a.data_type().clone(),
                        _ => aggregate.output.clone(),
                    };
                    Some(cast(&a, &target)?)
                }
                None => None,
            };
            let keys: Option<&ArrayRef> = match aggregate.fold {
                Fold::First(OrderKey::Timestamp) | Fold::Last(OrderKey::Timestamp) => {
                    timestamps.as_ref()
                }
                Fold::First(OrderKey::Position) | Fold::Last(OrderKey::Position) => {
                    positions.as_ref()
                }
                _ => None,
            };
            for (i, &g) in group_of.iter().enumerate() {
                if !selected(i) {
                    continue;
                }
                let value = &mut self.values[g][j];
                let before = value.heap_size();
                let inserted = fold_row(aggregate.fold, value, arg.as_ref(), keys, i)?;
                self.bytes = (self.bytes + value.heap_size() + inserted).saturating_sub(before);
            }
        }
        Ok(())
    }

    /// The group of each row of `batch`, creating groups for new keys.
    fn group_indices(&mut self, batch: &RecordBatch) -> Result<Vec<usize>> {
        let Some(converter) = &self.rows else {
            return Ok(vec![0; batch.num_rows()]);
        };
        let columns = self
            .keys
            .iter()
            .zip(self.state_schema.fields())
            .map(|(k, field)| {
                let a = k.evaluate(batch)?.into_array(batch.num_rows())?;
                Ok(cast(&a, field.data_type())?)
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = converter.convert_columns(&columns)?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in rows.iter() {
            let next = self.values.len();
            let g = match self.groups.get(&row.owned()) {
                Some(g) => *g,
                None => {
                    let owned = row.owned();
                    self.bytes += 2 * owned.as_ref().len() + 64 + 48 * self.aggregates.len();
                    self.groups.insert(owned.clone(), next);
                    self.group_keys.push(owned);
                    let fresh = self.fresh();
                    self.values.push(fresh);
                    next
                }
            };
            out.push(g);
        }
        Ok(out)
    }

    /// The state as one batch: the key columns, then one column per
    /// aggregate (the schema the select list is evaluated over).
    fn state_batch(&self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some(converter) = &self.rows {
            let rows = self.group_keys.iter().map(|r| r.row());
            columns.extend(converter.convert_rows(rows)?);
        }
        for (j, aggregate) in self.aggregates.iter().enumerate() {
            let values = self
                .values
                .iter()
                .map(|g| value_of(&g[j], &aggregate.output))
                .collect::<Result<Vec<_>>>()?;
            let array = if values.is_empty() {
                arrow::array::new_empty_array(&aggregate.output)
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(cast(&array, &aggregate.output)?);
        }
        Ok(RecordBatch::try_new_with_options(
            self.state_schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(self.values.len())),
        )?)
    }

    /// The projection's rows: its select list over every group.
    pub fn read(&self) -> Result<RecordBatch> {
        self.output_of(self.state_batch()?)
    }

    /// The rows of the groups whose key equals `key` (one value per key
    /// expression, in `GROUP BY` order, compared as text): none or one.
    pub fn read_key(&self, key: &[String]) -> Result<RecordBatch> {
        if key.len() != self.keys.len() {
            return Err(DataFusionError::Plan(format!(
                "the projection has {} key column(s); {} value(s) given",
                self.keys.len(),
                key.len()
            )));
        }
        if let Some(rows) = self.read_key_directly(key)? {
            return Ok(rows);
        }
        self.read_key_by_text(key)
    }

    /// [`State::read_key`] by comparing every group's key as text.
    fn read_key_by_text(&self, key: &[String]) -> Result<RecordBatch> {
        use arrow::array::StringArray;
        use arrow::compute::kernels::cmp::eq;
        let state = self.state_batch()?;
        let mut matching = BooleanArray::from(vec![true; state.num_rows()]);
        for (i, value) in key.iter().enumerate() {
            let text = cast(state.column(i), &DataType::Utf8)?;
            let equal = eq(&text, &StringArray::new_scalar(value.as_str()))?;
            matching = arrow::compute::and(&matching, &equal)?;
        }
        // A null key equals no value.
        let matching = match matching.nulls() {
            Some(_) => arrow::compute::prep_null_mask_filter(&matching),
            None => matching,
        };
        self.output_of(filter_record_batch(&state, &matching)?)
    }

    /// [`State::read_key`] by the groups' hash map: the key's text is cast
    /// to the key columns' types and the group looked up. `None` when the
    /// text does not read back as itself once cast (`01` for the integer
    /// 1), where comparing every group's key as text decides.
    fn read_key_directly(&self, key: &[String]) -> Result<Option<RecordBatch>> {
        use arrow::array::StringArray;
        let Some(converter) = &self.rows else {
            return Ok(None);
        };
        let mut columns = Vec::with_capacity(key.len());
        for (value, field) in key.iter().zip(self.state_schema.fields()) {
            let text: ArrayRef = Arc::new(StringArray::from(vec![value.as_str()]));
            let strict = arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            };
            let typed = match arrow::compute::cast_with_options(&text, field.data_type(), &strict) {
                Ok(c) if c.is_valid(0) => c,
                _ => return Ok(None),
            };
            if cast(&typed, &DataType::Utf8)?.as_string::<i32>().value(0) != value {
                return Ok(None);
            }
            columns.push(typed);
        }
        let rows = converter.convert_columns(&columns)?;
        let Some(&group) = self.groups.get(&rows.row(0).owned()) else {
            let none = RecordBatch::new_empty(self.state_schema.clone());
            return self.output_of(none).map(Some);
        };
        let mut columns = converter.convert_rows([self.group_keys[group].row()])?;
        for (j, aggregate) in self.aggregates.iter().enumerate() {
            let value = value_of(&self.values[group][j], &aggregate.output)?;
            columns.push(cast(&value.to_array()?, &aggregate.output)?);
        }
        let state = RecordBatch::try_new(self.state_schema.clone(), columns)?;
        self.output_of(state).map(Some)
    }

    /// The select list over `state` (rows of the state batch).
    fn output_of(&self, state: RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .output
            .iter()
            .zip(self.output_schema.fields())
            .map(|(e, field)| {
                let a = e.evaluate(&state)?.into_array(state.num_rows())?;
                Ok(cast(&a, field.data_type())?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(state.num_rows())),
        )?)
    }
}

/// Where `predicate` holds over `batch` (null counts as false).
fn mask(predicate: &Expr, batch: &RecordBatch) -> Result<BooleanArray> {
    let a = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    let a = a.as_boolean_opt().ok_or_else(|| {
        DataFusionError::Plan(format!("a condition gave {}, not a boolean", a.data_type()))
    })?;
    Ok(match a.nulls() {
        Some(_) => arrow::compute::prep_null_mask_filter(a),
        None => a.clone(),
    })
}

/// Folds row `i` into `value`; the bytes a distinct value added to its
/// set.
fn fold_row(
    fold: Fold,
    value: &mut Value,
    arg: Option<&ArrayRef>,
    keys: Option<&ArrayRef>,
    i: usize,
) -> Result<usize> {
    let scalar = |a: &ArrayRef| ScalarValue::try_from_array(a, i);
    match (fold, value) {
        (Fold::Count, Value::Count(n)) => {
            if arg.is_none_or(|a| a.is_valid(i)) {
                *n += 1;
            }
        }
        (Fold::CountDistinct, Value::Distinct(set)) => {
            if let Some(a) = arg
                && a.is_valid(i)
            {
                let v = scalar(a)?;
                let size = v.size() + 16;
                if set.insert(v) {
                    return Ok(size);
                }
            }
        }
        (Fold::Sum | Fold::Min | Fold::Max, Value::Scalar(current)) => {
            let Some(a) = arg else { return Ok(0) };
            if a.is_null(i) {
                return Ok(0);
            }
            let v = udfs::minmax::ordered_scalar(scalar(a)?);
            *current = Some(match current.take() {
                None => v,
                Some(c) => match fold {
                    Fold::Sum => c.add(&v)?,
                    Fold::Min => {
                        if v.partial_cmp(&c) == Some(std::cmp::Ordering::Less) {
                            v
                        } else {
                            c
                        }
                    }
                    _ => {
                        if v.partial_cmp(&c) == Some(std::cmp::Ordering::Greater) {
                            v
                        } else {
                            c
                        }
                    }
                },
            });
        }
        (Fold::Avg, Value::Avg { sum, count }) => {
            let Some(a) = arg else { return Ok(0) };
            if a.is_valid(i) {
                *sum += a.as_primitive::<arrow::datatypes::Float64Type>().value(i);
                *count += 1;
            }
        }
        (Fold::First(k) | Fold::Last(k), Value::Ordered(current)) => {
            let (Some(a), Some(keys)) = (arg, keys) else {
                return Ok(0);
            };
            if keys.is_null(i) {
                return Ok(0);
            }
            let key = match k {
                OrderKey::Timestamp => keys.as_primitive::<TimestampMicrosecondType>().value(i),
                OrderKey::Position => keys.as_primitive::<Int64Type>().value(i),
            };
            // Events arrive in position order: on a tie the earlier event
            // stays first and the later one becomes last.
            let replace = match current {
                None => true,
                Some((held, _)) => match fold {
                    Fold::First(_) => key < *held,
                    _ => key >= *held,
                },
            };
            if replace {
                *current = Some((key, scalar(a)?));
            }
        }
        (fold, value) => {
            return Err(DataFusionError::Internal(format!(
                "projection fold {fold:?} met a value of another kind: {value:?}"
            )));
        }
    }
    Ok(0)
}

/// The aggregate's result from its fold.
fn value_of(value: &Value, output: &DataType) -> Result<ScalarValue> {
    let null = || ScalarValue::try_from(output);
    Ok(match value {
        Value::Count(n) => ScalarValue::Int64(Some(*n)),
        Value::Distinct(set) => ScalarValue::Int64(Some(set.len() as i64)),
        Value::Scalar(v) => match v {
            Some(v) => v.clone(),
            None => null()?,
        },
        Value::Avg { sum, count } => {
            ScalarValue::Float64((*count > 0).then(|| sum / *count as f64))
        }
        Value::Ordered(v) => match v {
            Some((_, v)) => v.clone(),
            None => null()?,
        },
    })
}

#[path = "snapshot.rs"]
mod snapshot;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
