//! The Flight SQL calls: arrow-flight's [`FlightSqlService`] for
//! [`FlightSql`].

use super::facts::{
    SCHEMAS, SQL_INFO, SYSTEM_TABLE, TABLE, XDBC_INFO, foreign_keys_schema, primary_keys_schema,
};
use super::ingest::table_name;
use super::prepared::{Prepared, read_parameters};
use super::results::{DoGetResult, built, flight_info, ipc_schema, stream_results, wire_schema};
use super::tickets::decode_params;
use super::{FlightSql, df_status, handshake_token, invalid, raw_of, require};
use crate::auth::Role;
use crate::query::{CATALOG, SCHEMA};
use crate::service::query::Interface;
use arrow::datatypes::Schema;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo, TableExistsOption,
    TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, PutResult, Ticket,
};
use futures::{Stream, TryStreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = handshake_token(&request)?;
        let credentials = crate::service::caller::Credentials {
            token: Some(&token),
            tenant: None,
        };
        let info = crate::service::caller::RequestInfo {
            action: "flight handshake".into(),
            request_id: None,
        };
        self.service().authenticate(credentials, info)?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if !token.is_empty() {
            let bearer = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::unauthenticated("the token is not valid header text"))?;
            response.metadata_mut().insert("authorization", bearer);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request, "GetFlightInfo")?;
        require(&caller, Role::Reader, "query")?;
        if query.transaction_id.is_some() {
            return Err(invalid("transactions are not supported"));
        }
        let planned = self.plan(&caller, &query.query, None).await?;
        let ticket = self.statement_ticket(&caller, &query.query, None, raw_of(&request))?;
        flight_info(&planned.dataset, ticket, request.into_inner())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request, "GetFlightInfo")?;
        require(&caller, Role::Reader, "query")?;
        let prepared =
            self.inner
                .prepared
                .with(&cmd.prepared_statement_handle, &caller.tenant, |p| {
                    p.clone()
                })?;
        let params = prepared.params.map(|p| p.batch);
        let planned = self.plan(&caller, &prepared.sql, params.clone()).await?;
        let ticket =
            self.statement_ticket(&caller, &prepared.sql, params.as_ref(), raw_of(&request))?;
        flight_info(&planned.dataset, ticket, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<arrow_flight::Ticket>,
    ) -> DoGetResult {
        let caller = self.caller(&request, "DoGet")?;
        require(&caller, Role::Reader, "query")?;
        let body = self.inner.tickets.open(&ticket.statement_handle)?;
        if body.tenant != caller.tenant.as_str() {
            return Err(Status::permission_denied(
                "this ticket was issued to another tenant",
            ));
        }
        let params = body.params.as_deref().map(decode_params).transpose()?;
        let (stream, _) = self
            .service()
            .sql_read(
                &caller,
                &body.sql,
                params,
                None,
                body.raw,
                Interface::Flight,
            )
            .await?;
        Ok(Response::new(stream_results(stream)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request, "CreatePreparedStatement")?;
        require(&caller, Role::Reader, "query")?;
        if query.transaction_id.is_some() {
            return Err(invalid("transactions are not supported"));
        }
        let planned = self.plan(&caller, &query.query, None).await?;
        let handle = self.inner.prepared.insert(Prepared {
            tenant: caller.tenant.clone(),
            sql: query.query,
            params: None,
            used: Instant::now(),
        })?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc_schema(&planned.dataset)?,
            parameter_schema: ipc_schema(&planned.parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(&request, "DoPut")?;
        require(&caller, Role::Reader, "query")?;
        let handle = cmd.prepared_statement_handle.clone();
        // Check the handle before reading the parameters.
        self.inner.prepared.with(&handle, &caller.tenant, |_| ())?;
        let limit = self.service().max_query_bytes();
        let params = read_parameters(request.into_inner(), limit).await?;
        self.inner.prepared.bind(&handle, &caller.tenant, params)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(&request, "ClosePreparedStatement")?;
        self.inner
            .prepared
            .remove(&query.prepared_statement_handle, &caller.tenant)
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request, "DoPut")?;
        Err(self
            .service()
            .refuse_update(
                &caller,
                &cmd.query,
                "statements that change data are not supported; load events with bulk ingest (ADBC adbc_ingest, Flight DoPut) or POST /v1/events",
            )
            .into())
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request, "DoPut")?;
        self.service().admit_ingest(&caller)?;
        if cmd.transaction_id.is_some() {
            return Err(invalid(
                "transactions are not supported: each batch commits on its own",
            ));
        }
        if cmd.temporary {
            return Err(invalid("temporary tables are not supported"));
        }
        if let Some(catalog) = cmd
            .catalog
            .as_deref()
            .filter(|c| !c.is_empty() && *c != CATALOG)
        {
            return Err(Status::not_found(format!(
                "no catalog {catalog:?}: the only catalog is {CATALOG:?}"
            )));
        }
        if let Some(schema) = cmd
            .schema
            .as_deref()
            .filter(|s| !s.is_empty() && *s != SCHEMA)
        {
            return Err(Status::not_found(format!(
                "no writable schema {schema:?}: events are ingested into schema {SCHEMA:?}"
            )));
        }
        let table = table_name(&cmd.table)?;
        let exists = self.service().db().table(&caller.tenant, &table).is_some();
        let options = cmd.table_definition_options.unwrap_or_default();
        match (exists, options.if_exists(), options.if_not_exist()) {
            (true, TableExistsOption::Fail, _) => {
                return Err(Status::already_exists(format!(
                    "table {table} exists: ingest with mode \"append\" (or \"create_append\") to add to it"
                )));
            }
            (true, TableExistsOption::Replace, _) => {
                return Err(invalid(format!(
                    "table {table} exists and cannot be replaced: event tables are append-only (use mode \"append\", or a new table name)"
                )));
            }
            (false, _, TableNotExistOption::Fail) => {
                return Err(Status::not_found(format!(
                    "table {table} does not exist: ingest with mode \"create\" or \"create_append\" to create it"
                )));
            }
            _ => {}
        }
        let stream = request.into_inner().map_err(FlightError::from);
        let batches = FlightRecordBatchStream::new_from_flight_data(stream);
        let totals = self.ingest(caller, table, batches).await?;
        Ok(totals.accepted as i64)
    }

    /// A plain Flight DoPut whose descriptor is a path naming the table:
    /// the same ingest, answered with `{"accepted": n, "duplicates": m, "first_position": p,
    /// "last_position": q}`.
    async fn do_put_fallback(
        &self,
        mut request: Request<PeekableFlightDataStream>,
        message: Any,
    ) -> Result<
        Response<<Self as arrow_flight::flight_service_server::FlightService>::DoPutStream>,
        Status,
    > {
        let caller = self.caller(&request, "DoPut")?;
        let descriptor = match request.get_mut().peek().await {
            Some(Ok(first)) => first.flight_descriptor.clone(),
            _ => None,
        };
        let path = match descriptor {
            Some(d) if d.r#type() == flight_descriptor::DescriptorType::Path => d.path,
            _ => {
                return Err(invalid(format!(
                    "DoPut needs a Flight SQL ingest command or a path descriptor naming the table; got {:?}",
                    message.type_url
                )));
            }
        };
        let [name] = path.as_slice() else {
            return Err(invalid(format!(
                "the descriptor path must be one table name; got {path:?}"
            )));
        };
        self.service().admit_ingest(&caller)?;
        let table = table_name(name)?;
        let stream = request.into_inner().map_err(FlightError::from);
        let batches = FlightRecordBatchStream::new_from_flight_data(stream);
        let totals = self.ingest(caller, table, batches).await?;
        let mut reply =
            serde_json::json!({"accepted": totals.accepted, "duplicates": totals.duplicates});
        if let Some((first, last)) = totals.positions {
            reply["first_position"] = first.into();
            reply["last_position"] = last.into();
        }
        let result = PutResult {
            app_metadata: reply.to_string().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.browse_info(query, &schema, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.browser(&request, "DoGet")?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        built(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.browse_info(query, &schema, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.browser(&request, "DoGet")?;
        let mut builder = query.into_builder();
        for (schema, _) in SCHEMAS {
            builder.append(CATALOG, schema);
        }
        built(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.browse_info(query, &schema, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> DoGetResult {
        let caller = self.browser(&request, "DoGet")?;
        let include_schema = query.include_schema;
        let ctx = self
            .service()
            .queries()
            .session(&caller)
            .map_err(df_status)?;
        let catalog = ctx
            .catalog(CATALOG)
            .ok_or_else(|| Status::internal("the session has no catalog"))?;
        let mut builder = query.into_builder();
        for (schema_name, table_type) in SCHEMAS {
            let Some(schema) = catalog.schema(schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                let table_schema = if include_schema {
                    match schema.table(&name).await.map_err(df_status)? {
                        Some(t) => wire_schema(&t.schema()),
                        None => continue,
                    }
                } else {
                    Arc::new(Schema::empty())
                };
                builder
                    .append(CATALOG, schema_name, &name, table_type, &table_schema)
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        built(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.browse_info(query, &schema, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.browser(&request, "DoGet")?;
        let mut builder = query.into_builder();
        builder.append(SYSTEM_TABLE);
        builder.append(TABLE);
        built(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        self.browse_info(query, &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.browser(&request, "DoGet")?;
        built(query.into_builder(&SQL_INFO).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&XDBC_INFO).schema();
        self.browse_info(query, &schema, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.browser(&request, "DoGet")?;
        built(query.into_builder(&XDBC_INFO).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, &primary_keys_schema(), request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.no_keys(&request, primary_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, &foreign_keys_schema(), request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.no_keys(&request, foreign_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, &foreign_keys_schema(), request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.no_keys(&request, foreign_keys_schema())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browse_info(query, &foreign_keys_schema(), request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> DoGetResult {
        self.no_keys(&request, foreign_keys_schema())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
