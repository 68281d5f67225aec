//! Flight SQL's bounds per reader: the calls that plan (GetFlightInfo,
//! CreatePreparedStatement) take a query slot and count against the query
//! rate like a query, and what a tenant's prepared statements hold (their
//! SQL and bound parameters) is capped in bytes, uploads included.

use crate::flight::{connect, expect_code, fetch, int, runtime};
use crate::support::TestServer;
use allsource::query::bounds::DEFAULT_MAX_QUERY_BYTES;
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;

/// One row, one string parameter of `len` bytes (`rows` rows of them).
fn text_params(len: usize, rows: usize) -> RecordBatch {
    let values = StringArray::from(vec!["p".repeat(len); rows]);
    RecordBatch::try_from_iter(vec![("0", Arc::new(values) as ArrayRef)]).unwrap()
}

/// A statement of about `len` bytes of SQL.
fn long_statement(len: usize) -> String {
    format!("SELECT CAST(length('{}') AS BIGINT) AS n", "a".repeat(len))
}

#[test]
fn prepared_statements_and_their_parameters_are_bounded_in_bytes() {
    // Three statements of 900 KB fit in 3 MiB; a fourth does not.
    let budget = 3 << 20;
    let s = TestServer::start(&["--max-prepared-bytes", &budget.to_string()]);
    runtime().block_on(async {
        let mut client = connect(&s).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(client.prepare(long_statement(900_000), None).await.unwrap());
        }
        expect_code(
            client.prepare(long_statement(900_000), None).await,
            Code::ResourceExhausted,
            "--max-prepared-bytes",
            "a fourth statement of 900 KB",
        );
        // Closing one makes room.
        held.pop().unwrap().close().await.unwrap();
        let mut fits = client.prepare(long_statement(900_000), None).await.unwrap();
        let batches = fetch(&mut client, fits.execute().await.unwrap())
            .await
            .unwrap();
        assert_eq!(int(&batches, "n"), 900_000);
        fits.close().await.unwrap();

        // The text of a statement is bounded like any query's (the issue
        // held 30 statements of 50 MB).
        expect_code(
            client.prepare(long_statement(50 << 20), None).await,
            Code::InvalidArgument,
            "--max-query-bytes",
            "a statement of 50 MB",
        );

        // Parameters: one upload over --max-query-bytes is refused as it
        // arrives, whether one value or many rows of them (the issue
        // uploaded 40 batches of 48 MB).
        let mut small = client
            .prepare("SELECT CAST(length(?) AS BIGINT) AS n".into(), None)
            .await
            .unwrap();
        for (case, params) in [
            ("one value", text_params(DEFAULT_MAX_QUERY_BYTES + 1, 1)),
            ("many rows", text_params(600_000, 40)),
        ] {
            small.set_parameters(params).unwrap();
            expect_code(
                small.execute().await,
                Code::InvalidArgument,
                "--max-query-bytes",
                case,
            );
        }
        // Within it, the statement runs with its value.
        small.set_parameters(text_params(700_000, 1)).unwrap();
        let batches = fetch(&mut client, small.execute().await.unwrap())
            .await
            .unwrap();
        assert_eq!(int(&batches, "n"), 700_000);
        // Bound parameters count against the tenant's bytes too: two
        // statements of 900 KB, one with 700 KB bound, leave no room for
        // another 700 KB.
        let mut other = client
            .prepare("SELECT CAST(length(?) AS BIGINT) AS n".into(), None)
            .await
            .unwrap();
        other.set_parameters(text_params(700_000, 1)).unwrap();
        expect_code(
            other.execute().await,
            Code::ResourceExhausted,
            "--max-prepared-bytes",
            "parameters over the tenant's bytes",
        );
        // Another tenant has its own budget.
        let mut elsewhere = connect(&s).await;
        elsewhere.set_header("x-allsource-tenant", "other");
        let mut theirs = elsewhere
            .prepare(long_statement(900_000), None)
            .await
            .unwrap();
        let batches = fetch(&mut elsewhere, theirs.execute().await.unwrap())
            .await
            .unwrap();
        assert_eq!(int(&batches, "n"), 900_000);
    });
}

/// Runs until cancelled by the timeout, holding its query slot.
const SLOW: &str = "SELECT count(*) FROM range(10000000000) a WHERE a.value % 7 = 3";

#[test]
fn planning_calls_take_a_query_slot_and_count_against_the_query_rate() {
    let limits = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(limits.path(), r#"{"rated": {"queries_per_second": 5}}"#).unwrap();
    let s = TestServer::start(&[
        "--max-concurrent-queries",
        "1",
        "--query-timeout",
        "20s",
        "--tenant-limits",
        limits.path().to_str().unwrap(),
    ]);
    std::thread::scope(|scope| {
        // Until it has the slot: a planning call below may hold it a moment.
        let slow = scope.spawn(|| {
            loop {
                let r = s.post("/v1/sql", "text/plain", SLOW);
                if r.status != 429 {
                    return r;
                }
            }
        });
        runtime().block_on(async {
            let mut client = connect(&s).await;
            // While the slow query runs, planning over Flight is refused
            // with the same 429 as another query would be.
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut refused = None;
            while refused.is_none() && Instant::now() < deadline {
                match client.execute("SELECT 1".into(), None).await {
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => refused = Some(e),
                }
            }
            let refused = refused.expect("planning never met the running query's slot");
            expect_code(
                Err::<(), _>(refused),
                Code::ResourceExhausted,
                "--max-concurrent-queries",
                "GetFlightInfo while the tenant's one slot is taken",
            );
            expect_code(
                client.prepare("SELECT 1".into(), None).await,
                Code::ResourceExhausted,
                "--max-concurrent-queries",
                "CreatePreparedStatement while the slot is taken",
            );
        });
        assert_eq!(slow.join().unwrap().status, 408);
    });
    // Tenant "rated" may start five queries a second: of fifty planning
    // calls back to back one is refused (unless they took ten seconds).
    runtime().block_on(async {
        let mut client = connect(&s).await;
        client.set_header("x-allsource-tenant", "rated");
        for _ in 0..50 {
            if let Err(e) = client.execute("SELECT 1".into(), None).await {
                expect_code(
                    Err::<(), _>(e),
                    Code::ResourceExhausted,
                    "limit of 5 queries/s",
                    "GetFlightInfo over the query rate",
                );
                return;
            }
        }
        panic!("fifty GetFlightInfo calls in a row were all within 5 queries/s");
    });
}
