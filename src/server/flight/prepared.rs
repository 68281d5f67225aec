//! Prepared statements: held on the server between calls, each owned by
//! the tenant that made it.

use crate::ids::TenantId;
use arrow::array::RecordBatch;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Status;

/// Prepared statements live on the server between calls; each belongs to
/// the tenant that made it.
#[derive(Debug, Default)]
pub(super) struct PreparedStatements {
    map: parking_lot::Mutex<HashMap<String, Prepared>>,
}

#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub(super) tenant: TenantId,
    pub(super) sql: String,
    pub(super) params: Option<RecordBatch>,
    pub(super) used: Instant,
}

/// Most prepared statements one tenant may hold open.
const MAX_PREPARED_PER_TENANT: usize = 1000;
/// A prepared statement unused for this long is dropped.
const PREPARED_IDLE: Duration = Duration::from_secs(3600);

impl PreparedStatements {
    pub(super) fn insert(&self, prepared: Prepared) -> Result<String, Status> {
        let mut map = self.map.lock();
        map.retain(|_, p| p.used.elapsed() < PREPARED_IDLE);
        let held = map.values().filter(|p| p.tenant == prepared.tenant).count();
        if held >= MAX_PREPARED_PER_TENANT {
            return Err(Status::resource_exhausted(format!(
                "{held} prepared statements are open for this tenant; close some (ClosePreparedStatement) first"
            )));
        }
        let handle = uuid::Uuid::new_v4().simple().to_string();
        map.insert(handle.clone(), prepared);
        Ok(handle)
    }

    pub(super) fn with<R>(
        &self,
        handle: &[u8],
        tenant: &TenantId,
        f: impl FnOnce(&mut Prepared) -> R,
    ) -> Result<R, Status> {
        let mut map = self.map.lock();
        let found = std::str::from_utf8(handle)
            .ok()
            .and_then(|h| map.get_mut(h))
            .filter(|p| &p.tenant == tenant)
            .ok_or_else(|| {
                Status::not_found("no such prepared statement: it was closed, expired, or belongs to another tenant")
            })?;
        found.used = Instant::now();
        Ok(f(found))
    }

    pub(super) fn remove(&self, handle: &[u8], tenant: &TenantId) -> Result<(), Status> {
        self.with(handle, tenant, |_| ())?;
        if let Ok(h) = std::str::from_utf8(handle) {
            self.map.lock().remove(h);
        }
        Ok(())
    }
}
