//! Tests of taking a projection's query apart.

use super::*;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

/// A session with the table `events` (the fixed columns, `amount` and
/// `plan`) and `other`, named as a tenant's session names them.
fn session() -> SessionContext {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(crate::query::CATALOG, crate::query::SCHEMA);
    let ctx = SessionContext::new_with_config(config);
    let mut fields = crate::schema::fixed_fields();
    fields.push(Field::new("amount", DataType::Float64, true));
    fields.push(Field::new("plan", DataType::Utf8, true));
    let schema = Arc::new(Schema::new(fields));
    for name in ["events", "other"] {
        let table = MemTable::try_new(schema.clone(), vec![vec![]]).unwrap();
        ctx.register_table(name, Arc::new(table)).unwrap();
    }
    ctx
}

async fn define_sql(sql: &str) -> Result<Definition, Refusal> {
    let plan = session().state().create_logical_plan(sql).await.unwrap();
    define(&plan)
}

async fn refusal(sql: &str) -> String {
    match define_sql(sql).await {
        Ok(d) => panic!("{sql} was accepted: {d:?}"),
        Err(r) => r.to_string(),
    }
}

#[tokio::test]
async fn an_aggregate_query_is_taken_apart() {
    let d = define_sql(
        "SELECT entity_id AS user, count(*) AS events, \
                sum(amount) FILTER (WHERE event_type = 'order') AS revenue, \
                sum(amount) / count(*) AS per_event, \
                count(DISTINCT plan) AS plans, max(timestamp) AS seen, avg(amount), \
                last_value(plan ORDER BY timestamp) AS current_plan, \
                first_value(plan ORDER BY position DESC) AS latest_plan \
         FROM events e WHERE e.event_type <> 'noise' GROUP BY entity_id",
    )
    .await
    .unwrap();
    assert_eq!(d.table, "events");
    assert_eq!(d.keys.len(), 1);
    let folds: Vec<Fold> = d.aggregates.iter().map(|a| a.fold).collect();
    assert_eq!(
        folds,
        [
            Fold::Count,
            Fold::Sum,
            Fold::Sum,
            Fold::CountDistinct,
            Fold::Max,
            Fold::Avg,
            Fold::Last(OrderKey::Timestamp),
            Fold::Last(OrderKey::Position),
        ]
    );
    // count(*) folds every row; the FILTER names the table's own column.
    assert!(d.aggregates[0].arg.is_none());
    let revenue = d
        .aggregates
        .iter()
        .find(|a| a.filter.is_some())
        .expect("the filtered sum");
    assert_eq!(
        revenue.filter.as_ref().unwrap().to_string(),
        "event_type = Utf8(\"order\")"
    );
    assert_eq!(
        d.filter.as_ref().unwrap().to_string(),
        "event_type != Utf8(\"noise\")"
    );
    let names: Vec<&str> = d
        .output_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "user",
            "events",
            "revenue",
            "per_event",
            "plans",
            "seen",
            "avg(e.amount)",
            "current_plan",
            "latest_plan"
        ]
    );
    // The state holds the key and one column per aggregate.
    assert_eq!(
        d.state_schema.fields().len(),
        1 + d.aggregates.len(),
        "{:?}",
        d.state_schema
    );
}

#[tokio::test]
async fn a_global_projection_has_no_key() {
    let d = define_sql("SELECT count(*) AS n, min(amount) FROM events")
        .await
        .unwrap();
    assert!(d.keys.is_empty());
    assert_eq!(d.aggregates.len(), 2);
    assert!(d.filter.is_none());
}

#[tokio::test]
async fn queries_that_cannot_be_maintained_are_refused_with_the_part_and_why() {
    let cases = [
        (
            "SELECT entity_id, count(*), row_number() OVER (ORDER BY entity_id) FROM events GROUP BY entity_id",
            "a window function's value depends on the rows around each row",
        ),
        (
            "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY n DESC LIMIT 10",
            "LIMIT: a projection keeps every group",
        ),
        (
            "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY n",
            "ORDER BY: a projection's state has no order",
        ),
        (
            "SELECT e.entity_id, count(*) FROM events e JOIN other o ON e.event_id = o.event_id GROUP BY e.entity_id",
            "a join: a projection reads one table",
        ),
        (
            "SELECT event_type, median(amount) FROM events GROUP BY event_type",
            "median(events.amount): median cannot be updated from new events alone",
        ),
        (
            "SELECT event_type, approx_percentile_cont(amount, 0.5) FROM events GROUP BY event_type",
            "approx_percentile_cont cannot be updated",
        ),
        (
            "SELECT entity_id, amount FROM events",
            "the query: it has no aggregate",
        ),
        (
            "SELECT entity_id, count(*) FROM events WHERE timestamp > now() - INTERVAL '1 day' GROUP BY entity_id",
            "now() in WHERE: its value changes over time",
        ),
        (
            "SELECT entity_id, count(*) FROM events WHERE entity_id IN (SELECT entity_id FROM other) GROUP BY entity_id",
            "a subquery in WHERE",
        ),
        (
            "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id HAVING count(*) > 1",
            "HAVING: filter the projection's rows when reading it",
        ),
        (
            "SELECT sum(DISTINCT amount) FROM events",
            "sum(DISTINCT events.amount): DISTINCT is supported only in count(DISTINCT",
        ),
        (
            "SELECT last_value(plan) FROM events",
            "last_value(events.plan): needs ORDER BY timestamp or ORDER BY position",
        ),
        (
            "SELECT last_value(plan ORDER BY amount) FROM events",
            "ORDER BY events.amount: ordered by timestamp or position only",
        ),
        (
            "SELECT event_type, count(*) FROM events GROUP BY ROLLUP(event_type)",
            "GROUPING SETS, ROLLUP or CUBE",
        ),
        (
            "SELECT t, count(*) FROM (SELECT event_type AS t FROM events) GROUP BY t",
            "a subquery in FROM",
        ),
        (
            "SELECT DISTINCT event_type FROM events",
            "SELECT DISTINCT: group by the columns instead",
        ),
    ];
    for (sql, expected) in cases {
        let message = refusal(sql).await;
        assert!(
            message.contains(expected),
            "{sql}\n  refused with: {message}\n  expected to contain: {expected}"
        );
    }
}
