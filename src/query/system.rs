//! The `system` schema of a tenant's catalog: `system.tables`,
//! `system.files`, `system.compactions`, `system.subscriptions`, the
//! upper layer's `system.projections` (and for admins `system.audit`),
//! built from the tables' current
//! Delta snapshots and the maintenance history when a query names them.

use crate::db::Database;
use crate::ids::TenantId;
use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::Result;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The system tables of one tenant.
#[derive(Debug)]
pub(crate) struct SystemSchema {
    pub(crate) db: Arc<Database>,
    pub(crate) tenant: TenantId,
    /// Admins also see `system.audit`, the server's audit log.
    pub(crate) admin: bool,
    /// The layer above the engine's own system table
    /// (`system.projections`).
    pub(crate) extra: Option<Arc<dyn super::ExtraSchema>>,
    /// The other tables the layers above offer (`system.pipelines`).
    pub(crate) more: Vec<Arc<dyn super::SystemTable>>,
    /// Whose policies decide which system tables, and which tables' rows
    /// in them, the session sees.
    pub(crate) caller: crate::auth::Principal,
    pub(crate) action: crate::policy::Action,
    pub(crate) denials: Option<Arc<crate::audit::DenialLog>>,
}

const NAMES: [&str; 4] = ["tables", "files", "compactions", "subscriptions"];

impl SystemSchema {
    /// The tenant's tables whose rows the caller reads unrestricted: the
    /// only ones the system tables describe (their counts, files and
    /// runs would tell of hidden rows).
    fn described(&self) -> Vec<String> {
        let mut names = self.db.table_names(&self.tenant);
        names.retain(|t| {
            let (_, d) = super::policy::decide_for(&self.db, &self.caller, self.action, t);
            d.allowed && d.restriction.is_none()
        });
        names
    }

    /// `table` (another layer's system table) with only the rows about
    /// tables the caller reads unrestricted: those whose `table_name`,
    /// `source_table` and `sink_table` (whichever it has) are all such.
    fn describing_only(&self, table: Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, in_list, lit};
        let schema = table.schema();
        let columns: Vec<&str> = ["table_name", "source_table", "sink_table"]
            .into_iter()
            .filter(|c| schema.index_of(c).is_ok())
            .collect();
        let described = self.described();
        // A caller who reads every table unrestricted sees every row
        // (a pipeline's sink may be a table not made yet).
        if columns.is_empty() || described.len() == self.db.table_names(&self.tenant).len() {
            return Ok(table);
        }
        let described: Vec<Expr> = described.into_iter().map(lit).collect();
        let condition = columns
            .into_iter()
            .map(|c| match described.is_empty() {
                true => lit(false),
                false => in_list(col(c), described.clone(), false),
            })
            .reduce(Expr::and)
            .unwrap_or(lit(true));
        let source = datafusion::datasource::provider_as_source(table);
        let plan = LogicalPlanBuilder::scan("system_rows", source, None)?
            .filter(condition)?
            .build()?;
        Ok(Arc::new(datafusion::catalog::view::ViewTable::new(
            plan, None,
        )))
    }

    /// Why `system.<name>` may not be read, if it may not.
    fn refusal(&self, name: &str) -> Option<String> {
        let qualified = format!("system.{name}");
        let (_, d) = super::policy::decide_for(&self.db, &self.caller, self.action, &qualified);
        (!d.allowed).then_some(d.because)
    }

    /// The audit log as a query sees it now (buffer and Delta together).
    fn audit_table(&self) -> Option<Arc<dyn TableProvider>> {
        if !self.admin {
            return None;
        }
        let (tenant, table) = crate::audit::location();
        let t = self.db.table(&tenant, &table)?;
        Some(Arc::new(super::table::EventTable::from_view(
            self.db.view(&t),
        )))
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn table(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// One file of a table's current snapshot.
struct FileRow {
    table: String,
    partition: String,
    path: String,
    bytes: u64,
    rows: Option<u64>,
    modified_ms: i64,
}

impl SystemSchema {
    fn files(&self) -> Vec<FileRow> {
        let mut out = Vec::new();
        for name in self.described() {
            let Ok(n) = name.parse() else { continue };
            let Some(t) = self.db.table(&self.tenant, &n) else {
                continue;
            };
            let delta = t.delta();
            let Ok(snapshot) = delta.snapshot() else {
                continue;
            };
            for f in snapshot.log_data().iter() {
                out.push(FileRow {
                    table: name.clone(),
                    partition: f
                        .partition_values_map()
                        .get(crate::storage::PARTITION_COLUMN)
                        .cloned()
                        .flatten()
                        .unwrap_or_default(),
                    path: f.path().to_string(),
                    bytes: f.size().max(0) as u64,
                    rows: f.num_records().map(|n| n as u64),
                    modified_ms: f.modification_time(),
                });
            }
        }
        out
    }

    fn files_table(&self) -> Result<Arc<dyn TableProvider>> {
        let rows = self.files();
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("partition", DataType::Utf8, false),
            Field::new("path", DataType::Utf8, false),
            Field::new("bytes", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, true),
            Field::new("modified", ts_type(), false),
        ]));
        table(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.table))),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| &r.partition),
                )),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.path))),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.bytes))),
                Arc::new(rows.iter().map(|r| r.rows).collect::<UInt64Array>()),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.modified_ms))
                        .with_timezone("UTC"),
                ),
            ],
        )
    }

    fn tables_table(&self) -> Result<Arc<dyn TableProvider>> {
        let files = self.files();
        let history = self.db.maintenance_history().runs(&self.tenant);
        let names = self.described();
        // file count, bytes, rows, partitions, buffered rows
        let mut counts: [Vec<u64>; 5] = Default::default();
        let mut last: Vec<Option<i64>> = Vec::new();
        for name in &names {
            let mine: Vec<&FileRow> = files.iter().filter(|f| &f.table == name).collect();
            let partitions: BTreeSet<&str> = mine.iter().map(|f| f.partition.as_str()).collect();
            let buffered = name
                .parse()
                .ok()
                .and_then(|n| self.db.table(&self.tenant, &n))
                .map_or(0, |t| t.buffered_rows() as u64);
            counts[0].push(mine.len() as u64);
            counts[1].push(mine.iter().map(|f| f.bytes).sum());
            counts[2].push(mine.iter().filter_map(|f| f.rows).sum());
            counts[3].push(partitions.len() as u64);
            counts[4].push(buffered);
            last.push(
                history
                    .iter()
                    .rev()
                    .find(|r| &r.table == name && !r.dry_run)
                    .and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.started_at).ok())
                    .map(|t| t.timestamp_millis()),
            );
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("files", DataType::UInt64, false),
            Field::new("bytes", DataType::UInt64, false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("partitions", DataType::UInt64, false),
            Field::new("buffered_rows", DataType::UInt64, false),
            Field::new("last_compaction", ts_type(), true),
        ]));
        table(
            schema,
            vec![
                Arc::new(StringArray::from(names.clone())),
                Arc::new(UInt64Array::from(std::mem::take(&mut counts[0]))),
                Arc::new(UInt64Array::from(std::mem::take(&mut counts[1]))),
                Arc::new(UInt64Array::from(std::mem::take(&mut counts[2]))),
                Arc::new(UInt64Array::from(std::mem::take(&mut counts[3]))),
                Arc::new(UInt64Array::from(std::mem::take(&mut counts[4]))),
                Arc::new(TimestampMillisecondArray::from(last).with_timezone("UTC")),
            ],
        )
    }

    /// The tenant's durable subscriptions and how far behind they are.
    fn subscriptions_table(&self) -> Result<Arc<dyn TableProvider>> {
        let described = self.described();
        let mut groups = self.db.groups().list(&self.tenant);
        groups.retain(|g| described.iter().any(|t| *t == g.def.table.as_str()));
        let progress: Vec<_> = groups.iter().map(|g| g.progress()).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("filter", DataType::Utf8, true),
            Field::new("committed_position", DataType::UInt64, false),
            Field::new("generation", DataType::UInt64, false),
            Field::new("consumers", DataType::UInt64, false),
            Field::new("lag_positions", DataType::UInt64, false),
            Field::new("created", ts_type(), false),
        ]));
        table(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    groups.iter().map(|g| g.name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    groups.iter().map(|g| g.def.table.as_str()),
                )),
                Arc::new(StringArray::from_iter(
                    groups.iter().map(|g| g.def.filter.as_deref()),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    progress.iter().map(|p| p.done()),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    progress.iter().map(|p| p.generation),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    groups.iter().map(|g| g.member_count() as u64),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    groups.iter().map(|g| g.lag_positions(&self.db)),
                )),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        groups.iter().map(|g| g.def.created_ms),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
    }

    fn compactions_table(&self) -> Result<Arc<dyn TableProvider>> {
        let described = self.described();
        let mut runs = self.db.maintenance_history().runs(&self.tenant);
        runs.retain(|r| described.contains(&r.table));
        let started: Vec<Option<i64>> = runs
            .iter()
            .map(|r| {
                chrono::DateTime::parse_from_rfc3339(&r.started_at)
                    .ok()
                    .map(|t| t.timestamp_millis())
            })
            .collect();
        let u = |f: &dyn Fn(&crate::db::maintenance::MaintenanceReport) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(runs.iter().map(f)))
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("started", ts_type(), true),
            Field::new("duration_ms", DataType::UInt64, false),
            Field::new("entity_copy_ms", DataType::UInt64, false),
            Field::new("partitions", DataType::UInt64, false),
            Field::new("files_in", DataType::UInt64, false),
            Field::new("bytes_in", DataType::UInt64, false),
            Field::new("files_out", DataType::UInt64, false),
            Field::new("bytes_out", DataType::UInt64, false),
            Field::new("retention_files_removed", DataType::UInt64, false),
            Field::new("vacuumed_files", DataType::UInt64, false),
            Field::new("checkpoint", DataType::Boolean, false),
            Field::new("outcome", DataType::Utf8, false),
        ]));
        table(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(runs.iter().map(|r| &r.table))),
                Arc::new(TimestampMillisecondArray::from(started).with_timezone("UTC")),
                u(&|r| r.duration_ms),
                u(&|r| r.entity_copy_ms),
                u(&|r| r.partitions as u64),
                u(&|r| r.files_in),
                u(&|r| r.bytes_in),
                u(&|r| r.files_out),
                u(&|r| r.bytes_out),
                u(&|r| r.retention_files_removed),
                u(&|r| r.vacuumed_files),
                Arc::new(BooleanArray::from_iter(
                    runs.iter().map(|r| Some(r.checkpoint)),
                )),
                Arc::new(StringArray::from_iter_values(
                    runs.iter().map(|r| r.outcome.to_string()),
                )),
            ],
        )
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        if let Some(extra) = &self.extra {
            names.push(extra.system_table_name().to_string());
        }
        names.extend(self.more.iter().map(|t| t.name().to_string()));
        if self.admin {
            names.push(crate::audit::AUDIT_TABLE.into());
        }
        names.retain(|n| self.refusal(n).is_none());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.table_exist(name)
            && let Some(because) = self.refusal(name)
        {
            let qualified = format!("system.{name}");
            return Err(super::policy::denial(
                self.denials.as_ref(),
                &self.caller,
                self.action,
                &qualified,
                because,
            ));
        }
        Ok(Some(match name {
            "tables" => self.tables_table()?,
            "files" => self.files_table()?,
            "compactions" => self.compactions_table()?,
            "subscriptions" => self.subscriptions_table()?,
            crate::audit::AUDIT_TABLE => return Ok(self.audit_table()),
            _ => match &self.extra {
                Some(extra) if extra.system_table_name() == name => {
                    self.describing_only(extra.system_table(&self.tenant)?)?
                }
                _ => match self.more.iter().find(|t| t.name() == name) {
                    Some(t) => self.describing_only(t.for_tenant(&self.tenant)?)?,
                    None => return Ok(None),
                },
            },
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        NAMES.contains(&name)
            || (name == crate::audit::AUDIT_TABLE && self.admin)
            || self
                .extra
                .as_ref()
                .is_some_and(|e| e.system_table_name() == name)
            || self.more.iter().any(|t| t.name() == name)
    }
}
