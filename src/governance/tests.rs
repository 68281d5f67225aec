use super::*;
use crate::ingest::{BodyFormat, build, parse_events};
use crate::schema::ColumnRegistry;
use crate::schema::governed::VersionDef;
use arrow::array::Array;

fn governance(types: serde_json::Value) -> TableGovernance {
    let mut gov = TableGovernance::default();
    for (event_type, def) in types.as_object().unwrap() {
        let def: VersionDef = serde_json::from_value(def.clone()).unwrap();
        def.check_shape().unwrap();
        gov.types
            .entry(event_type.clone())
            .or_default()
            .push(SchemaVersion {
                version: 1,
                created_ms: 0,
                removed_ms: None,
                def,
            });
    }
    gov
}

/// Checks NDJSON `body` against `gov` as an ingest would.
fn check(gov: &TableGovernance, body: &str) -> (Violations, Option<ArrayRef>) {
    let session = datafusion::prelude::SessionContext::new();
    let checker = TableChecker::compile("t", gov, &session.state()).unwrap();
    let events = parse_events(body.as_bytes(), BodyFormat::Ndjson).unwrap();
    let mut registry = ColumnRegistry::default();
    crate::db::schemas::lay_out(&mut registry, gov, "t").unwrap();
    let registry = parking_lot::Mutex::new(registry);
    let ids: Vec<String> = (0..events.len()).map(|i| format!("id{i}")).collect();
    let events = crate::ingest::Events::from(events);
    let built = build(&events, &vec![true; events.len()], &ids, &registry, 0).unwrap();
    let index: Vec<u64> = (0..events.len() as u64).collect();
    let (v, marks, _) = checker.inspect(&built.batch, &built.facts, &index);
    (v, marks)
}

fn rules_of(v: &Violations) -> Vec<(u64, &str)> {
    v.violations
        .iter()
        .map(|v| (v.index, v.rule.as_str()))
        .collect()
}

#[test]
fn mixed_types_run_their_own_rules_and_mark_warned_rows() {
    let gov = governance(serde_json::json!({
        "buy": {"fields": {"amount": {"type": "number", "max": 10}}},
        "view": {"mode": "warn", "fields": {"page": {"type": "string", "max_length": 3}}},
    }));
    let body = [
        r#"{"event_type":"view","entity_id":"a","payload":{"page":"ünïcø"}}"#,
        r#"{"event_type":"buy","entity_id":"a","payload":{"amount":5}}"#,
        r#"{"event_type":"other","entity_id":"a","payload":{"amount":50}}"#,
        r#"{"event_type":"view","entity_id":"a","payload":{"page":"äöü"}}"#,
        r#"{"event_type":"buy","entity_id":"a","payload":{"amount":11,"page":"long text"}}"#,
    ]
    .join("\n");
    let (v, marks) = check(&gov, &body);
    // "äöü" is 3 characters (6 bytes): within the limit.
    assert_eq!(rules_of(&v), [(0, "page.length"), (4, "amount.max")]);
    assert_eq!((v.rejected, v.warned, v.total), (1, 1, 2));
    assert_eq!(
        v.violations[0].message,
        "is 5 characters long; the most is 3"
    );
    let marks = marks.unwrap();
    let marks = marks.as_string::<i32>();
    assert_eq!(marks.value(0), r#"["page.length"]"#);
    assert!((1..5).all(|r| marks.is_null(r)));
}

#[test]
fn types_tell_strings_from_nested_values_and_misfits() {
    let gov = governance(serde_json::json!({
        "e": {"fields": {"s": {"type": "string", "enum": ["x"]}, "o": {"type": "object"},
                         "n": {"type": "integer", "required": true}}},
    }));
    let body = [
        r#"{"event_type":"e","entity_id":"a","payload":{"s":"x","o":{"k":1},"n":3}}"#,
        r#"{"event_type":"e","entity_id":"a","payload":{"s":{"k":1},"o":"{\"k\":1}","n":"3"}}"#,
        r#"{"event_type":"e","entity_id":"a","payload":{"s":"y","o":[1],"n":2.5}}"#,
    ]
    .join("\n");
    let (v, _) = check(&gov, &body);
    // Rules follow the declared fields, which `json!` sorts by name.
    assert_eq!(
        rules_of(&v),
        [
            (1, "n.type"),
            (1, "o.type"),
            (1, "s.type"),
            (2, "n.type"),
            (2, "o.type"),
            (2, "s.enum")
        ]
    );
    let messages: Vec<&str> = v.violations.iter().map(|v| v.message.as_str()).collect();
    assert_eq!(messages[0], "expected an integer, found a string (\"3\")");
    assert_eq!(
        messages[1],
        "expected an object, found a string (\"{\\\"k\\\":1}\")"
    );
    assert_eq!(messages[2], "expected a string, found an object");
    assert_eq!(messages[3], "expected an integer, found 2.5");
    assert_eq!(messages[4], "expected an object, found an array");
}

#[test]
fn facts_follow_the_rows_a_filter_keeps() {
    let facts = Facts {
        nested: [("a".to_string(), vec![0, 2, 3])].into(),
    };
    let kept = facts.filter(&[false, true, true, true]);
    assert_eq!(kept.nested["a"], [1, 2]);
}

#[test]
fn sql_rules_must_be_boolean_and_deterministic() {
    let session = datafusion::prelude::SessionContext::new();
    let compile = |check: &str| {
        let gov = governance(serde_json::json!({
            "e": {"fields": {"a": {"type": "number"}}, "rules": [{"name": "r", "check": check}]},
        }));
        TableChecker::compile("t", &gov, &session.state()).map(|_| ())
    };
    assert!(compile("a > 1 AND entity_id <> ''").is_ok());
    assert!(
        compile("a + 1")
            .unwrap_err()
            .contains("e.v1.rules[0].check: must be a boolean")
    );
    assert!(
        compile("random() > 0.5")
            .unwrap_err()
            .contains("same answer")
    );
    assert!(
        compile("b > 1")
            .unwrap_err()
            .contains("e.v1.rules[0].check")
    );
}
