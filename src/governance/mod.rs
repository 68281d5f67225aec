//! Table governance compiled: a [`TableChecker`] holds, per governed event
//! type, the rules of its latest schema version, ready to run over a built
//! batch (the database calls it through [`BatchCheck`] before logging).
//!
//! A check groups the batch's rows by event type (one hash per run of
//! equal types), runs each rule as one pass over one column, and gathers
//! every violation of the request with its path. Any `reject` violation
//! refuses the whole batch; otherwise rows with `warn` violations carry
//! the rules' names in `_violations`.

mod migrating;
mod rules;
#[cfg(test)]
mod tests;

use crate::ingest::{BatchCheck, Checked, Facts};
use crate::schema::governed::{
    self, Additional, FieldType, Mode, SchemaVersion, TableGovernance, Violation, Violations,
};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::session_state::SessionState;
use rules::{Kind, Rows, Rule};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A table's rules, compiled.
#[derive(Debug)]
pub struct TableChecker {
    table: String,
    allowed: Option<Allowed>,
    types: HashMap<String, TypeChecker>,
    /// The table's migrations, run over events declared at an older
    /// version.
    migrating: Option<migrating::Migrating>,
}

/// The live versions of one event type.
#[derive(Debug)]
struct TypeChecker {
    latest: u32,
    versions: HashMap<u32, Arc<VersionChecker>>,
    /// `1, 2, 3`, for messages.
    listed: String,
}

/// A row's event type and the schema version it declares.
type TypeKey<'a> = (&'a str, Option<u32>);

/// Where a row's rules come from.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Its type has no schema.
    Ungoverned,
    /// The version it declares is not a live one.
    Unknown,
    /// The group of rows checked against one version.
    Group(usize),
}

#[derive(Debug)]
struct Allowed {
    types: HashSet<String>,
    mode: Mode,
    listed: String,
}

/// The rules of one version of one event type.
#[derive(Debug)]
struct VersionChecker {
    event_type: String,
    version: u32,
    label: String,
    declared: HashSet<String>,
    rules: Vec<Rule>,
    sql_input: SchemaRef,
    /// The columns its SQL rules read.
    sql_reads: Vec<String>,
}

/// The columns every SQL rule may read besides the declared fields.
const SQL_FIXED: [&str; 4] = [
    crate::schema::EVENT_ID,
    crate::schema::EVENT_TYPE,
    crate::schema::ENTITY_ID,
    crate::schema::TIMESTAMP,
];

impl TableChecker {
    /// Compiles `gov`, the governance of table `table`. SQL rules are
    /// planned in `session` (its functions). The error names the place:
    /// `purchase.v2.rules[0].check: …`.
    pub fn compile(
        table: &str,
        gov: &TableGovernance,
        session: &SessionState,
    ) -> Result<Self, String> {
        let allowed = gov.event_types.as_ref().map(|a| Allowed {
            types: a.allowed.iter().cloned().collect(),
            mode: a.mode,
            listed: a.allowed.iter().cloned().collect::<Vec<_>>().join(", "),
        });
        let mut types = HashMap::new();
        for event_type in gov.types.keys() {
            let mut versions = HashMap::new();
            for v in gov.live(event_type) {
                let checker = VersionChecker::compile(event_type, v, session)?;
                versions.insert(v.version, Arc::new(checker));
            }
            let Some(latest) = gov.latest(event_type) else {
                continue;
            };
            let listed = gov.live(event_type).map(|v| v.version.to_string());
            types.insert(
                event_type.clone(),
                TypeChecker {
                    latest: latest.version,
                    versions,
                    listed: listed.collect::<Vec<_>>().join(", "),
                },
            );
        }
        Ok(TableChecker {
            table: table.to_string(),
            allowed,
            types,
            migrating: migrating::Migrating::new(gov, session),
        })
    }

    /// Every violation in `batch` (row `i` is the request's event
    /// `index[i]`), the `_violations` column its rows get (when any row
    /// broke a `warn` rule) and its `schema_version` column: each row's
    /// declared version, or its type's latest, or null when its type has
    /// no schema.
    pub fn inspect(
        &self,
        batch: &RecordBatch,
        facts: &Facts,
        index: &[u64],
    ) -> (Violations, Option<ArrayRef>, ArrayRef) {
        let rows = batch.num_rows();
        let types = batch.column(1).as_string::<i32>();
        let declared = batch
            .column_by_name(governed::SCHEMA_VERSION)
            .and_then(|c| c.as_primitive_opt::<Int64Type>());
        let declared_of = |row: usize| {
            declared
                .filter(|d| d.is_valid(row))
                .map(|d| u32::try_from(d.value(row)).unwrap_or(u32::MAX))
        };
        // (batch row, order of the rule, violation)
        let mut found: Vec<(u32, usize, Violation)> = Vec::new();
        let mut groups: Vec<(Arc<VersionChecker>, Vec<u32>)> = Vec::new();
        let mut stamped: Vec<Option<i64>> = Vec::with_capacity(rows);
        // Per (event type, declared version): its slot, and whether the
        // type is allowed, looked up once per distinct key.
        let mut slot_of: HashMap<TypeKey, (Slot, bool), foldhash::fast::RandomState> =
            HashMap::default();
        let mut last: Option<(TypeKey, (Slot, bool))> = None;
        for (row, &at) in index.iter().enumerate().take(rows) {
            let event_type = types.value(row);
            let key = (event_type, declared_of(row));
            let (slot, allowed_type) = match last {
                Some((k, found)) if k == key => found,
                _ => {
                    let found = *slot_of.entry(key).or_insert_with(|| {
                        let allowed = self
                            .allowed
                            .as_ref()
                            .is_none_or(|a| a.types.contains(event_type));
                        let Some(t) = self.types.get(event_type) else {
                            return (Slot::Ungoverned, allowed);
                        };
                        let slot = match t.versions.get(&key.1.unwrap_or(t.latest)) {
                            Some(checker) => {
                                groups.push((checker.clone(), Vec::new()));
                                Slot::Group(groups.len() - 1)
                            }
                            None => Slot::Unknown,
                        };
                        (slot, allowed)
                    });
                    last = Some((key, found));
                    found
                }
            };
            if let Some(allowed) = self.allowed.as_ref().filter(|_| !allowed_type) {
                found.push((
                    row as u32,
                    0,
                    self.violation(at, "event_type", "event_types", allowed.mode, event_type, {
                        format!(
                            "{} is not an event type of table {} (allowed: {})",
                            rules::shown(&serde_json::Value::from(event_type)),
                            self.table,
                            allowed.listed
                        )
                    }),
                ));
            }
            match slot {
                Slot::Group(g) => {
                    groups[g].1.push(row as u32);
                    stamped.push(Some(i64::from(groups[g].0.version)));
                }
                Slot::Ungoverned => stamped.push(None),
                Slot::Unknown => {
                    stamped.push(None);
                    let t = &self.types[event_type];
                    let message = format!(
                        "{event_type} has no version {} (live: {})",
                        key.1.unwrap_or(0),
                        t.listed
                    );
                    found.push((
                        row as u32,
                        0,
                        self.violation(
                            at,
                            "schema_version",
                            "schema_version",
                            Mode::Reject,
                            event_type,
                            message,
                        ),
                    ));
                }
            }
        }
        let overflow = rules::overflow_of(batch);
        let ranges = std::cell::RefCell::new(HashMap::new());
        for (checker, members) in &groups {
            let older = self.types[&checker.event_type].latest > checker.version;
            if let Some(m) = self.migrating.as_ref().filter(|_| older) {
                for (row, why) in m.failures(batch, members) {
                    let at = index[row as usize];
                    let mut v = self.violation(at, "payload", "migration", Mode::Reject, &checker.event_type, {
                        format!(
                            "an event of {} v{} must read at the latest version, and its migration fails: {why}",
                            checker.event_type, checker.version
                        )
                    });
                    v.path = format!("$[{at}]");
                    v.schema_version = Some(checker.version);
                    found.push((row, usize::MAX, v));
                }
            }
            let all = members.len() == rows;
            let take = (!all).then(|| UInt32Array::from(members.clone()));
            let view = Rows {
                batch,
                members,
                take: take.as_ref(),
                overflow: &overflow,
                nested: &facts.nested,
                declared: &checker.declared,
                label: &checker.label,
                sql_input: &checker.sql_input,
                sql_reads: &checker.sql_reads,
                sql_batch: Default::default(),
                ranges: &ranges,
            };
            for (order, rule) in checker.rules.iter().enumerate() {
                for broken in rule.run(&view) {
                    let batch_row = members[broken.row];
                    let at = index[batch_row as usize];
                    found.push((
                        batch_row,
                        order + 1,
                        Violation {
                            index: at,
                            path: format!("$[{at}]{}", broken.at),
                            rule: rule.name.clone(),
                            mode: rule.mode,
                            event_type: checker.event_type.clone(),
                            schema_version: Some(checker.version),
                            message: broken.message,
                            fields: broken.fields,
                        },
                    ));
                }
            }
        }
        found.sort_by(|a, b| (a.2.index, a.1, &a.2.path).cmp(&(b.2.index, b.1, &b.2.path)));
        let mut out = Violations::new(&self.table);
        let mut marks: HashMap<u32, Vec<String>> = HashMap::new();
        let mut i = 0;
        while i < found.len() {
            let index = found[i].2.index;
            let mut rejects = false;
            while i < found.len() && found[i].2.index == index {
                let (row, _, v) = &found[i];
                match v.mode {
                    Mode::Reject => rejects = true,
                    Mode::Warn => {
                        let names = marks.entry(*row).or_default();
                        if !names.contains(&v.rule) {
                            names.push(v.rule.clone());
                        }
                    }
                }
                out.push(v.clone());
                i += 1;
            }
            match rejects {
                true => out.rejected += 1,
                false => out.warned += 1,
            }
        }
        let stamped = Arc::new(Int64Array::from(stamped)) as ArrayRef;
        let column = (!marks.is_empty()).then(|| {
            let text: StringArray = (0..rows as u32)
                .map(|r| {
                    marks
                        .get(&r)
                        .map(|names| serde_json::Value::from(names.clone()).to_string())
                })
                .collect();
            Arc::new(text) as ArrayRef
        });
        (out, column, stamped)
    }

    /// A violation of a rule of the table rather than of a version.
    fn violation(
        &self,
        at: u64,
        key: &str,
        rule: &str,
        mode: Mode,
        event_type: &str,
        message: String,
    ) -> Violation {
        Violation {
            index: at,
            path: format!("$[{at}].{key}"),
            rule: rule.into(),
            mode,
            event_type: event_type.to_string(),
            schema_version: None,
            message,
            fields: Vec::new(),
        }
    }
}

impl BatchCheck for TableChecker {
    fn check(
        &self,
        batch: RecordBatch,
        facts: &Facts,
        index: &[u64],
    ) -> Result<Checked, Box<Violations>> {
        let (violations, marks, stamped) = self.inspect(&batch, facts, index);
        if violations.refuses() {
            return Err(Box::new(violations));
        }
        let warnings = (violations.total > 0).then_some(violations);
        let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
        let mut columns = batch.columns().to_vec();
        let mut set = |name: &str, column: ArrayRef| {
            let field = Arc::new(Field::new(name, column.data_type().clone(), true));
            match fields.iter().position(|f| f.name() == name) {
                Some(i) => {
                    fields[i] = field;
                    columns[i] = column;
                }
                None => {
                    fields.push(field);
                    columns.push(column);
                }
            }
        };
        set(governed::SCHEMA_VERSION, stamped);
        if let Some(marks) = marks {
            set(governed::VIOLATIONS, marks);
        }
        // The columns are built for this batch's rows, so they fit; were
        // they not to, the rows are stored unmarked (the reply still
        // warns).
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap_or(batch);
        Ok(Checked { batch, warnings })
    }
}

impl VersionChecker {
    fn compile(
        event_type: &str,
        v: &SchemaVersion,
        session: &SessionState,
    ) -> Result<Self, String> {
        let def = &v.def;
        let at = |rest: &str| format!("{event_type}.v{}.{rest}", v.version);
        let mut rules = Vec::new();
        let mut sql_fields: Vec<Field> = SQL_FIXED
            .iter()
            .map(|name| {
                let fixed = crate::schema::fixed_fields();
                fixed
                    .into_iter()
                    .find(|f| f.name() == name)
                    .expect("a fixed column")
                    .with_nullable(true)
            })
            .collect();
        for (field, spec) in &def.fields {
            let mode = |check: &str| def.mode_of(field, spec, check);
            let rule = |check: &str, kind: Kind| Rule {
                name: governed::rule_name(field, check),
                mode: mode(check),
                kind,
            };
            if spec.required {
                rules.push(rule("required", Kind::Required(field.clone())));
            }
            if let Some(kind) = spec.field_type.column_kind() {
                rules.push(rule("type", Kind::Type(field.clone(), spec.field_type)));
                sql_fields.push(Field::new(field, kind.data_type(), true));
            }
            let low = spec
                .min
                .map(|b| (b, false))
                .or(spec.exclusive_min.map(|b| (b, true)));
            if let Some((bound, exclusive)) = low {
                rules.push(rule(
                    "min",
                    Kind::Min {
                        field: field.clone(),
                        bound,
                        exclusive,
                    },
                ));
            }
            let high = spec
                .max
                .map(|b| (b, false))
                .or(spec.exclusive_max.map(|b| (b, true)));
            if let Some((bound, exclusive)) = high {
                rules.push(rule(
                    "max",
                    Kind::Max {
                        field: field.clone(),
                        bound,
                        exclusive,
                    },
                ));
            }
            if let Some(values) = &spec.one_of {
                let shown = values
                    .iter()
                    .map(rules::shown)
                    .collect::<Vec<_>>()
                    .join(", ");
                let field = field.clone();
                let kind = match spec.field_type {
                    FieldType::String => Kind::EnumText {
                        field,
                        values: values
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect(),
                        shown,
                    },
                    FieldType::Boolean => Kind::EnumBool {
                        field,
                        values: values.iter().filter_map(|v| v.as_bool()).collect(),
                        shown,
                    },
                    _ => Kind::EnumNumber {
                        field,
                        values: values.iter().filter_map(|v| v.as_f64()).collect(),
                        shown,
                    },
                };
                rules.push(rule("enum", kind));
            }
            if let Some(pattern) = &spec.pattern {
                let regex = regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("{}: {e}", at(&format!("fields.{field}.pattern"))))?;
                rules.push(rule(
                    "pattern",
                    Kind::Pattern {
                        field: field.clone(),
                        regex,
                    },
                ));
            }
            if spec.min_length.is_some() || spec.max_length.is_some() {
                let kind = Kind::Length {
                    field: field.clone(),
                    min: spec.min_length,
                    max: spec.max_length,
                };
                rules.push(rule("length", kind));
            }
        }
        if def.additional_fields != Additional::Allow {
            rules.push(Rule {
                name: "additional_fields".into(),
                mode: match def.additional_fields {
                    Additional::Warn => Mode::Warn,
                    _ => Mode::Reject,
                },
                kind: Kind::Additional,
            });
        }
        let sql_input = Arc::new(Schema::new(sql_fields));
        for (i, custom) in def.rules.iter().enumerate() {
            let (expr, fields) = sql_rule(&custom.check, &sql_input, session)
                .map_err(|e| format!("{}: {e}", at(&format!("rules[{i}].check"))))?;
            rules.push(Rule {
                name: custom.name.clone(),
                mode: custom.mode.unwrap_or(def.mode),
                kind: Kind::Sql {
                    expr,
                    check: custom.check.clone(),
                    message: custom.message.clone(),
                    fields,
                },
            });
        }
        let mut sql_reads: Vec<String> = rules
            .iter()
            .flat_map(|r| match &r.kind {
                Kind::Sql { fields, .. } => fields.clone(),
                _ => Vec::new(),
            })
            .collect();
        sql_reads.sort();
        sql_reads.dedup();
        Ok(VersionChecker {
            event_type: event_type.to_string(),
            version: v.version,
            label: format!("{event_type} v{}", v.version),
            declared: def.fields.keys().cloned().collect(),
            rules,
            sql_input,
            sql_reads,
        })
    }
}

/// A custom rule's SQL as an expression over `input`, with the columns it
/// reads: boolean, and the same for the same row (no subquery, aggregate,
/// window or function of the clock).
fn sql_rule(
    check: &str,
    input: &SchemaRef,
    session: &SessionState,
) -> Result<
    (
        Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        Vec<String>,
    ),
    String,
> {
    use datafusion::logical_expr::ExprSchemable;
    let schema = DFSchema::try_from(input.as_ref().clone()).map_err(|e| e.to_string())?;
    let expr = session
        .create_logical_expr(check, &schema)
        .map_err(|e| e.to_string())?;
    if !crate::query::live::always_the_same(&expr) {
        return Err(
            "a rule must give the same answer for the same event: no subquery, aggregate, window, placeholder or function of the clock or chance".into(),
        );
    }
    let ty = expr.get_type(&schema).map_err(|e| e.to_string())?;
    if !matches!(ty, DataType::Boolean | DataType::Null) {
        return Err(format!("must be a boolean expression; it gives {ty}"));
    }
    let mut fields: Vec<String> = expr
        .column_refs()
        .into_iter()
        .map(|c| c.name.clone())
        .collect();
    fields.sort();
    let expr = physical(expr, &schema, session).map_err(|e| e.to_string())?;
    Ok((expr, fields))
}

/// `expr` over `schema` as a physical expression: coerced and simplified
/// first, as a query's plan is (some functions, `coalesce` and
/// `arrow_cast` among them, exist only to be rewritten by the
/// simplifier).
fn physical(
    expr: datafusion::logical_expr::Expr,
    schema: &DFSchema,
    session: &SessionState,
) -> datafusion::error::Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    use datafusion::logical_expr::simplify::SimplifyContext;
    use datafusion::optimizer::simplify_expressions::ExprSimplifier;
    let context = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .with_config_options(Arc::clone(session.config_options()))
        .build();
    let simplifier = ExprSimplifier::new(context);
    let expr = simplifier.simplify(simplifier.coerce(expr, schema)?)?;
    session.create_physical_expr(expr, schema)
}
