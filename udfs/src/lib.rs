//! AllSource's analytics functions for DataFusion.
//!
//! Every function is listed in [`register_all`], which the server calls for
//! every query session (SQL over HTTP, the DSL, Flight SQL), so all
//! interfaces share one dialect. The JSON functions of
//! `datafusion-functions-json` (`json_get`, `json_get_str`, `->>`, ...) are
//! registered here too: nested payload values are stored as JSON text.

mod funnel;
pub mod funnel_steps;
pub mod retention;
pub mod window_funnel;

use datafusion::error::Result;
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;

/// Every aggregate function this crate adds.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        window_funnel::window_funnel_udaf(),
        funnel_steps::funnel_steps_udaf(),
        retention::retention_udaf(),
    ]
}

/// Registers every AllSource function with `ctx`.
pub fn register_all(ctx: &mut SessionContext) -> Result<()> {
    datafusion_functions_json::register_all(ctx)?;
    for f in aggregate_functions() {
        ctx.register_udaf(f);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_functions_share_a_name() {
        let mut ctx = SessionContext::new();
        let builtin: std::collections::HashSet<String> =
            ctx.state().aggregate_functions().keys().cloned().collect();
        let mut seen = std::collections::HashSet::new();
        for f in aggregate_functions() {
            let name = f.name().to_string();
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
