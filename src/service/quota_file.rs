//! Quota buckets kept across restarts: the daily amounts still refilling
//! are written to `<data-dir>/quotas.json` every second (when they
//! changed) and at shutdown, and read back at start-up. A crash loses at
//! most the last second of use.

use super::Service;
use crate::ratelimit::SavedBucket;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the buckets are kept, and what was written last.
#[derive(Debug)]
pub(super) struct QuotaFile {
    path: PathBuf,
    written: parking_lot::Mutex<Vec<u8>>,
}

impl QuotaFile {
    /// The file under `data_dir`, and the buckets it holds (none when it
    /// is missing; a file that cannot be read is reported and ignored, so
    /// the quotas start full rather than the server not at all).
    pub(super) fn open(data_dir: &std::path::Path) -> (QuotaFile, Vec<SavedBucket>) {
        let path = data_dir.join("quotas.json");
        let saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "the quota file is not valid; quotas start full");
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the quota file; quotas start full");
                Vec::new()
            }
        };
        let written = serde_json::to_vec(&saved).unwrap_or_default();
        let file = QuotaFile {
            path,
            written: parking_lot::Mutex::new(written),
        };
        (file, saved)
    }
}

impl Service {
    /// Writes the quota buckets still refilling, if they changed since
    /// the last write.
    pub fn save_quotas(&self) -> std::io::Result<()> {
        // Taken before the buckets are read, so that of two saves the one
        // with the newer buckets writes last.
        let mut written = self.quota_file.written.lock();
        let bytes = serde_json::to_vec(&self.quotas.saved()).map_err(std::io::Error::other)?;
        if *written == bytes {
            return Ok(());
        }
        crate::db::groups::write_durably(&self.quota_file.path, &bytes)?;
        *written = bytes;
        Ok(())
    }

    /// Saves the quota buckets every second until the server closes, and
    /// once more then.
    pub fn start_quota_saver(self: &Arc<Self>) {
        let service = self.clone();
        let closing = self.closing();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = closing.cancelled() => true,
                };
                let s = service.clone();
                match tokio::task::spawn_blocking(move || s.save_quotas()).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the quota file"),
                    Err(e) => tracing::warn!(error = %e, "the quota file's writer failed"),
                    Ok(Ok(())) => {}
                }
                if stop {
                    break;
                }
            }
        });
    }
}
