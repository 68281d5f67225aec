//! Every error of the layers below, classified by type.

use super::*;
use crate::query::ReadOnlyRefusal;
use std::time::Duration;

fn df(e: DataFusionError) -> Error {
    Error::from(e)
}

#[test]
fn engine_errors_are_classified_by_type() {
    let external = |e: Box<dyn std::error::Error + Send + Sync>| DataFusionError::External(e);
    let cases: Vec<(&str, DataFusionError, Kind)> = vec![
        (
            "plan",
            DataFusionError::Plan("no field x".into()),
            Kind::Invalid,
        ),
        (
            "sql",
            DataFusionError::SQL(
                Box::new(datafusion::sql::sqlparser::parser::ParserError::ParserError("x".into())),
                None,
            ),
            Kind::Invalid,
        ),
        (
            "schema",
            DataFusionError::SchemaError(
                Box::new(datafusion::common::SchemaError::FieldNotFound {
                    field: Box::new("x".into()),
                    valid_fields: vec![],
                }),
                Box::new(None),
            ),
            Kind::Invalid,
        ),
        (
            "execution",
            DataFusionError::Execution("division by zero".into()),
            Kind::Invalid,
        ),
        (
            "arrow",
            DataFusionError::ArrowError(Box::new(arrow::error::ArrowError::DivideByZero), None),
            Kind::Invalid,
        ),
        (
            "not implemented",
            DataFusionError::NotImplemented("x".into()),
            Kind::Invalid,
        ),
        (
            "internal",
            DataFusionError::Internal("bug".into()),
            Kind::Internal,
        ),
        (
            "io",
            DataFusionError::IoError(std::io::Error::other("disk")),
            Kind::Internal,
        ),
        (
            "context of plan",
            DataFusionError::Context(
                "while planning".into(),
                Box::new(DataFusionError::Plan("x".into())),
            ),
            Kind::Invalid,
        ),
        (
            "context of internal",
            DataFusionError::Context("c".into(), Box::new(DataFusionError::Internal("x".into()))),
            Kind::Internal,
        ),
        (
            "read-only",
            external(Box::new(ReadOnlyRefusal("DDL not supported".into()))),
            Kind::Invalid,
        ),
        (
            "read-only in context",
            DataFusionError::Context(
                "c".into(),
                Box::new(external(Box::new(ReadOnlyRefusal("x".into())))),
            ),
            Kind::Invalid,
        ),
        (
            "busy",
            external(Box::new(LimitError::Busy {
                tenant: "t".parse().unwrap(),
                limit: 1,
            })),
            Kind::Overloaded,
        ),
        (
            "timeout",
            external(Box::new(LimitError::Timeout(Duration::from_secs(1)))),
            Kind::Timeout,
        ),
        (
            "server memory",
            DataFusionError::ResourcesExhausted(format!("{SERVER_MEMORY_BUSY}: 1 byte")),
            Kind::Unavailable,
        ),
        (
            "query memory",
            DataFusionError::ResourcesExhausted("query limit".into()),
            Kind::Invalid,
        ),
        ("unknown external", external("what".into()), Kind::Internal),
    ];
    for (name, e, kind) in cases {
        let e = df(e);
        assert_eq!(e.kind, kind, "{name}: {}", e.message);
        assert!(!e.message.is_empty(), "{name}");
    }
    let e = df(DataFusionError::External(Box::new(ReadOnlyRefusal(
        "DDL not supported".into(),
    ))));
    assert_eq!(e.message, "DDL not supported (queries are read-only)");
    assert_eq!(
        df(external(Box::new(LimitError::Busy {
            tenant: "t".parse().unwrap(),
            limit: 1
        })))
        .retry_after,
        Some(1)
    );
}

#[test]
fn lower_errors_are_classified_by_type() {
    let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
    let other = std::io::Error::other("EIO");
    let refused = |source| {
        db::Error::Wal(crate::wal::Error::WriteRefused {
            path: "wal".into(),
            source,
        })
    };
    let cases: Vec<(&str, Error, Kind, Option<u64>)> = vec![
        (
            "buffer full",
            db::Error::BufferFull { buffered: 1 }.into(),
            Kind::Unavailable,
            Some(1),
        ),
        (
            "shutting down",
            db::Error::ShuttingDown.into(),
            Kind::Unavailable,
            Some(1),
        ),
        (
            "disk full",
            refused(full).into(),
            Kind::StorageFull,
            Some(5),
        ),
        (
            "write refused",
            refused(other).into(),
            Kind::Unavailable,
            Some(5),
        ),
        (
            "internal",
            db::Error::Internal("x".into()).into(),
            Kind::Internal,
            None,
        ),
        (
            "query in db",
            db::Error::Query(DataFusionError::Plan("x".into())).into(),
            Kind::Invalid,
            None,
        ),
        (
            "bad name",
            db::Error::Name("no such".parse::<crate::ids::TableName>().unwrap_err()).into(),
            Kind::Invalid,
            None,
        ),
        (
            "unauthenticated",
            auth::AuthError::Unauthenticated("x".into()).into(),
            Kind::Unauthenticated,
            None,
        ),
        (
            "forbidden",
            auth::AuthError::Forbidden("x".into()).into(),
            Kind::Forbidden,
            None,
        ),
        (
            "budget too large",
            BudgetError::TooLarge {
                needed: 2,
                limit: 1,
            }
            .into(),
            Kind::TooLarge,
            None,
        ),
        (
            "budget busy",
            BudgetError::Busy { total: 1 }.into(),
            Kind::Unavailable,
            Some(1),
        ),
        (
            "rate",
            crate::ratelimit::Limited {
                retry_after: Some(Duration::from_millis(200)),
                message: "x".into(),
            }
            .into(),
            Kind::Overloaded,
            Some(1),
        ),
        (
            "burst",
            crate::ratelimit::Limited {
                retry_after: None,
                message: "x".into(),
            }
            .into(),
            Kind::TooLarge,
            None,
        ),
        (
            "rules broken",
            crate::db::Error::Rejected(Box::new(crate::schema::governed::Violations::new("t")))
                .into(),
            Kind::Invalid,
            None,
        ),
        (
            "maintenance busy",
            MaintenanceError::Busy("t".into()).into(),
            Kind::Conflict,
            None,
        ),
        (
            "no table",
            MaintenanceError::NoTable("t".into()).into(),
            Kind::NotFound,
            None,
        ),
        (
            "dsl",
            crate::dsl::QueryError::Dsl(crate::dsl::DslError {
                path: "where".into(),
                message: "x".into(),
            })
            .into(),
            Kind::Invalid,
            None,
        ),
    ];
    for (name, e, kind, retry) in cases {
        assert_eq!(e.kind, kind, "{name}: {}", e.message);
        assert_eq!(e.retry_after, retry, "{name}");
    }
}

#[test]
fn refusals_and_faults_are_told_apart() {
    for kind in [Kind::Internal, Kind::Unavailable, Kind::StorageFull] {
        assert_eq!(kind.outcome(), "error", "{kind:?}");
    }
    for kind in [
        Kind::Invalid,
        Kind::Forbidden,
        Kind::Overloaded,
        Kind::TooLarge,
    ] {
        assert_eq!(kind.outcome(), "rejected", "{kind:?}");
        assert!(kind.is_refusal(), "{kind:?}");
    }
}
