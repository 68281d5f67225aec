//! Projection snapshots: each projection's state is written to a Delta
//! table with the position it covers every `--projection-snapshot-interval`
//! (and when the server stops), and loaded at start-up, so that a restart
//! folds only the events after it.
//!
//! A snapshot that cannot be written is logged and tried again at the next
//! interval; one that cannot be loaded is logged and the projection is
//! folded from its table's first event instead. Neither stops the
//! projection: the events are durable, the snapshot only saves time.

use super::Service;
use crate::ids::TenantId;
use crate::projection::{Definition, Live, Spec, State};
use datafusion::execution::context::SessionState;
use std::sync::Arc;
use std::time::Duration;

impl Service {
    /// The state `spec`'s snapshot holds and the position it covers, or
    /// `None` (no snapshot, or one that does not fit the definition).
    pub(super) async fn load_snapshot(
        &self,
        tenant: &TenantId,
        spec: &Spec,
        definition: &Definition,
        session: &SessionState,
    ) -> Option<(State, u64)> {
        let name = crate::projection::registry::snapshot_name(spec);
        let snapshot = match self.db.storage().read_snapshot(tenant, &name).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(%tenant, projection = %spec.name, error = %e, "the projection's snapshot cannot be read; folding from the first event");
                return None;
            }
        };
        let loaded = State::new(definition, session).and_then(|mut state| {
            state.restore(&snapshot.batches)?;
            Ok(state)
        });
        match loaded {
            Ok(state) => {
                tracing::info!(%tenant, projection = %spec.name, position = snapshot.position, groups = state.groups(), "projection loaded from its snapshot");
                Some((state, snapshot.position))
            }
            Err(e) => {
                tracing::warn!(%tenant, projection = %spec.name, error = %e, "the projection's snapshot does not fit its query; folding from the first event");
                None
            }
        }
    }

    /// Writes the snapshot of every projection that moved on since its
    /// last one; how many were written.
    pub async fn snapshot_projections(&self) -> usize {
        let mut written = 0;
        for live in self.projections.all_with_next() {
            if self.snapshot_one(&live).await {
                written += 1;
            }
        }
        written
    }

    async fn snapshot_one(&self, live: &Arc<Live>) -> bool {
        let _one_at_a_time = live.snapshot_lock.lock().await;
        let (batch, position) = match live.snapshot() {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(tenant = %live.tenant, projection = %live.name, error = %e, "the projection's state cannot be snapshotted");
                return false;
            }
        };
        let storage = self.db.storage();
        let name = live.snapshot_name();
        if !self.projections.contains(live) {
            return false;
        }
        if let Err(e) = storage
            .write_snapshot(&live.tenant, &name, batch, position)
            .await
        {
            tracing::warn!(tenant = %live.tenant, projection = %live.name, error = %e, "the projection's snapshot was not written; trying again at the next interval");
            // A failed write may leave files; a removed projection gets
            // no next interval to replace them.
            if !self.projections.contains(live) {
                let _ = storage.delete_snapshot(&live.tenant, &name).await;
            }
            return false;
        }
        // Deleted or replaced while the snapshot was being written.
        if !self.projections.contains(live) {
            let _ = storage.delete_snapshot(&live.tenant, &name).await;
            return false;
        }
        live.snapshot_written(position);
        true
    }

    /// Writes snapshots every `--projection-snapshot-interval` until the
    /// server stops.
    pub(super) fn spawn_snapshots(self: &Arc<Self>) {
        let interval = self.config().projection_snapshot_interval;
        if interval.is_zero() {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = service.closing.cancelled() => return,
                    _ = tokio::time::sleep(interval.max(Duration::from_millis(10))) => {}
                }
                service.snapshot_projections().await;
            }
        });
    }

    /// Deletes the snapshots of `tenants` that no projection in the list
    /// owns (left by a deletion that did not finish).
    pub(super) async fn sweep_snapshots(&self, tenants: &[TenantId], owned: &[String]) {
        let storage = self.db.storage();
        for tenant in tenants {
            let Ok(names) = storage.snapshot_names(tenant).await else {
                continue;
            };
            for name in names {
                if !owned.contains(&format!("{tenant}/{name}"))
                    && let Err(e) = storage.delete_snapshot(tenant, &name).await
                {
                    tracing::warn!(%tenant, snapshot = %name, error = %e, "an orphaned snapshot could not be deleted");
                }
            }
        }
    }
}
