//! `allsource stream`: prints one entity's events in version order.

use super::{ClientArgs, get};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub(crate) struct StreamArgs {
    /// The entity whose events to read (its `entity_id`).
    entity: String,
    /// The table.
    #[arg(long, default_value = "events")]
    table: String,
    /// First version to read (forward: from the first event; backward:
    /// from the latest, when not given).
    #[arg(long)]
    from_version: Option<u64>,
    /// Most events to print (1 to 10,000; the server's default is 100).
    #[arg(long)]
    limit: Option<u64>,
    /// Read oldest first (`forward`) or newest first (`backward`).
    #[arg(long, default_value = "forward")]
    direction: String,
    /// Result format: json, ndjson, csv, arrow or parquet.
    #[arg(long, default_value = "ndjson")]
    format: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Reads the stream and copies the answer to stdout; a refusal goes to
/// stderr with a failing exit status.
pub(crate) fn run(args: &StreamArgs) -> anyhow::Result<()> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("direction", &args.direction);
    query.append_pair("format", &args.format);
    if let Some(v) = args.from_version {
        query.append_pair("from_version", &v.to_string());
    }
    if let Some(n) = args.limit {
        query.append_pair("limit", &n.to_string());
    }
    let entity =
        percent_encoding::utf8_percent_encode(&args.entity, percent_encoding::NON_ALPHANUMERIC);
    let path = format!("/v1/streams/{}/{entity}?{}", args.table, query.finish());
    let mut response = get(&args.client, &args.client.url(&path))?;
    let mut out = std::io::stdout().lock();
    response.copy_to(&mut out)?;
    if args.format == "json" {
        writeln!(out)?;
    }
    Ok(())
}
