//! The PostgreSQL port through the clients people use: `psql` (Debian's
//! postgresql-client) for `\d`, multi-line queries and errors, and psycopg 3
//! for bound parameters, prepared statements reused past psycopg's
//! threshold, transactions, refused writes, logins and tenancy. Every
//! answer is compared with the same question asked over HTTP.

use crate::support::{
    AUDIENCE, ISSUER, SECRET, TestServer, hs, hs_server_with, now, python, run_with_input, token,
};
use serde_json::{Value, json};
use std::process::Command;

/// The server of these tests: HS256 tokens, two connections per tenant.
fn server() -> TestServer {
    hs_server_with(&["--pg-max-connections", "2"])
}

/// Orders of `tenant`: entity `u{i}` spends `10 i + 5`, every third a
/// refund.
fn seed(s: &TestServer, tenant: &str, n: u64) {
    let start = (now() - 86_400) * 1000;
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"event_type": if i % 3 == 2 { "refund" } else { "order" },
                   "entity_id": format!("u{i}"), "timestamp": start + i * 1000,
                   "payload": {"amount": 10 * i + 5}})
        })
        .collect();
    let r = s.post_as(
        "/v1/events?table=orders",
        &token(tenant, "writer"),
        "application/json",
        &Value::Array(events).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn http_sql(s: &TestServer, tenant: &str, q: &str) -> Vec<Value> {
    let r = s.post_as("/v1/sql", &token(tenant, "reader"), "text/plain", q);
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.json().as_array().unwrap().clone()
}

/// Runs `psql` against the server as a reader of `tenant` (its token as
/// the password) with `args`, feeding `input`; returns whether it
/// succeeded, its output and its errors.
fn psql(
    s: &TestServer,
    password: &str,
    db: &str,
    args: &[&str],
    input: &str,
) -> (bool, String, String) {
    let (host, port) = s.pg.rsplit_once(':').unwrap();
    let mut psql = Command::new("psql");
    psql.args(["-h", host, "-p", port, "-U", "tester", "-d", db])
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    run_with_input(&mut psql, input)
}

#[test]
fn psql_describes_queries_and_refuses() {
    let s = server();
    seed(&s, "acme", 10);
    let r = s.post_as(
        "/v1/events?table=secrets",
        &token("other", "writer"),
        "application/json",
        r#"[{"event_type": "x", "entity_id": "e"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let reader = token("acme", "reader");

    // \d lists the tenant's tables (and the system tables), not another's.
    let (ok, out, err) = psql(&s, &reader, "acme", &["-c", "\\d"], "");
    assert!(ok, "{err}");
    assert!(
        out.contains(" public | orders ") && out.contains("| table "),
        "{out}"
    );
    assert!(out.contains(" system | tables "), "{out}");
    assert!(!out.contains("secrets"), "{out}");

    // \d TABLE: its columns and their types.
    let (ok, out, err) = psql(&s, &reader, "acme", &["-c", "\\d orders"], "");
    assert!(ok, "{err}");
    for (column, ty) in [
        ("event_type", "text"),
        ("timestamp", "timestamp with time zone"),
        ("position", "bigint"),
        ("amount", "double precision"),
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{column} ")))
            .unwrap_or_else(|| panic!("no column {column} in\n{out}"));
        assert!(line.contains(ty), "{column} is not {ty}: {line}");
    }

    // A query over several lines, ended by `;`, from standard input.
    let (ok, out, err) = psql(
        &s,
        &reader,
        "acme",
        &["-A", "-t"],
        "SELECT entity_id,\n       amount\n  FROM orders\n WHERE amount > 50\n ORDER BY entity_id;\n",
    );
    assert!(ok, "{err}");
    let expected: Vec<String> = http_sql(
        &s,
        "acme",
        "SELECT entity_id, amount FROM orders WHERE amount > 50 ORDER BY entity_id",
    )
    .iter()
    .map(|r| format!("{}|{}", r["entity_id"].as_str().unwrap(), r["amount"]))
    .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    assert_eq!(expected.len(), 5);

    // An error names what is wrong; a write is refused and stores nothing.
    let (ok, _, err) = psql(
        &s,
        &reader,
        "acme",
        &["-c", "SELECT nosuch FROM orders"],
        "",
    );
    assert!(!ok && err.contains("nosuch"), "{err}");
    let admin = token("acme", "admin");
    let (ok, _, err) = psql(&s, &admin, "acme", &["-c", "DELETE FROM orders"], "");
    assert!(!ok && err.contains("read-only"), "{err}");
    assert_eq!(
        http_sql(&s, "acme", "SELECT count(*) AS n FROM orders")[0]["n"],
        10
    );

    // Policies apply as on every interface: a row filter for readers.
    let r = s.post_as(
        "/v1/policies",
        &admin,
        "application/json",
        r#"{"name": "big_only", "kind": "row_filter", "principals": {"roles": ["reader"]},
            "tables": ["orders"], "filter": "amount > 50"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let count = "SELECT count(*) FROM orders";
    let (ok, out, err) = psql(&s, &reader, "acme", &["-A", "-t", "-c", count], "");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5");
    let (ok, out, err) = psql(&s, &admin, "acme", &["-A", "-t", "-c", count], "");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "10");

    // Logins: a wrong token, and a reader naming another tenant.
    let (ok, _, err) = psql(&s, &format!("{reader}x"), "acme", &["-c", "SELECT 1"], "");
    assert!(!ok && err.contains("FATAL"), "{err}");
    let (ok, _, err) = psql(&s, &reader, "other", &["-c", "SELECT 1"], "");
    assert!(!ok && err.contains("its own tenant"), "{err}");
    // An admin of acme may act on another tenant, as over HTTP.
    let (ok, out, err) = psql(
        &s,
        &admin,
        "other",
        &["-A", "-t", "-c", "SELECT count(*) FROM secrets"],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");
}

#[test]
fn psycopg_binds_prepares_and_keeps_tenants_apart() {
    let s = server();
    seed(&s, "acme", 12);
    seed(&s, "other", 3);
    let claims = |tenant: &str| {
        json!({"tenant": tenant, "role": "reader", "sub": format!("{tenant}-reader"),
               "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE})
    };
    let (host, port) = s.pg.rsplit_once(':').unwrap();
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/pg_client.py"
        ))
        .args([host, port])
        .arg(hs(claims("acme"), SECRET, None))
        .arg(hs(claims("other"), SECRET, None))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psycopg client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    // The same rows as over HTTP for every bound value, whether psycopg
    // sent the text each time, prepared it after 5 runs, or from the first.
    let expected: Vec<Value> = (0..8)
        .map(|i| {
            let rows = http_sql(
                &s,
                "acme",
                &format!(
                    "SELECT entity_id, amount FROM orders WHERE amount > {} ORDER BY entity_id",
                    i * 10
                ),
            );
            Value::Array(
                rows.iter()
                    .map(|r| json!([r["entity_id"], r["amount"]]))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(seen["auto"], Value::Array(expected.clone()));
    assert_eq!(seen["prepared"], Value::Array(expected));
    assert_eq!(seen["auto_prepared"], 1, "psycopg prepared the query once");
    let typed = &http_sql(
        &s,
        "acme",
        "SELECT count(*) AS n, sum(amount) AS total FROM orders WHERE entity_id <> 'u0' AND amount >= 15.5 AND timestamp < '2030-01-01T00:00:00Z' AND event_type = 'order'",
    )[0];
    assert_eq!(seen["typed"], json!([typed["n"], typed["total"]]));

    assert_eq!(seen["write"][0], "25006", "{}", seen["write"]);
    assert_eq!(seen["show"], "on");
    assert_eq!(seen["tables"], json!(["orders"]));

    // A cancel request stopped the query at once (it counts 1e12 rows).
    assert_eq!(seen["cancel"][0], "57014", "{}", seen["cancel"]);
    assert!(seen["cancel_seconds"].as_f64().unwrap() < 30.0, "{seen}");
    assert_eq!(seen["after_cancel"], 1);

    // A failed statement fails the transaction until it is rolled back.
    assert_eq!(seen["in_tx_error"][0], "42000", "{}", seen["in_tx_error"]);
    assert_eq!(seen["after_error"][0], "25P02", "{}", seen["after_error"]);
    assert_eq!(seen["after_rollback"], 12);

    // libpq reports a refused login by its message alone.
    let refused = |what: &str, says: &str| {
        let message = seen[what][1].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {}", seen[what]);
    };
    refused("bad_password", "FATAL:  invalid token");
    refused("other_tenant", "may act only on its own tenant");
    assert_eq!(seen["other_count"], 3);
    assert_eq!(seen["other_tables"], json!(["orders"]));
    refused("third_connection", "has 2 PostgreSQL connections open");
}
