//! The database the DSL and SQL harnesses query: a real [`Database`] in a
//! temporary directory, one tenant with two tables, and that tenant's
//! query sessions as the server makes them.
//!
//! - `events`: 420 events over twelve days. The first two chunks are
//!   flushed (Delta files, several per chunk, one per day), the last two
//!   stay in the buffer; the last chunk adds a payload column (`late`)
//!   that the files lack. Payload fields are missing or null now and then,
//!   `amount` is sometimes a string (kept in `_overflow`), and some events
//!   share a timestamp.
//! - `small`: five buffered events with every payload field.
//!
//! The data comes from a fixed seed, so a failing query fails again.

use crate::auth::{Principal, Role};
use crate::config::Config;
use crate::db::Database;
use crate::ids::{TableName, TenantId};
use crate::ingest::Event;
use datafusion::prelude::SessionContext;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// 2026-01-01T00:00:00Z in epoch milliseconds.
pub(super) const START_MS: i64 = 1_767_225_600_000;

/// A database with the fixture's tables, and the runtime it lives on.
#[derive(Debug)]
pub(super) struct Fixture {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) engine: Arc<crate::query::QueryEngine>,
    /// Keeps the data directory until the fixture is dropped.
    _dir: tempfile::TempDir,
}

fn tenant() -> TenantId {
    "fuzz".parse().unwrap()
}

/// A reader of the fixture's tenant.
pub(super) fn reader() -> Principal {
    Principal {
        tenant: tenant(),
        role: Role::Reader,
        subject: None,
    }
}

impl Fixture {
    pub(super) fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = runtime.block_on(async {
            let db = Database::open(Config::for_tests(dir.path())).await.unwrap();
            let mut rng = StdRng::seed_from_u64(16);
            let events: TableName = "events".parse().unwrap();
            let sizes = [(140, false, true), (120, false, true), (100, false, false)];
            let mut next = 0;
            for (n, late, flush) in sizes.into_iter().chain([(60, true, false)]) {
                let chunk = (next..next + n).map(|i| event(&mut rng, i, late));
                let chunk: Vec<Event> = chunk.collect();
                next += n;
                db.ingest(&tenant(), &events, chunk).await.unwrap();
                if flush {
                    let table = db.table(&tenant(), &events).unwrap();
                    db.flush_table(&table).await.unwrap();
                }
            }
            let small: Vec<Event> = (0..5).map(|i| full_event(&mut rng, i)).collect();
            db.ingest(&tenant(), &"small".parse().unwrap(), small)
                .await
                .unwrap();
            db
        });
        let engine = crate::query::QueryEngine::new(db).unwrap();
        Fixture {
            runtime,
            engine,
            _dir: dir,
        }
    }

    /// A session of the fixture's reader, as the server makes one for a
    /// request, with `partitions` target partitions.
    pub(super) fn session(&self, partitions: usize) -> SessionContext {
        let ctx = self.engine.session(&reader()).unwrap();
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = partitions;
        ctx
    }
}

const TYPES: &[&str] = &["view", "cart", "order.placed", "refund", "Login", "ünï"];
const COUNTRIES: &[&str] = &["de", "fr", "us", "jp", "", " de", "DE"];
const NOTES: &[&str] = &[
    "plain",
    "it's",
    "100%",
    "under_score",
    "back\\slash",
    "ünïcödé 😀",
    "",
    "a.b.c",
    "Mixed Case",
];

/// Event `i` of `events`; `late` events carry the `late` field.
fn event(rng: &mut StdRng, i: usize, late: bool) -> Event {
    let mut payload = Map::new();
    // A field is missing or null one time in ten each.
    let maybe = |rng: &mut StdRng, payload: &mut Map<String, Value>, key: &str, v: Value| {
        match rng.random_range(0..10) {
            0 => None,
            1 => payload.insert(key.into(), Value::Null),
            _ => payload.insert(key.into(), v),
        };
    };
    // The first event's amount makes the column a double.
    let amount = match rng.random_range(0..12) {
        _ if i == 0 => json!(1.5),
        0 => json!("lots"),
        1 => json!(0),
        2 => json!(-(rng.random_range(1..500) as f64) / 4.0),
        _ => json!(rng.random_range(0..2000) as f64 / 4.0),
    };
    if i == 0 {
        payload.insert("amount".into(), amount);
    } else {
        maybe(rng, &mut payload, "amount", amount);
    }
    let qty = json!(rng.random_range(0..6));
    maybe(rng, &mut payload, "qty", qty);
    let country = json!(COUNTRIES.choose(rng).unwrap());
    maybe(rng, &mut payload, "country", country);
    let vip = json!(rng.random_bool(0.3));
    maybe(rng, &mut payload, "vip", vip);
    let tags = match rng.random_range(0..3) {
        0 => json!(["a", "b"][..rng.random_range(0..3)]),
        1 => json!({"k": COUNTRIES.choose(rng).unwrap(), "n": rng.random_range(0..4)}),
        _ => json!([rng.random_range(0..10), "x"]),
    };
    maybe(rng, &mut payload, "tags", tags);
    let note = json!(NOTES.choose(rng).unwrap());
    maybe(rng, &mut payload, "note", note);
    if late {
        let v = json!(rng.random_range(-5..5));
        maybe(rng, &mut payload, "late", v);
    }
    // Shared timestamps now and then: ties for sorts and funnels.
    let ms = if rng.random_bool(0.15) {
        START_MS + rng.random_range(0..12) * 86_400_000
    } else {
        START_MS + rng.random_range(0..12 * 86_400_000)
    };
    Event {
        event_id: Some(format!("e{i:04}")),
        event_type: TYPES.choose(rng).unwrap().to_string(),
        entity_id: format!("u{}", rng.random_range(0..23)),
        timestamp: Some(ms * 1000),
        payload,
        expected_version: Default::default(),
        schema_version: None,
    }
}

/// Event `i` of `small`: every field present.
fn full_event(rng: &mut StdRng, i: usize) -> Event {
    let mut e = event(rng, i, true);
    e.event_id = Some(format!("s{i}"));
    let payload = json!({
        "amount": i as f64 * 2.5, "qty": i, "country": COUNTRIES[i], "vip": i.is_multiple_of(2),
        "tags": {"k": "de"}, "note": NOTES[i], "late": i,
    });
    e.payload = payload.as_object().unwrap().clone();
    e
}
