//! Entity streams: one entity's events in version order, read as a query
//! (the reader role, the tenant's query slots and limits, and the metrics
//! of any other query).

use super::query::Interface;
use super::{Error, Result, Service};
use crate::auth::{Principal, Role};
use crate::ids::TableName;
use crate::schema;
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::SendableRecordBatchStream;
use std::sync::Arc;

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
        let (bound, order) = match read.direction {
            Direction::Forward => (">=", "ASC"),
            Direction::Backward => ("<=", "DESC"),
        };
        // Without a starting version the whole stream qualifies; a bound
        // that every row meets would still be checked against each file's
        // statistics.
        let mut fields = vec![Field::new("$1", DataType::Utf8, false)];
        let mut values: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![read.entity]))];
        let mut version_bound = String::new();
        if let Some(from) = read.from_version {
            version_bound = format!(" AND {} {bound} $2", schema::VERSION);
            fields.push(Field::new("$2", DataType::Int64, false));
            values.push(Arc::new(Int64Array::from(vec![from as i64])));
        }
        let sql = format!(
            "SELECT * FROM \"{table}\" WHERE {entity} = $1{version_bound} \
             ORDER BY {version} {order} LIMIT {limit}",
            table = read.table.as_str(),
            entity = schema::ENTITY_ID,
            version = schema::VERSION,
        );
        let params = RecordBatch::try_new(Arc::new(Schema::new(fields)), values)
            .map_err(|e| Error::internal(e.to_string()))?;
        let (stream, _) = self
            .sql_read(
                caller,
                &sql,
                Some(params),
                None,
                read.raw,
                Interface::Stream,
            )
            .await?;
        Ok(stream)
    }
}
