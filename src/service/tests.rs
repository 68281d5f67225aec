//! Each refusal of the service, through its calls over a real database:
//! who is refused, of what kind, with which message.

use super::caller::{Credentials, RequestInfo};
use super::query::Interface;
use super::*;
use crate::auth::{Principal, Role};
use crate::config::Config;
use crate::ids::TenantId;

pub(super) struct Fixture {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) service: Arc<Service>,
    _dir: tempfile::TempDir,
}

pub(super) fn fixture(configure: impl FnOnce(&mut Config)) -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    configure(&mut config);
    let service = runtime.block_on(async {
        let verifier = crate::auth::Verifier::from_config(&config.auth)
            .unwrap()
            .map(Arc::new);
        let rates = Arc::new(RateLimits::from_config(&config).unwrap());
        let db = Database::open(config).await.unwrap();
        Service::new(db, verifier, rates).unwrap()
    });
    Fixture {
        runtime,
        service,
        _dir: dir,
    }
}

pub(super) fn who(role: Role) -> Principal {
    Principal {
        tenant: "acme".parse().unwrap(),
        role,
        subject: Some("tester".into()),
    }
}

fn kind_of<T: std::fmt::Debug>(r: Result<T>) -> (Kind, String) {
    let e = r.expect_err("refused");
    (e.kind, e.message)
}

#[test]
fn query_refusals_have_their_kinds() {
    let f = fixture(|_| {});
    let s = &f.service;
    let reader = who(Role::Reader);
    let huge = "SELECT 1 -- ".to_string() + &"x".repeat(2 << 20);
    let cases: Vec<(&str, Principal, String, Kind, &str)> = vec![
        (
            "empty",
            reader.clone(),
            "  ".into(),
            Kind::Invalid,
            "no SQL given",
        ),
        (
            "too long",
            reader.clone(),
            huge,
            Kind::Invalid,
            "--max-query-bytes",
        ),
        (
            "syntax",
            reader.clone(),
            "SELEKT 1".into(),
            Kind::Invalid,
            "SELEKT",
        ),
        (
            "unknown table",
            reader.clone(),
            "SELECT * FROM nosuch".into(),
            Kind::Invalid,
            "nosuch",
        ),
        (
            "ddl",
            reader.clone(),
            "CREATE TABLE t (a INT)".into(),
            Kind::Invalid,
            "read-only",
        ),
        (
            "set",
            reader.clone(),
            "SET datafusion.execution.batch_size = 1".into(),
            Kind::Invalid,
            "read-only",
        ),
    ];
    for (name, caller, sql, kind, needle) in cases {
        let result = f
            .runtime
            .block_on(s.sql(&caller, &sql, None, Interface::Sql));
        let (got, message) = kind_of(result.map(|_| ()));
        assert_eq!(got, kind, "{name}: {message}");
        assert!(message.contains(needle), "{name}: {message}");
    }
    let ok = f
        .runtime
        .block_on(s.sql(&reader, "SELECT 1", None, Interface::Sql));
    assert!(ok.is_ok());
    let (kind, message) = kind_of(f.runtime.block_on(s.dsl(&reader, b"{not json")).map(|_| ()));
    assert_eq!(kind, Kind::Invalid, "{message}");
    assert!(message.contains("not valid JSON"), "{message}");
    let (kind, message) = kind_of(
        f.runtime
            .block_on(s.dsl(&reader, br#"{"from": "nosuch"}"#))
            .map(|_| ()),
    );
    assert_eq!(kind, Kind::Invalid, "{message}");
    assert!(message.starts_with("from: unknown table"), "{message}");
}

#[test]
fn role_refusals_are_forbidden() {
    let f = fixture(|_| {});
    let s = &f.service;
    let reader = who(Role::Reader);
    let writer = who(Role::Writer);
    let forbidden = |r: Result<()>, what: &str| {
        let (kind, message) = kind_of(r);
        assert_eq!(kind, Kind::Forbidden, "{what}: {message}");
        assert!(message.contains("may not"), "{what}: {message}");
    };
    forbidden(s.admit_ingest(&reader), "ingest by a reader");
    forbidden(s.metrics_text(&writer).map(|_| ()), "metrics by a writer");
    forbidden(
        s.admit_compaction(&writer, None, false, "compact".into())
            .map(|_| ()),
        "compaction by a writer",
    );
    forbidden(
        s.table_settings(&writer, "events").map(|_| ()),
        "settings by a writer",
    );
    let admin = who(Role::Admin);
    let (kind, message) = kind_of(s.table_settings(&admin, "nosuch"));
    assert_eq!(kind, Kind::NotFound, "{message}");
    let (kind, message) = kind_of(s.table_settings(&admin, "no such"));
    assert_eq!(kind, Kind::Invalid, "{message}");
    let (kind, message) = kind_of(s.set_table_settings(&admin, "nosuch", b"{}", "put".into()));
    assert_eq!(kind, Kind::NotFound, "{message}");
}

#[test]
fn rate_limits_refuse_as_overloaded_or_too_large() {
    let f = fixture(|c| {
        c.rate_limit_queries = 1;
        c.rate_limit_events = 10;
    });
    let s = &f.service;
    let reader = who(Role::Reader);
    let first = f
        .runtime
        .block_on(s.sql(&reader, "SELECT 1", None, Interface::Sql));
    assert!(first.is_ok());
    let e = f
        .runtime
        .block_on(s.sql(&reader, "SELECT 1", None, Interface::Sql))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind, Kind::Overloaded, "{}", e.message);
    assert!(e.retry_after.is_some_and(|s| s >= 1));
    // More events at once than the tenant's burst can ever hold.
    let writer = who(Role::Writer);
    let e = s
        .rate_check(&writer, ratelimit::Kind::Events, 1000)
        .unwrap_err();
    assert_eq!(e.kind, Kind::TooLarge, "{}", e.message);
}

#[test]
fn authentication_refusals() {
    let f = fixture(|c| c.auth.jwt_secret = Some("s3cret-s3cret-s3cret-s3cret-s3cret".into()));
    let s = &f.service;
    // Refusals are audited in the background, on the runtime.
    let _runtime = f.runtime.enter();
    let info = || RequestInfo {
        action: "test".into(),
        request_id: None,
    };
    let cases = [
        (None, None, Kind::Unauthenticated, "missing bearer token"),
        (Some("not-a-jwt"), None, Kind::Unauthenticated, ""),
        (
            Some(""),
            None,
            Kind::Unauthenticated,
            "missing bearer token",
        ),
    ];
    for (token, tenant, kind, needle) in cases {
        let e = s
            .authenticate(Credentials { token, tenant }, info())
            .unwrap_err();
        assert_eq!(e.kind, kind, "{token:?}: {}", e.message);
        assert!(e.message.contains(needle), "{token:?}: {}", e.message);
    }
    // Without auth, everyone is an admin, who may name any valid tenant.
    let open = fixture(|_| {});
    let _open_runtime = open.runtime.enter();
    let p = open
        .service
        .authenticate(
            Credentials {
                token: None,
                tenant: Some("acme"),
            },
            info(),
        )
        .unwrap();
    assert_eq!(p.tenant, "acme".parse::<TenantId>().unwrap());
    let e = open
        .service
        .authenticate(
            Credentials {
                token: None,
                tenant: Some("not a tenant!"),
            },
            info(),
        )
        .unwrap_err();
    assert_eq!(e.kind, Kind::Invalid, "{}", e.message);
}

#[test]
fn rates_count_stored_events_and_started_queries_only() {
    let f = fixture(|_| {});
    let s = &f.service;
    let (reader, writer) = (who(Role::Reader), who(Role::Writer));
    let table: crate::ids::TableName = "events".parse().unwrap();
    let events = |ids: &[&str]| {
        let body: String = ids
            .iter()
            .map(|id| {
                format!("{{\"event_id\":\"{id}\",\"event_type\":\"t\",\"entity_id\":\"e\"}}\n")
            })
            .collect();
        crate::ingest::parse_events(body.as_bytes(), crate::ingest::BodyFormat::Ndjson).unwrap()
    };
    f.runtime.block_on(async {
        let held = s.ingest_budget().reserve();
        let stored = s
            .ingest(&writer, table.clone(), events(&["a", "b", "c"]), held)
            .await;
        assert_eq!(stored.unwrap().accepted, 3);
        // Retries store nothing more; a refused query and a refused
        // ingest count for nothing.
        let held = s.ingest_budget().reserve();
        let again = s
            .ingest(&writer, table.clone(), events(&["a", "b"]), held)
            .await;
        assert_eq!(again.unwrap().accepted, 0);
        let held = s.ingest_budget().reserve();
        assert!(
            s.ingest(&reader, table.clone(), events(&["d"]), held)
                .await
                .is_err()
        );
        assert!(
            s.sql(&reader, "SELECT nosuch FROM nowhere", None, Interface::Sql)
                .await
                .is_err()
        );
        assert!(
            s.sql(&reader, "SELECT 1", None, Interface::Sql)
                .await
                .is_ok()
        );
    });
    // The current second is left out of the rates: wait for the next.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (events_per_second, queries_per_second) = s.rates(&reader);
    let window = (crate::ratelimit::METER_SECONDS - 1) as f64;
    assert_eq!((events_per_second * window).round(), 3.0);
    assert_eq!((queries_per_second * window).round(), 1.0);
}
