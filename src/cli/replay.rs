//! `allsource replay`: a stored range of a table's events delivered
//! again (`POST /v1/replay`), printed as NDJSON or written to another
//! table, with progress on stderr.

use super::{ClientArgs, post};
use std::io::{BufRead, BufReader, Write};

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The table to read.
    #[arg(long, default_value = "events")]
    table: String,
    /// Where to start: `earliest` (the default), `after:N` or an RFC 3339
    /// time.
    #[arg(long)]
    from: Option<String>,
    /// Where to end: `position:N` (included) or an RFC 3339 time
    /// (excluded); by default the last event stored now.
    #[arg(long)]
    to: Option<String>,
    /// A SQL condition on the events.
    #[arg(long)]
    filter: Option<String>,
    /// A DSL `where` condition (JSON).
    #[arg(long = "where")]
    where_dsl: Option<String>,
    /// 0: as fast as possible; 1: the pace they were ingested at; N: N
    /// times faster.
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
    /// `sequential` (position order) or `parallel` (by entity, each
    /// entity in order).
    #[arg(long, default_value = "sequential")]
    order: String,
    /// Readers of a parallel replay.
    #[arg(long)]
    parallelism: Option<u32>,
    /// Write the events to this table instead of printing them.
    #[arg(long)]
    into: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs the replay: events to stdout, progress and the final count to
/// stderr; an error frame fails the command.
pub(crate) fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let mut body = serde_json::json!({
        "table": args.table, "speed": args.speed, "order": args.order,
    });
    for (key, value) in [
        ("from", &args.from),
        ("to", &args.to),
        ("filter", &args.filter),
        ("into", &args.into),
    ] {
        if let Some(v) = value {
            body[key] = serde_json::json!(v);
        }
    }
    if let Some(w) = &args.where_dsl {
        body["where"] =
            serde_json::from_str(w).map_err(|e| anyhow::anyhow!("--where is not JSON: {e}"))?;
    }
    if let Some(n) = args.parallelism {
        body["parallelism"] = serde_json::json!(n);
    }
    let response = post(
        &args.client,
        &args.client.url("/v1/replay"),
        Some(serde_json::to_vec(&body)?),
    )?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(response).lines() {
        let line = line?;
        let frame: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("the server sent a line that is not JSON ({e})"))?;
        if let Some(event) = frame.get("event") {
            writeln!(out, "{event}")?;
        } else if let Some(p) = frame.get("progress") {
            eprintln!(
                "replayed {} events (position {})",
                p["events"], p["position"]
            );
        } else if let Some(done) = frame.get("done") {
            out.flush()?;
            eprintln!("done: {done}");
            return Ok(());
        } else if let Some(e) = frame.get("error") {
            anyhow::bail!("{} {}", frame["status"], e.as_str().unwrap_or_default());
        }
    }
    anyhow::bail!("the replay ended before it was done (the connection closed)")
}
