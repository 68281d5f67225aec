//! What a table's governance says, as data: the event types it allows,
//! and per event type a list of schema versions, each with its declared
//! fields and rules. Also what a check finds: [`Violation`]s, gathered
//! into [`Violations`] when a request is refused, or a [`WarnSummary`]
//! when it is stored with warnings.
//!
//! This module holds no logic beyond the checks of a definition's shape
//! ([`VersionDef::check_shape`]); rules are compiled and run above the
//! database, which only knows them through the ingest layer's
//! `BatchCheck` trait.

pub use super::violations::{MAX_LISTED, MAX_WARNINGS_LISTED, Violation, Violations, WarnSummary};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Columns a governed table gets from the server, never from a payload:
/// a payload field of one of these names goes to `_overflow`.
pub const SCHEMA_VERSION: &str = "schema_version";
/// Per row, the names of the `warn` rules it broke (a JSON array), or
/// null when it broke none.
pub const VIOLATIONS: &str = "_violations";
/// Both reserved names.
pub const RESERVED_COLUMNS: [&str; 2] = [SCHEMA_VERSION, VIOLATIONS];

/// What happens to an event that breaks a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The whole request is refused, and nothing of it stored.
    #[default]
    Reject,
    /// The event is stored, and the rule's name kept in its
    /// `_violations`, counted and shown in the reply.
    Warn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Reject => "reject",
            Mode::Warn => "warn",
        }
    }
}

/// What happens to payload fields a version does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Additional {
    #[default]
    Allow,
    Warn,
    Reject,
}

/// The type a declared field's values must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    /// Any JSON value; only `required` applies.
    Any,
}

impl FieldType {
    /// The type's name with its article, for messages.
    pub fn described(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Number => "a number",
            FieldType::Integer => "an integer",
            FieldType::Boolean => "a boolean",
            FieldType::Object => "an object",
            FieldType::Array => "an array",
            FieldType::Any => "any value",
        }
    }

    /// The column kind its values are stored in; `None` for `any`.
    pub fn column_kind(self) -> Option<super::ColumnKind> {
        use super::ColumnKind;
        match self {
            FieldType::Number | FieldType::Integer => Some(ColumnKind::Double),
            FieldType::Boolean => Some(ColumnKind::Boolean),
            FieldType::String | FieldType::Object | FieldType::Array => Some(ColumnKind::Text),
            FieldType::Any => None,
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, FieldType::Number | FieldType::Integer)
    }
}

/// One declared payload field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_max: Option<f64>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// The mode of this field's rules, over the version's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// A rule written as an SQL boolean expression over the event: it fails
/// where the expression is false (null passes, as in a CHECK constraint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    pub name: String,
    pub check: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a schema version says, as registered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionDef {
    /// The mode of every rule that does not say otherwise.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub fields: IndexMap<String, FieldSpec>,
    #[serde(default)]
    pub additional_fields: Additional,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<CustomRule>,
    /// Modes of single built-in rules by name (`amount.max`), over the
    /// field's and the version's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modes: BTreeMap<String, Mode>,
    /// How an event of the previous version becomes one of this version,
    /// applied when events are read; stored events are never rewritten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migration: Vec<MigrationStep>,
}

/// One step of a migration from the previous version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MigrationStep {
    /// The field `from` is now called `to`.
    Rename { from: String, to: String },
    /// A new field, `default` where the event has no value for it.
    Add {
        field: String,
        default: serde_json::Value,
    },
    /// The field is gone.
    Remove(String),
    /// The field's new value: an SQL expression over the event's fields
    /// (as the steps before left them).
    Transform { field: String, sql: String },
}

impl MigrationStep {
    /// The field the step writes.
    pub fn target(&self) -> &str {
        match self {
            MigrationStep::Rename { to, .. } => to,
            MigrationStep::Add { field, .. } | MigrationStep::Transform { field, .. } => field,
            MigrationStep::Remove(field) => field,
        }
    }

    /// Its kind's name: `rename`, `add`, `remove`, `transform`.
    pub fn kind(&self) -> &'static str {
        match self {
            MigrationStep::Rename { .. } => "rename",
            MigrationStep::Add { .. } => "add",
            MigrationStep::Remove(_) => "remove",
            MigrationStep::Transform { .. } => "transform",
        }
    }
}

/// A stored version of an event type's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub version: u32,
    pub created_ms: i64,
    /// When it was rolled back: its rules and migration no longer apply,
    /// and its number is never given again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_ms: Option<i64>,
    #[serde(flatten)]
    pub def: VersionDef,
}

impl SchemaVersion {
    pub fn is_live(&self) -> bool {
        self.removed_ms.is_none()
    }
}

/// The event types a table accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedTypes {
    pub allowed: BTreeSet<String>,
    #[serde(default)]
    pub mode: Mode,
}

/// Everything a table's governance says.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TableGovernance {
    /// Bumped on every change.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<AllowedTypes>,
    /// Per event type, its versions in ascending order.
    #[serde(default)]
    pub types: BTreeMap<String, Vec<SchemaVersion>>,
}

impl TableGovernance {
    /// The live versions of `event_type`, oldest first. Versions are rolled
    /// back from the newest down, so they are 1, 2, … up to the latest.
    pub fn live(&self, event_type: &str) -> impl Iterator<Item = &SchemaVersion> {
        self.types
            .get(event_type)
            .into_iter()
            .flatten()
            .filter(|v| v.is_live())
    }

    /// The version events of `event_type` are checked against unless they
    /// say otherwise.
    pub fn latest(&self, event_type: &str) -> Option<&SchemaVersion> {
        self.live(event_type).last()
    }

    /// Compiled rules the table has: built-in ones per field and custom
    /// ones, over every live version of every type.
    pub fn rule_count(&self) -> usize {
        self.types
            .values()
            .flatten()
            .filter(|v| v.is_live())
            .map(|v| v.def.rule_count())
            .sum()
    }

    /// Whether reading the table changes any event: some live version
    /// above the first has a migration.
    pub fn migrates(&self) -> bool {
        self.types
            .values()
            .flatten()
            .any(|v| v.is_live() && !v.def.migration.is_empty())
    }
}

/// The names of the built-in checks of a field; a rule is named
/// `<field>.<check>`.
pub const CHECKS: [&str; 7] = [
    "required", "type", "min", "max", "enum", "pattern", "length",
];

/// The rule name of built-in `check` on `field`.
pub fn rule_name(field: &str, check: &str) -> String {
    format!("{field}.{check}")
}

/// Most characters of a custom rule's SQL.
pub const MAX_CHECK_CHARS: usize = 4096;
/// Most values of one `enum`.
pub const MAX_ENUM_VALUES: usize = 1024;
/// Most characters of one `pattern`.
pub const MAX_PATTERN_CHARS: usize = 1024;

impl VersionDef {
    /// Rules this version compiles to.
    pub fn rule_count(&self) -> usize {
        let per_field: usize = self
            .fields
            .values()
            .map(|f| {
                usize::from(f.required)
                    + usize::from(f.field_type != FieldType::Any)
                    + usize::from(f.min.is_some() || f.exclusive_min.is_some())
                    + usize::from(f.max.is_some() || f.exclusive_max.is_some())
                    + usize::from(f.one_of.is_some())
                    + usize::from(f.pattern.is_some())
                    + usize::from(f.min_length.is_some() || f.max_length.is_some())
            })
            .sum();
        per_field + self.rules.len() + usize::from(self.additional_fields != Additional::Allow)
    }

    /// The mode of built-in rule `check` on `field`.
    pub fn mode_of(&self, field: &str, spec: &FieldSpec, check: &str) -> Mode {
        self.modes
            .get(&rule_name(field, check))
            .copied()
            .or(spec.mode)
            .unwrap_or(self.mode)
    }

    /// Checks what a definition can be checked for without the table:
    /// names, bounds, enums, patterns and lengths. The error names the
    /// place (`fields.amount.min`) and the problem.
    pub fn check_shape(&self) -> Result<(), String> {
        for (name, spec) in &self.fields {
            let at = format!("fields.{name}");
            check_field_name(name).map_err(|e| format!("{at}: {e}"))?;
            spec.check_shape().map_err(|e| format!("{at}.{e}"))?;
        }
        let mut seen = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if !valid_rule_name(&rule.name) {
                return Err(format!(
                    "{at}.name: {:?} is not a rule name (a lower-case letter, then up to 63 lower-case letters, digits or _)",
                    rule.name
                ));
            }
            if !seen.insert(rule.name.as_str()) {
                return Err(format!("{at}.name: {:?} is used twice", rule.name));
            }
            if rule.check.trim().is_empty() {
                return Err(format!("{at}.check: is empty"));
            }
            if rule.check.chars().count() > MAX_CHECK_CHARS {
                return Err(format!(
                    "{at}.check: longer than {MAX_CHECK_CHARS} characters"
                ));
            }
        }
        for (i, step) in self.migration.iter().enumerate() {
            let at = format!("migration[{i}].{}", step.kind());
            let target = step.target();
            check_field_name(target).map_err(|e| format!("{at}: {e}"))?;
            match step {
                MigrationStep::Rename { from, to } => {
                    check_field_name(from).map_err(|e| format!("{at}: {e}"))?;
                    if from == to {
                        return Err(format!("{at}: renames {from:?} to itself"));
                    }
                    if !self.fields.contains_key(to) {
                        return Err(format!(
                            "{at}: {to:?} is not a declared field of this version"
                        ));
                    }
                }
                MigrationStep::Add { field, default } => {
                    let Some(spec) = self.fields.get(field) else {
                        return Err(format!(
                            "{at}: {field:?} is not a declared field of this version"
                        ));
                    };
                    let fits = match spec.field_type {
                        FieldType::String => default.is_string(),
                        FieldType::Number => default.is_number(),
                        FieldType::Integer => default.as_f64().is_some_and(|f| f.fract() == 0.0),
                        FieldType::Boolean => default.is_boolean(),
                        FieldType::Object => default.is_object(),
                        FieldType::Array => default.is_array(),
                        FieldType::Any => !default.is_null(),
                    };
                    if !fits {
                        return Err(format!(
                            "{at}.default: {} is not {}",
                            default,
                            spec.field_type.described()
                        ));
                    }
                }
                MigrationStep::Remove(field) => {
                    if self.fields.contains_key(field) {
                        return Err(format!(
                            "{at}: {field:?} is declared in this version; a removed field may not be"
                        ));
                    }
                }
                MigrationStep::Transform { field, sql } => {
                    if !self.fields.contains_key(field) {
                        return Err(format!(
                            "{at}: {field:?} is not a declared field of this version"
                        ));
                    }
                    if sql.trim().is_empty() || sql.chars().count() > MAX_CHECK_CHARS {
                        return Err(format!(
                            "{at}.sql: give an SQL expression of 1 to {MAX_CHECK_CHARS} characters"
                        ));
                    }
                }
            }
        }
        for name in self.modes.keys() {
            let known = name.split_once('.').is_some_and(|(field, check)| {
                self.fields.contains_key(field) && CHECKS.contains(&check)
            });
            if !known {
                return Err(format!(
                    "modes.{name}: not a built-in rule of a declared field (<field>.<{}>)",
                    CHECKS.join("|")
                ));
            }
        }
        Ok(())
    }
}

fn valid_rule_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Why `name` cannot be a declared field.
fn check_field_name(name: &str) -> Result<(), String> {
    if super::FIXED_COLUMNS
        .iter()
        .chain(&RESERVED_COLUMNS)
        .any(|f| f.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "{name:?} is a column the server sets; a payload field cannot have that name"
        ));
    }
    if super::unusable_name(name) {
        return Err(format!(
            "{name:?} cannot be a column name (1 to 128 characters, none of space , ; {{ }} ( ) = or control characters)"
        ));
    }
    Ok(())
}

impl FieldSpec {
    fn check_shape(&self) -> Result<(), String> {
        let ty = self.field_type;
        let numeric = [
            ("min", self.min),
            ("max", self.max),
            ("exclusive_min", self.exclusive_min),
            ("exclusive_max", self.exclusive_max),
        ];
        for (what, bound) in numeric {
            if bound.is_some() && !ty.is_numeric() {
                return Err(format!(
                    "{what}: only number and integer fields have bounds (this one is {})",
                    ty.described()
                ));
            }
        }
        if self.min.is_some() && self.exclusive_min.is_some() {
            return Err("exclusive_min: give min or exclusive_min, not both".into());
        }
        if self.max.is_some() && self.exclusive_max.is_some() {
            return Err("exclusive_max: give max or exclusive_max, not both".into());
        }
        let low = self.min.or(self.exclusive_min);
        let high = self.max.or(self.exclusive_max);
        if let (Some(lo), Some(hi)) = (low, high)
            && lo > hi
        {
            return Err(format!("max: {hi} is below the minimum {lo}"));
        }
        if (self.pattern.is_some() || self.min_length.is_some() || self.max_length.is_some())
            && ty != FieldType::String
        {
            return Err(format!(
                "pattern: patterns and lengths are for string fields (this one is {})",
                ty.described()
            ));
        }
        if let (Some(lo), Some(hi)) = (self.min_length, self.max_length)
            && lo > hi
        {
            return Err(format!("max_length: {hi} is below min_length {lo}"));
        }
        if let Some(p) = &self.pattern
            && p.chars().count() > MAX_PATTERN_CHARS
        {
            return Err(format!(
                "pattern: longer than {MAX_PATTERN_CHARS} characters"
            ));
        }
        if let Some(values) = &self.one_of {
            if values.is_empty() || values.len() > MAX_ENUM_VALUES {
                return Err(format!("enum: give 1 to {MAX_ENUM_VALUES} values"));
            }
            for (i, v) in values.iter().enumerate() {
                let fits = match ty {
                    FieldType::String => v.is_string(),
                    FieldType::Number => v.is_number(),
                    FieldType::Integer => v.as_f64().is_some_and(|f| f.fract() == 0.0),
                    FieldType::Boolean => v.is_boolean(),
                    FieldType::Object | FieldType::Array | FieldType::Any => {
                        return Err(format!(
                            "enum: only string, number, integer and boolean fields take an enum (this one is {})",
                            ty.described()
                        ));
                    }
                };
                if !fits {
                    return Err(format!("enum[{i}]: {v} is not {}", ty.described()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "governed_tests.rs"]
mod tests;
