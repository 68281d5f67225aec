//! Decisions where tables are resolved, shared by the tenant's event
//! tables and the schemas other layers add (`projections`).

use super::PolicyDenied;
use crate::audit::{AuditEntry, AuditKind, DenialLog};
use crate::auth::{Definer, Principal};
use crate::db::Database;
use crate::db::policies::TenantPolicies;
use crate::policy::Action;
use crate::policy::decide::{Decision, Request, decide};
use crate::query::engine::ExtraSchema;
use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use std::sync::Arc;

/// The decision of `caller`'s tenant's policies on `action` over `table`
/// as a whole, with the policies.
pub fn decide_for(
    db: &Database,
    caller: &Principal,
    action: Action,
    table: &str,
) -> (Arc<TenantPolicies>, Decision) {
    decide_on(db, caller, action, table, None)
}

/// [`decide_for`] for events of `event_type` (ingest), when given.
pub fn decide_on(
    db: &Database,
    caller: &Principal,
    action: Action,
    table: &str,
    event_type: Option<&str>,
) -> (Arc<TenantPolicies>, Decision) {
    let policies = db.policies().get(&caller.tenant);
    let decision = decide(
        &policies.policies,
        &Request {
            role: caller.role,
            subject: caller.subject.as_deref().unwrap_or(""),
            action,
            table,
            event_type,
        },
    );
    (policies, decision)
}

/// The error of a refused read, recorded in the audit log.
pub fn denial(
    denials: Option<&Arc<DenialLog>>,
    caller: &Principal,
    action: Action,
    table: &str,
    because: String,
) -> DataFusionError {
    if let Some(log) = denials {
        log.record(AuditEntry::by(
            caller,
            AuditKind::PolicyDenied,
            format!("{} {table}", action.as_str()),
            403,
            because.clone(),
        ));
    }
    DataFusionError::External(Box::new(PolicyDenied {
        table: table.to_string(),
        action,
        because,
    }))
}

/// A schema another layer adds, read under the caller's policies: each
/// table is decided as `<schema>.<table>`, and one that holds rows of an
/// event table the caller's policies restrict is refused (its rows were
/// gathered unrestricted).
#[derive(Debug)]
pub struct GuardedSchema {
    pub inner: Arc<dyn SchemaProvider>,
    pub extra: Arc<dyn ExtraSchema>,
    pub db: Arc<Database>,
    pub caller: Principal,
    pub action: Action,
    pub denials: Option<Arc<DenialLog>>,
}

impl GuardedSchema {
    /// Why `table` may not be read, if it may not.
    fn refusal(&self, table: &str) -> Option<String> {
        let qualified = format!("{}.{table}", self.extra.name());
        let (_, decision) = decide_for(&self.db, &self.caller, self.action, &qualified);
        if !decision.allowed {
            return Some(decision.because);
        }
        let source = self.extra.source_of(&self.caller.tenant, table)?;
        let definer = self.extra.definer_of(&self.caller.tenant, table);
        held_readable(
            &self.db,
            &self.caller,
            self.action,
            &qualified,
            &source,
            definer.as_ref(),
        )
        .err()
    }
}

/// Whether `caller` may read `what`, which holds events of `source` as
/// `definer` read them (as the server, unrestricted, when `None`): when
/// the caller reads `source` unrestricted, or restricted exactly as the
/// definer was when it defined it and still is. Otherwise why not.
pub fn held_readable(
    db: &Database,
    caller: &Principal,
    action: Action,
    what: &str,
    source: &str,
    definer: Option<&Definer>,
) -> std::result::Result<(), String> {
    let (_, over) = decide_for(db, caller, action, source);
    if !over.allowed {
        return Err(over.because);
    }
    if over.restriction.is_none() {
        return Ok(());
    }
    let mine = over.restriction.fingerprint();
    if let Some(d) = definer.filter(|d| !d.restriction.is_empty()) {
        // The definer read the source as a stream (projections fold and
        // pipelines run through subscriptions).
        let (_, now) = decide_for(
            db,
            &d.principal(caller.tenant.clone()),
            Action::Stream,
            source,
        );
        // Rules that name the caller (`current_subject()`, ...) read the
        // same text but show each caller other rows.
        let same_caller = !names_the_caller(&over.restriction)
            || (d.subject == caller.subject && d.role == caller.role);
        if d.restriction == mine && now.restriction.fingerprint() == mine && same_caller {
            return Ok(());
        }
        return Err(format!(
            "{what} holds events of table {source:?} as its definer reads them, which policies restrict otherwise than for this caller"
        ));
    }
    Err(format!(
        "{what} holds events of table {source:?}, which policies restrict for this caller"
    ))
}

/// Whether a restriction's filters or masks depend on who reads.
fn names_the_caller(r: &crate::policy::decide::Restriction) -> bool {
    let texts = r
        .filters
        .iter()
        .map(|(_, sql)| sql.as_str())
        .chain(r.masks.values().filter_map(|(_, m)| match m {
            crate::policy::Mask::Sql(sql) => Some(sql.as_str()),
            _ => None,
        }));
    texts.map(str::to_ascii_lowercase).any(|t| {
        [
            "current_subject",
            "current_role",
            "current_tenant",
            "current_user",
        ]
        .iter()
        .any(|f| t.contains(f))
    })
}

#[async_trait]
impl SchemaProvider for GuardedSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.retain(|t| self.refusal(t).is_none());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if !self.inner.table_exist(name) {
            return Ok(None);
        }
        if let Some(because) = self.refusal(name) {
            let qualified = format!("{}.{name}", self.extra.name());
            return Err(denial(
                self.denials.as_ref(),
                &self.caller,
                self.action,
                &qualified,
                because,
            ));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
