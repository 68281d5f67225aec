//! Consumer groups through the service: generations and what an
//! acknowledgement may change.

use super::*;
use crate::auth::Role;
use crate::ingest::{BodyFormat, parse_events};
use crate::service::tests::{fixture, who};

#[test]
fn an_acknowledgement_of_an_older_generation_changes_nothing() {
    let f = fixture(|_| {});
    let s = &f.service;
    let writer = who(Role::Writer);
    f.runtime.block_on(async {
        let body: Vec<String> = (0..10)
            .map(|i| format!(r#"{{"event_type":"t","entity_id":"e{i}"}}"#))
            .collect();
        let events = parse_events(body.join("\n").as_bytes(), BodyFormat::Ndjson).unwrap();
        let table: TableName = "events".parse().unwrap();
        s.db().ingest(&writer.tenant, &table, events).await.unwrap();
        let name: GroupName = "g".parse().unwrap();
        s.create_group(
            &writer,
            CreateGroup {
                name: name.clone(),
                table: "events".parse().unwrap(),
                filter: None,
                where_dsl: None,
                start: Start::Earliest,
                raw: false,
            },
        )
        .await
        .unwrap();
        let wait = Duration::from_millis(200);
        let mut a = s.join_group(&writer, &name).await.unwrap();
        let Delivery::Assigned {
            generation: g1,
            members: 1,
            after: 0,
            ..
        } = a.next(wait).await.unwrap()
        else {
            panic!("first comes the assignment")
        };
        let Delivery::Events(_) = a.next(wait).await.unwrap() else {
            panic!("then the events")
        };
        assert_eq!(a.position(), 10);
        // An acknowledgement past what was sent is refused.
        let e = a.ack(11, g1).await.unwrap_err();
        assert_eq!(e.kind, Kind::Invalid, "{e:?}");
        // A second consumer joins: a new generation, from the committed 0.
        let mut b = s.join_group(&writer, &name).await.unwrap();
        let Delivery::Assigned {
            generation: g2,
            members: 2,
            after: 0,
            ..
        } = b.next(wait).await.unwrap()
        else {
            panic!("b is assigned")
        };
        assert!(g2 > g1);
        // `a` acknowledges the page it got before: stale, nothing changes.
        let acked = a.ack(10, g1).await.unwrap();
        assert_eq!(
            acked,
            Acked {
                committed: 0,
                stale: true
            }
        );
        // In the new generation, both acknowledge what they got.
        let Delivery::Assigned {
            generation, member, ..
        } = a.next(wait).await.unwrap()
        else {
            panic!("a is assigned again")
        };
        assert_eq!((generation, member), (g2, 0));
        for m in [&mut a, &mut b] {
            while let Delivery::Events(_) = m.next(wait).await.unwrap() {}
        }
        assert_eq!(a.ack(a.position(), g2).await.unwrap().committed, 0);
        let last = b.ack(b.position(), g2).await.unwrap();
        assert_eq!(
            last,
            Acked {
                committed: 10,
                stale: false
            }
        );
        // Stored: the group shows it, and after `a` leaves, `b` restarts
        // from there.
        drop(a);
        let mut alone = None;
        for _ in 0..50 {
            if let Delivery::Assigned { after, members, .. } = b.next(wait).await.unwrap() {
                alone = Some((after, members));
                break;
            }
        }
        assert_eq!(alone, Some((10, 1)), "b is assigned alone, after 10");
    });
}
