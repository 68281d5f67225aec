//! A projection's next version over another table: promoting it before
//! it has folded that table is refused with where it is, and once it has,
//! it serves that table's answer.

use crate::projections::{round, state};
use crate::support::*;
use serde_json::json;
use std::time::Duration;

const V1: &str = "SELECT entity_id, count(*) AS events FROM events GROUP BY entity_id";
const V2: &str =
    "SELECT entity_id, count(*) AS orders, sum(amount) AS spent FROM orders GROUP BY entity_id";

#[test]
fn a_version_over_another_table_is_promoted_only_once_it_has_caught_up() {
    let s = TestServer::start(&[]);
    s.ingest(&round(31, 200));
    // A large table for the next version to fold: its first promote
    // comes long before that is done.
    for seed in 0..40 {
        let r = s.post(
            "/v1/events?table=orders",
            "application/json",
            round(100 + seed, 2_500).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let define = |query: &str, version: u32| {
        s.post(
            "/v1/projections",
            "application/json",
            json!({"name": "spend", "query": query, "version": version, "promote": "manual"})
                .to_string(),
        )
    };
    assert_eq!(define(V1, 1).status, 201);
    let r = define(V2, 2);
    assert_eq!(r.status, 202, "{}", r.text());
    let r = s.post("/v1/projections/spend/promote", "application/json", "");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.error().contains("of table \"orders\"") && r.error().contains("once it has caught up"),
        "{}",
        r.error()
    );
    assert_eq!(s.get("/v1/projections/spend").json()["version"], 1);

    let highest = s.scalar("SELECT max(position) FROM orders");
    wait_until("version 2 folds orders", Duration::from_secs(120), || {
        s.get("/v1/projections/spend").json()["next"]["position"] == highest
    });
    let r = s.post("/v1/projections/spend/promote", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let i = s.get("/v1/projections/spend").json();
    assert_eq!(
        (i["version"].clone(), i["table"].clone()),
        (json!(2), json!("orders")),
        "{i}"
    );
    // More orders fold into it; events of the old table do not.
    s.post(
        "/v1/events?table=orders",
        "application/json",
        round(7, 300).to_string(),
    );
    s.ingest(&round(8, 300));
    let highest = s.scalar("SELECT max(position) FROM orders");
    wait_until(
        "version 2 folds the new orders",
        Duration::from_secs(60),
        || s.get("/v1/projections/spend").json()["position"] == highest,
    );
    let want = s.sql(&format!("{V2} ORDER BY entity_id"));
    assert_eq!(state(&s, "/v1/projections/spend/state"), want);
}
