//! Where the service applies policies itself (the query engine applies
//! them to table reads): access to ingest and admin calls, projections and
//! pipelines over restricted tables, quotas, and a subscription's
//! consumers. Every refusal is recorded in the audit log.

use super::{Error, Kind, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::Principal;
use crate::policy::{Action, Rule};
use crate::query::policy::{decide_for, decide_on};

impl Service {
    /// Whether the policies let `caller` do `action` on `table` (and, for
    /// ingest, events of `event_type`); a refusal is 403, naming the
    /// policy and `place` (the first event it concerns), and audited.
    pub(crate) fn allowed_by_policies(
        &self,
        caller: &Principal,
        action: Action,
        table: &str,
        event_type: Option<&str>,
        place: Option<String>,
    ) -> Result<()> {
        let (_, decision) = decide_on(&self.db, caller, action, table, event_type);
        if decision.allowed {
            return Ok(());
        }
        let at = place.map(|p| format!(" ({p})")).unwrap_or_default();
        let message = format!("{}{at}", decision.because);
        let what = format!("{} {table}", action.as_str());
        self.record_denial(caller, what, 403, decision.because);
        Err(Error::new(Kind::Forbidden, message))
    }

    /// Records a policy's refusal of `caller`'s `what` in the audit log.
    fn record_denial(&self, caller: &Principal, what: String, status: u16, because: String) {
        if let Some(log) = self.queries.denials() {
            log.record(AuditEntry::by(
                caller,
                AuditKind::PolicyDenied,
                what,
                status,
                because,
            ));
        }
    }

    /// [`Service::allowed_by_policies`] for ingesting `types` (each
    /// event's type with its index, which `place` names) into `table`.
    pub(crate) fn ingest_allowed<'a>(
        &self,
        caller: &Principal,
        table: &str,
        types: impl IntoIterator<Item = (usize, &'a str)>,
        place: impl Fn(usize) -> String,
    ) -> Result<()> {
        self.allowed_by_policies(caller, Action::Ingest, table, None, None)?;
        // Types matter only to policies that name some.
        let by_type = self.policies_of(caller).policies.iter().any(|p| {
            p.enabled
                && p.rule.covers(Action::Ingest)
                && matches!(
                    p.rule,
                    Rule::Access {
                        event_types: Some(_),
                        ..
                    }
                )
        });
        if !by_type {
            return Ok(());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, event_type) in types {
            if seen.insert(event_type) {
                self.allowed_by_policies(
                    caller,
                    Action::Ingest,
                    table,
                    Some(event_type),
                    Some(place(i)),
                )?;
            }
        }
        Ok(())
    }
}

impl Service {
    /// Refuses `caller` a `what` (a projection, a pipeline) over `table`
    /// when its reads of the table are refused or restricted: such a
    /// resource folds the table's events unrestricted, so it would hold
    /// what the policies hide from the caller.
    pub(crate) fn source_unrestricted(
        &self,
        caller: &Principal,
        table: &str,
        what: &str,
    ) -> Result<()> {
        self.allowed_by_policies(caller, Action::Query, table, None, None)?;
        let (_, decision) = decide_for(&self.db, caller, Action::Query, table);
        let r = &decision.restriction;
        if r.is_none() {
            return Ok(());
        }
        let mut by: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        by.extend(r.filters.iter().map(|(p, _)| p.as_str()));
        by.extend(r.masks.values().map(|(p, _)| p.as_str()));
        let by: Vec<&str> = by.into_iter().collect();
        let scope = match r.types.is_all() {
            true => String::new(),
            false => " (and its event types)".into(),
        };
        let because = format!(
            "table {table:?} is restricted for this caller by policies [{}]{scope}; a {what} over it holds its events unrestricted, so only a caller they do not restrict may define or read one",
            by.join(", ")
        );
        self.record_denial(
            caller,
            format!("query {table} ({what})"),
            403,
            because.clone(),
        );
        Err(Error::new(Kind::Forbidden, because))
    }
}

impl Service {
    /// Takes `n` units of `kind` from every quota policy that counts
    /// `caller`: a refusal is 429 with Retry-After, naming the policy,
    /// and audited.
    pub(super) fn quota_check(
        &self,
        caller: &Principal,
        kind: crate::ratelimit::Kind,
        n: u32,
    ) -> Result<()> {
        use crate::ratelimit::{Kind as Rate, Period, QuotaKey};
        let policies = self.policies_of(caller);
        let subject = caller.subject.as_deref().unwrap_or("");
        for p in &policies.policies {
            let Rule::Quota {
                scope,
                events_per_second,
                queries_per_second,
                events_per_day,
                queries_per_day,
            } = &p.rule
            else {
                continue;
            };
            if !p.enabled || p.principals.mismatch(caller.role, subject).is_some() {
                continue;
            }
            let day = |v: &Option<u64>| v.map(|d| d.min(u64::from(u32::MAX)) as u32);
            let amounts = match kind {
                Rate::Events => [
                    (*events_per_second, Period::Second),
                    (day(events_per_day), Period::Day),
                ],
                Rate::Queries => [
                    (*queries_per_second, Period::Second),
                    (day(queries_per_day), Period::Day),
                ],
            };
            for (amount, period) in amounts {
                let Some(amount) = amount else { continue };
                let key = QuotaKey {
                    tenant: caller.tenant.clone(),
                    policy: p.name.clone(),
                    subject: match scope {
                        crate::policy::QuotaScope::Subject => Some(subject.to_string()),
                        crate::policy::QuotaScope::Shared => None,
                    },
                    kind,
                    period,
                };
                if let Err(limited) = self.quotas.check(key, amount, n) {
                    let what = format!("{} quota", kind.label());
                    self.record_denial(caller, what, 429, limited.message.clone());
                    return Err(limited.into());
                }
            }
        }
        Ok(())
    }
}

impl Service {
    /// A digest of what `caller`'s policies hide of `table` from streams,
    /// or `None` when they hide nothing.
    pub(super) fn read_fingerprint(&self, caller: &Principal, table: &str) -> Option<String> {
        let (_, decision) = decide_for(&self.db, caller, Action::Stream, table);
        (!decision.restriction.is_none()).then(|| decision.restriction.fingerprint())
    }

    /// Refuses a consumer of subscription `name` whose policies hide
    /// other events of its table than its creator's did: consumers share
    /// one position, which would pass over events one of them cannot see.
    pub(super) fn same_view(
        &self,
        caller: &Principal,
        name: &str,
        def: &crate::db::groups::GroupDef,
    ) -> Result<()> {
        if self.read_fingerprint(caller, &def.table) == def.policies {
            return Ok(());
        }
        let because = format!(
            "subscription {name:?} was created under other policies on table {:?} than this caller's; its consumers share one position, so they must see the same events (create a subscription of your own, or delete this one and create it again after a policy change)",
            def.table
        );
        let what = format!("stream {} (subscription {name})", def.table);
        self.record_denial(caller, what, 403, because.clone());
        Err(Error::new(Kind::Forbidden, because))
    }
}
