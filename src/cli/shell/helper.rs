//! The line editor's helper: completion of keywords, meta-commands and
//! the server's tables, columns and functions, and multi-line input that
//! runs once a statement ends with `;`.

use rustyline::completion::{Completer, Pair};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper, Highlighter, Hinter};
use std::collections::BTreeSet;

/// SQL keywords offered for completion.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "ILIKE",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "JOIN",
    "LEFT",
    "RIGHT",
    "FULL",
    "INNER",
    "OUTER",
    "CROSS",
    "ON",
    "USING",
    "UNION",
    "ALL",
    "INTERSECT",
    "EXCEPT",
    "WITH",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "INTERVAL",
    "TIMESTAMP",
    "DATE",
    "CAST",
    "TRY_CAST",
    "OVER",
    "PARTITION",
    "ROWS",
    "RANGE",
    "FILTER",
    "EXPLAIN",
    "ANALYZE",
    "DESCRIBE",
    "SHOW",
    "TABLES",
    "COLUMNS",
    "TRUE",
    "FALSE",
    "EXISTS",
    "ROLLUP",
    "CUBE",
    "GROUPING",
    "SETS",
    "VALUES",
];

/// The shell's own commands, for completion after `\`.
pub(super) const META: &[&str] = &["d", "dsl", "format", "timing", "help", "q"];

/// What the helper completes with, beyond the keywords.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    pub(super) tables: BTreeSet<String>,
    pub(super) columns: BTreeSet<String>,
    pub(super) functions: BTreeSet<String>,
}

#[derive(Helper, Highlighter, Hinter)]
pub(super) struct ShellHelper {
    pub(super) catalog: Catalog,
}

/// Where the word ending at `pos` starts: names may hold `_` and `.`.
fn word_start(line: &str, pos: usize) -> usize {
    line[..pos]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

impl ShellHelper {
    /// The words that complete `prefix`, in the case it was typed in.
    pub(super) fn candidates(&self, line: &str, prefix: &str) -> Vec<String> {
        if line.trim_start().starts_with('\\') && !line.contains(' ') {
            let typed = prefix.trim_start_matches('\\');
            return META
                .iter()
                .filter(|m| m.starts_with(typed))
                .map(|m| m.to_string())
                .collect();
        }
        if prefix.is_empty() {
            return Vec::new();
        }
        let lower = prefix.to_ascii_lowercase();
        let upper_case = prefix.chars().all(|c| !c.is_ascii_lowercase());
        let keywords = KEYWORDS
            .iter()
            .filter(|k| k.to_ascii_lowercase().starts_with(&lower))
            .map(|k| match upper_case {
                true => k.to_string(),
                false => k.to_ascii_lowercase(),
            });
        let names = [
            &self.catalog.tables,
            &self.catalog.columns,
            &self.catalog.functions,
        ]
        .into_iter()
        .flatten()
        .filter(|n| n.to_ascii_lowercase().starts_with(&lower))
        .cloned();
        let found: BTreeSet<String> = names.chain(keywords).collect();
        found.into_iter().collect()
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = word_start(line, pos);
        let found = self.candidates(line, &line[start..pos]);
        let pairs = found
            .into_iter()
            .map(|w| Pair {
                display: w.clone(),
                replacement: w,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(match super::input::complete(ctx.input()) {
            true => ValidationResult::Valid(None),
            false => ValidationResult::Incomplete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_names_keywords_and_commands() {
        let helper = ShellHelper {
            catalog: Catalog {
                tables: ["events".to_string()].into(),
                columns: ["entity_id".to_string(), "event_type".to_string()].into(),
                functions: ["window_funnel".to_string()].into(),
            },
        };
        assert_eq!(
            helper.candidates("SELECT ev", "ev"),
            ["event_type", "events"]
        );
        assert_eq!(helper.candidates("sel", "sel"), ["select"]);
        assert_eq!(helper.candidates("SEL", "SEL"), ["SELECT"]);
        assert_eq!(
            helper.candidates("SELECT window_f", "window_f"),
            ["window_funnel"]
        );
        assert_eq!(helper.candidates("\\ti", "ti"), ["timing"]);
        assert_eq!(word_start("SELECT e.entity", 15), 7);
    }
}
