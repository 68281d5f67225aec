//! What a check of events against their table's rules finds:
//! [`Violation`]s, gathered into [`Violations`] when a request is refused,
//! or a [`WarnSummary`] when it is stored with warnings.

use super::governed::Mode;
use serde::Serialize;
use std::collections::BTreeMap;

/// One broken rule of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The event's 0-based place in the request.
    pub index: u64,
    /// Where in the event: `$[3].payload.amount`.
    pub path: String,
    pub rule: String,
    pub mode: Mode,
    pub event_type: String,
    pub schema_version: Option<u32>,
    pub message: String,
    /// For a custom rule, the columns it reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// Most violations listed in a refusal or a report; the counts are exact.
pub const MAX_LISTED: usize = 1000;
/// Most warnings listed in an accepted request's reply.
pub const MAX_WARNINGS_LISTED: usize = 20;

/// Everything a check found in one request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Violations {
    pub table: String,
    /// Events with at least one `reject` violation.
    pub rejected: u64,
    /// Events with `warn` violations only.
    pub warned: u64,
    /// Violations in all.
    pub total: u64,
    /// Whether [`Violations::violations`] leaves some out.
    pub truncated: bool,
    pub by_rule: BTreeMap<String, u64>,
    /// In request order, then rule order; at most [`MAX_LISTED`].
    pub violations: Vec<Violation>,
    /// Each broken rule's mode (a rule has one).
    #[serde(skip)]
    pub modes: BTreeMap<String, Mode>,
}

impl Violations {
    pub fn new(table: impl Into<String>) -> Self {
        Violations {
            table: table.into(),
            ..Default::default()
        }
    }

    /// Adds `v`, counting it whether or not it is listed.
    pub fn push(&mut self, v: Violation) {
        self.total += 1;
        *self.by_rule.entry(v.rule.clone()).or_default() += 1;
        self.modes.entry(v.rule.clone()).or_insert(v.mode);
        if self.violations.len() < MAX_LISTED {
            self.violations.push(v);
        } else {
            self.truncated = true;
        }
    }

    /// Whether any violation refuses the request.
    pub fn refuses(&self) -> bool {
        self.rejected > 0
    }

    /// One line naming the first few violations, for an error message.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 5;
        let listed: Vec<String> = self
            .violations
            .iter()
            .take(SHOWN)
            .map(|v| format!("{} {}: {}", v.path, v.rule, v.message))
            .collect();
        let more = self.total.saturating_sub(listed.len() as u64);
        let more = match more {
            0 => String::new(),
            n => format!(" … and {n} more (details.violations)"),
        };
        format!(
            "{} event{} break{} rules of table {:?}; nothing was stored: {}{more}",
            self.rejected,
            if self.rejected == 1 { "" } else { "s" },
            if self.rejected == 1 { "s" } else { "" },
            self.table,
            listed.join("; "),
        )
    }

    /// What a stored request's reply says of its warnings.
    pub fn warnings(&self) -> WarnSummary {
        WarnSummary {
            total: self.total,
            by_rule: self.by_rule.clone(),
            violations: self
                .violations
                .iter()
                .take(MAX_WARNINGS_LISTED)
                .cloned()
                .collect(),
        }
    }
}

/// The warnings of a stored request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct WarnSummary {
    pub total: u64,
    pub by_rule: BTreeMap<String, u64>,
    /// The first [`MAX_WARNINGS_LISTED`].
    pub violations: Vec<Violation>,
}
