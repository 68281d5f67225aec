//! Every tenant's pipelines, each in a file of its own
//! (`<data-dir>/pipelines/<tenant>/<name>.json`) holding its definition
//! and progress, replaced durably (temporary file, fsync, rename,
//! directory fsync) whenever the progress moves.

use super::{OperatorCounters, Progress, Spec};
use crate::ids::{PipelineName, TenantId};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Running micro-batches as events arrive.
    Running,
    /// Stopped on request; resumes where it stopped.
    Paused,
    /// Stopped by an error it cannot get past (its progress is kept).
    Failed,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    spec: Spec,
    progress: Progress,
}

/// A pipeline of a tenant.
#[derive(Debug)]
pub struct Pipeline {
    pub tenant: TenantId,
    pub name: PipelineName,
    pub spec: Spec,
    path: PathBuf,
    progress: Mutex<Progress>,
    /// Why it stopped for good, when it did.
    failure: Mutex<Option<String>>,
    /// The last error it is retrying past (a full buffer, say), cleared
    /// by the next micro-batch stored.
    retrying: Mutex<Option<String>>,
    /// Stops its task (pause, delete, shutdown); a new one each start.
    stop: Mutex<CancellationToken>,
    /// Held by its task while it runs, so that a new task starts only
    /// after the last one ended, and a stop can wait for the end.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Events read ahead and not yet run (`buffer` backpressure).
    buffered: AtomicU64,
    deleted: AtomicBool,
}

impl Pipeline {
    fn new(
        tenant: TenantId,
        name: PipelineName,
        spec: Spec,
        path: PathBuf,
        progress: Progress,
    ) -> Pipeline {
        Pipeline {
            tenant,
            name,
            spec,
            path,
            progress: Mutex::new(progress),
            failure: Mutex::new(None),
            retrying: Mutex::new(None),
            stop: Mutex::new(CancellationToken::new()),
            running: Arc::new(tokio::sync::Mutex::new(())),
            buffered: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
        }
    }

    /// Its progress as last stored.
    pub fn progress(&self) -> Progress {
        self.progress.lock().clone()
    }

    /// Positions of its source table after its position.
    pub fn lag_positions(&self, db: &crate::db::Database) -> u64 {
        let position = self.progress.lock().position.unwrap_or(0);
        self.spec
            .source
            .table
            .parse::<crate::ids::TableName>()
            .ok()
            .and_then(|t| db.table(&self.tenant, &t))
            .map_or(0, |t| t.highest_position().saturating_sub(position))
    }

    pub fn status(&self) -> Status {
        match (self.failure.lock().is_some(), self.progress.lock().paused) {
            (true, _) => Status::Failed,
            (false, true) => Status::Paused,
            (false, false) => Status::Running,
        }
    }

    /// Why it failed, or the error it is retrying past.
    pub fn error(&self) -> Option<String> {
        self.failure
            .lock()
            .clone()
            .or_else(|| self.retrying.lock().clone())
    }

    /// Changes its progress by `change` and stores it (the file first,
    /// then what readers see), under one lock so that no other change is
    /// lost; refused once the pipeline is deleted, so that no file comes
    /// back.
    pub fn update(&self, change: impl FnOnce(&mut Progress)) -> std::io::Result<()> {
        let mut held = self.progress.lock();
        if self.deleted.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the pipeline was deleted"));
        }
        let mut progress = held.clone();
        change(&mut progress);
        progress.updated_ms = chrono::Utc::now().timestamp_millis();
        write(&self.path, &self.spec, &progress)?;
        *held = progress;
        *self.retrying.lock() = None;
        Ok(())
    }

    /// Marks it stopped for good by `message`.
    pub fn fail(&self, message: String) {
        *self.failure.lock() = Some(message);
    }

    /// Notes an error it will retry past.
    pub fn retrying(&self, message: String) {
        *self.retrying.lock() = Some(message);
    }

    /// A fresh stop token for a task about to start; the previous task's
    /// token is cancelled. A pipeline that failed gets another chance.
    pub fn restart_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let old = std::mem::replace(&mut *self.stop.lock(), token.clone());
        old.cancel();
        *self.failure.lock() = None;
        token
    }

    /// Stops its task, if one runs.
    pub fn stop_task(&self) {
        self.stop.lock().cancel();
    }

    /// Held while its task runs: a new task waits for it first.
    pub async fn run_slot(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.running.clone().lock_owned().await
    }

    /// Stops its task and waits up to `wait` for it to end (tasks stop
    /// between micro-batches); whether it did.
    pub async fn stop_and_wait(&self, wait: std::time::Duration) -> bool {
        self.stop_task();
        tokio::time::timeout(wait, self.running.lock())
            .await
            .is_ok()
    }

    /// Events read ahead and not yet run.
    pub fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Counts `n` more events read ahead (or, negative, run).
    pub fn add_buffered(&self, n: i64) {
        if n >= 0 {
            self.buffered.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            self.buffered.fetch_sub(n.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Stores `paused` in its progress.
    pub fn set_paused(&self, paused: bool) -> std::io::Result<()> {
        self.update(|p| p.paused = paused)
    }
}

/// The progress of a pipeline that has run nothing yet.
fn fresh_progress(spec: &Spec, position: Option<u64>) -> Progress {
    Progress {
        position,
        operators: spec
            .operators
            .iter()
            .map(|o| OperatorCounters {
                op: o.kind().to_string(),
                ..OperatorCounters::default()
            })
            .collect(),
        updated_ms: chrono::Utc::now().timestamp_millis(),
        ..Progress::default()
    }
}

fn write(path: &std::path::Path, spec: &Spec, progress: &Progress) -> std::io::Result<()> {
    let file = File {
        spec: spec.clone(),
        progress: progress.clone(),
    };
    crate::db::groups::write_durably(
        path,
        &serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?,
    )
}

/// Why a pipeline could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("pipeline {0:?} already exists")]
    Exists(String),
    #[error("pipeline {0:?} was changed or deleted meanwhile; try again")]
    Changed(String),
    #[error("tenant {tenant:?} has {cap} pipelines, the most it may (--max-pipelines)")]
    Full { tenant: String, cap: usize },
    #[error("cannot store the pipeline: {0}")]
    Io(#[from] std::io::Error),
}

/// Every tenant's pipelines.
#[derive(Debug)]
pub struct PipelineStore {
    dir: PathBuf,
    pipelines: Mutex<BTreeMap<(TenantId, PipelineName), Arc<Pipeline>>>,
}

impl PipelineStore {
    /// The pipelines stored under `dir`. A file that does not parse stops
    /// the start: a pipeline's progress must not be silently lost.
    pub fn load(dir: PathBuf) -> std::io::Result<PipelineStore> {
        let mut pipelines = BTreeMap::new();
        for (tenant, path) in crate::ids::tenant_json_files(&dir)? {
            let bad = |e: &dyn std::fmt::Display| {
                std::io::Error::other(format!(
                    "pipeline file {} is unreadable: {e}",
                    path.display()
                ))
            };
            let text = std::fs::read_to_string(&path)?;
            let file: File = serde_json::from_str(&text).map_err(|e| bad(&e))?;
            let name: PipelineName = file.spec.name.parse().map_err(|e| bad(&e))?;
            pipelines.insert(
                (tenant.clone(), name.clone()),
                Arc::new(Pipeline::new(
                    tenant.clone(),
                    name,
                    file.spec,
                    path,
                    file.progress,
                )),
            );
        }
        Ok(PipelineStore {
            dir,
            pipelines: Mutex::new(pipelines),
        })
    }

    pub fn get(&self, tenant: &TenantId, name: &PipelineName) -> Option<Arc<Pipeline>> {
        self.pipelines
            .lock()
            .get(&(tenant.clone(), name.clone()))
            .cloned()
    }

    /// A tenant's pipelines, by name.
    pub fn list(&self, tenant: &TenantId) -> Vec<Arc<Pipeline>> {
        self.pipelines
            .lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, p)| p.clone())
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<Pipeline>> {
        self.pipelines.lock().values().cloned().collect()
    }

    /// Adds a pipeline, stored before it is returned, starting from
    /// `position` (`None`: from its source's start time).
    pub fn add(
        &self,
        tenant: &TenantId,
        name: &PipelineName,
        spec: Spec,
        position: Option<u64>,
        cap: usize,
    ) -> Result<Arc<Pipeline>, AddError> {
        let mut pipelines = self.pipelines.lock();
        let key = (tenant.clone(), name.clone());
        if pipelines.contains_key(&key) {
            return Err(AddError::Exists(name.to_string()));
        }
        if pipelines.keys().filter(|(t, _)| t == tenant).count() >= cap {
            return Err(AddError::Full {
                tenant: tenant.to_string(),
                cap,
            });
        }
        let path = name.state_file(&self.dir, tenant);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let progress = fresh_progress(&spec, position);
        write(&path, &spec, &progress)?;
        // The folders may be new too.
        for dir in [Some(self.dir.as_path()), self.dir.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::File::open(dir)?.sync_all()?;
        }
        let pipeline = Arc::new(Pipeline::new(
            tenant.clone(),
            name.clone(),
            spec,
            path,
            progress,
        ));
        pipelines.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Puts `spec` in place of `old` (whose task has ended), starting
    /// from `position`, in one durable replacement of its file: after a
    /// crash the file holds one version or the other, never neither.
    pub fn replace(
        &self,
        old: &Arc<Pipeline>,
        spec: Spec,
        position: Option<u64>,
    ) -> Result<Arc<Pipeline>, AddError> {
        let mut pipelines = self.pipelines.lock();
        let key = (old.tenant.clone(), old.name.clone());
        if !pipelines.get(&key).is_some_and(|p| Arc::ptr_eq(p, old)) {
            return Err(AddError::Changed(old.name.to_string()));
        }
        let progress = fresh_progress(&spec, position);
        {
            let _held = old.progress.lock();
            write(&old.path, &spec, &progress)?;
            old.deleted.store(true, Ordering::Relaxed);
        }
        let pipeline = Arc::new(Pipeline::new(
            old.tenant.clone(),
            old.name.clone(),
            spec,
            old.path.clone(),
            progress,
        ));
        pipelines.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Removes a pipeline and its file, stopping its task; `None` if there
    /// was none.
    pub fn delete(
        &self,
        tenant: &TenantId,
        name: &PipelineName,
    ) -> std::io::Result<Option<Arc<Pipeline>>> {
        let mut pipelines = self.pipelines.lock();
        let key = (tenant.clone(), name.clone());
        let Some(pipeline) = pipelines.get(&key).cloned() else {
            return Ok(None);
        };
        {
            let _held = pipeline.progress.lock();
            pipeline.deleted.store(true, Ordering::Relaxed);
            match std::fs::remove_file(&pipeline.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    pipeline.deleted.store(false, Ordering::Relaxed);
                    return Err(e);
                }
            }
            if let Some(dir) = pipeline.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        pipeline.stop_task();
        pipelines.remove(&key);
        Ok(Some(pipeline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Operator, Sink, Source};

    fn spec(name: &str) -> Spec {
        Spec {
            name: name.into(),
            version: 1,
            id: uuid::Uuid::now_v7(),
            created_ms: 1,
            definer: None,
            source: Source {
                table: "events".into(),
                start: None,
            },
            operators: vec![Operator::Filter {
                condition: "true".into(),
            }],
            sink: Sink {
                table: "out".into(),
                subscription: None,
            },
            backpressure: Default::default(),
        }
    }

    #[test]
    fn pipelines_and_progress_survive_a_reload_and_deletes_stick() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pipelines");
        let store = PipelineStore::load(root.clone()).unwrap();
        let t: TenantId = "acme".parse().unwrap();
        let a: PipelineName = "a".parse().unwrap();
        let b: PipelineName = "b".parse().unwrap();
        let p = store.add(&t, &a, spec("a"), Some(0), 2).unwrap();
        store.add(&t, &b, spec("b"), None, 2).unwrap();
        assert!(matches!(
            store.add(&t, &a, spec("a"), Some(0), 5),
            Err(AddError::Exists(_))
        ));
        let c: PipelineName = "c".parse().unwrap();
        assert!(matches!(
            store.add(&t, &c, spec("c"), Some(0), 2),
            Err(AddError::Full { .. })
        ));
        p.update(|progress| {
            progress.position = Some(42);
            progress.operators[0].events_in = 9;
        })
        .unwrap();
        let progress = p.progress();
        assert_eq!(progress.position, Some(42));

        let again = PipelineStore::load(root.clone()).unwrap();
        let p2 = again.get(&t, &a).unwrap();
        assert_eq!(p2.progress(), progress);
        assert_eq!(p2.spec, p.spec);
        assert_eq!(again.get(&t, &b).unwrap().progress().position, None);

        let gone = again.delete(&t, &a).unwrap().unwrap();
        assert!(
            gone.update(|p| p.position = Some(50)).is_err(),
            "a deleted pipeline stores nothing"
        );
        let third = PipelineStore::load(root).unwrap();
        assert!(third.get(&t, &a).is_none());
        assert_eq!(third.list(&t).len(), 1);
    }
}
