//! Running a planned chain over one micro-batch: each operator in turn,
//! and after a partition operator, the rest in one task per worker, in
//! parallel, each with the state of its own events.

use super::compile::{Chain, Shared, Work, with_input};
use super::limit::LimitState;
use super::partition::merge;
use super::window::WindowState;
use super::{StoredState, rows_of};
use arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// One stateful operator's state between micro-batches.
#[derive(Debug)]
pub(super) enum OpState {
    Window(WindowState),
    Limit(LimitState),
}

/// The state of a chain's stateful operators between micro-batches, by
/// operator index (`None` for the others): those before a partition in
/// `ops`, and each worker's of those after it in `workers`.
#[derive(Debug, Default)]
pub struct ChainState {
    ops: Vec<Option<OpState>>,
    workers: Vec<Vec<Option<OpState>>>,
}

/// What one operator did with one micro-batch (summed over the workers
/// after a partition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageRun {
    pub rows_in: u64,
    pub rows_out: u64,
    /// Events left out: late ones, or those over a limit.
    pub dropped: u64,
    pub nanos: u64,
}

impl StageRun {
    fn add(&mut self, other: &StageRun) {
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.dropped += other.dropped;
        self.nanos += other.nanos;
    }
}

impl Shared {
    /// The states of the stateful operators among `range`, as `stored`
    /// (by operator index) describes them, or empty.
    fn states(
        &self,
        range: Range<usize>,
        stored: &[Option<StoredState>],
    ) -> Result<Vec<Option<OpState>>> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                if !range.contains(&i) {
                    return Ok(None);
                }
                let stored = stored.get(i).and_then(Option::as_ref);
                Ok(match (&stage.work, stored) {
                    (Work::Window(w), Some(s)) => Some(OpState::Window(w.restore(s)?)),
                    (Work::Window(_), None) => Some(OpState::Window(WindowState::default())),
                    (Work::Limit(l), Some(s)) => Some(OpState::Limit(l.restore(s)?)),
                    (Work::Limit(_), None) => Some(OpState::Limit(LimitState::default())),
                    _ => None,
                })
            })
            .collect()
    }

    /// `ops` as the progress stores them.
    fn store(&self, ops: &mut [Option<OpState>]) -> Result<Vec<Option<StoredState>>> {
        self.stages
            .iter()
            .zip(ops.iter_mut())
            .map(|(stage, s)| match (&stage.work, s) {
                (Work::Window(w), Some(OpState::Window(s))) => w.store(s).map(Some),
                (Work::Limit(l), Some(OpState::Limit(s))) => l.store(s).map(Some),
                _ => Ok(None),
            })
            .collect()
    }

    /// Runs the operators of `range` over `batches`, in order, with their
    /// states in `ops` (by operator index).
    async fn run_stages(
        &self,
        range: Range<usize>,
        mut batches: Vec<RecordBatch>,
        ops: &mut [Option<OpState>],
    ) -> Result<(Vec<RecordBatch>, Vec<StageRun>)> {
        let mut runs = Vec::with_capacity(range.len());
        for i in range {
            let stage = &self.stages[i];
            let started = Instant::now();
            let rows_in = rows_of(&batches);
            let mut dropped = 0;
            let out = match (&stage.work, rows_in) {
                (_, 0) => Vec::new(),
                (Work::Plan(plan), _) => {
                    let plan = with_input(plan, batches, &stage.input)?;
                    datafusion::physical_plan::collect(plan, self.task.clone()).await?
                }
                (Work::Window(w), _) => {
                    let Some(Some(OpState::Window(window))) = ops.get_mut(i) else {
                        return Err(DataFusionError::Internal(
                            "a window operator has no state".into(),
                        ));
                    };
                    let (out, late) = w
                        .run(batches, window, self.task.clone(), &stage.input)
                        .await?;
                    dropped = late;
                    out
                }
                (Work::Enrich(e), _) => {
                    e.run(&self.ctx.0, &self.inputs, batches, &stage.input)
                        .await?
                }
                (Work::Limit(l), _) => {
                    let Some(Some(OpState::Limit(limit))) = ops.get_mut(i) else {
                        return Err(DataFusionError::Internal(
                            "a deduplicate or throttle operator has no state".into(),
                        ));
                    };
                    let (out, left) = l
                        .run(batches, limit, self.task.clone(), &stage.input)
                        .await?;
                    dropped = left.limited + left.late;
                    out
                }
                (Work::Partition(_), _) => {
                    return Err(DataFusionError::Internal(
                        "a partition runs only as the chain's split".into(),
                    ));
                }
            };
            let out: Vec<RecordBatch> = out.into_iter().filter(|b| b.num_rows() > 0).collect();
            runs.push(StageRun {
                rows_in,
                rows_out: rows_of(&out),
                dropped,
                nanos: started.elapsed().as_nanos() as u64,
            });
            batches = out;
        }
        Ok((batches, runs))
    }
}

impl Chain {
    /// A state for the chain's stateful operators: empty, or as stored
    /// (`ops` by operator index; `workers` by worker, then operator).
    pub fn state(
        &self,
        ops: &[Option<StoredState>],
        workers: &[Vec<Option<StoredState>>],
    ) -> Result<ChainState> {
        let shared = &self.shared;
        let count = shared.stages.len();
        let Some((at, n)) = self.split() else {
            return Ok(ChainState {
                ops: shared.states(0..count, ops)?,
                workers: Vec::new(),
            });
        };
        Ok(ChainState {
            ops: shared.states(0..at, ops)?,
            workers: (0..n)
                .map(|w| {
                    let stored = workers.get(w).map(Vec::as_slice).unwrap_or(&[]);
                    shared.states(at + 1..count, stored)
                })
                .collect::<Result<_>>()?,
        })
    }

    /// `state` as the progress stores it: the operators' before a
    /// partition, and each worker's.
    #[allow(clippy::type_complexity)]
    pub fn store(
        &self,
        state: &mut ChainState,
    ) -> Result<(Vec<Option<StoredState>>, Vec<Vec<Option<StoredState>>>)> {
        let ops = self.shared.store(&mut state.ops)?;
        let workers = state
            .workers
            .iter_mut()
            .map(|w| self.shared.store(w))
            .collect::<Result<_>>()?;
        Ok((ops, workers))
    }

    /// The partition operator's index and its number of workers.
    fn split(&self) -> Option<(usize, usize)> {
        let at = self.partition?;
        match &self.shared.stages.get(at)?.work {
            Work::Partition(p) => Some((at, p.workers)),
            _ => None,
        }
    }

    /// Runs the operators over `batches` (in the input schema), in order;
    /// with what each operator took in, gave out, left out and spent.
    pub async fn run(
        &self,
        batches: Vec<RecordBatch>,
        state: &mut ChainState,
    ) -> Result<(Vec<RecordBatch>, Vec<StageRun>)> {
        let shared = &self.shared;
        let count = shared.stages.len();
        let Some((at, n)) = self.split() else {
            return shared.run_stages(0..count, batches, &mut state.ops).await;
        };
        let (before, mut runs) = shared.run_stages(0..at, batches, &mut state.ops).await?;
        let started = Instant::now();
        let rows = rows_of(&before);
        let Work::Partition(partition) = &shared.stages[at].work else {
            return Err(DataFusionError::Internal("the partition moved".into()));
        };
        let routed = partition
            .route(before, &shared.stages[at].input, shared.task.clone())
            .await?;
        runs.push(StageRun {
            rows_in: rows,
            rows_out: rows,
            dropped: 0,
            nanos: started.elapsed().as_nanos() as u64,
        });
        if state.workers.len() != n {
            return Err(DataFusionError::Internal(
                "a partition's workers have no state".into(),
            ));
        }
        let mut tasks = Vec::with_capacity(n);
        for (w, batches) in routed.into_iter().enumerate() {
            let shared = Arc::clone(shared);
            let mut ops = std::mem::take(&mut state.workers[w]);
            tasks.push(tokio::spawn(async move {
                let result = shared.run_stages(at + 1..count, batches, &mut ops).await;
                (ops, result)
            }));
        }
        let mut after = vec![StageRun::default(); count - at - 1];
        let mut outputs = Vec::with_capacity(n);
        let mut failed = None;
        for (w, task) in tasks.into_iter().enumerate() {
            let (ops, result) = task.await.map_err(|e| {
                DataFusionError::Internal(format!("a partition's worker stopped: {e}"))
            })?;
            state.workers[w] = ops;
            match result {
                Ok((out, worker_runs)) => {
                    for (total, run) in after.iter_mut().zip(&worker_runs) {
                        total.add(run);
                    }
                    outputs.push(out);
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        runs.extend(after);
        Ok((merge(outputs)?, runs))
    }
}
