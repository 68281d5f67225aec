//! Positions and versions: the order in which a table's events are
//! appended.
//!
//! Each table has one [`Sequencer`]. The write path stamps a built batch
//! with its positions and its events' versions, checks the events'
//! expected versions, encodes it and queues it for the WAL, all while
//! holding the sequencer, so the WAL holds each table's batches in
//! position order and each entity's versions without gaps. A batch that
//! fails before it is queued changes nothing: the sequencer is only
//! advanced once the WAL has taken the record.
//!
//! The stamps are columns of the batch, so they are in the WAL record,
//! the buffer and the Parquet files alike. At start-up the sequencer is
//! rebuilt from what storage holds and then from the replayed records.

use crate::ingest::ExpectedVersion;
use crate::schema;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::Arc;

/// An append refused because an entity's stream was not as expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "entity {entity:?} is at version {current}, but the event at index {index} expected {expected}; nothing of the request was stored"
)]
pub struct Conflict {
    pub entity: String,
    pub expected: ExpectedVersion,
    pub current: u64,
    /// The event's index among the request's newly stored events.
    pub index: usize,
}

/// The positions and versions given to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamps {
    /// Position of the batch's first row; row `i` has `first_position + i`.
    pub first_position: u64,
    /// Per row, its version in its entity's stream.
    pub versions: Vec<u64>,
}

impl Stamps {
    /// Row `i`'s (position, version).
    pub fn of(&self, row: usize) -> (u64, u64) {
        (self.first_position + row as u64, self.versions[row])
    }
}

/// The hasher of every entity index, and of the keys the write path
/// computes before it takes a sequencer, so that a lookup under the lock
/// does not hash. Seeded once per process.
static HASHER: std::sync::LazyLock<foldhash::fast::RandomState> =
    std::sync::LazyLock::new(foldhash::fast::RandomState::default);

fn hash(entity: &str) -> u64 {
    HASHER.hash_one(entity)
}

/// A batch's entities grouped and hashed, work done before the
/// sequencer is taken.
#[derive(Debug)]
pub(crate) struct Keys {
    /// Per distinct entity: its hash and the first row that names it.
    distinct: Vec<(u64, u32)>,
    /// Per row, the index of its entity in `distinct`.
    rows: Vec<u32>,
}

impl Keys {
    pub(crate) fn of(entities: &StringArray) -> Keys {
        let mut seen: HashTable<u32> = HashTable::with_capacity(entities.len().min(4096));
        let mut distinct: Vec<(u64, u32)> = Vec::new();
        let mut rows = Vec::with_capacity(entities.len());
        for row in 0..entities.len() {
            let entity = entity_at(entities, row);
            let h = hash(entity);
            let found = seen.find(h, |k| {
                entity_at(entities, distinct[*k as usize].1 as usize) == entity
            });
            let k = match found {
                Some(k) => *k,
                None => {
                    let k = distinct.len() as u32;
                    distinct.push((h, row as u32));
                    seen.insert_unique(h, k, |k| distinct[*k as usize].0);
                    k
                }
            };
            rows.push(k);
        }
        Keys { distinct, rows }
    }
}

fn entity_at(entities: &StringArray, row: usize) -> &str {
    match entities.is_valid(row) {
        true => entities.value(row),
        false => "",
    }
}

/// A batch's stamps, and each of its entities' version after it.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) stamps: Stamps,
    /// Per distinct entity (in [`Keys`] order), its last version.
    heads: Vec<u64>,
}

/// Where one table's appends stand.
#[derive(Debug)]
pub(crate) struct Sequencer {
    /// The position the next event gets.
    next_position: u64,
    /// Per entity, its current version: the number of its events.
    versions: HashTable<(Box<str>, u64)>,
    /// Bytes the entity names hold, for the memory gauge.
    key_bytes: usize,
}

impl Sequencer {
    /// A sequencer whose next position is `next_position`.
    pub(crate) fn new(next_position: u64) -> Self {
        Sequencer {
            next_position: next_position.max(1),
            versions: HashTable::new(),
            key_bytes: 0,
        }
    }

    fn lookup(&self, h: u64, entity: &str) -> u64 {
        self.versions
            .find(h, |(k, _)| &**k == entity)
            .map_or(0, |(_, v)| *v)
    }

    /// The entity's current version (0: no events).
    #[cfg(test)]
    pub(crate) fn current(&self, entity: &str) -> u64 {
        self.lookup(hash(entity), entity)
    }

    /// About how much memory the entity index takes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.key_bytes + self.versions.capacity() * (size_of::<(Box<str>, u64)>() + 1)
    }

    /// The stamps the rows of a batch with these entities (grouped in
    /// `keys`) would get, or the first expectation that fails. Changes
    /// nothing. `expected` is empty (no requirements) or has one entry
    /// per row.
    pub(crate) fn plan(
        &self,
        entities: &StringArray,
        keys: &Keys,
        expected: &[ExpectedVersion],
    ) -> Result<Plan, Conflict> {
        let mut heads: Vec<u64> = keys
            .distinct
            .iter()
            .map(|(h, row)| self.lookup(*h, entity_at(entities, *row as usize)))
            .collect();
        let mut versions = Vec::with_capacity(keys.rows.len());
        for (i, k) in keys.rows.iter().enumerate() {
            let current = heads[*k as usize];
            let want = expected.get(i).copied().unwrap_or_default();
            if !want.admits(current) {
                return Err(Conflict {
                    entity: entity_at(entities, i).to_string(),
                    expected: want,
                    current,
                    index: i,
                });
            }
            heads[*k as usize] = current + 1;
            versions.push(current + 1);
        }
        Ok(Plan {
            stamps: Stamps {
                first_position: self.next_position,
                versions,
            },
            heads,
        })
    }

    /// Makes a planned batch's stamps the current state.
    pub(crate) fn commit(&mut self, entities: &StringArray, keys: &Keys, plan: &Plan) {
        self.next_position = plan.stamps.first_position + plan.stamps.versions.len() as u64;
        for ((h, row), version) in keys.distinct.iter().zip(&plan.heads) {
            self.raise_hashed(*h, entity_at(entities, *row as usize), *version);
        }
    }

    fn raise(&mut self, entity: &str, version: u64) {
        self.raise_hashed(hash(entity), entity, version);
    }

    fn raise_hashed(&mut self, h: u64, entity: &str, version: u64) {
        match self.versions.find_mut(h, |(k, _)| &**k == entity) {
            Some((_, v)) => *v = (*v).max(version),
            None => {
                self.key_bytes += entity.len();
                self.versions
                    .insert_unique(h, (entity.into(), version), |(k, _)| hash(k));
            }
        }
    }

    /// Learns from a batch already stamped (replayed from the WAL, or
    /// read back from storage): positions and versions move past it.
    pub(crate) fn observe(&mut self, batch: &RecordBatch) {
        let Some((positions, versions)) = stamp_columns(batch) else {
            return;
        };
        let entities = batch.column(ENTITY_INDEX).as_string::<i32>();
        for i in 0..batch.num_rows() {
            if positions.is_valid(i) {
                let p = positions.value(i).max(0) as u64;
                self.next_position = self.next_position.max(p + 1);
            }
            if versions.is_valid(i) {
                self.raise(entities.value(i), versions.value(i).max(0) as u64);
            }
        }
    }

    /// Learns an entity's version and a position from storage.
    pub(crate) fn learn(&mut self, entity: &str, version: u64) {
        self.raise(entity, version);
    }

    /// Moves the next position past `position`.
    pub(crate) fn learn_position(&mut self, position: u64) {
        self.next_position = self.next_position.max(position + 1);
    }
}

const ENTITY_INDEX: usize = 2;

/// The batch's position and version columns, when it has them.
fn stamp_columns(
    batch: &RecordBatch,
) -> Option<(
    &arrow::array::PrimitiveArray<Int64Type>,
    &arrow::array::PrimitiveArray<Int64Type>,
)> {
    let p = batch.column_by_name(schema::POSITION)?.as_primitive_opt()?;
    let v = batch.column_by_name(schema::VERSION)?.as_primitive_opt()?;
    Some((p, v))
}

/// The batch's entity column (the write path's batches always have it).
pub(crate) fn entities(batch: &RecordBatch) -> &StringArray {
    batch.column(ENTITY_INDEX).as_string::<i32>()
}

/// The batch with its placeholder position and version columns replaced
/// by `stamps`.
pub(crate) fn stamp(batch: &RecordBatch, stamps: &Stamps) -> RecordBatch {
    let rows = batch.num_rows() as u64;
    let positions: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (stamps.first_position..stamps.first_position + rows).map(|p| p as i64),
    ));
    let versions: ArrayRef = Arc::new(Int64Array::from_iter_values(
        stamps.versions.iter().map(|v| *v as i64),
    ));
    let mut columns = batch.columns().to_vec();
    columns[schema::POSITION_INDEX] = positions;
    columns[schema::VERSION_INDEX] = versions;
    RecordBatch::try_new(batch.schema(), columns)
        .expect("same schema, same lengths, same types as the placeholders")
}

/// The last row's position, if the batch has stamps.
pub(crate) fn last_position(batch: &RecordBatch) -> Option<u64> {
    let (positions, _) = stamp_columns(batch)?;
    let n = positions.len();
    (n > 0 && positions.is_valid(n - 1)).then(|| positions.value(n - 1).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> StringArray {
        StringArray::from_iter_values(list)
    }

    #[test]
    fn versions_count_per_entity_and_positions_run_on() {
        let mut s = Sequencer::new(1);
        let a = names(&["a", "b", "a"]);
        let plan = s.plan(&a, &Keys::of(&a), &[]).unwrap();
        assert_eq!(plan.stamps.first_position, 1);
        assert_eq!(plan.stamps.versions, vec![1, 1, 2]);
        s.commit(&a, &Keys::of(&a), &plan);
        assert_eq!((s.current("a"), s.current("b"), s.current("c")), (2, 1, 0));
        let b = names(&["a"]);
        let plan = s
            .plan(&b, &Keys::of(&b), &[ExpectedVersion::Exactly(2)])
            .unwrap();
        assert_eq!(plan.stamps.of(0), (4, 3));
    }

    #[test]
    fn a_failed_expectation_changes_nothing() {
        let mut s = Sequencer::new(10);
        let a = names(&["a"]);
        let plan = s.plan(&a, &Keys::of(&a), &[]).unwrap();
        s.commit(&a, &Keys::of(&a), &plan);
        let batch = names(&["a", "b"]);
        let err = s
            .plan(
                &batch,
                &Keys::of(&batch),
                &[ExpectedVersion::Any, ExpectedVersion::Exactly(3)],
            )
            .unwrap_err();
        assert_eq!(err.entity, "b");
        assert_eq!(err.current, 0);
        assert_eq!(err.index, 1);
        let err = s
            .plan(&a, &Keys::of(&a), &[ExpectedVersion::NoStream])
            .unwrap_err();
        assert_eq!(err.current, 1);
        // Nothing moved: the next plan starts where the last commit ended.
        let next = s.plan(&a, &Keys::of(&a), &[]).unwrap();
        assert_eq!(next.stamps.of(0), (11, 2));
    }

    #[test]
    fn expectations_apply_to_the_version_just_before_each_event() {
        let s = Sequencer::new(1);
        let a = names(&["a", "a"]);
        let ok = [ExpectedVersion::NoStream, ExpectedVersion::Exactly(1)];
        let keys = Keys::of(&a);
        assert_eq!(s.plan(&a, &keys, &ok).unwrap().stamps.versions, vec![1, 2]);
        let stale = [ExpectedVersion::NoStream, ExpectedVersion::NoStream];
        assert_eq!(s.plan(&a, &keys, &stale).unwrap_err().index, 1);
    }
}
