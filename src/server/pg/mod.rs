//! The PostgreSQL wire protocol (`--pg-addr`), for `psql`, `psycopg` and
//! the BI tools that speak it. A client logs in with its token as the
//! password and names its tenant as the database; every statement then
//! runs through the same service calls as HTTP and Flight SQL, as that
//! caller. This module only translates: messages with `pgwire`, result
//! rows with `arrow-pg`, and PostgreSQL's dialect and catalog with
//! `datafusion-postgres`.

mod command;
mod connections;
mod query;
mod startup;
mod wire;

use crate::service::Service;
use connections::{Slot, TenantConnections};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ConnectionGuard, ConnectionHandle, ConnectionManager, PgWireServerHandlers};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Sockets open at once, logged in or not, beyond which new ones are
/// closed at once: what bounds connections before their tenant is known.
const MAX_SOCKETS: usize = 1024;

/// Accepts PostgreSQL connections on `listener` until `stop`, which also
/// closes the open ones.
pub(super) async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    max_per_tenant: usize,
    stop: CancellationToken,
) {
    let tenants = Arc::new(TenantConnections::new(max_per_tenant));
    let cancels = Arc::new(ConnectionManager::new());
    let sockets = Arc::new(tokio::sync::Semaphore::new(MAX_SOCKETS));
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "postgres accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let Ok(permit) = sockets.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "postgres connection refused: {MAX_SOCKETS} sockets are open");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let handlers = Handlers(Arc::new(Connection {
            service: service.clone(),
            tenants: tenants.clone(),
            cancels: cancels.clone(),
            cancel: Default::default(),
            slot: Default::default(),
            parser: Arc::new(Parser {
                service: service.clone(),
                dialect: PostgresCompatibilityParser::new(),
            }),
        }));
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                done = pgwire::tokio::process_socket(socket, None, handlers) => {
                    if let Err(e) = done {
                        tracing::debug!(%peer, error = %e, "postgres connection ended");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// One client connection: who it is once logged in, and what it holds.
struct Connection {
    service: Arc<Service>,
    tenants: Arc<TenantConnections>,
    /// The tenant's connection this one counts as, once logged in; given
    /// back (with its prepared statements' bytes) when it closes.
    slot: parking_lot::Mutex<Option<Slot>>,
    parser: Arc<Parser>,
    /// Every logged-in connection by its key, for cancel requests.
    cancels: Arc<ConnectionManager>,
    /// This connection's entry there, once logged in: what a cancel
    /// request for it fires.
    cancel: parking_lot::Mutex<Option<(Arc<ConnectionHandle>, ConnectionGuard)>>,
}

/// Reads statements and plans the prepared ones.
struct Parser {
    service: Arc<Service>,
    /// PostgreSQL's dialect, rewriting what clients' catalog queries use
    /// that DataFusion does not plan as PostgreSQL does.
    dialect: PostgresCompatibilityParser,
}

/// The handlers of one connection, all served by it.
struct Handlers(Arc<Connection>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.0.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.0.cancels.clone()))
    }
}
