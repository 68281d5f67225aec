//! Flight SQL's bounds per reader: the calls that plan (GetFlightInfo,
//! CreatePreparedStatement) take a query slot and count against the query
//! rate like a query.

use crate::flight::{connect, expect_code, runtime};
use crate::support::TestServer;
use std::time::{Duration, Instant};
use tonic::Code;

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
