//! The run history: the newest runs in memory (for `system.compactions`),
//! also appended to `<data-dir>/maintenance.jsonl` so that they outlive
//! the process.
//!
//! The file stays bounded: once it passes a size it is rewritten with only
//! the runs remembered (write, fsync, rename), and start-up reads only its
//! tail, so neither the disk nor the start-up time grows with the server's
//! age.

use super::MaintenanceReport;
use crate::ids::TenantId;
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How many past runs `system.compactions` and the admin API remember.
const KEEP: usize = 1000;

/// The file is rewritten once it is larger than this (about twice what
/// [`KEEP`] runs take), and start-up reads no more than this of its end.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The run history, newest last.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    /// Runs remembered.
    keep: usize,
    /// The size past which the file is rewritten; start-up reads at most
    /// this much of it.
    max_file_bytes: u64,
    state: parking_lot::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    runs: VecDeque<MaintenanceReport>,
    /// The file's size, as far as this process wrote or read it.
    file_bytes: u64,
    /// When the file is rewritten next: the size limit, or twice what the
    /// last rewrite left if the remembered runs alone are that large.
    rewrite_at: u64,
}

impl History {
    /// Loads what earlier processes recorded in `path`.
    pub(crate) fn load(path: &Path) -> History {
        Self::load_with(path, KEEP, MAX_FILE_BYTES)
    }

    /// [`History::load`] remembering `keep` runs, rewriting the file past
    /// `max_file_bytes`.
    fn load_with(path: &Path, keep: usize, max_file_bytes: u64) -> History {
        let (runs, file_bytes) = match read_tail(path, max_file_bytes) {
            Ok((text, len)) => {
                let mut runs = VecDeque::new();
                for line in text.lines() {
                    if let Ok(r) = serde_json::from_str::<serde_json::Value>(line)
                        && let Some(r) = report_from_json(&r)
                    {
                        runs.push_back(r);
                        if runs.len() > keep {
                            runs.pop_front();
                        }
                    }
                }
                (runs, len)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not read the maintenance history");
                }
                (VecDeque::new(), 0)
            }
        };
        History {
            path: path.to_path_buf(),
            keep,
            max_file_bytes,
            state: parking_lot::Mutex::new(State {
                runs,
                file_bytes,
                rewrite_at: max_file_bytes,
            }),
        }
    }

    /// Remembers a run and appends it to the file (rewriting the file
    /// when it has grown past its limit).
    pub(crate) fn record(&self, report: &MaintenanceReport) {
        let mut state = self.state.lock();
        state.runs.push_back(report.clone());
        if state.runs.len() > self.keep {
            state.runs.pop_front();
        }
        let line = format!("{}\n", serde_json::to_string(report).unwrap_or_default());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        match written {
            Ok(()) => state.file_bytes += line.len() as u64,
            Err(e) => tracing::warn!(error = %e, "could not record the maintenance run"),
        }
        if state.file_bytes > state.rewrite_at {
            match self.rewrite(&state.runs) {
                Ok(len) => {
                    state.file_bytes = len;
                    state.rewrite_at = self.max_file_bytes.max(len.saturating_mul(2));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not compact the maintenance history")
                }
            }
        }
    }

    /// Replaces the file with `runs`; returns its new size.
    fn rewrite(&self, runs: &VecDeque<MaintenanceReport>) -> std::io::Result<u64> {
        let mut text = String::new();
        for r in runs {
            text.push_str(&serde_json::to_string(r).unwrap_or_default());
            text.push('\n');
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        Ok(text.len() as u64)
    }

    /// The remembered runs of `tenant`, oldest first.
    pub fn runs(&self, tenant: &TenantId) -> Vec<MaintenanceReport> {
        self.state
            .lock()
            .runs
            .iter()
            .filter(|r| r.tenant == tenant.as_str())
            .cloned()
            .collect()
    }
}

/// The last `max` bytes of the file, from its first whole line, and the
/// file's size.
fn read_tail(path: &Path, max: u64) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    f.take(max).read_to_end(&mut bytes)?;
    if start > 0 {
        // Started mid-line: skip to the next one.
        let first = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first);
    }
    Ok((String::from_utf8_lossy(&bytes).into_owned(), len))
}

fn report_from_json(v: &serde_json::Value) -> Option<MaintenanceReport> {
    let s = |k: &str| v[k].as_str().map(String::from);
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Some(MaintenanceReport {
        tenant: s("tenant")?,
        table: s("table")?,
        started_at: s("started_at")?,
        duration_ms: n("duration_ms"),
        entity_copy_ms: n("entity_copy_ms"),
        dry_run: v["dry_run"].as_bool().unwrap_or(false),
        partitions: n("partitions") as usize,
        files_in: n("files_in"),
        bytes_in: n("bytes_in"),
        files_out: n("files_out"),
        bytes_out: n("bytes_out"),
        retention_files_removed: n("retention_files_removed"),
        vacuumed_files: n("vacuumed_files"),
        checkpoint: v["checkpoint"].as_bool().unwrap_or(false),
        outcome: crate::db::maintenance::Outcome::from_text(&s("outcome").unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(i: usize) -> MaintenanceReport {
        MaintenanceReport {
            tenant: "acme".into(),
            table: "events".into(),
            started_at: format!("run {i}"),
            duration_ms: i as u64,
            entity_copy_ms: 0,
            dry_run: false,
            partitions: 0,
            files_in: 0,
            bytes_in: 0,
            files_out: 0,
            bytes_out: 0,
            retention_files_removed: 0,
            vacuumed_files: 0,
            checkpoint: false,
            outcome: crate::db::maintenance::Outcome::NothingToDo,
        }
    }

    fn started(h: &History) -> Vec<u64> {
        h.runs(&"acme".parse().unwrap())
            .iter()
            .map(|r| r.duration_ms)
            .collect()
    }

    #[test]
    fn the_file_is_compacted_and_only_its_tail_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maintenance.jsonl");
        let line_len = serde_json::to_string(&report(100)).unwrap().len() as u64 + 1;
        let max = 20 * line_len;
        let h = History::load_with(&path, 10, max);
        for i in 100..400 {
            h.record(&report(i));
            // Never much more than the limit on disk.
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(len <= max + line_len, "{len} bytes after run {i}");
        }
        assert_eq!(started(&h), (390..400).collect::<Vec<_>>());
        let again = History::load_with(&path, 10, max);
        assert_eq!(started(&again), (390..400).collect::<Vec<_>>());

        // A file grown large by an earlier version: only the newest runs
        // are read back, from the tail (its start is not even JSON), and
        // the next run compacts it.
        let mut big = "not a report, and no newline for a long while ".repeat(10_000);
        big.push('\n');
        for i in 0..5000 {
            big.push_str(&serde_json::to_string(&report(i)).unwrap());
            big.push('\n');
        }
        std::fs::write(&path, &big).unwrap();
        let old = History::load_with(&path, 10, max);
        assert_eq!(started(&old), (4990..5000).collect::<Vec<_>>());
        old.record(&report(5000));
        let len = std::fs::metadata(&path).unwrap().len();
        let kept: u64 = (4991..5001)
            .map(|i| serde_json::to_string(&report(i)).unwrap().len() as u64 + 1)
            .sum();
        assert_eq!(len, kept, "compacted to the runs remembered");
        let reread = History::load_with(&path, 10, max);
        assert_eq!(started(&reread), (4991..5001).collect::<Vec<_>>());
    }
}
