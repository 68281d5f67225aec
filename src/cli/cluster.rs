//! `allsource scheduler` and `allsource executor`: the processes of a
//! Ballista cluster that runs a server's distributed queries
//! (`allsource serve --ballista df://HOST:PORT`), each with every
//! AllSource function and the codec for its tables. They run until
//! SIGTERM or ctrl-c.

use allsource::config::Config;
use allsource::query::distributed::{cluster_state, process};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the tables' files are, as the server names them.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// The server's --storage-url (an s3:// root needs it; local files are
    /// read without it).
    #[arg(long, env = "ALLSOURCE_STORAGE_URL")]
    storage_url: Option<String>,
    /// Endpoint of an S3-compatible store.
    #[arg(long, env = "ALLSOURCE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Allow plain http:// to the S3 endpoint.
    #[arg(long, env = "ALLSOURCE_S3_ALLOW_HTTP", default_value_t = false)]
    s3_allow_http: bool,
    /// Memory the process's queries may use, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    memory_limit: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SchedulerArgs {
    /// Where to listen (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExecutorArgs {
    /// The scheduler: host:port or df://host:port.
    #[arg(long, default_value = "127.0.0.1:50050")]
    scheduler: String,
    /// Where to listen for result and shuffle reads (port 0: any free
    /// port, printed at start).
    #[arg(long, default_value = "127.0.0.1:50051")]
    bind: SocketAddr,
    /// The host the scheduler and servers reach this executor at (default:
    /// the address it listens on).
    #[arg(long)]
    advertise_host: Option<String>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long)]
    slots: Option<usize>,
    /// Where shuffle files are written (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// The session state of a cluster process, with the file store of `args`.
fn state(args: &StoreArgs) -> anyhow::Result<datafusion::execution::SessionState> {
    let mut stores = Vec::new();
    if let Some(url) = &args.storage_url {
        let scratch = tempfile::tempdir()?;
        let config = Config {
            data_dir: scratch.path().to_path_buf(),
            storage_url: Some(url.clone()),
            s3_endpoint: args.s3_endpoint.clone(),
            s3_allow_http: args.s3_allow_http,
            ..Config::default()
        };
        let storage = allsource::storage::Storage::new(&config)?;
        stores.push(storage.file_store());
    }
    Ok(cluster_state(&stores, args.memory_limit, None)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn scheduler(args: &SchedulerArgs) -> anyhow::Result<()> {
    let state = state(&args.store)?;
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.bind).await?;
        let address = listener.local_addr()?;
        process::start_scheduler(listener, state)
            .await
            .map_err(anyhow::Error::msg)?;
        // Tests and scripts read this line to learn the port.
        println!("allsource scheduler listening on df://{address}");
        allsource::server::shutdown_signal().await;
        Ok(())
    })
}

pub(crate) fn executor(args: &ExecutorArgs) -> anyhow::Result<()> {
    let state = state(&args.store)?;
    let scheduler = allsource::query::distributed::Cluster::remote(&args.scheduler)
        .map_err(anyhow::Error::msg)?;
    // A scratch directory, kept until the executor stops, when none is given.
    let (work_dir, _scratch) = match &args.work_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let scratch = tempfile::tempdir()?;
            (scratch.path().to_path_buf(), Some(scratch))
        }
    };
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.bind).await?;
        let address = listener.local_addr()?;
        let settings = process::ExecutorSettings {
            scheduler: scheduler.scheduler().to_string(),
            advertise_host: args
                .advertise_host
                .clone()
                .unwrap_or_else(|| address.ip().to_string()),
            slots: args
                .slots
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            work_dir,
        };
        process::start_executor(listener, settings, state)
            .await
            .map_err(anyhow::Error::msg)?;
        println!("allsource executor listening on {address}");
        allsource::server::shutdown_signal().await;
        Ok(())
    })
}
