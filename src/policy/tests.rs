use super::decide::{Request, decide};
use super::defaults::{defaults, is_reserved};
use super::*;

fn policy(json: serde_json::Value) -> Policy {
    let p: Policy = serde_json::from_value(json).unwrap();
    p.check_shape().unwrap();
    p
}

fn request<'a>(role: Role, subject: &'a str, action: Action, table: &'a str) -> Request<'a> {
    Request {
        role,
        subject,
        action,
        table,
        event_type: None,
    }
}

#[test]
fn globs_match_whole_names() {
    let g = |p: &str, t: &str| Glob::new(p).matches(t);
    assert!(g("*", "") && g("*", "orders"));
    assert!(g("order_*", "order_items") && !g("order_*", "orders"));
    assert!(g("a?c", "abc") && !g("a?c", "abbc"));
    assert!(g("*_eu_*", "sales_eu_2026") && !g("*_eu_*", "sales_us_2026"));
    assert!(g("system.*", "system.audit") && !g("system.*", "systemaudit"));
    assert!(g("**x", "yyx") && !g("x", "xx"));
}

#[test]
fn the_defaults_grant_what_the_roles_grant() {
    let d = defaults();
    for p in &d {
        p.check_shape().unwrap();
        assert!(is_reserved(&p.name));
    }
    let allowed = |role, action, table| decide(&d, &request(role, "", action, table)).allowed;
    use Action::{Ingest, Query, Stream};
    use Role::{Admin, Reader, Writer};
    for table in ["events", "projections.stats", "system.files"] {
        assert!(allowed(Reader, Query, table) && allowed(Reader, Stream, table));
    }
    assert!(!allowed(Reader, Ingest, "events") && allowed(Writer, Ingest, "events"));
    assert!(!allowed(Writer, Action::Admin, "events") && allowed(Admin, Action::Admin, "events"));
    assert!(!allowed(Reader, Query, "system.audit") && allowed(Admin, Query, "system.audit"));
    let read = decide(&d, &request(Reader, "", Query, "events"));
    assert!(read.restriction.is_none());
    assert_eq!(
        read.because,
        "query on \"events\" is allowed by default_read"
    );
    assert_eq!(read.quotas, ["default_subject_quota"]);
    let audit = decide(&d, &request(Writer, "w", Query, "system.audit"));
    assert_eq!(
        audit.because,
        "query on \"system.audit\" is denied by default_audit_admins_only; a deny overrides the allow of default_read"
    );
}

#[test]
fn denies_override_allows_and_scopes_narrow_event_types() {
    let mut ps = defaults();
    ps.push(policy(serde_json::json!({
        "name": "hr_only", "kind": "access", "effect": "deny", "actions": ["query", "stream"],
        "principals": {"except_subjects": ["hr-*"]}, "tables": ["payroll"]})));
    ps.push(policy(serde_json::json!({
        "name": "no_salary_writes", "kind": "access", "effect": "deny", "actions": ["ingest"],
        "principals": {"roles": ["writer"]}, "tables": ["hr"], "event_types": ["salary_*"]})));
    let d = |role, subject, action, table| decide(&ps, &request(role, subject, action, table));
    assert!(!d(Role::Reader, "analyst", Action::Query, "payroll").allowed);
    assert!(d(Role::Reader, "hr-7", Action::Query, "payroll").allowed);
    let not = d(Role::Reader, "hr-7", Action::Query, "payroll");
    let why = not
        .not_matched
        .iter()
        .find(|n| n.policy == "hr_only")
        .unwrap();
    assert_eq!(why.why, "subject \"hr-7\" is excepted by [hr-*]");
    let ingest = |event_type| {
        decide(
            &ps,
            &Request {
                event_type: Some(event_type),
                ..request(Role::Writer, "w", Action::Ingest, "hr")
            },
        )
    };
    assert!(ingest("review").allowed);
    let refused = ingest("salary_raise");
    assert!(!refused.allowed);
    assert_eq!(
        refused.because,
        "ingest of event type \"salary_raise\" into \"hr\" is denied: no_salary_writes denies it"
    );
    // Read as a whole, the table's scope carries the denied types.
    let whole = decide(&ps, &request(Role::Writer, "w", Action::Ingest, "hr"));
    assert!(whole.allowed && !whole.restriction.types.admits("salary_x"));
}

#[test]
fn row_filters_add_up_and_the_strongest_mask_wins() {
    let mut ps = defaults();
    ps.push(policy(serde_json::json!({
        "name": "eu", "kind": "row_filter", "principals": {"roles": ["reader"]},
        "tables": ["orders"], "filter": "region = 'EU'"})));
    ps.push(policy(serde_json::json!({
        "name": "recent", "kind": "row_filter", "tables": ["order*"],
        "filter": "timestamp > now() - INTERVAL '30 days'"})));
    ps.push(policy(serde_json::json!({
        "name": "pii", "kind": "mask", "tables": ["*"],
        "masks": {"email": "hash", "phone": {"redact": {"keep": 3}}, "amount": {"sql": "round(amount)"}}})));
    ps.push(policy(serde_json::json!({
        "name": "strict", "kind": "mask", "principals": {"roles": ["reader"]}, "tables": ["orders"],
        "masks": {"email": "null"}})));
    let reader = decide(&ps, &request(Role::Reader, "r", Action::Query, "orders"));
    let r = &reader.restriction;
    assert_eq!(
        r.filters,
        [
            ("eu".to_string(), "region = 'EU'".to_string()),
            (
                "recent".to_string(),
                "timestamp > now() - INTERVAL '30 days'".to_string()
            )
        ]
    );
    assert_eq!(r.masks["email"], ("strict".to_string(), Mask::Null));
    assert_eq!(
        r.masks["phone"],
        ("pii".to_string(), Mask::Redact { keep: 3 })
    );
    assert_eq!(r.shadowed, [("email".to_string(), "pii".to_string())]);
    let writer = decide(&ps, &request(Role::Writer, "w", Action::Query, "orders"));
    assert_eq!(writer.restriction.filters.len(), 1);
    assert_eq!(writer.restriction.masks["email"].1, Mask::Hash);
    // A reader under more restrictions sees within a writer's, not the
    // other way round.
    assert!(r.sees_within(&writer.restriction));
    assert!(!writer.restriction.sees_within(r));
    assert_ne!(r.fingerprint(), writer.restriction.fingerprint());
    // Ingest is not filtered.
    let ingest = decide(&ps, &request(Role::Writer, "w", Action::Ingest, "orders"));
    assert!(ingest.restriction.is_none());
}

#[test]
fn shapes_are_checked_with_their_place() {
    let refused = |json: serde_json::Value, needle: &str| {
        let p: Result<Policy, _> = serde_json::from_value(json.clone());
        let e = match p {
            Err(e) => e.to_string(),
            Ok(p) => p.check_shape().unwrap_err(),
        };
        assert!(e.contains(needle), "{json}: {e} lacks {needle}");
    };
    refused(
        serde_json::json!({"name": "Bad", "kind": "access", "effect": "allow", "actions": ["query"]}),
        "name",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "access", "effect": "allow", "actions": []}),
        "actions",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "row_filter", "filter": " "}),
        "filter",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "row_filter", "filter": "x", "actions": ["ingest"]}),
        "actions",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "mask", "masks": {"position": "null"}}),
        "masks.position",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "mask", "masks": {"x": "blur"}}),
        "unknown variant",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "quota", "queries_per_second": 0}),
        "quota of 0",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "quota", "queries_per_second": 5, "tables": ["orders"]}),
        "tables: a quota counts every request",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "quota", "queries_per_second": 5, "except_tables": ["x"]}),
        "tables: a quota counts every request",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "access", "effect": "allow", "actions": ["query"], "tables": []}),
        "tables",
    );
    refused(
        serde_json::json!({"name": "a", "kind": "teleport"}),
        "unknown variant",
    );
    let round = policy(
        serde_json::json!({"name": "a", "kind": "mask", "masks": {"x": {"sql": "1"}, "y": "hash"}}),
    );
    let back: Policy = serde_json::from_str(&serde_json::to_string(&round).unwrap()).unwrap();
    assert_eq!(back, round);
}
