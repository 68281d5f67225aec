use super::writer::write_all_vectored;
use super::*;
use format::HEADER_LEN;
use std::fs::OpenOptions;
use std::io::Write;

fn config(dir: &Path, segment_bytes: u64) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
    }
}

async fn append(wal: &Wal, data: &'static [u8]) -> WalSeq {
    wal.append(
        "default".parse().unwrap(),
        "events".parse().unwrap(),
        Bytes::from_static(data),
        Box::new(|_| {}),
    )
    .await
    .unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn appends_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, records) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    assert!(records.is_empty());
    let applied = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..50u64 {
        let wal = wal.clone();
        let applied = applied.clone();
        handles.push(tokio::spawn(async move {
            wal.append(
                "default".parse().unwrap(),
                "events".parse().unwrap(),
                Bytes::from(i.to_le_bytes().to_vec()),
                Box::new(move |seq| applied.lock().push(seq)),
            )
            .await
            .unwrap()
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    // apply ran in sequence order
    let applied = applied.lock().clone();
    assert_eq!(applied, (1..=50).map(WalSeq).collect::<Vec<_>>());
    assert!(wal.stats().fsyncs <= 50);
    drop(wal);
    let (_wal, records) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    assert_eq!(records.len(), 50);
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == WalSeq(i as u64 + 1))
    );
}

#[tokio::test]
async fn torn_tail_is_cut_and_sequence_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    append(&wal, b"one").await;
    append(&wal, b"two").await;
    drop(wal);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Simulate a torn write: half a record at the end.
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(f);
    let (wal, records) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(append(&wal, b"three").await, WalSeq(3));
    drop(wal);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, records) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    let data: Vec<_> = records.iter().map(|r| r.data.clone()).collect();
    assert_eq!(data, vec!["one", "two", "three"]);
}

#[tokio::test]
async fn damage_before_valid_records_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    append(&wal, b"first record").await;
    append(&wal, b"second record").await;
    drop(wal);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[HEADER_LEN + 20] ^= 0xff; // inside the first record's body
    std::fs::write(&seg, bytes).unwrap();
    let err = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test]
async fn segments_rotate_and_truncate() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments: every append rotates.
    let (wal, _) = Wal::open(config(dir.path(), 1), WalSeq(1)).unwrap();
    for _ in 0..5 {
        append(&wal, b"data").await;
    }
    // Commands run in order, so once truncate answers every rotation is
    // done: 5 full segments plus a fresh active one, of which 1..=3 go.
    assert_eq!(wal.truncate(WalSeq(4)).await.unwrap(), 3);
    assert_eq!(segment_files(dir.path()).len(), 3);
    drop(wal);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, records) = Wal::open(config(dir.path(), 1), WalSeq(1)).unwrap();
    let seqs: Vec<_> = records.iter().map(|r| r.seq.0).collect();
    assert_eq!(seqs, vec![4, 5]);
}

#[tokio::test]
async fn sequence_starts_above_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path(), 1 << 20), WalSeq(500)).unwrap();
    assert_eq!(append(&wal, b"x").await, WalSeq(500));
}

#[tokio::test]
async fn a_torn_group_is_cut_even_with_later_records_of_it_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    append(&wal, b"acknowledged").await;
    drop(wal);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A group of two records (seq 2 and 3, group 2) whose first record's
    // page never reached the disk, but whose second did.
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut group = Vec::new();
    let (t, n) = ("default".parse().unwrap(), "events".parse().unwrap());
    format::encode_record(&mut group, WalSeq(2), WalSeq(2), &t, &n, b"lost");
    let first_len = group.len();
    format::encode_record(&mut group, WalSeq(3), WalSeq(2), &t, &n, b"also lost");
    for b in &mut group[..first_len] {
        *b = 0;
    }
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&group).unwrap();
    drop(f);
    let (_, records) = Wal::open(config(dir.path(), 1 << 20), WalSeq(1)).unwrap();
    assert_eq!(records.len(), 1);
}

/// A writer that takes at most 5 bytes per call, and fails the first
/// call with `Interrupted`, as a signal may.
struct Stingy {
    got: Vec<u8>,
    calls: usize,
}

impl Write for Stingy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls == 1 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let mut room = 5;
        for b in bufs {
            let n = b.len().min(room);
            self.got.extend_from_slice(&b[..n]);
            room -= n;
            if room == 0 {
                break;
            }
        }
        Ok(5 - room)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn vectored_writes_resume_where_a_short_write_stopped() {
    let mut out = Stingy {
        got: Vec::new(),
        calls: 0,
    };
    let parts: [&[u8]; 5] = [b"head", b"", b"a longer payload", b"h2", b"x"];
    write_all_vectored(&mut out, &parts).unwrap();
    assert_eq!(out.got, b"heada longer payloadh2x");
    // A head written before its data (apart) decodes as one record, CRC
    // and all.
    let (t, n) = ("default".parse().unwrap(), "events".parse().unwrap());
    let head = format::record_head(WalSeq(7), WalSeq(5), &t, &n, b"payload");
    let mut out = Stingy {
        got: Vec::new(),
        calls: 0,
    };
    write_all_vectored(&mut out, &[&head, b"payload"]).unwrap();
    match format::decode_record(&Bytes::from(out.got.clone()), 0) {
        format::Decoded::Record(r, end) => {
            assert_eq!((r.seq, r.group, end), (WalSeq(7), WalSeq(5), out.got.len()));
            assert_eq!(&r.data[..], b"payload");
        }
        other => panic!("{other:?}"),
    }
    out.got[head.len() + 2] ^= 1;
    assert!(matches!(
        format::decode_record(&Bytes::from(out.got), 0),
        format::Decoded::Invalid(_)
    ));
}

#[test]
fn recovering_a_torn_record_costs_linear_work() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (wal, _) = Wal::open(config(dir.path(), 1 << 30), WalSeq(1)).unwrap();
    rt.block_on(append(&wal, b"kept"));
    // Bytes that look like nothing in particular, as event data does.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..4_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    rt.block_on(wal.append(
        "default".parse().unwrap(),
        "events".parse().unwrap(),
        Bytes::from(data),
        Box::new(|_| {}),
    ))
    .unwrap();
    drop(wal);
    drop(rt);
    std::thread::sleep(Duration::from_millis(50));
    // Tear the big record in its middle.
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 2_000_000)
        .unwrap();
    format::CHECKSUMMED.with(|c| c.set(0));
    let (_wal, records) = Wal::open(config(dir.path(), 1 << 30), WalSeq(1)).unwrap();
    assert_eq!(records.len(), 1, "the acknowledged record is kept");
    let work = format::CHECKSUMMED.with(|c| c.get());
    assert!(
        work < 2 * len,
        "recovery checksummed {work} bytes of a {len}-byte segment"
    );
}
