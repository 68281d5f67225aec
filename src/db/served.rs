//! The data files queries may still be reading, which vacuum leaves.
//!
//! A query reads the files of the snapshot it was handed when it started,
//! for at most the query timeout. Queries are moved to a newer snapshot at
//! each flush, at each maintenance commit they adopt and at each commit of
//! the entity copy; from that moment the files the old snapshot listed
//! and the new one does not are handed to no new query. Delta's tombstone
//! says when a file was replaced, which is earlier: a flush may hold the
//! table while a run's commit waits to be adopted, and a commit that is
//! not adopted at all (another writer's flush in between) leaves queries
//! on the old files until the next flush. So vacuum also keeps every file
//! of the snapshot handed out now, and every file that left it less than
//! the retention ago.

use crate::background::Clock;
use deltalake::DeltaTable;
use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Which of a table's Delta tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// The table's own files.
    Table,
    /// Its entity copy's.
    EntityCopy,
}

/// The files one Delta table handed to queries lately.
#[derive(Debug, Default)]
struct Handed {
    /// The files of the snapshot queries are handed now.
    current: HashSet<String>,
    /// Files that left it, with when (milliseconds on the database's
    /// clock), oldest first.
    left: VecDeque<(i64, Vec<String>)>,
}

/// The files a table's snapshots handed to queries: its own and its
/// entity copy's.
#[derive(Debug)]
pub(crate) struct ServedFiles {
    clock: Arc<dyn Clock>,
    /// The longest a query may go on reading what it was handed: the
    /// vacuum retention (never less than the query timeout).
    keep_for: Duration,
    table: Mutex<Handed>,
    copy: Mutex<Handed>,
}

/// The files of `delta`'s snapshot, by their path in the table (as
/// vacuum names them); none before its first commit.
fn files_of(delta: Option<&DeltaTable>) -> HashSet<String> {
    let Some(Ok(snapshot)) = delta.map(|d| d.snapshot()) else {
        return HashSet::new();
    };
    snapshot
        .log_data()
        .iter()
        .map(|f| f.object_store_path().to_string())
        .collect()
}

impl ServedFiles {
    /// Queries are handed `table`'s files from now on; nothing was handed
    /// before (a process's first snapshot).
    pub(crate) fn new(clock: Arc<dyn Clock>, keep_for: Duration, table: &DeltaTable) -> Self {
        ServedFiles {
            clock,
            keep_for,
            table: Mutex::new(Handed {
                current: files_of(Some(table)),
                left: VecDeque::new(),
            }),
            copy: Mutex::new(Handed::default()),
        }
    }

    fn of(&self, which: Served) -> &Mutex<Handed> {
        match which {
            Served::Table => &self.table,
            Served::EntityCopy => &self.copy,
        }
    }

    /// Queries are handed `delta`'s files (none: `None`) from now on.
    /// The file set is built before the lock is taken.
    pub(crate) fn moved_to(&self, which: Served, delta: Option<&DeltaTable>) {
        let files = files_of(delta);
        let now = self.clock.now().timestamp_millis();
        let mut handed = self.of(which).lock();
        let gone: Vec<String> = handed.current.difference(&files).cloned().collect();
        if !gone.is_empty() {
            handed.left.push_back((now, gone));
        }
        handed.current = files;
        self.forget_old(&mut handed, now);
    }

    /// Drops what left more than `keep_for` before `now`: no query reads
    /// it any more. Done at each install too, so a process that never
    /// vacuums (another writer maintains the table) keeps no more than
    /// one retention's worth.
    fn forget_old(&self, handed: &mut Handed, now: i64) {
        let since = now - i64::try_from(self.keep_for.as_millis()).unwrap_or(i64::MAX);
        while handed.left.front().is_some_and(|(at, _)| *at <= since) {
            handed.left.pop_front();
        }
    }

    /// The files a query may still read: those handed out now, and those
    /// that left less than the retention ago.
    pub(crate) fn in_use(&self, which: Served) -> HashSet<String> {
        let now = self.clock.now().timestamp_millis();
        let mut handed = self.of(which).lock();
        self.forget_old(&mut handed, now);
        let mut files = handed.current.clone();
        files.extend(handed.left.iter().flat_map(|(_, f)| f.iter().cloned()));
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::background::ManualClock;

    fn handed(files: &[&str]) -> Handed {
        Handed {
            current: files.iter().map(|f| f.to_string()).collect(),
            left: VecDeque::new(),
        }
    }

    /// A file that left the snapshot is in use for `keep_for` after it
    /// left, however long before that it was replaced; an install
    /// forgets what left earlier.
    #[test]
    fn a_file_is_in_use_until_keep_for_after_it_left() {
        let clock = ManualClock::new(chrono::Utc::now());
        let served = ServedFiles {
            clock: clock.clone(),
            keep_for: Duration::from_secs(10),
            table: Mutex::new(handed(&["a", "b"])),
            copy: Mutex::new(Handed::default()),
        };
        let sorted = |s: HashSet<String>| {
            let mut v: Vec<String> = s.into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(sorted(served.in_use(Served::Table)), ["a", "b"]);
        // Moved to a snapshot without `a` (no Delta table: no files).
        served.moved_to(Served::Table, None);
        clock.advance(Duration::from_secs(9));
        assert_eq!(sorted(served.in_use(Served::Table)), ["a", "b"]);
        clock.advance(Duration::from_secs(1));
        assert!(served.in_use(Served::Table).is_empty());
        assert!(
            served.table.lock().left.is_empty(),
            "forgotten once out of use"
        );
        *served.table.lock() = handed(&["c"]);
        served.moved_to(Served::Table, None);
        assert_eq!(served.table.lock().left.len(), 1);
        clock.advance(Duration::from_secs(10));
        served.moved_to(Served::Table, None);
        assert!(
            served.table.lock().left.is_empty(),
            "forgotten at an install"
        );
        // The copy's files are kept apart.
        assert!(served.in_use(Served::EntityCopy).is_empty());
    }
}
