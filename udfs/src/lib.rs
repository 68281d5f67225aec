//! AllSource's analytics functions for DataFusion.
//!
//! Every function is listed in [`register_all`], which the server calls for
//! every query session (SQL over HTTP, the DSL, Flight SQL), so all
//! interfaces share one dialect. The JSON functions of
//! `datafusion-functions-json` (`json_get`, `json_get_str`, `->>`, ...) are
//! registered here too: nested payload values are stored as JSON text.

pub mod anomaly;
pub mod cohorts;
pub mod detect_anomalies;
mod funnel;
pub mod funnel_steps;
pub mod gapfill;
pub mod minmax;
pub mod retention;
pub mod trend;
pub mod udtf;
pub mod window_funnel;

use datafusion::catalog::TableFunctionImpl;
use datafusion::error::Result;
use datafusion::functions_aggregate::{
    approx_distinct::approx_distinct_udaf, approx_percentile_cont::approx_percentile_cont_udaf,
    first_last::first_value_udaf, first_last::last_value_udaf,
    percentile_cont::percentile_cont_udaf, variance::var_samp_udaf,
};
use datafusion::logical_expr::{AggregateUDF, WindowUDF};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Every aggregate function this crate adds.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        window_funnel::window_funnel_udaf(),
        funnel_steps::funnel_steps_udaf(),
        retention::retention_udaf(),
    ]
}

/// Every window function this crate adds.
pub fn window_functions() -> Vec<WindowUDF> {
    vec![anomaly::anomaly_score_udwf(), anomaly::is_anomaly_udwf()]
}

/// Every table function this crate adds, by name.
pub fn table_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![
        (
            "detect_anomalies",
            Arc::new(detect_anomalies::DetectAnomalies),
        ),
        ("gapfill", Arc::new(gapfill::GapFill)),
        ("trend", Arc::new(trend::Trend)),
        ("cohorts", Arc::new(cohorts::Cohorts)),
    ]
}

/// DataFusion's own aggregates under the other names users of event
/// databases know them by (see docs/functions.md): the names are added to
/// the built-in function, which keeps its own.
pub fn builtin_aliases() -> Vec<AggregateUDF> {
    let alias = |f: Arc<AggregateUDF>, names: &[&'static str]| {
        f.as_ref().clone().with_aliases(names.iter().copied())
    };
    vec![
        alias(var_samp_udaf(), &["variance"]),
        alias(percentile_cont_udaf(), &["percentile"]),
        alias(approx_percentile_cont_udaf(), &["approx_percentile"]),
        alias(approx_distinct_udaf(), &["approx_count_distinct"]),
        alias(first_value_udaf(), &["first"]),
        alias(last_value_udaf(), &["last"]),
    ]
}

/// DataFusion's own aggregates with a different behaviour, under their own
/// names: `min` and `max` order NaNs alike on every plan
/// ([`minmax`]).
pub fn builtin_replacements() -> Vec<AggregateUDF> {
    vec![
        minmax::min_udaf_nan_ordered(),
        minmax::max_udaf_nan_ordered(),
    ]
}

/// Registers every AllSource function with `ctx`.
pub fn register_all(ctx: &mut SessionContext) -> Result<()> {
    datafusion_functions_json::register_all(ctx)?;
    for f in builtin_aliases()
        .into_iter()
        .chain(builtin_replacements())
        .chain(aggregate_functions())
    {
        ctx.register_udaf(f);
    }
    for f in window_functions() {
        ctx.register_udwf(f);
    }
    for (name, f) in table_functions() {
        ctx.register_udtf(name, f);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_functions_share_a_name() {
        let mut ctx = SessionContext::new();
        let state = ctx.state();
        let builtin: std::collections::HashSet<String> = state
            .aggregate_functions()
            .keys()
            .chain(state.window_functions().keys())
            .chain(state.scalar_functions().keys())
            .chain(state.table_functions().keys())
            .cloned()
            .collect();
        let mut seen = std::collections::HashSet::new();
        let names = aggregate_functions()
            .iter()
            .map(|f| f.name().to_string())
            .chain(window_functions().iter().map(|f| f.name().to_string()))
            .chain(table_functions().iter().map(|(n, _)| n.to_string()))
            .chain(
                [
                    "variance",
                    "percentile",
                    "approx_percentile",
                    "approx_count_distinct",
                    "first",
                    "last",
                ]
                .map(String::from),
            )
            .collect::<Vec<_>>();
        for name in names {
            assert!(
                !builtin.contains(&name),
                "{name} shadows a DataFusion function"
            );
            assert!(seen.insert(name.clone()), "{name} registered twice");
        }
        register_all(&mut ctx).unwrap();
    }

    #[tokio::test]
    async fn json_functions_are_registered() {
        let mut ctx = SessionContext::new();
        register_all(&mut ctx).unwrap();
        let batches = ctx
            .sql(r#"SELECT json_get_str('{"a":"x"}', 'a') AS v"#)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let out = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(out.contains("| x "), "{out}");
    }
}
