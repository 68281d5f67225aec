//! DataFusion's type coercion, with the type errors it calls internal
//! answered as the user's.
//!
//! `TypeCoercion` reports some types that cannot be compared as internal
//! errors, DataFusion's own bugs: `false BETWEEN 0 AND 1`, or a `RANGE`
//! window frame over an `ORDER BY` of a type ranges do not apply to. Both
//! come from the query's text, so [`Coercion`] runs the real rule and
//! turns an internal error it raises into a planning error (a 400) with
//! the same message. Any other error passes unchanged.

use datafusion::common::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;

#[derive(Debug, Default)]
pub(super) struct Coercion {
    inner: TypeCoercion,
}

impl Coercion {
    /// The name of the rule it stands in for.
    pub(super) fn replaces(name: &str) -> bool {
        name == TypeCoercion::default().name()
    }
}

impl AnalyzerRule for Coercion {
    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        self.inner.analyze(plan, config).map_err(|e| match e {
            DataFusionError::Internal(message) => DataFusionError::Plan(message),
            other => other,
        })
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}
