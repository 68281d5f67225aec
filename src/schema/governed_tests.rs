use super::*;

fn def(json: serde_json::Value) -> Result<VersionDef, String> {
    let d: VersionDef = serde_json::from_value(json).map_err(|e| e.to_string())?;
    d.check_shape().map(|_| d)
}

#[test]
fn definitions_round_trip_and_count_their_rules() {
    let d = def(serde_json::json!({
        "fields": {"amount": {"type": "number", "required": true, "min": 0, "max": 10},
                   "sku": {"type": "string", "pattern": "^A", "max_length": 4, "mode": "warn"}},
        "additional_fields": "warn",
        "rules": [{"name": "small", "check": "amount < 5"}],
        "modes": {"amount.max": "warn"},
        "migration": [{"rename": {"from": "amt", "to": "amount"}}, {"remove": "old"},
                      {"add": {"field": "sku", "default": "A"}},
                      {"transform": {"field": "amount", "sql": "amount / 100"}}]
    }))
    .unwrap();
    assert_eq!(d.rule_count(), 4 + 3 + 1 + 1);
    let spec = &d.fields["amount"];
    assert_eq!(d.mode_of("amount", spec, "max"), Mode::Warn);
    assert_eq!(d.mode_of("amount", spec, "min"), Mode::Reject);
    assert_eq!(d.mode_of("sku", &d.fields["sku"], "pattern"), Mode::Warn);
    let stored = SchemaVersion {
        version: 2,
        created_ms: 5,
        removed_ms: None,
        def: d,
    };
    let text = serde_json::to_string(&stored).unwrap();
    let back: SchemaVersion = serde_json::from_str(&text).unwrap();
    assert_eq!(back, stored);
    // declared order is kept
    assert_eq!(
        back.def.fields.keys().collect::<Vec<_>>(),
        ["amount", "sku"]
    );
}

#[test]
fn bad_shapes_name_their_place() {
    let refused = |json: serde_json::Value, needle: &str| {
        let e = def(json).unwrap_err();
        assert!(e.contains(needle), "{e} lacks {needle}");
    };
    refused(
        serde_json::json!({"fields": {"a": {"type": "text"}}}),
        "unknown variant",
    );
    refused(
        serde_json::json!({"fields": {"position": {"type": "number"}}}),
        "fields.position",
    );
    refused(
        serde_json::json!({"fields": {"_violations": {"type": "string"}}}),
        "server sets",
    );
    refused(
        serde_json::json!({"fields": {"a": {"type": "string", "min": 1}}}),
        "fields.a.min",
    );
    refused(
        serde_json::json!({"fields": {"a": {"type": "number", "min": 3, "max": 1}}}),
        "fields.a.max",
    );
    refused(
        serde_json::json!({"fields": {"a": {"type": "number", "pattern": "x"}}}),
        "fields.a.pattern",
    );
    refused(
        serde_json::json!({"fields": {"a": {"type": "string", "enum": [1]}}}),
        "fields.a.enum[0]",
    );
    refused(
        serde_json::json!({"fields": {"a": {"type": "integer", "enum": [1.5]}}}),
        "enum[0]",
    );
    refused(
        serde_json::json!({"rules": [{"name": "Bad", "check": "true"}]}),
        "rules[0].name",
    );
    refused(
        serde_json::json!({"rules": [{"name": "a", "check": "true"}, {"name": "a", "check": "x"}]}),
        "rules[1].name",
    );
    refused(
        serde_json::json!({"modes": {"b.max": "warn"}}),
        "modes.b.max",
    );
    refused(serde_json::json!({"migrations": []}), "unknown field");
    refused(
        serde_json::json!({"migration": [{"rename": {"from": "a", "to": "b"}}]}),
        "migration[0].rename",
    );
    refused(
        serde_json::json!({"fields": {"b": {"type": "number"}}, "migration": [{"add": {"field": "b", "default": "x"}}]}),
        "migration[0].add.default",
    );
    refused(
        serde_json::json!({"fields": {"b": {"type": "number"}}, "migration": [{"remove": "b"}]}),
        "migration[0].remove",
    );
}
