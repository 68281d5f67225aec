//! Reading the log back at start-up: every segment in order, a torn tail
//! cut, damage anywhere else reported with its file and offset.

use super::format::{self, Decoded, HEADER_LEN};
use super::{Error, Result, Segment, WalRecord, fsync_dir, io_err};
use crate::ids::WalSeq;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

/// Reads all segments, cutting a torn tail; returns the segments found and
/// every valid record in order.
pub(super) fn recover(dir: &Path) -> Result<(Vec<Segment>, Vec<WalRecord>)> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        let Ok(first) = stem.parse::<u64>() else {
            continue;
        };
        paths.push((WalSeq(first), entry.path()));
    }
    paths.sort();

    let mut segments = Vec::new();
    let mut records: Vec<WalRecord> = Vec::new();
    let count = paths.len();
    for (i, (first, path)) in paths.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let mut buf = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(io_err(&path))?;
        if buf.len() < HEADER_LEN && is_last {
            // Crashed while creating the newest segment: nothing in it was
            // ever acknowledged.
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            fsync_dir(dir)?;
            continue;
        }
        format::check_header(&buf).map_err(|reason| Error::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        let buf = Bytes::from(buf);
        let mut pos = HEADER_LEN;
        let mut last = None;
        loop {
            match format::decode_record(&buf, pos) {
                Decoded::Record(rec, next) => {
                    let expected = records.last().map(|r| WalSeq(r.seq.0 + 1));
                    let in_order = match expected {
                        Some(e) => rec.seq == e,
                        None => rec.seq >= first,
                    };
                    if !in_order {
                        return Err(Error::Corrupt {
                            path,
                            offset: pos,
                            reason: format!(
                                "record seq {} out of order (expected {})",
                                rec.seq,
                                expected.unwrap_or(first)
                            ),
                        });
                    }
                    last = Some(rec.seq);
                    records.push(rec);
                    pos = next;
                }
                Decoded::End => break,
                Decoded::Invalid(reason) => {
                    let expected = records
                        .last()
                        .map(|r: &WalRecord| WalSeq(r.seq.0 + 1))
                        .unwrap_or(first);
                    if !is_last || later_group_follows(&buf, pos, expected) {
                        return Err(Error::Corrupt {
                            path,
                            offset: pos,
                            reason,
                        });
                    }
                    tracing::warn!(
                        path = %path.display(),
                        offset = pos,
                        %reason,
                        "cutting a torn write at the end of the WAL (it was never acknowledged)"
                    );
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    f.set_len(pos as u64).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                    crate::fault::synced(&path, Some(pos as u64));
                    break;
                }
            }
        }
        segments.push(Segment { path, first, last });
    }
    Ok((segments, records))
}

/// Whether, after a damaged record that should have had seq `expected`, a
/// valid record of a *later* group commit follows. A group is acknowledged
/// only after its fsync, so a later group on disk means the damaged record
/// was acknowledged too: corruption, not a torn tail. Valid records of the
/// same group (written out of order before a crash) were never
/// acknowledged and are cut with it.
///
/// Every offset after the damage is a candidate, so the check of each must
/// be cheap: the checksum (over up to a whole record) is computed only for
/// candidates whose head could belong to a later group of this segment.
/// Without that filter a torn record of n bytes cost O(n²) to recover.
fn later_group_follows(buf: &Bytes, bad: usize, expected: WalSeq) -> bool {
    // A later record's seq exceeds `expected` by less than the number of
    // records that fit in the rest of the segment.
    let most = (buf.len() - bad) as u64 / format::MIN_RECORD_LEN as u64;
    (bad + 1..buf.len().saturating_sub(format::RECORD_HEADER_LEN)).any(|p| {
        format::head_seqs(buf, p).is_some_and(|(seq, group)| {
            group > expected && group <= seq && seq.0 - expected.0 <= most
        }) && matches!(
            format::decode_record(buf, p),
            Decoded::Record(rec, _) if rec.seq > expected && rec.group > expected
        )
    })
}
