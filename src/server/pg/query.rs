//! Statements, by the simple protocol (text, possibly several at once) and
//! the extended one (parse, bind, describe, execute: placeholders and
//! prepared statements). Queries go to the service as the logged-in
//! caller; session commands are answered here.

use super::command::{Command, check_set, default_setting};
use super::startup::caller;
use super::wire::{self, user_error};
use super::{Connection, Parser};
use crate::auth::Principal;
use crate::service::query::{Interface, Planned};
use arrow::datatypes::{DataType, Schema};
use async_trait::async_trait;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, df, into_pg_type};
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{Close, Parse, ParseComplete, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::response::TransactionStatus;
use pgwire::types::format::FormatOptions;
use std::fmt::Debug;
use std::sync::Arc;

/// A statement prepared by the extended protocol: what it asks and, for
/// a query or `SHOW`, the schema of its result and its placeholders.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    command: Command,
    planned: Option<Arc<Planned>>,
}

impl Parser {
    /// The statements in `sql`, in PostgreSQL's dialect.
    fn statements(&self, sql: &str) -> PgWireResult<Vec<Command>> {
        let statements = self
            .dialect
            .parse(sql)
            .map_err(|e| user_error("ERROR", "42601", format!("syntax error: {e}")))?;
        statements
            .into_iter()
            .map(|s| Command::of(s).map_err(|m| user_error("ERROR", "0A000", m)))
            .collect()
    }
}

impl Connection {
    /// Runs `command` for `caller`, with `params` bound to a query's
    /// placeholders, its rows in `format`.
    async fn run<C>(
        &self,
        client: &mut C,
        caller: &Principal,
        command: &Command,
        params: Option<arrow::array::RecordBatch>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Send + Sync,
        C::PortalStore: PortalStore,
    {
        let in_failed_transaction = client.transaction_status() == TransactionStatus::Error;
        if in_failed_transaction && !matches!(command, Command::Commit | Command::Rollback) {
            return Err(user_error(
                "ERROR",
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block"
                    .into(),
            ));
        }
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        match command {
            Command::Begin => Ok(match client.transaction_status() {
                TransactionStatus::Idle => Response::TransactionStart(Tag::new("BEGIN")),
                _ => Response::Execution(Tag::new("BEGIN")),
            }),
            Command::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Command::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Command::Set { name, value } => {
                check_set(name, value).map_err(|m| user_error("ERROR", "22023", m))?;
                client.metadata_mut().insert(name.clone(), value.clone());
                Ok(Response::Execution(Tag::new("SET")))
            }
            Command::Deallocate(name) => {
                let mut slot = self.slot.lock();
                let names = match name {
                    Some(name) => vec![name.clone()],
                    None => slot.as_ref().map(|s| s.names()).unwrap_or_default(),
                };
                for name in names {
                    client.portal_store().rm_statement(&name);
                    if let Some(slot) = slot.as_mut() {
                        slot.close(&name);
                    }
                }
                Ok(Response::Execution(Tag::new("DEALLOCATE")))
            }
            Command::Show(name) => {
                let value = match client.metadata().get(name) {
                    Some(v) => v.clone(),
                    None => default_setting(name, caller.is_admin())
                        .ok_or_else(|| unknown_setting(name))?
                        .to_string(),
                };
                Ok(Response::Query(wire::setting(name, &value, options)?))
            }
            Command::Query(sql) => {
                let handle = self.cancel.lock().as_ref().map(|(h, _)| h.clone());
                let mut cancelled = match handle {
                    Some(handle) => wire::Cancelled::of(handle.start_query().await),
                    None => wire::Cancelled::never(),
                };
                let started = self.service.sql(caller, sql, params, Interface::Postgres);
                let stream = tokio::select! {
                    stream = started => stream.map_err(|e| wire::error(&e))?,
                    _ = cancelled.fired() => return Err(wire::cancelled()),
                };
                Ok(Response::Query(wire::rows(
                    stream, format, options, cancelled,
                )?))
            }
        }
    }
}

fn unknown_setting(name: &str) -> PgWireError {
    user_error(
        "ERROR",
        "42704",
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let caller = caller(client)?;
        let commands = self.parser.statements(query)?;
        if commands.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(commands.len());
        for command in &commands {
            let response = self
                .run(client, &caller, command, None, &Format::UnifiedText)
                .await?;
            responses.push(response);
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let caller = caller(client)?;
        let mut commands = self.statements(sql)?;
        if commands.len() > 1 {
            return Err(user_error(
                "ERROR",
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let Some(command) = commands.pop() else {
            return Ok(None);
        };
        let planned = match &command {
            Command::Query(sql) => Some(
                self.service
                    .plan(&caller, sql, None, Interface::Postgres)
                    .await
                    .map_err(|e| wire::error(&e))?,
            ),
            Command::Show(name) => Some(Planned {
                dataset: Arc::new(wire::setting_schema(name)),
                parameters: Schema::empty(),
            }),
            _ => None,
        };
        Ok(Some(Prepared {
            command,
            planned: planned.map(Arc::new),
        }))
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some(planned) = &statement.planned else {
            return Ok(Vec::new());
        };
        planned
            .parameters
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Null => Ok(Type::UNKNOWN),
                ty => into_pg_type(ty),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &statement.planned {
            Some(planned) => arrow_schema_to_pg_fields(
                &planned.dataset,
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// Parses and plans the statement, counting a named one against what
    /// the connection and its tenant may hold.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let parsed = StoredStatement::parse(client, &message, self.query_parser()).await?;
        // Counted once parsed: a statement that fails to parse replaces
        // nothing, so what the slot counts stays what the store holds.
        let max_bytes = self.service.config().max_prepared_bytes;
        let bytes = name.len() + message.query.len();
        if let Some(slot) = self.slot.lock().as_mut() {
            slot.prepare(&name, bytes, max_bytes)
                .map_err(|m| user_error("ERROR", "53400", m))?;
        }
        match parsed {
            Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
            None => client.portal_store().put_empty_statement(&name),
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            client.portal_store().rm_statement(name);
            if let Some(slot) = self.slot.lock().as_mut() {
                slot.close(name);
            }
        } else {
            client.portal_store().rm_portal(name);
        }
        client
            .send(PgWireBackendMessage::CloseComplete(
                pgwire::messages::extendedquery::CloseComplete::new(),
            ))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let caller = caller(client)?;
        let prepared = &portal.statement.statement;
        let params = match &prepared.planned {
            Some(planned) if matches!(prepared.command, Command::Query(_)) => {
                let inferred: Vec<Option<DataType>> = planned
                    .parameters
                    .fields()
                    .iter()
                    .map(|f| Some(f.data_type().clone()).filter(|t| *t != DataType::Null))
                    .collect();
                let inferred: Vec<Option<&DataType>> =
                    inferred.iter().map(Option::as_ref).collect();
                wire::parameters(df::deserialize_parameters(portal, &inferred)?)?
            }
            _ => None,
        };
        self.run(
            client,
            &caller,
            &prepared.command,
            params,
            &portal.result_column_format,
        )
        .await
    }
}
