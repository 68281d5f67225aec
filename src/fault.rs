//! Named fault-injection points for the tests (the `fail` crate). Built
//! only with the `failpoints` feature; the points are set at start-up from
//! the `FAILPOINTS` environment variable, e.g.
//! `FAILPOINTS="wal-write=1*return(enospc)"` fails the first WAL write as
//! a full disk would. Without the feature every point is a no-op.
//!
//! Points: `wal-before-write` (pause or panic), `wal-write`, `wal-fsync`,
//! `wal-rotate`, `flush-write`, `flush-after-commit`, `flush-fsync`;
//! `pipeline-sink-delay=return(MS)`, which makes each write of a
//! pipeline's output wait MS milliseconds per 1,000 events first (a sink
//! that takes so many events a second); and
//! `maintenance-after-merge=return(MS)`, a pause after each partition a
//! maintenance run merges; `maintenance-before-adopt=return(MS)`, a pause
//! between a maintenance commit and moving queries to it (as a long flush
//! holding the table would make); `projection-fold-delay=return(MS)`, a
//! pause before a projection folds each batch of events (a projection
//! catching up slowly).

/// The error injected at `point`, if the test set one: `return(enospc)`
/// is a full disk, any other `return` a generic I/O error.
pub(crate) fn injected(point: &str) -> std::io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(point, |kind| Err(match kind.as_deref() {
        Some("enospc") => std::io::Error::from_raw_os_error(libc::ENOSPC),
        _ => std::io::Error::other(format!("injected failure at {point}")),
    }));
    let _ = point;
    Ok(())
}

/// The wait a test set at `point` with `return(MS)`, if any.
pub(crate) fn delay(point: &str) -> Option<std::time::Duration> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(point, |ms| ms
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis));
    let _ = point;
    None
}

/// Records that `path` is durable up to `len` bytes (a file) or in full
/// (`None`: a file or directory synced as a whole), in the file named by
/// `ALLSOURCE_SYNC_LOG`. The power-loss test reads it after `kill -9` and
/// drops every write that no sync covered, as a power cut would. A no-op
/// without the `failpoints` feature or the variable.
pub(crate) fn synced(path: &std::path::Path, len: Option<u64>) {
    #[cfg(feature = "failpoints")]
    {
        use std::io::Write;
        static LOG: std::sync::OnceLock<Option<parking_lot::Mutex<std::fs::File>>> =
            std::sync::OnceLock::new();
        let log = LOG.get_or_init(|| {
            let path = std::env::var_os("ALLSOURCE_SYNC_LOG")?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()?;
            Some(parking_lot::Mutex::new(file))
        });
        if let Some(log) = log {
            let len = len.map_or_else(|| "all".to_string(), |n| n.to_string());
            let _ = writeln!(log.lock(), "{len} {}", path.display());
        }
    }
    let _ = (path, len);
}
