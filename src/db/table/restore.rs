//! What a table learns from storage when the server starts: where its
//! appends stand (positions, each entity's version) and the event ids
//! recently stored, for deduplication.

use super::Table;
use crate::db::Result;
use crate::db::sequence::Sequencer;
use crate::schema;
use crate::storage::Storage;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use std::time::Duration;

impl Table {
    /// Learns where the table's appends stand from storage: the highest
    /// position written and each entity's version. Tables written before
    /// versions existed count an entity's events instead.
    pub(crate) async fn restore_sequencer(&self, storage: &Storage) -> Result<()> {
        let (delta, provider) = {
            let s = self.state.read();
            (s.delta.clone(), s.provider.clone())
        };
        // A writer counts positions in its own range only; entity versions
        // are learnt from every writer's events.
        let owned = self.owned_positions();
        let mut seq = Sequencer::new(owned.start + 1);
        let stored = storage.persisted_position(&delta, &self.label()).await?;
        seq.learn_position(stored);
        if stored > 0 {
            self.state.write().stored_position = Some(stored);
        }
        if let Some(provider) = provider {
            let stamped = provider
                .schema()
                .column_with_name(schema::VERSION)
                .is_some();
            let (version, position) = match stamped {
                true => (
                    format!("greatest(max({}), count(*))", schema::VERSION),
                    format!(
                        "max({p}) FILTER (WHERE {p} >= {lo} AND {p} < {hi})",
                        p = schema::POSITION,
                        lo = owned.start,
                        hi = owned.end,
                    ),
                ),
                false => ("count(*)".to_string(), "CAST(NULL AS BIGINT)".to_string()),
            };
            let ctx = SessionContext::new();
            ctx.register_table("t", provider)?;
            let df = ctx
                .sql(&format!(
                    "SELECT {e}, CAST({version} AS BIGINT), CAST({position} AS BIGINT) \
                     FROM t GROUP BY {e}",
                    e = schema::ENTITY_ID
                ))
                .await?;
            let mut stream = df.execute_stream().await?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let entities = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
                let entities = entities.as_string::<i32>();
                let versions = batch.column(1).as_primitive::<Int64Type>();
                let positions = batch.column(2).as_primitive::<Int64Type>();
                for i in 0..batch.num_rows() {
                    seq.learn(entities.value(i), versions.value(i).max(0) as u64);
                    if positions.is_valid(i) {
                        seq.learn_position(positions.value(i).max(0) as u64);
                    }
                }
            }
        }
        *self.sequencer.lock() = seq;
        Ok(())
    }

    /// Re-learns the ids stored within `window`: those in the buffer and
    /// those in Delta files (pruned by the files' `ingested_at` statistics).
    pub(crate) async fn restore_dedup(&self, window: Duration, capacity: usize) -> Result<()> {
        let since = chrono::Utc::now().timestamp_micros() - window.as_micros() as i64;
        let (buffer, provider) = {
            let s = self.state.read();
            (
                s.buffer.iter().map(|b| b.batch.clone()).collect::<Vec<_>>(),
                s.provider.clone(),
            )
        };
        for b in &buffer {
            self.remember_ids(b, since)?;
        }
        let Some(provider) = provider else {
            self.dedup.lock().sort_by_time();
            return Ok(());
        };
        let has_stamps = provider
            .schema()
            .column_with_name(schema::VERSION)
            .is_some();
        let ctx = SessionContext::new();
        ctx.register_table("t", provider)?;
        let df = ctx
            .sql(&format!(
                "SELECT {id}, {at}{stamps} FROM t WHERE {at} >= to_timestamp_micros({since}) \
                 ORDER BY {at} DESC LIMIT {cap}",
                id = schema::EVENT_ID,
                at = schema::INGESTED_AT,
                stamps = match has_stamps {
                    true => format!(", {}, {}", schema::POSITION, schema::VERSION),
                    false => String::new(),
                },
                cap = capacity
            ))
            .await?;
        let mut stream = df.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            self.remember_ids(&batch?, since)?;
        }
        self.dedup.lock().sort_by_time();
        Ok(())
    }

    /// Puts the `event_id`s of `batch` stored at or after `since` into the
    /// dedup index.
    fn remember_ids(&self, batch: &RecordBatch, since: i64) -> Result<()> {
        let (Some(ids), Some(at)) = (
            batch.column_by_name(schema::EVENT_ID),
            batch.column_by_name(schema::INGESTED_AT),
        ) else {
            return Ok(());
        };
        let at = at.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let ids = arrow::compute::cast(ids, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let stamps = match (
            batch.column_by_name(schema::POSITION),
            batch.column_by_name(schema::VERSION),
        ) {
            (Some(p), Some(v)) => Some((
                arrow::compute::cast(p, &DataType::Int64)?,
                arrow::compute::cast(v, &DataType::Int64)?,
            )),
            _ => None,
        };
        let stamp = |i: usize| {
            let (p, v) = stamps.as_ref()?;
            let (p, v) = (p.as_primitive::<Int64Type>(), v.as_primitive::<Int64Type>());
            (p.is_valid(i) && v.is_valid(i)).then(|| (p.value(i) as u64, v.value(i) as u64))
        };
        let mut dedup = self.dedup.lock();
        for i in 0..batch.num_rows() {
            if at.value(i) >= since {
                dedup.remember(ids.value(i), at.value(i), stamp(i));
            }
        }
        Ok(())
    }
}
