//! Where the service applies policies itself (the query engine applies
//! them to table reads): access to ingest and admin calls, projections and
//! pipelines over restricted tables, quotas, and a subscription's
//! consumers. Every refusal is recorded in the audit log.

use super::{Error, Kind, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{Definer, Principal};
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

/// What a definer records of its restriction: its fingerprint, empty when
/// nothing is hidden.
fn mark_of(restriction: &crate::policy::decide::Restriction) -> String {
    match restriction.is_none() {
        true => String::new(),
        false => restriction.fingerprint(),
    }
}

impl Service {
    /// `caller` as the definer of a projection or pipeline over `table`:
    /// refused (403) when its policies deny it the table; otherwise its
    /// role and subject, and what its policies hide of the table now. The
    /// resource reads the table as the definer, so it holds only what the
    /// definer may see.
    pub(crate) fn definer_for(&self, caller: &Principal, table: &str) -> Result<Definer> {
        // Projections and pipelines read their source as a stream.
        self.allowed_by_policies(caller, Action::Stream, table, None, None)?;
        let (_, decision) = decide_for(&self.db, caller, Action::Stream, table);
        Ok(Definer {
            role: caller.role,
            subject: caller.subject.clone(),
            restriction: mark_of(&decision.restriction),
        })
    }

    /// Why `live`'s state no longer holds what its definer's policies
    /// show of its table, if it does not: they deny the table now, or
    /// restrict it otherwise than when the projection was defined.
    pub(crate) fn definer_unchanged(
        &self,
        live: &crate::projection::registry::Live,
    ) -> std::result::Result<(), String> {
        let Some(definer) = &live.spec.definer else {
            return Ok(());
        };
        let principal = definer.principal(live.tenant.clone());
        let table = live.table.as_str();
        let (_, now) = decide_for(&self.db, &principal, Action::Stream, table);
        if now.allowed && mark_of(&now.restriction) == definer.restriction {
            return Ok(());
        }
        Err(format!(
            "the policies on table {table:?} for its definer changed since it was defined; define it again or rebuild it"
        ))
    }

    /// Refuses (403, audited) `caller` a read of `what`, which holds
    /// events of `table` as `definer` read them, unless the caller reads
    /// the table unrestricted or restricted exactly as the definer does.
    pub(crate) fn held_readable(
        &self,
        caller: &Principal,
        what: &str,
        table: &str,
        definer: Option<&Definer>,
    ) -> Result<()> {
        let checked = crate::query::policy::held_readable(
            &self.db,
            caller,
            Action::Query,
            what,
            table,
            definer,
        );
        let Err(because) = checked else {
            return Ok(());
        };
        self.record_denial(caller, format!("query {what}"), 403, because.clone());
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
