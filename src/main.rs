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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(config) => runtime.block_on(allsource::server::run(
            config,
            allsource::server::shutdown_signal(),
        ))?,
    }
    Ok(())
}
