//! Logging in: with auth on, the client's password is its bearer token
//! (asked for in clear text; put TLS in front of a non-loopback port), and
//! the database it names is the tenant it acts on (`allsource`,
//! `postgres` or none: the token's own). Without auth, as over HTTP,
//! everyone is an admin of the tenant they name.

use super::Connection;
use super::wire::user_error;
use crate::auth::Principal;
use crate::service::caller::{Credentials, RequestInfo};
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;
use std::sync::{Arc, LazyLock};

/// Database names that mean "the token's own tenant".
const NO_TENANT: &[&str] = &["", "allsource", "postgres"];

static PIDS: LazyLock<RandomPidSecretKeyGenerator> = LazyLock::new(Default::default);

#[async_trait::async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.service.auth_enabled() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    self.log_in(client, None).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                self.log_in(client, Some(&password.password)).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl Connection {
    /// Authenticates the client with `token`, takes a connection of its
    /// tenant, and tells the client it is in.
    async fn log_in<C>(&self, client: &mut C, token: Option<&str>) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let metadata = client.metadata();
        let database = metadata
            .get(METADATA_DATABASE)
            .or_else(|| metadata.get(METADATA_USER))
            .map(String::as_str)
            .filter(|d| !NO_TENANT.contains(d));
        let principal = self
            .service
            .authenticate(
                Credentials {
                    token,
                    tenant: database,
                },
                RequestInfo {
                    action: "postgres login".into(),
                    request_id: None,
                },
            )
            .map_err(|e| {
                let code = match e.kind {
                    crate::service::Kind::Unauthenticated => "28P01",
                    _ => "28000",
                };
                user_error("FATAL", code, e.message)
            })?;
        let slot = self
            .tenants
            .open(&principal.tenant)
            .map_err(|message| user_error("FATAL", "53300", message))?;
        *self.slot.lock() = Some(slot);
        let admin = principal.is_admin();
        client
            .session_extensions()
            .get_or_insert_with(|| principal.clone());
        let (pid, secret) = PIDS.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        *self.cancel.lock() = Some(self.cancels.register(pid, secret));
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = "16.6".into();
        parameters.is_superuser = admin;
        parameters.default_transaction_read_only = true;
        finish_authentication(client, &parameters).await
    }
}

/// The caller a logged-in connection acts as.
pub(super) fn caller<C: ClientInfo>(client: &C) -> PgWireResult<Arc<Principal>> {
    client
        .session_extensions()
        .get::<Principal>()
        .ok_or_else(|| user_error("FATAL", "28000", "not logged in".into()))
}
