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
mod writer;

use writer::Writer;

pub use format::WalRecord;

/// Largest data payload one record may carry (with room for its header).
pub const MAX_RECORD_BYTES: usize = format::MAX_RECORD_LEN - 4096;

use crate::ids::{TableName, TenantId, WalSeq};
use bytes::Bytes;
use recover::recover;
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
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

#[cfg(test)]
mod tests;
