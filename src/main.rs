//! The `allsource` command.

use allsource::config::Config;
use clap::{Parser, Subcommand};

// Query execution allocates from many threads at once (per-group state,
// Arrow buffers); glibc's allocator serialises them on arena locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// AllSource: a SQL-first analytical event database.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Config),
    /// Run a query document (docs/dsl.md) against a server and print the
    /// result.
    Query(QueryArgs),
    /// Compact tables now (and checkpoint, apply retention, vacuum),
    /// showing progress.
    Compact(CompactArgs),
}

#[derive(Debug, clap::Args)]
struct CompactArgs {
    /// Only this table (default: every table).
    #[arg(long)]
    table: Option<String>,
    /// Report what would be compacted, changing nothing.
    #[arg(long)]
    dry_run: bool,
    /// The server's base URL.
    #[arg(long, env = "ALLSOURCE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// POSTs to `url` (with a JSON body, if any) on the server at `base`; a
/// refusal becomes an error carrying its status and the server's message.
fn post(
    base: &str,
    url: &str,
    json: Option<Vec<u8>>,
) -> anyhow::Result<reqwest::blocking::Response> {
    let mut request = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()?
        .post(url);
    if let Some(body) = json {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request
        .send()
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(text);
        anyhow::bail!("{status}: {message}");
    }
    Ok(response)
}

/// Asks the server to run maintenance, draws its progress on stderr and
/// prints each table's report.
fn compact(args: &CompactArgs) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut url = format!(
        "{}/v1/admin/compact?progress=true&dry_run={}",
        args.url.trim_end_matches('/'),
        args.dry_run
    );
    if let Some(t) = &args.table {
        url.push_str(&format!("&table={t}"));
    }
    let response = post(&args.url, &url, None)?;
    let mut err = std::io::stderr();
    let mut drew = false;
    for line in std::io::BufReader::new(response).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if let Some(p) = v.get("progress") {
            let done = p["bytes_done"].as_u64().unwrap_or(0);
            let total = p["bytes_total"].as_u64().unwrap_or(0).max(1);
            let width = 30;
            let filled = (done * width / total).min(width) as usize;
            write!(
                err,
                "\r{} [{}{}] {}/{} partitions, {}/{} files, {:.1}/{:.1} MiB",
                p["table"].as_str().unwrap_or(""),
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                p["partitions_done"],
                p["partitions_total"],
                p["files_done"],
                p["files_total"],
                mib(done),
                mib(total)
            )?;
            drew = true;
        } else if let Some(e) = v.get("error") {
            anyhow::bail!("{}", e.as_str().unwrap_or("maintenance failed"));
        } else if let Some(reports) = v["reports"].as_array() {
            if drew {
                writeln!(err)?;
            }
            for r in reports {
                println!(
                    "{}: {} — {} partition(s), {} files ({:.1} MiB) → {} files ({:.1} MiB), {} vacuumed, {} ms",
                    r["table"].as_str().unwrap_or(""),
                    r["outcome"].as_str().unwrap_or(""),
                    r["partitions"],
                    r["files_in"],
                    mib(r["bytes_in"].as_u64().unwrap_or(0)),
                    r["files_out"],
                    mib(r["bytes_out"].as_u64().unwrap_or(0)),
                    r["vacuumed_files"],
                    r["duration_ms"]
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// The document: a JSON file, or `-` (the default) for standard input.
    #[arg(default_value = "-")]
    file: String,
    /// The server's base URL.
    #[arg(long, env = "ALLSOURCE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Result format: json, ndjson, csv, arrow or parquet.
    #[arg(long, default_value = "json")]
    format: String,
}

/// Posts the document to `/v1/query` and copies the answer to stdout; a
/// refusal goes to stderr with a failing exit status.
fn query(args: &QueryArgs) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut doc = Vec::new();
    if args.file == "-" {
        std::io::stdin().read_to_end(&mut doc)?;
    } else {
        doc = std::fs::read(&args.file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file))?;
    }
    let url = format!(
        "{}/v1/query?format={}",
        args.url.trim_end_matches('/'),
        args.format
    );
    let mut response = post(&args.url, &url, Some(doc))?;
    let mut out = std::io::stdout().lock();
    response.copy_to(&mut out)?;
    if args.format == "json" {
        writeln!(out)?;
    }
    Ok(())
}

/// Our logs at info; the storage crates only when something is wrong.
const DEFAULT_LOG: &str = "info,buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off,deltalake=warn,deltalake_core=warn";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ALLSOURCE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    let client = match &cli.command {
        Command::Query(args) => Some(("query", query(args))),
        Command::Compact(args) => Some(("compact", compact(args))),
        Command::Serve(_) => None,
    };
    if let Some((name, result)) = client {
        if let Err(e) = result {
            eprintln!("allsource {name}: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(config) => runtime.block_on(allsource::server::run(
            config,
            allsource::server::shutdown_signal(),
        ))?,
        Command::Query(_) | Command::Compact(_) => unreachable!("handled above"),
    }
    Ok(())
}
