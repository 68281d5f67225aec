//! The writer thread: it owns the active segment, writes each group of
//! appends with one vectored write and one fsync, answers them, rotates
//! segments and truncates the log behind flushes.

use super::{
    Command, Error, Result, Segment, WalConfig, WalStats, format, fsync_dir, io_err, is_disk_full,
    segment_path,
};
use crate::fault::injected;
use crate::ids::WalSeq;
use format::HEADER_LEN;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// The state owned by the writer thread.
pub(super) struct Writer {
    pub(super) config: WalConfig,
    /// Closed segments, oldest first, and then the active one.
    pub(super) segments: Vec<Segment>,
    pub(super) active: Option<(File, u64)>,
    pub(super) next: WalSeq,
    /// `next`, published once the records below it are applied.
    pub(super) next_shared: Arc<AtomicU64>,
    pub(super) poisoned: Arc<AtomicBool>,
    pub(super) poison_reason: Option<String>,
    pub(super) stats: Arc<parking_lot::Mutex<WalStats>>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
    pub(super) fn rotate(&mut self) -> Result<()> {
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
pub(super) fn write_all_vectored(out: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
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
