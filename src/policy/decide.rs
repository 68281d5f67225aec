//! A decision over a tenant's policies, with its reasons.
//!
//! - **Access** is denied unless a policy allows it, and a deny overrides
//!   any allow: among the enabled access policies that match the caller,
//!   the table and the action, a deny without event types denies; no allow
//!   denies; otherwise the event types allowed are those of the allows (all
//!   when one names none) minus those of the denies. The order of policies
//!   never matters: a new deny only takes away, a new allow only adds.
//! - **Row filters** of every matching policy all apply (ANDed), in name
//!   order.
//! - **Masks**: when several cover a column, the one that hides most wins
//!   (`null`, then `hash`, then `redact`, then `sql`; then by name).

use super::{Action, Effect, Glob, Mask, Policy, Rule, any_matches};
use crate::auth::Role;
use serde::Serialize;
use std::collections::BTreeMap;

/// What is being decided.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub role: Role,
    /// The token's `sub`; `""` when it has none.
    pub subject: &'a str,
    pub action: Action,
    pub table: &'a str,
    /// For ingest, the type of the events; `None` decides the table as a
    /// whole (reads), with the types allowed in the restriction.
    pub event_type: Option<&'a str>,
}

/// The event types a caller may act on in a table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TypeScope {
    /// `None`: every type.
    pub allowed: Option<Vec<Glob>>,
    pub denied: Vec<Glob>,
}

impl TypeScope {
    pub fn admits(&self, event_type: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| any_matches(a, event_type))
            && !any_matches(&self.denied, event_type)
    }

    /// Whether it admits every type.
    pub fn is_all(&self) -> bool {
        self.allowed.is_none() && self.denied.is_empty()
    }
}

/// What a read the caller may make must hide.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Restriction {
    pub types: TypeScope,
    /// (policy, SQL), by policy name.
    pub filters: Vec<(String, String)>,
    /// Column → (policy, mask).
    pub masks: BTreeMap<String, (String, Mask)>,
    /// Masks another one overrides: (column, policy).
    pub shadowed: Vec<(String, String)>,
}

impl Restriction {
    /// Whether reads are exactly what the table holds.
    pub fn is_none(&self) -> bool {
        self.types.is_all() && self.filters.is_empty() && self.masks.is_empty()
    }

    /// A digest of what it hides: equal for equal restrictions.
    pub fn fingerprint(&self) -> String {
        let text =
            serde_json::to_string(&(&self.types, &self.filters, &self.masks)).unwrap_or_default();
        blake3::hash(text.as_bytes()).to_hex()[..32].to_string()
    }

    /// Whether a reader restricted by `self` sees no more than one
    /// restricted by `other`: it has every filter of `other`, masks each
    /// column `other` masks the same way or as NULL (the other kinds each
    /// show something the others hide), and `other` admits every type it
    /// does.
    pub fn sees_within(&self, other: &Restriction) -> bool {
        other.filters.iter().all(|f| self.filters.contains(f))
            && other.masks.iter().all(|(c, (_, m))| {
                self.masks
                    .get(c)
                    .is_some_and(|(_, mine)| mine == m || *mine == Mask::Null)
            })
            && (other.types.is_all() || self.types == other.types)
    }
}

/// A policy that took part, and why it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matched {
    pub policy: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    pub why: Vec<String>,
}

/// A policy that did not take part, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotMatched {
    pub policy: String,
    pub why: String,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// One sentence: which policy decided, and how.
    pub because: String,
    pub matched: Vec<Matched>,
    pub not_matched: Vec<NotMatched>,
    /// What the caller's reads hide (empty when denied).
    pub restriction: Restriction,
    /// The quota policies that count this request.
    pub quotas: Vec<String>,
}

/// Decides `request` over `policies`.
pub fn decide(policies: &[Policy], request: &Request<'_>) -> Decision {
    let mut matched = Vec::new();
    let mut not_matched = Vec::new();
    let mut applicable: Vec<&Policy> = Vec::new();
    for p in policies {
        let reason = if !p.enabled {
            Some("it is disabled".to_string())
        } else if !p.rule.covers(request.action) {
            Some(format!("it does not cover {}", request.action.as_str()))
        } else {
            p.principals
                .mismatch(request.role, request.subject)
                .or_else(|| p.table_mismatch(request.table))
        };
        match reason {
            Some(why) => not_matched.push(NotMatched {
                policy: p.name.clone(),
                why,
            }),
            None => applicable.push(p),
        }
    }
    applicable.sort_by(|a, b| a.name.cmp(&b.name));
    let why_matched = |p: &Policy| {
        let mut why = vec![format!("it covers {}", request.action.as_str())];
        why.push(match &p.principals.roles {
            Some(_) => format!("role {} is among its roles", request.role),
            None => "it applies to every role".to_string(),
        });
        if p.principals.subjects.is_some() || !p.principals.except_subjects.is_empty() {
            why.push(format!(
                "subject {:?} matches its subjects",
                request.subject
            ));
        }
        why.push(format!("table {:?} matches its tables", request.table));
        why
    };
    let (mut allows, mut denies) = (Vec::new(), Vec::new());
    let mut restriction = Restriction::default();
    let mut quotas = Vec::new();
    for p in &applicable {
        let mut entry = Matched {
            policy: p.name.clone(),
            kind: p.rule.kind(),
            effect: None,
            why: why_matched(p),
        };
        match &p.rule {
            Rule::Access {
                effect,
                event_types,
                ..
            } => {
                entry.effect = Some(*effect);
                match effect {
                    Effect::Allow => allows.push((p.name.as_str(), event_types.as_ref())),
                    Effect::Deny => denies.push((p.name.as_str(), event_types.as_ref())),
                }
            }
            Rule::RowFilter { filter, .. } => {
                restriction.filters.push((p.name.clone(), filter.clone()));
            }
            Rule::Mask { masks, .. } => {
                for (column, mask) in masks {
                    let replace = match restriction.masks.get(column) {
                        None => true,
                        Some((_, held)) => mask.strength() > held.strength(),
                    };
                    if replace {
                        if let Some((loser, _)) = restriction
                            .masks
                            .insert(column.clone(), (p.name.clone(), mask.clone()))
                        {
                            restriction.shadowed.push((column.clone(), loser));
                        }
                    } else {
                        restriction.shadowed.push((column.clone(), p.name.clone()));
                    }
                }
            }
            Rule::Quota { .. } => quotas.push(p.name.clone()),
        }
        matched.push(entry);
    }
    let action = request.action.as_str();
    let denial = |because: String| Decision {
        allowed: false,
        because,
        matched: matched.clone(),
        not_matched: not_matched.clone(),
        restriction: Restriction::default(),
        quotas: quotas.clone(),
    };
    if let Some((name, _)) = denies.iter().find(|(_, types)| types.is_none()) {
        let over = match allows.first() {
            Some((allow, _)) => format!("; a deny overrides the allow of {allow}"),
            None => String::new(),
        };
        return denial(format!(
            "{action} on {:?} is denied by {name}{over}",
            request.table
        ));
    }
    if allows.is_empty() {
        return denial(format!(
            "no policy allows {action} on {:?} for role {}{}",
            request.table,
            request.role,
            match request.subject {
                "" => String::new(),
                s => format!(" and subject {s:?}"),
            }
        ));
    }
    let allowed_types = match allows.iter().any(|(_, t)| t.is_none()) {
        true => None,
        false => Some(
            allows
                .iter()
                .flat_map(|(_, t)| t.iter().flat_map(|v| v.iter()).cloned())
                .collect(),
        ),
    };
    restriction.types = TypeScope {
        allowed: allowed_types,
        denied: denies
            .iter()
            .flat_map(|(_, t)| t.iter().flat_map(|v| v.iter()).cloned())
            .collect(),
    };
    if let Some(event_type) = request.event_type
        && !restriction.types.admits(event_type)
    {
        let by = denies
            .iter()
            .find(|(_, t)| t.is_some_and(|t| any_matches(t, event_type)))
            .map_or("no allow names it".to_string(), |(name, _)| {
                format!("{name} denies it")
            });
        return denial(format!(
            "{action} of event type {event_type:?} into {:?} is denied: {by}",
            request.table
        ));
    }
    let by: Vec<&str> = allows.iter().map(|(n, _)| *n).collect();
    Decision {
        allowed: true,
        because: format!(
            "{action} on {:?} is allowed by {}",
            request.table,
            by.join(", ")
        ),
        matched,
        not_matched,
        restriction,
        quotas,
    }
}
