//! The parser's errors, one row per kind of malformed node, each naming
//! its JSON path; and what the parser keeps for the compiler. (Errors that
//! need the schema are the compiler's, tested through HTTP in
//! `tests/it/dsl.rs`.)
//!
//! A table row is `document => error`, one a line. The document is an
//! object whose keys are added to `{"from": "events"}`, or, after `raw`,
//! the whole document.

use super::document;
use crate::dsl::ast::{Body, ExprKind, InstantKind, Literal, SelectItem, SortKey};
use crate::query::bounds::MAX_DEPTH;
use serde_json::{Value, json};

/// `{"from": "events"}` with `extra`'s keys added.
fn doc(extra: Value) -> Value {
    let mut d = json!({"from": "events"});
    if let (Some(d), Value::Object(extra)) = (d.as_object_mut(), extra) {
        d.extend(extra);
    }
    d
}

fn error(d: &Value) -> String {
    match document(d) {
        Ok(_) => panic!("{:.300} parsed", d.to_string()),
        Err(e) => e.to_string(),
    }
}

/// Checks every row of `table`.
fn check(table: &str) {
    let mut wrong = Vec::new();
    let mut rows = 0;
    for line in table.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let (text, want) = line
            .split_once(" => ")
            .unwrap_or_else(|| panic!("not a row: {line}"));
        let d = match text.strip_prefix("raw ") {
            Some(raw) => serde_json::from_str(raw),
            None => serde_json::from_str(text).map(doc),
        }
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        let got = error(&d);
        if got != want {
            wrong.push(format!("{text}\n  got:  {got}\n  want: {want}"));
        }
        rows += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(rows > 0);
}

#[test]
fn document_errors_name_their_path() {
    check(DOCUMENT);
}

const DOCUMENT: &str = r#"
    raw [1, 2] => (document): a query document must be a JSON object
    raw "events" => (document): a query document must be a JSON object
    {"selct": []} => selct: unknown key "selct" (did you mean "select"?)
    {"bogus": 1} => bogus: unknown key "bogus"
    raw {"select": ["event_id"]} => from: missing: name the table to query
    raw {"from": 3} => from: expected a table name
    {"funnel": {}, "trend": {}} => trend: a document has one analytics form; it already has "funnel"
    {"cohort": {}, "retention": {}} => cohort: a document has one analytics form; it already has "retention"
    {"select": ["a"], "trend": {}} => select: "select" cannot be combined with "trend"
    {"group-by": ["a"], "funnel": {}} => group-by: "group-by" cannot be combined with "funnel"
    {"having": true, "anomalies": {}} => having: "having" cannot be combined with "anomalies"
    {"group-by": "country"} => group-by: expected a list
    {"select": "event_id"} => select: expected a list
    {"order-by": {"a": 1}} => order-by: expected a list
    {"group-by": ["a", []]} => group-by[1]: an empty array; expected [operator, ...]
    {"select": ["a", {"b": 1}]} => select[1]: expected a column name, a value or an [operator, ...] array, got an object
    {"having": [">", ["summ", "a"], 1]} => having[1][0]: unknown operator "summ" (did you mean "sum"?)
    {"order-by": [["desc", ["=="]]]} => order-by[0][1][0]: unknown operator "==" (did you mean "="?)
    {"order-by": ["a", ["desc", "a", "b"]]} => order-by[1][0]: unknown operator "desc"
    {"limit": -1} => limit: expected a non-negative integer
    {"limit": "10"} => limit: expected a non-negative integer
    {"offset": 1.5} => offset: expected a non-negative integer
    {"explain": "yes"} => explain: expected true or false
    {"as-of": 42} => as-of: expected {"position": N}, {"timestamp": "2026-11-01T00:00:00Z"}, {"table_version": N}, "position:N" or an RFC 3339 time
    {"as-of": {"position": 1, "timestamp": "x"}} => as-of: expected {"position": N}, {"timestamp": "2026-11-01T00:00:00Z"}, {"table_version": N}, "position:N" or an RFC 3339 time
    {"as-of": {"position": -1}} => as-of: "-1" is not a position (a whole number)
    {"as-of": "yesterday"} => as-of: "yesterday" is neither position:N nor an RFC 3339 time (premature end of input); e.g. position:42 or 2026-11-01T00:00:00Z
"#;

#[test]
fn expression_errors_name_their_path() {
    check(EXPRESSIONS);
}

const EXPRESSIONS: &str = r#"
    {"where": {"a": 1}} => where: expected a column name, a value or an [operator, ...] array, got an object
    {"where": []} => where: an empty array; expected [operator, ...]
    {"where": [3, 4]} => where[0]: expected an operator name, got a number
    {"where": ["and", ["=", "a", 1], ["==", "b", true]]} => where[2][0]: unknown operator "==" (did you mean "="?)
    // argument counts
    {"where": ["=", "country"]} => where: "=" takes 2 arguments, got 1 argument
    {"where": ["and"]} => where: "and" takes at least 1 argument, got 0 arguments
    {"where": ["not", 1, 2]} => where: "not" takes 1 argument, got 2 arguments
    {"where": ["in", "a"]} => where: "in" takes a value and a list: ["in", column, [v1, v2, ...]], got 1 argument
    {"where": ["between", "a", 1]} => where: "between" takes 3 arguments: ["between", column, low, high], got 2 arguments
    {"select": [["as", "a"]]} => select[0]: "as" takes 2 arguments: ["as", expression, "name"], got 1 argument
    {"select": [["payload"]]} => select[0]: "payload" takes at least 1 field name, got 0 arguments
    {"select": [["fn"]]} => select[0]: "fn" takes a function name and its arguments, got 0 arguments
    {"where": ["<", "timestamp", ["now", 1]]} => where[2]: "now" takes no arguments, got 1 argument
    {"where": ["since"]} => where: "since" takes 1 argument: a time, got 0 arguments
    {"select": [["count", "a", "b"]]} => select[0]: "count" takes 0 or 1 argument, got 2 arguments
    {"select": [["sum"]]} => select[0]: "sum" takes 1 argument, got 0 arguments
    {"select": [["approx-percentile", "a"]]} => select[0]: "approx-percentile" takes 2 arguments: ["percentile", column, p], got 1 argument
    {"select": [["sum", ["+", "a"]]]} => select[0][1]: "+" takes 2 arguments, got 1 argument
    // arguments
    {"where": ["in", "country", "de"]} => where[2]: expected a list of values
    {"where": ["in", "country", ["de", {}]]} => where[2][1]: expected a column name, a value or an [operator, ...] array, got an object
    {"select": [["as", "a", ""]]} => select[0][2]: expected the new name as a non-empty string
    {"select": [["as", "a", 3]]} => select[0][2]: expected the new name as a non-empty string
    {"where": ["=", ["col", 3], 1]} => where[1][1]: expected a column name, got a number
    {"where": ["=", ["lit", [1]], 1]} => where[1][1]: expected a value, got an array
    {"where": ["=", ["payload", "a", 2], 1]} => where[1][2]: expected a field name
    {"select": [["fn", 3, "a"]]} => select[0][1]: expected a function name
    {"select": [["fn", "abs", ["nope"]]]} => select[0][2][0]: unknown operator "nope" (did you mean "not"?)
    {"select": [["percentile", "amount", 2]]} => select[0][2]: expected a fraction from 0 to 1
    {"select": [["approx-percentile", "amount", "0.5"]]} => select[0][2]: expected a fraction from 0 to 1
    // times
    {"where": [">", "timestamp", ["days-ago", -1]]} => where[2][1]: expected a non-negative number
    {"where": [">", "timestamp", ["hours-ago", "3"]]} => where[2][1]: expected a non-negative number
    {"where": ["since", ["days-ago", 96486077]]} => where[1][1]: 96486077 is too far in the past (at most 100000 years)
    {"where": ["since", "yesterday"]} => where[1]: "yesterday" is not an RFC 3339 time (like 2026-01-31T12:00:00Z) or a date
    {"where": ["until", ["later"]]} => where[1]: expected a time: an RFC 3339 string, ["now"] or ["days-ago", n]
    {"where": ["until", []]} => where[1]: expected a time: an RFC 3339 string, ["now"] or ["days-ago", n]
    {"where": ["until", 5]} => where[1]: expected a time: an RFC 3339 string or a time helper, got a number
    {"where": ["until", ["days-ago"]]} => where[1][1]: expected a non-negative number
"#;

/// Nesting is bounded like SQL's, counting an `and` or `or` of n terms as
/// n - 1 levels; the error is at the operator that goes past the bound.
#[test]
fn nesting_past_the_bound_names_the_operator() {
    // as deep as a query thread lets a document be
    std::thread::Builder::new()
        .stack_size(crate::query::bounds::QUERY_THREAD_STACK)
        .spawn(nesting)
        .unwrap()
        .join()
        .unwrap();
}

fn nesting() {
    let mut deep = json!(["is-null", "a"]);
    for _ in 1..MAX_DEPTH {
        deep = json!(["not", deep]);
    }
    assert!(document(&doc(json!({"where": deep.clone()}))).is_ok());
    let e = error(&doc(json!({"where": ["not", deep]})));
    let inner = "[1]".repeat(MAX_DEPTH);
    assert!(
        e.starts_with(&format!(
            "where{inner}: the expression nests more than {MAX_DEPTH} levels deep"
        )),
        "{e}"
    );

    let terms = |n: usize| -> Value {
        let mut items = vec![json!("or")];
        items.extend((0..n).map(|i| json!(["=", "a", i])));
        Value::Array(items)
    };
    // n terms are n - 1 levels, and their operators one more
    assert!(document(&doc(json!({"where": terms(MAX_DEPTH)}))).is_ok());
    let e = error(&doc(json!({"where": terms(MAX_DEPTH + 1)})));
    assert!(
        e.starts_with("where[1]: the expression nests more than"),
        "{e}"
    );
    let e = error(&doc(json!({"where": terms(MAX_DEPTH + 2)})));
    assert!(
        e.starts_with("where: the expression nests more than"),
        "{e}"
    );
}

#[test]
fn form_errors_name_their_path() {
    check(FORMS);
    let steps =
        json!({"funnel": {"steps": vec![true; super::forms::MAX_STEPS + 1], "window": "1 day"}});
    assert_eq!(
        error(&doc(steps)),
        "funnel.steps: expected a list of 1 to 32 conditions"
    );
    let e = error(&doc(
        json!({"funnel": {"steps": [true], "window": "1 day", "mode": "strict"}}),
    ));
    assert!(
        e.starts_with("funnel.mode: funnel: unknown mode \"strict\""),
        "{e}"
    );
}

const FORMS: &str = r#"
    {"funnel": []} => funnel: expected an object
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "fil": "zero"}} => time-series.fil: unknown key "fil" (did you mean "fill"?); this form takes interval, aggregations, fill, start, end, by, time-column
    {"retention": {"steps": 1}} => retention.steps: unknown key "steps"; this form takes cohort-event, return-event, period, periods, entity, time-column
    // time-series
    {"time-series": {"interval": "1 hour"}} => time-series.aggregations: missing
    {"time-series": {"interval": "1 hour", "aggregations": []}} => time-series.aggregations: expected a non-empty list of aggregations
    {"time-series": {"interval": "1 hour", "aggregations": {"count": 1}}} => time-series.aggregations: expected a non-empty list of aggregations
    {"time-series": {"interval": "1 hour", "aggregations": [["cont"]]}} => time-series.aggregations[0][0]: unknown operator "cont" (did you mean "count"?)
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "by": ["a", 1]}} => time-series.by[1]: expected a column name
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "by": 1}} => time-series.by: expected a column name
    {"time-series": {"aggregations": [["count"]]}} => time-series.interval: missing
    {"time-series": {"interval": "1 fortnight", "aggregations": [["count"]]}} => time-series.interval: expected a positive interval such as "1 hour", "15 minutes", "1 day" or "1 month", or a number of seconds
    {"time-series": {"interval": -5, "aggregations": [["count"]]}} => time-series.interval: expected a positive interval such as "1 hour", "15 minutes", "1 day" or "1 month", or a number of seconds
    {"time-series": {"interval": "-1 day", "aggregations": [["count"]]}} => time-series.interval: expected a positive interval such as "1 hour", "15 minutes", "1 day" or "1 month", or a number of seconds
    {"time-series": {"interval": true, "aggregations": [["count"]]}} => time-series.interval: expected a positive interval such as "1 hour", "15 minutes", "1 day" or "1 month", or a number of seconds
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "time-column": 3}} => time-series.time-column: expected a string
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "start": "soon", "end": ["now"]}} => time-series.start: "soon" is not an RFC 3339 time (like 2026-01-31T12:00:00Z) or a date
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "start": ["now"], "end": {}}} => time-series.end: expected a time: an RFC 3339 string or a time helper, got an object
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "fill": 0}} => time-series.fill: expected a string
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "fill": "some"}} => time-series.fill: gapfill: unknown fill "some"; use 'null', 'zero', 'previous' or 'linear'
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "start": "2026-01-01"}} => time-series.end: missing: give both start and end, or neither
    {"time-series": {"interval": "1 hour", "aggregations": [["count"]], "end": "2026-01-01"}} => time-series.start: missing: give both start and end, or neither
    {"time-series": {"interval": "1 hour", "aggregations": [["count"], ["count"]]}} => time-series: two columns would be called "count"; name one with ["as", ..., "name"]
    {"time-series": {"interval": "1 hour", "aggregations": [["as", ["count"], "x"]], "by": "time"}} => time-series: two columns would be called "time"; name one with ["as", ..., "name"]
    {"time-series": {"interval": "2 months", "aggregations": [["count"]]}} => time-series.interval: month intervals must be 1, 3 or 12 months
    // anomalies
    {"anomalies": {"interval": "1 day"}} => anomalies.metric: missing
    {"anomalies": {"metric": ["count"], "interval": "1 day", "algorithm": "mad", "method": "mad"}} => anomalies.method: give algorithm or method, not both
    {"anomalies": {"metric": ["count"], "interval": "1 day", "algorithm": 1}} => anomalies.algorithm: expected a string
    {"anomalies": {"metric": ["count"], "interval": "1 day", "algorithm": "sigma"}} => anomalies.algorithm: anomalies: unknown method "sigma"; use 'zscore', 'iqr' or 'mad'
    {"anomalies": {"metric": ["count"], "interval": "1 day", "method": "sigma"}} => anomalies.method: anomalies: unknown method "sigma"; use 'zscore', 'iqr' or 'mad'
    {"anomalies": {"metric": ["count"], "interval": "1 day", "sensitivity": "high"}} => anomalies.sensitivity: expected a number
    {"anomalies": {"metric": ["count"], "interval": "1 day", "sensitivity": 0}} => anomalies.sensitivity: anomalies: the threshold k must be a positive number, got 0
    {"anomalies": {"metric": ["count"]}} => anomalies.interval: missing
    // trend
    {"trend": {"metric": ["count"], "interval": "1 day", "periods": -1}} => trend.periods: expected a whole number from 0 to 100000
    {"trend": {"metric": ["count"], "interval": "1 day", "alpha": "x"}} => trend.alpha: expected a number
    {"trend": {"metric": ["count"], "interval": "1 day", "alpha": 0.5}} => trend.alpha: alpha and beta apply only to the holt method
    {"trend": {"metric": ["count"], "interval": "1 day", "method": "holt", "alpha": 0, "beta": 0.5}} => trend.alpha: alpha must be in (0, 1] and beta in [0, 1]
    {"trend": {"metric": ["count"], "interval": "1 day", "method": "holt", "beta": 0.5}} => trend.alpha: give both alpha and beta, or neither to fit them
    {"trend": {"metric": ["count"], "interval": "1 day", "method": "arima"}} => trend.method: unknown method "arima"; use "linear" or "holt"
    // retention and cohort
    {"retention": {"return-event": true}} => retention.cohort-event: missing
    {"cohort": {"cohort-event": true}} => cohort.return-event: missing
    {"retention": {"cohort-event": [], "return-event": true}} => retention.cohort-event: an empty array; expected [operator, ...]
    {"retention": {"cohort-event": true, "return-event": true, "period": "year"}} => retention.period: cohorts: unknown period "year"; use 'day', 'week' or 'month'
    {"retention": {"cohort-event": true, "return-event": true, "periods": 0}} => retention.periods: expected at least 1
    {"retention": {"cohort-event": true, "return-event": true, "periods": 1001}} => retention.periods: expected a whole number from 0 to 1000
    {"retention": {"cohort-event": true, "return-event": true, "entity": ["x"]}} => retention.entity: expected a string
    // funnel
    {"funnel": {"window": "1 day"}} => funnel.steps: missing
    {"funnel": {"steps": [], "window": "1 day"}} => funnel.steps: expected a list of 1 to 32 conditions
    {"funnel": {"steps": true, "window": "1 day"}} => funnel.steps: expected a list of 1 to 32 conditions
    {"funnel": {"steps": [true, ["=", "a"]], "window": "1 day"}} => funnel.steps[1]: "=" takes 2 arguments, got 1 argument
    {"funnel": {"steps": [true]}} => funnel.window: missing
    {"funnel": {"steps": [true], "window": "1 month"}} => funnel.window: the window cannot be in months; use days
    {"funnel": {"steps": [true], "window": 0}} => funnel.window: expected a positive interval such as "1 hour", "15 minutes", "1 day" or "1 month", or a number of seconds
    {"funnel": {"steps": [true], "window": "1 day", "entity": 1}} => funnel.entity: expected a string
    {"funnel": {"steps": [true], "window": "1 day", "time-column": 1}} => funnel.time-column: expected a string
    {"funnel": {"steps": [true], "window": "1 day", "breakdown": ["a", "b"]}} => funnel.breakdown: expected one column
    {"funnel": {"steps": [true], "window": "1 day", "breakdown": [null]}} => funnel.breakdown[0]: expected a column name
    {"funnel": {"steps": [true], "window": "1 day", "mode": 2}} => funnel.mode: expected a string
"#;

/// What the parser reads, where the compiler needs to tell nodes apart.
#[test]
fn the_ast_keeps_what_the_compiler_needs() {
    let q = document(&doc(json!({
        "select": ["*", "payload.a", ["sum", "amount"], ["percentile", "x", 0.9], ["as", ["count"], "n"]],
        "where": ["and", ["=", "a", "text"], ["=", ["col", "b"], ["lit", "text"]], ["since", ["days-ago", 2]]],
        "order-by": [["desc", "n"], ["col", "a"]],
        "limit": 3,
    })))
    .unwrap();
    let Body::Select(s) = &q.body else {
        panic!("{q:?}")
    };
    assert!(s.star);
    let names: Vec<Option<&str>> = s
        .items
        .iter()
        .map(|i| match i {
            SelectItem::Name(n) => Some(n.item.as_str()),
            SelectItem::Expr { name, .. } => name.as_deref(),
        })
        .collect();
    assert_eq!(
        names,
        [
            Some("payload.a"),
            Some("sum_amount"),
            Some("percentile_x_0_9"),
            None
        ]
    );
    let Some(ExprKind::Logic { all: true, terms }) = q.filter.as_ref().map(|f| &f.kind) else {
        panic!("{q:?}")
    };
    // a string on the right is text (checked against the left's type);
    // ["lit", ...] is a literal, and ["col", name] a column at its [1]
    let ExprKind::Compare { right, .. } = &terms[0].kind else {
        panic!()
    };
    assert_eq!(right.kind, ExprKind::Text("text".into()));
    let ExprKind::Compare { left, right, .. } = &terms[1].kind else {
        panic!()
    };
    assert_eq!(left.kind, ExprKind::Column("b".into()));
    assert_eq!(left.path.to_string(), "where[2][1]");
    assert_eq!(right.kind, ExprKind::Literal(Literal::Text("text".into())));
    let ExprKind::TimeBound { until: false, at } = &terms[2].kind else {
        panic!()
    };
    assert_eq!(
        at.kind,
        InstantKind::Ago {
            amount: 2.0,
            seconds: 86_400
        }
    );
    assert_eq!(at.path.to_string(), "where[3][1]");
    assert!(!q.order_by[0].ascending && q.order_by[1].ascending);
    let SortKey::Expr(e) = &q.order_by[0].key else {
        panic!()
    };
    assert_eq!(
        (e.path.to_string(), &e.kind),
        ("order-by[0][1]".into(), &ExprKind::Name("n".into()))
    );
    assert_eq!(q.limit, Some(3));

    // after a form, a sort key that is not a name is kept as its path
    let q = document(&doc(json!({
        "trend": {"metric": ["count"], "interval": "1 day"},
        "order-by": [["asc", ["count"]], "time"],
    })))
    .unwrap();
    let SortKey::NotAName(p) = &q.order_by[0].key else {
        panic!("{q:?}")
    };
    assert_eq!(p.to_string(), "order-by[0][1]");
}
