//! Schemas and validation rules through HTTP and Flight: every rule kind
//! in `reject` mode (all violations listed with their paths, nothing
//! stored, the ids free for a corrected retry) and in `warn` mode (stored,
//! marked in `_violations`, counted in `/metrics`), `/v1/validate`,
//! refused registrations, and rules that survive `kill -9`.

use crate::support::*;
use serde_json::{Value, json};

/// Declares every built-in rule kind, with `mode` for all of them.
fn purchase_schema(mode: &str) -> Value {
    json!({
        "mode": mode,
        "fields": {
            "amount": {"type": "number", "required": true, "min": 0, "max": 10000},
            "qty": {"type": "integer", "exclusive_min": 0, "exclusive_max": 1000},
            "currency": {"type": "string", "enum": ["EUR", "USD"]},
            "tier": {"type": "number", "enum": [1, 2, 3]},
            "gift": {"type": "boolean"},
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d+$", "min_length": 5, "max_length": 12},
            "address": {"type": "object"},
            "items": {"type": "array"},
            "note": {"type": "any"},
            "discount": {"type": "number"}
        },
        "additional_fields": mode,
        "rules": [{"name": "discount_below_amount", "check": "discount IS NULL OR discount <= amount",
                   "message": "a discount cannot exceed the amount"}]
    })
}

fn good_payload() -> Value {
    json!({"amount": 10, "qty": 1, "currency": "EUR", "tier": 1, "gift": false, "sku": "ABC-12",
           "address": {"city": "Graz"}, "items": [1], "note": "n"})
}

/// Twelve events, each breaking the rules listed for it in [`expected`].
fn bad_events() -> Vec<Value> {
    let changes: Vec<Value> = vec![
        json!({"amount": null}),
        json!({"amount": "ten"}),
        json!({"qty": 2.5}),
        json!({"gift": "yes"}),
        json!({"currency": {"code": "EUR"}, "address": "Main Street 1"}),
        json!({"items": {"first": 1}}),
        json!({"amount": -1}),
        json!({"qty": 1000}),
        json!({"currency": "GBP", "tier": 4}),
        json!({"sku": "abc"}),
        json!({"colour": "red", "discount": 50}),
        json!({}),
    ];
    changes
        .into_iter()
        .enumerate()
        .map(|(i, change)| {
            let mut payload = good_payload();
            for (k, v) in change.as_object().unwrap() {
                match v.is_null() {
                    true => payload.as_object_mut().unwrap().remove(k),
                    false => payload.as_object_mut().unwrap().insert(k.clone(), v.clone()),
                };
            }
            let event_type = if i == 11 { "purchse" } else { "purchase" };
            json!({"event_id": format!("e{i}"), "event_type": event_type, "entity_id": format!("u{i}"),
                   "payload": payload})
        })
        .collect()
}

/// (index, path, rule) of every violation of [`bad_events`], in order:
/// by event, then by the order of the rules, which follows the declared
/// fields (`json!` sends them sorted by name).
fn expected() -> Vec<(u64, String, String)> {
    [
        (0, "amount", "amount.required"),
        (1, "amount", "amount.type"),
        (2, "qty", "qty.type"),
        (3, "gift", "gift.type"),
        (4, "address", "address.type"),
        (4, "currency", "currency.type"),
        (5, "items", "items.type"),
        (6, "amount", "amount.min"),
        (7, "qty", "qty.max"),
        (8, "currency", "currency.enum"),
        (8, "tier", "tier.enum"),
        (9, "sku", "sku.pattern"),
        (9, "sku", "sku.length"),
        (10, "colour", "additional_fields"),
        (10, "", "discount_below_amount"),
        (11, "event_type", "event_types"),
    ]
    .into_iter()
    .map(|(i, field, rule)| {
        let path = match field {
            "event_type" => format!("$[{i}].event_type"),
            "" => format!("$[{i}].payload"),
            f => format!("$[{i}].payload.{f}"),
        };
        (i, path, rule.to_string())
    })
    .collect()
}

fn listed(violations: &Value) -> Vec<(u64, String, String)> {
    violations
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["index"].as_u64().unwrap(),
                v["path"].as_str().unwrap().to_string(),
                v["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Governs `table` with [`purchase_schema`] in `mode`, allowing purchases
/// and refunds.
fn govern(s: &TestServer, table: &str, mode: &str) {
    let r = s.post(
        &format!("/v1/schemas/{table}/purchase"),
        "application/json",
        purchase_schema(mode).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["version"], 1);
    let (status, body) = s.client_put(
        &format!("/v1/schemas/{table}"),
        &json!({"event_types": {"allowed": ["purchase", "refund"], "mode": mode}}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
}

fn columns(s: &TestServer, table: &str) -> Vec<String> {
    s.sql(&format!(
        "SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
    ))
    .into_iter()
    .map(|r| r["column_name"].as_str().unwrap().to_string())
    .collect()
}

#[test]
fn every_rule_kind_rejects_listing_all_violations_and_stores_nothing() {
    let s = TestServer::start(&[]);
    govern(&s, "orders", "reject");
    let before = columns(&s, "orders");
    let r = s.post(
        "/v1/events?table=orders",
        "application/json",
        Value::from(bad_events()).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    let details = &body["details"];
    assert_eq!(listed(&details["violations"]), expected(), "{details:#}");
    assert_eq!(details["rejected"], 12);
    assert_eq!(details["total"], 16);
    assert!(
        details["violations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["mode"] == "reject")
    );
    let messages: Vec<&str> = details["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    for needle in [
        "required field is missing",
        "expected a number, found a string (\"ten\")",
        "expected an integer, found 2.5",
        "expected an object, found a string (\"Main Street 1\")",
        "expected an array, found an object",
        "-1 is below the minimum 0",
        "1000 is not below 1000",
        "\"GBP\" is not one of \"EUR\", \"USD\"",
        "4 is not one of 1, 2, 3",
        "\"abc\" does not match ^[A-Z]{3}-\\d+$",
        "is 3 characters long; the least is 5",
        "field \"colour\" is not declared in purchase v1",
        "a discount cannot exceed the amount",
        "\"purchse\" is not an event type of table orders (allowed: purchase, refund)",
    ] {
        assert!(messages.contains(&needle), "{needle:?} not in {messages:?}");
    }
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("12 events break rules of table \"orders\"")
    );
    // Nothing stored, and the refused request's new field left no column.
    assert_eq!(s.scalar("SELECT count(*) FROM orders"), 0);
    assert_eq!(columns(&s, "orders"), before);
    assert!(!before.contains(&"colour".to_string()));
    // The same ids, corrected, are new events.
    let fixed: Vec<Value> = bad_events()
        .into_iter()
        .map(|mut e| {
            e["event_type"] = "purchase".into();
            e["payload"] = good_payload();
            e
        })
        .collect();
    let r = s.post(
        "/v1/events?table=orders",
        "application/json",
        Value::from(fixed).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["accepted"].clone(), r.json()["duplicates"].clone()),
        (json!(12), json!(0))
    );
    assert!(r.json().get("warnings").is_none());
    assert_eq!(
        s.scalar("SELECT count(*) FROM orders WHERE _violations IS NULL"),
        12
    );
    assert_eq!(
        s.metric("allsource_validation_rejected_total{table=\"orders\",tenant=\"default\"}"),
        12.0
    );
    assert_eq!(
        s.metric(
            "allsource_validation_violations_total{mode=\"reject\",rule=\"sku.length\",table=\"orders\",tenant=\"default\"}"
        ),
        1.0
    );
    // NDJSON counts events the same way.
    let ndjson = format!(
        "{}\n{}\n",
        json!({"event_type": "purchase", "entity_id": "n", "payload": good_payload()}),
        json!({"event_type": "purchase", "entity_id": "n", "payload": {"amount": 20000}})
    );
    let r = s.post("/v1/events?table=orders", "application/x-ndjson", ndjson);
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json()["details"]["violations"].clone();
    assert_eq!(
        listed(&v),
        vec![(
            1,
            "$[1].payload.amount".to_string(),
            "amount.max".to_string()
        )]
    );
    assert_eq!(s.scalar("SELECT count(*) FROM orders"), 12);
}

#[test]
fn every_rule_kind_in_warn_mode_stores_counts_and_shows() {
    let s = TestServer::start(&[]);
    govern(&s, "loose", "warn");
    let r = s.post(
        "/v1/events?table=loose",
        "application/json",
        Value::from(bad_events()).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let warnings = &r.json()["warnings"];
    assert_eq!(warnings["total"], 16);
    assert_eq!(warnings["by_rule"]["currency.type"], 1);
    assert_eq!(warnings["by_rule"]["event_types"], 1);
    assert_eq!(warnings["by_rule"]["discount_below_amount"], 1);
    // The reply lists the first 20; all are warnings.
    assert_eq!(listed(&warnings["violations"]), expected());
    assert_eq!(s.scalar("SELECT count(*) FROM loose"), 12);
    let marks: Vec<(String, Value)> = s
        .sql("SELECT event_id, _violations FROM loose ORDER BY position")
        .into_iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().to_string(),
                r["_violations"].clone(),
            )
        })
        .collect();
    let mut want: Vec<(String, Value)> = (0..12).map(|i| (format!("e{i}"), Value::Null)).collect();
    for (i, _, rule) in expected() {
        let slot = &mut want[i as usize].1;
        let mut names: Vec<String> = match slot {
            Value::String(s) => serde_json::from_str(s).unwrap(),
            _ => Vec::new(),
        };
        names.push(rule);
        *slot = Value::from(serde_json::to_string(&names).unwrap());
    }
    assert_eq!(marks, want);
    // The wrongly typed values are kept, in `_overflow`.
    assert_eq!(
        s.scalar("SELECT _overflow FROM loose WHERE event_id = 'e1'"),
        json!("{\"amount\":\"ten\"}")
    );
    let series = |rule: &str| {
        s.metric(&format!(
            "allsource_validation_violations_total{{mode=\"warn\",rule=\"{rule}\",table=\"loose\",tenant=\"default\"}}"
        ))
    };
    assert_eq!(series("amount.type"), 1.0);
    assert_eq!(series("additional_fields"), 1.0);
    assert_eq!(
        s.metric("allsource_validation_rejected_total{table=\"loose\",tenant=\"default\"}"),
        0.0
    );
}

#[test]
fn validate_checks_without_storing_or_creating() {
    let s = TestServer::start(&[]);
    // No rules: valid, and no table appears.
    let r = s.post(
        "/v1/validate?table=fresh",
        "application/json",
        json!({"event_type": "x", "entity_id": "u"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["valid"], true);
    let r = s.post("/v1/sql", "text/plain", "SELECT count(*) FROM fresh");
    assert_eq!(r.status, 400, "{}", r.text());
    govern(&s, "orders", "reject");
    let r = s.post(
        "/v1/validate?table=orders",
        "application/json",
        Value::from(bad_events()).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    assert_eq!(report["valid"], false);
    assert_eq!(report["events"], 12);
    assert_eq!(report["rejected"], 12);
    assert_eq!(listed(&report["violations"]), expected());
    let good = json!([{"event_type": "purchase", "entity_id": "u", "payload": good_payload()}]);
    let r = s.post(
        "/v1/validate?table=orders",
        "application/json",
        good.to_string(),
    );
    assert_eq!(r.json()["valid"], true, "{}", r.text());
    // Nothing was stored, and the undeclared field made no column.
    assert_eq!(s.scalar("SELECT count(*) FROM orders"), 0);
    assert!(!columns(&s, "orders").contains(&"colour".to_string()));
}

#[test]
fn registration_refusals_name_the_path() {
    let s = TestServer::start(&["--max-validation-rules", "6", "--max-schema-versions", "2"]);
    s.ingest(&json!({"event_type": "label", "entity_id": "u", "payload": {"label": "text"}}));
    let refused = |event_type: &str, body: Value, status: u16, needles: &[&str]| {
        let r = s.post(
            &format!("/v1/schemas/events/{event_type}"),
            "application/json",
            body.to_string(),
        );
        assert_eq!(r.status, status, "{body}: {}", r.text());
        for needle in needles {
            assert!(
                r.error().contains(needle),
                "{body}: {:?} lacks {needle:?}",
                r.error()
            );
        }
    };
    let rule = |check: &str| json!({"fields": {"amount": {"type": "number"}}, "rules": [{"name": "r", "check": check}]});
    refused(
        "p",
        json!({"fields": {"sku": {"type": "string", "pattern": "(unclosed"}}}),
        400,
        &["p.v1.fields.sku.pattern"],
    );
    refused(
        "p",
        rule("amount + 1"),
        400,
        &["p.v1.rules[0].check", "boolean"],
    );
    refused("p", rule("nope > 1"), 400, &["p.v1.rules[0].check", "nope"]);
    refused(
        "p",
        rule("timestamp < now()"),
        400,
        &["p.v1.rules[0].check", "same answer"],
    );
    refused(
        "p",
        rule("amount > (SELECT 1)"),
        400,
        &["p.v1.rules[0].check"],
    );
    refused(
        "p",
        json!({"fields": {"label": {"type": "number"}}}),
        400,
        &["p.fields.label", "VARCHAR"],
    );
    refused(
        "p",
        json!({"fields": {"_violations": {"type": "string"}}}),
        400,
        &["fields._violations"],
    );
    refused(
        "p",
        json!({"fields": {"position": {"type": "number"}}}),
        400,
        &["fields.position"],
    );
    refused(
        "p",
        json!({"fields": {"a": {"type": "string", "min": 1}}}),
        400,
        &["fields.a.min"],
    );
    refused("p", json!({"migrations": []}), 400, &["unknown field"]);
    refused(
        "p",
        json!({"fields": {"a": {"type": "number"}}, "migration": [{"add": {"field": "a", "default": 1}}]}),
        400,
        &["p.v1.migration", "no earlier one"],
    );
    // Caps: rules per table and versions per type.
    let four = json!({"fields": {"a": {"type": "number", "required": true, "min": 0, "max": 5}}});
    let r = s.post("/v1/schemas/events/p", "application/json", four.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    refused("q", four.clone(), 429, &["--max-validation-rules"]);
    let one = json!({"fields": {"a": {"type": "number"}}});
    let r = s.post("/v1/schemas/events/p", "application/json", one.to_string());
    assert_eq!(r.json()["version"], 2, "{}", r.text());
    refused("p", one, 429, &["--max-schema-versions"]);
    // The refused registrations changed nothing.
    let versions = s.get("/v1/schemas/events/p").json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert_eq!(s.get("/v1/schemas/events/q").status, 404);
    // Ingest still works for what is governed.
    let r = s.post(
        "/v1/events",
        "application/json",
        json!({"event_type": "p", "entity_id": "u", "payload": {"a": "x"}}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn roles_apply_to_schemas_and_validation() {
    let s = hs_server();
    let admin = token("acme", "admin");
    let writer = token("acme", "writer");
    let reader = token("acme", "reader");
    let body = json!({"fields": {"amount": {"type": "number", "max": 5}}}).to_string();
    let r = s.post_as("/v1/schemas/events/p", &writer, "application/json", &body);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = s.post_as("/v1/schemas/events/p", &admin, "application/json", &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.get_as("/v1/schemas/events", &reader);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["types"]["p"][0]["version"], 1);
    let event = json!({"event_type": "p", "entity_id": "u", "payload": {"amount": 9}}).to_string();
    let r = s.post_as("/v1/validate", &reader, "application/json", &event);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = s.post_as("/v1/validate", &writer, "application/json", &event);
    assert_eq!(r.json()["valid"], false, "{}", r.text());
    // Another tenant's table of the same name is not governed.
    let other = token("other", "writer");
    let r = s.post_as("/v1/events", &other, "application/json", &event);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        s.get_as("/v1/schemas", &token("other", "reader")).json()["tables"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rules_survive_kill9_and_refuse_flight_uploads_and_pipeline_outputs() {
    let mut s = TestServer::start(&[]);
    let schema = json!({"fields": {"amount": {"type": "number", "max": 100}}});
    for table in ["events", "capped"] {
        let r = s.post(
            &format!("/v1/schemas/{table}/order"),
            "application/json",
            schema.to_string(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    s.kill9();
    s.restart();
    let r = s.post(
        "/v1/events",
        "application/json",
        json!({"event_type": "order", "entity_id": "u", "payload": {"amount": 500}}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("$[0].payload.amount amount.max"),
        "{}",
        r.error()
    );

    // Flight: the row of the upload is named.
    use arrow::array::{Float64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter([
        (
            "event_type",
            Arc::new(StringArray::from(vec!["order"; 3])) as _,
        ),
        (
            "entity_id",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as _,
        ),
        (
            "amount",
            Arc::new(Float64Array::from(vec![1.0, 2.0, 300.0])) as _,
        ),
    ])
    .unwrap();
    let rt = crate::flight::runtime();
    rt.block_on(async {
        let mut client = crate::flight::connect(&s).await;
        let result = crate::flight::ingest(
            &mut client,
            crate::flight::create_append("events"),
            vec![batch],
        )
        .await;
        crate::flight::expect_code(
            result,
            tonic::Code::InvalidArgument,
            "$[2].payload.amount amount.max",
            "flight",
        );
    });
    assert_eq!(
        s.scalar("SELECT count(*) FROM events WHERE event_type = 'order'"),
        0
    );

    // A pipeline whose output breaks its sink's rules fails, naming them.
    s.ingest(&json!([{"event_type": "order", "entity_id": "u", "payload": {"amount": 50}}]));
    let r = s.post(
        "/v1/pipelines",
        "application/json",
        json!({"name": "double", "source": {"table": "events"},
               "operators": [{"op": "map", "fields": {"amount": "amount * 4"}}],
               "sink": {"table": "capped"}})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until(
        "the pipeline fails",
        std::time::Duration::from_secs(30),
        || {
            let info = s.get("/v1/pipelines/double").json();
            info["status"] == "failed"
                && info["error"].as_str().unwrap_or("").contains("amount.max")
        },
    );
    assert_eq!(s.scalar("SELECT count(*) FROM capped"), 0);
}

#[test]
fn a_restored_backup_keeps_its_rules() {
    let mut s = TestServer::start(&[]);
    govern(&s, "orders", "reject");
    let good = json!([{"event_type": "purchase", "entity_id": "u", "payload": good_payload()}]);
    let r = s.post(
        "/v1/events?table=orders",
        "application/json",
        good.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    crate::backup::backup(&s, "b1");
    s.stop();
    let (_target, data) = crate::backup::restore_fresh(&s.data_dir.join("backups/default/b1"));
    let restored = TestServer::start_in(&data, &[]);
    assert_eq!(
        restored.get("/v1/schemas/orders").json()["types"]["purchase"][0]["version"],
        1
    );
    let r = restored.post(
        "/v1/events?table=orders",
        "application/json",
        Value::from(bad_events()).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(listed(&r.json()["details"]["violations"]), expected());
    assert_eq!(restored.scalar("SELECT count(*) FROM orders"), 1);
}

#[test]
fn cli_registers_shows_and_validates() {
    use crate::cli_resources::{cli, json_of, ok, refused};
    let s = TestServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("purchase.json");
    std::fs::write(&file, purchase_schema("reject").to_string()).unwrap();
    let file = file.to_str().unwrap();
    let version = json_of(&ok(
        &s,
        &["schemas", "register", "orders", "purchase", "-f", file],
    ));
    assert_eq!(version["version"], 1);
    ok(
        &s,
        &[
            "schemas",
            "event-types",
            "orders",
            "--allow",
            "purchase,refund",
        ],
    );
    let list = ok(&s, &["schemas", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("TABLE") && lines[0].contains("SCHEMAS"),
        "{list}"
    );
    assert!(
        lines[1].starts_with("orders") && lines[1].contains("purchase v1"),
        "{list}"
    );
    assert!(lines[1].contains("purchase,refund"), "{list}");
    let shown = json_of(&ok(&s, &["schemas", "show", "orders", "purchase"]));
    assert_eq!(shown["versions"][0]["fields"]["amount"]["max"], 10000.0);
    // A refused registration fails with the server's message.
    let err = refused(
        &s,
        &["schemas", "register", "orders", "purchase", "-f", "-"],
        r#"{"fields":{"a":{"type":"text"}}}"#,
    );
    assert!(
        err.contains("400") && err.contains("unknown variant"),
        "{err}"
    );
    // validate: one line per violation, failing when any is refused.
    let events = dir.path().join("events.json");
    std::fs::write(&events, Value::from(bad_events()).to_string()).unwrap();
    let out = cli(
        &s,
        &["validate", "--table", "orders", events.to_str().unwrap()],
        "",
    );
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<(String, String)> = stdout
        .lines()
        .filter(|l| l.starts_with("$["))
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect();
    let want: Vec<(String, String)> = expected()
        .into_iter()
        .map(|(_, path, rule)| (path, rule))
        .collect();
    assert_eq!(listed, want, "{stdout}");
    assert!(
        stdout.contains("12 events: 12 would be refused"),
        "{stdout}"
    );
    let good = format!(
        "{}\n{}\n",
        json!({"event_type": "purchase", "entity_id": "a", "payload": good_payload()}),
        json!({"event_type": "refund", "entity_id": "a"})
    );
    let out = cli(&s, &["validate", "--table", "orders", "-"], &good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("2 events: 0 would be refused")
    );
    assert_eq!(s.scalar("SELECT count(*) FROM orders"), 0);
    // Rolled back, the version is a tombstone and its rules stop applying.
    let err = refused(&s, &["schemas", "rollback", "orders", "purchase", "2"], "");
    assert!(err.contains("404"), "{err}");
    let gone = json_of(&ok(&s, &["schemas", "rollback", "orders", "purchase", "1"]));
    assert!(gone["removed_ms"].is_i64(), "{gone}");
    let out = cli(
        &s,
        &["validate", "--table", "orders", events.to_str().unwrap()],
        "",
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("12 events: 1 would be refused"), "{stdout}");
}

#[test]
fn stored_rules_that_no_longer_compile_refuse_ingest_naming_why() {
    let mut s = TestServer::start(&[]);
    let schema = json!({"fields": {"amount": {"type": "number"}},
                        "rules": [{"name": "positive", "check": "amount > 0"}]});
    let r = s.post(
        "/v1/schemas/events/order",
        "application/json",
        schema.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s.stop();
    // As if an upgrade had dropped a function the rule calls.
    let file = s.data_dir.join("schemas/default/events.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("amount > 0"), "{text}");
    std::fs::write(
        &file,
        text.replace("amount > 0", "no_such_function(amount) > 0"),
    )
    .unwrap();
    s.restart();
    let r = s.post(
        "/v1/events",
        "application/json",
        json!({"event_type": "order", "entity_id": "u", "payload": {"amount": 5}}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["details"]["violations"][0]["rule"], "schema");
    assert!(r.error().contains("no longer compile"), "{}", r.error());
    assert!(r.error().contains("no_such_function"), "{}", r.error());
    assert!(
        s.log().contains("stored rules do not compile"),
        "the start-up names it"
    );
    // Other tables are not held up.
    let r = s.post(
        "/v1/events?table=other",
        "application/json",
        json!({"event_type": "order", "entity_id": "u"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A new version cannot be added beside the broken one, which writers
    // may still declare: the refusal names it. Rolled back, it is healed.
    let r = s.post(
        "/v1/schemas/events/order",
        "application/json",
        schema.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("order.v1.rules[0].check"),
        "{}",
        r.error()
    );
    let r = s.delete("/v1/schemas/events/order/versions/1");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.post(
        "/v1/schemas/events/order",
        "application/json",
        schema.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    s.ingest(&json!({"event_type": "order", "entity_id": "u", "payload": {"amount": 5}}));
    let r = s.post(
        "/v1/events",
        "application/json",
        json!({"event_type": "order", "entity_id": "u", "payload": {"amount": -5}}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("positive"), "{}", r.error());
}
