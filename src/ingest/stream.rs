//! The request body parser: events straight into [`Events`], each payload
//! value into its field's cells as the JSON parser reads it, so that no
//! event becomes a JSON tree or a map of its own.
//!
//! It accepts and refuses exactly what [`super::parse_events`] does, with
//! the same messages: the fixed fields go through the same checks, a field
//! given twice keeps its last value, and when an event has several
//! problems the one reported is that of the first field in key order.

use super::budget::BudgetError;
use super::columns::{Cell, Events, Head};
use super::parse::{
    BodyFormat, body_outcome, optional_string, parse_expected, parse_schema_version,
    parse_timestamp, strip_position, trim_ascii, truncate,
};
use super::{Error, Result};
use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess};
use serde_json::{Number, Value};
use std::borrow::Cow;

/// Parses a whole body into [`Events`], all or nothing, calling `charge`
/// with the bytes each event takes before going on, so that a budget can
/// stop a body whose events take too much.
pub fn parse_body(
    body: &[u8],
    format: BodyFormat,
    charge: &mut dyn FnMut(usize) -> Result<(), BudgetError>,
) -> Result<Events> {
    let mut events = Events::new();
    match format {
        BodyFormat::Json => parse_json(body, &mut events, charge)?,
        BodyFormat::Ndjson => {
            // One event per line, and none shorter than the smallest event.
            let lines = body.iter().filter(|b| **b == b'\n').count() + 1;
            charge(events.expect(lines.min(body.len() / SMALLEST_EVENT)))?;
            for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
                let line = trim_ascii(line);
                if line.is_empty() {
                    continue;
                }
                let index = events.len();
                let line_no = line_no + 1;
                let mut de = serde_json::Deserializer::from_slice(line);
                let verdict = EventSeed {
                    events: &mut events,
                }
                .deserialize(&mut de)
                .and_then(|verdict| de.end().map(|()| verdict))
                .map_err(|e| Error::Json {
                    location: format!("line {line_no}, column {}", e.column()),
                    message: strip_position(&e),
                })?;
                let bytes = verdict.map_err(|reason| Error::InvalidEvent {
                    index,
                    line: Some(line_no),
                    reason,
                })?;
                charge(bytes)?;
            }
        }
    }
    if events.is_empty() {
        return Err(Error::Empty);
    }
    Ok(events)
}

/// The length of the shortest event's JSON text,
/// `{"event_type":"a","entity_id":"b"}`.
const SMALLEST_EVENT: usize = 34;

/// A JSON body: one event object, or an array of them.
fn parse_json(
    body: &[u8],
    events: &mut Events,
    charge: &mut dyn FnMut(usize) -> Result<(), BudgetError>,
) -> Result<()> {
    let mut failure = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let visitor = BodyVisitor {
        events,
        charge,
        failure: &mut failure,
    };
    let parsed = de.deserialize_any(visitor).and_then(|()| de.end());
    body_outcome(failure, parsed)
}

/// What reading one event gave: the bytes it took, or why it is not an
/// event (the JSON itself was well formed).
type Verdict = Result<usize, String>;

/// The top level of a JSON body.
struct BodyVisitor<'a> {
    events: &'a mut Events,
    charge: &'a mut dyn FnMut(usize) -> Result<(), BudgetError>,
    /// Set when the visitor stops the parse for a reason of its own.
    failure: &'a mut Option<Error>,
}

impl BodyVisitor<'_> {
    /// Charges the event at `index`, or records why it is refused and
    /// stops the parse.
    fn take<E: de::Error>(&mut self, index: usize, verdict: Verdict) -> Result<(), E> {
        let kept = verdict
            .map_err(|reason| Error::InvalidEvent {
                index,
                line: None,
                reason,
            })
            .and_then(|bytes| Ok((self.charge)(bytes)?));
        kept.map_err(|e| {
            *self.failure = Some(e);
            E::custom("stopped")
        })
    }

    fn not_an_object<E: de::Error>(mut self, kind: &str) -> Result<(), E> {
        self.take(0, Err(not_an_object(kind)))
    }
}

fn not_an_object(kind: &str) -> String {
    format!("expected a JSON object, found {kind}")
}

impl<'de> de::Visitor<'de> for BodyVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object or an array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(verdict) = seq.next_element_seed(EventSeed {
            events: self.events,
        })? {
            self.take(index, verdict)?;
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        let verdict = EventVisitor {
            events: self.events,
        }
        .visit_map(map)?;
        self.take(0, verdict)
    }

    // Any other top-level value is one event that is not an object.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // A double JSON cannot hold is null, as in a JSON tree.
        self.not_an_object(if v.is_finite() { "a number" } else { "null" })
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object("null")
    }
}

/// Reads one event into the events so far.
struct EventSeed<'a> {
    events: &'a mut Events,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Verdict;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Verdict, D::Error> {
        d.deserialize_any(EventVisitor {
            events: self.events,
        })
    }
}

struct EventVisitor<'a> {
    events: &'a mut Events,
}

/// The fixed fields, in the order their problems are reported.
const ENTITY_ID: usize = 0;
const EVENT_ID: usize = 1;
const EVENT_TYPE: usize = 2;
const EXPECTED_VERSION: usize = 3;
const PAYLOAD: usize = 4;
const SCHEMA_VERSION: usize = 5;
const TIMESTAMP: usize = 6;
const FIELDS: [&str; 7] = [
    "entity_id",
    "event_id",
    "event_type",
    "expected_version",
    "payload",
    "schema_version",
    "timestamp",
];

impl<'de> de::Visitor<'de> for EventVisitor<'_> {
    type Value = Verdict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Verdict, A::Error> {
        let row = self.events.len() as u32;
        // Each fixed field's last value; the payload's is its verdict.
        let mut fixed: [Option<Value>; 7] = Default::default();
        let mut payload: Option<Result<(), String>> = None;
        // The first unknown key in key order.
        let mut unknown: Option<String> = None;
        let mut bytes = 0usize;
        while let Some(Key(key)) = map.next_key()? {
            match FIELDS.iter().position(|f| *f == key) {
                Some(PAYLOAD) => {
                    if payload.is_some() {
                        // Given again: only the last one counts.
                        self.events.clear_payload(row);
                    }
                    payload = Some(map.next_value_seed(PayloadSeed {
                        events: self.events,
                        row,
                        bytes: &mut bytes,
                    })?);
                }
                Some(i) => fixed[i] = Some(map.next_value()?),
                None => {
                    let _: Value = map.next_value()?;
                    if unknown.as_deref().is_none_or(|u| *key < *u) {
                        unknown = Some(key.into_owned());
                    }
                }
            }
        }
        let head = match head_of(fixed, payload, unknown) {
            Ok(head) => head,
            Err(reason) => return Ok(Err(reason)),
        };
        Ok(Ok(bytes + self.events.push_head(head)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Verdict, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(Err(not_an_object("an array")))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Verdict, E> {
        Ok(Err(not_an_object("a boolean")))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Verdict, E> {
        Ok(Err(not_an_object("a number")))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Verdict, E> {
        Ok(Err(not_an_object("a number")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Verdict, E> {
        let kind = if v.is_finite() { "a number" } else { "null" };
        Ok(Err(not_an_object(kind)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Verdict, E> {
        Ok(Err(not_an_object("a string")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Verdict, E> {
        Ok(Err(not_an_object("null")))
    }
}

/// The event's head from its fixed fields, checking them in key order
/// (an unknown key among them) so that the first problem reported is the
/// same as a JSON object's, whose keys are sorted.
fn head_of(
    mut fixed: [Option<Value>; 7],
    payload: Option<Result<(), String>>,
    unknown: Option<String>,
) -> Result<Head, String> {
    let unknown_error = |key: &str| {
        format!(
            "unknown field {:?}: an event has event_type, entity_id, timestamp, event_id, expected_version, schema_version and payload (put your own fields under \"payload\")",
            truncate(key, 64)
        )
    };
    let mut head = Head {
        event_id: None,
        event_type: String::new(),
        entity_id: String::new(),
        timestamp: None,
        expected_version: Default::default(),
        schema_version: None,
    };
    let (mut event_type, mut entity_id) = (None, None);
    for (i, name) in FIELDS.iter().enumerate() {
        if let Some(key) = unknown.as_deref().filter(|k| *k < *name) {
            return Err(unknown_error(key));
        }
        if i == PAYLOAD {
            if let Some(Err(reason)) = &payload {
                return Err(reason.clone());
            }
            continue;
        }
        let Some(value) = fixed[i].take() else {
            continue;
        };
        match i {
            ENTITY_ID => entity_id = optional_string("entity_id", value)?,
            EVENT_ID => head.event_id = optional_string("event_id", value)?,
            EVENT_TYPE => event_type = optional_string("event_type", value)?,
            EXPECTED_VERSION => head.expected_version = parse_expected(value)?,
            SCHEMA_VERSION => head.schema_version = parse_schema_version(value)?,
            TIMESTAMP => head.timestamp = parse_timestamp(value)?,
            _ => unreachable!("the payload is checked above"),
        }
    }
    if let Some(key) = unknown.as_deref() {
        return Err(unknown_error(key));
    }
    head.event_type = event_type.ok_or("field \"event_type\" is required (a non-empty string)")?;
    head.entity_id = entity_id.ok_or("field \"entity_id\" is required (a non-empty string)")?;
    Ok(head)
}

/// Reads a `payload` value: an object's fields go into their cells.
struct PayloadSeed<'a> {
    events: &'a mut Events,
    row: u32,
    bytes: &'a mut usize,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = Result<(), String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_a_payload(kind: &str) -> Result<(), String> {
    Err(format!(
        "field \"payload\" must be a JSON object, found {kind}"
    ))
}

impl<'de> de::Visitor<'de> for PayloadSeed<'_> {
    type Value = Result<(), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a payload object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let cell = map.next_value_seed(CellSeed)?;
            *self.bytes += self.events.put(self.row, &key, cell);
        }
        Ok(Ok(()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(not_a_payload("an array"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(not_a_payload("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(not_a_payload("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(not_a_payload("a number"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // A double JSON cannot hold is null, which leaves the payload empty.
        Ok(if v.is_finite() {
            not_a_payload("a number")
        } else {
            Ok(())
        })
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(not_a_payload("a string"))
    }
}

/// Reads one payload value as a [`Cell`], as a JSON tree would hold it.
struct CellSeed;

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cell, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for CellSeed {
    type Value = Cell;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell, E> {
        Ok(Cell::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell, E> {
        Ok(Cell::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell, E> {
        Ok(Cell::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell, E> {
        Ok(Number::from_f64(v).map_or(Cell::Null, Cell::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cell, E> {
        Ok(Cell::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Cell, E> {
        Ok(Cell::Text(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Cell, A::Error> {
        Ok(Cell::Nested(Value::deserialize(
            SeqAccessDeserializer::new(seq),
        )?))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Cell, A::Error> {
        Ok(Cell::Nested(Value::deserialize(
            MapAccessDeserializer::new(map),
        )?))
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
