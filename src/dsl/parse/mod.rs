//! The first step: a JSON document → the typed [`Query`]. Everything that
//! can be checked without the tenant's schema is checked here (keys, kinds
//! of values, operators, argument counts, nesting, settings), in the order
//! the document is read, and the first problem is a [`DslError`] at its
//! path.
//!
//! - this file: the document's keys, `select`, `group-by`, `having`,
//!   `order-by`, `limit`, `offset` and `explain`;
//! - [`expr`] reads expressions, values and times;
//! - [`forms`] reads the analytics forms' objects.

mod expr;
mod forms;
#[cfg(test)]
mod tests;

pub(crate) use expr::parse_instant;

use super::ast::{Body, Node, Query, Select, SelectItem, SortItem, SortKey};
use super::keywords::{Clause, Direction, FormName, suggest, top_level_words};
use super::{DslError, Path};
use crate::query::pin::Pin;
use serde_json::{Map, Value};

fn err<T>(path: &Path, message: impl Into<String>) -> Result<T, DslError> {
    Err(DslError::new(path, message))
}

/// Reads `doc` into a [`Query`].
pub(crate) fn document(doc: &Value) -> Result<Query, DslError> {
    let root = Path::default();
    let Value::Object(map) = doc else {
        return err(&root, "a query document must be a JSON object");
    };
    for key in map.keys() {
        if Clause::parse(key).is_none() && FormName::parse(key).is_none() {
            return err(
                &root.key(key),
                format!("unknown key \"{key}\"{}", suggest(key, top_level_words())),
            );
        }
    }
    let get = |c: Clause| map.get(c.word());
    let at = |c: Clause| root.key(c.word());
    let from = match get(Clause::From) {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return err(&at(Clause::From), "expected a table name"),
        None => return err(&at(Clause::From), "missing: name the table to query"),
    };
    let filter = match get(Clause::Where) {
        Some(w) => Some(expr::expr(w, &at(Clause::Where))?),
        None => None,
    };

    let forms: Vec<FormName> = FormName::ALL
        .iter()
        .copied()
        .filter(|f| map.contains_key(f.word()))
        .collect();
    let body = match forms.as_slice() {
        [] => Body::Select(select(map)?),
        [form] => {
            for clause in [Clause::Select, Clause::GroupBy, Clause::Having] {
                if get(clause).is_some() {
                    return err(
                        &at(clause),
                        format!(
                            "\"{}\" cannot be combined with \"{}\"",
                            clause.word(),
                            form.word()
                        ),
                    );
                }
            }
            let path = root.key(form.word());
            Body::Form(forms::form(*form, &map[form.word()], &path)?)
        }
        [first, second, ..] => {
            return err(
                &root.key(second.word()),
                format!(
                    "a document has one analytics form; it already has \"{}\"",
                    first.word()
                ),
            );
        }
    };

    let order_by = order_by(map, matches!(body, Body::Form(_)))?;
    let limit = match get(Clause::Limit) {
        Some(v) => Some(count_of(v, &at(Clause::Limit))?),
        None => None,
    };
    let offset = match get(Clause::Offset) {
        Some(v) => count_of(v, &at(Clause::Offset))?,
        None => 0,
    };
    let explain = match get(Clause::Explain) {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return err(&at(Clause::Explain), "expected true or false"),
    };
    let as_of = match get(Clause::AsOf) {
        None | Some(Value::Null) => None,
        Some(v) => Some(as_of(v, &at(Clause::AsOf))?),
    };
    Ok(Query {
        from,
        filter,
        body,
        order_by,
        limit,
        offset,
        explain,
        as_of,
    })
}

/// `as-of`: `{"position": N}`, `{"timestamp": "RFC 3339"}`, or the text
/// `position:N` or an RFC 3339 time.
fn as_of(v: &Value, path: &Path) -> Result<Pin, DslError> {
    const USAGE: &str = "expected {\"position\": N}, {\"timestamp\": \"2026-11-01T00:00:00Z\"}, {\"table_version\": N}, \"position:N\" or an RFC 3339 time";
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.len() == 1 => match m.iter().next() {
            Some((k, Value::Number(n))) if k == "position" => format!("position:{n}"),
            Some((k, Value::String(t))) if k == "timestamp" => format!("timestamp:{t}"),
            Some((k, Value::Number(n))) if k == "table_version" => match n.as_u64() {
                Some(v) => return Ok(Pin::TableVersion(v)),
                None => return err(path, "table_version: expected a whole number"),
            },
            _ => return err(path, USAGE),
        },
        _ => return err(path, USAGE),
    };
    Pin::parse(&text).map_err(|e| DslError::new(path, e.strip_prefix("as_of: ").unwrap_or(&e)))
}

/// A non-negative integer.
fn count_of(v: &Value, path: &Path) -> Result<usize, DslError> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| DslError::new(path, "expected a non-negative integer"))
}

/// The list under `clause` (empty when absent), and its path.
fn list(map: &Map<String, Value>, clause: Clause) -> Result<(&[Value], Path), DslError> {
    let path = Path::default().key(clause.word());
    match map.get(clause.word()) {
        None => Ok((&[], path)),
        Some(Value::Array(items)) => Ok((items, path)),
        Some(_) => err(&path, "expected a list"),
    }
}

/// `group-by`, `select` and `having`.
fn select(map: &Map<String, Value>) -> Result<Select, DslError> {
    let (group, group_path) = list(map, Clause::GroupBy)?;
    let group_by = group
        .iter()
        .enumerate()
        .map(|(i, g)| expr::expr(g, &group_path.index(i)))
        .collect::<Result<_, _>>()?;
    let (items, select_path) = list(map, Clause::Select)?;
    let mut star = items.is_empty();
    let mut select = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = select_path.index(i);
        match item {
            Value::String(s) if s == "*" => star = true,
            Value::String(s) => select.push(SelectItem::Name(Node::new(&p, s.clone()))),
            _ => select.push(SelectItem::Expr {
                expr: expr::expr(item, &p)?,
                name: expr::is_bare_aggregation(item).then(|| expr::default_name(item)),
            }),
        }
    }
    let having_path = Path::default().key(Clause::Having.word());
    let having = match map.get(Clause::Having.word()) {
        Some(h) => Some(expr::expr(h, &having_path)?),
        None => None,
    };
    Ok(Select {
        group_by,
        star,
        items: select,
        having,
    })
}

/// `order-by`: a list of `key`, `["asc", key]` or `["desc", key]`. After a
/// form (`after_form`), only the result's columns can be named.
fn order_by(map: &Map<String, Value>, after_form: bool) -> Result<Vec<SortItem>, DslError> {
    let (items, path) = list(map, Clause::OrderBy)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let direction = match item {
            Value::Array(pair) if pair.len() == 2 => pair[0]
                .as_str()
                .and_then(Direction::parse)
                .map(|d| (d, pair)),
            _ => None,
        };
        let (ascending, key, kp) = match direction {
            Some((d, pair)) => (d == Direction::Asc, &pair[1], p.index(1)),
            None => (true, item, p),
        };
        let key = match key {
            Value::String(_) => SortKey::Expr(expr::expr(key, &kp)?),
            _ if after_form => SortKey::NotAName(kp),
            _ => SortKey::Expr(expr::expr(key, &kp)?),
        };
        out.push(SortItem { ascending, key });
    }
    Ok(out)
}
