//! Arrow Flight SQL: queries, prepared statements, catalog browsing and
//! bulk ingest for BI tools and drivers (ADBC, JDBC, ODBC).
//!
//! The service is arrow-flight's [`FlightSqlService`] on tonic, in the
//! same process as HTTP and over the same [`Database`]: the same tokens
//! and tenants ([`super::http::principal_of`]), the same sessions and
//! query limits, the same WAL path for ingest.
//!
//! Tickets carry the statement, sealed with an HMAC under a key made at
//! start-up, and the tenant they were issued to: a ticket cannot be
//! altered, and it runs only for a caller of that tenant, in the caller's
//! own session.

use super::error::ApiError;
use super::http::{audit_refused_statement, principal_of, rate_check, record_refusal};
use crate::auth::{Principal, Role, Verifier};
use crate::db::{self, Database, PendingIngest};
use crate::ids::{TableName, TenantId};
use crate::query::{self, CATALOG, SCHEMA};
use crate::ratelimit::{Kind, RateLimits};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, Nullable, ProstMessageExt, Searchable,
    SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction,
    SupportedSqlGrammar, TableExistsOption, TableNotExistOption, TicketStatementQuery,
    XdbcDataType,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, PutResult, SchemaAsIpc, Ticket, flight_descriptor,
};
use axum::http::StatusCode;
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};

/// Largest gRPC message the service decodes: one record batch of a DoPut.
pub fn service(flight: FlightSql, max_message_bytes: usize) -> FlightServiceServer<FlightSql> {
    FlightServiceServer::new(flight)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(usize::MAX)
}

/// The Flight SQL service.
#[derive(Debug, Clone)]
pub struct FlightSql {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Database>,
    verifier: Option<Arc<Verifier>>,
    rate_limits: Arc<RateLimits>,
    tickets: TicketKey,
    prepared: PreparedStatements,
    /// The ingest memory budget, shared with HTTP ingest: an upload holds
    /// its batches in flight within it.
    ingest_budget: Arc<crate::ingest::budget::IngestBudget>,
}

impl FlightSql {
    pub fn new(
        db: Arc<Database>,
        verifier: Option<Arc<Verifier>>,
        rate_limits: Arc<RateLimits>,
        ingest_budget: Arc<crate::ingest::budget::IngestBudget>,
    ) -> Result<Self, String> {
        Ok(FlightSql {
            inner: Arc::new(Inner {
                db,
                verifier,
                rate_limits,
                ingest_budget,
                tickets: TicketKey::generate()?,
                prepared: PreparedStatements::default(),
            }),
        })
    }
}

// ---------------------------------------------------------------------------
// Errors

/// The gRPC status for an error the HTTP API would answer with `e.status`.
impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match e.status {
            StatusCode::BAD_REQUEST
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
            StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INSUFFICIENT_STORAGE => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            _ => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(message = %e.message, "flight request failed");
        }
        let mut status = Status::new(code, e.message);
        if let Some(secs) = e.retry_after {
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(secs));
        }
        status
    }
}

fn df_status(e: datafusion::error::DataFusionError) -> Status {
    Status::from(ApiError::from(e))
}

fn db_status(e: db::Error) -> Status {
    Status::from(ApiError::from(e))
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

// ---------------------------------------------------------------------------
// Authentication

impl FlightSql {
    /// The caller of a request: its bearer token (and tenant header), as
    /// over HTTP. Refusals are counted and audited like HTTP ones.
    fn caller<T>(&self, request: &Request<T>, method: &str) -> Result<Principal, Status> {
        let headers = request.metadata().clone().into_headers();
        principal_of(self.inner.verifier.as_deref(), &headers).map_err(|e| {
            record_refusal(&self.inner.db, &e, format!("flight {method}"), None);
            Status::from(e)
        })
    }

    fn rate_check(&self, tenant: &TenantId, kind: Kind, n: u32) -> Result<(), ApiError> {
        rate_check(&self.inner.rate_limits, tenant, kind, n)
    }
}

impl FlightSql {
    /// A caller of the catalog calls (every role may browse).
    fn browser<T>(&self, request: &Request<T>, method: &str) -> Result<Principal, Status> {
        let caller = self.caller(request, method)?;
        require(&caller, Role::Reader, "browse")?;
        Ok(caller)
    }

    /// The FlightInfo of a catalog call; its ticket is the command itself.
    fn browse_info(
        &self,
        command: impl ProstMessageExt,
        schema: &Schema,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browser(&request, "GetFlightInfo")?;
        flight_info(
            schema,
            command.as_any().encode_to_vec().into(),
            request.into_inner(),
        )
    }

    /// The (empty) answer to the key calls: event tables have no keys.
    fn no_keys(&self, request: &Request<Ticket>, schema: Schema) -> DoGetResult {
        self.browser(request, "DoGet")?;
        Ok(Response::new(one_batch(RecordBatch::new_empty(Arc::new(
            schema,
        )))))
    }
}

fn require(caller: &Principal, role: Role, action: &str) -> Result<(), Status> {
    caller
        .require(role, action)
        .map_err(|e| Status::from(ApiError::from(e)))
}

/// The token in a handshake: `Authorization: Basic` with the token as the
/// password (any user name), or `Authorization: Bearer`.
fn handshake_token(request: &Request<Streaming<HandshakeRequest>>) -> Result<String, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(String::new());
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return Ok(token.trim().to_string());
    }
    let basic = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| {
            Status::unauthenticated(
                "send Authorization: Basic (any user, the token as password) or Bearer <token>",
            )
        })?;
    // Clients differ on padding; accept either.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = lenient
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Status::unauthenticated("the Basic credentials are not valid base64 text")
        })?;
    let (_user, password) = decoded
        .split_once(':')
        .ok_or_else(|| Status::unauthenticated("the Basic credentials have no password"))?;
    Ok(password.to_string())
}

// ---------------------------------------------------------------------------
// Tickets

/// Seals tickets: an HMAC-SHA256 tag over the ticket's JSON, under a key
/// made when the server starts.
struct TicketKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

const TAG_LEN: usize = 32;

/// What a statement ticket holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TicketBody {
    /// The tenant it was issued to.
    tenant: String,
    sql: String,
    /// Bound parameters: one row, as an Arrow IPC stream in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
}

impl TicketKey {
    fn generate() -> Result<Self, String> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        aws_lc_rs::hmac::Key::generate(aws_lc_rs::hmac::HMAC_SHA256, &rng)
            .map(TicketKey)
            .map_err(|_| "cannot make the ticket key".to_string())
    }

    fn seal(&self, body: &TicketBody) -> Result<Bytes, Status> {
        let json = serde_json::to_vec(body).map_err(|e| Status::internal(e.to_string()))?;
        let tag = aws_lc_rs::hmac::sign(&self.0, &json);
        let mut out = Vec::with_capacity(TAG_LEN + json.len());
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(&json);
        Ok(out.into())
    }

    fn open(&self, sealed: &[u8]) -> Result<TicketBody, Status> {
        let forged = || {
            invalid(
                "the ticket is not one this server issued (or the server has restarted since): get a new one with GetFlightInfo",
            )
        };
        if sealed.len() < TAG_LEN {
            return Err(forged());
        }
        let (tag, json) = sealed.split_at(TAG_LEN);
        aws_lc_rs::hmac::verify(&self.0, json, tag).map_err(|_| forged())?;
        serde_json::from_slice(json).map_err(|_| forged())
    }
}

fn encode_params(batch: &RecordBatch) -> Result<String, Status> {
    let ipc = db::encode_ipc(batch).map_err(|e| invalid(format!("parameters: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ipc))
}

fn decode_params(text: &str) -> Result<RecordBatch, Status> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| invalid(format!("ticket parameters: {e}")))?;
    db::decode_ipc(&Bytes::from(bytes)).map_err(|e| invalid(format!("ticket parameters: {e}")))
}

// ---------------------------------------------------------------------------
// Prepared statements

/// Prepared statements live on the server between calls; each belongs to
/// the tenant that made it.
#[derive(Debug, Default)]
struct PreparedStatements {
    map: parking_lot::Mutex<HashMap<String, Prepared>>,
}

#[derive(Debug, Clone)]
struct Prepared {
    tenant: TenantId,
    sql: String,
    params: Option<RecordBatch>,
    used: Instant,
}

/// Most prepared statements one tenant may hold open.
const MAX_PREPARED_PER_TENANT: usize = 1000;
/// A prepared statement unused for this long is dropped.
const PREPARED_IDLE: Duration = Duration::from_secs(3600);

impl PreparedStatements {
    fn insert(&self, prepared: Prepared) -> Result<String, Status> {
        let mut map = self.map.lock();
        map.retain(|_, p| p.used.elapsed() < PREPARED_IDLE);
        let held = map.values().filter(|p| p.tenant == prepared.tenant).count();
        if held >= MAX_PREPARED_PER_TENANT {
            return Err(Status::resource_exhausted(format!(
                "{held} prepared statements are open for this tenant; close some (ClosePreparedStatement) first"
            )));
        }
        let handle = uuid::Uuid::new_v4().simple().to_string();
        map.insert(handle.clone(), prepared);
        Ok(handle)
    }

    fn with<R>(
        &self,
        handle: &[u8],
        tenant: &TenantId,
        f: impl FnOnce(&mut Prepared) -> R,
    ) -> Result<R, Status> {
        let mut map = self.map.lock();
        let found = std::str::from_utf8(handle)
            .ok()
            .and_then(|h| map.get_mut(h))
            .filter(|p| &p.tenant == tenant)
            .ok_or_else(|| {
                Status::not_found("no such prepared statement: it was closed, expired, or belongs to another tenant")
            })?;
        found.used = Instant::now();
        Ok(f(found))
    }

    fn remove(&self, handle: &[u8], tenant: &TenantId) -> Result<(), Status> {
        self.with(handle, tenant, |_| ())?;
        if let Ok(h) = std::str::from_utf8(handle) {
            self.map.lock().remove(h);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Results

/// The type a column is sent as. View types become their plain forms,
/// which every Arrow implementation (JDBC and ODBC drivers included) reads.
fn wire_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

fn wire_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(wire_type(f.data_type())))
            .collect::<Vec<Field>>(),
        schema.metadata().clone(),
    ))
}

fn to_wire(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, FlightError> {
    if batch
        .schema()
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type())
    {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

type FlightStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// Streams query results batch by batch as Flight data.
fn stream_results(stream: datafusion::execution::SendableRecordBatchStream) -> FlightStream {
    let schema = wire_schema(&stream.schema());
    let out = schema.clone();
    let batches = stream.map(move |item| match item {
        Ok(batch) => to_wire(batch, &out),
        Err(e) => Err(FlightError::Tonic(Box::new(df_status(e)))),
    });
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Box::pin(encoded)
}

/// What the DoGet handlers answer.
type DoGetResult = Result<Response<FlightStream>, Status>;

/// A metadata answer built by one of arrow-flight's builders.
fn built(batch: Result<RecordBatch, impl std::fmt::Display>) -> DoGetResult {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(one_batch(batch)))
}

fn one_batch(batch: RecordBatch) -> FlightStream {
    let schema = batch.schema();
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(Status::from);
    Box::pin(encoded)
}

/// A FlightInfo whose one endpoint's ticket is `ticket`, to be redeemed on
/// this same connection.
fn flight_info(
    schema: &Schema,
    ticket: Bytes,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1)
        .with_ordered(true);
    Ok(Response::new(info))
}

fn ipc_schema(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

// ---------------------------------------------------------------------------
// Server facts

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "AllSource");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        SupportedSqlGrammar::SqlCoreGrammar as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.append(SqlInfo::SqlKeywords, &[] as &[&str]);
    b.append(
        SqlInfo::SqlNumericFunctions,
        &[
            "abs", "ceil", "floor", "round", "sqrt", "ln", "log10", "power", "exp",
        ] as &[&str],
    );
    b.append(
        SqlInfo::SqlStringFunctions,
        &[
            "lower",
            "upper",
            "length",
            "substr",
            "trim",
            "concat",
            "replace",
            "split_part",
        ] as &[&str],
    );
    b.append(
        SqlInfo::SqlDatetimeFunctions,
        &["now", "date_trunc", "date_bin", "date_part", "to_timestamp"] as &[&str],
    );
    b.append(SqlInfo::SqlSystemFunctions, &[] as &[&str]);
    b.build().expect("the server's SQL info is well formed")
});

fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    size: Option<i32>,
    searchable: Searchable,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size: size,
        literal_prefix: None,
        literal_suffix: None,
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: data_type == XdbcDataType::XdbcVarchar,
        searchable,
        unsigned_attribute: None,
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    }
}

static XDBC_INFO: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let mut varchar = xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None, Searchable::Full);
    varchar.literal_prefix = Some("'".into());
    varchar.literal_suffix = Some("'".into());
    b.append(varchar);
    b.append(xdbc(
        "BOOLEAN",
        XdbcDataType::XdbcBit,
        Some(1),
        Searchable::Basic,
    ));
    b.append(xdbc(
        "INTEGER",
        XdbcDataType::XdbcInteger,
        Some(32),
        Searchable::Basic,
    ));
    b.append(xdbc(
        "BIGINT",
        XdbcDataType::XdbcBigint,
        Some(64),
        Searchable::Basic,
    ));
    b.append(xdbc(
        "DOUBLE",
        XdbcDataType::XdbcDouble,
        Some(53),
        Searchable::Basic,
    ));
    let mut date = xdbc("DATE", XdbcDataType::XdbcDate, Some(10), Searchable::Basic);
    date.literal_prefix = Some("DATE '".into());
    date.literal_suffix = Some("'".into());
    b.append(date);
    let mut ts = xdbc(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(32),
        Searchable::Basic,
    );
    ts.literal_prefix = Some("TIMESTAMP '".into());
    ts.literal_suffix = Some("'".into());
    b.append(ts);
    b.build().expect("the server's type info is well formed")
});

fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

fn foreign_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// Table types as GetTables reports them.
const TABLE: &str = "TABLE";
const SYSTEM_TABLE: &str = "SYSTEM TABLE";

/// The schemas of a tenant's catalog, with the type of their tables.
const SCHEMAS: [(&str, &str); 2] = [(SCHEMA, TABLE), ("system", SYSTEM_TABLE)];

// ---------------------------------------------------------------------------
// Queries

impl FlightSql {
    /// Plans `sql` for `caller` and returns the schema its results will
    /// have on the wire.
    async fn result_schema(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
    ) -> Result<SchemaRef, Status> {
        let ctx = query::session(self.inner.db.clone(), caller).map_err(df_status)?;
        let mut plan = query::plan_sql(&ctx, sql).await.map_err(|e| {
            audit_refused_statement(&self.inner.db, caller, sql, &e);
            df_status(e)
        })?;
        if let Some(params) = params {
            plan = query::bind(plan, params).map_err(df_status)?;
        }
        Ok(wire_schema(plan.schema().as_arrow()))
    }

    fn statement_ticket(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
    ) -> Result<Bytes, Status> {
        let body = TicketBody {
            tenant: caller.tenant.to_string(),
            sql: sql.to_string(),
            params: params.map(encode_params).transpose()?,
        };
        let handle = self.inner.tickets.seal(&body)?;
        Ok(TicketStatementQuery {
            statement_handle: handle,
        }
        .as_any()
        .encode_to_vec()
        .into())
    }

    async fn ingest(
        &self,
        caller: Principal,
        table: TableName,
        mut batches: FlightRecordBatchStream,
    ) -> Result<(u64, u64), Status> {
        let tenant = caller.tenant.clone();
        let started = Instant::now();
        // Each batch in flight holds its share of the ingest budget (the
        // decoded batch, its conversion and its WAL record) until it is
        // acknowledged.
        let mut reservation = self.inner.ingest_budget.reserve();
        let mut pending: VecDeque<(PendingIngest, usize)> = VecDeque::new();
        let (mut accepted, mut duplicates, mut rows) = (0u64, 0u64, 0u64);
        let mut count = |outcome: db::IngestOutcome| {
            accepted += outcome.accepted as u64;
            duplicates += outcome.duplicates as u64;
        };
        let mut failure: Option<Status> = None;
        'upload: while let Some(next) = batches.next().await {
            let batch = match next {
                Ok(b) => b,
                Err(FlightError::Tonic(s)) => {
                    failure = Some(*s);
                    break;
                }
                Err(other) => {
                    failure = Some(invalid(format!(
                        "the uploaded data is not valid Arrow IPC: {other}"
                    )));
                    break;
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let n = batch.num_rows() as u64;
            // Room for the batch: the upload's own batches in flight give
            // theirs back first; only a batch that fits in no room is
            // refused.
            let held = batch.get_array_memory_size().saturating_mul(3);
            while let Err(e) = reservation.grow(held) {
                let Some((p, their)) = pending.pop_front() else {
                    failure = Some(super::ingest::budget_refusal(e, "an uploaded batch").into());
                    break 'upload;
                };
                let acked = p.acknowledged().await;
                reservation.shrink(their);
                match acked {
                    Ok(o) => count(o),
                    Err(e) => {
                        failure = Some(db_status(e));
                        break 'upload;
                    }
                }
            }
            let begun = match self.rate_check(
                &tenant,
                Kind::Events,
                u32::try_from(n).unwrap_or(u32::MAX),
            ) {
                Ok(()) => self.start_ingest(&tenant, &table, batch, rows).await,
                Err(e) => Err(e),
            };
            match begun {
                Ok(p) => pending.push_back((p, held)),
                Err(e) => {
                    failure = Some(Status::from(e));
                    break;
                }
            }
            rows += n;
            // A few batches in flight keep the WAL's group commits full
            // while the next batch is checked.
            while pending.len() > 8 {
                let (p, their) = pending.pop_front().expect("not empty");
                let acked = p.acknowledged().await;
                reservation.shrink(their);
                match acked {
                    Ok(o) => count(o),
                    Err(e) => {
                        failure = Some(db_status(e));
                        break 'upload;
                    }
                }
            }
        }
        for (p, _) in pending {
            match p.acknowledged().await {
                Ok(o) => count(o),
                Err(e) => {
                    failure.get_or_insert(db_status(e));
                }
            }
        }
        let m = crate::metrics::get();
        m.ingest_events
            .with_label_values(&[tenant.as_str()])
            .inc_by(accepted);
        // The same outcome labels as HTTP's: the server's failures are
        // "error", the client's "rejected".
        let outcome = match failure.as_ref().map(Status::code) {
            None => "ok",
            Some(Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss) => "error",
            Some(_) => "rejected",
        };
        m.ingest_requests
            .with_label_values(&[tenant.as_str(), outcome])
            .inc();
        if failure.is_none() {
            m.ingest_seconds
                .with_label_values(&[tenant.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        match failure {
            None => Ok((accepted, duplicates)),
            Some(s) if accepted + duplicates == 0 => Err(s),
            Some(s) => Err(Status::new(
                s.code(),
                format!(
                    "{}; the {} rows before it were stored (batches are committed in order, each whole; client event ids make a retry safe)",
                    s.message(),
                    accepted + duplicates
                ),
            )),
        }
    }

    /// Starts one batch, waiting while the ingest buffers are full (the
    /// upload slows down rather than fails) for at most 30 seconds.
    async fn start_ingest(
        &self,
        tenant: &TenantId,
        table: &TableName,
        batch: RecordBatch,
        first_row: u64,
    ) -> Result<PendingIngest, ApiError> {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .inner
                .db
                .start_arrow_ingest(tenant, table, batch.clone(), first_row)
                .await
            {
                Err(db::Error::BufferFull { .. }) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other.map_err(ApiError::from),
            }
        }
    }
}

fn table_name(name: &str) -> Result<TableName, Status> {
    name.parse::<TableName>()
        .map_err(|e| invalid(format!("table {name:?}: {e}")))
}

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
        if let Some(verifier) = &self.inner.verifier {
            verifier.verify(&token).map_err(|e| {
                let e = ApiError::from(e);
                record_refusal(&self.inner.db, &e, "flight handshake".into(), None);
                Status::from(e)
            })?;
        }
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
        let schema = self.result_schema(&caller, &query.query, None).await?;
        let ticket = self.statement_ticket(&caller, &query.query, None)?;
        flight_info(&schema, ticket, request.into_inner())
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
        let schema = self
            .result_schema(&caller, &prepared.sql, prepared.params.as_ref())
            .await?;
        let ticket = self.statement_ticket(&caller, &prepared.sql, prepared.params.as_ref())?;
        flight_info(&schema, ticket, request.into_inner())
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
        self.rate_check(&caller.tenant, Kind::Queries, 1)?;
        let params = body.params.as_deref().map(decode_params).transpose()?;
        let started = Instant::now();
        let db = self.inner.db.clone();
        let who = caller.clone();
        let sql = body.sql.clone();
        let result = query::limits::run_limited(
            self.inner.db.limits(),
            self.inner.db.query_threads(),
            &caller.tenant,
            async move { query::run_statement(db, &who, &sql, params.as_ref()).await },
        )
        .await;
        let result = result.map_err(|e| {
            audit_refused_statement(&self.inner.db, &caller, &body.sql, &e);
            ApiError::from(e)
        });
        let m = crate::metrics::get();
        let status = result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
        m.queries
            .with_label_values(&["flight", crate::metrics::outcome(status)])
            .inc();
        m.query_seconds
            .with_label_values(&["flight"])
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(stream_results(result.map_err(Status::from)?)))
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
        let ctx = query::session(self.inner.db.clone(), &caller).map_err(df_status)?;
        let plan = query::plan_sql(&ctx, &query.query).await.map_err(|e| {
            audit_refused_statement(&self.inner.db, &caller, &query.query, &e);
            df_status(e)
        })?;
        let params = query::parameters(&plan).map_err(df_status)?;
        let parameter_schema = Schema::new(
            params
                .iter()
                .map(|(name, ty)| Field::new(name, ty.clone().unwrap_or(DataType::Null), true))
                .collect::<Vec<_>>(),
        );
        let dataset_schema = wire_schema(plan.schema().as_arrow());
        let handle = self.inner.prepared.insert(Prepared {
            tenant: caller.tenant.clone(),
            sql: query.query,
            params: None,
            used: Instant::now(),
        })?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc_schema(&dataset_schema)?,
            parameter_schema: ipc_schema(&parameter_schema)?,
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
        let stream = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect()
            .await
            .map_err(|e| invalid(format!("the parameters are not valid Arrow IPC: {e}")))?;
        let params = match batches.first() {
            None => None,
            Some(first) => Some(
                arrow::compute::concat_batches(&first.schema(), &batches)
                    .map_err(|e| invalid(format!("parameters: {e}")))?,
            ),
        };
        self.inner
            .prepared
            .with(&handle, &caller.tenant, |p| p.params = params)?;
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
        let message = format!(
            "statements that change data are not supported {}; load events with bulk ingest (ADBC adbc_ingest, Flight DoPut) or POST /v1/events",
            query::READ_ONLY_REFUSAL
        );
        audit_refused_statement(&self.inner.db, &caller, &cmd.query, &message);
        Err(invalid(message))
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request, "DoPut")?;
        require(&caller, Role::Writer, "ingest")?;
        self.rate_check(&caller.tenant, Kind::Events, 1)?;
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
        let exists = self.inner.db.table(&caller.tenant, &table).is_some();
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
        let (accepted, _) = self.ingest(caller, table, batches).await?;
        Ok(accepted as i64)
    }

    /// A plain Flight DoPut whose descriptor is a path naming the table:
    /// the same ingest, answered with `{"accepted": n, "duplicates": m}`.
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
        require(&caller, Role::Writer, "ingest")?;
        self.rate_check(&caller.tenant, Kind::Events, 1)?;
        let table = table_name(name)?;
        let stream = request.into_inner().map_err(FlightError::from);
        let batches = FlightRecordBatchStream::new_from_flight_data(stream);
        let (accepted, duplicates) = self.ingest(caller, table, batches).await?;
        let reply = serde_json::json!({"accepted": accepted, "duplicates": duplicates});
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
        let ctx = query::session(self.inner.db.clone(), &caller).map_err(df_status)?;
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
