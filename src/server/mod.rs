//! The server process: opens the database, serves HTTP, runs the flusher,
//! and on shutdown stops accepting, finishes in-flight requests and
//! flushes every buffer.

pub mod error;
pub mod http;

pub use error::ApiError;

use crate::config::Config;
use crate::db::{self, Database};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the server until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.http_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.http_addr,
        source,
    })?;
    let db = Database::open(config.clone()).await?;

    let cancel = CancellationToken::new();
    let flusher = spawn_flusher(db.clone(), cancel.clone())?;
    let maintenance = spawn_background("maintenance", {
        let db = db.clone();
        let cancel = cancel.clone();
        move || db.run_maintenance_schedule(cancel)
    })?;

    let app = http::router(http::AppState::new(db.clone(), config.max_body_bytes));
    // Tests and scripts read this line to learn the port.
    println!("allsource listening on http://{addr}");
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving HTTP");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("shutting down: flushing buffers");
    cancel.cancel();
    let _ = tokio::task::spawn_blocking(move || flusher.join()).await;
    let _ = tokio::task::spawn_blocking(move || maintenance.join()).await;
    finish(&db).await?;
    served.map_err(Error::Serve)
}

/// Runs the flusher on a thread of its own, with its own runtime, at a
/// lower CPU priority: encoding Parquet is heavy, and it must not hold up
/// the threads that answer ingest requests (whose latency clients see).
fn spawn_flusher(
    db: Arc<Database>,
    cancel: CancellationToken,
) -> Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("flusher")
        .build()
        .map_err(Error::Serve)?;
    std::thread::Builder::new()
        .name("flusher".into())
        .spawn(move || {
            lower_priority();
            runtime.block_on(db.run_flusher(cancel));
        })
        .map_err(Error::Serve)
}

/// Runs `task` on a low-priority thread of its own with its own runtime,
/// like the flusher: table maintenance rewrites files and must not slow
/// ingest or flushes.
fn spawn_background<F, Fut>(name: &str, task: F) -> Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(Error::Serve)?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            runtime.block_on(task());
        })
        .map_err(Error::Serve)
}

/// Makes the calling thread yield the CPU to the others when both want it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread's own id.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if rc != 0 {
            tracing::debug!("could not lower the flusher's priority");
        }
    }
}

async fn finish(db: &Arc<Database>) -> Result<()> {
    db.shutdown().await?;
    tracing::info!("all buffers flushed");
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
