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
    let mut response = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()?
        .post(&url)
        .header("content-type", "application/json")
        .body(doc)
        .send()
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", args.url))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(text);
        anyhow::bail!("{status}: {message}");
    }
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
    if let Command::Query(args) = &cli.command {
        if let Err(e) = query(args) {
            eprintln!("allsource query: {e}");
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
        Command::Query(_) => unreachable!("handled above"),
    }
    Ok(())
}
