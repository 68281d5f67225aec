//! Policies as data: who (roles and subjects) may do what (ingest, query,
//! stream, admin) on which tables and event types, which rows of a table
//! they see (row filters), how columns read for them (masks), and how
//! fast they may go (quotas). [`decide`] turns a tenant's policies and a
//! request into a [`decide::Decision`] that says why; [`defaults`] are the
//! policies a new tenant starts with, which grant exactly what the roles
//! grant.
//!
//! Pure data and logic: no SQL is planned here. Row filters and SQL masks
//! are kept as text, planned where tables are read.

pub mod decide;
pub mod defaults;
#[cfg(test)]
mod tests;

use crate::auth::Role;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most patterns in one list of a policy, and masks in one policy.
pub const MAX_PATTERNS: usize = 64;
/// Most characters of a row filter or an SQL mask.
pub const MAX_SQL_CHARS: usize = 4096;

/// A name pattern: `*` matches any run of characters, `?` any one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Glob(pub String);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (self.0.chars().collect(), text.chars().collect());
        // The classic two-pointer match with one backtrack point.
        let (mut i, mut j) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while j < t.len() {
            match p.get(i) {
                Some('*') => {
                    star = Some((i, j));
                    i += 1;
                }
                Some(&c) if c == '?' || c == t[j] => {
                    i += 1;
                    j += 1;
                }
                _ => match star {
                    Some((si, sj)) => {
                        i = si + 1;
                        j = sj + 1;
                        star = Some((si, sj + 1));
                    }
                    None => return false,
                },
            }
        }
        p[i..].iter().all(|c| *c == '*')
    }
}

fn any_matches(globs: &[Glob], text: &str) -> bool {
    globs.iter().any(|g| g.matches(text))
}

/// What a request does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Store events: HTTP, Flight, validate, replay into a table,
    /// pipeline sinks.
    Ingest,
    /// Read with a query: SQL, the DSL, Flight, table functions,
    /// projections.
    #[default]
    Query,
    /// Read a stream: entity streams, live streams, subscriptions,
    /// replay.
    Stream,
    /// Maintenance, settings, schemas, backups.
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::Query => "query",
            Action::Stream => "stream",
            Action::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// Whom a policy applies to: callers whose role is among `roles` (any,
/// when absent) and whose subject matches `subjects` (any, when absent)
/// but none of `except_subjects`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principals {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<BTreeSet<Role>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<Glob>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_subjects: Vec<Glob>,
}

impl Principals {
    /// Why a caller of `role` and `subject` is not among them, if not.
    pub fn mismatch(&self, role: Role, subject: &str) -> Option<String> {
        if let Some(roles) = &self.roles
            && !roles.contains(&role)
        {
            let listed: Vec<String> = roles.iter().map(Role::to_string).collect();
            return Some(format!("role {role} is not in [{}]", listed.join(", ")));
        }
        if let Some(subjects) = &self.subjects
            && !any_matches(subjects, subject)
        {
            return Some(format!(
                "subject {subject:?} matches none of {}",
                listed(subjects)
            ));
        }
        if any_matches(&self.except_subjects, subject) {
            return Some(format!(
                "subject {subject:?} is excepted by {}",
                listed(&self.except_subjects)
            ));
        }
        None
    }
}

fn listed(globs: &[Glob]) -> String {
    let names: Vec<&str> = globs.iter().map(|g| g.0.as_str()).collect();
    format!("[{}]", names.join(", "))
}

/// How a masked column reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mask {
    /// NULL.
    Null,
    /// A keyed hash of the value, as hex text: equal values stay equal.
    Hash,
    /// The first `keep` characters, then `***`.
    Redact { keep: u8 },
    /// An SQL expression over the row, cast to the column's type.
    Sql(String),
}

impl Mask {
    /// How much it hides: when several masks cover a column, the one
    /// that hides most wins.
    pub fn strength(&self) -> u8 {
        match self {
            Mask::Null => 3,
            Mask::Hash => 2,
            Mask::Redact { .. } => 1,
            Mask::Sql(_) => 0,
        }
    }
}

/// Whose use a quota counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// Each matching subject has a quota of its own.
    #[default]
    Subject,
    /// All matching callers share one.
    Shared,
}

fn read_actions() -> BTreeSet<Action> {
    [Action::Query, Action::Stream].into()
}

/// What a policy does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// Allows or denies actions, on every event type or on some.
    Access {
        effect: Effect,
        actions: BTreeSet<Action>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_types: Option<Vec<Glob>>,
    },
    /// The rows a read sees: an SQL boolean over the table's columns.
    RowFilter {
        filter: String,
        #[serde(default = "read_actions")]
        actions: BTreeSet<Action>,
    },
    /// How columns read.
    Mask {
        masks: BTreeMap<String, Mask>,
        #[serde(default = "read_actions")]
        actions: BTreeSet<Action>,
    },
    /// Rates and daily amounts.
    Quota {
        #[serde(default)]
        scope: QuotaScope,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events_per_second: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queries_per_second: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events_per_day: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queries_per_day: Option<u64>,
    },
}

impl Rule {
    /// Its kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Access { .. } => "access",
            Rule::RowFilter { .. } => "row_filter",
            Rule::Mask { .. } => "mask",
            Rule::Quota { .. } => "quota",
        }
    }

    /// Whether it applies to `action` (quotas to ingest and query).
    pub fn covers(&self, action: Action) -> bool {
        match self {
            Rule::Access { actions, .. }
            | Rule::RowFilter { actions, .. }
            | Rule::Mask { actions, .. } => actions.contains(&action),
            Rule::Quota { .. } => matches!(action, Action::Ingest | Action::Query),
        }
    }
}

fn yes() -> bool {
    true
}

fn every_table() -> Vec<Glob> {
    vec![Glob::new("*")]
}

/// One policy of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub principals: Principals,
    /// The tables it covers: patterns over the tenant's table names;
    /// `system.<t>` and `projections.<p>` are named with their schema.
    #[serde(default = "every_table")]
    pub tables: Vec<Glob>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_tables: Vec<Glob>,
    #[serde(flatten)]
    pub rule: Rule,
}

impl Policy {
    /// Why `table` is not among its tables, if not.
    pub fn table_mismatch(&self, table: &str) -> Option<String> {
        if !any_matches(&self.tables, table) {
            return Some(format!(
                "table {table:?} matches none of {}",
                listed(&self.tables)
            ));
        }
        if any_matches(&self.except_tables, table) {
            return Some(format!(
                "table {table:?} is excepted by {}",
                listed(&self.except_tables)
            ));
        }
        None
    }

    /// Checks what can be checked without a table: the name, the sizes
    /// of lists and texts, and that the rule says something. The error
    /// names the place (`masks.phone`).
    pub fn check_shape(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "name: {:?} is not a policy name (a lower-case letter, then up to 63 lower-case letters, digits or _)",
                self.name
            ));
        }
        let lists: [(&str, usize); 4] = [
            ("tables", self.tables.len()),
            ("except_tables", self.except_tables.len()),
            (
                "principals.subjects",
                self.principals.subjects.as_ref().map_or(0, Vec::len),
            ),
            (
                "principals.except_subjects",
                self.principals.except_subjects.len(),
            ),
        ];
        for (what, n) in lists {
            if n > MAX_PATTERNS {
                return Err(format!("{what}: {n} patterns; at most {MAX_PATTERNS}"));
            }
        }
        if self.tables.is_empty() {
            return Err("tables: give at least one pattern (\"*\" for every table)".into());
        }
        match &self.rule {
            Rule::Access {
                actions,
                event_types,
                ..
            } => {
                if actions.is_empty() {
                    return Err("actions: give at least one of ingest, query, stream, admin".into());
                }
                if event_types
                    .as_ref()
                    .is_some_and(|t| t.is_empty() || t.len() > MAX_PATTERNS)
                {
                    return Err(format!(
                        "event_types: give 1 to {MAX_PATTERNS} patterns, or leave it out for every type"
                    ));
                }
            }
            Rule::RowFilter { filter, actions } => {
                check_sql("filter", filter)?;
                check_read_actions(actions)?;
            }
            Rule::Mask { masks, actions } => {
                if masks.is_empty() || masks.len() > MAX_PATTERNS {
                    return Err(format!("masks: give 1 to {MAX_PATTERNS} columns"));
                }
                for (column, mask) in masks {
                    if column == crate::schema::POSITION {
                        return Err(format!(
                            "masks.{column}: positions cannot be masked (streams page by them)"
                        ));
                    }
                    if let Mask::Sql(sql) = mask {
                        check_sql(&format!("masks.{column}.sql"), sql)?;
                    }
                }
                check_read_actions(actions)?;
            }
            Rule::Quota {
                events_per_second,
                queries_per_second,
                events_per_day,
                queries_per_day,
                ..
            } => {
                let zero = [
                    events_per_second.map(u64::from),
                    queries_per_second.map(u64::from),
                    *events_per_day,
                    *queries_per_day,
                ]
                .contains(&Some(0));
                if zero {
                    return Err("a quota of 0 would refuse everything; deny the action with an access policy instead".into());
                }
                if self.tables.iter().any(|t| t.0 != "*") || !self.except_tables.is_empty() {
                    return Err("tables: a quota counts every request of the callers it covers, whatever tables it names (a query's tables are known only once it is planned); leave tables and except_tables out".into());
                }
            }
        }
        Ok(())
    }
}

/// The fields a policy of each kind may have.
const COMMON_FIELDS: &[&str] = &[
    "name",
    "description",
    "enabled",
    "principals",
    "tables",
    "except_tables",
    "kind",
];

fn kind_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "access" => &["effect", "actions", "event_types"],
        "row_filter" => &["filter", "actions"],
        "mask" => &["masks", "actions"],
        "quota" => &[
            "scope",
            "events_per_second",
            "queries_per_second",
            "events_per_day",
            "queries_per_day",
        ],
        _ => return None,
    })
}

/// A policy from its JSON, with every field known to its kind (a
/// misspelt `principals` must not widen a policy to everyone) and its
/// shape checked. The error names the field.
pub fn parse(value: serde_json::Value) -> Result<Policy, String> {
    let serde_json::Value::Object(fields) = &value else {
        return Err("a policy is a JSON object".into());
    };
    let kind = match fields.get("kind") {
        Some(serde_json::Value::String(k)) => k.as_str(),
        Some(_) => return Err("kind: give one of access, row_filter, mask, quota".into()),
        None => return Err("kind: missing; give one of access, row_filter, mask, quota".into()),
    };
    let Some(own) = kind_fields(kind) else {
        return Err(format!(
            "kind: {kind:?} is not one of access, row_filter, mask, quota"
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !COMMON_FIELDS.contains(&k.as_str()) && !own.contains(&k.as_str()))
    {
        return Err(format!(
            "{unknown}: not a field of a {kind} policy (it has {}, {})",
            COMMON_FIELDS.join(", "),
            own.join(", ")
        ));
    }
    let policy: Policy = serde_json::from_value(value).map_err(|e| e.to_string())?;
    policy.check_shape()?;
    Ok(policy)
}

fn check_sql(what: &str, sql: &str) -> Result<(), String> {
    if sql.trim().is_empty() || sql.chars().count() > MAX_SQL_CHARS {
        return Err(format!(
            "{what}: give an SQL expression of 1 to {MAX_SQL_CHARS} characters"
        ));
    }
    Ok(())
}

fn check_read_actions(actions: &BTreeSet<Action>) -> Result<(), String> {
    if actions.is_empty()
        || actions
            .iter()
            .any(|a| !matches!(a, Action::Query | Action::Stream))
    {
        return Err("actions: row filters and masks apply to query and stream".into());
    }
    Ok(())
}

/// Whether `name` can name a policy: `[a-z][a-z0-9_]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
