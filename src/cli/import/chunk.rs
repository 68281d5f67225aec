//! The unit `allsource import` sends and checkpoints: a [`Chunk`] of one
//! file's rows as an Arrow batch, with where each row came from. Readers
//! hand their records to a [`RowSink`], which skips what an earlier run
//! stored, sets refused records aside with their place, and cuts chunks.

use arrow::array::RecordBatch;
use std::fmt;

/// Where a row is in its file: a line of text, or a row of Parquet
/// (both counted from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Line(u64),
    Row(u64),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A row that was not stored, and why.
#[derive(Debug, Clone)]
pub(crate) struct Rejected {
    /// The input's index.
    pub file: usize,
    pub place: Place,
    pub reason: String,
}

/// Rows of one file, ready to send.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub file: usize,
    /// The rows, with an `event_id` on each.
    pub batch: RecordBatch,
    /// Each row's place.
    pub places: Vec<Place>,
    /// Records of the file read through this chunk (stored, refused or
    /// skipped): where a resumed run starts.
    pub end: u64,
    /// Bytes of the file read from disk through this chunk.
    pub disk_bytes: u64,
    /// Records refused before sending, within this chunk's span.
    pub rejected: Vec<Rejected>,
}

/// Records parsed since the last chunk was cut.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    pub rows: Vec<T>,
    pub places: Vec<Place>,
    /// Each row's record index in the file (from 0).
    pub records: Vec<u64>,
    pub rejected: Vec<(Place, String)>,
    pub end: u64,
}

impl<T> Pending<T> {
    fn new() -> Self {
        Pending {
            rows: Vec::new(),
            places: Vec::new(),
            records: Vec::new(),
            rejected: Vec::new(),
            end: 0,
        }
    }
}

type Cut<'a, T> = &'a mut dyn FnMut(Pending<T>) -> anyhow::Result<()>;

/// Takes one file's records in order and cuts them into chunks.
pub(crate) struct RowSink<'a, T> {
    pending: Pending<T>,
    /// Records seen, counting skipped ones.
    seen: u64,
    /// Records an earlier run already took.
    skip: u64,
    rows_per_chunk: usize,
    cut: Cut<'a, T>,
}

impl<'a, T> RowSink<'a, T> {
    pub(crate) fn new(skip: u64, rows_per_chunk: usize, cut: Cut<'a, T>) -> Self {
        RowSink {
            pending: Pending::new(),
            seen: 0,
            skip,
            rows_per_chunk: rows_per_chunk.max(1),
            cut,
        }
    }

    /// One record at `place`: `parse` (given the record's index) makes its
    /// row or says why it is refused. Records an earlier run took are not
    /// parsed.
    pub(crate) fn record(
        &mut self,
        place: Place,
        parse: impl FnOnce(u64) -> Result<T, String>,
    ) -> anyhow::Result<()> {
        let index = self.seen;
        self.seen += 1;
        if index < self.skip {
            return Ok(());
        }
        match parse(index) {
            Ok(row) => {
                self.pending.rows.push(row);
                self.pending.places.push(place);
                self.pending.records.push(index);
            }
            Err(reason) => self.pending.rejected.push((place, reason)),
        }
        if self.pending.rows.len() + self.pending.rejected.len() >= self.rows_per_chunk {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> anyhow::Result<()> {
        let mut pending = std::mem::replace(&mut self.pending, Pending::new());
        pending.end = self.seen;
        (self.cut)(pending)
    }

    /// The file ended: the last chunk, even an empty one, so the file is
    /// recorded as done.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        self.cut()
    }
}

/// Every record a reader hands over, with its place: for tests.
#[cfg(test)]
pub(crate) fn collect_records<T>(
    read: impl FnOnce(&mut RowSink<'_, T>) -> anyhow::Result<()>,
) -> Vec<(Place, Result<T, String>)> {
    let mut out = Vec::new();
    with_sink(|sink| read(sink).unwrap(), &mut out);
    out
}

/// Runs `f` with a sink that gathers what it takes into `out`.
#[cfg(test)]
pub(crate) fn with_sink<T>(
    f: impl FnOnce(&mut RowSink<'_, T>),
    out: &mut Vec<(Place, Result<T, String>)>,
) {
    let mut chunks = Vec::new();
    let mut cut = |p: Pending<T>| {
        chunks.push(p);
        Ok(())
    };
    let mut sink = RowSink::new(0, usize::MAX, &mut cut);
    f(&mut sink);
    sink.finish().unwrap();
    for p in chunks {
        let mut all: Vec<(Place, Result<T, String>)> = p
            .places
            .into_iter()
            .zip(p.rows)
            .map(|(place, row)| (place, Ok(row)))
            .collect();
        all.extend(p.rejected.into_iter().map(|(place, r)| (place, Err(r))));
        all.sort_by_key(|(place, _)| match place {
            Place::Line(n) | Place::Row(n) => *n,
        });
        out.extend(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_sink_skips_what_was_taken_and_cuts_by_rows() {
        let mut cuts = Vec::new();
        let mut cut = |p: Pending<u64>| {
            cuts.push((p.records.clone(), p.rejected.len(), p.end));
            Ok(())
        };
        let mut sink = RowSink::new(3, 2, &mut cut);
        for i in 0..8u64 {
            sink.record(Place::Line(i + 1), |index| {
                assert!(index >= 3, "record {index} was taken before");
                if index == 5 {
                    Err("bad".into())
                } else {
                    Ok(index)
                }
            })
            .unwrap();
        }
        sink.finish().unwrap();
        assert_eq!(
            cuts,
            [(vec![3, 4], 0, 5), (vec![6], 1, 7), (vec![7], 0, 8),]
        );
    }
}
