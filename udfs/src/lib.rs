//! AllSource's analytics functions for DataFusion.
//!
//! Every function is listed in [`register_all`], which the server calls for
//! every query session (SQL over HTTP, the DSL, Flight SQL), so all
//! interfaces share one dialect. The JSON functions of
//! `datafusion-functions-json` (`json_get`, `json_get_str`, `->>`, ...) are
//! registered here too: nested payload values are stored as JSON text.

use datafusion::error::Result;
use datafusion::prelude::SessionContext;

/// Registers every AllSource function with `ctx`.
pub fn register_all(ctx: &mut SessionContext) -> Result<()> {
    datafusion_functions_json::register_all(ctx)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
