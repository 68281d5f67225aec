//! Laying a request's events out as one Arrow batch: each payload field
//! becomes its own typed column or goes to `_overflow`, as the table's
//! [`ColumnRegistry`] places it.

use super::columns::{Cell, Events};
use super::{BatchEstimate, Error, Facts, MAX_CELLS, Result, check_days, event_batch};
use crate::schema::{self, ColumnKind, ColumnRegistry, Placement, RegistryMark};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Array, Int64Builder, RecordBatch, StringArray,
    StringBuilder,
};
use arrow::datatypes::Field;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Which kind of column a value would create.
fn kind_of(c: &Cell) -> Option<ColumnKind> {
    match c {
        Cell::Null => None,
        Cell::Bool(_) => Some(ColumnKind::Boolean),
        Cell::Number(_) => Some(ColumnKind::Double),
        Cell::Text(_) | Cell::Nested(_) => Some(ColumnKind::Text),
    }
}

/// A number as a double, when the double holds it exactly (integers beyond
/// 2^53 do not, and go to `_overflow` instead of losing digits).
fn exact_f64(n: &serde_json::Number) -> Option<f64> {
    if let Some(i) = n.as_i64() {
        let f = i as f64;
        return (f as i64 == i && f.abs() < 9_007_199_254_740_992.0).then_some(f);
    }
    if let Some(u) = n.as_u64() {
        let f = u as f64;
        return (f < 9_007_199_254_740_992.0).then_some(f);
    }
    n.as_f64()
}

/// Builds the batch for `events` (those with `keep[i]`), registering new
/// payload columns with `registry`. `ids` are the final event ids (client's
/// or generated), `now` is the ingest time in epoch microseconds.
pub fn build_batch(
    events: &Events,
    keep: &[bool],
    ids: &[String],
    registry: &parking_lot::Mutex<ColumnRegistry>,
    now: i64,
) -> Result<RecordBatch> {
    Ok(build(events, keep, ids, registry, now)?.batch)
}

/// A built batch, with what building it learnt.
#[derive(Debug)]
pub struct Built {
    pub batch: RecordBatch,
    pub facts: Facts,
    /// The registry before and after this batch placed its columns, to
    /// take them back if the batch is refused.
    pub placed: (RegistryMark, RegistryMark),
}

/// Each event's row in the batch: `None` for an event that is dropped.
struct Rows {
    /// Empty when every event is kept.
    of: Vec<u32>,
    count: usize,
}

impl Rows {
    const DROPPED: u32 = u32::MAX;

    fn new(keep: &[bool]) -> Rows {
        if keep.iter().all(|k| *k) {
            return Rows {
                of: Vec::new(),
                count: keep.len(),
            };
        }
        let mut next = 0;
        let of = keep
            .iter()
            .map(|k| match k {
                true => {
                    next += 1;
                    next - 1
                }
                false => Rows::DROPPED,
            })
            .collect();
        Rows {
            of,
            count: next as usize,
        }
    }

    fn get(&self, event: u32) -> Option<usize> {
        match self.of.get(event as usize) {
            None => Some(event as usize),
            Some(&Rows::DROPPED) => None,
            Some(&row) => Some(row as usize),
        }
    }
}

/// [`build_batch`], with the facts a [`super::BatchCheck`] needs.
pub fn build(
    events: &Events,
    keep: &[bool],
    ids: &[String],
    registry: &parking_lot::Mutex<ColumnRegistry>,
    now: i64,
) -> Result<Built> {
    let row_of = Rows::new(keep);
    let rows = row_of.count;
    // The payload fields of the kept events, in the order a JSON object
    // per event would list them (by the first event that has the field,
    // then by name), each with the kind of its first non-null value.
    let mut keys: Vec<(usize, &str, usize, Option<ColumnKind>)> = Vec::new();
    for (i, field) in events.fields.iter().enumerate() {
        let mut first = None;
        let mut kind = None;
        for (event, cell) in &field.cells {
            if let Some(row) = row_of.get(*event) {
                first.get_or_insert(row);
                kind = kind_of(cell);
                if kind.is_some() {
                    break;
                }
            }
        }
        if let Some(first) = first {
            keys.push((first, field.name.as_str(), i, kind));
        }
    }
    keys.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let kept = || (events.heads.iter().zip(keep)).filter_map(|(h, k)| k.then_some(h));
    let timestamps: Vec<i64> = kept().map(|h| h.timestamp.unwrap_or(now)).collect();
    check_days(&timestamps)?;
    let cells = rows.saturating_mul(keys.len() + schema::FIXED_COLUMNS.len());
    if cells > MAX_CELLS {
        return Err(Error::TooLarge(format!(
            "{rows} events × {} distinct payload fields is more than {MAX_CELLS} values; send fewer events per request",
            keys.len()
        )));
    }
    // The WAL's record limit, checked on what the batch will surely take
    // rather than after building and encoding it.
    let text = kept().map(super::Head::fixed_text_len).sum();
    let estimate = BatchEstimate::new(rows, keys.len(), text);
    estimate.check(crate::wal::MAX_RECORD_BYTES, "the largest WAL record")?;
    let (placements, placed, governed) = {
        let mut reg = registry.lock();
        let before = reg.mark();
        let placements: Vec<Placement> = keys
            .iter()
            .map(|(_, k, _, kind)| reg.place(k, *kind))
            .collect();
        (placements, (before, reg.mark()), reg.governed())
    };
    let mut facts = Facts::default();

    let mut overflow: Vec<Option<Map<String, Value>>> = vec![None; rows];
    let mut fields = schema::fixed_fields();
    let mut payload_columns: Vec<ArrayRef> = Vec::new();
    for ((_, key, index, _), placement) in keys.iter().zip(&placements) {
        let mut add_overflow = |row: usize, c: &Cell| {
            overflow[row]
                .get_or_insert_with(Map::new)
                .insert(key.to_string(), c.to_value());
        };
        let cells = (events.fields[*index].cells.iter())
            .filter_map(|(event, cell)| row_of.get(*event).map(|row| (row, cell)));
        let kind = match placement {
            Placement::Overflow => {
                for (row, cell) in cells.filter(|(_, c)| !c.is_null()) {
                    add_overflow(row, cell);
                }
                continue;
            }
            Placement::Column(kind) => kind,
        };
        let array: ArrayRef = match kind {
            ColumnKind::Double => {
                let mut b = Float64Builder::with_capacity(rows);
                each_row(rows, cells, |row, c| match c {
                    None | Some(Cell::Null) => b.append_null(),
                    Some(Cell::Number(n)) if exact_f64(n).is_some() => {
                        b.append_option(exact_f64(n))
                    }
                    Some(other) => {
                        add_overflow(row, other);
                        b.append_null();
                    }
                });
                Arc::new(b.finish())
            }
            ColumnKind::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows);
                each_row(rows, cells, |row, c| match c {
                    None | Some(Cell::Null) => b.append_null(),
                    Some(Cell::Bool(x)) => b.append_value(*x),
                    Some(other) => {
                        add_overflow(row, other);
                        b.append_null();
                    }
                });
                Arc::new(b.finish())
            }
            ColumnKind::Integer => {
                let mut b = Int64Builder::with_capacity(rows);
                each_row(rows, cells, |row, c| match c {
                    None | Some(Cell::Null) => b.append_null(),
                    Some(Cell::Number(n)) if n.as_i64().is_some() => b.append_option(n.as_i64()),
                    Some(other) => {
                        add_overflow(row, other);
                        b.append_null();
                    }
                });
                Arc::new(b.finish())
            }
            ColumnKind::Text => {
                let mut b = StringBuilder::with_capacity(rows, rows * 8);
                let mut nested = Vec::new();
                each_row(rows, cells, |row, c| match c {
                    None | Some(Cell::Null) => b.append_null(),
                    Some(Cell::Text(s)) => b.append_value(s),
                    Some(Cell::Nested(v)) => {
                        nested.push(row as u32);
                        b.append_value(v.to_string())
                    }
                    Some(other) => {
                        add_overflow(row, other);
                        b.append_null();
                    }
                });
                if !nested.is_empty() {
                    facts.nested.insert(key.to_string(), nested);
                }
                Arc::new(b.finish())
            }
        };
        fields.push(Field::new(*key, kind.data_type(), true));
        payload_columns.push(array);
    }

    // A governed table keeps the schema version each event was written
    // with: the writer's, here; its rules' check fills in the rest.
    if governed {
        let declared: Int64Array = kept().map(|h| h.schema_version.map(i64::from)).collect();
        fields.push(Field::new(
            schema::governed::SCHEMA_VERSION,
            arrow::datatypes::DataType::Int64,
            true,
        ));
        payload_columns.push(Arc::new(declared));
    }
    let kept_ids = (ids.iter().zip(keep)).filter_map(|(id, k)| k.then_some(id));
    let batch = event_batch(
        [
            Arc::new(StringArray::from_iter_values(kept_ids)),
            Arc::new(StringArray::from_iter_values(kept().map(|h| &h.event_type))),
            Arc::new(StringArray::from_iter_values(kept().map(|h| &h.entity_id))),
        ],
        timestamps,
        now,
        overflow,
        fields,
        payload_columns,
    )?;
    Ok(Built {
        batch,
        facts,
        placed,
    })
}

/// Calls `f` for each of `rows` rows in order, with the row's value from
/// `cells` (ascending rows, each at most once) or `None`.
fn each_row<'a>(
    rows: usize,
    cells: impl Iterator<Item = (usize, &'a Cell)>,
    mut f: impl FnMut(usize, Option<&'a Cell>),
) {
    let mut next = 0;
    for (row, cell) in cells {
        while next < row {
            f(next, None);
            next += 1;
        }
        f(row, Some(cell));
        next = row + 1;
    }
    while next < rows {
        f(next, None);
        next += 1;
    }
}
