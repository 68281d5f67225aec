//! How a pipeline's task gets its micro-batches, by its backpressure
//! mode:
//!
//! - `block`: straight from its subscription. When the operators or the
//!   sink are slow the subscription falls behind and later reads what it
//!   missed from storage; ingest never waits for a pipeline.
//! - `buffer`: a reader task reads ahead into a queue while the operators
//!   run, holding at most `max_events` events; when the queue is full the
//!   reader waits, and the subscription falls behind as under `block`.
//! - `drop`: as `block`, but before each read, when more than `max_lag`
//!   positions are past the pipeline's position, the oldest are skipped
//!   unread. The events skipped are counted exactly (by a count over the
//!   skipped positions) and the skip is stored with the progress before
//!   the pipeline reads on, so that a restart neither reads them nor
//!   counts them twice.

use super::subscribe::{Subscription, last_position};
use super::{Error, Result, Service};
use crate::auth::Principal;
use crate::ids::TableName;
use crate::pipeline::{Backpressure, MAX_SKIPPED_RANGES, Pipeline, rows_of};
use arrow::array::RecordBatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::AbortOnDropHandle;

/// How long one read waits for new events before the task looks around.
const WAIT: Duration = Duration::from_secs(5);

/// Most events a pipeline that is behind gathers from several reads into
/// one micro-batch: each micro-batch costs a synced sink write and a
/// synced progress write, so a backlog goes faster in large ones.
const GATHER_EVENTS: u64 = 32_768;

/// The next events of `subscription`, waiting up to [`WAIT`] for the
/// first and then taking what is already there, up to [`GATHER_EVENTS`].
async fn gather(subscription: &mut Subscription) -> Result<Option<Vec<RecordBatch>>> {
    let Some(mut batches) = subscription.next(WAIT).await? else {
        return Ok(None);
    };
    let mut rows = rows_of(&batches);
    while rows < GATHER_EVENTS && subscription.lag() > 0 {
        match subscription.next(Duration::ZERO).await? {
            Some(more) => {
                rows += rows_of(&more);
                batches.extend(more);
            }
            None => break,
        }
    }
    Ok(Some(batches))
}

/// Source events up to position `upto`, to be run as one micro-batch.
#[derive(Debug)]
pub(super) struct MicroBatch {
    pub(super) batches: Vec<RecordBatch>,
    pub(super) upto: u64,
    _held: Option<Held>,
}

/// A buffered micro-batch's room in its pipeline's buffer, given back
/// when it has been run.
#[derive(Debug)]
struct Held {
    pipeline: Arc<Pipeline>,
    rows: u64,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pipeline.add_buffered(-(self.rows as i64));
    }
}

/// A pipeline's source of micro-batches.
#[derive(Debug)]
pub(super) enum Feed {
    Direct {
        subscription: Box<Subscription>,
        /// `drop`'s limit.
        max_lag: Option<u64>,
    },
    Buffered {
        queue: mpsc::Receiver<Result<MicroBatch>>,
        _reader: AbortOnDropHandle<()>,
    },
}

impl Feed {
    /// A feed from `subscription` by `pipeline`'s backpressure mode.
    pub(super) fn open(pipeline: &Arc<Pipeline>, subscription: Subscription) -> Feed {
        match pipeline.spec.backpressure {
            Backpressure::Block => Feed::Direct {
                subscription: Box::new(subscription),
                max_lag: None,
            },
            Backpressure::Drop { max_lag } => Feed::Direct {
                subscription: Box::new(subscription),
                max_lag: Some(max_lag),
            },
            Backpressure::Buffer { max_events } => {
                let (tx, queue) = mpsc::channel(64);
                let reader = tokio::spawn(read_ahead(
                    pipeline.clone(),
                    subscription,
                    max_events.max(1),
                    tx,
                ));
                Feed::Buffered {
                    queue,
                    _reader: AbortOnDropHandle::new(reader),
                }
            }
        }
    }

    /// The next micro-batch, `None` when none came for a while.
    pub(super) async fn next(
        &mut self,
        service: &Service,
        pipeline: &Pipeline,
        caller: &Principal,
        source: &TableName,
    ) -> Result<Option<MicroBatch>> {
        match self {
            Feed::Direct {
                subscription,
                max_lag,
            } => {
                if let Some(max_lag) = *max_lag {
                    let lag = subscription.lag();
                    if lag > max_lag {
                        let from = subscription.position();
                        let to = from + (lag - max_lag);
                        service.skip(pipeline, caller, source, from, to).await?;
                        subscription.skip_to(to);
                    }
                }
                let got = gather(subscription).await?;
                Ok(got.map(|batches| MicroBatch {
                    batches,
                    upto: subscription.position(),
                    _held: None,
                }))
            }
            Feed::Buffered { queue, .. } => match queue.recv().await {
                Some(item) => item.map(Some),
                None => Err(Error::internal("a pipeline's reader stopped")),
            },
        }
    }
}

/// Reads `subscription` ahead into `tx`, holding at most `max_events`
/// events in the queue (a read larger than that is sent in parts); ends
/// at the first error, which it sends on.
async fn read_ahead(
    pipeline: Arc<Pipeline>,
    mut subscription: Subscription,
    max_events: u64,
    tx: mpsc::Sender<Result<MicroBatch>>,
) {
    let room = Arc::new(Semaphore::new(
        usize::try_from(max_events).unwrap_or(Semaphore::MAX_PERMITS),
    ));
    loop {
        let batches = match gather(&mut subscription).await {
            Ok(Some(batches)) => batches,
            Ok(None) => continue,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let upto = subscription.position();
        let mut chunks = split(batches, max_events).into_iter().peekable();
        while let Some(chunk) = chunks.next() {
            let rows = rows_of(&chunk);
            // Every event up to a chunk's last one is in it or before it.
            let upto = match chunks.peek() {
                None => upto,
                Some(_) => chunk.iter().filter_map(last_position).max().unwrap_or(upto),
            };
            let wanted = u32::try_from(rows).unwrap_or(u32::MAX);
            let Ok(permit) = room.clone().acquire_many_owned(wanted).await else {
                return;
            };
            pipeline.add_buffered(rows as i64);
            let held = Held {
                pipeline: pipeline.clone(),
                rows,
                _permit: permit,
            };
            let micro = MicroBatch {
                batches: chunk,
                upto,
                _held: Some(held),
            };
            if tx.send(Ok(micro)).await.is_err() {
                return;
            }
        }
    }
}

/// `batches` cut into runs of at most `most` rows, in order.
fn split(batches: Vec<RecordBatch>, most: u64) -> Vec<Vec<RecordBatch>> {
    let most = usize::try_from(most).unwrap_or(usize::MAX).max(1);
    let mut chunks = vec![Vec::new()];
    let mut room = most;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if room == 0 {
                chunks.push(Vec::new());
                room = most;
            }
            let take = room.min(batch.num_rows() - offset);
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(batch.slice(offset, take));
            }
            offset += take;
            room -= take;
        }
    }
    chunks
}

impl Service {
    /// Skips `pipeline`'s source positions after `from` up to `to`,
    /// storing the skip and how many events it passed over.
    async fn skip(
        &self,
        pipeline: &Pipeline,
        caller: &Principal,
        source: &TableName,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let sql = format!(
            "SELECT count(*) FROM \"{}\" WHERE {p} > {from} AND {p} <= {to}",
            source.as_str(),
            p = crate::schema::POSITION,
        );
        let skipped = self.first_value(caller, &sql).await?.unwrap_or(0).max(0) as u64;
        pipeline
            .update(|p| {
                p.position = Some(to);
                p.skipped += skipped;
                p.skipped_ranges.push([from + 1, to]);
                let extra = p.skipped_ranges.len().saturating_sub(MAX_SKIPPED_RANGES);
                p.skipped_ranges.drain(..extra);
            })
            .map_err(|e| {
                Error::new(
                    super::Kind::Unavailable,
                    format!("storing its progress: {e}"),
                )
            })?;
        tracing::debug!(pipeline = %pipeline.name, from, to, skipped, "pipeline skipped events");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::UInt64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(from: u64, n: u64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("p", DataType::UInt64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(UInt64Array::from_iter_values(from..from + n))],
        )
        .unwrap()
    }

    #[test]
    fn reads_are_cut_into_parts_no_larger_than_the_buffer_in_order() {
        let parts = split(vec![batch(0, 5), batch(5, 7)], 4);
        let sizes: Vec<Vec<usize>> = parts
            .iter()
            .map(|c| c.iter().map(RecordBatch::num_rows).collect())
            .collect();
        assert_eq!(sizes, vec![vec![4], vec![1, 3], vec![4]]);
        let values: Vec<u64> = parts
            .iter()
            .flatten()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(values, (0..12).collect::<Vec<_>>());
        assert_eq!(split(vec![batch(0, 3)], 10).len(), 1);
    }
}
