//! `allsource export`: a query's result to a file, in any of the result
//! formats (json, ndjson, csv, arrow, parquet; by default the file's
//! extension's). The body is streamed to a temporary file beside the
//! target and renamed into place once complete, so an interrupted export
//! never leaves a partial file under the target's name.

use super::{ClientArgs, read_input, send_as};
use anyhow::Context as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The SQL statement whose result is exported.
    #[arg(long, conflicts_with = "dsl", required_unless_present = "dsl")]
    sql: Option<String>,
    /// A DSL document (docs/dsl.md) to export instead: a JSON file, or `-`
    /// for standard input.
    #[arg(long)]
    dsl: Option<String>,
    /// The file to write.
    #[arg(long)]
    to: PathBuf,
    /// json, ndjson, csv, arrow or parquet (default: from the file's
    /// extension).
    #[arg(long)]
    format: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// The result format a file's extension names.
fn format_of(path: &Path) -> anyhow::Result<&'static str> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok(match ext.as_str() {
        "json" => "json",
        "ndjson" | "jsonl" => "ndjson",
        "csv" => "csv",
        "arrow" | "arrows" | "ipc" => "arrow",
        "parquet" => "parquet",
        _ => anyhow::bail!(
            "cannot tell the format from {}: name a .json, .ndjson, .csv, .arrow or .parquet file, or pass --format",
            path.display()
        ),
    })
}

/// Runs the query on the server and writes its result to `--to`.
pub(crate) fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let format = match &args.format {
        Some(f) => f.as_str(),
        None => format_of(&args.to)?,
    };
    let (route, body, content_type) = match (&args.sql, &args.dsl) {
        (Some(sql), _) => ("/v1/sql", sql.clone().into_bytes(), "text/plain"),
        (None, Some(doc)) => ("/v1/query", read_input(doc)?, "application/json"),
        (None, None) => anyhow::bail!("give --sql or --dsl"),
    };
    let started = Instant::now();
    let url = args.client.url(&format!("{route}?format={format}"));
    let mut response = send_as(
        &args.client,
        reqwest::Method::POST,
        &url,
        Some((body, content_type)),
    )?;
    let dir = args
        .to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut partial = tempfile::Builder::new()
        .prefix(".allsource-export-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let bytes = response
        .copy_to(partial.as_file_mut())
        .context("the export was cut off")?;
    partial.as_file_mut().sync_all()?;
    partial
        .persist(&args.to)
        .with_context(|| format!("cannot write {}", args.to.display()))?;
    let rows = rows_in(&args.to, format)
        .map(|n| format!("{n} rows, "))
        .unwrap_or_default();
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "exported {rows}{bytes} bytes of {format} to {} in {:.2} s",
        args.to.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// How many rows the written file holds, where that is cheap to read.
fn rows_in(path: &Path, format: &str) -> Option<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    match format {
        "parquet" => {
            let reader = parquet::file::reader::SerializedFileReader::new(file).ok()?;
            let meta = parquet::file::reader::FileReader::metadata(&reader);
            Some(meta.file_metadata().num_rows() as u64)
        }
        "arrow" => {
            let reader = arrow::ipc::reader::StreamReader::try_new(file, None).ok()?;
            let mut rows = 0;
            for batch in reader {
                rows += batch.ok()?.num_rows() as u64;
            }
            Some(rows)
        }
        "ndjson" | "csv" => {
            let lines = std::io::BufReader::new(file).lines().count() as u64;
            Some(if format == "csv" {
                lines.saturating_sub(1)
            } else {
                lines
            })
        }
        _ => None,
    }
}
