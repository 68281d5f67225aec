//! The ingest decoder and batch builder, fed generated bodies: random
//! bytes; events as JSON text with odd, duplicate and missing keys, wrong
//! types, huge numbers, unicode, deep nesting and out-of-range times; the
//! same laid out as one object, an array or NDJSON lines, then perhaps
//! cut short or with a byte changed; and each read in both body formats.
//!
//! A case is a table's life: one to three bodies ingested into one
//! column registry. Properties:
//! - parsing and building never panic, and every refusal is a variant the
//!   server answers with a 4xx (`Arrow`, a batch that failed to
//!   assemble, would be our bug);
//! - a built batch holds each kept event: its fixed fields, and every
//!   non-null payload value either in the column of its name or under its
//!   key in `_overflow`;
//! - the batch survives the WAL: it encodes and decodes to itself, and
//!   replaying the table's batches rebuilds the same registry.

use super::{Tally, cases, run};
use crate::ingest::{
    BodyFormat, Cell, Error, Event, Events, MAX_DAYS_PER_REQUEST, build_batch, parse_body,
    parse_events,
};
use crate::schema::{self, ColumnKind, ColumnRegistry};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

/// The ingest time the batches are built at.
const NOW: i64 = 1_767_225_600_000_000;

/// A body and the format it is read in.
#[derive(Debug, Clone)]
struct Body {
    bytes: Vec<u8>,
    format: BodyFormat,
}

/// Strings that stress names and values: empty, long, unicode, control
/// characters, case twins of the fixed fields.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,8}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => (500usize..530).prop_map(|n| "é".repeat(n / 2)),
        1 => (505usize..520).prop_map(|n| "x".repeat(n)),
        1 => prop::sample::select(vec![
            "event_id", "Event_Type", "ENTITY_ID", "timestamp", "_overflow", "event_date",
            "ingested_at", "payload", "amount", "Amount", "\u{212a}", "k", "a b", "a,b", "a=b",
            "\t", "\0", "\u{feff}", "ǅ", "İ", "ß", "😀",
        ])
        .prop_map(String::from),
    ]
}

/// Numbers at the edges: huge integers, exact-double limits, fractions.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop::sample::select(vec![
            9_007_199_254_740_992i64,
            9_007_199_254_740_993,
            -9_007_199_254_740_993,
            0,
            -1,
            i64::MIN,
            i64::MAX,
        ])
        .prop_map(|n| json!(n)),
    ]
}

/// Any JSON value, nested a few levels.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((odd_string(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Event times: epoch milliseconds or RFC 3339 text, in range, at the
/// range's edges (1900-01-01 and 2200-01-01), beyond, or of the wrong type.
fn timestamp() -> impl Strategy<Value = Value> {
    const MIN_MS: i64 = -2_208_988_800_000;
    const MAX_MS: i64 = 7_258_118_400_000;
    prop_oneof![
        4 => (MIN_MS..MAX_MS).prop_map(|ms| json!(ms)),
        2 => prop::sample::select(vec![MIN_MS - 1, MIN_MS, MAX_MS - 1, MAX_MS, i64::MIN, i64::MAX])
            .prop_map(|ms| json!(ms)),
        2 => prop::sample::select(vec![
            "2026-01-31T12:00:00Z", "2026-01-31T12:00:00.123456789+14:00", "1900-01-01T00:00:00Z",
            "1900-01-01T00:00:00+00:01", "2199-12-31T23:59:59.999999Z", "2200-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z", "2016-12-31T23:59:60Z", "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z", "yesterday", "", "2026-01-31",
        ])
        .prop_map(|s| json!(s)),
        1 => value(),
    ]
}

/// The fields of one event, in order and possibly repeated: mostly right,
/// sometimes missing, mistyped or unknown.
fn event_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    let id = prop_oneof![6 => "[a-z0-9]{1,6}".prop_map(Value::String), 1 => value()];
    let text = prop_oneof![8 => "[a-z.]{1,8}".prop_map(Value::String), 2 => odd_string().prop_map(Value::String), 1 => value()];
    let payload = prop_oneof![
        6 => prop::collection::vec((odd_string(), value()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => value(),
    ];
    let extra = prop::collection::vec((odd_string(), value()), 0..2);
    (
        prop::option::weighted(0.7, id),
        prop::option::weighted(0.95, text.clone()),
        prop::option::weighted(0.95, text),
        prop::option::weighted(0.8, timestamp()),
        prop::option::weighted(0.8, payload),
        prop::option::weighted(0.1, extra),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(id, ty, entity, ts, payload, extra, dup)| {
            let mut fields: Vec<(String, Value)> = [
                ("event_id", id),
                ("event_type", ty),
                ("entity_id", entity),
                ("timestamp", ts),
                ("payload", payload),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect();
            fields.extend(extra.unwrap_or_default());
            // A repeated key, now and then: the text keeps both.
            if !fields.is_empty() && dup.index(10) == 0 {
                let again = fields[dup.index(fields.len())].clone();
                fields.push(again);
            }
            fields
        })
}

/// The fields of a valid event: right types and times in range, but
/// payloads as odd as [`event_fields`]'s.
fn valid_event_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    const MIN_MS: i64 = -2_208_988_800_000;
    const MAX_MS: i64 = 7_258_118_400_000;
    (
        prop::option::of("[a-z0-9]{1,4}"),
        "[a-z.]{1,8}",
        "\\PC{1,8}",
        prop::option::of(MIN_MS..MAX_MS),
        prop::collection::vec((odd_string(), value()), 0..8),
    )
        .prop_map(|(id, ty, entity, ms, payload)| {
            let mut fields = vec![
                ("event_type".to_string(), json!(ty)),
                ("entity_id".to_string(), json!(entity)),
                (
                    "payload".to_string(),
                    Value::Object(payload.into_iter().collect()),
                ),
            ];
            fields.extend(id.map(|id| ("event_id".to_string(), json!(id))));
            fields.extend(ms.map(|ms| ("timestamp".to_string(), json!(ms))));
            fields
        })
}

/// One event's JSON text; keys may repeat, so it is written by hand.
fn render(fields: &[(String, Value)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// `[[[...]]]` or `{"a":{"a":...}}` `depth` levels deep, perhaps inside an
/// event's payload.
fn deep(depth: usize, object: bool, in_payload: bool) -> String {
    let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
    let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
    if in_payload {
        format!(r#"{{"event_type":"t","entity_id":"u","payload":{{"d":{nested}}}}}"#)
    } else {
        nested
    }
}

/// Events on more distinct days than a request may hold, or with more
/// payload fields than a table may have columns.
fn wide(n: usize, days: bool) -> String {
    if days {
        let lines: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"event_type":"t","entity_id":"u","timestamp":{}}}"#,
                    i as i64 * 86_400_000
                )
            })
            .collect();
        lines.join("\n")
    } else {
        let fields: Vec<String> = (0..n).map(|i| format!(r#""f{i}":{i}"#)).collect();
        format!(
            r#"{{"event_type":"t","entity_id":"u","payload":{{{}}}}}"#,
            fields.join(",")
        )
    }
}

/// How a body's text is laid out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// The first event alone.
    One,
    /// A JSON array.
    Array,
    /// NDJSON, with this line ending, and blank lines between some events.
    Lines(&'static str),
}

/// A body's text: generated events laid out, or a special shape.
fn text() -> impl Strategy<Value = String> {
    let layout = prop_oneof![
        Just(Layout::One),
        Just(Layout::Array),
        Just(Layout::Lines("\n")),
        Just(Layout::Lines("\r\n")),
        Just(Layout::Lines("\n\n  ")),
    ];
    let item = prop_oneof![
        12 => valid_event_fields().prop_map(|f| render(&f)),
        6 => event_fields().prop_map(|f| render(&f)),
        1 => value().prop_map(|v| v.to_string()),
    ];
    prop_oneof![
        40 => (prop::collection::vec(item, 0..6), layout).prop_map(|(items, layout)| match layout {
            Layout::One => items.into_iter().next().unwrap_or_default(),
            Layout::Array => format!("[{}]", items.join(",")),
            Layout::Lines(end) => items.join(end),
        }),
        2 => (100usize..140, any::<bool>(), any::<bool>())
            .prop_map(|(d, object, payload)| deep(d, object, payload)),
        1 => (1000usize..1010).prop_map(|n| wide(n, false)),
        1 => (MAX_DAYS_PER_REQUEST - 2..MAX_DAYS_PER_REQUEST + 4).prop_map(|n| wide(n, true)),
    ]
}

/// A body: generated text, perhaps damaged, or random bytes; read as JSON
/// or as NDJSON whatever its layout.
fn body() -> impl Strategy<Value = Body> {
    let damage = prop_oneof![
        6 => Just(None),
        1 => (any::<prop::sample::Index>(), Just(None)).prop_map(Some),
        1 => (any::<prop::sample::Index>(), any::<u8>().prop_map(Some)).prop_map(Some),
    ];
    let bytes = prop_oneof![
        10 => (text(), damage).prop_map(|(t, damage)| {
            let mut b = t.into_bytes();
            match damage {
                // cut short
                Some((at, None)) if !b.is_empty() => b.truncate(at.index(b.len())),
                // one byte changed
                Some((at, Some(byte))) if !b.is_empty() => {
                    let i = at.index(b.len());
                    b[i] = byte;
                }
                _ => {}
            }
            b
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    let format = prop_oneof![Just(BodyFormat::Json), Just(BodyFormat::Ndjson)];
    (bytes, format).prop_map(|(bytes, format)| Body { bytes, format })
}

/// Why a refusal is counted: its variant. `None` for what the server would
/// answer with a 5xx or is a bug.
fn refusal(e: &Error) -> Option<&'static str> {
    match e {
        Error::Json { .. } => Some("json"),
        Error::InvalidEvent { .. } => Some("invalid-event"),
        Error::InvalidColumn { .. } => Some("invalid-column"),
        Error::Empty => Some("empty"),
        Error::TooLarge(_) => Some("too-large"),
        Error::TooManyDays(_) => Some("too-many-days"),
        Error::Budget(_) | Error::Arrow(_) => None,
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Ingests `bodies` into one table's registry, checking each batch.
fn ingest_all(bodies: &[Body], tally: &Tally) -> Result<(), TestCaseError> {
    let registry = parking_lot::Mutex::new(ColumnRegistry::default());
    let mut logged = Vec::new();
    for body in bodies {
        let outcome = parse_both(body)?.and_then(|(events, columns)| {
            let (ids, keep) = ids_and_keep(&events);
            build_batch(&columns, &keep, &ids, &registry, NOW).map(|b| (events, keep, ids, b))
        });
        match outcome {
            Ok((events, keep, ids, batch)) => {
                check_batch(&events, &keep, &ids, &batch).map_err(fail)?;
                let decoded = crate::db::decode_ipc(&crate::db::encode_ipc(&batch).unwrap())
                    .map_err(|e| fail(format!("the batch does not decode: {e}")))?;
                prop_assert_eq!(&decoded, &batch, "the batch changed through IPC");
                logged.push(decoded);
                tally.add("accepted");
            }
            Err(e) => match refusal(&e) {
                Some(kind) => tally.add(format!("refused {kind}")),
                None => return Err(fail(format!("not a 4xx refusal: {e:?}"))),
            },
        }
    }
    // Replay, as start-up does: adopt each logged batch's columns in order.
    let mut replayed = ColumnRegistry::default();
    for batch in &logged {
        for field in batch
            .schema()
            .fields()
            .iter()
            .skip(schema::FIXED_COLUMNS.len())
        {
            let adopted = ColumnKind::from_data_type(field.data_type())
                .is_some_and(|kind| replayed.adopt(field.name(), kind));
            prop_assert!(adopted, "replay refuses column {:?}", field.name());
        }
    }
    prop_assert_eq!(replayed.schema(), registry.lock().schema());
    Ok(())
}

/// Parses `body` with the body parser and with the one-map-per-event
/// parser, which must agree: the same refusal, word for word, or the same
/// events with the same payload values.
fn parse_both(body: &Body) -> Result<Result<(Vec<Event>, Events), Error>, TestCaseError> {
    let by_event = parse_events(&body.bytes, body.format);
    let by_field = parse_body(&body.bytes, body.format, &mut |_| Ok(()));
    match (by_event, by_field) {
        (Err(a), Err(b)) => {
            prop_assert_eq!(
                a.to_string(),
                b.to_string(),
                "the parsers refuse differently"
            );
            Ok(Err(b))
        }
        (Ok(events), Ok(columns)) => {
            let expected = Events::from(events.clone());
            prop_assert_eq!(&expected.heads, &columns.heads);
            let by_name = |e: &Events| -> std::collections::BTreeMap<String, Vec<(u32, Cell)>> {
                (e.fields.iter())
                    .filter(|f| !f.cells.is_empty())
                    .map(|f| (f.name.clone(), f.cells.clone()))
                    .collect()
            };
            prop_assert_eq!(by_name(&expected), by_name(&columns));
            Ok(Ok((events, columns)))
        }
        (a, b) => Err(fail(format!(
            "the parsers disagree: by event {:?}, by field {:?}",
            a.map(|e| e.len()),
            b.map(|e| e.len())
        ))),
    }
}

/// Event ids as the database takes them: the client's, or a generated
/// one; a client id seen before in the request is dropped as a duplicate.
fn ids_and_keep(events: &[Event]) -> (Vec<String>, Vec<bool>) {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| match &e.event_id {
            Some(id) => (id.clone(), seen.insert(id.clone())),
            None => (format!("generated-{i}"), true),
        })
        .unzip()
}

/// Each kept event is in the batch: fixed fields, and every non-null
/// payload value in its column or in `_overflow`.
fn check_batch(
    events: &[Event],
    keep: &[bool],
    ids: &[String],
    batch: &RecordBatch,
) -> Result<(), String> {
    let kept: Vec<(&Event, &String)> = events
        .iter()
        .zip(ids)
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(e, _)| e)
        .collect();
    if batch.num_rows() != kept.len() {
        return Err(format!(
            "{} rows for {} events",
            batch.num_rows(),
            kept.len()
        ));
    }
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .clone()
    };
    let (id_col, type_col, entity_col) = (text("event_id"), text("event_type"), text("entity_id"));
    let overflow = text("_overflow");
    let times = batch.column_by_name("timestamp").unwrap();
    let times = times.as_primitive::<TimestampMicrosecondType>();
    for (row, (event, id)) in kept.iter().enumerate() {
        let fixed = (
            id_col.value(row),
            type_col.value(row),
            entity_col.value(row),
        );
        if fixed
            != (
                id.as_str(),
                event.event_type.as_str(),
                event.entity_id.as_str(),
            )
            || times.value(row) != event.timestamp.unwrap_or(NOW)
        {
            return Err(format!("row {row} lost a fixed field of {event:?}"));
        }
        let extra: serde_json::Map<String, Value> = if overflow.is_null(row) {
            Default::default()
        } else {
            serde_json::from_str(overflow.value(row)).map_err(|e| format!("_overflow: {e}"))?
        };
        for (key, v) in event.payload.iter().filter(|(_, v)| !v.is_null()) {
            let in_column = batch
                .column_by_name(key)
                .filter(|_| !schema::FIXED_COLUMNS.contains(&key.as_str()))
                .is_some_and(|col| holds(col.as_ref(), row, v));
            if !in_column && extra.get(key) != Some(v) {
                return Err(format!("row {row}: payload {key:?} = {v} is lost"));
            }
        }
    }
    Ok(())
}

/// Whether `col[row]` holds the JSON value `v`, as its column kind stores it.
fn holds(col: &dyn Array, row: usize, v: &Value) -> bool {
    if col.is_null(row) {
        return false;
    }
    match (col.data_type(), v) {
        (DataType::Float64, Value::Number(n)) => {
            Some(col.as_primitive::<Float64Type>().value(row)) == n.as_f64()
        }
        (DataType::Boolean, Value::Bool(b)) => col.as_boolean().value(row) == *b,
        (DataType::Utf8, Value::String(s)) => col.as_string::<i32>().value(row) == s,
        (DataType::Utf8, Value::Array(_) | Value::Object(_)) => {
            // Nested values are kept as their JSON text.
            let text = v.to_string();
            col.as_string::<i32>().value(row) == text
        }
        _ => false,
    }
}

#[test]
fn fuzz_ingest_decoder() {
    let cases = cases(300);
    let tally = Tally::new("ingest");
    run(cases, &prop::collection::vec(body(), 1..4), |bodies| {
        ingest_all(&bodies, &tally)
    });
    tally.report(cases);
}
