//! The `allsource` command.

use allsource::config::Config;
use clap::{Parser, Subcommand};

// Query execution allocates from many threads at once (per-group state,
// Arrow buffers); glibc's allocator serialises them on arena locks. Built
// without transparent huge pages (the `no_thp` feature, Cargo.toml).
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
    Serve(Box<Config>),
    /// Run a query document (docs/dsl.md) against a server and print the
    /// result.
    Query(QueryArgs),
    /// Compact tables now (and checkpoint, apply retention, vacuum),
    /// showing progress.
    Compact(CompactArgs),
    /// Mint a JWT for local use, signed with the server's HS256 secret
    /// (or an RS256/ES256 private key), and print it.
    Token(TokenArgs),
}

/// How the client commands reach the server.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The server's base URL.
    #[arg(long, env = "ALLSOURCE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Bearer token (see `allsource token`), when the server has auth on.
    #[arg(long, env = "ALLSOURCE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Act on this tenant (admin tokens; others may name only their own).
    #[arg(long, env = "ALLSOURCE_TENANT")]
    tenant: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The tenant the token acts on (optional for admin).
    #[arg(long)]
    tenant: Option<String>,
    /// admin, writer or reader.
    #[arg(long)]
    role: allsource::auth::Role,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// The `sub` claim: who holds the token (shown in the audit log).
    #[arg(long)]
    subject: Option<String>,
    #[arg(long, env = "ALLSOURCE_JWT_ISSUER")]
    issuer: Option<String>,
    #[arg(long, env = "ALLSOURCE_JWT_AUDIENCE")]
    audience: Option<String>,
    /// HS256 secret (the server's --jwt-secret).
    #[arg(long, env = "ALLSOURCE_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// File holding the HS256 secret.
    #[arg(long, env = "ALLSOURCE_JWT_SECRET_FILE")]
    secret_file: Option<std::path::PathBuf>,
    /// PEM private key, to sign RS256/ES256 tokens instead.
    #[arg(long)]
    private_key: Option<std::path::PathBuf>,
    /// Algorithm of --private-key: RS256 or ES256.
    #[arg(long, default_value = "RS256")]
    algorithm: String,
    /// Key id to put in the token's header.
    #[arg(long)]
    kid: Option<String>,
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let auth = allsource::auth::AuthConfig {
        jwt_secret: args.secret.clone(),
        jwt_secret_file: args.secret_file.clone(),
        ..Default::default()
    };
    let secret = auth.secret().map_err(anyhow::Error::msg)?;
    let pem = match &args.private_key {
        Some(p) => Some(
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let request = allsource::auth::TokenRequest {
        tenant: args.tenant.clone(),
        role: args.role,
        ttl: args.ttl,
        subject: args.subject.clone(),
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        kid: args.kid.clone(),
    };
    let token = allsource::auth::mint(
        &request,
        secret.as_deref(),
        pem.as_deref().map(|p| (args.algorithm.as_str(), p)),
    )
    .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}

#[derive(Debug, clap::Args)]
struct CompactArgs {
    /// Only this table (default: every table).
    #[arg(long)]
    table: Option<String>,
    /// Report what would be compacted, changing nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// POSTs to `url` (with a JSON body, if any) on the server; a refusal
/// becomes an error carrying its status and the server's message.
fn post(
    client: &ClientArgs,
    url: &str,
    json: Option<Vec<u8>>,
) -> anyhow::Result<reqwest::blocking::Response> {
    let base = &client.url;
    let mut request = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()?
        .post(url);
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    if let Some(tenant) = &client.tenant {
        request = request.header("x-allsource-tenant", tenant);
    }
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
        args.client.url.trim_end_matches('/'),
        args.dry_run
    );
    if let Some(t) = &args.table {
        url.push_str(&format!("&table={t}"));
    }
    let response = post(&args.client, &url, None)?;
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
    #[command(flatten)]
    client: ClientArgs,
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
        args.client.url.trim_end_matches('/'),
        args.format
    );
    let mut response = post(&args.client, &url, Some(doc))?;
    let mut out = std::io::stdout().lock();
    response.copy_to(&mut out)?;
    if args.format == "json" {
        writeln!(out)?;
    }
    Ok(())
}

/// Our logs at info; the storage crates only when something is wrong.
const DEFAULT_LOG: &str = "info,buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off,deltalake=warn,deltalake_core=warn";

/// Logs to stderr, filtered by `ALLSOURCE_LOG`; with an OTLP endpoint the
/// same spans are also exported there in batches. The returned provider
/// must be shut down at exit to send the last batch.
fn init_tracing(
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALLSOURCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let Some(endpoint) = otlp_endpoint else {
        registry.init();
        return Ok(None);
    };
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("allsource")
                .build(),
        )
        .build();
    let tracer = provider.tracer("allsource");
    registry
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .init();
    Ok(Some(provider))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let otlp = match &cli.command {
        Command::Serve(config) => config.otlp_endpoint.clone(),
        _ => None,
    };
    let provider = init_tracing(otlp.as_deref())?;
    let client = match &cli.command {
        Command::Query(args) => Some(("query", query(args))),
        Command::Compact(args) => Some(("compact", compact(args))),
        Command::Token(args) => Some(("token", token(args))),
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
        Command::Serve(config) => {
            // Test builds inject errors named in FAILPOINTS (see wal).
            #[cfg(feature = "failpoints")]
            let _failpoints = fail::FailScenario::setup();
            let served = runtime.block_on(allsource::server::run(
                *config,
                allsource::server::shutdown_signal(),
            ));
            if let Some(provider) = provider
                && let Err(e) = provider.shutdown()
            {
                eprintln!("allsource: exporting the last traces failed: {e}");
            }
            served?
        }
        Command::Query(_) | Command::Compact(_) | Command::Token(_) => {
            unreachable!("handled above")
        }
    }
    Ok(())
}
