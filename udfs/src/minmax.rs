//! `min` and `max` that treat every NaN alike, whatever the plan.
//!
//! DataFusion's own `min`/`max` order floats two ways: the per-batch and
//! scalar paths use IEEE total order, where a NaN with its sign bit set
//! (which `x / -x` of a NaN `x` yields) is below every number and a positive
//! NaN above, while the grouped path compares with `partial_cmp` and keeps
//! whichever NaN or number came last once a NaN is involved. So the answer
//! for a group holding a NaN depended on the order rows arrived in, which
//! depends on the number of partitions. The grouped path also started `max`
//! at the lowest finite float, so the `max` of `-inf` values came back as
//! `-1.8e308`.
//!
//! These wrappers keep DataFusion's functions and give float inputs one
//! order: every NaN is made the positive quiet NaN before it reaches an
//! accumulator, and all paths compare in total order. A NaN is then above
//! every number, as in PostgreSQL: `min` skips NaNs unless the group holds
//! nothing else, and `max` is NaN as soon as the group holds one. Other
//! types go to DataFusion's accumulators unchanged.

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{ArrowPrimitiveType, DataType, FieldRef, Float32Type, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Which end of the order the function keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum End {
    Min,
    Max,
}

/// DataFusion's `min` or `max` with float inputs in one total order.
#[derive(Debug)]
struct NanOrdered {
    end: End,
    inner: Arc<AggregateUDF>,
}

impl PartialEq for NanOrdered {
    fn eq(&self, other: &Self) -> bool {
        self.end == other.end
    }
}

impl Eq for NanOrdered {}

impl Hash for NanOrdered {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.end.hash(state);
    }
}

/// `min` whose float inputs are ordered alike on every path.
pub fn min_udaf_nan_ordered() -> AggregateUDF {
    AggregateUDF::new_from_impl(NanOrdered {
        end: End::Min,
        inner: min_udaf(),
    })
}

/// `max` whose float inputs are ordered alike on every path.
pub fn max_udaf_nan_ordered() -> AggregateUDF {
    AggregateUDF::new_from_impl(NanOrdered {
        end: End::Max,
        inner: max_udaf(),
    })
}

fn is_float(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Float32 | DataType::Float64)
}

/// `values` with every NaN in a float array made the positive quiet NaN.
fn canonical(values: &[ArrayRef]) -> Vec<ArrayRef> {
    // A value that is unordered with itself is a NaN.
    fn of<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, nan: T::Native) -> ArrayRef {
        Arc::new(a.unary::<_, T>(|v| if v.partial_cmp(&v).is_none() { nan } else { v }))
    }
    values
        .iter()
        .map(|a| match a.data_type() {
            DataType::Float64 => of(a.as_primitive::<Float64Type>(), f64::NAN),
            DataType::Float32 => of(a.as_primitive::<Float32Type>(), f32::NAN),
            _ => Arc::clone(a),
        })
        .collect()
}

/// `value` as these functions order it: a float NaN becomes the positive
/// quiet NaN, after which [`ScalarValue`]'s total order agrees with them.
/// For code that folds `min`/`max` itself and must agree with SQL.
pub fn ordered_scalar(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Float64(Some(v)) if v.is_nan() => ScalarValue::Float64(Some(f64::NAN)),
        ScalarValue::Float32(Some(v)) if v.is_nan() => ScalarValue::Float32(Some(f32::NAN)),
        v => v,
    }
}

/// An accumulator fed canonical NaNs; DataFusion's scalar `min`/`max`
/// compare in total order, so that is all they need.
#[derive(Debug)]
struct Canonical(Box<dyn Accumulator>);

impl Accumulator for Canonical {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.update_batch(&canonical(values))
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.merge_batch(&canonical(states))
    }
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.retract_batch(&canonical(values))
    }
    fn supports_retract_batch(&self) -> bool {
        self.0.supports_retract_batch()
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.evaluate()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.state()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
}

/// A grouped accumulator fed canonical NaNs that compares in total order.
/// Its starting value is the far end of the order: a group that holds only
/// nulls is null whatever that value is, and one that holds any value ends
/// on a value it held.
struct CanonicalGroups(Box<dyn GroupsAccumulator>);

impl GroupsAccumulator for CanonicalGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&arrow::array::BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.0.update_batch(
            &canonical(values),
            group_indices,
            opt_filter,
            total_num_groups,
        )
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.0
            .merge_batch(&canonical(values), group_indices, total_num_groups)
    }
    fn evaluate(&mut self, emit_to: datafusion::logical_expr::EmitTo) -> Result<ArrayRef> {
        self.0.evaluate(emit_to)
    }
    fn state(&mut self, emit_to: datafusion::logical_expr::EmitTo) -> Result<Vec<ArrayRef>> {
        self.0.state(emit_to)
    }
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&arrow::array::BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.0.convert_to_state(&canonical(values), opt_filter)
    }
    fn size(&self) -> usize {
        self.0.size()
    }
}

/// The grouped accumulator for one float type: keeps `new` when it is
/// before `cur` (min) or after it (max) in total order.
fn float_groups<T>(
    data_type: &DataType,
    end: End,
    cmp: fn(&T::Native, &T::Native) -> Ordering,
    lowest: T::Native,
    highest: T::Native,
) -> Box<dyn GroupsAccumulator>
where
    T: ArrowPrimitiveType + Send,
{
    let (keep, start) = match end {
        End::Min => (Ordering::Less, highest),
        End::Max => (Ordering::Greater, lowest),
    };
    Box::new(
        PrimitiveGroupsAccumulator::<T, _>::new(data_type, move |cur, new| {
            if cmp(&new, cur) == keep {
                *cur = new;
            }
        })
        .with_starting_value(start),
    )
}

impl AggregateUDFImpl for NanOrdered {
    fn name(&self) -> &str {
        self.inner.inner().name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.inner().aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.inner().signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.inner().state_fields(args)
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let float = is_float(args.return_field.data_type());
        let inner = self.inner.inner().accumulator(args)?;
        Ok(if float {
            Box::new(Canonical(inner))
        } else {
            inner
        })
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.inner().groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.return_field.data_type().clone();
        let groups = match data_type {
            DataType::Float64 => float_groups::<Float64Type>(
                &data_type,
                self.end,
                f64::total_cmp,
                f64::NEG_INFINITY,
                f64::NAN,
            ),
            DataType::Float32 => float_groups::<Float32Type>(
                &data_type,
                self.end,
                f32::total_cmp,
                f32::NEG_INFINITY,
                f32::NAN,
            ),
            _ => return self.inner.inner().create_groups_accumulator(args),
        };
        Ok(Box::new(CanonicalGroups(groups)))
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let float = is_float(args.return_field.data_type());
        let inner = self.inner.inner().create_sliding_accumulator(args)?;
        Ok(if float {
            Box::new(Canonical(inner))
        } else {
            inner
        })
    }
    fn is_descending(&self) -> Option<bool> {
        self.inner.inner().is_descending()
    }
    fn value_from_stats(&self, args: &StatisticsArgs) -> Option<ScalarValue> {
        // File statistics leave NaNs out of a float column's bounds.
        if is_float(args.return_type) {
            return None;
        }
        self.inner.inner().value_from_stats(args)
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }
}
