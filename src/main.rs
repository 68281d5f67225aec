//! The `allsource` command: parses the arguments and hands them to the
//! command's module under `cli/`.

mod cli;

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
    Query(cli::query::QueryArgs),
    /// An SQL shell against a server: interactive, or the statements of
    /// -c, -f or standard input.
    Sql(cli::shell::SqlArgs),
    /// Write a query's result to a file (json, ndjson, csv, arrow or
    /// parquet).
    Export(cli::export::ExportArgs),
    /// Import files of events (NDJSON, JSON, CSV, Parquet; gzip or zstd)
    /// into a table over Arrow Flight, with progress; an interrupted
    /// import resumes where it stopped.
    Import(cli::import::ImportArgs),
    /// Compact tables now (and checkpoint, apply retention, vacuum),
    /// showing progress.
    Compact(cli::compact::CompactArgs),
    /// Back up this tenant's tables on the server (--to NAME), or check a
    /// backup on disk (--verify DIR).
    Backup(cli::backup::BackupArgs),
    /// Restore a backup into a new data directory (offline).
    Restore(cli::backup::RestoreArgs),
    /// Print one entity's events in version order.
    Stream(cli::stream::StreamArgs),
    /// Deliver a stored range of events again: printed as NDJSON, or
    /// written to another table.
    Replay(cli::replay::ReplayArgs),
    /// Define, list, show and delete projections, read one's state, and
    /// rebuild or promote one.
    Projections(cli::projections::ProjectionsArgs),
    /// Define, list, show and delete pipelines, and pause or resume one.
    Pipelines(cli::pipelines::PipelinesArgs),
    /// List, show and register tables' schemas and validation rules, and
    /// set the event types a table accepts.
    Schemas(cli::schemas::SchemasArgs),
    /// Check a file of events against a table's rules without storing
    /// them; fails when any would be refused.
    Validate(cli::schemas::ValidateArgs),
    /// List, show, apply and delete policies, put the defaults back, and
    /// explain a decision.
    Policies(cli::policies::PoliciesArgs),
    /// Run a Ballista scheduler for distributed queries (`serve
    /// --ballista df://HOST:PORT`), with AllSource's functions.
    Scheduler(cli::cluster::SchedulerArgs),
    /// Run a Ballista executor for that scheduler, with AllSource's
    /// functions; it reads the tables' files from the store.
    Executor(cli::cluster::ExecutorArgs),
    /// Mint a JWT for local use, signed with the server's HS256 secret
    /// (or an RS256/ES256 private key), and print it.
    Token(cli::token::TokenArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let otlp = match &cli.command {
        Command::Serve(config) => config.otlp_endpoint.as_deref(),
        _ => None,
    };
    let provider = cli::telemetry::init(otlp)?;
    let (name, result) = match cli.command {
        Command::Serve(config) => return cli::serve::run(*config, provider),
        Command::Query(args) => ("query", cli::query::run(&args)),
        Command::Sql(args) => ("sql", cli::shell::run(&args)),
        Command::Export(args) => ("export", cli::export::run(&args)),
        Command::Import(args) => ("import", cli::import::run(&args)),
        Command::Compact(args) => ("compact", cli::compact::run(&args)),
        Command::Stream(args) => ("stream", cli::stream::run(&args)),
        Command::Replay(args) => ("replay", cli::replay::run(&args)),
        Command::Backup(args) => ("backup", cli::backup::run(&args)),
        Command::Restore(args) => ("restore", cli::backup::restore(&args)),
        Command::Projections(args) => ("projections", cli::projections::run(&args)),
        Command::Pipelines(args) => ("pipelines", cli::pipelines::run(&args)),
        Command::Schemas(args) => ("schemas", cli::schemas::run(&args)),
        Command::Validate(args) => ("validate", cli::schemas::validate(&args)),
        Command::Policies(args) => ("policies", cli::policies::run(&args)),
        Command::Token(args) => ("token", cli::token::run(&args)),
        Command::Scheduler(args) => ("scheduler", cli::cluster::scheduler(&args)),
        Command::Executor(args) => ("executor", cli::cluster::executor(&args)),
    };
    // A client command's failure is one line on stderr and a failing
    // exit status.
    if let Err(e) = result {
        eprintln!("allsource {name}: {e}");
        std::process::exit(1);
    }
    Ok(())
}
