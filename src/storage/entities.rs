//! Where an event table's entity copy lives, and what its log records.
//!
//! The entity copy holds a table's stored events a second time, laid out
//! for reading one entity: partitioned by a hash of `entity_id` into
//! [`BUCKETS`] buckets and sorted by `entity_id` then `position` within
//! each file, so one entity's events are in one bucket's few files instead
//! of every daily file of the table. It is a Delta table of its own at
//! `<root>/_allsource/entities/<tenant>/<table>/`, outside the tables'
//! directories (table discovery, backups and other engines see only the
//! tables), and it is derived data: maintenance builds and extends it
//! (`db::maintenance::entities`), and losing it loses nothing.
//!
//! Its log records, as Delta application transactions:
//! - [`COVERED_APP_ID`]: the copy holds exactly the table's stored events
//!   with a position up to this one (0: nothing, the copy is not used);
//! - [`HIDDEN_APP_ID`]: events with a `timestamp` before this (micros)
//!   are no longer the table's (retention deleted them there) and are
//!   not read from the copy.

use super::lease::META_DIR;
use super::scan::DeltaFiles;
use super::{Result, Storage};
use crate::ids::{TableName, TenantId};
use deltalake::DeltaTable;
use std::sync::Arc;
use url::Url;

/// The buckets an entity copy is partitioned into.
pub const BUCKETS: u32 = 16;
/// The copy's partition column: the entity's bucket.
pub const BUCKET_COLUMN: &str = "entity_bucket";
/// Application id whose version is the highest position the copy covers.
pub const COVERED_APP_ID: &str = "allsource-entities-covered";
/// Application id whose version is the retention cutoff (micros) below
/// which the copy's events are hidden.
pub const HIDDEN_APP_ID: &str = "allsource-entities-hidden";

/// The bucket of `entity`: a hash that never changes between processes or
/// versions, since the copy's files are laid out by it.
pub fn bucket_of(entity: &str) -> i32 {
    (xxhash_rust::xxh3::xxh3_64(entity.as_bytes()) % u64::from(BUCKETS)) as i32
}

/// An entity copy as queries read it.
#[derive(Debug, Clone)]
pub struct EntityCopy {
    /// The copy's files.
    pub files: Arc<DeltaFiles>,
    /// It holds the table's stored events up to this position, and no
    /// other.
    pub covered: u64,
    /// Its events with a `timestamp` before this (micros; 0: none) are
    /// not read: retention deleted them from the table.
    pub hidden_before: i64,
}

impl Storage {
    /// The URL of a table's entity copy.
    pub fn entities_url(&self, tenant: &TenantId, table: &TableName) -> Url {
        self.root
            .join(&format!("{META_DIR}/entities/{tenant}/{table}/"))
            .expect("validated names form a valid URL path")
    }

    /// Opens a table's entity copy (an empty handle when there is none).
    pub async fn open_entities(&self, tenant: &TenantId, table: &TableName) -> Result<DeltaTable> {
        self.open_url(
            self.entities_url(tenant, table),
            &format!("{tenant}.{table} (entity copy)"),
        )
        .await
    }

    /// The highest position `copy` covers and its retention cutoff
    /// (micros; 0 when none): both 0 for a copy never written.
    pub async fn entities_marks(&self, copy: &DeltaTable, name: &str) -> Result<(u64, i64)> {
        let covered = self.app_version(copy, name, COVERED_APP_ID).await?;
        let hidden = self.app_version(copy, name, HIDDEN_APP_ID).await?;
        Ok((covered, hidden.min(i64::MAX as u64) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_in_range() {
        // The layout on disk depends on these values never changing.
        assert_eq!(bucket_of("u4242"), bucket_of("u4242"));
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let b = bucket_of(&format!("u{i}"));
            assert!((0..BUCKETS as i32).contains(&b));
            seen.insert(b);
        }
        assert_eq!(seen.len(), BUCKETS as usize);
        assert_eq!(bucket_of(""), (xxhash_rust::xxh3::xxh3_64(b"") % 16) as i32);
    }
}
