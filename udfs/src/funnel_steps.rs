//! `funnel_steps`: `window_funnel` plus the time of each step reached.

use crate::funnel::{
    FunnelAccumulator, FunnelGroups, FunnelOutput, FunnelSpec, coerce_funnel_args,
    funnel_state_fields,
};
use datafusion::arrow::array::{ArrayRef, Int64Array, StructArray, UInt8Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, TimeUnit};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, Signature, Volatility,
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
pub(crate) fn build(
    results: Vec<(u8, Vec<i64>)>,
    steps: usize,
    time: &DataType,
) -> Result<ArrayRef> {
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
        let has_mode = arg_types.get(1).is_some_and(DataType::is_string);
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
        let time = time_type(args.expr_fields[spec.ts_index].data_type());
        Ok(Box::new(FunnelAccumulator::new(
            spec,
            FunnelOutput::Steps(time),
        )))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let spec = FunnelSpec::from_args(self.name(), &args)?;
        let time = time_type(args.expr_fields[spec.ts_index].data_type());
        Ok(Box::new(FunnelGroups::new(spec, FunnelOutput::Steps(time))))
    }
}
