//! Arrow Flight SQL through arrow-flight's Rust client: queries, prepared
//! statements, catalog calls, bulk ingest, auth and tenant isolation, the
//! error codes, durability under `kill -9`; and the Python ADBC driver as
//! an independent client.

use crate::support::{TestServer, python};
use crate::support::{hs_server, token};
use arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Int64Type};
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandStatementIngest,
    ProstMessageExt, SqlInfo, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
    TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use std::process::Command;
use std::sync::Arc;
use tonic::Code;
use tonic::transport::Channel;

/// Runs blocking HTTP client code from inside the async tests (reqwest's
/// blocking client may not run on a runtime thread).
pub(crate) fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().unwrap())
}

fn sql(s: &TestServer, query: &str) -> Vec<serde_json::Value> {
    blocking(|| s.sql(query))
}

fn scalar(s: &TestServer, query: &str) -> serde_json::Value {
    blocking(|| s.scalar(query))
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) async fn connect(s: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(s.flight.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect to the Flight SQL port");
    FlightSqlServiceClient::new(channel)
}

/// All batches of every endpoint of `info`.
pub(crate) async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, FlightError> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint has a ticket");
        let batches: Vec<RecordBatch> = client.do_get(ticket).await?.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

pub(crate) async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, FlightError> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

/// The gRPC code and message of a failed call.
fn status(e: FlightError) -> (Code, String) {
    match e {
        FlightError::Tonic(s) => (s.code(), s.message().to_string()),
        FlightError::ExternalError(e) => match e.downcast::<FlightError>() {
            Ok(inner) => status(*inner),
            Err(e) => panic!("not a gRPC status: {e}"),
        },
        FlightError::Arrow(arrow::error::ArrowError::IpcError(m)) => {
            (Code::Unknown, m) // the client's handshake wraps the status as text
        }
        other => panic!("not a gRPC status: {other:?}"),
    }
}

pub(crate) fn expect_code<T: std::fmt::Debug>(
    result: Result<T, FlightError>,
    code: Code,
    needle: &str,
    case: &str,
) {
    let (got, message) = status(result.expect_err(case));
    assert_eq!(got, code, "{case}: {message}");
    assert!(
        message.contains(needle),
        "{case}: {message:?} lacks {needle:?}"
    );
}

/// The values of a string column of a metadata answer.
fn strings<'a>(batch: &'a RecordBatch, column: &str) -> Vec<&'a str> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect()
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

pub(crate) fn int(batches: &[RecordBatch], column: &str) -> i64 {
    let b = &batches[0];
    b.column_by_name(column)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

/// A batch of `n` events for entities `u0..u9`, amounts 0..n, starting at
/// row `from`.
fn events_batch(from: usize, n: usize) -> RecordBatch {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "event_type",
            Arc::new(StringArray::from_iter_values(
                (from..from + n).map(|i| if i % 3 == 0 { "buy" } else { "view" }),
            )),
        ),
        (
            "entity_id",
            Arc::new(StringArray::from_iter_values(
                (from..from + n).map(|i| format!("u{}", i % 10)),
            )),
        ),
        (
            "timestamp",
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    (from..from + n).map(|i| 1_767_225_600_000 + i as i64 * 1000),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            "amount",
            Arc::new(Int64Array::from_iter_values(
                (from..from + n).map(|i| i as i64),
            )),
        ),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

/// `batch` with one more column, first or last.
fn with_column(batch: &RecordBatch, name: &str, values: ArrayRef, first: bool) -> RecordBatch {
    let schema = batch.schema();
    let mut columns: Vec<(&str, ArrayRef)> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .zip(batch.columns().iter().cloned())
        .collect();
    if first {
        columns.insert(0, (name, values));
    } else {
        columns.push((name, values));
    }
    RecordBatch::try_from_iter(columns).unwrap()
}

/// `batch` with every field nullable (one upload has one schema).
fn nullable(batch: RecordBatch) -> RecordBatch {
    let schema = arrow::datatypes::Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    );
    batch.with_schema(Arc::new(schema)).unwrap()
}

/// `events_batch(from, n)` with client event ids `<prefix><row>`.
fn with_ids(prefix: &str, from: usize, n: usize) -> RecordBatch {
    let ids = StringArray::from_iter_values((from..from + n).map(|i| format!("{prefix}{i}")));
    with_column(&events_batch(from, n), "event_id", Arc::new(ids), true)
}

fn ingest_command(
    table: &str,
    if_not_exist: TableNotExistOption,
    if_exists: TableExistsOption,
) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: if_not_exist as i32,
            if_exists: if_exists as i32,
        }),
        table: table.to_string(),
        ..Default::default()
    }
}

pub(crate) fn create_append(table: &str) -> CommandStatementIngest {
    ingest_command(
        table,
        TableNotExistOption::Create,
        TableExistsOption::Append,
    )
}

pub(crate) async fn ingest(
    client: &mut FlightSqlServiceClient<Channel>,
    command: CommandStatementIngest,
    batches: Vec<RecordBatch>,
) -> Result<i64, FlightError> {
    let stream = futures::stream::iter(batches.into_iter().map(Ok));
    client.execute_ingest(command, stream).await
}

#[test]
fn queries_prepared_statements_and_catalog_calls() {
    let s = TestServer::start(&[]);
    blocking(|| s.ingest(&crate::support::events("view", 100)));
    runtime().block_on(async {
        let mut client = connect(&s).await;

        // A statement query: the FlightInfo's schema is the data's, with
        // plain (not view) strings for drivers.
        let info = client
            .execute(
                "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY entity_id"
                    .into(),
                None,
            )
            .await
            .unwrap();
        let announced = info.clone().try_decode_schema().unwrap();
        assert_eq!(announced.field(0).data_type(), &DataType::Utf8);
        let batches = fetch(&mut client, info).await.unwrap();
        assert_eq!(rows(&batches), 100);
        assert_eq!(batches[0].schema().field(0).data_type(), &DataType::Utf8);
        let http_rows = sql(&s, "SELECT count(DISTINCT entity_id) AS n FROM events");
        assert_eq!(http_rows[0]["n"], 100);

        // A large result arrives as a stream of batches.
        let batches = query(&mut client, "SELECT value FROM range(300000)")
            .await
            .unwrap();
        assert_eq!(rows(&batches), 300_000);
        assert!(batches.len() > 1, "streamed in {} batch(es)", batches.len());

        // A prepared statement with `?` parameters, bound twice.
        let mut prepared = client
            .prepare(
                "SELECT count(*) AS n FROM events WHERE entity_id = ? AND n >= ?".into(),
                None,
            )
            .await
            .unwrap();
        let params = prepared.parameter_schema().unwrap().clone();
        assert_eq!(params.fields().len(), 2, "{params:?}");
        assert_eq!(params.field(0).name(), "$1");
        assert_eq!(prepared.dataset_schema().unwrap().field(0).name(), "n");
        for (entity, min, want) in [("u7", 0i64, 1i64), ("u7", 8, 0), ("u42", 10, 1)] {
            let bound = RecordBatch::try_from_iter(vec![
                ("0", Arc::new(StringArray::from(vec![entity])) as ArrayRef),
                ("1", Arc::new(Int64Array::from(vec![min])) as ArrayRef),
            ])
            .unwrap();
            prepared.set_parameters(bound).unwrap();
            let info = prepared.execute().await.unwrap();
            let batches = fetch(&mut client, info).await.unwrap();
            assert_eq!(int(&batches, "n"), want, "{entity} {min}");
        }
        // Wrong number of parameters.
        let bound = RecordBatch::try_from_iter(vec![(
            "0",
            Arc::new(StringArray::from(vec!["u1"])) as ArrayRef,
        )])
        .unwrap();
        prepared.set_parameters(bound).unwrap();
        expect_code(
            prepared.execute().await,
            Code::InvalidArgument,
            "2 parameter(s); 1 value(s)",
            "one value for two parameters",
        );
        prepared.close().await.unwrap();

        // Catalog browsing, as a BI tool does on connect.
        let info = client.get_catalogs().await.unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        assert_eq!(
            batches[0].column(0).as_string::<i32>().value(0),
            "allsource"
        );
        let info = client
            .get_db_schemas(CommandGetDbSchemas::default())
            .await
            .unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        let schemas = strings(&batches[0], "db_schema_name");
        assert_eq!(schemas, ["public", "system"]);
        let info = client
            .get_tables(CommandGetTables {
                include_schema: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        let b = &batches[0];
        let names = strings(b, "table_name");
        assert!(
            names.contains(&"events") && names.contains(&"compactions"),
            "{names:?}"
        );
        let events_row = names.iter().position(|n| *n == "events").unwrap();
        assert_eq!(
            b.column_by_name("table_type")
                .unwrap()
                .as_string::<i32>()
                .value(events_row),
            "TABLE"
        );
        let ipc = b
            .column_by_name("table_schema")
            .unwrap()
            .as_binary::<i32>()
            .value(events_row);
        let table_schema = arrow::ipc::convert::try_schema_from_ipc_buffer(ipc).unwrap();
        assert_eq!(
            table_schema
                .field_with_name("entity_id")
                .unwrap()
                .data_type(),
            &DataType::Utf8
        );
        assert!(table_schema.field_with_name("n").is_ok());
        let info = client
            .get_tables(CommandGetTables {
                table_name_filter_pattern: Some("ev%".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 1);
        let info = client.get_table_types().await.unwrap();
        assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 2);
        let info = client
            .get_sql_info(vec![
                SqlInfo::FlightSqlServerName,
                SqlInfo::FlightSqlServerBulkIngestion,
            ])
            .await
            .unwrap();
        assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 2);
        let info = client
            .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
            .await
            .unwrap();
        assert!(rows(&fetch(&mut client, info).await.unwrap()) >= 5);
        let info = client
            .get_primary_keys(CommandGetPrimaryKeys {
                table: "events".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let keys_schema = info.clone().try_decode_schema().unwrap();
        assert!(keys_schema.field_with_name("key_sequence").is_ok());
        assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 0);

        // Mistakes get the right codes and say what was wrong.
        expect_code(
            query(&mut client, "SELEC 1").await,
            Code::InvalidArgument,
            "SELEC",
            "bad SQL",
        );
        expect_code(
            query(&mut client, "SELECT * FROM nope").await,
            Code::InvalidArgument,
            "nope",
            "unknown table",
        );
        expect_code(
            query(&mut client, "CREATE TABLE t (x INT)").await,
            Code::InvalidArgument,
            "read-only",
            "DDL",
        );
        expect_code(
            client
                .execute_update("INSERT INTO events VALUES (1)".into(), None)
                .await,
            Code::InvalidArgument,
            "read-only",
            "DML",
        );
        let forged = TicketStatementQuery {
            statement_handle: b"SELECT * FROM events".to_vec().into(),
        };
        expect_code(
            client
                .do_get(Ticket::new(forged.as_any().encode_to_vec()))
                .await
                .map(|_| ()),
            Code::InvalidArgument,
            "not one this server issued",
            "forged ticket",
        );
    });
}

#[test]
fn bulk_ingest_goes_through_the_wal_with_schema_evolution_and_dedup() {
    let s = TestServer::start(&[]);
    runtime().block_on(async {
        let mut client = connect(&s).await;
        let batches = vec![events_batch(0, 1000), events_batch(1000, 1000), events_batch(2000, 500)];
        let n = ingest(&mut client, create_append("orders"), batches).await.unwrap();
        assert_eq!(n, 2500);
        // Visible at once, over HTTP too; integers became DOUBLE.
        let r = sql(&s, "SELECT count(*) AS n, sum(amount) AS total, arrow_typeof(amount) AS t FROM orders GROUP BY 3");
        assert_eq!(r[0]["n"], 2500);
        assert_eq!(r[0]["total"], (0..2500).sum::<i64>() as f64);
        assert_eq!(r[0]["t"], "Float64");
        let day = scalar(&s, "SELECT min(event_date) AS d FROM orders");
        assert_eq!(day, "2026-01-01");

        // A new column extends the table; older rows read NULL.
        let with_country = with_column(
            &events_batch(2500, 10),
            "country",
            Arc::new(StringArray::from_iter_values((0..10).map(|_| "NL"))),
            false,
        );
        let append = ingest_command("orders", TableNotExistOption::Fail, TableExistsOption::Append);
        assert_eq!(ingest(&mut client, append.clone(), vec![with_country]).await.unwrap(), 10);
        assert_eq!(scalar(&s, "SELECT count(country) AS n FROM orders"), 10);
        assert_eq!(scalar(&s, "SELECT count(*) AS n FROM orders"), 2510);

        // Client event ids are deduplicated like over HTTP.
        let first = ingest(&mut client, append.clone(), vec![with_ids("id-", 0, 50)]);
        assert_eq!(first.await.unwrap(), 50);
        let again = ingest(&mut client, append.clone(), vec![with_ids("id-", 0, 50)]);
        assert_eq!(again.await.unwrap(), 0);
        assert_eq!(scalar(&s, "SELECT count(*) AS n FROM orders"), 2560);

        // A bad batch stores nothing and names the problem.
        let no_entity = RecordBatch::try_from_iter(vec![(
            "event_type",
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
        )])
        .unwrap();
        expect_code(
            ingest(&mut client, append.clone(), vec![no_entity.clone()]).await,
            Code::InvalidArgument,
            "\"entity_id\" is required",
            "missing entity_id",
        );
        let bad_amount = RecordBatch::try_from_iter(vec![
            ("event_type", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ("entity_id", Arc::new(StringArray::from(vec!["u"])) as ArrayRef),
            (
                "timestamp",
                Arc::new(Int64Array::from(vec![i64::MAX / 4])) as ArrayRef,
            ),
        ])
        .unwrap();
        expect_code(
            ingest(&mut client, append.clone(), vec![bad_amount]).await,
            Code::InvalidArgument,
            "outside the accepted range",
            "timestamp out of range",
        );
        assert_eq!(scalar(&s, "SELECT count(*) AS n FROM orders"), 2560);
        // Mid-upload: the batches before the bad one are stored, and the
        // error says so (row numbers count from the start of the upload).
        let good = events_batch(7, 3);
        let entities: ArrayRef = Arc::new(StringArray::from(vec![Some("u1"), None, Some("u3")]));
        let mut columns = good.columns().to_vec();
        columns[1] = entities;
        let null_entity = RecordBatch::try_new(nullable(good.clone()).schema(), columns).unwrap();
        expect_code(
            ingest(&mut client, append.clone(), vec![nullable(events_batch(0, 7)), null_entity.clone()]).await,
            Code::InvalidArgument,
            "event 8: column \"entity_id\" is null",
            "bad second batch",
        );
        let (_, message) = status(
            ingest(&mut client, append.clone(), vec![nullable(events_batch(0, 7)), null_entity])
                .await
                .unwrap_err(),
        );
        assert!(message.contains("the 7 rows before it were stored"), "{message}");
        assert_eq!(scalar(&s, "SELECT count(*) AS n FROM orders"), 2574);

        // Table modes.
        for (table, if_not_exist, if_exists, code, needle, case) in [
            (
                "orders",
                TableNotExistOption::Create,
                TableExistsOption::Fail,
                Code::AlreadyExists,
                "orders exists",
                "create over an existing table",
            ),
            (
                "missing",
                TableNotExistOption::Fail,
                TableExistsOption::Append,
                Code::NotFound,
                "missing does not exist",
                "append to a missing table",
            ),
            (
                "orders",
                TableNotExistOption::Create,
                TableExistsOption::Replace,
                Code::InvalidArgument,
                "append-only",
                "replace",
            ),
        ] {
            let command = ingest_command(table, if_not_exist, if_exists);
            let result = ingest(&mut client, command, vec![events_batch(0, 1)]).await;
            expect_code(result, code, needle, case);
        }
        expect_code(
            ingest(&mut client, create_append("bad name!"), vec![events_batch(0, 1)]).await,
            Code::InvalidArgument,
            "bad name!",
            "bad table name",
        );

        // A plain Flight DoPut with a path descriptor.
        let mut flight = arrow_flight::FlightClient::new_from_inner(client.inner().clone());
        let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["clicks".into()])))
            .build(futures::stream::iter([Ok(events_batch(0, 123))]));
        let results: Vec<arrow_flight::PutResult> =
            flight.do_put(data).await.unwrap().try_collect().await.unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&results[0].app_metadata).unwrap();
        assert_eq!(reply["accepted"], 123, "{reply}");
        assert_eq!(scalar(&s, "SELECT count(*) AS n FROM clicks"), 123);
    });
    // The HTTP and Flight ingest counters agree with what was stored.
    let metrics = s.client_get("/metrics");
    assert!(
        metrics.contains("allsource_ingest_events_total{tenant=\"default\"} 2697"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("ingest_events"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn tokens_roles_and_tenants_apply_to_flight() {
    let s = hs_server();
    runtime().block_on(async {
        let mut anonymous = connect(&s).await;
        expect_code(
            query(&mut anonymous, "SELECT 1").await,
            Code::Unauthenticated,
            "bearer token",
            "no token",
        );
        anonymous.set_token("not-a-jwt".into());
        expect_code(
            query(&mut anonymous, "SELECT 1").await,
            Code::Unauthenticated,
            "",
            "garbage token",
        );

        // Basic auth handshake: any user name, the token as password.
        let mut writer_a = connect(&s).await;
        writer_a
            .handshake("alice", &token("tenant_a", "writer"))
            .await
            .unwrap();
        assert!(writer_a.token().is_some());
        assert_eq!(
            ingest(
                &mut writer_a,
                create_append("events"),
                vec![events_batch(0, 20)]
            )
            .await
            .unwrap(),
            20
        );
        let mut bad = connect(&s).await;
        assert!(
            bad.handshake("alice", "wrong").await.is_err(),
            "a bad password is refused"
        );

        let mut reader_a = connect(&s).await;
        reader_a.set_token(token("tenant_a", "reader"));
        expect_code(
            ingest(
                &mut reader_a,
                create_append("events"),
                vec![events_batch(0, 1)],
            )
            .await,
            Code::PermissionDenied,
            "reader",
            "a reader ingesting",
        );
        let batches = query(&mut reader_a, "SELECT count(*) AS n FROM events")
            .await
            .unwrap();
        assert_eq!(int(&batches, "n"), 20);

        // Tenant B sees none of A's tables, tickets or statements.
        let mut reader_b = connect(&s).await;
        reader_b.set_token(token("tenant_b", "reader"));
        let info = reader_b
            .get_tables(CommandGetTables::default())
            .await
            .unwrap();
        let batches = fetch(&mut reader_b, info).await.unwrap();
        let names = strings(&batches[0], "table_name");
        assert!(!names.contains(&"events"), "{names:?}");
        expect_code(
            query(&mut reader_b, "SELECT * FROM events").await,
            Code::InvalidArgument,
            "events",
            "B naming A's table",
        );
        let a_info = reader_a
            .execute("SELECT * FROM events".into(), None)
            .await
            .unwrap();
        expect_code(
            fetch(&mut reader_b, a_info).await,
            Code::PermissionDenied,
            "another tenant",
            "B redeeming A's ticket",
        );
        let a_prepared = reader_a
            .prepare("SELECT count(*) FROM events".into(), None)
            .await
            .unwrap();
        let stolen = arrow_flight::sql::CommandPreparedStatementQuery {
            prepared_statement_handle: {
                // The handle travels inside A's execute request.
                let mut p = a_prepared;
                let info = p.execute().await.unwrap();
                let descriptor = info.flight_descriptor.unwrap();
                let any = arrow_flight::sql::Any::decode(&*descriptor.cmd).unwrap();
                let cmd: arrow_flight::sql::CommandPreparedStatementQuery =
                    any.unpack().unwrap().unwrap();
                cmd.prepared_statement_handle
            },
        };
        let descriptor = FlightDescriptor::new_cmd(stolen.as_any().encode_to_vec());
        let mut raw = reader_b.inner().clone();
        let mut request = tonic::Request::new(descriptor);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token("tenant_b", "reader"))
                .parse()
                .unwrap(),
        );
        let refused = raw
            .get_flight_info(request)
            .await
            .expect_err("B using A's statement");
        assert_eq!(refused.code(), Code::NotFound, "{}", refused.message());

        // A's reader may not pick another tenant; an admin may.
        reader_a.set_header("x-allsource-tenant", "tenant_b");
        expect_code(
            query(&mut reader_a, "SELECT 1").await,
            Code::PermissionDenied,
            "own tenant",
            "reader switching tenant",
        );
        let mut admin = connect(&s).await;
        admin.set_token(token("ops", "admin"));
        admin.set_header("x-allsource-tenant", "tenant_a");
        let batches = query(&mut admin, "SELECT count(*) AS n FROM events")
            .await
            .unwrap();
        assert_eq!(int(&batches, "n"), 20);
    });
}

#[test]
fn an_acknowledged_flight_ingest_survives_kill_9() {
    let mut s = TestServer::start(&[]);
    let total = 40_000;
    runtime().block_on(async {
        let mut client = connect(&s).await;
        let batches: Vec<RecordBatch> = (0..8).map(|k| with_ids("e", k * 5000, 5000)).collect();
        let n = ingest(&mut client, create_append("events"), batches)
            .await
            .unwrap();
        assert_eq!(n, total);
    });
    s.kill9();
    s.restart();
    let r = sql(
        &s,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, sum(amount) AS total FROM events",
    );
    assert_eq!(r[0]["n"], total);
    assert_eq!(r[0]["ids"], total);
    assert_eq!(r[0]["total"], (0..total).sum::<i64>() as f64);
    // Sending the same upload again after the restart stores nothing twice.
    runtime().block_on(async {
        let mut client = connect(&s).await;
        let again = with_ids("e", 0, 100);
        assert_eq!(
            ingest(&mut client, create_append("events"), vec![again])
                .await
                .unwrap(),
            0
        );
    });
    assert_eq!(scalar(&s, "SELECT count(*) AS n FROM events"), total);
}

#[test]
fn the_python_adbc_driver_works_end_to_end() {
    let s = hs_server();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/flight_adbc.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&s.flight)
        .arg(token("tenant_a", "writer"))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ADBC client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("adbc: ok"), "{stdout}");
    // What the driver ingested is there over HTTP, for the same tenant.
    let r = s.post_with(
        "/v1/sql",
        &[
            ("content-type", "text/plain"),
            (
                "authorization",
                &format!("Bearer {}", token("tenant_a", "reader")),
            ),
        ],
        "SELECT count(*) AS n FROM adbc_events",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["n"], 1000);
}
