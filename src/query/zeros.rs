//! Sorting treats `-0.0` and `+0.0` as one value.
//!
//! DataFusion's comparisons (`=`, `<`, ...) follow SQL and IEEE 754:
//! `-0.0 = 0.0`. Its sorts order by the bits' total order, where `-0.0`
//! comes first. A TopK (`ORDER BY ... LIMIT k`) mixes the two: it keeps
//! its heap in the sort's order but rejects incoming rows with a
//! comparison against the current k-th row. With a `0.0` there, a row
//! whose key is `-0.0` compares equal, falls through to the next sort
//! key, and can be rejected although the sort puts it first. Which rows
//! were lost depended on the order in which partitions delivered them.
//!
//! [`SignlessSortKeys`] wraps every floating-point sort key in
//! [`signless_zero`], which turns `-0.0` into `0.0` and leaves every other
//! value (NaN included) alone. Sort, heap and filter then agree: the two
//! zeros tie, and later keys decide between them, as PostgreSQL and
//! DuckDB order them. The rewritten sort's output order is on the
//! wrapped expression, so no operator above it assumes an order on the
//! bare column that the sort no longer gives.

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float16Type, Float32Type, Float64Type};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, SortExpr, Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use std::sync::{Arc, LazyLock};

/// The function's name, as EXPLAIN shows it. It is not registered: only
/// [`SignlessSortKeys`] places it.
const NAME: &str = "signless_zero";

#[derive(Debug, PartialEq, Eq, Hash)]
struct SignlessZero {
    signature: Signature,
}

/// `signless_zero(x)`: `x`, with `-0.0` as `0.0`.
pub(crate) fn signless_zero() -> Arc<ScalarUDF> {
    static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
        let floats = vec![DataType::Float16, DataType::Float32, DataType::Float64];
        let signature = Signature::uniform(1, floats, Volatility::Immutable);
        Arc::new(ScalarUDF::new_from_impl(SignlessZero { signature }))
    });
    Arc::clone(&UDF)
}

/// `values` with each negative zero (`negative_zero`) made positive; the
/// same array when there is none.
fn signless<T: ArrowPrimitiveType>(
    values: &ArrayRef,
    negative_zero: fn(T::Native) -> bool,
) -> ArrayRef {
    let array = values.as_primitive::<T>();
    if !array.values().iter().any(|v| negative_zero(*v)) {
        return Arc::clone(values);
    }
    let zero = T::default_value();
    let fixed: PrimitiveArray<T> = array.unary(|v| if negative_zero(v) { zero } else { v });
    Arc::new(fixed)
}

impl ScalarUDFImpl for SignlessZero {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(signless_array, vec![])(&args.args)
    }
}

/// [`signless`] of the function's one argument, by its type.
fn signless_array(args: &[ArrayRef]) -> Result<ArrayRef> {
    let [values] = args else {
        return exec_err!("{NAME} takes one argument");
    };
    Ok(match values.data_type() {
        DataType::Float16 => signless::<Float16Type>(values, |v| v.to_bits() == 1 << 15),
        DataType::Float32 => signless::<Float32Type>(values, |v| v.to_bits() == 1 << 31),
        DataType::Float64 => signless::<Float64Type>(values, |v| v.to_bits() == 1 << 63),
        other => return exec_err!("{NAME} takes a floating-point number, not {other}"),
    })
}

/// Wraps the floating-point keys of every `Sort` in [`signless_zero`].
#[derive(Debug, Default)]
pub(super) struct SignlessSortKeys;

impl OptimizerRule for SignlessSortKeys {
    fn name(&self) -> &str {
        "signless_sort_keys"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Sort(mut sort) = plan else {
            return Ok(Transformed::no(plan));
        };
        let schema = Arc::clone(sort.input.schema());
        let mut changed = false;
        for key in &mut sort.expr {
            let wrapped = matches!(&key.expr, Expr::ScalarFunction(f)
                if f.func.inner().downcast_ref::<SignlessZero>().is_some());
            if wrapped || !key.expr.get_type(&schema)?.is_floating() {
                continue;
            }
            let expr = std::mem::replace(&mut key.expr, Expr::Literal(ScalarValue::Null, None));
            *key = SortExpr {
                expr: Expr::ScalarFunction(ScalarFunction::new_udf(signless_zero(), vec![expr])),
                ..*key
            };
            changed = true;
        }
        let plan = LogicalPlan::Sort(sort);
        Ok(match changed {
            true => Transformed::yes(plan),
            false => Transformed::no(plan),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;

    #[test]
    fn only_negative_zeros_change() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(-0.0),
            Some(0.0),
            None,
            Some(f64::NAN),
            Some(-1.5),
            Some(f64::NEG_INFINITY),
        ]));
        let negative_zero = |v: f64| v.to_bits() == 1 << 63;
        let fixed = signless::<Float64Type>(&values, negative_zero);
        let fixed = fixed.as_primitive::<Float64Type>();
        assert_eq!(fixed.value(0).to_bits(), 0.0f64.to_bits());
        assert_eq!(fixed.value(1).to_bits(), 0.0f64.to_bits());
        assert!(fixed.is_null(2));
        assert!(fixed.value(3).is_nan());
        assert_eq!(fixed.value(4), -1.5);
        assert_eq!(fixed.value(5), f64::NEG_INFINITY);
        let plain: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 0.0]));
        assert!(Arc::ptr_eq(
            &signless::<Float64Type>(&plain, negative_zero),
            &plain
        ));
    }
}
