//! Parsing request bodies into validated events.

use super::budget::BudgetError;
use super::{Error, Result};
use serde_json::{Map, Value};

/// How the request body lays out its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON object or a JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// One event as the client sent it, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The client's id; `None` means the server makes a UUIDv7.
    pub event_id: Option<String>,
    pub event_type: String,
    pub entity_id: String,
    /// Microseconds since the Unix epoch, UTC; `None` means "now".
    pub timestamp: Option<i64>,
    pub payload: Map<String, Value>,
    /// What the entity's stream must look like for the event to be
    /// appended (optimistic concurrency).
    pub expected_version: ExpectedVersion,
    /// The schema version of its event type the writer wrote it with;
    /// `None` means the latest (only governed tables keep it).
    pub schema_version: Option<u32>,
}

/// What an event requires of its entity's stream just before it is
/// appended. A request whose requirement does not hold is refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No requirement.
    #[default]
    Any,
    /// The entity has no events yet (the same as `Exactly(0)`).
    NoStream,
    /// The entity's current version, the number of events in its stream.
    Exactly(u64),
}

impl ExpectedVersion {
    /// Whether an entity at `current` (0: no events) meets it.
    pub fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exactly(v) => current == v,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::Exactly(v) => write!(f, "{v}"),
        }
    }
}

impl Event {
    /// About how many bytes the event occupies in memory, itself and what
    /// it owns. An estimate (allocator size classes and map layouts are
    /// modelled, not measured) used to budget parsing: small maps cost far
    /// more than their JSON text, because a map allocates a whole B-tree
    /// node for its first entry.
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Event>()
            + self
                .event_id
                .as_ref()
                .map_or(0, |s| heap_bytes(s.capacity()))
            + heap_bytes(self.event_type.capacity())
            + heap_bytes(self.entity_id.capacity())
            + map_size(&self.payload)
    }
}

/// An allocation of `n` bytes, rounded up to a 16-byte size class.
pub(super) fn heap_bytes(n: usize) -> usize {
    if n == 0 { 0 } else { n.next_multiple_of(16) }
}

/// A `serde_json::Map` (a `BTreeMap`): its nodes of 11 entries, each entry
/// a `String` key (24 bytes) and a `Value` (32), plus what those own.
fn map_size(map: &Map<String, Value>) -> usize {
    const NODE: usize = 11 * (24 + 32) + 16;
    if map.is_empty() {
        return 0;
    }
    // Nodes are between half and entirely full; count them two-thirds full.
    let nodes = (map.len() * 3).div_ceil(2 * 11).max(1);
    nodes * NODE
        + map
            .iter()
            .map(|(k, v)| heap_bytes(k.capacity()) + value_size(v))
            .sum::<usize>()
}

/// What a JSON value owns beyond its own 32 bytes.
pub(super) fn value_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => heap_bytes(s.capacity()),
        Value::Array(items) => {
            heap_bytes(items.capacity() * 32) + items.iter().map(value_size).sum::<usize>()
        }
        Value::Object(map) => map_size(map),
    }
}

/// Upper bounds on the fixed string fields, so a runaway client cannot
/// blow up a dictionary or a sort key.
pub(crate) const MAX_ID_LEN: usize = 512;

/// Parses a whole body. Either every event is valid or the first problem
/// is reported with the event's position; nothing partial comes back.
pub fn parse_events(body: &[u8], format: BodyFormat) -> Result<Vec<Event>> {
    parse_events_within(body, format, &mut |_| Ok(()))
}

/// [`parse_events`], calling `charge` with each event's estimated size in
/// memory ([`Event::memory_size`]) before keeping it, so that a budget can
/// stop a body whose events take too much. A JSON array is read one
/// element at a time: the whole document is never held as a tree.
pub fn parse_events_within(
    body: &[u8],
    format: BodyFormat,
    charge: &mut dyn FnMut(usize) -> Result<(), BudgetError>,
) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    match format {
        BodyFormat::Json => parse_json(body, &mut events, charge)?,
        BodyFormat::Ndjson => {
            for (line_no, line) in body.split(|&b| b == b'\n').enumerate() {
                let line = trim_ascii(line);
                if line.is_empty() {
                    continue;
                }
                let index = events.len();
                let line_no = line_no + 1;
                let value: Value = serde_json::from_slice(line).map_err(|e| Error::Json {
                    location: format!("line {line_no}, column {}", e.column()),
                    message: strip_position(&e),
                })?;
                let event = event_from_value(value).map_err(|reason| Error::InvalidEvent {
                    index,
                    line: Some(line_no),
                    reason,
                })?;
                keep(&mut events, event, charge)?;
            }
        }
    }
    if events.is_empty() {
        return Err(Error::Empty);
    }
    Ok(events)
}

/// Charges an event's size, then keeps it (and charges the vector's growth).
fn keep(
    events: &mut Vec<Event>,
    event: Event,
    charge: &mut dyn FnMut(usize) -> Result<(), BudgetError>,
) -> Result<()> {
    let mut bytes = event.memory_size() - std::mem::size_of::<Event>();
    if events.len() == events.capacity() {
        // The vector is about to double: its new slots are memory too.
        bytes += events.capacity().max(4) * std::mem::size_of::<Event>();
    }
    charge(bytes)?;
    events.push(event);
    Ok(())
}

/// A JSON body: one event object, or an array of them read element by
/// element.
fn parse_json(
    body: &[u8],
    events: &mut Vec<Event>,
    charge: &mut dyn FnMut(usize) -> Result<(), BudgetError>,
) -> Result<()> {
    use serde::Deserializer as _;
    let mut failure = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let visitor = EventsVisitor {
        events,
        charge,
        failure: &mut failure,
    };
    let parsed = de.deserialize_any(visitor).and_then(|()| de.end());
    body_outcome(failure, parsed)
}

/// What parsing a JSON body came to: a problem the visitor found (a bad
/// event, the budget) is reported as itself, not as the JSON error it
/// stopped the parser with.
pub(super) fn body_outcome(
    failure: Option<Error>,
    parsed: Result<(), serde_json::Error>,
) -> Result<()> {
    if let Some(e) = failure {
        return Err(e);
    }
    parsed.map_err(|e| Error::Json {
        location: format!("line {}, column {}", e.line(), e.column()),
        message: strip_position(&e),
    })
}

/// Turns the top-level JSON value into events as the parser reads it.
struct EventsVisitor<'a> {
    events: &'a mut Vec<Event>,
    charge: &'a mut dyn FnMut(usize) -> Result<(), BudgetError>,
    /// Set when the visitor stops the parse for a reason of its own.
    failure: &'a mut Option<Error>,
}

impl EventsVisitor<'_> {
    /// Keeps the event at `index`, or records why not and stops the parse.
    fn take<E: serde::de::Error>(&mut self, index: usize, value: Value) -> Result<(), E> {
        let kept = event_from_value(value)
            .map_err(|reason| Error::InvalidEvent {
                index,
                line: None,
                reason,
            })
            .and_then(|event| keep(self.events, event, self.charge));
        kept.map_err(|e| {
            *self.failure = Some(e);
            E::custom("stopped")
        })
    }
}

impl<'de> serde::de::Visitor<'de> for EventsVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object or an array of event objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            self.take(index, value)?;
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        use serde::Deserialize;
        let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.take(0, value)
    }

    // Any other top-level value is one event that is not an object.
    fn visit_bool<E: serde::de::Error>(mut self, v: bool) -> Result<(), E> {
        self.take(0, Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(mut self, v: i64) -> Result<(), E> {
        self.take(0, Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(mut self, v: u64) -> Result<(), E> {
        self.take(0, Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(mut self, v: f64) -> Result<(), E> {
        self.take(0, Value::from(v))
    }
    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<(), E> {
        self.take(0, Value::from(v))
    }
    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.take(0, Value::Null)
    }
}

pub(super) fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// serde_json appends " at line X column Y" to its messages; we report the
/// position ourselves.
pub(super) fn strip_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// One event from the JSON text of one object, checked as an event of a
/// request body is; the error says why it is not one.
pub fn parse_event(text: &[u8]) -> Result<Event, String> {
    let value: Value = serde_json::from_slice(text).map_err(|e| strip_position(&e))?;
    event_from_value(value)
}

fn event_from_value(value: Value) -> Result<Event, String> {
    let Value::Object(obj) = value else {
        return Err(format!(
            "expected a JSON object, found {}",
            json_kind(&value)
        ));
    };
    let mut event_id = None;
    let mut event_type = None;
    let mut entity_id = None;
    let mut timestamp = None;
    let mut expected_version = ExpectedVersion::Any;
    let mut schema_version = None;
    let mut payload = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "event_id" => event_id = optional_string("event_id", value)?,
            "event_type" => event_type = optional_string("event_type", value)?,
            "entity_id" => entity_id = optional_string("entity_id", value)?,
            "timestamp" => timestamp = parse_timestamp(value)?,
            "expected_version" => expected_version = parse_expected(value)?,
            "schema_version" => schema_version = parse_schema_version(value)?,
            "payload" => match value {
                Value::Object(map) => payload = map,
                Value::Null => {}
                other => {
                    return Err(format!(
                        "field \"payload\" must be a JSON object, found {}",
                        json_kind(&other)
                    ));
                }
            },
            other => {
                return Err(format!(
                    "unknown field {:?}: an event has event_type, entity_id, timestamp, event_id, expected_version, schema_version and payload (put your own fields under \"payload\")",
                    truncate(other, 64)
                ));
            }
        }
    }
    let event_type = event_type.ok_or("field \"event_type\" is required (a non-empty string)")?;
    let entity_id = entity_id.ok_or("field \"entity_id\" is required (a non-empty string)")?;
    Ok(Event {
        event_id,
        event_type,
        entity_id,
        timestamp,
        payload,
        expected_version,
        schema_version,
    })
}

/// A declared schema version: an integer from 1, or null for the latest.
pub(super) fn parse_schema_version(value: Value) -> Result<Option<u32>, String> {
    match &value {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) if v >= 1 => Ok(Some(v)),
            _ => Err(format!(
                "field \"schema_version\" must be a version (an integer from 1); found {n}"
            )),
        },
        other => Err(format!(
            "field \"schema_version\" must be a version (an integer from 1); found {}",
            json_kind(other)
        )),
    }
}

pub(super) fn parse_expected(value: Value) -> Result<ExpectedVersion, String> {
    match &value {
        Value::Null => return Ok(ExpectedVersion::Any),
        Value::String(s) if s == "any" => return Ok(ExpectedVersion::Any),
        Value::String(s) if s == "no_stream" => return Ok(ExpectedVersion::NoStream),
        Value::Number(n) => {
            if let Some(v) = n.as_u64().filter(|v| *v <= i64::MAX as u64) {
                return Ok(ExpectedVersion::Exactly(v));
            }
        }
        _ => {}
    }
    Err(format!(
        "field \"expected_version\" must be a version (an integer, 0 or more), \"no_stream\" or \"any\"; found {}",
        truncate(&value.to_string(), 64)
    ))
}

pub(super) fn optional_string(field: &str, value: Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Err(format!("field {field:?} must not be empty")),
        Value::String(s) if s.len() > MAX_ID_LEN => Err(format!(
            "field {field:?} is {} bytes long; the limit is {MAX_ID_LEN}",
            s.len()
        )),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!(
            "field {field:?} must be a string, found {}",
            json_kind(&other)
        )),
    }
}

/// Accepted event times: 1900-01-01 up to (not including) 2200-01-01 UTC.
/// Wider ranges are almost always a unit mistake (seconds vs
/// milliseconds), and each distinct day is a partition.
const MIN_TIMESTAMP_US: i64 = -2_208_988_800_000_000;
const MAX_TIMESTAMP_US: i64 = 7_258_118_400_000_000;

pub(crate) fn in_range(us: i64) -> Result<Option<i64>, String> {
    if (MIN_TIMESTAMP_US..MAX_TIMESTAMP_US).contains(&us) {
        Ok(Some(us))
    } else {
        Err(format!(
            "field \"timestamp\" is outside the accepted range 1900-01-01 to 2200-01-01 ({} µs since the epoch; was it in seconds or microseconds instead of milliseconds?)",
            us
        ))
    }
}

/// Accepts RFC 3339 text or integer epoch milliseconds; returns epoch
/// microseconds.
pub(super) fn parse_timestamp(value: Value) -> Result<Option<i64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| t.timestamp_micros())
            .map_err(|e| {
                format!(
                    "field \"timestamp\": {:?} is not an RFC 3339 time ({e}); use e.g. \"2026-01-31T12:00:00Z\" or epoch milliseconds",
                    truncate(&s, 64)
                )
            })
            .and_then(in_range),
        Value::Number(n) => {
            let ms = n.as_i64().ok_or_else(|| {
                format!("field \"timestamp\": {n} is not an integer number of epoch milliseconds")
            })?;
            in_range(ms.saturating_mul(1000))
        }
        other => Err(format!(
            "field \"timestamp\" must be an RFC 3339 string or epoch milliseconds, found {}",
            json_kind(&other)
        )),
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_object_array_and_ndjson() {
        let one = br#"{"event_type":"a","entity_id":"u1","payload":{"x":1}}"#;
        assert_eq!(parse_events(one, BodyFormat::Json).unwrap().len(), 1);
        let arr = br#"[{"event_type":"a","entity_id":"u1"},{"event_type":"b","entity_id":"u2","timestamp":1700000000000}]"#;
        let evs = parse_events(arr, BodyFormat::Json).unwrap();
        assert_eq!(evs[1].timestamp, Some(1_700_000_000_000_000));
        let nd = b"{\"event_type\":\"a\",\"entity_id\":\"u1\",\"timestamp\":\"2026-01-01T00:00:00Z\"}\n\n{\"event_type\":\"b\",\"entity_id\":\"u2\"}\n";
        let evs = parse_events(nd, BodyFormat::Ndjson).unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].timestamp, Some(1_767_225_600_000_000));
    }

    #[test]
    fn errors_name_the_event_and_reason() {
        let arr = br#"[{"event_type":"a","entity_id":"u1"},{"event_type":"a"}]"#;
        let err = parse_events(arr, BodyFormat::Json).unwrap_err().to_string();
        assert!(
            err.contains("event 1") && err.contains("entity_id"),
            "{err}"
        );
        let nd =
            b"{\"event_type\":\"a\",\"entity_id\":\"u1\"}\n{\"event_type\":\"a\",\"entity_id\":5}";
        let err = parse_events(nd, BodyFormat::Ndjson)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("must be a string"),
            "{err}"
        );
        let err = parse_events(b"{\"event_type\":", BodyFormat::Json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        let bad_ts = br#"{"event_type":"a","entity_id":"u","timestamp":"yesterday"}"#;
        let err = parse_events(bad_ts, BodyFormat::Json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("RFC 3339"), "{err}");
        let far = br#"{"event_type":"a","entity_id":"u","timestamp":1767225600000000}"#;
        let err = parse_events(far, BodyFormat::Json).unwrap_err().to_string();
        assert!(err.contains("outside the accepted range"), "{err}");
        let err = parse_events(b"[]", BodyFormat::Json).unwrap_err();
        assert!(matches!(err, Error::Empty));
        let unknown = br#"{"event_type":"a","entity_id":"u","amount":3}"#;
        let err = parse_events(unknown, BodyFormat::Json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field \"amount\""), "{err}");
    }
}
