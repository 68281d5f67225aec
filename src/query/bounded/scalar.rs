//! [`Bounded`]: a built-in scalar function behind a reservation of its
//! output.

use super::Estimate;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A built-in scalar function that reserves an upper bound of its output
/// in the query's memory pool before it runs.
#[derive(Debug)]
pub struct Bounded {
    inner: Arc<ScalarUDF>,
    estimate: Estimate,
    /// The query's pool: the wrapper is registered per session, and each
    /// query has a session of its own.
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
            && self.estimate == other.estimate
            && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.estimate.hash(state);
    }
}

impl Bounded {
    pub(super) fn udf(
        inner: Arc<ScalarUDF>,
        estimate: Estimate,
        pool: Arc<dyn MemoryPool>,
    ) -> ScalarUDF {
        ScalarUDF::new_from_impl(Bounded {
            inner,
            estimate,
            pool,
        })
    }

    /// Reserves `bytes` for the length of `f`, refusing it when the query's
    /// budget (or the server's) has not that much left.
    fn within<T>(&self, bytes: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if bytes == 0 {
            return f();
        }
        let reservation =
            MemoryConsumer::new(format!("{}()", self.inner.name())).register(&self.pool);
        reservation.try_grow(bytes)?;
        f()
    }

    /// The same function, wrapped again, in place of the bare built-in in an
    /// expression the built-in's simplification produced.
    fn rewrap(&self, expr: Expr) -> Result<Expr> {
        let name = self.inner.name();
        expr.transform(|e| match e {
            Expr::ScalarFunction(ScalarFunction { func, args })
                if func.name() == name && func.inner().downcast_ref::<Bounded>().is_none() =>
            {
                let func = Arc::new(Bounded::udf(func, self.estimate, Arc::clone(&self.pool)));
                Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                    func,
                    args,
                })))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }
}

#[warn(clippy::missing_trait_methods)]
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.inner().display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn datafusion::common::ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.estimate.bytes(&args.args, args.number_rows)?;
        self.within(bytes, || self.inner.invoke_with_args(args))
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let inner = self.inner.inner().with_updated_config(config)?;
        Some(Bounded::udf(
            Arc::new(inner),
            self.estimate,
            Arc::clone(&self.pool),
        ))
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // `concat`'s simplification joins its constant arguments while
        // planning: they must fit too.
        let constants = self.estimate.constant_bytes(&args);
        match self.within(constants, || self.inner.simplify(args, info))? {
            ExprSimplifyResult::Simplified(expr) => {
                Ok(ExprSimplifyResult::Simplified(self.rewrap(expr)?))
            }
            original => Ok(original),
        }
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<datafusion::logical_expr::preimage::PreimageResult> {
        self.inner.inner().preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<datafusion::common::ScalarValue>],
    ) -> Option<datafusion::logical_expr::StructFieldMapping> {
        self.inner.inner().struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(
        &self,
        args: &[datafusion::logical_expr::ExpressionPlacement],
    ) -> datafusion::logical_expr::ExpressionPlacement {
        self.inner.inner().placement(args)
    }
}
