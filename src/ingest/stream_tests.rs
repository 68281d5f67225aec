//! The body parser against the one-map-per-event parser on a corpus of
//! bad and odd bodies: the same refusal, byte for byte, or the same
//! events.

use super::super::columns::{Cell, Events};
use super::super::parse::{BodyFormat, parse_events};
use super::parse_body;
use std::collections::BTreeMap;

/// Every field's cells by field name (the two parsers meet fields in
/// different orders).
fn by_name(e: &Events) -> BTreeMap<String, Vec<(u32, Cell)>> {
    (e.fields.iter())
        .filter(|f| !f.cells.is_empty())
        .map(|f| (f.name.clone(), f.cells.clone()))
        .collect()
}

/// Parses `body` both ways; returns the refusal, or `None` when both
/// accepted the same events.
fn agree(body: &str, format: BodyFormat) -> Option<String> {
    let old = parse_events(body.as_bytes(), format);
    let new = parse_body(body.as_bytes(), format, &mut |_| Ok(()));
    match (old, new) {
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "refusals differ for {body:?}");
            Some(b.to_string())
        }
        (Ok(events), Ok(columns)) => {
            let expected = Events::from(events);
            assert_eq!(expected.heads, columns.heads, "heads differ for {body:?}");
            assert_eq!(
                by_name(&expected),
                by_name(&columns),
                "payloads differ for {body:?}"
            );
            None
        }
        (a, b) => panic!(
            "the parsers disagree on {body:?}: {:?} against {:?}",
            a.map(|e| e.len()),
            b.map(|e| e.len())
        ),
    }
}

const EVENTS: &[&str] = &[
    // Several problems: the first in key order is reported.
    r#"{"timestamp":"soon","entity_id":5,"event_type":""}"#,
    r#"{"zebra":1,"timestamp":"soon"}"#,
    r#"{"payload":3,"aardvark":1,"event_type":"a","entity_id":"u"}"#,
    r#"{"event_type":"a","entity_id":"u","zz":1,"yy":2}"#,
    r#"{"event_type":"a","entity_id":"u","schema_version":0,"expected_version":-1}"#,
    r#"{"event_type":"a","entity_id":"u","expected_version":[1,2,{"x":"y"}]}"#,
    r#"{"event_type":"a","entity_id":"u","expected_version":"nope"}"#,
    r#"{"event_type":"a","entity_id":"u","schema_version":"2"}"#,
    r#"{"event_type":"a","entity_id":"u","timestamp":1.5}"#,
    r#"{"event_type":"a","entity_id":"u","timestamp":99999999999999999}"#,
    r#"{"event_type":"a","entity_id":"u","timestamp":true}"#,
    r#"{"event_type":"a","entity_id":"u","event_id":""}"#,
    // Missing required fields.
    r#"{"entity_id":"u"}"#,
    r#"{"event_type":"a"}"#,
    r#"{"event_type":null,"entity_id":null}"#,
    r#"{}"#,
    // A repeated field keeps its last value, good or bad.
    r#"{"entity_id":5,"entity_id":"u","event_type":"a"}"#,
    r#"{"entity_id":"u","entity_id":5,"event_type":"a"}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"x":1},"payload":null}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"x":1},"payload":{"y":2}}"#,
    r#"{"event_type":"a","entity_id":"u","payload":7,"payload":{"y":2}}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"y":2},"payload":"no"}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"b":1,"a":2,"b":"three"}}"#,
    // Payload shapes.
    r#"{"event_type":"a","entity_id":"u","payload":[1,2]}"#,
    r#"{"event_type":"a","entity_id":"u","payload":"text"}"#,
    r#"{"event_type":"a","entity_id":"u","payload":false}"#,
    r#"{"event_type":"a","entity_id":"u","payload":null}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"n":null,"t":[1,{"b":2,"a":1}],"o":{"z":1,"a":[]},"f":1.0e2,"i":-3,"u":18446744073709551615,"big":1e300,"s":"\u00e9\n\"q\""}}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"é\u0000":1,"":2}}"#,
    // Not objects.
    r#"[1,2]"#,
    r#""just text""#,
    r#"12"#,
    r#"-1.5e3"#,
    r#"null"#,
    r#"true"#,
    // Broken JSON, in places after a problem of meaning.
    r#"{"event_type":5,"entity_id":"u""#,
    r#"{"event_type":"a","entity_id":"u","payload":{"x":[1,2}}"#,
    r#"{"event_type":"a","entity_id":"u"} trailing"#,
    r#"{"event_type":"a\x","entity_id":"u"}"#,
    r#"{"event_type":"a","entity_id":"u","zz":"\ud800"}"#,
    r#"{"event_type":"a","entity_id":"u",}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"x":01}}"#,
    r#"{"event_type":"a","entity_id":"u","payload":{"x":1e999}}"#,
];

#[test]
fn one_event_bodies_are_refused_alike() {
    let mut refused = 0;
    for text in EVENTS {
        for format in [BodyFormat::Json, BodyFormat::Ndjson] {
            refused += usize::from(agree(text, format).is_some());
        }
    }
    // Most of the corpus is bad: a parser that accepted everything, or
    // refused everything, would not get here.
    assert!(refused > EVENTS.len(), "{refused}");
    assert!(refused < 2 * EVENTS.len() - 8, "{refused}");
}

#[test]
fn many_event_bodies_name_the_same_event() {
    let good = r#"{"event_type":"a","entity_id":"u","payload":{"k":1}}"#;
    for bad in EVENTS {
        let array = format!("[{good},{good},{bad},{good}]");
        agree(&array, BodyFormat::Json);
        let lines = format!("{good}\n\n{good}\n  {bad}  \n{good}\n");
        agree(&lines, BodyFormat::Ndjson);
    }
    for body in ["", "[]", "\n\n", "[", "[{}", "{\"a\":1}\n{", "\u{feff}{}"] {
        agree(body, BodyFormat::Json);
        agree(body, BodyFormat::Ndjson);
    }
    // Deep nesting, within and beyond the parser's limit.
    for depth in [100, 126, 127, 128, 129, 200] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(r#"{{"event_type":"a","entity_id":"u","payload":{{"d":{nested}}}}}"#);
        agree(&body, BodyFormat::Json);
        agree(&body, BodyFormat::Ndjson);
        let body = format!(r#"{{"event_type":"a","entity_id":"u","zz":{nested}}}"#);
        agree(&body, BodyFormat::Json);
    }
}

#[test]
fn payload_fields_keep_the_events_values() {
    let body = concat!(
        r#"{"event_type":"a","entity_id":"u1","payload":{"b":1,"a":"x"}}"#,
        "\n",
        r#"{"event_type":"a","entity_id":"u2"}"#,
        "\n",
        r#"{"event_type":"a","entity_id":"u3","payload":{"a":null,"c":[1]}}"#,
    );
    assert_eq!(agree(body, BodyFormat::Ndjson), None);
    let events = parse_body(body.as_bytes(), BodyFormat::Ndjson, &mut |_| Ok(())).unwrap();
    let names: Vec<&str> = events.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["b", "a", "c"]);
    assert_eq!(
        events.fields[1].cells,
        vec![(0, Cell::Text("x".into())), (2, Cell::Null)]
    );
}

#[test]
fn the_budget_stops_a_body() {
    let line = r#"{"event_type":"a","entity_id":"u","payload":{"k":"some text"}}"#;
    let body = format!("{line}\n").repeat(100);
    let mut taken = 0usize;
    let err = parse_body(body.as_bytes(), BodyFormat::Ndjson, &mut |n| {
        taken += n;
        if taken > 2_000 {
            Err(super::BudgetError::Busy { total: 2_000 })
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(matches!(err, super::Error::Budget(_)), "{err}");
}
