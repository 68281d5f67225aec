//! Which entities a recently flushed data file may hold.
//!
//! A flushed file keeps its rows in arrival order, so its `entity_id`
//! bounds span nearly every entity and prune nothing: a read of one
//! entity's events opened every file flushed since the entity copy last
//! caught up (one per date per flush). The flusher therefore builds, for
//! each file it writes, a split-block Bloom filter of the file's
//! `entity_id` values (Parquet's own [`Sbbf`]) and keeps it in memory, and
//! the scan's file pruning (`scan::DeltaFiles`) skips the files whose
//! filter rules the entity out. The filters are never written: after a
//! restart, and for files written any other way (a schema change's
//! commit, compaction, other writers), files are read as before.

use crate::schema::{ENTITY_ID, POSITION};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use parquet::bloom_filter::Sbbf;
use std::collections::HashMap;
use std::sync::Arc;

/// The chance that a file without the entity is read anyway.
const FALSE_POSITIVES: f64 = 0.01;

/// The entity ids one data file may hold, and the highest position in it.
#[derive(Debug, Clone)]
pub struct EntityFilter {
    bloom: Sbbf,
    highest_position: u64,
}

impl EntityFilter {
    /// The filter of a file holding `batches`' rows; `None` when they have
    /// no text `entity_id` column.
    pub fn of(batches: &[RecordBatch]) -> Option<Self> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut bloom = Sbbf::new_with_ndv_fpp(rows.max(1) as u64, FALSE_POSITIVES).ok()?;
        let mut highest_position = 0;
        for batch in batches {
            let column = batch.column_by_name(ENTITY_ID)?;
            if column.data_type() != &DataType::Utf8 {
                return None;
            }
            for entity in column.as_string::<i32>().iter().flatten() {
                bloom.insert(entity);
            }
            if let Some(positions) = batch.column_by_name(POSITION)
                && let Some(positions) = positions.as_primitive_opt::<Int64Type>()
                && let Some(max) = arrow::compute::max(positions)
            {
                highest_position = highest_position.max(max.max(0) as u64);
            }
        }
        // Sized for distinct ids in every row; entities repeat, so fold it
        // down to what the ids it holds need.
        bloom.fold_to_target_fpp(FALSE_POSITIVES);
        Some(EntityFilter {
            bloom,
            highest_position,
        })
    }

    /// False when the file holds no event of `entity`.
    pub fn may_hold(&self, entity: &str) -> bool {
        self.bloom.check(entity)
    }

    /// The memory the filter takes.
    pub fn bytes(&self) -> usize {
        self.bloom.num_blocks() * 32
    }
}

/// The filters of a table's recently flushed files, by the path the Delta
/// log gives each file.
#[derive(Debug, Clone, Default)]
pub struct EntityFilters(Arc<HashMap<String, Arc<EntityFilter>>>);

impl EntityFilters {
    /// At most this much memory of filters per table: the newest files
    /// keep theirs, older ones are read without one.
    pub const BUDGET_BYTES: usize = 32 << 20;

    /// These filters with `added` (new files'), less those of files whose
    /// events all lie at or below `covered` (an entity copy reads them)
    /// and, beyond [`Self::BUDGET_BYTES`], the oldest.
    pub fn with(&self, added: Vec<(String, EntityFilter)>, covered: u64) -> Self {
        if added.is_empty() && self.0.values().all(|f| f.highest_position > covered) {
            return self.clone();
        }
        let mut all: Vec<(String, Arc<EntityFilter>)> = self
            .0
            .iter()
            .filter(|(_, f)| f.highest_position > covered)
            .map(|(path, f)| (path.clone(), f.clone()))
            .chain(added.into_iter().map(|(path, f)| (path, Arc::new(f))))
            .collect();
        all.sort_by_key(|(_, f)| std::cmp::Reverse(f.highest_position));
        let mut used = 0;
        all.retain(|(_, f)| {
            used += f.bytes();
            used <= Self::BUDGET_BYTES
        });
        all.into_iter().collect()
    }

    /// The filter of the file at `path`, if it has one.
    pub fn get(&self, path: &str) -> Option<&Arc<EntityFilter>> {
        self.0.get(path)
    }

    /// Each file's path and filter.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<EntityFilter>)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Arc<EntityFilter>)> for EntityFilters {
    fn from_iter<I: IntoIterator<Item = (String, Arc<EntityFilter>)>>(filters: I) -> Self {
        EntityFilters(Arc::new(filters.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn batch(entities: &[&str], first_position: i64) -> RecordBatch {
        let positions: Int64Array = (0..entities.len() as i64)
            .map(|i| first_position + i)
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new(ENTITY_ID, DataType::Utf8, false),
                Field::new(POSITION, DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(entities.to_vec())),
                Arc::new(positions),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_filter_holds_every_entity_of_its_file_and_rules_out_most_others() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let filter =
            EntityFilter::of(&[batch(&refs[..10_000], 1), batch(&refs[10_000..], 10_001)]).unwrap();
        assert!(ids.iter().all(|id| filter.may_hold(id)));
        assert_eq!(filter.highest_position, 20_000);
        let strangers = (0..10_000)
            .filter(|i| filter.may_hold(&format!("v{i}")))
            .count();
        assert!(strangers < 300, "{strangers} of 10,000 others pass");
        // Folded to what 20,000 ids need, not sized for every row.
        assert!(filter.bytes() <= 64 << 10, "{} bytes", filter.bytes());
    }

    #[test]
    fn filters_of_covered_files_are_dropped_and_the_newest_kept() {
        let one = EntityFilter::of(&[batch(&["a", "b"], 1)]).unwrap();
        let two = EntityFilter::of(&[batch(&["c"], 3)]).unwrap();
        let filters = EntityFilters::default().with(
            vec![
                ("d=1/one.parquet".into(), one),
                ("d=1/two.parquet".into(), two),
            ],
            0,
        );
        assert_eq!(filters.iter().count(), 2);
        assert!(filters.get("d=1/one.parquet").unwrap().may_hold("a"));
        // An entity copy now covers positions up to 2: the first file's
        // events are all read from it.
        let later = filters.with(Vec::new(), 2);
        assert!(later.get("d=1/one.parquet").is_none());
        assert!(later.get("d=1/two.parquet").is_some());
        // Text ids only.
        let numbers = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                ENTITY_ID,
                DataType::Int64,
                false,
            )])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        assert!(EntityFilter::of(&[numbers]).is_none());
    }
}
