//! The write-ahead log: every accepted batch of events is appended here and
//! fsynced before the client hears "accepted".
//!
//! Layout: a directory of segment files `<first seq, 20 digits>.wal`, each a
//! header and framed, checksummed records (see [`format`]). One writer
//! thread owns the active segment. Appends queue on a channel; the writer
//! takes everything queued, writes it, calls `fdatasync` once and then
//! answers them all (group commit), so concurrent requests share an fsync.
//!
//! After the fsync and before answering, the writer runs each append's
//! `apply` callback in sequence order. The database uses it to put the batch
//! into the in-memory buffer, so the buffer of a table always holds a
//! contiguous run of its WAL records in order — which is what lets a flush
//! record "everything up to seq N is in Delta" safely.
//!
//! Recovery ([`Wal::open`]) reads every segment in order. A damaged record at
//! the very end of the newest segment is a torn write that was never
//! acknowledged: it is cut off. Damage anywhere else, or a damaged record
//! followed by a valid one, is corruption and stops start-up.
//!
//! A failed write is rolled back: the segment is cut to its length before
//! the write and the records are refused. So is an fsync that fails for
//! want of space (the file system could not allocate the blocks written):
//! everything before the write was synced earlier, so cutting the segment
//! back and syncing the cut leaves exactly that. Any other failed fsync
//! poisons the log: the device failed, the kernel may have dropped the
//! dirty pages, and a retried fsync proves nothing (PostgreSQL's
//! "fsyncgate"). Every later append fails and the server reports itself
//! unhealthy.

mod format;
mod recover;

pub use format::WalRecord;

/// Largest data payload one record may carry (with room for its header).
pub const MAX_RECORD_BYTES: usize = format::MAX_RECORD_LEN - 4096;

use crate::fault::injected;
use crate::ids::{TableName, TenantId, WalSeq};
use bytes::Bytes;
use format::HEADER_LEN;
use recover::recover;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("WAL I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("WAL corrupt in {path} at byte {offset}: {reason}; refusing to start")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
    #[error("the WAL failed earlier ({0}); no more writes are accepted, restart the server")]
    Poisoned(String),
    #[error(
        "writing the WAL at {path} failed ({source}); nothing of this request was stored, retry once the cause is fixed"
    )]
    WriteRefused { path: PathBuf, source: io::Error },
    #[error("the WAL writer has stopped")]
    Closed,
    #[error("a WAL record of {0} bytes is larger than the format allows")]
    RecordTooLarge(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `e` says the disk (or the quota) is full.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

/// What the writer runs after the fsync, in sequence order, before it
/// answers the append.
pub type ApplyFn = Box<dyn FnOnce(WalSeq) + Send>;

enum Command {
    Append {
        tenant: TenantId,
        table: TableName,
        data: Bytes,
        apply: ApplyFn,
        reply: oneshot::Sender<Result<WalSeq>>,
    },
    /// Delete closed segments whose records are all below this sequence.
    Truncate {
        keep_from: WalSeq,
        reply: oneshot::Sender<Result<usize>>,
    },
}

/// Observed timings of the writer, for metrics and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct WalStats {
    pub fsyncs: u64,
    pub records: u64,
    pub last_fsync: Duration,
}

/// Handle to the log; cheap to clone.
#[derive(Debug, Clone)]
pub struct Wal {
    tx: mpsc::Sender<Command>,
    /// The next sequence to be assigned; every record below it has been
    /// applied (see [`Wal::next_seq`]).
    next: Arc<AtomicU64>,
    poisoned: Arc<AtomicBool>,
    stats: Arc<parking_lot::Mutex<WalStats>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append { tenant, table, .. } => write!(f, "Append({tenant}.{table})"),
            Command::Truncate { keep_from, .. } => write!(f, "Truncate({keep_from})"),
        }
    }
}

/// A segment file and the range of sequence numbers in it.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first: WalSeq,
    /// Highest sequence written to it; `None` while empty.
    last: Option<WalSeq>,
}

fn segment_path(dir: &Path, first: WalSeq) -> PathBuf {
    dir.join(format!("{:020}.wal", first.0))
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Wal {
    /// Opens the log in `config.dir` (created if missing), recovering what is
    /// there. Returns the handle and every record still in the log, in
    /// order, for the caller to replay.
    ///
    /// `floor` is the lowest sequence new records may get: one past the
    /// highest sequence already persisted in any table. It matters when the
    /// WAL directory is new or was emptied while the tables live elsewhere
    /// (S3): new records must never reuse persisted sequence numbers.
    pub fn open(config: WalConfig, floor: WalSeq) -> Result<(Wal, Vec<WalRecord>)> {
        std::fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
        let (segments, records) = recover(&config.dir)?;
        let next = records
            .last()
            .map(|r| WalSeq(r.seq.0 + 1))
            .or_else(|| segments.last().map(|s| s.first))
            .unwrap_or(WalSeq(1))
            .max(floor);
        let (tx, rx) = mpsc::channel(4096);
        let poisoned = Arc::new(AtomicBool::new(false));
        let next_shared = Arc::new(AtomicU64::new(next.0));
        let stats = Arc::new(parking_lot::Mutex::new(WalStats::default()));
        let mut writer = Writer {
            config,
            segments,
            active: None,
            next,
            next_shared: next_shared.clone(),
            poisoned: poisoned.clone(),
            poison_reason: None,
            stats: stats.clone(),
        };
        // Start a fresh segment rather than appending after a cut tail.
        writer.rotate()?;
        std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| Error::Io {
                path: PathBuf::from("<wal thread>"),
                source,
            })?;
        Ok((
            Wal {
                tx,
                next: next_shared,
                poisoned,
                stats,
            },
            records,
        ))
    }

    /// Appends a batch and waits until it is on disk. `apply` runs on the
    /// writer thread after the fsync, in sequence order.
    pub async fn append(
        &self,
        tenant: TenantId,
        table: TableName,
        data: Bytes,
        apply: ApplyFn,
    ) -> Result<WalSeq> {
        self.submit(tenant, table, data, apply).await?.await
    }

    /// Queues a batch for the writer and returns a future that resolves
    /// once it is on disk and applied. Records are written in the order
    /// they are queued, so a caller may queue several before waiting.
    pub async fn submit(
        &self,
        tenant: TenantId,
        table: TableName,
        data: Bytes,
        apply: ApplyFn,
    ) -> Result<impl Future<Output = Result<WalSeq>> + use<>> {
        let (command, logged) = append_command(tenant, table, data, apply)?;
        self.tx.send(command).await.map_err(|_| Error::Closed)?;
        Ok(logged)
    }

    /// [`Wal::submit`] for a blocking thread (never an async task): the
    /// record is queued before this returns, so records submitted one
    /// after another under a lock are logged in that order.
    pub fn submit_blocking(
        &self,
        tenant: TenantId,
        table: TableName,
        data: Bytes,
        apply: ApplyFn,
    ) -> Result<impl Future<Output = Result<WalSeq>> + use<>> {
        let (command, logged) = append_command(tenant, table, data, apply)?;
        self.tx.blocking_send(command).map_err(|_| Error::Closed)?;
        Ok(logged)
    }

    /// Deletes closed segments holding only records below `keep_from`.
    /// Returns how many were deleted.
    pub async fn truncate(&self, keep_from: WalSeq) -> Result<usize> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Truncate { keep_from, reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The sequence the next append will get. Every record below it has
    /// been written, synced and applied.
    pub fn next_seq(&self) -> WalSeq {
        WalSeq(self.next.load(Ordering::Acquire))
    }

    /// True once a write or fsync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Counters of the writer.
    pub fn stats(&self) -> WalStats {
        *self.stats.lock()
    }
}

/// An append for the writer, and the future its reply resolves; refused
/// when the record is over the size limit.
fn append_command(
    tenant: TenantId,
    table: TableName,
    data: Bytes,
    apply: ApplyFn,
) -> Result<(Command, impl Future<Output = Result<WalSeq>> + use<>)> {
    if data.len() > MAX_RECORD_BYTES {
        return Err(Error::RecordTooLarge(data.len()));
    }
    let (reply, rx) = oneshot::channel();
    let command = Command::Append {
        tenant,
        table,
        data,
        apply,
        reply,
    };
    Ok((command, async move { rx.await.map_err(|_| Error::Closed)? }))
}

/// The state owned by the writer thread.
struct Writer {
    config: WalConfig,
    /// Closed segments, oldest first, and then the active one.
    segments: Vec<Segment>,
    active: Option<(File, u64)>,
    next: WalSeq,
    /// `next`, published once the records below it are applied.
    next_shared: Arc<AtomicU64>,
    poisoned: Arc<AtomicBool>,
    poison_reason: Option<String>,
    stats: Arc<parking_lot::Mutex<WalStats>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut queue = Vec::new();
        while let Some(cmd) = rx.blocking_recv() {
            queue.push(cmd);
            // Everything that queued up during the previous fsync shares the
            // next one.
            while queue.len() < 4096 {
                match rx.try_recv() {
                    Ok(cmd) => queue.push(cmd),
                    Err(_) => break,
                }
            }
            self.handle(std::mem::take(&mut queue));
        }
        if let Some((file, _)) = &self.active {
            let _ = file.sync_data();
        }
    }

    fn handle(&mut self, cmds: Vec<Command>) {
        let mut appends = Vec::new();
        let mut truncates = Vec::new();
        for cmd in cmds {
            match cmd {
                Command::Append {
                    tenant,
                    table,
                    data,
                    apply,
                    reply,
                } => appends.push((tenant, table, data, apply, reply)),
                Command::Truncate { keep_from, reply } => truncates.push((keep_from, reply)),
            }
        }
        if !appends.is_empty() {
            if let Some(reason) = &self.poison_reason {
                for (.., reply) in appends {
                    let _ = reply.send(Err(Error::Poisoned(reason.clone())));
                }
            } else {
                let first = self.next;
                let heads: Vec<Vec<u8>> = appends
                    .iter()
                    .enumerate()
                    .map(|(i, (tenant, table, data, ..))| {
                        format::record_head(WalSeq(first.0 + i as u64), first, tenant, table, data)
                    })
                    .collect();
                let parts: Vec<&[u8]> = heads
                    .iter()
                    .zip(&appends)
                    .flat_map(|(head, (_, _, data, ..))| [head.as_slice(), data.as_ref()])
                    .collect();
                match self.write_and_sync(&parts) {
                    Ok(()) => {
                        let n = appends.len() as u64;
                        self.next = WalSeq(first.0 + n);
                        if let Some(seg) = self.segments.last_mut() {
                            seg.last = Some(WalSeq(first.0 + n - 1));
                        }
                        self.stats.lock().records += n;
                        for (i, (.., apply, reply)) in appends.into_iter().enumerate() {
                            let seq = WalSeq(first.0 + i as u64);
                            apply(seq);
                            let _ = reply.send(Ok(seq));
                        }
                        self.next_shared.store(self.next.0, Ordering::Release);
                        if self.active.as_ref().map(|a| a.1).unwrap_or(0)
                            >= self.config.segment_bytes
                        {
                            self.rotate_or_poison();
                        }
                    }
                    Err(Error::WriteRefused { path, source }) => {
                        // Rolled back: the log is as it was before the
                        // write, and none of these records was acknowledged.
                        tracing::error!(path = %path.display(), error = %source, "WAL write failed and was rolled back");
                        crate::metrics::get().wal_write_failures.inc();
                        for (.., reply) in appends {
                            let err = match source.raw_os_error() {
                                Some(code) => io::Error::from_raw_os_error(code),
                                None => io::Error::new(source.kind(), source.to_string()),
                            };
                            let _ = reply.send(Err(Error::WriteRefused {
                                path: path.clone(),
                                source: err,
                            }));
                        }
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        self.poison(reason.clone());
                        for (.., reply) in appends {
                            let _ = reply.send(Err(Error::Poisoned(reason.clone())));
                        }
                    }
                }
            }
        }
        for (keep_from, reply) in truncates {
            let _ = reply.send(self.truncate(keep_from));
        }
    }

    fn poison(&mut self, reason: String) {
        tracing::error!(%reason, "WAL write failed; refusing further writes");
        self.poisoned.store(true, Ordering::Relaxed);
        self.poison_reason = Some(reason);
    }

    /// Writes `parts` one after another (one vectored write for many
    /// records, without gathering them into one buffer), then fsyncs.
    ///
    /// A failed write (a full disk, typically) is rolled back: the file is
    /// cut to its length before the write and the log carries on, since
    /// no byte of the failed write was acknowledged or synced. So is an
    /// fsync that fails for want of space, once the cut is itself synced.
    /// Any other failed fsync, or a write that cannot be rolled back,
    /// poisons the log.
    fn write_and_sync(&mut self, parts: &[&[u8]]) -> Result<()> {
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let (file, size) = self.active.as_mut().ok_or(Error::Closed)?;
        // A pause (or a panic) injected before the write.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("wal-before-write");
        if let Err(source) = injected("wal-write").and_then(|_| write_all_vectored(file, parts)) {
            file.set_len(*size)
                .and_then(|_| file.seek(io::SeekFrom::Start(*size)))
                .map_err(io_err(&path))?;
            return Err(Error::WriteRefused { path, source });
        }
        let started = Instant::now();
        if let Err(source) = injected("wal-fsync").and_then(|_| file.sync_data()) {
            if !is_disk_full(&source) {
                return Err(io_err(&path)(source));
            }
            // Out of space while the file system allocated the written
            // blocks. What this write left in the page cache proves
            // nothing, but everything before it was synced earlier: cut
            // the file back to that and sync the cut. If that holds, the
            // log is exactly what it was before the write.
            file.set_len(*size)
                .and_then(|_| file.seek(io::SeekFrom::Start(*size)))
                .and_then(|_| file.sync_all())
                .map_err(|e| Error::Io {
                    path: path.clone(),
                    source: io::Error::new(
                        e.kind(),
                        format!("{e}, cutting back a write whose fsync failed ({source})"),
                    ),
                })?;
            crate::fault::synced(&path, Some(*size));
            return Err(Error::WriteRefused { path, source });
        }
        let written: u64 = parts.iter().map(|p| p.len() as u64).sum();
        crate::fault::synced(&path, Some(*size + written));
        crate::metrics::get()
            .wal_fsync_seconds
            .with_label_values(&[] as &[&str])
            .observe(started.elapsed().as_secs_f64());
        let mut stats = self.stats.lock();
        stats.fsyncs += 1;
        stats.last_fsync = started.elapsed();
        *size += written;
        Ok(())
    }

    /// Starts a new segment once the active one is full. A new segment
    /// that cannot be created (a full disk) is not fatal: the active one
    /// takes the next records and the rotation is tried again after them.
    fn rotate_or_poison(&mut self) {
        match self.rotate() {
            Ok(()) => {}
            Err(Error::WriteRefused { path, source }) => tracing::warn!(
                path = %path.display(), error = %source,
                "cannot start a new WAL segment; appending to the current one"
            ),
            Err(e) => self.poison(e.to_string()),
        }
    }

    /// Closes the active segment (if any) and starts a new one at `next`.
    /// Fails with [`Error::WriteRefused`], leaving the active segment as
    /// it was, when the new one cannot be created.
    fn rotate(&mut self) -> Result<()> {
        let path = segment_path(&self.config.dir, self.next);
        let created = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .and_then(|mut file| {
                injected("wal-rotate")?;
                file.write_all(&format::encode_header())?;
                file.sync_all()?;
                crate::fault::synced(&path, Some(HEADER_LEN as u64));
                Ok(file)
            });
        let file = match created {
            Ok(file) => file,
            Err(source) => {
                let _ = std::fs::remove_file(&path);
                return Err(Error::WriteRefused { path, source });
            }
        };
        if let Some((old, _)) = self.active.take() {
            let old_path = &self.segments.last().expect("active segment").path;
            old.sync_all().map_err(io_err(old_path))?;
        }
        fsync_dir(&self.config.dir)?;
        // A segment recovered empty (its records all cut) is replaced.
        if let Some(last) = self.segments.last()
            && last.first == self.next
            && last.last.is_none()
            && last.path == path
        {
            self.segments.pop();
        }
        self.segments.push(Segment {
            path,
            first: self.next,
            last: None,
        });
        self.active = Some((file, HEADER_LEN as u64));
        Ok(())
    }

    fn truncate(&mut self, keep_from: WalSeq) -> Result<usize> {
        // When everything in the active segment is persisted too, start a
        // new one so the old can go: an idle server keeps no stale records.
        let active_done = self
            .segments
            .last()
            .and_then(|s| s.last)
            .is_some_and(|last| last < keep_from);
        if active_done && self.poison_reason.is_none() {
            match self.rotate() {
                Ok(()) => {}
                // Nothing is lost: the segment is kept until a later try.
                Err(Error::WriteRefused { .. }) => return Ok(0),
                Err(e) => {
                    self.poison(e.to_string());
                    return Err(e);
                }
            }
        }
        let mut removed = 0;
        // Never the active (last) segment.
        while self.segments.len() > 1 {
            let seg = &self.segments[0];
            let done = match seg.last {
                Some(last) => last < keep_from,
                None => true,
            };
            if !done {
                break;
            }
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            fsync_dir(&self.config.dir)?;
        }
        Ok(removed)
    }
}

/// `Write::write_all` over several buffers: vectored writes until every
/// byte is written (a write may stop short, or within a buffer).
fn write_all_vectored(out: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| std::io::IoSlice::new(p))
        .collect();
    let mut rest = slices.as_mut_slice();
    // The kernel takes at most IOV_MAX (1024) buffers per call.
    while !rest.is_empty() {
        let take = rest.len().min(1024);
        match out.write_vectored(&rest[..take]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
