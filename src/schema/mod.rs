//! The shape of an event table: fixed columns, then payload columns typed
//! from the JSON that created them.
//!
//! Rules (also in the README):
//! - JSON numbers become `DOUBLE` (`Float64`), booleans `BOOLEAN`, strings
//!   `VARCHAR`; nested objects and arrays become `VARCHAR` holding their JSON
//!   text (query them with the `json_*` functions).
//! - A column's type is fixed by the first non-null value seen for it.
//! - A value that does not fit its column (a string in a `DOUBLE` column, an
//!   integer too large for a double to hold exactly, a key that collides
//!   with a fixed column or, ignoring case, with another column) is kept in
//!   the row's `_overflow` column, a JSON object of such fields.
//!
//! `adapt` holds the other side of the same shape: the types columns have
//! in queries ([`query_type`]) and batches reshaped to a later schema
//! ([`adapt_batch`]), which both the flush and the query layer use.

mod adapt;
pub mod governed;
mod violations;

pub use adapt::{adapt_batch, overflow_misfits, query_schema, query_type};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

pub const EVENT_ID: &str = "event_id";
pub const EVENT_TYPE: &str = "event_type";
pub const ENTITY_ID: &str = "entity_id";
pub const TIMESTAMP: &str = "timestamp";
pub const INGESTED_AT: &str = "ingested_at";
pub const EVENT_DATE: &str = "event_date";
pub const OVERFLOW: &str = "_overflow";
/// The event's place in its table: strictly increasing in the order
/// events were acknowledged, never reused.
pub const POSITION: &str = "position";
/// The event's 1-based index in its entity's stream (table + `entity_id`).
pub const VERSION: &str = "version";

/// Fixed columns, in table order.
pub const FIXED_COLUMNS: [&str; 9] = [
    EVENT_ID,
    EVENT_TYPE,
    ENTITY_ID,
    TIMESTAMP,
    INGESTED_AT,
    EVENT_DATE,
    OVERFLOW,
    POSITION,
    VERSION,
];

/// Index of [`POSITION`] among the fixed columns (and in every batch).
pub const POSITION_INDEX: usize = 7;
/// Index of [`VERSION`] among the fixed columns (and in every batch).
pub const VERSION_INDEX: usize = 8;

/// Most payload columns a table may have; fields beyond go to `_overflow`.
pub const MAX_PAYLOAD_COLUMNS: usize = 1000;

/// The UTC timestamp type used for `timestamp` and `ingested_at`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The type of a payload column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    Double,
    Boolean,
    /// Strings, and the JSON text of nested values.
    Text,
    /// 64-bit integers: only columns the server sets (`schema_version`);
    /// JSON numbers make `Double` columns.
    Integer,
}

impl ColumnKind {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnKind::Double => DataType::Float64,
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Text => DataType::Utf8,
            ColumnKind::Integer => DataType::Int64,
        }
    }

    /// The kind a stored Arrow column maps back to, if it is one of ours.
    pub fn from_data_type(dt: &DataType) -> Option<ColumnKind> {
        match dt {
            DataType::Float64 => Some(ColumnKind::Double),
            DataType::Boolean => Some(ColumnKind::Boolean),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(ColumnKind::Text),
            DataType::Int64 => Some(ColumnKind::Integer),
            _ => None,
        }
    }
}

/// The fixed part of every event table, as batches are built in memory.
pub fn fixed_fields() -> Vec<Field> {
    vec![
        Field::new(EVENT_ID, DataType::Utf8, false),
        Field::new(EVENT_TYPE, DataType::Utf8, false),
        Field::new(ENTITY_ID, DataType::Utf8, false),
        Field::new(TIMESTAMP, timestamp_type(), false),
        Field::new(INGESTED_AT, timestamp_type(), false),
        Field::new(EVENT_DATE, DataType::Date32, false),
        Field::new(OVERFLOW, DataType::Utf8, true),
        // Nullable: tables written before positions existed gain the
        // columns with nulls for their older rows.
        Field::new(POSITION, DataType::Int64, true),
        Field::new(VERSION, DataType::Int64, true),
    ]
}

/// Characters Delta Lake refuses in column names (without column mapping).
const FORBIDDEN_IN_NAMES: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// Why a payload field cannot have a column of its own.
pub(crate) fn unusable_name(name: &str) -> bool {
    name.is_empty()
        || name.len() > 128
        || name.contains(FORBIDDEN_IN_NAMES)
        || name.chars().any(char::is_control)
}

/// The payload columns of one table, in the order they were first seen.
///
/// Decisions made here are final: once a name has a kind it keeps it, so
/// every batch ever built for the table agrees with every other.
#[derive(Debug, Default, Clone)]
pub struct ColumnRegistry {
    columns: Vec<(String, ColumnKind)>,
    /// Lower-cased name → index, because Delta compares names ignoring case.
    by_lower: HashMap<String, usize>,
    /// Bumped on every change, so readers can cache the schema.
    version: u64,
}

/// How many columns a registry had, at which version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryMark {
    len: usize,
    version: u64,
}

/// Where a payload field's values go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Column(ColumnKind),
    Overflow,
}

impl ColumnRegistry {
    /// Builds the registry from a stored table schema.
    pub fn from_schema(schema: &Schema) -> Self {
        let mut reg = ColumnRegistry::default();
        for field in schema.fields() {
            if FIXED_COLUMNS.contains(&field.name().as_str()) {
                continue;
            }
            if let Some(kind) = ColumnKind::from_data_type(field.data_type()) {
                reg.insert(field.name(), kind);
            }
        }
        reg
    }

    fn insert(&mut self, name: &str, kind: ColumnKind) {
        self.by_lower
            .insert(name.to_lowercase(), self.columns.len());
        self.columns.push((name.to_string(), kind));
        self.version += 1;
    }

    /// Where values of field `name` go; registers a new column of `kind`
    /// when the name is free. `kind` is `None` when only nulls were seen,
    /// which creates nothing.
    pub fn place(&mut self, name: &str, kind: Option<ColumnKind>) -> Placement {
        let reserved = FIXED_COLUMNS.iter().chain(&governed::RESERVED_COLUMNS);
        if reserved.into_iter().any(|f| f.eq_ignore_ascii_case(name)) {
            return Placement::Overflow;
        }
        if let Some(&i) = self.by_lower.get(&name.to_lowercase()) {
            let (existing, k) = &self.columns[i];
            return if existing == name {
                Placement::Column(*k)
            } else {
                Placement::Overflow
            };
        }
        let Some(kind) = kind else {
            return Placement::Overflow;
        };
        if unusable_name(name) || self.columns.len() >= MAX_PAYLOAD_COLUMNS {
            return Placement::Overflow;
        }
        self.insert(name, kind);
        Placement::Column(kind)
    }

    /// Registers a column found in a replayed batch. Returns false when it
    /// conflicts with what is known (which replay treats as corruption).
    pub fn adopt(&mut self, name: &str, kind: ColumnKind) -> bool {
        match self.by_lower.get(&name.to_lowercase()) {
            Some(&i) => self.columns[i].0 == name && self.columns[i].1 == kind,
            None => {
                self.insert(name, kind);
                true
            }
        }
    }

    /// Takes on the payload columns of a stored schema another writer of
    /// the table committed: new names are added, and a name this registry
    /// gave another kind (or another case) takes the stored one, since the
    /// store decides. Values this writer placed under the old kind go to
    /// `_overflow` when flushed ([`overflow_misfits`]). Returns whether
    /// anything changed.
    pub fn reconcile(&mut self, stored: &Schema) -> bool {
        let mut changed = false;
        for field in stored.fields() {
            if FIXED_COLUMNS.contains(&field.name().as_str()) {
                continue;
            }
            let Some(kind) = ColumnKind::from_data_type(field.data_type()) else {
                continue;
            };
            match self.by_lower.get(&field.name().to_lowercase()) {
                None => {
                    self.insert(field.name(), kind);
                    changed = true;
                }
                Some(&i) if self.columns[i] != (field.name().clone(), kind) => {
                    self.columns[i] = (field.name().clone(), kind);
                    self.version += 1;
                    changed = true;
                }
                Some(_) => {}
            }
        }
        changed
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The kind of column `name`, if the table has one of exactly that
    /// name.
    pub fn kind_of(&self, name: &str) -> Option<ColumnKind> {
        let (existing, kind) = self.column_like(name)?;
        (existing == name).then_some(kind)
    }

    /// The column whose name equals `name` ignoring case, if any.
    pub fn column_like(&self, name: &str) -> Option<(&str, ColumnKind)> {
        let &i = self.by_lower.get(&name.to_lowercase())?;
        let (existing, kind) = &self.columns[i];
        Some((existing, *kind))
    }

    /// Declares payload field `name` with `kind` ahead of any value, so
    /// that values of another kind can never fix the column's. Refused
    /// with the kind the column already has, or `None` when the name is
    /// taken another way (a fixed or reserved name, the same name in
    /// another case, or no room).
    pub fn declare(&mut self, name: &str, kind: ColumnKind) -> Result<(), Option<ColumnKind>> {
        match self.place(name, Some(kind)) {
            Placement::Column(k) if k == kind => Ok(()),
            Placement::Column(k) => Err(Some(k)),
            Placement::Overflow => Err(None),
        }
    }

    /// Gives the table the columns governance writes (they are reserved,
    /// so no payload can place them).
    pub fn govern(&mut self) {
        if !self.by_lower.contains_key(governed::VIOLATIONS) {
            self.insert(governed::VIOLATIONS, ColumnKind::Text);
        }
        if !self.by_lower.contains_key(governed::SCHEMA_VERSION) {
            self.insert(governed::SCHEMA_VERSION, ColumnKind::Integer);
        }
    }

    /// Whether the table has the columns governance writes.
    pub fn governed(&self) -> bool {
        self.kind_of(governed::SCHEMA_VERSION) == Some(ColumnKind::Integer)
    }

    /// Where the registry stands, to [`ColumnRegistry::retract`] to.
    pub fn mark(&self) -> RegistryMark {
        RegistryMark {
            len: self.columns.len(),
            version: self.version,
        }
    }

    /// Forgets the columns placed since `before`, when the registry is
    /// still as `after` left it (nobody placed a column since): the
    /// placements of a request that was refused. Returns whether it did.
    pub fn retract(&mut self, before: RegistryMark, after: RegistryMark) -> bool {
        if self.mark() != after || after.len <= before.len {
            return false;
        }
        for (name, _) in self.columns.drain(before.len..) {
            self.by_lower.remove(&name.to_lowercase());
        }
        // Readers cache the schema by version, so it moves on rather than
        // back.
        self.version += 1;
        true
    }

    /// The full table schema: fixed columns, then payload columns.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = fixed_fields();
        fields.extend(
            self.columns
                .iter()
                .map(|(name, kind)| Field::new(name, kind.data_type(), true)),
        );
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_schema_from_another_writer_decides_columns() {
        let mut reg = ColumnRegistry::default();
        reg.place("size", Some(ColumnKind::Text));
        reg.place("mine", Some(ColumnKind::Boolean));
        reg.place("Case", Some(ColumnKind::Double));
        let before = reg.version();
        let stored = Schema::new(vec![
            Field::new(EVENT_ID, DataType::Utf8, false),
            Field::new("size", DataType::Float64, true),
            Field::new("case", DataType::Float64, true),
            Field::new("theirs", DataType::Utf8, true),
        ]);
        assert!(reg.reconcile(&stored));
        assert!(reg.version() > before);
        assert_eq!(reg.kind_of("size"), Some(ColumnKind::Double));
        assert_eq!(reg.kind_of("mine"), Some(ColumnKind::Boolean));
        assert_eq!(reg.kind_of("case"), Some(ColumnKind::Double));
        assert_eq!(reg.kind_of("Case"), None);
        assert_eq!(reg.kind_of("theirs"), Some(ColumnKind::Text));
        // Nothing new the second time.
        assert!(!reg.reconcile(&stored));
    }

    #[test]
    fn placement_rules() {
        let mut reg = ColumnRegistry::default();
        assert_eq!(
            reg.place("amount", Some(ColumnKind::Double)),
            Placement::Column(ColumnKind::Double)
        );
        // type is fixed by the first sighting
        assert_eq!(
            reg.place("amount", Some(ColumnKind::Text)),
            Placement::Column(ColumnKind::Double)
        );
        // case-insensitive collision
        assert_eq!(
            reg.place("Amount", Some(ColumnKind::Double)),
            Placement::Overflow
        );
        // fixed names
        assert_eq!(
            reg.place("timestamp", Some(ColumnKind::Text)),
            Placement::Overflow
        );
        assert_eq!(
            reg.place("Event_Type", Some(ColumnKind::Text)),
            Placement::Overflow
        );
        // names Delta cannot store
        assert_eq!(
            reg.place("a b", Some(ColumnKind::Text)),
            Placement::Overflow
        );
        // only nulls: no column
        assert_eq!(reg.place("later", None), Placement::Overflow);
        assert_eq!(reg.schema().fields().len(), FIXED_COLUMNS.len() + 1);
        let round = ColumnRegistry::from_schema(&reg.schema());
        assert_eq!(round.schema(), reg.schema());
        // reserved names of governed tables
        assert_eq!(
            reg.place("_Violations", Some(ColumnKind::Text)),
            Placement::Overflow
        );
        assert_eq!(
            reg.place("schema_version", Some(ColumnKind::Double)),
            Placement::Overflow
        );
    }

    #[test]
    fn declarations_and_retraction() {
        let mut reg = ColumnRegistry::default();
        reg.place("amount", Some(ColumnKind::Double));
        assert_eq!(reg.declare("amount", ColumnKind::Double), Ok(()));
        assert_eq!(
            reg.declare("amount", ColumnKind::Text),
            Err(Some(ColumnKind::Double))
        );
        assert_eq!(reg.declare("AMOUNT", ColumnKind::Double), Err(None));
        reg.govern();
        assert_eq!(reg.kind_of("_violations"), Some(ColumnKind::Text));
        assert_eq!(reg.kind_of("schema_version"), Some(ColumnKind::Integer));
        assert!(reg.governed());
        let before = reg.mark();
        reg.place("junk", Some(ColumnKind::Text));
        let after = reg.mark();
        // someone else placed since: kept
        reg.place("other", Some(ColumnKind::Text));
        assert!(!reg.retract(before, after));
        let (before, _) = (reg.mark(), ());
        reg.place("junk2", Some(ColumnKind::Boolean));
        let after = reg.mark();
        let version = reg.version();
        assert!(reg.retract(before, after));
        assert_eq!(reg.kind_of("junk2"), None);
        assert!(reg.version() > version);
        assert_eq!(
            reg.place("junk2", Some(ColumnKind::Text)),
            Placement::Column(ColumnKind::Text)
        );
    }
}
