//! The five policies a new tenant starts with. Together they grant what
//! the roles grant and hide nothing, so a tenant that never writes a
//! policy behaves as before; each is the place to narrow one thing.
//!
//! | name | what |
//! |---|---|
//! | `default_read` | readers, writers and admins may query and stream every table |
//! | `default_ingest` | writers and admins may ingest into every table |
//! | `default_admin` | admins may run admin calls on every table |
//! | `default_audit_admins_only` | readers and writers may not read `system.audit` |
//! | `default_subject_quota` | a quota per subject, every rate unset: set one to cap any one subject |

use super::{Action, Effect, Glob, Policy, Principals, QuotaScope, Rule};
use crate::auth::Role;

fn policy(name: &str, description: &str, roles: &[Role], tables: &[&str], rule: Rule) -> Policy {
    Policy {
        name: name.to_string(),
        description: Some(description.to_string()),
        enabled: true,
        principals: Principals {
            roles: (!roles.is_empty()).then(|| roles.iter().copied().collect()),
            subjects: None,
            except_subjects: Vec::new(),
        },
        tables: tables.iter().map(|t| Glob::new(t)).collect(),
        except_tables: Vec::new(),
        rule,
    }
}

fn access(effect: Effect, actions: &[Action]) -> Rule {
    Rule::Access {
        effect,
        actions: actions.iter().copied().collect(),
        event_types: None,
    }
}

/// The default policies, by name.
pub fn defaults() -> Vec<Policy> {
    use Role::{Admin, Reader, Writer};
    vec![
        policy(
            "default_read",
            "Readers, writers and admins may query and stream every table. Narrow it (or add a deny) to restrict reads.",
            &[Reader, Writer, Admin],
            &["*", "projections.*", "system.*"],
            access(Effect::Allow, &[Action::Query, Action::Stream]),
        ),
        policy(
            "default_ingest",
            "Writers and admins may ingest into every table.",
            &[Writer, Admin],
            &["*"],
            access(Effect::Allow, &[Action::Ingest]),
        ),
        policy(
            "default_admin",
            "Admins may run maintenance, settings, schema and backup calls on every table.",
            &[Admin],
            &["*"],
            access(Effect::Allow, &[Action::Admin]),
        ),
        policy(
            "default_audit_admins_only",
            "Only admins read the audit log.",
            &[Reader, Writer],
            &["system.audit"],
            access(Effect::Deny, &[Action::Query, Action::Stream]),
        ),
        policy(
            "default_subject_quota",
            "A quota per subject, every rate unset: set one to cap any one subject's events or queries.",
            &[],
            &["*"],
            Rule::Quota {
                scope: QuotaScope::Subject,
                events_per_second: None,
                queries_per_second: None,
                events_per_day: None,
                queries_per_day: None,
            },
        ),
    ]
}

/// Whether `name` is one of the defaults' (names users may not take).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("default_") || name == "evaluate"
}
