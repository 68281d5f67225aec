//! Entity streams: one entity's events in version order, read as a query
//! (the reader role, the tenant's query slots and limits, and the metrics
//! of any other query).

use super::query::{Interface, observe};
use super::{Error, Result, Service};
use crate::auth::{Principal, Role};
use crate::ids::TableName;
use crate::query::QueryOptions;
use crate::query::stream::EntityRead;
use crate::ratelimit;
use datafusion::execution::SendableRecordBatchStream;
use std::time::Instant;

/// Events one stream read returns when no limit is given.
pub const DEFAULT_STREAM_LIMIT: u64 = 100;
/// Most events one stream read may return.
pub const MAX_STREAM_LIMIT: u64 = 10_000;

/// Which way a stream is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Oldest first, from `from_version` (default: the first event) up.
    #[default]
    Forward,
    /// Newest first, from `from_version` (default: the latest event) down.
    Backward,
}

/// A read of one entity's stream.
#[derive(Debug, Clone)]
pub struct StreamRead {
    pub table: TableName,
    pub entity: String,
    pub from_version: Option<u64>,
    pub limit: Option<u64>,
    pub direction: Direction,
    /// The events as written, without schema migrations.
    pub raw: bool,
}

impl Service {
    /// The events of `read.entity` in `read.table`, in version order, as
    /// a result stream. An entity without events has an empty stream; a
    /// table that does not exist is not found.
    pub async fn stream(
        &self,
        caller: &Principal,
        read: StreamRead,
    ) -> Result<SendableRecordBatchStream> {
        let limit = read.limit.unwrap_or(DEFAULT_STREAM_LIMIT);
        if !(1..=MAX_STREAM_LIMIT).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit must be from 1 to {MAX_STREAM_LIMIT}; got {limit}"
            )));
        }
        if read.entity.is_empty() {
            return Err(Error::invalid("the entity id must not be empty"));
        }
        if let Some(v) = read.from_version.filter(|v| *v > i64::MAX as u64) {
            return Err(Error::invalid(format!("from_version {v} is too large")));
        }
        // The reader role first, so that a caller without it learns
        // nothing about which tables exist (the query checks it again,
        // with the rate).
        caller.require(Role::Reader, "query")?;
        self.table_of(caller, &read.table)?;
        let started = Instant::now();
        let result = self.entity_read(caller, read, limit).await;
        observe(Interface::Stream, started, &result);
        result
    }

    async fn entity_read(
        &self,
        caller: &Principal,
        read: StreamRead,
        limit: u64,
    ) -> Result<SendableRecordBatchStream> {
        self.admit_query(caller)?;
        let options = QueryOptions {
            raw: read.raw,
            action: Interface::Stream.action(),
            point_read: true,
            ..Default::default()
        };
        let entity = EntityRead {
            table: read.table,
            entity: read.entity,
            from_version: read.from_version.map(|v| v as i64),
            backward: read.direction == Direction::Backward,
            limit: limit as usize,
        };
        let stream = self.queries.entity_read(caller, entity, options).await?;
        self.meter(caller, ratelimit::Kind::Queries, 1);
        Ok(stream)
    }
}
