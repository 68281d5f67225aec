//! The `partition` operator: routes each event, by the value of a key
//! expression, to one of N workers that run the operators after it in
//! parallel, each over its events in position order and with a state of
//! its own. Events with equal keys always meet the same worker, so each
//! key's order is kept; the workers' outputs are merged back in source
//! position order.
//!
//! The worker of a key is fixed by a hash of its Arrow row bytes
//! (blake3), not by a per-process seed, so that a restart routes every
//! key to the worker whose stored state holds it.

use super::keys::Keys;
use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionContext;
use indexmap::IndexMap;
use std::sync::Arc;

/// Most workers one partition operator may have.
pub const MAX_WORKERS: u32 = 16;

/// Rows per batch of the merged output.
const MERGED_ROWS: usize = 8192;

/// A partition operator, planned.
#[derive(Debug)]
pub struct PartitionStage {
    key: Keys,
    pub workers: usize,
}

impl PartitionStage {
    /// Plans the key over the registered input in `ctx`.
    pub async fn plan(
        ctx: &SessionContext,
        key: &str,
        workers: u32,
    ) -> std::result::Result<PartitionStage, String> {
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(format!("workers: {workers}; give 1 to {MAX_WORKERS}"));
        }
        if key.trim().is_empty() {
            return Err("key: the expression is empty".into());
        }
        let key = Keys::plan(ctx, &IndexMap::from([("key".to_string(), key.to_string())])).await?;
        Ok(PartitionStage {
            key,
            workers: workers as usize,
        })
    }

    /// `batches` (in `input`) split by worker, each keeping its rows'
    /// order.
    pub async fn route(
        &self,
        batches: Vec<RecordBatch>,
        input: &SchemaRef,
        task: Arc<TaskContext>,
    ) -> Result<Vec<Vec<RecordBatch>>> {
        let mut routed: Vec<Vec<RecordBatch>> = vec![Vec::new(); self.workers];
        let converter = self.key.converter()?;
        for batch in batches {
            let Some(rows) = self
                .key
                .rows(&converter, &batch, input, task.clone())
                .await?
            else {
                return Err(DataFusionError::Internal("a partition has no key".into()));
            };
            let mut picks: Vec<Vec<u32>> = vec![Vec::new(); self.workers];
            for (i, row) in rows.iter().enumerate() {
                picks[worker_of(row.as_ref(), self.workers)].push(i as u32);
            }
            for (worker, picked) in picks.into_iter().enumerate() {
                if picked.is_empty() {
                    continue;
                }
                let indices = UInt32Array::from(picked);
                routed[worker].push(arrow::compute::take_record_batch(&batch, &indices)?);
            }
        }
        Ok(routed)
    }
}

/// The worker, of `workers`, for a key's row bytes.
fn worker_of(key: &[u8], workers: usize) -> usize {
    let hash = blake3::hash(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % workers as u64) as usize
}

/// The workers' outputs as one run in source position order; rows of
/// equal position keep the order of their worker's output.
pub fn merge(outputs: Vec<Vec<RecordBatch>>) -> Result<Vec<RecordBatch>> {
    let batches: Vec<RecordBatch> = outputs.into_iter().flatten().collect();
    if batches.len() <= 1 {
        return Ok(batches);
    }
    let mut order: Vec<(i64, usize, usize)> = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let positions = super::column_as(batch, crate::schema::POSITION, &DataType::Int64)?;
        let positions = positions.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let p = if positions.is_valid(row) {
                positions.value(row)
            } else {
                i64::MAX
            };
            order.push((p, b, row));
        }
    }
    // Stable: equal positions keep the order they were made in.
    order.sort_by_key(|(p, _, _)| *p);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    order
        .chunks(MERGED_ROWS)
        .map(|chunk| {
            let indices: Vec<(usize, usize)> = chunk.iter().map(|(_, b, r)| (*b, *r)).collect();
            Ok(interleave_record_batch(&refs, &indices)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn batch(positions: &[i64], tags: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("position", DataType::Int64, false),
            Field::new("tag", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(positions.to_vec())),
                Arc::new(StringArray::from(tags.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn outputs_merge_in_position_order_and_ties_keep_their_order() {
        let merged = merge(vec![
            vec![batch(&[1, 4, 4], &["a", "b", "c"])],
            vec![batch(&[2, 3], &["d", "e"]), batch(&[4, 9], &["f", "g"])],
        ])
        .unwrap();
        assert_eq!(merged.len(), 1);
        let tags: Vec<&str> = merged[0]
            .column(1)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(tags, ["a", "d", "e", "b", "c", "f", "g"]);
    }

    #[test]
    fn a_key_always_meets_the_same_worker_and_keys_spread() {
        let mut seen = [0usize; 4];
        for k in 0..400u32 {
            let key = k.to_le_bytes();
            let w = worker_of(&key, 4);
            assert_eq!(w, worker_of(&key, 4));
            seen[w] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
