//! The DSL compiler, fed generated documents in a real tenant session
//! (the fixture's): well-formed ones over its tables (plain selects,
//! groupings and every analytics form, built from typed expressions),
//! junk shaped like documents, and well-formed documents with one node
//! replaced by junk.
//!
//! Properties: nothing panics; a well-formed document compiles and runs;
//! any other document either runs or is refused with a 4xx, a DSL error
//! naming its JSON path or an engine error that is the user's; an
//! internal error never hides behind a DSL error.

use super::compare::refusal;
use super::fixture::Fixture;
use super::{Tally, cases, run};
use crate::dsl::{QueryError, compile};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

type V = BoxedStrategy<Value>;

fn pick(items: Vec<Value>) -> V {
    prop::sample::select(items).boxed()
}

fn names(items: &[&str]) -> V {
    pick(items.iter().map(|s| json!(s)).collect())
}

/// Typed expressions and conditions over the fixture's columns.
#[derive(Clone)]
struct Exprs {
    num: V,
    text: V,
    cond: V,
}

fn leaves() -> Exprs {
    Exprs {
        num: prop_oneof![
            3 => names(&["amount", "qty", "late"]),
            // A bare "payload.amount" is a column in most places but a text
            // literal as a function's argument; `["col", …]` is one everywhere.
            1 => Just(json!(["col", "payload.amount"])),
            1 => (-20i64..20).prop_map(|n| json!(n)),
            1 => pick(vec![json!(0.5), json!(-2.25), json!(1e3)]),
        ]
        .boxed(),
        text: prop_oneof![
            3 => names(&["event_type", "entity_id", "country", "note", "tags", "event_id"]),
            1 => names(&["payload.tags.k", "tags.k"]),
            1 => pick(vec![json!(["payload", "tags", "k"]), json!(["col", "note"]), json!(["lit", "x"])]),
        ]
        .boxed(),
        cond: prop_oneof![
            2 => (names(&["=", "!="]), any::<bool>()).prop_map(|(op, b)| json!([op, "vip", b])),
            1 => Just(json!(["is-null", "amount"])),
            1 => names(&["2026-01-03", "2026-01-08T12:00:00Z"]).prop_map(|t| json!(["since", t])),
            1 => (1u32..400).prop_map(|n| json!(["until", ["days-ago", n]])),
        ]
        .boxed(),
    }
}

/// Expressions one level deeper than `b`'s.
fn grow(b: &Exprs) -> Exprs {
    let (n, t, c) = (&b.num, &b.text, &b.cond);
    let divisor = names(&["amount", "qty"]).prop_union(pick(vec![json!(0.5), json!(2.5)]).boxed());
    let any = prop_oneof![n.clone(), t.clone()];
    let num = prop_oneof![
        4 => n.clone(),
        2 => (names(&["+", "-", "*"]), n.clone(), n.clone()).prop_map(|(op, x, y)| json!([op, x, y])),
        1 => (names(&["/", "%"]), n.clone(), divisor).prop_map(|(op, x, y)| json!([op, x, y])),
        1 => (names(&["abs", "round", "ceil"]), n.clone()).prop_map(|(f, x)| json!(["fn", f, x])),
        1 => t.clone().prop_map(|x| json!(["fn", "length", x])),
        1 => (n.clone(), -5i64..5).prop_map(|(x, d)| json!(["fn", "coalesce", x, d])),
    ]
    .boxed();
    let text = prop_oneof![
        4 => t.clone(),
        1 => (names(&["upper", "lower", "trim", "reverse"]), t.clone()).prop_map(|(f, x)| json!(["fn", f, x])),
        1 => (t.clone(), names(&["-", "x", ""])).prop_map(|(x, s)| json!(["fn", "concat", x, s])),
    ]
    .boxed();
    let number = prop_oneof![
        (-10i64..600).prop_map(|v| json!(v)),
        pick(vec![json!(0.25), json!("12")])
    ];
    let time = prop_oneof![
        names(&[
            "2026-01-04",
            "2026-01-06T06:30:00Z",
            "2026-01-09T00:00:00+02:00"
        ]),
        (0u32..30).prop_map(|d| json!(["days-ago", d])),
        (0u32..100).prop_map(|h| json!(["hours-ago", h])),
        Just(json!(["now"])),
    ];
    let cond = prop_oneof![
        3 => c.clone(),
        3 => (names(&["=", "!=", "<", "<=", ">", ">="]), n.clone(), number.clone())
            .prop_map(|(op, x, v)| json!([op, x, v])),
        // A bare string on the right is a value: a column there is `["col", name]`.
        1 => (names(&["<", ">="]), n.clone(), n.clone()).prop_map(|(op, x, y)| {
            let y = if y.is_string() { json!(["col", y]) } else { y };
            json!([op, x, y])
        }),
        2 => (names(&["=", "!=", ">"]), t.clone(), names(&["de", "", "view", "u1", "ünï"]))
            .prop_map(|(op, x, v)| json!([op, x, v])),
        1 => (names(&["<", ">="]), names(&["timestamp", "ingested_at"]), time.clone())
            .prop_map(|(op, col, v)| json!([op, col, v])),
        1 => (names(&["since", "until"]), time).prop_map(|(op, v)| json!([op, v])),
        1 => (names(&["in", "not-in"]), t.clone()).prop_map(|(op, x)| json!([op, x, ["de", "fr", ""]])),
        1 => (names(&["in", "not-in"]), n.clone()).prop_map(|(op, x)| json!([op, x, [0, 1.5, 250]])),
        1 => (n.clone(), number.clone(), number).prop_map(|(x, lo, hi)| json!(["between", x, lo, hi])),
        1 => (names(&["like", "ilike"]), t.clone(), names(&["%e%", "u1_", "%.%", "DE"]))
            .prop_map(|(op, x, p)| json!([op, x, p])),
        1 => (names(&["is-null", "not-null"]), any).prop_map(|(op, x)| json!([op, x])),
        1 => (t.clone(), names(&["e", "."])).prop_map(|(x, s)| json!(["contains", x, s])),
        2 => (names(&["and", "or"]), prop::collection::vec(c.clone(), 1..4)).prop_map(|(op, cs)| {
            let mut items = vec![op];
            items.extend(cs);
            Value::Array(items)
        }),
        1 => c.clone().prop_map(|x| json!(["not", x])),
    ]
    .boxed();
    Exprs { num, text, cond }
}

fn exprs(depth: usize) -> Exprs {
    (0..depth).fold(leaves(), |e, _| grow(&e))
}

fn aggregation(e: &Exprs) -> V {
    let any = prop_oneof![e.num.clone(), e.text.clone()];
    prop_oneof![
        2 => Just(json!(["count"])),
        1 => any.clone().prop_map(|x| json!(["count", x])),
        3 => (names(&["sum", "avg", "min", "max", "stddev", "variance", "median"]), e.num.clone())
            .prop_map(|(f, x)| json!([f, x])),
        1 => (names(&["percentile", "approx-percentile"]), e.num.clone(), pick(vec![json!(0), json!(0.5), json!(0.95), json!(1)]))
            .prop_map(|(f, x, p)| json!([f, x, p])),
        1 => (names(&["count-distinct", "first", "last"]), any)
            .prop_map(|(f, x)| json!([f, x])),
        // The engine's approximate distinct count takes no floats.
        1 => e.text.clone().prop_map(|x| json!(["approx-count-distinct", x])),
    ]
    .boxed()
}

/// A numeric aggregation: for `having` and the forms' metrics.
fn num_aggregation(e: &Exprs) -> V {
    prop_oneof![
        Just(json!(["count"])),
        (names(&["sum", "avg", "max", "median"]), e.num.clone()).prop_map(|(f, x)| json!([f, x])),
        (names(&["count-distinct", "count"]), e.text.clone()).prop_map(|(f, x)| json!([f, x])),
    ]
    .boxed()
}

/// Aggregations named `<prefix>0`, `<prefix>1`, ...
fn named_aggregations(e: &Exprs, prefix: &'static str) -> BoxedStrategy<Vec<Value>> {
    prop::collection::vec(aggregation(e), 1..4)
        .prop_map(move |aggs| {
            aggs.into_iter()
                .enumerate()
                .map(|(i, a)| json!(["as", a, format!("{prefix}{i}")]))
                .collect()
        })
        .boxed()
}

fn direction() -> V {
    names(&["asc", "desc"])
}

/// A plain or grouped selection.
fn selection(e: &Exprs) -> BoxedStrategy<Map<String, Value>> {
    let plain = (
        prop::collection::vec(
            prop_oneof![e.num.clone(), e.text.clone(), e.cond.clone()],
            0..4,
        ),
        prop::option::of((direction(), e.num.clone())),
        any::<bool>(),
    )
        .prop_map(|(items, order, star)| {
            let mut select: Vec<Value> = items
                .into_iter()
                .enumerate()
                .map(|(i, x)| json!(["as", x, format!("c{i}")]))
                .collect();
            if star {
                select.insert(0, json!("*"));
            }
            let mut doc = Map::new();
            if !select.is_empty() {
                doc.insert("select".into(), Value::Array(select));
            }
            if let Some((dir, key)) = order {
                doc.insert("order-by".into(), json!([[dir, key], "event_id"]));
            }
            doc
        });
    let keys = prop::collection::vec(prop_oneof![e.num.clone(), e.text.clone()], 1..3);
    let grouped = (
        keys,
        named_aggregations(e, "a"),
        prop::option::of((num_aggregation(e), 0i64..5)),
        direction(),
    )
        .prop_map(|(keys, aggs, having, dir)| {
            let group: Vec<Value> = keys
                .into_iter()
                .enumerate()
                .map(|(i, k)| json!(["as", k, format!("g{i}")]))
                .collect();
            let key_names: Vec<Value> = (0..group.len()).map(|i| json!(format!("g{i}"))).collect();
            let mut doc = Map::new();
            doc.insert("group-by".into(), Value::Array(group));
            let select: Vec<Value> = key_names.iter().cloned().chain(aggs).collect();
            doc.insert("select".into(), Value::Array(select));
            if let Some((agg, v)) = having {
                doc.insert("having".into(), json!([">", agg, v]));
            }
            doc.insert("order-by".into(), json!([[dir, "g0"]]));
            doc
        });
    prop_oneof![plain, grouped].boxed()
}

/// One of the analytics forms, as its key and its object.
fn form(e: &Exprs) -> BoxedStrategy<(&'static str, Value)> {
    let interval = pick(vec![
        json!("1 hour"),
        json!("6 hours"),
        json!("1 day"),
        json!("1 month"),
        json!(86400),
    ]);
    let bounds = prop::option::of(pick(vec![
        json!(["2026-01-01", "2026-01-13T00:00:00Z"]),
        json!([["days-ago", 400], ["now"]]),
        json!(["2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z"]),
    ]));
    let with_bounds = |mut spec: Map<String, Value>, bounds: Option<Value>| {
        if let Some(b) = bounds {
            spec.insert("start".into(), b[0].clone());
            spec.insert("end".into(), b[1].clone());
        }
        Value::Object(spec)
    };
    let series = (
        interval.clone(),
        named_aggregations(e, "m"),
        prop::option::of(names(&["country", "event_type"])),
        bounds.clone(),
        names(&["null", "zero", "previous", "linear"]),
    )
        .prop_map(move |(i, aggs, by, b, fill)| {
            let mut spec = json!({"interval": i, "aggregations": aggs})
                .as_object()
                .unwrap()
                .clone();
            if let Some(by) = by {
                spec.insert("by".into(), by);
            }
            if b.is_some() {
                spec.insert("fill".into(), fill);
            }
            ("time-series", with_bounds(spec, b))
        });
    let funnel = (
        prop::collection::vec(e.cond.clone(), 1..4),
        pick(vec![json!("1 day"), json!(3600), json!("4 days")]),
        prop::option::of(names(&[
            "strict_order",
            "strict_deduplication",
            "strict_increase",
            "strict_order,strict_increase",
        ])),
        prop::option::of(names(&["country", "vip"])),
    )
        .prop_map(|(steps, window, mode, breakdown)| {
            let mut spec = json!({"steps": steps, "window": window})
                .as_object()
                .unwrap()
                .clone();
            if let Some(m) = mode {
                spec.insert("mode".into(), m);
            }
            if let Some(b) = breakdown {
                spec.insert("breakdown".into(), b);
            }
            ("funnel", Value::Object(spec))
        });
    let retention = (
        e.cond.clone(),
        e.cond.clone(),
        names(&["day", "week", "month"]),
        1u32..10,
        names(&["retention", "cohort"]),
    )
        .prop_map(|(c, r, period, periods, key)| {
            let key = if key == "cohort" {
                "cohort"
            } else {
                "retention"
            };
            (
                key,
                json!({"cohort-event": c, "return-event": r, "period": period, "periods": periods}),
            )
        });
    let anomalies = (
        num_aggregation(e),
        interval.clone(),
        names(&["zscore", "iqr", "mad"]),
        prop::option::of(pick(vec![json!(1), json!(2.5)])),
        bounds.clone(),
    )
        .prop_map(move |(metric, i, method, k, b)| {
            let mut spec = json!({"metric": metric, "interval": i, "algorithm": method})
                .as_object()
                .unwrap()
                .clone();
            if let Some(k) = k {
                spec.insert("sensitivity".into(), k);
            }
            ("anomalies", with_bounds(spec, b))
        });
    // Holt needs a value in every bucket: it is given bounds, which fill.
    let trend = (num_aggregation(e), interval, 0u32..5, any::<bool>(), bounds).prop_map(
        move |(metric, i, periods, holt, b)| {
            let mut spec = json!({"metric": metric, "interval": i, "periods": periods})
                .as_object()
                .unwrap()
                .clone();
            let b = match (holt, b) {
                (true, b) => {
                    spec.insert("method".into(), json!("holt"));
                    Some(b.unwrap_or(json!(["2026-01-01", "2026-01-13T00:00:00Z"])))
                }
                (false, b) => b,
            };
            ("trend", with_bounds(spec, b))
        },
    );
    prop_oneof![series, funnel, retention, anomalies, trend].boxed()
}

/// A well-formed document over `events` or `small`.
fn document() -> BoxedStrategy<Value> {
    let e = exprs(2);
    let body = prop_oneof![
        3 => selection(&e),
        2 => form(&exprs(1)).prop_map(|(k, spec)| [(k.to_string(), spec)].into_iter().collect()),
    ];
    (
        body,
        names(&["events", "small"]),
        prop::option::of(e.cond.clone()),
        prop::option::of(0u32..30),
        prop::option::weighted(0.2, 1u32..5),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(mut doc, table, filter, limit, offset, explain)| {
            doc.insert("from".into(), table);
            if let Some(w) = filter {
                doc.insert("where".into(), w);
            }
            if let Some(n) = limit {
                doc.insert("limit".into(), json!(n));
            }
            if let Some(n) = offset {
                doc.insert("offset".into(), json!(n));
            }
            if explain {
                doc.insert("explain".into(), json!(true));
            }
            Value::Object(doc)
        })
        .boxed()
}

/// Random JSON, mostly the words of the DSL.
fn junk() -> V {
    let word = names(&[
        "events",
        "small",
        "amount",
        "country",
        "payload.tags.k",
        "payload",
        "=",
        "and",
        "in",
        "between",
        "sum",
        "count",
        "percentile",
        "days-ago",
        "fn",
        "as",
        "col",
        "lit",
        "",
        "*",
        "desc",
        "1 hour",
        "1 month",
        "zscore",
        "holt",
        "strict_order",
        "abs",
        "nope",
        "2026-01-01",
    ]);
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        6 => word,
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            1 => prop::collection::vec((names(&["interval", "steps", "metric", "by", "start", "fill", "x"]), inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.as_str().unwrap().to_string(), v)).collect())),
        ]
    })
    .boxed()
}

/// A document-shaped object of junk.
fn junk_document() -> V {
    let key = names(&[
        "select",
        "from",
        "where",
        "group-by",
        "having",
        "order-by",
        "limit",
        "offset",
        "time-series",
        "funnel",
        "retention",
        "cohort",
        "anomalies",
        "trend",
        "explain",
        "bogus",
    ]);
    prop::collection::vec((key, junk()), 0..5)
        .prop_map(|kvs| {
            let mut doc = Map::new();
            doc.insert("from".into(), json!("events"));
            for (k, v) in kvs {
                doc.insert(k.as_str().unwrap().to_string(), v);
            }
            Value::Object(doc)
        })
        .boxed()
}

/// `doc` with its node number `at` (in pre-order) replaced by `with`.
fn replace_node(doc: &mut Value, at: &mut usize, with: &Value) -> bool {
    if *at == 0 {
        *doc = with.clone();
        return true;
    }
    *at -= 1;
    let children: Vec<&mut Value> = match doc {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(map) => map.values_mut().collect(),
        _ => return false,
    };
    children.into_iter().any(|c| replace_node(c, at, with))
}

/// A well-formed document with one node replaced by junk.
fn mutant() -> V {
    (document(), any::<usize>(), junk())
        .prop_map(|(mut doc, at, with)| {
            let size = count_nodes(&doc);
            replace_node(&mut doc, &mut (at % size), &with);
            doc
        })
        .boxed()
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Compiles and runs `doc`; `Ok(None)` when it ran, `Ok(Some(kind))` when
/// it was refused with a 4xx.
fn outcome(fixture: &Fixture, doc: &Value) -> Result<Option<String>, String> {
    let ctx = fixture.session(4);
    let result = fixture.runtime.block_on(async {
        let plan = compile(&ctx, doc).await?;
        Ok::<_, QueryError>(ctx.execute_logical_plan(plan).await?.collect().await?)
    });
    match result {
        Ok(_) => Ok(None),
        Err(QueryError::Dsl(e)) => {
            if e.path.is_empty() || e.message.contains("Internal error") {
                return Err(format!("a DSL error without a path, or internal: {e}"));
            }
            Ok(Some("dsl".into()))
        }
        Err(QueryError::Engine(e)) => {
            let r = refusal(e);
            if r.is_fault() {
                return Err(format!("{:?} {}: {}", r.class, r.kind, r.message));
            }
            Ok(Some(format!("engine {}", r.kind)))
        }
    }
}

/// Which generator a case came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    WellFormed,
    Junk,
    Mutant,
}

fn check(
    fixture: &Fixture,
    source: Source,
    doc: &Value,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let fail = |m: String| TestCaseError::fail(format!("{m}\n{doc}"));
    match (source, outcome(fixture, doc).map_err(fail)?) {
        (Source::WellFormed, None) => tally.add("well-formed ran"),
        (Source::WellFormed, Some(kind)) => {
            let err = fixture.runtime.block_on(async {
                let ctx = fixture.session(4);
                match compile(&ctx, doc).await {
                    Err(QueryError::Dsl(e)) => e.to_string(),
                    Err(QueryError::Engine(e)) => e.to_string(),
                    Ok(plan) => match ctx.execute_logical_plan(plan).await {
                        Ok(df) => df
                            .collect()
                            .await
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default(),
                        Err(e) => e.to_string(),
                    },
                }
            });
            return Err(fail(format!(
                "a well-formed document is refused ({kind}): {err}"
            )));
        }
        (source, None) => tally.add(format!("{source:?} ran").to_lowercase()),
        (source, Some(kind)) => tally.add(format!("{source:?} refused {kind}").to_lowercase()),
    }
    Ok(())
}

#[test]
fn fuzz_dsl_compiler() {
    let cases = cases(60);
    let fixture = Fixture::new();
    let tally = Tally::new("dsl");
    let docs = prop_oneof![
        2 => document().prop_map(|d| (Source::WellFormed, d)),
        1 => junk_document().prop_map(|d| (Source::Junk, d)),
        2 => mutant().prop_map(|d| (Source::Mutant, d)),
    ];
    run(cases, &docs, |(source, doc)| {
        check(&fixture, source, &doc, &tally)
    });
    tally.report(cases);
}
