//! Policies through their real interfaces: created over HTTP by an admin,
//! enforced on SQL (joins, subqueries, CTEs, windows, table functions),
//! the DSL, Flight SQL, entity streams and ingest, explained by
//! `evaluate`, audited, and kept across a restart. The escape corpus
//! tries to get hidden rows and unmasked values past a row filter and a
//! mask; every reply, errors included, is scanned for them.

use crate::flight::{connect, runtime};
use crate::support::{AUDIENCE, ISSUER, Reply, SECRET, TestServer, hs, hs_server, now, wait_until};
use arrow::array::{Array, AsArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use serde_json::{Value, json};
use std::time::Duration;

const TENANT: &str = "acme";
/// Rows of each region.
const N: usize = 40;

fn token_of(role: &str, sub: &str) -> String {
    hs(
        json!({"tenant": TENANT, "role": role, "sub": sub, "exp": now() + 600,
               "iss": ISSUER, "aud": AUDIENCE}),
        SECRET,
        None,
    )
}

struct Who {
    admin: String,
    alice: String,
    bob: String,
    hr: String,
}

fn send(s: &TestServer, method: &str, path: &str, token: &str, body: Option<&Value>) -> Reply {
    let client = reqwest::blocking::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = client.request(method, s.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    Reply::from(r.send().unwrap())
}

fn sql(s: &TestServer, token: &str, q: &str) -> Reply {
    s.post_as("/v1/sql", token, "text/plain", q)
}

/// Whether `text` holds anything only hidden rows or unmasked values
/// have.
fn leaks(text: &str) -> Option<&'static str> {
    let hidden_entity = (0..N).any(|i| text.contains(&format!("\"h{i}\"")));
    if hidden_entity {
        return Some("a hidden entity");
    }
    ["CANARY", "987654321", "@canary.test", "NOTE-", "US"]
        .into_iter()
        .find(|m| text.contains(m))
}

/// The rows of `q` as alice; fails on any status but 200 and on a leak.
fn rows(s: &TestServer, who: &Who, q: &str) -> Vec<Value> {
    let r = sql(s, &who.alice, q);
    let text = r.text();
    assert_eq!(r.status, 200, "{q}: {text}");
    assert_eq!(leaks(&text), None, "{q} leaks: {text}");
    r.json().as_array().cloned().unwrap_or_default()
}

/// `q` as alice may fail, but not with anything hidden in its message.
fn no_leak(s: &TestServer, who: &Who, q: &str) -> Reply {
    let r = sql(s, &who.alice, q);
    let text = r.text();
    assert_eq!(leaks(&text), None, "{q} leaks: {text}");
    assert!(r.status == 200 || r.status == 400, "{q}: {text}");
    r
}

/// For each `i`: an EU order (visible to alice and bob, its secret a
/// number, its amount 10·i) and a US one (hidden: its secret, amount,
/// email, note and entity are canaries).
fn orders(range: std::ops::Range<usize>) -> Value {
    let mut events = Vec::new();
    for i in range {
        events.push(json!({"event_type": "order", "entity_id": format!("u{i}"),
            "payload": {"region": "EU", "secret": format!("{}", 100 + i), "amount": 10 * i as i64,
                        "email": format!("u{i}@canary.test"), "note": format!("NOTE-{i}"),
                        "phone": format!("+49{i:07}")}}));
        events.push(json!({"event_type": "order", "entity_id": format!("h{i}"),
            "payload": {"region": "US", "secret": format!("CANARY-({i}"), "amount": 987654321,
                        "email": format!("h{i}@canary.test"), "note": format!("NOTE-h{i}"),
                        "phone": format!("+1{i:09}")}}));
    }
    Value::Array(events)
}

fn setup() -> (TestServer, Who) {
    let s = hs_server();
    let who = Who {
        admin: token_of("admin", "ops-1"),
        alice: token_of("reader", "alice"),
        bob: token_of("writer", "bob"),
        hr: token_of("reader", "hr-1"),
    };
    let r = s.post_as(
        "/v1/events?table=orders",
        &who.admin,
        "application/json",
        &orders(0..N).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.post_as(
        "/v1/events?table=payroll",
        &who.admin,
        "application/json",
        &json!([{"event_type": "salary", "entity_id": "e1", "payload": {"amount": 5}}]).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let policies = [
        json!({"name": "eu_only", "kind": "row_filter", "description": "readers and writers see EU orders",
               "principals": {"roles": ["reader", "writer"]}, "tables": ["orders"],
               "filter": "region = 'EU'"}),
        json!({"name": "pii", "kind": "mask", "principals": {"roles": ["reader", "writer"]},
               "tables": ["orders"],
               "masks": {"email": "hash", "note": "null", "phone": {"redact": {"keep": 3}}}}),
        json!({"name": "hr_only", "kind": "access", "effect": "deny", "actions": ["query", "stream"],
               "principals": {"except_subjects": ["hr-*", "ops-*"]}, "tables": ["payroll"]}),
        json!({"name": "no_salary_writes", "kind": "access", "effect": "deny", "actions": ["ingest"],
               "principals": {"roles": ["writer"]}, "tables": ["hr"],
               "event_types": ["salary_*"]}),
    ];
    for p in &policies {
        let r = send(&s, "POST", "/v1/policies", &who.admin, Some(p));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    (s, who)
}

#[test]
fn policies_are_managed_checked_and_explained() {
    let (mut s, who) = setup();
    // The list: the five defaults and the four added.
    let list = send(&s, "GET", "/v1/policies", &who.admin, None).json();
    assert_eq!(list["generation"], 4);
    assert_eq!(list["stored"], true);
    assert_eq!(list["policies"].as_array().unwrap().len(), 9);
    // Only admins manage them.
    let r = send(&s, "GET", "/v1/policies", &who.alice, None);
    assert_eq!(r.status, 403, "{}", r.text());
    // Bad policies get a 400 naming the field.
    let bad = [
        (
            json!({"name": "x", "kind": "row_filter", "principal": {"roles": ["reader"]}, "filter": "true"}),
            "principal",
        ),
        (
            json!({"name": "x", "kind": "row_filter", "filter": "region IN (SELECT 1)"}),
            "filter",
        ),
        (
            json!({"name": "x", "kind": "row_filter", "filter": "count(*) > 1"}),
            "filter",
        ),
        (
            json!({"name": "x", "kind": "row_filter", "filter": "random() > 0.5"}),
            "filter",
        ),
        (
            json!({"name": "x", "kind": "mask", "masks": {"position": "null"}}),
            "masks.position",
        ),
        (
            json!({"name": "default_x", "kind": "access", "effect": "allow", "actions": ["query"]}),
            "reserved",
        ),
        (
            json!({"name": "Bad", "kind": "access", "effect": "allow", "actions": ["query"]}),
            "name",
        ),
        (json!({"name": "x", "kind": "nope"}), "kind"),
    ];
    for (body, names) in bad {
        let r = send(&s, "POST", "/v1/policies", &who.admin, Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.error().contains(names), "{body}: {}", r.error());
    }
    let r = send(
        &s,
        "POST",
        "/v1/policies",
        &who.admin,
        Some(&json!({"name": "eu_only",
        "kind": "row_filter", "filter": "true"})),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    // A change based on an old generation is refused.
    let r = send(
        &s,
        "PUT",
        "/v1/policies/eu_only",
        &who.admin,
        Some(&json!({"generation": 1,
        "kind": "row_filter", "filter": "true"})),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.error().contains("generation 4"), "{}", r.error());

    // evaluate explains an allow with its restriction...
    let eval =
        |token: &str, body: Value| send(&s, "POST", "/v1/policies/evaluate", token, Some(&body));
    let r = eval(
        &who.admin,
        json!({"principal": {"role": "reader", "subject": "alice"},
        "action": "query", "table": "orders"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let e = r.json();
    assert_eq!(e["decision"], "allow", "{e}");
    let matched: Vec<&str> = e["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["policy"].as_str().unwrap())
        .collect();
    assert_eq!(
        matched,
        ["default_read", "default_subject_quota", "eu_only", "pii"],
        "{e}"
    );
    assert_eq!(e["row_filter"], "(region = 'EU')");
    assert_eq!(e["masks"]["email"]["with"], "hash");
    assert_eq!(e["masks"]["email"]["policy"], "pii");
    // ...and a deny, with the policy that decided.
    let e = eval(
        &who.admin,
        json!({"principal": {"role": "reader", "subject": "alice"},
        "action": "query", "table": "payroll"}),
    )
    .json();
    assert_eq!(e["decision"], "deny", "{e}");
    assert!(e["because"].as_str().unwrap().contains("hr_only"), "{e}");
    assert!(
        e["because"]
            .as_str()
            .unwrap()
            .contains("overrides the allow of default_read"),
        "{e}"
    );
    let e = eval(
        &who.admin,
        json!({"principal": {"role": "writer", "subject": "bob"},
        "action": "ingest", "table": "hr", "event_type": "salary_change"}),
    )
    .json();
    assert_eq!(e["decision"], "deny", "{e}");
    assert!(
        e["because"].as_str().unwrap().contains("no_salary_writes"),
        "{e}"
    );
    let e = eval(
        &who.admin,
        json!({"principal": {"role": "writer", "subject": "bob"},
        "action": "ingest", "table": "hr", "event_type": "leave"}),
    )
    .json();
    assert_eq!(e["decision"], "allow", "{e}");
    // A statement: each table it names.
    let e = eval(
        &who.admin,
        json!({"principal": {"role": "reader", "subject": "alice"}, "action": "query",
               "sql": "WITH t AS (SELECT * FROM orders) SELECT * FROM t JOIN \"payroll@p1\" p ON true"}),
    )
    .json();
    assert_eq!(e["decision"], "deny", "{e}");
    let per: Vec<(&str, &str)> = e["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap(),
                t["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(per, [("orders", "allow"), ("payroll", "deny")], "{e}");
    // A reader evaluates only itself, and sees no policy text.
    let r = eval(
        &who.alice,
        json!({"principal": {"role": "reader", "subject": "hr-1"},
        "action": "query", "table": "payroll"}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let e = eval(&who.alice, json!({"action": "query", "table": "orders"})).json();
    assert_eq!(e["decision"], "allow", "{e}");
    assert!(!e.to_string().contains("'EU'"), "{e}");

    // Policies, and the hashes they give, survive kill -9 and a backup
    // restored into a new directory.
    let emails = "SELECT email FROM orders ORDER BY entity_id LIMIT 3";
    let before = rows(&s, &who, emails);
    s.kill9();
    s.restart();
    assert_eq!(rows(&s, &who, emails), before);
    assert_eq!(
        rows(&s, &who, "SELECT count(*) AS n FROM orders")[0]["n"],
        N
    );
    let r = send(
        &s,
        "POST",
        "/v1/admin/backup",
        &who.admin,
        Some(&json!({"to": "p1"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (_target, data) =
        crate::backup::restore_fresh(&s.data_dir.join(format!("backups/{TENANT}/p1")));
    let restored = TestServer::start_in(&data, &crate::support::HS_FLAGS);
    assert_eq!(rows(&restored, &who, emails), before);
    let listed = send(&restored, "GET", "/v1/policies", &who.admin, None).json();
    assert_eq!(listed["generation"], 4, "{listed}");
    drop(restored);
    // Deleting the row filter shows every row again; the defaults come
    // back when asked.
    let r = send(&s, "DELETE", "/v1/policies/eu_only", &who.admin, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = sql(&s, &who.alice, "SELECT count(*) AS n FROM orders");
    assert_eq!(r.json()[0]["n"], 2 * N, "{}", r.text());
    let r = send(&s, "DELETE", "/v1/policies/default_read", &who.admin, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = sql(&s, &who.alice, "SELECT count(*) FROM orders");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error().contains("no policy allows query"),
        "{}",
        r.error()
    );
    let r = send(&s, "POST", "/v1/policies/defaults", &who.admin, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        sql(&s, &who.alice, "SELECT count(*) AS n FROM orders").status,
        200
    );
}

#[test]
fn access_policies_refuse_reads_and_writes_and_are_audited() {
    let (s, who) = setup();
    // hr_only: alice may not read payroll, by any path; hr-1 may.
    for q in [
        "SELECT * FROM payroll",
        "SELECT * FROM orders o JOIN payroll p ON o.entity_id = p.entity_id",
        "SELECT (SELECT count(*) FROM payroll)",
        "SELECT * FROM \"payroll@p1\"",
    ] {
        let r = sql(&s, &who.alice, q);
        assert_eq!(r.status, 403, "{q}: {}", r.text());
        assert!(r.error().contains("hr_only"), "{q}: {}", r.error());
    }
    let r = sql(&s, &who.hr, "SELECT count(*) AS n FROM payroll");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["n"], 1);
    // The catalog does not list what alice may not read.
    let tables = rows(
        &s,
        &who,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    );
    let names: Vec<&str> = tables
        .iter()
        .map(|t| t["table_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"]);
    // The DSL does not find it at all.
    let r = s.post_as(
        "/v1/query",
        &who.alice,
        "application/json",
        &json!({"from": "payroll"}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("unknown table \"payroll\""),
        "{}",
        r.error()
    );
    let r = s.get_as("/v1/streams/payroll/e1", &who.alice);
    assert_eq!(r.status, 403, "{}", r.text());

    // no_salary_writes: the whole request is refused at the event.
    let body = json!([
        {"event_type": "leave", "entity_id": "e1", "payload": {}},
        {"event_type": "salary_change", "entity_id": "e1", "payload": {"amount": 1}},
    ]);
    let r = s.post_as(
        "/v1/events?table=hr",
        &who.bob,
        "application/json",
        &body.to_string(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error().contains("no_salary_writes") && r.error().contains("$[1]"),
        "{}",
        r.error()
    );
    let n = sql(&s, &who.admin, "SELECT count(*) AS n FROM hr");
    assert!(n.status == 400 || n.json()[0]["n"] == 0, "{}", n.text());
    let body = json!([{"event_type": "leave", "entity_id": "e1", "payload": {}}]);
    let r = s.post_as(
        "/v1/events?table=hr",
        &who.bob,
        "application/json",
        &body.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // The system tables describe only what a caller reads unrestricted.
    let described = |token: &str| {
        let r = sql(&s, token, "SELECT table_name FROM system.tables ORDER BY 1");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["table_name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(described(&who.alice), ["hr"]);
    assert_eq!(described(&who.hr), ["hr", "payroll"]);
    assert_eq!(described(&who.admin), ["hr", "orders", "payroll"]);
    assert!(rows(&s, &who, "SELECT * FROM system.files").is_empty());

    // Every refusal is in the audit log, counted.
    wait_until("the refusals are audited", Duration::from_secs(20), || {
        let r = sql(
            &s,
            &who.admin,
            "SELECT sum(CAST(json_get_str(_overflow, 'count') AS BIGINT)) AS n, count(*) AS records FROM system.audit WHERE event_type = 'policy_denied'",
        );
        r.status == 200 && r.json()[0]["records"].as_i64().unwrap_or(0) >= 2
    });
    let r = sql(
        &s,
        &who.admin,
        "SELECT entity_id, action, detail FROM system.audit WHERE event_type = 'policy_denied' ORDER BY entity_id",
    );
    let text = r.text();
    assert!(
        text.contains("alice") && text.contains("query payroll"),
        "{text}"
    );
    assert!(text.contains("bob") && text.contains("ingest hr"), "{text}");
}

/// Attempts to see hidden rows (region US) or unmasked values past
/// `eu_only` and `pii`.
#[test]
fn escape_corpus() {
    let (s, who) = setup();
    let visible_sum: i64 = (0..N as i64).map(|i| 10 * i).sum();
    let visible_max = 10 * (N as i64 - 1);
    // 1: everything, and aggregates.
    let all = rows(&s, &who, "SELECT * FROM orders");
    assert_eq!(all.len(), N);
    for r in &all {
        assert_eq!(r["region"], "EU");
        assert_eq!(r["email"].as_str().unwrap().len(), 32, "{r}");
        assert!(r["note"].is_null(), "{r}");
        assert!(r["phone"].as_str().unwrap().ends_with("***"), "{r}");
        assert!(r.get("_overflow").is_none_or(Value::is_null), "{r}");
    }
    let a = &rows(
        &s,
        &who,
        "SELECT count(*) AS n, sum(amount) AS s, max(amount) AS m FROM orders",
    )[0];
    assert_eq!(
        (a["n"].as_i64(), a["s"].as_f64(), a["m"].as_f64()),
        (
            Some(N as i64),
            Some(visible_sum as f64),
            Some(visible_max as f64)
        ),
        "{a}"
    );
    let count = |q: &str| rows(&s, &who, q).len();
    // 2: conditions that would reach hidden rows.
    assert_eq!(count("SELECT * FROM orders WHERE region = 'US'"), 0);
    assert_eq!(
        count("SELECT * FROM orders WHERE region = 'US' OR 1 = 1"),
        N
    );
    assert_eq!(count("SELECT * FROM orders WHERE NOT (region = 'EU')"), 0);
    assert_eq!(count("SELECT * FROM orders WHERE amount > 1000"), 0);
    // 3: other names of the table.
    for q in [
        "SELECT * FROM public.orders",
        "SELECT * FROM allsource.public.orders",
        "SELECT * FROM \"orders\"",
        "SELECT o.* FROM orders AS o",
        "SELECT * FROM \"orders@p1000000\"",
        "SELECT * FROM as_of(orders, position => 1000000)",
    ] {
        let r = no_leak(&s, &who, q);
        if r.status == 200 {
            assert_eq!(r.json().as_array().unwrap().len(), N, "{q}");
        }
    }
    // 4-8: joins, subqueries, CTEs, set operations.
    assert_eq!(
        count("SELECT a.entity_id FROM orders a JOIN orders b ON a.entity_id = b.entity_id"),
        N
    );
    assert_eq!(
        count("SELECT * FROM (SELECT * FROM orders) t WHERE region = 'US'"),
        0
    );
    let m = &rows(&s, &who, "SELECT (SELECT max(amount) FROM orders) AS m")[0];
    assert_eq!(m["m"].as_f64(), Some(visible_max as f64));
    assert_eq!(
        count(
            "SELECT 1 FROM orders WHERE entity_id IN (SELECT entity_id FROM orders WHERE region = 'US')"
        ),
        0
    );
    assert_eq!(
        count(
            "SELECT 1 FROM orders o WHERE EXISTS (SELECT 1 FROM orders p WHERE p.amount = 987654321)"
        ),
        0
    );
    assert_eq!(count("WITH t AS (SELECT * FROM orders) SELECT * FROM t"), N);
    assert_eq!(
        count(
            "WITH RECURSIVE r(n, e) AS (SELECT 1, entity_id FROM orders UNION ALL SELECT n + 1, e FROM r WHERE n < 2) SELECT * FROM r"
        ),
        2 * N
    );
    assert_eq!(
        count("SELECT entity_id FROM orders UNION SELECT 'x'"),
        N + 1
    );
    assert_eq!(
        count("SELECT email FROM orders INTERSECT SELECT email FROM orders"),
        N
    );
    // 9-10: windows and aggregates over masked columns.
    let w = rows(
        &s,
        &who,
        "SELECT count(*) OVER () AS n, lag(email) OVER (ORDER BY entity_id) AS prev, first_value(amount) OVER (ORDER BY amount DESC) AS top FROM orders",
    );
    assert!(
        w.iter()
            .all(|r| r["n"] == N && r["top"].as_f64() == Some(visible_max as f64)),
        "{w:?}"
    );
    rows(
        &s,
        &who,
        "SELECT email, count(*) FROM orders GROUP BY email",
    );
    rows(
        &s,
        &who,
        "SELECT min(email), string_agg(email, ','), approx_distinct(email) FROM orders",
    );
    // 11-15: expressions that fail on hidden values must not run on them.
    for q in [
        "SELECT * FROM orders WHERE CAST(secret AS INT) > 0",
        "SELECT * FROM orders WHERE 1 / (amount - 987654321) < 1",
        "SELECT region, CAST(secret AS INT) AS s FROM orders",
        "SELECT * FROM orders ORDER BY CAST(secret AS INT) LIMIT 5",
        "SELECT * FROM orders WHERE regexp_like('x', secret)",
        "SELECT arrow_cast(secret, 'Int32') FROM orders",
    ] {
        let r = rows(&s, &who, q);
        assert!(r.len() <= N, "{q}");
    }
    // 16-17: masked values cannot be matched or recovered.
    assert_eq!(
        count("SELECT * FROM orders WHERE email = 'u1@canary.test'"),
        0
    );
    assert_eq!(count("SELECT * FROM orders WHERE email LIKE '%canary%'"), 0);
    assert_eq!(count("SELECT * FROM orders WHERE length(email) = 16"), 0);
    assert_eq!(count("SELECT * FROM orders WHERE note IS NOT NULL"), 0);
    assert_eq!(
        count("SELECT _overflow FROM orders WHERE _overflow IS NOT NULL"),
        0
    );
    // 18-19: table functions' inner queries and data quality.
    rows(
        &s,
        &who,
        "SELECT * FROM detect_anomalies('SELECT amount AS n FROM orders', 'n', 'mad')",
    );
    let q = rows(
        &s,
        &who,
        "SELECT * FROM data_quality('orders', INTERVAL '1 day')",
    );
    assert!(
        q.iter().any(|r| r.to_string().contains(&format!("{N}"))),
        "{q:?}"
    );
    // 21: the catalog shows masked types.
    let cols = rows(
        &s,
        &who,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'email'",
    );
    assert_eq!(cols[0]["data_type"], "Utf8");
    // 23: EXPLAIN shows the barrier, not the filter.
    for q in [
        "EXPLAIN SELECT * FROM orders",
        "EXPLAIN ANALYZE SELECT * FROM orders",
    ] {
        let r = sql(&s, &who.alice, q);
        let text = r.text();
        assert_eq!(r.status, 200, "{text}");
        assert!(
            text.contains("PolicyExec: table=orders, policies=[eu_only, pii]"),
            "{text}"
        );
        assert!(
            !text.contains("EU") && !text.contains(&format!("{}", 2 * N)),
            "{q}: {text}"
        );
    }
    // The first rows in an order of plain columns are taken inside the
    // barrier, and are the first visible ones.
    let top = rows(
        &s,
        &who,
        "SELECT entity_id, amount FROM orders ORDER BY amount DESC, entity_id LIMIT 3",
    );
    let ids: Vec<&str> = top
        .iter()
        .map(|r| r["entity_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            format!("u{}", N - 1),
            format!("u{}", N - 2),
            format!("u{}", N - 3)
        ]
    );
    let r = sql(
        &s,
        &who.alice,
        "EXPLAIN SELECT entity_id FROM orders ORDER BY amount DESC LIMIT 3",
    );
    assert!(
        r.text()
            .contains("masked=[_overflow, email, note, phone], top=3"),
        "{}",
        r.text()
    );
    let r = sql(
        &s,
        &who.alice,
        "EXPLAIN SELECT entity_id FROM orders ORDER BY email LIMIT 3",
    );
    assert!(!r.text().contains("top="), "{}", r.text());
    // 24: raw reads are restricted the same.
    let r = s.post_as(
        "/v1/sql?raw=true",
        &who.alice,
        "text/plain",
        "SELECT count(*) AS n FROM orders",
    );
    assert_eq!(r.json()[0]["n"], N, "{}", r.text());
    // 26: the DSL.
    let dsl = |doc: Value| {
        let r = s.post_as(
            "/v1/query",
            &who.alice,
            "application/json",
            &doc.to_string(),
        );
        assert_eq!(r.status, 200, "{doc}: {}", r.text());
        assert_eq!(leaks(&r.text()), None, "{doc}: {}", r.text());
        r.json()
    };
    let d = dsl(json!({"from": "orders", "where": ["=", "region", "US"]}));
    assert_eq!(d.as_array().map_or(0, Vec::len), 0, "{d}");
    let d = dsl(json!({"from": "orders", "select": [["as", ["sum", "amount"], "s"]]}));
    assert_eq!(d[0]["s"].as_f64(), Some(visible_sum as f64), "{d}");
    // 27: Flight SQL, its catalog too.
    runtime().block_on(async {
        let mut client: FlightSqlServiceClient<_> = connect(&s).await;
        client.set_header("authorization", format!("Bearer {}", who.alice));
        let info = client
            .get_tables(arrow_flight::sql::CommandGetTables {
                include_schema: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let batches = crate::flight::fetch(&mut client, info).await.unwrap();
        let names = batches[0]
            .column_by_name("table_name")
            .unwrap()
            .as_string::<i32>();
        let names: Vec<&str> = (0..names.len()).map(|i| names.value(i)).collect();
        assert!(
            names.contains(&"orders") && !names.contains(&"payroll"),
            "{names:?}"
        );
        let batches = crate::flight::query(&mut client, "SELECT email, region FROM orders")
            .await
            .unwrap();
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n, N);
        for b in &batches {
            let emails = b.column(0).as_string::<i32>();
            assert!((0..emails.len()).all(|i| emails.value(i).len() == 32));
            let regions = b.column(1).as_string::<i32>();
            assert!((0..regions.len()).all(|i| regions.value(i) == "EU"));
        }
    });
    // 29: entity streams.
    let r = s.get_as("/v1/streams/orders/h1", &who.alice);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(leaks(&r.text()), None, "{}", r.text());
    let r = s.get_as("/v1/streams/orders/u1", &who.alice);
    assert_eq!(leaks(&r.text()), None, "{}", r.text());
    assert!(r.text().contains("u1"), "{}", r.text());
    // The admin, whom no policy restricts, sees everything.
    let r = sql(
        &s,
        &who.admin,
        "SELECT count(*) AS n FROM orders WHERE email LIKE '%canary%'",
    );
    assert_eq!(r.json()[0]["n"], 2 * N, "{}", r.text());
}

/// Projections and pipelines read their source as their definer: what
/// they hold is what the definer's policies show. A caller restricted
/// otherwise may not read them.
#[test]
fn projections_and_pipelines_read_as_their_definer() {
    let (s, who) = setup();
    let projection = |name: &str| {
        json!({"name": name,
            "query": "SELECT region, count(*) AS n, sum(amount) AS total, max(email) AS email FROM orders GROUP BY region"})
    };
    // bob (a writer under eu_only and pii) defines one: it folds the EU
    // orders, with e-mail addresses hashed.
    let r = send(
        &s,
        "POST",
        "/v1/projections",
        &who.bob,
        Some(&projection("bob_regions")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until(
        "bob's projection folds the EU orders",
        Duration::from_secs(30),
        || {
            let r = sql(
                &s,
                &who.admin,
                "SELECT region, n FROM projections.bob_regions",
            );
            r.status == 200 && r.json() == json!([{"region": "EU", "n": N}])
        },
    );
    let r = sql(&s, &who.admin, "SELECT * FROM projections.bob_regions");
    assert_eq!(leaks(&r.text()), None, "{}", r.text());
    // alice reads orders restricted exactly as bob does: she may read it,
    // over SQL and the state route, and it shows her nothing hidden.
    let seen = rows(
        &s,
        &who,
        "SELECT region, n, total FROM projections.bob_regions",
    );
    let total: i64 = (0..N as i64).map(|i| 10 * i).sum();
    assert_eq!(
        seen,
        vec![json!({"region": "EU", "n": N, "total": total as f64})]
    );
    let r = s.get_as("/v1/projections/bob_regions/state", &who.alice);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(leaks(&r.text()), None, "{}", r.text());
    // The admin's projection holds every order: not offered to alice, by
    // any path.
    let r = send(
        &s,
        "POST",
        "/v1/projections",
        &who.admin,
        Some(&projection("by_region")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until(
        "the admin's projection folds every order",
        Duration::from_secs(30),
        || {
            let r = sql(
                &s,
                &who.admin,
                "SELECT sum(n) AS n FROM projections.by_region",
            );
            r.status == 200 && r.json()[0]["n"] == 2 * N
        },
    );
    let r = sql(&s, &who.alice, "SELECT * FROM projections.by_region");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(leaks(&r.text()), None, "{}", r.text());
    let r = s.get_as("/v1/projections/by_region/state", &who.alice);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(leaks(&r.text()), None, "{}", r.text());
    let listed = rows(
        &s,
        &who,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'projections'",
    );
    assert_eq!(listed, vec![json!({"table_name": "bob_regions"})]);
    let r = sql(&s, &who.hr, "SELECT * FROM projections.by_region");
    assert_eq!(r.status, 403, "{}", r.text());
    // A pipeline of bob's copies what bob sees: the EU orders, masked.
    let pipeline = json!({"name": "copy", "source": {"table": "orders", "start": "earliest"},
        "operators": [], "sink": {"table": "copy"}});
    let r = send(&s, "POST", "/v1/pipelines", &who.bob, Some(&pipeline));
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until(
        "bob's pipeline copies the EU orders",
        Duration::from_secs(30),
        || {
            let r = sql(&s, &who.admin, "SELECT count(*) AS n FROM copy");
            r.status == 200 && r.json() == json!([{"n": N}])
        },
    );
    let r = sql(&s, &who.admin, "SELECT * FROM copy");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(leaks(&r.text()), None, "{}", r.text());
    // A pipeline of bob's may not enrich from the admin's projection.
    let enrich = json!({"name": "enriched", "source": {"table": "orders", "start": "earliest"},
        "operators": [{"op": "enrich", "projection": "by_region", "on": {"region": "region"},
                       "fields": {"n": "n"}}],
        "sink": {"table": "enriched"}});
    let r = send(&s, "POST", "/v1/pipelines", &who.bob, Some(&enrich));
    assert_eq!(r.status, 403, "{}", r.text());
    // A policy change that restricts bob otherwise stops alice reading
    // his projection until it is defined again.
    let r = send(
        &s,
        "POST",
        "/v1/policies",
        &who.admin,
        Some(
            &json!({"name": "bob_small", "kind": "row_filter", "principals": {"subjects": ["bob"]},
                     "tables": ["orders"], "filter": "amount < 100"}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = sql(&s, &who.alice, "SELECT * FROM projections.bob_regions");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error().contains("as its definer reads them"),
        "{}",
        r.error()
    );
    // And the projection stops at its next events rather than fold them
    // under policies other than its definer's at definition.
    let r = s.post_as(
        "/v1/events?table=orders",
        &who.admin,
        "application/json",
        &json!([{"event_type": "order", "entity_id": "u999",
                 "payload": {"region": "EU", "amount": 5}}])
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until("bob's projection stops", Duration::from_secs(30), || {
        let info = send(&s, "GET", "/v1/projections/bob_regions", &who.admin, None).json();
        info["status"] == "failed"
            && info["error"]
                .as_str()
                .is_some_and(|e| e.contains("define it again or rebuild it"))
    });
}

/// A row filter that names the caller shows each caller other rows: a
/// projection under it is read by its definer only.
#[test]
fn projections_under_caller_dependent_filters_stay_with_their_definer() {
    let s = hs_server();
    let admin = token_of("admin", "ops-1");
    let (dana, erin) = (token_of("writer", "dana"), token_of("writer", "erin"));
    let notes: Vec<Value> = ["dana", "dana", "erin", "erin", "erin"]
        .iter()
        .map(|who| json!({"event_type": "note", "entity_id": who}))
        .collect();
    let r = s.post_as(
        "/v1/events?table=notes",
        &admin,
        "application/json",
        &Value::Array(notes).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        &s,
        "POST",
        "/v1/policies",
        &admin,
        Some(
            &json!({"name": "own_notes", "kind": "row_filter", "principals": {"roles": ["writer"]},
                     "tables": ["notes"], "filter": "entity_id = current_subject()"}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let projection = json!({"name": "mine", "query": "SELECT entity_id, count(*) AS n FROM notes GROUP BY entity_id"});
    let r = send(&s, "POST", "/v1/projections", &dana, Some(&projection));
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until(
        "dana's projection folds her notes",
        Duration::from_secs(30),
        || {
            let r = sql(&s, &dana, "SELECT entity_id, n FROM projections.mine");
            r.status == 200 && r.json() == json!([{"entity_id": "dana", "n": 2}])
        },
    );
    // erin is under the same policy text, but it shows her other rows.
    let r = sql(&s, &erin, "SELECT * FROM projections.mine");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!r.text().contains("\"n\""), "{}", r.text());
    let r = s.get_as("/v1/projections/mine/state", &erin);
    assert_eq!(r.status, 403, "{}", r.text());
    // Nor may she rebuild it, becoming its definer over dana's state.
    let r = send(&s, "POST", "/v1/projections/mine/rebuild", &erin, None);
    assert_eq!(r.status, 403, "{}", r.text());
}

#[test]
fn quotas_cap_each_subject_and_are_audited() {
    let (s, who) = setup();
    let r = send(
        &s,
        "POST",
        "/v1/policies",
        &who.admin,
        Some(&json!({"name": "bot_quota",
        "kind": "quota", "principals": {"subjects": ["bot-*"]}, "queries_per_second": 5,
        "events_per_day": 3})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let bot1 = token_of("writer", "bot-1");
    let bot2 = token_of("writer", "bot-2");
    let statuses: Vec<u16> = (0..8).map(|_| sql(&s, &bot1, "SELECT 1").status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    let r = sql(&s, &bot1, "SELECT 1");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.error()
            .contains("policy \"bot_quota\" allows subject \"bot-1\" 5 queries per second"),
        "{}",
        r.error()
    );
    assert!(r.headers.contains_key("retry-after"));
    // Each subject has its own; others have none.
    assert_eq!(sql(&s, &bot2, "SELECT 1").status, 200);
    assert!((0..10).all(|_| sql(&s, &who.alice, "SELECT 1").status == 200));
    // A day's amount of events: 3, then 429; a request larger than it, 413.
    let one = json!([{"event_type": "x", "entity_id": "b", "payload": {}}]).to_string();
    let ingest = |body: &str| s.post_as("/v1/events?table=bots", &bot2, "application/json", body);
    let two = json!([{"event_type": "x", "entity_id": "b"}, {"event_type": "x", "entity_id": "c"}]);
    assert_eq!(ingest(&two.to_string()).status, 200);
    assert_eq!(ingest(&one).status, 200);
    let r = ingest(&one);
    assert_eq!(r.status, 429, "{}", r.text());
    let five: Vec<Value> = (0..5)
        .map(|i| json!({"event_type": "x", "entity_id": format!("b{i}")}))
        .collect();
    let r = s.post_as(
        "/v1/events?table=bots",
        &token_of("writer", "bot-3"),
        "application/json",
        &Value::Array(five).to_string(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    wait_until(
        "the quota refusals are audited",
        Duration::from_secs(20),
        || {
            let r = sql(
                &s,
                &who.admin,
                "SELECT count(*) AS n FROM system.audit WHERE event_type = 'policy_denied' AND status = 429",
            );
            r.status == 200 && r.json()[0]["n"].as_i64().unwrap_or(0) >= 2
        },
    );
}

/// A live stream under a row filter and masks: the events stored before
/// and those ingested while it is open, EU only and masked, with the
/// caller's own condition run on visible rows only.
#[test]
fn live_streams_apply_the_policies_to_every_page() {
    use std::io::BufRead;
    let (s, who) = setup();
    let filter = "CAST(secret AS INT) >= 100";
    let url = s.url(&format!(
        "/v1/stream?table=orders&start=earliest&heartbeat_ms=100&filter={}",
        filter
            .replace(' ', "%20")
            .replace('>', "%3E")
            .replace('=', "%3D")
    ));
    let r = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(url)
        .bearer_auth(&who.alice)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut lines = std::io::BufReader::new(r).lines();
    let mut seen: Vec<Value> = Vec::new();
    let mut more = |seen: &mut Vec<Value>, want: usize, quiet: Duration| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut settled: Option<std::time::Instant> = None;
        loop {
            let line = lines.next().expect("the stream ended").unwrap();
            assert_eq!(leaks(&line), None, "{line}");
            let frame: Value = serde_json::from_str(&line).unwrap();
            if let Some(e) = frame.get("event") {
                seen.push(e.clone());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} events came",
                seen.len()
            );
            if seen.len() >= want {
                let since = *settled.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= quiet {
                    return;
                }
            }
        }
    };
    more(&mut seen, N, Duration::from_millis(500));
    assert_eq!(seen.len(), N);
    // Events ingested while the stream is open: half of them hidden.
    let r = s.post_as(
        "/v1/events?table=orders",
        &who.admin,
        "application/json",
        &orders(N..N + 10).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    more(&mut seen, N + 10, Duration::from_secs(1));
    assert_eq!(seen.len(), N + 10);
    for e in &seen {
        assert_eq!(e["region"], "EU", "{e}");
        assert_eq!(e["email"].as_str().unwrap().len(), 32, "{e}");
        assert!(e["note"].is_null(), "{e}");
    }
    // The same stream over a WebSocket: every EU event, none other.
    let url = format!(
        "{}/v1/stream?table=orders&start=earliest&heartbeat_ms=100&token={}",
        s.base.replacen("http://", "ws://", 1),
        who.alice
    );
    let got = runtime().block_on(async {
        use futures::StreamExt;
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut got: Vec<Value> = Vec::new();
        // Until every expected event came and then a second more (the
        // heartbeats keep coming), or a minute.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut settled: Option<std::time::Instant> = None;
        while std::time::Instant::now() < deadline
            && settled.is_none_or(|t| t.elapsed() < Duration::from_secs(1))
        {
            let wait = Duration::from_millis(500);
            let Ok(Some(frame)) = tokio::time::timeout(wait, ws.next()).await else {
                continue;
            };
            let tokio_tungstenite::tungstenite::Message::Text(t) = frame.unwrap() else {
                continue;
            };
            assert_eq!(leaks(&t), None, "{t}");
            let v: Value = serde_json::from_str(&t).unwrap();
            assert!(v.get("error").is_none(), "{v}");
            got.extend(v["events"].as_array().cloned().unwrap_or_default());
            if got.len() >= N + 10 && settled.is_none() {
                settled = Some(std::time::Instant::now());
            }
        }
        got
    });
    assert_eq!(got.len(), N + 10, "{got:?}");
    assert!(
        got.iter()
            .all(|e| e["region"] == "EU" && e["email"].as_str().unwrap().len() == 32)
    );
}

#[test]
fn the_cli_manages_and_evaluates_policies() {
    use crate::cli_resources::{cli, json_of, ok, refused};
    let (s, who) = setup();
    let admin = ["--token", who.admin.as_str()];
    let with = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .map(|a| a.to_string())
            .chain(admin.iter().map(|a| a.to_string()))
            .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&s, &args)
    };
    let listed = run(with(&["policies", "list"]));
    assert!(
        listed.contains("eu_only") && listed.contains("row_filter"),
        "{listed}"
    );
    assert!(listed.contains("generation 4"), "{listed}");
    // evaluate: one line per matching policy; a deny fails.
    let args = with(&[
        "policies",
        "evaluate",
        "--action",
        "query",
        "--table",
        "orders",
        "--role",
        "reader",
        "--subject",
        "alice",
    ]);
    let out = run(args);
    assert!(
        out.contains("eu_only\trow_filter") && out.contains("row filter: (region = 'EU')"),
        "{out}"
    );
    assert!(
        out.contains("allow: query on \"orders\" is allowed by default_read"),
        "{out}"
    );
    let args = with(&[
        "policies",
        "evaluate",
        "--action",
        "query",
        "--table",
        "payroll",
        "--role",
        "reader",
        "--subject",
        "alice",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = refused(&s, &args, "");
    assert!(err.contains("denied by hr_only"), "{err}");
    let args = with(&[
        "policies",
        "evaluate",
        "--action",
        "query",
        "--sql",
        "SELECT * FROM orders, payroll",
        "--role",
        "reader",
        "--subject",
        "alice",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&s, &args, "");
    assert!(!out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("table orders:") && printed.contains("table payroll:"),
        "{printed}"
    );
    // apply from standard input, show, delete, defaults.
    let policy = json!({"name": "no_notes", "kind": "mask", "tables": ["orders"], "masks": {"note": "null"}});
    let args = with(&["policies", "apply", "-f", "-"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&s, &args, &policy.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_of(&String::from_utf8_lossy(&out.stdout))["generation"],
        5
    );
    let shown = json_of(&run(with(&["policies", "show", "no_notes"])));
    assert_eq!(shown["masks"]["note"], "null");
    let stale = with(&["policies", "delete", "no_notes", "--generation", "1"]);
    let stale: Vec<&str> = stale.iter().map(String::as_str).collect();
    assert!(refused(&s, &stale, "").contains("changed meanwhile"));
    run(with(&["policies", "delete", "no_notes"]));
    run(with(&["policies", "defaults"]));
    // A reader may not manage policies.
    let err = refused(&s, &["policies", "list", "--token", &who.alice], "");
    assert!(err.contains("403") || err.contains("may not"), "{err}");
}

/// The first text frame but heartbeats a consumer of subscription
/// `name` gets.
fn first_frame(s: &TestServer, name: &str, token: &str) -> String {
    use futures::StreamExt;
    let url = format!("{}&token={token}", crate::groups::consume_url(s, name));
    runtime().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        loop {
            match ws.next().await.expect("a frame").unwrap() {
                tokio_tungstenite::tungstenite::Message::Text(t)
                    if !t.contains("heartbeat") && !t.contains("\"assigned\"") =>
                {
                    return t.to_string();
                }
                tokio_tungstenite::tungstenite::Message::Close(c) => {
                    return format!("{c:?}");
                }
                _ => continue,
            }
        }
    })
}

/// Consumers of one subscription share its position: one whose policies
/// hide other events than its creator's may not join it.
#[test]
fn a_subscription_is_consumed_only_under_its_creators_policies() {
    let (s, who) = setup();
    for (token, name) in [(&who.admin, "all_orders"), (&who.bob, "bobs_orders")] {
        let body = json!({"name": name, "table": "orders", "start": "earliest"});
        let r = send(&s, "POST", "/v1/subscriptions", token, Some(&body));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let refused = first_frame(&s, "all_orders", &who.alice);
    assert!(
        refused.contains("created under other policies"),
        "{refused}"
    );
    assert_eq!(leaks(&refused), None, "{refused}");
    // bob and alice are under the same policies: alice may consume bob's,
    // and sees EU orders only, masked.
    let page = first_frame(&s, "bobs_orders", &who.alice);
    assert!(page.contains("u0") && !page.contains("error"), "{page}");
    assert_eq!(leaks(&page), None, "{page}");
    let page = first_frame(&s, "all_orders", &who.admin);
    assert!(page.contains("canary.test"), "{page}");
}

#[test]
fn daily_quotas_hold_across_restarts_and_crashes() {
    let mut s = hs_server();
    let admin = token_of("admin", "ops-1");
    let bot = token_of("writer", "bot-7");
    let r = send(
        &s,
        "POST",
        "/v1/policies",
        &admin,
        Some(
            &json!({"name": "bot_day", "kind": "quota", "principals": {"subjects": ["bot-*"]},
                     "events_per_day": 2}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let one = json!([{"event_type": "x", "entity_id": "b"}]).to_string();
    let ingest =
        |s: &TestServer| s.post_as("/v1/events?table=bots", &bot, "application/json", &one);
    assert_eq!(ingest(&s).status, 200);
    assert_eq!(ingest(&s).status, 200);
    assert_eq!(ingest(&s).status, 429);
    // A clean restart keeps the day's use.
    s.stop();
    s.restart();
    let r = ingest(&s);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("bot_day"), "{}", r.text());
    // So does a crash, once a second has passed since the use.
    std::thread::sleep(Duration::from_millis(1500));
    s.kill9();
    s.restart();
    assert_eq!(ingest(&s).status, 429);
    // Another subject has its own day.
    let other = token_of("writer", "bot-8");
    let r = s.post_as("/v1/events?table=bots", &other, "application/json", &one);
    assert_eq!(r.status, 200, "{}", r.text());
}
