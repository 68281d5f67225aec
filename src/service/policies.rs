//! Policies as the service offers them: listed, created, replaced and
//! deleted by a tenant's admins (the policy calls are gated by role
//! alone, so no policy can lock the admins out), and `evaluate`, which
//! explains the decision for a principal and a request.

use super::{Error, Kind, Result, Service};
use crate::audit::{AuditEntry, AuditKind};
use crate::auth::{Principal, Role};
use crate::db::policies::{PutError, TenantPolicies};
use crate::policy::decide::{Decision, Request, decide};
use crate::policy::{Action, Mask, Policy, Rule, defaults};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A tenant's policies.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyList {
    pub generation: u64,
    /// False while the tenant has the defaults, never changed.
    pub stored: bool,
    pub policies: Vec<Policy>,
}

/// What a change did.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// What may not be what the admin meant (a pattern no table matches).
    pub warnings: Vec<String>,
}

/// The body of `POST /v1/policies/evaluate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluate {
    /// Whom to decide for; the caller when absent (only admins may name
    /// another).
    pub principal: Option<Someone>,
    pub action: Action,
    /// The table decided on; or give `sql`.
    pub table: Option<String>,
    /// For ingest: the events' type.
    pub event_type: Option<String>,
    /// A statement whose every table is decided on (it is not run).
    pub sql: Option<String>,
}

/// The answer of `evaluate` for a statement: one evaluation per table it
/// names.
#[derive(Debug, Clone, Serialize)]
pub struct StatementEvaluation {
    /// `allow` when every table is allowed.
    pub decision: &'static str,
    pub generation: u64,
    pub tables: Vec<Evaluation>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Someone {
    pub role: Role,
    pub subject: Option<String>,
}

/// A column's mask in an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct MaskUse {
    pub with: Mask,
    pub policy: String,
}

/// The answer of `evaluate`.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// `allow` or `deny`.
    pub decision: &'static str,
    pub generation: u64,
    pub table: String,
    pub action: Action,
    /// Whether allowed, which policy decided and why, the policies that
    /// matched and those that did not.
    #[serde(flatten)]
    pub detail: Decision,
    /// The row filters that apply, ANDed: (policy, SQL).
    pub row_filter: Option<String>,
    pub masks: BTreeMap<String, MaskUse>,
}

fn refused(e: PutError) -> Error {
    match e {
        PutError::Stale { .. } => Error::new(Kind::Conflict, e.to_string()),
        PutError::Refused(m) => Error::invalid(m),
        PutError::Io(e) => Error::internal(format!("cannot store the policies: {e}")),
    }
}

/// Why a name cannot be used, if it cannot.
fn name_check(name: &str, creating: bool) -> Result<()> {
    if !crate::policy::valid_name(name) {
        return Err(Error::invalid(format!(
            "name: {name:?} is not a policy name (a lower-case letter, then up to 63 lower-case letters, digits or _)"
        )));
    }
    let default = defaults::defaults().iter().any(|p| p.name == name);
    if defaults::is_reserved(name) && (creating || !default) {
        return Err(Error::invalid(format!(
            "name: {name:?} is reserved (default_* names the default policies, which can be replaced with PUT)"
        )));
    }
    Ok(())
}

impl Service {
    pub(super) fn policies_of(&self, caller: &Principal) -> Arc<TenantPolicies> {
        self.db.policies().get(&caller.tenant)
    }

    /// The caller's tenant's policies.
    pub fn list_policies(&self, caller: &Principal) -> Result<PolicyList> {
        caller.require(Role::Admin, "read policies")?;
        let p = self.policies_of(caller);
        Ok(PolicyList {
            generation: p.generation,
            stored: p.is_stored(),
            policies: p.policies.clone(),
        })
    }

    /// One policy.
    pub fn get_policy(&self, caller: &Principal, name: &str) -> Result<Policy> {
        caller.require(Role::Admin, "read policies")?;
        self.policies_of(caller)
            .policies
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| Error::new(Kind::NotFound, format!("no policy {name:?}")))
    }

    /// Parses and checks a policy: its fields, its shape, its SQL.
    fn checked_policy(&self, caller: &Principal, body: serde_json::Value) -> Result<Policy> {
        let policy = crate::policy::parse(body).map_err(Error::invalid)?;
        let session = crate::query::session(&self.queries, caller)?;
        let state = session.state();
        let check = |what: String, sql: &str| {
            crate::query::policy::safe::check_sql(&state, sql)
                .map_err(|e| Error::invalid(format!("{what}: {e}")))
        };
        match &policy.rule {
            Rule::RowFilter { filter, .. } => check("filter".into(), filter)?,
            Rule::Mask { masks, .. } => {
                for (column, mask) in masks {
                    if let Mask::Sql(sql) = mask {
                        check(format!("masks.{column}.sql"), sql)?;
                    }
                }
            }
            Rule::Access { .. } | Rule::Quota { .. } => {}
        }
        Ok(policy)
    }

    fn warnings(&self, caller: &Principal, policy: &Policy) -> Vec<String> {
        let tables = self.db.table_names(&caller.tenant);
        let qualified = policy.tables.iter().all(|g| g.0.contains('.'));
        let any = tables.iter().any(|t| policy.table_mismatch(t).is_none());
        match any || qualified {
            true => Vec::new(),
            false => vec![format!(
                "no table matches tables {:?} yet; the policy applies to such tables once they exist",
                policy
                    .tables
                    .iter()
                    .map(|g| g.0.as_str())
                    .collect::<Vec<_>>()
            )],
        }
    }

    /// Applies `change` (which may refuse) and records it.
    fn change_policies(
        &self,
        caller: &Principal,
        what: String,
        based_on: Option<u64>,
        change: impl FnOnce(&mut Vec<Policy>) -> std::result::Result<(), String>,
    ) -> Result<u64> {
        let cap = self.config().max_policies;
        let mut full = false;
        let result = self.db.policies().change(&caller.tenant, based_on, |ps| {
            change(ps)?;
            if ps.len() > cap {
                full = true;
                return Err(format!(
                    "tenant {} has {cap} policies, the most it may (--max-policies)",
                    caller.tenant
                ));
            }
            Ok(())
        });
        let (stored, ()) = match result {
            Err(PutError::Refused(m)) if full => return Err(Error::new(Kind::Overloaded, m)),
            other => other.map_err(refused)?,
        };
        self.audit(AuditEntry::by(
            caller,
            AuditKind::Admin,
            "policies".into(),
            200,
            format!("{what}: generation {}", stored.generation),
        ));
        Ok(stored.generation)
    }

    /// Adds a policy; 409 when one of its name exists.
    pub fn create_policy(&self, caller: &Principal, body: serde_json::Value) -> Result<Changed> {
        caller.require(Role::Admin, "change policies")?;
        let policy = self.checked_policy(caller, body)?;
        name_check(&policy.name, true)?;
        let name = policy.name.clone();
        let mut exists = false;
        let added = policy.clone();
        let result = self.change_policies(caller, format!("create {name}"), None, |ps| {
            if ps.iter().any(|p| p.name == added.name) {
                exists = true;
                return Err(format!(
                    "policy {:?} exists; replace it with PUT",
                    added.name
                ));
            }
            ps.push(added);
            Ok(())
        });
        let generation = match result {
            Err(e) if exists => return Err(Error::new(Kind::Conflict, e.message)),
            other => other?,
        };
        Ok(Changed {
            generation,
            warnings: self.warnings(caller, &policy),
            policy: Some(policy),
        })
    }

    /// Creates or replaces the policy `name`.
    pub fn put_policy(
        &self,
        caller: &Principal,
        name: &str,
        mut body: serde_json::Value,
        based_on: Option<u64>,
    ) -> Result<Changed> {
        caller.require(Role::Admin, "change policies")?;
        name_check(name, false)?;
        if let Some(fields) = body.as_object_mut() {
            let named = fields
                .entry("name")
                .or_insert_with(|| serde_json::Value::String(name.to_string()));
            if named.as_str() != Some(name) {
                return Err(Error::invalid(format!(
                    "name: the body names {named}, the path {name:?}"
                )));
            }
        }
        let policy = self.checked_policy(caller, body)?;
        let put = policy.clone();
        let generation = self.change_policies(caller, format!("put {name}"), based_on, |ps| {
            match ps.iter_mut().find(|p| p.name == put.name) {
                Some(p) => *p = put,
                None => ps.push(put),
            }
            Ok(())
        })?;
        Ok(Changed {
            generation,
            warnings: self.warnings(caller, &policy),
            policy: Some(policy),
        })
    }

    /// Deletes the policy `name`.
    pub fn delete_policy(
        &self,
        caller: &Principal,
        name: &str,
        based_on: Option<u64>,
    ) -> Result<Changed> {
        caller.require(Role::Admin, "change policies")?;
        if !self
            .policies_of(caller)
            .policies
            .iter()
            .any(|p| p.name == name)
        {
            return Err(Error::new(Kind::NotFound, format!("no policy {name:?}")));
        }
        let generation =
            self.change_policies(caller, format!("delete {name}"), based_on, |ps| {
                let before = ps.len();
                ps.retain(|p| p.name != name);
                match ps.len() < before {
                    true => Ok(()),
                    false => Err(format!("no policy {name:?}")),
                }
            })?;
        Ok(Changed {
            generation,
            policy: None,
            warnings: Vec::new(),
        })
    }

    /// Puts back every default policy that was deleted or changed.
    pub fn restore_default_policies(&self, caller: &Principal) -> Result<Changed> {
        caller.require(Role::Admin, "change policies")?;
        let generation = self.change_policies(caller, "restore defaults".into(), None, |ps| {
            for d in defaults::defaults() {
                match ps.iter_mut().find(|p| p.name == d.name) {
                    Some(p) => *p = d,
                    None => ps.push(d),
                }
            }
            Ok(())
        })?;
        Ok(Changed {
            generation,
            policy: None,
            warnings: Vec::new(),
        })
    }

    /// Explains what the policies decide for a principal (the caller by
    /// default) and a request on a table, or on every table a statement
    /// names. Acts on nothing.
    pub fn evaluate_policy(
        &self,
        caller: &Principal,
        request: Evaluate,
    ) -> Result<serde_json::Value> {
        caller.require(Role::Reader, "evaluate policies")?;
        fn json(v: impl Serialize) -> Result<serde_json::Value> {
            serde_json::to_value(v).map_err(|e| Error::internal(e.to_string()))
        }
        match (&request.table, &request.sql) {
            (Some(table), None) => json(self.evaluate_table(caller, &request, table)?),
            (None, Some(sql)) => {
                self.check_size("the SQL text", sql.len())?;
                let session = crate::query::session(&self.queries, caller)?;
                let tables = crate::query::tables_named(&session, sql)?;
                let mut out = Vec::with_capacity(tables.len());
                for table in &tables {
                    out.push(self.evaluate_table(caller, &request, table)?);
                }
                let all = out.iter().all(|e| e.detail.allowed);
                json(StatementEvaluation {
                    decision: if all { "allow" } else { "deny" },
                    generation: self.policies_of(caller).generation,
                    tables: out,
                })
            }
            _ => Err(Error::invalid(
                "give either \"table\" or \"sql\" (the tables a statement names)",
            )),
        }
    }

    fn evaluate_table(
        &self,
        caller: &Principal,
        request: &Evaluate,
        table: &str,
    ) -> Result<Evaluation> {
        let (role, subject) = match &request.principal {
            None => (caller.role, caller.subject.clone()),
            Some(someone) => {
                let same = someone.role == caller.role && someone.subject == caller.subject;
                if !same && !caller.is_admin() {
                    return Err(Error::new(
                        Kind::Forbidden,
                        format!(
                            "role {} may evaluate only its own requests (another principal needs admin)",
                            caller.role
                        ),
                    ));
                }
                (someone.role, someone.subject.clone())
            }
        };
        let policies = self.policies_of(caller);
        let mut decision = decide(
            &policies.policies,
            &Request {
                role,
                subject: subject.as_deref().unwrap_or(""),
                action: request.action,
                table,
                event_type: request.event_type.as_deref(),
            },
        );
        let row_filter = (!decision.restriction.filters.is_empty()).then(|| {
            let parts: Vec<String> = decision
                .restriction
                .filters
                .iter()
                .map(|(_, sql)| format!("({sql})"))
                .collect();
            parts.join(" AND ")
        });
        let masks = decision
            .restriction
            .masks
            .iter()
            .map(|(c, (p, m))| {
                let with = m.clone();
                (
                    c.clone(),
                    MaskUse {
                        with,
                        policy: p.clone(),
                    },
                )
            })
            .collect();
        let (row_filter, masks) = match caller.is_admin() {
            true => (row_filter, masks),
            // Others learn which policies apply to them, not their text.
            false => {
                decision
                    .restriction
                    .filters
                    .iter_mut()
                    .for_each(|f| f.1.clear());
                decision.not_matched.clear();
                (row_filter.map(|_| "(hidden)".to_string()), masks)
            }
        };
        Ok(Evaluation {
            decision: if decision.allowed { "allow" } else { "deny" },
            generation: policies.generation,
            table: table.to_string(),
            action: request.action,
            detail: decision,
            row_filter,
            masks,
        })
    }
}
