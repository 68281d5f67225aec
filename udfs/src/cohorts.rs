//! `cohorts('<query>', period [, periods])`: the cohort retention matrix.
//!
//! The inner query returns four columns, used by position: the entity (any
//! type), the event time (timestamp or date), whether the event puts the
//! entity in a cohort (boolean), and whether it counts as a return
//! (boolean). An entity's cohort is the `period` ('day', 'week' starting
//! Monday, or 'month', UTC) holding its first cohort event; it is retained
//! in period p (0 ≤ p < periods) when it has a return event in the p-th
//! period after its cohort's — in period 0, at or after its first cohort
//! event. Entities without a cohort event are not counted.
//!
//! One row per cohort and period: `cohort` (DATE, the period's first day),
//! `period`, `cohort_size`, `retained`, `rate` (retained / cohort_size).
//! Periods that begin after the latest event of the input are left out:
//! they have not happened yet.
//!
//! The rows are folded as they arrive; memory holds one entry per entity
//! and per period in which it returned, reserved in the query's pool as
//! it grows.

use crate::udtf::{Args, Fold, FoldTable, plan_inner, reserve_rows};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Int64Array, RecordBatch,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::logical_expr::LogicalPlan;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const NAME: &str = "cohorts";

/// Most periods one call may ask for.
pub const MAX_PERIODS: u64 = 1000;

const DAY_US: i64 = 86_400_000_000;

/// A cohort period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC day.
    Day,
    /// A week starting on Monday.
    Week,
    /// A calendar month.
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Result<Period> {
        match text.trim().to_ascii_lowercase().as_str() {
            "day" | "days" => Ok(Period::Day),
            "week" | "weeks" => Ok(Period::Week),
            "month" | "months" => Ok(Period::Month),
            _ => plan_err!("{NAME}: unknown period {text:?}; use 'day', 'week' or 'month'"),
        }
    }

    /// The number of the period holding `us` (microseconds since the
    /// epoch), counted from the epoch.
    pub fn number(self, us: i64) -> i64 {
        let day = us.div_euclid(DAY_US);
        match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: Monday 1969-12-29 starts week 0.
            Period::Week => (day + 3).div_euclid(7),
            Period::Month => {
                let date = chrono::DateTime::from_timestamp_micros(us)
                    .map(|d| d.date_naive())
                    .unwrap_or_default();
                use chrono::Datelike;
                i64::from(date.year()) * 12 + i64::from(date.month0())
            }
        }
    }

    /// The first day of period `n`, as days since the epoch.
    pub fn first_day(self, n: i64) -> Option<i32> {
        let day = match self {
            Period::Day => n,
            Period::Week => n * 7 - 3,
            Period::Month => {
                let date = chrono::NaiveDate::from_ymd_opt(
                    i32::try_from(n.div_euclid(12)).ok()?,
                    u32::try_from(n.rem_euclid(12) + 1).ok()?,
                    1,
                )?;
                date.signed_duration_since(chrono::NaiveDate::default())
                    .num_days()
            }
        };
        i32::try_from(day).ok()
    }
}

/// The table function.
#[derive(Debug, Default)]
pub struct Cohorts;

impl TableFunctionImpl for Cohorts {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let a = Args {
            func: NAME,
            usage: "('<query returning entity, time, is_cohort_event, is_return_event>', 'day' | 'week' | 'month' [, periods])",
            exprs: args.exprs(),
        };
        a.count(2, 3)?;
        let sql = a.string(0, "the query")?;
        let period = Period::parse(&a.string(1, "the period")?)?;
        let periods = if a.has(2) {
            a.count_arg(2, "the number of periods", MAX_PERIODS)?
        } else {
            8
        };
        if periods == 0 {
            return plan_err!("{NAME}: the number of periods must be at least 1");
        }
        let plan = plan_inner(NAME, args.session(), &sql)?;
        cohorts_provider(plan, period, periods)
    }
}

/// The table `cohorts` returns, over an already planned query.
pub fn cohorts_provider(
    plan: LogicalPlan,
    period: Period,
    periods: u64,
) -> Result<Arc<dyn TableProvider>> {
    let inner = plan.schema().as_arrow().clone();
    if inner.fields().len() != 4 {
        return plan_err!(
            "{NAME}: the inner query must return 4 columns (entity, time, is_cohort_event, is_return_event), got {}",
            inner.fields().len()
        );
    }
    let types: Vec<&DataType> = inner.fields().iter().map(|f| f.data_type()).collect();
    if !matches!(
        types[1],
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    ) {
        return plan_err!(
            "{NAME}: column 2 of the inner query (the time) must be a timestamp or a date, got {}",
            types[1]
        );
    }
    for (i, what) in [(2, "is_cohort_event"), (3, "is_return_event")] {
        if types[i] != &DataType::Boolean {
            return plan_err!(
                "{NAME}: column {} of the inner query ({what}) must be a boolean, got {}",
                i + 1,
                types[i]
            );
        }
    }
    let entity_type = types[0].clone();
    let out: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("cohort", DataType::Date32, false),
        Field::new("period", DataType::Int64, false),
        Field::new("cohort_size", DataType::Int64, false),
        Field::new("retained", DataType::Int64, false),
        Field::new("rate", DataType::Float64, false),
    ]));
    let schema = Arc::clone(&out);
    let make = move || -> Box<dyn Fold> {
        Box::new(CohortFold {
            period,
            periods: periods as i64,
            entity_type: entity_type.clone(),
            converter: None,
            entities: HashMap::new(),
            heap: 0,
            latest: None,
            out: Arc::clone(&out),
        })
    };
    Ok(FoldTable::provider(NAME, plan, schema, Arc::new(make)))
}

#[derive(Debug, Default)]
struct Entity {
    /// The first cohort event (µs).
    first: Option<i64>,
    /// For each period with a return event: the latest such event (µs).
    returns: HashMap<i64, i64>,
}

struct CohortFold {
    period: Period,
    periods: i64,
    entity_type: DataType,
    converter: Option<RowConverter>,
    entities: HashMap<Box<[u8]>, Entity>,
    /// The bytes the entities own outside the map's table: their keys
    /// and their tables of returns.
    heap: usize,
    latest: Option<i64>,
    out: SchemaRef,
}

/// What the allocator adds to each allocation, about.
const ALLOCATION_OVERHEAD: usize = 16;

/// The bytes a hash table of `capacity` entries of `entry` bytes
/// allocates (hashbrown: a power of two of buckets at most 7/8 full, and
/// one control byte per bucket).
fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity.saturating_mul(8) / 7).next_power_of_two().max(4);
    buckets * (entry + 1) + 16 + ALLOCATION_OVERHEAD
}

/// Output bytes per cohort row: a date, three counts and a rate.
const OUT_BYTES_PER_ROW: usize = 4 + 8 + 8 + 8 + 8;

impl Fold for CohortFold {
    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let converter = match &mut self.converter {
            Some(c) => c,
            None => self.converter.insert(RowConverter::new(vec![SortField::new(
                self.entity_type.clone(),
            )])?),
        };
        let keys = converter.convert_columns(&[Arc::clone(batch.column(0))])?;
        let times = cast(
            batch.column(1),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let times = times.as_primitive::<TimestampMicrosecondType>();
        let joins = batch.column(2).as_boolean();
        let returns = batch.column(3).as_boolean();
        let entities = batch.column(0);
        for row in 0..batch.num_rows() {
            if entities.is_null(row) || times.is_null(row) {
                continue;
            }
            let t = times.value(row);
            self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
            let join = joins.is_valid(row) && joins.value(row);
            let ret = returns.is_valid(row) && returns.value(row);
            if !join && !ret {
                continue;
            }
            let key = keys.row(row);
            let e = match self.entities.get_mut(key.as_ref()) {
                Some(e) => e,
                None => {
                    self.heap += key.as_ref().len() + ALLOCATION_OVERHEAD;
                    self.entities.entry(key.as_ref().into()).or_default()
                }
            };
            if join {
                e.first = Some(e.first.map_or(t, |f| f.min(t)));
            }
            if ret {
                let p = self.period.number(t);
                let before = e.returns.capacity();
                let latest = e.returns.entry(p).or_insert(t);
                *latest = (*latest).max(t);
                let after = e.returns.capacity();
                if after != before {
                    let entry = size_of::<(i64, i64)>();
                    self.heap = self.heap + table_bytes(after, entry) - table_bytes(before, entry);
                }
            }
        }
        Ok(())
    }

    fn size(&self) -> usize {
        let entry = size_of::<(Box<[u8]>, Entity)>();
        table_bytes(self.entities.capacity(), entry) + self.heap
    }

    fn finish(self: Box<Self>, memory: &mut MemoryReservation) -> Result<RecordBatch> {
        // cohort period → (size, retained per period offset)
        let mut cohorts: BTreeMap<i64, (i64, Vec<i64>)> = BTreeMap::new();
        let periods = self.periods as usize;
        for e in self.entities.values() {
            let Some(first) = e.first else { continue };
            let c = self.period.number(first);
            if !cohorts.contains_key(&c) {
                // Its counts, and the output rows it may become.
                reserve_rows(memory, periods, 8 + OUT_BYTES_PER_ROW)?;
            }
            let entry = cohorts.entry(c).or_insert_with(|| (0, vec![0; periods]));
            entry.0 += 1;
            for (&p, &latest) in &e.returns {
                let offset = p - c;
                if offset >= 0 && offset < self.periods && (offset > 0 || latest >= first) {
                    entry.1[offset as usize] += 1;
                }
            }
        }
        let last_period = self.latest.map(|t| self.period.number(t));
        let (mut cohort, mut period, mut size, mut retained, mut rate) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (c, (n, kept)) in cohorts {
            for (p, k) in kept.into_iter().enumerate() {
                let p = p as i64;
                if last_period.is_some_and(|l| c + p > l) {
                    break;
                }
                let Some(day) = self.period.first_day(c) else {
                    continue;
                };
                cohort.push(day);
                period.push(p);
                size.push(n);
                retained.push(k);
                rate.push(k as f64 / n as f64);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(cohort)),
            Arc::new(Int64Array::from(period)),
            Arc::new(Int64Array::from(size)),
            Arc::new(Int64Array::from(retained)),
            Arc::new(Float64Array::from(rate)),
        ];
        Ok(RecordBatch::try_new(self.out, columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn periods_and_their_first_days() {
        let monday = us("2026-11-23T00:00:00Z");
        let sunday = us("2026-11-29T23:59:59Z");
        assert_eq!(Period::Week.number(monday), Period::Week.number(sunday));
        assert_eq!(
            Period::Week.number(monday) + 1,
            Period::Week.number(us("2026-11-30T00:00:00Z"))
        );
        let d = Period::Week.first_day(Period::Week.number(sunday)).unwrap();
        assert_eq!(i64::from(d) * DAY_US, monday);
        let m = Period::Month.number(us("2026-02-14T12:00:00Z"));
        assert_eq!(
            i64::from(Period::Month.first_day(m).unwrap()) * DAY_US,
            us("2026-02-01T00:00:00Z")
        );
        let old = Period::Month.number(us("1969-07-20T20:17:00Z"));
        assert_eq!(
            i64::from(Period::Month.first_day(old).unwrap()) * DAY_US,
            us("1969-07-01T00:00:00Z")
        );
    }
}
