//! On-disk encoding of WAL segments and records.
//!
//! ```text
//! segment := header record*
//! header  := magic "ASWALSEG" (8 bytes) | version u32 LE | reserved u32 LE
//! record  := len u32 LE | crc32 u32 LE (of body) | body (len bytes)
//! body    := seq u64 LE | group u64 LE | kind u8 | tenant_len u16 LE | tenant
//!            | table_len u16 LE | table | data (rest: Arrow IPC stream)
//! ```
//!
//! `group` is the first sequence of the group commit (one write + one
//! fsync) the record belongs to. Recovery uses it to tell a torn group
//! (never acknowledged) from damage before a later, acknowledged group.

use crate::ids::{TableName, TenantId, WalSeq};
use bytes::Bytes;

pub(crate) const MAGIC: &[u8; 8] = b"ASWALSEG";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: usize = 16;
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// Upper bound on one record's body; a larger length field can only be a
/// torn or corrupt write.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;
/// Smallest possible body: seq, group, kind and two empty names.
const MIN_BODY_LEN: usize = 8 + 8 + 1 + 2 + 2;
/// Smallest possible framed record.
pub(crate) const MIN_RECORD_LEN: usize = RECORD_HEADER_LEN + MIN_BODY_LEN;

const KIND_BATCH: u8 = 1;

/// One logged ingest: a batch of events for one table of one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct WalRecord {
    pub seq: WalSeq,
    /// First sequence of the group commit this record was written in.
    pub group: WalSeq,
    pub tenant: TenantId,
    pub table: TableName,
    /// The events as an Arrow IPC stream, exactly as they entered the
    /// buffer, so replay rebuilds the same batch.
    pub data: Bytes,
}

pub(crate) fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Checks a segment header; returns a message when it is not one of ours.
pub(crate) fn check_header(h: &[u8]) -> Result<(), String> {
    if h.len() < HEADER_LEN || &h[..8] != MAGIC {
        return Err("not a WAL segment (bad magic)".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!(
            "WAL segment version {version} is not supported (this build reads {VERSION})"
        ));
    }
    Ok(())
}

/// Appends one framed record to `out` (the writer hands the head and the
/// data to the kernel apart; tests frame records in one buffer).
#[cfg(test)]
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    seq: WalSeq,
    group: WalSeq,
    tenant: &TenantId,
    table: &TableName,
    data: &[u8],
) {
    out.extend_from_slice(&record_head(seq, group, tenant, table, data));
    out.extend_from_slice(data);
}

/// The bytes of a framed record that come before `data`: length, CRC
/// (over the rest of the head and `data`), sequence numbers, kind and
/// names. The record is the head followed by `data`, so the writer can
/// hand both to one vectored write without copying `data`.
pub(crate) fn record_head(
    seq: WalSeq,
    group: WalSeq,
    tenant: &TenantId,
    table: &TableName,
    data: &[u8],
) -> Vec<u8> {
    let meta_len = 8 + 8 + 1 + 2 + tenant.as_str().len() + 2 + table.as_str().len();
    let body_len = meta_len + data.len();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + meta_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(&group.0.to_le_bytes());
    out.push(KIND_BATCH);
    for name in [tenant.as_str(), table.as_str()] {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[RECORD_HEADER_LEN..]);
    crc.update(data);
    out[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    out
}

/// What lies at an offset of a segment.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A valid record, and the offset just past it.
    Record(WalRecord, usize),
    /// Nothing more: the segment ends exactly here.
    End,
    /// Bytes that are not a valid record (short, bad length or bad CRC).
    Invalid(String),
}

/// The sequence and group numbers a record starting at `pos` would have,
/// read without checking anything but its length and kind: a cheap filter
/// before [`decode_record`] verifies the checksum.
pub(crate) fn head_seqs(buf: &[u8], pos: usize) -> Option<(WalSeq, WalSeq)> {
    let head = buf.get(pos..pos + RECORD_HEADER_LEN + 17)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    if !(MIN_BODY_LEN..=MAX_RECORD_LEN).contains(&len)
        || len > buf.len() - pos - RECORD_HEADER_LEN
        || head[RECORD_HEADER_LEN + 16] != KIND_BATCH
    {
        return None;
    }
    let seq = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    let group = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
    Some((WalSeq(seq), WalSeq(group)))
}

#[cfg(test)]
thread_local! {
    /// Bytes this thread has checksummed while decoding: recovery's work.
    pub(crate) static CHECKSUMMED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Decodes the record starting at `pos` in `buf`.
pub(crate) fn decode_record(buf: &Bytes, pos: usize) -> Decoded {
    let rest = buf.len() - pos;
    if rest == 0 {
        return Decoded::End;
    }
    if rest < RECORD_HEADER_LEN {
        return Decoded::Invalid(format!("{rest} stray bytes at the end"));
    }
    let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes"));
    if !(MIN_BODY_LEN..=MAX_RECORD_LEN).contains(&len) {
        return Decoded::Invalid(format!("impossible record length {len}"));
    }
    if len > rest - RECORD_HEADER_LEN {
        return Decoded::Invalid(format!(
            "record of {len} bytes but only {} remain",
            rest - RECORD_HEADER_LEN
        ));
    }
    let body = buf.slice(pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len);
    #[cfg(test)]
    CHECKSUMMED.with(|c| c.set(c.get() + len as u64));
    if crc32fast::hash(&body) != crc {
        return Decoded::Invalid("checksum mismatch".into());
    }
    match decode_body(&body) {
        Ok(rec) => Decoded::Record(rec, pos + RECORD_HEADER_LEN + len),
        Err(e) => Decoded::Invalid(e),
    }
}

fn decode_body(body: &Bytes) -> Result<WalRecord, String> {
    let seq = WalSeq(u64::from_le_bytes(body[..8].try_into().expect("8 bytes")));
    let group = WalSeq(u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")));
    if body[16] != KIND_BATCH {
        return Err(format!("unknown record kind {}", body[16]));
    }
    let mut pos = 17;
    let mut read_name = |what: &str| -> Result<String, String> {
        let len_end = pos + 2;
        let len = u16::from_le_bytes(
            body.get(pos..len_end)
                .ok_or("truncated name")?
                .try_into()
                .expect("2 bytes"),
        ) as usize;
        let bytes = body
            .get(len_end..len_end + len)
            .ok_or_else(|| format!("truncated {what} name"))?;
        pos = len_end + len;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} name is not UTF-8"))
    };
    let tenant = read_name("tenant")?
        .parse::<TenantId>()
        .map_err(|e| e.to_string())?;
    let table = read_name("table")?
        .parse::<TableName>()
        .map_err(|e| e.to_string())?;
    Ok(WalRecord {
        seq,
        group,
        tenant,
        table,
        data: body.slice(pos..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, data: &[u8]) -> WalRecord {
        WalRecord {
            seq: WalSeq(seq),
            group: WalSeq(seq),
            tenant: "acme".parse().unwrap(),
            table: "events".parse().unwrap(),
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        let a = rec(1, b"hello");
        let b = rec(2, b"");
        for r in [&a, &b] {
            encode_record(&mut buf, r.seq, r.group, &r.tenant, &r.table, &r.data);
        }
        let buf = Bytes::from(buf);
        let Decoded::Record(got_a, next) = decode_record(&buf, 0) else {
            panic!("first record")
        };
        assert_eq!(got_a, a);
        let Decoded::Record(got_b, end) = decode_record(&buf, next) else {
            panic!("second record")
        };
        assert_eq!(got_b, b);
        assert!(matches!(decode_record(&buf, end), Decoded::End));
    }

    #[test]
    fn damage_is_detected() {
        let mut buf = Vec::new();
        let r = rec(7, b"payload bytes");
        encode_record(&mut buf, r.seq, r.group, &r.tenant, &r.table, &r.data);
        // Every truncation is invalid, never a wrong record.
        for cut in 1..buf.len() {
            let b = Bytes::copy_from_slice(&buf[..cut]);
            assert!(
                matches!(decode_record(&b, 0), Decoded::Invalid(_)),
                "cut {cut}"
            );
        }
        // Every single-bit flip in the body is caught by the CRC.
        for i in RECORD_HEADER_LEN..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x10;
            let b = Bytes::from(damaged);
            assert!(
                matches!(decode_record(&b, 0), Decoded::Invalid(_)),
                "byte {i}"
            );
        }
    }

    #[test]
    fn header_checks() {
        assert!(check_header(&encode_header()).is_ok());
        assert!(check_header(b"ASWALSEG\x02\0\0\0\0\0\0\0").is_err());
        assert!(check_header(b"garbage!").is_err());
    }
}
