//! Named fault-injection points for the tests (the `fail` crate). Built
//! only with the `failpoints` feature; the points are set at start-up from
//! the `FAILPOINTS` environment variable, e.g.
//! `FAILPOINTS="wal-write=1*return(enospc)"` fails the first WAL write as
//! a full disk would. Without the feature every point is a no-op.
//!
//! Points: `wal-before-write` (pause or panic), `wal-write`, `wal-fsync`,
//! `wal-rotate`, `flush-write`, `flush-after-commit`, `flush-fsync`.

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
