//! Prepared statements: held on the server between calls, each owned by
//! the tenant that made it, and bounded per tenant in count and in bytes
//! (their SQL text and bound parameters), so that no reader can make the
//! server hold more than `--max-prepared-bytes` for it.

use super::invalid;
use crate::ids::TenantId;
use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::Status;

/// Prepared statements live on the server between calls; each belongs to
/// the tenant that made it.
#[derive(Debug)]
pub(super) struct PreparedStatements {
    map: parking_lot::Mutex<HashMap<String, Prepared>>,
    /// Most bytes one tenant's statements may hold together
    /// (`--max-prepared-bytes`).
    max_bytes_per_tenant: usize,
}

#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub(super) tenant: TenantId,
    pub(super) sql: String,
    pub(super) params: Option<Parameters>,
    pub(super) used: Instant,
}

/// Parameters bound to a statement, with the bytes they arrived in: what
/// they hold, as the arrays decoded from a message share its buffer.
#[derive(Debug, Clone)]
pub(super) struct Parameters {
    pub(super) batch: RecordBatch,
    bytes: usize,
}

impl Prepared {
    /// What the statement holds: its text and its parameters.
    fn bytes(&self) -> usize {
        self.sql.len() + self.params.as_ref().map_or(0, |p| p.bytes)
    }
}

/// Most prepared statements one tenant may hold open.
const MAX_PREPARED_PER_TENANT: usize = 1000;
/// A prepared statement unused for this long is dropped.
const PREPARED_IDLE: Duration = Duration::from_secs(3600);

impl PreparedStatements {
    pub(super) fn new(max_bytes_per_tenant: usize) -> Self {
        PreparedStatements {
            map: Default::default(),
            max_bytes_per_tenant,
        }
    }

    pub(super) fn insert(&self, prepared: Prepared) -> Result<String, Status> {
        let mut map = self.map.lock();
        map.retain(|_, p| p.used.elapsed() < PREPARED_IDLE);
        let held = map.values().filter(|p| p.tenant == prepared.tenant).count();
        if held >= MAX_PREPARED_PER_TENANT {
            return Err(Status::resource_exhausted(format!(
                "{held} prepared statements are open for this tenant; close some (ClosePreparedStatement) first"
            )));
        }
        self.check_bytes(&map, &prepared.tenant, None, prepared.bytes())?;
        let handle = uuid::Uuid::new_v4().simple().to_string();
        map.insert(handle.clone(), prepared);
        Ok(handle)
    }

    /// Refuses `adding` bytes for `tenant` when its statements (but the one
    /// called `replacing`, whose bytes are replaced) would then hold more
    /// than the tenant may.
    fn check_bytes(
        &self,
        map: &HashMap<String, Prepared>,
        tenant: &TenantId,
        replacing: Option<&str>,
        adding: usize,
    ) -> Result<(), Status> {
        let held: usize = map
            .iter()
            .filter(|(h, p)| &p.tenant == tenant && Some(h.as_str()) != replacing)
            .map(|(_, p)| p.bytes())
            .sum();
        if held + adding > self.max_bytes_per_tenant {
            return Err(Status::resource_exhausted(format!(
                "this tenant's prepared statements would hold {} bytes, over the {} it may (--max-prepared-bytes); close some (ClosePreparedStatement) first",
                held + adding,
                self.max_bytes_per_tenant
            )));
        }
        Ok(())
    }

    pub(super) fn with<R>(
        &self,
        handle: &[u8],
        tenant: &TenantId,
        f: impl FnOnce(&mut Prepared) -> R,
    ) -> Result<R, Status> {
        let mut map = self.map.lock();
        let found = Self::find(&mut map, handle, tenant)?;
        found.used = Instant::now();
        Ok(f(found))
    }

    fn find<'a>(
        map: &'a mut HashMap<String, Prepared>,
        handle: &[u8],
        tenant: &TenantId,
    ) -> Result<&'a mut Prepared, Status> {
        std::str::from_utf8(handle)
            .ok()
            .and_then(|h| map.get_mut(h))
            .filter(|p| &p.tenant == tenant)
            .ok_or_else(|| {
                Status::not_found("no such prepared statement: it was closed, expired, or belongs to another tenant")
            })
    }

    /// Binds `params` to the statement, within what its tenant may hold.
    pub(super) fn bind(
        &self,
        handle: &[u8],
        tenant: &TenantId,
        params: Option<Parameters>,
    ) -> Result<(), Status> {
        let mut map = self.map.lock();
        let found = Self::find(&mut map, handle, tenant)?;
        let mut bound = found.clone();
        bound.params = params;
        bound.used = Instant::now();
        let key = std::str::from_utf8(handle).unwrap_or_default();
        self.check_bytes(&map, tenant, Some(key), bound.bytes())?;
        map.insert(key.to_string(), bound);
        Ok(())
    }

    pub(super) fn remove(&self, handle: &[u8], tenant: &TenantId) -> Result<(), Status> {
        self.with(handle, tenant, |_| ())?;
        if let Ok(h) = std::str::from_utf8(handle) {
            self.map.lock().remove(h);
        }
        Ok(())
    }
}

/// The parameters of a DoPut to a prepared statement, as one batch;
/// refused as soon as more than `limit` bytes (`--max-query-bytes`) have
/// arrived, so an upload is never held whole before it is judged.
pub(super) async fn read_parameters(
    upload: PeekableFlightDataStream,
    limit: usize,
) -> Result<Option<Parameters>, Status> {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let counted = upload.map(move |message| {
        let message = message?;
        let size = message.data_header.len() + message.data_body.len();
        if counter.fetch_add(size, Ordering::Relaxed) + size > limit {
            return Err(FlightError::Tonic(Box::new(invalid(format!(
                "the parameters bound to a prepared statement are over {limit} bytes (--max-query-bytes)"
            )))));
        }
        Ok(message)
    });
    let mut batches = FlightRecordBatchStream::new_from_flight_data(counted);
    let mut params = Vec::new();
    while let Some(batch) = batches.next().await {
        match batch {
            Ok(b) => params.push(b),
            Err(FlightError::Tonic(status)) => return Err(*status),
            Err(e) => {
                return Err(invalid(format!(
                    "the parameters are not valid Arrow IPC: {e}"
                )));
            }
        }
    }
    let Some(first) = params.first() else {
        return Ok(None);
    };
    let batch = arrow::compute::concat_batches(&first.schema(), &params)
        .map_err(|e| invalid(format!("parameters: {e}")))?;
    Ok(Some(Parameters {
        batch,
        bytes: received.load(Ordering::Relaxed),
    }))
}
