//! The server process: opens the database, serves HTTP and Flight SQL,
//! starts the database's background work (`db::Background`: the flusher
//! and the maintenance schedule), and on shutdown stops accepting,
//! finishes in-flight requests, stops the background work and flushes
//! every buffer.

mod admin;
mod console;
pub mod error;
pub mod flight;
mod groups;
pub mod http;
mod ingest;
mod live;
mod mcp;
mod openapi;
mod pg;
mod pipelines;
mod policies;
mod projections;
mod queries;
mod replay;
mod schemas;
mod ws;

use crate::config::Config;
use crate::db::{self, Database};
use crate::service::Service;
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
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Keys(#[from] crate::auth::KeyError),
    #[error(transparent)]
    TenantLimits(#[from] crate::ratelimit::LimitsFileError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the server until `shutdown` completes.
///
/// The port is bound first and answers at once: while the WAL is replayed
/// `/health` says `starting`, `/ready` is 503 and every other route is 503
/// with Retry-After. Once the database is open the full API takes over.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    check_exposure(&config)?;
    let verifier = crate::auth::Verifier::from_config(&config.auth)?.map(Arc::new);
    let (listener, addr) = bind(config.http_addr).await?;
    let (flight_listener, flight_addr) = bind(config.flight_addr).await?;
    let pg_listener = match config.pg_addr.addr() {
        Some(pg_addr) => Some(bind(pg_addr).await?),
        None => None,
    };
    // Tests and scripts read these lines to learn the ports.
    println!("allsource listening on http://{addr}");
    println!("allsource flight sql listening on grpc://{flight_addr}");
    if let Some((_, pg_addr)) = &pg_listener {
        println!("allsource postgres listening on postgres://{pg_addr}");
    }
    let pg_addr = pg_listener.as_ref().map(|(_, a)| a.to_string());
    tracing::info!(%addr, %flight_addr, pg_addr, data_dir = %config.data_dir.display(), "serving HTTP, Flight SQL and PostgreSQL");
    let current = Arc::new(parking_lot::RwLock::new(http::starting_router()));
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve(
        listener,
        current.clone(),
        config.clone(),
        stop.clone(),
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    let db = tokio::select! {
        db = Database::open(config.clone()) => db?,
        _ = &mut shutdown => {
            stop.cancel();
            let _ = serving.await;
            return Ok(());
        }
    };

    // Stopped at shutdown, or on drop if start-up fails from here on.
    let background = db::Background::start(&db).map_err(Error::Serve)?;

    let rate_limits = Arc::new(crate::ratelimit::RateLimits::from_config(&config)?);
    let service =
        Service::new(db.clone(), verifier, rate_limits).map_err(|e| Error::Config(e.message))?;
    if let Some(scheduler) = service
        .start_cluster()
        .await
        .map_err(|e| Error::Config(e.message))?
    {
        println!("allsource ballista scheduler at {scheduler}");
    }
    service.start_projections().await;
    service.start_pipelines();
    service.start_quota_saver();
    let state = http::AppState {
        service: service.clone(),
        max_body_bytes: config.max_body_bytes,
        max_result_bytes: config.max_result_bytes,
    };
    let flight = flight::FlightSql::new(service.clone()).map_err(Error::Config)?;
    let flight_stop = CancellationToken::new();
    let flight_serving = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.header_timeout))
            .http2_keepalive_timeout(Some(config.header_timeout))
            .add_service(flight::service(flight, config.max_body_bytes))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(flight_listener)
                    .with_nodelay(Some(true)),
                flight_stop.clone().cancelled_owned(),
            ),
    );
    let pg_stop = CancellationToken::new();
    if let Some((pg_listener, _)) = pg_listener {
        tokio::spawn(pg::serve(
            pg_listener,
            service.clone(),
            config.pg_max_connections,
            pg_stop.clone(),
        ));
    }
    *current.write() = http::router(state);
    service.audit(crate::audit::AuditEntry {
        kind: crate::audit::AuditKind::ServerStart,
        action: "serve".into(),
        status: 200,
        detail: format!("listening on {addr}"),
        ..Default::default()
    });
    tracing::info!("ready");
    shutdown.await;
    service.close_subscriptions();
    stop.cancel();
    flight_stop.cancel();
    pg_stop.cancel();
    let served = serving.await;
    // In-flight calls finish; a stuck client does not hold the shutdown.
    match tokio::time::timeout(std::time::Duration::from_secs(30), flight_serving).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the Flight SQL server failed"),
        Err(_) => tracing::warn!("Flight SQL calls were still running after 30 s; closing them"),
        _ => {}
    }
    let snapshots = service.snapshot_projections().await;
    tracing::info!(
        snapshots,
        "shutting down: projections snapshotted, flushing buffers"
    );
    // After the last requests were answered: their use is in the file.
    if let Err(e) = service.save_quotas() {
        tracing::warn!(error = %e, "cannot write the quota file");
    }
    background.stop().await;
    finish(&db).await?;
    match served {
        Ok(r) => r.map_err(Error::Serve),
        Err(e) => Err(Error::Serve(std::io::Error::other(e))),
    }
}

/// Listens on `addr`; returns the listener and the address it got (port 0
/// picks a free one).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Without authentication the server may only listen on loopback, unless
/// the operator says `--insecure`.
fn check_exposure(config: &Config) -> Result<()> {
    if config.auth.enabled() || config.auth.insecure {
        return Ok(());
    }
    let addrs = [config.http_addr, config.flight_addr]
        .into_iter()
        .chain(config.pg_addr.addr());
    for addr in addrs {
        if !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to listen on {addr} without authentication: anyone who can reach it could read, write and delete every tenant's data. Configure a JWT key (--jwt-secret, --jwt-public-key or --jwt-jwks), listen on 127.0.0.1, or pass --insecure to accept the risk"
            )));
        }
    }
    Ok(())
}

/// Accepts connections until `stop`, serving each with whatever router is
/// current. Clients must send their headers within `--header-timeout` and
/// their bodies within `--body-timeout`; idle keep-alive connections are
/// closed after the header timeout too.
async fn serve(
    listener: tokio::net::TcpListener,
    current: Arc<parking_lot::RwLock<axum::Router>>,
    config: Config,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(config.header_timeout))
        .keep_alive_timeout(config.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let body_timeout = config.body_timeout;
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off a bit.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let current = current.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let router = current.read().clone();
                let request = request.map(|body| {
                    axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body))
                });
                router.oneshot(request)
            });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // In-flight requests finish; a stuck client does not hold the
    // shutdown for ever.
    if tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after 30 s; closing them");
    }
    Ok(())
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
