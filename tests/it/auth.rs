//! Authentication, roles and tenant isolation, through HTTP: the attack
//! matrix of issue 7, one assertion per case, plus tokens minted by an
//! independent library (PyJWT).

use crate::support::{
    AUDIENCE, Reply, SECRET, TestServer, claims, hs, hs_server, now, python, rs, token, unsigned,
};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn sql_as(s: &TestServer, token: &str, sql: &str) -> Reply {
    s.post_as("/v1/sql", token, "text/plain", sql)
}

fn ingest_as(s: &TestServer, token: &str, table: &str, body: &Value) -> Reply {
    s.post_as(
        &format!("/v1/events?table={table}"),
        token,
        "application/json",
        &body.to_string(),
    )
}

/// Asserts the status, and that the message gives away nothing of tenant
/// B's data or of the key.
fn refused(r: &Reply, status: u16, case: &str) {
    assert_eq!(r.status, status, "{case}: {}", r.text());
    let text = r.text();
    for secret in ["b-secret-value", SECRET, "BEGIN"] {
        assert!(!text.contains(secret), "{case} leaks {secret:?}: {text}");
    }
}

#[test]
fn attack_matrix() {
    let s = hs_server();
    let a_writer = token("tenant_a", "writer");
    let a_reader = token("tenant_a", "reader");
    let b_writer = token("tenant_b", "writer");
    let admin = token("ops", "admin");
    let ok = ingest_as(
        &s,
        &b_writer,
        "b_private",
        &json!([{"event_type": "secret", "entity_id": "b1", "payload": {"code": "b-secret-value"}}]),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = ingest_as(
        &s,
        &a_writer,
        "events",
        &json!([{"event_type": "view", "entity_id": "b1", "payload": {"n": 1}}]),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Positive control: A reads its own table.
    let r = sql_as(&s, &a_reader, "SELECT count(*) AS n FROM events");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["n"], 1);

    // -- authentication --
    let r = s.post("/v1/sql", "text/plain", "SELECT 1");
    refused(&r, 401, "no token");
    assert!(r.headers.get("www-authenticate").is_some());
    refused(&sql_as(&s, "not.a.jwt", "SELECT 1"), 401, "malformed token");
    refused(
        &sql_as(
            &s,
            &hs(
                claims("tenant_a", "reader"),
                "some-other-secret-of-32-bytes!!!!",
                None,
            ),
            "SELECT 1",
        ),
        401,
        "bad signature",
    );
    let none = unsigned(&claims("tenant_a", "admin"));
    refused(&sql_as(&s, &none, "SELECT 1"), 401, "alg none");
    // One claim changed from a valid reader token's, each refused.
    for (claim, value, case) in [
        ("exp", json!(now() - 3600), "expired"),
        ("nbf", json!(now() + 3600), "not yet valid"),
        ("aud", json!("someone-else"), "wrong audience"),
        ("iss", json!("evil"), "wrong issuer"),
    ] {
        let mut changed = claims("tenant_a", "reader");
        changed[claim] = value;
        refused(
            &sql_as(&s, &hs(changed, SECRET, None), "SELECT 1"),
            401,
            case,
        );
    }
    refused(
        &sql_as(
            &s,
            &hs(claims("tenant_a", "reader"), SECRET, Some("other-key")),
            "SELECT 1",
        ),
        401,
        "unknown kid",
    );
    let mut no_role = claims("tenant_a", "reader");
    no_role.as_object_mut().unwrap().remove("role");
    refused(
        &sql_as(&s, &hs(no_role, SECRET, None), "SELECT 1"),
        401,
        "no role claim",
    );

    // -- roles --
    refused(
        &ingest_as(
            &s,
            &a_reader,
            "events",
            &json!({"event_type": "x", "entity_id": "y"}),
        ),
        403,
        "reader ingesting",
    );
    refused(
        &s.post_as("/v1/admin/compact", &a_writer, "application/json", ""),
        403,
        "writer compacting",
    );
    let client = reqwest::blocking::Client::new();
    let r = client
        .put(s.url("/v1/admin/tables/events/settings"))
        .bearer_auth(&a_writer)
        .header("content-type", "application/json")
        .body(r#"{"retention": "1day"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "writer changing table settings");
    let r = client
        .get(s.url("/metrics"))
        .bearer_auth(&a_writer)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "writer reading metrics");

    // -- tenant isolation: A reaching B's table --
    let reach = [
        ("by name", "SELECT * FROM b_private"),
        ("qualified", "SELECT * FROM allsource.public.b_private"),
        ("other catalog", "SELECT * FROM tenant_b.public.b_private"),
        (
            "join",
            "SELECT * FROM events e JOIN b_private p ON e.entity_id = p.entity_id",
        ),
        (
            "subquery",
            "SELECT * FROM events WHERE entity_id IN (SELECT entity_id FROM b_private)",
        ),
        ("CTE", "WITH x AS (SELECT * FROM b_private) SELECT * FROM x"),
        ("view", "CREATE VIEW v AS SELECT * FROM b_private"),
        (
            "table function inner query",
            "SELECT * FROM detect_anomalies('SELECT timestamp, 1.0 AS v FROM b_private', 'v')",
        ),
        (
            "COPY TO",
            "COPY (SELECT 1) TO '/tmp/allsource-attack-copy.csv'",
        ),
        (
            "external table",
            "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'",
        ),
        ("SET", "SET datafusion.execution.target_partitions = 1"),
        ("URL table", "SELECT * FROM '/etc/passwd'"),
    ];
    for (case, sql) in reach {
        refused(&sql_as(&s, &a_reader, sql), 400, case);
    }
    assert!(!Path::new("/tmp/allsource-attack-copy.csv").exists());
    let r = sql_as(
        &s,
        &a_reader,
        "SELECT table_schema, table_name FROM information_schema.tables",
    );
    assert_eq!(r.status, 200);
    assert!(
        !r.text().contains("b_private") && !r.text().contains("audit"),
        "information_schema shows another tenant's table: {}",
        r.text()
    );
    let r = sql_as(&s, &a_reader, "SHOW TABLES");
    assert!(!r.text().contains("b_private"), "SHOW TABLES: {}", r.text());
    // Through the DSL, too.
    refused(
        &s.post_as(
            "/v1/query",
            &a_reader,
            "application/json",
            r#"{"from": "b_private"}"#,
        ),
        400,
        "DSL naming B's table",
    );
    // Naming tenant B in the header.
    let r = s.post_with(
        "/v1/sql",
        &[
            ("authorization", &format!("Bearer {a_reader}")),
            ("x-allsource-tenant", "tenant_b"),
        ],
        "SELECT count(*) FROM b_private",
    );
    refused(&r, 403, "tenant header naming B");
    // The audit log is for admins only.
    refused(
        &sql_as(&s, &a_reader, "SELECT * FROM system.audit"),
        400,
        "reader reading system.audit",
    );
    // Reserved tenant.
    refused(
        &sql_as(&s, &token("system", "writer"), "SELECT 1"),
        403,
        "the system tenant",
    );

    // -- admin: any tenant, and the audit log --
    let r = s.post_with(
        "/v1/sql",
        &[
            ("authorization", &format!("Bearer {admin}")),
            ("x-allsource-tenant", "tenant_b"),
        ],
        "SELECT count(*) AS n FROM b_private",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["n"], 1);
    let r = s.post_as("/v1/admin/compact", &admin, "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    // Audit writes are asynchronous: wait for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = sql_as(
            &s,
            &admin,
            "SELECT event_type, count(*) AS n FROM system.audit GROUP BY event_type ORDER BY event_type",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let kinds: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["event_type"].as_str().unwrap().to_string())
            .collect();
        if ["admin", "auth_failure", "ddl_refused", "server_start"]
            .iter()
            .all(|k| kinds.contains(&k.to_string()))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit log lacks kinds: {kinds:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = sql_as(
        &s,
        &admin,
        "SELECT entity_id, action FROM system.audit WHERE event_type = 'admin'",
    );
    assert!(r.text().contains("ops-admin"), "{}", r.text());
    assert!(r.text().contains("/v1/admin/compact"), "{}", r.text());
    // Health and readiness need no token.
    let r = client.get(s.url("/ready")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Generates an RSA key pair with openssl; returns (private, public) PEM
/// paths.
fn rsa_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let private = dir.join(format!("{name}.key.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .output()
        .expect("run openssl");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(st.status.success());
    (private, public)
}

#[test]
fn rs256_keys_rotate_by_kid_and_refuse_hs_confusion() {
    let dir = tempfile::tempdir().unwrap();
    let (old_private, old_public) = rsa_pair(dir.path(), "old");
    let (new_private, new_public) = rsa_pair(dir.path(), "new");
    let keys = format!("old={},new={}", old_public.display(), new_public.display());
    let s = TestServer::start(&["--jwt-algorithm", "RS256", "--jwt-public-key", &keys]);
    let c = |t: &str| json!({"tenant": t, "role": "reader", "exp": now() + 600});
    for (kid, private) in [("old", &old_private), ("new", &new_private)] {
        let r = sql_as(&s, &rs(c("acme"), private, kid), "SELECT 1 AS one");
        assert_eq!(r.status, 200, "key {kid}: {}", r.text());
    }
    // Signed with the new key but claiming the old one's id.
    refused(
        &sql_as(&s, &rs(c("acme"), &new_private, "old"), "SELECT 1"),
        401,
        "wrong key for kid",
    );
    refused(
        &sql_as(&s, &rs(c("acme"), &new_private, "gone"), "SELECT 1"),
        401,
        "unknown kid",
    );
    // HS256 signed with the RSA public key as the HMAC secret.
    let public_pem = std::fs::read_to_string(&old_public).unwrap();
    let forged = hs(c("acme"), &public_pem, Some("old"));
    refused(&sql_as(&s, &forged, "SELECT 1"), 401, "HS/RS confusion");
}

#[test]
fn refuses_to_listen_on_the_network_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    // Each port in turn (HTTP, Flight SQL, PostgreSQL) on the network.
    let loopback = ["127.0.0.1:0"; 3];
    for port in 0..3 {
        let mut addrs = loopback;
        addrs[port] = "0.0.0.0:0";
        let out = Command::new(crate::support::server_bin())
            .args(["serve", "--http-addr", addrs[0], "--flight-addr", addrs[1]])
            .args(["--pg-addr", addrs[2], "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("0.0.0.0")
                && err.contains("without authentication")
                && err.contains("--insecure"),
            "{err}"
        );
    }
    // The token command mints what the server accepts.
    let out = Command::new(crate::support::server_bin())
        .args([
            "token", "--tenant", "acme", "--role", "writer", "--ttl", "5m",
        ])
        .env("ALLSOURCE_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let s = TestServer::start(&["--jwt-secret", SECRET]);
    let r = ingest_as(
        &s,
        &minted,
        "events",
        &json!({"event_type": "a", "entity_id": "b"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The CLI clients pass the token on.
    let out = Command::new(crate::support::server_bin())
        .args(["query", "--url", &s.base, "--token", &minted, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(br#"{"from": "events", "select": [["count"]]}"#)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(crate::support::server_bin())
        .args(["compact", "--url", &s.base, "--token", &minted])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tokens_minted_by_pyjwt() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/pyjwt_tokens.py"
        ))
        .arg(SECRET)
        .arg(dir.path())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pyjwt_tokens.py failed (is PyJWT installed? scripts/test.sh sets up the virtualenv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = |k: &str| tokens[k].as_str().unwrap().to_string();

    let s = TestServer::start(&["--jwt-secret", SECRET, "--jwt-audience", AUDIENCE]);
    let r = ingest_as(
        &s,
        &t("hs_writer"),
        "events",
        &json!({"event_type": "a", "entity_id": "b"}),
    );
    assert_eq!(r.status, 200, "PyJWT writer: {}", r.text());
    let r = sql_as(&s, &t("hs_reader"), "SELECT count(*) AS n FROM events");
    assert_eq!(r.status, 200, "PyJWT reader: {}", r.text());
    assert_eq!(r.json()[0]["n"], 1);
    let r = sql_as(&s, &t("hs_aud_array"), "SELECT 1 AS one");
    assert_eq!(r.status, 200, "PyJWT aud array: {}", r.text());
    for bad in [
        "hs_expired",
        "hs_wrong_secret",
        "hs_wrong_audience",
        "hs_aud_array_without_ours",
        "hs_no_exp",
    ] {
        refused(&sql_as(&s, &t(bad), "SELECT 1"), 401, bad);
    }
    drop(s);

    let public = dir.path().join("es256.pub.pem");
    let s = TestServer::start(&[
        "--jwt-algorithm",
        "ES256",
        "--jwt-public-key",
        &format!("k1={}", public.display()),
    ]);
    let r = sql_as(&s, &t("es_reader"), "SELECT 1 AS one");
    assert_eq!(r.status, 200, "PyJWT ES256: {}", r.text());
    refused(
        &sql_as(&s, &t("es_other_key"), "SELECT 1"),
        401,
        "ES256 other key",
    );
    refused(
        &sql_as(&s, &t("hs_reader"), "SELECT 1"),
        401,
        "HS256 on an ES256 server",
    );
    drop(s);

    // RS256 keys from a JWKS file, chosen by kid.
    let jwks = dir.path().join("jwks.json");
    let s = TestServer::start(&[
        "--jwt-algorithm",
        "RS256",
        "--jwt-jwks",
        jwks.to_str().unwrap(),
    ]);
    for k in ["rs_rk1", "rs_rk2"] {
        let r = sql_as(&s, &t(k), "SELECT 1 AS one");
        assert_eq!(r.status, 200, "PyJWT {k} via JWKS: {}", r.text());
    }
    refused(
        &sql_as(&s, &t("rs_rk1_signed_by_rk2"), "SELECT 1"),
        401,
        "JWKS key mismatch",
    );
    refused(
        &sql_as(&s, &t("es_reader"), "SELECT 1"),
        401,
        "ES256 on an RS256 server",
    );
}
