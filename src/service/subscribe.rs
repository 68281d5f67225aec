//! Live reads of a table: its events after a starting point, in position
//! order, first those already stored (catch-up) and then each as it is
//! acknowledged, with no gap and no repeat between the two.
//!
//! A [`Subscription`] remembers the last position it delivered and reads
//! what follows with an ordinary query (`position > P AND position <= P +
//! W AND filter ORDER BY position LIMIT n`), which sees the buffer and the
//! stored files alike. The window `W` keeps each read to the files and
//! buffered batches that overlap it, however long the backlog; it grows
//! while reads come back sparse (a selective filter) and shrinks after
//! full ones. Between reads it waits for the write path to apply a batch
//! (a watch the table marks once the batch is readable). So there is no
//! per-subscriber queue: a slow reader only falls behind and reads on from
//! storage, ingest never waits for it, and a subscription holds at most
//! one page of events in memory ([`PAGE`], or [`LARGE_PAGE`] while it is
//! behind).

use super::query::Interface;
use super::{Error, Kind, Result, Service};
use crate::auth::{Principal, Role};
use crate::db::Table;
use crate::ids::{TableName, TenantId};
use crate::query::live::BufferRead;
use crate::query::{QueryOptions, quote_ident};
use crate::ratelimit;
use crate::schema;
use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::TryStreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Most events one read of a subscription returns while it keeps up.
pub const PAGE: usize = 1000;
/// Most events one read returns while it is behind (the last read was
/// full): fewer, larger reads catch up faster.
pub const LARGE_PAGE: usize = 4 * PAGE;
/// The fewest and most positions one read looks at: it starts at a few
/// pages' worth, halves after a full page and doubles after a sparse one
/// (a selective filter).
const MIN_WINDOW: u64 = PAGE as u64;
const MAX_WINDOW: u64 = 1 << 20;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The table's first event.
    Earliest,
    /// The first event acknowledged after the subscription began.
    Now,
    /// The event after this position (to resume after the last one seen).
    After(u64),
    /// From the first event (by position) ingested at or after this
    /// time (microseconds since the epoch).
    Since(i64),
}

impl Start {
    /// `earliest`, `now`, `after:N` or an RFC 3339 time.
    pub fn parse(text: &str) -> std::result::Result<Start, String> {
        match text {
            "earliest" => return Ok(Start::Earliest),
            "now" => return Ok(Start::Now),
            _ => {}
        }
        if let Some(n) = text.strip_prefix("after:") {
            return n
                .trim()
                .parse()
                .map(Start::After)
                .map_err(|_| format!("start: {n:?} is not a position (a whole number)"));
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| Start::Since(t.timestamp_micros()))
            .map_err(|e| {
                format!(
                    "start: {text:?} is none of earliest, now, after:N or an RFC 3339 time ({e})"
                )
            })
    }
}

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct Subscribe {
    pub table: TableName,
    /// A SQL boolean expression over the table's columns.
    pub filter: Option<String>,
    /// A DSL `where` condition, in addition to `filter`.
    pub where_dsl: Option<serde_json::Value>,
    /// The columns to send (`position` always comes too); `None`: all.
    pub columns: Option<Vec<String>>,
    pub start: Start,
    /// Only the events whose entity falls in part `.0` of `.1`
    /// ([`crate::query::partition`]).
    pub part: Option<(u32, u32)>,
    /// Only the events up to this position.
    pub until: Option<u64>,
    /// The events as written, without schema migrations.
    pub raw: bool,
}

impl Subscribe {
    /// Every event of `table` from `start`.
    pub fn new(table: TableName, start: Start) -> Subscribe {
        Subscribe {
            table,
            filter: None,
            where_dsl: None,
            columns: None,
            start,
            part: None,
            until: None,
            raw: false,
        }
    }
}

/// Each tenant's open subscriptions, capped.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    open: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

impl Subscriptions {
    fn admit(&self, tenant: &TenantId, cap: usize) -> Result<OwnedSemaphorePermit> {
        let semaphore = self
            .open
            .lock()
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(cap)))
            .clone();
        semaphore.try_acquire_owned().map_err(|_| {
            Error::new(
                Kind::Overloaded,
                format!(
                    "tenant {tenant:?} has {cap} subscriptions open, the most it may (--max-subscriptions)"
                ),
            )
            .retry_after(1)
        })
    }
}

/// An open subscription; see the module's notes.
#[derive(Debug)]
pub struct Subscription {
    service: Arc<Service>,
    caller: Principal,
    /// The read of the events after `$1`.
    sql: [String; 2],
    /// The conditions and columns, for reads from the buffer.
    request: Subscribe,
    conditions: String,
    /// Those compiled for the table's schema `.0` (`None`: they cannot be).
    buffered: Option<(SchemaRef, Option<Arc<BufferRead>>)>,
    /// The last position delivered (or skipped as not matching).
    after: u64,
    table: Arc<Table>,
    /// Changes when the table has applied a batch.
    applied: watch::Receiver<()>,
    /// How many positions the next read looks at.
    window: u64,
    /// Whether the last read found more than it could return: the next
    /// reads [`LARGE_PAGE`].
    behind: bool,
    /// One of the tenant's subscription slots (not for the server's own).
    _open: Option<OwnedSemaphorePermit>,
}

/// The error a subscription ends with when the server shuts down.
pub fn shutting_down() -> Error {
    Error::new(Kind::Unavailable, "the server is shutting down")
}

/// The filter as one expression, printed back from its syntax tree so
/// that nothing in it can change the query around it.
fn filter_expr(filter: &str) -> Result<String> {
    let invalid = |e: &dyn std::fmt::Display| Error::invalid(format!("filter: {e}"));
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(filter)
        .map_err(|e| invalid(&e))?;
    let expr = parser.parse_expr().map_err(|e| invalid(&e))?;
    let rest = parser.peek_token();
    if rest.token != datafusion::sql::sqlparser::tokenizer::Token::EOF {
        return Err(invalid(&format!(
            "one expression expected; found {} after it (at {})",
            rest.token, rest.span.start
        )));
    }
    Ok(expr.to_string())
}

impl Service {
    /// Opens a subscription for `caller` (the reader role; one of the
    /// tenant's `--max-subscriptions`). The filter is checked here, by
    /// planning the first read, so a bad one is refused at once.
    pub async fn subscribe(
        self: &Arc<Self>,
        caller: &Principal,
        request: Subscribe,
    ) -> Result<Subscription> {
        caller.require(Role::Reader, "subscribe")?;
        self.rate_check(caller, ratelimit::Kind::Queries, 1)?;
        self.table_of(caller, &request.table)?;
        let open = self
            .subscriptions
            .admit(&caller.tenant, self.db.config().max_subscriptions.max(1))?;
        self.open_subscription(caller, request, Some(open)).await
    }

    /// A subscription the server itself keeps open (a projection's): no
    /// rate check, and none of the tenant's subscription slots.
    pub(super) async fn subscribe_internal(
        self: &Arc<Self>,
        caller: &Principal,
        request: Subscribe,
    ) -> Result<Subscription> {
        self.open_subscription(caller, request, None).await
    }

    async fn open_subscription(
        self: &Arc<Self>,
        caller: &Principal,
        request: Subscribe,
        open: Option<OwnedSemaphorePermit>,
    ) -> Result<Subscription> {
        let table = self.table_of(caller, &request.table)?;
        let conditions = self.conditions(caller, &request).await?;
        let sql = [
            Self::page_sql(&request, &conditions, PAGE),
            Self::page_sql(&request, &conditions, LARGE_PAGE),
        ];
        let applied = table.watch_applied();
        let mut subscription = Subscription {
            service: self.clone(),
            caller: caller.clone(),
            sql,
            request,
            conditions,
            buffered: None,
            after: 0,
            table: table.clone(),
            applied,
            window: 4 * MIN_WINDOW,
            behind: false,
            _open: open,
        };
        subscription.after = self
            .start_position(caller, &table, subscription.request.start)
            .await?;
        // Planned and run now (after the highest possible position, so it
        // finds nothing), so that a bad filter is refused before the
        // stream opens.
        subscription.read_sql(u64::MAX, u64::MAX).await?;
        Ok(subscription)
    }

    /// The position a subscription of `table` starting at `start` reads
    /// after.
    pub(super) async fn start_position(
        &self,
        caller: &Principal,
        table: &Table,
        start: Start,
    ) -> Result<u64> {
        // Beside other writers, positions order this writer's events
        // only: a reader follows those, from the start of its range.
        let floor = table.first_position() - 1;
        Ok(match start {
            Start::Earliest => floor,
            Start::After(p) => p.max(floor),
            Start::Now => table.highest_position(),
            Start::Since(t) => self.position_before(caller, table, t).await?.max(floor),
        })
    }

    /// The position just before the first event of `table` ingested at or
    /// after `t` (microseconds since the epoch); the highest position when
    /// none was.
    pub(super) async fn position_before(
        &self,
        caller: &Principal,
        table: &Table,
        t: i64,
    ) -> Result<u64> {
        let highest = table.highest_position();
        let sql = format!(
            "SELECT min({position}) FROM \"{table}\" WHERE {at} >= to_timestamp_micros({t}) \
             AND {position} >= {lo} AND {position} < {hi}",
            table = table.name.as_str(),
            lo = table.owned_positions().start,
            hi = table.owned_positions().end,
            position = schema::POSITION,
            at = schema::INGESTED_AT,
        );
        let first = self.first_value(caller, &sql).await?;
        Ok(first.map_or(highest, |p| (p.max(1) - 1) as u64))
    }

    /// `request`'s conditions besides the position, each as ` AND (...)`.
    pub(super) async fn conditions(
        &self,
        caller: &Principal,
        request: &Subscribe,
    ) -> Result<String> {
        let mut filter = String::new();
        if let Some(f) = request.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            self.check_size("the filter", f.len())?;
            filter += &format!(" AND ({})", filter_expr(f)?);
        }
        if let Some(w) = &request.where_dsl {
            self.check_size("the where condition", w.to_string().len())?;
            let sql = crate::dsl::where_sql(&self.queries, caller, request.table.as_str(), w)
                .await
                .map_err(|e| match Error::from(e) {
                    e if e.kind == Kind::Invalid => Error::invalid(format!("where: {}", e.message)),
                    e => e,
                })?;
            filter += &format!(" AND ({sql})");
        }
        if let Some((part, of)) = request.part
            && of > 1
        {
            filter += &format!(
                " AND {}({}, {of}) = {part}",
                crate::query::partition::NAME,
                schema::ENTITY_ID
            );
        }
        if let Some(until) = request.until {
            filter += &format!(" AND {} <= {until}", schema::POSITION);
        }
        Ok(filter)
    }

    /// `request`'s columns and its page of events after `$1`.
    fn page_sql(request: &Subscribe, filter: &str, limit: usize) -> String {
        let columns = match &request.columns {
            None => "*".to_string(),
            Some(names) => {
                let mut list = vec![quote_ident(schema::POSITION)];
                for name in names {
                    if name != schema::POSITION {
                        list.push(quote_ident(name));
                    }
                }
                list.join(", ")
            }
        };
        format!(
            "SELECT {columns} FROM \"{table}\" WHERE {position} > $1 AND {position} <= $2{filter} ORDER BY {position} LIMIT {limit}",
            table = request.table.as_str(),
            position = schema::POSITION,
        )
    }

    /// The first value of the first row of `sql`, as a whole number.
    pub(super) async fn first_value(&self, caller: &Principal, sql: &str) -> Result<Option<i64>> {
        let stream = self
            .queries
            .sql_with(caller, sql, None, QueryOptions::default())
            .await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        let value = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .map(|b| arrow::compute::cast(b.column(0), &DataType::Int64))
            .transpose()
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(value.and_then(|v| {
            let v = v.as_primitive::<Int64Type>();
            v.is_valid(0).then(|| v.value(0))
        }))
    }
}

impl Subscription {
    /// The last position delivered or passed over.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// Passes over the positions up to `position` unread.
    pub fn skip_to(&mut self, position: u64) {
        if position > self.after {
            self.after = position;
            self.behind = true;
        }
    }

    /// How many positions of the table (matching or not) are past the
    /// last one delivered or passed over.
    pub fn lag(&self) -> u64 {
        self.table.highest_position().saturating_sub(self.after)
    }

    /// The events after `after` up to `upto` that match, at most a page:
    /// from the buffer when they are all there, otherwise by the SQL.
    async fn read(&mut self, after: u64, upto: u64) -> Result<Vec<RecordBatch>> {
        let view = self.service.db.view_after(&self.table, Some(after));
        if self
            .buffered
            .as_ref()
            .is_none_or(|(schema, _)| !Arc::ptr_eq(schema, &view.schema))
        {
            let compiled = BufferRead::compile(
                &self.service.queries,
                &self.caller,
                self.request.table.as_str(),
                &view.schema,
                self.request.columns.as_deref(),
                &format!("TRUE{}", self.conditions),
            );
            self.buffered = Some((view.schema.clone(), compiled.map(Arc::new)));
        }
        if let Some((_, Some(compiled))) = &self.buffered {
            let started = std::time::Instant::now();
            let limit = if self.behind { LARGE_PAGE } else { PAGE };
            let result = self
                .service
                .queries
                .read_buffered(&self.caller, compiled.clone(), view, after, upto, limit)
                .await
                .map_err(Error::from)
                .transpose();
            if let Some(result) = result {
                super::query::observe(Interface::Subscription, started, &result);
                return result;
            }
        }
        self.read_sql(after, upto).await
    }

    /// [`Subscription::read`] by the SQL.
    async fn read_sql(&self, after: u64, upto: u64) -> Result<Vec<RecordBatch>> {
        let as_i64 = |p: u64| p.min(i64::MAX as u64) as i64;
        let params = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("$1", DataType::Int64, false),
                Field::new("$2", DataType::Int64, false),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![as_i64(after)])),
                Arc::new(Int64Array::from(vec![as_i64(upto)])),
            ],
        )
        .map_err(|e| Error::internal(e.to_string()))?;
        let started = std::time::Instant::now();
        let result = self
            .service
            .queries
            .sql_with(
                &self.caller,
                &self.sql[usize::from(self.behind)],
                Some(params),
                QueryOptions {
                    after: Some(after),
                    raw: self.request.raw,
                    action: crate::policy::Action::Stream,
                    ..QueryOptions::default()
                },
            )
            .await;
        let result = match result {
            Ok(stream) => stream.try_collect().await.map_err(Error::from),
            Err(e) => Err(Error::from(e)),
        };
        super::query::observe(Interface::Subscription, started, &result);
        result
    }

    /// The next events, waiting up to `wait` for some to be acknowledged;
    /// `None` when none came in that time. Events come in position order,
    /// each once.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Vec<RecordBatch>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.applied.mark_unchanged();
            let seen = self.table.highest_position();
            if seen > self.after {
                // One window of positions at a time: a read touches only
                // the files and batches that overlap it, however long the
                // backlog.
                let limit = if self.behind { LARGE_PAGE } else { PAGE };
                let window = self.window.max(limit as u64);
                let upto = seen.min(self.after.saturating_add(window));
                match self.read(self.after, upto).await {
                    Ok(batches) => {
                        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                        let last = batches.iter().filter_map(last_position).max();
                        match last {
                            Some(last) if rows >= limit => {
                                self.after = last;
                                self.behind = true;
                                self.window = (self.window / 2).max(MIN_WINDOW);
                            }
                            // Every event up to `upto` was readable, and
                            // those after the last returned did not match.
                            _ => {
                                self.after = upto;
                                self.behind = upto < seen;
                                if rows < PAGE / 2 {
                                    self.window = (self.window * 2).min(MAX_WINDOW);
                                }
                            }
                        }
                        if rows > 0 {
                            return Ok(Some(batches));
                        }
                        if tokio::time::Instant::now() >= deadline {
                            return Ok(None);
                        }
                        continue;
                    }
                    // The tenant's query slots are all taken: read again
                    // shortly, without giving up the subscription.
                    Err(e) if e.kind == Kind::Overloaded => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if tokio::time::Instant::now() >= deadline {
                            return Ok(None);
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let changed = tokio::select! {
                _ = self.service.closing.cancelled() => return Err(shutting_down()),
                changed = tokio::time::timeout_at(deadline, self.applied.changed()) => changed,
            };
            match changed {
                Err(_) => return Ok(None),
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    return Err(shutting_down());
                }
            }
        }
    }
}

/// The highest position in `batch`, if it has one.
pub fn last_position(batch: &RecordBatch) -> Option<u64> {
    let positions = batch
        .column_by_name(schema::POSITION)?
        .as_primitive_opt::<Int64Type>()?;
    arrow::compute::max(positions).map(|p| p.max(0) as u64)
}

#[cfg(test)]
#[path = "subscribe_tests.rs"]
mod buffered_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_filters_parse_or_name_the_problem() {
        assert_eq!(Start::parse("earliest"), Ok(Start::Earliest));
        assert_eq!(Start::parse("now"), Ok(Start::Now));
        assert_eq!(Start::parse("after:42"), Ok(Start::After(42)));
        assert_eq!(
            Start::parse("2026-01-01T00:00:00Z"),
            Ok(Start::Since(1_767_225_600_000_000))
        );
        assert!(
            Start::parse("after:x")
                .unwrap_err()
                .contains("not a position")
        );
        assert!(
            Start::parse("yesterday")
                .unwrap_err()
                .contains("earliest, now")
        );
        assert_eq!(
            filter_expr("x > 1 AND y = 'a'").unwrap(),
            "x > 1 AND y = 'a'"
        );
        // Nothing may follow the expression: no comment, no clause.
        for bad in ["x > 1) --", "true ORDER BY 1", "x > 1; DROP TABLE t", ""] {
            let e = filter_expr(bad).unwrap_err();
            assert!(e.message.starts_with("filter:"), "{bad}: {e}");
        }
    }
}
