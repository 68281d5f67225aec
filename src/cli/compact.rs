//! `allsource compact`: runs maintenance on the server now, following its
//! progress.

use super::progress::ProgressDisplay;
use super::{ClientArgs, post};
use std::io::BufRead;

#[derive(Debug, clap::Args)]
pub(crate) struct CompactArgs {
    /// Only this table (default: every table).
    #[arg(long)]
    table: Option<String>,
    /// Report what would be compacted, changing nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Asks the server to run maintenance, draws its progress on stderr and
/// prints each table's report.
///
/// The server answers with NDJSON: `{"progress": …}` lines while it works,
/// then one `{"reports": […]}` line, or an `{"error": …}` line if the run
/// failed after the reply had started.
pub(crate) fn run(args: &CompactArgs) -> anyhow::Result<()> {
    let mut path = format!("/v1/admin/compact?progress=true&dry_run={}", args.dry_run);
    if let Some(t) = &args.table {
        path.push_str(&format!("&table={t}"));
    }
    let response = post(&args.client, &args.client.url(&path), None)?;
    let mut display = ProgressDisplay::new(std::io::stderr());
    for line in std::io::BufReader::new(response).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if let Some(p) = v.get("progress") {
            display.progress(p)?;
        } else if let Some(e) = v.get("error") {
            anyhow::bail!("{}", e.as_str().unwrap_or("maintenance failed"));
        } else if let Some(reports) = v["reports"].as_array() {
            display.finish()?;
            for r in reports {
                println!("{}", super::progress::report_line(r));
            }
        }
    }
    Ok(())
}
