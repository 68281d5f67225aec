//! `retention`: which of several conditions a group met, gated by the
//! first, with ClickHouse's `retention` semantics.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, UInt8Array, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use std::sync::Arc;

use crate::funnel::{condition_masks, passes_filter, take_groups};

/// Most conditions `retention` takes (as in ClickHouse).
pub const MAX_CONDITIONS: usize = 32;

/// `retention(cond1, cond2, ..., condN)` returns a list of N values 0/1:
/// the first is 1 when some row of the group met `cond1`; the i-th is 1
/// when some row met `cond1` and some row (not necessarily the same) met
/// `cond_i`. Rows with a NULL condition are ignored. As ClickHouse's
/// `retention`.
///
/// ```sql
/// SELECT entity_id,
///        retention(event_date = DATE '2026-01-01',
///                  event_date = DATE '2026-01-02',
///                  event_date = DATE '2026-01-08') AS r
/// FROM events GROUP BY entity_id;
/// -- r = [1, 1, 0]: active on day 0 and day 1, not on day 7
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Retention {
    signature: Signature,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The `retention` aggregate.
pub fn retention_udaf() -> AggregateUDF {
    AggregateUDF::from(Retention::default())
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::UInt8, false)))
}

/// Each row's mask (bit i set: the row met condition i); 0 for rows with a
/// NULL condition and rows `filter` drops, which count for nothing.
fn row_masks(values: &[ArrayRef], filter: Option<&BooleanArray>) -> Vec<u32> {
    let conds: Vec<&BooleanArray> = values.iter().map(|v| v.as_boolean()).collect();
    let len = values.first().map_or(0, |v| v.len());
    let (mut masks, valid) = condition_masks(&conds, len);
    if valid.is_some() || filter.is_some() {
        for (row, m) in masks.iter_mut().enumerate() {
            if valid.as_ref().is_some_and(|v| v.is_null(row)) || !passes_filter(filter, row) {
                *m = 0;
            }
        }
    }
    masks
}

/// The result list for a mask.
fn levels(mask: u32, n: usize) -> impl Iterator<Item = u8> {
    let first = mask & 1 != 0;
    (0..n).map(move |i| u8::from(first && mask & (1 << i) != 0))
}

fn masks_to_lists(masks: &[u32], n: usize) -> ArrayRef {
    let values: UInt8Array = masks.iter().flat_map(|&m| levels(m, n)).collect();
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::UInt8, false)),
        OffsetBuffer::from_lengths(std::iter::repeat_n(n, masks.len())),
        Arc::new(values),
        None,
    ))
}

impl AggregateUDFImpl for Retention {
    fn name(&self) -> &str {
        "retention"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() {
            return plan_err!("retention expects at least one condition");
        }
        if arg_types.len() > MAX_CONDITIONS {
            return plan_err!(
                "retention supports at most {MAX_CONDITIONS} conditions, got {}",
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, dt)| match dt {
                DataType::Boolean | DataType::Null => Ok(DataType::Boolean),
                other => plan_err!(
                    "retention: argument {} must be a boolean condition, got {other}",
                    i + 1
                ),
            })
            .collect()
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_type())
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}_mask", args.name),
            DataType::UInt32,
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(RetentionAccumulator {
            n: args.exprs.len(),
            mask: 0,
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(RetentionGroups {
            n: args.exprs.len(),
            masks: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct RetentionAccumulator {
    n: usize,
    mask: u32,
}

impl Accumulator for RetentionAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.mask |= row_masks(values, None).iter().fold(0, |a, m| a | m);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        ScalarValue::try_from_array(&masks_to_lists(&[self.mask], self.n), 0)
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::UInt32(Some(self.mask))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let masks = states[0].as_primitive::<UInt32Type>();
        for m in masks.iter().flatten() {
            self.mask |= m;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct RetentionGroups {
    n: usize,
    masks: Vec<u32>,
}

impl GroupsAccumulator for RetentionGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.masks.resize(total_num_groups, 0);
        let masks = row_masks(values, opt_filter);
        for (&g, m) in group_indices.iter().zip(masks) {
            self.masks[g] |= m;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let masks = take_groups(&mut self.masks, emit_to);
        Ok(masks_to_lists(&masks, self.n))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let masks = take_groups(&mut self.masks, emit_to);
        Ok(vec![Arc::new(UInt32Array::from(masks))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.masks.resize(total_num_groups, 0);
        let masks = values[0].as_primitive::<UInt32Type>();
        for (row, &g) in group_indices.iter().enumerate() {
            if masks.is_valid(row) {
                self.masks[g] |= masks.value(row);
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(UInt32Array::from(row_masks(
            values, opt_filter,
        )))])
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.masks.capacity() * size_of::<u32>()
    }
}
