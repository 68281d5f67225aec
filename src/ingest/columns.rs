//! A request's events laid out by payload field rather than by event.
//!
//! The body parser ([`super::stream`]) writes each payload value straight
//! into its field's list of cells, so an event never becomes a map of its
//! own; [`super::build`] then turns each field's cells into a column.
//! Events built in code ([`Event`]) convert into the same shape.

use super::parse::{Event, ExpectedVersion, heap_bytes, value_size};
use serde_json::{Number, Value};
use std::collections::HashMap;

/// An event's fixed fields: everything but its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The client's id; `None` means the server makes a UUIDv7.
    pub event_id: Option<String>,
    pub event_type: String,
    pub entity_id: String,
    /// Microseconds since the Unix epoch, UTC; `None` means "now".
    pub timestamp: Option<i64>,
    pub expected_version: ExpectedVersion,
    pub schema_version: Option<u32>,
}

impl Head {
    /// Bytes of its fixed text columns in a batch: the id (a generated
    /// one is a 36-character UUID), the type and the entity id.
    pub fn fixed_text_len(&self) -> usize {
        self.event_id.as_ref().map_or(36, String::len)
            + self.event_type.len()
            + self.entity_id.len()
    }

    /// Bytes the head owns beyond its own size, for the ingest budget.
    fn heap_size(&self) -> usize {
        self.event_id
            .as_ref()
            .map_or(0, |s| heap_bytes(s.capacity()))
            + heap_bytes(self.event_type.capacity())
            + heap_bytes(self.entity_id.capacity())
    }
}

/// One payload value of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Number(Number),
    Text(String),
    /// An array or an object, kept whole.
    Nested(Value),
}

impl Cell {
    pub fn from_value(v: Value) -> Cell {
        match v {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(b),
            Value::Number(n) => Cell::Number(n),
            Value::String(s) => Cell::Text(s),
            nested => Cell::Nested(nested),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Number(n) => Value::Number(n.clone()),
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Nested(v) => v.clone(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// Bytes the cell owns beyond its own size.
    fn heap_size(&self) -> usize {
        match self {
            Cell::Null | Cell::Bool(_) | Cell::Number(_) => 0,
            Cell::Text(s) => heap_bytes(s.capacity()),
            Cell::Nested(v) => value_size(v),
        }
    }
}

/// One payload field: the events that have it, in order, each once.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadField {
    pub name: String,
    /// (event index, value), by event index.
    pub cells: Vec<(u32, Cell)>,
}

/// Bytes of one cell in a field's list.
const CELL_SIZE: usize = std::mem::size_of::<(u32, Cell)>();

/// A request's events: their fixed fields, and their payload by field, the
/// fields in the order they were first met.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    pub heads: Vec<Head>,
    pub fields: Vec<PayloadField>,
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    /// The field after the one last written to: events of one request
    /// usually list their fields in the same order.
    hint: usize,
    /// How many events the body probably holds ([`Events::expect`]).
    expected: usize,
    /// Cells reserved so far for fields that have yet to fill them.
    reserved: usize,
}

/// The most cells reserved ahead per expected event: enough for the
/// fields most events share, bounded however many fields a body names.
const RESERVED_CELLS_PER_EVENT: usize = 16;

impl Events {
    pub fn new() -> Events {
        Events::default()
    }

    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Payload fields that some event has.
    pub fn field_count(&self) -> usize {
        self.fields.iter().filter(|f| !f.cells.is_empty()).count()
    }

    /// Reserves room for about `events` events, so that the lists do not
    /// grow by copying: the heads, and each field met early enough for the
    /// cells still to come. Returns the bytes reserved.
    pub(super) fn expect(&mut self, events: usize) -> usize {
        self.expected = events;
        self.heads.reserve_exact(events);
        self.heads.capacity() * std::mem::size_of::<Head>()
    }

    /// Adds the head of the event whose payload went in through
    /// [`Events::put`] as event `len()`. Returns the bytes it took.
    pub(super) fn push_head(&mut self, head: Head) -> usize {
        let mut bytes = head.heap_size();
        if self.heads.len() == self.heads.capacity() {
            // The vector is about to double: its new slots are memory too.
            bytes += self.heads.capacity().max(4) * std::mem::size_of::<Head>();
        }
        self.heads.push(head);
        bytes
    }

    /// Sets field `key` of event `row` (the last event so far) to `cell`,
    /// replacing a value it already had. Returns the bytes it took.
    pub(super) fn put(&mut self, row: u32, key: &str, cell: Cell) -> usize {
        let mut bytes = cell.heap_size();
        let i = match self.fields.get(self.hint) {
            Some(f) if f.name == key => self.hint,
            _ => match self.index.get(key) {
                Some(&i) => i,
                None => {
                    bytes += heap_bytes(key.len()) * 2 + std::mem::size_of::<PayloadField>();
                    self.index.insert(key.to_string(), self.fields.len());
                    let ahead = self.expected.saturating_sub(row as usize);
                    let budget = self.expected * RESERVED_CELLS_PER_EVENT;
                    let capacity = if self.reserved + ahead <= budget {
                        ahead
                    } else {
                        0
                    };
                    self.reserved += capacity;
                    bytes += capacity * CELL_SIZE;
                    self.fields.push(PayloadField {
                        name: key.to_string(),
                        cells: Vec::with_capacity(capacity),
                    });
                    self.fields.len() - 1
                }
            },
        };
        self.hint = i + 1;
        let cells = &mut self.fields[i].cells;
        match cells.last_mut() {
            Some((r, old)) if *r == row => *old = cell,
            _ => {
                if cells.len() == cells.capacity() {
                    bytes += cells.capacity().max(4) * CELL_SIZE;
                }
                cells.push((row, cell));
            }
        }
        bytes
    }

    /// Drops every payload value of event `row` (the last event so far).
    pub(super) fn clear_payload(&mut self, row: u32) {
        for f in &mut self.fields {
            if f.cells.last().is_some_and(|(r, _)| *r == row) {
                f.cells.pop();
            }
        }
    }

    /// The event types, by event.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.heads.iter().map(|h| h.event_type.as_str())
    }
}

impl From<Vec<Event>> for Events {
    fn from(events: Vec<Event>) -> Events {
        let mut out = Events::new();
        out.heads.reserve(events.len());
        for (row, e) in events.into_iter().enumerate() {
            let row = row as u32;
            for (key, value) in e.payload {
                out.put(row, &key, Cell::from_value(value));
            }
            out.push_head(Head {
                event_id: e.event_id,
                event_type: e.event_type,
                entity_id: e.entity_id,
                timestamp: e.timestamp,
                expected_version: e.expected_version,
                schema_version: e.schema_version,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_replaces_a_repeated_field_and_clear_drops_the_event() {
        let mut e = Events::new();
        e.put(0, "a", Cell::Bool(true));
        e.put(0, "a", Cell::Null);
        e.put(1, "b", Cell::Text("x".into()));
        e.put(1, "a", Cell::Bool(false));
        assert_eq!(
            e.fields[0].cells,
            vec![(0, Cell::Null), (1, Cell::Bool(false))]
        );
        e.clear_payload(1);
        assert_eq!(e.fields[0].cells, vec![(0, Cell::Null)]);
        assert_eq!(e.field_count(), 1);
    }
}
