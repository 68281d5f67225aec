//! Bounds on what a query may be, checked before the engine plans it: the
//! size of its text, how deeply its expressions and subqueries nest, and
//! how long its names are.
//!
//! DataFusion's planner, optimizer and the derived `Clone`, `Eq`, `Hash`
//! and `Drop` of its trees recurse once per level of nesting, and the SQL
//! parser builds a chain like `a OR b OR …` or `1 + 1 + …` as one level per
//! term without counting it against its recursion limit. A deep enough
//! chain overflows the stack, which aborts the whole process. So
//! [`SessionBounds::parse`] parses on a stack sized for the text (a refused
//! statement is dropped there too), and refuses a statement deeper than
//! [`MAX_DEPTH`] before it is planned; planning and execution run on the
//! query threads, whose stack ([`QUERY_THREAD_STACK`]) is sized so that a
//! statement just within the limit plans and runs in a debug build.
//!
//! Names are bounded because an unknown name sets off DataFusion's "did
//! you mean" search, which compares it with every candidate: seconds of
//! uninterruptible CPU for a name of megabytes.
//!
//! The same parse runs for the inner queries of the table functions
//! (`detect_anomalies('…')`): [`crate::query::session`] hands it to them as
//! [`udfs::udtf::InnerQueryParser`]. The DSL holds its expressions to the
//! same [`MAX_DEPTH`] as it compiles them.

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Ident, ObjectName, Query, SetExpr, TableFactor, Visit, Visitor,
};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deepest nesting of expressions and subqueries a statement may have. A
/// chain of `n` terms joined by the same operator (`AND`, `OR`, `+`,
/// `||`, …) nests `n - 1` levels, and so does a chain of `n` queries
/// joined by `UNION`, `EXCEPT` or `INTERSECT`. DataFusion's planning time
/// grows with the square of a chain's length: 500 terms plan in 2 s in a
/// debug build, 1,000 in 11 s.
pub const MAX_DEPTH: usize = 500;

/// Most tables (joined, listed in `FROM`, derived or table functions) a
/// statement may read. Planning a join of `n` tables grows faster than
/// its square: 50 plan in under a second in a debug build, 100 in 3 s,
/// 500 in 13 minutes.
pub const MAX_RELATIONS: usize = 100;

/// Longest name (identifier, function or table name) a statement may use.
pub const MAX_NAME_BYTES: usize = 1024;

pub use crate::config::DEFAULT_MAX_QUERY_BYTES;

/// Stack of each query thread: room for DataFusion to plan, optimize and
/// run a statement [`MAX_DEPTH`] deep in a debug build, with a margin. It
/// is address space; only what a query touches is resident.
pub const QUERY_THREAD_STACK: usize = 64 << 20;

/// Stack the parser may need per byte of SQL: a chain costs at least two
/// bytes of text per level (`+1`), and dropping a chain that was refused
/// (or that a syntax error cut short) recurses once per level.
const PARSE_STACK_PER_BYTE: usize = 256;

/// Stack for parsing any text, however short.
const PARSE_STACK_MIN: usize = 1 << 20;

/// The bounds a query's text is held to (from the server's flags).
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    /// Largest SQL statement or DSL document, and largest set of
    /// parameters bound to a prepared statement (`--max-query-bytes`).
    pub max_bytes: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            max_bytes: DEFAULT_MAX_QUERY_BYTES,
        }
    }
}

impl SqlLimits {
    /// Refuses `what` (e.g. "the SQL text") of `len` bytes when it is over
    /// `--max-query-bytes`, saying so.
    pub fn check_size(&self, what: &str, len: usize) -> Result<(), String> {
        if len > self.max_bytes {
            return Err(format!(
                "{what} is {len} bytes; a query may have at most {} (--max-query-bytes)",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// The bounds of one query's session, shared by its statement and the
/// inner queries of its table functions: together they may read at most
/// [`MAX_RELATIONS`] tables (else a statement could call a hundred table
/// functions that each join a hundred tables).
#[derive(Debug)]
pub struct SessionBounds {
    limits: SqlLimits,
    /// Tables read by the statements parsed so far.
    relations: AtomicUsize,
}

impl SessionBounds {
    pub fn new(limits: SqlLimits) -> Self {
        SessionBounds {
            limits,
            relations: AtomicUsize::new(0),
        }
    }

    /// Parses `sql` as one statement in `state`'s dialect, refusing text
    /// over `--max-query-bytes`, nesting over [`MAX_DEPTH`], names over
    /// [`MAX_NAME_BYTES`], and more tables than the session has left.
    pub fn parse(&self, state: &SessionState, sql: &str) -> Result<DFStatement> {
        self.limits
            .check_size("the SQL text", sql.len())
            .map_err(DataFusionError::Plan)?;
        let dialect = state.config().options().sql_parser.dialect;
        let stack = PARSE_STACK_MIN.saturating_add(sql.len().saturating_mul(PARSE_STACK_PER_BYTE));
        // Whatever is refused here is dropped on this stack as well.
        stacker::maybe_grow(stack, stack, || {
            let statement = state.sql_to_statement(sql, &dialect)?;
            let mut check = Check {
                relations: self.relations.load(Ordering::Relaxed),
                ..Check::default()
            };
            if let ControlFlow::Break(message) = visit_statement(&statement, &mut check) {
                return Err(DataFusionError::Plan(message));
            }
            self.relations.store(check.relations, Ordering::Relaxed);
            Ok(statement)
        })
    }
}

fn visit_statement(statement: &DFStatement, check: &mut Check) -> ControlFlow<String> {
    match statement {
        DFStatement::Statement(s) => s.visit(check),
        DFStatement::Explain(e) => visit_statement(&e.statement, check),
        DFStatement::CopyTo(c) => match &c.source {
            CopyToSource::Relation(name) => check.pre_visit_relation(name),
            CopyToSource::Query(q) => q.visit(check),
        },
        DFStatement::CreateExternalTable(t) => {
            check.pre_visit_relation(&t.name)?;
            t.columns.visit(check)?;
            t.order_exprs.visit(check)
        }
        DFStatement::Reset(_) => ControlFlow::Continue(()),
    }
}

/// Walks a statement counting how deep it is and the tables it reads;
/// stops at the first excess, so the walk itself never goes deeper than
/// the limit.
#[derive(Debug, Default)]
struct Check {
    depth: usize,
    /// The levels each query being walked added (itself and its chain of
    /// set operations), given back after it.
    queries: Vec<usize>,
    relations: usize,
}

impl Check {
    fn enter(&mut self, levels: usize) -> ControlFlow<String> {
        self.depth += levels;
        if self.depth > MAX_DEPTH {
            return ControlFlow::Break(too_deep());
        }
        ControlFlow::Continue(())
    }

    fn name(&self, ident: &Ident) -> ControlFlow<String> {
        if ident.value.len() > MAX_NAME_BYTES {
            return ControlFlow::Break(name_too_long(&ident.value));
        }
        ControlFlow::Continue(())
    }

    fn object_name(&self, name: &ObjectName) -> ControlFlow<String> {
        for part in &name.0 {
            if let Some(ident) = part.as_ident() {
                self.name(ident)?;
            }
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Check {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        let levels = 1 + set_operation_depth(&query.body);
        self.queries.push(levels);
        self.enter(levels)
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        self.depth -= self.queries.pop().unwrap_or_default();
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
        self.object_name(relation)
    }

    fn pre_visit_table_factor(&mut self, _table: &TableFactor) -> ControlFlow<String> {
        self.relations += 1;
        if self.relations > MAX_RELATIONS {
            return ControlFlow::Break(format!(
                "the query reads more than {MAX_RELATIONS} tables (each join, table in FROM, \
                 subquery in FROM and table function counts one): split the query"
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<String> {
        self.enter(1)?;
        match expr {
            SqlExpr::Identifier(ident) => self.name(ident),
            SqlExpr::CompoundIdentifier(idents) => idents.iter().try_for_each(|i| self.name(i)),
            SqlExpr::Function(f) => self.object_name(&f.name),
            _ => ControlFlow::Continue(()),
        }
    }

    fn post_visit_expr(&mut self, _expr: &SqlExpr) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// How deeply a query's set operations (`UNION`, `EXCEPT`, `INTERSECT`)
/// nest, walked with a list rather than by recursion: the parser builds a
/// chain of them a level per query, however long.
fn set_operation_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(body, 0)];
    while let Some((node, depth)) = pending.pop() {
        match node {
            SetExpr::SetOperation { left, right, .. } => {
                pending.push((left, depth + 1));
                pending.push((right, depth + 1));
            }
            _ => deepest = deepest.max(depth),
        }
    }
    deepest
}

fn too_deep() -> String {
    format!(
        "the query nests expressions and subqueries more than {MAX_DEPTH} levels deep; a chain of \
         terms joined by AND, OR, + or || (or of queries joined by UNION) counts a level per term: \
         use IN (...) for a long list of alternatives, or split the query"
    )
}

fn name_too_long(name: &str) -> String {
    let shown: String = name.chars().take(32).collect();
    format!(
        "the name \"{shown}…\" is {} bytes; a name may have at most {MAX_NAME_BYTES}",
        name.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn parse(bounds: &SessionBounds, sql: &str) -> Result<DFStatement> {
        bounds.parse(&SessionContext::new().state(), sql)
    }

    fn refusal(bounds: &SessionBounds, sql: &str) -> String {
        parse(bounds, sql).unwrap_err().strip_backtrace()
    }

    #[test]
    fn depth_counts_expressions_subqueries_and_set_operations() {
        let bounds = SessionBounds::new(SqlLimits::default());
        // The query, n - 1 additions and the last term.
        let chain = |n| vec!["1"; n].join("+");
        parse(&bounds, &format!("SELECT {}", chain(MAX_DEPTH - 1))).unwrap();
        let e = refusal(&bounds, &format!("SELECT {}", chain(MAX_DEPTH)));
        assert!(e.contains(&format!("more than {MAX_DEPTH} levels")), "{e}");
        // A subquery adds its own level and its expression's.
        let nested = format!("SELECT (SELECT {})", chain(MAX_DEPTH - 3));
        parse(&bounds, &nested).unwrap();
        let nested = format!("SELECT (SELECT {})", chain(MAX_DEPTH - 2));
        assert!(refusal(&bounds, &nested).contains("levels"));
        // n queries joined by UNION: n - 1 levels over the query's own.
        let union = |n| vec!["SELECT 1"; n].join(" UNION ALL ");
        parse(&bounds, &union(MAX_DEPTH - 1)).unwrap();
        assert!(refusal(&bounds, &union(MAX_DEPTH + 1)).contains("levels"));
    }

    #[test]
    fn names_text_and_tables_are_bounded() {
        let bounds = SessionBounds::new(SqlLimits { max_bytes: 4096 });
        let name = "n".repeat(MAX_NAME_BYTES + 1);
        for sql in [
            format!("SELECT {name}"),
            format!("SELECT {name}(1)"),
            format!("SELECT a.{name} FROM t a"),
            format!("SELECT * FROM {name}"),
        ] {
            let e = refusal(&bounds, &sql);
            assert!(
                e.contains(&format!("at most {MAX_NAME_BYTES}")),
                "{sql}: {e}"
            );
        }
        let e = refusal(&bounds, &format!("SELECT '{}'", "a".repeat(4096)));
        assert!(e.contains("--max-query-bytes"), "{e}");
        // The tables of every statement of a session add up.
        let join = |n: usize| {
            (1..n)
                .map(|i| format!("JOIN t t{i} USING (k)"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let bounds = SessionBounds::new(SqlLimits::default());
        parse(
            &bounds,
            &format!("SELECT 1 FROM t t0 {}", join(MAX_RELATIONS / 2)),
        )
        .unwrap();
        parse(
            &bounds,
            &format!("SELECT 1 FROM t t0 {}", join(MAX_RELATIONS / 2)),
        )
        .unwrap();
        let e = refusal(&bounds, "SELECT 1 FROM t");
        assert!(
            e.contains(&format!("more than {MAX_RELATIONS} tables")),
            "{e}"
        );
    }

    #[test]
    fn a_chain_filling_the_text_is_refused_without_overflowing() {
        // On a thread with tokio's default stack, as a worker has.
        let sql = format!(
            "SELECT {}",
            vec!["1"; DEFAULT_MAX_QUERY_BYTES / 2 - 8].join("+")
        );
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let bounds = SessionBounds::new(SqlLimits::default());
                let deep = refusal(&bounds, &sql);
                let cut_short = refusal(&bounds, &format!("{sql} FROM ("));
                (deep, cut_short)
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(outcome.0.contains("levels"), "{}", outcome.0);
        assert!(outcome.1.contains("Expected"), "{}", outcome.1);
    }
}
