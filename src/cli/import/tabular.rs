//! Flat files for `allsource import`: CSV and Parquet, whose columns are
//! the event's fields (`event_type`, `entity_id`, `timestamp`,
//! `event_id`, …) and its payload fields, as Flight ingest takes them.
//!
//! A CSV column's type is read off the file's first rows: numbers,
//! `true`/`false`, or text (an empty cell is null). A later cell that
//! does not fit its column refuses its row, naming the column.

use super::chunk::{Chunk, Place, Rejected, RowSink};
use anyhow::{Context as _, bail};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Rows of a CSV file read before its column types are settled.
const INFER_ROWS: usize = 1000;

/// Columns that are always text.
const TEXT_COLUMNS: [&str; 4] = ["event_type", "entity_id", "event_id", "expected_version"];
/// Columns an event must have.
const REQUIRED: [&str; 2] = ["event_type", "entity_id"];

/// What a CSV column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Integer,
    Number,
    Boolean,
    Text,
}

impl Kind {
    fn fits(self, cell: &str) -> bool {
        match self {
            Kind::Integer => cell.parse::<i64>().is_ok() && !padded(cell),
            Kind::Number => cell.parse::<f64>().is_ok_and(f64::is_finite) && !padded(cell),
            Kind::Boolean => matches!(cell, "true" | "false"),
            Kind::Text => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Boolean => "true or false",
            Kind::Text => "text",
        }
    }
}

/// Whether a number is written with leading zeros (`007`, `-01.5`): an
/// identifier or a code rather than a quantity, kept as text.
fn padded(cell: &str) -> bool {
    let digits = cell.trim_start_matches(['-', '+']);
    digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.")
}

/// The narrowest kind every non-empty cell of column `name` fits.
fn infer(name: &str, cells: impl Iterator<Item = String>) -> Kind {
    if TEXT_COLUMNS.contains(&name) {
        return Kind::Text;
    }
    let cells: Vec<String> = cells.filter(|c| !c.is_empty()).collect();
    let candidates: &[Kind] = match name {
        // Epoch milliseconds, or RFC 3339 text.
        "timestamp" | "schema_version" => &[Kind::Integer],
        _ => &[Kind::Integer, Kind::Number, Kind::Boolean],
    };
    candidates
        .iter()
        .copied()
        .find(|k| !cells.is_empty() && cells.iter().all(|c| k.fits(c)))
        .unwrap_or(Kind::Text)
}

/// One CSV row: its cells, and the id made for it.
#[derive(Debug)]
pub(super) struct CsvRow {
    pub cells: Vec<String>,
    pub id: String,
}

/// A CSV file's columns: names and kinds.
pub(super) type Columns = Vec<(String, Kind)>;

/// The records of a CSV file, after its header; `columns` is set to the
/// columns' names and kinds before the first record.
pub(super) fn csv(
    reader: impl BufRead,
    columns: &OnceLock<Columns>,
    sink: &mut RowSink<'_, CsvRow>,
) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let header: Vec<String> = reader
        .headers()
        .context("cannot read the header line")?
        .iter()
        .map(str::to_string)
        .collect();
    for required in REQUIRED {
        if !header.iter().any(|h| h == required) {
            bail!("the header line has no {required:?} column; an event needs one");
        }
    }
    // The first rows settle the kinds, then go through like the rest.
    let mut first: Vec<(u64, Result<csv::StringRecord, String>)> = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut next = |record: &mut csv::StringRecord| -> anyhow::Result<Option<(u64, Result<csv::StringRecord, String>)>> {
        match reader.read_record(record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                Ok(Some((line, Ok(record.clone()))))
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Utf8 { pos, .. } => Ok(Some((
                    pos.as_ref().map_or(0, |p| p.line()),
                    Err("the row is not valid UTF-8".to_string()),
                ))),
                _ => Err(anyhow::anyhow!(e)),
            },
        }
    };
    while first.len() < INFER_ROWS {
        match next(&mut record)? {
            Some(r) => first.push(r),
            None => break,
        }
    }
    let inferred = header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let cells = first
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok())
                .map(|r| r.get(i).unwrap_or_default().to_string());
            (name.clone(), infer(name, cells))
        })
        .collect();
    let columns = columns.get_or_init(|| inferred);
    let check = |row: csv::StringRecord, index: u64| -> Result<CsvRow, String> {
        if row.len() != columns.len() {
            return Err(format!(
                "the row has {} fields; the header has {}",
                row.len(),
                columns.len()
            ));
        }
        for ((name, kind), cell) in columns.iter().zip(row.iter()) {
            if cell.is_empty() {
                if REQUIRED.contains(&name.as_str()) {
                    return Err(format!("column {name:?} is empty; an event needs it"));
                }
            } else if !kind.fits(cell) {
                return Err(format!(
                    "column {name:?}: {cell:?} is not {} (as the file's first rows are)",
                    kind.name()
                ));
            }
        }
        let cells: Vec<String> = row.iter().map(str::to_string).collect();
        let id = super::json::record_id(cells.join("\u{1f}").as_bytes(), index);
        Ok(CsvRow { cells, id })
    };
    let mut take = |line: u64, row: Result<csv::StringRecord, String>| {
        sink.record(Place::Line(line), |index| row.and_then(|r| check(r, index)))
    };
    for (line, row) in first {
        take(line, row)?;
    }
    while let Some((line, row)) = next(&mut record)? {
        take(line, row)?;
    }
    Ok(())
}

/// CSV rows as a batch of the columns' kinds; empty cells are null.
pub(super) fn csv_batch(
    columns: &[(String, Kind)],
    rows: &[CsvRow],
) -> anyhow::Result<RecordBatch> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, (name, kind)) in columns.iter().enumerate() {
        let cells = rows
            .iter()
            .map(|r| Some(r.cells[i].as_str()).filter(|c| !c.is_empty()));
        let array: ArrayRef = match kind {
            // Payload numbers are doubles on the server; the event's own
            // integers (epoch milliseconds, schema versions) stay integers.
            Kind::Integer if matches!(name.as_str(), "timestamp" | "schema_version") => Arc::new(
                cells
                    .map(|c| c.and_then(|c| c.parse::<i64>().ok()))
                    .collect::<Int64Array>(),
            ),
            Kind::Integer | Kind::Number => Arc::new(
                cells
                    .map(|c| c.and_then(|c| c.parse::<f64>().ok()))
                    .collect::<Float64Array>(),
            ),
            Kind::Boolean => Arc::new(
                cells
                    .map(|c| c.map(|c| c == "true"))
                    .collect::<BooleanArray>(),
            ),
            Kind::Text => Arc::new(cells.collect::<StringArray>()),
        };
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// The batch with an `event_id` on every row: the file's own where it
/// has one, else the row's `made` id.
pub(super) fn with_ids(batch: RecordBatch, made: Vec<String>) -> anyhow::Result<RecordBatch> {
    let schema = batch.schema();
    let given = match schema.index_of("event_id") {
        Ok(i) => Some((
            i,
            arrow::compute::cast(batch.column(i), &DataType::Utf8)
                .context("column \"event_id\" cannot be read as text")?,
        )),
        Err(_) => None,
    };
    let ids: StringArray = made
        .into_iter()
        .enumerate()
        .map(|(row, made)| {
            let own = given.as_ref().and_then(|(_, a)| {
                let a = a.as_any().downcast_ref::<StringArray>()?;
                (!a.is_null(row)).then(|| a.value(row).to_string())
            });
            Some(own.unwrap_or(made))
        })
        .collect();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    let id_field = Field::new("event_id", DataType::Utf8, false);
    match given {
        Some((i, _)) => {
            fields[i] = id_field;
            columns[i] = Arc::new(ids);
        }
        None => {
            fields.push(id_field);
            columns.push(Arc::new(ids));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The rows of a Parquet file in chunks of `rows_per_chunk`, from row
/// `skip`; `emit` receives each.
pub(super) fn parquet(
    path: &Path,
    file: usize,
    skip: u64,
    rows_per_chunk: usize,
    make_id: impl Fn(u64) -> String,
    mut emit: impl FnMut(Chunk) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let handle = std::fs::File::open(path)?;
    let size = handle.metadata()?.len();
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(handle)
        .context("not a Parquet file")?;
    let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let schema = builder.schema().clone();
    for required in REQUIRED {
        if schema.index_of(required).is_err() {
            bail!("the file has no {required:?} column; an event needs one");
        }
    }
    let reader = builder
        .with_batch_size(rows_per_chunk.max(1))
        .with_offset(skip.min(total) as usize)
        .build()?;
    let mut done = skip.min(total);
    for batch in reader {
        let batch = batch?;
        let records: Vec<u64> = (done..done + batch.num_rows() as u64).collect();
        done += batch.num_rows() as u64;
        emit(Chunk {
            file,
            batch: with_ids(batch, records.iter().map(|r| make_id(*r)).collect())?,
            places: records.iter().map(|r| Place::Row(r + 1)).collect(),
            end: done,
            disk_bytes: size.saturating_mul(done) / total.max(1),
            rejected: Vec::new(),
        })?;
    }
    if done == skip.min(total) {
        // Nothing left: one empty chunk records the file as done.
        emit(Chunk {
            file,
            batch: RecordBatch::new_empty(Arc::new(Schema::empty())),
            places: Vec::new(),
            end: done,
            disk_bytes: size,
            rejected: Vec::new(),
        })?;
    }
    Ok(())
}

/// A refused record of file `file`.
pub(super) fn rejected(file: usize, list: Vec<(Place, String)>) -> Vec<Rejected> {
    list.into_iter()
        .map(|(place, reason)| Rejected {
            file,
            place,
            reason,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import::chunk::collect_records;

    #[test]
    fn csv_kinds_come_from_the_first_rows_and_misfits_are_refused() {
        let text = "event_type,entity_id,timestamp,amount,ok,note\n\
                    buy,u1,1700000000000,1.5,true,x\n\
                    buy,u2,,2,false,\n\
                    buy,,1700000000000,3,true,y\n\
                    buy,u4,1700000000000,3\n";
        let columns = OnceLock::new();
        let got = collect_records(|sink| csv(text.as_bytes(), &columns, sink));
        let columns = columns.get().unwrap();
        let kinds: Vec<Kind> = columns.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            kinds,
            [
                Kind::Text,
                Kind::Text,
                Kind::Integer,
                Kind::Number,
                Kind::Boolean,
                Kind::Text
            ]
        );
        assert_eq!(got.len(), 4);
        assert!(got[0].1.is_ok() && got[1].1.is_ok());
        assert_eq!(got[2].0, Place::Line(4));
        assert!(
            got[2]
                .1
                .as_ref()
                .unwrap_err()
                .contains("\"entity_id\" is empty")
        );
        assert!(
            got[3]
                .1
                .as_ref()
                .unwrap_err()
                .contains("4 fields; the header has 6")
        );
        let rows: Vec<CsvRow> = got.into_iter().filter_map(|(_, r)| r.ok()).collect();
        let b = csv_batch(columns, &rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(2).null_count(), 1);
        assert_eq!(b.column(3).data_type(), &DataType::Float64);
        let b = with_ids(b, rows.iter().map(|r| r.id.clone()).collect()).unwrap();
        assert_eq!(b.schema().field(6).name(), "event_id");
    }

    #[test]
    fn a_late_misfit_names_its_column() {
        let mut text = String::from("event_type,entity_id,amount\n");
        for i in 0..INFER_ROWS + 5 {
            text.push_str(&format!("t,u{i},{i}\n"));
        }
        text.push_str("t,late,n/a\n");
        let columns = OnceLock::new();
        let got = collect_records(|sink| csv(text.as_bytes(), &columns, sink));
        let (place, last) = got.last().unwrap();
        assert_eq!(*place, Place::Line(INFER_ROWS as u64 + 7));
        assert!(
            last.as_ref()
                .unwrap_err()
                .contains("\"amount\": \"n/a\" is not an integer")
        );
    }

    #[test]
    fn own_ids_are_kept_and_missing_ones_made() {
        let b = RecordBatch::try_from_iter([(
            "event_id",
            Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
        )])
        .unwrap();
        let b = with_ids(b, vec!["made7".into(), "made8".into()]).unwrap();
        let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((ids.value(0), ids.value(1)), ("a", "made8"));
    }
}
