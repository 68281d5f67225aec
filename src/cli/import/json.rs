//! JSON files for `allsource import`: the records of a file (each line of
//! NDJSON; each element of a top-level array, or each top-level value, of
//! a JSON file) with the line each starts on, and the events they hold as
//! an Arrow batch in the shape Flight ingest takes.
//!
//! A record is an event exactly as `POST /v1/events` takes one (the same
//! parser), so the same row is refused for the same reason by either path.

use super::chunk::{Place, RowSink};
use allsource::ingest::{Event, ExpectedVersion, parse_event};
use anyhow::bail;
use arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::{Map, Value};
use std::io::BufRead;
use std::sync::Arc;

/// The id of an event that came without one: a digest of the record's
/// text and its place in the file. The same record sent again (a batch
/// resent after an interruption, a file appended to and imported again)
/// gets the same id, so the server stores it once.
pub(super) fn record_id(text: &[u8], index: u64) -> String {
    let text = text.trim_ascii();
    format!("{:016x}-{index}", xxhash_rust::xxh3::xxh3_64(text))
}

/// The event of one record, with an id made when it has none.
fn event(text: &[u8], index: u64) -> Result<Event, String> {
    let mut event = parse_event(text)?;
    if event.event_id.is_none() {
        event.event_id = Some(record_id(text, index));
    }
    Ok(event)
}

/// Skips a UTF-8 byte-order mark at the start of a file.
fn skip_bom(reader: &mut impl BufRead) -> anyhow::Result<()> {
    if reader.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    Ok(())
}

/// The records of NDJSON: one per non-blank line.
pub(super) fn ndjson(
    mut reader: impl BufRead,
    sink: &mut RowSink<'_, Event>,
) -> anyhow::Result<()> {
    skip_bom(&mut reader)?;
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        sink.record(Place::Line(number), |index| event(&line, index))?;
    }
}

/// Reads one byte, counting lines.
struct Scanner<R> {
    reader: R,
    line: u64,
}

impl<R: BufRead> Scanner<R> {
    fn peek(&mut self) -> anyhow::Result<Option<u8>> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    fn take(&mut self) -> anyhow::Result<Option<u8>> {
        let b = self.peek()?;
        if let Some(b) = b {
            self.reader.consume(1);
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(b)
    }

    /// Skips whitespace and returns the next byte, without taking it.
    fn skip_space(&mut self) -> anyhow::Result<Option<u8>> {
        while let Some(b) = self.peek()? {
            if !b.is_ascii_whitespace() {
                return Ok(Some(b));
            }
            self.take()?;
        }
        Ok(None)
    }

    /// The bytes of one JSON value starting at the next byte: balanced
    /// brackets outside strings, or a string, or a scalar up to a
    /// delimiter. Syntax inside is left to the parser.
    fn value(&mut self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        while let Some(b) = self.peek()? {
            if !in_string && depth == 0 && !out.is_empty() {
                // A scalar ends at a delimiter; a container or a string
                // ended when its closing byte was taken.
                let scalar = !matches!(out[0], b'{' | b'[' | b'"');
                if !scalar || b.is_ascii_whitespace() || matches!(b, b',' | b']' | b'}') {
                    return Ok(());
                }
            }
            self.take()?;
            out.push(b);
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The records of a JSON file: the elements of one top-level array, or
/// the values one after another. A value cut off by the end of the file
/// is a record (refused by the parser) and ends the file.
pub(super) fn json(mut reader: impl BufRead, sink: &mut RowSink<'_, Event>) -> anyhow::Result<()> {
    skip_bom(&mut reader)?;
    let mut s = Scanner { reader, line: 1 };
    let array = s.skip_space()? == Some(b'[');
    if array {
        s.take()?;
    }
    let mut value = Vec::new();
    let mut first = true;
    loop {
        let Some(next) = s.skip_space()? else {
            if array {
                bail!("line {}: the file ends inside its top-level array", s.line);
            }
            return Ok(());
        };
        if array {
            if next == b']' {
                s.take()?;
                if let Some(b) = s.skip_space()? {
                    bail!(
                        "line {}: {:?} after the end of the top-level array",
                        s.line,
                        b as char
                    );
                }
                return Ok(());
            }
            if !first {
                if next != b',' {
                    bail!(
                        "line {}: expected ',' or ']' between array elements, found {:?}",
                        s.line,
                        next as char
                    );
                }
                s.take()?;
                match s.skip_space()? {
                    None => continue,
                    Some(b']') => bail!("line {}: a ',' before the array's end", s.line),
                    Some(_) => {}
                }
            }
        }
        first = false;
        let line = s.line;
        value.clear();
        s.value(&mut value)?;
        sink.record(Place::Line(line), |index| event(&value, index))?;
    }
}

/// A nested payload value as the server stores it: its JSON text.
fn flat(value: Value) -> Value {
    match value {
        Value::Object(_) | Value::Array(_) => Value::String(value.to_string()),
        other => other,
    }
}

/// The events (each with an id) as one batch: `event_id`, `event_type`,
/// `entity_id`, `timestamp`, `expected_version` and `schema_version` when
/// any event has one, and a `payload` struct of the payloads' fields.
pub(super) fn batch(events: Vec<Event>) -> anyhow::Result<RecordBatch> {
    let n = events.len();
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("entity_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ];
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(6);
    let (mut types, mut entities, mut times) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut expected, mut versions, mut payloads) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut given_ids = Vec::with_capacity(n);
    for event in events {
        given_ids.push(event.event_id.unwrap_or_default());
        types.push(event.event_type);
        entities.push(event.entity_id);
        times.push(event.timestamp);
        expected.push(match event.expected_version {
            ExpectedVersion::Any => None,
            other => Some(other.to_string()),
        });
        versions.push(event.schema_version.map(i64::from));
        let mut payload = event.payload;
        if payload.values().any(|v| v.is_object() || v.is_array()) {
            payload = payload
                .into_iter()
                .map(|(k, v)| (k, flat(v)))
                .collect::<Map<_, _>>();
        }
        payloads.push(Value::Object(payload));
    }
    columns.push(Arc::new(StringArray::from(given_ids)));
    columns.push(Arc::new(StringArray::from(types)));
    columns.push(Arc::new(StringArray::from(entities)));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(times).with_timezone("UTC"),
    ));
    if expected.iter().any(Option::is_some) {
        fields.push(Field::new("expected_version", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(expected)));
    }
    if versions.iter().any(Option::is_some) {
        fields.push(Field::new("schema_version", DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from(versions)));
    }
    let schema = arrow::json::reader::infer_json_schema_from_iterator(payloads.iter().map(Ok))?;
    if !schema.fields().is_empty() {
        let schema = Arc::new(schema);
        let mut decoder = arrow::json::ReaderBuilder::new(schema)
            .with_coerce_primitive(true)
            .with_batch_size(n.max(1))
            .build_decoder()?;
        decoder.serialize(&payloads)?;
        let payload = match decoder.flush()? {
            Some(b) => StructArray::from(b),
            None => bail!("the payloads decoded to nothing"),
        };
        fields.push(Field::new("payload", payload.data_type().clone(), false));
        columns.push(Arc::new(payload));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import::chunk::collect_records;

    fn records(text: &str, array: bool) -> Vec<(Place, Result<String, String>)> {
        collect_records(|sink| {
            if array {
                json(text.as_bytes(), sink)
            } else {
                ndjson(text.as_bytes(), sink)
            }
        })
        .into_iter()
        .map(|(place, r)| (place, r.map(|e| e.entity_id)))
        .collect()
    }

    #[test]
    fn ndjson_records_keep_their_lines() {
        let text = "{\"event_type\":\"a\",\"entity_id\":\"u1\"}\n\n{bad\n{\"event_type\":\"a\",\"entity_id\":\"u2\"}\n";
        let got = records(text, false);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (Place::Line(1), Ok("u1".into())));
        assert_eq!(got[1].0, Place::Line(3));
        assert!(got[1].1.is_err());
        assert_eq!(got[2], (Place::Line(4), Ok("u2".into())));
    }

    #[test]
    fn json_arrays_and_value_sequences_split_into_records() {
        let text = "[\n {\"event_type\":\"a\",\"entity_id\":\"u]1\",\n  \"payload\":{\"s\":\"x\\\"}\"}},\n {\"event_type\":\"a\"},\n {\"event_type\":\"a\",\"entity_id\":\"u3\"}\n]\n";
        let got = records(text, true);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], (Place::Line(2), Ok("u]1".into())));
        assert_eq!(got[1].0, Place::Line(4));
        assert!(got[1].1.as_ref().unwrap_err().contains("entity_id"));
        assert_eq!(got[2], (Place::Line(5), Ok("u3".into())));
        let seq = "{\"event_type\":\"a\",\n\"entity_id\":\"u1\"}\n{\"event_type\":\"a\",\"entity_id\":\"u2\"}";
        let got = records(seq, true);
        assert_eq!(got[1], (Place::Line(3), Ok("u2".into())));
    }

    #[test]
    fn a_broken_array_is_an_error_naming_the_line() {
        let err = collect_records_err("[{\"event_type\":\"a\",\"entity_id\":\"u\"}\n{}]");
        assert!(err.contains("line 2: expected ',' or ']'"), "{err}");
        let err = collect_records_err("[{\"event_type\":\"a\",\"entity_id\":\"u\"},\n");
        assert!(err.contains("ends inside its top-level array"), "{err}");
    }

    #[test]
    fn made_ids_follow_the_record_and_its_place() {
        let a = br#" {"event_type":"a","entity_id":"u"} "#;
        assert_eq!(record_id(a, 4), record_id(a.trim_ascii(), 4));
        assert_ne!(record_id(a, 4), record_id(a, 5));
        assert_ne!(
            record_id(a, 4),
            record_id(br#"{"event_type":"b","entity_id":"u"}"#, 4)
        );
        let bom = "\u{feff}{\"event_type\":\"a\",\"entity_id\":\"u1\"}\n";
        assert_eq!(records(bom, false)[0], (Place::Line(1), Ok("u1".into())));
        assert_eq!(records(bom, true)[0], (Place::Line(1), Ok("u1".into())));
        let err = collect_records_err("[{\"event_type\":\"a\",\"entity_id\":\"u\"},\n]");
        assert!(
            err.contains("line 2: a ',' before the array's end"),
            "{err}"
        );
    }

    fn collect_records_err(text: &str) -> String {
        let mut err = String::new();
        let mut out = Vec::new();
        crate::cli::import::chunk::with_sink(
            |sink| {
                if let Err(e) = json(text.as_bytes(), sink) {
                    err = e.to_string();
                }
            },
            &mut out,
        );
        err
    }

    #[test]
    fn events_become_a_flat_batch_with_a_payload_struct() {
        let events = [
            r#"{"event_type":"a","entity_id":"u1","event_id":"mine","timestamp":"2026-01-02T03:04:05Z","payload":{"n":1,"tags":["x"]}}"#,
            r#"{"event_type":"b","entity_id":"u2","expected_version":3,"payload":{"n":"two"}}"#,
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| event(t.as_bytes(), i as u64).unwrap())
        .collect();
        let b = batch(events).unwrap();
        let names: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "event_id",
                "event_type",
                "entity_id",
                "timestamp",
                "expected_version",
                "payload"
            ]
        );
        let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(ids.value(0), "mine");
        assert!(ids.value(1).ends_with("-1"), "{}", ids.value(1));
        let payload = b.column(5).as_any().downcast_ref::<StructArray>().unwrap();
        let n = payload.column_by_name("n").unwrap();
        let n = n.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((n.value(0), n.value(1)), ("1", "two"));
        let tags = payload.column_by_name("tags").unwrap();
        let tags = tags.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(tags.value(0), "[\"x\"]");
    }
}
