//! What a query may be, through every way one comes in (HTTP SQL, the DSL,
//! Flight SQL statements and prepared statements, a table function's inner
//! query): too deep a nesting, too long a text or name gets a 4xx naming
//! the limit, a query just within the limits runs and gives the right
//! answer, and none of it can take the server down or hold up another
//! tenant. The boundaries come from the server's own constants.

use crate::flight::{blocking, connect, expect_code, int, query, runtime};
use crate::support::{Reply, TestServer, events};
use allsource::query::bounds::{DEFAULT_MAX_QUERY_BYTES, MAX_DEPTH, MAX_NAME_BYTES, MAX_RELATIONS};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;

/// `n` copies of `term` joined by `op`.
fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

/// `n` predicates `event_type <cmp> 'x<i>'` joined by `op`.
fn predicates(cmp: &str, op: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("event_type {cmp} 'x{i}'"))
        .collect::<Vec<_>>()
        .join(op)
}

fn as_tenant(s: &TestServer, tenant: &str, sql: &str) -> Reply {
    s.post_with(
        "/v1/sql",
        &[
            ("content-type", "text/plain"),
            ("x-allsource-tenant", tenant),
        ],
        sql.to_string(),
    )
}

fn refused(r: &Reply, needle: &str, case: &str) {
    assert_eq!(r.status, 400, "{case}: {}", r.text());
    assert!(r.error().contains(needle), "{case}: {}", r.error());
}

fn too_deep() -> String {
    format!("more than {MAX_DEPTH} levels")
}

#[test]
fn deep_expressions_are_refused_and_those_within_the_limit_run() {
    let s = TestServer::start(&[]);
    s.ingest(&events("x5", 3));

    // `SELECT 1 + … + 1` of n terms nests n + 1 levels: the query, n - 1
    // additions and the last term.
    let at_limit = format!("SELECT {} AS n", chain("1", "+", MAX_DEPTH - 1));
    assert_eq!(s.scalar(&at_limit), json!(MAX_DEPTH - 1));
    let over = format!("SELECT {} AS n", chain("1", "+", MAX_DEPTH));
    refused(&s.post("/v1/sql", "text/plain", over), &too_deep(), "1+…+1");

    // Long OR, AND and || chains just within the limit give the right
    // answer; one term more is refused.
    let n = MAX_DEPTH - 10;
    let or = |n| {
        format!(
            "SELECT count(*) AS n FROM events WHERE {}",
            predicates("=", " OR ", n)
        )
    };
    let and = |n| {
        format!(
            "SELECT count(*) AS n FROM events WHERE {}",
            predicates("<>", " AND ", n)
        )
    };
    let concat = |n| format!("SELECT length({}) AS n", chain("'ab'", " || ", n));
    assert_eq!(s.scalar(&or(n)), json!(3));
    assert_eq!(s.scalar(&and(n)), json!(0));
    assert_eq!(s.scalar(&concat(n)), json!(2 * n));
    for (case, sql) in [
        ("OR", or(MAX_DEPTH)),
        ("AND", and(MAX_DEPTH)),
        ("||", concat(MAX_DEPTH)),
    ] {
        refused(&s.post("/v1/sql", "text/plain", sql), &too_deep(), case);
    }
    // A chain of queries joined by UNION nests a level per query too.
    let union = |n| {
        format!(
            "SELECT count(*) AS n FROM ({})",
            chain("SELECT 1 AS one", " UNION ALL ", n)
        )
    };
    assert_eq!(s.scalar(&union(50)), json!(50));
    refused(
        &s.post("/v1/sql", "text/plain", union(MAX_DEPTH + 1)),
        &too_deep(),
        "UNION",
    );
    // A join of too many tables is refused before it is planned.
    let joined = (1..=MAX_RELATIONS)
        .map(|i| format!("JOIN events e{i} USING (entity_id)"))
        .collect::<Vec<_>>()
        .join(" ");
    let r = s.post(
        "/v1/sql",
        "text/plain",
        format!("SELECT count(*) FROM events e0 {joined}"),
    );
    refused(&r, &format!("more than {MAX_RELATIONS} tables"), "join");
    // What took the process down: 2,000 terms or predicates.
    for sql in [
        format!("SELECT {}", chain("1", "+", 2000)),
        or(2000),
        and(2000),
        concat(2000),
    ] {
        refused(
            &s.post("/v1/sql", "text/plain", sql),
            &too_deep(),
            "2,000 terms",
        );
    }

    // A chain as long as the largest query allows, whole or cut short by
    // a syntax error: refused, and the server is still there.
    let terms = DEFAULT_MAX_QUERY_BYTES / 2 - 16;
    let longest = format!("SELECT {}", chain("1", "+", terms));
    refused(
        &s.post("/v1/sql", "text/plain", longest.clone()),
        &too_deep(),
        "longest",
    );
    let r = s.post("/v1/sql", "text/plain", format!("{longest} FROM ("));
    assert_eq!(r.status, 400, "{}", r.text());

    // A table function's inner query is held to the same bound.
    let inner = |n| {
        format!(
            "SELECT count(*) AS n FROM detect_anomalies('SELECT {} AS v FROM events', 'v')",
            chain("1", "+", n)
        )
    };
    assert_eq!(s.scalar(&inner(MAX_DEPTH - 1)), json!(3));
    let r = s.post("/v1/sql", "text/plain", inner(MAX_DEPTH));
    refused(&r, &too_deep(), "inner query");
    assert!(r.error().contains("detect_anomalies"), "{}", r.error());

    // The DSL: an "or" of n terms nests n - 1 levels, each "=" one more.
    let dsl = |n: usize| {
        let terms: Vec<Value> = (0..n)
            .map(|i| json!(["=", "event_type", format!("x{i}")]))
            .collect();
        let mut or = vec![json!("or")];
        or.extend(terms);
        json!({"from": "events", "select": [["as", ["count"], "n"]], "where": or}).to_string()
    };
    let r = s.post("/v1/query", "application/json", dsl(MAX_DEPTH - 10));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["n"], 3);
    let r = s.post("/v1/query", "application/json", dsl(MAX_DEPTH + 2));
    refused(&r, &too_deep(), "DSL or");
    assert!(r.error().starts_with("where:"), "{}", r.error());

    assert_eq!(s.get("/health").status, 200);
    assert_eq!(s.scalar("SELECT count(*) AS n FROM events"), json!(3));
}

#[test]
fn flight_statements_are_held_to_the_same_bounds() {
    let s = TestServer::start(&[]);
    blocking(|| s.ingest(&events("x5", 3)));
    runtime().block_on(async {
        let mut client = connect(&s).await;
        let within = format!("SELECT {} AS n", chain("1", "+", MAX_DEPTH - 1));
        let batches = query(&mut client, &within).await.unwrap();
        assert_eq!(int(&batches, "n"), (MAX_DEPTH - 1) as i64);
        let over = format!(
            "SELECT count(*) AS n FROM events WHERE {}",
            predicates("=", " OR ", 2000)
        );
        expect_code(
            client.execute(over.clone(), None).await,
            Code::InvalidArgument,
            &too_deep(),
            "GetFlightInfo",
        );
        expect_code(
            client.prepare(over, None).await,
            Code::InvalidArgument,
            &too_deep(),
            "CreatePreparedStatement",
        );
        let name = "f".repeat(MAX_NAME_BYTES + 1);
        expect_code(
            client.execute(format!("SELECT {name}(1)"), None).await,
            Code::InvalidArgument,
            &format!("at most {MAX_NAME_BYTES}"),
            "a long function name",
        );
        let big = format!("SELECT '{}'", "a".repeat(DEFAULT_MAX_QUERY_BYTES));
        expect_code(
            client.execute(big.clone(), None).await,
            Code::InvalidArgument,
            "--max-query-bytes",
            "GetFlightInfo of a large statement",
        );
        expect_code(
            client.prepare(big, None).await,
            Code::InvalidArgument,
            "--max-query-bytes",
            "a large prepared statement",
        );
        let batches = query(&mut client, "SELECT count(*) AS n FROM events")
            .await
            .unwrap();
        assert_eq!(int(&batches, "n"), 3);
    });
}

#[test]
fn planning_bombs_get_4xx_at_once_and_other_tenants_stay_served() {
    let s = TestServer::start(&[]);
    // An unknown function name of 24 MB: its "did you mean" search took
    // tens of seconds of uninterruptible CPU.
    let bomb = format!("SELECT {}(1)", "f".repeat(24 << 20));
    // Within the size limit, names are bounded too...
    let r = s.post(
        "/v1/sql",
        "text/plain",
        format!("SELECT {}(1)", "f".repeat(MAX_NAME_BYTES + 1)),
    );
    refused(&r, &format!("at most {MAX_NAME_BYTES}"), "long name");
    let r = s.post(
        "/v1/sql",
        "text/plain",
        format!("SELECT * FROM {}", "t".repeat(MAX_NAME_BYTES + 1)),
    );
    refused(&r, &format!("at most {MAX_NAME_BYTES}"), "long table name");
    // ... and the longest name allowed is answered at once.
    let r = s.post(
        "/v1/sql",
        "text/plain",
        format!("SELECT {}(1)", "f".repeat(MAX_NAME_BYTES)),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // The DSL's own suggestions skip a name no typo could make.
    let doc = json!({"from": "events", "select": ["c".repeat(DEFAULT_MAX_QUERY_BYTES / 2)]});
    s.ingest(&events("e", 1));
    let r = s.post("/v1/query", "application/json", doc.to_string());
    refused(&r, "unknown column", "DSL long name");
    assert!(!r.error().contains("did you mean"), "{}", r.error());
    let doc = json!({"from": "events", "select": ["c".repeat(DEFAULT_MAX_QUERY_BYTES)]});
    let r = s.post("/v1/query", "application/json", doc.to_string());
    refused(&r, "--max-query-bytes", "DSL document size");

    let done = AtomicBool::new(false);
    let bombs = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let r = as_tenant(&s, "bomber", &bomb);
                    refused(&r, "--max-query-bytes", "HTTP bomb");
                    bombs.fetch_add(1, Ordering::Relaxed);
                }
            });
            scope.spawn(|| {
                runtime().block_on(async {
                    let mut client = connect(&s).await;
                    client.set_header("x-allsource-tenant", "bomber");
                    while !done.load(Ordering::Relaxed) {
                        expect_code(
                            client.execute(bomb.clone(), None).await,
                            Code::InvalidArgument,
                            "--max-query-bytes",
                            "Flight bomb",
                        );
                        bombs.fetch_add(1, Ordering::Relaxed);
                    }
                })
            });
        }
        // Stops the bombers when the checks below end, also when one fails
        // (the scope would otherwise wait for them forever).
        let _stop = StopOnDrop(&done);
        // Another tenant meanwhile, over HTTP and Flight.
        let rt = runtime();
        let mut client = rt.block_on(async {
            let mut c = connect(&s).await;
            c.set_header("x-allsource-tenant", "calm");
            c
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while bombs.load(Ordering::Relaxed) < 40 && Instant::now() < deadline {
            let started = Instant::now();
            let r = as_tenant(&s, "calm", "SELECT 1 AS one");
            assert_eq!(r.status, 200, "{}", r.text());
            let took = started.elapsed();
            assert!(took < Duration::from_secs(1), "HTTP SELECT 1 took {took:?}");
            let started = Instant::now();
            let batches = rt.block_on(query(&mut client, "SELECT 1 AS one")).unwrap();
            let took = started.elapsed();
            assert_eq!(int(&batches, "one"), 1);
            assert!(
                took < Duration::from_secs(1),
                "Flight SELECT 1 took {took:?}"
            );
            let started = Instant::now();
            assert_eq!(s.get("/health").status, 200);
            let took = started.elapsed();
            assert!(took < Duration::from_secs(1), "/health took {took:?}");
        }
    });
    assert!(
        bombs.load(Ordering::Relaxed) >= 40,
        "the bombs did not go off"
    );
}

#[test]
fn slow_plans_within_the_bounds_do_not_hold_up_other_tenants() {
    let s = TestServer::start(&[]);
    s.ingest(&events("e", 3));
    // Sixty tables joined: planning it takes seconds of CPU that does
    // not yield (in a debug build).
    let joins: String = (1..60)
        .map(|i| format!(" JOIN events t{i} ON t{i}.event_id = t0.event_id"))
        .collect();
    let slow = format!("SELECT count(*) AS n FROM events t0{joins}");
    let started = Instant::now();
    let r = as_tenant(&s, "default", &slow);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["n"], 3);
    let one = started.elapsed();
    // Four at once, more than there are query threads, while another
    // tenant asks for `SELECT 1` and the first tenant's own cheap query.
    let answered = AtomicUsize::new(0);
    let mut fast = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let r = as_tenant(&s, "default", &slow);
                assert_eq!(r.status, 200, "{}", r.text());
                answered.fetch_add(1, Ordering::Relaxed);
            });
        }
        std::thread::sleep(one.min(Duration::from_millis(500)) / 4);
        while answered.load(Ordering::Relaxed) < 4 {
            for (tenant, sql) in [("calm", "SELECT 1 AS one"), ("default", "SELECT 2 AS two")] {
                let started = Instant::now();
                let r = as_tenant(&s, tenant, sql);
                assert_eq!(r.status, 200, "{}", r.text());
                fast.push(started.elapsed());
            }
        }
    });
    // A cheap query queued behind a slow plan would wait about as long as
    // that plan takes alone; the bound scales with it, so a loaded machine
    // that slows every query alike does not fail the test.
    let worst = fast.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_secs(1).max(one * 3 / 4),
        "one slow plan took {one:?}; while four ran, the slowest of {} cheap queries took {worst:?}",
        fast.len()
    );
    assert!(!fast.is_empty());
}

/// Sets its flag when dropped, also while a panic unwinds.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
