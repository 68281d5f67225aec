//! `funnel_steps`: `window_funnel` plus the time of each step reached.

use crate::window_funnel::{
    FunnelSpec, coerce_funnel_args, conditions, events_to_state, for_each_state,
    funnel_state_fields, take_groups,
};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, StructArray, UInt8Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use std::sync::Arc;

/// `funnel_steps(window, [mode,] timestamp, cond1, ..., condN)`: the same
/// funnel as `window_funnel` (same arguments, same semantics), returning a
/// struct `{level, step_1, ..., step_N}`: the level reached and the time of
/// each step of the chain that reached it (NULL for steps not reached).
///
/// ```sql
/// SELECT avg(f['step_2'] - f['step_1']) AS view_to_cart
/// FROM (SELECT funnel_steps(INTERVAL '1 day', timestamp,
///                           event_type = 'view', event_type = 'cart') AS f
///       FROM events GROUP BY entity_id)
/// WHERE f['level'] = 2;
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FunnelSteps {
    signature: Signature,
}

impl Default for FunnelSteps {
    fn default() -> Self {
        FunnelSteps {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The `funnel_steps` aggregate.
pub fn funnel_steps_udaf() -> AggregateUDF {
    AggregateUDF::from(FunnelSteps::default())
}

/// The type step times are reported in: microsecond timestamps (keeping
/// the input's time zone) for times and dates, Int64 for integers.
fn time_type(ts: &DataType) -> DataType {
    match ts {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Date32 | DataType::Date64 => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Int64,
    }
}

fn output_fields(steps: usize, time: &DataType) -> Fields {
    let mut fields = vec![Field::new("level", DataType::UInt8, false)];
    fields.extend((1..=steps).map(|i| Field::new(format!("step_{i}"), time.clone(), true)));
    Fields::from(fields)
}

/// Builds the result struct from each group's (level, step times).
fn build(results: Vec<(u8, Vec<i64>)>, steps: usize, time: &DataType) -> Result<ArrayRef> {
    let fields = output_fields(steps, time);
    let levels: UInt8Array = results.iter().map(|r| Some(r.0)).collect();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(levels)];
    for step in 0..steps {
        let times: Int64Array = results.iter().map(|r| r.1.get(step).copied()).collect();
        let times: ArrayRef = Arc::new(times);
        columns.push(if time == &DataType::Int64 {
            times
        } else {
            cast(&times, time)?
        });
    }
    Ok(Arc::new(StructArray::try_new(fields, columns, None)?))
}

impl AggregateUDFImpl for FunnelSteps {
    fn name(&self) -> &str {
        "funnel_steps"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_funnel_args(self.name(), arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let has_mode = matches!(
            arg_types.get(1),
            Some(DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
        );
        let ts = if has_mode { 2 } else { 1 };
        let steps = arg_types.len().saturating_sub(ts + 1);
        let time = time_type(arg_types.get(ts).unwrap_or(&DataType::Int64));
        Ok(DataType::Struct(output_fields(steps, &time)))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(funnel_state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let spec = FunnelSpec::from_args(self.name(), &args)?;
        Ok(Box::new(FunnelStepsAccumulator {
            time: time_type(args.expr_fields[spec.ts_index].data_type()),
            spec,
            events: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let spec = FunnelSpec::from_args(self.name(), &args)?;
        Ok(Box::new(FunnelStepsGroups {
            time: time_type(args.expr_fields[spec.ts_index].data_type()),
            spec,
            groups: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct FunnelStepsAccumulator {
    spec: FunnelSpec,
    time: DataType,
    events: Vec<(i64, u8)>,
}

impl Accumulator for FunnelStepsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let ts = self.spec.timestamps(values)?;
        let conds = conditions(&self.spec, values);
        for row in 0..ts.len() {
            self.spec.add_row(&mut self.events, &ts, &conds, row);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let result = self.spec.walk(&mut self.events, true);
        let array = build(vec![result], self.spec.steps, &self.time)?;
        ScalarValue::try_from_array(&array, 0)
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.events.capacity() * size_of::<(i64, u8)>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        events_to_state(std::slice::from_ref(&self.events))
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for_each_state(states, |_, events| self.events.extend(events))
    }
}

#[derive(Debug)]
struct FunnelStepsGroups {
    spec: FunnelSpec,
    time: DataType,
    groups: Vec<Vec<(i64, u8)>>,
}

impl GroupsAccumulator for FunnelStepsGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let ts = self.spec.timestamps(values)?;
        let conds = conditions(&self.spec, values);
        for (row, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !(f.is_valid(row) && f.value(row))) {
                continue;
            }
            self.spec.add_row(&mut self.groups[g], &ts, &conds, row);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = take_groups(&mut self.groups, emit_to);
        let results = groups
            .into_iter()
            .map(|mut events| self.spec.walk(&mut events, true))
            .collect();
        build(results, self.spec.steps, &self.time)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = take_groups(&mut self.groups, emit_to);
        Ok(events_to_state(&groups))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        for_each_state(values, |row, events| {
            self.groups[group_indices[row]].extend(events)
        })
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let ts = self.spec.timestamps(values)?;
        let conds = conditions(&self.spec, values);
        let rows: Vec<Vec<(i64, u8)>> = (0..ts.len())
            .map(|row| {
                let mut events = Vec::new();
                if opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row)) {
                    self.spec.add_row(&mut events, &ts, &conds, row);
                }
                events
            })
            .collect();
        Ok(events_to_state(&rows))
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self
                .groups
                .iter()
                .map(|g| g.capacity() * size_of::<(i64, u8)>() + size_of::<Vec<(i64, u8)>>())
                .sum::<usize>()
    }
}
