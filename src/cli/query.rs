//! `allsource query`: runs a query document (docs/dsl.md) on a server.

use super::{ClientArgs, post, read_input};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub(crate) struct QueryArgs {
    /// The document: a JSON file, or `-` (the default) for standard input.
    #[arg(default_value = "-")]
    file: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Result format: json, ndjson, csv, arrow or parquet.
    #[arg(long, default_value = "json")]
    format: String,
}

/// Posts the document to `/v1/query` and copies the answer to stdout; a
/// refusal goes to stderr with a failing exit status.
pub(crate) fn run(args: &QueryArgs) -> anyhow::Result<()> {
    let doc = read_input(&args.file)?;
    let url = args
        .client
        .url(&format!("/v1/query?format={}", args.format));
    let mut response = post(&args.client, &url, Some(doc))?;
    let mut out = std::io::stdout().lock();
    response.copy_to(&mut out)?;
    if args.format == "json" {
        writeln!(out)?;
    }
    Ok(())
}
