//! A subscription's reads from the buffer against its SQL: the same rows,
//! types and order for every range, and the SQL wherever the buffer does
//! not hold the whole range.

use super::*;
use crate::ingest::{BodyFormat, parse_events};
use crate::service::tests::{fixture, who};
use arrow::util::pretty::pretty_format_batches;

/// Events of varied shapes: some lack `amount` or `country`, and from
/// `with_plan` on they have a `plan` column the table did not have.
fn body(round: usize, n: usize, with_plan: bool) -> Vec<u8> {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let k = round * 1000 + i;
            let kind = ["view", "buy", "quit"][k % 3];
            let mut e = serde_json::json!({
                "event_type": kind,
                "entity_id": format!("u{}", k % 17),
                "payload": {},
            });
            if !k.is_multiple_of(4) {
                e["payload"]["amount"] = serde_json::json!((k % 50) as f64 * 1.5);
            }
            if !k.is_multiple_of(5) {
                e["payload"]["country"] = serde_json::json!(["DE", "FR", "US"][k % 3]);
            }
            if with_plan {
                e["payload"]["plan"] = serde_json::json!(["free", "pro"][k % 2]);
            }
            e.to_string()
        })
        .collect();
    lines.join("\n").into_bytes()
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// The names and types of each batch's columns.
fn types(batches: &[RecordBatch]) -> Vec<Vec<(String, DataType)>> {
    batches
        .iter()
        .map(|b| {
            let fields = b.schema().fields().iter().cloned().collect::<Vec<_>>();
            fields
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect()
        })
        .collect()
}

/// A read of `(after, upto]` from the buffer (`None`: declined) and by
/// the SQL.
async fn compare(
    s: &Arc<Service>,
    reader: &Principal,
    sub: &Subscription,
    after: u64,
    upto: u64,
) -> (Option<Vec<RecordBatch>>, Vec<RecordBatch>) {
    let view = s.db().view_after(&sub.table, Some(after));
    let compiled = BufferRead::compile(
        &s.queries,
        reader,
        "events",
        &view.schema,
        sub.request.columns.as_deref(),
        &format!("TRUE{}", sub.conditions),
    )
    .expect("these conditions compile");
    let buffered = compiled.read(&view, after, upto, PAGE);
    (buffered, sub.read_sql(after, upto).await.unwrap())
}

/// A read of `(after, upto]` from the buffer: not declined, and the rows
/// and column types of the SQL.
async fn same_as_sql(
    s: &Arc<Service>,
    reader: &Principal,
    sub: &Subscription,
    after: u64,
    upto: u64,
) {
    let (buffered, sql) = compare(s, reader, sub, after, upto).await;
    let buffered = buffered.expect("the range is in the buffer");
    assert_eq!(
        text(&buffered),
        text(&sql),
        "{:?} ({after}, {upto}]",
        sub.request
    );
    for columns in types(&buffered) {
        assert_eq!(columns, types(&sql)[0], "{:?}", sub.request);
    }
}

#[test]
fn reads_from_the_buffer_return_what_the_sql_returns() {
    let f = fixture(|_| {});
    let s = &f.service;
    let (writer, reader) = (who(Role::Writer), who(Role::Reader));
    let table: TableName = "events".parse().unwrap();
    f.runtime.block_on(async {
        let ingest = |round: usize, n: usize, with_plan: bool| {
            let events = parse_events(&body(round, n, with_plan), BodyFormat::Ndjson).unwrap();
            let (db, tenant, table) = (s.db().clone(), writer.tenant.clone(), table.clone());
            async move { db.ingest(&tenant, &table, events).await.unwrap() }
        };
        let requests: Vec<Subscribe> = {
            let base = Subscribe::new(table.clone(), Start::Earliest);
            vec![
                base.clone(),
                Subscribe {
                    filter: Some("amount > 10".into()),
                    ..base.clone()
                },
                Subscribe {
                    filter: Some("country = 'DE' OR amount IS NULL".into()),
                    columns: Some(vec!["country".into(), "amount".into()]),
                    ..base.clone()
                },
                Subscribe {
                    where_dsl: Some(serde_json::json!(["=", "event_type", "buy"])),
                    part: Some((1, 3)),
                    ..base.clone()
                },
                Subscribe {
                    until: Some(150),
                    columns: Some(vec!["entity_id".into()]),
                    ..base.clone()
                },
            ]
        };
        // Rows in the buffer, then a flush (the files hold positions up to
        // 200), then more rows, a new column among them.
        ingest(0, 120, false).await;
        ingest(1, 80, false).await;
        let mut subscriptions = Vec::new();
        for request in &requests {
            subscriptions.push(s.subscribe(&reader, request.clone()).await.unwrap());
        }
        for sub in subscriptions.iter_mut() {
            for (after, upto) in [(0, 200), (0, 37), (37, 121), (119, 120), (200, 400)] {
                same_as_sql(s, &reader, sub, after, upto).await;
            }
        }
        s.db().flush_all().await.unwrap();
        ingest(2, 150, true).await;
        ingest(3, 60, false).await;
        for sub in subscriptions.iter_mut() {
            // Ranges reaching into the files are left to the SQL.
            let (buffered, _) = compare(s, &reader, sub, 150, 260).await;
            assert!(buffered.is_none(), "{:?}", sub.request);
            for (after, upto) in [(200, 410), (200, 260), (349, 351), (380, 900)] {
                same_as_sql(s, &reader, sub, after, upto).await;
            }
            // Through the subscription: a page at a time, each event once.
            let mut read = sub.read(200, 410).await.unwrap();
            read.retain(|b| b.num_rows() > 0);
            let sql = sub.read_sql(200, 410).await.unwrap();
            assert_eq!(text(&read), text(&sql));
            assert!(matches!(&sub.buffered, Some((_, Some(_)))));
        }
        // A page is cut at its limit.
        let view = s.db().view_after(&subscriptions[0].table, Some(200));
        let all =
            BufferRead::compile(&s.queries, &reader, "events", &view.schema, None, "TRUE").unwrap();
        let page = all.read(&view, 200, 410, 25).unwrap();
        let positions: Vec<u64> = page.iter().filter_map(last_position).collect();
        assert_eq!(page.iter().map(|b| b.num_rows()).sum::<usize>(), 25);
        assert_eq!(positions.last(), Some(&225));
        // Conditions whose value depends on when they are evaluated, and
        // ones that are not a row's expression, are left to the SQL.
        for conditions in [
            "TRUE AND ingested_at < now()",
            "TRUE AND random() < 0.5",
            "TRUE AND amount IN (SELECT 1)",
            "TRUE AND no_such_column = 1",
        ] {
            assert!(
                BufferRead::compile(
                    &s.queries,
                    &reader,
                    "events",
                    &view.schema,
                    None,
                    conditions
                )
                .is_none(),
                "{conditions}"
            );
        }
    });
}
